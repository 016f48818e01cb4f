"""红色代办 through the mini-program API (/api/v1/errands...): the service package, a resident's
errands and their document photos, the stewards' queue and pre-review, the department's progress,
the red proxies' offers, custody log and delivery, the view log, the ledger and the figures.

The rules live in models/errand_core.py (the life of an errand), models/errand_docs.py (the
document photos) and models/errand_figures.py (服务台账 and figures); these views read input, call
them and shape the answer. An errand the caller may not see answers 404, exactly like a missing
one; a step the rules refuse answers 409 with the reason in Chinese. Document photos come back only
as bytes from GET /errands/{errand_id}/photos/{photo_id} (never cached, every opening logged), and
only to the assigned steward, the assigned red proxy and the department's staff.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import date, datetime, timedelta
from typing import Annotated, Any, Literal, get_args

from pydantic import BaseModel, Field, field_validator, model_validator

from bot.api import (
    DAY,
    HHMM,
    TEXT,
    XLSX,
    ApiRequest,
    ApiRouter,
    FileBody,
    Id,
    Query,
    Strict,
    idempotency_key,
    invalid,
    not_found,
    once,
    real_day,
)
from models import errand_core as core
from models import errand_docs, errand_figures
from models.cases import local_today
from models.errands import (
    PROGRESS_LABELS,
    STATE_LABELS,
    CustodyEntry,
    DocumentView,
    Errand,
    ErrandEvent,
    ErrandItem,
    ErrandPhoto,
    PhotoState,
    Via,
)
from models.errors import Forbidden
from models.facts import STATUSES
from models.love_figures import is_community_staff
from models.places import Building, Community, Department
from models.proxies import acts_for, record_action
from models.residents import Resident
from models.roles import Role, Scope, active_roles, resident_place
from models.wishes import mask_name

router = ApiRouter("errands")

Document = Annotated[str, Field(min_length=1, max_length=32, pattern=TEXT)]
StatusCode = Literal["dibao", "tekun", "guagua", "shidu", "veteran", "model_worker", "advanced_worker", "disabled",
                     "lives_alone", "party_member"]
assert set(get_args(StatusCode)) == set(STATUSES), "StatusCode must list models.facts.STATUSES"
ProgressCode = Literal["received", "processing", "more_needed", "approved", "rejected"]
assert set(get_args(ProgressCode)) == set(PROGRESS_LABELS), "ProgressCode must list models.errands.PROGRESS_LABELS"
STATE_DOC = ("collecting 待上传材料 | review 材料预审中 | reshoot 待重拍 | ready 待转办 | transferred 部门办理中 | "
             "result 待送达 | delivered 待确认 | closed 已办结 | cancelled 已取消")
PROGRESS_DOC = ("received 已受理 | processing 办理中 | more_needed 需补充材料 (note, and more_documents to add to the "
                "checklist) | approved 已办结（通过） | rejected 未通过 (note: why)")
PHOTO_LABELS = {
    PhotoState.SAVING: "保存中", PhotoState.PENDING: "待预审", PhotoState.ACCEPTED: "已通过",
    PhotoState.RESHOOT: "需重拍", PhotoState.LOST: "未能保存", PhotoState.REPLACED: "已替换",
}
MISSING = "missing"
PHOTO_DOC = ("missing 未上传 | saving 保存中 | pending 待预审 | accepted 已通过 | reshoot 需重拍 (reason) | "
             "lost 未能保存 (reason: send another)")
BUSY = "上一次提交还在处理中，请稍后在“我的代办”里查看。"


# ---------------------------------------------------------------------------- shapes: the service package


class ItemOut(BaseModel):
    id: int
    community_id: int
    name: str
    department_id: int | None
    department: str = Field(description="the department in charge (empty: none yet)")
    documents: list[str] = Field(description="the checklist, in the order to photograph")
    statuses: list[str] = Field(description="who may ask: residents holding any of these verified statuses (empty: "
                                            "anyone)")
    status_labels: list[str]
    min_age: int = Field(description="who may ask: at least this old (0: any age)")
    first_response_minutes: int = Field(description="a steward takes a request within this")
    expected_days: int = Field(description="the expected total time")
    active: bool
    position: int
    eligible: bool | None = Field(default=None, description="whether the resident listed for may ask (the resident "
                                                            "view only)")
    reason: str | None = Field(default=None, description="why they may not (the resident view only)")


class ItemList(BaseModel):
    community_id: int
    manage: bool = Field(description="the staff view: every item, inactive ones too, without eligibility")
    items: list[ItemOut]


class ItemsQuery(Query):
    community_id: Id | None = Field(default=None, description="community staff: that community's whole catalogue to "
                                                              "edit (default: the items the resident may ask for)")
    for_resident_id: Id | None = Field(default=None, description="a family proxy or community staff: whose "
                                                                 "eligibility to show (default: the caller)")


class ItemIn(Strict):
    name: str = Field(min_length=1, max_length=16, pattern=TEXT, description="unique in the community")
    department_id: Id | None = Field(default=None, description="a department of the community's sub-district")
    documents: list[Document] = Field(min_length=1, max_length=10, description="the checklist, in order")
    statuses: list[StatusCode] = Field(default=[], max_length=len(STATUSES),
                                       description="who may ask: holders of any of these verified statuses (empty: "
                                                   "anyone)")
    min_age: int = Field(default=0, ge=0, le=120)
    first_response_minutes: int = Field(ge=1, le=10080, description="minutes, at most a week")
    expected_days: int = Field(ge=1, le=365)
    active: bool = True
    position: int = Field(default=0, ge=0, le=10000, description="the order in the list")


class NewItemIn(ItemIn):
    community_id: Id | None = Field(default=None, description="default: the community the caller is staff of")


class SettingsOut(BaseModel):
    community_id: int
    community: str
    digest_times: list[str] = Field(description="HH:MM community time: stewards get their digest and residents a "
                                                "progress update")
    offer_minutes: int = Field(description="an errand offered to the grid's red proxies goes to the whole "
                                           "community's after this, then to staff")
    proxy_points: int = Field(description="love-bank points a red proxy earns for a confirmed errand")


class CommunityQuery(Query):
    community_id: Id | None = Field(default=None, description="default: the community the caller is staff of")


class SettingsIn(Strict):
    """Only what is given changes."""

    digest_times: list[Annotated[str, Field(pattern=HHMM)]] | None = Field(
        default=None, max_length=core.DIGEST_TIMES_MAX, description="HH:MM; an empty list: no digests")
    offer_minutes: int | None = Field(default=None, ge=core.OFFER_MINUTES_RANGE[0], le=core.OFFER_MINUTES_RANGE[1])
    proxy_points: int | None = Field(default=None, ge=0, le=core.PROXY_POINTS_MAX)


# ---------------------------------------------------------------------------- shapes: errands


class DocOut(BaseModel):
    document: str
    state: str = Field(description=PHOTO_DOC)
    state_label: str
    photo_id: int | None
    reason: str = Field(description="why a re-shoot (the steward's words), or why the photo could not be kept")


class PhotoOut(BaseModel):
    id: int
    document: str
    state: str = Field(description=PHOTO_DOC)
    state_label: str
    reason: str
    content_type: str
    size: int
    created_at: str
    reviewed_at: str | None
    url: str | None = Field(description="GET this path below /api/v1 for the photo (only for those who may open "
                                        "it: the assigned steward and red proxy, the department's staff)")


class CustodyOut(BaseModel):
    id: int
    document: str
    proxy: str = Field(description="the red proxy who took it, masked")
    taken_at: str
    returned_at: str | None
    note: str


class EventOut(BaseModel):
    kind: str
    label: str
    at: str
    by: str = Field(description="who, masked (empty: the service)")
    note: str


class ErrandSummary(BaseModel):
    id: int
    item_id: int
    item: str
    community_id: int
    resident_id: int
    resident: str = Field(description="whom it is for (masked on an open offer)")
    building: str
    state: str = Field(description=STATE_DOC)
    state_label: str
    progress: str = Field(description="the department's word while it has the errand: " + PROGRESS_DOC)
    progress_label: str
    department: str
    needs_proxy: bool = Field(description="a red proxy goes to the door")
    created_at: str


class QueueItem(ErrandSummary):
    overdue: bool = Field(description="past its first-response limit, or waiting too long")
    waiting: str = Field(description="what it waits for")


class ErrandList(BaseModel):
    items: list[ErrandSummary]


class QueueList(BaseModel):
    items: list[QueueItem]


class ProxyTasks(BaseModel):
    mine: list[ErrandSummary] = Field(description="open errands I am the red proxy of")
    offers: list[ErrandSummary] = Field(description="errands offered to me: the first to accept gets it")


class ErrandOut(ErrandSummary):
    view: str = Field(description="how the caller sees it: resident | requester (asked for them, or their family) | "
                                  "proxy (the red proxy) | steward (stewards and community staff) | staff (the "
                                  "sub-district's, reading) | department")
    note: str
    via: str = Field(description="chat | api | staff (asked by staff for the resident)")
    requested_by: str = Field(description="who asked, when not the resident (masked)")
    address: str | None = Field(description="where to go (the resident's side, the red proxy and stewards)")
    documents: list[str] = Field(description="the checklist, more documents the department asked for included")
    checklist: list[DocOut]
    photos: list[PhotoOut] = Field(description="the live photos, without their bytes")
    progress_note: str
    department_id: int | None
    steward: str = Field(description="the steward who took it (empty: nobody yet)")
    proxy_reason: str = Field(description="why a red proxy goes: lives_alone 独居 | disabled 残疾 | age80 80岁以上 | "
                                          "mobility 行动不便 | staff 社区标记")
    proxy_level: str = Field(description="who the proxy offer is open to: grid | community | staff | taken")
    proxy: str = Field(description="the red proxy, masked (in full for them and stewards)")
    proxy_id: int | None = Field(description="stewards' view only")
    first_response_minutes: int
    expected_days: int
    first_response_at: str | None
    complete_at: str | None
    transferred_at: str | None
    result_at: str | None
    delivered_at: str | None
    at_door: bool
    closed_at: str | None
    rating: int | None
    rating_note: str
    documents_deleted_at: str | None
    custody: list[CustodyOut]
    next_step: str = Field(description="what happens next, as the resident (or who speaks for them) reads it")
    waiting: str = Field(description="what it waits for, as a steward reads it")
    events: list[EventOut]


class ErrandIn(Strict):
    item_id: Id
    for_resident_id: Id | None = Field(default=None, description="a family proxy: the elder; community staff: a "
                                                                 "resident of their community (default: the caller)")
    note: str = Field(default="", max_length=200)


class MineQuery(Query):
    for_resident_id: Id | None = Field(default=None, description="a family proxy: the elder's errands")


class PhotoIn(Strict):
    """One photo of one document of the checklist: exactly one of media_id and pic_url."""

    document: Document = Field(description="which document of the checklist it shows")
    media_id: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_-]{1,128}$",
                                 description="a WeChat media id (uploaded through the official account API)")
    pic_url: str | None = Field(default=None, max_length=500, pattern=r"^https://\S+$",
                                description="the https URL of an image the mini-program uploaded")

    @model_validator(mode="after")
    def _one(self) -> PhotoIn:
        if (self.media_id is None) == (self.pic_url is None):
            raise ValueError("give either media_id or pic_url")
        return self


class ReviewIn(Strict):
    accept: bool
    reason: str = Field(default="", max_length=100, description="a re-shoot: why, 2 to 100 characters (the resident "
                                                                "reads it)")


class TransferIn(Strict):
    department_id: Id | None = Field(default=None, description="default: the item's department")


class ProgressIn(Strict):
    progress: ProgressCode = Field(description=PROGRESS_DOC)
    note: str = Field(default="", max_length=200, description="needed for more_needed and rejected")
    more_documents: list[Document] | None = Field(default=None, min_length=1, max_length=10,
                                                  description="more_needed only: documents to add to the checklist")


class Empty(Strict):
    pass


class AssignIn(Strict):
    proxy_id: Id = Field(description="a red proxy of the community")


class CustodyIn(Strict):
    document: Document = Field(description="the original taken from the home")
    note: str = Field(default="", max_length=100)


class ConfirmIn(Strict):
    rating: int = Field(ge=1, le=5, description="1 to 5")
    note: str = Field(default="", max_length=200)


class CancelIn(Strict):
    reason: str = Field(default="", max_length=100, description="needed when staff cancel")


class LinkOut(BaseModel):
    url: str = Field(description="open it in WeChat's browser (staff login needed)")
    path: str
    expires_at: str


class ViewOut(BaseModel):
    photo_id: int | None
    document: str
    viewer_id: int | None
    viewer: str = Field(description="who opened it (empty: the service, e.g. a deletion)")
    via: str = Field(description="link | api | deleted (the retention sweep)")
    at: str


class ViewList(BaseModel):
    errand_id: int
    items: list[ViewOut]


class PeriodQuery(Query):
    from_: str | None = Field(default=None, alias="from", pattern=DAY,
                              description="YYYY-MM-DD, the first day counted (default: the 1st of this month)")
    to: str | None = Field(default=None, pattern=DAY, description="YYYY-MM-DD, the last day counted; default today")
    format: Literal["json", "xlsx"] = Field(default="json", description="xlsx: the same as a spreadsheet")

    _days = field_validator("from_", "to")(real_day)


class LedgerQuery(PeriodQuery):
    community_id: Id | None = Field(default=None, description="default: the community the caller is staff of")


class FiguresQuery(PeriodQuery):
    community_id: Id | None = Field(default=None, description="one community")
    sub_district_id: Id | None = Field(default=None, description="every community of a sub-district (its staff); "
                                                                 "neither: the caller's widest")


class LedgerRowOut(BaseModel):
    household: str = Field(description="building, unit and room (empty: the resident's details were erased)")
    resident_id: int
    resident: str
    errand_id: int
    item: str
    asked_on: str
    state: str
    state_label: str
    result: str = Field(description="approved | rejected | empty")
    result_label: str
    result_on: str | None
    delivered_on: str | None
    closed_on: str | None
    proxy: str = Field(description="the red proxy, masked")
    at_door: bool
    rating: int | None


class LedgerOut(BaseModel):
    community_id: int
    name: str
    first_day: str
    last_day: str
    households: int
    rows: list[LedgerRowOut]


class ItemFiguresOut(BaseModel):
    item: str = Field(description="the item (合计: all of them)")
    limit_minutes: int | None = Field(description="its first-response limit")
    requests: int
    cancelled: int
    responded: int = Field(description="taken by a steward")
    due: int = Field(description="whose first response was due (taken, or left past the limit)")
    within_limit: int
    within_pct: int | None = Field(description="within_limit / due, %")
    response_median_minutes: int | None
    delivered: int
    total_median_hours: int | None = Field(description="asking to delivery, median")
    at_door: int
    at_door_pct: int | None = Field(description="at_door / delivered, %")
    rated: int
    rating_mean_x10: int | None = Field(description="the mean rating ×10 (46 = 4.6)")
    satisfied: int = Field(description="rated 4 or 5")
    satisfied_pct: int | None = Field(description="satisfied / rated, %")


class FiguresOut(BaseModel):
    scope: str = Field(description="community | sub_district")
    id: int
    name: str
    first_day: str
    last_day: str
    items: list[ItemFiguresOut] = Field(description="per item, the most asked first")
    total: ItemFiguresOut
    text: str = Field(description="the same in a few sentences")


# ---------------------------------------------------------------------------- helpers


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


async def _name(resident_id: int | None) -> str:
    if resident_id is None:
        return ""
    name = await Resident.filter(id=resident_id).first().values_list("name", flat=True)
    return str(name or "")


async def _masked(resident_id: int | None) -> str:
    name = await _name(resident_id)
    return mask_name(name) if name else ""


async def _department(department_id: int | None) -> str:
    if department_id is None:
        return ""
    name = await Department.filter(id=department_id).first().values_list("name", flat=True)
    return str(name or "")


async def _record(actor: Resident, person_id: int, action: str, req: ApiRequest, **detail: Any) -> None:
    """A family member acting for an elder leaves a trace the elder can read."""
    if actor.id != person_id and await acts_for(actor.id, person_id):
        await record_action(actor_id=actor.id, subject_id=person_id, action=action, channel="api", now=req.now,
                            detail=detail)


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


async def _item_out(item: ErrandItem, reason: str | None = None, *, resident_view: bool = False) -> ItemOut:
    return ItemOut(
        id=item.id, community_id=item.community_id, name=item.name, department_id=item.department_id,
        department=await _department(item.department_id), documents=list(item.documents),
        statuses=list(item.statuses), status_labels=[STATUSES.get(s, s) for s in item.statuses],
        min_age=item.min_age, first_response_minutes=item.first_response_minutes, expected_days=item.expected_days,
        active=item.active, position=item.position, eligible=(reason is None) if resident_view else None,
        reason=reason if resident_view else None)


async def _building(resident_id: int) -> str:
    building_id = await Resident.filter(id=resident_id).first().values_list("building_id", flat=True)
    if building_id is None:
        return ""
    name = await Building.filter(id=building_id).first().values_list("name", flat=True)
    return str(name or "")


async def _summary_fields(errand: Errand, *, masked: bool = False) -> dict[str, Any]:
    resident = await _name(errand.resident_id)
    return dict(
        id=errand.id, item_id=errand.item_id, item=errand.item_name, community_id=errand.community_id,
        resident_id=errand.resident_id, resident=mask_name(resident) if masked and resident else resident,
        building=await _building(errand.resident_id), state=errand.state,
        state_label=STATE_LABELS.get(errand.state, errand.state), progress=errand.progress,
        progress_label=PROGRESS_LABELS.get(errand.progress, ""), department=await _department(errand.department_id),
        needs_proxy=errand.needs_proxy, created_at=errand.created_at.isoformat())


async def _summary(errand: Errand, *, masked: bool = False) -> ErrandSummary:
    return ErrandSummary(**await _summary_fields(errand, masked=masked))


async def _view_of(actor_id: int, errand: Errand) -> str:
    """How someone who may see the errand sees it (models.errand_core.may_see lists who may)."""
    if actor_id == errand.resident_id:
        return "resident"
    if actor_id == errand.proxy_id:
        return "proxy"
    if await core.speaks_for(actor_id, errand):
        return "requester"
    if await core.is_steward(actor_id, errand.community_id):
        return "steward"
    if any(r.role == Role.SUBDISTRICT_STAFF for r in await active_roles(actor_id)):
        return "staff"
    return "department"


async def _errand_out(errand: Errand, actor: Resident) -> ErrandOut:
    view = await _view_of(actor.id, errand)
    photos = await core.photos_of(errand.id)
    openable = await errand_docs.may_open(actor.id, errand)
    resident = await Resident.get(id=errand.resident_id).prefetch_related("building")
    full_proxy = view in ("proxy", "steward", "staff")
    events = await core.events_of(errand.id)
    custody = await core.custody_of(errand.id)
    return ErrandOut(
        **await _summary_fields(errand), view=view, note=errand.note, via=errand.via,
        requested_by=await _masked(errand.requested_by_id) if errand.requested_by_id not in (None, errand.resident_id)
        else "",
        address=resident.address() if view != "department" else None, documents=list(errand.documents),
        checklist=[DocOut(document=d.document, state=d.state, state_label=PHOTO_LABELS.get(d.state, "未上传"),
                          photo_id=d.photo.id if d.photo else None, reason=d.reason or "")
                   for d in core.checklist(errand, photos)],
        photos=[PhotoOut(id=p.id, document=p.document, state=p.state, state_label=PHOTO_LABELS.get(p.state, p.state),
                         reason=p.reason, content_type=p.content_type, size=p.size, created_at=p.created_at.isoformat(),
                         reviewed_at=_iso(p.reviewed_at),
                         url=f"/errands/{errand.id}/photos/{p.id}" if openable and _stored(p) else None)
                for p in photos],
        progress_note=errand.progress_note, department_id=errand.department_id,
        steward=await _name(errand.steward_id), proxy_reason=errand.proxy_reason, proxy_level=errand.proxy_level,
        proxy=await (_name if full_proxy else _masked)(errand.proxy_id),
        proxy_id=errand.proxy_id if view in ("steward", "staff") else None,
        first_response_minutes=errand.first_response_minutes, expected_days=errand.expected_days,
        first_response_at=_iso(errand.first_response_at), complete_at=_iso(errand.complete_at),
        transferred_at=_iso(errand.transferred_at), result_at=_iso(errand.result_at),
        delivered_at=_iso(errand.delivered_at), at_door=errand.at_door, closed_at=_iso(errand.closed_at),
        rating=errand.rating, rating_note=errand.rating_note, documents_deleted_at=_iso(errand.documents_deleted_at),
        custody=[CustodyOut(id=c.id, document=c.document, proxy=await _masked(c.proxy_id),  # type: ignore[attr-defined]
                            taken_at=c.taken_at.isoformat(), returned_at=_iso(c.returned_at), note=c.note)
                 for c in custody],
        next_step=await core.next_step(errand, "您" if view == "resident" else resident.name),
        waiting=await core.waiting_for(errand), events=[await _event_out(e) for e in events])


def _stored(photo: ErrandPhoto) -> bool:
    """A photo whose file is in the document store (the bytes may be asked for)."""
    return bool(photo.file_name) and photo.deleted_at is None and photo.state in (
        PhotoState.PENDING, PhotoState.ACCEPTED, PhotoState.RESHOOT)


async def _event_out(event: ErrandEvent) -> EventOut:
    data = event.data if isinstance(event.data, dict) else {}
    note = data.get("note") or data.get("reason") or ""
    return EventOut(kind=event.kind, label=core.EVENT_LABELS.get(event.kind, event.kind), at=event.at.isoformat(),
                    by=await _masked(event.actor_id), note=str(note)[:200])


async def _seen(req: ApiRequest, errand_id: int | None = None) -> tuple[Resident, Errand]:
    """The caller and the path's errand, when they may see it; else 404."""
    actor = await req.bound_actor()
    return actor, await core.get_errand(errand_id if errand_id is not None else req.path["errand_id"], actor.id)


