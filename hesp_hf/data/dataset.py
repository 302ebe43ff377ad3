"""Clips as a `datasets.Dataset` decoded on the fly, for the `Trainer` and for a plain `DataLoader` with workers.

The dataset holds references (`video`: a `Video(decode=False)` file or bytes, a frame-folder path, or a video's bytes)
and labels; a transform
samples, augments (training) and processes frames when an item is read. `datasets` itself decodes video only with
torchcodec, hence `decode=False`. Use `remove_unused_columns=False` with the `Trainer` and `collate_clips` as the
collator.
"""

import copy
import hashlib
import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

import datasets
import numpy as np
import torch

from ..atomic_files import write_text_atomic
from ..modeling.face_cropping_hesp import FaceTrack
from ..modeling.video_decoding_hesp import VideoDecodeError
from ..modeling.video_processing_hesp import HESPVideoProcessor
from .annotations import ClipRecord
from .augmentation import ClipAugmentation
from .decoding import sample_clip, sample_clip_bytes


logger = logging.getLogger(__name__)


BadClipPolicy = Literal["raise", "skip"]
TruncatedClipPolicy = Literal["warn", "raise", "skip"]


class TruncatedVideoError(VideoDecodeError):
    """A clip that decodes only partly (`on_truncated_clip="raise"`)."""


