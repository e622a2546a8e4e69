"""Generative training of a sequential retriever: next item at every position, AdamW.

Model selection: validation NDCG@10 (full catalogue, PROTOCOLS.md) every ``eval_every`` epochs,
on the weight average when ``train.ema_decay`` is set; the best epoch's weights are kept and
training stops after ``patience`` evaluations without gain. Each epoch is checkpointed
atomically (safetensors weights, ``weights_only`` optimizer state, the average, ``last.json``);
a rerun resumes after the last complete epoch and reproduces the uninterrupted run: epoch e
shuffles and samples negatives with ``Generator(seed·1000 + e)`` and reseeds dropout with
``seed + e``.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from ranker.config.retrieval import RetrievalEval, SequenceTrainConfig
from ranker.models.sequential import SequentialRetriever
from ranker.retrieval.batches import SeqBatch, TrainSequences
from ranker.retrieval.evaluation import evaluate_model
from ranker.retrieval.losses import NextItemLoss
from ranker.retrieval.protocol import LeaveOneOut
from ranker.train.ema import WeightAverage
from ranker.train.loop import fit_epochs

SELECTION = "NDCG@10"


@dataclass
class SeqFitResult:
    best_epoch: int
    best_score: float
    stopped_epoch: int
    history: list[dict[str, Any]] = field(default_factory=list)

    def seconds_per_epoch(self) -> float:
        times = [h["epoch_time_s"] for h in self.history]
        return sum(times) / len(times) if times else math.nan


class SequenceTrainer:
    """Fits a :class:`SequentialRetriever` on leave-one-out training sequences."""

    def __init__(self, model: SequentialRetriever, loss: NextItemLoss, cfg: SequenceTrainConfig,
                 eval_cfg: RetrievalEval, run_dir: Path) -> None:
        self.model, self.loss, self.cfg, self.eval_cfg = model, loss, cfg, eval_cfg
        self.run_dir = run_dir
        self.optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=cfg.betas,
                                           weight_decay=cfg.weight_decay)
        self.ema = WeightAverage(model, cfg.ema_decay) if cfg.ema_decay else None

    def fit(self, train: TrainSequences, data: LeaveOneOut) -> SeqFitResult:
        state, history = fit_epochs(
            self.model, self.optimizer, self.run_dir, epochs=self.cfg.epochs, patience=self.cfg.patience,
            train_epoch=lambda epoch: self._train_epoch(train, epoch), validate=lambda: self._validate(data),
            report=self._report, eval_every=self.cfg.eval_every, progress=self.cfg.progress,
            select_last=self.cfg.protocol == "reference", ema=self.ema)
        return SeqFitResult(state.best_epoch, state.best_score, state.epoch, history)

    def _train_epoch(self, train: TrainSequences, epoch: int) -> dict[str, Any]:
        self.model.train()
        torch.manual_seed(self.cfg.seed + epoch)
        gen = torch.Generator().manual_seed(self.cfg.seed * 1000 + epoch)
        n_batches = math.ceil(len(train) / self.cfg.batch_size)
        if self.cfg.max_steps_per_epoch:
            n_batches = min(n_batches, self.cfg.max_steps_per_epoch)
        device = next(self.model.parameters()).device
        total, targets = torch.zeros((), device=device), 0
        start = time.perf_counter()
        bar = tqdm(total=n_batches, desc=f"epoch {epoch}", unit="batch", leave=False,
                   disable=not self.cfg.progress, mininterval=0.5)
        for step, batch in enumerate(train.batches(self.cfg.batch_size, gen, self.cfg.length_window)):
            if step >= n_batches:
                break
            loss, n = self._step(batch.to(device), gen)
            total += loss.detach() * n
            targets += n
            bar.update(1)
        bar.close()
        elapsed = time.perf_counter() - start
        return {"train_loss": total.item() / max(targets, 1), "epoch_time_s": elapsed,
                "targets_per_s": targets / max(elapsed, 1e-9), "train_targets": targets}

    def _step(self, batch: SeqBatch, gen: torch.Generator) -> tuple[torch.Tensor, int]:
        states = self.model.encode(batch.items, batch.times, batch.query_times)  # (B, L, D)
        loss = self.loss(states, batch.targets, self.model.item_vectors(), gen)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.cfg.clip_grad_norm:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.clip_grad_norm)
        self.optimizer.step()
        if self.ema is not None:
            self.ema.update()
        return loss, int((batch.targets > 0).sum())

    def _validate(self, data: LeaveOneOut) -> dict[str, Any]:
        start = time.perf_counter()
        e = self.eval_cfg
        metrics = evaluate_model(self.model, data, "valid", ks=tuple(e.ks), exclude=e.exclude,
                                 batch_users=self.cfg.eval_batch_size)
        return {"valid": metrics, "valid_score": metrics[SELECTION],
                "eval_time_s": time.perf_counter() - start}

    def _report(self, record: dict[str, Any], best_epoch: int) -> None:
        if self.cfg.progress:
            line = (f"epoch {record['epoch']}: loss {record['train_loss']:.4f} "
                    f"{record['epoch_time_s']:.1f}s")
            if "valid" in record:
                v = record["valid"]
                line += f" | valid HR@10 {v['HR@10']:.4f} NDCG@10 {v['NDCG@10']:.4f}"
                line += " *" if record["epoch"] == best_epoch else ""
            print(line, flush=True)
