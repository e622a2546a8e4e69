"""Numerical features: PLE (Gorishniy et al. 2022, Eq. 1), bins, embeddings, fitted transforms."""

from __future__ import annotations

import doctest
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from ranker.data import bins, numeric
from ranker.data.bins import compute_bins, quantile_bin_ids
from ranker.data.numeric import EmpiricalCDF, SigmoidSquash, sigmoid_squash, signed_log1p
from ranker.data.vocab import MISSING
from ranker.nn import functional, numerical
from ranker.nn.functional import piecewise_linear_encoding
from ranker.nn.numerical import LinearEmbeddings, PeriodicEmbeddings, PiecewiseLinearEmbeddings, PiecewiseLinearEncoding

INF, NAN = math.inf, math.nan
EDGES = torch.tensor([0.0, 1.0, 3.0, 4.0])  # T = 3 bins of widths 1, 2, 1
# x → [e_1, e_2, e_3] by hand from Eq. 1: below b_0 the first component goes negative,
# above b_3 the last exceeds 1, inner components stay in [0, 1].
PLE_CASES = {
    -1.0: [-1.0, 0.0, 0.0],
    0.0: [0.0, 0.0, 0.0],
    0.5: [0.5, 0.0, 0.0],
    1.0: [1.0, 0.0, 0.0],
    2.0: [1.0, 0.5, 0.0],
    3.0: [1.0, 1.0, 0.0],
    3.5: [1.0, 1.0, 0.5],
    4.0: [1.0, 1.0, 1.0],
    6.0: [1.0, 1.0, 3.0],
}
FINITE = st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False, width=32)


def test_doctests() -> None:
    for module in (functional, numerical, bins, numeric):
        assert doctest.testmod(module).failed == 0


def test_ple_hand_values() -> None:
    x = torch.tensor(list(PLE_CASES))
    expected = torch.tensor(list(PLE_CASES.values()))
    assert torch.allclose(piecewise_linear_encoding(x, EDGES), expected)


def test_ple_module_hand_values_with_different_bin_counts() -> None:
    second = torch.tensor([-2.0, 2.0])  # T = 1: min-max scaling, unclipped
    ple = PiecewiseLinearEncoding([EDGES, second, torch.tensor([0.0, 10.0, 20.0])])
    x = torch.tensor([[-1.0, 4.0, 25.0], [3.5, -4.0, 5.0]])
    expected = torch.tensor([[-1.0, 0.0, 0.0, 1.5, 1.0, 1.5], [1.0, 1.0, 0.5, -0.5, 0.5, 0.0]])
    assert ple.out_dim == 6
    assert torch.allclose(ple(x), expected)
    assert torch.equal(ple.padded(x)[:, 1, 1:], torch.zeros(2, 2))  # padding is exactly 0


def test_ple_t1_is_min_max_scaling() -> None:
    x = torch.linspace(-5, 5, 21)
    b0, b1 = -1.0, 3.0
    out = piecewise_linear_encoding(x, torch.tensor([b0, b1]))
    assert torch.allclose(out[:, 0], (x - b0) / (b1 - b0))


@settings(max_examples=50, deadline=None)
@given(
    hnp.arrays(np.float32, st.integers(2, 40), elements=FINITE),
    hnp.arrays(np.float32, st.integers(2, 8), elements=FINITE, unique=True),
)
def test_ple_components_non_decreasing_in_x(x: np.ndarray, raw_edges: np.ndarray) -> None:
    edges = torch.from_numpy(np.sort(raw_edges))
    if bool((edges.diff() <= 0).any()):
        return
    xs = torch.from_numpy(np.sort(x)).double()
    out = piecewise_linear_encoding(xs, edges.double())  # (N, T)
    assert bool((out.diff(dim=0) >= -1e-9).all())
    assert out.shape == (x.size, edges.numel() - 1)


def test_ple_rejects_bad_edges() -> None:
    with pytest.raises(ValueError, match="strictly increasing"):
        piecewise_linear_encoding(torch.zeros(3), torch.tensor([0.0, 1.0, 1.0]))
    with pytest.raises(ValueError, match="at least 2"):
        PiecewiseLinearEncoding([torch.tensor([0.0])])
    with pytest.raises(ValueError, match=r"edges\[1\]"):
        PiecewiseLinearEncoding([EDGES, torch.tensor([1.0, 0.0])])


