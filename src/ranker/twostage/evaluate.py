"""The final list of two stages against stage 1 alone (PROTOCOLS.md, TS-ML1M).

Final list = the N stage-1 candidates in stage-2 order. The target's rank is its place in that
list with ties counting against it (:func:`ranker.metrics.retrieval_ranks` over the N
candidates); a target outside the N is a miss: rank N + 1, so HR@K and NDCG@K are 0 for every
K ≤ N (metrics with K > N are not reported) and MRR counts it 1/(N + 1). Stage 1 alone = the
same N candidates in stage-1 order, so both arms share every miss and differ only inside the N.

:func:`paired_bootstrap` resamples users with replacement and reports the mean difference of a
per-user metric with its percentile interval (Efron & Tibshirani, "An Introduction to the
Bootstrap", 1993, ch. 13). :func:`request_ms` times stage 2 for one user request of N
candidates: the request's rows through the run's own preprocessor and model, one user at a time.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch

from ranker.data.tensors import TensorData
from ranker.metrics import metrics_from_ranks, retrieval_ranks
from ranker.ranking.run import load_run
from ranker.retrieval.candidates import Candidates
from ranker.tasks import TaskSpec
from ranker.train.evaluate import predict

METRICS = ("HR@10", "NDCG@10", "HR@50", "MRR")


def stage2_scores(run_dir: Path, table: pa.Table, *, chunk: int = 200_000, batch_size: int = 8192) -> np.ndarray:
    """(rows,) the stage-2 run's output of its first task for every row of `table`, in order."""
    cfg, model, pre = load_run(run_dir)
    spec = TaskSpec.from_tasks(cfg.data.tasks)
    out = []
    for start in range(0, table.num_rows, chunk):
        enc = pre.transform(table.slice(start, chunk), source=f"{run_dir} rows")
        out.append(predict(model, TensorData.from_encoded(enc), batch_size, torch.device("cpu"), spec.outputs)[:, 0])
    return np.concatenate(out) if out else np.zeros(0, dtype=np.float32)


