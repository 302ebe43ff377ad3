"""The timeline of each person in a recording (`timeline(..., faces="all")`), or of one person followed through all
of it (`faces="largest"`, what `face_crop=True` means for a timeline).

Faces are detected once per sampled frame and linked into people (`face_tracks.FaceTracker`) in the reading thread,
which also crops each person's face and turns it into model input. The model side runs one `WindowScorer` per
person over the same window grid: the vision tower takes every person's crops of a batch of frames in one pass, and
each window pools its person's frame features. A window whose person is off screen for more than half of it is
`absent`; the windows before a person first appears are too (or `no_face` / `unreadable` where that is what the
frames were). Memory holds one batch of frames, the tracker's few seconds of delay and each person's last window of
features, whatever the recording's length.
"""

import logging
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..data.dataset import ClipTransform
from ..data.frame_stream import FrameStream, StreamedFrame
from ..modeling.face_cropping_hesp import crop_frames
from ..modeling.video_processing_hesp import FACE_CROP_SHORTEST_EDGE, HESPVideoProcessor
from .background import decoded_in_background
from .face_appearance import DEFAULT_APPEARANCE
from .face_tracks import FaceTracker, PeopleFrame, Person, TrackerSettings
from .timeline import (
    ABSENT,
    FACES,
    HELD,
    HELD_FACELESS,
    NO_FACE,
    OFF_SCREEN,
    OFF_SCREEN_FACELESS,
    ON_SCREEN,
    UNREADABLE,
    PersonSummary,
    Timeline,
    TimelineSegment,
    TimelineWindow,
    WindowScorer,
    frames_per_window_step,
    log_gaps,
    merge_segments,
)


logger = logging.getLogger(__name__)

# The least shorter side frames are converted at while faces are followed: the detector looks at 640 pixels on the
# longer side, so a 16:9 (360) or 4:3 (480) frame shows it all it would see of the full-size frame.
PEOPLE_MIN_EDGE = 480


@dataclass
class _PersonFrames:
    # Each frame's face crop, uint8 `(S, S, 3)` (None: off screen or unreadable), made model input only in the
    # model's thread: the batches in flight between the threads hold bytes, not 4x as many float32s.
    pixels: list[Any]
    states: list[str]
    boxes: list[list[float] | None]


@dataclass
class _PeopleBatch:
    """Consecutive resolved frames: from stream index `first_index`, their times, each frame's state for nobody in
    particular (unreadable / face somewhere / no face), and per person on screen in any of them their frames."""

    first_index: int
    times: list[float]
    base_states: list[str]
    people: dict[str, _PersonFrames] = field(default_factory=dict)

    def off(self) -> _PersonFrames:
        """The frames of a person off screen throughout (unreadable frames stay unreadable)."""
        count = len(self.times)
        return _PersonFrames([None] * count, list(self.base_states), [None] * count)


def people_timeline(
    model: Any,
    processor: HESPVideoProcessor,
    video: str | Path,
    window: float = 2.0,
    stride: float = 0.5,
    *,
    faces: str = "all",
    min_track_s: float = 1.0,
    max_faces: int = 8,
    appearance: str = DEFAULT_APPEARANCE,
    batch_size: int = 32,
    bf16: bool = False,
    progress: Callable[[float], None] | None = None,
) -> Timeline:
    """The timeline of every person in `video` (`faces="all"`) or of the one chosen once (`faces="largest"`):
    windows and segments with a `person`, and `Timeline.people`. See `hesp_hf.inference.timeline.timeline`."""
    num_frames = int(processor.num_frames)
    rate, steps = frames_per_window_step(window, stride, num_frames)
    tracker = face_tracker(processor, rate, faces, min_track_s, max_faces, appearance)
    stream = FrameStream(video, rate, shortest_edge=people_decode_edge(processor), shrink_only=True)
    scorer = PeopleScorer(model, processor, num_frames, steps, rate, bf16)
    batches = _people_batches(tracker.frames(iter(stream)), processor.face_crop_size, batch_size)
    for batch in decoded_in_background(batches):
        scorer.add(batch)
        if progress is not None and batch.times:
            progress(batch.times[-1])
    scorer.finish(stream.duration)
    windows, segments, people = scorer.assemble(tracker.people, stream.duration)
    config = model.config
    result = Timeline(
        file=str(video),
        duration=stream.duration,
        window=window,
        stride=steps / rate,
        labels=list(config.known_labels),
        unknown_label=config.unknown_label,
        windows=windows,
        segments=segments,
        gaps=list(stream.gaps),
        decode_errors=stream.decode_errors,
        face_crop=True,
        faces=faces,
        people=people,
    )
    logger.info(
        "%s: %d %s followed; the appearance model ran %d times.",
        video,
        len(people),
        "person" if len(people) == 1 else "people",
        tracker.appearance_calls,
    )
    log_gaps(result)
    return result


