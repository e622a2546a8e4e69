"""Pointwise ranking metrics: AUC, GAUC, log loss and accuracy, exact and vectorised with numpy.

AUC is the Mann-Whitney statistic with ties counted as 1/2 (average ranks), i.e. the
probability that a random positive scores above a random negative.

GAUC follows the protocol of Zhou et al. 2018 (Deep Interest Network, DIN): AUC per user
averaged with weights = the user's number of rows, over users with both labels. Groups with a
single class are skipped entirely, also from the weights.

All functions accept numpy arrays, Python lists or torch tensors (any shape; they are
flattened) and return a Python ``float``; empty input gives ``nan``.
"""

from __future__ import annotations

from typing import Any, TypeAlias

import numpy as np
import torch
from numpy.typing import ArrayLike

ArrayOrTensor: TypeAlias = ArrayLike | torch.Tensor


def _to_numpy(x: ArrayOrTensor, dtype: Any = None) -> np.ndarray:
    """Flat numpy copy/view of ``x`` (tensors are detached and moved to CPU first)."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
        if x.dtype in (torch.float16, torch.bfloat16):
            x = x.float()
        x = x.numpy()
    return np.asarray(x, dtype=dtype).reshape(-1)


def _labels_scores(labels: ArrayOrTensor, scores: ArrayOrTensor) -> tuple[np.ndarray, np.ndarray]:
    """Validated flat (int64 0/1 labels, float64 scores) of equal length without NaN scores."""
    y = _to_numpy(labels, np.float64)
    s = _to_numpy(scores, np.float64)
    if y.shape != s.shape:
        raise ValueError(f"labels has {y.size} elements but scores has {s.size}")
    if not np.isin(y, (0.0, 1.0)).all():
        raise ValueError("labels must be 0 or 1")
    if np.isnan(s).any():
        raise ValueError("scores contain NaN")
    return y.astype(np.int64), s


def grouped_auc(y: np.ndarray, s: np.ndarray, g: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-group (AUC, rows) for group ids ``g`` in 0..G-1, all present; AUC is nan for 1 class.

    One lexsort by (group, score); each run of equal (group, score) gets the average of its
    1-based within-group ranks, kept doubled so that all sums stay exact int64.
    """
    n = y.size
    order = np.lexsort((s, g))
    gs, ss, ys = g[order], s[order], y[order]
    new_group = np.ones(n, dtype=bool)
    new_group[1:] = gs[1:] != gs[:-1]
    new_run = new_group.copy()
    new_run[1:] |= ss[1:] != ss[:-1]
    group_start = np.flatnonzero(new_group)
    run_start = np.flatnonzero(new_run)
    run_end = np.append(run_start[1:], n)
    # 0-based positions start..end-1 -> 1-based ranks start+1..end; doubled mean = start+end+1.
    twice_rank = run_start + run_end + 1 - 2 * group_start[gs[run_start]]
    twice_rank = np.repeat(twice_rank, run_end - run_start)
    rows = np.diff(np.append(group_start, n))
    pos = np.add.reduceat(ys, group_start)
    neg = rows - pos
    twice_pos_rank_sum = np.add.reduceat(twice_rank * ys, group_start)
    with np.errstate(divide="ignore", invalid="ignore"):
        group_auc = (twice_pos_rank_sum - pos * (pos + 1)) / (2 * pos * neg)
    group_auc[(pos == 0) | (neg == 0)] = np.nan
    return group_auc, rows


def auc(labels: ArrayOrTensor, scores: ArrayOrTensor) -> float:
    """Area under the ROC curve, ties counted as 1/2.

    Definition, with P positives and N negatives::

        AUC = (sum_{p in pos} sum_{n in neg} 1[s_p > s_n] + 0.5 * 1[s_p == s_n]) / (P * N)
            = (sum of the positives' average ranks - P (P + 1) / 2) / (P * N)

    ``nan`` if only one class (or nothing) is present.

    Shape:
        labels: (N,) 0/1; scores: (N,) real, no NaN. Returns a float.

    Example:
        >>> auc([0, 1, 1], [0.1, 0.4, 0.35])
        1.0
        >>> auc([0, 1, 0, 1], [0.2, 0.2, 0.1, 0.3])
        0.875
    """
    y, s = _labels_scores(labels, scores)
    if y.size == 0:
        return float("nan")
    group_auc, _ = grouped_auc(y, s, np.zeros(y.size, dtype=np.int64))
    return float(group_auc[0])


def gauc(labels: ArrayOrTensor, scores: ArrayOrTensor, groups: ArrayOrTensor) -> float:
    """Group AUC: per-group AUC averaged with weights = the group's number of rows.

    Definition, over the groups G* that contain both labels (others are skipped, also from
    the weights)::

        GAUC = sum_{g in G*} n_g * AUC_g / sum_{g in G*} n_g

    ``nan`` if no group has both labels. ``groups`` may hold integers or strings.

    Shape:
        labels: (N,) 0/1; scores: (N,) real; groups: (N,) any sortable ids. Returns a float.

    Example:
        >>> gauc([0, 1, 1, 0, 1, 1], [0.1, 0.9, 0.8, 0.7, 0.2, 0.3], ["a", "a", "a", "b", "b", "b"])
        0.5
        >>> gauc([0, 1, 1, 1], [0.1, 0.9, 0.5, 0.5], [7, 7, 8, 8])
        1.0
    """
    y, s = _labels_scores(labels, scores)
    keys = _to_numpy(groups)
    if keys.shape != y.shape:
        raise ValueError(f"labels has {y.size} elements but groups has {keys.size}")
    if y.size == 0:
        return float("nan")
    _, g = np.unique(keys, return_inverse=True)
    group_auc, rows = grouped_auc(y, s, g.reshape(-1).astype(np.int64))
    ok = ~np.isnan(group_auc)
    if not ok.any():
        return float("nan")
    return float(np.dot(group_auc[ok], rows[ok]) / rows[ok].sum())


