"""Redemption: each community's catalogue, vouchers, and donations of points.

Redeeming reserves one of the item's stock and moves its points from the member to the
community's escrow account in one transaction, and issues a voucher (a code and a QR image).
The partner scans or types the code to mark it used: the points move on to the partner's
account (or stay with the community for its own items). An unused voucher can be cancelled
(points and stock return) and expires at the end of its validity: its points go to the expiry
account and the stock returns.
"""

from __future__ import annotations

import io
import secrets
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import segno
from tortoise import fields
from tortoise.exceptions import IntegrityError
from tortoise.expressions import F, Q
from tortoise.models import Model
from tortoise.transactions import in_transaction

from models import cases
from models.errors import Forbidden, NotFound, UserFacingError
from models.jobs import cancel_actions, register_action, schedule_action
from models.ledger import (
    Account,
    AccountKind,
    Asset,
    Insufficient,
    KeyReused,
    Source,
    account,
    balance,
    points_of,
    transfer,
)
from models.love_bank import settings_of
from models.places import Canteen, Community, Shop
from models.privacy import register_hold
from models.proxies import ProxyLink, ProxyStatus, acts_for
from models.push import push_text
from models.residents import Resident, normalize_mobile
from models.roles import Role, Scope, StaffRole


class ItemKind:
    GOODS = "goods"
    SERVICE = "service"
    MEAL = "meal"  # a canteen meal voucher


ITEM_KIND_LABELS = {ItemKind.GOODS: "商品", ItemKind.SERVICE: "服务", ItemKind.MEAL: "助餐券"}


class VoucherStatus:
    ISSUED = "issued"
    USED = "used"
    CANCELLED = "cancelled"
    EXPIRED = "expired"


class DonationStatus:
    PENDING = "pending"  # waiting for the donor's confirmation
    DONE = "done"
    CANCELLED = "cancelled"


class CatalogueItem(Model):
    """Something a community's members can redeem points for."""

    _no_comments = True  # see models/__init__.py

    id = fields.IntField(primary_key=True)
    community: fields.ForeignKeyRelation = fields.ForeignKeyField(
        "linli.Community", related_name=False, on_delete=fields.RESTRICT)
    shop: fields.ForeignKeyNullableRelation = fields.ForeignKeyField(
        "linli.Shop", related_name=False, null=True, on_delete=fields.RESTRICT)  # None: the community's own
    kind = fields.CharField(max_length=12)
    name = fields.CharField(max_length=30)
    description = fields.CharField(max_length=200, default="")
    price = fields.IntField()  # points
    stock = fields.IntField()  # left to redeem
    per_person_limit = fields.IntField(default=0)  # vouchers per member, 0 for no limit
    valid_days = fields.IntField()  # a voucher's validity from its issue
    active = fields.BooleanField(default=True)
    created_by: fields.ForeignKeyNullableRelation = fields.ForeignKeyField(
        "linli.Resident", related_name=False, null=True, on_delete=fields.SET_NULL)
    created_at = fields.DatetimeField()

    community_id: int
    shop_id: int | None

    class Meta:
        table = "catalogue_item"


class Voucher(Model):
    """A redeemed item: its code, its state and the entries that moved its points."""

    _no_comments = True  # see models/__init__.py

    id = fields.IntField(primary_key=True)
    code = fields.CharField(max_length=12, unique=True)
    item: fields.ForeignKeyRelation[CatalogueItem] = fields.ForeignKeyField(
        "linli.CatalogueItem", related_name="vouchers", on_delete=fields.RESTRICT)
    resident: fields.ForeignKeyRelation = fields.ForeignKeyField(
        "linli.Resident", related_name=False, on_delete=fields.RESTRICT)
    price = fields.IntField()  # points paid, as priced when redeemed
    status = fields.CharField(max_length=12, default=VoucherStatus.ISSUED)
    key = fields.CharField(max_length=96, unique=True)  # the redemption's idempotency key
    issued_at = fields.DatetimeField()
    expires_at = fields.DatetimeField()
    closed_at = fields.DatetimeField(null=True)  # used, cancelled or expired
    closed_by: fields.ForeignKeyNullableRelation = fields.ForeignKeyField(
        "linli.Resident", related_name=False, null=True, on_delete=fields.RESTRICT)

    item_id: int
    resident_id: int
    closed_by_id: int | None

    class Meta:
        table = "voucher"
        indexes = (("resident_id", "status"), ("item_id", "resident_id"))


