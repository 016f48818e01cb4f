"""Personal-information safeguards (PIPL): access audit, deletion requests, retention.

- Every time staff open a resident's record or a sensitive field, ``audit`` writes who, when,
  what and why (the flow or case it served).
- A resident asks for deletion; staff carry it out with ``erase``. What law or open work still
  requires is kept: later flows register a hold (``register_hold``) that names what must stay.
- ``retention_sweep`` deletes or anonymises what has outlived its configured period.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from tortoise import fields
from tortoise.expressions import Q
from tortoise.models import Model
from tortoise.transactions import in_transaction

from models.conversation import PendingPrompt
from models.errors import NotFound, UserFacingError
from models.facts import ResidentFact
from models.outbox import OutboxMessage
from models.proxies import ProxyLink, ProxyStatus
from models.roles import ROLES, StaffRole, active_roles, resident_place

if TYPE_CHECKING:
    from models.residents import Resident

log = logging.getLogger(__name__)

PURPOSE_MAX = 100
ERASED_NAME = "已注销居民"


class AuditLog(Model):
    _no_comments = True  # see models/__init__.py

    id = fields.BigIntField(primary_key=True)
    actor: fields.ForeignKeyNullableRelation[Resident] = fields.ForeignKeyField(
        "linli.Resident", related_name="audit_made", null=True, on_delete=fields.SET_NULL
    )
    actor_label = fields.CharField(max_length=64, default="")  # e.g. cli:USER, system
    subject: fields.ForeignKeyNullableRelation[Resident] = fields.ForeignKeyField(
        "linli.Resident", related_name="audit_about", null=True, on_delete=fields.SET_NULL
    )
    action = fields.CharField(max_length=32)  # view | view_sensitive | export | verify | erase | grant...
    purpose = fields.CharField(max_length=PURPOSE_MAX, default="")
    detail: dict[str, Any] = fields.JSONField(default=dict)
    at = fields.DatetimeField(db_index=True)

    class Meta:
        table = "audit_log"
        indexes = (("subject_id", "at"),)


async def audit(
    *, actor_id: int | None, subject_id: int | None, action: str, purpose: str, now: datetime,
    actor_label: str = "", detail: dict[str, Any] | None = None,
) -> AuditLog:
    return await AuditLog.create(
        actor_id=actor_id, subject_id=subject_id, action=action, purpose=purpose[:PURPOSE_MAX],
        actor_label=actor_label[:64], detail=detail or {}, at=now,
    )


class RequestKind:
    DELETION = "deletion"


class RequestStatus:
    OPEN = "open"
    DONE = "done"
    WITHDRAWN = "withdrawn"


class DataRequest(Model):
    """A resident's request about their data (deletion), and how staff carried it out."""

    _no_comments = True  # see models/__init__.py

    id = fields.IntField(primary_key=True)
    resident: fields.ForeignKeyNullableRelation[Resident] = fields.ForeignKeyField(
        "linli.Resident", related_name="data_requests", null=True, on_delete=fields.SET_NULL
    )
    kind = fields.CharField(max_length=16, default=RequestKind.DELETION)
    status = fields.CharField(max_length=12, default=RequestStatus.OPEN)
    requested_by: fields.ForeignKeyNullableRelation[Resident] = fields.ForeignKeyField(
        "linli.Resident", related_name="data_requests_made", null=True, on_delete=fields.SET_NULL
    )
    requested_at = fields.DatetimeField()
    handled_by: fields.ForeignKeyNullableRelation[Resident] = fields.ForeignKeyField(
        "linli.Resident", related_name="data_requests_handled", null=True, on_delete=fields.SET_NULL
    )
    handled_at = fields.DatetimeField(null=True)
    outcome = fields.CharField(max_length=300, default="")  # what was removed, what kept and why

    class Meta:
        table = "data_request"


# ---------------------------------------------------------------------------- holds


Hold = Callable[[int], Awaitable[str | None]]
_HOLDS: list[Hold] = []


def register_hold(hold: Hold) -> Hold:
    """Register a check ``hold(resident_id) -> reason or None``: a reason keeps the resident's name
    and contact details past a deletion request (an open case, an unpaid wallet, a legal period)."""
    _HOLDS.append(hold)
    return hold


def unregister_hold(hold: Hold) -> None:
    """Remove a registered hold (a test's, or one a flow no longer needs); unknown ones are ignored."""
    if hold in _HOLDS:
        _HOLDS.remove(hold)


