"""The embedded event store: one SQLite file in WAL mode, no server.

Schema::

    events(id INTEGER PRIMARY KEY, user TEXT, item TEXT, action TEXT, time REAL, context TEXT)
    INDEX events_user_time ON events(user, time, id)

``history(user, limit)`` is one index range read backwards from the end of the user's key
range: ``ORDER BY time DESC, id DESC LIMIT ?`` touches ``limit`` index entries after one
B-tree descent, never the user's older events or other users' rows.

Durability. Each ``append`` is one transaction, committed before it returns, with
``journal_mode=WAL`` and ``synchronous=FULL``: the WAL is fsync'd at every commit, so an
acknowledged event survives a killed process *and* an OS crash or power loss. ``NORMAL``
with WAL would survive a killed process (SIGKILL: the WAL is in the OS page cache) but could
lose the last commits on power loss; the price of FULL is one fsync per batch, which is why
``POST /events`` takes batches. Several processes (``--workers N``) share the file: WAL lets
readers run beside the one writer, and ``busy_timeout`` makes a writer wait for the lock
instead of failing.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path

from ranker.serving.store import Event

SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY,
    user TEXT NOT NULL,
    item TEXT NOT NULL,
    action TEXT,
    time REAL NOT NULL,
    context TEXT
);
CREATE INDEX IF NOT EXISTS events_user_time ON events(user, time, id);
"""


class SQLiteStore:
    """Events in one SQLite file; one connection per thread (FastAPI runs handlers in threads)."""

    def __init__(self, path: Path, *, busy_timeout_ms: int = 10_000) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.url = f"sqlite:///{self.path}"
        self.busy_timeout_ms = busy_timeout_ms
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._conn().executescript(SCHEMA)

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=False, timeout=self.busy_timeout_ms / 1000
            )
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute(f"PRAGMA busy_timeout={int(self.busy_timeout_ms)}")
            self._local.conn = conn
            with self._lock:
                self._all.append(conn)
        return conn

    def append(self, events: Sequence[Event]) -> None:
        if not events:
            return
        conn = self._conn()
        rows = [(e.user, e.item, e.action, float(e.time), e.context_json()) for e in events]
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.executemany("INSERT INTO events(user, item, action, time, context) VALUES (?, ?, ?, ?, ?)", rows)
            conn.execute("COMMIT")  # returns once the WAL is fsync'd (synchronous=FULL)
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def history(self, user: str, limit: int) -> list[Event]:
        if limit <= 0:
            return []
        rows = (
            self._conn()
            .execute(
                "SELECT item, action, time, context FROM events WHERE user = ? ORDER BY time DESC, id DESC LIMIT ?",
                (user, int(limit)),
            )
            .fetchall()
        )
        return [
            Event(user, item, action, time, json.loads(ctx) if ctx else {})
            for item, action, time, ctx in reversed(rows)
        ]

    def seen(self, user: str, limit: int) -> set[str]:
        """One index range read, like ``history``, returning only the item column."""
        rows = (
            self._conn()
            .execute("SELECT item FROM events WHERE user = ? ORDER BY time DESC, id DESC LIMIT ?", (user, int(limit)))
            .fetchall()
        )
        return {item for (item,) in rows}

    def length(self, user: str) -> int:
        """The user's number of events: an index range count, O(the user's events)."""
        return int(self._conn().execute("SELECT COUNT(*) FROM events WHERE user = ?", (user,)).fetchone()[0])

    def count(self) -> int:
        return int(self._conn().execute("SELECT COUNT(*) FROM events").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            for conn in self._all:
                conn.close()
            self._all.clear()
        self._local = threading.local()
