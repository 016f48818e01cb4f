"""社区通知: announcements by urgency and quiet hours, opt-out, fan-out that never sends twice."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from bot.clock import FrozenClock
from models.jobs import sweep_due
from models.notices import DeliveryStatus, Notice, NoticeDelivery, fan_out, notice_report
from models.outbox import OutboxMessage, Priority
from models.places import Building
from models.residents import Resident, WechatAccount
from tests.wechat import WeChatPusher

pytestmark = pytest.mark.usefixtures("demo")

STAFF = "demo-staff"  # 周社工, community staff of 米家社区


async def residents_of_building_1() -> list[Resident]:
    """Three more residents of 1号楼: two on WeChat (one will opt out), one without WeChat.

    The demo already has two there: 李网格 (on WeChat) and 王秀兰 (not).
    """
    building = await Building.get(name="1号楼")
    people = []
    for i, name in enumerate(["甲居民", "乙居民", "丙居民"]):
        person = await Resident.create(name=name, mobile=f"1391111000{i}", community_id=building.community_id,  # type: ignore[attr-defined]
                                       building=building, unit="1", room=f"10{i}", created_at=datetime.now(UTC))
        people.append(person)
        if i < 2:
            await WechatAccount.create(openid=f"oa-{i}", channel="oa", resident=person, created_at=person.created_at)
    return people


async def announce(wechat: WeChatPusher, urgency: str, title: str = "明天上午停水") -> str:
    listing = await wechat.say(STAFF, "发通知")
    number = next(line.split(".")[0] for line in listing.splitlines() if line.endswith(". 1号楼"))
    await wechat.say(STAFF, number)
    await wechat.say(STAFF, "1" if urgency == "normal" else "2")
    await wechat.say(STAFF, title)
    summary = await wechat.say(STAFF, "8:00-12:00 管道检修，请提前储水。")
    assert "1号楼" in summary and "位居民" in summary
    return await wechat.say(STAFF, "是")


async def test_a_normal_announcement_reaches_the_building_and_skips_who_opted_out(wechat: WeChatPusher) -> None:
    people = await residents_of_building_1()
    assert "已退订" in await wechat.say("oa-1", "退订")
    done = await announce(wechat, "normal")
    assert "已发送给米家社区1号楼" in done
    notice = await Notice.get()
    assert (await sweep_due(notice.send_at))["done"] == 1  # the due action fans it out
    rows = {r.resident_id: r.status for r in await NoticeDelivery.filter(notice_id=notice.id)}  # type: ignore[attr-defined]
    assert rows[people[0].id] == DeliveryStatus.QUEUED
    assert rows[people[1].id] == DeliveryStatus.OPTED_OUT
    assert rows[people[2].id] == DeliveryStatus.NO_ACCOUNT
    message = await OutboxMessage.get(openid="oa-0")
    assert message.priority == Priority.BULK and "【社区通知】明天上午停水" in message.payload["content"]
    assert "退订" in message.payload["content"]
    assert not await OutboxMessage.filter(openid="oa-1").exists()
    report = await notice_report(notice.id, notice.send_at)
    assert report["recipients"] == 5 and report["opted_out"] == 1 and report["no_account"] == 2
    assert report["sent"] + report["waiting"] + report["held"] == 2


async def test_written_at_night_a_normal_notice_waits_for_eight(wechat: WeChatPusher, clock: FrozenClock) -> None:
    await residents_of_building_1()
    clock.set(datetime(2026, 11, 27, 14, 30, tzinfo=UTC))  # 22:30 in Shanghai
    done = await announce(wechat, "normal")
    assert "夜间免打扰" in done and "08:00" in done
    notice = await Notice.get()
    assert notice.send_at == datetime(2026, 11, 28, 0, 0, tzinfo=UTC)  # 08:00 Shanghai
    assert (await sweep_due(clock.now()))["done"] == 0  # not before the morning
    assert (await sweep_due(notice.send_at))["done"] == 1
    assert await OutboxMessage.filter(openid="oa-0").exists()


async def test_an_urgent_notice_goes_out_at_once_at_night_even_to_who_opted_out(
    wechat: WeChatPusher, clock: FrozenClock
) -> None:
    await residents_of_building_1()
    await wechat.say("oa-1", "退订")
    clock.set(datetime(2026, 11, 27, 15, 0, tzinfo=UTC))  # 23:00 in Shanghai
    assert "已发送" in await announce(wechat, "urgent", "燃气泄漏请勿用火")
    for openid in ("oa-0", "oa-1"):
        message = await OutboxMessage.get(openid=openid)
        assert message.priority == Priority.NORMAL and "【紧急通知】燃气泄漏请勿用火" in message.payload["content"]
        assert message.next_attempt_at == clock.now()


async def test_fan_out_again_sends_nobody_twice(wechat: WeChatPusher) -> None:
    await residents_of_building_1()
    await announce(wechat, "normal")
    notice = await Notice.get()
    first = await fan_out(notice.id, notice.send_at)
    again = await fan_out(notice.id, notice.send_at)
    assert sum(first.values()) == 5 and sum(again.values()) == 0
    assert await OutboxMessage.filter(idempotency_key__startswith=f"notice:{notice.id}:").count() == 3


async def test_two_fan_outs_at_once_share_the_work_and_send_nobody_twice(wechat: WeChatPusher) -> None:
    """The due sweep next to an immediate fan-out: batches are taken in turn under the notice's lock."""
    import asyncio

    await residents_of_building_1()
    await announce(wechat, "normal")
    notice = await Notice.get()
    results = await asyncio.gather(*(fan_out(notice.id, notice.send_at, batch=2) for _ in range(3)))
    assert sum(sum(r.values()) for r in results) == 5
    assert await NoticeDelivery.filter(notice_id=notice.id).count() == 5
    assert await OutboxMessage.filter(idempotency_key__startswith=f"notice:{notice.id}:").count() == 3


