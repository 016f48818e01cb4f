"""逢六说事 · 周五圆梦: the agenda, the reminder the day before a session, outcomes that move cases
(and escalate when missed), the Friday roundup — in the model with the frozen clock, then in chat
and through the API."""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from bot.clock import FrozenClock
from bot.config import Config
from bot.scheduler import ROUNDUP_JOB, SESSION_REMINDER_JOB, service_scheduler
from models import case_sessions as sessions
from models import cases
from models.case_sessions import NoticeTimes, agenda, run_roundup, run_session_reminders
from models.cases import (
    AgendaItem,
    AgendaReason,
    Case,
    CaseEvent,
    DeliberationSession,
    EventKind,
    Level,
    Status,
    report_case,
)
from models.demo import load_demo
from models.errors import NotFound, UserFacingError
from models.jobs import ActionStatus, DueAction, sweep_due
from models.notices import DeliveryStatus, Notice, NoticeDelivery, NoticeKind
from models.outbox import OutboxMessage
from models.places import Building, Community
from models.residents import Resident, WechatAccount
from models.roles import Role, grant

SHANGHAI = ZoneInfo("Asia/Shanghai")
TIMES = NoticeTimes(tz=SHANGHAI, reminder_at=time(18), roundup_at=time(17), quiet_start=time(21), quiet_end=time(8))
NAMES = ["甲居民", "乙居民", "丙居民"]


def at(month: int, day: int, hour: int, minute: int = 0, year: int = 2026) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=SHANGHAI).astimezone(UTC)


async def residents_of_building_1(now: datetime) -> list[Resident]:
    """Three residents of 1号楼 (米家社区) who follow the official account: openids oa-s-0..2."""
    building = await Building.get(name="1号楼")
    people = []
    for i, name in enumerate(NAMES):
        person = await Resident.create(name=name, mobile=f"1393333000{i}", community_id=building.community_id,  # type: ignore[attr-defined]
                                       building=building, unit="1", room=f"20{i}", created_at=now)
        await WechatAccount.create(openid=f"oa-s-{i}", channel="oa", resident=person, created_at=now)
        people.append(person)
    return people


def texts(rows: list[OutboxMessage]) -> list[str]:
    return [row.payload["content"] for row in rows]


async def pushed_to(openid: str) -> list[str]:
    return texts(await OutboxMessage.filter(openid=openid).order_by("id"))


# ---------------------------------------------------------------------------- the model, no app


@pytest.fixture
async def world(db: Config) -> dict[str, Any]:
    """The demo, three residents on WeChat, and the ids the tests use."""
    await load_demo(at(11, 1, 9))
    people = await residents_of_building_1(at(11, 1, 9))
    xinqiu = await Community.get(name="新邱社区")
    other_staff = await Resident.create(name="吴社工", mobile="13933339999", community=xinqiu, created_at=at(11, 1, 9))
    await grant(resident_id=other_staff.id, role=Role.COMMUNITY_STAFF, scope_id=xinqiu.id, now=at(11, 1, 9))
    return {"people": people, "staff": await Resident.get(name="周社工"), "street": await Resident.get(name="冯街道"),
            "grid": await Resident.get(name="李网格"), "property": await Resident.get(name="钱物业"),
            "mediator": await Resident.get(name="孔调解"), "other_staff": other_staff,
            "mijia": await Community.get(name="米家社区"), "xinqiu": xinqiu,
            "building_2": await Building.get(name="2号楼")}


async def test_the_agenda_puts_the_most_joined_first_and_never_a_private_case(world: dict[str, Any]) -> None:
    a, b, c = world["people"]
    now = at(11, 23, 10)
    few = await report_case(reporter=a, category="parking", description="车位不够", now=now)
    many = await report_case(reporter=b, category="parking", description="消防通道被占", now=now,
                             building_id=world["building_2"].id)
    some = await report_case(reporter=c, category="lighting", description="路灯太暗", now=now, in_person=True)
    private = await report_case(reporter=c, category="dispute", description="楼上漏水", now=now, in_person=True)
    for joiner in (a, c):
        await cases.join_case(many.id, joiner, now)
    await cases.join_case(some.id, a, now)
    session = await DeliberationSession.get(community_id=world["mijia"].id, day=date(2026, 11, 26))
    # asked to raise in person, but a private matter is never listed
    assert not await AgendaItem.filter(session_id=session.id, case_id=private.id).exists()
    items = await agenda(session)
    assert [item.case_id for item in items] == [many.id, some.id, few.id]  # type: ignore[attr-defined]
    assert [item.reason for item in items] == [AgendaReason.BIG, AgendaReason.IN_PERSON, AgendaReason.BIG]
    assert [sessions.public_line(item.case) for item in items] == ["停车·2号楼", "照明·1号楼", "停车·1号楼"]


