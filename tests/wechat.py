"""Plays WeChat's servers against /wechat: signs, encrypts, pushes, and reads the reply."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

import defusedxml.ElementTree as SafeET
from wechatpy.crypto import PrpCrypto, WeChatCrypto

from bot.clock import FrozenClock
from bot.gateway import sign

TOKEN = "linli-test-token"
APPID = "wx0123456789abcdef"
AES_KEY = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"
OLD_AES_KEY = "ZYXWVUTSRQPONMLKJIHGFEDCBA9876543210zyxwvut"
OFFICIAL = "gh_linli_official"

_ids = itertools.count(6_000_000_000_000_000_001)


def text_xml(openid: str, content: str, msg_id: int | None = None, create_time: int = 0) -> str:
    return (
        f"<xml><ToUserName><![CDATA[{OFFICIAL}]]></ToUserName>"
        f"<FromUserName><![CDATA[{openid}]]></FromUserName><CreateTime>{create_time}</CreateTime>"
        f"<MsgType><![CDATA[text]]></MsgType><Content><![CDATA[{content}]]></Content>"
        f"<MsgId>{msg_id or next(_ids)}</MsgId></xml>"
    )


def message_xml(openid: str, msg_type: str, create_time: int, **fields: Any) -> str:
    body = "".join(f"<{k}><![CDATA[{v}]]></{k}>" for k, v in fields.items())
    return (
        f"<xml><ToUserName><![CDATA[{OFFICIAL}]]></ToUserName>"
        f"<FromUserName><![CDATA[{openid}]]></FromUserName><CreateTime>{create_time}</CreateTime>"
        f"<MsgType><![CDATA[{msg_type}]]></MsgType>{body}</xml>"
    )


@dataclass
class Pushed:
    status: int
    body: str
    reply: dict[str, str]  # the (decrypted) reply's fields; empty for "success" or errors
    raw_reply: dict[str, str]  # the reply as it came over the wire (encrypted envelope in AES)

    @property
    def text(self) -> str:
        return self.reply.get("Content", "")


class WeChatPusher:
    def __init__(self, client: Any, clock: FrozenClock, *, token: str = TOKEN,
                 aes_key: str = AES_KEY, appid: str = APPID, path: str = "/wechat") -> None:
        self.client = client
        self.clock = clock
        self.token = token
        self.aes_key = aes_key
        self.appid = appid
        self.path = path
        self._nonce = itertools.count(1000)

    def now(self) -> int:
        return int(self.clock.now().timestamp())

    def query(self, *, timestamp: int | None = None, nonce: str | None = None) -> dict[str, str]:
        ts = str(self.now() if timestamp is None else timestamp)
        nonce = nonce or str(next(self._nonce))
        return {"signature": sign(self.token, ts, nonce), "timestamp": ts, "nonce": nonce}

    def encrypt(self, xml: str, *, aes_key: str | None = None) -> str:
        key = WeChatCrypto(self.token, aes_key or self.aes_key, self.appid).key
        encrypted = PrpCrypto(key).encrypt(xml, self.appid)
        return encrypted.decode() if isinstance(encrypted, bytes) else encrypted

    async def push(self, xml: str, *, mode: str = "plain", aes_key: str | None = None,
                   query: dict[str, str] | None = None) -> Pushed:
        """POST one message in plain, compat or aes mode, as WeChat would."""
        q = dict(query or self.query())
        body = xml
        if mode in ("compat", "aes"):
            encrypt = self.encrypt(xml, aes_key=aes_key)
            q["encrypt_type"] = "aes"
            q["msg_signature"] = sign(self.token, q["timestamp"], q["nonce"], encrypt)
            if mode == "aes":
                body = (f"<xml><ToUserName><![CDATA[{OFFICIAL}]]></ToUserName>"
                        f"<Encrypt><![CDATA[{encrypt}]]></Encrypt></xml>")
            else:  # compatible mode: plaintext fields and the ciphertext side by side
                body = xml.replace("</xml>", f"<Encrypt><![CDATA[{encrypt}]]></Encrypt></xml>")
        resp = await self.client.post(self.path, params=q, data=body.encode())
        return await self._read(resp, encrypted=mode != "plain", aes_key=aes_key)

    async def _read(self, resp: Any, *, encrypted: bool, aes_key: str | None) -> Pushed:
        text = await resp.text()
        if resp.status != 200 or text in ("", "success"):
            return Pushed(resp.status, text, {}, {})
        raw = {child.tag: child.text or "" for child in SafeET.fromstring(text)}
        if not encrypted:
            return Pushed(resp.status, text, raw, raw)
        expected = sign(self.token, raw["TimeStamp"], raw["Nonce"], raw["Encrypt"])
        assert expected == raw["MsgSignature"], "the encrypted reply is not signed correctly"
        key = WeChatCrypto(self.token, aes_key or self.aes_key, self.appid).key
        plain = PrpCrypto(key).decrypt(raw["Encrypt"], self.appid)
        plain = plain.decode() if isinstance(plain, bytes) else plain
        reply = {child.tag: child.text or "" for child in SafeET.fromstring(plain)}
        return Pushed(resp.status, text, reply, raw)

    async def say(self, openid: str, content: str, *, mode: str = "plain") -> str:
        """Send a text as a resident and return the reply text."""
        pushed = await self.push(text_xml(openid, content, create_time=self.now()), mode=mode)
        assert pushed.status == 200, pushed.body
        return pushed.text

    async def _reply(self, xml: str) -> str:
        pushed = await self.push(xml)
        assert pushed.status == 200, pushed.body
        return pushed.text

    async def image(self, openid: str, media_id: str = "media-1", pic_url: str = "http://example.invalid/p.jpg") -> str:
        """Send a photo as a resident and return the reply text."""
        return await self._reply(message_xml(openid, "image", self.now(), PicUrl=pic_url, MediaId=media_id,
                                             MsgId=next(_ids)))

    async def location(self, openid: str, lat: float, lon: float, label: str = "") -> str:
        """Share a map location as a resident and return the reply text."""
        return await self._reply(message_xml(openid, "location", self.now(), Location_X=lat, Location_Y=lon,
                                             Scale=15, Label=label, MsgId=next(_ids)))

    async def voice(self, openid: str, recognition: str) -> str:
        """Send a voice message WeChat recognised as ``recognition`` and return the reply text."""
        return await self._reply(message_xml(openid, "voice", self.now(), MediaId=f"voice-{next(_ids)}",
                                             Format="amr", Recognition=recognition, MsgId=next(_ids)))

    async def event(self, openid: str, event: str, key: str = "") -> Pushed:
        xml = message_xml(openid, "event", self.now(), Event=event, EventKey=key)
        return await self.push(xml)
