"""The one application factory for production, the CLI and the tests."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

from aiohttp import web
from redis.asyncio import Redis
from tortoise import connections

from bot.clock import Clock
from bot.config import Config
from bot.db import close_db, init_db
from bot.engine import Engine
from bot.gateway import Gateway
from bot.store import open_store
from handlers import ROUTERS, WELCOME

log = logging.getLogger(__name__)

CONFIG = web.AppKey("config", Config)
CLOCK = web.AppKey("clock", Clock)
STORE = web.AppKey("store", Redis)
ENGINE = web.AppKey("engine", Engine)
GATEWAY = web.AppKey("gateway", Gateway)


def build_engine(config: Config, store: Redis, clock: Clock) -> Engine:
    return Engine(ROUTERS, store, clock, config, welcome=WELCOME)


async def _database(app: web.Application) -> AsyncIterator[None]:
    await init_db(app[CONFIG].database)
    yield
    await close_db()


async def _store(app: web.Application) -> AsyncIterator[None]:
    app[STORE] = open_store(app[CONFIG].redis)
    app[ENGINE] = build_engine(app[CONFIG], app[STORE], app[CLOCK])
    app[GATEWAY] = Gateway(app[CONFIG].wechat, app[ENGINE], app[STORE], app[CLOCK])
    yield
    await app[STORE].aclose()


async def healthz(request: web.Request) -> web.Response:
    """Database and store reachable → 200, else 503 naming what failed."""
    status = {}
    try:
        await connections.get("default").execute_query("SELECT 1")
        status["database"] = "ok"
    except Exception as exc:  # any failure means unhealthy
        status["database"] = f"error: {type(exc).__name__}"
    try:
        await request.app[STORE].ping()
        status["store"] = "ok"
    except Exception as exc:
        status["store"] = f"error: {type(exc).__name__}"
    ok = all(v == "ok" for v in status.values())
    return web.json_response(status, status=200 if ok else 503)


def create_app(config: Config, *, clock: Clock | None = None) -> web.Application:
    app = web.Application(client_max_size=1024 * 1024)
    app[CONFIG] = config
    app[CLOCK] = clock or Clock()
    app.cleanup_ctx.append(_database)
    app.cleanup_ctx.append(_store)
    app.router.add_get("/healthz", healthz)

    if config.wechat.token:
        async def wechat_get(request: web.Request) -> web.Response:
            return await request.app[GATEWAY].verify(request)

        async def wechat_post(request: web.Request) -> web.Response:
            return await request.app[GATEWAY].receive(request)

        app.router.add_get(config.server.wechat_path, wechat_get)
        app.router.add_post(config.server.wechat_path, wechat_post)
    else:
        log.warning("wechat.token is empty: the WeChat gateway at %s is off",
                    config.server.wechat_path)
    return app
