"""The key-value store: Redis in production, an in-process Redis-compatible store otherwise.

Everything that must be shared between workers (conversation state, locks, the WeChat push
claims) lives here, namespaced under ``linli:`` and with an expiry.
"""

from __future__ import annotations

import fakeredis
from redis.asyncio import Redis

from bot.config import RedisConfig

PREFIX = "linli:"


def open_store(cfg: RedisConfig) -> Redis:
    """A redis.asyncio client; with an empty URL an in-process store (fakeredis, with Lua)."""
    if cfg.url:
        return Redis.from_url(cfg.url, decode_responses=False)
    return fakeredis.FakeAsyncRedis()


def key(*parts: str) -> str:
    return PREFIX + ":".join(parts)
