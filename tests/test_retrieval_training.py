"""Sequence training, model evaluation and exact search against brute force; resume; batches."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from ranker.config.retrieval import HSTUModel, RetrievalEval, SampledSoftmax, SASRecModel, SequenceTrainConfig
from ranker.models import HSTU, SASRec, SequentialRetriever
from ranker.retrieval.batches import TrainSequences, query_batch
from ranker.retrieval.evaluation import evaluate_model
from ranker.retrieval.losses import NextItemLoss
from ranker.retrieval.protocol import LeaveOneOut, Sequences, leave_one_out_views
from ranker.retrieval.search import exact_topk
from ranker.retrieval.trainer import SequenceTrainer
from ranker.train.checkpoint import load_weights, save_weights

ITEMS, MAX_LEN = 25, 6


def _data(users: int = 40, seed: int = 0) -> LeaveOneOut:
    """Users walk the catalogue in steps of +1 (mod 25) from a random start: learnable."""
    rng = np.random.default_rng(seed)
    seqs, times = [], []
    for _ in range(users):
        n, start = int(rng.integers(3, 12)), int(rng.integers(0, ITEMS))
        seqs.append([(start + i) % ITEMS + 1 for i in range(n)])
        times.append(list(np.cumsum(rng.integers(0, 5000, n))))
    return leave_one_out_views(Sequences.from_lists(seqs, times), ITEMS, MAX_LEN)


def _hstu(seed: int = 0) -> HSTU:
    torch.manual_seed(seed)
    cfg = HSTUModel(dim=8, num_layers=1, linear_dim=4, attention_dim=4, dropout=0.1)
    return HSTU(cfg, num_items=ITEMS, max_len=MAX_LEN)


def _trainer(model: SequentialRetriever, run_dir: Path, epochs: int) -> SequenceTrainer:
    cfg = SequenceTrainConfig(epochs=epochs, batch_size=8, lr=0.01, progress=False, patience=50)
    loss = NextItemLoss(SampledSoftmax(num_negatives=10, temperature=0.1), num_items=ITEMS)
    return SequenceTrainer(model, loss, cfg, RetrievalEval(ks=[1, 5, 10]), run_dir)


def test_training_sequences_are_next_item_pairs_with_target_times() -> None:
    data = _data()
    train = TrainSequences.build(data.train, MAX_LEN)
    u = 0
    seq = data.train.items[data.train.offsets[u] : data.train.offsets[u + 1]]
    t = data.train.times[data.train.offsets[u] : data.train.offsets[u + 1]]
    n = min(len(seq) - 1, MAX_LEN)
    assert train.items[u, -n:].tolist() == list(seq[:-1][-n:])
    assert train.targets[u, -n:].tolist() == list(seq[1:][-n:])
    assert train.query_times[u, -n:].tolist() == list(t[1:][-n:])
    assert not train.items[u, :-n].any() and not train.targets[u, :-n].any()


def test_a_share_of_training_users_is_a_fixed_subset_of_whole_sequences() -> None:
    data = _data()
    full = TrainSequences.build(data.train, MAX_LEN)
    half = TrainSequences.build(data.train, MAX_LEN, share=0.5)
    assert len(half) == round(0.5 * len(full))
    rows = {tuple(r) for r in full.targets.tolist()}
    assert all(tuple(r) in rows for r in half.targets.tolist())  # whole users, unchanged
    torch.manual_seed(123)  # the subset depends on the data only, not on the model seed
    again = TrainSequences.build(data.train, MAX_LEN, share=0.5)
    assert torch.equal(again.targets, half.targets)
    assert half.num_targets() < full.num_targets()


def test_query_time_of_the_last_position_is_the_targets_time() -> None:
    data = _data()
    users = np.arange(5)
    batch = query_batch(data.test_input, users, MAX_LEN, data.test_target_time)
    assert batch.query_times is not None and batch.times is not None
    assert batch.query_times[:, -1].tolist() == data.test_target_time[:5].tolist()
    assert batch.query_times[:, -2].tolist() == batch.times[:, -1].tolist()


def test_length_windows_keep_every_user_once() -> None:
    train = TrainSequences.build(_data().train, MAX_LEN)
    seen = [b.items for b in train.batches(8, torch.Generator().manual_seed(0), length_window=2)]
    rows = torch.cat([torch.nn.functional.pad(s, (MAX_LEN - s.shape[1], 0)) for s in seen])
    assert sorted(map(tuple, rows.tolist())) == sorted(map(tuple, train.items.tolist()))


@pytest.mark.parametrize("exclude", ["history", "input"])
def test_model_metrics_equal_a_brute_force_loop_and_ignore_the_batch_size(exclude: str) -> None:
    data, model = _data(seed=1), _hstu(1).eval()
    got = {b: evaluate_model(model, data, "test", ks=(1, 5, 10), batch_users=b, exclude=exclude) for b in (1, 7, 1000)}
    assert got[1] == got[7] == got[1000]
    ranks = []
    with torch.no_grad():
        items = model.item_vectors()
        for u in range(len(data.test_target)):
            seq = data.test_input.items[data.test_input.offsets[u] : data.test_input.offsets[u + 1]]
            tms = data.test_input.times[data.test_input.offsets[u] : data.test_input.offsets[u + 1]]
            x = torch.tensor(seq[-MAX_LEN:])[None]
            t = torch.tensor(tms[-MAX_LEN:])[None]
            q = torch.cat([t[:, 1:], torch.tensor([[data.test_target_time[u]]])], 1)
            scores = (model.user_vectors(x, t, q) @ items.T)[0]
            seen = set(seq.tolist()) if exclude == "history" else set(seq[-MAX_LEN:].tolist())
            target = int(data.test_target[u])
            rank = 1 + sum(
                1 for j in range(1, ITEMS + 1) if j != target and j not in seen and scores[j] >= scores[target]
            )
            ranks.append(rank)
    r = np.array(ranks)
    assert got[7]["HR@5"] == pytest.approx(np.mean(r <= 5))
    assert got[7]["NDCG@10"] == pytest.approx(np.mean(np.where(r <= 10, 1 / np.log2(r + 1), 0)))
    assert got[7]["MRR"] == pytest.approx(np.mean(1 / r))


def test_sampled_metrics_only_under_their_own_names() -> None:
    data, model = _data(seed=2), _hstu(2).eval()
    out = evaluate_model(model, data, "test", ks=(10,), sampled_negatives=5)
    plain = evaluate_model(model, data, "test", ks=(10,))
    assert {k: out[k] for k in plain} == plain
    assert set(out) - set(plain) == {"sampled5/HR@10", "sampled5/NDCG@10", "sampled5/MRR"}
    assert out["sampled5/HR@10"] >= plain["HR@10"]


def test_exact_topk_equals_sorting_every_score() -> None:
    g = torch.Generator().manual_seed(0)
    queries, items = torch.randn(13, 4, generator=g), torch.randn(31, 4, generator=g)
    exclude = torch.rand(13, 31, generator=g) > 0.7
    scores, ids = exact_topk(queries, items, 5, exclude=exclude, batch_size=4)
    for u in range(13):
        full = queries[u] @ items.T
        allowed = [j for j in range(1, 31) if not exclude[u, j]]
        best = sorted(allowed, key=lambda j: -float(full[j]))[:5]
        assert ids[u].tolist() == best
        torch.testing.assert_close(scores[u], full[best])


def test_training_learns_and_resume_reproduces_the_uninterrupted_run(tmp_path: Path) -> None:
    data = _data(seed=3)
    train = TrainSequences.build(data.train, MAX_LEN)
    full = _hstu(3)
    fit = _trainer(full, tmp_path / "full", epochs=6).fit(train, data)
    assert fit.best_score > 0.3  # a random ranking of 25 items gives NDCG@10 ≈ 0.1
    interrupted = _hstu(3)
    _trainer(interrupted, tmp_path / "part", epochs=3).fit(train, data)
    resumed = _hstu(99)  # other init: the checkpoint must overwrite it
    fit2 = _trainer(resumed, tmp_path / "part", epochs=6).fit(train, data)
    assert fit2.best_epoch == fit.best_epoch
    for a, b in zip(full.state_dict().values(), resumed.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b)
    log = [json.loads(x) for x in (tmp_path / "part" / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [1, 2, 3, 4, 5, 6]


def test_weights_round_trip_through_safetensors(tmp_path: Path) -> None:
    for model in (_hstu(4), SASRec(SASRecModel(dim=8, num_layers=1), num_items=ITEMS, max_len=MAX_LEN)):
        save_weights(model, tmp_path / "m.safetensors")
        fresh = type(model)(
            model.cfg if isinstance(model, HSTU) else SASRecModel(dim=8, num_layers=1), num_items=ITEMS, max_len=MAX_LEN
        )
        load_weights(fresh, tmp_path / "m.safetensors")
        data = _data(seed=5)
        assert evaluate_model(fresh.eval(), data, "test") == evaluate_model(model.eval(), data, "test")


def test_reference_protocol_trains_on_the_validation_item() -> None:
    from ranker.config.retrieval import RetrievalRunConfig
    from ranker.retrieval.run import training_sequences

    data = _data(seed=6)
    base = {"kind": "retrieval", "name": "t", "data": {"dataset": "r-ml100k"}, "model": {"kind": "sasrec"}}
    held = RetrievalRunConfig.model_validate(base)
    ref = RetrievalRunConfig.model_validate({**base, "train": {"protocol": "reference"}})
    assert training_sequences(held, data) is data.train
    seqs = TrainSequences.build(training_sequences(ref, data), MAX_LEN)
    # each user's last target is now the validation item, and its input is the whole train sequence
    last = seqs.targets[:, -1].numpy()
    np.testing.assert_array_equal(last, data.valid_target)
    lengths = data.test_input.lengths()  # every item but the test one, the last MAX_LEN targets
    assert seqs.num_targets() == sum(min(n - 1, MAX_LEN) for n in lengths if n >= 2)


def test_reference_protocol_runs_every_epoch_and_keeps_the_last(tmp_path: Path) -> None:
    data = _data(seed=7)
    train = TrainSequences.build(data.train, MAX_LEN)
    cfg = SequenceTrainConfig(
        epochs=5, batch_size=8, lr=0.01, progress=False, patience=0, eval_every=2, protocol="reference"
    )
    loss = NextItemLoss(SampledSoftmax(num_negatives=10, temperature=0.1), num_items=ITEMS)
    model = _hstu(7)
    trainer = SequenceTrainer(model, loss, cfg, RetrievalEval(ks=[1, 5, 10]), tmp_path)
    scores = iter([0.9, 0.1, 0.05])  # validation only falls: selection would keep epoch 2 and stop
    trainer._validate = lambda data: {"valid_score": next(scores)}  # type: ignore[method-assign]
    fit = trainer.fit(train, data)
    assert (fit.best_epoch, fit.stopped_epoch) == (5, 5)  # evaluated at 2, 4 and the last, 5
    last = load_file(str(tmp_path / "checkpoints" / "epoch-0005.safetensors"))
    for name, value in model.state_dict().items():  # the model ends at the last epoch's weights
        torch.testing.assert_close(value, last[name])


def test_adamw_betas_come_from_the_config() -> None:
    loss = NextItemLoss(SampledSoftmax(num_negatives=10, temperature=0.1), num_items=ITEMS)
    for betas in [(0.9, 0.999), (0.9, 0.98)]:
        cfg = SequenceTrainConfig(betas=betas, progress=False)
        trainer = SequenceTrainer(_hstu(), loss, cfg, RetrievalEval(), Path("unused"))
        assert trainer.optimizer.param_groups[0]["betas"] == betas


def _ema_trainer(model: SequentialRetriever, run_dir: Path, epochs: int) -> SequenceTrainer:
    cfg = SequenceTrainConfig(epochs=epochs, batch_size=8, lr=0.01, progress=False, patience=50, ema_decay=0.9)
    loss = NextItemLoss(SampledSoftmax(num_negatives=10, temperature=0.1), num_items=ITEMS)
    return SequenceTrainer(model, loss, cfg, RetrievalEval(ks=[1, 5, 10]), run_dir)


def test_weight_average_is_what_validation_sees_and_what_the_run_keeps(tmp_path: Path) -> None:
    data = _data(seed=8)
    train = TrainSequences.build(data.train, MAX_LEN)
    model = _hstu(8)
    trainer = _ema_trainer(model, tmp_path, epochs=3)
    assert trainer.ema is not None
    seen: list[tuple[torch.Tensor, torch.Tensor]] = []
    validate = trainer.validate

    def spy() -> dict:  # type: ignore[type-arg]
        seen.append((model.item_embedding.weight.detach().clone(), trainer.ema.shadow["item_embedding.weight"].clone()))  # type: ignore[union-attr]
        return validate()

    trainer.validate = spy  # type: ignore[method-assign]
    fit = trainer.fit(train, data)
    assert len(seen) == 4  # the untrained weights, then epochs 1..3
    for weights, shadow in seen:
        torch.testing.assert_close(weights, shadow)
    raw = load_file(str(tmp_path / "checkpoints" / "epoch-0003.safetensors"))["item_embedding.weight"]
    assert not torch.allclose(raw, seen[-1][1])  # the live weights differ from the average
    best = load_file(str(tmp_path / "checkpoints" / f"best-{fit.best_epoch:04d}.safetensors"))
    torch.testing.assert_close(model.item_embedding.weight.detach(), best["item_embedding.weight"])
    torch.testing.assert_close(best["item_embedding.weight"], seen[fit.best_epoch][1])


def test_weight_average_resumes_as_if_never_interrupted(tmp_path: Path) -> None:
    data = _data(seed=9)
    train = TrainSequences.build(data.train, MAX_LEN)
    full = _hstu(9)
    _ema_trainer(full, tmp_path / "full", epochs=4).fit(train, data)
    _ema_trainer(_hstu(9), tmp_path / "part", epochs=2).fit(train, data)
    resumed = _hstu(99)
    _ema_trainer(resumed, tmp_path / "part", epochs=4).fit(train, data)
    for a, b in zip(full.state_dict().values(), resumed.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b)
