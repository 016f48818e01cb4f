"""The outbox: every message to a resident is a row written before it is sent.

One sender drains it (bot/outbox.py). States: pending → sending → sent, or back to pending
with a later next_attempt_at for a transient failure, or failed (permanent; error recorded).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from tortoise import connections, fields
from tortoise.backends.asyncpg.client import AsyncpgDBClient
from tortoise.backends.base.client import BaseDBAsyncClient
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
    _no_comments = True  # see models/__init__.py

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


@dataclass(slots=True)
class Claimed:
    """A claimed outbox row: what the sender needs of it, without a model instance per message."""

    id: int
    openid: str
    channel: str
    kind: str
    payload: dict[str, Any]
    priority: int
    idempotency_key: str
    attempts: int


CLAIMED_COLUMNS = "id, openid, channel, kind, payload, priority, idempotency_key, attempts"

# One statement on PostgreSQL. The candidates are the first `limit` due rows by (priority, id),
# chosen without locking (so PostgreSQL keeps only the top `limit` while sorting, instead of
# sorting every due row under the lock); then those still due are locked, SKIP LOCKED (rows
# another sender is claiming at this moment are passed over, never taken twice; the condition is
# checked again on the locked row), and leased, all in one round trip. RETURNING gives no order:
# the caller sorts. The cost is the candidates' scan: no index gives (priority, id) among the due
# rows, so each claim reads every due row (about 30-50 ms with 100,000 waiting), which is why the
# sender claims in large batches. A partial index on (priority, id) WHERE state IN ('pending',
# 'sending') would make it an index scan of `limit` rows; the first condition is there to match it.
_DUE = ("state IN ('pending', 'sending') "
        "AND ((state = 'pending' AND next_attempt_at <= $2) OR (state = 'sending' AND lease_until < $2))")
_PG_CLAIM = f"""
WITH candidate AS MATERIALIZED (
    SELECT id FROM outbox WHERE {_DUE} {{openid}} ORDER BY priority, id LIMIT $3
)
UPDATE outbox SET state = 'sending', lease_until = $1
WHERE id IN (
    SELECT id FROM outbox WHERE id IN (SELECT id FROM candidate) AND {_DUE}
    FOR UPDATE SKIP LOCKED
)
RETURNING {CLAIMED_COLUMNS}
"""


def _is_asyncpg(conn: BaseDBAsyncClient) -> bool:
    return isinstance(conn, AsyncpgDBClient)  # $n placeholders, SKIP LOCKED


def _claimed(row: Mapping[str, Any]) -> Claimed:
    payload = row["payload"]
    if isinstance(payload, str | bytes):  # asyncpg hands jsonb back as text
        payload = json.loads(payload)
    return Claimed(int(row["id"]), row["openid"], row["channel"], row["kind"], payload, int(row["priority"]),
                   row["idempotency_key"], int(row["attempts"]))


async def claim_due(
    now: datetime, *, limit: int, lease: timedelta, openid: str | None = None
) -> list[Claimed]:
    """Take up to ``limit`` due messages for sending (state 'sending', leased), replies first.

    Returned in sending order: priority, then id (so one resident's messages keep their order).
    A message whose lease ran out while 'sending' (its sender died) is due again. On PostgreSQL
    the rows are locked with SKIP LOCKED, so several senders never take the same message.
    """
    conn = connections.get("default")
    if _is_asyncpg(conn):
        values: list[Any] = [now + lease, now, limit]
        extra = ""
        if openid is not None:
            values.append(openid)
            extra = "AND openid = $4"
        rows = await conn.execute_query_dict(_PG_CLAIM.format(openid=extra), values)
        claimed = [_claimed(r) for r in rows]
        claimed.sort(key=lambda m: (m.priority, m.id))
        return claimed
    due = Q(state=State.PENDING, next_attempt_at__lte=now) | Q(state=State.SENDING, lease_until__lt=now)
    if openid is not None:
        due &= Q(openid=openid)
    async with in_transaction():
        rows = (
            await OutboxMessage.filter(due)
            .order_by("priority", "id")
            .limit(limit)
            .select_for_update(skip_locked=True)
            .values(*CLAIMED_COLUMNS.split(", "))
        )
        if not rows:
            return []
        await OutboxMessage.filter(id__in=[r["id"] for r in rows]).update(state=State.SENDING,
                                                                          lease_until=now + lease)
        return [_claimed(r) for r in rows]


# WeChat has no idempotency key, so the only way a message goes out twice is a crash between
# WeChat accepting it and its 'sent' mark: the row is still 'sending' and is sent again when its
# lease runs out. The sender (bot/outbox.py) does not write one UPDATE per message: it keeps the
# ids WeChat accepted in a small buffer and marks them with one mark_sent_many (at most about a
# millisecond later, plus the previous UPDATE's round trip). That widens the window from one
# database round trip to the buffer: a crash may repeat what was in flight *and* what was
# buffered. The sender bounds both together: a concurrency slot is taken before a send and given
# back only once its outcome is written, so sends in flight plus accepted-but-unmarked messages
# never exceed outbox.concurrency, and neither do the duplicates after a crash (the price: a slot
# is held for the send and the mark, so concurrency needs slack above rate × WeChat's latency).
# The buffer is flushed when the sender stops; claimed rows not yet started are given back.
_PG_MARK_SENT = """
UPDATE outbox SET state = 'sent', sent_at = $1, lease_until = NULL, attempts = attempts + 1,
    error_code = NULL, error_message = ''
WHERE id = ANY($2::bigint[])
"""


async def mark_sent_many(message_ids: Sequence[int], now: datetime) -> None:
    """Mark messages WeChat accepted as sent, in one UPDATE."""
    if not message_ids:
        return
    conn = connections.get("default")
    if _is_asyncpg(conn):
        await conn.execute_query(_PG_MARK_SENT, [now, list(message_ids)])
        return
    await OutboxMessage.filter(id__in=list(message_ids)).update(
        state=State.SENT, sent_at=now, lease_until=None, attempts=F("attempts") + 1,
        error_code=None, error_message="",
    )


async def mark_sent(message_id: int, now: datetime) -> None:
    await mark_sent_many([message_id], now)


async def release(message_ids: Sequence[int]) -> None:
    """Give claimed messages that were not sent back to be claimed at once (a sender stopping)."""
    if message_ids:
        await OutboxMessage.filter(id__in=list(message_ids), state=State.SENDING).update(
            state=State.PENDING, lease_until=None)


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


def split_text(text: str, limit: int) -> list[str]:
    """Cut a text into parts of at most ``limit`` UTF-8 bytes, preferring line breaks."""
    parts: list[str] = []
    current = ""
    for line in text.splitlines(keepends=True):
        while len(line.encode()) > limit:  # a single over-long line: cut by characters
            head = line
            while len(head.encode()) > limit:
                head = head[: len(head) * 3 // 4 or 1]
            if current:
                parts.append(current)
                current = ""
            parts.append(head)
            line = line[len(head):]
        if len((current + line).encode()) > limit:
            parts.append(current)
            current = line
        else:
            current += line
    if current:
        parts.append(current)
    return [p.rstrip("\n") for p in parts if p.strip()]
