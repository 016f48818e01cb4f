"""Volunteer activities: publishing, sign-up, check-in and confirmed hours that earn points.

An organiser publishes an activity with its slots and the community's rate for its type (frozen
on the activity). Volunteers sign up within the slots and may withdraw before the start. At the
activity they check in by scanning its QR code, typing its short code, or being ticked by the
organiser. Hours become points at the activity's rate once confirmed; hours a volunteer declares
stay pending until the organiser confirms or rejects them with a reason.
"""

from __future__ import annotations

import contextlib
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Protocol, cast
from zoneinfo import ZoneInfo

from tortoise import fields
from tortoise.expressions import Q
from tortoise.functions import Count
from tortoise.models import Model
from tortoise.transactions import in_transaction

from models.errors import Forbidden, NotFound, UserFacingError
from models.jobs import cancel_actions, register_action, schedule_action
from models.ledger import AccountKind, Asset, Source, account, points_of, transfer
from models.love_bank import TYPES_BY_CODE, settings_of
from models.places import Community
from models.push import push_text
from models.residents import Resident
from models.roles import Role, StaffRole, active_roles


class ActivityStatus:
    OPEN = "open"
    CANCELLED = "cancelled"


class SignupStatus:
    SIGNED = "signed"
    WITHDRAWN = "withdrawn"


class HoursStatus:
    NONE = "none"  # nothing to confirm yet
    PENDING = "pending"  # declared by the volunteer, waiting for the organiser
    CONFIRMED = "confirmed"  # points credited
    REJECTED = "rejected"


class CheckIn:
    QR = "qr"
    CODE = "code"
    LIST = "list"  # ticked by the organiser


class Activity(Model):
    """A published volunteer activity of a community."""

    _no_comments = True  # see models/__init__.py

    id = fields.IntField(primary_key=True)
    community: fields.ForeignKeyRelation = fields.ForeignKeyField(
        "linli.Community", related_name=False, on_delete=fields.RESTRICT)
    organiser: fields.ForeignKeyRelation = fields.ForeignKeyField(
        "linli.Resident", related_name=False, on_delete=fields.RESTRICT)
    title = fields.CharField(max_length=40)
    description = fields.CharField(max_length=300, default="")
    kind = fields.CharField(max_length=16)  # an activity type code (models.love_bank)
    place = fields.CharField(max_length=60)
    starts_at = fields.DatetimeField()
    ends_at = fields.DatetimeField()
    slots = fields.IntField()
    points_per_hour = fields.IntField()  # the community's rate when published
    status = fields.CharField(max_length=12, default=ActivityStatus.OPEN)
    checkin_code = fields.CharField(max_length=8)  # typed by those who cannot scan
    qr_ticket = fields.CharField(max_length=200, default="")  # the temporary QR code's ticket
    qr_expires_at = fields.DatetimeField(null=True)
    created_at = fields.DatetimeField()
    cancelled_at = fields.DatetimeField(null=True)
    cancel_reason = fields.CharField(max_length=200, default="")

    community_id: int
    organiser_id: int

    class Meta:
        table = "activity"
        indexes = (("community_id", "starts_at"),)


class Signup(Model):
    """A volunteer's place on an activity, their check-in and their hours."""

    _no_comments = True  # see models/__init__.py

    id = fields.IntField(primary_key=True)
    activity: fields.ForeignKeyRelation[Activity] = fields.ForeignKeyField(
        "linli.Activity", related_name="signups", on_delete=fields.RESTRICT)
    resident: fields.ForeignKeyRelation = fields.ForeignKeyField(
        "linli.Resident", related_name=False, on_delete=fields.RESTRICT)
    status = fields.CharField(max_length=12, default=SignupStatus.SIGNED)
    signed_at = fields.DatetimeField()
    withdrawn_at = fields.DatetimeField(null=True)
    checked_in_at = fields.DatetimeField(null=True)
    checked_in_by = fields.CharField(max_length=8, default="")  # qr | code | list
    minutes = fields.IntField(null=True)  # hours served, in minutes
    hours_status = fields.CharField(max_length=12, default=HoursStatus.NONE)
    hours_note = fields.CharField(max_length=200, default="")  # the volunteer's note or the rejection reason
    reviewed_by: fields.ForeignKeyNullableRelation = fields.ForeignKeyField(
        "linli.Resident", related_name=False, null=True, on_delete=fields.RESTRICT)
    reviewed_at = fields.DatetimeField(null=True)
    entry: fields.ForeignKeyNullableRelation = fields.ForeignKeyField(
        "linli.Entry", related_name=False, null=True, on_delete=fields.RESTRICT)

    activity_id: int
    resident_id: int
    entry_id: int | None

    class Meta:
        table = "activity_signup"
        unique_together = (("activity_id", "resident_id"),)
        indexes = (("resident_id", "status"),)  # 我的活动


