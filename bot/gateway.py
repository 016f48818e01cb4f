"""The WeChat official-account message push endpoint.

Protocol: GET echoes ``echostr`` for a valid signature; POST carries a message in plaintext,
compatible or safe (AES) mode and is answered in the same mode. Every push is claimed once in
the shared store (SET NX), so WeChat's retries, even concurrent ones on other workers, cause
one effect and get the first delivery's reply.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from xml.etree.ElementTree import ParseError

import defusedxml.ElementTree as SafeET
from aiohttp import web
from defusedxml import DefusedXmlException
from redis.asyncio import Redis
from wechatpy import parse_message
from wechatpy.crypto import PrpCrypto, WeChatCrypto
from wechatpy.exceptions import InvalidAppIdException
from wechatpy.replies import TextReply

from bot import wechat_rules as rules
from bot.clock import Clock
from bot.config import WechatConfig
from bot.engine import Engine, Inbound
from bot.metrics import Metrics
from bot.outbox import send_reply, split_text
from bot.store import key

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 64 * 1024  # WeChat's pushes are a few KB; anything bigger is not WeChat
TIMESTAMP_WINDOW_S = 300  # older (or future) signed requests are refused as replays
CLAIM_TTL_S = 600  # longer than WeChat's retry window and the timestamp window
RETRY_WAIT_S = 4.5  # a retry waits this long for the first delivery's reply (WeChat waits 5 s)
# (The first delivery answers within wechat.reply_budget_ms, at most 4.5 s, by config validation.)
RETRY_POLL_S = 0.05


class Rejected(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def sign(*parts: str) -> str:
    """WeChat's SHA1 signature: the parts sorted, joined and hashed."""
    return hashlib.sha1("".join(sorted(parts)).encode()).hexdigest()


def _same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


@dataclass
class Decoded:
    xml: str
    aes_key: str | None  # the EncodingAESKey that decrypted it, None for plaintext


class MessageCrypto:
    """Decrypt with the current or the previous EncodingAESKey; encrypt with the one that worked."""

    prp_class: type[PrpCrypto] = PrpCrypto

    def __init__(self, cfg: WechatConfig) -> None:
        self.cfg = cfg
        self.keys = [k for k in (cfg.encoding_aes_key, cfg.previous_encoding_aes_key) if k]

    def decrypt(self, encrypt: str) -> tuple[str, str]:
        for aes_key in self.keys:
            crypto = WeChatCrypto(self.cfg.token, aes_key, self.cfg.appid)
            try:
                plain = self.prp_class(crypto.key).decrypt(encrypt, self.cfg.appid)
            except InvalidAppIdException:
                continue
            except Exception:  # wrong key: bad padding, garbage length, undecodable bytes
                continue
            return plain.decode() if isinstance(plain, bytes) else plain, aes_key
        raise Rejected(400, "cannot decrypt with any configured EncodingAESKey")

    def encrypt(self, xml: str, aes_key: str, nonce: str, timestamp: str) -> str:
        crypto = WeChatCrypto(self.cfg.token, aes_key, self.cfg.appid)
        encrypt = self.prp_class(crypto.key).encrypt(xml, self.cfg.appid)
        encrypt = encrypt.decode() if isinstance(encrypt, bytes) else encrypt
        signature = sign(self.cfg.token, timestamp, nonce, encrypt)
        return (
            f"<xml>\n<Encrypt><![CDATA[{encrypt}]]></Encrypt>\n"
            f"<MsgSignature><![CDATA[{signature}]]></MsgSignature>\n"
            f"<TimeStamp>{timestamp}</TimeStamp>\n<Nonce><![CDATA[{nonce}]]></Nonce>\n</xml>"
        )


def parse_xml(text: str) -> dict[str, str]:
    """A flat <xml> document as a dict; no DTD, no entities, nothing nested deeply."""
    try:
        root = SafeET.fromstring(text, forbid_dtd=True, forbid_entities=True,
                                 forbid_external=True)
    except (ParseError, DefusedXmlException, ValueError) as exc:
        raise Rejected(400, f"malformed XML: {type(exc).__name__}") from None
    if root.tag != "xml":
        raise Rejected(400, "root element is not <xml>")
    fields: dict[str, str] = {}
    for child in root:
        if len(child):
            # WeChat nests only in a few events (e.g. ScanCodeInfo); keep their text flat
            for grandchild in child:
                fields[grandchild.tag] = (grandchild.text or "").strip()
        fields[child.tag] = (child.text or "").strip()
    return fields


