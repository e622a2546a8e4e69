"""A gradient-boosted-trees reference on a ranking protocol: how high can each task's AUC go?

Usage:
    pip install -e ".[bench]"    # lightgbm: not a dependency of ranker, this script only
    RANKER_DATA_DIR=../shared/data RANKER_THREADS=1 python benchmarks/gbdt_reference.py \
        benchmarks/configs/mtl-mt-census.yaml [--seeds 2021 2022 2023] [--predictions DIR]

The config's data section gives the protocol (same recipe, same train/valid/test split as the
neural runs). Per task and seed: LightGBM (one binary model per task, trained on the rows
where the task's label is not masked), categorical columns as LightGBM categoricals (codes
fitted on train; unseen values → missing), numerical columns as they are, early stopping on
validation AUC (patience 50 rounds, at most 3,000), test AUC at the best round. Writes
``benchmarks/results/gbdt-<dataset>.json`` and prints a table. ``--predictions DIR`` also writes
each seed's test probabilities as ``DIR/<seed>.npz`` with the keys of a run's
``calibration_test.npz`` (``<task>__labels``, ``<task>__probs``), for ``paired_auc.py``.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from results_store import save_document  # type: ignore[import-not-found]  # noqa: E402

from ranker.config import load_config
from ranker.metrics import auc
from ranker.ranking.run import prepare_run_data

HERE = Path(__file__).parent


def _columns(table: pa.Table, features: list, train: pa.Table) -> np.ndarray:
    """(N, F) float matrix: categorical codes = index among train's distinct values (unseen or
    missing → NaN) and raw numericals (missing → NaN)."""
    cols = []
    for f in features:
        column = table.column(f.name)
        if f.kind == "categorical":
            column = pc.index_in(column, value_set=pc.unique(train.column(f.name)))
        cols.append(column.cast(pa.float64()).to_numpy(zero_copy_only=False))
    return np.stack(cols, axis=1)


def _labels(table: pa.Table, task) -> tuple[np.ndarray, np.ndarray]:
    """Labels and the mask of rows where the task is defined."""
    y = np.asarray(table.column(task.column or task.name).to_numpy(zero_copy_only=False), dtype=np.float64)
    keep = np.ones(len(y), dtype=bool)
    if task.mask_column:
        keep = np.asarray(table.column(task.mask_column).to_numpy(zero_copy_only=False)) > 0
    return y, keep


def run(config: Path, seeds: list[int], predictions: Path | None = None) -> dict:
    import lightgbm as lgb

    cfg = load_config(config)
    prep = prepare_run_data(cfg)
    features = [f for f in prep.data.features if f.kind in ("categorical", "numerical")]
    x = {s: _columns(prep.tables[s], features, prep.tables["train"]) for s in ("train", "valid", "test")}
    cat_idx = [i for i, f in enumerate(features) if f.kind == "categorical"]
    threads = int(os.environ.get("RANKER_THREADS", 0)) or 0
    out: dict = {"config": str(config), "features": [f.name for f in features], "runs": {}}
    saved: dict[int, dict[str, np.ndarray]] = {seed: {} for seed in seeds}
    for task in prep.data.tasks:
        ys = {s: _labels(prep.tables[s], task) for s in ("train", "valid", "test")}
        for seed in seeds:
            params = {
                "objective": "binary",
                "metric": "auc",
                "learning_rate": 0.05,
                "num_leaves": 63,
                "min_data_in_leaf": 50,
                "feature_fraction": 0.8,
                "bagging_fraction": 0.8,
                "bagging_freq": 1,
                "seed": seed,
                "verbose": -1,
                "num_threads": threads,
            }
            start = time.perf_counter()
            (ytr, mtr), (yva, mva), (yte, mte) = ys["train"], ys["valid"], ys["test"]
            train = lgb.Dataset(x["train"][mtr], ytr[mtr], categorical_feature=cat_idx)
            valid = lgb.Dataset(x["valid"][mva], yva[mva], categorical_feature=cat_idx, reference=train)
            model = lgb.train(
                params,
                train,
                num_boost_round=3000,
                valid_sets=[valid],
                callbacks=[lgb.early_stopping(50, verbose=False)],
            )
            p_valid = model.predict(x["valid"][mva], num_iteration=model.best_iteration)
            p_test = model.predict(x["test"][mte], num_iteration=model.best_iteration)
            record = {
                "valid_auc": auc(yva[mva], p_valid),
                "test_auc": auc(yte[mte], p_test),
                "best_round": model.best_iteration,
                "seconds": time.perf_counter() - start,
            }
            out["runs"][f"{task.name}|{seed}"] = record
            saved[seed].update({f"{task.name}__labels": yte[mte], f"{task.name}__probs": p_test})
            print(
                f"{task.name} seed {seed}: valid AUC {record['valid_auc']:.5f} test AUC "
                f"{record['test_auc']:.5f} (round {record['best_round']})",
                flush=True,
            )
    if predictions is not None:
        predictions.mkdir(parents=True, exist_ok=True)
        for seed, arrays in saved.items():
            np.savez(predictions / f"{seed}.npz", **arrays)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("config", type=Path)
    ap.add_argument("--seeds", type=int, nargs="+", default=[2021, 2022, 2023])
    ap.add_argument("--predictions", type=Path, default=None, help="write test probabilities here")
    args = ap.parse_args()
    result = run(args.config, args.seeds, args.predictions)
    dataset = load_config(args.config).data.dataset
    path = HERE / "results" / f"gbdt-{dataset}.json"
    save_document(path, result["runs"], config=str(args.config), notes={k: v for k, v in result.items() if k != "runs"})
    print("\n| task | valid AUC | test AUC | best round |\n|---|---|---|---|")
    for task in dict.fromkeys(k.split("|")[0] for k in result["runs"]):
        rs = [v for k, v in result["runs"].items() if k.split("|")[0] == task]
        t = np.array([r["test_auc"] for r in rs])
        print(
            f"| {task} | {np.mean([r['valid_auc'] for r in rs]):.5f} | {t.mean():.5f} ± {t.std():.5f} | "
            f"{', '.join(str(r['best_round']) for r in rs)} |"
        )


if __name__ == "__main__":
    main()
