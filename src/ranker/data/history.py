"""Build each example's history (the user's past events) without leakage, vectorised.

An example ``(user u, time t)`` sees the events of ``u`` with time **strictly before** ``t``;
events at the same second as the example are excluded (MovieLens-100K has many of them). The
``max_len`` most recent are kept, in chronological order (the most recent last).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa


@dataclass(frozen=True)
class Histories:
    """Padded histories: ``items``, ``actions``, ``times`` of shape (N, max_len), ``lengths`` (N,).

    Row ``i`` holds its events in columns ``max_len - lengths[i] .. max_len-1`` (left padding),
    oldest first; padded slots hold 0 (items/actions) and 0 (times).
    """

    items: np.ndarray
    actions: np.ndarray
    times: np.ndarray
    lengths: np.ndarray

    def to_lists(self, example_times: np.ndarray) -> dict[str, pa.Array]:
        """Jagged arrow list columns: item ids, actions, seconds before the example (float32)."""
        n, width = self.items.shape
        valid = np.arange(width)[None, :] >= (width - self.lengths)[:, None]  # (N, L)
        offsets = np.concatenate([[0], np.cumsum(self.lengths)]).astype(np.int32)
        dt = (example_times[:, None] - self.times)[valid].astype(np.float32)
        return {
            "items": pa.ListArray.from_arrays(offsets, pa.array(self.items[valid])),
            "actions": pa.ListArray.from_arrays(offsets, pa.array(self.actions[valid])),
            "seconds_before": pa.ListArray.from_arrays(offsets, pa.array(dt)),
        }


def build_histories(
    event_users: np.ndarray,
    event_times: np.ndarray,
    event_items: np.ndarray,
    event_actions: np.ndarray,
    example_users: np.ndarray,
    example_times: np.ndarray,
    max_len: int,
) -> Histories:
    """For every example, the user's last `max_len` events strictly before its time.

    Events are ordered by (user, time, original order); ties in time keep the input order.
    Cost: one sort of the events and one ``searchsorted`` of the examples, no Python loop.
    """
    event_users = np.asarray(event_users, dtype=np.int64)
    event_times = np.asarray(event_times, dtype=np.int64)
    order = np.lexsort((np.arange(len(event_users)), event_times, event_users))
    eu, et = event_users[order], event_times[order]
    ei, ea = np.asarray(event_items)[order], np.asarray(event_actions)[order]
    # First event index of every example's user, and the end (exclusive) of events before t.
    xu = np.asarray(example_users, dtype=np.int64)
    xt = np.asarray(example_times, dtype=np.int64)
    start = _searchsorted_pairs(eu, et, xu, np.full_like(xt, np.iinfo(np.int64).min))
    end = _searchsorted_pairs(eu, et, xu, xt)
    lengths = np.minimum(end - start, max_len)
    idx = end[:, None] - max_len + np.arange(max_len)[None, :]  # (N, L)
    valid = idx >= (end - lengths)[:, None]
    idx = np.where(valid, idx, 0)

    def gather(a: np.ndarray) -> np.ndarray:
        if len(a) == 0:
            return np.zeros(idx.shape, dtype=a.dtype)
        return np.where(valid, a[idx], 0)

    return Histories(gather(ei), gather(ea), gather(et), lengths.astype(np.int64))


def _searchsorted_pairs(sorted_a: np.ndarray, sorted_b: np.ndarray, qa: np.ndarray, qb: np.ndarray) -> np.ndarray:
    """Left insertion points of (qa, qb) in the lexicographically sorted pairs (sorted_a, sorted_b)."""
    # Rank-encode users so (user, time) pairs compare through one structured sort key.
    keys = np.empty(len(sorted_a), dtype=[("a", np.int64), ("b", np.int64)])
    keys["a"], keys["b"] = sorted_a, sorted_b
    q = np.empty(len(qa), dtype=keys.dtype)
    q["a"], q["b"] = qa, qb
    return np.searchsorted(keys, q, side="left").astype(np.int64)
