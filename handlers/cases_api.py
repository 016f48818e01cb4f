"""逢六说事 through /api/v1: report, me too, my cases, the handlers' queue and steps, feedback,
and each community's case settings.

Who sees what is decided once, in models/cases.py (``access_of``): the reporter and the handlers
see the whole case, a resident who said "me too" sees only its public side, anybody else gets
404. A family proxy acts for a linked elder by naming them (``for_resident_id``), and may read
the cases the elder reported or joined. The admin runs the service but handles no cases, so
cases and case settings answer the admin 404 like any outsider.
"""

from __future__ import annotations

import hashlib
from datetime import date, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, model_validator

from bot.api import (
    INT_MAX,
    ApiRequest,
    ApiRouter,
    FileBody,
    Query,
    Strict,
    idempotency_key,
    invalid,
    not_found,
    once,
)
from models import cases, media
from models.cases import (
    CATEGORIES,
    CATEGORY_BY_CODE,
    DAYS_MAX,
    DESCRIPTION_MAX,
    EVENT_LABELS,
    FIXED_LABELS,
    KLASS_LABELS,
    LEVEL_LABELS,
    LIVE,
    NOTE_MAX,
    PHOTOS_MAX,
    PUBLIC_NOTES,
    REASON_MAX,
    SOURCE_LABELS,
    STATUS_LABELS,
    SUMMARY_MAX,
    Access,
    Case,
    CaseEvent,
    CaseFeedback,
    CaseRules,
    CaseSettings,
    EventKind,
    Fixed,
    Klass,
    Level,
    Source,
    Status,
)
from models.errors import UserFacingError
from models.places import Building, Community
from models.proxies import elders_of, record_action
from models.residents import Resident, normalize_mobile
from models.roles import Place, Role, active_roles, resident_place

api = ApiRouter("cases")

Id = Annotated[int, Field(ge=1, le=INT_MAX)]
Days = Annotated[int, Field(ge=1, le=DAYS_MAX)]
CategoryCode = Literal[tuple(c.code for c in CATEGORIES)]  # type: ignore[valid-type]
KlassCode = Literal[tuple(KLASS_LABELS)]  # type: ignore[valid-type]
LevelCode = Literal[tuple(LEVEL_LABELS)]  # type: ignore[valid-type]
# the property company's deadline is set per category (property_days), the other levels' here
TimedLevel = Literal[tuple(level for level in LEVEL_LABELS if level != Level.PROPERTY)]  # type: ignore[valid-type]

ENTERERS = (Role.COMMUNITY_STAFF, Role.GRID_WORKER)  # may enter a case for someone (office visit, hotline)
SETTERS = (Role.COMMUNITY_STAFF, Role.SUBDISTRICT_STAFF)  # may change a community's case settings
CATEGORY_DOC = "one of: " + ", ".join(f"{c.code} {c.label}" for c in CATEGORIES)

# events residents make: their names are shown to handlers and to themselves, not to other residents
RESIDENT_EVENTS = {EventKind.JOINED, EventKind.FEEDBACK, EventKind.REOPENED, EventKind.INFO_GIVEN,
                   EventKind.IN_PERSON}


# ---------------------------------------------------------------------------- shapes


class PhotoIn(Strict):
    """Exactly one of the two."""

    media_id: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_-]{1,128}$",
                                 description="a WeChat media id (uploaded through the official account API)")
    pic_url: str | None = Field(default=None, max_length=500, pattern=r"^https://\S+$",
                                description="the https URL of an image the mini-program uploaded")

    @model_validator(mode="after")
    def _one(self) -> PhotoIn:
        if (self.media_id is None) == (self.pic_url is None):
            raise ValueError("give either media_id or pic_url")
        return self

    def stored(self) -> dict[str, str]:
        return {"media_id": self.media_id} if self.media_id is not None else {"pic_url": str(self.pic_url)}


class PhotoOut(BaseModel):
    media_id: str | None = None
    pic_url: str | None = None
    state: str = Field(default="saving", description="stored (our copy, kept however long WeChat keeps its own) | "
                                                      "saving (fetched within a minute or two) | lost (WeChat had "
                                                      "already forgotten it, or it was not an image)")
    url: str | None = Field(default=None, description="where to fetch the picture: GET this path below /api/v1 "
                                                      "with the session token")


def _photo_out(photo: dict[str, Any], url: str | None = None) -> PhotoOut:
    state = media.state(photo)
    return PhotoOut(media_id=photo.get("media_id"), pic_url=photo.get("pic_url"), state=state,
                    url=url if state != "lost" else None)


class LocationIn(Strict):
    lat: float = Field(ge=-90, le=90)
    lon: float = Field(ge=-180, le=180)
    label: str = Field(default="", max_length=40, description="what the map picker called the place")


class LocationOut(BaseModel):
    lat: float
    lon: float
    label: str