def gndcg(labels: ArrayOrTensor, scores: ArrayOrTensor, groups: ArrayOrTensor, k: int = 10) -> float:
    """Group NDCG@k: each group's rows ranked by score, NDCG@k of its binary labels, averaged
    over the groups with a positive (Järvelin & Kekäläinen, "Cumulated gain-based evaluation of
    IR techniques", TOIS 2002). Ties count against the positives (a negative of equal score ranks
    first), as the list metrics' ranks do.

    Definition, for a group with P positives at 1-based positions r_1 … r_P::

        NDCG@k = Σ_{r_i ≤ k} 1 / log2(1 + r_i)  /  Σ_{j=1}^{min(P, k)} 1 / log2(1 + j)

    ``nan`` if no group has a positive. For one positive per group (a request's candidates and
    its one target) it is the list NDCG@k over the requests whose target is among the rows.

    Shape:
        labels: (N,) 0/1; scores: (N,) real; groups: (N,) any sortable ids. Returns a float.

    Example:
        >>> gndcg([0, 1, 0, 0, 1], [0.9, 0.5, 0.1, 0.7, 0.7], ["a", "a", "a", "b", "b"])  # (1/log2(3) + 1/log2(3)) / 2
        0.6309297535714575
        >>> gndcg([1, 0, 0], [0.1, 0.2, 0.3], [1, 1, 1], k=2)  # the positive at 3 > k
        0.0
    """
    y, s = _labels_scores(labels, scores)
    keys = _to_numpy(groups)
    if keys.shape != y.shape:
        raise ValueError(f"labels has {y.size} elements but groups has {keys.size}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if y.size == 0:
        return float("nan")
    _, g = np.unique(keys, return_inverse=True)
    g = g.reshape(-1)
    order = np.lexsort((y, -s, g))  # by group, score descending, negatives first among equals
    gs, ys = g[order], y[order] > 0
    start = np.flatnonzero(np.r_[True, gs[1:] != gs[:-1]])
    position = np.arange(y.size) - np.repeat(start, np.diff(np.r_[start, y.size])) + 1
    gain = np.where(ys & (position <= k), 1.0 / np.log2(1.0 + position), 0.0)
    dcg = np.add.reduceat(gain, start)
    positives = np.add.reduceat(ys.astype(np.int64), start)
    ideal_cum = np.cumsum(1.0 / np.log2(2.0 + np.arange(k)))
    has = positives > 0
    if not has.any():
        return float("nan")
    ideal = ideal_cum[np.minimum(positives[has], k) - 1]
    return float(np.mean(dcg[has] / ideal))


def logloss(labels: ArrayOrTensor, probs: ArrayOrTensor, eps: float = 1e-7) -> float:
    """Mean binary cross entropy, with probabilities clipped to [eps, 1 - eps].

    Definition, with p_i = clip(probs_i, eps, 1 - eps)::

        logloss = -1/N sum_i (y_i log p_i + (1 - y_i) log(1 - p_i))

    Labels may be soft (any value in [0, 1]). ``nan`` for empty input.

    Shape:
        labels: (N,) in [0, 1]; probs: (N,) in [0, 1]. Returns a float.

    Example:
        >>> round(logloss([1, 0], [0.5, 0.5]), 6)  # log 2
        0.693147
        >>> logloss([1, 0], [1.0, 0.0]) < 1e-6  # clipped, finite
        True
    """
    if not 0.0 < eps < 0.5:
        raise ValueError(f"eps must be in (0, 0.5), got {eps}")
    y = _to_numpy(labels, np.float64)
    p = _to_numpy(probs, np.float64)
    if y.shape != p.shape:
        raise ValueError(f"labels has {y.size} elements but probs has {p.size}")
    if not ((y >= 0) & (y <= 1)).all():
        raise ValueError("labels must be in [0, 1]")
    if np.isnan(p).any():
        raise ValueError("probs contain NaN")
    if y.size == 0:
        return float("nan")
    p = np.clip(p, eps, 1.0 - eps)
    return float(-np.mean(y * np.log(p) + (1.0 - y) * np.log1p(-p)))


def accuracy(labels: ArrayOrTensor, probs: ArrayOrTensor, threshold: float = 0.5) -> float:
    """Fraction of rows whose thresholded prediction equals the label.

    Definition (a probability equal to the threshold predicts 0, as in Keras/torchmetrics)::

        accuracy = 1/N sum_i 1[1[probs_i > threshold] == y_i]

    ``nan`` for empty input.

    Shape:
        labels: (N,) 0/1; probs: (N,) real. Returns a float.

    Example:
        >>> accuracy([1, 0, 1, 0], [0.9, 0.2, 0.4, 0.5])
        0.75
    """
    y, p = _labels_scores(labels, probs)
    if y.size == 0:
        return float("nan")
    return float(np.mean((p > threshold) == (y == 1)))
