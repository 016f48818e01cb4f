"""Telling residents something in chat: written to the outbox once per key and account."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from models.outbox import Priority, enqueue, split_text
from models.residents import WechatAccount

# WeChat's limit on one customer-service text (bot.wechat_rules.CUSTOM_TEXT_MAX_BYTES; a test holds them equal)
TEXT_MAX_BYTES = 2000


async def push_text(resident_ids: list[int], text: str, key: str, now: datetime,
                    priority: int = Priority.NORMAL, notice: dict[str, str] | None = None) -> int:
    """Write ``text`` down for every chat account of these residents (once per key); how many.

    A text longer than WeChat takes in one message (a kitchen's count of a big meal) goes as
    several, cut at line breaks, in order. ``notice`` (``first``, ``keyword1``, ``remark``) is
    for what must reach someone who has not written to us lately: outside WeChat's
    customer-service window the sender sends it as the 'notice' template message instead
    (wechat.templates; a one-part text only)."""
    if not resident_ids:
        return 0
    accounts = await WechatAccount.filter(resident_id__in=resident_ids, channel__in=("oa", "chat"))
    parts = split_text(text, TEXT_MAX_BYTES) if len(text.encode()) > TEXT_MAX_BYTES else [text]
    fallback: dict[str, Any] = {}
    if notice is not None and len(parts) == 1:
        fallback = {"fallback_template": "notice",
                    "fallback_data": {name: {"value": value} for name, value in notice.items()}}
    for account in accounts:
        for number, part in enumerate(parts):
            suffix = f"#{number}" if number else ""
            await enqueue(openid=account.openid, kind="text", payload={"content": part, **fallback},
                          idempotency_key=f"{key}{suffix}:{account.openid}", now=now, priority=priority)
    return len(accounts)
