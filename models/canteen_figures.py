"""幸福食堂 figures and printouts: meals per canteen, day and rule, subsidy per funder and month,
top-ups and wallets, as data, a short chat summary and a spreadsheet; and the kitchen's printable
sheet of one menu (xlsx and PDF).

Everything is read from the bookings, the top-ups and the one ledger; nothing keeps a second count.

Definitions, for a canteen and the days ``first`` to ``last`` (community time):

- booked (订餐): bookings of the canteen's menus of those days that hold a paid seat, i.e. booked,
  charged, served or no-show; cancelled and waiting-list bookings are counted apart.
- served (就餐) and missed (未就餐): served bookings and no-shows (counted when the meal ended).
- paid (个人支付) and menu value (菜价): the frozen prices of the booked ones; card meals pay 0.
- subsidy (补贴) per funder (政府 / 企业) and month: the ledger's movements from the canteen's
  GOV_SUBSIDY and ENT_SUBSIDY accounts to its takings, minus movements back (a refunded charged
  meal), by the month the meal was for: a meal's entries (ref ``booking:{id}``) by its menu's day,
  a card's (ref ``card:{id}``) by the card's month, anything else by the entry's own date.
- top-ups (充值) and counter refunds (退款): the counter's records created in those days.
- wallets (钱包): for every diner who topped up or booked at the canteen, the available and held
  fen at the end of ``last`` (from the ledger's entries, so a past period reads as it was).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import openpyxl
from fpdf import FPDF
from fpdf.enums import WrapMode
from fpdf.fonts import FontFace
from tortoise.expressions import Subquery
from tortoise.functions import Sum

from models.canteen import (
    DIET_LABELS,
    MEAL_LABELS,
    MEALS,
    MODE_LABELS,
    Booking,
    BookingStatus,
    MealCard,
    Menu,
    TopUp,
    TopUpKind,
)
from models.canteen_prices import RULE_LABELS, yuan
from models.canteen_wallet import canteen_of, is_canteen_staff
from models.errors import UserFacingError
from models.ledger import Account, AccountKind, Asset, Entry
from models.love_figures import FONT_PATH
from models.places import Canteen
from models.proxies import acts_for
from models.redemption import is_community_staff
from models.residents import Resident
from models.sheets import append as _append
from models.sheets import bold as _bold
from models.sheets import save as _save
from models.sheets import widths as _widths

if TYPE_CHECKING:
    from models.canteen_booking import KitchenCount

KEPT = (BookingStatus.BOOKED, BookingStatus.CHARGED, BookingStatus.SERVED, BookingStatus.NO_SHOW)
WAITING = (BookingStatus.WAITING, BookingStatus.OFFERED)
PERIOD_DAYS_MAX = 366


# ---------------------------------------------------------------------------- who sees what


async def may_read_diner(actor_id: int, resident: Resident) -> bool:
    """The diner, a family proxy acting for them, staff of a canteen they eat at (the one of their
    community, or one they booked or topped up at), or their community's staff."""
    if actor_id == resident.id or await acts_for(actor_id, resident.id):
        return True
    if await is_community_staff(actor_id, resident.community_id):  # type: ignore[attr-defined]
        return True
    canteens: set[int] = set(await TopUp.filter(resident_id=resident.id).distinct().values_list(
        "canteen_id", flat=True))  # type: ignore[arg-type]
    menus = Subquery(Booking.filter(resident_id=resident.id).values("menu_id"))
    canteens.update(await Menu.filter(id__in=menus).distinct().values_list("canteen_id", flat=True))  # type: ignore[arg-type]
    home = await canteen_of(resident.id)
    if home is not None:
        canteens.add(home.id)
    for canteen_id in sorted(canteens):
        if await is_canteen_staff(actor_id, canteen_id):
            return True
    return False


# ---------------------------------------------------------------------------- the figures


def _utc_midnight(day: date, tz: ZoneInfo) -> datetime:
    return datetime.combine(day, time(), tzinfo=tz).astimezone(UTC)


@dataclass
class MealLine:
    """Bookings of one day, meal and price rule (or, for totals, of more)."""

    day: date | None
    meal: str
    rule: str
    rule_label: str
    booked: int = 0
    served: int = 0
    missed: int = 0
    cancelled: int = 0
    waiting: int = 0  # still on the waiting list (or offered a seat)
    lapsed: int = 0  # the waiting list closed, or an offer was declined or ran out
    paid_fen: int = 0
    menu_value_fen: int = 0

    def add(self, other: MealLine) -> None:
        for name in ("booked", "served", "missed", "cancelled", "waiting", "lapsed", "paid_fen", "menu_value_fen"):
            setattr(self, name, getattr(self, name) + getattr(other, name))


