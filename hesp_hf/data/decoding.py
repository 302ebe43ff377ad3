"""Sampling the frames of one clip: a video file (PyAV, reading only what the sampled frames need) or a folder of
frame images (opening only the sampled images)."""

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..modeling.video_processing_hesp import VideoDecodeError, read_video_pyav, segment_indices
from .annotations import IMAGE_SUFFIXES


def frame_files(folder: str | Path) -> list[Path]:
    """The images of a frame folder in time order (sorted names)."""
    return sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def sample_clip(
    path: str | Path, num_frames: int, random_sampling: bool = False, generator: torch.Generator | None = None
) -> np.ndarray:
    """`num_frames` RGB frames `(T, H, W, 3)` uint8 by segment sampling (random inside each segment for training,
    centres for evaluation; short clips loop). Raises `VideoDecodeError` naming the clip when it cannot be read."""
    path = Path(path)
    if path.is_dir():
        files = frame_files(path)
        if not files:
            raise VideoDecodeError(f"Frame folder {path} holds no images ({', '.join(IMAGE_SUFFIXES)}).")
        indices = segment_indices(len(files), num_frames, random_sampling, generator)
        opened: dict[int, np.ndarray] = {}
        for index in dict.fromkeys(indices.tolist()):
            try:
                with Image.open(files[index]) as image:
                    opened[index] = np.asarray(image.convert("RGB"))
            except OSError as error:
                raise VideoDecodeError(f"Frame {files[index]} of clip {path} cannot be read: {error}") from error
        shapes = {frame.shape for frame in opened.values()}
        if len(shapes) > 1:
            raise VideoDecodeError(f"Frames of clip {path} differ in size: {sorted(shapes)}.")
        return np.stack([opened[i] for i in indices.tolist()])
    if not path.is_file():
        raise VideoDecodeError(f"Clip {path} does not exist.")

    def choose(metadata):
        return segment_indices(int(metadata.total_num_frames), num_frames, random_sampling, generator)

    video, _ = read_video_pyav(path, choose)
    return video
