"""爱心银行 settings: each community's points rates, micro-wish points and voucher warnings,
and each member's choice to be named in the rankings.

The rate of an activity type is points per hour of confirmed service; a published activity
keeps the rate it was published with (it is copied onto the activity), so a later change of
the community's rates never changes what an earlier activity pays.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from tortoise import fields
from tortoise.models import Model


@dataclass(frozen=True)
class ActivityType:
    code: str
    label: str
    points_per_hour: int  # the default rate, until a community sets its own


ACTIVITY_TYPES: tuple[ActivityType, ...] = (
    ActivityType("elder_care", "助老服务", 10),
    ActivityType("environment", "环境整治", 8),
    ActivityType("civility", "文明劝导", 8),
    ActivityType("culture", "文体活动", 5),
    ActivityType("party", "党员先锋", 10),
    ActivityType("other", "其他服务", 5),
)
TYPES_BY_CODE = {t.code: t for t in ACTIVITY_TYPES}
TYPES_BY_LABEL = {t.label: t for t in ACTIVITY_TYPES}

DEFAULT_WISH_POINTS = 10
DEFAULT_VOUCHER_WARN_DAYS = 3
MAX_RATE = 1000  # points per hour: a typo guard


class LoveBankSettings(Model):
    """One community's love-bank parameters, edited by its staff."""

    _no_comments = True  # see models/__init__.py

    id = fields.IntField(primary_key=True)
    community: fields.OneToOneRelation = fields.OneToOneField(
        "linli.Community", related_name=False, on_delete=fields.CASCADE)
    rates: dict[str, Any] = fields.JSONField(default=dict)  # activity type code to points per hour
    wish_points = fields.IntField(default=DEFAULT_WISH_POINTS)
    voucher_warn_days = fields.IntField(default=DEFAULT_VOUCHER_WARN_DAYS)
    updated_at = fields.DatetimeField()
    updated_by: fields.ForeignKeyNullableRelation = fields.ForeignKeyField(
        "linli.Resident", related_name=False, null=True, on_delete=fields.SET_NULL)

    community_id: int

    class Meta:
        table = "love_bank_settings"


class MemberPrefs(Model):
    """A member's love-bank choices: whether the figures may name them among top volunteers."""

    _no_comments = True  # see models/__init__.py

    id = fields.IntField(primary_key=True)
    resident: fields.OneToOneRelation = fields.OneToOneField(
        "linli.Resident", related_name=False, on_delete=fields.CASCADE)
    named_in_rankings = fields.BooleanField(default=False)
    updated_at = fields.DatetimeField()

    resident_id: int

    class Meta:
        table = "love_member"


@dataclass(frozen=True)
class Settings:
    community_id: int
    rates: dict[str, int]
    wish_points: int
    voucher_warn_days: int

    def rate(self, activity_type: str) -> int:
        return self.rates[activity_type]


async def settings_of(community_id: int) -> Settings:
    """The community's settings: its own values over the defaults."""
    row = await LoveBankSettings.get_or_none(community_id=community_id)
    rates = {t.code: t.points_per_hour for t in ACTIVITY_TYPES}
    if row is None:
        return Settings(community_id, rates, DEFAULT_WISH_POINTS, DEFAULT_VOUCHER_WARN_DAYS)
    rates.update({k: int(v) for k, v in row.rates.items() if k in TYPES_BY_CODE})
    return Settings(community_id, rates, row.wish_points, row.voucher_warn_days)


async def save_settings(
    community_id: int, *, now: datetime, actor_id: int | None, rates: dict[str, int] | None = None,
    wish_points: int | None = None, voucher_warn_days: int | None = None,
) -> Settings:
    """Change some of the community's settings (ValueError names a bad value)."""
    for code, value in (rates or {}).items():
        if code not in TYPES_BY_CODE:
            raise ValueError(f"unknown activity type {code}")
        if not 0 <= value <= MAX_RATE:
            raise ValueError(f"rate of {code} must be 0 to {MAX_RATE}")
    if wish_points is not None and not 0 <= wish_points <= MAX_RATE:
        raise ValueError(f"wish points must be 0 to {MAX_RATE}")
    if voucher_warn_days is not None and not 0 <= voucher_warn_days <= 30:
        raise ValueError("voucher warning days must be 0 to 30")
    row, _ = await LoveBankSettings.get_or_create(community_id=community_id, defaults={"updated_at": now})
    if rates:
        row.rates = {**row.rates, **rates}
    if wish_points is not None:
        row.wish_points = wish_points
    if voucher_warn_days is not None:
        row.voucher_warn_days = voucher_warn_days
    row.updated_at, row.updated_by_id = now, actor_id
    await row.save()
    return await settings_of(community_id)


async def named_in_rankings(resident_id: int) -> bool:
    row = await MemberPrefs.get_or_none(resident_id=resident_id)
    return bool(row and row.named_in_rankings)


async def set_named(resident_id: int, named: bool, now: datetime) -> None:
    row, created = await MemberPrefs.get_or_create(
        resident_id=resident_id, defaults={"named_in_rankings": named, "updated_at": now})
    if not created:
        row.named_in_rankings, row.updated_at = named, now
        await row.save(update_fields=["named_in_rankings", "updated_at"])
