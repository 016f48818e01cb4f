"""The one scheduler of the service: named jobs at wall-clock times in the community's time zone.

APScheduler 3's AsyncIOScheduler fires the jobs on the event loop of the process that started
it. *When* a job fires is the wall clock's business; what the job computes reads the injectable
clock (bot/clock.py), so a job run by hand (``linli privacy sweep``) or by a test does exactly
what the daily run does.

Every job is coalesced (a scheduler that was asleep past several run times runs the job once)
and may start up to ``misfire_grace`` late (a busy or briefly paused process still runs it);
a run missed by more than that waits for the next day. One run of a job at a time.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from functools import partial
from typing import Any
from zoneinfo import ZoneInfo

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.cron import CronTrigger

from bot.clock import Clock, work_calendar
from bot.config import Config, ErrandsConfig, PrivacyConfig, parse_hhmm
from models import cases
from models.case_sessions import NoticeTimes, run_roundup, run_session_reminders
from models.errand_core import run_digests
from models.jobs import RunStatus, claim_run, finish_run, last_fire_time, prune, sweep_due
from models.privacy import Retention, retention_sweep
from models.service_days import run_service_day_notices

log = logging.getLogger(__name__)

JobFn = Callable[[], Awaitable[object]]

MISFIRE_GRACE = timedelta(hours=1)

RETENTION_JOB = "privacy.retention"
DUE_ACTIONS_JOB = "due_actions.sweep"
PRUNE_JOB = "scheduler.prune"  # finished runs and actions older than 30 days
SERVICE_DAY_JOB = "service_days.notices"
SESSION_REMINDER_JOB = "case_sessions.reminders"  # 逢六说事: the agenda, the evening before a session
ROUNDUP_JOB = "case_sessions.roundup"  # 周五圆梦: the week's resolved cases, Friday afternoon
ERRAND_DIGEST_JOB = "errands.digests"  # 红色代办: the stewards' digests and residents' progress at set times
MISSED_RECORDED = 20  # missed fire times recorded one by one per wake-up; older ones are only counted
MAX_CATCH_UP = 1000  # fire times looked at per wake-up (a minute job down for a day has 1440)


@dataclass(frozen=True)
class JobInfo:
    name: str
    trigger: str  # e.g. "daily 03:30"


class Scheduler:
    """Named jobs; ``start`` inside the running event loop, ``stop`` before it closes.

    APScheduler only wakes the process up. What runs is decided by ``run_due``: the fire times
    of the job's trigger since its last claimed run, each claimed as a ``JobRun`` row (so two
    schedulers run it once), run when still within the job's grace time and recorded as missed
    otherwise. APScheduler 3 neither hands the fire time to the job nor remembers runs missed
    while the process was down; both come from the database here, on every wake-up and at start.
    """

    def __init__(self, tz: ZoneInfo, clock: Clock | None = None, *, misfire_grace: timedelta = MISFIRE_GRACE) -> None:
        self.tz = tz
        self.clock = clock or Clock()
        self.misfire_grace = misfire_grace
        self._aps = AsyncIOScheduler(timezone=tz)
        self._jobs: dict[str, Callable[[datetime], Awaitable[object]]] = {}
        self._triggers: dict[str, CronTrigger] = {}
        self._labels: dict[str, str] = {}
        self._grace: dict[str, timedelta] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._tasks: set[asyncio.Task[object]] = set()

    def add_job(self, name: str, fn: Callable[[datetime], Awaitable[object]], *, label: str,
                grace: timedelta | None = None, **cron: Any) -> None:
        """Run ``fn(fire_time)`` at the times of a cron trigger (community time), once per fire time."""
        if name in self._jobs:
            raise ValueError(f"job {name} added twice")
        trigger = CronTrigger(timezone=self.tz, **cron)
        self._jobs[name] = fn
        self._triggers[name] = trigger
        self._labels[name] = label
        self._grace[name] = grace if grace is not None else self.misfire_grace
        self._locks[name] = asyncio.Lock()
        self._aps.add_job(
            self._wake, trigger, args=(name,), id=name, name=name,
            misfire_grace_time=int(self._grace[name].total_seconds()) or 1, coalesce=True, max_instances=1,
        )

    def add_daily(self, name: str, at: time, fn: JobFn) -> None:
        """Run ``fn()`` every day at ``at`` (community time)."""

        async def daily(fire_time: datetime) -> object:
            return await fn()

        self.add_job(name, daily, label=f"daily {at.hour:02d}:{at.minute:02d}", hour=at.hour, minute=at.minute,
                     second=0)

    def jobs(self) -> list[JobInfo]:
        return [JobInfo(name, self._labels[name]) for name in self._jobs]

    def next_run(self, name: str, after: datetime) -> datetime | None:
        """When job ``name`` fires next after ``after`` (aware), in the community's time zone."""
        fire: datetime | None = self._triggers[name].get_next_fire_time(None, after.astimezone(self.tz))
        return fire

    async def run(self, name: str) -> object:
        """Run one job now, by hand (unclaimed; errors propagate to the caller)."""
        return await self._jobs[name](self.clock.now())

    def _fire_times(self, name: str, after: datetime | None, now: datetime) -> list[datetime]:
        """The job's fire times in (after, now]; a job never run looks back only its grace time."""
        trigger = self._triggers[name]
        start = after if after is not None else now - self._grace[name] - timedelta(seconds=1)
        times: list[datetime] = []
        previous = None
        current = start.astimezone(self.tz)
        while len(times) < MAX_CATCH_UP:
            fire = trigger.get_next_fire_time(previous, current)
            if fire is None or fire > now:
                break
            if fire > start:
                times.append(fire)
            previous, current = fire, fire + timedelta(microseconds=1)
        return times

    async def run_due(self, name: str | None = None) -> list[tuple[str, datetime, str]]:
        """Claim and run (or record as missed) every due fire time of one job or of all."""
        outcomes: list[tuple[str, datetime, str]] = []
        for job in [name] if name else list(self._jobs):
            async with self._locks[job]:
                now = self.clock.now()
                times = self._fire_times(job, await last_fire_time(job), now)
                late_times = [t for t in times if now - t > self._grace[job]]
                if len(late_times) > MISSED_RECORDED:
                    # a frequent job down for long: the newest missed times are recorded, the rest counted
                    log.warning("scheduled job %s missed %d runs while no scheduler ran", job, len(late_times))
                    skipped = set(late_times[:-MISSED_RECORDED])
                    times = [t for t in times if t not in skipped]
                for fire in times:
                    late = now - fire > self._grace[job]
                    run = await claim_run(job, fire, now, status=RunStatus.MISSED if late else RunStatus.RUNNING)
                    if run is None:
                        outcomes.append((job, fire, "taken"))  # another scheduler has it
                        continue
                    if late:
                        log.warning("scheduled job %s due %s was missed (more than %s late)", job,
                                    fire.isoformat(), self._grace[job])
                        outcomes.append((job, fire, RunStatus.MISSED))
                        continue
                    try:
                        result = await self._jobs[job](fire)
                    except Exception as exc:
                        log.exception("scheduled job %s (due %s) failed", job, fire.isoformat())
                        await finish_run(run, self.clock.now(), f"{type(exc).__name__}: {exc}")
                        outcomes.append((job, fire, RunStatus.FAILED))
                    else:
                        log.info("scheduled job %s (due %s) done: %s", job, fire.isoformat(), result)
                        await finish_run(run, self.clock.now())
                        outcomes.append((job, fire, RunStatus.DONE))
        return outcomes

    async def _wake(self, name: str) -> None:
        try:
            await self.run_due(name)
        except Exception:
            log.exception("scheduler: running job %s failed", name)

    @property
    def running(self) -> bool:
        return bool(self._aps.running)

    def start(self) -> None:
        """Begin firing jobs (and catch up on missed runs); call with the event loop running."""
        self._aps.start()
        task: asyncio.Task[object] = asyncio.create_task(self._wake_all(), name="scheduler-catch-up")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        log.info("scheduler started (%s): %s", self.tz.key,
                 ", ".join(f"{j.name} {j.trigger}" for j in self.jobs()) or "no jobs")

    async def _wake_all(self) -> object:
        for name in list(self._jobs):
            await self._wake(name)
        return None

    async def stop(self) -> None:
        """Stop firing jobs; a job in flight is cancelled (each job is one transaction)."""
        for task in list(self._tasks):
            task.cancel()
        if self._aps.running:
            self._aps.shutdown(wait=False)
            await asyncio.sleep(0)  # AsyncIOScheduler shuts down in a callback on the loop: let it run


