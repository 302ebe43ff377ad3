"""Training HESP with the `Trainer`: the paper's optimiser and schedule, loss-term logging, threshold calibration.

The paper's recipe (HESP, ACM MM 2024, implementation details, and the released training script): SGD, lr 0.01, momentum 0.9, weight decay 1e-4, x0.1 at epochs 30/60/90,
100 epochs, batch 64. The released code's normalised-gradient step for the pixel-space prompts (visual prompt and
negative visual prompts, step 50) is available as an option, not the default.
"""

import logging
import math
from collections import defaultdict
from collections.abc import Sequence
from typing import Literal, get_args

import datasets
import numpy as np
import torch
from torch.optim.lr_scheduler import LambdaLR
from transformers import Trainer

from .modeling.modeling_hesp import HESPForOpenSetVideoClassification


logger = logging.getLogger(__name__)

PIXEL_PROMPT_PARAMETERS = ("visual_prompt.delta", "reciprocal_points.images")
TrainSampling = Literal["random", "class_stratified"]


class PromptSGD(torch.optim.SGD):
    """SGD whose parameter groups with `normalized_step` set take `p -= normalized_step * g / ||g||` instead (the
    released code's update of its pixel-space prompts); every other group is plain SGD."""

    @torch.no_grad()
    def step(self, closure=None):
        loss = closure() if closure is not None else None
        held = []
        for group in self.param_groups:
            if group.get("normalized_step"):
                for param in group["params"]:
                    if param.grad is None:
                        continue
                    norm = param.grad.norm()
                    if norm > 0:
                        param.add_(param.grad / norm, alpha=-group["normalized_step"])
                    held.append((param, param.grad))
                    param.grad = None  # plain SGD skips parameters without a gradient
        super().step()
        for param, grad in held:
            param.grad = grad
        return loss


class ClassStratifiedSampler(torch.utils.data.Sampler[int]):
    """A new order each epoch in which every class is spread evenly over the epoch, so every batch holds the classes
    in about their training-set proportions (no oversampling: each clip once per epoch).

    Why: with a plain shuffle one early batch can be dominated by one class (seen: 10 of 32 clips `disgust`, 2
    `sadness`); at full learning rate with momentum the first steps then push that class's prompt far ahead, the
    model predicts it for half the training set and never recovers. Stratified batches remove that draw.
    Each class's clips are shuffled and given the keys `(rank + u) / n_class`, `u ~ U(0, 1)`; the epoch is the
    clips sorted by key. The order depends only on `seed` and the epoch (`set_epoch`), so every process of a
    distributed run draws the same one and takes its own share of the batches.
    """

    def __init__(self, labels: Sequence[int], seed: int = 0):
        self.labels = torch.as_tensor(list(labels), dtype=torch.long)
        if self.labels.numel() == 0:
            raise ValueError("ClassStratifiedSampler needs at least one labelled clip.")
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.labels.numel()

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        keys = torch.empty(len(self.labels), dtype=torch.float64)
        for label in self.labels.unique().tolist():
            members = torch.nonzero(self.labels == label).flatten()
            ranks = torch.randperm(len(members), generator=generator).double()
            jitter = torch.rand(len(members), generator=generator, dtype=torch.float64)
            keys[members] = (ranks + jitter) / len(members)
        return iter(torch.argsort(keys, stable=True).tolist())