async def _answer(actor: Resident, errand_id: int) -> ErrandOut:
    """The errand after a step, read again, as the caller sees it now."""
    return await _errand_out(await Errand.get(id=errand_id), actor)


async def _idempotent(req: ApiRequest, actor: Resident, kind: str, fingerprint: str,
                      create: Callable[[], Awaitable[int]], exists: Callable[[int], Awaitable[bool]],
                      what: str) -> int:
    token = idempotency_key(req.http)
    if token is None:
        return await create()
    return await once(req.services.store, kind, actor.id, token, fingerprint, create, exists, what=what, busy=BUSY)


# ---------------------------------------------------------------------------- the service package


@router.route("GET", "/errands/items", summary="The service package (便民服务包): what I may ask for, or the "
              "catalogue to edit (community staff)", query=ItemsQuery, response=ItemList, errors=(404, 409))
async def list_items(req: ApiRequest) -> ItemList:
    """Without community_id: the active items of the resident's community (the caller's, or with
    for_resident_id an elder they act for, or a resident of the community for its staff), each with
    whether they may ask for it and, if not, why. With community_id (its community staff): every item,
    inactive ones too, to edit."""
    q: ItemsQuery = req.query
    if q.community_id is not None:
        if q.for_resident_id is not None:
            raise invalid("query.for_resident_id", "not with community_id")
        _, community = await _staff_community(req, q.community_id)
        items = await core.ensure_catalogue(community.id, req.now)
        return ItemList(community_id=community.id, manage=True, items=[await _item_out(i) for i in items])
    _, person = await req.acting_for(q.for_resident_id, may=_may_ask_for)
    rows = await core.items_for(person, req.now)
    return ItemList(community_id=person.community_id, manage=False,  # type: ignore[attr-defined]
                    items=[await _item_out(item, reason, resident_view=True) for item, reason in rows])


