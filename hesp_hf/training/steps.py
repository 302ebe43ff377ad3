"""What a `Trainer` step does with HESP's batches beyond the stock one: a batch whose clips were all skipped stands in
as one black clip (so distributed processes stay in step), and a prediction step returns the outputs by name."""

from collections.abc import Iterable, Mapping

import torch


def is_empty(inputs: dict) -> bool:
    labels = inputs.get("labels")
    return labels is not None and labels.numel() == 0


def stand_in_batch(model: torch.nn.Module, inputs: dict) -> dict[str, torch.Tensor]:
    """One black one-frame clip with label 0, for a forward pass that keeps processes in step on an empty batch."""
    config = getattr(model, "module", model).config
    size = config.vision_config.image_size
    device = inputs["labels"].device
    return {
        "pixel_values_videos": torch.zeros(1, 1, 3, size, size, device=device),
        "labels": torch.zeros(1, dtype=torch.long, device=device),
    }


def outputs_by_name(outputs: Mapping[str, object], ignore: Iterable[str] = ()) -> dict[str, torch.Tensor]:
    """The model's tensor outputs as a dict by name (`logits`, `open_set_score`, `clip_logits`, ...), not the
    stock positional tuple: which outputs exist depends on the config (no `reciprocal_logits` without reciprocal
    points), so positions would silently shift."""
    ignore = set(ignore)
    return {name: value.detach() for name, value in outputs.items() if name not in ignore and torch.is_tensor(value)}
