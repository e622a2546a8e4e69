"""Leave-one-out views, history exclusion and the popularity baseline against brute force."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ranker.retrieval import Sequences, evaluate, leave_one_out_views, popularity_scorer


def _seqs(seed: int = 0, users: int = 40, items: int = 30) -> list[list[int]]:
    rng = np.random.default_rng(seed)
    return [list(rng.integers(1, items + 1, rng.integers(3, 12))) for _ in range(users)]


def test_views_are_the_leave_one_out_cuts() -> None:
    seqs = _seqs()
    data = leave_one_out_views(Sequences.from_lists(seqs), num_items=30, max_len=5)
    for u, s in enumerate(seqs):
        tr = data.train.items[data.train.offsets[u] : data.train.offsets[u + 1]]
        te = data.test_input.items[data.test_input.offsets[u] : data.test_input.offsets[u + 1]]
        assert list(tr) == s[:-2] and list(te) == s[:-1]
        assert data.valid_target[u] == s[-2] and data.test_target[u] == s[-1]
    padded = data.test_input.padded(np.array([0, 1]), 5).numpy()
    for row, u in enumerate([0, 1]):
        tail = seqs[u][:-1][-5:]
        assert list(padded[row, 5 - len(tail) :]) == tail and not padded[row, : 5 - len(tail)].any()


def test_too_short_sequences_are_rejected() -> None:
    with pytest.raises(ValueError, match="fewer than 3"):
        leave_one_out_views(Sequences.from_lists([[1, 2, 3], [4, 5]]), num_items=5, max_len=3)


@pytest.mark.parametrize("split", ["valid", "test"])
def test_popularity_metrics_equal_a_brute_force_loop(split: str) -> None:
    seqs = _seqs(seed=1)
    data = leave_one_out_views(Sequences.from_lists(seqs), num_items=30, max_len=4)
    got = evaluate(popularity_scorer(data), data, split, ks=(1, 5, 10), batch_users=7)
    counts = np.bincount(np.concatenate([s[:-2] for s in seqs]), minlength=31)
    ranks = []
    for s in seqs:
        history, target = (s[:-2], s[-2]) if split == "valid" else (s[:-1], s[-1])
        rank = 1
        for item in range(1, 31):
            if item != target and item not in history and counts[item] >= counts[target]:
                rank += 1
        ranks.append(rank)
    ranks = np.array(ranks)
    assert got["HR@5"] == pytest.approx(np.mean(ranks <= 5))
    assert got["NDCG@10"] == pytest.approx(np.mean(np.where(ranks <= 10, 1 / np.log2(ranks + 1), 0)))
    assert got["MRR"] == pytest.approx(np.mean(1 / ranks))


def test_a_perfect_scorer_gets_rank_one_even_when_the_target_is_in_the_history() -> None:
    seqs = [[1, 2, 3, 2], [4, 5, 6, 7]]  # user 0's test target 2 also appears in its history
    data = leave_one_out_views(Sequences.from_lists(seqs), num_items=7, max_len=3)

    def oracle(inputs: torch.Tensor, users: np.ndarray) -> torch.Tensor:
        scores = torch.zeros(len(users), 8)
        scores[torch.arange(len(users)), torch.from_numpy(data.test_target[users])] = 1.0
        return scores

    assert evaluate(oracle, data, "test", ks=(1,))["HR@1"] == 1.0
