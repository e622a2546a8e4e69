"""Is one model's test AUC really above another's? A paired bootstrap over the test rows.

Usage:
    python benchmarks/paired_auc.py A.npz B.npz --task never_married [--rounds 2000]

``A.npz`` / ``B.npz``: test predictions of two models on the *same* rows, in the format of a
run's ``calibration_test.npz`` (``<task>__labels``, ``<task>__probs``; ``gbdt_reference.py
--predictions`` writes the same). Each round resamples the rows with replacement and computes
both AUCs on the same resample, so the spread of AUC(A) − AUC(B) is the test set's resolution
for this pair (Efron & Tibshirani, "An Introduction to the Bootstrap", 1993, ch. 16). Prints
both AUCs, the difference, its 95 % percentile interval and the share of rounds where A wins.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from ranker.metrics import auc as auc_of


def paired_bootstrap(
    labels: np.ndarray, a: np.ndarray, b: np.ndarray, rounds: int = 2000, seed: int = 0
) -> dict[str, float]:
    """AUC(a), AUC(b), their difference and its bootstrap distribution over resampled rows."""
    rng = np.random.default_rng(seed)
    diffs = np.empty(rounds)
    n = len(labels)
    for r in range(rounds):
        ix = rng.integers(0, n, n)
        diffs[r] = auc_of(labels[ix], a[ix]) - auc_of(labels[ix], b[ix])
    lo, hi = np.percentile(diffs, [2.5, 97.5])
    auc_a, auc_b = auc_of(labels, a), auc_of(labels, b)
    return {
        "auc_a": auc_a,
        "auc_b": auc_b,
        "diff": auc_a - auc_b,
        "ci_low": float(lo),
        "ci_high": float(hi),
        "share_a_wins": float((diffs > 0).mean()),
        "rounds": rounds,
    }


def _load(path: Path, task: str) -> tuple[np.ndarray, np.ndarray]:
    with np.load(path) as z:
        keys = (f"{task}__labels", f"{task}__probs")
        missing = [k for k in keys if k not in z.files]
        if missing:
            raise SystemExit(f"{path}: no {missing} (has {sorted(z.files)})")
        return np.asarray(z[keys[0]], dtype=np.float64), np.asarray(z[keys[1]], dtype=np.float64)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("a", type=Path)
    ap.add_argument("b", type=Path)
    ap.add_argument("--task", required=True)
    ap.add_argument("--rounds", type=int, default=2000)
    args = ap.parse_args()
    (ya, pa_), (yb, pb) = _load(args.a, args.task), _load(args.b, args.task)
    if len(ya) != len(yb) or not np.array_equal(ya, yb):
        raise SystemExit(f"{args.a} and {args.b}: the {args.task} labels differ (not the same test rows)")
    r = paired_bootstrap(ya, pa_, pb, args.rounds)
    print(
        f"{args.task}: AUC A {r['auc_a']:.5f}, B {r['auc_b']:.5f}, A − B {r['diff']:+.5f} "
        f"(95 % interval {r['ci_low']:+.5f} … {r['ci_high']:+.5f}; A ahead in "
        f"{100 * r['share_a_wins']:.1f} % of {r['rounds']} resamples)"
    )


if __name__ == "__main__":
    main()
