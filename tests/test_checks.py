"""Data checked as read (ranker.data.checks): rows named as an editor shows them, labels and
masks, one-class tasks, and ±inf or huge values that must not wreck the fitted statistics."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ranker.config.retrieval import RetrievalData
from ranker.config.schema import NumericalFeature, TaskConfig, TimeSplit
from ranker.data.checks import (
    FileRows,
    check_classes,
    check_float_ids,
    check_labels,
    check_time,
    delimiter_hint,
    numbers,
)
from ranker.data.preprocess import Preprocessor
from ranker.data.readers import cut, read_table
from ranker.errors import DataError
from ranker.retrieval.data import from_file

CSV = FileRows("rows.csv", "csv")


def test_rows_are_named_as_an_editor_shows_them() -> None:
    assert [CSV.at(i) for i in (0, 9)] == ["line 2", "line 11"]  # the header is line 1
    assert FileRows("rows.csv", "csv-no-header").at(0) == "line 1"
    assert FileRows("rows.parquet", "parquet").at(4) == "row 5"
    kept = CSV.kept(np.array([False, True, False, True]))  # after a filter: the file's rows
    assert [kept.at(0), kept.at(1)] == ["line 3", "line 5"]
    assert kept.kept(np.array([False, True])).at(0) == "line 5"


def test_numbers_parse_what_a_csv_reader_would_and_name_the_first_word() -> None:
    t = pa.table({"x": ["1.5", "inf", "-2e3", None, "NaN"], "b": [True, False, True, None, False]})
    np.testing.assert_array_equal(numbers(t, "x", CSV, "x"), [1.5, math.inf, -2000.0, math.nan, math.nan])
    np.testing.assert_array_equal(numbers(t, "b", CSV, "b"), [1.0, 0.0, 1.0, math.nan, 0.0])
    words = pa.table({"x": ["1", "2", "cheap", "dear"]})
    with pytest.raises(DataError, match=r"^rows.csv: price must hold numbers; line 4 holds 'cheap' \(2 such rows\)$"):
        numbers(words, "x", CSV, "price")
    with pytest.raises(
        DataError, match=r"line 2 holds ' 1.5' \(1 such row\) \(spaces around a value: is there a space"
    ):
        numbers(pa.table({"x": [" 1.5", "2"]}), "x", CSV, "price")


def test_labels_and_masks_name_the_line() -> None:
    tasks = [TaskConfig(name="click"), TaskConfig(name="buy", mask_column="click")]
    ok = pa.table({"click": [1, 0, 1, 0], "buy": [1, None, 0, None]})  # buy is missing only where masked
    check_labels(ok, tasks, CSV)
    two = pa.table({"click": [1, 0, 2, 0], "buy": [0, 0, 0, 0]})
    with pytest.raises(DataError, match=r"label column 'click' \(task 'click'\) must be 0/1; line 4 holds 2 \(1 such"):
        check_labels(two, tasks, CSV)
    missing = pa.table({"click": [1, 0, 1, 0], "buy": [1, None, None, None]})
    with pytest.raises(DataError, match=r"'buy' \(task 'buy'\) is missing \(empty or NaN\) on 1 row .*line 4"):
        check_labels(missing, tasks, CSV)
    check_labels(missing, tasks, CSV, missing_masks=True)  # event files: a missing label masks the task
    mask = pa.table({"m": [1.0, None, 0.5], "y": [1, 0, 1]})
    with pytest.raises(DataError, match=r"mask column 'm' \(task 'y'\) must be 0/1; line 4 holds 0.5"):
        check_labels(mask, [TaskConfig(name="y", mask_column="m")], CSV)
    regression = pa.table({"r": [1.5, -math.inf]})
    with pytest.raises(DataError, match="must be finite; line 3 holds -inf"):
        check_labels(regression, [TaskConfig(name="r", kind="regression")], CSV)


def test_one_class_in_train_is_refused_and_in_valid_or_test_warned(capsys: pytest.CaptureFixture[str]) -> None:
    tasks = [TaskConfig(name="click"), TaskConfig(name="buy", mask_column="click")]
    where = {s: f"rows.csv ({s} split)" for s in ("train", "valid", "test")}
    both, zeros = np.array([0.0, 1.0, 1.0]), np.zeros(3)
    labels = {s: {"click": both, "buy": both} for s in where}
    check_classes(labels, tasks, where)
    assert capsys.readouterr().err == ""
    with pytest.raises(DataError, match=r"^rows.csv \(train split\): task 'buy' has only label 0 on its 3 rows"):
        check_classes({**labels, "train": {"click": both, "buy": zeros}}, tasks, where)
    with pytest.raises(DataError, match="task 'buy' has no row where it is defined"):
        check_classes({**labels, "train": {"click": both, "buy": zeros[:0]}}, tasks, where)
    check_classes(
        {**labels, "valid": {"click": zeros, "buy": both}, "test": {"click": both, "buy": np.ones(2)}}, tasks, where
    )
    err = capsys.readouterr().err.splitlines()
    assert err == [
        "warning: rows.csv (valid split): task 'click' has only label 0 on its 3 rows: its valid AUC is "
        "undefined, and model selection uses the other tasks",
        "warning: rows.csv (test split): task 'buy' has only label 1 on its 2 rows: its test AUC is undefined",
    ]
    with pytest.raises(DataError, match=r"no task has both classes in the valid split \(click: only label 0 on its 3"):
        check_classes({**labels, "valid": {"click": zeros, "buy": zeros[:0]}}, tasks, where)
    with_regression = [*tasks, TaskConfig(name="r", kind="regression")]  # selection falls back to its RMSE
    check_classes(
        {s: {**v, "r": both} for s, v in {**labels, "valid": {"click": zeros, "buy": zeros}}.items()},
        with_regression,
        where,
    )


def test_a_few_infinities_do_not_move_the_fitted_statistics() -> None:
    """The issue's case: ±inf rows left the log1p statistics at ±709 for every row."""
    rng = np.random.default_rng(0)
    x = rng.exponential(20.0, 200)
    dirty = np.concatenate([x, [np.inf, np.inf, -np.inf]])
    for transform in ("standard", "log1p", "cdf", "sigmoid", "bins"):
        feature = NumericalFeature(kind="numerical", name="x", transform=transform)
        clean = Preprocessor([feature], []).fit(pa.table({"x": x}))
        fitted = Preprocessor([feature], []).fit(pa.table({"x": dirty}))
        assert fitted.numeric["x"] == clean.numeric["x"], transform
        np.testing.assert_array_equal(  # every finite row encodes exactly as without the infinities
            fitted.transform(pa.table({"x": dirty})).arrays()["num" if transform != "bins" else "cat/x"][:200],
            clean.transform(pa.table({"x": x})).arrays()["num" if transform != "bins" else "cat/x"],
        )
    logged = np.log1p(x)
    state = (
        Preprocessor([NumericalFeature(kind="numerical", name="x", transform="log1p")], [])
        .fit(pa.table({"x": dirty}))
        .numeric["x"]
    )
    assert (state.mean, state.std) == pytest.approx((logged.mean(), logged.std()))


