"""周五流动服务日: staff plan days (排服务日) and see them (服务日安排); residents say 参加."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from bot.engine import Ask, Done, Engine, Flow, choice, confirm, free_text
from models.places import Community
from models.residents import Resident
from models.roles import Role, Scope, active_roles
from models.service_days import (
    DEFAULT_ITEMS,
    PLACE_MAX,
    STAFF_MAX,
    WHAT_TO_BRING,
    ServiceDay,
    check_date,
    expected_visitors,
    fmt_day,
    parse_date,
    parse_hours,
    parse_items,
    plan_day,
    record_intent,
    upcoming_days,
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


@plan.entry
async def start_plan(actor: Resident, data: dict[str, Any]) -> Ask | Done:
    """Pick the community (when there are several), then ask the date."""
    communities = await _communities(actor)
    if not communities:
        return Done("您的角色没有可以安排服务日的社区。")
    if len(communities) > 1:
        return Ask("community", choice("为哪个社区安排服务日？", communities))
    data["community_id"] = communities[0][0]
    return _ask_date()


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
    summary = (f"{fmt_day(day)}{data['starts']}–{data['ends']}\n地点：{data['place']}\n值班：{data['staff']}\n"
               f"事项：{'、'.join(data['items'])}\n居民会在前一天18:00和当天08:00收到通知。确认安排吗？")
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
                f"请带好{WHAT_TO_BRING}。")
