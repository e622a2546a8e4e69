"""The feature ranker's training: masked multi-task loss on shuffled row batches.

The trainer knows nothing about a model's parts: it calls ``model(batch) -> (B, T) raw outputs``
and ``objective(raw, batch) -> loss`` (by default :class:`ranker.tasks.MultiTaskObjective`:
BCE / MSE / Huber per task, masks, ESMM chains; distillation passes its own objective). Gate
statistics of mixture-of-experts heads (:mod:`ranker.nn.gates`) are logged per validation pass.
The step, the epoch loop, selection, checkpoints and resume are the shared
:class:`~ranker.train.engine.Engine`'s.
Data parallelism (``torchrun``, docs/distributed.md): ``train.batch_size`` is the global batch;
each of W ranks takes every W-th row of the epoch's permutation in batches of batch_size / W, so
the rows of a step are those of the one-process step. Validation is sharded: each rank scores a
contiguous 1/W of the validation rows and the scores are gathered in row order, so AUC and GAUC
are computed on the full score set (exact, not a mean of per-rank values).
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
from ranker.distributed import World, all_gather_variable, check_global_batch
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
        world: World | None = None,
        loss_fn: Callable[..., torch.Tensor] | None = None,
        objective: Objective | None = None,
    ) -> None:
        """`loss_fn(logits, labels, mask, weights)` (legacy) or `objective(raw, batch)` replace
        the default objective of `tasks`."""
        self.cfg = cfg
        self.tasks = tasks
        self.spec = TaskSpec.from_tasks(tasks)
        self.run_dir = run_dir
        self.engine = Engine(model, cfg, run_dir, device=device, world=world)
        self.model, self.device, self.optimizer = self.engine.model, self.engine.device, self.engine.optimizer
        self.rank, self.world_size = self.engine.rank, self.engine.world_size
        self.local_batch = check_global_batch(cfg.batch_size, world=self.engine.world)  # rows per rank and step
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
        n_batches = train.num_batches(self.local_batch, self.world_size)
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
        n = self._train.num_batches(self.local_batch, self.world_size)
        yield from itertools.islice(
            self._train.batches(
                self.local_batch, shuffle=True, generator=generator, rank=self.rank, world_size=self.world_size
            ),
            n,
        )

    def loss(self, batch: Batch, generator: torch.Generator) -> tuple[torch.Tensor, dict[str, int]]:
        loss = self.objective(self.model(batch), batch)
        if self.cfg.embedding_l2 > 0 and self.embedding_params:
            loss = loss + self.cfg.embedding_l2 * sum(p.pow(2).sum() for p in self.embedding_params)
        return loss, {"samples": int(batch["labels"].shape[0])}

    #: every rank validates its share of the rows (the engine broadcasts rank 0's record)
    validates_sharded = True

    def validate(self) -> dict[str, Any]:
        assert self._valid is not None
        valid, groups = self._valid
        collect_gate_stats(self.model)  # drop anything recorded outside validation
        if self.world_size > 1:
            metrics = self._sharded_metrics(valid, groups)
        else:
            metrics, _ = self.evaluate(valid, groups)
        gates = collect_gate_stats(self.model)  # with several ranks: rank 0's share of the rows
        record: dict[str, Any] = {"valid": metrics, "valid_score": selection_score(metrics, self.cfg.select_metric)}
        if gates:
            record["gates"] = gates
        return record

    def _sharded_metrics(self, data: TensorData, groups: np.ndarray | None) -> TaskMetrics:
        """Rank r scores rows [N·r/W, N·(r+1)/W); the outputs gathered in rank order are the rows
        in their order, so the metrics are those of one process scoring them all."""
        n, r, w = len(data), self.rank, self.world_size
        lo, hi = n * r // w, n * (r + 1) // w
        # Every rank scores ceil(n / w) rows (its last row repeated), so all run as many forward
        # passes: with sharded tables (kind: torchrec) each forward is a collective.
        rows = torch.arange(lo, lo + -(-n // w)).clamp_max(max(hi - 1, 0))
        share = TensorData({k: v[rows] for k, v in data.tensors.items()})
        probs = predict(self.model, share, self.cfg.eval_batch_size, self.device, self.spec.outputs)
        local = torch.from_numpy(probs).reshape(len(share), len(self.tasks)).float()[: hi - lo]
        every = all_gather_variable(local).numpy()  # (N, T)
        t = data.tensors
        names, kinds = [task.name for task in self.tasks], self.spec.kinds
        return task_metrics(every, t["labels"].numpy(), t["label_mask"].numpy(), names, groups, kinds)