@pytest.mark.parametrize(("reported", "session_day"), [
    (at(11, 16, 15), date(2026, 11, 26)),  # after the 16th's session: the 26th
    (at(11, 26, 20), date(2026, 12, 6)),  # after the 26th's: next month's 6th
    (at(12, 26, 7), date(2027, 1, 6)),  # 07:00 on the 26th in Shanghai is still the 25th in UTC
    (at(12, 31, 12), date(2027, 1, 6)),  # December → January
    (at(1, 6, 9, year=2027), date(2027, 1, 16)),
])
async def test_a_case_lands_on_the_next_session_across_months_and_years(
    world: dict[str, Any], reported: datetime, session_day: date,
) -> None:
    case = await report_case(reporter=world["people"][0], category="parking", description="车位不够", now=reported)
    item = await AgendaItem.get(case_id=case.id).prefetch_related("session")
    assert item.session.day == session_day


async def test_staff_add_and_drop_items_with_reasons(world: dict[str, Any]) -> None:
    b = world["people"][1]
    staff = world["staff"]
    now = at(11, 23, 10)
    small = await report_case(reporter=b, category="lighting", description="楼道灯坏了", now=now)
    private = await report_case(reporter=b, category="dispute", description="邻居吵架", now=now)
    session = await sessions.coming_session(world["mijia"].id, now)
    assert session.day == date(2026, 11, 26)
    for outsider in ("grid", "street", "other_staff", "property"):  # only the community's own staff
        with pytest.raises(NotFound):
            await sessions.add_case(session.id, small.id, world[outsider].id, "大家都关心", now)
    with pytest.raises(UserFacingError, match="原因"):
        await sessions.add_case(session.id, small.id, staff.id, "  ", now)
    with pytest.raises(UserFacingError, match="私事"):
        await sessions.add_case(session.id, private.id, staff.id, "反复发生", now)
    item = await sessions.add_case(session.id, small.id, staff.id, "多户反映楼道太黑", now)
    assert (item.reason, item.added_by_id, item.added_note) == (AgendaReason.STAFF, staff.id, "多户反映楼道太黑")  # type: ignore[attr-defined]
    with pytest.raises(UserFacingError, match="已经在"):
        await sessions.add_case(session.id, small.id, staff.id, "再加一次", now)
    assert [i.case_id for i in await agenda(session)] == [small.id]  # type: ignore[attr-defined]

    with pytest.raises(NotFound):
        await sessions.drop_item(item.id, world["street"].id, "不归社区", now)
    await sessions.drop_item(item.id, staff.id, "物业已答复三天内修好", now + timedelta(hours=1))
    item = await AgendaItem.get(id=item.id)
    assert (item.dropped_by_id, item.dropped_reason) == (staff.id, "物业已答复三天内修好")  # type: ignore[attr-defined]
    assert await agenda(session) == []
    assert any("撤下" in text and "物业已答复" in text for text in await pushed_to("oa-s-1"))  # the reporter
    with pytest.raises(UserFacingError, match="已经撤下"):
        await sessions.drop_item(item.id, staff.id, "再撤一次", now)
    # back again: stamped with the new addition; both steps are in the case's events
    await sessions.add_case(session.id, small.id, staff.id, "物业没有修", now + timedelta(hours=2))
    item = await AgendaItem.get(id=item.id)
    assert (item.dropped_at, item.added_note) == (None, "物业没有修")
    agenda_events = await CaseEvent.filter(case_id=small.id, kind=EventKind.AGENDA).order_by("id")
    assert [e.data["added"] for e in agenda_events] == [True, False, True]
    # once the session is held nothing is added or dropped any more
    await sessions.mark_held(session.id, staff.id, at(11, 26, 19))
    with pytest.raises(UserFacingError, match="开过了"):
        await sessions.drop_item(item.id, staff.id, "会后撤下", at(11, 26, 20))
    with pytest.raises(UserFacingError, match="开过了"):
        await sessions.add_case(session.id, small.id, staff.id, "会后加", at(11, 26, 20))


