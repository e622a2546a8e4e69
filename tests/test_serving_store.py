"""The event store contract, run against SQLite and Redis (RANKER_TEST_REDIS) alike."""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ranker.errors import ConfigError, DataError
from ranker.serving.store import Event, EventStore, load_file, open_store, raw_id

REDIS = os.environ.get("RANKER_TEST_REDIS")


@pytest.fixture(params=["sqlite", "redis"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[EventStore]:
    if request.param == "sqlite":
        s = open_store(f"sqlite:///{tmp_path / 'events.db'}")
    else:
        if not REDIS:
            pytest.skip("RANKER_TEST_REDIS is not set (a redis:// URL of a test server; .ci/run sets it)")
        prefix = f"test-{uuid.uuid4().hex[:8]}"
        s = open_store(f"{REDIS}?prefix={prefix}&cap=50")
    yield s
    if request.param == "redis":
        client = s.client  # type: ignore[attr-defined]
        for key in client.scan_iter(f"{s.prefix}:*"):  # type: ignore[attr-defined]
            client.delete(key)
    s.close()


def test_history_is_per_user_bounded_and_time_ordered(store: EventStore) -> None:
    store.append(
        [
            Event("a", "1", "click", 30.0),
            Event("b", "9", None, 1.0),
            Event("a", "2", "buy", 10.0, {"device": "ios"}),
            Event("a", "3", None, 20.0),
        ]
    )
    h = store.history("a", 10)
    assert [e.item for e in h] == ["2", "3", "1"]  # by time, oldest first
    assert h[0].action == "buy" and h[0].context == {"device": "ios"} and h[0].time == 10.0
    assert [e.item for e in store.history("a", 2)] == ["3", "1"]  # the most recent 2
    assert [e.item for e in store.history("b", 10)] == ["9"]
    assert store.history("nobody", 10) == [] and store.history("a", 0) == []


def test_same_time_events_keep_arrival_order(store: EventStore) -> None:
    store.append([Event("u", str(i), None, 5.0) for i in range(5)])
    store.append([Event("u", "5", None, 5.0), Event("u", "5", None, 5.0)])  # duplicates are kept
    assert [e.item for e in store.history("u", 10)] == ["0", "1", "2", "3", "4", "5", "5"]


def test_length_counts_every_event_of_the_user_beyond_what_history_keeps(store: EventStore) -> None:
    store.append([Event("u", str(i), None, float(i)) for i in range(70)])  # the Redis fixture caps at 50
    store.append([Event("v", "1", None, 1.0)])
    assert store.length("u") == 70 and store.length("v") == 1 and store.length("nobody") == 0
    assert len(store.history("u", 100)) == (50 if store.url.startswith("redis") else 70)


def test_seen_holds_the_distinct_items_beyond_what_history_keeps(store: EventStore) -> None:
    store.append([Event("u", str(i % 60), None, float(i)) for i in range(70)])  # items 0..59, 10 twice
    assert store.seen("u", 10_000) == {str(i) for i in range(60)}  # Redis's cap (50) drops events, not items
    assert store.seen("nobody", 100) == set()
    if store.url.startswith("sqlite"):
        assert store.seen("u", 5) == {str(i % 60) for i in range(65, 70)}


def test_append_is_visible_to_the_next_read_from_another_thread(store: EventStore) -> None:
    seen: list[list[str]] = []

    def write_then_read(i: int) -> None:
        store.append([Event("t", f"x{i}", None, float(i))])
        seen.append([e.item for e in store.history("t", 100)])

    threads = [threading.Thread(target=write_then_read, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=20)
    assert sorted(e.item for e in store.history("t", 100)) == sorted(f"x{i}" for i in range(8))
    assert all(len(s) >= 1 for s in seen)


def test_bulk_load_from_csv_and_parquet(store: EventStore, tmp_path: Path) -> None:
    csv = tmp_path / "u.data"
    csv.write_text("1\t50\t5\t881250949\n1\t172\t4\t881250950\n2\t50\t3\t881250000\n")
    n = load_file(
        store,
        csv,
        user_column="user",
        item_column="item",
        action_column="rating",
        time_column="time",
        delimiter="\t",
        column_names=["user", "item", "rating", "time"],
    )
    assert n == 3
    assert [(e.item, e.action) for e in store.history("1", 5)] == [("50", "5"), ("172", "4")]
    pq.write_table(pa.table({"uid": ["z"], "iid": [7]}), tmp_path / "e.parquet")
    load_file(store, tmp_path / "e.parquet", user_column="uid", item_column="iid")
    assert [e.item for e in store.history("z", 5)] == ["7"]
    with pytest.raises(DataError, match="'nope'"):
        load_file(store, tmp_path / "e.parquet", user_column="nope", item_column="iid")


def test_raw_ids_and_urls() -> None:
    assert [raw_id(7), raw_id(7.0), raw_id("07"), raw_id(2.5)] == ["7", "7", "07", "2.5"]
    with pytest.raises(ConfigError, match="sqlite:///"):
        open_store("postgres://x")


def test_sqlite_is_wal_with_full_sync(tmp_path: Path) -> None:
    s = open_store(f"sqlite:///{tmp_path / 'e.db'}")
    conn = s._conn()  # type: ignore[attr-defined]
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    plan = " ".join(
        str(r)
        for r in conn.execute(
            "EXPLAIN QUERY PLAN SELECT item FROM events WHERE user = 'a' ORDER BY time DESC, id DESC LIMIT 5"
        )
    )
    assert "events_user_time" in plan and "TEMP B-TREE" not in plan  # an index range, no sort
    s.close()


@pytest.mark.skipif(not REDIS, reason="RANKER_TEST_REDIS is not set")
def test_redis_caps_each_user(tmp_path: Path) -> None:
    prefix = f"test-{uuid.uuid4().hex[:8]}"
    s = open_store(f"{REDIS}?prefix={prefix}&cap=3")
    s.append([Event("c", str(i), None, float(i)) for i in range(10)])
    assert [e.item for e in s.history("c", 100)] == ["7", "8", "9"]
    for key in s.client.scan_iter(f"{prefix}:*"):  # type: ignore[attr-defined]
        s.client.delete(key)  # type: ignore[attr-defined]
    s.close()
