"""The train split streamed from parquet in chunks: bounded memory at any number of rows.

``data.stream`` (:class:`~ranker.config.schema.StreamConfig`) replaces the in-memory train
table of the feature ranker by a :class:`StreamedTrain`, read through ``pyarrow.dataset``:

- **Fit pass** (:func:`fit_streaming`, once, before training): every train row is read once,
  in file-name order. Each chunk's values are checked as the in-memory path checks a file
  (:mod:`ranker.data.checks`, rows named by their place in their file); each vocabulary counts
  its values exactly (:class:`~ranker.data.vocab.VocabCounter`, memory O(distinct ids), so
  ``min_count`` and the table sizes are what a full fit would give); the numerical statistics
  (standardisation, cdf sketch, bins, PLE edges) are fitted on a seeded uniform sample of at
  most ``fit_sample_rows`` rows (Bernoulli(p = sample / rows) per row): quantiles need the
  values at once, which a bounded pass cannot hold; a sample quantile's rank error is
  √(p(1−p)/n) ≤ 5·10⁻⁴ at n = 10⁶.
- **Epoch** (:meth:`StreamedTrain.batches`): a seed drawn from the engine's epoch generator
  orders the files (a permutation) and drives the shuffle buffer. Each chunk of ≤ ``chunk_rows``
  rows is encoded by the fitted :class:`~ranker.data.preprocess.Preprocessor` and joins the
  buffer; when buffer + chunk exceed ``shuffle_buffer`` rows, a uniform random subset of them
  (the excess) leaves in random order, and the rest stays; at the end of the epoch the buffer
  leaves, permuted. Rows leave in ``batch_size`` batches (the last one partial, as in memory).
  So at most ``shuffle_buffer + chunk_rows + batch_size`` encoded rows are held
  (:attr:`StreamedTrain.max_rows_held` records it), whatever the number of rows. A row is
  therefore shuffled among its ≈ ``shuffle_buffer`` neighbours in the file order of its epoch,
  not across the whole split: rows of one file stay near each other, which is why files are
  permuted each epoch and why a generator should not write sorted files.
- The same seed gives the same batches; resume restarts the interrupted epoch from its start
  (the engine checkpoints at epoch ends and recreates the epoch's generator), as in memory.

- **Several processes** (torchrun): every rank makes the same fit pass (the same rows, seed and
  sample, so the same fitted preprocessing, with no collective; it costs each rank one read of
  the split, once per run); in each epoch every rank draws the same file order and reads only
  its own contiguous share of the rows in that order, row groups outside it unread
  (:meth:`StreamedTrain.batches`). A global batch is therefore not one process's batch: the
  ranks shuffle their shares apart, so a 2-process run matches a 1-process run statistically,
  not step for step (the in-memory path matches exactly).

Valid and test stay in memory (they are scored in one pass with exact AUC).
"""

from __future__ import annotations

from collections.abc import Generator, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import torch

from ranker.config.schema import DataConfig, StreamConfig
from ranker.data.checks import FileRows, check_shape, check_values, used_columns
from ranker.data.preprocess import Preprocessor
from ranker.data.readers import check_same_schema, id_columns, parquet_files, unsigned_ids_as_text
from ranker.data.tensors import Batch
from ranker.data.vocab import VocabCounter
from ranker.errors import DataError

Arrays = dict[str, np.ndarray]


