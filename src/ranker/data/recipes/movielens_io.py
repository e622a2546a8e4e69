"""Raw files of MovieLens-100K and MovieLens-1M: where they live and vectorised parsers.

Every parser reads the uncompressed bytes through :func:`ranker.data.sources.read_bytes` (so
``*.gz`` offline copies work) and parses them with ``pyarrow.csv`` (no per-row Python loop over
the ratings). Malformed files raise :class:`ranker.errors.DataError` naming the file.

Data: F. M. Harper and J. A. Konstan, "The MovieLens Datasets: History and Context", ACM TiiS
5(4), 2015. GroupLens Research; research use only, no redistribution.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv

from ranker.data.recipes.base import read_lines
from ranker.data.sources import SourceFile, read_bytes
from ranker.errors import DataError

_ML100K_ZIP = "https://files.grouplens.org/datasets/movielens/ml-100k.zip"
_ML1M_ZIP = "https://files.grouplens.org/datasets/movielens/ml-1m.zip"


def _ml100k(name: str, sha256: str) -> SourceFile:
    return SourceFile("movielens-100k", name, sha256, _ML100K_ZIP, member=f"ml-100k/{name}")


U_DATA = _ml100k("u.data", "06416e597f82b7342361e41163890c81036900f418ad91315590814211dca490")
U_USER = _ml100k("u.user", "f120e114da2e8cf314fd28f99417c94ae9ddf1cb6db8ce0e4b5995d40e90e62c")
U_ITEM = _ml100k("u.item", "553841ebc7de3a0fd0d6b62a204ea30c1e651aacfb2814c7a6584ac52f2c5701")


def _ml1m(name: str, sha256: str | None, git_sha1: str | None = None) -> SourceFile:
    return SourceFile("movielens-1m", name, sha256, _ML1M_ZIP, member=f"ml-1m/{name}", git_sha1=git_sha1)


# ratings.dat: GroupLens publishes no digest; the git blob id is identical in many repos
ML1M_RATINGS = _ml1m("ratings.dat", None, git_sha1="77a7c4b150f588c23bb9e1f068aa996c0b413695")
ML1M_MOVIES = _ml1m("movies.dat", "0140fc2356357c1a851d0f52e893a1e4d3696df632c4141cea8d5bc3d621f0b9")
ML1M_USERS = _ml1m("users.dat", "1dc3a95300cb19f7c10e027daf29b8cdf1d908dab65b5edfb45950aa389a10a3")
ML1M_SEQUENCES = SourceFile(
    folder="movielens-1m",
    name="sequences.txt",
    sha256="3b3803d72c034929ada18b2cbd114296261c012b7a3e10282543adeceba53fb1",
    url="",  # offline derivative (BERT4Rec-VAE preprocessing), see movielens-1m/SOURCE.md
)

# The 19 genre flags of u.item, in the order of u.genre.
ML100K_GENRES: tuple[str, ...] = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
    "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance",
    "Sci-Fi", "Thriller", "War", "Western",
)  # fmt: skip

Ratings = dict[str, np.ndarray]  # user, item, rating, timestamp: int64 arrays in file order


def _read_table(
    path: Path,
    names: list[str],
    types: dict[str, pa.DataType],
    *,
    delimiter: str,
    encoding: str = "utf8",
    double_colon: bool = False,
) -> pa.Table:
    """Parse a headerless delimited file (``::`` separated when `double_colon`) into `types`."""
    payload = read_bytes(path)
    if double_colon:
        if b"\t" in payload:
            raise DataError(f"{path}: unexpected TAB in a '::'-separated file")
        payload = payload.replace(b"::", b"\t")
        delimiter = "\t"
    try:
        return pcsv.read_csv(
            pa.py_buffer(payload),
            read_options=pcsv.ReadOptions(column_names=names, encoding=encoding),
            parse_options=pcsv.ParseOptions(delimiter=delimiter, quote_char=False),
            convert_options=pcsv.ConvertOptions(column_types=types, strings_can_be_null=False),
        )
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise DataError(f"{path}: cannot parse as {len(names)} '{delimiter}'-separated fields {names}: {exc}") from exc


def _ratings(table: pa.Table, path: Path) -> Ratings:
    out = {c: table[c].to_numpy().astype(np.int64, copy=False) for c in table.column_names}
    if len(out["user"]) == 0:
        raise DataError(f"{path}: no ratings")
    if out["user"].min() < 1 or out["item"].min() < 1:
        raise DataError(f"{path}: user and item ids must be >= 1")
    if out["rating"].min() < 1 or out["rating"].max() > 5:
        raise DataError(f"{path}: ratings must be 1..5")
    return out


_RATING_COLUMNS = ["user", "item", "rating", "timestamp"]
_RATING_TYPES = {c: pa.int64() for c in _RATING_COLUMNS}


def read_ml100k_ratings(path: Path) -> Ratings:
    """``u.data``: TAB-separated ``user item rating timestamp``, as int64 arrays in file order."""
    return _ratings(_read_table(path, _RATING_COLUMNS, _RATING_TYPES, delimiter="\t"), path)


def read_ml1m_ratings(path: Path) -> Ratings:
    """ML-1M ``ratings.dat`` (``UserID::MovieID::Rating::Timestamp``) as int64 arrays in file order.

    Also reads any file of the same layout, such as ``ratings.users0001-2999.dat.gz``.
    """
    return _ratings(_read_table(path, _RATING_COLUMNS, _RATING_TYPES, delimiter="\t", double_colon=True), path)


def read_ml100k_users(path: Path) -> pa.Table:
    """``u.user``: ``user_id|age|gender|occupation|zip_code``; zip codes stay strings."""
    names = ["user_id", "age", "gender", "occupation", "zip_code"]
    types = {"user_id": pa.int64(), "age": pa.int64(), "gender": pa.string(),
             "occupation": pa.string(), "zip_code": pa.string()}  # fmt: skip
    return _read_table(path, names, types, delimiter="|")


def read_ml100k_items(path: Path) -> pa.Table:
    """``u.item`` (latin-1): ``item_id``, ``title``, ``release_date``, ``genres`` and ``release_year``.

    ``genres`` is a list of the names of the set genre flags (order of ``u.genre``, possibly
    empty); ``release_year`` is the year of ``release_date`` (``01-Jan-1995``), null when missing.
    """
    flags = [f"g{k}" for k in range(len(ML100K_GENRES))]
    names = ["item_id", "title", "release_date", "video_release_date", "url", *flags]
    types: dict[str, pa.DataType] = {n: pa.string() for n in names[1:5]}
    types.update({"item_id": pa.int64(), **{f: pa.int8() for f in flags}})
    raw = _read_table(path, names, types, delimiter="|", encoding="latin1")
    mat = np.stack([raw[f].to_numpy() for f in flags], axis=1).astype(bool)  # (items, 19)
    rows, cols = np.nonzero(mat)  # row-major: genre order within an item
    offsets = np.concatenate([[0], np.cumsum(mat.sum(axis=1))]).astype(np.int32)
    genres = pa.ListArray.from_arrays(
        pa.array(offsets), pa.array(np.asarray(ML100K_GENRES, dtype=object)[cols], pa.string())
    )
    date = raw["release_date"]
    year_text = pc.utf8_slice_codeunits(date, -4)
    known = pc.greater_equal(pc.utf8_length(date), 4)
    year = pc.if_else(known, year_text, pa.scalar(None, pa.string())).cast(pa.float64())
    return pa.table({"item_id": raw["item_id"], "title": raw["title"],
                     "release_date": date, "genres": genres, "release_year": year})  # fmt: skip


def read_ml1m_movies(path: Path) -> pa.Table:
    """ML-1M ``movies.dat`` (``MovieID::Title::Genres``, latin-1) in file order: ``movie_id``,
    ``title``, ``genres`` (list of the ``|``-separated names) and ``year`` (the ``(YYYY)`` that
    ends the title, float64, null when absent)."""
    types = {"movie_id": pa.int64(), "title": pa.string(), "genres": pa.string()}
    table = _read_table(path, list(types), types, delimiter="\t", encoding="latin1",
                        double_colon=True)  # fmt: skip
    year = pc.extract_regex(pc.utf8_rtrim_whitespace(table["title"]), r"\((?P<y>\d{4})\)$")
    year = pc.if_else(pc.is_valid(year), pc.struct_field(year, "y"), pa.scalar(None, pa.string()))
    return pa.table({"movie_id": table["movie_id"], "title": table["title"],
                     "genres": pc.split_pattern(table["genres"], "|"),
                     "year": year.cast(pa.float64())})  # fmt: skip


def read_ml1m_users(path: Path) -> pa.Table:
    """ML-1M ``users.dat`` (``UserID::Gender::Age::Occupation::Zip-code``): ``user_id``,
    ``gender``, ``age`` (the README's age group code, 1..56), ``occupation`` (code 0..20) and
    ``zip_code`` (text)."""
    types = {"user_id": pa.int64(), "gender": pa.string(), "age": pa.int64(), "occupation": pa.int64(),
             "zip_code": pa.string()}  # fmt: skip
    return _read_table(path, list(types), types, delimiter="\t", double_colon=True)


def read_ml1m_movie_ids(path: Path) -> np.ndarray:
    """Sorted MovieIDs of ML-1M ``movies.dat`` (``MovieID::Title::Genres``, latin-1)."""
    ids = np.sort(read_ml1m_movies(path)["movie_id"].to_numpy())
    if len(ids) == 0 or np.any(np.diff(ids) == 0):
        raise DataError(f"{path}: MovieIDs must be present and unique")
    return ids


def read_sequences(path: Path) -> tuple[np.ndarray, list[np.ndarray]]:
    """``sequences.txt``: ``UserID MovieID_1 ... MovieID_n`` per line -> (users, item arrays)."""
    lines = read_lines(path, "ascii", "strict")
    try:
        rows = [np.array(line.split(), dtype=np.int64) for line in lines]  # one line per user
    except ValueError as exc:
        raise DataError(f"{path}: every line must be space-separated integers ({exc})") from exc
    if not rows or any(len(r) < 2 for r in rows):
        raise DataError(f"{path}: every line needs a user id and at least one item")
    users = np.array([r[0] for r in rows], dtype=np.int64)
    if np.any(np.diff(users) <= 0):
        raise DataError(f"{path}: user ids must be strictly increasing, one line per user")
    return users, [r[1:] for r in rows]


def chronological(ratings: Ratings) -> np.ndarray:
    """Permutation ordering ratings by (timestamp, row in the file): the protocols' event order."""
    return np.argsort(ratings["timestamp"], kind="stable")
