"""R-Beauty (and Sports, Toys, Yelp): next-item retrieval on the S3-Rec sequence files.

Protocol ``R-Beauty`` of ``shared/benchmarks/PROTOCOLS.md``: ``amazon-seqrec-s3rec/Beauty.txt``
holds one line per user, ``user item item ...`` in time order (22,363 users, 12,101 items,
198,502 interactions). The recipe keeps the ids of the file (items ``1..num_items``, 0 free for
padding), the catalogue is every item id up to the largest, inputs keep the last 50 items, and
the reader applies leave-one-out. ``r-sports``, ``r-toys`` and ``r-yelp`` read the sibling files
under the same protocol. The files carry no timestamps, so ``times`` is an all-null column.

``r-beauty-bert4rec`` reads the BERT4Rec preprocessing of Beauty (``amazon-beauty-bert4rec``:
``user item`` lines, users in contiguous blocks, chronological within a user; 40,226 users,
54,542 items, 353,962 interactions). Users are grouped with a stable sort (file order kept
within a user); items are re-indexed to ``1..num_items`` by sorted original id, which is the
identity on this file since its ids are already contiguous. Inputs keep the last 50 items
(BERT4Rec's max length for Beauty).

Data: J. McAuley, C. Targett, Q. Shi, A. van den Hengel, "Image-based Recommendations on Styles
and Substitutes", SIGIR 2015 and R. He, J. McAuley, WWW 2016 (Amazon 2014 5-core reviews); Yelp
Open Dataset. Preprocessing: K. Zhou et al., "S3-Rec: Self-Supervised Learning for Sequential
Recommendation with Mutual Information Maximization", CIKM 2020; F. Sun et al., "BERT4Rec:
Sequential Recommendation with Bidirectional Encoder Representations from Transformer",
CIKM 2019.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ranker.data.recipes.base import BuiltRetrieval, Recipe, read_lines, sequence_table, user_sequences
from ranker.data.sources import SourceFile
from ranker.errors import DataError

_S3REC = "https://raw.githubusercontent.com/aHuiWang/CIKM2020-S3Rec/49a890dcb516c9ed3126564495234ea74d5cd566/data"
_BERT4REC = (
    "https://raw.githubusercontent.com/antklen/sasrec-bert4rec-recsys23/29c272e155cad52c8958b04e9e98557526a646e5/data"
)
MAX_LEN = 50

# recipe name -> (file, sha256 of the uncompressed file, (users, items, interactions) published)
S3REC_FILES: dict[str, tuple[str, str, tuple[int, int, int]]] = {
    "r-beauty": (
        "Beauty.txt",
        "226cce9c3105299ca0db9615d7d3fb32b3175e90da43100ae352599f0f0107b8",
        (22_363, 12_101, 198_502),
    ),
    "r-sports": (
        "Sports_and_Outdoors.txt",
        "2a095e0648872beb9982408958290f5d655db5be2911c3756b5446de9f0b8de2",
        (35_598, 18_357, 296_337),
    ),
    "r-toys": (
        "Toys_and_Games.txt",
        "176c680c688d497598c4a89a03b402c0fe78d795e5db335c2e78dd5f2d778a3f",
        (19_412, 11_924, 167_597),
    ),
    "r-yelp": (
        "Yelp.txt",
        "724b219106b81dd2349027da997334ddb6da9fe2f152ad6e0d97a93170f7caed",
        (30_431, 20_033, 316_354),
    ),
}
BERT4REC_COUNTS = (40_226, 54_542, 353_962)


def _check_counts(path: Path, seqs: pa.Table, num_items: int, expected: tuple[int, int, int]) -> None:
    got = (seqs.num_rows, num_items, int(pc.sum(pc.list_value_length(seqs["items"])).as_py()))
    if got != expected:
        raise DataError(f"{path}: (users, items, interactions) = {got}, the protocol's file has {expected}")


def read_user_lines(path: Path) -> pa.Table:
    """S3-Rec format: ``user item item ...`` per line -> user / items / times (null) columns."""
    lines = read_lines(path)
    tokens = pc.split_pattern_regex(pc.utf8_trim_whitespace(pa.array(lines, pa.string())), r"\s+")
    lengths = pc.list_value_length(tokens).to_numpy(zero_copy_only=False)
    flat = pc.list_flatten(tokens)
    digits = pc.match_substring_regex(flat, r"^[0-9]{1,12}$").to_numpy(zero_copy_only=False)
    if lengths.size == 0:
        raise DataError(f"{path}: empty file")
    short, bad_tok = np.flatnonzero(lengths < 2), np.flatnonzero(~digits)
    if short.size or bad_tok.size:
        token_line = np.searchsorted(np.cumsum(lengths), bad_tok[:1], side="right")
        line = int(np.concatenate([short[:1], token_line]).min())
        raise DataError(
            f"{path}: line {line + 1}: expected 'user item item ...' (integer ids), got {lines[line][:120]!r}"
        )
    ids = pc.cast(flat, pa.int64()).to_numpy()
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    users = ids[starts]
    keep = np.ones(ids.size, dtype=bool)
    keep[starts] = False
    items = ids[keep]
    offsets = np.concatenate([[0], np.cumsum(lengths - 1)])
    if np.unique(users).size != users.size:
        raise DataError(f"{path}: a user id appears on more than one line")
    if items.min() < 1:
        raise DataError(f"{path}: item ids must be >= 1 (0 is the padding id)")
    return sequence_table(users, offsets, items)


def _s3rec_build(name: str) -> Callable[[dict[str, Path]], BuiltRetrieval]:
    file, _, expected = S3REC_FILES[name]

    def build(paths: dict[str, Path]) -> BuiltRetrieval:
        seqs = read_user_lines(paths[file])
        flat = pc.list_flatten(seqs["items"])
        num_items = int(pc.max(flat).as_py())
        _check_counts(paths[file], seqs, num_items, expected)
        lengths = pc.list_value_length(seqs["items"])
        meta = {
            "users": seqs.num_rows,
            "interactions": int(pc.sum(lengths).as_py()),
            "distinct_items": int(pc.count_distinct(flat).as_py()),
            "min_length": int(pc.min(lengths).as_py()),
            "max_length": int(pc.max(lengths).as_py()),
            "timestamps": False,
        }
        return BuiltRetrieval(sequences=seqs, num_items=num_items, max_len=MAX_LEN, meta=meta)

    return build


def _bert4rec_build(paths: dict[str, Path]) -> BuiltRetrieval:
    path = paths["beauty.txt"]
    lines = read_lines(path)
    arr = pc.utf8_trim_whitespace(pa.array(lines, pa.string()))
    ok = pc.match_substring_regex(arr, r"^[0-9]{1,12} +[0-9]{1,12}$").to_numpy(zero_copy_only=False)
    if ok.size == 0 or not ok.all():
        i = int(np.flatnonzero(~ok)[0]) if ok.size else 0
        raise DataError(f"{path}: line {i + 1}: expected 'user item', got {lines[i][:120]!r}")
    flat = pc.list_flatten(pc.split_pattern_regex(arr, " +"))
    pairs = pc.cast(flat, pa.int64()).to_numpy().reshape(-1, 2)
    uniq_items, inverse = np.unique(pairs[:, 1], return_inverse=True)
    items = inverse.astype(np.int64) + 1
    seqs = user_sequences(pairs[:, 0], items, None)  # users grouped, file order within one
    num_items = int(uniq_items.size)
    _check_counts(path, seqs, num_items, BERT4REC_COUNTS)
    blocks = int((np.diff(pairs[:, 0]) != 0).sum()) + 1
    meta = {
        "users": seqs.num_rows,
        "interactions": int(items.size),
        "item_reindex": "sorted original id",
        "reindex_is_identity": bool(np.array_equal(uniq_items, np.arange(1, num_items + 1))),
        "users_in_contiguous_blocks": blocks == seqs.num_rows,
        "timestamps": False,
    }
    return BuiltRetrieval(sequences=seqs, num_items=num_items, max_len=MAX_LEN, meta=meta)


def _s3rec_recipe(name: str) -> Recipe:
    file, sha, (users, items, inter) = S3REC_FILES[name]
    label = file.removesuffix(".txt").replace("_", " ")
    return Recipe(
        name=name,
        protocol="R-Beauty",
        kind="retrieval",
        summary=f"{label} (S3-Rec file: {users:,} users, {items:,} items, {inter:,} "
        f"interactions), leave-one-out next-item retrieval, full catalogue, last {MAX_LEN} items",
        sources=(SourceFile("amazon-seqrec-s3rec", file, sha, f"{_S3REC}/{file}"),),
        build=_s3rec_build(name),
        aliases=(name.removeprefix("r-"),),
    )


RECIPES: list[Recipe] = [
    *(_s3rec_recipe(name) for name in S3REC_FILES),
    Recipe(
        name="r-beauty-bert4rec",
        protocol="R-Beauty",
        kind="retrieval",
        summary="Amazon Beauty, BERT4Rec preprocessing (40,226 users, 54,542 items), "
        f"leave-one-out next-item retrieval, full catalogue, last {MAX_LEN} items",
        sources=(
            SourceFile(
                "amazon-beauty-bert4rec",
                "beauty.txt",
                "f480b7a7403852342ffd8f9809bb30697dd669be31813d0e204b698fec86ef49",
                f"{_BERT4REC}/beauty.txt",
            ),
        ),
        build=_bert4rec_build,
        aliases=("beauty-bert4rec",),
    ),
]
