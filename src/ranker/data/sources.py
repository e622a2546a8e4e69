"""Find a dataset's raw files locally, or download them from their public home, verified by sha256.

Lookup order for a :class:`SourceFile` ``folder/name``:

1. ``$RANKER_DATA_DIR/folder/name`` or ``.../name.gz`` (the offline copies used by tests and CI);
2. ``$RANKER_CACHE_DIR/raw/folder/name`` (default cache root ``~/.cache/ranker``);
3. download ``url`` (a zip member when ``member`` is set), check the sha256 of the uncompressed
   bytes, and store it in the cache (atomically: temp file + rename).

A checksum mismatch is an error naming the file, the expected and the actual digest.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import tempfile
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

from ranker.errors import DataError


@dataclass(frozen=True)
class SourceFile:
    """One raw file of a dataset, as its recipe reads it (uncompressed name and digest)."""

    folder: str
    name: str
    sha256: str | None  # of the uncompressed bytes
    url: str  # "" when the file has no public home (an offline derivative)
    member: str | None = None  # path inside the zip archive at `url`
    gzipped_at_url: bool = False  # the url serves `name` gzip-compressed
    git_sha1: str | None = None  # git blob id of the content, when no sha256 is published

    @property
    def digest(self) -> str:
        """The expected checksum, as ``sha256:...`` or ``git-sha1:...``."""
        if self.sha256:
            return f"sha256:{self.sha256}"
        if self.git_sha1:
            return f"git-sha1:{self.git_sha1}"
        raise ValueError(f"{self.folder}/{self.name}: no checksum declared")


def cache_root() -> Path:
    """Root of ranker's cache: ``$RANKER_CACHE_DIR`` or ``~/.cache/ranker``."""
    return Path(os.environ.get("RANKER_CACHE_DIR", Path.home() / ".cache" / "ranker"))


def data_dirs() -> list[Path]:
    """Folders searched for raw files, in order."""
    dirs = []
    if os.environ.get("RANKER_DATA_DIR"):
        dirs.append(Path(os.environ["RANKER_DATA_DIR"]))
    dirs.append(cache_root() / "raw")
    return dirs


def read_bytes(path: Path) -> bytes:
    """The uncompressed bytes of a raw file."""
    with gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb") as f:
        return f.read()


def digest_of(payload: bytes, kind: str) -> str:
    """``kind:hex`` checksum of `payload`; kind is ``sha256`` or ``git-sha1`` (git's blob id)."""
    if kind == "sha256":
        return "sha256:" + hashlib.sha256(payload).hexdigest()
    if kind == "git-sha1":
        header = f"blob {len(payload)}\0".encode()
        return "git-sha1:" + hashlib.sha1(header + payload).hexdigest()
    raise ValueError(f"unknown checksum kind {kind!r}")


def find_local(src: SourceFile) -> Path | None:
    """The local copy of `src`, or None."""
    for root in data_dirs():
        for cand in (root / src.folder / src.name, root / src.folder / (src.name + ".gz")):
            if cand.is_file():
                return cand
    return None


def locate(src: SourceFile, *, download: bool = True, verify: bool = True) -> Path:
    """Path of the raw file `src` (maybe ``.gz``), downloading it if no local copy exists."""
    path = find_local(src)
    if path is None:
        if not download or not src.url:
            raise DataError(
                f"{src.folder}/{src.name}: not found under {', '.join(map(str, data_dirs()))}; "
                "set RANKER_DATA_DIR to a folder holding it"
                + ("" if src.url else " (this file has no public download)")
            )
        path = _download(src)
    if verify:
        digest = digest_of(read_bytes(path), src.digest.split(":")[0])
        if digest != src.digest:
            raise DataError(
                f"{path}: checksum of the content is {digest}, expected {src.digest} "
                "(corrupt or different file; delete it to download again)"
            )
    return path


def _download(src: SourceFile) -> Path:
    dest = cache_root() / "raw" / src.folder / src.name
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        with urllib.request.urlopen(src.url, timeout=60) as resp:  # noqa: S310 (fixed https urls)
            payload = resp.read()
    except OSError as exc:
        raise DataError(
            f"{src.folder}/{src.name}: not found locally and the download from {src.url} failed "
            f"({exc}); put the file under $RANKER_DATA_DIR/{src.folder}/"
        ) from exc
    if src.member is not None:
        with zipfile.ZipFile(io.BytesIO(payload)) as zf:
            payload = zf.read(src.member)
    elif src.gzipped_at_url:
        payload = gzip.decompress(payload)
    digest = digest_of(payload, src.digest.split(":")[0])
    if digest != src.digest:
        raise DataError(f"{src.url}: downloaded {src.name} has {digest}, expected {src.digest}")
    atomic_write_bytes(dest, payload)
    return dest


def atomic_write_bytes(dest: Path, payload: bytes) -> None:
    """Write `payload` to `dest` via a temp file in the same folder and an atomic rename."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
