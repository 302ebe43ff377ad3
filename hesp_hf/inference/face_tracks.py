"""Every person in a recording, followed through it in one pass: faces detected once per sampled frame, linked into
tracks frame to frame by position and size, and tracks linked to people by appearance, so that a person who was
hidden, turned away or left and came back keeps their id (`person-1`, `person-2`, ... in order of appearance).

    tracker = FaceTracker(TrackerSettings(rate=4.0), follow="all")
    for frame in stream:                       # StreamedFrame: index, time, image (None: unreadable)
        for resolved in tracker.push(frame):   # PeopleFrame, `delay` frames later
            ...resolved.people["person-1"]...  # (square crop box, detected in this frame)
    rest = tracker.flush()

Why a delay: a track becomes a person only after `min_track_s` of detections (shorter tracks are detector noise),
and with `follow="largest"` the person is chosen over the first `choose_s` seconds; frames are handed on once that is
known, a few seconds at most. Memory holds those frames, the live tracks' recent boxes and each person's few
appearance descriptors, whatever the recording's length.

Appearance: a colour descriptor of every matched face (cheap) checks that a track still shows the face it started
with; a track whose face changes (two people swapping places) is split there. A new track is compared with the
people not on screen (the `appearance` descriptor, `face_appearance`) and re-linked to the most similar one above its
`same_person` level; a person's gallery is refreshed once a second while followed.
"""

import logging
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from ..data.frame_stream import StreamedFrame
from ..modeling.face_cropping_hesp import (
    DEFAULT_MARGIN,
    DEFAULT_MIN_SCORE,
    FaceDetector,
    crop_frames,
    shared_detector,
    square_crop_boxes,
)
from .face_appearance import DEFAULT_APPEARANCE, ColourDescriptor, shared_descriptor


logger = logging.getLogger(__name__)

FOLLOW_MODES = ("largest", "all")
THUMBNAIL_SIZE = 96
GALLERY_SIZE = 8  # appearance descriptors kept per person: the first, then the latest
MAX_STEP = 0.75  # how far (in face sizes, per frame since last seen) a face may move and still be the same track


@dataclass
class TrackerSettings:
    """`rate`: sampled frames per second. `min_track_s`: a track shorter than this is dropped as noise.
    `max_faces`: faces followed per frame (the largest). `hold_s`: a person not detected for up to this long keeps
    their last box and counts as on screen (a blink of the detector). `choose_s`: with `follow="largest"`, the
    seconds over which the person is chosen. `appearance`: the re-link descriptor (`face_appearance`)."""

    rate: float
    min_track_s: float = 1.0
    max_faces: int = 8
    hold_s: float = 0.5
    choose_s: float = 3.0
    appearance: str = DEFAULT_APPEARANCE
    margin: float = DEFAULT_MARGIN
    min_score: float = DEFAULT_MIN_SCORE

    def __post_init__(self) -> None:
        if not self.min_track_s >= 0:
            raise ValueError(f"min_track_s must be >= 0 seconds, got {self.min_track_s}.")
        if self.max_faces < 1:
            raise ValueError(f"max_faces must be >= 1, got {self.max_faces}.")

    def frames(self, seconds: float) -> int:
        return max(1, int(np.ceil(seconds * self.rate - 1e-9)))


@dataclass
class Person:
    """One person: their id, when first seen, how many sampled frames showed them, the best face crop seen (for the
    user to tell who is who) and a few appearance descriptors."""

    id: str
    first_seen: float
    frames_on_screen: int = 0
    thumbnail: np.ndarray | None = None  # (THUMBNAIL_SIZE, THUMBNAIL_SIZE, 3) uint8
    gallery: list[np.ndarray] = field(default_factory=list)
    prominence: float = 0.0  # size x centrality over the choosing seconds (follow="largest")
    _thumbnail_quality: float = -1.0
    _last_box: np.ndarray | None = None  # the last resolved face box and frame
    _last_index: int = -(10**9)
    _velocity: np.ndarray | None = None  # box change per frame between the last two detections

    def expected_box(self, index: int) -> np.ndarray | None:
        """Where the person's face should be at frame `index` (moving on as it last moved) while undetected."""
        if self._last_box is None:
            return None
        if self._velocity is None:
            return self._last_box
        return self._last_box + self._velocity * (index - self._last_index)

    def similarity(self, descriptor: np.ndarray) -> float:
        return max((float(descriptor @ kept) for kept in self.gallery), default=-1.0)

    def remember(self, descriptor: np.ndarray) -> None:
        self.gallery.append(descriptor)
        if len(self.gallery) > GALLERY_SIZE:
            del self.gallery[1]  # keep the first look and the latest ones


