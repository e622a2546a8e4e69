"""Training samples/s of plain tables vs hashing trick vs Unified Embedding (issue 3, item 3).

Usage: RANKER_DATA_DIR=../shared/data python benchmarks/encoder_throughput.py [--config ...] [--epochs 1]
       [--rounds 3] [--threads 2]

Same model, data and batch size; only `model.encoders.categorical` changes. Reports the median
over interleaved rounds of the mean training samples/s over the epochs (evaluation excluded),
and the embedding parameter count.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import torch

from ranker.config import load_config
from ranker.models import build_model
from ranker.models.numeric_block import ple_settings
from ranker.models.registry import categorical_ids
from ranker.ranking.run import encode, prepare_run_data
from ranker.train import Trainer

ENCODERS = {
    "plain tables": "{kind: embedding, dim: 10}",
    "hashing trick (100%)": "{kind: hashing, dim: 10, memory: 1.0}",
    "unified k=1 (100%)": "{kind: unified, dim: 10, probes: 1, memory: 1.0}",
    "unified k=2 (100%)": "{kind: unified, dim: 10, probes: 2, memory: 1.0}",
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", type=Path, default=Path(__file__).parent / "configs" / "baseline-c-frappe.yaml")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3, help="median over this many interleaved rounds")
    ap.add_argument(
        "--results",
        type=Path,
        default=None,
        help="also write the rows to this results file (layout of results_store.py)",
    )
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print("| encoder | embedding params | train samples/s |\n|---|---|---|")
    prepared = {}
    for name, enc in ENCODERS.items():
        cfg = load_config(
            args.config,
            [
                f"model.encoders.categorical={enc}",
                f"train.epochs={args.epochs}",
                "train.patience=100",
                "train.progress=false",
            ],
        )
        assert cfg.model.encoders.categorical is not None
        prep = prepare_run_data(cfg)
        assert prep.pre.ids == categorical_ids(cfg.model) and ple_settings(cfg.model)[0] is None
        prepared[name] = (cfg, prep, encode(prep, "train"), encode(prep, "valid"))
    speeds: dict[str, list[float]] = {name: [] for name in ENCODERS}
    params: dict[str, int] = {}
    # Rounds interleave the encoders, so that a change in the machine's load hits all of them.
    for _ in range(args.rounds):
        for name, (cfg, prep, train, valid) in prepared.items():
            torch.manual_seed(0)
            model = build_model(cfg.model, prep.pre.layout())
            with tempfile.TemporaryDirectory() as tmp:
                result = Trainer(model, cfg.train, prep.data.tasks, Path(tmp)).fit(train, valid)
            speeds[name].append(result.train_samples_per_s)
            params[name] = sum(p.numel() for p in model.embeddings.parameters())
    for name in ENCODERS:
        print(f"| {name} | {params[name]:,} | {statistics.median(speeds[name]):,.0f} |", flush=True)
    if args.results:
        from results_store import save_document  # type: ignore[import-not-found]

        save_document(
            args.results,
            {
                name: {
                    "embedding_params": params[name],
                    "train_samples_per_s": speeds[name],
                    "median_samples_per_s": statistics.median(speeds[name]),
                }
                for name in ENCODERS
            },
            config=str(args.config),
            seed=None,
            notes={"threads": args.threads, "epochs": args.epochs, "rounds": args.rounds},
        )


if __name__ == "__main__":
    main()
