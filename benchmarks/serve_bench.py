"""Speed of the service (issue 18): /recommend, /score and /events over HTTP and in-process.

Usage (from the repository root, on an idle machine; see docs/experiments/serving.md):
    RANKER_DATA_DIR=../shared/data python benchmarks/serve_bench.py --build
    RANKER_DATA_DIR=../shared/data python benchmarks/serve_bench.py --dataset ml-1m --bundle DIR   # TS-ML1M
    python benchmarks/serve_bench.py --bundle DIR [--requests 10000] [--clients 1 8 32 128]
        [--servers 1:sqlite,2:sqlite,1:redis,2:redis] [--threads 1 2] [--time-cap 300]
        [--redis redis://HOST:PORT/DB] [--results benchmarks/results/serve-latency.json]
    smoke (< 1 minute): ... --requests 20 --stage-requests 10 --score-requests 10
        --event-requests 20 --clients 1 4 --servers 1:sqlite --time-cap 10 --results /tmp/s.json

``--build`` trains the two tiny runs itself (``retrieval-hstu-r-ml100k.yaml``, HSTU retrieval,
and ``best-rk-ml100k.yaml``, the TransAct ranker, each ``--set train.epochs=1 --set
train.max_steps_per_epoch=20``) and bundles them. Latency does not depend on training: the
shapes (catalogue, widths, history lengths, candidates) are the shipped configs'; only the
weights' values differ. Then u.data (MovieLens-100K, 100,000 events) is loaded into a SQLite
store and a Redis store with ``ranker events load`` (``--dataset ml-1m``: the R-ML1M recipe's
1,000,209 events, user by user in sequence order, written to ``events-ml-1m.parquet`` in --work
first; the bundle is given with --bundle, e.g. HSTU-large + the TS-ML1M stage-2 ranker of
``two_stage.py``), and the script measures, writing one
record per point to ``--results`` (``results_store.save_result``: provenance stamped; the
1-minute load average before and after each point and the CPU count are in the metrics):

* ``stages|threads=T``: ``Recommender.recommend`` in-process per stage (store reads: the history and the seen items,
  stage 1 = user vector + search, stage 2 = ranker rows / preprocessing / forward / the rest),
  200 candidates → top 10, ``--stage-requests`` users; the HTTP + store overhead is the
  difference to the HTTP rows. A cProfile of stage 2 (top 15 by cumulative and by own time)
  goes to ``profile-serve-stage2.txt`` beside the results file;
* ``recommend|workers=W|store=S|clients=C``: HTTP ``/recommend`` through ``ranker serve`` (a
  subprocess on a free 127.0.0.1 port; W uvicorn workers of ``cpus // W`` torch threads each,
  sharing the store S, which holds the histories every request reads: ``sqlite`` one WAL file,
  ``redis`` the Redis server; measured once every worker answers ``/health``),
  C concurrent clients (an asyncio httpx loop, on the same machine), ``--requests`` requests per
  point or ``--time-cap`` seconds, whichever ends first: p50 / p99 ms, req/s, errors;
* ``score|in-process|threads=T`` and ``score|http|threads=T``: the ranking stage alone on
  1,000 candidates with a 50-event history in the request, one client;
* ``events|S|batch=B``: ``/events`` sustained events/s, one client, B events per request;
  acknowledged = durable: SQLite WAL with ``synchronous=FULL``, Redis with ``appendonly yes``
  and ``appendfsync always`` (the Redis server the script starts; with ``--redis`` the server's
  own settings are recorded).

Every loop is bounded by a count and by ``--time-cap``. Only 127.0.0.1 is contacted.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import itertools
import os
import pstats
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import torch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from results_store import save_result  # noqa: E402  # type: ignore[import-not-found]

from ranker.serving import candidates as candidates_module  # noqa: E402
from ranker.serving.bundle import RankingStage, load_bundle  # noqa: E402
from ranker.serving.recommender import Query, Recommender, Stage1  # noqa: E402
from ranker.serving.store import Event, open_store  # noqa: E402

RESULTS = {"ml-100k": HERE / "results" / "serve-latency.json", "ml-1m": HERE / "results" / "serve-latency-ml1m.json"}
RETRIEVAL_CONFIG = "benchmarks/configs/retrieval-hstu-r-ml100k.yaml"
RANKER_CONFIG = "benchmarks/configs/best-rk-ml100k.yaml"
TINY = ["--set", "train.epochs=1", "--set", "train.max_steps_per_epoch=20"]
PROTOCOLS = {
    "ml-100k": "serving (R-ML100K retrieval + RK-ML100K ranker)",
    "ml-1m": "serving (TS-ML1M: R-ML1M retrieval + TS-ML1M stage-2 ranker)",
}
USERS = {"ml-100k": 943, "ml-1m": 6040}  # MovieLens user ids 1..USERS
K, CANDIDATES = 10, 200
SCORE_CANDIDATES, SCORE_HISTORY = 1000, 50
U_DATA = ["--delimiter", "\\t", "--column-names", "user,item,rating,time", "--user-column", "user"]
U_DATA += ["--item-column", "item", "--action-column", "rating", "--time-column", "time"]


def cli(*args: str, log: Path) -> None:
    """Run ``ranker ARGS`` (this interpreter, this checkout's package), output to `log`."""
    with log.open("a") as out:
        subprocess.run([sys.executable, "-m", "ranker.cli", *args], check=True, stdout=out, stderr=out, timeout=1800)


def summary(seconds: list[float]) -> dict[str, float]:
    a = np.asarray(seconds, dtype=np.float64) * 1000
    if not len(a):
        return {"p50_ms": float("nan"), "p99_ms": float("nan"), "mean_ms": float("nan")}
    return {"p50_ms": float(np.percentile(a, 50)), "p99_ms": float(np.percentile(a, 99)), "mean_ms": float(a.mean())}


def load1() -> float:
    return round(os.getloadavg()[0], 2)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Bench:
    """Where the records go, and what every record carries."""

    def __init__(self, results: Path, config: str, protocol: str) -> None:
        self.results, self.config, self.protocol = results, config, protocol
        results.parent.mkdir(parents=True, exist_ok=True)

    def save(self, key: str, metrics: dict[str, Any], load_before: float) -> None:
        metrics = {
            **metrics,
            "load_before": load_before,
            "load_after": load1(),
            "cpus": os.cpu_count(),
            "torch": torch.__version__,
        }
        save_result(self.results, key, metrics, name=key, seed=None, protocol=self.protocol, config=self.config)
        shown = {k: (round(v, 2) if isinstance(v, float) else v) for k, v in metrics.items() if k != "stages"}
        print(f"{key}: {shown}", flush=True)
        for stage, s in metrics.get("stages", {}).items():
            print(f"    {stage:<24} p50 {s['p50_ms']:7.2f}  p99 {s['p99_ms']:7.2f}  mean {s['mean_ms']:7.2f} ms")


# ---------------------------------------------------------------------- setup


def build(work: Path, log: Path) -> Path:
    """Train the two tiny runs and bundle them (cached in `work`: an existing bundle is kept)."""
    bundle = work / "bundle"
    if (bundle / "manifest.json").is_file():
        return bundle
    for config, out in ((RETRIEVAL_CONFIG, "hstu"), (RANKER_CONFIG, "transact")):
        print(f"training {config} (1 epoch × 20 steps) → {work / out}", flush=True)
        cli("train", str(ROOT / config), *TINY, "--out", str(work / out), log=log)
    cli("bundle", "--retrieval", str(work / "hstu"), "--ranker", str(work / "transact"), "--out", str(bundle), log=log)
    return bundle


def u_data() -> Path:
    data = os.environ.get("RANKER_DATA_DIR")
    if not data:
        sys.exit("RANKER_DATA_DIR is not set (MovieLens-100K u.data is read from it)")
    path = Path(data) / "movielens-100k" / "u.data.gz"
    if not path.is_file():
        sys.exit(f"{path}: not found")
    return path


def event_file(dataset: str, work: Path) -> tuple[Path, list[str]]:
    """The past events every store is loaded with, and the ``ranker events load`` options."""
    if dataset == "ml-100k":
        return u_data(), U_DATA
    import pyarrow as pa
    import pyarrow.parquet as pq

    from ranker.retrieval.data import from_recipe

    path = work / f"events-{dataset}.parquet"
    if not path.is_file():
        ev = from_recipe("r-ml1m")
        seqs = ev.sequences
        lengths = seqs.lengths()
        owner = np.repeat(np.arange(len(lengths)), lengths)
        start = np.repeat(seqs.offsets[:-1], lengths)
        time_ = seqs.times if seqs.times is not None else np.arange(len(seqs.items)) - start  # sequence order
        table = pa.table(
            {
                "user": ev.users.take(pa.array(owner)),
                "item": ev.items.take(pa.array(seqs.items - 1)),
                "time": pa.array(np.asarray(time_, dtype=np.int64)),
            }
        )
        pq.write_table(table, path)
    return path, ["--user-column", "user", "--item-column", "item", "--time-column", "time"]


class RedisServer:
    """A redis-server of our own: 127.0.0.1, a free port, AOF with fsync on every write."""

    def __init__(self, work: Path) -> None:
        exe = shutil.which("redis-server")
        if exe is None:
            sys.exit("redis-server not found: install it or give --redis URL")
        self.dir = work / "redis"  # kept: a rerun in the same --work reloads its AOF (no second u.data load)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        args = ["--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir), "--save", ""]
        args += ["--appendonly", "yes", "--appendfsync", "always"]
        self.proc = subprocess.Popen([exe, *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.url = f"redis://127.0.0.1:{self.port}/0"
        import redis

        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                redis.Redis(port=self.port).ping()
                return
            except redis.ConnectionError:
                time.sleep(0.1)
        self.stop()
        sys.exit("redis-server did not start")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def redis_durability(url: str) -> str:
    import redis

    r = redis.Redis.from_url(url)
    aof = r.config_get("appendonly").get("appendonly")
    fsync = r.config_get("appendfsync").get("appendfsync")
    return f"Redis appendonly {aof}, appendfsync {fsync}"


def with_db(url: str, db: int) -> str:
    base, sep, query = url.partition("?")
    head, _, _ = base.rstrip("/").rpartition("/")
    return f"{head}/{db}{sep}{query}" if base.count("/") >= 3 else f"{base.rstrip('/')}/{db}{sep}{query}"


# ---------------------------------------------------------------------- in-process


class Stage2Clock:
    """Times the parts of stage 2 by wrapping what ``Recommender._ranker_rows`` calls: the
    request row (``ranker_rows``, in ``CandidateEncoder.encode``), its preprocessing, the
    candidates' stage-1 features where the ranker reads them (``Recommender._stage1_features``)
    and the model (``Ranker.score_one_user``)."""

    def __init__(self, rec: Recommender) -> None:
        st = rec.bundle.ranking
        if not isinstance(st, RankingStage):
            sys.exit(
                "the stage timing (--only stages) needs a bundle with a feature ranker; use --only recommend score events"
            )
        self.on = False
        self.parts: dict[str, float] = {}
        rows_fn, transform, forward = candidates_module.ranker_rows, st.pre.transform, st.model.score_one_user

        def timed(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
            def run(*a: Any, **kw: Any) -> Any:
                t0 = time.perf_counter()
                try:
                    return fn(*a, **kw)
                finally:
                    if self.on:
                        self.parts[name] = self.parts.get(name, 0.0) + time.perf_counter() - t0

            return run

        self.restore = lambda: setattr(candidates_module, "ranker_rows", rows_fn)
        candidates_module.ranker_rows = timed("rows", rows_fn)  # type: ignore[assignment]
        st.pre.transform = timed("preprocessing", transform)  # type: ignore[method-assign]
        st.model.score_one_user = timed("forward", forward)  # type: ignore[method-assign]
        rec._stage1_features = timed("stage-1 features", rec._stage1_features)  # type: ignore[method-assign]


def stage1(rec: Recommender, events: list[Event], seen: set[str], n: int) -> tuple[np.ndarray, np.ndarray, Stage1]:
    """``Recommender.recommend``'s stage 1 for `events` (`seen` excluded): candidates, their
    scores, the user vector."""
    known, _ = rec._internal([e.item for e in events])
    banned, _ = rec._internal(sorted(seen))
    user = rec._user_vector(events, known, time.time())
    ids, scores = rec._search(user, n, set(banned))
    return np.asarray(ids, dtype=np.int64), np.asarray(scores, dtype=np.float64), Stage1(user, banned)


def stages(bundle: Path, store_url: str, n: int, threads: int, users: int) -> dict[str, Any]:
    torch.set_num_threads(threads)
    rec = Recommender(load_bundle(bundle), open_store(store_url))
    clock = Stage2Clock(rec)
    names = ["history", "stage 1", "stage 2", "stage 2: rows", "stage 2: preprocessing", "stage 2: forward"]
    names += ["stage 2: stage-1 features", "stage 2: rest", "recommend (whole)"]
    parts: dict[str, list[float]] = {k: [] for k in names}
    for i in range(-min(20, n), n):  # the first calls warm up (not recorded)
        user = str(1 + i % users)
        q = Query(user=user)
        t0 = time.perf_counter()
        events, seen = rec.history_of(q), rec.seen_of(q)
        t1 = time.perf_counter()
        cand, s1, vec = stage1(rec, events, seen, CANDIDATES)
        t2 = time.perf_counter()
        clock.parts, clock.on = {}, True
        rec._rank(q, events, cand, s1, time.time(), vec)
        clock.on = False
        t3 = time.perf_counter()
        rec.recommend(q, k=K, n_candidates=CANDIDATES, exclude=[])
        t4 = time.perf_counter()
        if i < 0:
            continue
        got = clock.parts
        rest = (t3 - t2) - sum(got.values())
        for key, dt in (
            ("history", t1 - t0),
            ("stage 1", t2 - t1),
            ("stage 2", t3 - t2),
            ("stage 2: rows", got.get("rows", 0.0)),
            ("stage 2: preprocessing", got.get("preprocessing", 0.0)),
            ("stage 2: forward", got.get("forward", 0.0)),
            ("stage 2: stage-1 features", got.get("stage-1 features", 0.0)),
            ("stage 2: rest", rest),
            ("recommend (whole)", t4 - t3),
        ):
            parts[key].append(dt)
    clock.restore()
    rec.store.close()  # type: ignore[union-attr]
    return {
        "requests": n,
        "threads": threads,
        "candidates": CANDIDATES,
        "k": K,
        "store": store_url.split(":")[0],
        "stages": {k: summary(v) for k, v in parts.items()},
    }


def profile_stage2(bundle: Path, store_url: str, n: int, threads: int, out: Path, users: int) -> None:
    torch.set_num_threads(threads)
    rec = Recommender(load_bundle(bundle), open_store(store_url))
    inputs = []
    for i in range(n):
        q = Query(user=str(1 + i % users))
        events = rec.history_of(q)
        inputs.append((q, events, *stage1(rec, events, rec.seen_of(q), CANDIDATES)))
    for q, events, cand, s1, vec in inputs[:10]:  # warm-up
        rec._rank(q, events, cand, s1, time.time(), vec)
    prof = cProfile.Profile()
    before = load1()
    prof.enable()
    for q, events, cand, s1, vec in inputs:
        rec._rank(q, events, cand, s1, time.time(), vec)
    prof.disable()
    text = io.StringIO()
    head = (
        f"# stage 2 of /recommend in-process (Recommender._rank: {CANDIDATES} candidates, ranker rows, "
        f"preprocessing, forward, serving score), {n} users, torch {torch.__version__}, {threads} thread(s)\n"
        f"# written by: python {' '.join(sys.argv)}\n"
        f"# date {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}, {os.cpu_count()} CPUs, "
        f"load average (1 min) {before} before, {load1()} after\n"
    )
    text.write(head)
    for order in ("cumulative", "tottime"):
        text.write(f"\n## top 15 by {order}\n")
        stats = pstats.Stats(prof, stream=text)
        stats.strip_dirs().sort_stats(order).print_stats(15)
    out.write_text(text.getvalue())
    rec.store.close()  # type: ignore[union-attr]
    print(f"stage-2 profile → {out}", flush=True)


def score_events(rec: Recommender, now: float) -> tuple[list[Event], list[str]]:
    """The /score request: a 50-event history (one per hour before now) and 1,000 candidates."""
    rng = np.random.default_rng(0)
    items = rec.raw_items
    hist = [items[int(j)] for j in rng.choice(len(items), SCORE_HISTORY, replace=False)]
    cands = [items[int(j)] for j in rng.choice(len(items), min(SCORE_CANDIDATES, len(items)), replace=False)]
    events = [Event("", it, "4", now - 3600.0 * (SCORE_HISTORY - j)) for j, it in enumerate(hist)]
    return events, cands


def score_in_process(bundle: Path, n: int, threads: int, time_cap: float, users: int) -> dict[str, Any]:
    torch.set_num_threads(threads)
    rec = Recommender(load_bundle(bundle), None)
    events, cands = score_events(rec, time.time())
    lat: list[float] = []
    deadline = time.perf_counter() + time_cap
    for i in range(-min(10, n), n):
        if time.perf_counter() > deadline:
            break
        q = Query(
            user=str(1 + i % users), history=[Event(str(1 + i % users), e.item, e.action, e.time) for e in events]
        )
        t0 = time.perf_counter()
        rec.score(q, cands)
        if i >= 0:
            lat.append(time.perf_counter() - t0)
    return {
        "path": "in-process",
        "threads": threads,
        "candidates": len(cands),
        "history": len(events),
        "requests": len(lat),
        "errors": 0,
        "capped": len(lat) < n,
        **summary(lat),
    }


# ---------------------------------------------------------------------- HTTP


class Server:
    """``ranker serve`` in a subprocess (its own process group) on a free 127.0.0.1 port."""

    def __init__(self, bundle: Path, store: str, workers: int, threads: int, log: Path) -> None:
        self.port = free_port()
        cmd = [sys.executable, "-m", "ranker.cli", "serve", str(bundle), "--store", store]
        cmd += ["--port", str(self.port), "--workers", str(workers), "--threads", str(threads)]
        self.log = log.open("a")
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=self.log, start_new_session=True)
        self.url = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 180
        answered: set[int] = set()  # worker pids seen on /health (a new connection each time)
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ranker serve exited with {self.proc.returncode}; see {log}")
            try:
                r = httpx.get(self.url + "/health", timeout=5, headers={"Connection": "close"})
                if r.status_code == 200:
                    answered.add(int(r.json()["worker"]))
                    if len(answered) >= workers:  # every worker has loaded the bundle
                        return
                time.sleep(0.05)
            except httpx.TransportError:
                time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"ranker serve: {len(answered)} of {workers} workers answered /health in 180 s; see {log}")

    def stop(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)  # the process group we started (uvicorn + workers)
            self.proc.wait(timeout=30)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)
        self.log.close()


async def _load(
    url: str, path: str, body: Callable[[int], dict[str, Any]], clients: int, n: int, time_cap: float
) -> tuple[list[float], int, float]:
    """`clients` concurrent loops posting `body(i)` until n requests or `time_cap` seconds."""
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    lat: list[float] = []
    errors = 0
    counter = itertools.count()
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as http:
        deadline = time.perf_counter() + time_cap

        async def client() -> None:
            nonlocal errors
            while True:
                i = next(counter)
                if i >= n or time.perf_counter() > deadline:
                    return
                t0 = time.perf_counter()
                try:
                    ok = (await http.post(path, json=body(i))).status_code == 200
                except httpx.HTTPError:
                    ok = False
                lat.append(time.perf_counter() - t0)
                errors += not ok

        start = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(clients)))
        elapsed = time.perf_counter() - start
    return lat, errors, elapsed


