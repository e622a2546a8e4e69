"""Calibration statistics and the PNG figures of a run report.

The statistics (:func:`calibration_bins`, :func:`expected_calibration_error`) are pure numpy.
The figure functions return PNG bytes; matplotlib is forced onto the non-interactive "Agg"
backend before pyplot is imported, so reports can be written on headless machines.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

__all__ = [
    "calibration_bins",
    "expected_calibration_error",
    "plot_train_loss",
    "plot_valid_metrics",
    "plot_auc_bars",
    "plot_calibration",
    "plot_gate_entropy",
    "plot_gate_weights",
    "plot_retrieval_curves",
]

_EMPTY = np.zeros(0, dtype=np.float64)


def calibration_bins(
    labels: np.ndarray, probs: np.ndarray, n_bins: int = 10
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Equal-frequency reliability bins: (mean prob, positive rate, count) per bin.

    Examples are sorted by predicted probability and cut into ``n_bins`` runs of (nearly)
    equal size, i.e. the bin edges are quantiles of ``probs``; ties are split by position,
    so bins never come out empty when there are at least ``n_bins`` examples. Pairs where
    the label or the probability is not finite are dropped; empty bins (fewer examples than
    bins) are left out of the result, so all three arrays have the same length <= n_bins.

    >>> mean, rate, count = calibration_bins(np.array([0, 1, 1, 1]), np.array([.1, .2, .8, .9]), 2)
    >>> mean.round(2).tolist(), rate.tolist(), count.tolist()
    ([0.15, 0.85], [0.5, 1.0], [2, 2])
    """
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    y = np.asarray(labels, dtype=np.float64).ravel()
    p = np.asarray(probs, dtype=np.float64).ravel()
    if y.shape != p.shape:
        raise ValueError(f"labels and probs differ in length: {y.size} vs {p.size}")
    keep = np.isfinite(y) & np.isfinite(p)
    y, p = y[keep], p[keep]
    n = p.size
    if n == 0:
        return _EMPTY, _EMPTY, np.zeros(0, dtype=np.int64)
    order = np.argsort(p, kind="stable")
    bin_of_rank = (np.arange(n, dtype=np.int64) * n_bins) // n
    count = np.bincount(bin_of_rank, minlength=n_bins)
    prob_sum = np.bincount(bin_of_rank, weights=p[order], minlength=n_bins)
    pos_sum = np.bincount(bin_of_rank, weights=y[order], minlength=n_bins)
    nonempty = count > 0
    count = count[nonempty]
    return prob_sum[nonempty] / count, pos_sum[nonempty] / count, count


def expected_calibration_error(labels: np.ndarray, probs: np.ndarray, n_bins: int = 10) -> float:
    """Count-weighted mean of |positive rate - mean prob| over :func:`calibration_bins`.

    Returns NaN when no finite (label, prob) pair is left.

    >>> ece = expected_calibration_error(np.array([0, 1, 1, 1]), np.array([.1, .2, .8, .9]), 2)
    >>> round(ece, 6)  # bins: |0.5 - 0.15| and |1.0 - 0.85|, two examples each
    0.25
    >>> expected_calibration_error(np.array([0, 1, 0, 1]), np.full(4, 0.5), n_bins=2)
    0.0
    """
    mean, rate, count = calibration_bins(labels, probs, n_bins)
    if count.size == 0:
        return math.nan
    return float(np.sum(count * np.abs(rate - mean)) / np.sum(count))


def _png(fig: Figure) -> bytes:
    """Render ``fig`` to PNG bytes and free it."""
    buf = io.BytesIO()
    try:
        fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    finally:
        plt.close(fig)
    return buf.getvalue()


def _epoch_axis(ax: plt.Axes, epochs: Sequence[float], best_epoch: int | None) -> None:
    """Whole-number epoch ticks (widened around a lone epoch); dashed line at the best epoch; grid."""
    ax.grid(alpha=0.3)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    finite = [e for e in epochs if math.isfinite(e)]
    if finite and max(finite) - min(finite) < 2:
        ax.set_xlim(min(finite) - 1, max(finite) + 1)
    if best_epoch is not None:
        ax.axvline(best_epoch, color="grey", linestyle="--", linewidth=1, label=f"best epoch ({best_epoch})")


def plot_train_loss(epochs: Sequence[float], losses: Sequence[float], best_epoch: int | None = None) -> bytes:
    """Training loss per epoch (markers, so a single-epoch run still shows a point)."""
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(epochs, losses, marker="o", label="train loss")
    _epoch_axis(ax, epochs, best_epoch)
    ax.set(xlabel="epoch", ylabel="loss", title="Training loss")
    ax.legend(fontsize="small")
    return _png(fig)


def plot_valid_metrics(
    epochs: Sequence[float], series: Mapping[str, Mapping[str, Sequence[float]]], best_epoch: int | None = None
) -> bytes:
    """One panel per metric (``series[metric][task]`` = values per epoch), one line per task.

    NaN values leave gaps; the best epoch is marked on every panel.
    """
    metrics = list(series)
    fig, axes = plt.subplots(1, len(metrics), figsize=(6 * len(metrics), 3.5), squeeze=False)
    for ax, metric in zip(axes[0], metrics, strict=True):
        for task, values in series[metric].items():
            ax.plot(epochs, values, marker="o", label=task)
        _epoch_axis(ax, epochs, best_epoch)
        ax.set(xlabel="epoch", ylabel=metric, title=f"Validation {metric.upper()} per task")
        ax.legend(fontsize="small")
    return _png(fig)


