"""幸福食堂 through /api/v1/canteen: menus, bookings, wallets, cards, the counter and the figures.

Amounts are integers in fen (``*_fen``), with the yuan text residents read beside them. Whatever
is about a resident (bookings, wallet, cards, standing orders, diet) answers only the diner, a
family member acting for them, the staff of a canteen they eat at and their community's staff;
anyone else gets 404, as if it did not exist. Canteen staff here means the canteen's own staff,
its community's staff and the sub-district's staff above it (``models.canteen_wallet``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import date, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, field_validator, model_validator

from bot.api import (
    DAY,
    HHMM,
    XLSX,
    ApiRequest,
    ApiRouter,
    FileBody,
    Id,
    Query,
    Strict,
    idempotency_key,
    invalid,
    not_found,
    once,
    real_day,
)
from models import canteen_booking as booking_ops
from models.canteen import (
    BOOKING_LABELS,
    CAPACITY_MAX,
    DIET_LABELS,
    DISH_NAME_MAX,
    DISHES_MAX,
    MEAL_LABELS,
    MODE_LABELS,
    PAY_METHOD_LABELS,
    PRICE_MAX_FEN,
    RECEIPT_MAX,
    TOPUP_MAX_FEN,
    Booking,
    CanteenSettings,
    ClosedDay,
    MealCard,
    MealSlot,
    Menu,
    PriceRule,
    StandingOrder,
    TopUp,
)
from models.canteen_figures import (
    canteen_figures,
    figures_xlsx,
    kitchen_pdf,
    kitchen_xlsx,
    may_read_diner,
    sheet_notes,
)
from models.canteen_prices import (
    RULE_LABELS,
    buy_card,
    may_buy_card,
    next_month,
    quote,
    rule_history,
    rules_on,
    set_rule,
)
from models.canteen_wallet import canteen_of, is_canteen_staff, refund_wallet, top_up, wallet_of, yuan
from models.cases import local_today
from models.places import Canteen
from models.proxies import acts_for, record_action
from models.redemption import code_png, find_recipient
from models.residents import Mobility, Resident

api = ApiRouter("canteen")

PDF = "application/pdf"
MONTH = r"^[0-9]{4}-[0-9]{2}$"
MealCode = Literal["breakfast", "lunch", "dinner"]
ModeCode = Literal["dine_in", "delivery"]
DietCode = Literal["soft", "low_salt", "low_sugar"]
MethodCode = Literal["cash", "wechat", "alipay", "bank", "other"]
RuleCode = Literal["free", "card", "flat", "discount"]
MEAL_DOC = "breakfast 早餐 | lunch 午餐 | dinner 晚餐"
MODE_DOC = "dine_in 堂食 | delivery 送餐 (for residents who need it or whom staff approved)"
DIET_DOC = "soft 软食 | low_salt 低盐 | low_sugar 低糖"
FOR_DOC = "a family proxy or canteen staff: whom for (default: the caller)"


# ---------------------------------------------------------------------------- shapes


class CanteenOut(BaseModel):
    id: int
    name: str
    community_id: int
    manage: bool = Field(description="the caller is its staff (canteen, community or sub-district)")


class CanteenList(BaseModel):
    items: list[CanteenOut]


class SlotOut(BaseModel):
    meal: str = Field(description=MEAL_DOC)
    meal_label: str
    capacity: int
    cutoff: str = Field(description="HH:MM local; breakfast's is on the day before")
    serve_from: str
    serve_until: str
    active: bool


class ClosedDayOut(BaseModel):
    id: int
    day: str
    reason: str


class SettingsOut(BaseModel):
    canteen_id: int
    name: str
    no_show_pays: bool = Field(description="a no-show still pays for the meal")
    gov_share_pct: int = Field(description="the government's share of the subsidy, %; the rest the enterprise's")
    closed_weekdays: list[int] = Field(description="ISO weekdays the canteen is shut (6 Saturday, 7 Sunday)")
    slots: list[SlotOut]
    closed_days: list[ClosedDayOut] = Field(description="closed dates from today on")


class SettingsIn(Strict):
    """Only what is given changes."""

    no_show_pays: bool | None = None
    gov_share_pct: int | None = Field(default=None, ge=0, le=100)
    closed_weekdays: list[Annotated[int, Field(ge=1, le=7)]] | None = Field(default=None, max_length=7)


class SlotIn(Strict):
    """A meal's capacity, cut-off and serving hours; only what is given changes."""

    meal: MealCode = Field(description=MEAL_DOC)
    capacity: int | None = Field(default=None, ge=1, le=CAPACITY_MAX)
    cutoff: str | None = Field(default=None, pattern=HHMM)
    serve_from: str | None = Field(default=None, pattern=HHMM)
    serve_until: str | None = Field(default=None, pattern=HHMM)
    active: bool | None = None


class ClosedDayIn(Strict):
    day: str = Field(pattern=DAY, description="YYYY-MM-DD, community time")
    reason: str = Field(default="", max_length=60)

    _day = field_validator("day")(real_day)


class DishIn(Strict):
    name: str = Field(min_length=1, max_length=DISH_NAME_MAX)
    marks: list[DietCode] = Field(default=[], max_length=3, description=DIET_DOC)


class DishOut(BaseModel):
    name: str
    marks: list[str]
    mark_labels: list[str]


class QuoteOut(BaseModel):
    price_fen: int = Field(description="what this diner pays")
    price: str = Field(description="the same in yuan, e.g. 6.00元")
    rule: str = Field(description="free | card | flat | discount | menu")
    rule_label: str


class MenuOut(BaseModel):
    id: int
    canteen_id: int
    day: str
    meal: str = Field(description=MEAL_DOC)
    meal_label: str
    dishes: list[DishOut]
    price_fen: int = Field(description="the menu price")
    price: str
    capacity: int
    booked: int
    seats_left: int
    state: str = Field(description="open | closed (after the cut-off) | done | cancelled")
    cutoff_at: str
    serve_from_at: str
    serve_until_at: str
    quote: QuoteOut | None = Field(default=None, description="what the diner listed for pays (open menus)")
    booking_id: int | None = Field(default=None, description="the diner's booking of this menu, if any")
    booking_status: str | None = None


class MenuList(BaseModel):
    items: list[MenuOut]


class MenusQuery(Query):
    day: str | None = Field(default=None, pattern=DAY, description="every menu of that day (any state); default: "
                                                                   "the open menus of the coming week")
    for_resident_id: Id | None = Field(default=None, description="whose price and booking to show")

    _day = field_validator("day")(real_day)


