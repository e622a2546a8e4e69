"""The resumable results files of the benchmark runners (``benchmarks/results/*.json``).

Each file maps a run key (``"variant|seed"``) to that run's metrics. ``save_result`` merges the
new entry with what is on disk (other processes of the same grid may have written meanwhile)
and replaces the file atomically, so a killed runner never leaves a half-written file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def load_results(path: Path) -> dict[str, Any]:
    """The file's entries, or {} when it does not exist yet."""
    return json.loads(path.read_text()) if path.is_file() else {}


def save_result(path: Path, key: str, value: Any) -> dict[str, Any]:
    """Add ``key: value`` to the file (merged with its current content); the merged entries."""
    merged = {**load_results(path), key: value}
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(merged, indent=1, default=float))
    tmp.replace(path)
    return merged
