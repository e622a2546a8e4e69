"""Non-neural reference scores every run is compared with.

Popularity: an example's score for task t is the number of positive train labels of its item
for that task (the classic "most popular" recommender); items unseen in train score 0. With no
item column the score is a constant (AUC 0.5).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ranker.data.vocab import normalise


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
