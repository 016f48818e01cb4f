"""The long-lived parts of a running Linli, built once for `serve` and for `chat` alike."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
from redis.asyncio import Redis

from bot.clock import Clock
from bot.config import Config
from bot.engine import Engine, Flow
from bot.metrics import Metrics
from bot.outbox import Sender
from bot.store import open_store
from bot.wxclient import WeChatClient
from handlers import ROUTERS, WELCOME

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


def uses_fake_wechat(config: Config) -> bool:
    return not (config.wechat.appid and config.wechat.secret)


@contextlib.asynccontextmanager
async def open_services(
    config: Config, clock: Clock, *, on_send: Callable[[Any], None] | None = None, run_sender: bool = True,
    flows: list[Flow] | None = None, only_openid: str | None = None,
) -> AsyncIterator[Services]:
    """Store, WeChat client (or the built-in fake), outbox sender and engine; closed on exit.

    The database must already be initialised (bot.db.init_db).
    """
    store = open_store(config.redis)
    session = aiohttp.ClientSession()
    fake = None
    base_url = config.wechat.api_base_url
    stop = asyncio.Event()
    task: asyncio.Task[None] | None = None
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
        sender = Sender(client, clock, config.outbox, metrics, only_openid=only_openid)
        engine = Engine(flows or ROUTERS, store, clock, config, welcome=WELCOME, sender=sender)
        if run_sender:
            task = asyncio.create_task(sender.run(stop), name="outbox-sender")
        yield Services(config, clock, store, engine, client, sender, metrics, fake)
    finally:
        stop.set()
        if task is not None:
            # Let a batch in flight finish, so its rows are marked and not sent again on restart.
            sender.notify()
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await asyncio.wait_for(task, timeout=15)
        await session.close()
        if fake is not None:
            await fake.stop()
        await store.aclose()
