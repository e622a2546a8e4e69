"""The event log of a generative ranking run: events in global time order with their protocol rows.

RK-ML100K (``shared/benchmarks/PROTOCOLS.md``) stores, per event in (timestamp, file row) order,
5 rows: the rated item (``watch = 1``, ``like = 1[rating ≥ 4]``) and 4 sampled negatives
(``watch = like = 0``), each split a contiguous block. Its recipe also writes the events
(``u.data``, ratings as actions 1..5) and the users (``u.user``) as an event file and a user
table; :func:`rk_ml100k_data` declares them like own data (tasks watch / like, the recipe's
negative sampler, the 0.8 / 0.1 / 0.1 time split), so
:func:`~ranker.generative.event_file.load_event_file` builds the same rows the feature-based
ranker scores (tested against the EventLog once read back from the prepared split tables).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from ranker.config.events import EventTimeSplit
from ranker.config.generative import GenerativeData, SampledNegatives, UserTable
from ranker.config.schema import TaskConfig
from ranker.data.recipes import get_recipe, prepare
from ranker.data.recipes.rk_ml100k import NEGATIVES, POP_EXPONENT, SEED


@dataclass(frozen=True)
class EventLog:
    """Events in global order and their scored rows.

    Shapes (n events, K rows per event, T tasks): user, item, action, time, split (n,) int64
    (split 0/1/2 = train/valid/test); candidates (n, K) item ids, column 0 the event's own
    item; labels, label_mask (n, K, T) float32; static (num_users + 1, S) int64 ids into the
    static table, indexed by user id. ``vocab`` (own event files): raw ids of users ``1..U``
    and items ``1..I`` (``vocab["items"][k - 1]`` is item k) and the action values of ids 1..A.
    ``train_target`` (n,) bool: the train events that are training targets (None: all of them).
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
    train_target: np.ndarray | None = None


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


def rk_ml100k_data(static_features: list[str]) -> GenerativeData:
    """The built-in RK-ML100K as a declared event file and user table (see the module docstring)."""
    prepared = prepare(get_recipe("rk-ml100k"))
    return GenerativeData(
        path=str(prepared.directory / "events.parquet"),
        user_column="user_id",
        item_column="item_id",
        time_column="timestamp",
        action_column="rating",
        tasks=[TaskConfig(**t) for t in prepared.manifest["data"]["tasks"]],
        negatives=SampledNegatives(per_event=NEGATIVES, seed=SEED, power=POP_EXPONENT),
        static_features=static_features,
        user_table=UserTable(path=str(prepared.directory / "users.parquet")),
        split=EventTimeSplit(kind="time", fractions=(0.8, 0.1, 0.1)),
    )
