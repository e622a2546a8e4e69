"""Generative ranker (issue 8): M-FALCON candidate isolation, target-awareness, leakage, padding,
windows vs one-user scoring, checkpoints and config errors, on a small synthetic event log."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from ranker.config import load_generative_config
from ranker.config.generative import GenerativeModel, GenerativeTrainConfig
from ranker.config.schema import TaskConfig
from ranker.errors import ConfigError
from ranker.generative.batches import build_window, collate, target_blocks, user_windows
from ranker.generative.evaluate import predict_split
from ranker.generative.events import EventLog, static_ids
from ranker.generative.trainer import GenerativeTrainer
from ranker.models.generative import GenerativeRanker, Tokens, TokenVocab
from ranker.nn.interleave import ACTION, ITEM, STATIC
from ranker.train.checkpoint import load_weights, save_weights

K, ITEMS, CELLS = 5, 30, 10**7
TASKS = (TaskConfig(name="watch", column="watch"), TaskConfig(name="like", column="like", mask_column="watch"))


def make_log(n: int = 120, users: int = 4, seed: int = 0) -> EventLog:
    """Events in time order (some share a second), split 80/10/10, 4 negatives each."""
    rng = np.random.default_rng(seed)
    time = np.sort(rng.integers(0, n // 2, n)) * 60  # repeated seconds on purpose
    user = rng.integers(1, users + 1, n)
    item = rng.integers(1, ITEMS + 1, n)
    action = rng.integers(1, 6, n)
    split = np.repeat([0, 1, 2], [int(0.8 * n), int(0.9 * n) - int(0.8 * n), n - int(0.9 * n)])
    cand = np.concatenate([item[:, None], rng.integers(1, ITEMS + 1, (n, K - 1))], 1)
    labels = np.zeros((n, K, 2), np.float32)
    labels[:, 0, 0], labels[:, 0, 1] = 1, action >= 4
    mask = np.ones((n, K, 2), np.float32)
    mask[:, 1:, 1] = 0
    cols = {"user_id": np.arange(users + 1).astype(str), "g": np.array(["x", "y"] * users)[: users + 1]}
    static, num_static = static_ids(cols, np.arange(users + 1) > 0)
    return EventLog(user, item, action, time, split, cand, labels, mask, static, TASKS, ITEMS, 5, num_static)


def make_model(log: EventLog, max_events: int = 64, attention: str = "reference") -> GenerativeRanker:
    torch.manual_seed(0)
    cfg = GenerativeModel(dim=16, linear_dim=8, attention_dim=8, num_heads=2, dropout=0.0, attention=attention)  # type: ignore[arg-type]
    model = GenerativeRanker(
        cfg, TokenVocab(log.num_items, 5, log.num_static), num_tasks=2, max_tokens=log.static.shape[1] + 2 * max_events
    )
    for p in model.parameters():  # break the symmetry of the small init, make scores vary
        p.data.add_(torch.randn_like(p) * 0.1)
    return model.eval()


def history(log: EventLog, events: np.ndarray) -> Tokens:
    """Static tokens + interleaved item/action tokens of `events` (one user), no scores."""
    w = build_window(log, events, np.zeros(len(events), bool))
    t = collate([w]).tokens
    return replace(t, score=torch.zeros(0, dtype=torch.long))


def user_events(log: EventLog, user: int) -> np.ndarray:
    return np.flatnonzero(log.user == user)


@pytest.mark.parametrize("attention", ["reference", "fused"])
def test_candidates_do_not_attend_to_each_other(attention: str) -> None:
    log = make_log()
    model = make_model(log, attention=attention)
    h = history(log, user_events(log, 1)[:10])
    items = torch.tensor([3, 7, 11, 19, 25])
    all_five = model.score_candidates(h, items, time=10**6)
    alone = model.score_candidates(h, items[2:3], time=10**6)
    others = model.score_candidates(h, torch.tensor([11, 1, 2, 3, 4, 5, 6]), time=10**6)
    torch.testing.assert_close(all_five[2:3], alone)
    torch.testing.assert_close(all_five[2], others[0])
    assert not torch.allclose(all_five[0], all_five[1])  # the scores do depend on the item


def test_batched_candidates_equal_one_by_one() -> None:
    log = make_log()
    model = make_model(log)
    h = history(log, user_events(log, 2)[:12])
    items = torch.arange(1, ITEMS + 1)
    batched = model.score_candidates(h, items, time=10**6)
    one_by_one = torch.cat([model.score_candidates(h, items[i : i + 1], time=10**6) for i in range(ITEMS)])
    micro = model.score_candidates(h, items, time=10**6, chunk=7)
    torch.testing.assert_close(batched, one_by_one)
    torch.testing.assert_close(batched, micro)


@pytest.mark.parametrize("bias", [{}, {"time_bias": False}, {"position_bias": False, "time_bias": False}])
def test_kv_cached_scoring_equals_appended_pass(bias: dict[str, bool]) -> None:
    """The KV-cached path (history encoded once, candidates attend to cached keys/values and
    themselves) gives the scores of appending the candidates to the sequence, for any chunk."""
    log = make_log()
    model = make_model(log)
    model.cfg = model.cfg.model_copy(update=bias)
    h = history(log, user_events(log, 2)[:12])
    items = torch.arange(1, ITEMS + 1)
    appended = model.score_candidates(h, items, time=10**6, cached=False)
    for chunk in (None, 7):
        torch.testing.assert_close(model.score_candidates(h, items, time=10**6, chunk=chunk), appended)
    # A request time inside the history: the cached mask row hides the later events too.
    t = int(h.time[0, -1])
    torch.testing.assert_close(
        model.score_candidates(h, items, time=t), model.score_candidates(h, items, time=t, cached=False)
    )


def test_score_does_not_depend_on_later_or_same_second_events() -> None:
    """History events at the request second or later are invisible: changing what they are
    (item, action) leaves the candidates' scores unchanged; changing an earlier one does not."""
    log = make_log()
    model = make_model(log)
    ev = user_events(log, 3)[:10]
    t = int(log.time[ev[7]]) + 60
    planted = replace(log, time=log.time.copy(), item=log.item.copy(), action=log.action.copy())
    planted.time[ev[8:]] = [t, t + 3600]  # one at the candidates' own second, one later
    other = replace(planted, item=planted.item.copy(), action=planted.action.copy())
    other.item[ev[8:]], other.action[ev[8:]] = [4, 9], 6 - planted.action[ev[8:]]
    items = torch.tensor([4, 9, 13])
    base = model.score_candidates(history(planted, ev), items, time=t)
    torch.testing.assert_close(base, model.score_candidates(history(other, ev), items, time=t))
    earlier = replace(planted, action=planted.action.copy())
    earlier.action[ev[6]] = 6 - planted.action[ev[6]] if planted.action[ev[6]] != 3 else 1
    assert not torch.allclose(base, model.score_candidates(history(earlier, ev), items, time=t))


