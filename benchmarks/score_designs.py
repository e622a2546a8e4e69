"""The /score serving designs of issue 18: in-process latency beside RK-ML100K quality.

Usage (from the repository root):
    # latency, on an idle machine (about 10 minutes on 2 cores; tiny runs, trained here)
    RANKER_DATA_DIR=../shared/data python benchmarks/score_designs.py latency --work /tmp/score-designs
    # quality: every design trained on RK-ML100K (seed 2021; hours on 2 cores; resumable)
    RANKER_DATA_DIR=../shared/data python benchmarks/score_designs.py quality --runs runs/score
    python benchmarks/update_tables.py          # the tables of docs/experiments/serving.md

Designs (``DESIGNS``; ``--designs`` picks some): the early-fused TransAct ranker of
``best-rk-ml100k.yaml`` (the transformer runs once per candidate), the same with a narrow
transformer, without early fusion (the history encoded once per request, the same for every
candidate), with the history encoded once and each candidate attending to it
(``score-target-rk-ml100k.yaml``), the distilled recent-history student
(``distill-student-recent-rk-ml100k.yaml`` distilled from the early-fused run), and int8
dynamic quantisation of two of them (``ranker bundle --quantize int8``).

``latency``: for each design a bundle (the HSTU retrieval of ``retrieval-hstu-r-ml100k.yaml`` +
the design's ranker) and ``Recommender.score`` in-process on one request: 1,000 catalogue items
and a 50-event history (``serve_bench.score_events``), ``--requests`` calls after 20 warm-ups,
per torch thread count (``--threads``): p50 / p99 / mean ms, and the p50 of its two parts
(``encode``: the request's batch, ``model``: ``Ranker.score_one_user``; the rest is the
answer). The early design is also timed on the serving path before issue 18's fixes
(``full-rows``: every candidate row through the preprocessor, the history repeated per row,
the plain forward). Latency depends on the shapes, not on the weights: the rankers are trained
for 1 epoch × 20 steps here (``--runs DIR`` uses the trained runs found there instead).
Records ``latency|DESIGN|threads=T[|path=full-rows]``, with the 1-minute load average before
and after each point. ``--http``: also ``/score`` over HTTP for each design (``ranker serve`` of
the design's bundle, 1 worker of T torch threads, one client, the same request body),
``latency|DESIGN|threads=T|path=http``.

``quality``: each design's run trained with the shipped protocol (``ranker train CONFIG``, or
``ranker distill --teacher RUN --student CONFIG``) into ``--runs/RUN-SEED`` (an existing finished
run is reused), and its test metrics recorded; a quantised design is its float run evaluated on
the test split with int8 linear layers. ``--max-epochs N`` caps training (recorded).
Records ``quality|DESIGN|SEED``. Results: ``benchmarks/results/score-designs.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from results_store import load_results, save_result  # noqa: E402  # type: ignore[import-not-found]
from serve_bench import RETRIEVAL_CONFIG, TINY, Server, load, load1, score_events, summary  # noqa: E402  # type: ignore[import-not-found]

from ranker.serving.bundle import load_bundle  # noqa: E402
from ranker.serving.recommender import Query, Recommender  # noqa: E402
from ranker.serving.store import Event  # noqa: E402

RESULTS = HERE / "results" / "score-designs.json"
PROTOCOL = "RK-ML100K"
CONFIGS = "benchmarks/configs"


@dataclass(frozen=True)
class Design:
    """One way to serve /score: a ranker config (its run), a serving option, a teacher."""

    key: str
    name: str
    config: str
    run: str  # run directory name (a quantised design reuses its float design's run)
    quantize: str | None = None
    teacher: str | None = None  # run name of the distillation teacher


DESIGNS = (
    Design("early", "TransAct, early fusion (best-rk-ml100k)", f"{CONFIGS}/best-rk-ml100k.yaml", "early"),
    Design(
        "early-int8", "TransAct, early fusion, int8 linear layers", f"{CONFIGS}/best-rk-ml100k.yaml", "early", "int8"
    ),
    Design(
        "narrow",
        "TransAct, early fusion, narrow (1 layer, width 16)",
        f"{CONFIGS}/score-narrow-rk-ml100k.yaml",
        "narrow",
    ),
    Design("late", "TransAct, no fusion (history once)", f"{CONFIGS}/score-late-rk-ml100k.yaml", "late"),
    Design("target", "TransAct, history once + target attention", f"{CONFIGS}/score-target-rk-ml100k.yaml", "target"),
    Design(
        "target-int8",
        "TransAct, history once + target attention, int8",
        f"{CONFIGS}/score-target-rk-ml100k.yaml",
        "target",
        "int8",
    ),
    Design(
        "student",
        "distilled student: mean + 5 recent, MLP 64",
        f"{CONFIGS}/distill-student-recent-rk-ml100k.yaml",
        "student",
        teacher="early",
    ),
)


def ranker_cli(*args: str, log: Path) -> None:
    """``ranker ARGS`` with this interpreter and this checkout's package, output appended to `log`."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    with log.open("a") as out:
        subprocess.run([sys.executable, "-m", "ranker.cli", *args], check=True, stdout=out, stderr=out, env=env)


