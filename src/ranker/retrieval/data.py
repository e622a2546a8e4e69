"""The events of a retrieval run, from a built-in recipe or a declared event file, and the
files a run directory keeps so that serving needs no dataset preparation.

Both sources become one :class:`RetrievalEvents`: every user's full chronological sequence
(:func:`~ranker.retrieval.protocol.event_sequences`, the same ordering code for both) plus the
raw user and item ids; :meth:`RetrievalEvents.views` cuts it into the protocol's views
(:func:`~ranker.retrieval.protocol.leave_one_out_views` or a time split).

Run-directory files (:func:`save_serving`)::

    items.parquet        `item`: raw item id of internal item k at row k - 1 (the catalogue)
    histories.parquet    `user` raw id, `items` list of raw item ids, `times` list<int64>
                         (null without times): every user's events in order
    data.json            catalogue size, max_len, users, events and what filtering dropped
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ranker.config.events import EventTimeSplit
from ranker.config.retrieval import RetrievalData
from ranker.data.events import id_values, k_core, read_events, time_periods, time_values, vocabulary
from ranker.data.recipes import get_recipe, prepare
from ranker.data.sources import atomic_write_bytes
from ranker.errors import ConfigError, DataError, warn
from ranker.retrieval.protocol import LeaveOneOut, Sequences, event_sequences, leave_one_out_views, time_split_views
from ranker.run_manifest import read_run_file

OWN_MAX_LEN = 200


@dataclass(frozen=True)
class RetrievalEvents:
    """Every user's chronological sequence (internal item ids ``1..num_items``) and raw ids.

    ``period`` (total,) 0/1/2 per event of ``sequences`` under a time split, else None
    (leave-one-out). ``users[u]`` is row u's raw id, ``items[k - 1]`` item k's raw id.
    """

    sequences: Sequences
    users: pa.Array
    items: pa.Array
    max_len: int
    period: np.ndarray | None = None
    summary: dict[str, Any] = field(default_factory=dict)

    @property
    def num_items(self) -> int:
        return len(self.items)

    def views(self) -> LeaveOneOut:
        if self.period is None:
            users = self.users.to_numpy(zero_copy_only=False) if pa.types.is_integer(self.users.type) else None
            return leave_one_out_views(self.sequences, self.num_items, self.max_len, users)
        return time_split_views(self.sequences, self.period, self.num_items, self.max_len)


def load_events(data: RetrievalData, base_dir: Path | None = None) -> RetrievalEvents:
    """The config's events: a built-in recipe's prepared sequences or the declared file."""
    return from_file(data, base_dir) if data.path is not None else from_recipe(data.dataset or "", data.max_len)


def from_recipe(name: str, max_len: int | None = None) -> RetrievalEvents:
    """A retrieval recipe's prepared sequences, exploded to events and ordered again (a no-op
    on their already chronological order, so the protocol's sequences are unchanged)."""
    recipe = get_recipe(name)
    if recipe.kind != "retrieval":
        raise ConfigError(f"data.dataset: {recipe.name!r} is a {recipe.kind} dataset, not a retrieval one")
    ds = prepare(recipe)
    table = ds.table("sequences")
    timed = "times" in table.column_names and table.column("times").null_count == 0
    lists = Sequences.from_lists(table.column("items"), table.column("times") if timed else None)
    owner = np.repeat(np.arange(len(lists)), lists.lengths())
    seqs = event_sequences(owner, lists.items, lists.times, len(lists))[0]
    num_items = int(ds.manifest["num_items"])
    raw_items = ds.manifest.get("meta", {}).get("item_ids") or list(range(1, num_items + 1))
    return RetrievalEvents(
        seqs,
        table.column("user").combine_chunks(),
        pa.array(raw_items, pa.int64()),
        max_len or int(ds.manifest["max_len"]),
        summary={"source": name, "users": len(seqs), "events": len(seqs.items)},
    )


