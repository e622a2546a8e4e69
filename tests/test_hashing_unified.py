"""Hashing (splitmix64, stable string hash, hashing trick) and Unified Embedding."""

from __future__ import annotations

import doctest
import os
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ranker import hashing
from ranker.hashing import bucket, mix64, stable_string_hash
from ranker.nn import gather, unified
from ranker.nn import hashing as nn_hashing
from ranker.nn.gather import gather_rows
from ranker.nn.hashing import HashEmbedding
from ranker.nn.unified import UnifiedEmbedding, collision_stats

M64 = (1 << 64) - 1
INT64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)


def splitmix64_reference(x: int, seed: int) -> int:
    """splitmix64 finaliser of x + seed·γ on Python ints masked to 64 bits, as signed int64."""
    z = (x + seed * 0x9E3779B97F4A7C15) & M64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
    z ^= z >> 31
    return z - (1 << 64) if z >> 63 else z


def test_doctests() -> None:
    for module in (hashing, gather, nn_hashing, unified):
        assert doctest.testmod(module).failed == 0


def test_mix64_equals_python_reference() -> None:
    rng = np.random.default_rng(0)
    values = rng.integers(-(2**63), 2**63 - 1, size=300, dtype=np.int64, endpoint=True)
    values = np.concatenate([values, [0, 1, -1, 2**63 - 1, -(2**63)]])
    x = torch.from_numpy(values)
    for seed in (0, 1, 42, 2**64 + 5, -3):
        expected = [splitmix64_reference(int(v), seed) for v in values]
        assert mix64(x, seed).tolist() == expected


def test_mix64_known_splitmix64_outputs() -> None:
    # Vigna's splitmix64.c seeded with 1234567: outputs k = 1, 2 are mix64(1234567, k).
    assert mix64(torch.tensor([1234567]), 1).item() == 6457827717110365317
    assert splitmix64_reference(1234567, 2) == mix64(torch.tensor([1234567]), 2).item()


def test_mix64_tensor_seed_equals_int_seed() -> None:
    x = torch.arange(-50, 50)
    seeds = torch.tensor([0, 7, -(2**62)])
    out = mix64(x.unsqueeze(-1), seeds)  # (100, 3)
    for j, s in enumerate(seeds.tolist()):
        assert torch.equal(out[:, j], mix64(x, s))


def test_mix64_rejects_non_int64() -> None:
    with pytest.raises(TypeError, match="int64"):
        mix64(torch.arange(3, dtype=torch.int32), 0)


@settings(max_examples=200, deadline=None)
@given(st.lists(INT64, min_size=1, max_size=20), INT64, st.integers(1, 2**62))
def test_bucket_in_range_and_deterministic(values: list[int], seed: int, m: int) -> None:
    x = torch.tensor(values, dtype=torch.int64)
    b = bucket(x, seed, m)
    assert b.dtype == torch.int64
    assert bool(((b >= 0) & (b < m)).all())
    assert torch.equal(b, bucket(x.clone(), seed, m))
    assert b.tolist() == [splitmix64_reference(v, seed) % m for v in values]


def test_bucket_rejects_empty_range() -> None:
    with pytest.raises(ValueError, match="num_buckets=0"):
        bucket(torch.tensor([1]), 0, 0)


STRINGS = ["", "a", "Alice", "жанр", "a" * 1000, "x\x00y"]
SCRIPT = (
    "import torch; from ranker.hashing import mix64, stable_string_hash; "
    "print(mix64(torch.arange(-3, 3), 17).tolist()); "
    f"print(stable_string_hash({STRINGS!r} + [None]).tolist())"
)


def test_hashes_identical_in_another_process() -> None:
    env = dict(os.environ, PYTHONHASHSEED="12345")  # a different salt for str hash()
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, check=True, env=env
    ).stdout.splitlines()
    assert out[0] == str(mix64(torch.arange(-3, 3), 17).tolist())
    assert out[1] == str(stable_string_hash([*STRINGS, None]).tolist())


