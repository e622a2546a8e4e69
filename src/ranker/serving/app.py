"""The HTTP service (FastAPI): events in, two-stage recommendations out.

    POST /events        a batch of events; durable in the store before the reply
    POST /recommend     top-k for a user (history from the store) or a given history
    POST /score         rank the caller's candidates (the ranking stage alone)
    GET  /similar/{item} nearest items by the retriever's item vectors
    GET  /health, GET /metrics (Prometheus text), POST /reload (swap bundles), /docs (OpenAPI)

Every handler reads the served :class:`~ranker.serving.recommender.Recommender` once into a
local, so ``/reload`` (which loads and verifies the new bundle fully, then replaces one
reference) never changes a request in flight: it finishes on the bundle it started with.
``ranker serve --watch`` (:mod:`ranker.serving.watch`) swaps through the same
:meth:`State.reload` when a new bundle appears at the served path.
Errors are one line naming the field: a malformed body is a 422 (``{"detail": "k: Input
should be greater than or equal to 1"}``), an oversized one a 413, non-JSON a 422 on ``body``.
The model handlers (``/recommend``, ``/score``, ``/similar``) run on the worker's event-loop
thread itself (``async def`` handlers calling the model directly); the others (``/events``, ``/reload``, ``/health``) in
FastAPI's thread pool. Measured on the ML-1M two-stage bundle (one client, 1,000 requests, 2
torch threads, 2026-12-06, idle 2-core machine, two alternating runs): the same request took
21.0 / 22.7 ms p50 when the model ran on a dedicated thread (the server's own mean 19.7 / 20.9
ms) and 14.4 / 10.8 ms inline (14.1 / 10.5 ms): the hand-off between the loop and a model
thread, both contending for the GIL, cost more than the model. Model calls are CPU-bound and a
worker's cores run one at a time anyway, so a call blocking the loop for its ≈ 10 ms queues the
next requests as a model thread's queue did; several workers (``--workers``) serve in
parallel. An earlier design ran them in the thread pool (rotating threads: torch's per-thread
state went cold, 22 against 11 ms in-process) and then on one dedicated thread.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from starlette.types import Message, Receive, Scope, Send

from ranker.errors import ConfigError, RankerError
from ranker.serving.bundle import load_bundle
from ranker.serving.metrics import Metrics
from ranker.serving.recommender import Query, Recommender, RequestError
from ranker.serving.schemas import EventsIn, RecommendIn, ReloadIn, ScoreIn, Who
from ranker.serving.store import Event, EventStore, open_store, raw_id
from ranker.serving.watch import BundleWatch

MAX_BODY = 4 * 1024 * 1024


class State:
    """The served recommender and what swaps it."""

    def __init__(self, bundle: Path, store: EventStore) -> None:
        self.store = store
        self.engine = Recommender(load_bundle(bundle), store)
        self.metrics = Metrics()
        self.reload_lock = threading.Lock()

    def reload(self, bundle: Path) -> Recommender:
        """Load and verify `bundle` completely, then swap it in (``POST /reload`` and ``--watch``)."""
        with self.reload_lock:
            try:
                engine = Recommender(load_bundle(bundle), self.store)  # verified and loaded first
            except BaseException:
                self.metrics.add_reload_failure()
                raise
            self.engine = engine  # one reference swap: requests in flight keep the old one
            self.metrics.add_reload()
            return engine


def create_app(bundle: Path, store_url: str, *, max_body: int = MAX_BODY, watch: float | None = None) -> FastAPI:
    """The app serving `bundle` with events in `store_url`; with `watch` (seconds), a
    :class:`~ranker.serving.watch.BundleWatch` polls the bundle path while the app runs."""
    state = State(Path(bundle), open_store(store_url))

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        watcher = BundleWatch(state, watch).start() if watch else None
        try:
            yield
        finally:
            if watcher is not None:
                watcher.stop()

    app = FastAPI(
        title="ranker",
        version=state.engine.version,
        description="Two-stage recommendations (retrieval + ranking) over live events.",
        lifespan=lifespan,
    )
    app.state.ranker = state
    _errors(app)

    app.add_middleware(Measure, metrics=state.metrics)

    @app.post("/events", summary="append a batch of events (durable before the reply)")
    def post_events(body: EventsIn) -> dict[str, Any]:
        engine = state.engine
        now = time.time()
        events = [
            Event.raw(e.user, e.item, e.action, now if e.time is None else e.time, e.context) for e in body.events
        ]
        state.store.append(events)
        state.metrics.add_events(len(events))
        unknown = list(dict.fromkeys(e.item for e in events if e.item not in engine.index_of))
        return {"accepted": len(events), "unknown_items": unknown}

    @app.post("/recommend", summary="top-k items for a user or a history")
    async def post_recommend(body: RecommendIn) -> dict[str, Any]:
        engine = state.engine
        return engine.recommend(
            _query(body),
            k=body.k,
            n_candidates=body.n_candidates,
            exclude=[raw_id(i) for i in body.exclude],
            exclude_history=body.exclude_history,
            filters={c: [raw_id(v) for v in (vs if isinstance(vs, list) else [vs])] for c, vs in body.filters.items()},
        )

    @app.post("/score", summary="rank the caller's candidates (ranking stage alone)")
    async def post_score(body: ScoreIn) -> dict[str, Any]:
        engine = state.engine
        return engine.score(_query(body), [raw_id(i) for i in body.items])

    @app.get("/similar/{item}", summary="nearest items by the item vectors")
    async def get_similar(item: str, k: int = 10) -> dict[str, Any]:
        if not 1 <= k <= 1000:
            raise RequestError("k", f"must be in 1..1000, got {k}")
        engine = state.engine
        return engine.similar(raw_id(item), k)

    @app.get("/health")
    def health() -> dict[str, Any]:
        engine = state.engine
        ranker = engine.bundle.manifest["stages"].get("ranker")
        return {
            "status": "ok",
            "model_version": engine.version,
            "bundle": str(engine.bundle.path),
            "bundle_dir": str(engine.bundle.directory),
            "items": engine.num_items,
            "ranker": engine.bundle.ranking is not None,
            "ranker_kind": None if ranker is None else ranker.get("kind", "ranking"),
            "search": engine.bundle.manifest["search"],
            "store": state.store.url,
            "watch_s": watch,
            "worker": os.getpid(),
        }

    @app.get("/metrics", response_class=PlainTextResponse)
    def metrics() -> str:
        engine = state.engine
        return state.metrics.render(engine.version, str(engine.bundle.path))

    @app.post("/reload", summary="swap to another (or the same, re-read) bundle directory")
    def reload(body: ReloadIn | None = None) -> dict[str, Any]:
        old = state.engine
        path = Path(body.bundle) if body is not None and body.bundle else old.bundle.path
        try:
            new = state.reload(path)
        except RankerError as exc:
            raise RequestError("bundle", str(exc).splitlines()[0]) from None
        return {"model_version": new.version, "previous_version": old.version, "bundle": str(path)}

    return BodyLimit(app, max_body)  # type: ignore[return-value]


def _query(body: Who) -> Query:
    history = None
    if body.history is not None:
        now = body.time if body.time is not None else time.time()
        history = [
            Event.raw(body.user or "", h, None, now)
            if isinstance(h, str | int)
            else Event.raw(body.user or "", h.item, h.action, now if h.time is None else h.time)
            for h in body.history
        ]
        history.sort(key=lambda e: e.time)  # stable: equal times keep the given order
    return Query(None if body.user is None else raw_id(body.user), history, dict(body.context), body.time)


def _errors(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": one_line(exc.errors())}, status_code=422)

    @app.exception_handler(RequestError)
    async def refused(request: Request, exc: RequestError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=exc.status)


def one_line(errors: Any) -> str:
    """The first validation error as ``field.path: reason`` (``body`` for the body itself)."""
    if not errors:
        return "body: invalid request"
    e = errors[0]
    loc = [str(p) for p in e.get("loc", ()) if p not in ("body", "query", "path") and not _union_tag(p)]
    if e.get("type") == "json_invalid":
        return "body: not valid JSON"
    msg = str(e.get("msg", "invalid")).removeprefix("Value error, ")
    if msg.split(":")[0] in ("user",) and not loc:
        return msg
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{'.'.join(loc) or 'body'}: {msg}{more}"


def _union_tag(part: Any) -> bool:
    """Pydantic's name of a union member in an error location (``constrained-str``, ``int``)."""
    return isinstance(part, str) and (
        part in ("str", "int", "float", "bool", "none") or "-" in part or "[" in part or part[:1].isupper()
    )


