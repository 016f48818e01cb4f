"""The canteen's price rules as a table of cases: each rule, age on the meal date, several statuses
(the cheapest wins), unverified facts ignored, the 75+ deposit, card months, the subsidy split;
then effective-dated changes and who may make them."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest

from models.canteen import CanteenSettings, PriceRule
from models.canteen_prices import (
    DEFAULT_PARAMS,
    RULE_LABELS,
    Quote,
    RuleKind,
    buy_card,
    quote,
    rule_history,
    rules_on,
    set_rule,
    split_subsidy,
    yuan,
)
from models.canteen_wallet import top_up
from models.demo import load_demo
from models.errors import Forbidden, UserFacingError
from models.facts import decide, declare
from models.places import Canteen, Community
from models.residents import Resident

pytestmark = pytest.mark.usefixtures("db")
NOW = datetime(2026, 11, 27, 2, 0, tzinfo=UTC)  # 周五 10:00 in Shanghai
MEAL_DAY = date(2026, 11, 30)  # a Monday


@pytest.fixture
async def w() -> dict[str, int]:
    await load_demo(NOW)
    ids = {"canteen": (await Canteen.get(name="米家社区幸福食堂")).id,
           "mijia": (await Community.get(name="米家社区")).id}
    for name in ("陈食堂", "周社工", "孙志愿", "王秀兰"):
        ids[name] = (await Resident.get(name=name)).id
    return ids


async def diner(
    w: dict[str, int], *, born: date | None = None, statuses: tuple[str, ...] = (), pending: tuple[str, ...] = (),
    rejected: tuple[str, ...] = (), born_pending: bool = False, deposit: int = 0, card: date | None = None,
) -> int:
    """A diner of 米家社区 with these facts (verified unless pending/rejected), deposit and card."""
    count = await Resident.all().count()
    person = await Resident.create(name=f"老人{count}", mobile=f"1390000{count:04d}", community_id=w["mijia"],
                                   created_at=NOW)
    staff = w["周社工"]
    if born is not None:
        await declare(resident_id=person.id, code="birth_date", value=born.isoformat(), now=NOW, by_id=staff,
                      verified=not born_pending)
    for code in statuses:
        await declare(resident_id=person.id, code=code, now=NOW, by_id=staff, verified=True)
    for code in pending:
        await declare(resident_id=person.id, code=code, now=NOW, by_id=person.id)
    for code in rejected:
        fact = await declare(resident_id=person.id, code=code, now=NOW, by_id=person.id)
        await decide(fact_id=fact.id, by_id=staff, approve=False, now=NOW, reason="材料不符")
    if deposit or card:
        await top_up(canteen_id=w["canteen"], resident_id=person.id, amount_fen=deposit + (45000 if card else 0),
                     method="cash", receipt_no=f"R{person.id}", by_id=w["陈食堂"], now=NOW)
    if card is not None:
        await buy_card(canteen_id=w["canteen"], resident_id=person.id, month=card, by_id=person.id, now=NOW)
    return person.id


NOV = date(2026, 11, 1)
FLAT_LABEL = "60岁以上低保、特困老人每餐6.00元"
# who (facts), the meal (day, meal, menu price) → price, rule, government's and enterprise's share
# (a canteen without settings: the government pays the whole gap)
CASES = [
    pytest.param({"born": date(1970, 5, 1)}, MEAL_DAY, 1500, (1500, RuleKind.MENU, 0, 0),
                 id="anyone else pays the menu price"),
    pytest.param({"born": date(1960, 1, 1), "statuses": ("dibao",)}, MEAL_DAY, 1500, (600, RuleKind.FLAT, 900, 0),
                 id="60+ with 低保 pays 6 yuan"),
    pytest.param({"born": date(1960, 1, 1), "statuses": ("tekun",)}, MEAL_DAY, 1500, (600, RuleKind.FLAT, 900, 0),
                 id="60+ in 特困 pays 6 yuan"),
    pytest.param({"born": date(1966, 11, 30), "statuses": ("dibao",)}, MEAL_DAY, 1500,
                 (600, RuleKind.FLAT, 900, 0), id="turning 60 on the meal date"),
    pytest.param({"born": date(1966, 12, 1), "statuses": ("dibao",)}, MEAL_DAY, 1500,
                 (1500, RuleKind.MENU, 0, 0), id="59 on the meal date (60 the day after)"),
    pytest.param({"born": date(1966, 11, 30), "statuses": ("dibao",)}, MEAL_DAY - timedelta(days=1), 1500,
                 (1500, RuleKind.MENU, 0, 0), id="a meal the day before turning 60"),
    pytest.param({"born": date(1950, 1, 1), "deposit": 12000}, MEAL_DAY, 1500, (1050, RuleKind.DISCOUNT, 450, 0),
                 id="75+ with 120 yuan deposited pays 70%"),
    pytest.param({"born": date(1950, 1, 1), "deposit": 11999}, MEAL_DAY, 1500, (1500, RuleKind.MENU, 0, 0),
                 id="75+ with 119.99 yuan deposited pays the menu price"),
    pytest.param({"born": date(1950, 1, 1), "deposit": 12000}, MEAL_DAY, 1255, (879, RuleKind.DISCOUNT, 376, 0),
                 id="70% of 12.55 rounds half up to 8.79"),
    pytest.param({"born": date(1951, 11, 30), "deposit": 12000}, MEAL_DAY, 1500, (1050, RuleKind.DISCOUNT, 450, 0),
                 id="turning 75 on the meal date"),
    pytest.param({"born": date(1951, 12, 1), "deposit": 12000}, MEAL_DAY, 1500, (1500, RuleKind.MENU, 0, 0),
                 id="74 on the meal date (75 the day after)"),
    pytest.param({"born": date(1936, 11, 30)}, MEAL_DAY, 1500, (0, RuleKind.FREE, 1500, 0),
                 id="90 on the meal date eats free"),
    pytest.param({"born": date(1936, 12, 1), "deposit": 12000}, MEAL_DAY, 1500, (1050, RuleKind.DISCOUNT, 450, 0),
                 id="89 on the meal date (90 the day after) gets the 75+ discount"),
    pytest.param({"born": date(1930, 1, 1), "statuses": ("dibao",)}, MEAL_DAY, 1500, (0, RuleKind.FREE, 1500, 0),
                 id="90+ with 低保: free beats 6 yuan"),
    pytest.param({"born": date(1945, 1, 1), "statuses": ("dibao",), "deposit": 12000}, MEAL_DAY, 1500,
                 (600, RuleKind.FLAT, 900, 0), id="75+ with 低保 and a deposit: 6 yuan beats 70% of 15"),
    pytest.param({"born": date(1945, 1, 1), "statuses": ("dibao",), "deposit": 12000}, MEAL_DAY, 800,
                 (560, RuleKind.DISCOUNT, 240, 0), id="75+ with 低保 and a deposit: 70% of 8 beats 6 yuan"),
    pytest.param({"born": date(1960, 1, 1), "statuses": ("dibao",)}, MEAL_DAY, 500, (500, RuleKind.MENU, 0, 0),
                 id="a menu price below 6 yuan: the menu price wins"),
    pytest.param({"born": date(1960, 1, 1), "statuses": ("dibao",)}, MEAL_DAY, 600, (600, RuleKind.FLAT, 0, 0),
                 id="a tie between 6 yuan and the menu price: the rule wins, no subsidy"),
    pytest.param({"born": date(1960, 1, 1), "pending": ("dibao",)}, MEAL_DAY, 1500, (1500, RuleKind.MENU, 0, 0),
                 id="a pending 低保 is ignored"),
    pytest.param({"born": date(1960, 1, 1), "rejected": ("tekun",)}, MEAL_DAY, 1500, (1500, RuleKind.MENU, 0, 0),
                 id="a rejected 特困 is ignored"),
    pytest.param({"born": date(1930, 1, 1), "born_pending": True, "statuses": ("dibao",)}, MEAL_DAY, 1500,
                 (1500, RuleKind.MENU, 0, 0), id="a pending date of birth is ignored"),
    pytest.param({"statuses": ("dibao",)}, MEAL_DAY, 1500, (1500, RuleKind.MENU, 0, 0),
                 id="no date of birth: statuses alone do not count"),
    pytest.param({"born": date(1960, 1, 1), "statuses": ("disabled", "lives_alone")}, MEAL_DAY, 1500,
                 (1500, RuleKind.MENU, 0, 0), id="statuses no rule names pay the menu price"),
    pytest.param({"born": date(1960, 1, 1), "statuses": ("guagua",), "card": NOV}, MEAL_DAY, 1500,
                 (0, RuleKind.CARD, 0, 0), id="a November card covers a meal on 30 November"),
    pytest.param({"born": date(1960, 1, 1), "statuses": ("veteran",), "card": NOV}, date(2026, 12, 1), 1500,
                 (1500, RuleKind.MENU, 0, 0), id="a November card does not cover 1 December"),
    pytest.param({"born": date(1960, 1, 1), "statuses": ("shidu",)}, MEAL_DAY, 1500, (1500, RuleKind.MENU, 0, 0),
                 id="card statuses without a card pay the menu price"),
    pytest.param({"born": date(1960, 1, 1), "statuses": ("guagua", "dibao"), "card": NOV}, MEAL_DAY, 1500,
                 (0, RuleKind.CARD, 0, 0), id="card and 低保: the card (nothing to pay) beats 6 yuan"),
    pytest.param({"born": date(1930, 1, 1), "statuses": ("model_worker",), "card": NOV}, MEAL_DAY, 1500,
                 (0, RuleKind.FREE, 1500, 0), id="card and 90+: free comes first among ties"),
]


@pytest.mark.parametrize(("who", "day", "menu_price", "expected"), CASES)
async def test_the_price_rules(w: dict[str, int], who: dict[str, Any], day: date, menu_price: int,
                               expected: tuple[int, str, int, int]) -> None:
    resident_id = await diner(w, **who)
    got = await quote(canteen_id=w["canteen"], resident_id=resident_id, day=day, meal="lunch",
                      menu_price_fen=menu_price)
    assert (got.price_fen, got.rule, got.gov_fen, got.ent_fen) == expected
    assert got.menu_price_fen == menu_price
    assert got.gov_fen + got.ent_fen == (0 if got.rule == RuleKind.CARD else menu_price - got.price_fen)
    assert (got.card_id is not None) == (got.rule == RuleKind.CARD)


async def test_the_receipt_names_the_rule(w: dict[str, int]) -> None:
    flat = await diner(w, born=date(1960, 1, 1), statuses=("dibao",))
    old = await diner(w, born=date(1950, 1, 1), deposit=12000)
    oldest = await diner(w, born=date(1930, 1, 1))
    carded = await diner(w, born=date(1960, 1, 1), statuses=("guagua",), card=NOV)
    labels = [(await quote(canteen_id=w["canteen"], resident_id=r, day=MEAL_DAY, meal="dinner",
                           menu_price_fen=1500)).rule_label for r in (flat, old, oldest, carded, w["孙志愿"])]
    assert labels == [FLAT_LABEL, "75岁以上储值满120.00元享7折", "90岁以上老人免费", "月卡（450.00元/月）", "菜单价"]
    assert set(RULE_LABELS) == {RuleKind.FREE, RuleKind.CARD, RuleKind.FLAT, RuleKind.DISCOUNT, RuleKind.MENU}


@pytest.mark.parametrize(("gap", "pct", "split"), [
    pytest.param(901, 70, (631, 270), id="70% of an odd gap rounds the government's share half up"),
    pytest.param(1, 70, (1, 0), id="one fen goes to the government at 70%"),
    pytest.param(5, 50, (3, 2), id="an exact half rounds up"),
    pytest.param(900, 100, (900, 0), id="the government pays it all"),
    pytest.param(900, 0, (0, 900), id="the enterprise pays it all"),
    pytest.param(0, 70, (0, 0), id="no gap, no subsidy"),
])
def test_the_subsidy_split(gap: int, pct: int, split: tuple[int, int]) -> None:
    assert split_subsidy(gap, pct) == split
    assert sum(split) == gap


async def test_the_subsidy_is_split_by_the_canteens_government_share(w: dict[str, int]) -> None:
    await CanteenSettings.create(canteen_id=w["canteen"], gov_share_pct=70)
    resident_id = await diner(w, born=date(1960, 1, 1), statuses=("tekun",))
    got = await quote(canteen_id=w["canteen"], resident_id=resident_id, day=MEAL_DAY, meal="lunch",
                      menu_price_fen=1501)
    assert got == Quote(menu_price_fen=1501, price_fen=600, rule=RuleKind.FLAT, rule_label=FLAT_LABEL, card_id=None,
                        gov_fen=631, ent_fen=270)


@pytest.mark.parametrize(("fen", "shown"), [
    pytest.param(600, "6.00元", id="six yuan"), pytest.param(5, "0.05元", id="five fen"),
    pytest.param(45000, "450.00元", id="a card"), pytest.param(0, "0.00元", id="nothing"),
    pytest.param(-1050, "-10.50元", id="a refund"),
])
def test_amounts_are_shown_in_yuan(fen: int, shown: str) -> None:
    assert yuan(fen) == shown


# ---------------------------------------------------------------------------- effective-dated changes


async def test_a_new_flat_price_from_the_10th_keeps_the_9th_at_the_old_price(w: dict[str, int]) -> None:
    resident_id = await diner(w, born=date(1960, 1, 1), statuses=("dibao",))
    row = await set_rule(canteen_id=w["canteen"], kind=RuleKind.FLAT, params={"price_fen": 800},
                         effective_from=date(2026, 12, 10), by_id=w["陈食堂"], now=NOW, reason="物价上涨")
    assert row.params == {**DEFAULT_PARAMS[RuleKind.FLAT], "price_fen": 800}
    assert (row.active, row.reason) == (True, "物价上涨")

    async def price_on(day: date) -> tuple[int, str]:
        got = await quote(canteen_id=w["canteen"], resident_id=resident_id, day=day, meal="lunch", menu_price_fen=1500)
        return got.price_fen, got.rule_label

    assert await price_on(date(2026, 12, 9)) == (600, FLAT_LABEL)
    assert await price_on(date(2026, 12, 10)) == (800, "60岁以上低保、特困老人每餐8.00元")
    assert await price_on(date(2027, 3, 1)) == (800, "60岁以上低保、特困老人每餐8.00元")
    assert (await rules_on(w["canteen"], date(2026, 12, 9)))[RuleKind.FLAT]["price_fen"] == 600


async def test_a_rule_row_in_the_past_cannot_be_added(w: dict[str, int]) -> None:
    with pytest.raises(UserFacingError) as refused:
        await set_rule(canteen_id=w["canteen"], kind=RuleKind.FLAT, params={"price_fen": 500},
                       effective_from=date(2026, 11, 26), by_id=w["陈食堂"], now=NOW, reason="补录")
    assert refused.value.message == "生效日期不能早于今天（11月27日）：已发生的价格不能改。"
    assert await PriceRule.all().count() == 0
    # today is not the past: from today on
    await set_rule(canteen_id=w["canteen"], kind=RuleKind.FLAT, params={"price_fen": 500},
                   effective_from=date(2026, 11, 27), by_id=w["陈食堂"], now=NOW, reason="让利")
    assert (await rules_on(w["canteen"], date(2026, 11, 27)))[RuleKind.FLAT]["price_fen"] == 500
    assert (await rules_on(w["canteen"], date(2026, 11, 26)))[RuleKind.FLAT]["price_fen"] == 600


async def test_a_rule_switched_off_stops_applying_from_its_date(w: dict[str, int]) -> None:
    resident_id = await diner(w, born=date(1950, 1, 1), deposit=12000)
    await set_rule(canteen_id=w["canteen"], kind=RuleKind.DISCOUNT, params={}, active=False,
                   effective_from=date(2026, 12, 1), by_id=w["周社工"], now=NOW, reason="企业合作到期")
    assert RuleKind.DISCOUNT in await rules_on(w["canteen"], date(2026, 11, 30))
    assert RuleKind.DISCOUNT not in await rules_on(w["canteen"], date(2026, 12, 1))
    before, after = [await quote(canteen_id=w["canteen"], resident_id=resident_id, day=day, meal="lunch",
                                 menu_price_fen=1500) for day in (date(2026, 11, 30), date(2026, 12, 1))]
    assert (before.rule, after.rule, after.price_fen) == (RuleKind.DISCOUNT, RuleKind.MENU, 1500)


async def test_setting_the_same_date_again_replaces_that_row_and_the_history_keeps_the_rest(w: dict[str, int]) -> None:
    staff = w["陈食堂"]
    await set_rule(canteen_id=w["canteen"], kind=RuleKind.FREE, params={"min_age": 85},
                   effective_from=date(2026, 12, 1), by_id=staff, now=NOW, reason="扩大免费范围")
    await set_rule(canteen_id=w["canteen"], kind=RuleKind.FREE, params={"min_age": 88},
                   effective_from=date(2026, 12, 1), by_id=staff, now=NOW, reason="按预算调整")
    await set_rule(canteen_id=w["canteen"], kind=RuleKind.CARD,
                   params={"price_fen": 40000, "meals": ["lunch", "dinner"]}, effective_from=date(2027, 1, 1),
                   by_id=staff, now=NOW, reason="月卡降价")
    history = [(r.kind, r.effective_from, r.params.get("min_age"), r.reason) for r in await rule_history(w["canteen"])]
    assert history == [(RuleKind.CARD, date(2027, 1, 1), 60, "月卡降价"),
                       (RuleKind.FREE, date(2026, 12, 1), 88, "按预算调整")]
    assert (await rules_on(w["canteen"], date(2027, 1, 5)))[RuleKind.CARD]["meals"] == ["lunch", "dinner"]


@pytest.mark.parametrize(("kind", "params", "message"), [
    pytest.param(RuleKind.FLAT, {"price_fen": -1}, "每餐价格应在0.00元到100.00元之间。", id="a negative price"),
    pytest.param(RuleKind.FLAT, {"price_fen": "6"}, "每餐价格应在0.00元到100.00元之间。", id="a price as text"),
    pytest.param(RuleKind.FLAT, {"statuses": []}, "请选择适用的身份（如低保、特困），至少一项。", id="no statuses"),
    pytest.param(RuleKind.FLAT, {"statuses": ["rich"]}, "请选择适用的身份（如低保、特困），至少一项。",
                 id="an unknown status"),
    pytest.param(RuleKind.FREE, {"min_age": 200}, "年龄应在0到120之间。", id="an age beyond 120"),
    pytest.param(RuleKind.DISCOUNT, {"pct": 100}, "折后比例（%）应在1到99之间。", id="a discount of nothing"),
    pytest.param(RuleKind.CARD, {"meals": ["supper"]}, "请选择月卡包含的餐次（早餐、午餐、晚餐），至少一项。",
                 id="an unknown meal"),
    pytest.param(RuleKind.FREE, {"price_fen": 0}, "高龄免费没有这些参数：price_fen。", id="a parameter the kind lacks"),
    pytest.param(RuleKind.MENU, {}, "没有这种价格规则；菜单价总是适用，无需设置。",
                 id="the menu price is not a rule row"),
])
async def test_bad_rule_parameters_are_refused_and_nothing_changes(w: dict[str, int], kind: str,
                                                                   params: dict[str, Any], message: str) -> None:
    with pytest.raises(UserFacingError) as refused:
        await set_rule(canteen_id=w["canteen"], kind=kind, params=params, effective_from=date(2026, 12, 1),
                       by_id=w["陈食堂"], now=NOW, reason="调整")
    assert refused.value.message == message
    assert await PriceRule.all().count() == 0


async def test_only_the_canteens_staff_change_rules_and_a_reason_is_required(w: dict[str, int]) -> None:
    for outsider in (w["孙志愿"], w["王秀兰"]):
        with pytest.raises(Forbidden):
            await set_rule(canteen_id=w["canteen"], kind=RuleKind.FLAT, params={"price_fen": 500},
                           effective_from=date(2026, 12, 1), by_id=outsider, now=NOW, reason="调整")
    with pytest.raises(UserFacingError) as refused:
        await set_rule(canteen_id=w["canteen"], kind=RuleKind.FLAT, params={"price_fen": 500},
                       effective_from=date(2026, 12, 1), by_id=w["陈食堂"], now=NOW, reason="  ")
    assert refused.value.message == "请写明调整原因（1到100个字）。"
    assert await PriceRule.all().count() == 0


async def test_a_card_covers_the_meals_of_the_rule_it_was_sold_under_all_its_month(w: dict[str, int]) -> None:
    staff = w["陈食堂"]
    await set_rule(canteen_id=w["canteen"], kind=RuleKind.CARD, params={"meals": ["lunch", "dinner"]},
                   effective_from=date(2027, 1, 1), by_id=staff, now=NOW, reason="早餐不再含在月卡内")
    resident_id = await diner(w, born=date(1960, 1, 1), statuses=("veteran",), deposit=45000)
    await buy_card(canteen_id=w["canteen"], resident_id=resident_id, month=date(2027, 1, 1), by_id=resident_id,
                   now=NOW + timedelta(days=30))
    # a change in the middle of January is for later cards, not the one sold for January
    await set_rule(canteen_id=w["canteen"], kind=RuleKind.CARD, params={"meals": ["breakfast"]},
                   effective_from=date(2027, 1, 15), by_id=staff, now=NOW, reason="月卡只含早餐")
    got = {meal: (await quote(canteen_id=w["canteen"], resident_id=resident_id, day=date(2027, 1, 20), meal=meal,
                              menu_price_fen=1500)).rule for meal in ("breakfast", "lunch", "dinner")}
    assert got == {"breakfast": RuleKind.MENU, "lunch": RuleKind.CARD, "dinner": RuleKind.CARD}
