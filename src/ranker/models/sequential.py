"""Sequential retrieval models: SASRec and HSTU over a user's item history.

Both share one skeleton (nanoGPT-like, top to bottom)::

    x_i   = E[s_i]·√D (+ P[pos_i])          item embedding (shared with the output) + position
    E[j]  = V[j] (+ mean_a A[a], a ∈ attrs(j))  id embedding (+ its attribute tokens' mean)
    x     = dropout(x) ⊙ valid               padding rows are zero
    h     = blocks(x)                        SASRec blocks (+ final LN) or HSTU layers
    u_i   = h_i / ‖h_i‖  (l2_normalize)      the state after s_1..s_i predicts s_{i+1}
    score(i, j) = ⟨u_i, e_j⟩,  e_j = E[j] / ‖E[j]‖ (l2_normalize)

Inputs are left-padded with item 0 (most recent item last), so the user vector is the output
at the last position. ``pos_i`` counts from the oldest item of the (truncated) input, so a
position's output depends neither on the amount of padding nor on anything after it.

Shape: items (B, L) int64 (0 = padding); times, query_times (B, L) int64 seconds or None.
``encode`` returns (B, L, D); ``item_vectors`` (I + 1, D), row 0 the padding item.

With item attributes (``data.item_attributes``) the shared table adds the mean embedding of
each item's attribute tokens to its id embedding, on the input and the output side alike: the
early, additive fusion that Xie et al. (DIF-SR, SIGIR 2022) take as the baseline of side
information in sequential recommenders. Rare items then share statistics through their brand
and categories.

Papers: Kang & McAuley, "Self-Attentive Sequential Recommendation", ICDM 2018; Zhai et al.,
"Actions Speak Louder than Words", ICML 2024 (HSTU; the input preprocessing, L2-normalised
outputs and embedding init follow its public reference for ML-1M).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Protocol

import torch
import torch.nn.functional as F
from torch import nn

from ranker.config.generative import GenerativeModel
from ranker.config.retrieval import HSTUModel, RetrievalModel, SASRecModel
from ranker.nn.hstu import HSTUConfig, HSTULayer, RelativeIndices
from ranker.nn.masks import causal_mask
from ranker.nn.sasrec import SASRecBlock, SASRecConfig

if TYPE_CHECKING:  # ranker.retrieval imports this module
    from ranker.retrieval.attributes import AttributeTokens


def positions_from_oldest(valid: torch.Tensor) -> torch.Tensor:
    """(B, L) int64: 0 at each row's first real item, counting up; 0 on padding.

    Example:
        >>> positions_from_oldest(torch.tensor([[False, True, True], [True, True, True]])).tolist()
        [[0, 0, 1], [0, 1, 2]]
    """
    first = valid.shape[1] - valid.sum(1, keepdim=True)  # (B, 1) index of the oldest real item
    return (torch.arange(valid.shape[1], device=valid.device) - first).clamp_min(0)


def hstu_layers(cfg: HSTUModel | GenerativeModel, max_len: int) -> nn.ModuleList:
    """``cfg.num_layers`` :class:`~ranker.nn.hstu.HSTULayer` over sequences of up to `max_len`
    tokens (the retrievers' and the generative ranker's stack)."""
    shared = {"dim", "linear_dim", "attention_dim", "num_heads", "dropout", "num_buckets", "attention"}
    layer = HSTUConfig(max_len=max_len, **cfg.model_dump(include=shared))  # the config's names are the layer's
    return nn.ModuleList(HSTULayer(layer) for _ in range(cfg.num_layers))


class Retriever(Protocol):
    """What evaluation, candidates and serving use of a retriever: a :class:`SequentialRetriever`
    or several of them as one (:class:`ranker.retrieval.ensemble.RetrieverEnsemble`)."""

    num_items: int
    max_len: int

    def encode(
        self, items: torch.Tensor, times: torch.Tensor | None = None, query_times: torch.Tensor | None = None
    ) -> torch.Tensor: ...

    def user_vectors(
        self, items: torch.Tensor, times: torch.Tensor | None = None, query_times: torch.Tensor | None = None
    ) -> torch.Tensor: ...

    def item_vectors(self) -> torch.Tensor: ...

    def parameters(self, recurse: bool = True) -> Iterator[nn.Parameter]: ...

    def eval(self) -> Any: ...


class SequentialRetriever(nn.Module):
    """The shared skeleton (`cfg`'s ``dim``, ``dropout``, ``l2_normalize``); subclasses implement :meth:`blocks`."""

    def __init__(
        self,
        cfg: SASRecModel | HSTUModel,
        *,
        num_items: int,
        max_len: int,
        position_embedding: bool,
        attributes: AttributeTokens | None = None,
    ) -> None:
        super().__init__()
        dim, dropout = cfg.dim, cfg.dropout
        self.num_items, self.dim, self.max_len = num_items, dim, max_len
        self.l2_normalize = cfg.l2_normalize
        self.item_embedding = _padded_embedding(num_items + 1, dim)
        self.attribute_embedding: nn.Embedding | None = None
        if attributes is not None:
            if attributes.tokens.shape[0] != num_items + 1:
                raise ValueError(f"attribute tokens for {attributes.tokens.shape[0] - 1} items, catalogue {num_items}")
            self.register_buffer("item_attributes", torch.as_tensor(attributes.tokens, dtype=torch.int64))
            self.attribute_embedding = _padded_embedding(attributes.vocabulary + 1, dim)
        self.position_embedding = nn.Embedding(max_len, dim) if position_embedding else None
        if self.position_embedding is not None:
            nn.init.trunc_normal_(self.position_embedding.weight, std=math.sqrt(1.0 / dim))
        self.input_dropout = nn.Dropout(dropout)

    def blocks(
        self,
        x: torch.Tensor,
        valid: torch.Tensor,
        positions: torch.Tensor,
        times: torch.Tensor | None,
        query_times: torch.Tensor | None,
    ) -> torch.Tensor:
        raise NotImplementedError

    def encode(
        self, items: torch.Tensor, times: torch.Tensor | None = None, query_times: torch.Tensor | None = None
    ) -> torch.Tensor:
        """(B, L) item ids → (B, L, D) states; state i scores the item after s_i."""
        if items.shape[1] > self.max_len:
            raise ValueError(f"inputs longer than max_len={self.max_len}: {items.shape[1]}")
        valid = items > 0  # (B, L)
        positions = positions_from_oldest(valid)
        x = F.embedding(items, self.item_table(), padding_idx=0) * math.sqrt(self.dim)
        if self.position_embedding is not None:
            x = x + self.position_embedding(positions)
        x = self.input_dropout(x) * valid.unsqueeze(-1)
        h = self.blocks(x, valid, positions, times, query_times)
        return F.normalize(h, dim=-1) if self.l2_normalize else h

    def user_vectors(
        self, items: torch.Tensor, times: torch.Tensor | None = None, query_times: torch.Tensor | None = None
    ) -> torch.Tensor:
        """(B, L) → (B, D): the state at the last (most recent) position."""
        return self.encode(items, times, query_times)[:, -1]

    def item_table(self) -> torch.Tensor:
        """(I + 1, D) the shared item table E: id embeddings, plus the mean of each item's
        attribute-token embeddings when the model has attributes (row 0 stays zero)."""
        w = self.item_embedding.weight
        if self.attribute_embedding is None:
            return w
        tokens: torch.Tensor = self.item_attributes  # type: ignore[assignment]  # (I + 1, A) buffer, 0 = none
        count = (tokens > 0).sum(1, keepdim=True).clamp_min(1)
        return w + self.attribute_embedding(tokens).sum(1) / count

    def item_vectors(self) -> torch.Tensor:
        """(I + 1, D) output item embeddings (the input table, L2-normalised if configured)."""
        w = self.item_table()
        return F.normalize(w, dim=-1) if self.l2_normalize else w


def _padded_embedding(rows: int, dim: int) -> nn.Embedding:
    """An embedding table with trunc-normal(0.02) rows and a zero row 0 (padding)."""
    table = nn.Embedding(rows, dim, padding_idx=0)
    nn.init.trunc_normal_(table.weight, std=0.02)
    with torch.no_grad():
        table.weight[0].zero_()
    return table


class SASRec(SequentialRetriever):
    """SASRec: learned positions, causal softmax self-attention blocks, final layer norm.

    Example:
        >>> model = SASRec(SASRecModel(dim=8, num_layers=1), num_items=20, max_len=6)
        >>> model.encode(torch.tensor([[0, 0, 3, 4, 5, 6]])).shape
        torch.Size([1, 6, 8])
    """

    def __init__(
        self, cfg: SASRecModel, *, num_items: int, max_len: int, attributes: AttributeTokens | None = None
    ) -> None:
        super().__init__(cfg, num_items=num_items, max_len=max_len, position_embedding=True, attributes=attributes)
        block = SASRecConfig(dim=cfg.dim, num_heads=cfg.num_heads, ff_dim=cfg.ff_dim, dropout=cfg.dropout)
        self.layers = nn.ModuleList(SASRecBlock(block) for _ in range(cfg.num_layers))
        self.final_norm = nn.LayerNorm(cfg.dim, eps=1e-8)

    def blocks(
        self,
        x: torch.Tensor,
        valid: torch.Tensor,
        positions: torch.Tensor,
        times: torch.Tensor | None,
        query_times: torch.Tensor | None,
    ) -> torch.Tensor:
        mask = causal_mask(valid)
        for layer in self.layers:
            x = layer(x, mask)
        return self.final_norm(x)


class HSTU(SequentialRetriever):
    """HSTU for next-item retrieval: a causal stack of :class:`~ranker.nn.hstu.HSTULayer`.

    ``query_times[i]`` is the time at which position i's prediction is asked (the next event's
    time; the request time at the last position). With ``query_time: last`` the model uses each
    position's own time instead, and no later timestamp enters at all.

    Example:
        >>> model = HSTU(HSTUModel(dim=8, num_layers=1, linear_dim=4, attention_dim=4),
        ...              num_items=20, max_len=6)
        >>> t = torch.tensor([[0, 0, 10, 20, 30, 40]])
        >>> model.encode(torch.tensor([[0, 0, 3, 4, 5, 6]]), t, t + 5).shape
        torch.Size([1, 6, 8])
    """

    def __init__(
        self, cfg: HSTUModel, *, num_items: int, max_len: int, attributes: AttributeTokens | None = None
    ) -> None:
        super().__init__(
            cfg, num_items=num_items, max_len=max_len, position_embedding=cfg.position_embedding, attributes=attributes
        )
        self.cfg = cfg
        self.layers = hstu_layers(cfg, max_len)

    def blocks(
        self,
        x: torch.Tensor,
        valid: torch.Tensor,
        positions: torch.Tensor,
        times: torch.Tensor | None,
        query_times: torch.Tensor | None,
    ) -> torch.Tensor:
        use_time = self.cfg.time_bias
        if use_time and times is None:
            raise ValueError("model.time_bias needs timestamps (this input has none)")
        if self.cfg.query_time == "last" or query_times is None:
            query_times = times
        # Real tokens are consecutive, so pos_j − pos_i = j − i: one (1, L, L) position index
        # serves the whole batch (pairs with padding are masked anyway).
        columns = torch.arange(x.shape[1], device=x.device).unsqueeze(0)  # (1, L)
        idx = RelativeIndices.build(
            max_len=self.max_len,
            num_buckets=self.cfg.num_buckets,
            positions=columns if self.cfg.position_bias else None,
            times=times if use_time else None,
            query_times=query_times if use_time else None,
        )
        # M / n of Eq. 2 computed once for every layer (n_norm=1 then skips the division)
        weight = causal_mask(valid).to(x.dtype) / self.max_len
        for layer in self.layers:
            x = layer(x, weight, idx, n_norm=1)
        return x


def build_retrieval_model(
    cfg: RetrievalModel, *, num_items: int, max_len: int, attributes: AttributeTokens | None = None
) -> SequentialRetriever:
    """The model a ``model:`` section of a retrieval config describes (with `attributes`: the
    item table fuses them, see the module docstring)."""
    if isinstance(cfg, SASRecModel):
        return SASRec(cfg, num_items=num_items, max_len=max_len, attributes=attributes)
    return HSTU(cfg, num_items=num_items, max_len=max_len, attributes=attributes)
