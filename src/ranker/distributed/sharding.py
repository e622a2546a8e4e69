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
- Checkpoints hold full tables: :meth:`state_dict` gathers every shard on rank 0 (collective)
  and :meth:`load_state_dict` copies each rank's rows back out of full tensors, so a checkpoint
  written on N processes loads on M, or unsharded. The fused optimizer's state (the Adagrad
  sums) travels the same way (:meth:`optimizer_state`). So rank 0 holds the whole tables while it
  writes a checkpoint, and the others their shard only.
- After training :meth:`unshard` drops DMP and hands the tables back declared, on every rank: the
  trained rows are read from the run's checkpoint by whoever needs them (the engine: rank 0).

Every method here except :meth:`dense_parameters` is collective: every rank calls it.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from ranker.distributed.collectives import comm_device
from ranker.errors import DataError
from ranker.nn.torchrec_tables import TorchrecEmbeddings, require_torchrec

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
                        shard.tensor.copy_(table.initial_rows(name, start, start + rows))
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
    def state_dict(self) -> dict[str, torch.Tensor]:
        """The model's state dict with every table whole, on rank 0 (empty on the others)."""
        return _gather_all(self.model.state_dict())

    def load_state_dict(self, state: dict[str, torch.Tensor], source: str = "the checkpoint") -> None:
        """Copy `state` (full tensors, as :meth:`state_dict` gives) into the model: each rank its rows."""
        _scatter_all(self.model.state_dict(), state, source)

    def optimizer_state(self) -> dict[str, torch.Tensor]:
        """The fused optimizer's state (``"<param>/<state>"``, e.g. the rowwise Adagrad sums) and its
        ``lr``, whole, on rank 0."""
        out = _gather_all(self._optimizer_tensors())
        if dist.get_rank() == 0:
            out["lr"] = torch.tensor(self.lr, dtype=torch.float64)
        return out

    def load_optimizer_state(self, state: dict[str, torch.Tensor], source: str = "the checkpoint") -> None:
        if "lr" not in state:
            raise DataError(f"{source}: no `lr` entry; not a table optimizer state")
        _scatter_all(self._optimizer_tensors(), {k: v for k, v in state.items() if k != "lr"}, source)
        self.set_lr(float(state["lr"]))

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


def _gather_all(tensors: dict[str, Any]) -> dict[str, torch.Tensor]:
    """Every sharded tensor gathered whole on rank 0; plain ones as they are (rank 0 only)."""
    out: dict[str, torch.Tensor] = {}
    rank0 = dist.get_rank() == 0
    with _quiet():
        for key, value in tensors.items():
            if _is_sharded(value):
                full = torch.empty(value.size(), dtype=value.dtype, device=comm_device()) if rank0 else None
                value.gather(dst=0, out=full)
                if full is not None:
                    out[key] = full.cpu()
            elif rank0:
                out[key] = value.detach()
    return out


def _scatter_all(own: dict[str, Any], state: dict[str, torch.Tensor], source: str) -> None:
    """Copy full tensors into `own` (a state dict's live views): each shard its offsets' slice."""
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    if missing or unexpected:
        raise DataError(
            f"{source}: its tensors do not fit the model its config describes (missing {missing[:3]}, "
            f"unexpected {unexpected[:3]})"
        )
    with torch.no_grad(), _quiet():
        for key, value in own.items():
            full = state[key]
            shape = tuple(value.size()) if _is_sharded(value) else tuple(value.shape)
            if tuple(full.shape) != shape:
                raise DataError(f"{source}: {key} has shape {tuple(full.shape)}, the model {shape}")
            if not _is_sharded(value):
                value.copy_(full)
                continue
            for shard in value.local_shards():
                meta = shard.metadata
                index = tuple(slice(o, o + s) for o, s in zip(meta.shard_offsets, meta.shard_sizes, strict=True))
                shard.tensor.copy_(full[index])
