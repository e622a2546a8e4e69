"""Softmax gates over experts, and the statistics that reveal expert collapse.

A gate maps its input to a distribution over E experts and mixes their outputs:

    g(x) = softmax(W_g x) ∈ Δ^{E−1},    f(x) = Σ_e g_e(x) · f_e(x)

(Ma et al., KDD 2018, Eq. 5–6; W_g ∈ R^{E×D}, no bias, as in the paper; we add a bias, which
the softmax makes harmless and which lets a gate start from a learned prior.)

Expert collapse — every row routed to the same expert(s) — shows in two entropies, both in
nats and reported next to log E, their maximum:

- ``entropy``: mean over rows of H(g(x)) (low: each row commits to few experts);
- ``usage_entropy``: H of the gate averaged over rows (low: the same few experts for all rows).

In evaluation mode a gate accumulates these over every batch it sees; ``pop_stats()`` returns
and resets them (the trainer logs them per validation pass, see :func:`collect_gate_stats`).

Shape:
    x (B, D), experts (B, E, H) → mixed (B, H); weights (B, E)

>>> import torch
>>> gate = Gate(4, 3)
>>> w = gate.weights(torch.randn(5, 4))
>>> torch.allclose(w.sum(-1), torch.ones(5))
True
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn


def entropy(p: torch.Tensor) -> torch.Tensor:
    """H(p) = −Σ p log p along the last dimension (0 log 0 = 0)."""
    return -(p * p.clamp_min(1e-12).log()).sum(-1)


class Gate(nn.Module):
    """``softmax(W x + b)`` over `num_experts`, with evaluation-time usage statistics."""

    def __init__(self, in_dim: int, num_experts: int, *, label: str = "") -> None:
        super().__init__()
        self.linear = nn.Linear(in_dim, num_experts)
        self.num_experts = num_experts
        self.label = label  # the name its statistics are reported under (e.g. the task's)
        self._reset()

    def _reset(self) -> None:
        self._sum_w = torch.zeros(self.num_experts)
        self._sum_h = torch.zeros(())
        self._rows = 0

    def weights(self, x: torch.Tensor) -> torch.Tensor:
        w = torch.softmax(self.linear(x).float(), dim=-1)  # (B, E)
        if not self.training:
            self._record(w.detach())
        return w

    def forward(self, x: torch.Tensor, experts: torch.Tensor) -> torch.Tensor:
        """Mix expert outputs (B, E, H) with this gate's weights for `x` → (B, H)."""
        w = self.weights(x).to(experts.dtype)
        return torch.einsum("be,beh->bh", w, experts)

    def _record(self, w: torch.Tensor) -> None:
        self._sum_w = self._sum_w.to(w.device) + w.sum(0)  # tensors: no host sync per batch
        self._sum_h = self._sum_h.to(w.device) + entropy(w).sum()
        self._rows += w.shape[0]

    def pop_stats(self) -> dict[str, Any] | None:
        """Mean weights, mean entropy and usage entropy since the last call (None if no rows)."""
        if self._rows == 0:
            return None
        mean = (self._sum_w / self._rows).cpu()
        out = {
            "weights": [round(float(v), 4) for v in mean],
            "entropy": float(self._sum_h) / self._rows,
            "usage_entropy": float(entropy(mean)),
            "max_entropy": math.log(self.num_experts),
        }
        self._reset()
        return out


def collect_gate_stats(model: nn.Module) -> dict[str, dict[str, Any]]:
    """``{gate label: stats}`` of every :class:`Gate` in `model` that saw rows (resets them)."""
    out = {}
    for name, module in model.named_modules():
        if isinstance(module, Gate):
            stats = module.pop_stats()
            if stats is not None:
                out[module.label or name] = stats
    return out
