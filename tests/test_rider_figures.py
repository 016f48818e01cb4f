"""先锋骑士 figures (models/rider_figures.py): per meal of a community and period, from routes, stops
and welfare alerts with known times; the spreadsheet; who may read them."""

from __future__ import annotations

import io
import itertools
from datetime import UTC, date, datetime, timedelta
from typing import Any

import openpyxl
import pytest

from models.canteen import Booking, Menu
from models.errors import Forbidden
from models.places import Canteen, Community
from models.residents import Resident
from models.rider_figures import default_community, figures, figures_text, figures_xlsx, may_read, pct
from models.riders import Route, RouteState, RouteStop, StopState, WelfareAlert
from models.roles import Role, grant

pytestmark = pytest.mark.usefixtures("demo")
NOW = datetime(2026, 11, 27, 1, 0, tzinfo=UTC)  # Friday 09:00 in Shanghai
MONDAY, TUESDAY = date(2026, 11, 30), date(2026, 12, 1)
_codes = itertools.count(1)


def local(day: date, hour: int, minute: int = 0) -> datetime:
    """A time of day in Shanghai, in UTC."""
    return datetime(day.year, day.month, day.day, hour, minute, tzinfo=UTC) - timedelta(hours=8)


async def menu(canteen: Canteen, day: date, meal: str) -> Menu:
    """A meal served from 11:00 to 12:30 (lunch) or 17:00 to 18:30 (dinner)."""
    start = 11 if meal == "lunch" else 17
    return await Menu.create(canteen=canteen, day=day, meal=meal, price_fen=1500, capacity=100, state="done",
                             cutoff_at=local(day, start - 2), serve_from_at=local(day, start),
                             serve_until_at=local(day, start + 1, 30), published_at=NOW)


async def route(of: Menu, community: Community, name: str, state: str = RouteState.DONE) -> Route:
    return await Route.create(menu=of, community=community, name=name, depart_at=of.serve_from_at, state=state,
                              created_at=NOW)


async def stop(on: Route, resident: Resident, state: str, marked: datetime | None = None) -> RouteStop:
    """A stop of ``resident`` (a booking of the route's meal made for it) marked ``state`` at ``marked``."""
    booking = await Booking.create(menu_id=on.menu_id, resident=resident, mode="delivery", status="served",
                                   menu_price_fen=1500, price_fen=1500, rule="menu", rule_label="菜单价",
                                   code=f"RF{next(_codes):06d}", created_at=NOW, updated_at=NOW)
    position = await RouteStop.filter(route_id=on.id).count() + 1
    return await RouteStop.create(route=on, booking=booking, resident=resident, position=position, building="5号楼",
                                  state=state, marked_at=marked)


async def alert(at: RouteStop, raised: datetime, closed_after: int | None = None) -> WelfareAlert:
    community_id = await Route.filter(id=at.route_id).first().values_list("community_id", flat=True)
    return await WelfareAlert.create(
        stop=at, resident_id=at.resident_id, community_id=community_id, raised_at=raised,
        closed_at=raised + timedelta(minutes=closed_after) if closed_after is not None else None,
        outcome="平安" if closed_after is not None else "")


async def residents(count: int, community: Community) -> list[Resident]:
    return [await Resident.create(name=f"送餐户{next(_codes)}", community=community, created_at=NOW)
            for _ in range(count)]


