"""先锋骑士 with the frozen clock: routes built at the cut-off across buildings and meals (walking
order, diet notes, neighbouring buildings merged up to max_stops), the claim race, delivered and
not-home stops, the welfare alert in quiet hours and its closing, the unclaimed-route alert, the
points credited once, and a booking cancelled after the cut-off."""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest

from bot.clock import FrozenClock
from models import rider_core
from models.canteen import Booking, BookingStatus, Menu, Mode
from models.canteen_booking import book, cancel, publish_menu, run_cutoff, run_meal_end, set_diner
from models.canteen_wallet import top_up
from models.demo import load_demo
from models.errors import NotFound, UserFacingError
from models.jobs import DueAction, sweep_due
from models.ledger import Asset, Entry, balance, check_books, points_of
from models.outbox import OutboxMessage, Priority
from models.places import Building, Canteen, Community
from models.proxies import ProxyLink, ProxyStatus
from models.residents import Mobility, Resident, WechatAccount
from models.riders import Route, RouteState, RouteStop, StopState, WelfareAlert
from models.roles import Role, grant

pytestmark = pytest.mark.usefixtures("db")
NOW = datetime(2026, 11, 27, 2, 0, tzinfo=UTC)  # 周五 10:00 in Shanghai
MONDAY = date(2026, 11, 30)
BREAKFAST_CUTOFF = datetime(2026, 11, 29, 9, 0, tzinfo=UTC)  # 周日 17:00
LUNCH_CUTOFF = datetime(2026, 11, 30, 1, 30, tzinfo=UTC)  # 周一 09:30
LUNCH_FROM = datetime(2026, 11, 30, 3, 0, tzinfo=UTC)  # 11:00
DINNER_CUTOFF = datetime(2026, 11, 30, 6, 0, tzinfo=UTC)  # 14:00
DINNER_FROM = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)  # 17:00
DISHES = [{"name": "清蒸鱼", "marks": ["soft", "low_salt"]}, {"name": "炒青菜", "marks": []}]

# name, building, unit, room: delivery diners of 米家社区 besides the demo's 刘桂芳 (5号楼1单元201, lives alone)
DINERS = [
    ("甲大爷", "1号楼", "2", "502"),
    ("乙奶奶", "1号楼", "1", "301"),
    ("丙爷爷", "1号楼", "1", "102"),
    ("丁奶奶", "2号楼", "1", "201"),
    ("戊大爷", "4号楼", "1", "601"),
    ("己奶奶", "5号楼", "2", "101"),
]


@pytest.fixture
async def w() -> dict[str, int]:
    """The demo (its canteen, 陈食堂, the grid workers, the rider 骑士小王), a second rider, six
    delivery diners in four buildings plus 刘桂芳, and her daughter as her family proxy."""
    await load_demo(NOW)
    mijia = await Community.get(name="米家社区")
    ids = {"canteen": (await Canteen.get(name="米家社区幸福食堂")).id, "mijia": mijia.id}
    for name in ("陈食堂", "周社工", "李网格", "赵网格", "骑士小王", "刘桂芳", "孙志愿"):
        ids[name] = (await Resident.get(name=name)).id
    second = await Resident.create(name="骑士小李", mobile="13900000901", community_id=mijia.id, created_at=NOW)
    await grant(resident_id=second.id, role=Role.RIDER, scope_id=mijia.id, now=NOW, by_label="test")
    await WechatAccount.create(openid="oa-骑士小李", channel="oa", resident_id=second.id, created_at=NOW)
    ids["骑士小李"] = second.id
    for n, (name, bname, unit, room) in enumerate(DINERS):
        building = await Building.get(name=bname, community_id=mijia.id)
        person = await Resident.create(name=name, mobile=f"139000009{n + 10}", community_id=mijia.id,
                                       building_id=building.id, unit=unit, room=room,
                                       mobility=Mobility.NEEDS_DELIVERY, created_at=NOW)
        await WechatAccount.create(openid=f"oa-{name}", channel="oa", resident_id=person.id, created_at=NOW)
        ids[name] = person.id
    await Resident.filter(id=ids["刘桂芳"]).update(mobility=Mobility.NEEDS_DELIVERY)
    daughter = await Resident.create(name="刘女儿", mobile="13900000920", community_id=mijia.id, created_at=NOW)
    await WechatAccount.create(openid="oa-刘女儿", channel="oa", resident_id=daughter.id, created_at=NOW)
    await ProxyLink.create(proxy_id=daughter.id, elder_id=ids["刘桂芳"], relation="子女",
                           status=ProxyStatus.ACTIVE, requested_at=NOW, decided_at=NOW, confirmed_how="staff")
    ids["刘女儿"] = daughter.id
    for name in [d[0] for d in DINERS] + ["刘桂芳", "孙志愿"]:
        await top_up(canteen_id=ids["canteen"], resident_id=ids[name], amount_fen=100_00, method="cash",
                     receipt_no=f"R-{name}", by_id=ids["陈食堂"], now=NOW)
    await set_diner(resident_id=ids["甲大爷"], by_id=ids["陈食堂"], now=NOW, diet="软食,低盐", allergies="花生")
    await set_diner(resident_id=ids["刘桂芳"], by_id=ids["陈食堂"], now=NOW, diet="低糖")
    return ids


