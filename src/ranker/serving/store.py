"""The event store: one interface, an embedded SQLite file or a shared Redis server.

An event is ``(user, item, action, time, context)`` in the caller's raw ids (kept as text, so
``7`` and ``"7"`` are the same id). Two operations matter to serving:

- ``append(events)`` returns only once the events are durable (what "acknowledged" means
  for each backend is stated in its module: :mod:`ranker.serving.sqlite_store`,
  :mod:`ranker.serving.redis_store`);
- ``history(user, limit)`` returns the user's ``limit`` most recent events, oldest first
  (ordered by time, then arrival), reading O(limit) rows: never a scan of the log.

:func:`open_store` picks the backend from a URL (``sqlite:///path.db``, ``redis://host:port/db``);
:func:`load_file` bulk-loads a past event file (a training log) in chunks.

Example:
    >>> import tempfile, os
    >>> store = open_store("sqlite:///" + os.path.join(tempfile.mkdtemp(), "e.db"))
    >>> store.append([Event("u1", "42", "click", 10.0), Event("u1", "7", None, 5.0)])
    >>> [e.item for e in store.history("u1", 10)]
    ['7', '42']
    >>> store.close()
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from ranker.errors import ConfigError, DataError

Scalar = str | int | float | bool | None


@dataclass(frozen=True)
class Event:
    """One interaction in raw ids; ``time`` in unix seconds."""

    user: str
    item: str
    action: str | None
    time: float
    context: dict[str, Scalar] = field(default_factory=dict)

    @classmethod
    def raw(cls, user: Any, item: Any, action: Any, time: float, context: dict[str, Scalar] | None = None) -> Event:
        """The event of values as a request or a file gives them: ids through :func:`raw_id`."""
        return cls(raw_id(user), raw_id(item), None if action is None else raw_id(action), time, dict(context or {}))

    def context_json(self) -> str | None:
        return json.dumps(self.context, sort_keys=True) if self.context else None


class EventStore(Protocol):
    """What the service needs of a store (both backends pass tests/test_serving_store.py)."""

    url: str

    def append(self, events: Sequence[Event]) -> None:
        """Persist `events`; durable when this returns (see the backend's module)."""
        ...

    def history(self, user: str, limit: int) -> list[Event]:
        """The user's `limit` most recent events, oldest first."""
        ...

    def seen(self, user: str, limit: int) -> set[str]:
        """The distinct items of the user's `limit` most recent events (what ``/recommend`` excludes)."""
        ...

    def length(self, user: str) -> int:
        """How many events the user has had (all of them, not only those `history` keeps)."""
        ...

    def count(self) -> int:
        """Number of events appended so far (a capped Redis store holds fewer)."""
        ...

    def close(self) -> None: ...


def check_store_url(url: str) -> str:
    """`url` when its scheme names a store :func:`open_store` opens (a ConfigError naming
    ``--store`` and the accepted forms otherwise); nothing is opened or connected."""
    if not url.startswith(("sqlite:///", "redis://", "rediss://", "unix://")) or url == "sqlite:///":
        raise ConfigError(f"--store {url!r}: expected sqlite:///path.db or redis://host:port/db")
    return url


def open_store(url: str) -> EventStore:
    """The store a URL names: ``sqlite:///relative.db``, ``sqlite:////abs/path.db`` or
    ``redis://host:port/db`` (optionally ``?cap=N``: events kept per user, default 10,000)."""
    check_store_url(url)
    if url.startswith("sqlite:///"):
        from ranker.serving.sqlite_store import SQLiteStore

        return SQLiteStore(Path(url[len("sqlite:///") :]))
    from ranker.serving.redis_store import RedisStore

    return RedisStore(url)


def raw_id(value: Any) -> str:
    """A raw id as the store keeps it: integers (also integral floats) as digits, text as is."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def read_event_file(path: Path, *, delimiter: str = ",", column_names: list[str] | None = None) -> pa.Table:
    """A parquet or CSV event file as a table (CSV columns as text, so ids are read exactly)."""
    if not path.is_file():
        raise DataError(f"{path}: no such event file")
    if path.suffix == ".parquet":
        return pq.read_table(path)
    read = pacsv.ReadOptions(column_names=column_names, autogenerate_column_names=False)
    parse = pacsv.ParseOptions(delimiter=delimiter)
    try:
        return pacsv.read_csv(path, read_options=read, parse_options=parse)
    except pa.ArrowInvalid as exc:
        raise DataError(f"{path}: cannot read as CSV (delimiter {delimiter!r}): {exc}") from None


def _seconds(col: pa.ChunkedArray, name: str, source: str) -> pa.ChunkedArray:
    """A time column as float seconds: numbers (CSV text of numbers included) or timestamps."""
    if pa.types.is_timestamp(col.type) or pa.types.is_date(col.type):
        return pc.cast(pc.cast(col, pa.timestamp("s")), pa.int64()).cast(pa.float64())
    try:
        seconds = pc.cast(col, pa.float64())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        bad = next((v for v in col.to_pylist() if v is not None and not _is_number(v)), None)
        raise DataError(
            f"--time-column {name!r}: {source} holds {bad!r} there; expected numbers (unix seconds) or timestamps"
        ) from None
    if seconds.null_count:
        raise DataError(f"--time-column {name!r}: {seconds.null_count} rows of {source} have no time")
    return seconds


def _is_number(value: Any) -> bool:
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return True


def load_file(
    store: EventStore,
    path: Path,
    *,
    user_column: str,
    item_column: str,
    action_column: str | None = None,
    time_column: str | None = None,
    delimiter: str = ",",
    column_names: list[str] | None = None,
    chunk: int = 10_000,
) -> int:
    """Append every row of an event file to `store`, `chunk` events per write (time: the
    column, else the row number); the count."""
    table = read_event_file(path, delimiter=delimiter, column_names=column_names)
    flags: dict[str, str | None] = {"--user-column": user_column, "--item-column": item_column}
    flags |= {"--action-column": action_column, "--time-column": time_column}
    for flag, col in flags.items():
        if col is not None and col not in table.column_names:
            raise DataError(f"{flag} {col!r}: not a column of {path}; columns: {', '.join(table.column_names)}")
    if time_column is not None:
        table = table.set_column(
            table.column_names.index(time_column),
            time_column,
            _seconds(table.column(time_column), time_column, str(path)),
        )
    for start in range(0, table.num_rows, chunk):
        part = table.slice(start, chunk)
        users = part.column(user_column).to_pylist()
        items = part.column(item_column).to_pylist()
        actions = part.column(action_column).to_pylist() if action_column else [None] * len(users)
        times = part.column(time_column).to_pylist() if time_column else range(start, start + len(users))
        store.append([Event.raw(u, i, a, float(t)) for u, i, a, t in zip(users, items, actions, times, strict=True)])
    return table.num_rows
