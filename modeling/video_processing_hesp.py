"""HESP video processor: segment sampling that loops short clips, PyAV decoding, CLIP resize / crop / normalisation.

Sampling follows the paper's TSN-style input (hesp-method.md §2.2): `num_frames` equal segments, the centre of each at
inference, a random frame inside each for training. This file travels inside every checkpoint (remote code).
"""

from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, PILImageResampling
from transformers.processing_utils import Unpack, VideosKwargs
from transformers.utils import logging
from transformers.video_processing_utils import BaseVideoProcessor
from transformers.video_utils import VideoMetadata


logger = logging.get_logger(__name__)


class HESPVideosKwargs(VideosKwargs, total=False):
    """`random_sampling`: draw a random frame inside each segment (training) instead of its centre (inference)."""

    random_sampling: bool | None


class VideoDecodeError(ValueError):
    """A video file that cannot be decoded; the message names the file and the reason."""


def segment_indices(
    total_frames: int, num_frames: int, random_sampling: bool = False, generator: torch.Generator | None = None
) -> np.ndarray:
    """Indices of `num_frames` frames from a clip of `total_frames`: one per equal segment (its centre, or a random
    frame inside it). A clip shorter than `num_frames` is looped (0, 1, .., n-1, 0, 1, ..) rather than refused."""
    if total_frames < 1:
        raise ValueError(f"A clip needs at least one frame to sample from, got {total_frames}.")
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}.")
    if total_frames < num_frames:
        return np.arange(num_frames, dtype=np.int64) % total_frames
    edges = np.arange(num_frames + 1, dtype=np.float64) * total_frames / num_frames
    starts = np.floor(edges[:-1]).astype(np.int64)
    ends = np.maximum(np.floor(edges[1:]).astype(np.int64), starts + 1)  # exclusive, non-empty as n >= num_frames
    if not random_sampling:
        return (starts + ends - 1) // 2
    offsets = torch.rand(num_frames, generator=generator, dtype=torch.float64).numpy()
    return np.minimum(starts + np.floor(offsets * (ends - starts)).astype(np.int64), ends - 1)


def read_video_pyav(path: str | Path, sample_indices_fn: Any = None) -> tuple[np.ndarray, VideoMetadata]:
    """Decode the frames chosen by `sample_indices_fn(metadata=...)` (all frames if `None`) as RGB `(T, H, W, 3)`.

    Reads only what the sampled frames need: the packets are demuxed first (cheap, no decoding), which gives the
    exact frame count and where the keyframes are; each sampled frame is then decoded from the last keyframe before
    it, continuing forward instead of restarting when that keyframe is already behind the decoder, and frames nobody
    references or wants (non-reference B-frames) are skipped rather than decoded. Streams without timestamps are
    decoded sequentially up to the last sampled frame. (Frame threading is left off: it measured slower on 2 cores
    and cannot switch frame skipping per packet.)

    Any pixel format (grayscale, 10-bit, ...) comes out as 8-bit RGB. Raises [`VideoDecodeError`] naming the file
    for an empty, truncated, non-video or audio-only file.
    """
    import av

    path = str(path)
    try:
        container = av.open(path)
    except (av.error.FFmpegError, OSError) as error:
        raise VideoDecodeError(f"Cannot open video file {path}: {error}") from error
    with container:
        if not container.streams.video:
            raise VideoDecodeError(f"Video file {path} has no video stream (audio-only or not a video).")
        stream = container.streams.video[0]
        try:
            packets = [packet for packet in container.demux(stream) if packet.size]
        except av.error.FFmpegError as error:
            raise VideoDecodeError(f"Video file {path} is corrupt or truncated: {error}") from error
        if not packets:
            raise VideoDecodeError(f"Video file {path} holds no frames.")
        fps = float(stream.average_rate) if stream.average_rate else None
        metadata = VideoMetadata(
            total_num_frames=len(packets),
            fps=fps,
            duration=len(packets) / fps if fps else None,
            video_backend="pyav",
            height=stream.height,
            width=stream.width,
        )
        indices = (
            np.arange(len(packets)) if sample_indices_fn is None else np.asarray(sample_indices_fn(metadata=metadata))
        )
        wanted = sorted(set(int(i) for i in indices))
        if wanted[0] < 0 or wanted[-1] >= len(packets):
            raise ValueError(f"Frame indices {wanted} fall outside the {len(packets)} frames of {path}.")
        try:
            if any(packet.pts is None for packet in packets):
                frames = _decode_sequentially(stream.codec_context, packets, wanted)
            else:
                frames = _decode_from_keyframes(stream.codec_context, packets, wanted)
        except av.error.FFmpegError as error:
            raise VideoDecodeError(f"Video file {path} is corrupt or truncated: {error}") from error
    missing = [i for i in wanted if i not in frames]
    if missing:
        raise VideoDecodeError(
            f"Video file {path} is truncated or corrupt: frames {missing[:5]} of {len(packets)} do not decode."
        )
    metadata.frames_indices = indices.tolist()
    return np.stack([frames[int(i)] for i in indices]), metadata


def _decode_sequentially(codec: Any, packets: list, wanted: list[int]) -> dict[int, np.ndarray]:
    """Decode in stream order up to the last wanted frame (for streams whose packets carry no timestamps)."""
    frames, position, last, targets = {}, 0, wanted[-1], set(wanted)
    for packet in [*packets, None]:
        for frame in codec.decode(packet):
            if position in targets:
                frames[position] = frame.to_ndarray(format="rgb24")
            position += 1
        if position > last:
            break
    return frames