async def test_the_reminder_carries_only_the_public_agenda_and_goes_once(world: dict[str, Any], db: Config) -> None:
    a, b, c = world["people"]
    now = at(11, 23, 10)
    await report_case(reporter=a, category="parking", description="甲居民家门口的车位总被占", now=now,
                      photos=[{"media_id": "m1", "pic_url": "http://x/1.jpg"}])
    await report_case(reporter=b, category="dispute", description="楼上邻居夜里吵", now=now, in_person=True)
    await DeliberationSession.create(community_id=world["xinqiu"].id, day=date(2026, 11, 26), created_at=now)
    c.notices_off_at = now  # said 退订
    await c.save(update_fields=["notices_off_at"])

    assert await run_session_reminders(at(11, 25, 17, 55), TIMES) == {"reminders": 0, "empty": 0}
    assert await run_session_reminders(at(11, 24, 18, 30), TIMES) == {"reminders": 0, "empty": 0}  # two days before
    clock = FrozenClock(at(11, 25, 18, 5))
    first, second = service_scheduler(db, clock), service_scheduler(db, clock)
    await asyncio.gather(first.run_due(SESSION_REMINDER_JOB), second.run_due(SESSION_REMINDER_JOB),
                         first.run(SESSION_REMINDER_JOB), second.run(SESSION_REMINDER_JOB))
    notice = await Notice.get(kind=NoticeKind.SESSION)  # one: the other community's session has no item
    assert notice.community_id == world["mijia"].id and notice.title == "11月26日逢六说事议事会"  # type: ignore[attr-defined]
    session = await DeliberationSession.get(community_id=world["mijia"].id, day=date(2026, 11, 26))
    assert session.reminded_at == at(11, 25, 18, 5)
    assert (await DeliberationSession.get(community_id=world["xinqiu"].id)).reminded_at is None
    [text] = await pushed_to("oa-s-0")
    assert "11月26日（周四）在红色议事亭召开逢六说事议事会" in text and "1. 停车·1号楼" in text
    for secret in ("邻里纠纷", "楼上邻居", "车位总被占", "甲居民", "乙居民", "201", "1.jpg", "m1"):
        assert secret not in text, secret  # no private case, no words, names, rooms or photos
    assert await pushed_to("oa-s-1") == [text]
    assert await pushed_to("oa-s-2") == []  # opted out
    assert (await NoticeDelivery.get(notice_id=notice.id, resident_id=c.id)).status == DeliveryStatus.OPTED_OUT
    assert await run_session_reminders(at(11, 25, 20), TIMES) == {"reminders": 0, "empty": 1}


async def test_a_reminder_written_in_the_quiet_hours_waits_for_the_morning(world: dict[str, Any]) -> None:
    await report_case(reporter=world["people"][0], category="parking", description="车位", now=at(12, 1, 10))
    assert (await run_session_reminders(at(12, 5, 22, 30), TIMES))["reminders"] == 1  # the scheduler was down
    notice = await Notice.get(kind=NoticeKind.SESSION)
    assert notice.send_at == at(12, 6, 8)
    assert all(row.next_attempt_at == at(12, 6, 8) for row in await OutboxMessage.filter(openid__startswith="oa-s-"))


