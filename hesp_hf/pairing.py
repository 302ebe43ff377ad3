"""One owner per setting shared by a model and its processor (the model's config): built together from a CLIP
checkpoint, checked when loaded together.

- `num_frames`: the stock pipeline passes `model.config.num_frames` to the processor, so the processor saved beside
  the model must sample the same number for training and evaluation to match.
- `image_std`: the processor normalises the pixels with it, and the visual prompt, which lives in [0, 1] pixel space,
  is added as `prompt / std`; at build time both take the CLIP processor's std (not CLIP's default in the config).

A pair that disagrees is refused with the message of `check_saved_pair` (`configuration_hesp.py`), the one every
loading path gives: the config owns both values, the processor's file is the one to fix.
"""

import re
from collections.abc import Sequence
from pathlib import Path
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


# What the Hub accepts as a model id: `name` or `owner/name`; anything else can only be a local path.
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?")


def check_checkpoint_source(checkpoint: str) -> None:
    """One line naming `checkpoint` when it cannot be a checkpoint: a folder without config.json, a file, or a path
    that does not exist and cannot be a Hub id (`./runs/x`, `/data/x`, `a/b/c`). Transformers would answer those
    with advice about tokenizers, repo-id syntax or connecting to the Hub."""
    path = Path(checkpoint).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ValueError(
                f"{checkpoint} is a folder without config.json, not a saved HESP checkpoint (a training run's "
                "output folder, or a checkpoint-N folder inside it, holds one)."
            )
    elif path.exists():
        raise ValueError(f"{checkpoint} is a file: pass the checkpoint's folder (the one holding config.json).")
    elif not _HUB_ID.fullmatch(str(checkpoint)):  # a Path object from a Python caller too
        raise FileNotFoundError(
            f"{checkpoint} does not exist (expected a checkpoint folder, or a Hub id 'owner/name')."
        )


def load_pair(checkpoint: str, **model_kwargs: Any) -> tuple[HESPForOpenSetVideoClassification, HESPVideoProcessor]:
    """A saved HESP checkpoint's model (in eval mode) and processor (folder or Hub id), checked to agree."""
    check_checkpoint_source(checkpoint)
    try:
        model = HESPForOpenSetVideoClassification.from_pretrained(checkpoint, **model_kwargs).eval()
    except OSError as error:
        if Path(checkpoint).expanduser().exists():
            raise
        # 'owner/name' that is no local folder: the Hub's answer, in one line that names what was asked for.
        answer = " ".join(str(error).split())
        raise OSError(f"{checkpoint} is not a local folder, and the Hub did not give it: {answer}") from error
    processor = HESPVideoProcessor.from_pretrained(checkpoint)
    check_pair(model.config, processor, checkpoint)
    return model, processor


def check_pair(config: HESPConfig, processor: HESPVideoProcessor, source: str = "the pair passed") -> None:
    """Raise when a model config and a processor disagree on a setting they share: the very message every loading
    path gives (`check_saved_pair`), so a user reads one piece of advice, whichever path found it."""
    check_saved_pair(source, shared_settings(config), shared_settings(processor))
