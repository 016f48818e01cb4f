"""先锋骑士: delivery routes built at each meal's cut-off, claims, stops, welfare alerts and points.

- ``build_routes`` (called at the end of the canteen's cut-off) turns the meal's charged delivery
  bookings into ``RouteStop`` rows, grouped into ``Route`` rows by building: neighbouring buildings
  of one grid share a route while it stays within the community's ``max_stops``, and a building
  with more stops than that is cut into parts by walking order (named by units). Stops are in
  walking order (building, unit, floor, room) with the diet notes the rider must respect. The
  community's riders are told once per meal, and a route still open 30 minutes before its
  departure alerts the canteen's staff (the due action ``riders.unclaimed``).
- A rider claims an open route of their community: the first claim wins by a conditional UPDATE
  on (state, version); the winner's retry changes nothing, anyone else is refused.
- Each stop is marked delivered (the booking is then served) or not home, once. Not home for an
  elder whose living alone is verified raises a ``WelfareAlert`` pushed at once, at any hour, to
  the grid worker of her grid (else the community staff) and her family proxies; it stays open
  until one of them records what they found.
- When every stop is marked the route is done and the rider earns the community's points (per
  route or per delivered stop) through the ledger, once, under ``route:<id>:points``.
- The meal's end (called first in the canteen's meal end) settles the rest: a claimed route's
  pending stops become unmarked and the route is done (points per route only when the rider
  marked a stop), an open route is missed and the canteen's staff are told.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from typing import Any, cast

from tortoise.exceptions import IntegrityError
from tortoise.expressions import F, Q
from tortoise.transactions import in_transaction

from models import cases, media
from models.canteen import Booking, BookingStatus, Diner, Menu, MenuState, Mode
from models.canteen_booking import diet_text, meal_label, staff_of
from models.canteen_wallet import is_canteen_staff
from models.errors import NotFound, UserFacingError
from models.facts import verified_statuses
from models.jobs import cancel_actions, register_action, schedule_action
from models.ledger import AccountKind, Asset, Source, account, points_of, transfer
from models.outbox import Priority
from models.places import Building, Canteen, Community
from models.proxies import ProxyLink, ProxyStatus
from models.push import push_text
from models.residents import Resident
from models.riders import (
    STOP_STATE_LABELS,
    PointsBy,
    RiderSettings,
    Route,
    RouteState,
    RouteStop,
    StopState,
    WelfareAlert,
)
from models.roles import Role, StaffRole

UNCLAIMED = "riders.unclaimed"  # the due action: a route still open this long before departure
UNCLAIMED_BEFORE = timedelta(minutes=30)
KEEP_PHOTO = "riders.photo"  # the due action: fetch a delivery photo into our store while WeChat has it
STALE = "riders.stale"  # the due action: a route claimed but not finished when its meal ended
LIVES_ALONE = "lives_alone"  # the verified status (models.facts) that makes "not home" an alert
NOTE_MAX = 100
OUTCOME_MIN, OUTCOME_MAX = 2, 100
POINTS_MAX = 1000
MAX_STOPS_MAX = 50
DEPART_MINUTES_MAX = 180
DIET_MAX = 120
NAME_MAX = 64
MARKED = (StopState.DELIVERED, StopState.NOT_HOME)
HOW_TO_CLAIM = "回复“送餐路线”认领。"
HOW_TO_CLOSE = "确认安全后请回复“安全确认”记录结果。"


@dataclass(frozen=True)
class Settings:
    community_id: int
    points_by: str  # PointsBy.ROUTE or PointsBy.STOP
    points: int  # per route, or per delivered stop
    max_stops: int  # neighbouring buildings share a route up to this many stops
    depart_minutes: int  # the target departure: this many minutes after serving starts


DEFAULTS = Settings(0, PointsBy.ROUTE, 10, 8, 0)


# ---------------------------------------------------------------------------- words


def hm(when: datetime) -> str:
    return f"{when.astimezone(cases.CONTEXT.tz):%H:%M}"


def when_text(when: datetime) -> str:
    """12月3日11:05"""
    local = when.astimezone(cases.CONTEXT.tz)
    return f"{local.month}月{local.day}日{local:%H:%M}"


def stop_address(stop: RouteStop) -> str:
    """5号楼3单元201室 (the parts the stop has)."""
    return (stop.building + (f"{stop.unit}单元" if stop.unit else "") + (f"{stop.room}室" if stop.room else "")) \
        or "地址未登记"


def floor_of(room: str) -> int:
    """The floor in a room number: "201" → 2, "1203" → 12, "5" or "" → 0."""
    found = re.findall(r"\d+", room)
    digits = found[-1] if found else ""
    return int(digits[:-2]) if len(digits) >= 3 else 0


def _natural(text: str) -> tuple[tuple[int, int, str], ...]:
    """A sort key putting 2号楼 before 10号楼."""
    return tuple((0, int(part), "") if part.isdigit() else (1, 0, part)
                 for part in re.split(r"(\d+)", text) if part)


def diet_of(diner: Diner | None) -> str:
    """软食、低盐；过敏：花生 (empty when nothing)."""
    text = diet_text(diner)
    return "" if text == "无" else text[:DIET_MAX]


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


# ---------------------------------------------------------------------------- settings


async def settings_of(community_id: int) -> Settings:
    """The community's rider settings: its own row, else the defaults."""
    row = await RiderSettings.get_or_none(community_id=community_id)
    if row is None:
        return Settings(community_id, DEFAULTS.points_by, DEFAULTS.points, DEFAULTS.max_stops,
                        DEFAULTS.depart_minutes)
    return Settings(community_id, row.points_by, row.points, row.max_stops, row.depart_minutes)