# ---------------------------------------------------------------------------- rules

TITLE_MAX = 40
DESCRIPTION_MAX = 300
PLACE_MAX = 60
SLOTS_MAX = 500
NOTE_MAX = 200  # a volunteer's note on declared hours, or an organiser's reason
SPAN_MAX = timedelta(hours=12)
AHEAD_MAX = timedelta(days=365)  # an activity is published at most a year ahead
CHECKIN_EARLY = timedelta(minutes=30)  # check-in opens this long before the start and closes at the end
DECLARE_EXTRA_MINUTES = 4 * 60  # declared hours may exceed the activity's span by this much
DECLARE_DAYS = 14  # hours may be declared until this many days after the end
RECENT_DAYS = 14  # how long after its end an activity still shows in 我的活动 and to its organiser
QR_MAX_SECONDS = 30 * 24 * 3600  # WeChat's longest temporary QR code
QR_AFTER_END = timedelta(hours=1)  # a check-in code stays scannable this long after the end (then says so)
QR_REUSE_MIN = timedelta(days=1)  # a stored code is reused while it covers the activity or another day

MANAGERS = (Role.ORGANISER, Role.COMMUNITY_STAFF)
SETTLE_ACTION = "activity.settle"
SCENE_PREFIX = "checkin:"
_SCENE = re.compile(r"checkin:(\d{1,10}):(\d{6})")
_CODE = re.compile(r"\d{6}")

STATUS_LABELS = {ActivityStatus.OPEN: "报名中", ActivityStatus.CANCELLED: "已取消"}
HOURS_LABELS = {HoursStatus.NONE: "未确认", HoursStatus.PENDING: "待组织者确认", HoursStatus.CONFIRMED: "已确认",
                HoursStatus.REJECTED: "未通过"}
CHECKIN_LABELS = {CheckIn.QR: "扫码签到", CheckIn.CODE: "签到码签到", CheckIn.LIST: "组织者点名"}


def points_for(minutes: int, rate: int) -> int:
    """Points for ``minutes`` of service at ``rate`` points per hour, rounded half up to a whole point
    (e.g. 100 minutes at 5 points per hour is 8.33, so 8 points, and 90 minutes at 5 is 7.5, so 8)."""
    return (minutes * rate + 30) // 60


