"""Write clips as real encoded video files with PyAV, whole or not at all (a temporary file renamed into place)."""

from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..atomic_files import atomic_output


if TYPE_CHECKING:
    import av


def write_video(
    path: str | Path,
    frames: np.ndarray,
    fps: int = 25,
    codec: str = "libx264",
    pix_fmt: str = "yuv420p",
    options: dict[str, str] | None = None,
    threads: int = 1,
    timestamps: np.ndarray | None = None,
    rotation: int = 0,
    container_options: dict[str, str] | None = None,
) -> Path:
    """Encode `frames` `(T, H, W, 3)` uint8 RGB (or `(T, H, W)` grayscale) to `path`.

    `timestamps`: each frame's presentation time in seconds (variable frame rate; default `index / fps`).
    `rotation`: a display rotation (degrees counter-clockwise, as phones store portrait video) written to the
    container; the frames are stored as given. `container_options`: muxer options (e.g. `{"movflags": "faststart"}`
    puts an MP4's index first).

    Odd sizes are fine for codecs that allow them; yuv420p needs even sides, so it pads by edge replication.
    Repeatable by default: the same frames give the same bytes. Three things were needed, each measured: one thread
    (`threads=1`; threaded libx264 gave three different files for the same frames), zeroed row padding in the frames
    handed to the encoder (`converted_frame`), and, for libx264, no macroblock-tree rate control (`mbtree=0`: with it,
    about one process in ten still wrote different bytes for some clips; without it, 0 of 60).
    """
    import av

    path = Path(path)
    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim not in (3, 4) or len(frames) == 0:
        raise ValueError(
            f"write_video({path}) needs uint8 frames shaped (T, H, W, 3) or (T, H, W) with T >= 1, got "
            f"{frames.dtype} {frames.shape}."
        )
    source_format = "gray" if frames.ndim == 3 else "rgb24"
    if pix_fmt.startswith("yuv420"):
        pad_h, pad_w = frames.shape[1] % 2, frames.shape[2] % 2
        pad = [(0, 0), (0, pad_h), (0, pad_w)] + ([(0, 0)] if frames.ndim == 4 else [])
        frames = np.pad(frames, pad, mode="edge")
    if timestamps is not None and (len(timestamps) != len(frames) or np.any(np.diff(timestamps) <= 0)):
        raise ValueError(f"write_video({path}): timestamps must be increasing, one per frame.")
    time_base = Fraction(1, fps) if timestamps is None else Fraction(1, 90000)
    with (
        atomic_output(path) as temporary,
        av.open(str(temporary), mode="w", options=container_options or {}) as container,
    ):
        stream = container.add_stream(codec, rate=fps)
        if timestamps is not None:
            stream.time_base = time_base
        if rotation:
            stream.set_display_rotation(rotation)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = pix_fmt
        # Set through the codec options: PyAV's thread_count alone did not make libx264's output repeatable.
        defaults = {"threads": str(threads)}
        if codec == "libx264":
            defaults["x264-params"] = "mbtree=0"
        stream.options = {**defaults, **(options or {})}
        for index, array in enumerate(frames):
            frame = converted_frame(
                av.VideoFrame.from_ndarray(np.ascontiguousarray(array), format=source_format), pix_fmt
            )
            # Explicit timestamps: the rate control reads them.
            frame.pts = index if timestamps is None else round(timestamps[index] / time_base)
            frame.time_base = time_base
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path


def converted_frame(frame: "av.VideoFrame", pix_fmt: str) -> "av.VideoFrame":
    """`frame` in the encoder's pixel format, with the row padding of every plane zeroed.

    FFmpeg aligns rows, and the bytes past the image width are left uninitialised; libx264 reads them, so the same
    frames gave different files depending on what the process had allocated before (measured: 3 different files in
    4 rounds; the first clip of a fresh process always the same). Zeroing the padding makes the bytes a function of
    the frames. Formats with samples wider than a byte or packed pixels are passed through as they are.
    """
    if frame.format.name != pix_fmt:
        frame = frame.reformat(format=pix_fmt)
    if frame.format.is_planar and all(component.bits == 8 for component in frame.format.components):
        for plane in frame.planes:
            rows = np.frombuffer(plane, dtype=np.uint8).reshape(-1, plane.line_size).copy()
            rows[:, plane.width :] = 0
            plane.update(rows)
    return frame
