"""先锋骑士 in chat: pioneer riders take meal delivery routes and mark each stop; whoever looks after
an elder living alone closes the welfare alert that a not-home stop raised.

For riders (Role.RIDER): 送餐路线 (the open routes of their community: meal, departure, buildings and
stops; pick one, read it, confirm to claim it; the first claim wins), 我的路线 (the stops in walking
order with the masked name and the diet notes, and the instruction to ring and hand the meal over
in person; pick a stop: 已送达 with an optional photo, or 不在家 with a note, confirmed; 放弃路线
before the first stop is marked). For grid workers, community staff and family proxies: 安全确认
(the open welfare alerts they may close: what they found closes one). For community, canteen and
sub-district staff: 送餐数据 (this month's figures). Canteen staff otherwise receive the pushes (a
route still unclaimed 30 minutes before departure, routes nobody claimed at the meal's end).

Every rule lives in models/rider_core.py; these steps read input, call it and write the reply.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from bot.engine import REPLY_MAX_CHARS, Ask, Done, Flow, Goto, Question, StepFn, choice, confirm, free_text
from models import rider_core as core
from models import rider_figures
from models.canteen import MEAL_LABELS, Menu
from models.canteen_booking import meal_label
from models.cases import CONTEXT, local_today
from models.errors import Forbidden, NotFound, UserFacingError
from models.ledger import Entry
from models.places import Canteen
from models.residents import Resident
from models.riders import PointsBy, Route, RouteState, RouteStop, StopState, WelfareAlert
from models.roles import Role
from models.wishes import mask_name

RIDERS = (Role.RIDER,)
ALERT_STAFF = (Role.GRID_WORKER, Role.COMMUNITY_STAFF)

ROUTES_LISTED = 6
ALERTS_LISTED = 6
NOTE_MIN, NOTE_MAX = 2, 100  # what RouteStop.note and WelfareAlert.outcome keep
DIET_SHORT = 6  # a stop's diet notes in a list that would not fit otherwise (the stop's card has them whole)
RING = "请按门铃/敲门，当面交给本人。"
TAKEN = "这条路线已经被其他骑士认领或取消了。回复“送餐路线”看看其他路线。"

MINE = "mine"
RELEASE = "release"
DELIVERED = "delivered"
NOT_HOME = "not_home"


# ---------------------------------------------------------------------------- wording


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: max(limit - 1, 0)] + "…"


_hm = core.hm


def _when(when: datetime, now: datetime) -> str:
    """11:20 today, else 11月28日 11:20."""
    local = when.astimezone(CONTEXT.tz)
    if local.date() == local_today(now):
        return _hm(when)
    return f"{local.month}月{local.day}日 {_hm(when)}"


def _fits(question: Question, prefix: str = "") -> bool:
    return len(prefix) + len(question.render()) <= REPLY_MAX_CHARS


def _fit(head: str, items: list[tuple[Any, str]], prefix: str = "") -> Question:
    """A choice whose head gives way (clipped) so that the reply, said after ``prefix``, fits."""
    question = choice(head, items)
    if _fits(question, prefix):
        return question
    room = REPLY_MAX_CHARS - len(prefix) - len(choice("", items).render()) - 1
    return choice(_clip(head, room), items)


address = core.stop_address  # 5号楼1单元201室


async def _masked(resident_id: int) -> str:
    person = await Resident.get_or_none(id=resident_id)
    return mask_name(person.name) if person is not None else "**"


async def _name(resident_id: int | None) -> str:
    person = await Resident.get_or_none(id=resident_id) if resident_id is not None else None
    return person.name if person is not None else ""


async def _meal(route: Route, now: datetime) -> str:
    """今天午餐, 明天午餐, else 11月30日（周一）午餐."""
    menu = await Menu.get(id=route.menu_id)
    days = (menu.day - local_today(now)).days
    if days in (0, 1):
        return ("今天" if days == 0 else "明天") + MEAL_LABELS.get(menu.meal, menu.meal)
    return meal_label(menu)


async def _canteen(route: Route) -> str:
    menu = await Menu.get(id=route.menu_id)
    canteen = await Canteen.get_or_none(id=menu.canteen_id)
    return canteen.name if canteen is not None else "食堂"


async def _stops(route_id: int) -> list[RouteStop]:
    """The stops still on the route (a booking cancelled after the cut-off leaves its stop behind)."""
    return [s for s in await core.stops_of(route_id) if s.state != StopState.CANCELLED]


async def _points_text(route: Route) -> str:
    settings = await core.settings_of(route.community_id)
    if settings.points_by == PointsBy.STOP:
        return f"每送达一户可得{settings.points}积分"
    return f"送完整条路线可得{settings.points}积分"


async def _earned(route: Route) -> int:
    """The points the route credited its rider (its ledger entry), 0 when none."""
    entry = await Entry.get_or_none(key=f"route:{route.id}:points")
    return int(entry.amount) if entry is not None else 0


# ---------------------------------------------------------------------------- 送餐路线: the open routes

routes_flow = Flow("rider_routes", "送餐路线", keywords=("送餐路线", "骑士", "先锋骑士", "接单送餐", "送餐接单"),
                   menu_keys=("RIDER_ROUTES",), roles=RIDERS)


async def _route_line(route: Route, now: datetime) -> str:
    """今天午餐 11:00出发·4号楼、5号楼·3户."""
    return f"{await _meal(route, now)} {_hm(route.depart_at)}出发·{route.name}·{len(await _stops(route.id))}户"


async def _live(rider_id: int, now: datetime) -> list[Route]:
    return [r for r in await core.routes_of(rider_id, now) if r.state == RouteState.CLAIMED]


@routes_flow.entry
async def list_open(actor: Resident, now: datetime) -> Ask | Done:
    """The open routes of the rider's communities, the earliest departure first, and their own."""
    routes = await core.open_routes(actor.id, now)
    live = await _live(actor.id, now)
    if not routes:
        tail = "回复“我的路线”查看您认领的路线。" if live else "有新的送餐路线时会推送给您。"
        return Done("现在没有待认领的送餐路线。" + tail)
    items: list[tuple[Any, str]] = [(r.id, await _route_line(r, now)) for r in routes[:ROUTES_LISTED]]
    if live:
        items.append((MINE, f"我的路线（{len(live)}条配送中）"))
    more = f"（先显示最早的{ROUTES_LISTED}条）" if len(routes) > ROUTES_LISTED else ""
    return Ask("pick", _fit(f"待认领的送餐路线{more}，回复序号查看：", items))


