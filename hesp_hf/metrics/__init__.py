"""Open-set metrics: ACC / AUROC / OSCR as pure functions, as an `evaluate` module, and as plots."""

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ..modeling.modeling_hesp import UNKNOWN_LABEL_ID
from .oscr.oscr import (
    SCORES,
    OpenSetCurves,
    ScoreName,
    known_class_predictions,
    open_set_analysis,
    open_set_curves,
    open_set_metrics,
    oscr_curve,
)
from .plots import plot_open_set_curves


OSCR_METRIC_PATH = Path(__file__).parent / "oscr"


def load_oscr_metric(**kwargs: Any):
    """The OSCR metric as an `evaluate.Metric`, loaded offline from this package's folder."""
    import evaluate

    return evaluate.load(str(OSCR_METRIC_PATH), **kwargs)


def trainer_compute_metrics(unknown_label_id: int = UNKNOWN_LABEL_ID, score: ScoreName = "max_logit"):
    """A `Trainer(compute_metrics=...)` function for HESP models: takes the model's `(N, K + 1)` logits (the first
    prediction array) and the labels, and returns accuracy, AUROC, OSCR, FPR at 95% TPR and `oscr_plus_auroc` (the
    model-selection criterion). On data without unknown clips, where AUROC and OSCR are undefined, it returns the
    accuracy alone."""

    def compute_metrics(eval_prediction: Any) -> dict[str, float | int]:
        predictions = eval_prediction.predictions
        if isinstance(predictions, Mapping):  # HESPTrainer: outputs by name
            logits = np.asarray(predictions["logits"])
        else:  # a stock Trainer: `logits` is the first output field
            logits = np.asarray(predictions[0] if isinstance(predictions, (tuple, list)) else predictions)
        labels = np.asarray(eval_prediction.label_ids)
        if not (labels == unknown_label_id).any():
            known_logits = logits[:, :-1]
            return {"accuracy": float((known_logits.argmax(axis=1) == labels).mean()), "num_known": int(len(labels))}
        metrics = open_set_metrics(logits, labels, unknown_label_id, score, has_unknown_column=True)
        return {**metrics, "oscr_plus_auroc": metrics["oscr"] + metrics["auroc"]}

    return compute_metrics


__all__ = [
    "OSCR_METRIC_PATH",
    "SCORES",
    "OpenSetCurves",
    "known_class_predictions",
    "load_oscr_metric",
    "open_set_analysis",
    "open_set_curves",
    "open_set_metrics",
    "oscr_curve",
    "plot_open_set_curves",
    "trainer_compute_metrics",
]
