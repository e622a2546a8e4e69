"""DCN-V2 cross network and the cross/deep structures: degree property, hand-computed layers,
low-rank/full-rank equivalence, gradients and export."""

from __future__ import annotations

import doctest
import math
from typing import Any

import pytest
import torch
from torch import nn

import ranker.nn.crossnet
import ranker.nn.interaction
from ranker.nn.crossnet import CrossNetV2
from ranker.nn.interaction import CrossStructure
from ranker.nn.mlp import MLP

VARIANTS: dict[str, dict[str, Any]] = {"full": {}, "low_rank": {"rank": 2}, "mixture": {"rank": 2, "num_experts": 3}}


def _layers(net: CrossNetV2) -> list[Any]:
    """The cross layers, typed loosely so tests can reach their parameters."""
    return list(net.layers)


def _randomize_biases(net: CrossNetV2, seed: int) -> None:
    """Biases start at zero; random ones put lower-degree terms into the polynomial."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if name.endswith("bias"):
                p.copy_(torch.randn(p.shape, generator=gen, dtype=p.dtype))


def _ray_differences(net: nn.Module, dim: int, num_layers: int, seed: int) -> tuple[float, float, float]:
    """f(t) = 1ᵀ net(t·x) at L + 3 equally spaced t (float64); returns the largest |value|,
    the smallest |(L+1)-th difference| and the |(L+2)-th difference|."""
    x = torch.randn(dim, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    t = torch.linspace(-1.5, 1.5, num_layers + 3, dtype=torch.float64)
    with torch.no_grad():
        values = net(t[:, None] * x).sum(dim=-1)  # (L + 3,)
    top = torch.diff(values, n=num_layers + 1)  # (2,): (L+1)! h^{L+1} × leading coefficient
    beyond = torch.diff(values, n=num_layers + 2)  # (1,)
    return values.abs().max().item(), top.abs().min().item(), beyond.abs().max().item()


@pytest.mark.parametrize("variant", ["full", "low_rank", "mixture"])
@pytest.mark.parametrize("num_layers", [1, 2, 3, 4])
def test_output_is_polynomial_of_degree_exactly_layers_plus_one(variant: str, num_layers: int) -> None:
    torch.manual_seed(num_layers)
    dim = 5
    net = CrossNetV2(dim, num_layers, **VARIANTS[variant], expert_activation=None).double()
    _randomize_biases(net, seed=num_layers)
    if variant == "mixture":
        # A softmax gate of x_l is not polynomial; zero weights make it the constant 1/K,
        # leaving a uniform average of linear-g (hence polynomial) experts.
        with torch.no_grad():
            for layer in _layers(net):
                layer.gate.weight.zero_()
    scale, top, beyond = _ray_differences(net, dim, num_layers, seed=100 + num_layers)
    assert beyond < 1e-8 * scale, (beyond, scale)  # no term of degree L + 2 or higher
    assert top > 1e-4 * scale, (top, scale)  # but a nonzero term of degree L + 1


@pytest.mark.parametrize("case", ["tanh_experts", "input_dependent_gate"])
def test_mixture_with_nonlinearity_is_not_a_polynomial(case: str) -> None:
    """The converse, so the degree test is known to be able to fail."""
    torch.manual_seed(0)
    activation = "tanh" if case == "tanh_experts" else None
    net = CrossNetV2(5, 2, rank=3, num_experts=3, expert_activation=activation).double()
    _randomize_biases(net, seed=0)
    with torch.no_grad():
        for layer in _layers(net):
            if case == "tanh_experts":
                layer.gate.weight.zero_()
            else:
                layer.gate.weight.mul_(5.0)
    scale, _, beyond = _ray_differences(net, 5, 2, seed=1)
    assert beyond > 1e-6 * scale


def test_one_full_rank_layer_by_hand() -> None:
    net = CrossNetV2(2, 1)
    with torch.no_grad():
        _layers(net)[0].linear.weight.copy_(torch.tensor([[1.0, 2.0], [3.0, 4.0]]))
        _layers(net)[0].linear.bias.copy_(torch.tensor([0.5, -1.0]))
    # W x0 = [5, 11]; + b = [5.5, 10]; x0 ⊙ · = [5.5, 20]; + x0 = [6.5, 22]
    out = net(torch.tensor([[1.0, 2.0]]))
    torch.testing.assert_close(out, torch.tensor([[6.5, 22.0]]))


def test_one_low_rank_layer_by_hand() -> None:
    net = CrossNetV2(2, 1, rank=1)
    with torch.no_grad():
        _layers(net)[0].v.weight.copy_(torch.tensor([[3.0, 1.0]]))  # Vᵀ
        _layers(net)[0].u.weight.copy_(torch.tensor([[1.0], [2.0]]))  # U
        _layers(net)[0].u.bias.copy_(torch.tensor([0.5, -1.0]))
    # Vᵀ x0 = 5; U · = [5, 10]; + b = [5.5, 9]; x0 ⊙ · = [5.5, 18]; + x0 = [6.5, 20]
    out = net(torch.tensor([[1.0, 2.0]]))
    torch.testing.assert_close(out, torch.tensor([[6.5, 20.0]]))


@pytest.mark.parametrize("activation", [None, "tanh"])
def test_one_mixture_layer_by_hand(activation: str | None) -> None:
    net = CrossNetV2(2, 1, rank=1, num_experts=2, expert_activation=activation)
    layer = _layers(net)[0]
    with torch.no_grad():
        layer.v.copy_(torch.tensor([[[1.0], [0.0]], [[0.0], [1.0]]]))  # V_1 = e1, V_2 = e2
        layer.u.copy_(torch.tensor([[[1.0], [0.0]], [[0.0], [1.0]]]))  # U_1 = e1, U_2 = e2
        layer.c.copy_(torch.tensor([[[1.0]], [[2.0]]]))  # C_1 = 1, C_2 = 2
        layer.bias.copy_(torch.tensor([0.5, 0.0]))
        layer.gate.weight.copy_(torch.tensor([[0.0, 0.0], [math.log(3.0), 0.0]]))
    x0 = torch.tensor([[1.0, 2.0]])
    g = math.tanh if activation == "tanh" else (lambda z: z)
    # Gate logits (0, ln 3) at x0 = [1, 2] → softmax (1/4, 3/4).
    e1 = [1.0 * (g(1.0 * g(1.0)) + 0.5), 2.0 * 0.0]  # x0 ⊙ (U_1 g(C_1 g(V_1ᵀ x0)) + b)
    e2 = [1.0 * 0.5, 2.0 * g(2.0 * g(2.0))]
    expected = [0.25 * a + 0.75 * b + x for a, b, x in zip(e1, e2, [1.0, 2.0], strict=True)]
    torch.testing.assert_close(net(x0), torch.tensor([expected]))
    if activation is None:  # the numbers written out: [0.25·1.5 + 0.75·0.5 + 1, 0.75·8 + 2]
        torch.testing.assert_close(net(x0), torch.tensor([[1.75, 8.0]]))


def test_low_rank_with_rank_dim_equals_full_rank() -> None:
    torch.manual_seed(0)
    dim, num_layers = 4, 3
    full, low = CrossNetV2(dim, num_layers), CrossNetV2(dim, num_layers, rank=dim)
    with torch.no_grad():
        for f, lo in zip(_layers(full), _layers(low), strict=True):
            u, v, b = torch.randn(dim, dim), torch.randn(dim, dim), torch.randn(dim)
            f.linear.weight.copy_(u @ v.T)
            f.linear.bias.copy_(b)
            lo.u.weight.copy_(u)
            lo.v.weight.copy_(v.T)
            lo.u.bias.copy_(b)
    x = torch.randn(7, dim)
    torch.testing.assert_close(low(x), full(x), rtol=1e-5, atol=1e-5)
    assert not torch.allclose(full(x), x)  # the layers do something


def test_mixture_of_identical_experts_is_independent_of_the_gate() -> None:
    """Gate weights sum to one: K copies of one linear-g expert equal the low-rank layer
    with U' = U C, whatever the (random, input-dependent) gate says."""
    torch.manual_seed(1)
    dim, rank = 5, 2
    mix = CrossNetV2(dim, 2, rank=rank, num_experts=3, expert_activation=None)
    low = CrossNetV2(dim, 2, rank=rank)
    with torch.no_grad():
        for m, lo in zip(_layers(mix), _layers(low), strict=True):
            m.u.copy_(m.u[:1].expand_as(m.u))
            m.v.copy_(m.v[:1].expand_as(m.v))
            m.c.copy_(m.c[:1].expand_as(m.c))
            m.bias.copy_(torch.randn(dim))
            m.gate.weight.mul_(10.0)
            lo.u.weight.copy_(m.u[0] @ m.c[0])
            lo.v.weight.copy_(m.v[0].T)
            lo.u.bias.copy_(m.bias)
    x = torch.randn(6, dim)
    torch.testing.assert_close(mix(x), low(x), rtol=1e-5, atol=1e-5)