class Donation(Model):
    """Points a member gives another, written down before the donor confirms."""

    _no_comments = True  # see models/__init__.py

    id = fields.IntField(primary_key=True)
    donor: fields.ForeignKeyRelation = fields.ForeignKeyField(
        "linli.Resident", related_name=False, on_delete=fields.RESTRICT)
    recipient: fields.ForeignKeyRelation = fields.ForeignKeyField(
        "linli.Resident", related_name=False, on_delete=fields.RESTRICT)
    amount = fields.IntField()
    note = fields.CharField(max_length=60, default="")
    status = fields.CharField(max_length=12, default=DonationStatus.PENDING)
    key = fields.CharField(max_length=96, unique=True)
    created_at = fields.DatetimeField()
    expires_at = fields.DatetimeField()  # a pending donation lapses unconfirmed
    confirmed_at = fields.DatetimeField(null=True)

    donor_id: int
    recipient_id: int

    class Meta:
        table = "points_donation"


# ---------------------------------------------------------------------------- rules and refusals

CODE_ALPHABET = "23456789ABCDEFGHJKLMNPQRSTUVWXYZ"  # no 0/O, 1/I: read aloud and typed by a clerk
CODE_LENGTH = 8
NAME_MAX = 30
DESCRIPTION_MAX = 200
PRICE_MAX = 100_000
STOCK_MAX = 100_000
VALID_DAYS_MAX = 366
LIMIT_MAX = 100
NOTE_MAX = 60
DONATION_MINUTES = 10  # a pending donation waits this long for the donor's confirmation
DONATION_MAX = 100_000

STATUS_LABELS = {VoucherStatus.ISSUED: "未使用", VoucherStatus.USED: "已使用", VoucherStatus.CANCELLED: "已取消",
                 VoucherStatus.EXPIRED: "已过期"}
DONATION_LABELS = {DonationStatus.PENDING: "待确认", DonationStatus.DONE: "已转赠", DonationStatus.CANCELLED: "已取消"}

# who may take a community's own items (no shop): its staff, and for meal vouchers its canteens' staff
OWN_ITEM_ROLES = (Role.COMMUNITY_STAFF,)
MEAL_ROLES = (Role.COMMUNITY_STAFF, Role.CANTEEN_STAFF)


class SoldOut(UserFacingError):
    def __init__(self, name: str) -> None:
        super().__init__(f"“{name}”已经兑完了，请看看其他项目。")


class LimitReached(UserFacingError):
    def __init__(self, name: str, limit: int) -> None:
        super().__init__(f"“{name}”每人限兑{limit}份，您已兑满。")


class ItemUnavailable(UserFacingError):
    def __init__(self, name: str) -> None:
        super().__init__(f"“{name}”暂停兑换了，请看看其他项目。")


class VoucherClosed(UserFacingError):
    """The voucher was used, cancelled or has expired: the message says which and when."""


def mask_name(name: str) -> str:
    """王*兰, 王*, 欧**锋: what a donor or a clerk sees of someone else's name."""
    if len(name) <= 1:
        return name
    if len(name) == 2:
        return name[0] + "*"
    return name[0] + "*" * (len(name) - 2) + name[-1]


def normalize_code(text: str) -> str:
    """A typed or scanned code as stored: upper case, without spaces or dashes."""
    return "".join(text.split()).replace("-", "").upper()


def new_code() -> str:
    return "".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_LENGTH))


def _tz() -> ZoneInfo:
    return cases.CONTEXT.tz


def expiry_of(issued_at: datetime, valid_days: int) -> datetime:
    """The end of the community's day ``valid_days`` after the issue day (as the instant it ends)."""
    local = issued_at.astimezone(_tz()).date() + timedelta(days=valid_days + 1)
    return datetime.combine(local, time(0), tzinfo=_tz()).astimezone(UTC)


def valid_until(voucher: Voucher) -> date:
    """The last community day the voucher may be used."""
    return (voucher.expires_at.astimezone(_tz()) - timedelta(seconds=1)).date()


def day_zh(day: date) -> str:
    return f"{day.month}月{day.day}日"


def when_zh(when: datetime) -> str:
    local = when.astimezone(_tz())
    return f"{local.month}月{local.day}日{local:%H:%M}"


