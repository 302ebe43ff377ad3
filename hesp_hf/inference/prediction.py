"""Prediction over many clips: decoding in DataLoader workers (or a thread, on 2 cores or fewer) while the model
runs on the previous batch, batched forward passes, one row per clip (top label or "unknown", known-ness score,
per-class probabilities, or the error that kept the clip from being read), resumable, and sharded over the
processes of `accelerate launch`.

    rows, summary = predict_clips(model, processor, list_clips("recordings/"), output="predictions.jsonl")

Finding and reading the clips is `clips.py` (decoding workers start from a fork server: a script that calls
`predict_clips` with workers keeps its top-level code under `if __name__ == "__main__":`); how decoding and the model
share the cores, `background.py`; the reading of a model output into a decision, `decisions.py`. This module keeps
the rows (their formats, resuming, merging the parts of several processes) and the orchestration.

Rows are appended to a per-process part file (`.<name>.part-<rank>-of-<n>.jsonl` beside the output) as each batch
ends, so an interrupted run loses at most one batch; at the end the first process merges the earlier output and
every part into `output` (written whole, in input order) and removes the parts. A run on the same output skips the
clips already there.
"""

import csv
import glob
import io
import json
import logging
import math
import time
from collections import Counter
from collections.abc import Sequence
from contextlib import ExitStack, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..atomic_files import atomic_output
from ..modeling.face_cropping_hesp import shared_detector
from ..modeling.modeling_hesp import HESPForOpenSetVideoClassification
from ..modeling.video_processing_hesp import HESPVideoProcessor
from .background import CPUThreads, decoded_in_background, default_num_workers
from .clips import clip_loader, list_clips
from .decisions import decisions


logger = logging.getLogger(__name__)

__all__ = ["PredictionSummary", "list_clips", "predict_clips", "read_rows"]  # list_clips: the usual first step

OUTPUT_FORMATS = (".jsonl", ".csv")


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
    """The rows of a prediction output (`.jsonl` or `.csv`). A last line cut off by an interrupted write (no newline
    and not a whole row) is left out; a whole last row without its newline is kept."""
    path = Path(path)
    if not path.exists():
        return []
    form = _form_of(path)
    text = path.read_text()
    if _has_torn_tail(text, form):
        logger.warning("%s: left out its unfinished last line (a write that was interrupted).", path)
        text = text[: text.rfind("\n") + 1]
    if form == ".jsonl":
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


def _has_torn_tail(text: str, form: str) -> bool:
    """Whether `text` ends in a line an interrupted append left unfinished: no newline, and not a whole row. Only a
    part file can be torn (outputs are written whole), but an output edited by hand or written by another tool may
    lack its last newline, and that row must not be lost."""
    if not text or text.endswith("\n"):
        return False
    last = text[text.rfind("\n") + 1 :]
    if form == ".jsonl":
        try:
            row = json.loads(last)
        except json.JSONDecodeError:
            return True
        return not (isinstance(row, dict) and "file" in row)
    try:
        records = list(csv.reader(io.StringIO(text)))
    except csv.Error:  # a quoted field cut open
        return True
    if len(records) < 2 or len(records[-1]) != len(records[0]):
        return True  # a header alone, or a row cut before its last column
    try:
        row = _from_csv(dict(zip(records[0], records[-1], strict=True)))
    except (KeyError, ValueError):
        return True
    # The last column is a probability: a row cut inside it still parses, but its probabilities no longer sum to 1.
    probabilities = row["probabilities"]
    return not row["error"] and not math.isclose(sum(probabilities.values()), 1.0, abs_tol=1e-3)


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
    """Drop a last line an interrupted append left unfinished, so that new rows start on a line of their own; a whole
    last row without its newline (read as a row by `read_rows`) gets its newline instead."""
    if not path.exists():
        return
    data = path.read_bytes()
    if not data or data.endswith(b"\n"):
        return
    if _has_torn_tail(data.decode(), _form_of(path)):
        with path.open("r+b") as handle:
            handle.truncate(data.rfind(b"\n") + 1)
    else:
        with path.open("ab") as handle:
            handle.write(b"\n")


