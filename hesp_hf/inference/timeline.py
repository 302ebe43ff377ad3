"""An expression timeline of a long recording: overlapping windows, each decided like a clip (a known expression or
unknown), merged into segments; stretches without a readable frame or without a face are marked, not labelled.

    from hesp_hf.inference.timeline import timeline
    result = timeline(model, processor, "interview.mp4", window=2.0, stride=0.5)
    spans = [(segment.start, segment.end, segment.decision) for segment in result.segments]

The recording is decoded once, in time order (`hesp_hf.data.frame_stream`), at `num_frames / window` frames per
second, so the `num_frames` frames of each window are exactly the ones the processor samples from that stretch as a
clip. A HESP model's frame features depend on the frame alone (`frame_features`), so every sampled frame goes
through the vision tower once, and each window only pools its frames' features (`classify_frame_features`): a small
stride costs little more than a large one. Other models (an ONNX export) run once per window. Memory holds the
frames of one batch and the features of one window, whatever the recording's length.
"""

import logging
import math
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..data.dataset import ClipTransform
from ..data.decoding import sample_clip
from ..data.frame_stream import FrameStream, Gap, StreamedFrame
from ..modeling.video_processing_hesp import HESPVideoProcessor
from .background import decoded_in_background
from .decisions import decisions


logger = logging.getLogger(__name__)

# Window states besides a decision: a sampled frame is missing (damage), no frame of the window shows a face, or
# (following people, `faces=`) the window's person is off screen for most of it.
UNREADABLE = "unreadable"
NO_FACE = "no_face"
ABSENT = "absent"
FACES = ("largest", "all")


@dataclass
class TimelineWindow:
    """One window `[start, end)` in seconds. `status` is "ok" (decided: `label`, `known`, `score` against
    `threshold`, `known_p_value`, `probabilities` over the known classes) or `UNREADABLE` / `NO_FACE` / `ABSENT` (no
    decision). `face_box`: with face cropping, the crop square of the window's middle frame (`x0, y0, x1, y1`, frame
    pixels). `person`: following people (`faces=`), whose window it is."""

    start: float
    end: float
    status: str = "ok"
    label: str | None = None
    known: bool | None = None
    score: float | None = None
    threshold: float | None = None
    probabilities: dict[str, float] = field(default_factory=dict)
    face_box: list[float] | None = None
    known_p_value: float | None = None  # conformal p-value of `score` (hesp_hf.calibration); None: no saved scores
    person: str | None = None

    @property
    def decision(self) -> str:
        """The label, or the status of a window without one."""
        return self.label if self.status == "ok" and self.label is not None else self.status

    def to_json(self) -> dict[str, Any]:
        row = asdict(self)
        row["start"], row["end"] = round(self.start, 3), round(self.end, 3)
        if self.person is None:
            del row["person"]
        return row


@dataclass
class TimelineSegment:
    """Consecutive windows with one decision, covering `[start, end)`: each window stands for the `stride` around
    its centre, so the segments of a recording tile it from 0 to its end without overlap."""

    start: float
    end: float
    decision: str  # a known label, the unknown label, UNREADABLE, NO_FACE or ABSENT
    known: bool | None
    windows: int
    mean_score: float | None
    person: str | None = None

    def to_json(self) -> dict[str, Any]:
        row = asdict(self)
        row["start"], row["end"] = round(self.start, 3), round(self.end, 3)
        row["mean_score"] = None if self.mean_score is None else round(self.mean_score, 6)
        if self.person is None:
            del row["person"]
        return row


@dataclass
class PersonSummary:
    """A followed person: id, first appearance and time on screen (seconds), and the clearest face crop seen."""

    id: str
    first_seen: float
    seconds_on_screen: float
    thumbnail: np.ndarray | None = None  # (96, 96, 3) uint8 RGB


@dataclass
class Timeline:
    """The windows and segments of one recording, with what was read."""

    file: str
    duration: float
    window: float
    stride: float
    labels: list[str]  # the known classes
    unknown_label: str
    windows: list[TimelineWindow]
    segments: list[TimelineSegment]
    gaps: list[Gap] = field(default_factory=list)
    decode_errors: int = 0
    face_crop: bool = False
    faces: str | None = None  # None: whole frames; "largest" / "all": people followed (`timeline_people`)
    people: list[PersonSummary] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        """Totals per decision (seconds; summed over people when following several), the settings and the damage,
        and each person's time on screen and seconds per decision, for `summary.json` and logs."""
        summary = {
            "file": self.file,
            "duration": round(self.duration, 3),
            "window": self.window,
            "stride": self.stride,
            "face_crop": self.face_crop,
            "faces": self.faces,
            "windows": len(self.windows),
            "segments": len(self.segments),
            "seconds_per_decision": seconds_per_decision(self.segments),
            "known_labels": self.labels,
            "unknown_label": self.unknown_label,
            "gaps": [gap.to_json() for gap in self.gaps],
            "decode_errors": self.decode_errors,
        }
        if self.faces is not None:
            summary["people"] = {
                person.id: {
                    "first_seen": round(person.first_seen, 3),
                    "seconds_on_screen": round(person.seconds_on_screen, 3),
                    "seconds_per_decision": seconds_per_decision([s for s in self.segments if s.person == person.id]),
                }
                for person in self.people
            }
        return summary


def seconds_per_decision(segments: Sequence[TimelineSegment]) -> dict[str, float]:
    """Seconds covered by each decision in `segments`."""
    seconds: dict[str, float] = {}
    for segment in segments:
        seconds[segment.decision] = seconds.get(segment.decision, 0.0) + segment.end - segment.start
    return {key: round(value, 3) for key, value in sorted(seconds.items())}


# Sampling faster than a recording's frame rate only repeats its frames (recordings run at up to 120 frames a second),
# while the work and the files grow with the rate: a window's `num_frames` frames are sampled at most this fast.
MAX_SAMPLING_RATE = 120.0
# The longest window or stride (a day): any recording is then one window; longer values only risk overflow.
MAX_WINDOW_SECONDS = 86_400.0


def check_window_stride(
    window: float, stride: float, num_frames: int | None = None, names: tuple[str, str] = ("window", "stride")
) -> None:
    """Raise a one-line `ValueError` naming the setting (`names`: how the caller calls `window` and `stride`), its
    value and the range expected, unless both are finite seconds up to `MAX_WINDOW_SECONDS`, the stride is > 0 and
    the window holds `num_frames` frames at no more than `MAX_SAMPLING_RATE` frames a second (only > 0 when
    `num_frames` is None, before the model is known)."""
    window_name, stride_name = names
    lowest = 0.0 if num_frames is None else num_frames / MAX_SAMPLING_RATE
    if not (math.isfinite(window) and lowest <= window <= MAX_WINDOW_SECONDS and window > 0):
        if num_frames is None:
            expected = f"> 0 and up to {MAX_WINDOW_SECONDS:g}"
        else:  # the bound shown rounded up, so that the value shown passes
            shown = math.ceil(lowest * 10_000) / 10_000
            expected = (
                f"from {shown:g} to {MAX_WINDOW_SECONDS:g} (the model's {num_frames} frames at up to "
                f"{MAX_SAMPLING_RATE:g} frames a second)"
            )
        raise ValueError(f"{window_name} must be a finite number of seconds {expected}, got {window}.")
    if not (math.isfinite(stride) and 0 < stride <= MAX_WINDOW_SECONDS):
        raise ValueError(
            f"{stride_name} must be a finite number of seconds > 0 and up to {MAX_WINDOW_SECONDS:g}, got {stride}."
        )


def frames_per_window_step(window: float, stride: float, num_frames: int) -> tuple[float, int]:
    """The sampling rate (frames per second) and the stride in sampled frames for `window` seconds of `num_frames`
    frames; a stride that is not a whole number of frame steps is rounded to the nearest (at least one). Raises
    `ValueError` for a window or stride out of range (`check_window_stride`)."""
    check_window_stride(window, stride, num_frames)
    rate = num_frames / window
    steps = max(1, round(stride * rate))
    if not math.isclose(steps / rate, stride, rel_tol=1e-6):
        logger.warning(
            "stride %.4g s is not a multiple of the frame step %.4g s (window %.4g s / %d frames): %.4g s is used.",
            stride,
            1 / rate,
            window,
            num_frames,
            steps / rate,
        )
    return rate, steps