async def menu_of(w: dict[str, int], meal: str) -> Menu:
    menu, _ = await publish_menu(canteen_id=w["canteen"], day=MONDAY, meal=meal, dishes=DISHES, price_fen=1200,
                                 by_id=w["陈食堂"], now=NOW)
    return menu


async def deliver(w: dict[str, int], menu: Menu, names: list[str]) -> dict[str, Booking]:
    return {name: await book(menu_id=menu.id, resident_id=w[name], by_id=w[name], mode=Mode.DELIVERY, now=NOW)
            for name in names}


async def lunch_routes(w: dict[str, int], names: list[str] | None = None) -> tuple[Menu, list[Route]]:
    menu = await menu_of(w, "lunch")
    await deliver(w, menu, names or [d[0] for d in DINERS] + ["刘桂芳"])
    await book(menu_id=menu.id, resident_id=w["孙志愿"], by_id=w["孙志愿"], mode=Mode.DINE_IN, now=NOW)
    assert await run_cutoff(menu.id, LUNCH_CUTOFF)
    return menu, await Route.filter(menu_id=menu.id).order_by("position")


async def layout(route: Route) -> list[tuple[str, str, int, str, str]]:
    return [(s.building, s.unit, s.floor, s.room, s.resident.name) for s in await rider_core.stops_of(route.id)]


async def texts(openid: str) -> list[str]:
    return [str(m.payload.get("content", "")) for m in await OutboxMessage.filter(openid=openid).order_by("id")]


async def route_named(menu: Menu, name: str) -> Route:
    return await Route.get(menu_id=menu.id, name=name)


async def claimed(w: dict[str, int], route: Route, rider: str = "骑士小王") -> Route:
    return await rider_core.claim(route.id, w[rider], LUNCH_FROM)


# ---------------------------------------------------------------------------- settings


async def test_settings_default_and_name_a_bad_value(w: dict[str, int]) -> None:
    assert await rider_core.settings_of(w["mijia"]) == rider_core.Settings(w["mijia"], "route", 10, 8, 0)
    bad: list[tuple[str, Any]] = [("points_by", "hour"), ("points", -1), ("max_stops", 0), ("depart_minutes", 999),
                                  ("points", True)]
    for field, value in bad:
        with pytest.raises(ValueError, match=field):
            await rider_core.save_settings(w["mijia"], now=NOW, actor_id=w["周社工"], **{field: value})
    saved = await rider_core.save_settings(w["mijia"], now=NOW, actor_id=w["周社工"], points_by="stop", points=3)
    assert saved == rider_core.Settings(w["mijia"], "stop", 3, 8, 0)
    saved = await rider_core.save_settings(w["mijia"], now=NOW, actor_id=w["周社工"], depart_minutes=15)
    assert (saved.points_by, saved.points, saved.depart_minutes) == ("stop", 3, 15)
    with pytest.raises(NotFound):
        await rider_core.save_settings(999_999, now=NOW, actor_id=None, points=1)


# ---------------------------------------------------------------------------- building routes