def test_initialisation_is_glorot_normal_with_zero_bias() -> None:
    torch.manual_seed(0)
    full = CrossNetV2(256, 1)
    mix = CrossNetV2(256, 1, rank=64, num_experts=2)
    w = _layers(full)[0].linear.weight
    assert abs(w.std().item() / math.sqrt(2 / (256 + 256)) - 1) < 0.05
    assert abs(w.mean().item()) < 0.01
    assert _layers(full)[0].linear.bias.abs().sum() == 0
    for i in range(2):  # per-expert fans: U_i, V_i are 256×64
        for p in (_layers(mix)[0].u[i], _layers(mix)[0].v[i]):
            assert abs(p.std().item() / math.sqrt(2 / (256 + 64)) - 1) < 0.05
    assert _layers(mix)[0].bias.abs().sum() == 0


@pytest.mark.parametrize("variant", ["full", "low_rank", "mixture"])
def test_shapes_and_every_parameter_gets_a_gradient(variant: str) -> None:
    torch.manual_seed(0)
    net = CrossNetV2(6, 3, **VARIANTS[variant])
    assert net.out_dim == 6
    assert net(torch.randn(2, 3, 6)).shape == (2, 3, 6)  # any leading dims
    out = net(torch.randn(4, 6))
    assert out.shape == (4, 6)
    (out**2).sum().backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_parameter_counts() -> None:
    """Full: L(d² + d); low rank: L(2dr + d); mixture: L(K(2dr + r²) + d + Kd)."""
    d, r, k, n_layers = 6, 2, 3, 2

    def count(net: nn.Module) -> int:
        return sum(p.numel() for p in net.parameters())

    assert count(CrossNetV2(d, n_layers)) == n_layers * (d * d + d)
    assert count(CrossNetV2(d, n_layers, rank=r)) == n_layers * (2 * d * r + d)
    mix = CrossNetV2(d, n_layers, rank=r, num_experts=k)
    assert count(mix) == n_layers * (k * (2 * d * r + r * r) + d + k * d)


