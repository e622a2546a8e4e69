"""DCN-V2 cross network: explicit, bounded-degree feature crosses.

Wang et al., WWW 2021, "DCN V2: Improved Deep & Cross Network and Practical Lessons for
Web-scale Learning to Rank Systems" (arXiv:2008.13535). Each cross layer (paper eq. 1) is

    x_{l+1} = x_0 ⊙ (W_l x_l + b_l) + x_l,

so x_l is a polynomial of degree l + 1 in x_0 and L layers hold every feature cross up to
degree L + 1 (paper Section 3.1 / Theorem 1). Three parameterisations of W_l:

* full rank: W_l ∈ R^{d×d};
* low rank (Section 3.2): W_l = U_l V_lᵀ with U_l, V_l ∈ R^{d×r}, computed as U_l (V_lᵀ x_l)
  so the d×d matrix is never built (O(d·r) instead of O(d²));
* mixture of low-rank experts, "DCN-Mix" (Section 3.2):

      x_{l+1} = Σ_{i=1}^{K} G_i(x_l) E_i(x_l) + x_l,
      E_i(x_l) = x_0 ⊙ (U_l^i g(C_l^i g(V_l^iᵀ x_l)) + b_l),

  with C_l^i ∈ R^{r×r}, g a nonlinearity in the projected space, b_l shared by the experts,
  and G(x_l) = softmax(W_g x_l) over the K experts (the paper allows any gate, naming sigmoid
  and softmax; softmax is the reference-implementation choice).

Initialisation (as in the torchrec reference of the paper): every kernel (W, U, V, C) is
Glorot/Xavier-normal, per expert; biases are zero; the gate is an ``nn.Linear(d, K,
bias=False)`` with PyTorch's default init.

Deviations: with ``num_experts == 1`` the layer is the plain low-rank layer (no C, no g, no
gate), i.e. DCN-Mix's extras are only switched on with a real mixture; ``expert_activation``
therefore only matters when ``num_experts > 1``. ``expert_activation=None`` (g = identity)
keeps each expert a polynomial, which the paper does not offer but is useful for checking the
degree property.

Shape:
    x0 (*, dim) → (*, dim)

>>> import torch
>>> CrossNetV2(8, 3, rank=2, num_experts=4)(torch.zeros(5, 8)).shape
torch.Size([5, 8])
"""

from __future__ import annotations

import torch
from torch import nn

from ranker.nn.functional import check_positive
from ranker.nn.mlp import ACTIVATIONS

EXPERT_ACTIVATIONS: dict[str, type[nn.Module]] = {"tanh": nn.Tanh, **ACTIVATIONS}


