"""From a config to a run directory: resolve data, fit preprocessing, train, evaluate, report.

Run directory contents::

    config.yaml          the resolved config (recipe data filled in, every default explicit)
    preprocessor.json    vocabularies and numerical statistics fitted on train
    model.safetensors    weights of the best validation epoch
    log.jsonl            one record per epoch (loss, samples/s, time split, valid metrics)
    metrics.json         best epoch, valid/test metrics per task, the popularity baseline
    calibration_test.npz labels and probabilities per task (for the calibration plot)
    manifest.json        sha256 of each file above: the run is finished and verifies itself
    report.html          plots
    checkpoints/         resumable training state
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from ranker.config import load_config
from ranker.config.schema import DataConfig, FilesSplit, NumericalFeature, RunConfig, TorchrecEncoder
from ranker.data.checks import check_classes, check_features, defined_labels
from ranker.data.preprocess import Preprocessor
from ranker.data.readers import SPLITS, load_splits
from ranker.data.recipes import get_recipe, prepare
from ranker.data.sources import atomic_write_bytes
from ranker.data.stream import StreamedTrain, TrainFiles, fit_streaming
from ranker.data.tensors import TensorData
from ranker.distributed import check_global_batch, current, is_writer
from ranker.errors import ConfigError, DataError, warn
from ranker.models import Ranker, build_model
from ranker.models.numeric_block import ple_settings
from ranker.models.registry import categorical_ids
from ranker.nn.gates import collect_gate_stats
from ranker.nn.torchrec_tables import require_torchrec
from ranker.progress import phase
from ranker.ranking.teacher import cached_teacher_outputs
from ranker.run_manifest import read_run_file, verify_run
from ranker.rundir import (
    begin_run,
    finish_run,
    finished_config,
    fit_metrics,
    follower_metrics,
    save_calibration,
    start_process,
)
from ranker.tasks import DistillationObjective, MultiTaskObjective, TaskSpec, serving_score
from ranker.tasks.score import score_weights
from ranker.train import Trainer, load_weights, pick_device, task_metrics
from ranker.train.baselines import constant_scores, mean_predictor_metrics, popularity_scores

#: What loading a ranking run reads from its directory.
RUN_FILES = ("config.yaml", "preprocessor.json", "model.safetensors")


@dataclass
class PreparedData:
    """A run's data: the resolved data config, raw split tables and the fitted preprocessor.

    With ``data.stream`` the train rows are `stream` and ``tables["train"]`` is only the fit
    pass's sample (:func:`ranker.data.stream.fit_streaming`): what the baselines, the collision
    statistics and the split checks read of train."""

    data: DataConfig
    tables: dict[str, pa.Table]
    pre: Preprocessor
    recipe_meta: dict[str, Any] | None = None
    stream: StreamedTrain | None = None


def resolve_data(data: DataConfig, base_dir: Path | None = None) -> tuple[DataConfig, dict[str, pa.Table]]:
    """Fill a recipe's files/features/tasks into `data` and read the three split tables."""
    data, tables, _ = _resolve(data, base_dir)
    return data, tables


def _resolve(
    data: DataConfig, base_dir: Path | None, only: tuple[str, ...] = SPLITS
) -> tuple[DataConfig, dict[str, pa.Table], dict[str, Any] | None]:
    """`only`: the splits to read (with ``data.stream`` the train split is streamed, not read)."""
    data, meta = _fill_recipe(data)
    data = _append_extra_features(data)
    data = _absolute_paths(_override_transforms(data), base_dir)
    if data.stream is not None and not isinstance(data.split, FilesSplit):
        raise ConfigError("data.stream: needs split.kind: files (the recipe's split is not one)")
    if data.stream is None:
        only = SPLITS
    return data, load_splits(data, only=only), meta


def _fill_recipe(data: DataConfig) -> tuple[DataConfig, dict[str, Any] | None]:
    meta = None
    if data.dataset is not None:
        recipe = get_recipe(data.dataset)
        if recipe.kind != "ranking":
            raise ConfigError(
                f"data.dataset: {recipe.name!r} is a {recipe.kind} dataset; `ranker train` trains "
                "rankers (retrieval models come with the candidate-generation commands)"
            )
        prepared = prepare(recipe)
        filled = prepared.data_config()
        user = data.model_dump(exclude_unset=True, exclude={"dataset"})
        filled.update({k: v for k, v in user.items() if v})  # the user's features/tasks win
        data = DataConfig.model_validate({**filled, "dataset": recipe.name})
        meta = prepared.manifest.get("meta")
    return data, meta


