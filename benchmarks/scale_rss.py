"""Peak RSS and samples/s vs train rows: the streamed train split (``data.stream``) beside the
in-memory one (issue 21; docs/experiments/scale.md).

For each row count, ``ranker datasets synth`` data is generated once (cached under
``--cache``, keyed by rows, cardinality, files and seed), then each mode trains ONE epoch capped
at ``--max-steps`` steps in its own subprocess (``train.max_steps_per_epoch``), so the child's
peak resident memory (``resource.getrusage(RUSAGE_SELF).ru_maxrss``, read by the child at the
end) is that mode's alone. The in-memory mode reads and encodes every train row before its
first step; the streamed one reads chunks (the fit pass reads every row once, then the capped
epoch reads what its steps need). Records go to ``benchmarks/results/scale-rss.json``
(key ``MODE|ROWS``).

Usage (the lead's benchmark; minutes to hours at 50M rows)::

    python benchmarks/scale_rss.py                       # 1M 10M 50M, both modes
    python benchmarks/scale_rss.py --rows 20k 50k --cache /tmp/scale-smoke --out /tmp/scale-smoke.json
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from results_store import save_result  # type: ignore[import-not-found]  # noqa: E402

from ranker.data.synth import SynthSpec, parse_count, write_synth

HERE = Path(__file__).parent
MODES = ("stream", "memory")


def dataset(rows: int, args: argparse.Namespace) -> Path:
    """The synth directory for `rows` train rows (generated when missing or made with other arguments)."""
    files = args.files or max(1, rows // 1_000_000)
    spec = SynthSpec(rows=rows, cardinality=args.cardinality, seed=args.seed, files=files, eval_rows=args.eval_rows)
    out = Path(args.cache) / f"synth-{rows}-{args.cardinality}-{files}-{args.seed}-{spec.n_eval}"
    meta = out / "synth.json"
    if not (meta.is_file() and json.loads(meta.read_text())["args"]["rows"] == rows):
        start = time.perf_counter()
        write_synth(spec, out, chunk_rows=args.chunk_rows)
        print(f"generated {out} in {time.perf_counter() - start:.1f}s", flush=True)
    return out


def child(config: str, run_dir: str, mode: str, max_steps: int, threads: int) -> None:
    """Train one capped epoch in this process; print one JSON line (peak RSS, throughput)."""
    os.environ["RANKER_THREADS"] = str(threads)
    from ranker.config import load_config
    from ranker.ranking.run import train_run

    sets = ["train.epochs=1", f"train.max_steps_per_epoch={max_steps}", "train.progress=false"]
    if mode == "memory":
        sets.append("data.stream=null")
    cfg = load_config(config, sets)
    start = time.perf_counter()
    metrics = train_run(cfg, Path(run_dir), base_dir=Path(config).parent)
    out: dict[str, Any] = {
        "mode": mode,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,  # KiB on Linux
        "train_samples_per_s": metrics["train_samples_per_s"],
        "prepare_time_s": metrics["prepare_time_s"],
        "wall_s": time.perf_counter() - start,
        "rows": metrics["rows"],
        "valid_auc": metrics["valid"]["click"]["auc"],
        "threads": threads,
        "max_steps_per_epoch": max_steps,
        "batch_size": cfg.train.batch_size,
        "stream": cfg.data.stream.model_dump() if cfg.data.stream else None,
    }
    print("RESULT " + json.dumps(out), flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", nargs="+", default=["1M", "10M", "50M"], help="train rows per point (1k, 10M …)")
    p.add_argument("--cardinality", default="10M", help="ids of the largest categorical column")
    p.add_argument("--files", type=int, default=0, help="train files (default: one per 1M rows)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--eval-rows", default="100k", help="rows of valid and of test (in memory in both modes)")
    p.add_argument("--chunk-rows", default="1M", help="generator chunk (not the stream's)")
    p.add_argument("--max-steps", type=int, default=500, help="train.max_steps_per_epoch of the one epoch")
    p.add_argument("--threads", type=int, default=1, help="torch threads of each child")
    p.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    p.add_argument("--cache", default=str(Path(os.environ.get("RANKER_CACHE_DIR", "~/.cache/ranker")) / "synth"))
    p.add_argument("--out", type=Path, default=HERE / "results" / "scale-rss.json")
    p.add_argument(
        "--child", nargs=5, metavar=("CONFIG", "RUN_DIR", "MODE", "MAX_STEPS", "THREADS"), help=argparse.SUPPRESS
    )
    args = p.parse_args()
    if args.child:
        config, run_dir, mode, steps, threads = args.child
        child(config, run_dir, mode, int(steps), int(threads))
        return
    args.cache = str(Path(args.cache).expanduser())
    args.cardinality = parse_count(args.cardinality, "--cardinality")
    args.eval_rows = parse_count(args.eval_rows, "--eval-rows")
    args.chunk_rows = parse_count(args.chunk_rows, "--chunk-rows")
    for text in args.rows:
        rows = parse_count(text, "--rows")
        data = dataset(rows, args)
        for mode in args.modes:
            run_dir = data / "runs" / mode
            shutil.rmtree(run_dir, ignore_errors=True)
            cmd = [sys.executable, __file__, "--child", str(data / "synth.yaml"), str(run_dir), mode]
            cmd += [str(args.max_steps), str(args.threads)]
            done = subprocess.run(
                cmd, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": child_pythonpath()}
            )
            lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
            if done.returncode != 0 or not lines:
                print(done.stdout[-2000:], done.stderr[-4000:], file=sys.stderr)
                raise SystemExit(f"{mode} at {rows} rows failed (exit {done.returncode})")
            result = json.loads(lines[-1].removeprefix("RESULT "))
            result["cardinality"] = args.cardinality
            save_result(
                args.out,
                f"{mode}|{rows}",
                result,
                name=mode,
                seed=args.seed,
                protocol="synth",
                config=str(data / "synth.yaml"),
            )
            print(
                f"{mode:6s} {rows:>11,} rows: peak RSS {result['peak_rss_mb']:8.0f} MB, "
                f"{result['train_samples_per_s']:9,.0f} samples/s, prepare {result['prepare_time_s']:.1f}s",
                flush=True,
            )


def child_pythonpath() -> str:
    """PYTHONPATH for a child process: this checkout's ``src`` first."""
    src = str(HERE.parent / "src")
    return os.pathsep.join([src, os.environ["PYTHONPATH"]]) if os.environ.get("PYTHONPATH") else src


if __name__ == "__main__":
    main()
