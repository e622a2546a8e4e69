"""The ranker's input rows at request time: who owns each column, and the rows themselves.

A feature ranker was trained on rows of a table (one row per (user, item, time)); serving has
a user, a history from the event store and candidate items. :func:`column_roles` decides, at
``ranker bundle`` time, where each input column's value comes from when a request arrives:

- ``user`` / ``item``: the value is a property of the row's user (item): it is constant per
  user (item) in the training data, or (for values that drift, such as counters) the user
  (item) explains at least a quarter of it (R² for numbers, the modal value's share of the
  rows otherwise; the larger key wins). ``ranker bundle --role COLUMN=user|item|context``
  overrides the choice, which ``features.json`` records with the shares.
  Serving uses the latest value seen in the data (``users.parquet``, ``catalogue.parquet``).
- ``context``: anything else (e.g. the hour of the request): read from the request's
  ``context`` field by column name, null (the "missing" id / NaN) when absent.
- the key columns (``data.group_column``, ``data.item_column``) and the history's list columns.
- computed by the service for each request (:data:`DERIVED_ROLES`, numerical features only):
  ``retrieval_score`` (the candidate's stage-1 score ⟨u, e_j⟩), ``retrieval_rank`` (its rank
  over the whole catalogue, the history excluded, ties against it: 1 + #{j' ≠ j : s_j' ≥ s_j},
  as :func:`ranker.retrieval.candidates.score_items` gives it in training) and
  ``history_length`` (the user's number of events). A ranker trained on two-stage rows
  (:mod:`ranker.twostage`) reads them as ``stage1_score``, ``stage1_rank`` and ``hist_len``:
  those names get these roles by default (:data:`DERIVED_DEFAULTS`). Without them a served
  two-stage ranker would read nulls where it was trained on scores.

A request's ``context`` may override any user column too (the user table is a default).
:func:`ranker_rows` builds the candidate rows as an arrow table, which the run's own
:class:`~ranker.data.preprocess.Preprocessor` encodes exactly as in training.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ranker.config.schema import DataConfig, HistoryFeature
from ranker.errors import ConfigError
from ranker.serving.store import Event

OWNED = 0.25  # share of a column a key must explain to own it (overridable: ranker bundle --role)
#: Roles whose value the service computes per request (module doc); the first two per candidate.
DERIVED_ROLES = ("retrieval_score", "retrieval_rank", "history_length")
#: The two-stage rows' column names for them (:func:`ranker.twostage.rows.rows_table`).
DERIVED_DEFAULTS = {"stage1_score": "retrieval_score", "stage1_rank": "retrieval_rank", "hist_len": "history_length"}


@dataclass(frozen=True)
class HistoryColumns:
    """The list columns of the ranker's history feature."""

    item: str
    action: str | None
    seconds: str | None
    max_len: int


def input_columns(data: DataConfig) -> list[str]:
    """The table columns the ranker's features read (history lists excluded)."""
    cols = [getattr(f, "column", None) or f.name for f in data.features if not isinstance(f, HistoryFeature)]
    return list(dict.fromkeys(cols))


def history_columns(data: DataConfig) -> HistoryColumns | None:
    """The first history feature's columns (a ranker with several histories is refused)."""
    hist = [f for f in data.features if isinstance(f, HistoryFeature)]
    if len(hist) > 1:
        raise ConfigError(f"data.features: {len(hist)} history features; serving feeds one from the store")
    if not hist:
        return None
    h = hist[0]
    return HistoryColumns(h.item_column, h.action_column, h.time_column, h.max_len)


def column_roles(table: pa.Table, columns: list[str], user_key: str | None, item_key: str) -> dict[str, dict[str, Any]]:
    """``{column: {"role": user|item|context|key, "user": share, "item": share}}`` (module doc)."""
    keys = {"item": _codes(table.column(item_key))}
    if user_key is not None:
        keys["user"] = _codes(table.column(user_key))
    roles: dict[str, dict[str, Any]] = {}
    for col in columns:
        if col in (user_key, item_key):
            roles[col] = {"role": "key"}
            continue
        arr = table.column(col).combine_chunks()
        shares = {name: _explained(arr, k) for name, k in keys.items()}
        exact = [name for name in ("item", "user") if shares.get(name, 0.0) >= 0.999]
        best = max(shares, key=lambda n: shares[n])
        role = exact[0] if exact else (best if shares[best] >= OWNED else "context")
        roles[col] = {"role": role, **{n: round(s, 4) for n, s in shares.items()}}
    return roles


def latest_by_key(table: pa.Table, key: str, columns: list[str]) -> pa.Table:
    """One row per distinct `key`: the columns' values at the key's last row (table order)."""
    k = table.column(key).combine_chunks()
    codes = _codes(k)
    rev = codes[::-1]
    _, first = np.unique(rev, return_index=True)
    last = np.sort(len(codes) - 1 - first)
    idx = pa.array(last)
    return pa.table({key: k.take(idx), **{c: table.column(c).combine_chunks().take(idx) for c in columns}})


