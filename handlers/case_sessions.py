"""The 6/16/26 deliberation sessions (agenda, outcomes) and the Friday roundup, in chat and /api/v1.

Chat: 议事会 (or 议程) shows community staff the coming session's agenda and lets them add a case,
drop an item (confirmed), record what a session agreed, or say it took place; residents get the
public agenda of their community's coming session. The reminder and the roundup are timed jobs
(bot/scheduler.py → models/case_sessions.py).
"""

from __future__ import annotations

import re
from datetime import date, datetime, timedelta
from typing import Any

from pydantic import BaseModel, Field

from bot.api import INT_MAX, ApiRequest, ApiRouter, Strict, not_found
from bot.engine import Ask, Done, Flow, choice, confirm, free_text
from models import case_sessions as sessions
from models import cases
from models.case_sessions import OWNER_MAX, PLACE, agenda, public_line
from models.cases import (
    AGENDA_REASON_LABELS,
    NOTE_MAX,
    REASON_MAX,
    STATUS_LABELS,
    AgendaItem,
    DeliberationSession,
    next_session_day,
)
from models.errors import UserFacingError
from models.places import Community
from models.residents import Resident
from models.service_days import fmt_day, parse_date

SHOWN = 5  # agenda lines in the staff menu (a reply holds 300 characters)
PUBLIC_SHOWN = 8
CHOICES = 9  # items offered to pick from

flow = Flow("case_sessions", "议事会", keywords=("议事会", "议程"), as_self=True)
FLOWS: list[Flow] = [flow]


async def public_agenda(community_id: int, now: datetime) -> tuple[date, list[AgendaItem]]:
    """The day of the community's coming session and what is on it (category·building only)."""
    today = cases.local_today(now)
    session = await sessions.next_session(community_id, today)
    if session is None:
        return next_session_day(today), []
    return session.day, await agenda(session)


async def _public_reply(community_id: int, now: datetime) -> str:
    day, items = await public_agenda(community_id, now)
    if not items:
        return (f"下一次逢六说事议事会在{fmt_day(day)}，地点{PLACE}，目前还没有议题。"
                "有需要大家商量的事，回复“说事”反映。")
    lines = [f"{i}. {public_line(item.case)}" for i, item in enumerate(items[:PUBLIC_SHOWN], 1)]
    more = f"\n……等共{len(items)}项" if len(items) > PUBLIC_SHOWN else ""
    return (f"{fmt_day(day)}在{PLACE}召开逢六说事议事会，议题：\n" + "\n".join(lines) + more
            + "\n欢迎到场旁听、当面说事。")


def _staff_line(item: AgendaItem) -> str:
    return f"{public_line(item.case)} 编号{item.case.number}（{item.case.joins + 1}人）"


async def _menu(data: dict[str, Any], now: datetime, prefix: str = "") -> Ask:
    """The coming session's agenda and what staff can do now."""
    today = cases.local_today(now)
    community_id = data["community_id"]
    coming = await sessions.next_session(community_id, today)
    items = await agenda(coming) if coming else []
    day = coming.day if coming else next_session_day(today)
    data["session_id"] = coming.id if coming else None
    lines = [f"· {_staff_line(item)}" for item in items[:SHOWN]]
    if len(items) > SHOWN:
        lines.append(f"……等共{len(items)}项")
    listing = f"议题{len(items)}项：\n" + "\n".join(lines) if items else "暂无议题。"
    text = f"{fmt_day(day)}议事会（{PLACE}）{listing}"
    options: list[tuple[str, str]] = [("add", "添加议题")]
    if items:
        options.append(("drop", "撤下议题"))
    last = await sessions.last_session(community_id, today)
    data["last_id"] = last.id if last else None
    if last is not None:
        done = await agenda(last)
        if done:
            open_count = len([item for item in done if item.outcome_at is None])
            options.append(("outcome", f"记录{fmt_day(last.day)}议定结果（{open_count}项待记录）"))
        if last.held_at is None:
            options.append(("held", f"{fmt_day(last.day)}议事会已召开"))
    return Ask("menu", choice(prefix + text + "\n请选择：", options))


@flow.entry
async def start(actor: Resident, data: dict[str, Any], now: datetime) -> Ask | Done:
    """Staff: pick the community (when several), then the menu; residents: the public agenda."""
    communities = await sessions.staff_communities(actor.id)
    if not communities:
        return Done(await _public_reply(actor.community_id, now))  # type: ignore[attr-defined]
    if len(communities) > 1:
        names = [(c.id, c.name) for c in await Community.filter(id__in=communities).order_by("id")]
        return Ask("community", choice("哪个社区的议事会？", names))
    data["community_id"] = communities[0]
    return await _menu(data, now)


