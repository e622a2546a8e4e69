"""What a dataset recipe is, and how its splits are materialised once into the cache.

A recipe turns a dataset's raw files into exactly the splits of one protocol of
``shared/benchmarks/PROTOCOLS.md``. Ranking recipes produce train/valid/test tables plus the
data section of a config (features, tasks, group and item columns); retrieval recipes produce
one table of per-user chronological item sequences. :func:`prepare` writes them as parquet under
``$RANKER_CACHE_DIR/prepared/<name>-<key>/`` where ``key`` hashes the recipe version and the
sha256 of every source file, so a changed input or recipe never reuses stale splits.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ranker.data.sources import SourceFile, cache_root, find_local, locate, read_bytes
from ranker.progress import phase


@dataclass(frozen=True)
class BuiltRanking:
    """Output of a ranking recipe: split tables and the config's data section (without split)."""

    tables: dict[str, pa.Table]  # "train", "valid", "test"
    data: dict[str, Any]  # features, tasks, group_column, item_column (DataConfig fields)
    meta: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, pa.Table] = field(default_factory=dict)  # written beside the splits, as <name>.parquet


@dataclass(frozen=True)
class BuiltRetrieval:
    """Output of a retrieval recipe: one row per user, items in time order.

    ``sequences`` has columns ``user`` (int64), ``items`` (list<int64>, ids in ``1..num_items``)
    and optionally ``times`` (list<int64>, unix seconds). Leave-one-out is applied by the reader.
    """

    sequences: pa.Table
    num_items: int
    max_len: int
    meta: dict[str, Any] = field(default_factory=dict)


Built = BuiltRanking | BuiltRetrieval


def read_lines(path: Path, encoding: str = "utf-8", errors: str = "replace") -> list[str]:
    """The lines of a (possibly gzipped) text file, without the empty one after a final newline."""
    lines = read_bytes(path).decode(encoding, errors=errors).split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return lines


def split_bounds(n: int) -> tuple[int, int]:
    """End positions of train and valid in an `n`-event global time split (80/10/10)."""
    return int(0.8 * n), int(0.9 * n)


def permutation_split(n: int, seed: int, cuts: tuple[float, ...] = (0.8, 0.9)) -> dict[str, np.ndarray]:
    """PROTOCOLS.md's random split: ``perm = default_rng(seed).permutation(n)`` cut at
    ``int(c * n)`` for each of `cuts`, into train, valid (and test) row indices."""
    perm = np.random.default_rng(seed).permutation(n)
    parts = np.split(perm, [int(c * n) for c in cuts])
    return dict(zip(("train", "valid", "test"), parts, strict=False))


def tabular_data(names: Sequence[str], numerical: Mapping[str, str], labels: Sequence[str]) -> dict[str, object]:
    """Data section of a tabular protocol: numerical columns with their transform, the rest
    categorical, one binary task per label column, no group or item column."""
    features = [
        {"kind": "numerical", "name": n, "transform": numerical[n]}
        if n in numerical
        else {"kind": "categorical", "name": n}
        for n in names
    ]
    tasks = [{"name": k, "column": k} for k in labels]
    return {"features": features, "tasks": tasks, "group_column": None, "item_column": None}


def user_sequences(users: np.ndarray, items: np.ndarray, times: np.ndarray | None) -> pa.Table:
    """A retrieval recipe's per-user table (:class:`BuiltRetrieval`) from events in their order.

    Events are grouped by user with a stable sort, so each user's events keep the given order;
    users come out sorted. ``times`` is a list<int64> column, null in every row when None.
    """
    order = np.argsort(users, kind="stable")
    su = users[order]
    starts = np.flatnonzero(np.concatenate([[True], su[1:] != su[:-1]]))
    return sequence_table(
        su[starts], np.concatenate([starts, [len(su)]]), items[order], None if times is None else times[order]
    )


