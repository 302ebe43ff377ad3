"""Video file -> the frames shown at chosen moments, upright, with memory bounded by the frames and not the file.

One implementation for the processor (so the stock pipeline and remote-code checkpoints get it) and the data path.

- Time-true sampling: a clip is sampled at fractions of its presentation-time span (`segment_positions`); each
  sample is the frame on screen at that moment (the last frame whose timestamp is at or before it). Variable frame
  rate and streams that do not start at 0 are sampled where a viewer would see them.
- Streaming: for each moment, seek to the keyframe before it and decode forward; when that keyframe is one the
  decoder has already passed, keep decoding instead of restarting. No packet list is kept: a packet is fed to the
  decoder and dropped. Frames that are neither wanted nor referenced by later frames are not decoded.
- Rotation: phones store portrait video as landscape frames plus a display matrix; frames are turned upright
  (the matrix's rotation, else the legacy `rotate` tag).
- Truncation: the span that can actually be read is checked against the span the container declares; a shortfall
  is reported in `DecodedVideo.shortfall_seconds` and the clip is sampled over what exists.
- Any bytes give frames or one `VideoDecodeError` naming the file and what is wrong with it.
- Memory bounded by the model's input: with `shortest_edge`, each sampled frame is converted to RGB straight at the
  size the next step needs (area averaging), so a 4K frame never exists as a full-size RGB array.

This file travels inside every checkpoint (remote code): it imports nothing beyond numpy, PyAV, transformers and the
standard library.
"""

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers.video_utils import VideoMetadata


logger = logging.getLogger(__name__)

# Two frame intervals, or this many seconds when more, of a declared duration may be missing before a clip counts
# as truncated (containers round durations; the last frame's duration is often a guess).
TRUNCATION_TOLERANCE_SECONDS = 0.25
# A container-level duration covers every stream (audio often outlasts video by a fraction of a second).
CONTAINER_DURATION_SLACK_SECONDS = 1.0
_SEEK_RETRIES = 4
# Without an index to say where keyframes are, decoding on is assumed cheaper than a seek for gaps up to this.
SEEK_WITHOUT_INDEX_SECONDS = 2.0


class VideoDecodeError(ValueError):
    """A video file that cannot be decoded; the message names the file and the reason."""


class _SeekingUnusable(Exception):
    """Seeking gave inconsistent positions: decode from the start instead."""


class _NoTimestamps(_SeekingUnusable):
    """Packets or frames without timestamps: decode from the start, sampling by frame count."""


@dataclass
class DecodedVideo:
    """Frames `(T, H, W, 3)` uint8 RGB, upright, with what the container declared and what could be read."""

    frames: np.ndarray
    timestamps: list[float]  # presentation time (seconds from the stream start) of each returned frame
    metadata: VideoMetadata
    declared_seconds: float | None  # duration the container declares for the video (None: not declared)
    readable_seconds: float  # span that decodes, first frame to the end of the last one
    rotation: int = 0  # degrees counter-clockwise applied to make the frames upright
    truncation_tolerance: float = field(default=TRUNCATION_TOLERANCE_SECONDS, repr=False)

    @property
    def shortfall_seconds(self) -> float:
        """How much of the declared duration is missing (0 when none is declared or all of it reads)."""
        if self.declared_seconds is None:
            return 0.0
        return max(0.0, self.declared_seconds - self.readable_seconds)

    @property
    def truncated(self) -> bool:
        return self.shortfall_seconds > self.truncation_tolerance

    def truncation_message(self, path: str | Path) -> str:
        return (
            f"Video file {path} is truncated: it declares {self.declared_seconds:.2f} s but only "
            f"{self.readable_seconds:.2f} s decode ({self.shortfall_seconds:.2f} s missing; likely an interrupted "
            "download or copy). Sampled over the part that exists."
        )


def segment_positions(
    num_frames: int, random_sampling: bool = False, generator: torch.Generator | None = None
) -> np.ndarray:
    """Where to sample `num_frames` frames, as fractions in [0, 1) of a clip's span: one per equal segment, its
    centre (inference) or a uniform point inside it (training) -- the paper's TSN-style segment sampling, in time."""
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}.")
    offsets = (
        torch.rand(num_frames, generator=generator, dtype=torch.float64).numpy()
        if random_sampling
        else np.full(num_frames, 0.5)
    )
    return (np.arange(num_frames) + offsets) / num_frames