async def holds_on(resident_id: int) -> list[str]:
    reasons = [await hold(resident_id) for hold in _HOLDS]
    return [r for r in reasons if r]


# ---------------------------------------------------------------------------- deletion


async def request_deletion(*, resident_id: int, by_id: int, now: datetime) -> tuple[DataRequest, bool]:
    """Open a deletion request (one open request per resident); returns (request, created)."""
    async with in_transaction():
        existing = await DataRequest.filter(
            resident_id=resident_id, kind=RequestKind.DELETION, status=RequestStatus.OPEN
        ).first()
        if existing is not None:
            return existing, False
        created = await DataRequest.create(resident_id=resident_id, kind=RequestKind.DELETION,
                                           requested_by_id=by_id, requested_at=now)
        return created, True


@dataclass
class Erasure:
    removed: list[str]
    kept: list[str]

    def summary(self) -> str:
        text = "已删除：" + "、".join(self.removed)
        if self.kept:
            text += "；依法或因未办结事项保留：" + "；".join(self.kept)
        return text[:300]


async def erase(*, request_id: int, by_id: int | None, now: datetime, by_label: str = "") -> DataRequest:
    """Carry out a deletion request: remove what is not required, keep what a hold names.

    The caller checks that ``by`` may (a verifying role in scope). Twice changes nothing.
    """
    from models.residents import Consent, LinkRequest, Resident, WechatAccount

    async with in_transaction():
        request = await DataRequest.select_for_update().get_or_none(id=request_id)
        if request is None or request.resident_id is None:  # type: ignore[attr-defined]
            raise NotFound("没有找到这条删除申请。")
        if request.status != RequestStatus.OPEN:
            return request
        resident = await Resident.select_for_update().get(id=request.resident_id)  # type: ignore[attr-defined]
        kept = await holds_on(resident.id)
        removed = ["出生日期和身份状况", "健康备注", "亲情代理关系", "微信账号关联"]
        await ResidentFact.filter(resident_id=resident.id).delete()
        await ProxyLink.filter(elder_id=resident.id, status__in=[ProxyStatus.PENDING, ProxyStatus.ACTIVE]).update(
            status=ProxyStatus.ENDED, ended_at=now)
        await ProxyLink.filter(proxy_id=resident.id, status__in=[ProxyStatus.PENDING, ProxyStatus.ACTIVE]).update(
            status=ProxyStatus.ENDED, ended_at=now)
        await WechatAccount.filter(resident_id=resident.id).update(
            resident_id=None, unionid=None, verified_mobile=None, last_scene="")
        await LinkRequest.filter(resident_id=resident.id).delete()
        await Consent.filter(resident_id=resident.id).update(resident_id=None)
        resident.health_note = ""
        fields_changed = ["health_note", "erased_at"]
        if not kept:
            resident.name = ERASED_NAME
            resident.mobile = None
            resident.unit = ""
            resident.room = ""
            fields_changed += ["name", "mobile", "unit", "room"]
            removed.insert(0, "姓名、手机号和门牌号")
        resident.erased_at = now
        await resident.save(update_fields=fields_changed)
        request.status = RequestStatus.DONE
        request.handled_by_id = by_id
        request.handled_at = now
        request.outcome = Erasure(removed, [f"姓名和联系方式（{k}）" for k in kept]).summary()
        await request.save(update_fields=["status", "handled_by_id", "handled_at", "outcome"])
        await audit(actor_id=by_id, subject_id=resident.id, action="erase", purpose=f"data_request:{request.id}",
                    now=now, actor_label=by_label, detail={"kept": kept})
        return request


async def erasure_plan(resident_id: int) -> Erasure:
    """What ``erase`` would remove and keep now (the holds may change before it runs)."""
    kept = await holds_on(resident_id)
    removed = ["出生日期和身份状况", "健康备注", "亲情代理关系", "微信账号关联"]
    if not kept:
        removed.insert(0, "姓名、手机号和门牌号")
    return Erasure(removed, [f"姓名和联系方式（{k}）" for k in kept])


async def open_deletion_request(resident_id: int) -> DataRequest | None:
    return await DataRequest.filter(
        resident_id=resident_id, kind=RequestKind.DELETION, status=RequestStatus.OPEN
    ).first()