class CaseIn(Strict):
    category: CategoryCode = Field(description=CATEGORY_DOC)  # type: ignore[valid-type]
    description: str = Field(min_length=1, max_length=DESCRIPTION_MAX)
    photos: list[PhotoIn] = Field(default_factory=list, max_length=PHOTOS_MAX)
    building_id: Id | None = Field(default=None, description="where the problem is; else the building nearest "
                                                             "`location`, else the reporter's own building")
    location: LocationIn | None = Field(default=None, description="a point chosen on the map")
    in_person: bool = Field(default=False, description="also raise it in person at the next 6th/16th/26th session")
    for_resident_id: Id | None = Field(default=None, description="a family proxy reporting for a linked elder")
    source: Literal["in_person", "hotline"] | None = Field(
        default=None, description="staff entering a case for someone who came to the office or called 12345 "
                                  "(community staff or the grid worker of that place); needs resident_id or contact")
    resident_id: Id | None = Field(default=None, description="staff entry: the resident it is entered for")
    contact: str | None = Field(default=None, min_length=5, max_length=20,
                                description="staff entry: the mobile of a caller who is not a resident here "
                                            "(needs building_id)")
    client_token: str | None = Field(default=None, min_length=1, max_length=64, pattern=r"^[\x21-\x7e]+$",
                                     description="same as the Idempotency-Key header: a retried report with "
                                                 "the same token returns the first case")


class PersonRef(BaseModel):
    id: int
    name: str


class EventOut(BaseModel):
    id: int
    kind: str = Field(description="reported | joined | assigned | accepted | info_requested | info_given | "
                                  "progress | resolved | escalated | overdue | classified | in_person | reopened "
                                  "| feedback | closed | agenda | outcome")
    kind_label: str
    at: str
    by: str = Field(description="who acted, as a role: 物业公司, 网格员, 社区, 居民, 系统 (a deadline passed)...")
    by_name: str | None = Field(default=None, description="the person's name, where the viewer may know it")
    level_label: str = Field(description="the level in charge after the step")
    note: str = Field(description="the words of the step (for a joiner, only a resolution's summary and a "
                                  "session's outcome)")
    detail: str = Field(description="what changed, e.g. 物业公司→网格员, 私事→大事, 已解决·5分")
    photos: list[PhotoOut] = []


class CaseOut(BaseModel):
    id: int
    number: str = Field(description="what residents and staff quote (编号)")
    access: str = Field(description="how the caller sees it: reporter | handler | follower (said me too) | "
                                    "public (a handler whose step took it out of their hands)")
    as_resident_id: int | None = Field(default=None, description="set when seen through an elder the caller acts for")
    category: str
    category_label: str
    klass: str = Field(description="private 私事 | small 小事 | big 大事")
    klass_label: str
    status: str = Field(description="open | in_progress | resolved (waiting for feedback) | closed")
    status_label: str
    level: str = Field(description="the level in charge: mediator | property | grid | community | sub_district")
    handler: str = Field(description="the level in charge, in Chinese")
    due_at: str | None = Field(description="the deadline of the level in charge (none for a big case waiting for "
                                           "its session)")
    overdue: bool
    next_step: str = Field(description="what happens next, for this viewer")
    building_id: int | None
    building: str
    created_at: str
    updated_at: str
    resolved_at: str | None
    closed_at: str | None
    joins: int = Field(description="residents who said me too")
    summary: str = Field(description="the public summary of what was done")
    agenda_day: str | None = Field(description="the coming session (YYYY-MM-DD) it is on the agenda of")
    actions: list[str] = Field(description="what the caller may do now: accept, ask, progress, resolve, escalate, "
                                           "classify (handlers); in_person, info, feedback (reporter); feedback "
                                           "(joiner)")
    feedback_due: bool = Field(description="resolved and waiting for this viewer's feedback")
    events: list[EventOut]
    # the reporter's and handlers' side only (None for a joiner)
    description: str | None = None
    photos: list[PhotoOut] | None = None
    location: LocationOut | None = None
    source: str | None = Field(default=None, description="chat | api | in_person | hotline")
    source_label: str | None = None
    reporter: PersonRef | None = None
    entered_by: PersonRef | None = Field(default=None, description="staff or the family proxy who entered it")
    contact: str | None = Field(default=None, description="handlers only: a hotline caller's number")
    in_person: bool | None = None
    rating: int | None = None
    open_question: str | None = Field(default=None, description="a handler's question the reporter has not "
                                                                "answered yet")


class CaseSummary(BaseModel):
    id: int
    number: str
    relation: str = Field(description="reporter | joiner | handler")
    category: str
    category_label: str
    klass_label: str
    status: str
    status_label: str
    handler: str
    due_at: str | None
    overdue: bool
    next_step: str
    building: str
    created_at: str
    joins: int
    description: str | None = Field(description="for its reporter and handlers only")


class CaseList(BaseModel):
    items: list[CaseSummary]


class CasesQuery(Query):
    queue: bool = Field(default=False, description="the handler's queue: live cases at my levels, overdue first")
    for_resident_id: Id | None = Field(default=None, description="the cases of an elder I act for")
    limit: int = Field(default=20, ge=1, le=50)


class SimilarQuery(Query):
    category: CategoryCode = Field(description=CATEGORY_DOC)  # type: ignore[valid-type]
    building_id: Id | None = None
    lat: float | None = Field(default=None, ge=-90, le=90)
    lon: float | None = Field(default=None, ge=-180, le=180)
    for_resident_id: Id | None = Field(default=None, description="look from an elder I act for")


