"""Booking the canteen's meals with the frozen clock: the hold at booking and its release on a
cancel, the cut-off (charge, subsidy, the waiting list closed, the kitchen told), the waiting list
and its 15-minute offers, no-shows, the counter, delivery, family proxies, standing orders, and
due actions that run twice. The books stay at zero throughout."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from models.canteen import Booking, BookingStatus, Menu, MenuState, Mode
from models.canteen_booking import (
    OFFER_FLOW,
    Placed,
    answer_offer,
    book,
    bookings_of,
    cancel,
    close_day,
    is_closed,
    kitchen_count,
    kitchen_text,
    menu_bookings,
    open_menus,
    publish_menu,
    serve,
    set_diner,
    set_slot,
    set_standing,
    slots_of,
    update_settings,
    waiting_position,
)
from models.canteen_wallet import refund_wallet, top_up, wallet_of
from models.conversation import PendingPrompt
from models.demo import load_demo
from models.errors import Forbidden, NotFound, UserFacingError
from models.facts import declare
from models.jobs import sweep_due
from models.ledger import AccountKind, Asset, Entry, Insufficient, account, check_books, summed_balance
from models.outbox import OutboxMessage
from models.places import Canteen, Community
from models.proxies import ProxyLink, ProxyStatus
from models.residents import Mobility, Resident, WechatAccount

pytestmark = pytest.mark.usefixtures("db")
NOW = datetime(2026, 11, 27, 2, 0, tzinfo=UTC)  # 周五 10:00 in Shanghai
MONDAY = date(2026, 11, 30)
LUNCH_CUTOFF = datetime(2026, 11, 30, 1, 30, tzinfo=UTC)  # 09:30 in Shanghai
LUNCH_END = datetime(2026, 11, 30, 4, 30, tzinfo=UTC)  # 12:30
DISHES = [{"name": "清蒸鱼", "marks": ["soft", "low_salt"]}, {"name": "炒青菜", "marks": []}]
BOOKS_AT_ZERO = {Asset.POINTS: 0, Asset.FEN: 0}


@pytest.fixture
async def w() -> dict[str, int]:
    """The demo with its canteen, its staff 陈食堂, and three more diners on WeChat."""
    await load_demo(NOW)
    ids = {"canteen": (await Canteen.get(name="米家社区幸福食堂")).id,
           "mijia": (await Community.get(name="米家社区")).id}
    for name in ("陈食堂", "周社工", "孙志愿", "王秀兰", "张德福"):
        ids[name] = (await Resident.get(name=name)).id
    for name in ("刘大爷", "赵奶奶", "钱爷爷"):
        person = await Resident.create(name=name, mobile=f"1390000{len(ids):04d}", community_id=ids["mijia"],
                                       created_at=NOW)
        ids[name] = person.id
    for name in ("王秀兰", "张德福", "刘大爷", "赵奶奶", "钱爷爷"):
        await WechatAccount.create(openid=f"oa-{name}", channel="oa", resident_id=ids[name], created_at=NOW)
    return ids


async def fund(w: dict[str, int], name: str, fen: int) -> None:
    await top_up(canteen_id=w["canteen"], resident_id=w[name], amount_fen=fen, method="cash",
                 receipt_no=f"R-{name}-{fen}", by_id=w["陈食堂"], now=NOW)


async def lunch(w: dict[str, int], *, capacity: int | None = None, price: int = 1500, day: date = MONDAY) -> Menu:
    menu, _ = await publish_menu(canteen_id=w["canteen"], day=day, meal="lunch", dishes=DISHES, price_fen=price,
                                 by_id=w["陈食堂"], now=NOW, capacity=capacity)
    return menu


async def booking(w: dict[str, int], menu: Menu, name: str, *, mode: str = Mode.DINE_IN,
                  at: datetime = NOW) -> Booking:
    return await book(menu_id=menu.id, resident_id=w[name], by_id=w[name], mode=mode, now=at)


async def money(w: dict[str, int], name: str) -> tuple[int, int]:
    """(available, held) of the diner's wallet."""
    wallet = await wallet_of(w[name], NOW)
    return wallet.available_fen, wallet.held_fen


async def pushed(name: str) -> list[str]:
    return [str(m.payload.get("content", "")) for m in await OutboxMessage.filter(openid=f"oa-{name}").order_by("id")]


async def status(b: Booking) -> str:
    return (await Booking.get(id=b.id)).status


async def seats(menu: Menu) -> int:
    return (await Menu.get(id=menu.id)).booked


# ---------------------------------------------------------------------------- settings and menus


