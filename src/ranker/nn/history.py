"""History encoders that pool the user's past events into one vector.

:class:`MeanPoolHistory` is the baseline of the TransAct paper's comparison (Xia et al.,
KDD 2023, "TransAct: Transformer-based Realtime User Action Model for Recommendation at
Pinterest"): each event is ``item embedding ⊕ action embedding``, averaged over the non-padded
events. Not target-aware; an empty history gives zeros. ``recent = k`` appends a second mean
over the k most recent events (the input is left-padded, most recent last), a cheap way to
expose recency, which a mean over the whole history averages away.

The history encoders of :mod:`ranker.nn` share one call, ``encoder(items, mask, actions,
times, candidate=c)``, with tensors the model unpacks from its batch (``times`` and
``candidate`` are read only by the encoders that use them). Encoders that can score many
candidates of ONE user without redoing the user's part (:class:`PerUserHistory`: mean pool,
TransAct) also have ``encode_history(items, mask, actions, times)`` on a batch of 1 and
``score_candidates(cache, candidates)``, equal to the call on the history repeated per
candidate.

Shape:
    items, mask, actions (B, L) → (B, d_item + d_action), or (B, 2·(d_item + d_action)) with
    ``recent``

>>> from ranker.nn.embeddings import CategoricalFields, FeatureEmbeddings
>>> table = FeatureEmbeddings(CategoricalFields({"item": "item"}, {}, {"item": 50}), 16)
>>> pool = MeanPoolHistory(table, "item", 4, 8)
>>> items, actions = torch.tensor([[0, 7, 9]]), torch.tensor([[0, 1, 2]])
>>> pool(items, items > 0, actions).shape
torch.Size([1, 24])
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn

from ranker.nn.embeddings import CategoricalEncoder, masked_mean


@runtime_checkable
class PerUserHistory(Protocol):
    """A history encoder with a per-user cache: ``score_candidates(encode_history(one user), c)``
    equals the encoder on the user's history repeated once per row of c (n, d_item)."""

    def encode_history(
        self,
        items: torch.Tensor,
        mask: torch.Tensor,
        actions: torch.Tensor | None = None,
        times: torch.Tensor | None = None,
    ) -> Any: ...

    def score_candidates(self, cache: Any, candidates: torch.Tensor) -> torch.Tensor: ...


class HistoryEvents(nn.Module):
    """Base of the history encoders: event j is ``E_item[i_j] ⊕ E_action[a_j]`` (no action
    part when ``n_actions`` is 0); ``items`` is the ranker's own encoder, so the same rows embed
    history and candidate. ``out_dim``: the width of the encoder's output."""

    out_dim: int

    def __init__(self, items: CategoricalEncoder, owner: str, n_actions: int, action_dim: int) -> None:
        super().__init__()
        self.owner, self.items = owner, items
        self.action_table = nn.Embedding(n_actions, action_dim, padding_idx=0) if n_actions else None
        self.event_dim = items.dim_of(owner) + (action_dim if n_actions else 0)

    def event_parts(self, items: torch.Tensor, actions: torch.Tensor | None) -> list[torch.Tensor]:
        """[item embeddings (B, L, d_item)] + [action embeddings (B, L, a)] with an action table."""
        parts = [self.items.lookup(self.owner, items)]
        if self.action_table is not None:
            parts.append(self.action_table(need_actions(actions)))
        return parts


class MeanPoolHistory(HistoryEvents):
    """Masked mean of event vectors; items go through the candidate's own encoder."""

    def __init__(
        self, items: CategoricalEncoder, owner: str, n_actions: int, action_dim: int, recent: int | None = None
    ) -> None:
        if recent is not None and recent < 1:
            raise ValueError(f"model.history.recent must be ≥ 1, got {recent}")
        super().__init__(items, owner, n_actions, action_dim)
        self.recent = recent
        self.out_dim = self.event_dim * (2 if recent else 1)

    def forward(
        self,
        items: torch.Tensor,
        mask: torch.Tensor,
        actions: torch.Tensor | None = None,
        times: torch.Tensor | None = None,
        candidate: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """items, mask (bool), actions (B, L); `times` and `candidate` are not used."""
        events = torch.cat(self.event_parts(items, actions), dim=-1)  # (B, L, d + a)
        pooled = masked_mean(events, mask)  # (B, d + a)
        if self.recent is None:
            return pooled
        last = masked_mean(events[:, -self.recent :], mask[:, -self.recent :])
        return torch.cat([pooled, last], dim=-1)

    def encode_history(
        self,
        items: torch.Tensor,
        mask: torch.Tensor,
        actions: torch.Tensor | None = None,
        times: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The pooled vector of one user (batch of 1), (1, out_dim): not target-aware."""
        return self(items, mask, actions)

    def score_candidates(self, cache: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        """The user's vector for each of the n candidates (a broadcast view), (n, out_dim)."""
        return cache.expand(candidates.shape[0], -1)


def need_actions(actions: torch.Tensor | None) -> torch.Tensor:
    """`actions`, or a clear error for an encoder built with an action table."""
    if actions is None:
        raise ValueError("this history encoder has an action table (n_actions > 0) and needs the actions")
    return actions
