"""Plain per-feature embedding tables for categorical and multi-valued categorical features.

Each vocabulary owner gets one table ``E ∈ R^{V×d}`` with row 0 the padding (kept at zero),
row 1 the out-of-vocabulary bucket and row 2 the missing value (see :mod:`ranker.data.vocab`).
Features that share a vocabulary (``vocab_from``, a history's ``item_feature``) share the table.
A multi-valued feature is the masked mean of its values' rows (an empty bag gives zeros).

Shape:
    ``cat/<f>`` (B,) → (B, d); ``multi/<f>`` (B, L) → (B, d)
"""

from __future__ import annotations

import torch
from torch import nn

from ranker.data.preprocess import Layout


class FeatureEmbeddings(nn.Module):
    """One ``nn.Embedding`` per vocabulary owner; returns one (B, d) field per feature."""

    def __init__(self, layout: Layout, dim: int) -> None:
        super().__init__()
        self.tables = nn.ModuleDict(
            {owner: nn.Embedding(size, dim, padding_idx=0) for owner, size in layout.vocab_sizes.items()}
        )
        for owner in self.tables:
            weight = self.table(owner).weight
            nn.init.normal_(weight, std=0.05)
            with torch.no_grad():
                weight[0].zero_()
        self.categorical = dict(layout.categorical)
        self.multi = dict(layout.multi)
        self.dim = dim

    def table(self, owner: str) -> nn.Embedding:
        table = self.tables[owner]
        assert isinstance(table, nn.Embedding)
        return table

    @property
    def num_fields(self) -> int:
        return len(self.categorical) + len(self.multi)

    def forward(self, batch: dict[str, torch.Tensor]) -> list[torch.Tensor]:
        fields = [self.table(owner)(batch[f"cat/{name}"]) for name, owner in self.categorical.items()]
        for name, owner in self.multi.items():
            fields.append(masked_mean(self.table(owner), batch[f"multi/{name}"]))  # (B, d)
        return fields


def masked_mean(table: nn.Embedding, ids: torch.Tensor) -> torch.Tensor:
    """Mean of the rows of `table` over the non-padding ids of each row; zeros if all padding.

    Row 0 (padding) of a table built with ``padding_idx=0`` stays zero, so the plain sum of the
    gathered rows is already the sum over real ids: no mask multiply. (``F.embedding_bag`` is
    not used: its CPU backward sorts every index and is ~10x slower here.)
    Shape: ids (B, L) → (B, d).
    """
    count = (ids > 0).sum(1, keepdim=True).clamp_min(1)  # (B, 1)
    return table(ids).sum(1) / count  # (B, d)
