"""逢六说事 · 周五圆梦: the 6th/16th/26th deliberation sessions and the Friday roundup.

The agenda of a session builds itself (models/cases.py adds big cases, cases escalated to the
community and cases whose reporter asked to raise them in person); the community's staff add a
case with a reason or drop an item with a reason (the item stays, stamped). The day before a
session its community's residents get the agenda as a notice (category and building only);
after it, staff record per item what was agreed — who does what by when — which gives a case at
the community level that date as its deadline (a missed one escalates to the sub-district by
the existing ``case.deadline`` due action) and tells everyone following the case. Every Friday
each community's residents get the cases resolved that week, with the handlers' public summary.

Both announcements are notices (models/notices.py): the one outbox, 退订, quiet hours. Each is
claimed before it is written — the session's ``reminded_at``, a ``JobRun`` row per community and
week — so a job run twice, or by two schedulers, sends once.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import cast
from zoneinfo import ZoneInfo

from tortoise.transactions import in_transaction

from models import cases
from models.cases import (
    LIVE,
    NOTE_MAX,
    REASON_MAX,
    AgendaItem,
    AgendaReason,
    Case,
    DeliberationSession,
    EventKind,
    Klass,
    Level,
    Status,
    deadline,
    next_session_day,
    record,
    restart_deadline,
    rules_of,
    tell_followers,
)
from models.errors import NotFound, UserFacingError
from models.jobs import claim_run, finish_run
from models.notices import (
    TEXT_MAX,
    NoticeKind,
    Urgency,
    after_quiet_hours,
    create_notice,
    fan_out,
    schedule_notice,
)
from models.roles import Role, Scope, active_roles
from models.service_days import fmt_day

log = logging.getLogger(__name__)

PLACE = "红色议事亭"
OWNER_MAX = 32
DUE_MAX_DAYS = 366  # an outcome's date at most a year after the session
ROUNDUP_CLAIM = "case_sessions.roundup_week"  # JobRun key prefix: one roundup per community and week
SUMMARY_SHOWN = 40  # characters of a summary in the roundup (a notice holds 500)
RECENT = 3  # held or past sessions listed for staff


# ---------------------------------------------------------------------------- who may run them


async def staff_communities(actor_id: int) -> list[int]:
    """The communities whose sessions this person runs (community staff of that community)."""
    return sorted({int(role.scope_id) for role in await active_roles(actor_id)
                   if role.role == Role.COMMUNITY_STAFF and role.scope_kind == Scope.COMMUNITY and role.scope_id})


async def check_staff(actor_id: int, community_id: int) -> None:
    """NotFound unless the actor is community staff of this community (others may not know it exists)."""
    if community_id not in await staff_communities(actor_id):
        raise NotFound("没有找到这次议事会。")


# ---------------------------------------------------------------------------- the agenda


def place_of(case: Case) -> str:
    """The building, never a resident's room or a shared map label (which may be an address)."""
    return case.building.name if case.building else "本社区"


def public_line(case: Case) -> str:
    """What residents read of an agenda item or a resolved case: category·building."""
    return f"{case.category_label}·{place_of(case)}"


async def agenda(session: DeliberationSession | int) -> list[AgendaItem]:
    """The items still on the agenda (not dropped), the most joined case first; never a private case."""
    session_id = session if isinstance(session, int) else session.id
    items = await AgendaItem.filter(session_id=session_id, dropped_at=None).exclude(
        case__klass=Klass.PRIVATE).prefetch_related("case__building")
    return sorted(items, key=lambda item: (-item.case.joins, item.added_at, item.id))


async def dropped(session: DeliberationSession) -> list[AgendaItem]:
    return await AgendaItem.filter(session_id=session.id).exclude(dropped_at=None).prefetch_related(
        "case__building").order_by("dropped_at", "id")


async def next_session(community_id: int, today: date) -> DeliberationSession | None:
    """The community's coming session that has not been held (today's counts until it is)."""
    return await DeliberationSession.filter(community_id=community_id, day__gte=today, held_at=None).order_by(
        "day").first()


async def coming_session(community_id: int, now: datetime) -> DeliberationSession:
    """The coming session, created for the next 6th/16th/26th when nothing is on it yet."""
    today = cases.local_today(now)
    session = await next_session(community_id, today)
    if session is None:
        session, _ = await DeliberationSession.get_or_create(
            community_id=community_id, day=next_session_day(today), defaults={"created_at": now})
    return session


async def last_session(community_id: int, today: date) -> DeliberationSession | None:
    """The latest session on or before today: the one whose outcomes are recorded now."""
    return await DeliberationSession.filter(community_id=community_id, day__lte=today).order_by("-day").first()