async def world() -> dict[str, Any]:
    """米家's routes on Monday (lunch and dinner) and Tuesday (lunch), with a cancelled route and a
    cancelled stop, 新邱's route on Monday and 米家's of the week before (neither counted)."""
    mijia, xinqiu = await Community.get(name="米家社区"), await Community.get(name="新邱社区")
    canteen = await Canteen.get(name="米家社区幸福食堂")
    people = await residents(12, mijia)
    mon_lunch, mon_dinner, tue_lunch = (await menu(canteen, MONDAY, "lunch"), await menu(canteen, MONDAY, "dinner"),
                                        await menu(canteen, TUESDAY, "lunch"))
    # Monday lunch, route A: on time (11:40), exactly at the end (12:30, on time), late (12:31), not home
    # twice (alerts closed after 20 and 40 minutes), a cancelled stop; route B still out: one pending
    a = await route(mon_lunch, mijia, "4号楼、5号楼")
    await stop(a, people[0], StopState.DELIVERED, local(MONDAY, 11, 40))
    await stop(a, people[1], StopState.DELIVERED, local(MONDAY, 12, 30))
    await stop(a, people[2], StopState.DELIVERED, local(MONDAY, 12, 31))
    await alert(await stop(a, people[3], StopState.NOT_HOME, local(MONDAY, 11, 50)), local(MONDAY, 11, 50), 20)
    await alert(await stop(a, people[4], StopState.NOT_HOME, local(MONDAY, 12, 0)), local(MONDAY, 12, 0), 40)
    await stop(a, people[5], StopState.CANCELLED, local(MONDAY, 10, 0))
    b = await route(mon_lunch, mijia, "1号楼", RouteState.CLAIMED)
    await stop(b, people[6], StopState.PENDING)
    cancelled = await route(mon_lunch, mijia, "2号楼", RouteState.CANCELLED)
    await stop(cancelled, people[7], StopState.CANCELLED, local(MONDAY, 10, 0))
    # Monday dinner: one delivered late, one not home whose alert is still open
    c = await route(mon_dinner, mijia, "3号楼")
    await stop(c, people[8], StopState.DELIVERED, local(MONDAY, 18, 45))
    await alert(await stop(c, people[9], StopState.NOT_HOME, local(MONDAY, 17, 30)), local(MONDAY, 17, 30))
    # Tuesday lunch, still open: nothing marked
    d = await route(tue_lunch, mijia, "5号楼", RouteState.OPEN)
    await stop(d, people[10], StopState.PENDING)
    # not counted: 新邱's route of the same lunch, 米家's of the week before
    elsewhere = await route(mon_lunch, xinqiu, "东1栋")
    await stop(elsewhere, (await residents(1, xinqiu))[0], StopState.DELIVERED, local(MONDAY, 11, 30))
    before = await route(await menu(canteen, MONDAY - timedelta(days=7), "lunch"), mijia, "5号楼")
    await stop(before, people[11], StopState.DELIVERED, local(MONDAY - timedelta(days=7), 11, 30))
    return {"mijia": mijia.id, "xinqiu": xinqiu.id}


async def staff_id(name: str) -> int:
    return (await Resident.get(name=name)).id


def line(f: Any) -> tuple[Any, ...]:
    return (f.day, f.meal, f.routes, f.done, f.stops, f.delivered, f.not_home, f.pending, f.on_time, f.on_time_pct,
            f.alerts, f.alerts_closed, f.close_median_minutes)


async def test_figures_per_meal_and_in_all_from_routes_with_known_times() -> None:
    w = await world()
    figs = await figures(await staff_id("周社工"), w["mijia"], MONDAY, TUESDAY)
    assert (figs.community_id, figs.name) == (w["mijia"], "米家社区")
    assert [line(m) for m in figs.meals] == [
        # day, meal, routes, done, stops, delivered, not home, pending, on time, %, alerts, closed, median
        (MONDAY, "lunch", 2, 1, 6, 3, 2, 1, 2, 67, 2, 2, 30),
        (MONDAY, "dinner", 1, 1, 2, 1, 1, 0, 0, 0, 1, 0, None),
        (TUESDAY, "lunch", 1, 0, 1, 0, 0, 1, 0, None, 0, 0, None),
    ]
    assert line(figs.total) == (None, "", 4, 2, 9, 4, 3, 2, 2, 50, 3, 2, 30)
    assert [m.label for m in figs.meals] == ["2026-11-30 午餐", "2026-11-30 晚餐", "2026-12-01 午餐"]
    assert figures_text(figs) == (
        "米家社区 2026-11-30 至 2026-12-01：送餐路线4条（已完成2条），送餐9户次，已送达4户次，不在家3户次，"
        "未标记2户次。\n按时送达2/4户次（50%）。\n"
        "独居老人安全提醒3次，已解除2次，解除用时中位30分钟。")
    # one day: only its meals; the sub-district's staff read 新邱's
    monday = await figures(await staff_id("冯街道"), w["mijia"], MONDAY, MONDAY)
    assert [m.day for m in monday.meals] == [MONDAY, MONDAY] and monday.total.routes == 3
    xinqiu = await figures(await staff_id("冯街道"), w["xinqiu"], MONDAY, MONDAY)
    assert line(xinqiu.total) == (None, "", 1, 1, 1, 1, 0, 0, 1, 100, 0, 0, None)