@dataclass
class TrainFiles:
    """The parquet files of a streamed train split, their row counts and the columns read."""

    files: list[Path]
    rows: list[int]
    columns: list[str]
    ids: set[str] = field(default_factory=set)

    @classmethod
    def open(cls, path: str | Path, data: DataConfig) -> TrainFiles:
        """Check `path` (a parquet file or a directory of them): every file has the columns the
        data section names, with the same types; only footers are read."""
        files = parquet_files(path, key="data.split.train")
        schema = check_same_schema(files)
        needed = used_columns(data)
        for col, what in needed.items():
            if col not in schema.names:
                raise DataError(f"{files[0]}: missing column {col!r} ({what}); columns present: {schema.names}")
        rows = [pq.ParquetFile(f).metadata.num_rows for f in files]
        if sum(rows) == 0:
            raise DataError(f"data.split.train: {path}: the train files hold no rows")
        return cls(files, rows, list(needed), id_columns(data))

    @property
    def num_rows(self) -> int:
        return sum(self.rows)

    def range_chunks(
        self, order: Sequence[int], start: int, stop: int, chunk_rows: int
    ) -> Iterator[tuple[Path, int, pa.Table]]:
        """Rows ``[start, stop)`` of the files concatenated in `order`, as ``chunks`` yields them;
        only the row groups that hold those rows are read (a rank's shard of an epoch)."""
        first = 0  # place in the concatenation of the current file's first row
        for i in order:
            path, n = self.files[i], self.rows[i]
            lo, hi = max(start - first, 0), min(stop - first, n)  # the file's rows wanted
            first += n
            if lo >= hi:
                continue
            reader = pq.ParquetFile(path)
            meta = reader.metadata
            bounds = np.cumsum([0] + [meta.row_group(g).num_rows for g in range(meta.num_row_groups)])
            groups = [g for g in range(meta.num_row_groups) if bounds[g] < hi and bounds[g + 1] > lo]
            at = int(bounds[groups[0]])  # place in the file of the next row read
            for batch in reader.iter_batches(
                batch_size=chunk_rows, row_groups=groups, columns=self.columns, use_threads=False
            ):
                a, b = max(lo - at, 0), min(hi - at, batch.num_rows)
                if a < b:
                    yield path, at + a, unsigned_ids_as_text(pa.Table.from_batches([batch.slice(a, b - a)]), self.ids)
                at += batch.num_rows
                if at >= hi:
                    break

    def chunks(self, order: Iterable[int], chunk_rows: int) -> Iterator[tuple[Path, int, pa.Table]]:
        """``(file, first row's place in the file, table of ≤ chunk_rows rows)`` in file `order`."""
        for i in order:
            path, offset = self.files[i], 0
            dataset = ds.dataset(path, format="parquet")
            for batch in dataset.to_batches(
                columns=self.columns, batch_size=chunk_rows, batch_readahead=1, use_threads=False
            ):
                if batch.num_rows:
                    yield path, offset, unsigned_ids_as_text(pa.Table.from_batches([batch]), self.ids)
                    offset += batch.num_rows


def fit_streaming(pre: Preprocessor, files: TrainFiles, data: DataConfig, cfg: StreamConfig, seed: int) -> pa.Table:
    """One pass over the train files: check every chunk, count every vocabulary exactly, keep a
    seeded uniform sample of ≤ ``cfg.fit_sample_rows`` rows; fit `pre` (numerical statistics on
    the sample, vocabularies from the counts). Returns the sample (it stands for train where a
    run needs train rows after training: baselines, collision statistics)."""
    counters: dict[str, VocabCounter] = {}
    p = min(1.0, cfg.fit_sample_rows / files.num_rows)
    rng = np.random.default_rng([seed, 0x5EED])
    samples: list[pa.Table] = []
    kept = 0
    for path, offset, table in files.chunks(range(len(files.files)), cfg.chunk_rows):
        rows = FileRows(str(path), "parquet", index=np.arange(offset, offset + table.num_rows))
        check_shape(table, data, rows)
        check_values(table, data, rows, files.ids)
        for key, values in pre.vocab_values(table, source=str(path)).items():
            counters.setdefault(key, VocabCounter()).add(values, source=f"{path}: column for {key!r}")
        keep = np.flatnonzero(rng.random(table.num_rows) < p)[: cfg.fit_sample_rows - kept]
        if keep.size:
            samples.append(table.take(pa.array(keep)))
            kept += keep.size
    # no row drawn (p · rows < 1): the first row stands in
    sample = pa.concat_tables(samples) if samples else next(files.chunks([0], 1))[2]
    pre.fit(sample, source=f"{files.files[0].parent} (fit sample of {sample.num_rows} rows)")
    pre.set_vocabularies({k: c.vocabulary(pre.min_count(k)) for k, c in counters.items()})
    return sample


