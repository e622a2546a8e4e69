"""Synthetic Criteo-like click logs at any scale, written in chunks (``ranker datasets synth``).

Rows hold a binary ``click`` label, 13 heavy-tailed numerical columns ``I1..I13`` (log-normal
counts, 0-40% missing per column) and `categorical` id columns ``C1..CK`` whose ids follow a
bounded power law (Zipf-like, exponent :data:`ZIPF_S`): ``C1`` has the given cardinality, the
next ones fewer ids (``cardinality ** ((K - j) / K)``, at least 3), like Criteo's mix of a few
huge and many small columns. The label is drawn from a hidden logistic model,

    p(click) = σ(b + Σ_k w_k · z_k + Σ_j a_j · e_j(id_j)),

with ``z_k`` the standardised ``log1p`` of a few numerical columns and ``e_j(id)`` ∈ [-1, 1) a
per-id effect given by a mixing hash of (column, id) (no table: O(1) memory at any cardinality),
so a model can learn (AUC clearly above 0.5) and the click rate lands near 10%.

Determinism: rows are generated in fixed blocks of :data:`BLOCK` rows, block ``b`` of split
``s`` drawing from ``default_rng([seed, s, b])``, so the data depends on the arguments only,
not on ``--chunk-rows`` nor on the machine. Ids are drawn by inverse-CDF sampling of the
continuous power law on [1, n + 1) (``floor`` gives the rank, rank − 1 the id): no
cardinality-sized array is ever built. Memory is bounded by ``chunk_rows + 2 · BLOCK`` rows.

Layout of ``--out DIR``::

    train/part-00000.parquet ...   `files` files, `rows` rows in all (row groups ≤ min(chunk_rows, 65536))
    valid.parquet, test.parquet    `eval_rows` rows each (same generator, other streams)
    synth.yaml                     a feature-ranker config training on it (streaming on)
    synth.json                     the arguments, row counts and click rates
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
import yaml

from ranker.errors import ConfigError
from ranker.hashing import mix64
from ranker.metrics import auc

BLOCK = 8192  #: rows per generator block (fixed: the data does not depend on the chunk size)
ZIPF_S = 1.1  #: power-law exponent of the id ranks (Criteo's heads are about this steep)
N_NUMERICAL = 13
ROW_GROUP = 65536  #: most rows per parquet row group (a reader decodes one row group at a time)
_SPLITS = {"train": 0, "valid": 1, "test": 2}
_SUFFIX = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "b": 10**9}


@dataclass(frozen=True)
class SynthSpec:
    """What ``ranker datasets synth`` generates (see the module docstring)."""

    rows: int
    cardinality: int
    seed: int = 0
    files: int = 1
    categorical: int = 26
    eval_rows: int | None = None  #: rows of valid and of test; None: min(rows // 10, 100k), at least 100

    def __post_init__(self) -> None:
        for name, low in (("rows", 1), ("cardinality", 1), ("files", 1), ("categorical", 1)):
            value = getattr(self, name)
            if value < low:
                raise ConfigError(f"--{name.replace('_', '-')}: expected an integer ≥ {low}, got {value}")
        if self.files > self.rows:
            raise ConfigError(f"--files: {self.files} files for {self.rows} rows; give at most one file per row")
        if self.eval_rows is not None and self.eval_rows < 1:
            raise ConfigError(f"--eval-rows: expected an integer ≥ 1, got {self.eval_rows}")

    @property
    def n_eval(self) -> int:
        return self.eval_rows if self.eval_rows is not None else max(100, min(self.rows // 10, 100_000))

    def cardinalities(self) -> list[int]:
        """Ids per categorical column: C1 has `cardinality`, later columns geometrically fewer."""
        k = self.categorical
        return [max(3, min(self.cardinality, round(self.cardinality ** ((k - j) / k)))) for j in range(k)]


def parse_count(text: str, flag: str) -> int:
    """``50M`` → 50_000_000, ``1k`` → 1000, ``2e6`` → 2_000_000; ConfigError naming `flag`."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?(?:e\d+)?)\s*([kKmMgGbB]?)\s*", text)
    if m is None:
        raise ConfigError(f"{flag}: expected a positive count such as 1000, 1k, 10M or 2e6, got {text!r}")
    value = float(m.group(1)) * _SUFFIX[m.group(2).lower()]
    if value != int(value) or value < 1:
        raise ConfigError(f"{flag}: expected a whole count ≥ 1, got {text!r}")
    return int(value)


