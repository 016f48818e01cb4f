"""逢六说事 figures: how the cases received in a period fared, per grid, community and sub-district.

A case counts in the period it was received (``created_at`` in [start, end)), whatever happened to
it later, so a period's figures grow as its cases are handled. For those cases:

- received (收到): all of them, private matters included (counts only: see ``categories``);
- accepted (受理): taken by a handler at some point (``accepted_at`` set) → 受理率 = accepted / received;
- resolved (办结): resolved and not reopened since (``resolved_at`` set) → 办结率 = resolved / accepted;
- resolved in time (按期办结): resolved within the deadline of the level that resolved it;
- overdue (逾期): missed at least one deadline (``missed_deadlines`` > 0) — a level's deadline passed
  while the case was live with it, as the due-action sweep recorded it — whether or not it was
  resolved since. It is the case's history, not "late right now": a live case past its due time
  counts once the sweep has seen it (the sweep runs every minute);
- escalated (升级): moved up at least once (``escalations`` > 0), by a missed deadline or passed up;
- reopened (重办): a resident said "not fixed" at least once (``reopened`` > 0);
- rated (评价): closed with a rating; satisfied (满意) those rated 4 or 5 → 满意率 = satisfied / rated;
- unrated (未评价): closed because nobody rated in time (``closed_reason`` "unrated"), apart from rated.

Rates are exact fractions, shown to one decimal (half up) as "95.2%", and "—" when nothing is
under the line. Counting is done by the database, one grouped query per report.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime, time, timedelta
from fractions import Fraction
from typing import Any, cast
from zoneinfo import ZoneInfo

import openpyxl
from openpyxl.styles import Font
from openpyxl.utils import get_column_letter
from tortoise.expressions import Q
from tortoise.functions import Count

from models.cases import CATEGORIES, KLASS_LABELS, Case, Klass
from models.errors import NotFound
from models.places import Community, Grid, SubDistrict
from models.roles import Role, Scope, StaffRole, active_roles, scope_place
from models.sheets import append as _append

# who sees figures, each of the units in their scope
FIGURE_ROLES = (Role.GRID_WORKER, Role.COMMUNITY_STAFF, Role.SUBDISTRICT_STAFF)
SCOPES = (Scope.GRID, Scope.COMMUNITY, Scope.SUB_DISTRICT)
SATISFIED_MIN = 4  # ratings of 4 and 5 are satisfied
NO_RATE = "—"
PRIVATE_LINE = KLASS_LABELS[Klass.PRIVATE]  # 私事: private cases are never broken down by category


# ---------------------------------------------------------------------------- counts and rates


@dataclass
class Figures:
    """The counts of one unit (see the module docstring for what each one means)."""

    received: int = 0
    accepted: int = 0
    resolved: int = 0
    resolved_in_time: int = 0
    overdue: int = 0
    escalated: int = 0
    reopened: int = 0
    rated: int = 0
    satisfied: int = 0
    unrated: int = 0

    def __add__(self, other: Figures) -> Figures:
        return Figures(**{name: getattr(self, name) + getattr(other, name) for name in COUNTS})

    @property
    def acceptance_rate(self) -> Fraction | None:
        return rate(self.accepted, self.received)

    @property
    def completion_rate(self) -> Fraction | None:
        return rate(self.resolved, self.accepted)

    @property
    def satisfaction_rate(self) -> Fraction | None:
        return rate(self.satisfied, self.rated)


COUNTS = tuple(f.name for f in fields(Figures))


def rate(part: int, whole: int) -> Fraction | None:
    return Fraction(part, whole) if whole else None


def percent(value: Fraction | None) -> str:
    """One decimal, rounded half up on the exact fraction: 20/21 → "95.2%", 1/16 → "6.3%"; None → "—"."""
    if value is None:
        return NO_RATE
    tenths = math.floor(value * 1000 + Fraction(1, 2))
    return f"{tenths // 10}.{tenths % 10}%"


def _received(start: datetime, end: datetime, where: dict[str, Any]) -> Any:
    # one spelling per instant (UTC): SQLite compares the stored text
    return Case.filter(created_at__gte=start.astimezone(UTC), created_at__lt=end.astimezone(UTC), **where)


def _aggregates() -> dict[str, Count]:
    # annotation names must not be field names of Case (reopened, resolved_in_time are)
    return {
        "n_received": Count("id"),
        "n_accepted": Count("id", _filter=Q(accepted_at__isnull=False)),
        "n_resolved": Count("id", _filter=Q(resolved_at__isnull=False)),
        "n_resolved_in_time": Count("id", _filter=Q(resolved_at__isnull=False, resolved_in_time=True)),
        "n_overdue": Count("id", _filter=Q(missed_deadlines__gt=0)),
        "n_escalated": Count("id", _filter=Q(escalations__gt=0)),
        "n_reopened": Count("id", _filter=Q(reopened__gt=0)),
        "n_rated": Count("id", _filter=Q(rating__isnull=False)),
        "n_satisfied": Count("id", _filter=Q(rating__gte=SATISFIED_MIN)),
        "n_unrated": Count("id", _filter=Q(closed_reason="unrated")),
    }


async def grouped(by: str, start: datetime, end: datetime, **where: Any) -> dict[int, Figures]:
    """The figures of the cases received in [start, end) matching ``where``, per ``by``
    (grid_id or community_id), counted in one grouped query. Groups without cases are absent."""
    aggregates = _aggregates()
    rows = await _received(start, end, where).annotate(**aggregates).group_by(by).values(by, *aggregates)
    return {int(row[by]): Figures(**{name: int(row[f"n_{name}"] or 0) for name in COUNTS}) for row in rows}


async def _categories(start: datetime, end: datetime, **where: Any) -> list[tuple[str, int]]:
    """Received cases per category label, most first; private cases in one 私事 line, whatever their
    category, so no private matter is ever told apart from another."""
    rows = await _received(start, end, where).annotate(n=Count("id")).group_by("klass", "category").values(
        "klass", "category", "n")
    order = {c.code: i for i, c in enumerate(CATEGORIES)}
    labels = {c.code: c.label for c in CATEGORIES}
    counts: dict[str, int] = {}
    rank: dict[str, int] = {PRIVATE_LINE: len(order) + 1}
    for row in rows:
        code = str(row["category"])
        label = PRIVATE_LINE if row["klass"] == Klass.PRIVATE else labels.get(code, code)
        counts[label] = counts.get(label, 0) + int(row["n"])
        rank.setdefault(label, order.get(code, len(order)))
    return sorted(counts.items(), key=lambda item: (-item[1], rank[item[0]]))


# ---------------------------------------------------------------------------- reports


@dataclass(frozen=True)
class Unit:
    """A grid, community or sub-district; ``label`` names it on its own (米家社区第一网格)."""

    scope: str
    id: int
    name: str
    label: str

    @property
    def key(self) -> str:
        return f"{self.scope}:{self.id}"


@dataclass
class UnitFigures:
    unit: Unit
    figures: Figures


@dataclass
class Report:
    """A unit's figures for [start, end), those of each unit directly below it (the grids of a
    community, the communities of a sub-district; none for a grid), and the received cases per
    category (private ones as one 私事 line)."""

    start: datetime
    end: datetime
    total: UnitFigures
    units: list[UnitFigures] = field(default_factory=list)
    categories: list[tuple[str, int]] = field(default_factory=list)


async def unit_of(scope: str, unit_id: int) -> Unit:
    """The unit; NotFound when there is none."""
    if scope == Scope.GRID:
        grid = await Grid.get_or_none(id=unit_id).prefetch_related("community")
        if grid is not None:
            return Unit(scope, grid.id, grid.name, grid.community.name + grid.name)
    elif scope == Scope.COMMUNITY:
        community = await Community.get_or_none(id=unit_id)
        if community is not None:
            return Unit(scope, community.id, community.name, community.name)
    elif scope == Scope.SUB_DISTRICT:
        sub = await SubDistrict.get_or_none(id=unit_id)
        if sub is not None:
            return Unit(scope, sub.id, sub.name, sub.name)
    raise NotFound("没有找到这个范围。")


async def report(unit: Unit, start: datetime, end: datetime) -> Report:
    """The figures of ``unit`` for the cases received in [start, end)."""
    where: dict[str, Any]
    if unit.scope == Scope.GRID:
        where, by = {"grid_id": unit.id}, "grid_id"
    elif unit.scope == Scope.COMMUNITY:
        where, by = {"community_id": unit.id}, "grid_id"
    else:
        where, by = {"community__sub_district_id": unit.id}, "community_id"
    below = await units_below(unit)
    groups = await grouped(by, start, end, **where)
    total = sum(groups.values(), Figures())
    return Report(start, end, UnitFigures(unit, total),
                  [UnitFigures(u, groups.get(u.id, Figures())) for u in below],
                  await _categories(start, end, **where))


def week_start(now: datetime, tz: ZoneInfo) -> datetime:
    """Monday 00:00 of ``now``'s week, community time."""
    today = now.astimezone(tz).date()
    return datetime.combine(today - timedelta(days=today.weekday()), time(), tzinfo=tz)


