"""TransAct: a small target-aware transformer over the user's recent actions.

Xia et al., KDD 2023, "TransAct: Transformer-based Realtime User Action Model for
Recommendation at Pinterest" (arXiv:2306.00248), the TransAct module. For the user's events
j = 1..L (oldest first, most recent last) and the candidate item c:

    e_j = E_item[i_j] ⊕ E_action[a_j] (⊕ τ(t_j), off by default)      (action + item embedding)
    x_j = W_e e_j + W_c E_item[c] + b  =  W [e_j ⊕ E_item[c]] + b          (early fusion)
    h_1..h_L = TransformerEncoder(x_1..x_L, key padding mask)
    u = h_{L-k+1} ⊕ … ⊕ h_L ⊕ max_j h_j                                   (read-out)

Choices (and where they differ from the paper or its reference code):

* **Width.** ``d_model`` defaults to the reference's transformer width, the event width plus
  the item width when early fusion is on (``d_item + action_dim (+ 8) + d_item``); the linear
  projection W (absent in the reference) lets another width be chosen and is written as
  ``W_e e_j + W_c c`` so serving computes ``W_e e_j`` once per user (see
  :meth:`TransActEncoder.score_candidates`).
* **Layers.** Post-norm layers with a ReLU feed-forward, the function of PyTorch's
  ``nn.TransformerEncoderLayer`` that the reference code uses, written out in
  :mod:`ranker.nn.transformer` to run about twice as fast on CPU; dropout on the attention
  weights is ``attention_dropout`` (default 0, see that module).
* **Length.** ``max_len`` keeps only the most recent events (all by default): the cost of a
  row grows with L·d² + L²·d, and with early fusion it is paid once per candidate.
* **Order.** No positional encoding, as in the paper: attention is permutation-equivariant, so
  permuting the real events permutes the h_j and leaves the max-pool unchanged; order only
  enters through which rows are "the k most recent" (and through τ when the time encoding is
  on). The optional time encoding τ(t) = Linear([t, sin 2^m t, cos 2^m t]_{m=0..3}) → 8 dims of
  ``t = log1p(hours before the example)``; off by default because the paper has none.
* **Padding.** Histories are left-padded. Padding is a masked key in every attention, its
  output rows are zeroed in the k-recent part and excluded from the max-pool (the reference
  max-pools over padding too), so padding never changes the output. An empty history would
  make every key masked, for which ``nn.MultiheadAttention`` returns NaN; one dummy slot (the
  last column) is unmasked for such rows and its output discarded: the result is all zeros.
* **Random recent mask** (training only; the paper's random time window mask). Per example
  (the reference draws one window per batch) a window is drawn and the events inside it are
  treated as padding: hidden as keys AND dropped from the read-out (otherwise the hidden
  event's own row would echo it). An ``int`` W counts events (default 2): w ~ Uniform{0..W},
  the w most recent real events are hidden; a ``float`` W is seconds: s ~ Uniform[0, W),
  events less than s seconds before the example are hidden (needs ``times``). ``None``
  disables it. Never applied in ``eval()``.
* **Serving.** With early fusion the transformer itself depends on the candidate, so only the
  event embeddings and ``W_e e_j`` are shared across candidates: scoring n candidates runs
  the transformer n times. Without it (``early_fusion=False``) the whole output is computed
  once per user, but is the same for every candidate.

**Target attention** (``early_fusion=False, target_attention=True``; not in the paper): the
history is encoded once per user, x_j = W_e e_j + b, and each candidate reads the encoded
history h_j by one softmax attention, the normalised cousin of DIN's target attention (Zhou
et al., KDD 2018, "Deep Interest Network for Click-Through Rate Prediction", eq. (3), which
sums a_j e_j with unnormalised weights from an MLP):

    α_j = softmax_j( ⟨W_q E_item[c], h_j⟩ / √d_model )   over the real events j
    u = h_{L-k+1} ⊕ … ⊕ h_L ⊕ max_j h_j ⊕ Σ_j α_j h_j                     (read-out ⊕ attention)

W_q (d_item → d_model, no bias) is the only new weight: ⟨W_q c, W_k h⟩ = cᵀ W_qᵀ W_k h is one
bilinear form, so a key projection W_k adds nothing but a factorisation, and a value
projection W_v would commute with the sum (Σ α_j W_v h_j = W_v Σ α_j h_j), which the MLP after
the encoder absorbs. Padding and the random recent mask hide events from the attention as
from the transformer; an empty history gives zeros. Serving: the transformer runs once per
user; per candidate only W_q c (d_item · d_model) and L dot products remain.

Shape:
    items, mask, actions, (times) (B, L); candidate (B, d_item) → (B, (k_recent + 1) · d_model),
    (B, (k_recent + 2) · d_model) with target attention

>>> import torch
>>> from ranker.nn.embeddings import CategoricalFields, FeatureEmbeddings
>>> table = FeatureEmbeddings(CategoricalFields({"item": "item"}, {}, {"item": 50}), 16)
>>> enc = TransActEncoder(table, "item", 4).eval()
>>> items, actions = torch.tensor([[0, 7, 9]]), torch.tensor([[0, 1, 2]])
>>> mask = torch.tensor([[False, True, True]])
>>> enc.d_model, enc(items, mask, actions, candidate=table.lookup("item", torch.tensor([3]))).shape
(40, torch.Size([1, 160]))

Serving one user: the candidate-independent part once, then every candidate.

>>> cached = enc.encode_history(items, mask, actions)
>>> enc.score_candidates(cached, table.lookup("item", torch.tensor([3, 4, 5]))).shape
torch.Size([3, 160])

History encoded once, candidates attending to it:

>>> late = TransActEncoder(table, "item", 4, early_fusion=False, target_attention=True).eval()
>>> late.d_model, late.out_dim
(24, 120)
>>> late.score_candidates(late.encode_history(items, mask, actions), table.lookup("item", torch.tensor([3, 4]))).shape
torch.Size([2, 120])
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ranker.nn.embeddings import CategoricalEncoder
from ranker.nn.functional import check_positive
from ranker.nn.history import HistoryEvents
from ranker.nn.transformer import Encoder

TIME_DIM = 8  # width of the optional time encoding τ(t)


class TimeEncoding(nn.Module):
    """τ(t) = Linear([t, sin(2^m t), cos(2^m t)] for m = 0..3) of log1p-hours t.

    Shape:
        t (*) → (*, TIME_DIM)
    """

    freqs: torch.Tensor

    def __init__(self, n_freqs: int = 4) -> None:
        super().__init__()
        self.register_buffer("freqs", 2.0 ** torch.arange(n_freqs, dtype=torch.float32), persistent=False)
        self.proj = nn.Linear(1 + 2 * n_freqs, TIME_DIM)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        angles = t.unsqueeze(-1) * self.freqs  # (*, F)
        return self.proj(torch.cat([t.unsqueeze(-1), angles.sin(), angles.cos()], dim=-1))


def hide_recent(mask: torch.Tensor, window: float | int, times: torch.Tensor | None = None) -> torch.Tensor:
    """The mask with a random recent window of each row's real events set to False.

    ``int`` window W: w ~ Uniform{0..W} per row, the w most recent real events are hidden.
    ``float`` window W (seconds): s ~ Uniform[0, W) per row, real events with
    ``expm1(times) · 3600 < s`` seconds before the example are hidden.

    Shape:
        mask (B, L) bool, times (B, L) log1p-hours → (B, L) bool
    """
    if isinstance(window, int):
        w = torch.randint(0, window + 1, (mask.shape[0], 1), device=mask.device)  # (B, 1)
        recency = mask.flip(1).cumsum(1).flip(1)  # (B, L): 1 for the most recent real event
        return mask & (recency > w)
    if times is None:
        raise ValueError(f"recent_mask={window!r} is in seconds and needs the history's times")
    seconds = torch.expm1(times) * 3600.0  # (B, L)
    s = torch.rand(mask.shape[0], 1, device=mask.device) * window  # (B, 1)
    return mask & (seconds >= s)


@dataclass
class TransActUserCache:
    """What one user's scoring reuses across candidates (see ``encode_history``)."""

    events: torch.Tensor  # (1, L, d_model): W_e e_j + b
    mask: torch.Tensor  # (1, L) bool
    output: torch.Tensor | None  # (1, (k + 1) · d_model): the read-out, without early fusion
    states: torch.Tensor | None  # (1, L, d_model): h_j, for target attention