async def test_slots_and_settings_start_from_the_seed_and_only_staff_change_them(w: dict[str, int]) -> None:
    slots = await slots_of(w["canteen"])
    assert [(s.meal, s.capacity, s.cutoff) for s in slots] == [
        ("breakfast", 60, "17:00"), ("lunch", 120, "09:30"), ("dinner", 80, "14:00")]
    with pytest.raises(Forbidden):
        await set_slot(canteen_id=w["canteen"], meal="lunch", by_id=w["王秀兰"], now=NOW, capacity=10)
    with pytest.raises(UserFacingError, match="时:分"):
        await set_slot(canteen_id=w["canteen"], meal="lunch", by_id=w["陈食堂"], now=NOW, cutoff="9点半")
    with pytest.raises(UserFacingError, match="不能晚于开餐时间"):
        await set_slot(canteen_id=w["canteen"], meal="lunch", by_id=w["陈食堂"], now=NOW, cutoff="11:30")
    slot = await set_slot(canteen_id=w["canteen"], meal="lunch", by_id=w["陈食堂"], now=NOW, capacity=10,
                          cutoff="10:00")
    assert (slot.capacity, slot.cutoff) == (10, "10:00")
    settings = await update_settings(canteen_id=w["canteen"], by_id=w["陈食堂"], now=NOW, closed_weekdays=[7, 6],
                                     gov_share_pct=70, no_show_pays=False)
    assert (settings.closed_weekdays, settings.gov_share_pct, settings.no_show_pays) == ("6,7", 70, False)
    assert await is_closed(w["canteen"], date(2026, 11, 29)) and not await is_closed(w["canteen"], MONDAY)
    with pytest.raises(UserFacingError, match="0到100"):
        await update_settings(canteen_id=w["canteen"], by_id=w["陈食堂"], now=NOW, gov_share_pct=101)


async def test_a_menu_is_published_within_the_week_on_open_days_before_its_cut_off(w: dict[str, int]) -> None:
    menu = await lunch(w)
    assert (menu.capacity, menu.cutoff_at, menu.serve_until_at, menu.state) == (120, LUNCH_CUTOFF, LUNCH_END,
                                                                                MenuState.OPEN)
    breakfast, _ = await publish_menu(canteen_id=w["canteen"], day=MONDAY, meal="breakfast", dishes=DISHES,
                                      price_fen=500, by_id=w["陈食堂"], now=NOW)
    assert breakfast.cutoff_at == datetime(2026, 11, 29, 9, 0, tzinfo=UTC)  # 17:00 the day before
    with pytest.raises(UserFacingError, match="订餐已于11月27日09:30截止"):
        await lunch(w, day=date(2026, 11, 27))
    with pytest.raises(UserFacingError, match="7天后"):
        await lunch(w, day=date(2026, 12, 5))
    with pytest.raises(Forbidden):
        await publish_menu(canteen_id=w["canteen"], day=MONDAY, meal="lunch", dishes=DISHES, price_fen=1500,
                           by_id=w["王秀兰"], now=NOW)
    with pytest.raises(UserFacingError, match="菜名"):
        await publish_menu(canteen_id=w["canteen"], day=MONDAY, meal="dinner", dishes=[{"name": ""}],
                           price_fen=1500, by_id=w["陈食堂"], now=NOW)
    await close_day(canteen_id=w["canteen"], day=date(2026, 12, 1), reason="检修", by_id=w["陈食堂"], now=NOW)
    with pytest.raises(UserFacingError, match="12月1日（周二）食堂休息"):
        await lunch(w, day=date(2026, 12, 1))
    assert [(m.day, m.meal) for m in await open_menus(w["canteen"], NOW)] == [(MONDAY, "breakfast"), (MONDAY, "lunch")]
    # correcting it: the dishes change; the price only while nobody booked
    await fund(w, "王秀兰", 3000)
    await booking(w, menu, "王秀兰")
    with pytest.raises(UserFacingError, match="价格不能再改"):
        await lunch(w, price=1800)
    await fund(w, "张德福", 3000)
    await booking(w, menu, "张德福")
    with pytest.raises(UserFacingError, match="已订出2份，份数不能少于这个数"):
        await lunch(w, capacity=1)
    fixed, placed = await publish_menu(canteen_id=w["canteen"], day=MONDAY, meal="lunch", dishes=DISHES[:1],
                                       price_fen=1500, by_id=w["陈食堂"], now=NOW, capacity=2)
    assert (fixed.id, fixed.dishes, fixed.capacity, fixed.booked) == (menu.id, DISHES[:1], 2, 2)
    assert placed == Placed()


# ---------------------------------------------------------------------------- booking, holding, cancelling


