"""One pass through a long video: the frame on screen at each moment of a regular grid, in time order, with memory
bounded by one frame (the timeline's input; see `hesp_hf.inference.timeline`).

Moment `k` is `(k + 0.5) / rate` seconds after the stream's first frame, so that `T` consecutive moments at
`rate = T / window` seconds are exactly where the processor samples a `window`-second clip (segment centres).
The frame on screen at a moment is the last frame whose timestamp is at or before it: variable frame rate is
honoured, and only the frames that are on screen at some moment are converted to pixels.

Damage: a packet that does not decode is counted and skipped; when the container itself cannot be read on, the
stream seeks past the damage and goes on. Moments between the last frame before damage and the first frame after it
(and, for a file cut short, between the end that reads and the end the file declares) have no frame: they are
yielded with `image=None` and listed in `FrameStream.gaps`, so the windows around them stay and the gap shows.
"""

import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..modeling.video_decoding_hesp import VideoDecodeError, decode_video, frame_rotation, upright


logger = logging.getLogger(__name__)

# Seeks tried past a stretch the demuxer cannot read, each a further second on, before the rest counts as lost.
_RECOVERY_SEEKS = 8
# A file whose declared end lies this much past the last frame that reads is reported as cut short.
_CUT_TOLERANCE_SECONDS = 0.5


@dataclass
class StreamedFrame:
    """The frame shown at grid moment `index` (`time` seconds from the stream's start), as RGB uint8 `(H, W, 3)`
    upright, or None where damage left no frame. `scale`: the source frame's pixels per pixel of `image` (a box found
    in `image` times `scale` is in the video's own pixels)."""

    index: int
    time: float
    image: np.ndarray | None
    scale: float = 1.0


def converted_size(width: int, height: int, shortest_edge: int | None, shrink_only: bool = False) -> tuple[int, int]:
    """`(width, height)` of a frame converted to `shortest_edge` on its shorter side, aspect kept: its own size with
    no edge, or with `shrink_only` when it is smaller already. Shared by files (`FrameStream`) and the app's camera."""
    shorter = min(width, height)
    if shortest_edge is None or shorter == shortest_edge or (shrink_only and shorter < shortest_edge):
        return width, height
    scale = shortest_edge / shorter
    return max(1, round(width * scale)), max(1, round(height * scale))


@dataclass
class Gap:
    """A stretch `[start, end)` (seconds from the stream's start) where no frame could be read, and why."""

    start: float
    end: float
    reason: str

    def to_json(self) -> dict[str, Any]:
        return {"start": round(self.start, 3), "end": round(self.end, 3), "reason": self.reason}


