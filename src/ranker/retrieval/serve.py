"""Candidates for one user from a trained retriever: a known user, or any item history.

The models are inductive over the history, so a user the model has never seen is served from
its items alone. A known user's input is the whole sequence (every item of the dataset, the
held-out ones included, read from the run's ``histories.parquet``); the request time is the
last event's time. Items of the history are never returned. Here items are internal ids
``1..num_items``; ``ranker retrieve`` maps raw ids in and out
(:class:`ranker.retrieval.data.ServingData`): an unknown raw id in ``--history`` is an error
that names it (not skipped, so a typo never silently changes the recommendations).
"""

from __future__ import annotations

from typing import Any

import torch

from ranker.errors import ConfigError
from ranker.models.sequential import Retriever
from ranker.retrieval.search import exact_topk


@torch.no_grad()
def recommend(
    model: Retriever, items: list[int], times: list[int] | None, k: int, *, ann_index: Any = None
) -> list[tuple[int, float]]:
    """The `k` best (item, score) after the history `items`, history excluded."""
    bad = [i for i in items if not 1 <= i <= model.num_items]
    if bad:
        raise ConfigError(f"--history: item ids must be in 1..{model.num_items}, got {bad[:5]}")
    if times is not None and len(times) != len(items):
        raise ConfigError(f"--times: {len(times)} timestamps for {len(items)} items")
    x = torch.tensor(items[-model.max_len :]).unsqueeze(0)
    t = q = None
    if times is not None:
        t = torch.tensor(times[-model.max_len :]).unsqueeze(0)
        q = torch.cat([t[:, 1:], t[:, -1:]], dim=1)  # the request time: the last event's
    elif getattr(getattr(model, "cfg", None), "time_bias", False):
        t = q = torch.zeros_like(x)  # no times known: every gap is 0 (bucket 0)
    user = model.eval().user_vectors(x, t, q)  # (1, D)
    table = model.item_vectors()
    seen = set(items)
    if ann_index is not None:
        from ranker.retrieval.ann import ann_search

        found_s, found_i = ann_search(ann_index, user.numpy(), k + len(seen))
        pairs = [(int(i), float(s)) for i, s in zip(found_i[0], found_s[0], strict=True) if i > 0 and i not in seen]
        return pairs[:k]
    exclude = torch.zeros(1, len(table), dtype=torch.bool)
    exclude[0, list(seen)] = True
    k = min(k, int((~exclude[0, 1:]).sum()))
    scores, ids = exact_topk(user, table, k, exclude=exclude)
    return [(int(i), float(s)) for i, s in zip(ids[0], scores[0], strict=True)]


def check_times(times: list[int], n_items: int) -> list[int]:
    """`times` of a ``--history`` of `n_items` items: one per item, oldest first (a ConfigError
    naming ``--times`` otherwise, so that a wrong request is never silently reordered)."""
    if len(times) != n_items:
        raise ConfigError(f"--times: {len(times)} times for {n_items} --history items (one per item)")
    for i in range(1, len(times)):
        if times[i] < times[i - 1]:
            raise ConfigError(
                f"--times: the history is oldest first, so times may not decrease; got {times[i - 1]} "
                f"then {times[i]} (items {i} and {i + 1})"
            )
    return times


def parse_raw_ids(text: str, flag: str) -> list[str]:
    """``"a,b , c"`` → ["a", "b", "c"] (raw ids as text; ConfigError naming the flag when empty)."""
    values = [v.strip() for v in text.split(",") if v.strip()]
    if not values:
        raise ConfigError(f"{flag}: empty list")
    return values


def parse_ids(text: str, flag: str) -> list[int]:
    """``"1,2,3"`` → [1, 2, 3] (ConfigError naming the flag otherwise)."""
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ConfigError(f"{flag}: expected comma-separated integers, got {text!r}") from None
    if not values:
        raise ConfigError(f"{flag}: empty list")
    return values
