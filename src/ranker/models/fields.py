"""Batch → tensors: the one place where the ranker reads the batch's string keys.

The keys are those of :meth:`ranker.data.preprocess.Encoded.tensors`: ``cat/<f>`` (B,),
``multi/<f>`` and ``multi_mask/<f>`` (B, L), ``num`` and ``num_missing`` (B, F), ``dense/<f>``
(B, D), ``hist/<h>/{items,mask,actions,times}`` (B, L). Layers (:mod:`ranker.nn`) take the
tensors; :class:`BatchFields` knows which keys feed which layer, in the layers' field order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch

from ranker.data.layout import Layout
from ranker.nn.embeddings import Bag, CategoricalFields

Batch = dict[str, torch.Tensor]


class HistoryInputs(NamedTuple):
    """One history's tensors, in the argument order of the history encoders."""

    items: torch.Tensor  # (B, L) ids, left-padded, most recent last
    mask: torch.Tensor  # (B, L) bool, True at real events
    actions: torch.Tensor | None  # (B, L) action ids
    times: torch.Tensor | None  # (B, L) log1p-hours before the example (only with a time column)


@dataclass(frozen=True)
class BatchFields:
    """Names of a ranker's inputs, in field order; unpacks a batch into the layers' tensors."""

    categorical: tuple[str, ...] = ()
    multi: tuple[str, ...] = ()
    dense: tuple[str, ...] = ()
    histories: tuple[str, ...] = ()

    @classmethod
    def of(cls, layout: Layout, histories: tuple[str, ...] | None = None) -> BatchFields:
        """The inputs of `layout` (`histories`: the encoded ones, all by default)."""
        names = tuple(layout.history) if histories is None else histories
        return cls(tuple(layout.categorical), tuple(layout.multi), tuple(layout.dense), names)

    def ids(self, batch: Batch) -> list[torch.Tensor]:
        """One (B,) id tensor per categorical feature."""
        return [batch[f"cat/{name}"] for name in self.categorical]

    def bags(self, batch: Batch) -> list[Bag]:
        """One (ids, mask) pair of (B, L) tensors per multi-valued feature."""
        return [(batch[f"multi/{name}"], batch[f"multi_mask/{name}"]) for name in self.multi]

    def numerical(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """Transformed values and missing indicators, (B, F) each."""
        return batch["num"], batch["num_missing"]

    def dense_fields(self, batch: Batch) -> list[torch.Tensor]:
        return [batch[f"dense/{name}"] for name in self.dense]

    def history(self, batch: Batch, name: str) -> HistoryInputs:
        prefix = f"hist/{name}/"
        return HistoryInputs(
            batch[prefix + "items"], batch[prefix + "mask"], batch.get(prefix + "actions"), batch.get(prefix + "times")
        )


def categorical_fields(layout: Layout) -> CategoricalFields:
    """What the categorical encoders need to know of `layout`: owners and table sizes."""
    return CategoricalFields(dict(layout.categorical), dict(layout.multi), dict(layout.vocab_sizes))
