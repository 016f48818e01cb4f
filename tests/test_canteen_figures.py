"""The canteen's figures against a known week: meals booked, served and missed per day, meal and
rule; subsidy per funder by the month of the meal (a monthly card's by its month, though settled on
the 1st after); top-ups, refunds and wallets at the period's end; the spreadsheet and the chat
summary say the same."""

from __future__ import annotations

import io
from datetime import UTC, date, datetime
from typing import Any
from zoneinfo import ZoneInfo

import openpyxl
import pytest

from models.canteen import Booking
from models.canteen_booking import book, cancel, publish_menu, serve, update_settings
from models.canteen_figures import canteen_figures, figures_text, figures_xlsx, may_read_diner
from models.canteen_prices import buy_card, set_rule
from models.canteen_wallet import refund_wallet, top_up
from models.demo import load_demo
from models.errors import UserFacingError
from models.facts import declare
from models.jobs import sweep_due
from models.ledger import check_books
from models.places import Canteen, Community
from models.proxies import decide_link, request_link
from models.residents import Resident

pytestmark = pytest.mark.usefixtures("db")
TZ = ZoneInfo("Asia/Shanghai")
NOW = datetime(2026, 11, 27, 2, 0, tzinfo=UTC)  # Friday 10:00 in Shanghai
DISHES = [{"name": "清蒸鱼", "marks": ["soft"]}]
MON, TUE, WED = date(2026, 11, 30), date(2026, 12, 1), date(2026, 12, 2)


def at(day: date, hhmm: str) -> datetime:
    hour, minute = (int(p) for p in hhmm.split(":"))
    return datetime(day.year, day.month, day.day, hour, minute, tzinfo=TZ).astimezone(UTC)


@pytest.fixture
async def week() -> dict[str, Any]:
    """Three lunches at 15 yuan (the government pays 60% of each subsidy):

    - Monday: 王秀兰 (86, 低保: 6 yuan, served), 孙阿姨 (the menu price, served), 刘大爷 (96: free,
      a no-show), 赵奶奶 (cancelled before the cut-off).
    - Tuesday: 钱爷爷 on his December card (served), 王秀兰 (a no-show).
    - Wednesday: 钱爷爷 on his card (a no-show).
    - Counter: everyone topped up on Friday; 王秀兰 10 yuan more on Monday; 1 yuan paid back to
      孙阿姨 on Tuesday. 钱爷爷's December card costs 20 yuan (a rule set from December 1st).
    """
    await load_demo(NOW)
    canteen = await Canteen.get(name="米家社区幸福食堂")
    mijia = await Community.get(name="米家社区")
    cook = (await Resident.get(name="陈食堂")).id
    staff = (await Resident.get(name="周社工")).id
    w: dict[str, Any] = {"canteen": canteen.id, "cook": cook}
    w["王秀兰"] = (await Resident.get(name="王秀兰")).id
    for name in ("孙阿姨", "刘大爷", "赵奶奶", "钱爷爷"):
        w[name] = (await Resident.create(name=name, community_id=mijia.id, created_at=NOW)).id
    for name, born, status in (("王秀兰", "1940-03-01", "dibao"), ("刘大爷", "1930-01-01", None),
                               ("钱爷爷", "1955-05-05", "veteran")):
        await declare(resident_id=w[name], code="birth_date", value=born, now=NOW, by_id=staff, verified=True)
        if status:
            await declare(resident_id=w[name], code=status, now=NOW, by_id=staff, verified=True)
    await update_settings(canteen_id=canteen.id, by_id=cook, now=NOW, gov_share_pct=60)
    await set_rule(canteen_id=canteen.id, kind="card", params={"price_fen": 2000}, effective_from=TUE, by_id=cook,
                   now=NOW, reason="试点月卡")
    for name in ("王秀兰", "孙阿姨", "赵奶奶", "钱爷爷"):
        await top_up(canteen_id=canteen.id, resident_id=w[name], amount_fen=2500 if name == "钱爷爷" else 2000,
                     method="cash", receipt_no=f"F-{name}", by_id=cook, now=NOW)
    await buy_card(canteen_id=canteen.id, resident_id=w["钱爷爷"], month=TUE, by_id=w["钱爷爷"], now=NOW)
    menus = {}
    for day in (MON, TUE, WED):
        menus[day], _ = await publish_menu(canteen_id=canteen.id, day=day, meal="lunch", dishes=DISHES,
                                           price_fen=1500, by_id=cook, now=NOW)
    plan = {MON: ("王秀兰", "孙阿姨", "刘大爷", "赵奶奶"), TUE: ("钱爷爷", "王秀兰"), WED: ("钱爷爷",)}
    bookings: dict[tuple[date, str], Booking] = {}
    for day, names in plan.items():
        for name in names:
            bookings[day, name] = await book(menu_id=menus[day].id, resident_id=w[name], by_id=w[name],
                                             mode="dine_in", now=NOW)
    await cancel(booking_id=bookings[MON, "赵奶奶"].id, by_id=w["赵奶奶"], now=NOW)
    w["bookings"] = bookings
    await top_up(canteen_id=canteen.id, resident_id=w["王秀兰"], amount_fen=1000, method="wechat", receipt_no="MON-1",
                 by_id=cook, now=at(MON, "08:00"))
    await sweep_due(at(MON, "09:30"))
    for name in ("王秀兰", "孙阿姨"):
        await serve(booking_id=bookings[MON, name].id, by_id=cook, now=at(MON, "11:30"))
    await sweep_due(at(TUE, "09:30"))  # Monday's meal ended, Tuesday's cut-off
    await refund_wallet(canteen_id=canteen.id, resident_id=w["孙阿姨"], amount_fen=100, method="cash",
                        receipt_no="TUE-1", by_id=cook, now=at(TUE, "10:00"))
    await serve(booking_id=bookings[TUE, "钱爷爷"].id, by_id=cook, now=at(TUE, "11:40"))
    await sweep_due(at(WED, "13:00"))  # Tuesday's and Wednesday's meals over
    return w


