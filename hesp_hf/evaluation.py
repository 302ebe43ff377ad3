"""Evaluating a HESP model on an open-set test set: predictions through the `Trainer`, then metrics JSON, the curves
PNG and a confusion table, each written whole or not at all."""

import csv
import io
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
from transformers import Trainer

from .atomic_files import write_text_atomic
from .metrics import open_set_analysis
from .metrics.plots import draw_open_set_curves


logger = logging.getLogger(__name__)


def predict_open_set(trainer: Trainer, dataset: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`(logits (N, K + 1), open_set_score (N,), labels (N,))` of a dataset, gathered over every process."""
    output = trainer.predict(dataset, metric_key_prefix="predict")
    predictions = output.predictions
    logits, scores = (predictions[0], predictions[1]) if isinstance(predictions, tuple) else (predictions, None)
    if scores is None:
        scores = logits[:, :-1].max(axis=1)
    return np.asarray(logits), np.asarray(scores), np.asarray(output.label_ids)


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
) -> dict[str, Any]:
    """Write `{prefix}metrics.json`, `{prefix}curves.png` and `{prefix}confusion.csv` into `output_dir`; return the
    metrics. `label_names`: the model's `id2label` values (known classes, then "unknown"); `score`: the model's
    `config.open_set_score`."""
    output_dir = Path(output_dir)
    metrics, curves = open_set_analysis(logits, labels, score=score, has_unknown_column=True)
    metrics["score"] = score
    if threshold is not None:
        known = labels >= 0
        accepted = logits.argmax(axis=1) < logits.shape[1] - 1  # the model's own accept / reject decision
        metrics.update(
            unknown_threshold=float(threshold),
            known_accepted_share=float(accepted[known].mean()),
            unknown_rejected_share=float((~accepted[~known]).mean()),
        )
    metrics.update(extra or {})
    write_text_atomic(output_dir / f"{prefix}metrics.json", json.dumps(metrics, indent=2) + "\n")
    draw_open_set_curves(metrics, curves, output_dir / f"{prefix}curves.png", score, title or None)
    buffer = io.StringIO()
    csv.writer(buffer).writerows(confusion_table(logits, labels, label_names))
    write_text_atomic(output_dir / f"{prefix}confusion.csv", buffer.getvalue())
    logger.info(
        "%s accuracy=%.4f auroc=%.4f oscr=%.4f",
        title or "test",
        metrics["accuracy"],
        metrics["auroc"],
        metrics["oscr"],
    )
    return metrics
