"""Sharded embedding tables: torchrec's planner and ``DistributedModelParallel`` around the step.

A model whose categorical encoder is ``kind: torchrec`` (:class:`~ranker.nn.torchrec_tables.
TorchrecEmbeddings`) trains through :class:`ShardedTables` instead of plain DDP:

- torchrec's ``EmbeddingShardingPlanner`` places each table, constrained to the config's
  ``sharding`` (``table_wise``: a whole table on one rank; ``row_wise``: rows split evenly over
  the ranks; ``auto``: the planner chooses between the two per table), and
  ``DistributedModelParallel`` replaces every ``EmbeddingCollection`` with its sharded twin and
  wraps the dense rest in DDP (torchrec docs, "DistributedModelParallel"; the DLRM paper, Naumov
  et al. 2019, §4: model-parallel tables, data-parallel MLPs, an all-to-all in between).
- The sharded tables are trained by fbgemm's optimizer fused into their backward (the only
  compute kernel torchrec shards; on CPU rowwise Adagrad, Adagrad or SGD); their gradients come
  back through the all-to-all divided by the number of ranks (torchrec's gradient division), so,
  like DDP's average, a step follows the mean over the global batch. The engine's optimizer
  keeps the dense parameters (:meth:`dense_parameters`).
- One process runs the same path on a process group of one (created here, destroyed by
  :meth:`unshard`), so a config trains the same numbers on 1 or N processes.
- Each rank allocates only its own rows: a model built with declared tables (meta device, see
  :mod:`ranker.nn.torchrec_tables`) is sharded by DMP, and each rank fills its shards with the
  rows :func:`~ranker.nn.torchrec_tables.init_rows` gives them, the same values on 1 or N
  processes. Tables that already hold rows are copied into the shards by DMP.
- Checkpoints hold full tables: :meth:`lazy_state` gives each table as a
  :class:`~ranker.train.checkpoint.Lazy` that gathers it on rank 0 when the checkpoint writer
  reaches it (collective: the other ranks :func:`~ranker.train.checkpoint.take_part`), so rank 0
  holds one whole table at a time; :meth:`load_file` has each rank read only its rows of such a
  file. A checkpoint written on N processes loads on M, or unsharded. The fused optimizer's state
  (the Adagrad sums) travels the same way (:meth:`lazy_optimizer_state`,
  :meth:`load_optimizer_file`).
- After training :meth:`unshard` drops DMP and hands the tables back declared, on every rank: the
  trained rows are read from the run's checkpoint by whoever needs them (the engine: rank 0).

Every method here except :meth:`dense_parameters` is collective: every rank calls it.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist
from torch import nn

from ranker.distributed.collectives import comm_device
from ranker.errors import DataError
from ranker.nn.torchrec_tables import INIT_BLOCK, TorchrecEmbeddings, require_torchrec

if TYPE_CHECKING:  # ranker.train imports this module (the engine shards through it)
    from ranker.train.checkpoint import Lazy, TensorFile

#: config ``sharding`` → the sharding types the planner may choose from
SHARDING_TYPES = {"auto": ["table_wise", "row_wise"], "row_wise": ["row_wise"], "table_wise": ["table_wise"]}
#: config ``optimizer`` → fbgemm's fused optimizer (the ones fbgemm runs on CPU)
FUSED_OPTIMIZERS = {"rowwise_adagrad": "EXACT_ROWWISE_ADAGRAD", "adagrad": "EXACT_ADAGRAD", "sgd": "EXACT_SGD"}


def torchrec_tables(model: nn.Module) -> list[TorchrecEmbeddings]:
    """The torchrec encoders inside `model` (none for every other encoder)."""
    return [m for m in model.modules() if isinstance(m, TorchrecEmbeddings)]


class ShardedTables:
    """`step` (the engine's :class:`~ranker.distributed.ddp.FamilyStep` of `model`) under
    ``DistributedModelParallel``: call it like DDP; the model's tables are sharded in place.

    ``lr``: the tables' learning rate when the encoder config leaves it to ``train.lr``.
    """

    def __init__(self, step: nn.Module, model: nn.Module, lr: float, device: torch.device) -> None:
        require_torchrec()
        from fbgemm_gpu.split_embedding_configs import EmbOptimType
        from torchrec.distributed.embedding import EmbeddingCollectionSharder
        from torchrec.distributed.model_parallel import DefaultDataParallelWrapper, DistributedModelParallel
        from torchrec.distributed.planner import EmbeddingShardingPlanner, Topology
        from torchrec.distributed.planner.types import ParameterConstraints

        self.model, self.device = model, device
        self.tables = torchrec_tables(model)
        self._own_group = not dist.is_initialized()
        if self._own_group:  # one process: the same path on a world of one
            backend = "nccl" if device.type == "cuda" else "gloo"
            dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1)
        world = dist.get_world_size()
        setting = self.tables[0].training_config
        constraints = {
            name: ParameterConstraints(sharding_types=SHARDING_TYPES[setting.sharding])
            for table in self.tables
            for name in table.names
        }
        fused = {
            "optimizer": EmbOptimType[FUSED_OPTIMIZERS[setting.optimizer]],
            "learning_rate": setting.lr or lr,
            "eps": setting.eps,
        }
        sharders: list[Any] = [EmbeddingCollectionSharder(fused_params=fused)]
        with _quiet():
            topology = Topology(world_size=world, compute_device=device.type)
            planner = EmbeddingShardingPlanner(topology=topology, constraints=constraints)
            self.plan = planner.collective_plan(step, sharders, dist.GroupMember.WORLD)
            self.dmp = DistributedModelParallel(
                step,
                device=device,
                plan=self.plan,
                sharders=sharders,
                data_parallel_wrapper=DefaultDataParallelWrapper(static_graph=False),
            )
        self._table_params = {id(p) for t in self.tables for p in t.collection.parameters()}
        declared = [t for t in self.tables if t.declared]
        state = self.model.state_dict() if declared else {}
        with torch.no_grad(), _quiet():
            for table in declared:  # each rank fills the rows it holds
                prefix = _prefix(self.model, table)
                for name in table.names:
                    for shard in state[f"{prefix}collection.embeddings.{name}.weight"].local_shards():
                        (start, column), (rows, _) = shard.metadata.shard_offsets, shard.metadata.shard_sizes
                        if column != 0:
                            raise AssertionError(f"{name}: a column-wise shard, which the planner was not allowed")
                        for first, last in _row_blocks(rows):  # a block at a time: no second shard
                            shard.tensor[first:last].copy_(table.initial_rows(name, start + first, start + last))
                table.declared = False

    def __call__(self, *args: Any) -> Any:
        return self.dmp(*args)

    def dense_parameters(self) -> list[nn.Parameter]:
        """The parameters the engine's optimizer steps (the tables' are updated in backward)."""
        return [p for p in self.model.parameters() if id(p) not in self._table_params]

    # ------------------------------------------------------------------ learning rate
    @property
    def lr(self) -> float:
        return float(self.dmp.fused_optimizer.param_groups[0]["lr"])

    def set_lr(self, lr: float) -> None:
        """The tables' learning rate (fbgemm reads it at the optimizer's next ``step``)."""
        optimizer = self.dmp.fused_optimizer
        for group in optimizer.param_groups:
            group["lr"] = lr
        optimizer.step()

    # ------------------------------------------------------------------ full tensors
    def lazy_state(self) -> dict[str, torch.Tensor | Lazy]:
        """The model's state dict for a checkpoint, on every rank: each table a :class:`Lazy` that
        gathers it whole on rank 0 when it is written (:func:`~ranker.train.checkpoint.save_tensors`
        on rank 0, :func:`~ranker.train.checkpoint.take_part` on the others), one table at a time."""
        return _lazy_all(self.model.state_dict())

    def load_file(self, path: Path) -> None:
        """A whole-table checkpoint file into the model: each rank reads only its own rows of it."""
        from ranker.train.checkpoint import TensorFile

        _scatter_all(self.model.state_dict(), TensorFile(path), str(path))

    def lazy_optimizer_state(self) -> dict[str, torch.Tensor | Lazy]:
        """The fused optimizer's state (``"<param>/<state>"``, e.g. the rowwise Adagrad sums), each a
        :class:`Lazy` as in :meth:`lazy_state`, and its ``lr``."""
        return {**_lazy_all(self._optimizer_tensors()), "lr": torch.tensor(self.lr, dtype=torch.float64)}

    def load_optimizer_file(self, path: Path) -> None:
        """The optimizer state :meth:`lazy_optimizer_state` wrote to `path`: each rank its rows."""
        from ranker.train.checkpoint import TensorFile

        source = TensorFile(path)
        if "lr" not in source.keys():
            raise DataError(f"{path}: no `lr` entry; not a table optimizer state")
        _scatter_all(self._optimizer_tensors(), source, str(path), skip=("lr",))
        self.set_lr(float(source.read("lr")))

    def _optimizer_tensors(self) -> dict[str, Any]:
        state = self.dmp.fused_optimizer.state_dict()["state"]
        return {f"{param}/{name}": value for param, values in state.items() for name, value in values.items()}

    # ------------------------------------------------------------------ the end
    def unshard(self) -> None:
        """Drop DMP and put plain, declared ``EmbeddingCollection`` modules back into the model on
        every rank (no rows: read the trained ones from a checkpoint, e.g. with
        :func:`~ranker.train.checkpoint.load_weights`); the process group of one is destroyed."""
        from torchrec.modules.embedding_modules import EmbeddingCollection

        for table in self.tables:
            table.collection = EmbeddingCollection(tables=table.configs, device=torch.device("meta"))
            table.declared = table.released = True
        del self.dmp
        if self._own_group:
            dist.destroy_process_group()


@contextmanager
def _quiet() -> Iterator[None]:
    """Without torchrec's advice (topology factories, storage heuristics, ShardedTensor's
    deprecation): warnings a user of ranker cannot act on."""
    log = logging.getLogger("torchrec")
    level, log.level = log.level, logging.ERROR
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            yield
    finally:
        log.level = level


def _prefix(model: nn.Module, module: nn.Module) -> str:
    name = next(n for n, m in model.named_modules() if m is module)
    return f"{name}." if name else ""


def _is_sharded(value: Any) -> bool:
    from torch.distributed._shard.sharded_tensor import ShardedTensor

    return isinstance(value, ShardedTensor)


def _gather(value: Any) -> torch.Tensor | None:
    """A sharded tensor gathered whole on rank 0 (None on the others); collective.

    Each shard is sent by its rank straight into its slice of the whole tensor on rank 0
    (row-wise and table-wise shards are contiguous row blocks), so rank 0 holds the whole tensor
    once; ``ShardedTensor.gather`` stages it in buffers of its own, two more copies."""
    rank, device = dist.get_rank(), comm_device()
    with _quiet():
        full = torch.empty(value.size(), dtype=value.dtype) if rank == 0 else None
        local = {tuple(s.metadata.shard_offsets): s.tensor for s in value.local_shards()}
        for meta in value.metadata().shards_metadata:  # the same order on every rank
            owner, offsets = meta.placement.rank(), tuple(meta.shard_offsets)
            if rank == owner != 0:
                dist.send(local[offsets].contiguous().to(device), dst=0)
            if rank != 0 or full is None:
                continue
            target = full[tuple(slice(o, o + n) for o, n in zip(offsets, meta.shard_sizes, strict=True))]
            if owner == 0:
                target.copy_(local[offsets])
            elif device.type == "cpu" and target.is_contiguous():
                dist.recv(target, src=owner)
            else:
                staged = torch.empty(tuple(meta.shard_sizes), dtype=value.dtype, device=device)
                dist.recv(staged, src=owner)
                target.copy_(staged)
    return full


def _lazy_all(tensors: Mapping[str, Any]) -> dict[str, torch.Tensor | Lazy]:
    """Every sharded tensor as a Lazy that gathers it; plain ones as they are."""
    from ranker.train.checkpoint import Lazy

    with _quiet():
        return {
            key: Lazy(value.dtype, tuple(value.size()), partial(_gather, value))
            if _is_sharded(value)
            else value.detach()
            for key, value in tensors.items()
        }


def _scatter_all(own: Mapping[str, Any], source: TensorFile, name: str, skip: tuple[str, ...] = ()) -> None:
    """Copy full tensors from `source` into `own` (a state dict's live views): each shard reads its
    offsets' slice only, a block of rows at a time."""
    keys = [k for k in source.keys() if k not in skip]
    missing, unexpected = sorted(set(own) - set(keys)), sorted(set(keys) - set(own))
    if missing or unexpected:
        raise DataError(
            f"{name}: its tensors do not fit the model its config describes (missing {missing[:3]}, "
            f"unexpected {unexpected[:3]})"
        )
    with torch.no_grad(), _quiet():
        for key, value in own.items():
            shape = tuple(value.size()) if _is_sharded(value) else tuple(value.shape)
            if source.shape(key) != shape:
                raise DataError(f"{name}: {key} has shape {source.shape(key)}, the model {shape}")
            if not _is_sharded(value):
                value.copy_(source.read(key))
                continue
            for shard in value.local_shards():  # a block of rows at a time: no second shard in memory
                (row, *offsets), (rows, *sizes) = shard.metadata.shard_offsets, shard.metadata.shard_sizes
                rest = tuple(slice(o, o + n) for o, n in zip(offsets, sizes, strict=True))
                for first, last in _row_blocks(rows):
                    shard.tensor[first:last].copy_(source.read(key, (slice(row + first, row + last), *rest)))


def _row_blocks(rows: int) -> Iterator[tuple[int, int]]:
    """``[first, last)`` of each block of INIT_BLOCK rows in a shard of `rows` rows."""
    for first in range(0, rows, INIT_BLOCK):
        yield first, min(first + INIT_BLOCK, rows)
