"""周五流动服务日: planning by chat, the Thursday/Friday notices once each, holiday Fridays, intents."""

from __future__ import annotations

from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

import pytest

from bot.clock import FrozenClock
from bot.config import Config
from bot.scheduler import SERVICE_DAY_JOB, service_scheduler
from models.conversation import PendingPrompt
from models.notices import Notice, NoticeDelivery, NoticeKind
from models.outbox import OutboxMessage
from models.places import Building
from models.residents import Resident, WechatAccount
from models.service_days import ServiceDay, ServiceDayIntent
from tests.test_api import until
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
    assert "1. 低保申请" in items and "21. 健康检查" in items  # the service package's 21 items
    summary = await wechat.say(STAFF, "1 9 20")
    assert "低保申请、医保参保、法律咨询" in summary and "确认" in summary
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
        assert "幸福里小区3号楼前广场" in text and "09:00–11:30" in text and "医保参保" in text
        # what to bring: the documents of the items offered, each once
        assert "请带好：身份证、户口本、家庭收入证明、银行卡、相关材料（如有）。" in text
        assert "您会来办理哪一项" in text and "2. 医保参保" in text  # the question each resident may answer
    prompts = await PendingPrompt.filter(subject=f"notice:{notice.id}", closed_at=None)
    assert len(prompts) == await OutboxMessage.filter(idempotency_key__startswith=f"notice:{notice.id}:").count()
    assert {"sd-0", "sd-1"} <= {p.openid for p in prompts}
    # Friday 08:00: the morning notice, once
    clock.set(at(2026, 12, 4, 8, 1))
    await scheduler.run(SERVICE_DAY_JOB)
    await scheduler.run(SERVICE_DAY_JOB)
    assert await Notice.filter(kind=NoticeKind.SERVICE_DAY).count() == 2
    assert await OutboxMessage.filter(openid="sd-0").count() == 2
    # only the latest notice's question stays open
    assert await PendingPrompt.filter(subject=f"notice:{notice.id}", closed_at=None).count() == 0
    assert await PendingPrompt.filter(closed_at=None).count() == len(prompts)


async def test_a_residents_intent_counts_in_the_schedule(wechat: WeChatPusher) -> None:
    await two_residents_on_wechat()
    await plan(wechat, "12月4日")
    offer = await wechat.say("sd-0", "参加")
    assert "12月4日（周五）" in offer and "2. 医保参保" in offer
    done = await wechat.say("sd-0", "2")
    assert "已记下" in done and "医保参保" in done and "身份证、户口本" in done
    await wechat.say("sd-1", "参加")
    await wechat.say("sd-1", "2")
    await wechat.say("sd-1", "参加")
    assert "已改为" in await wechat.say("sd-1", "1")  # a second answer replaces the first
    listing = await wechat.say(STAFF, "服务日安排")
    assert "12月4日（周五）" in listing and "预计2人" in listing and "低保申请1、医保参保1" in listing


async def test_residents_answer_the_notices_question_by_its_number(
    wechat: WeChatPusher, clock: FrozenClock, config: Config,
) -> None:
    await two_residents_on_wechat()
    await plan(wechat, "12月4日")
    clock.set(at(2026, 12, 3, 16, 0))
    await wechat.say("sd-0", "你好")  # inside WeChat's customer-service window: the notice reaches the phone
    clock.set(at(2026, 12, 3, 18, 5))  # the menu opened by 你好 has long gone idle
    await service_scheduler(config, clock).run(SERVICE_DAY_JOB)

    async def pushed() -> bool:
        return await OutboxMessage.filter(openid="sd-0", state="sent").exists()

    await until(pushed)
    done = await wechat.say("sd-0", "2")  # answers the pushed question at once
    assert "已记下" in done and "医保参保" in done
    assert "2. 医保参保" in await wechat.say("sd-0", "参加")  # answered once; 参加 changes it
    assert "已改为" in await wechat.say("sd-0", "3")
    # sd-1 has no window and no template is configured: the question waits for their next message
    shown = await wechat.say("sd-1", "1")
    assert "您有一条待回复的消息" in shown and "1. 低保申请" in shown
    assert "低保申请" in await wechat.say("sd-1", "1")
    listing = await wechat.say(STAFF, "服务日安排")
    assert "预计2人" in listing and "低保申请1、法律咨询1" in listing
    clock.set(at(2026, 12, 4, 11, 31))  # after the day's end the number means nothing any more
    assert "已记下" not in await wechat.say("sd-0", "1") and "已改为" not in await wechat.say("sd-0", "1")


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
                                       stdin=f"你好\n/at {thursday_evening}\n1\n")
    assert resident.returncode == 0, resident.stderr
    assert "时钟已拨到" in resident.stdout
    assert "米家社区文化广场" in resident.stdout and "【客服消息→demo-grid-1】" in resident.stdout
    assert "您会来办理哪一项" in resident.stdout
    assert "已记下" in resident.stdout  # the resident answered the notice's question with its number


