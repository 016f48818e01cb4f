"""Staff roles: what each role may do, where (its scope), and who granted it.

Every person is a resident; a staff role is granted on top, scoped to a grid, a community, the
sub-district, a canteen, a shop or a department (the admin role is global). Grants are never
deleted: revoking one stamps it, so the record shows who granted and who revoked what, when.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from tortoise import fields
from tortoise.models import Model
from tortoise.transactions import in_transaction

from models.errors import Forbidden, NotFound, UserFacingError
from models.places import Building, Canteen, Community, Department, Grid, Shop, SubDistrict

if TYPE_CHECKING:
    from models.residents import Resident


class Role:
    RESIDENT = "resident"
    VOLUNTEER = "volunteer"
    ORGANISER = "organiser"
    RIDER = "rider"
    RED_PROXY = "red_proxy"
    STEWARD = "steward"
    GRID_WORKER = "grid_worker"
    MEDIATOR = "mediator"
    PROPERTY = "property"
    SHOP = "shop"
    DEPARTMENT = "department"
    CANTEEN_STAFF = "canteen_staff"
    COMMUNITY_STAFF = "community_staff"
    SUBDISTRICT_STAFF = "subdistrict_staff"
    ADMIN = "admin"


class Scope:
    GRID = "grid"
    COMMUNITY = "community"
    SUB_DISTRICT = "sub_district"
    CANTEEN = "canteen"
    SHOP = "shop"
    DEPARTMENT = "department"
    GLOBAL = "global"


SCOPE_LABELS = {
    Scope.GRID: "网格", Scope.COMMUNITY: "社区", Scope.SUB_DISTRICT: "街道", Scope.CANTEEN: "食堂",
    Scope.SHOP: "商户", Scope.DEPARTMENT: "部门", Scope.GLOBAL: "全部",
}


@dataclass(frozen=True)
class RoleSpec:
    code: str
    label: str
    scope: str
    # may open resident records in scope (each opening is audited)
    sees_residents: bool = False
    # may see sensitive fields (低保, 特困, 残疾, health notes...) of those residents
    sees_sensitive: bool = False
    # may verify what residents declare (date of birth, statuses) and carry out deletion requests
    verifies: bool = False
    # roles this role may grant and revoke, inside its own scope
    grants: frozenset[str] = frozenset()


_FRONTLINE = frozenset({
    Role.VOLUNTEER, Role.ORGANISER, Role.RIDER, Role.RED_PROXY, Role.STEWARD, Role.GRID_WORKER,
    Role.MEDIATOR, Role.PROPERTY, Role.SHOP, Role.CANTEEN_STAFF,
})

ROLES: dict[str, RoleSpec] = {spec.code: spec for spec in [
    RoleSpec(Role.RESIDENT, "居民", Scope.GLOBAL),
    RoleSpec(Role.VOLUNTEER, "志愿者", Scope.COMMUNITY),
    RoleSpec(Role.ORGANISER, "活动组织者", Scope.COMMUNITY),
    RoleSpec(Role.RIDER, "先锋骑士", Scope.COMMUNITY),
    RoleSpec(Role.RED_PROXY, "红色代办员", Scope.GRID),
    RoleSpec(Role.STEWARD, "云管家", Scope.COMMUNITY),
    RoleSpec(Role.GRID_WORKER, "网格员", Scope.GRID, sees_residents=True, sees_sensitive=True),
    RoleSpec(Role.MEDIATOR, "调解员", Scope.GRID),
    RoleSpec(Role.PROPERTY, "物业公司", Scope.COMMUNITY),
    RoleSpec(Role.SHOP, "合作商户", Scope.SHOP),
    RoleSpec(Role.DEPARTMENT, "部门工作人员", Scope.DEPARTMENT),
    RoleSpec(Role.CANTEEN_STAFF, "食堂工作人员", Scope.CANTEEN),
    RoleSpec(Role.COMMUNITY_STAFF, "社区工作人员", Scope.COMMUNITY, sees_residents=True,
             sees_sensitive=True, verifies=True, grants=_FRONTLINE),
    RoleSpec(Role.SUBDISTRICT_STAFF, "街道工作人员", Scope.SUB_DISTRICT, sees_residents=True,
             sees_sensitive=True, verifies=True,
             grants=_FRONTLINE | {Role.DEPARTMENT, Role.COMMUNITY_STAFF}),
    # The admin runs the service: grants any role, sees records, but not the sensitive fields.
    RoleSpec(Role.ADMIN, "系统管理员", Scope.GLOBAL, sees_residents=True,
             grants=_FRONTLINE | {Role.DEPARTMENT, Role.COMMUNITY_STAFF, Role.SUBDISTRICT_STAFF, Role.ADMIN}),
]}

# Roles that can be granted (resident is what everyone is).
GRANTABLE = tuple(code for code in ROLES if code != Role.RESIDENT)


@dataclass(frozen=True)
class Place:
    """Where a scope or a resident sits: the ids of every level above it (None when unknown)."""

    sub_district_id: int | None = None
    community_id: int | None = None
    grid_id: int | None = None

    def within(self, role: StaffRole) -> bool:
        """Whether this place lies inside the role's scope."""
        kind = role.scope_kind
        if kind == Scope.GLOBAL:
            return True
        if kind == Scope.SUB_DISTRICT:
            return self.sub_district_id is not None and self.sub_district_id == role.sub_district_id  # type: ignore[attr-defined]
        if kind in (Scope.COMMUNITY, Scope.CANTEEN, Scope.SHOP):
            # canteen and shop roles are places inside a community, but see nothing beyond them
            return kind == Scope.COMMUNITY and self.community_id is not None and \
                self.community_id == role.community_id  # type: ignore[attr-defined]
        if kind == Scope.GRID:
            return self.grid_id is not None and self.grid_id == role.grid_id  # type: ignore[attr-defined]
        return False


