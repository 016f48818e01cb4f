"""The outbound WeChat API client: one small async client for every call the service makes.

wechatpy's own client is synchronous (requests, no timeout) and refreshes the token without a
lock, so outbound calls go through this client instead: aiohttp with timeouts, the access token
from ``stable_token`` cached in the shared store and refreshed under a store lock (workers never
overwrite each other's token), and one retry when WeChat says the token is invalid or expired.
"""

from __future__ import annotations

import json
import logging
import time
import urllib.parse
from typing import Any

import aiohttp
from redis.asyncio import Redis

from bot import wechat_rules as rules
from bot.config import MiniprogramConfig, WechatConfig
from bot.store import key

log = logging.getLogger(__name__)

TOKEN_MEMO_SECONDS = 5.0

TIMEOUT = aiohttp.ClientTimeout(total=10, connect=3)
SHOWQRCODE_BASE_URL = "https://mp.weixin.qq.com"


class WeChatAPIError(Exception):
    """WeChat answered with a non-zero errcode."""

    def __init__(self, errcode: int, errmsg: str = "") -> None:
        super().__init__(f"WeChat error {errcode}: {errmsg}")
        self.errcode = errcode
        self.errmsg = errmsg

    @property
    def transient(self) -> bool:
        return self.errcode in rules.TRANSIENT_ERRORS or self.errcode in rules.TOKEN_ERRORS


class WeChatUnavailable(Exception):
    """No answer from WeChat (timeout, refused, cut): try again later."""


