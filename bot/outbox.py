"""The outbox sender: drains models.outbox, rate-capped, replies first, retrying what is transient.

Error handling follows bot/wechat_rules: 43004 marks the resident unsubscribed; 45015/45047
(out of customer-service allowance) are recorded and not retried; -1 and 45009 are retried with
backoff; anything else is a permanent failure, recorded with its code.

An image message (models.media.image_payload) names a WeChat media id, when it was received, and
the stored copy of the photo, if any: the media id is sent while it is fresh, else (or when WeChat
no longer knows it) the stored copy is uploaded at send time and that upload reused while fresh.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections import deque
from collections.abc import AsyncIterator, Mapping
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
from models import media, outbox
from models.conversation import PendingPrompt, mark_delivered
from models.notices import refuse_consent
from models.outbox import Claimed, OutboxMessage, Priority, State, split_text
from models.residents import WechatAccount

log = logging.getLogger(__name__)

NOTICE_KEY = "notice:"  # models.notices: notice:<id>:<openid>
PROMPT_KEY = "prompt:"  # engine.ask_later's outbox key: prompt:<id>

BACKOFF_MAX = timedelta(minutes=10)
QUOTA_BACKOFF = timedelta(hours=1)


# How long an accepted message's 'sent' mark may wait in the buffer for others to share its UPDATE.
# The buffer is flushed sooner when nothing else is in flight; see models/outbox.py on duplicates.
FLUSH_SECONDS = 0.001


class Sender:
    """Claims due rows ahead of sending and sends them with ``concurrency`` workers.

    The shape, when running (``run``): a producer claims rows while earlier ones are still being
    sent, keeping at most ``window`` claimed and unfinished (``concurrency × 4``, or half a second
    at the rate cap if that is more), claiming again once half of it is free; each claimed row joins its
    recipient's group, and a worker takes a whole group (replies' groups first) and sends it in
    order, so one resident's messages never overtake each other, even across claims. A slot of
    ``concurrency`` is held from before a send until its outcome is written; 'sent' marks are
    written in bulk by a flusher, one UPDATE for what was accepted while the previous one ran, at
    most a millisecond later (models/outbox.py explains the bound on duplicates this keeps).
    """

    def __init__(
        self, client: WeChatClient, clock: Clock, cfg: OutboxConfig, metrics: Metrics | None = None, *,
        only_openid: str | None = None, templates: Mapping[str, str] | None = None, tz: ZoneInfo | None = None,
        channels: tuple[str, ...] = ("custom", "template"),
    ) -> None:
        self.client = client
        self.templates = dict(templates or {})  # purpose → template ID (wechat.templates)
        self.channels = channels  # notices to followers, in order of preference (notices.channels)
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
        self.concurrency = max(1, cfg.concurrency)
        # Claimed rows not yet finished, at most: enough for claims to be few (each reads every due
        # row; see models/outbox.claim_due) and no more than about half a second of sending.
        self.window = max(self.concurrency * 4, cfg.rate_per_second // 2)
        self._sent_metric = self.metrics.sends.labels("sent", "0")
        self._active = False
        self._reset()

    def _reset(self) -> None:
        self._groups: dict[str, deque[Claimed]] = {}  # openid → its claimed rows not yet taken, in order
        self._ready: asyncio.PriorityQueue[tuple[int, int, str]] = asyncio.PriorityQueue()
        self._order = itertools.count()
        self._owned = 0  # claimed rows whose outcome is not yet written
        # their ids: a row whose lease ran out while it waited here (a starved process) is claimed
        # again by this same sender, and must not be queued twice
        self._owned_ids: set[int] = set()
        self._progress = asyncio.Event()  # set when a claimed row is finished
        # sends in flight + accepted messages whose 'sent' mark is not yet written
        self._slots = asyncio.Semaphore(self.concurrency)
        self._in_flight = 0
        self._marks: list[Claimed] = []  # accepted by WeChat, 'sent' mark not yet written
        self._marks_added = asyncio.Event()

    def notify(self) -> None:
        """Something was enqueued: look now instead of at the next poll."""
        self.wake.set()

    async def run(self, stop: asyncio.Event) -> None:
        """Drain until ``stop`` is set; survives database and network hiccups.

        On stop, the sends in flight finish and are marked; claimed rows not yet started are given back.
        """
        async with self._pipeline():
            while not stop.is_set():
                room = self.window - self._owned
                # claim in batches of half the window: sent from while the other half drains, and few
                # enough claims a second (each sorts the due rows: see models/outbox.py)
                if room < max(1, self.window // 2):
                    self._progress.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._progress.wait(), timeout=self.cfg.poll_ms / 1000)
                    continue
                try:
                    claimed = await self._claim(room)
                except Exception:
                    log.exception("outbox sender: claiming failed; trying again shortly")
                    claimed = -1
                if claimed == room:
                    continue  # there may be more due
                self.wake.clear()
                try:
                    await asyncio.wait_for(self.wake.wait(), timeout=self.cfg.poll_ms / 1000)
                except TimeoutError:
                    pass
            # Stopping: what is claimed and not yet started goes back at once (not after its lease);
            # the sends in flight finish and are marked.
            unstarted = [message for group in self._groups.values() for message in group]
            for group in self._groups.values():
                group.clear()
            if unstarted:
                try:
                    await outbox.release([m.id for m in unstarted])
                except Exception:
                    log.exception("outbox sender: giving back %d claimed messages failed; they come back "
                                  "when their lease runs out", len(unstarted))
                self._finished(unstarted)

    async def drain_once(self) -> int:
        """Send what is due now (one claim of up to ``window``); returns how many were attempted."""
        if self._active:
            raise RuntimeError("drain_once while the sender runs")
        async with self._pipeline():
            return await self._claim(self.window)

    async def _claim(self, limit: int) -> int:
        claimed = await outbox.claim_due(self.clock.now(), limit=limit, lease=self.lease, openid=self.only_openid)
        batch = [message for message in claimed if message.id not in self._owned_ids]
        self._owned += len(batch)
        self._owned_ids.update(message.id for message in batch)
        for message in batch:  # in (priority, id) order
            group = self._groups.get(message.openid)
            if group is None:
                self._groups[message.openid] = deque((message,))
                self._ready.put_nowait((message.priority, next(self._order), message.openid))
            else:
                group.append(message)
        return len(batch)

    @contextlib.asynccontextmanager
    async def _pipeline(self) -> AsyncIterator[None]:
        """Workers and the flusher for the duration; on exit, waits until every claimed row is finished."""
        self._active = True
        self._reset()
        tasks = [asyncio.create_task(self._worker(), name=f"outbox-worker-{i}") for i in range(self.concurrency)]
        tasks.append(asyncio.create_task(self._flusher(), name="outbox-flusher"))
        try:
            yield
            while self._owned > 0:
                self._progress.clear()
                await self._progress.wait()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            try:
                await self._flush()  # only when cancelled: what WeChat accepted is marked before leaving
            finally:
                self._active = False
                # anything still claimed and not sent (cancelled) comes back when its lease runs out
                self._groups.clear()

    def _finished(self, messages: list[Claimed]) -> None:
        self._owned -= len(messages)
        self._owned_ids.difference_update(message.id for message in messages)
        self._progress.set()

    async def _worker(self) -> None:
        while True:
            _, _, openid = await self._ready.get()
            group = self._groups[openid]
            while group:  # more rows of this recipient may join from a later claim meanwhile
                await self._send_in_slot(group.popleft())
            del self._groups[openid]

    async def _send_in_slot(self, message: Claimed) -> None:
        await self._slots.acquire()
        try:
            async with self.limiter:
                self._in_flight += 1
                try:
                    accepted = await self._send(message)
                finally:
                    self._in_flight -= 1
        except Exception:
            # e.g. the database failing while recording a failure: the row stays 'sending' and is
            # tried again when its lease runs out
            log.exception("outbox sender: handling message %s failed", message.id)
            accepted = False
        except BaseException:
            self._slots.release()
            self._finished([message])
            raise
        if accepted:
            self._marks.append(message)  # its slot is given back once the mark is written
            self._marks_added.set()
        else:
            self._slots.release()
            self._finished([message])

    async def _flusher(self) -> None:
        while True:
            await self._marks_added.wait()
            if self._in_flight and len(self._marks) < self.concurrency // 2:
                await asyncio.sleep(FLUSH_SECONDS)  # let the sends in flight share the UPDATE
            self._marks_added.clear()
            await self._flush()

    async def _flush(self) -> None:
        """Write the buffered 'sent' marks in one UPDATE, then the follow-ups of those messages."""
        marks, self._marks = self._marks, []
        if not marks:
            return
        now = self.clock.now()
        try:
            while True:
                try:
                    await outbox.mark_sent_many([m.id for m in marks], now)
                    break
                except Exception:
                    # the slots stay taken meanwhile, so no more than `concurrency` go out unmarked
                    log.exception("outbox sender: marking %d messages sent failed; trying again", len(marks))
                    await asyncio.sleep(min(1.0, self.cfg.poll_ms / 1000))
        except BaseException:  # cancelled: the last flush on the way out tries them again
            self._marks[:0] = marks
            raise
        for _ in marks:
            self._slots.release()
        self._sent_metric.inc(len(marks))
        try:
            await self._after_sent(marks, now)
        except Exception:
            log.exception("outbox sender: recording the delivery of %d messages failed", len(marks))
        finally:
            self._finished(marks)

    async def _after_sent(self, messages: list[Claimed], now: datetime) -> None:
        """What a message reaching the phone settles: the prompts it carried count as delivered."""
        subjects: dict[str, list[str]] = {}
        for message in messages:
            if message.idempotency_key.startswith(PROMPT_KEY):
                # the question reached the phone: the first answer to it counts (engine.ask_later)
                await mark_delivered(int(message.idempotency_key[len(PROMPT_KEY):]), now)
            subject = message.payload.get("prompt_subject")
            if isinstance(subject, str) and subject:  # e.g. a notice with a question (models.notices)
                subjects.setdefault(subject, []).append(message.openid)
        for subject, openids in subjects.items():
            await PendingPrompt.filter(subject=subject, openid__in=openids, delivered_at=None).update(
                delivered_at=now)

    async def _deliver(self, message: Claimed) -> Any:
        p = message.payload
        if message.kind == "text":
            return await self.client.send_text(message.openid, p["content"])
        if message.kind == "image":
            return await self._send_image(message.openid, p)
        if message.kind == "template":
            return await self.client.send_template(message.openid, p["template_id"], p["data"], p.get("url", ""))
        if message.kind == "subscribe":
            return await self.client.send_subscribe(message.openid, p["template_id"], p["data"], p.get("page", ""),
                                                    app="mp" if message.channel == "mp" else "oa")
        raise ValueError(f"unknown outbox kind {message.kind!r}")

    async def _send_image(self, openid: str, p: Mapping[str, Any]) -> Any:
        media_id, stored = str(p.get("media_id") or ""), p.get("stored")
        received = datetime.fromisoformat(p["media_at"]) if p.get("media_at") else None
        fresh = received is not None and self.clock.now() - received < rules.MEDIA_ID_REUSE
        if media_id and (stored is None or fresh):
            try:
                return await self.client.send_image(openid, media_id)
            except WeChatAPIError as exc:
                if exc.errcode != rules.ERR_INVALID_MEDIA_ID or stored is None:
                    raise
        if stored is None:
            raise ValueError("an image message without a media id or a stored photo")
        return await self.client.send_image(openid, await self._uploaded(int(stored)))

    async def _uploaded(self, stored_id: int) -> str:
        """A fresh WeChat media id for a stored photo: its last upload while fresh, else a new one."""
        now = self.clock.now()
        recent = await media.uploaded_since(stored_id, now - rules.MEDIA_ID_REUSE)
        if recent:
            return recent
        row = await media.load(stored_id)
        if row is None:
            raise ValueError(f"stored photo {stored_id} is gone")
        if row.content_type not in rules.MEDIA_IMAGE_TYPES or row.size > rules.MEDIA_IMAGE_MAX_BYTES:
            raise ValueError(f"stored photo {stored_id} ({row.content_type}, {row.size} bytes) cannot be sent "
                             "as a WeChat image; it is shown in the mini-program")
        media_id = await self.client.media_upload(row.data, filename=row.filename)
        await media.remember_upload(stored_id, media_id, now)
        return media_id

    async def _send(self, message: Claimed) -> bool:
        """One attempt; True when WeChat accepted it (the caller buffers its 'sent' mark)."""
        if message.kind == "text" and message.payload.get("fallback_template") and self.channels[0] == "template":
            # notices.channels puts templates first: keep the window's allowance for replies
            await self._fall_back_to_template(message, None, self.clock.now())
            return False
        try:
            await self._deliver(message)
        except WeChatAPIError as exc:
            await self._failed(message, exc.errcode, exc.errmsg)
            return False
        except WeChatUnavailable as exc:
            await self._retry(message, None, str(exc))
            return False
        except ValueError as exc:
            await outbox.mark_failed(message.id, None, str(exc))
            self.metrics.sends.labels("failed", "none").inc()
            return False
        return True

    async def _failed(self, message: Claimed, code: int, text: str) -> None:
        now = self.clock.now()
        if code == rules.ERR_API_QUOTA and message.idempotency_key.startswith(NOTICE_KEY):
            await self._pause_notice(message, now)
            return
        if code == rules.ERR_SUBSCRIBE_REFUSED and message.payload.get("consent_id"):
            # the consent the client reported was not (or no longer) valid: the mini-program asks again
            await refuse_consent(int(message.payload["consent_id"]), now)
        if code in rules.ALLOWANCE_ERRORS and message.payload.get("fallback_template"):
            if "template" in self.channels:
                await self._fall_back_to_template(message, code, now)
                return
            text = "out of the allowance window; template messages are off (notices.channels)"
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

    async def _pause_notice(self, message: Claimed, now: datetime) -> None:
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

    async def _fall_back_to_template(self, message: Claimed, code: int | None, now: datetime) -> None:
        """A follower out of the customer-service window (``code``), or every follower when templates
        come first: the same row becomes the template message of that purpose and goes out again, so
        the notice's delivery record follows what finally happened."""
        purpose = str(message.payload["fallback_template"])
        template_id = self.templates.get(purpose)
        if not template_id:
            why = "out of the allowance window" if code is not None else "notices.channels asks for templates"
            await outbox.mark_failed(message.id, code, f"{why}; no '{purpose}' template configured")
            self.metrics.sends.labels("no_allowance", str(code)).inc()
            return
        why = f"out of the allowance window ({code})" if code is not None else "templates first (notices.channels)"
        await OutboxMessage.filter(id=message.id).update(
            kind="template", payload={"template_id": template_id, "data": message.payload.get("fallback_data", {})},
            state=State.PENDING, next_attempt_at=now, lease_until=None, error_code=code,
            error_message=f"{why}: sent as the '{purpose}' template message")
        self.metrics.sends.labels("fallback", str(code)).inc()
        self.notify()

    async def _retry(self, message: Claimed, code: int | None, text: str) -> None:
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
