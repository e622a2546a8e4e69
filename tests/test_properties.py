"""Property tests (hypothesis) of what reads user input: no input makes a reader or the config
loader raise anything but a :class:`~ranker.errors.RankerError` (ConfigError / DataError, which
the CLI prints as one line) — never a traceback-class exception.

Inputs: random bytes, byte-level mutations of the corpus's valid files, random tables (random
column types, NaN / ±inf, empty strings, huge integers, unicode) written as CSV and parquet and
read the whole way a training run reads them (read, check, split, fit, encode), random YAML
documents, and valid configs with a key deleted or a value replaced by one of another type.

Runs are reproducible (``derandomize=True``: the examples depend on the test alone) and bounded:
:data:`EXAMPLES` is the number of examples each test runs (the issue's "example counts").
"""

from __future__ import annotations

import contextlib
import csv
import io
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ranker.config import load_config, load_generative_config, load_retrieval_config
from ranker.config.load import config_kind
from ranker.data.readers import read_table
from ranker.errors import RankerError
from ranker.generative.event_file import load_event_file
from ranker.ranking.run import encode, prepare_run_data
from ranker.retrieval.data import from_file

BASES = Path(__file__).parent / "corpus" / "_base"
SHIPPED = Path(__file__).parents[1] / "src" / "ranker" / "configs"

# examples per test (reported in docs/experiments/bad-input.md); each test runs in seconds
EXAMPLES = {
    "read_table_random_bytes": 200,
    "read_table_mutated_csv": 150,
    "read_table_mutated_parquet": 100,
    "ranking_random_tables": 80,
    "event_random_tables": 60,
    "config_random_bytes": 200,
    "config_random_yaml": 200,
    "config_mutations": 200,
}


