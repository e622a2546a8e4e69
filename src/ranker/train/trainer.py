"""The training loop: masked multi-task loss, AdamW, clipping, early stopping, resumable.

The trainer knows nothing about a model's parts: it calls ``model(batch) -> (B, T) raw outputs``
and ``objective(raw, batch) -> loss`` (by default :class:`ranker.tasks.MultiTaskObjective`:
BCE / MSE / Huber per task, masks, ESMM chains; distillation passes its own objective). Gate
statistics of mixture-of-experts heads (:mod:`ranker.nn.gates`) are logged per validation pass.
Determinism and resumption: epoch ``e`` shuffles with ``torch.Generator().manual_seed(seed·1000
+ e)`` and reseeds torch's global RNG (dropout) with ``seed + e``, so a run killed after epoch
``k`` and resumed produces the same epochs ``k+1 ..`` as an uninterrupted run.
``train.ema_decay``: an exponential moving average of the weights (:mod:`ranker.train.ema`) is
updated after every step and is what validation sees and the best checkpoint holds.
Data parallelism: ``rank`` / ``world_size`` shard every epoch's permutation; only rank 0
writes files (a later issue wires ``torchrun`` and the metric reduction).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from ranker.config.schema import TaskConfig, TrainConfig
from ranker.data.tensors import Batch, TensorData
from ranker.nn.gates import collect_gate_stats
from ranker.tasks import MultiTaskObjective, TaskSpec
from ranker.train.checkpoint import Checkpointer, load_weights
from ranker.train.ema import WeightAverage, averaged_weights
from ranker.train.evaluate import TaskMetrics, predict, selection_score, task_metrics

Objective = Callable[[torch.Tensor, Batch], torch.Tensor]


@dataclass
class FitResult:
    best_epoch: int
    best_score: float
    stopped_epoch: int
    history: list[dict[str, Any]] = field(default_factory=list)
    train_samples_per_s: float = math.nan
    resumed_from: int = 0


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("train.device is 'cuda' but no CUDA device is available")
    return torch.device(name)


def multitask_loss(logits: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor,
                   weights: torch.Tensor) -> torch.Tensor:
    """Σ_t w_t · mean over unmasked rows of BCE(logit_t, y_t); masked rows give no gradient.

    The all-binary, unchained special case of :class:`ranker.tasks.MultiTaskObjective`.

    Shapes: logits, labels, mask (B, T); weights (T,).
    """
    bce = F.binary_cross_entropy_with_logits(logits.float(), labels, reduction="none")  # (B, T)
    per_task = (bce * mask).sum(0) / mask.sum(0).clamp_min(1.0)  # (T,)
    return (per_task * weights).sum()


class Trainer:
    """Fits a model on a :class:`TensorData` split, selecting on a validation split."""

    def __init__(self, model: nn.Module, cfg: TrainConfig, tasks: list[TaskConfig], run_dir: Path,
                 *, device: torch.device | None = None, rank: int = 0, world_size: int = 1,
                 loss_fn: Callable[..., torch.Tensor] | None = None,
                 objective: Objective | None = None) -> None:
        """`loss_fn(logits, labels, mask, weights)` (legacy) or `objective(raw, batch)` replace
        the default objective of `tasks`."""
        self.cfg = cfg
        self.tasks = tasks
        self.spec = TaskSpec.from_tasks(tasks)
        self.run_dir = run_dir
        self.device = device or pick_device(cfg.device)
        self.model = model.to(self.device)
        self.rank, self.world_size = rank, world_size
        self.weights = torch.tensor([t.weight for t in tasks], device=self.device)
        self.objective: Objective = objective or MultiTaskObjective(self.spec)
        if loss_fn is not None:
            self.objective = lambda raw, batch: loss_fn(raw, batch["labels"], batch["label_mask"], self.weights)
        opt_cls = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
        self.optimizer = opt_cls(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        emb = getattr(model, "embedding_parameters", None)
        self.embedding_params: list[nn.Parameter] = list(emb()) if callable(emb) else []
        self.ema = WeightAverage(self.model, cfg.ema_decay) if cfg.ema_decay else None
        self.ckpt = Checkpointer(run_dir)
        self.log_path = run_dir / "log.jsonl"
        self._tb: Any = None

    # ------------------------------------------------------------------ public
    def fit(self, train: TensorData, valid: TensorData, valid_groups: np.ndarray | None = None) -> FitResult:
        state = self.ckpt.restore(self.model, self.optimizer, self.ema) or {
            "epoch": 0, "best_epoch": 0, "best_score": -math.inf, "bad_epochs": 0}
        history = self._read_log(state["epoch"])
        result = FitResult(state["best_epoch"], state["best_score"], state["epoch"], history,
                           resumed_from=state["epoch"])
        if state["epoch"] and self.rank == 0:
            print(f"resuming {self.run_dir} after epoch {state['epoch']}")
        labels, mask = valid.tensors["labels"].numpy(), valid.tensors["label_mask"].numpy()
        names = [t.name for t in self.tasks]
        speeds = [h["samples_per_s"] for h in history]
        for epoch in range(state["epoch"] + 1, self.cfg.epochs + 1):
            if state["bad_epochs"] > self.cfg.patience:
                break
            stats = self._train_epoch(train, epoch)
            collect_gate_stats(self.model)  # drop anything recorded outside validation
            with averaged_weights(self.ema, self.model):
                probs = predict(self.model, valid, self.cfg.eval_batch_size, self.device, self.spec.outputs)
                gates = collect_gate_stats(self.model)
            metrics = task_metrics(probs, labels, mask, names, valid_groups, self.spec.kinds)
            score = selection_score(metrics)
            improved = score > state["best_score"]
            if improved:
                state.update(best_epoch=epoch, best_score=score, bad_epochs=0)
            else:
                state["bad_epochs"] += 1
                self._decay_lr()
            record = {"epoch": epoch, **stats, "valid": metrics, "valid_score": score,
                      "lr": self.optimizer.param_groups[0]["lr"]}
            if gates:
                record["gates"] = gates
            history.append(record)
            speeds.append(stats["samples_per_s"])
            if self.rank == 0:
                self._log(record)
                self.ckpt.save(epoch, self.model, self.optimizer,
                               {k: state[k] for k in ("best_epoch", "best_score", "bad_epochs")},
                               is_best=improved, ema=self.ema)
                if self.cfg.progress:
                    print(_summary(record, state["best_epoch"]))
            state["epoch"] = epoch
        result.best_epoch, result.best_score = state["best_epoch"], state["best_score"]
        result.stopped_epoch, result.history = state["epoch"], history
        result.train_samples_per_s = float(np.mean(speeds)) if speeds else math.nan
        best = self.ckpt.best_path()
        if best is not None:
            load_weights(self.model, best)
        return result

    def evaluate(self, data: TensorData, groups: np.ndarray | None = None) -> tuple[TaskMetrics, np.ndarray]:
        """Per-task metrics and outputs (N, T); gate statistics stay readable with
        :func:`ranker.nn.gates.collect_gate_stats` until the next evaluation."""
        collect_gate_stats(self.model)
        probs = predict(self.model, data, self.cfg.eval_batch_size, self.device, self.spec.outputs)
        names = [t.name for t in self.tasks]
        t = data.tensors
        return task_metrics(probs, t["labels"].numpy(), t["label_mask"].numpy(), names, groups,
                            self.spec.kinds), probs

    # ------------------------------------------------------------------ internals
    def _train_epoch(self, train: TensorData, epoch: int) -> dict[str, Any]:
        self.model.train()
        torch.manual_seed(self.cfg.seed + epoch)
        gen = torch.Generator().manual_seed(self.cfg.seed * 1000 + epoch)
        n_batches = train.num_batches(self.cfg.batch_size, self.world_size)
        if self.cfg.max_steps_per_epoch:
            n_batches = min(n_batches, self.cfg.max_steps_per_epoch)
        timers = dict.fromkeys(("data", "forward", "backward", "optimizer"), 0.0)
        # Summed as a tensor: no host sync per batch (matters on CUDA); read every 20 steps.
        total_loss, seen = torch.zeros((), device=self.device), 0
        start = last = time.perf_counter()
        bar = tqdm(total=n_batches, desc=f"epoch {epoch}", unit="batch", leave=False,
                   disable=not self.cfg.progress or self.rank != 0, mininterval=0.5)
        batches = train.batches(self.cfg.batch_size, shuffle=True, generator=gen, rank=self.rank,
                                world_size=self.world_size)
        for step, batch in enumerate(batches):
            if step >= n_batches:
                break
            batch = _to(batch, self.device)
            now = time.perf_counter()
            timers["data"] += now - last
            loss = self._loss(batch)
            t1 = time.perf_counter()
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if self.cfg.clip_grad_norm:
                nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.clip_grad_norm)
            t2 = time.perf_counter()
            self.optimizer.step()
            if self.ema is not None:
                self.ema.update()
            last = time.perf_counter()
            timers["forward"] += t1 - now
            timers["backward"] += t2 - t1
            timers["optimizer"] += last - t2
            rows = batch["labels"].shape[0]
            total_loss += loss.detach() * rows
            seen += rows
            bar.update(1)
            if step % 20 == 0:
                bar.set_postfix(loss=f"{total_loss.item() / seen:.4f}",
                                samples_s=f"{seen / (last - start):,.0f}")
        bar.close()
        elapsed = time.perf_counter() - start
        return {"train_loss": total_loss.item() / max(seen, 1), "samples_per_s": seen / max(elapsed, 1e-9),
                "epoch_time_s": elapsed, "time_split_s": timers, "train_rows": seen}

    def _loss(self, batch: Batch) -> torch.Tensor:
        with torch.autocast(device_type=self.device.type, dtype=torch.bfloat16,
                            enabled=self.device.type == "cuda"):
            logits = self.model(batch)
        loss = self.objective(logits, batch)
        if self.cfg.embedding_l2 > 0 and self.embedding_params:
            loss = loss + self.cfg.embedding_l2 * sum(p.pow(2).sum() for p in self.embedding_params)
        return loss

    def _decay_lr(self) -> None:
        """Reduce-on-plateau: the new lr lives in the optimizer state, so it survives a resume."""
        if self.cfg.lr_decay_on_plateau is None:
            return
        for group in self.optimizer.param_groups:
            group["lr"] = max(group["lr"] * self.cfg.lr_decay_on_plateau, self.cfg.min_lr)

    def _log(self, record: dict[str, Any]) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "a") as f:
            f.write(json.dumps(record, default=_jsonable) + "\n")
        if self.cfg.tensorboard:
            self._tensorboard(record)

    def _tensorboard(self, record: dict[str, Any]) -> None:
        if self._tb is None:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as exc:
                raise RuntimeError("train.tensorboard needs `pip install ranker[tensorboard]`") from exc
            self._tb = SummaryWriter(str(self.run_dir / "tensorboard"))
        e = record["epoch"]
        self._tb.add_scalar("train/loss", record["train_loss"], e)
        self._tb.add_scalar("train/samples_per_s", record["samples_per_s"], e)
        for task, m in record["valid"].items():
            for key, value in m.items():
                self._tb.add_scalar(f"valid/{task}/{key}", value, e)
        self._tb.flush()

    def _read_log(self, upto: int) -> list[dict[str, Any]]:
        """Epoch records up to the checkpointed epoch (a killed epoch's record is dropped)."""
        if not self.log_path.is_file():
            return []
        records = [json.loads(line) for line in self.log_path.read_text().splitlines() if line.strip()]
        kept = [r for r in records if r["epoch"] <= upto]
        if len(kept) != len(records) and self.rank == 0:
            self.log_path.write_text("".join(json.dumps(r) + "\n" for r in kept))
        return kept


def _to(batch: Batch, device: torch.device) -> Batch:
    if device.type == "cpu":
        return batch
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def _jsonable(x: Any) -> Any:
    if isinstance(x, np.generic):
        return x.item()
    raise TypeError(f"not JSON serialisable: {type(x)}")


def _summary(record: dict[str, Any], best_epoch: int) -> str:
    parts = [f"epoch {record['epoch']}: loss {record['train_loss']:.4f}",
             f"{record['samples_per_s']:,.0f} samples/s"]
    for task, m in record["valid"].items():
        if "rmse" in m:
            parts.append(f"{task} rmse {m['rmse']:.4f}")
            continue
        s = f"{task} auc {m['auc']:.4f}"
        if "gauc" in m:
            s += f" gauc {m['gauc']:.4f}"
        parts.append(s)
    mark = " *" if record["epoch"] == best_epoch else ""
    return " | ".join(parts) + mark
