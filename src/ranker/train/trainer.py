"""The feature ranker's training: masked multi-task loss on shuffled row batches.

The trainer knows nothing about a model's parts: it calls ``model(batch) -> (B, T) raw outputs``
and ``objective(raw, batch) -> loss`` (by default :class:`ranker.tasks.MultiTaskObjective`:
BCE / MSE / Huber per task, masks, ESMM chains; distillation passes its own objective). Gate
statistics of mixture-of-experts heads (:mod:`ranker.nn.gates`) are logged per validation pass.
The step, the epoch loop, selection, checkpoints and resume are the shared
:class:`~ranker.train.engine.Engine`'s.
Data parallelism: ``rank`` / ``world_size`` shard every epoch's permutation; only rank 0
writes files (a later issue wires ``torchrun`` and the metric reduction).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ranker.config.schema import TaskConfig, TrainConfig
from ranker.data.stream import StreamedTrain
from ranker.data.tensors import Batch, TensorData
from ranker.nn.gates import collect_gate_stats
from ranker.tasks import MultiTaskObjective, TaskSpec
from ranker.train.engine import Engine, FitResult
from ranker.train.evaluate import TaskMetrics, predict, selection_score, task_metrics

Objective = Callable[[torch.Tensor, Batch], torch.Tensor]


def multitask_loss(
    logits: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor, weights: torch.Tensor
) -> torch.Tensor:
    """Σ_t w_t · mean over unmasked rows of BCE(logit_t, y_t); masked rows give no gradient.

    The all-binary, unchained special case of :class:`ranker.tasks.MultiTaskObjective`.

    Shapes: logits, labels, mask (B, T); weights (T,).
    """
    bce = F.binary_cross_entropy_with_logits(logits.float(), labels, reduction="none")  # (B, T)
    per_task = (bce * mask).sum(0) / mask.sum(0).clamp_min(1.0)  # (T,)
    return (per_task * weights).sum()


class Trainer:
    """The feature ranker's family on the :class:`~ranker.train.engine.Engine`: shuffled row
    batches of a :class:`TensorData`, the multi-task objective, selection on the mean valid AUC."""

    def __init__(
        self,
        model: nn.Module,
        cfg: TrainConfig,
        tasks: list[TaskConfig],
        run_dir: Path,
        *,
        device: torch.device | None = None,
        rank: int = 0,
        world_size: int = 1,
        loss_fn: Callable[..., torch.Tensor] | None = None,
        objective: Objective | None = None,
    ) -> None:
        """`loss_fn(logits, labels, mask, weights)` (legacy) or `objective(raw, batch)` replace
        the default objective of `tasks`."""
        self.cfg = cfg
        self.tasks = tasks
        self.spec = TaskSpec.from_tasks(tasks)
        self.run_dir = run_dir
        self.engine = Engine(model, cfg, run_dir, device=device, rank=rank, world_size=world_size)
        self.model, self.device, self.optimizer = self.engine.model, self.engine.device, self.engine.optimizer
        self.rank, self.world_size = rank, world_size
        self.weights = torch.tensor([t.weight for t in tasks], device=self.device)
        self.objective: Objective = objective or MultiTaskObjective(self.spec)
        if loss_fn is not None:
            self.objective = lambda raw, batch: loss_fn(raw, batch["labels"], batch["label_mask"], self.weights)
        emb = getattr(model, "embedding_parameters", None)
        self.embedding_params: list[nn.Parameter] = list(emb()) if callable(emb) else []
        self._train: TensorData | StreamedTrain | None = None
        self._valid: tuple[TensorData, np.ndarray | None] | None = None

    # ------------------------------------------------------------------ public
    def fit(
        self, train: TensorData | StreamedTrain, valid: TensorData, valid_groups: np.ndarray | None = None
    ) -> FitResult:
        """Train on `train` (in memory, or streamed from parquet: ``data.stream``), select on `valid`."""
        self._train, self._valid = train, (valid, valid_groups)
        n_batches = train.num_batches(self.cfg.batch_size, self.world_size)
        return self.engine.fit(self, batches_per_epoch=n_batches)

    def evaluate(self, data: TensorData, groups: np.ndarray | None = None) -> tuple[TaskMetrics, np.ndarray]:
        """Per-task metrics and outputs (N, T); gate statistics stay readable with
        :func:`ranker.nn.gates.collect_gate_stats` until the next evaluation."""
        collect_gate_stats(self.model)
        probs = predict(self.model, data, self.cfg.eval_batch_size, self.device, self.spec.outputs)
        names = [t.name for t in self.tasks]
        t = data.tensors
        return task_metrics(probs, t["labels"].numpy(), t["label_mask"].numpy(), names, groups, self.spec.kinds), probs

    # ------------------------------------------------------------------ the family
    def batches(self, epoch: int, generator: torch.Generator) -> Iterator[Batch]:
        assert self._train is not None
        n = self._train.num_batches(self.cfg.batch_size, self.world_size)
        yield from itertools.islice(
            self._train.batches(
                self.cfg.batch_size, shuffle=True, generator=generator, rank=self.rank, world_size=self.world_size
            ),
            n,
        )

    def loss(self, batch: Batch, generator: torch.Generator) -> tuple[torch.Tensor, dict[str, int]]:
        loss = self.objective(self.model(batch), batch)
        if self.cfg.embedding_l2 > 0 and self.embedding_params:
            loss = loss + self.cfg.embedding_l2 * sum(p.pow(2).sum() for p in self.embedding_params)
        return loss, {"samples": int(batch["labels"].shape[0])}

    def validate(self) -> dict[str, Any]:
        assert self._valid is not None
        valid, groups = self._valid
        collect_gate_stats(self.model)  # drop anything recorded outside validation
        metrics, _ = self.evaluate(valid, groups)
        gates = collect_gate_stats(self.model)
        record: dict[str, Any] = {"valid": metrics, "valid_score": selection_score(metrics)}
        if gates:
            record["gates"] = gates
        return record
