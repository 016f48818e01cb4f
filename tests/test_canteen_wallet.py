"""Canteen wallets and monthly cards on the models: top-ups and counter refunds once per receipt,
never below zero, by the canteen's staff only; cards bought once from the wallet for the current
or next month; the month-end settlement of a card's subsidy, once; the books at zero throughout."""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime, timedelta

import pytest

from models.canteen import (
    Booking,
    BookingStatus,
    CanteenSettings,
    CardStatus,
    MealCard,
    Menu,
    TopUp,
    TopUpKind,
)
from models.canteen_prices import RuleKind, buy_card, may_buy_card, set_rule, settle_cards
from models.canteen_wallet import (
    Wallet,
    canteen_account,
    canteen_of,
    hold_account,
    is_canteen_staff,
    refund_wallet,
    staff_canteen,
    top_up,
    wallet_account,
    wallet_of,
)
from models.demo import load_demo
from models.errors import Forbidden, NotFound, UserFacingError
from models.facts import declare
from models.jobs import ActionStatus, DueAction, sweep_due
from models.ledger import AccountKind, Asset, Entry, Insufficient, Source, balance, check_books, transfer
from models.outbox import OutboxMessage
from models.places import Canteen, Community
from models.privacy import holds_on
from models.proxies import ProxyLink, ProxyStatus
from models.residents import Resident, WechatAccount
from tests.conftest import requires_servers

pytestmark = pytest.mark.usefixtures("db")
NOW = datetime(2026, 11, 27, 2, 0, tzinfo=UTC)  # 周五 10:00 in Shanghai
BOOKS_AT_ZERO = {Asset.POINTS: 0, Asset.FEN: 0}
NOV, DEC = date(2026, 11, 1), date(2026, 12, 1)
NOV_SETTLES = datetime(2026, 11, 30, 16, 30, tzinfo=UTC)  # 1 December 00:30 in Shanghai


@pytest.fixture
async def w() -> dict[str, int]:
    """The demo; 王秀兰 (on WeChat, her son 李建国 acting for her) is a 70-year-old 孤寡 diner."""
    await load_demo(NOW)
    ids = {"canteen": (await Canteen.get(name="米家社区幸福食堂")).id,
           "mijia": (await Community.get(name="米家社区")).id, "xinqiu": (await Community.get(name="新邱社区")).id}
    for name in ("陈食堂", "周社工", "冯街道", "孙志愿", "王秀兰", "张德福"):
        ids[name] = (await Resident.get(name=name)).id
    son = await Resident.create(name="李建国", mobile="13900009999", community_id=ids["mijia"], created_at=NOW)
    ids["李建国"] = son.id
    await ProxyLink.create(proxy_id=son.id, elder_id=ids["王秀兰"], relation="子女", status=ProxyStatus.ACTIVE,
                           requested_at=NOW)
    await WechatAccount.create(openid="oa-elder", channel="oa", resident_id=ids["王秀兰"], created_at=NOW)
    await WechatAccount.create(openid="oa-son", channel="oa", resident_id=son.id, created_at=NOW)
    await verify(ids["王秀兰"], date(1956, 3, 8), "guagua", by_id=ids["周社工"])
    return ids


async def verify(resident_id: int, born: date, *statuses: str, by_id: int) -> None:
    await declare(resident_id=resident_id, code="birth_date", value=born.isoformat(), now=NOW, by_id=by_id,
                  verified=True)
    for code in statuses:
        await declare(resident_id=resident_id, code=code, now=NOW, by_id=by_id, verified=True)


async def fund(w: dict[str, int], name: str, amount: int, receipt: str = "") -> TopUp:
    return await top_up(canteen_id=w["canteen"], resident_id=w[name], amount_fen=amount, method="cash",
                        receipt_no=receipt or f"R-{name}-{amount}", by_id=w["陈食堂"], now=NOW)


async def available(w: dict[str, int], name: str) -> int:
    return (await wallet_of(w[name], NOW)).available_fen


async def canteen_balance(w: dict[str, int], kind: str) -> int:
    return await balance(await canteen_account(kind, w["canteen"], NOW))


