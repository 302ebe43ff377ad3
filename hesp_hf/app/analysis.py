"""What one request of the app computes for one video: the clip's decision (as `hesp-predict` makes it: the
`num_frames` frames sampled over the whole file, a known expression or unknown, the known-ness score against the
threshold, the probabilities over the known classes), the frames the model saw (face crops with face cropping), the
closest description of an unknown clip, and for a video longer than one window its timeline; with `faces="all"`
each person's decision over the whole video, their face, and a timeline per person; written to `result.json` and
`<name>.vtt` in the request's folder.

    result = analyse_video(model, processor, "clip.mp4", output_dir="request-1")
    result.decision.label, result.timeline, result.files

An upload that cannot be analysed raises `RequestProblem` with a message for the page (naming the file by its
uploaded name, never a temporary path).
"""

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..atomic_files import write_text_atomic
from ..data.dataset import ClipTransform
from ..data.decoding import sample_clip
from ..inference.prediction_people import people_in_clip
from ..inference.timeline import Timeline, TimelineSegment, TimelineWindow, fill_decisions, timeline
from ..inference.timeline_outputs import webvtt
from ..modeling.video_decoding_hesp import VideoDecodeError
from ..modeling.video_processing_hesp import HESPVideoProcessor


logger = logging.getLogger(__name__)

RESULT_FILE = "result.json"


class RequestProblem(ValueError):
    """Why a request gave no result, in words for the person who sent it."""


@dataclass
class PersonDecision:
    """One person of the video (`faces="all"`): their id, decision over the whole video and face."""

    person: str
    decision: TimelineWindow
    thumbnail: np.ndarray | None


@dataclass
class Analysis:
    """Everything the page shows for one video. `decision` covers the whole clip (`start` 0, `end` its duration);
    `crops` are the sampled frames the model saw, `(H, W, 3)` uint8 each; `face_found` is None without face
    cropping; `closest` is `(expression, description)` for an unknown clip when the model can read text."""

    name: str
    duration: float
    decision: TimelineWindow
    crops: list[np.ndarray]
    face_found: bool | None = None
    closest: tuple[str, str] | None = None
    timeline: Timeline | None = None
    files: list[Path] = field(default_factory=list)
    people: list[PersonDecision] = field(default_factory=list)  # faces="all": each person's whole-video decision

    def to_json(self) -> dict[str, Any]:
        row: dict[str, Any] = {
            "file": self.name,
            "duration": round(self.duration, 3),
            "label": self.decision.label,
            "known": self.decision.known,
            "score": self.decision.score,
            "threshold": self.decision.threshold,
            "known_p_value": self.decision.known_p_value,
            "probabilities": self.decision.probabilities,
            "face_crop": self.face_found is not None,
        }
        if self.face_found is not None:
            row["face_found"] = self.face_found
        if self.closest is not None:
            row["closest_expression"], row["closest_description"] = self.closest
        if self.people:
            row["people"] = [{"person": p.person, **p.decision.to_json()} for p in self.people]
        if self.timeline is not None:
            row["timeline"] = {
                **self.timeline.summary(),
                "segments": [segment.to_json() for segment in self.timeline.segments],
                "windows": [window.to_json() for window in self.timeline.windows],
            }
        return row


def analyse_video(
    model: Any,
    processor: HESPVideoProcessor,
    video: str | Path,
    output_dir: str | Path,
    *,
    name: str | None = None,
    face_crop: bool = False,
    describer: Any = None,
    window: float = 2.0,
    stride: float = 0.5,
    faces: str | None = None,
) -> Analysis:
    """Analyse `video` (reported as `name`, default its file name) and write its files into `output_dir`.
    `describer`: a `CandidateScorer` (or None) naming what an unknown clip looks closest to. `faces="all"`: every
    person too (implies `face_crop`: the clip's decision is the largest face's)."""
    face_crop = face_crop or faces is not None
    path = Path(video)
    name = name or path.name
    if not path.is_file():
        raise RequestProblem(f"{name} was not received: upload it again.")
    if path.stat().st_size == 0:
        raise RequestProblem(f"{name} is empty (0 bytes): choose a video file.")
    try:
        clip = sample_clip(
            path, int(processor.num_frames), shortest_edge=processor.decode_edge(face_crop)
        )  # as hesp-predict
    except VideoDecodeError as error:
        raise RequestProblem(f"{name} cannot be analysed: {_named(error, path, name)}") from error
    frames = clip.frames
    face_found = None
    if face_crop:
        track = _face_track(processor, frames)
        face_found = bool(track.found)
        frames = processor.crop_to_face(frames, track)
    short = float(clip.readable_seconds) <= window
    people = _people(processor, clip) if faces == "all" and short else []  # longer: the timeline's people
    pixels = ClipTransform(processor, training=False).process(frames)[None]  # the data path's frames -> input
    duration = float(clip.readable_seconds)
    decision = TimelineWindow(start=0.0, end=duration)
    with torch.inference_mode():
        output = model(pixel_values_videos=pixels.to(_device_of(model)))
    fill_decisions([decision], output, model.config)
    result = Analysis(name=name, duration=duration, decision=decision, crops=list(frames), face_found=face_found)
    if people:
        windows = [TimelineWindow(start=0.0, end=duration, person=person) for person, _, _ in people]
        with torch.inference_mode():
            output = model(pixel_values_videos=torch.stack([p for _, p, _ in people]).to(_device_of(model)))
        fill_decisions(windows, output, model.config)
        result.people = [PersonDecision(p[0], w, p[2]) for p, w in zip(people, windows, strict=True)]
    if describer is not None and not decision.known:
        closest = describer.closest_unknown(output.video_embeds.float())  # empty when every expression is known
        if closest:
            result.closest = (closest[0][0], closest[0][1])
    if duration > window:  # longer than one window: when each expression happens
        try:
            result.timeline = timeline(
                model, processor, path, window=window, stride=stride, face_crop=face_crop, faces=faces
            )
        except VideoDecodeError as error:
            raise RequestProblem(f"{name} cannot be analysed: {_named(error, path, name)}") from error
        result.timeline.file = name  # the plot's title and the summary name the upload, not its temporary copy
        if faces == "all":  # the people of the timeline's lanes, so that the ids agree
            result.people = _people_of_timeline(result.timeline)
    result.files = write_results(result, Path(output_dir))
    return result


