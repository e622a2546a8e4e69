"""Predict a split and compute per-task metrics: AUC, GAUC, logloss, accuracy for binary
tasks; RMSE and MAE for regression tasks.

Masked rows of a task (``label_mask == 0``) are excluded from that task's metrics, exactly as
from its loss: on RK-ML100K, ``like`` is scored only on watched rows. A chained (ESMM) task is
scored by its conditional probability p(like | watch) on those rows.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import nn

from ranker.data.tensors import TensorData
from ranker.metrics import accuracy, auc, gauc, gndcg, logloss

TaskMetrics = dict[str, dict[str, float]]


@torch.no_grad()
def predict(
    model: nn.Module,
    data: TensorData,
    batch_size: int,
    device: torch.device,
    outputs: Callable[[torch.Tensor], torch.Tensor] = torch.sigmoid,
) -> np.ndarray:
    """``outputs(raw)`` of every task for every row, shape (N, T): probabilities by default.

    Pass ``TaskSpec.outputs`` for models with regression tasks, ``lambda z: z`` for raw logits.
    """
    was_training = model.training
    model.eval()
    out = []
    for batch in data.batches(batch_size):
        batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
        with _autocast(device):
            out.append(outputs(model(batch).float()).cpu())
    model.train(was_training)
    return torch.cat(out).numpy() if out else np.zeros((0, 0), dtype=np.float32)


def task_metrics(
    probs: np.ndarray,
    labels: np.ndarray,
    mask: np.ndarray,
    tasks: list[str],
    groups: np.ndarray | None = None,
    kinds: Sequence[str] | None = None,
) -> TaskMetrics:
    """``{task: {auc, gauc?, ndcg@10?, logloss, accuracy, rows, positive_rate}}`` over each
    task's rows; the group metrics (GAUC, group NDCG@10) only with `groups`.

    Regression tasks (``kinds[t] == "regression"``) get ``{rmse, mae, rows, mean}`` instead.
    """
    out: TaskMetrics = {}
    for t, name in enumerate(tasks):
        on = mask[:, t] > 0
        y, p = labels[on, t], probs[on, t]
        if kinds is not None and kinds[t] == "regression":
            out[name] = regression_metrics(y, p)
            continue
        m = {
            "auc": auc(y, p),
            "logloss": logloss(y, p),
            "accuracy": accuracy(y, p),
            "rows": float(on.sum()),
            "positive_rate": float(y.mean()) if y.size else math.nan,
        }
        if groups is not None:
            m["gauc"] = gauc(y, p, groups[on])
            m["ndcg@10"] = gndcg(y, p, groups[on], k=10)
        out[name] = m
    return out


def regression_metrics(y: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    """RMSE = √(mean (ŷ − y)²), MAE = mean |ŷ − y| (NaN on no rows)."""
    err = pred.astype(np.float64) - y.astype(np.float64)
    if err.size == 0:
        return {"rmse": math.nan, "mae": math.nan, "rows": 0.0, "mean": math.nan}
    return {
        "rmse": float(np.sqrt(np.mean(err**2))),
        "mae": float(np.mean(np.abs(err))),
        "rows": float(err.size),
        "mean": float(np.mean(y)),
    }


def selection_score(metrics: TaskMetrics, metric: str = "auc") -> float:
    """Model selection score: the mean of the binary tasks' `metric` (``auc``, the default of
    PROTOCOLS.md's ranking protocols; ``gauc`` or ``ndcg@10``, per group: ``train.select_metric``).

    With regression tasks only, minus their mean RMSE (higher is better either way).
    """
    values = [m[metric] for m in metrics.values() if metric in m and not math.isnan(m[metric])]
    if values:
        return float(np.mean(values))
    rmse = [m["rmse"] for m in metrics.values() if "rmse" in m and not math.isnan(m["rmse"])]
    return -float(np.mean(rmse)) if rmse else math.nan


def _autocast(device: torch.device) -> torch.autocast:
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