def timeline(
    model: Any,
    processor: HESPVideoProcessor,
    video: str | Path,
    window: float = 2.0,
    stride: float = 0.5,
    *,
    face_crop: bool = False,
    faces: str | None = None,
    min_track_s: float = 1.0,
    max_faces: int = 8,
    batch_size: int = 32,
    bf16: bool = False,
    progress: Callable[[float], None] | None = None,
) -> Timeline:
    """The expression timeline of `video` (any length): a decision every `stride` seconds over `window`-second
    windows, and the merged segments. `faces`: "largest" follows one person, chosen once, through the whole
    recording (`face_crop=True` means this); "all" makes a timeline per person (`hesp_hf.inference.timeline_people`:
    tracks shorter than `min_track_s` dropped, at most `max_faces` faces a frame). `batch_size`: sampled frames per
    vision-tower pass. `progress(seconds)` is called with the stream time reached. Raises `VideoDecodeError` naming
    the file when it holds no readable video."""
    if faces is None and face_crop:
        faces = "largest"
    if faces is not None:
        from .timeline_people import people_timeline  # the people's pipeline builds on this module

        return people_timeline(
            model,
            processor,
            video,
            window,
            stride,
            faces=faces,
            min_track_s=min_track_s,
            max_faces=max_faces,
            batch_size=batch_size,
            bf16=bf16,
            progress=progress,
        )
    num_frames = int(processor.num_frames)
    rate, steps = frames_per_window_step(window, stride, num_frames)
    stream = FrameStream(video, rate, shortest_edge=processor.decode_edge(face_crop=False))
    scorer = WindowScorer(model, num_frames, steps, 1 / rate, bf16)
    batches = _processed_batches(stream, processor, batch_size)
    windows: list[TimelineWindow] = []
    seen = 0
    for batch in decoded_in_background(batches):
        windows += scorer.add(batch.pixels, [ON_SCREEN] * len(batch.pixels), [None] * len(batch.pixels))
        seen += len(batch.times)
        if progress is not None and batch.times:
            progress(batch.times[-1])
    if seen < num_frames:  # shorter than one window: one window over the whole recording, as a clip
        windows = [_whole_clip_window(scorer, processor, video, stream.duration)]
    config = model.config
    result = Timeline(
        file=str(video),
        duration=stream.duration,
        window=window,
        stride=steps / rate,
        labels=list(config.known_labels),
        unknown_label=config.unknown_label,
        windows=windows,
        segments=merge_segments(windows, steps / rate, stream.duration),
        gaps=list(stream.gaps),
        decode_errors=stream.decode_errors,
    )
    log_gaps(result)
    return result


def log_gaps(result: Timeline) -> None:
    for gap in result.gaps:
        logger.warning("%s: %.2f-%.2f s marked %s (%s).", result.file, gap.start, gap.end, UNREADABLE, gap.reason)


def merge_segments(windows: Sequence[TimelineWindow], stride: float, duration: float) -> list[TimelineSegment]:
    """Consecutive windows of one decision as segments. Each window stands for `[centre - stride/2, centre +
    stride/2)`; the first reaches back to 0 and the last on to `duration`, so the segments tile the recording."""
    segments: list[TimelineSegment] = []
    scores: list[float] = []
    for position, window in enumerate(windows):
        centre = (window.start + window.end) / 2
        start = 0.0 if position == 0 else max(0.0, centre - stride / 2)
        end = max(duration, window.end) if position == len(windows) - 1 else centre + stride / 2
        if segments and segments[-1].decision == window.decision:
            segments[-1].end = end
            segments[-1].windows += 1
        else:
            if segments:
                segments[-1].end = start
            segments.append(TimelineSegment(start, end, window.decision, window.known, 1, None))
            scores = []
        if window.score is not None:
            scores.append(window.score)
            segments[-1].mean_score = sum(scores) / len(scores)
    return segments


