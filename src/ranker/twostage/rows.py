"""Stage-2 rows: (user, history before the position, candidate item, label) per query.

A query is a user u and a position p of the user's full chronological sequence ``S_u`` (the
leave-one-out protocol's: training positions ``p < n_u − 2``, the validation target at
``n_u − 2``, the test target at ``n_u − 1``). Its rows share the history ``S_u[0:p]`` and
differ in the candidate:

- **training** (:func:`training_rows`), from the training sequences only: the positive
  ``S_u[p]``, `hard` negatives drawn from the stage-1 top-N of the prefix (uniformly, or with
  ``hard_alpha`` α > 0 with weight ``r^−α`` for stage-1 rank r: the items a top 10 is contested
  by, while the lower ranks still give a negative now and then) and `sampled` negatives drawn
  uniformly from the catalogue. Negatives are never an item of the
  user's own sequence (``S_u``, all of it: consumed items are not negatives, the convention of
  SASRec's negative sampling), so no training row names a validation or test target;
- **validation / test** (:func:`heldout_rows`): the N stage-1 candidates of the held-out
  query, label 1 on the target (a query whose target is not among them has no positive row:
  stage 2 cannot recover it, :mod:`ranker.twostage.evaluate` counts it as a miss).

Every row carries the stage-1 score and whole-catalogue rank of its candidate for that
prefix (:func:`ranker.retrieval.candidates.score_items`: the model's view of ``S_u[0:p]``
only). What the stage-1 model saw: under the protocol (``train.protocol: select_on_valid``)
it was trained on the training sequences, i.e. every training row's positive was one of its
training targets (its scores on training prefixes are fitted, on held-out ones not), and it
never saw a validation or test target as a target; the validation items picked its epoch.
``train.protocol: reference`` trains on the validation items: its scores would carry the
validation labels, so :func:`check_stage1` refuses such a run.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from ranker.config.retrieval import RetrievalRunConfig
from ranker.errors import ConfigError
from ranker.models.sequential import Retriever
from ranker.retrieval.candidates import Candidates, score_items
from ranker.retrieval.data import ServingData
from ranker.retrieval.protocol import LeaveOneOut, Sequences, history_mask


@dataclass(frozen=True)
class QueryRows:
    """Q queries of up to K rows: ``user`` (Q,) view rows, ``position`` (Q,) target positions
    in the full sequences, ``items`` (Q, K) candidates (0 = no row), ``labels`` (Q, K) 0/1,
    ``score`` (Q, K) float32 stage-1 scores, ``rank`` (Q, K) int64 stage-1 ranks."""

    user: np.ndarray
    position: np.ndarray
    items: np.ndarray
    labels: np.ndarray
    score: np.ndarray
    rank: np.ndarray


def check_stage1(cfg: RetrievalRunConfig) -> None:
    """Refuse a stage-1 run whose training saw the validation targets (its scores would leak them)."""
    if cfg.train.trains_on_valid:
        raise ConfigError(
            f"stage 1: train.protocol {cfg.train.protocol!r} trains on the validation items, so its scores on the "
            "validation queries carry their labels; use a select_on_valid run"
        )
    if cfg.data.split.kind != "leave_one_out":
        raise ConfigError("stage 1: two-stage rows follow the leave-one-out protocol (data.split.kind)")


def full_sequences(data: LeaveOneOut) -> Sequences:
    """Every user's whole sequence: the test input followed by the test target (and its time)."""
    inp = data.test_input
    lens = inp.lengths() + 1
    offsets = np.concatenate([[0], np.cumsum(lens)]).astype(np.int64)
    ends = offsets[1:] - 1
    keep = np.ones(offsets[-1], dtype=bool)
    keep[ends] = False
    items = np.empty(offsets[-1], dtype=np.int64)
    items[keep], items[ends] = inp.items, data.test_target
    times = None
    if inp.times is not None and data.test_target_time is not None:
        times = np.empty(offsets[-1], dtype=np.int64)
        times[keep], times[ends] = inp.times, data.test_target_time
    return Sequences(items, offsets, times)


