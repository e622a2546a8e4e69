"""The two stages behind ``/recommend``, ``/score`` and ``/similar``, on raw ids.

    history  = store.history(user, H)            (or the request's own history)
    stage 1  = top-n_candidates of ⟨u(history), e_j⟩ over the catalogue (faiss or exact),
               history and ``exclude`` removed; no known history → the most popular items
    stage 2  = the ranker's task probabilities p_t, combined into the serving score
               s = Σ_t w_t p_t (or Π p_t^w_t): a feature ranker on (user, candidate, context,
               history) rows, or a generative HSTU ranker on the history's item/action tokens
               with the candidates attending to it (:mod:`ranker.serving.generative`)
    answer   = top-k by s (by the stage-1 score in a retrieval-only bundle; by
               logit(s) + w · s1 in a bundle built with --stage1-weight w, s1 the
               candidate's stage-1 score: ranker.serving.bundle)

H is the longest history a model reads (the retriever's ``max_len``, the feature ranker's
history ``max_len``, the generative ranker's ``max_events − 1``). What the user has already
seen is read apart from it and is not bounded by H: every item of the request's own history,
else the distinct items of the user's last :data:`SEEN_LIMIT` events in the store
(``store.seen``). They are excluded from ``/recommend`` (unless ``exclude_history: false``) and
from the stage-1 rank a two-stage ranker reads, as the offline protocol excludes the whole
history: excluding only the last H events let items watched long ago back into the candidates
of long-history users (on TS-ML1M, 400 test users: served stage-1 HR@10 0.305 against 0.320
offline before the change). History items outside the
catalogue are kept for the ranker (its OOV row; the generative ranker's padding row) but
cannot enter the retriever; they are reported as ``unknown_items``. Everything here is
synchronous and thread-safe (the models are only read, under ``torch.inference_mode``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from ranker.errors import RankerError
from ranker.retrieval.search import exact_topk
from ranker.serving.bundle import Bundle, RankingStage
from ranker.serving.generative import GenerativeStage
from ranker.serving.store import Event, EventStore, raw_id
from ranker.tasks import serving_score
from ranker.twostage.evaluate import fuse as fuse_scores

SEEN_LIMIT = 10_000  # events whose items /recommend excludes (Redis keeps every item regardless)


class RequestError(RankerError):
    """A request the bundle cannot answer; ``field`` names the request field at fault."""

    def __init__(self, field: str, message: str, status: int = 422) -> None:
        super().__init__(f"{field}: {message}")
        self.field, self.status = field, status


@dataclass
class Query:
    """Who to recommend for: a user (history from the store) and/or an explicit history."""

    user: str | None = None
    history: list[Event] | None = None
    context: dict[str, Any] = field(default_factory=dict)
    now: float | None = None


class Recommender:
    """A loaded bundle plus the event store: the service's logic, without HTTP."""

    def __init__(self, bundle: Bundle, store: EventStore | None = None) -> None:
        self.bundle, self.store = bundle, store
        r = bundle.retrieval
        self.num_items = len(r.items)
        self.raw_items = [raw_id(v) for v in r.items.to_pylist()]
        self.index_of = {item: k + 1 for k, item in enumerate(self.raw_items)}
        self.popular = np.argsort(-r.popularity, kind="stable") + 1  # internal ids, most popular first
        self.history_len = max(int(r.model.max_len), _ranker_history(bundle))

    @property
    def version(self) -> str:
        return self.bundle.version

    # ------------------------------------------------------------------ requests

    def history_of(self, q: Query) -> list[Event]:
        if q.history is not None:
            return q.history[-self.history_len :]
        if q.user is None or self.store is None:
            return []
        return self.store.history(q.user, self.history_len)

    def seen_of(self, q: Query) -> set[str]:
        """Raw ids of the items the user has seen (module doc): not bounded by H."""
        if q.history is not None:
            return {e.item for e in q.history}
        if q.user is None or self.store is None:
            return set()
        return self.store.seen(q.user, SEEN_LIMIT)

    def recommend(
        self,
        q: Query,
        *,
        k: int,
        n_candidates: int,
        exclude: list[str],
        exclude_history: bool = True,
        filters: dict[str, list[str]] | None = None,
    ) -> dict[str, Any]:
        if k > self.num_items:
            raise RequestError("k", f"must be at most the catalogue size {self.num_items}, got {k}")
        now = q.now if q.now is not None else time.time()
        events = self.history_of(q)
        known, unknown = self._internal([e.item for e in events])
        seen, _ = self._internal(sorted(self.seen_of(q)))
        banned = {self.index_of[i] for i in exclude if i in self.index_of}
        if exclude_history:
            banned |= set(seen)
        if filters:
            banned |= set((np.flatnonzero(~self.allowed(filters)) + 1).tolist())
        n = max(k, min(n_candidates, self.num_items))
        user: torch.Tensor | None = None
        if known:
            user = self._user_vector(events, known, now)
            ids, scores = self._search(user, n, banned)
            cand, stage1 = np.asarray(ids, dtype=np.int64), np.asarray(scores, dtype=np.float64)
            fallback = None
        else:
            cand = self.popular[~np.isin(self.popular, list(banned))][:n]
            stage1 = self.bundle.retrieval.popularity[cand - 1].astype(np.float64)
            fallback = "popularity"
        rows = self._rank(q, events, cand, stage1, now, Stage1(user, seen), fuse=fallback is None)
        return {
            "user": q.user,
            "items": rows[:k],
            "fallback": fallback,
            "history_length": len(events),
            "candidates": len(cand),
            "unknown_items": unknown,
            "model_version": self.version,
        }

    def allowed(self, filters: dict[str, list[str]]) -> np.ndarray:
        """(I,) bool: catalogue items whose column value (any value of a list column) is one of
        the given raw values, for every filtered column (values compared as text)."""
        cat = self.bundle.retrieval.catalogue
        columns = [c for c in cat.column_names if c not in ("item", "popularity")]
        keep = np.ones(self.num_items, dtype=bool)
        for name, values in filters.items():
            if name not in columns:
                raise RequestError(
                    f"filters.{name}",
                    f"not an item column of this bundle (item columns: {', '.join(columns) or 'none'})",
                )
            col = cat.column(name).combine_chunks()
            wanted = pa.array(values, pa.string())
            if pa.types.is_list(col.type) or pa.types.is_large_list(col.type):
                flat = pc.cast(pc.list_flatten(col), pa.string())
                rows = np.asarray(pc.list_parent_indices(col))
                hit = np.zeros(self.num_items, dtype=bool)
                hit[rows[np.asarray(pc.fill_null(pc.is_in(flat, value_set=wanted), False))]] = True
            else:
                hit = np.asarray(pc.fill_null(pc.is_in(pc.cast(col, pa.string()), value_set=wanted), False))
            keep &= hit
        return keep

    def score(self, q: Query, items: list[str]) -> dict[str, Any]:
        """Rank the caller's candidates with the ranking stage alone (the retriever's score in a
        retrieval-only bundle, where unknown items cannot be scored and are left out)."""
        now = q.now if q.now is not None else time.time()
        events = self.history_of(q)
        if self.bundle.ranking is not None:
            known, _ = self._internal([e.item for e in events])
            user = self._user_vector(events, known, now) if known and self._needs_stage1() else None
            seen = self._internal(sorted(self.seen_of(q)))[0] if user is not None else known
            rows = self._stage2(q, events, items, None, now, Stage1(user, seen))
            _, unknown = self._internal(items)
        else:
            cand, unknown = self._internal(items)
            known, _ = self._internal([e.item for e in events])
            c = np.asarray(cand, dtype=np.int64)
            if known:
                user = self._user_vector(events, known, now)
                s = (self.bundle.retrieval.item_vectors[c] @ user[0]).double().numpy()
            else:
                s = self.bundle.retrieval.popularity[c - 1].astype(np.float64)
            rows = self._rank(q, events, c, s, now, Stage1(None, known))
        return {
            "user": q.user,
            "items": rows,
            "history_length": len(events),
            "unknown_items": unknown,
            "model_version": self.version,
        }

    def similar(self, item: str, k: int) -> dict[str, Any]:
        """The `k` items nearest to `item` by inner product of the retriever's item vectors."""
        i = self.index_of.get(item)
        if i is None:
            raise RequestError("item", f"{item!r} is not in the catalogue", status=404)
        k = min(k, self.num_items - 1)
        vec = self.bundle.retrieval.item_vectors[i : i + 1]
        ids, scores = self._search(vec, k + 1, {i})
        return {
            "item": item,
            "items": [
                {"item": self.raw_items[j - 1], "score": float(s)} for j, s in zip(ids[:k], scores[:k], strict=True)
            ],
            "model_version": self.version,
        }

    # ------------------------------------------------------------------ stages

    def _internal(self, raw: list[str]) -> tuple[list[int], list[str]]:
        known = [self.index_of[i] for i in raw if i in self.index_of]
        unknown = list(dict.fromkeys(i for i in raw if i not in self.index_of))
        return known, unknown

    @torch.inference_mode()
    def _user_vector(self, events: list[Event], known: list[int], now: float) -> torch.Tensor:
        model = self.bundle.retrieval.model
        times = [int(e.time) for e in events if e.item in self.index_of][-model.max_len :]
        x = torch.tensor(known[-model.max_len :]).unsqueeze(0)  # (1, L)
        t = torch.tensor(times).unsqueeze(0)
        q = torch.cat([t[:, 1:], torch.tensor([[int(now)]])], dim=1)  # each position's next time
        return model.user_vectors(x, t, q).float()  # (1, D)

    @torch.inference_mode()
    def _search(self, query: torch.Tensor, n: int, banned: set[int]) -> tuple[list[int], list[float]]:
        r = self.bundle.retrieval
        n = min(n, self.num_items - len(banned))  # banned holds catalogue ids only
        if n <= 0:
            return [], []
        if r.index is not None and len(banned) < self.num_items // 2:  # else exact is cheaper
            from ranker.retrieval.ann import ann_search

            scores, ids = ann_search(r.index, query.numpy(), min(n + len(banned), self.num_items))
            pairs = [(int(i), float(s)) for i, s in zip(ids[0], scores[0], strict=True) if i > 0 and i not in banned]
            if len(pairs) >= n:
                return [p[0] for p in pairs[:n]], [p[1] for p in pairs[:n]]
        mask = torch.zeros(1, self.num_items + 1, dtype=torch.bool)
        mask[0, list(banned)] = True
        s, i = exact_topk(query, r.item_vectors, n, exclude=mask)
        return i[0].tolist(), s[0].tolist()

    def _rank(
        self,
        q: Query,
        events: list[Event],
        cand: np.ndarray,
        stage1: np.ndarray,
        now: float,
        user: Stage1,
        fuse: bool = False,
    ) -> list[dict[str, Any]]:
        raw = [self.raw_items[i - 1] for i in cand]
        if self.bundle.ranking is None or not len(cand):
            order = np.argsort(-stage1, kind="stable")
            return [
                {"item": raw[j], "score": float(stage1[j]), "retrieval_score": float(stage1[j]), "probabilities": {}}
                for j in order
            ]
        return self._stage2(q, events, raw, stage1, now, user, fuse)

    def _stage2(
        self,
        q: Query,
        events: list[Event],
        items: list[str],
        stage1: np.ndarray | None,
        now: float,
        user: Stage1,
        fuse: bool = False,
    ) -> list[dict[str, Any]]:
        """The ranker's rows for `items`, best first: item, score, retrieval score, probabilities.
        `fuse` (`stage1` is the retriever's score, not the popularity fallback): with the bundle's
        stage-1 weight w the score is ``logit(s) + w · s1``."""
        st = self.bundle.ranking
        assert st is not None
        if not items:
            return []
        if isinstance(st, GenerativeStage):
            probs, scores = st.score(q.user, events, items, now)
        else:
            probs, scores = self._ranker_rows(q, events, items, now, user)
        if fuse and stage1 is not None and self.bundle.stage1_weight is not None:
            scores = fuse_scores(scores, stage1, self.bundle.stage1_weight)
        order = np.argsort(-scores, kind="stable")
        columns = probs[order].T.tolist()  # T lists of N probabilities
        by_task = [dict(zip(st.spec.names, row, strict=True)) for row in zip(*columns, strict=True)]
        first = [None] * len(items) if stage1 is None else stage1[order].tolist()
        return [
            {"item": items[j], "score": s, "retrieval_score": r, "probabilities": p}
            for j, s, r, p in zip(order.tolist(), scores[order].tolist(), first, by_task, strict=True)
        ]

    @torch.inference_mode()
    def _ranker_rows(
        self, q: Query, events: list[Event], items: list[str], now: float, user: Stage1
    ) -> tuple[np.ndarray, np.ndarray]:
        """The feature ranker's task outputs (N, T) and serving scores (N,) of `items`."""
        st = self.bundle.ranking
        assert st is not None and not isinstance(st, GenerativeStage)
        rows = np.fromiter((self.index_of.get(i, 0) - 1 for i in items), dtype=np.int64, count=len(items))
        retrieval = self._stage1_features(rows, user) if self._needs_stage1() else None
        user_row = st.users.get(q.user, {}) if q.user is not None else {}
        try:
            batch = st.candidates.encode(
                user=q.user,
                user_row={c: user_row.get(c) for c in st.user_columns},
                items=items,
                rows=rows,
                context=q.context,
                history=events,
                now=now,
                history_length=self._history_length(q, events) if "history_length" in st.derived else None,
                retrieval=retrieval,
            )
        except RankerError as exc:
            raise RequestError("context", str(exc).splitlines()[0]) from None
        probs = st.spec.outputs(st.model.score_one_user(batch))  # (N, T); the history encoded once
        scores = serving_score(probs, st.spec, st.cfg.serving.weights, st.cfg.serving.combine).numpy()
        return probs.numpy(), scores

    # ------------------------------------------------------------------ derived ranker inputs

    def _needs_stage1(self) -> bool:
        st = self.bundle.ranking
        return isinstance(st, RankingStage) and bool(st.derived & {"retrieval_score", "retrieval_rank"})

    def _history_length(self, q: Query, events: list[Event]) -> int:
        """The user's event count: the request's whole history, else the store's count."""
        if q.history is not None:
            return len(q.history)
        if q.user is not None and self.store is not None:
            return self.store.length(q.user)
        return len(events)

    @torch.inference_mode()
    def _stage1_features(self, rows: np.ndarray, user: Stage1) -> dict[str, np.ndarray]:
        """Each candidate's stage-1 score ⟨u, e_j⟩ and its rank over the catalogue without the
        history, ties against it (1 + #{j' ≠ j not in the history : s_j' ≥ s_j}), as two-stage
        training rows carry them (ranker.retrieval.candidates.score_items). NaN (the feature's
        "missing") for a user with no known history and for items outside the catalogue."""
        n = len(rows)
        if user.vector is None:
            return {"retrieval_score": np.full(n, np.nan), "retrieval_rank": np.full(n, np.nan)}
        s = (self.bundle.retrieval.item_vectors[1:] @ user.vector[0]).double().numpy()  # (I,)
        allowed = np.ones(self.num_items, dtype=bool)
        allowed[np.asarray(user.seen, dtype=np.int64) - 1] = False
        ranked = np.sort(s[allowed])
        known = rows >= 0
        score = np.where(known, s[np.maximum(rows, 0)], np.nan)
        above = len(ranked) - np.searchsorted(ranked, score[known], side="left")  # s_j' ≥ s_j, j' allowed
        rank = np.full(n, np.nan)
        rank[known] = 1 + above - allowed[rows[known]]  # an allowed candidate does not count itself
        return {"retrieval_score": score, "retrieval_rank": rank}


@dataclass(frozen=True)
class Stage1:
    """The request's user vector of the retriever (None: no known history) and the catalogue
    ids of the items the user has seen (excluded from the stage-1 rank)."""

    vector: torch.Tensor | None
    seen: list[int]


def _ranker_history(bundle: Bundle) -> int:
    """Events the bundle's ranker reads (0 without one, or without a history feature)."""
    st = bundle.ranking
    if isinstance(st, GenerativeStage):
        return st.max_history
    return st.history.max_len if st is not None and st.history is not None else 0
