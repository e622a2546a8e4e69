"""MovieLens recipes: R-ML100K and R-ML1M (next-item retrieval) and RK-ML100K (ranking).

Protocols ``R-ML100K``, ``R-ML1M`` and ``RK-ML100K`` of ``shared/benchmarks/PROTOCOLS.md``.

Retrieval recipes produce one row per user with the user's **full** chronological sequence:
``user`` (int64, original user id), ``items`` (list<int64>, ids ``1..num_items``) and ``times``
(list<int64> unix seconds, null in every row when the source has no timestamps). Every rating is
an interaction (no threshold). Order within a user: (timestamp, then row order in the ratings
file). Leave-one-out (test target = last item, validation target = second-to-last, training =
everything before those; inputs keep the most recent ``max_len`` = 200 items) is applied by the
reader, not here.

- ``r-ml100k``: ``u.data``; item ids are MovieLens-100K's own ids 1..1,682 (the catalogue of
  ``u.item``); 943 users, 100,000 interactions.
- ``r-ml1m``: catalogue = every MovieID of ``movies.dat`` (3,883; ids 1..3952 with gaps),
  **re-indexed** to ``1..3883`` in increasing MovieID order; ``meta["item_ids"][k - 1]`` is the
  MovieID of item ``k``. With the downloaded ``ratings.dat`` (6,040 users, 1,000,209 ratings)
  the order is (timestamp, row order) and ``times`` are filled. Offline, when
  ``movielens-1m/sequences.txt`` is found, the sequences are read from it: same users and items,
  in timestamp order but with the BERT4Rec-VAE (pandas) order among equal timestamps, no times.
  The two orders differ among same-second ratings for most users (on users 1..2999: 2,990 of
  2,999 users; 777 of their last items and 1,179 second-to-last items differ), so
  ``meta["order"]`` records which one a prepared dataset has.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ranker.data.recipes.base import BuiltRetrieval, Recipe, user_sequences
from ranker.data.recipes.movielens_io import (
    ML1M_MOVIES,
    ML1M_RATINGS,
    ML1M_SEQUENCES,
    U_DATA,
    U_ITEM,
    chronological,
    read_ml1m_movie_ids,
    read_ml1m_ratings,
    read_ml100k_items,
    read_ml100k_ratings,
    read_sequences,
)
from ranker.data.recipes.rk_ml100k import RK_ML100K
from ranker.errors import DataError

MAX_LEN = 200
ORDER_TIME_ROW = "timestamp, then row order in the ratings file"
ORDER_SEQUENCES = "sequences.txt order (timestamp; BERT4Rec-VAE pandas order among ties)"


def build_r_ml100k(paths: dict[str, Path]) -> BuiltRetrieval:
    """R-ML100K: every rating of ``u.data`` in (timestamp, row) order per user."""
    ratings = read_ml100k_ratings(paths["u.data"])
    item_ids = read_ml100k_items(paths["u.item"])["item_id"].to_numpy()
    num_items = len(item_ids)
    if not np.array_equal(np.sort(item_ids), np.arange(1, num_items + 1)):
        raise DataError(f"{paths['u.item']}: item ids must be 1..{num_items}")
    if ratings["item"].max() > num_items:
        raise DataError(f"{paths['u.data']}: item id {ratings['item'].max()} not in u.item")
    order = chronological(ratings)
    table = user_sequences(ratings["user"][order], ratings["item"][order], ratings["timestamp"][order])
    meta = {
        "users": table.num_rows,
        "interactions": len(order),
        "catalogue_size": num_items,
        "order": ORDER_TIME_ROW,
        "sequences": "full chronological sequence per user; leave-one-out is applied by the reader",
    }
    return BuiltRetrieval(sequences=table, num_items=num_items, max_len=MAX_LEN, meta=meta)


def reindex_movies(movie_ids: np.ndarray, items: np.ndarray, where: Path) -> np.ndarray:
    """Map MovieIDs to ``1..len(movie_ids)`` (position in the sorted `movie_ids`, plus one)."""
    idx = np.searchsorted(movie_ids, items)
    ok = (idx < len(movie_ids)) & (movie_ids[np.minimum(idx, len(movie_ids) - 1)] == items)
    if not ok.all():
        raise DataError(f"{where}: MovieID {int(items[~ok][0])} is not in movies.dat")
    return (idx + 1).astype(np.int64)


def build_r_ml1m(paths: dict[str, Path]) -> BuiltRetrieval:
    """R-ML1M from ``ratings.dat`` (with times) or, offline, ``sequences.txt`` (without)."""
    movie_ids = read_ml1m_movie_ids(paths["movies.dat"])
    if "ratings.dat" in paths:
        source, where = "ratings.dat", paths["ratings.dat"]
        ratings = read_ml1m_ratings(where)
        order = chronological(ratings)
        users, movies = ratings["user"][order], ratings["item"][order]
        times: np.ndarray | None = ratings["timestamp"][order]
        how = ORDER_TIME_ROW
    elif "sequences.txt" in paths:
        source, where = "sequences.txt", paths["sequences.txt"]
        seq_users, seqs = read_sequences(where)
        users = np.repeat(seq_users, [len(s) for s in seqs])
        movies = np.concatenate(seqs)
        times, how = None, ORDER_SEQUENCES
    else:
        raise DataError("r-ml1m needs ratings.dat or sequences.txt (movielens-1m)")
    table = user_sequences(users, reindex_movies(movie_ids, movies, where), times)
    meta = {
        "users": table.num_rows,
        "interactions": len(users),
        "catalogue_size": len(movie_ids),
        "rated_items": len(np.unique(movies)),
        "source": source,
        "order": how,
        "item_ids": movie_ids.tolist(),
        "item_ids_note": "item k of `items` is MovieID item_ids[k - 1] (sorted movies.dat ids)",
        "sequences": "full chronological sequence per user; leave-one-out is applied by the reader",
    }
    return BuiltRetrieval(sequences=table, num_items=len(movie_ids), max_len=MAX_LEN, meta=meta)


R_ML100K = Recipe(
    name="r-ml100k",
    protocol="R-ML100K",
    kind="retrieval",
    summary="MovieLens-100K next-item retrieval: 943 users, 1,682 items, leave-one-out",
    sources=(U_DATA, U_ITEM),
    build=build_r_ml100k,
)

R_ML1M = Recipe(
    name="r-ml1m",
    protocol="R-ML1M",
    kind="retrieval",
    summary="MovieLens-1M next-item retrieval: 6,040 users, 3,883 movies, leave-one-out",
    sources=(ML1M_RATINGS, ML1M_MOVIES),
    offline_sources=(ML1M_SEQUENCES, ML1M_MOVIES),
    build=build_r_ml1m,
    aliases=("ml-1m",),
)

RECIPES: list[Recipe] = [RK_ML100K, R_ML100K, R_ML1M]