# ---------------------------------------------------------------------- quality


def train(design: Design, runs: Path, seed: int, max_epochs: int | None) -> Path:
    """The design's finished run ``runs/RUN-SEED`` (trained now unless it is there already)."""
    out = runs / f"{design.run}-{seed}"
    if (out / "metrics.json").is_file():
        return out
    sets = ["--set", f"train.seed={seed}"] + (["--set", f"train.epochs={max_epochs}"] if max_epochs else [])
    if design.teacher is not None:
        teacher = train(next(d for d in DESIGNS if d.run == design.teacher), runs, seed, max_epochs)
        args = ["distill", "--teacher", str(teacher), "--student", design.config]
    else:
        args = ["train", design.config]
    print(f"training {design.run}: ranker {' '.join(args)} → {out}", flush=True)
    ranker_cli(*args, *sets, "--out", str(out), log=runs / f"{design.run}-{seed}.log")
    return out


@torch.no_grad()
def quantised_test_metrics(run: Path, kind: str) -> dict[str, Any]:
    """Test metrics of a finished run served with int8 linear layers."""
    from ranker.ranking.run import PreparedData, encode, group_ids, load_run, resolve_data
    from ranker.serving.quantize import quantize_model
    from ranker.tasks import TaskSpec
    from ranker.train.evaluate import predict, task_metrics

    cfg, model, pre = load_run(run)
    data, tables = resolve_data(cfg.data)
    prep = PreparedData(data, tables, pre)
    test = encode(prep, "test")
    spec = TaskSpec.from_tasks(data.tasks)
    probs = predict(quantize_model(model, kind), test, cfg.train.eval_batch_size, torch.device("cpu"), spec.outputs)
    t = test.tensors
    names = [task.name for task in data.tasks]
    return task_metrics(probs, t["labels"].numpy(), t["label_mask"].numpy(), names, group_ids(prep, "test"), spec.kinds)


def quality(designs: list[Design], runs: Path, seed: int, max_epochs: int | None, results: Path) -> None:
    done = load_results(results)
    for d in designs:
        key = f"quality|{d.key}|{seed}"
        if key in done:
            continue
        run = train(d, runs, seed, max_epochs)
        m = json.loads((run / "metrics.json").read_text())
        test = quantised_test_metrics(run, d.quantize) if d.quantize else m["test"]
        metrics = {
            "design": d.key,
            "run": str(run),
            "quantize": d.quantize,
            "teacher": d.teacher,
            "test": {t: {k: v[k] for k in ("auc", "gauc", "logloss") if k in v} for t, v in test.items()},
            "params": m["params"],
            "best_epoch": m["best_epoch"],
            "stopped_epoch": m["stopped_epoch"],
            "max_epochs": max_epochs,
            "train_time_s": m["train_time_s"],
        }
        save_result(results, key, metrics, name=d.name, seed=seed, protocol=PROTOCOL, config=d.config)
        print(f"{key}: " + ", ".join(f"{t} AUC {v['auc']:.4f}" for t, v in metrics["test"].items()), flush=True)


# ---------------------------------------------------------------------- latency


def bundle_of(design: Design, work: Path, runs: Path | None, seed: int) -> tuple[Path, str]:
    """The design's bundle in `work` (built once) and where its ranker came from."""
    log = work / "build.log"
    hstu = work / "hstu"
    if not (hstu / "model.safetensors").is_file():
        print(f"training {RETRIEVAL_CONFIG} (1 epoch × 20 steps) → {hstu}", flush=True)
        ranker_cli("train", str(ROOT / RETRIEVAL_CONFIG), *TINY, "--out", str(hstu), log=log)
    ranker = runs / f"{design.run}-{seed}" if runs is not None else None
    source = "trained run"
    if ranker is None or not (ranker / "model.safetensors").is_file():
        ranker, source = work / f"tiny-{design.run}", "tiny run (1 epoch × 20 steps)"
        if not (ranker / "model.safetensors").is_file():
            print(f"training {design.config} (1 epoch × 20 steps) → {ranker}", flush=True)
            ranker_cli("train", str(ROOT / design.config), *TINY, "--out", str(ranker), log=log)
    out = work / f"bundle-{design.key}"
    if not (out / "manifest.json").is_file():
        args = ["bundle", "--retrieval", str(hstu), "--ranker", str(ranker), "--out", str(out), "--force"]
        ranker_cli(*args, *(["--quantize", design.quantize] if design.quantize else []), log=log)
    return out, f"{source}: {ranker}"