@dataclass
class SubsidyMonth:
    month: date  # its first day
    gov_fen: int = 0
    ent_fen: int = 0

    @property
    def total_fen(self) -> int:
        return self.gov_fen + self.ent_fen


@dataclass
class WalletLine:
    resident_id: int
    name: str
    available_fen: int
    held_fen: int

    @property
    def balance_fen(self) -> int:
        return self.available_fen + self.held_fen


@dataclass
class CanteenFigures:
    canteen_id: int
    name: str
    first: date
    last: date
    lines: list[MealLine]  # per day, meal and rule, in that order
    by_rule: list[MealLine]  # per rule over the period
    total: MealLine
    subsidy: list[SubsidyMonth]  # per month of the period, oldest first
    topups: int = 0
    topup_fen: int = 0
    refunds: int = 0
    refund_fen: int = 0
    wallets: list[WalletLine] = field(default_factory=list)

    @property
    def gov_fen(self) -> int:
        return sum(m.gov_fen for m in self.subsidy)

    @property
    def ent_fen(self) -> int:
        return sum(m.ent_fen for m in self.subsidy)

    @property
    def wallet_fen(self) -> int:
        return sum(w.balance_fen for w in self.wallets)

    def label(self) -> str:
        return f"{self.first:%Y-%m-%d} 至 {self.last:%Y-%m-%d}"


def _month(day: date) -> date:
    return day.replace(day=1)


def _months(first: date, last: date) -> list[date]:
    out, month = [], _month(first)
    while month <= last:
        out.append(month)
        month = (month + timedelta(days=32)).replace(day=1)
    return out


def _rule_label(rule: str, frozen: str) -> str:
    return frozen or RULE_LABELS.get(rule, rule)


async def _meal_lines(canteen_id: int, first: date, last: date) -> list[MealLine]:
    menus = {m["id"]: (m["day"], m["meal"]) for m in await Menu.filter(
        canteen_id=canteen_id, day__gte=first, day__lte=last).values("id", "day", "meal")}
    if not menus:
        return []
    order = {meal: i for i, meal in enumerate(MEALS)}
    lines: dict[tuple[date, str, str], MealLine] = {}
    rows = await Booking.filter(menu_id__in=list(menus)).values(
        "menu_id", "status", "rule", "rule_label", "price_fen", "menu_price_fen")
    for row in rows:
        day, meal = menus[row["menu_id"]]
        key = (day, meal, row["rule"])
        line = lines.setdefault(key, MealLine(day, meal, row["rule"], _rule_label(row["rule"], row["rule_label"])))
        status = row["status"]
        if status in KEPT:
            line.booked += 1
            line.paid_fen += row["price_fen"]
            line.menu_value_fen += row["menu_price_fen"]
            line.served += status == BookingStatus.SERVED
            line.missed += status == BookingStatus.NO_SHOW
        elif status == BookingStatus.CANCELLED:
            line.cancelled += 1
        elif status in WAITING:
            line.waiting += 1
        elif status == BookingStatus.LAPSED:
            line.lapsed += 1
    return [lines[k] for k in sorted(lines, key=lambda k: (k[0], order.get(k[1], 9), k[2]))]


