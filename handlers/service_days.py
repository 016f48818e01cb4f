"""周五流动服务日: staff plan days (排服务日) and see them (服务日安排); residents say 参加."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from bot.api import ApiRequest, ApiRouter, Strict, not_found
from bot.engine import Ask, Done, Engine, Flow, choice, confirm, free_text
from models.errors import UserFacingError
from models.places import Community
from models.residents import Resident
from models.roles import Role, Scope, active_roles
from models.service_days import (
    DEFAULT_ITEMS,
    ITEM_MAX,
    PLACE_MAX,
    STAFF_MAX,
    ServiceDay,
    ServiceDayIntent,
    check_date,
    check_notice_times,
    documents_to_bring,
    expected_visitors,
    fmt_day,
    parse_date,
    parse_hours,
    parse_items,
    plan_day,
    record_intent,
    set_notice_times,
    settings_of,
    upcoming_days,
    what_to_bring,
)

PLANNERS = (Role.COMMUNITY_STAFF,)
LISTED_DAYS = 4  # keeps the reply short

plan = Flow("service_day_plan", "排服务日", keywords=("排服务日", "安排服务日"), roles=PLANNERS)


async def _communities(actor: Resident) -> list[tuple[int, str]]:
    """(id, name) of the communities this staff member plans for."""
    found: dict[int, str] = {}
    for role in await active_roles(actor.id):
        if role.role == Role.COMMUNITY_STAFF and role.scope_kind == Scope.COMMUNITY and role.scope_id:
            community = await Community.get(id=role.scope_id)
            found[community.id] = community.name
    return list(found.items())


def _ask_date() -> Ask:
    return Ask("date", free_text("服务日是哪个周五？例如：12月4日 或 2026-12-04", max_len=20))


async def _pick_community(actor: Resident, data: dict[str, Any], question: str) -> Ask | Done | None:
    """Ask which community when the staff member has several; None when there is one (stored)."""
    communities = await _communities(actor)
    if not communities:
        return Done("您的角色没有可以安排服务日的社区。")
    if len(communities) > 1:
        return Ask("community", choice(question, communities))
    data["community_id"] = communities[0][0]
    return None


@plan.entry
async def start_plan(actor: Resident, data: dict[str, Any]) -> Ask | Done:
    """Pick the community (when there are several), then ask the date."""
    return await _pick_community(actor, data, "为哪个社区安排服务日？") or _ask_date()


@plan.step("community")
async def got_community(answer: int, data: dict[str, Any]) -> Ask:
    """Store the community, ask the date."""
    data["community_id"] = answer
    return _ask_date()


@plan.step("date")
async def got_date(answer: str, data: dict[str, Any], engine: Engine, now: datetime) -> Ask:
    """A Friday, not past, not a holiday (else say so and name the next working Friday); ask the place."""
    today = now.astimezone(engine.tz).date()
    day = parse_date(answer, today)
    check_date(day, today, engine.calendar)
    data["date"] = day.isoformat()
    return Ask("place", free_text(f"{fmt_day(day)}在哪里设服务台？例如：幸福里小区3号楼前广场",
                                  max_len=PLACE_MAX))


@plan.step("place")
async def got_place(answer: str, data: dict[str, Any]) -> Ask:
    """Store the place, ask the hours."""
    data["place"] = answer
    return Ask("hours", free_text("服务时间？例如：09:00-11:30", max_len=20))


@plan.step("hours")
async def got_hours(answer: str, data: dict[str, Any]) -> Ask:
    """Store the hours, ask who is on duty."""
    data["starts"], data["ends"] = parse_hours(answer)
    return Ask("staff", free_text("值班人员？例如：周社工、李网格", max_len=STAFF_MAX))


@plan.step("staff")
async def got_staff(answer: str, data: dict[str, Any]) -> Ask:
    """Store the staff on duty, ask the items by number."""
    data["staff"] = answer
    listing = "\n".join(f"{i}. {item}" for i, item in enumerate(DEFAULT_ITEMS, 1))
    question = f"本次办理哪些事项？回复序号，多个用空格隔开（如“1 3 5”），全选回复“全部”：\n{listing}"
    return Ask("items", free_text(question, max_len=40))


@plan.step("items")
async def got_items(answer: str, data: dict[str, Any]) -> Ask:
    """Store the items, show the whole plan and ask before saving."""
    data["items"] = parse_items(answer, DEFAULT_ITEMS)
    day = datetime.fromisoformat(data["date"]).date()
    times = await settings_of(data["community_id"])
    summary = (f"{fmt_day(day)}{data['starts']}–{data['ends']}\n地点：{data['place']}\n值班：{data['staff']}\n"
               f"事项：{'、'.join(data['items'])}\n居民会在前一天{times.eve_at}和当天{times.day_at}收到通知。确认安排吗？")
    return Ask("confirm", confirm(summary))


@plan.step("confirm")
async def confirmed(answer: bool, data: dict[str, Any], actor: Resident, engine: Engine, now: datetime) -> Done:
    """Save the day (checked again: the date may have become a holiday or been taken meanwhile)."""
    if not answer:
        return Done("好的，没有安排。")
    if data["community_id"] not in {cid for cid, _ in await _communities(actor)}:
        return Done("您已不能为这个社区安排服务日。")
    day = await plan_day(community_id=data["community_id"], day=datetime.fromisoformat(data["date"]).date(),
                         place=data["place"], starts=data["starts"], ends=data["ends"], staff=data["staff"],
                         items=data["items"], by_id=actor.id, now=now, today=now.astimezone(engine.tz).date(),
                         calendar=engine.calendar)
    return Done(f"已安排{fmt_day(day.date)}的流动服务日。回复“服务日安排”可查看预计来访人数。")


overview = Flow("service_day_list", "服务日安排", keywords=("服务日安排",), roles=PLANNERS)


@overview.entry
async def show_days(actor: Resident, engine: Engine, now: datetime) -> Done:
    """The upcoming service days of the staff member's communities with expected visitors per item."""
    communities = await _communities(actor)
    days = await upcoming_days([cid for cid, _ in communities], now.astimezone(engine.tz).date())
    if not days:
        return Done("近期还没有安排流动服务日。回复“排服务日”来安排。")
    lines = []
    for day in days[:LISTED_DAYS]:
        counts = await expected_visitors(day.id)
        detail = "、".join(f"{item}{counts[item]}" for item in day.items if counts.get(item))
        lines.append(f"{fmt_day(day.date)}{day.starts}–{day.ends} {day.place}：预计{sum(counts.values())}人"
                     + (f"（{detail}）" if detail else ""))
    more = f"\n另有{len(days) - LISTED_DAYS}天已安排。" if len(days) > LISTED_DAYS else ""
    return Done("\n".join(lines) + more)