async def deletion_requests_for(actor_id: int) -> list[DataRequest]:
    """Open deletion requests the actor may carry out (a verifying role in scope), oldest first."""
    roles = [r for r in await active_roles(actor_id) if r.spec.verifies]
    if not roles:
        return []
    rows = await DataRequest.filter(
        kind=RequestKind.DELETION, status=RequestStatus.OPEN, resident_id__not_isnull=True
    ).order_by("id").prefetch_related("resident")
    out = []
    for row in rows:
        if row.resident is None:
            continue
        place = await resident_place(row.resident)
        if any(place.within(role) for role in roles):
            out.append(row)
    return out


async def verifiers_of(resident: Resident) -> list[int]:
    """Ids of the people whose role verifies (and carries out deletions) where the resident lives."""
    codes = [code for code, spec in ROLES.items() if spec.verifies]
    place = await resident_place(resident)
    grants = await StaffRole.filter(role__in=codes, revoked_at=None).order_by("id")
    return list(dict.fromkeys(g.resident_id for g in grants if place.within(g)))  # type: ignore[attr-defined]


async def withdraw_request(*, request_id: int, resident_id: int, now: datetime) -> DataRequest:
    request = await DataRequest.get_or_none(id=request_id, resident_id=resident_id)
    if request is None:
        raise NotFound("没有找到这条申请。")
    if request.status == RequestStatus.OPEN:
        request.status = RequestStatus.WITHDRAWN
        request.handled_at = now
        await request.save(update_fields=["status", "handled_at"])
    elif request.status == RequestStatus.DONE:
        raise UserFacingError("这条申请已经办理完成，不能撤回。")
    return request


# ---------------------------------------------------------------------------- retention


@dataclass(frozen=True)
class Retention:
    """How long each kind of data is kept, in days (config section [privacy])."""

    audit_days: int
    messages_days: int
    prompts_days: int
    link_requests_days: int
    unbound_accounts_days: int
    erased_residents_days: int
    case_photos_days: int = 365
    errand_documents_days: int = 30  # document photos of an errand closed or cancelled this long ago


async def retention_sweep(retention: Retention, now: datetime) -> dict[str, int]:
    """Delete or anonymise what has expired; returns counts by kind and writes one audit row."""
    from models.residents import LinkRequest, Resident, WechatAccount

    def before(days: int) -> datetime:
        return now - timedelta(days=days)

    counts: dict[str, int] = {}
    from models.errand_docs import sweep_documents

    # Files, not rows: outside the transaction, so a rollback cannot bring back rows of deleted
    # files (a run cut short is finished by the next one).
    documents = await sweep_documents(now, retention.errand_documents_days)
    async with in_transaction():
        counts["messages"] = await OutboxMessage.filter(
            created_at__lt=before(retention.messages_days), state__in=["sent", "failed"]
        ).delete()
        # closed, or expired without an answer (nobody can answer it any more)
        counts["prompts"] = await PendingPrompt.filter(
            Q(closed_at__not_isnull=True) | Q(expires_at__lt=now), created_at__lt=before(retention.prompts_days)
        ).delete()
        counts["link_requests"] = await LinkRequest.filter(
            created_at__lt=before(retention.link_requests_days)
        ).exclude(status="pending").delete()
        stale = before(retention.unbound_accounts_days)
        # never seen counts as not seen (in SQL, NOT (NULL >= x) would keep them for ever)
        counts["unbound_accounts"] = await WechatAccount.filter(
            Q(last_seen_at__isnull=True) | Q(last_seen_at__lt=stale), resident_id=None, created_at__lt=stale
        ).delete()
        # A resident erased while a hold kept their name: once the holds are gone and the period
        # has passed, the rest goes too.
        anonymised = 0
        for resident in await Resident.filter(erased_at__lt=before(retention.erased_residents_days)).exclude(
            name=ERASED_NAME
        ):
            if not await holds_on(resident.id):
                resident.name, resident.mobile, resident.unit, resident.room = ERASED_NAME, None, "", ""
                await resident.save(update_fields=["name", "mobile", "unit", "room"])
                anonymised += 1
        counts["erased_residents"] = anonymised
        counts["audit"] = await AuditLog.filter(at__lt=before(retention.audit_days)).delete()
        from models.cases import forget_photos  # models.cases registers a hold here: imported late

        counts["case_photos"] = await forget_photos(before(retention.case_photos_days), now)
        counts["errand_documents"] = documents
        await audit(actor_id=None, subject_id=None, action="retention", purpose="daily retention job",
                    now=now, actor_label="system", detail=counts)
    log.info("retention sweep: %s", counts)
    return counts
