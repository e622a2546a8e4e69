"""The tasks a model predicts, in the form losses, metrics and serving need (no config types).

A model always emits one raw output per task, ``(B, T)``; :class:`TaskSpec` says what each means:
binary tasks are logits (σ gives the probability; for a chained task, the conditional
probability p(t | parent)), regression tasks are the predicted value itself.

>>> from ranker.config.schema import TaskConfig
>>> spec = TaskSpec.from_tasks([TaskConfig(name="watch"), TaskConfig(name="like", conditional_on="watch")])
>>> spec.parents
(None, 0)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ranker.config.schema import TaskConfig


@dataclass(frozen=True)
class TaskSpec:
    """Names, kinds, losses, weights and chain parents of T tasks (index-aligned)."""

    names: tuple[str, ...]
    kinds: tuple[str, ...]  # "binary" | "regression"
    losses: tuple[str, ...]  # "bce" | "mse" | "huber"
    weights: tuple[float, ...]
    huber_deltas: tuple[float, ...]
    parents: tuple[int | None, ...]  # index of the task this one is conditional on

    @classmethod
    def from_tasks(cls, tasks: Sequence[TaskConfig]) -> TaskSpec:
        index = {t.name: i for i, t in enumerate(tasks)}
        return cls(
            names=tuple(t.name for t in tasks),
            kinds=tuple(t.kind for t in tasks),
            losses=tuple(t.loss_name for t in tasks),
            weights=tuple(t.weight for t in tasks),
            huber_deltas=tuple(t.huber_delta for t in tasks),
            parents=tuple(None if t.conditional_on is None else index[t.conditional_on] for t in tasks),
        )

    @property
    def binary(self) -> tuple[bool, ...]:
        return tuple(k == "binary" for k in self.kinds)

    @property
    def chained(self) -> bool:
        return any(p is not None for p in self.parents)

    def outputs(self, raw: torch.Tensor) -> torch.Tensor:
        """Per-task outputs (B, T): σ(z) for binary tasks, z for regression tasks."""
        raw = raw.float()
        if all(self.binary):
            return torch.sigmoid(raw)
        is_bin = torch.tensor(self.binary, device=raw.device)
        return torch.where(is_bin, torch.sigmoid(raw), raw)
