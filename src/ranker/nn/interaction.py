"""How the explicit cross network and an implicit "deep" backbone are combined.

Wang et al., WWW 2021, "DCN V2" (Section 3, Figure 2) give two structures over
x_0 = concat(fields):

* **stacked**: ``deep(cross(x_0))``; the paper's better choice in practice. An optional
  ``Linear(d, projection)`` narrows the crossed vector before the deep part, which keeps
  the first deep layer small when d (all embeddings concatenated) is wide.
* **parallel**: ``concat(cross(x_0), deep(x_0))``.

Plus **cross_only**: ``cross(x_0)``, no deep part.

The caller builds the parts (a :class:`~ranker.nn.crossnet.CrossNetV2`, and any ``nn.Module``
with an ``out_dim`` attribute such as :class:`~ranker.nn.mlp.MLP`,
:class:`~ranker.nn.blocks.ResNet` or :class:`~ranker.nn.blocks.DenseNet`); this module only
wires them. The deep part's input width must be ``projection`` (stacked, when given) or
``cross.dim`` (otherwise).

Shape:
    fields: list of (B, d_i) with Σ d_i = cross.dim → (B, out_dim), where out_dim is
    cross.dim (cross_only), deep.out_dim (stacked) or cross.dim + deep.out_dim (parallel)

>>> import torch
>>> from ranker.nn.crossnet import CrossNetV2
>>> from ranker.nn.mlp import MLP
>>> block = CrossStructure(CrossNetV2(6, 2), structure="stacked", deep=MLP(3, [5]), projection=3)
>>> block([torch.zeros(2, 4), torch.zeros(2, 2)]).shape, block.out_dim
(torch.Size([2, 5]), 5)
"""

from __future__ import annotations

import torch
from torch import nn

from ranker.nn.crossnet import CrossNetV2
from ranker.nn.functional import check_positive

STRUCTURES = ("stacked", "parallel", "cross_only")


class CrossStructure(nn.Module):
    """Cross network plus an optional deep part, ``stacked``, ``parallel`` or ``cross_only``.

    Args:
        cross: the cross network over x_0 (width ``cross.dim``).
        structure: one of ``stacked``, ``parallel``, ``cross_only``.
        deep: the implicit part (needs ``out_dim``); required unless ``cross_only``, where
            it must be None.
        projection: stacked only: width of the ``Linear(cross.dim, projection)`` applied to
            the cross output before ``deep``; None feeds the cross output directly.

    Shape:
        fields: list of (B, d_i), Σ d_i = cross.dim → (B, out_dim)
    """

    def __init__(
        self,
        cross: CrossNetV2,
        *,
        structure: str = "stacked",
        deep: nn.Module | None = None,
        projection: int | None = None,
    ) -> None:
        super().__init__()
        if structure not in STRUCTURES:
            raise ValueError(f"{structure=} is not one of {', '.join(STRUCTURES)}")
        if structure == "cross_only" and deep is not None:
            raise ValueError(f"{structure=} takes no deep part, got {type(deep).__name__}")
        deep_out = getattr(deep, "out_dim", None)
        if structure != "cross_only":
            if deep is None:
                raise ValueError(f"{structure=} needs a deep part, got deep=None")
            if not isinstance(deep_out, int):
                raise ValueError(f"deep={type(deep).__name__} has no integer out_dim ({deep_out=})")
        if projection is not None and structure != "stacked":
            raise ValueError(f"{projection=} only applies to structure='stacked', got {structure=}")
        check_positive(projection=projection)
        self.structure = structure
        self.cross = cross
        # Absent parts are Identity so that the module scripts/exports without Optional modules.
        self.deep: nn.Module = deep if deep is not None else nn.Identity()
        self.projection: nn.Module = nn.Linear(cross.dim, projection) if projection is not None else nn.Identity()
        if isinstance(deep_out, int):
            self.out_dim = deep_out if structure == "stacked" else cross.dim + deep_out
        else:
            self.out_dim = cross.dim

    def forward(self, fields: list[torch.Tensor]) -> torch.Tensor:
        x0 = torch.cat(fields, dim=-1)  # (B, d)
        crossed = self.cross(x0)  # (B, d)
        if self.structure == "stacked":
            return self.deep(self.projection(crossed))  # (B, deep.out_dim)
        if self.structure == "parallel":
            return torch.cat([crossed, self.deep(x0)], dim=-1)  # (B, d + deep.out_dim)
        return crossed  # (B, d)