class Measure:
    """ASGI middleware: each HTTP request's route, status and seconds into :class:`Metrics`.

    A plain ASGI wrapper rather than ``@app.middleware("http")``: Starlette's
    ``BaseHTTPMiddleware`` runs the app in a task and streams the response through memory
    channels, a cost paid on every request."""

    def __init__(self, app: Any, metrics: Metrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start, status = time.perf_counter(), 500

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:  # the router filled scope["route"] in place
            path = getattr(scope.get("route"), "path", "unmatched")
            self.metrics.observe(path, status, time.perf_counter() - start)


class BodyLimit:
    """ASGI wrapper: a request body over `limit` bytes is a 413 before the app reads it."""

    def __init__(self, app: FastAPI, limit: int) -> None:
        self.app, self.limit = app, limit
        self.state = app.state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await _too_large(send, self.limit)
            return
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.limit:
                await _too_large(send, self.limit)
                return
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


async def _too_large(send: Send, limit: int) -> None:
    body = json.dumps({"detail": f"body: larger than {limit} bytes"}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


def app_from_env() -> Any:
    """The app ``ranker serve`` starts in each uvicorn worker (settings from the environment)."""
    threads = os.environ.get("RANKER_SERVE_THREADS")
    if threads:
        import torch

        torch.set_num_threads(int(threads))
    watch = float(os.environ.get("RANKER_SERVE_WATCH") or 0) or None
    if watch and not logging.getLogger("ranker.serve").handlers:  # the watch's lines beside uvicorn's
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(levelname)s:     ranker: %(message)s"))
        logging.getLogger("ranker.serve").addHandler(handler)
        logging.getLogger("ranker.serve").setLevel(logging.INFO)
    return create_app(
        Path(os.environ["RANKER_SERVE_BUNDLE"]),
        os.environ["RANKER_SERVE_STORE"],
        max_body=int(os.environ.get("RANKER_SERVE_MAX_BODY", MAX_BODY)),
        watch=watch,
    )


def serve(
    bundle: Path,
    *,
    store: str,
    host: str = "127.0.0.1",
    port: int = 8000,
    workers: int = 1,
    threads: int | None = None,
    max_body: int = MAX_BODY,
    log_level: str = "info",
    watch: float | None = None,
) -> None:
    """Run uvicorn with `workers` processes, each loading `bundle` (verified) and `store`; with
    `watch` (seconds), each worker polls the bundle path for a new bundle (:mod:`ranker.serving.watch`)."""
    import uvicorn

    if watch is not None and not watch > 0:
        raise ConfigError(f"--watch-interval: must be > 0 seconds, got {watch}")
    load_bundle(bundle)  # refuse a bad bundle here, with its message, before any worker starts
    os.environ.update(
        {
            # absolute, but a symlink is kept: the watch and /reload re-read what it points to
            "RANKER_SERVE_BUNDLE": str(Path(bundle).absolute()),
            "RANKER_SERVE_STORE": store,
            "RANKER_SERVE_MAX_BODY": str(max_body),
            "RANKER_SERVE_WATCH": str(watch or ""),
        }
    )
    if threads:
        os.environ["RANKER_SERVE_THREADS"] = str(threads)
    uvicorn.run(
        "ranker.serving.app:app_from_env", factory=True, host=host, port=port, workers=workers, log_level=log_level
    )