def _decode_from_keyframes(codec: Any, packets: list, wanted: list[int]) -> dict[int, np.ndarray]:
    """Decode the wanted frames (presentation-order indices), each from the last keyframe at or before it."""
    pts_in_order = sorted(packet.pts for packet in packets)  # presentation order
    index_of_pts = {pts: index for index, pts in enumerate(pts_in_order)}
    keyframes = [position for position, packet in enumerate(packets) if packet.is_keyframe] or [0]
    frames: dict[int, np.ndarray] = {}
    wanted_set = set(wanted)
    wanted_pts = {pts_in_order[i] for i in wanted}
    next_packet = None  # decode position in `packets`; None: the decoder holds nothing useful
    for target in wanted:
        if target in frames:
            continue
        target_pts = pts_in_order[target]
        start = max((k for k in keyframes if packets[k].pts <= target_pts), default=0)
        if next_packet is None or next_packet <= start:  # the decoder is behind that keyframe: jump to it
            codec.flush_buffers()
            next_packet = start
        while target not in frames:
            packet = packets[next_packet] if next_packet < len(packets) else None
            # A frame that is neither wanted nor referenced by later frames need not be decoded at all.
            codec.skip_frame = "DEFAULT" if packet is None or packet.pts in wanted_pts else "NONREF"
            for frame in codec.decode(packet):
                index = index_of_pts.get(frame.pts)
                if index in wanted_set and index not in frames:
                    frames[index] = frame.to_ndarray(format="rgb24")
            if packet is None:  # flushed: nothing more will come
                next_packet = None
                break
            next_packet += 1
    return frames


class HESPVideoProcessor(BaseVideoProcessor):
    """Video processor for HESP: CLIP pixel statistics, resize + centre crop to the vision tower's size, segment
    sampling of `num_frames` frames (random inside segments when `random_sampling=True`), PyAV decoding of files."""

    resample = PILImageResampling.BICUBIC
    image_mean = OPENAI_CLIP_MEAN
    image_std = OPENAI_CLIP_STD
    size = {"shortest_edge": 224}
    default_to_square = False
    crop_size = {"height": 224, "width": 224}
    do_resize = True
    do_center_crop = True
    do_rescale = True
    rescale_factor = 1 / 255
    do_normalize = True
    do_convert_rgb = True
    do_sample_frames = True
    num_frames = 8
    random_sampling = False
    valid_kwargs = HESPVideosKwargs
    model_input_names = ["pixel_values_videos"]

    def __init__(self, **kwargs: Unpack[HESPVideosKwargs]) -> None:
        super().__init__(**kwargs)

    def sample_frames(
        self,
        metadata: VideoMetadata,
        num_frames: int | None = None,
        random_sampling: bool | None = None,
        **kwargs: Any,
    ) -> np.ndarray:
        num_frames = num_frames if num_frames is not None else self.num_frames
        random_sampling = random_sampling if random_sampling is not None else self.random_sampling
        return segment_indices(int(metadata.total_num_frames), int(num_frames), bool(random_sampling))

    def fetch_videos(self, video_url_or_urls: Any, sample_indices_fn: Any = None) -> Any:
        """Decode paths with PyAV (the stock path needs torchcodec and FFmpeg libraries, often missing)."""
        if isinstance(video_url_or_urls, (list, tuple)):
            decoded = [self.fetch_videos(item, sample_indices_fn=sample_indices_fn) for item in video_url_or_urls]
            return [video for video, _ in decoded], [metadata for _, metadata in decoded]
        path = str(video_url_or_urls)
        if path.startswith(("http://", "https://")):
            raise ValueError(f"HESPVideoProcessor reads local files only; download {path} first.")
        if not Path(path).is_file():
            raise FileNotFoundError(f"Video file {path} does not exist.")
        return read_video_pyav(path, sample_indices_fn)

    @classmethod
    def from_clip(cls, pretrained_model_name_or_path: str, num_frames: int = 8, **kwargs: Any) -> "HESPVideoProcessor":
        """A processor matching a CLIP checkpoint: its image processor's size, crop and mean/std when it has one,
        else its vision tower's image size with CLIP's mean/std."""
        from transformers import CLIPConfig
        from transformers.image_processing_base import ImageProcessingMixin

        settings: dict[str, Any] = {}
        try:
            image_processor, _ = ImageProcessingMixin.get_image_processor_dict(pretrained_model_name_or_path)
        except OSError:
            image_processor = {}
        if image_processor:
            for key in ("image_mean", "image_std", "size", "crop_size", "resample", "do_center_crop"):
                if image_processor.get(key) is not None:
                    settings[key] = image_processor[key]
            if isinstance(settings.get("size"), int):
                settings["size"] = {"shortest_edge": settings["size"]}
            if isinstance(settings.get("crop_size"), int):
                settings["crop_size"] = {"height": settings["crop_size"], "width": settings["crop_size"]}
        else:
            image_size = CLIPConfig.from_pretrained(pretrained_model_name_or_path).vision_config.image_size
            settings["size"] = {"shortest_edge": image_size}
            settings["crop_size"] = {"height": image_size, "width": image_size}
        settings.update(kwargs)
        return cls(num_frames=num_frames, **settings)


__all__ = ["HESPVideoProcessor", "VideoDecodeError", "read_video_pyav", "segment_indices"]
