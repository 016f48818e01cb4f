"""逢六说事 in the model: routing by class, deadlines in working days, escalation by the due-action
sweep with the frozen clock, joins, reopen, rated and unrated closure — no app around it."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from models import cases
from models.cases import (
    AgendaItem,
    Case,
    CaseEvent,
    CaseFollower,
    CaseRules,
    EventKind,
    Fixed,
    Klass,
    Level,
    Status,
    next_session_day,
    report_case,
    save_rules,
)
from models.conversation import PendingPrompt
from models.demo import load_demo
from models.jobs import sweep_due
from models.outbox import OutboxMessage
from models.places import Building, Community
from models.residents import Resident, WechatAccount

SHANGHAI = ZoneInfo("Asia/Shanghai")
pytestmark = pytest.mark.usefixtures("db")
MONDAY = datetime(2026, 11, 23, 10, 0, tzinfo=SHANGHAI)  # a working Monday


@pytest.fixture
async def people() -> dict[str, Resident]:
    await load_demo(MONDAY)
    building = await Building.get(name="1号楼")
    out = {}
    for i, name in enumerate(["甲居民", "乙居民"]):
        out[name] = await Resident.create(name=name, mobile=f"1392222000{i}", community_id=building.community_id,  # type: ignore[attr-defined]
                                          building=building, unit="1", room=f"20{i}", created_at=MONDAY)
        await WechatAccount.create(openid=f"oa-case-{i}", channel="oa", resident=out[name], created_at=MONDAY)
    for openid, name in [("demo-property", "钱物业"), ("demo-grid-1", "李网格"), ("demo-staff", "周社工"),
                         ("demo-mediator", "孔调解"), ("demo-street", "冯街道")]:
        out[openid] = await Resident.get(name=name)
    return out


def test_the_next_session_is_the_coming_6th_16th_or_26th() -> None:
    assert next_session_day(date(2026, 11, 23)) == date(2026, 11, 26)
    assert next_session_day(date(2026, 11, 26)) == date(2026, 12, 6)  # on the day it is held: the next one
    assert next_session_day(date(2026, 12, 27)) == date(2027, 1, 6)  # across the year
    assert next_session_day(date(2026, 12, 5)) == date(2026, 12, 6)


async def test_a_small_case_goes_to_the_property_company_with_the_category_deadline(people) -> None:  # type: ignore[no-untyped-def]
    case = await report_case(reporter=people["甲居民"], category="lighting", description="楼道灯坏了",
                             now=MONDAY.astimezone(SHANGHAI))
    assert (case.klass, case.level, case.status) == (Klass.SMALL, Level.PROPERTY, Status.OPEN)
    # lighting: 3 working days from Monday 10:00 → Thursday 10:00
    assert case.due_at is not None and case.due_at.astimezone(SHANGHAI) == MONDAY + timedelta(days=3)
    told = await OutboxMessage.filter(openid="demo-property")
    assert len(told) == 1 and "楼道灯" not in told[0].payload["content"] and "照明" in told[0].payload["content"]


async def test_a_missed_deadline_escalates_level_by_level_and_tells_everyone(people) -> None:  # type: ignore[no-untyped-def]
    case = await report_case(reporter=people["甲居民"], category="lift", description="电梯停了", now=MONDAY)
    assert case.level == Level.PROPERTY  # lift: 1 working day
    assert (await sweep_due(MONDAY + timedelta(hours=23)))["done"] == 0  # not yet
    await sweep_due(MONDAY + timedelta(days=1, minutes=1))
    case = await Case.get(id=case.id)
    assert (case.level, case.status, case.missed_deadlines, case.escalations) == (Level.GRID, Status.OPEN, 1, 1)
    assert any("第一" not in m.payload["content"] and "网格员" in m.payload["content"]
               for m in await OutboxMessage.filter(openid="oa-case-0"))
    assert await OutboxMessage.filter(openid="demo-grid-1").count() == 1
    # the grid worker accepts but misses its 2 working days too: on to the community
    await cases.accept(case.id, people["demo-grid-1"].id, MONDAY + timedelta(days=1, hours=1))
    await sweep_due(MONDAY + timedelta(days=3, hours=1))
    case = await Case.get(id=case.id)
    assert (case.level, case.missed_deadlines, case.escalations) == (Level.COMMUNITY, 2, 2)
    # escalated to the community on the 26th itself, it goes on the agenda of the next session
    item = await AgendaItem.get(case_id=case.id).prefetch_related("session")
    assert item.reason == "escalated" and item.session.day == date(2026, 12, 6)
    kinds = [e.kind for e in await CaseEvent.filter(case_id=case.id).order_by("id")]
    assert kinds.count(EventKind.ESCALATED) == 2
    assert case.accepted_at is not None  # the first acceptance counts for the figures


async def test_the_top_level_missing_its_deadline_stays_and_is_reminded(people) -> None:  # type: ignore[no-untyped-def]
    case = await report_case(reporter=people["甲居民"], category="dispute", description="楼上漏水不修", now=MONDAY)
    assert (case.klass, case.level) == (Klass.PRIVATE, Level.MEDIATOR)
    await sweep_due(MONDAY + timedelta(days=10))  # mediator (3) → community (3) → the top
    await sweep_due(MONDAY + timedelta(days=20))
    case = await Case.get(id=case.id)
    assert case.level == Level.COMMUNITY and case.missed_deadlines == 2 and case.escalations == 1
    assert not await AgendaItem.filter(case_id=case.id).exists()  # a private matter is never on an agenda
    reminders = [m.payload["content"] for m in await OutboxMessage.filter(openid="demo-staff")]
    assert any("已超过办理期限" in text for text in reminders)


async def test_a_level_nobody_holds_is_skipped(people) -> None:  # type: ignore[no-untyped-def]
    building = await Building.get(name="4号楼")  # 第二网格 has no mediator
    person = await Resident.create(name="丙居民", mobile="13922220009", community_id=building.community_id,  # type: ignore[attr-defined]
                                   building=building, created_at=MONDAY)
    case = await report_case(reporter=person, category="noise", description="夜里装修", now=MONDAY)
    assert case.level == Level.COMMUNITY


async def test_a_big_case_waits_for_the_session_without_a_deadline(people) -> None:  # type: ignore[no-untyped-def]
    case = await report_case(reporter=people["甲居民"], category="parking", description="车位不够", now=MONDAY)
    assert (case.klass, case.level, case.due_at) == (Klass.BIG, Level.COMMUNITY, None)
    item = await AgendaItem.get(case_id=case.id).prefetch_related("session")
    assert item.reason == "big" and item.session.day == date(2026, 11, 26)


async def test_similar_cases_are_offered_and_a_join_raises_priority(people) -> None:  # type: ignore[no-untyped-def]
    first = await report_case(reporter=people["甲居民"], category="water", description="下水道堵了", now=MONDAY)
    await report_case(reporter=people["甲居民"], category="dispute", description="邻居吵架", now=MONDAY)
    b2 = await Building.get(name="2号楼")  # 83 m away
    b4 = await Building.get(name="4号楼")  # 600 m away
    community_id = first.community_id  # type: ignore[attr-defined]
    near = await cases.similar_cases(community_id=community_id, category="water", building_id=b2.id, location=None,
                                     now=MONDAY + timedelta(days=1))
    assert [c.id for c in near] == [first.id]
    assert await cases.similar_cases(community_id=community_id, category="water", building_id=b4.id, location=None,
                                     now=MONDAY) == []
    assert await cases.similar_cases(community_id=community_id, category="water", building_id=None,
                                     location=None, now=MONDAY + timedelta(days=15)) == []  # too old
    assert await cases.similar_cases(community_id=community_id, category="dispute", building_id=b2.id,
                                     location=None, now=MONDAY) == []  # a private case is never offered
    await cases.join_case(first.id, people["乙居民"], MONDAY)
    await cases.join_case(first.id, people["乙居民"], MONDAY)  # twice is one join
    first = await Case.get(id=first.id)
    assert first.joins == 1
    assert await CaseFollower.filter(case_id=first.id).count() == 2
    queue = await cases.queue_of(people["demo-property"].id, MONDAY)
    assert queue[0].id == first.id


async def test_resolve_feedback_reopen_then_rated_closure(people) -> None:  # type: ignore[no-untyped-def]
    reporter, joiner = people["甲居民"], people["乙居民"]
    case = await report_case(reporter=reporter, category="lighting", description="路灯不亮", now=MONDAY)
    await cases.join_case(case.id, joiner, MONDAY)
    handler = people["demo-property"].id
    with pytest.raises(cases.UserFacingError):
        await cases.resolve(case.id, people["demo-grid-1"].id, "已修好", MONDAY)  # not the grid's turn
    await cases.accept(case.id, handler, MONDAY)
    await cases.resolve(case.id, handler, "已更换灯泡", MONDAY + timedelta(hours=2))
    prompts = await PendingPrompt.filter(subject=f"case:{case.id}:feedback")
    assert {p.openid for p in prompts} == {"oa-case-0", "oa-case-1"}
    await cases.feedback(case.id, joiner.id, Fixed.NO, MONDAY + timedelta(hours=3), comment="还是不亮")
    case = await Case.get(id=case.id)
    assert (case.status, case.level, case.reopened, case.resolved_at) == (Status.IN_PROGRESS, Level.PROPERTY, 1, None)
    assert all(p.closed_reason == "withdrawn" for p in await PendingPrompt.filter(subject=f"case:{case.id}:feedback"))
    await cases.resolve(case.id, handler, "更换了线路", MONDAY + timedelta(days=1))
    await cases.feedback(case.id, reporter.id, Fixed.YES, MONDAY + timedelta(days=1, hours=1), rating=5)
    case = await Case.get(id=case.id)
    assert (case.status, case.rating, case.closed_reason, case.resolved_in_time) == (Status.CLOSED, 5, "rated", True)
    with pytest.raises(cases.UserFacingError):
        await cases.feedback(case.id, reporter.id, Fixed.YES, MONDAY + timedelta(days=2), rating=4)


async def test_unanswered_feedback_closes_the_case_unrated(people) -> None:  # type: ignore[no-untyped-def]
    case = await report_case(reporter=people["甲居民"], category="greenery", description="树枝挡窗", now=MONDAY)
    await cases.resolve(case.id, people["demo-property"].id, "已修剪", MONDAY)
    await sweep_due(MONDAY + timedelta(days=6))
    assert (await Case.get(id=case.id)).status == Status.RESOLVED
    await sweep_due(MONDAY + timedelta(days=7, minutes=1))
    case = await Case.get(id=case.id)
    assert (case.status, case.closed_reason, case.rating) == (Status.CLOSED, "unrated", None)


async def test_reclassify_and_per_community_rules(people) -> None:  # type: ignore[no-untyped-def]
    mijia = await Community.get(name="米家社区")
    rules = CaseRules()
    rules.property_days["lighting"] = 1
    rules.working_days = False
    await save_rules(mijia.id, rules, by_id=None, now=MONDAY)
    case = await report_case(reporter=people["甲居民"], category="lighting", description="灯坏", now=MONDAY)
    assert case.due_at == MONDAY + timedelta(days=1)
    with pytest.raises(cases.UserFacingError):
        await cases.reclassify(case.id, people["demo-grid-1"].id, Klass.BIG, "", MONDAY)
    await cases.reclassify(case.id, people["demo-grid-1"].id, Klass.BIG, "涉及全小区改造", MONDAY)
    case = await Case.get(id=case.id)
    assert (case.klass, case.level, case.due_at) == (Klass.BIG, Level.COMMUNITY, None)
    bad = CaseRules()
    bad.chains[Klass.SMALL] = [Level.GRID, Level.GRID]
    with pytest.raises(cases.UserFacingError):
        await save_rules(mijia.id, bad, by_id=None, now=MONDAY)


async def test_who_sees_what(people) -> None:  # type: ignore[no-untyped-def]
    private = await report_case(reporter=people["甲居民"], category="dispute", description="噪音", now=MONDAY)
    small = await report_case(reporter=people["甲居民"], category="lighting", description="灯", now=MONDAY)
    assert await cases.access_of(people["demo-mediator"].id, private) == cases.Access.HANDLER
    assert await cases.access_of(people["demo-staff"].id, private) == cases.Access.HANDLER
    for outsider in ("demo-property", "demo-grid-1", "demo-street", "乙居民"):
        assert await cases.access_of(people[outsider].id, private) is None, outsider
    assert await cases.access_of(people["demo-property"].id, small) == cases.Access.HANDLER
    assert await cases.access_of(people["demo-mediator"].id, small) is None
    await cases.join_case(small.id, people["乙居民"], MONDAY)
    assert await cases.access_of(people["乙居民"].id, small) == cases.Access.FOLLOWER
    with pytest.raises(cases.NotFound):
        await cases.join_case(private.id, people["乙居民"], MONDAY)


async def test_a_reporter_with_a_case_in_hand_keeps_name_and_contact_on_erasure(people) -> None:  # type: ignore[no-untyped-def]
    from models.privacy import erasure_plan

    reporter = people["甲居民"]
    case = await report_case(reporter=reporter, category="lighting", description="灯坏", now=MONDAY)
    assert any("说事" in kept for kept in (await erasure_plan(reporter.id)).kept)
    await cases.resolve(case.id, people["demo-property"].id, "已修好", MONDAY)
    await cases.feedback(case.id, reporter.id, Fixed.YES, MONDAY, rating=4)
    assert not any("说事" in kept for kept in (await erasure_plan(reporter.id)).kept)