times_flow = Flow("service_day_times", "服务日通知时间", keywords=("服务日通知时间",), roles=PLANNERS)


@times_flow.entry
async def start_times(actor: Resident, data: dict[str, Any]) -> Ask | Done:
    """Pick the community (when there are several), then ask the evening time."""
    return await _pick_community(actor, data, "改哪个社区的通知时间？") or await _ask_eve(data)


async def _ask_eve(data: dict[str, Any]) -> Ask:
    times = await settings_of(data["community_id"])
    data["day_at"] = times.day_at
    return Ask("eve", free_text(f"现在：前一天{times.eve_at}、当天{times.day_at}发服务日通知。\n"
                                "前一天几点发？例如：18:00", max_len=10))


@times_flow.step("community")
async def got_times_community(answer: int, data: dict[str, Any]) -> Ask:
    """Store the community, ask the evening time."""
    data["community_id"] = answer
    return await _ask_eve(data)


@times_flow.step("eve")
async def got_eve(answer: str, data: dict[str, Any], engine: Engine) -> Ask:
    """Check the evening time now (so a wrong one is asked again), then ask the morning time."""
    check_notice_times(answer, data["day_at"], *engine.config.notices.quiet_hours)
    data["eve_at"] = answer
    return Ask("day", free_text("服务日当天几点发？例如：08:00", max_len=10))