def from_file(data: RetrievalData, base_dir: Path | None = None) -> RetrievalEvents:
    """The declared event file: filtered (actions, then the k-core, where leave-one-out needs
    at least 3 events per user), ids mapped by sorted vocabularies, events ordered per user by
    (time, row)."""
    table, rows = read_events(data, base_dir=base_dir)
    assert data.user_column is not None and data.item_column is not None
    users = id_values(table.column(data.user_column), "user_column")
    items = id_values(table.column(data.item_column), "item_column")
    times = time_values(table.column(data.time_column)) if data.time_column else None
    summary: dict[str, Any] = {"source": data.path, "rows": table.num_rows}
    user_index = vocabulary(users)[0]
    min_user = max(data.min_user_events or 1, 3 if data.split.kind == "leave_one_out" else 1)
    keep = k_core(user_index, vocabulary(items)[0], min_user, data.min_item_events or 1)
    summary["dropped_rows"] = int((~keep).sum())
    _report_short_users(np.bincount(user_index), data, rows.path, kept=bool(keep.any()))
    mask = pa.array(keep)
    users, items = users.filter(mask), items.filter(mask)
    times = None if times is None else times[keep]
    user, user_vocab = vocabulary(users)
    item, item_vocab = vocabulary(items)
    seqs, order = event_sequences(user, item + 1, times, len(user_vocab))
    period = None
    if isinstance(data.split, EventTimeSplit):
        assert times is not None
        period = time_periods(times, data.split)[order]
    summary.update(users=len(user_vocab), items=len(item_vocab), events=len(user))
    return RetrievalEvents(seqs, user_vocab, item_vocab, data.max_len or OWN_MAX_LEN, period, summary)


def _report_short_users(counts: np.ndarray, data: RetrievalData, path: str, kept: bool) -> None:
    """No event left after filtering is an error saying why; users that leave-one-out (and not
    the user's own ``min_user_events``) drops get a warning."""
    loo = data.split.kind == "leave_one_out" and (data.min_user_events or 1) < 3
    short = counts < 3
    if not kept:
        why = (
            f"leave-one-out needs 3 events per user and no user has more than {int(counts.max())}"
            if loo and short.all()
            else f"min_user_events {data.min_user_events} / min_item_events {data.min_item_events} (k-core)"
        )
        raise DataError(f"{path}: no events left after filtering: {why}")
    if loo and short.any():
        warn(
            f"{path}: {int(short.sum())} users have fewer than the 3 events leave-one-out needs (a train "
            f"event, a valid and a test target): their {int(counts[short].sum())} events are left out"
        )


def save_serving(run_dir: Path, events: RetrievalEvents, attributes: dict[str, int] | None = None) -> None:
    """Write the catalogue, every user's history and a data summary into `run_dir`
    (`attributes`: the shape of the item attribute tokens, :meth:`AttributeTokens.summary`)."""
    serving = ServingData.from_events(events)
    for name, table in (("items", pa.table({"item": serving.items})), ("histories", serving.histories)):
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink)
        atomic_write_bytes(run_dir / f"{name}.parquet", sink.getvalue().to_pybytes())
    info: dict[str, Any] = {"num_items": events.num_items, "max_len": events.max_len, **events.summary}
    if attributes is not None:
        info["item_attributes"] = attributes
    atomic_write_bytes(run_dir / "data.json", json.dumps(info, indent=2).encode())


