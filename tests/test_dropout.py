"""FastDropout: keep rate, unbiasedness, eval identity, gradients, determinism under a seed."""

from __future__ import annotations

import pytest
import torch

from ranker.nn.dropout import FastDropout


@pytest.mark.parametrize("p", [0.1, 0.2, 0.5])
def test_keep_rate_and_mean_are_right(p: float) -> None:
    torch.manual_seed(0)
    drop = FastDropout(p).train()
    y = drop(torch.ones(1000, 1000))
    kept = (y != 0).float().mean().item()
    assert kept == pytest.approx(1 - round(p * 256) / 256, abs=2e-3)
    assert y.mean().item() == pytest.approx(1.0, abs=3e-3)  # inverted dropout is unbiased
    values = torch.unique(y)
    assert len(values) == 2 and values[0] == 0.0
    assert values[1].item() == pytest.approx(256 / (256 - round(p * 256)), rel=1e-6)


def test_eval_is_identity_and_gradient_flows_only_through_kept_elements() -> None:
    x = torch.randn(64, 32, requires_grad=True)
    drop = FastDropout(0.3)
    assert torch.equal(drop.eval()(x), x)
    torch.manual_seed(1)
    y = drop.train()(x)
    y.sum().backward()
    kept = y != 0
    assert x.grad is not None
    assert torch.allclose(x.grad[kept], torch.full_like(x.grad[kept], drop.scale))
    assert (x.grad[~kept] == 0).all()


def test_same_seed_same_mask_and_odd_sizes() -> None:
    drop = FastDropout(0.25).train()
    torch.manual_seed(7)
    a = drop(torch.ones(3, 5, 7))
    torch.manual_seed(7)
    b = drop(torch.ones(3, 5, 7))
    assert torch.equal(a, b) and a.shape == (3, 5, 7)


def test_invalid_p_names_the_value() -> None:
    with pytest.raises(ValueError, match="p=1.0"):
        FastDropout(1.0)