def _check_key(key: str) -> None:
    if not 0 < len(key) <= 96:
        raise ValueError("an idempotency key is 1 to 96 characters")


async def _audience(resident_id: int) -> list[int]:
    """The resident and the family members acting for them (an elder may have no WeChat)."""
    proxies = await ProxyLink.filter(elder_id=resident_id, status=ProxyStatus.ACTIVE).values_list(
        "proxy_id", flat=True)
    return [resident_id, *(int(p) for p in proxies)]  # type: ignore[call-overload]


# ---------------------------------------------------------------------------- who may do what


async def _holds(by_id: int, roles: tuple[str, ...], **scope: Any) -> bool:
    return await StaffRole.filter(resident_id=by_id, role__in=roles, revoked_at=None, **scope).exists()


async def is_community_staff(by_id: int, community_id: int) -> bool:
    return await _holds(by_id, (Role.COMMUNITY_STAFF,), community_id=community_id)


async def may_take(by_id: int, item: CatalogueItem) -> bool:
    """Whether this person marks the item's vouchers used: the shop's clerks for a shop's item, the
    community's staff (and, for meal vouchers, its canteens' staff) for the community's own."""
    if item.shop_id is not None:
        return await _holds(by_id, (Role.SHOP,), scope_kind=Scope.SHOP, scope_id=item.shop_id)
    roles = MEAL_ROLES if item.kind == ItemKind.MEAL else OWN_ITEM_ROLES
    return await _holds(by_id, roles, community_id=item.community_id)


async def takes_vouchers(by_id: int) -> bool:
    """Whether this person marks any vouchers used (the 核销 flow's gate)."""
    return await _holds(by_id, (Role.SHOP, Role.COMMUNITY_STAFF, Role.CANTEEN_STAFF))


async def may_see_voucher(viewer_id: int, voucher: Voucher, item: CatalogueItem) -> bool:
    """Its owner, a family member acting for them, the community's staff."""
    if viewer_id == voucher.resident_id:
        return True
    if await acts_for(viewer_id, voucher.resident_id):
        return True
    return await is_community_staff(viewer_id, item.community_id)


async def where_of(item: CatalogueItem) -> str:
    """Where the voucher is used, as a resident reads it."""
    if item.shop_id is not None:
        shop = await Shop.get_or_none(id=item.shop_id)
        if shop is not None:
            return shop.name
    if item.kind == ItemKind.MEAL:
        canteen = await Canteen.filter(community_id=item.community_id).order_by("id").first()
        if canteen is not None:
            return canteen.name
    community = await Community.get(id=item.community_id)
    return f"{community.name}居委会"


# ---------------------------------------------------------------------------- the catalogue


def _check_item(*, kind: str | None = None, name: str | None = None, description: str | None = None,
                price: int | None = None, stock: int | None = None, per_person_limit: int | None = None,
                valid_days: int | None = None) -> None:
    if kind is not None and kind not in ITEM_KIND_LABELS:
        raise UserFacingError("兑换项目的类别只能是商品、服务或助餐券。")
    if name is not None and not 1 <= len(name.strip()) <= NAME_MAX:
        raise UserFacingError(f"名称请写1到{NAME_MAX}个字。")
    if description is not None and len(description) > DESCRIPTION_MAX:
        raise UserFacingError(f"说明最多{DESCRIPTION_MAX}个字。")
    if price is not None and not 1 <= price <= PRICE_MAX:
        raise UserFacingError(f"所需积分应在1到{PRICE_MAX}之间。")
    if stock is not None and not 0 <= stock <= STOCK_MAX:
        raise UserFacingError(f"库存应在0到{STOCK_MAX}之间。")
    if per_person_limit is not None and not 0 <= per_person_limit <= LIMIT_MAX:
        raise UserFacingError(f"每人限兑应在0（不限）到{LIMIT_MAX}之间。")
    if valid_days is not None and not 1 <= valid_days <= VALID_DAYS_MAX:
        raise UserFacingError(f"有效天数应在1到{VALID_DAYS_MAX}之间。")


async def staff_community(by_id: int) -> int | None:
    """The community this person runs as community staff (the first, if several)."""
    role = await StaffRole.filter(resident_id=by_id, role=Role.COMMUNITY_STAFF, revoked_at=None).order_by(
        "id").first()
    return None if role is None else role.community_id  # type: ignore[attr-defined]