@routes_flow.step("pick")
async def open_picked(answer: Any, actor: Resident, data: dict[str, Any], now: datetime) -> Ask | Done | Goto:
    """The route (its stops, departure and points) and whether to claim it."""
    if answer == MINE:
        return Goto(mine_flow.name)
    try:
        route = await core.get_route(int(answer), actor.id)
    except NotFound:  # a rider sees an open route only: another took it, or its bookings were cancelled
        return Done(TAKEN)
    if route.state != RouteState.OPEN:
        if route.rider_id == actor.id:
            return Done("这条路线您已经认领了。回复“我的路线”开始送餐。")
        return Done(TAKEN)
    data["route_id"] = route.id
    stops = await _stops(route.id)
    diets = sum(1 for s in stops if s.diet)
    head = (f"{await _meal(route, now)}送餐·{route.name}\n"
            f"{_hm(route.depart_at)}从{await _canteen(route)}取餐出发，共{len(stops)}户：")
    tail = "\n" + (f"其中{diets}户有饮食要求。" if diets else "") + f"{await _points_text(route)}。认领吗？"
    room = REPLY_MAX_CHARS - len(confirm(head + tail).render())
    return Ask("claim", confirm(head + _clip("、".join(address(s) for s in stops), room) + tail))


@routes_flow.step("claim")
async def open_claim(answer: bool, actor: Resident, data: dict[str, Any], now: datetime) -> Done | Goto:
    """Claim it (the first claim wins); the claimer goes on to the stops."""
    if not answer:
        return Done("好的，没有认领。回复“送餐路线”看看其他路线。")
    try:
        route = await core.claim(int(data["route_id"]), actor.id, now)
    except UserFacingError as exc:
        return Done(exc.message if "送餐路线" in exc.message else exc.message + "回复“送餐路线”看看其他路线。")
    head = f"认领成功！请{_hm(route.depart_at)}到{await _canteen(route)}取餐出发。\n"
    return Goto(mine_flow.name, data={"route_id": route.id, "head": head})


# ---------------------------------------------------------------------------- 我的路线: the stops

mine_flow = Flow("rider_mine", "我的路线", keywords=("我的路线", "我的送餐", "送餐任务"), menu_keys=("RIDER_MINE",),
                 roles=RIDERS)


def _stop_label(stop: RouteStop, masked: str, diet_max: int | None) -> str:
    diet = stop.diet if diet_max is None else _clip(stop.diet, diet_max)
    return f"第{stop.position}户 {address(stop)} {masked}" + (f"（{diet}）" if diet else "")


