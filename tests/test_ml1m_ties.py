"""benchmarks/ml1m_ties.py: the share of test items decided by tied timestamps, on hand-made users."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

import ml1m_ties  # noqa: E402


def test_tie_shares_counts_ties_of_the_last_item_only() -> None:
    sequences = {1: [10, 11, 12], 2: [20, 21, 22, 23], 3: [30, 31, 32]}
    stamps = {
        (1, 10): 5, (1, 11): 6, (1, 12): 7,  # no tie
        (2, 20): 1, (2, 21): 9, (2, 22): 9, (2, 23): 9,  # the last three share a second
        (3, 30): 4, (3, 31): 4, (3, 32): 8,  # a tie, but not at the end
    }  # fmt: skip
    shares = ml1m_ties.tie_shares(sequences, stamps)
    assert shares["users"] == 3
    assert shares["test_tied_with_valid"] == pytest.approx(1 / 3)
    assert shares["last_second_items_mean"] == pytest.approx((1 + 3 + 1) / 3)
    assert shares["last_second_items_ge5"] == 0.0


def test_tie_shares_refuses_a_sequence_out_of_time_order() -> None:
    with pytest.raises(ValueError, match="user 7: sequence not in timestamp order"):
        ml1m_ties.tie_shares({7: [1, 2, 3]}, {(7, 1): 3, (7, 2): 2, (7, 3): 4})
