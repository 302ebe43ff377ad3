"""One reading of a model output into decisions: the top label (a known class or the unknown label), known-ness
score against the calibrated threshold, the conformal p-value, and the temperature-scaled probabilities over the
known classes. Shared by the predictor's rows (`prediction.py`), the timeline's windows (`timeline.py`) and the app,
so the three cannot drift apart."""

from typing import Any

from ..calibration import config_p_values


def decisions(outputs: Any, config: Any) -> list[dict[str, Any]]:
    """Per row of a model output: the top `label` (a known class or the unknown label), `known`, the known-ness
    `score`, the `threshold` it is compared with, the clip's conformal `known_p_value` (None for a checkpoint without
    saved calibration scores) and the `probabilities` over the known classes (softmax of their logits, which the
    model divides by `config.probability_temperature`). One reading of the output for the predictor's rows, the timeline's windows
    and the app."""
    known = config.known_labels
    logits = outputs.logits.float()
    # The model divides its logits by `config.probability_temperature` itself, in every form (an export's graph too).
    probabilities = logits[:, : len(known)].softmax(dim=-1).tolist()
    top = logits[:, : len(known)].argmax(dim=-1).tolist()
    scores = outputs.open_set_score.float().tolist()
    threshold = config.unknown_threshold
    found = []
    for index, score, p_value, row in zip(top, scores, config_p_values(config, scores), probabilities, strict=True):
        # Decided from the config's threshold, not the output's "unknown" column: an export's graph holds the
        # threshold it was exported with, and `--known_acceptance` may have moved it since (hesp_hf.calibration).
        is_known = threshold is None or score >= threshold
        found.append(
            {
                "label": known[index] if is_known else config.unknown_label,
                "known": is_known,
                "score": score,
                "threshold": threshold,
                "known_p_value": p_value,
                "probabilities": dict(zip(known, row, strict=True)),
            }
        )
    return found