async def create_item(
    *, community_id: int, by_id: int, kind: str, name: str, price: int, stock: int, valid_days: int,
    now: datetime, per_person_limit: int = 0, description: str = "", shop_id: int | None = None,
) -> CatalogueItem:
    """A new catalogue item of the community, by its staff (Forbidden for anyone else)."""
    if not await is_community_staff(by_id, community_id):
        raise Forbidden("只有本社区的工作人员可以管理兑换目录。")
    _check_item(kind=kind, name=name, description=description, price=price, stock=stock,
                per_person_limit=per_person_limit, valid_days=valid_days)
    if shop_id is not None and not await Shop.filter(id=shop_id, community_id=community_id).exists():
        raise UserFacingError("这家商户不是本社区的合作商户。")
    return await CatalogueItem.create(
        community_id=community_id, shop_id=shop_id, kind=kind, name=name.strip(), description=description.strip(),
        price=price, stock=stock, per_person_limit=per_person_limit, valid_days=valid_days, created_by_id=by_id,
        created_at=now)


EDITABLE = ("name", "description", "price", "stock", "per_person_limit", "valid_days", "active")


async def update_item(item_id: int, *, by_id: int, changes: dict[str, Any]) -> CatalogueItem:
    """Change an item (its staff only; NotFound for anyone else). A new price or validity applies to
    later redemptions: an issued voucher keeps what it cost and its expiry."""
    item = await CatalogueItem.get_or_none(id=item_id)
    if item is None or not await is_community_staff(by_id, item.community_id):
        raise NotFound("没有找到这个兑换项目。")
    unknown = set(changes) - set(EDITABLE)
    if unknown:
        raise ValueError(f"cannot change {sorted(unknown)}")
    _check_item(**{k: v for k, v in changes.items() if k != "active"})
    if not changes:
        return item
    if "name" in changes:
        changes["name"] = changes["name"].strip()
    if "description" in changes:
        changes["description"] = changes["description"].strip()
    await CatalogueItem.filter(id=item_id).update(**changes)
    return await CatalogueItem.get(id=item_id)


async def catalogue_of(community_id: int) -> list[CatalogueItem]:
    """What the community's members may redeem now, cheapest first."""
    return await CatalogueItem.filter(community_id=community_id, active=True).order_by("price", "id")


async def managed_items(by_id: int) -> list[CatalogueItem]:
    """The items this person manages (community staff: all of their communities', active or not) or
    takes vouchers of (a shop's clerks: the shop's; canteen staff: their community's meal vouchers)."""
    roles = await StaffRole.filter(resident_id=by_id, revoked_at=None,
                                   role__in=(Role.COMMUNITY_STAFF, Role.SHOP, Role.CANTEEN_STAFF))
    query = Q(id__in=[])
    for role in roles:
        if role.role == Role.COMMUNITY_STAFF:
            query |= Q(community_id=role.community_id)  # type: ignore[attr-defined]
        elif role.role == Role.SHOP:
            query |= Q(shop_id=role.scope_id)
        else:
            query |= Q(community_id=role.community_id, shop_id=None, kind=ItemKind.MEAL)  # type: ignore[attr-defined]
    return await CatalogueItem.filter(query).order_by("community_id", "id")


async def held_count(resident_id: int, item_id: int) -> int:
    """Vouchers of the item the resident holds or used: what the per-person limit counts."""
    return await Voucher.filter(resident_id=resident_id, item_id=item_id,
                                status__in=(VoucherStatus.ISSUED, VoucherStatus.USED)).count()


# ---------------------------------------------------------------------------- redeeming


def _same_voucher(voucher: Voucher, resident_id: int, item_id: int) -> Voucher:
    if (voucher.resident_id, voucher.item_id) != (resident_id, item_id):
        raise KeyReused()
    return voucher


