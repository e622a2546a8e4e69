"""Candidates/s of the generative HSTU ranker for one user: M-FALCON scoring vs separate passes.

Usage:
    RANKER_DATA_DIR=../shared/data python benchmarks/generative_candidates.py \
        [--run RUN_DIR | --config benchmarks/configs/generative-hstu-rk-ml100k.yaml] \
        [--candidates 1000] [--repeats 5] [--threads 1] [--out benchmarks/results/generative-candidates.json]

The user is the RK-ML100K user with the most events; the history is their last ``max_events``
events before the first test event (static tokens included), the candidates are distinct item
ids. Timed under ``torch.no_grad`` in evaluation mode (the weights do not change the cost):

- ``kv_cache``: the history encoded once, its per-layer keys/values cached, all C candidates
  attending to them and to themselves (:meth:`score_candidates`, the default);
- ``kv_cache_m``: the same with micro-batches of m candidates against the one cache;
- ``one_pass``: history + all C candidates appended in one sequence (``cached=False``);
- ``microbatch_m``: appended micro-batches of m candidates (history re-encoded per batch);
- ``separate_batched``: C sequences of history + 1 candidate, as one batch (no sharing);
- ``separate_loop``: C forward passes of history + 1 candidate, one after another.

Each mode reports the median seconds over ``repeats`` calls after one warm-up (the loop: one
call) and candidates/s = C / seconds. The KV-cache and one-pass scores are checked against
the loop's.
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from results_store import save_document  # type: ignore[import-not-found]
from timing import median_seconds

from ranker.config import load_generative_config
from ranker.generative.batches import build_window, collate
from ranker.generative.run import build_model, load_events, load_run
from ranker.models.generative import Tokens, append_candidates


def separate_batch(history: Tokens, items: torch.Tensor, time_: int) -> Tokens:
    """C copies of (history + one candidate) as one padded batch."""
    one = [append_candidates(history, items[i : i + 1], time_) for i in range(len(items))]
    n = one[0].kind.shape[1]
    stack = {f: torch.cat([getattr(t, f) for t in one]) for f in ("kind", "ids", "event", "time", "position")}
    return Tokens(**stack, score=torch.arange(len(items)) * n + (n - 1))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", type=Path)
    p.add_argument("--config", type=Path, default=Path("benchmarks/configs/generative-hstu-rk-ml100k.yaml"))
    p.add_argument("--candidates", type=int, default=1000)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--micro", type=int, nargs="*", default=[64, 256])
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/generative-candidates.json"))
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    if args.run:
        cfg, model = load_run(args.run)
        log = load_events(cfg)
    else:
        cfg = load_generative_config(args.config)
        log = load_events(cfg)
        torch.manual_seed(0)
        model = build_model(cfg, log)
    model = model.eval()
    user = int(np.bincount(log.user).argmax())
    test_start = int(np.flatnonzero(log.split == 2)[0])
    ev = np.flatnonzero((log.user == user) & (np.arange(len(log.user)) < test_start))
    ev = ev[-cfg.data.max_events :]
    w = build_window(log, ev, np.zeros(len(ev), bool))
    hist = collate([w]).tokens
    at = int(log.time[ev[-1]]) + 1
    c = args.candidates
    items = torch.from_numpy(np.random.default_rng(0).choice(np.arange(1, log.num_items + 1), c, replace=False))
    res: dict[str, Any] = {
        "candidates": c,
        "history_events": len(ev),
        "history_tokens": len(w),
        "threads": args.threads,
        "machine": platform.processor() or platform.machine(),
        "params": sum(q.numel() for q in model.parameters()),
        "modes": {},
    }

    def record(name: str, seconds: float) -> None:
        res["modes"][name] = {"seconds": seconds, "candidates_per_s": c / seconds}
        print(f"{name:<20} {seconds * 1000:9.1f} ms  {c / seconds:12,.0f} candidates/s", flush=True)

    with torch.no_grad():
        record("kv_cache", median_seconds(lambda: model.score_candidates(hist, items, at), args.repeats, warmup=1))
        for m in args.micro:
            record(
                f"kv_cache_{m}",
                median_seconds(lambda m=m: model.score_candidates(hist, items, at, chunk=m), args.repeats, warmup=1),
            )
        record(
            "one_pass",
            median_seconds(lambda: model.score_candidates(hist, items, at, cached=False), args.repeats, warmup=1),
        )
        for m in args.micro:
            record(
                f"microbatch_{m}",
                median_seconds(
                    lambda m=m: model.score_candidates(hist, items, at, chunk=m, cached=False), args.repeats, warmup=1
                ),
            )
        batch = separate_batch(hist, items, at)
        record("separate_batched", median_seconds(lambda: model(batch), max(1, args.repeats // 2), warmup=1))
        start = time.perf_counter()
        loop = torch.cat([model.score_candidates(hist, items[i : i + 1], at, cached=False) for i in range(c)])
        record("separate_loop", time.perf_counter() - start)
        cached = model.score_candidates(hist, items, at)
        one = model.score_candidates(hist, items, at, cached=False)
    res["max_abs_diff_one_pass_vs_loop"] = float((one - loop).abs().max())
    res["max_abs_diff_kv_cache_vs_loop"] = float((cached - loop).abs().max())
    for mode in ("kv_cache", "one_pass"):
        res[f"speedup_{mode}_vs_loop"] = res["modes"]["separate_loop"]["seconds"] / res["modes"][mode]["seconds"]
    print(
        f"max |one pass − loop| = {res['max_abs_diff_one_pass_vs_loop']:.2e}, "
        f"max |kv cache − loop| = {res['max_abs_diff_kv_cache_vs_loop']:.2e}; speed-up vs loop: "
        f"kv cache {res['speedup_kv_cache_vs_loop']:.1f}x, one pass {res['speedup_one_pass_vs_loop']:.1f}x"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_document(
        args.out,
        {"generative HSTU serving": res},
        name="generative HSTU serving",
        seed=None,
        config=str(args.config),
        protocol="RK-ML100K",
    )


if __name__ == "__main__":
    main()
