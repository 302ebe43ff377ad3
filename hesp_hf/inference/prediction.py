"""Prediction over many clips: decoding in DataLoader workers (or a thread, on 2 cores or fewer) while the model
runs on the previous batch, batched forward passes, one row per clip (top label or "unknown", known-ness score,
per-class probabilities, or the error that kept the clip from being read), resumable, and sharded over the
processes of `accelerate launch`.

    rows, summary = predict_clips(model, processor, list_clips("recordings/"), output="predictions.jsonl")

Decoding workers start from a fork server (as with `spawn`, the default on macOS and Windows): a script that calls
`predict_clips` with workers must keep its top-level code under `if __name__ == "__main__":` (the commands do).

Rows are appended to a per-process part file (`.<name>.part-<rank>-of-<n>.jsonl` beside the output) as each batch
ends, so an interrupted run loses at most one batch; at the end the first process merges the earlier output and
every part into `output` (written whole, in input order) and removes the parts. A run on the same output skips the
clips already there.
"""

import csv
import glob
import json
import logging
import math
import os
import queue
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from ..atomic_files import atomic_output
from ..calibration import known_p_value
from ..data.annotations import CSV_COLUMNS, IMAGE_SUFFIXES, VIDEO_SUFFIXES
from ..data.dataset import ClipTransform
from ..data.decoding import sample_clip
from ..modeling.face_cropping_hesp import shared_detector
from ..modeling.modeling_hesp import HESPForOpenSetVideoClassification
from ..modeling.video_processing_hesp import HESPVideoProcessor


logger = logging.getLogger(__name__)

OUTPUT_FORMATS = (".jsonl", ".csv")
LIST_SUFFIXES = (".txt", ".lst", ".list")


# ------------------------------------------------------------------------------------------------------ inputs
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
    lines = (line.split("#", 1)[0].strip() for line in path.read_text().splitlines())
    return [line for line in lines if line]


def _csv_paths(path: Path) -> list[str]:
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        column = CSV_COLUMNS[0]
        if reader.fieldnames is None or column not in reader.fieldnames:
            raise ValueError(f"{path}: a CSV of clips needs a '{column}' column, found {reader.fieldnames}.")
        return [row[column] for row in reader if row[column]]


def _resolve(path: str, base: Path) -> str:
    return path if Path(path).is_absolute() else str(base / path)


# ------------------------------------------------------------------------------------------------------ reading
class _ClipReader(Dataset):
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
            clip = sample_clip(self.clips[index], self.processor.num_frames)
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
        _ClipReader(clips, processor),
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


# ------------------------------------------------------------------------------------------------------ rows
@dataclass
class PredictionSummary:
    """What a run produced: counts per label, the unknown share, failures, throughput."""

    output: Path | None
    clips: int
    predicted_now: int
    from_earlier_runs: int
    failures: int
    label_counts: dict[str, int] = field(default_factory=dict)
    unknown_label: str = "unknown"
    seconds: float = 0.0

    @property
    def unknown_share(self) -> float:
        predicted = sum(self.label_counts.values())
        return self.label_counts.get(self.unknown_label, 0) / predicted if predicted else 0.0

    @property
    def clips_per_second(self) -> float:
        return self.predicted_now / self.seconds if self.seconds > 0 else 0.0

    def format(self) -> str:
        lines = [
            f"{self.clips} clips: {self.predicted_now} read now ({self.clips_per_second:.1f} clips/s), "
            f"{self.from_earlier_runs} from an earlier run; {self.failures} could not be read (their rows hold the "
            "error; a resumed run tries them again)",
            f"unknown share: {self.unknown_share:.3f}",
        ]
        lines += [f"  {label}: {count}" for label, count in sorted(self.label_counts.items(), key=lambda x: -x[1])]
        if self.output is not None:
            lines.append(f"rows: {self.output}")
        return "\n".join(lines)


