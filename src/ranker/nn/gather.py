"""Row gather from an embedding table with a cheap backward on CPU.

``gather_rows(weight, rows)`` equals ``F.embedding(rows, weight)``. On CPU, PyTorch's dense
embedding backward sorts the indices; for the unified table, where one call gathers every
probe of every single-valued feature (B·F·k indices into one table), profiling C-Frappe showed
it costing twice the per-feature tables' backward. Here the backward is one ``index_add_``
(sequential, hence deterministic, on CPU):

    ∂L/∂W = Σ_n e_{rows_n} (∂L/∂out_n)ᵀ

On other devices ``index_add_`` uses atomics (non-deterministic), so ``F.embedding`` is used.

Shape:
    weight (R, d), rows (*) int64 → (*, d)

>>> import torch
>>> w = torch.arange(6.0).view(3, 2).requires_grad_()
>>> out = gather_rows(w, torch.tensor([[2, 0], [2, 2]]))
>>> out.sum().backward()
>>> w.grad.tolist()
[[1.0, 1.0], [0.0, 0.0], [3.0, 3.0]]
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


class _GatherRows(torch.autograd.Function):
    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, weight: Tensor, rows: Tensor) -> Tensor:
        ctx.save_for_backward(rows)
        ctx.num_rows = weight.shape[0]  # type: ignore[attr-defined]
        return weight.index_select(0, rows.reshape(-1)).view(*rows.shape, weight.shape[1])

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: Tensor) -> tuple[Tensor, None]:
        (rows,) = ctx.saved_tensors  # type: ignore[attr-defined]
        width = grad.shape[-1]
        grad_weight = grad.new_zeros(ctx.num_rows, width)  # type: ignore[attr-defined]
        grad_weight.index_add_(0, rows.reshape(-1), grad.reshape(-1, width))
        return grad_weight, None


def gather_rows(weight: Tensor, rows: Tensor) -> Tensor:
    """``weight[rows]`` with an ``index_add_`` backward on CPU (module docstring)."""
    if weight.device.type != "cpu":
        return F.embedding(rows, weight)
    out: Tensor = _GatherRows.apply(weight, rows)
    return out