async def test_an_outcome_moves_the_case_tells_every_follower_and_a_missed_one_escalates(
    world: dict[str, Any],
) -> None:
    a, b, c = world["people"]
    staff = world["staff"]
    big = await report_case(reporter=a, category="parking", description="车位不够", now=at(11, 23, 10))
    for joiner in (b, c):
        await cases.join_case(big.id, joiner, at(11, 23, 11))
    item = await AgendaItem.get(case_id=big.id)
    with pytest.raises(UserFacingError, match="开会后"):
        await sessions.record_outcome(item.id, staff.id, "施划车位", "物业公司", date(2026, 12, 10), at(11, 25, 10))
    with pytest.raises(NotFound):
        await sessions.record_outcome(item.id, world["street"].id, "施划车位", "物业公司", None, at(11, 26, 19))
    await sessions.record_outcome(item.id, staff.id, "物业在东侧空地施划20个车位", "物业公司", date(2026, 12, 10),
                                  at(11, 26, 19))
    case = await Case.get(id=big.id)
    assert (case.status, case.level, case.due_at) == (Status.IN_PROGRESS, Level.COMMUNITY, at(12, 10, 23, 59) +
                                                      timedelta(seconds=59))
    assert case.accepted_at == at(11, 26, 19)
    assert (await DeliberationSession.get(id=item.session_id)).held_at == at(11, 26, 19)  # type: ignore[attr-defined]
    outcome = await CaseEvent.get(case_id=big.id, kind=EventKind.OUTCOME)
    assert outcome.public and outcome.data["owner"] == "物业公司" and outcome.data["due"] == "2026-12-10"
    assert await DueAction.filter(action="case.deadline", target=f"case:{big.id}",
                                  status=ActionStatus.PENDING).count() == 1
    for openid in ("oa-s-0", "oa-s-1", "oa-s-2"):  # the reporter and both joiners
        told = [t for t in await pushed_to(openid) if "议定" in t]
        assert len(told) == 1 and "物业在东侧空地施划20个车位" in told[0] and "12月10日" in told[0], openid
    # the frozen clock passes the outcome's date: the sub-district takes it over
    await sweep_due(at(12, 10, 23))
    assert (await Case.get(id=big.id)).level == Level.COMMUNITY
    await sweep_due(at(12, 11, 0, 1))
    case = await Case.get(id=big.id)
    assert (case.level, case.status, case.missed_deadlines) == (Level.SUB_DISTRICT, Status.OPEN, 1)
    assert any("超过办理期限" in t for t in await pushed_to("demo-street"))
    assert any("街道" in t for t in await pushed_to("oa-s-1"))


async def test_an_outcome_without_a_date_gets_the_communitys_outcome_days(world: dict[str, Any]) -> None:
    big = await report_case(reporter=world["people"][0], category="parking", description="车位", now=at(11, 23, 10))
    item = await AgendaItem.get(case_id=big.id)
    now = at(11, 26, 19)
    await sessions.record_outcome(item.id, world["staff"].id, "下次议事会再议", "社区居委会", None, now)
    rules = await cases.rules_of(world["mijia"].id)
    assert (await Case.get(id=big.id)).due_at == cases.deadline(now, rules.outcome_days, rules)
    with pytest.raises(UserFacingError, match="一年以内"):
        await sessions.record_outcome(item.id, world["staff"].id, "改期", "社区", date(2026, 11, 1), now)


async def test_the_friday_roundup_lists_the_weeks_resolved_cases_once(world: dict[str, Any], db: Config) -> None:
    a, b, _ = world["people"]
    prop, mediator = world["property"].id, world["mediator"].id
    last_week = await report_case(reporter=a, category="greenery", description="树枝挡窗", now=at(11, 18, 9))
    await cases.resolve(last_week.id, prop, "已修剪树枝", at(11, 20, 10))
    light = await report_case(reporter=a, category="lighting", description="我家门口201的灯坏了", now=at(11, 23, 9))
    water = await report_case(reporter=b, category="water", description="下水道堵了", now=at(11, 23, 9),
                              photos=[{"media_id": "m2", "pic_url": "http://x/2.jpg"}])
    private = await report_case(reporter=b, category="dispute", description="和邻居吵架", now=at(11, 23, 9))
    late = await report_case(reporter=b, category="sanitation", description="垃圾没清", now=at(11, 23, 9))
    await cases.resolve(light.id, prop, "已更换楼道灯泡", at(11, 24, 10))
    await cases.resolve(water.id, prop, "已疏通下水管道", at(11, 25, 10))
    await cases.resolve(private.id, mediator, "双方已和解", at(11, 25, 11))
    await cases.feedback(light.id, a.id, cases.Fixed.YES, at(11, 25, 12), rating=5)  # closed counts too

    assert await run_roundup(at(11, 26, 17, 5), TIMES) == {"roundups": 0}  # Thursday
    assert await run_roundup(at(11, 27, 16, 55), TIMES) == {"roundups": 0}  # before 17:00
    clock = FrozenClock(at(11, 27, 17, 5))
    first, second = service_scheduler(db, clock), service_scheduler(db, clock)
    await asyncio.gather(first.run_due(ROUNDUP_JOB), second.run_due(ROUNDUP_JOB), first.run(ROUNDUP_JOB))
    notice = await Notice.get(kind=NoticeKind.ROUNDUP)  # one, for 米家社区 (新邱社区 resolved nothing)
    assert notice.title == "周五圆梦：本周办结2件"
    [text] = [t for t in await pushed_to("oa-s-2") if "圆梦" in t]
    assert "本周（11月20日至11月27日）" in text  # since last Friday's roundup
    assert "1. 照明·1号楼：已更换楼道灯泡" in text and "2. 下水与供水·1号楼：已疏通下水管道" in text
    for secret in ("双方已和解", "邻里纠纷", "已修剪树枝", "201", "下水道堵了", "2.jpg", "甲居民", "乙居民"):
        assert secret not in text, secret
    # resolved after the roundup went out: no second roundup this week, but next Friday's has it
    await cases.resolve(late.id, prop, "已清运", at(11, 27, 17, 20))
    assert await run_roundup(at(11, 27, 17, 30), TIMES) == {"roundups": 0}
    assert await run_roundup(at(12, 4, 17, 5), TIMES) == {"roundups": 1}
    following = await Notice.filter(kind=NoticeKind.ROUNDUP).order_by("-id").first()
    assert following is not None and "环境卫生·1号楼：已清运" in following.text and "已更换" not in following.text
    # a week with nothing resolved has none; the next one has its own
    assert await run_roundup(at(12, 11, 17, 5), TIMES) == {"roundups": 0}
    again = await report_case(reporter=a, category="lift", description="电梯异响", now=at(12, 14, 9))
    await cases.resolve(again.id, prop, "已检修电梯", at(12, 15, 9))
    assert await run_roundup(at(12, 18, 17, 5), TIMES) == {"roundups": 1}
    newest = await Notice.filter(kind=NoticeKind.ROUNDUP).order_by("-id").first()
    assert newest is not None and "电梯·1号楼：已检修电梯" in newest.text and "已更换" not in newest.text


