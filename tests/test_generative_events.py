"""Generative ranking on own event files (`data.path`): RK-ML100K declared as an event file gives
the built-in EventLog exactly; a small declared file trains end to end; bad declarations fail
before any training with the key, column or file named."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import yaml

from ranker.cli import main
from ranker.config import load_generative_config
from ranker.config.generative import STATIC_FEATURES, GenerativeData
from ranker.data.recipes import get_recipe
from ranker.data.recipes.movielens_io import read_ml100k_ratings, read_ml100k_users
from ranker.data.sources import locate
from ranker.errors import ConfigError, DataError
from ranker.generative.event_file import load_event_file
from ranker.generative.events import EventLog, rk_ml100k_data

ARRAYS = ("user", "item", "action", "time", "split", "candidates", "labels", "label_mask", "static")
# sha256 of the built-in RK-ML100K EventLog's arrays, computed with main's code before own data
RK_ML100K_FINGERPRINT = "8647c52a13d6b7338adaefac9690301b1da37160488e6531391938a585974884"
MODEL = {"dim": 8, "num_layers": 1, "num_heads": 1, "linear_dim": 4, "attention_dim": 4}
TRAIN = {"epochs": 2, "progress": False, "batch_cells": 200_000}


def _fingerprint(log: EventLog) -> str:
    h = hashlib.sha256()
    for name in ARRAYS:
        a = np.ascontiguousarray(getattr(log, name))
        h.update(name.encode())
        h.update(str(a.dtype).encode())
        h.update(a.tobytes())
    return h.hexdigest()


def test_rk_ml100k_as_an_event_file_is_the_built_in_event_log(tmp_path: Path) -> None:
    built_in = load_event_file(rk_ml100k_data(list(STATIC_FEATURES)))
    assert _fingerprint(built_in) == RK_ML100K_FINGERPRINT  # unchanged by own data

    sources = {s.name: locate(s) for s in get_recipe("rk-ml100k").active_sources()}
    r = read_ml100k_ratings(sources["u.data"])
    pq.write_table(
        pa.table(
            {
                "user_id": r["user"],
                "item_id": r["item"],
                "timestamp": r["timestamp"],
                "rating": r["rating"],
                "watch": np.ones(len(r["user"]), np.int8),
                "like": (r["rating"] >= 4).astype(np.int8),
            }
        ),
        tmp_path / "events.parquet",
    )
    u = read_ml100k_users(sources["u.user"])
    pq.write_table(
        pa.table(
            {
                "user_id": u["user_id"],
                "gender": u["gender"],
                "occupation": u["occupation"],
                "zip1": pc.utf8_slice_codeunits(u["zip_code"], 0, 1),
                "age": pa.array([str(a // 10) for a in u["age"].to_pylist()]),
            }
        ),
        tmp_path / "users.parquet",
    )
    data = GenerativeData(
        path=str(tmp_path / "events.parquet"),
        user_column="user_id",
        item_column="item_id",
        time_column="timestamp",
        action_column="rating",
        tasks=[{"name": "watch", "column": "watch"}, {"name": "like", "column": "like", "mask_column": "watch"}],  # type: ignore[list-item]
        negatives={"per_event": 4, "seed": 2021, "power": 0.75},  # type: ignore[arg-type]
        static_features=list(STATIC_FEATURES),
        user_table={"path": str(tmp_path / "users.parquet")},  # type: ignore[arg-type]
        split={"kind": "time", "fractions": [0.8, 0.1, 0.1]},
    )  # type: ignore[arg-type]
    own = load_event_file(data)
    for name in ARRAYS:
        assert np.array_equal(getattr(own, name), getattr(built_in, name)), name
    assert (own.num_items, own.num_actions, own.num_static) == (
        built_in.num_items,
        built_in.num_actions,
        built_in.num_static,
    )
    assert own.tasks == built_in.tasks


def _events(path: Path, users: int = 10, per_user: int = 30, seed: int = 0) -> Path:
    """A few hundred impressions with string ids, an event type, click/like labels, a country."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(users):
        for t in np.sort(rng.integers(1_600_000_000, 1_600_100_000, per_user)):
            click = int(rng.random() < 0.4)
            like = int(click and rng.random() < 0.5)
            action = ["skip", "click", "like"][click + like]
            rows.append(
                {
                    "user": f"u{u:02d}",
                    "item": f"sku-{int(rng.integers(0, 25)):03d}",
                    "ts": int(t),
                    "event": action,
                    "clicked": click,
                    "liked": like,
                    "country": "fr" if u % 2 else "de",
                }
            )
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def _config(tmp_path: Path, **data: object) -> Path:
    base = {
        "path": "events.parquet",
        "user_column": "user",
        "item_column": "item",
        "time_column": "ts",
        "action_column": "event",
        "tasks": [
            {"name": "click", "column": "clicked"},
            {"name": "like", "column": "liked", "mask_column": "clicked"},
        ],
        "static_features": ["user", "country"],
        "max_events": 16,
        "split": {"kind": "last_n", "valid": 2, "test": 2},
    }
    cfg = {"kind": "generative", "name": "own", "data": {**base, **data}, "model": MODEL, "train": TRAIN}
    path = tmp_path / "own.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_last_n_split_and_negatives(tmp_path: Path) -> None:
    _events(tmp_path / "events.parquet")
    cfg = load_generative_config(_config(tmp_path, negatives={"per_event": 3}))
    log = load_event_file(cfg.data, base_dir=tmp_path)
    assert np.bincount(log.split).tolist() == [10 * 26, 20, 20]
    assert (np.diff(log.split) >= 0).all()  # each split one block
    for u in np.unique(log.user):  # a user's events stay in time order
        assert (np.diff(log.time[log.user == u]) >= 0).all()
    assert log.candidates.shape == (300, 4) and (log.candidates[:, 1:] != log.candidates[:, :1]).all()
    assert (log.labels[:, 1:] == 0).all() and (log.label_mask[:, 1:, 1] == 0).all()
    assert (log.label_mask[:, 0, 1] == log.labels[:, 0, 0]).all()  # like only where clicked
    assert log.num_actions == 3 and log.vocab is not None
    assert log.vocab["actions"].to_pylist() == ["click", "like", "skip"]


