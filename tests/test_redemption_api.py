"""Redemption through /api/v1 as the mini-program sees it: the catalogue and its management,
redeeming (and retrying), my vouchers and their QR codes, the partner's check and use, cancelling,
donations with confirmation, a proxy redeeming for an elder, and who may see what."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from bot.api import create_session
from bot.app import SERVICES
from bot.clock import FrozenClock
from models.jobs import sweep_due
from models.ledger import AccountKind, Asset, Source, account, balance, points_of, transfer
from models.outbox import OutboxMessage
from models.places import Community, Shop
from models.proxies import decide_link, request_link
from models.redemption import CatalogueItem, Donation, Voucher, create_donation, redeem
from models.residents import Resident, WechatAccount
from models.roles import Role, grant
from tests.api import MiniProgram
from tests.test_redemption_chat import encodes

pytestmark = pytest.mark.usefixtures("demo")
NOW = datetime(2026, 11, 27, 1, 0, tzinfo=UTC)


async def phone(client: Any, name: str) -> MiniProgram:
    """A mini-program session of a demo person."""
    person = await Resident.get(name=name)
    account, _ = await WechatAccount.get_or_create(openid=f"mp-{person.id}", defaults={
        "channel": "mp", "resident": person, "created_at": NOW})
    mp = MiniProgram(client, account.openid)
    mp.token = await create_session(client.app[SERVICES].store, account, 1)
    return mp


async def earn(name: str, amount: int) -> None:
    person = await Resident.get(name=name)
    issuing = await account(Asset.POINTS, AccountKind.ISSUING, (await Community.get(name="米家社区")).id, NOW)
    await transfer(from_account=issuing, to_account=await points_of(person.id, NOW), amount=amount,
                   source=Source.ACTIVITY, key=f"earn:{name}:{amount}", now=NOW)


async def points(name: str) -> int:
    return await balance(await points_of((await Resident.get(name=name)).id, NOW))


async def post(mp: MiniProgram, path: str, body: Any = None, key: str | None = None) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {mp.token}"} | ({"Idempotency-Key": key} if key else {})
    resp = await mp.client.post("/api/v1" + path, json=body, headers=headers)
    return resp.status, await resp.json()


async def item_id(name: str) -> int:
    return (await CatalogueItem.get(name=name)).id


async def test_redeem_see_the_voucher_and_its_qr_and_the_shop_checks_and_uses_it(client: Any) -> None:
    await earn("孙志愿", 100)
    me = await phone(client, "孙志愿")
    catalogue = (await me.call("GET", "/catalogue")).body
    assert catalogue["balance"] == 100
    assert [(i["name"], i["price"], i["affordable"], i["where"]) for i in catalogue["items"]] == [
        ("助餐券（一餐）", 15, True, "米家社区幸福食堂"), ("志愿理发一次", 30, True, "米家社区居委会"),
        ("洗衣液一瓶", 60, True, "米家便民超市"), ("食用油一桶", 120, False, "米家便民超市")]
    oil = await post(me, "/redemptions", {"item_id": await item_id("食用油一桶")}, key="tap-0")
    assert oil == (409, {"error": "rejected", "message": "积分不足：当前可用100分。", "fields": []})

    status, voucher = await post(me, "/redemptions", {"item_id": await item_id("洗衣液一瓶")}, key="tap-1")
    assert status == 201
    assert (voucher["name"], voucher["price"], voucher["status_label"], voucher["where"], voucher["valid_until"]) == \
        ("洗衣液一瓶", 60, "未使用", "米家便民超市", "2026-12-27")
    soap = await item_id("洗衣液一瓶")
    retried = await asyncio.gather(*(post(me, "/redemptions", {"item_id": soap}, key="tap-1") for _ in range(3)))
    assert {(s, v["id"]) for s, v in retried} == {(201, voucher["id"])}
    other = await post(me, "/redemptions", {"item_id": await item_id("志愿理发一次")}, key="tap-1")
    assert other[0] == 422 and other[1]["fields"][0]["field"] == "header.Idempotency-Key"
    assert await points("孙志愿") == 40 and await Voucher.all().count() == 1

    mine = (await me.call("GET", "/vouchers", status="unused")).body["items"]
    assert [v["code"] for v in mine] == [voucher["code"]]
    assert (await me.call("GET", f"/vouchers/{voucher['id']}")).body == voucher
    resp = await client.get(f"/api/v1{voucher['qr_url']}", headers={"Authorization": f"Bearer {me.token}"})
    assert resp.status == 200 and resp.content_type == "image/png"
    assert encodes(await resp.read(), voucher["code"])

    clerk = await phone(client, "郑商户")
    status, seen = await post(clerk, "/vouchers/check", {"code": voucher["code"].lower()})
    assert status == 200
    assert (seen["name"], seen["holder"], seen["status"]) == ("洗衣液一瓶", "孙*愿", "issued")
    status, used = await post(clerk, "/vouchers/use", {"code": voucher["code"]})
    assert (status, used["status_label"], used["closed_at"]) == (200, "已使用", NOW.isoformat())
    assert await post(clerk, "/vouchers/use", {"code": voucher["code"]}) == (409, {
        "error": "rejected", "message": "这张兑换券已于11月27日09:00使用过了。", "fields": []})
    assert (await me.call("GET", f"/vouchers/{voucher['id']}")).body["status"] == "used"
    told = await OutboxMessage.filter(openid="demo-volunteer", kind="text").values_list("payload", flat=True)
    assert told == [{"content": f"您兑换的“洗衣液一瓶”（券码{voucher['code']}）已于11月27日09:00在米家便民超市使用。"}]
    assert (await post(me, f"/vouchers/{voucher['id']}/cancel"))[0] == 409


async def test_cancel_returns_points_and_stock_once_and_expiry_closes_the_rest(client: Any, clock: FrozenClock) -> None:
    await earn("孙志愿", 100)
    me = await phone(client, "孙志愿")
    _, cut = await post(me, "/redemptions", {"item_id": await item_id("志愿理发一次")})
    _, meal = await post(me, "/redemptions", {"item_id": await item_id("助餐券（一餐）")})
    assert cut["id"] != meal["id"] and await points("孙志愿") == 55  # no key: two requests, two vouchers
    for _ in range(2):
        status, cancelled = await post(me, f"/vouchers/{cut['id']}/cancel")
        assert (status, cancelled["status"]) == (200, "cancelled")
    assert await points("孙志愿") == 85 and (await CatalogueItem.get(name="志愿理发一次")).stock == 50
    clock.advance(timedelta(days=61))
    await sweep_due(clock.now())
    listed = (await me.call("GET", "/vouchers")).body["items"]
    assert {v["id"]: v["status"] for v in listed} == {cut["id"]: "cancelled", meal["id"]: "expired"}
    assert (await me.call("GET", "/vouchers", status="unused")).body["items"] == []
    assert (await post(me, f"/vouchers/{meal['id']}/cancel"))[1]["message"] == "这张兑换券已于1月26日到期作废。"
    assert await points("孙志愿") == 85


async def test_nobody_else_sees_a_voucher_and_only_its_partner_takes_it(client: Any) -> None:
    await earn("孙志愿", 200)
    me = await phone(client, "孙志愿")
    _, voucher = await post(me, "/redemptions", {"item_id": await item_id("食用油一桶")})
    neighbour = await phone(client, "张德福")
    for path in (f"/vouchers/{voucher['id']}", f"/vouchers/{voucher['id']}/qr"):
        assert (await neighbour.call("GET", path)).status == 404
    assert (await post(neighbour, f"/vouchers/{voucher['id']}/cancel"))[0] == 404
    other_shop = await Shop.create(name="米家药店", community_id=(await Community.get(name="米家社区")).id)
    await grant(resident_id=(await Resident.get(name="张德福")).id, role=Role.SHOP, scope_id=other_shop.id, now=NOW)
    for path in ("/vouchers/check", "/vouchers/use"):
        assert (await post(neighbour, path, {"code": voucher["code"]}))[0] == 404  # another shop's clerk
        assert (await post(me, path, {"code": voucher["code"]}))[0] == 404  # the owner
    staff = await phone(client, "周社工")
    assert (await staff.call("GET", f"/vouchers/{voucher['id']}")).status == 200  # community staff help at the desk
    assert (await post(staff, "/vouchers/use", {"code": voucher["code"]}))[0] == 404  # but take only their own items
    assert (await Voucher.get(id=voucher["id"])).status == "issued"


async def test_community_staff_manage_the_catalogue_and_a_new_price_spares_issued_vouchers(client: Any) -> None:
    staff = await phone(client, "周社工")
    shop_id = (await Shop.get(name="米家便民超市")).id
    status, item = await post(staff, "/catalogue", {"kind": "service", "name": "家电清洗", "price": 50, "stock": 1,
                                                    "valid_days": 14, "shop_id": shop_id, "per_person_limit": 1})
    assert status == 201
    assert (item["where"], item["active"], item["kind_label"]) == ("米家便民超市", True, "服务")
    bads: list[tuple[dict[str, Any], str]] = [({"price": 0}, "body.price"), ({"kind": "cash"}, "body.kind"),
                                              ({"stock": "5"}, "body.stock"), ({"name": "长" * 31}, "body.name")]
    for bad, field in bads:
        answer = await post(staff, "/catalogue", {"kind": "goods", "name": "米", "price": 5, "stock": 1,
                                                  "valid_days": 5} | bad)
        assert answer[0] == 422 and field in {f["field"] for f in answer[1]["fields"]}, bad
    volunteer = await phone(client, "孙志愿")
    assert (await post(volunteer, "/catalogue", {"kind": "goods", "name": "米", "price": 5, "stock": 1,
                                                 "valid_days": 5}))[0] == 404
    await earn("孙志愿", 100)
    _, voucher = await post(volunteer, "/redemptions", {"item_id": item["id"]})
    sold_out = await post(await phone(client, "李网格"), "/redemptions", {"item_id": item["id"]})
    assert sold_out[1]["message"] == "“家电清洗”已经兑完了，请看看其他项目。"

    resp = await staff.client.patch(f"/api/v1/catalogue/{item['id']}", json={"price": 80, "stock": 5},
                                    headers={"Authorization": f"Bearer {staff.token}"})
    changed = await resp.json()
    assert (resp.status, changed["price"], changed["stock"]) == (200, 80, 5)
    assert (await volunteer.call("GET", f"/vouchers/{voucher['id']}")).body["price"] == 50
    again = await post(volunteer, "/redemptions", {"item_id": item["id"]})
    assert again[1]["message"] == "“家电清洗”每人限兑1份，您已兑满。"
    patch = await volunteer.client.patch(f"/api/v1/catalogue/{item['id']}", json={"active": False},
                                         headers={"Authorization": f"Bearer {volunteer.token}"})
    assert patch.status == 404
    await staff.client.patch(f"/api/v1/catalogue/{item['id']}", json={"active": False},
                             headers={"Authorization": f"Bearer {staff.token}"})
    assert item["id"] not in [i["id"] for i in (await volunteer.call("GET", "/catalogue")).body["items"]]
    managed = (await staff.call("GET", "/catalogue", manage="true")).body
    assert managed["balance"] is None and {"家电清洗", "食用油一桶"} <= {i["name"] for i in managed["items"]}
    clerk_sees = (await (await phone(client, "郑商户")).call("GET", "/catalogue", manage="true")).body["items"]
    assert {i["name"] for i in clerk_sees} == {"食用油一桶", "洗衣液一瓶", "家电清洗"}


async def test_a_donation_shows_the_masked_recipient_and_moves_points_on_confirmation(
        client: Any, clock: FrozenClock) -> None:
    await earn("孙志愿", 50)
    me = await phone(client, "孙志愿")
    status, donation = await post(me, "/donations", {"recipient_mobile": "13904180011", "amount": 20, "note": "买点菜"},
                                  key="give-1")
    assert status == 201
    assert (donation["recipient"], donation["status"], donation["balance"]) == ("王*兰", "pending", 50)
    assert (await post(me, "/donations", {"recipient_mobile": "13904180011", "amount": 20}, key="give-1"))[1]["id"] \
        == donation["id"]
    elder = await phone(client, "王秀兰")
    assert (await post(elder, f"/donations/{donation['id']}/confirm"))[0] == 404
    status, done = await post(me, f"/donations/{donation['id']}/confirm")
    assert (status, done["status_label"], done["balance"]) == (200, "已转赠", 30)
    assert (await post(me, f"/donations/{donation['id']}/confirm"))[1]["balance"] == 30  # once
    assert (await elder.call("GET", "/catalogue")).body["balance"] == 20
    _, meal = await post(elder, "/redemptions", {"item_id": await item_id("助餐券（一餐）")})
    assert meal["price"] == 15 and await points("王秀兰") == 5

    _, late = await post(me, "/donations", {"recipient_mobile": "13904180012", "amount": 5})
    clock.advance(timedelta(minutes=11))
    lapsed = await post(me, f"/donations/{late['id']}/confirm")
    assert lapsed[0] == 409 and "超过10分钟" in lapsed[1]["message"]
    assert (await post(me, "/donations", {"recipient_mobile": "13904180012", "amount": 31}))[0] == 409
    assert (await post(me, "/donations", {"recipient_mobile": "13904180004", "amount": 1}))[1]["message"] == \
        "不能转赠给自己。"
    _, dropped = await post(me, "/donations", {"recipient_mobile": "13904180012", "amount": 5})
    assert (await post(me, f"/donations/{dropped['id']}/cancel"))[1]["status"] == "cancelled"
    assert await points("孙志愿") == 30 and await Donation.filter(status="done").count() == 1


async def test_recipient_lookups_are_limited_per_day(client: Any) -> None:
    await earn("孙志愿", 50)
    me = await phone(client, "孙志愿")
    answers = [await post(me, "/donations", {"recipient_mobile": f"139000000{i:02d}", "amount": 1}) for i in range(11)]
    assert [status for status, _ in answers] == [404] * 10 + [429]


async def test_a_family_proxy_redeems_and_lists_for_an_elder(client: Any) -> None:
    child = await Resident.get(name="孙志愿")
    elder = await Resident.get(name="王秀兰")
    link, _ = await request_link(proxy_id=child.id, elder_id=elder.id, relation="子女", now=NOW)
    await decide_link(link_id=link.id, by_id=elder.id, how="elder", approve=True, now=NOW)
    await earn("王秀兰", 40)
    me = await phone(client, "孙志愿")
    assert (await me.call("GET", "/catalogue", for_resident_id=elder.id)).body["balance"] == 40
    status, voucher = await post(me, "/redemptions", {"item_id": await item_id("助餐券（一餐）"),
                                                      "for_resident_id": elder.id})
    assert status == 201 and voucher["resident_id"] == elder.id
    assert await points("王秀兰") == 25 and await points("孙志愿") == 0
    listed = (await me.call("GET", "/vouchers", for_resident_id=elder.id)).body["items"]
    assert [v["id"] for v in listed] == [voucher["id"]]
    assert (await me.call("GET", "/vouchers")).body["items"] == []
    stranger = await phone(client, "张德福")
    assert (await stranger.call("GET", "/vouchers", for_resident_id=elder.id)).status == 404


MATRIX_CODE = "MTRX2345"


async def matrix_redemption(me: Resident, elder: Resident, now: datetime) -> dict[str, int]:
    """The authorization matrix's redemption: ``me`` holds 170 points, an unused voucher for the
    community's own haircut (code MATRIX_CODE) and a pending donation of 10 points to the elder;
    "catalogue_item" is the supermarket's oil (120 points)."""
    issuing = await account(Asset.POINTS, AccountKind.ISSUING, me.community_id, now)  # type: ignore[attr-defined]
    await transfer(from_account=issuing, to_account=await points_of(me.id, now), amount=200, source=Source.ACTIVITY,
                   key="matrix:earn", now=now)
    voucher = await redeem(me.id, await item_id("志愿理发一次"), key="matrix:voucher", now=now)
    await Voucher.filter(id=voucher.id).update(code=MATRIX_CODE)  # a code the table's rows can name
    donation = await create_donation(me.id, elder.id, 10, note="", key="matrix:donation", now=now)
    return {"catalogue_item": await item_id("食用油一桶"), "voucher": voucher.id, "donation": donation.id}
