"""Decisions people can rely on: the unknown threshold by split conformal prediction, a conformal p-value per clip,
and temperature-scaled probabilities over the known classes.

- **Threshold.** The known-ness scores `s_1..s_n` of `n` known calibration clips (the known validation clips, never
  trained on) are saved in the config (`calibration_scores`). With `alpha = 1 - known_acceptance` and
  `k = floor(alpha (n + 1))`, the threshold is the `k`-th smallest score: a new known clip from the same distribution
  is accepted (score >= threshold) with probability at least `1 - k / (n + 1) >= known_acceptance`. `k = 0` (`n <
  1 / alpha - 1`) cannot reach the level. The guarantee is marginal (over the draw of calibration and new clips), not
  per class, and says nothing about how many *unknown* clips are caught.
- **Spread.** Given the calibration clips, the acceptance rate on new clips follows Beta(n + 1 - k, k); on a test set
  of `m` clips the accepted share follows the beta-binomial with the same parameters.
- **p-value.** `(1 + #{i: s_i <= s}) / (n + 1)`; "unknown" exactly when it is <= alpha, the same decision as the
  threshold, so any level can be picked after the fact from the saved scores (`redecide`). In floating point compare
  with a tolerance (`p <= alpha + 1e-9`): `1 - 0.9` is 0.0999..., below a p-value of exactly 0.1.
- **Temperature.** One scalar `T` dividing the known-class logits, fitted by minimising the negative log-likelihood on
  the known validation clips (Guo et al., ICML 2017); the arg-max and the known-ness score are unchanged. ECE uses 15
  equal-width bins of the top-class confidence; Brier is the mean squared distance to the one-hot label.

Anchors for the formulas: Angelopoulos & Bates, "A Gentle Introduction to Conformal Prediction" (2021).
"""

import logging
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import optimize, stats


logger = logging.getLogger(__name__)

ECE_BINS = 15
# Rounding guard for floor(alpha (n + 1)): 1 - 0.9 is 0.0999..., and floor(0.0999... * 10) would be 0, not 1.
_EPS = 1e-9
NO_GUARANTEE = (
    "carries no saved calibration scores (calibrated before hesp-hf's conformal calibration): its threshold has no "
    "stated false-unknown rate and cannot be moved to another level; retrain to get one"
)


# ------------------------------------------------------------------------------------------------ conformal math
def check_level(acceptance: float, n: int | None = None, name: str = "known_acceptance") -> None:
    """Raise one line naming the level (and `n`) when `acceptance` is outside (0, 1) or, with `n` calibration
    scores, beyond what split conformal can reach (`n < 1 / alpha - 1`)."""
    if not (isinstance(acceptance, (int, float)) and 0 < acceptance < 1):
        raise ValueError(
            f"{name} must lie strictly between 0 and 1 (a share of known clips to accept), got {acceptance}."
        )
    if n is not None and conformal_rank(n, acceptance) == 0:
        raise ValueError(
            f"{name} {acceptance} cannot be reached with n={n} calibration scores: split conformal needs "
            f"n >= {minimum_calibration_size(acceptance)}; the highest level n={n} reaches is {n / (n + 1):.4f}."
        )


def conformal_rank(n: int, acceptance: float) -> int:
    """`k = floor(alpha (n + 1))`, `alpha = 1 - acceptance`: the rank (1-based, smallest first) of the calibration score
    used as threshold; 0 when the level cannot be reached with `n` scores."""
    return min(n, math.floor((1 - acceptance) * (n + 1) + _EPS))


def minimum_calibration_size(acceptance: float) -> int:
    """The smallest `n` for which `conformal_rank(n, acceptance) >= 1`."""
    return max(1, math.ceil(1 / (1 - acceptance) - 1 - _EPS))


def guaranteed_acceptance(n: int, acceptance: float) -> float:
    """The acceptance the threshold guarantees, `1 - k / (n + 1)` (`k` at least 1: the level training falls back to
    when `acceptance` is out of reach)."""
    return 1 - max(1, conformal_rank(n, acceptance)) / (n + 1)


