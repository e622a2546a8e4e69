"""Multi-layer perceptron: the implicit-interaction backbone.

Each layer is ``Linear → (BatchNorm | LayerNorm) → activation → Dropout``. An MLP learns
feature interactions only implicitly (Beutel et al., 2018, "Latent Cross", show how poorly it
approximates even a dot product); explicit crosses come from the interaction block.

Shape:
    input (B, in_dim) → output (B, hidden[-1]) (or (B, in_dim) when `hidden` is empty)

>>> import torch
>>> MLP(8, [16, 4])(torch.zeros(2, 8)).shape
torch.Size([2, 4])
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ranker.nn.dropout import FastDropout

ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "gelu": nn.GELU, "silu": nn.SiLU}
NORMS = ("batch", "layer", "none")


def make_norm(norm: str, dim: int) -> nn.Module:
    """``BatchNorm1d``, ``LayerNorm`` or ``Identity`` over `dim` features."""
    if norm == "batch":
        return nn.BatchNorm1d(dim)
    if norm == "layer":
        return nn.LayerNorm(dim)
    if norm == "none":
        return nn.Identity()
    raise ValueError(f"{norm=} is not one of {', '.join(NORMS)}")


def make_activation(activation: str) -> nn.Module:
    """An activation from :data:`ACTIVATIONS`, by name."""
    if activation not in ACTIVATIONS:
        raise ValueError(f"{activation=} is not one of {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[activation]()


class MLP(nn.Module):
    """``Linear → norm → activation → dropout``, repeated for each width in `hidden`."""

    def __init__(
        self, in_dim: int, hidden: Sequence[int], *, dropout: float = 0.0, norm: str = "none", activation: str = "relu"
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = in_dim
        for h in hidden:
            layers.append(nn.Linear(width, h))
            if norm != "none":  # no Identity: the layers' indices (state_dict keys) stay
                layers.append(make_norm(norm, h))
            layers.append(make_activation(activation))
            if dropout > 0:
                layers.append(FastDropout(dropout))
            width = h
        self.net = nn.Sequential(*layers)
        self.out_dim = width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