async def test_the_cutoff_builds_routes_by_grid_in_walking_order_with_diet_notes(w: dict[str, int]) -> None:
    menu, routes = await lunch_routes(w)
    assert [(r.position, r.name, r.state, r.depart_at) for r in routes] == [
        (1, "1号楼、2号楼", RouteState.OPEN, LUNCH_FROM), (2, "4号楼、5号楼", RouteState.OPEN, LUNCH_FROM)]
    assert await layout(routes[0]) == [
        ("1号楼", "1", 1, "102", "丙爷爷"), ("1号楼", "1", 3, "301", "乙奶奶"), ("1号楼", "2", 5, "502", "甲大爷"),
        ("2号楼", "1", 2, "201", "丁奶奶")]
    assert await layout(routes[1]) == [
        ("4号楼", "1", 6, "601", "戊大爷"), ("5号楼", "1", 2, "201", "刘桂芳"), ("5号楼", "2", 1, "101", "己奶奶")]
    diets = {s.resident.name: s.diet for r in routes for s in await rider_core.stops_of(r.id)}
    assert diets["甲大爷"] == "软食、低盐；过敏：花生"
    assert diets["刘桂芳"] == "低糖"
    assert diets["丙爷爷"] == ""
    # the dine-in diner is no stop; the riders are told once, with the way to claim
    assert not await RouteStop.filter(resident_id=w["孙志愿"]).exists()
    told = await texts("demo-rider")
    assert told == ["【先锋骑士】新的送餐路线：11月30日（周一）午餐2条，共7户，11:00出发。回复“送餐路线”认领。"]
    assert await texts("oa-骑士小李") == told
    # the cut-off (and so the build) running again adds nothing and tells nobody again
    assert await run_cutoff(menu.id, LUNCH_CUTOFF + timedelta(minutes=1))
    assert await rider_core.build_routes(menu.id, LUNCH_CUTOFF) == routes
    assert await RouteStop.filter(route__menu_id=menu.id).count() == 7
    assert len(await texts("demo-rider")) == 1


async def test_neighbouring_buildings_share_a_route_only_up_to_max_stops(w: dict[str, int]) -> None:
    await rider_core.save_settings(w["mijia"], now=NOW, actor_id=w["周社工"], max_stops=3, depart_minutes=20)
    _, routes = await lunch_routes(w)
    # 1号楼 has three stops alone; 2号楼 cannot join it; 4号楼 and 5号楼 (another grid) make three
    assert [(r.name, len(await rider_core.stops_of(r.id))) for r in routes] == [
        ("1号楼", 3), ("2号楼", 1), ("4号楼、5号楼", 3)]
    assert {r.depart_at for r in routes} == {LUNCH_FROM + timedelta(minutes=20)}
    await rider_core.save_settings(w["mijia"], now=NOW, actor_id=w["周社工"], max_stops=2)
    dinner = await menu_of(w, "dinner")
    await deliver(w, dinner, ["甲大爷", "丁奶奶", "戊大爷", "己奶奶"])
    await run_cutoff(dinner.id, DINNER_CUTOFF)
    # two buildings of one grid share a route within max_stops
    assert [r.name for r in await Route.filter(menu_id=dinner.id).order_by("position")] == [
        "1号楼、2号楼", "4号楼、5号楼"]


async def test_a_building_with_more_stops_than_max_stops_is_cut_by_units(w: dict[str, int]) -> None:
    await rider_core.save_settings(w["mijia"], now=NOW, actor_id=w["周社工"], max_stops=2)
    _, routes = await lunch_routes(w, ["甲大爷", "乙奶奶", "丙爷爷", "丁奶奶"])
    # 1号楼's three stops in two parts in walking order; 2号楼 (same grid) joins the second part
    assert [(r.name, [s[4] for s in await layout(r)]) for r in routes] == [
        ("1号楼1单元", ["丙爷爷", "乙奶奶"]), ("1号楼2单元、2号楼", ["甲大爷", "丁奶奶"])]
    # no rider carries more than max_stops meals
    await rider_core.save_settings(w["mijia"], now=NOW, actor_id=w["周社工"], max_stops=1)
    dinner = await menu_of(w, "dinner")
    await deliver(w, dinner, ["甲大爷", "乙奶奶", "丙爷爷"])
    await run_cutoff(dinner.id, DINNER_CUTOFF)
    evening = await Route.filter(menu_id=dinner.id).order_by("position")
    assert [r.name for r in evening] == ["1号楼1单元", "1号楼1单元（2）", "1号楼2单元"]