def write_results(result: Analysis, folder: Path) -> list[Path]:
    """`result.json` (the decision, and the timeline's summary, segments and windows) and `<stem>.vtt` (captions:
    the timeline's segments, or one cue for the whole clip), each written whole."""
    folder.mkdir(parents=True, exist_ok=True)
    json_path = folder / RESULT_FILE
    write_text_atomic(json_path, json.dumps(result.to_json(), indent=2) + "\n")
    segments: Sequence[TimelineSegment]
    if result.timeline is not None:
        segments = result.timeline.segments
    else:
        segments = [
            TimelineSegment(
                0.0, result.duration, result.decision.decision, result.decision.known, 1, result.decision.score
            )
        ]
    vtt_path = folder / f"{Path(result.name).stem or 'video'}.vtt"
    write_text_atomic(vtt_path, webvtt(segments))
    return [json_path, vtt_path]


def _people_of_timeline(result: Timeline) -> list[PersonDecision]:
    """Each followed person's decision over the whole video: the decision of most of their decided time, its mean
    known-ness, and their windows' mean probabilities."""
    people = []
    for person in result.people:
        decided = [w for w in result.windows if w.person == person.id and w.status == "ok"]
        if not decided:
            continue
        seconds: dict[str, float] = {}
        for segment in result.segments:
            if segment.person == person.id and segment.known is not None:
                seconds[segment.decision] = seconds.get(segment.decision, 0.0) + segment.end - segment.start
        label = max(seconds, key=seconds.get) if seconds else decided[0].decision
        chosen = [w for w in decided if w.decision == label] or decided
        window = TimelineWindow(start=0.0, end=result.duration, label=label, person=person.id)
        window.known, window.threshold = chosen[0].known, chosen[0].threshold
        window.score = float(np.mean([w.score for w in chosen]))
        window.probabilities = {
            name: round(float(np.mean([w.probabilities[name] for w in decided])), 6) for name in result.labels
        }
        people.append(PersonDecision(person.id, window, person.thumbnail))
    return people


def _people(processor: HESPVideoProcessor, clip: Any) -> list[tuple[str, torch.Tensor, np.ndarray | None]]:
    """Each person on the clip's sampled frames: id, model input of their face crops, thumbnail."""
    from ..modeling.face_cropping_hesp import crop_frames

    try:
        found = people_in_clip(clip.frames, np.asarray(clip.timestamps, dtype=float), processor)
    except ImportError as error:
        raise RequestProblem(f"Following every person is not available here: {error}") from error
    size = processor.face_crop_size
    transform = ClipTransform(processor, training=False)
    return [
        (person, transform.process(crop_frames(clip.frames, boxes, size)), face) for person, boxes, _, face in found
    ]


def _face_track(processor: HESPVideoProcessor, frames: np.ndarray) -> Any:
    try:
        return processor.track_face(frames)
    except ImportError as error:  # the detector is an optional extra: say how to get it
        raise RequestProblem(f"Face cropping is not available here: {error}") from error


def _device_of(model: Any) -> torch.device:
    return next(iter(model.parameters())).device if hasattr(model, "parameters") else torch.device("cpu")


def _named(error: Exception, path: Path, name: str) -> str:
    """The decoder's message about the upload, naming it by its uploaded name."""
    return " ".join(str(error).replace(str(path), name).split())