def test_compute_bins_quantiles_nan_and_duplicates() -> None:
    x = torch.arange(101, dtype=torch.float32)
    assert compute_bins(x, 4).tolist() == [0.0, 25.0, 50.0, 75.0, 100.0]
    with_missing = np.concatenate([x.numpy(), [NAN, INF, -INF]])
    assert compute_bins(with_missing, 4).tolist() == [0.0, 25.0, 50.0, 75.0, 100.0]
    discrete = np.array([0.0] * 51 + [1.0] * 44 + [2.0] * 5)
    edges = compute_bins(discrete, 10)
    assert edges.tolist() == [0.0, 1.0, 2.0]  # 11 quantiles, duplicates removed
    assert compute_bins(np.array([3.0, 7.0]), 1).tolist() == [3.0, 7.0]


def test_compute_bins_errors_name_the_problem() -> None:
    with pytest.raises(ValueError, match="0 finite values"):
        compute_bins(np.full(10, NAN), 4)
    with pytest.raises(ValueError, match="1 distinct"):
        compute_bins(np.full(10, 2.0), 4)
    with pytest.raises(ValueError, match="n_bins=0"):
        compute_bins(np.arange(10.0), 0)
    with pytest.raises(ValueError, match="method='kmeans'"):
        compute_bins(np.arange(10.0), 2, method="kmeans")
    with pytest.raises(ValueError, match="needs the train target"):
        compute_bins(np.arange(10.0), 2, method="tree")
    with pytest.raises(ValueError, match="does not use y"):
        compute_bins(np.arange(10.0), 2, y=np.arange(10.0))


def test_tree_bins_find_the_steps_of_the_target() -> None:
    x = np.arange(101) / 100
    y = np.where(x < 0.2, 0.0, np.where(x < 0.7, 5.0, 1.0))
    assert np.allclose(compute_bins(x, 2, method="tree", y=y).numpy(), [0.0, 0.195, 1.0])
    three = compute_bins(x, 3, method="tree", y=y).numpy()
    assert np.allclose(three, [0.0, 0.195, 0.695, 1.0])
    assert np.allclose(compute_bins(x, 10, method="tree", y=y).numpy(), three)  # pure leaves
    labels = np.where(x < 0.2, 0, np.where(x < 0.7, 2, 1))
    cls = compute_bins(x, 3, method="tree", y=labels, regression=False).numpy()
    assert np.allclose(cls, [0.0, 0.195, 0.695, 1.0])
    assert compute_bins(x, 1, method="tree", y=y).tolist() == [0.0, 1.0]


def test_tree_bins_on_several_targets_find_each_targets_step() -> None:
    """A 2-D y is one tree for all targets (summed Gini): with one split per target it finds
    both steps, while the first target alone has no reason to cut at the second's step."""
    x = np.arange(101) / 100
    income = (x >= 0.7).astype(int)  # steps at 0.7
    young = (x < 0.2).astype(int)  # steps at 0.2
    both = compute_bins(x, 3, method="tree", y=np.stack([income, young], 1), regression=False).numpy()
    assert np.allclose(both, [0.0, 0.195, 0.695, 1.0])
    first_only = compute_bins(x, 3, method="tree", y=income, regression=False).numpy()
    assert not np.any(np.isclose(first_only, 0.195))
    with pytest.raises(ValueError, match="N = len"):
        compute_bins(x, 3, method="tree", y=np.stack([income, young], 1)[:50], regression=False)


def test_tree_bins_first_split_matches_brute_force() -> None:
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=60), rng.normal(size=60)
    sse = lambda v: float(((v - v.mean()) ** 2).sum()) if v.size else 0.0  # noqa: E731
    xs = np.sort(x)
    cands = (xs[1:] + xs[:-1]) / 2
    best = min(cands, key=lambda t: sse(y[x <= t]) + sse(y[x > t]))
    edges = compute_bins(x, 2, method="tree", y=y).numpy()
    assert edges.size == 3 and np.isclose(edges[1], best)


