"""The injectable clock, Chinese date formatting and the working-day calendar."""

from __future__ import annotations

import logging
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from bot.clock import FrozenClock, WorkCalendar, format_zh

SHANGHAI = ZoneInfo("Asia/Shanghai")

# --- format_zh ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("utc", "expected"),
    [
        pytest.param(datetime(2026, 11, 27, 1, 0, tzinfo=UTC), "11月27日（周五）上午9:00", id="morning"),
        pytest.param(datetime(2026, 11, 27, 7, 30, tzinfo=UTC), "11月27日（周五）下午3:30", id="afternoon"),
        pytest.param(datetime(2026, 11, 27, 12, 5, tzinfo=UTC), "11月27日（周五）晚上8:05", id="evening"),
        pytest.param(datetime(2026, 11, 27, 4, 0, tzinfo=UTC), "11月27日（周五）中午12:00", id="noon"),
        # 01:00 UTC on Friday is already 09:00 local; 17:00 UTC Friday is Saturday 01:00 local.
        pytest.param(datetime(2026, 11, 27, 17, 0, tzinfo=UTC), "11月28日（周六）凌晨1:00", id="next-day-local"),
        pytest.param(datetime(2026, 11, 29, 2, 0, tzinfo=UTC), "11月29日（周日）上午10:00", id="sunday"),
    ],
)
def test_format_zh(utc: datetime, expected: str) -> None:
    assert format_zh(utc, SHANGHAI) == expected


def test_format_zh_accepts_any_aware_datetime() -> None:
    local = datetime(2026, 11, 27, 9, 0, tzinfo=SHANGHAI)
    assert format_zh(local, SHANGHAI) == "11月27日（周五）上午9:00"


def test_format_zh_without_time() -> None:
    assert format_zh(datetime(2026, 11, 27, 1, 0, tzinfo=UTC), SHANGHAI, with_time=False) == "11月27日（周五）"
    assert format_zh(datetime(2026, 11, 27, 17, 0, tzinfo=UTC), SHANGHAI, with_time=False) == "11月28日（周六）"


# --- FrozenClock ----------------------------------------------------------------------------


def test_frozen_clock_stays_put_until_told() -> None:
    start = datetime(2026, 11, 27, 1, 0, tzinfo=UTC)
    clock = FrozenClock(start)
    assert clock.now() == start
    assert clock.now() == start
    assert clock.now().utcoffset() == timedelta(0)


def test_frozen_clock_converts_the_start_to_utc() -> None:
    clock = FrozenClock(datetime(2026, 11, 27, 9, 0, tzinfo=SHANGHAI))
    assert clock.now() == datetime(2026, 11, 27, 1, 0, tzinfo=UTC)
    assert clock.now().tzinfo == UTC


def test_frozen_clock_advance() -> None:
    clock = FrozenClock(datetime(2026, 11, 27, 1, 0, tzinfo=UTC))
    clock.advance(timedelta(hours=2, minutes=30))
    assert clock.now() == datetime(2026, 11, 27, 3, 30, tzinfo=UTC)
    clock.advance(timedelta(days=3))
    assert clock.now() == datetime(2026, 11, 30, 3, 30, tzinfo=UTC)
    assert format_zh(clock.now(), SHANGHAI) == "11月30日（周一）上午11:30"


def test_frozen_clock_set() -> None:
    clock = FrozenClock(datetime(2026, 11, 27, 1, 0, tzinfo=UTC))
    clock.set(datetime(2026, 12, 1, 20, 0, tzinfo=SHANGHAI))
    assert clock.now() == datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
    assert clock.now().tzinfo == UTC
    clock.set(datetime(2026, 1, 1, tzinfo=UTC))  # backwards too
    assert clock.now() == datetime(2026, 1, 1, tzinfo=UTC)


def test_frozen_clock_refuses_a_naive_start() -> None:
    with pytest.raises(ValueError):
        FrozenClock(datetime(2026, 11, 27, 9, 0))


def test_frozen_clock_set_refuses_a_naive_datetime() -> None:
    clock = FrozenClock(datetime(2026, 11, 27, 1, 0, tzinfo=UTC))
    with pytest.raises(ValueError):
        clock.set(datetime(2026, 11, 27, 9, 0))


# --- WorkCalendar ---------------------------------------------------------------------------

# From chinese_calendar: 2026's National Day holiday is 1–7 October, with Sunday 20 September and
# Saturday 10 October as make-up working days.
NATIONAL_DAY = date(2026, 10, 1)
MAKE_UP_SATURDAY = date(2026, 10, 10)
MAKE_UP_SUNDAY = date(2026, 9, 20)