def test_ple_edges_leave_infinite_rows_out() -> None:
    x = np.arange(1.0, 101.0)
    feature = NumericalFeature(kind="numerical", name="x")
    clean = Preprocessor([feature], [], ple_bins=4).fit(pa.table({"x": x}))
    dirty = Preprocessor([feature], [], ple_bins=4).fit(pa.table({"x": np.concatenate([x, [np.inf] * 30])}))
    assert dirty.numeric["x"].ple_edges == clean.numeric["x"].ple_edges


def test_values_near_the_float64_limit_keep_finite_statistics() -> None:
    """(1e308)² overflows: the statistics are taken on values scaled by max |x| instead."""
    pre = Preprocessor([NumericalFeature(kind="numerical", name="x", clip=10)], []).fit(
        pa.table({"x": [1e308, -1e308, 0.0]})
    )
    assert pre.numeric["x"].mean == 0.0
    assert pre.numeric["x"].std == pytest.approx(1e308 * math.sqrt(2 / 3))
    got = pre.transform(pa.table({"x": [1e308, 0.0]})).num[:, 0]
    np.testing.assert_allclose(got, [math.sqrt(3 / 2), 0.0], rtol=1e-6)
    small = Preprocessor([NumericalFeature(kind="numerical", name="x")], []).fit(pa.table({"x": [1.0, 3.0]}))
    assert (small.numeric["x"].mean, small.numeric["x"].std) == (2.0, 1.0)  # the plain path, unchanged


