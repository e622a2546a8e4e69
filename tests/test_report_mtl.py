"""The run report's multi-task parts: regression metrics, gate statistics, serving score."""

from __future__ import annotations

import json
from pathlib import Path

from ranker.report import write_report


def test_report_plots_regression_gates_and_the_serving_score(tmp_path: Path) -> None:
    gates = {
        "mmoe/watch": {"weights": [0.7, 0.3], "entropy": 0.4, "usage_entropy": 0.6, "max_entropy": 0.693},
        "mmoe/rating": {"weights": [0.1, 0.9], "entropy": 0.2, "usage_entropy": 0.3, "max_entropy": 0.693},
    }
    log = [
        {
            "epoch": e,
            "train_loss": 1.0 / e,
            "valid_score": 0.7,
            "valid": {"watch": {"auc": 0.7, "gauc": 0.6}, "rating": {"rmse": 1.2 - 0.1 * e, "mae": 0.9}},
            "gates": gates,
        }
        for e in (1, 2)
    ]
    (tmp_path / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in log))
    metrics = {
        "best_epoch": 2,
        "test": log[-1]["valid"],
        "gates": gates,
        "serving": {
            "weights": {"watch": 1.0, "rating": 0.0},
            "combine": "sum",
            "test": {"watch": {"auc": 0.71, "gauc": 0.61}},
        },
    }
    (tmp_path / "metrics.json").write_text(json.dumps(metrics))
    page = write_report(tmp_path).read_text()
    assert "validation auc and gauc and rmse per epoch" in page
    assert "Experts and gates" in page and 'alt="gate entropy per epoch"' in page
    assert 'alt="mean gate weights on test"' in page and "0.700 0.300" in page
    assert "Serving score" in page and "0.71" in page


def test_report_without_gates_has_no_gate_section(tmp_path: Path) -> None:
    (tmp_path / "log.jsonl").write_text(
        json.dumps({"epoch": 1, "train_loss": 0.5, "valid": {"y": {"auc": 0.8}}}) + "\n"
    )
    assert "Experts and gates" not in write_report(tmp_path).read_text()
