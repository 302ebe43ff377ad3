"""Write clips as real encoded video files with PyAV, whole or not at all (a temporary file renamed into place)."""

from pathlib import Path

import numpy as np

from .atomic_files import atomic_output


def write_video(
    path: str | Path,
    frames: np.ndarray,
    fps: int = 25,
    codec: str = "libx264",
    pix_fmt: str = "yuv420p",
    options: dict[str, str] | None = None,
) -> Path:
    """Encode `frames` `(T, H, W, 3)` uint8 RGB (or `(T, H, W)` grayscale) to `path`.

    Odd sizes are fine for codecs that allow them; yuv420p needs even sides, so it pads by edge replication.
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
    with atomic_output(path) as temporary, av.open(str(temporary), mode="w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = pix_fmt
        if options:
            stream.options = options
        for array in frames:
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(array), format=source_format)
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path
