"""Tests of ranker.report: the calibration statistics and the HTML run report."""

from __future__ import annotations

import doctest
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ranker.errors import DataError
from ranker.report import calibration_bins, expected_calibration_error, plots, write_report

TASKS = ("watch", "like")


def _write_log(run_dir: Path, n_epochs: int = 3) -> None:
    lines = []
    for epoch in range(1, n_epochs + 1):
        valid = {
            "watch": {"auc": 0.70 + 0.01 * epoch, "gauc": 0.65 + 0.01 * epoch, "logloss": 0.5},
            # a NaN metric (written as the NaN token json.dumps emits) and a null one
            "like": {"auc": math.nan if epoch == 2 else 0.60 + 0.02 * epoch, "gauc": None},
        }
        lines.append(
            json.dumps(
                {
                    "epoch": epoch,
                    "train_loss": 0.6 - 0.05 * epoch,
                    "valid": valid,
                    "valid_score": 0.68 + 0.01 * epoch,
                    "samples_per_s": 51234.0,
                    "epoch_time_s": 3.2,
                    "lr": 0.001,
                }
            )
        )
    (run_dir / "log.jsonl").write_text("\n".join(lines) + "\n")


def _write_full_run(run_dir: Path) -> None:
    _write_log(run_dir)
    metrics = {
        "best_epoch": 3,
        "stopped_epoch": 3,
        "valid": {"watch": {"auc": 0.73, "logloss": 0.48}, "like": {"auc": 0.66}},
        "test": {"watch": {"auc": 0.72, "logloss": 0.49}, "like": {"auc": 0.65}},
        "baseline": {
            "name": "popularity",
            "valid": {"watch": {"auc": 0.61}},
            "test": {"watch": {"auc": 0.60}, "like": {"auc": 0.55}},
        },
        "params": 123456,
        "train_samples_per_s": 50000.0,
        "dataset": "synthetic",
        "seed": 2021,
        "note": "<b>bold</b>",
        "nested_extra": {"ignored": 1},
    }
    (run_dir / "metrics.json").write_text(json.dumps(metrics))
    rng = np.random.default_rng(0)
    arrays: dict[str, Any] = {}
    for task in TASKS:
        probs = rng.uniform(0, 1, 200)
        arrays[f"{task}__probs"] = probs
        arrays[f"{task}__labels"] = (rng.uniform(0, 1, 200) < probs).astype(np.float64)
    np.savez(run_dir / "calibration_test.npz", **arrays)
    (run_dir / "config.yaml").write_text('model:\n  name: dcn<v2> & "mmoe"\n')


def test_full_report(tmp_path: Path) -> None:
    run_dir = tmp_path / "run_<1>"
    run_dir.mkdir()
    _write_full_run(run_dir)
    out = write_report(run_dir)
    assert out == run_dir / "report.html" and out.is_file()
    page = out.read_text(encoding="utf-8")
    for task in TASKS:
        assert task in page
    assert "synthetic" in page and "popularity" in page
    assert "run_&lt;1&gt;" in page and "run_<1>" not in page
    # loss, valid metrics (AUC + GAUC panels in one image), AUC bars, one calibration per task
    assert page.count("<img") == 3 + len(TASKS)
    assert 'alt="validation auc and gauc per epoch"' in page
    assert 'alt="test AUC per task vs popularity"' in page
    assert "dcn&lt;v2&gt; &amp; &quot;mmoe&quot;" in page
    assert "&lt;b&gt;bold&lt;/b&gt;" in page and "<b>bold</b>" not in page
    assert "ECE" in page and "123456" in page
    assert "<script" not in page.lower() and "http" not in page


def test_only_log(tmp_path: Path) -> None:
    _write_log(tmp_path, n_epochs=1)
    page = write_report(tmp_path).read_text(encoding="utf-8")
    assert page.count("<img") == 2  # loss and validation metrics
    assert "metrics.json is missing" in page
    assert "config.yaml is missing" in page
    assert "calibration plots omitted" in page