def out_of_reach(n: int, acceptance: float) -> str:
    """What happens when `acceptance` needs more than `n` known calibration clips (`conformal_rank` 0): training falls
    back to the lowest score, which guarantees only `n / (n + 1)`."""
    return (
        f"known_acceptance {acceptance} cannot be reached with n={n} known validation clips (split conformal needs "
        f"n >= {minimum_calibration_size(acceptance)}): the threshold is the lowest validation score, which "
        f"guarantees only {n / (n + 1):.4f}."
    )


def sorted_calibration_scores(scores: Sequence[float] | np.ndarray) -> np.ndarray:
    """The calibration scores as float64, smallest first; one-line errors for none or for NaN, which a sort would
    place above every score (the most known) while a clip scoring NaN is never accepted."""
    ordered = np.sort(np.asarray(scores, dtype=np.float64).ravel())
    if ordered.size == 0:
        raise ValueError("Conformal calibration needs at least one known calibration clip, got none.")
    missing = int(np.isnan(ordered).sum())
    if missing:
        raise ValueError(
            f"{missing} of the {ordered.size} known calibration scores are NaN: the model's outputs on those clips are "
            "not numbers (a derailed or overflowing model); a threshold from them would not hold its stated rate."
        )
    return ordered


def conformal_threshold(scores: Sequence[float] | np.ndarray, acceptance: float, strict: bool = True) -> float:
    """The `k`-th smallest of the calibration `scores`. `strict=False` falls back to the smallest score (`k = 1`)
    with a warning when the level is out of reach, instead of raising."""
    ordered = sorted_calibration_scores(scores)
    check_level(acceptance, None)
    k = conformal_rank(ordered.size, acceptance)
    if k == 0:
        if strict:
            check_level(acceptance, ordered.size)
        logger.warning("%s", out_of_reach(ordered.size, acceptance))
        k = 1
    return float(ordered[k - 1])


def known_p_values(
    calibration_scores: Sequence[float] | np.ndarray, scores: Sequence[float] | np.ndarray
) -> np.ndarray:
    """Conformal p-values `(1 + #{i: s_i <= s}) / (n + 1)` of `scores` against the calibration scores: small when a
    clip looks less known than almost every known calibration clip. A NaN score counts as below every calibration
    score (`1 / (n + 1)`), as the threshold decides it: never accepted."""
    ordered = sorted_calibration_scores(calibration_scores)
    values = np.asarray(scores, dtype=np.float64)
    at_or_below = np.where(np.isnan(values), 0, np.searchsorted(ordered, values, side="right"))
    return (1 + at_or_below) / (ordered.size + 1)


def acceptance_spread(n: int, acceptance: float, test_size: int | None = None, level: float = 0.9) -> dict[str, Any]:
    """What a user should expect: the acceptance rate on new known clips (Beta(n + 1 - k, k)) and, for a test set of
    `test_size` clips, the accepted share (beta-binomial): mean, the central `level` interval, and the chance the
    share falls below `acceptance`."""
    k = max(1, conformal_rank(n, acceptance))
    a, b = n + 1 - k, k
    tail = (1 - level) / 2
    rate = stats.beta(a, b)
    spread: dict[str, Any] = {
        "interval": level,
        "rate_mean": a / (a + b),
        "rate_low": float(rate.ppf(tail)),
        "rate_high": float(rate.ppf(1 - tail)),
    }
    if test_size:
        share = stats.betabinom(test_size, a, b)
        spread.update(
            test_size=int(test_size),
            share_low=float(share.ppf(tail)) / test_size,
            share_high=float(share.ppf(1 - tail)) / test_size,
            # P(accepted share < acceptance) = P(count <= ceil(acceptance m) - 1)
            chance_below_target=float(share.cdf(math.ceil(acceptance * test_size - _EPS) - 1)),
        )
    return spread


