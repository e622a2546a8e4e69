"""Knowledge distillation loss (Hinton, Vinyals & Dean, 2015, "Distilling the Knowledge in a
Neural Network"), per task.

    L = α · L_hard(z_s, y) + (1 − α) · Σ_t w_t · mean_rows τ² · BCE(σ(z_s,t / τ), σ(z_T,t / τ))

z_s are the student's raw outputs, z_T the teacher's (cached for the training split as the
``teacher`` column of the batch). Binary tasks compare temperature-softened Bernoulli
distributions; the τ² factor keeps the soft gradients' scale independent of τ (Hinton et al.,
Sec. 2). Regression tasks use the squared difference of the outputs (τ does not apply). For a
chained task both models' outputs are conditional logits, compared as such. Soft terms cover
the rows where the task is labelled, or every row with ``soft_on_masked``. With α = 1 the loss
*is* the hard loss, term for term.

Shape:
    student raw (B, T), batch["teacher"] (B, T) → scalar

>>> import torch
>>> from ranker.config.schema import TaskConfig
>>> spec = TaskSpec.from_tasks([TaskConfig(name="y")])
>>> loss = DistillationObjective(MultiTaskObjective(spec), alpha=0.0, temperature=1.0)
>>> batch = {"labels": torch.ones(1, 1), "label_mask": torch.ones(1, 1), "teacher": torch.zeros(1, 1)}
>>> round(loss(torch.zeros(1, 1), batch).item(), 4)  # BCE(0.5, 0.5) = log 2
0.6931
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ranker.tasks.losses import MultiTaskObjective, masked_mean
from ranker.tasks.spec import TaskSpec


def soft_loss(student: torch.Tensor, teacher: torch.Tensor, spec: TaskSpec, temperature: float) -> torch.Tensor:
    """Elementwise soft loss (B, T): τ²·BCE of softened probabilities, or squared error."""
    tau = temperature
    targets = torch.sigmoid(teacher.float() / tau)
    bce = F.binary_cross_entropy_with_logits(student.float() / tau, targets, reduction="none") * tau**2
    if all(spec.binary):
        return bce
    is_bin = torch.tensor(spec.binary, device=student.device)
    return torch.where(is_bin, bce, (student.float() - teacher.float()).square())


class DistillationObjective:
    """α · hard objective + (1 − α) · weighted soft loss against ``batch["teacher"]``."""

    def __init__(
        self, hard: MultiTaskObjective, *, alpha: float, temperature: float, soft_on_masked: bool = False
    ) -> None:
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"{alpha=} must be in [0, 1]")
        if temperature <= 0:
            raise ValueError(f"{temperature=} must be > 0")
        self.hard, self.alpha, self.temperature = hard, alpha, temperature
        self.soft_on_masked = soft_on_masked

    def __call__(self, raw: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        hard = self.hard(raw, batch)
        if self.alpha == 1.0:
            return hard
        spec = self.hard.spec
        mask = torch.ones_like(batch["label_mask"]) if self.soft_on_masked else batch["label_mask"]
        soft = masked_mean(soft_loss(raw, batch["teacher"], spec, self.temperature), mask)  # (T,)
        weights = torch.tensor(spec.weights, device=soft.device)
        return self.alpha * hard + (1.0 - self.alpha) * (soft * weights).sum()
