"""Data parallelism across processes: ``torchrun --nproc_per_node N -m ranker train CONFIG``.

The process group (:mod:`~ranker.distributed.world`: torchrun's environment, gloo on CPU,
nccl on CUDA, one device per local rank), the collectives the engine needs to keep ranks in
lockstep and metrics exact (:mod:`~ranker.distributed.collectives`) and the family's loss as
one module for DistributedDataParallel (:mod:`~ranker.distributed.ddp`). Models and families
know nothing of it; docs/distributed.md is the user's page.
"""

from ranker.distributed.collectives import (
    all_gather_variable,
    all_reduce_sum,
    barrier,
    broadcast_buffers,
    broadcast_object,
)
from ranker.distributed.world import (
    World,
    check_global_batch,
    current,
    is_writer,
    local_device,
    process_group,
    world_from_env,
)

__all__ = [
    "World",
    "all_gather_variable",
    "all_reduce_sum",
    "barrier",
    "broadcast_buffers",
    "broadcast_object",
    "check_global_batch",
    "current",
    "is_writer",
    "local_device",
    "process_group",
    "world_from_env",
]
