"""Read the user's rows (CSV or parquet) and cut them into train / valid / test.

Columnar throughout (pyarrow); no per-row Python. Splits follow ``PROTOCOLS.md``'s rules:
a random split is ``default_rng(seed).permutation(n)`` cut at ``int(f·n)``; a time split is a
stable sort by the time column (file order breaks ties) cut the same way.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from ranker.config.schema import CsvOptions, DataConfig, FilesSplit, RandomSplit, TimeSplit
from ranker.data.checks import FileRows, check_shape, check_values
from ranker.errors import ConfigError, DataError

SPLITS = ("train", "valid", "test")


def resolve(path: str, base_dir: Path | None = None) -> Path:
    """`path` (``~`` expanded) against `base_dir` when relative and a base is given."""
    p = Path(path).expanduser()
    return p if p.is_absolute() or base_dir is None else base_dir / p


def declared_file(path: str, key: str, base_dir: Path | None = None, what: str = "a file") -> Path:
    """The file a config key names (`path` against `base_dir`), or a ConfigError naming the key:
    ``data.path: /x/events: is a directory, not an event file`` / ``…: file not found``."""
    full = resolve(path, base_dir)
    if full.is_dir():
        raise ConfigError(f"{key}: {full} is a directory, not {what}")
    if not full.is_file():
        raise ConfigError(f"{key}: {full}: file not found")
    return full


def read_table(
    path: str | Path, fmt: str = "auto", csv: CsvOptions | None = None, *, string_columns: tuple[str, ...] = ()
) -> pa.Table:
    """Read one CSV (optionally ``.gz``) or parquet file into an arrow table.

    `string_columns` of a CSV are read as text, never inferred (ids: ``007`` stays ``007``,
    and a 20-digit id is not rounded through a float); one holding bytes that are not UTF-8 is
    read as binary, for :func:`ranker.data.checks.check_text` to name the row. Any file that
    cannot be read is a DataError naming it (a malformed row by its line).
    """
    path = Path(path)
    if path.is_dir():
        if fmt == "csv":
            raise DataError(f"{path}: is a directory; only parquet files are read from a directory")
        return read_parquet_dir(path)
    if not path.is_file():
        raise DataError(f"{path}: data file not found")
    fmt = file_format(path, fmt)
    csv = csv or CsvOptions()
    try:
        if fmt == "parquet":
            table = pq.read_table(path)
        else:
            if csv.column_names is None and not csv.header:
                raise DataError(f"{path}: data.csv.header is false, so give data.csv.column_names")
            if path.stat().st_size == 0:
                raise DataError(f"{path}: the file is empty (0 bytes)")
            _refuse_utf16(path)
            table = _read_csv(path, csv, string_columns)
        _ = table.column_names  # decoded lazily: a header that is not UTF-8 fails here
        return table
    except UnicodeDecodeError as exc:
        raise DataError(
            f"{path}: the header is not UTF-8 text (byte 0x{exc.object[exc.start : exc.start + 1].hex()} "
            f"at byte {exc.start} of a column name); save the file as UTF-8"
        ) from None
    except (pa.ArrowException, OSError) as exc:
        if fmt == "csv" and "CSV parse error" in str(exc):
            raise DataError(f"{path}: {_bad_row(path, csv)}") from None
        raise DataError(f"{path}: cannot read as {fmt}: {_printable(str(exc))}") from None


def parquet_files(path: str | Path, key: str = "split.train") -> list[Path]:
    """The parquet files of `path`: the file itself, or a directory's ``*.parquet`` / ``*.pq``
    files in name order. DataError naming `key` and the path when there is none."""
    path = Path(path)
    if path.is_file():
        if file_format(path, "auto") != "parquet":
            raise DataError(f"{key}: {path} is not a parquet file (.parquet or .pq); streaming reads parquet")
        return [path]
    if not path.is_dir():
        raise DataError(f"{key}: {path}: no such file or directory")
    files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix in (".parquet", ".pq"))
    if not files:
        raise DataError(f"{key}: {path}: the directory holds no .parquet file")
    return files


def check_same_schema(files: list[Path]) -> pa.Schema:
    """The common schema of parquet `files` (read from their footers only); a file whose columns
    or column types differ from the first file's is a DataError naming both and the column."""
    try:
        first = pq.read_schema(files[0])
    except (pa.ArrowException, OSError) as exc:
        raise DataError(f"{files[0]}: cannot read as parquet: {_printable(str(exc))}") from None
    for f in files[1:]:
        try:
            schema = pq.read_schema(f)
        except (pa.ArrowException, OSError) as exc:
            raise DataError(f"{f}: cannot read as parquet: {_printable(str(exc))}") from None
        for name in first.names:
            if name not in schema.names:
                raise DataError(f"{f}: column {name!r} is missing (it is in {files[0].name}); columns: {schema.names}")
            if schema.field(name).type != first.field(name).type:
                raise DataError(
                    f"{f}: column {name!r} is {schema.field(name).type} where {files[0].name} has "
                    f"{first.field(name).type}"
                )
        extra = [n for n in schema.names if n not in first.names]
        if extra:
            raise DataError(f"{f}: column {extra[0]!r} is not in {files[0].name}; the files must share their columns")
    return first


