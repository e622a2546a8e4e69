"""RK-ML100K: multi-task ranking (watch, like) with user history on MovieLens-100K.

Protocol ``RK-ML100K`` of ``shared/benchmarks/PROTOCOLS.md``. The exact procedure:

1. **Events** are the 100,000 ratings of ``u.data`` ordered by (timestamp, then row order in the
   file): a stable sort by timestamp. The event's *position* ``i`` is its index in that order.
2. **Split** by position: ``n_train = int(0.8 n)``, ``n_valid_end = int(0.9 n)``; positions
   ``< n_train`` are train, ``< n_valid_end`` valid, the rest test (80,000 / 10,000 / 10,000).
3. **Positive row** per event: ``watch = 1``, ``like = 1[rating >= 4]``.
4. **Negatives**: 4 per event, ``watch = like = 0``, with the event's user, timestamp and split.
   ``popularity[j]`` = number of **train** events of item ``j``; ``p[j] ∝ popularity[j] ** 0.75``
   over ``j = 0..num_items`` with ``p[0] = 0`` (so items never rated in train, and the
   padding id 0, are never drawn). A candidate ``c`` is valid for event ``i`` of user ``u``
   when ``u`` has no rating of ``c`` at a position ``<= i`` (later ratings are allowed; the
   event's own item is never valid). With one ``rng = numpy.random.default_rng(2021)``:
   ``pending`` = all positions, ascending. Each round draws
   ``rng.choice(num_items + 1, size=(len(pending), 8), p=p)``, one row of 8 per pending event;
   every pending event scans its 8 candidates left to right and accepts a candidate that is
   valid and not already accepted for it, until it holds 4 (accepted ones are kept across
   rounds, in acceptance order). Events still holding fewer than 4 stay pending, in position
   order, for the next round. Rounds repeat until no event is pending.
5. **Rows**: for each event in position order, its positive row and then its 4 negatives in
   acceptance order (5 rows per event); each split is a contiguous block of rows.
6. **Features** (one value per row): ``user_id``, ``gender``, ``occupation``, ``zip1`` (first
   character of the zip code; some are Canadian letters), ``item_id``, ``hour`` (0..23) and
   ``weekday`` (0 = Monday) of the timestamp in UTC: categorical. ``genres``: list of u.item
   genre names (may be empty). Numerical (float64): ``age``, ``release_year`` (null when the
   release date is missing), and counters over events at **strictly earlier positions**:
   ``user_n_ratings`` (the user's), ``item_n_ratings`` and ``item_mean_rating`` (the row's
   item's; the mean is null when the item has no earlier rating). History: the user's last 50
   ratings with timestamp **strictly before** the row's timestamp (oldest first; same-second
   ratings excluded), as ``hist_item`` (list<int64>), ``hist_action`` (the rating 1..5,
   list<int64>) and ``hist_seconds`` (seconds before the row's time, list<float32>). Labels
   ``watch``, ``like`` (int8) and ``timestamp`` (int64).

The same protocol as generative ranking reads it (:func:`ranker.generative.events.rk_ml100k_data`):
``events.parquet`` (the events in position order: ``user_id``, ``item_id``, ``timestamp``,
``rating``, ``watch``, ``like``) and ``users.parquet`` (``user_id``, ``gender``, ``occupation``,
``zip1``, ``age`` as its decade in text), written beside the splits.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ranker.data.history import build_histories
from ranker.data.recipes.base import BuiltRanking, Recipe, split_bounds
from ranker.data.recipes.movielens_io import (
    U_DATA,
    U_ITEM,
    U_USER,
    chronological,
    read_ml100k_items,
    read_ml100k_ratings,
    read_ml100k_users,
)
from ranker.errors import DataError

SEED = 2021
NEGATIVES = 4
OVERSAMPLE = 8
POP_EXPONENT = 0.75
HISTORY_LEN = 50
LIKE_THRESHOLD = 4
MAX_ROUNDS = 10_000
SPLITS = ("train", "valid", "test")

DATA: dict[str, Any] = {
    "features": [
        {"kind": "categorical", "name": "user_id"},
        {"kind": "categorical", "name": "gender"},
        {"kind": "categorical", "name": "occupation"},
        {"kind": "categorical", "name": "zip1"},
        {"kind": "categorical", "name": "item_id"},
        {"kind": "categorical", "name": "hour"},
        {"kind": "categorical", "name": "weekday"},
        {"kind": "multi_categorical", "name": "genres", "max_len": 6},
        {"kind": "numerical", "name": "age"},
        {"kind": "numerical", "name": "release_year"},
        {"kind": "numerical", "name": "user_n_ratings", "transform": "log1p"},
        {"kind": "numerical", "name": "item_n_ratings", "transform": "log1p"},
        {"kind": "numerical", "name": "item_mean_rating"},
        {"kind": "history", "name": "history", "item_column": "hist_item",
         "item_feature": "item_id", "action_column": "hist_action",
         "time_column": "hist_seconds", "max_len": HISTORY_LEN},
    ],
    "tasks": [
        {"name": "watch", "column": "watch"},
        {"name": "like", "column": "like", "mask_column": "watch"},
    ],
    "group_column": "user_id",
    "item_column": "item_id",
}  # fmt: skip


def draw_negatives(
    users: np.ndarray,
    items: np.ndarray,
    train: np.ndarray,
    num_items: int,
    *,
    k: int = NEGATIVES,
    seed: int = SEED,
    power: float = POP_EXPONENT,
) -> tuple[np.ndarray, int, np.ndarray]:
    """Step 4 for events in position order: (n, k) negatives, the rounds used and the train
    popularity of ids ``0..num_items`` (`train` (n,) bool marks the train events)."""
    popularity = np.bincount(items[train], minlength=num_items + 1).astype(np.float64)
    popularity[0] = 0.0
    weights = popularity**power * (popularity > 0)
    first_position = np.full((int(users.max()) + 1, num_items + 1), len(users), dtype=np.int64)
    np.minimum.at(first_position, (users, items), np.arange(len(users)))
    neg, rounds = sample_negatives(users, first_position, weights / weights.sum(), np.random.default_rng(seed), k=k)
    return neg, rounds, popularity


def sample_negatives(
    users: np.ndarray,
    first_position: np.ndarray,
    p: np.ndarray,
    rng: np.random.Generator,
    k: int = NEGATIVES,
    oversample: int = OVERSAMPLE,
) -> tuple[np.ndarray, int]:
    """`k` distinct valid negatives per event (step 4 of the module docstring) and the rounds used.

    ``users[i]`` is the user of the event at position ``i``; ``first_position[u, j]`` is the
    position of ``u``'s first rating of item ``j`` (``len(users)`` or more when never rated);
    ``p`` are the draw probabilities of ids ``0..num_items``.
    """
    n = len(users)
    neg = np.zeros((n, k), dtype=np.int64)  # 0 = empty slot
    pending = np.arange(n, dtype=np.int64)
    rounds = 0
    while len(pending):
        rounds += 1
        if rounds > MAX_ROUNDS:
            raise DataError(
                f"negative sampling: {len(pending)} events still lack {k} valid negatives after "
                f"{MAX_ROUNDS} rounds (first at position {int(pending[0])})"
            )
        m = len(pending)
        cand = rng.choice(len(p), size=(m, oversample), p=p).astype(np.int64)
        valid = first_position[users[pending][:, None], cand] > pending[:, None]
        combined = np.concatenate([neg[pending], np.where(valid, cand, 0)], axis=1)
        # Duplicates within a row: keep the first occurrence in column order (stable sort).
        order = np.argsort(combined, axis=1, kind="stable")
        sorted_vals = np.take_along_axis(combined, order, axis=1)
        dup_sorted = np.zeros_like(sorted_vals, dtype=bool)
        dup_sorted[:, 1:] = sorted_vals[:, 1:] == sorted_vals[:, :-1]
        dup = np.empty_like(dup_sorted)
        np.put_along_axis(dup, order, dup_sorted, axis=1)
        keep = (combined > 0) & ~dup
        rank = np.cumsum(keep, axis=1)
        take = keep & (rank <= k)
        rows, cols = np.nonzero(take)
        new = np.zeros((m, k), dtype=np.int64)
        new[rows, rank[rows, cols] - 1] = combined[rows, cols]
        neg[pending] = new
        pending = pending[take.sum(axis=1) < k]
    return neg, rounds


def prior_item_stats(
    ev_items: np.ndarray, ev_ratings: np.ndarray, q_items: np.ndarray, q_positions: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Count and rating sum of each query item over events at positions < the query position.

    ``ev_items``/``ev_ratings`` are indexed by event position.
    """
    n = len(ev_items)
    key = ev_items * (n + 1) + np.arange(n)
    order = np.argsort(key, kind="stable")
    sorted_key = key[order]
    csum = np.concatenate([[0], np.cumsum(ev_ratings[order])])
    lo = np.searchsorted(sorted_key, q_items * (n + 1), side="left")
    hi = np.searchsorted(sorted_key, q_items * (n + 1) + q_positions, side="left")
    return hi - lo, csum[hi] - csum[lo]


