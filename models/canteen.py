"""The elder canteen (幸福食堂): settings, menus, bookings, wallets, cards and the kitchen's counts.

- A canteen serves meals (breakfast, lunch, dinner), each with a capacity, a booking cut-off and
  its serving hours (``MealSlot``), and is shut on its closed weekdays and ``ClosedDay`` dates.
- Canteen staff publish a ``Menu`` per day and meal up to a week ahead: dishes with dietary marks,
  the menu price in fen, the capacity. The menu row is also the sitting: ``booked`` counts the
  seats taken and is changed by a conditional UPDATE only, so capacity holds under concurrency.
- A ``Booking`` freezes its price, rule and subsidy split (``models.canteen_prices.quote``). Money
  moves through the ledger in fen: held (wallet → the diner's hold account) at booking, taken
  (hold → the canteen) at the cut-off, released (hold → wallet) on a cancel before it. The gap
  between the menu price and the price is booked as subsidy from the government's and the
  enterprise's accounts of the canteen at the cut-off.
- A full sitting puts the diner on its waiting list; a freed seat is offered to the first on the
  list for 15 minutes; the list closes at the cut-off.
- A ``StandingOrder`` books matching meals when each menu is published.
- A ``MealCard`` (月卡) covers three meals a day for a calendar month; its subsidy is settled at
  the month's end.
- A ``TopUp`` records money staff took in (or paid back) at the counter.
- ``Diner`` holds what the kitchen must know (soft food, low salt, low sugar, allergies) and
  whether staff approved delivery for the resident.
"""

from __future__ import annotations

from tortoise import fields
from tortoise.models import Model


class Meal:
    BREAKFAST = "breakfast"
    LUNCH = "lunch"
    DINNER = "dinner"


MEALS = (Meal.BREAKFAST, Meal.LUNCH, Meal.DINNER)
MEAL_LABELS = {Meal.BREAKFAST: "早餐", Meal.LUNCH: "午餐", Meal.DINNER: "晚餐"}
MEAL_CODES = {label: code for code, label in MEAL_LABELS.items()}

# The seed canteen's defaults, per meal: capacity, cut-off (same day, local), serving from and until
DEFAULT_SLOTS = {
    Meal.BREAKFAST: (60, "17:00", "07:00", "08:30"),  # breakfast is booked by 17:00 the day before
    Meal.LUNCH: (120, "09:30", "11:00", "12:30"),
    Meal.DINNER: (80, "14:00", "17:00", "18:30"),
}
# a breakfast cut-off is on the day before (the kitchen buys in the evening); the others the same day
CUTOFF_DAY_BEFORE = frozenset({Meal.BREAKFAST})


class Mode:
    DINE_IN = "dine_in"
    DELIVERY = "delivery"


MODE_LABELS = {Mode.DINE_IN: "堂食", Mode.DELIVERY: "送餐"}


class Diet:
    SOFT = "soft"
    LOW_SALT = "low_salt"
    LOW_SUGAR = "low_sugar"


DIET_LABELS = {Diet.SOFT: "软食", Diet.LOW_SALT: "低盐", Diet.LOW_SUGAR: "低糖"}
DIET_CODES = {label: code for code, label in DIET_LABELS.items()}


class MenuState:
    OPEN = "open"  # bookable until the cut-off
    CLOSED = "closed"  # the cut-off ran: money taken, the waiting list closed, the kitchen told
    DONE = "done"  # the meal is over: no-shows counted
    CANCELLED = "cancelled"  # withdrawn by staff before the cut-off (every booking refunded)


class BookingStatus:
    WAITING = "waiting"  # on the waiting list of a full sitting
    OFFERED = "offered"  # a freed seat is held for this diner until offer_until
    BOOKED = "booked"  # seat taken, money held
    CHARGED = "charged"  # the cut-off took the money
    SERVED = "served"  # marked at the counter (or delivered)
    NO_SHOW = "no_show"  # the meal ended without it being served
    CANCELLED = "cancelled"
    LAPSED = "lapsed"  # the waiting list closed, or an offer was declined or ran out


BOOKING_LABELS = {
    BookingStatus.WAITING: "候补中", BookingStatus.OFFERED: "有空位待确认", BookingStatus.BOOKED: "已预订",
    BookingStatus.CHARGED: "已扣款", BookingStatus.SERVED: "已就餐", BookingStatus.NO_SHOW: "未就餐",
    BookingStatus.CANCELLED: "已取消", BookingStatus.LAPSED: "未订上",
}
# statuses that hold a seat (counted in Menu.booked)
SEATED = (BookingStatus.OFFERED, BookingStatus.BOOKED, BookingStatus.CHARGED, BookingStatus.SERVED,
          BookingStatus.NO_SHOW)