async def _subsidy(canteen_id: int, first: date, last: date, tz: ZoneInfo) -> list[SubsidyMonth]:
    months = {m: SubsidyMonth(m) for m in _months(first, last)}
    funders = dict(await Account.filter(
        asset=Asset.FEN, canteen_id=canteen_id, kind__in=[AccountKind.GOV_SUBSIDY, AccountKind.ENT_SUBSIDY],
    ).values_list("id", "kind"))
    takings = await Account.filter(asset=Asset.FEN, canteen_id=canteen_id, kind=AccountKind.CANTEEN).first()
    if not funders or takings is None:
        return list(months.values())
    # a meal's subsidy is booked at its cut-off (the day before for breakfast), a card's on the 1st of
    # the month after: a margin around the period catches both, and the months are sorted out below
    start = _utc_midnight(_month(first) - timedelta(days=3), tz)
    end = _utc_midnight((_month(last) + timedelta(days=32)).replace(day=1) + timedelta(days=40), tz)
    ids = list(funders)
    rows = [
        *(dict(r, sign=1) for r in await Entry.filter(
            from_account_id__in=ids, to_account_id=takings.id, created_at__gte=start, created_at__lt=end,
        ).values("from_account_id", "amount", "ref", "created_at")),
        *(dict(r, sign=-1, from_account_id=r["to_account_id"]) for r in await Entry.filter(
            to_account_id__in=ids, from_account_id=takings.id, created_at__gte=start, created_at__lt=end,
        ).values("to_account_id", "amount", "ref", "created_at")),
    ]
    bookings = {int(r["ref"].split(":", 1)[1]) for r in rows if _ref_id(r["ref"], "booking") is not None}
    cards = {int(r["ref"].split(":", 1)[1]) for r in rows if _ref_id(r["ref"], "card") is not None}
    meal_day = dict(await Booking.filter(id__in=list(bookings)).values_list("id", "menu__day")) if bookings else {}
    card_month = dict(await MealCard.filter(id__in=list(cards)).values_list("id", "month")) if cards else {}
    for row in rows:
        booking_id, card_id = _ref_id(row["ref"], "booking"), _ref_id(row["ref"], "card")
        if booking_id is not None and booking_id in meal_day:
            when: date = meal_day[booking_id]
        elif card_id is not None and card_id in card_month:
            when = card_month[card_id]
        else:
            when = row["created_at"].astimezone(tz).date()
        bucket = months.get(_month(when))
        if bucket is None:
            continue
        amount = row["sign"] * int(row["amount"])
        if funders[row["from_account_id"]] == AccountKind.GOV_SUBSIDY:
            bucket.gov_fen += amount
        else:
            bucket.ent_fen += amount
    return list(months.values())


def _ref_id(ref: str, kind: str) -> int | None:
    head, _, tail = ref.partition(":")
    return int(tail) if head == kind and tail.isdigit() else None


async def _wallets(canteen_id: int, end: datetime) -> list[WalletLine]:
    menus = Subquery(Menu.filter(canteen_id=canteen_id).values("id"))
    found = [*await TopUp.filter(canteen_id=canteen_id).distinct().values_list("resident_id", flat=True),
             *await Booking.filter(menu_id__in=menus).distinct().values_list("resident_id", flat=True)]
    diners = {int(rid) for rid in found}  # type: ignore[call-overload]
    if not diners:
        return []
    accounts = {a["id"]: (a["resident_id"], a["kind"]) for a in await Account.filter(
        asset=Asset.FEN, kind__in=[AccountKind.WALLET, AccountKind.HOLD], resident_id__in=list(diners),
    ).values("id", "resident_id", "kind")}
    money: dict[tuple[int, str], int] = {}
    if accounts:
        ids = list(accounts)
        for column, sign in (("to_account_id", 1), ("from_account_id", -1)):
            for row in await Entry.filter(**{f"{column}__in": ids}, created_at__lt=end).annotate(
                    s=Sum("amount")).group_by(column).values(column, "s"):
                owner = accounts[row[column]]
                money[owner] = money.get(owner, 0) + sign * int(row["s"] or 0)
    names = dict(await Resident.filter(id__in=list(diners)).values_list("id", "name"))
    lines = [WalletLine(rid, str(names.get(rid, "")), money.get((rid, AccountKind.WALLET), 0),
                        money.get((rid, AccountKind.HOLD), 0)) for rid in diners]
    return sorted(lines, key=lambda w: (-w.balance_fen, w.resident_id))


async def canteen_figures(canteen_id: int, first: date, last: date, tz: ZoneInfo) -> CanteenFigures:
    """The canteen's figures for the days ``first`` to ``last`` (see the module docstring)."""
    if last < first:
        raise UserFacingError("结束日期不能早于开始日期。")
    if (last - first).days + 1 > PERIOD_DAYS_MAX:
        raise UserFacingError(f"一次最多统计{PERIOD_DAYS_MAX}天，请缩短时间范围。")
    canteen = await Canteen.get(id=canteen_id)
    lines = await _meal_lines(canteen_id, first, last)
    rules: dict[str, MealLine] = {}
    total = MealLine(None, "", "", "合计")
    for line in lines:
        rules.setdefault(line.rule, MealLine(None, "", line.rule, line.rule_label)).add(line)
        total.add(line)
    start, end = _utc_midnight(first, tz), _utc_midnight(last + timedelta(days=1), tz)
    figs = CanteenFigures(canteen.id, canteen.name, first, last, lines,
                          sorted(rules.values(), key=lambda r: (-r.booked, r.rule)), total,
                          await _subsidy(canteen_id, first, last, tz))
    for row in await TopUp.filter(canteen_id=canteen_id, created_at__gte=start, created_at__lt=end).values(
            "kind", "amount_fen"):
        if row["kind"] == TopUpKind.REFUND:
            figs.refunds += 1
            figs.refund_fen += row["amount_fen"]
        else:
            figs.topups += 1
            figs.topup_fen += row["amount_fen"]
    figs.wallets = await _wallets(canteen_id, end)
    return figs


