"""Bad input stops with one message naming the file / column / key and what was expected;
odd-but-valid input (unseen categories, NaN and inf) trains end to end without a crash."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
import yaml

from ranker.cli import main
from ranker.config import load_config
from ranker.data.sources import SourceFile, locate
from ranker.errors import ConfigError, DataError
from ranker.ranking.run import encode, prepare_run_data, train_run

N = 60


def table(n: int = N, seed: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed)
    return pa.table(
        {
            "user": rng.integers(0, 8, n),
            "item": [f"i{k}" for k in rng.integers(0, 12, n)],
            "price": rng.exponential(20.0, n),
            "click": rng.integers(0, 2, n),
            "ts": np.arange(n),
        }
    )


CONFIG: dict[str, Any] = {
    "name": "bad-input",
    "data": {
        "path": "rows.csv",
        "features": [
            {"kind": "categorical", "name": "user"},
            {"kind": "categorical", "name": "item"},
            {"kind": "numerical", "name": "price", "transform": "log1p"},
        ],
        "tasks": [{"name": "click"}],
        "split": {"kind": "time", "column": "ts"},
        "group_column": "user",
        "item_column": "item",
    },
    "model": {
        "encoders": {"categorical": {"dim": 4}},
        "history": {"kind": "none"},
        "backbone": {"hidden": [8], "dropout": 0.0},
    },
    "train": {"epochs": 2, "batch_size": 16, "eval_batch_size": 64, "progress": False, "device": "cpu", "patience": 5},
}


def config(**data: Any) -> dict[str, Any]:
    raw = copy.deepcopy(CONFIG)
    raw["data"].update(data)
    return raw


def write_csv(t: pa.Table, path: Path) -> Path:
    pacsv.write_csv(t, path)
    return path


def prepare_all(raw: dict[str, Any], base_dir: Path) -> None:
    """What `ranker train` does before the model exists: read, split, fit, encode all splits."""
    prep = prepare_run_data(load_config(base=raw), base_dir)
    for split in ("train", "valid", "test"):
        encode(prep, split)


def data_error(raw: dict[str, Any], base_dir: Path) -> str:
    with pytest.raises(DataError) as info:
        prepare_all(raw, base_dir)
    msg = str(info.value)
    assert "\n" not in msg  # one message, one line
    return msg


# ---------------------------------------------------------------------- data errors


def test_missing_feature_column_lists_present_ones(tmp_path: Path) -> None:
    write_csv(table().drop_columns(["price"]), tmp_path / "rows.csv")
    msg = data_error(config(), tmp_path)
    assert "rows.csv" in msg
    assert "'price' (feature 'price')" in msg
    assert "columns present: ['click', 'item', 'ts', 'user']" in msg


def test_missing_column_in_valid_file_names_that_file(tmp_path: Path) -> None:
    write_csv(table(), tmp_path / "train.csv")
    write_csv(table(10, 1).drop_columns(["item"]), tmp_path / "valid.csv")
    write_csv(table(10, 2), tmp_path / "test.csv")
    raw = config(path=None, split={"kind": "files", "train": "train.csv", "valid": "valid.csv", "test": "test.csv"})
    msg = data_error(raw, tmp_path)
    assert msg.startswith(f"{tmp_path / 'valid.csv'}:") and "'item' (feature 'item')" in msg


def test_missing_label_column(tmp_path: Path) -> None:
    write_csv(table().rename_columns(["user", "item", "price", "clicked", "ts"]), tmp_path / "rows.csv")
    msg = data_error(config(), tmp_path)
    assert "'click' (task 'click')" in msg and "'clicked'" in msg


def test_label_not_binary_names_column_and_value(tmp_path: Path) -> None:
    t = table()
    labels = t.column("click").to_numpy().copy()
    labels[7] = 2
    write_csv(t.set_column(3, "click", pa.array(labels)), tmp_path / "rows.csv")
    msg = data_error(config(), tmp_path)
    assert msg.startswith(f"{tmp_path / 'rows.csv'}: ")  # checked as read: named by its line in the file
    assert "label column 'click' (task 'click') must be 0/1" in msg
    assert "line 9 holds 2 (1 such row)" in msg  # row 7 (0-based) under the header line


def test_label_as_text(tmp_path: Path) -> None:
    t = table()
    words = ["yes" if v else "no" for v in t.column("click").to_pylist()]
    write_csv(t.set_column(3, "click", pa.array(words)), tmp_path / "rows.csv")
    msg = data_error(config(), tmp_path)
    assert "label column 'click' (task 'click') must hold numbers" in msg
    assert f"line 2 holds {words[0]!r} ({N} such rows)" in msg


def test_nan_label(tmp_path: Path) -> None:
    t = table()
    labels = t.column("click").to_numpy().astype(float)
    labels[[3, 9]] = np.nan
    write_csv(t.set_column(3, "click", pa.array(labels)), tmp_path / "rows.csv")
    msg = data_error(config(), tmp_path)
    assert "label column 'click'" in msg and "is missing (empty or NaN) on 2 rows" in msg
    assert "(first: line 5)" in msg


def test_empty_split(tmp_path: Path) -> None:
    write_csv(table(), tmp_path / "rows.csv")
    msg = data_error(config(split={"kind": "random", "fractions": [0.9, 0.1, 0.0]}), tmp_path)
    assert msg == f"{tmp_path / 'rows.csv'} (test split): the test split is empty"


def test_history_column_of_wrong_type(tmp_path: Path) -> None:
    t = table().append_column("past", pa.array(["i1 i2", "i3"] * (N // 2)))
    write_csv(t, tmp_path / "rows.csv")
    raw = config()
    raw["data"]["features"].append({"kind": "history", "name": "hist", "item_column": "past", "item_feature": "item"})
    msg = data_error(raw, tmp_path)
    assert "rows.csv (train split)" in msg
    assert "'past'" in msg and "must be a list column" in msg and "string" in msg


def test_history_as_parquet_list_column_works(tmp_path: Path) -> None:
    t = table().append_column("past", pa.array([["i1", "i2"], []] * (N // 2)))
    pq.write_table(t, tmp_path / "rows.parquet")
    raw = config(path="rows.parquet")
    raw["data"]["features"].append({"kind": "history", "name": "hist", "item_column": "past", "item_feature": "item"})
    prep = prepare_run_data(load_config(base=raw), tmp_path)
    items = encode(prep, "valid").tensors["hist/hist/items"]
    i2 = int(prep.pre.vocabs["item"].lookup(pa.array(["i2"]))[0])
    assert i2 >= 3
    assert items.shape == (6, 50) and items[:, -1].tolist() == [i2, 0] * 3


def test_numerical_column_holding_text(tmp_path: Path) -> None:
    t = table()
    prices = [str(round(v, 2)) for v in t.column("price").to_pylist()]
    prices[4] = "expensive"
    write_csv(t.set_column(2, "price", pa.array(prices)), tmp_path / "rows.csv")
    msg = data_error(config(), tmp_path)
    assert msg.startswith(f"{tmp_path / 'rows.csv'}: ")
    assert "numerical column 'price' (feature 'price') must hold numbers; line 6 holds 'expensive'" in msg


def test_categorical_column_of_unsupported_type(tmp_path: Path) -> None:
    t = table().set_column(1, "item", pa.array([[1, 2]] * N))
    pq.write_table(t, tmp_path / "rows.parquet")
    msg = data_error(config(path="rows.parquet"), tmp_path)
    assert msg.startswith(f"{tmp_path / 'rows.parquet'} (train split): column 'item' (feature 'item')")
    assert "expected categorical values (strings or integers), got list" in msg


def test_missing_data_file(tmp_path: Path) -> None:
    msg = data_error(config(path="absent.csv"), tmp_path)
    assert msg == f"{tmp_path / 'absent.csv'}: data file not found"


def test_prepared_dataset_folder_lacking_a_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data_dir, cache = tmp_path / "data", tmp_path / "cache"
    (data_dir / "ml-100k").mkdir(parents=True)
    (data_dir / "ml-100k" / "u.item").write_text("other file\n")
    monkeypatch.setenv("RANKER_DATA_DIR", str(data_dir))
    monkeypatch.setenv("RANKER_CACHE_DIR", str(cache))
    src = SourceFile(folder="ml-100k", name="u.data", sha256="0" * 64, url="")
    with pytest.raises(DataError) as info:
        locate(src)
    msg = str(info.value)
    assert "\n" not in msg
    assert msg.startswith("ml-100k/u.data: not found under")
    assert str(data_dir) in msg and str(cache / "raw") in msg
    assert "RANKER_DATA_DIR" in msg and "no public download" in msg
    assert not cache.exists() or not any(cache.rglob("u.data"))  # nothing was fetched


def test_checksum_mismatch_names_file_and_digests(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "ds").mkdir()
    (tmp_path / "ds" / "f.txt").write_text("hello\n")
    monkeypatch.setenv("RANKER_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("RANKER_CACHE_DIR", str(tmp_path / "cache"))
    with pytest.raises(DataError) as info:
        locate(SourceFile(folder="ds", name="f.txt", sha256="ab" * 32, url=""))
    msg = str(info.value)
    assert str(tmp_path / "ds" / "f.txt") in msg and "ab" * 32 in msg and "sha256:" in msg


# ---------------------------------------------------------------------- config errors


def test_unknown_feature_kind_is_a_config_error() -> None:
    raw = config()
    raw["data"]["features"][2] = {"kind": "numeric", "name": "price"}
    with pytest.raises(ConfigError) as info:
        load_config(base=raw)
    lines = str(info.value).splitlines()
    assert len(lines) == 2  # header + one problem
    assert lines[1].strip().startswith("data.features.2: unknown kind 'numeric'")
    assert "'numerical'" in lines[1] and "'categorical'" in lines[1]


# ---------------------------------------------------------------------- CLI


def write_config(raw: dict[str, Any], path: Path) -> Path:
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def test_cli_config_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    write_csv(table(), tmp_path / "rows.csv")
    cfg = write_config(config(), tmp_path / "run.yaml")
    assert main(["train", str(cfg), "--set", "model.backbone.hiden=[4]"]) == 2
    out = capsys.readouterr()
    assert out.out == ""
    assert out.err.startswith(f"error: {cfg}: invalid configuration")
    assert "model.backbone.hiden: unknown key" in out.err and "hidden" in out.err
    assert "Traceback" not in out.err
    assert not (tmp_path / "runs").exists()


def test_cli_data_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    write_csv(table().drop_columns(["user"]), tmp_path / "rows.csv")
    cfg = write_config(config(), tmp_path / "run.yaml")
    assert main(["train", str(cfg), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("error:") == 1 and err.startswith(f"error: {tmp_path / 'rows.csv'}: ")
    assert "'user' (feature 'user')" in err and "columns present" in err
    assert "Traceback" not in err


def test_cli_missing_config_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", str(tmp_path / "nope.yaml")]) == 2
    assert "nope.yaml: config file not found" in capsys.readouterr().err


# ---------------------------------------------------------------------- end to end


def test_unseen_categories_and_nan_inf_train_end_to_end(tmp_path: Path) -> None:
    n = 120
    rng = np.random.default_rng(5)
    users = rng.integers(0, 10, n)
    items = [f"i{k}" for k in rng.integers(0, 15, n)]
    price = rng.exponential(10.0, n)
    clicks = (rng.random(n) < 0.4).astype(np.int64)
    # valid/test (the last 20% by time) hold unseen users/items and NaN / ±inf prices
    users[96:] += 1000
    for i in range(96, n, 3):
        items[i] = f"new{i}"
    price[[97, 101, 110]] = np.nan
    price[[99, 112]] = np.inf
    price[[100, 115]] = -np.inf
    price[[20, 30]] = np.nan  # also missing in train
    clicks[96:98] = [0, 1]  # both classes in valid
    clicks[108:110] = [0, 1]  # and in test
    t = pa.table({"user": users, "item": items, "price": price, "click": clicks, "ts": np.arange(n)})
    write_csv(t, tmp_path / "rows.csv")
    assert "inf" in (tmp_path / "rows.csv").read_text()  # the values really reach the file

    cfg = load_config(base=config())
    run = tmp_path / "run"
    metrics = train_run(cfg, run, base_dir=tmp_path)

    saved = json.loads((run / "metrics.json").read_text())
    assert saved["rows"] == {"train": 96, "valid": 12, "test": 12}
    assert saved["stopped_epoch"] == 2
    for split in ("valid", "test"):
        m = saved[split]["click"]
        assert np.isfinite(m["logloss"]) and 0.0 <= m["auc"] <= 1.0
    assert metrics["rows"] == saved["rows"]
    assert (run / "preprocessor.json").is_file() and (run / "config.yaml").is_file()


def test_transact_heads_that_do_not_divide_the_width_fail_before_training(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    t = table().append_column("past", pa.array([["i1", "i2"], []] * (N // 2)))
    pq.write_table(t, tmp_path / "rows.parquet")
    raw = config(path="rows.parquet")
    raw["data"]["features"].append({"kind": "history", "name": "hist", "item_column": "past", "item_feature": "item"})
    raw["model"]["history"] = {"kind": "transact", "num_heads": 3}  # d_model = 4 (item) + 4 (candidate) = 8
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(raw))
    assert main(["train", str(tmp_path / "c.yaml"), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "model.history (transact, history 'hist')" in err and "d_model=8" in err and "num_heads=3" in err
    assert not (tmp_path / "run" / "log.jsonl").exists()  # no epoch ran


def test_cuda_without_a_gpu_fails_before_any_data_is_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for raw in (
        config(path="absent.csv"),
        {"kind": "retrieval", "data": {"path": "absent.csv", "user_column": "u", "item_column": "i"}},
    ):
        raw["train"] = {**raw.get("train", {}), "device": "cuda"}
        (tmp_path / "c.yaml").write_text(yaml.safe_dump(raw))
        assert main(["train", str(tmp_path / "c.yaml"), "--out", str(tmp_path / "run")]) == 2
        assert "train.device: 'cuda' but no CUDA device is available" in capsys.readouterr().err  # not the file
        assert not (tmp_path / "run").exists()
