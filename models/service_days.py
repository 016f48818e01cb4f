"""周五流动服务日: planned service days, residents' intents and the Thursday/Friday notices.

Staff plan a day (a Friday that is a working day) with its place, hours, staff on duty and the
items of the service package offered. At per-community times (default Thursday 18:00 for the
next day and Friday 08:00 for the same day) one notice per (community, Friday, slot) goes to the
community's residents, each asking which item the resident will come for (a pending prompt,
answered in chat by its number; 参加 asks the same at any time). The claim is a unique row, so
running the notice job twice, or on two schedulers, writes one notice. A holiday Friday gets a
Thursday notice that there is no service day, naming the next one.
"""

from __future__ import annotations

import logging
import re
from datetime import date, datetime, time, timedelta
from typing import Any, Protocol
from zoneinfo import ZoneInfo

import chinese_calendar
from tortoise import fields
from tortoise.exceptions import IntegrityError
from tortoise.models import Model
from tortoise.transactions import in_transaction

from models.conversation import choice, withdraw_prompts
from models.errors import UserFacingError
from models.jobs import schedule_action
from models.notices import NoticeKind, Urgency, create_notice, fan_out
from models.outbox import Priority, enqueue
from models.places import Community
from models.residents import Resident, WechatAccount
from models.roles import Role, Scope, StaffRole
from models.service_package import DEFAULT_PACKAGE, documents_for

log = logging.getLogger(__name__)

DEFAULT_ITEMS = [item.name for item in DEFAULT_PACKAGE]
JOIN_FLOW, JOIN_STEP = "service_day_join", "item"  # handlers/service_days.py answers the notice's question
PLACE_MAX = 40
STAFF_MAX = 60
ITEM_MAX = 20
FRIDAY = 4
CALENDAR_WARN_WEEKS = 8  # staff hear this long before 1 January that next year's calendar is missing


class WorkCalendar(Protocol):
    def is_workday(self, day: date) -> bool: ...


class Slot:
    EVE = "eve"  # the evening before (Thursday)
    DAY = "day"  # the morning of the day (Friday)
    CALENDAR = "calendar"  # the warning that next year's holiday calendar is missing


class ServiceDaySettings(Model):
    """When a community's notices go out (community time, HH:MM): the evening before and the morning of."""

    _no_comments = True  # see models/__init__.py

    id = fields.IntField(primary_key=True)
    community: fields.OneToOneRelation[Community] = fields.OneToOneField(
        "linli.Community", related_name="service_day_settings", on_delete=fields.CASCADE
    )
    eve_at = fields.CharField(max_length=5, default="18:00")
    day_at = fields.CharField(max_length=5, default="08:00")

    class Meta:
        table = "service_day_settings"


class ServiceDay(Model):
    """One planned Friday of a community: where, when, who is on duty, which items are offered."""

    _no_comments = True  # see models/__init__.py

    id = fields.IntField(primary_key=True)
    community: fields.ForeignKeyRelation[Community] = fields.ForeignKeyField(
        "linli.Community", related_name="service_days", on_delete=fields.RESTRICT
    )
    date = fields.DateField()
    place = fields.CharField(max_length=PLACE_MAX)
    starts = fields.CharField(max_length=5)  # HH:MM community time
    ends = fields.CharField(max_length=5)
    staff = fields.CharField(max_length=STAFF_MAX)
    items: list[str] = fields.JSONField(default=list)
    created_by: fields.ForeignKeyNullableRelation[Resident] = fields.ForeignKeyField(
        "linli.Resident", related_name="service_days_planned", null=True, on_delete=fields.SET_NULL
    )
    created_at = fields.DatetimeField()

    class Meta:
        table = "service_day"
        unique_together = (("community", "date"),)


