"""Generative HSTU ranker vs feature-based rankers on exactly the same RK-ML100K test rows (issue 8).

Usage:
    RANKER_DATA_DIR=../shared/data python benchmarks/compare_generative.py \
        --group "generative HSTU=runs/issue8/gen-hstu-s*" \
        --group "TransAct + DCN-V2 + MMoE=runs/grid/mtl-best-rk-ml100k/mmoe--4-experts-128-64--towers-32-*" \
        [--out benchmarks/results/compare-generative-rk-ml100k.json]

Each ``--group NAME=GLOB`` is one model, one finished run directory per seed. Checked first:
every run's saved test labels (``calibration_test.npz``) are identical, row for row, to the
first run's, so all models are scored on the same rows in the same order. Reported per model
(mean ± std over its runs): test AUC / GAUC / logloss of watch and like, parameters, training
seconds, best epochs; then GAUC of each task split by whether the row's user has events in the
training split ("seen") or not ("new": RK-ML100K's time split puts most test users there),
which is where the two kinds of model differ most.
"""

from __future__ import annotations

import argparse
import glob
import json
from pathlib import Path
from typing import Any

import numpy as np
from results_store import save_document  # type: ignore[import-not-found]  # noqa: E402

from ranker.config import load_config
from ranker.metrics.ranking import gauc
from ranker.ranking.run import resolve_data

TASKS = ("watch", "like")


def load_group(pattern: str) -> list[Path]:
    runs = sorted(Path(p) for p in glob.glob(pattern) if (Path(p) / "metrics.json").is_file())
    if not runs:
        raise SystemExit(f"no finished run (metrics.json) matches {pattern!r}")
    return runs


def test_users(feature_run: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(user of each test row, user of each like row, whether the row's user is in train)."""
    cfg = load_config(feature_run / "config.yaml")
    data, tables = resolve_data(cfg.data)
    user_col = data.group_column or "user_id"
    users = np.asarray(tables["test"].column(user_col).to_numpy(zero_copy_only=False))
    watched = np.asarray(tables["test"].column("watch").to_numpy(zero_copy_only=False)) == 1
    seen = np.isin(users, np.asarray(tables["train"].column(user_col).to_numpy(zero_copy_only=False)))
    return users, users[watched], seen


def per_run(
    run: Path, reference: dict[str, np.ndarray], users: dict[str, np.ndarray], seen: dict[str, np.ndarray]
) -> dict[str, Any]:
    metrics = json.loads((run / "metrics.json").read_text())
    cal = np.load(run / "calibration_test.npz")
    out: dict[str, Any] = {
        "params": metrics["params"],
        "train_time_s": metrics["train_time_s"],
        "best_epoch": metrics["best_epoch"],
        "test": metrics["test"],
        "split": {},
    }
    for task in TASKS:
        labels = cal[f"{task}__labels"]
        if not np.array_equal(labels, reference[task]):
            raise SystemExit(f"{run}: its {task} test labels differ from the first run's: not the same rows")
        probs = cal[f"{task}__probs"]
        for name, keep in (("seen", seen[task]), ("new", ~seen[task])):
            out["split"][f"{task}/{name}"] = gauc(labels[keep], probs[keep], users[task][keep])
    return out


def fmt(values: list[float]) -> str:
    return f"{np.mean(values):.4f} ± {np.std(values):.4f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--group", action="append", required=True, help="NAME=GLOB of run directories")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/compare-generative-rk-ml100k.json"))
    args = ap.parse_args()
    groups = {}
    for spec in args.group:
        name, sep, pattern = spec.partition("=")
        if not sep:
            raise SystemExit(f"--group {spec!r}: expected NAME=GLOB")
        groups[name] = load_group(pattern)
    # Feature-based runs save the preprocessor that names their data; generative runs do not.
    feature_run = next((r for runs in groups.values() for r in runs if (r / "preprocessor.json").is_file()), None)
    if feature_run is None:
        raise SystemExit("at least one group must be a feature-based ranker (its data config names the users)")
    all_users, like_users, seen_rows = test_users(feature_run)
    first = np.load(next(iter(groups.values()))[0] / "calibration_test.npz")
    reference = {t: first[f"{t}__labels"] for t in TASKS}
    users = {"watch": all_users, "like": like_users}
    seen = {"watch": seen_rows, "like": seen_rows[np.asarray(reference["watch"]) == 1]}
    if len(seen["like"]) != len(reference["like"]):
        raise SystemExit("like rows are not the watch = 1 rows of the test split")
    results = {name: {str(r): per_run(r, reference, users, seen) for r in runs} for name, runs in groups.items()}
    results["_rows"] = {
        t: {
            "rows": int(len(reference[t])),
            "seen_rows": int(seen[t].sum()),
            "users": int(len(np.unique(users[t]))),
            "seen_users": int(len(np.unique(users[t][seen[t]]))),
        }
        for t in TASKS
    }
    save_document(
        args.out,
        {
            f"{name}|{run}": {"run_dir": run, **m}
            for name, runs in results.items()
            if name != "_rows"
            for run, m in runs.items()
        },
        protocol="RK-ML100K",
        notes={"_rows": results["_rows"]},
    )

    print(
        "| model | watch AUC | watch GAUC | like AUC | like GAUC | watch logloss | params | train s | best epochs | seeds |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name in groups:
        runs = list(results[name].values())
        cells = [fmt([r["test"][t][m] for r in runs]) for t in TASKS for m in ("auc", "gauc")]
        cells.append(fmt([r["test"]["watch"]["logloss"] for r in runs]))
        print(
            f"| {name} | " + " | ".join(cells) + f" | {runs[0]['params']:,} | "
            f"{np.mean([r['train_time_s'] for r in runs]):,.0f} | "
            f"{'/'.join(str(r['best_epoch']) for r in runs)} | {len(runs)} |"
        )
    rows = results["_rows"]
    print(
        f"\nGAUC by user: seen in train ({rows['watch']['seen_users']} of {rows['watch']['users']} "
        f"test users, {rows['watch']['seen_rows']:,} of {rows['watch']['rows']:,} rows) vs new"
    )
    print("| model | watch GAUC seen | watch GAUC new | like GAUC seen | like GAUC new |")
    print("|---|---|---|---|---|")
    for name in groups:
        runs = list(results[name].values())
        print(
            f"| {name} | "
            + " | ".join(
                fmt([r["split"][k] for r in runs]) for k in ("watch/seen", "watch/new", "like/seen", "like/new")
            )
            + " |"
        )


if __name__ == "__main__":
    main()
