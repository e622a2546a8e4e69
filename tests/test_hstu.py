"""The HSTU layer: attention against a per-pair loop, fused path against reference, bias, masks."""

from __future__ import annotations

import doctest
import math

import pytest
import torch
import torch.nn.functional as F

import ranker.nn.hstu as hstu_module
from ranker.nn.hstu import (
    HSTUConfig,
    HSTULayer,
    RelativeIndices,
    hstu_attention_fused,
    hstu_attention_reference,
    log_time_buckets,
)


def _inputs(b: int = 2, h: int = 2, n: int = 5, d: int = 3, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(b, h, n, d, generator=g) for _ in range(3))
    bias = torch.randn(b, n, n, generator=g)
    mask = torch.rand(b, n, n, generator=g) > 0.3
    return q, k, v, bias, mask


def test_attention_equals_a_per_pair_loop() -> None:
    q, k, v, bias, mask = _inputs()
    got = hstu_attention_reference(q, k, v, bias, mask, n_norm=7)
    b, h, n, d = q.shape
    want = torch.zeros(b, h, n, d)
    for bi in range(b):
        for hi in range(h):
            for i in range(n):
                for j in range(n):
                    if mask[bi, i, j]:
                        s = float(q[bi, hi, i] @ k[bi, hi, j]) + float(bias[bi, i, j])
                        a = s / (1 + math.exp(-s)) / 7  # SiLU(s) / n, no softmax
                        want[bi, hi, i] += a * v[bi, hi, j]
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("fn", [hstu_attention_reference, hstu_attention_fused])
def test_a_mask_divided_by_n_beforehand_gives_the_same_attention(fn) -> None:  # type: ignore[no-untyped-def]
    q, k, v, bias, mask = (t.double() if t.is_floating_point() else t for t in _inputs(seed=2))
    want = fn(q, k, v, bias, mask, 7)
    torch.testing.assert_close(fn(q, k, v, bias, mask.double() / 7, 1), want)
    torch.testing.assert_close(fn(q, k, v, bias, mask.double(), 7), want)


@pytest.mark.parametrize("bias_batch", [2, 1])
def test_fused_attention_matches_reference_on_outputs_and_gradients(bias_batch: int) -> None:
    q, k, v, bias, mask = _inputs(seed=1)
    bias = bias[:bias_batch].clone()
    grads = []
    for fn in (hstu_attention_reference, hstu_attention_fused):
        leaves = [t.clone().double().requires_grad_() for t in (q, k, v, bias)]
        out = fn(*leaves, mask, 5)
        (out * torch.linspace(-1, 1, out.numel()).double().reshape(out.shape)).sum().backward()
        grads.append([out.detach()] + [t.grad for t in leaves])
    for ref, fused in zip(*grads, strict=True):
        torch.testing.assert_close(fused, ref)


def test_fused_attention_passes_gradcheck() -> None:
    q, k, v, bias, mask = (t.double() if t.is_floating_point() else t for t in _inputs(1, 1, 4, 2))
    leaves = [t.requires_grad_() for t in (q, k, v, bias)]
    assert torch.autograd.gradcheck(lambda *a: hstu_attention_fused(*a, mask, 4), leaves)


def test_layers_with_either_attention_give_the_same_outputs_and_gradients() -> None:
    torch.manual_seed(0)
    ref = HSTULayer(HSTUConfig(dim=6, linear_dim=3, attention_dim=2, num_heads=2, max_len=5, dropout=0.0))
    fused = HSTULayer(
        HSTUConfig(dim=6, linear_dim=3, attention_dim=2, num_heads=2, max_len=5, dropout=0.0, attention="fused")
    )
    fused.load_state_dict(ref.state_dict())
    x = torch.randn(3, 5, 6)
    times = torch.cumsum(torch.randint(0, 500, (3, 5)), 1)
    idx = RelativeIndices.build(
        max_len=5, num_buckets=128, positions=torch.arange(5)[None], times=times, query_times=times + 7
    )
    mask = torch.ones(5, 5, dtype=torch.bool).tril()[None]
    outs = []
    for layer in (ref, fused):
        out = layer(x, mask, idx, n_norm=5)
        out.square().sum().backward()
        outs.append((out, [p.grad for p in layer.parameters()]))
    torch.testing.assert_close(outs[1][0], outs[0][0])
    for a, b in zip(outs[0][1], outs[1][1], strict=True):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-6)


