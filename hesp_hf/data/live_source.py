"""A live video source read as it arrives: standard input (`-`, e.g. `ffmpeg -f v4l2 -i /dev/video0 -f mpegts -`), a
named pipe, a capture device through an FFmpeg input format PyAV has, or a stream URL FFmpeg reads (rtsp, udp, srt,
http, ...). A thread decodes it as fast as it comes (`FrameStream`'s grid of moments: the frame on screen at each
sampled moment) and hands the sampled frames to the model through a bounded queue.

    frames = LiveFrames("-", rate=4.0, shortest_edge=224)
    frames.start()
    while not frames.done:
        for arrived in frames.take(32):  # [] when none came within its timeout
            ...  # arrived.frame (a StreamedFrame), arrived.arrived (time.monotonic() when it was decoded)

Back-pressure: decoding never waits for the model (a camera or a pipe cannot be paused without losing data), so when
the model falls behind and `max_queue_frames` frames wait, those frames are dropped and counted (`dropped`) and the
model goes on from the newest frame; memory holds at most that many frames whatever the duration.
A stream that stalls is waited for `stall_timeout_s` seconds, then taken as ended; one that breaks (a packet cut
short, a connection lost) ends the reading where it broke, and what came before it stands.
"""

import logging
import os
import select
import stat
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..modeling.video_decoding_hesp import VideoDecodeError
from .frame_stream import FrameStream, StreamedFrame


logger = logging.getLogger(__name__)

STDIN = "-"
# Schemes of network inputs FFmpeg reads; anything else with "://" is tried too, and named if it fails.
STREAM_SCHEMES = ("rtsp", "rtsps", "rtmp", "rtmps", "udp", "rtp", "srt", "tcp", "http", "https", "hls", "rist")
PIPE_EXAMPLE = "ffmpeg -f v4l2 -i /dev/video0 -f mpegts - | hesp-timeline --live - ..."
# How often a waiting reader looks at the stop flag and the stall clock.
_POLL_S = 0.05
# FFmpeg reads this much of a stream to learn its codecs before the first frame comes out (its defaults, 5 s and
# 5 MB, would hold the first seconds of a live stream back and then hand them over all at once).
_PROBE_OPTIONS = {"analyzeduration": "500000", "probesize": "1000000"}


class LiveSourceError(ValueError):
    """A live source that cannot be opened or holds no video, said in one line."""


@dataclass
class ArrivedFrame:
    """A sampled frame and when it reached this process (`time.monotonic()`, once decoded and converted)."""

    frame: StreamedFrame
    arrived: float


class _PipeReader:
    """A file-like view of a pipe's descriptor for PyAV: `read` waits for data at most `stall_timeout_s` (then
    reports end of input and records the stall) and returns at once, empty, once `stop` is set."""

    def __init__(self, fd: int, stall_timeout_s: float, stop: threading.Event):
        self.fd, self.stall_timeout_s, self.stop = fd, stall_timeout_s, stop
        self.stalled = False
        self.received = 0

    def read(self, size: int) -> bytes:
        waited_since = time.monotonic()
        while not self.stop.is_set() and not self.stalled:  # after a stall, the demuxer's retries end at once
            ready, _, _ = select.select([self.fd], [], [], _POLL_S)
            if ready:
                data = os.read(self.fd, size)
                self.received += len(data)
                return data
            if time.monotonic() - waited_since >= self.stall_timeout_s:
                self.stalled = True
                return b""
        return b""


def describe_source(source: str | int) -> str:
    """How a source is named in messages and in `summary.json`."""
    if source == STDIN:
        return "standard input"
    if isinstance(source, int):
        return f"file descriptor {source}"
    return str(source)


