"""T-Adult: income classification on UCI Adult, the numerical-encodings benchmark ("AD").

Protocol ``T-Adult`` of ``shared/benchmarks/PROTOCOLS.md``: ``adult.data`` (32,561 rows) is
permuted with ``default_rng(2021)`` and cut 80/20 into train (``perm[:int(0.8*n)]``) and valid
(the rest); test is ``adult.test`` (16,281 rows, its first line skipped, labels with a trailing
period). Task ``income`` = 1[``>50K``]. Numerical features: age, education_num, hours_per_week
(standardised) and fnlwgt, capital_gain, capital_loss (``log1p``: heavy-tailed, capital columns
are 0 for over 90 % of rows); the other 8 columns are categorical strings, ``?`` becomes null.
Column names are those of SOURCE.md with ``-`` replaced by ``_``.

Data: R. Kohavi, "Scaling Up the Accuracy of Naive-Bayes Classifiers: a Decision-Tree Hybrid",
KDD 1996 (UCI Machine Learning Repository, CC BY 4.0); the benchmark is the "AD" dataset of
Y. Gorishniy, I. Rubachev, A. Babenko, "On Embeddings for Numerical Features in Tabular Deep
Learning", NeurIPS 2022.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from ranker.data.recipes.base import BuiltRanking, Recipe, permutation_split, tabular_data
from ranker.data.sources import SourceFile, read_bytes
from ranker.errors import DataError

_ZIP = "https://archive.ics.uci.edu/static/public/2/adult.zip"
SEED = 2021

COLUMNS: tuple[str, ...] = (
    "age", "workclass", "fnlwgt", "education", "education_num", "marital_status",
    "occupation", "relationship", "race", "sex", "capital_gain", "capital_loss",
    "hours_per_week", "native_country", "income",
)  # fmt: skip
NUMERICAL: dict[str, str] = {
    "age": "standard",
    "fnlwgt": "log1p",
    "education_num": "standard",
    "capital_gain": "log1p",
    "capital_loss": "log1p",
    "hours_per_week": "standard",
}
CATEGORICAL: tuple[str, ...] = tuple(c for c in COLUMNS[:-1] if c not in NUMERICAL)

SOURCES = tuple(
    SourceFile("uci-adult", name, sha256, _ZIP, member=name)
    for name, sha256 in (
        ("adult.data", "5b00264637dbfec36bdeaab5676b0b309ff9eb788d63554ca0a249491c86603d"),
        ("adult.test", "a2a9044bc167a35b2361efbabec64e89d69ce82d9790d2980119aac5fd7e9c05"),
    )
)


def read_comma_space(path: Path, names: Sequence[str], skip_rows: int = 0) -> pa.Table:
    """A headerless ``, ``-separated file as string columns, whitespace-trimmed, ``?`` -> null.

    A row with the wrong number of fields is a :class:`DataError` naming the file.
    """
    try:
        raw = pacsv.read_csv(
            pa.BufferReader(read_bytes(path)),
            read_options=pacsv.ReadOptions(column_names=list(names), skip_rows=skip_rows),
            parse_options=pacsv.ParseOptions(delimiter=",", quote_char=False),
            convert_options=pacsv.ConvertOptions(
                column_types={n: pa.string() for n in names}, strings_can_be_null=False
            ),
        )
    except pa.ArrowInvalid as exc:
        raise DataError(f"{path}: expected {len(names)} ', '-separated fields per row: {exc}") from exc
    null = pa.scalar(None, pa.string())
    cols = {}
    for name in names:
        col = pc.utf8_trim_whitespace(raw[name])
        cols[name] = pc.if_else(pc.equal(col, "?"), null, col)
    return pa.table(cols)


def to_numbers(table: pa.Table, columns: Sequence[str], path: Path, dtype: pa.DataType) -> pa.Table:
    """Cast string `columns` of `table` to `dtype`; a non-number is a DataError naming it."""
    for name in columns:
        try:
            col = pc.cast(table[name], dtype)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            raise DataError(f"{path}: column {name!r} is not numeric: {exc}") from exc
        table = table.set_column(table.schema.get_field_index(name), name, col)
    return table


def binary_label(
    col: pa.ChunkedArray, positive: str, negative: str, path: Path, what: str, skip_rows: int = 0
) -> pa.Array:
    """int64 0/1 of `col` == `positive`; any value other than the two is a DataError."""
    ok = pc.is_in(col, value_set=pa.array([positive, negative])).to_numpy(zero_copy_only=False)
    ok &= ~pc.is_null(col).to_numpy(zero_copy_only=False)
    if not ok.all():
        i = int(np.flatnonzero(~ok)[0])
        raise DataError(
            f"{path}: line {i + 1 + skip_rows}: {what} must be {positive!r} or {negative!r}, got {col[i].as_py()!r}"
        )
    return pc.cast(pc.equal(col, positive), pa.int64()).combine_chunks()


def rows_with_null(table: pa.Table, columns: Sequence[str]) -> int:
    """Number of rows where any of `columns` is null."""
    mask = np.zeros(table.num_rows, dtype=bool)
    for name in columns:
        mask |= pc.is_null(table[name]).to_numpy(zero_copy_only=False)
    return int(mask.sum())


def _read(path: Path, skip_rows: int) -> pa.Table:
    table = read_comma_space(path, COLUMNS, skip_rows=skip_rows)
    table = to_numbers(table, list(NUMERICAL), path, pa.int64())
    label = pc.replace_substring_regex(table["income"], r"\.$", "")
    income = binary_label(label, ">50K", "<=50K", path, "income", skip_rows)
    return table.set_column(table.schema.get_field_index("income"), "income", income)


def _build(paths: dict[str, Path]) -> BuiltRanking:
    full = _read(paths["adult.data"], skip_rows=0)
    test = _read(paths["adult.test"], skip_rows=1)
    split = permutation_split(full.num_rows, SEED, cuts=(0.8,))
    tables = {s: full.take(pa.array(ix)) for s, ix in split.items()} | {"test": test}
    meta: dict[str, object] = {
        "rows": {s: t.num_rows for s, t in tables.items()},
        "positives": {s: int(pc.sum(t["income"]).as_py()) for s, t in tables.items()},
        "positive_rate": {s: float(pc.mean(t["income"]).as_py()) for s, t in tables.items()},
        "rows_with_missing": {s: rows_with_null(t, CATEGORICAL) for s, t in tables.items()},
        "split_seed": SEED,
    }
    return BuiltRanking(tables=tables, data=tabular_data(COLUMNS[:-1], NUMERICAL, ["income"]), meta=meta)


RECIPES: list[Recipe] = [
    Recipe(
        name="t-adult",
        protocol="T-Adult",
        kind="ranking",
        summary="UCI Adult income >50K: 6 numerical + 8 categorical features; adult.data split "
        "80/20 train/valid (seed 2021), adult.test as test",
        sources=SOURCES,
        build=_build,
        aliases=("adult",),
    )
]
