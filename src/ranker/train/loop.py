"""The epoch loop shared by the sequence trainers: validation-based selection, checkpoints, resume.

``fit_epochs`` runs ``train_epoch(e)`` for e = last checkpointed epoch + 1 … ``epochs``; every
``eval_every`` epochs (and at the last) it calls ``validate()``, keeps the best epoch by
``valid_score`` and stops once ``patience`` evaluations in a row brought no gain. Each epoch is
checkpointed atomically (:class:`~ranker.train.checkpoint.Checkpointer`) and appended to
``log.jsonl``; a rerun restores the last complete epoch, drops a killed epoch's log record and
continues, so it reproduces the uninterrupted run when ``train_epoch`` reseeds itself from the
epoch number. At the end the best epoch's weights are loaded into the model.

Used by :class:`ranker.retrieval.trainer.SequenceTrainer` and
:class:`ranker.generative.trainer.GenerativeTrainer`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ranker.train.checkpoint import Checkpointer, load_weights
from ranker.train.ema import WeightAverage, averaged_weights


@dataclass
class EpochState:
    """Where training stands after ``fit_epochs``: stopped epoch, best epoch and its score."""

    epoch: int
    best_epoch: int
    best_score: float


class EpochLog:
    """``log.jsonl``: one JSON record per epoch, cut back to the checkpoint on resume."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def append(self, record: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")

    def read(self, upto: int) -> list[dict[str, Any]]:
        """Records of epochs ≤ ``upto`` (a killed epoch's record is dropped from the file)."""
        if not self.path.is_file():
            return []
        records = [json.loads(x) for x in self.path.read_text().splitlines() if x.strip()]
        kept = [r for r in records if r["epoch"] <= upto]
        if len(kept) != len(records):
            self.path.write_text("".join(json.dumps(r) + "\n" for r in kept))
        return kept


def fit_epochs(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    run_dir: Path,
    *,
    epochs: int,
    patience: int,
    train_epoch: Callable[[int], dict[str, Any]],
    validate: Callable[[], dict[str, Any]],
    report: Callable[[dict[str, Any], int], None] = lambda record, best_epoch: None,
    eval_every: int = 1,
    progress: bool = False,
    select_last: bool = False,
    ema: WeightAverage | None = None,
) -> tuple[EpochState, list[dict[str, Any]]]:
    """Train with early stopping on ``validate()["valid_score"]``; (final state, epoch records).

    ``report(record, best_epoch)`` is called after each epoch's record is logged (progress lines).
    ``select_last``: no selection and no early stop; every evaluation becomes the "best", so all
    ``epochs`` run and the model ends at the last epoch's weights.
    ``ema``: a weight average that ``train_epoch`` updates after each step; ``validate()`` then
    sees the averaged weights, the average is checkpointed, and the best weights saved (and
    loaded at the end) are the average's.
    """
    ckpt = Checkpointer(run_dir)
    log = EpochLog(run_dir / "log.jsonl")
    state = ckpt.restore(model, optimizer, ema) or {
        "epoch": 0, "best_epoch": 0, "best_score": -math.inf, "bad_evals": 0}
    history = log.read(state["epoch"])
    if state["epoch"] and progress:
        print(f"resuming {run_dir} after epoch {state['epoch']}")
    for epoch in range(state["epoch"] + 1, epochs + 1):
        if state["bad_evals"] > patience:
            break
        record: dict[str, Any] = {"epoch": epoch, **train_epoch(epoch)}
        improved = False
        if epoch % eval_every == 0 or epoch == epochs:
            with averaged_weights(ema, model):
                record.update(validate())
            improved = select_last or record["valid_score"] > state["best_score"]
            if improved:
                state.update(best_epoch=epoch, best_score=record["valid_score"], bad_evals=0)
            else:
                state["bad_evals"] += 1
        history.append(record)
        log.append(record)
        report(record, state["best_epoch"])
        ckpt.save(epoch, model, optimizer,
                  {k: state[k] for k in ("best_epoch", "best_score", "bad_evals")}, is_best=improved,
                  ema=ema)
        state["epoch"] = epoch
    best = ckpt.best_path()
    if best is not None:
        load_weights(model, best)
    return EpochState(state["epoch"], state["best_epoch"], state["best_score"]), history
