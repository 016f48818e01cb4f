"""Booking the canteen's meals: settings, slots, closed days, menus, bookings and the waiting list,
the cut-off, the counter, standing orders and the kitchen's count.

- A menu's seats are its ``booked`` column, changed only by conditional UPDATEs: a seat is taken by
  ``booked = booked + 1 WHERE booked < capacity AND state = 'open'`` in the same transaction as the
  hold of the meal's price (the diner's WALLET → HOLD), so when the wallet is short the seat goes
  back, and capacity holds under any concurrency.
- A full sitting puts the diner on its waiting list (no money held). A freed seat is handed on to
  the first waiting diner, still counted: OFFERED for ``OFFER_MINUTES`` with a pushed question
  (accept / decline). Accepting holds the money; declining or letting it run out hands the seat
  to the next. The cut-off closes the list.
- The cut-off (a due action) charges each booked meal (HOLD → the canteen) and books the subsidy
  gap frozen on it (the government's and the enterprise's accounts → the canteen), lapses the
  waiting list, closes the menu and pushes the kitchen count to the canteen's staff. The meal's
  end marks meals not served as no-shows (refunded when the canteen's no-show rule says so).
- Every money movement has its own ledger key per booking and round (a re-booking bumps the
  round), so each step is idempotent and due actions may run twice.
- A standing order (常订) books matching meals when a menu is published, within the wallet; the
  diner is told when one could not be placed and why.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from tortoise.exceptions import IntegrityError
from tortoise.expressions import F
from tortoise.transactions import in_transaction

from models import cases
from models.canteen import (
    CAPACITY_MAX,
    CUTOFF_DAY_BEFORE,
    DEFAULT_SLOTS,
    DIET_LABELS,
    DISH_NAME_MAX,
    DISHES_MAX,
    MEAL_LABELS,
    MEALS,
    MENU_DAYS_AHEAD,
    MODE_LABELS,
    OFFER_MINUTES,
    PRICE_MAX_FEN,
    SEATED,
    Booking,
    BookingStatus,
    CanteenSettings,
    ClosedDay,
    Diner,
    MealCard,
    MealSlot,
    Menu,
    MenuState,
    Mode,
    StandingOrder,
)
from models.canteen_prices import next_month, quote
from models.canteen_wallet import (
    canteen_account,
    canteen_of,
    family_of,
    hold_account,
    is_canteen_staff,
    wallet_account,
    yuan,
)
from models.conversation import choice, push_prompt, withdraw_prompts
from models.errors import Forbidden, NotFound, UserFacingError
from models.jobs import cancel_actions, register_action, schedule_action
from models.ledger import AccountKind, Insufficient, Source, transfer
from models.places import Canteen
from models.proxies import acts_for
from models.push import push_text
from models.redemption import new_code, normalize_code
from models.residents import Mobility, Resident, WechatAccount
from models.roles import Role, Scope, StaffRole
from models.service_days import fmt_day

ALLERGIES_MAX = 60
REASON_MAX = 100
CLOSED_REASON_MAX = 60
OFFER_FLOW = "canteen_offer"  # the chat flow (handlers/canteen.py) that takes the answer to a seat offer
OFFER_STEP = "answer"  # its step: receives "yes" or "no", data {"booking_id": ...}
OFFER_PROMPT_DAYS = 1  # the prompt is withdrawn when the offer lapses, long before this
CHAT_CHANNELS = ("oa", "chat")

LIVE = (BookingStatus.WAITING, BookingStatus.OFFERED, BookingStatus.BOOKED, BookingStatus.CHARGED,
        BookingStatus.SERVED, BookingStatus.NO_SHOW)  # a booking that a second tap returns unchanged
UPCOMING = (BookingStatus.WAITING, BookingStatus.OFFERED, BookingStatus.BOOKED, BookingStatus.CHARGED)
# the meals the kitchen cooks
COUNTED = (BookingStatus.BOOKED, BookingStatus.CHARGED, BookingStatus.SERVED, BookingStatus.NO_SHOW)
_HHMM = re.compile(r"^([01]\d|2[0-3]):[0-5]\d$")


def meal_order(meal: str) -> int:
    return MEALS.index(meal) if meal in MEALS else len(MEALS)


def meal_label(menu: Menu) -> str:
    """12月3日（周四）午餐: the meal as residents read it."""
    return f"{fmt_day(menu.day)}{MEAL_LABELS.get(menu.meal, menu.meal)}"


def _local_at(day: date, hhmm: str) -> datetime:
    hour, minute = (int(part) for part in hhmm.split(":"))
    return datetime.combine(day, time(hour, minute), tzinfo=cases.CONTEXT.tz).astimezone(UTC)


def _hm(when: datetime) -> str:
    return f"{when.astimezone(cases.CONTEXT.tz):%H:%M}"


def _when(when: datetime) -> str:
    local = when.astimezone(cases.CONTEXT.tz)
    return f"{local.month}月{local.day}日{local:%H:%M}"


async def _staff_only(by_id: int, canteen_id: int) -> None:
    if not await is_canteen_staff(by_id, canteen_id):
        raise Forbidden("只有本食堂的工作人员可以这样做。")


async def _speaks_for(by_id: int, resident_id: int) -> bool:
    return by_id == resident_id or await acts_for(by_id, resident_id)


async def _may_act(by_id: int, resident_id: int, canteen_id: int) -> bool:
    """The diner, a family member acting for them, or the canteen's staff."""
    return await _speaks_for(by_id, resident_id) or await is_canteen_staff(by_id, canteen_id)


# ---------------------------------------------------------------------------- settings and slots


async def settings_of(canteen_id: int) -> CanteenSettings:
    """The canteen's settings (made with the defaults the first time)."""
    found = await CanteenSettings.get_or_none(canteen_id=canteen_id)
    if found is not None:
        return found
    if not await Canteen.exists(id=canteen_id):
        raise NotFound("没有找到这个食堂。")
    try:
        async with in_transaction():
            return await CanteenSettings.create(canteen_id=canteen_id)
    except IntegrityError:  # made concurrently
        return await CanteenSettings.get(canteen_id=canteen_id)


def closed_weekdays_of(settings: CanteenSettings) -> set[int]:
    return {int(part) for part in settings.closed_weekdays.split(",") if part.strip().isdigit()}


def _weekdays(value: Iterable[int] | str, *, allow_empty: bool) -> str:
    """ISO weekdays as stored, e.g. "1,2,3,4,5" (UserFacingError for anything else)."""
    items: list[Any] = [p.strip() for p in value.split(",") if p.strip()] if isinstance(value, str) else list(value)
    days: set[int] = set()
    for item in items:
        if isinstance(item, bool) or not (isinstance(item, int) or (isinstance(item, str) and item.isdigit())):
            raise UserFacingError("星期请用1到7表示（1是周一，7是周日）。")
        if not 1 <= int(item) <= 7:
            raise UserFacingError("星期请用1到7表示（1是周一，7是周日）。")
        days.add(int(item))
    if not days and not allow_empty:
        raise UserFacingError("请至少选一天。")
    return ",".join(str(d) for d in sorted(days))


async def update_settings(
    *, canteen_id: int, by_id: int, now: datetime, no_show_pays: bool | None = None, gov_share_pct: int | None = None,
    closed_weekdays: Iterable[int] | str | None = None,
) -> CanteenSettings:
    """Change the canteen's settings (its staff only). A new subsidy share applies to meals booked
    afterwards (a booking froze its split); new closed weekdays to menus published afterwards."""
    await _staff_only(by_id, canteen_id)
    settings = await settings_of(canteen_id)
    if no_show_pays is not None:
        settings.no_show_pays = bool(no_show_pays)
    if gov_share_pct is not None:
        if isinstance(gov_share_pct, bool) or not isinstance(gov_share_pct, int) or not 0 <= gov_share_pct <= 100:
            raise UserFacingError("政府补贴的比例应在0到100之间。")
        settings.gov_share_pct = gov_share_pct
    if closed_weekdays is not None:
        settings.closed_weekdays = _weekdays(closed_weekdays, allow_empty=True)
    settings.updated_at = now
    settings.updated_by_id = by_id
    await settings.save()
    return settings