def span_minutes(activity: Activity) -> int:
    return int((activity.ends_at - activity.starts_at).total_seconds() // 60)


def hours_text(minutes: int) -> str:
    """90 → 1小时30分钟."""
    hours, rest = divmod(minutes, 60)
    if not hours:
        return f"{rest}分钟"
    return f"{hours}小时" + (f"{rest}分钟" if rest else "")


def when_text(activity: Activity, tz: ZoneInfo) -> str:
    """'12月5日（周六）09:00-11:30' in the community's time."""
    start, end = activity.starts_at.astimezone(tz), activity.ends_at.astimezone(tz)
    day = f"{start.month}月{start.day}日（周{WEEKDAYS[start.weekday()]}）"
    return f"{day}{start:%H:%M}-{end:%H:%M}"


WEEKDAYS = "一二三四五六日"


def kind_label(kind: str) -> str:
    found = TYPES_BY_CODE.get(kind)
    return found.label if found else kind


def parse_minutes(text: str) -> int:
    """'2小时', '1.5小时', '1小时30分钟', '90分钟', '2h' → minutes; a bare number is refused (hours or minutes?)."""
    t = text.strip().lower().replace(" ", "").replace("个", "").replace("钟", "")
    t = t.replace("hours", "小时").replace("hour", "小时").replace("h", "小时")
    t = t.replace("minutes", "分").replace("min", "分").replace("m", "分")
    match = re.fullmatch(r"(?:(\d{1,2}(?:\.\d{1,2})?)(?:小时|时))?(?:(\d{1,4})分?)?", t)
    if not t or match is None or (match.group(1) is None and not t.endswith("分")):
        raise UserFacingError("没看懂时长，请写上单位，例如：2小时、1小时30分钟或90分钟。")
    hours = float(match.group(1) or 0)
    minutes = int(match.group(2) or 0)
    return round(hours * 60) + minutes


_WHEN = re.compile(
    r"(?:(?:(\d{4})[-/年.])?(\d{1,2})[-/月.](\d{1,2})日?|(今天|明天|后天))"
    r"(\d{1,2})[:：](\d{2})[-–—~～至到](\d{1,2})[:：](\d{2})")
_RELATIVE = {"今天": 0, "明天": 1, "后天": 2}
ROLLOVER = timedelta(days=60)  # a date without a year that passed longer ago than this is next year's


def parse_when(text: str, today: date) -> tuple[date, str, str]:
    """'12月5日 09:00-11:30', '2026-12-05 9:00-11:30' or '明天 14:00-16:00' → (day, 'HH:MM', 'HH:MM').
    A date without a year that passed more than two months ago is next year's (a recent one stays, and is
    refused as past)."""
    t = re.sub(r"\s+", "", text)
    match = _WHEN.fullmatch(t)
    if match is None:
        raise UserFacingError("没看懂活动时间，请按“12月5日 09:00-11:30”的格式输入。")
    year, month, day_, relative, h1, m1, h2, m2 = match.groups()
    if relative:
        day = today + timedelta(days=_RELATIVE[relative])
    else:
        if year and not today.year - 1 <= int(year) <= today.year + 1:
            raise UserFacingError(f"年份不对：{year}年。")
        try:
            day = date(int(year) if year else today.year, int(month), int(day_))
        except ValueError:
            raise UserFacingError("没有这一天，请检查日期。") from None
        if not year and day < today - ROLLOVER:  # "1月3日" typed in December: next year's
            with contextlib.suppress(ValueError):
                day = day.replace(year=today.year + 1)
    starts, ends = f"{int(h1):02d}:{m1}", f"{int(h2):02d}:{m2}"
    for hhmm in (starts, ends):
        if int(hhmm[:2]) > 23 or int(hhmm[3:]) > 59:
            raise UserFacingError(f"没有{hhmm}这个时间，请检查。")
    return day, starts, ends


def local_span(day: date, starts: str, ends: str, tz: ZoneInfo) -> tuple[datetime, datetime]:
    """The UTC start and end of an activity held on ``day`` from ``starts`` to ``ends`` (HH:MM, community time)."""
    def at(hhmm: str) -> datetime:
        hour, minute = int(hhmm[:2]), int(hhmm[3:5])
        if hour > 23 or minute > 59:
            raise UserFacingError(f"没有{hhmm}这个时间，请检查。")
        return datetime.combine(day, time(hour, minute), tzinfo=tz).astimezone(UTC)

    return at(starts), at(ends)


# ---------------------------------------------------------------------------- who manages what


async def manager_roles(actor_id: int) -> list[StaffRole]:
    """The actor's organiser and community-staff grants (each scoped to a community)."""
    return [r for r in await active_roles(actor_id) if r.role in MANAGERS and r.community_id is not None]  # type: ignore[attr-defined]


async def publishing_communities(actor_id: int) -> list[tuple[int, str]]:
    """(id, name) of the communities the actor may publish activities in."""
    ids = sorted({r.community_id for r in await manager_roles(actor_id)})  # type: ignore[attr-defined]
    names = dict(await Community.filter(id__in=ids).values_list("id", "name"))
    return [(cid, str(names[cid])) for cid in ids if cid in names]


def _manages(roles: list[StaffRole], actor_id: int, activity: Activity) -> bool:
    """Community staff manage every activity of their community, an organiser the ones they published."""
    for role in roles:
        if role.community_id != activity.community_id:  # type: ignore[attr-defined]
            continue
        if role.role == Role.COMMUNITY_STAFF or activity.organiser_id == actor_id:
            return True
    return False


async def may_manage(actor_id: int, activity: Activity) -> bool:
    return _manages(await manager_roles(actor_id), actor_id, activity)


async def managed(activity_id: int, actor_id: int) -> Activity:
    """The activity if the actor manages it; NotFound otherwise (as if it did not exist)."""
    activity = await Activity.get_or_none(id=activity_id)
    if activity is None or not await may_manage(actor_id, activity):
        raise NotFound("没有找到这个活动。")
    return activity


async def managed_activities(actor_id: int, now: datetime, *, live_only: bool = False,
                             limit: int = 50) -> list[Activity]:
    """The activities the actor manages that are coming, running or recently ended (``live_only``:
    not ended and not cancelled), soonest first."""
    roles = await manager_roles(actor_id)
    staff = {r.community_id for r in roles if r.role == Role.COMMUNITY_STAFF}  # type: ignore[attr-defined]
    organiser = {r.community_id for r in roles if r.role == Role.ORGANISER}  # type: ignore[attr-defined]
    if not staff and not organiser:
        return []
    mine = Q(community_id__in=list(staff)) | Q(community_id__in=list(organiser), organiser_id=actor_id)
    query = Activity.filter(mine)
    if live_only:
        query = query.filter(ends_at__gt=now, status=ActivityStatus.OPEN)
    else:
        query = query.filter(ends_at__gt=now - timedelta(days=RECENT_DAYS))
    return list(await query.order_by("starts_at", "id").limit(limit))


async def visible(activity_id: int, viewer: Resident) -> Activity:
    """The activity if the viewer lives in its community or manages it; NotFound otherwise."""
    activity = await Activity.get_or_none(id=activity_id)
    if activity is None:
        raise NotFound("没有找到这个活动。")
    if activity.community_id == viewer.community_id or await may_manage(viewer.id, activity):  # type: ignore[attr-defined]
        return activity
    raise NotFound("没有找到这个活动。")


# ---------------------------------------------------------------------------- publishing and cancelling


def _text(value: str, label: str, limit: int, *, required: bool = True) -> str:
    value = value.strip()
    if required and not value:
        raise UserFacingError(f"请填写{label}。")
    if len(value) > limit:
        raise UserFacingError(f"{label}最多{limit}个字。")
    return value


async def publish(
    *, community_id: int, organiser_id: int, title: str, kind: str, place: str, starts_at: datetime,
    ends_at: datetime, slots: int, now: datetime, description: str = "",
) -> Activity:
    """Publish an activity at the community's current rate for its type (frozen on the activity)
    with a fresh 6-digit check-in code; its hours are settled by a due action at its end."""
    if community_id not in {cid for cid, _ in await publishing_communities(organiser_id)}:
        raise Forbidden("您没有在这个社区发布活动的权限。")
    title = _text(title, "活动名称", TITLE_MAX)
    place = _text(place, "活动地点", PLACE_MAX)
    description = _text(description, "活动说明", DESCRIPTION_MAX, required=False)
    if kind not in TYPES_BY_CODE:
        raise UserFacingError("没有这种活动类型。")
    if isinstance(slots, bool) or not 1 <= slots <= SLOTS_MAX:
        raise UserFacingError(f"名额要在1到{SLOTS_MAX}之间。")
    check_times(starts_at, ends_at, now)
    rate = (await settings_of(community_id)).rate(kind)
    async with in_transaction():
        activity = await Activity.create(
            community_id=community_id, organiser_id=organiser_id, title=title, description=description, kind=kind,
            place=place, starts_at=starts_at, ends_at=ends_at, slots=slots, points_per_hour=rate,
            checkin_code=f"{secrets.randbelow(10**6):06d}", created_at=now)
        await schedule_action(SETTLE_ACTION, _target(activity.id), ends_at, now)
    return activity


def check_times(starts_at: datetime, ends_at: datetime, now: datetime) -> None:
    """An activity starts later than now (at most a year ahead), ends after it starts, lasts at most 12 hours."""
    if starts_at <= now:
        raise UserFacingError("活动开始时间已经过了，请选以后的时间。")
    if starts_at - now > AHEAD_MAX:
        raise UserFacingError("活动最多提前一年发布。")
    if ends_at <= starts_at:
        raise UserFacingError("结束时间要晚于开始时间。")
    if ends_at - starts_at > SPAN_MAX:
        raise UserFacingError("一次活动最长12小时，更长的请分成几次发布。")


def _target(activity_id: int) -> str:
    return f"activity:{activity_id}"


async def cancel(activity_id: int, actor_id: int, reason: str, now: datetime, tz: ZoneInfo) -> Activity:
    """Cancel an activity before it starts, with a reason; everyone signed up is told. Twice is once."""
    reason = _text(reason, "取消原因", NOTE_MAX)
    await managed(activity_id, actor_id)
    async with in_transaction():
        activity = await Activity.select_for_update().get(id=activity_id)
        if activity.status == ActivityStatus.CANCELLED:
            return activity
        if now >= activity.starts_at:
            raise UserFacingError("活动已经开始，不能取消了。")
        activity.status, activity.cancelled_at, activity.cancel_reason = ActivityStatus.CANCELLED, now, reason
        await activity.save(update_fields=["status", "cancelled_at", "cancel_reason"])
        await cancel_actions(SETTLE_ACTION, _target(activity.id))
        volunteers = await Signup.filter(activity_id=activity.id, status=SignupStatus.SIGNED).values_list(
            "resident_id", flat=True)
        await push_text([int(cast(int, v)) for v in volunteers],
                        f"您报名的活动“{activity.title}”（{when_text(activity, tz)}）已取消。原因：{reason}",
                        f"activity:{activity.id}:cancelled", now)
    return activity


# ---------------------------------------------------------------------------- listing


async def taken_counts(activity_ids: list[int]) -> dict[int, int]:
    """Places taken (signed up, not withdrawn) per activity."""
    if not activity_ids:
        return {}
    rows = await Signup.filter(activity_id__in=activity_ids, status=SignupStatus.SIGNED).annotate(
        n=Count("id")).group_by("activity_id").values_list("activity_id", "n")
    return {int(cast(int, a)): int(cast(int, n)) for a, n in rows}


async def open_activities(community_id: int, now: datetime, *, limit: int = 20) -> list[tuple[Activity, int]]:
    """The community's open activities that have not started and have places left, soonest first,
    each with the places taken."""
    found = await Activity.filter(community_id=community_id, status=ActivityStatus.OPEN, starts_at__gt=now).order_by(
        "starts_at", "id").limit(200)
    taken = await taken_counts([a.id for a in found])
    return [(a, taken.get(a.id, 0)) for a in found if taken.get(a.id, 0) < a.slots][:limit]


async def signups_of(resident_id: int, now: datetime, *, limit: int = 20) -> list[Signup]:
    """The resident's places on activities that are coming or ended in the last RECENT_DAYS days,
    soonest first (with ``activity`` loaded)."""
    return list(await Signup.filter(
        resident_id=resident_id, status=SignupStatus.SIGNED,
        activity__ends_at__gt=now - timedelta(days=RECENT_DAYS),
    ).prefetch_related("activity").order_by("activity__starts_at", "id").limit(limit))


async def signup_list(activity_id: int, actor_id: int) -> tuple[Activity, list[Signup]]:
    """Who signed up (and withdrew), for whoever manages the activity (with ``resident`` loaded)."""
    activity = await managed(activity_id, actor_id)
    rows = await Signup.filter(activity_id=activity.id).prefetch_related("resident").order_by("id")
    return activity, list(rows)


async def pending_declarations(actor_id: int, now: datetime, *, activity_id: int | None = None,
                               limit: int = 20) -> list[Signup]:
    """Hours declared and waiting, on the activities the actor manages, oldest first (with
    ``activity`` and ``resident`` loaded)."""
    roles = await manager_roles(actor_id)
    staff = [r.community_id for r in roles if r.role == Role.COMMUNITY_STAFF]  # type: ignore[attr-defined]
    organiser = [r.community_id for r in roles if r.role == Role.ORGANISER]  # type: ignore[attr-defined]
    if not roles:
        return []
    query = Signup.filter(
        Q(activity__community_id__in=staff) | Q(activity__community_id__in=organiser, activity__organiser_id=actor_id),
        hours_status=HoursStatus.PENDING, status=SignupStatus.SIGNED)
    if activity_id is not None:
        query = query.filter(activity_id=activity_id)
    return list(await query.prefetch_related("activity", "resident").order_by("id").limit(limit))


# ---------------------------------------------------------------------------- signing up


async def sign_up(activity_id: int, resident: Resident, now: datetime) -> tuple[Signup, bool]:
    """A place on an activity of the resident's community before its start, within its slots; and
    whether it is new. Signing up twice is one place. The activity's row is locked while places are
    counted, so concurrent sign-ups never exceed the slots."""
    async with in_transaction():
        activity = await Activity.select_for_update().get_or_none(id=activity_id)
        if activity is None or activity.community_id != resident.community_id:  # type: ignore[attr-defined]
            raise NotFound("没有找到这个活动。")
        existing = await Signup.get_or_none(activity_id=activity.id, resident_id=resident.id)
        if existing is not None and existing.status == SignupStatus.SIGNED:
            return existing, False
        if activity.status == ActivityStatus.CANCELLED:
            raise UserFacingError("这个活动已经取消了。")
        if now >= activity.starts_at:
            raise UserFacingError("活动已经开始，不能再报名了。")
        taken = await Signup.filter(activity_id=activity.id, status=SignupStatus.SIGNED).count()
        if taken >= activity.slots:
            raise UserFacingError(f"“{activity.title}”的{activity.slots}个名额已经报满了。")
        if existing is not None:  # withdrew earlier and comes back
            existing.status, existing.signed_at, existing.withdrawn_at = SignupStatus.SIGNED, now, None
            await existing.save(update_fields=["status", "signed_at", "withdrawn_at"])
            return existing, True
        return await Signup.create(activity_id=activity.id, resident_id=resident.id, signed_at=now), True


async def withdraw(activity_id: int, resident_id: int, now: datetime) -> Signup:
    """Give the place back before the start (and before checking in). Twice is once."""
    async with in_transaction():
        activity = await Activity.select_for_update().get_or_none(id=activity_id)
        signup = None if activity is None else await Signup.get_or_none(activity_id=activity_id,
                                                                          resident_id=resident_id)
        if activity is None or signup is None:
            raise NotFound("您没有报名这个活动。")
        if signup.status == SignupStatus.WITHDRAWN:
            return signup
        if activity.status == ActivityStatus.OPEN and now >= activity.starts_at:
            raise UserFacingError("活动已经开始，不能退出报名了。")
        if signup.checked_in_at is not None:
            raise UserFacingError("您已经签到了，不能退出报名。")
        signup.status, signup.withdrawn_at = SignupStatus.WITHDRAWN, now
        await signup.save(update_fields=["status", "withdrawn_at"])
        return signup


# ---------------------------------------------------------------------------- check-in


def scene_of(activity: Activity) -> str:
    """What the activity's check-in QR code carries (at most 64 characters, WeChat's limit)."""
    return f"{SCENE_PREFIX}{activity.id}:{activity.checkin_code}"


class QrMaker(Protocol):
    """Makes WeChat parametric QR codes (bot.wxclient.WeChatClient)."""

    async def qrcode(self, scene: str, *, expire_seconds: int | None = None) -> dict[str, Any]: ...


async def checkin_ticket(activity_id: int, actor_id: int, maker: QrMaker, now: datetime) -> tuple[Activity, str]:
    """The ticket of the activity's temporary check-in QR code: the stored one while it still covers
    the activity (or another day), else a new one valid until an hour after the end (at most 30 days)."""
    activity = await managed(activity_id, actor_id)
    if activity.status == ActivityStatus.CANCELLED:
        raise UserFacingError("这个活动已经取消了。")
    if now >= activity.ends_at:
        raise UserFacingError("活动已经结束，不需要签到码了。")
    stored, expires = activity.qr_ticket, activity.qr_expires_at
    if stored and expires is not None and (expires >= activity.ends_at or expires - now >= QR_REUSE_MIN):
        return activity, stored
    seconds = int(min((activity.ends_at + QR_AFTER_END - now).total_seconds(), QR_MAX_SECONDS))
    answer = await maker.qrcode(scene_of(activity), expire_seconds=seconds)
    ticket = str(answer["ticket"])
    valid = now + timedelta(seconds=int(answer.get("expire_seconds") or seconds))
    # A second request at the same moment may have stored its own code: keep the first, so every
    # printout of the activity shows the same one.
    if not await Activity.filter(id=activity.id, qr_ticket=stored).update(qr_ticket=ticket, qr_expires_at=valid):
        await activity.refresh_from_db(fields=["qr_ticket", "qr_expires_at"])
        return activity, activity.qr_ticket
    activity.qr_ticket, activity.qr_expires_at = ticket, valid
    return activity, ticket


@dataclass(frozen=True)
class CheckedIn:
    activity: Activity
    signup: Signup
    new: bool  # False when the volunteer had checked in already
    credited: int | None  # points credited at once (a check-in after the end), else None


def _window(activity: Activity, now: datetime, tz: ZoneInfo) -> None:
    if activity.status == ActivityStatus.CANCELLED:
        raise UserFacingError(f"活动“{activity.title}”已经取消了。")
    if now < activity.starts_at - CHECKIN_EARLY:
        opens = (activity.starts_at - CHECKIN_EARLY).astimezone(tz)
        raise UserFacingError(f"“{activity.title}”还没到签到时间：{when_text(activity, tz)}，"
                              f"{opens:%H:%M}起可以签到。")
    if now > activity.ends_at:
        raise UserFacingError(f"“{activity.title}”已经结束，不能再签到了。如果您参加了，"
                              "可以在“我的活动”里申报服务时长，由组织者确认。")


async def check_in(activity_id: int, resident_id: int, code: str, how: str, now: datetime,
                   tz: ZoneInfo) -> CheckedIn:
    """Check a signed-up volunteer in with the activity's code, from 30 minutes before the start to
    the end. A wrong code, no sign-up or a time outside that window changes nothing."""
    activity = await Activity.get_or_none(id=activity_id)
    if activity is None or not secrets.compare_digest(activity.checkin_code, code):
        raise UserFacingError("签到码不对，请向活动组织者确认。")
    signup = await Signup.get_or_none(activity_id=activity.id, resident_id=resident_id,
                                      status=SignupStatus.SIGNED)
    if signup is None:
        raise UserFacingError(f"您没有报名“{activity.title}”，不能签到。回复“活动”可以查看和报名。")
    _window(activity, now, tz)
    if signup.checked_in_at is not None:
        return CheckedIn(activity, signup, False, None)
    if not await Signup.filter(id=signup.id, checked_in_at=None, status=SignupStatus.SIGNED).update(
            checked_in_at=now, checked_in_by=how):
        await signup.refresh_from_db()
        return CheckedIn(activity, signup, False, None)
    signup.checked_in_at, signup.checked_in_by = now, how
    credited = await _credit_if_ended(activity, signup.id, None, now)
    return CheckedIn(activity, await Signup.get(id=signup.id), True, credited)


async def check_in_scene(scene: str, resident_id: int, now: datetime, tz: ZoneInfo) -> CheckedIn:
    """A check-in through the activity's QR code (scene ``checkin:<id>:<code>``)."""
    match = _SCENE.fullmatch(scene.strip())
    if match is None:
        raise UserFacingError("这个签到二维码无法识别，请向活动组织者确认。")
    return await check_in(int(match.group(1)), resident_id, match.group(2), CheckIn.QR, now, tz)


async def check_in_by_code(code: str, resident_id: int, now: datetime, tz: ZoneInfo) -> CheckedIn:
    """A check-in with the typed code, among the activities the volunteer signed up for."""
    code = code.strip().translate(str.maketrans("０１２３４５６７８９", "0123456789"))
    if not _CODE.fullmatch(code):
        raise UserFacingError("签到码是6位数字，请向活动组织者要。")
    signups = await Signup.filter(resident_id=resident_id, status=SignupStatus.SIGNED,
                                  activity__checkin_code=code).prefetch_related("activity").order_by("-id")
    if not signups:
        raise UserFacingError("签到码不对，或者您没有报名这个活动。回复“我的活动”查看您报名的活动。")
    # the same code on two of the volunteer's activities (one in a million): the one open now
    chosen = next((s for s in signups if s.activity.starts_at - CHECKIN_EARLY <= now <= s.activity.ends_at),
                  signups[0])
    return await check_in(chosen.activity_id, resident_id, code, CheckIn.CODE, now, tz)


async def tick(activity_id: int, signup_id: int, actor_id: int, attended: bool, now: datetime) -> Signup:
    """The organiser marks a volunteer present (or, before their hours are confirmed, not present).
    After the end a tick credits the hours at once; before it the settlement at the end does."""
    activity = await managed(activity_id, actor_id)
    signup = await Signup.get_or_none(id=signup_id, activity_id=activity.id)
    if signup is None:
        raise NotFound("没有找到这个报名。")
    if signup.status != SignupStatus.SIGNED:
        raise UserFacingError("这位志愿者已经退出报名了。")
    if activity.status == ActivityStatus.CANCELLED:
        raise UserFacingError("这个活动已经取消了。")
    if now < activity.starts_at - CHECKIN_EARLY:
        raise UserFacingError("活动还没开始，开始前30分钟起才能点名。")
    if attended:
        await Signup.filter(id=signup.id, checked_in_at=None).update(checked_in_at=now, checked_in_by=CheckIn.LIST)
        await _credit_if_ended(activity, signup.id, actor_id, now)
    else:
        if signup.hours_status == HoursStatus.CONFIRMED:
            raise UserFacingError("这位志愿者的时长已经确认发放积分，不能取消签到。")
        await Signup.filter(id=signup.id).exclude(hours_status=HoursStatus.CONFIRMED).update(
            checked_in_at=None, checked_in_by="")
    return await Signup.get(id=signup.id)


# ---------------------------------------------------------------------------- hours and points


async def _credit_if_ended(activity: Activity, signup_id: int, actor_id: int | None, now: datetime) -> int | None:
    if now < activity.ends_at:
        return None
    return await credit(signup_id, span_minutes(activity), actor_id, now,
                        from_statuses=(HoursStatus.NONE, HoursStatus.REJECTED))


async def credit(signup_id: int, minutes: int, actor_id: int | None, now: datetime, *,
                 from_statuses: tuple[str, ...]) -> int | None:
    """Confirm a sign-up's hours and credit their points (ISSUING(community) → MEMBER, key
    ``signup:<id>:hours``), once: the sign-up's status moves to confirmed in the same transaction as
    the entry, and only from ``from_statuses``. The points credited, or None when nothing changed
    (confirmed already, or no longer in one of those states). The volunteer is told."""
    signup = await Signup.get(id=signup_id).prefetch_related("activity")
    activity: Activity = signup.activity
    points = points_for(minutes, activity.points_per_hour)
    issuing = await account(Asset.POINTS, AccountKind.ISSUING, activity.community_id, now)
    member = await points_of(signup.resident_id, now)
    async with in_transaction():
        claimed = await Signup.filter(id=signup.id, status=SignupStatus.SIGNED, hours_status__in=list(from_statuses)
                                      ).update(hours_status=HoursStatus.CONFIRMED, minutes=minutes,
                                               reviewed_by_id=actor_id, reviewed_at=now)
        if not claimed:
            return None
        if points > 0:
            posted = await transfer(from_account=issuing, to_account=member, amount=points, source=Source.ACTIVITY,
                                    key=f"signup:{signup.id}:hours", now=now, ref=_target(activity.id),
                                    memo=activity.title, actor_id=actor_id)
            await Signup.filter(id=signup.id).update(entry_id=posted.entry.id)
            earned = f"获得{points}积分。回复“积分”查看余额。"
        else:
            earned = "这次活动不计积分。"
        await push_text([signup.resident_id],
                        f"您参加“{activity.title}”的服务时长已确认：{hours_text(minutes)}，{earned}",
                        f"signup:{signup.id}:hours", now)
    return points


async def settle(activity_id: int, now: datetime) -> int:
    """At the end: credit the activity's span to every volunteer checked in whose hours are not
    confirmed or waiting on a declaration; how many were credited. Running it again changes nothing."""
    activity = await Activity.get_or_none(id=activity_id)
    if activity is None or activity.status == ActivityStatus.CANCELLED or now < activity.ends_at:
        return 0
    ids = await Signup.filter(activity_id=activity.id, status=SignupStatus.SIGNED, checked_in_at__isnull=False,
                              hours_status__in=[HoursStatus.NONE, HoursStatus.REJECTED]).values_list("id", flat=True)
    done = 0
    for signup_id in ids:
        if await credit(int(cast(int, signup_id)), span_minutes(activity), None, now,
                        from_statuses=(HoursStatus.NONE, HoursStatus.REJECTED)) is not None:
            done += 1
    return done


@register_action(SETTLE_ACTION)
async def _settle_due(target: str, now: datetime) -> None:
    await settle(int(target.removeprefix("activity:")), now)


def declare_cap(activity: Activity) -> int:
    return span_minutes(activity) + DECLARE_EXTRA_MINUTES


async def declare_hours(activity_id: int, resident_id: int, minutes: int, note: str, now: datetime) -> Signup:
    """A volunteer says how long they served (not checked in, or a different time), with a note; it
    waits for the organiser. Refused once the hours are confirmed. A second declaration replaces
    one still waiting (or one rejected)."""
    note = _text(note, "说明", NOTE_MAX)
    activity = await Activity.get_or_none(id=activity_id)
    if activity is None:
        raise NotFound("没有找到这个活动。")
    signup = await Signup.get_or_none(activity_id=activity_id, resident_id=resident_id, status=SignupStatus.SIGNED)
    if signup is None:
        raise UserFacingError(f"您没有报名“{activity.title}”，不能申报时长。")
    if activity.status == ActivityStatus.CANCELLED:
        raise UserFacingError("这个活动已经取消了。")
    if now < activity.starts_at:
        raise UserFacingError("活动开始后才能申报服务时长。")
    if now > activity.ends_at + timedelta(days=DECLARE_DAYS):
        raise UserFacingError(f"活动结束已超过{DECLARE_DAYS}天，不能再申报时长了。")
    if signup.hours_status == HoursStatus.CONFIRMED:
        raise UserFacingError("这次活动的时长已经确认，不能再申报。")
    cap = declare_cap(activity)
    if isinstance(minutes, bool) or not 1 <= minutes <= cap:
        raise UserFacingError(f"申报时长要在1分钟到{hours_text(cap)}之间。")
    if not await Signup.filter(id=signup.id).exclude(hours_status=HoursStatus.CONFIRMED).update(
            minutes=minutes, hours_status=HoursStatus.PENDING, hours_note=note, reviewed_by_id=None,
            reviewed_at=None):
        raise UserFacingError("这次活动的时长已经确认，不能再申报。")
    volunteer = await Resident.get(id=resident_id)
    await push_text([activity.organiser_id], f"{volunteer.name}申报了“{activity.title}”的服务时长"
                    f"{hours_text(minutes)}：{note}\n回复“待确认时长”确认或驳回。",
                    f"signup:{signup.id}:declared:{now.isoformat()}", now)
    return await Signup.get(id=signup.id)


async def review_hours(activity_id: int, signup_id: int, actor_id: int, approve: bool, now: datetime,
                       reason: str = "") -> Signup:
    """The organiser confirms declared hours (points credited at the activity's rate) or rejects them
    with a reason. A volunteer who was checked in still gets the activity's span after a rejection.
    Confirming twice is once."""
    activity = await managed(activity_id, actor_id)
    signup = await Signup.get_or_none(id=signup_id, activity_id=activity.id)
    if signup is None:
        raise NotFound("没有找到这个报名。")
    if approve:
        if signup.hours_status == HoursStatus.CONFIRMED:
            return signup
        if signup.hours_status != HoursStatus.PENDING or signup.minutes is None:
            raise UserFacingError("这位志愿者没有待确认的时长申报。")
        await credit(signup.id, signup.minutes, actor_id, now, from_statuses=(HoursStatus.PENDING,))
        return await Signup.get(id=signup.id)
    reason = _text(reason, "驳回原因", NOTE_MAX)
    if signup.hours_status != HoursStatus.PENDING:
        raise UserFacingError("这位志愿者没有待确认的时长申报。")
    if not await Signup.filter(id=signup.id, hours_status=HoursStatus.PENDING).update(
            hours_status=HoursStatus.REJECTED, hours_note=reason, reviewed_by_id=actor_id, reviewed_at=now):
        raise UserFacingError("这位志愿者没有待确认的时长申报。")
    after = "已按签到记录计算时长。" if signup.checked_in_at is not None else "如有疑问请联系组织者。"
    await push_text([signup.resident_id], f"您申报的“{activity.title}”服务时长没有通过。原因：{reason}。{after}",
                    f"signup:{signup.id}:rejected:{now.isoformat()}", now)
    if signup.checked_in_at is not None:
        await _credit_if_ended(activity, signup.id, actor_id, now)
    return await Signup.get(id=signup.id)
