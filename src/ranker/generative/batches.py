"""Token windows of user sequences and their batches (training and evaluation share them).

A user's events (global time order) become one sequence ``[static] i_0 a_0 … i_{m−1} a_{m−1}``
followed by the candidate tokens of its *target* events: the K−1 sampled negatives of each
target, at the target's time and item position (:mod:`ranker.nn.interleave`). A target's rows
are its item token (slot 0: the rated item) and its candidates (slots 1..K−1), so one pass
scores every row of every target event of the window.

Long users are cut by :func:`target_blocks`: targets ``[0, W)`` in the first window, then
blocks of ``W/2`` targets, each window reaching back to ``W`` events, so a target always has
at least ``W/2`` earlier events (or all of them) as context. Training windows hold the train
events only (every one a target); evaluation windows of a split hold the user's events up to
that split (the recipe's histories also include earlier valid/test events) and score only the
split's events, each exactly once.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from ranker.generative.events import EventLog
from ranker.models.generative import Tokens
from ranker.nn.interleave import ACTION, CANDIDATE, ITEM, PAD, STATIC


def target_blocks(n: int, max_events: int) -> list[tuple[int, int, int]]:
    """``(context_start, target_start, end)`` windows whose targets cover ``0..n−1`` once.

    Example:
        >>> target_blocks(10, 4)
        [(0, 0, 4), (2, 4, 6), (4, 6, 8), (6, 8, 10)]
    """
    blocks = [(0, 0, min(n, max_events))]
    half = max(max_events // 2, 1)
    start = max_events
    while start < n:
        end = min(start + half, n)
        blocks.append((end - max_events, start, end))
        start = end
    return blocks if n else []


@dataclass(frozen=True)
class Window:
    """One sequence's tokens (N,) and its scored rows: token index (R,), (event, slot) (R, 2)."""

    kind: np.ndarray
    ids: np.ndarray
    event: np.ndarray
    time: np.ndarray
    position: np.ndarray
    score: np.ndarray
    rows: np.ndarray

    def __len__(self) -> int:
        return len(self.kind)


def build_window(log: EventLog, events: np.ndarray, targets: np.ndarray) -> Window:
    """Tokens of one window: ``events`` (m,) global indices in order, ``targets`` (m,) bool."""
    static = log.static[log.user[events[0]]]
    s, m = len(static), len(events)
    k = log.candidates.shape[1]
    local = np.flatnonzero(targets)
    tev = events[local]
    nc = len(local) * (k - 1)
    kind = np.concatenate([np.full(s, STATIC), np.tile([ITEM, ACTION], m), np.full(nc, CANDIDATE)])
    ids = np.concatenate(
        [static, np.stack([log.item[events], log.action[events]], 1).ravel(), log.candidates[tev, 1:].ravel()]
    )
    event = np.concatenate([np.full(s, -1), np.repeat(np.arange(m), 2), np.repeat(local, k - 1)])
    time = np.concatenate(
        [np.full(s, log.time[events[0]]), np.repeat(log.time[events], 2), np.repeat(log.time[tev], k - 1)]
    )
    position = np.concatenate([np.arange(s), s + np.arange(2 * m), np.repeat(s + 2 * local, k - 1)])
    score = np.concatenate([s + 2 * local, s + 2 * m + np.arange(nc)])
    slots = np.tile(np.arange(1, k), len(local))
    rows = np.concatenate([np.stack([tev, np.zeros_like(tev)], 1), np.stack([np.repeat(tev, k - 1), slots], 1)])
    return Window(kind, ids, event, time, position, score.astype(np.int64), rows.astype(np.int64))


def user_windows(log: EventLog, split: int, max_events: int) -> list[Window]:
    """Windows scoring every event of ``split`` (0 = train: train events only as input, and
    only the events of ``log.train_target`` as targets when it is set)."""
    keep = log.split == 0 if split == 0 else log.split <= split
    ev = np.flatnonzero(keep)
    ev = ev[np.argsort(log.user[ev], kind="stable")]  # by user, time order within
    bounds = np.flatnonzero(np.diff(log.user[ev])) + 1
    out = []
    for seq in np.split(ev, bounds):
        is_target = log.split[seq] == split
        if split == 0 and log.train_target is not None:
            is_target &= log.train_target[seq]
        if not is_target.any():
            continue
        for lo, a, b in target_blocks(len(seq), max_events):
            targets = np.zeros(b - lo, dtype=bool)
            targets[a - lo :] = is_target[a:b]
            if targets.any():
                out.append(build_window(log, seq[lo:b], targets))
    return out


@dataclass(frozen=True)
class Batch:
    """Padded tokens and the (event, slot) of each scored output row (R, 2)."""

    tokens: Tokens
    rows: np.ndarray

    def to(self, device: torch.device) -> Batch:
        return Batch(self.tokens.to(device), self.rows)


def collate(windows: list[Window]) -> Batch:
    """Right-pad windows to the longest; score indices become flat (b·N + i)."""
    n = max(len(w) for w in windows)

    def pad(name: str, fill: int) -> torch.Tensor:
        out = np.full((len(windows), n), fill, dtype=np.int64)
        for b, w in enumerate(windows):
            out[b, : len(w)] = getattr(w, name)
        return torch.from_numpy(out)

    score = np.concatenate([b * n + w.score for b, w in enumerate(windows)])
    tokens = Tokens(
        pad("kind", PAD), pad("ids", 0), pad("event", -1), pad("time", 0), pad("position", 0), torch.from_numpy(score)
    )
    return Batch(tokens, np.concatenate([w.rows for w in windows]))


def plan_batches(
    lengths: np.ndarray, cells: int, max_batch: int, generator: torch.Generator | None = None
) -> list[np.ndarray]:
    """Groups of window indices with ``B · N_max² ≤ cells`` (at least one window each).

    Windows are sorted by length (ties and 32-token buckets shuffled by ``generator``) so a
    batch pads little; the batch order is shuffled too. Without a generator: sorted, in order.
    """
    idx = np.arange(len(lengths))
    if generator is not None:
        idx = torch.randperm(len(lengths), generator=generator).numpy()
        idx = idx[np.argsort(lengths[idx] // 32, kind="stable")]
    else:
        idx = idx[np.argsort(lengths, kind="stable")]
    groups: list[np.ndarray] = []
    current: list[int] = []
    for i in idx:
        longest = max([lengths[j] for j in current] + [lengths[i]])
        if current and (len(current) + 1 > max_batch or (len(current) + 1) * longest**2 > cells):
            groups.append(np.array(current))
            current = []
        current.append(int(i))
    if current:
        groups.append(np.array(current))
    if generator is not None:
        order = torch.randperm(len(groups), generator=generator).numpy()
        groups = [groups[o] for o in order]
    return groups


def batches(
    windows: list[Window], cells: int, max_batch: int, generator: torch.Generator | None = None
) -> Iterator[Batch]:
    """Collated batches of :func:`plan_batches`."""
    lengths = np.array([len(w) for w in windows])
    for group in plan_batches(lengths, cells, max_batch, generator):
        yield collate([windows[i] for i in group])