class ServiceDayIntent(Model):
    """The item a resident says they will come for (one per resident and day, the latest answer wins)."""

    _no_comments = True  # see models/__init__.py

    id = fields.IntField(primary_key=True)
    resident: fields.ForeignKeyRelation[Resident] = fields.ForeignKeyField(
        "linli.Resident", related_name="service_day_intents", on_delete=fields.CASCADE
    )
    day: fields.ForeignKeyRelation[ServiceDay] = fields.ForeignKeyField(
        "linli.ServiceDay", related_name="intents", on_delete=fields.CASCADE
    )
    item = fields.CharField(max_length=ITEM_MAX)
    created_at = fields.DatetimeField()

    class Meta:
        table = "service_day_intent"
        unique_together = (("resident", "day"),)


class ServiceDayNoticeRun(Model):
    """The claim of one notice per (community, Friday, slot): inserting it is the claim."""

    _no_comments = True  # see models/__init__.py

    id = fields.IntField(primary_key=True)
    community: fields.ForeignKeyRelation[Community] = fields.ForeignKeyField(
        "linli.Community", related_name="service_day_runs", on_delete=fields.CASCADE
    )
    date = fields.DateField()
    slot = fields.CharField(max_length=8)
    notice_id = fields.IntField(null=True)  # the notice written (none for a staff warning)
    created_at = fields.DatetimeField()

    class Meta:
        table = "service_day_notice_run"
        unique_together = (("community", "date", "slot"),)


# ---------------------------------------------------------------------------- parsing and rules

_CN_DATE = re.compile(r"^(?:(\d{4})年)?(\d{1,2})月(\d{1,2})[日号]?$")
_ISO_DATE = re.compile(r"^(\d{4})[-/.](\d{1,2})[-/.](\d{1,2})$")
_HOURS = re.compile(r"^(\d{1,2})[:：](\d{2})\s*[-–—~～至到]\s*(\d{1,2})[:：](\d{2})$")
WEEKDAYS = "一二三四五六日"


def parse_date(text: str, today: date) -> date:
    """2026-12-04, 2026/12/4, 12月4日 or 2026年12月4日 (without a year: this year)."""
    text = text.strip().replace(" ", "")
    match = _ISO_DATE.match(text) or _CN_DATE.match(text)
    if not match:
        raise UserFacingError("没看懂日期，请按“12月4日”或“2026-12-04”的格式输入。")
    year, month, day = match.groups()
    try:
        return date(int(year) if year else today.year, int(month), int(day))
    except ValueError:
        raise UserFacingError("没有这一天，请检查日期。") from None


def parse_hours(text: str) -> tuple[str, str]:
    match = _HOURS.match(text.strip())
    if not match:
        raise UserFacingError("没看懂时间，请按“09:00-11:30”的格式输入。")
    h1, m1, h2, m2 = (int(part) for part in match.groups())
    if h1 > 23 or h2 > 23 or m1 > 59 or m2 > 59 or (h1, m1) >= (h2, m2):
        raise UserFacingError("时间不对：结束要晚于开始，例如“09:00-11:30”。")
    return f"{h1:02d}:{m1:02d}", f"{h2:02d}:{m2:02d}"


def parse_items(text: str, offered: list[str]) -> list[str]:
    """Numbers (1 3 5, 1,3,5, 1、3) of ``offered``, or 全部."""
    text = text.strip()
    if text in ("全部", "所有", "都要"):
        return list(offered)
    parts = [p for p in re.split(r"[\s,，、;；]+", text) if p]
    if not parts or not all(p.isdigit() for p in parts):
        raise UserFacingError("请回复事项序号，多个用空格或逗号隔开，例如“1 3 5”；全选回复“全部”。")
    numbers = sorted({int(p) for p in parts})
    if numbers[0] < 1 or numbers[-1] > len(offered):
        raise UserFacingError(f"序号要在 1 到 {len(offered)} 之间。")
    return [offered[n - 1] for n in numbers]


