"""The embedded default backbone: a tiny CLIP pretrained on synthetic face frames and captions of their facial
actions (`scripts/pretrain_tiny_clip.py`), shipped inside the package so everything runs offline."""

from pathlib import Path


EMBEDDED_CLIP_DIR = Path(__file__).parent / "assets" / "tiny-face-clip"

# The demo's open-set split of the synthetic classes (as in the scoping measurements): 6 known, 5 unknown.
DEMO_KNOWN = ("neutral", "happiness", "sadness", "surprise", "anger", "disgust")


def embedded_clip_path() -> str:
    """Folder of the embedded tiny CLIP (weights, tokenizer, pixel statistics), loadable with `from_pretrained`."""
    if not (EMBEDDED_CLIP_DIR / "model.safetensors").exists():
        raise FileNotFoundError(
            f"The embedded tiny CLIP is missing from {EMBEDDED_CLIP_DIR}; rebuild it with "
            "`python scripts/pretrain_tiny_clip.py`."
        )
    return str(EMBEDDED_CLIP_DIR)
