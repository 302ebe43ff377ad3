"""Procedural facial-expression videos: the embedded default data set, since no real one can be downloaded.

A face (outline, eyes, brows, nose, mouth) whose expression unfolds over time (onset -> apex -> offset) is drawn from
facial actions, loosely after FACS action units. Each of 11 classes named like MAFW's is a recipe of actions, and
classes share actions as real ones do (fear and surprise both raise the brows). Identity (face shape, skin tone,
feature spacing), head pose and motion, lighting, background, blur and noise vary, and so do the intensity and
timing of the expression. Everything is deterministic by seed.
"""

import csv
import hashlib
import io
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter
from tqdm.auto import tqdm

from ..atomic_files import write_text_atomic
from ..data.manifest import MANIFEST_NAME
from .video_writer import write_video


logger = logging.getLogger(__name__)

ACTIONS = (
    "brow_raise",  # AU1+2: brows up
    "brow_lower",  # AU4: brows drawn together and down
    "eye_open",  # AU5 (+) eyes wide / AU7 (-) eyes narrowed
    "lip_corner",  # AU12 (+) corners pulled up / AU15 (-) corners pulled down
    "jaw_drop",  # AU26/27: mouth open
    "lip_press",  # AU24: lips pressed thin
    "nose_wrinkle",  # AU9
    "lip_corner_one_side",  # AU14 unilateral: one corner raised
)

# Each class is a recipe of facial actions (values in [-1, 1]); classes share actions as real expressions do.
RECIPES: dict[str, dict[str, float]] = {
    "anger": {"brow_lower": 1.0, "eye_open": 0.4, "lip_press": 1.0},
    "disgust": {"nose_wrinkle": 1.0, "lip_corner": -0.5, "brow_lower": 0.5, "eye_open": -0.4},
    "fear": {"brow_raise": 1.0, "brow_lower": 0.6, "eye_open": 1.0, "jaw_drop": 0.4},
    "happiness": {"lip_corner": 1.0, "eye_open": -0.5, "jaw_drop": 0.3},
    "neutral": {},
    "sadness": {"brow_raise": 0.5, "brow_lower": 0.5, "lip_corner": -1.0, "eye_open": -0.3},
    "surprise": {"brow_raise": 1.0, "eye_open": 1.0, "jaw_drop": 1.0},
    "contempt": {"lip_corner_one_side": 1.0, "eye_open": -0.3},
    "anxiety": {"brow_raise": 0.6, "brow_lower": 0.8, "lip_press": 0.6, "eye_open": 0.5},
    "helplessness": {"brow_raise": 0.8, "lip_corner": -0.5, "jaw_drop": 0.4, "eye_open": -0.5},
    "disappointment": {"lip_corner": -0.7, "lip_press": 0.7, "eye_open": -0.6, "brow_lower": 0.3},
}
CLASSES = tuple(RECIPES)  # MAFW's class order

# Caption phrases of visible actions (for the tiny CLIP's pretraining); never the emotion names.
PHRASES = {
    ("brow_raise", 1): "brows raised",
    ("brow_lower", 1): "brows drawn together",
    ("eye_open", 1): "eyes wide",
    ("eye_open", -1): "eyes narrowed",
    ("lip_corner", 1): "lip corners up",
    ("lip_corner", -1): "lip corners down",
    ("jaw_drop", 1): "mouth open",
    ("lip_press", 1): "lips pressed",
    ("nose_wrinkle", 1): "nose wrinkled",
    ("lip_corner_one_side", 1): "one lip corner raised",
}


@dataclass(frozen=True)
class FaceIdentity:
    """What stays fixed over a clip: the person, the camera and the scene."""

    face_width: float
    face_height: float
    eye_spacing: float
    skin: tuple[int, int, int]
    background: tuple[tuple[int, int, int], tuple[int, int, int]]
    light_side: float  # brightness gain across the image, -1 (left darker) .. 1
    pose_angle: float  # head roll in degrees at the start
    pose_drift: tuple[float, float, float]  # dx, dy (fraction of the image), roll (degrees) over the clip
    blur: float
    noise: float

    @classmethod
    def sample(cls, rng: np.random.Generator) -> "FaceIdentity":
        tone = rng.uniform(0.25, 1.0)
        skin = tuple(int(v) for v in np.array([235, 200, 170]) * tone + np.array([40, 25, 15]) * (1 - tone))
        return cls(
            face_width=rng.uniform(0.50, 0.64),
            face_height=rng.uniform(0.64, 0.78),
            eye_spacing=rng.uniform(0.17, 0.23),
            skin=skin,
            background=(tuple(rng.integers(20, 235, 3).tolist()), tuple(rng.integers(20, 235, 3).tolist())),
            light_side=rng.uniform(-0.35, 0.35),
            pose_angle=rng.uniform(-10, 10),
            pose_drift=(rng.uniform(-0.04, 0.04), rng.uniform(-0.03, 0.03), rng.uniform(-5, 5)),
            blur=rng.uniform(0.0, 0.8),
            noise=rng.uniform(0.0, 6.0),
        )


