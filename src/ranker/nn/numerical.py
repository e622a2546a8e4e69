"""Numerical features: bins, piecewise linear / periodic / linear embeddings, fitted transforms.

Gorishniy, Rubachev & Babenko, NeurIPS 2022, "On Embeddings for Numerical Features in Tabular
Deep Learning". Parameter-free encoders (``PiecewiseLinearEncoding``) are kept apart from
trainable embeddings, as in the paper's package ``rtdl_num_embeddings``:

* ``compute_bins``: bin edges ``b_0 < … < b_T`` per feature from train quantiles (Section
  3.2.1) or from a target-aware decision tree (Section 3.2.2, "T-" variants);
* ``PiecewiseLinearEncoding``: PLE (Eq. 1, :mod:`ranker.nn.functional`), many features at once;
* ``PiecewiseLinearEmbeddings``: PLE → per-feature linear → ReLU ("Q-LR" / "T-LR");
* ``PeriodicEmbeddings``: ``[sin(2π c x), cos(2π c x)]`` → linear → ReLU ("PLR", Section 3.3);
* ``LinearEmbeddings``: per-feature ``x·w_f + b_f`` ("L").

And numpy transforms fitted on train data, each a pure function or a small frozen dataclass
of fitted state: ``signed_log1p``, ``SigmoidSquash``, ``EmpiricalCDF``, ``quantile_bin_ids``.

Missing values and infinities: the encoders and embeddings need finite input (the caller
zero-fills NaN and adds a missing-indicator feature). The transforms map ±inf to finite values
(the CDF to 0 / 1, ``signed_log1p`` to ±log1p(max float64), the sigmoid to 0 / 1, the bin ids to
the first / last bin) and pass NaN through as NaN (``quantile_bin_ids``: NaN → the missing id).

Shape:
    encoders and embeddings: x (*, F) → (*, Σ_f T_f) or (*, F, d)
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from numpy.typing import ArrayLike
from torch import Tensor, nn

from ranker.data.vocab import MISSING, RESERVED
from ranker.nn.functional import check_edges, ple_clamp_bounds


def compute_bins(
    x: Tensor | np.ndarray,
    n_bins: int,
    *,
    method: str = "quantile",
    y: Tensor | np.ndarray | None = None,
    regression: bool = True,
    min_samples_leaf: int = 1,
) -> Tensor:
    """Bin edges ``b_0 < … < b_T`` (T ≤ n_bins) of one feature from its train values.

    ``method="quantile"``: the ``i/n_bins`` quantiles (i = 0..n_bins, linear interpolation)
    with duplicates removed, as in the paper's package (so T < n_bins for discrete features).
    ``method="tree"``: the thresholds of a decision tree on ``(x, y)`` grown best-first to at
    most `n_bins` leaves, plus ``min(x)`` and ``max(x)`` — the paper's target-aware bins. The
    split criterion is squared-error reduction; with ``regression=False`` y holds class labels
    and is one-hot encoded, whose summed squared error is the Gini impurity, so this equals
    sklearn's ``DecisionTreeClassifier(max_leaf_nodes=n_bins)`` split choice. A 2-D y (N, T)
    holds T targets (tasks): each column is one-hot encoded (or kept, for regression) and the
    criterion is summed over them, one tree for all tasks.

    Non-finite values (NaN, ±inf) are ignored. Returns float32; raises ValueError when fewer
    than two distinct finite values remain.

    Shape: x (N,) → (T+1,).

    >>> compute_bins(torch.tensor([1.0, 2.0, 2.0, 2.0, 3.0, float("nan")]), 4).tolist()
    [1.0, 2.0, 3.0]
    """
    if n_bins < 1:
        raise ValueError(f"{n_bins=} must be at least 1")
    values = np.asarray(x.detach().cpu().numpy() if isinstance(x, Tensor) else x, np.float64)
    if values.ndim != 1:
        raise ValueError(f"compute_bins takes one feature: {values.shape=} must be (N,)")
    keep = np.isfinite(values)
    finite = values[keep]
    if method == "quantile":
        if y is not None:
            raise ValueError(f"{method=} does not use y; pass method='tree' for target-aware bins")
        edges = np.quantile(finite, np.linspace(0.0, 1.0, n_bins + 1)) if finite.size else finite
    elif method == "tree":
        if y is None:
            raise ValueError(f"{method=} needs the train target y")
        target = np.asarray(y.detach().cpu().numpy() if isinstance(y, Tensor) else y)
        if target.ndim not in (1, 2) or target.shape[0] != values.shape[0]:
            raise ValueError(f"y must be (N,) or (N, T) with N = len(x): {target.shape=}, {values.shape=}")
        edges = _tree_edges(finite, target[keep], n_bins, regression, min_samples_leaf)
    else:
        raise ValueError(f"{method=} is not one of quantile, tree")
    out = torch.unique(torch.as_tensor(edges, dtype=torch.float32))  # sorted
    if out.numel() < 2:
        raise ValueError(
            f"cannot bin a feature with {finite.size} finite values of which "
            f"{np.unique(finite).size} distinct ({n_bins=}, {values.size} values in all)"
        )
    return out


def _best_split(xs: np.ndarray, ys: np.ndarray, min_leaf: int) -> tuple[float, int] | None:
    """Best squared-error split of sorted `xs` (targets `ys` (n, C)): (gain, left size)."""
    n = xs.size
    if n < 2 * max(min_leaf, 1):
        return None
    ys = ys - ys.mean(0)  # centred: fewer cancellation errors in Σy² − (Σy)²/n
    csum = np.cumsum(ys, 0)  # (n, C); row i-1 is Σy over the i leftmost values
    csq = np.cumsum((ys**2).sum(1))  # (n,)
    m = np.arange(1, n)  # left sizes 1..n-1
    left, right = csum[:-1], csum[-1] - csum[:-1]  # (n-1, C)
    sse_left = csq[:-1] - (left**2).sum(1) / m
    sse_right = (csq[-1] - csq[:-1]) - (right**2).sum(1) / (n - m)
    gain = csq[-1] - (csum[-1] ** 2).sum() / n - sse_left - sse_right  # parent SSE − children
    ok = (xs[1:] > xs[:-1]) & (m >= min_leaf) & (n - m >= min_leaf)
    if not ok.any():
        return None
    best = int(np.argmax(np.where(ok, gain, -np.inf)))
    if gain[best] <= 1e-12 * max(float(csq[-1]), 1.0):
        return None
    return float(gain[best]), best + 1


def _tree_edges(
    x: np.ndarray, y: np.ndarray, n_bins: int, regression: bool, min_samples_leaf: int
) -> np.ndarray:
    """Thresholds of a best-first regression tree with ≤ n_bins leaves, plus min and max."""
    if x.size == 0:
        return x
    order = np.argsort(x, kind="stable")
    xs = x[order]
    columns = y[order].reshape(len(order), -1)  # (n, T): one column per target
    if regression:
        ys = columns.astype(np.float64)
        if not np.isfinite(ys).all():
            raise ValueError("y must be finite where x is")
    else:
        parts = []
        for col in columns.T:
            _, labels = np.unique(col, return_inverse=True)
            parts.append(np.eye(labels.max() + 1)[labels])  # (n, C_t) one-hot
        ys = np.concatenate(parts, axis=1)
    edges = [xs[0], xs[-1]]
    heap: list[tuple[float, int, int, int]] = []  # (-gain, lo, hi, split)

    def push(lo: int, hi: int) -> None:
        split = _best_split(xs[lo:hi], ys[lo:hi], min_samples_leaf)
        if split is not None:
            heapq.heappush(heap, (-split[0], lo, hi, lo + split[1]))

    push(0, xs.size)
    while heap and len(edges) - 1 < n_bins:
        _, lo, hi, cut = heapq.heappop(heap)
        edges.append((xs[cut - 1] + xs[cut]) / 2)  # midpoint, as sklearn
        push(lo, cut)
        push(cut, hi)
    return np.asarray(edges)


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

    def __init__(
        self, edges: Sequence[Tensor], d_embedding: int, *, activation: bool = True
    ) -> None:
        super().__init__()
        if d_embedding < 1:
            raise ValueError(f"{d_embedding=} must be at least 1")
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
            raise ValueError(
                f"{n_features=}, {d_embedding=}, {n_frequencies=}, {sigma=} must be > 0"
            )
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
        if n_features < 1 or d_embedding < 1:
            raise ValueError(f"{n_features=} and {d_embedding=} must be at least 1")
        bound = d_embedding**-0.5
        self.weight = nn.Parameter(torch.empty(n_features, d_embedding).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(n_features, d_embedding).uniform_(-bound, bound))

    def forward(self, x: Tensor) -> Tensor:
        return torch.addcmul(self.bias, self.weight, x.unsqueeze(-1))  # (*, F, d)


# --- transforms fitted on train (numpy) ------------------------------------------------------

LOG1P_BOUND = math.log1p(np.finfo(np.float64).max)  # ≈ 709.78


def signed_log1p(x: ArrayLike) -> np.ndarray:
    """``sign(x)·log1p(|x|)``, clipped to ±log1p(max float64) so ±inf become finite; NaN stays."""
    x = np.asarray(x, dtype=np.float64)
    return np.clip(np.sign(x) * np.log1p(np.abs(x)), -LOG1P_BOUND, LOG1P_BOUND)


def sigmoid_squash(x: ArrayLike, a: float, b: float) -> np.ndarray:
    """``σ(a·x + b)`` computed as ``(1 + tanh((a·x + b)/2)) / 2`` (no overflow); ±inf → 0/1."""
    z = a * np.asarray(x, dtype=np.float64) + b
    return 0.5 * (1.0 + np.tanh(0.5 * z))


@dataclass(frozen=True)
class SigmoidSquash:
    """``σ(a·x + b)`` with ``a = 2 / IQR`` and ``b = −a · median`` of the finite train values.

    The median maps to 0.5 and, for a symmetric distribution, the quartiles to σ(±1) ≈ 0.27 /
    0.73. If the IQR is 0 the range (max − min) is used instead, and 1 if that is 0 too.

    >>> SigmoidSquash.fit([0.0, 1.0, 2.0, 3.0, 4.0]).transform([2.0, 3.0]).round(3).tolist()
    [0.5, 0.731]
    """

    a: float
    b: float

    @classmethod
    def fit(cls, x_train: ArrayLike) -> SigmoidSquash:
        x = _finite(x_train, "SigmoidSquash.fit")
        q25, median, q75 = np.quantile(x, [0.25, 0.5, 0.75])
        scale = (q75 - q25) or (x.max() - x.min()) or 1.0
        a = 2.0 / float(scale)
        return cls(a=a, b=-a * float(median))

    def transform(self, x: ArrayLike) -> np.ndarray:
        return sigmoid_squash(x, self.a, self.b)


@dataclass(frozen=True, eq=False)
class EmpiricalCDF:
    """``F(x) = P(X ≤ x) = |{train values ≤ x}| / n`` over the finite train values.

    ``searchsorted(side="right")`` counts ties as ≤, so F is right-continuous. −inf → 0,
    +inf → 1, NaN → NaN.

    >>> EmpiricalCDF.fit([1.0, 2.0, 2.0, 3.0]).transform([0.0, 1.0, 2.0, 2.5, 3.0]).tolist()
    [0.0, 0.25, 0.75, 0.75, 1.0]
    """

    sorted_values: np.ndarray  # (n,) float64, finite, ascending

    @classmethod
    def fit(cls, x_train: ArrayLike) -> EmpiricalCDF:
        return cls(sorted_values=np.sort(_finite(x_train, "EmpiricalCDF.fit")))

    def transform(self, x: ArrayLike) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        cdf = np.searchsorted(self.sorted_values, x, side="right") / self.sorted_values.size
        return np.where(np.isnan(x), np.nan, cdf)


def quantile_bin_ids(x: ArrayLike, edges: ArrayLike | Tensor) -> np.ndarray:
    """Bin of each value as a categorical id, with :mod:`ranker.data.vocab`'s reserved ids.

    Bin t (0-based) is ``[b_t, b_{t+1})`` (the last one closed) and gets id ``RESERVED + t``
    (3, 4, …); values below ``b_0`` / above ``b_T`` (±inf included) go to the first / last
    bin; NaN gets ``MISSING`` (2). An embedding table for it needs ``RESERVED + T`` rows.

    Shape: x (N,), edges (T+1,) → (N,) int64.

    >>> quantile_bin_ids([-9.0, 0.0, 1.0, 2.5, 9.0, float("nan")], [0.0, 1.0, 2.0, 3.0]).tolist()
    [3, 3, 4, 5, 5, 2]
    """
    x = np.asarray(x, dtype=np.float64)
    e = np.asarray(edges.detach().cpu() if isinstance(edges, Tensor) else edges, np.float64)
    if e.ndim != 1 or e.size < 2:
        raise ValueError(f"edges must be 1-D with at least 2 entries, got {e.shape=}")
    ids = RESERVED + np.searchsorted(e[1:-1], x, side="right")
    return np.where(np.isnan(x), MISSING, ids).astype(np.int64)


def _finite(x: ArrayLike, who: str) -> np.ndarray:
    values = np.asarray(x, dtype=np.float64).reshape(-1)
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        raise ValueError(f"{who}: no finite value among the {values.size} given")
    return finite