def _int_in(name: str, value: Any, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"{name} must be a whole number from {low} to {high}")
    return value


async def save_settings(
    community_id: int, *, now: datetime, actor_id: int | None, points_by: str | None = None,
    points: int | None = None, max_stops: int | None = None, depart_minutes: int | None = None,
) -> Settings:
    """Change some of the community's rider settings (ValueError names a bad value). New values
    apply to routes built (max_stops, depart_minutes) or completed (points) afterwards."""
    if points_by is not None and points_by not in (PointsBy.ROUTE, PointsBy.STOP):
        raise ValueError("points_by must be route or stop")
    changes: dict[str, Any] = {}
    if points_by is not None:
        changes["points_by"] = points_by
    if points is not None:
        changes["points"] = _int_in("points", points, 0, POINTS_MAX)
    if max_stops is not None:
        changes["max_stops"] = _int_in("max_stops", max_stops, 1, MAX_STOPS_MAX)
    if depart_minutes is not None:
        changes["depart_minutes"] = _int_in("depart_minutes", depart_minutes, 0, DEPART_MINUTES_MAX)
    if not await Community.exists(id=community_id):
        raise NotFound("没有找到这个社区。")
    changes.update(updated_at=now, updated_by_id=actor_id)
    if not await RiderSettings.filter(community_id=community_id).update(**changes):
        try:
            async with in_transaction():
                await RiderSettings.create(community_id=community_id, **changes)
        except IntegrityError:  # made concurrently
            await RiderSettings.filter(community_id=community_id).update(**changes)
    return await settings_of(community_id)


# ---------------------------------------------------------------------------- who is who


async def riders_of(community_id: int) -> list[int]:
    """The community's pioneer riders (active grants)."""
    ids = await StaffRole.filter(role=Role.RIDER, community_id=community_id, revoked_at=None).order_by(
        "id").values_list("resident_id", flat=True)
    return sorted({int(cast(int, i)) for i in ids})


async def rider_communities(rider_id: int) -> set[int]:
    ids = await StaffRole.filter(role=Role.RIDER, resident_id=rider_id, revoked_at=None).values_list(
        "community_id", flat=True)
    return {int(cast(int, i)) for i in ids if i is not None}


async def is_rider_of(rider_id: int, community_id: int) -> bool:
    return await StaffRole.filter(role=Role.RIDER, resident_id=rider_id, community_id=community_id,
                                  revoked_at=None).exists()


async def _community_staff(community_id: int) -> list[int]:
    ids = await StaffRole.filter(role=Role.COMMUNITY_STAFF, community_id=community_id, revoked_at=None).order_by(
        "id").values_list("resident_id", flat=True)
    return sorted({int(cast(int, i)) for i in ids})


def _day_start(now: datetime) -> datetime:
    """The start of today (local), in UTC."""
    return datetime.combine(cases.local_today(now), time(0), tzinfo=cases.CONTEXT.tz).astimezone(UTC)


# ---------------------------------------------------------------------------- building routes


@dataclass
class _Stop:
    booking: Booking
    resident: Resident
    building: Building | None
    diet: str

    def order(self) -> tuple[Any, ...]:
        name = self.building.name if self.building else ""
        grid = cast(int, self.building.grid_id) if self.building else 0  # type: ignore[attr-defined]
        return (grid, _natural(name), self.building.id if self.building else 0, _natural(self.resident.unit),
                floor_of(self.resident.room), _natural(self.resident.room), self.booking.id)


@dataclass
class _Group:
    labels: list[str]  # what it serves: 1号楼, or 1号楼2单元 for part of a building
    stops: list[_Stop]


