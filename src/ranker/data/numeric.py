"""Numerical feature transforms fitted on train, and the bin edges numerical encoders need.

Per-feature ``transform`` (``data.features[].transform``):

- ``standard``: ``(x − mean) / std``, clipped to ``±clip``;
- ``log1p``: ``sign(x)·log1p(|x|)``, then standard;
- ``cdf``: the empirical CDF ``P(X ≤ x)`` of train, then centred (``cdf − 0.5``). The CDF is
  kept as a 1,025-point quantile sketch with linear interpolation (exact when train has at most
  1,025 distinct values), so the state stays small for any train size;
- ``sigmoid``: ``σ(a·x + b)`` with ``a = 2 / IQR``, ``b = −a·median`` fitted on train (the
  median maps to 0.5), then centred;
- ``bins``: the quantile-bin id, used as a categorical feature (its own embedding table).

Missing values (NaN / null) give 0 plus a missing indicator of 1; ``±inf`` become ``±clip``
(standard, log1p) or 0 / 1 before centring (cdf, sigmoid) — never NaN, never a crash. Only
finite train values are fitted on: a few ``±inf`` rows leave every statistic as it was
(:mod:`ranker.data.checks` warns about them), and values near the float64 limit are scaled
before squaring, so the standard deviation stays finite.

Each transform is a pure numpy function or a small frozen dataclass of fitted state
(``signed_log1p``, ``SigmoidSquash``, ``EmpiricalCDF``); they map ±inf to finite values (the CDF
to 0 / 1, ``signed_log1p`` to ±log1p(max float64), the sigmoid to 0 / 1) and pass NaN through.

For the piecewise linear encoders (Gorishniy et al., 2022) the preprocessor also fits
per-feature bin edges (:mod:`ranker.data.bins`) on the *transformed* train values (quantile or
target-aware tree bins), stored with its state.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from ranker.config.schema import NumericalFeature
from ranker.data.bins import compute_bins, quantile_bin_ids
from ranker.data.vocab import RESERVED

CDF_POINTS = 1025


LOG1P_BOUND = math.log1p(np.finfo(np.float64).max)  # ≈ 709.78


def signed_log1p(x: ArrayLike) -> np.ndarray:
    """``sign(x)·log1p(|x|)``, clipped to ±log1p(max float64) so ±inf become finite; NaN stays."""
    x = np.asarray(x, dtype=np.float64)
    return np.clip(np.sign(x) * np.log1p(np.abs(x)), -LOG1P_BOUND, LOG1P_BOUND)


def sigmoid_squash(x: ArrayLike, a: float, b: float) -> np.ndarray:
    """``σ(a·x + b)`` computed as ``(1 + tanh((a·x + b)/2)) / 2`` (no overflow); ±inf → 0/1."""
    z = a * np.asarray(x, dtype=np.float64) + b
    return 0.5 * (1.0 + np.tanh(0.5 * z))


@dataclass(frozen=True)
class SigmoidSquash:
    """``σ(a·x + b)`` with ``a = 2 / IQR`` and ``b = −a · median`` of the finite train values.

    The median maps to 0.5 and, for a symmetric distribution, the quartiles to σ(±1) ≈ 0.27 /
    0.73. If the IQR is 0 the range (max − min) is used instead, and 1 if that is 0 too.

    >>> SigmoidSquash.fit([0.0, 1.0, 2.0, 3.0, 4.0]).transform([2.0, 3.0]).round(3).tolist()
    [0.5, 0.731]
    """

    a: float
    b: float

    @classmethod
    def fit(cls, x_train: ArrayLike) -> SigmoidSquash:
        x = _finite(x_train, "SigmoidSquash.fit")
        q25, median, q75 = np.quantile(x, [0.25, 0.5, 0.75])
        scale = (q75 - q25) or (x.max() - x.min()) or 1.0
        a = 2.0 / float(scale)
        return cls(a=a, b=-a * float(median))

    def transform(self, x: ArrayLike) -> np.ndarray:
        return sigmoid_squash(x, self.a, self.b)


@dataclass(frozen=True, eq=False)
class EmpiricalCDF:
    """``F(x) = P(X ≤ x) = |{train values ≤ x}| / n`` over the finite train values.

    ``searchsorted(side="right")`` counts ties as ≤, so F is right-continuous. −inf → 0,
    +inf → 1, NaN → NaN.

    >>> EmpiricalCDF.fit([1.0, 2.0, 2.0, 3.0]).transform([0.0, 1.0, 2.0, 2.5, 3.0]).tolist()
    [0.0, 0.25, 0.75, 0.75, 1.0]
    """

    sorted_values: np.ndarray  # (n,) float64, finite, ascending

    @classmethod
    def fit(cls, x_train: ArrayLike) -> EmpiricalCDF:
        return cls(sorted_values=np.sort(_finite(x_train, "EmpiricalCDF.fit")))

    def transform(self, x: ArrayLike) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        cdf = np.searchsorted(self.sorted_values, x, side="right") / self.sorted_values.size
        return np.where(np.isnan(x), np.nan, cdf)


def _finite(x: ArrayLike, who: str) -> np.ndarray:
    values = np.asarray(x, dtype=np.float64).reshape(-1)
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        raise ValueError(f"{who}: no finite value among the {values.size} given")
    return finite


@dataclass
class NumericState:
    """Everything fitted on train for one numerical feature (plain floats: JSON-serialisable)."""

    transform: str
    clip: float
    mean: float = 0.0
    std: float = 1.0
    sketch: list[float] = field(default_factory=list)  # cdf: train quantiles at CDF_POINTS levels
    a: float = 1.0  # sigmoid
    b: float = 0.0
    edges: list[float] = field(default_factory=list)  # bins: quantile edges of the raw values
    ple_edges: list[float] = field(default_factory=list)  # edges for PLE encoders

    @property
    def n_bin_ids(self) -> int:
        """Embedding rows a ``bins`` feature needs (reserved ids included)."""
        return RESERVED + max(len(self.edges) - 1, 1)

    def to_state(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> NumericState:
        return cls(**state)


def fit_numeric(x: np.ndarray, f: NumericalFeature) -> NumericState:
    """Fit `f`'s transform on the raw train values `x` (NaN = missing)."""
    finite = x[np.isfinite(x)]
    state = NumericState(transform=f.transform, clip=f.clip)
    if f.transform == "bins":
        state.edges = _edges(finite, f.n_bins)
        return state
    if f.transform == "cdf":
        state.sketch = [float(v) for v in np.quantile(finite, np.linspace(0, 1, CDF_POINTS))] if finite.size else [0.0]
        return state
    if f.transform == "sigmoid":
        squash = SigmoidSquash.fit(finite if finite.size else np.zeros(1))
        state.a, state.b = float(squash.a), float(squash.b)
        return state
    state.mean, std = _mean_std(_pre(finite, f.transform))  # ±inf never reaches the statistics
    state.std = std if std > 1e-12 else 1.0
    return state


