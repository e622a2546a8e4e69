"""GenerativeRanker: HSTU over one interleaved item/action sequence per user (generative ranking).

Zhai et al., "Actions Speak Louder than Words: Trillion-Parameter Sequential Transducers for
Generative Recommendations", ICML 2024, https://arxiv.org/abs/2402.17152, §2.2 and §3.4:
the ranking task is sequential transduction over ``x = (s_1..s_S, i_0, a_0, …, i_{n−1},
a_{n−1})`` with targets ``y = (∅.., a_0, ∅, a_1, ∅, …)``: the state at item token ``i_j``
predicts that item's action(s); the candidate item is part of the sequence (target-aware).
Every token is embedded by its kind (``x = E_kind[id]·√D + T[kind]``, candidates use the item
table and the item type), ``L`` HSTU layers (:mod:`ranker.nn.hstu`, Eq. 1–3) run under
:func:`ranker.nn.interleave.interleaved_mask`, and per-task towers read the final
layer-normalised state of each scored token::

    h = LN(HSTU_L ∘ … ∘ HSTU_1(dropout(x)))       (B, N, D)
    raw_t(token) = tower_t(h[token])              one logit per task (watch, like, …)

Relative position bias: static tokens sit at positions ``0..S−1``, event e's item and action
tokens at ``S + 2e`` and ``S + 2e + 1``, a candidate for event e at ``S + 2e`` (where the item
token would be). Time bias: each token's query and key time is its own event's timestamp
(static tokens take the first event's), so ``rab^t`` buckets ``t_query − t_key ≥ 0``.

M-FALCON (§3.4): :meth:`GenerativeRanker.score_candidates` appends C candidate tokens after a
user's history; the mask lets them read the history and not each other, so C candidates cost
one pass over ``N + C`` tokens (or ⌈C/m⌉ passes of ``N + m`` with micro-batches of m) instead
of C passes over ``N + 1``. By default the history's per-layer keys and values are cached
(:meth:`GenerativeRanker.history_cache`) and the candidates attend to them and to themselves
only, so C candidates cost one pass over the history plus O(C·N) attention rows, without the
C × C block that an appended pass computes and masks away. Deviation from the paper: tokens
carry ids only (no item side features).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ranker.config.generative import GenerativeModel
from ranker.models.sequential import hstu_layers
from ranker.nn.hstu import HSTULayer, RelativeIndices
from ranker.nn.interleave import ACTION, CANDIDATE, ITEM, PAD, STATIC, interleaved_mask
from ranker.nn.towers import TaskTowers, TowerSpec


@dataclass(frozen=True)
class HSTUKVCache:
    """One user's history as the HSTU layers' keys and values, for M-FALCON scoring.

    Shape: per layer K (N, H·dqk), V (N, H·dv) and the candidates' bias row (N + 1,) over the
    history tokens and the candidate itself (last entry); ``weight`` (N + 1,) = mask row / n.
    """

    keys: list[torch.Tensor]
    values: list[torch.Tensor]
    biases: list[torch.Tensor]
    weight: torch.Tensor


@dataclass(frozen=True)
class TokenVocab:
    """Embedding table sizes: ids ``1..num_*`` are real, 0 is padding."""

    num_items: int
    num_actions: int
    num_static: int


@dataclass(frozen=True)
class Tokens:
    """A batch of token sequences (padding anywhere; kind PAD marks it).

    Shape: kind, ids, event, time, position (B, N) int64; ``score`` (R,) int64 indices into
    the flattened (B·N) tokens whose outputs are wanted (item and candidate tokens).
    """

    kind: torch.Tensor
    ids: torch.Tensor
    event: torch.Tensor
    time: torch.Tensor
    position: torch.Tensor
    score: torch.Tensor

    def to(self, device: torch.device) -> Tokens:
        return Tokens(*(t.to(device) for t in (self.kind, self.ids, self.event, self.time, self.position, self.score)))


class GenerativeRanker(nn.Module):
    """Interleaved-sequence HSTU ranker with multi-task heads.

    Shape: ``forward(tokens)`` → (R, T) raw task outputs at ``tokens.score``;
    ``score_candidates(history, items, time)`` → (C, T) for one user.

    Example:
        >>> m = GenerativeRanker(GenerativeModel(dim=8, linear_dim=4, attention_dim=4),
        ...                      TokenVocab(10, 5, 3), num_tasks=2, max_tokens=16).eval()
        >>> hist = Tokens(torch.tensor([[STATIC, ITEM, ACTION]]), torch.tensor([[1, 4, 5]]),
        ...               torch.tensor([[0, 0, 0]]), torch.tensor([[100, 100, 100]]),
        ...               torch.tensor([[0, 1, 2]]), torch.tensor([], dtype=torch.long))
        >>> m.score_candidates(hist, torch.tensor([2, 3, 7]), time=200).shape
        torch.Size([3, 2])
    """

    def __init__(self, cfg: GenerativeModel, vocab: TokenVocab, *, num_tasks: int, max_tokens: int) -> None:
        super().__init__()
        self.cfg, self.max_tokens = cfg, max_tokens
        d = cfg.dim
        self.items = nn.Embedding(vocab.num_items + 1, d, padding_idx=0)
        self.actions = nn.Embedding(vocab.num_actions + 1, d, padding_idx=0)
        self.static = nn.Embedding(vocab.num_static + 1, d, padding_idx=0)
        self.types = nn.Embedding(CANDIDATE + 1, d)
        for table in (self.items, self.actions, self.static, self.types):
            nn.init.trunc_normal_(table.weight, std=0.02)
        self.layers = hstu_layers(cfg, max_tokens)
        self.input_dropout = nn.Dropout(cfg.dropout)
        self.norm = nn.LayerNorm(d)
        self.heads = TaskTowers(d, num_tasks, TowerSpec(tuple(cfg.tower_hidden), cfg.dropout))

    def embed(self, t: Tokens) -> torch.Tensor:
        """``E_kind[id]·√D + T[kind]``, zero on padding. (B, N) → (B, N, D)."""
        k, ids = t.kind, t.ids
        item_like = (k == ITEM) | (k == CANDIDATE)
        x = (
            self.items(ids.where(item_like, 0))
            + self.actions(ids.where(k == ACTION, 0))
            + self.static(ids.where(k == STATIC, 0))
        ) * math.sqrt(self.cfg.dim)
        x = x + self.types(k.where(k != CANDIDATE, ITEM))  # a candidate is an item token
        return x * (k != PAD).unsqueeze(-1)

    def attention_inputs(self, t: Tokens, queries: slice = slice(None)) -> tuple[torch.Tensor, RelativeIndices]:
        """The float mask (B, Nq, N) and bias indices of the queries ``t[:, queries]`` over all of ``t``."""
        c = self.cfg
        mask = interleaved_mask(t.kind, t.event, t.time)[:, queries].float()
        idx = RelativeIndices.build(
            max_len=self.max_tokens,
            num_buckets=c.num_buckets,
            positions=t.position if c.position_bias else None,
            query_positions=t.position[:, queries] if c.position_bias else None,
            times=t.time if c.time_bias else None,
            query_times=t.time[:, queries] if c.time_bias else None,
        )
        return mask, idx

    def encode(self, t: Tokens) -> torch.Tensor:
        """Final states (B, N, D) under the interleaved mask."""
        mask, idx = self.attention_inputs(t)  # the mask converted to float once for every layer
        x = self.input_dropout(self.embed(t))
        for layer in self.layers:
            x = layer(x, mask, idx, n_norm=self.max_tokens)
        return self.norm(x)

    def forward(self, t: Tokens) -> torch.Tensor:
        """(R, T) raw outputs (logits) at the scored tokens."""
        h = self.encode(t)
        return self.heads(h.reshape(-1, h.shape[-1])[t.score])

    @torch.no_grad()
    def score_candidates(
        self, history: Tokens, items: torch.Tensor, time: int, chunk: int | None = None, *, cached: bool = True
    ) -> torch.Tensor:
        """(C, T) raw outputs of candidate ``items`` (C,) for one user at request ``time``.

        ``history`` is one sequence (1, N) of static, item and action tokens (no padding
        needed); every candidate reads the history events before ``time`` and not the other
        candidates, so the result is the same for any ``chunk`` (micro-batch size m; None = all
        candidates at once), for any set of companions and with or without ``cached``.

        ``cached`` (default): the history is encoded once and each layer's history keys and
        values are kept (a KV cache); the candidates then attend to them and to themselves only,
        which costs O(C·N) per layer. Without it, each chunk is appended to the history and
        the whole (N + m)-token sequence is encoded (O((N + m)²) per layer, the history
        re-encoded per chunk, the candidate × candidate block computed and masked away).
        """
        if items.shape[0] == 0:
            return torch.zeros(0, len(self.heads.towers))
        step = chunk or items.shape[0]
        if cached:
            cache = self.history_cache(history, time)
            return torch.cat([self._score_cached(cache, part) for part in items.split(step)])
        return torch.cat([self(append_candidates(history, part, time)) for part in items.split(step)])

    @torch.no_grad()
    def history_cache(self, history: Tokens, time: int) -> HSTUKVCache:
        """Per layer: the history's keys and values and one candidate's bias row over them.

        Every candidate of a request sits at the same position and time, so its attention mask
        and relative bias over the history (and over itself) are one row shared by all.
        """
        n = history.kind.shape[1]
        probe = append_candidates(history, history.ids.new_zeros(1), time)  # history + 1 candidate
        mask_row, row = self.attention_inputs(probe, slice(n, n + 1))
        x = self.embed(history)
        hist_mask, hist_idx = self.attention_inputs(history)
        keys, values, biases = [], [], []
        for layer in self._hstu_layers():
            _, v, _, k = layer.project(x[0])  # (N, H·dv), (N, H·dqk)
            keys.append(k)
            values.append(v)
            biases.append(layer.rab(row).reshape(-1).expand(n + 1))  # (N + 1,)
            x = layer(x, hist_mask, hist_idx, n_norm=self.max_tokens)
        return HSTUKVCache(keys, values, biases, mask_row.reshape(-1) / self.max_tokens)

    def _hstu_layers(self) -> list[HSTULayer]:
        return [layer for layer in self.layers if isinstance(layer, HSTULayer)]

    def _score_cached(self, cache: HSTUKVCache, items: torch.Tensor) -> torch.Tensor:
        """(m, T) raw outputs of ``items`` (m,) against a :meth:`history_cache`."""
        m, n = items.shape[0], cache.weight.shape[0] - 1
        zeros = items.new_zeros(1, m)
        x = self.embed(Tokens(items.new_full((1, m), CANDIDATE), items.view(1, m), zeros, zeros, zeros, zeros[0]))[
            0
        ]  # (m, D)
        w = cache.weight
        for layer, k_h, v_h, bias in zip(self._hstu_layers(), cache.keys, cache.values, cache.biases, strict=True):
            h, dv, dqk = layer.cfg.num_heads, layer.cfg.linear_dim, layer.cfg.attention_dim
            u, v, q, k = layer.project(x)
            q, k, v = q.view(m, h, dqk), k.view(m, h, dqk), v.view(m, h, dv)
            kh, vh = k_h.view(n, h, dqk), v_h.view(n, h, dv)
            # Eq. 2 for the candidate rows: SiLU(q·k + rab) / n_norm ⊙ mask, over history and self.
            w_hist = F.silu(torch.einsum("mhd,nhd->hmn", q, kh) + bias[:n]) * w[:n]
            w_self = F.silu((q * k).sum(-1) + bias[n]) * w[n]  # (m, H)
            av = torch.einsum("hmn,nhd->mhd", w_hist, vh) + w_self.unsqueeze(-1) * v
            x = layer.output(x, u, av.reshape(m, h * dv))
        return self.heads(self.norm(x))


def append_candidates(history: Tokens, items: torch.Tensor, time: int) -> Tokens:
    """One sequence: ``history`` (1, N) followed by candidate tokens for ``items`` (m,).

    The candidates are the next event (index and position after the history's last token) at
    ``time``; ``score`` selects exactly them, in order.
    """
    m, n = items.shape[0], history.kind.shape[1]
    is_event = (history.kind == ITEM) | (history.kind == ACTION)
    next_event = int(history.event[is_event].max()) + 1 if bool(is_event.any()) else 0
    next_pos = int(history.position.max()) + 1 if n else 0

    def cat(a: torch.Tensor, tail: torch.Tensor | int) -> torch.Tensor:
        t = tail.view(1, m) if isinstance(tail, torch.Tensor) else a.new_full((1, m), tail)
        return torch.cat([a, t], dim=1)

    return Tokens(
        cat(history.kind, CANDIDATE),
        cat(history.ids, items),
        cat(history.event, next_event),
        cat(history.time, time),
        cat(history.position, next_pos),
        torch.arange(n, n + m, device=items.device),
    )
