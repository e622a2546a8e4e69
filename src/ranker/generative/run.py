"""From a generative config to a run directory, and back.

Run directory contents (as a feature-based ranker's, so ``ranker report`` reads it)::

    config.yaml            the resolved config (every default explicit)
    model.safetensors      weights of the best validation epoch
    log.jsonl              one record per epoch (loss, seconds, rows/s, events/s, valid metrics)
    metrics.json           best epoch, valid/test metrics at it (same rows as the ranker), timings
    calibration_test.npz   test labels and probabilities per task (report's calibration plot)
    checkpoints/           resumable training state
    report.html
    model_shape.json       vocabulary sizes and token counts: load_run builds the model without data
    manifest.json          sha256 of each file (report.html aside): the run is finished and verifies itself
    users.parquet, items.parquet, actions.parquet
                           own event files: raw ids of internal users / items 1.. and the
                           action values of action tokens 1.. (row k − 1 is id k)
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ranker.config import load_generative_config
from ranker.config.generative import GenerativeRunConfig
from ranker.data.sources import atomic_write_bytes
from ranker.distributed import is_writer
from ranker.errors import ConfigError
from ranker.generative.batches import user_windows
from ranker.generative.evaluate import predict_split, split_metrics
from ranker.generative.event_file import load_event_file
from ranker.generative.events import EventLog, rk_ml100k_data
from ranker.generative.trainer import GenerativeTrainer
from ranker.models.generative import GenerativeRanker, TokenVocab
from ranker.progress import phase
from ranker.run_manifest import read_run_file
from ranker.rundir import (
    begin_run,
    finish_run,
    finished_config,
    fit_metrics,
    follower_metrics,
    save_calibration,
    start_process,
)
from ranker.train.baselines import mean_predictor_metrics
from ranker.train.checkpoint import load_weights

SPLIT_IDS = {"train": 0, "valid": 1, "test": 2}


def load_events(cfg: GenerativeRunConfig) -> EventLog:
    """The config's event log: the declared event file, or the built-in RK-ML100K declared as one."""
    return load_event_file(cfg.data if cfg.data.path is not None else rk_ml100k_data(cfg.data.static_features))


def save_vocab(run_dir: Path, log: EventLog) -> None:
    """Own data: raw ids of the internal users / items (row k − 1 is id k) and action values."""
    if log.vocab is None:
        return
    for name in ("users", "items", "actions"):
        sink = pa.BufferOutputStream()
        pq.write_table(pa.table({name[:-1]: log.vocab[name]}), sink)
        atomic_write_bytes(run_dir / f"{name}.parquet", sink.getvalue().to_pybytes())


def model_shape(log: EventLog) -> dict[str, int]:
    """What building the model needs from the data (kept as the run's ``model_shape.json``)."""
    return {
        "num_items": log.num_items,
        "num_actions": log.num_actions,
        "num_static": log.num_static,
        "static_tokens": int(log.static.shape[1]),
        "num_tasks": len(log.tasks),
    }


def _read_shape(path: Path) -> dict[str, int]:
    shape = json.loads(path.read_text())
    keys = ("num_items", "num_actions", "num_static", "static_tokens", "num_tasks")
    if not isinstance(shape, dict) or not all(type(shape.get(k)) is int and shape[k] >= 0 for k in keys):
        raise ValueError(f"expected non-negative integers {', '.join(keys)}")
    return {k: shape[k] for k in keys}


def build_model(cfg: GenerativeRunConfig, log: EventLog | dict[str, int]) -> GenerativeRanker:
    shape = model_shape(log) if isinstance(log, EventLog) else log
    vocab = TokenVocab(shape["num_items"], shape["num_actions"], shape["num_static"])
    max_tokens = shape["static_tokens"] + 2 * cfg.data.max_events
    return GenerativeRanker(cfg.model, vocab, num_tasks=shape["num_tasks"], max_tokens=max_tokens)