@flow.step("community")
async def got_community(answer: int, data: dict[str, Any], now: datetime) -> Ask:
    """Store the community, show its menu."""
    data["community_id"] = answer
    return await _menu(data, now)


async def _pick(session_id: int | None, question: str) -> Ask:
    items = await agenda(session_id) if session_id else []
    if not items:
        raise UserFacingError("这次议事会没有议题。")
    labels = [(item.id, _staff_line(item) + ("（已记录）" if item.outcome_at else "")) for item in items[:CHOICES]]
    return Ask("", choice(question, labels))


@flow.step("menu")
async def got_action(answer: str, data: dict[str, Any], actor: Resident, now: datetime) -> Ask | Done:
    """Start the chosen action."""
    if answer == "add":
        return Ask("add_case", free_text("请回复要上会的说事编号（数字）：", max_len=12))
    if answer == "drop":
        ask = await _pick(data["session_id"], "撤下哪一项？")
        ask.state = "drop_item"
        return ask
    if answer == "outcome":
        ask = await _pick(data["last_id"], "记录哪一项的议定结果？")
        ask.state = "outcome_item"
        return ask
    session = await sessions.mark_held(data["last_id"], actor.id, now)
    return Done(f"已记下：{fmt_day(session.day)}议事会已召开。回复“议事会”记录各项议定结果。")


@flow.step("add_case")
async def got_case(answer: str, data: dict[str, Any]) -> Ask:
    """A case of this community, live, not private; ask why it should be heard."""
    number = re.sub(r"^(编号|#|＃)", "", answer.strip()).strip()
    if not number.isascii() or not number.isdigit() or not 1 <= int(number) <= INT_MAX:
        raise UserFacingError("请回复说事编号（数字），例如：12")
    case = await sessions.addable_case(data["community_id"], int(number))
    await case.fetch_related("building")
    data["case_id"] = case.id
    return Ask("add_reason", free_text(f"编号{case.number}：{public_line(case)}。为什么要上会？"
                                       f"（{REASON_MAX}字以内）", max_len=REASON_MAX))


@flow.step("add_reason")
async def got_add_reason(answer: str, data: dict[str, Any], actor: Resident, now: datetime) -> Done:
    """Put the case on the coming session."""
    session = await sessions.coming_session(data["community_id"], now)
    item = await sessions.add_case(session.id, data["case_id"], actor.id, answer, now)
    return Done(f"已把编号{item.case.number}（{public_line(item.case)}）列入{fmt_day(session.day)}议事会议程。")


@flow.step("drop_item")
async def got_drop_item(answer: int, data: dict[str, Any]) -> Ask:
    """Store the item, ask why."""
    data["item_id"] = answer
    return Ask("drop_reason", free_text(f"撤下的原因？（{REASON_MAX}字以内，会告诉反映人）", max_len=REASON_MAX))


@flow.step("drop_reason")
async def got_drop_reason(answer: str, data: dict[str, Any]) -> Ask:
    """Store the reason; ask before dropping."""
    data["reason"] = answer
    item = await AgendaItem.get(id=data["item_id"]).prefetch_related("case__building", "session")
    return Ask("drop_confirm", confirm(f"确认把“{public_line(item.case)} 编号{item.case.number}”从"
                                       f"{fmt_day(item.session.day)}议程撤下吗？\n原因：{answer}"))


@flow.step("drop_confirm")
async def dropped(answer: bool, data: dict[str, Any], actor: Resident, now: datetime) -> Done:
    """Drop it (kept, stamped with who and why); the reporter hears."""
    if not answer:
        return Done("好的，没有撤下。")
    item = await sessions.drop_item(data["item_id"], actor.id, data["reason"], now)
    return Done(f"已撤下编号{item.case.number}，并告知了反映人。")


@flow.step("outcome_item")
async def got_outcome_item(answer: int, data: dict[str, Any]) -> Ask:
    """Store the item, ask what was agreed."""
    data["item_id"] = answer
    return Ask("outcome_text", free_text(f"议定的结果是什么？（{NOTE_MAX}字以内，会向居民公开，请勿写个人信息）",
                                         max_len=NOTE_MAX))


@flow.step("outcome_text")
async def got_outcome_text(answer: str, data: dict[str, Any]) -> Ask:
    """Store the text, ask who does it."""
    data["text"] = answer
    return Ask("outcome_owner", free_text("由谁负责？例如：物业公司", max_len=OWNER_MAX))


@flow.step("outcome_owner")
async def got_outcome_owner(answer: str, data: dict[str, Any]) -> Ask:
    """Store the owner, ask by when."""
    data["owner"] = answer
    return Ask("outcome_due", free_text("哪天前完成？例如：12月20日；没有具体日期请回复“无”", max_len=20))