def fmt_day(day: date) -> str:
    return f"{day.month}月{day.day}日（周{WEEKDAYS[day.weekday()]}）"


def next_working_friday(after: date, calendar: WorkCalendar) -> date:
    """The first Friday after ``after`` that is a working day."""
    day = after + timedelta(days=(FRIDAY - after.weekday()) % 7 or 7)
    while not calendar.is_workday(day):
        day += timedelta(days=7)
    return day


def check_date(day: date, today: date, calendar: WorkCalendar) -> None:
    """A service day is a Friday, today or later, and not a statutory holiday."""
    if day < today:
        raise UserFacingError(f"{fmt_day(day)}已经过去了，请输入今天以后的周五。")
    if day.weekday() != FRIDAY:
        nearest = fmt_day(next_working_friday(day - timedelta(days=1), calendar))
        raise UserFacingError(f"{fmt_day(day)}不是周五。流动服务日在周五，最近的是{nearest}。")
    if not calendar.is_workday(day):
        following = fmt_day(next_working_friday(day, calendar))
        raise UserFacingError(f"{fmt_day(day)}是法定节假日，不设服务日。下一个工作日的周五是{following}。")


async def settings_of(community_id: int) -> ServiceDaySettings:
    row, _ = await ServiceDaySettings.get_or_create(community_id=community_id)
    return row


def _hhmm(text: str) -> time:
    match = re.match(r"^(\d{1,2})[:：](\d{2})$", text.strip())
    if not match or int(match.group(1)) > 23 or int(match.group(2)) > 59:
        raise UserFacingError("没看懂时间，请按“18:00”的格式输入。")
    return time(int(match.group(1)), int(match.group(2)))


def check_notice_times(eve_at: str, day_at: str, quiet_start: time, quiet_end: time) -> tuple[time, time]:
    """Both times readable and outside the quiet hours (the notices are not sent at night)."""
    eve, day = _hhmm(eve_at), _hhmm(day_at)
    for label, at in (("前一天", eve), ("当天", day)):
        if not quiet_end <= at < quiet_start:
            raise UserFacingError(f"{label}的通知时间要在{quiet_end:%H:%M}到{quiet_start:%H:%M}之间（夜间免打扰）。")
    return eve, day


async def set_notice_times(community_id: int, eve_at: str, day_at: str, quiet_start: time,
                           quiet_end: time) -> ServiceDaySettings:
    """Change when a community's service-day notices go out."""
    eve, day = check_notice_times(eve_at, day_at, quiet_start, quiet_end)
    row = await settings_of(community_id)
    row.eve_at, row.day_at = f"{eve:%H:%M}", f"{day:%H:%M}"
    await row.save(update_fields=["eve_at", "day_at"])
    return row


async def plan_day(
    *, community_id: int, day: date, place: str, starts: str, ends: str, staff: str, items: list[str],
    by_id: int | None, now: datetime, today: date, calendar: WorkCalendar,
) -> ServiceDay:
    """Check everything, then write the day; a date the community has planned already is refused."""
    check_date(day, today, calendar)
    place, staff = place.strip(), staff.strip()
    if not place or len(place) > PLACE_MAX:
        raise UserFacingError(f"地点请写1到{PLACE_MAX}个字。")
    if not staff or len(staff) > STAFF_MAX:
        raise UserFacingError(f"值班人员请写1到{STAFF_MAX}个字。")
    if not items or any(not i or len(i) > ITEM_MAX for i in items):
        raise UserFacingError("请至少选择一个服务事项。")
    parse_hours(f"{starts}-{ends}")
    try:
        async with in_transaction():
            return await ServiceDay.create(community_id=community_id, date=day, place=place, starts=starts, ends=ends,
                                           staff=staff, items=items, created_by_id=by_id, created_at=now)
    except IntegrityError:
        raise UserFacingError(f"{fmt_day(day)}已经排过服务日了。回复“服务日安排”查看。") from None