def to_inbound(fields: dict[str, str], xml: str) -> Inbound:
    """Turn a pushed message into the engine's Inbound via wechatpy's parser."""
    for required in ("ToUserName", "FromUserName", "CreateTime", "MsgType"):
        if not fields.get(required):
            raise Rejected(400, f"missing {required}")
    if not fields["CreateTime"].isdigit():
        raise Rejected(400, "CreateTime is not a number")
    try:
        message: Any = parse_message(xml)
    except Exception as exc:  # wechatpy raises assorted errors on odd field values
        raise Rejected(400, f"unparseable message: {type(exc).__name__}") from None
    openid = fields["FromUserName"][:64]
    mtype = fields["MsgType"].lower()
    if mtype == "text":
        return Inbound(openid, "text", text=message.content or "")
    if mtype == "voice":
        return Inbound(openid, "voice", text=fields.get("Recognition", ""),
                       media_id=message.media_id or "")
    if mtype == "image":
        return Inbound(openid, "image", media_id=message.media_id or "",
                       pic_url=message.image or "")
    if mtype == "location":
        try:
            lat, lon = float(fields.get("Location_X", "")), float(fields.get("Location_Y", ""))
        except ValueError:
            raise Rejected(400, "location without coordinates") from None
        return Inbound(openid, "location", latitude=lat, longitude=lon,
                       label=fields.get("Label", ""))
    if mtype == "link":
        return Inbound(openid, "link", url=fields.get("Url", ""), title=fields.get("Title", ""))
    if mtype in ("video", "shortvideo"):
        return Inbound(openid, "video", media_id=fields.get("MediaId", ""))
    if mtype == "event":
        event = fields.get("Event", "").lower()
        event_key = fields.get("EventKey", "")
        if event == "subscribe" and event_key.startswith("qrscene_"):
            event_key = event_key[len("qrscene_"):]
        return Inbound(openid, "event", event=event, event_key=event_key)
    return Inbound(openid, "other")


def dedup_id(fields: dict[str, str]) -> str:
    """WeChat's retry identity: FromUserName+MsgId, or for events FromUserName+CreateTime+Event+EventKey."""
    sender = fields["FromUserName"]
    if fields.get("MsgId"):
        return f"m:{sender}:{fields['MsgId']}"
    return (
        f"e:{sender}:{fields['CreateTime']}:{fields.get('Event', '')}:{fields.get('EventKey', '')}"
    )