async def test_lunch_and_dinner_have_their_own_routes_and_departures(w: dict[str, int]) -> None:
    menu, lunch = await lunch_routes(w)
    dinner = await menu_of(w, "dinner")
    await deliver(w, dinner, ["刘桂芳", "乙奶奶"])
    assert await run_cutoff(dinner.id, DINNER_CUTOFF)
    evening = await Route.filter(menu_id=dinner.id).order_by("position")
    assert [(r.name, r.depart_at) for r in evening] == [("1号楼", DINNER_FROM), ("5号楼", DINNER_FROM)]
    assert len(await texts("demo-rider")) == 2
    assert "新的送餐路线：11月30日（周一）晚餐2条，共2户，17:00出发" in (await texts("demo-rider"))[1]
    # the rider sees the open routes of today and later, by departure
    opened = await rider_core.open_routes(w["骑士小王"], LUNCH_CUTOFF)
    assert [r.id for r in opened] == [r.id for r in lunch + evening]
    assert await rider_core.open_routes(w["孙志愿"], LUNCH_CUTOFF) == []
    # a meal that is over shows no more
    assert [r.id for r in await rider_core.open_routes(w["骑士小王"], menu.serve_until_at)] == [r.id for r in evening]


# ---------------------------------------------------------------------------- claiming


async def test_two_riders_race_for_one_route_and_one_wins(w: dict[str, int]) -> None:
    _, routes = await lunch_routes(w)
    route = routes[0]
    results = await asyncio.gather(rider_core.claim(route.id, w["骑士小王"], LUNCH_FROM),
                                   rider_core.claim(route.id, w["骑士小李"], LUNCH_FROM), return_exceptions=True)
    won = [r for r in results if isinstance(r, Route)]
    lost = [r for r in results if isinstance(r, Exception)]
    assert len(won) == 1 and len(lost) == 1
    assert isinstance(lost[0], UserFacingError) and "已被其他骑士认领" in lost[0].message
    row = await Route.get(id=route.id)
    assert (row.state, row.rider_id, row.version) == (RouteState.CLAIMED, won[0].rider_id, 1)
    # the winner's retry changes nothing; the loser is refused again
    again = await rider_core.claim(route.id, won[0].rider_id or 0, LUNCH_FROM + timedelta(minutes=1))
    assert (again.version, again.claimed_at) == (1, LUNCH_FROM)
    loser = w["骑士小李"] if won[0].rider_id == w["骑士小王"] else w["骑士小王"]
    with pytest.raises(UserFacingError, match="已被其他骑士认领"):
        await rider_core.claim(route.id, loser, LUNCH_FROM)
    # the loser no longer sees it; someone who is no rider never could
    with pytest.raises(NotFound):
        await rider_core.get_route(route.id, loser)
    with pytest.raises(NotFound):
        await rider_core.claim(routes[1].id, w["孙志愿"], LUNCH_FROM)
    assert [r.id for r in await rider_core.routes_of(won[0].rider_id or 0, LUNCH_FROM)] == [route.id]
    assert [r.id for r in await rider_core.open_routes(loser, LUNCH_FROM)] == [routes[1].id]


async def test_who_may_see_a_route(w: dict[str, int]) -> None:
    _, routes = await lunch_routes(w)
    route = routes[0]
    for name in ("骑士小王", "骑士小李", "陈食堂", "周社工"):
        assert (await rider_core.get_route(route.id, w[name])).id == route.id
    for name in ("孙志愿", "李网格", "甲大爷"):
        with pytest.raises(NotFound):
            await rider_core.get_route(route.id, w[name])
    with pytest.raises(NotFound):
        await rider_core.get_route(999_999, w["陈食堂"])


