"""Run directories verify themselves: ``manifest.json``, written at the end of training, read by every load.

At the end of training (:func:`ranker.rundir.finish_run`) the run directory is *sealed*: its
``manifest.json`` lists the size and sha256 of every file at its top level — ``config.yaml`` (so
the entry of ``config.yaml`` is the hash of the config that produced the run), the weights, the
family's state (``preprocessor.json``; ``items.parquet`` / ``histories.parquet`` / ``data.json``;
``model_shape.json`` …), ``metrics.json``, ``log.jsonl``, calibration data::

    {"format": "ranker-run/1", "kind": "ranking",
     "files": {"config.yaml": {"sha256": "9f2c…", "bytes": 1872}, …},
     "digest": "…"}     sha256 of the sorted "name sha256 bytes" lines: a hand-edited list shows

Not sealed, because other commands write them later: ``report.html`` (``ranker report``), the
outputs of ``ranker export`` (``*.pt2``, ``*.onnx``, ``*.inputs.json``), hidden temporary files,
and subfolders (``checkpoints/`` keeps the resume state under its own atomic protocol;
``tensorboard/``). Other files added after training are ignored: they are not part of the run.

Every command that loads a run (``evaluate``, ``retrieve``, ``report``, ``collisions``,
``bundle``, ``export``, ``predict``, ``train --init-from``, ``distill --teacher``) calls
:func:`verify_run` first. A run directory is in one of three states:

- **sealed**: every listed file must be present with its size and sha256; a missing, truncated,
  corrupted, replaced or renamed file, an edited ``config.yaml`` or a damaged manifest is a
  one-line :class:`~ranker.errors.DataError` naming the file and what is wrong.
- **unfinished** (no manifest, no ``metrics.json``): training stopped or is running; loading it
  says the run did not finish (a rerun of the same ``ranker train`` resumes it).
- **older** (``metrics.json`` but no manifest): written before runs were sealed (or its manifest
  was deleted). It loads with one ``warning:`` line saying it is unverified. A warning rather
  than an error because nothing in a run directory is unpickled (safetensors, JSON, parquet), so
  an unverified run cannot run code, and every loader still refuses a file it cannot parse with a
  DataError naming it; refusing would make every run trained before this check unusable. What
  is lost is the detection of a *valid* change (an edited config.yaml whose sizes still fit).

Cheap: each file is hashed once per load (a few MB of weights take milliseconds); within one
process a file whose identity and stat (inode, size, mtime and ctime, which every write changes)
are unchanged since it was hashed is not hashed again (:func:`file_sha256`), so a command that
looks at a run twice (its family, then its load; a bundle, then the runs inside it) reads it once.

The manifest detects damage, not tampering: whoever can rewrite a file can rewrite the manifest.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import re
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from ranker.data.sources import atomic_write_bytes
from ranker.errors import DataError, RankerError, warn

FORMAT = "ranker-run/1"
MANIFEST = "manifest.json"
#: Files that commands write into a finished run (not sealed): ``ranker report``, ``ranker export``.
LATER_OUTPUTS = ("report.html", "*.pt2", "*.onnx", "*.inputs.json")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_HASHED: dict[tuple[str, int, int, int, int], str] = {}
_SETTLED_NS = 3_000_000_000  # 3 s: coarser than the timestamp tick of any file system (FAT: 2 s)
_WARNED: set[str] = set()
T = TypeVar("T")


def file_sha256(path: Path) -> str:
    """The sha256 of a file (hex), hashed once per version of the file in this process.

    The cache key is the file's path, inode, size, mtime and ctime (every write changes ctime,
    which no user call can set back). File timestamps tick coarsely (a few ms; seconds on some
    file systems), so two writes in one tick could look alike: as git does with "racily clean"
    files, a hash is kept only for a file whose last change is :data:`_SETTLED_NS` older than
    the hashing, so any later write shows in its stat."""
    st = path.stat()
    key = (os.path.abspath(path), st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
    if key in _HASHED:
        return _HASHED[key]
    started = time.time_ns()
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    if started - max(st.st_mtime_ns, st.st_ctime_ns) > _SETTLED_NS:
        if len(_HASHED) > 4096:  # a long-lived service reloading bundles: keep the cache small
            _HASHED.clear()
        _HASHED[key] = h.hexdigest()
    return h.hexdigest()


def sealed_names(run_dir: Path) -> list[str]:
    """The files of `run_dir` that its manifest covers: top-level regular files except the
    manifest, hidden files and :data:`LATER_OUTPUTS`."""
    return sorted(
        p.name
        for p in Path(run_dir).iterdir()
        if p.is_file()
        and p.name != MANIFEST
        and not p.name.startswith(".")
        and not any(fnmatch.fnmatch(p.name, pattern) for pattern in LATER_OUTPUTS)
    )


def seal_run(run_dir: Path, kind: str) -> dict[str, Any]:
    """Write `run_dir`'s ``manifest.json`` (atomically) over its current files; the manifest."""
    run_dir = Path(run_dir)
    files = {
        n: {"sha256": file_sha256(run_dir / n), "bytes": (run_dir / n).stat().st_size} for n in sealed_names(run_dir)
    }
    manifest = {"format": FORMAT, "kind": kind, "files": files, "digest": _digest(files)}
    atomic_write_bytes(run_dir / MANIFEST, (json.dumps(manifest, indent=2) + "\n").encode())
    return manifest


