"""Fit the feature transforms on the train split and apply them identically everywhere after.

:class:`Preprocessor` turns an arrow table into columnar numpy arrays keyed by feature
(see :class:`Encoded`); its state (vocabularies, numerical statistics) is plain JSON saved in
the run directory, so serving encodes a row exactly as training did.

Numerical transforms and their missing / infinite-value contract live in
:mod:`ranker.data.numeric`. Categorical ids come in two modes, chosen by the model's encoder:

- ``ids="vocab"``: train vocabulary ids (0 pad, 1 OOV, 2 missing, 3.. known) for plain tables;
- ``ids="hash"``: the raw value as a stable int64 (integers as they are, strings through
  :func:`ranker.hashing.stable_string_hash`, missing → :data:`MISSING_RAW`) for the hashing
  trick and Unified Embeddings, so values first seen after training still get their own rows.

Bags and histories always come with a mask (``multi_mask/<f>``, ``hist/<h>/mask``): in hash mode
0 is a legitimate value, so padding cannot be told from the ids.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import TypeAdapter

from ranker.config.schema import (
    CategoricalFeature,
    DataConfig,
    DenseFeature,
    Feature,
    HistoryFeature,
    MultiCategoricalFeature,
    NumericalFeature,
    TaskConfig,
)
from ranker.data.layout import Layout
from ranker.data.numeric import NumericState, apply_numeric, fit_numeric, fit_ple_edges
from ranker.data.vocab import PAD, Vocabulary, normalise
from ranker.errors import ConfigError, DataError
from ranker.hashing import stable_string_hash

MISSING_RAW = -0x5EED_0F_0BAD_C0DE  # the raw id of a missing value in hash mode


@dataclass
class Encoded:
    """One split, encoded: arrays keyed by role. N rows.

    - ``cat[name]`` (N,) int64 ids; ``multi[name]`` (N, L) int64 ids, ``multi_mask[name]``
      (N, L) bool (True = a value, False = padding)
    - ``num`` (N, F_num) float32 transformed values; ``num_missing`` (N, F_num) float32 0/1
    - ``dense[name]`` (N, D) float32
    - ``hist[name]`` dict with ``items`` (N, L) int64, ``mask`` (N, L) bool, ``actions`` (N, L)
      int64 and ``times`` (N, L) float32 (log1p hours before), left-padded, most recent last
    - ``labels`` (N, T) float32, ``label_mask`` (N, T) float32
    """

    n: int
    cat: dict[str, np.ndarray] = field(default_factory=dict)
    multi: dict[str, np.ndarray] = field(default_factory=dict)
    multi_mask: dict[str, np.ndarray] = field(default_factory=dict)
    num: np.ndarray | None = None
    num_missing: np.ndarray | None = None
    dense: dict[str, np.ndarray] = field(default_factory=dict)
    hist: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    labels: np.ndarray | None = None
    label_mask: np.ndarray | None = None

    def arrays(self) -> dict[str, np.ndarray]:
        """Flat ``{key: array}`` view used to build tensors (keys like ``cat/user_id``)."""
        out: dict[str, np.ndarray] = {}
        out.update({f"cat/{k}": v for k, v in self.cat.items()})
        out.update({f"multi/{k}": v for k, v in self.multi.items()})
        out.update({f"multi_mask/{k}": v for k, v in self.multi_mask.items()})
        out.update({f"dense/{k}": v for k, v in self.dense.items()})
        for name, parts in self.hist.items():
            out.update({f"hist/{name}/{p}": v for p, v in parts.items()})
        for key in ("num", "num_missing", "labels", "label_mask"):
            val = getattr(self, key)
            if val is not None:
                out[key] = val
        return out


class Preprocessor:
    """Feature transforms fitted on train (vocabularies, numerical statistics)."""

    def __init__(
        self,
        features: list[Feature],
        tasks: list[TaskConfig],
        *,
        ids: str = "vocab",
        ple_bins: int | None = None,
        ple_method: str = "quantile",
    ) -> None:
        if ids not in ("vocab", "hash"):
            raise ValueError(f"{ids=} is not 'vocab' or 'hash'")
        self.features = list(features)
        self.tasks = list(tasks)
        self.ids, self.ple_bins, self.ple_method = ids, ple_bins, ple_method
        self.vocabs: dict[str, Vocabulary] = {}
        self.numeric: dict[str, NumericState] = {}
        self.action_vocabs: dict[str, Vocabulary] = {}
        _check_references(self.features)

    # ------------------------------------------------------------------ fit
    def fit(self, table: pa.Table, *, source: str = "train") -> Preprocessor:
        """Fit every vocabulary and numerical statistic on `table` (the train split only)."""
        _check_columns(table, self.features, self.tasks, source)
        for f in self.features:
            if isinstance(f, CategoricalFeature | MultiCategoricalFeature) and f.vocab_from is None:
                self.vocabs[f.name] = Vocabulary.fit(
                    _vocab_input(table, f, source),
                    f.min_count,
                    source=f"{source}: column {_col(f)!r} (feature {f.name!r})",
                )
            elif isinstance(f, NumericalFeature):
                x = _float_column(table, _col(f), source)
                if len(x) and not np.isfinite(x).any():
                    raise DataError(
                        f"{source}: column {_col(f)!r} (feature {f.name!r}) has no finite value in "
                        f"{len(x)} rows; drop the feature or fix the column"
                    )
                state = self.numeric[f.name] = fit_numeric(x, f)
                if self.ple_bins and f.transform != "bins":
                    values, missing = apply_numeric(x, state)
                    missing = np.maximum(missing, np.isinf(x))  # ±inf rows place no edge either
                    target = (
                        _task_labels(table, self.tasks, source)
                        if self.ple_method == "tree_all"
                        else _first_label(table, self.tasks, source)
                    )
                    state.ple_edges = fit_ple_edges(values, missing, self.ple_bins, self.ple_method, target)
            elif isinstance(f, HistoryFeature) and f.action_column is not None:
                acts = _list_column(table, f.action_column, source).flatten()
                self.action_vocabs[f.name] = Vocabulary.fit(acts, source=f"{source}: column {f.action_column!r}")
        return self

    def vocab_values(self, table: pa.Table, *, source: str = "train") -> dict[str, pa.Array]:
        """The values each vocabulary :meth:`fit` learns, flat: ``name`` for a categorical or bag
        feature (no ``vocab_from``), ``action:name`` for a history's actions (streamed fitting
        counts them chunk by chunk, :class:`~ranker.data.vocab.VocabCounter`)."""
        out: dict[str, pa.Array] = {}
        for f in self.features:
            if isinstance(f, CategoricalFeature | MultiCategoricalFeature) and f.vocab_from is None:
                out[f.name] = _vocab_input(table, f, source)
            elif isinstance(f, HistoryFeature) and f.action_column is not None:
                out[f"action:{f.name}"] = _list_column(table, f.action_column, source).flatten()
        return out

    def set_vocabularies(self, vocabs: dict[str, Vocabulary]) -> None:
        """Replace fitted vocabularies, keyed as :meth:`vocab_values` keys them."""
        for key, vocab in vocabs.items():
            if key.startswith("action:"):
                self.action_vocabs[key.removeprefix("action:")] = vocab
            else:
                self.vocabs[key] = vocab

    def min_count(self, key: str) -> int:
        """``min_count`` of the feature behind a :meth:`vocab_values` key (1 for actions)."""
        f = None if key.startswith("action:") else self._feature(key)
        return int(getattr(f, "min_count", 1) or 1)

    # ------------------------------------------------------------------ transform
    def transform(self, table: pa.Table, *, source: str = "data") -> Encoded:
        """Encode `table` with the fitted state; unseen categories map to the OOV id."""
        _check_columns(table, self.features, self.tasks, source)
        enc = Encoded(n=table.num_rows)
        nums, missing = [], []
        for f in self.features:
            where = f"{source}: column {_col(f)!r} (feature {f.name!r})"
            if isinstance(f, CategoricalFeature):
                enc.cat[f.name] = self._ids(table.column(_col(f)), self.vocab_of(f), where)
            elif isinstance(f, MultiCategoricalFeature):
                lists = _bags(table, f, source)
                enc.multi[f.name] = self._pad_ids(lists, self.vocab_of(f), f.max_len, where, "right")
                enc.multi_mask[f.name] = _pad_values(
                    lists, np.ones(len(lists.flatten()), dtype=bool), f.max_len, "right"
                )
            elif isinstance(f, NumericalFeature):
                v, m = apply_numeric(_float_column(table, _col(f), source), self.numeric[f.name])
                if f.transform == "bins":
                    enc.cat[f.name] = v  # the bin id is a categorical value
                else:
                    nums.append(v)
                    missing.append(m)
            elif isinstance(f, DenseFeature):
                enc.dense[f.name] = _dense(table, f, source)
            elif isinstance(f, HistoryFeature):
                enc.hist[f.name] = self._history(table, f, source)
        if nums:
            enc.num = np.stack(nums, axis=1).astype(np.float32)
            enc.num_missing = np.stack(missing, axis=1).astype(np.float32)
        if self.tasks:
            enc.labels, enc.label_mask = _labels(table, self.tasks, source)
        return enc

    def vocab_of(self, f: CategoricalFeature | MultiCategoricalFeature | str) -> Vocabulary:
        name = f if isinstance(f, str) else (f.vocab_from or f.name)
        return self.vocabs[name]

    def _ids(self, column: pa.Array | pa.ChunkedArray, vocab: Vocabulary, where: str) -> np.ndarray:
        """(N,) int64: vocabulary ids, or raw stable ids in hash mode."""
        if self.ids == "vocab":
            return vocab.lookup(column, source=where)
        return raw_ids(column, vocab.dtype, where)

    def _pad_ids(self, lists: pa.ListArray, vocab: Vocabulary, max_len: int, where: str, side: str) -> np.ndarray:
        flat = self._ids(lists.flatten(), vocab, where)
        return _pad_values(lists, flat, max_len, side).astype(np.int64)

    def _history(self, table: pa.Table, f: HistoryFeature, source: str) -> dict[str, np.ndarray]:
        items = _list_column(table, f.item_column, source)
        out = {
            "items": self._pad_ids(
                items, self.vocab_of(f.item_feature), f.max_len, f"{source}: column {f.item_column!r}", "left"
            ),
            "mask": _pad_values(items, np.ones(len(items.flatten()), dtype=bool), f.max_len, "left"),
        }
        if f.action_column is not None:
            acts = _list_column(table, f.action_column, source)
            _check_same_lengths(items, acts, f, f.action_column, source)
            ids = self.action_vocabs[f.name].lookup(acts.flatten(), source=f"{source}: column {f.action_column!r}")
            out["actions"] = _pad_values(acts, ids, f.max_len, "left").astype(np.int64)
        if f.time_column is not None:
            secs = _list_column(table, f.time_column, source)
            _check_same_lengths(items, secs, f, f.time_column, source)
            flat = np.asarray(pc.cast(secs.flatten(), pa.float64()).to_numpy(zero_copy_only=False))
            hours = np.log1p(np.clip(np.nan_to_num(flat, nan=0.0), 0, None) / 3600.0)
            out["times"] = _pad_values(secs, hours.astype(np.float32), f.max_len, "left")
        return out

    # ------------------------------------------------------------------ layout / state
    def layout(self) -> Layout:
        cat = {f.name: f.vocab_from or f.name for f in self.features if isinstance(f, CategoricalFeature)}
        cat.update({f.name: f.name for f in self.features if isinstance(f, NumericalFeature) and f.transform == "bins"})
        sizes = {k: v.size for k, v in self.vocabs.items()}
        sizes.update({k: s.n_bin_ids for k, s in self.numeric.items() if s.transform == "bins"})
        multi = {f.name: f.vocab_from or f.name for f in self.features if isinstance(f, MultiCategoricalFeature)}
        hist = {
            f.name: {
                "item_vocab": self.vocab_of(f.item_feature)
                and (self._feature(f.item_feature).vocab_from or f.item_feature),  # type: ignore[union-attr]
                "n_actions": self.action_vocabs[f.name].size if f.name in self.action_vocabs else 0,
                "max_len": f.max_len,
                "has_time": f.time_column is not None,
            }
            for f in self.features
            if isinstance(f, HistoryFeature)
        }
        return Layout(
            categorical=cat,
            multi=multi,
            vocab_sizes=sizes,
            numerical=[f.name for f in self.features if isinstance(f, NumericalFeature) and f.transform != "bins"],
            dense={f.name: f.dim for f in self.features if isinstance(f, DenseFeature)},
            history=hist,
            tasks=[t.name for t in self.tasks],
            ids=self.ids,
            numeric_edges={k: s.ple_edges for k, s in self.numeric.items() if s.ple_edges},
        )

    def _feature(self, name: str) -> Feature:
        return next(f for f in self.features if f.name == name)

    def state_dict(self) -> dict[str, Any]:
        return {
            "features": [f.model_dump(mode="json") for f in self.features],
            "tasks": [t.model_dump(mode="json") for t in self.tasks],
            "vocabs": {k: v.to_state() for k, v in self.vocabs.items()},
            "action_vocabs": {k: v.to_state() for k, v in self.action_vocabs.items()},
            "numeric": {k: v.to_state() for k, v in self.numeric.items()},
            "ids": self.ids,
            "ple_bins": self.ple_bins,
            "ple_method": self.ple_method,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Preprocessor:
        adapter = TypeAdapter(list[Feature])
        pre = cls(
            adapter.validate_python(state["features"]),
            [TaskConfig.model_validate(t) for t in state["tasks"]],
            ids=state["ids"],
            ple_bins=state["ple_bins"],
            ple_method=state["ple_method"],
        )
        pre.vocabs = {k: Vocabulary.from_state(v) for k, v in state["vocabs"].items()}
        pre.action_vocabs = {k: Vocabulary.from_state(v) for k, v in state["action_vocabs"].items()}
        pre.numeric = {k: NumericState.from_state(v) for k, v in state["numeric"].items()}
        return pre

    def save(self, path: Path) -> None:
        from ranker.data.sources import atomic_write_bytes

        atomic_write_bytes(path, json.dumps(self.state_dict()).encode())

    @classmethod
    def load(cls, path: Path) -> Preprocessor:
        return cls.from_state(json.loads(Path(path).read_text()))

    @classmethod
    def for_data(
        cls, data: DataConfig, *, ids: str = "vocab", ple_bins: int | None = None, ple_method: str = "quantile"
    ) -> Preprocessor:
        return cls(data.features, data.tasks, ids=ids, ple_bins=ple_bins, ple_method=ple_method)


# ---------------------------------------------------------------------- helpers


def _col(f: Feature) -> str:
    return getattr(f, "column", None) or f.name


def _check_references(features: list[Feature]) -> None:
    by_name = {f.name: f for f in features}
    for f in features:
        key = "vocab_from" if getattr(f, "vocab_from", None) else "item_feature"
        ref = getattr(f, key, None)
        if ref is None:
            continue
        target = by_name.get(ref)
        if not isinstance(target, CategoricalFeature | MultiCategoricalFeature):
            raise ConfigError(
                f"data.features: feature {f.name!r}: {key} {ref!r} is not a categorical feature "
                f"(categorical features: {[n for n, g in by_name.items() if isinstance(g, CategoricalFeature)]})"
            )
        if getattr(target, "vocab_from", None):
            raise ConfigError(f"data.features: feature {f.name!r}: {key} {ref!r} itself borrows a vocabulary")


def _check_columns(table: pa.Table, features: list[Feature], tasks: list[TaskConfig], source: str) -> None:
    needed: list[tuple[str, str]] = []
    for f in features:
        if isinstance(f, HistoryFeature):
            needed += [(c, f"history {f.name!r}") for c in (f.item_column, f.action_column, f.time_column) if c]
        else:
            needed.append((_col(f), f"feature {f.name!r}"))
    for t in tasks:
        needed.append((t.column or t.name, f"task {t.name!r}"))
        if t.mask_column:
            needed.append((t.mask_column, f"mask of task {t.name!r}"))
    have = set(table.column_names)
    missing = [f"{c!r} ({what})" for c, what in needed if c not in have]
    if missing:
        raise DataError(f"{source}: missing column(s) {', '.join(missing)}; columns present: {sorted(have)}")


def _float_column(table: pa.Table, col: str, source: str) -> np.ndarray:
    arr = table.column(col)
    if not (pa.types.is_integer(arr.type) or pa.types.is_floating(arr.type) or pa.types.is_null(arr.type)):
        try:
            arr = pc.cast(arr, pa.float64())
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            raise DataError(f"{source}: numerical column {col!r} holds non-numbers ({arr.type}): {exc}") from None
    return np.asarray(pc.cast(arr, pa.float64()).to_numpy(zero_copy_only=False), dtype=np.float64)


def _list_column(table: pa.Table, col: str, source: str) -> pa.ListArray:
    arr = table.column(col).combine_chunks()
    if pa.types.is_large_list(arr.type) or pa.types.is_fixed_size_list(arr.type):
        arr = arr.cast(pa.list_(arr.type.value_type))
    if not pa.types.is_list(arr.type):
        raise DataError(f"{source}: column {col!r} must be a list column (one list per row), got {arr.type}")
    if arr.null_count:
        arr = pc.if_else(pc.is_null(arr), pa.scalar([], arr.type), arr)
    return arr


def _bags(table: pa.Table, f: MultiCategoricalFeature, source: str) -> pa.ListArray:
    arr = table.column(_col(f)).combine_chunks()
    if pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type):
        arr = pc.split_pattern(pc.fill_null(arr, ""), pattern=f.separator)
    return _list_column(pa.table({"x": arr}), "x", f"{source} ({_col(f)!r})")


def _vocab_input(
    table: pa.Table, f: CategoricalFeature | MultiCategoricalFeature, source: str
) -> pa.Array | pa.ChunkedArray:
    """The values `f`'s vocabulary is fitted on: its column, or a bag feature's values flattened."""
    return _bags(table, f, source).flatten() if isinstance(f, MultiCategoricalFeature) else table.column(_col(f))


def _pad_values(lists: pa.ListArray, flat: np.ndarray, max_len: int, side: str) -> np.ndarray:
    """Place each row's values (already flattened in `flat`) into an (N, max_len) array.

    side="right": keep the first `max_len` values from column 0; side="left": keep the last
    `max_len` values, right-aligned (histories: the most recent event in the last column).
    """
    offsets = lists.offsets.to_numpy()
    offsets = offsets - offsets[0]
    n = len(lists)
    lengths = np.diff(offsets)
    row = np.repeat(np.arange(n), lengths)
    pos = np.arange(len(flat)) - np.repeat(offsets[:-1], lengths)  # position within the row
    if side == "right":
        keep = pos < max_len
        col = pos
    else:
        start = np.maximum(lengths - max_len, 0)
        keep = pos >= np.repeat(start, lengths)
        col = max_len - np.repeat(np.minimum(lengths, max_len), lengths) + pos - np.repeat(start, lengths)
    out = np.zeros((n, max_len), dtype=flat.dtype)
    out[row[keep], col[keep]] = flat[keep]
    return out


def raw_ids(column: pa.Array | pa.ChunkedArray, dtype: str, where: str = "") -> np.ndarray:
    """Stable int64 raw ids: integers as they are, strings hashed, missing → MISSING_RAW."""
    arr = normalise(column, want=dtype, source=where)
    if dtype == "str":
        out = stable_string_hash(arr)
        return np.where(pc.is_null(arr).to_numpy(zero_copy_only=False), MISSING_RAW, out).astype(np.int64)
    return np.array(pc.fill_null(arr, MISSING_RAW).to_numpy(zero_copy_only=False), dtype=np.int64)


def _first_label(table: pa.Table, tasks: list[TaskConfig], source: str) -> np.ndarray | None:
    """The first task's labels (target-aware PLE bins), NaN → 0."""
    return _label(table, tasks[0], source) if tasks else None