def bounded(name: str) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """The settings of every test here: its example count, a deadline, reproducible examples."""
    return settings(
        max_examples=EXAMPLES[name],
        deadline=5000,  # ms per example: generous for 2 loaded cores
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


@contextlib.contextmanager
def workdir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory() as d:
        yield Path(d)


def only_user_errors(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
    """Run `fn`; a RankerError is a fine outcome, any other exception fails the property.
    The one-line rule is checked too: a user-facing message has no newline unless it is a
    config report (a header line, then one line per problem)."""
    with contextlib.redirect_stderr(io.StringIO()):
        try:
            fn(*args, **kwargs)
        except RankerError as exc:
            assert str(exc).strip(), "an error without a message"


# values of every kind a column may hold by mistake
HUGE = st.integers(-(2**70), 2**70)
TEXT = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=8)
FLOATS = st.floats(allow_nan=True, allow_infinity=True)
ODD = [
    st.integers(0, 1),
    st.integers(-3, 3),
    HUGE,
    FLOATS,
    st.sampled_from([0.0, 1.0, 0.5, 2.0, float("nan"), float("inf"), -float("inf")]),
    TEXT,
    st.sampled_from(["a", "b", "", " ", "é", "0", "1", "inf", "NaN", "1e400", "-0", "2020-01-01", "yes"]),
    st.booleans(),
]


# ---------------------------------------------------------------------- bytes


def mutate(data: bytes, edits: list[tuple[int, int, bytes]]) -> bytes:
    """Apply (position, bytes removed, bytes inserted) edits to `data`."""
    out = bytearray(data)
    for pos, cut, insert in edits:
        at = pos % (len(out) + 1)
        out[at : at + cut] = insert
    return bytes(out)


EDITS = st.lists(st.tuples(st.integers(0, 1 << 20), st.integers(0, 8), st.binary(max_size=6)), min_size=1, max_size=6)
RANKING_CSV = (BASES / "ranking" / "rows.csv").read_bytes()


def _parquet_bytes() -> bytes:
    sink = io.BytesIO()
    pq.write_table(pacsv.read_csv(io.BytesIO(RANKING_CSV)), sink)
    return sink.getvalue()


RANKING_PARQUET = _parquet_bytes()


@bounded("read_table_random_bytes")
@given(data=st.binary(max_size=600), name=st.sampled_from(["x.csv", "x.tsv", "x.csv.gz", "x.parquet"]))
def test_read_table_on_random_bytes(data: bytes, name: str) -> None:
    with workdir() as d:
        (d / name).write_bytes(data)
        only_user_errors(read_table, d / name)
        only_user_errors(read_table, d / name, string_columns=("user", "item"))


FIELD_EDITS = st.lists(
    st.tuples(st.integers(0, 160), st.integers(0, 6), st.one_of(*ODD).map(lambda v: "" if v is None else str(v))),
    min_size=1,
    max_size=8,
)


def edit_fields(data: bytes, edits: list[tuple[int, int, str]]) -> bytes:
    """Set (line, field) of a CSV file to new text (quoted when it holds a comma or quote)."""
    lines = [line.split(",") for line in data.decode().splitlines()]
    for row, field, text in edits:
        line = lines[row % len(lines)]
        line[field % len(line)] = (
            f'"{text.replace(chr(34), chr(34) * 2)}"' if any(c in text for c in ',"\n\r') else text
        )
    return ("\n".join(",".join(line) for line in lines) + "\n").encode()


@bounded("read_table_mutated_csv")
@given(edits=st.one_of(EDITS, FIELD_EDITS))
def test_a_damaged_csv_file_is_read_or_refused_the_whole_way(edits: list[Any]) -> None:
    """A valid ranking file with random byte edits or random field values: read, checked,
    split, fitted and encoded as `ranker train` does, or refused with a DataError."""
    damage = edit_fields if isinstance(edits[0][2], str) else mutate
    with workdir() as d:
        (d / "rows.csv").write_bytes(damage(RANKING_CSV, edits))
        only_user_errors(_prepare, d, yaml.safe_load((BASES / "ranking" / "config.yaml").read_text()))


@bounded("read_table_mutated_parquet")
@given(edits=EDITS)
def test_a_damaged_parquet_file_is_read_or_refused(edits: list[tuple[int, int, bytes]]) -> None:
    with workdir() as d:
        (d / "rows.parquet").write_bytes(mutate(RANKING_PARQUET, edits))
        raw = yaml.safe_load((BASES / "ranking" / "config.yaml").read_text())
        raw["data"]["path"] = "rows.parquet"
        only_user_errors(_prepare, d, raw)


def _prepare(d: Path, raw: dict[str, Any]) -> None:
    """What `ranker train` does before the first batch: read, check, split, fit, encode."""
    prep = prepare_run_data(load_config(base=raw), d)
    for split in ("train", "valid", "test"):
        encode(prep, split)


# ---------------------------------------------------------------------- random tables


def odd_column(n: int) -> st.SearchStrategy[list[Any]]:
    """`n` values of one random kind, with missing values."""
    return st.one_of(*[st.lists(st.one_of(k, st.none()), min_size=n, max_size=n) for k in ODD])


def valid_column(kind: str, n: int) -> st.SearchStrategy[list[Any]]:
    """`n` values a column of this role holds in a valid file."""
    if kind == "time":
        return st.permutations(list(range(1_600_000_000, 1_600_000_000 + 60 * n, 60)))
    values = {
        "id": st.sampled_from(["u1", "u2", "u3", "u4"]) | st.integers(0, 5),
        "item": st.sampled_from(["i1", "i2", "i3", "i4", "i5"]),
        "number": st.floats(-1e6, 1e6, allow_nan=False),
        "label": st.integers(0, 1),
        "word": st.sampled_from(["a", "b", "c"]),
        "constant": st.just("de"),
    }[kind]
    both = (lambda xs: [(i // 3) % 2 if i % 3 == 0 else x for i, x in enumerate(xs)]) if kind == "label" else None
    lists = st.lists(values, min_size=n, max_size=n)
    return lists.map(both) if both else lists  # labels: both classes in every third row


@st.composite
def tables(draw: st.DrawFn, roles: dict[str, str]) -> dict[str, list[Any]]:
    """A table of the columns `roles` names (column → role), mostly valid: up to two columns
    hold odd values, sometimes one is missing, and there may be few rows or none."""
    n = draw(st.integers(0, 60))
    odd = draw(st.sets(st.sampled_from(list(roles)), max_size=2))
    out = {c: draw(odd_column(n) if c in odd else valid_column(role, n)) for c, role in roles.items()}
    if draw(st.integers(0, 9)) == 9:
        del out[draw(st.sampled_from(list(roles)))]
    return out


def write_csv(path: Path, cols: dict[str, list[Any]]) -> None:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(list(cols))
    n = len(next(iter(cols.values()), []))
    for i in range(n):
        w.writerow(["" if cols[c][i] is None else cols[c][i] for c in cols])
    path.write_text(buf.getvalue(), encoding="utf-8")


def write_parquet(path: Path, cols: dict[str, list[Any]]) -> None:
    arrays = {}
    for c, values in cols.items():
        try:
            arrays[c] = pa.array(values)
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):  # mixed or out-of-range: as text
            arrays[c] = pa.array([None if v is None else str(v) for v in values], pa.string())
    pq.write_table(pa.table(arrays) if arrays else pa.table({"x": pa.array([], pa.int64())}), path)


RANKING_COLUMNS = {
    "user": "id",
    "item": "item",
    "price": "number",
    "genre": "word",
    "click": "label",
    "buy": "label",
    "ts": "time",
}


@bounded("ranking_random_tables")
@given(
    cols=tables(RANKING_COLUMNS),
    fmt=st.sampled_from(["csv", "parquet"]),
    transform=st.sampled_from(["standard", "log1p", "cdf", "sigmoid", "bins"]),
)
def test_random_ranking_tables_train_or_are_refused(cols: dict[str, list[Any]], fmt: str, transform: str) -> None:
    raw = yaml.safe_load((BASES / "ranking" / "config.yaml").read_text())
    raw["data"]["path"] = f"rows.{fmt}"
    raw["data"]["numerical_transform"] = transform
    with workdir() as d:
        (write_csv if fmt == "csv" else write_parquet)(d / f"rows.{fmt}", cols)
        only_user_errors(_prepare, d, raw)


EVENT_COLUMNS = {
    "user": "id",
    "item": "item",
    "ts": "time",
    "action": "word",
    "clicked": "label",
    "liked": "label",
    "country": "constant",
}


@bounded("event_random_tables")
@given(
    cols=tables(EVENT_COLUMNS),
    fmt=st.sampled_from(["csv", "parquet"]),
    family=st.sampled_from(["retrieval", "generative"]),
)
def test_random_event_tables_load_or_are_refused(cols: dict[str, list[Any]], fmt: str, family: str) -> None:
    with workdir() as d:
        (write_csv if fmt == "csv" else write_parquet)(d / f"events.{fmt}", cols)
        raw = yaml.safe_load((BASES / family / "config.yaml").read_text())
        raw["data"]["path"] = f"events.{fmt}"
        (d / "config.yaml").write_text(yaml.safe_dump(raw))

        def load() -> None:
            if family == "retrieval":
                from_file(load_retrieval_config(d / "config.yaml").data, d).views()
            else:
                load_event_file(load_generative_config(d / "config.yaml").data, d)

        only_user_errors(load)


# ---------------------------------------------------------------------- configs

LOADERS = {"ranking": load_config, "retrieval": load_retrieval_config, "generative": load_generative_config}


def load_any(path: Path) -> None:
    """What the CLI does with a config file: find its family, load it strictly."""
    LOADERS[config_kind(path)](path)


@bounded("config_random_bytes")
@given(data=st.one_of(st.binary(max_size=300), st.text(max_size=300).map(lambda t: t.encode("utf-8", "surrogatepass"))))
def test_the_config_loader_on_random_bytes(data: bytes) -> None:
    with workdir() as d:
        (d / "c.yaml").write_bytes(data)
        only_user_errors(load_any, d / "c.yaml")


SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), FLOATS, TEXT)
DOCS = st.recursive(
    SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(TEXT, inner, max_size=4)),
    max_leaves=20,
)
KEYS = ["kind", "name", "data", "model", "train", "loss", "serving", "features", "tasks", "split", "path"]


