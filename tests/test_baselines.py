"""The training-free open-set scores of `hesp_hf.baselines`, each on a tiny 2-D case worked out by hand."""

import math

import numpy as np
import pytest
from sklearn.covariance import ledoit_wolf

from hesp_hf.evaluation.baselines import (
    OpenSetScores,
    baseline_metrics,
    class_prototypes,
    energy,
    knn_distances,
    knn_scores,
    linear_probe_logits,
    linear_probe_metrics,
    linear_probe_scores,
    logit_scores,
    mahalanobis_scores,
    multi_prototype_scores,
    prototype_scores,
    score_metrics,
    standardized_fusion,
)


SQRT_HALF = math.sqrt(0.5)


def test_prototypes_are_normalised_means_of_normalised_features():
    # class 0: (2, 0) and (0, 2) -> unit (1, 0), (0, 1) -> mean (.5, .5) -> (1/sqrt2, 1/sqrt2)
    # class 1: (-1, 0) and (-3, 0) -> unit (-1, 0) twice -> (-1, 0)
    train = np.array([[2.0, 0.0], [0.0, 2.0], [-1.0, 0.0], [-3.0, 0.0]])
    labels = np.array([0, 0, 1, 1])
    np.testing.assert_allclose(class_prototypes(train, labels), [[SQRT_HALF, SQRT_HALF], [-1.0, 0.0]])
    # (1, 1): cos 1 with class 0, -1/sqrt2 with class 1; (0, -1): -1/sqrt2 and 0; (-1, 1): 0 and 1/sqrt2
    scores = prototype_scores(train, labels, np.array([[1.0, 1.0], [0.0, -1.0], [-1.0, 1.0]]))
    np.testing.assert_array_equal(scores.predictions, [0, 1, 1])
    np.testing.assert_allclose(scores.scores, [1.0, 0.0, SQRT_HALF], atol=1e-12)


def test_knn_distance_to_the_kth_nearest_unit_feature():
    # bank (unit): (1, 0), (0, 1), (-1, 0), (-1, 0)
    train = np.array([[2.0, 0.0], [0.0, 2.0], [-1.0, 0.0], [-3.0, 0.0]])
    # (3, 4) -> (.6, .8): squared distances .8, .4, 3.2, 3.2; (0, -5) -> (0, -1): 2, 4, 2, 2
    test = np.array([[3.0, 4.0], [0.0, -5.0]])
    np.testing.assert_allclose(knn_distances(train, test, 1), [math.sqrt(0.4), math.sqrt(2)])
    np.testing.assert_allclose(knn_distances(train, test, 2), [math.sqrt(0.8), math.sqrt(2)])
    np.testing.assert_allclose(knn_distances(train, test, 3), [math.sqrt(3.2), math.sqrt(2)])
    np.testing.assert_allclose(knn_distances(train, test, 4), [math.sqrt(3.2), 2.0])
    scores = knn_scores(train, test, 2, predictions=np.array([0, 1]))
    np.testing.assert_allclose(scores.scores, [-math.sqrt(0.8), -math.sqrt(2)])
    np.testing.assert_array_equal(scores.predictions, [0, 1])
    with pytest.raises(ValueError, match="k must be"):
        knn_distances(train, test, 5)


def test_mahalanobis_with_a_shared_covariance():
    # class 0: (0, 0), (4, 0), mean (2, 0); class 1: (0, 1), (0, 3), mean (0, 2).
    # Class-centred: (-2, 0), (2, 0), (0, -1), (0, 1) -> S = diag(8, 2) / 4 = diag(2, 0.5)
    train = np.array([[0.0, 0.0], [4.0, 0.0], [0.0, 1.0], [0.0, 3.0]])
    labels = np.array([0, 0, 1, 1])
    test = np.array([[2.0, 1.0], [1.0, 2.0]])
    # no shrinkage, S^-1 = diag(.5, 2):
    # (2, 1): to mean 0 offset (0, 1) -> 2, to mean 1 offset (2, -1) -> 2 + 2 = 4: class 0, -1/2 * 2
    # (1, 2): to mean 0 offset (-1, 2) -> .5 + 8, to mean 1 offset (1, 0) -> .5: class 1, -1/2 * .5
    plain = mahalanobis_scores(train, labels, test, shrinkage=0.0)
    np.testing.assert_array_equal(plain.predictions, [0, 1])
    np.testing.assert_allclose(plain.scores, [-1.0, -0.25])
    # shrinkage .5 towards trace(S) / 2 = 1.25: covariance diag(1.625, .875)
    # (2, 1): 1 / .875 to mean 0; 4 / 1.625 + 1 / .875 to mean 1 -> class 0
    shrunk = mahalanobis_scores(train, labels, test, shrinkage=0.5)
    assert shrunk.predictions[0] == 0
    np.testing.assert_allclose(shrunk.scores[0], -0.5 / 0.875)
    with pytest.raises(ValueError, match="shrinkage"):
        mahalanobis_scores(train, labels, test, shrinkage=1.5)