async def test_an_empty_period_says_so_and_shares_round_half_up() -> None:
    w = await world()
    figs = await figures(await staff_id("周社工"), w["mijia"], date(2026, 11, 1), date(2026, 11, 2))
    assert figs.meals == [] and line(figs.total) == (None, "", 0, 0, 0, 0, 0, 0, 0, None, 0, 0, None)
    assert figures_text(figs) == "米家社区 2026-11-01 至 2026-11-02：还没有送餐路线。"
    assert (pct(1, 8), pct(1, 3), pct(2, 3), pct(0, 0)) == (13, 33, 67, None)
    with pytest.raises(ValueError):
        await figures(await staff_id("周社工"), w["mijia"], TUESDAY, MONDAY)
    with pytest.raises(ValueError):
        await figures(await staff_id("周社工"), w["mijia"], date(2026, 1, 1), date(2027, 1, 2))  # 367 days


async def test_the_spreadsheet_opens_and_holds_a_row_per_meal_and_the_total() -> None:
    w = await world()
    data = figures_xlsx(await figures(await staff_id("陈食堂"), w["mijia"], MONDAY, TUESDAY))
    book = openpyxl.load_workbook(io.BytesIO(data))
    assert book.sheetnames == ["送餐数据"]
    rows = [[c.value for c in row] for row in book["送餐数据"].iter_rows()]
    assert rows[0][0] == "米家社区 先锋骑士送餐数据：2026-11-30 至 2026-12-01"
    assert rows[1][:4] == ["日期", "餐次", "路线", "已完成路线"] and rows[1][-1] == "解除用时中位（分钟）"
    assert rows[2:] == [
        ["2026-11-30", "午餐", 2, 1, 6, 3, 2, 1, 2, 67, 2, 2, 30],
        ["2026-11-30", "晚餐", 1, 1, 2, 1, 1, 0, 0, 0, 1, 0, None],
        ["2026-12-01", "午餐", 1, 0, 1, 0, 0, 1, 0, None, 0, 0, None],
        ["合计", None, 4, 2, 9, 4, 3, 2, 2, 50, 3, 2, 30],  # an empty cell reads None
    ]


async def test_the_communitys_its_canteens_and_the_sub_districts_staff_read_them_and_nobody_else() -> None:
    w = await world()
    xinqiu = await Community.get(name="新邱社区")
    other_canteen = await Canteen.create(name="新邱社区幸福食堂", community=xinqiu)
    cook = await Resident.create(name="吴厨师", community=xinqiu, created_at=NOW)
    await grant(resident_id=cook.id, role=Role.CANTEEN_STAFF, scope_id=other_canteen.id, now=NOW)
    other_staff = await Resident.create(name="吴社工", community=xinqiu, created_at=NOW)
    await grant(resident_id=other_staff.id, role=Role.COMMUNITY_STAFF, scope_id=xinqiu.id, now=NOW)
    for name in ("周社工", "陈食堂", "冯街道"):
        assert await may_read(await staff_id(name), w["mijia"]), name
        assert (await figures(await staff_id(name), w["mijia"], MONDAY, MONDAY)).total.routes == 3
    assert await default_community(await staff_id("周社工")) == w["mijia"]
    assert await default_community(await staff_id("陈食堂")) == w["mijia"]
    assert await default_community(await staff_id("冯街道")) == w["mijia"]  # the first of the sub-district
    assert await default_community(cook.id) == w["xinqiu"]
    assert await default_community(other_staff.id) == w["xinqiu"]
    refused = [await staff_id(n) for n in ("李网格", "孙志愿", "刘桂芳", "骑士小王")] + [cook.id, other_staff.id]
    for viewer in refused:
        with pytest.raises(Forbidden):
            await figures(viewer, w["mijia"], MONDAY, MONDAY)
    for viewer in refused[:4]:
        with pytest.raises(Forbidden):
            await default_community(viewer)
    assert not await may_read(await staff_id("周社工"), 999_999)
    assert await may_read(cook.id, w["xinqiu"]) and not await may_read(cook.id, w["mijia"])