class WindowDecider:
    """Sampled frames in, decided windows out, each window as soon as its last frame is in: the timeline's own
    scorer for frames that arrive a few at a time (a live stream, `hesp_hf.inference.live`). Feed `add` the
    `StreamedFrame`s of a `FrameStream` at `rate` (shortest edge `decode_edge`), in order and without holes (a frame
    that is missing has `image=None`; its windows are `UNREADABLE`), and call `finish` at the end. With `faces`
    ("largest", what `face_crop=True` means, or "all") the people's pipeline decides (`timeline_people.PeopleDecider`):
    windows carry a `person` and come once the face tracker has settled their frames."""

    def __init__(
        self,
        model: Any,
        processor: HESPVideoProcessor,
        window: float = 2.0,
        stride: float = 0.5,
        *,
        face_crop: bool = False,
        faces: str | None = None,
        min_track_s: float = 1.0,
        max_faces: int = 8,
        bf16: bool = False,
    ):
        self.processor = processor
        self.faces = faces or ("largest" if face_crop else None)
        self.num_frames = int(processor.num_frames)
        self.rate, self.steps = frames_per_window_step(window, stride, self.num_frames)
        self.stride = self.steps / self.rate
        self.decode_edge = processor.decode_edge(face_crop=False)
        self.shrink_only = self.faces is not None  # frames for the face tracker are never enlarged
        self._people: Any = None
        if self.faces:
            from .timeline_people import PeopleDecider, people_decode_edge  # the people's pipeline builds on this

            self.decode_edge = people_decode_edge(processor)

            self._people = PeopleDecider(
                model,
                processor,
                self.rate,
                self.steps,
                self.faces,
                min_track_s=min_track_s,
                max_faces=max_faces,
                bf16=bf16,
            )
        else:
            self._scorer = WindowScorer(model, self.num_frames, self.steps, 1 / self.rate, bf16)

    def add(self, frames: list[StreamedFrame]) -> list[TimelineWindow]:
        """The windows that the frames of `frames` complete (none when they complete no window)."""
        if not frames:
            return []
        if self._people is not None:
            return self._people.add(frames)
        pixels = _process(frames, self.processor).pixels
        return self._scorer.add(pixels, [ON_SCREEN] * len(pixels), [None] * len(pixels))

    @property
    def held_frames(self) -> int:
        """How many sampled frames a window may still need once the stream has passed its end (the face tracker's
        delay and a window): what a caller keeping per-frame records must keep."""
        return 0 if self._people is None else self._people.tracker.delay + self.num_frames

    def finish(self, duration: float) -> list[TimelineWindow]:
        """At the end of the stream: the windows still held back (by the face tracker; none without faces)."""
        return [] if self._people is None else self._people.finish(duration)

    def segments_and_people(
        self, windows: Sequence[TimelineWindow], duration: float
    ) -> tuple[list[TimelineSegment], list[PersonSummary]]:
        """The segments of `windows` (every window this decider gave, in any order), merged person by person, and
        the people followed."""
        if self._people is None:
            return merge_segments(windows, self.stride, duration), []
        _, segments, people = self._people.assemble(duration)
        return segments, people


# --------------------------------------------------------------------------------------------- frames -> windows
@dataclass
class _Batch:
    """Consecutive sampled frames: their times and their model input `(N, C, H, W)` (None for a missing frame)."""

    times: list[float]
    pixels: list[torch.Tensor | None]


def _processed_batches(stream: FrameStream, processor: HESPVideoProcessor, batch_size: int) -> Iterator[_Batch]:
    """The stream's frames in batches, turned into model input: the work that runs beside the model, in the
    reading thread."""
    pending: list[StreamedFrame] = []
    for item in stream:
        pending.append(item)
        if len(pending) == batch_size:
            yield _process(pending, processor)
            pending = []
    if pending:
        yield _process(pending, processor)


def _process(frames: list[StreamedFrame], processor: HESPVideoProcessor) -> _Batch:
    readable = [i for i, frame in enumerate(frames) if frame.image is not None]
    pixels: list[torch.Tensor | None] = [None] * len(frames)
    if readable:
        images = np.stack([frames[i].image for i in readable])  # type: ignore[misc]
        processed = ClipTransform(processor, training=False).process(images)  # the data path's frames -> input
        for position, i in enumerate(readable):
            pixels[i] = processed[position]
    return _Batch([frame.time for frame in frames], pixels)


