"""Residual and dense MLP blocks and the backbones built from them (implicit interactions).

* :class:`ResNetBlock` / :class:`ResNet` follow the ResNet baseline of Gorishniy et al.,
  NeurIPS 2021, "Revisiting Deep Learning Models for Tabular Data" (Section 3.2):

      ResNet(x) = Prediction(ResNetBlock(… ResNetBlock(Linear(x)))),
      ResNetBlock(x) = x + Dropout(Linear(Dropout(ReLU(Linear(BatchNorm(x)))))),
      Prediction(x) = Linear(ReLU(BatchNorm(x))).

  The backbone stops before Prediction's last Linear (the model's head owns it), so it ends
  with the final norm + activation. Deviation: only the hidden dropout is kept; the paper's
  second ("residual") dropout after the last Linear is omitted.
* :class:`DenseNetBlock` / :class:`DenseNet` carry the DenseNet idea (Huang et al., CVPR
  2017, "Densely Connected Convolutional Networks": x_l = H_l([x_0, …, x_{l-1}])) over to
  MLPs: each block appends ``growth`` new features to everything before it,
  ``concat(x, Dropout(act(Linear(norm(x)))))``.

Shape:
    ResNet: (B, in_dim) → (B, width); DenseNet: (B, in_dim) → (B, in_dim + num_blocks·growth)

>>> import torch
>>> ResNet(8, width=16, num_blocks=2, hidden=32)(torch.zeros(3, 8)).shape
torch.Size([3, 16])
>>> DenseNet(8, num_blocks=2, growth=4)(torch.zeros(3, 8)).shape
torch.Size([3, 16])
"""

from __future__ import annotations

import torch
from torch import nn

from ranker.nn.dropout import FastDropout
from ranker.nn.functional import check_positive
from ranker.nn.mlp import make_activation, make_norm


def _branch(dim: int, width: int, dropout: float, norm: str, activation: str) -> list[nn.Module]:
    """norm → Linear(dim, width) → activation → dropout: how both blocks' F begins."""
    return [make_norm(norm, dim), nn.Linear(dim, width), make_activation(activation), FastDropout(dropout)]


class ResNetBlock(nn.Module):
    """``x + F(x)``, F = norm → Linear(dim, hidden) → activation → dropout → Linear(hidden, dim).

    Shape:
        (B, dim) → (B, dim)

    >>> import torch
    >>> ResNetBlock(4, 8, norm="layer")(torch.zeros(2, 4)).shape
    torch.Size([2, 4])
    """

    def __init__(
        self, dim: int, hidden: int, *, dropout: float = 0.0, norm: str = "batch", activation: str = "relu"
    ) -> None:
        super().__init__()
        check_positive(dim=dim, hidden=hidden)
        self.f = nn.Sequential(*_branch(dim, hidden, dropout, norm, activation), nn.Linear(hidden, dim))
        self.out_dim = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.f(x)  # (B, dim)


class DenseNetBlock(nn.Module):
    """``concat(x, F(x))``, F = norm → Linear(dim, growth) → activation → dropout.

    Shape:
        (B, dim) → (B, dim + growth)

    >>> import torch
    >>> DenseNetBlock(4, 3)(torch.zeros(2, 4)).shape
    torch.Size([2, 7])
    """

    def __init__(
        self, dim: int, growth: int, *, dropout: float = 0.0, norm: str = "batch", activation: str = "relu"
    ) -> None:
        super().__init__()
        check_positive(dim=dim, growth=growth)
        self.f = nn.Sequential(*_branch(dim, growth, dropout, norm, activation))
        self.out_dim = dim + growth

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, self.f(x)], dim=-1)  # (B, dim + growth)


class ResNet(nn.Module):
    """Linear(in_dim, width) → ``num_blocks`` × :class:`ResNetBlock` → norm → activation.

    Shape:
        (B, in_dim) → (B, width)
    """

    def __init__(
        self,
        in_dim: int,
        *,
        width: int,
        num_blocks: int,
        hidden: int,
        dropout: float = 0.0,
        norm: str = "batch",
        activation: str = "relu",
    ) -> None:
        super().__init__()
        check_positive(in_dim=in_dim, width=width, num_blocks=num_blocks, hidden=hidden)
        blocks = [
            ResNetBlock(width, hidden, dropout=dropout, norm=norm, activation=activation) for _ in range(num_blocks)
        ]
        self.net = nn.Sequential(nn.Linear(in_dim, width), *blocks, make_norm(norm, width), make_activation(activation))
        self.out_dim = width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)  # (B, width)


class DenseNet(nn.Module):
    """``num_blocks`` × :class:`DenseNetBlock`, each appending ``growth`` features.

    Shape:
        (B, in_dim) → (B, in_dim + num_blocks · growth)
    """

    def __init__(
        self,
        in_dim: int,
        *,
        num_blocks: int,
        growth: int,
        dropout: float = 0.0,
        norm: str = "batch",
        activation: str = "relu",
    ) -> None:
        super().__init__()
        check_positive(in_dim=in_dim, num_blocks=num_blocks, growth=growth)
        self.net = nn.Sequential(
            *(
                DenseNetBlock(in_dim + i * growth, growth, dropout=dropout, norm=norm, activation=activation)
                for i in range(num_blocks)
            )
        )
        self.out_dim = in_dim + num_blocks * growth

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)  # (B, in_dim + num_blocks·growth)
