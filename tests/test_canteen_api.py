"""幸福食堂 through /api/v1 as the mini-program sees it: a child books her mother's lunch at the
right price and rule, the wallet holds it, the cut-off charges it, the kitchen's count and its
printable sheet, the counter serves by the QR code, the figures; a retried booking; bad input
refused with nothing changed; the waiting list's offer; settings, rules, standing orders and
cards; and who may see or do what."""

from __future__ import annotations

import asyncio
import io
from datetime import UTC, date, datetime, timedelta
from typing import Any

import openpyxl
import pytest
from pypdf import PdfReader

from bot.clock import FrozenClock
from models.canteen import Booking, ClosedDay, Menu, PriceRule, StandingOrder, TopUp
from models.canteen_booking import book, close_day, publish_menu, set_standing
from models.canteen_wallet import top_up, wallet_of
from models.facts import declare
from models.jobs import sweep_due
from models.ledger import check_books
from models.places import Canteen, Community
from models.proxies import decide_link, request_link
from models.residents import Resident
from models.roles import Role, grant
from tests.api import MiniProgram
from tests.test_redemption_api import phone, post
from tests.test_redemption_chat import encodes

pytestmark = pytest.mark.usefixtures("demo")
NOW = datetime(2026, 11, 27, 1, 0, tzinfo=UTC)  # Friday 09:00 in Shanghai
MONDAY = date(2026, 11, 30)
MONDAY_CUTOFF = datetime(2026, 11, 30, 1, 30, tzinfo=UTC)  # lunch's cut-off, 09:30 in Shanghai
MONDAY_LUNCH = datetime(2026, 11, 30, 3, 30, tzinfo=UTC)  # 11:30
DISHES = [{"name": "清蒸鱼", "marks": ["soft", "low_salt"]}, {"name": "炒青菜", "marks": []}]


async def ids() -> dict[str, int]:
    """The demo's canteen and people; 王秀兰 (86 on Monday, 低保, both verified) is 孙志愿's mother."""
    out = {"canteen": (await Canteen.get(name="米家社区幸福食堂")).id}
    for name in ("陈食堂", "周社工", "孙志愿", "王秀兰", "张德福"):
        out[name] = (await Resident.get(name=name)).id
    staff = out["周社工"]
    await declare(resident_id=out["王秀兰"], code="birth_date", value="1940-03-01", now=NOW, by_id=staff, verified=True)
    await declare(resident_id=out["王秀兰"], code="dibao", now=NOW, by_id=staff, verified=True)
    link, _ = await request_link(proxy_id=out["孙志愿"], elder_id=out["王秀兰"], relation="子女", now=NOW)
    await decide_link(link_id=link.id, by_id=out["王秀兰"], how="elder", approve=True, now=NOW)
    return out


async def monday_lunch(w: dict[str, int], *, capacity: int | None = None) -> Menu:
    menu, _ = await publish_menu(canteen_id=w["canteen"], day=MONDAY, meal="lunch", dishes=DISHES, price_fen=1500,
                                 by_id=w["陈食堂"], now=NOW, capacity=capacity)
    return menu


async def fund(w: dict[str, int], name: str, fen: int) -> None:
    await top_up(canteen_id=w["canteen"], resident_id=w[name], amount_fen=fen, method="cash",
                 receipt_no=f"T-{name}-{fen}", by_id=w["陈食堂"], now=NOW)


