"""The scaling hypothesis, small (issue 7): HSTU's test NDCG@10 against depth and training data.

Usage:
    RANKER_DATA_DIR=../shared/data RANKER_THREADS=1 python benchmarks/scaling_hstu.py \
        [--config benchmarks/configs/retrieval-hstu-r-ml1m.yaml] [--layers 1 2 4 8] \
        [--users 0.25 0.5 1.0] [--seeds 2021] [--out runs/scaling] [--plot-only]

Two sweeps of the same config (the HSTU paper's ML-1M setup): the number of layers at 100 %
of the training users, and the share of training users (``data.train_users``: a fixed random
subset, validation and test on every user) at the config's depth. Each run is selected on
validation NDCG@10 and tested once, like every retrieval run; a point whose resolved config
equals a run of ``run_retrieval.py`` (in ``--main-runs``) reuses that run's metrics. Results (resumable):
``benchmarks/results/scaling-<dataset>.json``; the figure: ``benchmarks/results/scaling-<dataset>.png``
(NDCG@10 against non-embedding parameters and against training targets, mean over seeds).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np
from results_store import load_results, save_result  # type: ignore[import-not-found]

from ranker.config import dump_config, load_retrieval_config
from ranker.config.retrieval import RetrievalRunConfig
from ranker.retrieval.run import train_retrieval_run

HERE = Path(__file__).parent


def sweep(config: Path, layers: list[int], users: list[float]) -> list[tuple[str, list[str]]]:
    """(name, overrides) of every run: depths at all users, then user shares at the base depth."""
    base = load_retrieval_config(config)
    depth = base.model.num_layers
    runs = [(f"{n} layers, 100% users", [f"model.num_layers={n}"]) for n in layers]
    runs += [(f"{depth} layers, {share:.0%} users", [f"data.train_users={share}"]) for share in users if share < 1.0]
    return runs


def run_all(
    config: Path,
    layers: list[int],
    users: list[float],
    seeds: list[int],
    out: Path,
    results_path: Path,
    extra: list[str],
    main_runs: Path = Path("runs/retrieval"),
) -> dict[str, Any]:
    results = load_results(results_path)
    for name, overrides in sweep(config, layers, users):
        for seed in seeds:
            key = f"{name}|{seed}"
            if key in results:
                continue
            cfg = load_retrieval_config(config, [*extra, *overrides, f"train.seed={seed}", "train.progress=false"])
            same = _main_run(cfg, main_runs)
            if same is not None:  # this very config was trained by run_retrieval.py: reuse it
                results = save_result(
                    results_path, key, {**same, "overrides": overrides, "reused": f"retrieval-{cfg.data.dataset}.json"}
                )
                continue
            slug = "".join(c if c.isalnum() else "-" for c in name).strip("-")
            start = time.perf_counter()
            metrics = train_retrieval_run(cfg, out / f"{cfg.name}-{slug}-{seed}")
            metrics["wall_s"] = time.perf_counter() - start
            metrics["overrides"] = overrides
            results = save_result(results_path, key, metrics)
            print(
                f"{key}: test NDCG@10 {metrics['test']['NDCG@10']:.4f}, best epoch {metrics['best_epoch']}", flush=True
            )
    return results


def _main_run(cfg: RetrievalRunConfig, main_runs: Path) -> dict[str, Any] | None:
    """The metrics ``run_retrieval.py`` recorded for a run of exactly `cfg`, if any.

    Exactly: the run directory's resolved ``config.yaml`` equals `cfg`'s, so a main-table
    run trained under an older version of the config file is never taken for this one.
    """
    found = load_results(HERE / "results" / f"retrieval-{cfg.data.dataset}.json").get(f"{cfg.name}|{cfg.train.seed}")
    saved = main_runs / f"{cfg.name}-{cfg.train.seed}" / "config.yaml"
    if found is None or not saved.is_file() or saved.read_text() != dump_config(cfg):
        return None
    return found


def rows(results: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per sweep point: mean ± std of test NDCG@10 / HR@10 over its seeds."""
    out = []
    for name in dict.fromkeys(k.split("|")[0] for k in results):
        runs = [v for k, v in results.items() if k.split("|")[0] == name]
        ndcg = [r["test"]["NDCG@10"] for r in runs]
        hr = [r["test"]["HR@10"] for r in runs]
        out.append(
            {
                "name": name,
                "seeds": len(runs),
                "ndcg": float(np.mean(ndcg)),
                "ndcg_std": float(np.std(ndcg)),
                "hr": float(np.mean(hr)),
                "params": runs[0]["params"],
                "train_targets": runs[0].get("train_targets"),
                "layers": _layers(runs[0]),
                "share": _share(runs[0]),
                "s_per_epoch": float(np.mean([r["seconds_per_epoch"] for r in runs])),
                "best_epochs": [r["best_epoch"] for r in runs],
            }
        )
    return out


