"""Tensors of next-item training and of queries, built once from jagged sequences.

Training: a user's training sequence ``s_1..s_n`` becomes the input ``s_1..s_{n-1}`` and the
targets ``s_2..s_n`` (the last ``max_len`` of each, left-padded with 0), so one forward pass
trains every position. The query time of position i is the target's time ``t_{i+1}``.
Queries (evaluation, serving): the input is the user's history and the query time of the last
position is the request time (the held-out target's time in the protocol).

Batches are trimmed to the longest real sequence they hold: the models' outputs do not depend
on the amount of left padding, so trimming only saves work.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from operator import itemgetter

import numpy as np
import torch

from ranker.retrieval.protocol import Sequences


@dataclass(frozen=True)
class SeqBatch:
    """items, targets (B, L) int64, 0 = padding / no target; times, query_times (B, L) or None."""

    items: torch.Tensor
    targets: torch.Tensor
    times: torch.Tensor | None
    query_times: torch.Tensor | None

    def apply(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> SeqBatch:
        """`fn` applied to each tensor of the batch (absent times stay None)."""

        def opt(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else fn(t)

        return SeqBatch(fn(self.items), fn(self.targets), opt(self.times), opt(self.query_times))

    def to(self, device: torch.device) -> SeqBatch:
        return self.apply(lambda t: t.to(device, non_blocking=True))

    def trimmed(self) -> SeqBatch:
        """Drop the leading columns that are padding in every row."""
        width = int((self.items > 0).sum(1).max()) if len(self.items) else 0
        width = max(width, 1)
        return self.apply(lambda t: t[:, -width:])

    def shard(self, rank: int, world_size: int) -> SeqBatch | None:
        """Rows ``rank, rank + W, …`` of the first ⌊B / W⌋·W rows, trimmed (data parallelism: the
        W ranks' shards partition the batch); None when the batch has fewer than W rows."""
        stop = len(self.items) - len(self.items) % world_size
        if stop == 0:
            return None
        rows = slice(rank, stop, world_size)
        return self.apply(lambda t: t[rows]).trimmed()


@dataclass(frozen=True)
class TrainSequences:
    """Padded next-item training tensors of every user with at least two training items."""

    items: torch.Tensor  # (U, L)
    targets: torch.Tensor  # (U, L)
    times: torch.Tensor | None
    query_times: torch.Tensor | None

    @classmethod
    def build(cls, train: Sequences, max_len: int, share: float = 1.0) -> TrainSequences:
        """``share`` < 1 keeps that share of the eligible users, a subset fixed by the data
        alone (``default_rng(0)``), so every model seed trains on the same users."""
        users = np.flatnonzero(train.lengths() >= 2)
        if share < 1.0:
            keep = np.random.default_rng(0).permutation(len(users))[: max(1, round(share * len(users)))]
            users = users[np.sort(keep)]
        sub = train.take(users)
        inputs, targets = sub.drop(last=1), sub.drop(first=1)
        everyone = np.arange(len(users))
        times = qtimes = None
        if train.times is not None:
            times = inputs.padded(everyone, max_len, times=True)
            qtimes = targets.padded(everyone, max_len, times=True)
        return cls(inputs.padded(everyone, max_len), targets.padded(everyone, max_len), times, qtimes)

    def __len__(self) -> int:
        return len(self.items)

    def num_targets(self) -> int:
        return int((self.targets > 0).sum())

    def batches(self, batch_size: int, generator: torch.Generator, length_window: int = 0) -> Iterator[SeqBatch]:
        """Shuffled, trimmed batches of `batch_size` users.

        ``length_window`` > 0: the shuffled users are cut into windows of that many batches,
        each window is sorted by sequence length before it is cut into batches, and the batch
        order is shuffled, so batches hold sequences of similar length and trimming removes
        most padding (attention costs L² per sequence).
        """
        order = torch.randperm(len(self), generator=generator)
        if length_window > 0:
            lengths = (self.items > 0).sum(1)
            span = batch_size * length_window
            order = torch.cat([w[torch.argsort(lengths[w], stable=True)] for w in order.split(span)])
        starts = torch.arange(0, len(self), batch_size)
        if length_window > 0:
            starts = starts[torch.randperm(len(starts), generator=generator)]
        every = SeqBatch(self.items, self.targets, self.times, self.query_times)
        for start in starts.tolist():
            yield every.apply(itemgetter(order[start : start + batch_size])).trimmed()


def query_batch(seqs: Sequences, users: np.ndarray, max_len: int, request_times: np.ndarray | None) -> SeqBatch:
    """The inputs of `users` for scoring the next item; targets are empty (zeros).

    ``query_times`` = the next input's time at every position and the request time at the last
    one (the position's own time when `request_times` is None).
    """
    items = seqs.padded(users, max_len)
    times = qtimes = None
    if seqs.times is not None:
        times = seqs.padded(users, max_len, times=True)
        last = times[:, -1] if request_times is None else torch.from_numpy(request_times[users])
        qtimes = torch.cat([times[:, 1:], last.reshape(-1, 1).to(times.dtype)], dim=1)
    return SeqBatch(items, torch.zeros_like(items), times, qtimes).trimmed()
