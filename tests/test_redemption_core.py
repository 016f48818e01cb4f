"""Redemption's rules on the models: stock and points taken together, once per key; limits, sold
out, insufficient; cancel, use and expiry each once and moving the points where they belong;
donations confirmed once; the last item under concurrency (PostgreSQL)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from models.demo import load_demo
from models.errors import Forbidden, NotFound, UserFacingError
from models.jobs import ActionStatus, DueAction, sweep_due
from models.ledger import (
    AccountKind,
    Asset,
    Entry,
    Insufficient,
    KeyReused,
    Source,
    account,
    balance,
    check_books,
    points_of,
    transfer,
)
from models.outbox import OutboxMessage
from models.places import Canteen, Community, Shop
from models.redemption import (
    CODE_ALPHABET,
    CatalogueItem,
    Donation,
    DonationStatus,
    ItemKind,
    ItemUnavailable,
    LimitReached,
    SoldOut,
    Voucher,
    VoucherClosed,
    VoucherStatus,
    cancel_donation,
    cancel_voucher,
    confirm_donation,
    create_donation,
    create_item,
    expire_voucher,
    find_recipient,
    mask_name,
    redeem,
    update_item,
    use_voucher,
    voucher_to_take,
)
from models.residents import Resident, WechatAccount
from models.roles import Role, grant
from tests.conftest import requires_servers

pytestmark = pytest.mark.usefixtures("db")
NOW = datetime(2026, 11, 27, 2, 0, tzinfo=UTC)  # 周五 10:00 in Shanghai
BOOKS_AT_ZERO = {Asset.POINTS: 0, Asset.FEN: 0}


@pytest.fixture
async def w() -> dict[str, int]:
    """The demo, with the volunteer and the elder on WeChat, and the ids the tests use."""
    await load_demo(NOW)
    ids = {"mijia": (await Community.get(name="米家社区")).id, "xinqiu": (await Community.get(name="新邱社区")).id,
           "shop": (await Shop.get(name="米家便民超市")).id}
    for name in ("孙志愿", "王秀兰", "张德福", "郑商户", "周社工", "李网格"):
        ids[name] = (await Resident.get(name=name)).id
    await WechatAccount.create(openid="oa-elder", channel="oa", resident_id=ids["王秀兰"], created_at=NOW)
    for name in ("食用油一桶", "洗衣液一瓶", "志愿理发一次", "助餐券（一餐）"):
        ids[name] = (await CatalogueItem.get(name=name)).id
    return ids


async def earn(w: dict[str, int], name: str, amount: int, key: str = "") -> None:
    issuing = await account(Asset.POINTS, AccountKind.ISSUING, w["mijia"], NOW)
    await transfer(from_account=issuing, to_account=await points_of(w[name], NOW), amount=amount,
                   source=Source.ACTIVITY, key=key or f"earn:{name}:{amount}", now=NOW, memo="助老服务")


async def points(w: dict[str, int], name: str) -> int:
    return await balance(await points_of(w[name], NOW))


async def system(kind: str, owner: int) -> int:
    return await balance(await account(Asset.POINTS, kind, owner, NOW))


async def stock(item_id: int) -> int:
    return (await CatalogueItem.get(id=item_id)).stock


async def pushed(openid: str) -> list[str]:
    return [str(m.payload.get("content", "")) for m in await OutboxMessage.filter(openid=openid).order_by("id")]


async def test_redeeming_takes_one_of_the_stock_and_the_price_into_escrow_and_issues_a_code(w: dict[str, int]) -> None:
    await earn(w, "孙志愿", 200)
    voucher = await redeem(w["孙志愿"], w["食用油一桶"], key="k1", now=NOW)
    assert len(voucher.code) == 8 and set(voucher.code) <= set(CODE_ALPHABET)
    assert not set(voucher.code) & set("0O1I")
    assert (voucher.status, voucher.price) == (VoucherStatus.ISSUED, 120)
    # 30 days of validity from 11月27日: to the end of 12月27日 in Shanghai
    assert voucher.expires_at == datetime(2026, 12, 27, 16, 0, tzinfo=UTC)
    assert await points(w, "孙志愿") == 80
    assert await system(AccountKind.ESCROW, w["mijia"]) == 120
    assert await stock(w["食用油一桶"]) == 19
    entry = await Entry.get(ref=f"voucher:{voucher.id}")
    assert (entry.source, entry.memo, entry.amount) == (Source.REDEMPTION, "兑换：食用油一桶", 120)
    due = {(a.action, a.due_at) for a in await DueAction.filter(target=f"voucher:{voucher.id}")}
    assert due == {("voucher.expire", voucher.expires_at), ("voucher.warn", voucher.expires_at - timedelta(days=3))}
    assert await check_books() == BOOKS_AT_ZERO


async def test_a_retried_redemption_is_the_same_voucher_and_a_reused_key_is_refused(w: dict[str, int]) -> None:
    await earn(w, "孙志愿", 200)
    first = await redeem(w["孙志愿"], w["洗衣液一瓶"], key="tap", now=NOW)
    again = await redeem(w["孙志愿"], w["洗衣液一瓶"], key="tap", now=NOW + timedelta(seconds=3))
    assert again.id == first.id and again.code == first.code
    assert (await points(w, "孙志愿"), await stock(w["洗衣液一瓶"])) == (140, 29)
    with pytest.raises(KeyReused):
        await redeem(w["孙志愿"], w["志愿理发一次"], key="tap", now=NOW)
    assert await Voucher.all().count() == 1


async def test_the_per_person_limit_counts_held_and_used_vouchers_not_cancelled_ones(w: dict[str, int]) -> None:
    await earn(w, "孙志愿", 500)
    first = await redeem(w["孙志愿"], w["食用油一桶"], key="k1", now=NOW)
    with pytest.raises(LimitReached) as refused:
        await redeem(w["孙志愿"], w["食用油一桶"], key="k2", now=NOW)
    assert refused.value.message == "“食用油一桶”每人限兑1份，您已兑满。"
    assert (await points(w, "孙志愿"), await stock(w["食用油一桶"])) == (380, 19)
    await cancel_voucher(first.id, by_id=w["孙志愿"], now=NOW)
    second = await redeem(w["孙志愿"], w["食用油一桶"], key="k3", now=NOW)
    await use_voucher(second.code, by_id=w["郑商户"], now=NOW)
    with pytest.raises(LimitReached):
        await redeem(w["孙志愿"], w["食用油一桶"], key="k4", now=NOW)


async def test_sold_out_insufficient_paused_and_foreign_items_change_nothing(w: dict[str, int]) -> None:
    await earn(w, "孙志愿", 100)
    await CatalogueItem.filter(id=w["志愿理发一次"]).update(stock=0)
    with pytest.raises(SoldOut) as sold:
        await redeem(w["孙志愿"], w["志愿理发一次"], key="a", now=NOW)
    assert sold.value.message == "“志愿理发一次”已经兑完了，请看看其他项目。"
    with pytest.raises(Insufficient) as short:
        await redeem(w["孙志愿"], w["食用油一桶"], key="b", now=NOW)
    assert short.value.message == "积分不足：当前可用100分。"
    await CatalogueItem.filter(id=w["洗衣液一瓶"]).update(active=False)
    with pytest.raises(ItemUnavailable):
        await redeem(w["孙志愿"], w["洗衣液一瓶"], key="c", now=NOW)
    staff = await Resident.get(name="周社工")
    foreign = await CatalogueItem.create(community_id=w["xinqiu"], kind=ItemKind.GOODS, name="新邱的米", price=10,
                                         stock=5, valid_days=10, created_by=staff, created_at=NOW)
    with pytest.raises(NotFound):
        await redeem(w["孙志愿"], foreign.id, key="d", now=NOW)
    assert await points(w, "孙志愿") == 100 and await Voucher.all().count() == 0
    assert (await stock(w["食用油一桶"]), await stock(foreign.id)) == (20, 5)
    assert await check_books() == BOOKS_AT_ZERO


async def test_cancelling_returns_points_and_stock_once_and_only_the_owner_or_staff_may(w: dict[str, int]) -> None:
    await earn(w, "孙志愿", 200)
    voucher = await redeem(w["孙志愿"], w["食用油一桶"], key="k1", now=NOW)
    with pytest.raises(NotFound):
        await cancel_voucher(voucher.id, by_id=w["张德福"], now=NOW)
    with pytest.raises(NotFound):  # a shop clerk takes vouchers, but cancels none
        await cancel_voucher(voucher.id, by_id=w["郑商户"], now=NOW)
    cancelled = await cancel_voucher(voucher.id, by_id=w["孙志愿"], now=NOW)
    again = await cancel_voucher(voucher.id, by_id=w["孙志愿"], now=NOW)
    assert cancelled.status == again.status == VoucherStatus.CANCELLED
    assert (await points(w, "孙志愿"), await stock(w["食用油一桶"])) == (200, 20)
    assert await Entry.filter(key=f"voucher:{voucher.id}:cancel").count() == 1
    assert await system(AccountKind.ESCROW, w["mijia"]) == 0
    assert await DueAction.filter(target=f"voucher:{voucher.id}", status=ActionStatus.PENDING).count() == 0
    with pytest.raises(VoucherClosed, match="取消"):
        await use_voucher(voucher.code, by_id=w["郑商户"], now=NOW)
    other = await redeem(w["孙志愿"], w["洗衣液一瓶"], key="k2", now=NOW)
    await cancel_voucher(other.id, by_id=w["周社工"], now=NOW)  # community staff, for a resident at the counter
    assert await points(w, "孙志愿") == 200
    assert await check_books() == BOOKS_AT_ZERO


async def test_the_shop_marks_its_voucher_used_once_and_its_points_reach_the_shop(w: dict[str, int]) -> None:
    await earn(w, "孙志愿", 200)
    voucher = await redeem(w["孙志愿"], w["食用油一桶"], key="k1", now=NOW)
    other_shop = await Shop.create(name="米家药店", community_id=w["mijia"])
    await grant(resident_id=w["张德福"], role=Role.SHOP, scope_id=other_shop.id, now=NOW)
    for outsider in ("张德福", "周社工", "孙志愿"):  # another shop's clerk, staff (a shop's item), the owner
        with pytest.raises(NotFound):
            await use_voucher(voucher.code, by_id=w[outsider], now=NOW)
    seen = await voucher_to_take(f" {voucher.code[:4].lower()}-{voucher.code[4:]} ", by_id=w["郑商户"], now=NOW)
    assert seen.id == voucher.id and mask_name(seen.resident.name) == "孙*愿"
    used_at = NOW + timedelta(hours=2, minutes=5)
    used = await use_voucher(voucher.code, by_id=w["郑商户"], now=used_at)
    assert (used.status, used.closed_at, used.closed_by_id) == (VoucherStatus.USED, used_at, w["郑商户"])
    assert await system(AccountKind.PARTNER, w["shop"]) == 120
    assert await system(AccountKind.ESCROW, w["mijia"]) == 0
    with pytest.raises(VoucherClosed) as twice:
        await use_voucher(voucher.code, by_id=w["郑商户"], now=used_at + timedelta(minutes=1))
    assert twice.value.message == "这张兑换券已于11月27日12:05使用过了。"
    with pytest.raises(VoucherClosed):
        await cancel_voucher(voucher.id, by_id=w["孙志愿"], now=used_at)
    assert await stock(w["食用油一桶"]) == 19  # used: the stock stays taken
    assert await pushed("demo-volunteer") == [
        f"您兑换的“食用油一桶”（券码{voucher.code}）已于11月27日12:05在米家便民超市使用。"]
    assert await check_books() == BOOKS_AT_ZERO


async def test_own_items_are_taken_by_community_staff_and_meal_vouchers_also_by_the_canteen(w: dict[str, int]) -> None:
    await earn(w, "王秀兰", 100)
    haircut = await redeem(w["王秀兰"], w["志愿理发一次"], key="h", now=NOW)
    meal = await redeem(w["王秀兰"], w["助餐券（一餐）"], key="m", now=NOW)
    canteen = await Canteen.get(name="米家社区幸福食堂")
    await grant(resident_id=w["张德福"], role=Role.CANTEEN_STAFF, scope_id=canteen.id, now=NOW)
    with pytest.raises(NotFound):
        await use_voucher(haircut.code, by_id=w["郑商户"], now=NOW)  # the shop takes only its own
    with pytest.raises(NotFound):
        await use_voucher(haircut.code, by_id=w["张德福"], now=NOW)  # the canteen takes only meals
    await use_voucher(haircut.code, by_id=w["周社工"], now=NOW)
    await use_voucher(meal.code, by_id=w["张德福"], now=NOW)
    # the community's own items retire their points to the issuing account
    assert await system(AccountKind.ISSUING, w["mijia"]) == -100 + 30 + 15
    assert await points(w, "王秀兰") == 55
    assert await check_books() == BOOKS_AT_ZERO


async def test_a_voucher_warns_before_and_expires_at_the_end_of_its_validity(w: dict[str, int]) -> None:
    await earn(w, "王秀兰", 150)
    voucher = await redeem(w["王秀兰"], w["食用油一桶"], key="k", now=NOW)
    assert await sweep_due(NOW + timedelta(days=27)) == {"done": 0, "retry": 0, "failed": 0, "skipped": 0}
    warn_at = datetime(2026, 12, 24, 16, 0, tzinfo=UTC)  # 3 days before it ends
    await sweep_due(warn_at)
    assert await pushed("oa-elder") == [f"提醒：您兑换的“食用油一桶”（券码{voucher.code}）将于12月27日到期，"
                                        "请尽快到米家便民超市使用。不需要了可回复“我的兑换券”取消，积分退回。"]
    assert not await expire_voucher(voucher.id, warn_at)  # still valid
    await sweep_due(voucher.expires_at - timedelta(seconds=1))
    assert (await Voucher.get(id=voucher.id)).status == VoucherStatus.ISSUED
    await sweep_due(voucher.expires_at)
    expired = await Voucher.get(id=voucher.id)
    assert (expired.status, expired.closed_at) == (VoucherStatus.EXPIRED, voucher.expires_at)
    assert await system(AccountKind.EXPIRY, w["mijia"]) == 120
    assert await system(AccountKind.ESCROW, w["mijia"]) == 0
    assert await points(w, "王秀兰") == 30  # expired points do not come back
    assert await stock(w["食用油一桶"]) == 20  # the stock does
    assert (await Entry.get(key=f"voucher:{voucher.id}:expire")).source == Source.EXPIRY
    assert (await pushed("oa-elder"))[-1] == f"您兑换的“食用油一桶”（券码{voucher.code}）已过有效期，未使用，已作废。"
    assert not await expire_voucher(voucher.id, voucher.expires_at + timedelta(days=1))  # once
    with pytest.raises(VoucherClosed, match="12月27日到期作废"):
        await use_voucher(voucher.code, by_id=w["郑商户"], now=voucher.expires_at)
    assert await check_books() == BOOKS_AT_ZERO


async def test_a_voucher_past_its_validity_cannot_be_used_before_the_sweep_runs(w: dict[str, int]) -> None:
    await earn(w, "孙志愿", 100)
    voucher = await redeem(w["孙志愿"], w["洗衣液一瓶"], key="k", now=NOW)
    late = voucher.expires_at + timedelta(minutes=1)
    with pytest.raises(VoucherClosed, match="到期作废"):
        await use_voucher(voucher.code, by_id=w["郑商户"], now=late)
    assert (await Voucher.get(id=voucher.id)).status == VoucherStatus.EXPIRED
    assert await system(AccountKind.EXPIRY, w["mijia"]) == 60
    await sweep_due(late)  # the due action finds it done
    assert await system(AccountKind.EXPIRY, w["mijia"]) == 60


async def test_a_new_price_applies_to_later_redemptions_only(w: dict[str, int]) -> None:
    await earn(w, "孙志愿", 200)
    voucher = await redeem(w["孙志愿"], w["洗衣液一瓶"], key="k1", now=NOW)
    await update_item(w["洗衣液一瓶"], by_id=w["周社工"], changes={"price": 90, "valid_days": 7})
    assert (await Voucher.get(id=voucher.id)).price == 60
    later = await redeem(w["孙志愿"], w["洗衣液一瓶"], key="k2", now=NOW)
    assert later.price == 90 and later.expires_at < voucher.expires_at
    await cancel_voucher(voucher.id, by_id=w["孙志愿"], now=NOW)
    assert await points(w, "孙志愿") == 200 - 90  # the first voucher's 60 came back, not 90
    with pytest.raises(NotFound):
        await update_item(w["洗衣液一瓶"], by_id=w["郑商户"], changes={"price": 1})
    with pytest.raises(UserFacingError, match="积分"):
        await update_item(w["洗衣液一瓶"], by_id=w["周社工"], changes={"price": 0})


async def test_only_the_communitys_staff_add_items_and_a_shop_must_be_its_partner(w: dict[str, int]) -> None:
    common: dict[str, Any] = {"kind": ItemKind.SERVICE, "name": "家电清洗", "price": 50, "stock": 10, "valid_days": 30,
                              "now": NOW}
    with pytest.raises(Forbidden):
        await create_item(community_id=w["mijia"], by_id=w["李网格"], **common)
    foreign_shop = await Shop.create(name="新邱超市", community_id=w["xinqiu"])
    with pytest.raises(UserFacingError, match="合作商户"):
        await create_item(community_id=w["mijia"], by_id=w["周社工"], shop_id=foreign_shop.id, **common)
    item = await create_item(community_id=w["mijia"], by_id=w["周社工"], shop_id=w["shop"], **common)
    assert (item.shop_id, item.active, item.per_person_limit) == (w["shop"], True, 0)


async def test_a_donation_moves_points_member_to_member_once_after_the_donors_confirmation(w: dict[str, int]) -> None:
    await earn(w, "孙志愿", 50)
    elder = await find_recipient("139 0418 0011")
    assert mask_name(elder.name) == "王*兰"
    with pytest.raises(Insufficient):
        await create_donation(w["孙志愿"], elder.id, 51, note="", key="d0", now=NOW)
    with pytest.raises(UserFacingError, match="自己"):
        await create_donation(w["孙志愿"], w["孙志愿"], 5, note="", key="d1", now=NOW)
    donation = await create_donation(w["孙志愿"], elder.id, 20, note="天冷了买点油", key="d2", now=NOW)
    assert donation.status == DonationStatus.PENDING and await points(w, "王秀兰") == 0
    assert (await create_donation(w["孙志愿"], elder.id, 20, note="", key="d2", now=NOW)).id == donation.id
    with pytest.raises(NotFound):
        await confirm_donation(donation.id, donor_id=elder.id, now=NOW)  # only the donor confirms
    done = await confirm_donation(donation.id, donor_id=w["孙志愿"], now=NOW + timedelta(minutes=2))
    again = await confirm_donation(donation.id, donor_id=w["孙志愿"], now=NOW + timedelta(minutes=3))
    assert done.status == again.status == DonationStatus.DONE
    assert (await points(w, "孙志愿"), await points(w, "王秀兰")) == (30, 20)
    entry = await Entry.get(key=f"donation:{donation.id}")
    assert (entry.source, entry.memo, entry.actor_id) == (Source.DONATION, "孙*愿转赠王*兰：天冷了买点油", w["孙志愿"])
    assert await pushed("oa-elder") == [
        "孙志愿转赠给您20积分，留言：天冷了买点油。回复“积分”查看余额，“兑换”看看能换什么。"]
    with pytest.raises(UserFacingError, match="不能取消"):
        await cancel_donation(donation.id, donor_id=w["孙志愿"], now=NOW)
    # the elder redeems them like anyone else
    meal = await redeem(elder.id, w["助餐券（一餐）"], key="meal", now=NOW)
    assert meal.price == 15 and await points(w, "王秀兰") == 5
    assert await check_books() == BOOKS_AT_ZERO


async def test_an_unconfirmed_donation_lapses_and_a_cancelled_one_moves_nothing(w: dict[str, int]) -> None:
    await earn(w, "孙志愿", 50)
    late = await create_donation(w["孙志愿"], w["张德福"], 10, note="", key="d1", now=NOW)
    with pytest.raises(UserFacingError, match="超过10分钟"):
        await confirm_donation(late.id, donor_id=w["孙志愿"], now=NOW + timedelta(minutes=11))
    assert (await Donation.get(id=late.id)).status == DonationStatus.CANCELLED
    dropped = await create_donation(w["孙志愿"], w["张德福"], 10, note="", key="d2", now=NOW)
    await cancel_donation(dropped.id, donor_id=w["孙志愿"], now=NOW)
    with pytest.raises(UserFacingError, match="已取消"):
        await confirm_donation(dropped.id, donor_id=w["孙志愿"], now=NOW)
    spent = await create_donation(w["孙志愿"], w["张德福"], 40, note="", key="d3", now=NOW)
    await redeem(w["孙志愿"], w["志愿理发一次"], key="cut", now=NOW)  # the balance shrank meanwhile
    with pytest.raises(Insufficient):
        await confirm_donation(spent.id, donor_id=w["孙志愿"], now=NOW)
    assert (await Donation.get(id=spent.id)).status == DonationStatus.PENDING
    assert (await points(w, "孙志愿"), await points(w, "张德福")) == (20, 0)
    with pytest.raises(NotFound):
        await find_recipient("13900000000")
    with pytest.raises(UserFacingError, match="手机号"):
        await find_recipient("12345")


@requires_servers  # concurrent redemptions need PostgreSQL's row locks
async def test_many_residents_at_once_for_the_last_item_one_gets_it(w: dict[str, int]) -> None:
    await CatalogueItem.filter(id=w["志愿理发一次"]).update(stock=1)
    people = []
    for i in range(12):
        person = await Resident.create(name=f"居民{i}", community_id=w["mijia"], created_at=NOW)
        w[f"p{i}"] = person.id
        await earn(w, f"p{i}", 30)
        people.append(person.id)

    async def attempt(resident_id: int) -> str:
        try:
            await redeem(resident_id, w["志愿理发一次"], key=f"last:{resident_id}", now=NOW)
            return "ok"
        except SoldOut:
            return "sold out"

    outcomes = await asyncio.gather(*(attempt(p) for p in people))
    assert sorted(outcomes) == ["ok"] + ["sold out"] * 11
    assert await stock(w["志愿理发一次"]) == 0
    assert await system(AccountKind.ESCROW, w["mijia"]) == 30
    assert await check_books() == BOOKS_AT_ZERO


@requires_servers  # concurrent redemptions need PostgreSQL's row locks
async def test_copies_of_one_request_at_once_make_one_voucher_even_at_the_limit(w: dict[str, int]) -> None:
    await earn(w, "孙志愿", 1000)
    copies = await asyncio.gather(*(redeem(w["孙志愿"], w["食用油一桶"], key="same", now=NOW) for _ in range(10)))
    assert len({v.id for v in copies}) == 1
    different = await asyncio.gather(*(redeem(w["孙志愿"], w["洗衣液一瓶"], key=f"k{i}", now=NOW) for i in range(6)),
                                     return_exceptions=True)
    assert sum(isinstance(r, Voucher) for r in different) == 2  # its per-person limit
    assert all(isinstance(r, Voucher | LimitReached) for r in different)
    assert await points(w, "孙志愿") == 1000 - 120 - 2 * 60
    assert (await stock(w["食用油一桶"]), await stock(w["洗衣液一瓶"])) == (19, 28)
    assert await check_books() == BOOKS_AT_ZERO


async def test_an_unused_voucher_keeps_its_holder_through_a_deletion_request_until_it_is_cancelled(
        w: dict[str, int]) -> None:
    from models.privacy import holds_on

    await earn(w, "孙志愿", 200)
    assert "有未使用的兑换券" not in await holds_on(w["孙志愿"])
    voucher = await redeem(w["孙志愿"], w["食用油一桶"], key="k1", now=NOW)
    assert "有未使用的兑换券" in await holds_on(w["孙志愿"])
    await cancel_voucher(voucher.id, by_id=w["孙志愿"], now=NOW)
    assert "有未使用的兑换券" not in await holds_on(w["孙志愿"])