NO_DATE = ("无", "没有", "跳过", "不定")


def parse_due(text: str, today: date) -> date | None:
    """A date (a month and day without a year that has passed this year means next year), or None."""
    text = text.strip()
    if text in NO_DATE:
        return None
    day = parse_date(text, today)
    if day < today and not re.search(r"\d{4}", text):
        day = day.replace(year=day.year + 1)
    if not today <= day <= today + timedelta(days=sessions.DUE_MAX_DAYS):
        raise UserFacingError("完成日期要在今天到一年以内。")
    return day


@flow.step("outcome_due")
async def got_outcome_due(answer: str, data: dict[str, Any], now: datetime) -> Ask:
    """Store the date; show the outcome and ask before recording (it is pushed to the followers)."""
    due = parse_due(answer, cases.local_today(now))
    data["due"] = due.isoformat() if due else None
    item = await AgendaItem.get(id=data["item_id"]).prefetch_related("case__building")
    when = fmt_day(due) if due else "按默认期限"
    return Ask("outcome_confirm", confirm(f"{public_line(item.case)} 编号{item.case.number}\n议定：{data['text']}\n"
                                          f"负责：{data['owner']}；完成：{when}\n确认记录并告知关注这件事的居民吗？"))


@flow.step("outcome_confirm")
async def outcome_confirmed(answer: bool, data: dict[str, Any], actor: Resident, now: datetime) -> Done:
    """Record the outcome: the case gets its deadline, its followers hear it."""
    if not answer:
        return Done("好的，没有记录。")
    due = date.fromisoformat(data["due"]) if data["due"] else None
    item = await sessions.record_outcome(data["item_id"], actor.id, data["text"], data["owner"], due, now)
    return Done(f"已记录编号{item.case.number}的议定结果，关注这件事的居民都会收到。")


# ---------------------------------------------------------------------------- the API

api = ApiRouter("case_sessions")


class OutcomeOut(BaseModel):
    text: str = Field(description="what the session agreed (public)")
    owner: str = Field(description="who does it")
    due: str | None = Field(description="YYYY-MM-DD, by when; none: the community's default term")
    recorded_at: datetime


class AgendaItemOut(BaseModel):
    id: int
    session_id: int
    case_id: int
    category: str
    category_label: str
    building: str
    status: str
    status_label: str
    joins: int = Field(description="residents who said 'me too' (the agenda is ordered by it)")
    reason: str = Field(description="big | escalated | in_person | staff")
    reason_label: str
    note: str = Field(description="why staff added it")
    added_at: datetime
    dropped_at: datetime | None
    dropped_reason: str
    outcome: OutcomeOut | None


class SessionOut(BaseModel):
    id: int
    community_id: int
    day: str = Field(description="YYYY-MM-DD: the 6th, 16th or 26th")
    place: str
    reminded_at: datetime | None = Field(description="when the residents' reminder went out")
    held_at: datetime | None
    items: list[AgendaItemOut] = Field(description="on the agenda, most joined first")
    dropped: list[AgendaItemOut] = Field(description="taken off, with who and why")


class SessionList(BaseModel):
    upcoming: list[SessionOut] = Field(description="not held yet, soonest first")
    recent: list[SessionOut] = Field(description="held or past, latest first")


class PublicItemOut(BaseModel):
    case_id: int = Field(description="for 'me too'")
    category_label: str
    building: str
    joins: int


class PublicSessionOut(BaseModel):
    day: str = Field(description="YYYY-MM-DD")
    place: str
    items: list[PublicItemOut] = Field(description="no private case, nobody's name, room, words or photos")


class AgendaAddIn(Strict):
    case_id: int = Field(ge=1, le=INT_MAX, description="the case number")
    reason: str = Field(min_length=1, max_length=REASON_MAX, description="why it should be heard")


class DropIn(Strict):
    reason: str = Field(min_length=1, max_length=REASON_MAX, description="told to the reporter")


class OutcomeIn(Strict):
    text: str = Field(min_length=1, max_length=NOTE_MAX, description="what was agreed (public: no personal data)")
    owner: str = Field(min_length=1, max_length=OWNER_MAX, description="who does it, e.g. 物业公司")
    due: str | None = Field(default=None, pattern=r"^\d{4}-\d{2}-\d{2}$",
                            description="YYYY-MM-DD within a year; none: the community's outcome_days")