def decisions(outputs: Any, config: Any) -> list[dict[str, Any]]:
    """Per row of a model output: the top `label` (a known class or the unknown label), `known`, the known-ness
    `score`, the `threshold` it is compared with, the clip's conformal `known_p_value` (None for a checkpoint without
    saved calibration scores) and the `probabilities` over the known classes (softmax of their logits divided by
    `config.probability_temperature`). One reading of the output for the predictor's rows, the timeline's windows
    and the app."""
    known = config.known_labels
    logits = outputs.logits.float()
    temperature = getattr(config, "probability_temperature", 1.0)
    probabilities = (logits[:, : len(known)] / temperature).softmax(dim=-1)
    top = logits[:, : len(known)].argmax(dim=-1)
    threshold = config.unknown_threshold
    found = []
    for row in range(len(logits)):
        score = float(outputs.open_set_score[row].float())
        # Decided from the config's threshold, not the output's "unknown" column: an export's graph holds the
        # threshold it was exported with, and `--known_acceptance` may have moved it since (hesp_hf.calibration).
        is_known = threshold is None or score >= threshold
        found.append(
            {
                "label": known[int(top[row])] if is_known else config.unknown_label,
                "known": is_known,
                "score": score,
                "threshold": threshold,
                "known_p_value": known_p_value(config, score),
                "probabilities": dict(zip(known, probabilities[row].tolist(), strict=True)),
            }
        )
    return found


def _rows_of(
    model: HESPForOpenSetVideoClassification,
    outputs: Any,
    items: list[dict],
    clips: list[str],
    describer: Any = None,
) -> list:
    rows = []
    for item, decision in zip(items, decisions(outputs, model.config), strict=True):
        rows.append(
            {
                "file": clips[item["index"]],
                "label": decision["label"],
                "known": decision["known"],
                "score": decision["score"],
                "threshold": decision["threshold"],
                "known_p_value": decision["known_p_value"],
                "truncated": item["truncated"],
                **({"face_found": item["face_found"]} if "face_found" in item else {}),
                "error": "",
                "probabilities": decision["probabilities"],
            }
        )
    unknown = [i for i, row in enumerate(rows) if not row["known"]]
    if describer is not None and unknown:  # what an unknown clip looks closest to, among the other expressions
        closest = describer.closest_unknown(outputs.video_embeds[unknown].float())  # empty: every expression known
        for index, (name, text, _) in zip(unknown, closest, strict=bool(closest)):
            rows[index]["closest_expression"], rows[index]["closest_description"] = name, text
    return rows


def _failed_row(clip: str, item: dict[str, Any]) -> dict[str, Any]:
    return {
        "file": clip,
        "label": "",
        "known": None,
        "score": None,
        "threshold": None,
        "known_p_value": None,
        "truncated": None,
        "error": item["error"],
        "probabilities": {},
    }


def _write_rows(handle: Any, rows: list[dict[str, Any]], form: str, labels: Sequence[str]) -> None:
    if form == ".jsonl":
        for row in rows:
            handle.write(json.dumps(row) + "\n")
        return
    writer = csv.DictWriter(handle, fieldnames=_csv_fields(labels), extrasaction="ignore")
    for row in rows:
        flat = {**row, **{f"p_{k}": v for k, v in (row.get("probabilities") or {}).items()}}
        writer.writerow({key: "" if value is None else value for key, value in flat.items()})


def _csv_fields(labels: Sequence[str]) -> list[str]:
    return (
        ["file", "label", "known", "score", "threshold", "known_p_value", "truncated", "face_found", "error"]
        + [
            "closest_expression",
            "closest_description",
        ]
        + [f"p_{label}" for label in labels]
    )


def read_rows(path: str | Path) -> list[dict[str, Any]]:
    """The rows of a prediction output (`.jsonl` or `.csv`). A last line cut off by an interrupted write is left out."""
    path = Path(path)
    if not path.exists():
        return []
    text = path.read_text()
    if not text.endswith("\n"):
        text = text[: text.rfind("\n") + 1]  # the torn tail of an interrupted append
    if _form_of(path) == ".jsonl":
        rows = []
        for number, line in enumerate(text.splitlines(), start=1):
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as error:
                raise ValueError(f"{path}:{number}: not a prediction row ({error}).") from error
        return rows
    reader = csv.DictReader(text.splitlines())
    if reader.fieldnames is None:
        return []
    if "file" not in reader.fieldnames:
        raise ValueError(f"{path}: not a prediction output (no 'file' column).")
    return [_from_csv(row) for row in reader]


