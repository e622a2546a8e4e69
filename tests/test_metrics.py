"""Tests of ranker.metrics against brute-force loop references and hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ranker.metrics import accuracy, auc, gauc, gndcg, logloss, metrics_from_ranks, retrieval_metrics, retrieval_ranks

SEEDS = range(8)


# ---------------------------------------------------------------- brute-force references


def ref_auc(labels, scores) -> float:
    pos = [s for y, s in zip(labels, scores, strict=True) if y == 1]
    neg = [s for y, s in zip(labels, scores, strict=True) if y == 0]
    if not pos or not neg:
        return float("nan")
    total = 0.0
    for sp in pos:
        for sn in neg:
            total += 1.0 if sp > sn else 0.5 if sp == sn else 0.0
    return total / (len(pos) * len(neg))


def ref_gauc(labels, scores, groups) -> float:
    num, den = 0.0, 0
    for g in set(groups):
        idx = [i for i, gi in enumerate(groups) if gi == g]
        a = ref_auc([labels[i] for i in idx], [scores[i] for i in idx])
        if not math.isnan(a):
            num += len(idx) * a
            den += len(idx)
    return num / den if den else float("nan")


def ref_ranks(scores, targets, exclude=None) -> list[int]:
    ranks = []
    for u, t in enumerate(targets):
        rank = 1
        for j, s in enumerate(scores[u]):
            if j != t and not (exclude is not None and exclude[u][j]) and s >= scores[u][t]:
                rank += 1
        ranks.append(rank)
    return ranks


def ref_metrics(ranks, ks) -> dict[str, float]:
    out = {}
    for k in ks:
        out[f"HR@{k}"] = sum(1.0 for r in ranks if r <= k) / len(ranks)
        out[f"NDCG@{k}"] = sum(1 / math.log2(r + 1) for r in ranks if r <= k) / len(ranks)
    out["MRR"] = sum(1 / r for r in ranks) / len(ranks)
    return out


def tied_data(seed: int, n: int = 200, n_groups: int = 15):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    scores = np.round(rng.random(n), 1)  # 11 distinct values: many ties
    groups = rng.integers(0, n_groups, n)
    return labels, scores, groups


def assert_same_dict(a: dict[str, float], b: dict[str, float]) -> None:
    assert list(a) == list(b)
    for key in a:
        assert a[key] == pytest.approx(b[key], rel=1e-12, abs=1e-12), key


# ---------------------------------------------------------------- AUC


@pytest.mark.parametrize("seed", SEEDS)
def test_auc_matches_pairwise_reference_with_ties(seed: int) -> None:
    labels, scores, _ = tied_data(seed)
    assert auc(labels, scores) == pytest.approx(ref_auc(labels.tolist(), scores.tolist()), abs=1e-12)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 1), st.integers(-3, 3)), min_size=2, max_size=40))
def test_auc_hypothesis(rows: list[tuple[int, int]]) -> None:
    labels = [y for y, _ in rows]
    scores = [float(s) for _, s in rows]
    expected = ref_auc(labels, scores)
    got = auc(labels, scores)
    assert (math.isnan(got) and math.isnan(expected)) or got == pytest.approx(expected, abs=1e-12)


def test_auc_hand_cases() -> None:
    assert auc([0, 1, 1], [0.1, 0.4, 0.35]) == 1.0
    assert auc([1, 0], [0.1, 0.9]) == 0.0
    assert auc([0, 1], [0.5, 0.5]) == 0.5  # a single tie counts 1/2
    # pos {0.2, 0.3} vs neg {0.2, 0.1}: 0.5 + 1 + 1 + 1 = 3.5 of 4 pairs
    assert auc([0, 1, 0, 1], [0.2, 0.2, 0.1, 0.3]) == 0.875
    # pos {3, 1} vs neg {2, 1, 0}: (1 + 1 + 1) + (0 + 0.5 + 1) = 4.5 of 6 pairs
    assert auc([1, 0, 1, 0, 0], [3, 2, 1, 1, 0]) == 0.75


def test_auc_single_class_or_empty_is_nan() -> None:
    assert math.isnan(auc([1, 1, 1], [0.1, 0.2, 0.3]))
    assert math.isnan(auc([0, 0], [0.1, 0.2]))
    assert math.isnan(auc([], []))


def test_auc_accepts_torch_and_rejects_bad_input() -> None:
    y = torch.tensor([0, 1, 0, 1])
    s = torch.tensor([0.2, 0.2, 0.1, 0.3], dtype=torch.bfloat16)
    assert auc(y, s) == 0.875
    with pytest.raises(ValueError):
        auc([0, 2], [0.1, 0.2])
    with pytest.raises(ValueError):
        auc([0, 1], [0.1])
    with pytest.raises(ValueError):
        auc([0, 1], [0.1, float("nan")])


# ---------------------------------------------------------------- GAUC


@pytest.mark.parametrize("seed", SEEDS)
def test_gauc_matches_per_group_reference(seed: int) -> None:
    labels, scores, groups = tied_data(seed)
    expected = ref_gauc(labels.tolist(), scores.tolist(), groups.tolist())
    assert gauc(labels, scores, groups) == pytest.approx(expected, abs=1e-12)


def ref_gndcg(labels, scores, groups, k) -> float:
    """Per group: a positive's position = 1 + rows ranked above it (higher score, or equal score
    and negative: ties against the positives; positives of equal score in row order)."""
    values = []
    for g in set(groups):
        idx = [i for i, gi in enumerate(groups) if gi == g]
        pos = [i for i in idx if labels[i]]
        if not pos:
            continue
        dcg = 0.0
        for n, i in enumerate(pos):
            above = [j for j in idx if scores[j] > scores[i] or (scores[j] == scores[i] and not labels[j])]
            tied_pos_before = [j for j in pos[:n] if scores[j] == scores[i]]
            r = 1 + len(above) + len(tied_pos_before)
            dcg += 1 / math.log2(1 + r) if r <= k else 0.0
        ideal = sum(1 / math.log2(1 + j) for j in range(1, min(len(pos), k) + 1))
        values.append(dcg / ideal)
    return sum(values) / len(values) if values else float("nan")


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("k", [1, 3, 10])
def test_group_ndcg_matches_per_group_reference(seed: int, k: int) -> None:
    labels, scores, groups = tied_data(seed)
    expected = ref_gndcg(labels.tolist(), scores.tolist(), groups.tolist(), k)
    assert gndcg(labels, scores, groups, k=k) == pytest.approx(expected, abs=1e-12)


def test_group_ndcg_of_one_target_per_request_is_the_list_ndcg() -> None:
    """A request's candidates with its one target: group NDCG@10 = the list NDCG@10 of the
    targets' ranks (ties against the target), over the requests whose target is listed."""
    rng = np.random.default_rng(0)
    scores = np.round(rng.random((40, 25)), 2)
    target = rng.integers(0, 25, 40)
    labels = np.zeros_like(scores, dtype=np.int64)
    labels[np.arange(40), target] = 1
    groups = np.repeat(np.arange(40), 25)
    ranks = retrieval_ranks(torch.tensor(scores), torch.tensor(target))
    expected = metrics_from_ranks(ranks, ks=(10,))["NDCG@10"]
    assert gndcg(labels.ravel(), scores.ravel(), groups) == pytest.approx(expected, abs=1e-12)
    assert math.isnan(gndcg([0, 0], [0.1, 0.2], [1, 2]))  # no group with a positive
    with pytest.raises(ValueError, match="k must be >= 1"):
        gndcg([1], [0.1], [1], k=0)