async def _may_ask_for(actor_id: int, person: Resident) -> bool:
    """Who may ask for a resident besides themselves (as models.errand_core.create_errand decides): a
    family proxy, a steward or community staff of their community, the grid worker of their grid."""
    if await acts_for(actor_id, person.id) or await core.is_steward(actor_id, person.community_id):  # type: ignore[attr-defined]
        return True
    place = await resident_place(person)
    return place.grid_id is not None and any(
        r.role == Role.GRID_WORKER and r.grid_id == place.grid_id for r in await active_roles(actor_id))  # type: ignore[attr-defined]


async def _save_item(req: ApiRequest, actor: Resident, community_id: int, body: ItemIn,
                     item_id: int | None) -> ErrandItem:
    try:
        return await core.save_item(
            community_id, now=req.now, actor_id=actor.id, item_id=item_id, name=body.name,
            department_id=body.department_id, documents=list(body.documents), statuses=list(body.statuses),
            min_age=body.min_age, first_response_minutes=body.first_response_minutes,
            expected_days=body.expected_days, active=body.active, position=body.position)
    except ValueError as exc:
        raise invalid(_field_of(exc), str(exc)) from None


BODY_FIELDS = frozenset({*NewItemIn.model_fields, *SettingsIn.model_fields})


def _field_of(exc: ValueError) -> str:
    """body.<field> when the domain's message starts with one ("name: ..."), else body."""
    name = str(exc).split(":", 1)[0]
    return f"body.{name}" if name in BODY_FIELDS else "body"


