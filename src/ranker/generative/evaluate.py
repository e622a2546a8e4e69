"""Score a split's protocol rows with a generative ranker and compute the ranker's metrics.

Outputs are placed in the split table's row order (event-major, slot 0 the rated item), so
AUC / GAUC (grouped by user) / logloss are computed by :func:`ranker.train.evaluate.task_metrics`
on exactly the rows and labels the feature-based ranker is evaluated on.
"""

from __future__ import annotations

import numpy as np
import torch

from ranker.generative.batches import Window, batches
from ranker.generative.events import EventLog
from ranker.models.generative import GenerativeRanker
from ranker.tasks import TaskSpec
from ranker.train.evaluate import TaskMetrics, task_metrics


@torch.no_grad()
def predict_split(
    model: GenerativeRanker, log: EventLog, split: int, windows: list[Window], cells: int, max_batch: int
) -> np.ndarray:
    """(rows, T) task outputs (probabilities for binary tasks) in the split's table order."""
    was_training = model.training
    model.eval()
    spec = TaskSpec.from_tasks(list(log.tasks))
    k = log.candidates.shape[1]
    events = np.flatnonzero(log.split == split)
    out = np.full((len(events) * k, len(log.tasks)), np.nan, dtype=np.float32)
    device = next(model.parameters()).device
    for batch in batches(windows, cells, max_batch):
        probs = spec.outputs(model(batch.tokens.to(device)).float()).cpu().numpy()
        out[(batch.rows[:, 0] - events[0]) * k + batch.rows[:, 1]] = probs
    model.train(was_training)
    if np.isnan(out).any():
        raise RuntimeError(f"split {split}: {int(np.isnan(out).any(1).sum())} rows were not scored")
    return out


def split_metrics(log: EventLog, split: int, probs: np.ndarray) -> TaskMetrics:
    """Per-task AUC, GAUC (by user), logloss, accuracy on the split's rows."""
    events = np.flatnonzero(log.split == split)
    t = len(log.tasks)
    labels = log.labels[events].reshape(-1, t)
    mask = log.label_mask[events].reshape(-1, t)
    groups = np.repeat(log.user[events], log.candidates.shape[1])
    spec = TaskSpec.from_tasks(list(log.tasks))
    return task_metrics(probs, labels, mask, [x.name for x in log.tasks], groups, spec.kinds)