class SimilarOut(BaseModel):
    id: int
    category_label: str
    building: str
    date: str = Field(description="when it was first reported, YYYY-MM-DD")
    joins: int = Field(description="residents who already said me too")


class SimilarList(BaseModel):
    items: list[SimilarOut]


class ActAsIn(Strict):
    for_resident_id: Id | None = Field(default=None, description="a family proxy acting for a linked elder")


class InfoIn(ActAsIn):
    text: str = Field(min_length=1, max_length=NOTE_MAX, description="the answer to the handler's question")


class FeedbackIn(ActAsIn):
    fixed: Literal["fixed", "partly", "not_fixed"]
    rating: int | None = Field(default=None, ge=1, le=5, description="1-5; required unless not_fixed")
    comment: str = Field(default="", max_length=NOTE_MAX, description="required when not_fixed: what is still wrong")


ACTION_FIELDS: dict[str, set[str]] = {  # required fields of each step (photos are optional with progress)
    "accept": set(), "ask": {"question"}, "progress": {"note"}, "resolve": {"summary"},
    "escalate": {"reason"}, "classify": {"klass", "reason"},
}


class ActionIn(Strict):
    action: Literal["accept", "ask", "progress", "resolve", "escalate", "classify"] = Field(
        description="accept; ask (question); progress (note, photos); resolve (summary, public); escalate "
                    "(reason: to the next level); classify (klass, reason)")
    question: str | None = Field(default=None, min_length=1, max_length=NOTE_MAX)
    note: str | None = Field(default=None, min_length=1, max_length=NOTE_MAX)
    summary: str | None = Field(default=None, min_length=1, max_length=SUMMARY_MAX,
                                description="residents read it: no personal details")
    reason: str | None = Field(default=None, min_length=1, max_length=REASON_MAX)
    klass: KlassCode | None = None  # type: ignore[valid-type]
    photos: list[PhotoIn] = Field(default_factory=list, max_length=PHOTOS_MAX)


class Chains(Strict):
    """The levels each class goes through, first to last (a level nobody holds is skipped)."""

    private: list[LevelCode] = Field(min_length=1, max_length=len(LEVEL_LABELS))  # type: ignore[valid-type]
    small: list[LevelCode] = Field(min_length=1, max_length=len(LEVEL_LABELS))  # type: ignore[valid-type]
    big: list[LevelCode] = Field(min_length=1, max_length=len(LEVEL_LABELS))  # type: ignore[valid-type]


class CaseSettingsIn(Strict):
    chains: Chains
    classes: dict[CategoryCode, KlassCode] = Field(  # type: ignore[valid-type]
        description="the class a new case of each category gets (a category left out keeps the default)")
    property_days: dict[CategoryCode, Days] = Field(  # type: ignore[valid-type]
        description="the property company's deadline per category, in days")
    level_days: dict[TimedLevel, Days] = Field(  # type: ignore[valid-type]
        description="the deadline of the mediator, grid worker, community and sub-district, in days")
    outcome_days: Days = Field(description="days to carry out a session outcome that names no date")
    working_days: bool = Field(description="count deadlines in working days (the holiday calendar)")


class CaseSettingsOut(BaseModel):
    community_id: int
    chains: Chains
    classes: dict[str, str]
    property_days: dict[str, int]
    level_days: dict[str, int]
    outcome_days: int
    working_days: bool
    updated_at: str | None = Field(description="none while the community uses the defaults")
    updated_by: str | None
    labels: dict[str, dict[str, str]] = Field(description="Chinese names of the codes: category, klass, level")


# ---------------------------------------------------------------------------- helpers




def _iso_day(value: date | None) -> str | None:
    return value.isoformat() if value else None


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


async def _record(actor: Resident, person: Resident | None, action: str, case: Case, now: datetime) -> None:
    await record_action(actor_id=actor.id, subject_id=person.id if person else None, action=action, channel="api",
                        now=now, detail={"case_id": case.id})


async def _seen(req: ApiRequest, case_id: int) -> tuple[Case, str, Resident]:
    """The case, the caller's access and as whom: their own, else that of an elder they act for
    (as reporter or joiner; an elder's staff roles are not lent). 404 when neither sees it."""
    actor = await req.bound_actor()
    case = await Case.get_or_none(id=case_id)
    if case is None:
        raise not_found()
    access = await cases.access_of(actor.id, case)
    if access is not None:
        return case, access, actor
    for elder in await elders_of(actor.id):
        access = await cases.access_of(elder.id, case)
        if access in (Access.REPORTER, Access.FOLLOWER):
            return case, access, elder
    raise not_found()


async def _access_as(case: Case, person: Resident, actor: Resident) -> str:
    """The access of a follower who just acted on the case (a proxy never borrows an elder's staff role)."""
    access = await cases.access_of(person.id, case) or Access.FOLLOWER
    return Access.FOLLOWER if access == Access.HANDLER and person.id != actor.id else access