class StaffRole(Model):
    """One grant of a role to a resident, in a scope. Revoked grants stay, stamped."""

    _no_comments = True  # see models/__init__.py

    id = fields.IntField(primary_key=True)
    resident: fields.ForeignKeyRelation[Resident] = fields.ForeignKeyField(
        "linli.Resident", related_name="roles", on_delete=fields.CASCADE
    )
    role = fields.CharField(max_length=32)
    scope_kind = fields.CharField(max_length=16, default=Scope.COMMUNITY, db_default=Scope.COMMUNITY)
    scope_id = fields.IntField(null=True)
    # the places above the scope, copied at grant time so scope checks need no joins
    sub_district: fields.ForeignKeyNullableRelation[SubDistrict] = fields.ForeignKeyField(
        "linli.SubDistrict", related_name="staff", null=True, on_delete=fields.CASCADE
    )
    community: fields.ForeignKeyNullableRelation[Community] = fields.ForeignKeyField(
        "linli.Community", related_name="staff", null=True, on_delete=fields.CASCADE
    )
    grid: fields.ForeignKeyNullableRelation[Grid] = fields.ForeignKeyField(
        "linli.Grid", related_name="staff", null=True, on_delete=fields.CASCADE
    )
    granted_by: fields.ForeignKeyNullableRelation[Resident] = fields.ForeignKeyField(
        "linli.Resident", related_name="grants_made", null=True, on_delete=fields.SET_NULL
    )
    granted_by_label = fields.CharField(max_length=64, default="", db_default="")
    granted_at = fields.DatetimeField(null=True)  # null only for grants made before it was recorded
    revoked_at = fields.DatetimeField(null=True)
    revoked_by: fields.ForeignKeyNullableRelation[Resident] = fields.ForeignKeyField(
        "linli.Resident", related_name="grants_revoked", null=True, on_delete=fields.SET_NULL
    )
    revoked_by_label = fields.CharField(max_length=64, default="", db_default="")

    class Meta:
        table = "staff_role"
        indexes = (("resident_id", "revoked_at"), ("role", "grid_id"), ("role", "community_id"))

    @property
    def spec(self) -> RoleSpec:
        return ROLES[self.role]

    def place(self) -> Place:
        return Place(self.sub_district_id, self.community_id, self.grid_id)  # type: ignore[attr-defined]


async def active_roles(resident_id: int) -> list[StaffRole]:
    return await StaffRole.filter(resident_id=resident_id, revoked_at=None).order_by("id")


async def role_codes(resident_id: int) -> set[str]:
    codes = await StaffRole.filter(resident_id=resident_id, revoked_at=None).values_list("role", flat=True)
    return {str(code) for code in codes}


async def scope_place(kind: str, scope_id: int | None) -> tuple[Place, str]:
    """The place a scope stands for and its name; NotFound when the scope does not exist."""
    if kind == Scope.GLOBAL:
        return Place(), "全部"
    if scope_id is None:
        raise UserFacingError(f"请指定{SCOPE_LABELS.get(kind, kind)}。")
    if kind == Scope.GRID:
        grid = await Grid.get_or_none(id=scope_id).prefetch_related("community")
        if grid:
            return Place(grid.community.sub_district_id, grid.community_id, grid.id), grid.name  # type: ignore[attr-defined]
    elif kind == Scope.COMMUNITY:
        community = await Community.get_or_none(id=scope_id)
        if community:
            return Place(community.sub_district_id, community.id), community.name  # type: ignore[attr-defined]
    elif kind == Scope.SUB_DISTRICT:
        sub = await SubDistrict.get_or_none(id=scope_id)
        if sub:
            return Place(sub.id), sub.name
    elif kind in (Scope.CANTEEN, Scope.SHOP):
        model = Canteen if kind == Scope.CANTEEN else Shop
        place = await model.get_or_none(id=scope_id).prefetch_related("community")
        if place:
            return Place(place.community.sub_district_id, place.community.id), place.name  # type: ignore[attr-defined]
    elif kind == Scope.DEPARTMENT:
        dept = await Department.get_or_none(id=scope_id)
        if dept:
            return Place(dept.sub_district_id), dept.name  # type: ignore[attr-defined]
    raise NotFound(f"没有找到这个{SCOPE_LABELS.get(kind, kind)}。")