def people_decode_edge(processor: HESPVideoProcessor) -> int:
    """The shorter side at which frames are converted while faces are followed (never enlarged: `FrameStream`'s
    `shrink_only`): what the face crops need, as `FACE_CROP_SHORTEST_EDGE` is for a 224-pixel crop (a face a third of
    the frame's height fills the crop without being enlarged), and at least what the detector looks at. Memory then
    follows the model's input, not the footage: a 720p frame held for a demo-size model (64-pixel crops) is 1.2 MB
    at 480, not 2.8 MB; a ViT-B/32 (224) keeps 720."""
    return max(PEOPLE_MIN_EDGE, math.ceil(processor.face_crop_size * FACE_CROP_SHORTEST_EDGE / 224))


def face_tracker(
    processor: HESPVideoProcessor,
    rate: float,
    faces: str,
    min_track_s: float = 1.0,
    max_faces: int = 8,
    appearance: str = DEFAULT_APPEARANCE,
) -> FaceTracker:
    """The tracker of `faces` ("all" or "largest") for frames sampled at `rate`, with the processor's face settings."""
    if faces not in FACES:
        raise ValueError(f"faces must be one of {', '.join(FACES)}, got {faces!r}.")
    settings = TrackerSettings(
        rate=rate,
        min_track_s=min_track_s,
        max_faces=max_faces,
        appearance=appearance,
        margin=float(processor.face_margin),
        min_score=float(processor.face_min_score),
    )
    return FaceTracker(settings, follow=faces)


