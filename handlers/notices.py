"""社区通知: staff send announcements; residents say 退订 / 订阅."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from bot.api import ApiRequest, ApiRouter, Strict, not_found
from bot.engine import Ask, Done, Engine, Flow, choice, confirm, free_text
from models.notices import (
    TEXT_MAX,
    TITLE_MAX,
    Notice,
    Urgency,
    after_quiet_hours,
    audience_count,
    create_notice,
    notice_report,
    schedule_notice,
    set_notices,
)
from models.places import Building, Community, Grid
from models.residents import Resident
from models.roles import Role, Scope, active_roles

SENDERS = (Role.COMMUNITY_STAFF, Role.GRID_WORKER)

announce = Flow("announce", "发通知", keywords=("发通知", "发布通知"), menu_keys=("ANNOUNCE",), roles=SENDERS)


async def _audiences(actor: Resident) -> list[tuple[str, str]]:
    """(value, label) of every audience this staff member may address."""
    items: list[tuple[str, str]] = []
    for role in await active_roles(actor.id):
        if role.role == Role.COMMUNITY_STAFF and role.scope_kind == Scope.COMMUNITY:
            community = await Community.get(id=role.scope_id)
            items.append((f"community:{community.id}", f"{community.name}全体居民"))
            items += [(f"grid:{g.id}", f"{community.name}{g.name}")
                      for g in await Grid.filter(community_id=community.id).order_by("id")]
        if role.role == Role.GRID_WORKER and role.scope_kind == Scope.GRID:
            grid = await Grid.get(id=role.scope_id)
            items.append((f"grid:{grid.id}", f"{grid.name}全体居民"))
        if role.role in SENDERS:
            buildings = Building.filter(grid_id=role.scope_id) if role.scope_kind == Scope.GRID else \
                Building.filter(community_id=role.scope_id)
            items += [(f"building:{b.id}", f"{b.name}") for b in await buildings.order_by("id")]
    first: dict[str, str] = {}  # an audience two roles reach is offered once, as the first names it
    for value, label in items:
        first.setdefault(value, label)
    return list(first.items())


@announce.entry
async def pick_audience(actor: Resident) -> Ask | Done:
    """Offer the audiences in the staff member's scope."""
    items = await _audiences(actor)
    if not items:
        return Done("您的角色没有可以发送通知的范围。")
    return Ask("audience", choice("通知发给谁？", items[:20]))


@announce.step("audience")
async def got_audience(answer: str, data: dict[str, Any]) -> Ask:
    """Store the audience, ask the urgency."""
    data["audience"] = answer
    return Ask("urgency", choice("紧急程度：", [
        (Urgency.NORMAL, "普通（夜间21:00–08:00写的，早上再发）"),
        (Urgency.URGENT, "紧急（停水停电、安全警示：立即发送，夜间也发）"),
    ]))


@announce.step("urgency")
async def got_urgency(answer: str, data: dict[str, Any]) -> Ask:
    """Store the urgency, ask the title."""
    data["urgency"] = answer
    return Ask("title", free_text(f"请输入标题（{TITLE_MAX}字以内），例如：明天上午停水", max_len=TITLE_MAX))


@announce.step("title")
async def got_title(answer: str, data: dict[str, Any]) -> Ask:
    """Store the title, ask the text."""
    data["title"] = answer
    return Ask("text", free_text(f"请输入通知正文（{TEXT_MAX}字以内）：", max_len=TEXT_MAX))


async def _place(audience: str) -> tuple[int, int | None, int | None, str]:
    kind, _, raw = audience.partition(":")
    if kind == "community":
        community = await Community.get(id=int(raw))
        return community.id, None, None, f"{community.name}全体居民"
    if kind == "grid":
        grid = await Grid.get(id=int(raw)).prefetch_related("community")
        return grid.community.id, grid.id, None, f"{grid.community.name}{grid.name}"
    building = await Building.get(id=int(raw)).prefetch_related("community")
    return building.community.id, None, building.id, f"{building.community.name}{building.name}"


@announce.step("text")
async def got_text(answer: str, data: dict[str, Any]) -> Ask:
    """Show the notice and how many residents it reaches; ask before sending."""
    data["text"] = answer
    community_id, grid_id, building_id, label = await _place(data["audience"])
    probe = Notice(community_id=community_id, grid_id=grid_id, building_id=building_id)
    count = await audience_count(probe)
    kind = "紧急" if data["urgency"] == Urgency.URGENT else "普通"
    summary = f"发给：{label}（{count}位居民）\n{kind}通知：{data['title']}\n{answer}\n确认发送吗？"
    return Ask("confirm", confirm(summary))


async def _announce(actor: Resident, audience: str, urgency: str, title: str, text: str, engine: Engine,
                    now: datetime) -> tuple[Notice, str] | None:
    """Create and schedule a notice (None when the audience is not the actor's to address); a normal
    one written in quiet hours waits for their end. Chat and API both send through here."""
    if audience not in {value for value, _ in await _audiences(actor)}:
        return None
    community_id, grid_id, building_id, label = await _place(audience)
    quiet = engine.config.notices
    send_at = now if urgency == Urgency.URGENT else after_quiet_hours(
        now, engine.tz, *quiet.quiet_hours)
    notice = await create_notice(community_id=community_id, grid_id=grid_id, building_id=building_id, title=title,
                                 text=text, urgency=urgency, now=now, send_at=send_at, by_id=actor.id)
    await schedule_notice(notice, now)
    if engine.sender is not None:
        engine.sender.notify()
    return notice, label


