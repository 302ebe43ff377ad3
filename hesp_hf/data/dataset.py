"""Clips as a `datasets.Dataset` decoded on the fly, for the `Trainer` and for a plain `DataLoader` with workers.

The dataset holds references (`video`: a `Video(decode=False)` file, or a frame-folder path) and labels; a transform
samples, augments (training) and processes frames when an item is read. `datasets` itself decodes video only with
torchcodec, hence `decode=False`. Use `remove_unused_columns=False` with the `Trainer` and `collate_clips` as the
collator.
"""

import logging
from pathlib import Path
from typing import Any, Literal

import datasets
import torch

from ..modeling.video_processing_hesp import HESPVideoProcessor, VideoDecodeError
from .annotations import ClipRecord
from .augmentation import ClipAugmentation
from .decoding import sample_clip


logger = logging.getLogger(__name__)


class ClipTransform:
    """`datasets` transform: a batch of `video` references -> `pixel_values_videos` `(T, C, H, W)` and `labels`.

    `on_bad_clip="raise"` (default) raises naming the clip; `"skip"` yields `None` for it (dropped by
    `collate_clips`), logs it, and appends `path<TAB>reason` to `bad_clip_log` when given (workers are separate
    processes, so the file is where the count from all of them meets).
    """

    def __init__(
        self,
        processor: HESPVideoProcessor,
        training: bool,
        augmentation: ClipAugmentation | None = None,
        on_bad_clip: Literal["raise", "skip"] = "raise",
        bad_clip_log: str | Path | None = None,
    ):
        if on_bad_clip not in ("raise", "skip"):
            raise ValueError(f"on_bad_clip must be 'raise' or 'skip', got {on_bad_clip!r}.")
        self.processor = processor
        self.training = training
        self.augmentation = augmentation if training else None
        self.on_bad_clip = on_bad_clip
        self.bad_clip_log = Path(bad_clip_log) if bad_clip_log else None
        self.skipped: list[str] = []

    def __call__(self, batch: dict[str, list]) -> dict[str, list]:
        pixel_values, labels = [], []
        for reference, label in zip(batch["video"], batch["label"], strict=True):
            path = reference["path"] if isinstance(reference, dict) else reference
            try:
                pixel_values.append(self.load(path))
            except VideoDecodeError as error:
                if self.on_bad_clip == "raise":
                    raise
                self._record_skip(path, error)
                pixel_values.append(None)
            labels.append(label)
        return {"pixel_values_videos": pixel_values, "labels": labels}

    def load(self, path: str) -> torch.Tensor:
        frames = sample_clip(path, self.processor.num_frames, random_sampling=self.training)
        if self.augmentation is not None:
            video = self.augmentation(frames)  # (T, 3, h, w) uint8
        else:
            video = torch.from_numpy(frames).permute(0, 3, 1, 2)  # (T, 3, H, W)
        processed = self.processor(video, do_sample_frames=False, return_tensors="pt")
        return processed["pixel_values_videos"][0]

    def _record_skip(self, path: str, error: Exception) -> None:
        self.skipped.append(path)
        logger.warning("Skipping clip %s: %s", path, error)
        if self.bad_clip_log is not None:
            self.bad_clip_log.parent.mkdir(parents=True, exist_ok=True)
            with self.bad_clip_log.open("a") as handle:  # one short line per write: appends do not interleave
                handle.write(f"{path}\t{str(error).replace(chr(10), ' ')}\n")


def read_bad_clip_log(path: str | Path) -> list[tuple[str, str]]:
    """The `(clip, reason)` pairs skipped so far, from every process that wrote to the log."""
    path = Path(path)
    if not path.exists():
        return []
    return [tuple(line.split("\t", 1)) for line in path.read_text().splitlines() if line]


def collate_clips(examples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
    """Stack clips into `pixel_values_videos (B, T, C, H, W)` and `labels (B,)`, dropping skipped (None) clips."""
    kept = [e for e in examples if e["pixel_values_videos"] is not None]
    if not kept:
        raise VideoDecodeError(f"Every clip of a batch of {len(examples)} failed to decode; see the log above.")
    return {
        "pixel_values_videos": torch.stack([e["pixel_values_videos"] for e in kept]),
        "labels": torch.tensor([int(e["labels"]) for e in kept], dtype=torch.long),
    }


def clip_dataset(records: list[ClipRecord] | tuple[ClipRecord, ...], transform: ClipTransform) -> datasets.Dataset:
    """A `datasets.Dataset` of the clips (`video`, `label`) that decodes through `transform` when read."""
    paths = [record.path for record in records]
    is_file = [Path(path).is_file() for path in paths]
    video_feature = datasets.Video(decode=False) if paths and all(is_file) else datasets.Value("string")
    features = datasets.Features({"video": video_feature, "label": datasets.Value("int64")})
    table = {"video": paths, "label": [record.label for record in records]}
    return datasets.Dataset.from_dict(table, features=features).with_transform(transform)