def test_national_day_is_not_a_workday() -> None:
    cal = WorkCalendar()
    assert NATIONAL_DAY.weekday() == 3  # a Thursday, still a holiday
    assert cal.is_workday(NATIONAL_DAY) is False
    assert all(cal.is_workday(date(2026, 10, d)) is False for d in range(1, 8))


def test_make_up_weekend_days_are_workdays() -> None:
    cal = WorkCalendar()
    assert MAKE_UP_SATURDAY.weekday() == 5
    assert cal.is_workday(MAKE_UP_SATURDAY) is True
    assert MAKE_UP_SUNDAY.weekday() == 6
    assert cal.is_workday(MAKE_UP_SUNDAY) is True


def test_ordinary_days_in_a_known_year() -> None:
    cal = WorkCalendar()
    assert cal.is_workday(date(2026, 11, 27)) is True  # Friday
    assert cal.is_workday(date(2026, 11, 28)) is False  # Saturday


def test_unknown_year_falls_back_to_weekends() -> None:
    cal = WorkCalendar()
    monday, saturday, sunday = date(2031, 3, 3), date(2031, 3, 8), date(2031, 3, 9)
    assert (monday.weekday(), saturday.weekday(), sunday.weekday()) == (0, 5, 6)
    assert cal.is_workday(monday) is True
    assert cal.is_workday(saturday) is False
    assert cal.is_workday(sunday) is False


def test_unknown_year_never_raises_and_warns_once(caplog: pytest.LogCaptureFixture) -> None:
    cal = WorkCalendar()
    with caplog.at_level(logging.WARNING, logger="bot.clock"):
        day = date(2031, 1, 1)
        while day.year == 2031:
            assert cal.is_workday(day) is (day.weekday() < 5)
            day += timedelta(days=1)
    warnings = [r for r in caplog.records if r.name == "bot.clock" and "2031" in r.getMessage()]
    assert len(warnings) == 1


def test_extra_holidays_and_workdays_override() -> None:
    cal = WorkCalendar(
        extra_holidays=[date(2026, 10, 9), date(2031, 3, 3)],
        extra_workdays=[date(2026, 10, 2), date(2031, 3, 8)],
    )
    assert cal.is_workday(date(2026, 10, 9)) is False  # a Friday workday made a holiday
    assert cal.is_workday(date(2026, 10, 2)) is True  # a library holiday made a workday
    assert cal.is_workday(date(2031, 3, 3)) is False  # beyond the library: Monday holiday
    assert cal.is_workday(date(2031, 3, 8)) is True  # beyond the library: Saturday make-up


def test_add_workdays_across_national_day_week() -> None:
    cal = WorkCalendar()
    wednesday = date(2026, 9, 30)
    assert cal.add_workdays(wednesday, 1) == date(2026, 10, 8)
    assert cal.add_workdays(wednesday, 2) == date(2026, 10, 9)
    assert cal.add_workdays(wednesday, 3) == MAKE_UP_SATURDAY
    assert cal.add_workdays(wednesday, 4) == date(2026, 10, 12)


def test_add_workdays_counts_a_make_up_sunday() -> None:
    cal = WorkCalendar()
    assert cal.add_workdays(date(2026, 9, 18), 1) == MAKE_UP_SUNDAY


def test_add_workdays_honours_extra_holidays() -> None:
    cal = WorkCalendar(extra_holidays=[date(2026, 10, 8)])
    assert cal.add_workdays(date(2026, 9, 30), 1) == date(2026, 10, 9)


def test_add_zero_workdays_is_the_start() -> None:
    assert WorkCalendar().add_workdays(NATIONAL_DAY, 0) == NATIONAL_DAY


def test_add_workdays_in_an_unknown_year() -> None:
    cal = WorkCalendar()
    assert cal.add_workdays(date(2031, 3, 7), 1) == date(2031, 3, 10)  # Friday → Monday


def test_add_negative_workdays_raises() -> None:
    with pytest.raises(ValueError):
        WorkCalendar().add_workdays(date(2026, 11, 27), -1)


def test_work_calendar_from_config_applies_the_corrections() -> None:
    from bot.clock import work_calendar
    from bot.config import build_config

    cfg = build_config({}, {"LINLI_COMMUNITY_EXTRA_HOLIDAYS": "2031-02-03",
                            "LINLI_COMMUNITY_EXTRA_WORKDAYS": "2031-02-08"})
    cal = work_calendar(cfg.community)
    assert not cal.is_workday(date(2031, 2, 3))  # a Monday made a holiday
    assert cal.is_workday(date(2031, 2, 8))  # a Saturday made a working day
