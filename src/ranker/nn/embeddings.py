"""Categorical feature encoders: plain tables, the hashing trick, and Unified Embeddings.

All three share one interface, so the ranker and the history encoders never care which is used:

- ``lookup(owner, ids)`` embeds ids of any shape ``(*)`` → ``(*, dim_of(owner))``, where
  ``owner`` is the feature whose vocabulary / hash space the ids belong to (features with
  ``vocab_from`` and a history's items share their owner's rows);
- ``forward(ids, bags)`` returns one (B, d) field per categorical and multi-valued feature, in
  the order of :class:`CategoricalFields`; bags are the masked mean of their values (an empty
  bag gives zeros). The model unpacks its batch into these tensors; encoders never see it.

Plain tables read vocabulary ids (0 pad, 1 OOV, 2 missing, 3.. known; see
:mod:`ranker.data.vocab`); the hashing encoders read raw stable ids (``ids="hash"``
preprocessing), so values first seen after training still get rows.

Shape:
    ids: one (B,) tensor per categorical feature → (B, d_f) each; bags: one (ids (B, L),
    mask (B, L)) pair per multi-valued feature → (B, d_f) each

>>> fields = CategoricalFields({"item": "item", "genre": "genre"}, {"tags": "genre"},
...                            {"item": 50, "genre": 10})
>>> enc = FeatureEmbeddings(fields, 4)
>>> tags, mask = torch.tensor([[3, 4, 0]]), torch.tensor([[True, True, False]])
>>> [f.shape for f in enc([torch.tensor([7]), torch.tensor([5])], [(tags, mask)])]
[torch.Size([1, 4]), torch.Size([1, 4]), torch.Size([1, 4])]
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from ranker.nn.gather import gather_rows
from ranker.nn.hashing import HashEmbedding, bucket
from ranker.nn.unified import FeatureCollisions, UnifiedEmbedding, collision_stats

Bag = tuple[torch.Tensor, torch.Tensor]  # ids (B, L), mask (B, L) bool: one multi-valued feature


@dataclass(frozen=True)
class CategoricalFields:
    """Which rows each field reads (sizes, no values); dict order is the field order."""

    categorical: dict[str, str]  # single-valued feature -> vocabulary owner
    multi: dict[str, str]  # multi-valued feature -> vocabulary owner
    vocab_sizes: dict[str, int]  # vocabulary owner -> rows


class CategoricalEncoder(nn.Module):
    """Base: one field per categorical and multi-valued feature."""

    ids = "vocab"  # the preprocessing id mode this encoder reads
    dim: int  # every owner's width, unless dim_of says otherwise

    def __init__(self, fields: CategoricalFields) -> None:
        super().__init__()
        self.categorical = dict(fields.categorical)
        self.multi = dict(fields.multi)

    def lookup(self, owner: str, ids: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def prefetch(self, lookups: Sequence[tuple[str, torch.Tensor]]) -> None:
        """(owner, ids) lookups that will follow the next ``forward``, for an encoder that batches
        them into its call (:class:`~ranker.nn.torchrec_tables.TorchrecEmbeddings`); a no-op here."""

    def collisions(self, values: dict[str, torch.Tensor]) -> dict[str, FeatureCollisions]:
        """Per owner, how often distinct train values share rows (none for plain tables)."""
        return {
            o: FeatureCollisions(distinct=int(torch.unique(v).numel()), intra=0.0, inter=0.0) for o, v in values.items()
        }

    def values_by_owner(self, ids: Sequence[torch.Tensor], bags: Sequence[Bag] = ()) -> dict[str, torch.Tensor]:
        """The distinct ids each owner's rows serve (bag padding excluded); inputs as ``forward``."""
        self._check(ids, bags)
        out: dict[str, list[torch.Tensor]] = {}
        for owner, values in zip(self.categorical.values(), ids, strict=True):
            out.setdefault(owner, []).append(values.reshape(-1))
        for owner, (values, mask) in zip(self.multi.values(), bags, strict=True):
            out.setdefault(owner, []).append(values[mask])
        return {o: torch.unique(torch.cat(v)) for o, v in out.items()}

    def dim_of(self, owner: str) -> int:
        return self.dim

    def field_dims(self) -> list[int]:
        return [self.dim_of(o) for o in self.categorical.values()] + [self.dim_of(o) for o in self.multi.values()]

    @property
    def num_fields(self) -> int:
        return len(self.categorical) + len(self.multi)

    def forward(self, ids: Sequence[torch.Tensor], bags: Sequence[Bag] = ()) -> list[torch.Tensor]:
        """ids[i] (B,) of the i-th categorical feature, bags[j] of the j-th multi-valued one."""
        self._check(ids, bags)
        fields = [self.lookup(owner, x) for owner, x in zip(self.categorical.values(), ids, strict=True)]
        return fields + self._bags(bags)

    def _bags(self, bags: Sequence[Bag]) -> list[torch.Tensor]:
        return [
            masked_mean(self.lookup(owner, values), mask)  # (B, d)
            for owner, (values, mask) in zip(self.multi.values(), bags, strict=True)
        ]

    def _check(self, ids: Sequence[torch.Tensor], bags: Sequence[Bag]) -> None:
        if len(ids) != len(self.categorical) or len(bags) != len(self.multi):
            raise ValueError(
                f"expected {len(self.categorical)} id tensors and {len(self.multi)} bags "
                f"({list(self.categorical)}, {list(self.multi)}); got {len(ids)} and {len(bags)}"
            )