def training_rows(
    model: Retriever,
    data: LeaveOneOut,
    prefix: Candidates,
    *,
    hard: int,
    sampled: int,
    seed: int,
    hard_alpha: float = 0.0,
    chunk: int = 4096,
    progress: bool = False,
) -> QueryRows:
    """Positive + `hard` + `sampled` negatives of each training-prefix query of `prefix`
    (candidates of ``data.train`` prefixes), drawn with one ``default_rng(seed)``.

    Hard negatives are drawn without replacement with weight ``w_r = r^−hard_alpha`` for the
    candidate at stage-1 rank r of the prefix's top N (0: uniform), by the exponential keys of
    Efraimidis & Spirakis ("Weighted random sampling with a reservoir", IPL 2006): the `hard`
    smallest ``E / w_r``, E ~ Exp(1), E = −log(1 − U) so that α = 0 keeps the uniform draw's order."""
    num_items = data.num_items
    if hard < 0 or sampled < 0 or sampled >= num_items or not hard_alpha >= 0:
        raise ValueError(
            f"need hard >= 0, 0 <= sampled < {num_items} and hard_alpha >= 0, got {hard=}, {sampled=}, {hard_alpha=}"
        )
    full = full_sequences(data)
    rng = np.random.default_rng(seed)
    q_all = len(prefix)
    items = np.zeros((q_all, 1 + hard + sampled), dtype=np.int64)
    items[:, 0] = prefix.target
    for c in range(0, q_all, chunk):
        rows = slice(c, min(c + chunk, q_all))
        banned = history_mask(full, prefix.user[rows], num_items)  # (Qc, I + 1): the user's items, padding
        if hard:
            pool = prefix.items[rows]
            keys = rng.random(pool.shape)
            if hard_alpha:  # E / w_r with E = −log(1 − U): monotone in U, so α = 0 is the uniform order
                keys = -np.log1p(-keys) * np.arange(1, pool.shape[1] + 1, dtype=np.float64) ** hard_alpha
            keys[(pool == 0) | np.take_along_axis(banned, pool, axis=1)] = np.inf
            pick = np.argsort(keys, axis=1, kind="stable")[:, :hard]
            items[rows, 1 : 1 + hard] = np.where(
                np.isinf(np.take_along_axis(keys, pick, axis=1)), 0, np.take_along_axis(pool, pick, axis=1)
            )
        if sampled:
            keys = rng.random(banned.shape)
            keys[banned] = np.inf
            np.put_along_axis(keys, items[rows, 1 : 1 + hard], np.inf, axis=1)  # no hard one twice
            pick = np.argpartition(keys, sampled - 1, axis=1)[:, :sampled]  # the `sampled` smallest keys
            items[rows, 1 + hard :] = np.where(np.isinf(np.take_along_axis(keys, pick, axis=1)), 0, pick)
    labels = np.zeros(items.shape, dtype=np.int8)
    labels[:, 0] = 1
    score, rank = score_items(
        model, data.train, prefix.user, prefix.position, items, max_len=data.max_len, progress=progress
    )
    empty = items == 0
    return QueryRows(prefix.user, prefix.position, items, labels, np.where(empty, 0, score), np.where(empty, 0, rank))


def heldout_rows(c: Candidates) -> QueryRows:
    """The N candidates of each held-out query, label 1 on its target, stage-1 rank = list order."""
    k = np.broadcast_to(np.arange(1, c.n + 1), c.items.shape)
    return QueryRows(
        c.user,
        c.position,
        c.items,
        (c.items == c.target[:, None]).astype(np.int8),
        c.scores,
        np.where(c.items > 0, k, 0),
    )


def _tails(seqs: Sequences, user: np.ndarray, position: np.ndarray, length: int) -> tuple[np.ndarray, np.ndarray]:
    """(flat indices into `seqs`, per-query counts) of the last `length` items of ``S_u[0:p]``."""
    counts = np.minimum(position, length)
    first = seqs.offsets[user] + position - counts
    flat = np.repeat(first, counts) + np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    return flat, counts


def rows_table(q: QueryRows, data: LeaveOneOut, serving: ServingData, *, history: int) -> pa.Table:
    """One row per candidate, raw ids: ``query`` (index of the query), ``slot`` (column in its
    list), ``user_id``, ``item_id``, ``label``, ``stage1_score``, ``stage1_rank``, ``hist_len``
    (= p, the number of earlier items), ``hist_items`` (the last `history` items of
    ``S_u[0:p]``, oldest first, raw ids) and, when the data has times, ``hist_secs`` (seconds
    from each of them to the target's time, the request time)."""
    full = full_sequences(data)
    flat, counts = _tails(full, q.user, q.position, history)
    offsets = pa.array(np.concatenate([[0], np.cumsum(counts)]).astype(np.int32))
    per_query = {"hist_items": pa.ListArray.from_arrays(offsets, serving.items.take(pa.array(full.items[flat] - 1)))}
    if full.times is not None:
        request = np.repeat(full.times[full.offsets[q.user] + q.position], counts)
        per_query["hist_secs"] = pa.ListArray.from_arrays(offsets, pa.array(request - full.times[flat], pa.int64()))
    qi, ki = np.nonzero(q.items > 0)
    take = pa.array(qi)
    users = serving.histories.column("user").combine_chunks()
    columns: dict[str, pa.Array] = {
        "query": pa.array(qi, pa.int64()),
        "slot": pa.array(ki, pa.int64()),
        "user_id": users.take(pa.array(q.user[qi])),
        "item_id": serving.items.take(pa.array(q.items[qi, ki] - 1)),
        "label": pa.array(q.labels[qi, ki], pa.int8()),
        "stage1_score": pa.array(q.score[qi, ki], pa.float32()),
        "stage1_rank": pa.array(q.rank[qi, ki], pa.int64()),
        "hist_len": pa.array(q.position[qi], pa.int64()),
    }
    columns.update({name: col.take(take) for name, col in per_query.items()})
    return pa.table(columns)