def test_empty_and_malformed_run_dir(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not a run directory"):  # nothing of a run: no page
        write_report(tmp_path)
    (tmp_path / "metrics.json").write_text("{}")
    page = write_report(tmp_path).read_text(encoding="utf-8")
    assert "<img" not in page and "log.jsonl is missing" in page
    (tmp_path / "log.jsonl").write_text('not json\n{"epoch": 1, "train_loss": 0.5}\n')
    (tmp_path / "metrics.json").write_text("[1, 2]")
    (tmp_path / "calibration_valid.npz").write_bytes(b"garbage")
    page = write_report(tmp_path).read_text(encoding="utf-8")
    assert page.count("<img") == 1
    assert "skipped 1 line" in page and "not a JSON object" in page
    assert "Could not use calibration_valid.npz" in page
    with pytest.raises(DataError):
        write_report(tmp_path / "absent")


def test_calibration_bins_two_bins_by_hand() -> None:
    labels = np.array([1, 0, 1, 1])
    probs = np.array([0.2, 0.1, 0.9, 0.8])  # unsorted on purpose
    mean, rate, count = calibration_bins(labels, probs, n_bins=2)
    np.testing.assert_allclose(mean, [0.15, 0.85])
    np.testing.assert_allclose(rate, [0.5, 1.0])
    np.testing.assert_array_equal(count, [2, 2])
    # (2 * |0.5 - 0.15| + 2 * |1.0 - 0.85|) / 4
    assert expected_calibration_error(labels, probs, n_bins=2) == pytest.approx(0.25)


def test_calibration_perfect_and_edge_cases() -> None:
    # perfectly calibrated: each equal-frequency bin's positive rate equals its probability
    labels = np.array([0, 1, 0, 1, 0, 0, 0, 0, 1, 1, 1, 1], dtype=np.float64)
    probs = np.array([0.5] * 4 + [0.0] * 4 + [1.0] * 4)
    mean, rate, count = calibration_bins(labels, probs, n_bins=3)
    np.testing.assert_allclose(mean, [0.0, 0.5, 1.0])
    np.testing.assert_allclose(rate, [0.0, 0.5, 1.0])
    np.testing.assert_array_equal(count, [4, 4, 4])
    assert expected_calibration_error(labels, probs, n_bins=3) == 0.0
    assert expected_calibration_error(np.array([0, 1, 0, 1]), np.full(4, 0.5), 2) == 0.0
    # equal frequency: 12 examples, 12 bins -> one example each, ties split by position
    _, _, count = calibration_bins(labels, probs, n_bins=12)
    np.testing.assert_array_equal(count, np.ones(12))
    # fewer examples than bins: no empty bins; non-finite pairs dropped
    mean, rate, count = calibration_bins(np.array([1.0, 0.0, np.nan]), np.array([0.3, 0.7, 0.5]))
    np.testing.assert_allclose(mean, [0.3, 0.7])
    np.testing.assert_allclose(rate, [1.0, 0.0])
    assert count.sum() == 2
    assert math.isnan(expected_calibration_error(np.zeros(0), np.zeros(0)))
    with pytest.raises(ValueError):
        calibration_bins(np.zeros(3), np.zeros(2))


def test_valid_only_metrics_and_bad_calibration(tmp_path: Path) -> None:
    _write_log(tmp_path)
    metrics = {"valid": {"watch": {"auc": 0.7}}, "dataset": "kuairand<1k>"}
    (tmp_path / "metrics.json").write_text(json.dumps(metrics))
    np.savez(tmp_path / "calibration_valid.npz", watch__labels=np.ones(3), watch__probs=np.ones(2))
    page = write_report(tmp_path).read_text(encoding="utf-8")
    assert "kuairand&lt;1k&gt;" in page and 'alt="valid AUC per task"' in page
    assert "Could not use calibration_valid.npz" in page and "differ in length" in page
    assert page.count("<img") == 3


def test_an_unusable_run_says_so_and_gives_each_null_its_reason(tmp_path: Path) -> None:
    _write_log(tmp_path, n_epochs=1)
    metrics = {
        "usable": False,
        "unusable": "no validation score was a number <in 1 evaluation>",
        "warnings": ["no trained epoch beat the untrained weights"],
        "best_epoch": None,
        "test": {"watch": {"auc": None, "rows": 5.0, "positive_rate": 0.0}},
        "undefined": {"test/watch/auc": "one class in the test split: all 5 rows are 0"},
    }
    (tmp_path / "metrics.json").write_text(json.dumps(metrics))
    page = write_report(tmp_path).read_text(encoding="utf-8")
    assert "<b>Not usable:</b> no validation score was a number &lt;in 1 evaluation&gt;" in page
    assert "<b>Warning:</b> no trained epoch beat the untrained weights" in page
    assert "<td>test/watch/auc</td><td>one class in the test split: all 5 rows are 0</td>" in page


def _write_retrieval_run(run_dir: Path) -> None:
    log = [
        {"epoch": e, "train_loss": 9.0 - e, "valid": {"HR@10": 0.1 * e, "NDCG@10": 0.05 * e, "MRR": 0.03 * e}}
        for e in (1, 2, 3)
    ]
    (run_dir / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in log))
    metrics = {
        "model": "sasrec",
        "best_epoch": 3,
        "untrained_valid": {"HR@10": 0.02, "NDCG@10": 0.01, "MRR": 0.005},
        "valid": {"HR@10": 0.3, "NDCG@10": 0.15, "HR@50": 0.5, "NDCG@50": 0.2, "MRR": 0.09},
        "test": {"HR@10": 0.28, "NDCG@10": 0.14, "HR@50": 0.48, "NDCG@50": 0.19, "MRR": 0.08},
        "most_popular": {
            "valid": {"HR@10": 0.12, "NDCG@10": 0.06, "HR@50": 0.3, "NDCG@50": 0.1, "MRR": 0.04},
            "test": {"HR@10": 0.11, "NDCG@10": 0.055, "HR@50": 0.29, "NDCG@50": 0.09, "MRR": 0.035},
        },
    }
    (run_dir / "metrics.json").write_text(json.dumps(metrics))