async def test_a_booking_holds_the_price_and_a_cancel_before_the_cut_off_releases_it(w: dict[str, int]) -> None:
    menu = await lunch(w)
    await fund(w, "王秀兰", 3000)
    first = await booking(w, menu, "王秀兰")
    assert (first.status, first.price_fen, first.rule_label, len(first.code)) == (BookingStatus.BOOKED, 1500,
                                                                                  first.rule_label, 8)
    assert await money(w, "王秀兰") == (1500, 1500)
    again = await booking(w, menu, "王秀兰")  # a double tap
    assert again.id == first.id and await money(w, "王秀兰") == (1500, 1500) and await seats(menu) == 1
    assert [b.id for b in await bookings_of(w["王秀兰"], NOW)] == [first.id]
    cancelled = await cancel(booking_id=first.id, by_id=w["王秀兰"], now=NOW)
    assert cancelled.status == BookingStatus.CANCELLED and await money(w, "王秀兰") == (3000, 0)
    assert await seats(menu) == 0 and await bookings_of(w["王秀兰"], NOW) == []
    assert (await cancel(booking_id=first.id, by_id=w["王秀兰"], now=NOW)).status == BookingStatus.CANCELLED
    revived = await booking(w, menu, "王秀兰")  # booked again: a new round with its own hold
    assert (revived.id, revived.round, revived.status) == (first.id, 1, BookingStatus.BOOKED)
    assert await money(w, "王秀兰") == (1500, 1500)
    assert await Entry.filter(ref=f"booking:{first.id}").count() == 3  # hold, release, hold
    assert await check_books() == BOOKS_AT_ZERO


async def test_booking_is_refused_after_the_cut_off_and_when_the_wallet_is_short(w: dict[str, int]) -> None:
    menu = await lunch(w)
    await fund(w, "王秀兰", 1000)
    with pytest.raises(Insufficient, match=r"当前可用10\.00元"):
        await booking(w, menu, "王秀兰")
    assert await seats(menu) == 0 and not await Booking.exists(menu_id=menu.id)  # the seat went back
    await fund(w, "王秀兰", 500)
    with pytest.raises(UserFacingError, match="订餐已于11月30日09:30截止"):
        await booking(w, menu, "王秀兰", at=LUNCH_CUTOFF)
    assert not await Booking.exists(menu_id=menu.id)
    assert (await booking(w, menu, "王秀兰", at=LUNCH_CUTOFF - timedelta(seconds=1))).status == BookingStatus.BOOKED
    assert await money(w, "王秀兰") == (0, 1500)
    with pytest.raises(Forbidden):
        await book(menu_id=menu.id, resident_id=w["王秀兰"], by_id=w["孙志愿"], mode=Mode.DINE_IN, now=NOW)
    with pytest.raises(NotFound):
        await book(menu_id=menu.id + 99, resident_id=w["王秀兰"], by_id=w["王秀兰"], mode=Mode.DINE_IN, now=NOW)


async def test_a_family_proxy_books_for_the_elder_who_is_told(w: dict[str, int]) -> None:
    menu = await lunch(w)
    await fund(w, "王秀兰", 3000)
    await ProxyLink.create(proxy_id=w["张德福"], elder_id=w["王秀兰"], relation="子女", status=ProxyStatus.ACTIVE,
                           requested_at=NOW)
    made = await book(menu_id=menu.id, resident_id=w["王秀兰"], by_id=w["张德福"], mode=Mode.DINE_IN, now=NOW)
    assert (made.resident_id, made.booked_by_id, made.status) == (w["王秀兰"], w["张德福"], BookingStatus.BOOKED)
    assert await money(w, "王秀兰") == (1500, 1500) and await money(w, "张德福") == (0, 0)
    assert (await pushed("王秀兰"))[-1] == (
        f"张德福已为您预订11月30日（周一）午餐（堂食），15.00元（{made.rule_label}），就餐码{made.code}。回复“我的订餐”可以查看。")
    # the proxy cancels for the elder too; a stranger cannot even see it
    with pytest.raises(NotFound):
        await cancel(booking_id=made.id, by_id=w["孙志愿"], now=NOW)
    assert (await cancel(booking_id=made.id, by_id=w["张德福"], now=NOW)).status == BookingStatus.CANCELLED
    assert await money(w, "王秀兰") == (3000, 0)


