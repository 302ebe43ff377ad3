"""Does the conformal threshold keep its promise on real scores? Random calibration / test splits of a pool of known
clips' known-ness scores: calibrate on one part at each level, measure the accepted share of the other, and compare
the share of splits that fall below the target with what split conformal predicts.

    python scripts/conformal_check.py --checkpoint outputs/demo --rows known-rows.jsonl [--splits 1000]
        [--levels 0.9 0.95 0.99] [--calibration_size N] [--seed 0]

The pool: the checkpoint's saved calibration scores (`config.calibration_scores`) plus the `score` of every row of
`--rows` (`hesp-predict` output on clips of the *known* classes from the same distribution, e.g. the run's known test
clips). For exchangeable scores the accepted count on `m` test clips after calibrating on `n` follows the
beta-binomial(m, n + 1 - k, k) exactly, so the predicted share of splits below the target is exact; the conformal
guarantee is on the mean acceptance (>= 1 - k / (n + 1)). The table gives both, with the observed values and a
3-sigma band for the observed share over `--splits` splits.
"""

import argparse
import json
import math
from pathlib import Path

import numpy as np
from scipy import stats

from hesp_hf.calibration import conformal_rank, conformal_threshold, guaranteed_acceptance


def split_check(pool: np.ndarray, levels: list[float], splits: int, calibration_size: int, seed: int) -> list[dict]:
    """Per level: the observed mean test acceptance and share of splits below the target over `splits` random
    splits of `pool` (`calibration_size` calibration scores, the rest test), beside the predictions."""
    rng = np.random.default_rng(seed)
    pool = np.asarray(pool, dtype=np.float64)
    n, m = calibration_size, pool.size - calibration_size
    if not 0 < n < pool.size:
        raise ValueError(f"--calibration_size must lie in 1..{pool.size - 1} for a pool of {pool.size}, got {n}.")
    permutations = [rng.permutation(pool.size) for _ in range(splits)]
    results = []
    for level in levels:
        k = conformal_rank(n, level)
        if k == 0:
            results.append({"level": level, "n": n, "m": m, "k": 0, "reachable": False})
            continue
        accepted = np.empty(splits)
        for index, order in enumerate(permutations):
            calibration, test = pool[order[:n]], pool[order[n:]]
            accepted[index] = (test >= conformal_threshold(calibration, level)).mean()
        below = float((accepted < level - 1e-12).mean())
        predicted = float(stats.betabinom(m, n + 1 - k, k).cdf(math.ceil(level * m - 1e-9) - 1))
        band = 3 * math.sqrt(predicted * (1 - predicted) / splits)
        results.append(
            {
                "level": level,
                "n": n,
                "m": m,
                "k": k,
                "reachable": True,
                "guaranteed": guaranteed_acceptance(n, level),
                "mean_acceptance": float(accepted.mean()),
                "below_observed": below,
                "below_predicted": predicted,
                "band": band,
                # the share below target within 3 sigma of the beta-binomial's, and the mean at the guarantee
                "within": abs(below - predicted) <= band + 1e-12
                and accepted.mean() >= guaranteed_acceptance(n, level) - 3 * accepted.std() / math.sqrt(splits),
            }
        )
    return results


def table(results: list[dict], splits: int) -> str:
    lines = [
        f"| level | n (calibration) | m (test) | k | guaranteed mean | mean test acceptance | splits below target "
        f"(of {splits}) | predicted (beta-binomial) ± 3σ | holds |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in results:
        if not r["reachable"]:
            lines.append(f"| {r['level']} | {r['n']} | {r['m']} | 0 | out of reach with n={r['n']} | | | | |")
            continue
        lines.append(
            f"| {r['level']} | {r['n']} | {r['m']} | {r['k']} | {r['guaranteed']:.4f} | {r['mean_acceptance']:.4f} | "
            f"{r['below_observed']:.3f} | {r['below_predicted']:.3f} ± {r['band']:.3f} | "
            + ("yes |" if r["within"] else "NO |")
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="a trained run folder (its config's calibration scores)")
    parser.add_argument("--rows", nargs="*", default=[], help="hesp-predict JSONL rows of known-class clips")
    parser.add_argument("--splits", type=int, default=1000)
    parser.add_argument("--levels", type=float, nargs="+", default=[0.9, 0.95, 0.99])
    parser.add_argument("--calibration_size", type=int, default=None, help="default: half the pool")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    config = json.loads((Path(args.checkpoint) / "config.json").read_text())
    pool = list(config.get("calibration_scores") or [])
    for path in args.rows:
        pool += [
            row["score"]
            for row in map(json.loads, Path(path).read_text().splitlines())
            if row.get("score") is not None
        ]
    if len(pool) < 4:
        raise SystemExit(f"conformal_check: a pool of {len(pool)} scores is too small (saved scores + --rows).")
    size = args.calibration_size or len(pool) // 2
    results = split_check(np.array(pool), args.levels, args.splits, size, args.seed)
    print(f"pool: {len(pool)} known clips ({len(config.get('calibration_scores') or [])} saved calibration scores)")
    print(table(results, args.splits))
    metrics = Path(args.checkpoint) / "metrics.json"
    if metrics.is_file():
        scaling = json.loads(metrics.read_text()).get("calibration")
        if scaling:
            print(
                f"temperature {scaling['temperature']:.3f}: ECE {scaling['ece_before']:.4f} -> "
                f"{scaling['ece_after']:.4f}, Brier {scaling['brier_before']:.4f} -> {scaling['brier_after']:.4f} "
                f"({scaling['clips']} known test clips)"
            )


if __name__ == "__main__":
    main()
