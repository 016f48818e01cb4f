"""周五流动服务日: planning by chat, the Thursday/Friday notices once each, holiday Fridays, intents."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from bot.clock import FrozenClock
from bot.config import Config
from bot.scheduler import SERVICE_DAY_JOB, service_scheduler
from models.notices import Notice, NoticeDelivery, NoticeKind
from models.outbox import OutboxMessage
from models.places import Building
from models.residents import Resident, WechatAccount
from models.service_days import ServiceDay
from tests.wechat import WeChatPusher

pytestmark = pytest.mark.usefixtures("demo")

STAFF = "demo-staff"  # 周社工, community staff of 米家社区
SHANGHAI = ZoneInfo("Asia/Shanghai")


def at(year: int, month: int, day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=SHANGHAI).astimezone(UTC)


async def two_residents_on_wechat() -> list[Resident]:
    building = await Building.get(name="1号楼")
    people = []
    for i, name in enumerate(["甲居民", "乙居民"]):
        person = await Resident.create(name=name, mobile=f"1392222000{i}", community_id=building.community_id,  # type: ignore[attr-defined]
                                       building=building, unit="1", room=f"20{i}", created_at=datetime.now(UTC))
        await WechatAccount.create(openid=f"sd-{i}", channel="oa", resident=person, created_at=person.created_at)
        people.append(person)
    return people


async def plan(wechat: WeChatPusher, day: str) -> str:
    await wechat.say(STAFF, "排服务日")
    asked = await wechat.say(STAFF, day)
    if "在哪里" not in asked:
        return asked
    await wechat.say(STAFF, "幸福里小区3号楼前广场")
    await wechat.say(STAFF, "09:00-11:30")
    items = await wechat.say(STAFF, "周社工、李网格")
    assert "1. 政策咨询" in items
    summary = await wechat.say(STAFF, "1 2 3")
    assert "政策咨询、医保社保、血压血糖测量" in summary and "确认" in summary
    return await wechat.say(STAFF, "是")


async def test_planning_refuses_a_day_that_is_not_a_friday(wechat: WeChatPusher) -> None:
    reply = await plan(wechat, "12月3日")  # the clock stands on Friday 27 November 2026
    assert "不是周五" in reply and "12月4日（周五）" in reply
    assert "已经过去" in await wechat.say(STAFF, "2026-11-20")
    assert "在哪里" in await wechat.say(STAFF, "12月4日")  # the same question, answered right


async def test_planning_refuses_a_holiday_friday_and_names_the_next_working_one(
    wechat: WeChatPusher, clock: FrozenClock,
) -> None:
    clock.set(at(2026, 9, 14, 10))
    reply = await plan(wechat, "2026-10-02")
    assert "法定节假日" in reply and "10月9日（周五）" in reply
    await wechat.say(STAFF, "取消")
    assert not await ServiceDay.exists()


async def test_the_thursday_notice_goes_out_once_to_every_resident(
    wechat: WeChatPusher, clock: FrozenClock, config: Config,
) -> None:
    people = await two_residents_on_wechat()
    assert "已安排12月4日（周五）" in await plan(wechat, "12月4日")
    clock.set(at(2026, 12, 3, 17, 55))
    scheduler = service_scheduler(config, clock)
    await scheduler.run(SERVICE_DAY_JOB)
    assert not await Notice.filter(kind=NoticeKind.SERVICE_DAY).exists()  # not before 18:00
    clock.set(at(2026, 12, 3, 18, 5))
    await scheduler.run_due(SERVICE_DAY_JOB)
    await scheduler.run(SERVICE_DAY_JOB)  # run again, as a second scheduler would
    await service_scheduler(config, clock).run(SERVICE_DAY_JOB)
    notice = await Notice.get(kind=NoticeKind.SERVICE_DAY)
    assert notice.title == "明天流动服务日"
    assert await NoticeDelivery.filter(notice_id=notice.id).count() == await Resident.filter(
        community_id=notice.community_id, erased_at=None).count()  # type: ignore[attr-defined]
    for person in people:
        rows = await OutboxMessage.filter(openid=f"sd-{people.index(person)}")
        assert len(rows) == 1
        text = rows[0].payload["content"]
        assert "幸福里小区3号楼前广场" in text and "09:00–11:30" in text and "医保社保" in text
        assert "身份证" in text and "医保卡" in text and "参加" in text
    # Friday 08:00: the morning notice, once
    clock.set(at(2026, 12, 4, 8, 1))
    await scheduler.run(SERVICE_DAY_JOB)
    await scheduler.run(SERVICE_DAY_JOB)
    assert await Notice.filter(kind=NoticeKind.SERVICE_DAY).count() == 2
    assert await OutboxMessage.filter(openid="sd-0").count() == 2


async def test_a_residents_intent_counts_in_the_schedule(wechat: WeChatPusher) -> None:
    await two_residents_on_wechat()
    await plan(wechat, "12月4日")
    offer = await wechat.say("sd-0", "参加")
    assert "12月4日（周五）" in offer and "2. 医保社保" in offer
    done = await wechat.say("sd-0", "2")
    assert "已记下" in done and "医保社保" in done and "身份证" in done
    await wechat.say("sd-1", "参加")
    await wechat.say("sd-1", "2")
    await wechat.say("sd-1", "参加")
    assert "已改为" in await wechat.say("sd-1", "1")  # a second answer replaces the first
    listing = await wechat.say(STAFF, "服务日安排")
    assert "12月4日（周五）" in listing and "预计2人" in listing and "政策咨询1、医保社保1" in listing


async def test_a_holiday_friday_gets_a_thursday_notice_naming_the_next_day(
    wechat: WeChatPusher, clock: FrozenClock, config: Config,
) -> None:
    await two_residents_on_wechat()
    clock.set(at(2026, 9, 14, 10))
    assert "已安排" in await plan(wechat, "10月9日")
    clock.set(at(2026, 10, 1, 18, 10))  # Thursday, the eve of 国庆's Friday
    scheduler = service_scheduler(config, clock)
    await scheduler.run(SERVICE_DAY_JOB)
    await scheduler.run(SERVICE_DAY_JOB)
    notice = await Notice.get(kind=NoticeKind.SERVICE_DAY)
    assert notice.title == "本周五无流动服务日"
    text = (await OutboxMessage.get(openid="sd-0")).payload["content"]
    assert "10月2日（周五）是法定节假日" in text and "10月9日（周五）" in text and "幸福里小区3号楼前广场" in text


async def test_staff_are_warned_weeks_ahead_when_next_years_calendar_is_missing(
    wechat: WeChatPusher, clock: FrozenClock, config: Config,
) -> None:
    # the installed holiday calendar ends with 2026 (if it learns 2027, this test moves a year)
    clock.set(at(2026, 11, 20, 10))
    scheduler = service_scheduler(config, clock)
    await scheduler.run(SERVICE_DAY_JOB)
    await scheduler.run(SERVICE_DAY_JOB)
    rows = await OutboxMessage.filter(openid=STAFF)
    warnings = [r for r in rows if "2027年" in r.payload["content"]]
    assert len(warnings) == 1 and "节假日日历" in warnings[0].payload["content"]


async def test_a_newcomer_plans_a_day_and_watches_its_notice_arrive_in_chat(tmp_path, cli_env) -> None:  # type: ignore[no-untyped-def]
    """The acceptance walk-through with `linli demo` and `linli chat` (/at moves the session's clock)."""
    import asyncio
    from datetime import date, timedelta

    from tests.test_cli import linli

    assert linli("demo", cwd=tmp_path, env=cli_env).returncode == 0
    today = date.today()
    friday = today + timedelta(days=(4 - today.weekday()) % 7 + 7)  # a Friday at least a week ahead
    while True:  # skip holidays the calendar knows
        plan = "\n".join(["排服务日", friday.isoformat(), "米家社区文化广场", "09:00-11:30", "周社工", "1 2", "是"])
        staff = await asyncio.to_thread(linli, "chat", "--as", "demo-staff", cwd=tmp_path, env=cli_env,
                                        stdin=plan + "\n")
        if "的流动服务日。" in staff.stdout and "已安排" in staff.stdout:
            break
        assert "节假日" in staff.stdout or "法定" in staff.stdout, staff.stdout
        friday += timedelta(days=7)
    thursday_evening = f"{friday - timedelta(days=1):%Y-%m-%d} 18:05"
    resident = await asyncio.to_thread(linli, "chat", "--as", "demo-grid-1", cwd=tmp_path, env=cli_env,
                                       stdin=f"你好\n/at {thursday_evening}\n你好\n")
    assert resident.returncode == 0, resident.stderr
    assert "时钟已拨到" in resident.stdout
    assert "米家社区文化广场" in resident.stdout and "【客服消息→demo-grid-1】" in resident.stdout