async def test_delivery_only_for_residents_who_need_it_or_were_approved(w: dict[str, int]) -> None:
    menu = await lunch(w)
    await fund(w, "王秀兰", 3000)
    await fund(w, "张德福", 3000)
    with pytest.raises(UserFacingError, match="送餐只为需要送餐上门的居民提供"):
        await booking(w, menu, "王秀兰", mode=Mode.DELIVERY)
    with pytest.raises(Forbidden, match="送餐资格由食堂工作人员确认"):
        await set_diner(resident_id=w["王秀兰"], by_id=w["王秀兰"], now=NOW, delivery_approved=True)
    await set_diner(resident_id=w["王秀兰"], by_id=w["陈食堂"], now=NOW, delivery_approved=True)
    assert (await booking(w, menu, "王秀兰", mode=Mode.DELIVERY)).mode == Mode.DELIVERY
    await Resident.filter(id=w["张德福"]).update(mobility=Mobility.NEEDS_DELIVERY)
    assert (await booking(w, menu, "张德福", mode=Mode.DELIVERY)).mode == Mode.DELIVERY
    count = await kitchen_count(menu.id)
    assert (count.total, count.dine_in, count.delivery) == (2, 0, 2)
    assert [(name, address, mode) for name, address, mode, _ in count.notes] == [
        ("张德福", "2号楼1单元502室", "送餐"), ("王秀兰", "1号楼2单元301室", "送餐")]


# ---------------------------------------------------------------------------- the waiting list and its offers


async def full_lunch(w: dict[str, int]) -> tuple[Menu, Booking, Booking, Booking]:
    """A lunch of one seat: 王秀兰 has it, 张德福 and then 刘大爷 wait."""
    menu = await lunch(w, capacity=1)
    for name in ("王秀兰", "张德福", "刘大爷"):
        await fund(w, name, 3000)
    seated = await booking(w, menu, "王秀兰")
    first = await booking(w, menu, "张德福")
    second = await booking(w, menu, "刘大爷", at=NOW + timedelta(minutes=1))
    return menu, seated, first, second


async def test_a_full_lunch_wait_lists_without_holding_money(w: dict[str, int]) -> None:
    menu, seated, first, second = await full_lunch(w)
    assert (seated.status, first.status, second.status) == (BookingStatus.BOOKED, BookingStatus.WAITING,
                                                            BookingStatus.WAITING)
    assert [await waiting_position(first), await waiting_position(second)] == [1, 2]
    assert await money(w, "张德福") == (3000, 0) and await seats(menu) == 1
    assert (await booking(w, menu, "张德福")).id == first.id  # asking again keeps the place


async def test_a_cancel_offers_the_seat_to_the_first_waiting_who_accepts(w: dict[str, int]) -> None:
    menu, seated, first, second = await full_lunch(w)
    await cancel(booking_id=seated.id, by_id=w["王秀兰"], now=NOW)
    assert (await status(first), await status(second), await seats(menu)) == (BookingStatus.OFFERED,
                                                                              BookingStatus.WAITING, 1)
    prompt = await PendingPrompt.get(openid="oa-张德福", closed_at=None)
    assert prompt.flow == OFFER_FLOW and prompt.data["booking_id"] == first.id
    text = prompt.question["text"]
    assert "您候补的11月30日（周一）午餐有空位了" in text and "保留到10:15" in text
    await fund(w, "赵奶奶", 3000)
    # the offered seat is not free for a new booker
    late = await booking(w, menu, "赵奶奶", at=NOW + timedelta(minutes=2))
    assert late.status == BookingStatus.WAITING and await waiting_position(late) == 2
    accepted = await answer_offer(booking_id=first.id, by_id=w["张德福"], accept=True, now=NOW + timedelta(minutes=5))
    assert accepted.status == BookingStatus.BOOKED and await money(w, "张德福") == (1500, 1500)
    assert await PendingPrompt.filter(openid="oa-张德福", closed_at=None).count() == 0
    assert (await answer_offer(booking_id=first.id, by_id=w["张德福"], accept=True, now=NOW)).status == "booked"
    await sweep_due(NOW + timedelta(minutes=20))  # its lapse was called off
    assert await status(first) == BookingStatus.BOOKED and await status(second) == BookingStatus.WAITING
    assert await check_books() == BOOKS_AT_ZERO


