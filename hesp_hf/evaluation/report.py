"""Evaluating a HESP model on an open-set test set: predictions through the `Trainer`, then metrics JSON, the curves
PNG and a confusion table, each written whole or not at all."""

import csv
import io
import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from transformers import Trainer

from ..atomic_files import write_text_atomic
from ..calibration import uncalibrated_logits
from ..metrics import open_set_analysis, open_set_metrics
from ..metrics.plots import draw_open_set_curves
from ..modeling.loss_hesp import ensemble_logits
from ..modeling.modeling_hesp import HESPVideoClassifierOutput


logger = logging.getLogger(__name__)


class OpenSetPredictions(NamedTuple):
    """A model's predictions on a dataset: the `(N, K + 1)` logits (before temperature scaling, as calibrating found
    them: `hesp_hf.calibration.uncalibrated_logits`), the `(N,)` known-ness scores and labels, and the
    `(N, K)` logits of each branch (`"clip"`, and `"reciprocal"` when the model has reciprocal points)."""

    logits: np.ndarray
    scores: np.ndarray
    labels: np.ndarray
    branch_logits: dict[str, np.ndarray]


METRICS = ("accuracy", "auroc", "oscr")

# The outputs an evaluation gathers, by name; every other field of `HESPVideoClassifierOutput` stays on the device.
GATHERED_OUTPUTS = ("logits", "open_set_score", "clip_logits", "reciprocal_logits")


def predict_open_set(trainer: Trainer, dataset: Any) -> OpenSetPredictions:
    """Predictions of `trainer.model` on a dataset, gathered over every process (a `HESPTrainer` from
    `hesp_hf.training`, whose predictions are named, so a new output field cannot mislabel the branches)."""
    ignore = [name for name in HESPVideoClassifierOutput.__dataclass_fields__ if name not in GATHERED_OUTPUTS]
    output = trainer.predict(dataset, ignore_keys=ignore, metric_key_prefix="predict")
    predictions = output.predictions
    if not isinstance(predictions, Mapping):
        raise TypeError(f"predict_open_set needs a HESPTrainer (named predictions), got {type(trainer).__name__}.")
    arrays = {name: np.asarray(value) for name, value in predictions.items()}
    branch_logits = {
        branch: arrays[f"{branch}_logits"] for branch in ("clip", "reciprocal") if f"{branch}_logits" in arrays
    }
    logits = uncalibrated_logits(arrays["logits"], trainer.model.config)
    return OpenSetPredictions(logits, arrays["open_set_score"], np.asarray(output.label_ids), branch_logits)


def branch_metrics(
    branch_logits: dict[str, np.ndarray], labels: np.ndarray, score: str = "max_logit"
) -> dict[str, dict[str, float]]:
    """ACC / AUROC / OSCR of each branch's own logits with the model's score: which branch ranks unknown clips best
    (the paper averages them; `config.inference_logits` picks one)."""
    branches = dict(branch_logits)
    if "reciprocal" in branches:
        branches["ensemble"] = ensemble_logits(branches["clip"], branches["reciprocal"])
    results = {}
    for name, logits in branches.items():
        metrics = open_set_metrics(logits, labels, score=score)
        results[name] = {key: float(metrics[key]) for key in ("accuracy", "auroc", "oscr")}
    return results


def confusion_table(logits: np.ndarray, labels: np.ndarray, label_names: list[str]) -> list[list]:
    """Rows: true class (known classes, then "unknown"); columns: the model's decision, the arg-max of its `K + 1`
    logits (its "unknown" column already encodes the calibrated threshold)."""
    num_known = len(label_names) - 1
    decisions = logits.argmax(axis=1)
    truth = np.where(labels < 0, num_known, labels)
    table = np.zeros((num_known + 1, num_known + 1), dtype=np.int64)
    np.add.at(table, (truth, decisions), 1)
    rows = zip(label_names, table, strict=True)
    return [["true \\ predicted", *label_names]] + [[name, *row.tolist()] for name, row in rows]