def test_stable_string_hash_values_and_inputs() -> None:
    h = stable_string_hash(["b", "a", None, "b"])
    assert h.dtype == np.int64 and h[2] == hashing.NULL_HASH
    assert h[0] == h[3] != h[1]
    assert len(set(stable_string_hash([str(i) for i in range(10_000)]).tolist())) == 10_000
    # the same values as pyarrow string, large_string, dictionary and chunked arrays
    arr = pa.array(["b", "a", None, "b"])
    for variant in (arr, arr.cast(pa.large_string()), arr.dictionary_encode(), pa.chunked_array([arr[:1], arr[1:]])):
        assert stable_string_hash(variant).tolist() == h.tolist()
    assert stable_string_hash([]).shape == (0,)
    with pytest.raises(TypeError, match="int64"):
        stable_string_hash(pa.array([1, 2]))


def test_hash_embedding_rows_and_unseen_values() -> None:
    emb = HashEmbedding(50, 3, seed=9)
    ids = torch.tensor([[0, 10**15, -7]])
    out = emb(ids)
    assert out.shape == (1, 3, 3)
    assert torch.equal(out, emb.weight[bucket(ids, 9, 50)])
    with pytest.raises(ValueError, match="num_rows=0"):
        HashEmbedding(0, 3)


def ue_fixture(num_rows: int = 97, dim: int = 4) -> UnifiedEmbedding:
    torch.manual_seed(0)
    return UnifiedEmbedding(num_rows, dim, {"user": 3, "item": 2, "genre": 1}, seed=5)


def test_unified_shapes_and_dims() -> None:
    ue = ue_fixture()
    ids = torch.arange(24).reshape(2, 3, 4)
    assert ue("user", ids).shape == (2, 3, 4, 12)
    assert ue.rows("item", ids).shape == (2, 3, 4, 2)
    assert [ue.output_dim(f) for f in ("user", "item", "genre")] == [12, 8, 4]
    with pytest.raises(KeyError, match="feature='nope'"):
        ue("nope", ids)
    with pytest.raises(ValueError, match="probe"):
        UnifiedEmbedding(10, 2, {"a": 0})


def test_unified_seeds_deterministic_and_not_in_state_dict() -> None:
    a, b = ue_fixture(), UnifiedEmbedding(97, 4, {"genre": 1, "user": 3}, seed=5)
    ids = torch.arange(1000)
    assert torch.equal(a.rows("user", ids), b.rows("user", ids))  # order of features irrelevant
    other_seed = UnifiedEmbedding(97, 4, {"user": 3}, seed=6)
    assert not torch.equal(a.rows("user", ids), other_seed.rows("user", ids))
    assert set(a.state_dict()) == {"weight"}


def test_unified_multi_probe_is_concat_of_table_rows() -> None:
    ue = ue_fixture()
    ids = torch.tensor([[1, 2], [3, 10**12]])
    rows = ue.rows("user", ids)  # (2, 2, 3)
    expected = torch.cat([ue.weight[rows[..., j]] for j in range(3)], dim=-1)
    assert torch.equal(ue("user", ids), expected)


def test_features_and_probes_hash_independently() -> None:
    num_rows = 200
    ue = UnifiedEmbedding(num_rows, 1, {"a": 2, "b": 2}, seed=0)
    ids = torch.arange(1000)
    ra, rb = ue.rows("a", ids), ue.rows("b", ids)
    for same in ((ra[:, 0] == rb[:, 0]), (ra[:, 0] == ra[:, 1]), (ra[:, 1] == rb[:, 1])):
        share = same.double().mean().item()
        assert share < 4 / num_rows  # expected 1/200 = 0.005; σ ≈ 0.0022
    assert ra[:, 0].unique().numel() > 0.9 * num_rows  # rows are spread over the table


def test_forward_bag_ignores_padding() -> None:
    ue = ue_fixture()
    ids = torch.tensor([[4, 8, 0, 0], [6, 0, 0, 0], [0, 0, 0, 0]])
    mask = ids > 0
    for mode in ("mean", "sum"):
        out = ue.forward_bag("genre", ids, mask, mode=mode)
        padded = torch.cat([ids, torch.full((3, 5), 123)], 1)
        out_more_padding = ue.forward_bag("genre", padded, padded.ne(123) & padded.gt(0), mode)
        assert torch.allclose(out, out_more_padding)
        assert torch.equal(out[2], torch.zeros(4))  # all padding → zeros
    e = ue("genre", torch.tensor([4, 8, 6]))
    assert torch.allclose(ue.forward_bag("genre", ids, mask, "sum")[0], e[0] + e[1])
    assert torch.allclose(ue.forward_bag("genre", ids, mask, "mean")[0], (e[0] + e[1]) / 2)
    with pytest.raises(ValueError, match="mode='max'"):
        ue.forward_bag("genre", ids, mask, mode="max")