class PeopleScorer:
    """Each person's windows from resolved batches of frames, on one window grid: one `WindowScorer` per person (the
    vision tower takes every person's crops of a batch in one pass) and one for nobody in particular, whose
    unreadable and face-less windows say what a person's windows before their first frame were. `add` returns the
    windows each batch settles, so a live stream shows them as they come; `assemble` gives the whole timeline."""

    def __init__(
        self, model: Any, processor: HESPVideoProcessor, num_frames: int, steps: int, rate: float, bf16: bool = False
    ):
        self.model, self.num_frames, self.steps, self.rate, self.bf16 = model, num_frames, steps, rate, bf16
        self.transform = ClipTransform(processor, training=False)
        self.base = WindowScorer(model, num_frames, steps, 1 / rate, bf16)  # nobody's windows: unreadable / no face
        self.base_windows: list[TimelineWindow] = []
        self.scorers: dict[str, WindowScorer] = {}
        self.windows: dict[str, list[TimelineWindow]] = {}
        self.seen = 0
        # A person's windows before their first frame, by grid index, until nobody's window of that index is decided.
        self._unsettled: list[tuple[int, TimelineWindow]] = []

    def add(self, batch: _PeopleBatch) -> list[TimelineWindow]:
        """Score one batch; returns the windows it settled (every person's)."""
        count = len(batch.times)
        self.base_windows += self.base.add([None] * count, batch.base_states, [None] * count)
        start: dict[str, int] = {}  # a new person's first frame in this batch
        for person, own in batch.people.items():
            if person not in self.scorers:
                first = own.states.index(ON_SCREEN)
                while own.pixels[first] is None:  # the first frame that shows them
                    first += 1
                self.scorers[person] = WindowScorer(
                    self.model,
                    self.num_frames,
                    self.steps,
                    1 / self.rate,
                    self.bf16,
                    person=person,
                    start_index=batch.first_index + first,
                )
                start[person] = first
                self.windows[person] = self.scorers[person].absent_before()
                self._unsettled += list(enumerate(self.windows[person]))
        frames = {person: batch.people.get(person) or batch.off() for person in self.scorers}
        # One tower pass for every person's crops of these frames.
        order = [(person, k) for person in self.scorers for k, p in enumerate(frames[person].pixels) if p is not None]
        encoded = []
        if order:
            crops = np.stack([frames[person].pixels[k] for person, k in order])
            encoded = self.base.encode(list(self.transform.process(crops)))  # the data path's frames -> input
        entries: dict[str, list[Any]] = {person: [None] * count for person in self.scorers}
        for (person, k), entry in zip(order, encoded, strict=True):
            entries[person][k] = entry
        decided: list[TimelineWindow] = []
        for person, scorer in self.scorers.items():
            own, first = frames[person], start.get(person, 0)
            new = scorer.add_encoded(entries[person][first:], own.states[first:], own.boxes[first:])
            self.windows[person] += new
            decided += new
        self.seen += count
        return self._settle() + decided

    def finish(self, duration: float) -> list[TimelineWindow]:
        """At the end of the recording: the windows still unsettled (a recording shorter than one window: one
        window per person over all of it)."""
        if self.seen < self.num_frames:
            self.base_windows = [self.base.decide_short(duration)]
            self.windows = {person: [scorer.decide_short(duration)] for person, scorer in self.scorers.items()}
            self._unsettled = []
            return [window for own in self.windows.values() for window in own]
        rest = [window for _, window in self._unsettled]  # beyond nobody's last window: absent
        self._unsettled = []
        return rest

    def assemble(
        self, people: list[Person], duration: float
    ) -> tuple[list[TimelineWindow], list[TimelineSegment], list[PersonSummary]]:
        """The timeline's windows and segments (person by person, in `people`'s order) and the people's summaries;
        with nobody followed, the recording's face-less and unreadable stretches."""
        followed = [p for p in people if p.id in self.scorers]
        stride = self.steps / self.rate
        windows: list[TimelineWindow] = []
        segments: list[TimelineSegment] = []
        for person in followed:
            windows += self.windows[person.id]
            segments += person_segments(self.windows[person.id], person.id, stride, duration)
        if not followed:
            for nobody in self.base_windows:
                nobody.status = NO_FACE if nobody.status == ABSENT else nobody.status
            windows, segments = self.base_windows, merge_segments(self.base_windows, stride, duration)
        summaries = [PersonSummary(p.id, p.first_seen, p.frames_on_screen / self.rate, p.thumbnail) for p in followed]
        return windows, segments, summaries

    def _settle(self) -> list[TimelineWindow]:
        """Before a person: what the frames were (no face, unreadable), else absent."""
        known = len(self.base_windows)
        settled = [(index, window) for index, window in self._unsettled if index < known]
        self._unsettled = [(index, window) for index, window in self._unsettled if index >= known]
        for index, window in settled:
            nobody = self.base_windows[index].status
            window.status = nobody if nobody in (NO_FACE, UNREADABLE) else ABSENT
        return [window for _, window in settled]