class TopUpKind:
    TOPUP = "topup"
    REFUND = "refund"  # money paid back to the diner at the counter


class PayMethod:
    CASH = "cash"
    WECHAT = "wechat"
    ALIPAY = "alipay"
    BANK = "bank"
    OTHER = "other"


PAY_METHOD_LABELS = {PayMethod.CASH: "现金", PayMethod.WECHAT: "微信", PayMethod.ALIPAY: "支付宝",
                     PayMethod.BANK: "银行卡", PayMethod.OTHER: "其他"}


class CardStatus:
    ACTIVE = "active"
    REFUNDED = "refunded"


DISH_NAME_MAX = 20
DISHES_MAX = 12
MENU_DAYS_AHEAD = 7
PRICE_MAX_FEN = 100_00  # 100 yuan a meal
TOPUP_MAX_FEN = 5000_00
CAPACITY_MAX = 2000
RECEIPT_MAX = 32
OFFER_MINUTES = 15


class CanteenSettings(Model):
    """The settings of a canteen that its staff edit (one row per canteen, made with defaults)."""

    _no_comments = True  # see models/__init__.py

    canteen: fields.OneToOneRelation = fields.OneToOneField(
        "linli.Canteen", related_name="settings", on_delete=fields.CASCADE, primary_key=True)
    no_show_pays = fields.BooleanField(default=True)  # a no-show still pays for the meal
    gov_share_pct = fields.IntField(default=100)  # the government's share of the subsidy; the rest the enterprise's
    closed_weekdays = fields.CharField(max_length=16, default="")  # ISO weekdays, e.g. "6,7"
    updated_at = fields.DatetimeField(null=True)
    updated_by: fields.ForeignKeyNullableRelation = fields.ForeignKeyField(
        "linli.Resident", related_name=False, null=True, on_delete=fields.SET_NULL)

    canteen_id: int

    class Meta:
        table = "canteen_settings"


class MealSlot(Model):
    """One meal a canteen serves: its capacity, booking cut-off and serving hours (local HH:MM)."""

    _no_comments = True  # see models/__init__.py

    id = fields.IntField(primary_key=True)
    canteen: fields.ForeignKeyRelation = fields.ForeignKeyField(
        "linli.Canteen", related_name=False, on_delete=fields.CASCADE)
    meal = fields.CharField(max_length=12)
    capacity = fields.IntField()
    cutoff = fields.CharField(max_length=5)  # local time; the day before for breakfast
    serve_from = fields.CharField(max_length=5)
    serve_until = fields.CharField(max_length=5)
    active = fields.BooleanField(default=True)

    canteen_id: int

    class Meta:
        table = "canteen_meal_slot"
        unique_together = (("canteen_id", "meal"),)


class ClosedDay(Model):
    """A date the canteen is shut (a holiday, a repair), besides its closed weekdays."""

    _no_comments = True  # see models/__init__.py

    id = fields.IntField(primary_key=True)
    canteen: fields.ForeignKeyRelation = fields.ForeignKeyField(
        "linli.Canteen", related_name=False, on_delete=fields.CASCADE)
    day = fields.DateField()
    reason = fields.CharField(max_length=60, default="")
    created_by: fields.ForeignKeyNullableRelation = fields.ForeignKeyField(
        "linli.Resident", related_name=False, null=True, on_delete=fields.SET_NULL)
    created_at = fields.DatetimeField()

    canteen_id: int

    class Meta:
        table = "canteen_closed_day"
        unique_together = (("canteen_id", "day"),)


class Menu(Model):
    """One meal of one day at a canteen: its dishes, menu price and seats (the sitting)."""

    _no_comments = True  # see models/__init__.py

    id = fields.IntField(primary_key=True)
    canteen: fields.ForeignKeyRelation = fields.ForeignKeyField(
        "linli.Canteen", related_name=False, on_delete=fields.RESTRICT)
    day = fields.DateField()
    meal = fields.CharField(max_length=12)
    dishes: list[dict] = fields.JSONField(default=list)  # [{"name": "清蒸鱼", "marks": ["soft", "low_salt"]}]
    price_fen = fields.IntField()  # the menu price
    capacity = fields.IntField()
    booked = fields.IntField(default=0)  # seats taken (SEATED bookings); changed by conditional UPDATEs only
    state = fields.CharField(max_length=12, default=MenuState.OPEN)
    cutoff_at = fields.DatetimeField()  # UTC, from the slot's cut-off
    serve_from_at = fields.DatetimeField()
    serve_until_at = fields.DatetimeField()
    published_by: fields.ForeignKeyNullableRelation = fields.ForeignKeyField(
        "linli.Resident", related_name=False, null=True, on_delete=fields.SET_NULL)
    published_at = fields.DatetimeField()
    updated_at = fields.DatetimeField(null=True)
    closed_at = fields.DatetimeField(null=True)

    canteen_id: int
    published_by_id: int | None

    class Meta:
        table = "canteen_menu"
        unique_together = (("canteen_id", "day", "meal"),)
        indexes = (("state", "cutoff_at"), ("day", "meal"))