async def redeem(resident_id: int, item_id: int, *, key: str, now: datetime,
                 actor_id: int | None = None) -> Voucher:
    """Redeem one of the item for the resident, once per ``key``.

    In one transaction: the member's points row is locked first (their redemptions queue there,
    so the per-person limit is counted on what is committed), one of the stock is taken by a
    conditional UPDATE, the voucher is written and its price moves from the member to the
    community's escrow account; its expiry and warning are scheduled. A retry with the same key,
    even one arriving at the same moment, returns the same voucher.
    """
    _check_key(key)
    earlier = await Voucher.get_or_none(key=key)
    if earlier is not None:
        return _same_voucher(earlier, resident_id, item_id)
    item = await CatalogueItem.get_or_none(id=item_id)
    resident = await Resident.get_or_none(id=resident_id)
    if item is None or resident is None or item.community_id != resident.community_id:  # type: ignore[attr-defined]
        raise NotFound("没有找到这个兑换项目。")
    if not item.active:
        raise ItemUnavailable(item.name)
    member = await points_of(resident_id, now)
    escrow = await account(Asset.POINTS, AccountKind.ESCROW, item.community_id, now)
    warn_days = (await settings_of(item.community_id)).voucher_warn_days
    try:
        async with in_transaction():
            locked = await Account.select_for_update().get(id=member.id)
            earlier = await Voucher.get_or_none(key=key)  # a concurrent copy of this request committed first
            if earlier is not None:
                return _same_voucher(earlier, resident_id, item_id)
            item = await CatalogueItem.get(id=item_id)
            if not item.active:
                raise ItemUnavailable(item.name)
            if item.stock <= 0:
                raise SoldOut(item.name)
            if item.per_person_limit and await held_count(resident_id, item_id) >= item.per_person_limit:
                raise LimitReached(item.name, item.per_person_limit)
            if locked.balance < item.price:
                raise Insufficient(Asset.POINTS, locked.balance, item.price)
            taken = await CatalogueItem.filter(id=item_id, active=True, stock__gt=0).update(stock=F("stock") - 1)
            if not taken:
                raise SoldOut(item.name)
            voucher = await Voucher.create(
                code=await _unused_code(), item_id=item.id, resident_id=resident_id, price=item.price, key=key,
                issued_at=now, expires_at=expiry_of(now, item.valid_days))
            await transfer(from_account=member, to_account=escrow, amount=item.price, source=Source.REDEMPTION,
                           key=f"voucher:{voucher.id}:redeem", now=now, ref=f"voucher:{voucher.id}",
                           memo=f"兑换：{item.name}", actor_id=actor_id or resident_id)
            target = f"voucher:{voucher.id}"
            await schedule_action("voucher.expire", target, voucher.expires_at, now)
            warn_at = voucher.expires_at - timedelta(days=warn_days)
            if warn_days and warn_at > now:
                await schedule_action("voucher.warn", target, warn_at, now)
            return voucher
    except IntegrityError:
        # the same key committed meanwhile (a copy of this request on another connection)
        earlier = await Voucher.get_or_none(key=key)
        if earlier is None:
            raise
        return _same_voucher(earlier, resident_id, item_id)


async def _unused_code() -> str:
    while True:  # 32^8 codes: a clash is all but impossible, and the unique index has the last word
        code = new_code()
        if not await Voucher.filter(code=code).exists():
            return code


async def voucher_of(voucher_id: int, viewer_id: int) -> Voucher:
    """The voucher, if the viewer may see it (NotFound otherwise: another's voucher looks absent)."""
    voucher = await Voucher.get_or_none(id=voucher_id).prefetch_related("item")
    if voucher is None or not await may_see_voucher(viewer_id, voucher, voucher.item):
        raise NotFound("没有找到这张兑换券。")
    return voucher


async def vouchers_of(resident_id: int, *, unused_only: bool = False, limit: int = 50) -> list[Voucher]:
    """The resident's vouchers, unused first (soonest to expire first), then the newest closed ones."""
    query = Voucher.filter(resident_id=resident_id)
    unused = await query.filter(status=VoucherStatus.ISSUED).order_by("expires_at", "id").limit(limit) \
        .prefetch_related("item")
    if unused_only:
        return list(unused)
    closed = await Voucher.filter(resident_id=resident_id).exclude(status=VoucherStatus.ISSUED) \
        .order_by("-closed_at", "-id").limit(max(limit - len(unused), 0)).prefetch_related("item")
    return [*unused, *closed]


def _closed(voucher: Voucher) -> VoucherClosed:
    at = when_zh(voucher.closed_at) if voucher.closed_at else ""
    if voucher.status == VoucherStatus.USED:
        return VoucherClosed(f"这张兑换券已于{at}使用过了。")
    if voucher.status == VoucherStatus.CANCELLED:
        return VoucherClosed(f"这张兑换券已于{at}取消。")
    return VoucherClosed(f"这张兑换券已于{day_zh(valid_until(voucher))}到期作废。")


