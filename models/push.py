"""Telling residents something in chat: written to the outbox once per key and account."""

from __future__ import annotations

from datetime import datetime

from models.outbox import Priority, enqueue
from models.residents import WechatAccount


async def push_text(resident_ids: list[int], text: str, key: str, now: datetime,
                    priority: int = Priority.NORMAL) -> int:
    """Write ``text`` down for every chat account of these residents (once per key); how many."""
    if not resident_ids:
        return 0
    accounts = await WechatAccount.filter(resident_id__in=resident_ids, channel__in=("oa", "chat"))
    for account in accounts:
        await enqueue(openid=account.openid, kind="text", payload={"content": text},
                      idempotency_key=f"{key}:{account.openid}", now=now, priority=priority)
    return len(accounts)
