"""Mixture-of-experts heads: MMoE, PLE, gates and their statistics, per-task towers."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from toy_data import toy_model

from ranker.models import build_model
from ranker.nn.gates import Gate, entropy
from ranker.nn.mmoe import MMoE
from ranker.nn.progressive import PLE, PLEExperts
from ranker.nn.towers import TowerSpec
from ranker.train import Trainer


def _gates(model: torch.nn.Module) -> list[Gate]:
    return [m for m in model.modules() if isinstance(m, Gate)]


@pytest.mark.parametrize(
    "make",
    [
        lambda: MMoE(6, ["a", "b", "c"], num_experts=4, expert=TowerSpec((8,))),
        lambda: PLE(6, ["a", "b"], experts=PLEExperts(3, 2, 2), expert=TowerSpec((8, 5))),
    ],
)
def test_every_gate_is_a_distribution_over_its_experts(make) -> None:
    torch.manual_seed(0)
    model = make()
    gates = _gates(model)
    assert gates
    for gate in gates:
        with torch.no_grad():
            gate.linear.weight.normal_(0, 3.0)  # far from uniform
        w = gate.weights(torch.randn(32, gate.linear.in_features) * 5)
        assert torch.allclose(w.sum(-1), torch.ones(32), atol=1e-6)
        assert (w >= 0).all()


def test_mmoe_with_one_expert_is_shared_bottom_up_to_parametrisation() -> None:
    cfg_sb, pre, data = toy_model({"backbone": {"hidden": [16], "dropout": 0.0}})
    cfg_mm, _, _ = toy_model({"backbone": {"hidden": []}, "heads": {"kind": "mmoe", "num_experts": 1, "expert": [16]}})
    torch.manual_seed(0)
    shared = build_model(cfg_sb.model, pre.layout())
    torch.manual_seed(1)
    mmoe = build_model(cfg_mm.model, pre.layout())
    sb, mm = shared.state_dict(), mmoe.state_dict()
    mapped = {}
    for key in mm:
        if key.startswith("heads.experts.0."):
            mapped[key] = sb["backbone." + key.removeprefix("heads.experts.0.")]
        elif key.startswith("heads.towers.logits."):
            t, what = key.removeprefix("heads.towers.logits.").split(".")
            mapped[key] = sb[f"heads.linear.{what}"][int(t)].reshape(mm[key].shape)
        elif key.startswith("heads.gates."):
            mapped[key] = torch.randn_like(mm[key])  # softmax over one expert: always 1
        else:
            mapped[key] = sb[key]
    mmoe.load_state_dict(mapped)
    batch = next(data.batches(64))
    shared.eval()
    mmoe.eval()
    assert torch.allclose(shared(batch), mmoe(batch), atol=1e-6)


def test_default_heads_keep_the_shared_bottom_state_dict() -> None:
    cfg, pre, _ = toy_model({})
    keys = [k for k in build_model(cfg.model, pre.layout()).state_dict() if k.startswith("heads.")]
    assert keys == ["heads.linear.weight", "heads.linear.bias"]


def _grad_norms(model: PLE, loss: torch.Tensor) -> dict[str, float]:
    model.zero_grad()
    loss.backward()
    return {
        n: sum(float(p.grad.abs().sum()) if p.grad is not None else 0.0 for p in m.parameters())
        for n, m in model.named_modules()
        if n.count(".") == 3 and "experts." in n
    }


def test_ple_task_experts_get_no_gradient_from_other_tasks() -> None:
    torch.manual_seed(0)
    x = torch.randn(16, 6)
    one = PLE(6, ["a", "b"], experts=PLEExperts(1, 2, 1), expert=TowerSpec((8,)))
    g = _grad_norms(one, one(x)[:, 1].sum())  # task b's loss only
    # task_experts[t·m + i]: task a's experts are 0, 1; task b's are 2, 3
    assert g["levels.0.task_experts.0"] == 0 and g["levels.0.task_experts.1"] == 0
    assert g["levels.0.task_experts.2"] > 0 and g["levels.0.shared_experts.0"] > 0

    two = PLE(6, ["a", "b"], experts=PLEExperts(2, 1, 1), expert=TowerSpec((8,)))
    g = _grad_norms(two, two(x)[:, 1].sum())
    assert g["levels.1.task_experts.0"] == 0  # last level: isolated
    # Lower levels reach task b through the shared gate, as the paper intends.
    assert g["levels.0.task_experts.0"] > 0


def test_gate_entropy_statistics_detect_collapse() -> None:
    gate = Gate(3, 4, label="g")
    with torch.no_grad():
        gate.linear.weight.zero_()
        gate.linear.bias.zero_()
    gate.eval()
    gate.weights(torch.randn(10, 3))
    stats = gate.pop_stats()
    assert stats is not None
    assert stats["entropy"] == pytest.approx(math.log(4)) and stats["usage_entropy"] == pytest.approx(math.log(4))
    assert stats["weights"] == [0.25] * 4 and gate.pop_stats() is None  # reset after reading
    with torch.no_grad():
        gate.linear.bias.copy_(torch.tensor([20.0, 0.0, 0.0, 0.0]))  # collapsed onto expert 0
    gate.weights(torch.randn(10, 3))
    stats = gate.pop_stats()
    assert stats is not None and stats["entropy"] < 1e-3 and stats["usage_entropy"] < 1e-3
    gate.train()
    gate.weights(torch.randn(10, 3))
    assert gate.pop_stats() is None  # training passes are not recorded
    assert entropy(torch.tensor([0.5, 0.5, 0.0])).item() == pytest.approx(math.log(2))


@pytest.mark.parametrize(
    "heads",
    [
        {"kind": "mmoe", "num_experts": 3, "expert": [8], "tower": [4]},
        {"kind": "ple", "num_levels": 2, "task_experts": 1, "shared_experts": 2, "expert": [8]},
        {"kind": "linear", "tower": [4]},
    ],
)
def test_heads_train_and_log_gate_statistics(tmp_path: Path, heads: dict) -> None:
    cfg, pre, data = toy_model(
        {"backbone": {"hidden": []}, "heads": heads},
        train={"epochs": 2, "batch_size": 64, "lr": 0.01, "progress": False},
    )
    torch.manual_seed(0)
    model = build_model(cfg.model, pre.layout())
    Trainer(model, cfg.train, cfg.data.tasks, tmp_path).fit(data, data)
    log = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert log[-1]["valid"]["y"]["auc"] > 0.7
    if heads["kind"] == "linear":
        assert "gates" not in log[-1]
        return
    gates = log[-1]["gates"]
    expected = (
        {"mmoe/y", "mmoe/z"}
        if heads["kind"] == "mmoe"
        else {"ple/level1/y", "ple/level1/z", "ple/level1/shared", "ple/level2/y", "ple/level2/z"}
    )
    assert set(gates) == expected
    for g in gates.values():
        assert sum(g["weights"]) == pytest.approx(1.0, abs=1e-3)
        assert 0 <= g["entropy"] <= g["usage_entropy"] + 1e-6 <= g["max_entropy"] + 2e-6


def test_moe_heads_export_for_serving() -> None:
    torch.manual_seed(0)
    batch = torch.export.Dim("batch")
    for model in (
        MMoE(6, ["a", "b"], num_experts=2, expert=TowerSpec((8,))),
        PLE(6, ["a", "b"], experts=PLEExperts(2, 1, 1), expert=TowerSpec((8,))),
    ):
        model.train()  # gate statistics are an evaluation-time side effect, not part of the graph
        program = torch.export.export(model, (torch.randn(3, 6),), dynamic_shapes=({0: batch},))
        x = torch.randn(7, 6)
        assert torch.allclose(program.module()(x), model(x))


def test_doctests_of_the_moe_and_task_modules() -> None:
    import doctest

    import ranker.nn.gates
    import ranker.nn.mmoe
    import ranker.nn.progressive
    import ranker.nn.towers
    import ranker.tasks.chain
    import ranker.tasks.distill
    import ranker.tasks.losses
    import ranker.tasks.score
    import ranker.tasks.spec

    for module in (
        ranker.nn.gates,
        ranker.nn.mmoe,
        ranker.nn.progressive,
        ranker.nn.towers,
        ranker.tasks.chain,
        ranker.tasks.distill,
        ranker.tasks.losses,
        ranker.tasks.score,
        ranker.tasks.spec,
    ):
        result = doctest.testmod(module, raise_on_error=False)
        assert result.attempted > 0 and result.failed == 0, module.__name__