async def test_a_rider_gives_a_route_back_before_the_first_mark(w: dict[str, int]) -> None:
    _, routes = await lunch_routes(w)
    route = await claimed(w, routes[0])
    with pytest.raises(NotFound):  # another rider does not even see a claimed route
        await rider_core.release(route.id, w["骑士小李"], LUNCH_FROM)
    released = await rider_core.release(route.id, w["骑士小王"], LUNCH_FROM)
    assert (released.state, released.rider_id) == (RouteState.OPEN, None)
    assert (await rider_core.release(route.id, w["骑士小王"], LUNCH_FROM)).state == RouteState.OPEN  # a retry
    told = await texts("oa-骑士小李")
    assert told[-1] == ("【先锋骑士】骑士小王放弃了11月30日（周一）午餐的送餐路线“1号楼、2号楼”（4户，11:00出发），"
                        "现在等待认领。回复“送餐路线”认领。")
    assert len(await texts("demo-rider")) == 1  # the one who gave it back is not told
    # the other rider takes it and, once a stop is marked, cannot give it back
    route = await claimed(w, route, "骑士小李")
    first = (await rider_core.stops_of(route.id))[0]
    await rider_core.mark_stop(first.id, w["骑士小李"], delivered=True, now=LUNCH_FROM)
    with pytest.raises(UserFacingError, match="不能放弃"):
        await rider_core.release(route.id, w["骑士小李"], LUNCH_FROM)


# ---------------------------------------------------------------------------- stops


async def test_delivered_and_not_home_stops_complete_the_route_and_pay_once(w: dict[str, int]) -> None:
    menu, routes = await lunch_routes(w)
    route = await claimed(w, routes[0])
    stops = await rider_core.stops_of(route.id)
    with pytest.raises(NotFound):  # only the route's rider marks its stops
        await rider_core.mark_stop(stops[0].id, w["骑士小李"], delivered=True, now=LUNCH_FROM)
    photo = {"media_id": "m-1", "stored": "photos/x.jpg"}
    done = await rider_core.mark_stop(stops[0].id, w["骑士小王"], delivered=True, now=LUNCH_FROM, photo=photo,
                                      note=" 放在门口 ")
    marked_by = done.marked_by_id  # type: ignore[attr-defined]
    assert (done.state, marked_by, done.note, done.photo) == (StopState.DELIVERED, w["骑士小王"], "放在门口", photo)
    booking = await Booking.get(id=stops[0].booking_id)
    assert (booking.status, booking.served_at) == (BookingStatus.SERVED, LUNCH_FROM)
    # the same mark again is nothing; another mark is refused
    later = LUNCH_FROM + timedelta(minutes=5)
    again = await rider_core.mark_stop(stops[0].id, w["骑士小王"], delivered=True, now=later)
    assert again.marked_at == LUNCH_FROM
    with pytest.raises(UserFacingError, match="已标记为“已送达”"):
        await rider_core.mark_stop(stops[0].id, w["骑士小王"], delivered=False, now=LUNCH_FROM)
    with pytest.raises(UserFacingError, match="最多100个字"):
        await rider_core.mark_stop(stops[1].id, w["骑士小王"], delivered=False, now=LUNCH_FROM, note="门" * 101)
    # 乙奶奶 is not home, but does not live alone: no alert, her meal stays charged (the meal's end decides)
    away = await rider_core.mark_stop(stops[1].id, w["骑士小王"], delivered=False, now=LUNCH_FROM, note="敲门无人")
    assert away.state == StopState.NOT_HOME
    assert not await WelfareAlert.exists()
    assert (await Booking.get(id=stops[1].booking_id)).status == BookingStatus.CHARGED
    await rider_core.mark_stop(stops[2].id, w["骑士小王"], delivered=True, now=LUNCH_FROM)
    assert (await Route.get(id=route.id)).state == RouteState.CLAIMED
    last = stops[3].id
    at = LUNCH_FROM + timedelta(minutes=40)
    results = await asyncio.gather(*(rider_core.mark_stop(last, w["骑士小王"], delivered=True, now=at)
                                     for _ in range(2)))
    assert {r.state for r in results} == {StopState.DELIVERED}
    await rider_core.mark_stop(last, w["骑士小王"], delivered=True, now=at + timedelta(minutes=1))  # retried
    row = await Route.get(id=route.id)
    assert (row.state, row.completed_at) == (RouteState.DONE, at)
    entries = await Entry.filter(key=f"route:{route.id}:points")
    assert [(e.amount, e.source) for e in entries] == [(10, "delivery")]
    assert await balance(await points_of(w["骑士小王"], at)) == 10
    assert (await texts("demo-rider"))[-1] == ("【先锋骑士】11月30日（周一）午餐的路线“1号楼、2号楼”已全部送完"
                                               "（送达3户，不在家1户）。已为您记入10积分，谢谢您！回复“积分”可以查看。")
    assert [r.id for r in await rider_core.routes_of(w["骑士小王"], at)] == [route.id]
    # the meal's end leaves the delivered meals served, the not-home one a no-show
    await run_meal_end(menu.id, menu.serve_until_at)
    statuses = [(await Booking.get(id=s.booking_id)).status for s in stops]
    assert statuses == [BookingStatus.SERVED, BookingStatus.NO_SHOW, BookingStatus.SERVED, BookingStatus.SERVED]
    assert (await check_books())[Asset.POINTS] == 0