async def test_an_offer_lapses_after_15_minutes_and_goes_to_the_next(w: dict[str, int]) -> None:
    menu, seated, first, second = await full_lunch(w)
    await cancel(booking_id=seated.id, by_id=w["王秀兰"], now=NOW)
    await sweep_due(NOW + timedelta(minutes=14))
    assert await status(first) == BookingStatus.OFFERED
    later = NOW + timedelta(minutes=15)
    for _ in range(2):  # the due action twice changes nothing more
        await sweep_due(later)
    assert (await status(first), await status(second), await seats(menu)) == (BookingStatus.LAPSED,
                                                                              BookingStatus.OFFERED, 1)
    assert "空位保留到10:15，没有确认，已让给下一位" in (await pushed("张德福"))[-1]
    with pytest.raises(UserFacingError, match="保留时间已过"):
        await answer_offer(booking_id=first.id, by_id=w["张德福"], accept=True, now=later)
    assert await money(w, "张德福") == (3000, 0)
    await sweep_due(later + timedelta(minutes=15))
    assert await status(second) == BookingStatus.LAPSED and await seats(menu) == 0  # nobody left to offer
    await fund(w, "赵奶奶", 3000)
    assert (await booking(w, menu, "赵奶奶", at=later + timedelta(minutes=16))).status == BookingStatus.BOOKED
    assert await seats(menu) == 1


async def test_declining_hands_the_seat_on_and_accepting_without_money_keeps_the_offer(w: dict[str, int]) -> None:
    menu, seated, first, second = await full_lunch(w)
    await cancel(booking_id=seated.id, by_id=w["王秀兰"], now=NOW)
    declined = await answer_offer(booking_id=first.id, by_id=w["张德福"], accept=False, now=NOW)
    assert declined.status == BookingStatus.LAPSED and await status(second) == BookingStatus.OFFERED
    await refund_wallet(canteen_id=w["canteen"], resident_id=w["刘大爷"], amount_fen=2000, method="cash",
                        receipt_no="Y", by_id=w["陈食堂"], now=NOW)  # 1000 left: short of 1500
    with pytest.raises(Insufficient):
        await answer_offer(booking_id=second.id, by_id=w["刘大爷"], accept=True, now=NOW)
    assert await status(second) == BookingStatus.OFFERED and await seats(menu) == 1
    assert await money(w, "刘大爷") == (1000, 0)
    assert await check_books() == BOOKS_AT_ZERO


async def test_the_waiting_list_closes_at_the_cut_off(w: dict[str, int]) -> None:
    menu, seated, first, second = await full_lunch(w)
    await cancel(booking_id=seated.id, by_id=w["王秀兰"], now=LUNCH_CUTOFF - timedelta(minutes=5))
    assert await status(first) == BookingStatus.OFFERED
    await sweep_due(LUNCH_CUTOFF)
    assert (await status(first), await status(second), await seats(menu)) == (BookingStatus.LAPSED,
                                                                              BookingStatus.LAPSED, 0)
    assert (await pushed("刘大爷"))[-1] == "很抱歉，11月30日（周一）午餐已到订餐截止时间，候补没有排上，未扣任何费用。"
    assert (await Menu.get(id=menu.id)).state == MenuState.CLOSED
    with pytest.raises(UserFacingError, match="截止"):
        await booking(w, menu, "赵奶奶", at=LUNCH_CUTOFF)


# ---------------------------------------------------------------------------- the cut-off, the meal's end, the counter


async def dibao_elder(w: dict[str, int], name: str) -> None:
    """60+ with 低保, verified: 6 yuan a meal."""
    await declare(resident_id=w[name], code="birth_date", value="1950-03-01", now=NOW, by_id=w["周社工"], verified=True)
    await declare(resident_id=w[name], code="dibao", now=NOW, by_id=w["周社工"], verified=True)


async def canteen_balance(w: dict[str, int], kind: str) -> int:
    return await summed_balance((await account(Asset.FEN, kind, w["canteen"], NOW)).id)


async def test_the_cut_off_charges_the_meal_and_books_the_subsidy_once(w: dict[str, int]) -> None:
    await update_settings(canteen_id=w["canteen"], by_id=w["陈食堂"], now=NOW, gov_share_pct=70)
    await dibao_elder(w, "王秀兰")
    menu = await lunch(w)
    await fund(w, "王秀兰", 1000)
    await fund(w, "张德福", 3000)
    cheap = await booking(w, menu, "王秀兰")
    full = await booking(w, menu, "张德福")
    assert (cheap.price_fen, cheap.gov_fen, cheap.ent_fen) == (600, 630, 270)
    assert await money(w, "王秀兰") == (400, 600)
    for _ in range(2):  # the due action twice (a sweeper died after it ran) changes nothing more
        await sweep_due(LUNCH_CUTOFF)
        assert (await status(cheap), await status(full)) == (BookingStatus.CHARGED, BookingStatus.CHARGED)
        assert await money(w, "王秀兰") == (400, 0) and await money(w, "张德福") == (1500, 0)
        assert await canteen_balance(w, AccountKind.CANTEEN) == 600 + 630 + 270 + 1500
        assert await canteen_balance(w, AccountKind.GOV_SUBSIDY) == -630
        assert await canteen_balance(w, AccountKind.ENT_SUBSIDY) == -270
    assert (await Menu.get(id=menu.id)).state == MenuState.CLOSED
    # the diner may no longer cancel
    with pytest.raises(UserFacingError, match="不能自行取消"):
        await cancel(booking_id=cheap.id, by_id=w["王秀兰"], now=LUNCH_CUTOFF)
    assert await check_books() == BOOKS_AT_ZERO


