"""History encoders that pool the user's past events into one vector.

:class:`MeanPoolHistory` is the baseline of the TransAct paper's comparison (Xia et al.,
KDD 2023, "TransAct: Transformer-based Realtime User Action Model for Recommendation at
Pinterest"): each event is ``item embedding ⊕ action embedding``, averaged over the non-padded
events. Not target-aware; an empty history gives zeros.

Shape:
    items (B, L), actions (B, L) → (B, d_item + d_action)
"""

from __future__ import annotations

import torch
from torch import nn

from ranker.nn.embeddings import masked_mean


class MeanPoolHistory(nn.Module):
    """Masked mean of event vectors; the item table is shared with the candidate's."""

    def __init__(self, name: str, item_table: nn.Embedding, n_actions: int, action_dim: int) -> None:
        super().__init__()
        self.name = name
        self.item_table = item_table
        self.action_table = nn.Embedding(n_actions, action_dim, padding_idx=0) if n_actions else None
        self.out_dim = item_table.embedding_dim + (action_dim if n_actions else 0)

    def forward(self, batch: dict[str, torch.Tensor], candidate: torch.Tensor | None = None) -> torch.Tensor:
        items = batch[f"hist/{self.name}/items"]  # (B, L)
        pooled = masked_mean(self.item_table, items)  # (B, d)
        if self.action_table is None:
            return pooled
        # Actions are padded exactly where items are, so their bag mean covers the same events.
        actions = batch[f"hist/{self.name}/actions"]
        return torch.cat([pooled, masked_mean(self.action_table, actions)], dim=-1)  # (B, d + a)
