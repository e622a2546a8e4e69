"""History encoders that pool the user's past events into one vector.

:class:`MeanPoolHistory` is the baseline of the TransAct paper's comparison (Xia et al.,
KDD 2023, "TransAct: Transformer-based Realtime User Action Model for Recommendation at
Pinterest"): each event is ``item embedding ⊕ action embedding``, averaged over the non-padded
events. Not target-aware; an empty history gives zeros. ``recent = k`` appends a second mean
over the k most recent events (the input is left-padded, most recent last), a cheap way to
expose recency, which a mean over the whole history averages away.

Shape:
    items (B, L), actions (B, L) → (B, d_item + d_action), or (B, 2·(d_item + d_action)) with
    ``recent``
"""

from __future__ import annotations

import torch
from torch import nn

from ranker.nn.embeddings import CategoricalEncoder, masked_mean


class MeanPoolHistory(nn.Module):
    """Masked mean of event vectors; items go through the candidate's own encoder."""

    def __init__(self, name: str, items: CategoricalEncoder, owner: str, n_actions: int,
                 action_dim: int, recent: int | None = None) -> None:
        super().__init__()
        if recent is not None and recent < 1:
            raise ValueError(f"model.history.recent must be ≥ 1, got {recent}")
        self.name, self.owner, self.recent = name, owner, recent
        self.items = items  # shared with the ranker: the same rows embed history and candidate
        self.action_table = nn.Embedding(n_actions, action_dim, padding_idx=0) if n_actions else None
        event_dim = items.dim_of(owner) + (action_dim if n_actions else 0)
        self.out_dim = event_dim * (2 if recent else 1)

    def forward(self, batch: dict[str, torch.Tensor], candidate: torch.Tensor | None = None) -> torch.Tensor:
        mask = batch[f"hist/{self.name}/mask"]  # (B, L)
        events = self.items.lookup(self.owner, batch[f"hist/{self.name}/items"])  # (B, L, d)
        if self.action_table is not None:
            actions = self.action_table(batch[f"hist/{self.name}/actions"])  # (B, L, a)
            events = torch.cat([events, actions], dim=-1)
        pooled = masked_mean(events, mask)  # (B, d + a)
        if self.recent is None:
            return pooled
        last = masked_mean(events[:, -self.recent:], mask[:, -self.recent:])
        return torch.cat([pooled, last], dim=-1)