def figures_text(figs: CanteenFigures) -> str:
    """The figures in a few lines of chat (食堂数据)."""
    t = figs.total
    out = [f"{figs.name} {figs.label()}",
           f"订餐{t.booked}份，已就餐{t.served}份，未就餐{t.missed}份，取消{t.cancelled}份。",
           f"个人支付{yuan(t.paid_fen)}，菜价合计{yuan(t.menu_value_fen)}。"]
    if figs.by_rule:
        out.append("按价格规则：" + "；".join(f"{r.rule_label}{r.booked}份" for r in figs.by_rule) + "。")
    out.append(f"补贴：政府{yuan(figs.gov_fen)}，企业{yuan(figs.ent_fen)}。")
    out.append(f"充值{figs.topups}笔共{yuan(figs.topup_fen)}，退款{figs.refunds}笔共{yuan(figs.refund_fen)}；"
               f"{len(figs.wallets)}位用餐居民钱包合计{yuan(figs.wallet_fen)}。")
    return "\n".join(out)


# ---------------------------------------------------------------------------- spreadsheets


MEAL_HEADERS = ("订餐", "已就餐", "未就餐", "取消", "候补中", "未订上", "个人支付（分）", "菜价合计（分）")


def _counts(line: MealLine) -> list[int]:
    return [line.booked, line.served, line.missed, line.cancelled, line.waiting, line.lapsed, line.paid_fen,
            line.menu_value_fen]


def figures_xlsx(figs: CanteenFigures) -> bytes:
    """Sheets 用餐 (a row per day, meal and rule, then per rule and the total), 补贴 (per month and
    funder), 充值 (the counter's totals) and 钱包 (each diner's wallet at the period's end). Amounts in fen."""
    book = openpyxl.Workbook()
    ws = book.active
    ws.title = "用餐"
    _append(ws, [f"{figs.name} 用餐数据：{figs.label()}"])
    _append(ws, ["日期", "餐次", "价格规则", *MEAL_HEADERS])
    for line in figs.lines:
        _append(ws, [line.day.isoformat() if line.day else "", MEAL_LABELS.get(line.meal, line.meal),
                     line.rule_label, *_counts(line)])
    for line in figs.by_rule:
        _append(ws, ["按规则合计", "", line.rule_label, *_counts(line)])
    _append(ws, ["合计", "", "", *_counts(figs.total)])
    _bold(ws, 1, 2, ws.max_row)
    _widths(ws, 12, 8, 16, 8, 8, 8, 8, 8, 8, 14, 14)

    sub = book.create_sheet("补贴")
    _append(sub, ["月份", "政府补贴（分）", "企业补贴（分）", "合计（分）"])
    for month in figs.subsidy:
        _append(sub, [f"{month.month:%Y-%m}", month.gov_fen, month.ent_fen, month.total_fen])
    _append(sub, ["合计", figs.gov_fen, figs.ent_fen, figs.gov_fen + figs.ent_fen])
    _bold(sub, 1, sub.max_row)
    _widths(sub, 10, 16, 16, 14)

    tops = book.create_sheet("充值")
    _append(tops, ["项目", "笔数", "金额（分）"])
    _append(tops, ["充值", figs.topups, figs.topup_fen])
    _append(tops, ["柜台退款", figs.refunds, figs.refund_fen])
    _bold(tops, 1)
    _widths(tops, 12, 8, 14)

    wallets = book.create_sheet("钱包")
    _append(wallets, [f"期末（{figs.last:%Y-%m-%d}）钱包余额"])
    _append(wallets, ["居民", "可用（分）", "已冻结（分）", "余额（分）"])
    for w in figs.wallets:
        _append(wallets, [w.name, w.available_fen, w.held_fen, w.balance_fen])
    _append(wallets, ["合计", sum(w.available_fen for w in figs.wallets), sum(w.held_fen for w in figs.wallets),
                      figs.wallet_fen])
    _bold(wallets, 1, 2, wallets.max_row)
    _widths(wallets, 16, 12, 12, 12)
    return _save(book)


# ---------------------------------------------------------------------------- the kitchen's sheet

