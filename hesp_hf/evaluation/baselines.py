"""Training-free open-set scores on fixed clip features, the baselines every open-set result here is compared with.

Every scorer takes the features `(N, D)` of the *known* training clips with their labels `0..K-1` and the features of
the clips to score, and returns an [`OpenSetScores`]: a predicted known class and a known-ness score per clip (higher
means more likely a known class). Nothing here sees an unknown clip before scoring it, and no setting is chosen on
the test clips.

- `linear_probe_scores`: a logistic regression's max-softmax, max-logit (Hendrycks & Gimpel 2017; Vaze et al. 2022)
  and energy `logsumexp` of its logits (Liu et al. 2020);
- `prototype_scores`: cosine to the nearest L2-normalised class mean;
- `multi_prototype_scores`: the same with several k-means prototypes per class;
- `knn_scores`: minus the distance to the k-th nearest L2-normalised training feature (Sun et al. 2022);
- `mahalanobis_scores`: class means, one shared covariance shrunk towards a multiple of the identity (Lee et al.
  2018, without their input noise or per-layer regression, which were tuned on the unknown test data);
- `standardized_fusion`: a sum of scores, each standardised by its own statistics on the training clips.

`baseline_scores` runs all of them on one set of features and `baseline_metrics` gives ACC / AUROC / OSCR for each
(`score_metrics`, the package's own `open_set_metrics`). `frozen_clip_features` gives the features from the frozen
CLIP a HESP checkpoint was built from, and `checkpoint_baseline_metrics` runs everything on a checkpoint's data.
"""

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.special import logsumexp
from sklearn.cluster import KMeans
from sklearn.covariance import ledoit_wolf
from sklearn.linear_model import LogisticRegression

from ..data.features import dataset_features
from ..metrics import open_set_metrics
from ..modeling.modeling_hesp import HESPForOpenSetVideoClassification


logger = logging.getLogger(__name__)


METRIC_NAMES = ("accuracy", "auroc", "oscr")


@dataclass(frozen=True)
class OpenSetScores:
    """Per clip: the predicted known class `predictions (N,)` (int) and the known-ness `scores (N,)` (float, higher
    means more likely known)."""

    predictions: np.ndarray
    scores: np.ndarray

    def __post_init__(self) -> None:
        if self.predictions.shape != self.scores.shape or self.scores.ndim != 1:
            raise ValueError(
                f"predictions and scores must be 1-D of one length, got {self.predictions.shape} and "
                f"{self.scores.shape}."
            )


