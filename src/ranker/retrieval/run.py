"""From a retrieval config to a run directory, and back (for ``ranker retrieve``).

Run directory contents::

    config.yaml          the resolved config (every default explicit)
    model.safetensors    weights of the best validation epoch
    log.jsonl            one record per epoch (loss, seconds, targets/s, valid metrics)
    metrics.json         best epoch, valid/test metrics at it, most-popular on valid and test, timings
    report.html          validation HR@k / NDCG@k per epoch beside most-popular, the results table
    checkpoints/         resumable training state
    items.parquet        the catalogue: raw item ids (see :mod:`ranker.retrieval.data`)
    histories.parquet    every user's items (raw ids) and times, for ``ranker retrieve --user``
    data.json            catalogue size, max_len, users, events, rows dropped by filtering
    manifest.json        sha256 of each file above: the run is finished and verifies itself

Serving (:func:`load_run`) reads only the run directory; :func:`evaluate_run` loads the data
again (it needs the targets).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch

from ranker.config import load_retrieval_config
from ranker.config.retrieval import HSTUModel, RetrievalRunConfig
from ranker.distributed import check_global_batch, is_writer
from ranker.errors import ConfigError
from ranker.models.sequential import SequentialRetriever, build_retrieval_model
from ranker.progress import phase
from ranker.retrieval.attributes import AttributeTokens, attribute_tokens
from ranker.retrieval.batches import TrainSequences
from ranker.retrieval.data import RetrievalEvents, ServingData, load_events, save_serving
from ranker.retrieval.evaluation import evaluate_model
from ranker.retrieval.losses import NextItemLoss
from ranker.retrieval.protocol import LeaveOneOut, Sequences, evaluate, popularity_scorer
from ranker.retrieval.trainer import SequenceTrainer
from ranker.rundir import begin_run, finish_run, finished_config, fit_metrics, follower_metrics, start_process
from ranker.train.checkpoint import load_weights


def load_data(cfg: RetrievalRunConfig) -> LeaveOneOut:
    """The protocol views of the config's data (a retrieval recipe or an event file)."""
    return load_retrieval_events(cfg).views()


def load_retrieval_events(cfg: RetrievalRunConfig) -> RetrievalEvents:
    """The config's events; a ConfigError before any training when they cannot serve the model."""
    events = load_events(cfg.data)
    if isinstance(cfg.model, HSTUModel) and cfg.model.time_bias and events.sequences.times is None:
        where = cfg.data.dataset or cfg.data.path
        raise ConfigError(
            f"model.time_bias: {where!r} has no timestamps here; set model.time_bias=false (position bias only)"
        )
    return events


def load_attributes(cfg: RetrievalRunConfig, events: RetrievalEvents) -> AttributeTokens | None:
    """The item attribute tokens of the config's ``data.item_attributes`` (None without)."""
    spec = cfg.data.item_attributes
    return None if spec is None else attribute_tokens(spec, events.items)


def saved_attributes(cfg: RetrievalRunConfig, serving: ServingData, run_dir: Path) -> AttributeTokens | None:
    """Zero tokens of the shape a finished run saved (its weights hold the values)."""
    if cfg.data.item_attributes is None:
        return None
    if serving.attributes is None:
        raise ConfigError(f"{run_dir / 'data.json'}: no item_attributes shape, but the config has data.item_attributes")
    return AttributeTokens.empty(serving.attributes, len(serving.items))


def build_model(
    cfg: RetrievalRunConfig, data: LeaveOneOut | ServingData, attributes: AttributeTokens | None = None
) -> SequentialRetriever:
    num_items = data.num_items if isinstance(data, LeaveOneOut) else len(data.items)
    return build_retrieval_model(cfg.model, num_items=num_items, max_len=data.max_len, attributes=attributes)


def training_sequences(cfg: RetrievalRunConfig, data: LeaveOneOut) -> Sequences:
    """All items but the last two (the protocol), or but the last one (``train.protocol:
    reference`` or ``refit``, where the validation item is a training target, as in the HSTU
    public code); without their last ``data.train_holdout_last`` items."""
    seqs = data.test_input if cfg.train.trains_on_valid else data.train
    return seqs.drop(last=cfg.data.train_holdout_last) if cfg.data.train_holdout_last else seqs


def train_retrieval_run(cfg: RetrievalRunConfig, run_dir: Path) -> dict[str, Any]:
    """Train `cfg` into `run_dir` (resuming a checkpoint there) and evaluate at the best epoch."""
    check_global_batch(cfg.train.batch_size)  # under torchrun: before any work
    start_process(cfg.train)
    talk = cfg.train.progress and is_writer()  # under torchrun rank 0 alone prints
    with phase(f"reading events of {cfg.data.dataset or cfg.data.path}", enabled=talk):
        events = load_retrieval_events(cfg)
        data = events.views()
        attributes = load_attributes(cfg, events)
    model = build_model(cfg, data, attributes)
    run_dir = begin_run(run_dir, cfg, load_retrieval_config)
    if is_writer():
        save_serving(run_dir, events, None if attributes is None else attributes.summary())
    train = TrainSequences.build(training_sequences(cfg, data), data.max_len, cfg.data.train_users)
    counts = torch.bincount(train.targets.flatten(), minlength=data.num_items + 1)
    loss = NextItemLoss(cfg.loss, num_items=data.num_items, target_counts=counts)
    fit = SequenceTrainer(model, loss, cfg.train, cfg.eval, run_dir).fit(train, data)
    if not is_writer():  # rank 0 evaluates and writes the run
        return follower_metrics(fit)
    e = cfg.eval
    metrics: dict[str, Any] = {
        "dataset": cfg.data.dataset or cfg.data.path,
        "model": cfg.model.kind,
        "protocol": cfg.train.protocol,
        **({"refit_of": cfg.train.refit_of} if cfg.train.refit_of else {}),
        **fit_metrics(cfg.train, fit, model),
        "users": len(data.test_target),
        "items": data.num_items,
        "train_users": len(train),
        "train_targets": train.num_targets(),
    }
    with phase(f"evaluating valid and test: {len(data.test_target):,} users x {data.num_items:,} items", enabled=talk):
        for split in ("valid", "test"):
            start = time.perf_counter()
            metrics[split] = evaluate_split(cfg, model, data, split)
            metrics[f"{split}_eval_s"] = time.perf_counter() - start
        if e.exclude == "history":  # the HSTU reference's variant, for setting beside its figures
            metrics["test_exclude_input_only"] = evaluate_model(
                model, data, "test", ks=tuple(e.ks), exclude="input", batch_users=cfg.train.eval_batch_size
            )
        popular = popularity_scorer(data)  # train counts; history excluded, as the protocol's figures
        metrics["most_popular"] = {s: evaluate(popular, data, s, tuple(e.ks)) for s in ("valid", "test")}
    finish_run(run_dir, metrics)
    return metrics


