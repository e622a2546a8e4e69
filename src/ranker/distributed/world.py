"""The processes of a data-parallel run: torchrun's environment and the process group.

torchrun (``python -m torch.distributed.run``) starts one process per rank and sets ``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT`` in each. :func:`process_group`
reads them, initialises torch.distributed with gloo (CPU) or nccl (CUDA, one device per local
rank) and destroys the group at the end. Without torchrun, or with one process, nothing is
initialised and every helper of :mod:`ranker.distributed` is a no-op: the single-process path is
the one it always was.

Example:
    >>> world_from_env({"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1"})
    World(rank=1, world_size=2, local_rank=1)
    >>> check_global_batch(256, world=World(0, 2, 0))
    128
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from ranker.errors import ConfigError


@dataclass(frozen=True)
class World:
    """This process's place among the run's processes (rank 0 of 1 without torchrun)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def writer(self) -> bool:
        """Only rank 0 writes files and prints progress."""
        return self.rank == 0


def world_from_env(env: Mapping[str, str] | None = None) -> World:
    """The world torchrun describes in the environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``);
    one process when they are absent. A value that is not a rank is a ConfigError naming it."""
    env = os.environ if env is None else env

    def read(name: str) -> int:
        text = env.get(name, "") or "0"
        try:
            return int(text)
        except ValueError:
            raise ConfigError(f"${name}: {text!r} is not an integer (torchrun sets it)") from None

    size = read("WORLD_SIZE") or 1
    rank, local = read("RANK"), read("LOCAL_RANK")
    if size < 1 or not 0 <= rank < size or local < 0:
        raise ConfigError(f"$RANK {rank} of $WORLD_SIZE {size}, $LOCAL_RANK {local}: expected 0 <= RANK < WORLD_SIZE")
    return World(rank, size, local)


def current() -> World:
    """The world of the initialised process group; one process when none is."""
    if not (dist.is_available() and dist.is_initialized()):
        return World()
    return World(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0") or 0))


def is_writer() -> bool:
    """Whether this process writes the run directory (rank 0, or the only process)."""
    return current().writer


def local_device(device: torch.device) -> torch.device:
    """`device` for this process: ``cuda:LOCAL_RANK`` in a multi-process CUDA run, else unchanged."""
    world = current()
    if device.type == "cuda" and world.distributed and device.index is None:
        return torch.device("cuda", world.local_rank)
    return device


def check_global_batch(batch_size: int, key: str = "train.batch_size", world: World | None = None) -> int:
    """The per-process share of a global batch of `batch_size` rows; a ConfigError naming `key`
    when the number of processes does not divide it (checked before any work)."""
    world = world or current()
    n = world.world_size
    if batch_size % n:
        lower, upper = batch_size - batch_size % n, batch_size - batch_size % n + n
        options = f"{lower} or {upper}" if lower else str(upper)
        raise ConfigError(
            f"{key}: {batch_size} is the global batch (rows of one optimizer step over all processes) and "
            f"must be a multiple of the {n} processes; use {options}"
        )
    return batch_size // n


@contextmanager
def process_group(device: torch.device, world: World | None = None, timeout_s: float = 1800.0) -> Iterator[World]:
    """torch.distributed initialised for `world` (default: torchrun's environment) while the block
    runs: gloo on CPU, nccl on CUDA with ``cuda:LOCAL_RANK`` as this process's device; destroyed
    after. One process (or a group already initialised): nothing to do.

    A block that ends normally ends with a barrier: the ranks that finish early (rank 0 alone
    evaluates and writes the run) wait for rank 0, so that no torchrun agent exits first. With
    several hosts the c10d rendezvous store lives in one agent, which closes it when its own
    workers are done, and an agent still running then fails ("The connection to the C10d store
    has failed"). The wait is bounded by `timeout_s`, as every collective is."""
    world = world or world_from_env()
    if not world.distributed or dist.is_initialized():
        yield current() if dist.is_initialized() else world
        return
    if device.type == "cuda":
        if world.local_rank >= torch.cuda.device_count():
            raise ConfigError(
                f"$LOCAL_RANK {world.local_rank}: this host has {torch.cuda.device_count()} CUDA device(s); "
                "start at most that many processes per node (--nproc_per_node)"
            )
        torch.cuda.set_device(world.local_rank)
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend, rank=world.rank, world_size=world.world_size, timeout=timedelta(seconds=timeout_s))
    try:
        yield world
        dist.barrier()
    finally:
        dist.destroy_process_group()