def test_tree_bins_respect_min_samples_leaf() -> None:
    rng = np.random.default_rng(2)
    x = rng.normal(size=500)
    y = np.sin(3 * x) + 0.1 * rng.normal(size=500)
    edges = compute_bins(x, 8, method="tree", y=y, min_samples_leaf=40).double().numpy()
    counts, _ = np.histogram(x, bins=edges)
    assert edges.size == 9 and counts.min() >= 40


def test_module_shapes() -> None:
    edges = [EDGES, torch.tensor([0.0, 1.0]), torch.linspace(-1, 1, 9)]
    x = torch.randn(5, 3)
    assert PiecewiseLinearEncoding(edges)(x).shape == (5, 3 + 1 + 8)
    assert PiecewiseLinearEmbeddings(edges, 6)(x).shape == (5, 3, 6)
    assert PeriodicEmbeddings(3, 6)(x).shape == (5, 3, 6)
    assert PeriodicEmbeddings(3, 6, lite=True, n_frequencies=3)(x).shape == (5, 3, 6)
    assert LinearEmbeddings(3, 6)(x).shape == (5, 3, 6)
    assert PiecewiseLinearEmbeddings(edges, 6)(x.reshape(5, 1, 3)).shape == (5, 1, 3, 6)


def test_ple_embeddings_equal_linear_relu_of_ple() -> None:
    edges = [EDGES, torch.tensor([-2.0, 2.0])]
    m = PiecewiseLinearEmbeddings(edges, 4, activation=False)
    x = torch.tensor([[2.0, 3.0], [-1.0, 0.0]])
    for f, e in enumerate(edges):
        ple = piecewise_linear_encoding(x[:, f], e)  # (B, T_f)
        expected = ple @ m.linear.weight[f, : ple.shape[1]] + m.linear.bias[f]
        assert torch.allclose(m(x)[:, f], expected, atol=1e-6)
    m_relu = PiecewiseLinearEmbeddings(edges, 4)
    m_relu.load_state_dict(m.state_dict())
    assert torch.allclose(m_relu(x), torch.relu(m(x)))


def test_periodic_hand_values() -> None:
    m = PeriodicEmbeddings(1, 4, n_frequencies=2, lite=True, learned=False)
    with torch.no_grad():
        m.frequencies.copy_(torch.tensor([[0.25, 0.5]]))
        m.linear.weight.copy_(torch.eye(4))
        m.linear.bias.zero_()
    # angles 2π·(0.25, 0.5)·1 = (π/2, π): [sin, sin, cos, cos] = [1, 0, 0, -1] → ReLU
    assert torch.allclose(m(torch.tensor([[1.0]]))[0, 0], torch.tensor([1.0, 0, 0, 0]), atol=1e-6)


def test_linear_embeddings_hand_values() -> None:
    m = LinearEmbeddings(2, 2)
    with torch.no_grad():
        m.weight.copy_(torch.tensor([[1.0, 2.0], [3.0, 4.0]]))
        m.bias.copy_(torch.tensor([[0.5, 0.0], [0.0, -1.0]]))
    out = m(torch.tensor([[2.0, -1.0]]))
    assert out.tolist() == [[[2.5, 4.0], [-3.0, -5.0]]]


@settings(max_examples=40, deadline=None)
@given(hnp.arrays(np.float32, st.tuples(st.integers(1, 6), st.just(3)), elements=FINITE))
def test_encoders_finite_on_finite_input(x_np: np.ndarray) -> None:
    torch.manual_seed(0)
    x = torch.from_numpy(x_np)
    edges = [EDGES, torch.tensor([0.0, 1e-3]), torch.linspace(-1e3, 1e3, 17)]
    for module, shape in (
        (PiecewiseLinearEncoding(edges), (x.shape[0], 3 + 1 + 16)),
        (PiecewiseLinearEmbeddings(edges, 5), (x.shape[0], 3, 5)),
        (PeriodicEmbeddings(3, 5, n_frequencies=4), (x.shape[0], 3, 5)),
        (LinearEmbeddings(3, 5), (x.shape[0], 3, 5)),
    ):
        out = module(x)
        assert out.shape == shape and bool(torch.isfinite(out).all())


