"""`datasets` datasets as a clip source, beside the on-disk layouts: a Hub id, a `save_to_disk` folder, a builder
(`videofolder`, `parquet`, `csv`, ... with `data_dir` / `data_files`) or a dataset object, map-style or streamed.

Each split becomes the same `ClipRecord`s the annotation layouts give, so the open-set protocol, the sampler,
calibration and the reports are the ones files use. A column of paths gives records of files; a `Video` column or a
column of bytes gives records that point back at their row (`ClipRecord.origin`, `.row`), read when the clip is:
`Video(decode=False)` keeps `datasets` from decoding (it would need torchcodec), and bytes go through the package's
own decoder (`sample_clip_bytes`), so rotation, variable frame rate, truncation and the bad-clip policies are the
same as for files. A streamed split is read twice: its label column once for the protocol, then its clips on the
fly, never more than a batch of them in memory.
"""

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import datasets
import torch

from .annotations import AnnotationError, ClipRecord
from .presets import PRESETS, DatasetPreset
from .protocol import OpenSetSplit, make_open_set_split, reindex, stratified_holdout, test_only_split


logger = logging.getLogger(__name__)

# Files `Dataset.save_to_disk` / `DatasetDict.save_to_disk` leave in their folder.
SAVED_DATASET_FILES = ("dataset_dict.json", "state.json")


@dataclass(frozen=True)
class DatasetSource:
    """Where the clips come from and which columns and splits hold what (the `--dataset_name` family of options).

    `name`: a Hub id, a local dataset folder, or a builder name with `data_dir` / `data_files`; `dataset`: a
    `Dataset`, `DatasetDict` or mapping of split names to datasets passed from Python instead. `validation_split`
    None: the `validation` split when there is one, else a seeded share of the training split."""

    name: str | None = None
    dataset: Any = field(default=None, compare=False, repr=False)
    config_name: str | None = None
    data_dir: str | None = None
    data_files: tuple[str, ...] | None = None
    streaming: bool = False
    video_column: str = "video"
    label_column: str = "label"
    train_split: str = "train"
    validation_split: str | None = None
    test_split: str = "test"
    data_root: str | None = None  # where relative paths in a column of paths start (default: the data's folder)

    @property
    def hub_id(self) -> str | None:
        """The Hub id the data came from; None for anything local (a folder, a builder over local files, an object)."""
        if self.dataset is not None or self.name is None or self.is_builder or Path(self.name).exists():
            return None
        return self.name

    def describe(self) -> str:
        """The source in a few words, for logs, errors and the model card."""
        if self.dataset is not None:
            return "a datasets object passed from Python"
        if self.hub_id:
            return f"{self.hub_id}" + (f" ({self.config_name})" if self.config_name else "")
        if self.is_builder:
            where = self.data_dir or ", ".join(self.data_files or ()) or "?"
            return f"{self.name} over {where}"
        return f"the local dataset folder {self.name}"

    @property
    def is_builder(self) -> bool:
        """Whether `name` is a builder (`videofolder`, `csv`, `parquet`, ...): a name without an owner that is no local
        path (read without `datasets`' private registry of builders). Not supported: Hub datasets without an owner
        (the few legacy canonical ids) are taken for builders here; name them `owner/name`."""
        return bool(self.name) and "/" not in str(self.name) and not Path(str(self.name)).exists()

    @property
    def short_name(self) -> str:
        """A name for split tables and titles: the Hub id, the folder's or data folder's name, or `dataset`."""
        if self.hub_id:
            return self.hub_id
        if self.name and Path(self.name).exists():
            return Path(self.name).name
        if self.data_dir:
            return Path(self.data_dir).name
        return self.name or "dataset"


def load_splits(source: DatasetSource) -> dict[str, Any]:
    """The source's splits by name (`Dataset`s, or `IterableDataset`s when streaming); nothing is decoded."""
    loaded = source.dataset
    if loaded is None and source.name and Path(source.name).is_dir():
        if any((Path(source.name) / name).exists() for name in SAVED_DATASET_FILES):
            loaded = datasets.load_from_disk(source.name)
    if loaded is None:
        files = data_files_argument(source.data_files)
        loaded = datasets.load_dataset(
            source.name, source.config_name, data_dir=source.data_dir, data_files=files, streaming=source.streaming
        )
    if isinstance(loaded, (datasets.Dataset, datasets.IterableDataset)):
        loaded = {source.test_split: loaded}  # one set of clips: what an evaluation reads
    splits = dict(loaded)
    if source.streaming:  # a map-style object or folder, streamed on request
        splits = {name: _streamed(split) for name, split in splits.items()}
    return splits