class PeopleDecider:
    """Frames in as a stream gives them, every person's windows out as they are settled: the people's pipeline for
    frames that arrive a few at a time (`hesp_hf.inference.timeline.WindowDecider` with faces, a live stream). The
    tracker holds a few frames back until their people are known (`faces="largest"` also waits for its choice), so
    windows come that much later than without faces; `finish` gives those still held at the end."""

    def __init__(
        self,
        model: Any,
        processor: HESPVideoProcessor,
        rate: float,
        steps: int,
        faces: str,
        *,
        min_track_s: float = 1.0,
        max_faces: int = 8,
        bf16: bool = False,
    ):
        self.processor, self.rate = processor, rate
        self.tracker = face_tracker(processor, rate, faces, min_track_s, max_faces)
        self.scorer = PeopleScorer(model, processor, int(processor.num_frames), steps, rate, bf16)

    def add(self, frames: list[StreamedFrame]) -> list[TimelineWindow]:
        return self._score([resolved for frame in frames for resolved in self.tracker.push(frame)])

    def finish(self, duration: float) -> list[TimelineWindow]:
        return self._score(self.tracker.flush()) + self.scorer.finish(duration)

    def assemble(self, duration: float) -> tuple[list[TimelineWindow], list[TimelineSegment], list[PersonSummary]]:
        return self.scorer.assemble(self.tracker.people, duration)

    def _score(self, resolved: list[PeopleFrame]) -> list[TimelineWindow]:
        if not resolved:
            return []
        return self.scorer.add(_batch([_cropped(frame, self.processor.face_crop_size) for frame in resolved]))


def person_segments(
    windows: list[TimelineWindow], person: str | None, stride: float, duration: float
) -> list[TimelineSegment]:
    """`merge_segments` of one person's windows, each segment naming the person."""
    segments = merge_segments(windows, stride, duration)
    for segment in segments:
        segment.person = person
    return segments


def _people_batches(frames: Iterator[PeopleFrame], crop_size: int, batch_size: int) -> Iterator[_PeopleBatch]:
    """Resolved frames in batches of at most `batch_size` face crops (one tower pass; at least one frame), each
    person's face cropped in the reading thread. Each frame is cropped as soon as it is resolved and its image let
    go: what a batch holds is crops."""
    pending: list[tuple[PeopleFrame, dict[str, np.ndarray]]] = []
    crops = 0
    for frame in frames:
        resolved = _cropped(frame, crop_size)
        if pending and crops + len(resolved[1]) > batch_size:
            yield _batch(pending)
            pending, crops = [], 0
        pending.append(resolved)
        crops += len(resolved[1])
        if len(pending) == batch_size:
            yield _batch(pending)
            pending, crops = [], 0
    if pending:
        yield _batch(pending)


def _cropped(frame: PeopleFrame, crop_size: int) -> tuple[PeopleFrame, dict[str, np.ndarray]]:
    """The frame without its image, and each person's face cropped from it."""
    crops = {person: crop_frames([frame.image], box[None], crop_size)[0] for person, (box, _) in frame.people.items()}
    return PeopleFrame(
        frame.index, frame.time, None, frame.people, frame.any_face, frame.unreadable, frame.scale
    ), crops


def _batch(frames: list[tuple[PeopleFrame, dict[str, np.ndarray]]]) -> _PeopleBatch:
    base_states = [
        ON_SCREEN if frame.unreadable else OFF_SCREEN if frame.any_face else OFF_SCREEN_FACELESS for frame, _ in frames
    ]
    batch = _PeopleBatch(frames[0][0].index, [frame.time for frame, _ in frames], base_states)
    shown = sorted({person for _, crops in frames for person in crops}, key=_person_number)
    for person in shown:
        own = batch.off()
        for k, (frame, crops) in enumerate(frames):
            if person not in crops:
                continue
            box, detected = frame.people[person]
            own.pixels[k] = crops[person]
            own.states[k] = ON_SCREEN if detected else HELD if frame.any_face else HELD_FACELESS
            own.boxes[k] = [round(float(v) * frame.scale, 1) for v in box]  # in the video's own pixels
        batch.people[person] = own
    return batch


def _person_number(person: str) -> int:
    return int(person.rsplit("-", 1)[-1])
