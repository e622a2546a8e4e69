"""The one training engine of the three model families: step, epoch loop, selection, resume.

A family (the feature ranker, sequential retrieval, generative ranking) supplies only what is
its own through :class:`Family`: the batches of an epoch, the loss of a batch and the
validation metrics with their selection score. :class:`Engine` owns everything else:

- **the step**: batch to the device, bf16 autocast on CUDA, ``zero_grad`` → ``backward`` →
  gradient clipping → optimizer step → weight-average update;
- **the epoch**: ``model.train()``, ``torch.manual_seed(seed + e)`` (dropout; rank r > 0 adds
  r · RANK_SEED_STRIDE) and a ``Generator(seed·1000 + e)`` for shuffling and sampling, an
  optional step cap, a progress bar, the mean loss and throughput per counted unit (samples, targets, events);
- **the loop**: validation every ``eval_every`` epochs (and at the last) on the weight average
  when ``train.ema_decay`` is set, selection of the best epoch, early stopping after
  ``patience`` evaluations without gain, reduce-on-plateau lr decay, one checkpoint per epoch
  (:class:`~ranker.train.checkpoint.Checkpointer`, atomic), ``log.jsonl`` and optionally
  TensorBoard; at the end the selected weights are loaded and written to ``model.safetensors``. A rerun resumes after the last complete epoch and reproduces the uninterrupted
  run, because every epoch reseeds itself from its number; the decayed lr lives in the
  optimizer state and survives the resume.
- **the verdict**: on a fresh start the untrained weights are validated once (not an epoch of
  ``log.jsonl``; kept in the checkpoint state). Selection is among trained epochs as always;
  :meth:`FitResult.problem` says when nothing could be selected (no validation score was a
  number: the weights are the last epoch's), :meth:`FitResult.untrained_warning` when no
  trained epoch beat the untrained weights.

Progress (``train.progress``) goes to stderr (the ``stream`` argument): a live bar in a
terminal, plain step lines elsewhere (:class:`ranker.progress.StepProgress`); one line per
epoch on stdout.

Data parallelism (``torchrun``, :mod:`ranker.distributed`): with more than one process the
step runs the family's loss through DistributedDataParallel (:mod:`ranker.distributed.ddp`), so
the gradients are averaged over the ranks; each rank's loss is weighted by its share of the
step's counted units (the first key of ``loss``'s counts, summed over the ranks), so the step
follows the mean over the global batch even where ranks hold different numbers of units. The
epoch record sums the loss and the units over the ranks. Validation runs on every rank when the
family says ``validates_sharded`` (each scores its share and gathers the scores), else on rank 0
alone; either way rank 0's record is broadcast, so selection, early stopping and lr decay stay
in lockstep. Only rank 0 writes files and progress; the others wait at a barrier before they
read the selected weights. See docs/distributed.md.

Sharded tables (``kind: torchrec``, :mod:`ranker.distributed.sharding`): the step runs through
torchrec's DistributedModelParallel instead (on one process too, over a process group of one);
the engine's optimizer steps the dense parameters, the tables are updated by their fused
optimizer in backward; each rank allocates only its shard (the tables are built declared);
checkpoints hold the tables whole (gathered on rank 0 a table at a time as it writes them, every
rank reading back its own rows); after the loop rank 0 alone reads the selected weights, whole
tables included, and the other ranks' tables are left declared (no rows).
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Protocol

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from ranker.config.schema import BaseTrainConfig
from ranker.distributed import (
    World,
    all_reduce_sum,
    barrier,
    broadcast_buffers,
    broadcast_object,
    current,
    local_device,
)
from ranker.distributed.ddp import FamilyStep, data_parallel
from ranker.distributed.sharding import ShardedTables, torchrec_tables
from ranker.errors import ConfigError
from ranker.progress import MIN_GAP_S, StepProgress, is_terminal
from ranker.train.checkpoint import Checkpointer, load_weights, save_weights, take_part
from ranker.train.ema import WeightAverage, averaged_weights

#: Rank r > 0 seeds its epoch's dropout with seed + epoch + r · this (rank 0 draws as one process does).
RANK_SEED_STRIDE = 1_000_003


class Family(Protocol):
    """What a model family gives the engine.

    ``batches(epoch, generator)`` yields the epoch's training batches (any object with
    ``.to(device)``, or a dict of tensors); ``loss(batch, generator)`` runs the forward pass and
    returns the scalar loss and the units it averaged over (e.g. ``{"samples": B}``; the first
    key weights the epoch's mean loss and every key becomes ``train_<key>`` and
    ``<key>_per_s`` in the epoch record); ``validate()`` returns at least ``valid`` (metrics)
    and ``valid_score`` (higher is better) for the epoch record.

    Under torchrun ``batches`` yields this rank's share of each step, as many batches on every
    rank (the engine's ``world`` says which rank this is); ``validate`` runs on rank 0 alone
    unless the family sets ``validates_sharded = True`` (then on every rank, each gathering the
    others' scores with :func:`ranker.distributed.all_gather_variable`).
    """

    def batches(self, epoch: int, generator: torch.Generator) -> Iterable[Any]: ...

    def loss(self, batch: Any, generator: torch.Generator) -> tuple[torch.Tensor, dict[str, int]]: ...

    def validate(self) -> dict[str, Any]: ...


@dataclass
class FitResult:
    """Where training ended: best epoch and its score, the stopped epoch and every epoch record.

    ``best_epoch`` 0: no validation score was a number (the weights are the last epoch's).
    ``untrained``: ``{"valid", "valid_score"}`` of the weights before training (None when
    unknown, e.g. a checkpoint written before the engine kept it).
    """

    best_epoch: int
    best_score: float
    stopped_epoch: int
    history: list[dict[str, Any]] = field(default_factory=list)
    resumed_from: int = 0
    untrained: dict[str, Any] | None = None

    @property
    def untrained_score(self) -> float:
        score = (self.untrained or {}).get("valid_score")
        return float(score) if isinstance(score, int | float) else math.nan

    def problem(self) -> str | None:
        """Why no epoch could be selected (what happened; what to check), or None.

        No validation score was a number: a task whose validation labels are all one class has
        no AUC, so there is nothing to select on and the weights are the last epoch's.
        """
        evaluations = sum(1 for h in self.history if "valid_score" in h)
        if evaluations and (self.best_epoch == 0 or not math.isfinite(self.best_score)):
            return (
                f"no validation score was a number in {evaluations} evaluation(s), so no epoch could be "
                "selected (the saved weights are the last epoch's); check the label columns and the "
                "validation split: a task whose validation labels are all one class has no AUC"
            )
        return None

    def beats_untrained(self) -> bool | None:
        """Whether the selected epoch's validation score beats the untrained weights' (None when
        either is not a number)."""
        untrained = self.untrained_score
        if self.best_epoch == 0 or not (math.isfinite(untrained) and math.isfinite(self.best_score)):
            return None
        return self.best_score > untrained

    def untrained_warning(self) -> str | None:
        """A sentence when no trained epoch beat the untrained weights on validation, else None."""
        if self.beats_untrained() is not False:
            return None
        return (
            f"no trained epoch beat the untrained weights on validation (score {self.untrained_score:.4f} "
            f"before training, best {self.best_score:.4f} at epoch {self.best_epoch}); check the labels, "
            "the learning rate and whether the features carry any signal"
        )

    def mean(self, key: str) -> float:
        """Mean of an epoch-record key over the epochs that have it (NaN if none)."""
        values = [h[key] for h in self.history if key in h]
        return float(np.mean(values)) if values else math.nan

    def seconds_per_epoch(self) -> float:
        return self.mean("epoch_time_s")

    @property
    def train_samples_per_s(self) -> float:
        return self.mean("samples_per_s")

    def train_time_s(self) -> float:
        return float(sum(h.get("epoch_time_s", 0.0) for h in self.history))


def pick_device(name: str) -> torch.device:
    """``auto`` → cuda when available, else cpu; ``cuda`` without a GPU is a config error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device: 'cuda' but no CUDA device is available (use auto or cpu)")
    return torch.device(name)


def make_optimizer(params: Iterable[nn.Parameter], cfg: BaseTrainConfig) -> torch.optim.Optimizer:
    """AdamW (decoupled weight decay) or Adam (L2 in the gradient) with the config's lr and betas."""
    opt_cls = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
    return opt_cls(params, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)


def to_device(batch: Any, device: torch.device) -> Any:
    """A batch on `device`: objects with ``.to``, dicts of tensors, or unchanged on CPU."""
    if device.type == "cpu":
        return batch
    if isinstance(batch, dict):
        return {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
    return batch.to(device)


class EpochLog:
    """``log.jsonl``: one JSON record per epoch, cut back to the checkpoint on resume."""

    def __init__(self, path: Path, writer: bool = True) -> None:
        self.path, self.writer = path, writer

    def append(self, record: dict[str, Any]) -> None:
        if not self.writer:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a") as f:
            f.write(json.dumps(record, default=_jsonable) + "\n")

    def read(self, upto: int) -> list[dict[str, Any]]:
        """Records of epochs ≤ ``upto`` (a killed epoch's record is dropped from the file)."""
        if not self.path.is_file():
            return []
        records = [json.loads(x) for x in self.path.read_text().splitlines() if x.strip()]
        kept = [r for r in records if r["epoch"] <= upto]
        if len(kept) != len(records) and self.writer:
            self.path.write_text("".join(json.dumps(r) + "\n" for r in kept))
        return kept


class Engine:
    """Trains `model` for a :class:`Family` under a :class:`BaseTrainConfig`, into `run_dir`.

    ``select_last``: no selection and no early stop (every evaluation becomes the best), so all
    epochs run and the model ends at the last epoch's weights (retrieval's reference protocol).
    ``extra_loss()``: a regulariser added to every step's loss (the ranker's embedding L2).
    """

    def __init__(
        self,
        model: nn.Module,
        cfg: BaseTrainConfig,
        run_dir: Path,
        *,
        device: torch.device | None = None,
        world: World | None = None,
        select_last: bool = False,
        stream: IO[str] | None = None,
    ) -> None:
        """``stream``: where step progress goes (default: stderr at the time of writing).
        ``world``: this process among the run's (default: the initialised process group's, one
        process without torchrun); with several, the model is wrapped for DDP here."""
        self.cfg, self.run_dir = cfg, Path(run_dir)
        self.stream = stream
        self.world = world or current()
        self.device = device or local_device(pick_device(cfg.device))
        self.model = model.to(self.device)
        self.rank, self.world_size = self.world.rank, self.world.world_size
        self.writer = self.world.writer
        self.select_last = select_last
        # DDP first: it broadcasts rank 0's weights, which the optimizer and the average then start from
        self._ddp: DistributedDataParallel | ShardedTables | None = None
        self._family_step: FamilyStep | None = None
        self._tables: ShardedTables | None = None
        if torchrec_tables(self.model):  # sharded tables (kind: torchrec), on one process too
            self._family_step = FamilyStep(self.model)
            self._tables = self._ddp = ShardedTables(self._family_step, self.model, cfg.lr, self.device)
        elif self.world.distributed:
            self._ddp, self._family_step = data_parallel(self.model)
        params = self._tables.dense_parameters() if self._tables is not None else self.model.parameters()
        self.optimizer = make_optimizer(params, cfg)
        self.ema = WeightAverage(self.model, cfg.ema_decay) if cfg.ema_decay else None
        self._tb: Any = None

    # ------------------------------------------------------------------ the step
    def step(
        self, family: Family, batch: Any, generator: torch.Generator, timers: dict[str, float] | None = None
    ) -> tuple[torch.Tensor, dict[str, int]]:
        """One optimizer step on `batch`; (the detached loss, its counted units).

        ``timers``: seconds spent in ``forward`` (loss included), ``backward`` (and clipping)
        and ``optimizer`` (and the average's update) are added to it.
        """
        t0 = time.perf_counter()
        with torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=self.device.type == "cuda"):
            if self._ddp is not None and self._family_step is not None:  # gradients averaged over the ranks
                self._family_step.family = family
                loss = self._ddp(to_device(batch, self.device), generator)
                counts = self._family_step.counts
            else:
                loss, counts = family.loss(to_device(batch, self.device), generator)
        t1 = time.perf_counter()
        self.optimizer.zero_grad(set_to_none=True)
        (loss * self._rank_share(counts) if self._ddp is not None else loss).backward()
        if self.cfg.clip_grad_norm:
            nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.clip_grad_norm)
        t2 = time.perf_counter()
        self.optimizer.step()
        if self.ema is not None:
            self.ema.update()
        if timers is not None:
            timers["forward"] += t1 - t0
            timers["backward"] += t2 - t1
            timers["optimizer"] += time.perf_counter() - t2
        return loss.detach(), counts

    def _rank_share(self, counts: dict[str, int]) -> float:
        """W · n_r / Σ_r n_r for this rank's n_r counted units (the first key): DDP divides the summed
        gradients by W, so the step's gradient is Σ_r (n_r / N) ∇ mean_r = ∇ (mean over the global
        batch) for a loss that is a mean over its units (1 where every rank holds as many)."""
        units = float(next(iter(counts.values()), 0))
        (total,) = all_reduce_sum([units])
        return self.world_size * units / total if total > 0 else 1.0

    def train_epoch(self, family: Family, epoch: int, total: int | None = None) -> dict[str, Any]:
        """One pass over the family's batches; the epoch record's training part."""
        self.model.train()
        torch.manual_seed(self.cfg.seed + epoch + RANK_SEED_STRIDE * self.rank)  # dropout: other masks per rank
        gen = torch.Generator().manual_seed(self.cfg.seed * 1000 + epoch)
        # Under torchrun every rank builds the same batches from `gen`; its loss samples (negatives)
        # come from a generator of its own, so ranks do not draw the same ones.
        step_gen = (
            gen if not self.world.distributed else torch.Generator().manual_seed(gen.initial_seed() * 1009 + self.rank)
        )
        cap = self.cfg.max_steps_per_epoch
        if total is not None and cap:
            total = min(total, cap)
        # Summed as a tensor: no host sync per batch (matters on CUDA); read every 20 steps.
        loss_sum = torch.zeros((), device=self.device)
        counts: dict[str, int] = {}
        timers = dict.fromkeys(("data", "forward", "backward", "optimizer"), 0.0)
        start = last = time.perf_counter()
        progress = StepProgress(
            f"epoch {epoch}", total, enabled=self.cfg.progress and self.writer, stream=self._stream()
        )

        def mean_loss() -> float:  # .item() syncs: called only when progress is written
            return loss_sum.item() / max(next(iter(counts.values()), 0), 1)

        for step, batch in enumerate(family.batches(epoch, gen)):
            if cap and step >= cap:
                break
            timers["data"] += time.perf_counter() - last
            loss, n = self.step(family, batch, step_gen, timers)
            last = time.perf_counter()
            weight = next(iter(n.values()))
            loss_sum += loss * weight
            for key, value in n.items():
                counts[key] = counts.get(key, 0) + value
            progress.update(mean_loss, counts)
        progress.close()
        elapsed = time.perf_counter() - start
        total_loss = loss_sum.item()
        if self.world.distributed:  # the loss and the units of every rank
            total_loss, *sums = all_reduce_sum([total_loss, *counts.values()])
            counts = {key: int(round(value)) for key, value in zip(counts, sums, strict=True)}
        weight_total = next(iter(counts.values()), 0)
        record: dict[str, Any] = {
            "train_loss": total_loss / max(weight_total, 1),
            "epoch_time_s": elapsed,
            "time_split_s": timers,
        }
        for key, value in counts.items():
            record[f"{key}_per_s"] = value / max(elapsed, 1e-9)
            record[f"train_{key}"] = value
        return record

    # ------------------------------------------------------------------ the loop
    def fit(self, family: Family, *, batches_per_epoch: int | None = None) -> FitResult:
        """Train with early stopping on ``validate()["valid_score"]``, resuming a checkpoint in
        ``run_dir``; the model ends with the best epoch's (averaged) weights."""
        cfg = self.cfg
        ckpt = Checkpointer(self.run_dir)
        log = EpochLog(self.run_dir / "log.jsonl", self.writer)
        state = self._restore(ckpt) or {"epoch": 0, "best_epoch": 0, "best_score": -math.inf, "bad_evals": 0}
        state.setdefault("bad_evals", state.pop("bad_epochs", 0))  # checkpoints before the engine
        history = log.read(state["epoch"]) if self.writer else []  # rank 0 may be cutting the file back
        resumed_from = state["epoch"]
        if resumed_from and self.writer:
            print(f"resuming {self.run_dir} after epoch {resumed_from}")
        if not resumed_from:
            state["untrained"] = self.validate_untrained(family)
        for epoch in range(state["epoch"] + 1, cfg.epochs + 1):
            if state["bad_evals"] > cfg.patience:
                break
            record: dict[str, Any] = {"epoch": epoch, **self.train_epoch(family, epoch, batches_per_epoch)}
            improved = False
            if epoch % cfg.eval_every == 0 or epoch == cfg.epochs:
                if self._plain_progress() and record["epoch_time_s"] >= MIN_GAP_S:  # no silent minutes in a log
                    print(f"epoch {epoch}: validating …", file=self._stream(), flush=True)
                start = time.perf_counter()
                record.update(self._validate(family))
                record.setdefault("eval_time_s", time.perf_counter() - start)
                improved = self.select_last or record["valid_score"] > state["best_score"]
                if improved:
                    state.update(best_epoch=epoch, best_score=record["valid_score"], bad_evals=0)
                else:
                    state["bad_evals"] += 1
                    self._decay_lr()
            record["lr"] = self.optimizer.param_groups[0]["lr"]
            history.append(record)
            log.append(record)
            # sharded tables: gathered one at a time on rank 0 as it writes them; the others send their rows
            weights = self._tables.lazy_state() if self._tables is not None else None
            tables = self._tables.lazy_optimizer_state() if self._tables is not None else None
            if not self.writer and weights is not None and tables is not None:
                take_part(weights)
                take_part(tables)
            if self.writer:
                self._tensorboard(record)
                ckpt.save(
                    epoch,
                    self.model,
                    self.optimizer,
                    {k: state.get(k) for k in ("best_epoch", "best_score", "bad_evals", "untrained")},
                    is_best=improved,
                    ema=self.ema,
                    weights=weights,
                    tables=tables,
                )
                if cfg.progress:
                    print(epoch_summary(record, state["best_epoch"]), flush=True)
            state["epoch"] = epoch
        if self._tb is not None:
            self._tb.close()
        sharded = self._tables is not None
        if self._tables is not None:  # handed back declared: their rows are in the checkpoint (mypy: not `sharded`)
            self._tables.unshard()
            self._tables = self._ddp = self._family_step = None
        barrier()  # rank 0 has written the last checkpoint that every rank reads the selection from
        best = ckpt.best_path()  # none when no validation score was a number: the last epoch's weights
        if sharded:  # rank 0 alone takes the whole trained tables (its test scoring and files need them)
            if self.writer:
                load_weights(self.model, best or ckpt.weights_path())
                self.model.to(self.device)
        elif best is not None:
            load_weights(self.model, best)
        if self.writer:
            save_weights(self.model, self.run_dir / "model.safetensors")
        return FitResult(
            state["best_epoch"],
            state["best_score"],
            state["epoch"],
            history,
            resumed_from=resumed_from,
            untrained=state.get("untrained"),
        )

    def _restore(self, ckpt: Checkpointer) -> dict[str, Any] | None:
        """The last checkpoint loaded into the model, the optimizer and the average (sharded tables:
        each rank its rows, and the tables' optimizer state); None before the first."""
        tables = self._tables
        if tables is None:
            return ckpt.restore(self.model, self.optimizer, self.ema, clean=self.writer)
        state = ckpt.restore(self.model, self.optimizer, clean=self.writer, load=lambda _, p: tables.load_file(p))
        if state is not None:
            tables.load_optimizer_file(ckpt.tables_path(state["epoch"]))
        return state

    def validate_untrained(self, family: Family) -> dict[str, Any]:
        """The validation metrics and score of the weights before any training (the reference a
        trained epoch must beat); one line on stdout with ``train.progress``."""
        start = time.perf_counter()
        record = self._validate(family)
        untrained = {"valid": record.get("valid"), "valid_score": _number(record.get("valid_score"))}
        if self.cfg.progress and self.writer:
            parts = ["before training (untrained weights)", f"{time.perf_counter() - start:.1f}s"]
            print(" | ".join(parts + valid_text(untrained["valid"])), flush=True)
        return untrained

    def _validate(self, family: Family) -> dict[str, Any]:
        """``family.validate()`` on the (averaged) weights. With several processes: on every rank
        when the family ``validates_sharded`` (each scores its share; the scores are gathered), else
        on rank 0 while the others wait; rank 0's record is then every rank's, so selection,
        patience and lr decay take the same decisions everywhere."""
        if self.world.distributed:
            broadcast_buffers(self.model)  # every rank scores with rank 0's batch-norm statistics
            if not (self.writer or getattr(family, "validates_sharded", False)):
                return dict(broadcast_object(None))
        with averaged_weights(self.ema, self.model):
            record = family.validate()
        return dict(broadcast_object(record)) if self.world.distributed else record

    def _stream(self) -> IO[str]:
        return self.stream if self.stream is not None else sys.stderr

    def _plain_progress(self) -> bool:
        """Whether progress is on and written as plain lines (the stream is not a terminal)."""
        return self.cfg.progress and self.writer and not is_terminal(self._stream())

    def _decay_lr(self) -> None:
        """Reduce on plateau: the new lr lives in the optimizer state, so it survives a resume."""
        if self.cfg.lr_decay_on_plateau is None:
            return
        for group in self.optimizer.param_groups:
            group["lr"] = max(group["lr"] * self.cfg.lr_decay_on_plateau, self.cfg.min_lr)
        if self._tables is not None:
            self._tables.set_lr(max(self._tables.lr * self.cfg.lr_decay_on_plateau, self.cfg.min_lr))

    def _tensorboard(self, record: dict[str, Any]) -> None:
        if not self.cfg.tensorboard:
            return
        if self._tb is None:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as exc:
                raise ConfigError("train.tensorboard needs `pip install ranker[tensorboard]`") from exc
            self._tb = SummaryWriter(str(self.run_dir / "tensorboard"))
        for key, value in flat_scalars(record).items():
            self._tb.add_scalar(key, value, record["epoch"])
        self._tb.flush()


def flat_scalars(record: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """Every finite number of a nested epoch record, keyed ``a/b/c`` (TensorBoard tags)."""
    out: dict[str, float] = {}
    for key, value in record.items():
        if key == "epoch":
            continue
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flat_scalars(value, name + "/"))
        elif isinstance(value, (int, float, np.generic)) and not isinstance(value, bool):
            if math.isfinite(float(value)):
                out[name] = float(value)
    return out


def epoch_summary(record: dict[str, Any], best_epoch: int) -> str:
    """One progress line: loss, throughput, seconds, the validation metrics; ``*`` marks the best."""
    parts = [f"epoch {record['epoch']}: loss {record['train_loss']:.4f}"]
    rates = [k for k in record if k.endswith("_per_s")]
    if rates:
        parts.append(f"{record[rates[0]]:,.0f} {rates[0][: -len('_per_s')]}/s")
    parts.append(f"{record['epoch_time_s']:.1f}s")
    parts += valid_text(record.get("valid"))
    mark = " *" if "valid" in record and record["epoch"] == best_epoch else ""
    return " | ".join(parts) + mark


def valid_text(valid: Any) -> list[str]:
    """The validation metrics of an epoch line: per task AUC / GAUC or RMSE, or HR@10 / NDCG@10."""
    if not isinstance(valid, dict):
        return []
    if all(isinstance(m, dict) for m in valid.values()):  # per task
        parts = []
        for task, m in valid.items():
            if "rmse" in m:
                parts.append(f"{task} rmse {m['rmse']:.4f}")
            elif "auc" in m:
                parts.append(f"{task} auc {m['auc']:.4f}" + (f" gauc {m['gauc']:.4f}" if "gauc" in m else ""))
        return parts
    shown = [k for k in ("HR@10", "NDCG@10") if k in valid] or list(valid)[:2]
    return ["valid " + " ".join(f"{k} {valid[k]:.4f}" for k in shown)]


def _number(x: Any) -> float | None:
    """A finite float, or None (the checkpoint state is written as strict JSON)."""
    return float(x) if isinstance(x, int | float | np.generic) and math.isfinite(float(x)) else None


def _jsonable(x: Any) -> Any:
    if isinstance(x, np.generic):
        return x.item()
    raise TypeError(f"not JSON serialisable: {type(x)}")