def _from_csv(row: dict[str, str]) -> dict[str, Any]:
    """A CSV row with the types of a JSONL row (its `p_` columns as `probabilities`)."""

    def flag(value: str) -> bool | None:
        return None if value == "" else value == "True"

    def number(value: str) -> float | None:
        return None if value == "" else float(value)

    typed: dict[str, Any] = {
        "file": row["file"],
        "label": row.get("label", ""),
        "known": flag(row.get("known", "")),
        "score": number(row.get("score", "")),
        "threshold": number(row.get("threshold", "")),
        "known_p_value": number(row.get("known_p_value", "")),
        "truncated": flag(row.get("truncated", "")),
    }
    if row.get("face_found", ""):
        typed["face_found"] = flag(row["face_found"])
    for name in ("closest_expression", "closest_description"):
        if row.get(name, ""):
            typed[name] = row[name]
    typed["error"] = row.get("error", "")
    typed["probabilities"] = {k[2:]: float(v) for k, v in row.items() if k.startswith("p_") and v != ""}
    return typed


def _cut_torn_tail(path: Path) -> None:
    """Drop a last line an interrupted append left unfinished, so that new rows start on a line of their own."""
    if not path.exists():
        return
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        with path.open("r+b") as handle:
            handle.truncate(data.rfind(b"\n") + 1)


def _form_of(path: Path) -> str:
    if path.suffix.lower() not in OUTPUT_FORMATS:
        raise ValueError(f"Prediction output {path} must end in {' or '.join(OUTPUT_FORMATS)}.")
    return path.suffix.lower()


def _part_path(output: Path, rank: int, processes: int) -> Path:
    return output.with_name(f".{output.stem}.part-{rank}-of-{processes}{output.suffix}")


def _part_paths(output: Path) -> list[Path]:
    return sorted(output.parent.glob(f".{glob.escape(output.stem)}.part-*-of-*{output.suffix}"))


# ------------------------------------------------------------------------------------------------------ running
def _cores_per_process(processes: int) -> int:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // max(1, processes))


def default_num_workers(processes: int = 1) -> int:
    """Decoding workers per process: the cores this process may use, less one for the model, at most 8; none with 2
    cores or fewer, where decoding runs in a thread of this process instead (`_decoded_in_background`): a worker
    process starts in seconds and competes with the model for the same cores (measured on 2 cores, one run each,
    fresh process: demo checkpoint 29 clips/s with decoding between batches, 11 with a worker; ViT-B/32 on 720p clips
    1.15 against 0.80)."""
    cores = _cores_per_process(processes)
    return 0 if cores <= 2 else min(8, cores - 1)


def _decoded_in_background(batches: Any, depth: int = 2) -> Iterator[Any]:
    """The batches of `batches`, read up to `depth` ahead by a thread of this process, so decoding (PyAV, the
    processor's resizing) overlaps the model's forward pass without a worker process: both release the GIL for
    their heavy parts. Measured on 2 cores, demo checkpoint, 165 clips side by side: decoding alone 90.9 clips/s,
    decoding between batches 59.3, in this thread 85.8. An error while reading is raised here; leaving the loop early
    stops the thread."""
    ready: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    finished = object()

    def put(item: tuple[Any, BaseException | None]) -> bool:
        """Hand one item over; False once the consumer has stopped (then nobody takes it)."""
        while not stop.is_set():
            try:
                ready.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def read() -> None:
        # Decoding's own torch work (resizing) on one core: the setting is this thread's (OpenMP's is per thread), so
        # the model keeps its threads and the two stages do not oversubscribe the cores they share.
        torch.set_num_threads(1)
        try:
            for batch in batches:
                if not put((batch, None)):
                    return
            put((finished, None))
        except BaseException as error:  # noqa: BLE001 -- handed to the consuming thread
            put((finished, error))

    reader = threading.Thread(target=read, name="hesp-decode", daemon=True)
    reader.start()
    try:
        while True:
            batch, error = ready.get()
            if error is not None:
                raise error
            if batch is finished:
                return
            yield batch
    finally:
        stop.set()
        reader.join()


def model_threads(num_workers: int, processes: int = 1) -> int:
    """CPU threads for the model while decoding is the slower stage: the cores its decoding workers leave."""
    return max(1, _cores_per_process(processes) - num_workers)


