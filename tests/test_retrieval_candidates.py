"""Stage-1 candidates: held-out lists reproduce the evaluation; prefix lists equal direct queries."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from ranker.config.retrieval import HSTUModel, SASRecModel
from ranker.errors import DataError
from ranker.metrics import metrics_from_ranks
from ranker.models import HSTU, SASRec, SequentialRetriever
from ranker.retrieval.batches import query_batch
from ranker.retrieval.candidates import (
    Candidates,
    candidates_table,
    heldout_candidates,
    prefix_candidates,
    prefix_queries,
    prefixes,
    read_candidates,
    score_items,
    window_starts,
)
from ranker.retrieval.data import RetrievalEvents, ServingData
from ranker.retrieval.evaluation import evaluate_model
from ranker.retrieval.protocol import LeaveOneOut, Sequences, history_mask, leave_one_out_views
from ranker.retrieval.search import exact_topk

ITEMS = 30


def _seqs(users: int = 24, low: int = 4, high: int = 14, seed: int = 0) -> Sequences:
    rng = np.random.default_rng(seed)
    items, times = [], []
    for _ in range(users):
        n = int(rng.integers(low, high))
        items.append(list(rng.choice(np.arange(1, ITEMS + 1), size=n, replace=False)))
        times.append(list(np.cumsum(rng.integers(1, 5000, n))))
    return Sequences.from_lists(items, times)


def _hstu(max_len: int, seed: int = 0) -> HSTU:
    torch.manual_seed(seed)
    cfg = HSTUModel(dim=8, num_layers=2, linear_dim=4, attention_dim=4, dropout=0.0)
    return HSTU(cfg, num_items=ITEMS, max_len=max_len).eval()


def _sasrec(max_len: int, seed: int = 0) -> SASRec:
    torch.manual_seed(seed)
    return SASRec(SASRecModel(dim=8, num_layers=1, dropout=0.0), num_items=ITEMS, max_len=max_len).eval()


def _direct_top(model: SequentialRetriever, seqs: Sequences, user: int, start: int, pos: int, n: int) -> list[int]:
    """Top-n of one query whose model input is S_u[start:pos] (history = all of S_u[0:pos])."""
    full = prefixes(seqs, np.array([user]), np.array([pos]))
    window = Sequences(
        full.items[start:], np.array([0, pos - start]), None if full.times is None else full.times[start:]
    )
    t_next = None if seqs.times is None else seqs.times[seqs.offsets[user] + pos : seqs.offsets[user] + pos + 1]
    batch = query_batch(window, np.array([0]), model.max_len, t_next)
    vec = model.user_vectors(batch.items, batch.times, batch.query_times)
    exclude = torch.from_numpy(history_mask(full, np.array([0]), ITEMS))
    return exact_topk(vec, model.item_vectors(), n, exclude=exclude)[1][0].tolist()


@pytest.mark.parametrize("split", ["valid", "test"])
@pytest.mark.parametrize("exclude", ["history", "input"])
def test_heldout_recall_at_n_equals_the_evaluations_hr_at_n(split: str, exclude: str) -> None:
    data = leave_one_out_views(_seqs(), ITEMS, max_len=5)  # inputs longer than max_len: exclusions differ
    model = _hstu(5)
    ks = (1, 5, 10)
    expected = evaluate_model(model, data, split, ks=ks, exclude=exclude, batch_users=7)  # type: ignore[arg-type]
    for n in ks:
        c = heldout_candidates(model, data, split, n, exclude=exclude, batch_users=5)  # type: ignore[arg-type]
        assert c.recall() == pytest.approx(expected[f"HR@{n}"])
        assert metrics_from_ranks(c.target_rank, ks) == pytest.approx(expected)
        hit = c.hit_column()
        assert np.array_equal(hit[hit >= 0] + 1, c.target_rank[hit >= 0])  # its column is its rank
    inputs, targets = data.split(split)
    assert c.user.tolist() == list(range(len(targets))) and np.array_equal(c.target, targets)
    assert np.array_equal(c.position, inputs.lengths())
    if exclude == "history":  # no candidate is an item of the user's whole input
        mask = history_mask(inputs, c.user, ITEMS)
        assert not np.take_along_axis(mask, c.items, axis=1).any()


def test_window_starts_give_at_least_half_a_window_of_context() -> None:
    pos = np.arange(1, 60)
    for max_len in (1, 2, 5, 8):
        a = window_starts(pos, max_len)
        j = pos - 1
        assert (a <= j).all() and (j - a < max_len).all()
        assert (a[j < max_len] == 0).all()
        assert (j[j >= max_len] - a[j >= max_len] + 1 > max_len // 2).all()


@pytest.mark.parametrize("make", [_hstu, _sasrec])
def test_prefix_candidates_equal_one_query_per_prefix(make: object) -> None:
    seqs = _seqs(users=9, low=3, high=15)
    max_len = 4  # sequences longer than the window: later prefixes read a shifted window
    model = make(max_len)  # type: ignore[operator]
    user, pos = prefix_queries(seqs.lengths())
    c = prefix_candidates(model, seqs, user, pos, 6, max_len=max_len, batch_windows=3)
    starts = window_starts(pos, max_len)
    for q in range(len(user)):
        assert c.items[q].tolist() == _direct_top(model, seqs, int(user[q]), int(starts[q]), int(pos[q]), 6)
    assert np.array_equal(c.target, seqs.items[seqs.offsets[user] + pos])


def test_prefix_at_the_validation_position_is_the_validation_query() -> None:
    seqs = _seqs()
    data = leave_one_out_views(seqs, ITEMS, max_len=20)  # every input fits the window
    model = _hstu(20)
    valid = heldout_candidates(model, data, "valid", 8)
    lengths = data.test_input.lengths()  # the valid target is the last item of the test input
    c = prefix_candidates(model, data.test_input, np.arange(len(lengths)), lengths - 1, 8, max_len=20)
    assert np.array_equal(c.items, valid.items) and np.array_equal(c.target_rank, valid.target_rank)
    np.testing.assert_allclose(c.scores, valid.scores, atol=1e-5)


def test_prefix_queries_sample_a_fixed_subset_per_user() -> None:
    lengths = np.array([10, 3, 1, 7])
    user, pos = prefix_queries(lengths)
    assert len(user) == 9 + 2 + 0 + 6 and (pos >= 1).all() and (pos < lengths[user]).all()
    u2, p2 = prefix_queries(lengths, per_user=3, seed=5)
    assert np.bincount(u2, minlength=4).tolist() == [3, 2, 0, 3]
    assert set(zip(u2.tolist(), p2.tolist(), strict=True)) <= set(zip(user.tolist(), pos.tolist(), strict=True))
    again = prefix_queries(lengths, per_user=3, seed=5)
    assert np.array_equal(again[1], p2) and not np.array_equal(prefix_queries(lengths, per_user=3, seed=6)[1], p2)
    u3, p3 = prefix_queries(lengths, min_prefix=4)
    assert p3.min() == 4 and np.bincount(u3, minlength=4).tolist() == [6, 0, 0, 3]


def test_score_items_ranks_are_the_protocols_ranks() -> None:
    seqs = _seqs(users=6)
    model = _hstu(20)
    user, pos = prefix_queries(seqs.lengths(), per_user=2, seed=1)
    c = prefix_candidates(model, seqs, user, pos, 5, max_len=20)
    items = np.concatenate([c.target[:, None], c.items], axis=1)
    scores, ranks = score_items(model, seqs, user, pos, items, max_len=20)
    assert np.array_equal(ranks[:, 0], c.target_rank)
    assert np.array_equal(ranks[:, 1:], np.tile(np.arange(1, 6), (len(user), 1)))
    np.testing.assert_allclose(scores[:, 1:], c.scores, atol=1e-6)


def test_candidates_table_round_trips_with_raw_ids() -> None:
    seqs = _seqs(users=5)
    raw_items = np.arange(101, 101 + ITEMS)
    import pyarrow as pa

    events = RetrievalEvents(seqs, pa.array([11, 22, 33, 44, 55]), pa.array(raw_items), 20)
    serving = ServingData.from_events(events)
    data: LeaveOneOut = serving.events().views()
    assert np.array_equal(data.test_target, leave_one_out_views(seqs, ITEMS, 20).test_target)
    c = heldout_candidates(_hstu(20), data, "test", 4)
    table = candidates_table(c, serving, "test")
    assert table.num_rows == 5 * 4 and set(table.column("user").to_pylist()) == {11, 22, 33, 44, 55}
    assert min(table.column("item").to_pylist()) >= 101
    back: Candidates = read_candidates(table, serving, "test")
    for name in ("user", "position", "target", "target_rank", "items", "scores", "target_score"):
        assert np.array_equal(getattr(back, name), getattr(c, name)), name


def test_candidates_save_and_load_round_trip_and_a_damaged_file_is_named(tmp_path: Path) -> None:
    seqs = _seqs(users=6, low=3, high=12)
    user, pos = prefix_queries(seqs.lengths())
    c = prefix_candidates(_hstu(8), seqs, user, pos, 5, max_len=8)
    path = tmp_path / "prefix.npz"
    c.save(path)
    back = Candidates.load(path)
    for name in ("user", "position", "target", "target_rank", "items", "scores", "target_score"):
        got, want = getattr(back, name), getattr(c, name)
        assert got.dtype == want.dtype and np.array_equal(got, want), name
    assert back.recall() == c.recall()
    path.write_bytes(path.read_bytes()[:100])  # a truncated file
    with pytest.raises(DataError, match=r"prefix\.npz: not a candidates file"):
        Candidates.load(path)


def test_train_holdout_last_trains_without_each_users_last_items() -> None:
    from ranker.config.retrieval import RetrievalRunConfig
    from ranker.retrieval.batches import TrainSequences
    from ranker.retrieval.run import training_sequences

    data = leave_one_out_views(_seqs(low=3, high=9), ITEMS, max_len=20)
    base = {"kind": "retrieval", "name": "t", "data": {"dataset": "r-ml100k"}, "model": {"kind": "sasrec"}}
    plain = RetrievalRunConfig.model_validate(base)
    held = RetrievalRunConfig.model_validate({**base, "data": {"dataset": "r-ml100k", "train_holdout_last": 2}})
    assert training_sequences(plain, data) is data.train
    seqs = training_sequences(held, data)
    lens = data.train.lengths()
    assert np.array_equal(seqs.lengths(), np.maximum(lens - 2, 0))
    for u in range(len(lens)):  # each user's sequence is its training sequence's beginning
        mine = seqs.items[seqs.offsets[u] : seqs.offsets[u + 1]]
        assert np.array_equal(mine, data.train.items[data.train.offsets[u] : data.train.offsets[u] + len(mine)])
    targets = TrainSequences.build(seqs, 20).num_targets()
    assert targets == int(np.maximum(lens - 3, 0).sum())  # positions 1 .. len-3 of each user are targets
