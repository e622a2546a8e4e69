"""The HTTP API in-process (FastAPI's TestClient): every endpoint, and bad requests → 4xx with a
one-line reason naming the field, never a 500."""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from serving_runs import tiny_runs

from ranker.serving.app import create_app
from ranker.serving.bundle import write_bundle
from ranker.serving.watch import BundleWatch


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    runs = tiny_runs(tmp_path_factory.getbasetemp() / "serving-runs")
    root = tmp_path_factory.mktemp("app-bundles")
    write_bundle(runs["retrieval"], root / "v1", ranker_run=runs["ranker"])
    write_bundle(runs["retrieval"], root / "v2", index="exact")  # retrieval only, another version
    return {"v1": root / "v1", "v2": root / "v2"}


@pytest.fixture()
def client(bundles: dict[str, Path], tmp_path: Path) -> Iterator[TestClient]:
    app = create_app(bundles["v1"], f"sqlite:///{tmp_path / 'events.db'}", max_body=64 * 1024)
    with TestClient(app) as c:
        yield c


def test_events_change_the_next_recommendation(client: TestClient) -> None:
    first = client.post("/recommend", json={"user": "u05", "k": 5})
    assert first.status_code == 200 and first.json()["fallback"] == "popularity"
    reply = client.post(
        "/events",
        json={
            "events": [
                {"user": "u05", "item": "sku-002", "action": 3, "time": 1_700_000_000},
                {"user": "u05", "item": "sku-005", "action": 1, "time": 1_700_000_100, "context": {"device": "tv"}},
                {"user": "u05", "item": "mystery", "time": 1_700_000_200},
            ]
        },
    )
    assert reply.json() == {"accepted": 3, "unknown_items": ["mystery"]}
    out = client.post("/recommend", json={"user": "u05", "k": 5, "context": {"hour": 9}}).json()
    assert out["fallback"] is None and out["history_length"] == 3 and out["unknown_items"] == ["mystery"]
    items = [r["item"] for r in out["items"]]
    assert len(items) == 5 and not {"sku-002", "sku-005"} & set(items)
    assert set(out["items"][0]) == {"item", "score", "retrieval_score", "probabilities"}
    keep = client.post("/recommend", json={"user": "u05", "k": 40, "exclude_history": False}).json()
    assert {"sku-002", "sku-005"} <= {r["item"] for r in keep["items"]}
    given = client.post("/recommend", json={"history": ["sku-002", {"item": "sku-005", "action": 1}], "k": 3})
    assert given.status_code == 200 and given.json()["history_length"] == 2


def test_items_seen_before_the_models_history_window_stay_excluded(client: TestClient) -> None:
    """The models read the last 20 events (H); /recommend excludes every item the user saw."""
    state = client.app.app.state.ranker  # type: ignore[attr-defined]
    assert state.engine.history_len == 20
    seen = [f"sku-{i:03d}" for i in range(30)]
    events = [{"user": "u07", "item": item, "time": 1_700_000_000 + i} for i, item in enumerate(seen)]
    assert client.post("/events", json={"events": events}).status_code == 200
    k = state.engine.num_items - len(seen)
    out = client.post("/recommend", json={"user": "u07", "k": k, "n_candidates": k}).json()
    assert out["history_length"] == 20 and len(out["items"]) == k
    assert not set(seen) & {r["item"] for r in out["items"]}  # the 10 oldest too
    given = client.post("/recommend", json={"history": seen, "k": k, "n_candidates": k}).json()
    assert not set(seen) & {r["item"] for r in given["items"]}


def test_filters_keep_items_with_the_given_column_values(client: TestClient) -> None:
    one = client.post("/recommend", json={"user": "u01", "k": 5, "filters": {"category": "c1"}}).json()
    assert one["items"] and all(int(r["item"][4:]) % 4 == 1 for r in one["items"])
    two = client.post(
        "/recommend", json={"user": "u01", "k": 40, "filters": {"category": ["c0", "c2"], "price": 1.5}}
    ).json()
    assert two["items"] and all(int(r["item"][4:]) % 4 in (0, 2) and int(r["item"][4:]) % 7 == 0 for r in two["items"])


