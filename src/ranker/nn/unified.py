"""Unified Embedding: one hashed table shared by every categorical feature (feature multiplexing).

Coleman et al., NeurIPS 2023, "Unified Embedding: Battle-Tested Feature Representations for
Web-Scale ML Systems". One table ``E ∈ R^{M×d}`` serves all features; feature ``t`` probes it
with its own ``k_t`` hash functions and a value ``v`` is embedded as (paper Section 3, the
multi-probe variant)

    e_t(v) = concat[E[h_{t,1}(v)], …, E[h_{t,k_t}(v)]] ∈ R^{k_t·d},
    h_{t,j}(v) = mix64(v, s_{t,j}) mod M            (see :mod:`ranker.hashing`),

with per-(feature, probe) seeds derived deterministically from the table seed, a stable hash
of the feature name and the probe index:
``s_{t,j} = mix64(j, mix64(blake2b64(t), seed))``. Collisions *between* features are absorbed
downstream (the next layer has different weights per feature position); collisions *within*
a feature are made rare by the k probes: two values share the whole embedding only if all k
rows coincide.

Deviation / note: the paper's "rows of width d/k" variant (each probe returns a d/k slice so
that the output width is d) is this module with ``dim = d // k``; the output width is always
``k_t · dim``. The seeds are recomputed from the constructor arguments, so they are a
non-persistent buffer (not in ``state_dict``): the same arguments give the same hashing.

Shape:
    forward: ids (*) int64 → (*, k_t·dim); rows: ids (*) → (*, k_t);
    forward_bag: ids (B, L), mask (B, L) bool → (B, k_t·dim)

>>> import torch
>>> ue = UnifiedEmbedding(1000, 8, {"user": 2, "genre": 1}, seed=0)
>>> ue("user", torch.tensor([3, 4])).shape, ue.output_dim("genre")
(torch.Size([2, 16]), 8)
>>> ids, mask = torch.tensor([[5, 6, 0]]), torch.tensor([[True, True, False]])
>>> ue.forward_bag("genre", ids, mask).shape
torch.Size([1, 8])
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol, TypedDict

import torch
from torch import Tensor, nn

from ranker.hashing import bucket, mix64, stable_string_hash
from ranker.nn.functional import check_positive
from ranker.nn.gather import gather_rows
from ranker.nn.hashing import INIT_STD


def probe_seeds(seed: int, feature: str, k: int) -> Tensor:
    """``s_{t,j} = mix64(j, mix64(blake2b64(t), seed))`` for ``j = 0..k-1``. Shape: (k,)."""
    name_hash = torch.from_numpy(stable_string_hash([feature]))  # (1,)
    feature_seed = int(mix64(name_hash, seed).item())
    return mix64(torch.arange(k, dtype=torch.int64), feature_seed)  # (k,)


class ProbeHash(nn.Module):
    """The rows ``h_{t,j}(v)`` that feature ``t``'s ``k_t`` probes read in a table of `num_rows`
    rows, without the table (a torchrec-held unified table reads them too:
    :class:`~ranker.nn.torchrec_tables.TorchrecEmbeddings`)."""

    seeds: Tensor

    def __init__(self, num_rows: int, feature_probes: Mapping[str, int], *, seed: int = 0) -> None:
        super().__init__()
        check_positive(num_rows=num_rows)
        if not feature_probes:
            raise ValueError(f"{feature_probes=} must name at least one feature")
        bad = {f: k for f, k in feature_probes.items() if k < 1}
        if bad:
            raise ValueError(f"every feature needs at least one probe, got {bad}")
        self.num_rows = num_rows
        self.probes = dict(feature_probes)
        self._index = {name: i for i, name in enumerate(self.probes)}
        seeds = torch.zeros(len(self.probes), max(self.probes.values()), dtype=torch.int64)
        for i, (name, k) in enumerate(self.probes.items()):
            seeds[i, :k] = probe_seeds(seed, name, k)
        self.register_buffer("seeds", seeds, persistent=False)  # (T, k_max)

    def _check(self, feature: str) -> str:
        if feature not in self._index:
            raise KeyError(f"{feature=} is not one of {sorted(self.probes)}")
        return feature

    def rows(self, feature: str, ids: Tensor) -> Tensor:
        """Row of each probe: ``h_{t,j}(v)``. Shape: ids (*) → (*, k_t)."""
        i = self._index[self._check(feature)]
        seeds = self.seeds[i, : self.probes[feature]]  # (k,)
        return bucket(ids.unsqueeze(-1), seeds, self.num_rows)  # (*, k)


class UnifiedEmbedding(ProbeHash):
    """One ``num_rows × dim`` table; feature ``t`` reads ``k_t`` hashed rows per value."""

    def __init__(self, num_rows: int, dim: int, feature_probes: Mapping[str, int], *, seed: int = 0) -> None:
        super().__init__(num_rows, feature_probes, seed=seed)
        check_positive(dim=dim)
        self.dim = dim
        self.weight = nn.Parameter(torch.empty(num_rows, dim))
        nn.init.normal_(self.weight, std=INIT_STD)

    def output_dim(self, feature: str) -> int:
        """Width of one value's embedding, ``k_t · dim``."""
        return self.probes[self._check(feature)] * self.dim

    def forward(self, feature: str, ids: Tensor) -> Tensor:
        rows = self.rows(feature, ids)  # (*, k)
        return gather_rows(self.weight, rows).flatten(-2)  # (*, k·d)

    def forward_bag(self, feature: str, ids: Tensor, mask: Tensor, mode: str = "mean") -> Tensor:
        """Pool a multi-valued feature over its real values (``mask`` True); empty bags give 0.

        Padded slots are zeroed before pooling, so neither they nor their rows' gradients
        count; ``mean`` divides by the number of real values.
        Shape: ids (B, L), mask (B, L) → (B, k_t·dim).
        """
        if mode not in ("mean", "sum"):
            raise ValueError(f"{mode=} is not one of mean, sum")
        if ids.shape != mask.shape or ids.dim() != 2:
            raise ValueError(f"ids and mask must both be (B, L): {ids.shape=}, {mask.shape=}")
        emb = self(feature, ids).masked_fill(~mask.bool().unsqueeze(-1), 0.0)  # (B, L, k·d)
        pooled = emb.sum(1)  # (B, k·d)
        if mode == "mean":
            pooled = pooled / mask.sum(1, keepdim=True).clamp_min(1)
        return pooled


