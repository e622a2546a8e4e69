"""The ranker's input tensors for one request, with the catalogue's item columns encoded once.

Stage 2 (``/score``, ``/recommend``) ranks n candidates for ONE user: every row shares the
user's columns, the request's context and the history; only the item columns differ. Encoding
the n full rows with the run's :class:`~ranker.data.preprocess.Preprocessor` repeats every
shared lookup n times and every item lookup at every request. :class:`CandidateEncoder`
instead encodes

- the catalogue's item columns (``data.item_column`` and the item-owned columns of
  ``features.json``) once, when the bundle is loaded;
- the request's shared columns once per request: one row (user, context, history);

and assembles the batch key by key: item keys gathered from the catalogue's encoding by the
candidates' catalogue rows, shared keys repeated, the numerical matrix ``num`` mixed column
by column, and the history left as ONE row, (1, L), for
:meth:`~ranker.models.ranker.Ranker.score_one_user`. Every encoding is row-wise, so the batch
equals the preprocessor's encoding of the n full rows with the history on each (tested).
Candidates outside the catalogue are encoded per request, with null item features, as
:func:`~ranker.serving.features.ranker_rows` gives them. Columns the service computes
(:data:`~ranker.serving.features.DERIVED_ROLES`): the history length is a shared value; the
retrieval score and rank differ per candidate and are transformed with the fitted numerical
state of each feature that reads them (:func:`~ranker.data.numeric.apply_numeric`), straight
into their columns of ``num`` (or ``cat/`` for a ``bins`` transform).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import torch

from ranker.config.schema import CategoricalFeature, DenseFeature, Feature, MultiCategoricalFeature, NumericalFeature
from ranker.data.numeric import apply_numeric
from ranker.data.preprocess import Preprocessor
from ranker.serving.features import HistoryColumns, ranker_rows
from ranker.serving.store import Event, raw_id

NUMERIC_KEYS = ("num", "num_missing")


@dataclass(frozen=True)
class RowColumns:
    """Where each input column of the ranker comes from at request time (``features.json``)."""

    user_key: str | None
    item_key: str
    user_columns: tuple[str, ...]
    context_columns: tuple[str, ...]
    history: HistoryColumns | None
    derived: tuple[tuple[str, str], ...] = ()  # (column, role) the service computes per request


class CandidateEncoder:
    """A request's candidate rows as the ranker's batch, the catalogue's part encoded at load.

    `items` are the catalogue's raw ids (typed as the catalogue's), `item_features` its item
    columns, row for row.
    """

    def __init__(self, pre: Preprocessor, columns: RowColumns, items: pa.Array, item_features: pa.Table) -> None:
        self.pre, self.columns, self.item_type = pre, columns, items.type
        self.item_features = item_features
        self.item_keys, self.item_num = item_parts(pre.features, {columns.item_key, *item_features.column_names})
        catalogue = self._items([raw_id(v) for v in items.to_pylist()], item_features)
        self.catalogue = {k: v for k, v in catalogue.items() if k in self.item_keys}
        self.n_items = len(items)
        self.per_candidate = derived_slots(pre.features, {c: r for c, r in columns.derived if r != "history_length"})

    def encode(
        self,
        *,
        user: str | None,
        user_row: dict[str, Any],
        items: list[str],
        rows: np.ndarray,
        context: dict[str, Any],
        history: list[Event],
        now: float,
        history_length: int | None = None,
        retrieval: dict[str, np.ndarray] | None = None,
    ) -> dict[str, torch.Tensor]:
        """The batch for `items` (catalogue rows `rows`, -1 for an item outside it): n rows, the
        ``hist/`` tensors one row. `history_length` (the user's event count, default
        ``len(history)``) and `retrieval` (``{"retrieval_score" | "retrieval_rank": (n,)}``, NaN
        where unknown; missing → NaN) fill the derived columns. Bad context values raise the
        preprocessor's error."""
        n = len(items)
        c = self.columns
        length = len(history) if history_length is None else history_length
        derived = {col: (length if role == "history_length" else None) for col, role in c.derived}
        one = ranker_rows(
            user=user,
            user_key=c.user_key,
            user_row=user_row,
            items=items[:1],
            item_key=c.item_key,
            item_features=self.item_features.slice(0, 1),  # its item keys are replaced below
            context=context,
            context_columns=list(c.context_columns),
            history=history,
            hist=c.history,
            now=now,
            item_type=self.item_type,
            derived=derived,
        )
        shared = self.pre.transform(one, source="request").arrays()
        per_item = self._gather(items, rows)
        out: dict[str, np.ndarray] = {}
        for key, value in shared.items():
            if key.startswith("hist/"):
                out[key] = value  # (1, L): Ranker.score_one_user encodes it once
            elif key in per_item and key in NUMERIC_KEYS:
                mixed = np.repeat(value, n, axis=0)
                mixed[:, self.item_num] = per_item[key][:, self.item_num]
                out[key] = mixed
            elif key in per_item:
                out[key] = per_item[key]
            else:
                out[key] = np.repeat(value, n, axis=0)
        for role, slots in self.per_candidate.items():
            x = np.full(n, np.nan) if retrieval is None or role not in retrieval else retrieval[role]
            for name, slot in slots:
                v, m = apply_numeric(np.asarray(x, dtype=np.float64), self.pre.numeric[name])
                if isinstance(slot, str):
                    out[slot] = v
                else:
                    out["num"][:, slot], out["num_missing"][:, slot] = v, m
        return {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in out.items()}

    def _gather(self, items: list[str], rows: np.ndarray) -> dict[str, np.ndarray]:
        """The item keys' rows of every candidate: the catalogue's, then the unknown items' own."""
        unknown = np.flatnonzero(rows < 0)
        if not unknown.size:
            return {k: v[rows] for k, v in self.catalogue.items()}
        nulls = self.item_features.take(pa.nulls(len(unknown), pa.int64()))
        extra = self._items([items[j] for j in unknown], nulls)
        where = rows.copy()
        where[unknown] = self.n_items + np.arange(len(unknown))
        return {k: np.concatenate([v, extra[k]])[where] for k, v in self.catalogue.items()}

    def _items(self, items: list[str], item_features: pa.Table) -> dict[str, np.ndarray]:
        """Rows holding only item values (every other column null, no history), encoded."""
        c = self.columns
        table = ranker_rows(
            user=None,
            user_key=c.user_key,
            user_row=dict.fromkeys(c.user_columns),
            items=items,
            item_key=c.item_key,
            item_features=item_features,
            context={},
            context_columns=list(c.context_columns),
            history=[],
            hist=c.history,
            now=0.0,
            item_type=self.item_type,
            derived=dict.fromkeys(col for col, _ in c.derived),
        )
        return self.pre.transform(table, source="catalogue").arrays()


