"""先锋骑士 through the mini-program API (/api/v1/riders...): the community's rider settings, the
open delivery routes and mine, claiming and giving one back, marking each stop delivered (with a
photo if wanted) or not home, the welfare alerts a not-home elder living alone raises and their
closing, and the figures.

The rules live in models/rider_core.py (routes, stops, alerts, points) and models/rider_figures.py
(the figures); these views read input, call them and shape the answer. A route, stop or alert the
caller may not see answers 404, exactly like a missing one; a step the rules refuse (a route
another rider claimed first, a stop already marked the other way) answers 409 with the reason in
Chinese. Riders read the diners' names masked (王**); the canteen's and the community's staff in
full.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any, Literal, get_args

from pydantic import BaseModel, Field, field_validator

from bot.api import (
    DAY,
    TEXT,
    XLSX,
    ApiRequest,
    ApiRouter,
    FileBody,
    Id,
    Query,
    Strict,
    invalid,
    not_found,
    real_day,
)
from handlers.cases_api import PhotoIn
from models import media, rider_figures
from models import rider_core as core
from models.canteen import MEAL_LABELS, Menu
from models.cases import local_today
from models.errors import Forbidden
from models.love_figures import is_community_staff
from models.places import Canteen, Community, Grid
from models.residents import Resident
from models.riders import (
    ROUTE_STATE_LABELS,
    STOP_STATE_LABELS,
    PointsBy,
    Route,
    RouteStop,
    StopState,
    WelfareAlert,
)
from models.roles import Role, active_roles
from models.wishes import mask_name

router = ApiRouter("riders")

INSTRUCTION = "请按门铃/敲门，当面交给本人。"
ROUTE_STATE_DOC = ("open 待认领 | claimed 配送中 | done 已完成 | cancelled 已取消 | missed 未送出 (the meal ended "
                   "with nobody having claimed it)")
STOP_STATE_DOC = ("pending 待送达 | delivered 已送达 | not_home 不在家 | cancelled 已取消 (the meal was cancelled) | "
                  "unmarked 未标记 (still pending when the meal ended)")
POINTS_BY_DOC = "route: the points once per completed route | stop: the points per delivered stop"
PointsByCode = Literal["route", "stop"]
assert set(get_args(PointsByCode)) == {PointsBy.ROUTE, PointsBy.STOP}, "PointsByCode must list models.riders.PointsBy"


# ---------------------------------------------------------------------------- shapes: settings


class SettingsOut(BaseModel):
    community_id: int
    community: str
    points_by: str = Field(description=POINTS_BY_DOC)
    points: int = Field(description="love-bank points a rider earns (per route or per delivered stop)")
    max_stops: int = Field(description="neighbouring buildings of one grid share a route up to this many stops")
    depart_minutes: int = Field(description="a route's target departure: this many minutes after serving starts")


class CommunityQuery(Query):
    community_id: Id | None = Field(default=None, description="default: the community the caller is staff of")


class SettingsIn(Strict):
    """Only what is given changes."""

    points_by: PointsByCode | None = Field(default=None, description=POINTS_BY_DOC)
    points: int | None = Field(default=None, ge=0, le=core.POINTS_MAX)
    max_stops: int | None = Field(default=None, ge=1, le=core.MAX_STOPS_MAX)
    depart_minutes: int | None = Field(default=None, ge=0, le=core.DEPART_MINUTES_MAX)


# ---------------------------------------------------------------------------- shapes: routes and stops


class PhotoOut(BaseModel):
    state: str = Field(description="stored (our copy) | saving (fetched within a minute or two) | lost (WeChat had "
                                   "already forgotten it, or it was not an image)")


class StopOut(BaseModel):
    id: int
    position: int = Field(description="walking order on the route, from 1")
    building: str
    unit: str
    floor: int
    room: str
    address: str = Field(description="building, unit and room, e.g. 5号楼3单元101室")
    name: str = Field(description="the diner: masked (王**) for riders, in full for staff")
    resident_id: int | None = Field(description="staff only")
    diet: str = Field(description="what the rider must respect (软食, 低盐, 低糖, 过敏：...)")
    state: str = Field(description=STOP_STATE_DOC)
    state_label: str
    marked_at: str | None
    note: str
    photo: PhotoOut | None = Field(description="the delivery photo, if one was sent")


class RouteSummary(BaseModel):
    id: int
    community_id: int
    canteen_id: int
    canteen: str
    menu_id: int
    day: str
    meal: str = Field(description="breakfast 早餐 | lunch 午餐 | dinner 晚餐")
    meal_label: str
    name: str = Field(description="the buildings it serves")
    position: int = Field(description="its order among the meal's routes")
    depart_at: str = Field(description="the target departure")
    serve_until_at: str = Field(description="the end of the meal: delivered by then counts as on time")
    state: str = Field(description=ROUTE_STATE_DOC)
    state_label: str
    mine: bool = Field(description="the caller is its rider")
    rider: str = Field(description="its rider (empty: nobody yet); masked for other riders")
    claimed_at: str | None
    completed_at: str | None
    stop_count: int = Field(description="stops to serve (cancelled ones left out)")
    pending: int
    delivered: int
    not_home: int
    unmarked: int = Field(description="stops still pending when the meal ended")
    points_by: str = Field(description=POINTS_BY_DOC)
    points: int = Field(description="the community's rate: per route or per delivered stop")


class RouteOut(RouteSummary):
    view: str = Field(description="rider (names masked) | staff (the canteen's or community's staff)")
    instruction: str
    stops: list[StopOut] = Field(description="in walking order")


class RouteList(BaseModel):
    items: list[RouteSummary]


class RoutesQuery(Query):
    mine: bool = Field(default=False, description="true: my routes (claimed and not done, and today's done); "
                                                  "default: the open routes of my community")


class DeliveredIn(Strict):
    note: str = Field(default="", max_length=core.NOTE_MAX, pattern=TEXT)
    photo: PhotoIn | None = Field(default=None, description="a photo of the meal handed over (optional)")


class NotHomeIn(Strict):
    note: str = Field(min_length=1, max_length=core.NOTE_MAX, pattern=TEXT,
                      description="what the rider saw (the grid worker and family read it)")


# ---------------------------------------------------------------------------- shapes: alerts


class AlertOut(BaseModel):
    id: int
    state: str = Field(description="open | closed")
    resident_id: int
    resident: str
    address: str
    community_id: int
    grid: str
    route_id: int
    stop_id: int
    day: str
    meal_label: str
    raised_at: str
    rider: str = Field(description="the rider who found nobody home, masked")
    note: str = Field(description="the rider's note")
    closed_at: str | None
    closed_by: str
    outcome: str = Field(description="what the person who closed it found")


class AlertList(BaseModel):
    items: list[AlertOut]


class CloseIn(Strict):
    outcome: str = Field(min_length=core.OUTCOME_MIN, max_length=core.OUTCOME_MAX, pattern=TEXT,
                         description="what was found, e.g. 已电话联系，老人去女儿家了，平安")


# ---------------------------------------------------------------------------- shapes: figures


class FiguresQuery(Query):
    from_: str | None = Field(default=None, alias="from", pattern=DAY,
                              description="YYYY-MM-DD, the first day counted (default: the 1st of this month)")
    to: str | None = Field(default=None, pattern=DAY, description="YYYY-MM-DD, the last day counted; default today")
    format: Literal["json", "xlsx"] = Field(default="json", description="xlsx: the same as a spreadsheet")
    community_id: Id | None = Field(default=None, description="default: the caller's community (community or "
                                                              "canteen staff) or the first of their sub-district")

    _days = field_validator("from_", "to")(real_day)


class MealFiguresOut(BaseModel):
    day: str | None = Field(description="null in the total")
    meal: str
    meal_label: str
    routes: int
    done: int
    stops: int
    delivered: int
    not_home: int
    pending: int
    on_time: int = Field(description="delivered by the end of the meal")
    on_time_pct: int | None = Field(description="on_time / delivered, %")
    alerts: int = Field(description="welfare alerts raised")
    alerts_closed: int
    close_median_minutes: int | None = Field(description="raising to closing, median over the closed ones")


class FiguresOut(BaseModel):
    community_id: int
    name: str
    first_day: str
    last_day: str
    meals: list[MealFiguresOut] = Field(description="per day and meal")
    total: MealFiguresOut
    text: str = Field(description="the same in a few sentences")


# ---------------------------------------------------------------------------- helpers


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


async def _names(ids: set[int | None]) -> dict[int, str]:
    wanted = sorted(i for i in ids if i is not None)
    return {int(k): str(v) for k, v in await Resident.filter(id__in=wanted).values_list("id", "name")} if wanted \
        else {}


async def _staff_community(req: ApiRequest, community_id: int | None) -> tuple[Resident, Community]:
    """The caller and the community, when they are its community staff (no id: the first community they
    are staff of); else 404."""
    actor = await req.bound_actor()
    if community_id is None:
        community_id = next((r.scope_id for r in await active_roles(actor.id)
                             if r.role == Role.COMMUNITY_STAFF and r.scope_id is not None), None)
    community = await Community.get_or_none(id=community_id) if community_id is not None else None
    if community is None or not await is_community_staff(actor.id, community.id):
        raise not_found()
    return actor, community


async def _settings_out(community: Community) -> SettingsOut:
    settings = await core.settings_of(community.id)
    return SettingsOut(community_id=community.id, community=community.name, points_by=settings.points_by,
                       points=settings.points, max_stops=settings.max_stops, depart_minutes=settings.depart_minutes)


async def _rider(req: ApiRequest) -> Resident:
    """The caller, when they are a pioneer rider; else 404."""
    actor = await req.bound_actor()
    if not any(r.role == Role.RIDER for r in await active_roles(actor.id)):
        raise not_found()
    return actor


def _counts(stops: list[RouteStop]) -> dict[str, int]:
    live = [s for s in stops if s.state != StopState.CANCELLED]
    return dict(stop_count=len(live), pending=sum(s.state == StopState.PENDING for s in live),
                delivered=sum(s.state == StopState.DELIVERED for s in live),
                not_home=sum(s.state == StopState.NOT_HOME for s in live),
                unmarked=sum(s.state == StopState.UNMARKED for s in live))


async def _summaries(routes: list[Route], actor: Resident, *, staff: bool = False) -> list[dict[str, Any]]:
    """The summary fields of each route, as the caller sees it (staff: the rider's name in full)."""
    if not routes:
        return []
    menus = {m.id: m for m in await Menu.filter(id__in=sorted({r.menu_id for r in routes}))}
    canteens = dict(await Canteen.filter(id__in=sorted({m.canteen_id for m in menus.values()})).values_list(
        "id", "name"))
    stops: dict[int, list[RouteStop]] = {r.id: [] for r in routes}
    for stop in await RouteStop.filter(route_id__in=sorted(stops)):
        stops[stop.route_id].append(stop)
    riders = await _names({r.rider_id for r in routes})
    settings = {c: await core.settings_of(c) for c in sorted({r.community_id for r in routes})}
    out = []
    for route in routes:
        menu = menus[route.menu_id]
        rider = riders.get(route.rider_id or 0, "")
        mine = route.rider_id == actor.id
        out.append(dict(
            id=route.id, community_id=route.community_id, canteen_id=menu.canteen_id,
            canteen=str(canteens.get(menu.canteen_id, "")), menu_id=menu.id, day=menu.day.isoformat(),
            meal=menu.meal, meal_label=MEAL_LABELS.get(menu.meal, menu.meal), name=route.name,
            position=route.position, depart_at=route.depart_at.isoformat(),
            serve_until_at=menu.serve_until_at.isoformat(), state=route.state,
            state_label=ROUTE_STATE_LABELS.get(route.state, route.state), mine=mine,
            rider=rider if staff or mine or not rider else mask_name(rider), claimed_at=_iso(route.claimed_at),
            completed_at=_iso(route.completed_at), **_counts(stops[route.id]),
            points_by=settings[route.community_id].points_by, points=settings[route.community_id].points))
    return out


async def _route_out(route_id: int, actor: Resident) -> RouteOut:
    """The route with its stops, as the caller may see it (NotFound when they may not)."""
    route = await core.get_route(route_id, actor.id)
    staff = await core.is_route_staff(route, actor.id)
    stops = await core.stops_of(route.id)
    names = await _names({s.resident_id for s in stops})
    summary = (await _summaries([route], actor, staff=staff))[0]
    return RouteOut(**summary, view="staff" if staff else "rider", instruction=INSTRUCTION, stops=[StopOut(
        id=s.id, position=s.position, building=s.building, unit=s.unit, floor=s.floor, room=s.room,
        address=core.stop_address(s),
        name=names.get(s.resident_id, "") if staff else mask_name(names.get(s.resident_id, "")),
        resident_id=s.resident_id if staff else None, diet=s.diet, state=s.state,
        state_label=STOP_STATE_LABELS.get(s.state, s.state), marked_at=_iso(s.marked_at), note=s.note,
        photo=PhotoOut(state=media.state(s.photo)) if isinstance(s.photo, dict) and s.photo else None)
        for s in stops])


async def _stop_route(req: ApiRequest) -> tuple[Resident, RouteStop]:
    """The caller and the path's stop, when they may see its route; else 404."""
    actor = await req.bound_actor()
    stop = await RouteStop.get_or_none(id=req.path["stop_id"])
    if stop is None:
        raise not_found()
    await core.get_route(stop.route_id, actor.id)
    return actor, stop


async def _alert_out(alert: WelfareAlert) -> AlertOut:
    stop = await RouteStop.get(id=alert.stop_id)
    route = await Route.get(id=stop.route_id)
    menu = await Menu.get(id=route.menu_id)
    names = await _names({alert.resident_id, alert.rider_id, alert.closed_by_id})  # type: ignore[attr-defined]
    grid = await Grid.filter(id=alert.grid_id).first().values_list("name", flat=True) if alert.grid_id else ""
    rider = names.get(alert.rider_id or 0, "")  # type: ignore[attr-defined]
    return AlertOut(
        id=alert.id, state="closed" if alert.closed_at is not None else "open", resident_id=alert.resident_id,
        resident=names.get(alert.resident_id, ""), address=core.stop_address(stop),
        community_id=alert.community_id, grid=str(grid or ""), route_id=route.id, stop_id=stop.id,
        day=menu.day.isoformat(), meal_label=MEAL_LABELS.get(menu.meal, menu.meal),
        raised_at=alert.raised_at.isoformat(),
        rider=mask_name(rider) if rider else "", note=alert.note, closed_at=_iso(alert.closed_at),
        closed_by=names.get(alert.closed_by_id or 0, ""), outcome=alert.outcome)  # type: ignore[attr-defined]


BODY_FIELDS = frozenset(SettingsIn.model_fields)


def _field_of(exc: ValueError) -> str:
    """body.<field> when the domain's message names one ("points: ..." or "points must..."), else body."""
    first = str(exc).replace(":", " ").split(" ", 1)[0]
    return f"body.{first}" if first in BODY_FIELDS else "body"


# ---------------------------------------------------------------------------- settings


@router.route("GET", "/riders/settings", summary="The community's pioneer rider settings (community staff)",
              query=CommunityQuery, response=SettingsOut, errors=(404, 409))
async def get_settings(req: ApiRequest) -> SettingsOut:
    """Points per route or per delivered stop, how many stops a route holds at most, and the target
    departure after serving starts (the defaults until changed)."""
    _, community = await _staff_community(req, req.query.community_id)
    return await _settings_out(community)


@router.route("PATCH", "/riders/settings", summary="Change the community's pioneer rider settings (community staff)",
              query=CommunityQuery, body=SettingsIn, response=SettingsOut, errors=(404, 409))
async def patch_settings(req: ApiRequest) -> SettingsOut:
    """Only what is given changes; routes already built and points already credited stay."""
    actor, community = await _staff_community(req, req.query.community_id)
    body: SettingsIn = req.body
    try:
        await core.save_settings(community.id, now=req.now, actor_id=actor.id, points_by=body.points_by,
                                 points=body.points, max_stops=body.max_stops, depart_minutes=body.depart_minutes)
    except ValueError as exc:
        raise invalid(_field_of(exc), str(exc)) from None
    return await _settings_out(community)


# ---------------------------------------------------------------------------- routes


@router.route("GET", "/riders/routes", summary="Delivery routes: the open ones of my community, or mine (rider)",
              query=RoutesQuery, response=RouteList, errors=(404, 409))
async def list_routes(req: ApiRequest) -> RouteList:
    """Without mine: the routes waiting for a rider in my community, today and later, by departure.
    With mine=true: those I claimed and have not finished, and today's finished ones. Pioneer riders;
    404 for anyone else."""
    actor = await _rider(req)
    routes = await (core.routes_of if req.query.mine else core.open_routes)(actor.id, req.now)
    return RouteList(items=[RouteSummary(**s) for s in await _summaries(routes, actor)])


@router.route("GET", "/riders/routes/{route_id}", summary="A route with its stops in walking order",
              response=RouteOut, errors=(409,))
async def get_route(req: ApiRequest) -> RouteOut:
    """Each stop's building, unit, floor and room, the diner (masked for riders), the diet to respect
    and what became of it. For its rider, the riders of its community while it is open, the staff of
    its canteen and of its community; 404 for anyone else."""
    actor = await req.bound_actor()
    return await _route_out(req.path["route_id"], actor)


@router.route("POST", "/riders/routes/{route_id}/claim", summary="Claim an open route (rider)", response=RouteOut,
              errors=(409,))
async def post_claim(req: ApiRequest) -> RouteOut:
    """The first rider to claim it gets it; claiming it again is once; claimed by another rider: 409.
    The answer has the stops."""
    actor = await req.bound_actor()
    route = await core.claim(req.path["route_id"], actor.id, req.now)  # NotFound for who is not its community's rider
    return await _route_out(route.id, actor)


@router.route("POST", "/riders/routes/{route_id}/release", summary="Give a claimed route back (its rider, before "
              "the first stop is marked)", response=RouteOut, errors=(409,))
async def post_release(req: ApiRequest) -> RouteOut:
    """It is open again and the community's riders are told; once a stop is marked: 409."""
    actor = await req.bound_actor()
    route = await core.release(req.path["route_id"], actor.id, req.now)  # NotFound for who may not see it
    return await _route_out(route.id, actor)


# ---------------------------------------------------------------------------- stops


@router.route("POST", "/riders/stops/{stop_id}/delivered", summary="Mark a stop delivered (its route's rider)",
              body=DeliveredIn, response=RouteOut, errors=(409,))
async def post_delivered(req: ApiRequest) -> RouteOut:
    """Optionally with a note and a photo ({media_id} or {pic_url}), kept in our own store. The same
    mark again changes nothing (a retry is safe); a stop marked not home: 409. When every stop is
    marked the route is done and the rider's points are credited, once."""
    actor, stop = await _stop_route(req)
    body: DeliveredIn = req.body
    await core.mark_stop(stop.id, actor.id, delivered=True, now=req.now, note=body.note,
                         photo=body.photo.stored() if body.photo is not None else None)
    return await _route_out(stop.route_id, actor)


@router.route("POST", "/riders/stops/{stop_id}/not-home", summary="Mark a stop not home (its route's rider)",
              body=NotHomeIn, response=RouteOut, errors=(409,))
async def post_not_home(req: ApiRequest) -> RouteOut:
    """With a note of what the rider saw. For an elder who lives alone a welfare alert goes at once,
    at any hour, to the grid worker of her grid (else the community's staff) and her family. The
    same mark again changes nothing; a stop marked delivered: 409."""
    actor, stop = await _stop_route(req)
    body: NotHomeIn = req.body
    await core.mark_stop(stop.id, actor.id, delivered=False, now=req.now, note=body.note)
    return await _route_out(stop.route_id, actor)


# ---------------------------------------------------------------------------- welfare alerts


@router.route("GET", "/riders/alerts", summary="Open welfare alerts (安全确认) I should follow up", response=AlertList,
              errors=(409,))
async def list_alerts(req: ApiRequest) -> AlertList:
    """Elders living alone whom a rider found not home, not yet recorded safe: for the grid worker of
    their grid, their community's staff and their family; empty for anyone else."""
    actor = await req.bound_actor()
    return AlertList(items=[await _alert_out(a) for a in await core.open_alerts(actor.id, req.now)])


@router.route("POST", "/riders/alerts/{alert_id}/close", summary="Record that the elder is safe and close the alert",
              body=CloseIn, response=AlertOut, errors=(409,))
async def post_close_alert(req: ApiRequest) -> AlertOut:
    """The outcome (2 to 100 characters) is kept and the others who were alerted are told. Closing it
    again is once. The grid worker, community staff or family of the elder; 404 for anyone else."""
    actor = await req.bound_actor()
    alert = await WelfareAlert.get_or_none(id=req.path["alert_id"])
    if alert is None:
        raise not_found()
    body: CloseIn = req.body
    closed = await core.close_alert(alert.id, actor.id, body.outcome, req.now)
    return await _alert_out(closed)


# ---------------------------------------------------------------------------- figures


def _days(q: FiguresQuery, now: datetime) -> tuple[date, date]:
    today = local_today(now)
    last = date.fromisoformat(q.to) if q.to else today
    first = date.fromisoformat(q.from_) if q.from_ else min(today.replace(day=1), last)
    if last < first:
        raise invalid("query.to", "must not be before from")
    if (last - first).days >= rider_figures.PERIOD_DAYS_MAX:
        raise invalid("query.from", f"at most {rider_figures.PERIOD_DAYS_MAX} days")
    return first, last


def _meal_out(line: rider_figures.MealFigures) -> MealFiguresOut:
    return MealFiguresOut(
        day=line.day.isoformat() if line.day else None, meal=line.meal, meal_label=line.meal_label or "合计",
        routes=line.routes, done=line.done, stops=line.stops, delivered=line.delivered, not_home=line.not_home,
        pending=line.pending, on_time=line.on_time, on_time_pct=line.on_time_pct, alerts=line.alerts,
        alerts_closed=line.alerts_closed, close_median_minutes=line.close_median_minutes)


@router.route("GET", "/riders/figures", summary="Delivery figures per meal (community, canteen or sub-district "
              "staff)", query=FiguresQuery, response=FiguresOut, produces=XLSX, errors=(404, 409))
async def get_figures(req: ApiRequest) -> FiguresOut | FileBody:
    """For the meals of the days from–to (default: this month up to today, at most a year), per day
    and meal and in all: routes, stops delivered and not home, the on-time share (delivered by the
    end of the meal), welfare alerts raised and closed and the median minutes to close them. The
    community's staff, the staff of its canteen and of its sub-district; 404 for anyone else.
    format=xlsx: a spreadsheet."""
    q: FiguresQuery = req.query
    actor = await req.bound_actor()
    first, last = _days(q, req.now)
    try:
        community_id = q.community_id if q.community_id is not None else \
            await rider_figures.default_community(actor.id)
        figs = await rider_figures.figures(actor.id, community_id, first, last)
    except Forbidden:
        raise not_found() from None
    if q.format == "xlsx":
        return FileBody(rider_figures.figures_xlsx(figs),
                        f"rider-figures-{figs.community_id}-{first:%Y%m%d}-{last:%Y%m%d}.xlsx")
    return FiguresOut(community_id=figs.community_id, name=figs.name, first_day=first.isoformat(),
                      last_day=last.isoformat(), meals=[_meal_out(m) for m in figs.meals],
                      total=_meal_out(figs.total), text=rider_figures.figures_text(figs))
