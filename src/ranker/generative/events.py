"""The event log of a generative ranking run: events in global time order with their protocol rows.

RK-ML100K (``shared/benchmarks/PROTOCOLS.md``) stores, per event in (timestamp, file row) order,
5 rows: the rated item (``watch = 1``, ``like = 1[rating ≥ 4]``) and 4 sampled negatives
(``watch = like = 0``), each split a contiguous block. :func:`load_rk_ml100k` reads those
prepared tables back as one :class:`EventLog` (row ``r`` of split s is event ``start_s + r // 5``,
slot ``r % 5``), so a generative model scores *exactly* the rows the feature-based ranker
scores. The action token of an event is its rating (1..5), read from the same ``u.data`` the
recipe was built from and checked against the tables' positive rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from ranker.config.schema import TaskConfig
from ranker.data.recipes import get_recipe, prepare
from ranker.data.recipes.movielens_io import chronological, read_ml100k_ratings
from ranker.data.sources import locate
from ranker.errors import DataError

SPLITS = ("train", "valid", "test")


@dataclass(frozen=True)
class EventLog:
    """Events in global order and their scored rows.

    Shapes (n events, K rows per event, T tasks): user, item, action, time, split (n,) int64
    (split 0/1/2 = train/valid/test); candidates (n, K) item ids, column 0 the event's own
    item; labels, label_mask (n, K, T) float32; static (num_users + 1, S) int64 ids into the
    static table, indexed by user id. ``vocab`` (own event files): raw ids of users ``1..U``
    and items ``1..I`` (``vocab["items"][k - 1]`` is item k) and the action values of ids 1..A.
    """

    user: np.ndarray
    item: np.ndarray
    action: np.ndarray
    time: np.ndarray
    split: np.ndarray
    candidates: np.ndarray
    labels: np.ndarray
    label_mask: np.ndarray
    static: np.ndarray
    tasks: tuple[TaskConfig, ...]
    num_items: int
    num_actions: int
    num_static: int
    vocab: dict[str, pa.Array] | None = None

    def rows_of(self, split: int) -> tuple[np.ndarray, np.ndarray]:
        """(events, groups): the split's rows in table order as (row → event, slot), and users."""
        ev = np.flatnonzero(self.split == split)
        k = self.candidates.shape[1]
        return np.repeat(ev, k), np.repeat(self.user[ev], k)


def static_ids(columns: dict[str, np.ndarray], train: np.ndarray) -> tuple[np.ndarray, int]:
    """Static token ids (U, S) of per-user feature values and the table size.

    Feature f owns ids ``1 + off_f + {0 = unseen in train, 1.. = values seen in train}``.
    """
    out, offset = [], 0
    for values in columns.values():
        known = np.unique(values[train])
        local = np.searchsorted(known, values)
        hit = (local < len(known)) & (known[np.minimum(local, len(known) - 1)] == values)
        out.append(1 + offset + np.where(hit, local + 1, 0))
        offset += len(known) + 1
    ids = np.stack(out, 1) if out else np.zeros((len(train), 0), dtype=np.int64)
    return ids.astype(np.int64), offset


def _user_features(table: pa.Table, names: list[str], num_users: int,
                   first_split: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Per user id (0..num_users) feature values (as strings) and whether the user is in train."""
    users = table["user_id"].to_numpy()
    first = np.full(num_users + 1, -1, dtype=np.int64)
    uniq, first_row = np.unique(users, return_index=True)
    first[uniq] = first_row
    present = first >= 0
    cols: dict[str, np.ndarray] = {}
    for name in names:
        raw = table[name].to_numpy(zero_copy_only=False)
        values = np.full(num_users + 1, "", dtype=object)
        vals = raw[first[present]]
        if name == "age":
            vals = np.array([str(int(v) // 10) for v in vals], dtype=object)
        values[present] = np.array([str(v) for v in vals], dtype=object)
        cols[name] = values.astype(str)
    in_train = np.zeros(num_users + 1, dtype=bool)
    in_train[users[first_split == 0]] = True
    return cols, in_train


def load_rk_ml100k(static_features: list[str]) -> EventLog:
    """The prepared RK-ML100K splits as an :class:`EventLog` (see the module docstring)."""
    recipe = get_recipe("rk-ml100k")
    prepared = prepare(recipe)
    tables = [prepared.table(s) for s in SPLITS]
    table = pa.concat_tables(tables)
    k = int(prepared.manifest["meta"]["negatives_per_event"]) + 1
    n_rows = table.num_rows
    if n_rows % k or any(t.num_rows % k for t in tables):
        raise DataError(f"rk-ml100k: row counts {[t.num_rows for t in tables]} are not multiples of {k}")
    n = n_rows // k
    split = np.repeat(np.arange(3), [t.num_rows // k for t in tables])
    users = table["user_id"].to_numpy().reshape(n, k)
    items = table["item_id"].to_numpy().reshape(n, k)
    times = table["timestamp"].to_numpy().reshape(n, k)
    tasks = tuple(TaskConfig(**t) for t in prepared.manifest["data"]["tasks"])
    labels = np.stack([table[t.column or t.name].to_numpy().reshape(n, k) for t in tasks], -1)
    mask = np.stack([table[t.mask_column].to_numpy().reshape(n, k) if t.mask_column
                     else np.ones((n, k)) for t in tasks], -1)
    source = next(s for s in recipe.active_sources() if s.name == "u.data")
    ratings = read_ml100k_ratings(locate(source))
    order = chronological(ratings)
    if (len(order) != n or (ratings["user"][order] != users[:, 0]).any()
            or (ratings["item"][order] != items[:, 0]).any()
            or (ratings["timestamp"][order] != times[:, 0]).any()):
        raise DataError("rk-ml100k: the prepared positive rows do not match u.data in time order")
    num_users = int(users.max())
    cols, in_train = _user_features(table, static_features, num_users, np.repeat(split, k))
    static, num_static = static_ids(cols, in_train)
    return EventLog(
        user=users[:, 0].astype(np.int64), item=items[:, 0].astype(np.int64),
        action=ratings["rating"][order].astype(np.int64), time=times[:, 0].astype(np.int64),
        split=split.astype(np.int64), candidates=items.astype(np.int64),
        labels=labels.astype(np.float32), label_mask=mask.astype(np.float32), static=static,
        tasks=tasks, num_items=int(items.max()), num_actions=5, num_static=num_static)