def _task_labels(table: pa.Table, tasks: list[TaskConfig], source: str) -> np.ndarray | None:
    """(n, T) labels of every task defined on all rows (no ``mask_column``), NaN → 0; the first
    task alone when every task is masked."""
    chosen = [t for t in tasks if t.mask_column is None] or tasks[:1]
    return np.stack([_label(table, t, source) for t in chosen], axis=1) if chosen else None


def _label(table: pa.Table, task: TaskConfig, source: str) -> np.ndarray:
    return np.nan_to_num(_float_column(table, task.column or task.name, source), nan=0.0)


def _check_same_lengths(a: pa.ListArray, b: pa.ListArray, f: HistoryFeature, col: str, source: str) -> None:
    la, lb = pc.list_value_length(a).to_numpy(), pc.list_value_length(b).to_numpy()
    bad = np.flatnonzero(la != lb)
    if bad.size:
        raise DataError(
            f"{source}: history {f.name!r}: {f.item_column!r} and {col!r} differ in "
            f"length on {bad.size} rows (first: row {bad[0] + 1}, 1-based in split order)"
        )


def _dense(table: pa.Table, f: DenseFeature, source: str) -> np.ndarray:
    arr = _list_column(table, _col(f), source)  # null rows (and fixed-size nulls) -> []
    lengths = pc.list_value_length(arr).to_numpy(zero_copy_only=False)
    bad = np.flatnonzero((lengths != f.dim) & (lengths != 0))
    if bad.size:
        raise DataError(
            f"{source}: dense column {_col(f)!r} must hold vectors of dim {f.dim}; row {bad[0] + 1} (1-based in split order) has "
            f"{lengths[bad[0]]} values ({bad.size} rows wrong)"
        )
    flat = np.asarray(pc.cast(arr.flatten(), pa.float32()).to_numpy(zero_copy_only=False))
    out = np.zeros((len(arr), f.dim), dtype=np.float32)
    out[lengths == f.dim] = flat.reshape(-1, f.dim)
    return np.nan_to_num(out, nan=0.0, posinf=0.0, neginf=0.0)


