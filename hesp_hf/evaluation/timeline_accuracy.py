"""How right a timeline is against known truth: the share of the recording's frames whose decision matches the true
label (unknown stretches count: a clip of a class outside the model's must be called unknown), and how far each true
change of label lies from the nearest change the timeline makes."""

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


Span = tuple[float, float, str]  # start, end (seconds), decision


@dataclass
class TimelineAccuracy:
    frame_accuracy: float
    boundary_errors: list[float]  # seconds, one per true change of label

    @property
    def median_boundary_error(self) -> float | None:
        return float(np.median(self.boundary_errors)) if self.boundary_errors else None


def merge_spans(spans: Sequence[Span]) -> list[Span]:
    """Adjacent spans with one decision as one span (two unknown classes in a row are one unknown stretch)."""
    merged: list[Span] = []
    for start, end, decision in sorted(spans):
        if merged and merged[-1][2] == decision and abs(merged[-1][1] - start) < 1e-9:
            merged[-1] = (merged[-1][0], end, decision)
        else:
            merged.append((start, end, decision))
    return merged


def decision_at(spans: Sequence[Span], times: np.ndarray) -> list[str | None]:
    """The decision of the span holding each time (None outside every span)."""
    starts = np.asarray([span[0] for span in spans])
    found = np.searchsorted(starts, times, side="right") - 1
    return [
        spans[i][2] if i >= 0 and spans[i][0] <= t < spans[i][1] else None
        for i, t in zip(found.tolist(), times.tolist(), strict=True)
    ]


def timeline_accuracy(predicted: Sequence[Span], truth: Sequence[Span], frame_times: np.ndarray) -> TimelineAccuracy:
    """Frame-level accuracy of `predicted` against `truth` at the recording's `frame_times` (seconds), and the
    distance from each true boundary to the nearest predicted boundary (every predicted change of decision)."""
    predicted, truth = merge_spans(predicted), merge_spans(truth)
    times = np.asarray(frame_times, dtype=float)
    if times.size == 0:
        raise ValueError("timeline_accuracy needs at least one frame time.")
    hits = [p == t for p, t in zip(decision_at(predicted, times), decision_at(truth, times), strict=True)]
    true_boundaries = [span[0] for span in truth[1:]]
    predicted_boundaries = np.asarray([span[0] for span in predicted[1:]])
    errors = [
        float(np.min(np.abs(predicted_boundaries - b))) if predicted_boundaries.size else float("inf")
        for b in true_boundaries
    ]
    return TimelineAccuracy(frame_accuracy=float(np.mean(hits)), boundary_errors=errors)