async def slots_of(canteen_id: int) -> list[MealSlot]:
    """The canteen's meals, breakfast to dinner (made from DEFAULT_SLOTS the first time)."""
    slots = {slot.meal: slot for slot in await MealSlot.filter(canteen_id=canteen_id)}
    missing = [meal for meal in MEALS if meal not in slots]
    if missing:
        if not await Canteen.exists(id=canteen_id):
            raise NotFound("没有找到这个食堂。")
        for meal in missing:
            capacity, cutoff, serve_from, serve_until = DEFAULT_SLOTS[meal]
            try:
                async with in_transaction():
                    slots[meal] = await MealSlot.create(canteen_id=canteen_id, meal=meal, capacity=capacity,
                                                        cutoff=cutoff, serve_from=serve_from, serve_until=serve_until)
            except IntegrityError:  # made concurrently
                slots[meal] = await MealSlot.get(canteen_id=canteen_id, meal=meal)
    return sorted(slots.values(), key=lambda s: meal_order(s.meal))


async def slot_of(canteen_id: int, meal: str) -> MealSlot:
    if meal not in MEALS:
        raise UserFacingError("餐次只能是早餐、午餐或晚餐。")
    return next(slot for slot in await slots_of(canteen_id) if slot.meal == meal)


def _check_hhmm(value: str, what: str) -> str:
    value = value.strip()
    if not _HHMM.match(value):
        raise UserFacingError(f"{what}请写成“时:分”，例如 09:30。")
    return value


async def set_slot(
    *, canteen_id: int, meal: str, by_id: int, now: datetime, capacity: int | None = None, cutoff: str | None = None,
    serve_from: str | None = None, serve_until: str | None = None, active: bool | None = None,
) -> MealSlot:
    """Change one meal of the canteen (its staff only). Applies to menus published afterwards: a
    published menu keeps its seats and times."""
    await _staff_only(by_id, canteen_id)
    slot = await slot_of(canteen_id, meal)
    if capacity is not None:
        if isinstance(capacity, bool) or not isinstance(capacity, int) or not 1 <= capacity <= CAPACITY_MAX:
            raise UserFacingError(f"每餐份数应在1到{CAPACITY_MAX}之间。")
        slot.capacity = capacity
    if cutoff is not None:
        slot.cutoff = _check_hhmm(cutoff, "截止时间")
    if serve_from is not None:
        slot.serve_from = _check_hhmm(serve_from, "开餐时间")
    if serve_until is not None:
        slot.serve_until = _check_hhmm(serve_until, "结束时间")
    if active is not None:
        slot.active = bool(active)
    if slot.serve_from >= slot.serve_until:
        raise UserFacingError("开餐时间要早于结束时间。")
    if meal not in CUTOFF_DAY_BEFORE and slot.cutoff > slot.serve_from:
        raise UserFacingError("订餐截止时间不能晚于开餐时间。")
    await slot.save()
    return slot


# ---------------------------------------------------------------------------- closed days


async def is_closed(canteen_id: int, day: date) -> bool:
    """Whether the canteen is shut that day (a closed weekday or a closed date)."""
    if day.isoweekday() in closed_weekdays_of(await settings_of(canteen_id)):
        return True
    return await ClosedDay.exists(canteen_id=canteen_id, day=day)


async def close_day(*, canteen_id: int, day: date, reason: str, by_id: int, now: datetime) -> ClosedDay:
    """Shut the canteen on a date (its staff only, today or later). Menus of that day not yet past
    their cut-off are withdrawn: each diner's booking is cancelled, the money released, and they
    are told. Closing a closed day again returns it."""
    await _staff_only(by_id, canteen_id)
    reason = reason.strip()
    if len(reason) > CLOSED_REASON_MAX:
        raise UserFacingError(f"原因最多{CLOSED_REASON_MAX}个字。")
    if day < cases.local_today(now):
        raise UserFacingError("不能把已经过去的日子设为休息日。")
    if await Menu.filter(canteen_id=canteen_id, day=day, cutoff_at__lte=now).exclude(
            state=MenuState.CANCELLED).exists():
        raise UserFacingError(f"{fmt_day(day)}已有餐次过了订餐截止时间，不能再设为休息日。")
    try:
        async with in_transaction():
            closed = await ClosedDay.create(canteen_id=canteen_id, day=day, reason=reason, created_by_id=by_id,
                                            created_at=now)
    except IntegrityError:
        closed = await ClosedDay.get(canteen_id=canteen_id, day=day)
    for menu in await Menu.filter(canteen_id=canteen_id, day=day, state=MenuState.OPEN):
        await withdraw_menu(menu.id, by_id=by_id, now=now, reason=f"当天休息{('：' + reason) if reason else ''}")
    return closed


async def reopen_day(*, canteen_id: int, day: date, by_id: int, now: datetime) -> bool:
    """Undo a closed date (its staff only); whether there was one. Withdrawn menus stay withdrawn:
    publish them again."""
    await _staff_only(by_id, canteen_id)
    return bool(await ClosedDay.filter(canteen_id=canteen_id, day=day).delete())


async def closed_days(canteen_id: int, now: datetime) -> list[ClosedDay]:
    """The closed dates from today on."""
    return await ClosedDay.filter(canteen_id=canteen_id, day__gte=cases.local_today(now)).order_by("day")


# ---------------------------------------------------------------------------- menus


@dataclass
class Placed:
    """What publishing a menu did with the standing orders."""

    booked: int = 0
    waitlisted: int = 0
    failed: list[tuple[int, str]] = field(default_factory=list)  # (resident id, why), as told to them


def check_dishes(dishes: list[dict]) -> list[dict]:
    """The dishes as stored: [{"name": ..., "marks": [diet codes]}] (UserFacingError when malformed)."""
    if not isinstance(dishes, list) or not 1 <= len(dishes) <= DISHES_MAX:
        raise UserFacingError(f"菜单请写1到{DISHES_MAX}个菜。")
    clean: list[dict] = []
    for dish in dishes:
        name = dish.get("name") if isinstance(dish, dict) else None
        if not isinstance(name, str) or not 1 <= len(name.strip()) <= DISH_NAME_MAX:
            raise UserFacingError(f"每个菜名请写1到{DISH_NAME_MAX}个字。")
        marks = dish.get("marks") or []
        if not isinstance(marks, list) or any(mark not in DIET_LABELS for mark in marks):
            raise UserFacingError("菜的标记只能是" + "、".join(DIET_LABELS.values()) + "。")
        clean.append({"name": name.strip(), "marks": sorted(set(marks), key=list(DIET_LABELS).index)})
    return clean


def dishes_text(menu: Menu) -> str:
    """红烧肉（软食）、清炒时蔬（低盐）"""
    return "、".join(d["name"] + (f"（{'、'.join(DIET_LABELS[m] for m in d['marks'])}）" if d.get("marks") else "")
                    for d in menu.dishes)