@dataclass(frozen=True)
class ServingData:
    """What ``ranker retrieve`` reads from a run directory: raw ids ↔ internal items, histories."""

    items: pa.Array
    histories: pa.Table
    max_len: int
    attributes: dict[str, int] | None = None  # data.json's item_attributes: the token matrix's shape

    @classmethod
    def from_events(cls, events: RetrievalEvents) -> ServingData:
        seqs = events.sequences
        offsets = pa.array(seqs.offsets.astype(np.int32))
        raw = events.items.take(pa.array(seqs.items - 1))
        times = (
            pa.nulls(len(seqs), pa.list_(pa.int64()))
            if seqs.times is None
            else pa.ListArray.from_arrays(offsets, pa.array(seqs.times, pa.int64()))
        )
        histories = pa.table({"user": events.users, "items": pa.ListArray.from_arrays(offsets, raw), "times": times})
        return cls(events.items, histories, events.max_len)

    @classmethod
    def load(cls, run_dir: Path) -> ServingData | None:
        """The run's serving files, or None for a run trained before they were kept."""
        paths = [run_dir / n for n in ("items.parquet", "histories.parquet", "data.json")]
        if not any(p.is_file() for p in paths):
            return None
        items = read_run_file(paths[0], lambda p: pq.read_table(p).column("item").combine_chunks(), "catalogue")
        histories = read_run_file(paths[1], _histories, "histories table")
        info = read_run_file(paths[2], _data_summary, "data summary")
        return cls(items, histories, int(info["max_len"]), info.get("item_attributes"))

    def events(self) -> RetrievalEvents:
        """Every user's sequence again, from the run directory alone (internal ids, the order
        the run was trained with). Without the split periods: leave-one-out views only."""
        hist = self.histories
        lists = hist.column("items").combine_chunks()
        offsets = lists.offsets.to_numpy().astype(np.int64)
        index = pc.index_in(lists.flatten(), value_set=self.items).to_numpy(zero_copy_only=False)
        times = hist.column("times").combine_chunks()
        flat_times = None
        if times.null_count == 0:
            flat_times = np.asarray(times.flatten().to_numpy(zero_copy_only=False), dtype=np.int64)
        seqs = Sequences(np.asarray(index, dtype=np.int64) + 1, offsets - offsets[0], flat_times)
        return RetrievalEvents(seqs, hist.column("user").combine_chunks(), self.items, self.max_len)

    def internal(self, raw: list[str], flag: str) -> list[int]:
        """Internal item ids of raw ids given as text (ConfigError naming an unknown one)."""
        return self._internal(_typed(raw, self.items.type, flag), flag)

    def _internal(self, values: pa.Array, flag: str) -> list[int]:
        index = pc.index_in(values, value_set=self.items)
        unknown = [str(values[i]) for i in np.flatnonzero(index.is_null().to_numpy(zero_copy_only=False))]
        if unknown:
            raise ConfigError(f"{flag}: unknown item id(s) {', '.join(unknown[:5])} (not in this run's catalogue)")
        return [int(i) + 1 for i in index.to_pylist()]

    def raw(self, items: list[int]) -> list[Any]:
        """Raw ids of internal items."""
        return self.items.take(pa.array(np.asarray(items, dtype=np.int64) - 1)).to_pylist()

    def history(self, user: str) -> tuple[list[int], list[int] | None]:
        """A known user's every item (internal ids) and time, oldest first."""
        ids = self.histories.column("user").combine_chunks()
        hit = np.flatnonzero(pc.equal(ids, _typed([user], ids.type, "--user")[0]).to_numpy(zero_copy_only=False))
        if not len(hit):
            raise ConfigError(f"--user {user}: no such user in this run")
        row = self.histories.slice(int(hit[0]), 1)
        items = row.column("items").combine_chunks().flatten()
        return self._internal(items, "--user"), row.column("times").to_pylist()[0]


def _data_summary(path: Path) -> dict[str, Any]:
    info = json.loads(path.read_text())
    int(info["max_len"])  # a KeyError / ValueError names the file through read_run_file
    return dict(info)


def _histories(path: Path) -> pa.Table:
    table = pq.read_table(path)
    missing = {"user", "items", "times"} - set(table.column_names)
    if missing:
        raise KeyError(f"no column {', '.join(sorted(missing))}")
    return table


def _typed(raw: list[str], typ: pa.DataType, flag: str) -> pa.Array:
    """Raw ids given on the command line, as the catalogue's id type."""
    if pa.types.is_string(typ):
        return pa.array(raw, pa.string())
    try:
        return pa.array([int(r) for r in raw], typ)
    except (ValueError, OverflowError, pa.ArrowInvalid):
        raise ConfigError(f"{flag}: ids of this run are integers, got {raw[:5]}") from None