class StandingOrder(Model):
    """常订: book these meals on these weekdays whenever a menu is published."""

    _no_comments = True  # see models/__init__.py

    id = fields.IntField(primary_key=True)
    canteen: fields.ForeignKeyRelation = fields.ForeignKeyField(
        "linli.Canteen", related_name=False, on_delete=fields.CASCADE)
    resident: fields.ForeignKeyRelation = fields.ForeignKeyField(
        "linli.Resident", related_name=False, on_delete=fields.CASCADE)
    meals = fields.CharField(max_length=40)  # meal codes, comma-separated
    weekdays = fields.CharField(max_length=16)  # ISO weekdays, comma-separated, e.g. "1,2,3,4,5"
    mode = fields.CharField(max_length=12, default=Mode.DINE_IN)
    created_by: fields.ForeignKeyNullableRelation = fields.ForeignKeyField(
        "linli.Resident", related_name=False, null=True, on_delete=fields.SET_NULL)
    created_at = fields.DatetimeField()
    ended_at = fields.DatetimeField(null=True)

    canteen_id: int
    resident_id: int

    class Meta:
        table = "canteen_standing_order"
        indexes = (("canteen_id", "ended_at"),)


class MealCard(Model):
    """月卡: three meals a day at one canteen for one calendar month, bought from the wallet."""

    _no_comments = True  # see models/__init__.py

    id = fields.IntField(primary_key=True)
    canteen: fields.ForeignKeyRelation = fields.ForeignKeyField(
        "linli.Canteen", related_name=False, on_delete=fields.RESTRICT)
    resident: fields.ForeignKeyRelation = fields.ForeignKeyField(
        "linli.Resident", related_name=False, on_delete=fields.RESTRICT)
    month = fields.DateField()  # the first day of the month
    price_fen = fields.IntField()
    status = fields.CharField(max_length=12, default=CardStatus.ACTIVE)
    bought_by: fields.ForeignKeyNullableRelation = fields.ForeignKeyField(
        "linli.Resident", related_name=False, null=True, on_delete=fields.SET_NULL)
    bought_at = fields.DatetimeField()
    settled_at = fields.DatetimeField(null=True)  # the month-end subsidy was booked
    meals_value_fen = fields.BigIntField(default=0)  # menu value of the meals taken, at settlement
    subsidy_fen = fields.BigIntField(default=0)

    canteen_id: int
    resident_id: int

    class Meta:
        table = "canteen_meal_card"
        unique_together = (("canteen_id", "resident_id", "month"),)