async def publish_menu(
    *, canteen_id: int, day: date, meal: str, dishes: list[dict], price_fen: int, by_id: int, now: datetime,
    capacity: int | None = None,
) -> tuple[Menu, Placed]:
    """Publish (or correct) a day's meal (the canteen's staff only): from today up to
    MENU_DAYS_AHEAD days ahead, on an open day, before its cut-off. Correcting an open menu changes
    its dishes; its price only while nobody has booked, its seats never below those taken. The
    first publication places the standing orders."""
    await _staff_only(by_id, canteen_id)
    slot = await slot_of(canteen_id, meal)
    clean = check_dishes(dishes)
    if isinstance(price_fen, bool) or not isinstance(price_fen, int) or not 1 <= price_fen <= PRICE_MAX_FEN:
        raise UserFacingError(f"每餐价格应在0.01元到{yuan(PRICE_MAX_FEN)}之间。")
    if capacity is not None and (isinstance(capacity, bool) or not isinstance(capacity, int)
                                 or not 1 <= capacity <= CAPACITY_MAX):
        raise UserFacingError(f"每餐份数应在1到{CAPACITY_MAX}之间。")
    today = cases.local_today(now)
    if not today <= day <= today + timedelta(days=MENU_DAYS_AHEAD):
        raise UserFacingError(f"菜单可以发布今天到{MENU_DAYS_AHEAD}天后的。")
    if not slot.active:
        raise UserFacingError(f"食堂目前不供应{MEAL_LABELS[meal]}，请先在食堂设置里开启。")
    if await is_closed(canteen_id, day):
        raise UserFacingError(f"{fmt_day(day)}食堂休息，不能发布菜单。")
    cutoff_day = day - timedelta(days=1) if meal in CUTOFF_DAY_BEFORE else day
    cutoff_at = _local_at(cutoff_day, slot.cutoff)
    if now >= cutoff_at:
        raise UserFacingError(f"{fmt_day(day)}{MEAL_LABELS[meal]}的订餐已于{_when(cutoff_at)}截止，不能再发布。")
    menu = await Menu.get_or_none(canteen_id=canteen_id, day=day, meal=meal)
    first = menu is None or menu.state == MenuState.CANCELLED
    if menu is None:
        try:
            async with in_transaction():
                menu = await Menu.create(
                    canteen_id=canteen_id, day=day, meal=meal, dishes=clean, price_fen=price_fen,
                    capacity=capacity or slot.capacity, cutoff_at=cutoff_at,
                    serve_from_at=_local_at(day, slot.serve_from),
                    serve_until_at=_local_at(day, slot.serve_until), published_by_id=by_id, published_at=now)
        except IntegrityError:  # published at the same moment: this one corrects it
            return await publish_menu(canteen_id=canteen_id, day=day, meal=meal, dishes=dishes, price_fen=price_fen,
                                      by_id=by_id, now=now, capacity=capacity)
    elif menu.state == MenuState.CANCELLED:
        won = await Menu.filter(id=menu.id, state=MenuState.CANCELLED).update(
            state=MenuState.OPEN, dishes=clean, price_fen=price_fen, capacity=capacity or slot.capacity, booked=0,
            cutoff_at=cutoff_at, serve_from_at=_local_at(day, slot.serve_from),
            serve_until_at=_local_at(day, slot.serve_until), published_by_id=by_id, published_at=now, updated_at=now,
            closed_at=None)
        if not won:
            raise UserFacingError("这份菜单刚刚有了变化，请重新查看。")
        menu = await Menu.get(id=menu.id)
    else:
        menu = await _correct_menu(menu, clean, price_fen, capacity, now)
    await schedule_action("canteen.cutoff", f"menu:{menu.id}", menu.cutoff_at, now)
    await schedule_action("canteen.meal_end", f"menu:{menu.id}", menu.serve_until_at, now)
    placed = await _place_standing(menu, now) if first else Placed()
    return menu, placed


async def _correct_menu(menu: Menu, dishes: list[dict], price_fen: int, capacity: int | None, now: datetime) -> Menu:
    if menu.state != MenuState.OPEN:
        raise UserFacingError(f"{meal_label(menu)}的订餐已截止，菜单不能再改。")
    if price_fen != menu.price_fen and await Booking.exists(menu_id=menu.id, status__in=LIVE):
        raise UserFacingError(f"{meal_label(menu)}已经有人预订，价格不能再改（现价{yuan(menu.price_fen)}）。")
    query = Menu.filter(id=menu.id, state=MenuState.OPEN)
    if capacity is not None:
        query = query.filter(booked__lte=capacity)
    changes: dict[str, Any] = {"dishes": dishes, "updated_at": now}
    if capacity is not None:
        changes["capacity"] = capacity
    if price_fen != menu.price_fen:
        changes["price_fen"] = price_fen
    if not await query.update(**changes):
        current = await Menu.get(id=menu.id)
        if current.state != MenuState.OPEN:
            raise UserFacingError(f"{meal_label(menu)}的订餐已截止，菜单不能再改。")
        raise UserFacingError(f"{meal_label(menu)}已订出{current.booked}份，份数不能少于这个数。")
    if price_fen != menu.price_fen and await Booking.exists(menu_id=menu.id, status__in=LIVE):
        # someone booked between the check and the update: the price they saw stands
        await Menu.filter(id=menu.id).update(price_fen=menu.price_fen)
        raise UserFacingError(f"{meal_label(menu)}刚刚有人预订，价格不能再改（现价{yuan(menu.price_fen)}）。")
    while await offer_next(menu.id, now) is not None:  # more seats: the waiting list first
        pass
    return await Menu.get(id=menu.id)


async def withdraw_menu(menu_id: int, *, by_id: int, now: datetime, reason: str) -> Menu:
    """Take an open menu back before its cut-off (its canteen's staff only): every booking is
    cancelled, held money released, and the diners told."""
    menu = await Menu.get_or_none(id=menu_id)
    if menu is None:
        raise NotFound("没有找到这份菜单。")
    await _staff_only(by_id, menu.canteen_id)
    if menu.state == MenuState.CANCELLED:
        return menu
    if menu.state != MenuState.OPEN or now >= menu.cutoff_at:
        raise UserFacingError(f"{meal_label(menu)}的订餐已截止，不能撤下。")
    if not await Menu.filter(id=menu.id, state=MenuState.OPEN).update(state=MenuState.CANCELLED, updated_at=now):
        return await Menu.get(id=menu.id)  # withdrawn at the same moment, or its cut-off ran
    await cancel_actions("canteen.cutoff", f"menu:{menu.id}")
    await cancel_actions("canteen.meal_end", f"menu:{menu.id}")
    for booking in await Booking.filter(menu_id=menu.id, status__in=UPCOMING).order_by("id"):
        if not await _drop(booking, menu, now, by_id=by_id, reason=reason, status=BookingStatus.CANCELLED):
            continue
        text = f"很抱歉，{meal_label(menu)}{reason or '食堂撤下了菜单'}，您的订餐已取消"
        if booking.status == BookingStatus.BOOKED and booking.price_fen:
            text += f"，冻结的{yuan(booking.price_fen)}已退回钱包"
        await push_text(await family_of(booking.resident_id), text + "。",
                        f"canteen:booking:{booking.id}:{booking.round}:withdrawn", now)
    await Menu.filter(id=menu.id).update(booked=0)
    return await Menu.get(id=menu.id)


async def open_menus(canteen_id: int, now: datetime, days: int = MENU_DAYS_AHEAD) -> list[Menu]:
    """Menus still bookable, by day and meal."""
    today = cases.local_today(now)
    menus = await Menu.filter(canteen_id=canteen_id, state=MenuState.OPEN, cutoff_at__gt=now,
                              day__lte=today + timedelta(days=days))
    return sorted(menus, key=lambda m: (m.day, meal_order(m.meal)))


async def menu_of(menu_id: int) -> Menu:
    menu = await Menu.get_or_none(id=menu_id)
    if menu is None:
        raise NotFound("没有找到这份菜单。")
    return menu


# ---------------------------------------------------------------------------- the ledger steps


def _memo(prefix: str, menu: Menu) -> str:
    return f"{prefix}：{meal_label(menu)}"[:60]


async def _hold(booking: Booking, menu: Menu, now: datetime, actor_id: int | None, *, release: bool = False) -> None:
    """The meal's price from the wallet to the hold at booking (Insufficient when short), or back
    with ``release`` (a cancel before the cut-off)."""
    if booking.price_fen <= 0:
        return
    wallet = await wallet_account(booking.resident_id, now)
    held = await hold_account(booking.resident_id, now)
    step, memo = ("release", "取消订餐退回") if release else ("hold", "订餐冻结")
    await transfer(from_account=held if release else wallet, to_account=wallet if release else held,
                   amount=booking.price_fen, source=Source.MEAL, key=f"meal:{step}:{booking.id}:{booking.round}",
                   now=now, ref=f"booking:{booking.id}", memo=_memo(memo, menu), actor_id=actor_id)


