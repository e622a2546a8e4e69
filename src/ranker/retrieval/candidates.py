"""Stage-1 candidates: a retrieval run's top-N items over the whole catalogue, per query.

A query is a user u and a position p of a jagged :class:`~ranker.retrieval.protocol.Sequences`
``S``: the input is ``S_u[0:p]`` (every item before the position), the target ``S_u[p]``.
Two kinds, both with every item of the input excluded and the tie rule of
:func:`ranker.metrics.retrieval_ranks` (PROTOCOLS.md, R-* protocols):

- **held out** (:func:`heldout_candidates`): each user's validation or test query, scored by
  the evaluation's own code (``score_batches`` and ``exclusion_mask`` of
  :mod:`ranker.retrieval.evaluation`), so recall@N of the candidates equals HR@N of
  ``ranker evaluate`` on that split (a test);
- **training prefixes** (:func:`prefix_candidates`): positions of the training sequences. The
  models are causal, so one forward pass over a window of a user's items gives the user vector
  of every prefix ending inside it (state j scores the item after ``s_j``). Windows hold at most
  ``max_len`` items: a prefix shorter than ``max_len`` is seen whole, exactly as a query with
  that input would see it (a test); a longer one (item index ``j ≥ max_len``) is read from the
  window that starts at ``a = (⌊(j − L)/h⌋ + 1)·h`` (L = max_len, h = ⌊L/2⌋), so it sees its
  last ``j − a + 1`` items, between h + 1 and L of them, where a query would see the last L.
  The query time of position j is the next item's time (the target's: the request time, as
  the protocol's queries use it).

Item and user ids here are internal (items ``1..num_items``, users = rows of the views);
:func:`candidates_table` writes raw ids.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch
from tqdm.auto import tqdm

from ranker.data.sources import atomic_write_bytes
from ranker.errors import DataError
from ranker.metrics import retrieval_ranks
from ranker.models.sequential import Retriever
from ranker.retrieval.batches import SeqBatch
from ranker.retrieval.data import ServingData
from ranker.retrieval.evaluation import exclusion_mask, score_batches
from ranker.retrieval.protocol import LeaveOneOut, Sequences, history_mask


@dataclass(frozen=True)
class Candidates:
    """The top-N lists of Q queries, best first.

    ``user`` (Q,) row of the user in the views; ``position`` (Q,) index of the target in the
    user's sequence (= the input length); ``target`` (Q,) item; ``target_score`` (Q,) its
    stage-1 score and ``target_rank`` (Q,) its rank over the whole catalogue (history excluded,
    ties against it); ``items`` (Q, N) int64 (0 where fewer than N items can be ranked) and
    ``scores`` (Q, N) float32.
    """

    user: np.ndarray
    position: np.ndarray
    target: np.ndarray
    target_score: np.ndarray
    target_rank: np.ndarray
    items: np.ndarray
    scores: np.ndarray

    def __len__(self) -> int:
        return len(self.user)

    @property
    def n(self) -> int:
        return int(self.items.shape[1])

    def top(self, n: int) -> Candidates:
        """The first `n` candidates of every list (the top-n of a top-N, n ≤ N)."""
        if not 1 <= n <= self.n:
            raise ValueError(f"n must be in [1, {self.n}], got {n=}")
        return replace(self, items=self.items[:, :n], scores=self.scores[:, :n])

    def hit_column(self) -> np.ndarray:
        """(Q,) column of the target in ``items``, −1 where it is not among them."""
        hit = self.items == self.target[:, None]
        return np.where(hit.any(1), hit.argmax(1), -1)

    def recall(self) -> float:
        """Share of queries whose target is among the candidates (the ceiling of stage 2)."""
        return float((self.hit_column() >= 0).mean()) if len(self) else float("nan")

    def save(self, path: Path) -> None:
        """Write the seven arrays to `path` (``.npz``, atomically: a killed writer leaves no file)."""
        buf = io.BytesIO()
        np.savez(buf, **{f.name: getattr(self, f.name) for f in fields(self)})
        atomic_write_bytes(Path(path), buf.getvalue())

    @classmethod
    def load(cls, path: Path) -> Candidates:
        """Candidates written by :meth:`save` (plain arrays only: no pickled objects are read)."""
        try:
            with np.load(Path(path), allow_pickle=False) as z:
                return cls(**{f.name: z[f.name] for f in fields(cls)})
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
            first = (str(exc).splitlines() or [""])[0][:200]
            raise DataError(f"{path}: not a candidates file ({type(exc).__name__}: {first})") from None


def _top(
    scores: torch.Tensor, exclude: torch.Tensor, targets: torch.Tensor, n: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(items (B, n), scores (B, n), target score (B,), target rank (B,)) of one scored batch."""
    ranks = retrieval_ranks(scores, targets, exclude)
    target_score = scores.gather(1, targets.view(-1, 1)).squeeze(1)
    s, i = scores.masked_fill(exclude, float("-inf")).topk(n, dim=1)
    i = i.masked_fill(torch.isinf(s), 0)  # fewer than n rankable items: no candidate
    return i.cpu().numpy(), s.float().cpu().numpy(), target_score.float().cpu().numpy(), ranks


