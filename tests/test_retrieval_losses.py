"""Next-item losses: sampled softmax over the whole catalogue is the full softmax; log-Q."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ranker.config.retrieval import FullSoftmax, InBatchSoftmax, SampledSoftmax
from ranker.retrieval.losses import (
    NextItemLoss,
    full_softmax_loss,
    in_batch_softmax_loss,
    sampled_softmax_loss,
    sequence_sampled_softmax_loss,
)


def _case(n: int = 6, items: int = 9, d: int = 4, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    states = torch.randn(n, d, generator=g, requires_grad=True)
    table = torch.randn(items + 1, d, generator=g, requires_grad=True)
    targets = torch.randint(1, items + 1, (n,), generator=g)
    return states, table, targets


def test_sampled_softmax_with_the_whole_catalogue_equals_the_full_softmax() -> None:
    states, table, targets = _case()
    everything = torch.arange(1, 10)  # every item, the targets included (accidental hits)
    sampled = sampled_softmax_loss(states, targets, table, everything, temperature=0.5)
    full = full_softmax_loss(states, targets, table, temperature=0.5)
    torch.testing.assert_close(sampled, full)
    g_sampled = torch.autograd.grad(sampled, (states, table))
    g_full = torch.autograd.grad(full, (states, table))
    for a, b in zip(g_sampled, g_full, strict=True):
        torch.testing.assert_close(a, b)


def test_full_softmax_is_cross_entropy_by_hand() -> None:
    states, table, targets = _case(seed=1)
    logits = states @ table[1:].T / 0.1
    want = sum(-logits[r, targets[r] - 1] + torch.logsumexp(logits[r], 0) for r in range(6)) / 6
    torch.testing.assert_close(full_softmax_loss(states, targets, table, 0.1), want)


def test_accidental_hits_are_removed_row_by_row() -> None:
    states, table, targets = _case(seed=2)
    negatives = torch.tensor([targets[0].item(), 3, 3])
    got = sampled_softmax_loss(states, targets, table, negatives, temperature=1.0)
    rows = []
    for r in range(6):
        cands = [int(targets[r])] + [int(j) for j in negatives if j != targets[r]]
        logits = states[r] @ table[cands].T
        rows.append(-F.log_softmax(logits, 0)[0])
    torch.testing.assert_close(got, torch.stack(rows).mean())


def test_per_row_negatives_by_hand() -> None:
    states, table, targets = _case(seed=5)
    negatives = torch.randint(1, 10, (6, 4), generator=torch.Generator().manual_seed(1))
    negatives[2, 1] = targets[2]  # an accidental hit
    got = sampled_softmax_loss(states, targets, table, negatives, temperature=0.5)
    rows = []
    for r in range(6):
        cands = [int(targets[r])] + [int(j) for j in negatives[r] if j != targets[r]]
        rows.append(-F.log_softmax(states[r] @ table[cands].T / 0.5, 0)[0])
    torch.testing.assert_close(got, torch.stack(rows).mean())


def test_per_sequence_negatives_equal_per_row_negatives_repeated_along_the_sequence() -> None:
    g = torch.Generator().manual_seed(6)
    states = torch.randn(3, 5, 4, generator=g, requires_grad=True)
    table = torch.randn(10, 4, generator=g, requires_grad=True)
    targets = torch.randint(1, 10, (3, 5), generator=g)
    targets[0, :2] = 0  # positions without a target contribute nothing
    negatives = torch.randint(1, 10, (3, 7), generator=g)
    negatives[1, 0] = targets[1, 3]
    got = sequence_sampled_softmax_loss(states, targets, table, negatives, temperature=0.3)
    on = targets > 0
    per_row = negatives.unsqueeze(1).expand(-1, 5, -1)[on]
    want = sampled_softmax_loss(states[on], targets[on], table, per_row, temperature=0.3)
    torch.testing.assert_close(got, want)
    for a, b in zip(torch.autograd.grad(got, (states, table)), torch.autograd.grad(want, (states, table)), strict=True):
        torch.testing.assert_close(a, b)


def test_sequence_losses_ignore_positions_without_a_target() -> None:
    g = torch.Generator().manual_seed(7)
    states = torch.randn(2, 4, 3, generator=g, requires_grad=True)
    table = torch.randn(8, 3, generator=g)
    targets = torch.tensor([[0, 0, 3, 5], [0, 2, 6, 1]])
    for per in ("row", "sequence", "batch"):
        fn = NextItemLoss(SampledSoftmax(num_negatives=4, negatives_per=per), num_items=7)
        value = fn(states, targets, table, torch.Generator().manual_seed(0))
        (grad,) = torch.autograd.grad(value, states)
        assert grad[targets == 0].abs().sum() == 0, per
        assert grad[targets > 0].abs().sum(-1).min() > 0, per
    full = NextItemLoss(FullSoftmax(temperature=0.5), num_items=7)
    on = targets > 0
    torch.testing.assert_close(full(states, targets, table), full_softmax_loss(states[on], targets[on], table, 0.5))


def test_in_batch_softmax_with_log_q_correction_by_hand() -> None:
    states, table, _ = _case(seed=3)
    targets = torch.tensor([2, 5, 2, 7, 5, 5])
    counts = torch.tensor([0, 1, 4, 1, 1, 10, 1, 2, 1, 1.0])
    loss = NextItemLoss(InBatchSoftmax(temperature=0.2), num_items=9, target_counts=counts)
    got = loss(states, targets, table)
    q = counts / counts.sum()
    cands = [2, 5, 7]
    rows = []
    for r in range(6):
        logits = torch.stack([states[r] @ table[c] / 0.2 - math.log(q[c]) for c in cands])
        rows.append(-F.log_softmax(logits, 0)[cands.index(int(targets[r]))])
    torch.testing.assert_close(got, torch.stack(rows).mean())
    plain = in_batch_softmax_loss(states, targets, table, 0.2)
    assert not torch.allclose(plain, got)


def test_configured_losses_are_finite_and_train() -> None:
    states, table, targets = _case(seed=4)
    counts = torch.ones(10)
    for cfg in (
        FullSoftmax(),
        SampledSoftmax(num_negatives=5),
        InBatchSoftmax(),
        SampledSoftmax(num_negatives=5, negatives_per="batch"),
    ):
        fn = NextItemLoss(cfg, num_items=9, target_counts=counts)
        value = fn(states, targets, table, torch.Generator().manual_seed(0))
        assert torch.isfinite(value)
        (grad,) = torch.autograd.grad(value, states)
        assert grad.abs().sum() > 0
