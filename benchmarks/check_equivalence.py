"""Does a refactor leave every shipped config's numbers unchanged? A short run at two commits.

Usage (from the repository root):
    RANKER_DATA_DIR=../shared/data RANKER_THREADS=1 python benchmarks/check_equivalence.py \
        --base 248d725 [--configs NAME ...] [--epochs 2] [--steps 20] [--out runs/equivalence]

For each ``benchmarks/configs/*.yaml`` (or the named ones) the script trains the config for
``--epochs`` epochs of at most ``--steps`` steps, with seed 2021, twice: once with the code of
``--base`` and once with the code of ``--head`` (default HEAD), each in a temporary git worktree
with its own copy of the config file, so renamed config keys are read as that commit wrote
them and the working tree may change meanwhile. Both runs share the data
cache. It compares, epoch by epoch, the training loss and every validation metric of
``log.jsonl``, and every test metric of ``metrics.json``:

    equal  when |a − b| ≤ 1e-6 · max(1, |a|)   (float summation order may differ, nothing else)

A config whose numbers are equal at both commits trains the same model from the same batches,
so its recorded seed figures (``check_reproduce.py``) still hold without a full rerun.
Runs are kept under ``OUT/<commit>/<config>`` and reused by later checks against the same
commit (use another ``--out`` for other ``--epochs`` / ``--steps``).
The comparison is written to ``--results`` in the one results layout. Exit status 1 on any
difference.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from results_store import save_result  # noqa: E402  # type: ignore[import-not-found]

TOL = 1e-6


def numbers(obj: Any, prefix: str = "") -> dict[str, float]:
    """Every number of a nested metrics record, keyed ``a/b/c``."""
    out: dict[str, float] = {}
    if isinstance(obj, dict):
        for key, value in obj.items():
            out.update(numbers(value, f"{prefix}{key}/"))
    elif isinstance(obj, (int, float)) and not isinstance(obj, bool):
        out[prefix.rstrip("/")] = float(obj)
    return out


def run_numbers(run_dir: Path) -> dict[str, float]:
    """Training loss and validation metrics per epoch, and test metrics, of a finished run."""
    out: dict[str, float] = {}
    for line in (run_dir / "log.jsonl").read_text().splitlines():
        record = json.loads(line)
        e = record["epoch"]
        out[f"epoch{e}/train_loss"] = record["train_loss"]
        out.update(numbers(record.get("valid", {}), f"epoch{e}/valid/"))
    metrics = json.loads((run_dir / "metrics.json").read_text())
    out.update(numbers(metrics.get("test", {}), "test/"))
    return out


def differences(a: dict[str, float], b: dict[str, float]) -> list[str]:
    """Keys present in only one run, or whose values differ beyond the tolerance."""
    diffs = [f"{k}: only in {'base' if k in a else 'head'}" for k in sorted(set(a) ^ set(b))]
    for k in sorted(set(a) & set(b)):
        x, y = a[k], b[k]
        if x != x and y != y:  # both NaN
            continue
        if not abs(x - y) <= TOL * max(1.0, abs(x)):
            diffs.append(f"{k}: {x!r} vs {y!r}")
    return diffs


def train(src: Path, config: Path, out: Path, epochs: int, steps: int) -> None:
    env = {**os.environ, "PYTHONPATH": str(src)}
    for key in ("RANKER_DATA_DIR", "RANKER_CACHE_DIR"):  # the run's cwd is the tree's root
        if key in env:
            env[key] = str(Path(env[key]).resolve())
    cmd = [
        sys.executable,
        "-m",
        "ranker.cli",
        "train",
        str(config),
        "--out",
        str(out),
        "--set",
        "train.seed=2021",
        "--set",
        f"train.epochs={epochs}",
        "--set",
        f"train.max_steps_per_epoch={steps}",
        "--set",
        "train.progress=false",
    ]
    done = subprocess.run(cmd, env=env, cwd=config.parent.parent.parent, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{done.stderr[-2000:]}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--base", required=True, help="the commit to compare against")
    p.add_argument("--head", default="HEAD", help="the commit to check (default HEAD)")
    p.add_argument("--configs", nargs="*", help="config stems (default: every shipped config)")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--out", type=Path, default=Path("runs/equivalence"))
    p.add_argument("--results", type=Path, default=HERE / "results" / "equivalence-check.json")
    args = p.parse_args(argv)
    names = args.configs or sorted(c.stem for c in (HERE / "configs").glob("*.yaml"))
    ok = True
    with tempfile.TemporaryDirectory() as tmp:
        trees = {"base": Path(tmp) / "base", "head": Path(tmp) / "head"}
        revs = {
            side: subprocess.run(
                ["git", "rev-parse", "--short", rev], cwd=ROOT, check=True, capture_output=True, text=True
            ).stdout.strip()
            for side, rev in (("base", args.base), ("head", args.head))
        }
        for side, rev in revs.items():
            subprocess.run(["git", "worktree", "add", "--detach", "-q", str(trees[side]), rev], cwd=ROOT, check=True)
        try:
            for name in names:
                runs = {}
                for side, tree in trees.items():
                    out = (args.out / revs[side] / name).resolve()  # a commit's runs are reused
                    if not (out / "metrics.json").is_file():
                        train(
                            tree / "src", tree / "benchmarks" / "configs" / f"{name}.yaml", out, args.epochs, args.steps
                        )
                    runs[side] = run_numbers(out)
                diffs = differences(runs["base"], runs["head"])
                ok &= not diffs
                print(
                    f"{name:<36} {len(runs['head']):>4} numbers  "
                    + ("equal" if not diffs else f"DIFFER ({len(diffs)}): " + "; ".join(diffs[:3])),
                    flush=True,
                )
                save_result(
                    args.results,
                    name,
                    {
                        "compared": len(runs["head"]),
                        "differences": diffs,
                        "equal": not diffs,
                        "base": args.base,
                        "head": args.head,
                        "epochs": args.epochs,
                        "steps": args.steps,
                    },
                    name=name,
                    seed=2021,
                    config=f"benchmarks/configs/{name}.yaml",
                )
        finally:
            for tree in trees.values():
                subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=ROOT, check=False)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