def test_score_similar_health_metrics(client: TestClient) -> None:
    s = client.post("/score", json={"user": "u01", "items": ["sku-001", "sku-002", "nope"]}).json()
    assert {r["item"] for r in s["items"]} == {"sku-001", "sku-002", "nope"} and s["unknown_items"] == ["nope"]
    assert [r["score"] for r in s["items"]] == sorted((r["score"] for r in s["items"]), reverse=True)
    sim = client.get("/similar/sku-003", params={"k": 4}).json()
    assert len(sim["items"]) == 4 and "sku-003" not in {r["item"] for r in sim["items"]}
    h = client.get("/health").json()
    assert h["status"] == "ok" and h["ranker"] and h["items"] == 40
    text = client.get("/metrics").text
    assert 'ranker_requests_total{path="/score",status="200"} 1' in text
    assert 'ranker_request_seconds_bucket{path="/similar/{item}",le="+Inf"} 1' in text
    assert f'ranker_model_info{{version="{h["model_version"]}"' in text
    assert client.get("/docs").status_code == 200 and "/recommend" in client.get("/openapi.json").json()["paths"]


def test_reload_swaps_the_bundle_and_refuses_a_bad_one(client: TestClient, bundles: dict[str, Path]) -> None:
    before = client.get("/health").json()["model_version"]
    r = client.post("/reload", json={"bundle": str(bundles["v2"])}).json()
    assert r["previous_version"] == before and r["model_version"] != before
    assert client.get("/health").json()["ranker"] is False
    assert client.post("/recommend", json={"history": ["sku-001"], "k": 2}).json()["items"][0]["probabilities"] == {}
    bad = client.post("/reload", json={"bundle": str(bundles["v2"] / "nowhere")})
    assert (
        bad.status_code == 422
        and bad.json()["detail"].startswith("bundle: ")
        and "manifest.json" in bad.json()["detail"]
    )
    assert client.get("/health").json()["model_version"] == r["model_version"]  # still serving v2


def repoint(link: Path, target: Path) -> None:
    """The deploy step: a new symlink renamed over the old one (atomic)."""
    tmp = link.with_name(link.name + ".new")
    tmp.symlink_to(target)
    os.replace(tmp, link)


