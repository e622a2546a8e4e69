"""Training samples/s of the feature ranker on 1 and on N processes (torchrun, issue 21;
docs/distributed.md).

One ``ranker datasets synth`` dataset (cached under ``--cache``) is trained from memory
(``data.stream: null``) for ONE epoch capped at ``--max-steps`` steps of the same global batch
(``train.batch_size``: each of N processes takes batch_size / N rows of a step), once per
setting of ``--procs`` × ``--threads`` (torch threads of each process), each in its own
subprocess: ``python -m ranker train`` for one process, ``python -m torch.distributed.run
--standalone --nproc_per_node N -m ranker train`` for more (gloo on CPU, nccl with
``--device cuda``). The figure is the run's ``train_samples_per_s``: every rank's samples of the
epoch over rank 0's epoch time (the engine sums the units over the ranks), without data
preparation or validation. On 2 cores compare 1 process × 2 threads with 2 processes × 1 thread
(the same cores) and 1 × 1 (the single-core reference). Records go to
``benchmarks/results/ddp-speed.json`` (key ``DEVICE|PROCS|THREADS|ROWS``).

Usage::

    python benchmarks/ddp_speed.py                                   # 1M rows; 1x1, 1x2, 2x1 on CPU
    python benchmarks/ddp_speed.py --rows 20k --cardinality 10k --eval-rows 2k --max-steps 20 --batch-size 512 \
        --out /tmp/ddp-smoke.json --cache /tmp/ddp-cache                       # smoke: seconds
    python benchmarks/ddp_speed.py --device cuda --procs 1 2 --threads 4   # a GPU host: nccl, bf16
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from results_store import save_result  # type: ignore[import-not-found]  # noqa: E402
from scale_rss import child_pythonpath  # type: ignore[import-not-found]  # noqa: E402

from ranker.data.synth import SynthSpec, parse_count, write_synth

HERE = Path(__file__).parent


def dataset(args: argparse.Namespace) -> Path:
    """The synth directory of ``--rows`` train rows (generated when missing)."""
    spec = SynthSpec(rows=args.rows, cardinality=args.cardinality, seed=args.seed, eval_rows=args.eval_rows)
    out = Path(args.cache) / f"synth-{args.rows}-{args.cardinality}-{args.seed}-{spec.n_eval}"
    meta = out / "synth.json"
    if not (meta.is_file() and json.loads(meta.read_text())["args"]["rows"] == args.rows):
        start = time.perf_counter()
        write_synth(spec, out)
        print(f"generated {out} in {time.perf_counter() - start:.1f}s", flush=True)
    return out


def train(data: Path, procs: int, threads: int, args: argparse.Namespace) -> dict[str, Any]:
    """One capped epoch on `procs` processes of `threads` threads; what its metrics.json says."""
    run_dir = data / "runs" / f"{args.device}-{procs}x{threads}"
    shutil.rmtree(run_dir, ignore_errors=True)
    sets = [
        "data.stream=null",
        "train.epochs=1",
        f"train.max_steps_per_epoch={args.max_steps}",
        f"train.batch_size={args.batch_size}",
        f"train.threads={threads}",
        f"train.device={args.device}",
        "train.progress=false",
    ]
    launcher = ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={procs}"] if procs > 1 else []
    cmd = [sys.executable, *launcher, "-m", "ranker", "train", str(data / "synth.yaml"), "--out", str(run_dir)]
    cmd += [x for s in sets for x in ("--set", s)]
    env = {**os.environ, "PYTHONPATH": child_pythonpath(), "OMP_NUM_THREADS": str(threads)}
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        print(done.stdout[-2000:], done.stderr[-4000:], file=sys.stderr)
        raise SystemExit(f"{procs} process(es) x {threads} thread(s) failed (exit {done.returncode})")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    log = [json.loads(x) for x in (run_dir / "log.jsonl").read_text().splitlines() if x.strip()]
    return {
        "procs": procs,
        "threads_per_proc": threads,
        "device": metrics["device"],
        "train_samples_per_s": metrics["train_samples_per_s"],
        "train_samples": log[-1]["train_samples"],
        "epoch_time_s": log[-1]["epoch_time_s"],
        "time_split_s": log[-1]["time_split_s"],
        "valid_auc": metrics["valid"]["click"]["auc"],
        "wall_s": wall,
        "rows": metrics["rows"],
        "batch_size": args.batch_size,
        "max_steps_per_epoch": args.max_steps,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", default="1M", help="train rows (1k, 1M …)")
    p.add_argument("--cardinality", default="100k", help="ids of the largest categorical column")
    p.add_argument("--eval-rows", default="20k", help="rows of valid and of test")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=4096, help="the global batch (train.batch_size)")
    p.add_argument("--max-steps", type=int, default=100, help="train.max_steps_per_epoch of the one epoch")
    p.add_argument("--procs", type=int, nargs="+", default=[1, 2], help="process counts to time")
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="torch threads per process to time")
    p.add_argument("--max-cores", type=int, default=os.cpu_count() or 1, help="skip settings over this many cores")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--cache", default=str(Path(os.environ.get("RANKER_CACHE_DIR", "~/.cache/ranker")) / "synth"))
    p.add_argument("--out", type=Path, default=HERE / "results" / "ddp-speed.json")
    args = p.parse_args()
    args.cache = str(Path(args.cache).expanduser())
    args.rows = parse_count(args.rows, "--rows")
    args.cardinality = parse_count(args.cardinality, "--cardinality")
    args.eval_rows = parse_count(args.eval_rows, "--eval-rows")
    data = dataset(args)
    for procs in args.procs:
        for threads in args.threads:
            if args.device == "cpu" and procs * threads > args.max_cores:
                continue
            result = train(data, procs, threads, args)
            save_result(
                args.out,
                f"{args.device}|{procs}|{threads}|{args.rows}",
                result,
                name=f"{procs} process(es) x {threads} thread(s)",
                seed=args.seed,
                protocol="synth",
                config=str(data / "synth.yaml"),
            )
            print(
                f"{args.device} {procs} x {threads}: {result['train_samples_per_s']:9,.0f} samples/s "
                f"({result['train_samples']:,} samples in {result['epoch_time_s']:.1f}s; valid AUC "
                f"{result['valid_auc']:.4f}; wall {result['wall_s']:.0f}s)",
                flush=True,
            )


if __name__ == "__main__":
    main()