@torch.no_grad()
def heldout_candidates(
    model: Retriever,
    data: LeaveOneOut,
    split: str,
    n: int,
    *,
    exclude: Literal["history", "input"] = "history",
    batch_users: int = 512,
) -> Candidates:
    """Top-`n` of every user's `split` ("valid" or "test") query, users in row order.

    Scores, exclusion and ranks are the evaluation's (:func:`~ranker.retrieval.evaluation.
    evaluate_model` with the same ``exclude``), so ``recall`` equals its HR@n.
    """
    inputs, targets = data.split(split)
    if not 1 <= n <= data.num_items:
        raise ValueError(f"n must be in [1, {data.num_items}], got {n=}")
    parts: list[tuple[np.ndarray, ...]] = []
    for users, model_input, scores in score_batches(model, data, split, batch_users):
        mask = exclusion_mask(inputs, users, model_input, data.num_items, exclude).to(scores.device)
        target = torch.from_numpy(targets[users]).to(scores.device)
        parts.append((users, *_top(scores, mask, target, n)))
    users = np.concatenate([p[0] for p in parts])
    order = np.argsort(users)
    items, scores_, t_score, t_rank = (np.concatenate([p[k] for p in parts])[order] for k in range(1, 5))
    rows = users[order]
    return Candidates(rows, inputs.lengths()[rows], targets[rows].astype(np.int64), t_score, t_rank, items, scores_)


