"""The results files of the benchmark runners (``benchmarks/results/*.json``): one layout.

Layout ``ranker-results/1`` (every file under ``benchmarks/results/`` has it)::

    {
      "layout": "ranker-results/1",
      "study": "grid-dcn-c-frappe-bars",      # the file's stem: which study wrote it
      "protocol": "C-Frappe",                 # default protocol of its records
      "source": "runner",                     # or "migrated from the pre-issue-17 layout",
                                              # or "transcribed from BENCHMARKS.md"
      "notes": {...},                         # optional: file-level data that is not one run
      "records": [
        {
          "key": "MLP|2021",                  # the runner's resume key (unique in the file)
          "name": "MLP",                      # the configuration / variant / table row
          "config": "benchmarks/grids/dcn-c-frappe-bars.yaml",   # or "unknown"
          "protocol": "C-Frappe",
          "seed": 2021,                       # null where the record is not one seed's run
          "metrics": {...},                   # what the run measured (a run's metrics.json,
                                              # or a transcribed table row's cells)
          "provenance": {
            "command": "python benchmarks/run_grid.py ...",
            "commit": "0f2dc47...",           # git rev-parse HEAD of the code that ran
            "date": "2026-11-28T14:03:00+00:00",   # UTC
            "machine": "Linux-..., x86_64, 2 CPUs"
          }
        }
      ]
    }

Optional provenance fields: ``"dirty": true`` when the working tree had uncommitted changes to
tracked files (the commit alone does not pin the code), ``"recovered_from"`` on records that
``migrate_results.py`` or ``transcribe_table.py`` reconstructed after the fact (how each field
was found). A field that could not be recovered holds the string ``"unknown"`` (``UNKNOWN``);
nothing is guessed. Dates are UTC ISO 8601 (the migrated ones: the date of the commit that
recorded the result, not of the run itself; runners' own dates, where a file recorded one,
are kept as written). ``save_result`` stamps the provenance of the running process automatically
(``provenance()``: ``git rev-parse HEAD``, the UTC date, ``sys.argv``, platform and CPU count),
merges the new record with what is on disk (other processes of the same grid may have written
meanwhile) and replaces the file atomically, so a killed runner never leaves a half-written
file. ``load_results`` returns the ``{key: metrics}`` mapping the runners and table renderers
work with, for files in this layout and in the legacy ones alike.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import fcntl
import json
import os
import platform
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

LAYOUT = "ranker-results/1"
UNKNOWN = "unknown"
SOURCE_RUNNER = "runner"
SOURCE_MIGRATED = "migrated from the pre-issue-17 layout"
SOURCE_TRANSCRIBED = "transcribed from BENCHMARKS.md"
DEV_BOX = "2-core CPU (dev box)"
REPO = Path(__file__).resolve().parent.parent

PROTOCOLS = {
    "c-frappe": "C-Frappe",
    "rk-ml100k": "RK-ML100K",
    "mt-census": "MT-Census",
    "t-adult": "T-Adult",
    "r-ml100k": "R-ML100K",
    "r-ml1m": "R-ML1M",
    "r-beauty": "R-Beauty",
    "ts-ml1m": "TS-ML1M",
}


def protocol_of(text: str | None) -> str:
    """The protocol named by a dataset name or a file/config stem (``UNKNOWN`` if none)."""
    if not text:
        return UNKNOWN
    low = text.lower()
    for slug in sorted(PROTOCOLS, key=len, reverse=True):
        if re.search(rf"(^|[-_/ ]){re.escape(slug)}($|[-_./ ])", low):
            return PROTOCOLS[slug]
    return UNKNOWN


def _git(*args: str) -> str:
    try:
        out = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return ""
    return out.stdout.strip() if out.returncode == 0 else ""


def machine() -> str:
    """Platform, CPU and CPU count of this process's machine."""
    cpu = platform.processor() or platform.machine() or UNKNOWN
    return f"{platform.system()} {platform.release()}, {cpu}, {os.cpu_count()} CPUs"


def provenance(command: list[str] | None = None) -> dict[str, Any]:
    """Provenance of a result produced now by this process."""
    commit = _git("rev-parse", "HEAD") or UNKNOWN
    out: dict[str, Any] = {
        "command": shlex.join(["python", *(sys.argv if command is None else command)]),
        "commit": commit,
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(),
    }
    if commit != UNKNOWN and _git("status", "--porcelain", "--untracked-files=no"):
        out["dirty"] = True  # the working tree had uncommitted changes to tracked files
    return out


