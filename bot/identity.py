"""Learning who is who across channels: the unionid of official-account followers.

WeChat gives a unionid (one person across the account and the mini-program of the same open
platform) only on request: ``user/info`` for a follower, code-to-session for the mini-program.
After a follower writes or follows, their unionid is fetched once a day at most, in the
background, and an unbound account joins the record of the same person's bound account
(models.residents.learn_unionid).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from redis.asyncio import Redis

from bot.clock import Clock
from bot.engine import Inbound
from bot.store import key
from bot.wxclient import WeChatAPIError, WeChatClient, WeChatUnavailable
from models.residents import get_or_create_account, learn_unionid

log = logging.getLogger(__name__)

RECHECK_SECONDS = 24 * 3600


class UnionidLearner:
    def __init__(self, client: WeChatClient, store: Redis, clock: Clock) -> None:
        self.client = client
        self.store = store
        self.clock = clock
        self._tasks: set[asyncio.Task[None]] = set()

    def seen(self, inbound: Inbound) -> None:
        """Gateway hook (synchronous): look the follower up in the background."""
        if inbound.channel != "oa" or inbound.event == "unsubscribe":
            return
        task = asyncio.create_task(self.learn(inbound.openid), name="learn-unionid")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def learn(self, openid: str) -> None:
        try:
            if not await self.store.set(key("unionid-checked", openid), "1", nx=True, ex=RECHECK_SECONDS):
                return
            account = await get_or_create_account(openid, "oa", self.clock.now())
            if account.unionid:
                return
            info = await self.client.user_info(openid)
            unionid = info.get("unionid")
            if unionid:
                await learn_unionid(account_id=account.id, unionid=str(unionid), now=self.clock.now())
        except (WeChatAPIError, WeChatUnavailable) as exc:
            log.warning("could not look up the unionid of a follower: %s", exc)
        except Exception:
            log.exception("learning a follower's unionid failed")

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task
