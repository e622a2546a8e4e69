"""Predict a split and compute per-task ranking metrics (AUC, GAUC, logloss, accuracy).

Masked rows of a task (``label_mask == 0``) are excluded from that task's metrics, exactly as
from its loss: on RK-ML100K, ``like`` is scored only on watched rows.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from ranker.data.tensors import TensorData
from ranker.metrics import accuracy, auc, gauc, logloss

TaskMetrics = dict[str, dict[str, float]]


@torch.no_grad()
def predict(model: nn.Module, data: TensorData, batch_size: int, device: torch.device) -> np.ndarray:
    """Probabilities of every task for every row, shape (N, T)."""
    was_training = model.training
    model.eval()
    out = []
    for batch in data.batches(batch_size):
        batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
        with _autocast(device):
            out.append(torch.sigmoid(model(batch).float()).cpu())
    model.train(was_training)
    return torch.cat(out).numpy() if out else np.zeros((0, 0), dtype=np.float32)


def task_metrics(
    probs: np.ndarray,
    labels: np.ndarray,
    mask: np.ndarray,
    tasks: list[str],
    groups: np.ndarray | None = None,
) -> TaskMetrics:
    """``{task: {auc, gauc?, logloss, accuracy, rows, positive_rate}}`` over each task's rows."""
    out: TaskMetrics = {}
    for t, name in enumerate(tasks):
        on = mask[:, t] > 0
        y, p = labels[on, t], probs[on, t]
        m = {
            "auc": auc(y, p),
            "logloss": logloss(y, p),
            "accuracy": accuracy(y, p),
            "rows": float(on.sum()),
            "positive_rate": float(y.mean()) if y.size else math.nan,
        }
        if groups is not None:
            m["gauc"] = gauc(y, p, groups[on])
        out[name] = m
    return out


def selection_score(metrics: TaskMetrics) -> float:
    """Model selection score: the mean of the tasks' AUC (PROTOCOLS.md, ranking)."""
    values = [m["auc"] for m in metrics.values() if not math.isnan(m["auc"])]
    return float(np.mean(values)) if values else math.nan


def _autocast(device: torch.device) -> torch.autocast:
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
