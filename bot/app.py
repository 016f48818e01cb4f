"""The one application factory for production, the CLI and the tests."""

from __future__ import annotations

import functools
import logging
from collections.abc import AsyncIterator

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from redis.asyncio import Redis
from tortoise import connections

from bot.api import Limiter, add_api
from bot.clock import Clock
from bot.config import Config
from bot.db import close_db, init_db
from bot.docs_web import add_docs_web
from bot.engine import Engine, Flow, Inbound
from bot.gateway import Gateway
from bot.identity import UnionidLearner
from bot.services import Services, open_services
from handlers import API_ROUTERS
from models.outbox import backlog

log = logging.getLogger(__name__)

CONFIG = web.AppKey("config", Config)
CLOCK = web.AppKey("clock", Clock)
SERVICES = web.AppKey("services", Services)
STORE = web.AppKey("store", Redis)
ENGINE = web.AppKey("engine", Engine)
GATEWAY = web.AppKey("gateway", Gateway)
LIMITER = web.AppKey("limiter", Limiter)


async def _database(app: web.Application) -> AsyncIterator[None]:
    await init_db(app[CONFIG].database)
    yield
    await close_db()


async def _services(app: web.Application, flows: list[Flow] | None) -> AsyncIterator[None]:
    run_scheduler = None if app[CONFIG].server.run_scheduler else False
    async with open_services(app[CONFIG], app[CLOCK], flows=flows, run_scheduler=run_scheduler) as services:
        app[SERVICES] = services
        app[STORE] = services.store
        app[ENGINE] = services.engine
        fake = services.fake

        def interacted(inbound: Inbound) -> None:
            # Real WeChat knows when a resident wrote or clicked; the built-in fake learns it here.
            kind = "message" if inbound.kind != "event" else "event"
            if inbound.kind != "event" or inbound.event in ("subscribe", "scan", "click"):
                fake.interact(inbound.openid, kind=kind)

        learner = UnionidLearner(services.client, services.store, app[CLOCK])

        def inbound_seen(inbound: Inbound) -> None:
            if fake is not None:
                interacted(inbound)
            learner.seen(inbound)

        app[GATEWAY] = Gateway(app[CONFIG].wechat, services.engine, services.store, app[CLOCK],
                               metrics=services.metrics, on_inbound=inbound_seen)
        yield
        await app[GATEWAY].close()
        await learner.close()


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


async def metrics(request: web.Request) -> web.Response:
    """Prometheus metrics of this worker; the outbox backlog is read from the database now."""
    services = request.app[SERVICES]
    for priority, count, age in await backlog(services.clock.now()):
        services.metrics.backlog.labels(str(priority)).set(count)
        services.metrics.backlog_age.labels(str(priority)).set(age)
    body = generate_latest(services.metrics.registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def create_app(config: Config, *, clock: Clock | None = None, flows: list[Flow] | None = None) -> web.Application:
    """The service; ``flows`` replaces handlers.ROUTERS (tests add flows of their own)."""
    app = web.Application(client_max_size=1024 * 1024)
    app[CONFIG] = config
    app[CLOCK] = clock or Clock()
    app.cleanup_ctx.append(_database)

    app.cleanup_ctx.append(functools.partial(_services, flows=flows))
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    app[LIMITER] = Limiter(config)
    add_api(app, [route for router in API_ROUTERS for route in router.routes], SERVICES, LIMITER)
    add_docs_web(app, SERVICES, LIMITER)  # 红色代办: the document page of the stewards' links, the web login

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
