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

from ranker.models.fields import BatchFields, HistoryInputs
from ranker.nn.embeddings import CategoricalEncoder
from ranker.nn.history import PerUserHistory


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

    def fields(self, batch: dict[str, torch.Tensor], *, one_history: bool = False) -> list[torch.Tensor]:
        """Every input as a list of (B, d_i) vectors, in a fixed order (`one_history`: the
        history tensors are (1, L), shared by every row; see :meth:`score_one_user`)."""
        inputs = self.inputs
        histories = [inputs.history(batch, name) for name in inputs.histories]
        # the history items go with the fields' ids: one lookup per table and step (torchrec tables)
        if not one_history:
            self.embeddings.prefetch([(str(h.owner), x[0]) for h, x in zip(self.histories, histories, strict=True)])
        fields = self.embeddings(inputs.ids(batch), inputs.bags(batch))
        if self.numerical is not None:
            fields.append(self.numerical(*inputs.numerical(batch)))
        fields.extend(inputs.dense_fields(batch))
        cand = fields[self.candidate_index] if self.candidate_index is not None else None
        rows = fields[0].shape[0] if fields else 1
        for hist, history in zip(histories, self.histories, strict=True):
            fields.append(shared_history(history, hist, cand, rows) if one_history else history(*hist, candidate=cand))
        return fields

    def values_by_owner(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The distinct ids each embedding owner serves in `batch` (for collision statistics)."""
        return self.embeddings.values_by_owner(self.inputs.ids(batch), self.inputs.bags(batch))

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        x = self.interaction(self.fields(batch))  # (B, D)
        return self.heads(self.backbone(x))  # (B, T)

    def score_one_user(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """``forward`` for B rows of ONE user (serving's candidates): the batch's ``hist/`` tensors
        hold the history once, (1, L); every other tensor has B rows. Equal to ``forward`` with
        the history repeated B times; an encoder with a per-user cache
        (:class:`~ranker.nn.history.PerUserHistory`) encodes the history once."""
        x = self.interaction(self.fields(batch, one_history=True))  # (B, D)
        return self.heads(self.backbone(x))  # (B, T)


def shared_history(
    encoder: nn.Module, history: HistoryInputs, candidate: torch.Tensor | None, rows: int
) -> torch.Tensor:
    """One user's history (tensors (1, L)) encoded for `rows` rows: once through the encoder's
    per-user cache where it has one (and the model a candidate field), else repeated.
    (rows, out_dim)"""
    if candidate is not None and isinstance(encoder, PerUserHistory):
        return encoder.score_candidates(encoder.encode_history(*history), candidate)
    repeated = [None if t is None else t.expand(rows, *t.shape[1:]) for t in history]
    return encoder(*repeated, candidate=candidate)


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
