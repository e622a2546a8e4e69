"""Does each shipped config still reproduce its recorded figure?

Usage (from the repository root):
    python benchmarks/check_reproduce.py --list
    RANKER_DATA_DIR=../shared/data RANKER_THREADS=1 python benchmarks/check_reproduce.py \
        --run best-c-frappe [NAME ...] [--out runs/reproduce] [--results FILE]
    python benchmarks/check_reproduce.py --from-results runs/reproduce [RUN_DIR ...] [--results FILE]

For every ``benchmarks/configs/*.yaml`` (``CHECKS`` below) the script knows where its figures
were recorded (a results file of ``benchmarks/results/`` and the record name there), which
test metrics to compare, the recorded seed-2021 value of each, the seed spread (std with ddof 0
over the recorded seeds) and the tolerance derived from it:

    tolerance = max(K × std over the recorded seeds, FLOOR)      (K = 2, FLOOR = 0.001)
    tolerance = SINGLE_SEED_TOLERANCE (0.005)                    where only one seed is recorded

A rerun with seed 2021 passes when every compared metric lies within its tolerance of the
recorded seed-2021 value: a rerun of the same seed should land well inside the seed spread, so
a larger gap means the code or the data changed what the config measures.

``--run`` trains each named config with seed 2021 into ``OUT/NAME-2021`` with
``ranker train CONFIG --set train.seed=2021 --out DIR`` (the command every config's runner uses
for one run; it never writes into the recorded results files) and compares. ``--from-results``
compares finished run directories (a directory with a ``metrics.json``, or a folder of them
named ``NAME-2021`` / ``NAME``). Either writes its comparison to ``--results`` (default
``benchmarks/results/reproduce-check.json``) in the one results layout of ``results_store.py``.
Exit status 1 if any compared config falls outside its tolerance.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).parent
ROOT = HERE.parent
RESULTS = HERE / "results"
sys.path.insert(0, str(HERE))

from results_store import load_results, save_result  # noqa: E402  # type: ignore[import-not-found]

SEED = 2021
K = 2.0
FLOOR = 0.001
SINGLE_SEED_TOLERANCE = 0.005
ENV = "RANKER_DATA_DIR=../shared/data RANKER_THREADS=1"

RANKING_AUC = "auc"
RETRIEVAL = ("HR@10", "NDCG@10")

# config stem → (results file stem, record name, metrics: test task metrics or retrieval columns)
CHECKS: dict[str, tuple[str, str, tuple[tuple[str, ...], ...]]] = {
    "baseline-rk-ml100k": ("baseline-rk-ml100k", "baseline", (("watch", "auc"), ("like", "auc"))),
    "baseline-c-frappe": ("baseline-c-frappe", "baseline", (("click", "auc"),)),
    "baseline-t-adult": ("baseline-t-adult", "baseline", (("income", "auc"), ("income", "accuracy"))),
    "baseline-mt-census": ("baseline-mt-census", "baseline", (("income", "auc"), ("never_married", "auc"))),
    "bars-c-frappe": ("grid-dcn-c-frappe-bars", "MLP", (("click", "auc"),)),
    "best-c-frappe": ("grid-c-frappe-search", "DenseNet dim 128 EMA 0.99", (("click", "auc"),)),
    "mtl-mt-census": ("grid-mtl-mt-census", "shared bottom", (("income", "auc"), ("never_married", "auc"))),
    "best-mt-census": (
        "grid-mtl-mt-census",
        "MMoE, embeddings 16, tree bins on both tasks, batch 256, EMA 0.999, DCN-V2 2 layers",
        (("income", "auc"), ("never_married", "auc")),
    ),
    "best-rk-ml100k": ("grid-history-rk-ml100k", "TransAct", (("watch", "auc"), ("like", "auc"))),
    "distill-teacher-rk-ml100k": (
        "grid-mtl-best-rk-ml100k",
        "MMoE (4 experts 128-64, towers 32)",
        (("watch", "auc"), ("like", "auc")),
    ),
    # The students' figures trained alone with their config (distill_rk.py's "alone" rows); the
    # distilled figures need the teacher runs: benchmarks/distill_rk.py.
    "distill-student-mean-rk-ml100k": (
        "distill-rk-ml100k",
        "student mean-pool alone",
        (("watch", "auc"), ("like", "auc")),
    ),
    "distill-student-rk-ml100k": ("distill-rk-ml100k", "student alone", (("watch", "auc"), ("like", "auc"))),
    # the /score serving designs (score_designs.py quality): keys `quality|<design>|<seed>`
    "score-narrow-rk-ml100k": ("score-designs", "quality|narrow", (("watch", "auc"), ("like", "auc"))),
    "score-late-rk-ml100k": ("score-designs", "quality|late", (("watch", "auc"), ("like", "auc"))),
    "score-target-rk-ml100k": ("score-designs", "quality|target", (("watch", "auc"), ("like", "auc"))),
    "distill-student-recent-rk-ml100k": (
        "distill-rk-ml100k",
        "student mean+recent alone",
        (("watch", "auc"), ("like", "auc")),
    ),
    "generative-hstu-rk-ml100k": ("generative-rk-ml100k", "generative HSTU", (("watch", "auc"), ("like", "auc"))),
    **{
        f"retrieval-{m}-{d}": (f"retrieval-{d}", f"{m}-{d}", tuple((c,) for c in RETRIEVAL))
        for m in ("hstu", "sasrec", "hstu-large")
        for d in ("r-ml100k", "r-ml1m", "r-beauty")
        if (HERE / "configs" / f"retrieval-{m}-{d}.yaml").is_file()
    },
}


@dataclass
class Figure:
    metric: str  # "test/watch/auc" or "test/HR@10"
    recorded: float  # seed 2021
    std: float | None  # over the recorded seeds (None: one seed)
    seeds: list[int]
    tolerance: float


def metric_path(path: tuple[str, ...]) -> str:
    return "/".join(("test", *path))


def read_metric(metrics: dict[str, Any], path: tuple[str, ...]) -> float:
    value: Any = metrics["test"]
    for p in path:
        value = value[p]
    return float(value)


def figures(config: str, results_dir: Path = RESULTS) -> list[Figure]:
    """The recorded figures of a config, with their tolerances."""
    file, name, paths = CHECKS[config]
    results = load_results(results_dir / f"{file}.json")
    runs = {
        int(k.split("|")[-1]): v
        for k, v in results.items()
        if name in (k.split("|")[0], k.rsplit("|", 1)[0]) and k.split("|")[-1].isdigit()
    }
    if not runs:  # records keyed by run directory (generative): the seed is in the metrics
        runs = {int(v["seed"]): v for v in results.values() if isinstance(v, dict) and "seed" in v}
    if SEED not in runs:
        raise KeyError(f"{config}: no seed-{SEED} record of {name!r} in results/{file}.json")
    out = []
    for path in paths:
        vals = [read_metric(runs[s], path) for s in sorted(runs)]
        std = float(np.std(vals)) if len(vals) > 1 else None
        tol = max(K * std, FLOOR) if std is not None else SINGLE_SEED_TOLERANCE
        out.append(Figure(metric_path(path), read_metric(runs[SEED], path), std, sorted(runs), tol))
    return out


def command(config: str, run_dir: Path | str = "RUN_DIR") -> str:
    return f"{ENV} ranker train benchmarks/configs/{config}.yaml --set train.seed={SEED} --out {run_dir}"


def compare(config: str, metrics: dict[str, Any], results_dir: Path = RESULTS) -> dict[str, Any]:
    """The rerun's metrics against the recorded figures of ``config``."""
    rows = []
    for fig in figures(config, results_dir):
        path = tuple(fig.metric.split("/")[1:])
        got = read_metric(metrics, path)
        rows.append(
            {
                "metric": fig.metric,
                "recorded": fig.recorded,
                "got": got,
                "diff": got - fig.recorded,
                "std": fig.std,
                "seeds": fig.seeds,
                "tolerance": fig.tolerance,
                "ok": abs(got - fig.recorded) <= fig.tolerance,
            }
        )
    return {
        "config": f"benchmarks/configs/{config}.yaml",
        "seed": SEED,
        "compared": rows,
        "ok": all(r["ok"] for r in rows),
    }


