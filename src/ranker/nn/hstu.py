"""HSTU: the Hierarchical Sequential Transduction Unit (Zhai et al., ICML 2024, Eq. 1–3).

"Actions Speak Louder than Words: Trillion-Parameter Sequential Transducers for Generative
Recommendations", https://arxiv.org/abs/2402.17152. One layer computes::

    U, V, Q, K = split(φ1(f1(LN(X))))                         (Eq. 1, φ1 = SiLU)
    A(X) = φ2(Q Kᵀ + rab^{p,t}) / n  ⊙  M                    (Eq. 2, φ2 = SiLU, M the mask)
    Y(X) = X + f2(dropout(U ⊙ LN(A(X) V)))                    (Eq. 3, residual, no FFN)

``rab^{p,t}(i, j) = w^p[pos_j − pos_i] + w^t[bucket(τ_i − t_j)]``: a learned bias per relative
position and per log-scale bucket of the time between the query's time τ_i and the key's
time t_j, ``bucket(Δ) = ⌊ln(max(|Δ|, 1)) / 0.301⌋`` clamped to ``[0, num_buckets]``.

Facts taken from the paper's public reference (meta-recsys/generative-recommenders,
``research/modeling/sequential/hstu.py``), where the paper is silent:

- the input is layer-normalised (no affine) before f1, and ``LN(A V)`` has no affine either;
  f1 has no bias; dropout is applied to ``U ⊙ LN(A V)`` before f2;
- ``n`` is a constant (the padded length there); here it is ``n_norm`` given by the caller
  (the model's ``max_len``), so outputs do not depend on how much padding a batch carries;
- every layer owns its bias tables; the query time of position i is the time of the event it
  predicts (the next item's timestamp), which the caller passes as ``query_times``.

The layer takes an arbitrary boolean attention mask ``(B | 1, N, M)`` (True = may attend),
explicit positions and timestamps, so the same layer serves next-item retrieval (causal
mask) and generative ranking (interleaved item/action tokens, candidates that see the history
but not each other).

Two attention implementations compute the same function: ``reference`` (plain autograd, the
formula above line by line) and ``fused`` (one custom autograd function with a hand-written
backward that keeps only ``Q Kᵀ + rab`` for the backward instead of every intermediate).
They are tested against each other on outputs and gradients. On CPU the fused path is not
faster (0.53 vs 0.44 s per training step of the 2-layer R-ML100K model, 32 users × 200
positions, one thread): its gain is the activation memory of the backward, which only the
(B, H, N, N) scores keep.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

AttentionImpl = Literal["reference", "fused"]


def log_time_buckets(delta: torch.Tensor, num_buckets: int) -> torch.Tensor:
    """``⌊ln(max(|Δ|, 1)) / 0.301⌋`` clamped to ``[0, num_buckets]`` (the reference's buckets).

    Shape: delta (...) int or float seconds → (...) int64.

    Example:
        >>> log_time_buckets(torch.tensor([0, 1, 2, 60, 3600, -3600]), 128).tolist()
        [0, 0, 2, 13, 27, 27]
    """
    logs = delta.to(torch.float32).abs_().clamp_(min=1.0).log_().mul_(1 / 0.301)
    return logs.clamp_(max=num_buckets).long()


@dataclass(frozen=True)
class RelativeIndices:
    """Where each (query, key) pair reads the bias tables; computed once, used by every layer.

    ``position``: (B | 1, N, M) int64 in ``[0, 2·max_len − 2]``, ``key_pos − query_pos +
    max_len − 1`` clamped. ``time``: (B, N, M) int64 buckets, or None without timestamps.
    """

    position: torch.Tensor | None
    time: torch.Tensor | None

    @classmethod
    def build(
        cls,
        *,
        max_len: int,
        num_buckets: int,
        positions: torch.Tensor | None = None,
        times: torch.Tensor | None = None,
        query_times: torch.Tensor | None = None,
        query_positions: torch.Tensor | None = None,
    ) -> RelativeIndices:
        """From key positions/times (B | 1, M) and query positions/times (B | 1, N).

        Query positions default to the key positions (self-attention); query times must be
        given with times (``τ_i``; the reference uses the next event's time).
        """
        pos = None
        if positions is not None:
            qpos = positions if query_positions is None else query_positions
            rel = positions.unsqueeze(-2) - qpos.unsqueeze(-1)  # (B, N, M)
            pos = rel.clamp(-(max_len - 1), max_len - 1) + (max_len - 1)
        time = None
        if times is not None:
            if query_times is None:
                raise ValueError("times given without query_times")
            delta = query_times.unsqueeze(-1) - times.unsqueeze(-2)  # (B, N, M) exact int64
            time = log_time_buckets(delta, num_buckets)
        return cls(pos, time)


class RelativeAttentionBias(nn.Module):
    """``rab^{p,t}``: a learned scalar per relative position and per time bucket.

    Shape: indices → (B | 1, N, M) float (zeros of shape (1, 1, 1) when both are off).
    """

    def __init__(self, *, max_len: int, num_buckets: int = 128) -> None:
        super().__init__()
        self.position = nn.Parameter(torch.empty(2 * max_len - 1).normal_(0.0, 0.02))
        self.time = nn.Parameter(torch.empty(num_buckets + 1).normal_(0.0, 0.02))

    def forward(self, idx: RelativeIndices) -> torch.Tensor:
        bias = torch.zeros(1, 1, 1, device=self.position.device, dtype=self.position.dtype)
        if idx.position is not None:
            bias = bias + self.position[idx.position]
        if idx.time is not None:
            bias = bias + self.time[idx.time]
        return bias


def hstu_attention_reference(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor, mask: torch.Tensor, n_norm: int
) -> torch.Tensor:
    """``(SiLU(Q Kᵀ + rab) / n ⊙ M) V`` per head, in plain autograd.

    Shape: q (B, H, N, d_qk); k (B, H, M, d_qk); v (B, H, M, d_v); bias broadcastable to
    (B, N, M); mask (B | 1, N, M) bool, or floats: 0/1 (skips a conversion per call) or
    M / n already divided, with ``n_norm = 1`` (skips a pass over the scores per layer; the
    models divide once per forward). Returns (B, H, N, d_v).
    """
    scores = q @ k.transpose(-1, -2) + bias.unsqueeze(1)  # (B, H, N, M)
    weights = F.silu(scores)
    if n_norm != 1:
        weights = weights / n_norm
    return (weights * mask.unsqueeze(1)) @ v


class _FusedHSTUAttention(torch.autograd.Function):
    """The same function with a hand-written backward (saves S = QKᵀ + rab only).

    With σ the logistic function and W = M / n::

        A = SiLU(S) ⊙ W,  O = A V
        dV = Aᵀ dO,  dS = (dO Vᵀ) ⊙ W ⊙ σ(S)(1 + S(1 − σ(S))),  dQ = dS K,  dK = dSᵀ Q,
        d rab = Σ_heads dS (summed over broadcast dimensions).
    """

    @staticmethod
    def forward(
        ctx: Any, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor, weight: torch.Tensor
    ) -> torch.Tensor:
        scores = torch.matmul(q, k.transpose(-1, -2)).add_(bias.unsqueeze(1))  # (B, H, N, M)
        out = torch.matmul(F.silu(scores).mul_(weight.unsqueeze(1)), v)
        ctx.save_for_backward(q, k, v, bias, weight, scores)
        return out

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        q, k, v, bias, weight, scores = ctx.saved_tensors
        w = weight.unsqueeze(1)
        sig = torch.sigmoid(scores)
        attn = scores * sig * w  # A, recomputed
        grad_v = attn.transpose(-1, -2) @ grad_out
        d_silu = sig * (1 + scores * (1 - sig))
        grad_s = (grad_out @ v.transpose(-1, -2)).mul_(w).mul_(d_silu)  # (B, H, N, M)
        grad_q = grad_s @ k
        grad_k = grad_s.transpose(-1, -2) @ q
        grad_bias = None
        if ctx.needs_input_grad[3]:
            grad_bias = grad_s.sum(1)
            for dim, size in enumerate(bias.shape):
                if size == 1 and grad_bias.shape[dim] != 1:
                    grad_bias = grad_bias.sum(dim, keepdim=True)
        return grad_q, grad_k, grad_v, grad_bias, None


def hstu_attention_fused(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor, mask: torch.Tensor, n_norm: int
) -> torch.Tensor:
    """:func:`hstu_attention_reference` through :class:`_FusedHSTUAttention`. Same shapes."""
    weight = mask.to(q.dtype) if n_norm == 1 else mask.to(q.dtype) / n_norm
    return _FusedHSTUAttention.apply(q, k, v, bias.expand(-1, -1, -1).to(q.dtype), weight)


ATTENTION = {"reference": hstu_attention_reference, "fused": hstu_attention_fused}


@dataclass(frozen=True)
class HSTUConfig:
    """Hyperparameters of one HSTU layer (the reference's names in brackets).

    dim: model width D; linear_dim: d_v per head [linear_dim]; attention_dim: d_qk per head
    [attention_dim]; num_heads: H; dropout: on ``U ⊙ LN(AV)`` [linear_dropout_rate];
    max_len: positions covered by the position bias; num_buckets: time buckets (128).
    """

    dim: int
    linear_dim: int
    attention_dim: int
    num_heads: int = 1
    dropout: float = 0.2
    max_len: int = 200
    num_buckets: int = 128
    attention: AttentionImpl = "reference"
    eps: float = 1e-6


class HSTULayer(nn.Module):
    """One HSTU layer: pointwise-SiLU attention with relative bias and a gating U (Eq. 1–3).

    Shape:
        x: (B, N, D); mask: (B | 1, N, N) bool (or 0/1 floats), True where query i may
        attend key j;
        idx: :class:`RelativeIndices` for the bias; n_norm: the constant n of Eq. 2.
        Returns (B, N, D).

    Example:
        >>> layer = HSTULayer(HSTUConfig(dim=8, linear_dim=4, attention_dim=4, max_len=5))
        >>> causal = torch.ones(5, 5, dtype=torch.bool).tril()[None]
        >>> idx = RelativeIndices.build(max_len=5, num_buckets=128, positions=torch.arange(5)[None])
        >>> layer(torch.randn(2, 5, 8), causal, idx, n_norm=5).shape
        torch.Size([2, 5, 8])
    """

    def __init__(self, cfg: HSTUConfig) -> None:
        super().__init__()
        self.cfg = cfg
        h = cfg.num_heads
        self.f1 = nn.Linear(cfg.dim, h * (2 * cfg.linear_dim + 2 * cfg.attention_dim), bias=False)
        nn.init.normal_(self.f1.weight, 0.0, 0.02)
        self.f2 = nn.Linear(h * cfg.linear_dim, cfg.dim)
        nn.init.xavier_uniform_(self.f2.weight)
        self.rab = RelativeAttentionBias(max_len=cfg.max_len, num_buckets=cfg.num_buckets)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, idx: RelativeIndices, n_norm: int) -> torch.Tensor:
        c, (b, n, _) = self.cfg, x.shape
        h, dv, dqk = c.num_heads, c.linear_dim, c.attention_dim
        u, v, q, k = self.project(x)

        def heads(t: torch.Tensor, d: int) -> torch.Tensor:
            return t.reshape(b, n, h, d).transpose(1, 2)  # (B, H, N, d)

        attn = ATTENTION[c.attention](
            heads(q, dqk), heads(k, dqk), heads(v, dv), self.rab(idx), mask, n_norm
        )  # (B, H, N, dv)
        return self.output(x, u, attn.transpose(1, 2).reshape(b, n, h * dv))

    def project(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Eq. 1: ``U, V, Q, K = split(SiLU(f1(LN(X))))``. (*, D) → (*, H·dv) ×2, (*, H·dqk) ×2."""
        c = self.cfg
        uvqk = F.silu(self.f1(F.layer_norm(x, (c.dim,), eps=c.eps)))
        h, dv, dqk = c.num_heads, c.linear_dim, c.attention_dim
        return torch.split(uvqk, [h * dv, h * dv, h * dqk, h * dqk], dim=-1)

    def output(self, x: torch.Tensor, u: torch.Tensor, av: torch.Tensor) -> torch.Tensor:
        """Eq. 3: ``X + f2(dropout(U ⊙ LN(A V)))``; ``av`` (*, H·dv) with heads concatenated."""
        gated = u * F.layer_norm(av, (av.shape[-1],), eps=self.cfg.eps)
        return x + self.f2(self.dropout(gated))
