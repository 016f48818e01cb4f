"""先锋骑士 figures: per meal of a community and period, the delivery routes, their stops, what
became of them, and the welfare alerts, as data, a short summary and a spreadsheet.

Everything is read from the routes, stops and alerts themselves (models/riders.py); nothing keeps a
second count. A period is the days ``start`` to ``end`` (both counted, community time), and a
route belongs to the day of its meal (``Menu.day``). Per meal (day and meal, every canteen of the
community together) and in all:

- routes (路线): routes built for the meal, cancelled ones left out; done (已完成): every stop marked;
- stops (送餐户次): stops on those routes, cancelled ones (the booking was cancelled) left out;
  delivered (已送达), not home (不在家) and pending (未标记, not marked yet);
- on time (按时送达): stops delivered no later than the end of the meal's serving hours
  (``Menu.serve_until_at``); the on-time share is on time / delivered;
- alerts (安全提醒) raised at a not-home stop of those routes, closed ones (已解除) and the median
  minutes from raising to closing, over the closed ones.

Shares are whole percents (rounded half up) beside the counts they come from; None when nothing
was counted. The community's staff, the staff of a canteen of the community and the staff of its
sub-district may read them; anybody else is refused (``Forbidden``).
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import openpyxl

from models import sheets
from models.canteen import MEAL_LABELS, MEALS, Menu
from models.cases import CONTEXT
from models.errors import Forbidden
from models.love_figures import Period
from models.places import Canteen, Community
from models.riders import Route, RouteState, RouteStop, StopState, WelfareAlert
from models.roles import Role, Scope, active_roles

PERIOD_DAYS_MAX = 366
REFUSED = "送餐数据只给本社区的社区工作人员、社区食堂的工作人员和本街道的工作人员看。"
TOTAL = "合计"


# ---------------------------------------------------------------------------- who sees what


async def may_read(viewer_id: int, community_id: int) -> bool:
    """The community's staff, the staff of one of its canteens, the staff of its sub-district."""
    community = await Community.get_or_none(id=community_id)
    if community is None:
        return False
    canteens = set(await Canteen.filter(community_id=community.id).values_list("id", flat=True))
    for role in await active_roles(viewer_id):
        if role.role == Role.COMMUNITY_STAFF and role.community_id == community.id:  # type: ignore[attr-defined]
            return True
        if role.role == Role.CANTEEN_STAFF and role.scope_kind == Scope.CANTEEN and role.scope_id in canteens:
            return True
        if role.role == Role.SUBDISTRICT_STAFF and \
                role.sub_district_id == community.sub_district_id:  # type: ignore[attr-defined]
            return True
    return False


async def default_community(viewer_id: int) -> int:
    """The community whose figures the viewer reads when they name none: the one they are community
    staff of, else the community of the canteen they work at, else the first of their sub-district;
    Forbidden when there is none."""
    roles = await active_roles(viewer_id)
    for wanted in (Role.COMMUNITY_STAFF, Role.CANTEEN_STAFF, Role.SUBDISTRICT_STAFF):
        for role in roles:
            if role.role != wanted:
                continue
            found: Any = None
            if wanted == Role.COMMUNITY_STAFF:
                found = role.community_id  # type: ignore[attr-defined]
            elif wanted == Role.CANTEEN_STAFF and role.scope_kind == Scope.CANTEEN:
                found = await Canteen.filter(id=role.scope_id).first().values_list("community_id", flat=True)
            elif wanted == Role.SUBDISTRICT_STAFF:
                found = await Community.filter(sub_district_id=role.sub_district_id).order_by(  # type: ignore[attr-defined]
                    "id").first().values_list("id", flat=True)
            if found is not None:
                return int(found)
    raise Forbidden(REFUSED)


# ---------------------------------------------------------------------------- the figures


def pct(part: int, whole: int) -> int | None:
    """part / whole as a whole percent, rounded half up; None when nothing was counted."""
    return (part * 200 + whole) // (whole * 2) if whole else None