def multistep_factor(epoch: float, milestones: Sequence[int], gamma: float) -> float:
    """Learning-rate factor `gamma ** (number of milestones reached)` at a (fractional) epoch."""
    return gamma ** sum(epoch >= milestone for milestone in milestones)


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
        self._term_sums: dict[str, float] = defaultdict(float)
        self._term_count = 0
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
            model = self.model
            decay, no_decay, pixel = [], [], []
            for name, param in model.named_parameters():
                if not param.requires_grad:
                    continue
                if self.pixel_prompt_step > 0 and name in PIXEL_PROMPT_PARAMETERS:
                    pixel.append(param)
                elif param.ndim <= 1:  # the radius, temporal query and gains: no weight decay
                    no_decay.append(param)
                else:
                    decay.append(param)
            groups = [
                {"params": decay, "weight_decay": self.args.weight_decay},
                {"params": no_decay, "weight_decay": 0.0},
            ]
            if pixel:
                groups.append({"params": pixel, "weight_decay": 0.0, "normalized_step": self.pixel_prompt_step})
            groups = [group for group in groups if group["params"]]
            self.optimizer = PromptSGD(groups, lr=self.args.learning_rate, momentum=self.momentum)
        return self.optimizer

    def create_scheduler(self, num_training_steps: int, optimizer=None):
        if self.lr_scheduler is None:
            steps_per_epoch = max(1, self._steps_per_epoch())
            milestones, gamma = self.milestones, self.gamma
            warmup = self.args.get_warmup_steps(num_training_steps)

            def factor(step: int) -> float:
                ramp = min(1.0, (step + 1) / warmup) if warmup else 1.0
                return ramp * multistep_factor(step / steps_per_epoch, milestones, gamma)

            self.lr_scheduler = LambdaLR(optimizer or self.optimizer, factor)
        return self.lr_scheduler

    def _steps_per_epoch(self) -> int:
        per_step = self.args.per_device_train_batch_size * self.args.world_size * self.args.gradient_accumulation_steps
        drop = self.args.dataloader_drop_last
        size = len(self.train_dataset)
        return size // per_step if drop else math.ceil(size / per_step)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if _is_empty(inputs):  # every clip of the batch was skipped (`on_bad_clip="skip"`)
            outputs = model(**_stand_in_batch(model, inputs))
            # Zero, but through every trainable tensor: DDP ranks still all-reduce in step, nothing moves.
            outputs.loss = outputs.loss * 0.0
            return (outputs.loss, outputs) if return_outputs else outputs.loss
        outputs = model(**inputs)
        if model.training and outputs.loss_terms:
            for name, value in outputs.loss_terms.items():
                self._term_sums[name] += float(value.detach())
            self._term_count += 1
        return (outputs.loss, outputs) if return_outputs else outputs.loss

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        """The model's outputs as a dict by name (`logits`, `open_set_score`, `clip_logits`, ...), not the stock
        positional tuple: which outputs exist depends on the config (no `reciprocal_logits` without reciprocal
        points), so positions would silently shift. An empty batch (every clip skipped) predicts zero rows of each
        output, shaped as a real batch's, so gathering over processes stays in step."""
        empty = _is_empty(inputs)
        batch = self._prepare_inputs(_stand_in_batch(model, inputs) if empty else inputs)
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
        ignore = {"loss", *(ignore_keys or [])}
        predictions = {
            name: value.detach() for name, value in outputs.items() if name not in ignore and torch.is_tensor(value)
        }
        labels = batch.get("labels")
        if empty:
            predictions = {name: value[:0] for name, value in predictions.items()}
            labels = None if labels is None else labels[:0]
        return loss, predictions, labels

    def log(self, logs: dict[str, float], *args, **kwargs) -> None:
        if "loss" in logs and self._term_count:
            for name, total in self._term_sums.items():
                logs[f"loss_{name}"] = round(total / self._term_count, 6)
            self._term_sums.clear()
            self._term_count = 0
        super().log(logs, *args, **kwargs)