@router.route("POST", "/errands/items", summary="Add an item to the community's service package (community staff)",
              body=NewItemIn, response=ItemOut, status=201, errors=(404, 409))
async def post_item(req: ApiRequest) -> ItemOut:
    """Name (unique in the community), department of the sub-district, the documents to photograph,
    who may ask (statuses, age), the first-response limit and the expected time. A bad value answers
    422 naming the field (a name already used, a department elsewhere)."""
    body: NewItemIn = req.body
    actor, community = await _staff_community(req, body.community_id)
    await core.ensure_catalogue(community.id, req.now)
    fingerprint = body.model_dump_json()

    async def create() -> int:
        return (await _save_item(req, actor, community.id, body, None)).id

    item_id = await _idempotent(req, actor, "errand-item", fingerprint, create,
                                lambda i: ErrandItem.exists(id=i), "item")
    return await _item_out(await ErrandItem.get(id=item_id))


@router.route("PUT", "/errands/items/{item_id}", summary="Change an item of the service package (community staff)",
              body=ItemIn, response=ItemOut, errors=(409,))
async def put_item(req: ApiRequest) -> ItemOut:
    """The whole item as it should be; errands already asked keep the checklist and limits they were
    asked with. active=false takes it off the residents' list."""
    actor = await req.bound_actor()
    item = await ErrandItem.get_or_none(id=req.path["item_id"])
    if item is None or not await is_community_staff(actor.id, item.community_id):
        raise not_found()
    saved = await _save_item(req, actor, item.community_id, req.body, item.id)
    return await _item_out(saved)