async def test_subscribe_again_and_grid_workers_only_address_their_grid(wechat: WeChatPusher) -> None:
    await residents_of_building_1()
    assert "已退订" in await wechat.say("oa-0", "退订")
    assert "已订阅" in await wechat.say("oa-0", "订阅")
    assert (await Resident.get(name="甲居民")).notices_off_at is None
    listing = await wechat.say("demo-grid-2", "发通知")  # 第二网格: 4号楼 and 5号楼
    assert "4号楼" in listing and "1号楼" not in listing and "全体居民" in listing
    assert "仅限相关工作人员" in await wechat.say("oa-0", "发通知")


# ---------------------------------------------------------------------------- channels

async def _urgent_notice_to_building_1(clock: FrozenClock) -> Notice:
    from models.notices import create_notice, schedule_notice

    building = await Building.get(name="1号楼")
    notice = await create_notice(community_id=building.community_id, building_id=building.id,  # type: ignore[attr-defined]
                                 title="燃气检修", text="今天下午燃气检修，请关闭阀门。", urgency="urgent",
                                 now=clock.now(), send_at=clock.now(), by_id=None)
    await schedule_notice(notice, clock.now())
    return notice


async def _until_settled(openids: list[str]) -> list[OutboxMessage]:
    import asyncio

    for _ in range(500):  # the sender works in the background
        rows = await OutboxMessage.filter(openid__in=openids).order_by("id")
        if rows and all(r.state in ("sent", "failed") or r.error_code == 45009 for r in rows):
            return rows
        await asyncio.sleep(0.01)
    raise AssertionError("the outbox did not settle")


async def test_daily_quota_pauses_the_notice_until_the_reset_time(client, clock: FrozenClock) -> None:  # type: ignore[no-untyped-def]
    from bot.app import SERVICES

    await residents_of_building_1()
    fake = client.app[SERVICES].fake
    for openid in ("oa-0", "oa-1"):
        fake.follow(openid)
        fake.interact(openid)
    fake.fail("/cgi-bin/message/custom/send", 45009, times=100)
    await _urgent_notice_to_building_1(clock)
    client.app[SERVICES].sender.notify()
    rows = await _until_settled(["oa-0", "oa-1"])
    reset = datetime(2026, 11, 27, 16, 5, tzinfo=UTC)  # 00:05 next day in Shanghai
    assert {(r.state, r.next_attempt_at) for r in rows} == {("pending", reset)}
    assert all("paused" in r.error_message for r in rows)
    assert fake.texts("oa-0") == []
    report = await notice_report((await Notice.get()).id, clock.now())
    paused = await OutboxMessage.filter(state="pending", error_code=45009).count()
    assert report["held"] == paused >= 2 and report["sent"] == 0