class MenuIn(Strict):
    day: str = Field(pattern=DAY, description="YYYY-MM-DD, today up to a week ahead")
    meal: MealCode = Field(description=MEAL_DOC)
    dishes: list[DishIn] = Field(min_length=1, max_length=DISHES_MAX)
    price_fen: int = Field(ge=0, le=PRICE_MAX_FEN, description="the menu price")
    capacity: int | None = Field(default=None, ge=1, le=CAPACITY_MAX, description="default: the meal's")

    _day = field_validator("day")(real_day)


class PublishedOut(BaseModel):
    menu: MenuOut
    standing_booked: int = Field(description="standing orders booked on first publishing")
    standing_waitlisted: int
    standing_failed: int = Field(description="standing orders that could not be placed (each diner was told why)")


class BookIn(Strict):
    menu_id: Id
    mode: ModeCode = Field(default="dine_in", description=MODE_DOC)
    for_resident_id: Id | None = Field(default=None, description=FOR_DOC)


class BookingOut(BaseModel):
    id: int
    menu_id: int
    resident_id: int
    name: str = Field(description="the diner")
    day: str
    meal: str
    meal_label: str
    mode: str = Field(description=MODE_DOC)
    mode_label: str
    status: str = Field(description="waiting | offered | booked | charged | served | no_show | cancelled | lapsed")
    status_label: str
    menu_price_fen: int
    price_fen: int = Field(description="frozen at booking")
    price: str
    rule: str
    rule_label: str
    code: str = Field(description="shown as a QR code at the counter")
    qr_url: str = Field(description="GET this path below /api/v1 for the QR code (PNG)")
    cutoff_at: str
    offer_until: str | None = Field(description="an offered seat is held until then")
    served_at: str | None
    cancelled_at: str | None


class BookingList(BaseModel):
    resident_id: int
    available_fen: int
    balance_fen: int
    balance: str = Field(description="wallet balance (available + held) in yuan")
    items: list[BookingOut]


class BookingsQuery(Query):
    for_resident_id: Id | None = Field(default=None, description=FOR_DOC)
    upcoming: bool = Field(default=True, description="false: past bookings too")


class CancelIn(Strict):
    reason: str = Field(default="", max_length=100)


class OfferIn(Strict):
    accept: bool


class WhoQuery(Query):
    for_resident_id: Id | None = Field(default=None, description=FOR_DOC)


class TopUpOut(BaseModel):
    id: int
    canteen_id: int
    resident_id: int
    kind: str = Field(description="topup | refund (paid back at the counter)")
    amount_fen: int
    amount: str
    method: str
    method_label: str
    receipt_no: str
    created_at: str


class WalletOut(BaseModel):
    resident_id: int
    name: str
    available_fen: int = Field(description="what can still be spent")
    held_fen: int = Field(description="held for booked meals until their cut-off")
    balance_fen: int = Field(description="available + held")
    deposited_fen: int = Field(description="top-ups minus counter refunds, ever")
    balance: str
    available: str
    recent: list[TopUpOut] = Field(description="the latest top-ups and counter refunds, newest first")


class CounterIn(Strict):
    resident_id: Id | None = Field(default=None, description="the diner (or give mobile)")
    mobile: str | None = Field(default=None, min_length=5, max_length=20, description="the diner's registered mobile")
    amount_fen: int = Field(ge=1, le=TOPUP_MAX_FEN)
    method: MethodCode = Field(description=", ".join(f"{k} {v}" for k, v in PAY_METHOD_LABELS.items()))
    receipt_no: str = Field(min_length=1, max_length=RECEIPT_MAX, description="the same receipt again is the same "
                                                                              "record (never a second one)")

    @model_validator(mode="after")
    def _one_diner(self) -> CounterIn:
        if (self.resident_id is None) == (self.mobile is None):
            raise ValueError("give either resident_id or mobile")
        return self


class CounterOut(BaseModel):
    record: TopUpOut
    wallet: WalletOut


class CardOut(BaseModel):
    id: int
    canteen_id: int
    resident_id: int
    month: str = Field(description="YYYY-MM")
    price_fen: int
    status: str = Field(description="active | refunded")
    bought_at: str
    settled: bool = Field(description="the month's subsidy was booked")
    meals_value_fen: int
    subsidy_fen: int


class CardMonth(BaseModel):
    month: str = Field(description="YYYY-MM")
    eligible: bool = Field(description="the card rule fits the diner for that month")
    card_id: int | None


class CardList(BaseModel):
    resident_id: int
    canteen_id: int | None
    items: list[CardOut]
    months: list[CardMonth] = Field(description="this month and the next: whether a card may be bought")


class CardIn(Strict):
    month: str = Field(pattern=MONTH, description="YYYY-MM: this month or the next")
    for_resident_id: Id | None = Field(default=None, description=FOR_DOC)
    canteen_id: Id | None = Field(default=None, description="default: the canteen of the diner's community")

    @field_validator("month")
    @classmethod
    def _real_month(cls, value: str) -> str:
        real_day(value + "-01")
        return value


class StandingOut(BaseModel):
    id: int
    canteen_id: int
    resident_id: int
    meals: list[str]
    meal_labels: list[str]
    weekdays: list[int] = Field(description="ISO weekdays, 1 Monday")
    mode: str
    created_at: str
    ended_at: str | None


class StandingList(BaseModel):
    items: list[StandingOut]


class StandingIn(Strict):
    meals: list[MealCode] = Field(min_length=1, max_length=3, description=MEAL_DOC)
    weekdays: list[Annotated[int, Field(ge=1, le=7)]] = Field(min_length=1, max_length=7,
                                                              description="ISO weekdays, 1 Monday")
    mode: ModeCode = Field(default="dine_in", description=MODE_DOC)
    for_resident_id: Id | None = Field(default=None, description=FOR_DOC)
    canteen_id: Id | None = Field(default=None, description="default: the canteen of the diner's community")


class DinerOut(BaseModel):
    resident_id: int
    name: str
    diet: list[str] = Field(description=DIET_DOC)
    diet_labels: list[str]
    allergies: str
    delivery_approved: bool = Field(description="staff approved delivery")
    needs_delivery: bool = Field(description="recorded as needing delivery (mobility)")