# ---------------------------------------------------------------------------- chat and API

STAFF = "demo-staff"  # 周社工, community staff of 米家社区


@pytest.mark.usefixtures("demo")
async def test_staff_run_the_session_in_chat_and_residents_read_its_agenda(wechat: Any, clock: FrozenClock) -> None:
    a, b, c = await residents_of_building_1(clock.now())
    big = await report_case(reporter=a, category="parking", description="车位不够", now=clock.now())
    await cases.join_case(big.id, c, clock.now())
    small = await report_case(reporter=b, category="lighting", description="楼道灯坏了", now=clock.now())
    replies: list[str] = []

    async def say(openid: str, text: str) -> str:
        replies.append(await wechat.say(openid, text))
        return replies[-1]

    menu = await say(STAFF, "议事会")
    assert "12月6日（周日）议事会（红色议事亭）议题1项" in menu and f"停车·1号楼 编号{big.id}（2人）" in menu
    assert "1. 添加议题" in menu and "2. 撤下议题" in menu
    assert "编号" in await say(STAFF, "1")
    assert "数字" in await say(STAFF, "灯")
    assert "照明·1号楼" in await say(STAFF, str(small.id))
    assert "已把编号" in await say(STAFF, "多户反映楼道太黑") and "12月6日（周日）" in replies[-1]
    public = await say("oa-s-2", "议程")  # a resident: the public agenda
    assert "1. 停车·1号楼\n2. 照明·1号楼" in public and "楼道灯坏了" not in public and "编号" not in public

    await say(STAFF, "议事会")
    picked = await say(STAFF, "2")  # 撤下议题
    assert "撤下哪一项" in picked and f"2. 照明·1号楼 编号{small.id}" in picked
    await say(STAFF, "2")
    assert "确认" in await say(STAFF, "物业已答复三天内修好")
    assert "已撤下" in await say(STAFF, "是")
    assert any("撤下" in t for t in await pushed_to("oa-s-1"))

    clock.set(at(12, 6, 19))  # the evening of the session
    menu = await say(STAFF, "议事会")
    assert "3. 记录12月6日（周日）议定结果（1项待记录）" in menu and "4. 12月6日（周日）议事会已召开" in menu
    assert "记录哪一项" in await say(STAFF, "3")
    await say(STAFF, "1")
    await say(STAFF, "物业在东侧空地施划20个车位")
    await say(STAFF, "物业公司")
    assert "12月20日（周日）" in await say(STAFF, "12月20日")
    assert "已记录" in await say(STAFF, "是")
    case = await Case.get(id=big.id)
    assert case.status == Status.IN_PROGRESS and case.due_at == at(12, 20, 23, 59) + timedelta(seconds=59)
    assert any("议定" in t for t in await pushed_to("oa-s-2"))  # a joiner hears it too
    assert "还没有议题" in await say("oa-s-0", "议事会")  # the 6th is held: the 16th has nothing yet
    assert all(len(reply) <= 300 for reply in replies), [r for r in replies if len(r) > 300]