class PartClock:
    """Times the request's batch (``candidates.encode``) and the model (``score_one_user``)."""

    def __init__(self, rec: Recommender) -> None:
        st = rec.bundle.ranking
        assert st is not None, "the bundle has no ranker"
        self.parts: dict[str, float] = {}
        for name, obj, attr in (("encode", st.candidates, "encode"), ("model", st.model, "score_one_user")):
            fn = getattr(obj, attr)

            def timed(*a: Any, _fn: Any = fn, _name: str = name, **kw: Any) -> Any:
                t0 = time.perf_counter()
                try:
                    return _fn(*a, **kw)
                finally:
                    self.parts[_name] = self.parts.get(_name, 0.0) + time.perf_counter() - t0

            setattr(obj, attr, timed)


@torch.inference_mode()
def full_rows_score(rec: Recommender, q: Query, items: list[str], now: float) -> list[dict[str, Any]]:
    """/score's ranking as it was before issue 18's serving fixes (the reference path)."""
    import pyarrow as pa

    from ranker.data.tensors import TensorData
    from ranker.serving.features import ranker_rows
    from ranker.tasks import serving_score

    st = rec.bundle.ranking
    assert st is not None and q.history is not None
    idx = pa.array([rec.index_of[i] - 1 if i in rec.index_of else None for i in items], pa.int64())
    user_row = st.users.get(q.user, {}) if q.user is not None else {}
    table = ranker_rows(
        user=q.user,
        user_key=st.user_key,
        user_row={c: user_row.get(c) for c in st.user_columns},
        items=items,
        item_key=st.item_key,
        item_features=st.item_features.take(idx),
        context=q.context,
        context_columns=st.context_columns,
        history=q.history,
        hist=st.history,
        now=now,
        item_type=rec.bundle.retrieval.items.type,
        history_rows=1,
    )
    enc = st.pre.transform(table, source="request")
    for parts in enc.hist.values():
        for key, value in parts.items():
            parts[key] = np.repeat(value[:1], len(value), axis=0)
    probs = st.spec.outputs(st.model(TensorData.from_encoded(enc).tensors))
    scores = serving_score(probs, st.spec, st.cfg.serving.weights, st.cfg.serving.combine).numpy()
    p = probs.numpy()
    return [
        {
            "item": items[j],
            "score": float(scores[j]),
            "probabilities": {t: float(p[j, n]) for n, t in enumerate(st.spec.names)},
        }
        for j in np.argsort(-scores, kind="stable")
    ]


def time_score(rec: Recommender, n: int, threads: int, full_rows: bool) -> dict[str, Any]:
    """`n` timed /score calls (1,000 candidates, 50-event history) after 20 warm-ups."""
    torch.set_num_threads(threads)
    now = time.time()
    events, cands = score_events(rec, now)
    clock = PartClock(rec) if not full_rows else None
    total: list[float] = []
    parts: dict[str, list[float]] = {"encode": [], "model": []}
    for i in range(-20, n):
        user = str(1 + i % 943)
        q = Query(user=user, history=[Event(user, e.item, e.action, e.time) for e in events], now=now)
        if clock is not None:
            clock.parts = {}
        t0 = time.perf_counter()
        if full_rows:
            full_rows_score(rec, q, cands, now)
        else:
            rec.score(q, cands)
        if i >= 0:
            total.append(time.perf_counter() - t0)
            for k in parts if clock is not None else ():
                parts[k].append(clock.parts.get(k, 0.0))  # type: ignore[union-attr]
    out: dict[str, Any] = {"threads": threads, "candidates": len(cands), "history": len(events), "requests": n}
    out |= summary(total)
    out |= {f"{k}_p50_ms": summary(v)["p50_ms"] for k, v in parts.items() if v}
    return out