class DinerIn(Strict):
    """Only what is given changes; delivery_approved is for canteen staff."""

    for_resident_id: Id | None = Field(default=None, description=FOR_DOC)
    diet: list[DietCode] | None = Field(default=None, max_length=3, description=DIET_DOC)
    allergies: str | None = Field(default=None, max_length=60)
    delivery_approved: bool | None = None


class ServeIn(Strict):
    code: str | None = Field(default=None, min_length=4, max_length=12,
                             description="the booking's code, scanned from the diner's QR or typed")
    booking_id: Id | None = Field(default=None, description="picked from the list by name")

    @model_validator(mode="after")
    def _one_way(self) -> ServeIn:
        if (self.code is None) == (self.booking_id is None):
            raise ValueError("give either code or booking_id")
        return self


class CounterBooking(BaseModel):
    id: int
    resident_id: int
    name: str
    mode: str
    status: str
    status_label: str
    rule_label: str
    served_at: str | None


class CounterList(BaseModel):
    menu: MenuOut
    items: list[CounterBooking]


class KitchenNote(BaseModel):
    name: str
    address: str
    mode: str = Field(description="堂食 | 送餐")
    needs: str


class KitchenOut(BaseModel):
    menu: MenuOut
    total: int
    dine_in: int
    delivery: int
    diets: dict[str, int] = Field(description="portions per diet code (soft, low_salt, low_sugar) and diners with "
                                             "an allergy (allergy)")
    notes: list[KitchenNote]
    text: str = Field(description="the count as the kitchen's chat message")


class SheetQuery(Query):
    format: Literal["pdf", "xlsx"] = Field(default="pdf")


class FiguresQuery(Query):
    from_: str | None = Field(default=None, alias="from", pattern=DAY,
                              description="YYYY-MM-DD, the first day counted (default: the 1st of this month)")
    to: str | None = Field(default=None, pattern=DAY, description="YYYY-MM-DD, the last day counted; default today")
    format: Literal["json", "xlsx"] = Field(default="json", description="xlsx: the same figures as a spreadsheet")

    _days = field_validator("from_", "to")(real_day)


class MealFigures(BaseModel):
    day: str | None
    meal: str | None
    rule: str
    rule_label: str
    booked: int
    served: int
    missed: int
    cancelled: int
    waiting: int
    lapsed: int
    paid_fen: int
    menu_value_fen: int


class SubsidyOut(BaseModel):
    month: str = Field(description="YYYY-MM")
    gov_fen: int
    ent_fen: int


class WalletFigure(BaseModel):
    resident_id: int
    name: str
    available_fen: int
    held_fen: int
    balance_fen: int


class FiguresOut(BaseModel):
    canteen_id: int
    name: str
    first_day: str
    last_day: str
    total: MealFigures
    by_rule: list[MealFigures]
    meals: list[MealFigures] = Field(description="per day, meal and rule")
    subsidy: list[SubsidyOut] = Field(description="per month, by the month of the meal (cards: their month)")
    topups: int
    topup_fen: int
    refunds: int
    refund_fen: int
    wallets: list[WalletFigure] = Field(description="each diner's wallet at the end of the last day")
    wallet_fen: int


class RuleOut(BaseModel):
    kind: str
    label: str
    params: dict[str, Any]


class RuleRow(BaseModel):
    id: int
    kind: str
    params: dict[str, Any]
    active: bool
    effective_from: str
    reason: str
    created_at: str


class RulesOut(BaseModel):
    canteen_id: int
    day: str
    in_force: list[RuleOut] = Field(description="the rules of today; the menu price applies to everyone else")
    history: list[RuleRow] = Field(description="every change, the latest date first")


class RuleIn(Strict):
    kind: RuleCode = Field(description="free | card | flat | discount")
    params: dict[str, Any] = Field(description="only what changes, e.g. {\"price_fen\": 500} or {\"min_age\": 65}")
    effective_from: str = Field(pattern=DAY, description="YYYY-MM-DD, today or later")
    reason: str = Field(min_length=1, max_length=100)
    active: bool = Field(default=True, description="false: the rule no longer applies from that date")

    _day = field_validator("effective_from")(real_day)


# ---------------------------------------------------------------------------- helpers


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _codes(text: str) -> list[str]:
    return [part for part in text.split(",") if part]


async def _canteen(req: ApiRequest, *, staff: bool) -> tuple[Resident, Canteen]:
    """The caller and the path's canteen; with ``staff``, only for its staff (else 404)."""
    actor = await req.bound_actor()
    canteen = await Canteen.get_or_none(id=req.path["canteen_id"])
    if canteen is None or (staff and not await is_canteen_staff(actor.id, canteen.id)):
        raise not_found()
    return actor, canteen


async def _diner_canteen(person: Resident, canteen_id: int | None) -> Canteen:
    canteen = await (Canteen.get_or_none(id=canteen_id) if canteen_id else canteen_of(person.id))
    if canteen is None:
        raise not_found("没有找到食堂。")
    return canteen


async def _staff_menu(req: ApiRequest) -> tuple[Resident, Menu]:
    actor = await req.bound_actor()
    menu = await Menu.get_or_none(id=req.path["menu_id"])
    if menu is None or not await is_canteen_staff(actor.id, menu.canteen_id):
        raise not_found()
    return actor, menu


async def _record(actor: Resident, person: Resident, action: str, req: ApiRequest, **detail: Any) -> None:
    """A family member acting for an elder leaves a trace the elder can read."""
    if actor.id != person.id and await acts_for(actor.id, person.id):
        await record_action(actor_id=actor.id, subject_id=person.id, action=action, channel="api", now=req.now,
                            detail=detail)


def _menu_out(menu: Menu, quoted: QuoteOut | None = None, booking: Booking | None = None) -> MenuOut:
    return MenuOut(
        id=menu.id, canteen_id=menu.canteen_id, day=menu.day.isoformat(), meal=menu.meal,
        meal_label=MEAL_LABELS.get(menu.meal, menu.meal),
        dishes=[DishOut(name=d.get("name", ""), marks=list(d.get("marks", [])),
                        mark_labels=[DIET_LABELS.get(m, m) for m in d.get("marks", [])]) for d in menu.dishes],
        price_fen=menu.price_fen, price=yuan(menu.price_fen), capacity=menu.capacity, booked=menu.booked,
        seats_left=max(0, menu.capacity - menu.booked), state=menu.state, cutoff_at=menu.cutoff_at.isoformat(),
        serve_from_at=menu.serve_from_at.isoformat(), serve_until_at=menu.serve_until_at.isoformat(), quote=quoted,
        booking_id=booking.id if booking else None, booking_status=booking.status if booking else None)


