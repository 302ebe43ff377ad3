"""The baseline every open-set result here is compared with: a linear probe on frozen CLIP features."""

import numpy as np
from sklearn.linear_model import LogisticRegression

from ..metrics import open_set_metrics


def linear_probe_metrics(
    train_features: np.ndarray, train_labels: np.ndarray, test_features: np.ndarray, test_labels: np.ndarray
) -> dict[str, dict[str, float]]:
    """Logistic regression (C = 10) on clip features `(N, D)` of the known training clips, scored on the test clips
    (`test_labels` -1 for unknown ones) by max-softmax and by max-logit: `{"max_softmax": {...}, "max_logit": {...}}`
    with ACC / AUROC / OSCR each."""
    fitted = LogisticRegression(max_iter=2000, C=10.0).fit(train_features, train_labels)
    logits = fitted.decision_function(test_features)
    results = {}
    for score in ("max_softmax", "max_logit"):
        metrics = open_set_metrics(logits, test_labels, score=score)
        results[score] = {name: float(metrics[name]) for name in ("accuracy", "auroc", "oscr")}
    return results
