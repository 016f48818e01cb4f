"""The outbox sender: drains models.outbox, rate-capped, replies first, retrying what is transient.

Error handling follows bot/wechat_rules: 43004 marks the resident unsubscribed; 45015/45047
(out of customer-service allowance) are recorded and not retried; -1 and 45009 are retried with
backoff; anything else is a permanent failure, recorded with its code.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from aiolimiter import AsyncLimiter
from tortoise.expressions import Q

from bot import wechat_rules as rules
from bot.clock import Clock
from bot.config import OutboxConfig, parse_hhmm
from bot.metrics import Metrics
from bot.wxclient import WeChatAPIError, WeChatClient, WeChatUnavailable
from models import outbox
from models.conversation import mark_delivered
from models.notices import refuse_consent
from models.outbox import OutboxMessage, Priority, State
from models.residents import WechatAccount

log = logging.getLogger(__name__)

NOTICE_KEY = "notice:"  # models.notices: notice:<id>:<openid>
PROMPT_KEY = "prompt:"  # engine.ask_later's outbox key: prompt:<id>

BACKOFF_MAX = timedelta(minutes=10)
QUOTA_BACKOFF = timedelta(hours=1)


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


class Sender:
    def __init__(
        self, client: WeChatClient, clock: Clock, cfg: OutboxConfig, metrics: Metrics | None = None, *,
        only_openid: str | None = None, templates: Mapping[str, str] | None = None, tz: ZoneInfo | None = None,
    ) -> None:
        self.client = client
        self.templates = dict(templates or {})  # purpose → template ID (wechat.templates)
        self.tz = tz or ZoneInfo("Asia/Shanghai")
        # `linli chat` sends only to its own resident, whose window the built-in fake knows;
        # what is for others waits in the outbox for their own session.
        self.only_openid = only_openid
        # Longer than one send with its timeouts, so a live sender's rows are never taken over.
        self.lease = timedelta(seconds=cfg.lease_seconds)
        self.clock = clock
        self.cfg = cfg
        self.metrics = metrics or Metrics()
        self.limiter = AsyncLimiter(cfg.rate_per_second, 1)
        self.wake = asyncio.Event()

    def notify(self) -> None:
        """Something was enqueued: look now instead of at the next poll."""
        self.wake.set()

    async def run(self, stop: asyncio.Event) -> None:
        """Drain until ``stop`` is set; survives database and network hiccups."""
        while not stop.is_set():
            try:
                sent = await self.drain_once()
            except Exception:
                log.exception("outbox sender: draining failed; trying again shortly")
                sent = 0
            if sent:
                continue
            self.wake.clear()
            try:
                await asyncio.wait_for(self.wake.wait(), timeout=self.cfg.poll_ms / 1000)
            except TimeoutError:
                pass

    async def drain_once(self) -> int:
        """Send what is due now (one batch); returns how many were attempted."""
        batch = await outbox.claim_due(self.clock.now(), limit=self.cfg.concurrency * 4, lease=self.lease,
                                       openid=self.only_openid)
        if not batch:
            return 0
        # Messages to one resident go one after another, in order (the parts of a split reply
        # must not overtake each other); different residents are sent to concurrently.
        by_openid: dict[str, list[OutboxMessage]] = {}
        for message in batch:
            by_openid.setdefault(message.openid, []).append(message)
        gate = asyncio.Semaphore(self.cfg.concurrency)

        async def in_order(messages: list[OutboxMessage]) -> None:
            async with gate:
                for message in messages:
                    async with self.limiter:
                        await self._send(message)

        await asyncio.gather(*(in_order(ms) for ms in by_openid.values()))
        return len(batch)

    async def _deliver(self, message: OutboxMessage) -> Any:
        p = message.payload
        if message.kind == "text":
            return await self.client.send_text(message.openid, p["content"])
        if message.kind == "image":
            return await self.client.send_image(message.openid, p["media_id"])
        if message.kind == "template":
            return await self.client.send_template(message.openid, p["template_id"], p["data"], p.get("url", ""))
        if message.kind == "subscribe":
            return await self.client.send_subscribe(message.openid, p["template_id"], p["data"], p.get("page", ""),
                                                    app="mp" if message.channel == "mp" else "oa")
        raise ValueError(f"unknown outbox kind {message.kind!r}")

    async def _send(self, message: OutboxMessage) -> None:
        try:
            await self._deliver(message)
        except WeChatAPIError as exc:
            await self._failed(message, exc.errcode, exc.errmsg)
            return
        except WeChatUnavailable as exc:
            await self._retry(message, None, str(exc))
            return
        except ValueError as exc:
            await outbox.mark_failed(message.id, None, str(exc))
            self.metrics.sends.labels("failed", "none").inc()
            return
        # Nothing between WeChat's answer and this mark: see models/outbox.py on duplicates.
        await outbox.mark_sent(message.id, self.clock.now())
        self.metrics.sends.labels("sent", "0").inc()
        if message.idempotency_key.startswith(PROMPT_KEY):
            # the question reached the phone: the first answer to it counts (engine.ask_later)
            await mark_delivered(int(message.idempotency_key[len(PROMPT_KEY):]), self.clock.now())

    async def _failed(self, message: OutboxMessage, code: int, text: str) -> None:
        now = self.clock.now()
        if code == rules.ERR_API_QUOTA and message.idempotency_key.startswith(NOTICE_KEY):
            await self._pause_notice(message, now)
            return
        if code == rules.ERR_SUBSCRIBE_REFUSED and message.payload.get("consent_id"):
            # the consent the client reported was not (or no longer) valid: the mini-program asks again
            await refuse_consent(int(message.payload["consent_id"]), now)
        if code in rules.ALLOWANCE_ERRORS and message.payload.get("fallback_template"):
            await self._fall_back_to_template(message, code, now)
            return
        if code in rules.TRANSIENT_ERRORS or code in rules.TOKEN_ERRORS:
            await self._retry(message, code, text)
            return
        await outbox.mark_failed(message.id, code, text)
        result = "no_allowance" if code in rules.ALLOWANCE_ERRORS else "failed"
        self.metrics.sends.labels(result, str(code)).inc()
        if code == rules.ERR_NOT_SUBSCRIBED:
            await WechatAccount.filter(openid=message.openid).update(subscribed=False, unsubscribed_at=now)
            log.info("outbox: recipient no longer follows the account; marked unsubscribed")
        elif code in rules.ALLOWANCE_ERRORS:
            log.warning("outbox: message %s is out of the customer-service allowance (%s)", message.id, code)
        else:
            log.error("outbox: message %s failed permanently with WeChat error %s", message.id, code)

    async def _pause_notice(self, message: OutboxMessage, now: datetime) -> None:
        """Daily quota reached: the whole notice waits until the configured reset time, then resumes."""
        at = parse_hhmm(self.cfg.quota_reset)
        local = now.astimezone(self.tz)
        reset = local.replace(hour=at.hour, minute=at.minute, second=0, microsecond=0)
        if reset <= local:
            reset += timedelta(days=1)
        prefix = message.idempotency_key.rsplit(":", 1)[0] + ":"
        paused = await OutboxMessage.filter(
            Q(id=message.id) | Q(idempotency_key__startswith=prefix, state=State.PENDING)
        ).update(state=State.PENDING, next_attempt_at=reset.astimezone(now.tzinfo), lease_until=None,
                 error_code=rules.ERR_API_QUOTA,
                 error_message=f"paused: daily quota reached; resumes {reset.isoformat()}")
        self.metrics.sends.labels("paused", str(rules.ERR_API_QUOTA)).inc()
        log.warning("outbox: daily quota reached; %d messages of %s paused until %s", paused, prefix[:-1],
                    reset.isoformat())

    async def _fall_back_to_template(self, message: OutboxMessage, code: int, now: datetime) -> None:
        """Outside the customer-service window: a follower gets the template message of that purpose."""
        purpose = str(message.payload["fallback_template"])
        template_id = self.templates.get(purpose)
        if not template_id:
            await outbox.mark_failed(message.id, code,
                                     f"out of the allowance window; no '{purpose}' template configured")
            self.metrics.sends.labels("no_allowance", str(code)).inc()
            return
        await outbox.enqueue(openid=message.openid, kind="template",
                             idempotency_key=message.idempotency_key + ":template",
                             payload={"template_id": template_id, "data": message.payload.get("fallback_data", {})},
                             now=now, priority=message.priority, channel=message.channel)
        await outbox.mark_failed(message.id, code, "out of the allowance window; sent as a template message")
        self.metrics.sends.labels("fallback", str(code)).inc()
        self.notify()

    async def _retry(self, message: OutboxMessage, code: int | None, text: str) -> None:
        now = self.clock.now()
        attempts = message.attempts + 1
        self.metrics.sends.labels("retry", str(code) if code is not None else "transport").inc()
        if attempts >= self.cfg.max_attempts:
            await outbox.mark_failed(message.id, code, f"gave up after {attempts} attempts: {text}")
            log.error("outbox: message %s gave up after %d attempts", message.id, attempts)
            return
        delay = QUOTA_BACKOFF if code == rules.ERR_API_QUOTA else min(BACKOFF_MAX, timedelta(seconds=2 ** attempts))
        await outbox.mark_retry(message.id, now + delay, code, text)


async def send_reply(openid: str, text: str, *, push_id: str, clock: Clock, sender: Sender | None,
                     first_part: int = 0) -> int:
    """Write a reply (split to WeChat's size) to the outbox as customer-service texts, replies first.

    The idempotency key ties each part to the push it answers, so a retry writes nothing twice.
    Returns how many parts were written.
    """
    parts = split_text(text, rules.CUSTOM_TEXT_MAX_BYTES)
    cap = rules.CS_AFTER_MESSAGE.messages
    if len(parts) > cap:  # beyond WeChat's allowance: say that something was left out
        note = "……（内容较长，未能全部发送，请联系社区工作人员）"
        parts = parts[:cap]
        parts[-1] = split_text(parts[-1], rules.CUSTOM_TEXT_MAX_BYTES - len(note.encode()))[0] + note
    now = clock.now()
    for index, part in enumerate(parts, start=first_part):
        await outbox.enqueue(openid=openid, kind="text", payload={"content": part},
                             idempotency_key=f"reply:{push_id}:{index}", now=now, priority=Priority.REPLY)
    if sender is not None and parts:
        sender.notify()
    return len(parts)