async def test_after_the_cut_off_the_kitchen_count_goes_to_the_canteen_staff_only(w: dict[str, int]) -> None:
    await WechatAccount.create(openid="oa-陈食堂", channel="oa", resident_id=w["陈食堂"], created_at=NOW)
    menu = await lunch(w)
    for name in ("王秀兰", "张德福", "刘大爷"):
        await fund(w, name, 3000)
    await set_diner(resident_id=w["王秀兰"], by_id=w["王秀兰"], now=NOW, diet=["soft", "low_sugar"], allergies="花生")
    await Resident.filter(id=w["张德福"]).update(health_note="糖尿病", mobility=Mobility.NEEDS_DELIVERY)
    await booking(w, menu, "王秀兰")
    await booking(w, menu, "张德福", mode=Mode.DELIVERY)
    cancelled = await booking(w, menu, "刘大爷")
    await cancel(booking_id=cancelled.id, by_id=w["刘大爷"], now=NOW)
    await sweep_due(LUNCH_CUTOFF)
    text = kitchen_text(await kitchen_count(menu.id))
    assert text == (
        "【备餐统计】米家社区幸福食堂11月30日（周一）午餐\n"
        "共2份：堂食1份，送餐1份。\n"
        "饮食需求：软食1份，低糖1份，有过敏1人。\n"
        "菜品：清蒸鱼（软食、低盐）、炒青菜\n"
        "需要留意：\n"
        "1. 张德福（送餐，2号楼1单元502室）备注：糖尿病\n"
        "2. 王秀兰（堂食，1号楼2单元301室）软食、低糖；过敏：花生")
    assert await pushed("陈食堂") == [text]
    assert not [t for name in ("王秀兰", "张德福") for t in await pushed(name) if "糖尿病" in t]
    await sweep_due(LUNCH_CUTOFF + timedelta(minutes=5))
    assert await pushed("陈食堂") == [text]  # once
    assert [b.resident.name for b in await menu_bookings(menu.id)] == sorted(["王秀兰", "张德福"])


@pytest.mark.parametrize("no_show_pays", [True, False], ids=["a no-show pays", "a no-show is paid back"])
async def test_a_meal_not_served_is_a_no_show_at_its_end(w: dict[str, int], no_show_pays: bool) -> None:
    await update_settings(canteen_id=w["canteen"], by_id=w["陈食堂"], now=NOW, no_show_pays=no_show_pays,
                          gov_share_pct=70)
    await dibao_elder(w, "王秀兰")
    menu = await lunch(w)
    await fund(w, "王秀兰", 1000)
    await fund(w, "张德福", 3000)
    missed = await booking(w, menu, "王秀兰")
    eaten = await booking(w, menu, "张德福")
    await sweep_due(LUNCH_CUTOFF)
    await serve(code=eaten.code.lower(), by_id=w["陈食堂"], now=LUNCH_CUTOFF + timedelta(hours=2))
    for _ in range(2):
        await sweep_due(LUNCH_END)
        assert (await status(missed), await status(eaten)) == (BookingStatus.NO_SHOW, BookingStatus.SERVED)
        assert (await Menu.get(id=menu.id)).state == MenuState.DONE
        if no_show_pays:
            assert await money(w, "王秀兰") == (400, 0)
            assert await canteen_balance(w, AccountKind.CANTEEN) == 1500 + 1500
            assert await canteen_balance(w, AccountKind.GOV_SUBSIDY) == -630
        else:
            assert await money(w, "王秀兰") == (1000, 0)
            assert await canteen_balance(w, AccountKind.CANTEEN) == 1500  # only the meal eaten
            assert await canteen_balance(w, AccountKind.GOV_SUBSIDY) == 0
    if not no_show_pays:
        assert (await pushed("王秀兰"))[-1] == "您预订的11月30日（周一）午餐没有来就餐，6.00元已退回钱包。"
    assert await check_books() == BOOKS_AT_ZERO