def read_parquet_dir(path: Path) -> pa.Table:
    """Every parquet file of a directory, in name order, as one table (same columns in each)."""
    files = parquet_files(path, key=str(path))
    check_same_schema(files)
    try:
        return pa.concat_tables([pq.read_table(f) for f in files])
    except (pa.ArrowException, OSError) as exc:
        raise DataError(f"{path}: cannot read as parquet: {_printable(str(exc))}") from None


def _read_csv(path: Path, csv: CsvOptions, string_columns: tuple[str, ...] = (), threads: bool = True) -> pa.Table:
    """The CSV with `string_columns` as text; those holding bytes that are not UTF-8 stay binary."""
    read_opts = pacsv.ReadOptions(  # header + column_names: the names replace the header
        column_names=csv.column_names,
        autogenerate_column_names=False,
        skip_rows=1 if csv.header and csv.column_names is not None else 0,
        use_threads=threads,
    )
    parse = pacsv.ParseOptions(delimiter=csv.delimiter)

    def read(typ: pa.DataType) -> pa.Table:
        convert = pacsv.ConvertOptions(
            null_values=["", "NA", "NaN", "nan", "null", "None"],
            strings_can_be_null=True,
            column_types=dict.fromkeys(string_columns, typ),
        )
        return pacsv.read_csv(path, read_options=read_opts, parse_options=parse, convert_options=convert)

    try:
        return read(pa.string())
    except pa.ArrowInvalid as exc:
        if "invalid UTF8" not in str(exc) or not string_columns:
            raise
    table = read(pa.binary())
    for c in string_columns:
        if c in table.column_names:
            try:
                table = table.set_column(table.column_names.index(c), c, pc.cast(table[c], pa.string()))
            except pa.ArrowInvalid:
                pass  # left as bytes: checks.check_text names the row
    return table


def _bad_row(path: Path, csv: CsvOptions) -> str:
    """The first row whose field count differs from the header's, by its line (read again on one
    thread, which numbers the rows in its message)."""
    try:
        _read_csv(path, csv, threads=False)
    except (pa.ArrowException, OSError) as exc:
        found = re.search(r"Row #(\d+): Expected (\d+) columns, got (\d+)", str(exc))
        if found is None:
            return f"cannot read as csv: {_printable(str(exc))}"
        line, want, got = found.groups()
        names = "data.csv.column_names names" if csv.column_names is not None else "the header has"
        return f"line {line} has {got} fields where {names} {want} (delimiter {csv.delimiter!r})"
    return "cannot read as csv"


def _printable(text: str, limit: int = 200) -> str:
    """`text` cut to `limit` characters, control characters escaped (a message of one line)."""
    short = text[:limit] + ("…" if len(text) > limit else "")
    return "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in short)


def _refuse_utf16(path: Path) -> None:
    with open(path, "rb") as fh:
        head = fh.read(2)
    if head in (b"\xff\xfe", b"\xfe\xff"):
        raise DataError(f"{path}: the file is UTF-16 text; ranker reads UTF-8 CSV files: save it as UTF-8")


