"""Generative training of a sequential retriever: next item at every position.

The retrieval family on the shared :class:`~ranker.train.engine.Engine`: batches of users'
training sequences (length-sorted within windows), the next-item loss with negatives drawn
from the epoch's generator, and selection on validation NDCG@10 (full catalogue,
PROTOCOLS.md). ``train.protocol: reference`` selects the last epoch instead.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from ranker.config.retrieval import RetrievalEval, SequenceTrainConfig
from ranker.models.sequential import SequentialRetriever
from ranker.retrieval.batches import SeqBatch, TrainSequences
from ranker.retrieval.evaluation import evaluate_model
from ranker.retrieval.losses import NextItemLoss
from ranker.retrieval.protocol import LeaveOneOut
from ranker.train.engine import Engine, FitResult

SELECTION = "NDCG@10"


class SequenceTrainer:
    """Fits a :class:`SequentialRetriever` on leave-one-out training sequences."""

    def __init__(
        self,
        model: SequentialRetriever,
        loss: NextItemLoss,
        cfg: SequenceTrainConfig,
        eval_cfg: RetrievalEval,
        run_dir: Path,
        *,
        device: torch.device | None = None,
    ) -> None:
        self.next_item_loss, self.cfg, self.eval_cfg = loss, cfg, eval_cfg
        self.engine = Engine(model, cfg, run_dir, device=device, select_last=cfg.protocol == "reference")
        self.model = model  # moved to the engine's device in place
        self.optimizer, self.ema = self.engine.optimizer, self.engine.ema
        self._train: TrainSequences | None = None
        self._data: LeaveOneOut | None = None

    def fit(self, train: TrainSequences, data: LeaveOneOut) -> FitResult:
        self._train, self._data = train, data
        return self.engine.fit(self, batches_per_epoch=math.ceil(len(train) / self.cfg.batch_size))

    def batches(self, epoch: int, generator: torch.Generator) -> Iterator[SeqBatch]:
        assert self._train is not None
        return self._train.batches(self.cfg.batch_size, generator, self.cfg.length_window)

    def loss(self, batch: SeqBatch, generator: torch.Generator) -> tuple[torch.Tensor, dict[str, int]]:
        states = self.model.encode(batch.items, batch.times, batch.query_times)  # (B, L, D)
        loss = self.next_item_loss(states, batch.targets, self.model.item_vectors(), generator)
        return loss, {"targets": int((batch.targets > 0).sum())}

    def validate(self) -> dict[str, Any]:
        assert self._data is not None
        start = time.perf_counter()
        e = self.eval_cfg
        metrics = evaluate_model(
            self.model, self._data, "valid", ks=tuple(e.ks), exclude=e.exclude, batch_users=self.cfg.eval_batch_size
        )
        return {"valid": metrics, "valid_score": metrics[SELECTION], "eval_time_s": time.perf_counter() - start}