class LiveFrames:
    """The sampled frames of a live `source` (see the module), at `rate` moments per second scaled to
    `shortest_edge` (None: full frames), handed over through a queue of at most `max_queue_frames`. Opening happens
    here, so that a source that is missing or holds no video raises `LiveSourceError` (or `VideoDecodeError`) before
    anything starts. `source` may also be an open file descriptor (a pipe) from Python. `input_format`: an FFmpeg
    input format for a capture device (`avfoundation`, `dshow`, `v4l2` where PyAV's FFmpeg has it)."""

    def __init__(
        self,
        source: str | int,
        rate: float,
        shortest_edge: int | None = None,
        *,
        shrink_only: bool = False,
        stall_timeout_s: float = 10.0,
        max_queue_frames: int = 16,
        input_format: str | None = None,
    ):
        if not stall_timeout_s > 0:
            raise ValueError(f"stall_timeout_s must be > 0 seconds, got {stall_timeout_s}.")
        if max_queue_frames < 1:
            raise ValueError(f"max_queue_frames must be >= 1, got {max_queue_frames}.")
        self.name = describe_source(source)
        self.stall_timeout_s = stall_timeout_s
        self.stream = FrameStream(self.name, rate, shortest_edge, thread_type="SLICE", shrink_only=shrink_only)
        self._stop = threading.Event()
        self._queue: deque[ArrivedFrame] = deque()
        self.capacity = max_queue_frames
        self._ready = threading.Condition()
        self._reader: _PipeReader | None = None
        self._thread: threading.Thread | None = None
        self._finished = False
        self.error: BaseException | None = None
        self.ended = ""  # why reading ended: "end of input", "stalled", "stopped", or the error
        self.frames = self.dropped = self.most_queued = 0
        self.container = self._open(source, input_format)

    # ---------------------------------------------------------------------------------------------- opening
    def _open(self, source: str | int, input_format: str | None) -> Any:
        import av

        if input_format is not None and input_format not in av.formats_available:
            raise LiveSourceError(_missing_format(input_format, source))
        if isinstance(source, int):
            return self._open_pipe(source)
        text = str(source)
        if text == STDIN:
            if os.isatty(0):
                raise LiveSourceError(
                    f"--live -: standard input is a terminal, not a stream; pipe one in: {PIPE_EXAMPLE}"
                )
            return self._open_pipe(0)
        if "://" in text:
            return self._open_with_ffmpeg(text, input_format)
        path = Path(text)
        if input_format is not None:
            return self._open_with_ffmpeg(text, input_format)
        if not path.exists():
            raise LiveSourceError(
                f"live source {text} does not exist: expected '-' (a stream on standard input), a stream URL "
                f"({', '.join(STREAM_SCHEMES[:8])}, ...://) or a capture device"
            )
        mode = path.stat().st_mode
        if stat.S_ISFIFO(mode):  # opening waits for a writer, as FFmpeg does
            return self._open_pipe(os.open(text, os.O_RDONLY), owned=True)
        if stat.S_ISCHR(mode) and path.name.startswith("video"):
            raise LiveSourceError(_missing_format("v4l2", text))
        if stat.S_ISREG(mode):
            raise LiveSourceError(
                f"live source {text} is a finished recording, not a live stream: run hesp-timeline without --live "
                "(or pipe it in at its own pace: ffmpeg -re -i FILE -c copy -f mpegts - | hesp-timeline --live -)"
            )
        raise LiveSourceError(f"live source {text} is neither a pipe nor a capture device FFmpeg can open")

    def _open_pipe(self, fd: int, owned: bool = False) -> Any:
        import av

        self._reader = _PipeReader(fd, self.stall_timeout_s, self._stop)
        self._owned_fd = fd if owned else None
        try:
            container = av.open(self._reader, metadata_errors="replace", options=_PROBE_OPTIONS)
        except (av.error.FFmpegError, OSError, ValueError) as error:
            if self._reader.stalled and not self._reader.received:
                raise LiveSourceError(f"{self.name}: no data arrived within {self.stall_timeout_s:g} s") from None
            if not self._reader.received:
                raise LiveSourceError(f"{self.name} ended before any data arrived") from None
            raise LiveSourceError(
                f"{self.name} is not a video stream FFmpeg can read ({type(error).__name__}: {_one_line(error)}); "
                f"send a container such as MPEG-TS, e.g. {PIPE_EXAMPLE}"
            ) from None
        return self._checked(container)

    def _open_with_ffmpeg(self, url: str, input_format: str | None) -> Any:
        import av

        try:
            container = av.open(
                url,
                format=input_format,
                timeout=(self.stall_timeout_s, self.stall_timeout_s),
                metadata_errors="replace",
                options=_PROBE_OPTIONS,
            )
        except (av.error.FFmpegError, OSError, ValueError) as error:
            raise LiveSourceError(f"live source {url} cannot be opened ({_one_line(error)})") from None
        return self._checked(container)

    def _checked(self, container: Any) -> Any:
        if not container.streams.video:
            audio = len(container.streams.audio)
            what = f"audio only ({audio} audio stream{'s' * (audio != 1)})" if audio else "no streams"
            container.close()
            raise VideoDecodeError(f"{self.name} has no video stream: {what}.")
        return container

    # ---------------------------------------------------------------------------------------------- reading
    def start(self) -> None:
        """Start reading in a thread of this process (decoding releases the GIL)."""
        self._thread = threading.Thread(target=self._read, name="hesp-live-read", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            for frame in self.stream.read(self.container, self.name):
                item = ArrivedFrame(frame, time.monotonic())
                with self._ready:
                    if len(self._queue) >= self.capacity:
                        # The model is a full queue behind: the backlog goes and the model resumes from this frame.
                        # Dropping it whole, not one frame at a time, leaves runs of consecutive frames that make
                        # whole windows, and brings the latency back to the present at once.
                        self.dropped += len(self._queue)
                        self._queue.clear()
                    self._queue.append(item)
                    self.frames += 1
                    self.most_queued = max(self.most_queued, len(self._queue))
                    self._ready.notify()
                if self._stop.is_set():
                    break
            self.ended = self._why_ended()
        except BaseException as error:  # noqa: BLE001 -- handed to the consumer, which raises it
            self.error, self.ended = error, f"error: {_one_line(error)}"
        finally:
            with self._ready:
                self._finished = True
                self._ready.notify_all()

    def _why_ended(self) -> str:
        if self._stop.is_set():
            return "stopped"
        if self._reader is not None and self._reader.stalled:
            logger.warning("%s: no data for %g s: the stream is taken as ended.", self.name, self.stall_timeout_s)
            return "stalled"
        if self.stream.decode_errors:
            return "broken"  # packets that did not read or decode: a stream cut off, a connection lost
        return "end of input"

    def take(self, limit: int, timeout: float = 0.1) -> list[ArrivedFrame]:
        """Up to `limit` waiting frames, oldest first, without waiting for more once one is there; [] when none
        came within `timeout` seconds or the reading has ended. Raises what the reading thread raised."""
        with self._ready:
            if not self._queue and not self._finished:
                self._ready.wait(timeout)
            taken = [self._queue.popleft() for _ in range(min(limit, len(self._queue)))]
            if not taken and self._finished and self.error is not None:
                error, self.error = self.error, None
                raise error
        return taken

    @property
    def done(self) -> bool:
        """Reading has ended (or was stopped) and every frame was taken."""
        with self._ready:  # an error not yet raised by `take` keeps it open
            return (self._finished or self._stop.is_set()) and not self._queue and self.error is None

    def stop(self) -> None:
        """End the reading at the next frame (safe from a signal handler or another thread)."""
        self._stop.set()

    def close(self) -> None:
        """Stop, wait briefly for the reading thread, and close the source."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=max(1.0, 2 * _POLL_S))
        if self._thread is None or not self._thread.is_alive():
            self.container.close()
        if getattr(self, "_owned_fd", None) is not None:
            os.close(self._owned_fd)  # type: ignore[arg-type]
            self._owned_fd = None


def _missing_format(name: str, source: str | int) -> str:
    if name in ("v4l2", "video4linux2"):
        return (
            f"live source {source}: the FFmpeg inside PyAV's wheels has no v4l2 (video4linux2) input, so a camera "
            f"cannot be opened directly; pipe it in with the ffmpeg program instead: {PIPE_EXAMPLE}"
        )
    return (
        f"live source {source}: PyAV's FFmpeg has no input format {name!r}; pipe the device in instead: {PIPE_EXAMPLE}"
    )


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split())