# ---------------------------------------------------------------------------- the service's jobs


def retention_of(privacy: PrivacyConfig, errands: ErrandsConfig | None = None) -> Retention:
    return Retention(
        audit_days=privacy.audit_days, messages_days=privacy.messages_days, prompts_days=privacy.prompts_days,
        link_requests_days=privacy.link_requests_days, unbound_accounts_days=privacy.unbound_accounts_days,
        erased_residents_days=privacy.erased_residents_days, case_photos_days=privacy.case_photos_days,
        errand_documents_days=(errands or ErrandsConfig()).documents_days,
    )


async def run_retention(config: Config, clock: Clock) -> dict[str, int]:
    """Delete what outlived its period in ``[privacy]``; counts by kind (the sweep logs them too)."""
    return await retention_sweep(retention_of(config.privacy, config.errands), clock.now())


def service_scheduler(config: Config, clock: Clock) -> Scheduler:
    """The scheduler with every job of the service added (not started)."""
    scheduler = Scheduler(ZoneInfo(config.community.timezone), clock)
    cases.configure(config)  # the case deadlines' due actions count in the community's calendar
    scheduler.add_daily(RETENTION_JOB, config.privacy.sweep_time, partial(run_retention, config, clock))

    async def due_actions(fire_time: datetime) -> dict[str, int]:
        return await sweep_due(clock.now())

    scheduler.add_job(DUE_ACTIONS_JOB, due_actions, label="every minute", second=0,
                      grace=timedelta(minutes=10))

    calendar = work_calendar(config.community)
    quiet_start, quiet_end = config.notices.quiet_hours

    async def service_day_notices(fire_time: datetime) -> dict[str, int]:
        # the notice times are per-community settings: the job looks every few minutes whose time has come
        return await run_service_day_notices(clock.now(), scheduler.tz, calendar, quiet_start)

    scheduler.add_job(SERVICE_DAY_JOB, service_day_notices, label="every 5 minutes", minute="*/5", second=0,
                      grace=timedelta(minutes=30))

    times = NoticeTimes(tz=scheduler.tz, reminder_at=parse_hhmm(config.cases.reminder_at),
                        roundup_at=parse_hhmm(config.cases.roundup_at), quiet_start=quiet_start, quiet_end=quiet_end)

    # Both look every 5 minutes from their time until midnight (a scheduler that was down at the
    # time still sends that evening); each send is claimed in the database, so it goes once.
    async def session_reminders(fire_time: datetime) -> dict[str, int]:
        return await run_session_reminders(clock.now(), times)

    scheduler.add_job(SESSION_REMINDER_JOB, session_reminders,
                      label=f"daily every 5 minutes from {times.reminder_at:%H:%M}",
                      hour=f"{times.reminder_at.hour}-23", minute="*/5", second=0, grace=timedelta(minutes=30))

    async def roundup(fire_time: datetime) -> dict[str, int]:
        return await run_roundup(clock.now(), times)

    scheduler.add_job(ROUNDUP_JOB, roundup, label=f"Fridays every 5 minutes from {times.roundup_at:%H:%M}",
                      day_of_week="fri", hour=f"{times.roundup_at.hour}-23", minute="*/5", second=0,
                      grace=timedelta(minutes=30))

    async def errand_digests(fire_time: datetime) -> dict[str, int]:
        # the digest times are per-community settings: the job looks every few minutes whose time has come,
        # and each (community, day, time) is claimed in the database, so it goes once
        return await run_digests(clock.now(), scheduler.tz, quiet_start)

    scheduler.add_job(ERRAND_DIGEST_JOB, errand_digests, label="every 5 minutes", minute="*/5", second=0,
                      grace=timedelta(minutes=30))

    async def prune_finished() -> dict[str, int]:
        return await prune(clock.now())

    scheduler.add_daily(PRUNE_JOB, time(3, 40), prune_finished)
    return scheduler
