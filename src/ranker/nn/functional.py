"""Stateless functions shared by the layers: piecewise linear encoding (PLE), argument checks.

Gorishniy, Rubachev & Babenko, NeurIPS 2022, "On Embeddings for Numerical Features in Tabular
Deep Learning", Section 3.2, Eq. 1. Given bin edges ``b_0 < b_1 < … < b_T`` of one feature,
``PLE(x) = [e_1, …, e_T]`` with

    e_t = 0                               if x < b_{t-1} and t > 1,
    e_t = 1                               if x ≥ b_t and t < T,
    e_t = (x − b_{t-1}) / (b_t − b_{t-1})  otherwise.

The conditions ``t > 1`` and ``t < T`` make the outer bins open-ended, exactly as in the paper
(and its reference package ``rtdl_num_embeddings``): below ``b_0`` the first component keeps
falling linearly (``e_1 < 0``, never clipped at 0), above ``b_T`` the last keeps rising
(``e_T > 1``, never clipped at 1); inner components are clipped to ``[0, 1]``. Equivalently,
with ``z_t = (x − b_{t-1}) / (b_t − b_{t-1})``:

    e_1 = min(z_1, 1),  e_t = clip(z_t, 0, 1) for 1 < t < T,  e_T = max(z_T, 0),

and for T = 1 the single component is ``z_1`` unclipped: min-max scaling
``(x − b_0) / (b_1 − b_0)``. The encoding is continuous and non-decreasing in x component by
component, and ``Σ_t e_t`` recovers the position of x on the bin axis. This module implements
the clipping with per-component bounds (``ple_clamp_bounds``) so one ``torch.clamp`` serves
any number of features with different bin counts.

>>> import torch
>>> piecewise_linear_encoding(torch.tensor([-1.0, 0.5, 2.5, 5.0]), torch.tensor([0.0, 1.0, 3.0]))
tensor([[-1.0000,  0.0000],
        [ 0.5000,  0.0000],
        [ 1.0000,  0.7500],
        [ 1.0000,  2.0000]])
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def ple_clamp_bounds(n_bins: Tensor, max_bins: int) -> tuple[Tensor, Tensor]:
    """Lower and upper clip bounds of each PLE component, padded to `max_bins` components.

    For a feature with ``T = n_bins[f]``: component 0 gets ``(-inf, 1)``, inner components
    ``(0, 1)``, component ``T-1`` gets ``(0, inf)`` (``(-inf, inf)`` when T = 1), and padding
    components ``t ≥ T`` get ``(0, 0)`` so they are exactly 0 whatever the input.

    Shape: n_bins (F,) int → lower (F, max_bins), upper (F, max_bins).
    """
    t = torch.arange(max_bins, device=n_bins.device)  # (T,)
    n = n_bins.to(t.device).unsqueeze(-1)  # (F, 1)
    lower = torch.where(t == 0, -math.inf, 0.0).expand(n.shape[0], max_bins)  # (F, T)
    upper = torch.where(t == n - 1, math.inf, 1.0)  # (F, T)
    upper = torch.where(t >= n, 0.0, upper)
    return lower.contiguous(), upper


def check_positive(**sizes: int | None) -> None:
    """Raise ValueError naming the first size below 1 (None: not set, allowed).

    >>> check_positive(dim=4, rank=None, num_layers=0)
    Traceback (most recent call last):
    ValueError: num_layers=0 must be >= 1
    """
    for name, value in sizes.items():
        if value is not None and value < 1:
            raise ValueError(f"{name}={value!r} must be >= 1")


def check_edges(edges: Tensor, *, name: str = "edges") -> None:
    """Raise ValueError unless `edges` is 1-D, finite, strictly increasing, with ≥ 2 entries."""
    if edges.dim() != 1 or edges.numel() < 2:
        raise ValueError(f"{name} must be 1-D with at least 2 entries, got shape {tuple(edges.shape)}")
    if not bool(torch.isfinite(edges).all()) or bool((edges.diff() <= 0).any()):
        raise ValueError(f"{name} must be finite and strictly increasing, got {edges.tolist()}")


def piecewise_linear_encoding(x: Tensor, edges: Tensor) -> Tensor:
    """PLE of one feature (module docstring, Eq. 1 of Gorishniy et al. 2022); x must be finite.

    Shape: x (N,), edges (T+1,) → (N, T).
    """
    check_edges(edges)
    n_bins = edges.numel() - 1
    lower, upper = ple_clamp_bounds(torch.tensor([n_bins]), n_bins)  # (1, T)
    z = (x.unsqueeze(-1) - edges[:-1]) / edges.diff()  # (N, T)
    return torch.clamp(z, min=lower[0].to(z), max=upper[0].to(z))