def list_table(results_dir: Path = RESULTS) -> str:
    lines = [
        "| config | recorded in | metric | seed 2021 | std (seeds) | tolerance | command |",
        "|---|---|---|---|---|---|---|",
    ]
    for config in sorted(CHECKS):
        file, name, _ = CHECKS[config]
        for fig in figures(config, results_dir):
            spread = (
                f"{fig.std:.4f} ({len(fig.seeds)})"
                if fig.std is not None
                else f"– (1 seed: default {SINGLE_SEED_TOLERANCE})"
            )
            lines.append(
                f"| {config} | {file}: {name} | {fig.metric} | {fig.recorded:.4f} | {spread} | "
                f"{fig.tolerance:.4f} | `{command(config, f'runs/reproduce/{config}-{SEED}')}` |"
            )
    return "\n".join(lines)


def find_runs(dirs: list[Path]) -> dict[str, Path]:
    """config stem → finished run directory, from run dirs or folders of them."""
    names = {}
    for config in CHECKS:
        names[config] = config
        for line in (HERE / "configs" / f"{config}.yaml").read_text().splitlines():
            if line.startswith("name:"):
                names[line.split(":", 1)[1].strip()] = config
    found: dict[str, Path] = {}
    for d in dirs:
        candidates = (
            [d] if (d / "metrics.json").is_file() else sorted(p for p in d.iterdir() if (p / "metrics.json").is_file())
        )
        for run in candidates:
            stem = run.name[: -len(f"-{SEED}")] if run.name.endswith(f"-{SEED}") else run.name
            if stem in names:
                found[names[stem]] = run
            else:
                print(f"{run}: no shipped config named {stem!r}, skipped", file=sys.stderr)
    return found