async def test_service_days_through_the_api(client, clock: FrozenClock) -> None:  # type: ignore[no-untyped-def]
    """Staff plan a day, residents see it and say what they come for, staff see the expected visitors."""
    from models.places import Community
    from tests.test_api import staff_session

    staff = await staff_session(client, "mp-staff", "13904180003")  # 周社工, community staff of 米家社区
    elder = await staff_session(client, "mp-elder", "13904180011")  # 王秀兰, a resident of 米家社区
    mijia = (await Community.get(name="米家社区")).id
    day = {"community_id": mijia, "date": "2026-12-04", "place": "米家社区文化广场", "starts": "09:00",
           "ends": "11:30", "staff": "周社工", "items": ["低保申请", "医保参保"]}
    planned = await staff.call("POST", "/service-days", day)
    assert planned.status == 201, planned
    assert planned.body["what_to_bring"] == ["身份证", "户口本", "家庭收入证明", "银行卡"]
    again = await staff.call("POST", "/service-days", day)
    assert again.status == 409 and "已经排过" in again.body["message"]
    past = await staff.call("POST", "/service-days", day | {"date": "2026-11-20"})
    assert past.status == 409 and "已经过去" in past.body["message"]
    thursday = await staff.call("POST", "/service-days", day | {"date": "2026-12-10"})
    assert thursday.status == 409 and "不是周五" in thursday.body["message"]
    unknown = await staff.call("POST", "/service-days", day | {"date": "2026-12-11", "items": ["算命"]})
    assert unknown.status == 422 and unknown.body["fields"][0]["field"].startswith("body.items")
    assert (await elder.call("POST", "/service-days", day | {"date": "2026-12-11"})).status == 404
    assert not await ServiceDay.filter(date=date(2026, 12, 11)).exists()  # nothing changed by the refusals

    listed = await elder.call("GET", "/service-days")
    assert [d["date"] for d in listed.body["items"]] == ["2026-12-04"] and listed.body["items"][0]["expected"] is None
    day_id = planned.body["id"]
    wrong = await elder.call("PUT", f"/service-days/{day_id}/intent", {"item": "法律咨询"})
    assert wrong.status == 409 and "本次不办理" in wrong.body["message"]
    said = await elder.call("PUT", f"/service-days/{day_id}/intent", {"item": "医保参保"})
    assert said.status == 200 and said.body["my_item"] == "医保参保"
    assert (await elder.call("GET", "/service-days")).body["items"][0]["my_item"] == "医保参保"
    seen = await staff.call("GET", f"/communities/{mijia}/service-days")
    assert seen.body["items"][0]["expected"] == {"医保参保": 1}
    assert (await elder.call("GET", f"/communities/{mijia}/service-days")).status == 404
    clock.set(at(2026, 12, 5, 9))  # the day has passed
    late = await elder.call("PUT", f"/service-days/{day_id}/intent", {"item": "低保申请"})
    assert late.status == 409 and "已经过去" in late.body["message"]
    assert (await ServiceDayIntent.get(day_id=day_id)).item == "医保参保"


async def test_staff_change_when_the_notices_go_out(
    wechat: WeChatPusher, client, clock: FrozenClock, config: Config,  # type: ignore[no-untyped-def]
) -> None:
    from models.places import Community
    from tests.test_api import staff_session

    await two_residents_on_wechat()
    assert "前一天18:00、当天08:00" in await wechat.say(STAFF, "服务日通知时间")
    assert "21:00" in await wechat.say(STAFF, "22:30")  # in the quiet hours: asked again
    assert "当天几点" in await wechat.say(STAFF, "16:30")
    assert "前一天16:30和当天07:30" not in await wechat.say(STAFF, "07:30")  # before the quiet hours end
    assert "前一天16:30和当天09:00" in await wechat.say(STAFF, "09:00")
    await plan(wechat, "12月4日")
    clock.set(at(2026, 12, 3, 16, 35))
    await service_scheduler(config, clock).run(SERVICE_DAY_JOB)
    assert (await Notice.get(kind=NoticeKind.SERVICE_DAY)).title == "明天流动服务日"

    api = await staff_session(client, "mp-staff", "13904180003")
    mijia = (await Community.get(name="米家社区")).id
    path = f"/communities/{mijia}/service-day-settings"
    assert (await api.call("GET", path)).body == {"eve_at": "16:30", "day_at": "09:00"}
    refused = await api.call("PUT", path, {"eve_at": "06:00", "day_at": "08:00"})
    assert refused.status == 409 and "夜间免打扰" in refused.body["message"]
    assert (await api.call("GET", path)).body == {"eve_at": "16:30", "day_at": "09:00"}  # unchanged
    assert (await api.call("PUT", path, {"eve_at": "18:00", "day_at": "08:00"})).status == 200
