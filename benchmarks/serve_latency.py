"""Latency of the service: in-process stages vs HTTP, and /events throughput per store.

Usage:
    python benchmarks/serve_latency.py BUNDLE --store sqlite:///bench.db [--redis redis://127.0.0.1:6390/0]
        [--requests 200] [--clients 1 8] [--threads 1] [--n-candidates 200]

The store must already hold histories (``ranker events load``). Users are cycled from 1..943
(MovieLens-100K ids). Reported, p50 / p99 in ms:

* in-process, per stage: store history read, stage 1 (user vector + search), stage 2 (rows,
  preprocessing, ranker forward), and the whole ``Recommender.recommend``;
* HTTP ``/recommend`` through ``ranker serve`` (a subprocess on a free 127.0.0.1 port) at each
  client count, with requests/s and errors;
* ``/events``: events/s with batches of 1 and 100, through HTTP, per store.

Every loop is bounded by ``--requests``. Figures from a shared, busy machine are indicative only.

Measured 2026-12-06 (commit of this file's introduction + the one-row history encoding), 2 shared
cores under load ≈ 3, torch 1 thread, `--requests 60 --clients 1 4`, a bundle of
`retrieval-sasrec-r-ml100k.yaml` + `best-rk-ml100k.yaml` (TransAct, early fusion, 10 events)
each trained 1 epoch × 20 steps (latency does not depend on training), u.data in SQLite:
in-process history 0.5 / 1.3 ms (p50 / p99), stage 1 2.0 / 4.7, stage 2 (200 candidates)
13.7 / 34.7 of which rows 0.7, preprocessing 3.6, ranker forward 7.2 (p50); HTTP /recommend
1 client 14.7 / 34.5 ms (58 req/s), 4 clients 76 / 109 ms (48 req/s), 0 errors; /events
durable: SQLite 249 events/s in batches of 1, 12,062 in batches of 100; Redis (no AOF) 412
and 17,841.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import torch

from ranker.serving.bundle import load_bundle
from ranker.serving.recommender import Query, Recommender
from ranker.serving.store import open_store


def pct(xs: list[float]) -> str:
    a = np.asarray(xs) * 1000
    return f"{np.percentile(a, 50):7.1f} {np.percentile(a, 99):7.1f}"


def in_process(bundle: Path, store_url: str, n: int, k: int, cands: int) -> None:
    rec = Recommender(load_bundle(bundle), open_store(store_url))
    parts: dict[str, list[float]] = {"history": [], "stage 1": [], "stage 2": [], "recommend": []}
    for i in range(n):
        user = str(1 + i % 943)
        t0 = time.perf_counter()
        events = rec.history_of(Query(user=user))
        t1 = time.perf_counter()
        known, _ = rec._internal([e.item for e in events])
        cand, s1 = rec._retrieve(events, known, time.time(), cands, set(known))
        t2 = time.perf_counter()
        rec._rank(Query(user=user), events, cand, s1, time.time())
        t3 = time.perf_counter()
        rec.recommend(Query(user=user), k=k, n_candidates=cands, exclude=[])
        t4 = time.perf_counter()
        for key, dt in zip(parts, (t1 - t0, t2 - t1, t3 - t2, t4 - t3), strict=True):
            parts[key].append(dt)
    print(f"\nin-process ({n} users, {cands} candidates, torch threads {torch.get_num_threads()})")
    print("| stage | p50 ms | p99 ms |\n|---|---|---|")
    for key, xs in parts.items():
        p50, p99 = pct(xs).split()
        print(f"| {key} | {p50} | {p99} |")


class Server:
    def __init__(self, bundle: Path, store: str, threads: int) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "ranker.cli",
                "serve",
                str(bundle),
                "--store",
                store,
                "--port",
                str(self.port),
                "--threads",
                str(threads),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=dict(os.environ),
        )
        self.url = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + "/health").status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.3)
        raise RuntimeError("server did not start")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)


def http_load(url: str, clients: int, n: int, k: int, cands: int) -> tuple[list[float], int, float]:
    lat: list[float] = []
    errors = 0
    lock = threading.Lock()
    per = max(1, n // clients)

    def run(c: int) -> None:
        nonlocal errors
        with httpx.Client(base_url=url, timeout=60) as http:
            for i in range(per):
                t0 = time.perf_counter()
                r = http.post("/recommend", json={"user": 1 + (c * per + i) % 943, "k": k, "n_candidates": cands})
                dt = time.perf_counter() - t0
                with lock:
                    lat.append(dt)
                    errors += r.status_code != 200

    start = time.perf_counter()
    threads = [threading.Thread(target=run, args=(c,)) for c in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return lat, errors, len(lat) / (time.perf_counter() - start)


def events_rate(url: str, batch: int, n: int) -> float:
    with httpx.Client(base_url=url, timeout=60) as http:
        start = time.perf_counter()
        sent = 0
        while sent < n:
            body = {
                "events": [
                    {"user": f"bench-{(sent + j) % 50}", "item": 1 + (sent + j) % 1682, "action": 4}
                    for j in range(batch)
                ]
            }
            assert http.post("/events", json=body).status_code == 200
            sent += batch
        return sent / (time.perf_counter() - start)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("bundle", type=Path)
    p.add_argument("--store", required=True)
    p.add_argument("--redis", help="also measure /events on this Redis store")
    p.add_argument("--requests", type=int, default=200)
    p.add_argument("--clients", type=int, nargs="+", default=[1, 8])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--n-candidates", type=int, default=200)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    in_process(args.bundle, args.store, args.requests, args.k, args.n_candidates)
    server = Server(args.bundle, args.store, args.threads)
    try:
        print("\nHTTP /recommend\n| clients | p50 ms | p99 ms | req/s | errors |\n|---|---|---|---|---|")
        for c in args.clients:
            lat, errors, rate = http_load(server.url, c, args.requests, args.k, args.n_candidates)
            p50, p99 = pct(lat).split()
            print(f"| {c} | {p50} | {p99} | {rate:.1f} | {errors} |")
        rows = [("sqlite", b, events_rate(server.url, b, min(args.requests * b, 5000))) for b in (1, 100)]
    finally:
        server.stop()
    if args.redis:
        server = Server(args.bundle, args.redis, args.threads)
        try:
            rows += [("redis", b, events_rate(server.url, b, min(args.requests * b, 5000))) for b in (1, 100)]
        finally:
            server.stop()
    print("\n/events (durable on reply)\n| store | batch | events/s |\n|---|---|---|")
    for store, b, rate in rows:
        print(f"| {store} | {b} | {rate:,.0f} |")
    print(f"\n(one pass; machine load {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)")


if __name__ == "__main__":
    main()