async def upcoming_days(community_ids: list[int], today: date) -> list[ServiceDay]:
    return await ServiceDay.filter(community_id__in=community_ids, date__gte=today).order_by("date", "id")


async def expected_visitors(day_id: int) -> dict[str, int]:
    """Residents who said they will come, per item."""
    counts: dict[str, int] = {}
    for item in await ServiceDayIntent.filter(day_id=day_id).values_list("item", flat=True):
        counts[str(item)] = counts.get(str(item), 0) + 1
    return counts


async def record_intent(resident_id: int, day_id: int, item: str, now: datetime) -> bool:
    """Store (or change) what the resident will come for; returns whether it is new."""
    day = await ServiceDay.get(id=day_id)
    if item not in day.items:
        raise UserFacingError("这个事项本次不办理，请从列表中选择。")
    _, created = await ServiceDayIntent.update_or_create(
        resident_id=resident_id, day_id=day_id, defaults={"item": item, "created_at": now})
    return bool(created)


# ---------------------------------------------------------------------------- notices


def documents_to_bring(items: list[str]) -> list[str]:
    """The documents for these items of the service package (an ID card when none is listed)."""
    return documents_for(items) or ["身份证"]


def what_to_bring(items: list[str]) -> str:
    return "、".join(documents_to_bring(items))


def day_text(day: ServiceDay) -> str:
    return (f"{fmt_day(day.date)}{day.starts}–{day.ends}，流动服务台设在{day.place}，值班：{day.staff}。\n"
            f"可办理：{'、'.join(day.items)}。\n请带好：{what_to_bring(day.items)}。")


def intent_prompt(day: ServiceDay, tz: ZoneInfo) -> dict[str, Any]:
    """The question the notice asks each recipient (a pending prompt), open until the day's end."""
    ends = datetime.combine(day.date, _hhmm(day.ends), tzinfo=tz)
    question = choice("您会来办理哪一项？请回复序号告诉我们（之后要更改，回复“参加”）：",
                      [(item, item) for item in day.items])
    return {"flow": JOIN_FLOW, "step": JOIN_STEP, "question": question.to_json(), "data": {"day_id": day.id},
            "expires_at": ends.isoformat()}


async def _claim(community_id: int, day: date, slot: str, now: datetime) -> ServiceDayNoticeRun | None:
    try:
        async with in_transaction():
            return await ServiceDayNoticeRun.create(community_id=community_id, date=day, slot=slot, created_at=now)
    except IntegrityError:
        return None


async def _send(community_id: int, day: date, slot: str, title: str, text: str, now: datetime,
                prompt: dict[str, Any] | None = None) -> int | None:
    """One notice per (community, day, slot), claimed first; fanned out at once and by the due sweep.

    With a ``prompt``, each recipient gets its question as a pending prompt; the question of an
    earlier notice of the same day is withdrawn first, so only the latest one is open.
    """
    try:
        async with in_transaction():
            run = await ServiceDayNoticeRun.create(community_id=community_id, date=day, slot=slot, created_at=now)
            notice = await create_notice(community_id=community_id, title=title, text=text,
                                         urgency=Urgency.NORMAL, now=now, send_at=now, by_id=None,
                                         kind=NoticeKind.SERVICE_DAY, prompt=prompt)
            run.notice_id = notice.id
            await run.save(update_fields=["notice_id"])
            # the due sweep fans it out again after a crash right here; fan_out keeps what exists
            await schedule_action("notice.fan_out", f"notice:{notice.id}", now, now)
    except IntegrityError:
        return None  # claimed already: by an earlier run or another scheduler
    if prompt is not None:
        earlier = await ServiceDayNoticeRun.filter(community_id=community_id, date=day, notice_id__not_isnull=True,
                                                   notice_id__lt=notice.id).values_list("notice_id", flat=True)
        for notice_id in earlier:
            await withdraw_prompts(f"notice:{notice_id}", now)
    await fan_out(notice.id, now)
    return notice.id


