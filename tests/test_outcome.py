"""Honest outputs: every null of metrics.json has a reason, an unusable run exits 3 (and --strict
when the untrained weights win), regression tasks carry the constant predictor's figures."""

from __future__ import annotations

import io
import json
import math
from contextlib import redirect_stderr
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ranker.cli import _status
from ranker.outcome import UNUSABLE_EXIT, summary, undefined_reasons
from ranker.rundir import finish_run
from ranker.train.baselines import mean_predictor_metrics, train_means

NAN = math.nan


def _task(auc: float, rows: float, rate: float, gauc: float = NAN) -> dict[str, float]:
    return {"auc": auc, "gauc": gauc, "logloss": 0.5 if rows else NAN, "rows": rows, "positive_rate": rate}


def test_each_undefined_value_gets_the_reason_of_its_own_task_and_split() -> None:
    metrics: dict[str, Any] = {
        "best_epoch": None,
        "best_valid_score": -math.inf,
        "beats_untrained": None,
        "valid": {"click": _task(NAN, 16.0, 0.0), "buy": _task(NAN, 0.0, NAN)},
        "test": {"click": _task(0.7, 16.0, 0.25)},  # both classes, but no group with both
        "baseline": {"name": "popularity", "valid": {"click": {"auc": NAN}}, "test": {"click": {"gauc": None}}},
        "untrained_valid": {"click": _task(NAN, 16.0, 0.0)},
        "most_popular": {"test": {"HR@10": NAN}},
        "seconds_per_epoch": NAN,
        "fine": 1.0,
    }
    reasons = undefined_reasons(metrics)
    assert reasons["valid/click/auc"] == "one class in the valid split: all 16 rows are 0"
    assert reasons["valid/click/gauc"] == reasons["valid/click/auc"]
    assert reasons["valid/buy/logloss"].startswith("no rows in the valid split: the task's mask_column hides")
    assert reasons["test/click/gauc"] == "no group (group_column) in the test split has both classes"
    assert reasons["baseline/valid/click/auc"] == reasons["valid/click/auc"]  # the model's rows on that split
    assert reasons["baseline/test/click/gauc"] == reasons["test/click/gauc"]
    assert reasons["untrained_valid/click/auc"] == reasons["valid/click/auc"]
    assert reasons["most_popular/test/HR@10"] == "no test queries to rank"
    assert reasons["best_epoch"].startswith("no validation score was a number")
    assert "selection score" in reasons["best_valid_score"] and "not a number" in reasons["beats_untrained"]
    assert reasons["seconds_per_epoch"] == "not a finite number (NaN or infinite)"
    assert "fine" not in reasons and "test/click/auc" not in reasons
    line = summary(reasons)
    assert line.startswith("valid/click/auc (one class") and line.endswith(f"and {len(reasons) - 3} more")


def test_finish_run_writes_strict_json_with_the_reasons_and_warns(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    metrics = {"usable": True, "valid": {"buy": _task(NAN, 4.0, 1.0)}, "warnings": ["no trained epoch beat …"]}
    (tmp_path / "config.yaml").write_text("kind: ranking\n")  # finish_run seals the run over its config
    finish_run(tmp_path, metrics, report=False)

    def no_constants(token: str) -> None:
        raise AssertionError(f"{token} in metrics.json")

    written = json.loads((tmp_path / "metrics.json").read_text(), parse_constant=no_constants)
    assert written["valid"]["buy"]["auc"] is None and written["valid"]["buy"]["logloss"] == 0.5
    assert written["undefined"] == {
        "valid/buy/auc": "one class in the valid split: all 4 rows are 1",
        "valid/buy/gauc": "one class in the valid split: all 4 rows are 1",
    }
    err = capsys.readouterr().err.splitlines()
    assert err[0] == "warning: no trained epoch beat …"
    assert err[1].startswith("warning: 2 value(s) of metrics.json are not numbers") and "valid/buy/auc" in err[1]


@pytest.mark.parametrize(
    ("metrics", "strict", "code", "words"),
    [
        ({"usable": True, "beats_untrained": True}, True, 0, None),
        ({"usable": True, "beats_untrained": False, "warnings": ["no trained epoch beat X"]}, False, 0, None),
        ({"usable": True, "beats_untrained": False, "warnings": ["no trained epoch beat X"]}, True, 3, "beat X"),
        ({"usable": False, "unusable": "no validation score was a number"}, False, 3, "was a number"),
        ({"usable": True, "beats_untrained": None}, True, 0, None),
    ],
)
def test_the_exit_status_of_a_finished_run(metrics: dict[str, Any], strict: bool, code: int, words: str | None) -> None:
    err = io.StringIO()
    with redirect_stderr(err):
        assert _status(metrics, Path("runs/x"), strict=strict) == code
    if words is None:
        assert err.getvalue() == ""
    else:
        (line,) = err.getvalue().splitlines()
        assert line.startswith("error: runs/x: trained, but the result is not usable (exit 3): ") and words in line
    assert UNUSABLE_EXIT == 3


def test_the_constant_predictor_of_a_regression_task_by_hand() -> None:
    train_labels = np.array([[1.0, 2.0], [0.0, 4.0], [1.0, 9.0]])
    train_mask = np.array([[1, 1], [1, 1], [1, 0]])  # minutes' third row is masked: mean (2 + 4) / 2 = 3
    labels, mask = np.array([[0.0, 1.0], [1.0, 6.0], [0.0, 100.0]]), np.array([[1, 1], [1, 1], [1, 0]])
    out = mean_predictor_metrics(train_labels, train_mask, labels, mask, ["click", "minutes"], ["binary", "regression"])
    assert list(out) == ["minutes"]  # binary tasks have the popularity baseline instead
    assert out["minutes"]["mean"] == 3.0
    assert out["minutes"]["rmse"] == pytest.approx(math.sqrt((4 + 9) / 2))  # errors 1 − 3, 6 − 3
    assert out["minutes"]["mae"] == pytest.approx((2 + 3) / 2)
    assert np.isnan(train_means(np.zeros((2, 1)), np.zeros((2, 1)))).all()