def test_layer_equals_the_paper_formula_written_out() -> None:
    torch.manual_seed(1)
    cfg = HSTUConfig(dim=4, linear_dim=2, attention_dim=3, max_len=4, dropout=0.0)
    layer = HSTULayer(cfg)
    x = torch.randn(1, 4, 4)
    times = torch.tensor([[0, 10, 100, 1000]])
    idx = RelativeIndices.build(
        max_len=4, num_buckets=128, positions=torch.arange(4)[None], times=times, query_times=times
    )
    mask = torch.ones(4, 4, dtype=torch.bool).tril()[None]
    u, v, q, k = torch.split(F.silu(layer.f1(F.layer_norm(x, (4,), eps=1e-6))), [2, 2, 3, 3], -1)
    want = torch.zeros(1, 4, 2)
    for i in range(4):
        for j in range(i + 1):
            rab = layer.rab.position[j - i + 3] + layer.rab.time[log_time_buckets(times[0, i] - times[0, j], 128)]
            want[0, i] += F.silu(q[0, i] @ k[0, j] + rab) / 4 * v[0, j]
    y = x + layer.f2(u * F.layer_norm(want, (2,), eps=1e-6))
    torch.testing.assert_close(layer(x, mask, idx, n_norm=4), y, rtol=1e-5, atol=1e-6)


def test_time_buckets_are_log_scale_as_in_the_reference() -> None:
    got = log_time_buckets(torch.tensor([0, 1, 2, 3, 59, 60, 86_400, -86_400, 10**12]), 30)
    want = [min(int(math.log(max(abs(x), 1)) / 0.301), 30) for x in (0, 1, 2, 3, 59, 60, 86_400, -86_400, 10**12)]
    assert got.tolist() == want


def test_relative_position_index_is_key_minus_query_clamped() -> None:
    idx = RelativeIndices.build(max_len=3, num_buckets=4, positions=torch.arange(4)[None])
    assert idx.position is not None and idx.time is None
    assert idx.position[0].tolist() == [[2, 3, 4, 4], [1, 2, 3, 4], [0, 1, 2, 3], [0, 0, 1, 2]]


def test_candidates_that_do_not_see_each_other_are_scored_independently() -> None:
    """The mask generative ranking needs: 3 history tokens, candidates see history + self."""
    torch.manual_seed(2)
    layer = HSTULayer(HSTUConfig(dim=8, linear_dim=4, attention_dim=4, max_len=8, dropout=0.0))
    hist, cands = torch.randn(1, 3, 8), torch.randn(1, 4, 8)

    def run(c: torch.Tensor) -> torch.Tensor:
        n = 3 + c.shape[1]
        mask = torch.ones(n, n, dtype=torch.bool).tril()
        mask[3:, 3:] = torch.eye(n - 3, dtype=torch.bool)
        pos = torch.cat([torch.arange(3), torch.full((c.shape[1],), 3)])[None]
        idx = RelativeIndices.build(max_len=8, num_buckets=128, positions=pos)
        return layer(torch.cat([hist, c], 1), mask[None], idx, n_norm=8)[:, 3:]

    together = run(cands)
    for i in range(4):
        torch.testing.assert_close(run(cands[:, i : i + 1])[:, 0], together[:, i])


def test_doctests() -> None:
    assert doctest.testmod(hstu_module, raise_on_error=False).failed == 0