def test_window_rows_equal_one_user_scoring_and_no_leakage() -> None:
    """Every valid row scored in its window equals scoring the row's candidate alone against the
    user's strictly earlier events; changing the label-carrying future changes nothing."""
    log = make_log()
    model = make_model(log)
    windows = user_windows(log, 1, 64)
    probs = predict_split(model, log, 1, windows, CELLS, 8)
    events = np.flatnonzero(log.split == 1)
    for e in events[:6]:
        past = user_events(log, int(log.user[e]))
        past = past[past < e]
        raw = model.score_candidates(history(log, past), torch.from_numpy(log.candidates[e]), time=int(log.time[e]))
        row = (e - events[0]) * K
        np.testing.assert_allclose(probs[row : row + K], torch.sigmoid(raw).numpy(), rtol=1e-4, atol=1e-5)
    # Leakage: flip every action at or after the first valid event's second; rows at that
    # second keep their scores (their own labels and same-second events are invisible).
    t0 = log.time[events[0]]
    flipped = replace(log, action=np.where(log.time >= t0, 6 - log.action, log.action))
    probs2 = predict_split(model, flipped, 1, user_windows(flipped, 1, 64), CELLS, 8)
    same_second = np.repeat(log.time[events] == t0, K)
    np.testing.assert_allclose(probs[same_second], probs2[same_second], rtol=1e-5, atol=1e-6)
    assert not np.allclose(probs, probs2)


