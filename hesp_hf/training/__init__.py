"""Training HESP with the `Trainer`: `HESPTrainer` composes the optimiser (`optim`), the schedule (`schedule`), the
class-stratified sampler (`sampler`), bf16 frozen towers (`precision`), per-term loss logs (`loss_log`), the run's
trajectory for the derailing check (`health`) and the step helpers (`steps`); after training, `prototypes` fits the
prototype head and `calibration` the unknown threshold."""

from .calibration import calibrate_threshold, set_unknown_threshold
from .health import TrainingHealth, TrainingTrajectory, log_training_health
from .optim import PIXEL_PROMPT_PARAMETERS, PromptSGD, prompt_sgd
from .precision import FrozenTowersInBF16
from .prototypes import fit_class_prototypes
from .sampler import ClassStratifiedSampler, TrainSampling
from .schedule import milestone_schedule, multistep_factor
from .trainer import HESPTrainer


__all__ = [
    "PIXEL_PROMPT_PARAMETERS",
    "ClassStratifiedSampler",
    "FrozenTowersInBF16",
    "HESPTrainer",
    "PromptSGD",
    "TrainSampling",
    "TrainingHealth",
    "TrainingTrajectory",
    "calibrate_threshold",
    "fit_class_prototypes",
    "log_training_health",
    "milestone_schedule",
    "multistep_factor",
    "prompt_sgd",
    "set_unknown_threshold",
]
