"""One injectable clock for every rule, the engine and the scheduler.

Times are stored in UTC and computed in the community's time zone. Tests freeze and advance a
FrozenClock instead of sleeping.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import chinese_calendar

from bot.config import CommunityConfig

log = logging.getLogger(__name__)

WEEKDAYS_ZH = ("周一", "周二", "周三", "周四", "周五", "周六", "周日")


class Clock:
    """The real clock; ``now()`` is an aware UTC datetime."""

    def now(self) -> datetime:
        return datetime.now(UTC)


class ShiftedClock(Clock):
    """The real clock moved forward: `linli chat`'s /at jumps to a later time to see timed work happen."""

    def __init__(self) -> None:
        self.offset = timedelta(0)

    def now(self) -> datetime:
        return datetime.now(UTC) + self.offset

    def jump_to(self, when: datetime) -> None:
        if when.tzinfo is None:
            raise ValueError("ShiftedClock needs an aware datetime")
        if when <= self.now():
            raise ValueError("the clock only moves forward")
        self.offset = when - datetime.now(UTC)


class FrozenClock(Clock):
    """A clock that only moves when told to."""

    def __init__(self, start: datetime) -> None:
        if start.tzinfo is None:
            raise ValueError("FrozenClock needs an aware datetime")
        self._now = start.astimezone(UTC)

    def now(self) -> datetime:
        return self._now

    def advance(self, delta: timedelta) -> None:
        self._now += delta

    def set(self, when: datetime) -> None:
        if when.tzinfo is None:
            raise ValueError("FrozenClock needs an aware datetime")
        self._now = when.astimezone(UTC)


def local(when: datetime, tz: ZoneInfo) -> datetime:
    return when.astimezone(tz)


def format_zh(when: datetime, tz: ZoneInfo, *, with_time: bool = True) -> str:
    """'11月27日（周五）上午9:00' in the community's time zone."""
    t = when.astimezone(tz)
    day = f"{t.month}月{t.day}日（{WEEKDAYS_ZH[t.weekday()]}）"
    if not with_time:
        return day
    if t.hour < 6:
        part = "凌晨"
    elif t.hour < 12:
        part = "上午"
    elif t.hour < 13:
        part = "中午"
    elif t.hour < 18:
        part = "下午"
    else:
        part = "晚上"
    hour12 = t.hour if t.hour <= 12 else t.hour - 12
    return f"{day}{part}{hour12}:{t.minute:02d}"


class WorkCalendar:
    """China's working days: the maintained holiday calendar where it knows the year.

    chinese_calendar only covers announced years. Beyond them we fall back to Monday–Friday,
    corrected by the configured extra holidays and extra (make-up) working days, and never crash.
    """

    def __init__(self, extra_holidays: Iterable[date] = (), extra_workdays: Iterable[date] = ()):
        self.extra_holidays = frozenset(extra_holidays)
        self.extra_workdays = frozenset(extra_workdays)
        self._warned: set[int] = set()

    def is_workday(self, day: date) -> bool:
        if day in self.extra_holidays:
            return False
        if day in self.extra_workdays:
            return True
        try:
            return bool(chinese_calendar.is_workday(day))
        except NotImplementedError:
            if day.year not in self._warned:
                self._warned.add(day.year)
                log.warning("holiday calendar does not know %s; using weekends only", day.year)
            return day.weekday() < 5

    def add_workdays(self, start: date, days: int) -> date:
        """The date ``days`` working days after ``start`` (``start`` itself not counted)."""
        if days < 0:
            raise ValueError("days must not be negative")
        current = start
        remaining = days
        while remaining:
            current += timedelta(days=1)
            if self.is_workday(current):
                remaining -= 1
        return current


def work_calendar(community: CommunityConfig) -> WorkCalendar:
    """The community's working-day calendar, with the configured corrections."""
    return WorkCalendar(community.extra_holidays, community.extra_workdays)