async def _settings_out(community: Community) -> SettingsOut:
    settings = await core.settings_of(community.id)
    return SettingsOut(community_id=community.id, community=community.name, digest_times=list(settings.digest_times),
                       offer_minutes=settings.offer_minutes, proxy_points=settings.proxy_points)


@router.route("GET", "/errands/settings", summary="The community's red-proxy and steward settings (community staff)",
              query=CommunityQuery, response=SettingsOut, errors=(404, 409))
async def get_settings(req: ApiRequest) -> SettingsOut:
    """Digest times, the red-proxy offer step and the points a proxy earns (the defaults until changed)."""
    _, community = await _staff_community(req, req.query.community_id)
    return await _settings_out(community)


@router.route("PATCH", "/errands/settings", summary="Change the community's red-proxy and steward settings "
              "(community staff)", query=CommunityQuery, body=SettingsIn, response=SettingsOut, errors=(404, 409))
async def patch_settings(req: ApiRequest) -> SettingsOut:
    """Only what is given changes; points already credited stay."""
    actor, community = await _staff_community(req, req.query.community_id)
    body: SettingsIn = req.body
    try:
        await core.save_settings(community.id, now=req.now, actor_id=actor.id, digest_times=body.digest_times,
                                 offer_minutes=body.offer_minutes, proxy_points=body.proxy_points)
    except ValueError as exc:
        raise invalid(_field_of(exc), str(exc)) from None
    return await _settings_out(community)


# ---------------------------------------------------------------------------- a resident's errands


@router.route("POST", "/errands", summary="Ask for an item of the service package (代办)", body=ErrandIn,
              response=ErrandOut, status=201, errors=(404, 409))
async def post_errand(req: ApiRequest) -> ErrandOut:
    """For myself, an elder I act for, or (community staff) a resident of my community. The answer
    has the checklist to photograph (POST /errands/{errand_id}/photos). Asking again while one is
    open answers the open one. An Idempotency-Key header makes a retry within 24 hours answer the
    first errand even if it was cancelled since (422 if the key was used for another). 409 when the
    resident may not ask for it (the message says why)."""
    body: ErrandIn = req.body
    actor, person = await req.acting_for(body.for_resident_id, may=_may_ask_for)
    item = await ErrandItem.get_or_none(id=body.item_id)
    if item is None or item.community_id != person.community_id:  # type: ignore[attr-defined]
        raise not_found("没有找到这个代办事项。")
    token = idempotency_key(req.http)

    async def create() -> int:
        # a family proxy's request is recorded for the elder by create_errand itself
        errand, _ = await core.create_errand(item_id=item.id, resident_id=person.id, requested_by_id=actor.id,
                                             via=Via.API, now=req.now, note=body.note,
                                             key=f"api:{token}" if token is not None else None)
        return errand.id

    errand_id = await _idempotent(req, actor, "errand", f"{item.id}:{person.id}:{body.note}", create,
                                  lambda i: Errand.exists(id=i), "errand")
    return await _answer(actor, errand_id)


@router.route("GET", "/errands", summary="My errands (我的代办)", query=MineQuery, response=ErrandList,
              errors=(404, 409))
async def list_errands(req: ApiRequest) -> ErrandList:
    """Those asked by or for me (or, with for_resident_id, an elder I act for), newest first."""
    q: MineQuery = req.query
    _, person = await req.acting_for(q.for_resident_id)
    return ErrandList(items=[await _summary(e) for e in await core.errands_of(person.id)])


@router.route("GET", "/errands/queue", summary="The steward's queue: my community's open errands, oldest first",
              response=QueueList, errors=(404, 409))
async def get_queue(req: ApiRequest) -> QueueList:
    """Those nobody has taken and mine, oldest first, overdue ones marked, each with what it waits for.
    Stewards and community staff; 404 for anyone else."""
    actor = await req.bound_actor()
    if not any(r.role in core.STEWARD_ROLES for r in await active_roles(actor.id)):
        raise not_found()
    rows = await core.steward_queue(actor.id, req.now)
    return QueueList(items=[QueueItem(**await _summary_fields(r.errand), overdue=r.overdue, waiting=r.waiting)
                            for r in rows])


@router.route("GET", "/errands/department-queue", summary="The department's errands (部门办件)", response=QueueList,
              errors=(404, 409))
