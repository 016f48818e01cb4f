"""A fake WeChat API: a real aiohttp server on loopback that plays api.weixin.qq.com.

It answers the calls Linli makes with WeChat's paths, request and response shapes and error
codes, and it enforces the platform rules of bot.wechat_rules against an injectable clock, so a
client or outbox that breaks a rule gets WeChat's error instead of a success.

Response shapes follow WeChat, not a uniform envelope: a refusal is always
``{"errcode": N, "errmsg": "... rid: ..."}`` (HTTP 200), but several successes carry no errcode
at all (stable_token, user/info, qrcode/create, media/upload, jscode2session), exactly as the real
API answers; a client must read a missing errcode as 0. Binary answers (media/get, showqrcode)
are the bytes themselves.

Every lifetime is a half-open interval: a token, window or media_id that starts at ``t`` with
lifetime ``d`` is valid while ``t <= now < t + d``.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import itertools
import json
import logging
import mimetypes
import secrets
import struct
import zlib
from collections import defaultdict, deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from types import TracebackType
from typing import Any, Literal
from zoneinfo import ZoneInfo

from aiohttp import BodyPartReader, web

from bot.clock import Clock
from bot.wechat_rules import (
    ACCESS_TOKEN_TTL,
    CS_AFTER_EVENT,
    CS_AFTER_MESSAGE,
    CUSTOM_TEXT_MAX_BYTES,
    ERR_API_QUOTA,
    ERR_BUSY,
    ERR_INVALID_OPENID_LIST,
    ERR_INVALID_TAG,
    ERR_INVALID_TEMPLATE,
    ERR_INVALID_TOKEN,
    ERR_IP_NOT_WHITELISTED,
    ERR_MATCHRULE_EMPTY,
    ERR_MATCHRULE_PRIVATE,
    ERR_NO_DEFAULT_MENU,
    ERR_NO_MENU,
    ERR_NO_SUCH_CONDITIONAL_MENU,
    ERR_NO_SUCH_USER,
    ERR_NOT_SUBSCRIBED,
    ERR_OUT_OF_COUNT,
    ERR_OUT_OF_TIME,
    ERR_SUBSCRIBE_REFUSED,
    ERR_TAG_NAME_TAKEN,
    ERR_TAG_NAME_TOO_LONG,
    ERR_TOKEN_EXPIRED,
    ERR_TOO_MANY_TAGS,
    ERR_USER_TAGS_FULL,
    MEDIA_ID_TTL,
    MEDIA_IMAGE_MAX_BYTES,
    SUBSCRIBE_SENDS_PER_CONSENT,
    TAG_BATCH_MAX,
    TAG_NAME_MAX_BYTES,
    TAGS_PER_ACCOUNT,
    TAGS_PER_USER,
    TEMPLATE_DAILY_QUOTA,
    Allowance,
)

log = logging.getLogger(__name__)

# WeChat's behaviour that the fake needs but Linli's code does not rely on, so it is not in the
# rules table. Sources: the API pages of bot.wechat_rules' DOC_* plus the menu and QR-code pages.
STABLE_TOKEN_OVERLAP = timedelta(seconds=30)  # the old token after force_refresh
OAUTH_CODE_TTL = timedelta(minutes=5)  # a web-login code not exchanged by then is refused
QR_TEMP_DEFAULT_SECONDS = 60
QR_TEMP_MAX_SECONDS = 2_592_000  # 30 days; longer requests are capped
QR_LIMIT_SCENE_MAX_ID = 100_000
QR_SCENE_STR_MAX = 64
MENU_TOP_MAX, MENU_SUB_MAX = 3, 5
MENU_TOP_NAME_BYTES, MENU_SUB_NAME_BYTES = 16, 60
MENU_KEY_BYTES, MENU_URL_BYTES = 128, 1024
WECHAT_DAY_TZ = ZoneInfo("Asia/Shanghai")  # daily quotas reset at Beijing midnight
TAG_MEMBERS_PAGE = 10_000  # user/tag/get: openids per page
SYSTEM_TAGS = {0: "未分组", 1: "黑名单", 2: "星标组"}  # names taken; only 星标组 is listed by tags/get
MATCHRULE_PRIVATE = frozenset({"sex", "country", "province", "city", "language"})

# Error codes beyond the rules table's, as WeChat names them.
ERR_INVALID_GRANT_TYPE = 40002
ERR_INVALID_OPENID = 40003
ERR_INVALID_MEDIA_TYPE = 40004
ERR_INVALID_MEDIA_ID = 40007
ERR_INVALID_MESSAGE_TYPE = 40008
ERR_INVALID_IMAGE_SIZE = 40009
ERR_INVALID_APPID = 40013
ERR_INVALID_CODE = 40029
ERR_INVALID_ACTION_NAME = 40052
ERR_INVALID_ACTION_INFO = 40053
ERR_INVALID_APPSECRET = 40125
ERR_CODE_USED = 40163
ERR_TOKEN_MISSING = 41001
ERR_APPID_MISSING = 41002
ERR_SECRET_MISSING = 41004
ERR_MEDIA_MISSING = 41005
ERR_CODE_MISSING = 41008
ERR_REQUIRE_GET = 43001
ERR_REQUIRE_POST = 43002
ERR_EMPTY_POST = 44002
ERR_EMPTY_CONTENT = 44004
ERR_CONTENT_SIZE = 45002
ERR_DATA_FORMAT = 47001

ERRMSG: dict[int, str] = {
    ERR_BUSY: "system error",
    ERR_INVALID_TOKEN: "invalid credential, access_token is invalid or not latest",
    ERR_INVALID_GRANT_TYPE: "invalid grant_type",
    ERR_INVALID_OPENID: "invalid openid",
    ERR_INVALID_MEDIA_TYPE: "invalid media type",
    ERR_INVALID_MEDIA_ID: "invalid media_id",
    ERR_INVALID_MESSAGE_TYPE: "invalid message type",
    ERR_INVALID_IMAGE_SIZE: "invalid image size",
    ERR_INVALID_APPID: "invalid appid",
    40016: "invalid button size",
    40017: "invalid button type",
    40018: "invalid button name size",
    40019: "invalid button key size",
    40020: "invalid button url size",
    40023: "invalid sub button size",
    40024: "invalid sub button type",
    40025: "invalid sub button name size",
    40026: "invalid sub button key size",
    40027: "invalid sub button url size",
    ERR_INVALID_CODE: "invalid code",
    ERR_INVALID_TEMPLATE: "invalid template_id",
    ERR_INVALID_ACTION_NAME: "invalid action name",
    ERR_INVALID_ACTION_INFO: "invalid action info, please check document",
    ERR_INVALID_APPSECRET: "invalid appsecret",
    ERR_CODE_USED: "code been used",
    ERR_IP_NOT_WHITELISTED: "invalid ip, not in whitelist",
    ERR_TOKEN_MISSING: "access_token missing",
    ERR_APPID_MISSING: "appid missing",
    ERR_SECRET_MISSING: "appsecret missing",
    ERR_MEDIA_MISSING: "media data missing",
    ERR_CODE_MISSING: "missing code",
    ERR_TOKEN_EXPIRED: "access_token expired",
    ERR_REQUIRE_GET: "require GET method",
    ERR_REQUIRE_POST: "require POST method",
    ERR_NOT_SUBSCRIBED: "require subscribe",
    ERR_SUBSCRIBE_REFUSED: "user refuse to accept the msg",
    ERR_EMPTY_POST: "empty post data",
    ERR_EMPTY_CONTENT: "empty content",
    ERR_CONTENT_SIZE: "content size out of limit",
    ERR_API_QUOTA: "reach max api daily quota limit",
    ERR_OUT_OF_TIME: "response out of time limit or subscription is canceled",
    ERR_OUT_OF_COUNT: "out of response count limit",
    ERR_DATA_FORMAT: "data format error",
    ERR_INVALID_OPENID_LIST: "invalid openid list size",
    ERR_TOO_MANY_TAGS: "too many tags",
    ERR_USER_TAGS_FULL: "user tag count out of limit",
    ERR_TAG_NAME_TAKEN: "invalid tag name",
    ERR_TAG_NAME_TOO_LONG: "tag name too long",
    ERR_INVALID_TAG: "invalid tag id",
    ERR_NO_MENU: "menu no exist",
    ERR_NO_SUCH_CONDITIONAL_MENU: "menuid not exist",
    ERR_NO_SUCH_USER: "no such user",
    ERR_NO_DEFAULT_MENU: "no default menu",
    ERR_MATCHRULE_EMPTY: "match rule empty",
    ERR_MATCHRULE_PRIVATE: "match rule contains private info",
}

SendKind = Literal["custom", "template", "subscribe"]
Answer = dict[str, Any] | web.StreamResponse


@dataclass
class Call:
    """One request the fake received; ``errcode`` is None while in flight or for a non-JSON failure."""

    method: str
    path: str
    query: dict[str, str]
    body: Any | None  # the parsed JSON body; None for GET, multipart or an unparseable body
    at: datetime
    errcode: int | None = None
    status: int | None = None  # the HTTP status; None for a dropped connection


@dataclass(frozen=True)
class SentMessage:
    """A message WeChat accepted for delivery."""

    kind: SendKind
    touser: str
    body: dict[str, Any]
    at: datetime
    msgid: int | None = None

    @property
    def msgtype(self) -> str | None:
        return str(self.body.get("msgtype")) if self.kind == "custom" else None

    @property
    def text(self) -> str | None:
        """The content of a custom text message, else None."""
        if self.msgtype != "text":
            return None
        return str(self.body["text"]["content"])

    @property
    def template_id(self) -> str | None:
        return str(self.body["template_id"]) if self.kind != "custom" else None


@dataclass
class QrCode:
    ticket: str
    action_name: str
    scene: str | int
    url: str
    created_at: datetime
    expires_at: datetime | None  # None for a permanent (QR_LIMIT_*) code


@dataclass
class ConditionalMenu:
    """A menu published with menu/addconditional; the fake matches on the tag only (it knows no
    phone OS, so a rule on ``client_platform_type`` alone never matches here)."""

    menuid: str
    button: list[dict[str, Any]]
    matchrule: dict[str, Any]
    tag_id: int | None


@dataclass
class _Token:
    value: str
    appid: str
    expires_at: datetime
    superseded_at: datetime | None = None
    revoked: bool = False


@dataclass
class _Window:
    allowance: Allowance
    opened: datetime
    used: int = 0


@dataclass
class _Media:
    data: bytes
    content_type: str
    created_at: datetime
    kind: str = "image"


@dataclass
class _Follower:
    unionid: str | None
    since: datetime


@dataclass
class _Route:
    method: str
    handler: Callable[[web.Request, Any], Awaitable[Answer]]
    token: bool = True


class _Refused(Exception):
    def __init__(self, errcode: int) -> None:
        super().__init__(errcode)
        self.errcode = errcode


def _rid() -> str:
    return "-".join(secrets.token_hex(4) for _ in range(3))


def _error(errcode: int) -> dict[str, Any]:
    # WeChat appends a request id to errmsg, so a client must not match errmsg exactly
    return {"errcode": errcode, "errmsg": f"{ERRMSG.get(errcode, 'error')} rid: {_rid()}"}


OK: dict[str, Any] = {"errcode": 0, "errmsg": "ok"}


def _obj(body: Any) -> dict[str, Any]:
    if body is None:
        raise _Refused(ERR_EMPTY_POST)
    if not isinstance(body, dict):
        raise _Refused(ERR_DATA_FORMAT)
    return body


def _str(value: Any, errcode: int) -> str:
    if not isinstance(value, str) or not value:
        raise _Refused(errcode)
    return value


def png(width: int, height: int, pixels: Callable[[int, int], bool]) -> bytes:
    """A valid 8-bit greyscale PNG; ``pixels(x, y)`` True paints black."""

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    rows = b"".join(
        b"\x00" + bytes(0 if pixels(x, y) else 255 for x in range(width)) for y in range(height)
    )
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def _qr_png(ticket: str, modules: int = 21, scale: int = 4, quiet: int = 2) -> bytes:
    """A QR-looking picture unique to the ticket (it does not decode; nothing here scans it)."""
    bits = int.from_bytes(hashlib.sha512(ticket.encode()).digest(), "big")
    size = (modules + 2 * quiet) * scale

    def dark(x: int, y: int) -> bool:
        mx, my = x // scale - quiet, y // scale - quiet
        if not (0 <= mx < modules and 0 <= my < modules):
            return False
        return bool(bits >> ((my * modules + mx) % 512) & 1)

    return png(size, size, dark)


class FakeWeChat:
    """WeChat's API on ``http://127.0.0.1:PORT``; see the module docstring."""

    def __init__(self, clock: Clock | None = None, appid: str = "wx-fake-appid", secret: str = "fake-secret",
                 *, templates: Iterable[str] = ()) -> None:
        self.clock = clock or Clock()
        self.appid = appid
        self.secret = secret
        self.apps: dict[str, str] = {appid: secret}  # appid -> secret: the account, plus add_app's
        self.templates: dict[str, tuple[str, str]] = {t: ("", "") for t in templates}  # id -> title, content
        self.template_quota = TEMPLATE_DAILY_QUOTA
        self.followers_by_default = True
        self.latency = 0.0
        self.on_send: Callable[[SentMessage], None] | None = None
        self.calls: list[Call] = []
        self.tokens_issued = 0
        self.menu: dict[str, Any] | None = None
        self.menu_id: str | None = None
        self.conditional_menus: list[ConditionalMenu] = []  # oldest first
        self.tags: dict[int, str] = {}  # id -> name: the tags created through tags/create
        self.qrcodes: dict[str, QrCode] = {}
        self._created = self.clock.now()
        self._tokens: dict[str, _Token] = {}
        self._current: dict[str, _Token] = {}  # by appid; all apps share one token space
        self._windows: dict[str, _Window] = {}
        self._followers: dict[str, _Follower] = {}
        self._unfollowed: set[str] = set()
        self._template_sends: defaultdict[tuple[str, date], int] = defaultdict(int)
        self._consents: defaultdict[tuple[str, str], int] = defaultdict(int)
        self._media: dict[str, _Media] = {}
        self._login_codes: dict[str, tuple[str, str | None]] = {}
        self._phone_codes: dict[str, tuple[str, str]] = {}
        self._used_codes: set[str] = set()
        self._oauth_codes: dict[str, tuple[str, datetime]] = {}  # web-login code -> openid, issued at
        self._sent: list[SentMessage] = []
        self._faults: defaultdict[str, deque[int]] = defaultdict(deque)
        self._drops: defaultdict[str, int] = defaultdict(int)
        self._path_latency: dict[str, float] = {}
        self._msgids = itertools.count(2_000_000_001)
        self._menuids = itertools.count(400_000_001)
        self._tagids = itertools.count(100)  # 0, 1, 2 are WeChat's system tags
        self._user_tags: defaultdict[str, list[int]] = defaultdict(list)  # openid -> tag ids, in order given
        self._runner: web.AppRunner | None = None
        self._url: str | None = None
        self._routes: dict[str, _Route] = {
            "/cgi-bin/stable_token": _Route("POST", self._stable_token, token=False),
            "/cgi-bin/message/custom/send": _Route("POST", self._custom_send),
            "/cgi-bin/message/template/send": _Route("POST", self._template_send),
            "/cgi-bin/message/subscribe/send": _Route("POST", self._subscribe_send),
            "/cgi-bin/media/get": _Route("GET", self._media_get),
            "/cgi-bin/media/upload": _Route("POST", self._media_upload),
            "/cgi-bin/qrcode/create": _Route("POST", self._qrcode_create),
            "/cgi-bin/showqrcode": _Route("GET", self._showqrcode, token=False),  # mp.weixin.qq.com
            "/showqrcode": _Route("GET", self._showqrcode, token=False),
            "/cgi-bin/template/get_all_private_template": _Route("GET", self._private_templates),
            "/cgi-bin/user/info": _Route("GET", self._user_info),
            "/cgi-bin/menu/create": _Route("POST", self._menu_create),
            "/cgi-bin/menu/get": _Route("GET", self._menu_get),
            "/cgi-bin/menu/delete": _Route("GET", self._menu_delete),
            "/cgi-bin/menu/addconditional": _Route("POST", self._menu_add_conditional),
            "/cgi-bin/menu/delconditional": _Route("POST", self._menu_del_conditional),
            "/cgi-bin/menu/trymatch": _Route("POST", self._menu_trymatch),
            "/cgi-bin/tags/create": _Route("POST", self._tags_create),
            "/cgi-bin/tags/get": _Route("GET", self._tags_get),
            "/cgi-bin/tags/getidlist": _Route("POST", self._tags_getidlist),
            "/cgi-bin/tags/members/batchtagging": _Route("POST", self._batch_tagging),
            "/cgi-bin/tags/members/batchuntagging": _Route("POST", self._batch_untagging),
            "/cgi-bin/user/tag/get": _Route("POST", self._tag_members),
            "/sns/jscode2session": _Route("GET", self._jscode2session, token=False),
            "/sns/oauth2/access_token": _Route("GET", self._oauth_access_token, token=False),
            "/wxa/business/getuserphonenumber": _Route("POST", self._phone_number),
        }

    # -- lifecycle

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        if self._runner is not None:
            raise RuntimeError("the fake WeChat is already running")
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._dispatch)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        try:
            await web.TCPSite(runner, host, port).start()
        except BaseException:
            await runner.cleanup()
            raise
        bound = runner.addresses[0][1]
        self._runner = runner
        self._url = f"http://[{host}]:{bound}" if ":" in host else f"http://{host}:{bound}"
        return self._url

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    @property
    def url(self) -> str:
        if self._url is None:
            raise RuntimeError("the fake WeChat has not been started")
        return self._url

    async def __aenter__(self) -> FakeWeChat:
        await self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.stop()

    # -- set-up for tests

    def add_app(self, appid: str, secret: str) -> None:
        """Another app of the same owner (the mini-program): its tokens and login codes work here too."""
        self.apps[appid] = secret

    def add_template(self, template_id: str, title: str = "", content: str = "") -> None:
        self.templates[template_id] = (title, content)

    def follow(self, openid: str, unionid: str | None = None) -> None:
        self._unfollowed.discard(openid)
        self._followers[openid] = _Follower(unionid, self.clock.now())

    def unfollow(self, openid: str) -> None:
        self._followers.pop(openid, None)
        self._unfollowed.add(openid)
        self._user_tags.pop(openid, None)  # tag lists only hold followers

    def is_follower(self, openid: str) -> bool:
        if openid in self._unfollowed:
            return False
        return openid in self._followers or self.followers_by_default

    def interact(self, openid: str, kind: Literal["message", "event"] = "message",
                 at: datetime | None = None) -> None:
        """The resident messaged us (``message``) or clicked, followed or scanned (``event``).

        It opens a fresh customer-service window; the latest interaction wins.
        """
        allowances = {"message": CS_AFTER_MESSAGE, "event": CS_AFTER_EVENT}
        if kind not in allowances:
            raise ValueError(f"kind must be 'message' or 'event', not {kind!r}")
        when = self.clock.now() if at is None else at
        if when.tzinfo is None:
            raise ValueError("interact needs an aware datetime")
        current = self._windows.get(openid)
        if current is None or when >= current.opened:
            self._windows[openid] = _Window(allowances[kind], when)

    def consent(self, openid: str, template_id: str) -> None:
        """The resident accepted one subscribe message of this template in the mini-program."""
        self._consents[(openid, template_id)] += SUBSCRIBE_SENDS_PER_CONSENT

    def add_media(self, media_id: str, data: bytes, content_type: str = "image/jpeg") -> None:
        self._media[media_id] = _Media(data, content_type, self.clock.now())

    def add_login_code(self, code: str, openid: str, unionid: str | None = None) -> None:
        self._used_codes.discard(code)
        self._login_codes[code] = (openid, unionid)

    def add_oauth_code(self, code: str, openid: str) -> None:
        """A web-login (网页授权) code WeChat gave this follower of the official account: it works
        once, within OAUTH_CODE_TTL."""
        self._oauth_codes[code] = (openid, self.clock.now())

    def add_phone_code(self, code: str, phone: str, country_code: str = "86") -> None:
        self._phone_codes[code] = (phone, country_code)

    @property
    def token(self) -> str | None:
        """The account's current access token, if one was issued."""
        current = self._current.get(self.appid)
        return current.value if current else None

    def expire_tokens(self) -> None:
        """Every token issued so far answers 42001 from now on."""
        for token in self._tokens.values():
            token.revoked = True

    # -- fault injection

    def _known(self, path: str) -> str:
        if path not in self._routes:
            raise ValueError(f"the fake WeChat has no endpoint {path!r}")
        return path

    def fail(self, path: str, errcode: int, times: int = 1) -> None:
        """The next ``times`` calls to ``path`` answer ``errcode`` before any check."""
        self._faults[self._known(path)].extend([errcode] * times)

    def drop_connection(self, path: str, times: int = 1) -> None:
        """The next ``times`` calls to ``path`` get their connection closed without a response."""
        self._drops[self._known(path)] += times

    def set_latency(self, path: str, seconds: float) -> None:
        """Delay answers on ``path`` (overrides the global ``latency``)."""
        self._path_latency[self._known(path)] = seconds

    # -- what happened

    def tags_of(self, openid: str) -> list[int]:
        """The tags a follower carries, in the order they were given."""
        return list(self._user_tags.get(openid, []))

    def tag_id(self, name: str) -> int | None:
        return next((tid for tid, tname in self.tags.items() if tname == name), None)

    def menu_for(self, openid: str) -> list[dict[str, Any]] | None:
        """The buttons this follower sees (what menu/trymatch answers); None without a menu.

        Conditional menus are tried newest first and the first match wins; a follower carrying
        several tags is matched on the tag given last (bot.wechat_rules.CONDITIONAL_MENU_ORDER).
        """
        if self.menu is None:
            return None
        tags = self._user_tags.get(openid, [])
        latest = tags[-1] if tags else None
        for menu in reversed(self.conditional_menus):
            if latest is not None and menu.tag_id == latest:
                return list(menu.button)
        return list(self.menu["button"])

    def sent(self, kind: SendKind | None = None, touser: str | None = None) -> list[SentMessage]:
        return [m for m in self._sent
                if (kind is None or m.kind == kind) and (touser is None or m.touser == touser)]

    def texts(self, openid: str) -> list[str]:
        return [m.text for m in self.sent("custom", openid) if m.text is not None]

    # -- the server

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        body: Any = None
        bad_json = False
        if request.method == "POST" and not request.content_type.startswith("multipart/"):
            raw = await request.read()
            if raw.strip():
                try:
                    body = json.loads(raw)
                except ValueError:
                    bad_json = True
        call = Call(request.method, path, dict(request.query), body, self.clock.now())
        self.calls.append(call)

        if self._drops.get(path, 0) > 0:
            self._drops[path] -= 1
            if request.transport is not None:
                request.transport.close()
            return web.Response()  # aiohttp gives up writing to the closed transport quietly
        delay = self._path_latency.get(path, self.latency)
        if delay > 0:
            await asyncio.sleep(delay)

        route = self._routes.get(path)
        answer: Answer
        try:
            faults = self._faults.get(path)
            if faults:
                raise _Refused(faults.popleft())
            if route is None:
                call.status = 404
                return web.Response(status=404, text="not found")
            if request.method != route.method:
                raise _Refused(ERR_REQUIRE_GET if route.method == "GET" else ERR_REQUIRE_POST)
            if route.token:
                self._check_token(request.query.get("access_token", ""))
            if bad_json:
                raise _Refused(ERR_DATA_FORMAT)
            answer = await route.handler(request, body)
        except _Refused as refused:
            answer = _error(refused.errcode)
        if isinstance(answer, dict):
            call.errcode, call.status = int(answer.get("errcode", 0)), 200
            return web.json_response(answer, dumps=lambda o: json.dumps(o, ensure_ascii=False))
        call.status = answer.status
        call.errcode = 0 if answer.status == 200 else None
        return answer

    def _check_token(self, value: str) -> None:
        if not value:
            raise _Refused(ERR_TOKEN_MISSING)
        token = self._tokens.get(value)
        if token is None:
            raise _Refused(ERR_INVALID_TOKEN)
        now = self.clock.now()
        if token.revoked or now >= token.expires_at:
            raise _Refused(ERR_TOKEN_EXPIRED)
        if token.superseded_at is not None and now >= token.superseded_at + STABLE_TOKEN_OVERLAP:
            raise _Refused(ERR_INVALID_TOKEN)

    def _deliver(self, kind: SendKind, touser: str, body: dict[str, Any], msgid: int | None = None) -> None:
        message = SentMessage(kind, touser, body, self.clock.now(), msgid)
        self._sent.append(message)
        if self.on_send is not None:
            try:
                self.on_send(message)
            except Exception:  # a listener's bug must not change what WeChat answers
                log.exception("the fake WeChat's on_send listener failed")

    # -- endpoints

    async def _stable_token(self, request: web.Request, body: Any) -> Answer:
        body = _obj(body)
        if body.get("grant_type") != "client_credential":
            raise _Refused(ERR_INVALID_GRANT_TYPE)
        if not body.get("appid"):
            raise _Refused(ERR_APPID_MISSING)
        if not body.get("secret"):
            raise _Refused(ERR_SECRET_MISSING)
        appid = body["appid"]
        if appid not in self.apps:
            raise _Refused(ERR_INVALID_APPID)
        if body["secret"] != self.apps[appid]:
            raise _Refused(ERR_INVALID_APPSECRET)
        now = self.clock.now()
        current = self._current.get(appid)
        usable = current is not None and not current.revoked and now < current.expires_at
        if current is None or not usable or body.get("force_refresh") is True:
            if current is not None and current.superseded_at is None:
                current.superseded_at = now
            current = _Token(secrets.token_urlsafe(96), appid, now + ACCESS_TOKEN_TTL)
            self._tokens[current.value] = current
            self._current[appid] = current
            self.tokens_issued += 1
        # like stable_token, a reused token comes with its remaining lifetime
        return {"access_token": current.value, "expires_in": int((current.expires_at - now).total_seconds())}

    async def _custom_send(self, request: web.Request, body: Any) -> Answer:
        body = _obj(body)
        touser = _str(body.get("touser"), ERR_INVALID_OPENID)
        msgtype = body.get("msgtype")
        if msgtype == "text":
            text = body.get("text")
            if not isinstance(text, dict) or not isinstance(text.get("content", ""), str):
                raise _Refused(ERR_DATA_FORMAT)
            content = text.get("content", "")
            if not content:
                raise _Refused(ERR_EMPTY_CONTENT)
            if len(content.encode("utf-8")) > CUSTOM_TEXT_MAX_BYTES:
                raise _Refused(ERR_CONTENT_SIZE)
        elif msgtype == "image":
            image = body.get("image")
            if not isinstance(image, dict):
                raise _Refused(ERR_DATA_FORMAT)
            if self._live_media(image.get("media_id")) is None:
                raise _Refused(ERR_INVALID_MEDIA_ID)
        else:
            raise _Refused(ERR_INVALID_MESSAGE_TYPE)
        if not self.is_follower(touser):
            raise _Refused(ERR_NOT_SUBSCRIBED)
        window = self._windows.get(touser)
        if window is None or self.clock.now() >= window.opened + window.allowance.window:
            raise _Refused(ERR_OUT_OF_TIME)
        if window.used >= window.allowance.messages:
            raise _Refused(ERR_OUT_OF_COUNT)
        window.used += 1
        self._deliver("custom", touser, body)
        return dict(OK)

    def _template_data(self, body: dict[str, Any]) -> None:
        data = body.get("data")
        if not isinstance(data, dict) or not all(
            isinstance(v, dict) and isinstance(v.get("value"), str) for v in data.values()
        ):
            raise _Refused(ERR_DATA_FORMAT)

    async def _template_send(self, request: web.Request, body: Any) -> Answer:
        body = _obj(body)
        touser = _str(body.get("touser"), ERR_INVALID_OPENID)
        template_id = body.get("template_id")
        if not isinstance(template_id, str) or template_id not in self.templates:
            raise _Refused(ERR_INVALID_TEMPLATE)
        self._template_data(body)
        day = (template_id, self.clock.now().astimezone(WECHAT_DAY_TZ).date())
        if self._template_sends[day] >= self.template_quota:
            raise _Refused(ERR_API_QUOTA)
        if not self.is_follower(touser):
            raise _Refused(ERR_NOT_SUBSCRIBED)
        self._template_sends[day] += 1
        msgid = next(self._msgids)
        self._deliver("template", touser, body, msgid)
        return {**OK, "msgid": msgid}

    async def _subscribe_send(self, request: web.Request, body: Any) -> Answer:
        body = _obj(body)
        touser = _str(body.get("touser"), ERR_INVALID_OPENID)
        template_id = _str(body.get("template_id"), ERR_INVALID_TEMPLATE)
        self._template_data(body)
        if self._consents[(touser, template_id)] <= 0:
            raise _Refused(ERR_SUBSCRIBE_REFUSED)
        self._consents[(touser, template_id)] -= 1
        self._deliver("subscribe", touser, body)
        return dict(OK)

    def _live_media(self, media_id: Any) -> _Media | None:
        media = self._media.get(media_id) if isinstance(media_id, str) else None
        if media is None or self.clock.now() >= media.created_at + MEDIA_ID_TTL:
            return None
        return media

    async def _media_get(self, request: web.Request, body: Any) -> Answer:
        media_id = request.query.get("media_id", "")
        media = self._live_media(media_id)
        if media is None:
            raise _Refused(ERR_INVALID_MEDIA_ID)
        ext = mimetypes.guess_extension(media.content_type) or ""
        return web.Response(body=media.data, content_type=media.content_type,
                            headers={"Content-disposition": f'attachment; filename="{media_id}{ext}"'})

    async def _media_upload(self, request: web.Request, body: Any) -> Answer:
        kind = request.query.get("type", "")
        if kind != "image":  # voice, video and thumb are real but Linli uploads images only
            raise _Refused(ERR_INVALID_MEDIA_TYPE)
        if not request.content_type.startswith("multipart/"):
            raise _Refused(ERR_MEDIA_MISSING)
        data: bytes | None = None
        content_type = "application/octet-stream"
        size = 0
        async for part in await request.multipart():
            if not isinstance(part, BodyPartReader) or part.name != "media" or data is not None:
                continue
            chunks: list[bytes] = []
            while chunk := await part.read_chunk():
                size += len(chunk)
                if size <= MEDIA_IMAGE_MAX_BYTES:  # keep draining, stop keeping
                    chunks.append(chunk)
            data = b"".join(chunks)
            content_type = part.headers.get("Content-Type", content_type)
        if data is None or size == 0:
            raise _Refused(ERR_MEDIA_MISSING)
        if size > MEDIA_IMAGE_MAX_BYTES:
            raise _Refused(ERR_INVALID_IMAGE_SIZE)
        media_id = secrets.token_urlsafe(48)
        self._media[media_id] = _Media(data, content_type, self.clock.now(), kind)
        return {"type": kind, "media_id": media_id, "created_at": int(self.clock.now().timestamp())}

    async def _qrcode_create(self, request: web.Request, body: Any) -> Answer:
        body = _obj(body)
        action = body.get("action_name")
        if action not in ("QR_SCENE", "QR_STR_SCENE", "QR_LIMIT_SCENE", "QR_LIMIT_STR_SCENE"):
            raise _Refused(ERR_INVALID_ACTION_NAME)
        info = body.get("action_info")
        scene = info.get("scene") if isinstance(info, dict) else None
        if not isinstance(scene, dict):
            raise _Refused(ERR_INVALID_ACTION_INFO)
        value = scene.get("scene_str") if action.endswith("STR_SCENE") else scene.get("scene_id")
        if isinstance(value, str):
            if not action.endswith("STR_SCENE") or not 1 <= len(value) <= QR_SCENE_STR_MAX:
                raise _Refused(ERR_INVALID_ACTION_INFO)
        else:
            top = QR_LIMIT_SCENE_MAX_ID if action == "QR_LIMIT_SCENE" else 2**32 - 1
            if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= top:
                raise _Refused(ERR_INVALID_ACTION_INFO)
        now = self.clock.now()
        ticket = base64.b64encode(secrets.token_bytes(46)).decode()  # has + / =: callers must URL-encode
        url = f"http://weixin.qq.com/q/{secrets.token_urlsafe(16)}"
        answer: dict[str, Any] = {"ticket": ticket}
        expires_at = None
        if not action.startswith("QR_LIMIT"):
            seconds = body.get("expire_seconds", QR_TEMP_DEFAULT_SECONDS)
            if not isinstance(seconds, int) or isinstance(seconds, bool) or seconds < 1:
                raise _Refused(ERR_INVALID_ACTION_INFO)
            seconds = min(seconds, QR_TEMP_MAX_SECONDS)
            expires_at = now + timedelta(seconds=seconds)
            answer["expire_seconds"] = seconds
        answer["url"] = url
        self.qrcodes[ticket] = QrCode(ticket, action, value, url, now, expires_at)
        return answer

    async def _showqrcode(self, request: web.Request, body: Any) -> Answer:
        qr = self.qrcodes.get(request.query.get("ticket", ""))
        if qr is None or (qr.expires_at is not None and self.clock.now() >= qr.expires_at):
            return web.Response(status=404, text="ticket not found")
        return web.Response(body=_qr_png(qr.ticket), content_type="image/png")

    async def _private_templates(self, request: web.Request, body: Any) -> Answer:
        return {"template_list": [
            {"template_id": tid, "title": title, "primary_industry": "", "deputy_industry": "",
             "content": content, "example": ""}
            for tid, (title, content) in self.templates.items()
        ]}

    async def _user_info(self, request: web.Request, body: Any) -> Answer:
        openid = _str(request.query.get("openid"), ERR_INVALID_OPENID)
        if not self.is_follower(openid):
            return {"subscribe": 0, "openid": openid}
        follower = self._followers.get(openid) or _Follower(None, self._created)
        # since 2021-12-27 WeChat no longer returns nickname, avatar, sex or place
        info: dict[str, Any] = {
            "subscribe": 1, "openid": openid, "language": request.query.get("lang", "zh_CN"),
            "subscribe_time": int(follower.since.timestamp()), "remark": "", "groupid": 0,
            "tagid_list": self.tags_of(openid), "subscribe_scene": "ADD_SCENE_OTHERS", "qr_scene": 0,
            "qr_scene_str": "",
        }
        if follower.unionid:
            info["unionid"] = follower.unionid
        return info

    async def _menu_create(self, request: web.Request, body: Any) -> Answer:
        body = _obj(body)
        self._check_menu(body.get("button"))
        # the default menu is replaced; conditional menus published before stay
        self.menu = {"button": body["button"]}
        self.menu_id = str(next(self._menuids))
        return dict(OK)

    def _check_menu(self, buttons: Any) -> None:
        """WeChat's button rules, shared by menu/create and menu/addconditional."""
        if not isinstance(buttons, list) or not 1 <= len(buttons) <= MENU_TOP_MAX:
            raise _Refused(40016)
        for button in buttons:
            if not isinstance(button, dict):
                raise _Refused(ERR_DATA_FORMAT)
            subs = button.get("sub_button")
            if subs:
                self._check_name(button, MENU_TOP_NAME_BYTES, 40018)
                if not isinstance(subs, list) or len(subs) > MENU_SUB_MAX:
                    raise _Refused(40023)
                for sub in subs:
                    self._check_button(sub, sub=True)
            else:
                self._check_button(button, sub=False)

    @staticmethod
    def _check_name(button: dict[str, Any], limit: int, errcode: int) -> None:
        name = button.get("name")
        if not isinstance(name, str) or not name or len(name.encode("utf-8")) > limit:
            raise _Refused(errcode)

    def _check_button(self, button: Any, *, sub: bool) -> None:
        """A leaf button; sub-button errors are the top-level codes + 7 (40017 → 40024 ...)."""
        if not isinstance(button, dict):
            raise _Refused(ERR_DATA_FORMAT)
        bump = 7 if sub else 0
        type_err, name_err, key_err, url_err = (c + bump for c in (40017, 40018, 40019, 40020))
        kind = button.get("type")
        keyed = ("click", "scancode_push", "scancode_waitmsg", "pic_sysphoto", "pic_photo_or_album",
                 "pic_weixin", "location_select")
        needs = {"view": ("url",), "miniprogram": ("url", "appid", "pagepath"), "media_id": ("media_id",),
                 "view_limited": ("media_id",), "article_id": ("article_id",),
                 "article_view_limited": ("article_id",)}
        if kind not in keyed and kind not in needs:
            raise _Refused(type_err)
        self._check_name(button, MENU_SUB_NAME_BYTES if sub else MENU_TOP_NAME_BYTES, name_err)
        if kind in keyed:
            key = button.get("key")
            if not isinstance(key, str) or not key or len(key.encode("utf-8")) > MENU_KEY_BYTES:
                raise _Refused(key_err)
            return
        for required in needs[str(kind)]:
            value = button.get(required)
            if not isinstance(value, str) or not value:
                raise _Refused(url_err if required == "url" else type_err)
            if required == "url" and len(value.encode("utf-8")) > MENU_URL_BYTES:
                raise _Refused(url_err)

    async def _menu_get(self, request: web.Request, body: Any) -> Answer:
        if self.menu is None:
            raise _Refused(ERR_NO_MENU)
        answer: dict[str, Any] = {"menu": {"button": self.menu["button"], "menuid": self.menu_id}}
        if self.conditional_menus:
            answer["conditionalmenu"] = [{"button": m.button, "matchrule": m.matchrule, "menuid": m.menuid}
                                         for m in self.conditional_menus]
        return answer

    async def _menu_delete(self, request: web.Request, body: Any) -> Answer:
        # deleting the default menu deletes every conditional menu with it
        self.menu, self.menu_id = None, None
        self.conditional_menus.clear()
        return dict(OK)

    async def _menu_add_conditional(self, request: web.Request, body: Any) -> Answer:
        body = _obj(body)
        if self.menu is None:
            raise _Refused(ERR_NO_DEFAULT_MENU)
        self._check_menu(body.get("button"))
        rule = body.get("matchrule")
        filled = {k: v for k, v in rule.items() if v not in (None, "")} if isinstance(rule, dict) else {}
        if not filled:
            raise _Refused(ERR_MATCHRULE_EMPTY)
        if filled.keys() & MATCHRULE_PRIVATE:
            raise _Refused(ERR_MATCHRULE_PRIVATE)
        if not filled.keys() <= {"tag_id", "group_id", "client_platform_type"}:
            raise _Refused(ERR_DATA_FORMAT)
        tag_id: int | None = None
        echo: dict[str, Any] = {}
        tag = filled.get("tag_id", filled.get("group_id"))
        if tag is not None:
            if isinstance(tag, bool) or not str(tag).isdigit():
                raise _Refused(ERR_DATA_FORMAT)
            tag_id = int(tag)
            echo["group_id"] = str(tag_id)  # menu/get names the tag by its old name, as a string
        platform = filled.get("client_platform_type")
        if platform is not None:
            if str(platform) not in ("1", "2", "3"):
                raise _Refused(ERR_DATA_FORMAT)
            echo["client_platform_type"] = str(platform)
        menuid = str(next(self._menuids))
        self.conditional_menus.append(ConditionalMenu(menuid, body["button"], echo, tag_id))
        return {"menuid": menuid}

    async def _menu_del_conditional(self, request: web.Request, body: Any) -> Answer:
        menuid = str(_obj(body).get("menuid", ""))
        kept = [m for m in self.conditional_menus if m.menuid != menuid]
        if len(kept) == len(self.conditional_menus):
            raise _Refused(ERR_NO_SUCH_CONDITIONAL_MENU)
        self.conditional_menus = kept
        return dict(OK)

    async def _menu_trymatch(self, request: web.Request, body: Any) -> Answer:
        user = _str(_obj(body).get("user_id"), ERR_NO_SUCH_USER)
        if self.menu is None:
            raise _Refused(ERR_NO_MENU)
        if not self.is_follower(user):
            raise _Refused(ERR_NO_SUCH_USER)
        return {"button": self.menu_for(user)}

    async def _tags_create(self, request: web.Request, body: Any) -> Answer:
        tag = _obj(body).get("tag")
        name = tag.get("name") if isinstance(tag, dict) else None
        if not isinstance(name, str) or not name.strip():
            raise _Refused(ERR_TAG_NAME_TAKEN)
        if len(name.encode("utf-8")) > TAG_NAME_MAX_BYTES:
            raise _Refused(ERR_TAG_NAME_TOO_LONG)
        if name in self.tags.values() or name in SYSTEM_TAGS.values():
            raise _Refused(ERR_TAG_NAME_TAKEN)
        if len(self.tags) >= TAGS_PER_ACCOUNT:
            raise _Refused(ERR_TOO_MANY_TAGS)
        tag_id = next(self._tagids)
        self.tags[tag_id] = name
        return {"tag": {"id": tag_id, "name": name}}

    def _tag_count(self, tag_id: int) -> int:
        return sum(tag_id in tags for tags in self._user_tags.values())

    async def _tags_get(self, request: web.Request, body: Any) -> Answer:
        listed = {2: SYSTEM_TAGS[2], **self.tags}
        return {"tags": [{"id": tid, "name": name, "count": self._tag_count(tid)} for tid, name in listed.items()]}

    async def _tags_getidlist(self, request: web.Request, body: Any) -> Answer:
        openid = _str(_obj(body).get("openid"), ERR_INVALID_OPENID)
        if not self.is_follower(openid):
            raise _Refused(ERR_INVALID_OPENID)
        return {"tagid_list": self.tags_of(openid)}

    def _tag_request(self, body: Any) -> tuple[list[str], int]:
        body = _obj(body)
        openids = body.get("openid_list")
        if (not isinstance(openids, list) or not 1 <= len(openids) <= TAG_BATCH_MAX
                or not all(isinstance(o, str) and o for o in openids)):
            raise _Refused(ERR_INVALID_OPENID_LIST)
        tag = body.get("tagid")
        if isinstance(tag, bool) or not str(tag).isdigit() or int(tag) not in self.tags:
            raise _Refused(ERR_INVALID_TAG)  # unknown, or a system tag (0/1/2 cannot be given)
        if not all(self.is_follower(o) for o in openids):
            raise _Refused(ERR_INVALID_OPENID)
        return openids, int(tag)

    async def _batch_tagging(self, request: web.Request, body: Any) -> Answer:
        openids, tag = self._tag_request(body)
        # all or nothing: one follower over the limit refuses the whole call
        if any(tag not in self._user_tags[o] and len(self._user_tags[o]) >= TAGS_PER_USER for o in openids):
            raise _Refused(ERR_USER_TAGS_FULL)
        for openid in openids:
            if tag not in self._user_tags[openid]:  # giving a tag again keeps its place
                self._user_tags[openid].append(tag)
        return dict(OK)

    async def _batch_untagging(self, request: web.Request, body: Any) -> Answer:
        openids, tag = self._tag_request(body)
        for openid in openids:
            if tag in self._user_tags.get(openid, []):
                self._user_tags[openid].remove(tag)
        return dict(OK)

    async def _tag_members(self, request: web.Request, body: Any) -> Answer:
        body = _obj(body)
        tag = body.get("tagid")
        if isinstance(tag, bool) or not str(tag).isdigit() or int(tag) not in self.tags:
            raise _Refused(ERR_INVALID_TAG)
        members = [o for o, tags in self._user_tags.items() if int(tag) in tags]
        after = body.get("next_openid") or ""
        start = members.index(after) + 1 if after in members else 0
        page = members[start:start + TAG_MEMBERS_PAGE]
        answer: dict[str, Any] = {"count": len(page)}
        if page:
            answer["data"] = {"openid": page}
        answer["next_openid"] = page[-1] if page else ""
        return answer

    def _app_grant(self, request: web.Request) -> Any:
        """The query of a code exchange, its app credentials and grant type checked as WeChat does."""
        q = request.query
        if not q.get("appid"):
            raise _Refused(ERR_APPID_MISSING)
        if not q.get("secret"):
            raise _Refused(ERR_SECRET_MISSING)
        if q["appid"] not in self.apps:
            raise _Refused(ERR_INVALID_APPID)
        if q["secret"] != self.apps[q["appid"]]:
            raise _Refused(ERR_INVALID_APPSECRET)
        if q.get("grant_type") != "authorization_code":
            raise _Refused(ERR_INVALID_GRANT_TYPE)
        return q

    async def _jscode2session(self, request: web.Request, body: Any) -> Answer:
        q = self._app_grant(request)
        code = q.get("js_code", "")
        if not code:
            raise _Refused(ERR_CODE_MISSING)
        if code in self._used_codes:
            raise _Refused(ERR_CODE_USED)
        if code not in self._login_codes:
            raise _Refused(ERR_INVALID_CODE)
        self._used_codes.add(code)
        openid, unionid = self._login_codes.pop(code)
        answer = {"openid": openid, "session_key": base64.b64encode(secrets.token_bytes(16)).decode()}
        if unionid:
            answer["unionid"] = unionid
        return answer

    async def _oauth_access_token(self, request: web.Request, body: Any) -> Answer:
        """The web login's code → openid exchange (snsapi_base), for the official account only."""
        q = self._app_grant(request)
        code = q.get("code", "")
        if not code:
            raise _Refused(ERR_CODE_MISSING)
        # a code works once (taken out whatever follows), only for the official account it was
        # issued by, and only for a few minutes
        issued = self._oauth_codes.pop(code, None)
        if issued is None or q["appid"] != self.appid or self.clock.now() >= issued[1] + OAUTH_CODE_TTL:
            raise _Refused(ERR_INVALID_CODE)
        return {"access_token": secrets.token_urlsafe(64), "expires_in": 7200,
                "refresh_token": secrets.token_urlsafe(64), "openid": issued[0], "scope": "snsapi_base",
                "is_snapshotuser": 0}

    async def _phone_number(self, request: web.Request, body: Any) -> Answer:
        body = _obj(body)
        code = body.get("code")
        if not isinstance(code, str) or code not in self._phone_codes:
            raise _Refused(ERR_INVALID_CODE)  # unknown, or already used: a code works once
        phone, country = self._phone_codes.pop(code)
        token = self._tokens[request.query["access_token"]]
        return {**OK, "phone_info": {
            "phoneNumber": phone if country == "86" else f"+{country} {phone}",
            "purePhoneNumber": phone, "countryCode": country,
            "watermark": {"timestamp": int(self.clock.now().timestamp()), "appid": token.appid},
        }}