@pytest.mark.parametrize("seed", SEEDS)
def test_gauc_skips_single_class_groups(seed: int) -> None:
    labels, scores, groups = tied_data(seed, n=120, n_groups=40)  # many 1-class groups
    ys, ss, gs = labels.tolist(), scores.tolist(), groups.tolist()
    assert gauc(labels, scores, groups) == pytest.approx(ref_gauc(ys, ss, gs), abs=1e-12)
    # adding an all-positive group changes nothing (it is skipped, also from the weights)
    more = gauc(ys + [1] * 5, ss + [0.3] * 5, gs + [999] * 5)
    assert more == pytest.approx(ref_gauc(ys, ss, gs), abs=1e-12)


def test_gauc_hand_case_and_string_groups() -> None:
    # a: AUC 1 (3 rows); b: AUC 0.5 with a tie (2 rows); c: one class -> skipped
    labels = [0, 1, 1, 0, 1, 1, 1]
    scores = [0.1, 0.9, 0.8, 0.4, 0.4, 0.2, 0.7]
    groups = ["a", "a", "a", "b", "b", "c", "c"]
    assert gauc(labels, scores, groups) == pytest.approx((3 * 1.0 + 2 * 0.5) / 5)
    assert gauc(labels, scores, np.array(groups, dtype=object)) == pytest.approx(0.8)
    assert gauc(labels, scores, torch.tensor([5, 5, 5, -1, -1, 7, 7])) == pytest.approx(0.8)
    # groups are not contiguous: same groups interleaved give the same value
    perm = [6, 0, 3, 2, 5, 4, 1]
    got = gauc([labels[i] for i in perm], [scores[i] for i in perm], [groups[i] for i in perm])
    assert got == pytest.approx(0.8)