async def _route_view(route: Route, data: dict[str, Any], now: datetime, head: str = "") -> Ask | Done:
    """The pending stops in walking order (position, address, masked name, diet notes) to pick from,
    and 放弃路线 while nothing is marked; as many stops as the reply holds, the first ones first."""
    if route.state == RouteState.DONE:
        return Done(f"{head}{await _meal(route, now)}·{route.name}已经送完了，谢谢您！回复“送餐路线”看看其他路线。")
    if route.state == RouteState.MISSED:
        return Done(f"{head}{await _meal(route, now)}已经结束，{route.name}没有送出。回复“送餐路线”看看其他路线。")
    if route.state != RouteState.CLAIMED:
        return Done(f"{head}{await _meal(route, now)}·{route.name}的订餐都已取消，不用送了。")
    stops = await _stops(route.id)
    pending = [s for s in stops if s.state == StopState.PENDING]
    data["route_id"] = route.id
    top = (f"{await _meal(route, now)}·{route.name}，{_hm(route.depart_at)}出发，已送{len(stops) - len(pending)}/"
           f"{len(stops)}户。\n{RING}")
    masked = {s.id: mask_name(s.resident.name) for s in pending}  # stops_of brings the residents
    tail: list[tuple[Any, str]] = [(RELEASE, "放弃路线")] if len(pending) == len(stops) else []
    return Ask("stop", _stops_question(top, pending, masked, tail, head), prefix=head)


def _stops_question(top: str, pending: list[RouteStop], masked: dict[int, str], tail: list[tuple[Any, str]],
                    head: str) -> Question:
    """Every pending stop with its diet notes; else with the notes cut short; else the first ones."""
    for diet_max in (None, DIET_SHORT):
        items = [(s.id, _stop_label(s, masked[s.id], diet_max)) for s in pending]
        question = choice(top + "选一户记录：", items + tail)
        if _fits(question, head):
            return question
    for count in range(len(pending) - 1, 1, -1):
        question = choice(top + f"先显示前{count}户：",
                          [(s.id, _stop_label(s, masked[s.id], DIET_SHORT)) for s in pending[:count]] + tail)
        if _fits(question, head):
            return question
    return _fit(top + "先显示第1户：", [(s.id, _stop_label(s, masked[s.id], DIET_SHORT)) for s in pending[:1]] + tail,
                head)


async def _show_route(route_id: int, actor: Resident, data: dict[str, Any], now: datetime,
                      head: str = "") -> Ask | Done:
    try:
        route = await core.get_route(route_id, actor.id)
    except NotFound:
        route = None
    if route is None or route.rider_id != actor.id:
        return Done(f"{head}这条路线已经不在您名下了。回复“送餐路线”看看其他路线。")
    return await _route_view(route, data, now, head)


@mine_flow.entry
async def list_mine(actor: Resident, data: dict[str, Any], now: datetime) -> Ask | Done:
    """The route being delivered (straight to its stops), or which one when there are several."""
    if "route_id" in data:  # just claimed (送餐路线)
        return await _show_route(int(data["route_id"]), actor, data, now, str(data.pop("head", "")))
    mine = await core.routes_of(actor.id, now)
    live = [r for r in mine if r.state == RouteState.CLAIMED]
    if not live:
        if mine:
            return Done("今天认领的路线都送完了，谢谢您！回复“积分”查看积分，回复“送餐路线”看看其他路线。")
        return Done("您还没有认领送餐路线。回复“送餐路线”查看待认领的路线。")
    if len(live) == 1:
        return await _route_view(live[0], data, now)
    items: list[tuple[Any, str]] = [(r.id, await _route_line(r, now)) for r in live[:ROUTES_LISTED]]
    return Ask("route", _fit("您的送餐路线（回复序号查看）：", items))


@mine_flow.step("route")
async def mine_route(answer: int, actor: Resident, data: dict[str, Any], now: datetime) -> Ask | Done:
    """The chosen route's stops."""
    return await _show_route(answer, actor, data, now)


async def _stop(stop_id: int, route_id: int) -> RouteStop | None:
    return next((s for s in await core.stops_of(route_id) if s.id == stop_id), None)