class _CPUThreads:
    """The model's CPU threads, set by which stage is slower (restored at the end).

    While the model waits for decoded clips it keeps to the cores the workers leave (`model_threads`): more threads
    would only take cores from decoding (measured on 2 cores, tiny demo model: 49 clips/s with 1 thread, 38 with 2).
    Once batches are always ready when the model asks (the model is the slower stage), it takes every core of the
    process, and the workers get what it leaves (ViT-B/32 on 720p clips: 0.72 clips/s with 1 thread, 1.21 with 2).
    """

    def __init__(self, device: torch.device, num_workers: int, processes: int):
        self.active = device.type == "cpu" and num_workers > 0
        self.before = torch.get_num_threads()
        self.low, self.high = model_threads(num_workers, processes), _cores_per_process(processes)
        self.waited = self.computed = 0.0
        self.batches = 0
        if self.active:
            torch.set_num_threads(self.low)

    def observe(self, waited: float, computed: float) -> None:
        """Seconds the model waited for this batch, and spent on it; decided over the last few batches (not the
        first, which waits for the workers to start), with a margin each way so that it does not flip on noise."""
        self.batches += 1
        if not self.active or self.batches == 1:
            return
        self.waited, self.computed = 0.5 * self.waited + waited, 0.5 * self.computed + computed
        current = torch.get_num_threads()
        if current != self.high and self.waited < 0.05 * self.computed:
            torch.set_num_threads(self.high)
        elif current != self.low and self.waited > 0.25 * self.computed:
            torch.set_num_threads(self.low)

    def restore(self) -> None:
        if self.active:
            torch.set_num_threads(self.before)


def predict_clips(
    model: HESPForOpenSetVideoClassification,
    processor: HESPVideoProcessor,
    clips: Sequence[str | Path],
    output: str | Path | None = None,
    *,
    batch_size: int = 8,
    num_workers: int | None = None,
    bf16: bool = False,
    resume: bool = True,
    progress: bool = True,
    describer: Any = None,
) -> tuple[list[dict[str, Any]], PredictionSummary]:
    """Predict every clip; returns its rows (in the order of `clips`) and a summary.

    Under `accelerate launch --num_processes N` each process predicts every N-th clip on its own device, and the
    first process writes the one merged `output` (needed then); every process returns the merged rows.
    `num_workers`: decoding worker processes (default: the cores left after the model, up to 8; 0: decoding in a
    thread of this process, the default with 2 cores or fewer). `bf16`: bfloat16 autocast for the forward pass
    (probabilities and scores are returned in float32). `resume`: skip clips already
    in `output` (or in the parts an interrupted run left); without it they are predicted again. `describer` (a
    `hesp_hf.inference.zero_shot.CandidateScorer`): a clip decided unknown gets `closest_expression` and
    `closest_description`, the expression outside the model's classes whose description lies closest.
    """
    from accelerate import PartialState

    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
    state = PartialState()
    output = Path(output) if output is not None else None
    if output is None and state.num_processes > 1:
        raise ValueError("Sharded prediction (several processes) needs an output file to merge the rows into.")
    form = _form_of(output) if output is not None else ".jsonl"
    clips = [str(clip) for clip in dict.fromkeys(str(c) for c in clips)]
    labels = model.config.known_labels

    # Rows of earlier runs: the output and the parts an interrupted run left. Kept in the merged output either way;
    # with `resume` their clips are not predicted again.
    earlier: dict[str, dict] = {}
    stale_parts = _part_paths(output) if output is not None else []
    for path in [output, *stale_parts] if output is not None else []:
        earlier.update({row["file"]: row for row in read_rows(path)})
    if resume:
        _check_same_model(output, earlier, model.config)
    # Clips that failed before are tried again: a missing dependency or a file being copied must not stick.
    todo = [clip for clip in clips if not resume or clip not in earlier or earlier[clip].get("error")]
    if processor.face_crop:
        shared_detector(processor.face_min_score)  # a missing face extra fails here, once, not in every clip's row
    state.wait_for_everyone()  # every process has read the same earlier rows before any writes new ones
    if not resume:
        if state.is_main_process:
            for stale in stale_parts:  # their rows are in `earlier`; new rows must not be appended to old ones
                stale.unlink(missing_ok=True)
        state.wait_for_everyone()
    mine = todo[state.process_index :: state.num_processes]
    if num_workers is None:
        num_workers = default_num_workers(state.num_processes)

    device = state.device
    model = model.to(device).eval()
    reader = clip_loader(mine, processor, batch_size, num_workers, pin_memory=device.type == "cuda")
    part = _part_path(output, state.process_index, state.num_processes) if output is not None else None
    if part is not None:
        _cut_torn_tail(part)
    new_rows: list[dict[str, Any]] = []
    started = time.perf_counter()
    bar = _progress_bar(len(mine), progress and state.is_local_main_process)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else nullcontext()
    threads = _CPUThreads(device, num_workers, state.num_processes)
    batches = iter(reader) if num_workers else _decoded_in_background(reader)
    with ExitStack() as cleanup:
        cleanup.callback(threads.restore)  # also when a batch fails
        if not num_workers:
            cleanup.callback(batches.close)  # stops the decoding thread when a batch fails
        handle = cleanup.enter_context(part.open("a", newline="")) if part is not None else None
        while True:
            asked = time.perf_counter()
            items = next(batches, None)
            if items is None:
                break
            got = time.perf_counter()
            good = [item for item in items if item["pixel_values"] is not None]
            rows_by_index = {item["index"]: _failed_row(mine[item["index"]], item) for item in items}
            if good:
                pixels = torch.stack([item["pixel_values"] for item in good]).to(device, non_blocking=True)
                with torch.inference_mode(), autocast:
                    outputs = model(pixel_values_videos=pixels)
                for item, row in zip(good, _rows_of(model, outputs, good, mine, describer), strict=True):
                    rows_by_index[item["index"]] = row
            threads.observe(got - asked, time.perf_counter() - got)
            rows = [rows_by_index[item["index"]] for item in items]
            new_rows.extend(rows)
            if handle is not None:
                if handle.tell() == 0:
                    _write_header(handle, form, labels)
                _write_rows(handle, rows, form, labels)
                handle.flush()  # an interrupted run keeps every finished batch
            if bar is not None:
                bar.update(len(items))
    if bar is not None:
        bar.close()
    seconds = time.perf_counter() - started
    state.wait_for_everyone()

    if output is None:
        merged = new_rows
    else:
        if state.is_main_process:
            _merge(output, clips, earlier, form, labels)
        state.wait_for_everyone()
        merged = read_rows(output)
    by_file = {row["file"]: row for row in merged}
    rows = [by_file[clip] for clip in clips if clip in by_file]
    summary = _summarize(rows, model.config.unknown_label, output, len(todo), seconds)
    if state.is_main_process:
        logger.info("%s", summary.format())
    return rows, summary