def load(
    url: str, path: str, body: Callable[[int], dict[str, Any]], clients: int, n: int, time_cap: float
) -> dict[str, Any]:
    asyncio.run(_load(url, path, body, clients, max(20, 2 * clients), 30))  # warm-up, not recorded
    lat, errors, elapsed = asyncio.run(_load(url, path, body, clients, n, time_cap))
    return {
        "clients": clients,
        "requests": len(lat),
        "requested": n,
        "capped": len(lat) < n,
        "errors": errors,
        "seconds": round(elapsed, 2),
        "req_per_s": len(lat) / max(elapsed, 1e-9),
        **summary(lat),
    }


def recommend_body(offset: int, users: int) -> Callable[[int], dict[str, Any]]:
    return lambda i: {"user": 1 + (offset + i) % users, "k": K, "n_candidates": CANDIDATES}


# ---------------------------------------------------------------------- main


def server_setups(values: list[str]) -> list[tuple[int, str]]:
    """``["1:sqlite,2:redis", "1:redis"]`` → ``[(1, "sqlite"), (2, "redis"), (1, "redis")]``.

    >>> server_setups(["1:sqlite,2:redis", "1:redis"])
    [(1, 'sqlite'), (2, 'redis'), (1, 'redis')]
    """
    out = []
    for setup in (part.strip() for value in values for part in value.split(",") if part.strip()):
        w, sep, store = setup.partition(":")
        if not sep or not w.isdigit() or int(w) < 1 or store not in ("sqlite", "redis"):
            raise ValueError(f"--servers {setup!r}: expected WORKERS:STORE, WORKERS ≥ 1, STORE sqlite or redis")
        out.append((int(w), store))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--bundle", type=Path, help="a directory written by `ranker bundle`")
    src.add_argument("--build", action="store_true", help="train the two tiny runs and bundle them (in --work)")
    p.add_argument("--work", type=Path, help="runs, bundle, stores and logs (default: a new temp directory)")
    p.add_argument(
        "--dataset",
        choices=sorted(RESULTS),
        default="ml-100k",
        help="whose users and past events the stores hold (ml-1m needs --bundle)",
    )
    p.add_argument("--results", type=Path, help="results file (ranker-results/1; default serve-latency[-ml1m].json)")
    p.add_argument("--requests", type=int, default=10_000, help="/recommend requests per HTTP point")
    p.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32, 128])
    p.add_argument(
        "--servers",
        nargs="+",
        default=["1:sqlite,2:sqlite,1:redis,2:redis"],
        metavar="WORKERS:STORE[,...]",
        help="the ranker serve setups of the /recommend curve (uvicorn workers : history store sqlite|redis), "
        "comma- or space-separated",
    )
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="torch threads (in-process, /score)")
    p.add_argument("--stage-requests", type=int, default=2_000, help="users of the in-process stage timing")
    p.add_argument("--profile-requests", type=int, default=200, help="stage-2 calls under cProfile")
    p.add_argument("--score-requests", type=int, default=2_000, help="/score requests per point")
    p.add_argument("--event-requests", type=int, default=2_000, help="/events requests per point")
    p.add_argument("--time-cap", type=float, default=300.0, help="seconds per measured point at most")
    p.add_argument("--redis", help="an existing Redis (default: start redis-server with AOF fsync always)")
    p.add_argument(
        "--only", nargs="+", choices=["stages", "recommend", "score", "events"], default=None, help="parts to run"
    )
    args = p.parse_args()
    try:
        servers = server_setups(args.servers)
    except ValueError as exc:
        p.error(str(exc))
    parts = set(args.only or ["stages", "recommend", "score", "events"])
    if args.build and args.dataset != "ml-100k":
        p.error("--build trains the ML-100K runs; give --bundle for --dataset ml-1m")
    args.results = args.results or RESULTS[args.dataset]
    users = USERS[args.dataset]
    work = args.work or Path(tempfile.mkdtemp(prefix="serve-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    log = work / "log.txt"
    print(f"work directory {work} (logs: {log}); results → {args.results}", flush=True)
    if args.build:
        bundle = build(work, log)
        config = f"{RETRIEVAL_CONFIG} + {RANKER_CONFIG} ({' '.join(TINY[1::2])})"
    else:
        bundle = args.bundle
        config = str(bundle)
    bench = Bench(args.results, config, PROTOCOLS[args.dataset])
    cpus = os.cpu_count() or 1

    own_redis = None if args.redis else RedisServer(work)
    redis_url = args.redis or own_redis.url  # type: ignore[union-attr]
    stores = {"sqlite": f"sqlite:///{work / 'events.db'}", "redis": redis_url}
    try:
        for name, url in stores.items():
            store = open_store(url)
            held = store.count()
            store.close()
            path, options = event_file(args.dataset, work)
            if held >= 100_000:  # already loaded (a rerun with the same --work or --redis)
                continue
            print(f"loading {path.name} into {name} ({url})", flush=True)
            cli("events", "load", url, str(path), *options, log=log)
        print(f"Redis: {redis_durability(redis_url)}", flush=True)

        if "stages" in parts:
            for t in args.threads:
                before = load1()
                m = stages(bundle, stores["sqlite"], args.stage_requests, t, users)
                bench.save(f"stages|threads={t}", m, before)
            profile_stage2(
                bundle,
                stores["sqlite"],
                args.profile_requests,
                max(args.threads),
                args.results.parent
                / args.results.name.replace("serve-latency", "profile-serve-stage2").replace(".json", ".txt"),
                users,
            )

        if "recommend" in parts:
            for workers, store in servers:
                threads = max(1, cpus // workers)
                server = Server(bundle, stores[store], workers, threads, log)
                try:
                    for c in args.clients:
                        before = load1()
                        m = load(
                            server.url, "/recommend", recommend_body(c * 101, users), c, args.requests, args.time_cap
                        )
                        m |= {"workers": workers, "threads_per_worker": threads, "store": store}
                        m |= {"candidates": CANDIDATES, "k": K}
                        bench.save(f"recommend|workers={workers}|store={store}|clients={c}", m, before)
                finally:
                    server.stop()

        if "score" in parts:
            for t in args.threads:
                before = load1()
                bench.save(
                    f"score|in-process|threads={t}",
                    score_in_process(bundle, args.score_requests, t, args.time_cap, users),
                    before,
                )
            rec = Recommender(load_bundle(bundle), None)
            events, cands = score_events(rec, time.time())
            history = [{"item": e.item, "action": e.action, "time": e.time} for e in events]
            for t in args.threads:
                server = Server(bundle, stores["sqlite"], 1, t, log)
                try:
                    before = load1()
                    m = load(
                        server.url,
                        "/score",
                        lambda i: {"user": 1 + i % users, "history": history, "items": cands},
                        1,
                        args.score_requests,
                        args.time_cap,
                    )
                    m |= {"path": "http", "threads": t, "candidates": len(cands), "history": len(history)}
                    bench.save(f"score|http|threads={t}", m, before)
                finally:
                    server.stop()

        if "events" in parts:
            ev_stores = {
                "sqlite": (f"sqlite:///{work / 'events-bench.db'}", "SQLite WAL, synchronous=FULL"),
                "redis": (with_db(redis_url, 1), redis_durability(redis_url)),
            }
            for suffix in ("", "-wal", "-shm"):  # a fresh SQLite file per run
                (work / f"events-bench.db{suffix}").unlink(missing_ok=True)
            items = Recommender(load_bundle(bundle), None).raw_items
            for name, (url, durability) in ev_stores.items():
                server = Server(bundle, url, 1, max(1, cpus), log)
                try:
                    for batch in (1, 100):

                        def body(i: int, b: int = batch) -> dict[str, Any]:
                            return {
                                "events": [
                                    {"user": f"bench-{(i * b + j) % 50}", "item": items[(i * b + j) % len(items)]}
                                    for j in range(b)
                                ]
                            }

                        before = load1()
                        m = load(server.url, "/events", body, 1, args.event_requests, args.time_cap)
                        m |= {"store": name, "durability": durability, "batch": batch}
                        m["events"] = m["requests"] * batch
                        m["events_per_s"] = m["req_per_s"] * batch
                        bench.save(f"events|{name}|batch={batch}", m, before)
                finally:
                    server.stop()
    finally:
        if own_redis is not None:
            own_redis.stop()
    print(f"done; results in {args.results}; tables: python benchmarks/update_tables.py", flush=True)


if __name__ == "__main__":
    main()