# ------------------------------------------------------------------------------------------------ temperature
def _log_probabilities(logits: np.ndarray, temperature: float) -> np.ndarray:
    scaled = np.asarray(logits, dtype=np.float64) / temperature
    scaled = scaled - scaled.max(axis=1, keepdims=True)
    return scaled - np.log(np.exp(scaled).sum(axis=1, keepdims=True))


def probabilities(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Softmax of the `(N, K)` known-class logits divided by `temperature`."""
    return np.exp(_log_probabilities(logits, temperature))


def negative_log_likelihood(logits: np.ndarray, labels: np.ndarray, temperature: float = 1.0) -> float:
    log_p = _log_probabilities(logits, temperature)
    return float(-log_p[np.arange(len(log_p)), np.asarray(labels, dtype=np.int64)].mean())


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The `T > 0` minimising the negative log-likelihood of `labels` (known-class indices) under
    softmax(`logits` / T), searched on log T in [1/100, 100]; 1.0 (no scaling) when every clip's arg-max is its label.

    Why the exception: when all calibration clips are classified correctly the likelihood keeps rising as T falls, so
    there is no optimum and the search ends at its bound, making every probability near 1. Measured on the synthetic
    protocol (18 validation clips, all right): T 0.04 and 0.09 raised the test NLL from 0.07 to 1.09 and from 0.25 to
    2.66 (docs/calibration.md)."""
    logits, labels = np.asarray(logits, dtype=np.float64), np.asarray(labels, dtype=np.int64)
    if logits.ndim != 2 or len(logits) != len(labels) or len(labels) == 0:
        raise ValueError(
            f"Temperature fitting needs (N, K) logits with N >= 1 labels, got {logits.shape} and {labels.shape}."
        )
    if np.all(logits.argmax(axis=1) == labels):
        logger.warning(
            "Every one of the %d calibration clips is classified correctly: the likelihood has no optimum in the "
            "temperature, so the probabilities are left unscaled (temperature 1.0); more, harder calibration clips "
            "allow a fit.",
            len(labels),
        )
        return 1.0
    result = optimize.minimize_scalar(
        lambda log_t: negative_log_likelihood(logits, labels, math.exp(log_t)),
        bounds=(math.log(0.01), math.log(100.0)),
        method="bounded",
        options={"xatol": 1e-6},
    )
    return float(math.exp(result.x))


def reliability(probs: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS) -> dict[str, list[float]]:
    """Per equal-width bin of top-class confidence ((i/M, (i+1)/M]): its mean confidence, accuracy and clip count."""
    probs, labels = np.asarray(probs, dtype=np.float64), np.asarray(labels)
    confidence, correct = probs.max(axis=1), probs.argmax(axis=1) == labels
    index = np.clip(np.ceil(confidence * bins).astype(int) - 1, 0, bins - 1)
    counts = np.bincount(index, minlength=bins)
    with np.errstate(invalid="ignore"):
        mean_confidence = np.bincount(index, confidence, bins) / counts
        accuracy = np.bincount(index, correct.astype(float), bins) / counts
    return {
        "confidence": np.nan_to_num(mean_confidence).tolist(),
        "accuracy": np.nan_to_num(accuracy).tolist(),
        "count": counts.tolist(),
    }


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS) -> float:
    """Sum over bins of |accuracy - mean confidence| weighted by the bin's share of clips."""
    table = reliability(probs, labels, bins)
    counts = np.asarray(table["count"], dtype=np.float64)
    gaps = np.abs(np.asarray(table["accuracy"]) - np.asarray(table["confidence"]))
    return float((gaps * counts).sum() / counts.sum())


def brier_score(probs: np.ndarray, labels: np.ndarray) -> float:
    probs = np.asarray(probs, dtype=np.float64)
    onehot = np.eye(probs.shape[1])[np.asarray(labels, dtype=np.int64)]
    return float(((probs - onehot) ** 2).sum(axis=1).mean())