async def resident_place(resident: Resident) -> Place:
    """Where a resident lives, for scope checks."""
    grid_id: Any = None
    if resident.building_id is not None:  # type: ignore[attr-defined]
        grid_id = await Building.filter(id=resident.building_id).first().values_list("grid_id", flat=True)  # type: ignore[attr-defined]
    sub_id: Any = await Community.filter(id=resident.community_id).first().values_list(  # type: ignore[attr-defined]
        "sub_district_id", flat=True)
    return Place(sub_id, resident.community_id, grid_id)  # type: ignore[attr-defined]


def _place_covers(role: StaffRole, place: Place) -> bool:
    """Whether a grant place (of any kind) lies inside the role's scope, for granting."""
    kind = role.scope_kind
    if kind == Scope.GLOBAL:
        return True
    if kind == Scope.SUB_DISTRICT:
        return place.sub_district_id == role.sub_district_id  # type: ignore[attr-defined]
    if kind == Scope.COMMUNITY:
        return place.community_id is not None and place.community_id == role.community_id  # type: ignore[attr-defined]
    return False


async def staff_access(actor_id: int, resident: Resident, *, sensitive: bool = False) -> StaffRole | None:
    """The actor's role that lets them open this resident's record (and sensitive fields), if any."""
    roles = [r for r in await active_roles(actor_id)
             if r.spec.sees_residents and (r.spec.sees_sensitive or not sensitive)]
    if not roles:
        return None
    place = await resident_place(resident)
    for role in roles:
        if place.within(role):
            return role
    return None


async def may_verify(actor_id: int, resident: Resident) -> bool:
    """Whether the actor may verify this resident's facts and carry out their deletion request:
    staff of their place, and never for themselves (their own statuses or erasure need a colleague)."""
    if actor_id == resident.id:
        return False
    place = await resident_place(resident)
    return any(r.spec.verifies and place.within(r) for r in await active_roles(actor_id))


async def granting_role(actor_id: int, role: str, place: Place) -> StaffRole | None:
    for mine in await active_roles(actor_id):
        if role in mine.spec.grants and _place_covers(mine, place):
            return mine
    return None


async def grant(
    *, resident_id: int, role: str, scope_id: int | None, now: datetime,
    by: Resident | None = None, by_label: str = "",
) -> tuple[StaffRole, bool]:
    """Grant a role (``by`` None = the command line); returns (grant, created). Twice is one grant."""
    spec = ROLES.get(role)
    if spec is None or role == Role.RESIDENT:
        raise UserFacingError(f"没有这个角色：{role}")
    place, _ = await scope_place(spec.scope, None if spec.scope == Scope.GLOBAL else scope_id)
    if by is not None and await granting_role(by.id, role, place) is None:
        raise Forbidden("您没有在这个范围内授予该角色的权限。")
    async with in_transaction():
        existing = await StaffRole.select_for_update().filter(
            resident_id=resident_id, role=role, scope_kind=spec.scope,
            scope_id=None if spec.scope == Scope.GLOBAL else scope_id, revoked_at=None,
        ).first()
        if existing is not None:
            return existing, False
        created = await StaffRole.create(
            resident_id=resident_id, role=role, scope_kind=spec.scope,
            scope_id=None if spec.scope == Scope.GLOBAL else scope_id,
            sub_district_id=place.sub_district_id, community_id=place.community_id, grid_id=place.grid_id,
            granted_by=by, granted_by_label=by_label[:64], granted_at=now,
        )
        return created, True


async def revoke(*, grant_id: int, now: datetime, by: Resident | None = None, by_label: str = "") -> StaffRole:
    """Revoke a grant; revoking twice changes nothing the second time."""
    async with in_transaction():
        row = await StaffRole.select_for_update().get_or_none(id=grant_id)
        if row is None:
            raise NotFound("没有找到这项授权。")
        if by is not None and await granting_role(by.id, row.role, row.place()) is None:
            raise NotFound("没有找到这项授权。")
        if row.revoked_at is None:
            row.revoked_at = now
            row.revoked_by = by
            row.revoked_by_label = by_label[:64]
            await row.save(update_fields=["revoked_at", "revoked_by_id", "revoked_by_label"])
        return row


class WechatTag(Model):
    """A user tag created on the official account (one per role), for the conditional menus."""

    _no_comments = True  # see models/__init__.py

    id = fields.IntField(primary_key=True)
    name = fields.CharField(max_length=30, unique=True)
    tag_id = fields.IntField()

    class Meta:
        table = "wechat_tag"
