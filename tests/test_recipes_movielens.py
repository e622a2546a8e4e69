"""MovieLens recipes (R-ML100K, R-ML1M, RK-ML100K) against brute-force readings of the raw files.

Needs the offline copies: ``RANKER_DATA_DIR`` pointing at ``shared/data`` (the data tests are
skipped otherwise). Splits are prepared once per module into a temporary cache.
"""

from __future__ import annotations

import gzip
import os
from collections import Counter, defaultdict
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from ranker.config.schema import DataConfig
from ranker.data.recipes import get_recipe, prepare
from ranker.data.recipes import rk_ml100k as rk
from ranker.data.recipes.base import PreparedDataset
from ranker.data.recipes.movielens import R_ML1M, R_ML100K, RK_ML100K, build_r_ml1m
from ranker.data.recipes.movielens_io import ML1M_MOVIES, U_DATA, U_USER, read_ml1m_ratings
from ranker.data.sources import locate
from ranker.errors import DataError

_DATA = os.environ.get("RANKER_DATA_DIR", "")
_NEEDED = (
    "movielens-100k/u.data.gz",
    "movielens-100k/u.user",
    "movielens-100k/u.item",
    "movielens-1m/movies.dat",
    "movielens-1m/sequences.txt.gz",
    "movielens-1m/ratings.users0001-2999.dat.gz",
)
_MISSING = [f for f in _NEEDED if not (_DATA and (Path(_DATA) / f).is_file())]
needs_data = pytest.mark.skipif(
    bool(_MISSING),
    reason=f"MovieLens offline copies not found: set RANKER_DATA_DIR to shared/data (missing: {', '.join(_MISSING)})",
)
ML100K = Path(_DATA) / "movielens-100k"
ML1M = Path(_DATA) / "movielens-1m"