SHEET_TITLE = "幸福食堂备餐单"


@dataclass
class SheetNote:
    name: str
    address: str
    mode: str  # 堂食 / 送餐
    needs: str


# what the kitchen count's diets are keyed by: the diet codes, and diners with an allergy
NEED_LABELS = DIET_LABELS | {"allergy": "过敏"}


def _needs(value: Any) -> str:
    if isinstance(value, (list, tuple, set)):
        return "、".join(str(v) for v in value if v)
    return str(value or "")


def sheet_notes(count: KitchenCount) -> list[SheetNote]:
    """The count's notes (name, address, mode, needs), as printed."""
    return [SheetNote(str(name), str(address or ""), MODE_LABELS.get(mode, str(mode)), _needs(needs))
            for name, address, mode, needs in count.notes]


def _sheet_heading(count: KitchenCount) -> list[str]:
    menu = count.menu
    dishes = "、".join(
        d.get("name", "") + (f"（{'、'.join(DIET_LABELS.get(m, m) for m in d.get('marks', []))}）"
                             if d.get("marks") else "") for d in menu.dishes)
    diets = "，".join(f"{NEED_LABELS.get(k, k)}{n}{'人' if k == 'allergy' else '份'}"
                     for k, n in count.diets.items() if n) or "无"
    return [f"{count.canteen_name}　{menu.day:%Y-%m-%d} {MEAL_LABELS.get(menu.meal, menu.meal)}",
            f"菜品：{dishes or '（未填写）'}",
            f"合计{count.total}份：堂食{count.dine_in}份，送餐{count.delivery}份",
            f"饮食需求：{diets}"]


def kitchen_xlsx(count: KitchenCount) -> bytes:
    """The kitchen's count of one menu as one sheet: the heading lines, then a row per diner with a
    need or a delivery (姓名 地址 方式 需求)."""
    book = openpyxl.Workbook()
    ws = book.active
    ws.title = "备餐单"
    _append(ws, [SHEET_TITLE])
    for line in _sheet_heading(count):
        _append(ws, [line])
    _append(ws, ["姓名", "地址", "方式", "饮食需求"])
    header = ws.max_row
    for note in sheet_notes(count):
        _append(ws, [note.name, note.address, note.mode, note.needs])
    _bold(ws, 1, header)
    _widths(ws, 12, 24, 8, 40)
    return _save(book)


def kitchen_pdf(count: KitchenCount, tz: ZoneInfo, printed_at: datetime) -> bytes:
    """The kitchen's count of one menu on A4, with the Noto Sans SC glyphs it uses embedded."""
    pdf = FPDF(format="A4")
    menu = count.menu
    pdf.set_title(f"{SHEET_TITLE} {count.canteen_name} {menu.day:%Y-%m-%d} {MEAL_LABELS.get(menu.meal, menu.meal)}")
    pdf.set_creator("Linli")
    pdf.add_font("sans", fname=str(FONT_PATH))
    pdf.set_margins(15, 15, 15)
    pdf.set_auto_page_break(True, margin=18)
    printed = printed_at.astimezone(tz)

    def footer() -> None:
        pdf.set_y(-13)
        pdf.set_font("sans", size=8)
        pdf.cell(0, 5, f"邻里 · 幸福食堂　打印时间 {printed:%Y-%m-%d %H:%M}　第 {pdf.page_no()} 页", align="C")

    pdf.footer = footer  # type: ignore[method-assign]
    pdf.add_page()
    pdf.set_font("sans", size=18)
    pdf.cell(0, 12, SHEET_TITLE, align="C", new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("sans", size=11)
    for text in _sheet_heading(count):
        pdf.multi_cell(0, 7, text, new_x="LMARGIN", new_y="NEXT", wrapmode=WrapMode.CHAR)
    pdf.ln(3)
    notes = sheet_notes(count)
    if notes:
        pdf.set_font("sans", size=10)
        plain = FontFace(emphasis="NONE", fill_color=(235, 235, 235))
        with pdf.table(col_widths=(25, 55, 20, 80), text_align=("LEFT", "LEFT", "LEFT", "LEFT"),
                       headings_style=plain, line_height=6, wrapmode="CHAR") as table:
            table.row(["姓名", "地址", "方式", "饮食需求"])
            for note in notes:
                table.row([note.name, note.address, note.mode, note.needs])
    else:
        pdf.cell(0, 7, "没有需要特别准备的餐食。", new_x="LMARGIN", new_y="NEXT")
    return bytes(pdf.output())