def _layers(run: dict[str, Any]) -> int | None:
    for o in run.get("overrides", []):
        if o.startswith("model.num_layers="):
            return int(o.split("=")[1])
    return None


def _share(run: dict[str, Any]) -> float:
    for o in run.get("overrides", []):
        if o.startswith("data.train_users="):
            return float(o.split("=")[1])
    return 1.0


def table(points: list[dict[str, Any]]) -> str:
    lines = [
        "| run | seeds | test NDCG@10 | test HR@10 | params | training targets | s/epoch | best epochs |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for p in points:
        targets = f"{p['train_targets']:,}" if p["train_targets"] else "–"
        lines.append(
            f"| {p['name']} | {p['seeds']} | {p['ndcg']:.4f} ± {p['ndcg_std']:.4f} | {p['hr']:.4f} | "
            f"{p['params']:,} | {targets} | {p['s_per_epoch']:.1f} | "
            f"{', '.join(map(str, p['best_epochs']))} |"
        )
    return "\n".join(lines)


def plot(points: list[dict[str, Any]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    depth = sorted((p for p in points if p["share"] == 1.0 and p["layers"]), key=lambda p: p["layers"])
    if depth:
        left.errorbar(
            [p["layers"] for p in depth],
            [p["ndcg"] for p in depth],
            yerr=[p["ndcg_std"] for p in depth],
            marker="o",
            capsize=3,
        )
        left.set_xscale("log", base=2)
        left.set_xticks([p["layers"] for p in depth], [str(p["layers"]) for p in depth])
        left.set_xlabel("HSTU layers (100 % of training users)")
    base = _base(points)
    data = sorted(
        (p for p in points if p["train_targets"] and p["name"].split(",")[0] == base), key=lambda p: p["train_targets"]
    )
    if data:
        right.errorbar(
            [p["train_targets"] for p in data],
            [p["ndcg"] for p in data],
            yerr=[p["ndcg_std"] for p in data],
            marker="o",
            capsize=3,
        )
        right.set_xscale("log")
        right.set_xlabel("training targets (share of users)")
    for ax in (left, right):
        ax.set_ylabel("test NDCG@10")
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _base(points: list[dict[str, Any]]) -> str:
    """The depth of the user-share sweep, as its name prefix ("2 layers")."""
    shares = [p for p in points if p["share"] < 1.0]
    return shares[0]["name"].split(",")[0] if shares else "2 layers"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", type=Path, default=HERE / "configs" / "retrieval-hstu-r-ml1m.yaml")
    ap.add_argument("--layers", type=int, nargs="+", default=[1, 2, 4, 8])
    ap.add_argument("--users", type=float, nargs="+", default=[0.25, 0.5, 1.0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[2021])
    ap.add_argument("--out", type=Path, default=Path("runs/scaling"))
    ap.add_argument(
        "--main-runs",
        type=Path,
        default=Path("runs/retrieval"),
        help="run_retrieval.py's --out: identical runs there are reused",
    )
    ap.add_argument("--plot-only", action="store_true")
    ap.add_argument("--set", dest="extra", action="append", default=[], help="override for every run")
    ap.add_argument("--results", type=Path, help="default: benchmarks/results/scaling-<dataset>.json")
    args = ap.parse_args()
    if any(not 0 < u <= 1 for u in args.users):
        ap.error("--users: shares in (0, 1]")
    dataset = load_retrieval_config(args.config).data.dataset
    results_path = args.results or HERE / "results" / f"scaling-{dataset}.json"
    if args.plot_only:
        results = load_results(results_path)
    else:
        results = run_all(
            args.config, args.layers, args.users, args.seeds, args.out, results_path, args.extra, args.main_runs
        )
    if not results:
        raise SystemExit(f"no results in {results_path}")
    points = rows(results)
    print(table(points))
    png = results_path.with_suffix(".png")
    plot(points, png, f"HSTU scaling on {dataset}")
    print(f"figure: {png}")


if __name__ == "__main__":
    main()
