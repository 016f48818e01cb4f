"""逢六说事 figures (受理率, 办结率, 满意率...) for staff: 本周数据 in chat, /api/v1 and a spreadsheet."""

from __future__ import annotations

from datetime import date, datetime, time
from typing import Annotated, Literal
from zoneinfo import ZoneInfo

from pydantic import BaseModel, Field, field_validator

from bot.api import ApiError, ApiRequest, ApiRouter, FieldError, FileBody, Query, real_day
from bot.clock import format_zh
from bot.engine import REPLY_MAX_CHARS, Ask, Done, Flow, choice
from models.case_figures import (
    FIGURE_ROLES,
    Figures,
    Report,
    UnitFigures,
    percent,
    report,
    to_xlsx,
    units_of,
    viewable,
    week_start,
)
from models.errors import NotFound
from models.residents import Resident
from models.roles import Scope

QUESTION = "查看哪个范围的本周数据？"
BELOW_LABELS = {Scope.COMMUNITY: "网格", Scope.SUB_DISTRICT: "社区"}

weekly = Flow("case_figures", "本周数据", keywords=("本周数据", "数据"), roles=FIGURE_ROLES)


def _figures_line(f: Figures) -> str:
    return f"收到{f.received}，受理率{percent(f.acceptance_rate)}，办结率{percent(f.completion_rate)}，" \
           f"满意率{percent(f.satisfaction_rate)}"


def week_text(rep: Report, tz: ZoneInfo) -> str:
    """This week's figures of one unit (and a line per unit below it while the reply stays short)."""
    start = rep.start.astimezone(tz)
    head = f"{rep.total.unit.label}本周数据（{start.month}月{start.day}日起，截至{format_zh(rep.end, tz)}）"
    f = rep.total.figures
    if not f.received:
        return head + "：本周还没有收到居民反映的问题。"
    text = "\n".join([
        head + "：",
        f"收到{f.received}件，受理{f.accepted}件，受理率{percent(f.acceptance_rate)}",
        f"办结{f.resolved}件（按期{f.resolved_in_time}件），办结率{percent(f.completion_rate)}",
        f"逾期{f.overdue}件，升级{f.escalated}件，重办{f.reopened}件",
        f"评价{f.rated}件，满意{f.satisfied}件，满意率{percent(f.satisfaction_rate)}；超时未评价{f.unrated}件",
    ])
    busy = [item for item in rep.units if item.figures.received]
    quiet = len(rep.units) - len(busy)
    kind = BELOW_LABELS.get(rep.total.unit.scope, "")
    lines = [f"{item.unit.name}：{_figures_line(item.figures)}" for item in busy]
    for shown in range(len(lines), -1, -1):
        notes = []
        if shown < len(lines):
            notes.append(f"另有{len(lines) - shown}个{kind}未列出，回复“本周数据”可逐个查看。")
        if quiet:
            notes.append(f"{'其余' if busy else ''}{quiet}个{kind}本周没有收到反映。")
        candidate = "\n".join([text, *lines[:shown], *notes])
        if len(candidate) <= REPLY_MAX_CHARS:
            return candidate
    return text  # pragma: no cover - the five lines above are far below the limit


async def _week(scope: str, unit_id: int, actor: Resident, now: datetime, tz: ZoneInfo) -> Done:
    try:
        unit = await viewable(actor.id, scope, unit_id)
    except NotFound:
        return Done("您已不能查看这个范围的数据。")
    return Done(week_text(await report(unit, week_start(now, tz), now), tz))


@weekly.entry
async def pick_unit(actor: Resident, now: datetime, tz: ZoneInfo) -> Ask | Done:
    """The figures of the staff member's one unit, or a numbered choice when there are several."""
    units = await units_of(actor.id)
    if not units:
        return Done("您的角色没有可以查看数据的范围。")
    if len(units) == 1:
        return await _week(units[0].scope, units[0].id, actor, now, tz)
    items = [(u.key, u.label) for u in units]
    while len(choice(QUESTION, items).render()) > REPLY_MAX_CHARS:
        items.pop()  # the rest are in the mini-program's figures (GET /case-figures)
    return Ask("unit", choice(QUESTION, items))


@weekly.step("unit")
async def got_unit(answer: str, actor: Resident, now: datetime, tz: ZoneInfo) -> Done:
    """This week's figures of the chosen unit (its scope checked again)."""
    scope, _, raw = answer.partition(":")
    return await _week(scope, int(raw), actor, now, tz)


FLOWS: list[Flow] = [weekly]


# ---------------------------------------------------------------------------- the API

api = ApiRouter("case_figures")

XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
Id = Annotated[int, Field(ge=1, le=2**31 - 1)]
DAY = r"^20\d{2}-\d{2}-\d{2}$"