def positions_to_indices(positions: np.ndarray, total_frames: int) -> np.ndarray:
    """The frame on screen at each position of a clip of `total_frames` equally long frames (a frame folder, an
    array). A clip shorter than the samples shows each frame for its share of the time: (0, 0, 0, 1, 1, 2, 2, 2)."""
    if total_frames < 1:
        raise ValueError(f"A clip needs at least one frame to sample from, got {total_frames}.")
    # The epsilon keeps exact segment centres that land on a frame boundary on the frame that starts there.
    return np.minimum(np.floor(np.asarray(positions) * total_frames + 1e-9).astype(np.int64), total_frames - 1)


def segment_indices(
    total_frames: int, num_frames: int, random_sampling: bool = False, generator: torch.Generator | None = None
) -> np.ndarray:
    """Indices of `num_frames` frames from a clip of `total_frames` by segment sampling (see `segment_positions`)."""
    return positions_to_indices(segment_positions(num_frames, random_sampling, generator), total_frames)


def decode_video(
    path: str | Path,
    num_frames: int | None = None,
    random_sampling: bool = False,
    generator: torch.Generator | None = None,
    shortest_edge: int | None = None,
) -> DecodedVideo:
    """Sample `num_frames` frames of a video file by segment sampling in presentation time (every frame when
    `num_frames` is None). `shortest_edge`: frames whose shorter side is longer come out scaled to it (see
    `rgb_frame`); None keeps the stored size. Raises `VideoDecodeError` naming the file for anything that is not a
    readable video."""
    positions = None if num_frames is None else segment_positions(num_frames, random_sampling, generator)
    return decode_video_at(path, positions, shortest_edge)


def decode_video_at(path: str | Path, positions: np.ndarray | None, shortest_edge: int | None = None) -> DecodedVideo:
    """The frames on screen at `positions` (fractions in [0, 1) of the readable span); every frame when None."""
    import av

    path = str(path)
    _check_file(path)
    try:
        container = av.open(path, metadata_errors="replace")  # non-UTF-8 tags must not abort the read
    except Exception as error:  # noqa: BLE001 -- any failure to open is one named error
        raise VideoDecodeError(_unreadable_reason(path, error)) from error
    try:
        with container:
            return _decode(container, path, positions, shortest_edge)
    except VideoDecodeError:
        raise
    except (av.error.FFmpegError, OSError, UnicodeDecodeError, ValueError, AttributeError, TypeError) as error:
        # Corrupt headers surface as assorted errors from PyAV (a stream without a decoder has no `height`, ...).
        raise VideoDecodeError(f"Video file {path} is corrupt: {type(error).__name__}: {error}") from error


def _check_file(path: str) -> None:
    file = Path(path)
    if not file.exists():
        raise FileNotFoundError(f"Video file {path} does not exist.")
    if not file.is_file():
        raise VideoDecodeError(f"Video path {path} is not a file.")
    if file.stat().st_size == 0:
        raise VideoDecodeError(f"Video file {path} is empty (0 bytes).")


def _unreadable_reason(path: str, error: Exception) -> str:
    """Why FFmpeg could not open `path`, from what the file's first bytes are."""
    with open(path, "rb") as handle:
        head = handle.read(4096)
    if head[4:8] == b"ftyp" and not _mp4_has_index(path):
        return (
            f"Video file {path} is an MP4/MOV container whose index ('moov' box) is missing or cut off: likely an "
            "interrupted download or copy, or a recording that was not finished."
        )
    if head and _looks_like_text(head):
        return f"File {path} is text, not a video container."
    return f"File {path} is not a video container FFmpeg can read ({type(error).__name__}: {error})."


def _looks_like_text(head: bytes) -> bool:
    try:
        head.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return all(byte >= 32 or byte in b"\t\n\r\f" for byte in head)


