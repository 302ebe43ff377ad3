"""Demo of the main job: build HESP on a CLIP, save it with its processor, and classify clips with the stock pipeline.

With no CLIP weights to download here, it builds on a tiny random CLIP written locally (pass --clip for a real one,
e.g. a local copy of openai/clip-vit-base-patch32): the labels it prints are therefore arbitrary, but every step is the
real one — saving, Auto-class loading, PyAV decoding, the "unknown" column and its threshold.
"""

import _unshadow  # noqa: F401, I001  (first: keeps scripts/evaluate.py from shadowing `evaluate`)


import argparse
import logging
import tempfile
from pathlib import Path

import numpy as np
import torch
from transformers import pipeline

from hesp_hf import HESPForOpenSetVideoClassification, HESPVideoProcessor
from hesp_hf.tiny_clip import save_tiny_clip
from hesp_hf.video_writer import write_video


logger = logging.getLogger("demo")


def moving_square_clip(path: Path, frames: int = 24, size: int = 96) -> Path:
    """A small H.264 clip: a bright square drifting over a gradient."""
    rows, cols = np.mgrid[0:size, 0:size]
    video = np.empty((frames, size, size, 3), dtype=np.uint8)
    for t in range(frames):
        background = ((rows + cols + 4 * t) % 256).astype(np.uint8)
        video[t] = background[..., None]
        top = 10 + 2 * t
        video[t, top : top + 20, 30:50] = (250, 200, 40)
    return write_video(path, video)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clip", help="HF CLIP checkpoint (Hub id or folder); default: a tiny random one")
    parser.add_argument("--output_dir", default="outputs/demo", help="where the checkpoint and the clip are written")
    parser.add_argument("--labels", default="happy,sad,neutral", help="known classes, comma-separated")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    output = Path(args.output_dir)
    clip = args.clip or str(save_tiny_clip(Path(tempfile.mkdtemp()) / "tiny-clip", image_size=64))
    labels = args.labels.split(",")

    torch.manual_seed(0)
    model = HESPForOpenSetVideoClassification.from_clip(clip, labels=labels, num_frames=8)
    processor = HESPVideoProcessor.from_clip(clip, num_frames=8)
    clip_path = moving_square_clip(output / "sample.mp4")

    # Calibrate the threshold on the sample clip itself, just to show both outcomes.
    with torch.no_grad():
        score = float(model(**processor(str(clip_path), return_tensors="pt")).open_set_score[0])
    for name, threshold in (("accepting", score - 1.0), ("rejecting", score + 1.0)):
        model.config.unknown_threshold = threshold
        checkpoint = output / f"checkpoint-{name}"
        model.save_pretrained(checkpoint)
        processor.save_pretrained(checkpoint)
        result = pipeline("video-classification", model=str(checkpoint))(str(clip_path))
        logger.info("%s threshold %.3f (score %.3f): %s", name, threshold, score, result)
        print(f"demo: {name} -> top label '{result[0]['label']}' ({result[0]['score']:.3f})")


if __name__ == "__main__":
    main()
