"""The long-lived parts of a running Linli, built once for `serve` and for `chat` alike."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
from redis.asyncio import Redis

from bot.clock import Clock, FrozenClock
from bot.config import Config
from bot.engine import Engine, Flow
from bot.media import MediaFetcher, url_session
from bot.metrics import Metrics
from bot.outbox import Sender
from bot.scheduler import Scheduler, service_scheduler
from bot.store import open_store
from bot.wxclient import WeChatClient
from handlers import ROUTERS, WELCOME
from models import cases, errand_docs, media

log = logging.getLogger(__name__)


@dataclass
class Services:
    config: Config
    clock: Clock
    store: Redis
    engine: Engine
    client: WeChatClient
    sender: Sender
    metrics: Metrics
    fake: Any = None  # the in-process fake WeChat API when no credentials are configured
    scheduler: Scheduler | None = None  # every daily job; started only in a long-running service


def uses_fake_wechat(config: Config) -> bool:
    return not (config.wechat.appid and config.wechat.secret)


@contextlib.asynccontextmanager
async def open_services(
    config: Config, clock: Clock, *, on_send: Callable[[Any], None] | None = None, run_sender: bool = True,
    flows: list[Flow] | None = None, only_openid: str | None = None, run_scheduler: bool | None = None,
) -> AsyncIterator[Services]:
    """Store, WeChat client (or the built-in fake), outbox sender and engine; closed on exit.

    The database must already be initialised (bot.db.init_db). The scheduler fires on the wall
    clock, so by default (``run_scheduler=None``) it runs where the sender runs and the clock is
    the real one; under a FrozenClock (tests) its jobs are run by hand.
    """
    store = open_store(config.redis)
    # aiohttp's default of 100 connections would cap the sender below a larger outbox.concurrency
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=max(100, 2 * config.outbox.concurrency)))
    urls = url_session()  # residents' photo URLs: public addresses only (bot/media.py)
    fetcher: MediaFetcher | None = None
    fake = None
    base_url = config.wechat.api_base_url
    stop = asyncio.Event()
    task: asyncio.Task[None] | None = None
    scheduler: Scheduler | None = None
    try:
        if uses_fake_wechat(config):
            from bot.testing import FakeWeChat

            appid, secret = config.wechat.appid or "wx-fake-appid", config.wechat.secret or "fake-secret"
            fake = FakeWeChat(clock, appid=appid, secret=secret, templates=config.wechat.templates.values())
            mp_appid = config.miniprogram.appid or "wx-fake-miniprogram"
            mp_secret = config.miniprogram.secret or "fake-miniprogram-secret"
            fake.add_app(mp_appid, mp_secret)
            miniprogram = config.replace(miniprogram={"appid": mp_appid, "secret": mp_secret}).miniprogram
            base_url = await fake.start()
            fake.on_send = on_send
            log.warning("no WeChat appid/secret configured: outbound calls go to the built-in fake "
                        "WeChat API at %s (nothing reaches real WeChat)", base_url)
            wechat = config.replace(wechat={"appid": appid, "secret": secret}).wechat
        else:
            wechat, miniprogram = config.wechat, config.miniprogram
        metrics = Metrics()
        client = WeChatClient(session, store, wechat, miniprogram, base_url=base_url)
        sender = Sender(client, clock, config.outbox, metrics, only_openid=only_openid,
                        templates=wechat.templates, tz=ZoneInfo(config.community.timezone),
                        channels=config.notices.channel_list)
        cases.configure(config)
        errand_docs.configure(config.errands)  # where document photos are kept, how long links live
        fetcher = MediaFetcher(client, urls)
        media.configure(fetcher)  # the due action that keeps case photos fetches through it
        engine = Engine(flows or ROUTERS, store, clock, config, welcome=WELCOME, sender=sender)
        if run_sender:
            task = asyncio.create_task(sender.run(stop), name="outbox-sender")
        scheduler = service_scheduler(config, clock)
        if run_scheduler is None:
            run_scheduler = run_sender and not isinstance(clock, FrozenClock)
        if run_scheduler:
            scheduler.start()
        yield Services(config, clock, store, engine, client, sender, metrics, fake, scheduler)
    finally:
        if fetcher is not None:
            media.unconfigure(fetcher)
        if scheduler is not None:
            await scheduler.stop()
        stop.set()
        if task is not None:
            # Let a batch in flight finish, so its rows are marked and not sent again on restart.
            sender.notify()
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await asyncio.wait_for(task, timeout=15)
        await session.close()
        await urls.close()
        if fake is not None:
            await fake.stop()
        await store.aclose()
