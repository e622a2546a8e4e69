"""DIN: target attention over the user's events with a local activation unit.

Zhou et al., KDD 2018, "Deep Interest Network for Click-Through Rate Prediction"
(arXiv:1706.06978), Section 4.3, eq. (3). For the user's events j = 1..L and the candidate c:

    v_U(c) = Σ_j a(e_j, c) · e_j,    a(e_j, c) = MLP([e_j, c, x_j − c, x_j ⊙ c]) ∈ R,

where x_j = E_item[i_j] is the event's item embedding and e_j = x_j ⊕ E_action[a_j] the event
(item ⊕ action type, as in :class:`~ranker.nn.history.MeanPoolHistory`). The candidate is an
item, so it is compared with the item part x_j only; the whole event e_j (action included)
enters the unit's input, so the weight can depend on the kind of action (a like may count more
than a view), and e_j is what is summed.

As in the paper the weights are NOT normalised (no softmax): "the intensity of user
interests" is kept, so Σ_j a_j grows with the number of relevant events. The unit's hidden
layers use PReLU (the paper offers PReLU or Dice). The paper's Figure 2 draws an outer product
of the two inputs; its authors' released code uses the element-wise product and difference,
which is what is done here. Padding events get weight 0 (an empty history gives zeros), so
padding never changes the output. Target-aware: a missing candidate is an error.

Shape:
    items, mask, actions (B, L); candidate (B, d_item) → (B, d_item + action_dim)

>>> import torch
>>> from ranker.nn.embeddings import CategoricalFields, FeatureEmbeddings
>>> table = FeatureEmbeddings(CategoricalFields({"item": "item"}, {}, {"item": 50}), 16)
>>> din = DINAttention(table, "item", 4)
>>> items, actions = torch.tensor([[0, 7, 9]]), torch.tensor([[0, 1, 2]])
>>> mask = torch.tensor([[False, True, True]])
>>> din(items, mask, actions, candidate=table.lookup("item", torch.tensor([3]))).shape
torch.Size([1, 24])
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ranker.nn.embeddings import CategoricalEncoder
from ranker.nn.history import HistoryEvents


class DINAttention(HistoryEvents):
    """Σ_j a(e_j, c) e_j over the real events, with a from the local activation unit."""

    def __init__(
        self,
        items: CategoricalEncoder,
        owner: str,
        n_actions: int,
        *,
        action_dim: int = 8,
        hidden: Sequence[int] = (64, 32),
    ) -> None:
        if any(h < 1 for h in hidden) or (n_actions and action_dim < 1):
            raise ValueError(f"{hidden=} must be positive widths and {action_dim=} >= 1 when there are actions")
        super().__init__(items, owner, n_actions, action_dim)
        self.out_dim = self.event_dim
        layers: list[nn.Module] = []
        width = self.out_dim + 3 * items.dim_of(owner)  # [e_j, c, x_j − c, x_j ⊙ c]
        for h in hidden:
            layers += [nn.Linear(width, h), nn.PReLU()]
            width = h
        layers.append(nn.Linear(width, 1))
        self.unit = nn.Sequential(*layers)

    def forward(
        self,
        items: torch.Tensor,
        mask: torch.Tensor,
        actions: torch.Tensor | None = None,
        times: torch.Tensor | None = None,
        candidate: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """items, mask (bool), actions (B, L), candidate (B, d_item); `times` is not used."""
        if candidate is None:
            raise ValueError("DIN attention needs the candidate item's embedding, and the model has no candidate field")
        parts = self.event_parts(items, actions)
        x = parts[0]  # (B, L, d)
        events = torch.cat(parts, dim=-1) if len(parts) > 1 else x  # (B, L, d + a)
        c = candidate.unsqueeze(1).expand_as(x)  # (B, L, d)
        weights = self.unit(torch.cat([events, c, x - c, x * c], dim=-1))  # (B, L, 1)
        weights = weights * mask.unsqueeze(-1).to(weights.dtype)  # padding: weight 0
        return (weights * events).sum(1)  # (B, d + a)
