"""Side information of a two-stage dataset: who the users are and what the items are.

A :class:`SideInfo` holds one table per key, joined to the stage-2 rows by the raw ids of the
stage-1 run (``user_id`` = the run's user ids, ``item_id`` = its item ids), plus the feature
declarations (ranking-config ``features`` entries) of its columns. Readers are pluggable per
dataset (:data:`SIDE_INFO`); each states what its files hold:

- ``ml-100k`` (development, R-ML100K runs): ``u.user`` gender, age (its decade, as text),
  occupation, first zip character; ``u.item`` title, genres (multi-valued), release year.
- ``ml-1m`` (TS-ML1M, R-ML1M runs): ``users.dat`` gender, age group, occupation code, first zip
  character; ``movies.dat`` title, genres, the year in the title.
- ``beauty`` (R-Beauty runs): S3-Rec's ``Beauty_item2attributes.json``, each item's attribute
  ids (its brand and category levels, multi-valued); no user features and no titles (the S3-Rec
  files carry neither), so no demographics and no content embeddings.

Every column is a fact about the user or the item that does not change with time, so joining
it to any row leaks no label (PROTOCOLS.md, TS-ML1M: ``users.dat``, ``movies.dat`` allowed).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from ranker.data.recipes.movielens_io import (
    ML1M_MOVIES,
    ML1M_USERS,
    U_ITEM,
    U_USER,
    read_ml1m_movies,
    read_ml1m_users,
    read_ml100k_items,
    read_ml100k_users,
)
from ranker.data.sources import SourceFile, locate
from ranker.errors import ConfigError, DataError

BEAUTY_ATTRIBUTES = SourceFile(
    "amazon-seqrec-s3rec",
    "Beauty_item2attributes.json",
    "129e40f67486f6877eff0f5318cfa8530ee8ac23d8b0d1de04e1bb7a2ba0b2d4",
    "https://raw.githubusercontent.com/aHuiWang/CIKM2020-S3Rec/49a890dcb516c9ed3126564495234ea74d5cd566/data/"
    "Beauty_item2attributes.json",
)

DEMOGRAPHICS: list[dict[str, Any]] = [
    {"kind": "categorical", "name": "gender"},
    {"kind": "categorical", "name": "age"},
    {"kind": "categorical", "name": "occupation"},
    {"kind": "categorical", "name": "zip1"},
]
MOVIE_FEATURES: list[dict[str, Any]] = [
    {"kind": "multi_categorical", "name": "genres", "max_len": 8},
    {"kind": "numerical", "name": "year"},
]


@dataclass(frozen=True)
class SideInfo:
    """``users``: ``user_id`` + one column per user feature; ``items``: ``item_id``, ``title``
    (text, for content embeddings) + one column per item feature. ``user_features`` /
    ``item_features``: their ranking-config declarations."""

    users: pa.Table
    items: pa.Table
    user_features: list[dict[str, Any]]
    item_features: list[dict[str, Any]]

    def user_columns(self, user_ids: pa.Array) -> pa.Table:
        """The user feature columns of each id in `user_ids` (null for an unknown id)."""
        return _lookup(self.users, "user_id", user_ids, [f["name"] for f in self.user_features])

    def item_columns(self, item_ids: pa.Array) -> pa.Table:
        """The item feature columns of each id in `item_ids` (null for an unknown id)."""
        return _lookup(self.items, "item_id", item_ids, [f["name"] for f in self.item_features])


def _lookup(table: pa.Table, key: str, ids: pa.Array, columns: list[str]) -> pa.Table:
    index = pc.index_in(ids.cast(table.column(key).type), value_set=table.column(key).combine_chunks())
    return pa.table({c: table.column(c).combine_chunks().take(index) for c in columns})


def _zip1(zip_code: pa.ChunkedArray) -> pa.Array:
    return pc.utf8_slice_codeunits(zip_code, 0, 1)


def movielens_100k() -> SideInfo:
    """MovieLens-100K: ``u.user`` and ``u.item`` (R-ML100K's item ids are u.item's)."""
    users = read_ml100k_users(locate(U_USER))
    decade = pc.cast(pc.multiply(pc.divide(users["age"], 10), 10), pa.string())
    items = read_ml100k_items(locate(U_ITEM))
    return SideInfo(
        pa.table(
            {
                "user_id": users["user_id"],
                "gender": users["gender"],
                "age": decade,
                "occupation": users["occupation"],
                "zip1": _zip1(users["zip_code"]),
            }
        ),
        pa.table(
            {
                "item_id": items["item_id"],
                "title": items["title"],
                "genres": items["genres"],
                "year": items["release_year"],
            }
        ),
        DEMOGRAPHICS,
        MOVIE_FEATURES,
    )


def movielens_1m() -> SideInfo:
    """MovieLens-1M: ``users.dat`` and ``movies.dat`` (R-ML1M's raw item ids are MovieIDs)."""
    users = read_ml1m_users(locate(ML1M_USERS))
    movies = read_ml1m_movies(locate(ML1M_MOVIES))
    return SideInfo(
        pa.table(
            {
                "user_id": users["user_id"],
                "gender": users["gender"],
                "age": pc.cast(users["age"], pa.string()),
                "occupation": pc.cast(users["occupation"], pa.string()),
                "zip1": _zip1(users["zip_code"]),
            }
        ),
        pa.table(
            {
                "item_id": movies["movie_id"],
                "title": movies["title"],
                "genres": movies["genres"],
                "year": movies["year"],
            }
        ),
        DEMOGRAPHICS,
        MOVIE_FEATURES,
    )


def beauty() -> SideInfo:
    """Amazon Beauty (S3-Rec files): each item's attribute ids; R-Beauty's raw item ids are the
    file's integer ids. No user table (an empty one) and no title (null)."""
    path = locate(BEAUTY_ATTRIBUTES)
    try:
        raw = json.loads(path.read_text())
        pairs = sorted((int(k), [str(int(a)) for a in v]) for k, v in raw.items())
    except (ValueError, TypeError, AttributeError) as e:
        raise DataError(f"{path}: expected {{item id: [attribute ids]}} (S3-Rec's item2attributes): {e}") from e
    return SideInfo(
        pa.table({"user_id": pa.array([], pa.int64())}),
        pa.table(
            {
                "item_id": pa.array([k for k, _ in pairs], pa.int64()),
                "title": pa.nulls(len(pairs), pa.string()),
                "attributes": pa.array([v for _, v in pairs], pa.list_(pa.string())),
            }
        ),
        [],
        [{"kind": "multi_categorical", "name": "attributes", "max_len": 8}],
    )


SIDE_INFO: dict[str, Callable[[], SideInfo]] = {"ml-100k": movielens_100k, "ml-1m": movielens_1m, "beauty": beauty}


def side_info(name: str) -> SideInfo:
    """The side information reader registered as `name` (ConfigError naming the known ones)."""
    if name not in SIDE_INFO:
        raise ConfigError(f"--dataset {name!r}: no side-information reader; known: {sorted(SIDE_INFO)}")
    return SIDE_INFO[name]()