def _item_out(item: AgendaItem) -> AgendaItemOut:
    case = item.case
    outcome = None
    if item.outcome_at is not None:
        outcome = OutcomeOut(text=item.outcome, owner=item.outcome_owner,
                             due=item.outcome_due.isoformat() if item.outcome_due else None,
                             recorded_at=item.outcome_at)
    return AgendaItemOut(
        id=item.id, session_id=item.session_id, case_id=case.id, category=case.category,  # type: ignore[attr-defined]
        category_label=case.category_label, building=sessions.place_of(case), status=case.status,
        status_label=STATUS_LABELS.get(case.status, case.status), joins=case.joins, reason=item.reason,
        reason_label=AGENDA_REASON_LABELS.get(item.reason, item.reason), note=item.added_note, added_at=item.added_at,
        dropped_at=item.dropped_at, dropped_reason=item.dropped_reason, outcome=outcome)


async def _session_out(session: DeliberationSession) -> SessionOut:
    return SessionOut(id=session.id, community_id=session.community_id, day=session.day.isoformat(),  # type: ignore[attr-defined]
                      place=PLACE, reminded_at=session.reminded_at, held_at=session.held_at,
                      items=[_item_out(i) for i in await agenda(session)],
                      dropped=[_item_out(i) for i in await sessions.dropped(session)])


@api.route("GET", "/communities/{community_id}/sessions", summary="Coming and recent sessions with agendas "
           "(community staff)", response=SessionList, errors=(409,))
async def list_sessions(req: ApiRequest) -> SessionList:
    """The community's sessions not held yet and the latest held ones, each with its agenda."""
    actor = await req.bound_actor()
    community_id = req.path["community_id"]
    await sessions.check_staff(actor.id, community_id)
    upcoming, recent = await sessions.sessions_of(community_id, cases.local_today(req.now))
    return SessionList(upcoming=[await _session_out(s) for s in upcoming],
                       recent=[await _session_out(s) for s in recent])


@api.route("GET", "/communities/{community_id}/sessions/next",
           summary="The public agenda of the community's coming session (its residents)", response=PublicSessionOut,
           errors=(409,))
async def next_session(req: ApiRequest) -> PublicSessionOut:
    """Category and building per item, most joined first; an empty list when nothing is on it yet."""
    actor = await req.bound_actor()
    community_id = req.path["community_id"]
    if actor.community_id != community_id and community_id not in await sessions.staff_communities(actor.id):  # type: ignore[attr-defined]
        raise not_found()
    day, items = await public_agenda(community_id, req.now)
    return PublicSessionOut(day=day.isoformat(), place=PLACE, items=[
        PublicItemOut(case_id=item.case.id, category_label=item.case.category_label,
                      building=sessions.place_of(item.case), joins=item.case.joins) for item in items])


@api.route("POST", "/sessions/{session_id}/items", summary="Put a case on a coming session (community staff)",
           body=AgendaAddIn, response=AgendaItemOut, status=201, errors=(409,))
async def post_item(req: ApiRequest) -> AgendaItemOut:
    """A live case of the session's community that is not private, with the reason; 409 when the
    session was held, the case is private or done, or it is on the agenda already."""
    actor = await req.bound_actor()
    body: AgendaAddIn = req.body
    item = await sessions.add_case(req.path["session_id"], body.case_id, actor.id, body.reason, req.now)
    return _item_out(item)


@api.route("POST", "/agenda-items/{item_id}/drop", summary="Take an item off a coming session (community staff)",
           body=DropIn, response=AgendaItemOut, errors=(409,))
async def drop(req: ApiRequest) -> AgendaItemOut:
    """The item stays, stamped with who and why; the reporter is told."""
    actor = await req.bound_actor()
    return _item_out(await sessions.drop_item(req.path["item_id"], actor.id, req.body.reason, req.now))


@api.route("POST", "/agenda-items/{item_id}/outcome", summary="Record what the session agreed (community staff)",
           body=OutcomeIn, response=AgendaItemOut, errors=(409,))
async def post_outcome(req: ApiRequest) -> AgendaItemOut:
    """On or after the session's day. A live case at the community level gets the date as its
    deadline; everyone following the case hears the outcome. Again: corrects it."""
    actor = await req.bound_actor()
    body: OutcomeIn = req.body
    try:
        due = date.fromisoformat(body.due) if body.due else None
    except ValueError:
        raise UserFacingError("没有这一天，请检查日期。") from None
    item = await sessions.record_outcome(req.path["item_id"], actor.id, body.text, body.owner, due, req.now)
    return _item_out(item)


@api.route("POST", "/sessions/{session_id}/held", summary="Say a session took place (community staff)",
           response=SessionOut, errors=(409,))
async def post_held(req: ApiRequest) -> SessionOut:
    """On or after its day; saying it twice changes nothing."""
    actor = await req.bound_actor()
    return await _session_out(await sessions.mark_held(req.path["session_id"], actor.id, req.now))