async def get_department_queue(req: ApiRequest) -> QueueList:
    """Errands transferred to my department and not finished there, oldest first. Department staff;
    404 for anyone else."""
    actor = await req.bound_actor()
    if not any(r.role == Role.DEPARTMENT for r in await active_roles(actor.id)):
        raise not_found()
    rows = await core.department_queue(actor.id, req.now)
    return QueueList(items=[QueueItem(**await _summary_fields(r.errand), overdue=r.overdue, waiting=r.waiting)
                            for r in rows])


@router.route("GET", "/errands/proxy-tasks", summary="The red proxy's tasks (代办任务): mine and open offers",
              response=ProxyTasks, errors=(404, 409))
async def get_proxy_tasks(req: ApiRequest) -> ProxyTasks:
    """My open errands, and those offered to me (the resident's name masked until I accept). Red
    proxies; 404 for anyone else."""
    actor = await req.bound_actor()
    if not any(r.role == Role.RED_PROXY for r in await active_roles(actor.id)):
        raise not_found()
    mine, offers = await core.proxy_tasks(actor.id, req.now)
    return ProxyTasks(mine=[await _summary(e) for e in mine], offers=[await _summary(e, masked=True) for e in offers])


@router.route("GET", "/errands/ledger", summary="服务台账: every errand per household (community staff)",
              query=LedgerQuery, response=LedgerOut, produces=XLSX, errors=(404, 409))
async def get_ledger(req: ApiRequest) -> LedgerOut | FileBody:
    """The errands asked in the days from–to (default: this month up to today, at most a year) for
    the community's residents, per household (building, unit, room): item, dates, state, result,
    red proxy (masked), whether delivered at the door, rating. Community staff of the community,
    sub-district staff of its sub-district. format=xlsx: a spreadsheet."""
    q: LedgerQuery = req.query
    actor = await req.bound_actor()
    community_id = q.community_id
    if community_id is None:
        community_id = next((r.scope_id for r in await active_roles(actor.id)
                             if r.role == Role.COMMUNITY_STAFF and r.scope_id is not None), None)
        if community_id is None:
            raise not_found()
    first, last = _days(q, req.now)
    try:
        led = await errand_figures.ledger(actor.id, community_id, first, last)
    except Forbidden:
        raise not_found() from None
    if q.format == "xlsx":
        return FileBody(errand_figures.ledger_xlsx(led), f"errand-ledger-{community_id}-{first:%Y%m%d}-"
                                                         f"{last:%Y%m%d}.xlsx")
    return LedgerOut(community_id=led.unit.id, name=led.unit.name, first_day=first.isoformat(),
                     last_day=last.isoformat(), households=led.households, rows=[LedgerRowOut(
                         household=r.household, resident_id=r.resident_id, resident=r.resident,
                         errand_id=r.errand_id, item=r.item, asked_on=r.asked_on.isoformat(), state=r.state,
                         state_label=r.state_label, result=r.result, result_label=r.result_label,
                         result_on=_day(r.result_on), delivered_on=_day(r.delivered_on),
                         closed_on=_day(r.closed_on), proxy=r.proxy, at_door=r.at_door, rating=r.rating)
                         for r in led.rows])


def _day(value: date | None) -> str | None:
    return value.isoformat() if value is not None else None


def _days(q: PeriodQuery, now: datetime) -> tuple[date, date]:
    today = local_today(now)
    last = date.fromisoformat(q.to) if q.to else today
    first = date.fromisoformat(q.from_) if q.from_ else min(today.replace(day=1), last)
    if last < first:
        raise invalid("query.to", "must not be before from")
    if (last - first).days >= errand_figures.PERIOD_DAYS_MAX:
        raise invalid("query.from", f"at most {errand_figures.PERIOD_DAYS_MAX} days")
    return first, last


def _figures_out(f: errand_figures.ItemFigures) -> ItemFiguresOut:
    return ItemFiguresOut(
        item=f.item, limit_minutes=f.limit_minutes, requests=f.requests, cancelled=f.cancelled,
        responded=f.responded, due=f.due, within_limit=f.within_limit, within_pct=f.within_pct,
        response_median_minutes=f.response_median_minutes, delivered=f.delivered,
        total_median_hours=f.total_median_hours, at_door=f.at_door, at_door_pct=f.at_door_pct, rated=f.rated,
        rating_mean_x10=f.rating_mean_x10, satisfied=f.satisfied, satisfied_pct=f.satisfied_pct)


@router.route("GET", "/errands/figures", summary="Errand figures per item and period (community or sub-district "
              "staff)", query=FiguresQuery, response=FiguresOut, produces=XLSX, errors=(404, 409))
async def get_figures(req: ApiRequest) -> FiguresOut | FileBody:
    """For the errands asked in the days from–to (default: this month up to today), per item and in
    all: requests, first responses within the limit and their median minutes, the median total time in
    hours, the doorstep share and satisfaction. Community staff see their community, sub-district
    staff their sub-district (or one of its communities). format=xlsx: a spreadsheet."""
    q: FiguresQuery = req.query
    actor = await req.bound_actor()
    if q.community_id is not None and q.sub_district_id is not None:
        raise invalid("query.sub_district_id", "give community_id or sub_district_id, not both")
    first, last = _days(q, req.now)
    try:
        community_id, sub_district_id = q.community_id, q.sub_district_id
        if community_id is None and sub_district_id is None:
            unit = await errand_figures.default_unit(actor.id)
            if unit.scope == Scope.COMMUNITY:
                community_id = unit.id
            else:
                sub_district_id = unit.id
        figs = await errand_figures.figures(actor.id, community_id=community_id, sub_district_id=sub_district_id,
                                            start=first, end=last, now=req.now)
    except Forbidden:
        raise not_found() from None
    if q.format == "xlsx":
        return FileBody(errand_figures.figures_xlsx(figs), f"errand-figures-{figs.unit.scope}-{figs.unit.id}-"
                                                           f"{first:%Y%m%d}-{last:%Y%m%d}.xlsx")
    return FiguresOut(scope=figs.unit.scope, id=figs.unit.id, name=figs.unit.name, first_day=first.isoformat(),
                      last_day=last.isoformat(), items=[_figures_out(f) for f in figs.items],
                      total=_figures_out(figs.total), text=errand_figures.figures_text(figs))


