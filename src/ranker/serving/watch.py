"""``ranker serve BUNDLE --watch``: swap to a new bundle when one appears at the served path.

A background thread looks at ``BUNDLE/manifest.json`` every ``--watch-interval`` seconds: its
inode, mtime and size first (one ``stat``), and when those changed, the sha256 of its bytes.
A manifest whose sha256 differs from the served bundle's is a new bundle: it is loaded and
verified completely by the same call as ``POST /reload`` (:meth:`ranker.serving.app.State.reload`:
every file's sha256, both stages loaded, the item ids checked), off the request path, and only
then swapped in by replacing one reference; requests in flight finish on the bundle they
started with. A bundle that fails is refused with one log line and the old one keeps
serving; the same manifest is not tried again (a changed manifest is; ``POST /reload``
retries at once).

The bundle must appear **complete and at once**. ``ranker bundle`` writes its output
atomically (a sibling temp directory renamed), so the deploy is::

    ranker bundle --retrieval RUN --ranker RUN --out bundles/v2
    ln -s v2 bundles/current.new && mv -T bundles/current.new bundles/current   # atomic rename(2)

with ``ranker serve bundles/current --watch``. A plain ``ln -sfn v2 bundles/current`` works
too: it removes then recreates the link, and a poll that falls in between finds no manifest
and looks again at the next tick. ``ranker bundle --out bundles/current --force`` (the old
directory removed, the new one renamed in its place) likewise. Never copy files into the served
directory one by one: a poll may see a manifest whose files are not all there yet (refused,
and not retried until the manifest changes again).

With ``--workers N`` every worker runs its own watch and swaps its own bundle (``POST /reload``
reaches only the worker that answers it).
"""

from __future__ import annotations

import hashlib
import logging
import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ranker.serving.app import State

log = logging.getLogger("ranker.serve")


class BundleWatch:
    """Polls the served bundle's manifest; a new one is swapped in through ``state.reload``."""

    def __init__(self, state: State, interval: float) -> None:
        if not interval > 0:
            raise ValueError(f"--watch-interval must be > 0 seconds, got {interval}")
        self.state, self.interval = state, float(interval)
        self._seen: tuple[int, int, int, int] | None = None  # (device, inode, mtime ns, size) last hashed
        self._refused: str | None = None  # sha256 of the last manifest refused
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def check(self) -> str | None:
        """One poll: ``"reloaded"``, ``"refused"`` or None (nothing new to load)."""
        engine = self.state.engine
        path = engine.bundle.path
        manifest = path / "manifest.json"
        try:
            st = manifest.stat()
            stamp = (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)
            if stamp == self._seen:
                return None
            digest = hashlib.sha256(manifest.read_bytes()).hexdigest()
        except OSError:  # absent for a moment (a link being replaced): look again next tick
            return None
        self._seen = stamp
        if digest in (engine.bundle.manifest_sha256, self._refused):
            return None
        try:
            new = self.state.reload(path)
        except Exception as exc:  # any failure refuses the bundle; the service goes on
            self._refused = digest
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            log.warning("watch: refused the new bundle at %s; still serving %s: %s", path, engine.version, reason)
            return "refused"
        log.info("watch: swapped %s → %s (%s)", engine.version, new.version, new.bundle.directory)
        return "reloaded"

    def start(self) -> BundleWatch:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="ranker-bundle-watch", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=60)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.check()
            except Exception:  # never let the thread die: the next tick tries again
                log.exception("watch: poll failed")
