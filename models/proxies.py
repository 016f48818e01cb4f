"""亲情代理: a family member acting for an elder, and the record of who acted for whom.

A link starts pending. The elder confirms it (a pending prompt in chat) or community staff
confirm it in person; then the proxy may act in every flow for the elder. Either side (or staff)
can end it. Every action taken through a link is an ``Action`` row naming actor and subject.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from tortoise import fields
from tortoise.expressions import Q
from tortoise.models import Model
from tortoise.transactions import in_transaction

from models.errors import NotFound, UserFacingError
from models.roles import Role, StaffRole, may_verify, resident_place, staff_access

if TYPE_CHECKING:
    from models.residents import Resident

MAX_ELDERS = 5  # one proxy acting for more elders than this is refused
RELATION_MAX = 10


class ProxyStatus:
    PENDING = "pending"
    ACTIVE = "active"
    REJECTED = "rejected"
    ENDED = "ended"


class ProxyLink(Model):
    _no_comments = True  # see models/__init__.py

    id = fields.IntField(primary_key=True)
    proxy: fields.ForeignKeyRelation[Resident] = fields.ForeignKeyField(
        "linli.Resident", related_name="proxy_for", on_delete=fields.CASCADE
    )
    elder: fields.ForeignKeyRelation[Resident] = fields.ForeignKeyField(
        "linli.Resident", related_name="proxies", on_delete=fields.CASCADE
    )
    relation = fields.CharField(max_length=RELATION_MAX, default="")  # 子女, 配偶, 亲属...
    status = fields.CharField(max_length=12, default=ProxyStatus.PENDING)
    requested_at = fields.DatetimeField()
    decided_at = fields.DatetimeField(null=True)
    decided_by: fields.ForeignKeyNullableRelation[Resident] = fields.ForeignKeyField(
        "linli.Resident", related_name="proxy_decisions", null=True, on_delete=fields.SET_NULL
    )
    confirmed_how = fields.CharField(max_length=8, default="")  # elder | staff
    ended_at = fields.DatetimeField(null=True)
    ended_by: fields.ForeignKeyNullableRelation[Resident] = fields.ForeignKeyField(
        "linli.Resident", related_name="proxy_endings", null=True, on_delete=fields.SET_NULL
    )

    class Meta:
        table = "proxy_link"
        indexes = (("proxy_id", "status"), ("elder_id", "status"))


class Action(Model):
    """Who did what for whom: every write a flow makes is recorded here (actor = subject when a
    person acts for themselves)."""

    _no_comments = True  # see models/__init__.py

    id = fields.BigIntField(primary_key=True)
    actor: fields.ForeignKeyNullableRelation[Resident] = fields.ForeignKeyField(
        "linli.Resident", related_name="actions_taken", null=True, on_delete=fields.SET_NULL
    )
    subject: fields.ForeignKeyNullableRelation[Resident] = fields.ForeignKeyField(
        "linli.Resident", related_name="actions_about", null=True, on_delete=fields.SET_NULL
    )
    proxy_link: fields.ForeignKeyNullableRelation[ProxyLink] = fields.ForeignKeyField(
        "linli.ProxyLink", related_name="actions", null=True, on_delete=fields.SET_NULL
    )
    action = fields.CharField(max_length=48)
    channel = fields.CharField(max_length=8)  # oa | mp | chat | api | cli
    detail: dict[str, Any] = fields.JSONField(default=dict)
    at = fields.DatetimeField()

    class Meta:
        table = "action"
        indexes = (("subject_id", "at"), ("actor_id", "at"))


async def record_action(
    *, actor_id: int | None, subject_id: int | None, action: str, channel: str, now: datetime,
    detail: dict[str, Any] | None = None,
) -> Action:
    """Record an action; when the actor acts for someone else, the link that allowed it is named."""
    link_id = None
    if actor_id is not None and subject_id is not None and actor_id != subject_id:
        link_id = await ProxyLink.filter(
            proxy_id=actor_id, elder_id=subject_id, status=ProxyStatus.ACTIVE
        ).first().values_list("id", flat=True)
    return await Action.create(actor_id=actor_id, subject_id=subject_id, proxy_link_id=link_id, action=action,
                               channel=channel, detail=detail or {}, at=now)


async def elders_of(proxy_id: int) -> list[Resident]:
    """The elders this person may act for (active links), in link order."""
    links = await ProxyLink.filter(proxy_id=proxy_id, status=ProxyStatus.ACTIVE).order_by("id").prefetch_related(
        "elder")
    return [link.elder for link in links]


async def acts_for(proxy_id: int, elder_id: int) -> bool:
    return await ProxyLink.filter(proxy_id=proxy_id, elder_id=elder_id, status=ProxyStatus.ACTIVE).exists()


async def request_link(*, proxy_id: int, elder_id: int, relation: str, now: datetime) -> tuple[ProxyLink, bool]:
    """Ask to act for an elder; returns (link, created). Asking again returns the open link."""
    if proxy_id == elder_id:
        raise UserFacingError("不能为自己设置亲情代理。")
    async with in_transaction():
        open_link = await ProxyLink.select_for_update().filter(
            proxy_id=proxy_id, elder_id=elder_id, status__in=[ProxyStatus.PENDING, ProxyStatus.ACTIVE]
        ).first()
        if open_link is not None:
            return open_link, False
        count = await ProxyLink.filter(proxy_id=proxy_id, status__in=[ProxyStatus.PENDING, ProxyStatus.ACTIVE]).count()
        if count >= MAX_ELDERS:
            raise UserFacingError(f"最多可以为{MAX_ELDERS}位家人代办，请先解除不再需要的关联。")
        link = await ProxyLink.create(proxy_id=proxy_id, elder_id=elder_id, relation=relation.strip()[:RELATION_MAX],
                                      requested_at=now)
        return link, True


async def decide_link(*, link_id: int, by_id: int, how: str, approve: bool, now: datetime) -> ProxyLink:
    """Confirm or refuse a pending link (the caller checks that ``by`` is the elder or staff in scope).

    Deciding twice changes nothing the second time.
    """
    async with in_transaction():
        link = await ProxyLink.select_for_update().get_or_none(id=link_id)
        if link is None:
            raise NotFound("没有找到这条亲情代理申请。")
        if link.status != ProxyStatus.PENDING:
            return link
        link.status = ProxyStatus.ACTIVE if approve else ProxyStatus.REJECTED
        link.decided_at = now
        link.decided_by_id = by_id
        link.confirmed_how = how if approve else ""
        await link.save(update_fields=["status", "decided_at", "decided_by_id", "confirmed_how"])
        return link


async def end_link(*, link_id: int, by_id: int | None, now: datetime) -> ProxyLink:
    """End a pending or active link (either side, or staff); twice is harmless."""
    async with in_transaction():
        link = await ProxyLink.select_for_update().get_or_none(id=link_id)
        if link is None:
            raise NotFound("没有找到这条亲情代理关系。")
        if link.status in (ProxyStatus.PENDING, ProxyStatus.ACTIVE):
            link.status = ProxyStatus.ENDED
            link.ended_at = now
            link.ended_by_id = by_id
            await link.save(update_fields=["status", "ended_at", "ended_by_id"])
        return link


async def links_of(resident_id: int) -> list[ProxyLink]:
    """Open links where the resident is either side, newest first."""
    return await ProxyLink.filter(
        Q(proxy_id=resident_id) | Q(elder_id=resident_id),
        status__in=[ProxyStatus.PENDING, ProxyStatus.ACTIVE],
    ).order_by("-id").prefetch_related("proxy", "elder")


# ---------------------------------------------------------------------------- confirming in person


async def may_confirm_in_person(staff_id: int, elder: Resident) -> bool:
    """Staff who can meet both sides in person: those who verify in the elder's scope, and the
    elder's grid worker."""
    if await may_verify(staff_id, elder):
        return True
    role = await staff_access(staff_id, elder)
    return role is not None and role.role == Role.GRID_WORKER