def test_watch_swaps_a_new_bundle_and_refuses_a_broken_one(
    bundles: dict[str, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    live = tmp_path / "current"
    live.symlink_to(bundles["v1"])
    app = create_app(live, f"sqlite:///{tmp_path / 'events.db'}")
    state = app.state.ranker
    watch = BundleWatch(state, 60.0)  # polled by hand here (the thread calls the same check)
    v1 = state.engine.version
    assert watch.check() is None  # the manifest being served
    repoint(live, bundles["v2"])
    assert watch.check() == "reloaded"
    v2 = state.engine.version
    assert v2 != v1 and state.engine.bundle.path == live and state.engine.bundle.directory == bundles["v2"].resolve()
    assert watch.check() is None
    broken = tmp_path / "broken"
    shutil.copytree(bundles["v1"], broken)
    with (broken / "catalogue.parquet").open("r+b") as f:
        f.seek(12)
        byte = f.read(1)
        f.seek(12)
        f.write(bytes([byte[0] ^ 1]))
    repoint(live, broken)
    with caplog.at_level(logging.WARNING, logger="ranker.serve"):
        assert watch.check() == "refused"
    assert "catalogue.parquet: sha256 differs" in caplog.text and f"still serving {v2}" in caplog.text
    assert state.engine.version == v2  # the old bundle keeps serving
    os.utime(broken / "manifest.json")  # a new mtime, the same bytes: not tried again
    assert watch.check() is None
    repoint(live, tmp_path / "nowhere")  # no manifest (a link mid-swap): nothing to do
    assert watch.check() is None and state.engine.version == v2
    with TestClient(app) as c:
        text = c.get("/metrics").text
        assert "ranker_reloads_total 1" in text and "ranker_reload_failures_total 1" in text
        assert c.get("/health").json()["model_version"] == v2


BAD = [
    ("/recommend", {"k": 3}, 422, "user: give a user or a history"),
    ("/recommend", {"user": "u01", "k": 0}, 422, "k: "),
    ("/recommend", {"user": "u01", "k": 41}, 422, "k: must be at most the catalogue size 40"),
    ("/recommend", {"user": "u01", "k": "three"}, 422, "k: "),
    ("/recommend", {"user": "u01", "n_candidates": 10**9}, 422, "n_candidates: "),
    ("/recommend", {"user": "u01", "kk": 1}, 422, "kk: Extra inputs are not permitted"),
    ("/recommend", {"user": ["u01"]}, 422, "user: "),
    ("/recommend", {"user": ""}, 422, "user: "),
    ("/recommend", {"history": ["sku-001"] * 1001}, 422, "history: "),
    ("/recommend", {"user": "u01", "time": -5}, 422, "time: "),
    ("/recommend", {"user": "u01", "context": {"k": [1, 2]}}, 422, "context.k"),
    ("/recommend", [1, 2], 422, "body: "),
    ("/recommend", {"user": "u01", "filters": {"nope": 1}}, 422, "filters.nope: not an item column"),
    ("/recommend", {"user": "u01", "filters": {"category": []}}, 422, "filters.category"),
    ("/score", {"user": "u01", "items": []}, 422, "items: "),
    ("/score", {"user": "u01"}, 422, "items: Field required"),
    ("/events", {"events": []}, 422, "events: "),
    ("/events", {"events": [{"user": "u01"}]}, 422, "events.0.item: Field required"),
    ("/events", {"events": [{"user": "u01", "item": "x", "time": "yesterday"}]}, 422, "events.0.time: "),
    ("/events", {"events": [{"user": "u01", "item": 1.5}]}, 422, "events.0.item: "),
    ("/reload", {"bundle": 3}, 422, "bundle: "),
]


@pytest.mark.parametrize(("path", "body", "status", "reason"), BAD)
def test_bad_requests_get_a_4xx_naming_the_field(
    client: TestClient, path: str, body: object, status: int, reason: str
) -> None:
    r = client.post(path, json=body)
    assert r.status_code == status, r.text
    detail = r.json()["detail"]
    assert isinstance(detail, str) and "\n" not in detail and detail.startswith(reason), detail


def test_bodies_that_are_not_json_or_too_large(client: TestClient) -> None:
    r = client.post("/recommend", content=b"{user: 1", headers={"content-type": "application/json"})
    assert (r.status_code, r.json()["detail"]) == (422, "body: not valid JSON")
    r = client.post("/events", content=b"[" + b"1," * 40_000 + b"1]", headers={"content-type": "application/json"})
    assert r.status_code == 413 and r.json()["detail"].startswith("body: larger than")
    assert client.get("/similar/not-an-item").status_code == 404
    assert client.get("/similar/sku-001", params={"k": 0}).json()["detail"].startswith("k: ")
    assert client.get("/nowhere").status_code == 404


def test_model_handlers_run_on_the_event_loop_thread(client: TestClient) -> None:
    """/recommend, /score and /similar run on the loop's own thread (no hand-off: see the app's
    module doc); concurrent requests queue for it and all succeed."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    state = client.app.app.state.ranker  # type: ignore[attr-defined]  # BodyLimit wraps the FastAPI app
    engine = state.engine
    seen: list[str] = []
    for name in ("recommend", "score", "similar"):
        real = getattr(engine, name)

        def spy(*a: object, _real: object = real, **kw: object) -> object:
            seen.append(threading.current_thread().name)
            return _real(*a, **kw)  # type: ignore[operator]

        setattr(engine, name, spy)
    requests = [("post", "/recommend", {"user": f"u{i:02d}", "k": 3}) for i in range(12)]
    requests += [("post", "/score", {"user": "u01", "items": ["sku-001", "sku-002"]})] * 4
    requests += [("get", "/similar/sku-001?k=2", None)] * 4
    with ThreadPoolExecutor(8) as pool:
        codes = list(
            pool.map(lambda r: getattr(client, r[0])(r[1], **({"json": r[2]} if r[2] else {})).status_code, requests)
        )
    assert codes == [200] * len(requests)
    assert len(seen) == len(requests) and len(set(seen)) == 1
    loop_thread = client.portal.call(lambda: threading.current_thread().name)  # type: ignore[union-attr]
    assert set(seen) == {loop_thread}
