"""How much of R-ML1M's leave-one-out split is decided by the order of tied timestamps?

Usage (from the repository root):
    RANKER_DATA_DIR=../shared/data python benchmarks/ml1m_ties.py

R-ML1M's sequences (``movielens-1m/sequences.txt.gz``) are each user's movies in timestamp
order, with ties in the order of the preprocessing they come from (SOURCE.md). Timestamps
exist offline only for users 1–2999 (``ratings.users0001-2999.dat.gz``), so the shares below
are over those users. For each one the script checks that the sequence is in timestamp order
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

import gzip
import json
import os
import sys
from pathlib import Path

import numpy as np

FOLDER = "movielens-1m"


def _data_file(name: str) -> Path:
    root = os.environ.get("RANKER_DATA_DIR")
    path = Path(root or ".") / FOLDER / name
    if not root or not path.is_file():
        sys.exit(f"ml1m_ties.py: needs {FOLDER}/{name} under RANKER_DATA_DIR (set it to a folder holding it)")
    return path


def read_timestamps(path: Path) -> dict[tuple[int, int], int]:
    """``(user, movie) -> timestamp`` from ``UserID::MovieID::Rating::Timestamp`` lines."""
    out: dict[tuple[int, int], int] = {}
    with gzip.open(path, "rt") as f:
        for line in f:
            user, movie, _, stamp = line.rstrip("\n").split("::")
            out[int(user), int(movie)] = int(stamp)
    return out


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
    stamps = read_timestamps(_data_file("ratings.users0001-2999.dat.gz"))
    users = {u for u, _ in stamps}
    sequences: dict[int, list[int]] = {}
    with gzip.open(_data_file("sequences.txt.gz"), "rt") as f:
        for line in f:
            user, *items = (int(x) for x in line.split())
            if user in users:
                sequences[user] = items
    print(json.dumps(tie_shares(sequences, stamps), indent=2))


if __name__ == "__main__":
    main()
