"""A run end to end with a regression task, an ESMM chain, MMoE heads and a serving score."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ranker.config import load_config
from ranker.errors import ConfigError
from ranker.ranking.run import evaluate_run, resolve_data, train_run


def _write(path: Path, n: int = 1500) -> None:
    rng = np.random.default_rng(0)
    user, item, x = rng.integers(0, 40, n), rng.integers(0, 30, n), rng.normal(size=n)
    watch = (rng.random(n) < 1 / (1 + np.exp(-(np.where(item % 3 == 0, 1.5, -1.0) + x)))).astype(np.int64)
    like = watch * (rng.random(n) < 1 / (1 + np.exp(-2 * x))).astype(np.int64)
    minutes = 3.0 * x + item % 5 + rng.normal(size=n)
    pq.write_table(
        pa.table({"user": user, "item": item, "x": x, "watch": watch, "like": like, "minutes": minutes}), path
    )


def _cfg(path: Path, **serving: object):
    return load_config(
        base={
            "data": {
                "path": str(path),
                "split": {"kind": "random"},
                "group_column": "user",
                "item_column": "item",
                "features": [
                    {"kind": "categorical", "name": "user"},
                    {"kind": "categorical", "name": "item"},
                    {"kind": "numerical", "name": "x"},
                ],
                "tasks": [
                    {"name": "watch"},
                    {"name": "like", "mask_column": "watch", "conditional_on": "watch"},
                    {"name": "minutes", "kind": "regression", "loss": "huber", "weight": 0.1},
                ],
            },
            "model": {
                "encoders": {"categorical": {"dim": 4}},
                "backbone": {"hidden": []},
                "heads": {"kind": "mmoe", "num_experts": 2, "expert": [8]},
            },
            "train": {"epochs": 2, "batch_size": 128, "lr": 0.01, "progress": False},
            "serving": serving or {"weights": {"watch": 1.0, "like": 2.0}},
        }
    )


def test_multitask_run_reports_per_task_metrics_gates_and_serving_score(tmp_path: Path) -> None:
    _write(tmp_path / "d.parquet")
    metrics = train_run(_cfg(tmp_path / "d.parquet"), tmp_path / "run")
    test = metrics["test"]
    assert set(test["minutes"]) == {"rmse", "mae", "rows", "mean"} and test["minutes"]["rmse"] < 4.0
    assert test["watch"]["auc"] > 0.6 and "gauc" in test["like"]
    assert test["like"]["rows"] < test["watch"]["rows"]  # like is scored on watched rows only
    assert set(metrics["gates"]) == {"mmoe/watch", "mmoe/like", "mmoe/minutes"}
    assert set(metrics["serving"]["test"]) == {"watch", "like"}  # binary tasks only
    base = metrics["baseline"]
    assert set(base["test"]) == {"watch", "like", "minutes"} and set(base["test"]["minutes"]) == {"rmse", "mae", "mean"}
    _, tables = resolve_data(_cfg(tmp_path / "d.parquet").data)  # the constant predictor: the train mean
    mean = float(np.mean(tables["train"].column("minutes").to_numpy()))
    y = tables["test"].column("minutes").to_numpy()
    assert base["test"]["minutes"]["mean"] == pytest.approx(mean, rel=1e-6)
    assert base["test"]["minutes"]["rmse"] == pytest.approx(float(np.sqrt(np.mean((y - mean) ** 2))), rel=1e-5)
    assert base["test"]["minutes"]["mae"] == pytest.approx(float(np.mean(np.abs(y - mean))), rel=1e-5)
    with np.load(tmp_path / "run" / "calibration_test.npz") as npz:
        assert "minutes__labels" not in npz.files and "like__probs" in npz.files
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert "rmse" in log[-1]["valid"]["minutes"] and "gates" in log[-1]
    page = (tmp_path / "run" / "report.html").read_text()
    assert "Experts and gates" in page and "Serving score" in page
    again = evaluate_run(tmp_path / "run")["metrics"]
    assert again["minutes"]["rmse"] == pytest.approx(test["minutes"]["rmse"], rel=1e-6)


def test_serving_weights_naming_no_task_fail_before_training(tmp_path: Path) -> None:
    _write(tmp_path / "d.parquet", n=300)
    with pytest.raises(ConfigError, match=r"serving.weights: \['likes'\]"):
        train_run(_cfg(tmp_path / "d.parquet", weights={"likes": 1.0}), tmp_path / "run")
    assert not (tmp_path / "run" / "log.jsonl").exists()


def test_a_chained_task_without_mask_column_warns(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _write(tmp_path / "d.parquet")
    cfg = _cfg(tmp_path / "d.parquet")
    tasks = [cfg.data.tasks[0], cfg.data.tasks[1].model_copy(update={"mask_column": None})]
    cfg = cfg.model_copy(
        update={
            "data": cfg.data.model_copy(update={"tasks": tasks}),
            "train": cfg.train.model_copy(update={"epochs": 1, "max_steps_per_epoch": 2}),
        }
    )
    train_run(cfg, tmp_path / "run")
    assert "warning: task 'like' is chained to 'watch' but has no mask_column" in capsys.readouterr().err


def test_a_numerical_feature_with_no_finite_value_is_refused(tmp_path: Path) -> None:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from ranker.errors import DataError

    _write(tmp_path / "d.parquet")
    table = pq.read_table(tmp_path / "d.parquet")
    table = table.set_column(table.column_names.index("x"), "x", pa.array(np.full(table.num_rows, np.nan)))
    pq.write_table(table, tmp_path / "d.parquet")
    with pytest.raises(DataError, match=r"column 'x' \(feature 'x'\) has no finite value"):
        train_run(_cfg(tmp_path / "d.parquet"), tmp_path / "run")
