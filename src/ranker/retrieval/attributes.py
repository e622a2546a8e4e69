"""Item attributes of a retrieval catalogue: raw attribute lists → a padded token matrix.

A retrieval run with ``data.item_attributes`` gives its sequence model one row of attribute
tokens per internal item (:class:`AttributeTokens`), which
:class:`~ranker.models.sequential.SequentialRetriever` embeds and averages into the item's
vector. Tokens are ``1..V`` in sorted order of the attribute strings (0 pads); a built-in
source with several columns prefixes each value by its column (``genres=Drama``,
``year=1995``), so two columns never share a token.

The matrix itself travels inside ``model.safetensors`` (a buffer of the model); ``data.json``
records its shape (:meth:`AttributeTokens.summary`), so a finished run loads without reading
the source again.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ranker.config.retrieval import ItemAttributes
from ranker.data.readers import declared_file
from ranker.errors import ConfigError, DataError, warn

KEY = "data.item_attributes"


@dataclass(frozen=True)
class AttributeTokens:
    """``tokens`` (I + 1, A) int64: item k's attribute tokens in row k, 0-padded (row 0, the
    padding item, has none); ``vocabulary`` V: tokens are 1..V."""

    tokens: np.ndarray
    vocabulary: int

    def summary(self) -> dict[str, int]:
        """The shape a model needs to be built before its weights are loaded (``data.json``)."""
        return {"vocabulary": self.vocabulary, "per_item": int(self.tokens.shape[1])}

    @classmethod
    def empty(cls, summary: dict[str, Any], num_items: int) -> AttributeTokens:
        """Zeros of a saved run's shape (its weights then fill them)."""
        return cls(np.zeros((num_items + 1, int(summary["per_item"])), np.int64), int(summary["vocabulary"]))


def attribute_tokens(spec: ItemAttributes, items: pa.Array) -> AttributeTokens:
    """The token matrix of the catalogue `items` (raw ids; row k - 1 is internal item k).

    Example:
        >>> import tempfile
        >>> path = Path(tempfile.mkdtemp()) / "attrs.json"
        >>> _ = path.write_text('{"10": ["b", "a"], "30": ["b"]}')
        >>> got = attribute_tokens(ItemAttributes(path=str(path)), pa.array([10, 20, 30]))
        >>> got.tokens.tolist(), got.vocabulary
        ([[0, 0], [2, 1], [0, 0], [2, 0]], 2)
    """
    table = _read_source(spec)  # item_id (raw), attributes list<string>
    ids = table.column("item_id").combine_chunks()
    if not pa.types.is_string(items.type):
        try:
            ids = ids.cast(items.type)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            raise DataError(f"{_where(spec)}: item ids must be integers, as this catalogue's are") from None
    else:
        ids = ids.cast(pa.string())
    row = pc.fill_null(pc.index_in(items, value_set=ids), -1).to_numpy()  # catalogue → source row (-1: absent)
    lists = table.column("attributes").to_pylist()
    per_item: list[list[str]] = [(lists[r] or []) if r >= 0 else [] for r in row]
    listed = sum(1 for p in per_item if p)
    if not listed:
        raise DataError(f"{_where(spec)}: none of the catalogue's {len(items):,} items has attributes there")
    if listed < len(items):
        warn(f"{KEY}: {len(items) - listed:,} of {len(items):,} catalogue items have no attributes in {_where(spec)}")
    cut = sum(1 for p in per_item if len(p) > spec.max_per_item)
    if cut:
        warn(f"{KEY}.max_per_item: {cut:,} items list more than {spec.max_per_item} attributes; the first are kept")
    per_item = [list(dict.fromkeys(p))[: spec.max_per_item] for p in per_item]
    vocab = {a: k + 1 for k, a in enumerate(sorted({a for p in per_item for a in p}))}
    width = max(len(p) for p in per_item)
    tokens = np.zeros((len(items) + 1, width), np.int64)
    for k, p in enumerate(per_item, start=1):
        tokens[k, : len(p)] = [vocab[a] for a in p]
    return AttributeTokens(tokens, len(vocab))


def _where(spec: ItemAttributes) -> str:
    return spec.path if spec.path is not None else f"the {spec.source} attributes"


def _read_source(spec: ItemAttributes) -> pa.Table:
    if spec.path is not None:
        return _read_json(declared_file(spec.path, f"{KEY}.path", what="an attributes file"))
    from ranker.twostage.side_info import side_info  # the readers of the datasets' side files

    info = side_info(spec.source or "")
    columns = [f["name"] for f in info.item_features]
    tokens: list[list[str]] = [[] for _ in range(info.items.num_rows)]
    for name in columns:
        prefix = f"{name}=" if len(columns) > 1 else ""  # one column (Beauty's ids): nothing to tell apart
        for k, value in enumerate(info.items.column(name).to_pylist()):
            values = value if isinstance(value, list) else [value]
            tokens[k].extend(f"{prefix}{v}" for v in values if v is not None)
    return pa.table({"item_id": info.items.column("item_id"), "attributes": pa.array(tokens, pa.list_(pa.string()))})


def _read_json(path: Path) -> pa.Table:
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: not a JSON file ({e})") from e
    if not isinstance(raw, dict) or not all(isinstance(v, list) for v in raw.values()):
        raise DataError(f"{path}: expected a JSON object {{raw item id: [attribute, ...]}}")
    keys = list(raw)  # JSON object keys are text
    values = [[str(a) for a in v] for v in raw.values()]
    if not keys:
        raise ConfigError(f"{KEY}.path: {path} lists no items")
    return pa.table({"item_id": pa.array(keys, pa.string()), "attributes": pa.array(values, pa.list_(pa.string()))})
