"""Leave-one-out next-item evaluation over the whole catalogue (PROTOCOLS.md, R-* protocols).

Per user with chronological items ``s_1 .. s_n``: training sequence ``s_1 .. s_{n-2}``;
validation input ``s_1 .. s_{n-2}``, target ``s_{n-1}``; test input ``s_1 .. s_{n-1}``, target
``s_n``. Every item of the input (all of it, not only the truncated model input) is excluded
from the ranking; the target never is. Ranks use the tie rule of :mod:`ranker.metrics`.
Item ids are ``1 .. num_items``; column 0 of a score matrix (padding) is always excluded.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import torch

from ranker.data.events import chronological
from ranker.errors import DataError
from ranker.metrics import metrics_from_ranks, retrieval_ranks


@dataclass(frozen=True)
class Sequences:
    """Jagged per-user item sequences: ``items[offsets[u]:offsets[u+1]]`` is user u's."""

    items: np.ndarray  # (total,) int64
    offsets: np.ndarray  # (U+1,) int64
    times: np.ndarray | None = None  # (total,) int64 unix seconds, parallel to items

    @classmethod
    def from_lists(
        cls,
        items: pa.Array | pa.ChunkedArray | list[list[int]],
        times: pa.Array | pa.ChunkedArray | list[list[int]] | None = None,
    ) -> Sequences:
        """Per-user lists of items (and unix seconds, one per item) as jagged arrays."""
        flat, offsets = _flat(items)
        return cls(flat, offsets, None if times is None else _flat(times)[0])

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def _index(self, users: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(flat index of each element of `users`' sequences in order, position in its
        sequence, the sequences' lengths)."""
        lens = self.lengths()[users]
        pos = np.arange(lens.sum()) - np.repeat(np.cumsum(lens) - lens, lens)
        return np.repeat(self.offsets[users], lens) + pos, pos, lens

    def gather(self, users: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Flattened items of `users`: (row in `users`, position in sequence, item, lengths)."""
        flat, pos, lens = self._index(users)
        return np.repeat(np.arange(len(users)), lens), pos, self.items[flat], lens

    def take(self, users: np.ndarray) -> Sequences:
        """The sequences of `users`, in that order."""
        flat, _, lens = self._index(users)
        return Sequences(
            self.items[flat], np.concatenate([[0], np.cumsum(lens)]), None if self.times is None else self.times[flat]
        )

    def drop(self, first: int = 0, last: int = 0) -> Sequences:
        """Every sequence without its `first` first and `last` last elements (empty if it has fewer).

        Example:
            >>> s = Sequences.from_lists([[1, 2, 3], [4]]).drop(last=2)
            >>> s.items.tolist(), s.offsets.tolist()
            ([1], [0, 1, 1])
        """
        lens = self.lengths()
        pos = np.arange(len(self.items)) - np.repeat(self.offsets[:-1], lens)
        keep = (pos >= first) & (pos < np.repeat(lens - last, lens))
        return Sequences(
            self.items[keep],
            np.concatenate([[0], np.cumsum(np.maximum(lens - first - last, 0))]),
            None if self.times is None else self.times[keep],
        )

    def padded(self, users: np.ndarray, max_len: int, *, times: bool = False) -> torch.Tensor:
        """The last `max_len` items (or their times) of each user, left-padded with 0.

        Shape: (len(users), max_len) int64.
        """
        if times and self.times is None:
            raise ValueError("these sequences have no timestamps")
        flat, pos, lens = self._index(users)
        vals = (self.times if times else self.items)[flat]  # type: ignore[index]
        row = np.repeat(np.arange(len(users)), lens)
        skip = np.repeat(np.maximum(lens - max_len, 0), lens)
        keep = pos >= skip
        col = max_len - np.repeat(np.minimum(lens, max_len), lens) + pos - skip
        out = np.zeros((len(users), max_len), dtype=np.int64)
        out[row[keep], col[keep]] = vals[keep]
        return torch.from_numpy(out)


@dataclass(frozen=True)
class LeaveOneOut:
    """The three views of a retrieval dataset under leave-one-out."""

    num_items: int
    max_len: int
    train: Sequences  # all but the last two items
    valid_input: Sequences
    valid_target: np.ndarray  # (U,)
    test_input: Sequences
    test_target: np.ndarray  # (U,)
    valid_target_time: np.ndarray | None = None  # (U,) the targets' timestamps, if known
    test_target_time: np.ndarray | None = None
    users: np.ndarray | None = None  # (U,) the dataset's user ids, row order

    def split(self, name: str) -> tuple[Sequences, np.ndarray]:
        if name == "valid":
            return self.valid_input, self.valid_target
        if name == "test":
            return self.test_input, self.test_target
        raise ValueError(f"split must be 'valid' or 'test', got {name!r}")

    def target_times(self, name: str) -> np.ndarray | None:
        """(U,) timestamps of the split's targets (the request time), or None."""
        self.split(name)
        return self.valid_target_time if name == "valid" else self.test_target_time


def _flat(lists: pa.Array | pa.ChunkedArray | list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    lists = pa.array(lists) if isinstance(lists, list) else lists
    if isinstance(lists, pa.ChunkedArray):
        lists = lists.combine_chunks()
    flat = np.asarray(lists.flatten().to_numpy(zero_copy_only=False), dtype=np.int64)
    offsets = lists.offsets.to_numpy().astype(np.int64)
    return flat, offsets - offsets[0]


def event_sequences(
    user: np.ndarray, item: np.ndarray, time: np.ndarray | None, num_users: int
) -> tuple[Sequences, np.ndarray]:
    """Every user's events in (time, input row) order, and the permutation applied.

    `user` (n,) indices ``0..num_users-1``, `item` (n,) ids ``1..num_items``, `time` (n,) or
    None (then input order is the order). The one ordering of both the built-in recipes and
    own event files.
    """
    order = chronological(user, time)
    offsets = np.concatenate([[0], np.cumsum(np.bincount(user, minlength=num_users))]).astype(np.int64)
    return Sequences(
        item[order].astype(np.int64), offsets, None if time is None else time[order].astype(np.int64)
    ), order


def leave_one_out_views(seqs: Sequences, num_items: int, max_len: int, users: np.ndarray | None = None) -> LeaveOneOut:
    """Cut every user's chronological sequence (at least 3 items) into the three views.

    Times travel with the items; the targets' times are kept as the request times of the
    validation and test queries.
    """
    flat, offsets, tflat = seqs.items, seqs.offsets, seqs.times
    lengths = np.diff(offsets)
    if (lengths < 3).any():
        raise ValueError(f"{int((lengths < 3).sum())} users have fewer than 3 items")
    ends = offsets[1:]
    train = seqs.drop(last=2)
    return LeaveOneOut(
        num_items,
        max_len,
        train,
        train,
        flat[ends - 2],
        seqs.drop(last=1),
        flat[ends - 1],
        valid_target_time=None if tflat is None else tflat[ends - 2],
        test_target_time=None if tflat is None else tflat[ends - 1],
        users=users,
    )


def time_split_views(seqs: Sequences, period: np.ndarray, num_items: int, max_len: int) -> LeaveOneOut:
    """Views of a global time split: `period` (total,) 0/1/2 per event of `seqs`, non-decreasing
    within a user. Train = period-0 events; a user's valid (test) target is their first
    period-1 (period-2) event that has at least one earlier event, the input every earlier
    event. Users without one have no query in that split."""
    lengths = seqs.lengths()
    owner = np.repeat(np.arange(len(seqs)), lengths)

    def subset(keep: np.ndarray) -> Sequences:
        offsets = np.concatenate([[0], np.cumsum(np.bincount(owner[keep], minlength=len(seqs)))])
        return Sequences(seqs.items[keep], offsets.astype(np.int64), None if seqs.times is None else seqs.times[keep])

    def queries(p: int) -> tuple[Sequences, np.ndarray, np.ndarray | None]:
        before = np.bincount(owner[period < p], minlength=len(seqs))  # events before the target
        first = seqs.offsets[:-1] + before
        has = (before > 0) & (before < lengths)
        has[has] = period[first[has]] == p
        pos = np.arange(len(owner)) - seqs.offsets[owner]
        inp = subset(has[owner] & (pos < before[owner]))
        inp = Sequences(inp.items, np.concatenate([[0], np.cumsum(before[has])]).astype(np.int64), inp.times)
        t = None if seqs.times is None else seqs.times[first[has]]
        return inp, seqs.items[first[has]], t

    valid_input, valid_target, valid_time = queries(1)
    test_input, test_target, test_time = queries(2)
    for name, target in (("valid", valid_target), ("test", test_target)):
        if not len(target):
            raise DataError(
                f"data.split: no user has a {name} target (an event in the {name} "
                "period after at least one earlier event)"
            )
    return LeaveOneOut(
        num_items,
        max_len,
        subset(period == 0),
        valid_input,
        valid_target,
        test_input,
        test_target,
        valid_time,
        test_time,
    )


ScoreFn = Callable[[torch.Tensor, np.ndarray], torch.Tensor]  # (inputs (U, L), users) -> (U, I+1)


def evaluate(
    score_fn: ScoreFn,
    data: LeaveOneOut,
    split: str = "test",
    ks: tuple[int, ...] = (10, 50, 200),
    batch_users: int = 1024,
) -> dict[str, float]:
    """HR@K, NDCG@K, MRR of `score_fn` on `split`, full catalogue, history excluded."""
    inputs, targets = data.split(split)
    ranks = []
    for start in range(0, len(inputs), batch_users):
        users = np.arange(start, min(start + batch_users, len(inputs)))
        scores = score_fn(inputs.padded(users, data.max_len), users).float()  # (U, I+1)
        exclude = history_mask(inputs, users, data.num_items)
        ranks.append(retrieval_ranks(scores, torch.from_numpy(targets[users]), torch.from_numpy(exclude)))
    return metrics_from_ranks(np.concatenate(ranks), ks)


def history_mask(seqs: Sequences, users: np.ndarray, num_items: int) -> np.ndarray:
    """(len(users), num_items+1) bool: True for padding column 0 and every item in the input."""
    mask = np.zeros((len(users), num_items + 1), dtype=bool)
    mask[:, 0] = True
    rows, _, cols, _ = seqs.gather(users)
    mask[rows, cols] = True
    return mask


def popularity_scorer(data: LeaveOneOut) -> ScoreFn:
    """Most-popular baseline: an item's count in the training sequences (same for every user)."""
    counts = torch.from_numpy(np.bincount(data.train.items, minlength=data.num_items + 1).astype(np.float32))

    def score(inputs: torch.Tensor, users: np.ndarray) -> torch.Tensor:
        return counts.expand(inputs.shape[0], -1)

    return score
