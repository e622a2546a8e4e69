"""Approximate maximum-inner-product search with faiss (optional extra ``ranker[ann]``).

Indexes over the item vectors (rows 1..I of the model's output table; row 0, the padding item,
is left out): ``hnsw`` (graph, ``IndexHNSWFlat``, inner product) and ``ivf`` (inverted lists,
``IndexIVFFlat``; ``nlist`` k-means cells, ``nprobe`` visited per query). ``ann_report``
measures recall@k of an index's results against exact top-k (the fraction of the exact k
items the index returns) and queries per second of both.
"""

from __future__ import annotations

import time
from typing import Any, Literal

import numpy as np
import torch

from ranker.errors import ConfigError
from ranker.retrieval.search import exact_topk

IndexKind = Literal["hnsw", "ivf"]


def _faiss() -> Any:
    try:
        import faiss
    except ImportError as exc:  # pragma: no cover - exercised only without the extra
        raise ConfigError("approximate search (--ann) needs faiss: pip install 'ranker[ann]'") from exc
    return faiss


def build_index(
    items: np.ndarray,
    kind: IndexKind = "hnsw",
    *,
    hnsw_m: int = 32,
    ef_search: int = 64,
    nlist: int = 64,
    nprobe: int = 8,
) -> Any:
    """A faiss inner-product index over `items` (I, D) float32; result ids are rows of `items`."""
    faiss = _faiss()
    x = np.ascontiguousarray(items, dtype=np.float32)
    d = x.shape[1]
    if kind == "hnsw":
        index = faiss.IndexHNSWFlat(d, hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efSearch = ef_search
    elif kind == "ivf":
        quantizer = faiss.IndexFlatIP(d)
        index = faiss.IndexIVFFlat(quantizer, d, min(nlist, len(x)), faiss.METRIC_INNER_PRODUCT)
        index.train(x)
        index.nprobe = nprobe
    else:
        raise ValueError(f"kind must be 'hnsw' or 'ivf', got {kind!r}")
    index.add(x)
    return index


def ann_search(index: Any, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Scores and item ids (1-based, as in the model's table) of the k best items per query."""
    scores, rows = index.search(np.ascontiguousarray(queries, dtype=np.float32), k)
    return scores, np.where(rows >= 0, rows + 1, 0)


def ann_report(
    queries: torch.Tensor,
    item_table: torch.Tensor,
    k: int = 10,
    kinds: tuple[IndexKind, ...] = ("hnsw", "ivf"),
    **options: int,
) -> dict[str, Any]:
    """Recall@k of each index against exact top-k, and queries/s (exact and each index).

    Shape: queries (U, D); item_table (I + 1, D) with row 0 the padding item.
    """
    q = queries.detach().float().contiguous()
    table = item_table.detach().float()
    start = time.perf_counter()
    _, exact = exact_topk(q, table, k)
    out: dict[str, Any] = {
        "k": k,
        "queries": len(q),
        "items": len(table) - 1,
        "exact_qps": len(q) / (time.perf_counter() - start),
    }
    exact_np = exact.numpy()
    for kind in kinds:
        t0 = time.perf_counter()
        index = build_index(table[1:].numpy(), kind, **options)
        build_s = time.perf_counter() - t0
        t1 = time.perf_counter()
        _, ids = ann_search(index, q.numpy(), k)
        qps = len(q) / (time.perf_counter() - t1)
        hits = [len(set(a) & set(b)) for a, b in zip(ids.tolist(), exact_np.tolist(), strict=True)]
        out[kind] = {"recall": float(np.sum(hits) / (k * len(q))), "qps": qps, "build_s": build_s}
    return out
