"""The shared event store: a Redis server, for several workers or machines.

Layout: per user one sorted set ``<prefix>:u:<user>`` scored by event time; a member is
``<seq>|<json>`` where ``seq`` (16 digits, from ``INCRBY <prefix>:seq``) orders events of the
same second by arrival and keeps identical events distinct. Each user's set is capped at
``cap`` events (the oldest dropped on write), so memory is bounded per user.
``history(user, limit)`` is one ``ZRANGE key -limit -1``: O(log n + limit) on a capped set.
``<prefix>:n:<user>`` counts every event the user ever had (the cap drops events, not the count):
``length(user)``, what a ranker trained on the history length reads. ``<prefix>:s:<user>`` is the
set of the user's items (every item ever appended, bounded by the catalogue, not by the cap):
``seen(user, limit)`` is one ``SMEMBERS`` (a store written before the set existed falls back to
the items of the capped sorted set).

Durability. ``append`` sends one ``MULTI``/``EXEC`` transaction per batch and returns after
Redis's reply: the events are in the server's memory, so killing the service process loses
nothing. Whether they survive a *Redis* crash is the server's setting: with
``appendonly yes`` and ``appendfsync always`` each write is fsync'd to the AOF before the
reply (acknowledged = on disk); with ``appendfsync everysec`` (Redis's default once AOF is on)
up to one second of writes can be lost on a crash; without AOF (RDB snapshots only, or
``--save ''``) everything since the last snapshot is lost when Redis dies. Run Redis with
``--appendonly yes --appendfsync always`` when the store is the record of truth.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from ranker.errors import ConfigError
from ranker.serving.store import Event

DEFAULT_CAP = 10_000


class RedisStore:
    """Events in Redis sorted sets, one per user, capped."""

    def __init__(self, url: str, *, prefix: str = "ranker", cap: int | None = None) -> None:
        try:
            import redis
        except ImportError as exc:  # pragma: no cover - only without the extra
            raise ConfigError("a redis:// store needs the redis client: pip install 'ranker[serve]'") from exc
        base, _, query = url.partition("?")
        opts = dict(p.split("=", 1) for p in query.split("&") if "=" in p)
        self.url = url
        self.prefix = opts.get("prefix", prefix)
        self.cap = int(opts.get("cap", cap or DEFAULT_CAP))
        self.client: Any = redis.Redis.from_url(base, socket_timeout=10, socket_connect_timeout=5)
        try:
            self.client.ping()
        except redis.RedisError as exc:
            raise ConfigError(f"--store {url}: cannot reach Redis ({exc})") from None

    def _key(self, user: str) -> str:
        return f"{self.prefix}:u:{user}"

    def append(self, events: Sequence[Event]) -> None:
        if not events:
            return
        last = int(self.client.incrby(f"{self.prefix}:seq", len(events)))
        pipe = self.client.pipeline(transaction=True)
        users: dict[str, None] = {}
        for n, e in enumerate(events):
            seq = last - len(events) + n + 1
            body = json.dumps([e.item, e.action, e.context or None], separators=(",", ":"))
            pipe.zadd(self._key(e.user), {f"{seq:016d}|{body}": float(e.time)})
            users[e.user] = None
            pipe.incrby(f"{self.prefix}:n:{e.user}", 1)
            pipe.sadd(f"{self.prefix}:s:{e.user}", e.item)
        for user in users:
            pipe.zremrangebyrank(self._key(user), 0, -self.cap - 1)
        pipe.incrby(f"{self.prefix}:count", len(events))
        pipe.execute()

    def history(self, user: str, limit: int) -> list[Event]:
        if limit <= 0:
            return []
        rows = self.client.zrange(self._key(user), -int(limit), -1, withscores=True)
        out = []
        for member, time in rows:
            item, action, ctx = json.loads(member.decode().split("|", 1)[1])
            out.append(Event(user, item, action, float(time), ctx or {}))
        return out

    def seen(self, user: str, limit: int) -> set[str]:
        items = self.client.smembers(f"{self.prefix}:s:{user}")
        if items:
            return {i.decode() for i in items}
        return {e.item for e in self.history(user, limit)}

    def length(self, user: str) -> int:
        counted = self.client.get(f"{self.prefix}:n:{user}")
        return int(counted) if counted is not None else int(self.client.zcard(self._key(user)))

    def count(self) -> int:
        return int(self.client.get(f"{self.prefix}:count") or 0)

    def close(self) -> None:
        self.client.close()