def test_mahalanobis_on_normalised_features_ignores_each_feature_length():
    # unit features: class 0 (1, 0), (0, 1), mean (.5, .5); class 1 (-1, 0), (0, -1), mean (-.5, -.5);
    # centred: (.5, -.5), (-.5, .5) twice -> S = [[.25, -.25], [-.25, .25]], trace/2 = .25; shrinkage .5:
    # covariance [[.25, -.125], [-.125, .25]], inverse [[16/3, 8/3], [8/3, 16/3]].
    # test (3, 3) -> (1/sqrt2, 1/sqrt2): offset to mean 0 (a, a) with a = 1/sqrt2 - .5, squared distance 16 a^2
    train = np.array([[5.0, 0.0], [0.0, 0.5], [-2.0, 0.0], [0.0, -7.0]])
    labels = np.array([0, 0, 1, 1])
    scores = mahalanobis_scores(train, labels, np.array([[3.0, 3.0]]), shrinkage=0.5, normalize=True)
    assert scores.predictions[0] == 0
    np.testing.assert_allclose(scores.scores, [-0.5 * 16 * (SQRT_HALF - 0.5) ** 2])


def test_mahalanobis_default_shrinkage_is_ledoit_wolf_on_the_centred_training_features():
    rng = np.random.default_rng(0)
    train = rng.normal(size=(20, 3)) * [1.0, 3.0, 0.2]
    labels = np.repeat([0, 1], 10)
    test = rng.normal(size=(5, 3))
    means = np.stack([train[labels == c].mean(0) for c in (0, 1)])
    _, coefficient = ledoit_wolf(train - means[labels], assume_centered=True)
    default = mahalanobis_scores(train, labels, test)
    explicit = mahalanobis_scores(train, labels, test, shrinkage=coefficient)
    np.testing.assert_allclose(default.scores, explicit.scores)
    np.testing.assert_array_equal(default.predictions, explicit.predictions)


def test_energy_and_logit_scores():
    logits = np.array([[0.0, math.log(3.0)], [0.0, 0.0]])
    np.testing.assert_allclose(energy(logits), [math.log(4.0), math.log(2.0)])
    np.testing.assert_allclose(energy(logits, temperature=2.0), [2 * math.log(1 + math.sqrt(3)), 2 * math.log(2)])
    np.testing.assert_allclose(logit_scores(logits, "max_softmax").scores, [0.75, 0.5])
    np.testing.assert_allclose(logit_scores(logits, "max_logit").scores, [math.log(3.0), 0.0])
    np.testing.assert_array_equal(logit_scores(logits, "energy").predictions, [1, 0])
    with pytest.raises(ValueError, match="score must be"):
        logit_scores(logits, "entropy")


def test_linear_probe_two_classes_symmetric_logits_and_confidence_grows_away_from_the_boundary():
    train = np.array([[-2.0, 0.0], [-1.0, 0.5], [-1.5, -0.5], [1.0, 0.0], [2.0, 0.5], [1.5, -0.5]])
    labels = np.array([0, 0, 0, 1, 1, 1])
    test = np.array([[-3.0, 0.0], [-0.1, 0.0], [0.1, 0.0], [3.0, 0.0]])
    logits = linear_probe_logits(train, labels, test)
    np.testing.assert_allclose(logits[:, 0], -logits[:, 1])
    scores = linear_probe_scores(train, labels, test)
    np.testing.assert_array_equal(scores["max_softmax"].predictions, [0, 0, 1, 1])
    for name in ("max_softmax", "max_logit", "energy"):
        values = scores[name].scores
        assert values[0] > values[1] and values[3] > values[2], name
    legacy = linear_probe_metrics(train, labels, test, np.array([0, -1, -1, 1]))
    assert legacy["max_softmax"] == {"accuracy": 1.0, "auroc": 1.0, "oscr": 1.0}


def test_multi_prototypes_cover_two_modes_of_a_class():
    # class 0 in two directions, (1, 0) and (0, 1); class 1 in (-1, 0) and (0, -1)
    train = np.array([[1.0, 0], [2, 0], [0, 1], [0, 3], [-1, 0], [-2, 0], [0, -1], [0, -2]])
    labels = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    test = np.array([[0.0, 5.0], [1.0, 1.0], [0.0, -3.0]])
    two = multi_prototype_scores(train, labels, test, per_class=2)
    np.testing.assert_array_equal(two.predictions, [0, 0, 1])
    np.testing.assert_allclose(two.scores, [1.0, SQRT_HALF, 1.0])
    # one prototype per class: the single direction (1/sqrt2, 1/sqrt2) of class 0
    one = multi_prototype_scores(train, labels, test, per_class=1)
    np.testing.assert_allclose(one.scores, [SQRT_HALF, 1.0, SQRT_HALF])