async def sessions_of(community_id: int, today: date) -> tuple[list[DeliberationSession], list[DeliberationSession]]:
    """(upcoming, recent): those not held yet from today on, and the latest held or past ones."""
    upcoming = await DeliberationSession.filter(community_id=community_id, day__gte=today, held_at=None).order_by(
        "day").limit(RECENT)
    recent = await DeliberationSession.filter(community_id=community_id, day__lte=today).exclude(
        id__in=[s.id for s in upcoming]).order_by("-day").limit(RECENT)
    return upcoming, recent


def _still_open(session: DeliberationSession, today: date) -> None:
    if session.held_at is not None or session.day < today:
        raise UserFacingError(f"{fmt_day(session.day)}的议事会已经开过了。")


async def _staff_item(item_id: int, actor_id: int, *, lock_case: bool = False,
                      ) -> tuple[AgendaItem, DeliberationSession, Case]:
    """The item (row-locked) with its session and case, when the actor runs that session's
    community. The case, when it is to change, is locked first (the order models/cases.py locks in)."""
    found = await AgendaItem.get_or_none(id=item_id)
    if found is None:
        raise NotFound("没有找到这个议题。")
    session = await DeliberationSession.get(id=found.session_id)  # type: ignore[attr-defined]
    await check_staff(actor_id, session.community_id)  # type: ignore[attr-defined]
    query = Case.select_for_update() if lock_case else Case
    case = await query.get(id=found.case_id)  # type: ignore[attr-defined]
    item = await AgendaItem.select_for_update().get(id=item_id)
    return item, session, case


async def addable_case(community_id: int, case_id: int) -> Case:
    """A case staff may put on this community's agenda: its own, live, not private."""
    case = await Case.get_or_none(id=case_id, community_id=community_id)
    if case is None:
        raise NotFound(f"本社区没有编号为{case_id}的说事。")
    if case.klass == Klass.PRIVATE:
        raise UserFacingError("私事由调解员上门处理，不上议事会公开讨论。")
    if case.status not in LIVE:
        raise UserFacingError(f"编号{case.number}的说事已经办结，不需要再上会。")
    return case


async def add_case(session_id: int, case_id: int, actor_id: int, reason: str, now: datetime) -> AgendaItem:
    """Staff put a case on a coming session, with the reason (AgendaReason.STAFF)."""
    reason = reason.strip()
    if not reason or len(reason) > REASON_MAX:
        raise UserFacingError(f"请写明上会的原因（{REASON_MAX}字以内）。")
    async with in_transaction():
        session = await DeliberationSession.select_for_update().get_or_none(id=session_id)
        if session is None:
            raise NotFound("没有找到这次议事会。")
        await check_staff(actor_id, session.community_id)  # type: ignore[attr-defined]
        _still_open(session, cases.local_today(now))
        case = await addable_case(session.community_id, case_id)  # type: ignore[attr-defined]
        if await AgendaItem.filter(session_id=session.id, case_id=case.id, dropped_at=None).exists():
            raise UserFacingError(f"编号{case.number}已经在{fmt_day(session.day)}的议程上了。")
        item = await cases.add_to_agenda(case, AgendaReason.STAFF, now, by_id=actor_id, note=reason, session=session)
    return await AgendaItem.get(id=item.id).prefetch_related("case__building")


async def drop_item(item_id: int, actor_id: int, reason: str, now: datetime) -> AgendaItem:
    """Staff take an item off a coming session with a reason; it stays, stamped; the reporter hears."""
    reason = reason.strip()
    if not reason or len(reason) > REASON_MAX:
        raise UserFacingError(f"请写明撤下的原因（{REASON_MAX}字以内）。")
    async with in_transaction():
        item, session, case = await _staff_item(item_id, actor_id)
        if item.dropped_at is not None:
            raise UserFacingError("这个议题已经撤下了。")
        _still_open(session, cases.local_today(now))
        item.dropped_at, item.dropped_by_id, item.dropped_reason = now, actor_id, reason
        await item.save(update_fields=["dropped_at", "dropped_by_id", "dropped_reason"])
        event = await record(case, EventKind.AGENDA, now, actor_id=actor_id, label="社区", note=reason,
                             added=False, session_day=session.day.isoformat())
    await tell_followers(case, f"已从{fmt_day(session.day)}议事会的议程中撤下：{reason}", f"agenda-drop:{event.id}",
                         now, joiners=False)
    return await AgendaItem.get(id=item.id).prefetch_related("case__building")