async def test_points_per_delivered_stop(w: dict[str, int]) -> None:
    await rider_core.save_settings(w["mijia"], now=NOW, actor_id=w["周社工"], points_by="stop", points=3)
    _, routes = await lunch_routes(w, ["甲大爷", "乙奶奶", "丙爷爷"])
    route = await claimed(w, routes[0])
    stops = await rider_core.stops_of(route.id)
    for stop, delivered in zip(stops, (True, False, True), strict=True):
        await rider_core.mark_stop(stop.id, w["骑士小王"], delivered=delivered, now=LUNCH_FROM)
    assert await balance(await points_of(w["骑士小王"], LUNCH_FROM)) == 6


# ---------------------------------------------------------------------------- welfare alerts


async def test_not_home_alone_alerts_the_grid_worker_and_her_daughter_at_night(w: dict[str, int]) -> None:
    menu = await menu_of(w, "breakfast")
    await deliver(w, menu, ["刘桂芳", "己奶奶"])
    assert await run_cutoff(menu.id, BREAKFAST_CUTOFF)
    route = (await Route.filter(menu_id=menu.id))[0]
    at = datetime(2026, 11, 29, 23, 20, tzinfo=UTC)  # 周一 07:20, inside the quiet hours (21:00-08:00)
    await rider_core.claim(route.id, w["骑士小王"], at)
    stop = await RouteStop.get(route_id=route.id, resident_id=w["刘桂芳"])
    await rider_core.mark_stop(stop.id, w["骑士小王"], delivered=False, now=at, note="敲门十分钟无人应答")
    alert = await WelfareAlert.get(stop_id=stop.id)
    grid = (await Building.get(name="5号楼")).grid_id  # type: ignore[attr-defined]
    rider = alert.rider_id  # type: ignore[attr-defined]
    assert (alert.resident_id, alert.grid_id, rider, alert.note, alert.raised_at, alert.closed_at) == (
        w["刘桂芳"], grid, w["骑士小王"], "敲门十分钟无人应答", at, None)
    urgent = await OutboxMessage.filter(idempotency_key__startswith=f"riders:alert:{alert.id}:raised").order_by("id")
    assert sorted(m.openid for m in urgent) == ["demo-grid-2", "oa-刘女儿"]  # not 李网格, not 周社工: 赵网格 is there
    for message in urgent:  # out at once, first in line, not held for the morning
        assert (message.priority, message.state, message.next_attempt_at) == (Priority.REPLY, "pending", at)
    assert await texts("demo-grid-2") == [
        "【安全提醒】独居老人刘桂芳（5号楼1单元201室）11月30日07:20送餐时敲门无人应答。骑士骑士小王留言：敲门十分钟无人应答。"
        "请尽快电话联系或上门查看。确认安全后请回复“安全确认”记录结果。"]
    assert (await texts("oa-刘女儿"))[-1].startswith("【安全提醒】您的家人刘桂芳（5号楼1单元201室）11月30日07:20")
    # a retried mark raises nothing twice
    await rider_core.mark_stop(stop.id, w["骑士小王"], delivered=False, now=at + timedelta(minutes=1))
    assert await WelfareAlert.filter(stop_id=stop.id).count() == 1
    assert len(await texts("demo-grid-2")) == 1
    # who sees it
    for name in ("赵网格", "刘女儿", "周社工"):
        assert [a.id for a in await rider_core.open_alerts(w[name], at)] == [alert.id]
    for name in ("李网格", "骑士小王", "己奶奶"):
        assert await rider_core.open_alerts(w[name], at) == []
        with pytest.raises(NotFound):
            await rider_core.close_alert(alert.id, w[name], "已联系，平安", at)


