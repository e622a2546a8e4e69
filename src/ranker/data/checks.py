"""Checks of a data file's values as read, before any fitting or training.

Every message is one line naming the file, the column and, where one row is at fault, the row as
the user finds it (:class:`FileRows`): in a CSV file the **line** an editor shows (the header is
line 1, so the first data row is line 2; without a header the first row is line 1; a quoted
field spanning lines or a blank line shifts the count), in a parquet file the **row** counted
from 1.

Errors (:class:`~ranker.errors.DataError`) where no training could mean anything: columns missing
or named twice, text that is not UTF-8, labels outside {0, 1} or missing where the task is
defined, masks that are not 0/1, text in a numerical column, holes in a time column; a binary
task with one class in train, or no binary task with both classes in valid (model selection
would be undefined); a categorical feature with no value in train. Warnings
(:func:`~ranker.errors.warn`) where training still means something: ±inf in a numerical column
(left out of its fitted statistics, encoded as the transform's extremes), a feature holding one
value in every train row, one class of a task in valid or test (that split's AUC is undefined).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ranker.config.schema import (
    CategoricalFeature,
    CsvOptions,
    DataConfig,
    Feature,
    HistoryFeature,
    NumericalFeature,
    TaskConfig,
    TimeSplit,
)
from ranker.data.vocab import normalise
from ranker.errors import DataError, warn

# a number as text: what a CSV reader (and an arrow cast) parses as a float, inf / nan included
_NUMBER = r"^[+-]?((\d+\.?\d*|\.\d+)([eE][+-]?\d+)?|inf|infinity|nan)$"
# an integer or an ISO-8601 date / time (``2024-03-01``, ``2024-03-01 10:00:00``, ``…T10:00:00.5Z``)
_TIME = r"^\s*([+-]?\d+|\d{4}-\d{2}-\d{2}([ T]\d{2}:\d{2}(:\d{2}(\.\d+)?)?)?(Z|[+-]\d{2}:?\d{2})?)\s*$"
DELIMITERS = (",", ";", "\t", "|")


@dataclass(frozen=True)
class FileRows:
    """Where a table's rows come from, to name a row as the user finds it in the file.

    ``index[i]`` is the file's data row (0-based) of table row i, when rows were filtered.

    >>> FileRows("rows.csv", "csv").at(0), FileRows("e.parquet", "parquet").at(0)
    ('line 2', 'row 1')
    """

    path: str
    kind: str  # "csv" (a header line first), "csv-no-header" or "parquet"
    index: np.ndarray | None = None

    @classmethod
    def of(cls, path: str | Path, fmt: str, csv: CsvOptions | None = None) -> FileRows:
        """The rows of a file read by :func:`ranker.data.readers.read_table` with `fmt` and `csv`."""
        if fmt == "parquet":
            return cls(str(path), "parquet")
        return cls(str(path), "csv" if (csv or CsvOptions()).header else "csv-no-header")

    def at(self, i: int) -> str:
        """``line N`` (CSV) or ``row N`` (parquet) of table row `i`."""
        r = int(self.index[i]) if self.index is not None else int(i)
        if self.kind == "parquet":
            return f"row {r + 1}"
        return f"line {r + 2 if self.kind == 'csv' else r + 1}"

    def kept(self, keep: np.ndarray) -> FileRows:
        """The rows left after filtering by the bool mask `keep` (over the current rows)."""
        rows = np.arange(len(keep)) if self.index is None else self.index
        return replace(self, index=rows[np.asarray(keep, dtype=bool)])


# ---------------------------------------------------------------------- a ranking data file


def used_columns(data: DataConfig) -> dict[str, str]:
    """Every column the data section names → what uses it (``feature 'price'``)."""
    out: dict[str, str] = {}
    for f in data.features:
        if isinstance(f, HistoryFeature):
            out |= {c: f"history {f.name!r}" for c in (f.item_column, f.action_column, f.time_column) if c}
        else:
            out.setdefault(getattr(f, "column", None) or f.name, f"feature {f.name!r}")
    for t in data.tasks:
        out.setdefault(t.column or t.name, f"task {t.name!r}")
        if t.mask_column:
            out.setdefault(t.mask_column, f"mask of task {t.name!r}")
    if isinstance(data.split, TimeSplit):
        out.setdefault(data.split.column, "split.column")
    for key in ("group_column", "item_column"):
        col = getattr(data, key)
        if col:
            out.setdefault(col, f"data.{key}")
    return out


def check_shape(table: pa.Table, data: DataConfig, rows: FileRows) -> None:
    """The file has rows and every column the data section names, each once."""
    check_not_empty(table, rows)
    check_present(table, used_columns(data), rows, data.csv.delimiter)


def check_values(table: pa.Table, data: DataConfig, rows: FileRows, ids: Collection[str] = ()) -> None:
    """Text is UTF-8, id columns exact, the time split's column complete, labels, masks and
    numbers valid. `ids`: the id columns (categorical features, group and item columns)."""
    check_text(table, list(used_columns(data)), rows)
    check_float_ids(table, ids, rows)
    if isinstance(data.split, TimeSplit):
        check_time(table, data.split.column, rows, "split.column")
    check_labels(table, data.tasks, rows)
    check_numerical(table, data.features, rows)


# ---------------------------------------------------------------------- the file's shape


def check_not_empty(table: pa.Table, rows: FileRows) -> None:
    if table.num_rows == 0:
        what = "a header and no data rows" if rows.kind == "csv" and table.num_columns else "no data rows"
        raise DataError(f"{rows.path}: the file has {what}")


def check_unique(table: pa.Table, columns: Sequence[str], rows: FileRows) -> None:
    """Each column of `columns` is named once in the file (a name given twice is ambiguous)."""
    names = table.column_names
    for col in columns:
        at = [i + 1 for i, n in enumerate(names) if n == col]
        if len(at) > 1:
            raise DataError(
                f"{rows.path}: column {col!r} appears {len(at)} times in the header (columns {at}); "
                "column names must be unique"
            )


def delimiter_hint(names: Sequence[str], delimiter: str | None) -> str:
    """A hint when the header read as one column holding another delimiter (else empty)."""
    if len(names) != 1:
        return ""
    for d in DELIMITERS:
        if d != (delimiter or ",") and d in names[0]:
            return f"; the header reads as one column, so the file looks {d!r}-separated: set data.csv.delimiter: {d!r}"
    return ""


def check_present(table: pa.Table, needed: Mapping[str, str], rows: FileRows, delimiter: str | None = None) -> None:
    """Every column of `needed` (column → what uses it) is in the file, once."""
    check_unique(table, list(needed), rows)
    have = table.column_names
    missing = [f"{c!r} ({what})" for c, what in needed.items() if c not in have]
    if missing:
        raise DataError(
            f"{rows.path}: missing column(s) {', '.join(missing)}; columns present: {sorted(have)}"
            + delimiter_hint(have, delimiter)
        )


def check_text(table: pa.Table, columns: Sequence[str], rows: FileRows) -> None:
    """The `columns` a CSV reader left as bytes (not UTF-8) are refused, naming the first bad row."""
    for col in columns:
        if col not in table.column_names:
            continue
        arr = table.column(col)
        if not (pa.types.is_binary(arr.type) or pa.types.is_large_binary(arr.type)):
            continue
        for i, value in enumerate(arr.to_pylist()):  # the error path only: find the first bad value
            try:
                if value is not None:
                    value.decode("utf-8")
            except UnicodeDecodeError:
                raise DataError(
                    f"{rows.path}: column {col!r} holds text that is not UTF-8 ({rows.at(i)} holds "
                    f"{value[:40]!r}); save the file as UTF-8"
                ) from None
        raise DataError(f"{rows.path}: column {col!r} holds bytes, not text or numbers")


def check_float_ids(table: pa.Table, ids: Collection[str], rows: FileRows) -> None:
    """Id columns stored as floats (a parquet file written with missing ids) must stay below
    2**53, where every integer is still exact; beyond it distinct ids have merged in the file."""
    for col in sorted(ids):
        if col not in table.column_names or not pa.types.is_floating(table.column(col).type):
            continue
        x = np.asarray(pc.cast(table.column(col), pa.float64()).to_numpy(zero_copy_only=False))
        big = np.flatnonzero(np.isfinite(x) & (np.abs(x) >= 2.0**53))
        if big.size:
            i = int(big[0])
            raise DataError(
                f"{rows.path}: id column {col!r} holds floating-point numbers beyond 2**53, where distinct "
                f"ids merge ({rows.at(i)} holds {x[i]:.17g}); store ids as integers or text"
            )


# ---------------------------------------------------------------------- values


def number(value: float) -> str:
    """A value as the user wrote it: ``2``, ``0.5``, ``-inf``, ``1000128.5`` (not ``2.0``)."""
    v = float(value)
    return str(int(v)) if v.is_integer() else repr(v)


def plural(n: int, noun: str) -> str:
    """``1 row``, ``2 rows``."""
    return f"{n} {noun}{'' if n == 1 else 's'}"


def numbers(table: pa.Table, col: str, rows: FileRows, what: str) -> np.ndarray:
    """(n,) float64 values of a numeric column (null → NaN, booleans → 0/1); text that is not a
    number is refused, naming its row. `what` names the column (``label column 'click'``)."""
    arr = table.column(col)
    t = arr.type
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        ok = pc.or_kleene(pc.is_null(arr), pc.match_substring_regex(arr, _NUMBER, ignore_case=True))
        bad = np.flatnonzero(~np.asarray(pc.fill_null(ok, True).to_numpy(zero_copy_only=False), dtype=bool))
        if bad.size:
            i = int(bad[0])
            value = str(arr[i].as_py())
            spaces = (
                " (spaces around a value: is there a space after each delimiter?)" if value != value.strip() else ""
            )
            raise DataError(
                f"{rows.path}: {what} must hold numbers; {rows.at(i)} holds {value!r} "
                f"({plural(bad.size, 'such row')}){spaces}"
            )
    elif not (pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t) or pa.types.is_null(t)):
        if not pa.types.is_decimal(t):
            raise DataError(f"{rows.path}: {what} must hold numbers, the column holds {t}")
    try:
        return np.asarray(pc.cast(arr, pa.float64()).to_numpy(zero_copy_only=False), dtype=np.float64)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise DataError(f"{rows.path}: {what} must hold numbers: {exc}") from None


def check_labels(table: pa.Table, tasks: Sequence[TaskConfig], rows: FileRows, *, missing_masks: bool = False) -> None:
    """Labels and masks of every task: a mask is 0/1 (empty = masked); where a task is defined a
    binary label is 0 or 1 and a regression label finite. A missing label is refused, or masks
    the task on that row with `missing_masks` (the event files' rule)."""
    for t in tasks:
        col = t.column or t.name
        y = numbers(table, col, rows, f"label column {col!r} (task {t.name!r})")
        on = np.ones(len(y), dtype=bool)
        if t.mask_column:
            raw = numbers(table, t.mask_column, rows, f"mask column {t.mask_column!r} (task {t.name!r})")
            m = np.nan_to_num(raw, nan=0.0)
            _first_bad(rows, (m != 0) & (m != 1), raw, f"mask column {t.mask_column!r} (task {t.name!r})", "0/1")
            on = m == 1
        missing = on & np.isnan(y)
        if missing.any() and not missing_masks:
            i = int(np.flatnonzero(missing)[0])
            raise DataError(
                f"{rows.path}: label column {col!r} (task {t.name!r}) is missing (empty or NaN) on "
                f"{plural(int(missing.sum()), 'row')} where the task is defined (first: {rows.at(i)})"
            )
        on &= ~np.isnan(y)
        bad = on & (((y != 0) & (y != 1)) if t.kind == "binary" else ~np.isfinite(y))
        _first_bad(rows, bad, y, f"label column {col!r} (task {t.name!r})", "0/1" if t.kind == "binary" else "finite")


def _first_bad(rows: FileRows, bad: np.ndarray, values: np.ndarray, what: str, want: str) -> None:
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DataError(
            f"{rows.path}: {what} must be {want}; {rows.at(i)} holds {number(values[i])} "
            f"({plural(int(bad.sum()), 'such row')})"
        )


def check_numerical(table: pa.Table, features: Sequence[Feature], rows: FileRows) -> None:
    """Numerical columns hold numbers; ±inf is allowed with a warning (see the module docstring)."""
    seen: set[str] = set()
    for f in features:
        col = getattr(f, "column", None) or f.name
        if not isinstance(f, NumericalFeature) or col in seen:
            continue
        seen.add(col)
        x = numbers(table, col, rows, f"numerical column {col!r} (feature {f.name!r})")
        inf = np.isinf(x)
        if inf.any():
            warn(
                f"{rows.path}: numerical column {col!r} (feature {f.name!r}) holds {int(inf.sum())} infinite "
                f"values (first: {rows.at(int(np.flatnonzero(inf)[0]))}); they are left out of its fitted "
                "statistics and encoded as the transform's extreme values"
            )


def first_not_time(col: pa.ChunkedArray | pa.Array) -> int | None:
    """Index of the first value of a text column that is neither an integer nor an ISO-8601 time."""
    ok = pc.fill_null(pc.match_substring_regex(col, _TIME), True)
    bad = np.flatnonzero(~np.asarray(ok.to_numpy(zero_copy_only=False), dtype=bool))
    return int(bad[0]) if bad.size else None


def first_null(arr: pa.ChunkedArray | pa.Array) -> int:
    """Index of the first missing value of a column that has one."""
    return int(np.flatnonzero(pc.is_null(arr).to_numpy(zero_copy_only=False))[0])


def check_time(table: pa.Table, col: str, rows: FileRows, key: str) -> None:
    """A time column (config key `key`) has a value on every row, and text only as ISO-8601 times."""
    arr = table.column(col)
    if arr.null_count:
        i = first_null(arr)
        raise DataError(
            f"{rows.path}: time column {col!r} ({key}) is empty on {plural(arr.null_count, 'row')} (first: {rows.at(i)}); "
            "every row needs a time"
        )
    if pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type):
        bad = first_not_time(arr)
        if bad is not None:
            raise DataError(
                f"{rows.path}: time column {col!r} ({key}) must hold integers (e.g. unix seconds) or "
                f"ISO-8601 times; {rows.at(bad)} holds {arr[bad].as_py()!r}"
            )