async def _building_name(case: Case) -> str:
    if case.building_id is None:  # type: ignore[attr-defined]
        return (case.location or {}).get("label", "")
    name = await Building.filter(id=case.building_id).first().values_list("name", flat=True)  # type: ignore[attr-defined]
    return str(name or "")


def _next_step(case: Case, handler: bool, now: datetime) -> str:
    if case.status in LIVE:
        if not handler:
            return cases.promise_text(case)
        if cases.is_overdue(case, now):
            return f"已超过办理期限（{cases.when_zh(case.due_at)}），请尽快办结"
        step = "待受理" if case.status == Status.OPEN else "处理中"
        if case.due_at is None:
            return f"{step}，等待逢六议事会"
        return f"{step}，请于{cases.when_zh(case.due_at)}前办结"
    if case.status == Status.RESOLVED:
        return "已办结，等待居民评价" if handler else f"已办结：{case.summary}。请评价问题是否解决"
    return f"已关闭，评分{case.rating}分" if case.rating else "已关闭（未评价）"


def _detail(event: CaseEvent) -> str:
    data = event.data or {}
    if event.kind == EventKind.ESCALATED and data.get("before"):
        return f"{LEVEL_LABELS.get(data['before'], '')}→{LEVEL_LABELS.get(data.get('after', ''), '')}"
    if event.kind == EventKind.CLASSIFIED:
        return f"{KLASS_LABELS.get(data.get('before', ''), '')}→{KLASS_LABELS.get(data.get('after', ''), '')}"
    if event.kind == EventKind.ASSIGNED:
        return KLASS_LABELS.get(data.get("klass", ""), "")
    if event.kind == EventKind.FEEDBACK:
        rating = data.get("rating")
        return FIXED_LABELS.get(data.get("fixed", ""), "") + (f"·{rating}分" if rating else "")
    if event.kind == EventKind.AGENDA and data.get("session_day"):
        return f"{'列入' if data.get('added') else '移出'}{data['session_day']}议事会"
    if event.kind == EventKind.CLOSED:
        return "已评价" if data.get("reason") == "rated" else "未评价"
    return ""


async def _events(case: Case, access: str, mine: set[int]) -> list[EventOut]:
    rows = await cases.events_of(case, Access.FOLLOWER if access not in (Access.REPORTER, Access.HANDLER)
                                 else access)
    public = access not in (Access.REPORTER, Access.HANDLER)
    ids = {e.actor_id for e in rows if e.actor_id is not None}  # type: ignore[attr-defined]
    names = dict(await Resident.filter(id__in=list(ids)).values_list("id", "name")) if ids and not public else {}
    out = []
    for e in rows:
        actor_id = e.actor_id  # type: ignore[attr-defined]
        named = not public and actor_id is not None and (
            access == Access.HANDLER or actor_id in mine or e.kind not in RESIDENT_EVENTS)
        name = str(names.get(actor_id, "")) if named else ""
        out.append(EventOut(
            id=e.id, kind=e.kind, kind_label=EVENT_LABELS.get(e.kind, e.kind), at=e.created_at.isoformat(),
            by=e.actor_label, by_name=name or None,
            level_label=LEVEL_LABELS.get(e.level, ""),
            note=e.note if not public or e.kind in PUBLIC_NOTES else "", detail=_detail(e),
            photos=[] if public else [_photo_out(p, f"/cases/{case.id}/events/{e.id}/photos/{i}")
                                      for i, p in enumerate((e.data or {}).get("photos", []), start=1)]))
    return out


async def _person_ref(resident_id: int | None) -> PersonRef | None:
    if resident_id is None:
        return None
    person = await Resident.get_or_none(id=resident_id)
    return PersonRef(id=person.id, name=person.name) if person else None


async def _handler_actions(case: Case, actor_id: int) -> list[str]:
    if case.status not in LIVE:
        return []
    actions = []
    if await cases.may_handle(actor_id, case):
        actions += ["accept"] if case.status == Status.OPEN else []
        actions += ["ask"] if case.reporter_id is not None else []  # type: ignore[attr-defined]
        actions += ["progress", "resolve"]
        chain = (await cases.rules_of(case.community_id)).chains.get(case.klass, [])  # type: ignore[attr-defined]
        if case.level not in chain or chain.index(case.level) < len(chain) - 1:
            actions.append("escalate")
    if await cases.handling_levels(actor_id, case) & {Level.GRID, Level.COMMUNITY, case.level}:
        actions.append("classify")
    return actions