def as_lists(query: np.ndarray, slot: np.ndarray, values: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """(Q, N) float64 matrix of per-row `values` placed at (query, slot); −inf where no row."""
    out = np.full(shape, -np.inf)
    out[query, slot] = values
    return out


def final_ranks(stage2: np.ndarray, cands: Candidates) -> tuple[np.ndarray, np.ndarray]:
    """(two-stage ranks, stage-1-alone ranks), (Q,) each, of the targets of `cands`.

    `stage2` (Q, N) scores of the candidates (−inf for an empty slot). Inside the list: the
    rank by stage-2 (resp. stage-1) score, ties against the target; a target outside the N:
    N + 1 in both (a miss).

    Example:
        >>> c = Candidates(np.array([0, 1]), np.array([3, 4]), np.array([7, 9]), np.zeros(2),
        ...                np.array([2, 5]), np.array([[5, 7, 6], [1, 2, 3]]),
        ...                np.array([[0.9, 0.8, 0.1], [0.9, 0.5, 0.4]]))
        >>> final_ranks(np.array([[0.2, 0.7, 0.1], [0.3, 0.2, 0.1]]), c)
        (array([1, 4]), array([2, 4]))
    """
    hit = cands.hit_column()
    two = np.full(len(cands), cands.n + 1, dtype=np.int64)
    one = two.copy()
    found = hit >= 0
    if found.any():
        empty = cands.items[found] == 0
        two[found] = retrieval_ranks(stage2[found], hit[found], empty)
        one[found] = retrieval_ranks(cands.scores[found].astype(np.float64), hit[found], empty)
    return two, one


BLEND_WEIGHTS = (0.0, 0.5, 1.0, 2.0, 5.0, 10.0, 15.0, 20.0, 30.0, 50.0, 100.0, 150.0, 200.0, 300.0, 500.0, 1000.0)


def blend(probs: np.ndarray, cands: Candidates, weight: float, feature: np.ndarray | None = None) -> np.ndarray:
    """(Q, N) ``logit(p) + weight · s1``: a stage-2 probability fused with the stage-1 score of
    the same candidate (−inf on empty slots). A ranker that never saw the stage-1 score (the
    generative one reads item ids) gets it after the fact, with one weight. `feature` (Q, N) or
    (N,): fused instead of the stage-1 score (e.g. −log of the stage-1 rank).

    Example:
        >>> c = Candidates(np.array([0]), np.array([3]), np.array([7]), np.zeros(1),
        ...                np.array([1]), np.array([[5, 7, 0]]), np.array([[0.9, 0.2, 0.0]]))
        >>> blend(np.array([[0.5, 0.5, 0.5]]), c, 10.0)
        array([[  9.,   2., -inf]])
        >>> blend(np.array([[0.5, 0.5, 0.5]]), c, 1.0, feature=-np.log([1.0, 2.0, 3.0])).round(4)  # − log rank
        array([[ 0.    , -0.6931,    -inf]])
    """
    return np.where(cands.items > 0, fuse(probs, cands.scores if feature is None else feature, weight), -np.inf)


def fuse(probs: np.ndarray, stage1: np.ndarray, weight: float) -> np.ndarray:
    """``logit(p) + weight · s1`` elementwise, p clipped to [1e-7, 1 − 1e-7]: the order the
    benchmark measures (:func:`blend`) and the one a bundle built with ``--stage1-weight`` serves.

    Example:
        >>> fuse(np.array([0.5, 0.8]), np.array([0.1, 0.0]), 10.0).round(4)
        array([1.    , 1.3863])
    """
    return _logit(probs) + weight * np.asarray(stage1, dtype=np.float64)


def _clipped(probs: np.ndarray) -> np.ndarray:
    """`probs` in float64, clipped to [1e-7, 1 − 1e-7] (finite logits)."""
    return np.clip(np.asarray(probs, dtype=np.float64), 1e-7, 1 - 1e-7)


def _logit(probs: np.ndarray) -> np.ndarray:
    """``log(p / (1 − p))`` of the :func:`_clipped` probabilities."""
    p = _clipped(probs)
    return np.log(p) - np.log1p(-p)


def cross_fit(probs: Sequence[np.ndarray], query: np.ndarray, *, held_out: bool) -> np.ndarray:
    """(rows,) the probability of a two-fold cross-fitted stage 2 for each row: fold k trained on
    the queries with ``query % 2 == k`` (``probs[k]`` its output on every row). A row of a
    query a fold trained on (`held_out` false: the validation queries both folds came from) is
    scored by the other fold only, so every score is out of fold; a query neither trained on
    (`held_out`: test) gets the mean of the two folds' logits. Cross-fitting as in Chernozhukov
    et al., "Double/debiased machine learning", Econometrics Journal 2018 (two folds, swapped).

    Example:
        >>> p0, p1 = np.array([0.9, 0.2, 0.5]), np.array([0.1, 0.6, 0.5])
        >>> cross_fit([p0, p1], np.array([0, 1, 2]), held_out=False)  # query 0, 2 even: fold 1
        array([0.1, 0.2, 0.5])
        >>> cross_fit([p0, p1], np.array([0, 1, 2]), held_out=True).round(4)
        array([0.5   , 0.3798, 0.5   ])
    """
    if len(probs) != 2:
        raise ValueError(f"cross_fit: two folds' outputs expected, got {len(probs)}")
    if held_out:
        return 1.0 / (1.0 + np.exp(-(_logit(probs[0]) + _logit(probs[1])) / 2))
    return np.where(np.asarray(query) % 2 == 0, _clipped(probs[1]), _clipped(probs[0]))


def pick_blend(
    probs: np.ndarray, cands: Candidates, weights: Sequence[float] = BLEND_WEIGHTS, feature: np.ndarray | None = None
) -> float:
    """The weight of `weights` with the best NDCG@10 of the blended lists of `cands` (the
    validation queries; the first of equals); `feature` as in :func:`blend`."""
    score = [
        metrics_from_ranks(final_ranks(blend(probs, cands, w, feature), cands)[0], ks=(10,))["NDCG@10"] for w in weights
    ]
    return float(weights[int(np.argmax(score))])


def top_popularity(scores: np.ndarray, items: np.ndarray, counts: np.ndarray, k: int = 10) -> float:
    """Mean count (e.g. in the training sequences) of the `k` items each list puts first: does a
    list lean on popular items? `scores`, `items` (Q, N); `counts` indexed by item id.

    Example:
        >>> top_popularity(np.array([[0.9, 0.1, 0.5]]), np.array([[1, 2, 3]]), np.array([0, 10, 99, 4]), k=2)
        7.0
    """
    top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return float(counts[np.take_along_axis(items, top, axis=1)].mean())


def per_user(ranks: np.ndarray) -> dict[str, np.ndarray]:
    """Per-user values of :data:`METRICS` (their means are ``metrics_from_ranks``'s)."""
    r = np.asarray(ranks, dtype=np.float64)
    gain = 1.0 / np.log2(r + 1.0)
    return {"HR@10": (r <= 10) * 1.0, "NDCG@10": np.where(r <= 10, gain, 0.0), "HR@50": (r <= 50) * 1.0, "MRR": 1.0 / r}


def list_metrics(ranks: np.ndarray, n: int) -> dict[str, float]:
    """HR@K, NDCG@K (K = 10, 50 where K ≤ `n`) and MRR averaged over users, by
    :func:`ranker.metrics.metrics_from_ranks`."""
    return metrics_from_ranks(ranks, ks=tuple(k for k in (10, 50) if k <= n))


def paired_bootstrap(
    a: np.ndarray, b: np.ndarray, *, resamples: int = 1000, seed: int = 0, level: float = 0.95
) -> dict[str, float]:
    """Mean of ``a − b`` (per-user values, paired) and its bootstrap percentile interval.

    Users are resampled with replacement `resamples` times with ``default_rng(seed)``.

    Example:
        >>> out = paired_bootstrap(np.array([1.0, 1, 1, 0]), np.array([0.0, 0, 1, 0]), resamples=2000)
        >>> out["diff"], out["low"] >= 0.0, out["high"] <= 1.0
        (0.5, True, True)
    """
    d = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    if len(d) == 0:
        raise ValueError("paired_bootstrap needs at least one user")
    rng = np.random.default_rng(seed)
    means = np.empty(resamples)
    for start in range(0, resamples, 256):  # (256, U) indices at a time
        k = min(256, resamples - start)
        means[start : start + k] = d[rng.integers(0, len(d), size=(k, len(d)))].mean(1)
    tail = (1.0 - level) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return {"diff": float(d.mean()), "low": float(low), "high": float(high), "resamples": resamples, "level": level}


def compare(
    two: np.ndarray, one: np.ndarray, *, n: int, resamples: int = 1000, seed: int = 0
) -> dict[str, dict[str, float]]:
    """Paired bootstrap of the metrics of :data:`METRICS` with K ≤ `n`: two stages minus stage 1."""
    a, b = per_user(two), per_user(one)
    names = [m for m in METRICS if "@" not in m or int(m.split("@")[1]) <= n]
    return {m: paired_bootstrap(a[m], b[m], resamples=resamples, seed=seed) for m in names}


def request_ms(
    run_dir: Path, table: pa.Table, queries: Sequence[int], *, threads: int, warmup: int = 3
) -> dict[str, float]:
    """Milliseconds of stage 2 per user request: the request's N rows (a slice of `table`,
    sorted by ``query``) encoded by the run's preprocessor and scored in one forward, one user
    at a time with `threads` torch threads. Returns mean, p50, p99 over `queries`."""
    _, model, pre = load_run(run_dir)
    query = table.column("query").to_numpy()
    if (np.diff(query) < 0).any():
        raise ValueError("rows must be sorted by query")

    def request(q: int) -> None:
        lo, hi = np.searchsorted(query, [q, q + 1])
        rows = table.slice(int(lo), int(hi - lo))
        model(TensorData.from_encoded(pre.transform(rows, source="request")).tensors)

    return time_requests(request, queries, threads=threads, warmup=warmup)


def time_requests(
    request: Callable[[int], object], queries: Sequence[int], *, threads: int, warmup: int = 3
) -> dict[str, float]:
    """Milliseconds of ``request(q)`` per query (mean, p50, p99) with `threads` torch threads,
    under inference mode, after `warmup` untimed calls on the first queries."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        times = []
        for i, q in enumerate([*list(queries)[:warmup], *queries]):
            start = time.perf_counter()
            with torch.inference_mode():
                request(q)
            if i >= warmup:
                times.append((time.perf_counter() - start) * 1000)
    finally:
        torch.set_num_threads(before)
    t = np.array(times)
    return {"mean_ms": float(t.mean()), "p50_ms": float(np.median(t)), "p99_ms": float(np.percentile(t, 99))}