def data_files_argument(items: Sequence[str] | None) -> list[str] | dict[str, list[str]] | None:
    """`--data_files` as `load_dataset` takes it: `split=path` items as a mapping of splits to files (the examples'
    `train_file` / `validation_file` in one option); plain paths as a list (one `train` split)."""
    if not items:
        return None
    named: dict[str, list[str]] = {}
    plain: list[str] = []
    for item in items:
        split, equals, path = item.partition("=")
        if equals and split.isidentifier():
            named.setdefault(split, []).append(path)
        else:
            plain.append(item)
    if named and plain:
        raise ValueError(f"--data_files mixes split=path items and plain paths ({plain}): name the split of each.")
    return named or plain


def _streamed(split: Any) -> Any:
    return split.to_iterable_dataset() if isinstance(split, datasets.Dataset) else split


def get_split(splits: Mapping[str, Any], name: str, source: DatasetSource) -> Any:
    if name not in splits:
        raise ValueError(f"Split '{name}' does not exist in {source.describe()}: it has {sorted(splits)}.")
    return splits[name]


def features_of(split: Any) -> datasets.Features:
    """A split's features; a stream that does not declare them is asked to resolve them from its first rows."""
    if split.features is None and isinstance(split, datasets.IterableDataset):
        split = split._resolve_features()  # noqa: SLF001 -- the public path only exists for this
    return split.features


def video_kind(split: Any, split_name: str, source: DatasetSource) -> str:
    """How the video column holds its clips: `video` (a `Video` feature or a {path, bytes} struct), `path`
    (strings) or `bytes`; refused, naming the column and what it holds, when none of these."""
    features = features_of(split)
    column = source.video_column
    check_columns(features, split_name, source)
    feature = features[column]
    if isinstance(feature, datasets.Video):
        return "video"
    if isinstance(feature, dict) and {"path", "bytes"} & set(feature):
        return "video"
    dtype = getattr(feature, "dtype", None)
    if dtype in ("string", "large_string"):
        return "path"
    if dtype in ("binary", "large_binary"):
        return "bytes"
    raise ValueError(
        f"Column '{column}' of split '{split_name}' holds {_feature_name(feature)}: neither video paths (strings), "
        "bytes nor a Video feature (pick the column with --video_column_name)."
    )


def check_columns(features: datasets.Features, split_name: str, source: DatasetSource) -> None:
    """Both named columns exist, else one line naming the missing one and the columns there are."""
    for option, column in (("--video_column_name", source.video_column), ("--label_column_name", source.label_column)):
        if column not in features:
            raise ValueError(
                f"Column '{column}' ({option}) does not exist in split '{split_name}' of {source.describe()}: its "
                f"columns are {list(features)}."
            )


def _feature_name(feature: Any) -> str:
    dtype = getattr(feature, "dtype", None)
    return f"{type(feature).__name__}({dtype})" if dtype else type(feature).__name__


def column_values(split: Any, column: str) -> list[Any]:
    """One column of a split, read alone (a stream reads that column only; a `Video` column is not decoded)."""
    if isinstance(split, datasets.IterableDataset):
        return [row[column] for row in split.select_columns([column])]
    return split.select_columns([column]).with_format(None)[column]


