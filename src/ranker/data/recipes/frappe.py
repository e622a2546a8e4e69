"""C-Frappe: click-through prediction on Frappe with 10 categorical fields.

Protocol ``C-Frappe`` of ``shared/benchmarks/PROTOCOLS.md``: ``frappe.validation.libfm`` and
``frappe.test.libfm`` (the only staged parts of the NFM split) are concatenated in that order
(86,582 rows), label -1 -> 0, the 10 ``idx:1`` tokens of a line are the fields user, item,
daytime, weekday, isweekend, homework, cost, weather, country, city (stored as the index within
the field, ``idx - field start``, int64). Rows are permuted with ``default_rng(2021)`` and cut
80/10/10 into train/valid/test.

Data: L. Baltrunas, K. Church, A. Karatzoglou, N. Oliver, "Frappe: Understanding the Usage and
Perception of Mobile App Recommendations In-The-Wild", arXiv:1505.03014, 2015; libfm conversion
with 2 sampled negatives per positive from X. He and T.-S. Chua, "Neural Factorization Machines
for Sparse Predictive Analytics", SIGIR 2017. Research use only, no redistribution.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ranker.data.recipes.base import BuiltRanking, Recipe, permutation_split, read_lines
from ranker.data.sources import SourceFile
from ranker.errors import DataError

_REPO = "https://raw.githubusercontent.com/hexiangnan/neural_factorization_machine"
_COMMIT = "ca2a5d11b929816aa44c6e470e795af144608507"

# (name, first global index, last global index), in token order (SOURCE.md).
FIELDS: tuple[tuple[str, int, int], ...] = (
    ("user", 0, 956),
    ("item", 957, 5038),
    ("daytime", 5039, 5045),
    ("weekday", 5046, 5052),
    ("isweekend", 5053, 5054),
    ("homework", 5055, 5057),
    ("cost", 5058, 5059),
    ("weather", 5060, 5068),
    ("country", 5069, 5148),
    ("city", 5149, 5381),
)
FIELD_NAMES: tuple[str, ...] = tuple(f[0] for f in FIELDS)
SEED = 2021

SOURCES = tuple(
    SourceFile("frappe", name, sha256, f"{_REPO}/{_COMMIT}/data/frappe/{name}")
    for name, sha256 in (
        ("frappe.validation.libfm", "fdf4be563a7dd9b15f7a6e8b32671e90e6e7a2a2bd3af4e10bf13c5ad7e76e9e"),
        ("frappe.test.libfm", "a2ebaef3a9af8e55f8bb0d08bc4923965e42e43760ebd7635ac2f8c5db99e097"),
    )
)


def read_libfm(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Labels (0/1, int64, shape n) and per-field indices (int64, shape n x 10) of a libfm file.

    Every line must be ``<-1|1>`` followed by exactly 10 ``idx:1`` tokens, token i inside the
    global index range of field i; otherwise a :class:`DataError` names the file and the line.
    """
    lines = read_lines(path)
    if not lines:
        raise DataError(f"{path}: empty libfm file")
    n, width = len(lines), 1 + len(FIELDS)
    tokens = pc.split_pattern_regex(pc.utf8_trim_whitespace(pa.array(lines, pa.string())), r"\s+")
    counts = pc.list_value_length(tokens).to_numpy(zero_copy_only=False)
    bad = np.flatnonzero(counts != width)
    if bad.size:
        i = int(bad[0])
        raise DataError(
            f"{path}: line {i + 1}: expected a label and {len(FIELDS)} idx:1 tokens, "
            f"got {counts[i]} tokens: {lines[i][:120]!r}"
        )
    flat = pc.list_flatten(tokens)
    pos = np.arange(n * width).reshape(n, width)

    label_tok = flat.take(pa.array(pos[:, 0]))
    ok = pc.is_in(label_tok, value_set=pa.array(["-1", "1"])).to_numpy(zero_copy_only=False)
    if not ok.all():
        i = int(np.flatnonzero(~ok)[0])
        raise DataError(f"{path}: line {i + 1}: label must be -1 or 1, got {label_tok[i]}")
    labels = (pc.equal(label_tok, "1").to_numpy(zero_copy_only=False)).astype(np.int64)

    feat_tok = flat.take(pa.array(pos[:, 1:].ravel()))
    ok = pc.match_substring_regex(feat_tok, r"^[0-9]{1,9}:1$").to_numpy(zero_copy_only=False)
    if not ok.all():
        k = int(np.flatnonzero(~ok)[0])
        raise DataError(
            f"{path}: line {k // len(FIELDS) + 1}: token {k % len(FIELDS) + 1} "
            f"({FIELDS[k % len(FIELDS)][0]}) is {feat_tok[k]}, expected <index>:1"
        )
    idx = pc.cast(pc.replace_substring_regex(feat_tok, r":1$", ""), pa.int64())
    idx_np = idx.to_numpy(zero_copy_only=False).reshape(n, len(FIELDS))
    lo = np.array([f[1] for f in FIELDS], dtype=np.int64)
    hi = np.array([f[2] for f in FIELDS], dtype=np.int64)
    out = (idx_np < lo) | (idx_np > hi)
    if out.any():
        row, col = (int(v[0]) for v in np.nonzero(out))
        name, start, end = FIELDS[col]
        raise DataError(
            f"{path}: line {row + 1}: token {col + 1} ({name}) has index {idx_np[row, col]}, "
            f"outside the field's range [{start}, {end}]"
        )
    return labels, idx_np - lo


def _build(paths: dict[str, Path]) -> BuiltRanking:
    parts = [read_libfm(paths[src.name]) for src in SOURCES]
    labels = np.concatenate([p[0] for p in parts])
    fields = np.concatenate([p[1] for p in parts])
    columns: dict[str, np.ndarray] = {"label": labels}
    columns.update({name: fields[:, j] for j, name in enumerate(FIELD_NAMES)})
    table = pa.table(columns)
    tables = {s: table.take(pa.array(ix)) for s, ix in permutation_split(table.num_rows, SEED).items()}
    meta: dict[str, object] = {
        "rows": {s: t.num_rows for s, t in tables.items()},
        "positives": {s: int(pc.sum(t["label"]).as_py()) for s, t in tables.items()},
        "positive_rate": {s: float(pc.mean(t["label"]).as_py()) for s, t in tables.items()},
        "source_rows": {src.name: int(p[0].size) for src, p in zip(SOURCES, parts, strict=True)},
        "field_sizes": {name: end - start + 1 for name, start, end in FIELDS},
        "split_seed": SEED,
    }
    data = {
        "features": [{"kind": "categorical", "name": name} for name in FIELD_NAMES],
        "tasks": [{"name": "click", "column": "label"}],
        "group_column": "user",
        "item_column": "item",
    }
    return BuiltRanking(tables=tables, data=data, meta=meta)


RECIPES: list[Recipe] = [
    Recipe(
        name="c-frappe",
        protocol="C-Frappe",
        kind="ranking",
        summary="Frappe CTR (NFM libfm validation+test, 86,582 rows), 10 categorical fields, "
        "random 80/10/10 split (seed 2021)",
        sources=SOURCES,
        build=_build,
        aliases=("frappe",),
    )
]