async def test_only_staff_cancel_after_the_cut_off_and_the_money_and_subsidy_go_back(w: dict[str, int]) -> None:
    await dibao_elder(w, "王秀兰")
    menu = await lunch(w)
    await fund(w, "王秀兰", 1000)
    made = await booking(w, menu, "王秀兰")
    await sweep_due(LUNCH_CUTOFF)
    after = LUNCH_CUTOFF + timedelta(minutes=30)
    with pytest.raises(UserFacingError, match="不能自行取消；有特殊情况请联系食堂"):
        await cancel(booking_id=made.id, by_id=w["王秀兰"], now=after)
    for _ in range(2):
        done = await cancel(booking_id=made.id, by_id=w["陈食堂"], now=after, reason="住院")
        assert done.status == BookingStatus.CANCELLED and await money(w, "王秀兰") == (1000, 0)
    assert await canteen_balance(w, AccountKind.CANTEEN) == 0
    assert await canteen_balance(w, AccountKind.GOV_SUBSIDY) == 0
    assert (await pushed("王秀兰"))[-1] == "食堂已取消您11月30日（周一）午餐的订餐（住院），6.00元已退回钱包。"
    assert await kitchen_count(menu.id) is not None and (await kitchen_count(menu.id)).total == 0
    assert await check_books() == BOOKS_AT_ZERO


async def test_serving_is_by_staff_on_the_day_once(w: dict[str, int]) -> None:
    menu = await lunch(w)
    await fund(w, "王秀兰", 3000)
    made = await booking(w, menu, "王秀兰")
    with pytest.raises(UserFacingError, match="不是今天的"):
        await serve(code=made.code, by_id=w["陈食堂"], now=NOW)
    with pytest.raises(UserFacingError, match="截止后才能打餐"):
        await serve(code=made.code, by_id=w["陈食堂"], now=LUNCH_CUTOFF - timedelta(minutes=1))
    with pytest.raises(NotFound):
        await serve(code=made.code, by_id=w["王秀兰"], now=LUNCH_CUTOFF)
    with pytest.raises(NotFound):
        await serve(code="NOSUCH22", by_id=w["陈食堂"], now=LUNCH_CUTOFF)
    at = LUNCH_CUTOFF + timedelta(hours=2)  # 11:30; the cut-off's due action has not run yet
    served = await serve(code=f" {made.code[:4]}-{made.code[4:]} ", by_id=w["陈食堂"], now=at)
    assert (served.status, served.served_by_id) == (BookingStatus.SERVED, w["陈食堂"])
    assert await money(w, "王秀兰") == (1500, 0)  # charged on the way
    with pytest.raises(UserFacingError, match="已于11:30登记就餐，不要重复打餐"):
        await serve(booking_id=made.id, by_id=w["陈食堂"], now=at + timedelta(minutes=1))
    await sweep_due(LUNCH_END)
    assert await status(made) == BookingStatus.SERVED and await money(w, "王秀兰") == (1500, 0)
    assert await check_books() == BOOKS_AT_ZERO


# ---------------------------------------------------------------------------- standing orders and closed days


async def test_standing_orders_are_placed_on_publish_within_the_wallet(w: dict[str, int]) -> None:
    for name, fen in (("王秀兰", 3000), ("张德福", 1000), ("刘大爷", 3000), ("赵奶奶", 3000), ("钱爷爷", 3000)):
        await fund(w, name, fen)
    for name in ("王秀兰", "张德福", "刘大爷", "赵奶奶"):
        await set_standing(canteen_id=w["canteen"], resident_id=w[name], by_id=w[name], meals=["lunch"],
                           weekdays=[1, 2, 3, 4, 5], mode=Mode.DINE_IN, now=NOW)
    await set_standing(canteen_id=w["canteen"], resident_id=w["钱爷爷"], by_id=w["钱爷爷"], meals="dinner",
                       weekdays="1", mode=Mode.DINE_IN, now=NOW)
    menu, placed = await publish_menu(canteen_id=w["canteen"], day=MONDAY, meal="lunch", dishes=DISHES,
                                      price_fen=1500, by_id=w["陈食堂"], now=NOW, capacity=2)
    assert (placed.booked, placed.waitlisted) == (2, 1)
    assert placed.failed == [(w["张德福"], "余额不足（可用10.00元，需要15.00元）")]
    assert await money(w, "王秀兰") == (1500, 1500) and await money(w, "张德福") == (1000, 0)
    assert await money(w, "刘大爷") == (1500, 1500) and await money(w, "赵奶奶") == (3000, 0)
    assert (await pushed("张德福"))[-1] == (
        "您常订的11月30日（周一）午餐没有订上：钱包余额不足（可用10.00元，需要15.00元）。请到食堂柜台充值后，回复“订餐”再订。")
    assert (await pushed("赵奶奶"))[-1] == "您常订的11月30日（周一）午餐已满，已为您加入候补，有空位时会通知您。"
    assert not await Booking.exists(resident_id=w["钱爷爷"])  # dinner only
    # correcting the menu places nothing again
    _, again = await publish_menu(canteen_id=w["canteen"], day=MONDAY, meal="lunch", dishes=DISHES, price_fen=1500,
                                  by_id=w["陈食堂"], now=NOW)
    assert again == Placed() and await Booking.filter(menu_id=menu.id).count() == 3
    # a Saturday lunch is not on the order; a closed Tuesday gets no menu at all
    await update_settings(canteen_id=w["canteen"], by_id=w["陈食堂"], now=NOW, closed_weekdays="6,7")
    with pytest.raises(UserFacingError, match="食堂休息"):
        await lunch(w, day=date(2026, 11, 28))
    assert await check_books() == BOOKS_AT_ZERO