async def _booking_out(booking: Booking) -> BookingOut:
    menu = await Menu.get(id=booking.menu_id)
    name = await Resident.filter(id=booking.resident_id).first().values_list("name", flat=True)
    return BookingOut(
        id=booking.id, menu_id=menu.id, resident_id=booking.resident_id, name=str(name or ""),
        day=menu.day.isoformat(), meal=menu.meal, meal_label=MEAL_LABELS.get(menu.meal, menu.meal), mode=booking.mode,
        mode_label=MODE_LABELS.get(booking.mode, booking.mode), status=booking.status,
        status_label=BOOKING_LABELS.get(booking.status, booking.status), menu_price_fen=booking.menu_price_fen,
        price_fen=booking.price_fen, price=yuan(booking.price_fen), rule=booking.rule, rule_label=booking.rule_label,
        code=booking.code, qr_url=f"/canteen/bookings/{booking.id}/qr", cutoff_at=menu.cutoff_at.isoformat(),
        offer_until=_iso(booking.offer_until), served_at=_iso(booking.served_at),
        cancelled_at=_iso(booking.cancelled_at))


async def _readable_booking(req: ApiRequest) -> tuple[Resident, Booking]:
    """The path's booking, for its diner, a family member acting for them or its canteen's staff."""
    actor = await req.bound_actor()
    return actor, await booking_ops.booking_of(req.path["booking_id"], actor.id)


def _topup_out(row: TopUp) -> TopUpOut:
    return TopUpOut(id=row.id, canteen_id=row.canteen_id, resident_id=row.resident_id, kind=row.kind,
                    amount_fen=row.amount_fen, amount=yuan(row.amount_fen), method=row.method,
                    method_label=PAY_METHOD_LABELS.get(row.method, row.method), receipt_no=row.receipt_no,
                    created_at=row.created_at.isoformat())


async def _wallet_out(person: Resident, now: datetime) -> WalletOut:
    wallet = await wallet_of(person.id, now)
    recent = await TopUp.filter(resident_id=person.id).order_by("-created_at", "-id").limit(10)
    return WalletOut(resident_id=person.id, name=person.name, available_fen=wallet.available_fen,
                     held_fen=wallet.held_fen, balance_fen=wallet.balance_fen, deposited_fen=wallet.deposited_fen,
                     balance=yuan(wallet.balance_fen), available=yuan(wallet.available_fen),
                     recent=[_topup_out(r) for r in recent])


def _card_out(card: MealCard) -> CardOut:
    return CardOut(id=card.id, canteen_id=card.canteen_id, resident_id=card.resident_id,
                   month=f"{card.month:%Y-%m}", price_fen=card.price_fen, status=card.status,
                   bought_at=card.bought_at.isoformat(), settled=card.settled_at is not None,
                   meals_value_fen=card.meals_value_fen, subsidy_fen=card.subsidy_fen)


def _standing_out(order: StandingOrder) -> StandingOut:
    meals = _codes(order.meals)
    return StandingOut(id=order.id, canteen_id=order.canteen_id, resident_id=order.resident_id, meals=meals,
                       meal_labels=[MEAL_LABELS.get(m, m) for m in meals],
                       weekdays=[int(d) for d in _codes(order.weekdays)], mode=order.mode,
                       created_at=order.created_at.isoformat(), ended_at=_iso(order.ended_at))


async def _diner_out(person: Resident) -> DinerOut:
    diner = await booking_ops.diner_of(person.id)
    diet = _codes(diner.diet) if diner else []
    return DinerOut(resident_id=person.id, name=person.name, diet=diet,
                    diet_labels=[DIET_LABELS.get(d, d) for d in diet], allergies=diner.allergies if diner else "",
                    delivery_approved=bool(diner and diner.delivery_approved),
                    needs_delivery=person.mobility == Mobility.NEEDS_DELIVERY)


async def _settings_out(canteen: Canteen, now: datetime) -> SettingsOut:
    settings: CanteenSettings = await booking_ops.settings_of(canteen.id)
    slots: list[MealSlot] = await booking_ops.slots_of(canteen.id)
    closed = await ClosedDay.filter(canteen_id=canteen.id, day__gte=local_today(now)).order_by("day")
    return SettingsOut(
        canteen_id=canteen.id, name=canteen.name, no_show_pays=settings.no_show_pays,
        gov_share_pct=settings.gov_share_pct, closed_weekdays=[int(d) for d in _codes(settings.closed_weekdays)],
        slots=[SlotOut(meal=s.meal, meal_label=MEAL_LABELS.get(s.meal, s.meal), capacity=s.capacity, cutoff=s.cutoff,
                       serve_from=s.serve_from, serve_until=s.serve_until, active=s.active) for s in slots],
        closed_days=[ClosedDayOut(id=c.id, day=c.day.isoformat(), reason=c.reason) for c in closed])


# ---------------------------------------------------------------------------- canteens and settings


@api.route("GET", "/canteen/canteens", summary="Canteens: my community's and the ones I run", response=CanteenList,
           errors=(409,))
async def list_canteens(req: ApiRequest) -> CanteenList:
    """The canteen of the caller's community, and every canteen they are staff of (manage=true)."""
    actor = await req.bound_actor()
    items = []
    for canteen in await Canteen.all().order_by("id"):
        manage = await is_canteen_staff(actor.id, canteen.id)
        if manage or canteen.community_id == actor.community_id:  # type: ignore[attr-defined]
            items.append(CanteenOut(id=canteen.id, name=canteen.name, community_id=canteen.community_id,  # type: ignore[attr-defined]
                                    manage=manage))
    return CanteenList(items=items)


@api.route("GET", "/canteen/canteens/{canteen_id}/settings", summary="A canteen's settings, meals and closed days "
           "(its staff)", response=SettingsOut, errors=(409,))
async def get_settings(req: ApiRequest) -> SettingsOut:
    """Whether a no-show pays, the government's share of the subsidy, closed weekdays, each meal's
    capacity, cut-off and serving hours, and the closed dates ahead."""
    _, canteen = await _canteen(req, staff=True)
    return await _settings_out(canteen, req.now)