async def pushed(openid: str) -> list[str]:
    return [str(m.payload.get("content", "")) for m in await OutboxMessage.filter(openid=openid).order_by("id")]


# ---------------------------------------------------------------------------- wallets


async def test_a_top_up_moves_the_counters_money_into_the_wallet_and_tells_the_diner_and_family(
        w: dict[str, int]) -> None:
    row = await top_up(canteen_id=w["canteen"], resident_id=w["王秀兰"], amount_fen=20000, method="wechat",
                       receipt_no=" R001 ", by_id=w["陈食堂"], now=NOW)
    assert (row.kind, row.amount_fen, row.method, row.receipt_no) == (TopUpKind.TOPUP, 20000, "wechat", "R001")
    assert await wallet_of(w["王秀兰"], NOW) == Wallet(
        available_fen=20000, held_fen=0, balance_fen=20000, deposited_fen=20000)
    assert await canteen_balance(w, AccountKind.TILL) == -20000
    entry = await Entry.get(id=row.entry_id)
    assert (entry.source, entry.amount, entry.actor_id) == (Source.TOPUP, 20000, w["陈食堂"])
    assert entry.key == f"topup:{w['canteen']}:topup:R001"
    text = "米家社区幸福食堂已为王秀兰的食堂钱包充值200.00元（微信，票据号R001）。钱包可用余额200.00元。"
    assert await pushed("oa-elder") == [text]
    assert await pushed("oa-son") == [text]
    assert await check_books() == BOOKS_AT_ZERO


async def test_the_same_receipt_again_is_the_same_top_up_and_a_different_one_is_refused(w: dict[str, int]) -> None:
    first = await fund(w, "王秀兰", 5000, "R7")
    again = await fund(w, "王秀兰", 5000, "R7")
    assert again.id == first.id
    for name, amount in (("王秀兰", 6000), ("张德福", 5000)):
        with pytest.raises(UserFacingError) as refused:
            await fund(w, name, amount, "R7")
        assert refused.value.message == "票据号已用于另一笔充值（50.00元），请核对票据号。"
    assert (await available(w, "王秀兰"), await available(w, "张德福")) == (5000, 0)
    assert await TopUp.all().count() == 1 and await Entry.all().count() == 1
    assert len(await pushed("oa-elder")) == 1
    # a refund may carry the same receipt number as a top-up: they are different slips
    await refund_wallet(canteen_id=w["canteen"], resident_id=w["王秀兰"], amount_fen=1000, method="cash",
                        receipt_no="R7", by_id=w["陈食堂"], now=NOW)
    assert await available(w, "王秀兰") == 4000


async def test_a_refund_pays_back_what_is_available_once_and_never_more(w: dict[str, int]) -> None:
    await fund(w, "王秀兰", 10000)
    held = await transfer(from_account=await wallet_account(w["王秀兰"], NOW),
                          to_account=await hold_account(w["王秀兰"], NOW), amount=3000, source=Source.MEAL,
                          key="meal:hold:test", now=NOW)
    assert not held.replayed
    assert await wallet_of(w["王秀兰"], NOW) == Wallet(
        available_fen=7000, held_fen=3000, balance_fen=10000, deposited_fen=10000)
    with pytest.raises(Insufficient) as refused:  # the held 30 yuan stays with its meal
        await refund_wallet(canteen_id=w["canteen"], resident_id=w["王秀兰"], amount_fen=7001, method="cash",
                            receipt_no="T1", by_id=w["陈食堂"], now=NOW)
    assert refused.value.message == "余额不足：当前可用70.00元。"
    assert await TopUp.filter(kind=TopUpKind.REFUND).count() == 0
    for _ in range(2):
        row = await refund_wallet(canteen_id=w["canteen"], resident_id=w["王秀兰"], amount_fen=7000, method="cash",
                                  receipt_no="T1", by_id=w["陈食堂"], now=NOW)
    assert (row.kind, row.amount_fen) == (TopUpKind.REFUND, 7000)
    assert await wallet_of(w["王秀兰"], NOW) == Wallet(
        available_fen=0, held_fen=3000, balance_fen=3000, deposited_fen=3000)
    assert (await pushed("oa-elder"))[-1] == \
        "米家社区幸福食堂已为王秀兰的食堂钱包退还70.00元（现金，票据号T1）。钱包可用余额0.00元。"
    assert await canteen_balance(w, AccountKind.TILL) == -3000
    assert await check_books() == BOOKS_AT_ZERO


