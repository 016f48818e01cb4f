"""服务台账 and the errand figures: per household, per item and period.

Everything is read from the errands themselves (models/errands.py); nothing keeps a second count.
A period is the days ``start`` to ``end`` (both counted, community time), and an errand belongs to
the period it was asked in (``created_at``).

- The ledger (服务台账) has a row per errand, grouped by household (building, unit, room of the
  resident it was for, as they live now): the item, the dates, the state, the department's result,
  the red proxy (masked), whether the result came to the door, and the rating.
- The figures, per item (by the name it was asked under) and in all:
  - requests (申请): errands asked in the period, cancelled ones included (``cancelled`` says how many);
  - first response (首次响应): minutes from asking to a steward taking it. The median is over the
    errands taken; the share within the limit is over the errands whose response was due: those
    taken, and those not taken by the time their limit (the item's, as it was when asked) passed —
    by ``now`` when given, else only those closed or cancelled after their limit;
  - total time (办结用时): hours from asking to the result reaching the resident (``delivered_at``),
    the median over the delivered errands;
  - doorstep share (上门办结率): delivered errands whose result a red proxy brought to the door;
  - satisfaction (满意度): errands rated, the mean rating ×10 as an integer (46 = 4.6) and the share
    rated 4 or 5.
  Shares are whole percents (rounded half up) beside the counts they come from; None when nothing
  was counted.

Community staff see their community, sub-district staff every community of their sub-district;
anybody else is refused (``Forbidden``).
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import openpyxl

from models.cases import CONTEXT
from models.errands import PROGRESS_LABELS, RESULTS, STATE_LABELS, Errand, ErrandState
from models.errors import Forbidden
from models.love_figures import Period
from models.places import Building, Community, SubDistrict
from models.residents import Resident
from models.roles import Place, Role, Scope, active_roles
from models.sheets import append as _append
from models.sheets import bold as _bold
from models.sheets import save as _save
from models.sheets import widths as _widths
from models.wishes import mask_name

PERIOD_DAYS_MAX = 366
REFUSED = "服务台账和代办数据只给本社区的社区工作人员和本街道的工作人员看。"
TOTAL = "合计"


# ---------------------------------------------------------------------------- who sees what


@dataclass(frozen=True)
class Unit:
    """What a ledger or figures report covers: one community, or every community of a sub-district."""

    scope: str  # Scope.COMMUNITY | Scope.SUB_DISTRICT
    id: int
    name: str
    community_ids: tuple[int, ...]


async def _may_read(viewer_id: int, place: Place, *, sub_district_only: bool) -> bool:
    roles = (Role.SUBDISTRICT_STAFF,) if sub_district_only else (Role.COMMUNITY_STAFF, Role.SUBDISTRICT_STAFF)
    return any(r.role in roles and place.within(r) for r in await active_roles(viewer_id))


async def unit_of(viewer_id: int, *, community_id: int | None = None, sub_district_id: int | None = None) -> Unit:
    """The community (its community staff, or its sub-district's staff) or the sub-district (its
    staff) the viewer asks for; Forbidden for anybody else, or when it does not exist."""
    if (community_id is None) == (sub_district_id is None):
        raise ValueError("give either community_id or sub_district_id")
    if community_id is not None:
        community = await Community.get_or_none(id=community_id)
        if community is None or not await _may_read(
                viewer_id, Place(community.sub_district_id, community.id), sub_district_only=False):  # type: ignore[attr-defined]
            raise Forbidden(REFUSED)
        return Unit(Scope.COMMUNITY, community.id, community.name, (community.id,))
    sub = await SubDistrict.get_or_none(id=sub_district_id)
    if sub is None or not await _may_read(viewer_id, Place(sub.id), sub_district_only=True):
        raise Forbidden(REFUSED)
    ids: list[int] = await Community.filter(sub_district_id=sub.id).order_by("id").values_list(  # type: ignore[assignment]
        "id", flat=True)
    return Unit(Scope.SUB_DISTRICT, sub.id, sub.name, tuple(ids))


async def default_unit(viewer_id: int) -> Unit:
    """The widest unit the viewer sees (a sub-district before a community); Forbidden when none."""
    roles = [r for r in await active_roles(viewer_id)
             if r.scope_id is not None and (r.role, r.scope_kind) in ((Role.SUBDISTRICT_STAFF, Scope.SUB_DISTRICT),
                                                                     (Role.COMMUNITY_STAFF, Scope.COMMUNITY))]
    roles.sort(key=lambda r: (r.scope_kind != Scope.SUB_DISTRICT, r.id))
    for role in roles:
        try:
            if role.scope_kind == Scope.SUB_DISTRICT:
                return await unit_of(viewer_id, sub_district_id=role.scope_id)
            return await unit_of(viewer_id, community_id=role.scope_id)
        except Forbidden:  # pragma: no cover - a grant whose place was removed
            continue
    raise Forbidden(REFUSED)


def _period(start: date, end: date) -> Period:
    if end < start:
        raise ValueError("the period ends before it starts")
    if (end - start).days >= PERIOD_DAYS_MAX:
        raise ValueError(f"a period of at most {PERIOD_DAYS_MAX} days")
    return Period(start, end, CONTEXT.tz)


async def _errands(community_ids: Sequence[int], period: Period) -> list[Errand]:
    return await Errand.filter(community_id__in=list(community_ids), created_at__gte=period.start,
                               created_at__lt=period.end).order_by("created_at", "id")


def _local_day(when: datetime | None) -> date | None:
    return when.astimezone(CONTEXT.tz).date() if when is not None else None


# ---------------------------------------------------------------------------- the ledger


@dataclass
class LedgerRow:
    """One errand in the household ledger."""

    household: str  # 5号楼1单元201室 (empty when the resident's details were erased)
    building: str
    unit: str
    room: str
    resident_id: int
    resident: str
    errand_id: int
    item: str
    asked_on: date
    state: str
    state_label: str
    result: str  # approved | rejected | "" (no result yet)
    result_label: str
    result_on: date | None
    delivered_on: date | None
    closed_on: date | None
    proxy: str  # the red proxy, masked (王**); "" without one
    at_door: bool
    rating: int | None


@dataclass
class Ledger:
    unit: Unit
    period: Period
    rows: list[LedgerRow]

    @property
    def households(self) -> int:
        return len({(r.building, r.unit, r.room) if r.household else ("", "", str(r.resident_id))
                    for r in self.rows})


async def household_ledger(viewer_id: int, community_id: int, start: date, end: date) -> list[LedgerRow]:
    """Every errand asked in the days ``start`` to ``end`` for a resident of the community, grouped
    by household (building, unit and room in order), then by when it was asked."""
    return (await ledger(viewer_id, community_id, start, end)).rows


async def ledger(viewer_id: int, community_id: int, start: date, end: date) -> Ledger:
    """The household ledger with what it covers (for the spreadsheet's heading)."""
    unit = await unit_of(viewer_id, community_id=community_id)
    period = _period(start, end)
    errands = await _errands(unit.community_ids, period)
    people = {r.id: r for r in await Resident.filter(id__in={e.resident_id for e in errands}, erased_at=None)}
    homes: dict[int, tuple[str, str, str]] = {}
    building_of: dict[int, int] = {p.id: p.building_id for p in people.values()}  # type: ignore[attr-defined]
    names = dict(await Building.filter(id__in={b for b in building_of.values() if b}).values_list("id", "name"))
    for person in people.values():
        if building_of[person.id] in names:
            homes[person.id] = (str(names[building_of[person.id]]), person.unit, person.room)
    proxies = dict(await Resident.filter(id__in={e.proxy_id for e in errands if e.proxy_id}).values_list("id", "name"))
    rows = []
    for errand in errands:
        found = people.get(errand.resident_id)
        building, unit_no, room = homes.get(errand.resident_id, ("", "", ""))
        result = errand.progress if errand.progress in RESULTS else ""
        rows.append(LedgerRow(
            household=f"{building}{unit_no}单元{room}室" if building else "",
            building=building, unit=unit_no, room=room, resident_id=errand.resident_id,
            resident=found.name if found is not None else "", errand_id=errand.id, item=errand.item_name,
            asked_on=_local_day(errand.created_at) or period.first, state=errand.state,
            state_label=STATE_LABELS.get(errand.state, errand.state), result=result,
            result_label=PROGRESS_LABELS.get(result, "") if result else "",
            result_on=_local_day(errand.result_at), delivered_on=_local_day(errand.delivered_at),
            closed_on=_local_day(errand.closed_at),
            proxy=mask_name(str(proxies.get(errand.proxy_id, ""))) if errand.proxy_id in proxies else "",
            at_door=errand.at_door, rating=errand.rating))
    # households in building, unit and room order (numbers as numbers: 5号楼 before 12号楼); erased last
    rows.sort(key=lambda r: (not r.household, _natural(r.building), _natural(r.unit), _natural(r.room),
                             r.resident_id, r.asked_on, r.errand_id))
    return Ledger(unit, period, rows)


def _natural(text: str) -> tuple[Any, ...]:
    """A sort key that orders the digits in a text by their value."""
    out: list[Any] = []
    number = ""
    for ch in text:
        if ch.isdigit():
            number += ch
            continue
        if number:
            out.append((0, int(number), ""))
            number = ""
        out.append((1, 0, ch))
    if number:
        out.append((0, int(number), ""))
    return tuple(out)


# ---------------------------------------------------------------------------- the figures


def pct(part: int, whole: int) -> int | None:
    """part / whole as a whole percent, rounded half up; None when nothing was counted."""
    return (part * 200 + whole) // (whole * 2) if whole else None


def _half_up(value: float) -> int:
    return int(value + 0.5)


@dataclass
class ItemFigures:
    """The figures of one item (or, named 合计, of every item)."""

    item: str
    limit_minutes: int | None = None  # the first-response limit of the latest request (None in the total)
    requests: int = 0
    cancelled: int = 0
    responded: int = 0  # taken by a steward
    due: int = 0  # whose first response was due (see the module's docstring)
    within_limit: int = 0
    delivered: int = 0
    at_door: int = 0
    rated: int = 0
    satisfied: int = 0  # rated 4 or 5
    response_minutes: list[int] = field(default_factory=list, repr=False)
    total_minutes: list[int] = field(default_factory=list, repr=False)
    ratings: list[int] = field(default_factory=list, repr=False)

    @property
    def response_median_minutes(self) -> int | None:
        return _half_up(statistics.median(self.response_minutes)) if self.response_minutes else None

    @property
    def within_pct(self) -> int | None:
        return pct(self.within_limit, self.due)

    @property
    def total_median_hours(self) -> int | None:
        return _half_up(statistics.median(self.total_minutes) / 60) if self.total_minutes else None

    @property
    def at_door_pct(self) -> int | None:
        return pct(self.at_door, self.delivered)

    @property
    def rating_mean_x10(self) -> int | None:
        return (sum(self.ratings) * 20 + len(self.ratings)) // (len(self.ratings) * 2) if self.ratings else None

    @property
    def satisfied_pct(self) -> int | None:
        return pct(self.satisfied, self.rated)

    def count(self, errand: Errand, now: datetime | None) -> None:
        self.requests += 1
        self.cancelled += errand.state == ErrandState.CANCELLED
        limit = timedelta(minutes=errand.first_response_minutes)
        if errand.first_response_at is not None:
            waited = errand.first_response_at - errand.created_at
            self.responded += 1
            self.due += 1
            self.within_limit += waited <= limit
            self.response_minutes.append(_half_up(waited.total_seconds() / 60))
        else:
            # not taken: due once its limit passed before it closed (or, when open, before now)
            until = errand.closed_at if errand.closed_at is not None else now
            self.due += until is not None and until - errand.created_at > limit
        if errand.delivered_at is not None:
            self.delivered += 1
            self.at_door += errand.at_door
            self.total_minutes.append(_half_up((errand.delivered_at - errand.created_at).total_seconds() / 60))
        if errand.rating is not None:
            self.rated += 1
            self.satisfied += errand.rating >= 4
            self.ratings.append(errand.rating)


@dataclass
class Figures:
    unit: Unit
    period: Period
    items: list[ItemFigures]  # by item, the most asked first (ties: the first asked first)
    total: ItemFigures

    def label(self) -> str:
        return f"{self.unit.name} {self.period.label()}"


async def figures(viewer_id: int, *, community_id: int | None = None, sub_district_id: int | None = None,
                  start: date, end: date, now: datetime | None = None) -> Figures:
    """The figures of the errands asked in the days ``start`` to ``end`` in the community or the
    sub-district, per item and in all. ``now`` (the service clock) lets an errand still waiting
    past its first-response limit count as late."""
    unit = await unit_of(viewer_id, community_id=community_id, sub_district_id=sub_district_id)
    period = _period(start, end)
    when = now.astimezone(UTC) if now is not None else None
    by_item: dict[str, ItemFigures] = {}
    total = ItemFigures(TOTAL)
    for errand in await _errands(unit.community_ids, period):
        line = by_item.setdefault(errand.item_name, ItemFigures(errand.item_name))
        line.limit_minutes = errand.first_response_minutes
        line.count(errand, when)
        total.count(errand, when)
    items = sorted(by_item.values(), key=lambda f: -f.requests)  # stable: ties in the order first asked
    return Figures(unit, period, items, total)


def figures_text(figs: Figures) -> str:
    """A short chat summary (代办数据)."""
    t = figs.total
    if not t.requests:
        return f"{figs.label()}：还没有代办申请。"
    out = [f"{figs.label()}：代办申请{t.requests}件（取消{t.cancelled}件）。"]
    if t.due:
        median = f"，中位{t.response_median_minutes}分钟" if t.response_median_minutes is not None else ""
        out.append(f"首次响应：按时{t.within_limit}/{t.due}件（{t.within_pct}%）{median}。")
    if t.delivered:
        out.append(f"已送达{t.delivered}件，用时中位{t.total_median_hours}小时，上门办结{t.at_door}件（{t.at_door_pct}%）。")
    if t.rated:
        out.append(f"评价{t.rated}件，平均{t.rating_mean_x10 // 10}.{t.rating_mean_x10 % 10}分"  # type: ignore[operator]
                   f"，满意（4-5分）{t.satisfied_pct}%。")
    return "\n".join(out)


# ---------------------------------------------------------------------------- spreadsheets


def _day(value: date | None) -> str:
    return value.isoformat() if value is not None else ""


LEDGER_HEADERS = ("户（楼栋单元室）", "居民", "编号", "事项", "申请日期", "状态", "办理结果", "结果日期", "送达日期",
                  "办结日期", "代办员", "上门送达", "评价（分）")


def ledger_xlsx(led: Ledger) -> bytes:
    """Sheet 服务台账: a heading, then a row per errand, households in order."""
    book = openpyxl.Workbook()
    ws = book.active
    ws.title = "服务台账"
    _append(ws, [f"{led.unit.name} 红色代办服务台账：{led.period.label()}"])
    _append(ws, list(LEDGER_HEADERS))
    for r in led.rows:
        _append(ws, [r.household or "（信息已删除）", r.resident, r.errand_id, r.item, r.asked_on.isoformat(),
                     r.state_label, r.result_label, _day(r.result_on), _day(r.delivered_on), _day(r.closed_on),
                     r.proxy, "是" if r.at_door else "否", r.rating if r.rating is not None else ""])
    _append(ws, [f"共{led.households}户，{len(led.rows)}件"])
    _bold(ws, 1, 2, ws.max_row)
    _widths(ws, 20, 10, 8, 14, 12, 10, 14, 12, 12, 12, 10, 10, 10)
    return _save(book)


FIGURE_HEADERS = ("事项", "首次响应时限（分钟）", "申请", "取消", "已响应", "应响应", "按时响应", "按时率（%）",
                  "首次响应中位（分钟）", "已送达", "办结用时中位（小时）", "上门送达", "上门办结率（%）", "评价数",
                  "平均评分×10", "满意（4-5分）", "满意率（%）")


def _figure_row(f: ItemFigures) -> list[Any]:
    return [f.item, f.limit_minutes, f.requests, f.cancelled, f.responded, f.due, f.within_limit, f.within_pct,
            f.response_median_minutes, f.delivered, f.total_median_hours, f.at_door, f.at_door_pct, f.rated,
            f.rating_mean_x10, f.satisfied, f.satisfied_pct]


def figures_xlsx(figs: Figures) -> bytes:
    """Sheet 代办数据: a row per item and the total row (blank where nothing was counted)."""
    book = openpyxl.Workbook()
    ws = book.active
    ws.title = "代办数据"
    _append(ws, [f"{figs.unit.name} 红色代办数据：{figs.period.label()}"])
    _append(ws, list(FIGURE_HEADERS))
    for line in figs.items:
        _append(ws, _figure_row(line))
    _append(ws, _figure_row(figs.total))
    _bold(ws, 1, 2, ws.max_row)
    _widths(ws, 14, *([12] * (len(FIGURE_HEADERS) - 1)))
    return _save(book)
