"""ANN (faiss HNSW / IVF) against exact top-k on a trained retrieval run's item index.

Usage:
    RANKER_DATA_DIR=../shared/data RANKER_THREADS=1 python benchmarks/ann_retrieval.py RUN_DIR [--k 10]

Queries are the test users' vectors (every user of the protocol); the index holds every item
vector of the run. Recall@k = |ANN top-k ∩ exact top-k| / k (no history exclusion: index
quality only), queries/s single-threaded, one batch of all queries. Results are written to
benchmarks/results/ann-<dataset>.json.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import faiss
import numpy as np
import torch
from results_store import save_document  # type: ignore[import-not-found]  # noqa: E402

from ranker.retrieval.ann import ann_report
from ranker.retrieval.batches import query_batch
from ranker.retrieval.run import load_data, load_run

HERE = Path(__file__).parent
SETTINGS = [
    {"kinds": ("hnsw",), "hnsw_m": 16, "ef_search": 16},
    {"kinds": ("hnsw",), "hnsw_m": 32, "ef_search": 64},
    {"kinds": ("hnsw",), "hnsw_m": 32, "ef_search": 256},
    {"kinds": ("ivf",), "nlist": 32, "nprobe": 2},
    {"kinds": ("ivf",), "nlist": 32, "nprobe": 8},
    {"kinds": ("ivf",), "nlist": 32, "nprobe": 32},
]


@torch.no_grad()
def test_user_vectors(run_dir: Path) -> tuple[str, torch.Tensor, torch.Tensor]:
    cfg, model, _ = load_run(run_dir)
    data = load_data(cfg)
    users = np.arange(len(data.test_target))
    batch = query_batch(data.test_input, users, data.max_len, data.test_target_time)
    return cfg.data.dataset, model.user_vectors(batch.items, batch.times, batch.query_times), model.item_vectors()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run_dir", type=Path)
    p.add_argument("--k", type=int, default=10)
    args = p.parse_args()
    torch.set_num_threads(1)
    faiss.omp_set_num_threads(1)
    dataset, queries, items = test_user_vectors(args.run_dir)
    rows = []
    for setting in SETTINGS:
        opts = {k: v for k, v in setting.items() if k != "kinds"}
        report = ann_report(queries, items, args.k, setting["kinds"], **opts)  # type: ignore[arg-type]
        kind = setting["kinds"][0]  # type: ignore[index]
        rows.append({"index": kind, **opts, **report[kind], "exact_qps": report["exact_qps"]})
        print(
            f"{kind} {opts}: recall@{args.k} {report[kind]['recall']:.4f}, "
            f"{report[kind]['qps']:,.0f} q/s (exact {report['exact_qps']:,.0f} q/s)"
        )
    out = {"run_dir": str(args.run_dir), "k": args.k, "queries": len(queries), "items": len(items) - 1, "rows": rows}
    path = HERE / "results" / f"ann-{dataset}.json"
    save_document(path, {"item index": out}, name="item index")
    print(path)


if __name__ == "__main__":
    main()