def calendar_knows(year: int) -> bool:
    try:
        chinese_calendar.is_holiday(date(year, 1, 1))
    except NotImplementedError:
        return False
    return True


async def _warn_calendar(today: date, now: datetime) -> int:
    """Weeks before a year the holiday library does not know: log, and tell community staff once."""
    year = today.year + 1
    if (date(year, 1, 1) - today).days > CALENDAR_WARN_WEEKS * 7 or calendar_knows(year):
        return 0
    log.warning("the holiday calendar does not know %s: update chinesecalendar or set community.extra_holidays",
                year)
    text = (f"提醒：系统的节假日日历还没有{year}年的安排，周五流动服务日将只按周末判断。"
            "请技术人员升级节假日日历，或在配置中填写放假日期。")
    sent = 0
    for community in await Community.all().order_by("id"):
        if await _claim(community.id, date(year, 1, 1), Slot.CALENDAR, now) is None:
            continue
        staff = await StaffRole.filter(role=Role.COMMUNITY_STAFF, scope_kind=Scope.COMMUNITY, scope_id=community.id,
                                       revoked_at=None).values_list("resident_id", flat=True)
        for account in await WechatAccount.filter(resident_id__in=list(staff), channel__in=["oa", "chat"]):
            await enqueue(openid=account.openid, kind="text", payload={"content": text},
                          idempotency_key=f"calendar-warning:{year}:{account.openid}", now=now,
                          priority=Priority.NORMAL)
            sent += 1
    return sent


async def run_service_day_notices(now: datetime, tz: ZoneInfo, calendar: WorkCalendar,
                                  quiet_start: time) -> dict[str, int]:
    """Write the notices whose time has come; safe to run any number of times."""
    local = now.astimezone(tz)
    today, clock_time = local.date(), local.time()
    tomorrow = today + timedelta(days=1)
    counts = {"notices": 0, "holiday": 0, "calendar_warnings": await _warn_calendar(today, now)}
    for day in await ServiceDay.filter(date__in=[today, tomorrow]).order_by("id"):
        settings = await settings_of(day.community_id)  # type: ignore[attr-defined]
        if day.date == tomorrow:
            slot, due, until, title = Slot.EVE, _hhmm(settings.eve_at), quiet_start, "明天流动服务日"
        else:
            slot, due, until, title = Slot.DAY, _hhmm(settings.day_at), _hhmm(day.ends), "今天流动服务日"
        if not (due <= clock_time < until):
            continue  # not yet, or too late to be of use (the morning notice covers a missed evening)
        if await _send(day.community_id, day.date, slot, title, day_text(day), now,  # type: ignore[attr-defined]
                       prompt=intent_prompt(day, tz)):
            counts["notices"] += 1
    if tomorrow.weekday() == FRIDAY and not calendar.is_workday(tomorrow):
        # the communities that hold service days (planned within the last year)
        recent = await ServiceDay.filter(date__gte=today - timedelta(days=366)).order_by("id")
        for community_id in sorted({day.community_id for day in recent}):  # type: ignore[attr-defined]
            settings = await settings_of(community_id)
            if not (_hhmm(settings.eve_at) <= clock_time < quiet_start):
                continue
            planned = await ServiceDay.filter(community_id=community_id, date__gt=tomorrow).order_by("date").first()
            if planned is not None:
                following = f"下一次服务日：{fmt_day(planned.date)}{planned.starts}–{planned.ends}，在{planned.place}。"
            else:
                following = f"下一次服务日在{fmt_day(next_working_friday(tomorrow, calendar))}，地点另行通知。"
            text = f"{fmt_day(tomorrow)}是法定节假日，本周不设流动服务日。{following}"
            if await _send(community_id, tomorrow, Slot.EVE, "本周五无流动服务日", text, now):
                counts["holiday"] += 1
    return counts