class Gateway:
    def __init__(
        self, cfg: WechatConfig, engine: Engine, store: Redis, clock: Clock, *,
        metrics: Metrics | None = None, on_inbound: Callable[[Inbound], None] | None = None,
    ) -> None:
        self.cfg = cfg
        self.engine = engine
        self.store = store
        self.clock = clock
        self.crypto = MessageCrypto(cfg)
        self.metrics = metrics or Metrics()
        self.on_inbound = on_inbound  # the in-process fake WeChat learns of interactions here
        self.budget_s = cfg.reply_budget_ms / 1000
        self._late: set[asyncio.Task[None]] = set()

    async def close(self) -> None:
        """Wait for late replies still being prepared, so they reach the outbox."""
        if self._late:
            await asyncio.wait(self._late, timeout=30)

    # -- checks shared by GET and POST

    def _check_query(self, request: web.Request) -> tuple[str, str]:
        q = request.query
        signature, timestamp, nonce = q.get("signature", ""), q.get("timestamp", ""), q.get("nonce", "")
        if not (signature and timestamp and nonce):
            raise Rejected(403, "missing signature parameters")
        if not _same(sign(self.cfg.token, timestamp, nonce), signature):
            raise Rejected(403, "bad signature")
        if not timestamp.isdigit() or abs(self.clock.now().timestamp() - int(timestamp)) > TIMESTAMP_WINDOW_S:
            raise Rejected(403, "stale timestamp")
        return timestamp, nonce

    async def verify(self, request: web.Request) -> web.Response:
        """GET: WeChat checks the URL; echo echostr for a valid signature."""
        try:
            self._check_query(request)
        except Rejected as exc:
            log.warning("wechat GET rejected: %s", exc.reason)
            return web.Response(status=exc.status, text="forbidden")
        return web.Response(text=request.query.get("echostr", ""))

    async def _read_body(self, request: web.Request) -> str:
        if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
            raise Rejected(400, "body too large")
        body = await request.content.read(MAX_BODY_BYTES + 1)
        if len(body) > MAX_BODY_BYTES:
            raise Rejected(400, "body too large")
        if not body.strip():
            raise Rejected(400, "empty body")
        try:
            return body.decode("utf-8")
        except UnicodeDecodeError:
            raise Rejected(400, "body is not UTF-8") from None

    def _decode(self, request: web.Request, body: str, timestamp: str, nonce: str) -> Decoded:
        encrypt_type = request.query.get("encrypt_type", "raw").lower()
        outer = parse_xml(body)
        if encrypt_type == "raw":
            return Decoded(body, None)
        if encrypt_type != "aes":
            raise Rejected(400, f"unknown encrypt_type {encrypt_type!r}")
        msg_signature = request.query.get("msg_signature", "")
        encrypt = outer.get("Encrypt", "")
        if not msg_signature:
            raise Rejected(403, "missing msg_signature")
        if not encrypt:
            raise Rejected(400, "no Encrypt element")
        if not _same(sign(self.cfg.token, timestamp, nonce, encrypt), msg_signature):
            raise Rejected(403, "bad msg_signature")
        if not self.crypto.keys:
            raise Rejected(400, "encrypted push but no EncodingAESKey configured")
        xml, aes_key = self.crypto.decrypt(encrypt)
        return Decoded(xml, aes_key)

    async def receive(self, request: web.Request) -> web.Response:
        """POST: one pushed message → one effect → the passive reply, in the request's mode."""
        try:
            timestamp, nonce = self._check_query(request)
            body = await self._read_body(request)
            decoded = self._decode(request, body, timestamp, nonce)
            fields = parse_xml(decoded.xml)
            inbound = to_inbound(fields, decoded.xml)
        except Rejected as exc:
            log.warning("wechat POST rejected: %s", exc.reason)
            self.metrics.rejected.labels(str(exc.status)).inc()
            return web.Response(status=exc.status, text="forbidden" if exc.status == 403 else "bad request")
        self.metrics.pushes.labels(inbound.kind if inbound.kind != "event" else f"event:{inbound.event}").inc()
        if self.on_inbound is not None:
            self.on_inbound(inbound)
        text = await self._handle_once(dedup_id(fields), inbound)
        if text is None:
            self.metrics.replies.labels("error").inc()
            return web.Response(status=500, text="error")
        if not text:
            self.metrics.replies.labels("empty").inc()
            return web.Response(text="success")
        self.metrics.replies.labels("passive").inc()
        reply = TextReply(
            source=fields["ToUserName"], target=fields["FromUserName"], content=text,
            time=int(self.clock.now().timestamp()),
        ).render()
        if decoded.aes_key is not None:
            reply = self.crypto.encrypt(reply, decoded.aes_key, nonce,
                                        str(int(self.clock.now().timestamp())))
        return web.Response(text=reply, content_type="application/xml")

    async def _handle_once(self, push_id: str, inbound: Inbound) -> str | None:
        """Claim the push atomically; the claimant handles it, a retry waits for its reply."""
        claim = key("push", push_id)
        if await self.store.set(claim, json.dumps({"done": False}), nx=True, ex=CLAIM_TTL_S):
            return await self._handle_claimed(claim, push_id, inbound)
        self.metrics.duplicates.inc()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + RETRY_WAIT_S
        while True:
            raw = await self.store.get(claim)
            if raw is None:
                return None  # the first delivery failed and released its claim: let WeChat retry
            record = json.loads(raw)
            if record.get("done"):
                log.info("answered a WeChat retry from the first delivery's reply")
                return str(record.get("reply", ""))
            if loop.time() >= deadline:
                return ""  # still working past the budget: its reply goes through the outbox
            await asyncio.sleep(RETRY_POLL_S)

    async def _handle_claimed(self, claim: str, push_id: str, inbound: Inbound) -> str | None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        task = asyncio.ensure_future(self.engine.handle(inbound))
        done, _ = await asyncio.wait({task}, timeout=self.budget_s)
        if not done:
            # WeChat gives up at 5 s: answer "success" now and send the reply when it is ready.
            self.metrics.fallbacks.inc()
            await self._store_reply(claim, "")
            late = asyncio.create_task(self._reply_late(task, push_id, inbound.openid, started))
            self._late.add(late)
            late.add_done_callback(self._late.discard)
            return ""
        try:
            reply = task.result()
        except Exception:
            log.exception("handling a WeChat push failed; releasing its claim for a retry")
            await self.store.delete(claim)
            return None
        self.metrics.step_seconds.observe(loop.time() - started)
        passive = reply.text
        if len(passive.encode()) > rules.PASSIVE_REPLY_MAX_BYTES:
            # The first part answers now; the rest is written to the outbox before we answer.
            first, *rest = split_text(passive, rules.PASSIVE_REPLY_MAX_BYTES)
            await send_reply(inbound.openid, "\n".join(rest), push_id=push_id,
                             clock=self.clock, sender=self.engine.sender, first_part=1)
            passive = first
        await self._store_reply(claim, passive)
        return passive

    async def _store_reply(self, claim: str, text: str) -> None:
        await self.store.set(claim, json.dumps({"done": True, "reply": text}, ensure_ascii=False), ex=CLAIM_TTL_S)

    async def _reply_late(self, task: asyncio.Future[Any], push_id: str, openid: str, started: float) -> None:
        """The slow step's reply, as customer-service messages through the outbox."""
        try:
            reply = await task
        except Exception:
            log.exception("a slow WeChat push failed after its budget")
            text = "抱歉，刚才的消息没有处理成功，请稍后再发一次。"
        else:
            text = reply.text
            self.metrics.step_seconds.observe(asyncio.get_running_loop().time() - started)
        if text:
            await send_reply(openid, text, push_id=push_id, clock=self.clock, sender=self.engine.sender)
