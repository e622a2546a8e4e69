"""Per-task losses and the weighted, masked multi-task objective.

    L = Σ_t w_t · (Σ_i m_it ℓ_t(ŷ_it, y_it)) / max(1, Σ_i m_it)

ℓ_t is BCE on the logit for binary tasks, squared error (MSE, no ½) or Huber (δ) for
regression tasks, and, for a task chained to a parent (ESMM, :mod:`ranker.tasks.chain`), the BCE
of the joint probability against the joint label on the parent's rows. Masked rows (m = 0)
contribute neither loss nor gradient: their elementwise loss is multiplied by 0 and every
label is finite, so no NaN can leak through the product.

Shape:
    raw outputs, labels, mask (B, T) → scalar loss

>>> import torch
>>> from ranker.config.schema import TaskConfig
>>> spec = TaskSpec.from_tasks([TaskConfig(name="r", kind="regression")])
>>> MultiTaskObjective(spec).task_losses(torch.tensor([[2.0]]), torch.tensor([[0.0]]), torch.ones(1, 1))
tensor([4.])
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ranker.tasks.chain import joint_bce, joint_labels, joint_log_prob
from ranker.tasks.spec import TaskSpec


def elementwise_loss(raw: torch.Tensor, labels: torch.Tensor, kind: str, *, delta: float = 1.0) -> torch.Tensor:
    """ℓ(raw, y) per row for one unchained task: ``bce`` (raw = logit), ``mse`` or ``huber``."""
    if kind == "bce":
        return F.binary_cross_entropy_with_logits(raw, labels, reduction="none")
    if kind == "mse":
        return (raw - labels).square()
    if kind == "huber":
        return F.huber_loss(raw, labels, reduction="none", delta=delta)
    raise ValueError(f"{kind=} is not one of bce, mse, huber")


def masked_mean(loss: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-task mean over unmasked rows (0 for a task with no rows in the batch), shape (T,)."""
    return (loss * mask).sum(0) / mask.sum(0).clamp_min(1.0)


class MultiTaskObjective:
    """``objective(raw, batch) -> loss``: the trainer's loss for the tasks of a :class:`TaskSpec`."""

    def __init__(self, spec: TaskSpec) -> None:
        self.spec = spec

    def __call__(self, raw: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        per_task = self.task_losses(raw, batch["labels"], batch["label_mask"])
        weights = torch.tensor(self.spec.weights, device=per_task.device)
        return (per_task * weights).sum()

    def task_losses(self, raw: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Unweighted loss of each task, shape (T,)."""
        loss, mask = self.elementwise(raw, labels, mask)
        return masked_mean(loss, mask)

    def elementwise(
        self, raw: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Loss per row and task (B, T) and the mask that applies to it (joint mask for chains)."""
        raw = raw.float()
        spec = self.spec
        log_p = None
        if spec.chained:
            labels, mask = joint_labels(labels, mask, spec.parents)
            log_p = joint_log_prob(raw, spec.parents)
        cols = []
        for t, kind in enumerate(spec.losses):
            if log_p is not None and spec.parents[t] is not None:
                cols.append(joint_bce(log_p[:, t], labels[:, t]))
            else:
                cols.append(elementwise_loss(raw[:, t], labels[:, t], kind, delta=spec.huber_deltas[t]))
        return torch.stack(cols, 1), mask
