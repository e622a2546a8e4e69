"""Vocabularies: map raw categorical values (strings or integers) to dense ids, vectorised.

Reserved ids: ``0`` padding (empty slots of bags and histories), ``1`` out-of-vocabulary
(values unseen in train, or seen fewer than ``min_count`` times), ``2`` missing (null / NaN /
empty string). Known values get ``3 .. 3+V-1`` in sorted order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ranker.errors import DataError

PAD, OOV, MISSING = 0, 1, 2
RESERVED = 3


@dataclass(frozen=True)
class Vocabulary:
    """Sorted known values of one categorical column, and whether they are strings or ints."""

    values: pa.Array  # int64 or string, sorted, unique
    dtype: str  # "int" or "str"

    @property
    def size(self) -> int:
        """Number of rows an embedding table needs (reserved ids included)."""
        return RESERVED + len(self.values)

    @classmethod
    def fit(cls, column: pa.Array | pa.ChunkedArray, min_count: int = 1, *, source: str = "") -> Vocabulary:
        """Known values of `column` (nulls, NaN and empty strings excluded)."""
        arr = normalise(column, source=source)
        counts = pc.value_counts(pc.drop_null(arr))
        values = counts.field("values")
        if min_count > 1:
            values = pc.filter(values, pc.greater_equal(counts.field("counts"), min_count))
        values = pc.take(values, pc.array_sort_indices(values))
        dtype = "str" if pa.types.is_string(arr.type) else "int"
        return cls(values=values, dtype=dtype)

    def lookup(self, column: pa.Array | pa.ChunkedArray, *, source: str = "") -> np.ndarray:
        """Ids of `column`'s values: known → ``3..``, unseen → ``1``, missing → ``2``. Shape (N,)."""
        arr = normalise(column, want=self.dtype, source=source)
        idx = pc.index_in(arr, value_set=self.values)
        ids = pc.fill_null(pc.add(idx, RESERVED), OOV).to_numpy(zero_copy_only=False)
        missing = pc.is_null(arr).to_numpy(zero_copy_only=False)
        ids = np.where(missing, MISSING, ids).astype(np.int64)
        return ids

    def to_state(self) -> dict[str, Any]:
        return {"dtype": self.dtype, "values": self.values.to_pylist()}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Vocabulary:
        typ = pa.string() if state["dtype"] == "str" else pa.int64()
        return cls(values=pa.array(state["values"], type=typ), dtype=state["dtype"])


class VocabCounter:
    """Value counts of one categorical column accumulated over chunks (a streamed train split).

    Memory is O(distinct values): per-chunk counts are merged (summed by value) every
    `merge_every` chunks. :meth:`vocabulary` equals :meth:`Vocabulary.fit` on the whole column.

    >>> c = VocabCounter()
    >>> c.add(pa.array([3, 1, 3])); c.add(pa.array([1, None, 2]))
    >>> c.vocabulary(min_count=2).values.to_pylist()
    [1, 3]
    """

    def __init__(self, merge_every: int = 8) -> None:
        self._parts: list[pa.Table] = []
        self._merge_every = merge_every

    def add(self, column: pa.Array | pa.ChunkedArray, *, source: str = "") -> None:
        counts = pc.value_counts(pc.drop_null(normalise(column, source=source)))
        self._parts.append(pa.table({"values": counts.field("values"), "counts": counts.field("counts")}))
        if len(self._parts) >= self._merge_every:
            self._merge()

    def _merge(self) -> None:
        if len(self._parts) < 2:
            return
        if len({p.schema.field("values").type for p in self._parts}) > 1:  # ints in one chunk, text in another
            self._parts = [p.set_column(0, "values", pc.cast(p["values"], pa.string())) for p in self._parts]
        merged = pa.concat_tables(self._parts).group_by("values").aggregate([("counts", "sum")])
        self._parts = [pa.table({"values": merged["values"], "counts": merged["counts_sum"]})]

    def vocabulary(self, min_count: int = 1) -> Vocabulary:
        """The sorted known values seen at least `min_count` times."""
        self._merge()
        if not self._parts:
            return Vocabulary(values=pa.array([], type=pa.int64()), dtype="int")
        table = self._parts[0]
        values = table["values"].combine_chunks()
        if min_count > 1:
            values = pc.filter(values, pc.greater_equal(table["counts"].combine_chunks(), min_count))
        values = pc.take(values, pc.array_sort_indices(values))
        return Vocabulary(values=values, dtype="str" if pa.types.is_string(values.type) else "int")


def normalise(column: pa.Array | pa.ChunkedArray, want: str | None = None, source: str = "") -> pa.Array:
    """One flat array of int64 or string values; NaN and empty strings become null.

    Integral floats (a CSV int column with gaps reads as float) become int64; other floats and
    booleans become strings. `want` forces the vocabulary's type at lookup time: values that
    cannot be of that type (``2.5`` or ``"abc"`` for an integer vocabulary) become a value no
    vocabulary holds, so they map to OOV while the others still find their ids.
    """
    arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    t = arr.type
    if pa.types.is_dictionary(t):
        arr = arr.cast(t.value_type)
        t = arr.type
    if pa.types.is_null(t):  # a column with no value at all (e.g. all empty in a CSV file)
        return pa.nulls(len(arr), pa.int64() if want == "int" else pa.string())
    if pa.types.is_floating(t):
        vals = np.asarray(arr.to_numpy(zero_copy_only=False), dtype=np.float64)  # null -> NaN
        null = np.isnan(vals)
        with np.errstate(invalid="ignore"):
            integral = np.isfinite(vals) & (vals == np.round(vals)) & (np.abs(vals) < 2.0**62)
        if want == "int" or (want is None and np.all(integral | null)):
            ints = np.where(integral, vals, 0).astype(np.int64)
            ints[~integral] = _UNKNOWN
            arr = pa.array(ints, mask=null)
        else:
            arr = pc.cast(pc.if_else(pc.is_nan(arr), pa.scalar(None, t), arr), pa.string())
    elif pa.types.is_integer(t):
        arr = pc.cast(arr, pa.int64())
    elif pa.types.is_boolean(t):
        arr = pc.cast(arr, pa.string())
    elif pa.types.is_large_string(t):
        arr = pc.cast(arr, pa.string())
    elif not pa.types.is_string(t):
        raise DataError(f"{source}: expected categorical values (strings or integers), got {t}")
    if pa.types.is_string(arr.type):
        arr = pc.if_else(pc.equal(pc.utf8_trim_whitespace(arr), ""), pa.scalar(None, pa.string()), arr)
    if want is not None:
        have = "str" if pa.types.is_string(arr.type) else "int"
        if have != want:
            arr = pc.cast(arr, pa.string()) if want == "str" else _str_to_int(arr)
    return arr


_UNKNOWN = np.iinfo(np.int64).min  # stands for a value that is in no integer vocabulary


def _str_to_int(arr: pa.Array) -> pa.Array:
    """Strings looked up in an integer vocabulary: integer strings (``"7"``, ``" 7.0"``) keep
    their value, any other string can only be out-of-vocabulary."""
    text = pc.utf8_trim_whitespace(arr)
    ok = pc.fill_null(pc.match_substring_regex(text, r"^[+-]?\d{1,18}(\.0*)?$"), False)
    digits = pc.replace_substring_regex(pc.if_else(ok, text, "0"), r"^\+|\.0*$", "")
    ints = pc.if_else(ok, pc.cast(digits, pa.int64()), pa.scalar(_UNKNOWN, pa.int64()))
    return pc.if_else(pc.is_null(arr), pa.scalar(None, pa.int64()), ints)