def expression_envelope(num_frames: int, rng: np.random.Generator) -> np.ndarray:
    """Onset -> apex -> offset over the clip, in [0, 1] per frame, with random timing."""
    t = np.linspace(0.0, 1.0, num_frames)
    onset = rng.uniform(0.0, 0.25)
    apex_start = onset + rng.uniform(0.1, 0.3)
    apex_end = min(apex_start + rng.uniform(0.2, 0.4), 0.95)
    offset_end = min(apex_end + rng.uniform(0.1, 0.3), 1.15)
    rise = np.clip((t - onset) / (apex_start - onset), 0, 1)
    fall = np.clip((offset_end - t) / (offset_end - apex_end), 0, 1)
    return np.minimum(rise, fall)


def action_track(label: str, num_frames: int, rng: np.random.Generator) -> np.ndarray:
    """Action values `(T, len(ACTIONS))` of one clip of class `label`: recipe x intensity x envelope, plus jitter."""
    if label not in RECIPES:
        raise ValueError(f"Unknown synthetic class '{label}': expected one of {list(CLASSES)}.")
    recipe = np.array([RECIPES[label].get(name, 0.0) for name in ACTIONS])
    intensity = rng.uniform(0.65, 1.0)
    jitter = rng.normal(0.0, 0.08, len(ACTIONS)) * (recipe != 0)
    envelope = expression_envelope(num_frames, rng)
    return np.clip(envelope[:, None] * (recipe * intensity + jitter)[None, :], -1.0, 1.0)


def caption(actions: np.ndarray, threshold: float = 0.3) -> str:
    """The visible actions of one frame as text, e.g. "brows raised, eyes wide, mouth open" ("relaxed face")."""
    parts = [phrase for (name, sign), phrase in PHRASES.items() if sign * actions[ACTIONS.index(name)] > threshold]
    return ", ".join(parts) if parts else "relaxed face"


