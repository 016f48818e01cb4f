"""Two service processes sharing Redis + PostgreSQL: a retry that reaches the other worker."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bot.clock import FrozenClock
from bot.config import Config
from bot.db import close_db, init_db
from models.residents import WechatAccount
from tests.conftest import requires_servers
from tests.wechat import AES_KEY, APPID, TOKEN, WeChatPusher, text_xml

pytestmark = requires_servers


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _Session:
    """The little of aiohttp's TestClient that WeChatPusher uses, against a real port."""

    def __init__(self, session: aiohttp.ClientSession, base: str) -> None:
        self.session, self.base = session, base

    async def post(self, path: str, params: dict[str, str], data: bytes) -> Any:
        resp = await self.session.post(self.base + path, params=params, data=data)
        await resp.read()
        return resp


@pytest.fixture
def workers(config: Config, tmp_path: Path) -> Iterator[list[str]]:
    env = {**os.environ, "LINLI_WECHAT_TOKEN": TOKEN, "LINLI_WECHAT_APPID": APPID,
           "LINLI_WECHAT_ENCODING_AES_KEY": AES_KEY, "LINLI_DATABASE_URL": config.database.url,
           "LINLI_REDIS_URL": config.redis.url}
    env.pop("LINLI_CONFIG", None)
    ports = [_free_port(), _free_port()]
    procs = [
        subprocess.Popen([sys.executable, "-m", "bot.cli", "serve", "--port", str(p)], env=env, cwd=tmp_path,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for p in ports
    ]
    try:
        deadline = time.monotonic() + 30
        for port in ports:
            while True:
                try:
                    with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                        break
                except OSError:
                    if time.monotonic() > deadline:
                        raise RuntimeError("linli serve did not start") from None
                    time.sleep(0.1)
        yield [f"http://127.0.0.1:{p}" for p in ports]
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(timeout=10)


async def test_retry_on_another_worker_has_one_effect_and_the_same_reply(
    workers: list[str], config: Config
) -> None:
    clock = FrozenClock(datetime.now(UTC))
    async with aiohttp.ClientSession() as session:
        a = WeChatPusher(_Session(session, workers[0]), clock)
        b = WeChatPusher(_Session(session, workers[1]), clock)
        xml = text_xml("o-two-workers", "绑定", msg_id=4242, create_time=a.now())
        results = await asyncio.gather(a.push(xml), b.push(xml), a.push(xml), b.push(xml, mode="aes"))
        assert {r.status for r in results} == {200}
        assert len({r.text for r in results}) == 1 and "同意" in results[0].text
        # one effect: the consent answer is taken by whichever worker gets it
        assert "姓名" in await b.say("o-two-workers", "是")
        assert "手机号" in await a.say("o-two-workers", "王小明")
    await init_db(config.database)
    try:
        assert await WechatAccount.filter(openid="o-two-workers").count() == 1
    finally:
        await close_db()


def test_serve_with_two_workers_answers_health_checks(config: Config, tmp_path: Path) -> None:
    """`linli serve --workers 2` on Redis + PostgreSQL: both processes start and serve."""
    import json
    import urllib.request

    port = _free_port()
    env = {**os.environ, "LINLI_DATABASE_URL": config.database.url, "LINLI_REDIS_URL": config.redis.url,
           # several workers need real credentials; nothing is sent in this test
           "LINLI_WECHAT_APPID": APPID, "LINLI_WECHAT_SECRET": "secret", "LINLI_WECHAT_API_BASE_URL": "http://127.0.0.1:9"}
    env.pop("LINLI_CONFIG", None)
    proc = subprocess.Popen([sys.executable, "-m", "bot.cli", "serve", "--port", str(port), "--workers", "2"],
                            env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        statuses: list[dict[str, str]] = []
        while len(statuses) < 10:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as resp:
                    statuses.append(json.loads(resp.read()))
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        assert all(s == {"database": "ok", "store": "ok"} for s in statuses)
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=15)
    assert b"2 worker(s)" in out