async def mark_held(session_id: int, actor_id: int, now: datetime) -> DeliberationSession:
    """Staff say the session took place (recording its first outcome says so too)."""
    async with in_transaction():
        session = await DeliberationSession.select_for_update().get_or_none(id=session_id)
        if session is None:
            raise NotFound("没有找到这次议事会。")
        await check_staff(actor_id, session.community_id)  # type: ignore[attr-defined]
        if session.day > cases.local_today(now):
            raise UserFacingError(f"议事会定在{fmt_day(session.day)}，还没到开会的日子。")
        if session.held_at is None:
            session.held_at = now
            await session.save(update_fields=["held_at"])
    return session


def end_of(day: date, tz: ZoneInfo) -> datetime:
    """The last second of ``day`` in the community's time zone."""
    return datetime.combine(day, time(23, 59, 59), tzinfo=tz).astimezone(UTC)


async def record_outcome(item_id: int, actor_id: int, text: str, owner: str, due: date | None,
                         now: datetime) -> AgendaItem:
    """What the session agreed on an item: who does what by when (public).

    A live case at the community level (the level whose session it is) is taken — in progress,
    accepted if it was not — with the outcome's date as its deadline (the end of that day, or
    ``outcome_days`` from now without one), watched by a ``case.deadline`` due action, so a
    missed outcome escalates to the sub-district. The session counts as held; every follower
    of the case hears the outcome. Recording again corrects it (and tells them again).
    """
    text, owner = text.strip(), owner.strip()
    if not text or len(text) > NOTE_MAX:
        raise UserFacingError(f"请写下议定的结果（{NOTE_MAX}字以内，会向居民公开，请勿写个人信息）。")
    if not owner or len(owner) > OWNER_MAX:
        raise UserFacingError(f"请写明由谁负责（{OWNER_MAX}字以内），例如：物业公司。")
    today = cases.local_today(now)
    if due is not None and not today <= due <= today + timedelta(days=DUE_MAX_DAYS):
        raise UserFacingError("完成日期要在今天到一年以内。")
    async with in_transaction():
        item, session, case = await _staff_item(item_id, actor_id, lock_case=True)
        if item.dropped_at is not None:
            raise UserFacingError("这个议题已经撤下了。")
        if session.day > today:
            raise UserFacingError(f"议事会定在{fmt_day(session.day)}，开会后再记录议定结果。")
        item.outcome, item.outcome_owner, item.outcome_due = text, owner, due
        item.outcome_at, item.outcome_by_id = now, actor_id
        await item.save(update_fields=["outcome", "outcome_owner", "outcome_due", "outcome_at", "outcome_by_id"])
        if session.held_at is None:
            session.held_at = now
            await session.save(update_fields=["held_at"])
        moved = case.status in LIVE and case.level == Level.COMMUNITY
        if moved:
            rules = await rules_of(case.community_id)  # type: ignore[attr-defined]
            if case.status == Status.OPEN:
                case.status = Status.IN_PROGRESS
                case.accepted_at = case.accepted_at or now
                await record(case, EventKind.ACCEPTED, now, actor_id=actor_id, label="社区", public=True)
            await restart_deadline(case, end_of(due, cases.CONTEXT.tz) if due else deadline(
                now, rules.outcome_days, rules), now)
            case.updated_at = now
            await case.save()
        event = await record(case, EventKind.OUTCOME, now, actor_id=actor_id, label="社区议事会", note=text,
                             public=True, owner=owner, due=due.isoformat() if due else None,
                             session_day=session.day.isoformat())
    # by when: the outcome's date, else the deadline it gave the case (a case at another level keeps its own)
    by_when = f"，{fmt_day(due)}前完成" if due else f"，{cases.when_zh(case.due_at)}前完成" if moved else ""
    await tell_followers(case, f"{fmt_day(session.day)}议事会议定：{text}（负责：{owner}{by_when}）。",
                         f"outcome:{event.id}", now)
    return await AgendaItem.get(id=item.id).prefetch_related("case__building")


# ---------------------------------------------------------------------------- the residents' notices


def _listing(lines: list[str], budget: int) -> str:
    """Numbered lines within ``budget`` characters; the rest counted."""
    out: list[str] = []
    used = 0
    for i, line in enumerate(lines, 1):
        entry = f"{i}. {line}"
        rest = f"\n……等共{len(lines)}项" if i < len(lines) else ""
        if used + len(entry) + 1 + len(rest) > budget:
            out.append(f"……等共{len(lines)}项")
            break
        out.append(entry)
        used += len(entry) + 1
    return "\n".join(out)


def reminder_text(session: DeliberationSession, items: list[AgendaItem]) -> str:
    """The agenda as residents read it: the date, the place, category·building per item; nobody's
    name, room, words or photos."""
    head = f"{fmt_day(session.day)}在{PLACE}召开逢六说事议事会，本次议题：\n"
    foot = "\n欢迎居民到场旁听、当面说事。"
    return head + _listing([public_line(item.case) for item in items], TEXT_MAX - len(head) - len(foot)) + foot