@times_flow.step("day")
async def got_day(answer: str, data: dict[str, Any], actor: Resident, engine: Engine) -> Done:
    """Save both times (a change to times is easily undone, so no confirmation step)."""
    if data["community_id"] not in {cid for cid, _ in await _communities(actor)}:
        return Done("您已不能修改这个社区的通知时间。")
    times = await set_notice_times(data["community_id"], data["eve_at"], answer,
                                   *engine.config.notices.quiet_hours)
    return Done(f"已改好：服务日通知在前一天{times.eve_at}和当天{times.day_at}发出。")


join = Flow("service_day_join", "参加服务日", keywords=("参加", "参加服务日"))


@join.entry
async def pick_item(actor: Resident, data: dict[str, Any], engine: Engine, now: datetime) -> Ask | Done:
    """Offer the items of the community's next service day."""
    days = await upcoming_days([actor.community_id], now.astimezone(engine.tz).date())  # type: ignore[attr-defined]
    if not days:
        return Done("近期没有安排流动服务日，有安排时我们会通知您。")
    day: ServiceDay = days[0]
    data["day_id"] = day.id
    return Ask("item", choice(f"{fmt_day(day.date)}{day.starts}–{day.ends}在{day.place}。您要办理哪一项？",
                              [(item, item) for item in day.items]))


@join.step("item")
async def got_item(answer: str, data: dict[str, Any], actor: Resident, now: datetime) -> Done:
    """Record what the resident will come for (a second answer replaces the first)."""
    new = await record_intent(actor.id, data["day_id"], answer, now)
    day = await ServiceDay.get(id=data["day_id"])
    said = "已记下" if new else "已改为"
    return Done(f"{said}：{fmt_day(day.date)}来办理“{answer}”，地点{day.place}，{day.starts}–{day.ends}。"
                f"请带好：{what_to_bring(day.items)}。")


# ---------------------------------------------------------------------------- the API

api = ApiRouter("service_days")

HHMM = r"^([01]\d|2[0-3]):[0-5]\d$"


class ServiceDayOut(BaseModel):
    id: int
    community_id: int
    date: str = Field(description="YYYY-MM-DD, a Friday")
    place: str
    starts: str = Field(description="HH:MM, community time")
    ends: str
    staff: str = Field(description="who is on duty")
    items: list[str] = Field(description="the items of the service package offered")
    what_to_bring: list[str] = Field(description="the documents for those items")
    my_item: str | None = Field(default=None, description="the item the caller said they will come for")
    expected: dict[str, int] | None = Field(
        default=None, description="residents expected per item (only for the community's staff)")


class ServiceDayList(BaseModel):
    items: list[ServiceDayOut]


class ServiceDayIn(Strict):
    community_id: int = Field(ge=1, le=2**31 - 1)
    date: str = Field(pattern=r"^\d{4}-\d{2}-\d{2}$", description="a Friday that is a working day")
    place: str = Field(min_length=1, max_length=PLACE_MAX)
    starts: str = Field(pattern=HHMM)
    ends: str = Field(pattern=HHMM)
    staff: str = Field(min_length=1, max_length=STAFF_MAX)
    items: list[Literal[*DEFAULT_ITEMS]] = Field(min_length=1, max_length=len(DEFAULT_ITEMS))  # type: ignore[valid-type]


class IntentIn(Strict):
    item: str = Field(min_length=1, max_length=ITEM_MAX)


async def _planner_of(req: ApiRequest, community_id: int) -> Resident:
    """The caller, when they plan service days for this community; else 404 (as if it did not exist)."""
    actor = await req.bound_actor()
    if community_id not in {cid for cid, _ in await _communities(actor)}:
        raise not_found()
    return actor


async def _day_out(day: ServiceDay, *, my_item: str | None = None, staff: bool = False) -> ServiceDayOut:
    return ServiceDayOut(
        id=day.id, community_id=day.community_id, date=day.date.isoformat(),  # type: ignore[attr-defined]
        place=day.place, starts=day.starts, ends=day.ends, staff=day.staff, items=list(day.items),
        what_to_bring=documents_to_bring(day.items), my_item=my_item,
        expected=await expected_visitors(day.id) if staff else None)