@pytest.mark.parametrize(("amount", "method", "receipt", "message"), [
    pytest.param(0, "cash", "R1", "金额应在0.01元到5000.00元之间。", id="nothing"),
    pytest.param(-500, "cash", "R1", "金额应在0.01元到5000.00元之间。", id="a negative amount"),
    pytest.param(500001, "cash", "R1", "金额应在0.01元到5000.00元之间。", id="more than 5000 yuan"),
    pytest.param(500, "bitcoin", "R1", "付款方式只能是现金、微信、支付宝、银行卡、其他。", id="an unknown method"),
    pytest.param(500, "cash", "   ", "请填写票据号（1到32个字符）。", id="no receipt number"),
    pytest.param(500, "cash", "R" * 33, "请填写票据号（1到32个字符）。", id="a receipt number too long"),
])
async def test_bad_counter_input_is_refused_and_nothing_changes(w: dict[str, int], amount: int, method: str,
                                                                 receipt: str, message: str) -> None:
    with pytest.raises(UserFacingError) as refused:
        await top_up(canteen_id=w["canteen"], resident_id=w["王秀兰"], amount_fen=amount, method=method,
                     receipt_no=receipt, by_id=w["陈食堂"], now=NOW)
    assert refused.value.message == message
    assert (await TopUp.all().count(), await Entry.all().count()) == (0, 0)


async def test_only_staff_of_the_canteen_its_community_or_sub_district_keep_its_counter(w: dict[str, int]) -> None:
    other = await Canteen.create(name="新邱社区长者食堂", community_id=w["xinqiu"])
    for name in ("陈食堂", "周社工", "冯街道"):
        assert await is_canteen_staff(w[name], w["canteen"]), name
    assert not await is_canteen_staff(w["陈食堂"], other.id)  # another community's canteen
    assert not await is_canteen_staff(w["周社工"], other.id)
    assert await is_canteen_staff(w["冯街道"], other.id)  # the same sub-district
    for name in ("孙志愿", "王秀兰"):
        assert not await is_canteen_staff(w[name], w["canteen"])
    with pytest.raises(Forbidden):
        await top_up(canteen_id=other.id, resident_id=w["王秀兰"], amount_fen=500, method="cash", receipt_no="X",
                     by_id=w["陈食堂"], now=NOW)
    with pytest.raises(Forbidden):
        await refund_wallet(canteen_id=w["canteen"], resident_id=w["王秀兰"], amount_fen=500, method="cash",
                            receipt_no="X", by_id=w["王秀兰"], now=NOW)
    with pytest.raises(NotFound):
        await top_up(canteen_id=w["canteen"], resident_id=999999, amount_fen=500, method="cash", receipt_no="X",
                     by_id=w["陈食堂"], now=NOW)
    assert await TopUp.all().count() == 0
    mijia = await Canteen.get(id=w["canteen"])
    assert [(await staff_canteen(w[n])) for n in ("陈食堂", "周社工", "孙志愿")] == [mijia, mijia, None]
    assert (await canteen_of(w["王秀兰"]), await canteen_of(999999)) == (mijia, None)


async def test_money_in_the_wallet_keeps_the_diners_name_past_a_deletion_request(w: dict[str, int]) -> None:
    assert "食堂钱包还有余额" not in await holds_on(w["王秀兰"])
    await fund(w, "王秀兰", 500)
    assert "食堂钱包还有余额" in await holds_on(w["王秀兰"])
    await refund_wallet(canteen_id=w["canteen"], resident_id=w["王秀兰"], amount_fen=500, method="cash",
                        receipt_no="back", by_id=w["陈食堂"], now=NOW)
    assert "食堂钱包还有余额" not in await holds_on(w["王秀兰"])


# ---------------------------------------------------------------------------- cards