@router.route("GET", "/errands/{errand_id}", summary="An errand as I may see it", response=ErrandOut, errors=(409,))
async def get_errand(req: ApiRequest) -> ErrandOut:
    """Its checklist, its photos (without their bytes), the department's progress, the steward, the
    red proxy (masked), the custody log and every step. For the resident, who asked for them, their
    family proxies, the community's stewards and staff, the red proxy, and the department's staff
    once transferred; 404 for anyone else."""
    actor, errand = await _seen(req)
    return await _errand_out(errand, actor)


# ---------------------------------------------------------------------------- photos


@router.route("POST", "/errands/{errand_id}/photos", summary="Send the photo of a document of the checklist",
              body=PhotoIn, response=ErrandOut, status=201, errors=(409,))
async def post_photo(req: ApiRequest) -> ErrandOut:
    """By the resident, who asked for them, a family proxy or the red proxy, while documents are
    being collected or reviewed. It is fetched from WeChat into the service's own storage at once
    (state pending: waiting for the steward; lost: not an image or gone — send another; saving:
    WeChat was busy, tried again shortly) and replaces an earlier photo of that document. An
    Idempotency-Key header makes a retry answer without a second photo."""
    actor, errand = await _seen(req)
    body: PhotoIn = req.body

    async def create() -> int:
        photo = await core.add_photo(errand.id, body.document, by_id=actor.id, now=req.now,
                                     media_id=body.media_id or "", pic_url=body.pic_url or "")
        await _record(actor, errand.resident_id, "errand_photo", req, errand_id=errand.id, photo_id=photo.id)
        return photo.id

    await _idempotent(req, actor, "errand-photo", f"{errand.id}:{body.document}:{body.media_id}:{body.pic_url}",
                      create, lambda i: ErrandPhoto.exists(id=i), "photo")
    return await _answer(actor, errand.id)


@router.route("GET", "/errands/{errand_id}/photos/{photo_id}", summary="A document photo (the assigned steward and "
              "red proxy, the department's staff)", produces="image/*", errors=(409,))
async def get_photo(req: ApiRequest) -> FileBody:
    """The photo as JPEG, PNG, GIF or WebP, from the service's own storage, never cached; every
    opening is logged (GET /errands/{errand_id}/views). 404 for anyone else, and once the documents
    were deleted after the errand closed."""
    actor = await req.bound_actor()
    photo = await ErrandPhoto.get_or_none(id=req.path["photo_id"])
    if photo is None or photo.errand_id != req.path["errand_id"]:
        raise not_found()
    photo, data = await errand_docs.open_photo(actor.id, photo.id, via="api", now=req.now)
    extension = photo.file_name.rsplit(".", 1)[-1] if "." in photo.file_name else "bin"
    return FileBody(data, f"errand-{photo.errand_id}-photo-{photo.id}.{extension}", content_type=photo.content_type,
                    inline=True, no_store=True)


@router.route("POST", "/errands/photos/{photo_id}/review", summary="Pre-review a photo: accept it or ask for a "
              "re-shoot (steward)", body=ReviewIn, response=ErrandOut, errors=(409,))
async def post_review(req: ApiRequest) -> ErrandOut:
    """By the errand's steward (taking it, when nobody has). A re-shoot needs a reason of 2 to 100
    characters, which the resident reads with a prompt to photograph it again; when every photo is
    accepted the errand is ready to transfer."""
    actor = await req.bound_actor()
    photo = await ErrandPhoto.get_or_none(id=req.path["photo_id"])
    if photo is None:
        raise not_found()
    await core.get_errand(photo.errand_id, actor.id)
    body: ReviewIn = req.body
    await core.review_photo(photo.id, actor.id, accept=body.accept, reason=body.reason, now=req.now)
    return await _answer(actor, photo.errand_id)


# ---------------------------------------------------------------------------- steps


async def _step(req: ApiRequest, step: Callable[[Resident, Errand], Awaitable[Any]], *, seen: bool = True) -> ErrandOut:
    """Run one step on the path's errand: for those who may see it (``seen``; else the step checks
    for itself, e.g. accepting an offer), then answer the errand as the caller sees it now."""
    actor = await req.bound_actor()
    errand_id = req.path["errand_id"]
    if seen:
        errand = await core.get_errand(errand_id, actor.id)
    else:
        found = await Errand.get_or_none(id=errand_id)
        if found is None:
            raise not_found()
        errand = found
    await step(actor, errand)
    return await _answer(actor, errand.id)


@router.route("POST", "/errands/{errand_id}/take", summary="Take an errand (first response, steward)",
              response=ErrandOut, errors=(409,))
async def post_take(req: ApiRequest) -> ErrandOut:
    """A steward (or community staff) of the errand's community takes it: it counts as the first
    response and leaves the others' queue. Taking it again is once; taken by another: 409."""
    return await _step(req, lambda actor, e: core.take(e.id, actor.id, req.now))


@router.route("POST", "/errands/{errand_id}/transfer", summary="Transfer a ready errand to the department "
              "(steward)", body=TransferIn, response=ErrandOut, errors=(409,))
async def post_transfer(req: ApiRequest) -> ErrandOut:
    """Once every photo is accepted: to the item's department (or the one named, of the sub-district),
    whose staff are told; the resident is told."""
    body: TransferIn = req.body
    return await _step(req, lambda actor, e: core.transfer(e.id, actor.id, req.now, department_id=body.department_id))


@router.route("POST", "/errands/{errand_id}/progress", summary="Record the department's progress (steward or the "
              "department's staff)", body=ProgressIn, response=ErrandOut, errors=(409,))
async def post_progress(req: ApiRequest) -> ErrandOut:
    """received, processing, more_needed (with a note, and more_documents: back to collecting them),
    approved or rejected (with the reason): the resident is told; a result goes to be delivered."""
    body: ProgressIn = req.body
    if body.more_documents is not None and body.progress != "more_needed":
        raise invalid("body.more_documents", "only with more_needed")
    return await _step(req, lambda actor, e: core.set_progress(
        e.id, actor.id, body.progress, req.now, note=body.note,
        more_documents=list(body.more_documents) if body.more_documents is not None else None))


@router.route("POST", "/errands/{errand_id}/require-proxy", summary="Say a red proxy is needed (steward, community "
              "staff)", body=Empty, response=ErrandOut, errors=(409,))
