"""The numerical block of a ranker: every numerical feature → one field, by the configured encoder.

Input: ``num`` (B, F) transformed values (0 where missing) and ``num_missing`` (B, F) 0/1.
Output: (B, D) = the encoding of the values ⊕ the missing indicators, where the encoding is

- ``scalar``: the values themselves (D = 2F);
- ``piecewise_linear``: Piecewise Linear Encoding, concatenated (D = Σ T_f + F), or with ``embed`` the
  per-feature linear → ReLU embeddings, flattened (D = F·d + F) — Gorishniy et al., 2022;
- ``periodic``: PLR embeddings, flattened (D = F·d + F);
- ``linear``: per-feature linear embeddings, flattened (D = F·d + F).
"""

from __future__ import annotations

import torch
from torch import nn

from ranker.config import schema as cs
from ranker.data.layout import Layout
from ranker.errors import ConfigError
from ranker.nn.numerical import LinearEmbeddings, PeriodicEmbeddings, PiecewiseLinearEmbeddings, PiecewiseLinearEncoding


class NumericalBlock(nn.Module):
    """``encoder(num).flatten(1) ⊕ num_missing`` (the encoder may be the identity)."""

    def __init__(self, encoder: nn.Module, out_dim: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.out_dim = out_dim

    def forward(self, values: torch.Tensor, missing: torch.Tensor) -> torch.Tensor:
        """values, missing (B, F) → (B, D)."""
        encoded = self.encoder(values).flatten(1)  # (B, D - F)
        return torch.cat([encoded, missing], dim=1)  # (B, D)


def build_numerical(cfg: cs.NumericalEncoder, layout: Layout) -> NumericalBlock:
    """The block for `layout.numerical` (at least one feature)."""
    n = len(layout.numerical)
    if isinstance(cfg, cs.ScalarEncoder):
        return NumericalBlock(nn.Identity(), 2 * n)
    if isinstance(cfg, cs.PiecewiseLinearEncoder):
        edges = [torch.tensor(layout.numeric_edges[f]) for f in layout.numerical if f in layout.numeric_edges]
        if len(edges) != n:
            raise ConfigError(
                "model.encoders.numerical: PLE needs bin edges fitted by the preprocessor (ple_bins); refit the run"
            )
        if cfg.embed:
            return NumericalBlock(PiecewiseLinearEmbeddings(edges, cfg.dim), n * cfg.dim + n)
        ple = PiecewiseLinearEncoding(edges)
        return NumericalBlock(ple, ple.out_dim + n)
    if isinstance(cfg, cs.PeriodicEncoder):
        enc = PeriodicEmbeddings(n, cfg.dim, n_frequencies=cfg.n_frequencies, sigma=cfg.sigma, learned=cfg.learned)
        return NumericalBlock(enc, n * cfg.dim + n)
    return NumericalBlock(LinearEmbeddings(n, cfg.dim), n * cfg.dim + n)


def ple_settings(cfg: cs.ModelConfig) -> tuple[int | None, str]:
    """(n_bins, method) the preprocessor must fit for this model, or (None, "quantile")."""
    enc = cfg.encoders.numerical
    if isinstance(enc, cs.PiecewiseLinearEncoder):
        return enc.n_bins, enc.bins
    return None, "quantile"