@api.route("PUT", "/canteen/canteens/{canteen_id}/settings", summary="Change a canteen's settings (its staff)",
           body=SettingsIn, response=SettingsOut, errors=(409,))
async def put_settings(req: ApiRequest) -> SettingsOut:
    """Only what is given changes; menus already published keep their prices and seats."""
    actor, canteen = await _canteen(req, staff=True)
    body: SettingsIn = req.body
    await booking_ops.update_settings(canteen_id=canteen.id, by_id=actor.id, now=req.now,
                                      no_show_pays=body.no_show_pays, gov_share_pct=body.gov_share_pct,
                                      closed_weekdays=body.closed_weekdays)
    return await _settings_out(canteen, req.now)


@api.route("PUT", "/canteen/canteens/{canteen_id}/slots", summary="Change one meal's capacity, cut-off or hours "
           "(its staff)", body=SlotIn, response=SettingsOut, errors=(409,))
async def put_slot(req: ApiRequest) -> SettingsOut:
    """For menus published later; active=false stops that meal being published."""
    actor, canteen = await _canteen(req, staff=True)
    body: SlotIn = req.body
    await booking_ops.set_slot(canteen_id=canteen.id, meal=body.meal, by_id=actor.id, now=req.now,
                               capacity=body.capacity, cutoff=body.cutoff, serve_from=body.serve_from,
                               serve_until=body.serve_until, active=body.active)
    return await _settings_out(canteen, req.now)


@api.route("POST", "/canteen/canteens/{canteen_id}/closed-days", summary="Close the canteen on a date (its staff)",
           body=ClosedDayIn, response=SettingsOut, status=201, errors=(409,))
async def post_closed_day(req: ApiRequest) -> SettingsOut:
    """No menu can be published for that date (409 when one already is)."""
    actor, canteen = await _canteen(req, staff=True)
    body: ClosedDayIn = req.body
    await booking_ops.close_day(canteen_id=canteen.id, day=date.fromisoformat(body.day), reason=body.reason,
                                by_id=actor.id, now=req.now)
    return await _settings_out(canteen, req.now)


@api.route("DELETE", "/canteen/closed-days/{closed_day_id}", summary="Open a closed date again (its staff)",
           response=SettingsOut, errors=(409,))
async def delete_closed_day(req: ApiRequest) -> SettingsOut:
    """The date can have menus again."""
    actor = await req.bound_actor()
    closed = await ClosedDay.get_or_none(id=req.path["closed_day_id"])
    if closed is None or not await is_canteen_staff(actor.id, closed.canteen_id):
        raise not_found()
    await booking_ops.reopen_day(canteen_id=closed.canteen_id, day=closed.day, by_id=actor.id, now=req.now)
    return await _settings_out(await Canteen.get(id=closed.canteen_id), req.now)


# ---------------------------------------------------------------------------- menus


@api.route("GET", "/canteen/canteens/{canteen_id}/menus", summary="Menus: the open ones of the coming week, or "
           "one day's", query=MenusQuery, response=MenuList, errors=(409,))
async def get_menus(req: ApiRequest) -> MenuList:
    """Open menus (before their cut-off), by day and meal, each with what the diner pays by which rule
    and the diner's booking; with day, every menu of that day (the counter's and kitchen's view)."""
    q: MenusQuery = req.query
    _, canteen = await _canteen(req, staff=False)
    _, person = await req.acting_for(q.for_resident_id, may=may_read_diner)
    if q.day is not None:
        menus = await Menu.filter(canteen_id=canteen.id, day=date.fromisoformat(q.day)).all()
        menus.sort(key=lambda m: list(MEAL_LABELS).index(m.meal) if m.meal in MEAL_LABELS else 9)
    else:
        menus = await booking_ops.open_menus(canteen.id, req.now)
    mine = {b.menu_id: b for b in await Booking.filter(resident_id=person.id, menu_id__in=[m.id for m in menus])}
    items = []
    for menu in menus:
        quoted = None
        if menu.state == "open" and menu.cutoff_at > req.now:
            got = await quote(canteen_id=canteen.id, resident_id=person.id, day=menu.day, meal=menu.meal,
                              menu_price_fen=menu.price_fen)
            quoted = QuoteOut(price_fen=got.price_fen, price=yuan(got.price_fen), rule=got.rule,
                              rule_label=got.rule_label)
        items.append(_menu_out(menu, quoted, mine.get(menu.id)))
    return MenuList(items=items)


@api.route("POST", "/canteen/canteens/{canteen_id}/menus", summary="Publish (or update) a day's meal (its staff)",
           body=MenuIn, response=PublishedOut, status=201, errors=(409,))
async def post_menu(req: ApiRequest) -> PublishedOut:
    """Today up to a week ahead, before the meal's cut-off, not on a closed day. Publishing the same
    day and meal again updates the dishes (the price only while nobody booked; the seats never below
    those booked). The first publishing books the matching standing orders."""
    actor, canteen = await _canteen(req, staff=True)
    body: MenuIn = req.body
    menu, placed = await booking_ops.publish_menu(
        canteen_id=canteen.id, day=date.fromisoformat(body.day), meal=body.meal,
        dishes=[d.model_dump() for d in body.dishes], price_fen=body.price_fen, by_id=actor.id, now=req.now,
        capacity=body.capacity)
    return PublishedOut(menu=_menu_out(menu), standing_booked=placed.booked, standing_waitlisted=placed.waitlisted,
                        standing_failed=len(placed.failed))


class WithdrawIn(Strict):
    reason: str = Field(default="", max_length=40, description="told to the diners, e.g. 食材未到")


@api.route("POST", "/canteen/menus/{menu_id}/withdraw", summary="Withdraw an open menu (its staff)",
           body=WithdrawIn, response=MenuOut, errors=(409,))
async def post_withdraw(req: ApiRequest) -> MenuOut:
    """Before its cut-off: every booking is cancelled, the held money released and the diners told.
    Withdrawing again answers the withdrawn menu; after the cut-off, 409."""
    actor, menu = await _staff_menu(req)
    body: WithdrawIn = req.body
    return _menu_out(await booking_ops.withdraw_menu(menu.id, by_id=actor.id, now=req.now, reason=body.reason))


# ---------------------------------------------------------------------------- bookings


@api.route("POST", "/canteen/bookings", summary="Book a meal (订餐)", body=BookIn, response=BookingOut, status=201,
           errors=(404, 409))
