"""ResNet / DenseNet MLP blocks and backbones: residual identity, dense concatenation, the
order norm → linear → activation → dropout (→ linear), gradients and export."""

from __future__ import annotations

import doctest

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import ranker.nn.blocks
from ranker.nn.blocks import DenseNet, DenseNetBlock, ResNet, ResNetBlock

NORMS = ["batch", "layer", "none"]


@pytest.mark.parametrize("norm", NORMS)
def test_resnet_block_with_zeroed_last_linear_is_identity(norm: str) -> None:
    torch.manual_seed(0)
    block = ResNetBlock(5, 8, norm=norm)
    x = torch.randn(4, 5)
    assert not torch.allclose(block(x), x)  # at init F(x) ≠ 0
    last = block.f[-1]
    assert isinstance(last, nn.Linear) and last.out_features == 5
    with torch.no_grad():
        last.weight.zero_()
        last.bias.zero_()
    torch.testing.assert_close(block(x), x)


def test_resnet_block_is_x_plus_linear_act_linear_of_layer_norm() -> None:
    torch.manual_seed(0)
    block = ResNetBlock(5, 8, norm="layer", activation="gelu", dropout=0.3).eval()
    first, last = block.f[1], block.f[4]
    assert isinstance(first, nn.Linear) and isinstance(last, nn.Linear)
    x = torch.randn(4, 5)
    expected = x + last(F.gelu(first(F.layer_norm(x, (5,)))))
    torch.testing.assert_close(block(x), expected)


def test_dense_block_keeps_x_and_appends_growth_features() -> None:
    torch.manual_seed(0)
    block = DenseNetBlock(5, 3, norm="layer", activation="silu").eval()
    first = block.f[1]
    assert isinstance(first, nn.Linear)
    x = torch.randn(4, 5)
    out = block(x)
    assert block.out_dim == 8 and out.shape == (4, 8)
    torch.testing.assert_close(out[:, :5], x)
    torch.testing.assert_close(out[:, 5:], F.silu(first(F.layer_norm(x, (5,)))))


@pytest.mark.parametrize("norm", NORMS)
def test_resnet_backbone_shapes_and_final_activation(norm: str) -> None:
    torch.manual_seed(0)
    net = ResNet(7, width=6, num_blocks=3, hidden=12, dropout=0.1, norm=norm)
    out = net(torch.randn(5, 7))
    assert net.out_dim == 6 and out.shape == (5, 6)
    assert (out >= 0).all() and (out > 0).any()  # ends with norm → ReLU
    assert sum(isinstance(m, ResNetBlock) for m in net.modules()) == 3


def test_resnet_backbone_is_linear_blocks_then_final_norm_and_activation() -> None:
    """Gorishniy et al.'s ``Prediction`` minus its last Linear: ReLU(LayerNorm(blocks(Wx)))."""
    torch.manual_seed(0)
    net = ResNet(7, width=6, num_blocks=2, hidden=12, norm="layer").eval()
    first, blocks = net.net[0], net.net[1:3]
    assert isinstance(first, nn.Linear) and first.weight.shape == (6, 7)
    x = torch.randn(5, 7)
    torch.testing.assert_close(net(x), F.relu(F.layer_norm(blocks(first(x)), (6,))))


@pytest.mark.parametrize("norm", NORMS)
def test_densenet_backbone_shapes_and_passes_input_through(norm: str) -> None:
    torch.manual_seed(0)
    net = DenseNet(7, num_blocks=3, growth=4, norm=norm).eval()
    x = torch.randn(5, 7)
    out = net(x)
    assert net.out_dim == 7 + 3 * 4 and out.shape == (5, 19)
    torch.testing.assert_close(out[:, :7], x)
    widths = [m.out_dim for m in net.modules() if isinstance(m, DenseNetBlock)]
    assert widths == [11, 15, 19]


@pytest.mark.parametrize(
    "make",
    [
        lambda norm: ResNetBlock(5, 8, norm=norm),
        lambda norm: DenseNetBlock(5, 3, norm=norm),
        lambda norm: ResNet(5, width=6, num_blocks=2, hidden=8, norm=norm),
        lambda norm: DenseNet(5, num_blocks=2, growth=3, norm=norm),
    ],
)
@pytest.mark.parametrize("norm", NORMS)
def test_every_parameter_gets_a_gradient(make, norm: str) -> None:  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    net = make(norm)
    x = torch.randn(6, 5)
    (net(x) ** 2).sum().backward()
    params = dict(net.named_parameters())
    assert params
    for name, p in params.items():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_dropout_is_active_in_training_only() -> None:
    torch.manual_seed(0)
    net = ResNet(5, width=6, num_blocks=2, hidden=32, dropout=0.5, norm="layer")
    x = torch.randn(4, 5)
    assert not torch.allclose(net(x), net(x))
    net.eval()
    torch.testing.assert_close(net(x), net(x))


@pytest.mark.parametrize(
    "net",
    [ResNet(5, width=6, num_blocks=2, hidden=8, norm="batch"), DenseNet(5, num_blocks=2, growth=3, norm="batch")],
    ids=["resnet", "densenet"],
)
def test_export_matches_eager(net: nn.Module) -> None:
    torch.manual_seed(0)
    net.train()(torch.randn(16, 5))  # non-trivial running statistics
    net.eval()
    batch = torch.export.Dim("batch", min=2)
    program = torch.export.export(net, (torch.randn(3, 5),), dynamic_shapes=({0: batch},))
    x = torch.randn(7, 5)
    torch.testing.assert_close(program.module()(x), net(x))


@pytest.mark.parametrize(
    ("build", "name"),
    [
        (lambda: ResNetBlock(5, 8, norm="group"), "norm='group'"),
        (lambda: DenseNetBlock(5, 3, activation="tanhh"), "activation='tanhh'"),
        (lambda: ResNetBlock(5, 0), "hidden=0"),
        (lambda: ResNet(5, width=6, num_blocks=0, hidden=8), "num_blocks=0"),
        (lambda: DenseNet(5, num_blocks=2, growth=0), "growth=0"),
    ],
)
def test_bad_hyperparameters_are_named(build, name: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match=name):
        build()


def test_docstring_examples_run() -> None:
    result = doctest.testmod(ranker.nn.blocks, raise_on_error=False)
    assert result.attempted > 0 and result.failed == 0
