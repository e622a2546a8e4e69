"""Generative training of a :class:`GenerativeRanker`: one pass per user window trains all its events.

The generative family on the shared :class:`~ranker.train.engine.Engine`. Loss: the ranker's
multi-task objective (:class:`ranker.tasks.MultiTaskObjective`: BCE per task, masks, weights)
over every scored token of the batch: each target event's item token (its labels, e.g.
``watch = 1``, ``like``) and its negatives' candidate tokens (``watch = 0``, like masked).
Batches: windows of similar length under a B·N² cell budget. Selection: the mean validation AUC
of the tasks (as the feature ranker).

Data parallelism (``torchrun``, docs/distributed.md): every rank plans the same budgeted batches
and trains on every W-th of them (rank r: batches r, r + W, …; the last G mod W batches of an
epoch are left out), so ``train.batch_cells`` and ``max_batch_size`` stay per process and a step
trains W batches, each rank's loss weighted by its share of the step's scored rows (the engine).
Validation runs on rank 0.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ranker.config.generative import GenerativeTrainConfig
from ranker.generative.batches import Batch, Window, batches, collate, plan_batches
from ranker.generative.evaluate import predict_split, split_metrics
from ranker.generative.events import EventLog
from ranker.models.generative import GenerativeRanker
from ranker.tasks import MultiTaskObjective, TaskSpec
from ranker.train.engine import Engine, FitResult
from ranker.train.evaluate import selection_score


class GenerativeTrainer:
    """Fits a :class:`GenerativeRanker` on training windows, selecting on the validation rows."""

    def __init__(self, model: GenerativeRanker, log: EventLog, cfg: GenerativeTrainConfig, run_dir: Path) -> None:
        self.log, self.cfg = log, cfg
        self.engine = Engine(model, cfg, run_dir)
        self.model = model  # moved to the engine's device in place
        self.optimizer = self.engine.optimizer
        self.objective = MultiTaskObjective(TaskSpec.from_tasks(list(log.tasks)))
        self.labels = torch.from_numpy(log.labels)
        self.label_mask = torch.from_numpy(log.label_mask)
        self._train: list[Window] = []
        self._valid: list[Window] = []

    def fit(self, train: list[Window], valid: list[Window]) -> FitResult:
        self._train, self._valid = train, valid
        return self.engine.fit(self)

    def batches(self, epoch: int, generator: torch.Generator) -> Iterator[Batch]:
        world = self.engine.world
        if not world.distributed:
            return batches(self._train, self.cfg.batch_cells, self.cfg.max_batch_size, generator)
        return self._rank_batches(generator, world.rank, world.world_size)

    def _rank_batches(self, generator: torch.Generator, rank: int, world_size: int) -> Iterator[Batch]:
        """Batches ``rank, rank + W, …`` of the epoch's plan (the same on every rank), as many on each."""
        lengths = np.array([len(w) for w in self._train])
        groups = plan_batches(lengths, self.cfg.batch_cells, self.cfg.max_batch_size, generator)
        for group in groups[rank : len(groups) - len(groups) % world_size : world_size]:
            yield collate([self._train[i] for i in group])

    def loss(self, batch: Batch, generator: torch.Generator) -> tuple[torch.Tensor, dict[str, int]]:
        raw = self.model(batch.tokens)
        ev, slot = torch.from_numpy(batch.rows[:, 0]), torch.from_numpy(batch.rows[:, 1])
        labels = {
            "labels": self.labels[ev, slot].to(raw.device),
            "label_mask": self.label_mask[ev, slot].to(raw.device),
        }
        loss = self.objective(raw, labels)
        return loss, {"samples": len(batch.rows), "events": int((batch.rows[:, 1] == 0).sum())}

    def validate(self) -> dict[str, Any]:
        start = time.perf_counter()
        probs = predict_split(self.model, self.log, 1, self._valid, self.cfg.batch_cells, self.cfg.max_batch_size)
        metrics = split_metrics(self.log, 1, probs)
        return {"valid": metrics, "valid_score": selection_score(metrics), "eval_time_s": time.perf_counter() - start}