def test_gradients_reach_only_used_rows() -> None:
    ue = ue_fixture(num_rows=1000)
    ids = torch.tensor([[11, 12, 99]])
    mask = torch.tensor([[True, True, False]])  # 99 is padding: its rows get no gradient
    ue.forward_bag("user", ids, mask).pow(2).sum().backward()
    assert ue.weight.grad is not None
    used = ue.rows("user", ids[:, :2]).unique()
    nonzero = ue.weight.grad.abs().sum(1).nonzero().flatten()
    assert set(nonzero.tolist()) == set(used.tolist())


class HandRows:
    """A row mapper with hand-chosen k = 2 rows."""

    table = {"a": {10: (0, 1), 11: (0, 1), 12: (2, 3), 13: (4, 5), 14: (1, 0)}, "b": {7: (2, 3), 8: (0, 9)}}

    def rows(self, feature: str, ids: torch.Tensor) -> torch.Tensor:
        return torch.tensor([self.table[feature][int(v)] for v in ids], dtype=torch.int64)


def test_collision_stats_hand_built() -> None:
    values = {"a": torch.tensor([10, 11, 12, 13, 14, 10]), "b": torch.tensor([8, 7, 7])}
    stats = collision_stats(HandRows(), values)
    # a: 10 and 11 share (0, 1); 14 = (1, 0) differs in probe order → 2/5 collide.
    # a: 12's rows {2, 3} are both b's rows (7); 10/11/14 use 0 (b's) and 1 (not) → 1/5.
    assert stats["a"] == {"distinct": 5, "intra": 2 / 5, "inter": 1 / 5}
    # b: 7 = (2, 3) both used by a; 8 = (0, 9), 9 only b's → 1/2.
    assert stats["b"] == {"distinct": 2, "intra": 0.0, "inter": 1 / 2}
    assert collision_stats(HandRows(), {"a": torch.tensor([], dtype=torch.int64)}) == {
        "a": {"distinct": 0, "intra": 0.0, "inter": 0.0}
    }


def test_collision_stats_matches_brute_force() -> None:
    ue = UnifiedEmbedding(40, 1, {"a": 2, "b": 1, "c": 1}, seed=3)
    values = {"a": torch.arange(30), "b": torch.arange(100, 125), "c": torch.arange(5)}
    stats = collision_stats(ue, values)
    rows = {f: [tuple(r) for r in ue.rows(f, v).tolist()] for f, v in values.items()}
    for f, rs in rows.items():
        others = {row for g, rg in rows.items() if g != f for r in rg for row in r}
        intra = sum(rs.count(r) > 1 for r in rs) / len(rs)
        inter = sum(all(row in others for row in r) for r in rs) / len(rs)
        assert stats[f] == {"distinct": len(rs), "intra": intra, "inter": inter}


def test_collision_stats_extremes() -> None:
    values = {"a": torch.arange(1000), "b": torch.arange(500) * 7}
    tiny = collision_stats(UnifiedEmbedding(1, 1, {"a": 2, "b": 1}), values)
    assert tiny["a"] == {"distinct": 1000, "intra": 1.0, "inter": 1.0}
    assert tiny["b"] == {"distinct": 500, "intra": 1.0, "inter": 1.0}
    huge = collision_stats(UnifiedEmbedding(2_000_000, 1, {"a": 2, "b": 1}), values)
    assert huge["a"]["intra"] == 0.0 and huge["a"]["inter"] < 0.01
    assert huge["b"]["intra"] < 0.01 and huge["b"]["inter"] < 0.01


def test_gather_rows_matches_embedding_values_and_gradients() -> None:
    torch.manual_seed(0)
    weight = torch.randn(7, 3, requires_grad=True)
    rows = torch.tensor([[0, 6, 6], [3, 0, 6]])
    upstream = torch.randn(2, 3, 3)
    ours = gather_rows(weight, rows)
    (g_ours,) = torch.autograd.grad((ours * upstream).sum(), weight)
    ref = torch.nn.functional.embedding(rows, weight)
    (g_ref,) = torch.autograd.grad((ref * upstream).sum(), weight)
    torch.testing.assert_close(ours, ref)
    torch.testing.assert_close(g_ours, g_ref)
    assert (g_ours[[1, 2, 4, 5]] == 0).all()  # rows never gathered get no gradient