async def send(mp: MiniProgram, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    resp = await mp.client.request(method, "/api/v1" + path, json=body, headers={"Authorization": f"Bearer {mp.token}"})
    return resp.status, await resp.json()


async def download(mp: MiniProgram, path: str, **params: str) -> tuple[int, str, bytes]:
    resp = await mp.client.get("/api/v1" + path, params=params, headers={"Authorization": f"Bearer {mp.token}"})
    return resp.status, resp.content_type, await resp.read()


def pdf_text(data: bytes) -> str:
    # pypdf puts a NUL before each character of this CID-keyed font; the text itself is there
    return "\n".join(page.extract_text().replace("\x00", "") for page in PdfReader(io.BytesIO(data)).pages)


def sheet_rows(data: bytes, title: str) -> list[list[Any]]:
    return [[c.value for c in row] for row in openpyxl.load_workbook(io.BytesIO(data))[title].iter_rows()]


async def available_and_held(resident_id: int) -> tuple[int, int]:
    wallet = await wallet_of(resident_id, NOW)
    return wallet.available_fen, wallet.held_fen


# ---------------------------------------------------------------------------- acceptance


async def test_a_child_books_her_mothers_lunch_at_the_flat_price_and_the_kitchen_counts_it(
        client: Any, clock: FrozenClock) -> None:
    w = await ids()
    staff, child, elder = [await phone(client, name) for name in ("陈食堂", "孙志愿", "王秀兰")]
    canteen = f"/canteen/canteens/{w['canteen']}"
    assert [(c["name"], c["manage"]) for c in (await staff.call("GET", "/canteen/canteens")).body["items"]] == [
        ("米家社区幸福食堂", True)]
    status, published = await post(staff, canteen + "/menus", {"day": "2026-11-30", "meal": "lunch",
                                                                "dishes": DISHES, "price_fen": 1500})
    assert status == 201
    menu = published["menu"]
    assert (menu["meal_label"], menu["price"], menu["seats_left"], menu["dishes"][0]["mark_labels"]) == (
        "午餐", "15.00元", 120, ["软食", "低盐"])
    status, topped = await post(staff, canteen + "/top-ups", {"mobile": "13904180011", "amount_fen": 2000,
                                                              "method": "cash", "receipt_no": "R-001"})
    assert (status, topped["record"]["amount"], topped["wallet"]["available_fen"]) == (201, "20.00元", 2000)

    listed = (await child.call("GET", canteen + "/menus", for_resident_id=w["王秀兰"])).body["items"]
    assert [(m["id"], m["quote"]["price_fen"], m["quote"]["rule"], m["quote"]["rule_label"]) for m in listed] == [
        (menu["id"], 600, "flat", "60岁以上低保、特困老人每餐6.00元")]
    status, booked = await post(child, "/canteen/bookings", {"menu_id": menu["id"], "for_resident_id": w["王秀兰"]},
                                key="tap-1")
    assert status == 201
    assert (booked["name"], booked["status_label"], booked["price"], booked["rule"], booked["menu_price_fen"]) == (
        "王秀兰", "已预订", "6.00元", "flat", 1500)
    retried = await asyncio.gather(*(post(child, "/canteen/bookings", {"menu_id": menu["id"],
                                                                      "for_resident_id": w["王秀兰"]}, key="tap-1")
                                     for _ in range(3)))
    assert {(s, b["id"], b["status"]) for s, b in retried} == {(201, booked["id"], "booked")}
    assert await available_and_held(w["王秀兰"]) == (1400, 600)

    mine = (await elder.call("GET", "/canteen/bookings")).body
    assert (mine["available_fen"], mine["balance"], [b["id"] for b in mine["items"]]) == (
        1400, "20.00元", [booked["id"]])
    status, diner = await send(elder, "PUT", "/canteen/diner", {"diet": ["soft"], "allergies": "花生"})
    assert (status, diner["diet_labels"], diner["allergies"]) == (200, ["软食"], "花生")
    status, kind, png = await download(elder, booked["qr_url"])
    assert (status, kind) == (200, "image/png") and encodes(png, booked["code"])

    clock.set(MONDAY_CUTOFF)
    await sweep_due(clock.now())
    assert (await child.call("GET", f"/canteen/bookings/{booked['id']}")).body["status_label"] == "已扣款"
    kitchen = (await staff.call("GET", f"/canteen/menus/{menu['id']}/kitchen")).body
    address = (await Resident.get(id=w["王秀兰"]).prefetch_related("building")).address()
    assert (kitchen["total"], kitchen["dine_in"], kitchen["delivery"]) == (1, 1, 0)
    assert {k: n for k, n in kitchen["diets"].items() if n} == {"soft": 1, "allergy": 1}
    assert kitchen["notes"] == [{"name": "王秀兰", "address": address, "mode": "堂食", "needs": "软食；过敏：花生"}]
    assert "共1份：堂食1份，送餐0份" in kitchen["text"]
    status, kind, data = await download(staff, f"/canteen/menus/{menu['id']}/kitchen-sheet", format="xlsx")
    assert status == 200 and kind.endswith("spreadsheetml.sheet")
    rows = sheet_rows(data, "备餐单")
    assert ["合计1份：堂食1份，送餐0份"] == [r[0] for r in rows if str(r[0]).startswith("合计")]
    assert ["王秀兰", address, "堂食", "软食；过敏：花生"] in rows
    status, kind, data = await download(staff, f"/canteen/menus/{menu['id']}/kitchen-sheet")
    assert (status, kind) == (200, "application/pdf")
    text = pdf_text(data)
    assert "幸福食堂备餐单" in text and "王秀兰" in text and "过敏：花生" in text and "2026-11-30 午餐" in text

    clock.set(MONDAY_LUNCH)
    status, served = await post(staff, "/canteen/serve", {"code": booked["code"].lower()})
    assert (status, served["status_label"], served["served_at"]) == (200, "已就餐", MONDAY_LUNCH.isoformat())
    assert await post(staff, "/canteen/serve", {"booking_id": booked["id"]}) == (409, {
        "error": "rejected", "message": "王秀兰的11月30日（周一）午餐已于11:30登记就餐，不要重复打餐。", "fields": []})

    figures = (await staff.call("GET", canteen + "/figures", **{"from": "2026-11-27", "to": "2026-11-30"})).body
    total = figures["total"]
    assert (total["booked"], total["served"], total["missed"], total["paid_fen"], total["menu_value_fen"]) == (
        1, 1, 0, 600, 1500)
    assert [(r["rule"], r["booked"]) for r in figures["by_rule"]] == [("flat", 1)]
    assert figures["subsidy"] == [{"month": "2026-11", "gov_fen": 900, "ent_fen": 0}]
    assert (figures["topups"], figures["topup_fen"], figures["wallet_fen"]) == (1, 2000, 1400)
    status, kind, data = await download(staff, canteen + "/figures", format="xlsx", to="2026-11-30")
    assert status == 200 and ["2026-11", 900, 0, 900] in sheet_rows(data, "补贴")
    assert await check_books() == {"points": 0, "fen": 0}


# ---------------------------------------------------------------------------- retries and bad input


async def test_a_retried_booking_answers_the_first_even_after_a_cancel(client: Any) -> None:
    w = await ids()
    menu = await monday_lunch(w)
    await fund(w, "王秀兰", 2000)
    elder = await phone(client, "王秀兰")
    status, first = await post(elder, "/canteen/bookings", {"menu_id": menu.id}, key="k-1")
    assert (status, first["status"]) == (201, "booked")
    status, cancelled = await post(elder, f"/canteen/bookings/{first['id']}/cancel", {})
    assert (status, cancelled["status_label"]) == (200, "已取消")
    assert await available_and_held(w["王秀兰"]) == (2000, 0)
    status, again = await post(elder, "/canteen/bookings", {"menu_id": menu.id}, key="k-1")
    assert (status, again["id"], again["status"]) == (201, first["id"], "cancelled")  # never booked a second time
    assert await available_and_held(w["王秀兰"]) == (2000, 0)
    other = await post(elder, "/canteen/bookings", {"menu_id": menu.id, "mode": "delivery"}, key="k-1")
    assert other[0] == 422 and other[1]["fields"][0]["field"] == "header.Idempotency-Key"
    status, rebooked = await post(elder, "/canteen/bookings", {"menu_id": menu.id}, key="k-2")
    assert (status, rebooked["id"], rebooked["status"]) == (201, first["id"], "booked")
    assert await available_and_held(w["王秀兰"]) == (1400, 600)


async def test_bad_input_is_refused_with_a_clear_message_and_changes_nothing(client: Any) -> None:
    w = await ids()
    menu = await monday_lunch(w)
    await fund(w, "王秀兰", 2000)
    staff, elder = await phone(client, "陈食堂"), await phone(client, "王秀兰")
    canteen = f"/canteen/canteens/{w['canteen']}"
    before = (await Booking.all().count(), await TopUp.all().count(), await PriceRule.all().count(),
              await Menu.all().count(), await available_and_held(w["王秀兰"]))
    invalid: list[tuple[MiniProgram, str, dict[str, Any], str]] = [
        (elder, "/canteen/bookings", {"menu_id": str(menu.id)}, "body.menu_id"),
        (elder, "/canteen/bookings", {"menu_id": menu.id, "mode": "fly"}, "body.mode"),
        (elder, "/canteen/bookings", {"menu_id": menu.id, "seat": 3}, "body.seat"),
        (staff, canteen + "/top-ups", {"resident_id": w["王秀兰"], "amount_fen": 0, "method": "cash",
                                       "receipt_no": "X"}, "body.amount_fen"),
        (staff, canteen + "/top-ups", {"resident_id": w["王秀兰"], "amount_fen": 100, "method": "cash",
                                       "receipt_no": "X", "mobile": "13904180011"}, "body"),
        (staff, canteen + "/top-ups", {"resident_id": w["王秀兰"], "amount_fen": 100, "method": "gold",
                                       "receipt_no": "X"}, "body.method"),
        (staff, canteen + "/menus", {"day": "2026-02-30", "meal": "lunch", "dishes": DISHES, "price_fen": 1},
         "body.day"),
        (staff, canteen + "/menus", {"day": "2026-12-01", "meal": "lunch", "dishes": [], "price_fen": 1},
         "body.dishes"),
        (staff, canteen + "/menus", {"day": "2026-12-01", "meal": "supper", "dishes": DISHES, "price_fen": 1},
         "body.meal"),
        (staff, canteen + "/price-rules", {"kind": "menu", "params": {}, "effective_from": "2026-12-01",
                                           "reason": "x"}, "body.kind"),
    ]
    for mp, path, body, field in invalid:
        status, answer = await post(mp, path, body)
        assert status == 422 and field in {f["field"] for f in answer["fields"]}, (path, body, answer)
    refused: list[tuple[MiniProgram, str, dict[str, Any], str]] = [
        (elder, "/canteen/bookings", {"menu_id": menu.id, "mode": "delivery"},
         "送餐只为需要送餐上门的居民提供，请选择堂食；需要送餐请联系食堂登记。"),
        (staff, canteen + "/top-ups", {"resident_id": w["王秀兰"], "amount_fen": 5000, "method": "cash",
                                       "receipt_no": "T-王秀兰-2000"},
         "票据号已用于另一笔充值（20.00元），请核对票据号。"),
        (staff, canteen + "/refunds", {"resident_id": w["王秀兰"], "amount_fen": 2001, "method": "cash",
                                       "receipt_no": "B-1"}, "余额不足：当前可用20.00元。"),
        (staff, canteen + "/price-rules", {"kind": "flat", "params": {"price_fen": 500},
                                           "effective_from": "2026-11-26", "reason": "降价"},
         "生效日期不能早于今天（11月27日）：已发生的价格不能改。"),
        (staff, canteen + "/menus", {"day": "2026-12-25", "meal": "lunch", "dishes": DISHES, "price_fen": 1500},
         "菜单可以发布今天到7天后的。"),
    ]
    for mp, path, body, message in refused:
        status, answer = await post(mp, path, body)
        assert status == 409 and answer["error"] == "rejected" and message in answer["message"], (path, answer)
    after = (await Booking.all().count(), await TopUp.all().count(), await PriceRule.all().count(),
             await Menu.all().count(), await available_and_held(w["王秀兰"]))
    assert after == before


# ---------------------------------------------------------------------------- the waiting list, settings, rules


async def test_a_freed_seat_is_offered_and_taken_through_the_api(client: Any) -> None:
    w = await ids()
    menu = await monday_lunch(w, capacity=1)
    await fund(w, "王秀兰", 2000)
    await fund(w, "张德福", 2000)
    elder, neighbour = await phone(client, "王秀兰"), await phone(client, "张德福")
    _, first = await post(elder, "/canteen/bookings", {"menu_id": menu.id})
    status, waiting = await post(neighbour, "/canteen/bookings", {"menu_id": menu.id})
    assert (status, waiting["status_label"]) == (201, "候补中")
    price = waiting["price_fen"]  # quoted for him (nothing is held while he waits)
    assert await available_and_held(w["张德福"]) == (2000, 0)
    await post(elder, f"/canteen/bookings/{first['id']}/cancel", {})
    offered = (await neighbour.call("GET", f"/canteen/bookings/{waiting['id']}")).body
    assert offered["status"] == "offered" and offered["offer_until"] is not None
    status, taken = await post(neighbour, f"/canteen/bookings/{waiting['id']}/offer", {"accept": True})
    assert (status, taken["status_label"], taken["price_fen"]) == (200, "已预订", price)
    assert await available_and_held(w["张德福"]) == (2000 - price, price)
    listed = (await elder.call("GET", f"/canteen/canteens/{w['canteen']}/menus")).body["items"]
    assert [(m["seats_left"], m["booking_status"]) for m in listed] == [(0, "cancelled")]


async def test_staff_change_settings_closed_days_and_rules_and_a_diner_keeps_standing_orders(client: Any) -> None:
    w = await ids()
    staff, elder = await phone(client, "陈食堂"), await phone(client, "王秀兰")
    canteen = f"/canteen/canteens/{w['canteen']}"
    status, settings = await send(staff, "PUT", canteen + "/settings", {"gov_share_pct": 60, "closed_weekdays": [7]})
    assert (status, settings["gov_share_pct"], settings["closed_weekdays"], settings["no_show_pays"]) == (
        200, 60, [7], True)
    status, settings = await send(staff, "PUT", canteen + "/slots", {"meal": "lunch", "capacity": 100})
    assert [(s["meal"], s["capacity"], s["cutoff"]) for s in settings["slots"]][1] == ("lunch", 100, "09:30")
    status, settings = await post(staff, canteen + "/closed-days", {"day": "2026-12-02", "reason": "设备检修"})
    assert (status, [(d["day"], d["reason"]) for d in settings["closed_days"]]) == (201, [("2026-12-02", "设备检修")])
    closed = await ClosedDay.get(day=date(2026, 12, 2))
    status, settings = await send(staff, "DELETE", f"/canteen/closed-days/{closed.id}")
    assert (status, settings["closed_days"]) == (200, [])

    status, rules = await post(staff, canteen + "/price-rules", {"kind": "flat", "params": {"price_fen": 500},
                                                                 "effective_from": "2026-11-30", "reason": "街道调价"})
    assert status == 201
    assert {r["kind"]: r["params"].get("price_fen") for r in rules["in_force"]}["flat"] == 600  # today's stays
    assert [(r["kind"], r["params"]["price_fen"], r["effective_from"]) for r in rules["history"]] == [
        ("flat", 500, "2026-11-30")]
    assert (await elder.call("GET", canteen + "/price-rules")).body == rules  # the rules are public

    await fund(w, "王秀兰", 2000)
    status, order = await post(elder, "/canteen/standing-orders", {"meals": ["lunch"], "weekdays": [1, 2, 3, 4, 5]})
    assert (status, order["meal_labels"], order["weekdays"]) == (201, ["午餐"], [1, 2, 3, 4, 5])
    menu = await monday_lunch(w)
    mine = (await elder.call("GET", "/canteen/bookings")).body["items"]
    assert [(b["menu_id"], b["status"], b["price_fen"]) for b in mine] == [(menu.id, "booked", 500)]  # new price
    status, ended = await send(elder, "DELETE", f"/canteen/standing-orders/{order['id']}")
    assert status == 200 and ended["ended_at"] is not None
    assert (await elder.call("GET", "/canteen/standing-orders")).body["items"] == []

    cards = (await elder.call("GET", "/canteen/cards")).body
    assert cards["months"] == [{"month": "2026-11", "eligible": False, "card_id": None},
                               {"month": "2026-12", "eligible": False, "card_id": None}]
    status, refused = await post(elder, "/canteen/cards", {"month": "2026-12"})
    assert status == 409 and "月卡面向60岁以上" in refused["message"]


# ---------------------------------------------------------------------------- who may see what


async def test_another_canteens_staff_and_neighbours_see_nothing_and_serve_nothing(
        client: Any, clock: FrozenClock) -> None:
    w = await ids()
    menu = await monday_lunch(w)
    await fund(w, "王秀兰", 2000)
    booking = await book(menu_id=menu.id, resident_id=w["王秀兰"], by_id=w["王秀兰"], mode="dine_in", now=NOW)
    xinqiu = await Community.get(name="新邱社区")
    other = await Canteen.create(name="新邱社区幸福食堂", community=xinqiu)
    cook = await Resident.create(name="吴厨师", mobile="13900007777", community_id=xinqiu.id, created_at=NOW)
    await grant(resident_id=cook.id, role=Role.CANTEEN_STAFF, scope_id=other.id, now=NOW)
    clock.set(MONDAY_LUNCH)
    await sweep_due(clock.now())
    other_staff, neighbour, elder = [await phone(client, n) for n in ("吴厨师", "张德福", "王秀兰")]
    canteen = f"/canteen/canteens/{w['canteen']}"
    for mp in (other_staff, neighbour, elder):
        for path in (f"/canteen/menus/{menu.id}/kitchen", f"/canteen/menus/{menu.id}/kitchen-sheet",
                     f"/canteen/menus/{menu.id}/bookings", canteen + "/figures", canteen + "/settings"):
            assert (await mp.call("GET", path)).status == 404, path
        assert (await post(mp, "/canteen/serve", {"code": booking.code}))[0] == 404
        assert (await post(mp, canteen + "/top-ups", {"resident_id": w["张德福"], "amount_fen": 100,
                                                      "method": "cash", "receipt_no": "Z"}))[0] == 404
    for mp in (other_staff, neighbour):
        for path in (f"/canteen/bookings/{booking.id}", f"/canteen/bookings/{booking.id}/qr"):
            assert (await mp.call("GET", path)).status == 404
        for path in ("/canteen/wallet", "/canteen/bookings", "/canteen/diner", "/canteen/cards"):
            assert (await mp.call("GET", path, for_resident_id=w["王秀兰"])).status == 404, path
        assert (await post(mp, f"/canteen/bookings/{booking.id}/cancel", {}))[0] == 404
    theirs = (await other_staff.call("GET", "/canteen/canteens")).body["items"]
    assert [c["name"] for c in theirs] == ["新邱社区幸福食堂"]
    assert (await Booking.get(id=booking.id)).status == "charged" and await StandingOrder.all().count() == 0
    assert (await post(await phone(client, "陈食堂"), "/canteen/serve", {"code": booking.code}))[0] == 200


async def test_a_family_proxy_books_sees_and_cancels_for_the_elder_and_it_is_recorded(client: Any) -> None:
    w = await ids()
    menu = await monday_lunch(w)
    await fund(w, "王秀兰", 2000)
    child = await phone(client, "孙志愿")
    assert (await child.call("GET", "/canteen/wallet", for_resident_id=w["王秀兰"])).body["available"] == "20.00元"
    status, booked = await post(child, "/canteen/bookings", {"menu_id": menu.id, "for_resident_id": w["王秀兰"]})
    assert (status, booked["resident_id"]) == (201, w["王秀兰"])
    assert (await child.call("GET", "/canteen/bookings")).body["items"] == []  # the child's own: none
    status, _ = await post(child, f"/canteen/bookings/{booking_id(booked)}/cancel", {})
    assert status == 200
    elder = await phone(client, "王秀兰")
    actions = (await elder.call("GET", f"/residents/{w['王秀兰']}/actions")).body
    assert {"canteen_book", "canteen_cancel"} <= {a["action"] for a in actions["items"]}


def booking_id(answer: dict[str, Any]) -> int:
    return int(answer["id"])


# ---------------------------------------------------------------------------- the authorization matrix

MATRIX_MEAL_CODE = "MEAL2345"


async def matrix_canteen(me: Resident, elder: Resident, now: datetime) -> dict[str, int]:
    """For tests/test_api_matrix.py: today's lunch of 米家's canteen (open until 09:30), the elder's
    booking of it (code MATRIX_MEAL_CODE; her wallet holds 20 yuan), her standing order, a closed
    day; ``me`` acts for the elder."""
    canteen = await Canteen.get(name="米家社区幸福食堂")
    cook = await Resident.get(name="陈食堂")
    menu, _ = await publish_menu(canteen_id=canteen.id, day=now.date(), meal="lunch", dishes=DISHES, price_fen=1500,
                                 by_id=cook.id, now=now)
    await top_up(canteen_id=canteen.id, resident_id=elder.id, amount_fen=2000, method="cash", receipt_no="MATRIX",
                 by_id=cook.id, now=now)
    booking = await book(menu_id=menu.id, resident_id=elder.id, by_id=elder.id, mode="dine_in", now=now)
    await Booking.filter(id=booking.id).update(code=MATRIX_MEAL_CODE)
    order = await set_standing(canteen_id=canteen.id, resident_id=elder.id, by_id=elder.id, meals=["dinner"],
                               weekdays=[6], mode="dine_in", now=now)
    closed = await close_day(canteen_id=canteen.id, day=now.date() + timedelta(days=10), reason="检修", by_id=cook.id,
                             now=now)
    return {"canteen": canteen.id, "menu": menu.id, "meal_booking": booking.id, "standing": order.id,
            "closed_day": closed.id}