def test_gauc_nan_when_no_group_qualifies() -> None:
    assert math.isnan(gauc([1, 1, 0, 0], [0.1, 0.2, 0.3, 0.4], ["u", "u", "v", "v"]))
    assert math.isnan(gauc([], [], []))
    with pytest.raises(ValueError):
        gauc([0, 1], [0.1, 0.2], [1])


def test_gauc_single_group_equals_auc() -> None:
    labels, scores, _ = tied_data(3)
    assert gauc(labels, scores, np.zeros_like(labels)) == pytest.approx(auc(labels, scores))


# ---------------------------------------------------------------- logloss and accuracy


@pytest.mark.parametrize("seed", SEEDS)
def test_logloss_and_accuracy_match_loop_reference(seed: int) -> None:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, 100)
    probs = np.round(rng.random(100), 1)  # includes exact 0.0, 0.5 and 1.0
    eps = 1e-7
    ref_ll = 0.0
    ref_acc = 0
    for y, p in zip(labels.tolist(), probs.tolist(), strict=True):
        q = min(max(p, eps), 1 - eps)
        ref_ll -= y * math.log(q) + (1 - y) * math.log(1 - q)
        ref_acc += int((p > 0.5) == (y == 1))
    assert logloss(labels, probs) == pytest.approx(ref_ll / 100, rel=1e-9)
    assert accuracy(labels, probs) == pytest.approx(ref_acc / 100, abs=1e-12)


def test_logloss_clipping_and_hand_case() -> None:
    assert logloss([1, 0], [0.5, 0.5]) == pytest.approx(math.log(2))
    perfect = logloss([1, 0], [1.0, 0.0])
    assert math.isfinite(perfect) and perfect == pytest.approx(1e-7, rel=1e-3)
    worst = logloss([1, 0], [0.0, 1.0])
    assert math.isfinite(worst) and worst == pytest.approx(-math.log(1e-7))
    assert logloss([1], [0.0], eps=1e-3) == pytest.approx(-math.log(1e-3))
    assert logloss(torch.tensor([1.0]), torch.tensor([0.25])) == pytest.approx(math.log(4))
    with pytest.raises(ValueError):
        logloss([1], [0.5], eps=0.0)


def test_accuracy_hand_case() -> None:
    # preds 1, 0, 0, 0 (0.5 is not above the threshold) vs labels 1, 0, 1, 0 -> 3 of 4
    assert accuracy([1, 0, 1, 0], [0.9, 0.2, 0.4, 0.5]) == 0.75
    # threshold 0.45: preds 1, 0, 0, 1 -> 2 of 4; threshold 0.3: preds 1, 0, 1, 1 -> 3 of 4
    assert accuracy([1, 0, 1, 0], [0.9, 0.2, 0.4, 0.5], threshold=0.45) == 0.5
    assert accuracy([1, 0, 1, 0], [0.9, 0.2, 0.4, 0.5], threshold=0.3) == 0.75
    assert math.isnan(accuracy([], []))


# ---------------------------------------------------------------- retrieval


