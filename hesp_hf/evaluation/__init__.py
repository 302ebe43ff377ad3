"""Evaluation: a model's predictions on a test set -> `metrics.json`, curves and confusion table (`report`); the
baselines every open-set score is compared with, on the frozen backbone's features (`baselines`)."""

from .report import (
    GATHERED_OUTPUTS,
    METRICS,
    OpenSetPredictions,
    branch_metrics,
    confusion_table,
    markdown_table,
    mean_std,
    predict_open_set,
    seed_table,
    write_open_set_report,
    write_seed_table,
)


__all__ = [
    "GATHERED_OUTPUTS",
    "METRICS",
    "OpenSetPredictions",
    "branch_metrics",
    "confusion_table",
    "markdown_table",
    "mean_std",
    "predict_open_set",
    "seed_table",
    "write_open_set_report",
    "write_seed_table",
]