def prefix_queries(
    lengths: np.ndarray, *, per_user: int | None = None, min_prefix: int = 1, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """(user, position) of the training-prefix queries, sorted by user then position.

    Every position p with ``min_prefix ≤ p < len_u`` (input ``S_u[0:p]``, target ``S_u[p]``),
    or a uniform subset of at most `per_user` of them per user, drawn once with
    ``default_rng(seed)`` (the same subset whatever the batching).

    Example:
        >>> prefix_queries(np.array([3, 2]))
        (array([0, 0, 1]), array([1, 2, 1]))
    """
    if min_prefix < 1:
        raise ValueError(f"min_prefix must be >= 1 (a query needs an input), got {min_prefix=}")
    counts = np.maximum(np.asarray(lengths, dtype=np.int64) - min_prefix, 0)
    starts = np.cumsum(counts) - counts
    user = np.repeat(np.arange(len(counts)), counts)
    position = min_prefix + np.arange(counts.sum()) - np.repeat(starts, counts)
    if per_user is not None and per_user < counts.max(initial=0):
        key = np.random.default_rng(seed).random(len(user))
        order = np.lexsort((key, user))  # users stay in blocks; a random order inside each
        keep = np.arange(len(user)) - np.repeat(starts, counts) < per_user
        chosen = np.sort(order[keep])
        user, position = user[chosen], position[chosen]
    return user, position


def last_queries(lengths: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(user, position) of the last `k` positions of every sequence (those with an input item),
    sorted by user then position: the queries whose targets a run trained with
    ``data.train_holdout_last: k`` never trained on.

    Example:
        >>> last_queries(np.array([5, 2, 1, 3]), 2)
        (array([0, 0, 1, 3, 3]), array([3, 4, 1, 1, 2]))
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    back = np.clip(lengths - 1, 0, k)  # a query needs one input item
    user = np.repeat(np.arange(len(lengths)), back)
    j = np.arange(back.sum()) - np.repeat(np.cumsum(back) - back, back)  # 0 .. back_u - 1
    return user, lengths[user] - back[user] + j


def window_starts(position: np.ndarray, max_len: int) -> np.ndarray:
    """First item index of the window that reads the prefix ending before `position`.

    The state of item ``j = position − 1`` comes from a window of at most ``max_len`` items that
    ends at or after j: 0 while ``j < max_len`` (the whole prefix), else ``(⌊(j − L)/h⌋ + 1)·h``
    with h = ⌊L/2⌋, so the state sees between h + 1 and L items.

    Example:
        >>> window_starts(np.array([1, 4, 5, 6, 7, 8]), max_len=4).tolist()
        [0, 0, 2, 2, 4, 4]
    """
    j = np.asarray(position, dtype=np.int64) - 1
    h = max(max_len // 2, 1)
    return np.where(j < max_len, 0, ((j - max_len) // h + 1) * h)


def prefixes(seqs: Sequences, user: np.ndarray, position: np.ndarray) -> Sequences:
    """The inputs ``S_u[0:p]`` of the queries, as sequences (one per query, in order)."""
    lens = np.asarray(position, dtype=np.int64)
    starts = np.repeat(seqs.offsets[user], lens)
    flat = starts + np.arange(lens.sum()) - np.repeat(np.cumsum(lens) - lens, lens)
    offsets = np.concatenate([[0], np.cumsum(lens)]).astype(np.int64)
    return Sequences(seqs.items[flat], offsets, None if seqs.times is None else seqs.times[flat])


@torch.no_grad()
def prefix_scores(
    model: Retriever,
    seqs: Sequences,
    user: np.ndarray,
    position: np.ndarray,
    *,
    max_len: int,
    batch_windows: int = 64,
    chunk: int = 2048,
    progress: bool = False,
) -> Iterator[tuple[np.ndarray, torch.Tensor, torch.Tensor]]:
    """(query indices, scores (P, I + 1), exclude (P, I + 1) bool) for chunks of the queries.

    One causal forward per window of a user's items (see the module docstring); windows are
    batched by length so little padding is computed. ``exclude`` marks padding and every item
    of the query's whole input (:func:`~ranker.retrieval.protocol.history_mask`).
    """
    model.eval()
    device = next(model.parameters()).device
    item_table = model.item_vectors()  # (I + 1, D)
    num_items = item_table.shape[0] - 1
    if len(user) and (np.asarray(position) < 1).any():
        raise ValueError("every query needs at least one input item (position >= 1)")
    position = np.asarray(position, dtype=np.int64)
    windows, window_of, end = _plan_windows(user, position, max_len)
    length = end - windows[:, 1]
    order = np.argsort(length, kind="stable")  # similar lengths share a batch: little padding
    queries_of = np.argsort(window_of, kind="stable")  # queries grouped by window
    first = np.searchsorted(window_of[queries_of], np.arange(len(windows)))
    last = np.searchsorted(window_of[queries_of], np.arange(len(windows)), side="right")
    slot = np.zeros(len(windows), dtype=np.int64)
    bar = tqdm(total=len(user), desc="stage-1 prefixes", unit="query", disable=not progress)
    for b in range(0, len(order), batch_windows):
        w = order[b : b + batch_windows]
        batch = _window_batch(seqs, windows[w, 0], windows[w, 1], end[w], max_len).to(device)
        states = model.encode(batch.items, batch.times, batch.query_times)  # (B, W, D)
        q = np.concatenate([queries_of[first[k] : last[k]] for k in w])
        slot[w] = np.arange(len(w))
        row = slot[window_of[q]]  # the query's window's row in the batch
        # left-padded: window item a + i sits in column W − length + i; the prefix ends at p − 1
        col = states.shape[1] - length[w][row] + (position[q] - 1 - windows[w, 1][row])
        vectors = states[torch.from_numpy(row), torch.from_numpy(col)]  # (P, D)
        for c in range(0, len(q), chunk):
            qc = q[c : c + chunk]
            scores = (vectors[c : c + chunk] @ item_table.T).float()  # (P, I + 1)
            inputs = prefixes(seqs, user[qc], position[qc])
            exclude = torch.from_numpy(history_mask(inputs, np.arange(len(qc)), num_items)).to(device)
            yield qc, scores, exclude
        bar.update(len(q))
    bar.close()


def _plan_windows(user: np.ndarray, position: np.ndarray, max_len: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(windows (W, 2) = (user, first item), window of each query (Q,), end of each window (W,)):
    a window runs from its first item to the last prefix end any of its queries needs."""
    start = window_starts(position, max_len)
    windows, window_of = np.unique(np.stack([user, start], 1), axis=0, return_inverse=True)
    window_of = window_of.reshape(-1)
    end = np.zeros(len(windows), dtype=np.int64)
    np.maximum.at(end, window_of, position)
    return windows, window_of, end


def _window_batch(seqs: Sequences, user: np.ndarray, start: np.ndarray, end: np.ndarray, max_len: int) -> SeqBatch:
    """Items ``S_u[a:e]`` of each window, left-padded; times and query times (the next item's
    time at every position) when the sequences have times."""
    lens = end - start
    flat = np.repeat(seqs.offsets[user] + start, lens) + np.arange(lens.sum()) - np.repeat(np.cumsum(lens) - lens, lens)
    offsets = np.concatenate([[0], np.cumsum(lens)]).astype(np.int64)
    rows = np.arange(len(user))
    items = Sequences(seqs.items[flat], offsets).padded(rows, max_len)
    times = qtimes = None
    if seqs.times is not None:
        times = Sequences(seqs.items[flat], offsets, seqs.times[flat]).padded(rows, max_len, times=True)
        qtimes = Sequences(seqs.items[flat], offsets, seqs.times[flat + 1]).padded(rows, max_len, times=True)
    return SeqBatch(items, torch.zeros_like(items), times, qtimes).trimmed()


def prefix_candidates(
    model: Retriever,
    seqs: Sequences,
    user: np.ndarray,
    position: np.ndarray,
    n: int,
    *,
    max_len: int,
    batch_windows: int = 64,
    progress: bool = False,
) -> Candidates:
    """Top-`n` of every query ``(user[q], position[q])`` of `seqs` (e.g. from
    :func:`prefix_queries` on the training sequences), in query order."""
    num_items = model.num_items
    if not 1 <= n <= num_items:
        raise ValueError(f"n must be in [1, {num_items}], got {n=}")
    user, position = np.asarray(user, dtype=np.int64), np.asarray(position, dtype=np.int64)
    targets = seqs.items[seqs.offsets[user] + position]
    items = np.zeros((len(user), n), dtype=np.int64)
    scores = np.zeros((len(user), n), dtype=np.float32)
    t_score = np.zeros(len(user), dtype=np.float32)
    t_rank = np.zeros(len(user), dtype=np.int64)
    for q, s, exclude in prefix_scores(
        model, seqs, user, position, max_len=max_len, batch_windows=batch_windows, progress=progress
    ):
        target = torch.from_numpy(targets[q]).to(s.device)
        items[q], scores[q], t_score[q], t_rank[q] = _top(s, exclude, target, n)
    return Candidates(user, position, targets, t_score, t_rank, items, scores)


def score_items(
    model: Retriever,
    seqs: Sequences,
    user: np.ndarray,
    position: np.ndarray,
    items: np.ndarray,
    *,
    max_len: int,
    batch_windows: int = 64,
    progress: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Stage-1 score (Q, K) float32 and whole-catalogue rank (Q, K) int64 of ``items[q]`` for
    query q: ``rank = 1 + #{j ≠ k not excluded : s_j ≥ s_k}`` (the protocol's rank, as if the
    item were the target)."""
    items = np.asarray(items, dtype=np.int64)
    out_s = np.zeros(items.shape, dtype=np.float32)
    out_r = np.zeros(items.shape, dtype=np.int64)
    for q, s, exclude in prefix_scores(
        model, seqs, user, position, max_len=max_len, batch_windows=batch_windows, progress=progress
    ):
        idx = torch.from_numpy(items[q]).to(s.device)
        mine = s.gather(1, idx)  # (P, K)
        ordered = s.masked_fill(exclude, float("-inf")).sort(dim=1).values  # ascending
        at_least = ordered.shape[1] - torch.searchsorted(ordered, mine.contiguous(), right=False)
        out_r[q] = (at_least + exclude.gather(1, idx).long()).cpu().numpy()
        out_s[q] = mine.cpu().numpy()
    return out_s, out_r


# --------------------------------------------------------------------------- raw-id tables


def candidates_table(c: Candidates, serving: ServingData, split: str) -> pa.Table:
    """One row per (query, candidate), raw ids: ``split``, ``user``, ``position`` (of the target
    in the user's sequence), ``target``, ``target_score``, ``target_rank``, ``item``, ``score``, ``rank`` (1 = best)."""
    q, k = np.nonzero(c.items > 0)
    users = serving.histories.column("user").combine_chunks().take(pa.array(c.user[q]))
    return pa.table(
        {
            "split": pa.array([split] * len(q), pa.string()),
            "user": users,
            "position": pa.array(c.position[q], pa.int64()),
            "target": serving.items.take(pa.array(c.target[q] - 1)),
            "target_score": pa.array(c.target_score[q], pa.float32()),
            "target_rank": pa.array(c.target_rank[q], pa.int64()),
            "item": serving.items.take(pa.array(c.items[q, k] - 1)),
            "score": pa.array(c.scores[q, k], pa.float32()),
            "rank": pa.array(k + 1, pa.int64()),
        }
    )


def read_candidates(table: pa.Table, serving: ServingData, split: str) -> Candidates:
    """The `split` rows of a :func:`candidates_table` back as :class:`Candidates` (internal ids).

    Every query must hold the same number of candidates (the N it was written with).
    """
    t = table.filter(pc.equal(table.column("split"), split))
    t = t.sort_by([("user", "ascending"), ("position", "ascending"), ("rank", "ascending")])
    row_of = pc.index_in(t.column("user"), value_set=serving.histories.column("user").combine_chunks())
    user = np.asarray(row_of.to_numpy(zero_copy_only=False), dtype=np.int64)
    position = t.column("position").to_numpy()
    new = np.concatenate([[True], (user[1:] != user[:-1]) | (position[1:] != position[:-1])])
    starts = np.flatnonzero(new)
    sizes = np.diff(np.append(starts, len(user)))
    if len(sizes) and (sizes != sizes[0]).any():
        raise ValueError(f"split {split!r}: queries hold different numbers of candidates")
    n = int(sizes[0]) if len(sizes) else 0

    def internal(col: str) -> np.ndarray:
        idx = pc.index_in(t.column(col), value_set=serving.items).to_numpy(zero_copy_only=False)
        return np.asarray(idx, dtype=np.int64) + 1

    return Candidates(
        user[starts],
        position[starts],
        internal("target")[starts],
        t.column("target_score").to_numpy().astype(np.float32)[starts],
        t.column("target_rank").to_numpy()[starts],
        internal("item").reshape(-1, n),
        t.column("score").to_numpy().astype(np.float32).reshape(-1, n),
    )
