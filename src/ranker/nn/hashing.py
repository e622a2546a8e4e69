"""The hashing-trick embedding; the hash functions themselves live in :mod:`ranker.hashing`."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ranker.hashing import bucket
from ranker.nn.functional import check_positive

INIT_STD = 0.05
"""Standard deviation of the normal init of hashed tables (as ``FeatureEmbeddings``)."""


class HashEmbedding(nn.Module):
    """Hashing trick: one table per feature, the value's row is its hash mod the table size.

    Weinberger et al., ICML 2009, "Feature Hashing for Large Scale Multitask Learning":
    ``e(v) = E[h(v) mod M]`` with ``E ∈ R^{M×d}``. Any int64 id has a row, so values unseen in
    training never fail (they share rows with seen ones). Ids are raw values (strings first go
    through :func:`ranker.hashing.stable_string_hash`), not vocabulary ids.

    Shape:
        ids (*) int64 → (*, dim)

    >>> import torch
    >>> HashEmbedding(100, 4, seed=7)(torch.tensor([[3, 10**12]])).shape
    torch.Size([1, 2, 4])
    """

    def __init__(self, num_rows: int, dim: int, *, seed: int = 0) -> None:
        super().__init__()
        check_positive(num_rows=num_rows, dim=dim)
        self.weight = nn.Parameter(torch.empty(num_rows, dim))
        nn.init.normal_(self.weight, std=INIT_STD)
        self.num_rows, self.dim, self.seed = num_rows, dim, seed

    def rows(self, ids: Tensor) -> Tensor:
        """Row index of each id. Shape: (*) → (*)."""
        return bucket(ids, self.seed, self.num_rows)

    def forward(self, ids: Tensor) -> Tensor:
        return nn.functional.embedding(self.rows(ids), self.weight)  # (*, d)