def latency(
    designs: list[Design],
    work: Path,
    runs: Path | None,
    seed: int,
    n: int,
    threads: list[int],
    results: Path,
    http: bool = False,
) -> None:
    work.mkdir(parents=True, exist_ok=True)
    for d in designs:
        bundle, source = bundle_of(d, work, runs, seed)
        rec = Recommender(load_bundle(bundle), None)
        inproc: dict[int, dict[str, Any]] = {}
        for full_rows in (False, True) if d.key == "early" else (False,):
            for t in threads:
                before = load1()
                m = time_score(rec, n, t, full_rows)
                if not full_rows:
                    inproc[t] = m
                m |= {"design": d.key, "path": "full-rows" if full_rows else "serving", "quantize": d.quantize}
                m |= {"ranker": source, "load_before": before, "load_after": load1(), "cpus": os.cpu_count()}
                m["torch"] = torch.__version__
                key = f"latency|{d.key}|threads={t}" + ("|path=full-rows" if full_rows else "")
                save_result(results, key, m, name=d.name, seed=None, protocol=PROTOCOL, config=d.config)
                parts = "".join(f", {k} {m[f'{k}_p50_ms']:.2f}" for k in ("encode", "model") if f"{k}_p50_ms" in m)
                print(
                    f"{key}: p50 {m['p50_ms']:.2f} ms, p99 {m['p99_ms']:.2f} ms{parts} "
                    f"(load {before} → {m['load_after']})",
                    flush=True,
                )
        if http:  # beside each HTTP point: the same run's in-process p50 / p99 (the overhead's baseline)
            events, cands = score_events(rec, time.time())
            history = [{"item": e.item, "action": e.action, "time": e.time} for e in events]
            for t in threads:
                server = Server(bundle, f"sqlite:///{work / 'score-http.db'}", 1, t, work / "serve.log")
                try:
                    before = load1()
                    m = load(
                        server.url,
                        "/score",
                        lambda i, h=history, c=cands: {"user": 1 + i % 943, "history": h, "items": c},
                        1,
                        n,
                        600,
                    )
                finally:
                    server.stop()
                m |= {"design": d.key, "path": "http", "quantize": d.quantize, "threads": t, "ranker": source}
                m |= {"candidates": len(cands), "history": len(history), "load_before": before, "load_after": load1()}
                m |= {"cpus": os.cpu_count(), "torch": torch.__version__}
                same = inproc.get(t)
                if same is not None:
                    m |= {"in_process_p50_ms": same["p50_ms"], "in_process_p99_ms": same["p99_ms"]}
                key = f"latency|{d.key}|threads={t}|path=http"
                save_result(results, key, m, name=d.name, seed=None, protocol=PROTOCOL, config=d.config)
                print(f"{key}: p50 {m['p50_ms']:.2f} ms, p99 {m['p99_ms']:.2f} ms, errors {m['errors']}", flush=True)


# ---------------------------------------------------------------------- main


def main() -> None:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("part", choices=["latency", "quality"], help="what to measure (see the module docstring)")
    p.add_argument("--designs", nargs="+", choices=[d.key for d in DESIGNS], help="default: every design")
    p.add_argument("--results", type=Path, default=RESULTS, help="results file (ranker-results/1)")
    p.add_argument("--work", type=Path, default=Path("/tmp/score-designs"), help="latency: tiny runs and bundles")
    p.add_argument("--runs", type=Path, help="trained runs: quality writes them here, latency uses them if present")
    p.add_argument("--requests", type=int, default=1000, help="latency: timed /score calls per point (≥ 200)")
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="latency: torch thread counts")
    p.add_argument("--seed", type=int, default=2021, help="train.seed of the runs (quality; latency with --runs)")
    p.add_argument("--max-epochs", type=int, help="quality: cap train.epochs (recorded)")
    p.add_argument("--http", action="store_true", help="latency: also /score over HTTP (ranker serve, 1 client)")
    args = p.parse_args()
    designs = [d for d in DESIGNS if args.designs is None or d.key in args.designs]
    if not os.environ.get("RANKER_DATA_DIR"):
        sys.exit("RANKER_DATA_DIR is not set (R-ML100K / RK-ML100K are read from it)")
    if args.part == "latency":
        latency(designs, args.work, args.runs, args.seed, args.requests, args.threads, args.results, args.http)
    else:
        if args.runs is None:
            sys.exit("quality needs --runs DIR (where the trained runs go)")
        args.runs.mkdir(parents=True, exist_ok=True)
        quality(designs, args.runs, args.seed, args.max_epochs, args.results)
    print(f"done; results in {args.results}; tables: python benchmarks/update_tables.py", flush=True)


if __name__ == "__main__":
    main()
