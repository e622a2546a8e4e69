"""The few collectives a data-parallel run needs; each is a no-op in one process.

- :func:`barrier`: wait until every rank gets here (rank 0 has written what the others read);
- :func:`broadcast_object`: rank 0's value on every rank, sent as JSON (never pickled), so the
  validation record, hence early stopping and lr decay, is the same everywhere;
- :func:`all_gather_variable`: every rank's rows concatenated in rank order, where ranks hold
  different numbers of rows (exact AUC / GAUC need the full score set, not a mean of per-rank
  AUCs);
- :func:`all_reduce_sum`: sums of a few numbers (loss sums, counted units) in float64;
- :func:`broadcast_buffers`: rank 0's batch-norm statistics on every rank before validation.

With nccl the tensors travel through the process's CUDA device and come back where they were.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from ranker.distributed.world import current


def comm_device() -> torch.device:
    """Where the backend's tensors must live: the current CUDA device for nccl, else the CPU."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def barrier() -> None:
    """Every rank waits here until all arrive (nothing to wait for in one process)."""
    if current().distributed:
        dist.barrier()


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank `src`'s `obj` on every rank, as JSON (numbers, strings, lists, dicts; NaN kept).

    `src` gets its own object back unchanged; the others a JSON copy of it (tuples become lists).
    """
    if not current().distributed:
        return obj
    device = comm_device()
    payload = json.dumps(obj, default=_plain).encode() if dist.get_rank() == src else b""
    size = torch.tensor([len(payload)], dtype=torch.int64, device=device)
    dist.broadcast(size, src)
    buf = torch.zeros(int(size.item()), dtype=torch.uint8, device=device)
    if dist.get_rank() == src:
        buf.copy_(torch.frombuffer(bytearray(payload), dtype=torch.uint8))
    dist.broadcast(buf, src)
    return obj if dist.get_rank() == src else json.loads(bytes(buf.cpu().numpy()).decode())


def all_gather_variable(t: torch.Tensor) -> torch.Tensor:
    """The concatenation along dim 0 of every rank's `t` in rank order; ranks may hold different
    numbers of rows (the trailing shape and dtype must agree).

    Shape: (n_r, *S) on rank r → (Σ_r n_r, *S) on every rank, on `t`'s device.
    """
    world = current()
    if not world.distributed:
        return t
    device = comm_device()
    n = torch.tensor([t.shape[0]], dtype=torch.int64, device=device)
    sizes = [torch.zeros_like(n) for _ in range(world.world_size)]
    dist.all_gather(sizes, n)
    counts = [int(s.item()) for s in sizes]
    padded = torch.zeros((max(counts), *t.shape[1:]), dtype=t.dtype, device=device)
    padded[: t.shape[0]] = t.to(device)
    parts = [torch.empty_like(padded) for _ in counts]
    dist.all_gather(parts, padded)
    return torch.cat([p[:c] for p, c in zip(parts, counts, strict=True)]).to(t.device)


def all_reduce_sum(values: Sequence[float]) -> list[float]:
    """Each value summed over the ranks (float64: counts stay exact up to 2⁵³)."""
    if not current().distributed:
        return [float(v) for v in values]
    t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=comm_device())
    dist.all_reduce(t)
    return [float(v) for v in t.tolist()]


def _plain(x: Any) -> Any:
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    raise TypeError(f"not JSON serialisable: {type(x)}")


def broadcast_buffers(module: nn.Module, src: int = 0) -> None:
    """Rank `src`'s floating-point buffers (batch-norm statistics) copied into every rank's `module`,
    so every rank scores with the weights and statistics that rank `src` saves."""
    if not current().distributed:
        return
    for buf in module.buffers():
        if buf.is_floating_point():
            dist.broadcast(buf.data, src)
