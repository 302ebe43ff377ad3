"""metric: OSCR + AUROC of `hesp_hf.metrics.open_set_metrics` on N = 1,000,000 predictions, and its speed-up over
the O(n^2) definition loop (one count over all samples per threshold, as the widely copied ARPL code does) at
N = 20,000."""

import numpy as np

from hesp_hf.metrics import load_oscr_metric, open_set_metrics

from .harness import Settings, best_time


def open_set_problem(n: int, k: int = 7, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(n, k)).astype(np.float32)
    references = rng.integers(0, k, n)
    references[rng.random(n) < 0.3] = -1
    known = references >= 0
    logits[known, references[known]] += 1.5
    return logits, references


def definition_loop_oscr(logits: np.ndarray, references: np.ndarray) -> float:
    """OSCR by its definition, one pass over all samples per threshold: O(n^2)."""
    scores = logits.max(axis=1).astype(np.float64)
    known = references != -1
    correct = known & (logits.argmax(axis=1) == references)
    points = [(0.0, 0.0)]
    for threshold in np.unique(scores)[::-1]:
        accepted = scores >= threshold
        points.append(((accepted & ~known).sum() / (~known).sum(), (accepted & correct).sum() / known.sum()))
    points = np.array(points)
    return float(np.sum(np.diff(points[:, 0]) * (points[1:, 1] + points[:-1, 1]) / 2))


def benchmark_metric(quick: bool) -> tuple[list[dict], dict[str, float]]:
    large, small = (100_000, 4_000) if quick else (1_000_000, 20_000)
    logits, references = open_set_problem(large)
    fast_large = best_time(lambda: open_set_metrics(logits, references), repeats=3)
    module = load_oscr_metric()
    through_evaluate = best_time(lambda: module.compute(predictions=logits, references=references), repeats=3)
    small_logits, small_references = logits[:small], references[:small]
    fast_small = best_time(lambda: open_set_metrics(small_logits, small_references), repeats=5)
    naive_small = best_time(lambda: definition_loop_oscr(small_logits, small_references), repeats=1)
    agreement = abs(
        open_set_metrics(small_logits, small_references)["oscr"] - definition_loop_oscr(small_logits, small_references)
    )
    rows = [
        {"what": f"open_set_metrics (ACC+AUROC+OSCR+FPR95), N={large:,}", "seconds": fast_large, "ratio": None},
        {"what": f"open_set_metrics, N={small:,}", "seconds": fast_small, "ratio": None},
        {
            "what": f"the same through the `evaluate` module, N={large:,} (baseline: the pure function)",
            "seconds": through_evaluate,
            "ratio": fast_large / through_evaluate,
        },
        {
            "what": f"O(n^2) definition loop, N={small:,} (|OSCR diff| {agreement:.1e})",
            "seconds": naive_small,
            "ratio": naive_small / fast_small,
        },
    ]
    key = "metric.speedup_over_naive_20k" if not quick else "metric.speedup_over_naive_quick"
    return rows, {
        key: naive_small / fast_small,
        "metric.seconds_1m" if not quick else "metric.seconds_quick": fast_large,
        "metric.evaluate_over_pure": through_evaluate / fast_large,
    }


def run(settings: Settings):
    return benchmark_metric(settings.quick)