def test_a_retrieval_report_sets_hr_and_ndcg_per_epoch_beside_most_popular(tmp_path: Path) -> None:
    _write_retrieval_run(tmp_path)
    page = write_report(tmp_path).read_text(encoding="utf-8")
    assert page.count("<img") == 2  # training loss; validation HR@k and NDCG@k with most-popular dotted
    assert 'alt="validation HR@k and NDCG@k per epoch vs most-popular"' in page
    # results: metric | valid model / most-popular / Δ | test model / most-popular / Δ
    assert "<th>valid: most-popular</th>" in page and "<th>test: Δ</th>" in page
    row = '<tr><td>NDCG@10</td><td class="num">0.15</td><td class="num">0.06</td><td class="num">0.09</td>'
    assert row in page
    # per epoch: the untrained weights as epoch 0, epochs 1..3, most-popular's validation figures
    assert '<tr><td>0 (untrained)</td><td>n/a</td><td class="num">0.02</td>' in page
    assert '<tr><td>most-popular</td><td>n/a</td><td class="num">0.12</td><td class="num">0.06</td>' in page
    assert '<tr><td class="num">3</td><td class="num">6</td><td class="num">0.3</td><td class="num">0.15</td>' in page
    assert "per-task" not in page and "Calibration" not in page  # nothing of the ranker's sections


def test_retrieval_curves_plot() -> None:
    png = plots.plot_retrieval_curves([0, 1, 2], {"HR": {"HR@10": [0.1, 0.2, math.nan]}}, {"HR@10": 0.15}, 1)
    assert png.startswith(b"\x89PNG")


def test_plots_doctests() -> None:
    result = doctest.testmod(plots)
    assert result.attempted >= 3 and result.failed == 0