async def _charge(booking: Booking, menu: Menu, now: datetime) -> None:
    """At the cut-off: the held price to the canteen, and the subsidy from its funders."""
    ref = f"booking:{booking.id}"
    takings = await canteen_account(AccountKind.CANTEEN, menu.canteen_id, now)
    if booking.price_fen > 0:
        await transfer(from_account=await hold_account(booking.resident_id, now), to_account=takings,
                       amount=booking.price_fen, source=Source.MEAL, key=f"meal:charge:{booking.id}:{booking.round}",
                       now=now, ref=ref, memo=_memo("餐费", menu))
    for kind, amount, name in ((AccountKind.GOV_SUBSIDY, booking.gov_fen, "gov"),
                               (AccountKind.ENT_SUBSIDY, booking.ent_fen, "ent")):
        if amount > 0:
            await transfer(from_account=await canteen_account(kind, menu.canteen_id, now), to_account=takings,
                           amount=amount, source=Source.SUBSIDY, key=f"meal:{name}:{booking.id}:{booking.round}",
                           now=now, ref=ref, memo=_memo("助餐补贴", menu))


async def _refund(booking: Booking, menu: Menu, now: datetime, actor_id: int | None) -> None:
    """A charged meal undone: the price back to the wallet and the subsidy back to its funders."""
    ref = f"booking:{booking.id}"
    takings = await canteen_account(AccountKind.CANTEEN, menu.canteen_id, now)
    if booking.price_fen > 0:
        await transfer(from_account=takings, to_account=await wallet_account(booking.resident_id, now),
                       amount=booking.price_fen, source=Source.MEAL, key=f"meal:refund:{booking.id}:{booking.round}",
                       now=now, ref=ref, memo=_memo("餐费退回", menu), actor_id=actor_id)
    for kind, amount, name in ((AccountKind.GOV_SUBSIDY, booking.gov_fen, "gov"),
                               (AccountKind.ENT_SUBSIDY, booking.ent_fen, "ent")):
        if amount > 0:
            await transfer(from_account=takings, to_account=await canteen_account(kind, menu.canteen_id, now),
                           amount=amount, source=Source.SUBSIDY, key=f"meal:{name}:back:{booking.id}:{booking.round}",
                           now=now, ref=ref, memo=_memo("助餐补贴退回", menu), actor_id=actor_id)


# ---------------------------------------------------------------------------- booking


class _Raced(Exception):
    """Another tap changed the booking row first."""


async def may_deliver(resident: Resident) -> bool:
    """Delivery is for residents marked as needing it, or approved by the canteen's staff."""
    if resident.mobility == Mobility.NEEDS_DELIVERY:
        return True
    diner = await Diner.get_or_none(resident_id=resident.id)
    return diner is not None and diner.delivery_approved


def _check_bookable(menu: Menu, now: datetime) -> None:
    if menu.state == MenuState.CANCELLED:
        raise UserFacingError(f"{meal_label(menu)}的菜单已撤下，不能预订。")
    if menu.state != MenuState.OPEN or now >= menu.cutoff_at:
        raise UserFacingError(f"{meal_label(menu)}的订餐已于{_when(menu.cutoff_at)}截止。")


async def _take_seat(menu_id: int) -> bool:
    return bool(await Menu.filter(id=menu_id, state=MenuState.OPEN, booked__lt=F("capacity")).update(
        booked=F("booked") + 1))


async def _give_back_seat(menu_id: int) -> None:
    await Menu.filter(id=menu_id, booked__gt=0).update(booked=F("booked") - 1)


async def book(
    *, menu_id: int, resident_id: int, by_id: int, mode: str, now: datetime, standing_id: int | None = None,
) -> Booking:
    """Book a meal for the diner (by the diner, a family member acting for them or the canteen's
    staff): a seat and the price held together, or the waiting list when full. A live booking of
    the same diner and meal is returned unchanged; a cancelled or lapsed one is booked again."""
    menu = await menu_of(menu_id)
    if not await _may_act(by_id, resident_id, menu.canteen_id):
        raise Forbidden("只能为自己或绑定的家人订餐。")
    diner = await Resident.get_or_none(id=resident_id, erased_at=None)
    if diner is None:
        raise NotFound("没有找到这位居民。")
    if mode not in MODE_LABELS:
        raise UserFacingError("用餐方式只能是堂食或送餐。")
    existing = await Booking.get_or_none(menu_id=menu.id, resident_id=resident_id)
    if existing is not None and existing.status in LIVE:
        return existing
    _check_bookable(menu, now)
    if mode == Mode.DELIVERY and not await may_deliver(diner):
        raise UserFacingError("送餐只为需要送餐上门的居民提供，请选择堂食；需要送餐请联系食堂登记。")
    q = await quote(canteen_id=menu.canteen_id, resident_id=resident_id, day=menu.day, meal=menu.meal,
                    menu_price_fen=menu.price_fen)
    try:
        async with in_transaction():
            seated = await _take_seat(menu.id)
            values: dict[str, Any] = dict(
                mode=mode, status=BookingStatus.BOOKED if seated else BookingStatus.WAITING,
                menu_price_fen=q.menu_price_fen, price_fen=q.price_fen, rule=q.rule, rule_label=q.rule_label,
                card_id=q.card_id, gov_fen=q.gov_fen, ent_fen=q.ent_fen, booked_by_id=by_id, standing_id=standing_id,
                waited_at=None if seated else now, offer_until=None, updated_at=now, cancelled_at=None,
                cancelled_by_id=None, cancel_reason="", served_at=None, served_by_id=None)
            if existing is None:
                booking = await Booking.create(menu_id=menu.id, resident_id=resident_id, code=new_code(), round=0,
                                               created_at=now, **values)
            else:
                won = await Booking.filter(id=existing.id, status=existing.status, round=existing.round).update(
                    round=existing.round + 1, **values)
                if not won:
                    raise _Raced()
                booking = await Booking.get(id=existing.id)
            if seated:
                await _hold(booking, menu, now, by_id)
    except (IntegrityError, _Raced):
        found = await Booking.get_or_none(menu_id=menu.id, resident_id=resident_id)
        if found is None:
            raise
        return found  # a double tap booked it meanwhile
    if by_id != resident_id and standing_id is None:
        await _tell_booked(booking, menu, by_id, now)
    return booking


async def _tell_booked(booking: Booking, menu: Menu, by_id: int, now: datetime) -> None:
    """The diner hears of a booking someone else made for them."""
    by = await Resident.get(id=by_id)
    what = (f"已为您预订{meal_label(menu)}（{MODE_LABELS[booking.mode]}），{yuan(booking.price_fen)}"
            f"（{booking.rule_label}），就餐码{booking.code}" if booking.status == BookingStatus.BOOKED
            else f"已为您登记{meal_label(menu)}的候补，有空位时会通知您")
    await push_text([booking.resident_id], f"{by.name}{what}。回复“我的订餐”可以查看。",
                    f"canteen:booking:{booking.id}:{booking.round}:booked", now)


async def waiting_position(booking: Booking) -> int:
    """Where a waiting booking stands on its list (1 is next)."""
    if booking.status != BookingStatus.WAITING or booking.waited_at is None:
        return 0
    ahead = await Booking.filter(menu_id=booking.menu_id, status=BookingStatus.WAITING,
                                 waited_at__lt=booking.waited_at).count()
    ties = await Booking.filter(menu_id=booking.menu_id, status=BookingStatus.WAITING, waited_at=booking.waited_at,
                                id__lt=booking.id).count()
    return ahead + ties + 1


