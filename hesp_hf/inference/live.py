"""The expression timeline of a live stream (a webcam piped in, a stream URL), window by window as it happens.

    from hesp_hf.inference.live import LiveTimeline, record_live
    live = LiveTimeline(model, processor, "-", window=2.0, stride=0.5)  # '-': a stream on standard input
    for window in live:  # each window as soon as it is decided
        show(window.start, window.decision, window.latency_s)  # your own display

    # or: each row appended to windows.jsonl as it comes, every other file when the stream ends
    summary = record_live(LiveTimeline(model, processor, "-"), "timelines/live-1", "live-1")

Each window is decided by the timeline's own scorer (`hesp_hf.inference.timeline.WindowDecider`: the same decisions
as `hesp_hf.timeline` on the same frames) as soon as its last sampled frame has arrived. Decoding runs in a thread
and never waits for the model (`hesp_hf.data.live_source.LiveFrames`); when the model falls a full queue behind,
the waiting frames are dropped and it resumes from the newest, and a window that lost a frame that way is marked
`dropped`, not decided. Each window carries `latency_s` (from the arrival of its last sampled frame to its decision)
and `dropped_frames` (frames dropped so far in the run). With `face_crop` or `faces="all"` the people's pipeline
decides, as for a recording: windows carry a `person` and come once the face tracker has settled their frames.
`stop()` ends the run after the frames already read (what SIGINT and SIGTERM call).
"""

import json
import logging
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from ..data.frame_stream import StreamedFrame
from ..data.live_source import LiveFrames
from ..modeling.video_processing_hesp import HESPVideoProcessor
from .background import cores_per_process
from .timeline import UNREADABLE, Timeline, TimelineWindow, WindowDecider, log_gaps
from .timeline_outputs import write_timeline


logger = logging.getLogger(__name__)

# A window one of whose sampled frames was dropped because the model was behind: no decision.
DROPPED = "dropped"
WINDOWS_FILE = "windows.jsonl"


@dataclass
class LiveWindow(TimelineWindow):
    """A window of a live stream: a `TimelineWindow` (status also `DROPPED`), with `latency_s` (seconds from the
    arrival of its last sampled frame to its decision; None when that frame was dropped) and `dropped_frames`
    (sampled frames dropped in the run up to its decision)."""

    latency_s: float | None = None
    dropped_frames: int = 0

    def to_json(self) -> dict[str, Any]:
        row = super().to_json()
        row["latency_s"] = None if self.latency_s is None else round(self.latency_s, 4)
        return row


@dataclass
class LiveRecord(Timeline):
    """The timeline of a live run (`file` names the source), with how the run went: `ended` ("end of input",
    "stalled", "broken", "stopped"), the sampled `frames` and how many were `dropped`."""

    ended: str = ""
    frames: int = 0
    dropped: int = 0

    def summary(self) -> dict[str, Any]:
        latencies = sorted(w.latency_s for w in self.windows if isinstance(w, LiveWindow) and w.latency_s is not None)
        return {
            **super().summary(),
            "live": {
                "ended": self.ended,
                "sampled_frames": self.frames,
                "dropped_frames": self.dropped,
                "drop_rate": round(self.dropped / self.frames, 4) if self.frames else 0.0,
                "dropped_windows": sum(w.status == DROPPED for w in self.windows),
                "latency_s": _latency_summary(latencies),
            },
        }