def split_key(key: str) -> tuple[str, int | None]:
    """``"name|2021"`` → ("name", 2021); keys without a seed part give (key, None)."""
    parts = key.split("|")
    seeds = [p for p in parts if re.fullmatch(r"\d{4}", p)]
    if not seeds:
        return key, None
    name = "|".join(p for p in parts if p != seeds[0])
    return name, int(seeds[0])


def make_record(
    key: str,
    metrics: Any,
    *,
    prov: dict[str, Any],
    name: str | None = None,
    seed: int | None | str = "auto",
    protocol: str | None = None,
    config: str | None = None,
) -> dict[str, Any]:
    """One record of the layout."""
    auto_name, auto_seed = split_key(key)
    if seed == "auto":
        seed = auto_seed
        if seed is None and isinstance(metrics, dict) and isinstance(metrics.get("seed"), int):
            seed = metrics["seed"]
    if protocol is None and isinstance(metrics, dict):
        protocol = protocol_of(str(metrics.get("dataset", "")))
    return {
        "key": key,
        "name": name or auto_name,
        "config": config or UNKNOWN,
        "protocol": protocol or UNKNOWN,
        "seed": seed,
        "metrics": metrics,
        "provenance": prov,
    }


def is_current(doc: Any) -> bool:
    return isinstance(doc, dict) and doc.get("layout") == LAYOUT


def load_document(path: Path) -> dict[str, Any] | None:
    """The file in the current layout, or None when it does not exist (legacy files: ValueError)."""
    if not path.is_file():
        return None
    doc = json.loads(path.read_text())
    if not is_current(doc):
        raise ValueError(f"{path}: not in layout {LAYOUT}; run benchmarks/migrate_results.py")
    return doc


def records(path: Path) -> list[dict[str, Any]]:
    doc = load_document(path)
    return [] if doc is None else list(doc["records"])


def load_results(path: Path) -> dict[str, Any]:
    """``{key: metrics}`` of the file, or {} when it does not exist yet.

    Files still in a legacy layout are returned as they are (they were that mapping).
    """
    if not path.is_file():
        return {}
    doc = json.loads(path.read_text())
    if is_current(doc):
        return {r["key"]: r["metrics"] for r in doc["records"]}
    return doc


def new_document(
    study: str, protocol: str, source: str = SOURCE_RUNNER, notes: dict[str, Any] | None = None
) -> dict[str, Any]:
    doc: dict[str, Any] = {"layout": LAYOUT, "study": study, "protocol": protocol, "source": source}
    if notes:
        doc["notes"] = notes
    doc["records"] = []
    return doc


def write_document(path: Path, doc: dict[str, Any]) -> None:
    """Write ``doc`` atomically (keys of records must be unique)."""
    keys = [r["key"] for r in doc["records"]]
    if len(keys) != len(set(keys)):
        raise ValueError(f"{path}: duplicate record keys")
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(doc, indent=1, ensure_ascii=False, default=float) + "\n")
    tmp.replace(path)


def save_result(path: Path, key: str, value: Any, **record_fields: Any) -> dict[str, Any]:
    """Add (or replace) the record ``key`` with metrics ``value`` and this process's provenance.

    The file is re-read first (merged with records other processes wrote meanwhile), under an
    exclusive lock on a sibling ``.<name>.lock`` file, so runners of one study (e.g. one process
    per seed) may write the same file at once without losing a record. Extra keyword arguments
    (name, seed, protocol, config) go to ``make_record``. Returns the merged ``{key: metrics}``
    mapping.
    """
    rec = make_record(key, value, prov=provenance(), **record_fields)
    with _locked(path):
        doc = load_document(path) or new_document(path.stem, protocol_of(path.stem))
        if rec["protocol"] == UNKNOWN:
            rec["protocol"] = doc["protocol"]
        doc["records"] = [r for r in doc["records"] if r["key"] != key] + [rec]
        write_document(path, doc)
    return {r["key"]: r["metrics"] for r in doc["records"]}


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold an exclusive advisory lock (flock) for `path`'s read-merge-write."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.parent / f".{path.name}.lock", "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def save_document(
    path: Path,
    entries: dict[str, Any],
    *,
    protocol: str | None = None,
    notes: dict[str, Any] | None = None,
    **record_fields: Any,
) -> dict[str, Any]:
    """Write a whole file at once: one record per ``entries`` item, all with this process's
    provenance (for the runners that produce a file in one go)."""
    prov = provenance()
    doc = new_document(path.stem, protocol or protocol_of(path.stem), notes=notes)
    for key, value in entries.items():
        rec = make_record(key, value, prov=prov, protocol=protocol, **record_fields)
        if rec["protocol"] == UNKNOWN:
            rec["protocol"] = doc["protocol"]
        doc["records"].append(rec)
    write_document(path, doc)
    return doc
