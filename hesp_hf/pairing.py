"""One owner per setting shared by a model and its processor: built together from a CLIP checkpoint, checked when
loaded together.

- `num_frames` is the config's: the stock pipeline passes `model.config.num_frames` to the processor, so the
  processor saved beside the model must sample the same number for training and evaluation to match.
- `image_std` is the processor's: it normalises the pixels, and the visual prompt, which lives in [0, 1] pixel space,
  is added as `prompt / std`, so the config must hold the processor's std, not CLIP's default.
"""

from collections.abc import Sequence
from typing import Any

from .modeling.configuration_hesp import HESPConfig, shared_settings
from .modeling.modeling_hesp import HESPForOpenSetVideoClassification
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
    check_pair(model.config, processor)
    return model, processor


def load_pair(checkpoint: str, **model_kwargs: Any) -> tuple[HESPForOpenSetVideoClassification, HESPVideoProcessor]:
    """A saved HESP checkpoint's model (in eval mode) and processor (folder or Hub id), checked to agree."""
    model = HESPForOpenSetVideoClassification.from_pretrained(checkpoint, **model_kwargs).eval()
    processor = HESPVideoProcessor.from_pretrained(checkpoint)
    check_pair(model.config, processor, f"The checkpoint {checkpoint}'s model and processor")
    return model, processor


def check_pair(config: HESPConfig, processor: HESPVideoProcessor, source: str = "the model and its processor") -> None:
    """Raise when a model config and a processor disagree on a setting they share."""
    model, other = shared_settings(config), shared_settings(processor)  # compared as the loaders compare them
    problems = []
    if model["num_frames"] != other["num_frames"]:
        problems.append(
            f"num_frames: the model's config says {config.num_frames} (the pipeline samples this many), the "
            f"processor {processor.num_frames} (training and evaluation sample this many)"
        )
    if model["image_std"] != other["image_std"]:
        problems.append(
            f"image_std: the model's config says {list(config.image_std)} (it scales the visual prompt), the "
            f"processor {other['image_std']} (it normalises the pixels)"
        )
    if problems:
        raise ValueError(
            f"{source} disagree -- " + "; ".join(problems) + ". Set the one in config.json or "
            "preprocessor_config.json to the other's (a checkpoint written before hesp-hf paired them may hold "
            "CLIP's default image_std in its config; setting it to the processor's changes the visual prompt's scale)."
        )
