"""Vocabularies and the Preprocessor: ids, missing values, numerical contract, serving state."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
from pydantic import TypeAdapter

from ranker.config.schema import Feature, TaskConfig
from ranker.data.preprocess import Preprocessor
from ranker.data.readers import read_table
from ranker.data.vocab import MISSING, OOV, PAD, Vocabulary
from ranker.errors import ConfigError, DataError

_FEATURES = TypeAdapter(list[Feature])


def features(*specs: dict[str, Any]) -> list[Feature]:
    return _FEATURES.validate_python(list(specs))


def fitted(specs: list[dict[str, Any]], train: pa.Table, tasks: list[str] = ()) -> Preprocessor:
    return Preprocessor(features(*specs), [TaskConfig(name=t) for t in tasks]).fit(train)


# ---------------------------------------------------------------------- Vocabulary


def test_reserved_ids_and_sorted_known_values() -> None:
    assert (PAD, OOV, MISSING) == (0, 1, 2)
    vocab = Vocabulary.fit(pa.array(["b", "a", "c", "a", None]))
    assert vocab.values.to_pylist() == ["a", "b", "c"]
    assert vocab.size == 3 + 3
    ids = vocab.lookup(pa.array(["a", "b", "c", "zzz", None]))
    assert ids.tolist() == [3, 4, 5, OOV, MISSING]
    assert ids.dtype == np.int64


def test_min_count_sends_rare_values_to_oov() -> None:
    vocab = Vocabulary.fit(pa.array(["x", "x", "y", "z", "z", "z"]), min_count=2)
    assert vocab.values.to_pylist() == ["x", "z"]
    assert vocab.lookup(pa.array(["x", "y", "z"])).tolist() == [3, OOV, 4]


def test_int_vocabulary_sorted_numerically() -> None:
    vocab = Vocabulary.fit(pa.array([10, 2, 33, 2], pa.int32()))
    assert vocab.dtype == "int"
    assert vocab.values.to_pylist() == [2, 10, 33]
    assert vocab.lookup(pa.array([33, 2, 10, 7], pa.int16())).tolist() == [5, 3, 4, OOV]


def test_integral_floats_are_ints() -> None:
    # an int column with gaps reads from CSV as float
    vocab = Vocabulary.fit(pa.array([3.0, 1.0, None, float("nan"), 3.0]))
    assert vocab.dtype == "int"
    assert vocab.values.to_pylist() == [1, 3]
    assert vocab.lookup(pa.array([1, 3], pa.int64())).tolist() == [3, 4]
    # non-integral / infinite floats at lookup are unseen values, the integral ones still match
    got = vocab.lookup(pa.array([3.0, 2.5, float("nan"), float("inf"), None, 1.0]))
    assert got.tolist() == [4, OOV, MISSING, OOV, MISSING, 3]


def test_int_vocabulary_looks_up_strings() -> None:
    vocab = Vocabulary.fit(pa.array([1, 3]))
    got = vocab.lookup(pa.array(["3", "x", None, "", " 1 ", "1.0", "-3", "99999999999999999999999"]))
    assert got.tolist() == [4, OOV, MISSING, MISSING, 3, 3, OOV, OOV]


def test_str_vocabulary_looks_up_ints_and_floats() -> None:
    vocab = Vocabulary.fit(pa.array(["a", "1", "2"]))
    assert vocab.dtype == "str"
    assert vocab.lookup(pa.array([1, 2, 5])).tolist() == [3, 4, OOV]
    assert vocab.lookup(pa.array([1.0, 2.0, 2.5, None])).tolist() == [3, 4, OOV, MISSING]


def test_non_integral_floats_are_a_string_vocabulary() -> None:
    vocab = Vocabulary.fit(pa.array([1.5, 2.0, float("inf")]))
    assert vocab.dtype == "str"
    assert vocab.lookup(pa.array([2.0, 1.5, 0.5, float("inf")])).tolist() == [4, 3, OOV, 5]


def test_empty_string_and_nan_are_missing() -> None:
    vocab = Vocabulary.fit(pa.array(["a", "", "  ", None]))
    assert vocab.values.to_pylist() == ["a"]
    assert vocab.lookup(pa.array(["", " ", None, "a"])).tolist() == [MISSING, MISSING, MISSING, 3]


def test_all_null_column_does_not_crash() -> None:
    # an all-empty CSV column reads with arrow's null type
    vocab = Vocabulary.fit(pa.array([1, 2]))
    assert vocab.lookup(pa.nulls(3)).tolist() == [MISSING] * 3
    empty = Vocabulary.fit(pa.nulls(2))
    assert len(empty.values) == 0
    assert empty.lookup(pa.array(["a", None])).tolist() == [OOV, MISSING]


def test_bool_and_dictionary_columns() -> None:
    vocab = Vocabulary.fit(pa.array([True, False, True]))
    assert vocab.lookup(pa.array([False, True, None])).tolist() == [3, 4, MISSING]
    dict_col = pa.array(["b", "a", "b"]).dictionary_encode()
    vocab = Vocabulary.fit(dict_col)
    assert vocab.lookup(pa.array(["a", "b"]).dictionary_encode()).tolist() == [3, 4]


def test_unsupported_type_is_a_data_error() -> None:
    with pytest.raises(DataError, match="expected categorical values"):
        Vocabulary.fit(pa.array([[1], [2]]))


def test_vocab_state_round_trip() -> None:
    for col in (pa.array(["q", "p"]), pa.array([5, 4])):
        vocab = Vocabulary.fit(col)
        again = Vocabulary.from_state(json.loads(json.dumps(vocab.to_state())))
        assert again.dtype == vocab.dtype and again.values.equals(vocab.values)


# ---------------------------------------------------------------------- categorical features


def test_categorical_unseen_at_transform_is_oov(tmp_path: Path) -> None:
    train = pa.table({"city": ["paris", "rome", "paris"], "uid": [7, 8, 9]})
    pre = fitted([{"kind": "categorical", "name": "city"}, {"kind": "categorical", "name": "uid"}], train)
    valid = pa.table({"city": ["oslo", "rome", None, ""], "uid": [9, 100, None, 7]})
    enc = pre.transform(valid)
    assert enc.cat["city"].tolist() == [OOV, 4, MISSING, MISSING]
    assert enc.cat["uid"].tolist() == [5, OOV, MISSING, 3]


def test_vocab_from_shares_the_vocabulary() -> None:
    train = pa.table({"item": ["a", "b"], "prev_item": ["b", "c"]})
    pre = fitted(
        [{"kind": "categorical", "name": "item"}, {"kind": "categorical", "name": "prev_item", "vocab_from": "item"}],
        train,
    )
    enc = pre.transform(train)
    assert enc.cat["prev_item"].tolist() == [4, OOV]  # "c" is not in item's vocabulary
    assert pre.layout().categorical == {"item": "item", "prev_item": "item"}
    assert set(pre.vocabs) == {"item"}


def test_vocab_from_a_non_categorical_is_an_error() -> None:
    with pytest.raises(ConfigError, match="feature 'c': vocab_from 'x' is not a categorical feature"):
        Preprocessor(
            features({"kind": "numerical", "name": "x"}, {"kind": "categorical", "name": "c", "vocab_from": "x"}), []
        )


# ---------------------------------------------------------------------- multi-categorical


def test_multi_from_list_column_truncates_and_pads() -> None:
    train = pa.table({"tags": [["b", "a"], ["c", "a", "b", "d", "e"], [], None]})
    pre = fitted([{"kind": "multi_categorical", "name": "tags", "max_len": 3}], train)
    enc = pre.transform(pa.table({"tags": [["b", "a"], ["c", "a", "b", "d", "e"], [], None, ["zz", None, "a"]]}))
    # a=3 b=4 c=5 d=6 e=7; first max_len values kept, right-padded with 0
    assert enc.multi["tags"].tolist() == [[4, 3, PAD], [5, 3, 4], [PAD, PAD, PAD], [PAD, PAD, PAD], [OOV, MISSING, 3]]


def test_multi_from_separated_string() -> None:
    train = pa.table({"genres": ["Drama|Comedy", "Comedy", "Horror|Drama|Comedy|War"]})
    pre = fitted([{"kind": "multi_categorical", "name": "genres", "max_len": 2}], train)
    # Comedy=3 Drama=4 Horror=5 War=6
    enc = pre.transform(pa.table({"genres": ["Drama|Comedy", "War", "Sci-Fi|Drama|War", None]}))
    assert enc.multi["genres"].tolist() == [[4, 3], [6, PAD], [OOV, 4], [MISSING, PAD]]


def test_multi_custom_separator() -> None:
    train = pa.table({"g": ["a;b", "c"]})
    pre = fitted([{"kind": "multi_categorical", "name": "g", "separator": ";", "max_len": 4}], train)
    assert pre.transform(train).multi["g"].tolist() == [[3, 4, 0, 0], [5, 0, 0, 0]]


def test_multi_fit_counts_values_across_bags() -> None:
    train = pa.table({"g": ["a|b", "a", "c|a|b"]})
    pre = fitted([{"kind": "multi_categorical", "name": "g", "min_count": 2, "max_len": 3}], train)
    assert pre.vocabs["g"].values.to_pylist() == ["a", "b"]
    assert pre.transform(train).multi["g"].tolist() == [[3, 4, 0], [3, 0, 0], [OOV, 3, 4]]


# ---------------------------------------------------------------------- numerical


def test_standardisation_hand_computed() -> None:
    train = pa.table({"x": [1.0, 2.0, 3.0, 6.0]})
    pre = fitted([{"kind": "numerical", "name": "x", "clip": 100}], train)
    mean, std = 3.0, math.sqrt((4 + 1 + 0 + 9) / 4)
    assert (pre.numeric["x"].mean, pre.numeric["x"].std) == pytest.approx((mean, std))
    enc = pre.transform(pa.table({"x": [3.0, 6.0, 0.0]}))
    np.testing.assert_allclose(enc.num[:, 0], [0.0, 3 / std, -3 / std], rtol=1e-6)
    assert enc.num.dtype == np.float32 and enc.num.shape == (3, 1)
    assert enc.num_missing.tolist() == [[0.0], [0.0], [0.0]]


def test_signed_log1p_then_standard() -> None:
    values = [-10.0, 0.0, 3.0, 100.0]
    train = pa.table({"x": values})
    pre = fitted([{"kind": "numerical", "name": "x", "transform": "log1p", "clip": 100}], train)
    logged = np.array([-math.log1p(10.0), 0.0, math.log1p(3.0), math.log1p(100.0)])
    assert (pre.numeric["x"].mean, pre.numeric["x"].std) == pytest.approx((logged.mean(), logged.std()))
    enc = pre.transform(train)
    np.testing.assert_allclose(enc.num[:, 0], (logged - logged.mean()) / logged.std(), rtol=1e-5)


def test_missing_and_infinite_values() -> None:
    train = pa.table({"x": [1.0, 2.0, 3.0, None, float("nan")]})
    pre = fitted([{"kind": "numerical", "name": "x", "clip": 2.5}], train)
    # statistics of the finite values only
    assert (pre.numeric["x"].mean, pre.numeric["x"].std) == pytest.approx((2.0, math.sqrt(2 / 3)))
    enc = pre.transform(pa.table({"x": [float("nan"), None, float("inf"), -float("inf"), 1000.0]}))
    assert enc.num[:, 0].tolist() == [0.0, 0.0, 2.5, -2.5, 2.5]
    assert enc.num_missing[:, 0].tolist() == [1.0, 1.0, 0.0, 0.0, 0.0]


def test_statistics_fitted_on_train_only() -> None:
    train = pa.table({"x": [0.0, 2.0]})  # mean 1, std 1
    pre = fitted([{"kind": "numerical", "name": "x", "clip": 50}], train)
    other = pa.table({"x": [10.0, 20.0, 30.0]})
    enc = pre.transform(other)
    assert enc.num[:, 0].tolist() == [9.0, 19.0, 29.0]
    assert (pre.numeric["x"].mean, pre.numeric["x"].std) == (1.0, 1.0)  # transform does not refit


def test_a_constant_column_does_not_divide_by_zero_and_an_empty_one_is_refused() -> None:
    pre = fitted([{"kind": "numerical", "name": "c"}], pa.table({"c": [4.0, 4.0]}))
    assert (pre.numeric["c"].mean, pre.numeric["c"].std) == (4.0, 1.0)
    enc = pre.transform(pa.table({"c": [5.0, None]}))
    assert enc.num.tolist() == [[1.0], [0.0]]
    assert enc.num_missing.tolist() == [[0.0], [1.0]]
    with pytest.raises(DataError, match=r"column 'e' \(feature 'e'\) has no finite value in 2 rows"):
        fitted([{"kind": "numerical", "name": "e"}], pa.table({"e": pa.array([None, None], pa.float64())}))


def test_numerical_from_csv_text_numbers() -> None:
    pre = fitted([{"kind": "numerical", "name": "x", "clip": 50}], pa.table({"x": ["1", "3"]}))
    assert pre.transform(pa.table({"x": ["5", None]})).num[:, 0].tolist() == [3.0, 0.0]  # mean 2, std 1


# ---------------------------------------------------------------------- dense


def test_dense_round_trip_and_nulls() -> None:
    rows = [[0.5, -1.0, 2.0], None, [1.0, float("nan"), 3.0]]
    table = pa.table({"emb": rows})
    pre = fitted([{"kind": "dense", "name": "emb", "dim": 3}], table)
    out = pre.transform(table).dense["emb"]
    assert out.dtype == np.float32 and out.shape == (3, 3)
    assert out.tolist() == [[0.5, -1.0, 2.0], [0.0, 0.0, 0.0], [1.0, 0.0, 3.0]]


def test_dense_fixed_size_list_with_null_row() -> None:
    col = pa.array([[1.0, 2.0], None, [3.0, 4.0]], type=pa.list_(pa.float32(), 2))
    pre = fitted([{"kind": "dense", "name": "emb", "dim": 2}], pa.table({"emb": col}))
    assert pre.transform(pa.table({"emb": col})).dense["emb"].tolist() == [[1.0, 2.0], [0.0, 0.0], [3.0, 4.0]]


def test_dense_parquet_round_trip(tmp_path: Path) -> None:
    vectors = np.arange(12, dtype=np.float32).reshape(4, 3)
    pq.write_table(pa.table({"v": list(vectors)}), tmp_path / "d.parquet")
    table = read_table(tmp_path / "d.parquet")
    pre = fitted([{"kind": "dense", "name": "vec", "column": "v", "dim": 3}], table)
    np.testing.assert_array_equal(pre.transform(table).dense["vec"], vectors)


def test_dense_wrong_length_names_the_column() -> None:
    table = pa.table({"emb": [[1.0, 2.0, 3.0], [1.0, 2.0], [1.0, 2.0, 3.0]]})
    pre = Preprocessor(features({"kind": "dense", "name": "vec", "column": "emb", "dim": 3}), [])
    with pytest.raises(DataError) as info:
        pre.fit(table).transform(table, source="valid.parquet")
    msg = str(info.value)
    assert "valid.parquet" in msg and "'emb'" in msg and "dim 3" in msg and "row 2 (1-based in split order)" in msg


# ---------------------------------------------------------------------- history


HIST = [
    {"kind": "categorical", "name": "item"},
    {
        "kind": "history",
        "name": "hist",
        "item_column": "h_items",
        "item_feature": "item",
        "action_column": "h_actions",
        "time_column": "h_secs",
        "max_len": 3,
    },
]


def history_table() -> pa.Table:
    return pa.table(
        {
            "item": ["a", "b", "c"],
            "h_items": [["a", "b"], ["c", "a", "b", "new"], None],
            "h_actions": [["view", "buy"], ["view", "view", "buy", "buy"], None],
            "h_secs": [[7200.0, 3600.0], [4.0, 3.0, 2.0, 1.0], None],
        }
    )


def test_history_left_padded_most_recent_last() -> None:
    table = history_table()
    pre = fitted(HIST, table)
    hist = pre.transform(table).hist["hist"]
    # items share the item feature's vocabulary: a=3 b=4 c=5; unseen "new" -> OOV
    assert hist["items"].tolist() == [[PAD, 3, 4], [3, 4, OOV], [PAD, PAD, PAD]]
    # actions: buy=3 view=4 (own vocabulary fitted on train)
    assert hist["actions"].tolist() == [[PAD, 4, 3], [4, 3, 3], [PAD, PAD, PAD]]
    expect_times = np.log1p(np.array([[0, 7200, 3600], [3, 2, 1], [0, 0, 0]]) / 3600.0)
    np.testing.assert_allclose(hist["times"], expect_times, rtol=1e-6)
    assert hist["times"].dtype == np.float32
    layout = pre.layout().history["hist"]
    assert layout == {"item_vocab": "item", "n_actions": 5, "max_len": 3, "has_time": True}


def test_history_items_do_not_extend_the_vocabulary() -> None:
    table = history_table()
    pre = fitted(HIST, table)
    assert pre.vocabs["item"].values.to_pylist() == ["a", "b", "c"]  # "new" only in histories


def test_history_negative_and_nan_times_clip_to_zero() -> None:
    table = history_table()
    pre = fitted(HIST, table)
    odd = table.set_column(3, "h_secs", pa.array([[-50.0, float("nan")], [1.0, 2.0, 3.0, 4.0], []]))
    times = pre.transform(odd).hist["hist"]["times"]
    assert times[0].tolist() == [0.0, 0.0, 0.0]


def test_history_lengths_must_match() -> None:
    table = history_table()
    pre = fitted(HIST, table)
    bad = table.set_column(2, "h_actions", pa.array([["view"], ["view"] * 4, None]))
    with pytest.raises(DataError, match="'h_items' and 'h_actions' differ in length"):
        pre.transform(bad)
    bad = table.set_column(3, "h_secs", pa.array([[1.0], [1.0] * 4, None]))
    with pytest.raises(DataError, match="'h_items' and 'h_secs' differ in length"):
        pre.transform(bad)


def test_history_item_feature_must_be_categorical() -> None:
    specs = [{"kind": "numerical", "name": "item"}, HIST[1]]
    with pytest.raises(ConfigError, match="item_feature 'item' is not a categorical feature"):
        Preprocessor(features(*specs), [])


# ---------------------------------------------------------------------- serving state


ALL = [
    {"kind": "categorical", "name": "user"},
    {"kind": "categorical", "name": "item"},
    {"kind": "categorical", "name": "cand", "column": "item2", "vocab_from": "item"},
    {"kind": "multi_categorical", "name": "genres", "max_len": 2},
    {"kind": "numerical", "name": "price", "transform": "log1p"},
    {"kind": "numerical", "name": "age"},
    {"kind": "dense", "name": "emb", "dim": 2},
    {
        "kind": "history",
        "name": "hist",
        "item_column": "h_items",
        "item_feature": "item",
        "action_column": "h_actions",
        "time_column": "h_secs",
        "max_len": 3,
    },
]


def full_table(rng: np.random.Generator, n: int) -> pa.Table:
    items = [f"i{k}" for k in rng.integers(0, 9, n)]
    lengths = rng.integers(0, 5, n)
    return pa.table(
        {
            "user": rng.integers(0, 6, n),
            "item": items,
            "item2": [f"i{k}" for k in rng.integers(0, 12, n)],
            "genres": ["|".join(f"g{k}" for k in rng.integers(0, 5, rng.integers(1, 4))) for _ in range(n)],
            "price": np.where(rng.random(n) < 0.1, np.nan, rng.exponential(50, n)),
            "age": rng.normal(40, 10, n),
            "emb": [list(v) for v in rng.normal(size=(n, 2))],
            "h_items": [[f"i{k}" for k in rng.integers(0, 12, m)] for m in lengths],
            "h_actions": [[["click", "buy"][k] for k in rng.integers(0, 2, m)] for m in lengths],
            "h_secs": [list(rng.uniform(0, 1e5, m)) for m in lengths],
            "click": rng.integers(0, 2, n),
        }
    )


def assert_same_encoding(a: Any, b: Any) -> None:
    fa, fb = a.arrays(), b.arrays()
    assert fa.keys() == fb.keys()
    for k in fa:
        np.testing.assert_array_equal(fa[k], fb[k], err_msg=k)
        assert fa[k].dtype == fb[k].dtype, k


def test_state_dict_round_trip_gives_identical_encoding(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    train, other = full_table(rng, 60), full_table(rng, 25)
    pre = Preprocessor(features(*ALL), [TaskConfig(name="click")]).fit(train)
    expected = pre.transform(other)
    assert len(expected.arrays()) == 14  # every kind of feature is covered (with the masks)
    again = Preprocessor.from_state(json.loads(json.dumps(pre.state_dict())))
    assert_same_encoding(expected, again.transform(other))
    assert again.layout() == pre.layout()

    path = tmp_path / "run" / "preprocessor.json"
    pre.save(path)
    loaded = Preprocessor.load(path)
    assert_same_encoding(expected, loaded.transform(other))
    assert loaded.numeric == pre.numeric


def test_encoding_read_back_from_csv_and_parquet_agree(tmp_path: Path) -> None:
    table = pa.table(
        {
            "user": [3, 1, None, 2],
            "city": ["x", None, "y", "x"],
            "price": [1.5, None, 3.0, float("inf")],
            "click": [1, 0, 0, 1],
        }
    )
    pacsv.write_csv(table, tmp_path / "t.csv")
    pq.write_table(table, tmp_path / "t.parquet")
    specs = [
        {"kind": "categorical", "name": "user"},
        {"kind": "categorical", "name": "city"},
        {"kind": "numerical", "name": "price"},
    ]
    from_csv = read_table(tmp_path / "t.csv")
    from_pq = read_table(tmp_path / "t.parquet")
    pre = fitted(specs, from_pq, ["click"])
    assert_same_encoding(pre.transform(from_pq), pre.transform(from_csv))
    assert pre.transform(from_csv).cat["user"].tolist() == [5, 3, MISSING, 4]


def test_a_mask_column_must_be_0_or_1() -> None:
    import pyarrow as pa

    from ranker.config.schema import TaskConfig
    from ranker.data.preprocess import _labels
    from ranker.errors import DataError

    table = pa.table({"watch": [1, 0, 1], "like": [1, 0, 0], "m": [1.0, None, 2.0]})
    tasks = [TaskConfig(name="like", mask_column="m")]
    with pytest.raises(
        DataError, match=r"mask column 'm' \(task 'like'\) must be 0/1; row 3 \(1-based in split order\) holds 2.0"
    ):
        _labels(table, tasks, "rows.csv")
    ok = pa.table({"like": [1, 0, 0], "m": [1.0, None, 0.0]})  # missing = masked
    labels, mask = _labels(ok, tasks, "rows.csv")
    assert mask[:, 0].tolist() == [1.0, 0.0, 0.0]