def _mp4_has_index(path: str) -> bool:
    """Whether the top-level boxes of an MP4/MOV file include a complete 'moov' (walks box headers only)."""
    size = Path(path).stat().st_size
    with open(path, "rb") as handle:
        offset = 0
        while offset + 8 <= size:
            handle.seek(offset)
            header = handle.read(16)
            box_size, box_type = int.from_bytes(header[:4], "big"), header[4:8]
            if box_size == 1 and len(header) >= 16:
                box_size = int.from_bytes(header[8:16], "big")
            if box_type == b"moov":
                return offset + box_size <= size
            elif box_size == 0:  # the box runs to the end of the file
                return False
            if box_size < 8:
                return False
            offset += box_size
    return False


@dataclass
class _Timeline:
    """A stream's timing in its own ticks (`time_base`)."""

    time_base: Any  # fractions.Fraction
    start: int
    declared_end: int | None
    declared_from_container: bool
    frame_ticks: int  # one nominal frame interval

    def seconds(self, ticks: float) -> float:
        return float(ticks * self.time_base)


def _decode(container: Any, path: str, positions: np.ndarray | None, shortest_edge: int | None) -> DecodedVideo:
    """Check the streams, measure what reads against what is declared, then sample (see the module docstring)."""
    streams = container.streams
    if not streams.video:
        audio = len(streams.audio)
        what = f"audio only ({audio} audio stream{'s' * (audio != 1)})" if audio else "no audio or video streams"
        raise VideoDecodeError(f"Video file {path} has no video stream: {what}.")
    stream = streams.video[0]
    if stream.codec_context is None:
        raise VideoDecodeError(f"Video file {path}: its video stream's codec cannot be decoded (unknown codec tag).")
    timeline = _timeline(container, stream)
    readable_end, packet_count, has_timestamps = _readable_end(container, stream, timeline)
    if packet_count == 0:
        raise VideoDecodeError(f"Video file {path} holds no video frames.")
    tolerance = max(2 * timeline.seconds(timeline.frame_ticks), TRUNCATION_TOLERANCE_SECONDS)
    if timeline.declared_from_container:
        tolerance += CONTAINER_DURATION_SLACK_SECONDS
    codec = stream.codec_context
    span = readable_end - timeline.start
    ticks = None if positions is None else [timeline.start + int(math.floor(p * span + 1e-6)) for p in positions]
    try:
        if not has_timestamps:
            raise _NoTimestamps
        frames = _frames_at(container, stream, codec, ticks, timeline, allow_seek=True)
    except _SeekingUnusable as reason:
        # One pass from the start instead: in time when frames carry timestamps, else by counting frames.
        logger.debug("Video file %s: decoding from the start (%s).", path, reason or "no timestamps")
        has_timestamps = has_timestamps and not isinstance(reason, _NoTimestamps)
        targets = ticks if has_timestamps or positions is None else positions_to_indices(positions, packet_count)
        frames = _frames_at(
            container,
            stream,
            codec,
            None if targets is None else list(targets),
            timeline,
            allow_seek=False,
            count_frames=not has_timestamps,
        )
    finally:
        codec.skip_frame = "DEFAULT"
    if not frames:
        if timeline.declared_end is not None and readable_end < timeline.declared_end:
            raise VideoDecodeError(
                f"Video file {path} is truncated: it declares {timeline.seconds(timeline.declared_end - timeline.start):.2f}"
                " s of video but not one frame decodes (likely an interrupted download or copy)."
            )
        raise VideoDecodeError(f"Video file {path} holds no decodable video frames.")
    rotation = frame_rotation(stream, frames[0][1])
    arrays = [upright(rgb_frame(frame, shortest_edge), rotation) for _, frame in frames]
    timestamps = [
        timeline.seconds(key - timeline.start) if has_timestamps else key * timeline.seconds(timeline.frame_ticks)
        for key, _ in frames
    ]
    fps = float(stream.average_rate) if stream.average_rate else None
    declared = None if timeline.declared_end is None else timeline.seconds(timeline.declared_end - timeline.start)
    if has_timestamps:
        readable = timeline.seconds(readable_end - timeline.start)
    else:
        readable = packet_count * timeline.seconds(timeline.frame_ticks)
    height, width = arrays[0].shape[:2]
    decoded = DecodedVideo(
        frames=np.stack(arrays),
        timestamps=timestamps,
        metadata=VideoMetadata(
            total_num_frames=len(arrays),  # set below
            fps=fps,
            duration=readable,
            video_backend="pyav",
            height=height,
            width=width,
            frames_indices=[round(t * fps) for t in timestamps] if fps else list(range(len(arrays))),
        ),
        declared_seconds=declared,
        readable_seconds=readable,
        rotation=rotation,
        truncation_tolerance=tolerance,
    )
    declared_count = 0 if decoded.truncated else int(stream.frames)  # a cut file's header counts the lost frames
    decoded.metadata.total_num_frames = declared_count or (round(readable * fps) if fps else len(arrays))
    return decoded


