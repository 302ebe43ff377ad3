"""`HESPTrainer`: the stock `Trainer` with HESP's optimiser, schedule, sampler, bf16 towers and loss-term logs, each
taken from its own module.

The paper's recipe (HESP, ACM MM 2024, implementation details, and the released training script): SGD, lr 0.01,
momentum 0.9, weight decay 1e-4, x0.1 at epochs 30/60/90, 100 epochs, batch 64. The released code's
normalised-gradient step for the pixel-space prompts (visual prompt and negative visual prompts, step 50) is
available as an option, not the default.
"""

import math
from collections.abc import Sequence
from typing import get_args

import datasets
import torch
from transformers import Trainer

from .health import TrainingTrajectory
from .loss_log import LossTermLog
from .optim import prompt_sgd
from .precision import FrozenTowersInBF16
from .sampler import ClassStratifiedSampler, TrainSampling
from .schedule import milestone_schedule
from .steps import is_empty, outputs_by_name, stand_in_batch


class HESPTrainer(Trainer):
    """`Trainer` with the paper's optimiser and epoch-milestone schedule, and each loss term in the logs.

    `milestones` (epochs) and `gamma` set the schedule; `pixel_prompt_step` > 0 switches the pixel-space prompts to
    the released code's normalised-gradient step of that size. `train_sampling="class_stratified"` draws every
    epoch with [`ClassStratifiedSampler`] (seeded by `data_seed`, else `seed`; needs a `label` column), `"random"`
    is the `Trainer`'s shuffle (the paper's).
    """

    def __init__(
        self,
        *args,
        milestones: Sequence[int] = (30, 60, 90),
        gamma: float = 0.1,
        momentum: float = 0.9,
        pixel_prompt_step: float = 0.0,
        visual_prompt_lr_scale: float = 1.0,
        train_sampling: TrainSampling = "random",
        **kwargs,
    ):
        if train_sampling not in get_args(TrainSampling):
            raise ValueError(f"train_sampling must be one of {get_args(TrainSampling)}, got {train_sampling!r}.")
        self.train_sampling = train_sampling
        super().__init__(*args, **kwargs)
        self.milestones = tuple(milestones)
        self.gamma = gamma
        self.momentum = momentum
        self.pixel_prompt_step = pixel_prompt_step
        self.visual_prompt_lr_scale = visual_prompt_lr_scale
        self.loss_terms = LossTermLog()
        # The run's own trajectory (training accuracy, loss, visual prompt) for the derailing check after training.
        self.trajectory = TrainingTrajectory()
        self.add_callback(self.trajectory)
        # `--bf16`: the frozen towers are stored in bfloat16 while training (see `FrozenTowersInBF16`).
        self._frozen_in_bf16 = FrozenTowersInBF16(self.model) if self.args.bf16 else None

    def train(self, *args, **kwargs):
        """As `Trainer.train`; with `--bf16` the frozen towers run in bfloat16 during training and are float32 again
        afterwards, so calibration, evaluation and the saved model use the checkpoint's own weights."""
        if self._frozen_in_bf16 is None:
            return super().train(*args, **kwargs)
        self._frozen_in_bf16.cast()
        try:
            return super().train(*args, **kwargs)
        finally:
            self._frozen_in_bf16.restore()

    def _save(self, output_dir=None, state_dict=None):
        """Checkpoints hold the frozen towers in float32 even while they run in bfloat16 (`--bf16`)."""
        if self._frozen_in_bf16 is not None and self._frozen_in_bf16.active:
            state_dict = self._frozen_in_bf16.float32_state_dict(state_dict)
        super()._save(output_dir, state_dict=state_dict)

    def _get_train_sampler(self, train_dataset=None):
        if self.train_sampling == "random":
            return super()._get_train_sampler(train_dataset)
        if self.args.train_sampling_strategy != "random":
            raise ValueError(
                f"train_sampling='class_stratified' replaces the Trainer's sampler; it cannot be combined with "
                f"--train_sampling_strategy {self.args.train_sampling_strategy}."
            )
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        if not isinstance(dataset, datasets.Dataset) or "label" not in dataset.column_names:
            raise ValueError(
                "train_sampling='class_stratified' needs a datasets.Dataset with a 'label' column (as clip_dataset "
                f"builds), got {type(dataset).__name__}."
            )
        labels = dataset.with_format(None)["label"]  # the column alone: no clip is decoded
        seed = self.args.data_seed if self.args.data_seed is not None else self.args.seed
        return ClassStratifiedSampler(labels, seed=seed)

    def create_optimizer(self, model=None):
        if self.optimizer is None:
            self.optimizer = prompt_sgd(
                self.model,
                self.args.learning_rate,
                self.momentum,
                self.args.weight_decay,
                self.pixel_prompt_step,
                self.visual_prompt_lr_scale,
            )
        return self.optimizer

    def create_scheduler(self, num_training_steps: int, optimizer=None):
        if self.lr_scheduler is None:
            self.lr_scheduler = milestone_schedule(
                optimizer or self.optimizer,
                self._steps_per_epoch(),
                self.milestones,
                self.gamma,
                self.args.get_warmup_steps(num_training_steps),
            )
        return self.lr_scheduler

    def _steps_per_epoch(self) -> int:
        per_step = self.args.per_device_train_batch_size * self.args.world_size * self.args.gradient_accumulation_steps
        size = len(self.train_dataset)
        return size // per_step if self.args.dataloader_drop_last else math.ceil(size / per_step)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if is_empty(inputs):  # every clip of the batch was skipped (`on_bad_clip="skip"`)
            outputs = model(**stand_in_batch(model, inputs))
            # Zero, but through every trainable tensor: DDP ranks still all-reduce in step, nothing moves.
            outputs.loss = outputs.loss * 0.0
            return (outputs.loss, outputs) if return_outputs else outputs.loss
        outputs = model(**inputs)
        if model.training and outputs.loss_terms:
            self.loss_terms.add(outputs.loss_terms)
        if model.training and outputs.logits is not None and "labels" in inputs:
            self.trajectory.observe(outputs.loss, outputs.logits, inputs["labels"])
        return (outputs.loss, outputs) if return_outputs else outputs.loss

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        """The model's outputs by name (`outputs_by_name`). An empty batch (every clip skipped) predicts zero rows of
        each output, shaped as a real batch's, so gathering over processes stays in step."""
        empty = is_empty(inputs)
        batch = self._prepare_inputs(stand_in_batch(model, inputs) if empty else inputs)
        with torch.no_grad(), self.compute_loss_context_manager():
            if "labels" in batch:
                loss, outputs = self.compute_loss(model, batch, return_outputs=True)
                loss = loss.detach().mean()
            else:
                loss, outputs = None, model(**batch)
        if empty:
            loss = None if loss is None or self.args.world_size == 1 else loss * 0.0
        if prediction_loss_only:
            return loss, None, None
        predictions = outputs_by_name(outputs, ignore={"loss", *(ignore_keys or [])})
        labels = batch.get("labels")
        if empty:
            predictions = {name: value[:0] for name, value in predictions.items()}
            labels = None if labels is None else labels[:0]
        return loss, predictions, labels

    def log(self, logs: dict[str, float], *args, **kwargs) -> None:
        if "loss" in logs:
            self.loss_terms.flush_into(logs)
        super().log(logs, *args, **kwargs)
