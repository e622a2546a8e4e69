"""The run-directory contract every model family keeps.

A run directory holds what training wrote and what evaluation or serving reads back::

    config.yaml        the resolved config (every default explicit); its ``kind`` names the family
    model.safetensors  the selected weights
    log.jsonl          one record per epoch (the engine's)
    metrics.json       valid / test metrics at the selected epoch, timings (strict JSON: a
                       non-finite number is written as ``null``)
    checkpoints/       resumable training state (the engine's)
    …                  the family's own state (preprocessing, vocabularies, calibration, report)

This module owns the parts that do not depend on the family: threads, the resume check, the
config and metrics files. Which family a run belongs to is :mod:`ranker.families`' business.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import torch
from pydantic import BaseModel

from ranker.config.load import dump_config
from ranker.config.schema import BaseTrainConfig
from ranker.data.sources import atomic_write_bytes
from ranker.errors import ConfigError

C = TypeVar("C", bound=BaseModel)

#: ``train`` keys that may differ between a checkpoint's config and the rerun that resumes it.
RESUMABLE_CHANGES = frozenset({"epochs", "progress", "threads", "tensorboard"})

def set_threads(train: BaseTrainConfig) -> None:
    """torch's CPU threads from ``train.threads``, else ``$RANKER_THREADS``, else torch's default."""
    threads = train.threads or int(os.environ.get("RANKER_THREADS", 0)) or None
    if threads:
        torch.set_num_threads(threads)


def check_resume(run_dir: Path, cfg: C, load_saved: Callable[[Path], C]) -> None:
    """Refuse to resume a checkpoint in `run_dir` that a different config wrote.

    Only the ``train`` keys of :data:`RESUMABLE_CHANGES` may differ (more epochs, quieter output).
    """
    saved = Path(run_dir) / "config.yaml"
    if not (Path(run_dir) / "checkpoints" / "last.json").is_file() or not saved.is_file():
        return
    skip = {"train": set(RESUMABLE_CHANGES)}
    if load_saved(saved).model_dump(exclude=skip) != cfg.model_dump(exclude=skip):
        raise ConfigError(f"{run_dir}: holds a checkpoint of a different config; use another --out "
                          "or delete it")


def begin_run(run_dir: Path, cfg: C, load_saved: Callable[[Path], C]) -> Path:
    """Create `run_dir`, check a checkpoint there belongs to `cfg`, write ``config.yaml``."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    check_resume(run_dir, cfg, load_saved)
    atomic_write_bytes(run_dir / "config.yaml", dump_config(cfg).encode())
    return run_dir


def write_json(path: Path, obj: Any) -> None:
    """Strict JSON, atomically: NaN and ±inf become ``null``, numpy scalars plain numbers."""
    atomic_write_bytes(Path(path), json.dumps(finite(obj), indent=2, allow_nan=False).encode())


def finite(obj: Any) -> Any:
    """`obj` with every non-finite float replaced by None (containers copied, numpy → Python).

    >>> finite({"auc": float("nan"), "k": [1.5, float("inf")]})
    {'auc': None, 'k': [1.5, None]}
    """
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite(v) for v in obj]
    if hasattr(obj, "item") and callable(obj.item) and getattr(obj, "ndim", 1) == 0:
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj
