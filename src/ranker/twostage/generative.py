"""Stage 2 by the generative HSTU ranker: the two-stage rows as a declared event file.

The generative ranker (Zhai et al., ICML 2024, §2.2 and §3.4; :mod:`ranker.models.generative`)
reads a user's whole sequence and scores candidates that sit where the next item would, so its
stage-2 data is not a table of rows but three files that ``kind: generative`` declares
(:class:`~ranker.config.generative.GenerativeData`, no recipe):

- ``events.parquet``: every user's full leave-one-out sequence (raw ids), one row per item;
  ``position`` (0-based index in the sequence) is the time column, so the file's time order is
  the stage-1 sequence order exactly (the offline R-ML1M sequences carry no timestamps, and
  HSTU's time bias is off); ``action`` is one value (``watch``: the tokens carry what stage 1
  sees, items in order); ``click`` = 1. The ``last_n`` split (1 + 1) makes the second-to-last
  item the validation event and the last the test event, as the protocol.
- ``negatives.parquet``: per training query (user, position) its hard and sampled negatives
  (:func:`ranker.twostage.rows.training_rows`, the feature ranker's), and per held-out query
  `per_event` of its N stage-1 candidates (not the target, drawn uniformly), which the
  validation AUC that selects the epoch is computed on. ``only_listed``: the training targets
  are the training queries alone, as the feature ranker's.
- ``users.parquet``: the demographics as static tokens (``user`` id first).

The held-out lists are scored through the served path (:func:`held_out_scores`:
:class:`~ranker.serving.generative.GenerativeStage` built from the run, M-FALCON over the
user's last ``max_events − 1`` items), so the offline figure is the served one by construction.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from ranker.retrieval.candidates import Candidates
from ranker.retrieval.data import ServingData
from ranker.retrieval.protocol import LeaveOneOut
from ranker.serving.generative import GenerativeStage
from ranker.serving.store import Event, raw_id
from ranker.twostage.rows import QueryRows, full_sequences
from ranker.twostage.side_info import SideInfo

ACTION = "watch"


def _raw_users(serving: ServingData) -> pa.Array:
    return serving.histories.column("user").combine_chunks()


def event_tables(data: LeaveOneOut, serving: ServingData, side: SideInfo) -> dict[str, pa.Table]:
    """``events`` (user, item, position, action, click) and ``users`` (user + demographics)."""
    full = full_sequences(data)
    lengths = np.diff(full.offsets)
    owner = np.repeat(np.arange(len(lengths)), lengths)
    position = np.arange(len(full.items)) - np.repeat(full.offsets[:-1], lengths)
    users = _raw_users(serving)
    events = pa.table(
        {
            "user": users.take(pa.array(owner)),
            "item": serving.items.take(pa.array(full.items - 1)),
            "position": pa.array(position, pa.int64()),
            "action": pa.array(np.full(len(owner), ACTION)),
            "click": pa.array(np.ones(len(owner), np.int8)),
        }
    )
    demo = side.user_columns(users)
    return {
        "events": events,
        "users": pa.table({"user": users, **dict(zip(demo.column_names, demo.columns, strict=True))}),
    }


def negatives_table(
    train: QueryRows, held_out: list[Candidates], serving: ServingData, *, per_event: int, seed: int
) -> pa.Table:
    """(user, item, position) rows: the training queries' negatives (their slots 1..) and
    `per_event` of each held-out query's candidates other than its target (uniform, one
    ``default_rng(seed)``)."""
    rng = np.random.default_rng(seed)
    users, items, positions = [], [], []
    qi, ki = np.nonzero(train.items[:, 1:] > 0)
    users.append(train.user[qi])
    items.append(train.items[qi, 1 + ki])
    positions.append(train.position[qi])
    for c in held_out:
        keys = rng.random(c.items.shape)
        keys[(c.items == 0) | (c.items == c.target[:, None])] = np.inf
        pick = np.argsort(keys, axis=1, kind="stable")[:, :per_event]
        chosen = np.take_along_axis(c.items, pick, axis=1)
        ok = np.isfinite(np.take_along_axis(keys, pick, axis=1))
        qi, ki = np.nonzero(ok)
        users.append(c.user[qi])
        items.append(chosen[qi, ki])
        positions.append(c.position[qi])
    u, i = np.concatenate(users), np.concatenate(items)
    return pa.table(
        {
            "user": _raw_users(serving).take(pa.array(u)),
            "item": serving.items.take(pa.array(i - 1)),
            "position": pa.array(np.concatenate(positions), pa.int64()),
        }
    )


def generative_config(
    name: str,
    files: dict[str, Path],
    side: SideInfo,
    *,
    per_event: int,
    demographics: bool = True,
    max_events: int = 128,
    epochs: int = 10,
) -> dict[str, Any]:
    """A ``kind: generative`` config (a plain dict) on the three files: HSTU 2 × 64 over the
    user's items, static tokens (user id, demographics unless not `demographics`), one binary
    task ``click``; trained on the listed training queries, selected on the validation AUC."""
    static = ["user", *([f["name"] for f in side.user_features] if demographics else [])]
    return {
        "kind": "generative",
        "name": name,
        "data": {
            "path": str(files["events"]),
            "user_column": "user",
            "item_column": "item",
            "time_column": "position",
            "action_column": "action",
            "tasks": [{"name": "click", "column": "click"}],
            "split": {"kind": "last_n", "valid": 1, "test": 1},
            "negatives_file": {"path": str(files["negatives"]), "per_event": per_event, "only_listed": True},
            "static_features": static,
            "user_table": {"path": str(files["users"])},
            "max_events": max_events,
        },
        "model": {
            "dim": 64,
            "num_layers": 2,
            "num_heads": 2,
            "linear_dim": 32,
            "attention_dim": 32,
            "dropout": 0.2,
            "time_bias": False,
        },
        "train": {"epochs": epochs, "lr": 0.001, "patience": 2, "progress": False},
    }


class HeldOutLists:
    """Stage-2 scores of held-out candidate lists through the served path: the user's items
    before the query position as events at their positions, the candidates at the query's
    position (:meth:`GenerativeStage.score`, M-FALCON over the last ``max_events − 1`` items)."""

    def __init__(self, stage: GenerativeStage, data: LeaveOneOut, serving: ServingData) -> None:
        self.stage, self.full = stage, full_sequences(data)
        self.users = [raw_id(u) for u in _raw_users(serving).to_pylist()]
        self.items = [raw_id(i) for i in serving.items.to_pylist()]  # internal item k is items[k - 1]

    def score(self, c: Candidates, q: int) -> np.ndarray:
        """(N,) scores of query `q`'s list (−inf on empty slots)."""
        u, p = int(c.user[q]), int(c.position[q])
        first = max(0, p - self.stage.max_history)
        hist = self.full.items[self.full.offsets[u] + first : self.full.offsets[u] + p]
        user = self.users[u]
        events = [Event(user, self.items[it - 1], ACTION, float(first + j)) for j, it in enumerate(hist)]
        slots = np.flatnonzero(c.items[q] > 0)
        out = np.full(c.items.shape[1], -np.inf)
        out[slots] = self.stage.score(user, events, [self.items[i - 1] for i in c.items[q, slots]], float(p))[1]
        return out

    def scores(self, c: Candidates) -> np.ndarray:
        """(Q, N) scores of every list of `c`."""
        return np.stack([self.score(c, q) for q in range(len(c))]) if len(c) else np.zeros(c.items.shape)
