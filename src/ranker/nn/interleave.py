"""Token kinds and the attention mask of an interleaved item/action sequence (generative ranking).

A user is one sequence ``[s_1 … s_S] i_0 a_0 i_1 a_1 … i_{n−1} a_{n−1} [c …]`` (Zhai et al.,
ICML 2024, §2.2, "generative ranking"): static user tokens, then each event's item token and
action token, then candidate item tokens. The mask (True = query may attend key) is built
from per-token kind, event index and timestamp only, so the same rule serves training
(negatives as candidates) and serving (M-FALCON: many candidates at once):

- everyone sees the static tokens and itself; nobody but itself sees a candidate;
- an **item** or **candidate** token at time t sees the item/action tokens of events with
  timestamp ``< t`` (strict: same-second events are excluded, as the recipe's histories);
  so it never sees its own action, and a candidate computes exactly what the item token of
  the same item at the same time and position would;
- an **action** token of event e sees the item and action tokens of events ``< e`` in sequence
  order and its own item token ``i_e`` (it carries "what happened to i_e" forward).

No query ever reads a token whose event is at its own time or later (an action token's keys
all have timestamps ``≤`` its own, and only item/candidate tokens at a *later* time read it), so
an item's score depends only on events strictly before it, at any depth.
"""

from __future__ import annotations

import torch

PAD, STATIC, ITEM, ACTION, CANDIDATE = 0, 1, 2, 3, 4


def interleaved_mask(kind: torch.Tensor, event: torch.Tensor, time: torch.Tensor) -> torch.Tensor:
    """(B, N, N) bool: True where query i may attend key j (rules in the module docstring).

    Shape: kind, event, time (B, N) int64 (kind from ``PAD … CANDIDATE``; ``event`` the event
    index of item/action/candidate tokens; ``time`` their timestamps). Padding queries see only
    themselves; padding keys are never seen by another token.

    Example (one static token, two events at t = 5 and 9, one candidate at t = 9):
        >>> k = torch.tensor([[STATIC, ITEM, ACTION, ITEM, ACTION, CANDIDATE]])
        >>> e = torch.tensor([[0, 0, 0, 1, 1, 1]])
        >>> t = torch.tensor([[5, 5, 5, 9, 9, 9]])
        >>> interleaved_mask(k, e, t)[0].int().tolist()
        [[1, 0, 0, 0, 0, 0], [1, 1, 0, 0, 0, 0], [1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 0], [1, 1, 1, 0, 0, 1]]
    """
    n = kind.shape[1]
    q_kind, k_kind = kind.unsqueeze(-1), kind.unsqueeze(-2)  # (B, N, 1), (B, 1, N)
    key_event = (k_kind == ITEM) | (k_kind == ACTION)
    scoring = (q_kind == ITEM) | (q_kind == CANDIDATE)
    earlier_time = time.unsqueeze(-2) < time.unsqueeze(-1)  # t_key < t_query
    q_ev, k_ev = event.unsqueeze(-1), event.unsqueeze(-2)
    for_action = (k_ev < q_ev) | ((k_ev == q_ev) & (k_kind == ITEM))
    sees_event = key_event & ((scoring & earlier_time) | ((q_kind == ACTION) & for_action))
    sees_static = (k_kind == STATIC) & (q_kind != PAD)
    eye = torch.eye(n, dtype=torch.bool, device=kind.device)
    return sees_event | sees_static | eye
