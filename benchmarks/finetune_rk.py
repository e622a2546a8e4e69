"""Fine-tuning on fresh data (issue 3): RK-ML100K in time order, three ways, per encoder.

Train rows of RK-ML100K are in event order, one positive + 4 negatives per event, so the first
7/8 of them are exactly the first 70 % of events (A) and the rest the next 10 % (B).
For each categorical encoder and seed:

  (a) train on A, evaluate as is;
  (b) fine-tune (a) on B with ``--init-from`` (its preprocessing kept: plain tables send ids
      first seen in B to the OOV row, hashing / Unified Embeddings give them their own rows);
  (c) retrain from scratch on A + B (= the protocol's 80 %);

all selected on the same validation split and tested on the same last 10 % of events.

Usage: RANKER_DATA_DIR=../shared/data python benchmarks/finetune_rk.py [--seeds 2021] [--encoders embedding]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
from results_store import load_results, save_result  # type: ignore[import-not-found]  # noqa: E402

from ranker.config import load_config
from ranker.data.recipes import get_recipe, prepare
from ranker.ranking.run import train_run

HERE = Path(__file__).parent
ENCODERS = {
    "embedding": "{kind: embedding, dim: 16}",
    "hashing": "{kind: hashing, dim: 16, memory: 1.0}",
    "unified": "{kind: unified, dim: 16, probes: 2, memory: 1.0}",
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", nargs="+", type=int, default=[2021, 2022, 2023])
    ap.add_argument("--encoders", nargs="+", default=list(ENCODERS))
    ap.add_argument("--out", type=Path, default=Path("runs/finetune"))
    args = ap.parse_args()
    ds = prepare(get_recipe("rk-ml100k"))
    train = ds.table("train")
    cut = train.num_rows * 7 // 8
    assert cut % 5 == 0, "blocks of one positive + 4 negatives must not be split"
    tmp = Path(tempfile.mkdtemp(prefix="ranker-ft-"))
    pq.write_table(train.slice(0, cut), tmp / "a.parquet")
    pq.write_table(train.slice(cut), tmp / "b.parquet")
    data = ds.data_config()
    results_path = HERE / "results" / "finetune-rk-ml100k.json"
    results: dict[str, Any] = load_results(results_path)
    base = HERE / "configs" / "baseline-rk-ml100k.yaml"
    for enc in args.encoders:
        for seed in args.seeds:
            common = [f"model.encoders.categorical={ENCODERS[enc]}", f"train.seed={seed}", "train.progress=false"]
            steps = {
                "a": (str(tmp / "a.parquet"), None),
                "b": (str(tmp / "b.parquet"), args.out / f"{enc}-{seed}-a"),
                "c": (data["split"]["train"], None),
            }
            for step, (train_file, init) in steps.items():
                key = f"{enc}|{seed}|{step}"
                if key in results:
                    continue
                split = {**data["split"], "train": train_file}
                cfg = load_config(base, common)
                cfg = cfg.model_copy(
                    update={"data": cfg.data.model_validate({**data, "dataset": None, "split": split})}
                )
                metrics = train_run(cfg, args.out / f"{enc}-{seed}-{step}", init_from=init)
                results = save_result(
                    results_path,
                    key,
                    {k: metrics[k] for k in ("test", "valid", "best_epoch", "params")},
                    name=f"{enc}|{step}",
                    seed=seed,
                    protocol="RK-ML100K",
                    config="benchmarks/configs/baseline-rk-ml100k.yaml",
                )
                print(key, {t: round(m["auc"], 4) for t, m in metrics["test"].items()}, flush=True)
    print(table(results))


def table(results: dict[str, Any]) -> str:
    rows = [
        "| encoder | step | watch AUC | watch GAUC | like AUC | like GAUC | seeds |",
        "|---|---|---|---|---|---|---|",
    ]
    names = {"a": "(a) 70 %, as is", "b": "(b) + fine-tune on next 10 %", "c": "(c) scratch on 80 %"}
    for enc in ENCODERS:
        for step in "abc":
            runs = [v for k, v in results.items() if k.startswith(f"{enc}|") and k.endswith(f"|{step}")]
            if not runs:
                continue
            cells = [
                f"{np.mean([r['test'][t][m] for r in runs]):.4f} ± {np.std([r['test'][t][m] for r in runs]):.4f}"
                for t in ("watch", "like")
                for m in ("auc", "gauc")
            ]
            rows.append(f"| {enc} | {names[step]} | " + " | ".join(cells) + f" | {len(runs)} |")
    return "\n".join(rows)


if __name__ == "__main__":
    main()
