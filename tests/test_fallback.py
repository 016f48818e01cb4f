"""The 5-second rule: slow steps answer "success" in time and reply through the outbox; long replies split."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from aiohttp.test_utils import TestClient

from bot import wechat_rules as rules
from bot.app import SERVICES, create_app
from bot.clock import FrozenClock
from bot.config import Config
from bot.engine import Done, Flow
from handlers import ROUTERS
from models.outbox import OutboxMessage, State
from tests.wechat import WeChatPusher, text_xml

LONG = "\n".join(f"第{i}条：社区将于本周五上午在红色议事亭集中受理居民诉求，请带好相关材料。" for i in range(60))


class Gate:
    """Holds the slow step until the test lets it go."""

    def __init__(self) -> None:
        self.entered = asyncio.Event()
        self.release = asyncio.Event()


def extra_flows(gate: Gate) -> list[Flow]:
    slow = Flow("slow", "慢事", keywords=("慢",), needs_binding=False)

    @slow.entry
    async def slow_entry() -> Done:
        gate.entered.set()
        await gate.release.wait()
        return Done("让您久等了，这是答复。")

    broken = Flow("broken", "坏事", keywords=("坏",), needs_binding=False)

    @broken.entry
    async def broken_entry() -> Done:
        gate.entered.set()
        await gate.release.wait()
        raise RuntimeError("the database went away")

    long = Flow("long", "长文", keywords=("长",), needs_binding=False)

    @long.entry
    async def long_entry() -> Done:
        return Done(LONG)

    return [*ROUTERS, slow, broken, long]


@pytest.fixture
def gate() -> Gate:
    return Gate()


@pytest.fixture
async def app_client(aiohttp_client, config: Config, clock: FrozenClock, gate: Gate) -> AsyncIterator[TestClient]:  # type: ignore[no-untyped-def]
    cfg = config.replace(wechat={"reply_budget_ms": 200}, outbox={"poll_ms": 20})
    yield await aiohttp_client(create_app(cfg, clock=clock, flows=extra_flows(gate)))


async def delivered(client: TestClient, openid: str, count: int) -> list[str]:
    """The customer-service texts the fake WeChat delivered to ``openid`` (waits for the sender)."""
    fake = client.app[SERVICES].fake
    for _ in range(500):  # bounded: at most ~10 s
        if len(fake.texts(openid)) >= count:
            break
        await asyncio.sleep(0.02)
    return list(fake.texts(openid))


async def test_slow_step_answers_success_in_time_and_replies_through_the_outbox(
    app_client: TestClient, clock: FrozenClock, gate: Gate
) -> None:
    wechat = WeChatPusher(app_client, clock)
    xml = text_xml("o-slow", "慢", msg_id=501, create_time=wechat.now())
    pushed = await wechat.push(xml, mode="aes")
    # the step is still running, and WeChat already has its answer
    assert gate.entered.is_set() and not gate.release.is_set()
    assert pushed.status == 200 and pushed.body == "success"
    retry = await wechat.push(xml)  # WeChat may still retry: no second effect
    assert retry.body == "success"
    gate.release.set()
    assert await delivered(app_client, "o-slow", 1) == ["让您久等了，这是答复。"]
    row = await OutboxMessage.get(idempotency_key="reply:m:o-slow:501:0")
    for _ in range(250):  # the sender marks it right after WeChat's answer
        if row.state == State.SENT:
            break
        await asyncio.sleep(0.02)
        row = await OutboxMessage.get(id=row.id)
    assert row.state == State.SENT and row.priority == 0
    await asyncio.sleep(0.1)
    assert app_client.app[SERVICES].fake.texts("o-slow") == ["让您久等了，这是答复。"]  # once
    metrics = await (await app_client.get("/metrics")).text()
    assert "linli_fallback_replies_total 1.0" in metrics


async def test_slow_step_that_fails_sends_an_apology(app_client: TestClient, clock: FrozenClock, gate: Gate) -> None:
    wechat = WeChatPusher(app_client, clock)
    pushed = await wechat.push(text_xml("o-broken", "坏", create_time=wechat.now()))
    assert pushed.body == "success"
    gate.release.set()
    [apology] = await delivered(app_client, "o-broken", 1)
    assert "没有处理成功" in apology


async def test_long_reply_is_split_within_the_allowance(app_client: TestClient, clock: FrozenClock) -> None:
    assert len(LONG.encode()) > 2 * rules.PASSIVE_REPLY_MAX_BYTES
    wechat = WeChatPusher(app_client, clock)
    pushed = await wechat.push(text_xml("o-long", "长", msg_id=777, create_time=wechat.now()), mode="aes")
    assert pushed.status == 200
    assert 0 < len(pushed.text.encode()) <= rules.PASSIVE_REPLY_MAX_BYTES
    rest_count = await OutboxMessage.filter(openid="o-long").count()
    assert 1 <= rest_count < rules.CS_AFTER_MESSAGE.messages
    rest = await delivered(app_client, "o-long", rest_count)
    assert all(len(part.encode()) <= rules.CUSTOM_TEXT_MAX_BYTES for part in rest)
    assert (pushed.text + "".join(rest)).replace("\n", "") == LONG.replace("\n", "")
    again = await wechat.push(text_xml("o-long", "长", msg_id=777, create_time=wechat.now()))
    assert again.text == pushed.text  # a retry repeats the first part and writes nothing new
    assert await OutboxMessage.filter(openid="o-long").count() == rest_count


async def test_metrics_count_pushes_and_replies(app_client: TestClient, clock: FrozenClock) -> None:
    wechat = WeChatPusher(app_client, clock)
    await wechat.say("o-m", "你好")
    xml = text_xml("o-m", "菜单", msg_id=9001, create_time=wechat.now())
    await wechat.push(xml)
    await wechat.push(xml)
    await wechat.event("o-m", "CLICK", "MENU")
    bad = await app_client.post("/wechat", params={"signature": "x", "timestamp": "1", "nonce": "n"}, data=b"<xml/>")
    assert bad.status == 403
    resp = await app_client.get("/metrics")
    assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/plain")
    body = await resp.text()
    for line in ('linli_pushes_total{type="text"} 3.0', 'linli_pushes_total{type="event:click"} 1.0',
                 "linli_duplicate_pushes_total 1.0", 'linli_replies_total{mode="passive"} 4.0',
                 'linli_rejected_pushes_total{status="403"} 1.0', 'linli_outbox_backlog{priority="0"} 0.0',
                 "linli_step_seconds_count 3.0"):
        assert line in body, line