async def _expired_now(voucher: Voucher, now: datetime) -> Voucher:
    """Past its validity but not swept yet: expire it now, so nobody uses or cancels it meanwhile."""
    if voucher.status == VoucherStatus.ISSUED and now >= voucher.expires_at:
        await expire_voucher(voucher.id, now)
        voucher = await Voucher.get(id=voucher.id).prefetch_related("item")
    return voucher


async def cancel_voucher(voucher_id: int, *, by_id: int, now: datetime) -> Voucher:
    """The owner (a family member acting for them, or community staff) cancels an unused voucher:
    its points return from escrow and its stock returns, once; cancelling again changes nothing."""
    voucher = await _expired_now(await voucher_of(voucher_id, by_id), now)
    if voucher.status == VoucherStatus.CANCELLED:
        return voucher
    if voucher.status != VoucherStatus.ISSUED:
        raise _closed(voucher)
    item = voucher.item
    member = await points_of(voucher.resident_id, now)
    escrow = await account(Asset.POINTS, AccountKind.ESCROW, item.community_id, now)
    async with in_transaction():
        # the member's row first, as a redemption takes it: the two never wait on each other in a circle
        await Account.select_for_update().get(id=member.id)
        won = await Voucher.filter(id=voucher.id, status=VoucherStatus.ISSUED).update(
            status=VoucherStatus.CANCELLED, closed_at=now, closed_by_id=by_id)
        if won:
            await CatalogueItem.filter(id=item.id).update(stock=F("stock") + 1)
            await transfer(from_account=escrow, to_account=member, amount=voucher.price, source=Source.REDEMPTION,
                           key=f"voucher:{voucher.id}:cancel", now=now, ref=f"voucher:{voucher.id}",
                           memo=f"取消兑换：{item.name}", actor_id=by_id)
    voucher = await Voucher.get(id=voucher.id).prefetch_related("item")
    if voucher.status != VoucherStatus.CANCELLED:  # used or expired meanwhile
        raise _closed(voucher)
    await _stop_reminders(voucher.id)
    return voucher


async def voucher_to_take(code: str, *, by_id: int, now: datetime) -> Voucher:
    """The voucher a clerk is about to mark used, checked (NotFound for a code that is not theirs to
    take; VoucherClosed, saying when, for one used, cancelled or expired)."""
    cleaned = normalize_code(code)
    voucher = None
    if 1 <= len(cleaned) <= 12:
        voucher = await Voucher.get_or_none(code=cleaned).prefetch_related("item", "resident")
    if voucher is None or not await may_take(by_id, voucher.item):
        raise NotFound("没有找到这张兑换券，请核对券码（可在本店兑换的券才能核销）。")
    voucher = await _expired_now(voucher, now)
    if voucher.status != VoucherStatus.ISSUED:
        raise _closed(voucher)
    return voucher


async def use_voucher(code: str, *, by_id: int, now: datetime) -> Voucher:
    """The partner marks a voucher used: its points move from escrow to the shop's account (or, for
    the community's own items, back to the community's issuing account), once. A second use is
    refused with the time of the first."""
    voucher = await voucher_to_take(code, by_id=by_id, now=now)
    item = voucher.item
    escrow = await account(Asset.POINTS, AccountKind.ESCROW, item.community_id, now)
    if item.shop_id is not None:
        to = await account(Asset.POINTS, AccountKind.PARTNER, item.shop_id, now)
    else:
        to = await account(Asset.POINTS, AccountKind.ISSUING, item.community_id, now)
    async with in_transaction():
        won = await Voucher.filter(id=voucher.id, status=VoucherStatus.ISSUED).update(
            status=VoucherStatus.USED, closed_at=now, closed_by_id=by_id)
        if won:
            await transfer(from_account=escrow, to_account=to, amount=voucher.price, source=Source.REDEMPTION,
                           key=f"voucher:{voucher.id}:use", now=now, ref=f"voucher:{voucher.id}",
                           memo=f"兑换券使用：{item.name}", actor_id=by_id)
    voucher = await Voucher.get(id=voucher.id).prefetch_related("item", "resident")
    if not won:
        raise _closed(voucher)
    await _stop_reminders(voucher.id)
    await push_text(await _audience(voucher.resident_id),
                    f"您兑换的“{item.name}”（券码{voucher.code}）已于{when_zh(now)}在{await where_of(item)}使用。",
                    f"voucher:{voucher.id}:used", now)
    return voucher