def _labels(table: pa.Table, tasks: list[TaskConfig], source: str) -> tuple[np.ndarray, np.ndarray]:
    labels, masks = [], []
    for t in tasks:
        col = t.column or t.name
        y = _float_column(table, col, f"{source} (label of task {t.name!r})")
        mask = np.ones_like(y)
        if t.mask_column:
            raw = np.nan_to_num(_float_column(table, t.mask_column, source), nan=0.0)  # missing: masked
            off = (raw != 0) & (raw != 1)
            if off.any():
                i = int(np.flatnonzero(off)[0])
                raise DataError(
                    f"{source}: mask column {t.mask_column!r} (task {t.name!r}) must be 0/1; row {i + 1} (1-based "
                    f"in split order) holds {float(raw[i])!r} ({int(off.sum())} such rows)"
                )
            mask = raw
        on = mask > 0
        nan = np.isnan(y) & on
        if nan.any():
            raise DataError(
                f"{source}: label column {col!r} (task {t.name!r}) has {int(nan.sum())} "
                f"NaN/null values (first at row {int(np.flatnonzero(nan)[0]) + 1}, 1-based in split order)"
            )
        bad = on & ((y != 0) & (y != 1) if t.kind == "binary" else ~np.isfinite(y))
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            want = "0/1" if t.kind == "binary" else "finite"
            raise DataError(
                f"{source}: label column {col!r} (task {t.name!r}) must be {want}; row {i + 1} (1-based "
                f"in split order) holds {float(y[i])!r} ({int(bad.sum())} such rows)"
            )
        labels.append(np.where(on, y, 0.0))
        masks.append(mask)
    return np.stack(labels, 1).astype(np.float32), np.stack(masks, 1).astype(np.float32)


__all__ = ["PAD", "Encoded", "Layout", "Preprocessor"]