class FiguresQuery(Query):
    scope: Literal["grid", "community", "sub_district"] | None = Field(
        default=None, description="with scope_id; neither: the caller's widest scope")
    scope_id: Id | None = None
    start: str | None = Field(default=None, pattern=DAY,
                              description="YYYY-MM-DD, the first day counted (community time); "
                                          "default: this week's Monday")
    end: str | None = Field(default=None, pattern=DAY,
                            description="YYYY-MM-DD, the first day NOT counted; default: now")
    format: Literal["json", "xlsx"] = Field(default="json", description="xlsx: the same figures as a spreadsheet")

    _days = field_validator("start", "end")(real_day)


class FigureRow(BaseModel):
    scope: str = Field(description="grid | community | sub_district")
    id: int
    name: str
    received: int = Field(description="收到: cases received in the period (private ones included)")
    accepted: int = Field(description="受理: taken by a handler")
    resolved: int = Field(description="办结: resolved and not reopened since")
    resolved_in_time: int = Field(description="按期办结: resolved within the deadline of the level that did it")
    overdue: int = Field(description="逾期: missed at least one deadline")
    escalated: int = Field(description="升级: moved up a level at least once")
    reopened: int = Field(description="重办: reopened at least once (a resident said not fixed)")
    rated: int = Field(description="评价: closed with a rating")
    satisfied: int = Field(description="满意: rated 4 or 5")
    unrated: int = Field(description="超时未评价: closed because nobody rated in time")
    acceptance_rate: str = Field(description="受理率 = accepted / received, e.g. 95.2%; — when none")
    completion_rate: str = Field(description="办结率 = resolved / accepted")
    satisfaction_rate: str = Field(description="满意率 = satisfied / rated")


class CategoryCount(BaseModel):
    category: str = Field(description="the category; private matters are one line, 私事")
    received: int


class FiguresOut(BaseModel):
    start: str = Field(description="ISO 8601, included")
    end: str = Field(description="ISO 8601, not included")
    total: FigureRow
    units: list[FigureRow] = Field(description="the units directly below (grids of a community, communities of "
                                               "a sub-district; none for a grid)")
    categories: list[CategoryCount] = Field(description="cases received per category, most first")


def _row(item: UnitFigures) -> FigureRow:
    f = item.figures
    return FigureRow(scope=item.unit.scope, id=item.unit.id, name=item.unit.label,
                     acceptance_rate=percent(f.acceptance_rate), completion_rate=percent(f.completion_rate),
                     satisfaction_rate=percent(f.satisfaction_rate), **vars(f))


def _period(q: FiguresQuery, now: datetime, tz: ZoneInfo) -> tuple[datetime, datetime]:
    def midnight(day: str) -> datetime:
        return datetime.combine(date.fromisoformat(day), time(), tzinfo=tz)

    start = midnight(q.start) if q.start else week_start(now, tz)
    end = midnight(q.end) if q.end else now
    if end <= start:
        raise ApiError(422, "validation", "结束日期须晚于开始日期。",
                       [FieldError(field="query.end", message="must be after start")])
    return start, end


@api.route("GET", "/case-figures", summary="逢六说事 figures of a grid, community or sub-district (staff)",
           query=FiguresQuery, response=FiguresOut, produces=XLSX, errors=(404, 409))
async def get_case_figures(req: ApiRequest) -> FiguresOut | FileBody:
    """For the cases received in [start, end): counts and rates of the unit, of each unit below it and
    per category. Grid workers see their grid, community staff their community and its grids,
    sub-district staff everything in the sub-district; any other unit answers 404. With
    format=xlsx, the same figures as a spreadsheet: a row per unit below and a total row."""
    actor = await req.bound_actor()
    q: FiguresQuery = req.query
    if (q.scope is None) != (q.scope_id is None):
        raise ApiError(422, "validation", "scope 和 scope_id 须同时给出。",
                       [FieldError(field="query.scope_id", message="scope and scope_id go together")])
    unit = await viewable(actor.id, q.scope, q.scope_id)
    tz = req.services.engine.tz
    start, end = _period(q, req.now, tz)
    rep = await report(unit, start, end)
    if q.format == "xlsx":
        local = start.astimezone(tz), end.astimezone(tz)
        return FileBody(to_xlsx(rep, tz), f"case-figures-{unit.scope}-{unit.id}-{local[0]:%Y%m%d}-"
                                          f"{local[1]:%Y%m%d}.xlsx")
    return FiguresOut(start=start.isoformat(), end=end.isoformat(), total=_row(rep.total),
                      units=[_row(item) for item in rep.units],
                      categories=[CategoryCount(category=label, received=n) for label, n in rep.categories])