async def post_booking(req: ApiRequest) -> BookingOut:
    """For the caller or an elder they act for (canteen staff: any diner): the price by the cheapest
    rule that fits, held from the wallet until the cut-off. A full sitting puts the diner on the
    waiting list (status waiting, nothing held). Booking the same meal again answers the booking
    unchanged; an Idempotency-Key header makes a retry within 24 hours answer the first booking
    even if it was cancelled since (422 if the key was used for another). 409 when the wallet is
    short, the cut-off passed or delivery is not allowed."""
    body: BookIn = req.body
    actor, person = await req.acting_for(body.for_resident_id, may=may_read_diner)
    token = idempotency_key(req.http)

    async def create() -> int:
        booked = await booking_ops.book(menu_id=body.menu_id, resident_id=person.id, by_id=actor.id, mode=body.mode,
                                        now=req.now)
        await _record(actor, person, "canteen_book", req, booking_id=booked.id)
        return booked.id

    if token is None:
        booking_id = await create()
    else:
        booking_id = await once(req.services.store, "canteen", actor.id, token,
                                f"{body.menu_id}:{person.id}:{body.mode}", create, lambda i: Booking.exists(id=i),
                                what="booking", busy="上一次提交还在处理中，请稍后在“我的订餐”里查看。")
    return await _booking_out(await Booking.get(id=booking_id))


@api.route("GET", "/canteen/bookings", summary="My bookings and wallet (我的订餐)", query=BookingsQuery,
           response=BookingList, errors=(404, 409))
async def get_bookings(req: ApiRequest) -> BookingList:
    """Upcoming bookings (with upcoming=false, recent past ones too) and the wallet balance."""
    q: BookingsQuery = req.query
    _, person = await req.acting_for(q.for_resident_id, may=may_read_diner)
    wallet = await wallet_of(person.id, req.now)
    bookings = await booking_ops.bookings_of(person.id, req.now, upcoming=q.upcoming)
    return BookingList(resident_id=person.id, available_fen=wallet.available_fen, balance_fen=wallet.balance_fen,
                       balance=yuan(wallet.balance_fen), items=[await _booking_out(b) for b in bookings])


@api.route("GET", "/canteen/bookings/{booking_id}", summary="One booking", response=BookingOut, errors=(409,))
async def get_booking(req: ApiRequest) -> BookingOut:
    """Its diner, a family member acting for them or the canteen's staff."""
    _, booking = await _readable_booking(req)
    return await _booking_out(booking)


@api.route("GET", "/canteen/bookings/{booking_id}/qr", summary="A booking's QR code for the counter (PNG)",
           produces="image/png", errors=(409,))
async def get_booking_qr(req: ApiRequest) -> FileBody:
    """The code the counter scans to mark the meal served; seen as GET /canteen/bookings/{booking_id}."""
    _, booking = await _readable_booking(req)
    return FileBody(code_png(booking.code), f"meal-{booking.code}.png", inline=True)


@api.route("POST", "/canteen/bookings/{booking_id}/cancel", summary="Cancel a booking (free before the cut-off)",
           body=CancelIn, response=BookingOut, errors=(409,))
async def post_cancel(req: ApiRequest) -> BookingOut:
    """Before the cut-off the diner (or a proxy) cancels free of charge: the hold is released and the
    seat offered to the first on the waiting list. After it only canteen staff cancel (the meal is
    refunded). Leaving the waiting list is a cancel too."""
    actor, booking = await _readable_booking(req)
    done = await booking_ops.cancel(booking_id=booking.id, by_id=actor.id, now=req.now, reason=req.body.reason)
    diner = await Resident.get(id=done.resident_id)
    await _record(actor, diner, "canteen_cancel", req, booking_id=done.id)
    return await _booking_out(done)


@api.route("POST", "/canteen/bookings/{booking_id}/offer", summary="Take or decline a freed seat offered from the "
           "waiting list", body=OfferIn, response=BookingOut, errors=(409,))
async def post_offer(req: ApiRequest) -> BookingOut:
    """Within 15 minutes of the offer: accept holds the price (409 when the wallet is short; the offer
    stays), decline gives the seat to the next."""
    actor, booking = await _readable_booking(req)
    body: OfferIn = req.body
    return await _booking_out(await booking_ops.answer_offer(booking_id=booking.id, by_id=actor.id,
                                                             accept=body.accept, now=req.now))


# ---------------------------------------------------------------------------- wallet, counter, cards


@api.route("GET", "/canteen/wallet", summary="A diner's canteen wallet", query=WhoQuery, response=WalletOut,
           errors=(404, 409))
async def get_wallet(req: ApiRequest) -> WalletOut:
    """Available (what can be spent), held for booked meals, the balance, and the latest top-ups."""
    q: WhoQuery = req.query
    _, person = await req.acting_for(q.for_resident_id, may=may_read_diner)
    return await _wallet_out(person, req.now)


async def _counter(req: ApiRequest, op: Callable[..., Awaitable[TopUp]]) -> CounterOut:
    actor, canteen = await _canteen(req, staff=True)
    body: CounterIn = req.body
    person = await (Resident.get_or_none(id=body.resident_id, erased_at=None) if body.resident_id is not None
                    else find_recipient(body.mobile or ""))
    if person is None:
        raise not_found("没有找到这位居民。")
    row = await op(canteen_id=canteen.id, resident_id=person.id, amount_fen=body.amount_fen, method=body.method,
                   receipt_no=body.receipt_no, by_id=actor.id, now=req.now)
    return CounterOut(record=_topup_out(row), wallet=await _wallet_out(await Resident.get(id=row.resident_id),
                                                                       req.now))


@api.route("POST", "/canteen/canteens/{canteen_id}/top-ups", summary="Record money taken in at the counter "
           "(its staff)", body=CounterIn, response=CounterOut, status=201, errors=(409,))
async def post_top_up(req: ApiRequest) -> CounterOut:
    """Into the diner's wallet (found by id or registered mobile); the diner and their family are
    told. The same receipt number again answers the same record; with another diner or amount, 409."""
    return await _counter(req, top_up)


@api.route("POST", "/canteen/canteens/{canteen_id}/refunds", summary="Pay money back from a wallet at the counter "
           "(its staff)", body=CounterIn, response=CounterOut, status=201, errors=(409,))
async def post_refund(req: ApiRequest) -> CounterOut:
    """At most what is available (money held for booked meals stays); once per receipt number."""
    return await _counter(req, refund_wallet)


