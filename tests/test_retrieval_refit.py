"""`ranker refit`: a select_on_valid retrieval run retrained with its validation items as
training targets, for the epoch count validation picked; test read at the last epoch."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from ranker.cli import main
from ranker.config import load_retrieval_config
from ranker.errors import ConfigError, DataError
from ranker.retrieval.run import check_refit, refit_config
from ranker.run_manifest import seal_run
from ranker.twostage.rows import check_stage1

USERS, EVENTS = 16, 10


def _trained(tmp_path: Path, **train: object) -> Path:
    rng = np.random.default_rng(0)
    rows = ["user,item"] + [f"u{u},i{int(rng.integers(0, 25))}" for u in range(USERS) for _ in range(EVENTS)]
    (tmp_path / "events.csv").write_text("\n".join(rows) + "\n")
    cfg = {
        "kind": "retrieval",
        "name": "tiny",
        "data": {"path": "events.csv", "user_column": "user", "item_column": "item", "max_len": 20},
        "model": {"kind": "sasrec", "dim": 8, "num_layers": 1, "ff_dim": 8},
        "loss": {"kind": "full_softmax"},
        "train": {"epochs": 3, "batch_size": 8, "progress": False, "lr": 0.01, **train},
    }
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    out = tmp_path / "run"
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["train", str(tmp_path / "c.yaml"), "--out", str(out)]) == 0
    return out


def test_refit_repeats_the_run_for_its_best_epoch_with_the_validation_targets(tmp_path: Path) -> None:
    run = _trained(tmp_path)
    selected = json.loads((run / "metrics.json").read_text())
    out = tmp_path / "refit"
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["refit", str(run), "--out", str(out)]) == 0
    refit = json.loads((out / "metrics.json").read_text())
    cfg = load_retrieval_config(out / "config.yaml")
    assert (cfg.name, cfg.train.protocol, cfg.train.refit_of) == ("tiny-refit", "refit", str(run))
    assert cfg.train.epochs == selected["best_epoch"] == refit["stopped_epoch"] == refit["best_epoch"]
    assert refit["refit_of"] == str(run) and refit["protocol"] == "refit"
    # one more target per user: the validation item, after the same inputs
    assert refit["train_targets"] == selected["train_targets"] + USERS
    with pytest.raises(ConfigError, match="trains on the validation items"):
        check_stage1(cfg)  # its scores on the validation queries carry their labels
    check_refit(run, out)
    with pytest.raises(ConfigError, match="run: not the refit of .*refit_of: None"):
        check_refit(out, run)  # the other way round: `run` is a select_on_valid run


def test_refit_refuses_what_it_cannot_repeat(tmp_path: Path) -> None:
    run = _trained(tmp_path, protocol="reference")
    with pytest.raises(ConfigError, match="train.protocol is 'reference'"):
        refit_config(run)
    with pytest.raises(DataError, match="nowhere: no such run directory"):
        refit_config(tmp_path / "nowhere")
    with pytest.raises(ConfigError, match="train: refit_of: only with protocol .refit."):
        load_retrieval_config(tmp_path / "c.yaml", ["train.refit_of=runs/x"])


def test_refit_of_a_ranking_run_is_one_line_naming_the_kind(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ranking = tmp_path / "ranking-run"
    ranking.mkdir()
    (ranking / "config.yaml").write_text("data: {dataset: rk-ml100k}\n")
    seal_run(ranking, "ranking")  # a finished run (its other files do not matter here)
    assert main(["refit", str(ranking)]) == 2
    assert "a ranking run; `ranker refit` needs a retrieval run" in capsys.readouterr().err


def test_refit_epochs_can_be_given_and_must_be_positive(tmp_path: Path) -> None:
    run = _trained(tmp_path)
    assert refit_config(run, 2).train.epochs == 2
    with pytest.raises(ConfigError, match="--epochs: must be >= 1"):
        refit_config(run, 0)
