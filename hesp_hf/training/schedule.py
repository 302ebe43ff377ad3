"""The paper's learning-rate schedule: a factor at epoch milestones, after an optional linear warm-up."""

from collections.abc import Sequence

import torch
from torch.optim.lr_scheduler import LambdaLR


def multistep_factor(epoch: float, milestones: Sequence[int], gamma: float) -> float:
    """Learning-rate factor `gamma ** (number of milestones reached)` at a (fractional) epoch."""
    return gamma ** sum(epoch >= milestone for milestone in milestones)


def milestone_schedule(
    optimizer: torch.optim.Optimizer,
    steps_per_epoch: int,
    milestones: Sequence[int],
    gamma: float,
    warmup_steps: int = 0,
) -> LambdaLR:
    """`LambdaLR` stepping once per optimiser step: a linear ramp over `warmup_steps`, times `gamma` per milestone
    (in epochs) reached."""
    steps_per_epoch = max(1, steps_per_epoch)
    milestones = tuple(milestones)

    def factor(step: int) -> float:
        ramp = min(1.0, (step + 1) / warmup_steps) if warmup_steps else 1.0
        return ramp * multistep_factor(step / steps_per_epoch, milestones, gamma)

    return LambdaLR(optimizer, factor)