def label_names(
    splits: Mapping[str, Any],
    values: Mapping[str, list[Any]],
    source: DatasetSource,
    class_names: Sequence[str] | None = None,
    preset: str | None = None,
) -> list[str]:
    """All class names in label order: a preset's (`--dataset`), `class_names` (`--class_names`), the label column's
    `ClassLabel` names, or the distinct strings it holds, sorted (listed in the log). Integers without names, or a
    column with no name at all, are refused naming the column."""
    column = source.label_column
    first = next(iter(splits))
    feature = features_of(splits[first])[column]
    if preset is not None and preset != "custom":
        return list(PRESETS[preset].class_names)
    if class_names:
        return list(class_names)
    if isinstance(feature, datasets.ClassLabel):
        if not feature.names:
            raise ValueError(f"Label column '{column}' is a ClassLabel without names: pass --class_names.")
        return list(feature.names)
    if getattr(feature, "dtype", None) in ("string", "large_string"):
        names = sorted({value for found in values.values() for value in found if isinstance(value, str) and value})
        if not names:
            raise ValueError(f"Label column '{column}' holds no class name (every value is empty or missing).")
        logger.info("Class names from the distinct values of column '%s' (sorted): %s", column, names)
        return names
    if getattr(feature, "dtype", "").startswith(("int", "uint")):
        raise ValueError(
            f"Label column '{column}' holds integers without class names (no ClassLabel feature): pass --class_names "
            "in index order, or cast the column to ClassLabel."
        )
    raise ValueError(
        f"Label column '{column}' holds {_feature_name(feature)}, which gives no class names: it needs a ClassLabel "
        "feature or class-name strings (pick the column with --label_column_name)."
    )


def _label_indices(
    values: list[Any], feature: Any, names: list[str], split_name: str, column: str
) -> list[int | None]:
    """Each row's index in `names` (None: unlabelled, skipped); a value outside them is refused."""
    own = feature.names if isinstance(feature, datasets.ClassLabel) else None
    lookup = {name.lower(): index for index, name in enumerate(names)}
    indices: list[int | None] = []
    unknown: dict[str, int] = {}
    for row, value in enumerate(values):
        if value is None or value == "" or (isinstance(value, int) and value < 0):
            indices.append(None)
            continue
        if isinstance(value, int) and own is None:
            if value >= len(names):
                raise ValueError(
                    f"Split '{split_name}' row {row}: label {value} in column '{column}' is out of range for the "
                    f"{len(names)} classes {names}."
                )
            indices.append(value)
            continue
        name = own[value] if isinstance(value, int) else str(value)
        if name.lower() not in lookup:
            unknown.setdefault(name, row)
            indices.append(None)
            continue
        indices.append(lookup[name.lower()])
    if unknown:
        found = ", ".join(f"'{name}' (row {row})" for name, row in unknown.items())
        raise ValueError(f"Split '{split_name}', column '{column}': labels {found} are not among the classes {names}.")
    return indices


def split_records(split: Any, split_name: str, labels: list[int | None], source: DatasetSource) -> list[ClipRecord]:
    """The clips of one split as records: files for a column of paths (checked on disk, every problem at once), rows
    of the split for a `Video` or bytes column."""
    kind = video_kind(split, split_name, source)
    where = f"{source.short_name}[{split_name}]"
    skipped = sum(label is None for label in labels)
    if skipped:
        logger.warning("%d row(s) of split '%s' have no label and are left out.", skipped, split_name)
    if kind != "path":
        origin = DatasetClips(split, source.video_column, kind, where)
        return [
            ClipRecord(f"{where}[{row}]", label, None, where, row + 1, row=row, origin=origin)
            for row, label in enumerate(labels)
            if label is not None
        ]
    base = Path(source.data_root or source.data_dir or (source.name if source.name and Path(source.name).is_dir()
                else Path((source.data_files or ["."])[0]).parent))  # fmt: skip
    records, problems = [], []
    for row, (value, label) in enumerate(zip(column_values(split, source.video_column), labels, strict=True)):
        if label is None:
            continue
        if not value:
            problems.append(f"{where} row {row}: column '{source.video_column}' is empty")
            continue
        path = Path(value) if Path(value).is_absolute() else base / value
        if not path.exists():
            problems.append(f"{where} row {row}: missing clip {path}")
        elif path.is_file() and path.stat().st_size == 0:
            problems.append(f"{where} row {row}: clip {path} has zero frames (empty file)")
        records.append(ClipRecord(str(path), label, None, where, row + 1, row=row))
    if problems:
        raise AnnotationError(problems)
    return records


@dataclass
class DatasetSplitClips:
    """What a `datasets` source gives the protocol: class names in label order and the records of each split."""

    preset: DatasetPreset
    records: dict[str, list[ClipRecord]]


