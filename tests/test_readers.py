"""Reading CSV / parquet and cutting train / valid / test."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from ranker.config.schema import CsvOptions, DataConfig, RandomSplit, TimeSplit
from ranker.data.readers import cut, load_splits, read_table
from ranker.errors import DataError

FEATURES = [{"kind": "categorical", "name": "user"}]
TASKS = [{"name": "click"}]


def rows(n: int, seed: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed)
    return pa.table(
        {
            "row": np.arange(n),
            "user": rng.integers(0, 5, n),
            "ts": rng.integers(0, 4, n),  # many ties
            "click": rng.integers(0, 2, n),
        }
    )


def data_config(**kw: Any) -> DataConfig:
    return DataConfig.model_validate({"features": FEATURES, "tasks": TASKS, **kw})


# ---------------------------------------------------------------------- splits


@pytest.mark.parametrize(("n", "seed"), [(10, 2021), (57, 1), (1000, 7)])
def test_random_split_is_the_numpy_permutation(n: int, seed: int) -> None:
    table = rows(n)
    parts = cut(table, RandomSplit(kind="random", seed=seed), source="t")
    perm = np.random.default_rng(seed).permutation(n)
    a, b = int(0.8 * n), int(0.9 * n)
    assert parts["train"].column("row").to_pylist() == perm[:a].tolist()
    assert parts["valid"].column("row").to_pylist() == perm[a:b].tolist()
    assert parts["test"].column("row").to_pylist() == perm[b:].tolist()


def test_random_split_other_fractions_and_seed_changes_order() -> None:
    table = rows(40)
    split = RandomSplit(kind="random", seed=5, fractions=(0.5, 0.25, 0.25))
    parts = cut(table, split, source="t")
    assert [parts[s].num_rows for s in ("train", "valid", "test")] == [20, 10, 10]
    other = cut(table, RandomSplit(kind="random", seed=6, fractions=(0.5, 0.25, 0.25)), source="t")
    assert parts["train"].column("row").to_pylist() != other["train"].column("row").to_pylist()
    together = sorted(sum((parts[s].column("row").to_pylist() for s in parts), []))
    assert together == list(range(40))


def test_time_split_is_stable_on_ties() -> None:
    table = pa.table({"row": np.arange(10), "ts": [3, 1, 2, 1, 3, 0, 2, 1, 0, 3]})
    parts = cut(table, TimeSplit(kind="time", column="ts", fractions=(0.6, 0.2, 0.2)), source="t")
    # sorted by ts, file order within equal ts
    order = [5, 8, 1, 3, 7, 2, 6, 0, 4, 9]
    assert parts["train"].column("row").to_pylist() == order[:6]
    assert parts["valid"].column("row").to_pylist() == order[6:8]
    assert parts["test"].column("row").to_pylist() == order[8:]


def test_time_split_matches_stable_argsort_on_random_data() -> None:
    table = rows(500, seed=3)
    parts = cut(table, TimeSplit(kind="time", column="ts"), source="t")
    order = np.argsort(table.column("ts").to_numpy(), kind="stable")
    got = sum((parts[s].column("row").to_pylist() for s in ("train", "valid", "test")), [])
    assert got == order.tolist()
    assert parts["train"].num_rows == 400 and parts["valid"].num_rows == 50


def test_time_split_on_timestamps_and_strings() -> None:
    stamps = pa.array([3, 1, 2, 0, 4, 1, 2, 3, 0, 5], pa.timestamp("s"))
    table = pa.table({"row": np.arange(10), "ts": stamps, "day": ["2020-01-0" + str(int(v.value)) for v in stamps]})
    split = TimeSplit(kind="time", column="ts")
    by_ts = cut(table, split, source="t")
    by_day = cut(table, TimeSplit(kind="time", column="day"), source="t")
    expected = [3, 8, 1, 5, 2, 6, 0, 7]
    assert by_ts["train"].column("row").to_pylist() == expected
    assert by_day["train"].column("row").to_pylist() == expected
    assert by_ts["test"].column("row").to_pylist() == [9]


def test_time_split_missing_column_and_nulls() -> None:
    table = rows(10)
    with pytest.raises(DataError) as info:
        cut(table, TimeSplit(kind="time", column="when"), source="log.csv")
    msg = str(info.value)
    assert "log.csv" in msg and "'when'" in msg and "ts" in msg
    nulls = pa.table({"ts": pa.array([1, None, 2])})
    with pytest.raises(DataError, match="'ts' has 1 nulls"):
        cut(nulls, TimeSplit(kind="time", column="ts"), source="log.csv")


def test_files_split_reads_each_file(tmp_path: Path) -> None:
    for i, name in enumerate(("tr", "va", "te")):
        pacsv.write_csv(rows(5 + i, seed=i), tmp_path / f"{name}.csv")
    cfg = data_config(split={"kind": "files", "train": "tr.csv", "valid": "va.csv", "test": str(tmp_path / "te.csv")})
    tables = load_splits(cfg, base_dir=tmp_path)  # relative paths resolve against base_dir
    assert [tables[s].num_rows for s in ("train", "valid", "test")] == [5, 6, 7]
    assert tables["valid"].column("user").to_pylist() == rows(6, seed=1).column("user").to_pylist()


def test_load_splits_random_from_parquet(tmp_path: Path) -> None:
    pq.write_table(rows(30), tmp_path / "all.parquet")
    cfg = data_config(path="all.parquet", split={"kind": "random", "seed": 4})
    tables = load_splits(cfg, base_dir=tmp_path)
    perm = np.random.default_rng(4).permutation(30)
    assert tables["test"].column("row").to_pylist() == perm[27:].tolist()


# ---------------------------------------------------------------------- reading


def test_csv_with_header(tmp_path: Path) -> None:
    path = tmp_path / "x.csv"
    path.write_text("user,price,city\n1,2.5,paris\n2,,\n3,NA,rome\n")
    table = read_table(path)
    assert table.column_names == ["user", "price", "city"]
    assert table.column("user").to_pylist() == [1, 2, 3]
    assert table.column("price").to_pylist() == [2.5, None, None]
    assert table.column("city").to_pylist() == ["paris", None, "rome"]


def test_csv_without_header_needs_column_names(tmp_path: Path) -> None:
    path = tmp_path / "x.tsv"
    path.write_text("1\tparis\n2\trome\n")
    opts = CsvOptions(header=False, column_names=["user", "city"], delimiter="\t")
    table = read_table(path, "csv", opts)
    assert table.to_pydict() == {"user": [1, 2], "city": ["paris", "rome"]}
    with pytest.raises(DataError, match="column_names"):
        read_table(path, "csv", CsvOptions(header=False, delimiter="\t"))


def test_csv_header_replaced_by_column_names(tmp_path: Path) -> None:
    path = tmp_path / "x.csv"
    path.write_text("a,b\n1,paris\n2,rome\n")
    table = read_table(path, "csv", CsvOptions(column_names=["user", "city"]))
    assert table.to_pydict() == {"user": [1, 2], "city": ["paris", "rome"]}


def test_gzipped_csv(tmp_path: Path) -> None:
    import gzip

    path = tmp_path / "x.csv.gz"
    path.write_bytes(gzip.compress(b"user,click\n4,1\n5,0\n"))
    assert read_table(path).to_pydict() == {"user": [4, 5], "click": [1, 0]}


def test_parquet_keeps_types(tmp_path: Path) -> None:
    table = pa.table({"user": pa.array([1, 2], pa.int32()), "tags": [["a"], ["b", "c"]]})
    pq.write_table(table, tmp_path / "x.parquet")
    got = read_table(tmp_path / "x.parquet")
    assert got.equals(table)
    # format forced: a parquet file with an unusual name
    (tmp_path / "x.bin").write_bytes((tmp_path / "x.parquet").read_bytes())
    assert read_table(tmp_path / "x.bin", "parquet").equals(table)


def test_missing_file_names_the_path(tmp_path: Path) -> None:
    path = tmp_path / "nowhere" / "rows.csv"
    with pytest.raises(DataError) as info:
        read_table(path)
    assert str(path) in str(info.value) and "not found" in str(info.value)
    cfg = data_config(split={"kind": "files", "train": "a.csv", "valid": "b.csv", "test": "c.csv"})
    with pytest.raises(DataError) as info:
        load_splits(cfg, base_dir=tmp_path)
    assert str(tmp_path / "a.csv") in str(info.value)


def test_unreadable_file_names_the_path(tmp_path: Path) -> None:
    path = tmp_path / "broken.parquet"
    path.write_text("this is not parquet")
    with pytest.raises(DataError) as info:
        read_table(path)
    assert str(path) in str(info.value) and "parquet" in str(info.value)


def test_empty_split_names_the_split(tmp_path: Path) -> None:
    pacsv.write_csv(rows(5), tmp_path / "few.csv")
    cfg = data_config(path="few.csv", split={"kind": "random", "fractions": [0.8, 0.0, 0.2]})
    with pytest.raises(DataError) as info:
        load_splits(cfg, base_dir=tmp_path)
    msg = str(info.value)
    assert "few.csv" in msg and "valid split is empty" in msg

    pacsv.write_csv(rows(3), tmp_path / "tr.csv")
    pacsv.write_csv(rows(0), tmp_path / "empty.csv")
    cfg = data_config(split={"kind": "files", "train": "tr.csv", "valid": "tr.csv", "test": "empty.csv"})
    with pytest.raises(DataError) as info:
        load_splits(cfg, base_dir=tmp_path)
    assert str(info.value) == f"{tmp_path / 'empty.csv'}: the file has a header and no data rows"


def test_a_time_split_on_a_constant_column_is_an_error() -> None:
    import pyarrow as pa

    from ranker.config.schema import TimeSplit
    from ranker.data.readers import cut
    from ranker.errors import DataError

    table = pa.table({"t": [5, 5, 5, 5], "x": [1, 2, 3, 4]})
    with pytest.raises(DataError, match="time column 't' holds one value in every row"):
        cut(table, TimeSplit(kind="time", column="t"), "rows.csv")


def test_ids_wider_than_int64_are_read_exactly(tmp_path: Path) -> None:
    """Hashed 20-digit ids would be parsed as floats and merge; they are read as text instead."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from ranker.config import load_config
    from ranker.data.readers import load_splits

    users = [str(18_000_000_000_000_000_000 + i) for i in range(199)]  # > 2**63, distinct
    rows = "\n".join(f"{u},{i % 7},{i % 2}" for i, u in enumerate(users))
    (tmp_path / "rows.csv").write_text("user,item,click\n" + rows + "\n")
    cfg = load_config(
        base={
            "data": {
                "path": str(tmp_path / "rows.csv"),
                "split": {"kind": "random"},
                "features": [{"kind": "categorical", "name": "user"}, {"kind": "categorical", "name": "item"}],
                "tasks": [{"name": "click"}],
            }
        }
    )
    tables = load_splits(cfg.data)
    read = [v for t in tables.values() for v in t.column("user").to_pylist()]
    assert sorted(read) == sorted(users) and tables["train"].column("user").type == pa.string()
    assert pa.types.is_integer(tables["train"].column("item").type)  # narrow ids keep their type
    pq.write_table(
        pa.table(
            {
                "user": pa.array([2**64 - 1 - i for i in range(10)], pa.uint64()),
                "item": list(range(10)),
                "click": [0, 1] * 5,
            }
        ),
        tmp_path / "rows.parquet",
    )
    cfg = load_config(
        base={**cfg.model_dump(), "data": {**cfg.data.model_dump(), "path": str(tmp_path / "rows.parquet")}}
    )
    tables = load_splits(cfg.data)
    assert tables["train"].column("user").type == pa.string()
    assert str(2**64 - 1) in [v for t in tables.values() for v in t.column("user").to_pylist()]