async def _case_out(case: Case, access: str, viewer: Resident, actor: Resident, now: datetime) -> CaseOut:
    """The case as ``actor`` sees it, acting as ``viewer`` (themselves or an elder)."""
    whole = access in (Access.REPORTER, Access.HANDLER)
    events = await _events(case, access, {viewer.id, actor.id})
    feedback_due = (access in (Access.REPORTER, Access.FOLLOWER) and case.status == Status.RESOLVED
                    and not await CaseFeedback.filter(case_id=case.id, resident_id=viewer.id,
                                                      round=case.reopened).exists())
    open_question = None
    if access == Access.REPORTER:
        asked = [e for e in events if e.kind in (EventKind.INFO_REQUESTED, EventKind.INFO_GIVEN)]
        if asked and asked[-1].kind == EventKind.INFO_REQUESTED and case.status in LIVE:
            open_question = asked[-1].note
    if access == Access.HANDLER:
        actions = await _handler_actions(case, actor.id)
    else:
        actions = []
        if access == Access.REPORTER and case.status in LIVE and case.klass != Klass.PRIVATE and not case.in_person:
            actions.append("in_person")
        if open_question:
            actions.append("info")
    if feedback_due:
        actions.append("feedback")
    out = CaseOut(
        id=case.id, number=case.number, access=access, as_resident_id=viewer.id if viewer.id != actor.id else None,
        category=case.category, category_label=case.category_label, klass=case.klass,
        klass_label=KLASS_LABELS.get(case.klass, case.klass), status=case.status,
        status_label=STATUS_LABELS.get(case.status, case.status), level=case.level, handler=cases.handler_label(case),
        due_at=_iso(case.due_at), overdue=cases.is_overdue(case, now),
        next_step=_next_step(case, access == Access.HANDLER, now),
        building_id=case.building_id, building=await _building_name(case),  # type: ignore[attr-defined]
        created_at=case.created_at.isoformat(), updated_at=case.updated_at.isoformat(),
        resolved_at=_iso(case.resolved_at), closed_at=_iso(case.closed_at), joins=case.joins, summary=case.summary,
        agenda_day=_iso_day(await cases.agenda_day(case.id)), actions=actions, feedback_due=feedback_due, events=events)
    if whole:
        location = case.location
        out.description = case.description
        out.photos = [_photo_out(p, f"/cases/{case.id}/photos/{i}") for i, p in enumerate(case.photos, start=1)]
        out.location = LocationOut(lat=location["lat"], lon=location["lon"], label=location.get("label", "")) \
            if location else None
        out.source, out.source_label = case.source, SOURCE_LABELS.get(case.source, case.source)
        out.reporter = await _person_ref(case.reporter_id)  # type: ignore[attr-defined]
        out.entered_by = await _person_ref(case.entered_by_id)  # type: ignore[attr-defined]
        out.contact = (case.contact or None) if access == Access.HANDLER else None
        out.in_person, out.rating, out.open_question = case.in_person, case.rating, open_question
    return out


async def _public_out(case: Case, actor: Resident, now: datetime) -> CaseOut:
    """What a joiner would see, for staff whose own step put the case beyond their sight."""
    out = await _case_out(case, Access.FOLLOWER, actor, actor, now)
    out.access, out.actions, out.feedback_due = "public", [], False
    return out


async def _summary(case: Case, relation: str, now: datetime) -> CaseSummary:
    return CaseSummary(
        id=case.id, number=case.number, relation=relation, category=case.category,
        category_label=case.category_label, klass_label=KLASS_LABELS.get(case.klass, case.klass), status=case.status,
        status_label=STATUS_LABELS.get(case.status, case.status), handler=cases.handler_label(case),
        due_at=_iso(case.due_at), overdue=cases.is_overdue(case, now),
        next_step=_next_step(case, relation == "handler", now),
        building=case.building.name if case.building else (case.location or {}).get("label", ""),
        created_at=case.created_at.isoformat(), joins=case.joins,
        description=case.description if relation in ("reporter", "handler") else None)


async def _building_place(building: Building) -> Place:
    sub_id = await Community.filter(id=building.community_id).first().values_list(  # type: ignore[attr-defined]
        "sub_district_id", flat=True)
    return Place(sub_id, building.community_id, building.grid_id)  # type: ignore[arg-type, attr-defined]


async def _enters_for(actor: Resident, places: list[Place]) -> bool:
    """Whether one of the actor's community-staff or grid-worker roles covers every place."""
    roles = [r for r in await active_roles(actor.id) if r.role in ENTERERS]
    return any(all(place.within(role) for place in places) for role in roles)


# ---------------------------------------------------------------------------- idempotent report


def _idempotency_key(req: ApiRequest, body: CaseIn) -> str | None:
    return idempotency_key(req.http, body.client_token)


def _check_case_in(body: CaseIn) -> None:
    if body.source is None:
        for name in ("resident_id", "contact"):
            if getattr(body, name) is not None:
                raise invalid(f"body.{name}", "only for staff entry (with source)")
        return
    if body.for_resident_id is not None:
        raise invalid("body.for_resident_id", "not with source: staff enter with resident_id or contact")
    if (body.resident_id is None) == (body.contact is None):
        raise invalid("body.resident_id", "staff entry needs either resident_id or contact")
    if body.contact is not None and body.building_id is None:
        raise invalid("body.building_id", "required with contact")