@api.route("GET", "/canteen/cards", summary="A diner's monthly meal cards (月卡)", query=WhoQuery, response=CardList,
           errors=(404, 409))
async def get_cards(req: ApiRequest) -> CardList:
    """Their cards, newest month first, and whether this month's and next month's card may be bought."""
    q: WhoQuery = req.query
    _, person = await req.acting_for(q.for_resident_id, may=may_read_diner)
    cards = await MealCard.filter(resident_id=person.id).order_by("-month", "-id")
    canteen = await canteen_of(person.id)
    months = []
    if canteen is not None:
        this = local_today(req.now).replace(day=1)
        for month in (this, next_month(this)):
            held = next((c.id for c in cards if c.month == month and c.canteen_id == canteen.id), None)
            months.append(CardMonth(month=f"{month:%Y-%m}", card_id=held, eligible=await may_buy_card(
                canteen_id=canteen.id, resident_id=person.id, month=month)))
    return CardList(resident_id=person.id, canteen_id=canteen.id if canteen else None,
                    items=[_card_out(c) for c in cards], months=months)


@api.route("POST", "/canteen/cards", summary="Buy a monthly meal card (月卡) from the wallet", body=CardIn,
           response=CardOut, status=201, errors=(404, 409))
async def post_card(req: ApiRequest) -> CardOut:
    """This month's or next month's, when the card rule fits the diner; buying it again answers the
    card. 409 when the wallet is short or the diner is not eligible (the message says why). Meals
    booked before buying keep their price."""
    body: CardIn = req.body
    actor, person = await req.acting_for(body.for_resident_id, may=may_read_diner)
    canteen = await _diner_canteen(person, body.canteen_id)
    card = await buy_card(canteen_id=canteen.id, resident_id=person.id, month=date.fromisoformat(body.month + "-01"),
                          by_id=actor.id, now=req.now)
    await _record(actor, person, "canteen_card", req, card_id=card.id)
    return _card_out(card)


# ---------------------------------------------------------------------------- standing orders and diet


@api.route("GET", "/canteen/standing-orders", summary="A diner's standing orders (长期订餐)", query=WhoQuery,
           response=StandingList, errors=(404, 409))
async def get_standing(req: ApiRequest) -> StandingList:
    """The orders still running."""
    q: WhoQuery = req.query
    _, person = await req.acting_for(q.for_resident_id, may=may_read_diner)
    return StandingList(items=[_standing_out(o) for o in await booking_ops.standing_of(person.id)])


@api.route("POST", "/canteen/standing-orders", summary="Book these meals on these weekdays whenever a menu is "
           "published", body=StandingIn, response=StandingOut, status=201, errors=(404, 409))
async def post_standing(req: ApiRequest) -> StandingOut:
    """Each menu published later that matches is booked within the wallet's available money, closed
    days skipped; the diner is told when one could not be placed."""
    body: StandingIn = req.body
    actor, person = await req.acting_for(body.for_resident_id, may=may_read_diner)
    canteen = await _diner_canteen(person, body.canteen_id)
    order = await booking_ops.set_standing(canteen_id=canteen.id, resident_id=person.id, by_id=actor.id,
                                           meals=list(body.meals), weekdays=list(body.weekdays), mode=body.mode,
                                           now=req.now)
    await _record(actor, person, "canteen_standing", req, order_id=order.id)
    return _standing_out(order)


@api.route("DELETE", "/canteen/standing-orders/{order_id}", summary="End a standing order", response=StandingOut,
           errors=(409,))
async def delete_standing(req: ApiRequest) -> StandingOut:
    """Bookings it already made stay (cancel them one by one)."""
    actor = await req.bound_actor()
    order = await StandingOrder.get_or_none(id=req.path["order_id"])
    if order is None:
        raise not_found()
    diner = await Resident.get(id=order.resident_id)
    if not await may_read_diner(actor.id, diner):
        raise not_found()
    ended = await booking_ops.end_standing(order_id=order.id, by_id=actor.id, now=req.now)
    return _standing_out(ended if isinstance(ended, StandingOrder) else await StandingOrder.get(id=order.id))


@api.route("GET", "/canteen/diner", summary="A diner's dietary needs for the kitchen", query=WhoQuery,
           response=DinerOut, errors=(404, 409))
async def get_diner(req: ApiRequest) -> DinerOut:
    """Soft food, low salt, low sugar, allergies, and whether delivery is allowed."""
    q: WhoQuery = req.query
    _, person = await req.acting_for(q.for_resident_id, may=may_read_diner)
    return await _diner_out(person)


@api.route("PUT", "/canteen/diner", summary="Change a diner's dietary needs (delivery approval: canteen staff)",
           body=DinerIn, response=DinerOut, errors=(404, 409))
async def put_diner(req: ApiRequest) -> DinerOut:
    """Only what is given changes; the kitchen's count shows it from the next cut-off."""
    body: DinerIn = req.body
    actor, person = await req.acting_for(body.for_resident_id, may=may_read_diner)
    await booking_ops.set_diner(resident_id=person.id, by_id=actor.id, now=req.now,
                                diet=list(body.diet) if body.diet is not None else None, allergies=body.allergies,
                                delivery_approved=body.delivery_approved)
    return await _diner_out(person)


# ---------------------------------------------------------------------------- the counter and the kitchen


@api.route("POST", "/canteen/serve", summary="Mark a meal served at the counter (canteen staff)", body=ServeIn,
           response=BookingOut, errors=(404, 409))
async def post_serve(req: ApiRequest) -> BookingOut:
    """By the code of the diner's QR or the booking picked by name; today's meals of the caller's
    canteen only (404 for anyone else's). Served already: 409 saying when."""
    actor = await req.bound_actor()
    body: ServeIn = req.body
    served = await booking_ops.serve(code=body.code, booking_id=body.booking_id, by_id=actor.id, now=req.now)
    return await _booking_out(served)


@api.route("GET", "/canteen/menus/{menu_id}/bookings", summary="A meal's diners by name, for the counter (its "
           "staff)", response=CounterList, errors=(409,))
async def get_menu_bookings(req: ApiRequest) -> CounterList:
    """Everyone who holds a seat, by name, with whether they were served."""
    _, menu = await _staff_menu(req)
    rows = await booking_ops.menu_bookings(menu.id)
    names = dict(await Resident.filter(id__in=[b.resident_id for b in rows]).values_list("id", "name"))
    return CounterList(menu=_menu_out(menu), items=[CounterBooking(
        id=b.id, resident_id=b.resident_id, name=str(names.get(b.resident_id, "")), mode=b.mode, status=b.status,
        status_label=BOOKING_LABELS.get(b.status, b.status), rule_label=b.rule_label, served_at=_iso(b.served_at),
    ) for b in rows])


