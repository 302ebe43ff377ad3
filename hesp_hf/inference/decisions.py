"""One reading of a model output into decisions: the top label (a known class or the unknown label), known-ness
score against the calibrated threshold, and the probabilities over the known classes. Shared by the predictor's rows
(`prediction.py`), the timeline's windows (`timeline.py`) and the app, so the three cannot drift apart."""

from typing import Any


def decisions(outputs: Any, config: Any) -> list[dict[str, Any]]:
    """Per row of a model output: the top `label` (a known class or the unknown label), `known`, the known-ness
    `score`, the `threshold` it is compared with, and the `probabilities` over the known classes (softmax of their
    logits). One reading of the output for the predictor's rows, the timeline's windows and the app."""
    known = config.known_labels
    logits = outputs.logits.float()
    probabilities = logits[:, : len(known)].softmax(dim=-1)
    top = logits.argmax(dim=-1)
    found = []
    for row in range(len(logits)):
        label = config.id2label[int(top[row])]
        found.append(
            {
                "label": label,
                "known": label != config.unknown_label,
                "score": float(outputs.open_set_score[row].float()),
                "threshold": config.unknown_threshold,
                "probabilities": dict(zip(known, probabilities[row].tolist(), strict=True)),
            }
        )
    return found
