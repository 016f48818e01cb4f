"""Activities in the model: publishing at a frozen rate, places within the slots (also under
concurrency on PostgreSQL), check-in windows and codes, settlement by the due-action sweep with the
frozen clock, ticks, declared hours confirmed or rejected, and the points in the ledger — no app around it."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from models.activities import (
    Activity,
    ActivityStatus,
    CheckIn,
    HoursStatus,
    Signup,
    SignupStatus,
    cancel,
    check_in,
    check_in_by_code,
    check_in_scene,
    declare_hours,
    parse_minutes,
    parse_when,
    points_for,
    publish,
    review_hours,
    settle,
    sign_up,
    tick,
    withdraw,
)
from models.demo import load_demo
from models.errors import Forbidden, NotFound, UserFacingError
from models.jobs import DueAction, sweep_due
from models.ledger import AccountKind, Asset, Entry, Source, account, balance, check_books, points_of
from models.love_bank import save_settings
from models.outbox import OutboxMessage
from models.places import Building, Community
from models.residents import Resident, WechatAccount
from models.roles import Role, grant
from tests.conftest import NEEDS_SERVERS, REAL_SERVERS

SHANGHAI = ZoneInfo("Asia/Shanghai")
pytestmark = pytest.mark.usefixtures("db")
NOW = datetime(2026, 11, 27, 9, 0, tzinfo=SHANGHAI)  # Friday 09:00
START = datetime(2026, 11, 28, 9, 0, tzinfo=SHANGHAI)  # Saturday 09:00-11:30
END = START + timedelta(hours=2, minutes=30)


@pytest.fixture
async def people() -> dict[str, Resident]:
    await load_demo(NOW)
    out = {name: await Resident.get(name=name) for name in ("孙志愿", "吴组织", "周社工", "王秀兰", "张德福")}
    building = await Building.get(name="1号楼")
    for i in range(3):
        person = await Resident.create(name=f"志愿者{i}", mobile=f"1397777000{i}", community_id=building.community_id,  # type: ignore[attr-defined]
                                       building=building, unit="1", room=f"10{i}", created_at=NOW)
        await WechatAccount.create(openid=f"oa-vol-{i}", channel="oa", resident=person, created_at=NOW)
        out[f"志愿者{i}"] = person
    return out


async def _publish(organiser: Resident, *, slots: int = 10, kind: str = "elder_care", start: datetime = START,
                   end: datetime = END, now: datetime = NOW) -> Activity:
    return await publish(community_id=organiser.community_id, organiser_id=organiser.id, title="敬老院陪老人聊天",  # type: ignore[attr-defined]
                         kind=kind, place="米家社区养老服务站", starts_at=start, ends_at=end, slots=slots, now=now,
                         description="陪老人聊天、读报")


async def _pushed(resident: Resident) -> list[str]:
    openids = await WechatAccount.filter(resident_id=resident.id).values_list("openid", flat=True)
    rows = await OutboxMessage.filter(openid__in=list(openids)).order_by("id")
    return [str(r.payload.get("content", "")) for r in rows]


async def _points(resident: Resident) -> int:
    return await balance(await points_of(resident.id, NOW))


# ---------------------------------------------------------------------------- rules in words


def test_points_are_minutes_times_rate_over_60_rounded_half_up() -> None:
    assert points_for(150, 10) == 25
    assert points_for(90, 5) == 8  # 7.5
    assert points_for(100, 5) == 8  # 8.33
    assert points_for(5, 5) == 0  # 0.42
    assert points_for(60, 0) == 0


def test_typed_durations_and_times() -> None:
    assert parse_minutes("2小时") == 120
    assert parse_minutes("1小时30分钟") == 90
    assert parse_minutes("90分钟") == 90
    assert parse_minutes("1.5小时") == 90
    with pytest.raises(UserFacingError, match="单位"):
        parse_minutes("2")
    today = NOW.date()
    assert parse_when("12月5日 09:00-11:30", today) == (datetime(2026, 12, 5).date(), "09:00", "11:30")
    assert parse_when("2026-12-05 9:00－11:30".replace("－", "-"), today)[1] == "09:00"
    assert parse_when("明天 14:00-16:00", today) == (datetime(2026, 11, 28).date(), "14:00", "16:00")
    assert parse_when("1月3日 09:00-10:00", today)[0].year == 2027  # a date passed this year is next year's
    with pytest.raises(UserFacingError, match="格式"):
        parse_when("下周六上午", today)


# ---------------------------------------------------------------------------- publishing


async def test_an_activity_keeps_the_rate_it_was_published_with(people: dict[str, Resident]) -> None:
    organiser = people["吴组织"]
    first = await _publish(organiser)
    assert first.points_per_hour == 10 and len(first.checkin_code) == 6 and first.checkin_code.isdigit()
    await save_settings(organiser.community_id, now=NOW, actor_id=None, rates={"elder_care": 20})  # type: ignore[attr-defined]
    second = await _publish(organiser)
    assert (await Activity.get(id=first.id)).points_per_hour == 10
    assert second.points_per_hour == 20
    # its hours are settled at its end by a due action
    settles = await DueAction.filter(action="activity.settle", target=f"activity:{first.id}")
    assert [row.due_at for row in settles] == [END]


async def test_only_organisers_and_staff_of_the_community_publish(people: dict[str, Resident]) -> None:
    with pytest.raises(Forbidden):
        await _publish(people["孙志愿"])  # a volunteer
    xinqiu = await Community.get(name="新邱社区")
    outsider = await Resident.create(name="外社区组织者", mobile="13977770100", community=xinqiu, created_at=NOW)
    await grant(resident_id=outsider.id, role=Role.ORGANISER, scope_id=xinqiu.id, now=NOW)
    with pytest.raises(Forbidden):
        await publish(community_id=people["吴组织"].community_id, organiser_id=outsider.id, title="x", kind="other",  # type: ignore[attr-defined]
                      place="x", starts_at=START, ends_at=END, slots=1, now=NOW)
    assert (await _publish(people["周社工"])).organiser_id == people["周社工"].id  # community staff may


@pytest.mark.parametrize(("change", "message"), [
    ({"start": NOW - timedelta(hours=1)}, "已经过了"),
    ({"end": START}, "晚于开始"),
    ({"end": START + timedelta(hours=12, minutes=1)}, "最长12小时"),
    ({"slots": 0}, "名额"),
    ({"slots": 501}, "名额"),
])
async def test_a_bad_activity_is_refused_with_the_reason_and_nothing_is_made(
        people: dict[str, Resident], change: dict[str, object], message: str) -> None:
    with pytest.raises(UserFacingError, match=message):
        await _publish(people["吴组织"], **change)  # type: ignore[arg-type]
    assert await Activity.all().count() == 0


# ---------------------------------------------------------------------------- places


async def test_places_within_the_slots_withdraw_frees_one_and_twice_is_once(people: dict[str, Resident]) -> None:
    activity = await _publish(people["吴组织"], slots=2)
    a, b, c = people["志愿者0"], people["志愿者1"], people["志愿者2"]
    first, new = await sign_up(activity.id, a, NOW)
    again, new_again = await sign_up(activity.id, a, NOW)
    assert new and not new_again and again.id == first.id
    await sign_up(activity.id, b, NOW)
    with pytest.raises(UserFacingError, match="报满"):
        await sign_up(activity.id, c, NOW)
    await withdraw(activity.id, a.id, NOW)
    await withdraw(activity.id, a.id, NOW)  # twice is once
    await sign_up(activity.id, c, NOW)
    assert await Signup.filter(activity_id=activity.id, status=SignupStatus.SIGNED).count() == 2
    with pytest.raises(UserFacingError, match="报满"):
        await sign_up(activity.id, a, NOW)  # coming back needs a free place too
    with pytest.raises(UserFacingError, match="已经开始"):
        await withdraw(activity.id, b.id, START)
    xinqiu = await Community.get(name="新邱社区")
    stranger = await Resident.create(name="外社区居民", mobile="13977770101", community=xinqiu, created_at=NOW)
    with pytest.raises(NotFound):
        await sign_up(activity.id, stranger, NOW)


async def test_no_sign_up_after_the_start_or_on_a_cancelled_activity(people: dict[str, Resident]) -> None:
    activity = await _publish(people["吴组织"])
    with pytest.raises(UserFacingError, match="已经开始"):
        await sign_up(activity.id, people["志愿者0"], START)
    await sign_up(activity.id, people["孙志愿"], NOW)
    await cancel(activity.id, people["吴组织"].id, "天气预报有大雪", NOW, SHANGHAI)
    assert (await Activity.get(id=activity.id)).status == ActivityStatus.CANCELLED
    with pytest.raises(UserFacingError, match="取消"):
        await sign_up(activity.id, people["志愿者0"], NOW)
    assert any("已取消" in text and "天气预报有大雪" in text for text in await _pushed(people["孙志愿"]))
    assert not await DueAction.filter(action="activity.settle", status="pending").exists()


@pytest.mark.skipif(not REAL_SERVERS, reason=NEEDS_SERVERS)
async def test_concurrent_sign_ups_never_exceed_the_slots(people: dict[str, Resident]) -> None:
    activity = await _publish(people["吴组织"], slots=7)
    building = await Building.get(name="2号楼")
    crowd = [await Resident.create(name=f"抢报{i}", mobile=f"1398888{i:04d}", community_id=building.community_id,  # type: ignore[attr-defined]
                                   building=building, created_at=NOW) for i in range(30)]

    async def attempt(person: Resident) -> bool:
        try:
            await sign_up(activity.id, person, NOW)
            return True
        except UserFacingError:
            return False

    done = await asyncio.gather(*(attempt(p) for p in crowd), *(attempt(crowd[0]) for _ in range(5)))
    assert await Signup.filter(activity_id=activity.id, status=SignupStatus.SIGNED).count() == 7
    assert sum(done[:30]) == 7
    assert await Signup.filter(activity_id=activity.id, resident_id=crowd[0].id).count() <= 1


# ---------------------------------------------------------------------------- check-in and settlement


async def test_check_in_opens_30_minutes_before_and_closes_at_the_end(people: dict[str, Resident]) -> None:
    activity = await _publish(people["吴组织"])
    me = people["孙志愿"]
    await sign_up(activity.id, me, NOW)
    code = activity.checkin_code
    with pytest.raises(UserFacingError, match=r"还没到签到时间.*08:30起"):
        await check_in(activity.id, me.id, code, CheckIn.CODE, START - timedelta(minutes=31), SHANGHAI)
    with pytest.raises(UserFacingError, match="已经结束"):
        await check_in(activity.id, me.id, code, CheckIn.CODE, END + timedelta(seconds=1), SHANGHAI)
    wrong = "000000" if code != "000000" else "111111"
    with pytest.raises(UserFacingError, match="签到码不对"):
        await check_in(activity.id, me.id, wrong, CheckIn.CODE, START, SHANGHAI)
    with pytest.raises(UserFacingError, match="没有报名"):
        await check_in(activity.id, people["志愿者0"].id, code, CheckIn.CODE, START, SHANGHAI)
    with pytest.raises(UserFacingError, match="无法识别"):
        await check_in_scene(f"checkin:{activity.id}", me.id, START, SHANGHAI)
    assert (await Signup.get(activity_id=activity.id, resident_id=me.id)).checked_in_at is None  # nothing changed

    first = await check_in_scene(f"checkin:{activity.id}:{code}", me.id, START - timedelta(minutes=30), SHANGHAI)
    again = await check_in_by_code(code, me.id, START, SHANGHAI)
    assert first.new and not again.new
    signup = await Signup.get(activity_id=activity.id, resident_id=me.id)
    assert signup.checked_in_by == CheckIn.QR and signup.checked_in_at == START - timedelta(minutes=30)


async def test_the_settlement_at_the_end_credits_checked_in_volunteers_once(people: dict[str, Resident]) -> None:
    organiser, me, absent = people["吴组织"], people["孙志愿"], people["志愿者0"]
    activity = await _publish(organiser)
    for person in (me, absent):
        await sign_up(activity.id, person, NOW)
    await check_in_by_code(activity.checkin_code, me.id, START, SHANGHAI)
    assert (await sweep_due(END - timedelta(minutes=1)))["done"] == 0  # not yet
    assert await _points(me) == 0

    assert (await sweep_due(END))["done"] == 1
    assert await _points(me) == 25  # 2.5 hours at 10 points per hour
    assert await _points(absent) == 0
    entry = await Entry.get(key=f"signup:{(await Signup.get(resident_id=me.id)).id}:hours")
    issuing = await account(Asset.POINTS, AccountKind.ISSUING, activity.community_id, NOW)
    assert (entry.source, entry.ref, entry.memo, entry.actor_id) == (Source.ACTIVITY, f"activity:{activity.id}",
                                                                      "敬老院陪老人聊天", None)
    assert entry.from_account_id == issuing.id
    signup = await Signup.get(resident_id=me.id)
    assert (signup.hours_status, signup.minutes, signup.entry_id) == (HoursStatus.CONFIRMED, 150, entry.id)
    assert "服务时长已确认：2小时30分钟，获得25积分" in "\n".join(await _pushed(me))

    assert await settle(activity.id, END + timedelta(hours=1)) == 0  # a second run changes nothing
    assert await Entry.filter(source=Source.ACTIVITY).count() == 1
    assert await check_books() == {Asset.POINTS: 0, Asset.FEN: 0}


async def test_a_tick_after_the_end_credits_at_once_with_the_organiser_as_actor(people: dict[str, Resident]) -> None:
    organiser, me = people["吴组织"], people["孙志愿"]
    activity = await _publish(organiser)
    signup, _ = await sign_up(activity.id, me, NOW)
    with pytest.raises(UserFacingError, match="还没开始"):
        await tick(activity.id, signup.id, organiser.id, True, NOW)
    await settle(activity.id, END)  # nobody was checked in
    ticked = await tick(activity.id, signup.id, organiser.id, True, END + timedelta(hours=2))
    assert ticked.hours_status == HoursStatus.CONFIRMED and ticked.checked_in_by == CheckIn.LIST
    assert await _points(me) == 25
    assert (await Entry.get(source=Source.ACTIVITY)).actor_id == organiser.id
    await tick(activity.id, signup.id, organiser.id, True, END + timedelta(hours=3))  # twice is once
    assert await _points(me) == 25
    with pytest.raises(UserFacingError, match="不能取消签到"):
        await tick(activity.id, signup.id, organiser.id, False, END + timedelta(hours=3))


async def test_an_organiser_of_another_community_cannot_tick(people: dict[str, Resident]) -> None:
    activity = await _publish(people["吴组织"])
    signup, _ = await sign_up(activity.id, people["孙志愿"], NOW)
    xinqiu = await Community.get(name="新邱社区")
    outsider = await Resident.create(name="外社区组织者", mobile="13977770100", community=xinqiu, created_at=NOW)
    await grant(resident_id=outsider.id, role=Role.ORGANISER, scope_id=xinqiu.id, now=NOW)
    with pytest.raises(NotFound):
        await tick(activity.id, signup.id, outsider.id, True, START)
    # another organiser of the same community manages only their own activities; community staff all
    colleague = people["志愿者0"]
    await grant(resident_id=colleague.id, role=Role.ORGANISER, scope_id=activity.community_id, now=NOW)
    with pytest.raises(NotFound):
        await tick(activity.id, signup.id, colleague.id, True, START)
    assert (await tick(activity.id, signup.id, people["周社工"].id, True, START)).checked_in_at == START
    assert (await tick(activity.id, signup.id, people["周社工"].id, False, START)).checked_in_at is None


# ---------------------------------------------------------------------------- declared hours


async def test_declared_hours_wait_for_the_organiser_and_confirming_credits_them(people: dict[str, Resident]) -> None:
    organiser, me = people["吴组织"], people["孙志愿"]
    activity = await _publish(organiser)
    signup, _ = await sign_up(activity.id, me, NOW)
    with pytest.raises(UserFacingError, match="开始后"):
        await declare_hours(activity.id, me.id, 60, "提前到了", NOW)
    with pytest.raises(UserFacingError, match="6小时30分钟"):  # the span plus 4 hours
        await declare_hours(activity.id, me.id, 391, "一直在", END)
    declared = await declare_hours(activity.id, me.id, 180, "没扫上码，9点到12点在现场", END)
    assert (declared.hours_status, declared.minutes) == (HoursStatus.PENDING, 180)
    assert any("申报了" in t and "3小时" in t for t in await _pushed(organiser))
    await settle(activity.id, END)  # a pending declaration is the organiser's to decide
    assert await _points(me) == 0

    confirmed = await review_hours(activity.id, signup.id, organiser.id, True, END + timedelta(hours=1))
    assert confirmed.hours_status == HoursStatus.CONFIRMED and await _points(me) == 30
    again = await review_hours(activity.id, signup.id, organiser.id, True, END + timedelta(hours=2))
    assert again.hours_status == HoursStatus.CONFIRMED and await _points(me) == 30  # once
    with pytest.raises(UserFacingError, match="已经确认"):
        await declare_hours(activity.id, me.id, 200, "再加一点", END + timedelta(hours=3))
    assert (await Entry.get(source=Source.ACTIVITY)).actor_id == organiser.id
    assert await check_books() == {Asset.POINTS: 0, Asset.FEN: 0}


async def test_a_rejection_needs_a_reason_and_tells_the_volunteer(people: dict[str, Resident]) -> None:
    organiser, me, other = people["吴组织"], people["孙志愿"], people["志愿者0"]
    activity = await _publish(organiser)
    mine, _ = await sign_up(activity.id, me, NOW)
    theirs, _ = await sign_up(activity.id, other, NOW)
    await check_in_by_code(activity.checkin_code, other.id, START, SHANGHAI)
    await declare_hours(activity.id, me.id, 150, "我也在", END)
    await declare_hours(activity.id, other.id, 300, "多待了", END)
    with pytest.raises(UserFacingError, match="驳回原因"):
        await review_hours(activity.id, mine.id, organiser.id, False, END, reason=" ")
    rejected = await review_hours(activity.id, mine.id, organiser.id, False, END, reason="签到名单上没有您")
    assert (rejected.hours_status, rejected.hours_note) == (HoursStatus.REJECTED, "签到名单上没有您")
    assert any("没有通过" in t and "签到名单上没有您" in t for t in await _pushed(me))
    assert await _points(me) == 0
    # a volunteer who was checked in keeps the activity's span after a rejection
    await review_hours(activity.id, theirs.id, organiser.id, False, END, reason="最多算活动时间")
    assert await _points(other) == 25
    assert (await Signup.get(id=theirs.id)).hours_status == HoursStatus.CONFIRMED
    # declaring again after a rejection waits again
    assert (await declare_hours(activity.id, me.id, 60, "补充：10点到11点在", END)).hours_status == HoursStatus.PENDING


@pytest.mark.skipif(not REAL_SERVERS, reason=NEEDS_SERVERS)
async def test_concurrent_confirmations_credit_once(people: dict[str, Resident]) -> None:
    organiser, me = people["吴组织"], people["孙志愿"]
    activity = await _publish(organiser)
    signup, _ = await sign_up(activity.id, me, NOW)
    await check_in_by_code(activity.checkin_code, me.id, START, SHANGHAI)
    await declare_hours(activity.id, me.id, 120, "提前走了", START + timedelta(hours=1))
    await asyncio.gather(*(review_hours(activity.id, signup.id, organiser.id, True, END) for _ in range(10)),
                         *(settle(activity.id, END) for _ in range(5)),
                         *(tick(activity.id, signup.id, organiser.id, True, END) for _ in range(5)))
    assert await Entry.filter(source=Source.ACTIVITY).count() == 1
    assert await _points(me) == 20
    assert await check_books() == {Asset.POINTS: 0, Asset.FEN: 0}