async def test_an_alert_is_closed_once_and_the_others_are_told(w: dict[str, int]) -> None:
    _, routes = await lunch_routes(w, ["刘桂芳"])
    route = await claimed(w, routes[0])
    stop = (await rider_core.stops_of(route.id))[0]
    await rider_core.mark_stop(stop.id, w["骑士小王"], delivered=False, now=LUNCH_FROM)
    alert = await WelfareAlert.get(stop_id=stop.id)
    assert "留言" not in (await texts("demo-grid-2"))[0]  # no note, no empty line about it
    with pytest.raises(UserFacingError, match="2到100个字"):
        await rider_core.close_alert(alert.id, w["赵网格"], "好", LUNCH_FROM)
    at = LUNCH_FROM + timedelta(minutes=25)
    closed = await rider_core.close_alert(alert.id, w["赵网格"], "已上门，老人在楼下晒太阳，平安", at)
    closer = closed.closed_by_id  # type: ignore[attr-defined]
    assert (closed.closed_at, closer, closed.outcome) == (at, w["赵网格"], "已上门，老人在楼下晒太阳，平安")
    again = await rider_core.close_alert(alert.id, w["赵网格"], "又写一遍", at + timedelta(minutes=1))
    assert (again.closed_at, again.outcome) == (at, "已上门，老人在楼下晒太阳，平安")
    with pytest.raises(UserFacingError, match="已由赵网格于11月30日11:25记录"):
        await rider_core.close_alert(alert.id, w["刘女儿"], "她给我打电话了", at)
    closing = "【安全提醒】刘桂芳的情况已由赵网格记录：已上门，老人在楼下晒太阳，平安。这条提醒已关闭。"
    assert (await texts("oa-刘女儿"))[-1] == closing
    assert (await texts("demo-rider"))[-1] == closing
    assert closing not in await texts("demo-grid-2")
    assert await rider_core.open_alerts(w["赵网格"], at) == []
    # the route is done: its only stop was marked
    assert (await Route.get(id=route.id)).state == RouteState.DONE


# ---------------------------------------------------------------------------- the unclaimed route


async def test_an_unclaimed_route_alerts_the_canteen_staff_once(w: dict[str, int], clock: FrozenClock) -> None:
    _, routes = await lunch_routes(w, ["甲大爷", "戊大爷"])
    first, second = routes
    clock.advance(LUNCH_CUTOFF - clock.now())
    await rider_core.claim(second.id, w["骑士小王"], clock.now())
    clock.advance(LUNCH_FROM - timedelta(minutes=31) - clock.now())
    await sweep_due(clock.now())
    assert not any("还没有骑士认领" in t for t in await texts("demo-canteen"))
    clock.advance(timedelta(minutes=1))  # 10:30, half an hour before departure
    await sweep_due(clock.now())
    await sweep_due(clock.now() + timedelta(minutes=5))
    alerts = [t for t in await texts("demo-canteen") if "还没有骑士认领" in t]
    assert alerts == ["【先锋骑士】11月30日（周一）午餐的送餐路线“1号楼”（1户，11:00出发）还没有骑士认领。"
                      "请联系骑士认领，或安排人手送餐。"]
    assert [t for t in await texts("demo-staff") if "还没有骑士认领" in t] == alerts
    assert await DueAction.filter(action=rider_core.UNCLAIMED, target=f"route:{second.id}", status="done").exists()
    # a route given back after its alert time alerts again at once
    clock.advance(timedelta(minutes=10))
    await rider_core.claim(first.id, w["骑士小李"], clock.now())
    await rider_core.release(first.id, w["骑士小李"], clock.now())
    await sweep_due(clock.now())
    assert len([t for t in await texts("demo-canteen") if "还没有骑士认领" in t]) == 2


# ---------------------------------------------------------------------------- cancelled after the cut-off


