"""Two tiny runs on one synthetic catalogue, trained in seconds, for the serving tests.

Users ``u00..u59`` (a ``country`` each) rate items ``sku-000..sku-039`` (a ``category`` and a
``price`` each); a user of group g mostly picks items with ``item % 3 == g``. The retrieval
run is a SASRec on the event file; the ranker a TransAct ranker on rows (positive event + 2
random negatives) with the history columns built by :func:`ranker.data.history.build_histories`.
:func:`tiny_generative` adds a generative (HSTU) ranker on the same events (actions ``view`` /
``cart`` / ``buy`` from the rating, and ``wishlist``, seen in the last 5% of the time only; tasks
``click`` and ``buy``; 2 sampled negatives per event; static tokens: the user id and the country). Built once per test session (memoised).
"""

from __future__ import annotations

import contextlib
import io
from functools import cache
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv  # noqa: F401  (pa.csv)
import pyarrow.parquet as pq
import yaml

from ranker.cli import main
from ranker.data.history import build_histories

USERS, ITEMS, PER_USER = 60, 40, 20
COUNTRIES = ("fr", "de", "us")


def _events(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    users = np.repeat(np.arange(USERS), PER_USER)
    liked = [np.flatnonzero(np.arange(ITEMS) % 3 == g) for g in range(3)]
    items = np.array([rng.choice(liked[u % 3]) if rng.random() < 0.8 else rng.integers(ITEMS) for u in users])
    times = 1_700_000_000 + np.sort(rng.integers(0, 86_400 * 30, len(users)))
    rng.shuffle(times)
    return users, items, times


def _sku(i: np.ndarray) -> list[str]:
    return [f"sku-{int(x):03d}" for x in i]


def _uid(u: np.ndarray) -> list[str]:
    return [f"u{int(x):02d}" for x in u]


def _ranker_table(users: np.ndarray, items: np.ndarray, times: np.ndarray, rng: np.random.Generator) -> pa.Table:
    actions = rng.integers(1, 4, len(users))
    hist = build_histories(users, times, items, actions, users, times, 10).to_lists(times)
    neg = rng.integers(0, ITEMS, (len(users), 2))
    row_event = np.repeat(np.arange(len(users)), 3)
    row_item = np.concatenate([items[:, None], neg], axis=1).reshape(-1)
    click = np.tile([1, 0, 0], len(users))
    take = pa.array(row_event)
    return pa.table(
        {
            "user": _uid(users[row_event]),
            "country": [COUNTRIES[u % 3] for u in users[row_event]],
            "item": _sku(row_item),
            "category": [f"c{i % 4}" for i in row_item],
            "price": (row_item % 7 + 1.5).astype(np.float64),
            "hour": ((times[row_event] // 3600) % 24).astype(np.int64),
            "hist_items": pa.ListArray.from_arrays(
                hist["items"].offsets, pa.array(_sku(hist["items"].values.to_numpy()))
            ).take(take),
            "hist_actions": hist["actions"].take(take),
            "hist_seconds": hist["seconds_before"].take(take),
            "click": click,
            "buy": (click * (rng.random(len(click)) < 0.5)).astype(np.int64),
            "ts": times[row_event],
        }
    )


RETRIEVAL = {
    "kind": "retrieval",
    "name": "tiny-sasrec",
    "data": {"path": "events.csv", "user_column": "user", "item_column": "item", "time_column": "ts", "max_len": 20},
    "model": {"kind": "sasrec", "dim": 16, "num_layers": 1, "ff_dim": 16, "dropout": 0.0},
    "loss": {"kind": "full_softmax"},
    "train": {"epochs": 2, "batch_size": 16, "progress": False},
}
RANKER = {
    "name": "tiny-transact",
    "data": {
        "path": "rows.parquet",
        "split": {"kind": "time", "column": "ts", "fractions": [0.8, 0.1, 0.1]},
        "features": [
            {"kind": "categorical", "name": "user"},
            {"kind": "categorical", "name": "country"},
            {"kind": "categorical", "name": "item"},
            {"kind": "categorical", "name": "category"},
            {"kind": "categorical", "name": "hour"},
            {"kind": "numerical", "name": "price"},
            {
                "kind": "history",
                "name": "history",
                "item_column": "hist_items",
                "item_feature": "item",
                "action_column": "hist_actions",
                "time_column": "hist_seconds",
                "max_len": 10,
            },
        ],
        "tasks": [{"name": "click"}, {"name": "buy", "mask_column": "click"}],
        "group_column": "user",
        "item_column": "item",
    },
    "model": {
        "encoders": {"categorical": {"dim": 8}},
        "history": {"kind": "transact", "num_layers": 1, "ff_dim": 16, "max_len": 10},
        "backbone": {"hidden": [16], "dropout": 0.0},
    },
    "train": {"epochs": 1, "batch_size": 256, "progress": False},
}


@cache
def tiny_runs(root: Path) -> dict[str, Path]:
    """``{"retrieval": run, "ranker": run, "events": events.csv}`` under `root` (built once)."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    users, items, times = _events(rng)
    lines = ["user,item,ts,rating"] + [
        f"{u},{i},{t},{r}"
        for u, i, t, r in zip(_uid(users), _sku(items), times, rng.integers(1, 4, len(users)), strict=True)
    ]
    (root / "events.csv").write_text("\n".join(lines) + "\n")
    pq.write_table(_ranker_table(users, items, times, rng), root / "rows.parquet")
    for name, cfg in (("retrieval", RETRIEVAL), ("ranker", RANKER)):
        (root / f"{name}.yaml").write_text(yaml.safe_dump(cfg))
        with contextlib.redirect_stdout(io.StringIO()):
            code = main(["train", str(root / f"{name}.yaml"), "--out", str(root / name)])
        assert code == 0, name
    return {"retrieval": root / "retrieval", "ranker": root / "ranker", "events": root / "events.csv"}


GENERATIVE = {
    "kind": "generative",
    "name": "tiny-generative",
    "data": {
        "path": "generative_events.parquet",
        "user_column": "user",
        "item_column": "item",
        "time_column": "ts",
        "action_column": "action",
        "tasks": [{"name": "click", "column": "click"}, {"name": "buy", "column": "buy", "mask_column": "click"}],
        "negatives": {"per_event": 2, "seed": 0},
        "static_features": ["user", "country"],
        "split": {"kind": "time", "fractions": [0.8, 0.1, 0.1]},
        "max_events": 32,
    },
    "model": {"dim": 16, "num_layers": 1, "linear_dim": 8, "attention_dim": 8, "dropout": 0.0},
    "train": {"epochs": 2, "progress": False},
}
ACTIONS = ("view", "cart", "buy")


@cache
def tiny_generative(root: Path) -> Path:
    """A generative ranking run on :func:`tiny_runs`' events (built once); its directory."""
    events = tiny_runs(root)["events"]
    table = pa.csv.read_csv(events)
    rating = table.column("rating").to_numpy()
    ts = table.column("ts").to_numpy()
    users = table.column("user").to_pylist()
    actions = [ACTIONS[r - 1] for r in rating]
    for i in np.flatnonzero((ts >= np.quantile(ts, 0.95)) & (rating == 2)):
        actions[i] = "wishlist"  # test-period only: an action value the run never trains on
    pq.write_table(
        pa.table(
            {
                "user": users,
                "country": [COUNTRIES[int(u[1:]) % 3] for u in users],
                "item": table.column("item"),
                "ts": table.column("ts"),
                "action": actions,
                "click": np.ones(len(rating), dtype=np.int64),
                "buy": (rating == 3).astype(np.int64),
            }
        ),
        root / "generative_events.parquet",
    )
    (root / "generative.yaml").write_text(yaml.safe_dump(GENERATIVE))
    with contextlib.redirect_stdout(io.StringIO()):
        code = main(["train", str(root / "generative.yaml"), "--out", str(root / "generative")])
    assert code == 0, "generative"
    return root / "generative"
