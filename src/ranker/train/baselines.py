"""Non-neural reference scores every run is compared with.

Popularity: an example's score for task t is the number of positive train labels of its item
for that task (the classic "most popular" recommender); items unseen in train score 0. With no
item column the score is a constant (AUC 0.5).

Constant predictor (regression tasks): every row is predicted the task's mean label over its
unmasked train rows, the best constant under squared error; a model's RMSE / MAE mean little
until they beat it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ranker.data.vocab import normalise
from ranker.train.evaluate import regression_metrics


def popularity_scores(
    train_items: pa.ChunkedArray | pa.Array,
    train_labels: np.ndarray,
    train_mask: np.ndarray,
    eval_items: pa.ChunkedArray | pa.Array,
) -> np.ndarray:
    """Per-task positive-label counts of each evaluated row's item, shape (N_eval, T).

    Shapes: train_labels, train_mask (N_train, T).
    """
    train = normalise(train_items)
    want = "str" if pa.types.is_string(train.type) else "int"
    uniq = pc.unique(pc.drop_null(train))
    tid = pc.fill_null(pc.index_in(train, value_set=uniq), len(uniq)).to_numpy(zero_copy_only=False)
    eid = pc.fill_null(pc.index_in(normalise(eval_items, want=want), value_set=uniq), len(uniq))
    eid = eid.to_numpy(zero_copy_only=False)
    counts = np.zeros((len(uniq) + 1, train_labels.shape[1]))
    np.add.at(counts, tid, train_labels * train_mask)
    counts[-1] = 0.0  # null / unseen items
    return counts[eid]


def constant_scores(n: int, n_tasks: int) -> np.ndarray:
    return np.zeros((n, n_tasks))


def train_means(labels: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(T,) mean label of each task over its unmasked train rows (NaN for a task with none).

    Shapes: labels, mask (N, T).

    >>> train_means(np.array([[1.0, 2.0], [3.0, 8.0]]), np.array([[1, 1], [1, 0]])).tolist()
    [2.0, 2.0]
    """
    on = mask > 0
    count = on.sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, (labels * on).sum(0) / count, np.nan)


def mean_predictor_metrics(
    train_labels: np.ndarray,
    train_mask: np.ndarray,
    labels: np.ndarray,
    mask: np.ndarray,
    names: Sequence[str],
    kinds: Sequence[str],
) -> dict[str, dict[str, float]]:
    """``{task: {rmse, mae, mean}}`` of the constant predictor (each regression task's train
    mean, ``mean``) on an evaluated split's unmasked rows; binary tasks are left out.

    Shapes: train_labels, train_mask (N_train, T); labels, mask (N, T).
    """
    means = train_means(train_labels, train_mask)
    out = {}
    for t, (name, kind) in enumerate(zip(names, kinds, strict=True)):
        if kind == "regression":
            on = mask[:, t] > 0
            m = regression_metrics(labels[on, t], np.full(int(on.sum()), means[t]))
            out[name] = {"rmse": m["rmse"], "mae": m["mae"], "mean": float(means[t])}
    return out
