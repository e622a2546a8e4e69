"""The real server: `ranker serve` (uvicorn) in a subprocess on a free 127.0.0.1 port.

Read-your-writes over HTTP (SQLite and Redis stores, one worker and two sharing the store),
/reload and the --watch swap while requests are in flight, and no acknowledged event lost when
the server is killed with SIGKILL. Every loop is bounded in count and time.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from serving_runs import tiny_runs

from ranker.serving.bundle import write_bundle
from ranker.serving.store import open_store

REDIS = os.environ.get("RANKER_TEST_REDIS")


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    runs = tiny_runs(tmp_path_factory.getbasetemp() / "serving-runs")
    root = tmp_path_factory.mktemp("server-bundles")
    write_bundle(runs["retrieval"], root / "v1", ranker_run=runs["ranker"], index="hnsw")
    write_bundle(runs["retrieval"], root / "v2", ranker_run=runs["ranker"], index="exact")
    return {"v1": root / "v1", "v2": root / "v2"}


class Server:
    """`ranker serve BUNDLE --store STORE` on a free port; killed (SIGKILL) or stopped at exit."""

    def __init__(self, bundle: Path, store: str, log: Path, extra: tuple[str, ...] = ()) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1] / "src"), os.environ.get("PYTHONPATH", "")]),
        }
        self.log = log.open("ab")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "ranker.cli",
                "serve",
                str(bundle),
                "--store",
                store,
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--threads",
                "1",
                *extra,
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env=env,
        )
        self.http = httpx.Client(base_url=self.url, timeout=30)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}: {log.read_text()[-2000:]}")
            try:
                if self.http.get("/health").status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"server not up in 90 s: {log.read_text()[-2000:]}")

    def kill(self) -> None:
        self.proc.kill()  # SIGKILL: no shutdown handler runs
        self.proc.wait(timeout=30)

    def stop(self) -> None:
        self.http.close()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()
        self.log.close()


@pytest.fixture()
def server_factory(tmp_path: Path) -> Iterator[type]:
    started: list[Server] = []

    class Started(Server):
        def __init__(self, bundle: Path, store: str, *extra: str) -> None:
            super().__init__(bundle, store, tmp_path / "server.log", extra)
            started.append(self)

    yield Started
    for s in started:
        s.stop()


def _store_url(kind: str, tmp_path: Path, request: pytest.FixtureRequest | None = None) -> str:
    if kind == "sqlite":
        return f"sqlite:///{tmp_path / 'events.db'}"
    if not REDIS:
        pytest.skip("RANKER_TEST_REDIS is not set (a redis:// URL of a test server; .ci/run sets it)")
    prefix = f"test-{uuid.uuid4().hex[:8]}"
    if request is not None:

        def clean() -> None:
            s = open_store(f"{REDIS}?prefix={prefix}")
            for key in s.client.scan_iter(f"{prefix}:*"):  # type: ignore[attr-defined]
                s.client.delete(key)  # type: ignore[attr-defined]
            s.close()

        request.addfinalizer(clean)
    return f"{REDIS}?prefix={prefix}"


def _top(server: Server, user: str, k: int = 5) -> dict:
    r = server.http.post("/recommend", json={"user": user, "k": k, "n_candidates": 40})
    assert r.status_code == 200, r.text
    return r.json()


@pytest.mark.parametrize("kind", ["sqlite", "redis"])
def test_an_event_posted_changes_the_next_recommendation(
    kind: str, bundles: dict[str, Path], tmp_path: Path, server_factory: type, request: pytest.FixtureRequest
) -> None:
    server = server_factory(bundles["v1"], _store_url(kind, tmp_path, request))
    assert _top(server, "newcomer")["fallback"] == "popularity"
    t = time.time() - 100
    ack = server.http.post(
        "/events", json={"events": [{"user": "newcomer", "item": "sku-001", "action": 2, "time": t}]}
    )
    assert ack.status_code == 200 and ack.json()["accepted"] == 1
    before = _top(server, "newcomer")
    assert before["fallback"] is None and before["history_length"] == 1
    seen = before["items"][0]["item"]
    server.http.post("/events", json={"events": [{"user": "newcomer", "item": seen, "action": 3, "time": t + 1}]})
    after = _top(server, "newcomer")  # the very next request reads the event just acknowledged
    assert after["history_length"] == 2 and seen not in {r["item"] for r in after["items"]}
    assert after["items"] != before["items"]


def test_reload_with_requests_in_flight_fails_none(
    bundles: dict[str, Path], tmp_path: Path, server_factory: type
) -> None:
    server = server_factory(bundles["v1"], _store_url("sqlite", tmp_path))
    server.http.post("/events", json={"events": [{"user": "r", "item": "sku-004", "time": 1.0}]})
    versions = {server.http.get("/health").json()["model_version"]}
    results: list[tuple[int, str]] = []
    stop = threading.Event()

    def client() -> None:
        with httpx.Client(base_url=server.url, timeout=30) as http:
            for _ in range(40):  # bounded: 40 requests per client or until told to stop
                if stop.is_set():
                    return
                r = http.post("/recommend", json={"user": "r", "k": 3})
                results.append((r.status_code, r.json().get("model_version", r.text)))

    threads = [threading.Thread(target=client) for _ in range(3)]
    for th in threads:
        th.start()
    try:
        for target in ("v2", "v1", "v2"):
            r = server.http.post("/reload", json={"bundle": str(bundles[target])})
            assert r.status_code == 200, r.text
            versions.add(r.json()["model_version"])
    finally:
        stop.set()
        for th in threads:
            th.join(timeout=60)
    assert results and all(code == 200 for code, _ in results), results[:5]
    assert {v for _, v in results} <= versions and len(versions) == 2
    metrics = server.http.get("/metrics").text
    assert "ranker_reloads_total 3" in metrics


def test_sigkill_after_an_acknowledged_batch_loses_nothing(
    bundles: dict[str, Path], tmp_path: Path, server_factory: type
) -> None:
    store = _store_url("sqlite", tmp_path)
    server = server_factory(bundles["v1"], store)
    batch = [{"user": f"k{i % 3}", "item": f"sku-{i % 40:03d}", "action": 1, "time": 1_000.0 + i} for i in range(30)]
    for n in range(0, 30, 10):
        assert server.http.post("/events", json={"events": batch[n : n + 10]}).status_code == 200
    server.kill()
    s = open_store(store)
    assert [e.item for e in s.history("k0", 100)] == [b["item"] for b in batch if b["user"] == "k0"]
    s.close()
    again = server_factory(bundles["v1"], store)
    assert _top(again, "k1")["history_length"] == 10


def _wait(condition: Callable[[], bool], seconds: float = 60) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return False


def test_watch_swaps_a_new_bundle_with_requests_in_flight_and_refuses_a_tampered_one(
    bundles: dict[str, Path], tmp_path: Path, server_factory: type
) -> None:
    current = tmp_path / "current"
    current.symlink_to(bundles["v1"])
    server = server_factory(current, _store_url("sqlite", tmp_path), "--watch", "--watch-interval", "0.2")
    v1 = server.http.get("/health").json()["model_version"]
    server.http.post("/events", json={"events": [{"user": "w", "item": "sku-004", "time": 1.0}]})
    results: list[tuple[int, str]] = []
    swapped = threading.Event()

    def client() -> None:
        with httpx.Client(base_url=server.url, timeout=30) as http:
            for i in range(200):  # bounded; the second half waits (60 s at most) for the swap
                if i == 100:
                    swapped.wait(timeout=60)
                r = http.post("/recommend", json={"user": "w", "k": 3})
                results.append((r.status_code, r.json().get("model_version", r.text)))

    th = threading.Thread(target=client)
    th.start()
    try:
        assert _wait(lambda: len(results) >= 10)
        link = tmp_path / "current.new"  # the deploy: a new link renamed over the served one
        link.symlink_to(bundles["v2"])
        os.replace(link, current)
        assert _wait(lambda: server.http.get("/health").json()["model_version"] != v1)
        swapped.set()
    finally:
        swapped.set()
        th.join(timeout=120)
    health = server.http.get("/health").json()
    v2 = health["model_version"]
    assert v2 != v1 and health["bundle"] == str(current) and health["bundle_dir"] == str(bundles["v2"].resolve())
    assert len(results) == 200 and all(code == 200 for code, _ in results), results[:5]
    served = [v for _, v in results]
    assert set(served) == {v1, v2} and served == sorted(served, key=lambda v: v == v2)  # v1 … then v2 only
    assert "ranker_reloads_total 1" in server.http.get("/metrics").text

    tampered = tmp_path / "v3"
    shutil.copytree(bundles["v1"], tampered)
    with (tampered / "ranker" / "model.safetensors").open("r+b") as f:
        f.seek(100)
        byte = f.read(1)
        f.seek(100)
        f.write(bytes([byte[0] ^ 1]))
    link = tmp_path / "current.new"
    link.symlink_to(tampered)
    os.replace(link, current)
    assert _wait(lambda: "ranker_reload_failures_total 1" in server.http.get("/metrics").text)
    assert server.http.get("/health").json()["model_version"] == v2  # the old bundle keeps answering
    assert _top(server, "w", k=3)["model_version"] == v2
    log = (tmp_path / "server.log").read_text()
    assert "watch: refused the new bundle" in log and "model.safetensors: sha256 differs" in log


@pytest.mark.parametrize("kind", ["sqlite", "redis"])
def test_two_workers_share_the_store(
    kind: str, bundles: dict[str, Path], tmp_path: Path, server_factory: type, request: pytest.FixtureRequest
) -> None:
    """Each request on a new connection, so both workers answer: an event acknowledged by one is
    in the next /recommend's history whichever worker reads it."""
    server = server_factory(bundles["v1"], _store_url(kind, tmp_path, request), "--workers", "2")
    workers: set[int] = set()
    fresh = {"Connection": "close"}
    deadline = time.monotonic() + 120
    for i in range(200):  # bounded: stop once both workers answered 10 rounds in all
        if (len(workers) == 2 and i >= 10) or time.monotonic() > deadline:
            break
        item = f"sku-{i % 40:03d}"
        ack = httpx.post(
            server.url + "/events", json={"events": [{"user": "two", "item": item, "time": 1.0 + i}]}, headers=fresh
        )
        assert ack.status_code == 200
        out = httpx.post(server.url + "/recommend", json={"user": "two", "k": 3}, headers=fresh, timeout=30).json()
        assert out["history_length"] == min(i + 1, 20), out  # 20: the longest history a model reads
        workers.add(httpx.get(server.url + "/health", headers=fresh).json()["worker"])
    assert len(workers) == 2