async def test_a_card_is_bought_once_from_the_wallet_and_settles_on_the_1st(w: dict[str, int]) -> None:
    await fund(w, "王秀兰", 50000)
    card = await buy_card(canteen_id=w["canteen"], resident_id=w["王秀兰"], month=date(2026, 12, 15),
                          by_id=w["王秀兰"], now=NOW)
    again = await buy_card(canteen_id=w["canteen"], resident_id=w["王秀兰"], month=DEC, by_id=w["李建国"], now=NOW)
    assert again.id == card.id
    assert (card.month, card.price_fen, card.status, card.bought_by_id) == (DEC, 45000, CardStatus.ACTIVE,
                                                                            w["王秀兰"])
    assert await available(w, "王秀兰") == 5000
    assert await canteen_balance(w, AccountKind.CANTEEN) == 45000
    entry = await Entry.get(key=f"card:buy:{card.id}")
    assert (entry.source, entry.ref, entry.memo) == (Source.CARD, f"card:{card.id}", "米家社区幸福食堂2026年12月月卡")
    due = await DueAction.get(action="canteen.settle_cards")
    assert (due.target, due.due_at) == ("month:2026-12", datetime(2026, 12, 31, 16, 30, tzinfo=UTC))
    text = ("王秀兰已办理米家社区幸福食堂2026年12月月卡，从钱包支付450.00元，当月早餐、午餐、晚餐订餐不再另付餐费。"
            "钱包可用余额50.00元。")
    assert (await pushed("oa-elder"))[-1] == text and (await pushed("oa-son"))[-1] == text
    assert await check_books() == BOOKS_AT_ZERO


async def test_a_card_short_of_money_is_refused_and_nothing_is_written(w: dict[str, int]) -> None:
    await fund(w, "王秀兰", 44999)
    with pytest.raises(Insufficient) as refused:
        await buy_card(canteen_id=w["canteen"], resident_id=w["王秀兰"], month=NOV, by_id=w["王秀兰"], now=NOW)
    assert refused.value.message == "余额不足：当前可用449.99元。"
    assert await MealCard.all().count() == 0 and await DueAction.filter(action="canteen.settle_cards").count() == 0
    assert await available(w, "王秀兰") == 44999


@pytest.mark.parametrize(("born", "statuses", "month", "may"), [
    pytest.param(date(1966, 12, 31), ("veteran",), DEC, True, id="turning 60 on the month's last day"),
    pytest.param(date(1966, 12, 31), ("veteran",), NOV, False, id="59 all the month before"),
    pytest.param(date(1967, 1, 1), ("veteran",), DEC, False, id="turning 60 the day after the month"),
    pytest.param(date(1950, 1, 1), ("dibao",), DEC, False, id="低保 is a 6 yuan diner, not a card holder"),
    pytest.param(date(1950, 1, 1), ("advanced_worker",), DEC, True, id="先进工作者 at 76"),
])
async def test_who_may_buy_a_card(w: dict[str, int], born: date, statuses: tuple[str, ...], month: date,
                                  may: bool) -> None:
    await verify(w["张德福"], born, *statuses, by_id=w["周社工"])
    assert await may_buy_card(canteen_id=w["canteen"], resident_id=w["张德福"], month=month) is may


