"""先锋骑士 through /api/v1 as the mini-program sees it: 刘桂芳 (80, lives alone) books a delivered lunch,
the cut-off makes the route, 骑士小王 claims it first (a second rider is refused), reads the stops
with masked names and the diet, delivers her neighbour's meal with a photo from WeChat and finds
her not home: her grid worker is alerted at once and records her safe; the rider's points are
credited once however often the last mark is sent; the figures. Then the refusals: whoever is not
a rider, a rider of another community, the wrong step (409) and bad input (422). ``matrix_riders``
builds the routes of the authorization matrix (tests/test_api_matrix.py)."""

from __future__ import annotations

import io
from datetime import UTC, date, datetime, timedelta
from typing import Any

import openpyxl
import pytest

from bot.app import SERVICES
from bot.clock import FrozenClock
from models import rider_core
from models.canteen import Booking, Menu
from models.canteen_booking import book, publish_menu, run_cutoff, set_diner
from models.canteen_wallet import top_up
from models.jobs import sweep_due
from models.ledger import Entry, balance, points_of
from models.outbox import OutboxMessage, Priority
from models.places import Building, Canteen, Community
from models.residents import Mobility, Resident, WechatAccount
from models.riders import RiderSettings, Route, RouteStop, WelfareAlert
from models.roles import Role, grant
from tests.api import MiniProgram
from tests.test_redemption_api import phone, post

pytestmark = pytest.mark.usefixtures("demo")
NOW = datetime(2026, 11, 27, 1, 0, tzinfo=UTC)  # Friday 09:00 in Shanghai
MONDAY = date(2026, 11, 30)
MONDAY_CUTOFF = datetime(2026, 11, 30, 1, 30, tzinfo=UTC)  # lunch's cut-off, 09:30 in Shanghai
SERVING = datetime(2026, 11, 30, 3, 0, tzinfo=UTC)  # lunch is served from 11:00: the route's departure
MEAL_END = datetime(2026, 11, 30, 4, 30, tzinfo=UTC)  # 12:30
JPEG = b"\xff\xd8\xff\xe0" + b"\x00\x10JFIF" + b"a meal handed over at the door " * 10
DISHES = [{"name": "清蒸鱼", "marks": ["soft"]}]