async def _report(req: ApiRequest, actor: Resident, body: CaseIn) -> Case:
    """Create the case (no retry check here) and record who did it for whom."""
    common: dict[str, Any] = dict(
        category=body.category, description=body.description, photos=[p.stored() for p in body.photos],
        building_id=body.building_id, location=body.location.model_dump() if body.location else None,
        in_person=body.in_person, now=req.now)
    if body.source is None:
        _, person = await req.acting_for(body.for_resident_id)
        case = await cases.report_case(reporter=person, source=Source.API,
                                       entered_by_id=actor.id if person.id != actor.id else None, **common)
        await _record(actor, person, "report_case", case, req.now)
        return case
    places: list[Place] = []
    reporter: Resident | None = None
    community_id: int | None = None
    contact = ""
    if body.resident_id is not None:
        reporter = await Resident.get_or_none(id=body.resident_id, erased_at=None)
        if reporter is None:
            raise not_found()
        places.append(await resident_place(reporter))
    else:
        try:
            contact = normalize_mobile(str(body.contact))
        except UserFacingError as exc:
            raise invalid("body.contact", exc.message) from None
    if body.building_id is not None:
        building = await Building.get_or_none(id=body.building_id)
        if building is None:
            raise not_found()
        places.append(await _building_place(building))
        community_id = building.community_id  # type: ignore[attr-defined]
    if not await _enters_for(actor, places):
        raise not_found()
    case = await cases.report_case(reporter=reporter, community_id=community_id, source=body.source,
                                   entered_by_id=actor.id, contact=contact, **common)
    await _record(actor, reporter, "enter_case", case, req.now)
    return case


# ---------------------------------------------------------------------------- residents


@api.route("POST", "/cases", summary="Report a problem (说事)", body=CaseIn, response=CaseOut, status=201,
           errors=(404, 409))
async def post_case(req: ApiRequest) -> CaseOut:
    """Classed from its category, given to the first level of its chain with a deadline; the answer
    says who handles it by when. Send an Idempotency-Key header (or client_token): a retry with the
    same key returns the first case instead of a second one (for 24 hours; 422 if the body differs).
    Call GET /cases/similar first to offer "me too" instead of a duplicate."""
    actor = await req.bound_actor()
    body: CaseIn = req.body
    _check_case_in(body)
    token = _idempotency_key(req, body)
    if token is None:
        case = await _report(req, actor, body)
    else:
        async def create() -> int:
            return (await _report(req, actor, body)).id

        fingerprint = hashlib.sha256(body.model_dump_json(exclude={"client_token"}).encode()).hexdigest()
        case = await Case.get(id=await once(req.services.store, "cases", actor.id, token, fingerprint, create,
                    lambda found: Case.filter(id=found).exists(), what="report",
                    busy="上一次提交还在处理中，请稍后在“我的事”里查看。"))
    access = await cases.access_of(actor.id, case)
    if access is not None:
        return await _case_out(case, access, actor, actor, req.now)
    if body.source is None:  # a proxy reporting for an elder reads it as the elder's reporter
        elder = await Resident.get(id=case.reporter_id)  # type: ignore[attr-defined]
        return await _case_out(case, Access.REPORTER, elder, actor, req.now)
    return await _public_out(case, actor, req.now)  # staff who entered a case they do not handle


# registered before /cases/{case_id}, which would otherwise take "similar" for an id
@api.route("GET", "/cases/similar", summary="Open cases a new report may duplicate", query=SimilarQuery,
           response=SimilarList, errors=(404, 409))
async def similar(req: ApiRequest) -> SimilarList:
    """Live cases of the category in the same building or nearby, reported lately, most joined first;
    never a private matter, never words, photos or names. Without building_id or lat/lon, around the
    caller's own building."""
    q: SimilarQuery = req.query
    if (q.lat is None) != (q.lon is None):
        raise invalid("query.lon" if q.lon is None else "query.lat", "give lat and lon together")
    actor, person = await req.acting_for(q.for_resident_id)
    community_id = person.community_id  # type: ignore[attr-defined]
    building_id = q.building_id
    if building_id is not None:
        building = await Building.get_or_none(id=building_id)
        if building is None:
            raise not_found()
        if building.community_id != community_id and not await _enters_for(  # type: ignore[attr-defined]
                actor, [await _building_place(building)]):
            raise not_found()
        community_id = building.community_id  # type: ignore[attr-defined]
    elif q.lat is None:
        building_id = person.building_id  # type: ignore[attr-defined]
    location = {"lat": q.lat, "lon": q.lon} if q.lat is not None else None
    found = await cases.similar_cases(community_id=community_id, category=q.category, building_id=building_id,
                                      location=location, now=req.now, exclude_resident=person.id)
    return SimilarList(items=[SimilarOut(
        id=c.id, category_label=c.category_label, building=c.building.name if c.building else "",
        date=c.created_at.astimezone(cases.CONTEXT.tz).date().isoformat(), joins=c.joins) for c in found])


@api.route("GET", "/cases", summary="My cases, or (queue=1) the cases waiting for me as a handler",
           query=CasesQuery, response=CaseList, errors=(404, 409))
