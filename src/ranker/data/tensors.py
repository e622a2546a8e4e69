"""Columnar tensors in memory and batches by index slicing.

A :class:`TensorData` holds every encoded column of a split as one tensor (N rows each).
Each epoch does ONE gather per column with the epoch's permutation, then yields contiguous
slices (views, no copy): the per-batch cost is a few slice ops, not a Python collate.
Sharding for data parallelism (``rank`` of ``world_size``) takes a strided subset of the
permutation, so ranks see disjoint rows and the same number of batches.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from ranker.data.preprocess import Encoded

Batch = dict[str, torch.Tensor]


@dataclass
class TensorData:
    """Named tensors with a common first dimension (the rows of one split)."""

    tensors: dict[str, torch.Tensor]

    @classmethod
    def from_encoded(cls, enc: Encoded) -> TensorData:
        return cls({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in enc.arrays().items()})

    def __len__(self) -> int:
        return next(iter(self.tensors.values())).shape[0] if self.tensors else 0

    def to(self, device: torch.device) -> TensorData:
        return TensorData({k: v.to(device) for k, v in self.tensors.items()})

    def batches(
        self,
        batch_size: int,
        *,
        shuffle: bool = False,
        generator: torch.Generator | None = None,
        rank: int = 0,
        world_size: int = 1,
        drop_last: bool = False,
    ) -> Iterator[Batch]:
        """Yield dict batches; with `shuffle`, rows are permuted once per call (one epoch)."""
        n = len(self)
        if shuffle or world_size > 1:
            order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
            if world_size > 1:
                per_rank = n // world_size
                order = order[rank::world_size][:per_rank]
            data = {k: v.index_select(0, order.to(v.device)) for k, v in self.tensors.items()}
            n = len(order)
        else:
            data = self.tensors
        stop = n - n % batch_size if drop_last else n
        for start in range(0, stop, batch_size):
            yield {k: v[start : start + batch_size] for k, v in data.items()}

    def num_batches(self, batch_size: int, world_size: int = 1) -> int:
        return -(-(len(self) // world_size) // batch_size)
