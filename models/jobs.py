"""Timed work that survives restarts and double schedulers.

- ``JobRun``: one row per (job, scheduled fire time). Inserting it is the claim: a second
  scheduler started by mistake fails the unique constraint and skips, on SQLite and PostgreSQL
  alike. The newest row of a job is its last claimed fire time, from which missed runs are
  computed at start-up.
- ``DueAction``: a due time, an action name and a target (a case deadline, a voucher expiry, a
  prompt's timeout). Later flows register a handler per action name (``register_action``) and
  schedule rows; one periodic job sweeps what is due. A restart loses none.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

from tortoise import fields
from tortoise.exceptions import IntegrityError
from tortoise.expressions import Q
from tortoise.models import Model
from tortoise.transactions import in_transaction

log = logging.getLogger(__name__)


class RunStatus:
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    MISSED = "missed"  # due while no scheduler ran, found past its grace time


class JobRun(Model):
    _no_comments = True  # see models/__init__.py

    id = fields.BigIntField(primary_key=True)
    job = fields.CharField(max_length=64)
    fire_time = fields.DatetimeField()
    status = fields.CharField(max_length=12, default=RunStatus.RUNNING)
    claimed_at = fields.DatetimeField()
    finished_at = fields.DatetimeField(null=True)
    error = fields.CharField(max_length=200, default="")

    class Meta:
        table = "job_run"
        unique_together = (("job", "fire_time"),)


async def claim_run(job: str, fire_time: datetime, now: datetime, *, status: str = RunStatus.RUNNING) -> JobRun | None:
    """The run of ``job`` due at ``fire_time``, if this caller is the first to claim it."""
    fire_time, now = fire_time.astimezone(UTC), now.astimezone(UTC)  # one spelling per instant
    try:
        async with in_transaction():
            return await JobRun.create(job=job, fire_time=fire_time, status=status, claimed_at=now,
                                       finished_at=now if status == RunStatus.MISSED else None)
    except IntegrityError:
        return None


async def finish_run(run: JobRun, now: datetime, error: str = "") -> None:
    run.status = RunStatus.FAILED if error else RunStatus.DONE
    run.finished_at = now
    run.error = error[:200]
    await run.save(update_fields=["status", "finished_at", "error"])


async def last_fire_time(job: str) -> datetime | None:
    row = await JobRun.filter(job=job).order_by("-fire_time").first()
    return row.fire_time if row else None


async def prune(now: datetime, *, keep: timedelta = timedelta(days=30)) -> dict[str, int]:
    """Forget finished runs and actions older than ``keep``. A job's newest run always stays: it
    is the job's last claimed fire time."""
    cutoff = now.astimezone(UTC) - keep
    recent = set(await JobRun.filter(fire_time__gte=cutoff).distinct().values_list("job", flat=True))
    newest_old: dict[str, int] = {}
    old = await JobRun.filter(fire_time__lt=cutoff).exclude(status=RunStatus.RUNNING).order_by(
        "-fire_time").values_list("id", "job")
    for run_id, job in old:
        if job not in recent:
            newest_old.setdefault(str(job), int(run_id))
    kept = set(newest_old.values())
    doomed = [int(run_id) for run_id, _ in old if int(run_id) not in kept]
    runs = 0
    for start in range(0, len(doomed), 500):
        runs += await JobRun.filter(id__in=doomed[start:start + 500]).delete()
    actions = await DueAction.filter(
        status__in=[ActionStatus.DONE, ActionStatus.CANCELLED, ActionStatus.FAILED], due_at__lt=cutoff).delete()
    return {"job_runs": runs, "due_actions": actions}


# ---------------------------------------------------------------------------- due actions


class ActionStatus:
    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


MAX_ATTEMPTS = 5
LEASE = timedelta(minutes=5)