@api.route("GET", "/service-days", summary="Upcoming service days of my community", response=ServiceDayList,
           errors=(409,))
async def list_service_days(req: ApiRequest) -> ServiceDayList:
    """Each with the item I said I will come for."""
    actor = await req.bound_actor()
    days = await upcoming_days([actor.community_id], req.now.astimezone(req.services.engine.tz).date())  # type: ignore[attr-defined]
    mine = dict(await ServiceDayIntent.filter(resident_id=actor.id, day_id__in=[d.id for d in days])
                .values_list("day_id", "item"))
    return ServiceDayList(items=[await _day_out(day, my_item=mine.get(day.id)) for day in days])


@api.route("PUT", "/service-days/{day_id}/intent", summary="Say which item I will come for", body=IntentIn,
           response=ServiceDayOut, errors=(409,))
async def put_intent(req: ApiRequest) -> ServiceDayOut:
    """A day of my own community, today or later; a second answer replaces the first."""
    actor = await req.bound_actor()
    day = await ServiceDay.get_or_none(id=req.path["day_id"], community_id=actor.community_id)  # type: ignore[attr-defined]
    if day is None:
        raise not_found()
    if day.date < req.now.astimezone(req.services.engine.tz).date():
        raise UserFacingError(f"{fmt_day(day.date)}的服务日已经过去了。")
    await record_intent(actor.id, day.id, req.body.item, req.now)
    return await _day_out(day, my_item=req.body.item)


@api.route("POST", "/service-days", summary="Plan a service day (community staff)", body=ServiceDayIn,
           response=ServiceDayOut, status=201, errors=(404, 409))
async def post_service_day(req: ApiRequest) -> ServiceDayOut:
    """A Friday that is a working day, today or later, not planned yet; 409 with the reason otherwise."""
    body: ServiceDayIn = req.body
    actor = await _planner_of(req, body.community_id)
    engine = req.services.engine
    today = req.now.astimezone(engine.tz).date()
    day = await plan_day(community_id=body.community_id, day=parse_date(body.date, today), place=body.place,
                         starts=body.starts, ends=body.ends, staff=body.staff, items=list(dict.fromkeys(body.items)),
                         by_id=actor.id, now=req.now, today=today, calendar=engine.calendar)
    return await _day_out(day, staff=True)


@api.route("GET", "/communities/{community_id}/service-days",
           summary="Planned service days with expected visitors per item (community staff)", response=ServiceDayList)
async def list_planned_days(req: ApiRequest) -> ServiceDayList:
    """The community's upcoming days, for its staff."""
    await _planner_of(req, req.path["community_id"])
    days = await upcoming_days([req.path["community_id"]], req.now.astimezone(req.services.engine.tz).date())
    return ServiceDayList(items=[await _day_out(day, staff=True) for day in days])


class NoticeTimes(Strict):
    eve_at: str = Field(pattern=HHMM, description="the evening before, HH:MM community time")
    day_at: str = Field(pattern=HHMM, description="the morning of the day, HH:MM community time")


@api.route("GET", "/communities/{community_id}/service-day-settings",
           summary="When the community's service-day notices go out (community staff)", response=NoticeTimes)
async def get_notice_times(req: ApiRequest) -> NoticeTimes:
    """The community's evening-before and morning-of times."""
    await _planner_of(req, req.path["community_id"])
    times = await settings_of(req.path["community_id"])
    return NoticeTimes(eve_at=times.eve_at, day_at=times.day_at)


@api.route("PUT", "/communities/{community_id}/service-day-settings",
           summary="Change when the community's service-day notices go out (community staff)", body=NoticeTimes,
           response=NoticeTimes, errors=(409,))
async def put_notice_times(req: ApiRequest) -> NoticeTimes:
    """Both times outside the quiet hours (notices.quiet_start–quiet_end), else 409."""
    await _planner_of(req, req.path["community_id"])
    times = await set_notice_times(req.path["community_id"], req.body.eve_at, req.body.day_at,
                                   *req.services.engine.config.notices.quiet_hours)
    return NoticeTimes(eve_at=times.eve_at, day_at=times.day_at)