async def list_cases(req: ApiRequest) -> CaseList:
    """Residents: the cases I (or an elder I act for) reported or joined, newest first, with status and
    next step. Handlers (queue=1): the live cases at my levels, overdue first, then most joined, then
    oldest; empty for anyone who handles none."""
    q: CasesQuery = req.query
    if q.queue:
        if q.for_resident_id is not None:
            raise invalid("query.for_resident_id", "not with queue")
        actor = await req.bound_actor()
        rows = await cases.queue_of(actor.id, req.now, limit=q.limit)
        return CaseList(items=[await _summary(c, "handler", req.now) for c in rows])
    _, person = await req.acting_for(q.for_resident_id)
    rows = await cases.cases_of(person.id, limit=q.limit)
    return CaseList(items=[
        await _summary(c, "reporter" if c.reporter_id == person.id else "joiner", req.now)  # type: ignore[attr-defined]
        for c in rows])


@api.route("GET", "/cases/{case_id}", summary="A case as I may see it", response=CaseOut, errors=(409,))
async def get_case(req: ApiRequest) -> CaseOut:
    """Its reporter and handlers see the description, photos and every step (who, when, what); a
    resident who said me too sees the public side only: category, building, dates, status, the
    summary and public steps without names. Anybody else: 404."""
    case, access, viewer = await _seen(req, req.path["case_id"])
    return await _case_out(case, access, viewer, await req.bound_actor(), req.now)


@api.route("GET", "/cases/{case_id}/photos/{index}", summary="A photo of a case, from our own copy",
           produces="image/*", errors=(409,))
async def get_photo(req: ApiRequest) -> FileBody:
    """The index-th photo (from 1) the resident sent with the case, as JPEG, PNG, GIF or WebP: for
    those who see the whole case (its reporter, a family member acting for them, its handlers);
    404 for anyone else. Kept in our store, so it shows long after WeChat forgot it (3 days); a photo
    not stored yet is fetched on the spot (409 if that fails for now: try again), and one WeChat had
    already forgotten, or that was no image, answers 404."""
    return await _photo_file(req)


@api.route("GET", "/cases/{case_id}/events/{event_id}/photos/{index}", summary="A photo of a progress note",
           produces="image/*", errors=(409,))
async def get_event_photo(req: ApiRequest) -> FileBody:
    """The index-th photo (from 1) of a step of the case (a handler's progress note), for those who
    see the whole case, as GET /cases/{case_id}/photos/{index}."""
    return await _photo_file(req, req.path["event_id"])


async def _photo_file(req: ApiRequest, event_id: int | None = None) -> FileBody:
    case, access, _ = await _seen(req, req.path["case_id"])
    if access not in (Access.REPORTER, Access.HANDLER):
        raise not_found()
    number = req.path["index"]
    stored = await cases.photo_of(case, number, req.now, event_id=event_id)
    name = f"case-{case.id}" + (f"-event-{event_id}" if event_id else "") + f"-{number}"
    return FileBody(stored.data, f"{name}.{media.EXTENSIONS[stored.content_type]}",
                    content_type=stored.content_type, inline=True)


@api.route("POST", "/cases/{case_id}/join", summary="Me too (我也遇到)", body=ActAsIn, response=CaseOut,
           errors=(409,))
async def join(req: ApiRequest) -> CaseOut:
    """A live case of my community that is not a private matter; each join raises its priority.
    Joining twice is one join. Body: {} (or the elder I act for)."""
    actor, person = await req.acting_for(req.body.for_resident_id)
    case = await cases.join_case(req.path["case_id"], person, req.now)
    await _record(actor, person, "join_case", case, req.now)
    return await _case_out(case, await _access_as(case, person, actor), person, actor, req.now)


@api.route("POST", "/cases/{case_id}/in-person", summary="Ask to raise my case at the next session",
           body=ActAsIn, response=CaseOut, errors=(409,))
async def in_person(req: ApiRequest) -> CaseOut:
    """The reporter's case goes on the agenda of the coming 6th/16th/26th session (not a private
    matter: a mediator visits instead). Asking again changes nothing."""
    actor, person = await req.acting_for(req.body.for_resident_id)
    case = await Case.get_or_none(id=req.path["case_id"])
    if case is None or case.reporter_id != person.id:  # type: ignore[attr-defined]
        raise not_found()
    if not (case.in_person and await cases.agenda_day(case.id)):
        await cases.ask_in_person(case.id, person.id, req.now)
        await _record(actor, person, "case_in_person", case, req.now)
        case = await Case.get(id=case.id)
    return await _case_out(case, Access.REPORTER, person, actor, req.now)


@api.route("POST", "/cases/{case_id}/info", summary="Answer a handler's question", body=InfoIn,
           response=CaseOut, errors=(409,))
async def give_info(req: ApiRequest) -> CaseOut:
    """By the reporter, while the case is live; passed on to the level in charge."""
    actor, person = await req.acting_for(req.body.for_resident_id)
    case = await cases.give_info(req.path["case_id"], person.id, req.body.text, req.now)
    await _record(actor, person, "case_info", case, req.now)
    return await _case_out(case, Access.REPORTER, person, actor, req.now)


@api.route("POST", "/cases/{case_id}/feedback", summary="Say whether a resolved case is fixed", body=FeedbackIn,
           response=CaseOut, errors=(409,))