async def test_cards_are_refused_to_whom_the_rule_does_not_fit_or_for_other_months(w: dict[str, int]) -> None:
    await fund(w, "王秀兰", 100000)
    await declare(resident_id=w["张德福"], code="shidu", now=NOW, by_id=w["张德福"])  # pending: does not count
    await fund(w, "张德福", 50000)
    cases = [
        (w["张德福"], NOV, "月卡面向60岁以上的孤寡、失独、退伍军人、劳模、先进工作者老人，"
                          "请先在“我的信息”中申报出生日期，经社区核实后即可办理。"),
        (w["王秀兰"], date(2027, 1, 1), "月卡只能办理本月或下个月的。"),
        (w["王秀兰"], date(2026, 10, 1), "月卡只能办理本月或下个月的。"),
    ]
    for resident_id, month, message in cases:
        with pytest.raises(UserFacingError) as refused:
            await buy_card(canteen_id=w["canteen"], resident_id=resident_id, month=month, by_id=resident_id, now=NOW)
        assert refused.value.message == message
    await verify(w["张德福"], date(1950, 1, 1), by_id=w["周社工"])
    with pytest.raises(UserFacingError) as refused:
        await buy_card(canteen_id=w["canteen"], resident_id=w["张德福"], month=NOV, by_id=w["张德福"], now=NOW)
    assert refused.value.message == "月卡面向60岁以上、经社区核实的孤寡、失独、退伍军人、劳模、先进工作者老人。"
    with pytest.raises(Forbidden):  # a stranger cannot spend her wallet
        await buy_card(canteen_id=w["canteen"], resident_id=w["王秀兰"], month=NOV, by_id=w["孙志愿"], now=NOW)
    await set_rule(canteen_id=w["canteen"], kind=RuleKind.CARD, params={}, active=False, effective_from=DEC,
                   by_id=w["陈食堂"], now=NOW, reason="暂停月卡")
    with pytest.raises(UserFacingError) as refused:
        await buy_card(canteen_id=w["canteen"], resident_id=w["王秀兰"], month=DEC, by_id=w["王秀兰"], now=NOW)
    assert refused.value.message == "本食堂这个月不办理月卡。"
    assert await MealCard.all().count() == 0
    # her son and the canteen's staff may buy it for her; a new card price from December is December's
    await set_rule(canteen_id=w["canteen"], kind=RuleKind.CARD, params={"price_fen": 40000}, effective_from=DEC,
                   by_id=w["陈食堂"], now=NOW, reason="恢复月卡并降价")
    by_son = await buy_card(canteen_id=w["canteen"], resident_id=w["王秀兰"], month=NOV, by_id=w["李建国"], now=NOW)
    by_staff = await buy_card(canteen_id=w["canteen"], resident_id=w["王秀兰"], month=DEC, by_id=w["陈食堂"],
                              now=NOW)
    assert (by_son.price_fen, by_staff.price_fen) == (45000, 40000)
    assert await available(w, "王秀兰") == 100000 - 85000


async def _card_meals(w: dict[str, int], card: MealCard, meals: list[tuple[int, str, int, str]]) -> None:
    """Bookings of the card's diner on the card: (day of November, meal, menu price, status)."""
    for day, meal, price, status in meals:
        menu, _ = await Menu.get_or_create(canteen_id=w["canteen"], day=date(2026, 11, day), meal=meal, defaults={
            "price_fen": price, "capacity": 100, "cutoff_at": NOW, "serve_from_at": NOW, "serve_until_at": NOW,
            "published_at": NOW, "state": "done"})
        await Booking.create(menu=menu, resident_id=card.resident_id, status=status, menu_price_fen=price, price_fen=0,
                             rule=RuleKind.CARD, rule_label="月卡（450.00元/月）", card=card,
                             code=f"C{await Booking.all().count():05d}", created_at=NOW, updated_at=NOW)