def sequence_table(
    users: np.ndarray, offsets: np.ndarray, items: np.ndarray, times: np.ndarray | None = None
) -> pa.Table:
    """Columns ``user`` (int64), ``items`` and ``times`` (list<int64>, null rows when `times`
    is None): row u holds events ``offsets[u]:offsets[u + 1]``."""
    starts = pa.array(np.asarray(offsets).astype(np.int32))

    def lists(values: np.ndarray) -> pa.ListArray:
        return pa.ListArray.from_arrays(starts, pa.array(values, pa.int64()))

    return pa.table(
        {
            "user": pa.array(users, pa.int64()),
            "items": lists(items),
            "times": pa.nulls(len(users), pa.list_(pa.int64())) if times is None else lists(times),
        }
    )


@dataclass(frozen=True)
class Recipe:
    """A named protocol: its raw sources and the function that builds its splits."""

    name: str
    protocol: str
    kind: Literal["ranking", "retrieval"]
    summary: str
    sources: tuple[SourceFile, ...]
    build: Callable[[dict[str, Path]], Built]  # source name -> located path
    version: int = 1
    aliases: tuple[str, ...] = ()
    # Used instead of `sources` when every one of them is found locally (e.g. an offline
    # derivative of a file whose full original is only available by download).
    offline_sources: tuple[SourceFile, ...] = ()

    def active_sources(self) -> tuple[SourceFile, ...]:
        """`offline_sources` if all are present locally, else `sources` (downloaded if needed)."""
        if self.offline_sources and all(find_local(s) for s in self.offline_sources):
            return self.offline_sources
        return self.sources


@dataclass(frozen=True)
class PreparedDataset:
    """A recipe's materialised splits in the cache."""

    name: str
    kind: Literal["ranking", "retrieval"]
    directory: Path
    manifest: dict[str, Any]

    def data_config(self) -> dict[str, Any]:
        """The data section of a config reading these splits (ranking recipes)."""
        data = dict(self.manifest["data"])
        data["split"] = {
            "kind": "files",
            **{s: str(self.directory / f"{s}.parquet") for s in ("train", "valid", "test")},
        }
        return data

    def table(self, split: str) -> pa.Table:
        return pq.read_table(self.directory / f"{split}.parquet")


def cache_key(recipe: Recipe, sources: tuple[SourceFile, ...]) -> str:
    h = hashlib.sha256(f"{recipe.name}:{recipe.version}".encode())
    for src in sources:
        h.update(f"{src.folder}/{src.name}:{src.digest}".encode())
    return h.hexdigest()[:12]


def prepare(recipe: Recipe, *, force: bool = False, verify: bool = True) -> PreparedDataset:
    """Materialise `recipe`'s splits once (parquet + manifest.json) and return them."""
    sources = recipe.active_sources()
    directory = cache_root() / "prepared" / f"{recipe.name}-{cache_key(recipe, sources)}"
    manifest_path = directory / "manifest.json"
    if manifest_path.is_file() and not force:
        return PreparedDataset(recipe.name, recipe.kind, directory, json.loads(manifest_path.read_text()))
    with phase(f"preparing {recipe.name} (first use: raw files → {directory}; cached afterwards)"):
        paths = {src.name: locate(src, verify=verify) for src in sources}
        built = recipe.build(paths)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=directory.parent, prefix=f".{directory.name}."))
    try:
        manifest: dict[str, Any] = {
            "name": recipe.name,
            "protocol": recipe.protocol,
            "kind": recipe.kind,
            "version": recipe.version,
            "sources": {s.name: s.digest for s in sources},
            "meta": built.meta,
        }
        if isinstance(built, BuiltRanking):
            for split, table in {**built.tables, **built.extra}.items():
                pq.write_table(table, tmp / f"{split}.parquet")
            manifest["data"] = built.data
            manifest["rows"] = {s: t.num_rows for s, t in built.tables.items()}
        else:
            pq.write_table(built.sequences, tmp / "sequences.parquet")
            manifest["num_items"] = built.num_items
            manifest["max_len"] = built.max_len
            manifest["rows"] = {"sequences": built.sequences.num_rows}
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2))
        if directory.exists():
            shutil.rmtree(directory)
        tmp.rename(directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return PreparedDataset(recipe.name, recipe.kind, directory, manifest)