async def _stop_reminders(voucher_id: int) -> None:
    for action in ("voucher.expire", "voucher.warn"):
        await cancel_actions(action, f"voucher:{voucher_id}")


async def expire_voucher(voucher_id: int, now: datetime) -> bool:
    """At the end of its validity an unused voucher expires: its points go from escrow to the
    community's expiry account and its stock returns. True when this call expired it."""
    voucher = await Voucher.get_or_none(id=voucher_id).prefetch_related("item")
    if voucher is None or voucher.status != VoucherStatus.ISSUED or now < voucher.expires_at:
        return False
    item = voucher.item
    escrow = await account(Asset.POINTS, AccountKind.ESCROW, item.community_id, now)
    expiry = await account(Asset.POINTS, AccountKind.EXPIRY, item.community_id, now)
    async with in_transaction():
        won = await Voucher.filter(id=voucher.id, status=VoucherStatus.ISSUED).update(
            status=VoucherStatus.EXPIRED, closed_at=now)
        if won:
            await CatalogueItem.filter(id=item.id).update(stock=F("stock") + 1)
            await transfer(from_account=escrow, to_account=expiry, amount=voucher.price, source=Source.EXPIRY,
                           key=f"voucher:{voucher.id}:expire", now=now, ref=f"voucher:{voucher.id}",
                           memo=f"兑换券过期：{item.name}")
    if won:
        await cancel_actions("voucher.warn", f"voucher:{voucher.id}")
        await push_text(await _audience(voucher.resident_id),
                        f"您兑换的“{item.name}”（券码{voucher.code}）已过有效期，未使用，已作废。",
                        f"voucher:{voucher.id}:expired", now)
    return bool(won)


def _voucher_id(target: str) -> int:
    kind, _, number = target.partition(":")
    if kind != "voucher" or not number.isdigit():
        raise ValueError(f"not a voucher target: {target}")
    return int(number)


@register_action("voucher.expire")
async def _expire_due(target: str, now: datetime) -> None:
    await expire_voucher(_voucher_id(target), now)


@register_action("voucher.warn")
async def _warn_due(target: str, now: datetime) -> None:
    """A few days before expiry: remind the owner (and their family proxies) of an unused voucher."""
    voucher = await Voucher.get_or_none(id=_voucher_id(target)).prefetch_related("item")
    if voucher is None or voucher.status != VoucherStatus.ISSUED:
        return
    item = voucher.item
    await push_text(await _audience(voucher.resident_id),
                    f"提醒：您兑换的“{item.name}”（券码{voucher.code}）将于{day_zh(valid_until(voucher))}到期，"
                    f"请尽快到{await where_of(item)}使用。不需要了可回复“我的兑换券”取消，积分退回。",
                    f"voucher:{voucher.id}:warn", now)


def code_png(code: str) -> bytes:
    """A code as a QR PNG (a voucher for the partner's scanner, a meal booking for the canteen's counter)."""
    buffer = io.BytesIO()
    segno.make_qr(code, error="m", boost_error=False).save(buffer, kind="png", scale=8, border=4)
    return buffer.getvalue()


# ---------------------------------------------------------------------------- donations


async def find_recipient(mobile: str) -> Resident:
    """The resident registered with this mobile (UserFacingError for a badly written one, NotFound
    when nobody is)."""
    number = normalize_mobile(mobile)
    resident = await Resident.get_or_none(mobile=number, erased_at=None)
    if resident is None:
        raise NotFound("没有找到用这个手机号登记的居民，请核对后再试。")
    return resident