@pytest.mark.parametrize("variant", ["full", "low_rank", "mixture"])
def test_export_matches_eager(variant: str) -> None:
    torch.manual_seed(0)
    net = CrossNetV2(6, 2, **VARIANTS[variant]).eval()
    batch = torch.export.Dim("batch", min=2)
    program = torch.export.export(net, (torch.randn(3, 6),), dynamic_shapes=({0: batch},))
    x = torch.randn(5, 6)  # another batch size than the traced one
    torch.testing.assert_close(program.module()(x), net(x))


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"dim": 0, "num_layers": 1}, "dim="),
        ({"dim": 4, "num_layers": 0}, "num_layers="),
        ({"dim": 4, "num_layers": 1, "rank": 0}, "rank="),
        ({"dim": 4, "num_layers": 1, "num_experts": 0}, "num_experts="),
        ({"dim": 4, "num_layers": 1, "num_experts": 2}, "rank=None"),
        ({"dim": 4, "num_layers": 1, "rank": 2, "num_experts": 2, "expert_activation": "x"}, "expert_activation='x'"),
    ],
)
def test_bad_hyperparameters_are_named(kwargs: dict[str, int | str], name: str) -> None:
    with pytest.raises(ValueError, match=name):
        CrossNetV2(**kwargs)  # type: ignore[arg-type]