@mine_flow.step("stop")
async def mine_stop(answer: Any, actor: Resident, data: dict[str, Any], now: datetime) -> Ask | Done:
    """A stop: who and where, the diet notes, and 已送达 or 不在家; or ask before 放弃路线."""
    route_id = int(data["route_id"])
    if answer == RELEASE:
        return Ask("release", confirm("放弃后这条路线会重新等待其他骑士认领。确定放弃吗？"))
    stop = await _stop(int(answer), route_id)
    if stop is None or stop.state != StopState.PENDING:
        return await _show_route(route_id, actor, data, now, "这一户已经记录过了。\n")
    data["stop_id"] = stop.id
    text = (f"第{stop.position}户：{address(stop)} {await _masked(stop.resident_id)}\n"
            f"饮食要求：{stop.diet or '无'}\n{RING}")
    return Ask("mark", choice(text, [(DELIVERED, "已送达"), (NOT_HOME, "不在家")]))


@mine_flow.step("mark")
async def mine_mark(answer: str, data: dict[str, Any]) -> Ask:
    """已送达: a photo, if there is one. 不在家: what the rider saw."""
    if answer == DELIVERED:
        return Ask("photo", Question("好的。可以拍一张送达照片发来（例如餐交到老人手里）。", "photo", optional=True))
    return Ask("note", free_text(f"请简单写下情况（{NOTE_MAX}字以内），例如：敲门5分钟没人应答。"
                                 "独居老人的情况会立即转给网格员和家属。", min_len=NOTE_MIN, max_len=NOTE_MAX))


async def _after_mark(stop: RouteStop, actor: Resident, data: dict[str, Any], now: datetime,
                      head: str) -> Ask | Done:
    """The route's next stops; or, when that was the last, the points it earned."""
    route = await core.get_route(stop.route_id, actor.id)
    if route.state != RouteState.DONE:
        return await _route_view(route, data, now, head + "\n")
    earned = await _earned(route)
    points = f"{earned}积分已记入您的爱心银行，回复“积分”查看。" if earned else ""
    return Done(f"{head}\n{route.name}这条路线全部送完了，谢谢您！{points}")


@mine_flow.step("photo")
async def mine_photo(answer: dict[str, Any] | None, actor: Resident, data: dict[str, Any],
                     now: datetime) -> Ask | Done:
    """Mark the stop delivered (with the photo, if one came)."""
    try:
        stop = await core.mark_stop(int(data["stop_id"]), actor.id, delivered=True, now=now, photo=answer)
    except UserFacingError as exc:
        return await _show_route(int(data["route_id"]), actor, data, now, exc.message + "\n")
    photo = "，照片已收到" if answer else ""
    return await _after_mark(stop, actor, data, now, f"已记录：第{stop.position}户已送达{photo}。")


@mine_flow.step("note")
async def mine_note(answer: str, data: dict[str, Any]) -> Ask:
    """Keep the note; ask before marking the stop not home."""
    data["note"] = answer
    stop = await RouteStop.get(id=int(data["stop_id"]))
    return Ask("not_home", confirm(f"第{stop.position}户 {address(stop)} {await _masked(stop.resident_id)}不在家\n"
                                   f"情况：{answer}\n确认记录吗？"))


@mine_flow.step("not_home")
async def mine_not_home(answer: bool, actor: Resident, data: dict[str, Any], now: datetime) -> Ask | Done:
    """Mark the stop not home; an elder living alone raises a welfare alert at once."""
    route_id = int(data["route_id"])
    if not answer:
        return await _show_route(route_id, actor, data, now, "好的，没有记录。\n")
    try:
        stop = await core.mark_stop(int(data["stop_id"]), actor.id, delivered=False, now=now, note=str(data["note"]))
    except UserFacingError as exc:
        return await _show_route(route_id, actor, data, now, exc.message + "\n")
    told = "老人独居，已立即通知网格员和家属上门确认。" if await WelfareAlert.exists(stop_id=stop.id) else ""
    return await _after_mark(stop, actor, data, now, f"已记录：第{stop.position}户不在家。{told}")


@mine_flow.step("release")
async def mine_release(answer: bool, actor: Resident, data: dict[str, Any], now: datetime) -> Ask | Done:
    """Give the route back (before any stop is marked): the other riders are told again."""
    route_id = int(data["route_id"])
    if not answer:
        return await _show_route(route_id, actor, data, now, "好的，没有放弃。\n")
    try:
        await core.release(route_id, actor.id, now)
    except UserFacingError as exc:
        return await _show_route(route_id, actor, data, now, exc.message + "\n")
    return Done("已放弃这条路线，其他骑士可以认领。回复“送餐路线”看看其他路线。")


# ---------------------------------------------------------------------------- 安全确认: welfare alerts