# ---------------------------------------------------------------------- splits


def check_features(train: pa.Table, features: Sequence[Feature], source: str) -> None:
    """A categorical feature with no value in train is refused; a categorical or numerical
    feature holding one value in every train row gets a warning (it carries no information)."""
    for f in features:
        col = getattr(f, "column", None) or f.name
        where = f"{source}: column {col!r} (feature {f.name!r})"
        if isinstance(f, CategoricalFeature) and f.vocab_from is None:
            arr = normalise(train.column(col), source=where)
            distinct = pc.unique(pc.drop_null(arr))
            if len(distinct) == 0 and len(arr):
                raise DataError(f"{where} has no value in its {len(arr)} rows; drop the feature or fix the column")
            if len(distinct) == 1 and arr.null_count == 0 and len(arr) > 1:
                warn(f"{where} is constant: {distinct[0].as_py()!r} in every row, so the feature carries nothing")
        elif isinstance(f, NumericalFeature):
            try:
                x = np.asarray(pc.cast(train.column(col), pa.float64()).to_numpy(zero_copy_only=False))
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                continue  # refused with its row by check_numerical / the preprocessor
            if len(x) > 1 and np.isfinite(x).all() and (x == x[0]).all():
                warn(f"{where} is constant: {number(x[0])} in every row, so the feature carries nothing")