def _timeline(container: Any, stream: Any) -> _Timeline:
    import av

    time_base = stream.time_base
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    frame_ticks = max(1, round(1 / (rate * time_base))) if rate and time_base else 1
    start = stream.start_time if stream.start_time is not None else 0
    declared_end, from_container = None, False
    if stream.duration:
        declared_end = start + stream.duration
    elif (tag := _duration_tag(stream.metadata)) is not None:
        declared_end = start + round(tag / time_base)
    elif container.duration:
        container_start = container.start_time or 0
        declared_end = round((container_start + container.duration) / av.time_base / time_base)
        from_container = True
    return _Timeline(time_base, start, declared_end, from_container, frame_ticks)


def _duration_tag(metadata: dict) -> float | None:
    """Matroska's per-track `DURATION` tag ("HH:MM:SS.nnnnnnnnn"), in seconds."""
    value = next((v for k, v in metadata.items() if k.upper() == "DURATION"), None)
    try:
        hours, minutes, seconds = str(value).split(":")
        return int(hours) * 3600 + int(minutes) * 60 + float(seconds)
    except (AttributeError, ValueError):
        return None


def _packets(container: Any, stream: Any):
    """The stream's packets in file order, one at a time (nothing is kept); stops at the end or at unreadable data."""
    import av

    try:
        for packet in container.demux(stream):
            if packet.size:
                yield packet
    except (av.error.FFmpegError, OSError):
        return  # truncated or corrupt data ends the readable stream


def _readable_end(container: Any, stream: Any, timeline: _Timeline) -> tuple[int, int, bool]:
    """(end of the last readable frame in ticks, packets seen, whether packets carry timestamps).

    With a declared end: seek there and read the last packets (no decoding). When nothing reads past that seek (the
    index points beyond the end of a cut file) or nothing is declared, scan every packet from the start.
    """
    import av

    def scan() -> tuple[int, int, bool]:
        end, count, timed = None, 0, True
        for packet in _packets(container, stream):
            count += 1
            if packet.pts is None:
                timed = False
                continue
            packet_end = packet.pts + (packet.duration or timeline.frame_ticks)
            end = packet_end if end is None else max(end, packet_end)
        return (end if end is not None else timeline.start), count, timed and end is not None

    if timeline.declared_end is not None:
        try:
            # Any frame, not a keyframe: only the last few packets are read (a keyframe may be far back).
            probe_at = max(timeline.declared_end - 8 * timeline.frame_ticks, timeline.start)
            container.seek(probe_at, stream=stream, backward=True, any_frame=True)
            end, count, timed = scan()
        except av.error.FFmpegError:
            count = 0
        if count and timed and end > timeline.start:
            return end, _declared_or_estimated_count(stream, end - timeline.start, timeline), True
    container.seek(0)
    end, count, timed = scan()
    return end, count, timed


def _declared_or_estimated_count(stream: Any, span: int, timeline: _Timeline) -> int:
    return int(stream.frames) or max(1, round(span / timeline.frame_ticks))


class _LandedLate(Exception):
    """A seek reached a keyframe shown after the target (its decode time was before it): seek further back."""