def test_gradients_flow_in_qlr_and_plr() -> None:
    edges = [EDGES, torch.tensor([-1.0, 1.0])]  # feature 1 has 1 bin: rows 1, 2 are padding
    x = torch.tensor([[0.5, 0.2], [2.5, -0.3], [5.0, 0.9]])
    qlr = PiecewiseLinearEmbeddings(edges, 8)
    with torch.no_grad():
        qlr.linear.bias.fill_(1.0)  # keep the ReLU open
    qlr(x).sum().backward()
    grad = qlr.linear.weight.grad
    assert grad is not None and bool((grad[0].abs().sum(1) > 0).all())
    assert bool((grad[1, 0].abs() > 0).all()) and torch.equal(grad[1, 1:], torch.zeros(2, 8))
    plr = PeriodicEmbeddings(2, 8, n_frequencies=4)
    with torch.no_grad():
        plr.linear.bias.fill_(1.0)
    plr(x).sum().backward()
    for name, p in plr.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_periodic_fixed_frequencies_are_not_trained() -> None:
    fixed = PeriodicEmbeddings(2, 4, n_frequencies=3, learned=False)
    names = {n for n, _ in fixed.named_parameters()}
    assert "frequencies" not in names and "frequencies" in fixed.state_dict()
    before = fixed.frequencies.clone()
    opt = torch.optim.SGD(fixed.parameters(), lr=1.0)
    fixed(torch.randn(8, 2)).sum().backward()
    opt.step()
    assert torch.equal(fixed.frequencies, before)
    learned = PeriodicEmbeddings(2, 4, n_frequencies=3)
    assert "frequencies" in {n for n, _ in learned.named_parameters()}


def test_signed_log1p() -> None:
    out = signed_log1p([0.0, 1.0, -1.0, math.e - 1, INF, -INF, NAN])
    bound = numeric.LOG1P_BOUND
    assert np.allclose(out[:4], [0.0, math.log(2), -math.log(2), 1.0])
    assert out[4] == bound and out[5] == -bound and math.isfinite(bound)
    assert np.isnan(out[6])


def test_sigmoid_squash_fit_and_inf() -> None:
    sq = SigmoidSquash.fit([0.0, 1.0, 2.0, 3.0, 4.0, NAN, INF])  # q25 1, median 2, q75 3
    assert (sq.a, sq.b) == (1.0, -2.0)
    out = sq.transform([2.0, 3.0, INF, -INF, NAN, 1e308])
    assert np.allclose(out[:2], [0.5, 1 / (1 + math.exp(-1))])
    assert out[2] == 1.0 and out[3] == 0.0 and np.isnan(out[4]) and out[5] == 1.0
    assert SigmoidSquash.fit([5.0, 5.0, 5.0, 5.0, 9.0]).a == 0.5  # IQR 0 → range 4
    assert SigmoidSquash.fit([5.0, 5.0]).a == 2.0  # range 0 → scale 1
    assert np.allclose(sigmoid_squash([0.0, 1.0], 2.0, -2.0), [1 / (1 + math.e**2), 0.5])
    with pytest.raises(ValueError, match="no finite value"):
        SigmoidSquash.fit([NAN, INF])


def test_empirical_cdf_ties_inf_nan() -> None:
    cdf = EmpiricalCDF.fit([3.0, 1.0, 2.0, 2.0, NAN, INF])  # finite train: 1, 2, 2, 3
    out = cdf.transform([0.0, 1.0, 1.5, 2.0, 2.5, 3.0, 9.0, -INF, INF, NAN])
    assert out[:9].tolist() == [0.0, 0.25, 0.25, 0.75, 0.75, 1.0, 1.0, 0.0, 1.0]
    assert np.isnan(out[9])
    with pytest.raises(ValueError, match="no finite value"):
        EmpiricalCDF.fit([NAN])


def test_quantile_bin_ids() -> None:
    edges = torch.tensor([0.0, 1.0, 2.0, 3.0])
    x = [-INF, -1.0, 0.0, 0.99, 1.0, 2.0, 3.0, 4.0, INF, NAN]
    assert quantile_bin_ids(x, edges).tolist() == [3, 3, 3, 3, 4, 5, 5, 5, 5, MISSING]
    assert quantile_bin_ids([0.5, 7.0], np.array([0.0, 1.0])).tolist() == [3, 3]
    with pytest.raises(ValueError, match="at least 2"):
        quantile_bin_ids([0.0], [1.0])