class LiveTimeline:
    """Iterate for the `LiveWindow`s of a live `source` as they are decided (see the module; `source` as
    `LiveFrames` takes it: '-', a stream URL, a capture device with `input_format`, a named pipe or an open pipe's
    descriptor). `max_queue_frames`: sampled frames that may wait for the model before they are dropped
    (default: two windows' worth). Each model pass takes at most one stride's frames (and at most `batch_size`).
    `stall_timeout_s`: how long a silent stream is waited for before it is taken as ended.
    Opening happens here: a source that is missing or not video raises a one-line `ValueError`; `warm_up` runs the
    model once on blank frames before the stream's frames come."""

    def __init__(
        self,
        model: Any,
        processor: HESPVideoProcessor,
        source: str | int,
        window: float = 2.0,
        stride: float = 0.5,
        *,
        face_crop: bool = False,
        faces: str | None = None,
        min_track_s: float = 1.0,
        max_faces: int = 8,
        bf16: bool = False,
        batch_size: int = 32,
        stall_timeout_s: float = 10.0,
        max_queue_frames: int | None = None,
        input_format: str | None = None,
        warm_up: bool = True,
    ):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
        self.model, self.window, self.batch_size = model, window, batch_size
        self.decider = WindowDecider(
            model,
            processor,
            window,
            stride,
            face_crop=face_crop,
            faces=faces,
            min_track_s=min_track_s,
            max_faces=max_faces,
            bf16=bf16,
        )
        self.stride, self.face_crop = self.decider.stride, self.decider.faces is not None
        parameters = next(iter(model.parameters()), None) if hasattr(model, "parameters") else None
        self.cpu_model = parameters is not None and parameters.device.type == "cpu"
        if warm_up:  # before opening: a pipe's writer is not kept waiting
            self.warm_up()
        self.frames = LiveFrames(
            source,
            self.decider.rate,
            self.decider.decode_edge,
            shrink_only=self.decider.shrink_only,
            stall_timeout_s=stall_timeout_s,
            max_queue_frames=max_queue_frames or 2 * self.decider.num_frames,
            input_format=input_format,
        )
        self.source = self.frames.name
        self.next_index = 0  # the next sampled frame expected (frames before it were seen or dropped)
        self._arrivals: dict[int, float] = {}
        self._dropped: set[int] = set()
        self._stopping = False
        self._iterated = False

    def stop(self) -> None:
        """End the run once the frames already read are decided (from a signal handler, or another thread)."""
        self._stopping = True
        self.frames.stop()

    def warm_up(self) -> None:
        """Decide one window of blank frames with a scorer of its own, so that the model's first-call costs (memory
        pools, kernel selection) are paid before the stream's first window, not by it."""
        decider = self.decider
        scratch = WindowDecider(self.model, decider.processor, self.window, self.stride, face_crop=False)
        edge = scratch.decode_edge or 224
        blank = np.zeros((edge, edge, 3), dtype=np.uint8)
        scratch.add([StreamedFrame(i, (i + 0.5) / scratch.rate, blank) for i in range(scratch.num_frames)])

    def __iter__(self) -> Iterator[LiveWindow]:
        import torch

        if self._iterated:
            raise RuntimeError(f"{self.source} was read to its end already: open the source again for another run.")
        self._iterated = True

        # Decoding never pauses: the model keeps to the cores it leaves, since a torch thread that waits for a
        # core held by the decoder stalls every parallel region of the forward pass.
        threads = torch.get_num_threads()
        if self.cpu_model:
            torch.set_num_threads(model_threads())
        self.frames.start()
        try:
            while True:
                # At most a stride's frames a pass: after a slow spell the backlog's windows are decided one by one,
                # each as soon as its frames are encoded, not all at the end of one long pass.
                taken = self.frames.take(min(self.batch_size, self.decider.steps))
                if not taken:
                    if self.frames.done:  # the windows the face tracker still held
                        held = self.decider.finish(self.next_index / self.decider.rate)
                        decided_at = time.monotonic()
                        for window in held:
                            yield self._live(window, decided_at)
                        return
                    continue
                batch: list[StreamedFrame] = []
                for item in taken:
                    while self.next_index < item.frame.index:  # dropped while the model was behind
                        self._dropped.add(self.next_index)
                        batch.append(StreamedFrame(self.next_index, (self.next_index + 0.5) / self.decider.rate, None))
                        self.next_index += 1
                    batch.append(item.frame)
                    self._arrivals[item.frame.index] = item.arrived
                    self.next_index = item.frame.index + 1
                decided = self.decider.add(batch)
                decided_at = time.monotonic()
                for window in decided:
                    yield self._live(window, decided_at)
                self._forget_before(self.next_window_start() - self.decider.held_frames)
        finally:
            self.frames.close()
            torch.set_num_threads(threads)

    def next_window_start(self) -> int:
        """The first sampled frame a window still to come holds: what came before it is done with."""
        steps, size = self.decider.steps, self.decider.num_frames
        return max(0, (self.next_index - size) // steps + 1) * steps if self.next_index >= size else 0

    def _live(self, window: TimelineWindow, decided_at: float) -> LiveWindow:
        first = round(window.start * self.decider.rate)
        last = first + self.decider.num_frames - 1
        members = range(first, last + 1)
        live = LiveWindow(**{f.name: getattr(window, f.name) for f in fields(TimelineWindow)})
        if live.status == UNREADABLE and any(index in self._dropped for index in members):
            live.status = DROPPED
        arrived = self._arrivals.get(last)
        live.latency_s = None if arrived is None else decided_at - arrived
        live.dropped_frames = self.frames.dropped
        return live

    def _forget_before(self, index: int) -> None:
        for key in [k for k in self._arrivals if k < index]:
            del self._arrivals[key]
        self._dropped = {k for k in self._dropped if k >= index}

    def record(self, windows: list[TimelineWindow]) -> LiveRecord:
        """The run's timeline from its `windows` (in order), once the iteration has ended."""
        stream = self.frames.stream
        duration = stream.duration if self.frames.ended in ("end of input", "broken", "stalled") else 0.0
        duration = max(duration, self.next_index / self.decider.rate, *(w.end for w in windows))
        segments, people = self.decider.segments_and_people(windows, duration)
        config = self.model.config
        if not windows:
            logger.warning(
                "%s ended after %.2f s, before one window of %g s: no decision.", self.source, duration, self.window
            )
        record = LiveRecord(
            file=self.source,
            duration=duration,
            window=self.window,
            stride=self.stride,
            labels=list(config.known_labels),
            unknown_label=config.unknown_label,
            windows=windows,
            segments=segments,
            gaps=list(stream.gaps),
            decode_errors=stream.decode_errors,
            face_crop=self.face_crop,
            faces=self.decider.faces,
            people=people,
            ended=self.frames.ended or ("stopped" if self._stopping else "end of input"),
            frames=self.next_index,
            dropped=self.frames.dropped,
        )
        log_gaps(record)
        return record


def record_live(
    live: LiveTimeline,
    folder: str | Path,
    stem: str,
    settings: dict[str, Any] | None = None,
    on_window: Callable[[LiveWindow], None] | None = None,
) -> dict[str, Any]:
    """Run `live` to its end, appending each window's row to `folder/windows.jsonl` as it is decided (a whole line,
    flushed: what is there after an interruption is complete) and calling `on_window`; then write every file of
    `hesp_hf.inference.timeline_outputs.write_timeline` (segments, WebVTT, PNG, `summary.json` last), even when the
    run ends by an error or `stop()`. Windows are read back from the file at the end rather than held, so memory
    stays bounded while the stream runs. Returns the summary."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rows_path = folder / WINDOWS_FILE
    try:
        with rows_path.open("w") as rows:
            for window in live:
                rows.write(json.dumps(window.to_json()) + "\n")
                rows.flush()
                if on_window is not None:
                    on_window(window)
    finally:
        windows = [LiveWindow(**json.loads(line)) for line in rows_path.read_text().splitlines() if line.strip()]
        summary = write_timeline(live.record(windows), folder, stem, settings)
    return summary


def model_threads() -> int:
    """CPU threads for the model beside a live stream's decoding: the cores of this process less one (at least 1).
    For an ONNX export, pass it as `load_for_prediction(..., threads=model_threads(), spinning=False)`."""
    return max(1, cores_per_process(1) - 1)


def _latency_summary(latencies: list[float]) -> dict[str, float | None]:
    if not latencies:
        return {"median": None, "p95": None, "max": None}
    p95 = latencies[min(len(latencies) - 1, int(0.95 * len(latencies)))]
    return {"median": round(statistics.median(latencies), 4), "p95": round(p95, 4), "max": round(latencies[-1], 4)}
