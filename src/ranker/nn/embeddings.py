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
        for table in self.tables.values():
            nn.init.normal_(table.weight, std=0.05)
            with torch.no_grad():
                table.weight[0].zero_()
        self.categorical = dict(layout.categorical)
        self.multi = dict(layout.multi)
        self.dim = dim

    def table(self, owner: str) -> nn.Embedding:
        return self.tables[owner]  # type: ignore[return-value]

    @property
    def num_fields(self) -> int:
        return len(self.categorical) + len(self.multi)

    def forward(self, batch: dict[str, torch.Tensor]) -> list[torch.Tensor]:
        fields = [self.tables[owner](batch[f"cat/{name}"]) for name, owner in self.categorical.items()]
        for name, owner in self.multi.items():
            ids = batch[f"multi/{name}"]  # (B, L)
            mask = (ids > 0).unsqueeze(-1).to(self.tables[owner].weight.dtype)  # (B, L, 1)
            summed = (self.tables[owner](ids) * mask).sum(1)  # (B, d)
            fields.append(summed / mask.sum(1).clamp_min(1.0))
        return fields
