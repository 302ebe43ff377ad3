"""Pictures of open-set results: the ROC curve and the OSCR curve side by side, titled with the numbers."""

from pathlib import Path
from typing import Any

import numpy as np

from ..atomic_files import atomic_output
from ..modeling.modeling_hesp import UNKNOWN_LABEL_ID
from .oscr.oscr import OpenSetCurves, ScoreName, open_set_analysis


def plot_open_set_curves(
    predictions: np.ndarray,
    references: np.ndarray,
    path: str | Path,
    unknown_label_id: int = UNKNOWN_LABEL_ID,
    score: ScoreName = "max_logit",
    has_unknown_column: bool = False,
    title: str | None = None,
) -> Path:
    """Write a PNG with the known-vs-unknown ROC curve and the OSCR curve (CCR against FPR) to `path`, whole or not
    at all. Returns the path."""
    metrics, curves = open_set_analysis(predictions, references, unknown_label_id, score, has_unknown_column)
    return draw_open_set_curves(metrics, curves, path, score, title)


def draw_open_set_curves(
    metrics: dict[str, Any], curves: OpenSetCurves, path: str | Path, score: str, title: str | None = None
) -> Path:
    """The plot of `plot_open_set_curves` from already computed metrics and curves (`open_set_analysis`)."""
    # A bare `Figure` draws to a file without pyplot, so the caller's backend (a notebook's) is left as it is.
    from matplotlib.figure import Figure

    scaling = metrics.get("calibration")  # with it, a third panel: the reliability diagram (hesp_hf.calibration)
    figure = Figure(figsize=(15, 4.6) if scaling else (10, 4.6))
    roc_axis, oscr_axis, *more = figure.subplots(1, 3 if scaling else 2)
    if scaling:
        draw_reliability(more[0], scaling)
    roc_axis.plot(curves.roc_fpr, curves.roc_tpr, color="tab:blue", lw=2)
    roc_axis.plot([0, 1], [0, 1], color="grey", ls="--", lw=1)
    roc_axis.set(xlabel="FPR (unknown clips accepted)", ylabel="TPR (known clips accepted)")
    roc_axis.set_title(f"ROC: AUROC = {metrics['auroc']:.3f}, FPR@95%TPR = {metrics['fpr_at_95_tpr']:.3f}")
    oscr_axis.plot(curves.oscr_fpr, curves.oscr_ccr, color="tab:red", lw=2)
    oscr_axis.axhline(metrics["accuracy"], color="grey", ls="--", lw=1, label=f"accuracy {metrics['accuracy']:.3f}")
    oscr_axis.set(xlabel="FPR (unknown clips accepted)", ylabel="CCR (known clips accepted and correct)")
    oscr_axis.set_title(f"OSCR = {metrics['oscr']:.3f}")
    oscr_axis.legend(loc="lower right")
    for axis in (roc_axis, oscr_axis):
        axis.set(xlim=(0, 1), ylim=(0, 1.02))
        axis.grid(alpha=0.3)
    counts = f"{metrics['num_known']} known / {metrics['num_unknown']} unknown clips, score: {score}"
    figure.suptitle(f"{title}\n{counts}" if title else counts)
    figure.tight_layout()
    with atomic_output(path) as temporary:
        figure.savefig(temporary, dpi=120)
    return Path(path)


def draw_reliability(axis: Any, scaling: dict[str, Any]) -> None:
    """Accuracy against mean confidence per confidence bin of the known clips, before and after temperature
    scaling (`metrics.json`'s `calibration` block); the diagonal is perfect calibration."""
    axis.plot([0, 1], [0, 1], color="grey", ls="--", lw=1)
    for key, name, color in (("before", "softmax", "tab:orange"), ("after", "temperature-scaled", "tab:green")):
        table = scaling[f"reliability_{key}"]
        shown = [i for i, count in enumerate(table["count"]) if count]
        axis.plot(
            [table["confidence"][i] for i in shown],
            [table["accuracy"][i] for i in shown],
            marker="o",
            color=color,
            label=f"{name}: ECE {scaling[f'ece_{key}']:.3f}",
        )
    axis.set(xlim=(0, 1), ylim=(0, 1.02), xlabel="confidence (top known-class probability)", ylabel="accuracy")
    axis.set_title(f"Reliability, {scaling['clips']} known clips, T = {scaling['temperature']:.2f}")
    axis.legend(loc="lower right")
    axis.grid(alpha=0.3)