@pytest.mark.usefixtures("demo")
async def test_sessions_through_the_api(client: Any, clock: FrozenClock) -> None:
    from tests.test_api import staff_session

    a, _, _ = await residents_of_building_1(clock.now())
    big = await report_case(reporter=a, category="parking", description="车位不够", now=clock.now())
    small = await report_case(reporter=a, category="lighting", description="楼道灯坏了", now=clock.now())
    private = await report_case(reporter=a, category="dispute", description="邻居吵架", now=clock.now())
    staff = await staff_session(client, "mp-staff", "13904180003")
    elder = await staff_session(client, "mp-elder", "13904180011")  # 王秀兰, a resident of 米家社区
    mijia = (await Community.get(name="米家社区")).id

    listed = await staff.call("GET", f"/communities/{mijia}/sessions")
    assert listed.status == 200 and listed.body["recent"] == []
    [coming] = listed.body["upcoming"]
    assert (coming["day"], coming["place"]) == ("2026-12-06", "红色议事亭")
    assert [i["case_id"] for i in coming["items"]] == [big.id] and coming["items"][0]["reason"] == "big"
    assert (await elder.call("GET", f"/communities/{mijia}/sessions")).status == 404

    path = f"/sessions/{coming['id']}/items"
    added = await staff.call("POST", path, {"case_id": small.id, "reason": "多户反映"})
    assert added.status == 201 and added.body["reason"] == "staff" and added.body["note"] == "多户反映"
    assert (await staff.call("POST", path, {"case_id": small.id, "reason": "再加"})).status == 409
    assert (await staff.call("POST", path, {"case_id": private.id, "reason": "加"})).status == 409
    assert (await staff.call("POST", path, {"case_id": small.id, "reason": "x" * 101})).status == 422
    assert (await staff.call("POST", path, {"case_id": str(small.id), "reason": "加"})).status == 422
    assert (await elder.call("POST", path, {"case_id": small.id, "reason": "加"})).status == 404

    public = await elder.call("GET", f"/communities/{mijia}/sessions/next")
    assert public.status == 200 and public.body["day"] == "2026-12-06"
    assert public.body["items"] == [
        {"case_id": big.id, "category_label": "停车", "building": "1号楼", "joins": 0},
        {"case_id": small.id, "category_label": "照明", "building": "1号楼", "joins": 0}]

    item_id = added.body["id"]
    dropped = await staff.call("POST", f"/agenda-items/{item_id}/drop", {"reason": "物业已修好"})
    assert dropped.status == 200 and dropped.body["dropped_reason"] == "物业已修好"
    assert (await staff.call("POST", f"/agenda-items/{item_id}/drop", {"reason": "再撤"})).status == 409

    big_item = coming["items"][0]["id"]
    outcome = {"text": "施划20个车位", "owner": "物业公司", "due": "2026-12-20"}
    early = await staff.call("POST", f"/agenda-items/{big_item}/outcome", outcome)
    assert early.status == 409 and "开会后" in early.body["message"]
    clock.set(at(12, 6, 19))
    no_such_day = await staff.call("POST", f"/agenda-items/{big_item}/outcome", outcome | {"due": "2026-02-30"})
    assert no_such_day.status == 409
    recorded = await staff.call("POST", f"/agenda-items/{big_item}/outcome", outcome)
    assert recorded.status == 200 and recorded.body["outcome"]["due"] == "2026-12-20"
    assert recorded.body["status"] == Status.IN_PROGRESS
    held = await staff.call("POST", f"/sessions/{coming['id']}/held")
    assert held.status == 200 and held.body["held_at"] is not None
    listed = await staff.call("GET", f"/communities/{mijia}/sessions")
    assert listed.body["upcoming"] == [] and listed.body["recent"][0]["dropped"][0]["id"] == item_id