def _parts(members: list[_Stop], max_stops: int) -> list[_Group]:
    """A building's stops (in walking order) as one group, or, above max_stops, as the fewest
    near-equal consecutive parts that fit, each named by the units it covers."""
    name = members[0].building.name if members[0].building else "未登记楼栋"
    if len(members) <= max_stops:
        return [_Group([name], list(members))]
    count = -(-len(members) // max_stops)
    size = -(-len(members) // count)
    parts: list[_Group] = []
    for start in range(0, len(members), size):
        chunk = members[start:start + size]
        units = list(dict.fromkeys(s.resident.unit for s in chunk))
        if all(units):
            label = f"{name}{units[0]}单元" if len(units) == 1 else f"{name}{units[0]}-{units[-1]}单元"
        else:
            label = name
        parts.append(_Group([label], chunk))
    return parts


def _group(stops: list[_Stop], max_stops: int) -> list[_Group]:
    """One group per building, by grid and building (a building above max_stops in parts, in
    walking order); a group joins the one before it when both are of one grid and the two stay
    within max_stops."""
    by_building: dict[int, list[_Stop]] = {}
    for stop in sorted(stops, key=_Stop.order):
        by_building.setdefault(stop.building.id if stop.building else 0, []).append(stop)
    groups: list[_Group] = []
    grid_of_last: int | None = None
    for members in by_building.values():
        building = members[0].building
        grid = cast(int, building.grid_id) if building else None  # type: ignore[attr-defined]
        for part in _parts(members, max_stops):
            if groups and grid is not None and grid == grid_of_last and \
                    len(groups[-1].stops) + len(part.stops) <= max_stops:
                groups[-1].labels.extend(part.labels)
                groups[-1].stops.extend(part.stops)
            else:
                groups.append(part)
            grid_of_last = grid
    return groups


def _route_name(group: _Group) -> str:
    return _clip("、".join(dict.fromkeys(group.labels)), NAME_MAX - 4)


async def build_routes(menu_id: int, now: datetime) -> list[Route]:
    """Make routes of the menu's charged delivery bookings not on a route yet (after its cut-off);
    the menu's routes by position. Running it again adds nothing."""
    menu = await Menu.get_or_none(id=menu_id)
    if menu is None or menu.state not in (MenuState.CLOSED, MenuState.DONE):
        return []
    canteen = await Canteen.get(id=menu.canteen_id)
    community_id = cast(int, canteen.community_id)  # type: ignore[attr-defined]
    settings = await settings_of(community_id)
    bookings = await Booking.filter(menu_id=menu.id, mode=Mode.DELIVERY, status=BookingStatus.CHARGED).order_by("id")
    taken = set(await RouteStop.filter(booking_id__in=[b.id for b in bookings]).values_list("booking_id", flat=True))
    fresh = [b for b in bookings if b.id not in taken]
    made: list[Route] = []
    if fresh:
        residents = {r.id: r for r in await Resident.filter(id__in=[b.resident_id for b in fresh])}
        buildings = {b.id: b for b in await Building.filter(
            id__in=[r.building_id for r in residents.values() if r.building_id is not None])}  # type: ignore[attr-defined]
        diners = {d.resident_id: d for d in await Diner.filter(resident_id__in=list(residents))}
        stops = [_Stop(b, residents[b.resident_id],
                       buildings.get(cast(int, residents[b.resident_id].building_id)),  # type: ignore[attr-defined]
                       diet_of(diners.get(b.resident_id))) for b in fresh]
        depart_at = menu.serve_from_at + timedelta(minutes=settings.depart_minutes)
        for group in _group(stops, settings.max_stops):
            route = await _make_route(menu, community_id, group, depart_at, now)
            if route is not None:
                made.append(route)
    if made:
        await _tell_riders_new(menu, community_id, now)
    return await Route.filter(menu_id=menu.id).order_by("position", "id")


async def _make_route(menu: Menu, community_id: int, group: _Group, depart_at: datetime,
                      now: datetime) -> Route | None:
    """One route with its stops, in one transaction; None when a concurrent build took its bookings."""
    base = _route_name(group)
    names = set(await Route.filter(menu_id=menu.id).values_list("name", flat=True))
    name, n = base, 1
    while name in names:
        n += 1
        name = f"{base}（{n}）"
    last = await Route.filter(menu_id=menu.id).order_by("-position").first()
    try:
        async with in_transaction():
            route = await Route.create(menu_id=menu.id, community_id=community_id, name=name,
                                       position=(last.position if last else 0) + 1, depart_at=depart_at,
                                       created_at=now)
            for position, stop in enumerate(group.stops, 1):
                resident = stop.resident
                await RouteStop.create(route_id=route.id, booking_id=stop.booking.id, resident_id=resident.id,
                                       position=position, building=stop.building.name if stop.building else "",
                                       unit=resident.unit, floor=floor_of(resident.room), room=resident.room,
                                       diet=stop.diet)
    except IntegrityError:
        return None
    await schedule_action(UNCLAIMED, f"route:{route.id}", depart_at - UNCLAIMED_BEFORE, now)
    return route


async def _tell_riders_new(menu: Menu, community_id: int, now: datetime) -> None:
    routes = await Route.filter(menu_id=menu.id, state=RouteState.OPEN).order_by("depart_at")
    if not routes:
        return
    stops = await RouteStop.filter(route_id__in=[r.id for r in routes], state=StopState.PENDING).count()
    await push_text(await riders_of(community_id),
                    f"【先锋骑士】新的送餐路线：{meal_label(menu)}{len(routes)}条，共{stops}户，"
                    f"{hm(routes[0].depart_at)}出发。{HOW_TO_CLAIM}",
                    f"riders:menu:{menu.id}:new", now)


# ---------------------------------------------------------------------------- lists


async def open_routes(rider_id: int, now: datetime) -> list[Route]:
    """Open routes of the rider's communities, from today on, whose meal is not over, by departure."""
    communities = await rider_communities(rider_id)
    if not communities:
        return []
    return await Route.filter(community_id__in=list(communities), state=RouteState.OPEN,
                              depart_at__gte=_day_start(now), menu__serve_until_at__gt=now).order_by(
        "depart_at", "position", "id").prefetch_related("menu")


async def routes_of(rider_id: int, now: datetime) -> list[Route]:
    """The rider's routes: claimed and not done by departure, then those done today."""
    claimed = await Route.filter(rider_id=rider_id, state=RouteState.CLAIMED).order_by(
        "depart_at", "id").prefetch_related("menu")
    done = await Route.filter(rider_id=rider_id, state=RouteState.DONE, completed_at__gte=_day_start(now)).order_by(
        "completed_at", "id").prefetch_related("menu")
    return [*claimed, *done]


async def may_see_route(route: Route, viewer_id: int) -> bool:
    """The route's rider, a rider of its community while it is open, the staff of its canteen (its
    community's and sub-district's staff included) or its community's staff."""
    if route.rider_id == viewer_id:
        return True
    if route.state == RouteState.OPEN and await is_rider_of(viewer_id, route.community_id):
        return True
    return await is_route_staff(route, viewer_id)


async def is_route_staff(route: Route, viewer_id: int) -> bool:
    """The staff of the route's canteen (its community's and sub-district's staff included) or its
    community's staff: they read diners' names in full."""
    canteen_id = await Menu.filter(id=route.menu_id).first().values_list("canteen_id", flat=True)
    if await is_canteen_staff(viewer_id, cast(int, canteen_id)):
        return True
    return await StaffRole.filter(resident_id=viewer_id, role=Role.COMMUNITY_STAFF, community_id=route.community_id,
                                  revoked_at=None).exists()


async def _route_staff(canteen_id: int, community_id: int) -> list[int]:
    """Who hears of a route going wrong: the canteen's staff, then the community's staff."""
    return list(dict.fromkeys([*await staff_of(canteen_id), *await _community_staff(community_id)]))


async def get_route(route_id: int, viewer_id: int) -> Route:
    """The route with its menu, for those who may see it (NotFound else)."""
    route = await Route.get_or_none(id=route_id).prefetch_related("menu")
    if route is None or not await may_see_route(route, viewer_id):
        raise NotFound("没有找到这条送餐路线。")
    return route


async def stops_of(route_id: int) -> list[RouteStop]:
    """The route's stops in walking order (cancelled ones too), with their residents."""
    return await RouteStop.filter(route_id=route_id).order_by("position", "id").prefetch_related("resident")


async def stop_count(route_id: int) -> int:
    """The route's stops still to deliver or delivered (cancelled ones left out)."""
    return await RouteStop.filter(route_id=route_id).exclude(state=StopState.CANCELLED).count()


# ---------------------------------------------------------------------------- claiming


def _not_open(route: Route) -> UserFacingError:
    if route.state == RouteState.CANCELLED:
        return UserFacingError("这条路线的订餐都已取消，不用送了。")
    if route.state == RouteState.DONE:
        return UserFacingError("这条路线已经送完了。")
    if route.state == RouteState.MISSED:
        return UserFacingError("这一餐已经结束，这条路线没有送出。")
    return UserFacingError("这条路线刚刚已被其他骑士认领了，看看其他路线吧。回复“送餐路线”查看。")


async def claim(route_id: int, rider_id: int, now: datetime) -> Route:
    """First claim wins; the winner's retry returns the route, anyone else is refused."""
    route = await Route.get_or_none(id=route_id).prefetch_related("menu")
    if route is None or not await is_rider_of(rider_id, route.community_id):
        raise NotFound("没有找到这条送餐路线。")
    if route.rider_id == rider_id and route.state in (RouteState.CLAIMED, RouteState.DONE):
        return route
    if route.state != RouteState.OPEN:
        raise _not_open(route)
    if now >= route.menu.serve_until_at:
        raise UserFacingError(f"{meal_label(route.menu)}已经结束，这条路线不能再认领。")
    won = await Route.filter(id=route.id, state=RouteState.OPEN, version=route.version).update(
        state=RouteState.CLAIMED, rider_id=rider_id, claimed_at=now, version=F("version") + 1)
    route = await Route.get(id=route.id).prefetch_related("menu")
    if not won and not (route.rider_id == rider_id and route.state in (RouteState.CLAIMED, RouteState.DONE)):
        raise _not_open(route)
    return route


async def release(route_id: int, rider_id: int, now: datetime) -> Route:
    """The rider gives the route back before marking any stop: open again, the riders told."""
    route = await Route.get_or_none(id=route_id).prefetch_related("menu")
    if route is None or not await may_see_route(route, rider_id):
        raise NotFound("没有找到这条送餐路线。")
    if route.state == RouteState.OPEN:
        return route  # a retry
    if route.rider_id != rider_id or route.state != RouteState.CLAIMED:
        raise UserFacingError("这条路线不在您的认领中。" if route.rider_id != rider_id
                              else "这条路线已经送完了，不能放弃。")
    if await RouteStop.filter(route_id=route.id, state__in=MARKED).exists():
        raise UserFacingError("已经开始送餐，不能放弃这条路线；送不到的请标记“不在家”。")
    won = await Route.filter(id=route.id, state=RouteState.CLAIMED, rider_id=rider_id, version=route.version).update(
        state=RouteState.OPEN, rider_id=None, claimed_at=None, version=F("version") + 1)
    route = await Route.get(id=route.id).prefetch_related("menu")
    if not won:
        if route.state == RouteState.OPEN:
            return route
        raise UserFacingError("这条路线刚刚有了变化，请重新查看。")
    rider = await Resident.get(id=rider_id)
    others = [i for i in await riders_of(route.community_id) if i != rider_id]
    count = await stop_count(route.id)
    await push_text(others, f"【先锋骑士】{rider.name}放弃了{meal_label(route.menu)}的送餐路线“{route.name}”"
                            f"（{count}户，{hm(route.depart_at)}出发），现在等待认领。{HOW_TO_CLAIM}",
                    f"riders:route:{route.id}:v{route.version}:released", now)
    if now >= route.depart_at - UNCLAIMED_BEFORE:  # its alert time has passed: alert again now
        await schedule_action(UNCLAIMED, f"route:{route.id}", now, now,
                              key=f"{UNCLAIMED}:route:{route.id}:v{route.version}")
    return route


# ---------------------------------------------------------------------------- stops


async def mark_stop(stop_id: int, rider_id: int, *, delivered: bool, now: datetime, note: str = "",
                    photo: dict | None = None) -> RouteStop:
    """The route's rider marks a stop delivered (the booking served) or not home, once; the same
    mark again changes nothing. Not home for an elder living alone raises a welfare alert. The
    last mark completes the route and credits the rider's points."""
    stop = await RouteStop.get_or_none(id=stop_id)
    route = None if stop is None else await Route.get(id=stop.route_id)
    if stop is None or route is None or route.rider_id != rider_id:
        raise NotFound("没有找到这一户，请回复“我的路线”查看。")
    target = StopState.DELIVERED if delivered else StopState.NOT_HOME
    note = " ".join(note.split())
    if len(note) > NOTE_MAX:
        raise UserFacingError(f"备注最多{NOTE_MAX}个字，请精简。")
    if photo is not None and not isinstance(photo, dict):
        raise UserFacingError("照片没有收到，请重新发送。")
    if stop.state == StopState.PENDING:
        if route.state != RouteState.CLAIMED:
            raise _not_open(route)
        async with in_transaction():
            won = await RouteStop.filter(id=stop.id, state=StopState.PENDING).update(
                state=target, marked_at=now, marked_by_id=rider_id, note=note, photo=photo)
            if won and delivered:
                await Booking.filter(id=stop.booking_id, status=BookingStatus.CHARGED).update(
                    status=BookingStatus.SERVED, served_at=now, served_by_id=rider_id, updated_at=now)
            if won and photo and not media.settled(photo):  # WeChat forgets a media id in 3 days
                await schedule_action(KEEP_PHOTO, f"stop:{stop.id}", now, now)
        stop = await RouteStop.get(id=stop.id)
    if stop.state == StopState.CANCELLED:
        raise UserFacingError(f"{stop_address(stop)}的订餐已取消，这一户不用送了。")
    if stop.state == StopState.UNMARKED:
        raise UserFacingError(f"这一餐已经结束，{stop_address(stop)}没有来得及标记，不能再改。"
                              "如果已经送到，请告诉食堂工作人员。")
    if stop.state != target:
        raise UserFacingError(f"{stop_address(stop)}已标记为“{STOP_STATE_LABELS[stop.state]}”，不能再改。")
    # from here on every step is idempotent, so a retried mark finishes what a failed one began
    if target == StopState.NOT_HOME:
        await _raise_alert(stop, route, now)
    await _complete_if_done(route.id, now)
    return await RouteStop.get(id=stop.id).prefetch_related("resident")


async def _complete_if_done(route_id: int, now: datetime) -> bool:
    """Every stop marked: the route done and the points credited, once. Whether it is done."""
    route = await Route.get(id=route_id)
    if route.state == RouteState.DONE:
        return True
    if route.state != RouteState.CLAIMED or route.rider_id is None:
        return False
    if await RouteStop.filter(route_id=route.id, state=StopState.PENDING).exists():
        return False
    rider_id = route.rider_id
    delivered = await RouteStop.filter(route_id=route.id, state=StopState.DELIVERED).count()
    not_home = await RouteStop.filter(route_id=route.id, state=StopState.NOT_HOME).count()
    unmarked = await RouteStop.filter(route_id=route.id, state=StopState.UNMARKED).count()
    settings = await settings_of(route.community_id)
    if settings.points_by == PointsBy.STOP:
        points = settings.points * delivered
    else:  # a route nobody marked a stop of (settled at the meal's end) earns nothing
        points = settings.points if delivered + not_home else 0
    menu = await Menu.get(id=route.menu_id)
    async with in_transaction():
        won = await Route.filter(id=route.id, state=RouteState.CLAIMED, rider_id=rider_id).update(
            state=RouteState.DONE, completed_at=now, version=F("version") + 1)
        if won and points > 0:
            issuing = await account(Asset.POINTS, AccountKind.ISSUING, route.community_id, now)
            await transfer(from_account=issuing, to_account=await points_of(rider_id, now), amount=points,
                           source=Source.DELIVERY, key=f"route:{route.id}:points", now=now, ref=f"route:{route.id}",
                           memo=_clip(f"送餐：{meal_label(menu)}{route.name}", 60), actor_id=rider_id)
    if not won:
        return (await Route.get(id=route.id)).state == RouteState.DONE
    await cancel_actions(UNCLAIMED, f"route:{route.id}")
    earned = f"已为您记入{points}积分，" if points > 0 else ""
    away = f"，不在家{not_home}户" if not_home else ""
    if unmarked:
        text = (f"【先锋骑士】{meal_label(menu)}已经结束，路线“{route.name}”送达{delivered}户{away}，"
                f"还有{unmarked}户没有标记，已按未送达记录；如果其实已经送到，请告诉食堂工作人员。{earned}谢谢您！")
    else:
        text = (f"【先锋骑士】{meal_label(menu)}的路线“{route.name}”已全部送完（送达{delivered}户{away}）。"
                f"{earned}谢谢您！回复“积分”可以查看。")
    await push_text([rider_id], text, f"riders:route:{route.id}:done", now)
    return True


async def end_meal(menu_id: int, now: datetime) -> None:
    """The meal is over: stops still pending become unmarked, a claimed route is done (its points
    credited), an open route is missed and the canteen's staff are told once. Running it again
    changes nothing."""
    routes = await Route.filter(menu_id=menu_id, state__in=(RouteState.OPEN, RouteState.CLAIMED)).order_by("id")
    if not routes:
        return
    await RouteStop.filter(route_id__in=[r.id for r in routes], state=StopState.PENDING).update(
        state=StopState.UNMARKED)
    missed: list[Route] = []
    for route in routes:
        if route.state == RouteState.CLAIMED:
            await _complete_if_done(route.id, now)
        elif await Route.filter(id=route.id, state=RouteState.OPEN).update(state=RouteState.MISSED,
                                                                           version=F("version") + 1):
            missed.append(route)
        await cancel_actions(UNCLAIMED, f"route:{route.id}")
    counts = [await stop_count(r.id) for r in missed]
    if not sum(counts):
        return
    menu = await Menu.get(id=menu_id)
    people = await _route_staff(menu.canteen_id, missed[0].community_id)
    names = "、".join(f"“{r.name}”" for r in missed)
    await push_text(people, f"【先锋骑士】{meal_label(menu)}已经结束，送餐路线{names}没有骑士认领，"
                            f"共{sum(counts)}户的餐没有送出，请联系这些老人。",
                    f"riders:menu:{menu.id}:missed", now)


async def cancel_stop_of(booking_id: int, now: datetime) -> None:
    """A delivery booking cancelled after the cut-off: its pending stop is dropped (the rider told);
    a route left with no stop is cancelled, one left with only marked stops is done."""
    stop = await RouteStop.get_or_none(booking_id=booking_id)
    if stop is None or stop.state != StopState.PENDING:
        return
    if not await RouteStop.filter(id=stop.id, state=StopState.PENDING).update(state=StopState.CANCELLED,
                                                                              marked_at=now):
        return
    route = await Route.get(id=stop.route_id).prefetch_related("menu")
    if route.rider_id is not None and route.state == RouteState.CLAIMED:
        await push_text([route.rider_id], f"【先锋骑士】{stop_address(stop)}的订餐已取消，这一户不用送了。"
                                          "回复“我的路线”查看。", f"riders:stop:{stop.id}:cancelled", now)
    if await RouteStop.filter(route_id=route.id).exclude(state=StopState.CANCELLED).exists():
        await _complete_if_done(route.id, now)
        return
    if await Route.filter(id=route.id, state__in=(RouteState.OPEN, RouteState.CLAIMED)).update(
            state=RouteState.CANCELLED, version=F("version") + 1):
        await cancel_actions(UNCLAIMED, f"route:{route.id}")
        if route.rider_id is not None:
            await push_text([route.rider_id], f"【先锋骑士】{meal_label(route.menu)}的路线“{route.name}”订餐都已取消，"
                                              "不用送了，谢谢您！", f"riders:route:{route.id}:cancelled", now)


async def keep_photo(stop_id: int, now: datetime) -> dict[str, Any] | None:
    """Fetch the stop's delivery photo into our store (models.media) and write back what became of
    it; a failure worth another try is raised so the sweep tries again later."""
    stop = await RouteStop.get_or_none(id=stop_id)
    if stop is None or not stop.photo or media.settled(stop.photo):
        return None if stop is None else stop.photo
    kept, error = await media.keep([stop.photo], now)  # the network outside any transaction
    async with in_transaction():
        stop = await RouteStop.select_for_update().get(id=stop.id)
        if stop.photo:
            stop.photo = media.merge([stop.photo], kept)[0]
            await stop.save(update_fields=["photo"])
    if error is not None:
        raise error
    return stop.photo


@register_action(KEEP_PHOTO)
async def _keep_photo_due(target: str, now: datetime) -> None:
    kind, _, number = target.partition(":")
    if kind != "stop" or not number.isdigit():
        raise ValueError(f"not a stop target: {target}")
    await keep_photo(int(number), now)


# ---------------------------------------------------------------------------- welfare alerts


async def alert_audience(resident_id: int, grid_id: int | None, community_id: int) -> tuple[list[int], list[int]]:
    """Who hears of an alert: (the grid workers of her grid, else the community staff; her family
    proxies)."""
    staff: list[int] = []
    if grid_id is not None:
        staff = [int(cast(int, i)) for i in await StaffRole.filter(
            role=Role.GRID_WORKER, grid_id=grid_id, revoked_at=None).order_by("id").values_list(
            "resident_id", flat=True)]
    if not staff:
        staff = await _community_staff(community_id)
    proxies = [int(cast(int, i)) for i in await ProxyLink.filter(
        elder_id=resident_id, status=ProxyStatus.ACTIVE).order_by("id").values_list("proxy_id", flat=True)]
    return list(dict.fromkeys(staff)), [p for p in dict.fromkeys(proxies) if p not in staff]


async def _raise_alert(stop: RouteStop, route: Route, now: datetime) -> WelfareAlert | None:
    """Not home: an alert for an elder whose living alone is verified (once per stop), pushed at once."""
    if LIVES_ALONE not in await verified_statuses(stop.resident_id):
        return None
    resident = await Resident.get(id=stop.resident_id).prefetch_related("building")
    grid_id = cast(int, resident.building.grid_id) if resident.building else None  # type: ignore[attr-defined]
    community_id = cast(int, resident.community_id)  # type: ignore[attr-defined]
    alert = await WelfareAlert.get_or_none(stop_id=stop.id)
    if alert is None:
        try:
            async with in_transaction():
                alert = await WelfareAlert.create(stop_id=stop.id, resident_id=resident.id, community_id=community_id,
                                                  grid_id=grid_id, raised_at=now, rider_id=route.rider_id,
                                                  note=stop.note)
        except IntegrityError:  # raised by a concurrent retry
            alert = await WelfareAlert.get(stop_id=stop.id)
    if alert.closed_at is not None:
        return alert
    rider = await Resident.get_or_none(id=route.rider_id) if route.rider_id else None
    said = f"骑士{rider.name if rider else ''}留言：{alert.note}。" if alert.note else ""
    where = f"（{stop_address(stop)}）"
    at = when_text(alert.raised_at)
    staff, proxies = await alert_audience(resident.id, grid_id, community_id)
    key = f"riders:alert:{alert.id}:raised"
    # outside WeChat's customer-service window the 'notice' template carries it instead
    notice = {"keyword1": _clip(f"{resident.name}{where}{at}送餐时敲门无人应答。{said}", 180), "remark": HOW_TO_CLOSE}
    await push_text(staff, f"【安全提醒】独居老人{resident.name}{where}{at}送餐时敲门无人应答。{said}"
                           f"请尽快电话联系或上门查看。{HOW_TO_CLOSE}", key, now, priority=Priority.REPLY,
                    notice={"first": "【安全提醒】独居老人送餐时不在家，请尽快联系或上门查看", **notice})
    await push_text(proxies, f"【安全提醒】您的家人{resident.name}{where}{at}送餐时敲门无人应答。{said}"
                             f"请尽快联系TA。{HOW_TO_CLOSE}", f"{key}:family", now, priority=Priority.REPLY,
                    notice={"first": "【安全提醒】您的家人送餐时不在家，请尽快联系TA", **notice})
    return alert


def _alert_scope(viewer_roles: list[StaffRole], elders: list[int]) -> Q | None:
    parts: list[Q] = []
    grids = [r.grid_id for r in viewer_roles if r.role == Role.GRID_WORKER  # type: ignore[attr-defined]
             and r.grid_id is not None]  # type: ignore[attr-defined]
    communities = [r.community_id for r in viewer_roles if r.role == Role.COMMUNITY_STAFF  # type: ignore[attr-defined]
                   and r.community_id is not None]  # type: ignore[attr-defined]
    if grids:
        parts.append(Q(grid_id__in=grids))
    if communities:
        parts.append(Q(community_id__in=communities))
    if elders:
        parts.append(Q(resident_id__in=elders))
    return Q(*parts, join_type="OR") if parts else None


async def _scope_of(viewer_id: int) -> Q | None:
    roles = await StaffRole.filter(resident_id=viewer_id, revoked_at=None,
                                   role__in=(Role.GRID_WORKER, Role.COMMUNITY_STAFF))
    elders = [int(cast(int, i)) for i in await ProxyLink.filter(
        proxy_id=viewer_id, status=ProxyStatus.ACTIVE).values_list("elder_id", flat=True)]
    return _alert_scope(roles, elders)


async def open_alerts(viewer_id: int, now: datetime) -> list[WelfareAlert]:
    """Open alerts the viewer looks after (grid worker of the grid, community staff, family proxy),
    the oldest first, with their residents and stops."""
    scope = await _scope_of(viewer_id)
    if scope is None:
        return []
    return await WelfareAlert.filter(scope, closed_at=None).order_by("raised_at", "id").prefetch_related(
        "resident", "stop")


async def close_alert(alert_id: int, by_id: int, outcome: str, now: datetime) -> WelfareAlert:
    """Record what was found and close the alert, once (the same person's retry returns it); the
    others who were told, and the rider, hear of it."""
    scope = await _scope_of(by_id)
    alert = None if scope is None else await WelfareAlert.filter(scope, id=alert_id).first()
    if alert is None:
        raise NotFound("没有找到这条安全提醒。")
    outcome = " ".join(outcome.split())
    if alert.closed_at is not None:
        if alert.closed_by_id == by_id:  # type: ignore[attr-defined]
            return alert
        raise UserFacingError(await _closed_text(alert))
    if not OUTCOME_MIN <= len(outcome) <= OUTCOME_MAX:
        raise UserFacingError(f"请用{OUTCOME_MIN}到{OUTCOME_MAX}个字写下情况，例如：已电话联系，老人外出买菜，平安。")
    won = await WelfareAlert.filter(id=alert.id, closed_at=None).update(closed_at=now, closed_by_id=by_id,
                                                                        outcome=outcome)
    alert = await WelfareAlert.get(id=alert.id).prefetch_related("resident")
    if not won:
        if alert.closed_by_id == by_id:  # type: ignore[attr-defined]
            return alert
        raise UserFacingError(await _closed_text(alert))
    closer = await Resident.get(id=by_id)
    staff, proxies = await alert_audience(alert.resident_id, alert.grid_id, alert.community_id)
    told = [i for i in dict.fromkeys([*staff, *proxies, *([alert.rider_id] if alert.rider_id else [])])  # type: ignore[attr-defined]
            if i != by_id]
    await push_text(told, f"【安全提醒】{alert.resident.name}的情况已由{closer.name}记录：{outcome}。这条提醒已关闭。",
                    f"riders:alert:{alert.id}:closed", now)
    return alert


async def _closed_text(alert: WelfareAlert) -> str:
    closer = await Resident.get_or_none(id=alert.closed_by_id)  # type: ignore[attr-defined]
    at = when_text(alert.closed_at) if alert.closed_at else ""
    return f"这条提醒已由{closer.name if closer else '他人'}于{at}记录：{alert.outcome}。"


# ---------------------------------------------------------------------------- the unclaimed route


@register_action(UNCLAIMED)
async def _unclaimed_due(target: str, now: datetime) -> None:
    """A route still open 30 minutes before departure: the canteen's staff and the community's
    staff are told once (per claim round)."""
    kind, _, number = target.partition(":")
    if kind != "route" or not number.isdigit():
        raise ValueError(f"not a route target: {target}")
    route = await Route.get_or_none(id=int(number)).prefetch_related("menu")
    if route is None or route.state != RouteState.OPEN or now >= route.menu.serve_until_at:
        return
    stops = await stop_count(route.id)
    if not stops:
        return
    people = await _route_staff(route.menu.canteen_id, route.community_id)
    await push_text(people, f"【先锋骑士】{meal_label(route.menu)}的送餐路线“{route.name}”（{stops}户，"
                            f"{hm(route.depart_at)}出发）还没有骑士认领。请联系骑士认领，或安排人手送餐。",
                    f"riders:route:{route.id}:v{route.version}:unclaimed", now)
