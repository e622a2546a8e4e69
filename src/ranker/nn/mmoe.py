"""Multi-gate Mixture-of-Experts (Ma et al., KDD 2018, "Modeling Task Relationships in
Multi-task Learning with Multi-gate Mixture-of-Experts").

E shared experts f_e, one softmax gate g^t per task, one tower h^t per task (Eq. 5–6):

    f^t(x) = Σ_{e=1..E} g^t(x)_e · f_e(x),     g^t(x) = softmax(W_t x),     y_t = h^t(f^t(x))

Each expert is an MLP (``expert`` widths); the towers are :class:`TaskTowers`. With E = 1 every
gate is the constant 1 and MMoE is the shared-bottom model (the expert is the bottom).

Shape:
    x (B, D) → logits (B, T)

>>> import torch
>>> from ranker.nn.towers import TowerSpec
>>> MMoE(8, ["a", "b"], num_experts=3, expert=TowerSpec(hidden=(16,)))(torch.zeros(4, 8)).shape
torch.Size([4, 2])
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ranker.nn.gates import Gate
from ranker.nn.towers import LINEAR_TOWER, TaskTowers, TowerSpec


class MMoE(nn.Module):
    """Shared experts, a softmax gate and a tower per task."""

    def __init__(
        self, in_dim: int, tasks: Sequence[str], *, num_experts: int, expert: TowerSpec, tower: TowerSpec = LINEAR_TOWER
    ) -> None:
        super().__init__()
        if num_experts < 1 or not expert.hidden:
            raise ValueError(f"{num_experts=} must be >= 1 and expert.hidden={expert.hidden} non-empty")
        names, n_tasks = list(tasks), len(tasks)
        self.experts = nn.ModuleList(expert.build(in_dim) for _ in range(num_experts))
        self.gates = nn.ModuleList(Gate(in_dim, num_experts, label=f"mmoe/{n}") for n in names)
        self.towers = TaskTowers(expert.hidden[-1], n_tasks, tower)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        experts = torch.stack([f(x) for f in self.experts], dim=1)  # (B, E, H)
        mixed = [gate(x, experts) for gate in self.gates]  # T × (B, H)
        return self.towers(mixed)  # (B, T)
