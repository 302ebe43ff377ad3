"""The unknown threshold: calibrated on the known-ness scores of known validation clips only."""

import logging
import math

import numpy as np

from ..modeling.modeling_hesp import HESPForOpenSetVideoClassification


logger = logging.getLogger(__name__)


def calibrate_threshold(scores: np.ndarray, keep_share: float = 0.95) -> float:
    """The highest threshold on known-ness scores of *known* validation clips that still accepts at least
    `keep_share` of them (a clip is accepted when its score >= the threshold): the empirical quantile, with no
    guarantee on new clips. Training now calibrates by split conformal prediction (`hesp_hf.calibration`)."""
    scores = np.sort(np.asarray(scores, dtype=np.float64))
    if scores.size == 0:
        raise ValueError("Threshold calibration needs at least one known validation clip.")
    if not 0 < keep_share <= 1:
        raise ValueError(f"keep_share must lie in (0, 1], got {keep_share}.")
    rejected = math.floor((1 - keep_share) * scores.size + 1e-9)  # at most this many may fall below
    return float(scores[min(rejected, scores.size - 1)])


def set_unknown_threshold(model: HESPForOpenSetVideoClassification, threshold: float) -> None:
    model.config.unknown_threshold = float(threshold)
    logger.info("unknown_threshold calibrated to %.6f", threshold)
