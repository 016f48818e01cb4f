"""The outbox: every message to a resident is a row written before it is sent.

One sender drains it (bot/outbox.py). States: pending → sending → sent, or back to pending
with a later next_attempt_at for a transient failure, or failed (permanent; error recorded).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from tortoise import fields
from tortoise.exceptions import IntegrityError
from tortoise.expressions import F, Q
from tortoise.models import Model
from tortoise.transactions import in_transaction


class Priority:
    REPLY = 0  # an answer to the resident's own message: goes first
    NORMAL = 1  # progress updates, prompts
    BULK = 2  # broadcast notices


class State:
    PENDING = "pending"
    SENDING = "sending"
    SENT = "sent"
    FAILED = "failed"


class OutboxMessage(Model):
    id = fields.BigIntField(primary_key=True)
    openid = fields.CharField(max_length=64, db_index=True)
    channel = fields.CharField(max_length=8, default="oa")
    kind = fields.CharField(max_length=16)  # text | image | template | subscribe
    payload: dict[str, Any] = fields.JSONField()
    priority = fields.SmallIntField(default=Priority.NORMAL)
    idempotency_key = fields.CharField(max_length=128, unique=True)
    state = fields.CharField(max_length=16, default=State.PENDING)
    attempts = fields.IntField(default=0)
    next_attempt_at = fields.DatetimeField()
    lease_until = fields.DatetimeField(null=True)
    error_code = fields.IntField(null=True)
    error_message = fields.CharField(max_length=200, default="")
    created_at = fields.DatetimeField()
    sent_at = fields.DatetimeField(null=True)

    class Meta:
        table = "outbox"
        indexes = (("state", "priority", "next_attempt_at"),)


async def enqueue(
    *, openid: str, kind: str, payload: dict[str, Any], idempotency_key: str, now: datetime,
    priority: int = Priority.NORMAL, channel: str = "oa",
) -> OutboxMessage:
    """Write a message down once: the same idempotency key returns the row already there."""
    existing = await OutboxMessage.get_or_none(idempotency_key=idempotency_key)
    if existing is not None:
        return existing
    try:
        return await OutboxMessage.create(
            openid=openid, kind=kind, payload=payload, idempotency_key=idempotency_key,
            priority=priority, channel=channel, next_attempt_at=now, created_at=now,
        )
    except IntegrityError:  # a concurrent enqueue with the same key won
        return await OutboxMessage.get(idempotency_key=idempotency_key)


async def claim_due(
    now: datetime, *, limit: int, lease: timedelta, openid: str | None = None
) -> list[OutboxMessage]:
    """Take up to ``limit`` due messages for sending, replies first.

    A message whose lease ran out while 'sending' (its sender died) is due again. On PostgreSQL
    the rows are locked with SKIP LOCKED, so several senders never take the same message.
    """
    due = Q(state=State.PENDING, next_attempt_at__lte=now) | Q(state=State.SENDING, lease_until__lt=now)
    if openid is not None:
        due &= Q(openid=openid)
    async with in_transaction():
        rows = (
            await OutboxMessage.filter(due)
            .order_by("priority", "id")
            .limit(limit)
            .select_for_update(skip_locked=True)
        )
        if not rows:
            return []
        ids = [r.id for r in rows]
        await OutboxMessage.filter(id__in=ids).update(state=State.SENDING, lease_until=now + lease)
        for r in rows:
            r.state = State.SENDING
            r.lease_until = now + lease
        return rows


# Each mark_* is one short UPDATE right after WeChat's answer. WeChat has no idempotency key, so
# the only way a message goes out twice is a crash between WeChat accepting it and this UPDATE:
# the row is still 'sending' and is sent again when its lease runs out. Keeping that window to
# one round trip to the database (no other work between the send and the mark) keeps it small.
async def mark_sent(message_id: int, now: datetime) -> None:
    await OutboxMessage.filter(id=message_id).update(
        state=State.SENT, sent_at=now, lease_until=None, attempts=F("attempts") + 1,
        error_code=None, error_message="",
    )


async def mark_retry(message_id: int, when: datetime, code: int | None, message: str) -> None:
    await OutboxMessage.filter(id=message_id).update(
        state=State.PENDING, next_attempt_at=when, lease_until=None,
        attempts=F("attempts") + 1, error_code=code, error_message=message[:200],
    )


async def mark_failed(message_id: int, code: int | None, message: str) -> None:
    await OutboxMessage.filter(id=message_id).update(
        state=State.FAILED, lease_until=None, attempts=F("attempts") + 1,
        error_code=code, error_message=message[:200],
    )


async def backlog(now: datetime) -> list[tuple[int, int, float]]:
    """(priority, messages waiting, age in seconds of the oldest) for messages not yet sent."""
    out = []
    waiting = OutboxMessage.filter(state__in=[State.PENDING, State.SENDING])
    for priority in (Priority.REPLY, Priority.NORMAL, Priority.BULK):
        rows = waiting.filter(priority=priority)
        count = await rows.count()
        oldest = await rows.order_by("created_at").first()
        age = (now - oldest.created_at).total_seconds() if oldest else 0.0
        out.append((priority, count, age))
    return out
