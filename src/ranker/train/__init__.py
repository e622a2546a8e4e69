"""Training, evaluation, checkpoints and baselines (no model code here)."""

from ranker.train.checkpoint import Checkpointer, load_weights, save_weights
from ranker.train.engine import Engine, FitResult, pick_device
from ranker.train.evaluate import predict, selection_score, task_metrics
from ranker.train.trainer import Trainer, multitask_loss

__all__ = [
    "Checkpointer",
    "Engine",
    "FitResult",
    "Trainer",
    "load_weights",
    "multitask_loss",
    "pick_device",
    "predict",
    "save_weights",
    "selection_score",
    "task_metrics",
]