def _mean_std(z: np.ndarray) -> tuple[float, float]:
    """Mean and standard deviation of finite `z` (0 and 1 when empty); values near the float64
    limit are scaled by max |z| first, so the squares cannot overflow to inf."""
    if not z.size:
        return 0.0, 1.0
    with np.errstate(over="ignore", invalid="ignore"):
        mean, std = float(z.mean()), float(z.std())
    if not (np.isfinite(mean) and np.isfinite(std)):
        scale = float(np.abs(z).max())
        mean, std = scale * float((z / scale).mean()), scale * float((z / scale).std())
    return mean, std


def apply_numeric(x: np.ndarray, state: NumericState) -> tuple[np.ndarray, np.ndarray]:
    """Transformed values (float32; int64 bin ids for ``bins``) and the missing indicator."""
    missing = np.isnan(x)
    if state.transform == "bins":
        edges = np.asarray(state.edges, dtype=np.float64)
        ids = quantile_bin_ids(x, edges) if len(edges) >= 2 else np.full(len(x), RESERVED)
        return np.asarray(ids, dtype=np.int64), missing.astype(np.float32)
    if state.transform == "cdf":
        sketch = np.asarray(state.sketch)
        levels = np.linspace(0, 1, len(sketch)) if len(sketch) > 1 else np.ones(1)
        z = (
            np.interp(np.nan_to_num(x, nan=0.0, posinf=np.inf, neginf=-np.inf), sketch, levels, left=0.0, right=1.0)
            - 0.5
        )
    elif state.transform == "sigmoid":
        with np.errstate(over="ignore"):
            z = 1.0 / (1.0 + np.exp(-(state.a * np.nan_to_num(x, nan=0.0) + state.b))) - 0.5
    else:
        z = np.clip((_pre(x, state.transform) - state.mean) / state.std, -state.clip, state.clip)
    return np.where(missing, 0.0, z).astype(np.float32), missing.astype(np.float32)


def fit_ple_edges(
    values: np.ndarray, missing: np.ndarray, n_bins: int, method: str, target: np.ndarray | None
) -> list[float]:
    """PLE bin edges of the transformed train values (missing rows left out)."""
    keep = missing < 0.5
    if method in ("tree", "tree_all") and target is not None:
        edges = compute_bins(values[keep], n_bins, method="tree", y=target[keep], regression=False)
    else:
        edges = compute_bins(values[keep], n_bins)
    return [float(e) for e in np.asarray(edges)]


def _pre(x: np.ndarray, transform: str) -> np.ndarray:
    return np.asarray(signed_log1p(x)) if transform == "log1p" else x


def _edges(finite: np.ndarray, n_bins: int) -> list[float]:
    if finite.size == 0 or np.unique(finite).size < 2:
        return []
    return [float(e) for e in np.asarray(compute_bins(finite, n_bins))]


__all__ = [
    "CDF_POINTS",
    "EmpiricalCDF",
    "NumericState",
    "SigmoidSquash",
    "apply_numeric",
    "fit_numeric",
    "fit_ple_edges",
    "sigmoid_squash",
    "signed_log1p",
]