def defined_labels(table: pa.Table, tasks: Sequence[TaskConfig]) -> dict[str, np.ndarray]:
    """Each task's labels on the rows where it is defined (mask 1, label present); the values
    were checked by :func:`check_labels`."""

    def floats(col: str) -> np.ndarray:
        return np.asarray(pc.cast(table.column(col), pa.float64()).to_numpy(zero_copy_only=False), dtype=np.float64)

    out = {}
    for t in tasks:
        y = floats(t.column or t.name)
        on = ~np.isnan(y) & ((np.nan_to_num(floats(t.mask_column)) == 1) if t.mask_column else True)
        out[t.name] = y[on]
    return out


def check_classes(
    labels: Mapping[str, Mapping[str, np.ndarray]], tasks: Sequence[TaskConfig], sources: Mapping[str, str]
) -> None:
    """`labels[split][task]`: the task's labels on the rows where it is defined.

    A binary task needs both classes in train (refused otherwise). One class in valid or test
    leaves that split's AUC undefined (a warning); when no binary task has both classes in valid
    and there is no regression task, model selection (mean valid AUC) is undefined: refused.
    """
    binary = [t for t in tasks if t.kind == "binary"]

    def classes(split: str, t: TaskConfig) -> str | None:
        """None when both classes are there, else what there is."""
        y = labels[split][t.name]
        values = np.unique(y)
        if len(values) > 1:
            return None
        return (
            "no row where it is defined"
            if not len(y)
            else f"only label {number(values[0])} on its {plural(len(y), 'row')}"
        )

    for t in binary:
        have = classes("train", t)
        if have is not None:
            raise DataError(
                f"{sources['train']}: task {t.name!r} has {have}; a binary task needs both 0s and 1s "
                "in train to learn anything"
            )
    one_class = {s: {t.name: classes(s, t) for t in binary} for s in ("valid", "test")}
    undefined = [n for n, have in one_class["valid"].items() if have is not None]
    if binary and len(undefined) == len(binary) and len(binary) == len(tasks):
        what = "; ".join(f"{n}: {one_class['valid'][n]}" for n in undefined)
        raise DataError(
            f"{sources['valid']}: no task has both classes in the valid split ({what}), so the valid "
            "AUC that selects the model is undefined; change data.split"
        )
    for split, found in one_class.items():
        for name, have in found.items():
            if have is not None:
                extra = ", and model selection uses the other tasks" if split == "valid" else ""
                warn(f"{sources[split]}: task {name!r} has {have}: its {split} AUC is undefined{extra}")


__all__ = [
    "FileRows",
    "check_classes",
    "check_features",
    "check_float_ids",
    "check_labels",
    "check_not_empty",
    "check_numerical",
    "check_present",
    "check_shape",
    "check_values",
    "defined_labels",
    "used_columns",
    "check_text",
    "check_time",
    "check_unique",
    "delimiter_hint",
    "first_not_time",
    "number",
    "numbers",
    "plural",
]
