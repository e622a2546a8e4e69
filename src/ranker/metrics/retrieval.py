"""Full-ranking retrieval metrics (HR@K, NDCG@K, MRR) for one held-out target item per user.

Rank rule (ties count against the target): the target's rank is 1 plus the number of other
items that are not excluded and score at least as high as the target::

    rank_u = 1 + #{j != t_u : not exclude[u, j] and scores[u, j] >= scores[u, t_u]}

The target itself is never excluded, even if its mask bit is set. Inputs are ranked in torch,
tensors on their own device (only the (U,) ranks come back to numpy), arrays on the CPU.
Ranks of several user batches can be concatenated and passed to :func:`metrics_from_ranks`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ranker.metrics.ranking import ArrayOrTensor, _to_numpy


def _check(scores: torch.Tensor, targets: torch.Tensor, exclude: torch.Tensor | None) -> None:
    """Raise ValueError unless scores is (U, I) without NaN, targets (U,) in [0, I) and exclude
    (U, I)."""
    shape = tuple(scores.shape)
    if len(shape) != 2:
        raise ValueError(f"scores must have shape (U, I), got {shape}")
    if tuple(targets.shape) != (shape[0],):
        raise ValueError(f"targets must have shape ({shape[0]},), got {tuple(targets.shape)}")
    t_range = (int(targets.min()), int(targets.max())) if targets.numel() else (0, 0)
    if shape[0] and (t_range[0] < 0 or t_range[1] >= shape[1]):
        raise ValueError(f"targets must be item indices in [0, {shape[1]}), got range {t_range}")
    if exclude is not None and tuple(exclude.shape) != shape:
        raise ValueError(f"exclude must have the shape of scores {shape}, got {tuple(exclude.shape)}")
    if torch.isnan(scores).any():
        raise ValueError("scores contain NaN")


@torch.no_grad()
def retrieval_ranks(scores: ArrayOrTensor, targets: ArrayOrTensor, exclude: ArrayOrTensor | None = None) -> np.ndarray:
    """1-based rank of each user's target item among the non-excluded items; ties count against.

    Definition::

        rank_u = 1 + #{j != t_u : not exclude[u, j] and scores[u, j] >= scores[u, t_u]}

    Shape:
        scores: (U, I) float, no NaN; targets: (U,) int in [0, I); exclude: (U, I) bool or
        None. Returns (U,) int64 numpy array.

    Example:
        >>> retrieval_ranks([[0.1, 0.9, 0.5], [0.3, 0.3, 0.2]], [1, 0])
        array([1, 2])
        >>> retrieval_ranks([[0.1, 0.9, 0.5], [0.3, 0.3, 0.2]], [1, 0],
        ...                 exclude=[[False, False, False], [True, True, False]])
        array([1, 1])
    """
    if not isinstance(scores, torch.Tensor):
        s = np.ascontiguousarray(scores)
        scores = torch.from_numpy(s if s.dtype.kind == "f" else s.astype(np.float64))
    t = torch.as_tensor(targets, device=scores.device).long().reshape(-1)
    ex = None if exclude is None else torch.as_tensor(exclude, device=scores.device).bool()
    _check(scores, t, ex)
    rows = torch.arange(scores.shape[0], device=scores.device)
    ahead = scores >= scores[rows, t].unsqueeze(1)
    if ex is not None:
        ahead &= ~ex
    ahead[rows, t] = False
    return (1 + ahead.sum(dim=1, dtype=torch.int64)).cpu().numpy()


def metrics_from_ranks(ranks: ArrayOrTensor, ks: Sequence[int] = (10, 50, 200)) -> dict[str, float]:
    """HR@K, NDCG@K for each K in ``ks``, and MRR, averaged over the given 1-based ranks.

    Definition, averaged over users::

        HR@K = 1[rank <= K];  NDCG@K = 1[rank <= K] / log2(rank + 1);  MRR = 1 / rank

    Keys are ordered ``HR@k1, NDCG@k1, HR@k2, ..., MRR``; values are ``nan`` for no ranks.

    Shape:
        ranks: (U,) int >= 1. Returns a dict of floats.

    Example:
        >>> m = metrics_from_ranks([1, 2, 4], ks=(1, 3))
        >>> {key: round(value, 4) for key, value in m.items()}
        {'HR@1': 0.3333, 'NDCG@1': 0.3333, 'HR@3': 0.6667, 'NDCG@3': 0.5436, 'MRR': 0.5833}
    """
    r = _to_numpy(ranks, np.int64)
    if (r < 1).any():
        raise ValueError("ranks must be >= 1")
    if any(int(k) != k or k < 1 for k in ks):
        raise ValueError(f"ks must be positive integers, got {tuple(ks)}")
    out: dict[str, float] = {}
    empty = r.size == 0
    for k in ks:  # a loop over the few cut-offs, not over users
        hit = r <= k
        out[f"HR@{k}"] = float("nan") if empty else float(hit.mean())
        gain = np.where(hit, 1.0 / np.log2(r + 1.0), 0.0)
        out[f"NDCG@{k}"] = float("nan") if empty else float(gain.mean())
    out["MRR"] = float("nan") if empty else float(np.mean(1.0 / r))
    return out


def retrieval_metrics(
    scores: ArrayOrTensor,
    targets: ArrayOrTensor,
    exclude: ArrayOrTensor | None = None,
    ks: Sequence[int] = (10, 50, 200),
) -> dict[str, float]:
    """HR@K, NDCG@K and MRR of each user's target item under full ranking with exclusions.

    Definition: ``metrics_from_ranks(retrieval_ranks(scores, targets, exclude), ks)``, i.e.
    with rank_u = 1 + #{j != t_u : not exclude[u, j] and scores[u, j] >= scores[u, t_u]},
    HR@K = mean 1[rank <= K], NDCG@K = mean 1[rank <= K] / log2(rank + 1), MRR = mean 1/rank.

    Shape:
        scores: (U, I) float (numpy or torch, any device); targets: (U,) int; exclude: (U, I)
        bool or None. Returns a dict of floats keyed ``HR@K``, ``NDCG@K``, ..., ``MRR``.

    Example:
        >>> retrieval_metrics([[0.1, 0.9, 0.5], [0.3, 0.3, 0.2]], [1, 0], ks=(1,))
        {'HR@1': 0.5, 'NDCG@1': 0.5, 'MRR': 0.75}
    """
    return metrics_from_ranks(retrieval_ranks(scores, targets, exclude), ks)