async def create_donation(donor_id: int, recipient_id: int, amount: int, *, note: str, key: str,
                          now: datetime) -> Donation:
    """Write a donation down, pending the donor's confirmation (within DONATION_MINUTES); once per key."""
    _check_key(key)
    earlier = await Donation.get_or_none(key=key)
    if earlier is not None:
        if (earlier.donor_id, earlier.recipient_id, earlier.amount) != (donor_id, recipient_id, amount):
            raise KeyReused()
        return earlier
    if isinstance(amount, bool) or not isinstance(amount, int) or not 1 <= amount <= DONATION_MAX:
        raise UserFacingError(f"转赠积分请填1到{DONATION_MAX}之间的整数。")
    if donor_id == recipient_id:
        raise UserFacingError("不能转赠给自己。")
    note = note.strip()
    if len(note) > NOTE_MAX:
        raise UserFacingError(f"留言最多{NOTE_MAX}个字。")
    recipient = await Resident.get_or_none(id=recipient_id, erased_at=None)
    if recipient is None:
        raise NotFound("没有找到这位居民。")
    available = await balance(await points_of(donor_id, now))
    if available < amount:
        raise Insufficient(Asset.POINTS, available, amount)
    try:
        async with in_transaction():
            return await Donation.create(donor_id=donor_id, recipient_id=recipient_id, amount=amount, note=note,
                                         key=key, created_at=now, expires_at=now + timedelta(minutes=DONATION_MINUTES))
    except IntegrityError:
        return await create_donation(donor_id, recipient_id, amount, note=note, key=key, now=now)


async def _donation_of(donation_id: int, donor_id: int) -> Donation:
    donation = await Donation.get_or_none(id=donation_id, donor_id=donor_id).prefetch_related("donor", "recipient")
    if donation is None:
        raise NotFound("没有找到这笔转赠。")
    return donation


async def confirm_donation(donation_id: int, *, donor_id: int, now: datetime) -> Donation:
    """The donor confirms: the points move from their account to the recipient's, once (confirming
    again changes nothing), and the recipient is told."""
    donation = await _donation_of(donation_id, donor_id)
    if donation.status == DonationStatus.DONE:
        return donation
    if donation.status == DonationStatus.CANCELLED:
        raise UserFacingError("这笔转赠已取消，需要的话请重新转赠。")
    if now > donation.expires_at:
        await Donation.filter(id=donation.id, status=DonationStatus.PENDING).update(status=DonationStatus.CANCELLED)
        raise UserFacingError(f"这笔转赠超过{DONATION_MINUTES}分钟没有确认，已取消，需要的话请重新转赠。")
    donor, recipient = donation.donor, donation.recipient
    source = await points_of(donor.id, now)
    target = await points_of(recipient.id, now)
    memo = f"{mask_name(donor.name)}转赠{mask_name(recipient.name)}" + (f"：{donation.note}" if donation.note else "")
    async with in_transaction():
        # both members' rows in one order, so two donations crossing each other never deadlock
        for row_id in sorted((source.id, target.id)):
            await Account.select_for_update().get(id=row_id)
        won = await Donation.filter(id=donation.id, status=DonationStatus.PENDING).update(
            status=DonationStatus.DONE, confirmed_at=now)
        if won:
            await transfer(from_account=source, to_account=target, amount=donation.amount, source=Source.DONATION,
                           key=f"donation:{donation.id}", now=now, ref=f"donation:{donation.id}", memo=memo,
                           actor_id=donor.id)
    donation = await _donation_of(donation.id, donor_id)
    if donation.status != DonationStatus.DONE:
        raise UserFacingError("这笔转赠已取消，需要的话请重新转赠。")
    if won:
        note = f"，留言：{donation.note}" if donation.note else ""
        await push_text(await _audience(recipient.id),
                        f"{donor.name}转赠给您{donation.amount}积分{note}。回复“积分”查看余额，“兑换”看看能换什么。",
                        f"donation:{donation.id}:received", now)
    return donation


async def cancel_donation(donation_id: int, *, donor_id: int, now: datetime) -> Donation:
    """The donor says no before confirming: nothing moves. A confirmed donation stays (a correction
    is the community staff's, through the ledger)."""
    donation = await _donation_of(donation_id, donor_id)
    if donation.status == DonationStatus.DONE:
        raise UserFacingError("这笔转赠已完成，不能取消。")
    await Donation.filter(id=donation.id, status=DonationStatus.PENDING).update(status=DonationStatus.CANCELLED)
    donation = await _donation_of(donation.id, donor_id)
    if donation.status == DonationStatus.DONE:  # confirmed at the same moment
        raise UserFacingError("这笔转赠已完成，不能取消。")
    return donation


@register_hold
async def _unused_voucher_hold(resident_id: int) -> str | None:
    """A resident holding an unused voucher keeps their name until it is used, cancelled or expired:
    the shop shows the holder's (masked) name when it takes the voucher."""
    if await Voucher.filter(resident_id=resident_id, status=VoucherStatus.ISSUED).exists():
        return "有未使用的兑换券"
    return None
