"""Full-catalogue evaluation of a sequential retriever (PROTOCOLS.md, R-* protocols).

Users are scored in batches: ``scores = U Eᵀ`` for a batch of user vectors U (B, D) against
every item (I + 1, D), so no users × items matrix larger than one batch ever exists. The
history is excluded, the target never is, and ties count against the target
(:func:`ranker.metrics.retrieval_ranks`). A user's rank depends only on that user's row, so the
metrics do not depend on the batch size (a test).

``exclude="input"`` excludes only the items of the truncated model input (the HSTU reference's
variant). ``sampled_negatives=S`` adds metrics against S uniform non-history negatives per user
under keys ``sampled<S>/HR@10`` etc.: an explicitly named extra, never the protocol's figures.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Literal

import numpy as np
import torch

from ranker.metrics import metrics_from_ranks, retrieval_ranks
from ranker.models.sequential import Retriever
from ranker.retrieval.batches import query_batch
from ranker.retrieval.protocol import LeaveOneOut, Sequences, history_mask


@torch.no_grad()
def score_batches(
    model: Retriever, data: LeaveOneOut, split: str, batch_users: int, device: torch.device | None = None
) -> Iterator[tuple[np.ndarray, torch.Tensor, torch.Tensor]]:
    """(users, padded inputs (B, L'), scores (B, I + 1)) for batches of `split`.

    Users are batched in order of input length (shortest first), so a batch is trimmed to
    little padding; every user appears exactly once.
    """
    model.eval()
    device = device or next(model.parameters()).device
    inputs, _ = data.split(split)
    items = model.item_vectors()  # (I + 1, D)
    order = np.argsort(np.minimum(inputs.lengths(), data.max_len), kind="stable")
    for start in range(0, len(inputs), batch_users):
        users = order[start : start + batch_users]
        batch = query_batch(inputs, users, data.max_len, data.target_times(split)).to(device)
        user_vec = model.user_vectors(batch.items, batch.times, batch.query_times)  # (B, D)
        yield users, batch.items, (user_vec @ items.T).float()


def evaluate_model(
    model: Retriever,
    data: LeaveOneOut,
    split: str,
    *,
    ks: tuple[int, ...] = (10, 50, 200),
    batch_users: int = 512,
    exclude: Literal["history", "input"] = "history",
    sampled_negatives: int | None = None,
    seed: int = 0,
) -> dict[str, float]:
    """HR@K, NDCG@K, MRR of `model` on `split` under full ranking (plus sampled extras)."""
    inputs, targets = data.split(split)
    ranks, sampled = [], []
    for users, model_input, scores in score_batches(model, data, split, batch_users):
        mask = exclusion_mask(inputs, users, model_input, data.num_items, exclude).to(scores.device)
        target = torch.from_numpy(targets[users]).to(scores.device)
        ranks.append(retrieval_ranks(scores, target, mask))
        if sampled_negatives:
            sampled.append(_sampled_ranks(scores, target, mask, users, sampled_negatives, seed))
    out = metrics_from_ranks(np.concatenate(ranks), ks)
    if sampled_negatives:
        extra = metrics_from_ranks(np.concatenate(sampled), ks)
        out.update({f"sampled{sampled_negatives}/{k}": v for k, v in extra.items()})
    return out


def exclusion_mask(
    inputs: Sequences,
    users: np.ndarray,
    model_input: torch.Tensor,
    num_items: int,
    exclude: Literal["history", "input"] = "history",
) -> torch.Tensor:
    """(B, I + 1) bool on `model_input`'s device: the items never ranked for these queries.

    ``history``: padding and every item of the users' whole input (the protocol);
    ``input``: padding and the items of the truncated model input `model_input` (B, L') only.
    """
    if exclude == "history":
        return torch.from_numpy(history_mask(inputs, users, num_items)).to(model_input.device)
    mask = torch.zeros(len(users), num_items + 1, dtype=torch.bool, device=model_input.device)
    mask.scatter_(1, model_input, True)
    mask[:, 0] = True  # the padding item
    return mask


def _sampled_ranks(
    scores: torch.Tensor, targets: torch.Tensor, exclude: torch.Tensor, users: np.ndarray, n: int, seed: int
) -> np.ndarray:
    """Rank of the target among `n` negatives drawn per user (seeded by the user's index)."""
    s, t, ex = scores.cpu().numpy(), targets.cpu().numpy(), exclude.cpu().numpy()
    out = np.empty(len(users), dtype=np.int64)
    for row, user in enumerate(users):  # only on request; a loop over users is fine here
        pool = np.flatnonzero(~ex[row])
        pool = pool[pool != t[row]]
        rng = np.random.default_rng([seed, int(user)])
        neg = rng.choice(pool, size=min(n, len(pool)), replace=False)
        out[row] = 1 + int((s[row, neg] >= s[row, t[row]]).sum())
    return out
