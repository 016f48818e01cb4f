"""The key-value store: Redis in production, an in-process Redis-compatible store otherwise.

Everything that must be shared between workers (conversation state, locks, the WeChat push
claims) lives here, namespaced under ``linli:`` and with an expiry.
"""

from __future__ import annotations

import fakeredis
from redis.asyncio import BlockingConnectionPool, Redis

from bot.config import RedisConfig

PREFIX = "linli:"
# redis-py's default pool raises MaxConnectionsError past its limit; a blocking pool makes a burst
# wait for a free connection instead of turning into HTTP 500s and WeChat retries.
MAX_CONNECTIONS = 64
POOL_TIMEOUT_S = 10


def open_store(cfg: RedisConfig) -> Redis:
    """A redis.asyncio client; with an empty URL an in-process store (fakeredis, with Lua)."""
    if cfg.url:
        pool = BlockingConnectionPool.from_url(cfg.url, max_connections=MAX_CONNECTIONS, timeout=POOL_TIMEOUT_S)
        return Redis(connection_pool=pool)
    return fakeredis.FakeAsyncRedis(connection_pool_class=BlockingConnectionPool,
                                    max_connections=MAX_CONNECTIONS, timeout=POOL_TIMEOUT_S)


def key(*parts: str) -> str:
    return PREFIX + ":".join(parts)
