"""Each term of HESP's open-set loss in the training logs, averaged over the steps since the last log."""

from collections import defaultdict
from collections.abc import Mapping

import torch


class LossTermLog:
    """Running sums of the loss terms (`HESPVideoClassifierOutput.loss_terms`) of the training steps since the last
    log; `flush_into(logs)` adds their means as `loss_<term>` and starts again."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = defaultdict(float)
        self.steps = 0

    def add(self, terms: Mapping[str, torch.Tensor]) -> None:
        for name, value in terms.items():
            self.sums[name] += float(value.detach())
        self.steps += 1

    def flush_into(self, logs: dict[str, float]) -> None:
        if not self.steps:
            return
        for name, total in self.sums.items():
            logs[f"loss_{name}"] = round(total / self.steps, 6)
        self.sums.clear()
        self.steps = 0
