"""The outbox and its sender, against the fake WeChat API over real HTTP."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from datetime import datetime, timedelta

import aiohttp
import pytest

from bot import wechat_rules as rules
from bot.clock import FrozenClock
from bot.config import Config, OutboxConfig
from bot.outbox import Sender, split_text
from bot.store import open_store
from bot.testing import FakeWeChat
from bot.wxclient import WeChatClient
from models import outbox
from models.outbox import OutboxMessage, Priority, State
from models.places import Community, SubDistrict
from models.residents import Resident, WechatAccount, get_or_create_account
from tests.test_api import until

CUSTOM = "/cgi-bin/message/custom/send"


@pytest.fixture
async def fake(clock: FrozenClock) -> AsyncIterator[FakeWeChat]:
    async with FakeWeChat(clock, appid=f"wx-{uuid.uuid4().hex[:12]}", secret="s", templates=["TPL"]) as fake:
        yield fake


@contextlib.asynccontextmanager
async def sender_for(db: Config, fake: FakeWeChat, clock: FrozenClock, cfg: OutboxConfig) -> AsyncIterator[Sender]:
    """A sender talking to the fake, with its own store and HTTP session."""
    store = open_store(db.redis)
    try:
        async with aiohttp.ClientSession() as session:
            wechat = db.replace(wechat={"appid": fake.appid, "secret": fake.secret}).wechat
            yield Sender(WeChatClient(session, store, wechat, base_url=fake.url), clock, cfg)
    finally:
        await store.aclose()


@pytest.fixture
async def sender(db: Config, fake: FakeWeChat, clock: FrozenClock) -> AsyncIterator[Sender]:
    async with sender_for(db, fake, clock, OutboxConfig(concurrency=1, max_attempts=4)) as sender:
        yield sender


async def text(openid: str, content: str, now: datetime, *, key: str | None = None,
               priority: int = Priority.NORMAL) -> OutboxMessage:
    return await outbox.enqueue(openid=openid, kind="text", payload={"content": content},
                                idempotency_key=key or uuid.uuid4().hex, now=now, priority=priority)


async def test_enqueue_is_idempotent(db: Config, clock: FrozenClock) -> None:
    first = await text("o1", "你好", clock.now(), key="k1")
    again = await text("o1", "你好", clock.now(), key="k1")
    assert first.id == again.id
    assert await OutboxMessage.filter(idempotency_key="k1").count() == 1


async def test_sender_delivers_and_marks_sent(sender: Sender, fake: FakeWeChat, clock: FrozenClock) -> None:
    fake.interact("o1")
    await text("o1", "第一条", clock.now())
    await text("o1", "第二条", clock.now())
    assert await sender.drain_once() == 2
    assert fake.texts("o1") == ["第一条", "第二条"]
    rows = await OutboxMessage.all()
    assert {r.state for r in rows} == {State.SENT} and {r.attempts for r in rows} == {1}
    assert await sender.drain_once() == 0  # nothing is sent twice


async def test_replies_go_first(sender: Sender, fake: FakeWeChat, clock: FrozenClock) -> None:
    fake.interact("o1")
    await text("o1", "通知", clock.now(), priority=Priority.BULK)
    await text("o1", "进度", clock.now(), priority=Priority.NORMAL)
    await text("o1", "回复", clock.now(), priority=Priority.REPLY)
    await sender.drain_once()
    assert fake.texts("o1") == ["回复", "进度", "通知"]


async def test_busy_is_retried_with_backoff(sender: Sender, fake: FakeWeChat, clock: FrozenClock) -> None:
    fake.interact("o1")
    fake.fail(CUSTOM, -1)
    row = await text("o1", "稍后", clock.now())
    await sender.drain_once()
    row = await OutboxMessage.get(id=row.id)
    assert (row.state, row.attempts, row.error_code) == (State.PENDING, 1, -1)
    assert row.next_attempt_at > clock.now()
    assert await sender.drain_once() == 0  # not due yet
    clock.advance(timedelta(seconds=3))
    assert await sender.drain_once() == 1
    assert fake.texts("o1") == ["稍后"]
    assert (await OutboxMessage.get(id=row.id)).state == State.SENT


async def test_api_quota_waits_an_hour(sender: Sender, fake: FakeWeChat, clock: FrozenClock) -> None:
    fake.interact("o1")
    fake.fail(CUSTOM, rules.ERR_API_QUOTA)
    row = await text("o1", "配额", clock.now())
    await sender.drain_once()
    row = await OutboxMessage.get(id=row.id)
    assert row.state == State.PENDING and row.next_attempt_at - clock.now() >= timedelta(minutes=59)


async def test_gives_up_after_max_attempts(sender: Sender, fake: FakeWeChat, clock: FrozenClock) -> None:
    fake.interact("o1")
    fake.fail(CUSTOM, -1, times=10)
    row = await text("o1", "放弃", clock.now())
    for _ in range(6):
        await sender.drain_once()
        clock.advance(timedelta(minutes=11))
    row = await OutboxMessage.get(id=row.id)
    assert row.state == State.FAILED and row.attempts == 4 and "gave up" in row.error_message
    assert fake.texts("o1") == []


async def test_not_following_marks_the_resident_unsubscribed(
    sender: Sender, fake: FakeWeChat, clock: FrozenClock
) -> None:
    await get_or_create_account("o-gone", "oa", clock.now())
    fake.interact("o-gone")
    fake.unfollow("o-gone")
    row = await text("o-gone", "还在吗", clock.now())
    await sender.drain_once()
    row = await OutboxMessage.get(id=row.id)
    assert (row.state, row.error_code) == (State.FAILED, rules.ERR_NOT_SUBSCRIBED)
    assert (await WechatAccount.get(openid="o-gone")).subscribed is False


async def test_closed_window_is_recorded_not_retried(sender: Sender, fake: FakeWeChat, clock: FrozenClock) -> None:
    row = await text("o-quiet", "没有互动过", clock.now())  # the resident never wrote to us
    await sender.drain_once()
    clock.advance(timedelta(hours=2))
    assert await sender.drain_once() == 0
    row = await OutboxMessage.get(id=row.id)
    assert (row.state, row.error_code, row.attempts) == (State.FAILED, rules.ERR_OUT_OF_TIME, 1)


async def test_allowance_exhaustion(sender: Sender, fake: FakeWeChat, clock: FrozenClock) -> None:
    fake.interact("o1")  # one message from the resident: 5 customer-service messages allowed
    for i in range(rules.CS_AFTER_MESSAGE.messages + 1):
        await text("o1", f"第{i + 1}条", clock.now())
    await sender.drain_once()
    await sender.drain_once()
    rows = await OutboxMessage.all().order_by("id")
    assert [r.state for r in rows].count(State.SENT) == rules.CS_AFTER_MESSAGE.messages
    assert rows[-1].state == State.FAILED and rows[-1].error_code == rules.ERR_OUT_OF_COUNT
    assert len(fake.texts("o1")) == rules.CS_AFTER_MESSAGE.messages


async def test_token_error_is_refreshed_once(sender: Sender, fake: FakeWeChat, clock: FrozenClock) -> None:
    fake.interact("o1")
    await text("o1", "先取令牌", clock.now())
    await sender.drain_once()
    issued = fake.tokens_issued
    fake.fail(CUSTOM, rules.ERR_TOKEN_EXPIRED)
    row = await text("o1", "令牌过期", clock.now())
    await sender.drain_once()
    assert (await OutboxMessage.get(id=row.id)).state == State.SENT
    assert fake.tokens_issued == issued + 1


async def test_template_and_unknown_template(sender: Sender, fake: FakeWeChat, clock: FrozenClock) -> None:
    ok = await outbox.enqueue(openid="o1", kind="template", idempotency_key="t1", now=clock.now(),
                              payload={"template_id": "TPL", "data": {"first": {"value": "进度"}}})
    bad = await outbox.enqueue(openid="o1", kind="template", idempotency_key="t2", now=clock.now(),
                               payload={"template_id": "NOPE", "data": {"first": {"value": "进度"}}})
    await sender.drain_once()
    assert (await OutboxMessage.get(id=ok.id)).state == State.SENT
    failed = await OutboxMessage.get(id=bad.id)
    assert (failed.state, failed.error_code) == (State.FAILED, rules.ERR_INVALID_TEMPLATE)
    assert [m.template_id for m in fake.sent(kind="template")] == ["TPL"]


async def test_a_dead_senders_messages_come_back_after_the_lease(db: Config, clock: FrozenClock) -> None:
    await text("o1", "在途", clock.now())
    lease = timedelta(seconds=60)
    taken = await outbox.claim_due(clock.now(), limit=10, lease=lease)
    assert len(taken) == 1
    assert await outbox.claim_due(clock.now(), limit=10, lease=lease) == []  # a live sender owns it
    clock.advance(lease + timedelta(seconds=1))  # ...until its lease runs out
    again = await outbox.claim_due(clock.now(), limit=10, lease=lease)
    assert [m.id for m in again] == [taken[0].id]


@pytest.mark.parametrize("size", [10, 1999, 2000, 2001, 4500, 9000])
def test_split_text_respects_the_byte_limit(size: int) -> None:
    text = ("社区通知第一段。" * 200 + "\n") * 5
    text = text[:size]
    parts = split_text(text, rules.CUSTOM_TEXT_MAX_BYTES)
    assert all(len(p.encode()) <= rules.CUSTOM_TEXT_MAX_BYTES for p in parts)
    assert "".join(p.replace("\n", "") for p in parts) == text.replace("\n", "").rstrip()


async def test_a_push_longer_than_one_wechat_text_goes_in_parts_in_order_once(db: Config, clock: FrozenClock) -> None:
    from models.push import TEXT_MAX_BYTES, push_text

    assert TEXT_MAX_BYTES == rules.CUSTOM_TEXT_MAX_BYTES
    community = await Community.create(name="米家社区", sub_district=await SubDistrict.create(name="街道"))
    person = await Resident.create(name="陈食堂", community=community, created_at=clock.now())
    await WechatAccount.create(openid="o-kitchen", channel="oa", resident=person, created_at=clock.now())
    text = "\n".join(f"{n}. 王秀兰（1号楼2单元301室，堂食）软食，花生过敏" for n in range(1, 121))
    for _ in range(2):  # a retried push writes nothing more
        assert await push_text([person.id], text, "canteen:count:7", clock.now()) == 1
    rows = await OutboxMessage.filter(openid="o-kitchen").order_by("id")
    assert len(text.encode()) == 8411 and len(rows) == 5  # cut at line breaks, never inside one
    assert all(len(str(r.payload["content"]).encode()) <= TEXT_MAX_BYTES for r in rows)
    assert "\n".join(str(r.payload["content"]) for r in rows) == text


async def test_a_reply_beyond_the_allowance_says_it_was_cut(db: Config, clock: FrozenClock) -> None:
    from bot.outbox import send_reply

    huge = "很长的内容。" * 3000  # about 54 KB: far more than five messages
    written = await send_reply("o-huge", huge, push_id="p1", clock=clock, sender=None)
    rows = await OutboxMessage.filter(openid="o-huge").order_by("id")
    assert written == len(rows) == rules.CS_AFTER_MESSAGE.messages
    assert all(len(r.payload["content"].encode()) <= rules.CUSTOM_TEXT_MAX_BYTES for r in rows)
    assert rows[-1].payload["content"].endswith("请联系社区工作人员）")


async def test_a_sent_message_marks_its_prompt_subject_delivered(
    sender: Sender, fake: FakeWeChat, clock: FrozenClock
) -> None:
    from models.conversation import PendingPrompt

    now = clock.now()

    async def prompt(openid: str, subject: str, delivered_at: datetime | None = None) -> PendingPrompt:
        return await PendingPrompt.create(openid=openid, flow="notice", step="answer", question={"text": "?"},
                                          subject=subject, created_at=now, expires_at=now + timedelta(days=3),
                                          delivered_at=delivered_at)

    earlier = now - timedelta(hours=1)
    mine = await prompt("o-seen", "notice:7")
    already = await prompt("o-seen", "notice:7", delivered_at=earlier)
    other_subject = await prompt("o-seen", "notice:8")
    quiet = await prompt("o-quiet", "notice:7")  # no customer-service window: the send fails
    not_sent = await prompt("o-other", "notice:7")  # nothing is sent to o-other
    fake.interact("o-seen")
    for openid in ("o-seen", "o-quiet"):
        await outbox.enqueue(openid=openid, kind="text", idempotency_key=f"notice:7:{openid}", now=now,
                             payload={"content": "停水通知", "prompt_subject": "notice:7"}, priority=Priority.BULK)
    await text("o-seen", "无关", now)  # no prompt_subject: touches no prompt
    clock.advance(timedelta(seconds=5))
    assert await sender.drain_once() == 3
    assert fake.texts("o-seen") == ["无关", "停水通知"]  # normal before bulk
    got = {p.id: p.delivered_at for p in await PendingPrompt.all()}
    assert got[mine.id] == clock.now()
    assert got[already.id] == earlier  # the first delivery counts
    assert got[other_subject.id] is None and got[quiet.id] is None and got[not_sent.id] is None


async def _count(state: str, n: int) -> bool:
    return await OutboxMessage.filter(state=state).count() == n


async def test_running_sender_keeps_each_residents_order_and_marks_everything(
    db: Config, fake: FakeWeChat, clock: FrozenClock
) -> None:
    import asyncio

    fake.set_latency(CUSTOM, 0.005)
    openids = [f"o-run-{i}" for i in range(9)]
    for openid in openids:
        fake.interact(openid, kind="message")
    cfg = OutboxConfig(concurrency=3, rate_per_second=24, poll_ms=20)  # a window of 12: several claims
    async with sender_for(db, fake, clock, cfg) as sender:
        # more than one claim's worth (concurrency × 4), several parts per resident
        for part in range(4):  # with the reply below, the 5 messages one interaction allows
            for openid in openids:
                await text(openid, f"{openid}:{part}", clock.now())
        stop = asyncio.Event()
        running = asyncio.create_task(sender.run(stop))
        await until(lambda: _count(State.SENT, 4 * len(openids)))
        await text(openids[0], "回复", clock.now(), priority=Priority.REPLY)
        sender.notify()
        await until(lambda: _count(State.SENT, 4 * len(openids) + 1))
        stop.set()
        sender.notify()
        await asyncio.wait_for(running, timeout=10)
    for openid in openids:
        expected = [f"{openid}:{part}" for part in range(4)] + (["回复"] if openid == openids[0] else [])
        assert fake.texts(openid) == expected
    rows = await OutboxMessage.all()
    assert {r.state for r in rows} == {State.SENT} and {r.attempts for r in rows} == {1}


async def test_a_stopping_sender_finishes_what_is_in_flight_and_gives_back_the_rest(
    db: Config, fake: FakeWeChat, clock: FrozenClock
) -> None:
    import asyncio

    fake.set_latency(CUSTOM, 0.3)
    openids = [f"o-stop-{i}" for i in range(10)]
    for openid in openids:
        fake.interact(openid, kind="message")
        await text(openid, "停止", clock.now())
    async with sender_for(db, fake, clock, OutboxConfig(concurrency=2, rate_per_second=100, poll_ms=20)) as sender:
        stop = asyncio.Event()
        running = asyncio.create_task(sender.run(stop))
        await until(lambda: _count(State.SENDING, len(openids)))  # all ten claimed, the first two in flight
        await asyncio.sleep(0.1)
        stop.set()
        sender.notify()
        await asyncio.wait_for(running, timeout=10)
    rows = await OutboxMessage.all()
    sent = [r for r in rows if r.state == State.SENT]
    assert len(sent) == len(fake.sent()) == 2  # the two in flight, marked before run() returned
    rest = [r for r in rows if r.state != State.SENT]
    assert {(r.state, r.lease_until, r.attempts) for r in rest} == {(State.PENDING, None, 0)}