class DueAction(Model):
    _no_comments = True  # see models/__init__.py

    id = fields.BigIntField(primary_key=True)
    action = fields.CharField(max_length=48)
    target = fields.CharField(max_length=64)  # e.g. "case:42"
    due_at = fields.DatetimeField()
    key = fields.CharField(max_length=160, unique=True)  # scheduling twice is one row
    status = fields.CharField(max_length=12, default=ActionStatus.PENDING)
    attempts = fields.IntField(default=0)
    lease_until = fields.DatetimeField(null=True)
    last_error = fields.CharField(max_length=200, default="")
    created_at = fields.DatetimeField()
    done_at = fields.DatetimeField(null=True)

    class Meta:
        table = "due_action"
        indexes = (("status", "due_at"), ("action", "target"))


ActionHandler = Callable[[str, datetime], Awaitable[None]]
_ACTIONS: dict[str, ActionHandler] = {}


def register_action(name: str) -> Callable[[ActionHandler], ActionHandler]:
    """Register the handler of an action: ``handler(target, now)``; it must be idempotent, since
    a sweeper that dies mid-action leaves it to run again after its lease."""

    def register(fn: ActionHandler) -> ActionHandler:
        if name in _ACTIONS and _ACTIONS[name] is not fn:
            raise ValueError(f"due action {name} registered twice")
        _ACTIONS[name] = fn
        return fn

    return register


def registered_actions() -> list[str]:
    return sorted(_ACTIONS)


async def schedule_action(action: str, target: str, due_at: datetime, now: datetime, *, key: str = "") -> DueAction:
    """Schedule ``action`` on ``target`` at ``due_at`` (once per key; default key: action, target, due time)."""
    if action not in _ACTIONS:
        raise ValueError(f"no handler registered for due action {action}")
    due_at, now = due_at.astimezone(UTC), now.astimezone(UTC)
    key = key or f"{action}:{target}:{due_at.isoformat()}"
    row, _ = await DueAction.get_or_create(key=key, defaults={
        "action": action, "target": target, "due_at": due_at, "created_at": now})
    return row


async def cancel_actions(action: str, target: str) -> int:
    """Cancel what is still pending of ``action`` on ``target`` (e.g. a case resolved before its deadline)."""
    return await DueAction.filter(action=action, target=target, status=ActionStatus.PENDING).update(
        status=ActionStatus.CANCELLED)


async def sweep_due(now: datetime, *, limit: int = 200) -> dict[str, int]:
    """Run the due actions (and those whose sweeper died past its lease); counts by outcome."""
    now = now.astimezone(UTC)
    counts = {"done": 0, "retry": 0, "failed": 0, "skipped": 0}
    due = await DueAction.filter(
        Q(status=ActionStatus.PENDING, due_at__lte=now)
        | Q(status=ActionStatus.RUNNING, lease_until__lt=now)
    ).order_by("due_at", "id").limit(limit)
    for row in due:
        # the claim: only one sweeper moves the row to running with its own lease
        claimed = await DueAction.filter(id=row.id, status=row.status, attempts=row.attempts).update(
            status=ActionStatus.RUNNING, lease_until=now + LEASE, attempts=row.attempts + 1)
        if not claimed:
            counts["skipped"] += 1
            continue
        handler = _ACTIONS.get(row.action)
        try:
            if handler is None:
                raise LookupError(f"no handler registered for {row.action}")
            await handler(row.target, now)
        except Exception as exc:
            attempts = row.attempts + 1
            if attempts >= MAX_ATTEMPTS or handler is None:
                await DueAction.filter(id=row.id).update(status=ActionStatus.FAILED, lease_until=None,
                                                         last_error=f"{type(exc).__name__}: {exc}"[:200])
                counts["failed"] += 1
                log.exception("due action %s on %s failed for good", row.action, row.target)
            else:
                await DueAction.filter(id=row.id).update(
                    status=ActionStatus.PENDING, lease_until=None, due_at=now + timedelta(minutes=2**attempts),
                    last_error=f"{type(exc).__name__}: {exc}"[:200])
                counts["retry"] += 1
                log.warning("due action %s on %s failed (attempt %d): %s", row.action, row.target, attempts, exc)
            continue
        await DueAction.filter(id=row.id).update(status=ActionStatus.DONE, lease_until=None, done_at=now)
        counts["done"] += 1
    return counts