def train_generative_run(cfg: GenerativeRunConfig, run_dir: Path) -> dict[str, Any]:
    """Train `cfg` into `run_dir` (resuming a checkpoint there); evaluate at the best epoch."""
    start_process(cfg.train)
    talk = cfg.train.progress and is_writer()  # under torchrun rank 0 alone prints
    with phase(f"reading events of {cfg.data.dataset or cfg.data.path}", enabled=talk):
        log = load_events(cfg)
    model = build_model(cfg, log)
    run_dir = begin_run(run_dir, cfg, load_generative_config)
    if is_writer():
        save_vocab(run_dir, log)
        atomic_write_bytes(run_dir / "model_shape.json", json.dumps(model_shape(log)).encode())
    w = cfg.data.max_events
    windows = {s: user_windows(log, i, w) for s, i in SPLIT_IDS.items()}
    fit = GenerativeTrainer(model, log, cfg.train, run_dir).fit(windows["train"], windows["valid"])
    if not is_writer():  # rank 0 evaluates and writes the run
        return follower_metrics(fit)
    metrics: dict[str, Any] = {
        "dataset": cfg.data.dataset or cfg.data.path,
        "model": "generative-hstu",
        **fit_metrics(cfg.train, fit, model),
        "train_samples_per_s": fit.mean("samples_per_s"),
        "train_events_per_s": fit.mean("events_per_s"),
        "windows": {s: len(v) for s, v in windows.items()},
    }
    for split in ("valid", "test"):
        start = time.perf_counter()
        with phase(f"evaluating {split}: {len(windows[split]):,} windows", enabled=talk):
            probs = _predict(cfg, model, log, split, windows[split])
        metrics[split] = split_metrics(log, SPLIT_IDS[split], probs)
        metrics["rows"] = {**metrics.get("rows", {}), split: len(probs)}
        metrics[f"{split}_eval_s"] = time.perf_counter() - start
        if split == "test":
            events, t = np.flatnonzero(log.split == SPLIT_IDS["test"]), len(log.tasks)
            save_calibration(
                run_dir / "calibration_test.npz",
                [task.name for task in log.tasks],
                log.labels[events].reshape(-1, t),
                log.label_mask[events].reshape(-1, t),
                probs,
            )
    if any(task.kind == "regression" for task in log.tasks):
        metrics["baseline"] = mean_predictor_baseline(log)
    finish_run(run_dir, metrics)
    return metrics


def mean_predictor_baseline(log: EventLog) -> dict[str, Any]:
    """The constant predictor of the regression tasks (each one's mean over its train rows):
    RMSE / MAE on the valid and test rows, as the feature ranker's baseline reports them."""
    t = len(log.tasks)
    names, kinds = [task.name for task in log.tasks], [task.kind for task in log.tasks]

    def rows(split: str) -> tuple[np.ndarray, np.ndarray]:
        events = np.flatnonzero(log.split == SPLIT_IDS[split])
        return log.labels[events].reshape(-1, t), log.label_mask[events].reshape(-1, t)

    train = rows("train")
    out: dict[str, Any] = {"name": "train mean", "regression": "constant predictor: each regression task's train mean"}
    for split in ("valid", "test"):
        out[split] = mean_predictor_metrics(*train, *rows(split), names, kinds)
    return out


def load_run(run_dir: Path, *, verify: bool = True) -> tuple[GenerativeRunConfig, GenerativeRanker]:
    """A finished run's config and best weights (eval mode), from the run directory alone (its
    ``model_shape.json``; a run written before it kept one has its data read once). The
    directory is verified against its ``manifest.json`` first (`verify=False` skips that)."""
    run_dir = Path(run_dir)
    cfg = finished_config(run_dir, load_generative_config, "generative", verify=verify)
    path = run_dir / "model_shape.json"
    model = build_model(
        cfg, read_run_file(path, _read_shape, "model shape (JSON)") if path.is_file() else load_events(cfg)
    )
    load_weights(model, run_dir / "model.safetensors")
    return cfg, model.eval()


def evaluate_run(run_dir: Path, split: str = "test") -> dict[str, Any]:
    """Re-evaluate a finished run's best weights on the protocol rows of `split`."""
    if split not in SPLIT_IDS:
        raise ConfigError(f"--split {split!r}: one of {', '.join(SPLIT_IDS)}")
    cfg, model = load_run(run_dir)
    log = load_events(cfg)
    windows = user_windows(log, SPLIT_IDS[split], cfg.data.max_events)
    probs = _predict(cfg, model, log, split, windows)
    return {"split": split, "metrics": split_metrics(log, SPLIT_IDS[split], probs)}


def _predict(
    cfg: GenerativeRunConfig, model: GenerativeRanker, log: EventLog, split: str, windows: list[Any]
) -> np.ndarray:
    return predict_split(model, log, SPLIT_IDS[split], windows, cfg.train.batch_cells, cfg.train.max_batch_size)
