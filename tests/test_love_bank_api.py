"""爱心银行 through /api/v1: my points a page at a time (and an elder's), the naming preference, each
community's settings (validation and who may), and staff corrections — a reversal once, refused
when the points were spent, adjustments once per Idempotency-Key, never below zero."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from models.ledger import AccountKind, Asset, Entry, Source, account, check_books, points_of, transfer
from models.love_bank import LoveBankSettings, named_in_rankings, settings_of
from models.places import Building, Community
from models.proxies import decide_link, request_link
from models.residents import Resident
from models.roles import Role, grant
from tests.api import MiniProgram
from tests.test_api import staff_session

pytestmark = pytest.mark.usefixtures("demo")

SHANGHAI = ZoneInfo("Asia/Shanghai")


def at(month: int, day: int, hour: int = 10) -> datetime:
    return datetime(2026, month, day, hour, tzinfo=SHANGHAI)


async def earn(person: Resident, amount: int, when: datetime, key: str, memo: str = "助老服务",
               source: str = Source.ACTIVITY) -> int:
    issuing = await account(Asset.POINTS, AccountKind.ISSUING, person.community_id, when)  # type: ignore[attr-defined]
    posted = await transfer(from_account=issuing, to_account=await points_of(person.id, when), amount=amount,
                            source=source, key=key, now=when, memo=memo)
    return posted.entry.id


async def spend(person: Resident, amount: int, when: datetime, key: str) -> int:
    escrow = await account(Asset.POINTS, AccountKind.ESCROW, person.community_id, when)  # type: ignore[attr-defined]
    posted = await transfer(from_account=await points_of(person.id, when), to_account=escrow, amount=amount,
                            source=Source.REDEMPTION, key=key, now=when, memo="大米")
    return posted.entry.id


async def balance_of(person: Resident) -> int:
    return (await points_of(person.id, at(11, 27))).balance


async def other_staff() -> Resident:
    """吴社工: community staff of 新邱社区."""
    xinqiu = await Community.get(name="新邱社区")
    person = await Resident.create(name="吴社工", mobile="13955550003", community=xinqiu,
                                   building=await Building.get(name="东2栋"), unit="1", room="101",
                                   status="verified", created_at=at(10, 1))
    await grant(resident_id=person.id, role=Role.COMMUNITY_STAFF, scope_id=xinqiu.id, now=at(10, 1))
    return person


async def test_my_points_a_page_at_a_time(client: Any) -> None:
    volunteer = await Resident.get(name="孙志愿")
    for day in range(1, 8):
        await earn(volunteer, day, at(11, day), f"e{day}")
    await earn(volunteer, 9, at(10, 30), "october")
    await spend(volunteer, 4, at(11, 20), "v1")
    mp = await staff_session(client, "mp-volunteer", "13904180004")

    first = await mp.call("GET", "/points", limit=3)
    assert first.status == 200, first
    body = first.body
    assert (body["name"], body["balance"], body["month_start"], body["month_earned"]) == ("孙志愿", 33, "2026-11-01",
                                                                                          28)
    assert body["named_in_rankings"] is False
    assert [(e["what"], e["amount"], e["source"]) for e in body["entries"]] == [
        ("兑换：大米", -4, "redemption"), ("志愿服务：助老服务", 7, "activity"), ("志愿服务：助老服务", 6, "activity")]
    seen = [e["id"] for e in body["entries"]]
    before = body["next_before"]
    while before is not None:
        page = (await mp.call("GET", "/points", limit=3, before=before)).body
        seen += [e["id"] for e in page["entries"]]
        before = page["next_before"]
    assert len(seen) == len(set(seen)) == 9  # every entry once, newest to oldest
    assert (await mp.call("GET", "/points", before=999_999)).status == 404
    assert (await mp.call("GET", "/points", limit=0)).status == 422

    # another's points: only through an active family link
    elder = await Resident.get(name="王秀兰")
    assert (await mp.call("GET", "/points", for_resident_id=elder.id)).status == 404


async def test_a_proxy_reads_and_sets_the_elders_points(client: Any) -> None:
    elder = await Resident.get(name="王秀兰")
    son = await Resident.create(name="王小明", mobile="13955550002", community_id=elder.community_id,  # type: ignore[attr-defined]
                                building_id=elder.building_id, unit="2", room="301", status="verified",  # type: ignore[attr-defined]
                                created_at=at(11, 1))
    link, _ = await request_link(proxy_id=son.id, elder_id=elder.id, relation="子女", now=at(11, 1))
    await decide_link(link_id=link.id, by_id=elder.id, how="elder", approve=True, now=at(11, 1))
    await earn(elder, 20, at(11, 10), "gift", "社区敬老积分", Source.CORRECTION)
    mp = await staff_session(client, "mp-son", "13955550002")
    got = await mp.call("GET", "/points", for_resident_id=elder.id)
    assert (got.body["name"], got.body["balance"], got.body["entries"][0]["what"]) == ("王秀兰", 20,
                                                                                         "更正：社区敬老积分")
    put = await mp.call("PUT", "/points/preferences", {"named_in_rankings": True, "for_resident_id": elder.id})
    assert put.status == 200 and put.body == {"resident_id": elder.id, "named_in_rankings": True}
    assert await named_in_rankings(elder.id) and not await named_in_rankings(son.id)
    mine = await mp.call("PUT", "/points/preferences", {"named_in_rankings": False})
    assert mine.body == {"resident_id": son.id, "named_in_rankings": False}
    assert (await mp.call("PUT", "/points/preferences", {"named_in_rankings": "yes"})).status == 422


async def test_settings_are_validated_and_only_the_communitys_staff_may(client: Any) -> None:
    mijia = await Community.get(name="米家社区")
    staff = await staff_session(client, "mp-staff", "13904180003")
    got = await staff.call("GET", "/love-bank/settings")
    assert got.status == 200
    rates = {r["code"]: r["points_per_hour"] for r in got.body["rates"]}
    assert (got.body["community"], rates["elder_care"], got.body["wish_points"], got.body["updated_by"]) == (
        "米家社区", 10, 10, None)

    changed = await staff.call("PUT", "/love-bank/settings", {"rates": {"elder_care": 12}, "wish_points": 15},
                               community_id=mijia.id)
    assert changed.status == 200, changed
    rates = {r["code"]: r["points_per_hour"] for r in changed.body["rates"]}
    assert (rates["elder_care"], rates["culture"], changed.body["wish_points"]) == (12, 5, 15)
    assert (changed.body["voucher_warn_days"], changed.body["updated_by"]) == (3, "周社工")

    for bad, field in [({"rates": {"elder_care": -1}}, "body.rates.elder_care"),
                       ({"rates": {"flying": 5}}, "body.rates.flying.[key]"),
                       ({"wish_points": 1001}, "body.wish_points"),
                       ({"voucher_warn_days": 31}, "body.voucher_warn_days"),
                       ({"wish_points": "20"}, "body.wish_points"),
                       ({"wish_points": 2.5}, "body.wish_points"),
                       ({"surprise": 1}, "body.surprise")]:
        refused = await staff.call("PUT", "/love-bank/settings", bad)
        assert refused.status == 422, bad
        assert field in [f["field"] for f in refused.body["fields"]], (bad, refused.body)
    current = await settings_of(mijia.id)
    assert (current.rate("elder_care"), current.wish_points, current.voucher_warn_days) == (12, 15, 3)

    await other_staff()
    for openid, mobile in (("mp-other", "13955550003"), ("mp-street", "13904180007"), ("mp-vol", "13904180004"),
                           ("mp-organiser", "13904180008")):
        caller = await staff_session(client, openid, mobile)
        assert (await caller.call("GET", "/love-bank/settings", community_id=mijia.id)).status == 404, openid
        assert (await caller.call("PUT", "/love-bank/settings", {"wish_points": 1},
                                  community_id=mijia.id)).status == 404, openid
    assert (await settings_of(mijia.id)).wish_points == 15
    assert await LoveBankSettings.filter(community_id=mijia.id).count() == 1


async def test_a_reversal_happens_once_and_not_after_the_points_were_spent(client: Any) -> None:
    volunteer = await Resident.get(name="孙志愿")
    wrong = await earn(volunteer, 30, at(11, 3), "a1")
    right = await earn(volunteer, 20, at(11, 4), "a2")
    staff = await staff_session(client, "mp-staff", "13904180003")

    undone = await staff.call("POST", f"/ledger/entries/{wrong}/reverse", {"reason": "记错了人"})
    assert undone.status == 201, undone
    assert (undone.body["reverses_id"], undone.body["amount"], undone.body["what"]) == (wrong, 30, "冲正：助老服务")
    assert undone.body["replayed"] is False and undone.body["reason"] == "记错了人"
    assert undone.body["balances"] == [{"resident_id": volunteer.id, "name": "孙志愿", "balance": 20}]
    again = await staff.call("POST", f"/ledger/entries/{wrong}/reverse", {"reason": "记错了人"})
    assert (again.status, again.body["id"], again.body["replayed"]) == (201, undone.body["id"], True)
    assert await balance_of(volunteer) == 20
    reversal = await staff.call("POST", f"/ledger/entries/{undone.body['id']}/reverse", {"reason": "撤销冲正"})
    assert reversal.status == 409 and "冲正记录不能再冲正" in reversal.body["message"]

    await spend(volunteer, 15, at(11, 5), "v1")  # 5 left: the 20 of "right" cannot come back
    refused = await staff.call("POST", f"/ledger/entries/{right}/reverse", {"reason": "重复"})
    assert refused.status == 409 and "积分不足" in refused.body["message"]
    redemption = await Entry.get(key="v1")
    follows_voucher = await staff.call("POST", f"/ledger/entries/{redemption.id}/reverse", {"reason": "退回"})
    assert follows_voucher.status == 409 and "兑换券" in follows_voucher.body["message"]
    assert (await staff.call("POST", f"/ledger/entries/{right}/reverse", {"reason": "  "})).status == 422
    assert await balance_of(volunteer) == 5
    assert await Entry.filter(reverses_id__isnull=False).count() == 1

    await other_staff()
    other = await staff_session(client, "mp-other", "13955550003")
    assert (await other.call("POST", f"/ledger/entries/{right}/reverse", {"reason": "重复"})).status == 404
    assert (await other.call("POST", "/ledger/entries/999999/reverse", {"reason": "重复"})).status == 404
    assert await check_books() == {Asset.POINTS: 0, Asset.FEN: 0}


async def _adjust(client: Any, mp: MiniProgram, body: dict[str, Any], key: str | None) -> Any:
    headers = {"Authorization": f"Bearer {mp.token}"}
    if key is not None:
        headers["Idempotency-Key"] = key
    resp = await client.post("/api/v1/ledger/adjustments", json=body, headers=headers)
    return resp.status, await resp.json()


async def test_adjustments_once_per_key_and_never_below_zero(client: Any) -> None:
    elder = await Resident.get(name="王秀兰")
    staff = await staff_session(client, "mp-staff", "13904180003")
    body = {"resident_id": elder.id, "amount": 25, "reason": "补记重阳节服务"}

    status, first = await _adjust(client, staff, body, "adj-1")
    assert status == 201, first
    assert (first["amount"], first["what"], first["replayed"]) == (25, "更正：积分调整", False)
    assert first["balances"] == [{"resident_id": elder.id, "name": "王秀兰", "balance": 25}]
    for _ in range(3):  # a double tap, a retry: one effect
        status, again = await _adjust(client, staff, body, "adj-1")
        assert (status, again["id"], again["replayed"]) == (201, first["id"], True)
    assert await balance_of(elder) == 25
    status, same_token = await _adjust(client, staff, {**body, "client_token": "adj-1"}, None)
    assert (status, same_token["id"]) == (201, first["id"])
    status, other_movement = await _adjust(client, staff, {**body, "amount": 30}, "adj-1")
    assert status == 409 and "请求编号" in other_movement["message"]

    status, taken = await _adjust(client, staff, {**body, "amount": -10, "reason": "重复记录"}, "adj-2")
    assert (status, taken["balances"][0]["balance"]) == (201, 15)
    status, refused = await _adjust(client, staff, {**body, "amount": -16, "reason": "重复记录"}, "adj-3")
    assert status == 409 and "积分不足" in refused["message"] and "15分" in refused["message"]
    assert await balance_of(elder) == 15

    assert (await _adjust(client, staff, body, None))[0] == 422  # no key at all
    assert (await _adjust(client, staff, {**body, "amount": 0}, "adj-4"))[0] == 422
    assert (await _adjust(client, staff, {**body, "reason": ""}, "adj-5"))[0] == 422
    assert (await _adjust(client, staff, {**body, "client_token": "x"}, "adj-6"))[0] == 422  # two different keys
    await other_staff()
    other = await staff_session(client, "mp-other", "13955550003")
    assert (await _adjust(client, other, body, "adj-7"))[0] == 404
    volunteer = await staff_session(client, "mp-volunteer", "13904180004")
    assert (await _adjust(client, volunteer, body, "adj-8"))[0] == 404
    assert await balance_of(elder) == 15
    assert await check_books() == {Asset.POINTS: 0, Asset.FEN: 0}


async def test_staff_list_a_residents_entries_with_who_and_what_may_be_reversed(client: Any) -> None:
    volunteer = await Resident.get(name="孙志愿")
    earned = await earn(volunteer, 30, at(11, 3), "a1")
    spent = await spend(volunteer, 10, at(11, 4), "v1")
    staff = await staff_session(client, "mp-staff", "13904180003")
    undo = await staff.call("POST", f"/ledger/entries/{earned}/reverse", {"reason": "记错了人"})
    assert undo.status == 409  # 20 left of the 30: spent since
    status, adjusted = await _adjust(client, staff, {"resident_id": volunteer.id, "amount": 5, "reason": "补记"},
                                     "adj-1")
    assert status == 201

    listing = await staff.call("GET", "/ledger/entries", resident_id=volunteer.id)
    assert listing.status == 200, listing
    assert (listing.body["name"], listing.body["balance"], listing.body["next_before"]) == ("孙志愿", 25, None)
    rows = {e["id"]: e for e in listing.body["entries"]}
    assert [e["id"] for e in listing.body["entries"]] == [adjusted["id"], spent, earned]
    assert (rows[adjusted["id"]]["actor"], rows[adjusted["id"]]["reason"], rows[adjusted["id"]]["amount"]) == (
        "周社工", "补记", 5)
    assert [rows[i]["reversible"] for i in (adjusted["id"], spent, earned)] == [True, False, True]

    await other_staff()
    other = await staff_session(client, "mp-other", "13955550003")
    assert (await other.call("GET", "/ledger/entries", resident_id=volunteer.id)).status == 404
    me = await staff_session(client, "mp-volunteer", "13904180004")
    assert (await me.call("GET", "/ledger/entries", resident_id=volunteer.id)).status == 404
    assert (await staff.call("GET", "/ledger/entries")).status == 422


async def matrix_love_bank(elder: Resident, now: datetime) -> dict[str, int]:
    """For tests/test_api_matrix.py: the elder earned 20 points in 米家社区 (an entry staff may reverse)."""
    return {"love_entry": await earn(elder, 20, now, "matrix-love-bank", "助老服务")}