async def in_person_confirmers(elder: Resident) -> list[Resident]:
    """Whom to ask when the elder cannot confirm in chat: the grid worker(s) of the elder's grid,
    else the community staff of the elder's community."""
    place = await resident_place(elder)
    roles: list[StaffRole] = []
    if place.grid_id is not None:
        roles = await StaffRole.filter(role=Role.GRID_WORKER, grid_id=place.grid_id, revoked_at=None).order_by(
            "id").prefetch_related("resident")
    if not roles and place.community_id is not None:
        roles = await StaffRole.filter(role=Role.COMMUNITY_STAFF, community_id=place.community_id,
                                       revoked_at=None).order_by("id").prefetch_related("resident")
    people: dict[int, Resident] = {}
    for role in roles:
        people.setdefault(role.resident.id, role.resident)
    return list(people.values())


async def pending_links_in_scope(staff_id: int) -> list[ProxyLink]:
    """Pending links this staff member may confirm in person, oldest first."""
    pending = await ProxyLink.filter(status=ProxyStatus.PENDING).order_by("id").prefetch_related("proxy", "elder")
    return [link for link in pending if await may_confirm_in_person(staff_id, link.elder)]


# ---------------------------------------------------------------------------- the record, for display


@dataclass(frozen=True)
class ActionEntry:
    """One recorded action as a person reads it: when, what, and who did it."""

    at: datetime
    action: str
    actor_id: int | None
    actor_name: str  # "" when the actor's record is gone
    on_behalf: bool  # done through a family link
    channel: str


async def actions_about(subject_id: int, *, by_others: bool = False, limit: int = 20) -> list[ActionEntry]:
    """What was done for a person, newest first; ``by_others`` leaves out what they did themselves."""
    query = Action.filter(subject_id=subject_id)
    if by_others:
        query = query.filter(Q(actor_id__not=subject_id) | Q(actor_id=None))
    rows = await query.order_by("-id").limit(limit).prefetch_related("actor")
    return [ActionEntry(at=a.at, action=a.action, actor_id=a.actor_id,  # type: ignore[attr-defined]
                        actor_name=a.actor.name if a.actor else "",
                        on_behalf=a.proxy_link_id is not None, channel=a.channel)  # type: ignore[attr-defined]
            for a in rows]