def render_frame(identity: FaceIdentity, actions: np.ndarray, progress: float, size: int) -> np.ndarray:
    """One RGB frame `(size, size, 3)` uint8 of `identity` showing `actions`, at `progress` (0..1) through the clip."""
    scale = 2  # draw at twice the size and downsample: cheap anti-aliasing
    canvas = size * scale
    a = dict(zip(ACTIONS, actions.tolist(), strict=True))
    # Background: a vertical gradient between two colours.
    top, bottom = np.array(identity.background[0]), np.array(identity.background[1])
    ramp = np.linspace(0.0, 1.0, canvas)[:, None, None]
    background = (top * (1 - ramp) + bottom * ramp).repeat(canvas, axis=1).astype(np.uint8)
    image = Image.fromarray(background, "RGB")

    layer = Image.new("RGBA", (canvas, canvas), (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    cx, cy = canvas * 0.5, canvas * 0.53
    fw, fh = identity.face_width * canvas, identity.face_height * canvas
    dark = (40, 30, 30, 255)
    draw.ellipse([cx - fw / 2, cy - fh / 2, cx + fw / 2, cy + fh / 2], fill=(*identity.skin, 255))
    line = max(1, int(round(canvas / 40)))

    # Eyes: height opens with eye_open (+) and narrows with (-).
    eye_y = cy - 0.10 * fh
    eye_w = 0.10 * canvas
    eye_h = max(0.006, 0.032 * (1 + 0.9 * a["eye_open"])) * canvas
    for side in (-1, 1):
        ex = cx + side * identity.eye_spacing * canvas
        draw.ellipse([ex - eye_w / 2, eye_y - eye_h, ex + eye_w / 2, eye_y + eye_h], fill=(250, 250, 250, 255))
        pupil = min(eye_h, 0.022 * canvas)
        draw.ellipse([ex - pupil, eye_y - pupil, ex + pupil, eye_y + pupil], fill=dark)
        # Brows: raised as a whole, and drawn together (inner end down and in).
        brow_y = eye_y - 0.075 * canvas - 0.05 * canvas * max(a["brow_raise"], 0)
        inner = ex - side * 0.055 * canvas + side * 0.02 * canvas * max(a["brow_lower"], 0)
        outer = ex + side * 0.065 * canvas
        inner_y = brow_y + 0.035 * canvas * max(a["brow_lower"], 0) - 0.015 * canvas * max(a["brow_raise"], 0)
        draw.line([(inner, inner_y), (outer, brow_y)], fill=dark, width=line + 1)

    # Nose, with wrinkles across the bridge.
    nose_top, nose_bottom = eye_y + 0.03 * canvas, cy + 0.08 * fh
    draw.line(
        [(cx, nose_top), (cx - 0.02 * canvas, nose_bottom), (cx + 0.02 * canvas, nose_bottom)], fill=dark, width=line
    )
    if a["nose_wrinkle"] > 0.05:
        for k in range(3):
            y = nose_top + (0.01 + 0.012 * k) * canvas
            half = 0.025 * canvas * a["nose_wrinkle"]
            draw.line([(cx - half, y), (cx + half, y)], fill=dark, width=line)

    # Mouth: corners up/down (one side for contempt), opening with jaw_drop, thinning with lip_press.
    mouth_y = cy + 0.24 * fh
    half_w = 0.11 * canvas * (1 + 0.15 * a["lip_corner"] - 0.25 * max(a["lip_press"], 0))
    lift = 0.045 * canvas * a["lip_corner"]
    left_y = mouth_y - lift
    right_y = mouth_y - lift - 0.05 * canvas * max(a["lip_corner_one_side"], 0)
    opening = 0.09 * canvas * max(a["jaw_drop"], 0)
    lip = max(1, int(round(line * (1.6 - 1.0 * max(a["lip_press"], 0)))))
    upper = [(cx - half_w, left_y), (cx, mouth_y), (cx + half_w, right_y)]
    lower = [(cx + half_w, right_y), (cx, mouth_y + opening + 0.02 * canvas * a["lip_corner"]), (cx - half_w, left_y)]
    if opening > 0.008 * canvas:
        draw.polygon(upper + lower, fill=(90, 20, 30, 255))
    draw.line(upper, fill=(150, 50, 50, 255), width=lip)
    draw.line(lower, fill=(150, 50, 50, 255), width=lip)

    # Head pose: roll and drift over the clip.
    dx, dy, droll = identity.pose_drift
    angle = identity.pose_angle + droll * progress
    layer = layer.rotate(
        angle, resample=Image.BICUBIC, center=(cx, cy), translate=(dx * canvas * progress, dy * canvas * progress)
    )
    image.paste(layer, (0, 0), layer)
    image = image.resize((size, size), Image.LANCZOS)
    if identity.blur > 0.05:
        image = image.filter(ImageFilter.GaussianBlur(identity.blur))
    pixels = np.asarray(image, dtype=np.float32)
    gain = 1.0 + identity.light_side * np.linspace(-1.0, 1.0, size)[None, :, None]
    pixels = pixels * gain + np.random.default_rng(int(progress * 1e6) + size).normal(0, identity.noise, pixels.shape)
    return np.clip(pixels, 0, 255).astype(np.uint8)


def render_clip(label: str, seed: int, num_frames: int = 16, size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Frames `(T, size, size, 3)` and action values `(T, len(ACTIONS))` of one clip of class `label`."""
    rng = np.random.default_rng(seed)
    identity = FaceIdentity.sample(rng)
    actions = action_track(label, num_frames, rng)
    progress = np.linspace(0.0, 1.0, num_frames)
    frames = np.stack([render_frame(identity, actions[t], progress[t], size) for t in range(num_frames)])
    return frames, actions


def place_in_scene(
    faces: np.ndarray, seed: int, scene_height: int, scene_width: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Put a face clip `(T, s, s, 3)` into a larger cluttered scene `(T, H, W, 3)` (16:9 by default), off-centre and
    drifting over the clip, as a person in a webcam or phone video; returns the frames and the true face box of each
    frame `(T, 4)` (x0, y0, x1, y1)."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    count, side = faces.shape[:2]
    height = scene_height
    width = scene_width or int(round(height * 16 / 9))
    if side >= min(height, width):
        raise ValueError(f"A {side}px face does not fit a {width}x{height} scene.")
    top, bottom = rng.uniform(40, 200, 3), rng.uniform(40, 200, 3)
    ramp = np.linspace(0.0, 1.0, height)[:, None, None]
    backdrop = Image.fromarray(np.broadcast_to(top * (1 - ramp) + bottom * ramp, (height, width, 3)).astype(np.uint8))
    draw = ImageDraw.Draw(backdrop)
    for _ in range(12):  # clutter: furniture, frames, a lamp
        x0, y0 = rng.uniform(0, width), rng.uniform(0, height)
        w, h = rng.uniform(0.05, 0.35) * width, rng.uniform(0.05, 0.35) * height
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        shape = draw.rectangle if rng.random() < 0.6 else draw.ellipse
        shape([x0, y0, x0 + w, y0 + h], fill=colour)
    scene = np.asarray(backdrop, dtype=np.float32)
    # Off-centre start, a drift of up to a fifth of the free room over the clip.
    room_x, room_y = width - side, height - side
    start = np.array([rng.uniform(0.05, 0.95) * room_x, rng.uniform(0.1, 0.9) * room_y])
    end = np.clip(start + rng.uniform(-0.2, 0.2, 2) * np.array([room_x, room_y]), 0, [room_x, room_y])
    frames, boxes = [], []
    for t in range(count):
        x, y = (start + (end - start) * t / max(count - 1, 1)).round().astype(int)
        frame = scene + rng.normal(0, 3.0, scene.shape)
        frame[y : y + side, x : x + side] = faces[t]
        frames.append(np.clip(frame, 0, 255).astype(np.uint8))
        boxes.append((x, y, x + side, y + side))
    return np.stack(frames), np.asarray(boxes, dtype=float)


# Frame rate of the written clips: 16 frames make a 2 s clip.
CLIP_FPS = 8


@dataclass(frozen=True)
class SyntheticSpec:
    """What a generated data set is made of; its hash names the cache."""

    classes: tuple[str, ...] = CLASSES
    train_per_class: int = 40
    test_per_class: int = 15
    num_frames: int = 16
    size: int = 64
    seed: int = 0
    # Bumped when the same settings would give other bytes (2: one encoding thread, zeroed row padding; 3: libx264
    # without macroblock-tree rate control, the last source of run-to-run differences).
    format_version: int = 3
    # > 0: each face is placed, off-centre and drifting, in a cluttered scene this many pixels high (16:9), as in raw
    # footage; the true face boxes go to `<split>_faces.json`.
    scene_height: int = 0

    def settings(self) -> dict:
        """The spec as stored in `spec.json` (`scene_height` only when set, so older data sets keep their names)."""
        settings = asdict(self) | {"classes": list(self.classes)}
        if not self.scene_height:
            del settings["scene_height"]
        return settings

    def key(self) -> str:
        return hashlib.sha1(json.dumps(self.settings(), sort_keys=True).encode()).hexdigest()[:12]


def clip_seed(spec: SyntheticSpec, split: str, label_index: int, number: int) -> int:
    """A seed per clip, independent of the other clips, so any subset regenerates identically."""
    return int(hashlib.sha1(f"{spec.seed}/{split}/{label_index}/{number}".encode()).hexdigest()[:8], 16)


def write_synthetic_dataset(root: str | Path, spec: SyntheticSpec = SyntheticSpec()) -> Path:
    """Write H.264 clips and `train.csv` / `test.csv` (CSV layout, class names as labels) under `root/<hash>/`.

    A folder already complete for the same spec is reused. Returns that folder.
    """
    folder = Path(root) / f"synthetic-{spec.key()}"
    manifest = folder / MANIFEST_NAME
    if manifest.exists() and json.loads(manifest.read_text()) == spec.settings():
        return folder
    total = (spec.train_per_class + spec.test_per_class) * len(spec.classes)
    progress = tqdm(total=total, desc=f"Writing synthetic clips to {folder}", unit="clip", disable=None)
    for split, count in (("train", spec.train_per_class), ("test", spec.test_per_class)):
        rows, face_boxes = [], {}
        for label_index, label in enumerate(spec.classes):
            for number in range(count):
                relative = f"clips/{split}/{label}_{number:04d}.mp4"
                seed = clip_seed(spec, split, label_index, number)
                frames, _ = render_clip(label, seed, spec.num_frames, spec.size)
                if spec.scene_height:
                    frames, boxes = place_in_scene(frames, seed, spec.scene_height)
                    face_boxes[relative] = boxes.tolist()
                write_video(folder / relative, frames, fps=CLIP_FPS)
                rows.append((relative, label))
                progress.update()
        if spec.scene_height:
            write_text_atomic(folder / f"{split}_faces.json", json.dumps(face_boxes))
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["video_path", "label"])
        writer.writerows(rows)
        write_text_atomic(folder / f"{split}.csv", buffer.getvalue())
        logger.info("Wrote %d synthetic %s clips to %s", len(rows), split, folder)
    progress.close()
    write_text_atomic(manifest, json.dumps(spec.settings(), indent=2))
    return folder
