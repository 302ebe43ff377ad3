"""Whether a training run derailed, from its own trajectory: per epoch the training clips' accuracy and loss (the
logits the loss trains, as the batches passed) and the visual prompt's largest pixel change; after training, whether
the trained video embedding classifies the known training clips at least as well as the frozen CLIP does.

A run that derails is reported in the log, in `metrics.json` (`training_health`) and on the model card, with what to
do about it; the prototype head's fallback to the frozen features stays as the safety net, never as a silent result.
"""

import logging
import math
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from transformers import TrainerCallback


logger = logging.getLogger(__name__)

# A run whose last epoch's training accuracy lies this far below its best epoch's lost what it had learned.
ACCURACY_DROP = 0.15
# A run whose last epoch's training accuracy is below this multiple of chance (1 / classes) learned nothing.
NEAR_CHANCE = 1.5


@dataclass
class EpochRecord:
    """One epoch of the trajectory: the mean loss and accuracy over its training batches (clips weighted alike) and
    the visual prompt's largest change to a [0, 1] pixel at its end (None without a trained visual prompt)."""

    epoch: int
    loss: float
    training_accuracy: float
    visual_prompt_max_change: float | None


@dataclass
class TrainingHealth:
    """The verdict on a run: `derailed`, the `reason` in words (None when healthy), the last epoch's training
    accuracy and loss, what to do, and the per-epoch trajectory."""

    derailed: bool
    reason: str | None
    training_accuracy: float | None
    loss: float | None
    advice: str | None
    epochs: list[EpochRecord] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class TrainingTrajectory(TrainerCallback):
    """Collects the trajectory while the `Trainer` runs: `observe` after each training step's forward (from
    `HESPTrainer.compute_loss`), an `EpochRecord` at each epoch's end. Under DDP each process records its own batches;
    the verdict is rank 0's."""

    def __init__(self) -> None:
        self.epochs: list[EpochRecord] = []
        self._non_finite_epoch: int | None = None
        self.num_classes: int | None = None
        self._start_epoch()

    def _start_epoch(self) -> None:
        # Sums kept as tensors on the model's device: read once per epoch, not once per step (no sync in the loop).
        self._loss_sum: torch.Tensor | float = 0.0
        self._correct: torch.Tensor | int = 0
        self._clips = 0

    def observe(self, loss: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor) -> None:
        """One training step: its loss, the model's logits `(B, K + 1)` (the last column "unknown", never a
        training label) and the labels `(B,)`."""
        clips = int(labels.shape[0])
        known = logits.detach()[:, :-1]
        self.num_classes = int(known.shape[-1])
        self._loss_sum = self._loss_sum + loss.detach().float() * clips
        self._correct = self._correct + (known.argmax(dim=-1) == labels).sum()
        self._clips += clips

    def _epoch_loss(self) -> float:
        """The current epoch's mean loss so far; a non-finite step leaves the sum non-finite, and its epoch is noted."""
        loss = float(self._loss_sum) / self._clips
        if not math.isfinite(loss) and self._non_finite_epoch is None:
            self._non_finite_epoch = len(self.epochs) + 1
        return loss

    def on_epoch_end(self, args, state, control, model=None, **kwargs):
        if self._clips:
            loss = self._epoch_loss()
            self.epochs.append(
                EpochRecord(
                    epoch=len(self.epochs) + 1,
                    loss=loss,
                    training_accuracy=int(self._correct) / self._clips,
                    visual_prompt_max_change=visual_prompt_max_change(model),
                )
            )
        self._start_epoch()
        return control

    def assess(
        self, leave_one_out: dict[str, float] | None = None, margin: float = 0.05, visual_prompt: bool = False
    ) -> TrainingHealth:
        """The verdict: derailed when the loss became non-finite, when the last epoch's training accuracy stayed
        below `NEAR_CHANCE` times chance or fell more than `ACCURACY_DROP` below the best epoch's, or (with the
        prototype head's check, `leave_one_out`: the leave-one-out accuracy of each space on the known training clips)
        when the trained embedding classifies those clips worse than the frozen CLIP by more than `margin`. The advice
        names the visual prompt first when the run trained one (`visual_prompt`): it is what derailed the runs
        measured."""
        if self._clips:  # steps of an epoch that did not end (a run cut short)
            self._epoch_loss()
        last = self.epochs[-1] if self.epochs else None
        reasons = []
        if self._non_finite_epoch is not None:
            reasons.append(f"the training loss became non-finite in epoch {self._non_finite_epoch}")
        if last is not None and self.num_classes and last.training_accuracy < NEAR_CHANCE / self.num_classes:
            reasons.append(
                f"the training clips' accuracy stayed near chance ({last.training_accuracy:.3f} in the last epoch, "
                f"chance {1 / self.num_classes:.3f} with {self.num_classes} classes)"
            )
        if last is not None:
            best = max(self.epochs, key=lambda record: record.training_accuracy)
            if best.training_accuracy - last.training_accuracy > ACCURACY_DROP:
                reasons.append(
                    f"the training clips' accuracy fell from {best.training_accuracy:.3f} (epoch {best.epoch}) to "
                    f"{last.training_accuracy:.3f} in the last epoch"
                )
        if leave_one_out and leave_one_out["frozen"] > leave_one_out["trained"] + margin:
            reasons.append(
                "the trained video embedding classifies the known training clips worse than the frozen CLIP "
                f"(leave-one-out accuracy {leave_one_out['trained']:.3f} against {leave_one_out['frozen']:.3f}), so "
                "the prototype head reads the frozen CLIP's features and the training adds nothing"
            )
        derailed = bool(reasons)
        return TrainingHealth(
            derailed=derailed,
            reason="; ".join(reasons) if derailed else None,
            training_accuracy=None if last is None else last.training_accuracy,
            loss=None if last is None else last.loss,
            advice=(ADVICE_WITH_VISUAL_PROMPT if visual_prompt else ADVICE) if derailed else None,
            epochs=list(self.epochs),
        )


ADVICE = (
    "Train again with another --seed, a lower --learning_rate or --warmup_steps, and compare the runs' "
    "training_health; until then the model is no better than the frozen CLIP (see strongest_baseline)."
)
ADVICE_WITH_VISUAL_PROMPT = (
    "The pixel-space visual prompt derailed every such run measured: train again with --use_visual_prompt false "
    "(the hesp-hf recipe's default), or keep it with --visual_prompt_lr_scale 0.1 and compare the runs' "
    "training_health; until then the model is no better than the frozen CLIP (see strongest_baseline)."
)


def visual_prompt_max_change(model: torch.nn.Module | None) -> float | None:
    """The visual prompt's largest change to a [0, 1] pixel, or None when the model trains none."""
    prompt = getattr(model, "visual_prompt", None)
    if prompt is None or not getattr(model.config, "use_visual_prompt", False):
        return None
    with torch.no_grad():
        return float(prompt.pixel_delta().abs().max())


def log_training_health(health: TrainingHealth) -> None:
    if health.derailed:
        logger.warning("Training derailed: %s. %s", health.reason, health.advice)
    elif health.training_accuracy is not None:
        logger.info(
            "Training health: no sign of derailing (last epoch: training accuracy %.3f, loss %.4f).",
            health.training_accuracy,
            health.loss,
        )
