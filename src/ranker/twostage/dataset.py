"""The three stage-2 files (train / valid / test parquet) and the ranking config that trains on them.

Files hold :func:`ranker.twostage.rows.rows_table`'s columns plus the side information joined by
raw id (:class:`~ranker.twostage.side_info.SideInfo`) and, optionally, ``title_emb`` (the
title's content vector, :mod:`ranker.twostage.content`). The config is an ordinary feature-ranker
config (``split: {kind: files}``, no recipe): ``ranker train`` trains it like any declared data.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ranker.models.sequential import Retriever
from ranker.retrieval.candidates import Candidates
from ranker.retrieval.data import ServingData
from ranker.retrieval.protocol import LeaveOneOut
from ranker.twostage.rows import heldout_rows, rows_table, training_rows
from ranker.twostage.side_info import SideInfo

ABLATIONS = ("none", "no-hard", "no-content", "no-demographics", "no-stage1")
STAGE1_FEATURES: list[dict[str, Any]] = [
    {"kind": "numerical", "name": "stage1_score"},
    {"kind": "numerical", "name": "stage1_rank", "transform": "log1p"},
]


def with_side_info(table: pa.Table, side: SideInfo, content: np.ndarray | None = None) -> pa.Table:
    """`table` plus the user and item columns of `side` and, given `content` (one row per row
    of ``side.items``), a ``title_emb`` list<float32> column."""
    for name, col in zip(*_columns(side.user_columns(table.column("user_id").combine_chunks())), strict=True):
        table = table.append_column(name, col)
    items = table.column("item_id").combine_chunks()
    for name, col in zip(*_columns(side.item_columns(items)), strict=True):
        table = table.append_column(name, col)
    if content is not None:
        key = side.items.column("item_id").combine_chunks()
        index = np.asarray(pc.index_in(items.cast(key.type), value_set=key).fill_null(-1).to_numpy(), dtype=np.int64)
        vectors = np.where((index >= 0)[:, None], content[np.maximum(index, 0)], np.nan).astype(np.float32)
        flat = pa.array(vectors.reshape(-1), pa.float32())
        offsets = pa.array(np.arange(0, vectors.size + 1, vectors.shape[1], dtype=np.int32))
        table = table.append_column("title_emb", pa.ListArray.from_arrays(offsets, flat))
    return table


def _columns(t: pa.Table) -> tuple[list[str], list[pa.ChunkedArray]]:
    return t.column_names, list(t.columns)


def heldout_table(
    cands: Candidates,
    data: LeaveOneOut,
    serving: ServingData,
    side: SideInfo,
    *,
    history: int = 50,
    content: np.ndarray | None = None,
) -> pa.Table:
    """The rows of held-out queries' candidates (one per query × candidate), with side information."""
    return with_side_info(rows_table(heldout_rows(cands), data, serving, history=history), side, content)


def stage2_tables(
    model: Retriever,
    data: LeaveOneOut,
    serving: ServingData,
    side: SideInfo,
    *,
    prefix: Candidates | None,
    valid: Candidates,
    test: Candidates,
    hard: int,
    sampled: int,
    seed: int,
    hard_alpha: float = 0.0,
    history: int = 50,
    content: np.ndarray | None = None,
    progress: bool = False,
) -> dict[str, pa.Table]:
    """Train rows from the training prefixes' candidates (`hard` + `sampled` negatives each, the
    hard ones weighted by stage-1 rank with `hard_alpha`: :func:`ranker.twostage.rows.training_rows`),
    valid / test rows = the held-out candidates, all with side information. Without `prefix`:
    only the valid and test tables (to score a stage 2 trained on other rows)."""
    tables = {
        split: heldout_table(c, data, serving, side, history=history, content=content)
        for split, c in (("valid", valid), ("test", test))
    }
    if prefix is not None:
        train = training_rows(
            model, data, prefix, hard=hard, sampled=sampled, seed=seed, hard_alpha=hard_alpha, progress=progress
        )
        tables["train"] = with_side_info(rows_table(train, data, serving, history=history), side, content)
    return tables


def write_tables(out_dir: Path, tables: dict[str, pa.Table]) -> dict[str, Path]:
    """``OUT/{train,valid,test}.parquet``; the paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {}
    for split, table in tables.items():
        paths[split] = out_dir / f"{split}.parquet"
        tmp = paths[split].with_suffix(".tmp")
        pq.write_table(table, tmp)
        tmp.replace(paths[split])
    return paths


def stage2_config(
    name: str,
    files: dict[str, Path],
    side: SideInfo,
    *,
    times: bool,
    content_dim: int | None,
    ablation: str = "none",
    history: int = 50,
    epochs: int = 10,
) -> dict[str, Any]:
    """A feature-ranker config (a plain dict, ``load_config(base=...)`` validates it) on the
    three files: TransAct over the last min(20, `history`) history items (item ids; seconds
    before the request, with its time encoding, when `times`),
    DCN-V2 cross layers, MLP, one logit (``click`` = the row's ``label``); selection on the mean
    validation AUC over the candidate rows. `ablation` drops a feature group (``no-content``,
    ``no-demographics``, ``no-stage1``); ``no-hard`` changes the rows, not the config."""
    if ablation not in ABLATIONS:
        raise ValueError(f"ablation must be one of {ABLATIONS}, got {ablation!r}")
    features: list[dict[str, Any]] = [
        {"kind": "categorical", "name": "user_id"},
        {"kind": "categorical", "name": "item_id"},
        *([] if ablation == "no-demographics" else side.user_features),
        *side.item_features,
        *([] if ablation == "no-stage1" else STAGE1_FEATURES),
        {"kind": "numerical", "name": "hist_len", "transform": "log1p"},
    ]
    if content_dim and ablation != "no-content":
        features.append({"kind": "dense", "name": "title_emb", "dim": content_dim})
    hist: dict[str, Any] = {
        "kind": "history",
        "name": "hist",
        "item_column": "hist_items",
        "item_feature": "item_id",
        "max_len": history,
    }
    if times:
        hist["time_column"] = "hist_secs"
    features.append(hist)
    return {
        "name": name,
        "data": {
            "features": features,
            "tasks": [{"name": "click", "column": "label"}],
            "split": {"kind": "files", **{s: str(p) for s, p in files.items()}},
            "group_column": "user_id",
            "item_column": "item_id",
        },
        "model": {
            "encoders": {"categorical": {"dim": 16}},
            "history": {"kind": "transact", "max_len": min(20, history), "time_encoding": times},
            "interaction": {"kind": "cross", "num_layers": 2},
            "backbone": {"hidden": [256, 128], "dropout": 0.1},
        },
        "train": {"epochs": epochs, "batch_size": 1024, "lr": 0.001, "patience": 2, "progress": False},
    }