def derived_slots(features: list[Feature], roles: dict[str, str]) -> dict[str, list[tuple[str, int | str]]]:
    """Per derived role, where its value goes: (the feature's name, its column in ``num`` or its
    ``cat/`` key) for every numerical feature reading a column of that role."""
    slots: dict[str, list[tuple[str, int | str]]] = {}
    column = 0
    for f in features:
        if not isinstance(f, NumericalFeature):
            continue
        role = roles.get(f.column or f.name)
        if role is not None:
            slots.setdefault(role, []).append((f.name, f"cat/{f.name}" if f.transform == "bins" else column))
        if f.transform != "bins":
            column += 1
    return slots


def item_parts(features: list[Feature], item_columns: set[str]) -> tuple[set[str], np.ndarray]:
    """The batch keys read from item columns, and which columns of ``num`` are (bool (F,)).
    ``num`` / ``num_missing`` count as item keys when any of their columns is."""
    keys: set[str] = set()
    numeric: list[bool] = []
    for f in features:
        from_item = (getattr(f, "column", None) or f.name) in item_columns
        if isinstance(f, NumericalFeature) and f.transform != "bins":
            numeric.append(from_item)
        elif from_item and isinstance(f, CategoricalFeature | NumericalFeature):
            keys.add(f"cat/{f.name}")
        elif from_item and isinstance(f, MultiCategoricalFeature):
            keys |= {f"multi/{f.name}", f"multi_mask/{f.name}"}
        elif from_item and isinstance(f, DenseFeature):
            keys.add(f"dense/{f.name}")
    mask = np.array(numeric, dtype=bool)
    if mask.any():
        keys |= set(NUMERIC_KEYS)
    return keys, mask