def calibration_metrics(known_logits: np.ndarray, labels: np.ndarray, temperature: float) -> dict[str, Any]:
    """`{temperature, ece_before, ece_after, brier_before, brier_after, nll_before, nll_after, clips, reliability}`
    of known clips' `(N, K)` logits and labels, before (T = 1) and after temperature scaling."""
    before, after = probabilities(known_logits, 1.0), probabilities(known_logits, temperature)
    return {
        "temperature": float(temperature),
        "ece_before": expected_calibration_error(before, labels),
        "ece_after": expected_calibration_error(after, labels),
        "brier_before": brier_score(before, labels),
        "brier_after": brier_score(after, labels),
        "nll_before": negative_log_likelihood(known_logits, labels, 1.0),
        "nll_after": negative_log_likelihood(known_logits, labels, temperature),
        "clips": int(len(labels)),
        "bins": ECE_BINS,
        "reliability_before": reliability(before, labels),
        "reliability_after": reliability(after, labels),
    }


# ------------------------------------------------------------------------------------------------ on a config
def uncalibrated_logits(logits: np.ndarray, config: Any) -> np.ndarray:
    """A model's output logits as they were before temperature scaling (the model divides them by
    `config.probability_temperature`): what the metrics' known-ness score, the reliability "before" and a new fit
    read, so that calibrating never changes a reported ACC / AUROC / OSCR."""
    return np.asarray(logits) * getattr(config, "probability_temperature", 1.0)


def calibrate(
    config: Any,
    scores: np.ndarray,
    acceptance: float,
    known_logits: np.ndarray | None = None,
    labels: np.ndarray | None = None,
) -> None:
    """Calibrate `config` in place on known calibration clips: the conformal threshold at `acceptance` from their
    known-ness `scores` (saved, sorted, with the level), and with `known_logits` `(N, K)` and `labels` the
    temperature of the probabilities. Out-of-reach levels fall back to the lowest score, with a warning."""
    ordered = sorted_calibration_scores(scores)
    config.unknown_threshold = conformal_threshold(ordered, acceptance, strict=False)
    config.known_acceptance = float(acceptance)
    config.calibration_scores = [float(s) for s in ordered]
    if known_logits is not None and labels is not None:
        config.probability_temperature = fit_temperature(known_logits, labels)
    logger.info(
        "unknown_threshold %.6f: accepts a new known clip with probability >= %.4f (split conformal, n=%d); "
        "probability temperature %.4f",
        config.unknown_threshold,
        guaranteed_acceptance(len(ordered), acceptance),
        len(ordered),
        getattr(config, "probability_temperature", 1.0),
    )


def has_guarantee(config: Any) -> bool:
    return bool(getattr(config, "calibration_scores", None)) and getattr(config, "known_acceptance", None) is not None


def redecide(config: Any, acceptance: float, source: str = "the checkpoint", name: str = "known_acceptance") -> None:
    """Move `config`'s threshold to `acceptance` from its saved calibration scores (no retraining): the same
    threshold calibrating at that level gives. One-line errors for a bad level or a checkpoint without scores."""
    check_level(acceptance, name=name)
    scores = getattr(config, "calibration_scores", None)
    if not scores:
        raise ValueError(f"{name} {acceptance}: {source} {NO_GUARANTEE}.")
    check_level(acceptance, len(scores), name=name)
    config.unknown_threshold = conformal_threshold(scores, acceptance)
    config.known_acceptance = float(acceptance)
    logger.info(
        "Re-decided at known_acceptance %s: threshold %.6f (n=%d)", acceptance, config.unknown_threshold, len(scores)
    )


def config_p_values(config: Any, scores: Sequence[float]) -> list[float | None]:
    """Each clip's conformal p-value against `config.calibration_scores` (one pass for a batch); None for every clip
    without saved scores."""
    calibration = getattr(config, "calibration_scores", None)
    if not calibration:
        return [None] * len(scores)
    return known_p_values(calibration, scores).tolist()