class StreamedTrain:
    """A streamed, encoded train split: seeded file order + shuffle buffer (module docstring)."""

    def __init__(self, files: TrainFiles, pre: Preprocessor, cfg: StreamConfig) -> None:
        self.files, self.pre, self.cfg = files, pre, cfg
        self.max_rows_held = 0  #: most encoded rows held at once (buffer + chunk + partial batch)

    def __len__(self) -> int:
        return self.files.num_rows

    def num_batches(self, batch_size: int, world_size: int = 1) -> int:
        return -(-(len(self) // world_size) // batch_size)

    def batches(
        self, batch_size: int, *, generator: torch.Generator, rank: int = 0, world_size: int = 1, shuffle: bool = True
    ) -> Iterator[Batch]:
        """One epoch of batches; the file order and the buffer draws come from `generator`.

        On `world_size` processes, `generator` is the same on every rank, so is the epoch's file
        order; rank r reads rows ``[r·m, (r+1)·m)`` of the files concatenated in that order,
        m = ⌊rows / world_size⌋ (the last ``rows mod world_size`` rows of the epoch are skipped, as
        in memory), and shuffles them in a buffer of its own (seeded by the epoch and the rank).
        Every rank thus yields ⌈m / batch_size⌉ batches, in lockstep, and the ranks' rows
        partition the epoch's."""
        seed = int(torch.randint(0, 2**62, (1,), generator=generator))
        rng = np.random.default_rng(seed)
        order = rng.permutation(len(self.files.files)) if shuffle else np.arange(len(self.files.files))
        if world_size == 1:
            chunks = self.files.chunks(order, self.cfg.chunk_rows)
        else:
            m = len(self) // world_size
            chunks = self.files.range_chunks(order.tolist(), rank * m, (rank + 1) * m, self.cfg.chunk_rows)
            rng = np.random.default_rng([seed, rank])
        keep = self.cfg.shuffle_buffer if shuffle else 0
        buffer: Arrays | None = None
        carry: Arrays | None = None
        self.max_rows_held = 0
        for path, _, table in chunks:
            pool = _concat(buffer, self.pre.transform(table, source=str(path)).arrays())
            n = _rows(pool)
            self.max_rows_held = max(self.max_rows_held, n + _rows(carry))
            out = n - keep if keep else n
            if out <= 0:
                buffer = pool
                continue
            if keep:
                perm = rng.permutation(n)
                leave, buffer = _take(pool, perm[:out]), _take(pool, perm[out:])
            else:
                leave, buffer = pool, None
            carry = yield from _emit(_concat(carry, leave), batch_size)
        if buffer is not None:
            carry = yield from _emit(_concat(carry, _take(buffer, rng.permutation(_rows(buffer)))), batch_size)
        if carry is not None and _rows(carry):
            yield _tensors(carry, 0, _rows(carry))


def _rows(arrays: Arrays | None) -> int:
    return 0 if arrays is None else len(next(iter(arrays.values())))


def _concat(a: Arrays | None, b: Arrays) -> Arrays:
    return b if a is None or not _rows(a) else {k: np.concatenate([a[k], b[k]]) for k in b}


def _take(arrays: Arrays, idx: np.ndarray) -> Arrays:
    return {k: v[idx] for k, v in arrays.items()}


def _tensors(arrays: Arrays, start: int, stop: int) -> Batch:
    return {k: torch.from_numpy(np.ascontiguousarray(v[start:stop])) for k, v in arrays.items()}


def _emit(arrays: Arrays, batch_size: int) -> Generator[Batch, None, Arrays]:
    """Yield full batches of `arrays`; return the partial rest (the next batch's start)."""
    n = _rows(arrays)
    full = n - n % batch_size
    for start in range(0, full, batch_size):
        yield _tensors(arrays, start, start + batch_size)
    return _take(arrays, np.arange(full, n))
