"""Task kinds, masks, ESMM chains, serving score and their config errors (ranker.tasks)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ranker.config import load_config
from ranker.config.schema import TaskConfig
from ranker.errors import ConfigError
from ranker.tasks import MultiTaskObjective, TaskSpec, joint_labels, joint_log_prob, log1mexp, serving_score
from ranker.train.evaluate import regression_metrics, selection_score, task_metrics


def _spec(*tasks: dict) -> TaskSpec:
    return TaskSpec.from_tasks([TaskConfig.model_validate(t) for t in tasks])


def _batch(labels: list[list[float]], mask: list[list[float]]) -> dict[str, torch.Tensor]:
    return {"labels": torch.tensor(labels, dtype=torch.float32), "label_mask": torch.tensor(mask, dtype=torch.float32)}


# ------------------------------------------------------------------ losses and masks


def test_regression_losses_match_hand_values() -> None:
    spec = _spec(
        {"name": "mse", "kind": "regression"},
        {"name": "hub", "kind": "regression", "loss": "huber", "huber_delta": 1.0},
    )
    raw = torch.tensor([[3.0, 3.0], [0.5, 0.5]])
    batch = _batch([[1.0, 1.0], [0.0, 0.0]], [[1, 1], [1, 1]])
    per_task = MultiTaskObjective(spec).task_losses(raw, batch["labels"], batch["label_mask"])
    # MSE: ((3-1)² + 0.5²) / 2;  Huber δ=1: |2| > 1 → 1·(2 − 0.5) = 1.5; |0.5| ≤ 1 → 0.5·0.25
    assert per_task.tolist() == pytest.approx([(4 + 0.25) / 2, (1.5 + 0.125) / 2])


def test_regression_metrics_match_hand_values() -> None:
    m = regression_metrics(np.array([1.0, 2.0, 4.0]), np.array([2.0, 2.0, 1.0]))
    assert m["rmse"] == pytest.approx(math.sqrt((1 + 0 + 9) / 3))
    assert m["mae"] == pytest.approx(4 / 3)
    out = task_metrics(
        np.array([[0.9, 2.0], [0.1, 2.0]]),
        np.array([[1.0, 1.0], [0.0, 3.0]]),
        np.ones((2, 2)),
        ["y", "r"],
        kinds=["binary", "regression"],
    )
    assert set(out["r"]) == {"rmse", "mae", "rows", "mean"} and out["r"]["rmse"] == pytest.approx(1.0)
    assert out["y"]["auc"] == 1.0
    assert selection_score(out) == 1.0  # the binary task's AUC only
    assert selection_score({"r": out["r"]}) == pytest.approx(-1.0)


@pytest.mark.parametrize(
    "kind", [{"name": "t"}, {"name": "t", "kind": "regression"}, {"name": "t", "kind": "regression", "loss": "huber"}]
)
def test_masked_rows_contribute_no_loss_and_no_gradient(kind: dict) -> None:
    spec = _spec({"name": "a"}, kind)
    objective = MultiTaskObjective(spec)
    raw = torch.randn(6, 2, requires_grad=True)
    labels = torch.tensor([[1.0, 1.0], [0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [0.0, 0.0]])
    mask = torch.ones(6, 2)
    mask[3:, 1] = 0.0
    loss = objective(raw, _batch(labels.tolist(), mask.tolist()))
    loss.backward()
    assert raw.grad is not None
    assert torch.all(raw.grad[3:, 1] == 0) and torch.all(raw.grad[:3, 1] != 0)
    # Changing masked labels (even wildly) or masked outputs leaves the loss unchanged.
    labels2, raw2 = labels.clone(), raw.detach().clone()
    labels2[3:, 1] = 7.0 if spec.kinds[1] == "regression" else 1.0 - labels2[3:, 1]
    raw2[3:, 1] += 100.0
    assert objective(raw2, _batch(labels2.tolist(), mask.tolist())).item() == pytest.approx(loss.item())
    # ... and task t's loss is its mean over the unmasked rows alone.
    full = objective.task_losses(raw.detach(), labels, mask)
    alone = MultiTaskObjective(_spec(kind)).task_losses(raw.detach()[:3, 1:], labels[:3, 1:], mask[:3, 1:])
    assert full[1].item() == pytest.approx(alone[0].item())


def test_binary_objective_equals_the_legacy_multitask_loss() -> None:
    from ranker.train import multitask_loss

    spec = _spec({"name": "a", "weight": 0.3}, {"name": "b"})
    raw, labels = torch.randn(8, 2), torch.randint(0, 2, (8, 2)).float()
    mask = torch.randint(0, 2, (8, 2)).float()
    got = MultiTaskObjective(spec)(raw, {"labels": labels, "label_mask": mask})
    assert got.item() == pytest.approx(multitask_loss(raw, labels, mask, torch.tensor([0.3, 1.0])).item())


# ------------------------------------------------------------------ ESMM chain


def test_esmm_chain_joint_probability_is_the_product() -> None:
    z = torch.tensor([[0.3, -1.2, 2.0], [-4.0, 5.0, -0.5]])
    parents = (None, 0, 1)  # c | b | a
    got = joint_log_prob(z, parents).exp()
    s = torch.sigmoid(z)
    want = torch.stack([s[:, 0], s[:, 0] * s[:, 1], s[:, 0] * s[:, 1] * s[:, 2]], 1)
    assert torch.allclose(got, want, atol=1e-6)
    # Two-task closed form: logit σ(a)σ(b) = −log(e^{−a} + e^{−b} + e^{−a−b}).
    a, b = z[:, 0], z[:, 1]
    closed = -torch.logsumexp(torch.stack([-a, -b, -a - b], 1), 1)
    log_p = joint_log_prob(z, parents)[:, 1]
    assert torch.allclose(log_p - log1mexp(log_p), closed, atol=1e-5)


def test_esmm_chain_loss_is_the_bce_of_the_product_on_every_parent_row() -> None:
    spec = _spec({"name": "watch"}, {"name": "like", "mask_column": "watch", "conditional_on": "watch"})
    z = torch.tensor([[0.5, 1.0], [-0.2, 2.0], [1.5, -1.0]], requires_grad=True)
    watch = torch.tensor([1.0, 0.0, 1.0])
    like = torch.tensor([1.0, 0.0, 0.0])  # row 1: unwatched, so its like label is masked (0)
    batch = _batch(torch.stack([watch, like], 1).tolist(), [[1, 1], [1, 0], [1, 1]])
    per_task = MultiTaskObjective(spec).task_losses(z, batch["labels"], batch["label_mask"])
    s = torch.sigmoid(z.detach()).double()
    p_joint = s[:, 0] * s[:, 1]
    y_joint = like * watch
    bce = -(y_joint * p_joint.log() + (1 - y_joint) * (1 - p_joint).log())
    assert per_task[1].item() == pytest.approx(bce.mean().item(), rel=1e-5)  # all 3 rows count
    bce_watch = -(watch * s[:, 0].log() + (1 - watch) * (1 - s[:, 0]).log())
    assert per_task[0].item() == pytest.approx(bce_watch.mean().item(), rel=1e-5)
    # The like head learns on the unwatched row too (through the product): non-zero gradient.
    per_task[1].backward()
    assert z.grad is not None and z.grad[1, 1] != 0


def test_esmm_joint_labels_mask_unknown_children_of_happened_parents() -> None:
    labels = torch.tensor([[1.0, 1.0], [1.0, 0.0], [0.0, 0.0], [1.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0], [1.0, 1.0], [1.0, 0.0], [1.0, 0.0]])  # last: watched, like unknown
    y, m = joint_labels(labels, mask, (None, 0))
    assert y[:, 1].tolist() == [1, 0, 0, 0]
    assert m[:, 1].tolist() == [1, 1, 1, 0]


def test_esmm_chain_loss_is_finite_at_saturated_logits() -> None:
    spec = _spec({"name": "a"}, {"name": "b", "conditional_on": "a"})
    z = torch.tensor([[40.0, 40.0], [-40.0, -40.0], [40.0, -40.0]], requires_grad=True)
    loss = MultiTaskObjective(spec)(z, _batch([[1, 1], [0, 0], [1, 0]], [[1, 1], [1, 1], [1, 1]]))
    loss.backward()
    assert torch.isfinite(loss) and z.grad is not None and torch.isfinite(z.grad).all()


# ------------------------------------------------------------------ serving score


def test_serving_score_sum_and_product() -> None:
    spec = _spec({"name": "watch"}, {"name": "like", "conditional_on": "watch"})
    p = torch.tensor([[0.8, 0.5], [0.4, 0.9]])
    joint_like = p[:, 0] * p[:, 1]
    got = serving_score(p, spec, {"watch": 1.0, "like": 3.0})
    assert torch.allclose(got, p[:, 0] + 3 * joint_like)
    got = serving_score(p, spec, {"watch": 0.5, "like": 2.0}, "product")
    assert torch.allclose(got, p[:, 0] ** 0.5 * joint_like**2)
    assert torch.allclose(serving_score(p, spec, {}), p[:, 0] + joint_like)
    with pytest.raises(ConfigError, match="serving.weights"):
        serving_score(p, spec, {"wach": 1.0})


# ------------------------------------------------------------------ config errors


def _cfg(tasks: list[dict], **extra: object) -> object:
    return load_config(
        base={
            "data": {
                "path": "x.csv",
                "split": {"kind": "random"},
                "features": [{"kind": "categorical", "name": "u"}],
                "tasks": tasks,
            },
            **extra,
        }
    )


@pytest.mark.parametrize(
    ("tasks", "message"),
    [
        ([{"name": "like", "conditional_on": "watch"}, {"name": "watch"}], "tasks[0].conditional_on"),
        ([{"name": "r", "kind": "regression"}, {"name": "b", "conditional_on": "r"}], "tasks[1].conditional_on"),
        ([{"name": "y", "loss": "mse"}], "data.tasks.0"),
        ([{"name": "y", "kind": "regression", "loss": "bce"}], "data.tasks.0"),
        ([{"name": "y", "kind": "ordinal"}], "data.tasks.0.kind"),
        ([{"name": "y"}, {"name": "y"}], "duplicate task names"),
    ],
)
def test_task_config_errors_name_the_key(tasks: list[dict], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        _cfg(tasks)
    assert message in str(err.value)


@pytest.mark.parametrize(
    ("model", "message"),
    [
        ({"heads": {"kind": "mmoe", "num_experts": 0}}, "model.heads.num_experts"),
        ({"heads": {"kind": "ple", "levels": 2}}, "model.heads.levels: unknown key"),
        ({"heads": {"kind": "moe"}}, "unknown kind 'moe'"),
        ({"heads": {"kind": "mmoe", "expert": []}}, "model.heads.expert"),
    ],
)
def test_heads_config_errors_name_the_key(model: dict, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        _cfg([{"name": "y"}], model=model)
    assert message in str(err.value)


def test_distill_config_errors_name_the_key() -> None:
    with pytest.raises(ConfigError, match="train.distill.alpha"):
        _cfg([{"name": "y"}], train={"distill": {"alpha": 1.5}})
    with pytest.raises(ConfigError, match="serving.combine"):
        _cfg([{"name": "y"}], serving={"combine": "max"})