def load_splits(
    data: DataConfig, base_dir: Path | None = None, *, only: tuple[str, ...] = SPLITS
) -> dict[str, pa.Table]:
    """The train / valid / test tables the data section describes; each split must be non-empty.

    Each file is checked as read (:mod:`ranker.data.checks`: columns, labels, numbers, times),
    so a bad value is named by its line in the file. `only` (pre-split files) reads just those
    splits (a streamed train split is read by :mod:`ranker.data.stream`).
    Id columns (categorical and bag features, the group and item columns) are read exactly: a
    CSV column that type inference would read as floats (ids wider than int64, such as hashed
    ids) is read as text instead, in every file of the data, and unsigned 64-bit parquet ids
    become text; a float would merge distinct ids.
    """
    split = data.split
    ids = id_columns(data)
    if isinstance(split, FilesSplit):
        paths = {s: resolve(getattr(split, s), base_dir) for s in only}
        sources = {s: str(getattr(split, s)) for s in only}
    else:
        assert data.path is not None and split is not None
        paths = {"all": resolve(data.path, base_dir)}
    read = {k: read_table(p, data.format, data.csv) for k, p in paths.items()}
    rows = {k: FileRows.of(p, file_format(p, data.format), data.csv) for k, p in paths.items()}
    for k, table in read.items():
        check_shape(table, data, rows[k])
    csv = {k for k, p in paths.items() if file_format(p, data.format) == "csv"}
    wide = sorted({c for k in csv for c in ids if c in read[k].column_names and pa.types.is_floating(read[k][c].type)})
    if wide:  # read again, these columns as text (every CSV file: the splits' ids must agree)
        read.update({k: read_table(paths[k], data.format, data.csv, string_columns=tuple(wide)) for k in csv})
    read = {k: unsigned_ids_as_text(t, ids) for k, t in read.items()}
    for k, table in read.items():
        check_values(table, data, rows[k], ids)
    if isinstance(split, FilesSplit):
        tables = read
    else:
        assert split is not None and data.path is not None
        tables = cut(read["all"], split, source=data.path)
        sources = {s: f"{data.path} ({s} split)" for s in SPLITS}
    for name, table in tables.items():
        if table.num_rows == 0:
            raise DataError(f"{sources[name]}: the {name} split is empty")
    return tables


def cut(table: pa.Table, split: RandomSplit | TimeSplit, source: str) -> dict[str, pa.Table]:
    """Apply a random or time split to one table."""
    n = table.num_rows
    if isinstance(split, RandomSplit):
        order = np.random.default_rng(split.seed).permutation(n)
    else:
        if split.column not in table.column_names:
            raise DataError(f"{source}: split.column {split.column!r} not found; columns: {table.column_names}")
        col = table.column(split.column)
        if col.null_count:
            raise DataError(f"{source}: time column {split.column!r} has {col.null_count} nulls")
        values = _as_sortable(col)
        if n > 1 and (values == values[0]).all():
            raise DataError(
                f"{source}: time column {split.column!r} holds one value in every row; a time "
                "split needs times that differ (use split.kind: random)"
            )
        order = np.argsort(values, kind="stable")
    a = int(split.fractions[0] * n)
    b = int((split.fractions[0] + split.fractions[1]) * n)
    return {s: table.take(pa.array(part)) for s, part in zip(SPLITS, np.split(order, [a, b]), strict=True)}


def id_columns(data: DataConfig) -> set[str]:
    """The columns whose values are ids: categorical and bag features, group and item columns."""
    cols = {
        getattr(f, "column", None) or f.name
        for f in [*data.features, *data.extra_features]
        if f.kind in ("categorical", "multi_categorical")
    }
    return cols | {c for c in (data.group_column, data.item_column) if c}


def file_format(path: Path, fmt: str) -> str:
    """``csv`` or ``parquet``: `fmt`, or with ``auto`` what the file name says (a directory: parquet)."""
    if fmt == "auto" and Path(path).is_dir():
        return "parquet"
    return ("parquet" if Path(path).suffix in (".parquet", ".pq") else "csv") if fmt == "auto" else fmt


def unsigned_ids_as_text(table: pa.Table, ids: set[str]) -> pa.Table:
    """Unsigned 64-bit id columns as text (a uint64 id does not fit int64)."""
    for c in ids & set(table.column_names):
        if pa.types.is_uint64(table[c].type):
            table = table.set_column(table.column_names.index(c), c, pc.cast(table[c], pa.string()))
    return table


def _as_sortable(col: pa.ChunkedArray) -> np.ndarray:
    if pa.types.is_timestamp(col.type) or pa.types.is_date(col.type):
        col = pc.cast(col, pa.int64())
    if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
        for typ in (pa.timestamp("s"), pa.timestamp("s", "UTC")):  # ISO-8601 text: ordered as times
            try:
                return _as_sortable(pc.cast(col, typ))
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                pass
        return np.asarray(col.to_numpy(zero_copy_only=False), dtype=object)
    return col.to_numpy()