@announce.step("confirm")
async def confirmed(answer: bool, data: dict[str, Any], actor: Resident, engine: Engine, now: datetime) -> Done:
    """Create the notice and schedule it; a normal one written in quiet hours waits for the morning."""
    if not answer:
        return Done("好的，通知没有发送。")
    if data.get("notice_id"):
        return Done("这条通知已经发出了。")
    sent = await _announce(actor, data["audience"], data["urgency"], data["title"], data["text"], engine, now)
    if sent is None:
        return Done("您已不能向这个范围发送通知。")
    notice, label = sent
    data["notice_id"] = notice.id
    if notice.send_at > now:
        local = notice.send_at.astimezone(engine.tz)
        return Done(f"已安排：现在是夜间免打扰时段，通知将在{local.hour:02d}:{local.minute:02d}发给{label}。")
    return Done(f"已发送给{label}。回复“通知统计”可查看送达情况。")


unsubscribe = Flow("unsubscribe", "退订", keywords=("退订", "取消订阅", "td"), as_self=True)


@unsubscribe.entry
async def stop_notices(actor: Resident, now: datetime) -> Done:
    """Stop notices and announcements (urgent ones and one's own matters still come)."""
    await set_notices(actor.id, False, now)
    return Done("已退订社区通知。紧急通知（如停水停电、安全警示）和您自己办理事项的进展仍会发给您。"
                "回复“订阅”可恢复。")


subscribe = Flow("subscribe", "订阅", keywords=("订阅", "恢复订阅"), as_self=True)


@subscribe.entry
async def resume_notices(actor: Resident, now: datetime) -> Done:
    """Resume notices."""
    await set_notices(actor.id, True, now)
    return Done("已订阅社区通知，我们会把社区的重要消息发给您。回复“退订”可停止。")


stats = Flow("notice_stats", "通知统计", keywords=("通知统计",), menu_keys=("NOTICE_STATS",), roles=SENDERS)


@stats.entry
async def show_stats(actor: Resident, now: datetime) -> Done:
    """Delivery figures of the staff member's five latest notices."""
    notices = await Notice.filter(created_by_id=actor.id).order_by("-id").limit(5)
    if not notices:
        return Done("您还没有发过通知。")
    lines = []
    for notice in notices:
        report = await notice_report(notice.id, now)
        failed = sum(v for k, v in report.items() if k.startswith("failed:"))
        codes = "、".join(f"{k.removeprefix('failed:')}×{v}" for k, v in report.items() if k.startswith("failed:"))
        lines.append(f"「{notice.title}」共{report['recipients']}人：已送达{report['sent']}，待发{report['waiting']}，"
                     f"暂缓{report['held']}，"
                     f"失败{failed}{'（' + codes + '）' if codes else ''}，已退订{report['opted_out']}，"
                     f"无法联系{report['no_account']}")
    return Done("\n".join(lines))


# ---------------------------------------------------------------------------- the API

api = ApiRouter("notices")


class AnnouncementIn(Strict):
    audience: Literal["community", "grid", "building"]
    audience_id: int = Field(ge=1, le=2**31 - 1)
    urgency: Literal["normal", "urgent"] = "normal"
    title: str = Field(min_length=1, max_length=TITLE_MAX)
    text: str = Field(min_length=1, max_length=TEXT_MAX)


class AnnouncementOut(BaseModel):
    id: int
    audience: str
    urgency: str
    title: str
    text: str
    send_at: str = Field(description="when it goes out (the end of quiet hours for a normal one written at night)")
    report: dict[str, int] = Field(description="recipients, sent, waiting (due), held (paused until later), "
                                               "failed:<errcode>, opted_out, no_account, no_consent")


async def _announcement_out(notice: Notice, label: str, now: datetime) -> AnnouncementOut:
    return AnnouncementOut(id=notice.id, audience=label, urgency=notice.urgency, title=notice.title, text=notice.text,
                           send_at=notice.send_at.isoformat(), report=await notice_report(notice.id, now))


@api.route("POST", "/announcements", summary="Send an announcement (staff)", body=AnnouncementIn,
           response=AnnouncementOut, status=201, errors=(404, 409))
async def post_announcement(req: ApiRequest) -> AnnouncementOut:
    """To a community, grid or building in the caller's scope; a normal one written in quiet hours
    goes out at their end, an urgent one at once."""
    actor = await req.bound_actor()
    body: AnnouncementIn = req.body
    sent = await _announce(actor, f"{body.audience}:{body.audience_id}", body.urgency, body.title, body.text,
                           req.services.engine, req.now)
    if sent is None:
        raise not_found()
    return await _announcement_out(*sent, req.now)


@api.route("GET", "/announcements/{notice_id}", summary="An announcement and its delivery figures (staff)",
           response=AnnouncementOut, errors=(409,))
async def get_announcement(req: ApiRequest) -> AnnouncementOut:
    """For staff who may address its audience."""
    actor = await req.bound_actor()
    notice = await Notice.get_or_none(id=req.path["notice_id"])
    if notice is None:
        raise not_found()
    audience = (f"building:{notice.building_id}" if notice.building_id else  # type: ignore[attr-defined]
                f"grid:{notice.grid_id}" if notice.grid_id else f"community:{notice.community_id}")  # type: ignore[attr-defined]
    if audience not in {value for value, _ in await _audiences(actor)}:
        raise not_found()
    return await _announcement_out(notice, (await _place(audience))[3], req.now)