def ranker_rows(
    *,
    user: str | None,
    user_key: str | None,
    user_row: dict[str, Any],
    items: list[str],
    item_key: str,
    item_features: pa.Table,
    context: dict[str, Any],
    context_columns: list[str],
    history: list[Event],
    hist: HistoryColumns | None,
    now: float,
    item_type: pa.DataType,
    history_rows: int | None = None,
    derived: dict[str, Any] | None = None,
) -> pa.Table:
    """The candidate rows: N = len(items); user and context values repeated, item values taken
    from `item_features` (aligned with `items`), the history lists on the first `history_rows`
    rows (all by default; the rest get empty lists: a caller that encodes one row's history
    and copies it saves the work N times), `derived` columns (module doc) repeated. Raw item ids are typed as the catalogue's
    (`item_type`): integer ids as int64, text that is no integer as a value no vocabulary holds."""
    n = len(items)
    cols: dict[str, pa.Array] = {item_key: typed_ids(items, item_type)}
    for name in item_features.column_names:
        cols[name] = item_features.column(name).combine_chunks()
    if user_key is not None:
        cols[user_key] = pa.array([user] * n, pa.string())
    for name, value in user_row.items():
        cols[name] = _repeat(context.get(name, value), n, name)
    for name in context_columns:
        cols[name] = _repeat(context.get(name), n, name)
    for name, value in (derived or {}).items():
        cols[name] = _repeat(value, n, name)
    if hist is not None:
        recent = history[-hist.max_len :]
        rows = n if history_rows is None else min(history_rows, n)
        cols[hist.item] = _repeat_list(typed_ids([e.item for e in recent], item_type), rows, n)
        if hist.action is not None:
            cols[hist.action] = _repeat_list(pa.array([e.action for e in recent], pa.string()), rows, n)
        if hist.seconds is not None:
            gaps = np.array([max(now - e.time, 0.0) for e in recent], dtype=np.float32)
            cols[hist.seconds] = _repeat_list(pa.array(gaps, pa.float32()), rows, n)
    return pa.table(cols)


NOT_AN_ID = -(2**62)  # stands for a text id in an integer catalogue: in no vocabulary (→ OOV)


def typed_ids(raw: list[str], item_type: pa.DataType) -> pa.Array:
    """Raw ids (text) as the catalogue's type, so vocabulary lookups need no text parsing."""
    if not pa.types.is_integer(item_type):
        return pa.array(raw, pa.string())
    out = []
    for r in raw:
        try:
            out.append(int(r))
        except ValueError:
            out.append(NOT_AN_ID)
    return pa.array(out, pa.int64())


def _repeat(value: Any, n: int, name: str) -> pa.Array:
    if isinstance(value, pa.Scalar):
        return pa.repeat(value, n)
    try:
        return pa.array([value] * n)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        raise ConfigError(f"context.{name}: unsupported value {value!r}") from None


def _repeat_list(values: pa.Array, rows: int, n: int) -> pa.ListArray:
    """`values` as the list of each of the first `rows` rows, empty lists after them (n rows)."""
    length = len(values)
    offsets = pa.array(np.minimum(np.arange(n + 1), rows).astype(np.int32) * length)
    flat = values.take(pa.array(np.tile(np.arange(length), rows))) if length else values
    return pa.ListArray.from_arrays(offsets, flat)


def _codes(arr: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """Dense int codes of any column (lists compared as their text; null is its own code)."""
    a = arr.combine_chunks() if isinstance(arr, pa.ChunkedArray) else arr
    if pa.types.is_list(a.type) or pa.types.is_large_list(a.type):
        a = pc.binary_join(pc.cast(a, pa.list_(pa.string())), "\x1f")
    enc = pc.dictionary_encode(a, null_encoding="encode")
    return np.asarray(enc.indices.to_numpy(zero_copy_only=False), dtype=np.int64)


def _explained(arr: pa.Array, key: np.ndarray) -> float:
    """Share of `arr` that `key` explains: the modal value's share of the rows (1.0 when the
    column is constant per key), and for numbers the larger of that and R²."""
    share = _modal_share(_codes(arr), key)
    if share >= 0.999 or not (pa.types.is_integer(arr.type) or pa.types.is_floating(arr.type)):
        return share
    x = np.asarray(pc.cast(arr, pa.float64()).to_numpy(zero_copy_only=False), dtype=np.float64)
    ok = np.isfinite(x)
    total = float(np.var(x[ok])) if ok.sum() > 1 else 0.0
    if total == 0.0:
        return share
    sums = np.bincount(key[ok], weights=x[ok])
    counts = np.bincount(key[ok])
    means = np.divide(sums, counts, out=np.zeros_like(sums), where=counts > 0)
    r2 = 1 - float(np.mean((x[ok] - means[key[ok]]) ** 2)) / total
    return max(share, r2)


def _modal_share(values: np.ndarray, key: np.ndarray) -> float:
    width = int(values.max()) + 1
    uniq, counts = np.unique(key * width + values, return_counts=True)
    best = np.zeros(int(key.max()) + 1, dtype=np.int64)
    np.maximum.at(best, uniq // width, counts)
    return float(best.sum() / len(values))
