"""Per-task towers: one small MLP and one logit per task.

    z_t = w_tᵀ MLP_t(x_t) + b_t

Each task reads its own input x_t (MMoE / PLE mix a different vector per task) or one shared
input (shared bottom). With no tower widths each task is a single linear logit.

Shape:
    one (B, D) tensor or T tensors (B, D) → logits (B, T)

>>> import torch
>>> TaskTowers(8, 3, TowerSpec(hidden=(4,)))(torch.zeros(2, 8)).shape
torch.Size([2, 3])
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from ranker.nn.mlp import MLP


@dataclass(frozen=True)
class TowerSpec:
    """An MLP's widths, dropout and activation (experts and towers)."""

    hidden: tuple[int, ...] = ()
    dropout: float = 0.0
    activation: str = "relu"

    def build(self, in_dim: int) -> MLP:
        return MLP(in_dim, self.hidden, dropout=self.dropout, activation=self.activation)


LINEAR_TOWER = TowerSpec()  # no hidden layer: a linear logit per task


class TaskTowers(nn.Module):
    """T towers, each ``MLP → Linear(·, 1)``, on a shared input or one input per task."""

    def __init__(self, in_dim: int, n_tasks: int, spec: TowerSpec) -> None:
        super().__init__()
        self.towers = nn.ModuleList(spec.build(in_dim) for _ in range(n_tasks))
        width = spec.hidden[-1] if spec.hidden else in_dim
        self.logits = nn.ModuleList(nn.Linear(width, 1) for _ in range(n_tasks))

    def forward(self, x: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
        xs = [x] * len(self.towers) if isinstance(x, torch.Tensor) else list(x)
        if len(xs) != len(self.towers):
            raise ValueError(f"{len(xs)} task inputs for {len(self.towers)} towers")
        outs = [head(tower(xt)) for xt, tower, head in zip(xs, self.towers, self.logits, strict=True)]
        return torch.cat(outs, dim=-1)  # (B, T)
