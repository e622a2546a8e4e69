"""Plain per-feature tables held by a torchrec ``EmbeddingCollection`` (``kind: torchrec``).

The math is that of :class:`~ranker.nn.embeddings.FeatureEmbeddings` (one table per vocabulary
owner, row 0 = padding kept at zero, normal init σ = 0.05): ``E_f[v]``. What differs is who holds
the rows: a torchrec ``EmbeddingCollection`` (torchrec docs, "EmbeddingCollection": one
``EmbeddingConfig`` per table, ids in as a ``KeyedJaggedTensor``, one ``JaggedTensor`` of
vectors out per feature), the module that torchrec's ``DistributedModelParallel`` knows how to
shard row-wise or table-wise over processes (:mod:`ranker.distributed.sharding`; the DLRM
paper, Naumov et al. 2019, §4, for the model-parallel tables). This module stays pure: sharding
replaces the collection from outside and hands it back unsharded after training.

Every call embeds its ids in ONE collection call: ``forward`` sends every categorical feature and
bag at once, and the padding ids (0) are not sent (their vectors are zeros). The tables are
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

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ranker.errors import ConfigError
from ranker.nn.embeddings import Bag, CategoricalEncoder, CategoricalFields, masked_mean

#: σ of the tables' normal init (as :class:`~ranker.nn.embeddings.FeatureEmbeddings`)
INIT_STD = 0.05
#: rows drawn from one generator by :func:`init_rows` (a shard's first and last blocks are drawn
#: whole and sliced)
INIT_BLOCK = 1 << 16

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


def init_rows(seed: int, table: int, start: int, stop: int, num_rows: int, dim: int) -> torch.Tensor:
    """Rows ``[start, stop)`` of table number `table`'s initial weights: ``N(0, INIT_STD²)``, row 0
    (padding) zero. Block ``b`` (rows ``b·INIT_BLOCK …``) comes from its own generator seeded by
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
    if start == 0 and stop > 0:
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


class TorchrecEmbeddings(CategoricalEncoder):
    """One torchrec table per vocabulary owner (row 0 = padding, zero, never looked up).

    >>> import pytest; _ = pytest.importorskip("torchrec")  # the optional extra
    >>> fields = CategoricalFields({"item": "item"}, {"tags": "genre"}, {"item": 50, "genre": 10})
    >>> enc = TorchrecEmbeddings(fields, 4)
    >>> tags, mask = torch.tensor([[3, 0]]), torch.tensor([[True, False]])
    >>> [f.shape for f in enc([torch.tensor([7])], [(tags, mask)])]
    [torch.Size([1, 4]), torch.Size([1, 4])]
    >>> enc.lookup("item", torch.tensor([[0, 7]]))[0, 0].abs().sum().item()  # padding
    0.0
    """

    def __init__(self, fields: CategoricalFields, dim: int, training: TableTraining | None = None) -> None:
        super().__init__(fields)
        require_torchrec()
        from torchrec.modules.embedding_configs import EmbeddingConfig
        from torchrec.modules.embedding_modules import EmbeddingCollection

        self.dim = dim
        self.owners = list(fields.vocab_sizes)  # table order = the collection's feature order
        self.training_config = training or TableTraining()
        self.configs = [
            EmbeddingConfig(name=owner, embedding_dim=dim, num_embeddings=size, feature_names=[owner])
            for owner, size in fields.vocab_sizes.items()
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

    def initial_rows(self, owner: str, start: int, stop: int) -> torch.Tensor:
        """Rows ``[start, stop)`` of `owner`'s table before training (:func:`init_rows`)."""
        size = self.configs[self.owners.index(owner)].num_embeddings
        return init_rows(self.init_seed, self.owners.index(owner), start, stop, size, self.dim)

    def _allocate(self, tables: Callable[[str], torch.Tensor]) -> None:
        """Give every declared table its rows: ``tables(owner)`` → (V, d), taken as the parameter."""
        for owner in self.owners:
            embedding = self.collection.embeddings[owner]  # type: ignore[index, union-attr]
            embedding.weight = nn.Parameter(tables(owner))  # type: ignore[union-attr]
        self.declared = False

    def _materialize(self) -> None:
        if not self.declared:
            return
        if self.released:
            raise RuntimeError(
                "these tables were trained sharded and handed back without their rows; load the run's "
                "weights (model.safetensors, or the checkpoint) to use them"
            )
        self._allocate(lambda owner: self.initial_rows(owner, 0, self.configs[self.owners.index(owner)].num_embeddings))

    def _apply(self, fn: Callable[[torch.Tensor], torch.Tensor], recurse: bool = True) -> TorchrecEmbeddings:
        if self.declared:  # meta rows: nothing to move (``.to`` would fail on them)
            return self
        return super()._apply(fn, recurse)  # type: ignore[return-value]

    def _load_from_state_dict(self, state_dict: Mapping[str, Any], prefix: str, *args: Any, **kwargs: Any) -> None:
        """Declared tables take the loaded tensors as their rows (no second copy of a big table)."""
        keys = {owner: f"{prefix}collection.embeddings.{owner}.weight" for owner in self.owners}
        if self.declared and all(k in state_dict for k in keys.values()):
            self._allocate(lambda owner: state_dict[keys[owner]])
            self.released = False
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def weight(self, owner: str) -> torch.Tensor:
        """The (V, d) table of `owner` (unsharded collection only)."""
        self._materialize()
        return self.collection.embeddings[owner].weight  # type: ignore[index, union-attr, no-any-return]

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

    def embed(self, requests: Sequence[tuple[str, torch.Tensor]]) -> list[torch.Tensor]:
        """``[lookup(owner, ids) for owner, ids in requests]`` in ONE collection call: each table's
        non-padding ids of every request form one jagged row of its key (stride 1)."""
        from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

        if not _is_sharded(self.collection):
            self._materialize()
        flat = [ids.reshape(-1) for _, ids in requests]
        keep = [x != 0 for x in flat]
        per_owner: dict[str, list[torch.Tensor]] = {o: [] for o in self.owners}
        for (owner, _), x, k in zip(requests, flat, keep, strict=True):
            per_owner[owner].append(x[k])
        values = [torch.cat(v) if v else torch.zeros(0, dtype=torch.int64) for v in per_owner.values()]
        device = flat[0].device if flat else torch.device("cpu")
        kjt = KeyedJaggedTensor.from_lengths_sync(
            keys=self.owners,
            values=torch.cat(values).to(device=device, dtype=torch.int64),
            lengths=torch.tensor([len(v) for v in values], dtype=torch.int32, device=device),
        )
        result = self.collection(kjt)
        vectors = {o: result[o].values() for o in self.owners}  # (n_o, d)
        offsets = dict.fromkeys(self.owners, 0)
        out = []
        for (owner, ids), k in zip(requests, keep, strict=True):
            n = int(k.sum())
            rows = vectors[owner][offsets[owner] : offsets[owner] + n]  # (n, d)
            offsets[owner] += n
            full = rows.new_zeros(k.numel(), self.dim).index_put((k.nonzero().squeeze(-1),), rows)  # (numel, d)
            out.append(full.reshape(*ids.shape, self.dim))
        return out


def _is_sharded(collection: nn.Module) -> bool:
    """Whether torchrec's DistributedModelParallel has replaced `collection` by its sharded twin."""
    from torchrec.modules.embedding_modules import EmbeddingCollection

    return not isinstance(collection, EmbeddingCollection)
