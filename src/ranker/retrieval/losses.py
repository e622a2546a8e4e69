"""Next-item losses for generative retrieval training: full, sampled and in-batch softmax.

Every loss takes the states of all real positions of a batch at once (targets at every
position, one pass), the item table the model scores with, and a temperature τ::

    full:      ℓ = −log softmax_j(⟨u, e_j⟩ / τ)[t],     j over the whole catalogue 1..I
    sampled:   ℓ = −log [exp(s_t) / (exp(s_t) + Σ_{n∈N, n≠t} exp(s_n))],  s = ⟨u, e⟩ / τ,
               N = ``num_negatives`` items drawn uniformly from 1..I, once per row, per
               sequence or per batch (``negatives_per``); a negative equal to the row's target
               (accidental hit) is removed from that row
    in-batch:  the candidates are the distinct targets of the batch, each logit corrected by
               −log q_j, q_j the item's share of the training targets (Yi et al., RecSys 2019:
               in-batch candidates are drawn ∝ popularity, so the correction makes the loss an
               estimate of the full softmax)

Shape: states (N, D), targets (N,) in 1..I, items (I + 1, D) with row 0 the padding item;
:class:`NextItemLoss` also takes whole sequences, states (B, L, D) and targets (B, L) with 0
where a position has no target. The mean over rows (target positions) is returned. With the
whole catalogue as negatives, the sampled loss is exactly the full softmax (a test).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ranker.config.retrieval import FullSoftmax, InBatchSoftmax, RetrievalLoss, SampledSoftmax


def full_softmax_loss(
    states: torch.Tensor, targets: torch.Tensor, items: torch.Tensor, temperature: float
) -> torch.Tensor:
    """Cross-entropy over items 1..I (the padding row never competes)."""
    logits = states @ items[1:].T / temperature  # (N, I)
    return F.cross_entropy(logits, targets - 1)


def sampled_softmax_loss(
    states: torch.Tensor, targets: torch.Tensor, items: torch.Tensor, negatives: torch.Tensor, temperature: float
) -> torch.Tensor:
    """Softmax over the target and `negatives`, shared (K,) or per row (N, K); accidental
    hits removed."""
    pos = (states * items[targets]).sum(-1, keepdim=True) / temperature  # (N, 1)
    if negatives.dim() == 1:
        neg = states @ items[negatives].T / temperature  # (N, K)
        hits = negatives.unsqueeze(0) == targets.unsqueeze(1)
    else:
        neg = torch.bmm(items[negatives], states.unsqueeze(-1)).squeeze(-1) / temperature
        hits = negatives == targets.unsqueeze(1)
    logits = torch.cat([pos, neg.masked_fill(hits, float("-inf"))], dim=1)
    return -torch.log_softmax(logits, dim=1)[:, 0].mean()


def sequence_sampled_softmax_loss(
    states: torch.Tensor, targets: torch.Tensor, items: torch.Tensor, negatives: torch.Tensor, temperature: float
) -> torch.Tensor:
    """Sampled softmax with one set of negatives per sequence.

    Shape: states (B, L, D), targets (B, L) (0 = no target), negatives (B, K). The cost is
    that of one shared set, a (B, L, D)·(B, D, K) product, while the batch sees B·K draws.
    """
    on = targets > 0
    pos = (states * items[targets]).sum(-1, keepdim=True) / temperature  # (B, L, 1)
    neg = torch.bmm(states, items[negatives].transpose(1, 2)) / temperature  # (B, L, K)
    neg = neg.masked_fill(negatives.unsqueeze(1) == targets.unsqueeze(2), float("-inf"))
    logits = torch.cat([pos, neg], dim=2)[on]  # (N, 1 + K)
    return -torch.log_softmax(logits, dim=1)[:, 0].mean()


def in_batch_softmax_loss(
    states: torch.Tensor,
    targets: torch.Tensor,
    items: torch.Tensor,
    temperature: float,
    log_q: torch.Tensor | None = None,
) -> torch.Tensor:
    """Softmax over the batch's distinct targets, minus ``log q`` (I + 1,) if given."""
    candidates, label = torch.unique(targets, return_inverse=True)  # (C,), (N,)
    logits = states @ items[candidates].T / temperature  # (N, C)
    if log_q is not None:
        logits = logits - log_q[candidates].unsqueeze(0)
    return F.cross_entropy(logits, label)


class NextItemLoss:
    """The configured loss, with its sampler state (the catalogue size, item popularity)."""

    def __init__(self, cfg: RetrievalLoss, *, num_items: int, target_counts: torch.Tensor | None = None) -> None:
        self.cfg, self.num_items = cfg, num_items
        self.log_q: torch.Tensor | None = None
        if isinstance(cfg, InBatchSoftmax) and cfg.log_q:
            if target_counts is None:
                raise ValueError("in-batch log-Q correction needs the training target counts")
            q = target_counts.double().clamp_min(1.0)
            self.log_q = torch.log(q / q.sum()).float()

    def __call__(
        self, states: torch.Tensor, targets: torch.Tensor, items: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """states (N, D) and targets (N,), or sequences (B, L, D) and (B, L) with 0 = no
        target (``negatives_per: sequence`` needs the sequences; given rows, each row is its
        own sequence)."""
        cfg = self.cfg
        if isinstance(cfg, SampledSoftmax) and cfg.negatives_per == "sequence" and states.dim() == 3:
            negatives = self._draw((len(states), cfg.num_negatives), generator, states.device)
            return sequence_sampled_softmax_loss(states, targets, items, negatives, cfg.temperature)
        if states.dim() == 3:
            on = targets > 0
            states, targets = states[on], targets[on]
        if isinstance(cfg, FullSoftmax):
            return full_softmax_loss(states, targets, items, cfg.temperature)
        if isinstance(cfg, SampledSoftmax):
            shape = (cfg.num_negatives,) if cfg.negatives_per == "batch" else (len(states), cfg.num_negatives)
            negatives = self._draw(shape, generator, states.device)
            return sampled_softmax_loss(states, targets, items, negatives, cfg.temperature)
        log_q = None if self.log_q is None else self.log_q.to(states.device)
        return in_batch_softmax_loss(states, targets, items, cfg.temperature, log_q)

    def _draw(self, shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
        return torch.randint(1, self.num_items + 1, shape, generator=generator).to(device)
