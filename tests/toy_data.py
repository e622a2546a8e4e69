"""A toy two-task ranking table shared by the multi-task and distillation tests.

Labels: ``y`` depends on item parity and ``x``, ``z`` on ``x`` only, so a shared model has a
common signal and a task-specific one.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from ranker.config import RunConfig, load_config
from ranker.data.preprocess import Preprocessor
from ranker.data.tensors import TensorData


def toy_model(model: dict, train: dict | None = None) -> tuple[RunConfig, Preprocessor, TensorData]:
    """(config, fitted preprocessor, tensors) of 512 toy rows with `model` / `train` sections."""
    rng = np.random.default_rng(0)
    n = 512
    item = rng.integers(0, 20, n)
    x = rng.normal(size=n)
    y = (rng.random(n) < 1 / (1 + np.exp(-(np.where(item % 2 == 0, 2.0, -2.0) + x)))).astype(np.int64)
    z = (rng.random(n) < 1 / (1 + np.exp(-(2 * x)))).astype(np.int64)
    table = pa.table({"user": rng.integers(0, 30, n), "item": item, "x": x, "y": y, "z": z})
    cfg = load_config(
        base={
            "data": {
                "path": "x.csv",
                "split": {"kind": "random"},
                "features": [
                    {"kind": "categorical", "name": "user"},
                    {"kind": "categorical", "name": "item"},
                    {"kind": "numerical", "name": "x"},
                ],
                "tasks": [{"name": "y"}, {"name": "z"}],
            },
            "model": {"encoders": {"categorical": {"dim": 4}}, **model},
            **({"train": train} if train else {}),
        }
    )
    pre = Preprocessor.for_data(cfg.data).fit(table)
    return cfg, pre, TensorData.from_encoded(pre.transform(table))
