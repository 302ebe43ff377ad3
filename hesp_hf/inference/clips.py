"""The clips of a batch run: finding them (`list_clips`: files, folders of frames, globs, list files, CSVs) and
reading each into model input in DataLoader workers (`clip_loader`), one bad file recorded in its row instead of
stopping the run.

Decoding workers start from a fork server (as with `spawn`, the default on macOS and Windows): a script that reads
clips with workers must keep its top-level code under `if __name__ == "__main__":` (the commands do).
"""

import csv
import glob
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from torch.utils.data import DataLoader, Dataset

from ..data.annotations import CSV_COLUMNS, IMAGE_SUFFIXES, VIDEO_SUFFIXES, read_text_file
from ..data.dataset import ClipTransform
from ..data.decoding import sample_clip
from ..modeling.video_processing_hesp import HESPVideoProcessor


LIST_SUFFIXES = (".txt", ".lst", ".list")


def list_clips(sources: str | Path | Sequence[str | Path], root: str | Path | None = None) -> list[str]:
    """The clips named by `sources`, each one of: a video file; a folder (its video files and its folders of frame
    images, recursively, sorted); a glob pattern; a list file (`.txt`/`.lst`/`.list`: the first field of each line,
    as in DFEW/AFEW split lists; `#` starts a comment); a CSV annotation (its `video_path` column). Relative paths
    in a list or CSV are resolved against `root` (default: the file's folder). Duplicates are kept once."""
    if isinstance(sources, (str, Path)):
        sources = [sources]
    clips: list[str] = []
    for source in sources:
        clips.extend(_clips_of(Path(source), root))
    unique = list(dict.fromkeys(clips))
    if not unique:
        raise FileNotFoundError(f"No clips found in {', '.join(map(str, sources))}.")
    return unique


def _clips_of(source: Path, root: str | Path | None) -> list[str]:
    if source.is_dir():
        if _holds_images(source):
            return [str(source)]  # itself a clip: a folder of frames
        found = [p for p in source.rglob("*") if p.suffix.lower() in VIDEO_SUFFIXES and p.is_file()]
        found += [p for p in source.rglob("*") if p.is_dir() and _holds_images(p)]
        if not found:
            raise FileNotFoundError(
                f"Folder {source} holds no video files ({', '.join(VIDEO_SUFFIXES)}) and no folders of frames."
            )
        return sorted(str(p) for p in found)
    if source.is_file():
        suffix = source.suffix.lower()
        base = Path(root) if root is not None else source.parent
        if suffix in LIST_SUFFIXES:
            return [_resolve(line.split()[0], base) for line in _content_lines(source)]
        if suffix == ".csv":
            return [_resolve(path, base) for path in _csv_paths(source)]
        return [str(source)]
    if any(character in str(source) for character in "*?["):
        matches = sorted(glob.glob(str(source), recursive=True))
        if not matches:
            raise FileNotFoundError(f"The pattern {source} matches no file.")
        return [clip for match in matches for clip in _clips_of(Path(match), root)]
    raise FileNotFoundError(f"{source} does not exist (expected a video, a folder, a glob, a list file or a CSV).")


def _holds_images(folder: Path) -> bool:
    return any(p.suffix.lower() in IMAGE_SUFFIXES for p in folder.iterdir())


def _content_lines(path: Path) -> list[str]:
    lines = (line.split("#", 1)[0].strip() for line in read_text_file(path).splitlines())
    return [line for line in lines if line]


def _csv_paths(path: Path) -> list[str]:
    with io.StringIO(read_text_file(path), newline="") as handle:
        reader = csv.DictReader(handle)
        column = CSV_COLUMNS[0]
        if reader.fieldnames is None or column not in reader.fieldnames:
            raise ValueError(f"{path}: a CSV of clips needs a '{column}' column, found {reader.fieldnames}.")
        return [row[column] for row in reader if row[column]]


def _resolve(path: str, base: Path) -> str:
    return path if Path(path).is_absolute() else str(base / path)


class ClipReader(Dataset):
    """Clip `i` -> its model input `(T, C, H, W)`, or the error that kept it from being read (never raises: one bad
    file must not stop an archive run). Runs in the DataLoader workers."""

    def __init__(self, clips: Sequence[str], processor: HESPVideoProcessor):
        self.clips = list(clips)
        self.processor = processor
        self.transform = ClipTransform(processor, training=False)  # the data path's frames -> model input

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, index: int) -> dict[str, Any]:
        item: dict[str, Any] = {"index": index, "pixel_values": None, "error": "", "truncated": False}
        try:
            # Converted at the size the next step needs (the model's input, or the face crop's): memory follows the
            # model, not the footage, in every worker.
            clip = sample_clip(self.clips[index], self.processor.num_frames, shortest_edge=self.transform.decode_edge)
            frames = clip.frames
            item["truncated"] = bool(clip.truncated)
            if self.processor.face_crop:
                track = self.processor.track_face(frames)
                item["face_found"] = track.found
                frames = self.processor.crop_to_face(frames, track)
            item["pixel_values"] = self.transform.process(frames)
        except Exception as error:  # noqa: BLE001 -- recorded in the clip's row instead
            item["error"] = f"{type(error).__name__}: {' '.join(str(error).split())}"
        return item


def clip_loader(
    clips: Sequence[str], processor: HESPVideoProcessor, batch_size: int, num_workers: int, pin_memory: bool = False
) -> DataLoader:
    """Batches (lists) of items `{"index", "pixel_values" (or None), "error", "truncated"[, "face_found"]}` for
    `clips`, in order, decoded by `num_workers` worker processes (0: in this process)."""
    return DataLoader(
        ClipReader(clips, processor),
        batch_size=batch_size,
        num_workers=num_workers,
        collate_fn=_keep_items,
        worker_init_fn=_single_threaded_worker if num_workers else None,
        pin_memory=pin_memory,
        # Not `fork`: a worker forked while another thread of this process holds a lock (an ONNX Runtime or OpenCV
        # pool, the allocator's background thread) can wait on it forever (seen in the test suite). Workers start
        # from a clean server process instead, a second or two once per run.
        multiprocessing_context=_worker_context() if num_workers else None,
    )


def _worker_context() -> Any:
    import multiprocessing

    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    # The server imports the reader's module (torch, transformers, PyAV) once; each worker is a fork of it.
    context.set_forkserver_preload([__name__])
    return context


def _keep_items(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return items


def _single_threaded_worker(_: int) -> None:
    """DataLoader workers decode one clip each: extra threads (OpenCV's, for the face detector) only contend."""
    try:
        import cv2

        cv2.setNumThreads(1)
    except ImportError:
        pass
