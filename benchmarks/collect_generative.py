"""Collect generative-ranker runs (one per seed) into one results JSON with mean ± std.

Usage:
    python benchmarks/collect_generative.py RUN_DIR [RUN_DIR ...] \
        [--out benchmarks/results/generative-rk-ml100k.json]

Per run: test (and valid) AUC / GAUC / logloss per task at the best validation epoch, best
epoch, train rows/s and events/s (mean over epochs, training loop only), seconds per epoch.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any

from results_store import save_document  # type: ignore[import-not-found]

METRICS = ("auc", "gauc", "logloss")


def summary(values: list[float]) -> dict[str, float]:
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return {"mean": statistics.fmean(values), "std": std}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+", type=Path)
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/generative-rk-ml100k.json"))
    args = p.parse_args()
    runs = [json.loads((r / "metrics.json").read_text()) for r in args.runs]
    out: dict[str, Any] = {"runs": {str(r): m for r, m in zip(args.runs, runs, strict=True)}, "summary": {}}
    for split in ("valid", "test"):
        for task in runs[0][split]:
            for key in METRICS:
                out["summary"][f"{split}/{task}/{key}"] = summary([m[split][task][key] for m in runs])
    for key in ("train_samples_per_s", "train_events_per_s", "seconds_per_epoch", "best_epoch", "params"):
        out["summary"][key] = summary([float(m[key]) for m in runs])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_document(
        args.out, out["runs"], name="generative HSTU", notes={"summary": out["summary"]}, protocol="RK-ML100K"
    )
    for k, v in out["summary"].items():
        print(f"{k:<28} {v['mean']:.4f} ± {v['std']:.4f}")


if __name__ == "__main__":
    main()