async def test_staff_announce_through_the_api(client, clock: FrozenClock) -> None:  # type: ignore[no-untyped-def]
    from tests.api import MiniProgram

    await residents_of_building_1()
    staff = MiniProgram(client, "mp-staff")
    await staff.login()
    await staff.verify_phone("13904180003")  # 周社工
    building = await Building.get(name="1号楼")
    clock.set(datetime(2026, 11, 27, 14, 0, tzinfo=UTC))  # 22:00 in Shanghai
    sent = await staff.call("POST", "/announcements", {"audience": "building", "audience_id": building.id,
                                                      "title": "明早停水", "text": "7:00-9:00 停水。"})
    assert sent.status == 201 and sent.body["send_at"] == "2026-11-28T00:00:00+00:00"
    other = await Building.get(name="东1栋")  # another community
    refused = await staff.call("POST", "/announcements", {"audience": "building", "audience_id": other.id,
                                                         "title": "x", "text": "y"})
    assert refused.status == 404
    await sweep_due(datetime(2026, 11, 28, 0, 0, tzinfo=UTC))
    report = (await staff.call("GET", f"/announcements/{sent.body['id']}")).body["report"]
    assert report["recipients"] == 5 and report["no_account"] == 2


async def test_mini_program_users_get_a_subscribe_message_against_a_reported_consent(
    client, clock: FrozenClock  # type: ignore[no-untyped-def]
) -> None:
    import asyncio

    from bot.app import SERVICES
    from models.notices import SubscribeConsent
    from tests.api import MiniProgram

    building = await Building.get(name="1号楼")
    fake = client.app[SERVICES].fake
    users = {}
    for name, mobile in (("丁小程", "13911112001"), ("戊小程", "13911112002")):
        await Resident.create(name=name, mobile=mobile, community_id=building.community_id, building=building,  # type: ignore[attr-defined]
                              unit="3", room="301", created_at=clock.now())
        mp = MiniProgram(client, f"mp-{mobile}")
        await mp.login()
        await mp.verify_phone(mobile)
        assert (await mp.call("GET", "/me")).body["needs_subscription"] is True
        users[name] = mp
    # 丁 accepted in the mini-program and WeChat knows it; 戊's client reported a consent WeChat does not have
    fake.consent("mp-13911112001", "tpl-sub-notice")
    for mp in users.values():
        assert (await mp.call("POST", "/me/subscriptions", {"template_ids": ["tpl-sub-notice"]})).status == 201
        assert (await mp.call("GET", "/me")).body["needs_subscription"] is False
    await _urgent_notice_to_building_1(clock)
    client.app[SERVICES].sender.notify()
    for _ in range(500):
        rows = await OutboxMessage.filter(kind="subscribe").order_by("id")
        if len(rows) == 2 and all(r.state in ("sent", "failed") for r in rows):
            break
        await asyncio.sleep(0.01)
    assert [m.touser for m in fake.sent("subscribe")] == ["mp-13911112001"]
    refused = await OutboxMessage.get(openid="mp-13911112002")
    assert refused.state == "failed" and refused.error_code == 43101
    assert (await SubscribeConsent.get(account__openid="mp-13911112002")).refused_at is not None
    assert (await users["戊小程"].call("GET", "/me")).body["needs_subscription"] is True  # asked again next time
    assert (await users["丁小程"].call("GET", "/me")).body["needs_subscription"] is True  # its one consent is used
    report = await notice_report((await Notice.get()).id, clock.now())
    assert report["sent"] >= 1 and report.get("failed:43101") == 1
