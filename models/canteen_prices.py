"""What a diner pays for a meal (the seed's price rules), and monthly meal cards.

Rule kinds live here in code; each canteen's parameters live in ``PriceRule`` rows with the date
they take effect, so a change never rewrites the past: the rules of a day are, per kind, the
latest row in force on it (the seed's defaults while a canteen has none; an inactive row switches
the kind off from its date). A new row is dated today or later.

A quote is made on the meal date with *verified* age and statuses only (``models.facts``):

- ``free``: aged 90+ — nothing to pay.
- ``card``: a monthly card (月卡, 450 yuan) for 60+ 孤寡/失独/退伍军人/劳模/先进工作者 covers three
  meals a day of its calendar month; a meal is on the card when the diner holds an active card of
  that canteen and month. Only bookings made after buying use the card (earlier bookings of the
  month keep their frozen price).
- ``flat``: 60+ with 低保 or 特困 — 6 yuan a meal.
- ``discount``: 75+ who pre-deposited at least 120 yuan (top-ups minus counter refunds, ever) —
  70% of the menu price, rounded half up to the fen.
- ``menu``: everyone else pays the menu price.

The cheapest rule that fits wins (ties in the order free, card, flat, discount, menu), so a flat
price above a cheap menu price never applies. The gap between the menu price and the price is the
subsidy, split between the government (``gov_share_pct`` of the canteen, rounded half up) and the
enterprise (the rest) and frozen on the booking. Card meals carry no subsidy per meal: at the
month's end the card's subsidy is the menu value of its meals taken (charged, served or missed)
minus the card's price, never below zero (``settle_cards``).

A card may be bought for the current or the next month when the card rule in force on the
month's 1st fits the diner's verified statuses and their age on the month's last day (so whoever
turns 60 during the month may buy its card).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, cast

from tortoise.exceptions import IntegrityError
from tortoise.functions import Sum
from tortoise.transactions import in_transaction

from models import cases
from models.canteen import (
    MEAL_LABELS,
    MEALS,
    PRICE_MAX_FEN,
    TOPUP_MAX_FEN,
    Booking,
    BookingStatus,
    CanteenSettings,
    CardStatus,
    MealCard,
    PriceRule,
)
from models.canteen_wallet import (
    canteen_account,
    deposited_fen,
    is_canteen_staff,
    tell_wallet,
    wallet_account,
)
from models.canteen_wallet import yuan as yuan  # one formatter for every amount shown, offered here too
from models.errors import Forbidden, NotFound, UserFacingError
from models.facts import STATUSES, verified_age, verified_statuses
from models.jobs import register_action, schedule_action
from models.ledger import AccountKind, Source, transfer
from models.places import Canteen
from models.proxies import acts_for
from models.residents import Resident


class RuleKind:
    FREE = "free"
    CARD = "card"
    FLAT = "flat"
    DISCOUNT = "discount"
    MENU = "menu"


# the order ties are broken in (the first wins) and rules are listed in
RULE_ORDER = (RuleKind.FREE, RuleKind.CARD, RuleKind.FLAT, RuleKind.DISCOUNT, RuleKind.MENU)
# the kinds a canteen parameterises (the menu price always applies)
SET_KINDS = (RuleKind.FREE, RuleKind.CARD, RuleKind.FLAT, RuleKind.DISCOUNT)
RULE_LABELS = {RuleKind.FREE: "高龄免费", RuleKind.CARD: "月卡", RuleKind.FLAT: "优惠价",
               RuleKind.DISCOUNT: "储值折扣", RuleKind.MENU: "菜单价"}

# the seed's values (seed 004, 米家社区幸福食堂): what a canteen without rule rows applies
DEFAULT_PARAMS: dict[str, dict[str, Any]] = {
    RuleKind.FLAT: {"min_age": 60, "statuses": ["dibao", "tekun"], "price_fen": 600},
    RuleKind.CARD: {"min_age": 60, "statuses": ["guagua", "shidu", "veteran", "model_worker", "advanced_worker"],
                    "price_fen": 45000, "meals": list(MEALS)},
    RuleKind.DISCOUNT: {"min_age": 75, "deposit_min_fen": 12000, "pct": 70},
    RuleKind.FREE: {"min_age": 90},
}
CARD_PRICE_MAX_FEN = 3000_00
AGE_MAX = 120
RULE_REASON_MAX = 100
DEFAULT_GOV_SHARE_PCT = 100  # CanteenSettings' default: a canteen without settings has no enterprise partner


@dataclass(frozen=True)
class Quote:
    menu_price_fen: int
    price_fen: int
    rule: str  # a RuleKind
    rule_label: str  # what the receipt says, e.g. "60岁以上低保、特困老人每餐6.00元"
    card_id: int | None
    gov_fen: int
    ent_fen: int


def half_up(value: int, pct: int) -> int:
    """``value`` × ``pct`` / 100, rounded half up to a whole fen (integers only)."""
    return (value * pct + 50) // 100


def split_subsidy(gap_fen: int, gov_share_pct: int) -> tuple[int, int]:
    """The government's and the enterprise's share of a subsidy (the government's rounded half up)."""
    if gap_fen <= 0:
        return 0, 0
    gov = half_up(gap_fen, gov_share_pct)
    return gov, gap_fen - gov


def _pct_zh(pct: int) -> str:
    """70 → 7折, 75 → 7.5折: a percentage to pay, as a Chinese discount."""
    return f"{pct // 10}折" if pct % 10 == 0 else f"{pct // 10}.{pct % 10}折"


def rule_label(kind: str, params: dict[str, Any]) -> str:
    """What a rule says in a sentence, as the receipt and the rule list show it."""
    statuses = "、".join(STATUSES.get(s, s) for s in params.get("statuses", []))
    if kind == RuleKind.FREE:
        text = f"{params['min_age']}岁以上老人免费"
    elif kind == RuleKind.CARD:
        text = f"月卡（{yuan(params['price_fen'])}/月）"
    elif kind == RuleKind.FLAT:
        text = f"{params['min_age']}岁以上{statuses}老人每餐{yuan(params['price_fen'])}"
    elif kind == RuleKind.DISCOUNT:
        text = f"{params['min_age']}岁以上储值满{yuan(params['deposit_min_fen'])}享{_pct_zh(params['pct'])}"
    else:
        text = RULE_LABELS[RuleKind.MENU]
    return text[:40]


def month_start(day: date) -> date:
    return day.replace(day=1)


def month_end(day: date) -> date:
    """The last day of ``day``'s month."""
    return next_month(day) - timedelta(days=1)


def next_month(day: date) -> date:
    return date(day.year + day.month // 12, day.month % 12 + 1, 1)


def month_zh(month: date) -> str:
    return f"{month.year}年{month.month}月"


# ---------------------------------------------------------------------------- the rules in force


async def rules_on(canteen_id: int, day: date) -> dict[str, dict[str, Any]]:
    """Each configurable kind's parameters in force on ``day`` (the latest row dated on or before it;
    the seed's defaults when the canteen has none); a kind switched off is left out. The menu price
    is not listed: it always applies."""
    rows = await PriceRule.filter(canteen_id=canteen_id, effective_from__lte=day).order_by("effective_from", "id")
    latest: dict[str, PriceRule] = {row.kind: row for row in rows}
    out: dict[str, dict[str, Any]] = {}
    for kind in SET_KINDS:
        row = latest.get(kind)
        if row is None:
            out[kind] = copy.deepcopy(DEFAULT_PARAMS[kind])
        elif row.active:
            out[kind] = copy.deepcopy(row.params)
    return out


async def gov_share_pct(canteen_id: int) -> int:
    value: Any = await CanteenSettings.filter(canteen_id=canteen_id).first().values_list("gov_share_pct", flat=True)
    return DEFAULT_GOV_SHARE_PCT if value is None else int(value)


async def card_for(*, canteen_id: int, resident_id: int, day: date) -> MealCard | None:
    """The diner's active card of this canteen for ``day``'s month, if any."""
    return await MealCard.get_or_none(canteen_id=canteen_id, resident_id=resident_id, month=month_start(day),
                                      status=CardStatus.ACTIVE)


def _fits(params: dict[str, Any], age: int | None, statuses: set[str]) -> bool:
    """Old enough, and (for rules that name statuses) holding one of them."""
    if age is None or age < params["min_age"]:
        return False
    return "statuses" not in params or bool(statuses & set(params["statuses"]))


async def quote(*, canteen_id: int, resident_id: int, day: date, meal: str, menu_price_fen: int) -> Quote:
    """The price the diner pays for this meal, by which rule, and the subsidy split (see the module doc)."""
    rules = await rules_on(canteen_id, day)
    age = await verified_age(resident_id, day)
    statuses = await verified_statuses(resident_id)
    # (price, tie order, kind, params, card id)
    fits: list[tuple[int, int, str, dict[str, Any], int | None]] = [
        (menu_price_fen, RULE_ORDER.index(RuleKind.MENU), RuleKind.MENU, {}, None)]
    card = await card_for(canteen_id=canteen_id, resident_id=resident_id, day=day)
    if card is not None:
        # a card covers the meals of the card rule it was sold under (the month's 1st), for its whole month
        sold = (await rules_on(canteen_id, card.month)).get(RuleKind.CARD, DEFAULT_PARAMS[RuleKind.CARD])
        if meal in sold["meals"]:
            fits.append((0, RULE_ORDER.index(RuleKind.CARD), RuleKind.CARD, {**sold, "price_fen": card.price_fen},
                         card.id))
    free = rules.get(RuleKind.FREE)
    if free is not None and _fits(free, age, statuses):
        fits.append((0, RULE_ORDER.index(RuleKind.FREE), RuleKind.FREE, free, None))
    flat = rules.get(RuleKind.FLAT)
    if flat is not None and _fits(flat, age, statuses):
        fits.append((flat["price_fen"], RULE_ORDER.index(RuleKind.FLAT), RuleKind.FLAT, flat, None))
    discount = rules.get(RuleKind.DISCOUNT)
    if discount is not None and _fits(discount, age, statuses) and \
            await deposited_fen(resident_id) >= discount["deposit_min_fen"]:
        fits.append((half_up(menu_price_fen, discount["pct"]), RULE_ORDER.index(RuleKind.DISCOUNT),
                     RuleKind.DISCOUNT, discount, None))
    price, _, kind, params, card_id = min(fits, key=lambda fit: (fit[0], fit[1]))
    gov, ent = (0, 0) if kind == RuleKind.CARD else split_subsidy(menu_price_fen - price,
                                                                  await gov_share_pct(canteen_id))
    return Quote(menu_price_fen=menu_price_fen, price_fen=price, rule=kind, rule_label=rule_label(kind, params),
                 card_id=card_id, gov_fen=gov, ent_fen=ent)


# ---------------------------------------------------------------------------- changing the rules


def _int_in(params: dict[str, Any], name: str, low: int, high: int, what: str) -> None:
    value = params.get(name)
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise UserFacingError(f"{what}应在{low}到{high}之间。")


def _yuan_in(params: dict[str, Any], name: str, low: int, high: int, what: str) -> None:
    value = params.get(name)
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise UserFacingError(f"{what}应在{yuan(low)}到{yuan(high)}之间。")


def check_params(kind: str, params: dict[str, Any]) -> dict[str, Any]:
    """The parameters of a rule kind, checked (UserFacingError naming what is wrong)."""
    unknown = set(params) - set(DEFAULT_PARAMS[kind])
    if unknown:
        raise UserFacingError(f"{RULE_LABELS[kind]}没有这些参数：{'、'.join(sorted(unknown))}。")
    _int_in(params, "min_age", 0, AGE_MAX, "年龄")
    if "statuses" in DEFAULT_PARAMS[kind]:
        statuses = params.get("statuses")
        if not isinstance(statuses, list) or not statuses or not all(s in STATUSES for s in statuses):
            raise UserFacingError("请选择适用的身份（如低保、特困），至少一项。")
        params["statuses"] = sorted(set(statuses), key=list(STATUSES).index)
    if kind == RuleKind.FLAT:
        _yuan_in(params, "price_fen", 0, PRICE_MAX_FEN, "每餐价格")
    elif kind == RuleKind.CARD:
        _yuan_in(params, "price_fen", 1, CARD_PRICE_MAX_FEN, "月卡价格")
        meals = params.get("meals")
        if not isinstance(meals, list) or not meals or not all(m in MEALS for m in meals):
            raise UserFacingError("请选择月卡包含的餐次（早餐、午餐、晚餐），至少一项。")
        params["meals"] = [m for m in MEALS if m in meals]
    elif kind == RuleKind.DISCOUNT:
        _yuan_in(params, "deposit_min_fen", 0, TOPUP_MAX_FEN, "储值门槛")
        _int_in(params, "pct", 1, 99, "折后比例（%）")
    return params


async def set_rule(
    *, canteen_id: int, kind: str, params: dict[str, Any], effective_from: date, by_id: int, now: datetime,
    reason: str, active: bool = True,
) -> PriceRule:
    """A rule's parameters from ``effective_from`` on (today or later: the past is never rewritten),
    by the canteen's staff. ``params`` may name only what changes: the rest is taken from the rule in
    force that day. ``active=False`` switches the kind off from that date. Setting the same date again
    replaces that (not yet past) row."""
    if kind not in SET_KINDS:
        raise UserFacingError("没有这种价格规则；菜单价总是适用，无需设置。")
    if not await is_canteen_staff(by_id, canteen_id):
        raise Forbidden("只有本食堂或社区的工作人员可以修改价格规则。")
    today = cases.local_today(now)
    if effective_from < today:
        raise UserFacingError(f"生效日期不能早于今天（{today.month}月{today.day}日）：已发生的价格不能改。")
    if effective_from > today + timedelta(days=366):
        raise UserFacingError("生效日期最多定在一年以内。")
    reason = reason.strip()
    if not 1 <= len(reason) <= RULE_REASON_MAX:
        raise UserFacingError(f"请写明调整原因（1到{RULE_REASON_MAX}个字）。")
    if not isinstance(params, dict):
        raise UserFacingError("价格规则的参数格式不对。")
    base = (await rules_on(canteen_id, effective_from)).get(kind, DEFAULT_PARAMS[kind])
    merged = check_params(kind, {**copy.deepcopy(base), **copy.deepcopy(params)}) if active else dict(base)
    fields: dict[str, Any] = {"params": merged, "active": active, "reason": reason, "created_by_id": by_id,
                              "created_at": now}
    async with in_transaction():
        row = await PriceRule.select_for_update().get_or_none(canteen_id=canteen_id, kind=kind,
                                                              effective_from=effective_from)
        if row is not None:
            await PriceRule.filter(id=row.id).update(**fields)
            return await PriceRule.get(id=row.id)
        try:
            async with in_transaction():
                return await PriceRule.create(canteen_id=canteen_id, kind=kind, effective_from=effective_from,
                                              **fields)
        except IntegrityError:  # the same date set at the same moment: the last one written wins
            row = await PriceRule.get(canteen_id=canteen_id, kind=kind, effective_from=effective_from)
            await PriceRule.filter(id=row.id).update(**fields)
            return await PriceRule.get(id=row.id)


async def rule_history(canteen_id: int) -> list[PriceRule]:
    """Every rule row of the canteen, the latest date first (what applied when, who set it and why)."""
    return await PriceRule.filter(canteen_id=canteen_id).order_by("-effective_from", "kind", "-id")


# ---------------------------------------------------------------------------- monthly cards


async def card_refusal(*, canteen_id: int, resident_id: int, month: date) -> str:
    """Why the diner may not buy the month's card ("" when they may)."""
    params = (await rules_on(canteen_id, month_start(month))).get(RuleKind.CARD)
    if params is None:
        return "本食堂这个月不办理月卡。"
    age = await verified_age(resident_id, month_end(month))
    names = "、".join(STATUSES[s] for s in params["statuses"])
    if age is None:
        return f"月卡面向{params['min_age']}岁以上的{names}老人，请先在“我的信息”中申报出生日期，经社区核实后即可办理。"
    if not _fits(params, age, await verified_statuses(resident_id)):
        return f"月卡面向{params['min_age']}岁以上、经社区核实的{names}老人。"
    return ""


async def may_buy_card(*, canteen_id: int, resident_id: int, month: date) -> bool:
    """Whether the card rule (in force on the month's 1st) fits the diner by the month's last day."""
    return not await card_refusal(canteen_id=canteen_id, resident_id=resident_id, month=month)


def settle_due(month: date) -> datetime:
    """When a month's cards are settled: 00:30 local on the next month's 1st."""
    return datetime.combine(next_month(month), time(0, 30), tzinfo=cases.CONTEXT.tz).astimezone(UTC)


async def buy_card(*, canteen_id: int, resident_id: int, month: date, by_id: int, now: datetime) -> MealCard:
    """Buy the diner's card for the current or next month from their wallet (the price in force on the
    month's 1st), by the diner, a family member acting for them or the canteen's staff. Once per
    canteen, diner and month: buying again returns the card. Insufficient when the wallet is short."""
    month = month_start(month)
    canteen = await Canteen.get_or_none(id=canteen_id)
    resident = await Resident.get_or_none(id=resident_id, erased_at=None)
    if canteen is None or resident is None:
        raise NotFound("没有找到这位居民或这个食堂。")
    if by_id != resident_id and not await acts_for(by_id, resident_id) \
            and not await is_canteen_staff(by_id, canteen_id):
        raise Forbidden("只有本人、绑定的家人或食堂工作人员可以办理月卡。")
    earlier = await MealCard.get_or_none(canteen_id=canteen_id, resident_id=resident_id, month=month)
    if earlier is not None:
        if earlier.status == CardStatus.ACTIVE:
            return earlier
        raise UserFacingError(f"{month_zh(month)}的月卡已退，如需重新办理请到食堂柜台。")
    this_month = month_start(cases.local_today(now))
    if month not in (this_month, next_month(this_month)):
        raise UserFacingError("月卡只能办理本月或下个月的。")
    refusal = await card_refusal(canteen_id=canteen_id, resident_id=resident_id, month=month)
    if refusal:
        raise UserFacingError(refusal)
    price = (await rules_on(canteen_id, month))[RuleKind.CARD]["price_fen"]
    wallet = await wallet_account(resident_id, now)
    takings = await canteen_account(AccountKind.CANTEEN, canteen_id, now)
    try:
        async with in_transaction():
            card = await MealCard.create(canteen_id=canteen_id, resident_id=resident_id, month=month, price_fen=price,
                                         bought_by_id=by_id, bought_at=now)
            await transfer(from_account=wallet, to_account=takings, amount=price, source=Source.CARD,
                           key=f"card:buy:{card.id}", now=now, ref=f"card:{card.id}",
                           memo=f"{canteen.name}{month_zh(month)}月卡", actor_id=by_id)
    except IntegrityError:  # bought at the same moment (a double tap)
        again = await MealCard.get_or_none(canteen_id=canteen_id, resident_id=resident_id, month=month)
        if again is None:
            raise
        return again
    await schedule_action("canteen.settle_cards", f"month:{month.isoformat()[:7]}", settle_due(month), now)
    from models.canteen_booking import cover_by_card  # booking prices through this module

    covered = await cover_by_card(card.id, now)
    meals = "、".join(MEAL_LABELS[m] for m in (await rules_on(canteen_id, month))[RuleKind.CARD]["meals"])
    moved = f"已订的{covered}餐改用月卡，冻结的餐费退回钱包。" if covered else ""
    await tell_wallet(resident_id, f"{resident.name}已办理{canteen.name}{month_zh(month)}月卡，"
                      f"从钱包支付{yuan(price)}，当月{meals}订餐不再另付餐费。{moved}",
                      key=f"canteen:card:{card.id}", now=now)
    return card


async def card_meals_value(card_id: int) -> int:
    """The menu value of the card's meals taken: charged, served or missed."""
    value = await Booking.filter(card_id=card_id, status__in=(
        BookingStatus.CHARGED, BookingStatus.SERVED, BookingStatus.NO_SHOW)).annotate(
        s=Sum("menu_price_fen")).first().values_list("s", flat=True)
    return int(cast(int, value) or 0)


async def settle_cards(month: date, now: datetime) -> int:
    """Book each active card's subsidy of a month that has ended (menu value of its meals taken
    minus its price, never below zero, split by the canteen's government share); how many cards
    were settled this time. Each card once: running it again settles nothing twice."""
    month = month_start(month)
    if cases.local_today(now) < next_month(month):
        return 0
    settled = 0
    cards = await MealCard.filter(month=month, status=CardStatus.ACTIVE, settled_at=None).order_by("id")
    for card in cards:
        value = await card_meals_value(card.id)
        subsidy = max(0, value - card.price_fen)
        gov, ent = split_subsidy(subsidy, await gov_share_pct(card.canteen_id))
        takings = await canteen_account(AccountKind.CANTEEN, card.canteen_id, now)
        async with in_transaction():
            claimed = await MealCard.filter(id=card.id, settled_at=None).update(
                settled_at=now, meals_value_fen=value, subsidy_fen=subsidy)
            if not claimed:
                continue
            for funder, amount in ((AccountKind.GOV_SUBSIDY, gov), (AccountKind.ENT_SUBSIDY, ent)):
                if amount:
                    side = "gov" if funder == AccountKind.GOV_SUBSIDY else "ent"
                    await transfer(from_account=await canteen_account(funder, card.canteen_id, now),
                                   to_account=takings, amount=amount, source=Source.SUBSIDY,
                                   key=f"card:{side}:{card.id}", now=now, ref=f"card:{card.id}",
                                   memo=f"{month_zh(month)}月卡补贴")
        settled += 1
    return settled


@register_action("canteen.settle_cards")
async def _settle_cards_due(target: str, now: datetime) -> None:
    """Target ``month:2026-11``: settle that month's cards."""
    year, month = target.removeprefix("month:").split("-")
    await settle_cards(date(int(year), int(month), 1), now)