async def booking_of(booking_id: int, viewer_id: int) -> Booking:
    """A booking with its menu, for the diner, their family or the canteen's staff (NotFound else)."""
    booking = await Booking.get_or_none(id=booking_id).prefetch_related("menu")
    if booking is None or not await _may_act(viewer_id, booking.resident_id, booking.menu.canteen_id):
        raise NotFound("没有找到这条订餐。")
    return booking


async def bookings_of(resident_id: int, now: datetime, upcoming: bool = True) -> list[Booking]:
    """The diner's bookings with their menus: upcoming (from today, still live) by day and meal, or
    the last 50 of any state, newest first."""
    if upcoming:
        rows = await Booking.filter(resident_id=resident_id, status__in=UPCOMING,
                                    menu__day__gte=cases.local_today(now)).prefetch_related("menu")
        return sorted(rows, key=lambda b: (b.menu.day, meal_order(b.menu.meal)))
    rows = await Booking.filter(resident_id=resident_id).order_by("-id").limit(50).prefetch_related("menu")
    return sorted(rows, key=lambda b: (b.menu.day, meal_order(b.menu.meal)), reverse=True)


async def menu_bookings(menu_id: int) -> list[Booking]:
    """The meal's bookings the kitchen cooks for, with their diners, by name (the counter's list)."""
    rows = await Booking.filter(menu_id=menu_id, status__in=COUNTED).prefetch_related("resident")
    return sorted(rows, key=lambda b: (b.resident.name, b.id))


# ---------------------------------------------------------------------------- cancelling and the waiting list


async def _drop(booking: Booking, menu: Menu, now: datetime, *, by_id: int | None, reason: str, status: str) -> bool:
    """A booking leaves (CANCELLED or LAPSED) with its money put back where it was; whether this call
    did it. The seat it held is not handed on here."""
    async with in_transaction():
        won = await Booking.filter(id=booking.id, status=booking.status, round=booking.round).update(
            status=status, updated_at=now, cancelled_at=now if status == BookingStatus.CANCELLED else None,
            cancelled_by_id=by_id if status == BookingStatus.CANCELLED else None,
            cancel_reason=reason[:REASON_MAX], offer_until=None)
        if won and booking.status == BookingStatus.BOOKED:
            await _hold(booking, menu, now, by_id, release=True)
        elif won and booking.status in (BookingStatus.CHARGED, BookingStatus.NO_SHOW):
            await _refund(booking, menu, now, by_id)
    if won and booking.status == BookingStatus.OFFERED:
        await _close_offer(booking, now)
    return bool(won)


async def _close_offer(booking: Booking, now: datetime) -> None:
    await cancel_actions("canteen.offer_lapse", f"booking:{booking.id}")
    await withdraw_prompts(f"canteen_offer:{booking.id}", now)


async def cancel(*, booking_id: int, by_id: int, now: datetime, reason: str = "") -> Booking:
    """Cancel a booking. Before the cut-off the diner, their family or staff: free of charge (the
    held money goes back), the seat goes to the first on the waiting list. After it only the
    canteen's staff: the meal's price goes back to the wallet and the subsidy to its funders. A
    waiting or offered booking just leaves the list. Cancelling again changes nothing."""
    booking = await booking_of(booking_id, by_id)
    menu = booking.menu
    staff = await is_canteen_staff(by_id, menu.canteen_id)
    if booking.status in (BookingStatus.CANCELLED, BookingStatus.LAPSED):
        return booking
    if booking.status == BookingStatus.SERVED:
        raise UserFacingError(f"这餐已于{_when(booking.served_at or now)}就餐，不能取消。")
    before_cutoff = menu.state == MenuState.OPEN and now < menu.cutoff_at
    if not before_cutoff and not staff and booking.status not in (BookingStatus.WAITING, BookingStatus.OFFERED):
        raise UserFacingError(f"{meal_label(menu)}的订餐已于{_when(menu.cutoff_at)}截止，不能自行取消；"
                              "有特殊情况请联系食堂。")
    if len(reason) > REASON_MAX:
        raise UserFacingError(f"原因最多{REASON_MAX}个字。")
    seated = booking.status in SEATED
    if not await _drop(booking, menu, now, by_id=by_id, reason=reason.strip(), status=BookingStatus.CANCELLED):
        return await booking_of(booking_id, by_id)  # changed meanwhile: a double tap, the cut-off
    if seated:
        await _pass_seat(menu.id, now)
    if booking.mode == Mode.DELIVERY and not before_cutoff:
        from models import rider_core  # its stop on a delivery route is dropped

        await rider_core.cancel_stop_of(booking.id, now)
    if by_id != booking.resident_id and not await _speaks_for(by_id, booking.resident_id):
        back = booking.price_fen if booking.status in (BookingStatus.BOOKED, BookingStatus.CHARGED) or (
            booking.status == BookingStatus.NO_SHOW) else 0
        money = f"，{yuan(back)}已退回钱包" if back else ""
        why = f"（{reason.strip()}）" if reason.strip() else ""
        await push_text(await family_of(booking.resident_id),
                        f"食堂已取消您{meal_label(menu)}的订餐{why}{money}。",
                        f"canteen:booking:{booking.id}:{booking.round}:cancelled", now)
    return await booking_of(booking_id, by_id)


async def _pass_seat(menu_id: int, now: datetime) -> Booking | None:
    """A seat that was counted is free: to the first on the waiting list while it is open, else back."""
    menu = await Menu.get(id=menu_id)
    if menu.state == MenuState.OPEN and now < menu.cutoff_at:
        offered = await _offer_first(menu, now)
        if offered is not None:
            return offered
    await _give_back_seat(menu_id)
    # someone may have joined the list while the seat was still counted
    return await offer_next(menu_id, now)


async def offer_next(menu_id: int, now: datetime) -> Booking | None:
    """When a seat is free and someone waits: the seat to the first on the list, offered for
    OFFER_MINUTES (a pushed question); None when there is no seat or nobody waits."""
    menu = await Menu.get_or_none(id=menu_id)
    if menu is None or menu.state != MenuState.OPEN or now >= menu.cutoff_at:
        return None
    if not await Booking.exists(menu_id=menu_id, status=BookingStatus.WAITING):
        return None
    if not await _take_seat(menu_id):
        return None
    offered = await _offer_first(menu, now)
    if offered is None:
        await _give_back_seat(menu_id)
    return offered


async def _offer_first(menu: Menu, now: datetime) -> Booking | None:
    """Hand a counted seat to the first waiting diner; None when nobody waits."""
    until = now + timedelta(minutes=OFFER_MINUTES)
    while True:
        first = await Booking.filter(menu_id=menu.id, status=BookingStatus.WAITING).order_by("waited_at", "id").first()
        if first is None:
            return None
        if await Booking.filter(id=first.id, status=BookingStatus.WAITING, round=first.round).update(
                status=BookingStatus.OFFERED, offer_until=until, updated_at=now):
            break
    booking = await Booking.get(id=first.id)
    await schedule_action("canteen.offer_lapse", f"booking:{booking.id}", until, now)
    await _ask_offer(booking, menu, now)
    return booking


async def _ask_offer(booking: Booking, menu: Menu, now: datetime) -> None:
    """The pushed question to the diner and their family: take the seat or let it go."""
    price = f"{yuan(booking.price_fen) if booking.price_fen else '免费'}（{booking.rule_label}）"
    question = choice(
        f"【幸福食堂】您候补的{meal_label(menu)}有空位了，{MODE_LABELS[booking.mode]}，{price}。"
        f"座位为您保留到{_hm(booking.offer_until or now)}，过时将让给下一位。要这个座位吗？",
        [("yes", "要，确认订餐"), ("no", "不要了")])
    for resident_id in await family_of(booking.resident_id):
        for acct in await WechatAccount.filter(resident_id=resident_id, channel__in=CHAT_CHANNELS).order_by("id"):
            await push_prompt(openid=acct.openid, flow=OFFER_FLOW, step=OFFER_STEP, question=question,
                              data={"booking_id": booking.id, "round": booking.round}, now=now,
                              days=OFFER_PROMPT_DAYS, subject=f"canteen_offer:{booking.id}")


