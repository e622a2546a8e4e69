"""An :class:`~ranker.generative.events.EventLog` from a declared event file (``data.path``).

The one path of both own data and the built-in RK-ML100K
(:func:`~ranker.generative.events.rk_ml100k_data`), read from the declared columns (see
:class:`ranker.config.generative.GenerativeData`):

- events: one per row, user and item ids mapped by sorted vocabularies to ``1..U`` / ``1..I``,
  times as integers (unix seconds for the time bias), ordered globally by (split, time, row),
  so each split is one contiguous block and every user's events stay in time order;
- actions: the action column's values (as text) seen in train events get ids ``1..A`` in
  sorted order, every other value the id ``A + 1`` (the table then has A + 1 actions);
- rows: slot 0 is the event's own item with the tasks' labels from their columns (a null label
  or a 0 in ``mask_column`` masks the task); with ``negatives``, slots ``1..K−1`` are items
  sampled as RK-ML100K's (:func:`ranker.data.recipes.rk_ml100k.draw_negatives`), label 0,
  masked for tasks with a ``mask_column``;
- static tokens: per user, the user id itself (a static feature named as the user column) or a
  column of ``user_table`` or of the event file (which must be constant per user); values not
  seen among train users share an "unseen" id (:func:`~ranker.generative.events.static_ids`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ranker.config.events import EventTimeSplit
from ranker.config.generative import GenerativeData, NegativesFile, SampledNegatives
from ranker.config.schema import TaskConfig
from ranker.data.checks import FileRows, check_classes, check_labels, plural
from ranker.data.events import (
    chronological,
    id_values,
    last_n_periods,
    read_events,
    time_periods,
    time_values,
    vocabulary,
)
from ranker.data.readers import declared_file, file_format, read_table
from ranker.data.recipes.rk_ml100k import draw_negatives
from ranker.errors import ConfigError, DataError, warn
from ranker.generative.events import EventLog, static_ids

MAX_FIRST_POSITION_CELLS = 50_000_000  # users × items of the negative sampler's lookup table


def load_event_file(data: GenerativeData, base_dir: Path | None = None) -> EventLog:
    """The declared event file as an EventLog (see the module docstring)."""
    assert data.user_column and data.item_column and data.time_column and data.action_column
    table, rows = read_events(data, extra=_declared_columns(data), base_dir=base_dir)
    check_labels(table, data.tasks, rows, missing_masks=True)
    user, users = vocabulary(id_values(table.column(data.user_column), "user_column"))
    item_values = id_values(table.column(data.item_column), "item_column")
    shown = _read_negatives_file(data, base_dir) if data.negatives_file is not None else None
    if shown is not None:  # items only ever shown are items too (an embedding each)
        item_values = pa.concat_arrays([item_values, _same_type(shown.items, item_values.type, shown)])
    item, items = vocabulary(item_values)
    item = item + 1
    if shown is not None:
        shown = shown.with_items(item[table.num_rows :])
        item = item[: table.num_rows]
    user = user + 1
    time = time_values(table.column(data.time_column))
    position = np.empty(len(time), dtype=np.int64)  # index in the user's time order
    chron = chronological(user, time)
    starts = np.concatenate([[0], np.flatnonzero(np.diff(user[chron])) + 1])
    position[chron] = np.arange(len(chron)) - np.repeat(starts, np.diff(np.append(starts, len(chron))))
    if isinstance(data.split, EventTimeSplit):
        period = time_periods(time, data.split)
    else:
        assert data.split is not None
        period = last_n_periods(user, chron, data.split.valid, data.split.test)
        _short_users(np.bincount(user)[1:], users, data.split.valid + data.split.test, rows.path)
    order = np.lexsort((np.arange(len(time)), time, period))
    table, user, item, time, period = table.take(pa.array(order)), user[order], item[order], time[order], period[order]
    position = position[order]
    for split, name in enumerate(("train", "valid", "test")):
        if not (period == split).any():
            raise DataError(f"{rows.path}: data.split leaves the {name} split empty")
    action, num_actions, action_values = _actions(table.column(data.action_column), period == 0)
    labels, mask = _labels(table, data.tasks)
    candidates = item[:, None]
    if data.negatives is not None:
        neg = _negatives(user, item, period, len(items), data.negatives)
        candidates = np.concatenate([candidates, neg], 1)
    train_target = None
    if shown is not None:
        listed = _file_negatives(shown, user, item, position, users)
        candidates = np.concatenate([candidates, listed], 1)
        if shown.cfg.only_listed:
            train_target = np.asarray((listed > 0).any(1), dtype=bool)
            if not train_target[period == 0].any():
                raise DataError(f"{shown.path}: data.negatives_file.only_listed: no train event is listed")
    if candidates.shape[1] > 1:
        k, t = candidates.shape[1], len(data.tasks)
        labels = np.concatenate([labels, np.zeros((len(item), k - 1, t), np.float32)], 1)
        neg_mask = np.array([0.0 if task.mask_column else 1.0 for task in data.tasks], np.float32)
        neg_mask = np.broadcast_to(neg_mask, (len(item), k - 1, t)) * (candidates[:, 1:, None] > 0)
        mask = np.concatenate([mask, neg_mask.astype(np.float32)], 1)
    _check_classes(labels, mask, period, data.tasks, rows.path)
    in_train = np.zeros(len(users) + 1, dtype=bool)
    in_train[user[period == 0]] = True
    cols = _static_columns(data, table, user, users, base_dir)
    static, num_static = static_ids(cols, in_train)
    return EventLog(
        user=user,
        item=item,
        action=action,
        time=time,
        split=period.astype(np.int64),
        candidates=candidates.astype(np.int64),
        labels=labels,
        label_mask=np.ascontiguousarray(mask),
        static=static,
        tasks=tuple(data.tasks),
        num_items=len(items),
        num_actions=num_actions,
        num_static=num_static,
        vocab={"users": users, "items": items, "actions": action_values},
        train_target=train_target,
    )


def _check_classes(
    labels: np.ndarray, mask: np.ndarray, period: np.ndarray, tasks: list[TaskConfig], path: str
) -> None:
    """Both classes of each binary task in train, over every candidate slot (sampled negatives
    included): see :func:`ranker.data.checks.check_classes`."""
    splits = ("train", "valid", "test")
    found = {
        s: {t.name: labels[period == i, :, k][mask[period == i, :, k] > 0] for k, t in enumerate(tasks)}
        for i, s in enumerate(splits)
    }
    check_classes(found, tasks, {s: f"{path} ({s} split)" for s in splits})


def _short_users(counts: np.ndarray, users: pa.Array, held_out: int, path: str) -> None:
    """`counts[u]`: events of user u (0-based). Users with at most `held_out` events (the last_n
    split's valid + test) have no train event: an error when that is every user, else a warning."""
    short = np.flatnonzero(counts <= held_out)
    if len(short) == len(counts):
        raise DataError(
            f"{path}: data.split holds out the last {held_out} events of each user (valid + test) and "
            f"no user has more (most: {int(counts.max())}), so the train split is empty"
        )
    if len(short):
        warn(
            f"{path}: {plural(len(short), 'user')} with at most the {held_out} events data.split holds out for "
            f"valid and test (first: {users[int(short[0])].as_py()}) have no event in train"
        )


def _declared_columns(data: GenerativeData) -> dict[str, str]:
    """Config key → column, for every column the tasks and static features name."""
    out: dict[str, str] = {}
    for i, t in enumerate(data.tasks):
        out[f"tasks.{i}.column"] = t.column or t.name
        if t.mask_column:
            out[f"tasks.{i}.mask_column"] = t.mask_column
    if data.user_table is None:
        for i, name in enumerate(data.static_features):
            out[f"static_features.{i}"] = name
    return out


def _actions(col: pa.ChunkedArray, train: np.ndarray) -> tuple[np.ndarray, int, pa.Array]:
    """Action ids (n,), the table size (A, plus 1 when some value is unseen in train) and the
    train values (as text) of ids 1..A."""
    text = pc.fill_null(pc.cast(col, pa.string()), "").combine_chunks()
    known = pc.unique(text.filter(pa.array(train)))
    known = known.take(pc.array_sort_indices(known))
    index = pc.index_in(text, value_set=known)
    unseen = index.null_count > 0
    ids = pc.fill_null(index, len(known)).to_numpy(zero_copy_only=False).astype(np.int64) + 1
    return ids, len(known) + int(unseen), known


def _labels(table: pa.Table, tasks: list[TaskConfig]) -> tuple[np.ndarray, np.ndarray]:
    """(n, 1, T) labels and masks of the events' own rows from the tasks' columns."""
    labels, masks = [], []
    for i, t in enumerate(tasks):
        col = table.column(t.column or t.name)
        numeric = pa.types.is_integer(col.type) or pa.types.is_floating(col.type) or pa.types.is_boolean(col.type)
        if not (numeric or pa.types.is_null(col.type)):  # an all-empty column: every row masked
            raise ConfigError(
                f"data.tasks.{i}.column: {t.column or t.name!r} holds {col.type}; "
                "labels must be numbers (0/1 for binary tasks)"
            )
        values = pc.cast(col, pa.float32()).to_numpy(zero_copy_only=False)
        mask = ~np.isnan(values)
        if t.mask_column:
            m = pc.cast(table.column(t.mask_column), pa.float32()).to_numpy(zero_copy_only=False)
            mask &= np.nan_to_num(m) > 0
        values = np.where(mask, np.nan_to_num(values), 0.0)
        if t.kind == "binary" and not np.isin(values[mask], (0.0, 1.0)).all():
            raise DataError(f"data.tasks.{i}: binary task {t.name!r} needs 0/1 labels in column {t.column or t.name!r}")
        labels.append(values)
        masks.append(mask)
    return (np.stack(labels, -1)[:, None].astype(np.float32), np.stack(masks, -1)[:, None].astype(np.float32))


def _negatives(
    user: np.ndarray, item: np.ndarray, period: np.ndarray, num_items: int, cfg: SampledNegatives
) -> np.ndarray:
    """(n, per_event) items: RK-ML100K's sampler over this log's global event order."""
    num_users = int(user.max())
    if (num_users + 1) * (num_items + 1) > MAX_FIRST_POSITION_CELLS:
        raise ConfigError(
            f"data.negatives: {num_users:,} users × {num_items:,} items is too large "
            "for the negative sampler; store impressions (label 0 rows) instead"
        )
    trained = len(np.unique(item[period == 0]))  # items with train events: the ones drawn
    if trained <= cfg.per_event:
        raise ConfigError(
            f"data.negatives.per_event: {cfg.per_event} needs more items with train events than {trained}"
        )
    return draw_negatives(user, item, period == 0, num_items, k=cfg.per_event, seed=cfg.seed, power=cfg.power)[0]


@dataclass(frozen=True)
class _Shown:
    """The rows of ``data.negatives_file``: raw users and items (later item ids 1..), positions."""

    cfg: NegativesFile
    path: Path
    rows: FileRows
    user_column: str
    users: pa.Array
    items: pa.Array | np.ndarray
    position: np.ndarray

    def with_items(self, ids: np.ndarray) -> _Shown:
        return replace(self, items=ids)


def _read_negatives_file(data: GenerativeData, base_dir: Path | None) -> _Shown:
    """``data.negatives_file`` read and its columns checked (the config keys named)."""
    cfg = data.negatives_file
    assert cfg is not None
    path = declared_file(cfg.path, "data.negatives_file.path", base_dir)
    fmt = file_format(path, cfg.format)
    columns = {
        "user_column": str(cfg.user_column or data.user_column),
        "item_column": str(cfg.item_column or data.item_column),
        "position_column": cfg.position_column,
    }
    table = read_table(path, fmt, cfg.csv, string_columns=(columns["user_column"], columns["item_column"]))
    for key, name in columns.items():
        if name not in table.column_names:
            raise ConfigError(
                f"data.negatives_file.{key}: column {name!r} is not in {path}; columns: {', '.join(table.column_names)}"
            )
    pos = table.column(columns["position_column"])
    if not pa.types.is_integer(pos.type) or pos.null_count:
        raise ConfigError(
            f"data.negatives_file.position_column: {columns['position_column']!r} of {path} must hold integers "
            f"without gaps (it holds {pos.type}{', with nulls' if pos.null_count else ''})"
        )
    return _Shown(
        cfg,
        path,
        FileRows.of(path, fmt, cfg.csv),
        columns["user_column"],
        id_values(table.column(columns["user_column"]), "negatives_file.user_column"),
        id_values(table.column(columns["item_column"]), "negatives_file.item_column"),
        pos.to_numpy().astype(np.int64),
    )


def _same_type(values: pa.Array, to: pa.DataType, shown: _Shown) -> pa.Array:
    """`values` (ids of the negatives file) as the event file's id type, or a ConfigError."""
    if values.type == to:
        return values
    try:
        return pc.cast(values, to)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise ConfigError(
            f"data.negatives_file: the ids of {shown.path} are {values.type} and the event file's {to}: "
            "write them the same way"
        ) from exc


def _file_negatives(
    shown: _Shown, user: np.ndarray, item: np.ndarray, position: np.ndarray, users: pa.Array
) -> np.ndarray:
    """(n, per_event) item ids of the negatives file per event (0 = empty slot).

    `user`, `item` (ids 1..), `position` (n,): the events in the log's order; `users` the
    sorted raw user ids of ids 1..; ``shown.items`` already item ids.
    """
    rows, cfg = shown.rows, shown.cfg
    found = pc.index_in(_same_type(shown.users, users.type, shown), value_set=users)
    if found.null_count:
        bad = int(np.flatnonzero(found.is_null().to_numpy(zero_copy_only=False))[0])
        raise DataError(
            f"{shown.path}: {rows.at(bad)}: {shown.user_column} {shown.users[bad].as_py()!r} is not a user "
            f"of the event file"
        )
    who = found.to_numpy(zero_copy_only=False).astype(np.int64) + 1
    neg = np.asarray(shown.items, dtype=np.int64)
    pos = shown.position
    width = int(max(position.max(), pos.max(), 0)) + 1
    event_keys = user * width + position
    by_key = np.argsort(event_keys)
    wanted = who * width + np.clip(pos, 0, None)
    at = np.minimum(np.searchsorted(event_keys[by_key], wanted), len(by_key) - 1)
    event = by_key[at]
    missing = (event_keys[event] != wanted) | (pos < 0)
    if missing.any():
        bad = int(np.flatnonzero(missing)[0])
        raise DataError(
            f"{shown.path}: {rows.at(bad)}: user {shown.users[bad].as_py()!r} has no event at "
            f"{cfg.position_column} {int(pos[bad])} (0-based, in time order)"
        )
    own = item[event] == neg
    if own.any():
        raise DataError(f"{shown.path}: {rows.at(int(np.flatnonzero(own)[0]))}: the negative is the event's own item")
    order = np.argsort(event, kind="stable")
    grouped = event[order]
    slot = np.arange(len(grouped)) - np.searchsorted(grouped, grouped)  # rank within the event's rows
    if (slot >= cfg.per_event).any():
        bad = int(order[np.flatnonzero(slot >= cfg.per_event)[0]])
        raise DataError(
            f"{shown.path}: {rows.at(bad)}: more than data.negatives_file.per_event = {cfg.per_event} "
            "negatives for one event"
        )
    out = np.zeros((len(item), cfg.per_event), dtype=np.int64)
    out[grouped, slot] = neg[order]
    return out


def _static_columns(
    data: GenerativeData, table: pa.Table, user: np.ndarray, users: pa.Array, base_dir: Path | None
) -> dict[str, np.ndarray]:
    """Per user id (0..U, row 0 unused) the text value of each static feature."""
    num = len(users) + 1
    user_text = np.array([""] + pc.cast(users, pa.string()).to_pylist(), dtype=object)
    source, source_users, where = table, None, str(data.path)
    if data.user_table is not None:
        ut = data.user_table
        key = ut.user_column or data.user_column
        assert key is not None
        path = declared_file(ut.path, "data.user_table.path", base_dir)
        source, where = read_table(path, ut.format, ut.csv, string_columns=(key,)), str(path)
        wanted = {"data.user_table.user_column": key}
        wanted |= {f"data.static_features.{i}": f for i, f in enumerate(data.static_features) if f != data.user_column}
        for label, name in wanted.items():
            if name not in source.column_names:
                raise ConfigError(
                    f"{label}: column {name!r} is not in {path}; columns: {', '.join(source.column_names)}"
                )
        ids = pc.cast(source.column(key), pa.string()).combine_chunks()
        source_users = pc.index_in(ids, value_set=pa.array(user_text[1:].tolist(), pa.string()))
        source_users = pc.fill_null(source_users, -1).to_numpy(zero_copy_only=False) + 1
    cols: dict[str, np.ndarray] = {}
    for name in data.static_features:
        if name == data.user_column:
            cols[name] = user_text.astype(str)
            continue
        text = np.array(pc.fill_null(pc.cast(source.column(name), pa.string()), "").to_pylist(), dtype=object)
        owner = user if source_users is None else source_users
        values = np.full(num, "", dtype=object)
        values[owner[::-1]] = text[::-1]  # the first row of each user wins
        if source_users is None and (values[owner] != text).any():
            bad = user_text[owner[values[owner] != text][0]]
            raise DataError(
                f"data.static_features: column {name!r} of {where} is not constant per "
                f"user (user {bad}); give it in data.user_table"
            )
        cols[name] = values[:].astype(str)
    return cols