async def test_a_booking_cancelled_after_the_cutoff_drops_its_stop(w: dict[str, int]) -> None:
    menu, routes = await lunch_routes(w, ["甲大爷", "乙奶奶", "戊大爷"])
    route = await claimed(w, routes[0])
    stops = await rider_core.stops_of(route.id)
    await rider_core.mark_stop(stops[0].id, w["骑士小王"], delivered=True, now=LUNCH_FROM)
    await cancel(booking_id=stops[1].booking_id, by_id=w["陈食堂"], now=LUNCH_FROM, reason="住院")
    assert [s.state for s in await rider_core.stops_of(route.id)] == [StopState.DELIVERED, StopState.CANCELLED]
    assert (await texts("demo-rider"))[-2] == ("【先锋骑士】1号楼2单元502室的订餐已取消，这一户不用送了。"
                                               "回复“我的路线”查看。")
    # the only pending stop was dropped: the route is done, paid
    assert (await Route.get(id=route.id)).state == RouteState.DONE
    assert await balance(await points_of(w["骑士小王"], LUNCH_FROM)) == 10
    with pytest.raises(UserFacingError, match="不用送了"):
        await rider_core.mark_stop(stops[1].id, w["骑士小王"], delivered=True, now=LUNCH_FROM)
    # an open route whose only booking is cancelled is cancelled, and its alert with it
    other = routes[1]
    only = (await rider_core.stops_of(other.id))[0]
    await cancel(booking_id=only.booking_id, by_id=w["陈食堂"], now=LUNCH_FROM)
    assert (await Route.get(id=other.id)).state == RouteState.CANCELLED
    assert not await DueAction.filter(action=rider_core.UNCLAIMED, target=f"route:{other.id}",
                                      status="pending").exists()
    assert [r.id for r in await rider_core.open_routes(w["骑士小李"], LUNCH_CUTOFF)] == []
    assert menu.id == other.menu_id


# ---------------------------------------------------------------------------- the meal's end


async def test_the_meals_end_settles_routes_left_out(w: dict[str, int]) -> None:
    menu, _ = await lunch_routes(w, ["甲大爷", "乙奶奶", "戊大爷", "己奶奶"])
    ours, left = await route_named(menu, "1号楼"), await route_named(menu, "4号楼、5号楼")
    await claimed(w, ours)
    first, second = await rider_core.stops_of(ours.id)
    await rider_core.mark_stop(first.id, w["骑士小王"], delivered=True, now=LUNCH_FROM)
    # 骑士小王 forgot to mark 乙奶奶; nobody claimed 4号楼、5号楼
    assert await run_meal_end(menu.id, menu.serve_until_at)
    assert [s.state for s in await rider_core.stops_of(ours.id)] == [StopState.DELIVERED, StopState.UNMARKED]
    assert (await Route.get(id=ours.id)).state == RouteState.DONE
    assert (await Route.get(id=left.id)).state == RouteState.MISSED
    assert {s.state for s in await rider_core.stops_of(left.id)} == {StopState.UNMARKED}
    assert await balance(await points_of(w["骑士小王"], LUNCH_FROM)) == 10  # he marked a stop: the route's points
    assert (await texts("demo-rider"))[-1] == (
        "【先锋骑士】11月30日（周一）午餐已经结束，路线“1号楼”送达1户，还有1户没有标记，已按未送达记录；"
        "如果其实已经送到，请告诉食堂工作人员。已为您记入10积分，谢谢您！")
    missed = ("【先锋骑士】11月30日（周一）午餐已经结束，送餐路线“4号楼、5号楼”没有骑士认领，"
              "共2户的餐没有送出，请联系这些老人。")
    assert (await texts("demo-canteen"))[-1] == missed
    assert (await texts("demo-staff"))[-1] == missed
    # the unmarked meals are no-shows; a late mark is refused with what to do instead
    assert (await Booking.get(id=second.booking_id)).status == BookingStatus.NO_SHOW
    with pytest.raises(UserFacingError, match="请告诉食堂工作人员"):
        await rider_core.mark_stop(second.id, w["骑士小王"], delivered=True, now=menu.serve_until_at)
    # running it again changes nothing
    before = await OutboxMessage.all().count()
    await rider_core.end_meal(menu.id, menu.serve_until_at + timedelta(minutes=1))
    assert await OutboxMessage.all().count() == before
    assert len(await Entry.filter(key=f"route:{ours.id}:points")) == 1


async def test_a_claimed_route_with_nothing_marked_earns_nothing_at_the_meals_end(w: dict[str, int]) -> None:
    menu, routes = await lunch_routes(w, ["甲大爷"])
    await claimed(w, routes[0])
    await run_meal_end(menu.id, menu.serve_until_at)
    assert (await Route.get(id=routes[0].id)).state == RouteState.DONE
    assert await balance(await points_of(w["骑士小王"], LUNCH_FROM)) == 0
    assert "还有1户没有标记" in (await texts("demo-rider"))[-1]
