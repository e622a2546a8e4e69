"""Read a declared event file (``data.path``) into exact ids, times and chronological order.

Shared by the sequence families (retrieval, generative ranking). Columnar throughout (pyarrow,
numpy); no per-row Python. Ids are never read through floats: CSV id columns are read as text,
parquet id columns must be integer or string columns. Raw ids map to internal indices by a
sorted vocabulary (:func:`vocabulary`), which the run directory keeps, so users only ever see
raw ids.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ranker.config.events import EventFile, EventTimeSplit
from ranker.data.checks import (
    FileRows,
    check_not_empty,
    check_text,
    check_time,
    check_unique,
    delimiter_hint,
    first_null,
    number,
    plural,
)
from ranker.data.readers import declared_file, file_format, read_table
from ranker.errors import ConfigError, DataError, warn


def read_events(
    cfg: EventFile, *, extra: dict[str, str] | None = None, base_dir: Path | None = None
) -> tuple[pa.Table, FileRows]:
    """The rows of ``cfg.path`` kept by the action filter, with every declared column present,
    and where each kept row is in the file (to name a bad one by its line).

    `extra` maps more config keys (``tasks.0.column``) to columns that must exist. A missing
    file or column is a ConfigError naming the key, the column and the file; ids and times are
    checked on the kept rows (a DataError naming the first bad row).
    """
    assert cfg.path is not None and cfg.user_column is not None and cfg.item_column is not None
    path = declared_file(cfg.path, "data.path", base_dir, "an event file")
    fmt = file_format(path, cfg.format)
    table = read_table(path, fmt, cfg.csv, string_columns=(cfg.user_column, cfg.item_column))
    rows = FileRows.of(path, fmt, cfg.csv)
    check_not_empty(table, rows)
    keys = {
        "user_column": cfg.user_column,
        "item_column": cfg.item_column,
        "time_column": cfg.time_column,
        "action_column": cfg.action_column,
        **(extra or {}),
    }
    declared = [c for c in keys.values() if c is not None]
    check_unique(table, declared, rows)
    for key, column in keys.items():
        if column is not None and column not in table.column_names:
            raise ConfigError(
                f"data.{key}: column {column!r} is not in {path}; columns: {', '.join(table.column_names)}"
                + delimiter_hint(table.column_names, cfg.csv.delimiter)
            )
    check_text(table, declared, rows)
    if cfg.action_column is not None and (cfg.keep_actions is not None or cfg.min_action is not None):
        keep = action_filter(table.column(cfg.action_column), cfg, path)
        table, rows = table.filter(keep), rows.kept(keep.to_numpy(zero_copy_only=False))
    for key in ("user_column", "item_column"):
        _no_missing_ids(table, str(keys[key]), key, rows)
    if cfg.time_column is not None:
        _integer_times(table, cfg.time_column, rows)
    return table, rows


def action_filter(col: pa.ChunkedArray, cfg: EventFile, path: Path | str = "") -> pa.ChunkedArray:
    """Rows whose action is in ``keep_actions`` (compared as text) or at least ``min_action``.

    A filter that keeps no row is an error listing the values the column holds; a listed value
    the column never holds gets a warning (a typo keeps fewer rows than meant).
    """
    if cfg.keep_actions is not None:
        text = pc.cast(col, pa.string())
        wanted = [str(v) for v in cfg.keep_actions]
        keep = pc.fill_null(pc.is_in(text, value_set=pa.array(wanted)), False)
        held = pc.unique(pc.drop_null(text)).to_pylist()
        if not pc.any(keep).as_py():
            shown = ", ".join(sorted(held)[:20]) + (", …" if len(held) > 20 else "")
            raise DataError(
                f"{path}: no row passes data.keep_actions {wanted}: column {cfg.action_column!r} holds {shown}"
            )
        absent = [v for v in wanted if v not in set(held)]
        if absent:
            warn(f"{path}: data.keep_actions {absent} never occur in the action column {cfg.action_column!r}")
        return keep
    if not (pa.types.is_integer(col.type) or pa.types.is_floating(col.type)):
        raise ConfigError(
            f"data.min_action: action column {cfg.action_column!r} is {col.type}, not numeric; use keep_actions"
        )
    keep = pc.fill_null(pc.greater_equal(col, cfg.min_action), False)
    if not pc.any(keep).as_py():
        top = pc.max(col).as_py()
        raise DataError(f"{path}: no row passes data.min_action {cfg.min_action}: the largest action is {top}")
    return keep


def _no_missing_ids(table: pa.Table, column: str, key: str, rows: FileRows) -> None:
    col = table.column(column)
    if col.null_count:
        i = first_null(col)
        raise DataError(
            f"{rows.path}: id column {column!r} (data.{key}) is empty on {plural(col.null_count, 'row')} "
            f"(first: {rows.at(i)}); every event needs a user and an item"
        )


def _integer_times(table: pa.Table, column: str, rows: FileRows) -> None:
    """Times are present, and integers or timestamps (fractions and words refused by row)."""
    check_time(table, column, rows, "data.time_column")
    col = table.column(column)
    if pa.types.is_floating(col.type):
        values = col.to_numpy()
        frac = np.flatnonzero(values != np.floor(values))
        if frac.size:
            i = int(frac[0])
            raise DataError(
                f"{rows.path}: time column {column!r} (data.time_column) must hold integers (e.g. unix "
                f"seconds) or timestamps; {rows.at(i)} holds {number(values[i])} ({plural(frac.size, 'such row')})"
            )


def id_values(col: pa.ChunkedArray, key: str) -> pa.Array:
    """An id column as one integer or string array (ConfigError for floats, DataError for nulls)."""
    arr = col.combine_chunks()
    if pa.types.is_dictionary(arr.type):
        arr = arr.dictionary_decode()
    if pa.types.is_large_string(arr.type):
        arr = arr.cast(pa.string())
    if not (pa.types.is_integer(arr.type) or pa.types.is_string(arr.type)):
        raise ConfigError(f"data.{key}: ids must be integers or strings, the column holds {arr.type}")
    if pa.types.is_integer(arr.type) and arr.type != pa.uint64():
        arr = arr.cast(pa.int64())
    if arr.null_count:
        raise DataError(f"data.{key}: {arr.null_count} rows have no id")
    return arr


def vocabulary(values: pa.Array) -> tuple[np.ndarray, pa.Array]:
    """(index of each value (n,) int64, the sorted distinct values): ``vocab[index] == values``."""
    uniq = pc.unique(values)
    uniq = uniq.take(pc.array_sort_indices(uniq))
    index = pc.index_in(values, value_set=uniq).to_numpy(zero_copy_only=False)
    return index.astype(np.int64), uniq


def time_values(col: pa.ChunkedArray, key: str = "time_column") -> np.ndarray:
    """(n,) int64: integers as given, timestamps and dates as unix seconds."""
    if col.null_count:
        raise DataError(f"data.{key}: {col.null_count} rows have no time")
    arr = col.combine_chunks()
    if pa.types.is_date(arr.type):
        arr = arr.cast(pa.timestamp("s"))
    if pa.types.is_timestamp(arr.type):
        arr = arr.cast(pa.timestamp("s"), safe=False).cast(pa.int64())
    if pa.types.is_floating(arr.type):
        values = arr.to_numpy()
        if not np.array_equal(values, np.floor(values)):
            raise ConfigError(f"data.{key}: times must be integers or timestamps (got fractions)")
        return values.astype(np.int64)
    if not pa.types.is_integer(arr.type):
        raise ConfigError(f"data.{key}: times must be integers or timestamps, the column holds {arr.type}")
    return arr.to_numpy().astype(np.int64)


def k_core(user: np.ndarray, item: np.ndarray, min_user: int, min_item: int) -> np.ndarray:
    """(n,) bool: rows kept once every user has ≥ `min_user` and every item ≥ `min_item` rows
    (dropping rows until both hold at once)."""
    keep = np.ones(len(user), dtype=bool)
    while True:
        users = np.bincount(user[keep], minlength=user.max() + 1 if len(user) else 0)
        items = np.bincount(item[keep], minlength=item.max() + 1 if len(item) else 0)
        new = keep & (users[user] >= min_user) & (items[item] >= min_item)
        if new.sum() == keep.sum():
            return keep
        keep = new


def chronological(user: np.ndarray, time: np.ndarray | None) -> np.ndarray:
    """The permutation ordering rows by (user, time, row): stable, so file order breaks ties."""
    order = np.arange(len(user))
    if time is not None:
        order = order[np.argsort(time, kind="stable")]
    return order[np.argsort(user[order], kind="stable")]


def time_periods(time: np.ndarray, split: EventTimeSplit) -> np.ndarray:
    """(n,) int64 period of each event, 0 / 1 / 2 = train / valid / test (see EventTimeSplit)."""
    if split.fractions is None:
        assert split.valid_start is not None and split.test_start is not None
        return np.where(time >= split.test_start, 2, np.where(time >= split.valid_start, 1, 0))
    n = len(time)
    a = int(split.fractions[0] * n)
    b = int((split.fractions[0] + split.fractions[1]) * n)
    period = np.empty(n, dtype=np.int64)
    period[np.argsort(time, kind="stable")] = np.repeat([0, 1, 2], [a, b - a, n - b])
    return period


def last_n_periods(user: np.ndarray, order: np.ndarray, valid: int, test: int) -> np.ndarray:
    """(n,) period of each event: per user (rows in chronological `order`) the last `test`
    events are 2, the `valid` before them 1, the rest 0."""
    su = user[order]
    counts = np.bincount(su)
    ends = np.cumsum(counts)[su]  # one past each row's user's last row, in sorted positions
    from_end = ends - np.arange(len(su))  # 1 for a user's last event
    period = np.empty(len(user), dtype=np.int64)
    period[order] = np.where(from_end <= test, 2, np.where(from_end <= test + valid, 1, 0))
    return period
