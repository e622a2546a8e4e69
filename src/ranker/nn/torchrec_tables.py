"""Categorical tables held by a torchrec ``EmbeddingCollection`` (``kind: torchrec``).

The math is that of :class:`~ranker.nn.embeddings.FeatureEmbeddings` (one table per vocabulary
owner, row 0 = padding kept at zero, normal init σ = 0.05): ``E_f[v]``, or with ``table:
unified`` that of :class:`~ranker.nn.embeddings.UnifiedEmbeddings` (Coleman et al., NeurIPS 2023:
ONE table, owner ``t`` reading ``k_t`` hashed rows per value,
``e_t(v) = concat_j E[h_{t,j}(v)]``, the same hash functions, :class:`~ranker.nn.unified.ProbeHash`).
What differs is who holds the rows: a torchrec ``EmbeddingCollection`` (torchrec docs,
"EmbeddingCollection": one ``EmbeddingConfig`` per table, ids in as a ``KeyedJaggedTensor``, one
``JaggedTensor`` of vectors out per feature), the module that torchrec's
``DistributedModelParallel`` knows how to shard row-wise or table-wise over processes
(:mod:`ranker.distributed.sharding`; the DLRM paper, Naumov et al. 2019, §4, for the
model-parallel tables). The unified table, being one big table, is the one that most needs
row-wise sharding. This module stays pure: sharding replaces the collection from outside and
hands it back after training.

Every call embeds its ids in ONE collection call: ``forward`` sends every categorical feature and
bag at once, and the padding ids (0) of per-owner tables are not sent (their vectors are zeros). The tables are
trained by an optimizer fused into the collection's backward once sharded, so each table must be
looked up once per step: ``lookup`` calls made after ``prefetch`` (the history encoders' item
ids, sent with the forward's call) are answered from that call.

Tables are *declared* (on the meta device, no memory) until something needs their rows, so that
each process of a sharded run allocates only its own shard:

- :class:`~ranker.distributed.sharding.ShardedTables` fills each process's rows with
  :func:`init_rows`, whose values depend on the row, not on who holds it, so 1 and N processes
  start from the same tables;
- loading a state dict (a checkpoint, ``model.safetensors``) takes the file's tensors as the tables
  (no second copy);
- a forward or :meth:`TorchrecEmbeddings.weight` of an unsharded encoder allocates the whole tables
  with the same :func:`init_rows` (refused after sharded training: the trained rows are in the
  checkpoint, not here).

torchrec is an optional extra: :func:`require_torchrec` names the install command.

Shape:
    as :class:`~ranker.nn.embeddings.CategoricalEncoder`: ``lookup(owner, ids (*))`` → (*, d);
    ``forward`` → one (B, d) field per categorical and multi-valued feature.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ranker.errors import ConfigError
from ranker.nn.embeddings import Bag, CategoricalEncoder, CategoricalFields, masked_mean
from ranker.nn.unified import FeatureCollisions, ProbeHash, collision_stats

#: σ of the tables' normal init (as :class:`~ranker.nn.embeddings.FeatureEmbeddings`)
INIT_STD = 0.05
#: rows drawn from one generator by :func:`init_rows` (a shard's first and last blocks are drawn
#: whole and sliced)
INIT_BLOCK = 1 << 16

#: the table's name (and key) when every owner shares one (``table: unified``)
UNIFIED = "unified"

INSTALL = (
    "pip install --no-deps torchrec==1.8.0 fbgemm-gpu-cpu==1.8.0 && pip install tensordict pyre-extensions "
    "torchmetrics tqdm"
)


def require_torchrec(key: str = "model.encoders.categorical.kind") -> None:
    """Import torchrec and fbgemm (what ``kind: torchrec`` runs on); a one-line ConfigError naming
    `key` and the install command when they are missing or fail to load."""
    try:
        import fbgemm_gpu  # noqa: F401
        import torchrec  # noqa: F401
    except (ImportError, OSError) as exc:
        raise ConfigError(
            f"{key}: 'torchrec' needs the optional extra ranker[torchrec], which is not importable here "
            f"({type(exc).__name__}: {str(exc).splitlines()[0][:120] if str(exc) else 'no module'}); "
            f"install it after torch 2.13.0 with: {INSTALL}"
        ) from None


def init_rows(
    seed: int, table: int, start: int, stop: int, num_rows: int, dim: int, padding: bool = True
) -> torch.Tensor:
    """Rows ``[start, stop)`` of table number `table`'s initial weights: ``N(0, INIT_STD²)``, row 0
    zero when it is `padding`. Block ``b`` (rows ``b·INIT_BLOCK …``) comes from its own generator seeded by
    ``(seed, table, b)``, so a row's value does not depend on which rows are asked for together:
    a process filling its shard gets the rows of the whole table.

    >>> whole = init_rows(7, 0, 0, 10, 10, 3)
    >>> torch.equal(init_rows(7, 0, 4, 9, 10, 3), whole[4:9]), whole[0].abs().sum().item()
    (True, 0.0)

    Shape: → (stop − start, dim).
    """
    if not 0 <= start <= stop <= num_rows:
        raise ValueError(f"rows [{start}, {stop}) are not inside a table of {num_rows} rows")
    out = torch.empty(stop - start, dim)
    for block in range(start // INIT_BLOCK, -(-stop // INIT_BLOCK)):
        first, last = block * INIT_BLOCK, min((block + 1) * INIT_BLOCK, num_rows)
        generator = torch.Generator().manual_seed(hash((seed, table, block)) & (2**63 - 1))
        values = torch.randn(last - first, dim, generator=generator) * INIT_STD  # (rows of the block, d)
        lo, hi = max(start, first), min(stop, last)
        out[lo - start : hi - start] = values[lo - first : hi - first]
    if padding and start == 0 and stop > 0:
        out[0] = 0.0
    return out


@dataclass(frozen=True)
class TableTraining:
    """How sharded tables are placed and trained (the encoder config's part the engine reads).

    ``sharding``: ``auto`` (the planner chooses table-wise or row-wise per table), ``row_wise``
    or ``table_wise``; ``optimizer``: fbgemm's fused one (``rowwise_adagrad``, ``adagrad``,
    ``sgd``); ``lr``: None → the run's ``train.lr``.
    """

    sharding: str = "auto"
    optimizer: str = "rowwise_adagrad"
    lr: float | None = None
    eps: float = 1e-8


@dataclass(frozen=True)
class UnifiedLayout:
    """The one table every feature shares (Unified Embedding, Coleman et al., NeurIPS 2023; see
    :mod:`ranker.nn.unified`): owner ``t`` reads ``k_t`` rows of width ``dim // probes`` per value
    (``per_feature_probes`` overrides ``k``); the table has
    ``ceil(memory × Σ_owner V_owner × dim / width)`` rows, as :class:`~ranker.nn.embeddings.
    UnifiedEmbeddings` has."""

    probes: int = 2
    per_feature_probes: Mapping[str, int] = field(default_factory=dict)
    memory: float = 1.0
    seed: int = 0


class TorchrecEmbeddings(CategoricalEncoder):
    """The categorical tables held by a torchrec ``EmbeddingCollection``: one per vocabulary owner
    (row 0 = padding, zero, never looked up), or, with `unified`, ONE hashed table that every owner
    probes (the ids are then raw stable ids, ``ids = "hash"``, as for ``kind: unified``).

    >>> import pytest; _ = pytest.importorskip("torchrec")  # the optional extra
    >>> fields = CategoricalFields({"item": "item"}, {"tags": "genre"}, {"item": 50, "genre": 10})
    >>> enc = TorchrecEmbeddings(fields, 4)
    >>> tags, mask = torch.tensor([[3, 0]]), torch.tensor([[True, False]])
    >>> [f.shape for f in enc([torch.tensor([7])], [(tags, mask)])]
    [torch.Size([1, 4]), torch.Size([1, 4])]
    >>> enc.lookup("item", torch.tensor([[0, 7]]))[0, 0].abs().sum().item()  # padding
    0.0
    >>> shared = TorchrecEmbeddings(fields, 4, unified=UnifiedLayout(probes=2))  # rows of width 2
    >>> shared.names, shared.configs[0].num_embeddings, shared.dim_of("item")  # 60 values × 4 / 2
    (['unified'], 120, 4)
    >>> shared.lookup("item", torch.tensor([[5, 9]])).shape  # two probes of width 2 per value
    torch.Size([1, 2, 4])
    """

    def __init__(
        self,
        fields: CategoricalFields,
        dim: int,
        training: TableTraining | None = None,
        unified: UnifiedLayout | None = None,
    ) -> None:
        super().__init__(fields)
        require_torchrec()
        from torchrec.modules.embedding_configs import EmbeddingConfig
        from torchrec.modules.embedding_modules import EmbeddingCollection

        self.training_config = training or TableTraining()
        self.hash: ProbeHash | None = None
        if unified is None:
            self.dim, sizes = dim, dict(fields.vocab_sizes)
        else:
            self.ids = "hash"
            self.dim = max(1, dim // unified.probes)
            probes = {o: unified.per_feature_probes.get(o, unified.probes) for o in fields.vocab_sizes}
            rows = max(1, math.ceil(unified.memory * sum(fields.vocab_sizes.values()) * dim / self.dim))
            self.hash = ProbeHash(rows, probes, seed=unified.seed)
            sizes = {UNIFIED: rows}
        self.names = list(sizes)  # table order = the collection's feature order
        self.configs = [
            EmbeddingConfig(name=name, embedding_dim=self.dim, num_embeddings=size, feature_names=[name])
            for name, size in sizes.items()
        ]
        self.collection: nn.Module = EmbeddingCollection(tables=self.configs, device=torch.device("meta"))
        #: the tables' rows are not allocated (see the module docstring)
        self.declared = True
        #: set when the tables were trained sharded and handed back declared: their rows are in the
        #: run's checkpoint, so allocating fresh ones would silently drop the training
        self.released = False
        self.init_seed = int(torch.randint(0, 2**62, ()).item())  # the global RNG: same on every rank
        self._pending: list[tuple[str, torch.Tensor]] = []
        self._fetched: list[tuple[torch.Tensor, torch.Tensor]] = []

    def dim_of(self, owner: str) -> int:
        return self.dim if self.hash is None else self.hash.probes[owner] * self.dim

    def collisions(self, values: dict[str, torch.Tensor]) -> dict[str, FeatureCollisions]:
        return super().collisions(values) if self.hash is None else collision_stats(self.hash, values)

    def initial_rows(self, name: str, start: int, stop: int) -> torch.Tensor:
        """Rows ``[start, stop)`` of table `name` before training (:func:`init_rows`; row 0 is
        padding in per-owner tables only)."""
        i = self.names.index(name)
        return init_rows(self.init_seed, i, start, stop, self.configs[i].num_embeddings, self.dim, self.hash is None)

    def _allocate(self, tables: Callable[[str], torch.Tensor]) -> None:
        """Give every declared table its rows: ``tables(name)`` → (V, d), taken as the parameter."""
        for name in self.names:
            embedding = self.collection.embeddings[name]  # type: ignore[index, union-attr]
            embedding.weight = nn.Parameter(tables(name))  # type: ignore[union-attr]
        self.declared = False

    def _materialize(self) -> None:
        if not self.declared:
            return
        if self.released:
            raise RuntimeError(
                "these tables were trained sharded and handed back without their rows; load the run's "
                "weights (model.safetensors, or the checkpoint) to use them"
            )
        self._allocate(lambda name: self.initial_rows(name, 0, self.configs[self.names.index(name)].num_embeddings))

    def _apply(self, fn: Callable[[torch.Tensor], torch.Tensor], recurse: bool = True) -> TorchrecEmbeddings:
        if self.declared:  # meta rows: nothing to move (``.to`` would fail on them); the hash seeds move
            if self.hash is not None:
                self.hash._apply(fn, recurse)
            return self
        return super()._apply(fn, recurse)  # type: ignore[return-value]

    def _load_from_state_dict(self, state_dict: Mapping[str, Any], prefix: str, *args: Any, **kwargs: Any) -> None:
        """Declared tables take the loaded tensors as their rows (no second copy of a big table)."""
        keys = {name: f"{prefix}collection.embeddings.{name}.weight" for name in self.names}
        if self.declared and all(k in state_dict for k in keys.values()):
            self._allocate(lambda name: state_dict[keys[name]])
            self.released = False
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def weight(self, name: str) -> torch.Tensor:
        """The (V, d) table `name` (an owner, or ``"unified"``; unsharded collection only)."""
        self._materialize()
        return self.collection.embeddings[name].weight  # type: ignore[index, union-attr, no-any-return]

    def prefetch(self, lookups: Sequence[tuple[str, torch.Tensor]]) -> None:
        """Send these (owner, ids) lookups with the next ``forward``'s collection call; a later
        ``lookup(owner, ids)`` of the same tensor object is answered from it."""
        self._pending = list(lookups)

    def lookup(self, owner: str, ids: torch.Tensor) -> torch.Tensor:
        for i, (key, vectors) in enumerate(self._fetched):
            if key is ids:
                del self._fetched[i]
                return vectors
        return self.embed([(owner, ids)])[0]

    def forward(self, ids: Sequence[torch.Tensor], bags: Sequence[Bag] = ()) -> list[torch.Tensor]:
        self._check(ids, bags)
        pending, self._pending = self._pending, []
        requests = [*zip(self.categorical.values(), ids, strict=True)]
        requests += [(owner, values) for owner, (values, _) in zip(self.multi.values(), bags, strict=True)]
        out = self.embed([*requests, *pending])
        n_cat, n_req = len(self.categorical), len(requests)
        self._fetched = [(x, v) for (_, x), v in zip(pending, out[n_req:], strict=True)]
        bag_fields = [masked_mean(v, mask) for v, (_, mask) in zip(out[n_cat:n_req], bags, strict=True)]  # (B, d)
        return out[:n_cat] + bag_fields

    def _rows(self, owner: str, ids: torch.Tensor) -> tuple[str, torch.Tensor, torch.Tensor | None]:
        """(the table, its rows to look up (n,), which are looked up (n,) bool; None: all) of `ids`:
        per-owner tables skip the padding id 0; the unified table reads every value's k probes."""
        if self.hash is None:
            flat = ids.reshape(-1)
            return owner, flat, flat != 0
        return UNIFIED, self.hash.rows(owner, ids).reshape(-1), None

    def embed(self, requests: Sequence[tuple[str, torch.Tensor]]) -> list[torch.Tensor]:
        """``[lookup(owner, ids) for owner, ids in requests]`` in ONE collection call: each table's
        looked-up rows of every request form one jagged row of its key (stride 1)."""
        from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

        if not _is_sharded(self.collection):
            self._materialize()
        rows = [self._rows(owner, ids) for owner, ids in requests]
        per_table: dict[str, list[torch.Tensor]] = {name: [] for name in self.names}
        for name, flat, keep in rows:
            per_table[name].append(flat if keep is None else flat[keep])
        values = [torch.cat(v) if v else torch.zeros(0, dtype=torch.int64) for v in per_table.values()]
        device = requests[0][1].device if requests else torch.device("cpu")
        kjt = KeyedJaggedTensor.from_lengths_sync(
            keys=self.names,
            values=torch.cat(values).to(device=device, dtype=torch.int64),
            lengths=torch.tensor([len(v) for v in values], dtype=torch.int32, device=device),
        )
        result = self.collection(kjt)
        vectors = {name: result[name].values() for name in self.names}  # (n_table, d)
        offsets = dict.fromkeys(self.names, 0)
        out = []
        for (name, flat, keep), (_, ids) in zip(rows, requests, strict=True):
            n = flat.numel() if keep is None else int(keep.sum())
            found = vectors[name][offsets[name] : offsets[name] + n]  # (n, d)
            offsets[name] += n
            if keep is not None:  # the padding's vectors are zeros
                found = found.new_zeros(keep.numel(), self.dim).index_put((keep.nonzero().squeeze(-1),), found)
            out.append(found.reshape(*ids.shape, -1))  # (*, d) or (*, k·d)
        return out


def _is_sharded(collection: nn.Module) -> bool:
    """Whether torchrec's DistributedModelParallel has replaced `collection` by its sharded twin."""
    from torchrec.modules.embedding_modules import EmbeddingCollection

    return not isinstance(collection, EmbeddingCollection)
