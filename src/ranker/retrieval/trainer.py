"""Generative training of a sequential retriever: next item at every position.

The retrieval family on the shared :class:`~ranker.train.engine.Engine`: batches of users'
training sequences (length-sorted within windows), the next-item loss with negatives drawn
from the epoch's generator, and selection on validation NDCG@10 (full catalogue,
PROTOCOLS.md). ``train.protocol: reference`` or ``refit`` selects the last epoch instead.

Data parallelism (``torchrun``, docs/distributed.md): ``train.batch_size`` users is the global
batch; every rank builds the same shuffled batches and trains on rows ``rank::W`` of each
(:meth:`SeqBatch.shard`), the loss weighted by its share of the step's targets (the engine), so a
step is the one-process step's users. Negatives are drawn per rank (sampled and in-batch
softmax see the rank's rows); validation runs on rank 0.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from ranker.config.retrieval import RetrievalEval, SequenceTrainConfig
from ranker.distributed import check_global_batch
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
        self.engine = Engine(model, cfg, run_dir, device=device, select_last=cfg.trains_on_valid)
        check_global_batch(cfg.batch_size, world=self.engine.world)
        self.model = model  # moved to the engine's device in place
        self.optimizer, self.ema = self.engine.optimizer, self.engine.ema
        self._train: TrainSequences | None = None
        self._data: LeaveOneOut | None = None

    def fit(self, train: TrainSequences, data: LeaveOneOut) -> FitResult:
        self._train, self._data = train, data
        return self.engine.fit(self, batches_per_epoch=math.ceil(len(train) / self.cfg.batch_size))

    def batches(self, epoch: int, generator: torch.Generator) -> Iterator[SeqBatch]:
        assert self._train is not None
        world = self.engine.world
        for batch in self._train.batches(self.cfg.batch_size, generator, self.cfg.length_window):
            shard = batch.shard(world.rank, world.world_size) if world.distributed else batch
            if shard is not None:  # every rank skips the same batch
                yield shard

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