def rows_of(data: bytes, title: str) -> list[list[Any]]:
    return [[c.value for c in row] for row in openpyxl.load_workbook(io.BytesIO(data))[title].iter_rows()]


async def test_meals_per_day_meal_and_rule(week: dict[str, Any]) -> None:
    figs = await canteen_figures(week["canteen"], MON, WED, TZ)
    assert [(line.day, line.rule, line.booked, line.served, line.missed, line.cancelled, line.paid_fen,
             line.menu_value_fen) for line in figs.lines] == [
        (MON, "flat", 1, 1, 0, 0, 600, 1500),
        (MON, "free", 1, 0, 1, 0, 0, 1500),
        (MON, "menu", 1, 1, 0, 1, 1500, 1500),  # 孙阿姨 served; 赵奶奶 cancelled
        (TUE, "card", 1, 1, 0, 0, 0, 1500),
        (TUE, "flat", 1, 0, 1, 0, 600, 1500),
        (WED, "card", 1, 0, 1, 0, 0, 1500),
    ]
    assert {r.rule: (r.booked, r.served, r.missed) for r in figs.by_rule} == {
        "flat": (2, 1, 1), "card": (2, 1, 1), "free": (1, 0, 1), "menu": (1, 1, 0)}
    t = figs.total
    assert (t.booked, t.served, t.missed, t.cancelled, t.paid_fen, t.menu_value_fen) == (6, 3, 3, 1, 2700, 9000)
    monday = await canteen_figures(week["canteen"], MON, MON, TZ)
    assert (monday.total.booked, [m.month for m in monday.subsidy]) == (3, [date(2026, 11, 1)])


async def test_subsidy_per_funder_by_the_month_of_the_meal_and_the_card(week: dict[str, Any]) -> None:
    # the cards of December are settled at 00:30 on January 1st: menu value 3000 - card 2000 = 1000
    await sweep_due(at(date(2027, 1, 1), "00:30"))
    figs = await canteen_figures(week["canteen"], MON, WED, TZ)
    # November: 王秀兰 900 (540 + 360) and 刘大爷 1500 (900 + 600); December: 王秀兰 900 and the card 1000
    assert [(m.month, m.gov_fen, m.ent_fen) for m in figs.subsidy] == [
        (date(2026, 11, 1), 1440, 960), (date(2026, 12, 1), 1140, 760)]
    assert (figs.gov_fen, figs.ent_fen) == (2580, 1720)
    november = await canteen_figures(week["canteen"], date(2026, 11, 1), date(2026, 11, 30), TZ)
    assert [(m.gov_fen, m.ent_fen) for m in november.subsidy] == [(1440, 960)]
    # a missed meal staff cancel afterwards takes its subsidy back, in its own month
    await cancel(booking_id=week["bookings"][MON, "刘大爷"].id, by_id=week["cook"], now=at(WED, "14:00"),
                 reason="送错了")
    again = await canteen_figures(week["canteen"], MON, WED, TZ)
    assert (again.subsidy[0].gov_fen, again.subsidy[0].ent_fen) == (540, 360)
    assert await check_books() == {"points": 0, "fen": 0}


