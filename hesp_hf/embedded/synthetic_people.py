"""A recording with two synthetic people whose truth is known, for following people through a timeline: each shows
its own sequence of expressions (2 s clips of `synthetic`'s classes), side by side; they swap places, change size, and
one leaves and comes back elsewhere.

    recording = two_people_recording("two.mp4")
    recording.truth["A"]            # [(start, end, label or "absent"), ...]
    recording.box("B", 17.0)        # None: off screen

`people=("A",)` writes the same recording with one of them only: the one-person timeline of the same footage that
the two-person one is compared with.
"""

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .synthetic import CLIP_FPS, FaceIdentity, action_track, render_frame
from .video_writer import write_video


ABSENT = "absent"
CLIP_SECONDS = 2.0

# Two people whose looks differ (face shape, skin, the tile's backdrop), and what each shows every 2 s.
IDENTITY_SEEDS = {"A": 11, "B": 23}
DEFAULT_LABELS = {
    "A": ["happiness", "happiness", "anger", "anger", "surprise", "happiness", "happiness", "anger", "anger",
          "surprise", "happiness", "happiness"],
    "B": ["anger", "anger", "surprise", "surprise", "happiness", "happiness", "anger", "anger", "happiness",
          "happiness", "surprise", "anger"],
}  # fmt: skip


@dataclass
class PeopleRecording:
    """The written recording, its frame rate, the true spans of each person and their face box per frame (NaN rows:
    off screen)."""

    path: Path
    fps: float
    duration: float
    truth: dict[str, list[tuple[float, float, str]]]
    boxes: dict[str, np.ndarray] = field(repr=False)  # person -> (frames, 4)

    def box(self, person: str, time: float) -> np.ndarray | None:
        """The person's true face box on screen at `time` (None: off screen)."""
        index = min(int(time * self.fps), len(self.boxes[person]) - 1)
        row = self.boxes[person][index]
        return None if np.isnan(row).any() else row

    def who(self, point: Sequence[float], time: float) -> str | None:
        """The person whose face box holds `point` (x, y) at `time`."""
        for person in self.boxes:
            box = self.box(person, time)
            if box is not None and box[0] <= point[0] <= box[2] and box[1] <= point[1] <= box[3]:
                return person
        return None


def _layout(time: float, height: int, width: int) -> dict[str, tuple[float, float, float] | None]:
    """Each person's face centre and side (pixels) at `time`, None off screen: side by side (A left), swapping
    places from 8 to 10 s (A over the top, B along the bottom), then A growing and B shrinking; B gone 16-20 s and
    back on the left."""
    side = 0.36 * height
    left, right, middle = 0.27 * width, 0.73 * width, 0.5 * height
    if time < 8.0:
        return {"A": (left, middle, side), "B": (right, middle, side)}
    if time < 10.0:
        share = (time - 8.0) / 2.0
        lift = 0.25 * height * (1 - abs(2 * share - 1))  # out of each other's way (no overlap), then back level
        x_a, x_b = left + (right - left) * share, right - (right - left) * share
        return {"A": (x_a, middle - lift, side), "B": (x_b, middle + lift, side)}
    grow = min(1.0, (time - 10.0) / 6.0)
    b = None if 16.0 <= time < 20.0 else (left, middle, side * (1 - 0.15 * grow) if time < 16.0 else side)
    return {"A": (right, middle, side * (1 + 0.3 * grow)), "B": b}


def _person_frames(identity_seed: int, labels: Sequence[str], fps: int) -> tuple[FaceIdentity, np.ndarray]:
    """The person's identity and action values per frame of the whole recording (their clips end to end)."""
    identity = FaceIdentity.sample(np.random.default_rng(identity_seed))
    per_clip = int(round(CLIP_SECONDS * fps))
    actions = [
        action_track(label, per_clip, np.random.default_rng(identity_seed * 1000 + number))
        for number, label in enumerate(labels)
    ]
    return identity, np.concatenate(actions)


def two_people_recording(
    path: str | Path,
    height: int = 360,
    labels: dict[str, Sequence[str]] | None = None,
    fps: int = CLIP_FPS,
    background_seed: int = 5,
    people: Sequence[str] = ("A", "B"),
    tiles: dict | None = None,
    options: dict[str, str] | None = None,
) -> PeopleRecording:
    """Write the two-person recording (16:9, `height` pixels high, 24 s) to `path`, near-losslessly; `people`: who
    is in it (the others' places stay empty). `tiles`: a dict that keeps the rendered faces for the next call (the
    one-person recordings of the same footage). `options`: the H.264 encoder's (default near-lossless, qp 0)."""
    tiles = {} if tiles is None else tiles
    labels = labels or DEFAULT_LABELS
    width = int(round(height * 16 / 9))
    count = int(round(len(labels["A"]) * CLIP_SECONDS * fps))
    per_clip = int(round(CLIP_SECONDS * fps))
    backdrop = _backdrop(height, width, background_seed)
    people = {name: _person_frames(IDENTITY_SEEDS[name], labels[name], fps) for name in people}
    boxes = {name: np.full((count, 4), np.nan) for name in people}
    frames = []
    for t in range(count):
        time = t / fps
        frame = backdrop.copy()
        for name, place in _layout(time, height, width).items():
            if place is None or name not in people:
                continue
            x, y, side = place
            size = int(round(side))
            identity, actions = people[name]
            key = (name, t, size, IDENTITY_SEEDS[name], tuple(labels[name]))
            if key not in tiles:
                tiles[key] = render_frame(identity, actions[t], (t % per_clip) / max(per_clip - 1, 1), size)
            tile = tiles[key]
            x0, y0 = int(round(x - size / 2)), int(round(y - size / 2))
            frame[y0 : y0 + size, x0 : x0 + size] = tile
            boxes[name][t] = (x0, y0, x0 + size, y0 + size)
        frames.append(frame)
    write_video(path, np.stack(frames), fps=fps, options=options or {"qp": "0"})
    truth = {name: _truth(labels[name], boxes[name], fps) for name in people}
    return PeopleRecording(Path(path), float(fps), count / fps, truth, boxes)


def _truth(labels: Sequence[str], boxes: np.ndarray, fps: int) -> list[tuple[float, float, str]]:
    """The person's label where on screen, `ABSENT` where not, merged into spans."""
    per_clip = int(round(CLIP_SECONDS * fps))
    spans: list[tuple[float, float, str]] = []
    for t in range(len(boxes)):
        label = ABSENT if np.isnan(boxes[t]).any() else labels[t // per_clip]
        start, end = t / fps, (t + 1) / fps
        if spans and spans[-1][2] == label:
            spans[-1] = (spans[-1][0], end, label)
        else:
            spans.append((start, end, label))
    return spans


def _backdrop(height: int, width: int, seed: int) -> np.ndarray:
    """A room: a vertical gradient and a few pieces of furniture (no faces)."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    top, bottom = rng.uniform(60, 200, 3), rng.uniform(60, 200, 3)
    ramp = np.linspace(0.0, 1.0, height)[:, None, None]
    image = Image.fromarray(np.broadcast_to(top * (1 - ramp) + bottom * ramp, (height, width, 3)).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(8):
        x0, y0 = rng.uniform(0, width), rng.uniform(0, height)
        w, h = rng.uniform(0.05, 0.25) * width, rng.uniform(0.05, 0.25) * height
        draw.rectangle([x0, y0, x0 + w, y0 + h], fill=tuple(int(c) for c in rng.integers(0, 256, 3)))
    return np.asarray(image)