def roundup_text(since: date, today: date, resolved: list[Case]) -> str:
    """The week's resolved cases: category·building: the handler's public summary."""
    head = f"本周（{since.month}月{since.day}日至{today.month}月{today.day}日）办结的居民反映：\n"
    foot = "\n感谢大家说事、监督！有问题随时回复“说事”反映。"
    lines = []
    for case in resolved:
        summary = case.summary if len(case.summary) <= SUMMARY_SHOWN else case.summary[:SUMMARY_SHOWN - 1] + "…"
        lines.append(f"{public_line(case)}：{summary}")
    return head + _listing(lines, TEXT_MAX - len(head) - len(foot)) + foot


async def _notice(community_id: int, title: str, text: str, kind: str, now: datetime, send_at: datetime) -> int:
    """Write the notice and its fan-out due action (inside the caller's transaction, with its claim)."""
    notice = await create_notice(community_id=community_id, title=title, text=text, urgency=Urgency.NORMAL, now=now,
                                 send_at=send_at, by_id=None, kind=kind)
    await schedule_notice(notice, now)  # the due sweep fans it out (again) after a crash, or after the quiet hours
    return notice.id


@dataclass(frozen=True)
class NoticeTimes:
    """When the reminder and the roundup go out (community time) and the quiet hours."""

    tz: ZoneInfo
    reminder_at: time
    roundup_at: time
    quiet_start: time
    quiet_end: time


async def run_session_reminders(now: datetime, times: NoticeTimes) -> dict[str, int]:
    """From ``reminder_at`` on the day before a session: its agenda to the community's residents,
    once per session (claimed by setting ``reminded_at``); a session with nothing on it gets none."""
    local = now.astimezone(times.tz)
    counts = {"reminders": 0, "empty": 0}
    if local.time() < times.reminder_at:
        return counts
    send_at = after_quiet_hours(now, times.tz, times.quiet_start, times.quiet_end)
    tomorrow = local.date() + timedelta(days=1)
    for session in await DeliberationSession.filter(day=tomorrow, reminded_at=None).order_by("id"):
        items = await agenda(session)
        if not items:
            counts["empty"] += 1  # not claimed: a case put on it later this evening still gets it one
            continue
        async with in_transaction():
            if not await DeliberationSession.filter(id=session.id, reminded_at=None).update(reminded_at=now):
                continue  # another run or scheduler has it
            title = f"{session.day.month}月{session.day.day}日逢六说事议事会"
            notice_id = await _notice(session.community_id, title,  # type: ignore[attr-defined]
                                      reminder_text(session, items), NoticeKind.SESSION, now, send_at)
        if send_at <= now:
            await fan_out(notice_id, now)
        counts["reminders"] += 1
    return counts


FRIDAY = 4


async def run_roundup(now: datetime, times: NoticeTimes) -> dict[str, int]:
    """From ``roundup_at`` on Fridays: each community's cases resolved since last Friday's roundup
    time (community time, so none is left out), once per community and week (claimed by a
    ``JobRun`` row); none when nothing was resolved."""
    local = now.astimezone(times.tz)
    counts = {"roundups": 0}
    if local.weekday() != FRIDAY or local.time() < times.roundup_at:
        return counts
    # the week since the last roundup (a case resolved on Friday evening makes the next one)
    since = datetime.combine(local.date() - timedelta(days=7), times.roundup_at, tzinfo=times.tz)
    week = Case.filter(status__in=(Status.RESOLVED, Status.CLOSED), resolved_at__gte=since.astimezone(UTC),
                       resolved_at__lte=now).exclude(klass=Klass.PRIVATE)
    send_at = after_quiet_hours(now, times.tz, times.quiet_start, times.quiet_end)
    for community_id in sorted({int(cast(int, c)) for c in await week.values_list("community_id", flat=True)}):
        resolved = await week.filter(community_id=community_id).prefetch_related("building").order_by(
            "resolved_at", "id")
        async with in_transaction():
            run = await claim_run(f"{ROUNDUP_CLAIM}:{community_id}", since, now)
            if run is None:
                continue  # this week's roundup of the community went out already
            notice_id = await _notice(community_id, f"周五圆梦：本周办结{len(resolved)}件",
                                      roundup_text(since.date(), local.date(), resolved), NoticeKind.ROUNDUP,
                                      now, send_at)
            await finish_run(run, now)
        if send_at <= now:
            await fan_out(notice_id, now)
        counts["roundups"] += 1
    return counts