# ---------------------------------------------------------------------------- who sees which figures


def _figure_roles(roles: Sequence[StaffRole]) -> list[StaffRole]:
    width = {Scope.SUB_DISTRICT: 0, Scope.COMMUNITY: 1, Scope.GRID: 2}
    mine = [r for r in roles if r.role in FIGURE_ROLES and r.scope_kind in width and r.scope_id]
    return sorted(mine, key=lambda r: (width[r.scope_kind], r.id))


async def units_of(actor_id: int) -> list[Unit]:
    """The units whose figures the staff member sees, widest first: a grid worker's grid; community
    staff's community and its grids; sub-district staff's sub-district and its communities."""
    found: dict[str, Unit] = {}
    for role in _figure_roles(await active_roles(actor_id)):
        unit = await unit_of(role.scope_kind, cast(int, role.scope_id))
        found.setdefault(unit.key, unit)
        if unit.scope != Scope.GRID:
            for below in await units_below(unit):
                found.setdefault(below.key, below)
    return list(found.values())


async def units_below(unit: Unit) -> list[Unit]:
    """The grids of a community, the communities of a sub-district (none below a grid)."""
    if unit.scope == Scope.COMMUNITY:
        return [Unit(Scope.GRID, g.id, g.name, unit.name + g.name)
                for g in await Grid.filter(community_id=unit.id).order_by("id")]
    if unit.scope == Scope.SUB_DISTRICT:
        return [Unit(Scope.COMMUNITY, c.id, c.name, c.name)
                for c in await Community.filter(sub_district_id=unit.id).order_by("id")]
    return []


