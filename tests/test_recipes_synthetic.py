"""The synthetic recipe: deterministic, consistent labels, leakage-free histories, a time split,
structure a model can learn (the truth beats popularity), and preparation into the cache."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from ranker.config.schema import DataConfig
from ranker.data.recipes import get_recipe, prepare
from ranker.data.recipes.synthetic import (
    HISTORY_LEN,
    SYNTHETIC,
    SyntheticConfig,
    _auc,
    build_tables,
    generate_log,
    split_bounds,
)

SMALL = {"n_users": 300, "n_items": 200}
FILES = {"kind": "files", "train": "a", "valid": "b", "test": "c"}


@pytest.fixture(scope="module")
def log() -> dict[str, np.ndarray]:
    return generate_log()


@pytest.fixture(scope="module")
def tables(log: dict[str, np.ndarray]) -> dict[str, pa.Table]:
    return build_tables(log)


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    if a.dtype.kind == "f":
        return bool(np.array_equal(a, b, equal_nan=True))
    return bool(np.array_equal(a, b))


def test_deterministic_from_seed() -> None:
    a, b = generate_log(seed=5, **SMALL), generate_log(SyntheticConfig(seed=5, **SMALL))
    assert a.keys() == b.keys()
    assert all(_same(a[k], b[k]) for k in a)
    c = generate_log(seed=6, **SMALL)
    assert not _same(a["item_id"], c["item_id"]) or not _same(a["view"], c["view"])
    assert a["user_id"].max() <= 300 and a["item_id"].max() <= 200


@pytest.mark.parametrize("seed", [2021, 7])
def test_labels_and_positive_rates(seed: int, log: dict[str, np.ndarray]) -> None:
    data = log if seed == 2021 else generate_log(seed=seed)
    view, like = data["view"], data["like"]
    assert set(np.unique(view)) == {0, 1} and set(np.unique(like)) == {0, 1}
    assert (like <= view).all()
    assert 0.25 <= view.mean() <= 0.45
    assert 0.30 <= like[view == 1].mean() <= 0.50
    assert ((data["p_view"] > 0) & (data["p_view"] < 1)).all()


def test_columns_types_and_missing_values(tables: dict[str, pa.Table]) -> None:
    train = tables["train"]
    assert 100_000 <= train.num_rows <= 200_000
    expected = {
        "user_id": pa.int64(),
        "country": pa.string(),
        "device": pa.string(),
        "age": pa.float64(),
        "item_id": pa.int64(),
        "category": pa.string(),
        "tags": pa.list_(pa.string()),
        "price": pa.float64(),
        "hour": pa.string(),
        "weekday": pa.string(),
        "timestamp": pa.int64(),
        "view": pa.int64(),
        "like": pa.int64(),
        "hist_item": pa.list_(pa.int64()),
        "hist_action": pa.list_(pa.int64()),
        "hist_seconds": pa.list_(pa.float32()),
    }
    assert {f.name: f.type for f in train.schema} == expected
    assert 0.005 < train.column("age").null_count / train.num_rows < 0.02
    price = train.column("price").to_numpy()
    assert 0.01 < np.isnan(price).mean() < 0.03 and np.nanmin(price) > 0
    tags = train.column("tags").to_pylist()[:5000]
    assert all(1 <= len(t) <= 3 and len(set(t)) == len(t) for t in tags)
    hours = set(train.column("hour").to_pylist())
    assert hours <= {f"{h:02d}" for h in range(24)} and len(hours) == 24
    ts = train.column("timestamp").to_numpy()
    hour_from_ts = np.char.zfill(((ts // 3600) % 24).astype(str), 2)
    assert (hour_from_ts == train.column("hour").to_numpy(zero_copy_only=False)).all()


def test_histories_hold_only_earlier_viewed_events(log: dict[str, np.ndarray], tables: dict[str, pa.Table]) -> None:
    table = pa.concat_tables([tables[s] for s in ("train", "valid", "test")])
    lengths = pc.list_value_length(table.column("hist_item")).to_numpy()
    assert lengths.max() == HISTORY_LEN and (lengths <= HISTORY_LEN).all()
    seconds = pc.list_flatten(table.column("hist_seconds")).to_numpy()
    assert (seconds > 0).all()
    users, ts, view = log["user_id"], log["timestamp"], log["view"]
    rng = np.random.default_rng(0)
    for i in rng.choice(len(users), 300, replace=False):
        past = np.flatnonzero((users == users[i]) & (ts < ts[i]) & (view == 1))[-HISTORY_LEN:]
        row = table.slice(int(i), 1).to_pylist()[0]
        assert row["hist_item"] == log["item_id"][past].tolist()
        assert row["hist_action"] == (1 + log["like"][past]).tolist()
        assert row["hist_seconds"] == (ts[i] - ts[past]).astype(np.float32).tolist()


def test_time_split(tables: dict[str, pa.Table]) -> None:
    ts = {s: tables[s].column("timestamp").to_numpy() for s in ("train", "valid", "test")}
    assert ts["train"].max() <= ts["valid"].min()
    assert ts["valid"].max() <= ts["test"].min()
    assert all((np.diff(t) >= 0).all() for t in ts.values())
    n = sum(len(t) for t in ts.values())
    assert (len(ts["train"]), len(ts["train"]) + len(ts["valid"])) == split_bounds(n)


def test_auc_helper_matches_pairwise_definition() -> None:
    rng = np.random.default_rng(1)
    y, s, g = rng.integers(0, 2, 60), rng.integers(0, 5, 60).astype(float), rng.integers(0, 4, 60)

    def pairwise(y: np.ndarray, s: np.ndarray) -> float:
        pairs = list(itertools.product(s[y == 1], s[y == 0]))
        return sum((p > q) + 0.5 * (p == q) for p, q in pairs) / len(pairs)

    assert _auc(y, s) == pytest.approx(pairwise(y, s))
    per = [(pairwise(y[g == k], s[g == k]), (g == k).sum()) for k in range(4)]
    assert _auc(y, s, g) == pytest.approx(sum(a * w for a, w in per) / sum(w for _, w in per))
    assert np.isnan(_auc(np.ones(4), np.arange(4.0)))


def test_truth_beats_popularity_on_both_tasks(log: dict[str, np.ndarray]) -> None:
    n = log["view"].size
    a, b = split_bounds(n)
    for task, mask in (("view", np.ones(n, dtype=bool)), ("like", log["view"] == 1)):
        tr, te = np.flatnonzero(mask[:a]), b + np.flatnonzero(mask[b:])
        shown = np.bincount(log["item_id"][tr], minlength=n)
        hits = np.bincount(log["item_id"][tr], weights=log[task][tr], minlength=n)
        rate = np.where(shown > 0, hits / np.maximum(shown, 1), log[task][tr].mean())
        y, groups, truth = log[task][te], log["user_id"][te], log[f"p_{task}"][te]
        popularity = rate[log["item_id"][te]]
        assert _auc(y, truth) >= _auc(y, popularity) + 0.05, task
        assert _auc(y, truth, groups) >= _auc(y, popularity, groups) + 0.05, task
        assert _auc(y, popularity) > 0.55, task  # popularity is a real, incomplete signal


def test_prepare_writes_splits_and_valid_data(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("RANKER_CACHE_DIR", str(tmp_path))
    assert get_recipe("synthetic") is SYNTHETIC
    prepared = prepare(SYNTHETIC)
    assert prepared.directory.parent == tmp_path / "prepared"
    for split in ("train", "valid", "test"):
        path = prepared.directory / f"{split}.parquet"
        assert pq.read_metadata(path).num_rows == prepared.manifest["rows"][split]
    DataConfig.model_validate({**prepared.manifest["data"], "split": FILES})
    DataConfig.model_validate(prepared.data_config())
    meta = prepared.manifest["meta"]
    for task in ("view", "like"):
        assert meta["ceiling_auc"][task] > meta["popularity_auc"][task] + 0.05
        assert 0.5 < meta["ceiling_gauc"][task] < 1
    assert prepare(SYNTHETIC).manifest == prepared.manifest  # cached
