"""What the model predicts: task kinds, losses, ESMM chains, distillation, serving score."""

from ranker.tasks.chain import joint_bce, joint_labels, joint_log_prob, log1mexp
from ranker.tasks.distill import DistillationObjective, soft_loss
from ranker.tasks.losses import MultiTaskObjective, elementwise_loss, masked_mean
from ranker.tasks.score import serving_score
from ranker.tasks.spec import TaskSpec

__all__ = [
    "DistillationObjective",
    "MultiTaskObjective",
    "TaskSpec",
    "elementwise_loss",
    "joint_bce",
    "joint_labels",
    "joint_log_prob",
    "log1mexp",
    "masked_mean",
    "serving_score",
    "soft_loss",
]
