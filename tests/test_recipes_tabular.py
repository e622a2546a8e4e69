"""Recipes C-Frappe, T-Adult, MT-Census and R-Beauty (+ siblings) on the offline raw files.

Needs ``$RANKER_DATA_DIR`` (default ``../shared/data``) holding the staged files; a recipe whose
files are absent is skipped, never downloaded. The cache goes to a temporary folder.
"""

from __future__ import annotations

import gzip
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from ranker.config.schema import DataConfig
from ranker.data.recipes import PreparedDataset, Recipe, get_recipe, prepare
from ranker.data.recipes import adult as adult_mod
from ranker.data.recipes import amazon as amazon_mod
from ranker.data.recipes import census as census_mod
from ranker.data.recipes import frappe as frappe_mod
from ranker.errors import DataError

_DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
DATA_DIR = Path(os.environ.get("RANKER_DATA_DIR") or _DEFAULT_DATA)


def _raw(folder: str, name: str) -> Path | None:
    for cand in (DATA_DIR / folder / name, DATA_DIR / folder / f"{name}.gz"):
        if cand.is_file():
            return cand
    return None


def _require(recipe: Recipe) -> None:
    missing = [f"{s.folder}/{s.name}" for s in recipe.sources if _raw(s.folder, s.name) is None]
    if missing:
        pytest.skip(f"raw files {missing} not under RANKER_DATA_DIR={DATA_DIR}")


def _lines(path: Path) -> list[str]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt") as f:
        return f.read().splitlines()


