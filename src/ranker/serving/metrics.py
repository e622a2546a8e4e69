"""Prometheus text exposition (format 0.0.4) of the service's counters, without a client library.

    ranker_requests_total{path, status}        counter
    ranker_request_seconds{path}               histogram (le buckets below, _sum, _count)
    ranker_events_total                        counter of events acknowledged by POST /events
    ranker_model_info{version, bundle}         1 for the bundle being served
    ranker_reloads_total                       counter of bundle swaps (POST /reload or --watch)
    ranker_reload_failures_total               counter of bundles refused (the old one kept serving)

Each worker process keeps its own numbers (``--workers N``: scrape each, or read them as a
sample of the whole).

>>> m = Metrics()
>>> m.observe("/recommend", 200, 0.004)
>>> 'ranker_request_seconds_bucket{path="/recommend",le="0.005"} 1' in m.render("v1", "b")
True
"""

from __future__ import annotations

import bisect
import threading
from collections import defaultdict

BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    """Thread-safe request counters and latency histograms."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: dict[tuple[str, int], int] = defaultdict(int)
        self.buckets: dict[str, list[int]] = defaultdict(lambda: [0] * (len(BUCKETS) + 1))
        self.sums: dict[str, float] = defaultdict(float)
        self.events = 0
        self.reloads = 0
        self.reload_failures = 0

    def observe(self, path: str, status: int, seconds: float) -> None:
        with self._lock:
            self.requests[(path, status)] += 1
            self.buckets[path][bisect.bisect_left(BUCKETS, seconds)] += 1
            self.sums[path] += seconds

    def add_events(self, n: int) -> None:
        with self._lock:
            self.events += n

    def add_reload(self) -> None:
        with self._lock:
            self.reloads += 1

    def add_reload_failure(self) -> None:
        with self._lock:
            self.reload_failures += 1

    def render(self, version: str, bundle: str) -> str:
        with self._lock:
            lines = [
                "# HELP ranker_requests_total HTTP requests by path and status.",
                "# TYPE ranker_requests_total counter",
            ]
            lines += [
                f'ranker_requests_total{{path="{p}",status="{s}"}} {n}' for (p, s), n in sorted(self.requests.items())
            ]
            lines += [
                "# HELP ranker_request_seconds Request latency in seconds.",
                "# TYPE ranker_request_seconds histogram",
            ]
            for path, counts in sorted(self.buckets.items()):
                total = 0
                for le, c in zip((*map(str, BUCKETS), "+Inf"), counts, strict=True):
                    total += c
                    lines.append(f'ranker_request_seconds_bucket{{path="{path}",le="{le}"}} {total}')
                lines.append(f'ranker_request_seconds_sum{{path="{path}"}} {self.sums[path]:.6f}')
                lines.append(f'ranker_request_seconds_count{{path="{path}"}} {total}')
            lines += [
                "# HELP ranker_events_total Events acknowledged (durable) by POST /events.",
                "# TYPE ranker_events_total counter",
                f"ranker_events_total {self.events}",
                "# HELP ranker_reloads_total Bundle swaps (POST /reload or the --watch poll).",
                "# TYPE ranker_reloads_total counter",
                f"ranker_reloads_total {self.reloads}",
                "# HELP ranker_reload_failures_total Bundles refused by a reload (the old one kept serving).",
                "# TYPE ranker_reload_failures_total counter",
                f"ranker_reload_failures_total {self.reload_failures}",
                "# HELP ranker_model_info The bundle being served.",
                "# TYPE ranker_model_info gauge",
                f'ranker_model_info{{version="{version}",bundle="{_escape(bundle)}"}} 1',
            ]
        return "\n".join(lines) + "\n"


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
