"""Generative training of a :class:`GenerativeRanker`: one pass per user window trains all its events.

Loss: the ranker's multi-task objective (:class:`ranker.tasks.MultiTaskObjective`: BCE per task,
masks, weights) over every scored token of the batch: each target event's item token (its
labels, e.g. ``watch = 1``, ``like``) and its negatives' candidate tokens (``watch = 0``, like
masked). Selection: the mean validation AUC of the tasks (as :class:`ranker.train.Trainer`),
stopping after ``patience`` epochs without gain. Each epoch is checkpointed atomically
(:class:`ranker.train.checkpoint.Checkpointer`); a rerun resumes after the last complete epoch and
reproduces the uninterrupted run: epoch e shuffles with ``Generator(seed·1000 + e)`` and reseeds
dropout with ``seed + e``.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from ranker.config.generative import GenerativeTrainConfig
from ranker.generative.batches import Batch, Window, batches
from ranker.generative.evaluate import predict_split, split_metrics
from ranker.generative.events import EventLog
from ranker.models.generative import GenerativeRanker
from ranker.tasks import MultiTaskObjective, TaskSpec
from ranker.train.evaluate import selection_score
from ranker.train.loop import fit_epochs


@dataclass
class GenFitResult:
    best_epoch: int
    best_score: float
    stopped_epoch: int
    history: list[dict[str, Any]] = field(default_factory=list)

    def mean(self, key: str) -> float:
        values = [h[key] for h in self.history if key in h]
        return sum(values) / len(values) if values else math.nan


class GenerativeTrainer:
    """Fits a :class:`GenerativeRanker` on training windows, selecting on the validation rows."""

    def __init__(self, model: GenerativeRanker, log: EventLog, cfg: GenerativeTrainConfig,
                 run_dir: Path) -> None:
        self.model, self.log, self.cfg, self.run_dir = model, log, cfg, run_dir
        self.objective = MultiTaskObjective(TaskSpec.from_tasks(list(log.tasks)))
        self.optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.labels = torch.from_numpy(log.labels)
        self.label_mask = torch.from_numpy(log.label_mask)

    def fit(self, train: list[Window], valid: list[Window]) -> GenFitResult:
        state, history = fit_epochs(
            self.model, self.optimizer, self.run_dir, epochs=self.cfg.epochs, patience=self.cfg.patience,
            train_epoch=lambda epoch: self._train_epoch(train, epoch), validate=lambda: self._validate(valid),
            report=self._report, progress=self.cfg.progress)
        return GenFitResult(state.best_epoch, state.best_score, state.epoch, history)

    def step(self, batch: Batch) -> tuple[torch.Tensor, int]:
        """One optimizer step on a batch; (loss, scored rows)."""
        raw = self.model(batch.tokens)
        ev, slot = torch.from_numpy(batch.rows[:, 0]), torch.from_numpy(batch.rows[:, 1])
        loss = self.objective(raw, {"labels": self.labels[ev, slot], "label_mask": self.label_mask[ev, slot]})
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.cfg.clip_grad_norm:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.clip_grad_norm)
        self.optimizer.step()
        return loss, len(batch.rows)

    def _train_epoch(self, train: list[Window], epoch: int) -> dict[str, Any]:
        self.model.train()
        torch.manual_seed(self.cfg.seed + epoch)
        gen = torch.Generator().manual_seed(self.cfg.seed * 1000 + epoch)
        total, rows, events = torch.zeros(()), 0, 0
        start = time.perf_counter()
        bar = tqdm(desc=f"epoch {epoch}", unit="batch", leave=False, disable=not self.cfg.progress,
                   mininterval=0.5)
        for step, batch in enumerate(batches(train, self.cfg.batch_cells, self.cfg.max_batch_size, gen)):
            if self.cfg.max_steps_per_epoch and step >= self.cfg.max_steps_per_epoch:
                break
            loss, n = self.step(batch)
            total += loss.detach() * n
            rows += n
            events += int((batch.rows[:, 1] == 0).sum())
            bar.update(1)
        bar.close()
        elapsed = time.perf_counter() - start
        return {"train_loss": total.item() / max(rows, 1), "epoch_time_s": elapsed,
                "samples_per_s": rows / max(elapsed, 1e-9), "events_per_s": events / max(elapsed, 1e-9),
                "train_rows": rows, "train_events": events}

    def _validate(self, valid: list[Window]) -> dict[str, Any]:
        start = time.perf_counter()
        probs = predict_split(self.model, self.log, 1, valid, self.cfg.batch_cells, self.cfg.max_batch_size)
        metrics = split_metrics(self.log, 1, probs)
        return {"valid": metrics, "valid_score": selection_score(metrics),
                "eval_time_s": time.perf_counter() - start}

    def _report(self, record: dict[str, Any], best_epoch: int) -> None:
        if self.cfg.progress:
            parts = [f"epoch {record['epoch']}: loss {record['train_loss']:.4f}",
                     f"{record['events_per_s']:,.0f} events/s", f"{record['epoch_time_s']:.0f}s"]
            parts += [f"{t} auc {m['auc']:.4f} gauc {m['gauc']:.4f}" for t, m in record["valid"].items()]
            print(" | ".join(parts) + (" *" if record["epoch"] == best_epoch else ""), flush=True)
