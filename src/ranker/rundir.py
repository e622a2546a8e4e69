"""The run-directory contract every model family keeps.

A run directory holds what training wrote and what evaluation or serving reads back::

    config.yaml        the resolved config (every default explicit); its ``kind`` names the family
    model.safetensors  the selected weights
    log.jsonl          one record per epoch (the engine's)
    metrics.json       valid / test metrics at the selected epoch, timings, ``usable`` (strict
                       JSON: a non-finite number is written as ``null`` and ``undefined`` says
                       why, see :mod:`ranker.outcome`)
    manifest.json      size and sha256 of every file above (written last: the run is finished);
                       every load verifies it (:mod:`ranker.run_manifest`)
    checkpoints/       resumable training state (the engine's)
    …                  the family's own state (preprocessing, vocabularies, calibration, report)

This module owns the parts that do not depend on the family: threads, the resume check, the
config and metrics files, sealing a finished run and checking one before it is loaded. Which
family a run belongs to is :mod:`ranker.families`' business.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from pydantic import BaseModel

from ranker.config.load import config_kind, dump_config
from ranker.config.schema import BaseTrainConfig
from ranker.data.sources import atomic_write_bytes
from ranker.distributed import barrier, current, is_writer
from ranker.errors import ConfigError, DataError, warn
from ranker.outcome import summary, undefined_reasons
from ranker.run_manifest import seal_run, unseal_run, verify_run
from ranker.train.engine import FitResult, pick_device

C = TypeVar("C", bound=BaseModel)

#: ``train`` keys that may differ between a checkpoint's config and the rerun that resumes it.
RESUMABLE_CHANGES = frozenset({"epochs", "progress", "threads", "tensorboard"})


def start_process(train: BaseTrainConfig) -> None:
    """torch's CPU threads (``train.threads``, else ``$RANKER_THREADS``, else torch's default) and
    its global seed (model initialisation) from ``train.seed``; ``train.device: cuda`` without a
    GPU fails here, before any data is read."""
    pick_device(train.device)
    threads = train.threads or int(os.environ.get("RANKER_THREADS", 0)) or None
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(train.seed)


def finished_config(
    run_dir: Path, load_saved: Callable[[Path], C], kind: str, *, needs: tuple[str, ...] = (), verify: bool = True
) -> C:
    """The saved config of a finished run, once the run directory is verified against its
    manifest (:func:`~ranker.run_manifest.verify_run`; `verify=False` where a bundle's manifest
    already covered these files). `needs`: the family's files besides ``config.yaml`` and
    ``model.safetensors``."""
    run_dir = Path(run_dir)
    names = ("config.yaml", "model.safetensors", *needs)
    if verify:
        verify_run(run_dir, needs=names)
    for name in names:
        if not (run_dir / name).is_file():
            raise DataError(f"{run_dir}: not a finished {kind} run (no {name})")
    return load_saved(run_dir / "config.yaml")


def fit_metrics(train: BaseTrainConfig, fit: FitResult, model: torch.nn.Module) -> dict[str, Any]:
    """What every family's ``metrics.json`` says about training: seed, whether the result is
    usable (``unusable`` says why not; ``best_epoch`` is then null), selected and stopped epochs,
    the best and the untrained weights' validation scores (``beats_untrained``; ``warnings``),
    parameters, seconds, threads. See :mod:`ranker.outcome`."""
    problem, warning = fit.problem(), fit.untrained_warning()
    return {
        "seed": train.seed,
        "usable": problem is None,
        **({"unusable": problem} if problem else {}),
        "best_epoch": fit.best_epoch or None,
        "stopped_epoch": fit.stopped_epoch,
        "best_valid_score": fit.best_score,
        "untrained_valid_score": fit.untrained_score,
        "beats_untrained": fit.beats_untrained(),
        **({"untrained_valid": fit.untrained["valid"]} if fit.untrained else {}),
        **({"warnings": [warning]} if warning else {}),
        "params": sum(p.numel() for p in model.parameters()),
        "seconds_per_epoch": fit.seconds_per_epoch(),
        "train_time_s": fit.train_time_s(),
        "threads": torch.get_num_threads(),
    }


def finish_run(run_dir: Path, metrics: dict[str, Any], *, report: bool = True) -> None:
    """Write ``metrics.json`` (strict JSON; ``undefined`` gives the reason of each null), seal the
    run (``manifest.json``: from now on it is a finished run) and, where plotting is installed,
    write ``report.html`` (not sealed); print its ``warnings`` and one line naming the undefined
    values as ``warning:`` lines."""
    for warning in metrics.get("warnings", []):
        warn(warning)
    reasons = undefined_reasons(metrics)
    if reasons:
        metrics["undefined"] = reasons
        warn(
            f"{len(reasons)} value(s) of metrics.json are not numbers (null; reasons under `undefined`): {summary(reasons)}"
        )
    run_dir = Path(run_dir)
    write_json(run_dir / "metrics.json", metrics)
    seal_run(run_dir, config_kind(run_dir / "config.yaml"))
    if not report:
        return
    try:
        from ranker.report import write_report
    except ImportError:  # plotting is optional for library use
        return
    write_report(Path(run_dir))


def save_calibration(path: Path, names: list[str], labels: np.ndarray, mask: np.ndarray, probs: np.ndarray) -> None:
    """``{task}__labels`` and ``{task}__probs`` of each named task's unmasked rows (the report's
    calibration plot). Shapes: labels, mask, probs (N, T) in the order of `names`."""
    arrays = {}
    for i, name in enumerate(names):
        on = mask[:, i] > 0
        arrays[f"{name}__labels"], arrays[f"{name}__probs"] = labels[on, i], probs[on, i]
    np.savez_compressed(path, **arrays)


def check_resume(run_dir: Path, cfg: C, load_saved: Callable[[Path], C]) -> None:
    """Refuse to resume a checkpoint in `run_dir` that a different config wrote.

    Only the ``train`` keys of :data:`RESUMABLE_CHANGES` may differ (more epochs, quieter output).
    """
    saved = Path(run_dir) / "config.yaml"
    if not saved.is_file():
        return
    kind, saved_kind = getattr(cfg, "kind", "ranking"), config_kind(saved)
    if saved_kind != kind:
        raise ConfigError(f"{run_dir}: holds a {saved_kind} run; this config trains a {kind} model: use another --out")
    if not (Path(run_dir) / "checkpoints" / "last.json").is_file():
        return
    skip = {"train": set(RESUMABLE_CHANGES)}
    old, new = load_saved(saved).model_dump(exclude=skip), cfg.model_dump(exclude=skip)
    if old != new:
        keys = differing_keys(old, new)
        shown = ", ".join(f"{k} ({_short(_at(old, k))} there, {_short(_at(new, k))} now)" for k in keys[:3])
        more = f" and {len(keys) - 3} more" if len(keys) > 3 else ""
        raise ConfigError(
            f"{run_dir}: holds a checkpoint of a different config: {shown}{more}; "
            "use another --out, or delete it to start over"
        )


def differing_keys(old: Any, new: Any, prefix: str = "") -> list[str]:
    """The dotted key paths where two config dumps differ (list items by index).

    >>> differing_keys({"a": {"b": 1, "c": [1, 2]}}, {"a": {"b": 2, "c": [1, 3]}})
    ['a.b', 'a.c.1']
    """
    if isinstance(old, dict) and isinstance(new, dict):
        return [
            p
            for k in sorted(set(old) | set(new), key=str)
            for p in differing_keys(old.get(k), new.get(k), f"{prefix}{k}.")
        ]
    if isinstance(old, list | tuple) and isinstance(new, list | tuple) and len(old) == len(new):
        return [p for i, (a, b) in enumerate(zip(old, new, strict=True)) for p in differing_keys(a, b, f"{prefix}{i}.")]
    return [] if old == new else [prefix.rstrip(".") or "<root>"]


def _at(obj: Any, key: str) -> Any:
    for part in key.split("."):
        obj = obj[int(part)] if isinstance(obj, list | tuple) else obj.get(part) if isinstance(obj, dict) else None
    return obj


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def begin_run(run_dir: Path, cfg: C, load_saved: Callable[[Path], C]) -> Path:
    """Create `run_dir`, check a checkpoint there belongs to `cfg`, write ``config.yaml``. A
    finished run trained again (resumed) is unsealed until :func:`finish_run` seals it anew.
    Under torchrun rank 0 does it while the others wait (they read the checkpoint after it)."""
    run_dir = Path(run_dir)
    if is_writer():
        run_dir.mkdir(parents=True, exist_ok=True)
        check_resume(run_dir, cfg, load_saved)
        unseal_run(run_dir)
        atomic_write_bytes(run_dir / "config.yaml", dump_config(cfg).encode())
    barrier()
    return run_dir


def follower_metrics(fit: FitResult) -> dict[str, Any]:
    """What a rank other than 0 returns from training under torchrun (rank 0 writes the run's
    metrics): its rank and the selection every rank agreed on."""
    return {"rank": current().rank, "best_epoch": fit.best_epoch or None, "best_valid_score": fit.best_score}


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