@dataclass
class PeopleFrame:
    """One sampled frame, resolved: `people` maps each followed person on screen to their square crop box
    (`x0, y0, x1, y1`, frame pixels) and whether this frame had a detection of them (else their box is held);
    `any_face`: any face detected at all."""

    index: int
    time: float
    image: np.ndarray | None  # None: unreadable (or let go once cropped: see `unreadable`)
    people: dict[str, tuple[np.ndarray, bool]]
    any_face: bool
    unreadable: bool = False
    scale: float = 1.0  # the video's pixels per pixel of `image` (StreamedFrame.scale): boxes are in `image`'s


@dataclass
class _Track:
    number: int
    box: np.ndarray  # the last detected face box
    index: int  # the frame of that detection
    colour: np.ndarray  # running colour descriptor (the consistency check)
    first_time: float  # when it was first detected
    detections: int = 1
    person: Person | None = None
    looks: list[np.ndarray] = field(default_factory=list)  # appearance while not yet a person
    last_confirmed: int = 0
    ended: bool = False  # its person went on in another track


class FaceTracker:
    """Online multi-face tracking with a bounded delay; see the module's docstring."""

    def __init__(
        self,
        settings: TrackerSettings,
        follow: str = "all",
        detector: FaceDetector | None = None,
    ):
        if follow not in FOLLOW_MODES:
            raise ValueError(f"faces must be one of {', '.join(FOLLOW_MODES)}, got {follow!r}.")
        self.settings, self.follow = settings, follow
        self.detector = detector or shared_detector(settings.min_score)
        self.appearance = shared_descriptor(settings.appearance)
        self.colour = ColourDescriptor() if settings.appearance != "colour" else self.appearance
        self.people: list[Person] = []
        self.chosen: Person | None = None
        self.min_frames = settings.frames(settings.min_track_s) if settings.min_track_s > 0 else 1
        self.hold = settings.frames(settings.hold_s)
        self.confirm_every = settings.frames(1.0)
        # Frames wait until a person's first frames know whose they are, and with "largest" until the person is
        # chosen over `choose_s` from the first person's confirmation.
        self.choose = settings.frames(settings.choose_s) if follow == "largest" else 0
        self.delay = self.min_frames + self.hold + self.choose + 1
        self._tracks: list[_Track] = []
        self._next_track = 0
        self._buffer: deque[tuple[StreamedFrame, dict[int, np.ndarray], bool]] = deque()
        self._owner: dict[int, Person] = {}  # track number -> person, for the tracks with frames in the buffer
        self._first_person_index: int | None = None
        self._latest_index = -1  # the last frame pushed
        self._flushing = False
        self._warned_crowd = False
        self.appearance_calls = 0  # how often the appearance model ran (cost accounting)

    # ------------------------------------------------------------------------------------------ push / flush
    def push(self, frame: StreamedFrame) -> list[PeopleFrame]:
        """Take the next sampled frame; return the frames now resolved (in order)."""
        detected: dict[int, np.ndarray] = {}
        any_face = False
        self._latest_index = frame.index
        if frame.image is not None:
            faces = self.detector.faces(frame.image)
            any_face = len(faces) > 0
            detected = self._associate(frame, self._largest(distinct_faces(faces)))
        self._buffer.append((frame, detected, any_face))
        resolved = []
        while len(self._buffer) > self.delay:
            resolved.append(self._resolve(*self._buffer.popleft()))
        return resolved

    def flush(self) -> list[PeopleFrame]:
        """The frames still held, resolved: call at the end of the recording."""
        resolved = []
        self._flushing = True
        while self._buffer:
            resolved.append(self._resolve(*self._buffer.popleft()))
        return resolved

    def frames(self, stream: Iterator[StreamedFrame]) -> Iterator[PeopleFrame]:
        """Every frame of `stream`, resolved."""
        for frame in stream:
            yield from self.push(frame)
        yield from self.flush()

    # ------------------------------------------------------------------------------------------ association
    def _largest(self, faces: np.ndarray) -> np.ndarray:
        if len(faces) <= self.settings.max_faces:
            return faces
        if not self._warned_crowd:
            logger.warning(
                "%d faces in one frame: the %d largest are followed (max_faces).", len(faces), self.settings.max_faces
            )
            self._warned_crowd = True
        areas = (faces[:, 2] - faces[:, 0]) * (faces[:, 3] - faces[:, 1])
        return faces[np.sort(np.argsort(-areas)[: self.settings.max_faces])]

    def _associate(self, frame: StreamedFrame, faces: np.ndarray) -> dict[int, np.ndarray]:
        """Link this frame's faces to tracks; returns track number -> face box for this frame."""
        index, image = frame.index, frame.image
        assert image is not None
        self._tracks = [t for t in self._tracks if index - t.index <= self.hold + 1 and not t.ended]
        colours = [self.colour(image, face) for face in faces]
        pairs = []
        for t, track in enumerate(self._tracks):
            for f, face in enumerate(faces):
                distance = _normalised_distance(face[:4], track.box)
                if distance <= MAX_STEP * (index - track.index):
                    pairs.append((distance, t, f))
        used_tracks, used_faces = set(), set()
        result: dict[int, np.ndarray] = {}
        for _, t, f in sorted(pairs):
            track = self._tracks[t]
            if t in used_tracks or f in used_faces or track.ended:
                continue
            # The same place but another face (people who swapped places): the track ends here.
            if float(colours[f] @ track.colour) < self.colour.same_person:
                continue
            used_tracks.add(t)
            used_faces.add(f)
            track.box, track.index, track.detections = faces[f, :4], index, track.detections + 1
            mixed = 0.8 * track.colour + 0.2 * colours[f]
            track.colour = mixed / np.linalg.norm(mixed)
            result[track.number] = faces[f, :4]
            self._identify(track, image, faces[f], index, frame.time)
        for f, face in enumerate(faces):
            if f in used_faces:
                continue
            track = _Track(self._next_track, face[:4], index, colours[f], frame.time)
            self._next_track += 1
            self._tracks.append(track)
            result[track.number] = face[:4]
            self._identify(track, image, face, index, frame.time)
        for number in result:
            track = next(t for t in self._tracks if t.number == number)
            if track.person is not None:
                self._owner[number] = track.person
                self._note(track.person, image, faces_row(faces, result[number]), index)
        return result

    def _identify(self, track: _Track, image: np.ndarray, face: np.ndarray, index: int, time: float) -> None:
        """A track without a person: re-link by appearance, or a new person once long enough. A person's track:
        refresh its gallery once a second."""
        if track.person is not None:
            if index - track.last_confirmed >= self.confirm_every:
                track.person.remember(self._describe(image, face))
                track.last_confirmed = index
            return
        look = self._describe(image, face)
        track.looks.append(look)
        # People detected in this frame by another track are on screen; the others (hidden, gone, or whose track
        # just ended at a change of face) may be this one.
        on_screen = {t.person.id for t in self._tracks if t.person is not None and t is not track and t.index == index}
        candidates = [p for p in self.people if p.id not in on_screen]
        best = max(candidates, key=lambda p: p.similarity(look), default=None)
        if best is not None and best.similarity(look) >= self.appearance.same_person:
            logger.info("%s re-linked by appearance at %.2f s.", best.id, time)
            track.person = best
            for other in self._tracks:  # the person's earlier track, unseen since: it ends (one track a person)
                if other is not track and other.person is best:
                    other.ended = True
        elif track.detections >= self.min_frames:
            track.person = Person(id=f"person-{len(self.people) + 1}", first_seen=track.first_time)
            self.people.append(track.person)
            if self._first_person_index is None:
                self._first_person_index = index
        if track.person is not None:
            for kept in track.looks[-GALLERY_SIZE:]:
                track.person.remember(kept)
            track.looks, track.last_confirmed = [], index

    def _describe(self, image: np.ndarray, face: np.ndarray) -> np.ndarray:
        self.appearance_calls += 1
        return self.appearance(image, face)

    def _note(self, person: Person, image: np.ndarray, face: np.ndarray, index: int) -> None:
        """Keep the clearest crop as the thumbnail; add to the person's prominence while choosing."""
        box = face[:4]
        area = float((box[2] - box[0]) * (box[3] - box[1]))
        quality = area * float(face[4])
        if quality > person._thumbnail_quality:
            square = square_crop_boxes(box[None], image.shape[:2], self.settings.margin)
            person.thumbnail = crop_frames(image[None], square, THUMBNAIL_SIZE)[0]
            person._thumbnail_quality = quality
        first = self._first_person_index
        if (
            self.follow == "largest"
            and first is not None
            and index - first < self.settings.frames(self.settings.choose_s)
        ):
            height, width = image.shape[:2]
            centre = ((box[0] + box[2]) / 2 / width - 0.5, (box[1] + box[3]) / 2 / height - 0.5)
            centrality = 1.0 - min(1.0, float(np.hypot(*centre)) / float(np.hypot(0.5, 0.5)))
            person.prominence += area * (0.5 + 0.5 * centrality)

    # ------------------------------------------------------------------------------------------ resolution
    def _resolve(self, frame: StreamedFrame, detected: dict[int, np.ndarray], any_face: bool) -> PeopleFrame:
        index = frame.index
        seen: dict[str, tuple[Person, np.ndarray]] = {}
        for number, box in detected.items():
            person = self._owner.get(number)
            if person is not None and person.id not in seen:
                seen[person.id] = (person, box)
        first = self._first_person_index
        if (
            self.follow == "largest"
            and self.chosen is None
            and first is not None
            and (self._flushing or self._latest_index - first >= self.choose)
        ):
            self.chosen = max(self.people, key=lambda p: p.prominence)
            logger.info("Following %s (the largest, most central face of the first seconds).", self.chosen.id)
        followed = self.people if self.follow == "all" else [p for p in [self.chosen] if p is not None]
        people: dict[str, tuple[np.ndarray, bool]] = {}
        if frame.image is not None:
            for person in followed:
                if person.id in seen:
                    box = self._smoothed(person, seen[person.id][1], index)
                    if person._last_box is not None and index - person._last_index <= self.hold + 1:
                        person._velocity = (box - person._last_box) / (index - person._last_index)
                    else:
                        person._velocity = None
                    person._last_box, person._last_index = box, index
                    people[person.id] = (self._square(box, frame.image), True)
                elif person._last_box is not None and index - person._last_index <= self.hold:
                    held = person.expected_box(index)
                    people[person.id] = (self._square(held, frame.image), False)
            for person in followed:
                if person.id in people:
                    person.frames_on_screen += 1
        live = {t.number for t in self._tracks} | {n for _, d, _ in self._buffer for n in d}
        self._owner = {number: person for number, person in self._owner.items() if number in live}
        return PeopleFrame(
            index, frame.time, frame.image, people, any_face, unreadable=frame.image is None, scale=frame.scale
        )

    def _smoothed(self, person: Person, box: np.ndarray, index: int) -> np.ndarray:
        """The face box averaged with the person's boxes of the frames just before and after (less jitter)."""
        boxes = [box]
        if person._last_box is not None and person._last_index == index - 1:
            boxes.append(person._last_box)
        if self._buffer:
            following = self._buffer[0]
            if following[0].index == index + 1:
                boxes += [b for n, b in following[1].items() if self._owner.get(n) is person]
        return np.mean(boxes, axis=0)

    def _square(self, box: np.ndarray, image: np.ndarray) -> np.ndarray:
        return square_crop_boxes(np.asarray(box, dtype=float)[None], image.shape[:2], self.settings.margin)[0]


def distinct_faces(faces: np.ndarray, nested: float = 0.6) -> np.ndarray:
    """The detections less those mostly inside (`nested` of their area or more) a higher-scoring one or holding one:
    a detector's second, looser box around the same face (YuNet's NMS compares IoU, which a nested box keeps low).
    Left to right."""
    kept: list[np.ndarray] = []
    for face in faces[np.argsort(-faces[:, 4])]:
        if all(_overlap_of_smaller(face[:4], other[:4]) < nested for other in kept):
            kept.append(face)
    return np.stack(sorted(kept, key=lambda f: f[0])) if kept else faces[:0]


def _overlap_of_smaller(a: np.ndarray, b: np.ndarray) -> float:
    inside = np.clip(np.minimum(a[2:], b[2:]) - np.maximum(a[:2], b[:2]), 0, None).prod()
    smaller = min((a[2:] - a[:2]).clip(0).prod(), (b[2:] - b[:2]).clip(0).prod())
    return float(inside / max(smaller, 1e-9))


def faces_row(faces: np.ndarray, box: np.ndarray) -> np.ndarray:
    """The detector row whose box is `box`."""
    return faces[int(np.argmin(np.abs(faces[:, :4] - box).sum(axis=1)))]


def _normalised_distance(candidate: np.ndarray, box: np.ndarray) -> float:
    """How far `candidate` is from `box` in units of `box`'s size: centre offset plus relative size change."""
    size = max(box[2] - box[0], box[3] - box[1], 1.0)
    offset = np.hypot(*((candidate[:2] + candidate[2:]) / 2 - (box[:2] + box[2:]) / 2)) / size
    other = max(candidate[2] - candidate[0], candidate[3] - candidate[1], 1.0)
    return float(offset + abs(np.log(other / size)))