def test_padding_invariance() -> None:
    log = make_log()
    model = make_model(log)
    windows = user_windows(log, 0, 64)
    short = min(range(len(windows)), key=lambda i: len(windows[i]))
    alone = model(collate([windows[short]]).tokens)
    together = collate(windows)
    out = model(together.tokens)
    mine = np.flatnonzero(np.isin(together.rows[:, 0], windows[short].rows[:, 0]))
    torch.testing.assert_close(out[mine], alone, rtol=1e-5, atol=1e-6)


def test_target_blocks_cover_each_target_once_with_context() -> None:
    for n, w in [(0, 4), (3, 4), (4, 4), (10, 4), (101, 16), (97, 7)]:
        blocks = target_blocks(n, w)
        covered = np.concatenate([np.arange(a, b) for _, a, b in blocks]) if blocks else np.array([])
        np.testing.assert_array_equal(covered, np.arange(n))
        for lo, a, b in blocks:
            assert b - lo <= w and (lo == 0 or a - lo >= w // 2)


def test_windows_score_every_split_row_once() -> None:
    log = make_log(n=300, users=3)
    for split in (0, 1, 2):
        rows = np.concatenate([w.rows for w in user_windows(log, split, 8)])
        keys = rows[:, 0] * K + rows[:, 1]
        expected = np.flatnonzero(log.split == split)
        assert len(np.unique(keys)) == len(keys) == len(expected) * K
        assert set(rows[:, 0]) == set(expected)


def test_window_token_layout() -> None:
    log = make_log()
    ev = user_events(log, 1)[:3]
    w = build_window(log, ev, np.array([False, True, True]))
    s = log.static.shape[1]
    assert w.kind.tolist() == [STATIC] * s + [ITEM, ACTION] * 3 + [4] * 8
    assert w.position[s:].tolist() == [s, s + 1, s + 2, s + 3, s + 4, s + 5] + [s + 2] * 4 + [s + 4] * 4
    assert w.score.tolist()[:2] == [s + 2, s + 4]
    assert w.rows[:2].tolist() == [[ev[1], 0], [ev[2], 0]]


def test_training_learns_and_checkpoint_round_trip(tmp_path: Path) -> None:
    log = make_log(n=400, users=5)
    model = make_model(log, max_events=32).train()
    cfg = GenerativeTrainConfig(epochs=3, batch_cells=CELLS, lr=3e-3, progress=False, patience=5)
    trainer = GenerativeTrainer(model, log, cfg, tmp_path / "run")
    train, valid = user_windows(log, 0, 32), user_windows(log, 1, 32)
    fit = trainer.fit(train, valid)
    assert fit.history[-1]["train_loss"] < fit.history[0]["train_loss"]
    assert (tmp_path / "run" / "log.jsonl").is_file()
    save_weights(model, tmp_path / "w.safetensors")
    clone = make_model(log, max_events=32)
    load_weights(clone, tmp_path / "w.safetensors")
    batch = collate(valid).tokens
    torch.testing.assert_close(model.eval()(batch), clone(batch))


def test_config_errors_name_the_key(tmp_path: Path) -> None:
    path = tmp_path / "g.yaml"
    path.write_text("kind: generative\nmodel: {dimm: 8}\n")
    with pytest.raises(ConfigError, match=r"model\.dimm"):
        load_generative_config(path)
    path.write_text("kind: generative\ndata: {dataset: rk-ml100k, static_features: [user_id, shoe_size]}\n")
    with pytest.raises(ConfigError, match=r"data: static_features\.1: 'shoe_size'"):
        load_generative_config(path)
    path.write_text("kind: generative\ndata: {dataset: rk-ml100k}\n")
    with pytest.raises(ConfigError, match=r"data\.max_events"):
        load_generative_config(path, ["data.max_events=1"])