class _Picker:
    """Resolves sorted targets from frames offered in presentation order: a target's frame is the last one at or
    before it, known once a later frame appears (or the stream ends). Holds one frame besides the answers."""

    def __init__(self, targets: list[int]):
        self.wanted = sorted(set(targets))
        self.position = 0
        self.held: tuple[int, Any] | None = None
        self.answers: dict[int, tuple[int, Any]] = {}

    @property
    def next_target(self) -> int | None:
        return self.wanted[self.position] if self.position < len(self.wanted) else None

    def offer(self, key: int, frame: Any, duration: int = 0) -> None:
        """`duration` > 0 (the frame's display time, when the container gives it) resolves the targets the frame
        covers at once, instead of after the next frame is decoded."""
        while self.position < len(self.wanted) and key > self.wanted[self.position]:
            # A target before the first frame (a stream whose timestamps start late) gets that first frame.
            self.answers[self.wanted[self.position]] = self.held or (key, frame)
            self.position += 1
        self.held = (key, frame)
        while duration > 0 and self.position < len(self.wanted) and self.wanted[self.position] < key + duration:
            self.answers[self.wanted[self.position]] = self.held
            self.position += 1

    def finish(self) -> None:
        while self.next_target is not None and self.held is not None:
            self.answers[self.wanted[self.position]] = self.held
            self.position += 1


def _frames_at(
    container: Any,
    stream: Any,
    codec: Any,
    targets: list[int] | None,
    timeline: _Timeline,
    allow_seek: bool,
    count_frames: bool = False,
) -> list[tuple[int, Any]]:
    """`(key, frame)` for each target, in the targets' order: the frame on screen at each target time (key = pts), or
    with `count_frames` the frame at each presentation index (key = index, no timestamps needed). `targets=None`:
    every frame.

    With `allow_seek`, each unresolved target seeks to its keyframe -- unless that keyframe is one the decoder has
    already passed, then decoding simply goes on -- and decodes forward until a frame after it appears. Without,
    one pass from the current position. No packet is kept; frames only while they can still be an answer.
    """
    import av

    every: list[tuple[int, Any]] = []
    picker = _Picker(targets or [])
    state = {"last_fed": None, "drained": False, "count": 0, "guard_late": False}

    def take(frames: list) -> None:
        for frame in frames:
            if count_frames:
                key, state["count"] = state["count"], state["count"] + 1
            elif frame.pts is None:
                raise _NoTimestamps("frames without timestamps")
            else:
                key = frame.pts
            if targets is None:
                every.append((key, frame))
                continue
            if state["guard_late"] and picker.held is None and key > picker.next_target:
                raise _LandedLate
            state["guard_late"] = False
            picker.offer(key, frame, 0 if count_frames else (frame.duration or 0))

    def feed(packets: Any, until_resolved: int | None) -> None:
        """Decode forward until `until_resolved` has its frame (None: to the end of the stream)."""
        for packet in packets:
            codec.skip_frame = "NONREF" if _unwanted(packet, picker.next_target, count_frames) else "DEFAULT"
            try:
                decoded = codec.decode(packet)
            except av.error.FFmpegError as error:  # one damaged packet: the decoder conceals it, as players do
                logger.debug("Skipping a packet that does not decode: %s", error)
                decoded = []
            state["last_fed"] = packet.dts if packet.dts is not None else packet.pts  # decode order
            take(decoded)
            if until_resolved is not None and picker.next_target != until_resolved:
                return
        codec.skip_frame = "DEFAULT"
        try:
            take(codec.decode(None))
        except av.error.FFmpegError:
            pass
        state["drained"] = True

    if targets is None or not allow_seek:
        container.seek(0)  # from the start (PyAV's seek also empties the decoder)
        feed(_packets(container, stream), None)
        if targets is None:
            return every
        picker.finish()
        return [picker.answers[target] for target in targets if target in picker.answers]

    keyframes = _keyframe_stamps(stream)
    packets = None  # the packet reader, kept across targets while decoding can simply go on
    while (target := picker.next_target) is not None:
        if state["drained"]:
            picker.finish()
            break
        if packets is not None and not _worth_seeking(keyframes, state["last_fed"], target, timeline):
            feed(packets, target)  # the decoder is already past the target's keyframe: go on
            continue
        # PyAV's seek flushes the decoder, so a seek always restarts from a keyframe.
        seek_to = target
        for attempt in range(_SEEK_RETRIES + 1):
            container.seek(max(seek_to, timeline.start), stream=stream, backward=True)
            packets = _packets(container, stream)
            picker.held, state["last_fed"] = None, None
            state["guard_late"] = seek_to > timeline.start
            try:
                feed(packets, target)
                break
            except _LandedLate:
                seek_to = target - timeline.frame_ticks * 4 ** (attempt + 1)
        else:
            raise _SeekingUnusable("seeking never lands before the target")
        if picker.next_target == target and not state["drained"]:
            raise _SeekingUnusable("the target was not reached")
    if len(picker.answers) < len(picker.wanted):
        raise _SeekingUnusable("targets left without a frame")
    return [picker.answers[target] for target in targets]