def prior_user_counts(ev_users: np.ndarray) -> np.ndarray:
    """Number of the user's events at strictly earlier positions, per event position."""
    order = np.argsort(ev_users, kind="stable")
    su = ev_users[order]
    starts = np.flatnonzero(np.concatenate([[True], su[1:] != su[:-1]]))
    group_start = np.repeat(starts, np.diff(np.concatenate([starts, [len(su)]])))
    out = np.empty(len(su), dtype=np.int64)
    out[order] = np.arange(len(su)) - group_start
    return out


def _lookup(values: pa.Array, ids: np.ndarray, table_ids: np.ndarray, what: str) -> pa.Array:
    """``values[k]`` where ``table_ids[k] == id``, for every id (all ids must be present)."""
    pos = np.full(int(max(table_ids.max(), ids.max())) + 1, -1, dtype=np.int64)
    pos[table_ids] = np.arange(len(table_ids))
    idx = pos[ids]
    if (idx < 0).any():
        raise DataError(f"rk-ml100k: {what} id {int(ids[idx < 0][0])} missing from its table")
    return values.take(pa.array(idx))


def build_rk_ml100k(paths: dict[str, Path]) -> BuiltRanking:
    """Build the RK-ML100K train/valid/test tables (see the module docstring)."""
    ratings = read_ml100k_ratings(paths["u.data"])
    users_t = read_ml100k_users(paths["u.user"])
    items_t = read_ml100k_items(paths["u.item"])
    order = chronological(ratings)
    ev_u, ev_i = ratings["user"][order], ratings["item"][order]
    ev_r, ev_t = ratings["rating"][order], ratings["timestamp"][order]
    n = len(order)
    n_train, n_valid_end = split_bounds(n)
    num_items = int(max(items_t["item_id"].to_numpy().max(), ev_i.max()))
    neg, rounds, popularity = draw_negatives(ev_u, ev_i, np.arange(n) < n_train, num_items)

    # Rows: event-major, positive first then its negatives.
    k1 = NEGATIVES + 1
    row_event = np.repeat(np.arange(n), k1)
    row_item = np.concatenate([ev_i[:, None], neg], axis=1).reshape(-1)
    row_user, row_time = ev_u[row_event], ev_t[row_event]
    watch = np.zeros((n, k1), dtype=np.int8)
    watch[:, 0] = 1
    like = np.zeros((n, k1), dtype=np.int8)
    like[:, 0] = ev_r >= LIKE_THRESHOLD

    item_count, item_sum = prior_item_stats(ev_i, ev_r, row_item, row_event)
    with np.errstate(invalid="ignore", divide="ignore"):
        item_mean = item_sum / item_count
    hist = build_histories(ev_u, ev_t, ev_i, ev_r, ev_u, ev_t, HISTORY_LEN).to_lists(ev_t)
    take_rows = pa.array(row_event)

    uid = users_t["user_id"].to_numpy()
    iid = items_t["item_id"].to_numpy()
    zip1 = pc.utf8_slice_codeunits(users_t["zip_code"].combine_chunks(), 0, 1)
    columns: dict[str, pa.Array] = {
        "user_id": pa.array(row_user),
        "gender": _lookup(users_t["gender"].combine_chunks(), row_user, uid, "user"),
        "age": _lookup(users_t["age"].combine_chunks(), row_user, uid, "user").cast(pa.float64()),
        "occupation": _lookup(users_t["occupation"].combine_chunks(), row_user, uid, "user"),
        "zip1": _lookup(zip1, row_user, uid, "user"),
        "item_id": pa.array(row_item),
        "genres": _lookup(items_t["genres"].combine_chunks(), row_item, iid, "item"),
        "release_year": _lookup(items_t["release_year"].combine_chunks(), row_item, iid, "item"),
        "hour": pa.array((row_time // 3600) % 24),
        "weekday": pa.array((row_time // 86400 + 3) % 7),  # 1970-01-01 was a Thursday (3)
        "user_n_ratings": pa.array(prior_user_counts(ev_u)[row_event].astype(np.float64)),
        "item_n_ratings": pa.array(item_count.astype(np.float64)),
        "item_mean_rating": pa.array(item_mean, mask=item_count == 0),
        "hist_item": hist["items"].take(take_rows),
        "hist_action": hist["actions"].take(take_rows),
        "hist_seconds": hist["seconds_before"].take(take_rows),
        "watch": pa.array(watch.reshape(-1)),
        "like": pa.array(like.reshape(-1)),
        "timestamp": pa.array(row_time),
    }
    table = pa.table(columns)
    bounds = {"train": (0, n_train), "valid": (n_train, n_valid_end), "test": (n_valid_end, n)}
    tables = {s: table.slice(a * k1, (b - a) * k1) for s, (a, b) in bounds.items()}
    meta: dict[str, Any] = {
        "events": {s: b - a for s, (a, b) in bounds.items()},
        "rows": {s: t.num_rows for s, t in tables.items()},
        "watch_rate": {s: float(np.mean(watch[a:b])) for s, (a, b) in bounds.items()},
        "like_rate": {s: float(np.mean(like[a:b])) for s, (a, b) in bounds.items()},
        "like_rate_watched": {s: float(np.mean(like[a:b, 0])) for s, (a, b) in bounds.items()},
        "negatives_per_event": NEGATIVES,
        "negative_seed": SEED,
        "sampling_rounds": rounds,
        "items_without_train_ratings": int((popularity[1:] == 0).sum()),
        "row_layout": "per event in (timestamp, row) order: positive row, then its 4 negatives",
    }
    events = pa.table(
        {"user_id": ev_u, "item_id": ev_i, "timestamp": ev_t, "rating": ev_r, "watch": watch[:, 0], "like": like[:, 0]}
    )
    decade = pa.array([str(a // 10) for a in users_t["age"].to_pylist()])
    user_table = pa.table(
        {
            "user_id": users_t["user_id"],
            "gender": users_t["gender"],
            "occupation": users_t["occupation"],
            "zip1": zip1,
            "age": decade,
        }
    )
    return BuiltRanking(tables=tables, data=DATA, meta=meta, extra={"events": events, "users": user_table})


RK_ML100K = Recipe(
    name="rk-ml100k",
    protocol="RK-ML100K",
    kind="ranking",
    summary="MovieLens-100K watch/like ranking with history, 4 popularity negatives, time split",
    sources=(U_DATA, U_USER, U_ITEM),
    build=build_rk_ml100k,
    version=2,
    aliases=("ml-100k", "ml100k"),
)
