"""Residents, their WeChat accounts, staff roles, and binding an account to a resident.

Binding rule: one openid belongs to one resident. When the details a person types match an
existing resident record, the link waits for that grid's worker to confirm it, so nobody can
claim an elder's account by typing their name; otherwise a new record is created, pending
verification.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import phonenumbers
from tortoise import fields
from tortoise.expressions import Q
from tortoise.models import Model
from tortoise.transactions import in_transaction

from models.conversation import withdraw_prompts
from models.errors import Forbidden, NotFound, UserFacingError
from models.places import Building, Community
from models.roles import Role, StaffRole, resident_place

NAME_MAX = 20
UNIT_MAX = 10
ROOM_MAX = 10

# The consent text residents accept; bump the version whenever the text changes.
CONSENT_VERSION = "2026-11-v1"
CONSENT_TEXT = (
    "您填写的姓名、手机号和住址仅用于社区为您办理事项、联系您和核实身份，"
    "由社区工作人员按最少必要原则查看，不会提供给无关方。您可随时回复“解绑”停止使用。"
)


class ResidentStatus:
    PENDING = "pending"  # self-registered, not yet verified by community staff
    VERIFIED = "verified"


class LinkStatus:
    PENDING = "pending"
    CONFIRMED = "confirmed"
    REJECTED = "rejected"
    CANCELLED = "cancelled"


class Mobility:
    UNKNOWN = ""
    WALKS_IN = "walk_in"  # comes to the canteen
    NEEDS_DELIVERY = "delivery"


MOBILITY_LABELS = {
    Mobility.UNKNOWN: "未填写", Mobility.WALKS_IN: "能到食堂就餐", Mobility.NEEDS_DELIVERY: "需要送餐上门",
}


class Resident(Model):
    _no_comments = True  # see models/__init__.py

    id = fields.IntField(primary_key=True)
    name = fields.CharField(max_length=NAME_MAX)
    mobile = fields.CharField(max_length=11, null=True, unique=True)
    community: fields.ForeignKeyRelation[Community] = fields.ForeignKeyField(
        "linli.Community", related_name="residents", on_delete=fields.RESTRICT
    )
    building: fields.ForeignKeyNullableRelation[Building] = fields.ForeignKeyField(
        "linli.Building", related_name="residents", null=True, on_delete=fields.RESTRICT
    )
    unit = fields.CharField(max_length=UNIT_MAX, default="")
    room = fields.CharField(max_length=ROOM_MAX, default="")
    status = fields.CharField(max_length=16, default=ResidentStatus.PENDING)
    source = fields.CharField(max_length=16, default="self")  # self | staff | import
    mobility = fields.CharField(max_length=16, default=Mobility.UNKNOWN, db_default=Mobility.UNKNOWN)
    # sensitive: what a grid worker should know on a door visit (set by staff)
    health_note = fields.CharField(max_length=200, default="", db_default="")
    created_at = fields.DatetimeField()
    verified_at = fields.DatetimeField(null=True)
    erased_at = fields.DatetimeField(null=True)  # personal data removed on request or by retention
    notices_off_at = fields.DatetimeField(null=True)  # said 退订: no notices or announcements (urgent ones still)

    class Meta:
        table = "resident"
        indexes = (("building_id", "unit", "room"),)

    def address(self) -> str:
        building = self.building.name if self.building else ""
        return f"{building}{self.unit}单元{self.room}室" if building else ""


class WechatAccount(Model):
    """One openid: an official-account follower, a mini-program user or a terminal session."""

    _no_comments = True  # see models/__init__.py

    id = fields.IntField(primary_key=True)
    openid = fields.CharField(max_length=64, unique=True)
    channel = fields.CharField(max_length=8, default="oa")  # oa | mp | chat
    resident: fields.ForeignKeyNullableRelation[Resident] = fields.ForeignKeyField(
        "linli.Resident", related_name="accounts", null=True, on_delete=fields.SET_NULL
    )  # indexed by migration 0009
    subscribed = fields.BooleanField(default=True)
    subscribed_at = fields.DatetimeField(null=True)
    unsubscribed_at = fields.DatetimeField(null=True)
    last_scene = fields.CharField(max_length=64, default="")
    # the same person across the official account and the mini-program (when WeChat gives it)
    unionid = fields.CharField(max_length=64, null=True, db_index=True)
    # a number WeChat verified (the mini-program's phone-number call), not what someone typed
    verified_mobile = fields.CharField(max_length=11, null=True)
    created_at = fields.DatetimeField()
    last_seen_at = fields.DatetimeField(null=True)

    class Meta:
        table = "wechat_account"


class LinkRequest(Model):
    """An account asking to be linked to an existing resident record, for a grid worker to decide."""

    _no_comments = True  # see models/__init__.py

    id = fields.IntField(primary_key=True)
    account: fields.ForeignKeyRelation[WechatAccount] = fields.ForeignKeyField(
        "linli.WechatAccount", related_name="link_requests", on_delete=fields.CASCADE
    )
    resident: fields.ForeignKeyRelation[Resident] = fields.ForeignKeyField(
        "linli.Resident", related_name="link_requests", on_delete=fields.CASCADE
    )
    typed_name = fields.CharField(max_length=NAME_MAX)
    typed_mobile = fields.CharField(max_length=11)
    status = fields.CharField(max_length=16, default=LinkStatus.PENDING)
    created_at = fields.DatetimeField()
    decided_at = fields.DatetimeField(null=True)
    decided_by: fields.ForeignKeyNullableRelation[Resident] = fields.ForeignKeyField(
        "linli.Resident", related_name="link_decisions", null=True, on_delete=fields.SET_NULL
    )

    class Meta:
        table = "link_request"


class Consent(Model):
    _no_comments = True  # see models/__init__.py

    id = fields.IntField(primary_key=True)
    account: fields.ForeignKeyRelation[WechatAccount] = fields.ForeignKeyField(
        "linli.WechatAccount", related_name="consents", on_delete=fields.CASCADE
    )
    resident: fields.ForeignKeyNullableRelation[Resident] = fields.ForeignKeyField(
        "linli.Resident", related_name="consents", null=True, on_delete=fields.SET_NULL
    )
    text_version = fields.CharField(max_length=32)
    text = fields.TextField()
    accepted_at = fields.DatetimeField()

    class Meta:
        table = "consent"


def normalize_mobile(text: str) -> str:
    """A mainland mobile as 11 digits, or UserFacingError saying what is wrong."""
    cleaned = text.strip().replace(" ", "").replace("-", "")
    try:
        number = phonenumbers.parse(cleaned, "CN")
    except phonenumbers.NumberParseException:
        raise UserFacingError("手机号格式不对，请输入11位手机号，例如 13812345678。") from None
    kind = phonenumbers.number_type(number)
    if (
        number.country_code != 86
        or not phonenumbers.is_valid_number(number)
        or kind not in (phonenumbers.PhoneNumberType.MOBILE,
                        phonenumbers.PhoneNumberType.FIXED_LINE_OR_MOBILE)
    ):
        raise UserFacingError("这不是有效的手机号，请输入11位手机号，例如 13812345678。")
    return phonenumbers.national_significant_number(number)


def mask_mobile(mobile: str) -> str:
    """138****5678: what staff and the resident see of a stored mobile."""
    return f"{mobile[:3]}****{mobile[-4:]}"


def clean_name(text: str) -> str:
    name = "".join(text.split())
    if not 2 <= len(name) <= NAME_MAX:
        raise UserFacingError(f"姓名请填写2到{NAME_MAX}个字。")
    if any(ch.isdigit() for ch in name):
        raise UserFacingError("姓名里不应有数字，请重新输入姓名。")
    return name


async def get_or_create_account(openid: str, channel: str, now: datetime) -> WechatAccount:
    account = await WechatAccount.get_or_none(openid=openid)
    if account is None:
        account, _ = await WechatAccount.get_or_create(
            openid=openid, defaults={"channel": channel, "created_at": now, "subscribed_at": now}
        )
    return account


async def grid_workers_of(building: Building) -> list[Resident]:
    """Residents who work the grid of ``building``."""
    roles = await StaffRole.filter(
        role=Role.GRID_WORKER, grid_id=building.grid_id, revoked_at=None  # type: ignore[attr-defined]
    ).prefetch_related("resident")
    return [r.resident for r in roles]


async def staff_accounts(residents: list[Resident]) -> list[WechatAccount]:
    return await WechatAccount.filter(resident_id__in=[r.id for r in residents]).all()


@dataclass
class BindOutcome:
    status: str  # "bound" | "pending"
    resident: Resident | None
    request: LinkRequest | None
    reviewers: list[Resident]


async def bind(
    *,
    openid: str,
    channel: str,
    name: str,
    mobile: str,
    building_id: int,
    unit: str,
    room: str,
    now: datetime,
) -> BindOutcome:
    """Bind an account: link at once to a new record, or ask the grid worker to confirm a match."""
    async with in_transaction():
        account = await get_or_create_account(openid, channel, now)
        account = await WechatAccount.select_for_update().get(id=account.id)
        if account.resident_id is not None:  # type: ignore[attr-defined]
            raise UserFacingError("您已经绑定过了。如需更换，请先回复“解绑”。")
        building = await Building.get_or_none(id=building_id)
        if building is None:
            raise NotFound("所选楼栋不存在，请重新选择。")
        match = (
            await Resident.filter(
                Q(mobile=mobile)
                | Q(name=name, building_id=building.id, unit=unit, room=room)
            )
            .order_by("id")
            .first()
        )
        if match is not None:
            existing = await LinkRequest.filter(
                account_id=account.id, status=LinkStatus.PENDING
            ).first()
            if existing is not None:
                request = existing
            else:
                request = await LinkRequest.create(
                    account=account, resident=match, typed_name=name, typed_mobile=mobile,
                    created_at=now,
                )
            await Consent.create(
                account=account, resident=None, text_version=CONSENT_VERSION,
                text=CONSENT_TEXT, accepted_at=now,
            )
            match_building = (
                await Building.get(id=match.building_id) if match.building_id else building  # type: ignore[attr-defined]
            )
            return BindOutcome("pending", None, request, await grid_workers_of(match_building))
        resident = await Resident.create(
            name=name, mobile=mobile, community_id=building.community_id,  # type: ignore[attr-defined]
            building=building, unit=unit, room=room, status=ResidentStatus.PENDING,
            source="self", created_at=now,
        )
        account.resident = resident
        await account.save(update_fields=["resident_id"])
        await Consent.create(
            account=account, resident=resident, text_version=CONSENT_VERSION,
            text=CONSENT_TEXT, accepted_at=now,
        )
        return BindOutcome("bound", resident, None, [])


async def pending_request_of(account: WechatAccount) -> LinkRequest | None:
    return await LinkRequest.filter(account_id=account.id, status=LinkStatus.PENDING).first()


async def may_review(reviewer: Resident, request: LinkRequest) -> bool:
    resident = await request.resident
    place = await resident_place(resident)
    roles = await StaffRole.filter(
        resident_id=reviewer.id, revoked_at=None, role__in=[Role.GRID_WORKER, Role.COMMUNITY_STAFF]
    )
    return any(place.within(role) for role in roles)


async def reviewable_requests(reviewer: Resident) -> list[LinkRequest]:
    """Pending link requests the reviewer may decide, oldest first."""
    pending = await LinkRequest.filter(status=LinkStatus.PENDING).order_by("id").prefetch_related(
        "resident"
    )
    return [r for r in pending if await may_review(reviewer, r)]


async def decide_link(
    *, request_id: int, reviewer: Resident, approve: bool, now: datetime
) -> LinkRequest:
    """Confirm or reject a link request. Deciding twice changes nothing the second time."""
    async with in_transaction():
        request = await LinkRequest.select_for_update().get_or_none(id=request_id)
        if request is None:
            raise NotFound("没有找到这条绑定申请。")
        if not await may_review(reviewer, request):
            raise Forbidden("您不是该居民所在网格的网格员，不能处理这条申请。")
        if request.status != LinkStatus.PENDING:
            return request
        account = await WechatAccount.select_for_update().get(id=request.account_id)  # type: ignore[attr-defined]
        if approve and account.resident_id is None:  # type: ignore[attr-defined]
            account.resident_id = request.resident_id  # type: ignore[attr-defined]
            await account.save(update_fields=["resident_id"])
            await Consent.filter(account_id=account.id, resident_id=None).update(
                resident_id=request.resident_id  # type: ignore[attr-defined]
            )
            request.status = LinkStatus.CONFIRMED
        elif approve:
            request.status = LinkStatus.CANCELLED  # the account got bound some other way
        else:
            request.status = LinkStatus.REJECTED
        request.decided_at = now
        request.decided_by = reviewer
        await request.save(update_fields=["status", "decided_at", "decided_by_id"])
        await withdraw_prompts(f"link_request:{request.id}", now)
        return request


async def unbind(openid: str, now: datetime) -> bool:
    """Unlink an account from its resident and withdraw its pending requests."""
    async with in_transaction():
        account = await WechatAccount.get_or_none(openid=openid)
        if account is None:
            return False
        was_bound = account.resident_id is not None  # type: ignore[attr-defined]
        pending_ids = await LinkRequest.filter(
            account_id=account.id, status=LinkStatus.PENDING
        ).values_list("id", flat=True)
        for request_id in pending_ids:
            await withdraw_prompts(f"link_request:{request_id}", now)
        withdrawn = await LinkRequest.filter(id__in=list(pending_ids)).update(
            status=LinkStatus.CANCELLED, decided_at=now
        )
        if was_bound:
            account.resident_id = None
            await account.save(update_fields=["resident_id"])
        return was_bound or bool(withdrawn)


# ---------------------------------------------------------------------------- one person, many openids


async def learn_unionid(*, account_id: int, unionid: str, now: datetime) -> WechatAccount:
    """Record the unionid WeChat gave for an account; link accounts of the same person.

    An unbound account joins the resident of a bound account with the same unionid; never the
    other way round (an account already bound stays with its record).
    """
    async with in_transaction():
        account = await WechatAccount.select_for_update().get(id=account_id)
        changed = []
        if unionid and account.unionid != unionid:
            account.unionid = unionid[:64]
            changed.append("unionid")
        if unionid and account.resident_id is None:  # type: ignore[attr-defined]
            sibling = await WechatAccount.filter(unionid=unionid, resident_id__not_isnull=True).exclude(
                id=account.id).order_by("id").first()
            if sibling is not None:
                account.resident_id = sibling.resident_id  # type: ignore[attr-defined]
                changed.append("resident_id")
        if changed:
            await account.save(update_fields=changed)
        return account


async def mp_login(*, openid: str, unionid: str | None, now: datetime) -> WechatAccount:
    """The mini-program account behind a wx.login, linked by unionid when WeChat gives one."""
    account = await get_or_create_account(openid, "mp", now)
    account.last_seen_at = now
    await account.save(update_fields=["last_seen_at"])
    if unionid:
        account = await learn_unionid(account_id=account.id, unionid=unionid, now=now)
    return account


async def link_verified_mobile(*, account_id: int, mobile: str, now: datetime) -> Resident | None:
    """A number WeChat verified for this account: bind to the record with that mobile, if any.

    The verified number is proof enough that the person is that record's holder; a typed one is
    not (that goes through the grid worker, see ``bind``).
    """
    async with in_transaction():
        account = await WechatAccount.select_for_update().get(id=account_id)
        account.verified_mobile = mobile
        fields_changed = ["verified_mobile"]
        resident = None
        if account.resident_id is None:  # type: ignore[attr-defined]
            resident = await Resident.get_or_none(mobile=mobile, erased_at=None)
            if resident is not None:
                account.resident_id = resident.id
                fields_changed.append("resident_id")
                await LinkRequest.filter(account_id=account.id, status=LinkStatus.PENDING).update(
                    status=LinkStatus.CANCELLED, decided_at=now)
        else:
            resident = await Resident.get_or_none(id=account.resident_id)  # type: ignore[attr-defined]
        await account.save(update_fields=fields_changed)
        return resident
