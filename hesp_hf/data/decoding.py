"""Sampling the frames of one clip: a video file (time-true, streaming, upright; see
`hesp_hf.modeling.video_decoding_hesp`) or a folder of frame images (opening only the sampled images)."""

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..modeling.video_decoding_hesp import DecodedVideo, VideoDecodeError, decode_video, segment_indices
from ..modeling.video_processing_hesp import VideoMetadata
from .annotations import IMAGE_SUFFIXES, frame_files


def sample_clip(
    path: str | Path, num_frames: int, random_sampling: bool = False, generator: torch.Generator | None = None
) -> DecodedVideo:
    """`num_frames` RGB frames `(T, H, W, 3)` uint8 (`.frames`) by segment sampling: random inside each segment for
    training, centres for evaluation. Files are sampled in presentation time and report truncation (`.truncated`);
    frame folders by index (one frame per image). Raises `VideoDecodeError` naming the clip when it cannot be read."""
    path = Path(path)
    if path.is_dir():
        return _sample_folder(path, num_frames, random_sampling, generator)
    if not path.exists():
        raise VideoDecodeError(f"Clip {path} does not exist.")
    return decode_video(path, num_frames, random_sampling, generator)


def _sample_folder(
    folder: Path, num_frames: int, random_sampling: bool, generator: torch.Generator | None
) -> DecodedVideo:
    files = frame_files(folder)
    if not files:
        raise VideoDecodeError(f"Frame folder {folder} holds no images ({', '.join(IMAGE_SUFFIXES)}).")
    indices = segment_indices(len(files), num_frames, random_sampling, generator).tolist()
    opened: dict[int, np.ndarray] = {}
    for index in dict.fromkeys(indices):
        try:
            with Image.open(files[index]) as image:
                opened[index] = np.asarray(image.convert("RGB"))
        except OSError as error:
            raise VideoDecodeError(f"Frame {files[index]} of clip {folder} cannot be read: {error}") from error
    shapes = {frame.shape for frame in opened.values()}
    if len(shapes) > 1:
        raise VideoDecodeError(f"Frames of clip {folder} differ in size: {sorted(shapes)}.")
    frames = np.stack([opened[i] for i in indices])
    metadata = VideoMetadata(
        total_num_frames=len(files), height=frames.shape[1], width=frames.shape[2], frames_indices=indices
    )
    return DecodedVideo(
        frames=frames,
        timestamps=[float(i) for i in indices],  # in frames: a folder has no clock
        metadata=metadata,
        declared_seconds=None,
        readable_seconds=float(len(files)),
    )
