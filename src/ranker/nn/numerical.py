"""Numerical features: piecewise linear / periodic / linear embeddings (torch modules only).

Gorishniy, Rubachev & Babenko, NeurIPS 2022, "On Embeddings for Numerical Features in Tabular
Deep Learning". Parameter-free encoders (``PiecewiseLinearEncoding``) are kept apart from
trainable embeddings, as in the paper's package ``rtdl_num_embeddings``:

* ``PiecewiseLinearEncoding``: PLE (Eq. 1, :mod:`ranker.nn.functional`), many features at once;
* ``PiecewiseLinearEmbeddings``: PLE → per-feature linear → ReLU ("Q-LR" / "T-LR");
* ``PeriodicEmbeddings``: ``[sin(2π c x), cos(2π c x)]`` → linear → ReLU ("PLR", Section 3.3);
* ``LinearEmbeddings``: per-feature ``x·w_f + b_f`` ("L").

The bin edges are fitted on train by :func:`ranker.data.bins.compute_bins` (quantile or tree
bins) and passed in as tensors; the numpy transforms fitted on train live in
:mod:`ranker.data.numeric`. The encoders and embeddings need finite input (the caller
zero-fills NaN and adds a missing-indicator feature).

Shape:
    encoders and embeddings: x (*, F) → (*, Σ_f T_f) or (*, F, d)
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ranker.nn.functional import check_edges, check_positive, ple_clamp_bounds


class _FeatureLinear(nn.Module):
    """F separate linear maps: (*, F, d_in) → (*, F, d_out); init U(±1/√d_in) as nn.Linear."""

    def __init__(self, n_features: int, d_in: int, d_out: int) -> None:
        super().__init__()
        bound = d_in**-0.5
        self.weight = nn.Parameter(torch.empty(n_features, d_in, d_out).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(n_features, d_out).uniform_(-bound, bound))

    def forward(self, x: Tensor) -> Tensor:
        return torch.einsum("...fi,fio->...fo", x, self.weight) + self.bias  # (*, F, d_out)


class PiecewiseLinearEncoding(nn.Module):
    """PLE of F features at once, concatenated; no parameters (edges are buffers).

    Feature f has ``T_f = len(edges[f]) - 1`` components (Eq. 1 of Gorishniy et al. 2022, rule
    in :mod:`ranker.nn.functional`). The features are padded to ``T_max`` components whose clip
    bounds are (0, 0), so one broadcast + one clamp encodes all features; ``forward`` then drops
    the padding. Input must be finite.

    Shape:
        x (*, F) → (*, Σ_f T_f); ``padded(x)``: (*, F) → (*, F, T_max) with zeros as padding

    >>> ple = PiecewiseLinearEncoding([torch.tensor([0.0, 1.0, 3.0]), torch.tensor([0.0, 2.0])])
    >>> ple(torch.tensor([[2.5, 1.0]]))
    tensor([[1.0000, 0.7500, 0.5000]])
    """

    left: Tensor
    width: Tensor
    lower: Tensor
    upper: Tensor
    mask: Tensor

    def __init__(self, edges: Sequence[Tensor]) -> None:
        super().__init__()
        if not edges:
            raise ValueError(f"{edges=}: need the bin edges of at least one feature")
        edges = [torch.as_tensor(e, dtype=torch.get_default_dtype()) for e in edges]
        for f, e in enumerate(edges):
            check_edges(e, name=f"edges[{f}]")
        self.n_bins = tuple(e.numel() - 1 for e in edges)
        t_max = max(self.n_bins)
        left, width = torch.zeros(len(edges), t_max), torch.ones(len(edges), t_max)
        for f, e in enumerate(edges):
            left[f, : e.numel() - 1], width[f, : e.numel() - 1] = e[:-1], e.diff()
        lower, upper = ple_clamp_bounds(torch.tensor(self.n_bins), t_max)
        self.register_buffer("left", left)  # (F, T_max)
        self.register_buffer("width", width)
        self.register_buffer("lower", lower)
        self.register_buffer("upper", upper)
        self.register_buffer("mask", torch.arange(t_max) < torch.tensor(self.n_bins)[:, None])

    @property
    def out_dim(self) -> int:
        return sum(self.n_bins)

    def padded(self, x: Tensor) -> Tensor:
        z = (x.unsqueeze(-1) - self.left) / self.width  # (*, F, T_max)
        return torch.clamp(z, min=self.lower, max=self.upper)

    def forward(self, x: Tensor) -> Tensor:
        return self.padded(x)[..., self.mask]  # (*, Σ T_f)


class PiecewiseLinearEmbeddings(nn.Module):
    """PLE → per-feature linear → ReLU: the paper's Q-LR (quantile bins) / T-LR (tree bins).

    ``e_f = ReLU(W_f · PLE_f(x_f) + b_f)`` with ``W_f ∈ R^{d×T_f}`` separate per feature
    (``activation=False`` gives Q-L / T-L). Padded PLE components are exactly 0, so the padded
    rows of W_f neither contribute nor receive gradient. Init U(±1/√T_max), as the package.

    Shape:
        x (*, F) → (*, F, d_embedding)

    >>> m = PiecewiseLinearEmbeddings([torch.tensor([0.0, 1.0, 3.0])] * 2, 4)
    >>> m(torch.zeros(5, 2)).shape
    torch.Size([5, 2, 4])
    """

    def __init__(self, edges: Sequence[Tensor], d_embedding: int, *, activation: bool = True) -> None:
        super().__init__()
        check_positive(d_embedding=d_embedding)
        self.encoding = PiecewiseLinearEncoding(edges)
        self.linear = _FeatureLinear(len(edges), max(self.encoding.n_bins), d_embedding)
        self.activation = nn.ReLU() if activation else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return self.activation(self.linear(self.encoding.padded(x)))  # (*, F, d)


class PeriodicEmbeddings(nn.Module):
    """Periodic features → linear → ReLU: the paper's PLR (Section 3.3).

    ``v_f = [sin(2π c_{f,i} x_f), cos(2π c_{f,i} x_f)]_{i=1..k}`` with ``c_{f,i} ~ N(0, σ²)``
    (trained, or fixed when ``learned=False``), then ``ReLU(W_f v_f + b_f)``. ``lite=True``
    shares one linear layer across features (PLR(lite), from the same authors' TabR paper).
    σ matters: the package's default is 0.01 for standardised inputs.

    Shape:
        x (*, F) → (*, F, d_embedding)

    >>> PeriodicEmbeddings(3, 8, n_frequencies=4)(torch.zeros(2, 3)).shape
    torch.Size([2, 3, 8])
    """

    frequencies: Tensor

    def __init__(
        self,
        n_features: int,
        d_embedding: int,
        *,
        n_frequencies: int = 16,
        sigma: float = 1.0,
        lite: bool = False,
        learned: bool = True,
    ) -> None:
        super().__init__()
        if min(n_features, d_embedding, n_frequencies) < 1 or sigma <= 0:
            raise ValueError(f"{n_features=}, {d_embedding=}, {n_frequencies=}, {sigma=} must be > 0")
        freq = torch.randn(n_features, n_frequencies) * sigma  # (F, k)
        if learned:
            self.frequencies = nn.Parameter(freq)
        else:
            self.register_buffer("frequencies", freq)
        self.linear: nn.Linear | _FeatureLinear = (
            nn.Linear(2 * n_frequencies, d_embedding)
            if lite
            else _FeatureLinear(n_features, 2 * n_frequencies, d_embedding)
        )

    def forward(self, x: Tensor) -> Tensor:
        angle = 2 * math.pi * self.frequencies * x.unsqueeze(-1)  # (*, F, k)
        periodic = torch.cat([torch.sin(angle), torch.cos(angle)], -1)  # (*, F, 2k)
        return torch.relu(self.linear(periodic))  # (*, F, d)


class LinearEmbeddings(nn.Module):
    """Per-feature linear embedding ``e_f = x_f · w_f + b_f`` (the paper's "L").

    Shape:
        x (*, F) → (*, F, d_embedding)

    >>> LinearEmbeddings(3, 4)(torch.zeros(2, 3)).shape
    torch.Size([2, 3, 4])
    """

    def __init__(self, n_features: int, d_embedding: int) -> None:
        super().__init__()
        check_positive(n_features=n_features, d_embedding=d_embedding)
        bound = d_embedding**-0.5
        self.weight = nn.Parameter(torch.empty(n_features, d_embedding).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(n_features, d_embedding).uniform_(-bound, bound))

    def forward(self, x: Tensor) -> Tensor:
        return torch.addcmul(self.bias, self.weight, x.unsqueeze(-1))  # (*, F, d)