# One flow by keyword for everyone who may hold an alert (a family proxy has no staff role), and the
# same steps under the staff roles, so that 菜单 and the role menus offer it to grid workers and staff.
alerts_flow = Flow("welfare_alerts", "安全确认", keywords=("安全确认", "安全提醒", "确认安全"), as_self=True)
alerts_staff = Flow("welfare_staff", "安全确认", menu_keys=("WELFARE",), roles=ALERT_STAFF)


async def _alert_line(alert: WelfareAlert, now: datetime) -> str:
    """刘桂芳·5号楼1单元201室，11:20送餐时不在家."""
    stop = await RouteStop.get(id=alert.stop_id)
    return f"{await _name(alert.resident_id)}·{address(stop)}，{_when(alert.raised_at, now)}送餐时不在家"


async def list_alerts(actor: Resident, now: datetime) -> Ask | Done:
    """The open welfare alerts the person may close, the oldest first."""
    alerts = await core.open_alerts(actor.id, now)
    if not alerts:
        return Done("目前没有待确认安全的老人。回复“菜单”查看其他服务。")
    items: list[tuple[Any, str]] = [(a.id, await _alert_line(a, now)) for a in alerts[:ALERTS_LISTED]]
    return Ask("pick", _fit(f"待确认安全的老人（{len(alerts)}位），回复序号处理：", items))


async def alert_picked(answer: int, actor: Resident, data: dict[str, Any], now: datetime) -> Ask | Done:
    """The alert (who, where, when, the rider's note) and what they found."""
    alert = await WelfareAlert.get(id=answer)
    if alert.closed_at is not None:
        closer = await _name(alert.closed_by_id)  # type: ignore[attr-defined]
        return Done(f"{closer}已于{_when(alert.closed_at, now)}确认：{alert.outcome}。回复“安全确认”查看其他提醒。")
    data["alert_id"] = alert.id
    rider = await _name(alert.rider_id)  # type: ignore[attr-defined]
    note = f"送餐的{rider}说：{alert.note}\n" if alert.note else ""
    text = (f"{await _alert_line(alert, now)}。\n{note}请电话联系或上门确认老人安全，然后写下情况"
            f"（{NOTE_MAX}字以内，例如：已上门，老人去女儿家了，平安）：")
    return Ask("outcome", free_text(_clip(text, REPLY_MAX_CHARS), min_len=NOTE_MIN, max_len=NOTE_MAX))


async def alert_outcome(answer: str, data: dict[str, Any]) -> Ask:
    """Keep what they found; ask before closing."""
    data["outcome"] = answer
    return Ask("close", confirm(f"确认情况：{answer}\n提交后提醒关闭，并告诉其他收到提醒的人。确认吗？"))


async def alert_close(answer: bool, actor: Resident, data: dict[str, Any], now: datetime) -> Done:
    """Close the alert (once); the others who were alerted are told."""
    if not answer:
        return Done("好的，没有提交，提醒还开着。确认后回复“安全确认”记录。")
    try:
        await core.close_alert(int(data["alert_id"]), actor.id, str(data["outcome"]), now)
    except UserFacingError as exc:
        return Done(exc.message)
    left = len(await core.open_alerts(actor.id, now))
    more = f"还有{left}位老人待确认，回复“安全确认”继续。" if left else ""
    return Done(f"已记录，提醒已关闭，谢谢您！{more}")


# ---------------------------------------------------------------------------- 送餐数据: staff figures

FIGURE_VIEWERS = (Role.COMMUNITY_STAFF, Role.CANTEEN_STAFF, Role.SUBDISTRICT_STAFF)
figures_flow = Flow("rider_figures", "送餐数据", keywords=("送餐数据", "送餐统计", "骑士数据"), roles=FIGURE_VIEWERS)


@figures_flow.entry
async def show_figures(actor: Resident, now: datetime) -> Done:
    """This month's delivery figures so far, in a few lines (the spreadsheet is in the API)."""
    try:
        community_id = await rider_figures.default_community(actor.id)
    except Forbidden as exc:
        return Done(exc.message)
    today = local_today(now)
    figs = await rider_figures.figures(actor.id, community_id, today.replace(day=1), today)
    return Done(_clip(rider_figures.figures_text(figs) + "\n明细表格请在小程序下载。", REPLY_MAX_CHARS))


ALERT_STEPS: dict[str, StepFn] = {"pick": alert_picked, "outcome": alert_outcome, "close": alert_close}
for _flow in (alerts_flow, alerts_staff):
    _flow.entry(list_alerts)
    for _state, _fn in ALERT_STEPS.items():
        _flow.step(_state)(_fn)


FLOWS: list[Flow] = [routes_flow, mine_flow, alerts_flow, alerts_staff, figures_flow]