class RowMapper(Protocol):
    """Anything that maps a feature's ids to their k probe rows (a ``UnifiedEmbedding``)."""

    def rows(self, feature: str, ids: Tensor) -> Tensor: ...


class FeatureCollisions(TypedDict):
    distinct: int  # number of distinct values given for the feature
    intra: float  # share of them that share ALL k rows (probe by probe) with another value
    inter: float  # share of them whose every probe row is also used by another feature


def collision_stats(ue: RowMapper, values_by_feature: Mapping[str, Tensor]) -> dict[str, FeatureCollisions]:
    """How often the hashing of `ue` merges values, per feature, over the given (train) values.

    For feature t with distinct values V_t and rows r(v) = (h_{t,1}(v), …, h_{t,k}(v)):

    * ``intra`` = |{v ∈ V_t : ∃ v' ∈ V_t, v' ≠ v, r(v') = r(v)}| / |V_t| — values whose whole
      embedding (all k rows, in probe order) is identical to another value's of the same
      feature, i.e. the values the model cannot tell apart. Rows equal up to order, e.g.
      (1, 0) and (0, 1), are different embeddings and do not count.
    * ``inter`` = |{v ∈ V_t : every row r_j(v) is a row of some value of another feature}| /
      |V_t| (another feature's value, at any of its probe positions): the values none of
      whose rows belong to feature t alone. The paper argues these collisions are tolerable
      since the downstream layer has per-feature weights.

    Vectorised: ``torch.unique`` on the (n, k) row tuples (intra); each feature's used rows are
    made unique, concatenated and counted, so a row's count is the number of features using
    it, and a row is shared with another feature iff that count exceeds 1 (inter).
    Features with no values get ``distinct = 0`` and shares 0.

    >>> one_row = UnifiedEmbedding(1, 2, {"a": 2, "b": 1})  # every value on row 0
    >>> collision_stats(one_row, {"a": torch.arange(3), "b": torch.tensor([7])})["a"]
    {'distinct': 3, 'intra': 1.0, 'inter': 1.0}
    """
    rows = {
        name: ue.rows(name, torch.unique(values.reshape(-1).to(torch.int64)))  # (n, k)
        for name, values in values_by_feature.items()
    }
    if not rows:
        return {}
    used = torch.cat([torch.unique(r) for r in rows.values()])
    all_rows, n_features_using = torch.unique(used, return_counts=True)  # sorted
    stats: dict[str, FeatureCollisions] = {}
    for name, r in rows.items():
        n = r.shape[0]
        if n == 0:
            stats[name] = FeatureCollisions(distinct=0, intra=0.0, inter=0.0)
            continue
        _, inverse, counts = torch.unique(r, dim=0, return_inverse=True, return_counts=True)
        intra = (counts[inverse] > 1).double().mean().item()
        users = n_features_using[torch.searchsorted(all_rows, r)]  # (n, k), ≥ 1
        inter = (users > 1).all(dim=1).double().mean().item()
        stats[name] = FeatureCollisions(distinct=n, intra=intra, inter=inter)
    return stats