async def answer_offer(*, booking_id: int, by_id: int, accept: bool, now: datetime) -> Booking:
    """The diner (or family, or staff) answers a seat offer: accepting holds the price and books
    the seat (Insufficient leaves the offer standing until it runs out); declining lets the seat
    go to the next. Answering again the same way changes nothing."""
    booking = await booking_of(booking_id, by_id)
    menu = booking.menu
    if booking.status == BookingStatus.BOOKED and accept:
        return booking
    if booking.status == BookingStatus.LAPSED and not accept:
        return booking
    if booking.status != BookingStatus.OFFERED:
        if booking.status == BookingStatus.LAPSED:
            raise UserFacingError(f"{meal_label(menu)}的空位保留时间已过，已让给下一位。")
        raise UserFacingError(f"这条订餐现在是“{_status_label(booking)}”，没有待确认的空位。")
    if now >= (booking.offer_until or now) or now >= menu.cutoff_at:
        await _lapse_offer(booking, menu, now)
        raise UserFacingError(f"{meal_label(menu)}的空位保留时间已过，已让给下一位。")
    if not accept:
        if await _drop(booking, menu, now, by_id=None, reason="放弃空位", status=BookingStatus.LAPSED):
            await _pass_seat(menu.id, now)
        return await booking_of(booking_id, by_id)
    q = await quote(canteen_id=menu.canteen_id, resident_id=booking.resident_id, day=menu.day, meal=menu.meal,
                    menu_price_fen=menu.price_fen)
    try:
        async with in_transaction():
            won = await Booking.filter(id=booking.id, status=BookingStatus.OFFERED, round=booking.round).update(
                status=BookingStatus.BOOKED, menu_price_fen=q.menu_price_fen, price_fen=q.price_fen, rule=q.rule,
                rule_label=q.rule_label, card_id=q.card_id, gov_fen=q.gov_fen, ent_fen=q.ent_fen, offer_until=None,
                booked_by_id=by_id, updated_at=now)
            if not won:
                raise _Raced()
            await _hold(await Booking.get(id=booking.id), menu, now, by_id)
    except _Raced:
        return await answer_offer(booking_id=booking_id, by_id=by_id, accept=accept, now=now)
    await _close_offer(booking, now)
    return await booking_of(booking_id, by_id)


async def _lapse_offer(booking: Booking, menu: Menu, now: datetime) -> None:
    if await _drop(booking, menu, now, by_id=None, reason="空位保留时间已过", status=BookingStatus.LAPSED):
        await push_text(await family_of(booking.resident_id),
                        f"您候补的{meal_label(menu)}空位保留到{_hm(booking.offer_until or now)}，"
                        "没有确认，已让给下一位。",
                        f"canteen:booking:{booking.id}:{booking.round}:offer_lapsed", now)
        await _pass_seat(menu.id, now)


def _status_label(booking: Booking) -> str:
    from models.canteen import BOOKING_LABELS

    return BOOKING_LABELS.get(booking.status, booking.status)


def _target_id(target: str, kind: str) -> int:
    """The id in a due action's target such as "menu:12"."""
    found, _, number = target.partition(":")
    if found != kind or not number.isdigit():
        raise ValueError(f"not a {kind} target: {target}")
    return int(number)


@register_action("canteen.offer_lapse")
async def _offer_lapse_due(target: str, now: datetime) -> None:
    booking = await Booking.get_or_none(id=_target_id(target, "booking")).prefetch_related("menu")
    if booking is None or booking.status != BookingStatus.OFFERED:
        return
    if booking.offer_until is not None and now < booking.offer_until:
        return  # a newer offer of the same booking: its own action comes later
    await _lapse_offer(booking, booking.menu, now)


# ---------------------------------------------------------------------------- the cut-off and the meal's end


async def staff_of(canteen_id: int) -> list[int]:
    """The canteen's own staff (who cook and serve): the kitchen count goes to them."""
    ids = await StaffRole.filter(role=Role.CANTEEN_STAFF, scope_kind=Scope.CANTEEN, scope_id=canteen_id,
                                 revoked_at=None).order_by("id").values_list("resident_id", flat=True)
    return sorted({int(i) for i in ids})  # type: ignore[call-overload]


async def _charge_one(booking: Booking, menu: Menu, now: datetime) -> bool:
    """BOOKED → CHARGED with the money moved, once."""
    async with in_transaction():
        won = await Booking.filter(id=booking.id, status=BookingStatus.BOOKED, round=booking.round).update(
            status=BookingStatus.CHARGED, updated_at=now)
        if won:
            await _charge(booking, menu, now)
    return bool(won)


async def run_cutoff(menu_id: int, now: datetime) -> bool:
    """The cut-off of a menu: closed to bookings, booked meals charged with their subsidy, the
    waiting list closed (each told), the kitchen count pushed to the canteen's staff. Running it
    again changes nothing; False when it is not due."""
    menu = await Menu.get_or_none(id=menu_id)
    if menu is None or menu.state in (MenuState.CANCELLED, MenuState.DONE) or now < menu.cutoff_at:
        return False
    # closed first: a booking taking its seat now waits for this row and is charged below
    await Menu.filter(id=menu.id, state=MenuState.OPEN).update(state=MenuState.CLOSED, closed_at=now)
    menu = await Menu.get(id=menu.id)
    for booking in await Booking.filter(menu_id=menu.id, status=BookingStatus.BOOKED).order_by("id"):
        await _charge_one(booking, menu, now)
    for booking in await Booking.filter(menu_id=menu.id, status__in=(BookingStatus.WAITING, BookingStatus.OFFERED)):
        if await _drop(booking, menu, now, by_id=None, reason="候补截止", status=BookingStatus.LAPSED):
            if booking.status == BookingStatus.OFFERED:
                await _give_back_seat(menu.id)
            await push_text(await family_of(booking.resident_id),
                            f"很抱歉，{meal_label(menu)}已到订餐截止时间，候补没有排上，未扣任何费用。",
                            f"canteen:booking:{booking.id}:{booking.round}:lapsed", now)
    staff = await staff_of(menu.canteen_id)
    if staff:
        await push_text(staff, kitchen_text(await kitchen_count(menu.id)), f"canteen:menu:{menu.id}:kitchen", now)
    from models import rider_core  # the delivery routes (先锋骑士) read this module

    await rider_core.build_routes(menu.id, now)
    return True


async def run_meal_end(menu_id: int, now: datetime) -> bool:
    """The meal is over: meals not served are no-shows (paid back when the canteen's no-show rule
    says a no-show does not pay), the menu done. Running it again changes nothing."""
    menu = await Menu.get_or_none(id=menu_id)
    if menu is None or menu.state in (MenuState.CANCELLED, MenuState.DONE) or now < menu.serve_until_at:
        return False
    if menu.state == MenuState.OPEN:
        await run_cutoff(menu.id, now)
        menu = await Menu.get(id=menu.id)
    from models import rider_core  # delivery routes still out are settled first (先锋骑士)

    await rider_core.end_meal(menu.id, now)
    pays = (await settings_of(menu.canteen_id)).no_show_pays
    for booking in await Booking.filter(menu_id=menu.id, status=BookingStatus.BOOKED):  # raced past the cut-off
        await _charge_one(booking, menu, now)
    for booking in await Booking.filter(menu_id=menu.id, status=BookingStatus.CHARGED).order_by("id"):
        async with in_transaction():
            won = await Booking.filter(id=booking.id, status=BookingStatus.CHARGED, round=booking.round).update(
                status=BookingStatus.NO_SHOW, updated_at=now)
            if won and not pays:
                await _refund(booking, menu, now, None)
        if won and not pays and booking.price_fen:
            await push_text(await family_of(booking.resident_id),
                            f"您预订的{meal_label(menu)}没有来就餐，{yuan(booking.price_fen)}已退回钱包。",
                            f"canteen:booking:{booking.id}:{booking.round}:no_show", now)
    await Menu.filter(id=menu.id, state=MenuState.CLOSED).update(state=MenuState.DONE)
    return True


