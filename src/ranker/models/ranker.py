"""The feature-based ranker, assembled from named parts passed in as modules.

    fields = embeddings(ids, bags) ++ [numerical(values, missing)] ++ [dense]
             ++ [history(items, mask, actions, times, candidate=c)]
    logits = heads(backbone(interaction(fields)))

Each part is swapped from the config (:mod:`ranker.models.registry`); this class only wires
them. The parts take tensors: :class:`~ranker.models.fields.BatchFields` unpacks the batch. The output is one logit per task; probabilities are ``sigmoid(logits)``.

Shape:
    batch of B rows → logits (B, T)
"""

from __future__ import annotations

import torch
from torch import nn

from ranker.models.fields import BatchFields
from ranker.nn.embeddings import CategoricalEncoder


class Ranker(nn.Module):
    """Encoders → interaction → backbone → heads, with optional history encoders."""

    def __init__(
        self,
        embeddings: CategoricalEncoder,
        histories: nn.ModuleList,
        interaction: nn.Module,
        backbone: nn.Module,
        heads: nn.Module,
        *,
        inputs: BatchFields,
        numerical: nn.Module | None = None,
        candidate_index: int | None = None,
    ) -> None:
        super().__init__()
        self.embeddings = embeddings
        self.histories = histories
        self.interaction = interaction
        self.backbone = backbone
        self.heads = heads
        self.inputs = inputs  # batch keys, in field order; histories[i] reads inputs.histories[i]
        self.numerical = numerical
        # Position (in `fields`) of the candidate item's embedding, for target-aware histories.
        self.candidate_index = candidate_index

    def embedding_parameters(self) -> list[nn.Parameter]:
        """Parameters of the embedding tables (for an embedding-only L2 penalty)."""
        return list(self.embeddings.parameters())

    def fields(self, batch: dict[str, torch.Tensor]) -> list[torch.Tensor]:
        """Every input as a list of (B, d_i) vectors, in a fixed order."""
        inputs = self.inputs
        fields = self.embeddings(inputs.ids(batch), inputs.bags(batch))
        if self.numerical is not None:
            fields.append(self.numerical(*inputs.numerical(batch)))
        fields.extend(inputs.dense_fields(batch))
        cand = fields[self.candidate_index] if self.candidate_index is not None else None
        for name, history in zip(inputs.histories, self.histories, strict=True):
            fields.append(history(*inputs.history(batch, name), candidate=cand))
        return fields

    def values_by_owner(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The distinct ids each embedding owner serves in `batch` (for collision statistics)."""
        return self.embeddings.values_by_owner(self.inputs.ids(batch), self.inputs.bags(batch))

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        x = self.interaction(self.fields(batch))  # (B, D)
        return self.heads(self.backbone(x))  # (B, T)


class ConcatInteraction(nn.Module):
    """Concatenate the fields: the interaction is left to the backbone."""

    def forward(self, fields: list[torch.Tensor]) -> torch.Tensor:
        return torch.cat(fields, dim=-1)


class LinearHeads(nn.Module):
    """One logit per task from a shared representation."""

    def __init__(self, in_dim: int, n_tasks: int) -> None:
        super().__init__()
        self.linear = nn.Linear(in_dim, n_tasks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x)