def test_standardized_fusion_uses_the_training_clips_statistics():
    # first score: train mean 1, std 1 -> (1, 2) becomes (0, 1); second: train mean 12, std 2 -> (10, 10) is (-1, -1)
    test = [np.array([1.0, 2.0]), np.array([10.0, 10.0])]
    train = [np.array([0.0, 2.0]), np.array([10.0, 14.0])]
    np.testing.assert_allclose(standardized_fusion(test, train), [-1.0, 0.0])
    np.testing.assert_allclose(standardized_fusion(test, train, weights=[1.0, 2.0]), [-2.0, -1.0])
    with pytest.raises(ValueError, match="constant"):
        standardized_fusion(test, [np.ones(2), np.ones(2)])


def test_score_metrics_reads_the_given_class_and_score():
    labels = np.array([0, 1, -1])
    # knowns above the unknown; the second known misclassified: ACC 1/2, AUROC 1, CCR stays 1/2 -> OSCR 1/2
    wrong = OpenSetScores(np.array([0, 0, 1]), np.array([3.0, 2.0, 1.0]))
    assert score_metrics(wrong, labels, 2) == {"accuracy": 0.5, "auroc": 1.0, "oscr": 0.5}
    # both correct, the unknown between them: AUROC 1/2; CCR 1/2 at FPR 0, 1 only at FPR 1 -> OSCR 1/2
    between = OpenSetScores(np.array([0, 1, 0]), np.array([3.0, 1.0, 2.0]))
    assert score_metrics(between, labels, 2) == {"accuracy": 1.0, "auroc": 0.5, "oscr": 0.5}
    with pytest.raises(ValueError, match="predictions"):
        score_metrics(OpenSetScores(np.array([0, 2, 0]), np.zeros(3)), labels, 2)


def test_baseline_metrics_names_every_scorer():
    rng = np.random.default_rng(1)
    centres = np.array([[3.0, 0, 0, 0], [0, 3.0, 0, 0], [0, 0, 3.0, 0]])
    train_labels = np.repeat([0, 1], 15)
    train = centres[train_labels] + rng.normal(scale=0.3, size=(30, 4))
    test_labels = np.repeat([0, 1, -1], 5)
    test = centres[np.where(test_labels < 0, 2, test_labels)] + rng.normal(scale=0.3, size=(15, 4))
    results = baseline_metrics(train, train_labels, test, test_labels)
    assert len(results) == 9
    assert {"kNN k=1 (probe's class)", "kNN k=10 (probe's class)", "nearest class prototype (cosine)"} <= set(results)
    for name, metrics in results.items():
        assert metrics["accuracy"] == 1.0, name
    # the unknown class sits on its own axis: prototype, kNN and Mahalanobis separate it perfectly
    assert results["nearest class prototype (cosine)"]["auroc"] == 1.0
    assert results["kNN k=5 (probe's class)"]["auroc"] == 1.0
    assert results["Mahalanobis (shared covariance, Ledoit-Wolf shrinkage)"]["auroc"] == 1.0
    assert results["Mahalanobis on L2-normalised features"]["auroc"] == 1.0
    # Fewer training clips than a k (a quick run): that kNN is left out, not a failure after training.
    few = baseline_metrics(train[[0, 1, 15, 16, 17]], train_labels[[0, 1, 15, 16, 17]], test, test_labels)
    assert set(results) - set(few) == {"kNN k=10 (probe's class)"}


def test_frame_choice_script_weights_frames_and_scores_prototypes():
    """scripts/quality_frame_choice.py: the three frame weightings of a 16-frame clip, and the prototype score against
    AUROC worked out by hand."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
    from quality_frame_choice import prototype_metrics, weighted

    e0, e1 = np.eye(4)[0], np.eye(4)[1]
    features = np.tile(e0, (1, 16, 1))
    features[0, 5] = e1  # one expressive frame, the others neutral
    intensity = np.zeros((1, 16))
    intensity[0, 5] = 1.0
    frames = {"features": features, "intensity": intensity}
    np.testing.assert_allclose(weighted(frames, "mean of 8 frames")[0], (7 * e0 + e1) / 8)  # frames 1, 3, ..., 15
    np.testing.assert_allclose(weighted(frames, "mean of 16 frames")[0], (15 * e0 + e1) / 16)
    np.testing.assert_allclose(weighted(frames, "true intensity")[0], (1.001 * e1 + 0.015 * e0) / 1.016)

    # Known anger (e0) and disgust (e1), an unknown fear clip: orthogonal to both, then on anger's prototype.
    train, train_labels = np.stack([e0, e0, e1, e1]), np.array([0, 0, 1, 1])  # CLASSES indices
    test_labels = np.array([0, 1, 2])
    apart = prototype_metrics(train, train_labels, np.stack([e0, e1, np.eye(4)[2]]), test_labels, ["anger", "disgust"])
    assert apart == {"auroc": 1.0, "oscr": 1.0}
    on_anger = prototype_metrics(train, train_labels, np.stack([e0, e1, e0]), test_labels, ["anger", "disgust"])
    assert on_anger["auroc"] == pytest.approx(0.5)  # both known clips tie with the unknown one
