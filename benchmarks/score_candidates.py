"""Inference cost of trained rankers: candidates/s scoring 1,000 candidates for one user on CPU.

Usage:
    RANKER_DATA_DIR=../shared/data python benchmarks/score_candidates.py RUN_DIR [RUN_DIR ...] \
        [--candidates 1000] [--repeats 30] [--threads 1]

For each run directory: the first test row's user (features, history, context) is repeated
once per candidate and only the item id column (``data.item_column``) changes, over that many
distinct train items, so the batch is what a serving call for one user sends. The rows are
encoded once with the run's preprocessor (feature lookup is not timed); the timer covers the
model's forward pass in evaluation mode under ``torch.no_grad`` plus the serving score
(``serving`` section). Reported: the median over `repeats` calls after 3 warm-ups.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch
from timing import median_seconds

from ranker.config import load_config
from ranker.data.preprocess import Preprocessor
from ranker.data.tensors import TensorData
from ranker.models import build_model
from ranker.ranking.run import resolve_data
from ranker.tasks import TaskSpec, serving_score
from ranker.train import load_weights


def one_user_batch(run_dir: Path, n: int) -> tuple[torch.nn.Module, dict[str, torch.Tensor], TaskSpec, dict]:
    cfg = load_config(run_dir / "config.yaml")
    pre = Preprocessor.load(run_dir / "preprocessor.json")
    data, tables = resolve_data(cfg.data)
    item = data.item_column
    if item is None:
        raise SystemExit(f"{run_dir}: the data has no item_column to vary")
    items = np.unique(tables["train"].column(item).to_numpy(zero_copy_only=False))
    if len(items) < n:
        raise SystemExit(f"only {len(items)} distinct items; ask for fewer --candidates")
    chosen = np.random.default_rng(0).choice(items, n, replace=False)
    user_row = tables["test"].slice(0, 1)
    rows = user_row.take(pa.array(np.zeros(n, dtype=np.int64)))
    rows = rows.set_column(rows.schema.get_field_index(item), item, pa.array(chosen, rows.schema.field(item).type))
    batch = TensorData.from_encoded(pre.transform(rows)).tensors
    model = build_model(cfg.model, pre.layout())
    load_weights(model, run_dir / "model.safetensors")
    return model.eval(), batch, TaskSpec.from_tasks(data.tasks), cfg.serving.model_dump()


@torch.no_grad()
def candidates_per_s(run_dir: Path, n: int, repeats: int) -> tuple[float, int]:
    model, batch, spec, serving = one_user_batch(run_dir, n)

    def call() -> torch.Tensor:
        return serving_score(spec.outputs(model(batch)), spec, serving["weights"], serving["combine"])

    return n / median_seconds(call, repeats), sum(p.numel() for p in model.parameters())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--candidates", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument(
        "--results",
        type=Path,
        default=None,
        help="also write the rows to this results file (layout of results_store.py)",
    )
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"| run | params | candidates/s ({args.candidates} for one user, {args.threads} thread) |\n|---|---|---|")
    rows: dict[str, dict[str, object]] = {}
    for run in args.runs:
        speed, params = candidates_per_s(run, args.candidates, args.repeats)
        print(f"| {run} | {params:,} | {speed:,.0f} |", flush=True)
        rows[str(run)] = {
            "run_dir": str(run),
            "params": params,
            "candidates_per_s": speed,
            "candidates": args.candidates,
        }
    if args.results:
        from results_store import save_document  # type: ignore[import-not-found]

        save_document(args.results, rows, seed=None, notes={"threads": args.threads, "repeats": args.repeats})


if __name__ == "__main__":
    main()
