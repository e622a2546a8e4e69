"""The command line end to end: demo → run directory → evaluate → report; datasets commands."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ranker.cli import main


@pytest.fixture()
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("RANKER_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path


def test_demo_writes_a_complete_run_directory_and_evaluate_reproduces_it(
    cache: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = cache / "run"
    rc = main(
        [
            "demo",
            "--out",
            str(out),
            "--set",
            "train.epochs=2",
            "--set",
            "train.max_steps_per_epoch=15",
            "--set",
            "train.progress=false",
        ]
    )
    assert rc == 0
    printed = capsys.readouterr().out
    assert "view" in printed and "like" in printed and "popularity AUC" in printed
    for name in (
        "config.yaml",
        "preprocessor.json",
        "model.safetensors",
        "log.jsonl",
        "metrics.json",
        "calibration_test.npz",
        "report.html",
    ):
        assert (out / name).is_file(), name
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["test"]) == {"view", "like"}
    assert set(metrics["baseline"]["test"]["view"]) == {"auc", "gauc"}

    assert main(["evaluate", str(out), "--split", "test"]) == 0
    again = json.loads(capsys.readouterr().out)["metrics"]
    for task in ("view", "like"):
        assert again[task]["auc"] == pytest.approx(metrics["test"][task]["auc"], abs=1e-9)
        assert again[task]["gauc"] == pytest.approx(metrics["test"][task]["gauc"], abs=1e-9)


def test_rerunning_a_finished_run_resumes_instead_of_retraining(
    cache: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = cache / "run"
    args = [
        "demo",
        "--out",
        str(out),
        "--set",
        "train.epochs=1",
        "--set",
        "train.max_steps_per_epoch=5",
        "--set",
        "train.progress=false",
    ]
    assert main(args) == 0
    assert main(args[:-2] + ["--set", "train.epochs=2", "--set", "train.progress=false"]) == 0
    assert "resuming" in capsys.readouterr().out
    epochs = [json.loads(line)["epoch"] for line in (out / "log.jsonl").read_text().splitlines()]
    assert epochs == [1, 2]


def test_resuming_with_a_different_model_is_refused(cache: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = cache / "run"
    base = [
        "demo",
        "--out",
        str(out),
        "--set",
        "train.epochs=1",
        "--set",
        "train.max_steps_per_epoch=5",
        "--set",
        "train.progress=false",
    ]
    assert main(base) == 0
    assert main(base + ["--set", "model.backbone.hidden=[8]"]) == 2
    assert "different config" in capsys.readouterr().err


def test_datasets_list_and_unknown_dataset(cache: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["datasets", "list"]) == 0
    listing = capsys.readouterr().out
    for name in ("synthetic", "rk-ml100k", "r-ml100k", "r-ml1m", "c-frappe", "t-adult", "mt-census", "r-beauty"):
        assert name in listing
    assert main(["datasets", "prepare", "no-such-data"]) == 2
    err = capsys.readouterr().err
    assert "unknown dataset 'no-such-data'" in err and "rk-ml100k" in err


def test_training_a_retrieval_dataset_as_a_ranker_is_a_clear_error(
    cache: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("data: {dataset: r-ml100k}\n")
    assert main(["train", str(cfg), "--out", str(tmp_path / "r")]) == 2
    assert "retrieval dataset" in capsys.readouterr().err


def test_init_from_fine_tunes_from_a_finished_run(cache: Path, capsys: pytest.CaptureFixture[str]) -> None:
    first = cache / "first"
    quick = ["--set", "train.epochs=1", "--set", "train.max_steps_per_epoch=30", "--set", "train.progress=false"]
    assert main(["demo", "--out", str(first), *quick]) == 0
    from ranker.config import dump_config, load_config

    cfg_path = cache / "ft.yaml"
    cfg_path.write_text(dump_config(load_config(first / "config.yaml")))
    # Zero training steps would keep the initial weights: evaluate equality through 1 tiny step at lr≈0.
    second = cache / "second"
    assert (
        main(
            ["train", str(cfg_path), "--out", str(second), "--init-from", str(first), "--set", "train.lr=1e-12", *quick]
        )
        == 0
    )
    a = json.loads((first / "metrics.json").read_text())["test"]
    b = json.loads((second / "metrics.json").read_text())["test"]
    assert b["view"]["auc"] == pytest.approx(a["view"]["auc"], abs=1e-4)
    assert (second / "preprocessor.json").read_text() == (first / "preprocessor.json").read_text()
    bad = cache / "bad.yaml"
    bad.write_text(cfg_path.read_text().replace("hidden:\n    - 256", "hidden:\n    - 32"))
    assert main(["train", str(bad), "--out", str(cache / "third"), "--init-from", str(first), *quick]) == 2
    assert "do not fit this model" in capsys.readouterr().err


def test_collisions_are_stored_and_printed_for_unified_embeddings(
    cache: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = cache / "ue"
    assert (
        main(
            [
                "demo",
                "--out",
                str(out),
                "--set",
                "train.epochs=1",
                "--set",
                "train.max_steps_per_epoch=3",
                "--set",
                "train.progress=false",
                "--set",
                "model.encoders.categorical={kind: unified, dim: 16, probes: 2, memory: 0.05}",
            ]
        )
        == 0
    )
    stored = json.loads((out / "collisions.json").read_text())
    capsys.readouterr()
    assert main(["collisions", str(out)]) == 0
    printed = capsys.readouterr().out
    users = stored["features"]["user_id"]
    assert users["distinct"] > 1000 and 0 <= users["intra"] < users["inter"] <= 1
    assert f"{users['intra']:.4f}" in printed and "user_id" in printed