def write_open_set_report(
    output_dir: str | Path,
    logits: np.ndarray,
    labels: np.ndarray,
    label_names: list[str],
    threshold: float | None,
    title: str = "",
    extra: dict[str, Any] | None = None,
    prefix: str = "",
    score: str = "max_logit",
    branch_logits: dict[str, np.ndarray] | None = None,
) -> dict[str, Any]:
    """Write `{prefix}metrics.json`, `{prefix}curves.png` and `{prefix}confusion.csv` into `output_dir`; return the
    metrics. `label_names`: the model's `id2label` values (known classes, then "unknown"); `score`: the model's
    `config.open_set_score`; `branch_logits`: each branch's `(N, K)` logits, reported under `"branches"`."""
    output_dir = Path(output_dir)
    metrics, curves = open_set_analysis(logits, labels, score=score, has_unknown_column=True)
    metrics["score"] = score
    if branch_logits:
        metrics["branches"] = branch_metrics(branch_logits, labels, score)
    if threshold is not None:
        known = labels >= 0
        accepted = logits.argmax(axis=1) < logits.shape[1] - 1  # the model's own accept / reject decision
        metrics.update(
            unknown_threshold=float(threshold),
            known_accepted_share=float(accepted[known].mean()),
            unknown_rejected_share=float((~accepted[~known]).mean()),
        )
    metrics.update(extra or {})
    draw_open_set_curves(metrics, curves, output_dir / f"{prefix}curves.png", score, title or None)
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(confusion_table(logits, labels, label_names))
    write_text_atomic(output_dir / f"{prefix}confusion.csv", buffer.getvalue())
    # Last: a metrics.json means the report beside it is complete (the protocol reads it as "finished").
    write_text_atomic(output_dir / f"{prefix}metrics.json", json.dumps(metrics, indent=2) + "\n")
    logger.info(
        "%s accuracy=%.4f auroc=%.4f oscr=%.4f",
        title or "test",
        metrics["accuracy"],
        metrics["auroc"],
        metrics["oscr"],
    )
    return metrics


def mean_std(values: Sequence[float], digits: int) -> str:
    """`mean ± std` (sample std; 0 for a single value) of `values` to `digits` decimals."""
    values = np.asarray(values, dtype=float)
    spread = values.std(ddof=1) if values.size > 1 else 0.0
    return f"{values.mean():.{digits}f} ± {spread:.{digits}f}"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A Markdown table, one line per row, ending with a newline."""
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    return "\n".join([*lines, *("| " + " | ".join(row) + " |" for row in rows)]) + "\n"


def seed_table(runs: dict[str, dict[int, list[dict]]], data_seeds: list[int]) -> tuple[str, str]:
    """A quality table over data seeds x training seeds: `runs[method][data_seed]` lists each run's metrics.

    Returns Markdown (AUROC per data seed: mean ± std over the runs and the worst run; then ACC / AUROC / OSCR, the
    mean over data seeds of the per-seed means) and a CSV of every run."""
    header = ["method", *(f"AUROC, data seed {s}" for s in data_seeds), "ACC", "AUROC", "OSCR"]
    rows = []
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["method", "data_seed", "run", *METRICS])
    for name, per_seed in runs.items():
        cells = []
        for seed in data_seeds:
            values = np.array([run["auroc"] for run in per_seed.get(seed, [])])
            if values.size == 0:
                cells.append("—")
            elif values.size == 1:
                cells.append(f"{values[0]:.3f}")
            else:
                cells.append(f"{mean_std(values, 3)} (min {values.min():.3f})")
        for metric in METRICS:  # the mean over data seeds of the per-seed means
            means = [np.mean([run[metric] for run in per_seed[s]]) for s in data_seeds if per_seed.get(s)]
            cells.append(f"{np.mean(means):.3f}" if means else "—")
        rows.append([name, *cells])
        for seed in data_seeds:
            for index, run in enumerate(per_seed.get(seed, [])):
                writer.writerow([name, seed, index, *(run[m] for m in METRICS)])
    return markdown_table(header, rows), buffer.getvalue()


def write_seed_table(folder: Path, runs: dict[str, dict[int, list[dict]]], data_seeds: list[int], note: str) -> str:
    """`seed_table` written as `results-data-<seeds>.md` (with `note` below) and `.csv` in `folder`; returns the text."""
    table, table_csv = seed_table(runs, data_seeds)
    stem = "results-data-" + "-".join(map(str, data_seeds))
    write_text_atomic(Path(folder) / f"{stem}.md", table + note)
    write_text_atomic(Path(folder) / f"{stem}.csv", table_csv)
    return table + note