@register_action("canteen.cutoff")
async def _cutoff_due(target: str, now: datetime) -> None:
    await run_cutoff(_target_id(target, "menu"), now)


@register_action("canteen.meal_end")
async def _meal_end_due(target: str, now: datetime) -> None:
    await run_meal_end(_target_id(target, "menu"), now)


# ---------------------------------------------------------------------------- the counter


async def serve(*, code: str | None = None, booking_id: int | None = None, by_id: int, now: datetime) -> Booking:
    """Mark a meal served at the counter, by the code on the diner's phone or by the booking (from
    the list by name): the canteen's staff only, today's meals only, once."""
    if code is not None:
        code = normalize_code(code)
        if not 1 <= len(code) <= 12:  # no code of ours is longer (PostgreSQL would refuse the query)
            raise NotFound("没有找到这个就餐码，请核对后再试。")
        booking = await Booking.get_or_none(code=code).prefetch_related("menu", "resident")
    elif booking_id is not None:
        booking = await Booking.get_or_none(id=booking_id).prefetch_related("menu", "resident")
    else:
        raise UserFacingError("请扫描或输入就餐码。")
    if booking is None or not await is_canteen_staff(by_id, booking.menu.canteen_id):
        raise NotFound("没有找到这个就餐码，请核对后再试。")
    menu = booking.menu
    name = booking.resident.name
    if booking.status == BookingStatus.SERVED:
        raise UserFacingError(f"{name}的{meal_label(menu)}已于{_hm(booking.served_at or now)}登记就餐，不要重复打餐。")
    if menu.day != cases.local_today(now):
        raise UserFacingError(f"这是{name}{meal_label(menu)}的订餐，不是今天的。")
    if booking.status == BookingStatus.BOOKED:
        if menu.state == MenuState.OPEN and now < menu.cutoff_at:
            raise UserFacingError(f"{meal_label(menu)}还没到订餐截止时间（{_hm(menu.cutoff_at)}），截止后才能打餐。")
        await _charge_one(booking, menu, now)  # the cut-off has not run yet
        booking = await Booking.get(id=booking.id).prefetch_related("menu", "resident")
    if booking.status != BookingStatus.CHARGED:
        raise UserFacingError(f"{name}的{meal_label(menu)}{_status_label(booking)}，不能打餐。")
    won = await Booking.filter(id=booking.id, status=BookingStatus.CHARGED).update(
        status=BookingStatus.SERVED, served_at=now, served_by_id=by_id, updated_at=now)
    booking = await Booking.get(id=booking.id).prefetch_related("menu", "resident")
    if not won and booking.status == BookingStatus.SERVED:
        raise UserFacingError(f"{name}的{meal_label(menu)}已于{_hm(booking.served_at or now)}登记就餐，不要重复打餐。")
    return booking


# ---------------------------------------------------------------------------- the kitchen


@dataclass
class KitchenCount:
    menu: Menu
    total: int
    dine_in: int
    delivery: int
    diets: dict[str, int]  # diet code (soft, low_salt, low_sugar) or "allergy" → diners
    notes: list[tuple[str, str, str, str]]  # (name, address, mode label, needs) of diners with needs or delivered to
    canteen_name: str = ""


async def kitchen_count(menu_id: int) -> KitchenCount:
    """What the kitchen cooks for one meal: the booked meals, dine-in and delivery, and the diners'
    needs (diet, allergies, the staff's health note). The health note is for the canteen's staff only."""
    menu = await menu_of(menu_id)
    canteen = await Canteen.get(id=menu.canteen_id)
    bookings = await Booking.filter(menu_id=menu.id, status__in=COUNTED).prefetch_related("resident__building")
    diners = {d.resident_id: d for d in await Diner.filter(resident_id__in=[b.resident_id for b in bookings])}
    diets: dict[str, int] = {code: 0 for code in DIET_LABELS} | {"allergy": 0}
    notes: list[tuple[str, str, str, str]] = []
    for booking in sorted(bookings, key=lambda b: (b.mode != Mode.DELIVERY, b.resident.name, b.id)):
        resident = booking.resident
        diner = diners.get(resident.id)
        marks = [code for code in (diner.diet.split(",") if diner else []) if code in DIET_LABELS]
        for code in marks:
            diets[code] += 1
        needs = "、".join(DIET_LABELS[code] for code in marks)
        if diner and diner.allergies:
            diets["allergy"] += 1
            needs += ("；" if needs else "") + f"过敏：{diner.allergies}"
        if resident.health_note:
            needs += ("；" if needs else "") + f"备注：{resident.health_note}"
        if needs or booking.mode == Mode.DELIVERY:
            notes.append((resident.name, resident.address(), MODE_LABELS[booking.mode], needs))
    delivery = sum(1 for b in bookings if b.mode == Mode.DELIVERY)
    return KitchenCount(menu=menu, total=len(bookings), dine_in=len(bookings) - delivery, delivery=delivery,
                        diets=diets, notes=notes, canteen_name=canteen.name)


def kitchen_text(count: KitchenCount) -> str:
    """The kitchen count as a chat message for the canteen's staff."""
    menu = count.menu
    lines = [f"【备餐统计】{count.canteen_name}{meal_label(menu)}",
             f"共{count.total}份：堂食{count.dine_in}份，送餐{count.delivery}份。"]
    diets = [f"{DIET_LABELS[code]}{count.diets.get(code, 0)}份" for code in DIET_LABELS if count.diets.get(code)]
    if count.diets.get("allergy"):
        diets.append(f"有过敏{count.diets['allergy']}人")
    if diets:
        lines.append("饮食需求：" + "，".join(diets) + "。")
    if menu.dishes:
        lines.append("菜品：" + dishes_text(menu))
    if count.notes:
        lines.append("需要留意：")
        lines += [f"{i}. {name}（{mode}{'，' + address if address else ''}）{needs}"
                  for i, (name, address, mode, needs) in enumerate(count.notes, 1)]
    return "\n".join(lines)


# ---------------------------------------------------------------------------- monthly cards


async def cover_by_card(card_id: int, now: datetime) -> int:
    """Meals of the card's month booked before the card was bought and not charged yet: on the card
    now (price 0), their held price back to the wallet. How many. The round is bumped with the new
    price, so a cut-off that read the booking before cannot charge the old price."""
    card = await MealCard.get(id=card_id)
    bookings = await Booking.filter(
        resident_id=card.resident_id, status=BookingStatus.BOOKED, card_id=None, menu__canteen_id=card.canteen_id,
        menu__day__gte=card.month, menu__day__lt=next_month(card.month)).prefetch_related("menu")
    covered = 0
    for booking in bookings:
        menu = booking.menu
        q = await quote(canteen_id=menu.canteen_id, resident_id=booking.resident_id, day=menu.day, meal=menu.meal,
                        menu_price_fen=menu.price_fen)
        if q.card_id != card.id:
            continue  # a meal the card does not cover
        async with in_transaction():
            won = await Booking.filter(id=booking.id, status=BookingStatus.BOOKED, round=booking.round).update(
                price_fen=q.price_fen, rule=q.rule, rule_label=q.rule_label, card_id=card.id, gov_fen=0, ent_fen=0,
                round=booking.round + 1, updated_at=now)
            if won:
                await _hold(booking, menu, now, None, release=True)  # the old price, under the old round's key
        covered += bool(won)
    return covered


# ---------------------------------------------------------------------------- standing orders