def _keyframe_stamps(stream: Any) -> np.ndarray | None:
    """Timestamps of the keyframes the container's index lists (MP4, Matroska cues, AVI), sorted; None without one."""
    entries = stream.index_entries
    if entries is None or len(entries) == 0:
        return None
    stamps = np.fromiter((entry.timestamp for entry in entries if entry.is_keyframe), dtype=np.int64)
    return np.sort(stamps) if len(stamps) else None


def _worth_seeking(keyframes: np.ndarray | None, last_fed: int | None, target: int, timeline: _Timeline) -> bool:
    """Seek when a keyframe lies between what the decoder has been fed and the target (decoding on would cost
    more); without an index, when the target is more than a few seconds ahead."""
    if last_fed is None:
        return True
    if keyframes is None:
        return timeline.seconds(target - last_fed) > SEEK_WITHOUT_INDEX_SECONDS
    before = np.searchsorted(keyframes, target, side="right") - 1
    return before >= 0 and keyframes[before] > last_fed


def _unwanted(packet: Any, target: int | None, count_frames: bool) -> bool:
    """A packet whose frame ends before the target cannot be on screen at it (nor at later targets)."""
    if target is None or count_frames or packet.pts is None or not packet.duration:
        return False
    return packet.pts + packet.duration <= target


def frame_rotation(stream: Any, frame: Any) -> int:
    """Degrees counter-clockwise that make the frames upright: the display matrix, else the legacy `rotate` tag
    (which counts clockwise)."""
    degrees = 0
    try:
        degrees = round(frame.rotation or 0)
    except (AttributeError, ValueError, TypeError):
        degrees = 0
    if not degrees:
        try:
            tag = next((v for k, v in stream.metadata.items() if k.lower() == "rotate"), 0)
            degrees = -int(float(tag))
        except (TypeError, ValueError):
            degrees = 0
    return int(round(degrees / 90)) * 90 % 360


def rgb_frame(frame: Any, shortest_edge: int | None = None) -> np.ndarray:
    """A decoded frame as `(H, W, 3)` uint8 RGB; with `shortest_edge` smaller than its shorter side, converted straight
    to that size (aspect kept) with area averaging, as a resize of the full frame would blend the pixels it drops.
    Never enlarged: the processor's own resize does that, as before."""
    width, height = frame.width, frame.height
    if shortest_edge is None or min(width, height) <= shortest_edge:
        return frame.to_ndarray(format="rgb24")
    # The longer side as the processor's resize computes it (truncated), so that its resize is then the identity and
    # its centre crop takes the same pixels as on a full-size frame.
    if width <= height:
        width, height = shortest_edge, int(shortest_edge * height / width)
    else:
        width, height = int(shortest_edge * width / height), shortest_edge
    return frame.to_ndarray(format="rgb24", width=width, height=height, interpolation="AREA")


def upright(array: np.ndarray, rotation: int) -> np.ndarray:
    return np.ascontiguousarray(np.rot90(array, k=rotation // 90)) if rotation else array


__all__ = [
    "DecodedVideo",
    "VideoDecodeError",
    "decode_video",
    "decode_video_at",
    "frame_rotation",
    "positions_to_indices",
    "rgb_frame",
    "segment_indices",
    "segment_positions",
    "upright",
]