def report(config: str, result: dict[str, Any]) -> str:
    parts = [
        f"{r['metric']} {r['got']:.4f} vs {r['recorded']:.4f} ({r['diff']:+.4f}, tol {r['tolerance']:.4f})"
        for r in result["compared"]
    ]
    return f"{'ok  ' if result['ok'] else 'FAIL'} {config}: " + "; ".join(parts)


def check_runs(runs: dict[str, Path], results_path: Path, results_dir: Path = RESULTS) -> bool:
    import json

    ok = True
    for config, run in runs.items():
        metrics = json.loads((run / "metrics.json").read_text())
        result = {**compare(config, metrics, results_dir), "run_dir": str(run)}
        save_result(
            results_path,
            f"{config}|{SEED}",
            result,
            name=config,
            seed=SEED,
            config=result["config"],
            protocol=_protocol(config, results_dir),
        )
        print(report(config, result))
        ok = ok and result["ok"]
    return ok


def _protocol(config: str, results_dir: Path) -> str:
    from results_store import records  # type: ignore[import-not-found]

    recs = records(results_dir / f"{CHECKS[config][0]}.json")
    return recs[0]["protocol"] if recs else "unknown"


def train(cmd: list[str]) -> None:
    """Run one training command (its run directory receives metrics.json)."""
    subprocess.run(cmd, check=True, env={**os.environ})


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = ap.add_mutually_exclusive_group(required=True)
    mode.add_argument("--list", action="store_true", help="configs, recorded figures, tolerances")
    mode.add_argument("--run", nargs="+", metavar="NAME", help="train these configs (seed 2021) and compare")
    mode.add_argument("--from-results", nargs="+", type=Path, metavar="DIR", help="compare finished run directories")
    ap.add_argument("--out", type=Path, default=Path("runs/reproduce"), help="where --run trains")
    ap.add_argument(
        "--results", type=Path, default=RESULTS / "reproduce-check.json", help="results file to write the comparison to"
    )
    ap.add_argument("--recorded", type=Path, default=RESULTS, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.list:
        print(list_table(args.recorded))
        return 0
    if args.run:
        unknown = [n for n in args.run if n not in CHECKS]
        if unknown:
            ap.error(f"unknown config(s) {unknown}; see --list")
        runs = {}
        for name in args.run:
            run_dir = args.out / f"{name}-{SEED}"
            ranker = (
                [shutil.which("ranker")]
                if shutil.which("ranker")
                else [sys.executable, "-c", "import sys; from ranker.cli import main; sys.exit(main())"]
            )
            cmd: list[str] = [
                *ranker,
                "train",
                str(HERE / "configs" / f"{name}.yaml"),
                "--set",
                f"train.seed={SEED}",
                "--out",
                str(run_dir),
            ]
            print("$ " + shlex.join(cmd), flush=True)
            train(cmd)
            runs[name] = run_dir
    else:
        runs = find_runs(args.from_results)
        if not runs:
            print("no finished run of a shipped config found", file=sys.stderr)
            return 1
    return 0 if check_runs(runs, args.results, args.recorded) else 1


if __name__ == "__main__":
    sys.exit(main())
