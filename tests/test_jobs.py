"""The job framework: claimed runs (exactly once, even with two schedulers), missed runs at
start-up, and the due-action sweep — with the frozen clock, on whichever backend the run uses."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from bot.clock import FrozenClock
from bot.config import Config
from bot.scheduler import (
    DUE_ACTIONS_JOB,
    ERRAND_DIGEST_JOB,
    PRUNE_JOB,
    RETENTION_JOB,
    ROUNDUP_JOB,
    SERVICE_DAY_JOB,
    SESSION_REMINDER_JOB,
    Scheduler,
    service_scheduler,
)
from models.jobs import (
    MAX_ATTEMPTS,
    ActionStatus,
    DueAction,
    JobRun,
    RunStatus,
    cancel_actions,
    register_action,
    schedule_action,
    sweep_due,
)

SHANGHAI = ZoneInfo("Asia/Shanghai")
pytestmark = pytest.mark.usefixtures("db")


def at(day: int, hour: int, minute: int = 0) -> datetime:
    """A time in November 2026, Shanghai."""
    return datetime(2026, 11, day, hour, minute, tzinfo=SHANGHAI)


def daily_counter(clock: FrozenClock, runs: list[datetime]) -> Scheduler:
    scheduler = Scheduler(SHANGHAI, clock, misfire_grace=timedelta(hours=1))

    async def job(fire_time: datetime) -> None:
        runs.append(fire_time)

    scheduler.add_job("test.daily", job, label="daily 03:30", hour=3, minute=30, second=0)
    return scheduler


async def test_two_schedulers_started_at_once_run_each_due_time_once() -> None:
    clock = FrozenClock(at(23, 3, 30).astimezone(UTC))
    runs: list[datetime] = []
    first, second = daily_counter(clock, runs), daily_counter(clock, runs)
    await JobRun.create(job="test.daily", fire_time=at(22, 3, 30), status=RunStatus.DONE, claimed_at=at(22, 3, 30))
    outcomes = await asyncio.gather(first.run_due(), second.run_due())
    assert runs == [at(23, 3, 30)]
    # the second either lost the claim or, waking a moment later, found the time already claimed
    assert sorted(o[2] for o in outcomes[0] + outcomes[1]) in (["done"], ["done", "taken"])
    # a later wake-up on either finds nothing more to do
    assert await first.run_due() == [] and await second.run_due() == []
    assert await JobRun.filter(job="test.daily").count() == 2


async def test_a_fire_time_claimed_at_once_by_two_callers_is_won_by_one() -> None:
    from models.jobs import claim_run

    fire, now = at(27, 3, 30), at(27, 3, 31)
    claims = await asyncio.gather(*(claim_run("test.race", fire, now) for _ in range(5)))
    assert len([c for c in claims if c is not None]) == 1
    assert await JobRun.filter(job="test.race").count() == 1


async def test_runs_missed_while_down_are_recorded_and_the_last_one_within_grace_runs() -> None:
    await JobRun.create(job="test.daily", fire_time=at(23, 3, 30), status=RunStatus.DONE, claimed_at=at(23, 3, 30))
    clock = FrozenClock(at(26, 4, 10).astimezone(UTC))  # back on Thursday, 40 minutes after its time
    runs: list[datetime] = []
    outcomes = await daily_counter(clock, runs).run_due()
    assert [(o[1], o[2]) for o in outcomes] == [(at(24, 3, 30), "missed"), (at(25, 3, 30), "missed"),
                                                 (at(26, 3, 30), "done")]
    assert runs == [at(26, 3, 30)]
    statuses = await JobRun.filter(job="test.daily").order_by("fire_time").values_list("status", flat=True)
    assert statuses == ["done", "missed", "missed", "done"]


async def test_a_new_job_does_not_backfill_beyond_its_grace() -> None:
    runs: list[datetime] = []
    late = FrozenClock(at(26, 5, 0).astimezone(UTC))  # 90 minutes after 03:30, grace 1 h
    assert await daily_counter(late, runs).run_due() == []
    on_time = FrozenClock(at(27, 3, 45).astimezone(UTC))
    assert [o[2] for o in await daily_counter(on_time, runs).run_due()] == ["done"]
    assert runs == [at(27, 3, 30)]


async def test_a_failing_run_is_recorded_and_not_retried_for_the_same_time() -> None:
    clock = FrozenClock(at(27, 3, 31).astimezone(UTC))
    scheduler = Scheduler(SHANGHAI, clock)

    async def broken(fire_time: datetime) -> None:
        raise RuntimeError("disk full")

    scheduler.add_job("test.broken", broken, label="daily", hour=3, minute=30, second=0)
    assert [o[2] for o in await scheduler.run_due()] == ["failed"]
    run = await JobRun.get(job="test.broken")
    assert run.status == "failed" and "disk full" in run.error
    assert await scheduler.run_due() == []


async def test_the_service_registers_retention_and_the_due_action_sweep(config: Config, clock: FrozenClock) -> None:
    names = [job.name for job in service_scheduler(config, clock).jobs()]
    assert names == [RETENTION_JOB, DUE_ACTIONS_JOB, SERVICE_DAY_JOB, SESSION_REMINDER_JOB, ROUNDUP_JOB,
                     ERRAND_DIGEST_JOB, PRUNE_JOB]


# ---------------------------------------------------------------------------- due actions

DONE: list[str] = []


@register_action("test.remind")
async def remind(target: str, now: datetime) -> None:
    DONE.append(target)


FLAKY: dict[str, int] = {}


@register_action("test.flaky")
async def flaky(target: str, now: datetime) -> None:
    FLAKY[target] = FLAKY.get(target, 0) + 1
    raise ConnectionError("department system down")


async def test_due_actions_run_once_when_due() -> None:
    DONE.clear()
    now = at(27, 9)
    await schedule_action("test.remind", "case:1", now - timedelta(minutes=1), now)
    await schedule_action("test.remind", "case:1", now - timedelta(minutes=1), now)  # twice: one row
    await schedule_action("test.remind", "case:2", now + timedelta(hours=1), now)
    await schedule_action("test.remind", "case:3", now - timedelta(minutes=5), now)
    await cancel_actions("test.remind", "case:3")
    assert (await sweep_due(now))["done"] == 1
    assert DONE == ["case:1"]
    assert (await sweep_due(now))["done"] == 0  # a second sweep (or a second scheduler) finds nothing
    assert (await sweep_due(now + timedelta(hours=1)))["done"] == 1
    assert DONE == ["case:1", "case:2"]
    statuses = await DueAction.all().order_by("target").values_list("status", flat=True)
    assert statuses == [ActionStatus.DONE, ActionStatus.DONE, ActionStatus.CANCELLED]


async def test_a_failing_action_is_retried_with_backoff_then_failed() -> None:
    FLAKY.clear()
    now = at(27, 9)
    await schedule_action("test.flaky", "errand:7", now, now)
    for _ in range(MAX_ATTEMPTS):
        row = await DueAction.get(target="errand:7")
        now = max(now, row.due_at)
        await sweep_due(now)
    row = await DueAction.get(target="errand:7")
    assert FLAKY["errand:7"] == MAX_ATTEMPTS
    assert row.status == ActionStatus.FAILED and "department system down" in row.last_error


async def test_an_action_left_running_by_a_dead_sweeper_runs_again_after_its_lease() -> None:
    DONE.clear()
    now = at(27, 9)
    row = await schedule_action("test.remind", "case:9", now, now)
    await DueAction.filter(id=row.id).update(status=ActionStatus.RUNNING,
                                             lease_until=(now + timedelta(minutes=5)).astimezone(UTC),
                                             attempts=1)
    assert (await sweep_due(now + timedelta(minutes=1)))["done"] == 0  # its sweeper may still be at it
    assert (await sweep_due(now + timedelta(minutes=6)))["done"] == 1
    assert DONE == ["case:9"]


async def test_scheduling_an_unknown_action_is_refused() -> None:
    with pytest.raises(ValueError, match="no handler"):
        await schedule_action("test.nobody", "x:1", at(27, 9), at(27, 9))
    assert await DueAction.all().count() == 0


async def test_linli_scheduler_runs_until_told_to_stop(tmp_path: Any, cli_env: dict[str, str]) -> None:
    import signal
    import subprocess

    from tests.test_cli import LINLI

    proc = await asyncio.create_subprocess_exec(
        *LINLI, "scheduler", cwd=tmp_path, env=cli_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), timeout=120)  # a hang guard, not a timing assertion
    assert "linli scheduler: running privacy.retention (daily 03:30), due_actions.sweep (every minute)" in line.decode()
    assert "service_days.notices" in line.decode()
    proc.send_signal(signal.SIGTERM)
    out, _ = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode == 0 and "stopped" in out.decode()


async def test_old_runs_and_actions_are_pruned_but_each_jobs_last_run_stays() -> None:
    from models.jobs import prune

    now = at(27, 9)
    for day in (1, 2, 3):  # a job that stopped running a while ago: its newest run must stay
        await JobRun.create(job="test.old", fire_time=at(day, 3), status=RunStatus.DONE, claimed_at=at(day, 3))
    await JobRun.create(job="test.live", fire_time=at(1, 3), status=RunStatus.DONE, claimed_at=at(1, 3))
    await JobRun.create(job="test.live", fire_time=at(26, 3), status=RunStatus.DONE, claimed_at=at(26, 3))
    done = await schedule_action("test.remind", "case:old", at(1, 9).astimezone(UTC), now)
    await DueAction.filter(id=done.id).update(status=ActionStatus.DONE)
    await schedule_action("test.remind", "case:waiting", at(1, 9).astimezone(UTC), now, key="waiting")
    counts = await prune(now, keep=timedelta(days=20))
    assert counts == {"job_runs": 3, "due_actions": 1}
    left = await JobRun.all().order_by("job", "fire_time").values_list("job", "fire_time")
    assert [(job, when.astimezone(SHANGHAI).day) for job, when in left] == [("test.live", 26), ("test.old", 3)]
    assert await DueAction.filter(status=ActionStatus.PENDING).count() == 1  # still to do: kept