class _FullRankCross(nn.Module):
    """One layer ``x_0 ⊙ (W x_l + b) + x_l`` with a dense W (d×d)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.linear = nn.Linear(dim, dim)
        nn.init.xavier_normal_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(self, x0: torch.Tensor, xl: torch.Tensor) -> torch.Tensor:
        return x0 * self.linear(xl) + xl  # (*, d)


class _LowRankCross(nn.Module):
    """One layer ``x_0 ⊙ (U (Vᵀ x_l) + b) + x_l``; ``v.weight`` is Vᵀ (r×d), ``u.weight`` U (d×r)."""

    def __init__(self, dim: int, rank: int) -> None:
        super().__init__()
        self.v = nn.Linear(dim, rank, bias=False)
        self.u = nn.Linear(rank, dim)
        nn.init.xavier_normal_(self.v.weight)
        nn.init.xavier_normal_(self.u.weight)
        nn.init.zeros_(self.u.bias)

    def forward(self, x0: torch.Tensor, xl: torch.Tensor) -> torch.Tensor:
        return x0 * self.u(self.v(xl)) + xl  # (*, d)


class _MixtureCross(nn.Module):
    """One DCN-Mix layer: K low-rank experts with nonlinearity g, mixed by a softmax gate.

    Parameters: ``u`` (K, d, r) = U^i, ``v`` (K, d, r) = V^i, ``c`` (K, r, r) = C^i,
    ``bias`` (d,) = b_l shared by the experts, ``gate`` = W_g (K×d).
    """

    def __init__(self, dim: int, rank: int, num_experts: int, activation: nn.Module) -> None:
        super().__init__()
        self.u = nn.Parameter(torch.empty(num_experts, dim, rank))
        self.v = nn.Parameter(torch.empty(num_experts, dim, rank))
        self.c = nn.Parameter(torch.empty(num_experts, rank, rank))
        self.bias = nn.Parameter(torch.zeros(dim))
        self.gate = nn.Linear(dim, num_experts, bias=False)
        self.g = activation
        with torch.no_grad():
            for i in range(num_experts):  # Glorot fans are those of each expert's matrix
                nn.init.xavier_normal_(self.u[i])
                nn.init.xavier_normal_(self.v[i])
                nn.init.xavier_normal_(self.c[i])

    def forward(self, x0: torch.Tensor, xl: torch.Tensor) -> torch.Tensor:
        h = self.g(torch.einsum("...d,kdr->...kr", xl, self.v))  # (*, K, r): g(Vᵢᵀ x_l)
        h = self.g(torch.einsum("kst,...kt->...ks", self.c, h))  # (*, K, r): g(Cᵢ h)
        h = torch.einsum("kds,...ks->...kd", self.u, h)  # (*, K, d): Uᵢ h
        experts = x0.unsqueeze(-2) * (h + self.bias)  # (*, K, d): Eᵢ(x_l)
        weights = torch.softmax(self.gate(xl), dim=-1)  # (*, K): G(x_l)
        return torch.einsum("...k,...kd->...d", weights, experts) + xl  # (*, d)


class CrossNetV2(nn.Module):
    """``num_layers`` DCN-V2 cross layers: full rank, low rank (``rank``) or a mixture of
    ``num_experts`` low-rank experts (see the module docstring for the equations).

    Args:
        dim: width d of x_0 (the concatenated field embeddings).
        num_layers: L ≥ 1; the output holds crosses up to degree L + 1.
        rank: None for a full-rank W_l, else r ≥ 1 for W_l = U_l V_lᵀ.
        num_experts: K ≥ 1; K > 1 needs ``rank`` and builds the DCN-Mix layer.
        expert_activation: g of the mixture ("tanh", "relu", "gelu", "silu"), or None for g =
            identity. Unused when K = 1.

    Shape:
        x0 (*, dim) → (*, dim)

    >>> import torch
    >>> net = CrossNetV2(4, 2)
    >>> net(torch.ones(3, 4)).shape, net.out_dim
    (torch.Size([3, 4]), 4)
    """

    def __init__(
        self,
        dim: int,
        num_layers: int,
        *,
        rank: int | None = None,
        num_experts: int = 1,
        expert_activation: str | None = "tanh",
    ) -> None:
        super().__init__()
        check_positive(dim=dim, num_layers=num_layers, rank=rank, num_experts=num_experts)
        if num_experts > 1 and rank is None:
            raise ValueError(f"{num_experts=} > 1 needs a low rank, got {rank=}")
        if expert_activation is not None and expert_activation not in EXPERT_ACTIVATIONS:
            raise ValueError(f"{expert_activation=} is not one of {sorted(EXPERT_ACTIVATIONS)} or None")
        self.dim = dim
        self.out_dim = dim
        layers: list[nn.Module] = []
        for _ in range(num_layers):
            if rank is None:
                layers.append(_FullRankCross(dim))
            elif num_experts == 1:
                layers.append(_LowRankCross(dim, rank))
            else:
                g = nn.Identity() if expert_activation is None else EXPERT_ACTIVATIONS[expert_activation]()
                layers.append(_MixtureCross(dim, rank, num_experts, g))
        self.layers = nn.ModuleList(layers)

    def forward(self, x0: torch.Tensor) -> torch.Tensor:
        xl = x0
        for layer in self.layers:
            xl = layer(x0, xl)  # (*, d)
        return xl