class Booking(Model):
    """The seat of one diner at one menu (one row per diner and menu, a re-booking revives it)."""

    _no_comments = True  # see models/__init__.py

    id = fields.IntField(primary_key=True)
    menu: fields.ForeignKeyRelation[Menu] = fields.ForeignKeyField(
        "linli.Menu", related_name="bookings", on_delete=fields.RESTRICT)
    resident: fields.ForeignKeyRelation = fields.ForeignKeyField(
        "linli.Resident", related_name=False, on_delete=fields.RESTRICT)  # the diner
    booked_by: fields.ForeignKeyNullableRelation = fields.ForeignKeyField(
        "linli.Resident", related_name=False, null=True, on_delete=fields.SET_NULL)  # the diner, a proxy or staff
    mode = fields.CharField(max_length=12, default=Mode.DINE_IN)
    status = fields.CharField(max_length=12)
    # frozen at booking: what the menu said, what the diner pays, by which rule, and the subsidy split
    menu_price_fen = fields.IntField()
    price_fen = fields.IntField()
    rule = fields.CharField(max_length=16)
    rule_label = fields.CharField(max_length=40)
    card: fields.ForeignKeyNullableRelation[MealCard] = fields.ForeignKeyField(
        "linli.MealCard", related_name=False, null=True, on_delete=fields.RESTRICT)
    gov_fen = fields.IntField(default=0)
    ent_fen = fields.IntField(default=0)
    code = fields.CharField(max_length=12, unique=True)  # shown as a QR code at the counter
    round = fields.IntField(default=0)  # bumped on each re-booking, so each hold has its own ledger key
    standing: fields.ForeignKeyNullableRelation[StandingOrder] = fields.ForeignKeyField(
        "linli.StandingOrder", related_name=False, null=True, on_delete=fields.SET_NULL)
    waited_at = fields.DatetimeField(null=True)  # joined the waiting list (its order)
    offer_until = fields.DatetimeField(null=True)
    created_at = fields.DatetimeField()
    updated_at = fields.DatetimeField()
    cancelled_at = fields.DatetimeField(null=True)
    cancelled_by: fields.ForeignKeyNullableRelation = fields.ForeignKeyField(
        "linli.Resident", related_name=False, null=True, on_delete=fields.SET_NULL)
    cancel_reason = fields.CharField(max_length=100, default="")
    served_at = fields.DatetimeField(null=True)
    served_by: fields.ForeignKeyNullableRelation = fields.ForeignKeyField(
        "linli.Resident", related_name=False, null=True, on_delete=fields.SET_NULL)

    menu_id: int
    resident_id: int
    booked_by_id: int | None
    card_id: int | None
    standing_id: int | None

    class Meta:
        table = "canteen_booking"
        unique_together = (("menu_id", "resident_id"),)
        indexes = (("menu_id", "status", "waited_at"), ("resident_id", "status"))


class TopUp(Model):
    """Money taken in (or paid back) at the counter of a canteen, for the wallet of a diner."""

    _no_comments = True  # see models/__init__.py

    id = fields.IntField(primary_key=True)
    canteen: fields.ForeignKeyRelation = fields.ForeignKeyField(
        "linli.Canteen", related_name=False, on_delete=fields.RESTRICT)
    resident: fields.ForeignKeyRelation = fields.ForeignKeyField(
        "linli.Resident", related_name=False, on_delete=fields.RESTRICT)
    kind = fields.CharField(max_length=8, default=TopUpKind.TOPUP)
    amount_fen = fields.IntField()
    method = fields.CharField(max_length=8)
    receipt_no = fields.CharField(max_length=RECEIPT_MAX)
    by: fields.ForeignKeyNullableRelation = fields.ForeignKeyField(
        "linli.Resident", related_name=False, null=True, on_delete=fields.SET_NULL)
    entry_id = fields.BigIntField()  # the ledger entry
    created_at = fields.DatetimeField()

    canteen_id: int
    resident_id: int

    class Meta:
        table = "canteen_topup"
        unique_together = (("canteen_id", "kind", "receipt_no"),)
        indexes = (("resident_id", "created_at"),)


class Diner(Model):
    """What the kitchen and the riders must know about a diner, and whether delivery is approved."""

    _no_comments = True  # see models/__init__.py

    resident: fields.OneToOneRelation = fields.OneToOneField(
        "linli.Resident", related_name=False, on_delete=fields.CASCADE, primary_key=True)
    diet = fields.CharField(max_length=40, default="")  # Diet codes, comma-separated
    allergies = fields.CharField(max_length=60, default="")
    delivery_approved = fields.BooleanField(default=False)  # by staff, besides Resident.mobility
    updated_by: fields.ForeignKeyNullableRelation = fields.ForeignKeyField(
        "linli.Resident", related_name=False, null=True, on_delete=fields.SET_NULL)
    updated_at = fields.DatetimeField()

    resident_id: int

    class Meta:
        table = "canteen_diner"


class PriceRule(Model):
    """The parameters of one price rule kind at one canteen, in force from a date until the next row."""

    _no_comments = True  # see models/__init__.py

    id = fields.IntField(primary_key=True)
    canteen: fields.ForeignKeyRelation = fields.ForeignKeyField(
        "linli.Canteen", related_name=False, on_delete=fields.CASCADE)
    kind = fields.CharField(max_length=16)  # a rule kind of models.canteen_prices
    params: dict = fields.JSONField(default=dict)
    active = fields.BooleanField(default=True)  # False: the rule does not apply from this date
    effective_from = fields.DateField()
    reason = fields.CharField(max_length=100, default="")
    created_by: fields.ForeignKeyNullableRelation = fields.ForeignKeyField(
        "linli.Resident", related_name=False, null=True, on_delete=fields.SET_NULL)
    created_at = fields.DatetimeField()

    canteen_id: int

    class Meta:
        table = "canteen_price_rule"
        unique_together = (("canteen_id", "kind", "effective_from"),)