def random_retrieval(seed: int, users: int = 30, items: int = 40):
    rng = np.random.default_rng(seed)
    scores = np.round(rng.random((users, items)), 1)  # many ties
    targets = rng.integers(0, items, users)
    exclude = rng.random((users, items)) < 0.3
    exclude[np.arange(users)[: users // 2], targets[: users // 2]] = True  # target bit set
    return scores, targets, exclude


@pytest.mark.parametrize("seed", SEEDS)
def test_retrieval_ranks_match_loop_reference(seed: int) -> None:
    scores, targets, exclude = random_retrieval(seed)
    s, t, e = scores.tolist(), targets.tolist(), exclude.tolist()
    np.testing.assert_array_equal(retrieval_ranks(scores, targets), ref_ranks(s, t))
    np.testing.assert_array_equal(retrieval_ranks(scores, targets, exclude), ref_ranks(s, t, e))
    ks = (1, 3, 7)
    got = retrieval_metrics(scores, targets, exclude, ks=ks)
    assert_same_dict(got, ref_metrics(ref_ranks(s, t, e), ks))


@pytest.mark.parametrize("seed", SEEDS)
def test_retrieval_torch_matches_numpy(seed: int) -> None:
    scores, targets, exclude = random_retrieval(seed)
    for ex in (None, exclude):
        expected = retrieval_metrics(scores, targets, ex, ks=(5, 20))
        ts = torch.from_numpy(scores).float()
        tex = None if ex is None else torch.from_numpy(ex)
        assert_same_dict(retrieval_metrics(ts, torch.from_numpy(targets), tex, ks=(5, 20)), expected)
        # mixed inputs: torch scores with numpy/list targets and mask
        assert_same_dict(retrieval_metrics(ts, targets.tolist(), ex, ks=(5, 20)), expected)


def test_retrieval_hand_cases() -> None:
    scores = [[0.5, 0.5, 0.1, 0.9], [0.2, 0.8, 0.8, 0.8]]
    # user 0, target 0: item 1 ties (counts against), item 3 is higher -> rank 3
    # user 1, target 1: items 2, 3 tie -> rank 3
    np.testing.assert_array_equal(retrieval_ranks(scores, [0, 1]), [3, 3])
    exclude = [[True, False, False, True], [False, True, True, False]]
    # target bits are set but ignored; item 3 / item 2 removed -> ranks 2 and 2
    np.testing.assert_array_equal(retrieval_ranks(scores, [0, 1], exclude), [2, 2])
    ranks = np.array([1, 2, 4])
    got = metrics_from_ranks(ranks, ks=(1, 3))
    assert list(got) == ["HR@1", "NDCG@1", "HR@3", "NDCG@3", "MRR"]
    assert got["HR@1"] == pytest.approx(1 / 3)
    assert got["HR@3"] == pytest.approx(2 / 3)
    assert got["NDCG@3"] == pytest.approx((1 + 1 / math.log2(3)) / 3)
    assert got["MRR"] == pytest.approx((1 + 1 / 2 + 1 / 4) / 3)


def test_retrieval_default_ks_and_batched_accumulation() -> None:
    scores, targets, exclude = random_retrieval(0, users=40, items=300)
    full = retrieval_metrics(scores, targets, exclude)
    assert list(full) == ["HR@10", "NDCG@10", "HR@50", "NDCG@50", "HR@200", "NDCG@200", "MRR"]
    parts = [retrieval_ranks(scores[i : i + 7], targets[i : i + 7], exclude[i : i + 7]) for i in range(0, 40, 7)]
    assert_same_dict(metrics_from_ranks(np.concatenate(parts)), full)


def test_retrieval_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        retrieval_ranks([[0.1, 0.2]], [2])
    with pytest.raises(ValueError):
        retrieval_ranks(torch.zeros(2, 3), torch.tensor([0, -1]))
    with pytest.raises(ValueError):
        retrieval_ranks(np.zeros((2, 3)), [0, 1], exclude=np.zeros((2, 2), dtype=bool))
    with pytest.raises(ValueError):
        retrieval_ranks([[0.1, float("nan")]], [0])
    with pytest.raises(ValueError):
        metrics_from_ranks([0, 1])
    with pytest.raises(ValueError):
        metrics_from_ranks([1, 2], ks=(0,))
