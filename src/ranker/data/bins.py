"""Bin edges of a numerical feature fitted on train, and bin ids as categorical ids.

Gorishniy, Rubachev & Babenko, NeurIPS 2022, "On Embeddings for Numerical Features in Tabular
Deep Learning": ``compute_bins`` gives the edges ``b_0 < … < b_T`` that the piecewise linear
encoders (:mod:`ranker.nn.numerical`) read, from train quantiles (Section 3.2.1) or from a
target-aware decision tree (Section 3.2.2, "T-" variants). ``quantile_bin_ids`` turns values
into bin ids for the ``bins`` transform (a categorical feature). Fitting is numpy; the edges
are returned as a float32 tensor, ready to be a layer's buffer.
"""

from __future__ import annotations

import heapq

import numpy as np
import torch
from numpy.typing import ArrayLike
from torch import Tensor

from ranker.data.vocab import MISSING, RESERVED


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


def _tree_edges(x: np.ndarray, y: np.ndarray, n_bins: int, regression: bool, min_samples_leaf: int) -> np.ndarray:
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