class FrozenTowersInBF16:
    """Frozen CLIP towers stored in bfloat16 while training with bf16 autocast.

    Why: autocast re-casts every weight to bfloat16 at every call, and it caches the cast only for weights that
    require gradients, so the frozen towers (most of HESP's work) would be converted again at every layer of every
    step, and held in memory twice. Stored in bfloat16 they are not: on a CPU with native bf16 (AVX512-BF16, no AMX;
    ViT-B/32, batch 8 x 8 frames, `scripts/benchmark.py --only train`, in rotation) the step took 5.34 s against
    5.71 s with autocast alone and 10.28 s in float32 (the gain over autocast alone grows as the batch shrinks).
    Frozen weights never change, so nothing is lost by training on a bfloat16 copy: their exact float32 values are
    kept aside, written into every checkpoint (`float32_state_dict`) and put back when training ends (`restore`).
    The trained prompts stay float32.

    On the CPU the towers also run eager attention while training in bf16: PyTorch's fused CPU attention
    (`scaled_dot_product_attention`) is slow in bfloat16 for CLIP's short sequences, forward + backward of one layer
    (64 frames x 12 heads, this 2-core AVX-512 CPU) 0.070 s against 0.022 s eager at 50 tokens (ViT-B/32), 0.076 s
    against 0.047 s at 197 (ViT-B/16, 16 frames); in float32 the fused one is as fast or faster (0.032 / 0.058 s
    against 0.033 / 0.067 s), so float32 keeps it. The model's own setting comes back with `restore`.
    """

    TOWERS = ("vision_model", "visual_projection", "text_model", "text_projection")

    def __init__(self, model: torch.nn.Module):
        self.model = model
        self.float32: dict[str, torch.Tensor] = {}
        self._attention: str | None = None  # the model's own attention, while eager attention stands in for it

    @property
    def active(self) -> bool:
        return bool(self.float32)

    def _frozen(self) -> dict[str, torch.Tensor]:
        return {
            name: parameter
            for name, parameter in self.model.named_parameters()
            if name.split(".", 1)[0] in self.TOWERS
            and not parameter.requires_grad
            and parameter.dtype == torch.float32
        }

    @torch.no_grad()
    def cast(self) -> None:
        for name, parameter in self._frozen().items():
            self.float32[name] = parameter.detach().to("cpu", copy=True)
            parameter.data = parameter.data.to(torch.bfloat16)
        if self.float32:
            logger.info("bf16: %d frozen tower tensors run in bfloat16 while training.", len(self.float32))
        if next(self.model.parameters()).device.type == "cpu" and self.model.config._attn_implementation != "eager":
            self._attention = self.model.config._attn_implementation
            self.model.set_attn_implementation("eager")
            logger.info("bf16 on the CPU: eager attention while training (%s after).", self._attention)

    @torch.no_grad()
    def restore(self) -> None:
        parameters = dict(self.model.named_parameters())
        for name, value in self.float32.items():
            parameters[name].data = value.to(parameters[name].device)
        self.float32.clear()
        if self._attention is not None:
            self.model.set_attn_implementation(self._attention)
            self._attention = None

    def float32_state_dict(self, state_dict: dict[str, torch.Tensor] | None) -> dict[str, torch.Tensor]:
        state_dict = dict(state_dict if state_dict is not None else self.model.state_dict())
        state_dict.update(self.float32)
        return state_dict


def _is_empty(inputs: dict) -> bool:
    labels = inputs.get("labels")
    return labels is not None and labels.numel() == 0


def _stand_in_batch(model: torch.nn.Module, inputs: dict) -> dict[str, torch.Tensor]:
    """One black one-frame clip with label 0, for a forward pass that keeps processes in step on an empty batch."""
    config = getattr(model, "module", model).config
    size = config.vision_config.image_size
    device = inputs["labels"].device
    return {
        "pixel_values_videos": torch.zeros(1, 1, 3, size, size, device=device),
        "labels": torch.zeros(1, dtype=torch.long, device=device),
    }


def calibrate_threshold(scores: np.ndarray, keep_share: float = 0.95) -> float:
    """The highest threshold on known-ness scores of *known* validation clips that still accepts at least
    `keep_share` of them (a clip is accepted when its score >= the threshold)."""
    scores = np.sort(np.asarray(scores, dtype=np.float64))
    if scores.size == 0:
        raise ValueError("Threshold calibration needs at least one known validation clip.")
    if not 0 < keep_share <= 1:
        raise ValueError(f"keep_share must lie in (0, 1], got {keep_share}.")
    rejected = math.floor((1 - keep_share) * scores.size + 1e-9)  # at most this many may fall below
    return float(scores[min(rejected, scores.size - 1)])


def set_unknown_threshold(model: HESPForOpenSetVideoClassification, threshold: float) -> None:
    model.config.unknown_threshold = float(threshold)
    logger.info("unknown_threshold calibrated to %.6f", threshold)
