"""One person's webcam session on the app's Live page: frames as the browser sends them (at whatever pace it
manages) placed on the timeline's grid of moments, windows decided by the timeline's scorer as soon as their last
frame is in, the last minute for the rolling view, and at the end the session's timeline files.

    session = LiveSession(model, processor, window=2.0, stride=0.5)
    for image in webcam_frames:                 # RGB uint8 (H, W, 3)
        for window in session.add_frame(image):
            ...
    summary = session.finish("results/", "webcam")   # windows, segments, WebVTT, PNG, summary.json

As with a recording, the frame of a moment is the last frame that arrived at or before it. A pause longer than
`MAX_FRAME_GAP_S` (a hidden tab, a camera that stopped) leaves its moments without a frame: their windows are marked
unreadable rather than decided on a frozen picture.
"""

import time
from pathlib import Path
from typing import Any

import numpy as np

from ..data.frame_stream import Gap, StreamedFrame, converted_size
from ..inference.timeline import Timeline, TimelineWindow, WindowDecider
from ..inference.timeline_outputs import write_timeline


# A frame stands for the moments after it for at most this long; later moments have no frame.
MAX_FRAME_GAP_S = 1.0
RECENT_S = 60.0


class LiveSession:
    """Frames in (`add_frame`), decided windows out; `windows` holds the session's windows for its files."""

    def __init__(
        self,
        model: Any,
        processor: Any,
        window: float = 2.0,
        stride: float = 0.5,
        face_crop: bool = False,
        faces: str | None = None,
    ):
        self.model, self.window = model, window
        self.decider = WindowDecider(model, processor, window, stride, face_crop=face_crop, faces=faces)
        self.face_crop = self.decider.faces is not None
        self._finished = False
        self.windows: list[TimelineWindow] = []
        self.gaps: list[Gap] = []
        self.latest: np.ndarray | None = None  # the last frame received (for the face crop shown)
        self._started: float | None = None
        self._shown: np.ndarray | None = None
        self._shown_at = 0.0
        self._shown_scale = 1.0
        self._index = 0

    @property
    def seconds(self) -> float:
        """Session time covered by the grid so far."""
        return self._index / self.decider.rate

    def add_frame(self, image: np.ndarray, at: float | None = None) -> list[TimelineWindow]:
        """Take one frame (RGB uint8) received at `at` (`time.monotonic()` by default); returns the windows it
        completed."""
        now = time.monotonic() if at is None else at
        if self._started is None:
            self._started = now
        elapsed = now - self._started
        frames: list[StreamedFrame] = []
        rate = self.decider.rate
        while self._shown is not None and (moment := (self._index + 0.5) / rate) < elapsed:
            fresh = moment - self._shown_at <= MAX_FRAME_GAP_S
            frames.append(StreamedFrame(self._index, moment, self._shown if fresh else None, self._shown_scale))
            if not fresh and (not self.gaps or self.gaps[-1].end < moment - 1 / rate - 1e-9):
                self.gaps.append(Gap(moment - 0.5 / rate, moment + 0.5 / rate, "no frame from the camera"))
            elif not fresh:
                self.gaps[-1].end = moment + 0.5 / rate
            self._index += 1
        self._shown, self._shown_at, self.latest = self._scaled(image), elapsed, image
        self._shown_scale = min(image.shape[:2]) / min(self._shown.shape[:2])  # face boxes in the camera's pixels
        windows = self.decider.add(frames)
        self.windows += windows
        return windows

    def _scaled(self, image: np.ndarray) -> np.ndarray:
        """The frame at the decoder's size (as `FrameStream` converts a file's frames; with faces, never enlarged)."""
        height, width = image.shape[:2]
        size = converted_size(width, height, self.decider.decode_edge, self.decider.shrink_only)
        if size == (width, height):
            return np.ascontiguousarray(image[..., :3])
        from PIL import Image

        return np.asarray(Image.fromarray(np.ascontiguousarray(image[..., :3])).resize(size, Image.BOX))

    def recent(self, seconds: float = RECENT_S) -> list[TimelineWindow]:
        """The windows that end within the last `seconds` of the session."""
        return [w for w in self.windows if w.end >= self.seconds - seconds]

    def timeline(self, name: str = "webcam") -> Timeline:
        """The session so far as a `Timeline` (what `hesp-timeline` gives for a recording)."""
        config = self.model.config
        duration = max([self.seconds, *(w.end for w in self.windows)])
        segments, people = self.decider.segments_and_people(self.windows, duration)
        return Timeline(
            file=name,
            duration=duration,
            window=self.window,
            stride=self.decider.stride,
            labels=list(config.known_labels),
            unknown_label=config.unknown_label,
            windows=list(self.windows),
            segments=segments,
            gaps=list(self.gaps),
            face_crop=self.face_crop,
            faces=self.decider.faces,
            people=people,
        )

    def finish(self, folder: str | Path, stem: str = "webcam") -> dict[str, Any]:
        """Write the session's files (`hesp_hf.inference.timeline_outputs.write_timeline`) into `folder`, with the
        windows the face tracker still held."""
        if not self._finished:
            self._finished = True
            self.windows += self.decider.finish(self.seconds)
        return write_timeline(self.timeline(stem), folder, stem, settings={"source": "webcam (hesp-app, Live)"})