async def viewable(actor_id: int, scope: str | None = None, unit_id: int | None = None) -> Unit:
    """The unit, when it lies in the scope of one of the actor's figure roles (no unit named: the
    actor's widest); NotFound otherwise, as if it did not exist."""
    roles = _figure_roles(await active_roles(actor_id))
    if scope is None or unit_id is None:
        if not roles:
            raise NotFound("没有找到这个范围。")
        return await unit_of(roles[0].scope_kind, cast(int, roles[0].scope_id))
    if scope not in SCOPES:
        raise NotFound("没有找到这个范围。")
    place, _ = await scope_place(scope, unit_id)
    if not any(place.within(role) for role in roles):
        raise NotFound("没有找到这个范围。")
    return await unit_of(scope, unit_id)


# ---------------------------------------------------------------------------- the spreadsheet

# (column header, what goes in it)
COLUMNS: tuple[tuple[str, str], ...] = (
    ("收到", "received"), ("受理", "accepted"), ("受理率", "acceptance_rate"), ("办结", "resolved"),
    ("办结率", "completion_rate"), ("按期办结", "resolved_in_time"), ("逾期", "overdue"), ("升级", "escalated"),
    ("重办", "reopened"), ("评价", "rated"), ("满意（4–5分）", "satisfied"), ("满意率", "satisfaction_rate"),
    ("超时未评价", "unrated"),
)
RATES = ("acceptance_rate", "completion_rate", "satisfaction_rate")


def row_values(figures: Figures) -> list[int | str]:
    """The figures in the order of COLUMNS, rates as text ("95.2%" or "—")."""
    return [percent(getattr(figures, key)) if key in RATES else int(getattr(figures, key)) for _, key in COLUMNS]


def to_xlsx(rep: Report, tz: ZoneInfo) -> bytes:
    """The report as a workbook: a title row, the headers, a row per unit below and a total row
    (sheet 数据); received cases per category on sheet 分类."""
    book = openpyxl.Workbook()
    ws = book.active
    ws.title = "数据"
    unit = rep.total.unit
    start, end = rep.start.astimezone(tz), rep.end.astimezone(tz)
    _append(ws, [f"{unit.label} 逢六说事数据：{start:%Y-%m-%d %H:%M} 至 {end:%Y-%m-%d %H:%M}（按收到时间）"])
    _append(ws, ["单位", *[header for header, _ in COLUMNS]])
    for item in rep.units:
        _append(ws, [item.unit.name, *row_values(item.figures)])
    _append(ws, [f"合计（{unit.label}）", *row_values(rep.total.figures)])
    bold = Font(bold=True)
    for cell in (*ws[1], *ws[2], *ws[ws.max_row]):
        cell.font = bold
    ws.column_dimensions["A"].width = 24
    for c in range(2, len(COLUMNS) + 2):
        ws.column_dimensions[get_column_letter(c)].width = 11
    ws.freeze_panes = "B3"
    sheet = book.create_sheet("分类")
    _append(sheet, ["分类", "收到"])
    for label, count in rep.categories:
        _append(sheet, [label, count])
    sheet.column_dimensions["A"].width = 16
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()