def test_float_ids_beyond_2_53_are_refused() -> None:
    check_float_ids(pa.table({"user": [1.0, 2.0**53 - 1, math.nan]}), {"user"}, CSV)
    with pytest.raises(DataError, match=r"id column 'user' holds floating-point numbers beyond 2\*\*53.*row 2"):
        check_float_ids(pa.table({"user": [1.0, 2.0**60]}), {"user"}, FileRows("x.parquet", "parquet"))


def test_times_and_delimiter_hints() -> None:
    check_time(
        pa.table({"t": ["2024-03-01", "2024-03-01 10:00:00", "2024-03-01T10:00:00.5+02:00", "-5"]}), "t", CSV, "k"
    )
    with pytest.raises(DataError, match=r"'t' \(split.column\) must hold integers .* line 3 holds '03/01/2024'"):
        check_time(pa.table({"t": ["2024-03-01", "03/01/2024"]}), "t", CSV, "split.column")
    with pytest.raises(DataError, match=r"'t' \(k\) is empty on 1 row \(first: line 3\)"):
        check_time(pa.table({"t": [1, None]}), "t", CSV, "k")
    assert "looks ';'-separated: set data.csv.delimiter: ';'" in delimiter_hint(["user;item"], ",")
    assert "looks ','-separated" in delimiter_hint(["user,item"], ";")
    assert delimiter_hint(["user", "item"], ",") == "" and delimiter_hint(["user"], ",") == ""


def test_a_time_split_orders_iso_text_by_time_not_by_text() -> None:
    # 10:00 at +02:00 is 08:00 UTC: before 09:00 UTC, though it sorts after it as text
    t = pa.table(
        {"row": [0, 1, 2], "ts": ["2020-01-01T09:00:00Z", "2020-01-01T10:00:00+02:00", "2020-01-02T00:00:00Z"]}
    )
    parts = cut(t, TimeSplit(kind="time", column="ts", fractions=(0.34, 0.33, 0.33)), "t")
    assert [parts[s].column("row").to_pylist() for s in ("train", "valid", "test")] == [[1], [0], [2]]


def test_a_csv_with_a_byte_order_mark_reads_clean_names(tmp_path: Path) -> None:
    (tmp_path / "x.csv").write_bytes(b"\xef\xbb\xbfuser,click\nu1,1\n")
    assert read_table(tmp_path / "x.csv").column_names == ["user", "click"]


def test_event_times_may_be_negative_and_in_any_order(tmp_path: Path) -> None:
    """Times before 1970 are times; the file's order does not matter, only (time, row) does."""
    users = ["a"] * 4 + ["b"] * 3
    items = ["i1", "i2", "i3", "i4", "i2", "i3", "i1"]
    times = [-300, -200, -100, 5, -50, 0, 50]
    for name, order in (("sorted", range(7)), ("shuffled", [6, 2, 0, 5, 3, 1, 4])):
        table = pa.table(
            {"u": [users[i] for i in order], "i": [items[i] for i in order], "t": [times[i] for i in order]}
        )
        pq.write_table(table, tmp_path / f"{name}.parquet")
    seqs = [
        from_file(RetrievalData(path=str(tmp_path / f"{n}.parquet"), user_column="u", item_column="i", time_column="t"))
        for n in ("sorted", "shuffled")
    ]
    for s in seqs:
        assert s.items.to_pylist() == ["i1", "i2", "i3", "i4"]
        assert s.sequences.items.tolist() == [1, 2, 3, 4, 2, 3, 1]  # per user, by time
        assert s.sequences.times.tolist() == times