async def test_month_end_settles_each_card_once_with_the_value_of_its_meals_minus_its_price(w: dict[str, int]) -> None:
    await CanteenSettings.create(canteen_id=w["canteen"], gov_share_pct=70)
    await verify(w["张德福"], date(1950, 1, 1), "model_worker", by_id=w["周社工"])
    for name in ("王秀兰", "张德福"):
        await fund(w, name, 45000)
    hers, his = [await buy_card(canteen_id=w["canteen"], resident_id=w[n], month=NOV, by_id=w[n], now=NOW)
                 for n in ("王秀兰", "张德福")]
    # hers: 25 lunches served at 16 yuan, 5 dinners missed at 12, 3 breakfasts charged at 5.01 = 475.03 yuan,
    # and 2 cancelled lunches that do not count
    await _card_meals(w, hers, [(d, "lunch", 1600, BookingStatus.SERVED) for d in range(1, 26)]
                      + [(d, "lunch", 1600, BookingStatus.CANCELLED) for d in (26, 27)]
                      + [(d, "dinner", 1200, BookingStatus.NO_SHOW) for d in range(1, 6)]
                      + [(d, "breakfast", 501, BookingStatus.CHARGED) for d in range(1, 4)])
    # his: 10 lunches at 15 yuan, less than the card: no subsidy, and never a negative one
    await _card_meals(w, his, [(d, "lunch", 1500, BookingStatus.SERVED) for d in range(1, 11)])
    assert await settle_cards(NOV, NOV_SETTLES - timedelta(minutes=31)) == 0  # November has not ended
    assert (await sweep_due(NOV_SETTLES - timedelta(seconds=1)))["done"] == 0
    assert (await sweep_due(NOV_SETTLES))["done"] == 1
    hers, his = await MealCard.get(id=hers.id), await MealCard.get(id=his.id)
    assert (hers.meals_value_fen, hers.subsidy_fen, hers.settled_at) == (47503, 2503, NOV_SETTLES)
    assert (his.meals_value_fen, his.subsidy_fen) == (15000, 0)
    assert await canteen_balance(w, AccountKind.GOV_SUBSIDY) == -1752  # 70% of 25.03 yuan, rounded half up
    assert await canteen_balance(w, AccountKind.ENT_SUBSIDY) == -751
    assert await canteen_balance(w, AccountKind.CANTEEN) == 90000 + 2503
    assert await Entry.filter(ref=f"card:{his.id}", source=Source.SUBSIDY).count() == 0
    # the due action running again (a sweeper died after it) and a direct call settle nothing twice
    await DueAction.filter(action="canteen.settle_cards").update(status=ActionStatus.PENDING)
    assert (await sweep_due(NOV_SETTLES + timedelta(hours=1)))["done"] == 1
    assert await settle_cards(NOV, NOV_SETTLES + timedelta(hours=2)) == 0
    assert (await MealCard.get(id=hers.id)).settled_at == NOV_SETTLES
    assert await Entry.filter(source=Source.SUBSIDY).count() == 2
    assert await canteen_balance(w, AccountKind.CANTEEN) == 90000 + 2503
    assert await check_books() == BOOKS_AT_ZERO


# ---------------------------------------------------------------------------- at the same moment (PostgreSQL)


@requires_servers  # concurrent writes need PostgreSQL's row locks
async def test_one_receipt_typed_at_once_on_two_counters_is_one_top_up(w: dict[str, int]) -> None:
    rows = await asyncio.gather(*(fund(w, "王秀兰", 8000, "SAME") for _ in range(8)))
    assert len({row.id for row in rows}) == 1
    assert await available(w, "王秀兰") == 8000
    assert (await TopUp.all().count(), await Entry.all().count()) == (1, 1)
    assert await check_books() == BOOKS_AT_ZERO


@requires_servers  # concurrent writes need PostgreSQL's row locks
async def test_refunds_at_once_never_take_the_wallet_below_zero(w: dict[str, int]) -> None:
    await fund(w, "王秀兰", 10000)

    async def refund(i: int) -> str:
        try:
            await refund_wallet(canteen_id=w["canteen"], resident_id=w["王秀兰"], amount_fen=3000, method="cash",
                                receipt_no=f"B{i}", by_id=w["陈食堂"], now=NOW)
            return "paid"
        except Insufficient:
            return "short"

    outcomes = await asyncio.gather(*(refund(i) for i in range(8)))
    assert sorted(outcomes) == ["paid"] * 3 + ["short"] * 5
    assert await available(w, "王秀兰") == 1000
    assert await TopUp.filter(kind=TopUpKind.REFUND).count() == 3
    assert await check_books() == BOOKS_AT_ZERO


@requires_servers  # concurrent writes need PostgreSQL's row locks
async def test_a_card_tapped_many_times_at_once_is_bought_once(w: dict[str, int]) -> None:
    await fund(w, "王秀兰", 100000)
    cards = await asyncio.gather(*(buy_card(canteen_id=w["canteen"], resident_id=w["王秀兰"], month=DEC,
                                            by_id=w["王秀兰"], now=NOW) for _ in range(6)))
    assert len({card.id for card in cards}) == 1
    assert await available(w, "王秀兰") == 55000
    assert await Entry.filter(source=Source.CARD).count() == 1
    assert await check_books() == BOOKS_AT_ZERO
