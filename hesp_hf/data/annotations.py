"""Reading the three annotation layouts users have on disk, and checking them against the disk before training.

1. frame folders + list file: `path/to/frames_dir num_frames label_index [label_text]` per line;
2. video files + CSV: `video_path,label` (a class name or an index), paths relative to a root;
3. class folders: `root/<class name>/<clip>.{mp4,avi,mkv,mov,webm}`.
Every problem found is reported at once, each with its file and line.
"""

import csv
import io
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .presets import DatasetPreset


VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".mov", ".webm")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


@dataclass(frozen=True)
class ClipRecord:
    """One annotated clip: `path` (a video file or a folder of frames), its class index in preset order (0-based),
    the frame count the list file gives (None when not given), and where it was annotated (`source`, `line`).
    After the open-set protocol, `label` is re-indexed and `original_label` keeps the preset index. A clip read from a
    `datasets` split carries that split as `origin` and its position there as `row` (`path` then names it)."""

    path: str
    label: int
    num_frames: int | None
    source: str
    line: int
    original_label: int | None = None
    row: int | None = None
    origin: Any = field(default=None, compare=False, repr=False)


class AnnotationError(ValueError):
    """Every problem of an annotation, one per line of the message, each naming its file and line."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__(f"{len(problems)} annotation problem(s):\n" + "\n".join(f"  - {p}" for p in problems))


CSV_COLUMNS = ("video_path", "label")


def layout_of(annotation: str | Path) -> str:
    """`"list"`, `"csv"` or `"folders"`, from what `annotation` is."""
    annotation = Path(annotation)
    if annotation.is_dir():
        return "folders"
    if annotation.suffix.lower() == ".csv":
        return "csv"
    return "list"


def read_annotation(
    annotation: str | Path, preset: DatasetPreset, root: str | Path | None = None, check_disk: bool = True
) -> list[ClipRecord]:
    """Read an annotation in any of the three layouts and check it; raises [`AnnotationError`] listing every
    problem (missing clip, unknown label name, label index out of range, empty list, duplicate entries, a clip with
    zero frames)."""
    annotation = Path(annotation)
    if not annotation.exists():
        raise AnnotationError([f"{annotation}: annotation file or folder does not exist"])
    root = Path(root) if root is not None else (annotation if annotation.is_dir() else annotation.parent)
    readers = {"list": _read_list, "csv": _read_csv, "folders": _read_class_folders}
    records, problems = readers[layout_of(annotation)](annotation, preset, root)
    if not records and not problems:
        problems.append(f"{annotation}: no clips annotated (empty list)")
    seen: dict[str, ClipRecord] = {}
    for record in records:
        if record.path in seen:
            first = seen[record.path]
            problems.append(
                f"{record.source}:{record.line}: duplicate entry {record.path} (first at line {first.line})"
            )
        else:
            seen[record.path] = record
    if check_disk:
        problems.extend(_check_on_disk(records))
    if problems:
        raise AnnotationError(problems)
    return records


def _label_index(value: str, preset: DatasetPreset, where: str) -> tuple[int | None, str | None]:
    """A label field (name or index in the file's numbering) as a 0-based class index, or an error message.

    Returns `(None, None)` for a label the dataset excludes (DFEW's 0: not single-labelled).
    """
    value = value.strip()
    try:
        number = int(value)
    except ValueError:
        lowered = {name.lower(): i for i, name in enumerate(preset.class_names)}
        if value.lower() in lowered:
            return lowered[value.lower()], None
        return None, f"{where}: unknown label name '{value}' (expected one of {list(preset.class_names)})"
    if number in preset.excluded_labels:
        return None, None
    index = number - preset.label_base
    if not 0 <= index < preset.num_classes:
        first, last = preset.label_base, preset.label_base + preset.num_classes - 1
        return None, f"{where}: label index {number} out of range {first}..{last} for '{preset.name}'"
    return index, None


def read_text_file(path: Path) -> str:
    """A user's list or CSV file as text: UTF-8, with or without the byte-order mark that spreadsheet programs write
    ("CSV UTF-8"); a byte that is not UTF-8 is one line naming the file and its line."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        raise ValueError(
            f"{path}:{line}: not UTF-8 text (byte 0x{data[error.start]:02x}): save the file as UTF-8."
        ) from None


def _read_list(path: Path, preset: DatasetPreset, root: Path) -> tuple[list[ClipRecord], list[str]]:
    records, problems = [], []
    for number, line in enumerate(read_text_file(path).splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        where = f"{path}:{number}"
        fields = line.split()
        if len(fields) < 3:
            problems.append(f"{where}: expected 'path num_frames label_index [label_text]', got '{line.strip()}'")
            continue
        try:
            num_frames = int(fields[1])
        except ValueError:
            problems.append(f"{where}: num_frames must be an integer, got '{fields[1]}'")
            continue
        if num_frames < 1:
            problems.append(f"{where}: clip {fields[0]} has {num_frames} frames")
            continue
        label, problem = _label_index(fields[2], preset, where)
        if problem:
            problems.append(problem)
        elif label is not None:
            records.append(ClipRecord(str(root / fields[0]), label, num_frames, str(path), number))
    return records, problems


def _read_csv(path: Path, preset: DatasetPreset, root: Path) -> tuple[list[ClipRecord], list[str]]:
    records, problems = [], []
    with io.StringIO(read_text_file(path), newline="") as handle:
        reader = csv.DictReader(handle)
        columns = [name.strip() for name in reader.fieldnames or []]
        duplicated = sorted({name for name in columns if columns.count(name) > 1})
        unexpected = [name for name in columns if name not in CSV_COLUMNS]
        missing = [name for name in CSV_COLUMNS if name not in columns]
        if duplicated or unexpected or missing:  # a repeated 'label' column silently took the last one
            details = [f"{what} {names}" for what, names in (("repeated", duplicated), ("unexpected", unexpected),
                       ("missing", missing)) if names]  # fmt: skip
            return [], [f"{path}:1: the header must be exactly {list(CSV_COLUMNS)} (any order); {'; '.join(details)}"]
        reader.fieldnames = columns
        for number, row in enumerate(reader, start=2):
            where = f"{path}:{number}"
            if not (row.get("video_path") or "").strip():
                problems.append(f"{where}: empty video_path")
                continue
            label, problem = _label_index(row.get("label") or "", preset, where)
            if problem:
                problems.append(problem)
            elif label is not None:
                records.append(ClipRecord(str(root / row["video_path"].strip()), label, None, str(path), number))
    return records, problems


def _read_class_folders(path: Path, preset: DatasetPreset, root: Path) -> tuple[list[ClipRecord], list[str]]:
    records, problems = [], []
    folders = {child.name.lower(): child for child in sorted(path.iterdir()) if child.is_dir()}
    known = {name.lower() for name in preset.class_names}
    for extra in sorted(set(folders) - known):
        problems.append(
            f"{folders[extra]}: unknown class folder '{folders[extra].name}' (expected {list(preset.class_names)})"
        )
    for index, name in enumerate(preset.class_names):
        folder = folders.get(name.lower())
        if folder is None:
            continue
        for clip in sorted(folder.iterdir()):
            if clip.suffix.lower() in VIDEO_SUFFIXES or (clip.is_dir() and frame_files(clip)):
                records.append(ClipRecord(str(clip), index, None, str(folder), 0))
    return records, problems


def frame_files(folder: str | Path) -> list[Path]:
    """A frame folder's images in time order (sorted names)."""
    return sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def _check_on_disk(records: list[ClipRecord]) -> list[str]:
    problems = []
    for record in records:
        path = Path(record.path)
        where = f"{record.source}:{record.line}" if record.line else record.source
        if not path.exists():
            problems.append(f"{where}: missing clip {path}")
        elif path.is_dir():
            if not frame_files(path):
                problems.append(f"{where}: clip {path} has zero frames (no images in the folder)")
        elif path.stat().st_size == 0:
            problems.append(f"{where}: clip {path} has zero frames (empty file)")
    return problems


def class_counts(records: list[ClipRecord]) -> Counter:
    return Counter(record.label for record in records)