@pytest.fixture(scope="module", autouse=True)
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RANKER_DATA_DIR", str(DATA_DIR))
        mp.setenv("RANKER_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
        yield


def _prepared(recipe: Recipe) -> PreparedDataset:
    _require(recipe)
    return prepare(recipe)


@pytest.fixture(scope="module")
def frappe(env: None) -> PreparedDataset:
    return _prepared(frappe_mod.RECIPES[0])


@pytest.fixture(scope="module")
def adult(env: None) -> PreparedDataset:
    return _prepared(adult_mod.RECIPES[0])


@pytest.fixture(scope="module")
def census(env: None) -> PreparedDataset:
    return _prepared(census_mod.RECIPES[0])


def _cuts(n: int) -> tuple[int, int]:
    return int(0.8 * n), int(0.9 * n)


def _validates(ds: PreparedDataset) -> None:
    data = dict(ds.manifest["data"])
    cfg = DataConfig.model_validate({**data, "split": {"kind": "files", "train": "a", "valid": "b", "test": "c"}})
    cols = set(ds.table("train").column_names)
    assert {f.name for f in cfg.features} <= cols
    assert {t.column for t in cfg.tasks} <= cols
    assert DataConfig.model_validate(ds.data_config()).split is not None


def test_aliases_resolve() -> None:
    for alias, name in [("frappe", "c-frappe"), ("adult", "t-adult"), ("census", "mt-census"),
                        ("beauty", "r-beauty"), ("T-Adult", "t-adult")]:  # fmt: skip
        assert get_recipe(alias).name == name


# --------------------------------------------------------------------------- C-Frappe


def test_frappe_rows_labels_and_split(frappe: PreparedDataset) -> None:
    n = 86_582
    a, b = _cuts(n)
    assert frappe.manifest["rows"] == {"train": a, "valid": b - a, "test": n - b}
    assert (a, b - a, n - b) == (69_265, 8_658, 8_659)
    tables = {s: frappe.table(s) for s in ("train", "valid", "test")}
    assert sum(pc.sum(t["label"]).as_py() for t in tables.values()) == 19_063 + 9_536 == 28_599
    assert str(tables["train"].schema.field("label").type) == "int64"
    assert set(pc.unique(tables["train"]["label"]).to_pylist()) == {0, 1}
    # Independent parse of the raw files, in the protocol's order: validation then test.
    raw = _lines(_raw("frappe", "frappe.validation.libfm")) + _lines(_raw("frappe", "frappe.test.libfm"))
    assert len(raw) == n
    labels = np.array([int(line.split()[0] == "1") for line in raw])
    item = np.array([int(line.split()[2].split(":")[0]) - 957 for line in raw])
    perm = np.random.default_rng(2021).permutation(n)
    for split, ix in (("train", perm[:a]), ("valid", perm[a:b]), ("test", perm[b:])):
        np.testing.assert_array_equal(tables[split]["item"].to_numpy(), item[ix])
        np.testing.assert_array_equal(tables[split]["label"].to_numpy(), labels[ix])
    for name, start, end in frappe_mod.FIELDS:
        col = pc.min_max(pa.chunked_array([t[name] for t in tables.values()])).as_py()
        assert 0 <= col["min"] and col["max"] <= end - start, name
    assert frappe.manifest["data"]["group_column"] == "user"
    assert frappe.manifest["data"]["item_column"] == "item"
    _validates(frappe)


def _frappe_copy(tmp: Path, edit_line: int | None, new_line: str = "") -> Path:
    """A data dir with the Frappe files, uncompressed; `edit_line` (1-based) of test replaced."""
    (tmp / "frappe").mkdir(parents=True)
    shutil.copy(_raw("frappe", "frappe.validation.libfm"), tmp / "frappe" / "frappe.validation.libfm.gz")
    lines = _lines(_raw("frappe", "frappe.test.libfm"))
    if edit_line is not None:
        lines[edit_line - 1] = new_line
    (tmp / "frappe" / "frappe.test.libfm").write_text("\r\n".join(lines) + "\r\n")
    return tmp


@pytest.fixture()
def fresh_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    _require(frappe_mod.RECIPES[0])
    monkeypatch.setenv("RANKER_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("RANKER_DATA_DIR", str(tmp_path / "data"))
    return tmp_path / "data"


def test_corrupted_file_fails_checksum(fresh_env: Path) -> None:
    _frappe_copy(fresh_env, 5, "1 1:1 957:1 5039:1 5046:1 5053:1 5055:1 5058:1 5060:1 5069:1 5149:1")
    with pytest.raises(DataError, match=r"frappe\.test\.libfm.*checksum"):
        prepare(frappe_mod.RECIPES[0])


@pytest.mark.parametrize(
    ("line", "text", "pattern"),
    [
        (7, "1 1:1 957:1 5039:1", r"line 7: expected a label and 10"),
        (9, "0 1:1 957:1 5039:1 5046:1 5053:1 5055:1 5058:1 5060:1 5069:1 5149:1", r"line 9: label"),
        (11, "1 1:1 957:1 5039:1 5046:1 5053:1 5055:1 5058:1 5060:1 5069:1 5149:x", r"line 11: token 10"),
        (13, "-1 1:1 957:1 5039:1 5046:1 5053:1 5055:1 5058:1 5060:1 5069:1 5100:1", r"line 13: .*city.*\[5149, 5381\]"),
    ],
)  # fmt: skip
def test_malformed_libfm_line(fresh_env: Path, line: int, text: str, pattern: str) -> None:
    _frappe_copy(fresh_env, line, text)
    with pytest.raises(DataError, match=r"frappe\.test\.libfm: " + pattern):
        prepare(frappe_mod.RECIPES[0], verify=False)


# --------------------------------------------------------------------------- T-Adult


def test_adult(adult: PreparedDataset) -> None:
    n = 32_561
    cut = int(0.8 * n)
    assert adult.manifest["rows"] == {"train": cut, "valid": n - cut, "test": 16_281}
    tables = {s: adult.table(s) for s in ("train", "valid", "test")}
    pos = {s: pc.sum(t["income"]).as_py() for s, t in tables.items()}
    assert pos["train"] + pos["valid"] == 7_841 and pos["test"] == 3_846
    meta = adult.manifest["meta"]["rows_with_missing"]
    assert meta["train"] + meta["valid"] == 2_399 and meta["test"] == 1_221
    for t in tables.values():
        for name in adult_mod.CATEGORICAL:
            assert not pc.any(pc.equal(t[name], "?")).as_py()
            assert not pc.any(pc.match_substring_regex(t[name], r"^\s|\s$")).as_py()
    assert sum(tables["train"][c].null_count for c in ("workclass", "occupation", "native_country")) > 0
    for name in adult_mod.NUMERICAL:
        assert str(tables["test"].schema.field(name).type) == "int64"
    raw = _lines(_raw("uci-adult", "adult.data"))
    raw = [line for line in raw if line]
    fnlwgt = np.array([int(line.split(", ")[2]) for line in raw])
    perm = np.random.default_rng(2021).permutation(n)
    np.testing.assert_array_equal(tables["train"]["fnlwgt"].to_numpy(), fnlwgt[perm[:cut]])
    np.testing.assert_array_equal(tables["valid"]["fnlwgt"].to_numpy(), fnlwgt[perm[cut:]])
    assert tables["test"]["age"][0].as_py() == 25  # first record after the skipped header line
    data = adult.manifest["data"]
    assert data["group_column"] is None and data["item_column"] is None
    kinds = [f["kind"] for f in data["features"]]
    assert kinds.count("numerical") == 6 and kinds.count("categorical") == 8
    _validates(adult)


# --------------------------------------------------------------------------- MT-Census


def test_census(census: PreparedDataset) -> None:
    n = 99_762
    a, b = _cuts(n)
    assert census.manifest["rows"] == {"train": a, "valid": b - a, "test": n - b}
    tables = {s: census.table(s) for s in ("train", "valid", "test")}
    assert sum(pc.sum(t["income"]).as_py() for t in tables.values()) == 6_186
    assert sum(pc.sum(t["never_married"]).as_py() for t in tables.values()) == 43_143
    cols = tables["train"].column_names
    assert "marital_stat" not in cols and "instance_weight" not in cols
    assert len(cols) == 42 - 3 + 2
    for t in tables.values():
        for name in census_mod.CATEGORICAL:
            assert not pc.any(pc.equal(t[name], "?")).as_py()
    assert tables["train"]["migration_msa"].null_count > 0
    perm = np.random.default_rng(2021).permutation(n)
    path = _raw("census-income-kdd", "census-income.test")
    age = np.array([int(line.split(",", 1)[0]) for line in _lines(path)])
    for split, ix in (("train", perm[:a]), ("valid", perm[a:b]), ("test", perm[b:])):
        np.testing.assert_array_equal(tables[split]["age"].to_numpy(), age[ix])
    data = census.manifest["data"]
    assert [t["name"] for t in data["tasks"]] == ["income", "never_married"]
    kinds = [f["kind"] for f in data["features"]]
    assert kinds.count("numerical") == 7 and kinds.count("categorical") == 32
    _validates(census)


# --------------------------------------------------------------------------- retrieval


@pytest.mark.parametrize("name", [*amazon_mod.S3REC_FILES, "r-beauty-bert4rec"])
def test_sequence_recipes(name: str) -> None:
    recipe = get_recipe(name)
    ds = _prepared(recipe)
    seqs = ds.table("sequences")
    expected = amazon_mod.S3REC_FILES[name][2] if name in amazon_mod.S3REC_FILES else amazon_mod.BERT4REC_COUNTS
    items = pc.list_flatten(seqs["items"])
    assert (seqs.num_rows, ds.manifest["num_items"], len(items)) == expected
    assert pc.min_max(items).as_py() == {"min": 1, "max": expected[1]}
    assert pc.count_distinct(items).as_py() == expected[1]
    assert ds.manifest["max_len"] == 50
    assert seqs["times"].null_count == seqs.num_rows
    assert str(seqs.schema.field("user").type) == "int64"
    assert str(seqs.schema.field("items").type.value_type) == "int64"
    assert pc.min(pc.list_value_length(seqs["items"])).as_py() >= 5
    if name == "r-beauty":
        assert expected == (22_363, 12_101, 198_502)
        first = _lines(_raw("amazon-seqrec-s3rec", "Beauty.txt"))[1].split()
        assert seqs["user"][1].as_py() == int(first[0])
        assert seqs["items"][1].as_py() == [int(x) for x in first[1:]]


def test_malformed_sequence_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bad = tmp_path / "Beauty.txt"
    bad.write_text("1 1 2 3\n2 4 x 5\n")
    with pytest.raises(DataError, match=r"Beauty\.txt: line 2"):
        amazon_mod.read_user_lines(bad)
