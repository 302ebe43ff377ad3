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
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..data.dataset import ClipTransform
from ..data.frame_stream import FrameStream
from ..modeling.face_cropping_hesp import crop_frames
from ..modeling.video_processing_hesp import HESPVideoProcessor
from .background import decoded_in_background
from .face_appearance import DEFAULT_APPEARANCE
from .face_tracks import FaceTracker, PeopleFrame, TrackerSettings
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
    TimelineWindow,
    WindowScorer,
    frames_per_window_step,
    log_gaps,
    merge_segments,
)


logger = logging.getLogger(__name__)


@dataclass
class _PersonFrames:
    pixels: list[Any]  # model input per frame (None: off screen or unreadable)
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
    if faces not in FACES:
        raise ValueError(f"faces must be one of {', '.join(FACES)}, got {faces!r}.")
    num_frames = int(processor.num_frames)
    rate, steps = frames_per_window_step(window, stride, num_frames)
    settings = TrackerSettings(
        rate=rate,
        min_track_s=min_track_s,
        max_faces=max_faces,
        appearance=appearance,
        margin=float(processor.face_margin),
        min_score=float(processor.face_min_score),
    )
    tracker = FaceTracker(settings, follow=faces)
    stream = FrameStream(video, rate, shortest_edge=None)  # whole frames: face boxes in the frame's pixels
    crop_size = max(processor.crop_size.height or 0, processor.crop_size.width or 0) if processor.crop_size else 224
    base = WindowScorer(model, num_frames, steps, 1 / rate, bf16)  # nobody's windows: unreadable / no face
    base_windows: list[TimelineWindow] = []
    scorers: dict[str, WindowScorer] = {}
    windows: dict[str, list[TimelineWindow]] = {}
    leading: dict[str, int] = {}  # windows before a person's first frame
    start: dict[str, int] = {}  # a new person's first frame in this batch
    seen = 0
    batches = _people_batches(tracker.frames(iter(stream)), processor, crop_size, batch_size)
    for batch in decoded_in_background(batches):
        base_windows += base.add([None] * len(batch.times), batch.base_states, [None] * len(batch.times))
        for person in batch.people:
            if person not in scorers:
                first = batch.people[person].states.index(ON_SCREEN)
                while batch.people[person].pixels[first] is None:  # the first frame that shows them
                    first += 1
                scorers[person] = WindowScorer(
                    model, num_frames, steps, 1 / rate, bf16, person=person, start_index=batch.first_index + first
                )
                start[person] = first
                windows[person] = scorers[person].absent_before()
                leading[person] = len(windows[person])
        frames = {person: batch.people.get(person) or batch.off() for person in scorers}
        # One tower pass for every person's crops of these frames.
        order = [(person, k) for person in scorers for k, p in enumerate(frames[person].pixels) if p is not None]
        encoded = base.encode([frames[person].pixels[k] for person, k in order]) if order else []
        entries: dict[str, list[Any]] = {person: [None] * len(batch.times) for person in scorers}
        for (person, k), entry in zip(order, encoded, strict=True):
            entries[person][k] = entry
        for person, scorer in scorers.items():
            own, first = frames[person], start.pop(person, 0)
            windows[person] += scorer.add_encoded(entries[person][first:], own.states[first:], own.boxes[first:])
        seen += len(batch.times)
        if progress is not None and batch.times:
            progress(batch.times[-1])
    if seen < num_frames:  # shorter than one window: one window per person over all of it
        base_windows = [base.decide_short(stream.duration)]
        windows = {person: [scorer.decide_short(stream.duration)] for person, scorer in scorers.items()}
        leading = {person: 0 for person in scorers}
    for person, count in leading.items():  # before the person: what the frames were, else absent
        for own, nobody in zip(windows[person][:count], base_windows, strict=False):
            own.status = nobody.status if nobody.status in (NO_FACE, UNREADABLE) else ABSENT
    people = [p for p in tracker.people if p.id in scorers]
    stride_s = steps / rate
    all_windows: list[TimelineWindow] = []
    segments = []
    for person in people:
        all_windows += windows[person.id]
        for segment in merge_segments(windows[person.id], stride_s, stream.duration):
            segment.person = person.id
            segments.append(segment)
    if not people:  # nobody: the recording's face-less and unreadable stretches
        for nobody in base_windows:
            nobody.status = NO_FACE if nobody.status == ABSENT else nobody.status
        all_windows, segments = base_windows, merge_segments(base_windows, stride_s, stream.duration)
    config = model.config
    result = Timeline(
        file=str(video),
        duration=stream.duration,
        window=window,
        stride=stride_s,
        labels=list(config.known_labels),
        unknown_label=config.unknown_label,
        windows=all_windows,
        segments=segments,
        gaps=list(stream.gaps),
        decode_errors=stream.decode_errors,
        face_crop=True,
        faces=faces,
        people=[PersonSummary(p.id, p.first_seen, p.frames_on_screen / rate, p.thumbnail) for p in people],
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


def _people_batches(
    frames: Iterator[PeopleFrame], processor: HESPVideoProcessor, crop_size: int, batch_size: int
) -> Iterator[_PeopleBatch]:
    """Resolved frames in batches, each person's face cropped and turned into model input (the reading thread's
    work). Each frame is cropped as soon as it is resolved and its image let go: what a batch holds is crops."""
    pending: list[tuple[PeopleFrame, dict[str, np.ndarray]]] = []
    for frame in frames:
        crops = {
            person: crop_frames([frame.image], box[None], crop_size)[0] for person, (box, _) in frame.people.items()
        }
        pending.append(
            (PeopleFrame(frame.index, frame.time, None, frame.people, frame.any_face, frame.unreadable), crops)
        )
        if len(pending) == batch_size:
            yield _batch(pending, processor)
            pending = []
    if pending:
        yield _batch(pending, processor)


def _batch(frames: list[tuple[PeopleFrame, dict[str, np.ndarray]]], processor: HESPVideoProcessor) -> _PeopleBatch:
    base_states = [
        ON_SCREEN if frame.unreadable else OFF_SCREEN if frame.any_face else OFF_SCREEN_FACELESS for frame, _ in frames
    ]
    batch = _PeopleBatch(frames[0][0].index, [frame.time for frame, _ in frames], base_states)
    shown = sorted({person for _, crops in frames for person in crops}, key=_person_number)
    transform = ClipTransform(processor, training=False)
    for person in shown:
        on = [k for k, (_, crops) in enumerate(frames) if person in crops]
        processed = transform.process(np.stack([frames[k][1][person] for k in on]))
        own = batch.off()
        for position, k in enumerate(on):
            box, detected = frames[k][0].people[person]
            own.pixels[k] = processed[position]
            own.states[k] = ON_SCREEN if detected else HELD if frames[k][0].any_face else HELD_FACELESS
            own.boxes[k] = [round(float(v), 1) for v in box]
        batch.people[person] = own
    return batch


def _person_number(person: str) -> int:
    return int(person.rsplit("-", 1)[-1])
