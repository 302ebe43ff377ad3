"""What a checkpoint's backbone learned from. A HESP model built on a CLIP pretrained on drawn synthetic faces (the
embedded tiny CLIP, whose `build_info.json` says `synthetic_pretraining: true`) records it in its config
(`synthetic_backbone`); loading such a model says, once, that its answers on real faces mean nothing. Part of the
remote code: the pipeline and `trust_remote_code` loads say it too."""

import json
from pathlib import Path
from typing import Any

from transformers.utils import logging


logger = logging.get_logger(__name__)

BUILD_INFO_NAME = "build_info.json"  # how a locally built backbone describes itself
SYNTHETIC_BACKBONE = "synthetic_backbone"  # the config attribute

DRAWN_FACES_NOTICE = (
    "This model learned drawn synthetic faces only (the demo's backbone): its answers on real faces mean nothing. "
    "For real footage, train on your own recordings (hesp-train) or load a checkpoint trained on real faces."
)

_told: set[str] = set()


def backbone_is_synthetic(clip_model: str | Path) -> bool:
    """Whether the CLIP folder `clip_model` describes itself (`build_info.json`) as pretrained on synthetic faces."""
    try:
        built = json.loads((Path(clip_model) / BUILD_INFO_NAME).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(built, dict) and bool(built.get("synthetic_pretraining"))


def learned_drawn_faces(config: Any, checkpoint: str | Path | None = None) -> bool:
    """Whether a model learned drawn faces only: its config says so, or (checkpoints written before the config
    recorded it) the backbone its local `run_arguments.json` names says so."""
    if getattr(config, SYNTHETIC_BACKBONE, False):
        return True
    if checkpoint is None:
        return False
    try:
        clip_model = json.loads((Path(checkpoint) / "run_arguments.json").read_text()).get("clip_model")
    except (OSError, ValueError, AttributeError):
        return False
    return isinstance(clip_model, str) and backbone_is_synthetic(clip_model)


def tell_if_drawn_faces(config: Any, checkpoint: str | Path | None = None) -> bool:
    """Log `DRAWN_FACES_NOTICE` (once per checkpoint and process) when the model learned drawn faces only."""
    if not learned_drawn_faces(config, checkpoint):
        return False
    key = str(checkpoint)
    if key not in _told:
        _told.add(key)
        logger.warning("%s: %s", checkpoint if checkpoint is not None else "model", DRAWN_FACES_NOTICE)
    return True