def load_run(run_dir: Path, *, verify: bool = True) -> tuple[RetrievalRunConfig, SequentialRetriever, ServingData]:
    """A finished run's config, best weights (eval mode) and serving files; no dataset is read
    (except for a run trained before the serving files were kept). The directory is verified
    against its ``manifest.json`` first (`verify=False`: a bundle's manifest already did)."""
    run_dir = Path(run_dir)
    cfg = finished_config(run_dir, load_retrieval_config, "retrieval", verify=verify)
    serving = ServingData.load(run_dir)
    if serving is None:  # a run from before the serving files: its built-in recipe has them
        serving = ServingData.from_events(load_retrieval_events(cfg))
    model = build_model(cfg, serving, saved_attributes(cfg, serving, run_dir))
    load_weights(model, run_dir / "model.safetensors")
    return cfg, model.eval(), serving


def refit_config(run_dir: Path, epochs: int | None = None) -> RetrievalRunConfig:
    """The config that refits a finished ``select_on_valid`` run: its own config, with the
    validation item as a training target (``train.protocol: refit``) for the epochs validation
    picked (`epochs`: another count), test read at the last one.

    Every choice (the config, the epoch count) was made on validation; the refit only adds the
    validation targets to the training data, the "select, then retrain on all non-test data"
    step of model selection. Its validation metrics are then not held out.
    """
    run_dir = Path(run_dir)
    cfg = finished_config(run_dir, load_retrieval_config, "retrieval")
    if cfg.train.protocol != "select_on_valid":
        raise ConfigError(
            f"{run_dir}: train.protocol is {cfg.train.protocol!r}; refit a run whose epoch validation picked "
            "(select_on_valid)"
        )
    if cfg.data.split.kind != "leave_one_out":
        raise ConfigError(f"{run_dir}: refit needs a leave-one-out run (data.split.kind is {cfg.data.split.kind!r})")
    if epochs is None:
        best = json.loads((run_dir / "metrics.json").read_text()).get("best_epoch")
        if not best:
            raise ConfigError(f"{run_dir / 'metrics.json'}: no usable best epoch to refit for; pass --epochs")
        epochs = int(best)
    if epochs < 1:
        raise ConfigError(f"--epochs: must be >= 1, got {epochs}")
    raw = cfg.model_dump()
    raw["train"] |= {"protocol": "refit", "epochs": epochs, "refit_of": str(run_dir)}
    return RetrievalRunConfig.model_validate(raw | {"name": f"{cfg.name}-refit"})


def check_refit(run_dir: Path, refit_dir: Path) -> None:
    """Refuse `refit_dir` unless ``ranker refit`` made it from the finished run `run_dir`."""
    train = finished_config(refit_dir, load_retrieval_config, "retrieval").train
    if train.protocol != "refit" or Path(train.refit_of or "").resolve() != Path(run_dir).resolve():
        raise ConfigError(f"{refit_dir}: not the refit of {run_dir} (train.refit_of: {train.refit_of})")


def run_views(cfg: RetrievalRunConfig, serving: ServingData) -> LeaveOneOut:
    """The protocol views of a loaded run: from its serving files alone for a leave-one-out run
    (the sequences it was trained on), from its data again for a time split."""
    if cfg.data.split.kind == "leave_one_out":
        return serving.events().views()
    return load_data(cfg)


def evaluate_run(run_dir: Path, split: str = "test") -> dict[str, Any]:
    """Re-evaluate a finished run's best weights on `split` (valid or test), as configured."""
    if split not in ("valid", "test"):
        raise ConfigError(f"--split {split!r}: a retrieval run has valid and test targets")
    cfg, model, _ = load_run(Path(run_dir))
    return {"split": split, "metrics": evaluate_split(cfg, model, load_data(cfg), split)}


def evaluate_split(
    cfg: RetrievalRunConfig, model: SequentialRetriever, data: LeaveOneOut, split: str
) -> dict[str, float]:
    """Full-catalogue metrics of `split` as the config's ``eval`` section asks (ks, exclusion,
    optional sampled metrics)."""
    e = cfg.eval
    return evaluate_model(
        model,
        data,
        split,
        ks=tuple(e.ks),
        exclude=e.exclude,
        batch_users=cfg.train.eval_batch_size,
        sampled_negatives=e.sampled_negatives,
    )
