"""How much of R-ML1M's leave-one-out split is decided by the order of tied timestamps?

Usage (from the repository root):
    RANKER_DATA_DIR=../shared/data python benchmarks/ml1m_ties.py

R-ML1M's sequences (``movielens-1m/sequences.txt``, read and checksummed as the r-ml1m recipe
reads them) are each user's movies in timestamp order, with ties in the order of the
preprocessing they come from (SOURCE.md). The timestamps come from ``ratings.dat`` where a
copy is found (downloaded with the r-ml1m sources), else from the offline
``ratings.users0001-2999.dat.gz`` (users 1–2999), and the shares below are over the users
that have them. For each one the script checks that the sequence is in timestamp order
and reports:

- ``test_tied_with_valid``: the share of users whose test item has the same timestamp as
  their validation item, so that which of the two is held out for test is decided by the
  tie-breaking alone (any tie of the last item includes the one before it);
- ``last_second_items``: mean and share ≥ 5 of the number of items in the test item's second.

The HSTU paper's ML-1M figures come from a processing that breaks these ties differently
(the eSASRec authors report that it changes about a quarter of the test items), so those
figures and ours are measured on different test sets.
"""

from __future__ import annotations

import json

import numpy as np

from ranker.data.recipes.movielens_io import ML1M_RATINGS, ML1M_SEQUENCES, read_ml1m_ratings, read_sequences
from ranker.data.sources import SourceFile, find_local, locate

#: the offline copy's first 487,650 lines of ratings.dat (movielens-1m/SOURCE.md)
RATINGS_USERS_1_2999 = SourceFile("movielens-1m", "ratings.users0001-2999.dat", None, "")


def tie_shares(sequences: dict[int, list[int]], stamps: dict[tuple[int, int], int]) -> dict[str, float]:
    """The shares of the module docstring over the users of `sequences` (each ≥ 3 items)."""
    tied_valid = 0
    group = []
    for user, items in sequences.items():
        t = [stamps[user, m] for m in items]
        if any(a > b for a, b in zip(t, t[1:], strict=False)):
            raise ValueError(f"user {user}: sequence not in timestamp order")
        last = t[-1]
        size = sum(1 for x in t if x == last)
        group.append(size)
        tied_valid += t[-2] == last
    n, sizes = len(sequences), np.asarray(group)
    return {
        "users": n,
        "test_tied_with_valid": tied_valid / n,
        "last_second_items_mean": float(sizes.mean()),
        "last_second_items_ge5": float((sizes >= 5).mean()),
    }


def main() -> None:
    path = find_local(ML1M_RATINGS) or find_local(RATINGS_USERS_1_2999) or locate(ML1M_RATINGS)
    ratings = read_ml1m_ratings(path)
    keys = zip(ratings["user"].tolist(), ratings["item"].tolist(), strict=True)
    stamps = dict(zip(keys, ratings["timestamp"].tolist(), strict=True))
    users, seqs = read_sequences(locate(ML1M_SEQUENCES))
    have = set(ratings["user"].tolist())
    sequences = {int(u): s.tolist() for u, s in zip(users, seqs, strict=True) if int(u) in have}
    print(f"timestamps from {path}")
    print(json.dumps(tie_shares(sequences, stamps), indent=2))


if __name__ == "__main__":
    main()
