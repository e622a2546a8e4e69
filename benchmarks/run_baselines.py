"""Train the baseline MLP on each ranking protocol with seeds 2021-2023; write a results table.

Usage:
    RANKER_DATA_DIR=../shared/data python benchmarks/run_baselines.py [--datasets rk-ml100k c-frappe]

Writes benchmarks/results/baseline-<dataset>.json (per-seed metrics) and prints a markdown table
(test metrics at the best validation epoch, mean ± std over the three seeds).
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import numpy as np
import torch
from results_store import save_document  # type: ignore[import-not-found]  # noqa: E402

from ranker.config import load_config
from ranker.ranking.run import train_run

HERE = Path(__file__).parent
DATASETS = ("rk-ml100k", "c-frappe", "t-adult", "mt-census")
SEEDS = (2021, 2022, 2023)


def run(dataset: str, out_root: Path, seeds: tuple[int, ...]) -> dict:
    per_seed = []
    for seed in seeds:
        cfg = load_config(HERE / "configs" / f"baseline-{dataset}.yaml", [f"train.seed={seed}"])
        out = out_root / f"baseline-{dataset}-{seed}"
        start = time.perf_counter()
        metrics = train_run(cfg, out)
        metrics["wall_s"] = time.perf_counter() - start
        per_seed.append(metrics)
        print(
            f"{dataset} seed {seed}: " + ", ".join(f"{t} auc {m['auc']:.4f}" for t, m in metrics["test"].items()),
            flush=True,
        )
    result = {
        "dataset": dataset,
        "seeds": list(seeds),
        "runs": per_seed,
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads",
        "date": time.strftime("%Y-%m-%d"),
    }
    save_document(
        HERE / "results" / f"baseline-{dataset}.json",
        {f"baseline|{m['seed']}": m for m in per_seed},
        name="baseline",
        config=f"benchmarks/configs/baseline-{dataset}.yaml",
        notes={"dataset": dataset, "seeds": list(seeds), "torch_threads": torch.get_num_threads()},
    )
    return result


def table(result: dict) -> str:
    runs = result["runs"]
    lines = []
    for task in runs[0]["test"]:
        cells = []
        for key in ("auc", "gauc", "logloss", "accuracy"):
            vals = [r["test"][task].get(key) for r in runs]
            if any(v is None for v in vals):
                cells.append("–")
                continue
            cells.append(f"{np.mean(vals):.4f} ± {np.std(vals):.4f}")
        base = [r["baseline"]["test"][task]["auc"] for r in runs]
        speed = np.mean([r["train_samples_per_s"] for r in runs])
        epochs = "/".join(str(r["best_epoch"]) for r in runs)
        lines.append(
            f"| {result['dataset']} | {task} | "
            + " | ".join(cells)
            + f" | {np.mean(base):.4f} | {runs[0]['params']:,} | {speed:,.0f} | {epochs} |"
        )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--datasets", nargs="+", default=list(DATASETS))
    ap.add_argument("--seeds", nargs="+", type=int, default=list(SEEDS))
    ap.add_argument("--out", type=Path, default=Path("runs/benchmarks"))
    args = ap.parse_args()
    print("| protocol | task | AUC | GAUC | logloss | accuracy | popularity AUC | params | samples/s | best epochs |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    rows = [table(run(ds, args.out, tuple(args.seeds))) for ds in args.datasets]
    print("\n".join(rows))


if __name__ == "__main__":
    main()