def read_source(
    source: DatasetSource,
    split_names: Sequence[str],
    class_names: Sequence[str] | None = None,
    preset: str | None = None,
    extra_names: Sequence[str] = (),
    splits: Mapping[str, Any] | None = None,
) -> DatasetSplitClips:
    """Load the source, read the label column of each split in `split_names` (the class names from them, see
    `label_names`) and turn each split into records. `extra_names` are names that must be classes (a checkpoint's
    known classes, when the test split alone is read); `splits`: the source already loaded."""
    splits = load_splits(source) if splits is None else splits
    chosen = {name: get_split(splits, name, source) for name in split_names}
    for name, split in chosen.items():
        check_columns(features_of(split), name, source)
    values = {name: column_values(split, source.label_column) for name, split in chosen.items()}
    if extra_names:
        values["(model)"] = list(extra_names)
    names = label_names(chosen, values, source, class_names, preset)
    values.pop("(model)", None)
    if preset is not None and preset != "custom":
        base = PRESETS[preset]
    else:
        base = DatasetPreset(name=source.short_name, class_names=tuple(names))
    records = {}
    for name, split in chosen.items():
        feature = features_of(split)[source.label_column]
        labels = _label_indices(values[name], feature, names, name, source.label_column)
        records[name] = split_records(split, name, labels, source)
        if not records[name]:
            raise ValueError(f"Split '{name}' of {source.describe()} holds no labelled clip.")
    return DatasetSplitClips(base, records)


def dataset_open_set_split(
    source: DatasetSource,
    split_index: int | None = None,
    known_labels: list[str] | None = None,
    class_names: Sequence[str] | None = None,
    preset: str | None = None,
    validation_fraction: float = 0.1,
    seed: int = 0,
    validation_unknown_fraction: float = 0.0,
    allow_empty_known_classes: bool = False,
) -> OpenSetSplit:
    """The open-set split of a `datasets` source: the protocol of `make_open_set_split` on its train and test splits.
    Validation is the validation split's known clips when it has one (`source.validation_split`, default
    `validation` when present), else a seeded, stratified share of the training split; unknown classes never reach
    it unless `validation_unknown_fraction` asks for them."""
    splits = load_splits(source)
    validation_name = source.validation_split
    if validation_name is None and "validation" in splits and "validation" != source.train_split:
        validation_name = "validation"
    names = [source.train_split, source.test_split] + ([validation_name] if validation_name else [])
    read = read_source(source, names, class_names, preset, splits=splits)
    records = read.records
    split = make_open_set_split(
        read.preset,
        records[source.train_split],
        records[source.test_split],
        split_index,
        known_labels,
        validation_fraction=0.0 if validation_name else validation_fraction,
        seed=seed,
        validation_unknown_fraction=0.0 if validation_name else validation_unknown_fraction,
        allow_empty_known_classes=allow_empty_known_classes,
    )
    if validation_name:
        relabel = {original: label for label, original in enumerate(split.known_classes)}
        validation = [reindex(r, relabel[r.label]) for r in records[validation_name] if r.label in relabel]
        if validation_unknown_fraction > 0:
            unknown = [r for r in records[validation_name] if r.label not in relabel]
            _, held = stratified_holdout(unknown, validation_unknown_fraction, seed)
            validation += [reindex(r, split.unknown_label_id) for r in held]
        how = f"the '{validation_name}' split ({len(validation)} clips of the known classes)"
        split = replace(split, validation=tuple(validation), validation_from=how)
        logger.info("Open-set split with validation from %s:\n%s", how, split.summary())
    else:
        how = f"a seeded {validation_fraction:.0%} of the '{source.train_split}' split (seed {seed}): no validation split"
        split = replace(split, validation_from=how)
    logger.info("Validation: %s.", how)
    return split


def dataset_test_split(
    source: DatasetSource,
    known_labels: list[str],
    class_names: Sequence[str] | None = None,
    preset: str | None = None,
) -> OpenSetSplit:
    """The open-set test set of a trained model from the source's test split alone: the model's known classes
    labelled `0..K-1`, every other class unknown."""
    read = read_source(source, [source.test_split], class_names, preset, extra_names=known_labels)
    return test_only_split(read.preset, read.records[source.test_split], known_labels)


def dataset_class_names(source: DatasetSource, class_names: Sequence[str] | None = None) -> list[str]:
    """Every class of the source's train and test splits, in label order (what `hesp-protocol` draws lists from)."""
    read = read_source(source, [source.train_split, source.test_split], class_names)
    return list(read.preset.class_names)