def _append_extra_features(data: DataConfig) -> DataConfig:
    """Move ``data.extra_features`` to the end of ``data.features`` (after a recipe filled them)."""
    if not data.extra_features:
        return data
    # names were checked unique across both lists when the config was validated
    return data.model_copy(update={"features": [*data.features, *data.extra_features], "extra_features": []})


def _override_transforms(data: DataConfig) -> DataConfig:
    """Apply ``data.numerical_transform`` to every numerical feature."""
    if data.numerical_transform is None:
        return data
    features = [
        f.model_copy(update={"transform": data.numerical_transform}) if isinstance(f, NumericalFeature) else f
        for f in data.features
    ]
    return data.model_copy(update={"features": features})


def _absolute_paths(data: DataConfig, base_dir: Path | None) -> DataConfig:
    """Resolve relative file paths against the config's folder, so a run dir's config works anywhere."""

    def fix(p: str) -> str:
        q = Path(p).expanduser()
        return str(q if q.is_absolute() else (base_dir or Path.cwd()) / q)

    update: dict[str, Any] = {}
    if data.path is not None:
        update["path"] = fix(data.path)
    if isinstance(data.split, FilesSplit):
        update["split"] = data.split.model_copy(
            update={s: fix(getattr(data.split, s)) for s in ("train", "valid", "test")}
        )
    return data.model_copy(update=update)


def prepare_run_data(cfg: RunConfig, base_dir: Path | None = None, pre: Preprocessor | None = None) -> PreparedData:
    """Resolve and read the data; fit the preprocessor on train unless a fitted one is given.

    What training needs of the splits is checked first: every binary task has both classes in
    train (and one in valid, for model selection); features are not empty in train.
    """
    data, tables, meta = _resolve(cfg.data, base_dir, only=("valid", "test"))
    n_bins, method = ple_settings(cfg.model)
    fresh = Preprocessor.for_data(data, ids=categorical_ids(cfg.model), ple_bins=n_bins, ple_method=method)
    stream = None
    if data.stream is not None:  # the fit pass: checks every chunk, fits `fresh`, samples train
        assert isinstance(data.split, FilesSplit)
        files = TrainFiles.open(data.split.train, data)
        tables["train"] = fit_streaming(fresh, files, data, data.stream, cfg.train.seed)
    sources = {s: _src(data, s) for s in ("train", "valid", "test")}
    check_features(tables["train"], data.features, sources["train"])
    check_classes({s: defined_labels(t, data.tasks) for s, t in tables.items()}, data.tasks, sources)
    if pre is None:
        pre = fresh if data.stream is not None else fresh.fit(tables["train"], source=sources["train"])
    else:
        _check_same_features(pre, data)
    if data.stream is not None:
        stream = StreamedTrain(files, pre, data.stream)
    return PreparedData(data, tables, pre, meta, stream)


def _check_same_features(pre: Preprocessor, data: DataConfig) -> None:
    old = [f.model_dump() for f in pre.features] + [t.model_dump() for t in pre.tasks]
    new = [f.model_dump() for f in data.features] + [t.model_dump() for t in data.tasks]
    if old != new:
        raise ConfigError(
            "--init-from: the initial run was trained on other features or tasks; fine-tuning "
            "keeps its preprocessing, so data.features and data.tasks must be the same"
        )


def check_key_columns(prep: PreparedData) -> None:
    """``data.group_column`` and ``data.item_column`` name columns of every split table (checked
    before any work: the item column is first read by the popularity baseline, after training)."""
    for key in ("group_column", "item_column"):
        col = getattr(prep.data, key)
        for split, table in prep.tables.items():
            if col is not None and col not in table.column_names:
                raise DataError(
                    f"data.{key}: column {col!r} is not in {_src(prep.data, split)}; "
                    f"columns: {', '.join(table.column_names)}"
                )


def encode(prep: PreparedData, split: str) -> TensorData:
    return TensorData.from_encoded(prep.pre.transform(prep.tables[split], source=_src(prep.data, split)))


