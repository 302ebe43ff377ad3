"""The offline default: procedural face videos (`synthetic`), their open-set protocol (`protocol`), the tiny CLIP
pretrained on them (`assets/tiny-face-clip`, `tiny_clip`), the video writer, and the demo's training defaults
(`defaults`). It imports the library core; the core never imports it."""

from .defaults import (
    DEMO_FACE_SETTINGS,
    DEMO_KNOWN,
    EMBEDDED_CLIP_DIR,
    embedded_clip_fingerprint,
    embedded_clip_path,
    synthetic_training_options,
)


__all__ = [
    "DEMO_FACE_SETTINGS",
    "DEMO_KNOWN",
    "EMBEDDED_CLIP_DIR",
    "embedded_clip_fingerprint",
    "embedded_clip_path",
    "synthetic_training_options",
]