def guarantee_statement(config: Any, source: str = "This model") -> str:
    """The guarantee in one sentence, or that there is none."""
    if not has_guarantee(config):
        return f"{source} {NO_GUARANTEE}."
    n, level = len(config.calibration_scores), config.known_acceptance
    reached = guaranteed_acceptance(n, level)
    text = (
        f"A new clip of a known expression, from the distribution the {n} calibration clips came from, is accepted "
        f"(not called unknown) with probability >= {reached:.4f} (split conformal, target {level})"
    )
    if conformal_rank(n, level) == 0:
        text += f"; the target {level} was out of reach with n={n}"
    return text + ". Nothing bounds how many unknown expressions are caught."


def conformal_report(config: Any, test_scores_known: np.ndarray) -> dict[str, Any]:
    """`metrics.json`'s `conformal` block: the target, n, the guarantee, the spread to expect on a test set of this
    size, and the acceptance reached on the test set's known clips."""
    if not has_guarantee(config):
        return {"guarantee": False, "statement": guarantee_statement(config)}
    n, level = len(config.calibration_scores), float(config.known_acceptance)
    test_scores_known = np.asarray(test_scores_known, dtype=np.float64)
    m = int(test_scores_known.size)
    return {
        "guarantee": True,
        "target_acceptance": level,
        "calibration_clips": n,
        "rank": conformal_rank(n, level),
        "guaranteed_acceptance": guaranteed_acceptance(n, level),
        "threshold": float(config.unknown_threshold),
        "test_known_clips": m,
        "test_acceptance": float((test_scores_known >= config.unknown_threshold).mean()) if m else None,
        "expected_spread": acceptance_spread(n, level, m or None),
        "statement": guarantee_statement(config),
    }


def calibration_records(config: Any, logits: np.ndarray, scores: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    """`metrics.json`'s `conformal` block (target, n, guarantee, expected spread, acceptance reached on the known
    test clips) and `calibration` block (temperature, ECE and Brier before and after, on the known test clips), from
    a model's `(N, K + 1)` logits, known-ness scores and labels (-1: unknown) on a test set."""
    labels = np.asarray(labels)
    known = labels >= 0
    records: dict[str, Any] = {"conformal": conformal_report(config, np.asarray(scores)[known])}
    if known.any():
        records["calibration"] = calibration_metrics(
            np.asarray(logits)[known, : config.num_known_labels],
            labels[known],
            getattr(config, "probability_temperature", 1.0),
        )
    return records


def card_text(metrics: dict[str, Any]) -> str:
    """The model card's paragraph on what its decisions guarantee, from `metrics.json`'s blocks."""
    conformal, scaling = metrics.get("conformal"), metrics.get("calibration")
    if not conformal:
        return ""
    lines = [conformal["statement"]]
    if conformal.get("guarantee"):
        spread = conformal["expected_spread"]
        lines.append(
            f"Given these calibration clips, the acceptance rate on new known clips has mean {spread['rate_mean']:.3f} "
            f"and lies in [{spread['rate_low']:.3f}, {spread['rate_high']:.3f}] with probability "
            f"{spread['interval']:.0%} (Beta)"
            + (
                f"; on a test set of {spread['test_size']} known clips the accepted share lies in "
                f"[{spread['share_low']:.3f}, {spread['share_high']:.3f}] (beta-binomial, same probability), and the "
                f"test set here reached {conformal['test_acceptance']:.3f}."
                if spread.get("test_size")
                else "."
            )
        )
        lines.append(
            "`hesp-predict --known_acceptance 0.99` re-decides at another level from the saved scores; each row's "
            "`known_p_value` is the clip's conformal p-value (unknown when it is <= 1 - the level, compared with a "
            "tolerance of 1e-9: 1 - 0.9 is 0.0999... in floating point)."
        )
    if scaling:
        lines.append(
            f"Probabilities over the known classes are temperature-scaled (T = {scaling['temperature']:.3f}, fitted on "
            f"the known validation clips): on the {scaling['clips']} known test clips the expected calibration error "
            f"({scaling['bins']} bins) went from {scaling['ece_before']:.4f} to {scaling['ece_after']:.4f}, the Brier "
            f"score from {scaling['brier_before']:.4f} to {scaling['brier_after']:.4f}."
        )
    return " ".join(lines)