class FeatureEmbeddings(CategoricalEncoder):
    """One ``nn.Embedding`` per vocabulary owner (row 0 = padding, kept at zero)."""

    def __init__(self, fields: CategoricalFields, dim: int) -> None:
        super().__init__(fields)
        self.tables = nn.ModuleDict(
            {owner: nn.Embedding(size, dim, padding_idx=0) for owner, size in fields.vocab_sizes.items()}
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


class HashedEmbeddings(CategoricalEncoder):
    """Per-owner hashing trick tables with ``ceil(memory × V_owner)`` rows each."""

    ids = "hash"

    def __init__(self, fields: CategoricalFields, dim: int, *, memory: float = 1.0, seed: int = 0) -> None:
        super().__init__(fields)
        self.tables = nn.ModuleDict(
            {
                owner: HashEmbedding(max(1, math.ceil(memory * size)), dim, seed=seed)
                for owner, size in fields.vocab_sizes.items()
            }
        )
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


class UnifiedEmbeddings(CategoricalEncoder):
    """One shared table; owner t reads ``k_t`` rows of width ``dim // probes`` per value.

    Rows: ``ceil(memory × Σ_owner V_owner × dim / width)``, i.e. ``memory`` times the plain
    tables' parameter count at the same per-feature output width.
    """

    ids = "hash"
    cat_seeds: torch.Tensor

    def __init__(
        self,
        fields: CategoricalFields,
        dim: int,
        *,
        probes: int = 2,
        per_feature_probes: dict[str, int] | None = None,
        memory: float = 1.0,
        seed: int = 0,
    ) -> None:
        super().__init__(fields)
        width = max(1, dim // probes)
        k = {owner: (per_feature_probes or {}).get(owner, probes) for owner in fields.vocab_sizes}
        rows = max(1, math.ceil(memory * sum(fields.vocab_sizes.values()) * dim / width))
        self.table = UnifiedEmbedding(rows, width, k, seed=seed)
        # The single-valued features are looked up together: one hash and ONE gather for all
        # of them (the point of a unified table), padded to the largest k and sliced back.
        owners = list(self.categorical.values())
        self.cat_k = [k[o] for o in owners]
        seeds = (
            torch.stack([self.table.seeds[self.table._index[o]] for o in owners])
            if owners
            else torch.zeros(0, 1, dtype=torch.int64)
        )
        self.register_buffer("cat_seeds", seeds[:, : max(self.cat_k, default=1)], persistent=False)

    def forward(self, ids: Sequence[torch.Tensor], bags: Sequence[Bag] = ()) -> list[torch.Tensor]:
        self._check(ids, bags)
        fields: list[torch.Tensor] = []
        if self.categorical:
            stacked = torch.stack(list(ids), dim=1)  # (B, F)
            rows = bucket(stacked.unsqueeze(-1), self.cat_seeds, self.table.num_rows)  # (B, F, k_max)
            emb = gather_rows(self.table.weight, rows)  # (B, F, k_max, w)
            if all(k == rows.shape[-1] for k in self.cat_k):
                # views, not slices: a slice's backward writes a zero (B, F, k, w) per field
                fields = list(emb.flatten(2).unbind(1))  # (B, k·w) each
            else:
                fields = [emb[:, i, :k].flatten(1) for i, k in enumerate(self.cat_k)]
        return fields + self._bags(bags)

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
