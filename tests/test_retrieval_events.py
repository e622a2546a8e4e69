"""Retrieval on own event files (`data.path`): the same ordering and views as the built-in
recipes, time splits, raw ids in and out of `ranker retrieve`, and declarations that fail early."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from ranker.cli import main
from ranker.config import load_retrieval_config
from ranker.config.retrieval import RetrievalData
from ranker.data.recipes import get_recipe, prepare
from ranker.data.recipes.movielens_io import read_ml100k_ratings
from ranker.data.sources import locate
from ranker.errors import ConfigError
from ranker.retrieval.data import from_file, from_recipe
from ranker.retrieval.protocol import LeaveOneOut, Sequences, event_sequences, leave_one_out_views, time_split_views

MODEL = {"kind": "hstu", "dim": 8, "num_layers": 1, "linear_dim": 4, "attention_dim": 4}
TRAIN = {"epochs": 2, "batch_size": 16, "progress": False}


def _same_views(a: LeaveOneOut, b: LeaveOneOut) -> None:
    for name in ("train", "valid_input", "test_input"):
        x, y = getattr(a, name), getattr(b, name)
        assert np.array_equal(x.items, y.items) and np.array_equal(x.offsets, y.offsets), name
        assert (x.times is None) == (y.times is None)
        if x.times is not None:
            assert np.array_equal(x.times, y.times), name
    for name in ("valid_target", "test_target", "valid_target_time", "test_target_time"):
        assert np.array_equal(getattr(a, name), getattr(b, name)), name
    assert (a.num_items, a.max_len) == (b.num_items, b.max_len)


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cache")


def test_r_ml100k_views_are_unchanged_and_equal_to_the_event_file_path(
    cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RANKER_CACHE_DIR", str(cache))
    recipe = get_recipe("r-ml100k")
    table = prepare(recipe).table("sequences")
    before = leave_one_out_views(
        Sequences.from_lists(table.column("items"), table.column("times")), 1682, 200, table.column("user").to_numpy()
    )  # the lists, cut as written
    built_in = from_recipe("r-ml100k").views()
    _same_views(before, built_in)
    assert np.array_equal(built_in.users, before.users)

    # u.data as a declared event file (file order, ties on the second included) → same views
    ratings = read_ml100k_ratings(locate(next(s for s in recipe.sources if s.name == "u.data")))
    events = tmp_path / "ml100k.parquet"
    pq.write_table(pa.table({"u": ratings["user"], "i": ratings["item"], "t": ratings["timestamp"]}), events)
    own = from_file(RetrievalData(path=str(events), user_column="u", item_column="i", time_column="t"))
    assert own.items.to_pylist() == list(range(1, 1683))  # raw ids 1..1682: the same indices
    _same_views(before, own.views())


def _events_csv(path: Path, users: int = 12, per_user: int = 25, seed: int = 0) -> Path:
    """A few hundred events with string ids (`u07`, `sku-0042`), times with ties, an action."""
    rng = np.random.default_rng(seed)
    rows = ["user,item,ts,action"]
    for u in range(users):
        times = np.sort(rng.integers(1_000_000, 1_000_000 + 5_000, per_user))
        for t in times:
            action = "click" if rng.random() < 0.8 else "skip"
            rows.append(f"u{u:02d},sku-{int(rng.integers(0, 40)):04d},{t},{action}")
    path.write_text("\n".join(rows) + "\n")
    return path


def test_file_ids_are_raw_and_exact(tmp_path: Path) -> None:
    csv = tmp_path / "e.csv"
    csv.write_text("user,item\n007,12345678901234567891\n007,2\n007,12345678901234567891\n7,2\n7,3\n7,2\n")
    ev = from_file(RetrievalData(path=str(csv), user_column="user", item_column="item"))
    assert ev.users.to_pylist() == ["007", "7"]  # text: 007 and 7 are two users
    assert ev.items.to_pylist() == ["12345678901234567891", "2", "3"]  # never through a float
    data = ev.views()
    assert data.test_target.tolist() == [1, 2] and data.valid_target.tolist() == [2, 3]


def test_action_filter_and_k_core(tmp_path: Path) -> None:
    csv = _events_csv(tmp_path / "e.csv")
    base = dict(path=str(csv), user_column="user", item_column="item", time_column="ts")
    everything = from_file(RetrievalData(**base))
    clicks = from_file(RetrievalData(**base, action_column="action", keep_actions=["click"]))
    assert len(clicks.sequences.items) < len(everything.sequences.items)
    core = from_file(RetrievalData(**base, min_item_events=8, min_user_events=5))
    counts = np.bincount(core.sequences.items)[1:]
    assert counts.min() >= 8 and core.sequences.lengths().min() >= 5


def test_time_split_targets_are_first_events_after_the_cuts() -> None:
    # user 0: t 1 2 | 5 6 | 9 ; user 1: t 5 | 9 (no earlier event before valid) ; user 2: 1 2 3
    user = np.array([0, 0, 0, 0, 0, 1, 1, 2, 2, 2])
    item = np.array([1, 2, 3, 4, 5, 6, 7, 8, 9, 10])
    time = np.array([1, 2, 5, 6, 9, 5, 9, 1, 2, 3])
    seqs, order = event_sequences(user, item, time, 3)
    period = np.where(time >= 8, 2, np.where(time >= 4, 1, 0))[order]
    data = time_split_views(seqs, period, 10, 5)
    assert data.train.items.tolist() == [1, 2, 8, 9, 10]
    assert data.valid_target.tolist() == [3] and data.valid_input.items.tolist() == [1, 2]
    assert data.test_target.tolist() == [5, 7]
    assert data.test_input.items.tolist() == [1, 2, 3, 4, 6]
    assert data.test_input.offsets.tolist() == [0, 4, 5]
    assert data.test_target_time.tolist() == [9, 9]
    assert isinstance(data.train, Sequences)


def test_train_and_retrieve_with_raw_ids_on_an_event_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _events_csv(tmp_path / "events.csv")
    cfg = {
        "kind": "retrieval",
        "name": "own",
        "data": {
            "path": "events.csv",
            "user_column": "user",
            "item_column": "item",
            "time_column": "ts",
            "max_len": 10,
            "split": {"kind": "time", "fractions": [0.7, 0.15, 0.15]},
        },
        "model": MODEL,
        "loss": {"kind": "full_softmax"},
        "train": TRAIN,
    }
    (tmp_path / "own.yaml").write_text(yaml.safe_dump(cfg))
    out = tmp_path / "run"
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["train", str(tmp_path / "own.yaml"), "--out", str(out)]) == 0
    for name in ("items.parquet", "histories.parquet", "data.json", "metrics.json"):
        assert (out / name).is_file(), name
    catalogue = set(pq.read_table(out / "items.parquet").column("item").to_pylist())
    assert json.loads((out / "data.json").read_text())["num_items"] == len(catalogue)

    assert main(["evaluate", str(out)]) == 0
    assert json.loads(capsys.readouterr().out)["metrics"] == pytest.approx(
        json.loads((out / "metrics.json").read_text())["test"]
    )
    (tmp_path / "events.csv").unlink()  # serving reads the run directory only
    capsys.readouterr()
    assert main(["retrieve", str(out), "--history", "sku-0001,sku-0002", "--k", "5"]) == 0
    shown = [x.split()[2] for x in capsys.readouterr().out.splitlines() if "score" in x]
    assert len(shown) == 5 and set(shown) <= catalogue and not {"sku-0001", "sku-0002"} & set(shown)
    assert main(["retrieve", str(out), "--user", "u03", "--k", "3"]) == 0
    assert "user u03" in capsys.readouterr().out
    assert main(["retrieve", str(out), "--history", "sku-0001,nope"]) == 2
    assert "unknown item id(s) nope" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("data", "match"),
    [
        ({"dataset": "r-ml100k", "path": "x.csv"}, r"data: give exactly one of `dataset`.*both"),
        ({"max_len": 10}, r"data: give exactly one of `dataset`.*neither"),
        ({"path": "x.csv", "user_column": "u"}, r"item_column"),
        ({"dataset": "r-ml100k", "user_column": "u"}, r"user_column: only with `path`"),
        ({"dataset": "r-ml100k", "format": "csv"}, r"format: only with `path`"),
        (
            {
                "path": "x.csv",
                "user_column": "u",
                "item_column": "i",
                "split": {"kind": "time", "fractions": [0.8, 0.1, 0.1]},
            },
            r"time split needs time_column",
        ),
        ({"path": "x.csv", "user_column": "u", "item_column": "i", "min_action": 4}, r"needs action_column"),
    ],
)
def test_bad_declarations_name_the_key(tmp_path: Path, data: dict[str, object], match: str) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"kind": "retrieval", "data": data}))
    with pytest.raises(ConfigError, match=match):
        load_retrieval_config(path)


def test_missing_column_or_file_fails_before_training(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _events_csv(tmp_path / "events.csv")
    cfg = {
        "kind": "retrieval",
        "data": {"path": "events.csv", "user_column": "user", "item_column": "sku", "time_column": "ts"},
        "model": MODEL,
        "train": TRAIN,
    }
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["train", str(tmp_path / "c.yaml"), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "data.item_column: column 'sku' is not in" in err and "events.csv" in err
    assert not (tmp_path / "run" / "checkpoints").exists()
    cfg["data"]["path"] = "nowhere.csv"  # type: ignore[index]
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["train", str(tmp_path / "c.yaml"), "--out", str(tmp_path / "run")]) == 2
    assert "data.path:" in capsys.readouterr().err


def test_float_ids_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "e.parquet"
    pq.write_table(pa.table({"u": [1.0, 1.0, 1.0], "i": [1, 2, 3]}), path)
    with pytest.raises(ConfigError, match=r"data\.user_column: ids must be integers or strings"):
        from_file(RetrievalData(path=str(path), user_column="u", item_column="i"))