class DatasetClips:
    """The rows of one `datasets` split that records point at (`ClipRecord.origin`); `clips` makes the dataset the
    Trainer reads. `kind`: `video` (a `Video` feature or {path, bytes} struct, read undecoded) or `bytes`."""

    def __init__(self, split: Any, column: str, kind: str, name: str):
        split = split.select_columns([column])
        if isinstance(split.features[column] if split.features else None, datasets.Video):
            split = split.cast_column(column, datasets.Video(decode=False))  # no torchcodec: our decoder reads it
        self.split = split
        self.column = column
        self.kind = kind
        self.name = name
        self.streaming = isinstance(split, datasets.IterableDataset)

    def reference(self, row: int, value: Any) -> dict[str, Any]:
        """A row's video as the `ClipTransform` reads it, named by its file when the row has one, else by its row."""
        if isinstance(value, dict):
            return {"path": value.get("path") or f"{self.name}[{row}]", "bytes": value.get("bytes")}
        return {"path": f"{self.name}[{row}]", "bytes": value}

    def clips(self, records: list[ClipRecord], transform: Any) -> Any:
        labels = {record.row: record.label for record in records}
        if self.streaming:
            return StreamedClips(self, labels, transform)
        table = {"row": [record.row for record in records], "label": [record.label for record in records]}
        return datasets.Dataset.from_dict(table).with_transform(_RowReader(self, transform))


class _RowReader:
    """`datasets` transform: a batch of rows of a map-style split -> the `ClipTransform`'s model inputs."""

    def __init__(self, clips: DatasetClips, transform: Any):
        self.clips = clips
        self.transform = transform

    def __call__(self, batch: dict[str, list]) -> dict[str, list]:
        rows = [int(row) for row in batch["row"]]
        values = self.clips.split[rows][self.clips.column]
        videos = [self.clips.reference(row, value) for row, value in zip(rows, values, strict=True)]
        return self.transform({"video": videos, "label": batch["label"]})


class StreamedClips(torch.utils.data.IterableDataset):
    """The records' rows of a streamed split, decoded one at a time as the stream passes them (memory: the batch
    being built), in the stream's order. Its length is the number of records, so epochs and schedules are counted as
    for a map-style set. DataLoader workers each read the stream and keep every n-th wanted row."""

    def __init__(self, clips: DatasetClips, labels: dict[int, int], transform: Any):
        self.clips = clips
        self.labels = labels
        self.transform = transform

    def __len__(self) -> int:
        return len(self.labels)

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        workers, worker = (info.num_workers, info.id) if info is not None else (1, 0)
        wanted = 0
        for row, example in enumerate(self.clips.split):
            label = self.labels.get(row)
            if label is None:
                continue
            wanted += 1
            if (wanted - 1) % workers == worker:
                video = self.clips.reference(row, example[self.clips.column])
                item = self.transform({"video": [video], "label": [label]})
                yield {"pixel_values_videos": item["pixel_values_videos"][0], "labels": item["labels"][0]}
            if wanted == len(self.labels):
                return  # every wanted row seen: the rest of the stream is not read


def dataset_clip_paths(source: DatasetSource, split_name: str) -> list[str]:
    """The files of one split's video column, in row order (what `hesp-predict --dataset_name` labels): a column of
    paths (relative ones against `data_root` / `data_dir`), or a `Video` column whose rows are local files."""
    split = get_split(load_splits(source), split_name, source)
    kind = video_kind(split, split_name, source)
    if kind == "path":
        base = Path(source.data_root or source.data_dir or ".")
        return [str(Path(v) if Path(v).is_absolute() else base / v) for v in column_values(split, source.video_column)]
    clips = DatasetClips(split, source.video_column, kind, f"{source.short_name}[{split_name}]")
    paths = []
    for row, example in enumerate(clips.split):
        value = example[source.video_column]
        path = value.get("path") if isinstance(value, dict) else None
        if not path or not Path(path).is_file() or (isinstance(value, dict) and value.get("bytes")):
            raise ValueError(
                f"Row {row} of split '{split_name}' holds the video itself, not a local file: hesp-predict labels "
                "files; hesp-evaluate --dataset_name reads clips held as bytes."
            )
        paths.append(path)
    return paths