def l2_normalize(features: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Rows of `features (N, D)` scaled to unit Euclidean length (float64; an all-zero row stays zero)."""
    features = np.asarray(features, dtype=np.float64)
    return features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), eps)


def _check_training(features: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    features = np.asarray(features, dtype=np.float64)
    labels = np.asarray(labels)
    if features.ndim != 2 or labels.shape != (len(features),):
        raise ValueError(
            f"training features must be (N, D) with one label each, got {features.shape} and {labels.shape}."
        )
    num_classes = int(labels.max()) + 1
    missing = sorted(set(range(num_classes)) - set(labels.tolist()))
    if labels.min() < 0 or missing:
        raise ValueError(f"training labels must cover 0..{num_classes - 1} with no negative value; missing {missing}.")
    return features, labels.astype(np.int64), num_classes


# ------------------------------------------------------------------------------------------------- linear probe
def linear_probe_logits(
    train_features: np.ndarray, train_labels: np.ndarray, test_features: np.ndarray, c: float = 10.0
) -> np.ndarray:
    """Logits `(M, K)` of a logistic regression (L2 penalty, inverse strength `c`) fitted on the training features.

    With two classes scikit-learn fits one decision value `d`; the logits are then `(-d/2, d/2)`, whose softmax is
    the fitted probabilities (the symmetric form of the two-class multinomial model)."""
    train_features, train_labels, _ = _check_training(train_features, train_labels)
    fitted = LogisticRegression(max_iter=2000, C=c).fit(train_features, train_labels)
    logits = fitted.decision_function(np.asarray(test_features, dtype=np.float64))
    if logits.ndim == 1:
        logits = np.stack([-logits / 2, logits / 2], axis=1)
    return logits


def energy(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Negative free energy `T * logsumexp(logits / T)` per row `(N,)` (Liu et al. 2020): higher means more likely
    known."""
    logits = np.asarray(logits, dtype=np.float64)
    return temperature * logsumexp(logits / temperature, axis=1)


def logit_scores(logits: np.ndarray, score: str = "max_logit") -> OpenSetScores:
    """The arg-max class of `logits (N, K)` and its `max_logit`, `max_softmax` or `energy` score."""
    logits = np.asarray(logits, dtype=np.float64)
    if score == "max_logit":
        values = logits.max(axis=1)
    elif score == "max_softmax":
        values = np.exp(logits.max(axis=1) - logsumexp(logits, axis=1))
    elif score == "energy":
        values = energy(logits)
    else:
        raise ValueError(f"score must be max_logit, max_softmax or energy, got {score!r}.")
    return OpenSetScores(logits.argmax(axis=1), values)


def linear_probe_scores(
    train_features: np.ndarray, train_labels: np.ndarray, test_features: np.ndarray, c: float = 10.0
) -> dict[str, OpenSetScores]:
    """The linear probe's arg-max class with three scores of its logits: `max_softmax`, `max_logit` and `energy`."""
    logits = linear_probe_logits(train_features, train_labels, test_features, c)
    return {score: logit_scores(logits, score) for score in ("max_softmax", "max_logit", "energy")}


# -------------------------------------------------------------------------------------------------- prototypes
def class_prototypes(train_features: np.ndarray, train_labels: np.ndarray) -> np.ndarray:
    """`(K, D)`: per class the mean of its L2-normalised training features, L2-normalised again."""
    features, labels, num_classes = _check_training(train_features, train_labels)
    unit = l2_normalize(features)
    return l2_normalize(np.stack([unit[labels == c].mean(axis=0) for c in range(num_classes)]))


def prototype_scores(train_features: np.ndarray, train_labels: np.ndarray, test_features: np.ndarray) -> OpenSetScores:
    """Nearest class prototype by cosine (`class_prototypes`): that prototype's class, and the cosine as score."""
    cosines = l2_normalize(test_features) @ class_prototypes(train_features, train_labels).T  # (M, K)
    return OpenSetScores(cosines.argmax(axis=1), cosines.max(axis=1))


def multi_prototype_scores(
    train_features: np.ndarray,
    train_labels: np.ndarray,
    test_features: np.ndarray,
    per_class: int = 2,
    seed: int = 0,
) -> OpenSetScores:
    """Several prototypes per class: k-means (`per_class` clusters, `seed`) on each class's L2-normalised training
    features, each centre L2-normalised; the class of the nearest prototype by cosine, and that cosine as score. A class
    with fewer clips than `per_class` keeps one prototype per clip."""
    features, labels, num_classes = _check_training(train_features, train_labels)
    unit = l2_normalize(features)
    centres, owners = [], []
    for c in range(num_classes):
        members = unit[labels == c]
        clusters = min(per_class, len(members))
        if clusters == 1:
            found = members.mean(axis=0, keepdims=True)
        else:
            found = KMeans(n_clusters=clusters, n_init=10, random_state=seed).fit(members).cluster_centers_
        centres.append(l2_normalize(found))
        owners += [c] * len(found)
    cosines = l2_normalize(test_features) @ np.concatenate(centres).T  # (M, P)
    return OpenSetScores(np.asarray(owners)[cosines.argmax(axis=1)], cosines.max(axis=1))


# ------------------------------------------------------------------------------------------------------- kNN
def knn_distances(train_features: np.ndarray, test_features: np.ndarray, k: int) -> np.ndarray:
    """Euclidean distance `(M,)` from each L2-normalised test feature to its `k`-th nearest L2-normalised training
    feature."""
    bank = l2_normalize(train_features)
    if not 1 <= k <= len(bank):
        raise ValueError(f"k must be in 1..{len(bank)} (the training features), got {k}.")
    cosines = l2_normalize(test_features) @ bank.T  # (M, N)
    distances = np.sqrt(np.clip(2.0 - 2.0 * cosines, 0.0, None))
    return np.partition(distances, k - 1, axis=1)[:, k - 1]


def knn_scores(
    train_features: np.ndarray, test_features: np.ndarray, k: int, predictions: np.ndarray
) -> OpenSetScores:
    """kNN known-ness (Sun et al. 2022): minus the distance to the `k`-th nearest training feature, both
    L2-normalised. The distance carries no class, so the predicted classes come from another rule (`predictions`)."""
    return OpenSetScores(np.asarray(predictions), -knn_distances(train_features, test_features, k))


# ------------------------------------------------------------------------------------------------ Mahalanobis
def mahalanobis_scores(
    train_features: np.ndarray,
    train_labels: np.ndarray,
    test_features: np.ndarray,
    shrinkage: float | None = None,
    normalize: bool = False,
) -> OpenSetScores:
    """Mahalanobis known-ness (Lee et al. 2018): class means and one covariance shared by all classes (of the
    class-centred training features), shrunk as `(1 - a) S + a (trace(S) / D) I`; `a` = `shrinkage`, or Ledoit-Wolf's
    estimate from the training features alone when None. Score `max_c -1/2 (x - m_c)^T S^-1 (x - m_c)`, prediction the
    class of that nearest mean. `normalize`: L2-normalise every feature first (Mueller & Hein 2025)."""
    features, labels, num_classes = _check_training(train_features, train_labels)
    test = np.asarray(test_features, dtype=np.float64)
    if normalize:
        features, test = l2_normalize(features), l2_normalize(test)
    means = np.stack([features[labels == c].mean(axis=0) for c in range(num_classes)])
    centred = features - means[labels]
    if shrinkage is None:
        covariance, shrinkage = ledoit_wolf(centred, assume_centered=True)
    else:
        if not 0.0 <= shrinkage <= 1.0:
            raise ValueError(f"shrinkage must be in [0, 1], got {shrinkage}.")
        sample = centred.T @ centred / len(centred)
        target = np.trace(sample) / len(sample) * np.eye(len(sample))
        covariance = (1.0 - shrinkage) * sample + shrinkage * target
    precision = np.linalg.pinv(covariance, hermitian=True)
    offsets = test[:, None, :] - means[None, :, :]  # (M, K, D)
    squared = np.einsum("mkd,de,mke->mk", offsets, precision, offsets)
    return OpenSetScores(squared.argmin(axis=1), -0.5 * squared.min(axis=1))


# ------------------------------------------------------------------------------------------------------ fusion
def standardized_fusion(
    test_scores: Sequence[np.ndarray],
    train_scores: Sequence[np.ndarray],
    weights: Sequence[float] | None = None,
) -> np.ndarray:
    """`sum_i w_i (s_i - mean_i) / std_i` per clip: each score standardised by the mean and standard deviation of
    the same score on the (known) training clips, then summed with `weights` (all 1 by default)."""
    if len(test_scores) != len(train_scores) or not test_scores:
        raise ValueError("Give one training-clip score array per test score array (at least one).")
    weights = [1.0] * len(test_scores) if weights is None else list(weights)
    fused = np.zeros(len(test_scores[0]))
    for test, train, weight in zip(test_scores, train_scores, weights, strict=True):
        train = np.asarray(train, dtype=np.float64)
        spread = train.std()
        if not spread > 0:
            raise ValueError("A score is constant on the training clips: it cannot be standardised.")
        fused += weight * (np.asarray(test, dtype=np.float64) - train.mean()) / spread
    return fused


# ----------------------------------------------------------------------------------------------------- metrics
def score_metrics(scores: OpenSetScores, test_labels: np.ndarray, num_classes: int) -> dict[str, float]:
    """ACC (known test clips), AUROC (known vs unknown) and OSCR of one scorer, by the package's `open_set_metrics`:
    it reads logits, so each clip gets `num_classes` logits whose maximum is its score and whose arg-max is its
    predicted class (the others one below). `test_labels`: known classes `0..K-1`, -1 for unknown clips."""
    predictions = np.asarray(scores.predictions)
    values = np.asarray(scores.scores, dtype=np.float64)
    if predictions.min() < 0 or predictions.max() >= num_classes:
        raise ValueError(f"predictions must be classes 0..{num_classes - 1}.")
    logits = np.repeat((values - 1.0)[:, None], num_classes, axis=1)
    logits[np.arange(len(values)), predictions] = values
    metrics = open_set_metrics(logits, np.asarray(test_labels), score="max_logit")
    return {name: float(metrics[name]) for name in METRIC_NAMES}


def baseline_scores(
    train_features: np.ndarray,
    train_labels: np.ndarray,
    test_features: np.ndarray,
    ks: Sequence[int] = (1, 5, 10),
) -> dict[str, OpenSetScores]:
    """Every training-free scorer on one set of features, by name. kNN takes the linear probe's classes (the most
    accurate of the class rules here); Mahalanobis is given on the features as they are and L2-normalised."""
    probe = linear_probe_scores(train_features, train_labels, test_features)
    results = {f"linear probe, {name.replace('_', '-')}": scores for name, scores in probe.items()}
    results["nearest class prototype (cosine)"] = prototype_scores(train_features, train_labels, test_features)
    for k in ks:
        if k > len(train_features):  # a small training set (a quick run): the k-th neighbour does not exist
            logger.info("kNN k=%d left out of the baselines: only %d training clips", k, len(train_features))
            continue
        results[f"kNN k={k} (probe's class)"] = knn_scores(
            train_features, test_features, k, probe["max_softmax"].predictions
        )
    results["Mahalanobis (shared covariance, Ledoit-Wolf shrinkage)"] = mahalanobis_scores(
        train_features, train_labels, test_features
    )
    results["Mahalanobis on L2-normalised features"] = mahalanobis_scores(
        train_features, train_labels, test_features, normalize=True
    )
    return results


def baseline_metrics(
    train_features: np.ndarray,
    train_labels: np.ndarray,
    test_features: np.ndarray,
    test_labels: np.ndarray,
    ks: Sequence[int] = (1, 5, 10),
) -> dict[str, dict[str, float]]:
    """ACC / AUROC / OSCR of every scorer of `baseline_scores` (`test_labels` -1 for unknown clips)."""
    num_classes = int(np.max(train_labels)) + 1
    scores = baseline_scores(train_features, train_labels, test_features, ks)
    return metrics_of(scores, test_labels, num_classes)


def metrics_of(
    scores: Mapping[str, OpenSetScores], test_labels: np.ndarray, num_classes: int
) -> dict[str, dict[str, float]]:
    """`score_metrics` of each named scorer."""
    return {name: score_metrics(value, test_labels, num_classes) for name, value in scores.items()}


def linear_probe_metrics(
    train_features: np.ndarray, train_labels: np.ndarray, test_features: np.ndarray, test_labels: np.ndarray
) -> dict[str, dict[str, float]]:
    """Logistic regression (C = 10) on clip features `(N, D)` of the known training clips, scored on the test clips
    (`test_labels` -1 for unknown ones) by max-softmax and by max-logit: `{"max_softmax": {...}, "max_logit": {...}}`
    with ACC / AUROC / OSCR each."""
    logits = linear_probe_logits(train_features, train_labels, test_features)
    results = {}
    for score in ("max_softmax", "max_logit"):
        metrics = open_set_metrics(logits, test_labels, score=score)
        results[score] = {name: float(metrics[name]) for name in METRIC_NAMES}
    return results


# ------------------------------------------------------------------------------------------- from a checkpoint
def checkpoint_baseline_metrics(
    model: HESPForOpenSetVideoClassification,
    train_dataset: Any,
    test_dataset: Any,
    batch_size: int = 32,
    num_workers: int = 0,
    train_features: tuple[np.ndarray, np.ndarray] | None = None,
) -> dict[str, dict[str, float]]:
    """ACC / AUROC / OSCR of every baseline on the frozen CLIP `model` was built from: fitted on the known training
    clips of `train_dataset`, scored on `test_dataset` (unknown clips labelled -1). `train_features`: the training
    clips' `dataset_features` when already computed."""
    if train_features is None:
        train_features = dataset_features(model, train_dataset, batch_size, num_workers)
    train_features, train_labels = train_features
    test_features, test_labels = dataset_features(model, test_dataset, batch_size, num_workers)
    known = train_labels >= 0
    return baseline_metrics(train_features[known], train_labels[known], test_features, test_labels)


def baseline_report(metrics: Mapping[str, Mapping[str, float]]) -> dict[str, Any]:
    """`metrics.json` entries of the baselines: every one (`baselines`) and the strongest (`strongest_baseline`: the
    highest AUROC, the open-set ranking HESP exists for, ties broken by OSCR), by name."""
    name = max(metrics, key=lambda key: (metrics[key]["auroc"], metrics[key]["oscr"]))
    return {"baselines": dict(metrics), "strongest_baseline": {"name": name, **metrics[name]}}