def plot_auc_bars(
    tasks: Sequence[str],
    model: Sequence[float],
    baseline: Sequence[float] | None,
    split: str = "test",
    baseline_name: str = "baseline",
) -> bytes:
    """Grouped bars of per-task AUC: the model next to the baseline (if given)."""
    x = np.arange(len(tasks), dtype=np.float64)
    width = 0.38 if baseline is not None else 0.6
    fig, ax = plt.subplots(figsize=(max(4.0, 1.4 * len(tasks) + 2), 3.5))
    offset = width / 2 if baseline is not None else 0.0
    bars = ax.bar(x - offset, np.nan_to_num(np.asarray(model, dtype=np.float64)), width, label="model")
    ax.bar_label(bars, labels=[_fmt(v) for v in model], fontsize="x-small")
    if baseline is not None:
        bars = ax.bar(x + offset, np.nan_to_num(np.asarray(baseline, dtype=np.float64)), width, label=baseline_name)
        ax.bar_label(bars, labels=[_fmt(v) for v in baseline], fontsize="x-small")
    ax.axhline(0.5, color="grey", linestyle=":", linewidth=1)
    ax.set_xticks(x, list(tasks))
    ax.set(ylim=(0.0, 1.05), ylabel="AUC", title=f"{split.capitalize()} AUC per task")
    ax.legend(fontsize="small", loc="lower right")
    return _png(fig)


def plot_calibration(task: str, labels: np.ndarray, probs: np.ndarray, n_bins: int = 10) -> bytes:
    """Reliability diagram of one task: mean predicted prob vs observed positive rate."""
    mean, rate, _ = calibration_bins(labels, probs, n_bins)
    ece = expected_calibration_error(labels, probs, n_bins)
    fig, ax = plt.subplots(figsize=(4, 4))
    ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="perfect")
    ax.plot(mean, rate, marker="o", label=f"model (ECE = {_fmt(ece)})")
    ax.set(
        xlim=(0, 1),
        ylim=(0, 1),
        xlabel="mean predicted probability",
        ylabel="observed positive rate",
        title=f"Calibration: {task}",
    )
    ax.set_aspect("equal")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small", loc="upper left")
    return _png(fig)


def plot_gate_entropy(
    epochs: Sequence[float],
    entropy: Mapping[str, Sequence[float]],
    max_entropy: Mapping[str, float],
    best_epoch: int | None = None,
) -> bytes:
    """Validation gate entropy per epoch, one line per gate, its maximum log E dotted.

    A line falling towards 0 means the gate routes every row to one expert (expert collapse).
    """
    fig, ax = plt.subplots(figsize=(7, 3.5))
    for gate, values in entropy.items():
        line = ax.plot(epochs, values, marker="o", label=gate)[0]
        ax.axhline(max_entropy[gate], color=line.get_color(), linestyle=":", linewidth=1)
    _epoch_axis(ax, epochs, best_epoch)
    ax.set(xlabel="epoch", ylabel="entropy (nats)", title="Gate entropy (dotted: log E, uniform)")
    ax.legend(fontsize="x-small")
    return _png(fig)


def plot_gate_weights(weights: Mapping[str, Sequence[float]]) -> bytes:
    """Mean gate weight of each expert, one row of bars per gate (which experts each task uses)."""
    gates = list(weights)
    fig, axes = plt.subplots(len(gates), 1, figsize=(6, 1.2 + 1.1 * len(gates)), squeeze=False)
    for ax, gate in zip(axes[:, 0], gates, strict=True):
        w = np.asarray(weights[gate], dtype=np.float64)
        ax.bar(np.arange(len(w)), w)
        ax.set_xticks(np.arange(len(w)))
        ax.set(ylim=(0, 1), ylabel="weight")
        ax.set_title(gate, fontsize="small")
    axes[-1, 0].set_xlabel("expert")
    fig.tight_layout()
    return _png(fig)


def plot_retrieval_curves(
    epochs: Sequence[float],
    series: Mapping[str, Mapping[str, Sequence[float]]],
    baseline: Mapping[str, float],
    best_epoch: int | None = None,
    baseline_name: str = "most-popular",
) -> bytes:
    """One panel per metric family (``series["HR"]["HR@10"]`` = values per epoch), one line per
    cut-off; the baseline's value of each cut-off (``baseline["HR@10"]``) is a dotted line of the
    same colour. NaN values leave gaps; the best epoch is marked on every panel.
    """
    panels = list(series)
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 3.5), squeeze=False)
    for ax, panel in zip(axes[0], panels, strict=True):
        for name, values in series[panel].items():
            line = ax.plot(epochs, values, marker="o", label=name)[0]
            value = baseline.get(name)
            if value is not None and math.isfinite(value):
                ax.axhline(value, color=line.get_color(), linestyle=":", linewidth=1.2)
        _epoch_axis(ax, epochs, best_epoch)
        xlabel = "epoch (0: the untrained weights)" if 0 in epochs else "epoch"
        ax.set(xlabel=xlabel, ylabel=panel, title=f"Validation {panel} (dotted: {baseline_name})")
        ax.legend(fontsize="small")
    return _png(fig)


def _fmt(value: float) -> str:
    """Four decimals, or 'n/a' for a missing / non-finite value."""
    return f"{value:.4f}" if value is not None and math.isfinite(value) else "n/a"
