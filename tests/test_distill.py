"""Knowledge distillation: the loss, α = 1 equals plain training, `ranker distill` end to end."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from toy_data import toy_model

from ranker.cli import main
from ranker.config.schema import TaskConfig
from ranker.models import build_model
from ranker.tasks import DistillationObjective, MultiTaskObjective, TaskSpec, soft_loss
from ranker.train import Trainer


def _sig(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def test_soft_loss_hand_values_with_temperature() -> None:
    spec = TaskSpec.from_tasks([TaskConfig(name="y"), TaskConfig(name="r", kind="regression")])
    student, teacher = torch.tensor([[1.0, 3.0]]), torch.tensor([[-1.0, 1.0]])
    got = soft_loss(student, teacher, spec, temperature=2.0)
    p, q = _sig(0.5), _sig(-0.5)  # σ(z / τ)
    bce = -(q * math.log(p) + (1 - q) * math.log(1 - p))
    assert got[0, 0].item() == pytest.approx(4 * bce, rel=1e-6)  # τ² · BCE
    assert got[0, 1].item() == pytest.approx(4.0)  # regression: (3 − 1)², no temperature


def test_distillation_objective_mixes_hard_and_soft_and_respects_masks() -> None:
    spec = TaskSpec.from_tasks([TaskConfig(name="y", weight=2.0)])
    hard = MultiTaskObjective(spec)
    raw = torch.tensor([[0.3], [-0.7]])
    batch = {
        "labels": torch.tensor([[1.0], [0.0]]),
        "label_mask": torch.tensor([[1.0], [0.0]]),
        "teacher": torch.tensor([[2.0], [-50.0]]),
    }
    got = DistillationObjective(hard, alpha=0.25, temperature=1.0)(raw, batch)
    soft_row0 = soft_loss(raw[:1], batch["teacher"][:1], spec, 1.0)[0, 0]  # row 1 is masked
    assert got.item() == pytest.approx(0.25 * hard(raw, batch).item() + 0.75 * 2.0 * soft_row0.item(), rel=1e-6)
    everywhere = DistillationObjective(hard, alpha=0.25, temperature=1.0, soft_on_masked=True)(raw, batch)
    assert everywhere.item() != pytest.approx(got.item())


def _fit(tmp: Path, objective: DistillationObjective | None, teacher: bool) -> dict[str, torch.Tensor]:
    cfg, pre, data = toy_model(
        {"backbone": {"hidden": [8], "dropout": 0.3}},
        train={"epochs": 2, "batch_size": 64, "lr": 0.01, "progress": False},
    )
    if teacher:
        data.tensors["teacher"] = torch.randn(len(data), 2) * 3
    torch.manual_seed(0)
    model = build_model(cfg.model, pre.layout())
    Trainer(model, cfg.train, cfg.data.tasks, tmp, objective=objective).fit(data, data)
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_distillation_with_alpha_one_equals_plain_training(tmp_path: Path) -> None:
    spec = TaskSpec.from_tasks([TaskConfig(name="y"), TaskConfig(name="z")])
    plain = _fit(tmp_path / "plain", None, teacher=False)
    hard_only = _fit(
        tmp_path / "a1", DistillationObjective(MultiTaskObjective(spec), alpha=1.0, temperature=3.0), teacher=True
    )
    assert all(torch.equal(plain[k], hard_only[k]) for k in plain)
    mixed = _fit(
        tmp_path / "a05", DistillationObjective(MultiTaskObjective(spec), alpha=0.5, temperature=3.0), teacher=True
    )
    assert not all(torch.equal(plain[k], mixed[k]) for k in plain)  # the soft term does act


def test_distill_command_trains_a_student_on_cached_teacher_outputs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("RANKER_CACHE_DIR", str(tmp_path / "cache"))
    teacher = tmp_path / "teacher"
    quick = ["--set", "train.epochs=1", "--set", "train.max_steps_per_epoch=5", "--set", "train.progress=false"]
    assert main(["demo", "--out", str(teacher), *quick]) == 0
    student_cfg = tmp_path / "student.yaml"
    student_cfg.write_text(
        "name: student\ndata: {dataset: synthetic}\n"
        "model: {history: {kind: none}, backbone: {hidden: [16]}}\n"
        "train: {distill: {alpha: 0.5, temperature: 2.0}}\n"
    )
    out = tmp_path / "student"
    assert main(["distill", "--teacher", str(teacher), "--student", str(student_cfg), "--out", str(out), *quick]) == 0
    assert "distilled from" in capsys.readouterr().out
    metrics = json.loads((out / "metrics.json").read_text())
    d = metrics["distill"]
    assert d["alpha"] == 0.5 and d["temperature"] == 2.0 and d["teacher_predict_s"] > 0
    assert d["teacher_test"]["view"]["auc"] > 0.5
    cached = np.load(out / "teacher_train.npy")
    assert cached.shape == (metrics["rows"]["train"], 2) and np.isfinite(cached).all()
    assert metrics["params"] < json.loads((teacher / "metrics.json").read_text())["params"]
    # A rerun resumes and reads the cached teacher outputs instead of recomputing them.
    assert main(["distill", "--teacher", str(teacher), "--student", str(student_cfg), "--out", str(out), *quick]) == 0
    assert json.loads((out / "metrics.json").read_text())["distill"]["teacher_predict_s"] == 0.0


def test_distill_refuses_a_teacher_without_the_students_tasks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("RANKER_CACHE_DIR", str(tmp_path / "cache"))
    student_cfg = tmp_path / "student.yaml"
    student_cfg.write_text("data: {dataset: synthetic}\ntrain: {epochs: 1, progress: false}\n")
    assert (
        main(
            [
                "distill",
                "--teacher",
                str(tmp_path / "nothing"),
                "--student",
                str(student_cfg),
                "--out",
                str(tmp_path / "s"),
            ]
        )
        == 2
    )
    assert "--teacher" in capsys.readouterr().err