@pytest.fixture(scope="module", autouse=True)
def _tmp_cache(tmp_path_factory: pytest.TempPathFactory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RANKER_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
        yield


# --------------------------------------------------------------------------- brute force


@pytest.fixture(scope="module")
def events() -> list[tuple[int, int, int, int]]:
    """u.data as (user, item, rating, timestamp), ordered by (timestamp, row) with sorted()."""
    with gzip.open(ML100K / "u.data.gz", "rt") as f:
        rows = [tuple(int(x) for x in line.split("\t")) for line in f]
    order = sorted(range(len(rows)), key=lambda k: (rows[k][3], k))
    return [rows[k] for k in order]  # type: ignore[misc]


@pytest.fixture(scope="module")
def rk_prepared() -> PreparedDataset:
    return prepare(RK_ML100K)


@pytest.fixture(scope="module")
def rk_rows(rk_prepared: PreparedDataset) -> pa.Table:
    return pa.concat_tables([rk_prepared.table(s) for s in ("train", "valid", "test")])


def _np(table: pa.Table, column: str) -> np.ndarray:
    return table[column].to_numpy()


# --------------------------------------------------------------------------- R-ML100K


@needs_data
def test_r_ml100k_sequences_match_brute_force(events: list) -> None:
    ds = prepare(R_ML100K)
    assert ds.manifest["num_items"] == 1682 and ds.manifest["max_len"] == 200
    table = ds.table("sequences")
    assert table.num_rows == 943
    assert sum(len(x) for x in table["items"].to_pylist()) == 100_000
    expect_items, expect_times = defaultdict(list), defaultdict(list)
    for u, i, _r, t in events:
        expect_items[u].append(i)
        expect_times[u].append(t)
    for row in table.to_pylist():
        assert row["items"] == expect_items[row["user"]]
        assert row["times"] == expect_times[row["user"]]
    # Ties decide the order often (PROTOCOLS.md: 75,772 ratings share a (user, second)).
    shared = Counter((e[0], e[3]) for e in events)
    assert sum(c for c in shared.values() if c > 1) == 75_772


# --------------------------------------------------------------------------- RK-ML100K


@needs_data
def test_rk_split_sizes_and_layout(rk_prepared: PreparedDataset, rk_rows: pa.Table) -> None:
    events_per_split = {"train": 80_000, "valid": 10_000, "test": 10_000}
    for split, n in events_per_split.items():
        t = rk_prepared.table(split)
        assert t.num_rows == 5 * n
        assert int(pc.sum(t["watch"]).as_py()) == n
    assert rk_prepared.manifest["meta"]["events"] == events_per_split
    watch = _np(rk_rows, "watch").reshape(-1, 5)
    assert (watch[:, 0] == 1).all() and (watch[:, 1:] == 0).all()
    for col in ("user_id", "timestamp"):
        block = _np(rk_rows, col).reshape(-1, 5)
        assert (block == block[:, :1]).all(), f"{col} differs within an event's rows"
    assert _np(rk_prepared.table("train"), "timestamp").max() <= _np(rk_prepared.table("valid"), "timestamp").min()


@needs_data
def test_rk_positives_and_labels(rk_rows: pa.Table, events: list) -> None:
    users = _np(rk_rows, "user_id").reshape(-1, 5)[:, 0]
    items = _np(rk_rows, "item_id").reshape(-1, 5)[:, 0]
    times = _np(rk_rows, "timestamp").reshape(-1, 5)[:, 0]
    like = _np(rk_rows, "like").reshape(-1, 5)
    ev = np.array(events)
    np.testing.assert_array_equal(users, ev[:, 0])
    np.testing.assert_array_equal(items, ev[:, 1])
    np.testing.assert_array_equal(times, ev[:, 3])
    np.testing.assert_array_equal(like[:, 0], (ev[:, 2] >= 4).astype(np.int8))
    assert (like[:, 1:] == 0).all()
    assert (_np(rk_rows, "like") <= _np(rk_rows, "watch")).all()


@needs_data
def test_rk_negatives_follow_the_protocol(rk_rows: pa.Table, events: list) -> None:
    neg = _np(rk_rows, "item_id").reshape(-1, 5)[:, 1:]
    train_pop = Counter(e[1] for e in events[:80_000])
    all_rated = defaultdict(set)
    for u, i, _r, _t in events:
        all_rated[u].add(i)
    rated: dict[int, set[int]] = defaultdict(set)
    later = 0
    for pos, (u, i, _r, _t) in enumerate(events):
        rated[u].add(i)  # "up to that moment" includes the event itself
        negs = neg[pos].tolist()
        assert len(set(negs)) == 4, f"event {pos}: negatives not distinct {negs}"
        assert not rated[u].intersection(negs), f"event {pos}: negative already rated"
        assert all(train_pop[j] > 0 for j in negs), f"event {pos}: negative without train pop"
        later += len(all_rated[u].intersection(negs))
    assert later > 0  # items the user rates later are allowed as negatives


@needs_data
def test_rk_counters_match_brute_force(rk_rows: pa.Table, events: list) -> None:
    items = _np(rk_rows, "item_id").reshape(-1, 5)
    got_user = _np(rk_rows, "user_n_ratings").reshape(-1, 5)
    got_count = _np(rk_rows, "item_n_ratings").reshape(-1, 5)
    got_mean = rk_rows["item_mean_rating"].to_numpy(zero_copy_only=False).reshape(-1, 5)
    mean_null = rk_rows["item_mean_rating"].is_null().to_numpy(zero_copy_only=False)
    n_user: Counter[int] = Counter()
    n_item: Counter[int] = Counter()
    s_item: Counter[int] = Counter()
    exp_user = np.zeros(len(events))
    exp_count = np.zeros(items.shape)
    exp_mean = np.full(items.shape, np.nan)
    for pos, (u, i, r, _t) in enumerate(events):
        exp_user[pos] = n_user[u]
        for k, j in enumerate(items[pos].tolist()):
            exp_count[pos, k] = n_item[j]
            if n_item[j]:
                exp_mean[pos, k] = s_item[j] / n_item[j]
        n_user[u] += 1
        n_item[i] += 1
        s_item[i] += r
    np.testing.assert_array_equal(got_user, np.repeat(exp_user[:, None], 5, axis=1))
    np.testing.assert_array_equal(got_count, exp_count)
    np.testing.assert_array_equal(mean_null, np.isnan(exp_mean).reshape(-1))
    ok = ~np.isnan(exp_mean)
    np.testing.assert_allclose(got_mean[ok], exp_mean[ok], rtol=1e-12)


@needs_data
def test_rk_histories_strictly_before(rk_rows: pa.Table, events: list) -> None:
    lengths = pc.list_value_length(rk_rows["hist_item"]).to_numpy()
    assert lengths.max() == 50
    by_user = defaultdict(list)
    for u, i, r, t in events:
        by_user[u].append((i, r, t))
    sample = np.random.default_rng(0).choice(rk_rows.num_rows, size=600, replace=False)
    for row in rk_rows.take(pa.array(sample)).to_pylist():
        past = [e for e in by_user[row["user_id"]] if e[2] < row["timestamp"]][-50:]
        assert row["hist_item"] == [e[0] for e in past]
        assert row["hist_action"] == [e[1] for e in past]
        expect = [float(np.float32(row["timestamp"] - e[2])) for e in past]
        assert row["hist_seconds"] == expect
        assert all(s > 0 for s in row["hist_seconds"])


@needs_data
def test_rk_side_features(rk_rows: pa.Table) -> None:
    users = {}
    for line in (ML100K / "u.user").read_text().splitlines():
        uid, age, gender, occ, zipc = line.split("|")
        users[int(uid)] = (float(age), gender, occ, zipc[0])
    genre_names = [g.split("|")[0] for g in (ML100K / "u.genre").read_text().split("\n") if g]
    items = {}
    for line in (ML100K / "u.item").read_text(encoding="latin-1").splitlines():
        f = line.split("|")
        year = float(f[2][-4:]) if f[2] else None
        items[int(f[0])] = ([g for g, x in zip(genre_names, f[5:], strict=True) if x == "1"], year)
    sample = np.random.default_rng(1).choice(rk_rows.num_rows, size=500, replace=False)
    for row in rk_rows.take(pa.array(sample)).to_pylist():
        assert (row["age"], row["gender"], row["occupation"], row["zip1"]) == users[row["user_id"]]
        assert (row["genres"], row["release_year"]) == items[row["item_id"]]
        when = datetime.fromtimestamp(row["timestamp"], tz=timezone.utc)  # noqa: UP017
        assert (row["hour"], row["weekday"]) == (when.hour, when.weekday())
    assert items[267][1] is None  # u.item's one missing release date
    rows_267 = rk_rows.filter(pc.equal(rk_rows["item_id"], 267))
    assert rows_267.num_rows > 0 and rows_267["release_year"].null_count == rows_267.num_rows


@needs_data
def test_rk_deterministic_and_valid_config(rk_prepared: PreparedDataset) -> None:
    again = RK_ML100K.build({s.name: locate(s) for s in RK_ML100K.sources})
    for split in ("train", "valid", "test"):
        assert again.tables[split].equals(rk_prepared.table(split)), split
    cfg = DataConfig.model_validate(
        {**rk_prepared.manifest["data"], "split": {"kind": "files", "train": "a", "valid": "b", "test": "c"}}
    )
    assert cfg.group_column == "user_id" and cfg.item_column == "item_id"
    assert [t.name for t in cfg.tasks] == ["watch", "like"]
    columns = set(rk_prepared.table("test").column_names)
    for f in cfg.features:
        needed = [f.item_column, f.action_column, f.time_column] if f.kind == "history" else [f.name]
        assert set(needed) <= columns, f.name
    DataConfig.model_validate(rk_prepared.data_config())


def test_recipe_names_and_aliases() -> None:
    assert get_recipe("rk-ml100k") is RK_ML100K
    assert get_recipe("ml-100k") is RK_ML100K and get_recipe("ML100K") is RK_ML100K
    assert get_recipe("r-ml100k") is R_ML100K
    assert get_recipe("r-ml1m") is R_ML1M and get_recipe("ml-1m") is R_ML1M


def test_sampler_rules_on_a_toy_log(monkeypatch: pytest.MonkeyPatch) -> None:
    def first_positions(users: np.ndarray, items: np.ndarray) -> np.ndarray:
        first = np.full((3, 8), len(users))
        np.minimum.at(first, (users, items), np.arange(len(users)))
        return first

    users, items = np.array([1, 2, 1]), np.array([1, 1, 2])  # event positions 0..2
    first = first_positions(users, items)
    p = np.array([0, 1, 1, 1, 1, 1, 1, 0], dtype=float)  # ids 0 and 7 are never drawn
    p /= p.sum()
    neg, _ = rk.sample_negatives(users, first, p, np.random.default_rng(2021))
    again, _ = rk.sample_negatives(users, first, p, np.random.default_rng(2021))
    np.testing.assert_array_equal(neg, again)
    for pos, (u, row) in enumerate(zip(users, neg, strict=True)):
        assert len(set(row.tolist())) == 4 and 0 not in row and 7 not in row
        assert all(first[u, j] > pos for j in row)
    assert sorted(neg[2].tolist()) == [3, 4, 5, 6]  # user 1 has rated 1 and 2 by then
    # A fourth event (user 1 rates 5) leaves only 3, 4, 6: 4 negatives cannot be found.
    users, items = np.append(users, 1), np.append(items, 5)
    monkeypatch.setattr(rk, "MAX_ROUNDS", 5)
    with pytest.raises(DataError, match="lack 4 valid negatives"):
        rk.sample_negatives(users, first_positions(users, items), p, np.random.default_rng(2021))


# --------------------------------------------------------------------------- R-ML1M


@pytest.fixture(scope="module")
def ml1m_sequences() -> dict[int, list[int]]:
    with gzip.open(ML1M / "sequences.txt.gz", "rt") as f:
        return {int(x[0]): [int(v) for v in x[1:]] for x in (line.split() for line in f)}


@needs_data
def test_r_ml1m_offline(ml1m_sequences: dict[int, list[int]]) -> None:
    ds = prepare(R_ML1M)
    meta = ds.manifest["meta"]
    assert meta["source"] == "sequences.txt" and ds.manifest["num_items"] == 3883
    ids = meta["item_ids"]
    assert len(ids) == 3883 and ids == sorted(ids) and ids[-1] == 3952
    table = ds.table("sequences")
    assert table.num_rows == 6040
    assert table["times"].null_count == 6040
    flat = pc.list_flatten(table["items"]).to_numpy()
    assert len(flat) == 1_000_209 and flat.min() >= 1 and flat.max() <= 3883
    for row in table.to_pylist():
        assert [ids[k - 1] for k in row["items"]] == ml1m_sequences[row["user"]]
    assert ml1m_sequences[1][:4] == [3186, 1721, 1022, 1270]


@needs_data
def test_ml1m_ratings_parser_agrees_with_sequences(ml1m_sequences: dict[int, list[int]]) -> None:
    path = ML1M / "ratings.users0001-2999.dat.gz"
    r = read_ml1m_ratings(path)
    assert len(r["user"]) == 487_650
    first = [int(r[c][0]) for c in ("user", "item", "rating", "timestamp")]
    assert first == [1, 1193, 5, 978300760]
    with gzip.open(path, "rt") as f:
        lines = [tuple(int(x) for x in line.split("::")) for line in f]
    ts = {(u, i): t for u, i, _r, t in lines}
    built = build_r_ml1m({"ratings.dat": path, "movies.dat": locate(ML1M_MOVIES)})
    assert built.meta["source"] == "ratings.dat" and built.num_items == 3883
    ids = built.meta["item_ids"]
    brute = defaultdict(list)
    for k in sorted(range(len(lines)), key=lambda k: (lines[k][0], lines[k][3], k)):
        brute[lines[k][0]].append(lines[k][1])
    exact = 0
    for row in built.sequences.to_pylist():
        u, movies = row["user"], [ids[k - 1] for k in row["items"]]
        assert movies == brute[u]  # (timestamp, row order)
        assert row["times"] == [ts[(u, m)] for m in movies] == sorted(row["times"])
        seq = ml1m_sequences[u]
        assert sorted(seq) == sorted(movies)
        seq_times = [ts[(u, m)] for m in seq]
        assert seq_times == sorted(seq_times), f"user {u}: sequences.txt not in timestamp order"
        exact += seq == movies
    assert built.sequences.num_rows == 2999
    assert exact == 9  # SOURCE.md: the other 2,990 users differ only among equal timestamps


# --------------------------------------------------------------------------- checksums


@needs_data
def test_checksum_mismatch_names_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "movielens-100k"
    folder.mkdir()
    (folder / "u.user").write_bytes((ML100K / "u.user").read_bytes().replace(b"|M|", b"|F|", 1))
    payload = gzip.decompress((ML100K / "u.data.gz").read_bytes())
    (folder / "u.data.gz").write_bytes(gzip.compress(payload[:-10]))
    (folder / "u.item").write_bytes((ML100K / "u.item").read_bytes())
    monkeypatch.setenv("RANKER_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("RANKER_CACHE_DIR", str(tmp_path / "cache"))
    with pytest.raises(DataError, match=r"u\.user.*checksum"):
        locate(U_USER)
    with pytest.raises(DataError, match=r"u\.data\.gz.*checksum"):
        locate(U_DATA)
    with pytest.raises(DataError, match=r"u\.data"):
        prepare(R_ML100K)
