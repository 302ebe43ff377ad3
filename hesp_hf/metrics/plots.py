"""Pictures of open-set results: the ROC curve and the OSCR curve side by side, titled with the numbers."""

import os
import tempfile
from pathlib import Path

import numpy as np

from .oscr.oscr import ScoreName, area_under, open_set_curves, open_set_metrics


def plot_open_set_curves(
    predictions: np.ndarray,
    references: np.ndarray,
    path: str | Path,
    unknown_label: int = -1,
    score: ScoreName = "max_logit",
    has_unknown_column: bool = False,
    title: str | None = None,
) -> Path:
    """Write a PNG with the known-vs-unknown ROC curve and the OSCR curve (CCR against FPR) to `path`, whole or not
    at all. Returns the path."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display needed
    import matplotlib.pyplot as plt

    curves = open_set_curves(predictions, references, unknown_label, score, has_unknown_column)
    metrics = open_set_metrics(predictions, references, unknown_label, score, has_unknown_column)
    figure, (roc_axis, oscr_axis) = plt.subplots(1, 2, figsize=(10, 4.6))
    roc_axis.plot(curves.roc_fpr, curves.roc_tpr, color="tab:blue", lw=2)
    roc_axis.plot([0, 1], [0, 1], color="grey", ls="--", lw=1)
    roc_axis.set(xlabel="FPR (unknown clips accepted)", ylabel="TPR (known clips accepted)")
    roc_axis.set_title(f"ROC: AUROC = {metrics['auroc']:.3f}, FPR@95%TPR = {metrics['fpr_at_95_tpr']:.3f}")
    oscr_axis.plot(curves.oscr_fpr, curves.oscr_ccr, color="tab:red", lw=2)
    oscr_axis.axhline(metrics["accuracy"], color="grey", ls="--", lw=1, label=f"accuracy {metrics['accuracy']:.3f}")
    oscr_axis.set(xlabel="FPR (unknown clips accepted)", ylabel="CCR (known clips accepted and correct)")
    oscr_axis.set_title(f"OSCR = {area_under(curves.oscr_fpr, curves.oscr_ccr):.3f}")
    oscr_axis.legend(loc="lower right")
    for axis in (roc_axis, oscr_axis):
        axis.set(xlim=(0, 1), ylim=(0, 1.02))
        axis.grid(alpha=0.3)
    counts = f"{metrics['num_known']} known / {metrics['num_unknown']} unknown clips, score: {score}"
    figure.suptitle(f"{title}\n{counts}" if title else counts)
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".png")
    os.close(handle)
    try:
        figure.savefig(temporary, dpi=120)
        os.replace(temporary, path)
    finally:
        plt.close(figure)
        Path(temporary).unlink(missing_ok=True)
    return path
