"""The SASRec block: causal softmax self-attention + point-wise feed-forward (Kang & McAuley, 2018).

"Self-Attentive Sequential Recommendation", ICDM 2018, Sec. III-B/C::

    S = SA(LN(X)) = softmax(Q Kᵀ / √d ⊙ causal) V,   Q, K, V = LN(X) W^{Q,K,V}
    H = X + dropout(S W^O)
    F = H + dropout(W2 · dropout(ReLU(W1 · LN(H)) ))        (point-wise FFN)

Deviation: the paper (and its public code) take the residual from the normalised input
(``LN(X) + SA(LN(X))``); this block uses the common pre-norm form ``X + SA(LN(X))``, whose
residual stream is the raw input. The model adds a final layer norm after the last block.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class SASRecConfig:
    """dim: model width D (divisible by num_heads); ff_dim: FFN inner width; dropout: on the
    attention weights, the attention output and the FFN."""

    dim: int
    num_heads: int = 1
    ff_dim: int = 50
    dropout: float = 0.2


class SASRecBlock(nn.Module):
    """One SASRec layer.

    Shape:
        x: (B, N, D); mask: (B | 1, N, N) bool, True where query i may attend key j (every
        row must allow at least one key). Returns (B, N, D).

    Example:
        >>> block = SASRecBlock(SASRecConfig(dim=8, num_heads=2, ff_dim=16))
        >>> mask = torch.ones(3, 3, dtype=torch.bool).tril()[None]
        >>> block(torch.randn(2, 3, 8), mask).shape
        torch.Size([2, 3, 8])
    """

    def __init__(self, cfg: SASRecConfig) -> None:
        super().__init__()
        if cfg.dim % cfg.num_heads:
            raise ValueError(f"dim must be divisible by num_heads, got {cfg.dim=} {cfg.num_heads=}")
        self.cfg = cfg
        self.norm1 = nn.LayerNorm(cfg.dim, eps=1e-8)
        self.qkv = nn.Linear(cfg.dim, 3 * cfg.dim)
        self.out = nn.Linear(cfg.dim, cfg.dim)
        self.norm2 = nn.LayerNorm(cfg.dim, eps=1e-8)
        self.ff1 = nn.Linear(cfg.dim, cfg.ff_dim)
        self.ff2 = nn.Linear(cfg.ff_dim, cfg.dim)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        h = self.cfg.num_heads
        q, k, v = self.qkv(self.norm1(x)).reshape(b, n, 3, h, d // h).permute(2, 0, 3, 1, 4)
        drop = self.cfg.dropout if self.training else 0.0
        attn = F.scaled_dot_product_attention(q, k, v, attn_mask=mask.unsqueeze(1), dropout_p=drop)
        x = x + self.dropout(self.out(attn.transpose(1, 2).reshape(b, n, d)))  # (B, N, D)
        ff = self.ff2(self.dropout(F.relu(self.ff1(self.norm2(x)))))
        return x + self.dropout(ff)