# ---------------------------------------------------------------------- sampling


def zipf_ids(u: np.ndarray, n: int, s: float = ZIPF_S) -> np.ndarray:
    """Ids in [0, n) from uniforms `u` ∈ [0, 1) by the inverse CDF of the density ∝ x^−s on
    [1, n + 1): id = ⌊x⌋ − 1, so id 0 is the most frequent. O(1) memory in `n`."""
    top = float(n + 1) ** (1.0 - s)
    x = (1.0 + u * (top - 1.0)) ** (1.0 / (1.0 - s))
    return np.clip(np.floor(x).astype(np.int64) - 1, 0, n - 1)


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser on uint64: :func:`ranker.hashing.mix64` with seed 1 (z = x + γ)."""
    return mix64(torch.from_numpy(x.view(np.int64)), 1).numpy().view(np.uint64)


def id_effect(ids: np.ndarray, column: int, seed: int) -> np.ndarray:
    """The hidden per-id effect e_j(id) ∈ [-1, 1) of column `column` (a hash, no table)."""
    salt = np.uint64((seed * 1_000_003 + column * 7919 + 1) % 2**63)
    h = _mix(ids.astype(np.uint64) ^ _mix(np.full(1, salt, dtype=np.uint64)))
    return (h >> np.uint64(11)).astype(np.float64) / float(2**53) * 2.0 - 1.0


# numerical columns: log-normal(mu, sigma) counts; missing share; logistic weight of z = std log1p
_NUM_MU = np.linspace(0.5, 4.0, N_NUMERICAL)
_NUM_SIGMA = np.linspace(0.8, 2.0, N_NUMERICAL)
_NUM_MISSING = np.array([0.0, 0.0, 0.2, 0.4, 0.0, 0.1, 0.3, 0.0, 0.05, 0.0, 0.25, 0.0, 0.15])
_NUM_WEIGHT = np.array([0.6, -0.4, 0.3, 0.0, 0.0, 0.25, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0])
_CAT_WEIGHT = 1.0  # a_j of the first few categorical columns (the rest carry no signal)
_CAT_SIGNAL = 4
_INTERCEPT = -2.4


def _block(spec: SynthSpec, split: int, index: int) -> dict[str, np.ndarray]:
    """Rows ``[index · BLOCK, (index + 1) · BLOCK)`` of `split`, as numpy columns."""
    rng = np.random.default_rng([spec.seed, split, index])
    cols: dict[str, np.ndarray] = {}
    logit = np.full(BLOCK, _INTERCEPT)
    for k in range(N_NUMERICAL):
        log_x = rng.normal(_NUM_MU[k], _NUM_SIGMA[k], BLOCK)
        x = np.floor(np.expm1(np.maximum(log_x, 0.0)))
        miss = rng.random(BLOCK) < _NUM_MISSING[k]
        z = (np.log1p(x) - _NUM_MU[k]) / _NUM_SIGMA[k]
        logit += np.where(miss, 0.0, _NUM_WEIGHT[k] * z)
        cols[f"I{k + 1}"] = np.where(miss, np.nan, x).astype(np.float32)
    for j, n in enumerate(spec.cardinalities()):
        ids = zipf_ids(rng.random(BLOCK), n)
        if j < _CAT_SIGNAL:
            logit += _CAT_WEIGHT * id_effect(ids, j, spec.seed)
        cols[f"C{j + 1}"] = ids
    cols["click"] = (rng.random(BLOCK) < 1.0 / (1.0 + np.exp(-logit))).astype(np.int8)
    cols["_logit"] = logit
    return cols


def rows_of(spec: SynthSpec, split: str, start: int, stop: int, *, with_logit: bool = False) -> pa.Table:
    """Rows ``[start, stop)`` of `split` (independent of how a caller cuts the range);
    `with_logit` adds the hidden model's logit as column ``_logit`` (never written)."""
    parts = [_block(spec, _SPLITS[split], b) for b in range(start // BLOCK, -(-stop // BLOCK))]
    off = start - (start // BLOCK) * BLOCK
    names = ["click", *[f"I{k + 1}" for k in range(N_NUMERICAL)], *[f"C{j + 1}" for j in range(spec.categorical)]]
    names += ["_logit"] if with_logit else []
    arrays = []
    for name in names:
        col = np.concatenate([p[name] for p in parts])[off : off + stop - start]
        arrays.append(pa.array(col, from_pandas=True) if name.startswith("I") else pa.array(col))
    return pa.table(arrays, names=names)


def _ranges(start: int, stop: int, step: int) -> Iterator[tuple[int, int]]:
    for a in range(start, stop, step):
        yield a, min(a + step, stop)


# ---------------------------------------------------------------------- writing


def write_synth(spec: SynthSpec, out: Path, *, chunk_rows: int = 1 << 20) -> dict[str, Any]:
    """Write the dataset of `spec` into `out` (see the module docstring); returns the metadata
    written to ``synth.json``. At most `chunk_rows` (+ 2 blocks) rows are in memory at once."""
    if chunk_rows < 1:
        raise ConfigError(f"--chunk-rows: expected an integer ≥ 1, got {chunk_rows}")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out}: exists and is not a directory")
    (out / "train").mkdir(parents=True, exist_ok=True)
    for old in (out / "train").glob("part-*.parquet"):
        old.unlink()
    clicks: dict[str, int] = {}
    ceiling: dict[str, float] = {}
    bounds = [spec.rows * k // spec.files for k in range(spec.files + 1)]
    targets = [(f"train/part-{k:05d}.parquet", "train", bounds[k], bounds[k + 1]) for k in range(spec.files)]
    targets += [(f"{s}.parquet", s, 0, spec.n_eval) for s in ("valid", "test")]
    for name, split, a, b in targets:
        with pq.ParquetWriter(out / name, _schema(spec)) as writer:
            for lo, hi in _ranges(a, b, chunk_rows):
                table = rows_of(spec, split, lo, hi, with_logit=split == "valid")
                clicks[split] = clicks.get(split, 0) + int(np.asarray(table["click"]).sum())
                if split == "valid":  # the AUC of the truth itself, on the first valid chunk
                    ceiling.setdefault(split, auc(np.asarray(table["click"]), np.asarray(table["_logit"])))
                    table = table.drop_columns(["_logit"])
                writer.write_table(table, row_group_size=min(chunk_rows, ROW_GROUP))
    meta: dict[str, Any] = {
        "generator": "ranker datasets synth",
        "args": {**asdict(spec), "chunk_rows": chunk_rows},
        "rows": {"train": spec.rows, "valid": spec.n_eval, "test": spec.n_eval},
        "click_rate": {s: clicks[s] / n for s, n in (("train", spec.rows), ("valid", spec.n_eval))},
        "cardinalities": dict(zip([f"C{j + 1}" for j in range(spec.categorical)], spec.cardinalities(), strict=True)),
        "ceiling_auc_valid": ceiling.get("valid"),  # the hidden model's AUC (first valid chunk)
        "zipf_exponent": ZIPF_S,
        "block_rows": BLOCK,
    }
    (out / "synth.json").write_text(json.dumps(meta, indent=2) + "\n")
    (out / "synth.yaml").write_text(yaml.safe_dump(synth_config(spec), sort_keys=False))
    return meta


def _schema(spec: SynthSpec) -> pa.Schema:
    fields = [pa.field("click", pa.int8())]
    fields += [pa.field(f"I{k + 1}", pa.float32()) for k in range(N_NUMERICAL)]
    fields += [pa.field(f"C{j + 1}", pa.int64()) for j in range(spec.categorical)]
    return pa.schema(fields)


def synth_config(spec: SynthSpec) -> dict[str, Any]:
    """A feature-ranker config over the written files (paths relative to the config's folder):
    the train directory streamed (``data.stream``), hashed ids (Criteo-scale vocabularies
    do not fit plain tables), a small MLP."""
    features: list[dict[str, Any]] = [
        {"kind": "numerical", "name": f"I{k + 1}", "transform": "log1p"} for k in range(N_NUMERICAL)
    ]
    features += [{"kind": "categorical", "name": f"C{j + 1}"} for j in range(spec.categorical)]
    return {
        "name": f"synth-{spec.rows}-{spec.cardinality}-seed{spec.seed}",
        "data": {
            "features": features,
            "tasks": [{"name": "click", "kind": "binary"}],
            "split": {"kind": "files", "train": "train", "valid": "valid.parquet", "test": "test.parquet"},
            "stream": {"chunk_rows": 65536, "shuffle_buffer": 262144},
        },
        "model": {
            "encoders": {"categorical": {"kind": "hashing", "dim": 16, "memory": 0.25}},
            "backbone": {"hidden": [128, 64], "dropout": 0.0},
        },
        "train": {"epochs": 1, "batch_size": 1024, "lr": 0.002, "patience": 1},
    }
