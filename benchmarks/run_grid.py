"""Run a grid of model variants × seeds on one protocol and print a markdown table.

A grid file (YAML) names a base config and the variants, each a list of ``--set`` overrides::

    base: configs/baseline-c-frappe.yaml     # relative to the grid file
    seeds: [2021, 2022, 2023]
    variants:
      - {name: MLP (baseline), set: []}
      - {name: DCN-V2 stacked, set: ["model.interaction={kind: cross, num_layers: 3}"]}

Usage:
    RANKER_DATA_DIR=../shared/data python benchmarks/run_grid.py benchmarks/grids/dcn-c-frappe.yaml \
        [--only "DCN-V2 stacked"] [--out runs/grid]

Results: benchmarks/results/grid-<grid name>.json (every run's metrics.json; runs already in the
file are skipped, so an interrupted grid resumes) and a table of test metrics at the best
validation epoch, mean ± std over seeds, with parameter counts and training samples/s.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from results_store import load_results, save_result  # type: ignore[import-not-found]

from ranker.config import load_config
from ranker.ranking.run import train_run

HERE = Path(__file__).parent


def run_grid(grid_path: Path, out_root: Path, only: list[str] | None, seeds: list[int] | None = None) -> dict[str, Any]:
    grid = yaml.safe_load(grid_path.read_text())
    results_path = HERE / "results" / f"grid-{grid_path.stem}.json"
    results = load_results(results_path)
    base = (grid_path.parent / grid["base"]).resolve()
    for variant in grid["variants"]:
        if only and variant["name"] not in only:
            continue
        for seed in seeds or grid.get("seeds", [2021, 2022, 2023]):
            key = f"{variant['name']}|{seed}"
            if key in results:
                continue
            cfg = load_config(base, [*variant.get("set", []), f"train.seed={seed}", "train.progress=false"])
            slug = "".join(c if c.isalnum() else "-" for c in variant["name"]).strip("-").lower()
            start = time.perf_counter()
            metrics = train_run(cfg, out_root / grid_path.stem / f"{slug}-{seed}")
            metrics["wall_s"] = time.perf_counter() - start
            metrics["overrides"] = variant.get("set", [])
            results = save_result(results_path, key, metrics, name=variant["name"], seed=seed, config=str(grid_path))
            print(f"{key}: " + ", ".join(f"{t} auc {m['auc']:.4f}" for t, m in metrics["test"].items()), flush=True)
    return results


def table(grid_path: Path, results: dict[str, Any]) -> str:
    grid = yaml.safe_load(grid_path.read_text())
    wanted = [m for m in ("auc", "gauc", "logloss", "accuracy") if m in grid.get("metrics", ["auc", "logloss"])]
    names = {v["name"] for v in grid["variants"]}
    # Columns: every task of any variant (a single-task row leaves the others' cells as "–").
    tasks = list(dict.fromkeys(t for k, r in results.items() if k.split("|")[0] in names for t in r["test"]))
    rows = []
    for variant in grid["variants"]:
        runs = [v for k, v in results.items() if k.split("|")[0] == variant["name"]]
        if not runs:
            continue
        cells = []
        for task in tasks:
            for metric in wanted:
                vals = [r["test"].get(task, {}).get(metric) for r in runs]
                cells.append(f"{np.mean(vals):.4f} ± {np.std(vals):.4f}" if all(v is not None for v in vals) else "–")
        speed = np.mean([r["train_samples_per_s"] for r in runs])
        rows.append(
            f"| {variant['name']} | " + " | ".join(cells) + f" | {runs[0]['params']:,} | {speed:,.0f} | {len(runs)} |"
        )
    return "\n".join(rows)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("grid", type=Path)
    ap.add_argument("--only", nargs="*")
    ap.add_argument("--seeds", nargs="*", type=int, help="a subset of the grid's seeds (resumable)")
    ap.add_argument("--out", type=Path, default=Path("runs/grid"))
    ap.add_argument("--table-only", action="store_true")
    args = ap.parse_args()
    results_path = HERE / "results" / f"grid-{args.grid.stem}.json"
    if args.table_only:
        results = load_results(results_path)
    else:
        results = run_grid(args.grid, args.out, args.only, args.seeds)
    print(table(args.grid, results))


if __name__ == "__main__":
    main()