def train_run(
    cfg: RunConfig,
    run_dir: Path,
    *,
    base_dir: Path | None = None,
    init_from: Path | None = None,
    teacher: Path | None = None,
) -> dict[str, Any]:
    """Train `cfg` into `run_dir` (resuming if it holds a checkpoint) and evaluate on test.

    With `init_from` (a finished run directory) training starts from that run's weights and
    keeps its preprocessing (vocabularies, statistics): fine-tuning on newer data. With plain
    embedding tables, ids first seen in the new data map to the OOV row.
    With `teacher` (a finished run directory on the same data) the model is a student trained
    on ``train.distill`` α · hard + (1 − α) · soft loss (:mod:`ranker.tasks.distill`).
    """
    run_dir = Path(run_dir)
    check_world(cfg, teacher)
    check_torchrec(cfg)
    if teacher is not None and cfg.data.stream is not None:
        raise ConfigError(
            "--teacher: distillation caches the teacher's outputs on train rows in memory; not with data.stream"
        )
    for flag, source in (("--init-from", init_from), ("--teacher", teacher)):
        if source is not None:  # refused before any work when damaged or unfinished
            verify_source(flag, Path(source))
    start_process(cfg.train)
    talk = cfg.train.progress and is_writer()  # under torchrun rank 0 alone prints
    t0 = time.perf_counter()
    init_pre = read_preprocessor(Path(init_from) / "preprocessor.json") if init_from is not None else None
    with phase(f"reading {cfg.data.dataset or cfg.data.path or 'the split files'}", enabled=talk):
        prep = prepare_run_data(cfg, base_dir, init_pre)
    check_key_columns(prep)
    cfg = cfg.model_copy(update={"data": prep.data})
    begin_run(run_dir, cfg, load_config)  # only once the data is known to be readable
    if is_writer():
        prep.pre.save(run_dir / "preprocessor.json")
    for t in prep.data.tasks:
        if t.conditional_on is not None and t.mask_column is None:
            warn(
                f"task {t.name!r} is chained to {t.conditional_on!r} but has no mask_column: its head predicts "
                f"p({t.name} | {t.conditional_on}) and is scored on every row; set mask_column to the parent's "
                "label column to score it where the parent happened"
            )
    spec = TaskSpec.from_tasks(prep.data.tasks)
    score_weights(spec, cfg.serving.weights)  # unknown task names fail before training
    with phase("encoding the splits", enabled=talk):
        splits = {s: encode(prep, s) for s in ("train", "valid", "test")}
        groups = {s: group_ids(prep, s) for s in splits}
    prep_time = time.perf_counter() - t0

    model = build_model(cfg.model, prep.pre.layout())
    if init_from is not None and not (run_dir / "checkpoints" / "last.json").is_file():
        _load_init_weights(model, Path(init_from))
    distill = _attach_teacher(cfg, prep, splits["train"], run_dir, teacher) if teacher is not None else None
    hard = MultiTaskObjective(spec)  # train.distill holds DistillationObjective's alpha, temperature, soft_on_masked
    objective = DistillationObjective(hard, **cfg.train.distill.model_dump()) if distill is not None else None
    trainer = Trainer(model, cfg.train, prep.data.tasks, run_dir, objective=objective)
    fit = trainer.fit(prep.stream or splits["train"], splits["valid"], groups["valid"])
    if not is_writer():  # rank 0 evaluates test and writes the run
        return follower_metrics(fit)
    metrics: dict[str, Any] = {
        "dataset": prep.data.dataset or prep.data.path or "files",
        **fit_metrics(cfg.train, fit, model),
        "train_samples_per_s": fit.train_samples_per_s,
        "rows": {s: len(d) for s, d in splits.items()} | ({"train": len(prep.stream)} if prep.stream else {}),
        "prepare_time_s": prep_time,
        "device": str(trainer.device),
    }
    for split in ("valid", "test"):
        with phase(f"evaluating {split}: {len(splits[split]):,} rows", enabled=talk):
            m, probs = trainer.evaluate(splits[split], groups[split])
        metrics[split] = m
        if split == "test":
            tensors = splits[split].tensors
            binary = [i for i, task in enumerate(prep.data.tasks) if task.kind == "binary"]
            save_calibration(
                run_dir / "calibration_test.npz",
                [prep.data.tasks[i].name for i in binary],
                tensors["labels"].numpy()[:, binary],
                tensors["label_mask"].numpy()[:, binary],
                probs[:, binary],
            )
            gates = collect_gate_stats(trainer.model)
            if gates:
                metrics["gates"] = gates
            metrics["serving"] = serving_metrics(cfg, spec, splits[split], probs, groups[split])
    if distill is not None:
        metrics["distill"] = distill
    metrics["baseline"] = baseline_metrics(prep, splits, groups)
    if prep.stream is not None:
        metrics["stream"] = {
            **prep.data.stream.model_dump(),  # type: ignore[union-attr]
            "fit_sample_rows_drawn": len(splits["train"]),
            "baseline_train": "the fit sample",
        }
    collisions = collision_report(model, splits["train"])
    if collisions is not None:
        atomic_write_bytes(run_dir / "collisions.json", json.dumps(collisions, indent=2).encode())
    if prep.recipe_meta and "ceiling_auc" in prep.recipe_meta:  # synthetic data: the truth's score
        metrics["ceiling"] = {k: prep.recipe_meta[k] for k in ("ceiling_auc", "ceiling_gauc")}
    finish_run(run_dir, metrics)
    return metrics


