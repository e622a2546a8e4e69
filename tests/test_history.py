"""Leakage-free histories: ``build_histories`` against a brute-force Python loop."""

from __future__ import annotations

import numpy as np
import pytest

from ranker.data.history import build_histories


def brute_force(ev_u, ev_t, ev_i, ev_a, ex_u, ex_t, max_len):  # type: ignore[no-untyped-def]
    """Per example: the user's events strictly before its time, chronological (ties: input
    order), the last `max_len` of them, left-padded with zeros."""
    n = len(ex_u)
    items = np.zeros((n, max_len), np.int64)
    actions = np.zeros((n, max_len), np.int64)
    times = np.zeros((n, max_len), np.int64)
    lengths = np.zeros(n, np.int64)
    for x in range(n):
        past = [e for e in range(len(ev_u)) if ev_u[e] == ex_u[x] and ev_t[e] < ex_t[x]]
        past.sort(key=lambda e: (ev_t[e], e))
        past = past[-max_len:]
        lengths[x] = len(past)
        for j, e in enumerate(past):
            col = max_len - len(past) + j
            items[x, col], actions[x, col], times[x, col] = ev_i[e], ev_a[e], ev_t[e]
    return items, actions, times, lengths


@pytest.mark.parametrize("seed", range(6))
def test_matches_brute_force_with_many_ties(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n_events, n_examples = 300, 120
    max_len = int(rng.integers(1, 9))
    ev_u = rng.integers(0, 7, n_events)
    ev_t = rng.integers(0, 15, n_events)  # few distinct seconds: many equal timestamps
    ev_i = rng.integers(1, 1000, n_events)
    ev_a = rng.integers(1, 4, n_events)
    ex_u = rng.integers(0, 9, n_examples)  # users 7, 8 have no events at all
    ex_t = rng.integers(-1, 17, n_examples)
    got = build_histories(ev_u, ev_t, ev_i, ev_a, ex_u, ex_t, max_len)
    items, actions, times, lengths = brute_force(ev_u, ev_t, ev_i, ev_a, ex_u, ex_t, max_len)
    np.testing.assert_array_equal(got.lengths, lengths)
    np.testing.assert_array_equal(got.items, items)
    np.testing.assert_array_equal(got.actions, actions)
    np.testing.assert_array_equal(got.times, times)
    assert got.items.shape == (n_examples, max_len)
    assert lengths.max() == max_len and lengths.min() == 0  # the data exercises both ends


def test_examples_at_event_times_with_large_timestamps() -> None:
    rng = np.random.default_rng(11)
    base = 1_600_000_000
    ev_u = rng.integers(0, 4, 200)
    ev_t = base + rng.integers(0, 30, 200)
    ev_i = np.arange(200) + 1
    ev_a = np.ones(200, np.int64)
    # examples are the events themselves, as in a log split by time
    got = build_histories(ev_u, ev_t, ev_i, ev_a, ev_u, ev_t, 10)
    items, _, times, lengths = brute_force(ev_u, ev_t, ev_i, ev_a, ev_u, ev_t, 10)
    np.testing.assert_array_equal(got.items, items)
    np.testing.assert_array_equal(got.times, times)
    np.testing.assert_array_equal(got.lengths, lengths)
    # no example sees its own event or any event at its own second
    for x in range(200):
        seen = set(got.items[x][got.items[x] > 0].tolist())
        same_second = set(ev_i[(ev_u == ev_u[x]) & (ev_t >= ev_t[x])].tolist())
        assert not seen & same_second


def test_planted_future_event_is_absent() -> None:
    ev_u = np.array([1, 1, 1, 1, 2])
    ev_t = np.array([10, 20, 30, 25, 5])
    ev_i = np.array([100, 200, 999, 250, 500])  # 999 happens at t=30, after the example
    ev_a = np.array([1, 1, 1, 1, 1])
    got = build_histories(ev_u, ev_t, ev_i, ev_a, np.array([1]), np.array([26]), 5)
    assert got.lengths.tolist() == [3]
    assert got.items.tolist() == [[0, 0, 100, 200, 250]]  # chronological, most recent last
    assert got.times.tolist() == [[0, 0, 10, 20, 25]]
    assert 999 not in got.items and 500 not in got.items  # future / other user's event


def test_ties_keep_input_order_and_same_second_is_excluded() -> None:
    ev_u = np.array([0, 0, 0, 0])
    ev_t = np.array([5, 5, 5, 7])
    ev_i = np.array([3, 1, 2, 9])
    ev_a = np.array([1, 2, 3, 4])
    got = build_histories(ev_u, ev_t, ev_i, ev_a, np.array([0, 0]), np.array([7, 5]), 4)
    assert got.items.tolist() == [[0, 3, 1, 2], [0, 0, 0, 0]]
    assert got.actions.tolist() == [[0, 1, 2, 3], [0, 0, 0, 0]]
    assert got.lengths.tolist() == [3, 0]


def test_keeps_the_last_max_len() -> None:
    ev_t = np.arange(10)
    got = build_histories(np.zeros(10), ev_t, ev_t + 100, np.ones(10), np.array([0]), np.array([8]), 3)
    assert got.items.tolist() == [[105, 106, 107]]
    assert got.lengths.tolist() == [3]


def test_user_without_past_has_length_zero() -> None:
    got = build_histories(
        np.array([1, 1]), np.array([5, 6]), np.array([7, 8]), np.array([1, 1]), np.array([2, 1]), np.array([100, 5]), 4
    )
    assert got.lengths.tolist() == [0, 0]
    assert not got.items.any() and not got.actions.any() and not got.times.any()


def test_no_events_at_all() -> None:
    empty = np.array([], dtype=np.int64)
    got = build_histories(empty, empty, empty, empty, np.array([1, 2]), np.array([3, 4]), 2)
    assert got.lengths.tolist() == [0, 0]
    assert got.items.shape == (2, 2) and not got.items.any()


def test_to_lists_gives_seconds_before() -> None:
    ev_u = np.array([0, 0, 0])
    ev_t = np.array([10, 40, 70])
    got = build_histories(
        ev_u, ev_t, np.array([1, 2, 3]), np.array([5, 6, 7]), np.array([0, 0, 0]), np.array([50, 11, 10]), 2
    )
    lists = got.to_lists(np.array([50, 11, 10]))
    assert lists["items"].to_pylist() == [[1, 2], [1], []]
    assert lists["actions"].to_pylist() == [[5, 6], [5], []]
    assert lists["seconds_before"].to_pylist() == [[40.0, 10.0], [1.0], []]