class ClipTransform:
    """`datasets` transform: a batch of `video` references -> `pixel_values_videos` `(T, C, H, W)` and `labels`.

    `on_bad_clip`: a clip that fails to decode raises naming it (`"raise"`, default) or is dropped from its batch
    (`"skip"`; `collate_clips` drops the `None`). `on_truncated_clip`: a file that decodes only partly is used and
    reported (`"warn"`, default: sampled over the part that exists), raises (`"raise"`), or is dropped (`"skip"`).
    Every dropped or truncated clip is logged and, with `clip_log`, appended to it as
    `split<TAB>kind<TAB>path<TAB>reason`: DataLoader workers are separate processes, so the file is where all of them
    meet; `read_clip_log` counts distinct clips per split.
    """

    def __init__(
        self,
        processor: HESPVideoProcessor,
        training: bool,
        augmentation: ClipAugmentation | None = None,
        on_bad_clip: BadClipPolicy = "raise",
        on_truncated_clip: TruncatedClipPolicy = "warn",
        clip_log: str | Path | None = None,
        split: str = "train",
        face_cache: str | Path | None = None,
    ):
        if on_bad_clip not in get_args(BadClipPolicy):
            raise ValueError(f"on_bad_clip must be one of {get_args(BadClipPolicy)}, got {on_bad_clip!r}.")
        if on_truncated_clip not in get_args(TruncatedClipPolicy):
            raise ValueError(
                f"on_truncated_clip must be one of {get_args(TruncatedClipPolicy)}, got {on_truncated_clip!r}."
            )
        self.processor = processor
        self.training = training
        self.augmentation = augmentation if training else None
        self.on_bad_clip = on_bad_clip
        self.on_truncated_clip = on_truncated_clip
        self.clip_log = Path(clip_log) if clip_log else None
        self.split = split
        self.face_cache = Path(face_cache) if face_cache else None

    @property
    def decode_edge(self) -> int | None:
        """The shorter side a file's sampled frames are converted at: the processor's (`decode_edge`: the model's
        input, or what face cropping needs), enlarged for a training crop so that its smallest crop (a share
        `scale[0]` of the area) still holds the model's input without being enlarged."""
        edge = self.processor.decode_edge()
        if edge is None or self.augmentation is None or self.processor.face_crop:
            return edge
        smallest = self.augmentation.scale[0]
        return math.ceil(edge / math.sqrt(smallest)) if 0 < smallest < 1 else edge

    def for_split(self, split: str) -> "ClipTransform":
        """The same transform, reporting its clips under another split name."""
        other = copy.copy(self)
        other.split = split
        return other

    def __call__(self, batch: dict[str, list]) -> dict[str, list]:
        pixel_values, labels = [], []
        for reference, label in zip(batch["video"], batch["label"], strict=True):
            pixel_values.append(self._load_or_report(*clip_reference(reference)))
            labels.append(label)
        return {"pixel_values_videos": pixel_values, "labels": labels}

    def _face_crop(self, path: str, clip: Any, data: bytes | None = None) -> np.ndarray:
        """The clip cropped to its face. The track found on a clip's first read is stored in `face_cache` (when
        given) and reused at the times later reads sample, so epochs do not detect again; a clip without a face is
        reported when its track is made."""
        # The track's boxes are in the pixels of the decoded frames: the size they were decoded at is part of the key.
        settings = (self.processor.face_margin, self.processor.face_min_score, self.decode_edge)
        cache = self.face_cache / f"{_clip_key(path, settings, data)}.json" if self.face_cache else None
        track = FaceTrack.from_json(json.loads(cache.read_text())) if cache is not None and cache.exists() else None
        times = np.asarray(clip.timestamps, dtype=float)
        if track is None:
            track = self.processor.track_face(clip.frames, times=times)
            if cache is not None:
                write_text_atomic(cache, json.dumps(track.to_json()))
            if not track.found:
                self._report(path, "no_face", "no face in any sampled frame: the whole frame is used")
        return self.processor.crop_to_face(clip.frames, track, times)

    def _load_or_report(self, path: str, data: bytes | None = None) -> torch.Tensor | None:
        """`path` names the clip; `data`, when given, is the video itself (a `datasets` bytes column)."""
        try:
            if data is not None:
                clip = sample_clip_bytes(
                    data,
                    path,
                    self.processor.num_frames,
                    random_sampling=self.training,
                    shortest_edge=self.decode_edge,
                )
            else:
                clip = sample_clip(
                    path, self.processor.num_frames, random_sampling=self.training, shortest_edge=self.decode_edge
                )
        except VideoDecodeError as error:
            if self.on_bad_clip == "raise":
                raise
            self._report(path, "skipped", str(error))
            return None
        if clip.truncated:
            message = clip.truncation_message(path)
            if self.on_truncated_clip == "raise":
                raise TruncatedVideoError(message + " (on_truncated_clip='raise')")
            if self.on_truncated_clip == "skip":
                self._report(path, "skipped", message)
                return None
            self._report(path, "truncated", message)
        return self.process(self._face_crop(path, clip, data) if self.processor.face_crop else clip.frames)

    def process(self, frames: np.ndarray) -> torch.Tensor:
        """Sampled frames `(T, H, W, 3)` uint8 -> `(T, C, H, W)` model input (augmented when training)."""
        if self.augmentation is not None:
            video = self.augmentation(frames)  # (T, 3, h, w) uint8
        else:
            video = torch.from_numpy(frames).permute(0, 3, 1, 2)  # (T, 3, H, W)
        processed = self.processor(video, do_sample_frames=False, face_crop=False, return_tensors="pt")
        return processed["pixel_values_videos"][0]

    def _report(self, path: str, kind: str, reason: str) -> None:
        logger.warning("%s %s clip %s: %s", self.split.capitalize(), kind.replace("_", "-"), path, reason)
        if self.clip_log is not None:
            self.clip_log.parent.mkdir(parents=True, exist_ok=True)
            line = "\t".join((self.split, kind, path, " ".join(reason.split())))
            with self.clip_log.open("a") as handle:  # one short line per write: appends do not interleave
                handle.write(line + "\n")


@dataclass
class ClipReport:
    """Distinct clips per split that were dropped (`skipped`) or used although truncated (`truncated`)."""

    skipped: dict[str, list[str]]
    truncated: dict[str, list[str]]
    no_face: dict[str, list[str]] = field(default_factory=dict)

    def counts(self, splits: tuple[str, ...] = (), face_crop: bool = False) -> dict[str, dict[str, int]]:
        """Distinct clips per split; `splits` are always listed (a zero is a statement that none was lost), and the
        clips without a face when faces were cropped."""
        kinds = {"skipped_clips": self.skipped, "truncated_clips": self.truncated}
        if face_crop:
            kinds["no_face_clips"] = self.no_face
        return {
            name: {**dict.fromkeys(splits, 0), **{split: len(paths) for split, paths in found.items()}}
            for name, found in kinds.items()
        }

    def __bool__(self) -> bool:
        return bool(self.skipped or self.truncated or self.no_face)