def check_world(cfg: RunConfig, teacher: Path | None = None) -> None:
    """What a run on several processes (torchrun) cannot do, refused before any work: a global
    ``train.batch_size`` the processes do not divide, distillation (the teacher's outputs are
    cached in the run)."""
    world = current()
    if not world.distributed:
        return
    check_global_batch(cfg.train.batch_size, world=world)
    if teacher is not None:
        raise ConfigError("--teacher: distillation runs in one process, not under torchrun")


def check_torchrec(cfg: RunConfig) -> None:
    """``kind: torchrec`` refused before any work where it cannot run: torchrec missing (the
    message gives the install command), a weight average or an embedding L2 of the tables (they
    are updated inside backward by their fused optimizer, which neither reaches)."""
    if not isinstance(cfg.model.encoders.categorical, TorchrecEncoder):
        return
    require_torchrec()
    why = (
        "with model.encoders.categorical.kind torchrec the tables are updated inside backward by their fused optimizer"
    )
    if cfg.train.ema_decay is not None:
        raise ConfigError(f"train.ema_decay: {why}, which a weight average does not reach; set it to null")
    if cfg.train.embedding_l2 > 0:
        raise ConfigError(f"train.embedding_l2: {why}, which the penalty does not reach; set it to 0")


def _attach_teacher(
    cfg: RunConfig, prep: PreparedData, train: TensorData, run_dir: Path, teacher: Path
) -> dict[str, Any]:
    """Add the teacher's cached raw outputs on the train split as ``train.tensors["teacher"]``."""
    outputs, seconds = cached_teacher_outputs(
        teacher, prep.data, prep.tables["train"], run_dir, device=pick_device(cfg.train.device)
    )
    train.tensors["teacher"] = torch.from_numpy(outputs)
    info: dict[str, Any] = {
        "teacher": str(Path(teacher).resolve()),
        **cfg.train.distill.model_dump(),
        "teacher_predict_s": seconds,
    }
    teacher_metrics = Path(teacher) / "metrics.json"
    if teacher_metrics.is_file():
        t = read_run_file(teacher_metrics, lambda p: dict(json.loads(p.read_text())), "metrics file (JSON)")
        info["teacher_test"] = t.get("test")
        info["teacher_params"] = t.get("params")
    return info


def serving_metrics(
    cfg: RunConfig, spec: TaskSpec, data: TensorData, outputs: np.ndarray, groups: np.ndarray | None
) -> dict[str, Any]:
    """AUC / GAUC of the combined serving score against each binary task's labels."""
    score = serving_score(torch.from_numpy(outputs), spec, cfg.serving.weights, cfg.serving.combine).numpy()
    t = data.tensors
    cols = np.repeat(score[:, None], len(spec.names), axis=1)
    names = list(spec.names)
    per_task = task_metrics(cols, t["labels"].numpy(), t["label_mask"].numpy(), names, groups, spec.kinds)
    keep = {
        n: {k: v for k, v in m.items() if k in ("auc", "gauc")}
        for n, m, b in zip(names, per_task.values(), spec.binary, strict=True)
        if b
    }
    return {"weights": cfg.serving.weights or dict.fromkeys(names, 1.0), "combine": cfg.serving.combine, "test": keep}


def verify_source(flag: str, run_dir: Path) -> None:
    """A finished ranking run given with `flag`, verified against its manifest (DataError
    naming the flag and the file)."""
    try:
        verify_run(run_dir, needs=RUN_FILES)
    except DataError as exc:
        raise DataError(f"{flag}: {exc}") from None


def read_preprocessor(path: Path) -> Preprocessor:
    """A run's ``preprocessor.json`` (DataError naming it when it cannot be read)."""
    return read_run_file(path, Preprocessor.load, "preprocessing state (preprocessor.json)")


def _load_init_weights(model: torch.nn.Module, init_from: Path) -> None:
    try:
        load_weights(model, init_from / "model.safetensors")
    except (DataError, RuntimeError, FileNotFoundError) as exc:
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        detail = lines[1] if len(lines) > 1 and lines[0].startswith("Error(s) in loading") else lines[0]
        raise ConfigError(
            f"--init-from {init_from}: its weights do not fit this model (the model section must "
            f"match the initial run's): {detail}"
        ) from None