class TransActEncoder(HistoryEvents):
    """Transformer over the events (early-fused with the candidate, or not), read out as k recent
    rows ⊕ a max-pool (⊕ the candidate's attention over the outputs with ``target_attention``)."""

    def __init__(
        self,
        items: CategoricalEncoder,
        owner: str,
        n_actions: int,
        *,
        action_dim: int = 8,
        d_model: int | None = None,
        num_layers: int = 2,
        num_heads: int = 1,
        ff_dim: int = 64,
        dropout: float = 0.1,
        k_recent: int = 3,
        time_encoding: bool = False,
        early_fusion: bool = True,
        target_attention: bool = False,
        recent_mask: float | int | None = 2,
        attention_dropout: float = 0.0,
        max_len: int | None = None,
    ) -> None:
        _check_window(recent_mask)
        if target_attention and early_fusion:
            raise ValueError(
                f"{target_attention=} reads the candidate after the transformer; it needs early_fusion=False"
            )
        check_positive(num_layers=num_layers, num_heads=num_heads, ff_dim=ff_dim, d_model=d_model, max_len=max_len)
        if k_recent < 0 or (n_actions and action_dim < 1):
            raise ValueError(f"{k_recent=} must be >= 0 and {action_dim=} >= 1 when there are actions")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"{dropout=} is not in [0, 1)")
        super().__init__(items, owner, n_actions, action_dim)
        self.k_recent, self.recent_mask, self.early_fusion = k_recent, recent_mask, early_fusion
        self.max_len = max_len
        d_item = items.dim_of(owner)
        self.time_encoding = TimeEncoding() if time_encoding else None
        event_dim = self.event_dim + (TIME_DIM if time_encoding else 0)
        self.d_model = d_model if d_model is not None else event_dim + (d_item if early_fusion else 0)
        if self.d_model % num_heads:
            raise ValueError(f"d_model={self.d_model} is not divisible by {num_heads=}")
        self.event_proj = nn.Linear(event_dim, self.d_model)  # W_e, b
        self.cand_proj = nn.Linear(d_item, self.d_model, bias=False) if early_fusion else None  # W_c
        self.query_proj = nn.Linear(d_item, self.d_model, bias=False) if target_attention else None  # W_q
        self.encoder = Encoder(self.d_model, num_layers, num_heads, ff_dim, dropout, attention_dropout)
        self.out_dim = (k_recent + 1 + target_attention) * self.d_model

    def forward(
        self,
        items: torch.Tensor,
        mask: torch.Tensor,
        actions: torch.Tensor | None = None,
        times: torch.Tensor | None = None,
        candidate: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """items, mask (bool), actions, times (B, L) log1p-hours, candidate (B, d_item)."""
        items, mask, actions, times = self._recent(items, mask, actions, times)
        if self.training and self.recent_mask is not None:
            mask = hide_recent(mask, self.recent_mask, times)
        return self._encode(self._events(items, actions, times), mask, candidate)

    def encode_history(
        self,
        items: torch.Tensor,
        mask: torch.Tensor,
        actions: torch.Tensor | None = None,
        times: torch.Tensor | None = None,
    ) -> TransActUserCache:
        """Everything that does not depend on the candidate, for ONE user (batch size 1).

        The random recent mask is never applied here (serving is evaluation).
        """
        items, mask, actions, times = self._recent(items, mask, actions, times)  # (1, L) each
        if mask.shape[0] != 1:
            raise ValueError(f"encode_history takes one user; got a batch of {mask.shape[0]}")
        events = self._events(items, actions, times)  # (1, L, d_model)
        if self.early_fusion:
            return TransActUserCache(events, mask, None, None)
        states = self._transform(events, mask, dense=bool(mask.all()))  # (1, L, d_model)
        return TransActUserCache(events, mask, self._read_out(states, mask), states)

    def score_candidates(self, cache: TransActUserCache, candidates: torch.Tensor) -> torch.Tensor:
        """The history vector for each of n candidates, equal to ``forward`` on n copies of the
        user. Early fusion: ``W_c c`` and the transformer run per candidate; target attention:
        only ``W_q c`` and the attention over the cached h_j; neither: nothing.

        Shape:
            candidates (n, d_item) → (n, out_dim)
        """
        n = candidates.shape[0]
        if cache.output is None:
            length = cache.mask.shape[1]
            events, mask = cache.events.expand(n, length, -1), cache.mask.expand(n, length)
            return self._encode(events, mask, candidates, dense=bool(cache.mask.all()))
        if cache.states is None or self.query_proj is None:
            return cache.output.expand(n, -1)
        attended = self._attend(cache.states, cache.mask, candidates)  # (n, d_model)
        return torch.cat([cache.output.expand(n, -1), attended], dim=-1)

    def _recent(
        self, items: torch.Tensor, mask: torch.Tensor, actions: torch.Tensor | None, times: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """The history cut to its ``max_len`` most recent slots (left-padded input)."""
        n = self.max_len
        if n is None:
            return items, mask, actions, times
        return (
            items[:, -n:],
            mask[:, -n:],
            None if actions is None else actions[:, -n:],
            None if times is None else times[:, -n:],
        )

    def _events(self, items: torch.Tensor, actions: torch.Tensor | None, times: torch.Tensor | None) -> torch.Tensor:
        """W_e e_j + b for every slot (padding included; it is masked later). (B, L, d_model)"""
        parts = self.event_parts(items, actions)  # (B, L, d_item), (B, L, a)
        if self.time_encoding is not None:
            if times is None:
                raise ValueError("time_encoding=True needs the history's times; the data has no times")
            parts.append(self.time_encoding(times))  # (B, L, TIME_DIM)
        return self.event_proj(torch.cat(parts, dim=-1))

    def _encode(
        self, events: torch.Tensor, mask: torch.Tensor, candidate: torch.Tensor | None, dense: bool = False
    ) -> torch.Tensor:
        """The read-out (⊕ target attention) of the (fused) events; `dense`: no slot is padding."""
        batch, length, _ = events.shape
        if length == 0:
            return events.new_zeros(batch, self.out_dim)
        if self.cand_proj is not None:
            if candidate is None:
                raise ValueError(
                    "early fusion needs the candidate item's embedding, and the model has no candidate field"
                )
            events = events + self.cand_proj(candidate).unsqueeze(1)  # (B, L, d_model)
        out = self._transform(events, mask, dense)  # (B, L, d_model)
        if self.query_proj is None:
            return self._read_out(out, mask)
        return torch.cat([self._read_out(out, mask), self._attend(out, mask, candidate)], dim=-1)

    def _transform(self, events: torch.Tensor, mask: torch.Tensor, dense: bool = False) -> torch.Tensor:
        """h_1..h_L: the transformer over the (fused) events, padding masked. (B, L, d_model)

        `dense` (the caller knows that every slot is a real event, e.g. a served history longer
        than ``max_len``): no mask at all, which lets attention take its faster unmasked kernel.
        """
        # An all-masked row would make attention NaN: let it attend to its last slot instead.
        return self.encoder(events, None if dense else _attendable(mask))

    def _attend(self, states: torch.Tensor, mask: torch.Tensor, candidate: torch.Tensor | None) -> torch.Tensor:
        """Σ_j softmax_j(⟨W_q c, h_j⟩ / √d) h_j over the real events (0 for an empty history).

        Shape:
            states (B or 1, L, d), mask (B or 1, L), candidate (B, d_item) → (B, d); a batch of 1
            history is shared by every candidate (broadcast, not copied).
        """
        if candidate is None or self.query_proj is None:
            raise ValueError(
                "target attention needs the candidate item's embedding, and the model has no candidate field"
            )
        q = self.query_proj(candidate) * self.d_model**-0.5  # (B, d)
        keys = _attendable(mask)  # (B or 1, L)
        if states.shape[0] == 1:  # one user's history: two plain matrix products, no per-row copies
            h = states[0]  # (L, d)
            weights = (q @ h.T).masked_fill(~keys, float("-inf")).softmax(-1)  # (B, L)
            attended = weights @ h  # (B, d)
        else:
            scores = (q.unsqueeze(1) @ states.transpose(1, 2)).squeeze(1)  # (B, L)
            attended = (scores.masked_fill(~keys, float("-inf")).softmax(-1).unsqueeze(1) @ states).squeeze(1)
        return attended * mask.any(1, keepdim=True).to(attended.dtype)  # empty history → 0

    def _read_out(self, out: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """k most recent rows (padding rows zeroed) ⊕ max-pool over real rows (0 if none)."""
        out = out * mask.unsqueeze(-1).to(out.dtype)  # (B, L, d)
        recent = out[:, -self.k_recent :] if self.k_recent else out[:, :0]  # (B, ≤k, d)
        missing = self.k_recent - recent.shape[1]  # histories shorter than k: zero rows
        recent = nn.functional.pad(recent, (0, 0, missing, 0)) if missing > 0 else recent
        pooled = out.masked_fill(~mask.unsqueeze(-1), float("-inf")).amax(1)  # (B, d)
        pooled = pooled.masked_fill(~mask.any(1, keepdim=True), 0.0)
        return torch.cat([recent.flatten(1), pooled], dim=-1)  # (B, (k + 1) · d)


def _attendable(mask: torch.Tensor) -> torch.Tensor:
    """The keys attention may read: the real events, or the last slot of an empty row. (B, L)"""
    length = mask.shape[1]
    last = torch.arange(length, device=mask.device) == length - 1  # (L,)
    return mask | (last & ~mask.any(1, keepdim=True))


def _check_window(window: float | int | None) -> None:
    if window is None:
        return
    if isinstance(window, bool) or not isinstance(window, int | float) or window < 0:
        raise ValueError(f"recent_mask={window!r} must be None, events (int >= 0) or seconds (float >= 0)")