@bounded("config_random_yaml")
@given(doc=st.one_of(DOCS, st.dictionaries(st.sampled_from(KEYS), DOCS, max_size=5)))
def test_the_config_loader_on_random_yaml(doc: Any) -> None:
    with workdir() as d:
        (d / "c.yaml").write_text(yaml.safe_dump(doc, allow_unicode=True))
        only_user_errors(load_any, d / "c.yaml")


VALID = [
    yaml.safe_load(p.read_text())
    for p in [
        *(BASES / k / "config.yaml" for k in ("ranking", "retrieval", "generative")),
        *sorted(SHIPPED.glob("*.yaml")),
    ]
]


def paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every key path (dict keys and list indices) of a YAML document."""
    out = [prefix] if prefix else []
    if isinstance(node, dict):
        for k, v in node.items():
            out += paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += paths(v, (*prefix, i))
    return out


@st.composite
def mutated_configs(draw: st.DrawFn) -> dict[str, Any]:
    """A valid config with a few of its keys deleted or values replaced by random values."""
    doc = yaml.safe_load(yaml.safe_dump(draw(st.sampled_from(VALID))))
    for _ in range(draw(st.integers(1, 3))):
        where = paths(doc)
        if not where:
            break
        path = draw(st.sampled_from(where))
        parent = doc
        for step in path[:-1]:
            parent = parent[step]
        if draw(st.booleans()):
            del parent[path[-1]]
        else:
            parent[path[-1]] = draw(DOCS)
    return doc


@bounded("config_mutations")
@given(doc=mutated_configs())
def test_valid_configs_with_a_key_deleted_or_a_value_of_another_type(doc: dict[str, Any]) -> None:
    with workdir() as d:
        (d / "c.yaml").write_text(yaml.safe_dump(doc, allow_unicode=True))
        only_user_errors(load_any, d / "c.yaml")
