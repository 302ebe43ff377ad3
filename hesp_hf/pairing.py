"""One owner per setting shared by a model and its processor (the model's config): built together from a CLIP
checkpoint, checked when loaded together.

- `num_frames`: the stock pipeline passes `model.config.num_frames` to the processor, so the processor saved beside
  the model must sample the same number for training and evaluation to match.
- `image_std`: the processor normalises the pixels with it, and the visual prompt, which lives in [0, 1] pixel space,
  is added as `prompt / std`; at build time both take the CLIP processor's std (not CLIP's default in the config).

A pair that disagrees is refused with the message of `check_saved_pair` (`configuration_hesp.py`), the one every
loading path gives: the config owns both values, the processor's file is the one to fix.
"""

from collections.abc import Sequence
from typing import Any

from .modeling.configuration_hesp import HESPConfig, check_saved_pair, shared_settings
from .modeling.modeling_hesp import HESPForOpenSetVideoClassification
from .modeling.provenance_hesp import backbone_is_synthetic
from .modeling.video_processing_hesp import HESPVideoProcessor


def model_and_processor_from_clip(
    clip_model: str,
    labels: Sequence[str],
    num_frames: int = 8,
    processor_kwargs: dict[str, Any] | None = None,
    **config_overrides: Any,
) -> tuple[HESPForOpenSetVideoClassification, HESPVideoProcessor]:
    """HESP on a CLIP checkpoint and the processor for it, agreeing on `num_frames` and the pixel statistics."""
    processor = HESPVideoProcessor.from_clip(clip_model, num_frames=num_frames, **(processor_kwargs or {}))
    model = HESPForOpenSetVideoClassification.from_clip(
        clip_model,
        labels,
        num_frames=num_frames,
        image_std=[float(v) for v in processor.image_std],
        **config_overrides,
    )
    if backbone_is_synthetic(clip_model):  # recorded in config.json: every later load, export and app can tell
        model.config.synthetic_backbone = True
    check_pair(model.config, processor)
    return model, processor


def load_pair(checkpoint: str, **model_kwargs: Any) -> tuple[HESPForOpenSetVideoClassification, HESPVideoProcessor]:
    """A saved HESP checkpoint's model (in eval mode) and processor (folder or Hub id), checked to agree."""
    model = HESPForOpenSetVideoClassification.from_pretrained(checkpoint, **model_kwargs).eval()
    processor = HESPVideoProcessor.from_pretrained(checkpoint)
    check_pair(model.config, processor, checkpoint)
    return model, processor


def check_pair(config: HESPConfig, processor: HESPVideoProcessor, source: str = "the pair passed") -> None:
    """Raise when a model config and a processor disagree on a setting they share: the very message every loading
    path gives (`check_saved_pair`), so a user reads one piece of advice, whichever path found it."""
    check_saved_pair(source, shared_settings(config), shared_settings(processor))