def _meals(value: Iterable[str] | str) -> str:
    items = [p.strip() for p in value.split(",")] if isinstance(value, str) else list(value)
    meals = {MEALS_BY_ANY.get(item, item) for item in items if item}
    if not meals or any(meal not in MEALS for meal in meals):
        raise UserFacingError("餐次请从早餐、午餐、晚餐中选择。")
    return ",".join(sorted(meals, key=meal_order))


MEALS_BY_ANY = {label: code for code, label in MEAL_LABELS.items()}


def standing_text(order: StandingOrder) -> str:
    """每周一、周二…的午餐（堂食）"""
    days = "、".join("周" + "一二三四五六日"[int(d) - 1] for d in order.weekdays.split(",") if d)
    meals = "、".join(MEAL_LABELS[m] for m in order.meals.split(",") if m in MEAL_LABELS)
    return f"每{days}的{meals}（{MODE_LABELS.get(order.mode, order.mode)}）"


async def set_standing(
    *, canteen_id: int, resident_id: int, by_id: int, meals: Iterable[str] | str, weekdays: Iterable[int] | str,
    mode: str, now: datetime,
) -> StandingOrder:
    """Set the diner's standing order at the canteen (the diner, their family or the canteen's
    staff), replacing the one they had. It books each matching menu when it is published, and the
    matching menus already open now."""
    if not await Canteen.exists(id=canteen_id):
        raise NotFound("没有找到这个食堂。")
    if not await _may_act(by_id, resident_id, canteen_id):
        raise Forbidden("只能为自己或绑定的家人设置常订。")
    resident = await Resident.get_or_none(id=resident_id, erased_at=None)
    if resident is None:
        raise NotFound("没有找到这位居民。")
    meal_codes, days = _meals(meals), _weekdays(weekdays, allow_empty=False)
    if mode not in MODE_LABELS:
        raise UserFacingError("用餐方式只能是堂食或送餐。")
    if mode == Mode.DELIVERY and not await may_deliver(resident):
        raise UserFacingError("送餐只为需要送餐上门的居民提供，请选择堂食；需要送餐请联系食堂登记。")
    current = await StandingOrder.filter(canteen_id=canteen_id, resident_id=resident_id, ended_at=None).first()
    if current is not None and (current.meals, current.weekdays, current.mode) == (meal_codes, days, mode):
        return current
    async with in_transaction():
        await StandingOrder.filter(canteen_id=canteen_id, resident_id=resident_id, ended_at=None).update(ended_at=now)
        order = await StandingOrder.create(canteen_id=canteen_id, resident_id=resident_id, meals=meal_codes,
                                           weekdays=days, mode=mode, created_by_id=by_id, created_at=now)
    for menu in await open_menus(canteen_id, now):
        if _matches(order, menu):
            await _place_one(order, menu, now, Placed())
    return order


async def end_standing(*, order_id: int, by_id: int, now: datetime) -> StandingOrder:
    """Stop a standing order (bookings it made stay). Ending it again changes nothing."""
    order = await StandingOrder.get_or_none(id=order_id)
    if order is None or not await _may_act(by_id, order.resident_id, order.canteen_id):
        raise NotFound("没有找到这个常订。")
    await StandingOrder.filter(id=order.id, ended_at=None).update(ended_at=now)
    return await StandingOrder.get(id=order.id)


async def standing_of(resident_id: int) -> list[StandingOrder]:
    """The diner's standing orders in force."""
    return await StandingOrder.filter(resident_id=resident_id, ended_at=None).order_by("id")


def _matches(order: StandingOrder, menu: Menu) -> bool:
    return menu.meal in order.meals.split(",") and str(menu.day.isoweekday()) in order.weekdays.split(",")


async def _place_standing(menu: Menu, now: datetime) -> Placed:
    placed = Placed()
    for order in await StandingOrder.filter(canteen_id=menu.canteen_id, ended_at=None).order_by("id"):
        if _matches(order, menu):
            await _place_one(order, menu, now, placed)
    return placed


async def _place_one(order: StandingOrder, menu: Menu, now: datetime, placed: Placed) -> None:
    """Book one menu for a standing order; the diner is told when it could not be placed."""
    key = f"canteen:standing:{order.id}:menu:{menu.id}"
    try:
        booking = await book(menu_id=menu.id, resident_id=order.resident_id, by_id=order.resident_id,
                             mode=order.mode, now=now, standing_id=order.id)
    except Insufficient as short:
        why = f"余额不足（可用{yuan(short.available)}，需要{yuan(short.needed)}）"
        placed.failed.append((order.resident_id, why))
        await push_text(await family_of(order.resident_id),
                        f"您常订的{meal_label(menu)}没有订上：钱包{why}。请到食堂柜台充值后，回复“订餐”再订。",
                        key, now)
        return
    except UserFacingError as refused:
        placed.failed.append((order.resident_id, refused.message))
        await push_text(await family_of(order.resident_id),
                        f"您常订的{meal_label(menu)}没有订上：{refused.message}", key, now)
        return
    if booking.status == BookingStatus.WAITING:
        placed.waitlisted += 1
        await push_text(await family_of(order.resident_id),
                        f"您常订的{meal_label(menu)}已满，已为您加入候补，有空位时会通知您。", key, now)
    elif booking.standing_id == order.id:
        placed.booked += 1


# ---------------------------------------------------------------------------- diners


async def diner_of(resident_id: int) -> Diner | None:
    return await Diner.get_or_none(resident_id=resident_id)


def diet_codes(value: Iterable[str] | str) -> str:
    items = [p.strip() for p in value.replace("，", ",").replace("、", ",").split(",")] if isinstance(value, str) \
        else list(value)
    codes = {DIET_BY_ANY.get(item, item) for item in items if item}
    if any(code not in DIET_LABELS for code in codes):
        raise UserFacingError("饮食需求只能是" + "、".join(DIET_LABELS.values()) + "。")
    return ",".join(code for code in DIET_LABELS if code in codes)


DIET_BY_ANY = {label: code for code, label in DIET_LABELS.items()}


async def set_diner(
    *, resident_id: int, by_id: int, now: datetime, diet: Iterable[str] | str | None = None,
    allergies: str | None = None, delivery_approved: bool | None = None,
) -> Diner:
    """What the kitchen must know of a diner (the diner, their family or the staff of their
    community's canteen); approving delivery is the staff's alone."""
    resident = await Resident.get_or_none(id=resident_id, erased_at=None)
    if resident is None:
        raise NotFound("没有找到这位居民。")
    canteen = await canteen_of(resident_id)
    staff = canteen is not None and await is_canteen_staff(by_id, canteen.id)
    if not staff and not await _speaks_for(by_id, resident_id):
        raise Forbidden("只能填写自己或绑定家人的饮食需求。")
    if delivery_approved is not None and not staff:
        raise Forbidden("送餐资格由食堂工作人员确认，请联系食堂。")
    changes: dict[str, Any] = {"updated_by_id": by_id, "updated_at": now}
    if diet is not None:
        changes["diet"] = diet_codes(diet)
    if allergies is not None:
        allergies = allergies.strip()
        if len(allergies) > ALLERGIES_MAX:
            raise UserFacingError(f"过敏情况最多写{ALLERGIES_MAX}个字。")
        changes["allergies"] = allergies
    if delivery_approved is not None:
        changes["delivery_approved"] = bool(delivery_approved)
    diner, created = await Diner.get_or_create(resident_id=resident_id, defaults=changes)
    if not created:
        await Diner.filter(resident_id=resident_id).update(**changes)
        diner = await Diner.get(resident_id=resident_id)
    return diner


def diet_text(diner: Diner | None) -> str:
    """软食、低糖；过敏：花生 (or 无)"""
    if diner is None:
        return "无"
    text = "、".join(DIET_LABELS[c] for c in diner.diet.split(",") if c in DIET_LABELS)
    if diner.allergies:
        text += ("；" if text else "") + f"过敏：{diner.allergies}"
    return text or "无"
