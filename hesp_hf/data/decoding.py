"""Sampling the frames of one clip: a video file (time-true, streaming, upright; see
`hesp_hf.modeling.video_decoding_hesp`), a folder of frame images (opening only the sampled images), or a video's
bytes (a `datasets` column), which go through the same file decoder."""

import os
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..modeling.video_decoding_hesp import DecodedVideo, VideoDecodeError, decode_video, segment_indices
from ..modeling.video_processing_hesp import VideoMetadata
from .annotations import IMAGE_SUFFIXES, frame_files


def sample_clip(
    path: str | Path,
    num_frames: int,
    random_sampling: bool = False,
    generator: torch.Generator | None = None,
    shortest_edge: int | None = None,
) -> DecodedVideo:
    """`num_frames` RGB frames `(T, H, W, 3)` uint8 (`.frames`) by segment sampling: random inside each segment for
    training, centres for evaluation. Files are sampled in presentation time and report truncation (`.truncated`);
    frame folders by index (one frame per image). `shortest_edge`: a file's frames are converted straight to this
    shorter side when larger (`HESPVideoProcessor.decode_edge`: what the next step needs); frame images are read as
    stored. Raises `VideoDecodeError` naming the clip when it cannot be read."""
    path = Path(path)
    if path.is_dir():
        return _sample_folder(path, num_frames, random_sampling, generator)
    if not path.exists():
        raise VideoDecodeError(f"Clip {path} does not exist.")
    return decode_video(path, num_frames, random_sampling, generator, shortest_edge)


def sample_clip_bytes(
    data: bytes,
    name: str,
    num_frames: int,
    random_sampling: bool = False,
    generator: torch.Generator | None = None,
    shortest_edge: int | None = None,
) -> DecodedVideo:
    """`sample_clip` for a video held as bytes (a `datasets` column), reported as `name`. The bytes are written to a
    private temporary file and decoded there: the decoder's checks (empty, text, missing MP4 index, truncation) read
    files, so bytes and files are judged alike. The file goes as soon as the frames are out."""
    if not data:
        raise VideoDecodeError(f"Video {name} is empty (0 bytes).")
    handle, temporary = tempfile.mkstemp(prefix="hesp-clip-", suffix=Path(name).suffix[:8])
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(data)
        try:
            return decode_video(temporary, num_frames, random_sampling, generator, shortest_edge)
        except VideoDecodeError as error:  # name the clip, not the temporary file
            raise VideoDecodeError(str(error).replace(temporary, name)) from error
    finally:
        Path(temporary).unlink(missing_ok=True)


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
