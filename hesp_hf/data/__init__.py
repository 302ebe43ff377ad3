"""The data layer: the datasets users have on disk, the paper's open-set protocol, and fast clip decoding."""

from pathlib import Path

from .annotations import AnnotationError, ClipRecord, layout_of, read_annotation
from .augmentation import ClipAugmentation
from .dataset import ClipReport, ClipTransform, TruncatedVideoError, clip_dataset, collate_clips, read_clip_log
from .decoding import sample_clip
from .presets import PRESETS, DatasetPreset, get_preset
from .protocol import UNKNOWN_LABEL_ID, OpenSetSplit, make_open_set_split


def load_open_set_split(
    dataset: str,
    train_annotation: str | Path,
    test_annotation: str | Path,
    data_root: str | Path | None = None,
    split_index: int | None = None,
    known_labels: list[str] | None = None,
    label_names: list[str] | None = None,
    label_base: int | None = None,
    validation_fraction: float = 0.1,
    seed: int = 0,
    validation_unknown_fraction: float = 0.0,
    allow_empty_known_classes: bool = False,
) -> OpenSetSplit:
    """Read and check both annotations (every problem of both reported at once), then apply the open-set protocol.

    `dataset`: a preset (`dfew`, `mafw`, `afew`, `ferv39k`) or `custom` with `label_names` (all classes, index order).
    Annotations: a list file, a CSV or a class-folder root, whichever layout; relative clip paths resolve against
    `data_root` (default: the annotation's folder).
    """
    preset = get_preset(dataset, label_names, label_base)
    problems, lists = [], []
    for annotation in (train_annotation, test_annotation):
        try:
            lists.append(read_annotation(annotation, preset, data_root))
        except AnnotationError as error:
            problems.extend(error.problems)
    if problems:
        raise AnnotationError(problems)
    return make_open_set_split(
        preset,
        lists[0],
        lists[1],
        split_index,
        known_labels,
        validation_fraction=validation_fraction,
        seed=seed,
        validation_unknown_fraction=validation_unknown_fraction,
        allow_empty_known_classes=allow_empty_known_classes,
    )


__all__ = [
    "PRESETS",
    "UNKNOWN_LABEL_ID",
    "AnnotationError",
    "ClipAugmentation",
    "ClipRecord",
    "ClipReport",
    "ClipTransform",
    "TruncatedVideoError",
    "DatasetPreset",
    "OpenSetSplit",
    "clip_dataset",
    "collate_clips",
    "get_preset",
    "layout_of",
    "load_open_set_split",
    "make_open_set_split",
    "read_annotation",
    "read_clip_log",
    "sample_clip",
]
