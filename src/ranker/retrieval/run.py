"""From a retrieval config to a run directory, and back (for ``ranker retrieve``).

Run directory contents::

    config.yaml          the resolved config (every default explicit)
    model.safetensors    weights of the best validation epoch
    log.jsonl            one record per epoch (loss, seconds, targets/s, valid metrics)
    metrics.json         best epoch, valid/test metrics at it, most-popular on test, timings
    checkpoints/         resumable training state
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ranker.config import load_retrieval_config
from ranker.config.retrieval import HSTUModel, RetrievalRunConfig
from ranker.data.recipes import get_recipe, prepare
from ranker.errors import ConfigError
from ranker.models.sequential import SequentialRetriever, build_retrieval_model
from ranker.retrieval.batches import TrainSequences
from ranker.retrieval.evaluation import evaluate_model
from ranker.retrieval.losses import NextItemLoss
from ranker.retrieval.protocol import (
    LeaveOneOut,
    Sequences,
    evaluate,
    from_prepared,
    popularity_scorer,
)
from ranker.retrieval.trainer import SequenceTrainer
from ranker.rundir import begin_run, set_threads, write_json
from ranker.train.checkpoint import load_weights, save_weights


def load_data(cfg: RetrievalRunConfig) -> LeaveOneOut:
    """The leave-one-out views of the config's retrieval recipe."""
    recipe = get_recipe(cfg.data.dataset)
    if recipe.kind != "retrieval":
        raise ConfigError(f"data.dataset: {recipe.name!r} is a {recipe.kind} dataset, not a retrieval one")
    data = from_prepared(prepare(recipe), cfg.data.max_len)
    if isinstance(cfg.model, HSTUModel) and cfg.model.time_bias and not data.has_times:
        raise ConfigError(f"model.time_bias: {recipe.name!r} has no timestamps here; set "
                          "model.time_bias=false (position bias only)")
    return data


def build_model(cfg: RetrievalRunConfig, data: LeaveOneOut) -> SequentialRetriever:
    return build_retrieval_model(cfg.model, num_items=data.num_items, max_len=data.max_len)


def training_sequences(cfg: RetrievalRunConfig, data: LeaveOneOut) -> Sequences:
    """All items but the last two (the protocol), or but the last one (``train.protocol:
    reference``, where the validation item is a training target as in the HSTU public code)."""
    return data.test_input if cfg.train.protocol == "reference" else data.train


def train_retrieval_run(cfg: RetrievalRunConfig, run_dir: Path) -> dict[str, Any]:
    """Train `cfg` into `run_dir` (resuming a checkpoint there) and evaluate at the best epoch."""
    set_threads(cfg.train)
    torch.manual_seed(cfg.train.seed)
    data = load_data(cfg)
    model = build_model(cfg, data)
    run_dir = begin_run(run_dir, cfg, load_retrieval_config)
    train = TrainSequences.build(training_sequences(cfg, data), data.max_len, cfg.data.train_users)
    counts = torch.bincount(train.targets.flatten(), minlength=data.num_items + 1)
    loss = NextItemLoss(cfg.loss, num_items=data.num_items, target_counts=counts)
    fit = SequenceTrainer(model, loss, cfg.train, cfg.eval, run_dir).fit(train, data)
    save_weights(model, run_dir / "model.safetensors")
    e = cfg.eval
    metrics: dict[str, Any] = {
        "dataset": cfg.data.dataset, "model": cfg.model.kind, "seed": cfg.train.seed,
        "protocol": cfg.train.protocol,
        "best_epoch": fit.best_epoch, "stopped_epoch": fit.stopped_epoch,
        "params": sum(p.numel() for p in model.parameters()),
        "users": len(data.test_target), "items": data.num_items,
        "train_users": len(train), "train_targets": train.num_targets(),
        "seconds_per_epoch": fit.seconds_per_epoch(),
        "train_time_s": fit.train_time_s(),
        "threads": torch.get_num_threads(),
    }
    for split in ("valid", "test"):
        start = time.perf_counter()
        metrics[split] = evaluate_model(model, data, split, ks=tuple(e.ks), exclude=e.exclude,
                                        batch_users=cfg.train.eval_batch_size,
                                        sampled_negatives=e.sampled_negatives)
        metrics[f"{split}_eval_s"] = time.perf_counter() - start
    if e.exclude == "history":  # the HSTU reference's variant, for setting beside its figures
        metrics["test_exclude_input_only"] = evaluate_model(
            model, data, "test", ks=tuple(e.ks), exclude="input",
            batch_users=cfg.train.eval_batch_size)
    metrics["most_popular"] = {"test": evaluate(popularity_scorer(data), data, "test", tuple(e.ks))}
    write_json(run_dir / "metrics.json", metrics)
    return metrics


def load_run(run_dir: Path) -> tuple[RetrievalRunConfig, SequentialRetriever, LeaveOneOut]:
    """A finished run's config, best weights (eval mode) and data."""
    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file() or not (run_dir / "model.safetensors").is_file():
        raise ConfigError(f"{run_dir}: not a finished retrieval run (config.yaml, model.safetensors)")
    cfg = load_retrieval_config(run_dir / "config.yaml")
    data = load_data(cfg)
    model = build_model(cfg, data)
    load_weights(model, run_dir / "model.safetensors")
    return cfg, model.eval(), data


def evaluate_run(run_dir: Path, split: str = "test") -> dict[str, Any]:
    """Re-evaluate a finished run's best weights on `split` (valid or test), as configured."""
    if split not in ("valid", "test"):
        raise ConfigError(f"--split {split!r}: a retrieval run has valid and test targets")
    cfg, model, data = load_run(run_dir)
    e = cfg.eval
    metrics = evaluate_model(model, data, split, ks=tuple(e.ks), exclude=e.exclude,
                             batch_users=cfg.train.eval_batch_size,
                             sampled_negatives=e.sampled_negatives)
    return {"split": split, "metrics": metrics}


def user_row(data: LeaveOneOut, user: int) -> int:
    """Row of the dataset's user id `user` (ConfigError naming it when unknown)."""
    ids = data.users if data.users is not None else np.arange(len(data.test_target))
    hit = np.flatnonzero(ids == user)
    if not len(hit):
        raise ConfigError(f"--user {user}: no such user in this dataset")
    return int(hit[0])
