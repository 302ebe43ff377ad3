"""One prediction per person per clip (`hesp-predict --faces all`): the faces on a clip's sampled frames linked into
people (`face_tracks.FaceTracker`, as a timeline links them), each person's face cropped on every sampled frame
(frames where the person is not seen take the nearest frame that shows them) and decided as a clip.

Rows: the clip's `file`, the `person` (`person-1`, ... in order of appearance in the clip), the decision columns of
`hesp-predict`, `frames_on_screen` (of the sampled frames), `thumbnail` (with `thumbnails=`: the person's face as a
PNG file) and `error`; a clip without a face is one row whose error says so. The output is written whole at the end;
running again skips the clips already in it.
"""

import csv
import json
import logging
from collections.abc import Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..atomic_files import atomic_output
from ..data.dataset import ClipTransform
from ..data.decoding import sample_clip
from ..data.frame_stream import StreamedFrame
from ..modeling.face_cropping_hesp import crop_frames
from ..modeling.video_processing_hesp import HESPVideoProcessor
from .background import decoded_in_background
from .decisions import decisions
from .face_tracks import FaceTracker, TrackerSettings


logger = logging.getLogger(__name__)

FIELDS = ["file", "person", "label", "known", "score", "threshold", "known_p_value", "frames_on_screen", "thumbnail"]


def people_in_clip(
    frames: np.ndarray, times: np.ndarray, processor: HESPVideoProcessor, max_faces: int = 8
) -> list[tuple[str, np.ndarray, int, np.ndarray | None]]:
    """Each person on a clip's sampled frames `(T, H, W, 3)` at `times`: `(id, square crop boxes (T, 4), frames on
    screen, thumbnail)`. A face seen on fewer than a quarter of the frames is dropped as noise."""
    count = len(frames)
    span = float(times[-1] - times[0]) if count > 1 else 1.0
    rate = (count - 1) / span if count > 1 and span > 0 else 1.0
    settings = TrackerSettings(
        rate=rate,
        min_track_s=max(1, int(np.ceil(count / 4))) / rate,
        max_faces=max_faces,
        hold_s=1.0 / rate,
        margin=float(processor.face_margin),
        min_score=float(processor.face_min_score),
    )
    tracker = FaceTracker(settings, follow="all")
    stream = (StreamedFrame(index=k, time=float(times[k]), image=frames[k]) for k in range(count))
    resolved = list(tracker.frames(stream))
    people = []
    for person in tracker.people:
        shown = [k for k, frame in enumerate(resolved) if person.id in frame.people]
        if not shown:
            continue
        boxes = np.stack(
            [resolved[min(shown, key=lambda j: (abs(j - k), j))].people[person.id][0] for k in range(count)]
        )
        people.append((person.id, boxes, len(shown), person.thumbnail))
    return people


def predict_people(
    model: Any,
    processor: HESPVideoProcessor,
    clips: Sequence[str | Path],
    output: str | Path,
    *,
    max_faces: int = 8,
    thumbnails: str | Path | None = None,
    bf16: bool = False,
    resume: bool = True,
) -> list[dict[str, Any]]:
    """Predict every person of every clip into `output` (`.jsonl` or `.csv`); returns all its rows."""
    output = Path(output)
    earlier = read_people_rows(output) if resume and output.exists() else []
    done = {row["file"] for row in earlier if not row.get("error") or row["error"].startswith("no face")}
    todo = [str(clip) for clip in dict.fromkeys(str(c) for c in clips) if str(clip) not in done]
    device = next(iter(model.parameters())).device if hasattr(model, "parameters") else torch.device("cpu")
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else nullcontext()
    transform = ClipTransform(processor, training=False)
    rows = [row for row in earlier if row["file"] not in set(todo)]

    def read(clip: str) -> tuple[str, Any]:
        try:
            sampled = sample_clip(clip, processor.num_frames)
        except (ValueError, OSError) as error:  # VideoDecodeError is a ValueError: this clip's row says it
            return clip, " ".join(str(error).split())
        times = np.asarray(sampled.timestamps, dtype=float)
        people = people_in_clip(sampled.frames, times, processor, max_faces)
        size = processor.face_crop_size
        return clip, [
            (person, transform.process(crop_frames(sampled.frames, boxes, size)), on, face, boxes)
            for person, boxes, on, face in people
        ]

    for clip, found in decoded_in_background(read(clip) for clip in todo):
        if isinstance(found, str):
            rows.append({"file": clip, "person": None, "error": found})
            continue
        if not found:
            rows.append({"file": clip, "person": None, "error": "no face in any sampled frame"})
            continue
        pixels = torch.stack([item[1] for item in found]).to(device)
        with torch.inference_mode(), autocast:
            outputs = model(pixel_values_videos=pixels)
        for (person, _, on, face, _), decision in zip(found, decisions(outputs, model.config), strict=True):
            row = {
                "file": clip,
                "person": person,
                **{key: decision[key] for key in ("label", "known", "score", "threshold", "known_p_value")},
                "frames_on_screen": on,
                "thumbnail": _save_thumbnail(face, thumbnails, clip, person),
                "error": "",
                "probabilities": decision["probabilities"],
            }
            rows.append(row)
    _write(output, rows, list(model.config.known_labels))
    people = sum(1 for row in rows if row.get("person"))
    logger.info("%d clips, %d people -> %s", len({row["file"] for row in rows}), people, output)
    return rows


def read_people_rows(path: str | Path) -> list[dict[str, Any]]:
    """The rows of a `--faces all` output."""
    path = Path(path)
    if path.suffix.lower() == ".jsonl":
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    with path.open(newline="") as handle:
        return [
            {key: (value if value != "" else None) for key, value in row.items()} for row in csv.DictReader(handle)
        ]


def _save_thumbnail(face: np.ndarray | None, folder: str | Path | None, clip: str, person: str) -> str | None:
    if face is None or folder is None:
        return None
    from PIL import Image

    path = Path(folder) / f"{Path(clip).stem}-{person}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(path) as temporary:
        Image.fromarray(face).save(temporary, format="PNG")
    return str(path)


def _write(output: Path, rows: list[dict[str, Any]], labels: list[str]) -> None:
    with atomic_output(output) as temporary, temporary.open("w", newline="") as handle:
        if output.suffix.lower() == ".jsonl":
            for row in rows:
                handle.write(json.dumps(row) + "\n")
            return
        writer = csv.DictWriter(handle, fieldnames=[*FIELDS, "error"] + [f"p_{label}" for label in labels],
                                extrasaction="ignore")  # fmt: skip
        writer.writeheader()
        for row in rows:
            flat = {**row, **{f"p_{k}": v for k, v in (row.get("probabilities") or {}).items()}}
            writer.writerow({key: "" if value is None else value for key, value in flat.items()})
