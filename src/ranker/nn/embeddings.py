"""Categorical feature encoders: plain tables, the hashing trick, and Unified Embeddings.

All three share one interface, so the ranker and the history encoders never care which is used:

- ``lookup(owner, ids)`` embeds ids of any shape ``(*)`` → ``(*, dim_of(owner))``, where
  ``owner`` is the feature whose vocabulary / hash space the ids belong to (features with
  ``vocab_from`` and a history's items share their owner's rows);
- ``forward(batch)`` returns one (B, d) field per categorical and multi-valued feature, in
  layout order; bags are the masked mean of their values (an empty bag gives zeros).

Plain tables read vocabulary ids (0 pad, 1 OOV, 2 missing, 3.. known; see
:mod:`ranker.data.vocab`); the hashing encoders read raw stable ids (``ids="hash"``
preprocessing), so values first seen after training still get rows.

Shape:
    ``cat/<f>`` (B,) → (B, d_f); ``multi/<f>`` (B, L) with ``multi_mask/<f>`` → (B, d_f)
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ranker.data.layout import Layout
from ranker.nn.gather import gather_rows
from ranker.nn.hashing import HashEmbedding, bucket
from ranker.nn.unified import FeatureCollisions, UnifiedEmbedding, collision_stats


class CategoricalEncoder(nn.Module):
    """Base: fields for the layout's categorical and multi-valued features."""

    ids = "vocab"  # the preprocessing id mode this encoder reads

    def __init__(self, layout: Layout) -> None:
        super().__init__()
        self.categorical = dict(layout.categorical)
        self.multi = dict(layout.multi)

    def lookup(self, owner: str, ids: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def collisions(self, values: dict[str, torch.Tensor]) -> dict[str, FeatureCollisions]:
        """Per owner, how often distinct train values share rows (none for plain tables)."""
        return {o: FeatureCollisions(distinct=int(torch.unique(v).numel()), intra=0.0, inter=0.0)
                for o, v in values.items()}

    def values_by_owner(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The ids each owner's rows serve in `batch` (bag padding excluded)."""
        out: dict[str, list[torch.Tensor]] = {}
        for name, owner in self.categorical.items():
            out.setdefault(owner, []).append(batch[f"cat/{name}"].reshape(-1))
        for name, owner in self.multi.items():
            out.setdefault(owner, []).append(batch[f"multi/{name}"][batch[f"multi_mask/{name}"]])
        return {o: torch.unique(torch.cat(v)) for o, v in out.items()}

    def dim_of(self, owner: str) -> int:
        raise NotImplementedError

    def field_dims(self) -> list[int]:
        return [self.dim_of(o) for o in self.categorical.values()] + [self.dim_of(o) for o in self.multi.values()]

    @property
    def num_fields(self) -> int:
        return len(self.categorical) + len(self.multi)

    def forward(self, batch: dict[str, torch.Tensor]) -> list[torch.Tensor]:
        fields = [self.lookup(owner, batch[f"cat/{name}"]) for name, owner in self.categorical.items()]
        for name, owner in self.multi.items():
            fields.append(masked_mean(self.lookup(owner, batch[f"multi/{name}"]), batch[f"multi_mask/{name}"]))
        return fields


class FeatureEmbeddings(CategoricalEncoder):
    """One ``nn.Embedding`` per vocabulary owner (row 0 = padding, kept at zero)."""

    def __init__(self, layout: Layout, dim: int) -> None:
        super().__init__(layout)
        self.tables = nn.ModuleDict(
            {owner: nn.Embedding(size, dim, padding_idx=0) for owner, size in layout.vocab_sizes.items()}
        )
        for owner in self.tables:
            weight = self.table(owner).weight
            nn.init.normal_(weight, std=0.05)
            with torch.no_grad():
                weight[0].zero_()
        self.dim = dim

    def table(self, owner: str) -> nn.Embedding:
        table = self.tables[owner]
        assert isinstance(table, nn.Embedding)
        return table

    def lookup(self, owner: str, ids: torch.Tensor) -> torch.Tensor:
        return self.table(owner)(ids)

    def dim_of(self, owner: str) -> int:
        return self.dim


class HashedEmbeddings(CategoricalEncoder):
    """Per-owner hashing trick tables with ``ceil(memory × V_owner)`` rows each."""

    ids = "hash"

    def __init__(self, layout: Layout, dim: int, *, memory: float = 1.0, seed: int = 0) -> None:
        super().__init__(layout)
        self.tables = nn.ModuleDict({
            owner: HashEmbedding(max(1, math.ceil(memory * size)), dim, seed=seed)
            for owner, size in layout.vocab_sizes.items()
        })
        self.dim = dim

    def lookup(self, owner: str, ids: torch.Tensor) -> torch.Tensor:
        return self.tables[owner](ids)

    def collisions(self, values: dict[str, torch.Tensor]) -> dict[str, FeatureCollisions]:
        """Intra-feature only: each feature has its own table, so features never share rows."""
        out = {}
        for owner, ids in values.items():
            table = self.tables[owner]
            assert isinstance(table, HashEmbedding)
            mapper = _SingleProbe(table)
            out[owner] = collision_stats(mapper, {owner: ids})[owner]
        return out

    def dim_of(self, owner: str) -> int:
        return self.dim


class UnifiedEmbeddings(CategoricalEncoder):
    """One shared table; owner t reads ``k_t`` rows of width ``dim // probes`` per value.

    Rows: ``ceil(memory × Σ_owner V_owner × dim / width)``, i.e. ``memory`` times the plain
    tables' parameter count at the same per-feature output width.
    """

    ids = "hash"
    cat_seeds: torch.Tensor

    def __init__(self, layout: Layout, dim: int, *, probes: int = 2,
                 per_feature_probes: dict[str, int] | None = None, memory: float = 1.0, seed: int = 0) -> None:
        super().__init__(layout)
        width = max(1, dim // probes)
        k = {owner: (per_feature_probes or {}).get(owner, probes) for owner in layout.vocab_sizes}
        rows = max(1, math.ceil(memory * sum(layout.vocab_sizes.values()) * dim / width))
        self.table = UnifiedEmbedding(rows, width, k, seed=seed)
        # The single-valued features are looked up together: one hash and ONE gather for all
        # of them (the point of a unified table), padded to the largest k and sliced back.
        owners = list(self.categorical.values())
        self.cat_k = [k[o] for o in owners]
        seeds = torch.stack([self.table.seeds[self.table._index[o]] for o in owners]) if owners \
            else torch.zeros(0, 1, dtype=torch.int64)
        self.register_buffer("cat_seeds", seeds[:, : max(self.cat_k, default=1)], persistent=False)

    def forward(self, batch: dict[str, torch.Tensor]) -> list[torch.Tensor]:
        fields: list[torch.Tensor] = []
        if self.categorical:
            ids = torch.stack([batch[f"cat/{name}"] for name in self.categorical], dim=1)  # (B, F)
            rows = bucket(ids.unsqueeze(-1), self.cat_seeds, self.table.num_rows)  # (B, F, k_max)
            emb = gather_rows(self.table.weight, rows)  # (B, F, k_max, w)
            if all(k == rows.shape[-1] for k in self.cat_k):
                # views, not slices: a slice's backward writes a zero (B, F, k, w) per field
                fields = list(emb.flatten(2).unbind(1))  # (B, k·w) each
            else:
                fields = [emb[:, i, :k].flatten(1) for i, k in enumerate(self.cat_k)]
        for name, owner in self.multi.items():
            fields.append(masked_mean(self.lookup(owner, batch[f"multi/{name}"]), batch[f"multi_mask/{name}"]))
        return fields

    def lookup(self, owner: str, ids: torch.Tensor) -> torch.Tensor:
        return self.table(owner, ids)

    def collisions(self, values: dict[str, torch.Tensor]) -> dict[str, FeatureCollisions]:
        return collision_stats(self.table, values)

    def dim_of(self, owner: str) -> int:
        return self.table.output_dim(owner)


class _SingleProbe:
    """A hashing-trick table seen as a one-probe row mapper (for collision statistics)."""

    def __init__(self, table: HashEmbedding) -> None:
        self.table = table

    def rows(self, feature: str, ids: torch.Tensor) -> torch.Tensor:
        return self.table.rows(ids).unsqueeze(-1)  # (n, 1)


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over dim 1 of `values` where `mask` is true; rows with no true entry give zeros.

    Shape: values (B, L, d), mask (B, L) → (B, d).
    """
    m = mask.unsqueeze(-1).to(values.dtype)  # (B, L, 1)
    return (values * m).sum(1) / m.sum(1).clamp_min(1.0)