async def test_top_ups_refunds_and_wallets_at_the_periods_end(week: dict[str, Any]) -> None:
    figs = await canteen_figures(week["canteen"], MON, WED, TZ)
    assert (figs.topups, figs.topup_fen, figs.refunds, figs.refund_fen) == (1, 1000, 1, 100)
    assert [(w.name, w.available_fen, w.held_fen) for w in figs.wallets] == [
        ("赵奶奶", 2000, 0), ("王秀兰", 1800, 0), ("钱爷爷", 500, 0), ("孙阿姨", 400, 0), ("刘大爷", 0, 0)]
    assert figs.wallet_fen == 4700
    # on Sunday night Monday's and Tuesday's 6 yuan were still held, and the 10 yuan not yet in
    sunday = await canteen_figures(week["canteen"], date(2026, 11, 29), date(2026, 11, 29), TZ)
    assert {w.name: (w.available_fen, w.held_fen) for w in sunday.wallets}["王秀兰"] == (800, 1200)
    assert (sunday.topups, sunday.total.booked) == (0, 0)


async def test_the_spreadsheet_and_the_chat_summary_tell_the_same(week: dict[str, Any]) -> None:
    figs = await canteen_figures(week["canteen"], MON, WED, TZ)
    data = figures_xlsx(figs)
    meals = rows_of(data, "用餐")
    assert meals[0] == ["米家社区幸福食堂 用餐数据：2026-11-30 至 2026-12-02"] + [None] * 10
    assert ["2026-11-30", "午餐", figs.lines[0].rule_label, 1, 1, 0, 0, 0, 0, 600, 1500] in meals
    assert meals[-1] == ["合计", None, None, 6, 3, 3, 1, 0, 0, 2700, 9000]
    assert rows_of(data, "补贴")[1:] == [["2026-11", 1440, 960, 2400], ["2026-12", 540, 360, 900],
                                       ["合计", 1980, 1320, 3300]]  # the card not settled yet
    assert rows_of(data, "充值")[1:] == [["充值", 1, 1000], ["柜台退款", 1, 100]]
    assert rows_of(data, "钱包")[-1] == ["合计", 4700, 0, 4700]
    assert figures_text(figs).splitlines() == [
        "米家社区幸福食堂 2026-11-30 至 2026-12-02",
        "订餐6份，已就餐3份，未就餐3份，取消1份。",
        "个人支付27.00元，菜价合计90.00元。",
        "按价格规则：" + "；".join(f"{r.rule_label}{r.booked}份" for r in figs.by_rule) + "。",
        "补贴：政府19.80元，企业13.20元。",
        "充值1笔共10.00元，退款1笔共1.00元；5位用餐居民钱包合计47.00元。",
    ]


async def test_a_period_is_at_most_a_year_and_never_backwards(week: dict[str, Any]) -> None:
    with pytest.raises(UserFacingError, match="结束日期不能早于开始日期"):
        await canteen_figures(week["canteen"], WED, MON, TZ)
    with pytest.raises(UserFacingError, match="最多统计366天"):
        await canteen_figures(week["canteen"], date(2025, 1, 1), date(2026, 1, 2), TZ)


async def test_who_reads_a_diners_canteen_data(week: dict[str, Any]) -> None:
    elder = await Resident.get(id=week["王秀兰"])
    child = await Resident.get(name="孙志愿")
    assert not await may_read_diner(child.id, elder)
    link, _ = await request_link(proxy_id=child.id, elder_id=elder.id, relation="子女", now=NOW)
    await decide_link(link_id=link.id, by_id=elder.id, how="elder", approve=True, now=NOW)
    assert await may_read_diner(child.id, elder) and await may_read_diner(elder.id, elder)
    assert await may_read_diner(week["cook"], elder)  # the canteen's staff
    assert await may_read_diner((await Resident.get(name="周社工")).id, elder)  # her community's staff
    assert not await may_read_diner((await Resident.get(name="张德福")).id, elder)  # a neighbour
