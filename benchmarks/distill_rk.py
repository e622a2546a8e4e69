"""Knowledge distillation on RK-ML100K (issue 6): teacher, student alone, student distilled.

Usage:
    RANKER_DATA_DIR=../shared/data RANKER_THREADS=1 python benchmarks/distill_rk.py \
        [--seeds 2021 2022 2023] [--teacher-seed 2021] [--out runs/distill] [--alpha 0.5] [--temperature 1.0] \
        [--teacher-runs 'runs/grid/mtl-best-rk-ml100k/mmoe--4-experts-128-64--towers-32-{seed}']

Per seed: the teacher (configs/distill-teacher-rk-ml100k.yaml: TransAct + MMoE) is
trained (or, with ``--teacher-runs``, taken from finished runs of the same model), then the student (configs/distill-student-rk-ml100k.yaml: no history, one 64-wide
MLP) alone, then the same student distilled from that seed's teacher (or from the one teacher
of ``--teacher-seed``; what
``ranker distill --teacher RUN --student configs/distill-student-rk-ml100k.yaml`` runs).
Results: benchmarks/results/distill-rk-ml100k.json (resumable, like run_grid.py), then a
table of test AUC / GAUC per task (mean ± std) with parameters, train samples/s and
candidates/s for one user with 1,000 candidates (benchmarks/score_candidates.py, 1 thread).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
from results_store import load_results, save_result  # type: ignore[import-not-found]

from ranker.config import load_config
from ranker.ranking.run import train_run

HERE = Path(__file__).parent
RESULTS = HERE / "results" / "distill-rk-ml100k.json"
TEACHER = HERE / "configs" / "distill-teacher-rk-ml100k.yaml"
STUDENT = HERE / "configs" / "distill-student-rk-ml100k.yaml"


def roles(label: str) -> tuple[str, str, str]:
    """Result keys: the teacher, the student alone, the student distilled (`label` names the student)."""
    student = f"student {label}".strip()
    return "teacher", f"{student} alone", f"{student} distilled"


def run_all(
    seeds: list[int],
    out: Path,
    alpha: float,
    temperature: float,
    *,
    extra: list[str],
    results_path: Path,
    teacher_seed: int | None,
    student: Path,
    label: str,
    teacher_runs: str | None = None,
    distilled_only: bool = False,
) -> dict[str, Any]:
    results = load_results(results_path)
    teacher_role, alone_role, distilled_role = roles(label)
    for seed in seeds:
        for role in roles(label):
            key = f"{role}|{seed}"
            if key in results or (role == teacher_role and teacher_seed not in (None, seed)):
                continue
            if distilled_only and role == alone_role:
                continue
            t_seed = seed if teacher_seed is None else teacher_seed
            teacher_dir = Path(teacher_runs.format(seed=t_seed)) if teacher_runs else out / f"teacher-{t_seed}"
            if role == teacher_role and teacher_runs:
                # A teacher trained elsewhere (e.g. a grid's run): record its metrics, train nothing.
                if not (teacher_dir / "metrics.json").is_file():
                    raise SystemExit(f"--teacher-runs: no finished run at {teacher_dir} (metrics.json missing)")
                metrics = json.loads((teacher_dir / "metrics.json").read_text())
                run_dir = teacher_dir
            else:
                cfg_path = TEACHER if role == teacher_role else student
                cfg = load_config(
                    cfg_path,
                    [
                        f"train.seed={seed}",
                        f"train.distill.alpha={alpha}",
                        f"train.distill.temperature={temperature}",
                        *extra,
                    ],
                )
                run_dir = out / f"{role.replace(' ', '-')}-{seed}"
                start = time.perf_counter()
                metrics = train_run(cfg, run_dir, teacher=teacher_dir if role == distilled_role else None)
                metrics["wall_s"] = time.perf_counter() - start
            metrics["run_dir"] = str(run_dir)
            results = save_result(results_path, key, metrics)
            print(
                f"{key}: "
                + ", ".join(
                    f"{t} auc {m['auc']:.4f} gauc {m.get('gauc', float('nan')):.4f}" for t, m in metrics["test"].items()
                ),
                flush=True,
            )
    return results


def table(results: dict[str, Any], speeds: dict[str, float]) -> str:
    lines = [
        "| model | watch AUC | watch GAUC | like AUC | like GAUC | params | train samples/s | "
        "candidates/s (1 user × 1,000, 1 thread) | seeds |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for role in dict.fromkeys(k.split("|")[0] for k in results):
        runs = [v for k, v in results.items() if k.split("|")[0] == role]
        if not runs:
            continue
        cells = []
        for task in ("watch", "like"):
            for metric in ("auc", "gauc"):
                vals = [r["test"][task][metric] for r in runs]
                cells.append(f"{np.mean(vals):.4f} ± {np.std(vals):.4f}")
        speed = np.mean([r["train_samples_per_s"] for r in runs])
        cand = f"{speeds[role]:,.0f}" if role in speeds else "–"
        lines.append(
            f"| {role} | " + " | ".join(cells) + f" | {runs[0]['params']:,} | {speed:,.0f} | {cand} | {len(runs)} |"
        )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", nargs="*", type=int, default=[2021, 2022, 2023])
    ap.add_argument("--out", type=Path, default=Path("runs/distill"))
    ap.add_argument("--alpha", type=float, default=0.5)
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--no-speed", action="store_true", help="skip the candidates/s measurement")
    ap.add_argument("--set", dest="extra", action="append", default=[], help="override for every run")
    ap.add_argument("--results", type=Path, default=RESULTS)
    ap.add_argument("--teacher-seed", type=int, help="train one teacher (this seed) for every student seed")
    ap.add_argument("--student", type=Path, default=STUDENT, help="the student's config")
    ap.add_argument("--label", default="", help="names the student in the results (e.g. mean-pool)")
    ap.add_argument(
        "--distilled-only",
        action="store_true",
        help="skip the student-alone runs (e.g. an α sweep whose baseline is already run)",
    )
    ap.add_argument(
        "--teacher-runs",
        help="use finished teacher runs instead of training one: a run "
        "directory with {seed} in it, e.g. runs/grid/mtl-best-rk-ml100k/mmoe-...-{seed}",
    )
    args = ap.parse_args()
    if args.teacher_seed is not None and args.teacher_seed != args.seeds[0]:
        ap.error("--teacher-seed must be the first of --seeds (the teacher is trained first)")
    results = run_all(
        args.seeds,
        args.out,
        args.alpha,
        args.temperature,
        extra=args.extra,
        results_path=args.results,
        teacher_seed=args.teacher_seed,
        student=args.student,
        label=args.label,
        teacher_runs=args.teacher_runs,
        distilled_only=args.distilled_only,
    )
    speeds: dict[str, float] = {}
    if not args.no_speed:
        import torch
        from score_candidates import candidates_per_s  # type: ignore[import-not-found]

        torch.set_num_threads(1)
        for role in dict.fromkeys(k.split("|")[0] for k in results):
            run = results.get(f"{role}|{args.seeds[0]}", {}).get("run_dir")
            if run and Path(run).is_dir():
                speeds[role] = candidates_per_s(Path(run), 1000, 30)[0]
    print(table(results, speeds))


if __name__ == "__main__":
    main()
