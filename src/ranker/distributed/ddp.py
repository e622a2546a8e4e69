"""A family's training loss as one module, for DistributedDataParallel.

DDP all-reduces the gradients of the parameters its wrapped module's ``forward`` used. The
families do not all go through ``model.forward`` (retrieval calls ``encode`` and
``item_vectors``), so the engine wraps :class:`FamilyStep`, whose forward is the family's whole
``loss(batch, generator)``: every parameter any model method touches is hooked, and the model
itself stays the unwrapped module that checkpoints, the weight average and validation use.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel


class FamilyStep(nn.Module):
    """``forward(batch, generator)`` = ``family.loss(batch, generator)``'s loss; its counted
    units are kept in ``counts`` (DDP passes only tensors through)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.family: Any = None
        self.counts: dict[str, int] = {}

    def forward(self, batch: Any, generator: torch.Generator) -> torch.Tensor:
        loss, self.counts = self.family.loss(batch, generator)
        return loss  # type: ignore[no-any-return]


def data_parallel(model: nn.Module) -> tuple[DistributedDataParallel, FamilyStep]:
    """DDP around a :class:`FamilyStep` of `model` (on its device already: no ``device_ids``, the
    engine moves batches). Rank 0's weights and buffers are broadcast at construction; buffers are
    not synced before every forward (a collective per step): batch-norm statistics are each rank's
    own while training, and rank 0's are sent to all before validation
    (:func:`~ranker.distributed.collectives.broadcast_buffers`); rank 0's are the ones saved."""
    step = FamilyStep(model)
    return DistributedDataParallel(step, forward_sync_buffers=False), step