class WeChatClient:
    def __init__(
        self,
        session: aiohttp.ClientSession,
        store: Redis,
        wechat: WechatConfig,
        miniprogram: MiniprogramConfig | None = None,
        *,
        base_url: str | None = None,
        timeout: aiohttp.ClientTimeout = TIMEOUT,
    ) -> None:
        self.session = session
        self.timeout = timeout
        self.store = store
        self._memo: dict[str, tuple[str, float]] = {}  # appid → (token, monotonic deadline): see token()
        self.wechat = wechat
        self.miniprogram = miniprogram or MiniprogramConfig()
        self.base_url = (base_url or wechat.api_base_url).rstrip("/")
        self.token_refreshes = 0  # by this process (for tests and diagnostics)

    # -- tokens

    def _credentials(self, app: str) -> tuple[str, str]:
        if app == "mp":
            return self.miniprogram.appid, self.miniprogram.secret
        return self.wechat.appid, self.wechat.secret

    async def token(self, app: str = "oa", *, stale: str | None = None) -> str:
        """The access token; ``stale`` is one WeChat just refused, to be replaced once."""
        appid, secret = self._credentials(app)
        memo = self._memo.get(appid)
        if memo is not None and memo[0] != stale and time.monotonic() < memo[1]:
            # Read from the shared store at most every TOKEN_MEMO_SECONDS, not on every send. The
            # store's entry expires ACCESS_TOKEN_REFRESH_MARGIN (5 min) before the token does, so a
            # memo a few seconds older never holds an expired token; one WeChat refused comes back
            # as ``stale`` and skips it.
            return memo[0]
        cache_key = key("wx", "token", appid)
        cached = _text(await self.store.get(cache_key))
        if cached and cached != stale:
            self._memo[appid] = (cached, time.monotonic() + TOKEN_MEMO_SECONDS)
            return cached
        async with self.store.lock(key("lock", "wx", "token", appid), timeout=30, blocking_timeout=30):
            # Another worker may have refreshed while we waited: use its token.
            cached = _text(await self.store.get(cache_key))
            if cached and cached != stale:
                return cached
            body = await self._request(
                "POST", "/cgi-bin/stable_token",
                json_body={"grant_type": "client_credential", "appid": appid, "secret": secret,
                           "force_refresh": stale is not None},
            )
            token = str(body["access_token"])
            lifetime = int(body.get("expires_in", rules.ACCESS_TOKEN_TTL.total_seconds()))
            margin = int(rules.ACCESS_TOKEN_REFRESH_MARGIN.total_seconds())
            # Never cache a token past its expiry: stable_token may hand back one near its end.
            ttl = lifetime - margin if lifetime > 2 * margin else max(1, lifetime // 2)
            await self.store.set(cache_key, token, ex=ttl)
            self._memo[appid] = (token, time.monotonic() + min(TOKEN_MEMO_SECONDS, ttl / 2))
            self.token_refreshes += 1
            log.info("refreshed the %s access token (valid %d s)", app, ttl)
            return token

    # -- transport

    async def _request(
        self, method: str, path: str, *, params: dict[str, str] | None = None,
        json_body: Any = None, data: Any = None, raw: bool = False, base_url: str | None = None,
    ) -> Any:
        url = (base_url or self.base_url) + path
        try:
            async with self.session.request(method, url, params=params, json=json_body, data=data,
                                            timeout=self.timeout) as resp:
                content = await resp.read()
                if resp.status >= 500:
                    raise WeChatUnavailable(f"{path}: HTTP {resp.status}")
                ctype = resp.headers.get("Content-Type", "")
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise WeChatUnavailable(f"{path}: {type(exc).__name__}") from exc
        if raw and "json" not in ctype and "text/plain" not in ctype:
            return content
        try:
            body = json.loads(content)
        except ValueError:
            raise WeChatUnavailable(f"{path}: not JSON") from None
        errcode = int(body.get("errcode", 0) or 0)
        if errcode:
            raise WeChatAPIError(errcode, str(body.get("errmsg", "")))
        return body

    async def call(
        self, method: str, path: str, *, app: str = "oa", params: dict[str, str] | None = None,
        json_body: Any = None, data: Any = None, raw: bool = False,
    ) -> Any:
        """An authenticated call; on 40001/42001 the token is refreshed once and the call retried."""
        token = await self.token(app)
        for attempt in (1, 2):
            try:
                return await self._request(method, path, params={**(params or {}), "access_token": token},
                                           json_body=json_body, data=data, raw=raw)
            except WeChatAPIError as exc:
                if exc.errcode not in rules.TOKEN_ERRORS or attempt == 2:
                    raise
                token = await self.token(app, stale=token)
        raise AssertionError("unreachable")  # pragma: no cover

    # -- messages

    async def send_text(self, openid: str, content: str) -> dict[str, Any]:
        if len(content.encode()) > rules.CUSTOM_TEXT_MAX_BYTES:
            raise ValueError("text over WeChat's customer-service size limit; split it first")
        return await self.call("POST", "/cgi-bin/message/custom/send", json_body={
            "touser": openid, "msgtype": "text", "text": {"content": content}})

    async def send_image(self, openid: str, media_id: str) -> dict[str, Any]:
        return await self.call("POST", "/cgi-bin/message/custom/send", json_body={
            "touser": openid, "msgtype": "image", "image": {"media_id": media_id}})

    async def send_template(self, openid: str, template_id: str, data: dict[str, Any],
                            url: str = "") -> dict[str, Any]:
        body: dict[str, Any] = {"touser": openid, "template_id": template_id, "data": data}
        if url:
            body["url"] = url
        return await self.call("POST", "/cgi-bin/message/template/send", json_body=body)

    async def send_subscribe(self, openid: str, template_id: str, data: dict[str, Any],
                             page: str = "", *, app: str = "oa") -> dict[str, Any]:
        """A subscribe message; ``app="mp"`` for a mini-program user (the mini-program's token)."""
        body: dict[str, Any] = {"touser": openid, "template_id": template_id, "data": data}
        if page:
            body["page"] = page
        return await self.call("POST", "/cgi-bin/message/subscribe/send", app=app, json_body=body)

    # -- media, QR codes, users, menu

    async def media_get(self, media_id: str) -> bytes:
        content = await self.call("GET", "/cgi-bin/media/get", params={"media_id": media_id}, raw=True)
        return bytes(content)

    async def media_upload(self, data: bytes, filename: str = "image.jpg", kind: str = "image") -> str:
        if kind == "image" and len(data) > rules.MEDIA_IMAGE_MAX_BYTES:
            raise ValueError("image over WeChat's upload limit")
        form = aiohttp.FormData()
        form.add_field("media", data, filename=filename)
        body = await self.call("POST", "/cgi-bin/media/upload", params={"type": kind}, data=form)
        return str(body["media_id"])

    async def qrcode(self, scene: str, *, expire_seconds: int | None = None) -> dict[str, Any]:
        """A parametric QR code: permanent (scene string) unless ``expire_seconds`` is given."""
        body: dict[str, Any]
        if expire_seconds is None:
            body = {"action_name": "QR_LIMIT_STR_SCENE", "action_info": {"scene": {"scene_str": scene}}}
        else:
            body = {"expire_seconds": expire_seconds, "action_name": "QR_STR_SCENE",
                    "action_info": {"scene": {"scene_str": scene}}}
        result: dict[str, Any] = await self.call("POST", "/cgi-bin/qrcode/create", json_body=body)
        return result

    async def qrcode_image(self, ticket: str) -> bytes:
        """The picture of a parametric QR code as WeChat draws it (showqrcode: no access token).

        WeChat serves it from mp.weixin.qq.com, not from the API host; a fake or a proxy given
        as the base URL is asked itself. The ticket is URL-encoded (it holds + / =).
        """
        host = urllib.parse.urlsplit(self.base_url).hostname or ""
        official = host == "weixin.qq.com" or host.endswith(".weixin.qq.com")
        content = await self._request("GET", "/cgi-bin/showqrcode", params={"ticket": ticket}, raw=True,
                                      base_url=SHOWQRCODE_BASE_URL if official else None)
        if not isinstance(content, bytes):
            raise WeChatUnavailable("/cgi-bin/showqrcode: no picture in the answer")
        return content

    async def user_info(self, openid: str) -> dict[str, Any]:
        result: dict[str, Any] = await self.call("GET", "/cgi-bin/user/info",
                                                 params={"openid": openid, "lang": "zh_CN"})
        return result

    async def menu_create(self, buttons: list[dict[str, Any]]) -> None:
        await self.call("POST", "/cgi-bin/menu/create", json_body={"button": buttons})

    async def menu_get(self) -> dict[str, Any] | None:
        """The default menu and the conditional ones (``conditionalmenu``); None without a menu."""
        try:
            result: dict[str, Any] = await self.call("GET", "/cgi-bin/menu/get")
        except WeChatAPIError as exc:
            if exc.errcode == rules.ERR_NO_MENU:
                return None
            raise
        return result

    async def menu_delete(self) -> None:
        """Delete the default menu and every conditional menu."""
        await self.call("GET", "/cgi-bin/menu/delete")

    async def menu_add_conditional(self, buttons: list[dict[str, Any]], matchrule: dict[str, Any]) -> str:
        """A conditional menu (after the default one exists); returns its menuid."""
        body = await self.call("POST", "/cgi-bin/menu/addconditional",
                               json_body={"button": buttons, "matchrule": matchrule})
        return str(body["menuid"])

    async def menu_del_conditional(self, menuid: str) -> None:
        await self.call("POST", "/cgi-bin/menu/delconditional", json_body={"menuid": str(menuid)})

    async def menu_trymatch(self, user_id: str) -> list[dict[str, Any]]:
        """The buttons this follower (openid) sees."""
        body = await self.call("POST", "/cgi-bin/menu/trymatch", json_body={"user_id": user_id})
        return list(body.get("button", []))

    # -- user tags

    async def tags_create(self, name: str) -> int:
        if len(name.encode()) > rules.TAG_NAME_MAX_BYTES:
            raise ValueError(f"tag name over WeChat's {rules.TAG_NAME_MAX_BYTES} bytes")
        body = await self.call("POST", "/cgi-bin/tags/create", json_body={"tag": {"name": name}})
        return int(body["tag"]["id"])

    async def tags_get(self) -> list[dict[str, Any]]:
        """The account's tags: ``{"id", "name", "count"}`` each."""
        body = await self.call("GET", "/cgi-bin/tags/get")
        return list(body.get("tags", []))

    async def tags_of(self, openid: str) -> list[int]:
        """The ids of the tags one follower carries (tags/getidlist)."""
        body = await self.call("POST", "/cgi-bin/tags/getidlist", json_body={"openid": openid})
        return [int(t) for t in body.get("tagid_list", [])]

    async def tag_members(self, tag_id: int) -> list[str]:
        """Every follower carrying the tag (user/tag/get, all pages)."""
        members: list[str] = []
        next_openid = ""
        while True:
            body = await self.call("POST", "/cgi-bin/user/tag/get",
                                   json_body={"tagid": tag_id, "next_openid": next_openid})
            page = list((body.get("data") or {}).get("openid", []))
            members += page
            next_openid = str(body.get("next_openid") or "")
            if not page or not next_openid:
                return members

    async def tag_users(self, tag_id: int, openids: list[str]) -> None:
        """Give the tag to these followers, in calls of at most TAG_BATCH_MAX openids."""
        for start in range(0, len(openids), rules.TAG_BATCH_MAX):
            await self.call("POST", "/cgi-bin/tags/members/batchtagging", json_body={
                "openid_list": openids[start:start + rules.TAG_BATCH_MAX], "tagid": tag_id})

    async def untag_users(self, tag_id: int, openids: list[str]) -> None:
        """Take the tag off these followers, in calls of at most TAG_BATCH_MAX openids."""
        for start in range(0, len(openids), rules.TAG_BATCH_MAX):
            await self.call("POST", "/cgi-bin/tags/members/batchuntagging", json_body={
                "openid_list": openids[start:start + rules.TAG_BATCH_MAX], "tagid": tag_id})

    async def private_templates(self) -> list[dict[str, Any]]:
        body = await self.call("GET", "/cgi-bin/template/get_all_private_template")
        return list(body.get("template_list", []))

    # -- mini-program

    async def code_to_session(self, js_code: str) -> dict[str, Any]:
        result: dict[str, Any] = await self._request("GET", "/sns/jscode2session", params={
            "appid": self.miniprogram.appid, "secret": self.miniprogram.secret, "js_code": js_code,
            "grant_type": "authorization_code"})
        return result

    # -- the web login (网页授权)

    async def oauth_openid(self, code: str) -> str:
        """The official-account openid behind a web-login code (snsapi_base); a code works once.
        WeChat's refusal (40029 invalid code, 40163 used) is a WeChatAPIError."""
        body = await self._request("GET", "/sns/oauth2/access_token", params={
            "appid": self.wechat.appid, "secret": self.wechat.secret, "code": code,
            "grant_type": "authorization_code"})
        openid = str(body.get("openid") or "")
        if not openid:
            raise WeChatUnavailable("/sns/oauth2/access_token: no openid in the answer")
        return openid

    async def phone_number(self, code: str) -> str:
        body = await self.call("POST", "/wxa/business/getuserphonenumber", app="mp", json_body={"code": code})
        return str(body["phone_info"]["purePhoneNumber"])


def _text(value: bytes | str | None) -> str | None:
    if value is None:
        return None
    return value.decode() if isinstance(value, bytes) else value