# --- structures -----------------------------------------------------------------------------


def _fields() -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(3)
    return [torch.randn(4, 2, generator=gen), torch.randn(4, 4, generator=gen)]


def test_cross_only_is_the_cross_network_over_the_concatenated_fields() -> None:
    torch.manual_seed(0)
    cross = CrossNetV2(6, 2, rank=3)
    block = CrossStructure(cross, structure="cross_only")
    fields = _fields()
    assert block.out_dim == 6
    torch.testing.assert_close(block(fields), cross(torch.cat(fields, dim=-1)))


@pytest.mark.parametrize("projection", [None, 3])
def test_stacked_feeds_the_crossed_vector_to_deep(projection: int | None) -> None:
    torch.manual_seed(0)
    cross, deep = CrossNetV2(6, 2), MLP(projection or 6, [5, 4])
    block = CrossStructure(cross, structure="stacked", deep=deep, projection=projection)
    fields = _fields()
    out = block(fields)
    assert block.out_dim == 4 and out.shape == (4, 4)
    crossed = cross(torch.cat(fields, dim=-1))
    if projection is not None:
        assert isinstance(block.projection, nn.Linear)
        assert block.projection.weight.shape == (3, 6)
        crossed = block.projection(crossed)
    torch.testing.assert_close(out, deep(crossed))


def test_parallel_concatenates_cross_and_deep_of_x0() -> None:
    torch.manual_seed(0)
    cross, deep = CrossNetV2(6, 2, rank=2, num_experts=2), MLP(6, [5])
    block = CrossStructure(cross, structure="parallel", deep=deep)
    fields = _fields()
    x0 = torch.cat(fields, dim=-1)
    out = block(fields)
    assert block.out_dim == 11 and out.shape == (4, 11)
    torch.testing.assert_close(out[:, :6], cross(x0))
    torch.testing.assert_close(out[:, 6:], deep(x0))


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"structure": "serial", "deep": None}, "structure='serial'"),
        ({"structure": "stacked", "deep": None}, "deep=None"),
        ({"structure": "cross_only", "deep": "mlp"}, "takes no deep"),
        ({"structure": "parallel", "deep": "mlp", "projection": 3}, "projection=3"),
        ({"structure": "stacked", "deep": "linear"}, "out_dim"),
    ],
)
def test_bad_structures_are_named(kwargs: dict[str, object], name: str) -> None:
    deep = {"mlp": MLP(6, [5]), "linear": nn.Linear(6, 5), None: None}[kwargs.pop("deep")]  # type: ignore[index]
    with pytest.raises(ValueError, match=name):
        CrossStructure(CrossNetV2(6, 1), deep=deep, **kwargs)  # type: ignore[arg-type]


def test_structure_exports() -> None:
    torch.manual_seed(0)
    block = CrossStructure(CrossNetV2(6, 2, rank=2, num_experts=2), structure="parallel", deep=MLP(6, [5])).eval()
    fields = _fields()
    program = torch.export.export(block, (fields,))
    torch.testing.assert_close(program.module()(fields), block(fields))


@pytest.mark.parametrize("module", [ranker.nn.crossnet, ranker.nn.interaction])
def test_docstring_examples_run(module: object) -> None:
    result = doctest.testmod(module, raise_on_error=False)  # type: ignore[arg-type]
    assert result.attempted > 0 and result.failed == 0
