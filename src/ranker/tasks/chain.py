"""ESMM-style conditional chains: p(t ∧ parent) = p(parent) · p(t | parent).

Ma et al., "Entire Space Multi-Task Model" (SIGIR 2018), Eq. 1–3: the CVR head predicts
p(convert | click); it is never fitted on clicked rows alone (a biased sample) but through
pCTCVR = pCTR × pCVR against the label click ∧ convert on *every* impression. Here a task with
``conditional_on: watch`` plays pCVR and `watch` plays pCTR; chains may be longer (each task
names one earlier task), and the joint probability multiplies along the chain.

Everything is computed in log space from the logits z_i of the chain's tasks::

    log p = Σ_i log σ(z_i)                          (≤ 0)
    log(1 − p) = log1mexp(log p) = log(−expm1(log p))  or  log1p(−exp(log p))

(Mächler 2012 picks the branch at −log 2), so the joint BCE is finite and its gradient exact
even when p is within 1e-7 of 0 or 1.

Shape:
    logits (B, T), parents (T,) → joint log-probabilities (B, T) (unchained tasks: log σ(z_t))

>>> import torch
>>> z = torch.tensor([[0.0, 0.0]])
>>> joint_log_prob(z, (None, 0)).exp()  # σ(0) and σ(0)·σ(0)
tensor([[0.5000, 0.2500]])
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

_LOG_HALF = -math.log(2.0)


def chain_of(task: int, parents: Sequence[int | None]) -> list[int]:
    """`task` followed by its ancestors: [like, watch] for like conditional on watch."""
    out = [task]
    while (p := parents[out[-1]]) is not None:
        out.append(p)
    return out


def log1mexp(x: torch.Tensor) -> torch.Tensor:
    """log(1 − eˣ) for x ≤ 0, accurate on both sides of −log 2 (x is clamped to ≤ −1e-12)."""
    x = x.clamp(max=-1e-12)
    return torch.where(x > _LOG_HALF, torch.log(-torch.expm1(x)), torch.log1p(-torch.exp(x)))


def joint_log_prob(logits: torch.Tensor, parents: Sequence[int | None]) -> torch.Tensor:
    """log p(task ∧ its ancestors) per row and task: Σ over the chain of log σ(z)."""
    log_sig = F.logsigmoid(logits.float())  # (B, T)
    cols = [log_sig[:, chain_of(t, parents)].sum(1) for t in range(logits.shape[1])]
    return torch.stack(cols, 1)  # (B, T)


def joint_bce(log_p: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Elementwise −[y log p + (1 − y) log(1 − p)] from log p (no clipping of p needed)."""
    return -(labels * log_p + (1.0 - labels) * log1mexp(log_p))


def joint_labels(
    labels: torch.Tensor, mask: torch.Tensor, parents: Sequence[int | None]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Labels and mask of the joint events along each chain.

    y(t ∧ parent) = y_t · y_parent∧…; it is known where the parent's joint label is known and
    either the parent event did not happen (then the joint is 0 whatever t is) or t is known.
    Unchained tasks keep their labels and mask.
    """
    ys, ms = [], []
    for t, p in enumerate(parents):
        if p is None:
            ys.append(labels[:, t])
            ms.append(mask[:, t])
            continue
        y_par, m_par = ys[p], ms[p]  # parents come first (validated in the config)
        ys.append(labels[:, t] * mask[:, t] * y_par)
        ms.append(m_par * torch.maximum(mask[:, t], 1.0 - y_par))
    return torch.stack(ys, 1), torch.stack(ms, 1)