async def test_closing_a_day_withdraws_its_menus_and_tells_the_diners(w: dict[str, int]) -> None:
    await fund(w, "王秀兰", 3000)
    await set_standing(canteen_id=w["canteen"], resident_id=w["王秀兰"], by_id=w["王秀兰"], meals=["午餐"],
                       weekdays=[1], mode=Mode.DINE_IN, now=NOW)
    menu = await lunch(w)
    placed = await Booking.get(menu_id=menu.id, resident_id=w["王秀兰"])
    assert placed.status == BookingStatus.BOOKED and await money(w, "王秀兰") == (1500, 1500)
    with pytest.raises(Forbidden):
        await close_day(canteen_id=w["canteen"], day=MONDAY, reason="停水", by_id=w["王秀兰"], now=NOW)
    for _ in range(2):
        await close_day(canteen_id=w["canteen"], day=MONDAY, reason="停水", by_id=w["陈食堂"], now=NOW)
    assert await is_closed(w["canteen"], MONDAY)
    assert (await Menu.get(id=menu.id)).state == MenuState.CANCELLED and await status(placed) == "cancelled"
    assert await money(w, "王秀兰") == (3000, 0)
    assert (await pushed("王秀兰"))[-1] == (
        "很抱歉，11月30日（周一）午餐当天休息：停水，您的订餐已取消，冻结的15.00元已退回钱包。")
    await sweep_due(LUNCH_END)  # its due actions were called off
    assert (await Menu.get(id=menu.id)).state == MenuState.CANCELLED
    assert await check_books() == BOOKS_AT_ZERO


# ---------------------------------------------------------------------------- monthly cards


async def test_a_card_bought_after_booking_covers_the_meals_not_charged_yet(w: dict[str, int]) -> None:
    from models.canteen_prices import buy_card

    for code, value in (("birth_date", "1960-03-08"), ("guagua", "")):  # 66, 孤寡: the card is for him
        await declare(resident_id=w["刘大爷"], code=code, value=value, now=NOW, by_id=w["周社工"], source="staff",
                      verified=True)
    await fund(w, "刘大爷", 50000)
    monday, tuesday = await lunch(w), await lunch(w, day=MONDAY + timedelta(days=1))
    first, second = await booking(w, monday, "刘大爷"), await booking(w, tuesday, "刘大爷")
    assert (first.price_fen, first.rule) == (1500, "menu")  # no card yet: the menu price, held
    assert await money(w, "刘大爷") == (47000, 3000)
    card = await buy_card(canteen_id=w["canteen"], resident_id=w["刘大爷"], month=date(2026, 11, 1),
                          by_id=w["刘大爷"], now=NOW)
    # November's card covers the meal of 30 November (its held price back), not the one of 1 December
    covered = await Booking.get(id=first.id)
    assert (covered.price_fen, covered.rule, covered.card_id, covered.gov_fen) == (0, "card", card.id, 0)
    assert (await Booking.get(id=second.id)).price_fen == 1500
    assert await money(w, "刘大爷") == (47000 - 45000 + 1500, 1500)
    assert "已订的1餐改用月卡" in (await pushed("刘大爷"))[-1]
    # the cut-off charges nothing for the covered meal, and a retry of the purchase changes nothing
    await buy_card(canteen_id=w["canteen"], resident_id=w["刘大爷"], month=date(2026, 11, 1), by_id=w["刘大爷"],
                   now=NOW)
    await sweep_due(LUNCH_CUTOFF)
    assert (await status(first), await money(w, "刘大爷")) == (BookingStatus.CHARGED, (3500, 1500))
    assert await check_books() == BOOKS_AT_ZERO