@dataclass
class MealFigures:
    """One meal (a day and a meal) of the community, or, named 合计, every meal of the period."""

    day: date | None
    meal: str  # breakfast | lunch | dinner ("" in the total)
    routes: int = 0
    done: int = 0
    stops: int = 0
    delivered: int = 0
    not_home: int = 0
    pending: int = 0
    on_time: int = 0
    alerts: int = 0
    alerts_closed: int = 0
    close_minutes: list[int] = field(default_factory=list, repr=False)

    @property
    def label(self) -> str:
        if self.day is None:
            return TOTAL
        return f"{self.day:%Y-%m-%d} {MEAL_LABELS.get(self.meal, self.meal)}"

    @property
    def meal_label(self) -> str:
        return MEAL_LABELS.get(self.meal, self.meal)

    @property
    def on_time_pct(self) -> int | None:
        return pct(self.on_time, self.delivered)

    @property
    def close_median_minutes(self) -> int | None:
        return int(statistics.median(self.close_minutes) + 0.5) if self.close_minutes else None

    def add(self, other: MealFigures) -> None:
        for name in ("routes", "done", "stops", "delivered", "not_home", "pending", "on_time", "alerts",
                     "alerts_closed"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.close_minutes.extend(other.close_minutes)


@dataclass
class RiderFigures:
    community_id: int
    name: str
    period: Period
    meals: list[MealFigures]  # by day, then breakfast, lunch, dinner
    total: MealFigures

    def label(self) -> str:
        return f"{self.name} {self.period.label()}"


def _period(start: date, end: date) -> Period:
    if end < start:
        raise ValueError("the period ends before it starts")
    if (end - start).days >= PERIOD_DAYS_MAX:
        raise ValueError(f"a period of at most {PERIOD_DAYS_MAX} days")
    return Period(start, end, CONTEXT.tz)


def _meal_key(line: MealFigures) -> tuple[date, int]:
    return (line.day or date.min, MEALS.index(line.meal) if line.meal in MEALS else len(MEALS))


async def figures(viewer_id: int, community_id: int, start: date, end: date) -> RiderFigures:
    """The figures of the community's delivery routes of the meals of the days ``start`` to ``end``."""
    if not await may_read(viewer_id, community_id):
        raise Forbidden(REFUSED)
    community = await Community.get(id=community_id)
    period = _period(start, end)
    # read by ids, never through a join: each step filters the rows of the one before
    menus = {m.id: m for m in await Menu.filter(day__gte=period.first, day__lte=period.last)}
    routes = await Route.filter(community_id=community.id, menu_id__in=sorted(menus)).exclude(
        state=RouteState.CANCELLED).order_by("id") if menus else []
    route_menu = {r.id: r.menu_id for r in routes}
    stops = await RouteStop.filter(route_id__in=sorted(route_menu)).exclude(
        state=StopState.CANCELLED) if route_menu else []
    stop_route = {s.id: s.route_id for s in stops}
    alerts = await WelfareAlert.filter(stop_id__in=sorted(stop_route)) if stop_route else []

    lines: dict[tuple[date, str], MealFigures] = {}

    def line_of(menu_id: int) -> MealFigures:
        menu = menus[menu_id]
        return lines.setdefault((menu.day, menu.meal), MealFigures(menu.day, menu.meal))

    for route in routes:
        line = line_of(route.menu_id)
        line.routes += 1
        line.done += route.state == RouteState.DONE
    for stop in stops:
        menu = menus[route_menu[stop.route_id]]
        line = line_of(menu.id)
        line.stops += 1
        if stop.state == StopState.DELIVERED:
            line.delivered += 1
            line.on_time += stop.marked_at is not None and stop.marked_at <= menu.serve_until_at
        elif stop.state == StopState.NOT_HOME:
            line.not_home += 1
        else:
            line.pending += 1
    for alert in alerts:
        line = line_of(route_menu[stop_route[alert.stop_id]])
        line.alerts += 1
        if alert.closed_at is not None:
            line.alerts_closed += 1
            line.close_minutes.append(int((alert.closed_at - alert.raised_at).total_seconds() / 60 + 0.5))
    meals = sorted(lines.values(), key=_meal_key)
    total = MealFigures(None, "")
    for line in meals:
        total.add(line)
    return RiderFigures(community.id, community.name, period, meals, total)


def figures_text(figs: RiderFigures) -> str:
    """A few sentences (送餐数据)."""
    t = figs.total
    if not t.routes:
        return f"{figs.label()}：还没有送餐路线。"
    out = [f"{figs.label()}：送餐路线{t.routes}条（已完成{t.done}条），送餐{t.stops}户次，"
           f"已送达{t.delivered}户次，不在家{t.not_home}户次" + (f"，未标记{t.pending}户次。" if t.pending else "。")]
    if t.delivered:
        out.append(f"按时送达{t.on_time}/{t.delivered}户次（{t.on_time_pct}%）。")
    if t.alerts:
        median = f"，解除用时中位{t.close_median_minutes}分钟" if t.close_median_minutes is not None else ""
        out.append(f"独居老人安全提醒{t.alerts}次，已解除{t.alerts_closed}次{median}。")
    return "\n".join(out)


# ---------------------------------------------------------------------------- the spreadsheet

HEADERS = ("日期", "餐次", "路线", "已完成路线", "送餐户次", "已送达", "不在家", "未标记", "按时送达", "按时率（%）",
           "安全提醒", "已解除", "解除用时中位（分钟）")


def _row(line: MealFigures) -> list[Any]:
    return [line.day.isoformat() if line.day else TOTAL, line.meal_label, line.routes, line.done, line.stops,
            line.delivered, line.not_home, line.pending, line.on_time, line.on_time_pct, line.alerts,
            line.alerts_closed, line.close_median_minutes]


def figures_xlsx(figs: RiderFigures) -> bytes:
    """Sheet 送餐数据: a heading, a row per meal and the total row (blank where nothing was counted)."""
    book = openpyxl.Workbook()
    ws = book.active
    ws.title = "送餐数据"
    sheets.append(ws, [f"{figs.name} 先锋骑士送餐数据：{figs.period.label()}"])
    sheets.append(ws, list(HEADERS))
    for line in figs.meals:
        sheets.append(ws, _row(line))
    sheets.append(ws, _row(figs.total))
    sheets.bold(ws, 1, 2, ws.max_row)
    sheets.widths(ws, 12, 8, *([10] * (len(HEADERS) - 2)))
    return sheets.save(book)
