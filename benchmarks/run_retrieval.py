"""Train retrieval configs × seeds and print a markdown table (test at the best validation epoch).

Usage:
    RANKER_DATA_DIR=../shared/data RANKER_THREADS=1 python benchmarks/run_retrieval.py \
        benchmarks/configs/retrieval-sasrec-r-ml100k.yaml benchmarks/configs/retrieval-hstu-r-ml100k.yaml \
        [--seeds 2021 2022 2023] [--out runs/retrieval] [--set train.epochs=5] [--table-only] \
        [--results-suffix=-ablations]

Results: benchmarks/results/retrieval-<dataset>.json keyed ``<config name>|<seed>`` (each run's
metrics.json plus wall seconds). Finished runs are skipped and an interrupted run resumes from
its checkpoint in ``--out``, so rerunning the same command continues where it stopped.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np
from results_store import load_results, save_result  # type: ignore[import-not-found]

from ranker.config import load_retrieval_config
from ranker.retrieval.run import train_retrieval_run

HERE = Path(__file__).parent
COLUMNS = ("HR@10", "NDCG@10", "HR@50", "NDCG@50", "HR@200", "MRR")


def results_path(dataset: str, suffix: str = "") -> Path:
    """``suffix`` (--results-suffix, e.g. ``-ablations``): a separate results file."""
    return HERE / "results" / f"retrieval-{dataset}{suffix}.json"


def run(configs: list[Path], seeds: list[int], out: Path, overrides: list[str], suffix: str = "") -> None:
    for path in configs:
        for seed in seeds:
            cfg = load_retrieval_config(path, [*overrides, f"train.seed={seed}", "train.progress=false"])
            key, res = f"{cfg.name}|{seed}", results_path(cfg.data.dataset, suffix)
            if key in load_results(res):
                continue
            print(f"{key}: training", flush=True)
            start = time.perf_counter()
            metrics = train_retrieval_run(cfg, out / f"{cfg.name}-{seed}")
            metrics["wall_s"] = time.perf_counter() - start
            metrics["overrides"] = overrides
            save_result(res, key, metrics, name=cfg.name, seed=seed, config=str(path))
            t = metrics["test"]
            print(
                f"{key}: best epoch {metrics['best_epoch']}, test HR@10 {t['HR@10']:.4f} "
                f"NDCG@10 {t['NDCG@10']:.4f}, {metrics['seconds_per_epoch']:.1f} s/epoch",
                flush=True,
            )


def table(results: dict[str, Any]) -> str:
    """Markdown: mean ± std over seeds of the test metrics, epochs and seconds per epoch."""
    names = list(dict.fromkeys(k.split("|")[0] for k in results))
    head = ["model", "seeds", *COLUMNS, "best epoch", "s/epoch", "params"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name in names:
        runs = [v for k, v in results.items() if k.split("|")[0] == name]
        cells = [name, str(len(runs))]
        for col in COLUMNS:
            vals = np.array([r["test"][col] for r in runs])
            cells.append(f"{vals.mean():.4f} ± {vals.std():.4f}")
        cells.append(", ".join(str(r["best_epoch"]) for r in runs))
        cells.append(f"{np.mean([r['seconds_per_epoch'] for r in runs]):.1f}")
        cells.append(f"{runs[0]['params']:,}")
        lines.append("| " + " | ".join(cells) + " |")
    pop = next(iter(results.values()), {}).get("most_popular", {}).get("test")
    if pop:
        lines.append("| most popular | – | " + " | ".join(f"{pop[c]:.4f}" for c in COLUMNS) + " | – | – | – |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("configs", type=Path, nargs="+")
    p.add_argument("--seeds", type=int, nargs="+", default=[2021, 2022, 2023])
    p.add_argument("--out", type=Path, default=Path("runs/retrieval"))
    p.add_argument("--set", dest="overrides", action="append", default=[])
    p.add_argument("--table-only", action="store_true")
    p.add_argument("--results-suffix", default="", help="e.g. -ablations: a separate results file")
    args = p.parse_args()
    if not args.table_only:
        run(args.configs, args.seeds, args.out, args.overrides, args.results_suffix)
    datasets = dict.fromkeys(load_retrieval_config(c).data.dataset for c in args.configs)
    for dataset in datasets:
        print(f"\n{dataset} (test at the best validation NDCG@10, mean ± std over seeds)\n")
        print(table(load_results(results_path(dataset, args.results_suffix))))


if __name__ == "__main__":
    main()