async def post_require_proxy(req: ApiRequest) -> ErrandOut:
    """Marks the errand (社区标记) and offers it to the red proxies of the resident's grid at once."""
    return await _step(req, lambda actor, e: core.require_proxy(e.id, actor.id, req.now))


@router.route("POST", "/errands/{errand_id}/offer/accept", summary="Accept an errand offered to me (red proxy)",
              body=Empty, response=ErrandOut, errors=(409,))
async def post_accept_offer(req: ApiRequest) -> ErrandOut:
    """The first red proxy to accept gets it (the others' offers are withdrawn; later: 409). The
    answer has the resident's name and address."""
    return await _step(req, lambda actor, e: core.accept_offer(e.id, actor.id, req.now), seen=False)


@router.route("POST", "/errands/{errand_id}/proxy", summary="Assign a red proxy (steward, community staff)",
              body=AssignIn, response=ErrandOut, errors=(409,))
async def post_assign_proxy(req: ApiRequest) -> ErrandOut:
    """Any red proxy of the community, e.g. when nobody accepted the offer."""
    body: AssignIn = req.body
    return await _step(req, lambda actor, e: core.assign_proxy(e.id, body.proxy_id, actor.id, req.now))


@router.route("POST", "/errands/{errand_id}/custody", summary="Log an original document taken from the home (red "
              "proxy)", body=CustodyIn, response=ErrandOut, status=201, errors=(409,))
async def post_custody(req: ApiRequest) -> ErrandOut:
    """By the errand's red proxy: which original, when (now). It must be returned (POST
    /errands/custody/{entry_id}/return) before the result is delivered. An Idempotency-Key header
    makes a retry answer without a second entry."""
    body: CustodyIn = req.body

    async def step(actor: Resident, errand: Errand) -> None:
        async def create() -> int:
            return (await core.take_original(errand.id, actor.id, body.document, req.now, note=body.note)).id

        await _idempotent(req, actor, "errand-custody", f"{errand.id}:{body.document}:{body.note}", create,
                          lambda i: CustodyEntry.exists(id=i), "custody entry")

    return await _step(req, step)


@router.route("POST", "/errands/custody/{entry_id}/return", summary="Log an original document returned (red proxy)",
              body=Empty, response=ErrandOut, errors=(409,))
async def post_custody_return(req: ApiRequest) -> ErrandOut:
    """By the red proxy who took it; returning it again is once."""
    actor = await req.bound_actor()
    entry = await CustodyEntry.get_or_none(id=req.path["entry_id"])
    if entry is None:
        raise not_found()
    await core.get_errand(entry.errand_id, actor.id)
    await core.return_original(entry.id, actor.id, req.now)
    return await _answer(actor, entry.errand_id)


@router.route("POST", "/errands/{errand_id}/deliver", summary="Say the result reached the resident", body=Empty,
              response=ErrandOut, errors=(409,))
async def post_deliver(req: ApiRequest) -> ErrandOut:
    """By the red proxy at the door (refused while an original is still out), or without a proxy by
    the steward or the department's staff. The resident is asked to confirm and rate."""
    return await _step(req, lambda actor, e: core.deliver(e.id, actor.id, req.now))


@router.route("POST", "/errands/{errand_id}/confirm", summary="Confirm the result and rate it (1–5)", body=ConfirmIn,
              response=ErrandOut, errors=(409,))
async def post_confirm(req: ApiRequest) -> ErrandOut:
    """By the resident, who asked for them, or a family proxy, once delivered: the errand closes and
    the red proxy's love-bank points are credited (once)."""
    body: ConfirmIn = req.body

    async def step(actor: Resident, errand: Errand) -> None:
        await core.confirm(errand.id, actor.id, body.rating, req.now, note=body.note)
        await _record(actor, errand.resident_id, "errand_confirm", req, errand_id=errand.id, rating=body.rating)

    return await _step(req, step)


@router.route("POST", "/errands/{errand_id}/cancel", summary="Withdraw an errand", body=CancelIn, response=ErrandOut,
              errors=(409,))
async def post_cancel(req: ApiRequest) -> ErrandOut:
    """The resident (or who asked, or a family proxy) before it is transferred; stewards and staff at
    any time before it is delivered, with a reason. Whoever was involved is told."""
    body: CancelIn = req.body

    async def step(actor: Resident, errand: Errand) -> None:
        await core.cancel(errand.id, actor.id, req.now, reason=body.reason)
        await _record(actor, errand.resident_id, "errand_cancel", req, errand_id=errand.id)

    return await _step(req, step)


# ---------------------------------------------------------------------------- documents: links and the view log


@router.route("POST", "/errands/{errand_id}/link", summary="A short-lived signed link to the errand's document page",
              body=Empty, response=LinkOut, status=201, errors=(409,))
async def post_link(req: ApiRequest) -> LinkOut:
    """For those who may open the documents (the assigned steward and red proxy, the department's
    staff): the page asks for a staff login and logs every photo shown. 404 for anyone else."""
    actor = await req.bound_actor()
    errand_id = req.path["errand_id"]
    path = await errand_docs.make_link(actor.id, errand_id, req.now)
    minutes = errand_docs.settings().link_minutes
    return LinkOut(url=errand_docs.link_url(req.services.config.server.public_url, path), path=path,
                   expires_at=(req.now + timedelta(minutes=minutes)).isoformat())


@router.route("GET", "/errands/{errand_id}/views", summary="Who opened the errand's documents, and their deletion "
              "(community staff)", response=ViewList, errors=(409,))
async def get_views(req: ApiRequest) -> ViewList:
    """Every opening of a document photo (through the link or the API) and the deletion after the
    errand closed, oldest first. Community staff of the errand's community; 404 for anyone else."""
    actor = await req.bound_actor()
    errand = await Errand.get_or_none(id=req.path["errand_id"])
    if errand is None or not await is_community_staff(actor.id, errand.community_id):
        raise not_found()
    views: list[DocumentView] = await errand_docs.views_of(errand.id)
    documents = dict(await ErrandPhoto.filter(errand_id=errand.id).values_list("id", "document"))
    return ViewList(errand_id=errand.id, items=[ViewOut(
        photo_id=v.photo_id, document=str(documents.get(v.photo_id, "")), viewer_id=v.viewer_id,
        viewer=await _name(v.viewer_id), via=v.via, at=v.at.isoformat()) for v in views])

