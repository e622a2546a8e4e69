"""benchmarks/check_reproduce.py: recorded figures, tolerances and the comparison of a finished
run, tested on fake run directories (no training)."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "benchmarks"
sys.path.insert(0, str(BENCH))

import check_reproduce as cr  # noqa: E402
import results_store  # noqa: E402


def recorded_metrics(config: str) -> dict[str, Any]:
    """A copy of the recorded seed-2021 run of ``config`` (what a perfect rerun writes)."""
    file, name, _ = cr.CHECKS[config]
    results = results_store.load_results(BENCH / "results" / f"{file}.json")
    for key, value in results.items():
        if key.split("|")[0] == name and key.endswith("|2021"):
            return copy.deepcopy(value)
    return copy.deepcopy(next(v for v in results.values() if v.get("seed") == 2021))


def fake_run(root: Path, name: str, metrics: dict[str, Any]) -> Path:
    run = root / f"{name}-2021"
    run.mkdir(parents=True)
    (run / "metrics.json").write_text(json.dumps(metrics))
    return run


def test_every_shipped_config_has_a_recorded_figure() -> None:
    shipped = {p.stem for p in (BENCH / "configs").glob("*.yaml")}
    assert shipped == set(cr.CHECKS)
    for config in shipped:
        for fig in cr.figures(config):
            assert 2021 in fig.seeds and 0 < fig.tolerance < 0.05


def test_tolerance_is_the_seed_spread_or_the_single_seed_default() -> None:
    fig = cr.figures("best-c-frappe")[0]  # 3 seeds: 0.9661 / 0.9663 / 0.9675
    assert fig.recorded == pytest.approx(0.9661, abs=5e-5)
    assert fig.std == pytest.approx(0.0006, abs=5e-5)
    assert fig.tolerance == pytest.approx(max(cr.K * fig.std, cr.FLOOR))


def test_list_prints_every_config() -> None:
    out = subprocess.run(
        [sys.executable, str(BENCH / "check_reproduce.py"), "--list"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for config in cr.CHECKS:
        assert f"| {config} |" in out
    assert "ranker train benchmarks/configs/best-c-frappe.yaml --set train.seed=2021" in out


def test_from_results_passes_a_faithful_rerun_and_writes_the_layout(tmp_path: Path) -> None:
    run = fake_run(tmp_path / "runs", "best-c-frappe", recorded_metrics("best-c-frappe"))
    results = tmp_path / "reproduce-check.json"
    assert cr.main(["--from-results", str(run), "--results", str(results)]) == 0
    rec = results_store.records(results)[0]
    assert rec["key"] == "best-c-frappe|2021" and rec["seed"] == 2021 and rec["protocol"] == "C-Frappe"
    assert rec["metrics"]["ok"] and rec["metrics"]["compared"][0]["diff"] == 0
    assert {"command", "commit", "date", "machine"} <= set(rec["provenance"])


def test_from_results_fails_outside_the_tolerance(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    metrics = recorded_metrics("best-rk-ml100k")
    metrics["test"]["watch"]["auc"] -= 0.02  # 7 std below the recorded seed
    fake_run(tmp_path / "runs", "best-rk-ml100k", metrics)
    # a folder of runs; a second run within tolerance (by its config's `name:`)
    near = recorded_metrics("retrieval-sasrec-r-ml100k")
    near["test"]["HR@10"] += 0.002
    fake_run(tmp_path / "runs", "sasrec-r-ml100k", near)
    results = tmp_path / "out.json"
    assert cr.main(["--from-results", str(tmp_path / "runs"), "--results", str(results)]) == 1
    out = capsys.readouterr().out
    assert "FAIL best-rk-ml100k" in out and "ok   retrieval-sasrec-r-ml100k" in out
    got = {r["key"]: r["metrics"]["ok"] for r in results_store.records(results)}
    assert got == {"best-rk-ml100k|2021": False, "retrieval-sasrec-r-ml100k|2021": True}


def test_run_trains_with_seed_2021_and_compares(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[list[str]] = []

    def fake_train(cmd: list[str]) -> None:
        calls.append(cmd)
        out = Path(cmd[cmd.index("--out") + 1])
        out.mkdir(parents=True)
        (out / "metrics.json").write_text(json.dumps(recorded_metrics("baseline-t-adult")))

    monkeypatch.setattr(cr, "train", fake_train)
    results = tmp_path / "r.json"
    assert cr.main(["--run", "baseline-t-adult", "--out", str(tmp_path / "runs"), "--results", str(results)]) == 0
    assert calls[0][-4:] == ["--set", "train.seed=2021", "--out", str(tmp_path / "runs" / "baseline-t-adult-2021")]
    assert calls[0][-5].endswith("benchmarks/configs/baseline-t-adult.yaml")
    assert results_store.records(results)[0]["metrics"]["ok"]