def test_train_on_an_event_file_end_to_end(tmp_path: Path) -> None:
    _events(tmp_path / "events.parquet")
    out = tmp_path / "run"
    with contextlib.redirect_stdout(io.StringIO()):
        assert (
            main(
                [
                    "train",
                    str(_config(tmp_path, split={"kind": "time", "fractions": [0.7, 0.15, 0.15]})),
                    "--out",
                    str(out),
                ]
            )
            == 0
        )
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["test"]) == {"click", "like"}
    users = pq.read_table(out / "users.parquet").column("user").to_pylist()
    assert users == [f"u{u:02d}" for u in range(10)]
    assert pq.read_table(out / "items.parquet").column("item").to_pylist()[0] == "sku-000"
    assert main(["evaluate", str(out), "--split", "valid"]) == 0
    (tmp_path / "events.parquet").unlink()  # loading for serving reads the run directory alone
    from ranker.generative.run import load_run

    cfg, model = load_run(out)
    assert cfg.name == "own" and not model.training


@pytest.mark.parametrize(
    ("data", "match"),
    [
        ({"dataset": "rk-ml100k", "path": "x.csv"}, r"data: give exactly one of `dataset`.*both"),
        ({"max_events": 8}, r"data: give exactly one of `dataset`.*neither"),
        ({"dataset": "rk-ml100k", "static_features": ["user_id", "shoe_size"]}, r"static_features\.1: 'shoe_size'"),
        ({"dataset": "rk-ml100k", "tasks": [{"name": "x"}]}, r"tasks: only with `path`"),
        ({"path": "x.csv", "user_column": "u", "item_column": "i"}, r"time_column, action_column, tasks, split"),
    ],
)
def test_bad_declarations_name_the_key(tmp_path: Path, data: dict[str, object], match: str) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"kind": "generative", "data": data}))
    with pytest.raises(ConfigError, match=match):
        load_generative_config(path)


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"item_column": "sku"}, r"data\.item_column: column 'sku' is not in .*events\.parquet"),
        ({"tasks": [{"name": "buy"}]}, r"data\.tasks\.0\.column: column 'buy' is not in"),
        ({"static_features": ["age"]}, r"data\.static_features\.0: column 'age' is not in"),
        ({"path": "nowhere.parquet"}, r"data\.path: .*nowhere\.parquet: file not found"),
        ({"user_table": {"path": "users.csv"}}, r"data\.user_table\.path: .*users\.csv: file not found"),
        (
            {"user_table": {"path": "events.parquet", "user_column": "uid"}},
            r"data\.user_table\.user_column: column 'uid' is not in .*events\.parquet",
        ),
    ],
)
def test_bad_columns_fail_before_training(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], change: dict[str, object], match: str
) -> None:
    _events(tmp_path / "events.parquet")
    assert main(["train", str(_config(tmp_path, **change)), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert __import__("re").search(match, err), err
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_static_columns_must_be_constant_per_user(tmp_path: Path) -> None:
    _events(tmp_path / "events.parquet")
    cfg = load_generative_config(_config(tmp_path, static_features=["event"]))
    with pytest.raises(DataError, match=r"'event' .* not constant per user"):
        load_event_file(cfg.data, base_dir=tmp_path)


def _negatives_file(tmp_path: Path, rows: list[dict[str, object]]) -> None:
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "shown.parquet")


def test_negatives_file_fills_the_named_events(tmp_path: Path) -> None:
    _events(tmp_path / "events.parquet")
    table = pq.read_table(tmp_path / "events.parquet").to_pylist()
    u00 = [r for r in table if r["user"] == "u00"]  # already in time order (sorted times)
    cfg = _config(tmp_path, negatives={"per_event": 1}, negatives_file={"path": "shown.parquet", "per_event": 2})
    other = ["sku-900", *sorted({r["item"] for r in table} - {u00[3]["item"]})]  # sku-900: only ever shown
    _negatives_file(
        tmp_path,
        [
            {"user": "u00", "item": other[0], "position": 3},
            {"user": "u00", "item": other[1], "position": 3},
            {"user": "u01", "item": other[2], "position": 0},
        ],
    )
    log = load_event_file(load_generative_config(cfg).data, base_dir=tmp_path)
    assert log.vocab is not None and log.candidates.shape == (300, 4)  # own + 1 sampled + 2 listed
    items = log.vocab["items"].to_pylist()
    u0 = log.vocab["users"].to_pylist().index("u00") + 1
    ev = np.flatnonzero(log.user == u0)[3]  # the user's fourth event in time order
    assert items[log.item[ev] - 1] == u00[3]["item"]
    assert [items[i - 1] for i in log.candidates[ev, 2:]] == other[:2]  # in file order, after the sampled
    assert "sku-900" in items and log.num_items == len(items) == 26  # an item of its own
    listed = log.candidates[:, 2:] > 0
    assert listed.sum() == 3  # nothing else listed: the other slots are empty and masked
    assert (log.label_mask[:, 2:, 0] == listed).all() and (log.labels[:, 2:] == 0).all()
    assert (log.label_mask[:, 1, 0] == 1).all() and log.train_target is None

    only = _config(tmp_path, negatives_file={"path": "shown.parquet", "per_event": 2, "only_listed": True})
    log = load_event_file(load_generative_config(only).data, base_dir=tmp_path)
    assert log.train_target is not None and log.train_target.sum() == 2
    from ranker.generative.batches import user_windows

    train = user_windows(log, 0, 16)
    targets = {int(e) for w in train for e in w.rows[:, 0]}
    assert targets == set(np.flatnonzero(log.train_target).tolist())  # only the listed events train
    assert sum(len(w.rows) for w in user_windows(log, 1, 16)) == 20 * 3  # valid: every event, every slot


@pytest.mark.parametrize(
    ("rows", "match"),
    [
        ([("u00", "OTHER", 30)], r"row 1: user 'u00' has no event at position 30"),
        ([("u99", "OTHER", 0)], r"row 1: user 'u99' is not a user of the event file"),
        ([("u00", "OTHER", -1)], r"row 1: user 'u00' has no event at position -1"),
        ([("u00", "OWN", 0)], r"row 1: the negative is the event's own item"),
        ([("u00", "OTHER", 1), ("u00", "OTHER", 1)], r"row 2: more than data\.negatives_file\.per_event = 1"),
    ],
)
def test_bad_negatives_file_rows_are_named(tmp_path: Path, rows: list[tuple[str, str, int]], match: str) -> None:
    _events(tmp_path / "events.parquet")
    u00 = [r["item"] for r in pq.read_table(tmp_path / "events.parquet").to_pylist() if r["user"] == "u00"]
    other = sorted(set(u00) - set(u00[:2]))[0]  # not the item of u00's first two events
    named = {"OWN": u00[0], "OTHER": other}
    _negatives_file(tmp_path, [{"user": u, "item": named[i], "position": p} for u, i, p in rows])
    cfg = _config(tmp_path, negatives_file={"path": "shown.parquet", "per_event": 1})
    with pytest.raises(DataError, match=match):
        load_event_file(load_generative_config(cfg).data, base_dir=tmp_path)


def test_negatives_file_column_is_named(tmp_path: Path) -> None:
    _events(tmp_path / "events.parquet")
    _negatives_file(tmp_path, [{"user": "u00", "item": "sku-001", "pos": 0}])
    cfg = _config(tmp_path, negatives_file={"path": "shown.parquet", "per_event": 1})
    with pytest.raises(ConfigError, match=r"data\.negatives_file\.position_column: column 'position' is not in"):
        load_event_file(load_generative_config(cfg).data, base_dir=tmp_path)
    with pytest.raises(ConfigError, match=r"negatives_file: only with `path`"):
        path = tmp_path / "c.yaml"
        path.write_text(
            yaml.safe_dump(
                {
                    "kind": "generative",
                    "data": {"dataset": "rk-ml100k", "negatives_file": {"path": "x", "per_event": 1}},
                }
            )
        )
        load_generative_config(path)