@dataclass
class FrameStream:
    """Iterate to get `StreamedFrame`s of `path` at `rate` moments per second; `shortest_edge` scales every frame
    (aspect kept) while it is converted, which costs far less than converting full frames and resizing them later
    (None: full size, e.g. for face detection). After the iteration, `duration`, `gaps` and `decode_errors` say
    what was read."""

    path: str | Path
    rate: float
    shortest_edge: int | None = None
    duration: float = 0.0  # seconds from the first frame to the end of the last one that decoded
    declared_seconds: float | None = None
    gaps: list[Gap] = field(default_factory=list)
    decode_errors: int = 0
    thread_type: str = "AUTO"  # "SLICE" for a live stream: frame threads hold each frame back a frame per thread
    shrink_only: bool = False  # True: `shortest_edge` only shrinks; a smaller frame is converted at its own size

    def __post_init__(self) -> None:
        self._origin: float | None = None  # the first frame's stream time: moments count from it
        if not self.rate > 0:
            raise ValueError(f"The sampling rate must be > 0 moments per second, got {self.rate}.")

    def __iter__(self) -> Iterator[StreamedFrame]:
        import av

        path = str(self.path)
        try:
            container = av.open(path, metadata_errors="replace")
        except Exception:  # noqa: BLE001 -- the clip decoder names what is wrong with the file
            decode_video(path, 1)  # raises VideoDecodeError (text file, no index, ...)
            raise VideoDecodeError(f"Video file {path} cannot be opened.") from None
        with container:
            yield from self.read(container, f"File {path}")

    def read(self, container: Any, name: str) -> Iterator[StreamedFrame]:
        """The moments of an open PyAV `container` (a file, or a live stream that `hesp_hf.data.live_source` opened);
        `name` says what it is in the error for a container without video."""
        if not container.streams.video:
            audio = len(container.streams.audio)
            what = f"audio only ({audio} audio stream{'s' * (audio != 1)})" if audio else "no streams"
            raise VideoDecodeError(f"{name} has no video stream: {what}.")
        yield from self._moments(container, container.streams.video[0])

    def _moments(self, container: Any, stream: Any) -> Iterator[StreamedFrame]:
        stream.thread_type = self.thread_type  # frame threads: a long file's decoding is most of the work beside it
        time_base = float(stream.time_base) if stream.time_base else None
        nominal = float(1 / stream.average_rate) if stream.average_rate else 1 / 25
        self.declared_seconds = _declared_seconds(container, stream)
        origin: float | None = None
        shown: Any = None  # the frame on screen now (converted only when a moment falls on it)
        shown_time = shown_end = 0.0
        # Damage not yet behind a clean keyframe: where it starts (the end of the last good frame) and the latest
        # stream time a lost packet belonged to.
        damage_start: float | None = None
        damage_last = -math.inf
        index = 0
        rotation = None
        for item in self._frames(container, stream, time_base):
            if isinstance(item, _Lost):
                lost_at = None if item.time is None or origin is None else item.time - origin
                if damage_start is None:
                    # Decoders hand frames out a few packets late: damage starts at the lost packet's own time
                    # when it is known, else right after the last frame out.
                    clean_until = shown_end if shown is not None else 0.0
                    damage_start = clean_until if lost_at is None else max(clean_until, lost_at)
                if lost_at is not None:
                    damage_last = max(damage_last, lost_at)
                continue
            frame = item
            time = _frame_time(frame, time_base)
            if time is None:
                time = shown_end if shown is not None else 0.0
            if origin is None:
                origin = self._origin = time
                rotation = frame_rotation(stream, frame)
            time -= origin
            if shown is not None and time <= shown_time:
                continue  # a frame decoded again after a seek back, or out of order
            resumes = damage_start is not None and time >= damage_start
            if resumes and not (frame.key_frame and time > damage_last):
                # Frames after lost packets predict from damaged data (decoders conceal, not repair): the stream is
                # clean again at the first keyframe past every lost packet.
                continue
            # Moments before this frame show the frame before it -- or nothing, across damage.
            while (moment := (index + 0.5) / self.rate) < time:
                lost = shown is None or (damage_start is not None and moment >= damage_start)
                yield self._streamed(index, moment, None if lost else shown, rotation)
                index += 1
            if resumes:
                self.gaps.append(Gap(damage_start, time, "frames that could not be decoded"))
                damage_start, damage_last = None, -math.inf
            duration = _frame_duration(frame, time_base) or nominal
            shown, shown_time, shown_end = frame, time, time + duration
        if shown is None:
            raise VideoDecodeError(f"Video file {self.path} holds no video frames that decode.")
        self.duration = shown_end
        if damage_start is not None and damage_start < shown_end:
            shown_end = damage_start  # the last frames shown were damaged: the clean part ends where damage began
        while (moment := (index + 0.5) / self.rate) < shown_end:
            yield self._streamed(index, moment, shown, rotation)
            index += 1
        declared = self.declared_seconds
        end = max(declared or 0.0, self.duration)
        cut = declared is not None and declared - self.duration > _CUT_TOLERANCE_SECONDS
        if damage_start is not None or cut:
            reason = "frames that could not be decoded" if damage_start is not None else "the file is cut short"
            if end > shown_end:
                self.gaps.append(Gap(shown_end, end, reason))
                while (moment := (index + 0.5) / self.rate) < end:
                    yield StreamedFrame(index, moment, None)
                    index += 1
                self.duration = end

    def _frames(self, container: Any, stream: Any, time_base: float | None) -> Iterator[Any]:
        """Decoded frames in order, and a `_Lost` where packets were lost (the demuxer or decoder failed)."""
        import av

        last_time = 0.0
        recoveries = 0
        codec = stream.codec_context
        while True:
            try:
                for packet in container.demux(stream):
                    # A frame no moment falls on, that no other frame predicts from, need not be decoded at all.
                    skip = self._origin is not None and not self._shows_a_moment(packet, time_base)
                    codec.skip_frame = "NONREF" if skip else "DEFAULT"
                    try:
                        frames = packet.decode()
                    except (av.error.FFmpegError, ValueError):
                        self.decode_errors += 1
                        yield _Lost(_frame_time(packet, time_base))
                        continue
                    for frame in frames:
                        last_time = _frame_time(frame, time_base) or last_time
                        yield frame
                return
            except (av.error.FFmpegError, OSError) as error:
                self.decode_errors += 1
                recoveries += 1
                logger.warning("Video file %s: unreadable data after %.2f s (%s).", self.path, last_time, error)
                yield _Lost(None)
                if recoveries > _RECOVERY_SEEKS or time_base is None:
                    return
                try:  # past the damage: the first keyframe after a point a little further on
                    container.seek(int((last_time + recoveries) / time_base), stream=stream, any_frame=False)
                    stream.codec_context.flush_buffers()
                except (av.error.FFmpegError, OSError):
                    return

    def _shows_a_moment(self, packet: Any, time_base: float | None) -> bool:
        """Whether a moment of the grid falls inside the packet's frame (True when its timing is unknown)."""
        if packet.pts is None or not packet.duration or time_base is None:
            return True
        start = packet.pts * time_base - self._origin
        first = math.ceil(start * self.rate - 0.5)  # the first moment at or after the frame's start
        return (first + 0.5) / self.rate < start + packet.duration * time_base

    def _streamed(self, index: int, moment: float, frame: Any, rotation: int | None) -> StreamedFrame:
        if frame is None:
            return StreamedFrame(index, moment, None)
        image = self._pixels(frame, rotation)
        return StreamedFrame(index, moment, image, min(frame.width, frame.height) / min(image.shape[:2]))

    def _pixels(self, frame: Any, rotation: int | None) -> np.ndarray:
        width, height = converted_size(frame.width, frame.height, self.shortest_edge, self.shrink_only)
        if (width, height) != (frame.width, frame.height):
            # Area averaging when shrinking, as a resize of the full frame would blend the pixels it drops.
            array = frame.to_ndarray(format="rgb24", width=width, height=height, interpolation="AREA")
        else:
            array = frame.to_ndarray(format="rgb24")
        return upright(array, rotation or 0)


@dataclass
class _Lost:
    """Packets that could not be read or decoded; `time`: the stream time of the one lost packet, when known."""

    time: float | None


def _frame_time(frame: Any, time_base: float | None) -> float | None:
    stamp = frame.pts if frame.pts is not None else frame.dts
    if stamp is None or time_base is None:
        return None
    return stamp * time_base


def _frame_duration(frame: Any, time_base: float | None) -> float | None:
    duration = getattr(frame, "duration", None)
    if not duration or time_base is None:
        return None
    return duration * time_base


def _declared_seconds(container: Any, stream: Any) -> float | None:
    import av

    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    if container.duration:
        return container.duration / av.time_base
    return None
