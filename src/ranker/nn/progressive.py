"""Progressive Layered Extraction (Tang et al., RecSys 2020, "Progressive Layered Extraction
(PLE): A Novel Multi-Task Learning (MTL) Model for Personalized Recommendations").

Not the piecewise linear *encoding* of numerical features (:mod:`ranker.nn.numerical`).

One extraction level (Customized Gate Control, CGC, Eq. 2–4) holds m_t experts E_{t,·} per
task and m_s shared experts E_{s,·}. Task t's gate mixes only its own and the shared experts:

    g^t(x) = softmax(W_t x_t),   S^t(x) = [E_{t,1}(x_t) … E_{t,m_t}(x_t), E_{s,1}(x_s) … E_{s,m_s}(x_s)]
    y^t = g^t(x)ᵀ S^t(x)

Levels stack (Eq. 5–6): level k's task-t experts read level k−1's task-t output x_t, its
shared experts read the shared output x_s, which a shared gate computes from *all* experts of
the level (every level but the last). Level 1 reads the input x for every branch. Towers then
map y^t to task t's logit.

Consequence checked by the tests: task t's experts of the **last** level receive no gradient
from another task's loss; experts of lower levels do, through the shared gate, by design.

Shape:
    x (B, D) → logits (B, T)

>>> import torch
>>> from ranker.nn.towers import TowerSpec
>>> ple = PLE(8, ["a", "b"], experts=PLEExperts(num_levels=2, task_experts=1, shared_experts=2),
...           expert=TowerSpec(hidden=(16,)))
>>> ple(torch.zeros(4, 8)).shape
torch.Size([4, 2])
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from ranker.nn.gates import Gate
from ranker.nn.towers import LINEAR_TOWER, TaskTowers, TowerSpec


@dataclass(frozen=True)
class PLEExperts:
    """How many extraction levels, and experts per task and shared per level."""

    num_levels: int = 2
    task_experts: int = 1
    shared_experts: int = 1

    def __post_init__(self) -> None:
        if min(self.num_levels, self.task_experts, self.shared_experts) < 1:
            raise ValueError(f"every count must be >= 1, got {self}")


class ExtractionLevel(nn.Module):
    """One CGC level: task-specific and shared experts, a gate per task (+ a shared gate)."""

    def __init__(
        self, in_dim: int, labels: Sequence[str], counts: PLEExperts, expert: TowerSpec, *, last: bool
    ) -> None:
        """`labels`: one per task, then the shared gate's (the names its statistics go by)."""
        super().__init__()
        n_tasks, m_t, m_s = len(labels) - 1, counts.task_experts, counts.shared_experts
        self.m_t = m_t
        # Task t's experts are task_experts[t·m_t : (t+1)·m_t].
        self.task_experts = nn.ModuleList(expert.build(in_dim) for _ in range(n_tasks * m_t))
        self.shared_experts = nn.ModuleList(expert.build(in_dim) for _ in range(m_s))
        self.task_gates = nn.ModuleList(Gate(in_dim, m_t + m_s, label=n) for n in labels[:-1])
        self.shared_gate = None if last else Gate(in_dim, n_tasks * m_t + m_s, label=labels[-1])

    def forward(self, xs: list[torch.Tensor], x_shared: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Task inputs T × (B, D) and the shared input (B, D) → task outputs and shared output."""
        shared = [f(x_shared) for f in self.shared_experts]  # m_s × (B, H)
        m = self.m_t
        own = [[self.task_experts[t * m + i](x) for i in range(m)] for t, x in enumerate(xs)]
        outs = [
            gate(x, torch.stack(o + shared, dim=1))  # (B, m_t + m_s, H) → (B, H)
            for x, o, gate in zip(xs, own, self.task_gates, strict=True)
        ]
        if self.shared_gate is None:
            return outs, x_shared
        every = [h for o in own for h in o] + shared
        return outs, self.shared_gate(x_shared, torch.stack(every, dim=1))


class PLE(nn.Module):
    """Stacked extraction levels, then one tower per task."""

    def __init__(
        self,
        in_dim: int,
        tasks: Sequence[str],
        *,
        experts: PLEExperts,
        expert: TowerSpec,
        tower: TowerSpec = LINEAR_TOWER,
    ) -> None:
        super().__init__()
        if not expert.hidden:
            raise ValueError(f"expert.hidden={expert.hidden} must be non-empty")
        names, n_tasks = list(tasks), len(tasks)
        widths = [in_dim] + [expert.hidden[-1]] * experts.num_levels
        self.levels = nn.ModuleList(
            ExtractionLevel(
                widths[k],
                [f"ple/level{k + 1}/{n}" for n in [*names, "shared"]],
                experts,
                expert,
                last=k == experts.num_levels - 1,
            )
            for k in range(experts.num_levels)
        )
        self.towers = TaskTowers(expert.hidden[-1], n_tasks, tower)
        self.n_tasks = n_tasks

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xs, x_shared = [x] * self.n_tasks, x
        for level in self.levels:
            xs, x_shared = level(xs, x_shared)
        return self.towers(xs)  # (B, T)
