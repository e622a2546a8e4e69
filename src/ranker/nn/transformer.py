"""A post-norm transformer encoder for short event sequences, cheap on CPU.

Vaswani et al., NeurIPS 2017, "Attention Is All You Need", the encoder layer with post-norm:

    A = softmax(Q Kᵀ / √d_h + M) V,  Q, K, V = x W_q, x W_k, x W_v   (per head; M = −∞ on padding)
    x ← LayerNorm(x + Dropout(A W_o))
    x ← LayerNorm(x + Dropout(W_2 Dropout(ReLU(W_1 x))))

The same function as ``nn.TransformerEncoderLayer(batch_first=True, norm_first=False)``, the
layer the TransAct reference builds on, with two differences chosen for speed on CPU, where
profiling TransAct on RK-ML100K (batch 1,024, 50 events, width 40) found PyTorch's layer
spending a quarter of a training step drawing Bernoulli masks:

* residual dropouts use :class:`~ranker.nn.dropout.FastDropout` (one random byte per element);
* dropout on the attention weights is a separate rate, ``attention_dropout``, default 0: with
  it the fused ``scaled_dot_product_attention`` kernel must materialise the (B, L, L) weights.

Padding is given as ``attend`` (True = a real key; ``None``: every key is real, which lets
``scaled_dot_product_attention`` take its unmasked kernel). A row whose keys are all padding
would give NaN; callers keep at least one key per row (TransAct unmasks a dummy slot).

Shape:
    x (B, L, d), attend (B, L) bool or None → (B, L, d)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ranker.nn.dropout import FastDropout


class EncoderLayer(nn.Module):
    """One post-norm self-attention + ReLU feed-forward layer."""

    def __init__(
        self, d_model: int, num_heads: int, ff_dim: int, dropout: float = 0.1, attention_dropout: float = 0.0
    ) -> None:
        super().__init__()
        if d_model % num_heads:
            raise ValueError(f"{d_model=} is not divisible by {num_heads=}")
        if not 0.0 <= attention_dropout < 1.0:
            raise ValueError(f"{attention_dropout=} is not in [0, 1)")
        self.num_heads, self.attention_dropout = num_heads, attention_dropout
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.out = nn.Linear(d_model, d_model)
        self.ff1 = nn.Linear(d_model, ff_dim)
        self.ff2 = nn.Linear(ff_dim, d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.drop = FastDropout(dropout)

    def forward(self, x: torch.Tensor, attend: torch.Tensor | None) -> torch.Tensor:
        b, length, d = x.shape
        h = self.num_heads
        q, k, v = self.qkv(x).view(b, length, 3, h, d // h).permute(2, 0, 3, 1, 4)  # 3 × (B, h, L, d_h)
        p = self.attention_dropout if self.training else 0.0
        mask = None if attend is None else attend[:, None, None, :]
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)
        a = a.transpose(1, 2).reshape(b, length, d)  # (B, L, d)
        x = self.norm1(x + self.drop(self.out(a)))
        return self.norm2(x + self.drop(self.ff2(self.drop(F.relu(self.ff1(x))))))


class Encoder(nn.Module):
    """A stack of :class:`EncoderLayer` sharing one padding mask."""

    def __init__(
        self,
        d_model: int,
        num_layers: int,
        num_heads: int,
        ff_dim: int,
        dropout: float = 0.1,
        attention_dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            EncoderLayer(d_model, num_heads, ff_dim, dropout, attention_dropout) for _ in range(num_layers)
        )

    def forward(self, x: torch.Tensor, attend: torch.Tensor | None) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x, attend)
        return x