def unseal_run(run_dir: Path) -> None:
    """Training (re)starts in `run_dir`: it is no longer a finished run until sealed again, so its
    manifest and ``metrics.json`` (which describe the previous end of training) are removed."""
    for name in (MANIFEST, "metrics.json"):
        (Path(run_dir) / name).unlink(missing_ok=True)


def verify_run(
    run_dir: Path, *, needs: Sequence[str] = ("config.yaml",), finished: bool = True
) -> dict[str, Any] | None:
    """Check `run_dir` against its manifest; the manifest, or None for an unsealed run.

    `needs`: files the caller reads, which the manifest must list (an older run: which must
    exist). `finished=False` (``ranker report``) accepts an unsealed directory silently (a run
    in progress has a log to plot) and leaves a missing one to the caller; a sealed one is
    verified all the same.
    Raises DataError naming the file and what is wrong (module docstring).
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir() and not finished:
        return None  # the caller says what it needed
    if not run_dir.is_dir():
        what = "is a file, not a run directory" if run_dir.exists() else "no such run directory"
        raise DataError(f"{run_dir}: {what}")
    path = run_dir / MANIFEST
    if not path.is_file():
        if finished:
            _check_unsealed(run_dir, needs)
        return None
    manifest = _read_manifest(run_dir)
    files: dict[str, dict[str, Any]] = manifest["files"]
    problems = [f"{path}: does not list {n}, which loading the run reads" for n in needs if n not in files]
    problems += [p for name in sorted(files) if (p := _check_file(run_dir, name, files)) is not None]
    if problems:
        more = f"; and {len(problems) - 3} more" if len(problems) > 3 else ""
        raise DataError("; ".join(problems[:3]) + more)
    return manifest


def read_run_file(path: Path, parse: Callable[[Path], T], what: str) -> T:
    """`parse(path)`, with any failure to read or parse it (I/O, JSON, parquet, missing keys) a
    DataError naming the file: for runs that no manifest protects (older ones)."""
    if not path.is_file():
        raise DataError(f"{path}: missing; the run directory is incomplete")
    try:
        return parse(path)
    except RankerError:
        raise
    except (OSError, ValueError, KeyError, TypeError, IndexError) as exc:
        first = (str(exc).splitlines() or [""])[0][:200]
        raise DataError(f"{path}: not a readable {what} ({type(exc).__name__}: {first})") from None


# ---------------------------------------------------------------------- helpers


def _digest(files: dict[str, dict[str, Any]]) -> str:
    text = "".join(f"{name} {v['sha256']} {v['bytes']}\n" for name, v in sorted(files.items()))
    return hashlib.sha256(text.encode()).hexdigest()


def _read_manifest(run_dir: Path) -> dict[str, Any]:
    path = run_dir / MANIFEST
    try:
        manifest = json.loads(path.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{path}: not valid JSON ({exc}); the run directory is damaged") from None
    if not isinstance(manifest, dict):
        raise DataError(f"{path}: not a run manifest (expected a JSON object)")
    fmt = manifest.get("format")
    if isinstance(fmt, str) and fmt.startswith("ranker-bundle/"):
        raise DataError(f"{run_dir}: a serving bundle ({path} says {fmt}), not a run directory")
    if fmt != FORMAT:
        raise DataError(f"{path}: not a {FORMAT} manifest (format: {fmt!r}); written by another ranker version?")
    files = manifest.get("files")
    if not isinstance(files, dict) or not files:
        raise DataError(f"{path}: its `files` list is missing or empty (the manifest was edited)")
    for name, entry in files.items():
        ok = (
            isinstance(entry, dict)
            and isinstance(entry.get("sha256"), str)
            and _SHA256.fullmatch(entry["sha256"]) is not None
            and type(entry.get("bytes")) is int
            and entry["bytes"] >= 0
            and name not in ("", ".", "..")
            and "/" not in name
            and "\\" not in name
        )
        if not ok:
            raise DataError(f"{path}: its entry {name!r} is malformed (the manifest was edited)")
    if manifest.get("digest") != _digest(files):
        raise DataError(f"{path}: its digest does not match its file list (the manifest was edited after training)")
    return manifest


def _check_file(run_dir: Path, name: str, files: dict[str, dict[str, Any]]) -> str | None:
    """What is wrong with one listed file (None when it is as sealed)."""
    path, want = run_dir / name, files[name]
    where = f"the run's {MANIFEST}"
    if not path.is_file():
        twin = _renamed(run_dir, want, files)
        hint = f"; {twin} has its content (renamed?)" if twin else ""
        return f"{path}: missing (listed in {where}){hint}"
    size = path.stat().st_size
    if name == "config.yaml" and (size != want["bytes"] or file_sha256(path) != want["sha256"]):
        return f"{path}: sha256 differs from {where} (edited after training?)"
    if size != want["bytes"]:
        if size == 0:
            return f"{path}: empty (0 bytes; {where} says {want['bytes']})"
        what = "truncated or replaced" if size < want["bytes"] else "extended or replaced"
        return f"{path}: {size} bytes, {where} says {want['bytes']} ({what} after training)"
    if file_sha256(path) != want["sha256"]:
        return f"{path}: sha256 differs from {where} (corrupted or replaced after training)"
    return None


def _renamed(run_dir: Path, want: dict[str, Any], files: dict[str, dict[str, Any]]) -> str | None:
    """An unlisted file of the same size and sha256 as a missing listed one."""
    for p in sorted(run_dir.iterdir()):
        if p.is_file() and p.name not in files and p.name != MANIFEST and p.stat().st_size == want["bytes"]:
            if file_sha256(p) == want["sha256"]:
                return p.name
    return None


def _check_unsealed(run_dir: Path, needs: Sequence[str]) -> None:
    """An unfinished run is refused; an older (finished, unsealed) one gets one warning."""
    if not (run_dir / "config.yaml").is_file():
        raise DataError(f"{run_dir}: not a run directory (no config.yaml or {MANIFEST}); `ranker train` writes one")
    if not (run_dir / "metrics.json").is_file():
        last = run_dir / "checkpoints" / "last.json"
        epoch = _last_epoch(last)
        if epoch is None:
            raise DataError(
                f"{run_dir}: not a finished run: no {MANIFEST} or metrics.json, and no checkpoint (training "
                "stopped before its first epoch, or this folder is not a run directory)"
            )
        raise DataError(
            f"{run_dir}: the run did not finish (its last checkpoint is epoch {epoch}; no {MANIFEST} or "
            f"metrics.json): rerun the same `ranker train … --out {run_dir}` to resume it"
        )
    missing = [n for n in needs if not (run_dir / n).is_file()]
    if missing:
        raise DataError(f"{run_dir / missing[0]}: missing; the run directory is incomplete (and has no {MANIFEST})")
    key = os.path.abspath(run_dir)
    if key not in _WARNED:
        _WARNED.add(key)
        warn(
            f"{run_dir}: no {MANIFEST} (a run written before ranker sealed its runs, or the manifest was "
            "deleted): its files are loaded unverified; retrain it to seal it"
        )


def _last_epoch(path: Path) -> int | None:
    try:
        epoch = json.loads(path.read_text()).get("epoch")
    except (OSError, ValueError, AttributeError):
        return None
    return epoch if isinstance(epoch, int) else None