def _form_of(path: Path) -> str:
    if path.suffix.lower() not in OUTPUT_FORMATS:
        raise ValueError(f"Prediction output {path} must end in {' or '.join(OUTPUT_FORMATS)}.")
    return path.suffix.lower()


def _part_path(output: Path, rank: int, processes: int) -> Path:
    return output.with_name(f".{output.stem}.part-{rank}-of-{processes}{output.suffix}")


def _part_paths(output: Path) -> list[Path]:
    return sorted(output.parent.glob(f".{glob.escape(output.stem)}.part-*-of-*{output.suffix}"))


# ------------------------------------------------------------------------------------------------------ running
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

    Under `accelerate launch --num_processes N` each process predicts every N-th batch on its own device, and the
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
    # Clips that failed before are tried again: a missing dependency or a file being copied must not stick.
    todo = [clip for clip in clips if not resume or clip not in earlier or earlier[clip].get("error")]
    # The earlier rows that stay in the output, with or without `resume`: one output never mixes two models' rows.
    predicted_again = set(todo)
    _check_same_model(output, [row for file, row in earlier.items() if file not in predicted_again], model.config)
    if processor.face_crop:
        shared_detector(processor.face_min_score)  # a missing face extra fails here, once, not in every clip's row
    if output is not None:
        _make_folder_of(output)
    state.wait_for_everyone()  # every process has read the same earlier rows before any writes new ones
    if not resume:
        if state.is_main_process:
            for stale in stale_parts:  # their rows are in `earlier`; new rows must not be appended to old ones
                stale.unlink(missing_ok=True)
        state.wait_for_everyone()
    # Every N-th batch, not every N-th clip: each process's batches are the very batches one process would form, so
    # N processes compute what one computes (batched matrix products round differently on other batch mixes).
    batches_todo = [todo[start : start + batch_size] for start in range(0, len(todo), batch_size)]
    mine = [clip for batch in batches_todo[state.process_index :: state.num_processes] for clip in batch]
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
    threads = CPUThreads(device, num_workers, state.num_processes)
    batches = iter(reader) if num_workers else decoded_in_background(reader)
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


def _check_same_model(output: Path | None, kept: list[dict[str, Any]], config: Any) -> None:
    """The earlier rows that stay in `output` (`kept`) must come from this model: the same known classes (the
    probability columns) and the same calibrated threshold, which differs between any two trained checkpoints. Rows
    holding an error carry no model and fit any."""
    labels, ours = list(config.known_labels), config.unknown_threshold
    foreign = [row for row in kept if not row.get("error") and not _same_model(row, labels, ours)]
    if not foreign:
        return
    first = foreign[0]
    raise ValueError(
        f"{output} holds predictions of another model for {len(foreign)} clip(s) this run would keep (the first, "
        f"{first['file']}: classes {list(first.get('probabilities') or {})}, threshold {first.get('threshold')}; "
        f"this model: {labels}, {ours}): write to another output, or predict all of them again with this model "
        "(--no_resume, with those clips among the inputs)."
    )


def _same_model(row: dict[str, Any], labels: list[str], threshold: float | None) -> bool:
    theirs = row.get("threshold")
    same_threshold = theirs == threshold or (
        None not in (theirs, threshold) and math.isclose(theirs, threshold, rel_tol=1e-6)
    )
    return list(row.get("probabilities") or {}) == labels and same_threshold


def _make_folder_of(output: Path) -> None:
    """Create the output's folder, where the parts go too: a new folder is what users expect of an output path."""
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ValueError(
            f"Prediction output {output}: its folder {output.parent} cannot be created ({error.strerror})."
        ) from error


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