# A sampled frame's state for a window: the frame (or the followed person, detected in it) is there. Following a
# person: shown at their last box (not detected in this frame, while other faces are / no face is), or off screen
# (while other faces are there / no face is; no model input).
ON_SCREEN, HELD, HELD_FACELESS, OFF_SCREEN, OFF_SCREEN_FACELESS = "on", "held", "held_faceless", "off", "off_faceless"
_NOT_SHOWN = (OFF_SCREEN, OFF_SCREEN_FACELESS)


class WindowScorer:
    """Turns sampled frames into decided windows as soon as each window's last frame arrives, keeping only the
    frames (or frame features) that a later window still needs. Each frame comes with its state (`ON_SCREEN`, ...)
    and crop box; a frame without model input is unreadable unless its person is off screen.

    A window is `UNREADABLE` when a frame of it is; `NO_FACE` when no face is detected in any of its frames; `ABSENT`
    when its person is off screen in more than half of it or detected in none; else decided, the frames where the person is off screen
    taking the features of the nearest frame that shows them. `person` names the windows' person."""

    def __init__(
        self,
        model: Any,
        num_frames: int,
        steps: int,
        frame_step: float,
        bf16: bool,
        person: str | None = None,
        start_index: int = 0,
    ):
        self.model, self.person = model, person
        self.device = next(iter(model.parameters())).device if hasattr(model, "parameters") else torch.device("cpu")
        self.num_frames, self.steps, self.frame_step = num_frames, steps, frame_step
        self.autocast = torch.autocast(self.device.type, dtype=torch.bfloat16) if bf16 else nullcontext()
        # HESP models share each frame's tower pass between the windows that hold it.
        self.shares_frames = hasattr(model, "frame_features") and hasattr(model, "classify_frame_features")
        self.recent: deque[tuple[Any, str, list[float] | None]] = deque()  # (features or pixels, state, box)
        # A person first seen at frame `start_index`: the windows that begin before it are absent.
        self.next_window = -(-start_index // steps)
        self.first_index = self.next_window * steps  # the stream index of recent[0]
        self.skip = self.first_index - start_index  # frames still to drop before recent[0]

    def absent_before(self) -> list[TimelineWindow]:
        """The windows before this person's first frame, marked `ABSENT`."""
        return [self._window(index, ABSENT) for index in range(self.next_window)]

    def add(self, pixels: list[Any], states: list[str], boxes: list[list[float] | None]) -> list[TimelineWindow]:
        """The next frames' model input (None: none), states and boxes; returns the windows now complete."""
        return self.add_encoded(self.encode(pixels), states, boxes)

    def add_encoded(
        self, entries: list[Any], states: list[str], boxes: list[list[float] | None]
    ) -> list[TimelineWindow]:
        """As `add`, with the frames already through `encode` (several people's crops in one tower pass)."""
        if self.skip:
            dropped = min(self.skip, len(entries))
            self.skip -= dropped
            entries, states, boxes = entries[dropped:], states[dropped:], boxes[dropped:]
        for entry, state, box in zip(entries, states, boxes, strict=True):
            self.recent.append((entry, state, box))
        ready = []
        while self.next_window * self.steps + self.num_frames <= self.first_index + len(self.recent):
            ready.append(self.next_window)
            self.next_window += 1
        windows = self._decide(ready)
        keep_from = self.next_window * self.steps  # frames before the next window's first are done with
        while self.recent and self.first_index < keep_from:
            self.recent.popleft()
            self.first_index += 1
        return windows

    @torch.inference_mode()
    def encode(self, pixels: list[torch.Tensor | None]) -> list[Any]:
        """Frame features (HESP models: one tower pass for all given frames) or the pixels (other models)."""
        if not self.shares_frames:
            return list(pixels)
        readable = [i for i, p in enumerate(pixels) if p is not None]
        entries: list[Any] = [None] * len(pixels)
        if readable:
            frames = torch.stack([pixels[i] for i in readable]).to(self.device)  # type: ignore[misc]
            with self.autocast:
                prompted, frozen = self.model.frame_features(frames)
            for position, i in enumerate(readable):
                entries[i] = (prompted[position].float(), None if frozen is None else frozen[position].float())
        return entries

    def _window(self, index: int, status: str = "ok") -> TimelineWindow:
        start = index * self.steps * self.frame_step
        return TimelineWindow(
            start=start, end=start + self.num_frames * self.frame_step, status=status, person=self.person
        )

    def _decide(self, window_indices: list[int]) -> list[TimelineWindow]:
        results: list[TimelineWindow] = []
        to_score: list[tuple[TimelineWindow, list[Any]]] = []
        for index in window_indices:
            first = index * self.steps - self.first_index
            members = [self.recent[first + k] for k in range(self.num_frames)]
            window = self._window(index)
            shown = [k for k, (_, state, _) in enumerate(members) if state not in _NOT_SHOWN]
            middle = members[min(shown, key=lambda k: abs(k - self.num_frames // 2))] if shown else None
            window.face_box = None if middle is None else middle[2]
            if any(entry is None for k, (entry, _, _) in enumerate(members) if k in shown):
                window.status = UNREADABLE
            elif all(state in (HELD_FACELESS, OFF_SCREEN_FACELESS) for _, state, _ in members):
                window.status = NO_FACE
            elif 2 * len(shown) < self.num_frames or not any(state == ON_SCREEN for _, state, _ in members):
                window.status = ABSENT
            else:  # frames where the person is off screen: the nearest frame that shows them
                nearest = [min(shown, key=lambda j: (abs(j - k), j)) for k in range(self.num_frames)]
                to_score.append((window, [members[j][0] for j in nearest]))
            results.append(window)
        if to_score:
            self._score(to_score)
        return results

    def decide_short(self, duration: float) -> TimelineWindow:
        """A recording shorter than one window: one window over all of it, its frames spread over the ones held."""
        if not self.recent:
            return TimelineWindow(start=0.0, end=duration, status=ABSENT, person=self.person)
        picks = np.linspace(0, len(self.recent) - 1, self.num_frames).round().astype(int)
        held = list(self.recent)
        self.recent = deque(held[i] for i in picks)
        self.first_index = 0
        window = self._decide([0])[0]
        window.start, window.end = 0.0, duration
        return window

    @torch.inference_mode()
    def _score(self, items: list[tuple[TimelineWindow, list[Any]]]) -> None:
        with self.autocast:
            if self.shares_frames:
                prompted = torch.stack([torch.stack([e[0] for e in entries]) for _, entries in items]).to(self.device)
                frozen = None
                if items[0][1][0][1] is not None:
                    frozen = torch.stack([torch.stack([e[1] for e in entries]) for _, entries in items])
                    frozen = frozen.to(self.device)
                output = self.model.classify_frame_features(prompted, frozen)
            else:
                pixels = torch.stack([torch.stack(entries) for _, entries in items]).to(self.device)
                output = self.model(pixel_values_videos=pixels)
        fill_decisions([window for window, _ in items], output, self.model.config)


def fill_decisions(windows: Sequence[TimelineWindow], output: Any, config: Any) -> None:
    """Each window's label, known-ness and probabilities from the model's output for them (rows in order)."""
    for window, decision in zip(windows, decisions(output, config), strict=True):
        window.status = "ok"
        window.label, window.known = decision["label"], decision["known"]
        window.score, window.threshold = decision["score"], decision["threshold"]
        window.known_p_value = decision["known_p_value"]
        window.probabilities = {name: round(p, 6) for name, p in decision["probabilities"].items()}


def _whole_clip_window(
    scorer: WindowScorer, processor: HESPVideoProcessor, video: str | Path, duration: float
) -> TimelineWindow:
    """A recording shorter than one window: its `num_frames` frames sampled over all of it, decided as a clip."""
    clip = sample_clip(video, scorer.num_frames, shortest_edge=processor.decode_edge(face_crop=False))  # as the stream
    window = TimelineWindow(start=0.0, end=duration)
    pixels = ClipTransform(processor, training=False).process(clip.frames)[None]
    with torch.inference_mode(), scorer.autocast:
        output = scorer.model(pixel_values_videos=pixels.to(scorer.device))
    fill_decisions([window], output, scorer.model.config)
    return window