def _check_same_model(output: Path | None, earlier: dict[str, dict], config: Any) -> None:
    """Resuming appends to rows an earlier run wrote; they must come from the same model: the same known classes
    (the probability columns) and the same calibrated threshold, which differs between any two trained checkpoints."""
    done = [row for row in earlier.values() if not row.get("error")]
    if not done:
        return
    row = done[0]
    labels, threshold, ours = list(row.get("probabilities") or {}), row.get("threshold"), config.unknown_threshold
    same_threshold = threshold == ours or (
        None not in (threshold, ours) and math.isclose(threshold, ours, rel_tol=1e-6)
    )
    if labels != list(config.known_labels) or not same_threshold:
        raise ValueError(
            f"{output} holds predictions of another model (classes {labels}, threshold {threshold}; this one: "
            f"{list(config.known_labels)}, {config.unknown_threshold}): write to another output, or predict every "
            "clip again with resume off (--no_resume)."
        )


def _merge(output: Path, clips: list[str], earlier: dict[str, dict], form: str, labels: Sequence[str]) -> None:
    """Write `output` whole: the rows of `clips` in their order, then rows of earlier runs for other clips."""
    rows = dict(earlier)
    parts = _part_paths(output)
    for part in parts:
        rows.update({row["file"]: row for row in read_rows(part)})
    ordered = [rows.pop(clip) for clip in clips if clip in rows] + list(rows.values())
    with atomic_output(output) as temporary, temporary.open("w", newline="") as handle:
        _write_header(handle, form, labels)
        _write_rows(handle, ordered, form, labels)
    for part in parts:
        part.unlink()


def _write_header(handle: Any, form: str, labels: Sequence[str]) -> None:
    if form == ".csv":
        csv.DictWriter(handle, fieldnames=_csv_fields(labels)).writeheader()


def _summarize(rows: list[dict], unknown: str, output: Path | None, now: int, seconds: float) -> PredictionSummary:
    failures = sum(1 for row in rows if row.get("error"))
    counts = Counter(row["label"] for row in rows if not row.get("error"))
    return PredictionSummary(
        output=output,
        clips=len(rows),
        predicted_now=now,
        from_earlier_runs=len(rows) - now,
        failures=failures,
        label_counts=dict(counts),
        unknown_label=unknown,
        seconds=seconds,
    )


def _progress_bar(total: int, enabled: bool) -> Any:
    if not enabled or total == 0:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="clip", desc="predicting", smoothing=0.1)