def read_clip_log(path: str | Path) -> ClipReport:
    """What every process appended to a clip log, as distinct clips per split (a clip read in several epochs, or by
    several workers, counts once)."""
    path = Path(path)
    found: dict[str, dict[str, dict[str, None]]] = {"skipped": {}, "truncated": {}, "no_face": {}}
    if path.exists():
        for line in path.read_text().splitlines():
            parts = line.split("\t", 3)
            if len(parts) == 4 and parts[1] in found:
                found[parts[1]].setdefault(parts[0], {})[parts[2]] = None
    return ClipReport(
        skipped={split: list(paths) for split, paths in found["skipped"].items()},
        truncated={split: list(paths) for split, paths in found["truncated"].items()},
        no_face={split: list(paths) for split, paths in found["no_face"].items()},
    )


def clip_reference(reference: Any) -> tuple[str, bytes | None]:
    """A `video` value as (name, bytes or None): a path string, a `Video(decode=False)` dict (`path`, `bytes`), or
    raw bytes (then named by their size: the caller names them better through the dict's `path`)."""
    if isinstance(reference, dict):
        data = reference.get("bytes")
        return str(reference.get("path") or f"<video of {len(data or b'')} bytes>"), data
    if isinstance(reference, (bytes, bytearray)):
        return f"<video of {len(reference)} bytes>", bytes(reference)
    return str(reference), None


def _clip_key(path: str, settings: tuple, data: bytes | None = None) -> str:
    """A cache name for a clip's face track: its path, size and modification time (a replaced file is detected
    again), or the content of a clip held as bytes, and the face settings."""
    if data is not None:
        return hashlib.sha1(data + repr(settings).encode()).hexdigest()
    stat = Path(path).stat()
    return hashlib.sha1(f"{Path(path).resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{settings}".encode()).hexdigest()


def collate_clips(examples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
    """Stack clips into `pixel_values_videos (B, T, C, H, W)` and `labels (B,)`, dropping skipped (None) clips. When
    every clip of a batch was skipped the batch is empty (`(0,)` tensors); `HESPTrainer` steps over it."""
    kept = [e for e in examples if e["pixel_values_videos"] is not None]
    if not kept:
        return {"pixel_values_videos": torch.empty(0), "labels": torch.empty(0, dtype=torch.long)}
    return {
        "pixel_values_videos": torch.stack([e["pixel_values_videos"] for e in kept]),
        "labels": torch.tensor([int(e["labels"]) for e in kept], dtype=torch.long),
    }


def clip_dataset(records: list[ClipRecord] | tuple[ClipRecord, ...], transform: ClipTransform) -> Any:
    """A `datasets.Dataset` of the clips (`video`, `label`) that decodes through `transform` when read. Clips that
    live in a `datasets` split (`record.origin`, see `hf_datasets`) are read from it by row: a map-style split gives
    a `datasets.Dataset` of rows, a streamed one a sized iterable over the stream."""
    origins = {id(record.origin): record.origin for record in records}
    if len(origins) > 1 or (records and records[0].origin is not None):
        if None in origins.values() or len(origins) > 1:
            raise ValueError("clip_dataset takes the clips of one source at a time (files, or one datasets split).")
        return records[0].origin.clips(list(records), transform)
    paths = [record.path for record in records]
    is_file = [Path(path).is_file() for path in paths]
    video_feature = datasets.Video(decode=False) if paths and all(is_file) else datasets.Value("string")
    features = datasets.Features({"video": video_feature, "label": datasets.Value("int64")})
    table = {"video": paths, "label": [record.label for record in records]}
    return datasets.Dataset.from_dict(table, features=features).with_transform(transform)