def load_run(run_dir: Path, *, verify: bool = True) -> tuple[RunConfig, torch.nn.Module, Preprocessor]:
    """A finished run's config, best weights (eval mode) and fitted preprocessing, read from the
    run directory alone (no dataset preparation): what evaluation and serving start from.

    The directory is verified against its ``manifest.json`` first (`verify=False`: a bundle's
    manifest already verified these files); a damaged or unfinished run is a DataError."""
    run_dir = Path(run_dir)
    cfg = finished_config(run_dir, load_config, "ranking", needs=RUN_FILES[1:2], verify=verify)
    pre = read_preprocessor(run_dir / "preprocessor.json")
    model = build_model(cfg.model, pre.layout())
    load_weights(model, run_dir / "model.safetensors")
    return cfg, model.eval(), pre


def evaluate_run(run_dir: Path, split: str = "test") -> dict[str, Any]:
    """Re-evaluate a finished run on `split` with its saved config, preprocessor and weights."""
    if split not in ("train", "valid", "test"):
        raise ConfigError(f"--split {split!r}: expected train, valid or test")
    cfg, model, pre = load_run(run_dir)
    data, tables, _ = _resolve(cfg.data, None, only=(split,))  # a streamed config reads only `split`
    prep = PreparedData(data, tables, pre)
    check_key_columns(prep)
    tensors = encode(prep, split)
    trainer = Trainer(model, cfg.train, data.tasks, Path(run_dir), device=pick_device(cfg.train.device))
    metrics, _ = trainer.evaluate(tensors, group_ids(prep, split))
    return {"split": split, "metrics": metrics}


def collision_report(model: torch.nn.Module, train: TensorData) -> dict[str, Any] | None:
    """Intra- and inter-feature collision shares of the train values (hashing encoders only)."""
    if not isinstance(model, Ranker) or model.embeddings.ids != "hash":
        return None
    enc = model.embeddings
    stats = enc.collisions(model.values_by_owner(train.tensors))
    return {"encoder": type(enc).__name__, "features": stats}


def collisions_of_run(run_dir: Path) -> dict[str, Any] | None:
    """Collision statistics of a run directory's fitted config, recomputed from its train split."""
    cfg, model, pre = load_run(run_dir)
    data, tables = resolve_data(cfg.data)
    return collision_report(model, encode(PreparedData(data, tables, pre), "train"))


def group_ids(prep: PreparedData, split: str) -> np.ndarray | None:
    """Integer group ids (for GAUC) of a split's rows, or None without a group column."""
    col = prep.data.group_column
    if col is None:
        return None
    table = prep.tables[split]
    if col not in table.column_names:
        raise DataError(f"{_src(prep.data, split)}: group_column {col!r} not found")
    arr = table.column(col).combine_chunks()
    return np.asarray(pc.dictionary_encode(arr).indices.to_numpy(zero_copy_only=False), dtype=np.int64)


def baseline_metrics(
    prep: PreparedData, splits: dict[str, TensorData], groups: dict[str, np.ndarray | None]
) -> dict[str, Any]:
    """Popularity baseline of the binary tasks (AUC/GAUC only: its scores are counts, not
    probabilities) and the constant predictor of the regression tasks (the train mean: RMSE,
    MAE and the ``mean`` it predicts, :func:`~ranker.train.baselines.mean_predictor_metrics`).
    """
    names = [t.name for t in prep.data.tasks]
    kinds = [t.kind for t in prep.data.tasks]
    item = prep.data.item_column
    train = splits["train"].tensors
    train_labels, train_mask = train["labels"].numpy(), train["label_mask"].numpy()
    out: dict[str, Any] = {"name": "popularity" if item else "constant"}
    if "binary" not in kinds:
        out["name"] = "train mean"
    if "regression" in kinds:
        out["regression"] = "constant predictor: each regression task's train mean"
    for split in ("valid", "test"):
        labels, mask = splits[split].tensors["labels"].numpy(), splits[split].tensors["label_mask"].numpy()
        if item:
            scores = popularity_scores(
                prep.tables["train"].column(item), train_labels, train_mask, prep.tables[split].column(item)
            )
        else:
            scores = constant_scores(len(splits[split]), len(names))
        m = task_metrics(scores, labels, mask, names, groups[split], kinds)
        out[split] = {
            task: {k: v for k, v in vals.items() if k in ("auc", "gauc")}
            for (task, vals), kind in zip(m.items(), kinds, strict=True)
            if kind == "binary"
        }
        out[split].update(mean_predictor_metrics(train_labels, train_mask, labels, mask, names, kinds))
    return out


def _src(data: DataConfig, split: str) -> str:
    if data.split is not None and data.split.kind == "files":
        return str(getattr(data.split, split))
    return f"{data.path or data.dataset} ({split} split)"
