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
from zoneinfo import ZoneInfo

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.cron import CronTrigger

from bot.clock import Clock
from bot.config import Config, PrivacyConfig
from models.privacy import Retention, retention_sweep

log = logging.getLogger(__name__)

JobFn = Callable[[], Awaitable[object]]

MISFIRE_GRACE = timedelta(hours=1)

RETENTION_JOB = "privacy.retention"


@dataclass(frozen=True)
class JobInfo:
    name: str
    trigger: str  # e.g. "daily 03:30"


class Scheduler:
    """Named jobs; ``start`` inside the running event loop, ``stop`` before it closes."""

    def __init__(self, tz: ZoneInfo, *, misfire_grace: timedelta = MISFIRE_GRACE) -> None:
        self.tz = tz
        self.misfire_grace = misfire_grace
        self._aps = AsyncIOScheduler(timezone=tz)
        self._jobs: dict[str, JobFn] = {}
        self._triggers: dict[str, CronTrigger] = {}
        self._labels: dict[str, str] = {}

    def add_daily(self, name: str, at: time, fn: JobFn) -> None:
        """Run ``fn()`` every day at ``at`` (community time)."""
        if name in self._jobs:
            raise ValueError(f"job {name} added twice")
        trigger = CronTrigger(hour=at.hour, minute=at.minute, second=0, timezone=self.tz)
        self._jobs[name] = fn
        self._triggers[name] = trigger
        self._labels[name] = f"daily {at.hour:02d}:{at.minute:02d}"
        self._aps.add_job(
            self._run, trigger, args=(name,), id=name, name=name,
            misfire_grace_time=int(self.misfire_grace.total_seconds()), coalesce=True, max_instances=1,
        )

    def jobs(self) -> list[JobInfo]:
        return [JobInfo(name, self._labels[name]) for name in self._jobs]

    def next_run(self, name: str, after: datetime) -> datetime | None:
        """When job ``name`` fires next after ``after`` (aware), in the community's time zone."""
        fire: datetime | None = self._triggers[name].get_next_fire_time(None, after.astimezone(self.tz))
        return fire

    async def run(self, name: str) -> object:
        """Run one job now, as its schedule would (errors propagate to the caller)."""
        return await self._jobs[name]()

    async def _run(self, name: str) -> None:
        try:
            result = await self._jobs[name]()
        except Exception:
            log.exception("scheduled job %s failed", name)
        else:
            log.info("scheduled job %s done: %s", name, result)

    @property
    def running(self) -> bool:
        return bool(self._aps.running)

    def start(self) -> None:
        """Begin firing jobs; must be called with the event loop running."""
        self._aps.start()
        log.info("scheduler started (%s): %s", self.tz.key,
                 ", ".join(f"{j.name} {j.trigger}" for j in self.jobs()) or "no jobs")

    async def stop(self) -> None:
        """Stop firing jobs; a job in flight is cancelled (each job is one transaction)."""
        if self._aps.running:
            self._aps.shutdown(wait=False)
            await asyncio.sleep(0)  # AsyncIOScheduler shuts down in a callback on the loop: let it run


# ---------------------------------------------------------------------------- the service's jobs


def retention_of(privacy: PrivacyConfig) -> Retention:
    return Retention(
        audit_days=privacy.audit_days, messages_days=privacy.messages_days, prompts_days=privacy.prompts_days,
        link_requests_days=privacy.link_requests_days, unbound_accounts_days=privacy.unbound_accounts_days,
        erased_residents_days=privacy.erased_residents_days,
    )


async def run_retention(config: Config, clock: Clock) -> dict[str, int]:
    """Delete what outlived its period in ``[privacy]``; counts by kind (the sweep logs them too)."""
    return await retention_sweep(retention_of(config.privacy), clock.now())


def service_scheduler(config: Config, clock: Clock) -> Scheduler:
    """The scheduler with every job of the service added (not started)."""
    scheduler = Scheduler(ZoneInfo(config.community.timezone))
    scheduler.add_daily(RETENTION_JOB, config.privacy.sweep_time, partial(run_retention, config, clock))
    return scheduler