async def post_feedback(req: ApiRequest) -> CaseOut:
    """By the reporter or a joiner, once per resolution. not_fixed (with a comment) sends it back to
    the level in charge; the reporter's rating closes it."""
    body: FeedbackIn = req.body
    if body.fixed == Fixed.NO:
        if not body.comment:
            raise invalid("body.comment", "say what is still wrong")
        if body.rating is not None:
            raise invalid("body.rating", "not with not_fixed")
    elif body.rating is None:
        raise invalid("body.rating", "required unless not_fixed")
    actor, person = await req.acting_for(body.for_resident_id)
    case = await cases.feedback(req.path["case_id"], person.id, body.fixed, req.now, rating=body.rating,
                                comment=body.comment)
    await _record(actor, person, "case_feedback", case, req.now)
    return await _case_out(case, await _access_as(case, person, actor), person, actor, req.now)


# ---------------------------------------------------------------------------- handlers


@api.route("POST", "/cases/{case_id}/actions", summary="A handler's step on a case", body=ActionIn,
           response=CaseOut, errors=(409,))
async def post_action(req: ApiRequest) -> CaseOut:
    """By whoever holds the level in charge (classify also by the grid worker and community staff);
    409 with the reason when the case is at another level or closed, 404 for anyone who does not
    handle it. Answers the case as the caller now sees it."""
    actor = await req.bound_actor()
    body: ActionIn = req.body
    needed = ACTION_FIELDS[body.action]
    for name in ("question", "note", "summary", "reason", "klass"):
        given = getattr(body, name) is not None
        if given != (name in needed):
            raise invalid(f"body.{name}", f"{'required' if not given else 'not used'} with {body.action}")
    if body.photos and body.action != "progress":
        raise invalid("body.photos", f"not used with {body.action}")
    case_id, now = req.path["case_id"], req.now
    if body.action == "accept":
        await cases.accept(case_id, actor.id, now)
    elif body.action == "ask":
        await cases.ask_info(case_id, actor.id, str(body.question), now)
    elif body.action == "progress":
        await cases.progress(case_id, actor.id, str(body.note), now, photos=[p.stored() for p in body.photos])
    elif body.action == "resolve":
        await cases.resolve(case_id, actor.id, str(body.summary), now)
    elif body.action == "escalate":
        await cases.pass_up(case_id, actor.id, str(body.reason), now)
    else:
        await cases.reclassify(case_id, actor.id, str(body.klass), str(body.reason), now)
    case = await Case.get(id=case_id)
    access = await cases.access_of(actor.id, case)
    if access is None:  # e.g. made a private matter: out of a grid worker's hands
        return await _public_out(case, actor, now)
    return await _case_out(case, access, actor, actor, now)


# ---------------------------------------------------------------------------- case settings


async def _setter_of(req: ApiRequest) -> tuple[Resident, Community]:
    """The caller, when they are staff of the community or of its sub-district; else 404."""
    actor = await req.bound_actor()
    community = await Community.get_or_none(id=req.path["community_id"])
    if community is None:
        raise not_found()
    place = Place(community.sub_district_id, community.id)  # type: ignore[attr-defined]
    if not any(r.role in SETTERS and place.within(r) for r in await active_roles(actor.id)):
        raise not_found()
    return actor, community


async def _settings_out(community: Community) -> CaseSettingsOut:
    rules = await cases.rules_of(community.id)
    row = await CaseSettings.get_or_none(community_id=community.id)
    by = await _person_ref(row.updated_by_id) if row else None  # type: ignore[attr-defined]
    return CaseSettingsOut(
        community_id=community.id, chains=Chains.model_validate(rules.chains), classes=rules.classes,
        property_days=rules.property_days,
        level_days={k: v for k, v in rules.level_days.items() if k != Level.PROPERTY},
        outcome_days=rules.outcome_days, working_days=rules.working_days,
        updated_at=_iso(row.updated_at) if row else None, updated_by=by.name if by else None,
        labels={"category": {c.code: c.label for c in CATEGORY_BY_CODE.values()}, "klass": dict(KLASS_LABELS),
                "level": dict(LEVEL_LABELS)})


@api.route("GET", "/communities/{community_id}/case-settings", summary="The community's case rules (staff)",
           response=CaseSettingsOut, errors=(409,))
async def get_settings(req: ApiRequest) -> CaseSettingsOut:
    """Chains per class, default class per category, deadlines; community staff of the community and
    sub-district staff above it."""
    _, community = await _setter_of(req)
    return await _settings_out(community)


@api.route("PUT", "/communities/{community_id}/case-settings", summary="Change the community's case rules (staff)",
           body=CaseSettingsIn, response=CaseSettingsOut, errors=(409,))
async def put_settings(req: ApiRequest) -> CaseSettingsOut:
    """All or nothing: a chain that repeats a level is refused (409, saying which) and nothing changes.
    A category or level left out of a map keeps the default. Cases already assigned keep their
    deadlines; new assignments follow the new rules."""
    actor, community = await _setter_of(req)
    body: CaseSettingsIn = req.body
    rules = CaseRules.from_json(body.model_dump())
    await cases.save_rules(community.id, rules, by_id=actor.id, now=req.now)
    return await _settings_out(community)