@api.route("GET", "/canteen/menus/{menu_id}/kitchen", summary="The kitchen's count of a meal (its staff)",
           response=KitchenOut, errors=(409,))
async def get_kitchen(req: ApiRequest) -> KitchenOut:
    """Portions dine-in and delivery, dietary needs, and who needs what (from the diners' notes)."""
    _, menu = await _staff_menu(req)
    count = await booking_ops.kitchen_count(menu.id)
    return KitchenOut(menu=_menu_out(menu), total=count.total, dine_in=count.dine_in, delivery=count.delivery,
                      diets=dict(count.diets),
                      notes=[KitchenNote(name=n.name, address=n.address, mode=n.mode, needs=n.needs)
                             for n in sheet_notes(count)],
                      text=booking_ops.kitchen_text(count))


@api.route("GET", "/canteen/menus/{menu_id}/kitchen-sheet", summary="The kitchen's count as a printable sheet "
           "(PDF or spreadsheet)", query=SheetQuery, produces="application/*", errors=(409,))
async def get_kitchen_sheet(req: ApiRequest) -> FileBody:
    """The count, the dishes and who needs what: a PDF to print (application/pdf), or with
    format=xlsx a spreadsheet."""
    q: SheetQuery = req.query
    _, menu = await _staff_menu(req)
    count = await booking_ops.kitchen_count(menu.id)
    name = f"kitchen-{menu.canteen_id}-{menu.day:%Y%m%d}-{menu.meal}"
    if q.format == "xlsx":
        return FileBody(kitchen_xlsx(count), name + ".xlsx", content_type=XLSX)
    return FileBody(kitchen_pdf(count, req.services.engine.tz, req.now), name + ".pdf",
                    content_type=PDF)


# ---------------------------------------------------------------------------- figures and price rules


def _meal_figures(line: Any) -> MealFigures:
    return MealFigures(day=line.day.isoformat() if line.day else None, meal=line.meal or None, rule=line.rule,
                       rule_label=line.rule_label, booked=line.booked, served=line.served, missed=line.missed,
                       cancelled=line.cancelled, waiting=line.waiting, lapsed=line.lapsed, paid_fen=line.paid_fen,
                       menu_value_fen=line.menu_value_fen)


@api.route("GET", "/canteen/canteens/{canteen_id}/figures", summary="A canteen's figures (its staff)",
           query=FiguresQuery, response=FiguresOut, produces=XLSX, errors=(409,))
async def get_figures(req: ApiRequest) -> FiguresOut | FileBody:
    """For the days from–to (default: this month up to today, at most a year): meals booked, served
    and missed per day, meal and rule; subsidy per funder and month; top-ups and refunds; each
    diner's wallet at the end. format=xlsx: a spreadsheet."""
    q: FiguresQuery = req.query
    _, canteen = await _canteen(req, staff=True)
    today = local_today(req.now)
    last = date.fromisoformat(q.to) if q.to else today
    first = date.fromisoformat(q.from_) if q.from_ else min(today.replace(day=1), last)
    if last < first:
        raise invalid("query.to", "must not be before from")
    figs = await canteen_figures(canteen.id, first, last, req.services.engine.tz)
    if q.format == "xlsx":
        return FileBody(figures_xlsx(figs), f"canteen-{canteen.id}-{first:%Y%m%d}-{last:%Y%m%d}.xlsx")
    return FiguresOut(
        canteen_id=canteen.id, name=canteen.name, first_day=first.isoformat(), last_day=last.isoformat(),
        total=_meal_figures(figs.total), by_rule=[_meal_figures(r) for r in figs.by_rule],
        meals=[_meal_figures(r) for r in figs.lines],
        subsidy=[SubsidyOut(month=f"{m.month:%Y-%m}", gov_fen=m.gov_fen, ent_fen=m.ent_fen) for m in figs.subsidy],
        topups=figs.topups, topup_fen=figs.topup_fen, refunds=figs.refunds, refund_fen=figs.refund_fen,
        wallets=[WalletFigure(resident_id=w.resident_id, name=w.name, available_fen=w.available_fen,
                              held_fen=w.held_fen, balance_fen=w.balance_fen) for w in figs.wallets],
        wallet_fen=figs.wallet_fen)


def _rule_row(row: PriceRule) -> RuleRow:
    return RuleRow(id=row.id, kind=row.kind, params=row.params, active=row.active,
                   effective_from=row.effective_from.isoformat(), reason=row.reason,
                   created_at=row.created_at.isoformat())


async def _rules_out(canteen: Canteen, now: datetime) -> RulesOut:
    today = local_today(now)
    in_force = await rules_on(canteen.id, today)
    return RulesOut(canteen_id=canteen.id, day=today.isoformat(),
                    in_force=[RuleOut(kind=k, label=RULE_LABELS.get(k, k), params=p) for k, p in in_force.items()],
                    history=[_rule_row(r) for r in await rule_history(canteen.id)])


@api.route("GET", "/canteen/canteens/{canteen_id}/price-rules", summary="A canteen's price rules: today's and every "
           "change", response=RulesOut, errors=(409,))
async def get_rules(req: ApiRequest) -> RulesOut:
    """The rules in force today (the seed's defaults until the canteen changes one) and their history.
    Public: every diner may read what the prices are."""
    _, canteen = await _canteen(req, staff=False)
    return await _rules_out(canteen, req.now)


@api.route("POST", "/canteen/canteens/{canteen_id}/price-rules", summary="Change a price rule from a date on (its "
           "staff)", body=RuleIn, response=RulesOut, status=201, errors=(409,))
async def post_rule(req: ApiRequest) -> RulesOut:
    """From effective_from (today or later) on; bookings already made keep their price. params name
    only what changes (409 with the reason for a value out of range)."""
    actor, canteen = await _canteen(req, staff=True)
    body: RuleIn = req.body
    await set_rule(canteen_id=canteen.id, kind=body.kind, params=body.params,
                   effective_from=date.fromisoformat(body.effective_from), by_id=actor.id, now=req.now,
                   reason=body.reason, active=body.active)
    return await _rules_out(canteen, req.now)
