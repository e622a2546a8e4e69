"""Exact maximum-inner-product top-k over the catalogue, in batches of queries.

``top_k(q) = argtop_k_j ⟨q, e_j⟩`` over items 1..I not excluded, computed as one matrix
product per batch of queries, so memory is (batch, I + 1), never (users, items).
"""

from __future__ import annotations

import torch


@torch.no_grad()
def exact_topk(
    queries: torch.Tensor, items: torch.Tensor, k: int, *, exclude: torch.Tensor | None = None, batch_size: int = 1024
) -> tuple[torch.Tensor, torch.Tensor]:
    """Scores and ids of the `k` best items per query; the padding row 0 never appears.

    Shape: queries (U, D); items (I + 1, D); exclude (U, I + 1) bool or None (True = never
    return). Returns scores (U, k) float and ids (U, k) int64, best first; when fewer than k
    items are allowed the tail has score −inf.

    Example:
        >>> items = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.7, 0.7]])
        >>> exact_topk(torch.tensor([[1.0, 0.2]]), items, 2)[1].tolist()
        [[1, 3]]
    """
    if k < 1 or k > items.shape[0] - 1:
        raise ValueError(f"k must be in [1, {items.shape[0] - 1}], got {k=}")
    out_s, out_i = [], []
    for start in range(0, queries.shape[0], batch_size):
        scores = queries[start : start + batch_size] @ items.T  # (b, I + 1)
        scores[:, 0] = float("-inf")
        if exclude is not None:
            scores = scores.masked_fill(exclude[start : start + batch_size], float("-inf"))
        s, i = scores.topk(k, dim=1)
        out_s.append(s)
        out_i.append(i)
    return torch.cat(out_s), torch.cat(out_i)
