"""Progress that reads well in a terminal and in a log file.

Where the progress stream (stderr by default) is a terminal, an epoch shows tqdm's live bar.
Anywhere else (a file, a pipe, a CI log) a bar's carriage returns would leave garbage, so
:class:`StepProgress` writes plain lines instead::

    epoch 3: step 1200/5000 (24%) | loss 0.4321 | 12,345 samples/s | 0:42 elapsed, ETA 2:13

A line is written when :data:`MAX_SILENCE_S` (30 s) have passed since the last one, or at each
tenth of the epoch's steps if :data:`MIN_GAP_S` (5 s) have passed, whichever comes first: an
epoch shorter than 5 s writes no step line (its one epoch line follows), a long one never
leaves 30 s of silence. Phases that are not training steps (reading data, evaluation over
every user, preparing a dataset) write a start line, and an end line with their seconds when
they took 5 s or more, through :func:`phase`.

>>> import io
>>> out = io.StringIO()
>>> with phase("reading data", stream=out):
...     pass
>>> out.getvalue()
'reading data …\\n'
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable, Iterator
from typing import IO, Any

from tqdm import tqdm

MAX_SILENCE_S = 30.0
MIN_GAP_S = 5.0
TENTHS = 10  # a line at each tenth of the epoch (at most every MIN_GAP_S)


def is_terminal(stream: IO[str]) -> bool:
    """Whether `stream` is an interactive terminal (a live bar is fine there)."""
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty()) if callable(isatty) else False
    except ValueError:  # a closed stream
        return False


def clock_text(seconds: float) -> str:
    """``H:MM:SS`` or ``M:SS``.

    >>> clock_text(42.4), clock_text(133), clock_text(3725)
    ('0:42', '2:13', '1:02:05')
    """
    s = int(max(seconds, 0.0) + 0.5)
    h, rest = divmod(s, 3600)
    m, sec = divmod(rest, 60)
    return f"{h}:{m:02d}:{sec:02d}" if h else f"{m}:{sec:02d}"


class StepProgress:
    """The progress of one epoch's steps: a tqdm bar in a terminal, plain lines elsewhere.

    ``update(loss, counts)`` after each step; `loss` is a callable (reading a loss from the
    device syncs it, so it is only called when a line or the bar's postfix is written) and
    `counts` the units seen so far (``{"samples": n}``; the first key gives the throughput).
    ``clock`` is injectable for tests.
    """

    def __init__(
        self,
        desc: str,
        total: int | None,
        *,
        enabled: bool = True,
        stream: IO[str] | None = None,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.desc, self.total, self.enabled = desc, total, enabled
        self.stream = stream if stream is not None else sys.stderr
        self.clock = clock
        self.start = self.last_line = clock()
        self.step = self.tenth = 0
        self.bar: Any = None
        if enabled and is_terminal(self.stream):
            self.bar = tqdm(total=total, desc=desc, unit="batch", leave=False, mininterval=0.5, file=self.stream)

    def update(self, loss: Callable[[], float], counts: dict[str, int]) -> None:
        self.step += 1
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.update(1)
            if self.step % 20 == 1 and counts:
                unit = next(iter(counts))
                rate = counts[unit] / max(self.clock() - self.start, 1e-9)
                self.bar.set_postfix(loss=f"{loss():.4f}", per_s=f"{rate:,.0f}")
            return
        now = self.clock()
        tenth = self.step * TENTHS // self.total if self.total else 0
        at_mark, self.tenth = tenth > self.tenth, tenth  # a mark passed within MIN_GAP_S is skipped
        gap = now - self.last_line
        if gap >= MAX_SILENCE_S or (at_mark and gap >= MIN_GAP_S):
            print(self.line(loss(), counts, now), file=self.stream, flush=True)
            self.last_line = now

    def line(self, loss: float, counts: dict[str, int], now: float) -> str:
        """``desc: step s/total (p%) | loss | rate | elapsed, ETA`` (no %/ETA without a total)."""
        elapsed = now - self.start
        where = f"step {self.step:,}"
        if self.total:
            where += f"/{self.total:,} ({100 * self.step / self.total:.0f}%)"
        parts = [f"{self.desc}: {where}", f"loss {loss:.4f}"]
        if counts:
            unit = next(iter(counts))
            parts.append(f"{counts[unit] / max(elapsed, 1e-9):,.0f} {unit}/s")
        timing = f"{clock_text(elapsed)} elapsed"
        if self.total and self.step < self.total:
            timing += f", ETA {clock_text(elapsed / self.step * (self.total - self.step))}"
        parts.append(timing)
        return " | ".join(parts)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


@contextlib.contextmanager
def phase(what: str, *, enabled: bool = True, stream: IO[str] | None = None) -> Iterator[None]:
    """``what …`` before a step that is not training, and ``what: done in 12.3s`` after it when
    it took :data:`MIN_GAP_S` or more (a short phase leaves one line).

    Nothing is written when `enabled` is false; an exception ends the phase without its end line.
    """
    if not enabled:
        yield
        return
    out = stream if stream is not None else sys.stderr
    print(f"{what} …", file=out, flush=True)
    start = time.perf_counter()
    yield
    seconds = time.perf_counter() - start
    if seconds >= MIN_GAP_S:
        print(f"{what}: done in {seconds:.1f}s", file=out, flush=True)