async def send(mp: MiniProgram, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    resp = await mp.client.request(method, "/api/v1" + path, json=body, headers={"Authorization": f"Bearer {mp.token}"})
    return resp.status, await resp.json()


async def get(mp: MiniProgram, path: str, **params: Any) -> tuple[int, Any]:
    answer = await mp.call("GET", path, **params)
    return answer.status, answer.body


async def texts_to(openid: str) -> list[tuple[str, int]]:
    rows = await OutboxMessage.filter(openid=openid, kind="text").order_by("id")
    return [(str(row.payload["content"]), row.priority) for row in rows]


async def resident(name: str, mobile: str, community: str, building: str, unit: str, room: str, *,
                   role: str | None = None, openid: str | None = None) -> Resident:
    """A verified resident (with a staff role in their community, and following the account, when given)."""
    place = await Community.get(name=community)
    person = await Resident.create(name=name, mobile=mobile, community=place,
                                   building=await Building.get(name=building), unit=unit, room=room,
                                   status="verified", created_at=NOW)
    if role is not None:
        await grant(resident_id=person.id, role=role, scope_id=place.id, now=NOW)
    if openid is not None:
        await WechatAccount.create(openid=openid, channel="chat", resident=person, created_at=NOW, subscribed_at=NOW)
    return person


async def monday_lunch() -> dict[str, int]:
    """Monday's lunch of 米家's canteen with two delivery bookings: 刘桂芳 (5号楼1单元201, lives alone,
    soft food and a peanut allergy, through the API below) is booked by the test; 钱奶奶 (4号楼2单元302,
    needs delivery) here. Both buildings are of 第二网格 (its grid worker 赵网格)."""
    canteen = await Canteen.get(name="米家社区幸福食堂")
    cook = await Resident.get(name="陈食堂")
    menu, _ = await publish_menu(canteen_id=canteen.id, day=MONDAY, meal="lunch", dishes=DISHES, price_fen=1500,
                                 by_id=cook.id, now=NOW)
    neighbour = await resident("钱奶奶", "13900005555", "米家社区", "4号楼", "2", "302")
    await Resident.filter(id=neighbour.id).update(mobility=Mobility.NEEDS_DELIVERY)
    elder = await Resident.get(name="刘桂芳")
    for person, fen in ((neighbour, 3000), (elder, 12000)):
        await top_up(canteen_id=canteen.id, resident_id=person.id, amount_fen=fen, method="cash",
                     receipt_no=f"R-{person.id}", by_id=cook.id, now=NOW)
    await book(menu_id=menu.id, resident_id=neighbour.id, by_id=neighbour.id, mode="delivery", now=NOW)
    return {"menu": menu.id, "canteen": canteen.id, "elder": elder.id, "neighbour": neighbour.id,
            "rider": (await Resident.get(name="骑士小王")).id}


async def cut_off(clock: FrozenClock) -> None:
    """The clock reaches Monday's lunch cut-off and the due actions run (the routes are built)."""
    clock.set(MONDAY_CUTOFF)
    await sweep_due(clock.now())


async def ready_route(clock: FrozenClock) -> tuple[dict[str, int], int]:
    """Monday's lunch with both delivery bookings, past its cut-off: the ids and the route's."""
    w = await monday_lunch()
    await set_diner(resident_id=w["elder"], by_id=(await Resident.get(name="陈食堂")).id, now=NOW,
                    delivery_approved=True, diet=["soft"], allergies="花生")
    await book(menu_id=w["menu"], resident_id=w["elder"], by_id=w["elder"], mode="delivery", now=NOW)
    await cut_off(clock)
    route = await Route.get(menu_id=w["menu"])
    return w, route.id


# ---------------------------------------------------------------------------- acceptance


async def test_a_rider_claims_delivers_and_an_elder_found_not_home_is_checked_on(
        client: Any, clock: FrozenClock) -> None:
    fake = client.app[SERVICES].fake
    w = await monday_lunch()
    cook, elder = await phone(client, "陈食堂"), await phone(client, "刘桂芳")
    status, diner = await send(cook, "PUT", "/canteen/diner", {"for_resident_id": w["elder"], "delivery_approved": True,
                                                               "diet": ["soft"], "allergies": "花生"})
    assert (status, diner["delivery_approved"]) == (200, True)
    status, booked = await post(elder, "/canteen/bookings", {"menu_id": w["menu"], "mode": "delivery"})
    assert (status, booked["mode"]) == (201, "delivery")

    await resident("骑士小李", "13900006666", "米家社区", "3号楼", "1", "601", role=Role.RIDER, openid="rider-li")
    rider, second = await phone(client, "骑士小王"), await phone(client, "骑士小李")
    assert await get(rider, "/riders/routes") == (200, {"items": []})  # nothing before the cut-off

    await cut_off(clock)
    status, listed = await get(rider, "/riders/routes")
    assert status == 200 and len(listed["items"]) == 1
    route = listed["items"][0]
    rid = route["id"]
    assert (route["name"], route["meal_label"], route["day"], route["state_label"], route["stop_count"],
            route["depart_at"], route["mine"], route["rider"], route["points"]) == (
        "4号楼、5号楼", "午餐", "2026-11-30", "待认领", 2, SERVING.isoformat(), False, "", 10)
    assert sum("新的送餐路线" in text for text, _ in await texts_to("demo-rider")) == 1  # the riders are told once

    # first claim wins; the second rider is refused and no longer sees it; the winner's retry is once
    status, claimed = await post(rider, f"/riders/routes/{rid}/claim")
    assert (status, claimed["state"], claimed["mine"], claimed["rider"], claimed["view"]) == (
        200, "claimed", True, "骑士小王", "rider")
    status, refused = await post(second, f"/riders/routes/{rid}/claim")
    assert (status, refused["error"]) == (409, "rejected") and "已被其他骑士认领" in refused["message"]
    assert (await post(rider, f"/riders/routes/{rid}/claim"))[0] == 200
    assert (await get(second, f"/riders/routes/{rid}"))[0] == 404
    assert await get(second, "/riders/routes") == (200, {"items": []})
    assert [r["id"] for r in (await get(rider, "/riders/routes", mine="true"))[1]["items"]] == [rid]

    # the stops in walking order, names masked, the diet to respect, the instruction to ring
    assert claimed["instruction"] == "请按门铃/敲门，当面交给本人。"
    assert [(s["position"], s["address"], s["floor"], s["name"], s["resident_id"], s["diet"], s["state"])
            for s in claimed["stops"]] == [
        (1, "4号楼2单元302室", 3, "钱**", None, "", "pending"),
        (2, "5号楼1单元201室", 2, "刘**", None, "软食；过敏：花生", "pending")]
    first, last = (s["id"] for s in claimed["stops"])

    # delivered with a photo from WeChat: her neighbour's meal is served
    clock.set(SERVING + timedelta(minutes=20))
    fake.add_media("rider-photo", JPEG)
    status, route = await post(rider, f"/riders/stops/{first}/delivered", {"photo": {"media_id": "rider-photo"}})
    assert status == 200, route
    assert (route["state"], route["delivered"], route["pending"]) == ("claimed", 1, 1)
    assert route["stops"][0]["state_label"] == "已送达" and route["stops"][0]["photo"] is not None
    assert route["stops"][0]["marked_at"] == clock.now().isoformat()
    assert (await RouteStop.get(id=first)).photo["media_id"] == "rider-photo"  # type: ignore[index]
    stop = await RouteStop.get(id=first)
    assert (await Booking.get(id=stop.booking_id)).status == "served"

    # not home: she lives alone, so her grid worker hears at once (urgent); the route is done, points once
    clock.advance(timedelta(minutes=10))
    status, route = await post(rider, f"/riders/stops/{last}/not-home", {"note": "敲门没人应，邻居说早上出门了"})
    assert (status, route["state"], route["state_label"], route["not_home"]) == (200, "done", "已完成", 1)
    assert route["completed_at"] == clock.now().isoformat()
    alerted = [(t, p) for t, p in await texts_to("demo-grid-2") if "安全提醒" in t]
    assert len(alerted) == 1 and alerted[0][1] == Priority.REPLY
    assert "刘桂芳" in alerted[0][0] and "5号楼1单元201室" in alerted[0][0] and "邻居说早上出门了" in alerted[0][0]
    for _ in range(2):  # the last mark sent again (a lost answer): the same route, nothing twice
        status, again = await post(rider, f"/riders/stops/{last}/not-home", {"note": "敲门没人应，邻居说早上出门了"})
        assert (status, again["state"], again["completed_at"]) == (200, "done", route["completed_at"])
    status, refused = await post(rider, f"/riders/stops/{last}/delivered", {})
    assert status == 409 and "不在家" in refused["message"]
    rider_id = w["rider"]
    assert await balance(await points_of(rider_id, clock.now())) == 10
    assert await Entry.filter(key=f"route:{rid}:points").count() == 1
    assert await WelfareAlert.all().count() == 1

    # the grid worker of her grid follows it up and records her safe; another grid's worker cannot
    grid, other_grid = await phone(client, "赵网格"), await phone(client, "李网格")
    status, alerts = await get(grid, "/riders/alerts")
    assert status == 200 and len(alerts["items"]) == 1
    alert = alerts["items"][0]
    assert (alert["state"], alert["resident"], alert["address"], alert["grid"], alert["rider"], alert["note"],
            alert["meal_label"], alert["raised_at"]) == (
        "open", "刘桂芳", "5号楼1单元201室", "第二网格", "骑***", "敲门没人应，邻居说早上出门了", "午餐",
        clock.now().isoformat())
    assert await get(other_grid, "/riders/alerts") == (200, {"items": []})
    assert (await post(other_grid, f"/riders/alerts/{alert['id']}/close", {"outcome": "平安"}))[0] == 404
    clock.advance(timedelta(minutes=25))
    outcome = {"outcome": "已电话联系，老人在女儿家，平安"}
    status, closed = await post(grid, f"/riders/alerts/{alert['id']}/close", outcome)
    assert (status, closed["state"], closed["closed_by"], closed["outcome"]) == (
        200, "closed", "赵网格", "已电话联系，老人在女儿家，平安")
    assert (await post(grid, f"/riders/alerts/{alert['id']}/close", outcome))[1]["closed_at"] == closed["closed_at"]
    assert await get(grid, "/riders/alerts") == (200, {"items": []})
    assert any("赵网格记录" in text for text, _ in await texts_to("demo-rider"))

    # the canteen's staff see the route with the names in full, and the figures
    status, seen = await get(cook, f"/riders/routes/{rid}")
    assert (status, seen["view"], [s["name"] for s in seen["stops"]]) == (200, "staff", ["钱奶奶", "刘桂芳"])
    assert [s["resident_id"] for s in seen["stops"]] == [w["neighbour"], w["elder"]]
    status, figures = await get(cook, "/riders/figures", **{"from": "2026-11-30", "to": "2026-11-30"})
    assert status == 200
    assert [(m["day"], m["meal_label"], m["routes"], m["done"], m["stops"], m["delivered"], m["not_home"],
             m["on_time"], m["on_time_pct"], m["alerts"], m["alerts_closed"], m["close_median_minutes"])
            for m in figures["meals"]] == [("2026-11-30", "午餐", 1, 1, 2, 1, 1, 1, 100, 1, 1, 25)]
    assert figures["total"]["stops"] == 2 and "按时送达1/1户次（100%）" in figures["text"]
    resp = await cook.client.get("/api/v1/riders/figures", params={"from": "2026-11-30", "to": "2026-11-30",
                                                                   "format": "xlsx"},
                                 headers={"Authorization": f"Bearer {cook.token}"})
    assert resp.status == 200 and resp.content_type.endswith("spreadsheetml.sheet")
    rows = [[c.value for c in row] for row in openpyxl.load_workbook(io.BytesIO(await resp.read()))[
        "送餐数据"].iter_rows()]
    assert ["2026-11-30", "午餐", 1, 1, 2, 1, 1, 0, 1, 100, 1, 1, 25] in rows


# ---------------------------------------------------------------------------- refusals


async def test_who_is_not_a_rider_or_rides_for_another_community_sees_nothing(
        client: Any, clock: FrozenClock) -> None:
    w, rid = await ready_route(clock)
    stops = [s.id for s in await RouteStop.filter(route_id=rid).order_by("position")]
    await resident("骑士小赵", "13900007777", "新邱社区", "东1栋", "1", "101", role=Role.RIDER)
    neighbour, outsider, staff = [await phone(client, n) for n in ("张德福", "骑士小赵", "周社工")]
    rider = await phone(client, "骑士小王")
    for mp in (neighbour, outsider, staff):
        assert (await get(mp, f"/riders/routes/{rid}"))[0] == (200 if mp is staff else 404)
        status, answer = await post(mp, f"/riders/routes/{rid}/claim")
        assert (status, answer["error"]) == (404, "not_found"), answer
    assert (await get(neighbour, "/riders/routes"))[0] == 404  # not a rider at all
    assert (await get(staff, "/riders/routes"))[0] == 404
    assert await get(outsider, "/riders/routes") == (200, {"items": []})  # a rider, of 新邱
    assert (await post(rider, f"/riders/routes/{rid}/claim"))[0] == 200
    for mp in (neighbour, outsider, staff):
        for path, body in ((f"/riders/stops/{stops[0]}/delivered", {}),
                           (f"/riders/stops/{stops[1]}/not-home", {"note": "没人"}),
                           (f"/riders/routes/{rid}/release", None)):
            status, answer = await post(mp, path, body)
            # staff see the route: giving back another rider's route is refused (409), the rest is not theirs
            assert status == (409 if mp is staff and path.endswith("release") else 404), (path, answer)
        assert (await get(mp, "/riders/figures"))[0] == (200 if mp is staff else 404)
        assert (await get(mp, "/riders/settings"))[0] == (200 if mp is staff else 404)
    assert (await get(outsider, f"/riders/routes/{rid}"))[0] == 404
    assert [s.state for s in await RouteStop.filter(route_id=rid)] == ["pending", "pending"]
    assert (await Route.get(id=rid)).rider_id == w["rider"]
    # the staff read the names in full
    status, seen = await get(staff, f"/riders/routes/{rid}")
    assert (status, seen["view"], seen["rider"], [s["name"] for s in seen["stops"]]) == (
        200, "staff", "骑士小王", ["钱奶奶", "刘桂芳"])


async def test_bad_input_is_refused_with_the_field_and_changes_nothing(client: Any, clock: FrozenClock) -> None:
    _, rid = await ready_route(clock)
    rider, staff = await phone(client, "骑士小王"), await phone(client, "周社工")
    await post(rider, f"/riders/routes/{rid}/claim")
    first, last = [s.id for s in await RouteStop.filter(route_id=rid).order_by("position")]
    invalid: list[tuple[MiniProgram, str, str, Any, str]] = [
        (rider, "POST", f"/riders/stops/{last}/not-home", {}, "body.note"),
        (rider, "POST", f"/riders/stops/{last}/not-home", {"note": "   "}, "body.note"),
        (rider, "POST", f"/riders/stops/{last}/not-home", {"note": "长" * 101}, "body.note"),
        (rider, "POST", f"/riders/stops/{last}/not-home", {"note": "两行\n备注"}, "body.note"),
        (rider, "POST", f"/riders/stops/{first}/delivered", {"photo": {}}, "body.photo"),
        (rider, "POST", f"/riders/stops/{first}/delivered",
         {"photo": {"media_id": "M1", "pic_url": "https://a.cn/x.jpg"}}, "body.photo"),
        (rider, "POST", f"/riders/stops/{first}/delivered", {"photo": {"media_id": "a b"}}, "body.photo.media_id"),
        (rider, "POST", f"/riders/stops/{first}/delivered", {"photo": {"pic_url": "http://a.cn/x.jpg"}},
         "body.photo.pic_url"),
        (rider, "POST", f"/riders/stops/{first}/delivered", {"tip": 5}, "body.tip"),
        (rider, "POST", "/riders/stops/abc/delivered", {}, "path.stop_id"),
        (staff, "POST", "/riders/alerts/1/close", {"outcome": "好"}, "body.outcome"),
        (staff, "PATCH", "/riders/settings", {"points": -1}, "body.points"),
        (staff, "PATCH", "/riders/settings", {"points": "5"}, "body.points"),
        (staff, "PATCH", "/riders/settings", {"max_stops": 0}, "body.max_stops"),
        (staff, "PATCH", "/riders/settings", {"depart_minutes": 181}, "body.depart_minutes"),
        (staff, "PATCH", "/riders/settings", {"points_by": "hour"}, "body.points_by"),
    ]
    for mp, method, path, body, field in invalid:
        status, answer = await send(mp, method, path, body)
        assert status == 422 and field in {f["field"] for f in answer["fields"]}, (path, body, answer)
    for query in ({"from": "2026-11-30", "to": "2026-11-01"}, {"from": "2026-02-30"},
                  {"from": "2025-01-01", "to": "2026-11-30"}, {"format": "pdf"}, {"community_id": "0"}):
        assert (await get(staff, "/riders/figures", **query))[0] == 422, query
    assert (await get(rider, "/riders/routes", mine="maybe"))[0] == 422
    assert [s.state for s in await RouteStop.filter(route_id=rid)] == ["pending", "pending"]
    assert await RiderSettings.all().count() == 0 and await WelfareAlert.all().count() == 0


async def test_a_route_given_back_goes_to_another_rider_and_points_follow_the_settings(
        client: Any, clock: FrozenClock) -> None:
    w, rid = await ready_route(clock)
    await resident("骑士小李", "13900006666", "米家社区", "3号楼", "1", "601", role=Role.RIDER, openid="rider-li")
    rider, second, staff = [await phone(client, n) for n in ("骑士小王", "骑士小李", "周社工")]

    # the community's staff pay per delivered stop from now on
    assert await get(staff, "/riders/settings") == (200, {
        "community_id": (await Community.get(name="米家社区")).id, "community": "米家社区", "points_by": "route",
        "points": 10, "max_stops": 8, "depart_minutes": 0})
    status, settings = await send(staff, "PATCH", "/riders/settings", {"points_by": "stop", "points": 6})
    assert (status, settings["points_by"], settings["points"], settings["max_stops"]) == (200, "stop", 6, 8)
    other = await resident("吴社工", "13900008888", "新邱社区", "东2栋", "1", "201", role=Role.COMMUNITY_STAFF)
    other_staff = await phone(client, other.name)
    assert (await get(other_staff, "/riders/settings", community_id=settings["community_id"]))[0] == 404
    assert (await get(other_staff, "/riders/settings"))[1]["community"] == "新邱社区"

    # 小王 claims and gives it back before any stop: open again, 小李 is told and takes it
    await post(rider, f"/riders/routes/{rid}/claim")
    status, released = await post(rider, f"/riders/routes/{rid}/release")
    assert (status, released["state"], released["rider"], released["view"]) == (200, "open", "", "rider")
    assert (await get(rider, "/riders/routes", mine="1"))[1]["items"] == []
    assert any("骑士小王放弃了" in text for text, _ in await texts_to("rider-li"))
    status, taken = await post(second, f"/riders/routes/{rid}/claim")
    assert (status, taken["rider"]) == (200, "骑士小李")
    first, last = (s["id"] for s in taken["stops"])
    clock.set(SERVING)
    await post(second, f"/riders/stops/{first}/delivered", {"note": "本人签收"})
    status, refused = await post(second, f"/riders/routes/{rid}/release")
    assert status == 409 and "已经开始送餐" in refused["message"]
    status, done = await post(second, f"/riders/stops/{last}/delivered", {"photo": {"pic_url": "https://a.cn/x.jpg"}})
    assert (status, done["state"], done["delivered"]) == (200, "done", 2)
    assert done["stops"][0]["note"] == "本人签收"
    second_id = (await Resident.get(name="骑士小李")).id
    assert await balance(await points_of(second_id, clock.now())) == 12  # 6 per delivered stop
    assert await balance(await points_of(w["rider"], clock.now())) == 0
    assert await WelfareAlert.all().count() == 0  # both delivered: nobody to check on
    assert (await post(second, f"/riders/routes/{rid}/claim"))[0] == 200  # his own, done: once
    status, refused = await post(rider, f"/riders/routes/{rid}/claim")
    assert status == 409 and "已经送完了" in refused["message"]


# ---------------------------------------------------------------------------- the authorization matrix


async def matrix_riders(elder: Resident, volunteer: Resident, now: datetime) -> dict[str, int]:
    """For tests/test_api_matrix.py: the volunteer is also a pioneer rider of 米家社区, and tomorrow's
    lunch and Monday's dinner have delivery routes built at their cut-offs:

    - route_open: lunch, 1号楼 (the elder, 王秀兰), open;
    - route_out: lunch, 5号楼, claimed by the volunteer: 刘桂芳 (lives alone) marked not home, so her
      welfare alert is open (alert: her grid's worker 赵网格 and 米家's staff follow it up), and a
      neighbour's stop still pending (stop_pending);
    - route_claimed: Monday's dinner, 1号楼 (the elder), claimed by the volunteer, nothing marked yet.
    """
    mijia = await Community.get(name="米家社区")
    canteen = await Canteen.get(name="米家社区幸福食堂")
    cook = await Resident.get(name="陈食堂")
    await grant(resident_id=volunteer.id, role=Role.RIDER, scope_id=mijia.id, now=now)
    lone = await Resident.get(name="刘桂芳")
    neighbour = await Resident.create(name="钱奶奶", mobile="13900005555", community=mijia,
                                      building=await Building.get(name="5号楼"), unit="1", room="301",
                                      status="verified", mobility=Mobility.NEEDS_DELIVERY, created_at=now)
    for person in (elder, lone, neighbour):
        await set_diner(resident_id=person.id, by_id=cook.id, now=now, delivery_approved=True)
        await top_up(canteen_id=canteen.id, resident_id=person.id, amount_fen=5000, method="cash",
                     receipt_no=f"MATRIX-R-{person.id}", by_id=cook.id, now=now)
    menus: dict[str, Menu] = {}
    # (Monday's dinner: the elder's standing order books Saturday's dinner to eat in)
    for days, meal, diners in ((1, "lunch", (elder, lone, neighbour)), (3, "dinner", (elder,))):
        menu, _ = await publish_menu(canteen_id=canteen.id, day=now.date() + timedelta(days=days), meal=meal,
                                     dishes=DISHES, price_fen=1500, by_id=cook.id, now=now)
        for person in diners:
            await book(menu_id=menu.id, resident_id=person.id, by_id=person.id, mode="delivery", now=now)
        await run_cutoff(menu.id, menu.cutoff_at)  # builds the routes
        menus[meal] = menu
    routes = {(r.menu_id, r.name): r.id for r in await Route.all()}
    route_open = routes[(menus["lunch"].id, "1号楼")]
    route_out = routes[(menus["lunch"].id, "5号楼")]
    route_claimed = routes[(menus["dinner"].id, "1号楼")]
    for route_id in (route_out, route_claimed):
        await rider_core.claim(route_id, volunteer.id, now)
    lone_stop = await RouteStop.get(route_id=route_out, resident_id=lone.id)
    await rider_core.mark_stop(lone_stop.id, volunteer.id, delivered=False, now=now, note="敲门无人应答")
    return {"route_open": route_open, "route_out": route_out, "route_claimed": route_claimed,
            "stop_pending": (await RouteStop.get(route_id=route_out, resident_id=neighbour.id)).id,
            "alert": (await WelfareAlert.get(stop_id=lone_stop.id)).id}
