"""The document page behind the stewards' signed links, and the WeChat web login (网页授权) it asks
for.

A steward, red proxy or department clerk asks in chat for 查看材料 and gets a link
``/docs/<token>`` (models.errand_docs.make_link: signed, for them, valid ``errands.link_minutes``).
The page needs a staff login: the mini-program's session (``Authorization: Bearer``) or a cookie
from the web login, which sends the browser through WeChat's OAuth (scope ``snsapi_base``: only
the openid, no consent screen) and back to ``/auth/wechat/callback``. There the code becomes the
openid, the openid the bound account, the account a session (bot.api.create_session) in an
HttpOnly cookie, and the browser goes back to the page it came from.

WeChat allows ``state`` only as [a-zA-Z0-9], at most 128 bytes, so it cannot carry a signed
path itself: it is a random nonce plus an HMAC over the nonce and the ``next`` path, and the
nonce and ``next`` ride in a short-lived signed HttpOnly cookie of the browser that started the
login. A forged or replayed state, a state from another browser, and any ``next`` that is not a
plain local path are refused.

Pages are plain zh-CN HTML, never cached (no-store), never framed; a link someone may not use,
a forged one and a missing errand all answer the same 404 page.
"""

from __future__ import annotations

import hashlib
import hmac
import html
import logging
import secrets
import urllib.parse
from typing import Any

from aiohttp import web
from itsdangerous import BadSignature

from bot.api import ApiError, Limiter, create_session, load_session
from bot.services import Services
from bot.wxclient import WeChatAPIError, WeChatUnavailable
from models import errand_docs
from models.errands import STATE_LABELS, Errand, ErrandPhoto, PhotoState
from models.errors import NotFound
from models.residents import Resident, WechatAccount
from models.roles import StaffRole
from models.wishes import mask_name

log = logging.getLogger(__name__)

SESSION_COOKIE = "linli_session"
LOGIN_COOKIE = "linli_oauth"
LOGIN_SALT = "linli.docs-web.oauth"
LOGIN_SECONDS = 600  # from /auth/wechat to the callback
CALLBACK_PATH = "/auth/wechat/callback"
NEXT_MAX = 1000

HEADERS = {
    "Cache-Control": "no-store",
    "Pragma": "no-cache",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": "default-src 'none'; img-src 'self'; style-src 'unsafe-inline'; "
                               "frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
}

PHOTO_LABELS = {
    PhotoState.SAVING: "正在保存", PhotoState.PENDING: "待预审", PhotoState.ACCEPTED: "已通过",
    PhotoState.RESHOOT: "待重拍", PhotoState.LOST: "没能保存，待居民重发",
}

STYLE = ("body{font-family:-apple-system,'PingFang SC','Microsoft YaHei',sans-serif;margin:0;padding:16px;"
         "color:#222;background:#f6f6f6;line-height:1.6}h1{font-size:20px;margin:0 0 8px}"
         "section{background:#fff;border-radius:8px;padding:12px;margin:12px 0}"
         "img{max-width:100%;display:block;margin-top:8px;border:1px solid #ddd}"
         ".muted{color:#888;font-size:14px}.state{float:right;color:#c00}")


# ---------------------------------------------------------------------------- pages


def page(title: str, body: str, status: int = 200) -> web.Response:
    text = (f'<!doctype html><html lang="zh-CN"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width,initial-scale=1">'
            f'<meta name="referrer" content="no-referrer"><title>{html.escape(title)}</title>'
            f"<style>{STYLE}</style></head><body>{body}</body></html>")
    return web.Response(text=text, status=status, content_type="text/html", charset="utf-8", headers=HEADERS)


def notice(status: int, title: str, message: str) -> web.Response:
    return page(title, f"<h1>{html.escape(title)}</h1><p>{html.escape(message)}</p>", status)


def not_found() -> web.Response:
    return notice(404, "没有找到", "没有找到这个页面：链接可能有误，或你没有查看权限。请回到公众号重新点“查看材料”。")


def expired() -> web.Response:
    return notice(410, "链接已过期", errand_docs.GONE)


def redirect(location: str) -> web.Response:
    return web.Response(status=302, headers={**HEADERS, "Location": location})


# ---------------------------------------------------------------------------- helpers


def safe_next(value: str | None) -> str | None:
    """``value`` if it is a plain path on this site (``/docs/...``), else None: nothing with a
    scheme or host, no ``//`` or backslash a browser would read as another host, no control
    characters or spaces."""
    if not value or len(value) > NEXT_MAX or not value.startswith("/") or value.startswith("//"):
        return None
    if "\\" in value or any(ord(c) < 0x21 or ord(c) == 0x7F for c in value):
        return None
    parts = urllib.parse.urlsplit(value)
    if parts.scheme or parts.netloc or not parts.path.startswith("/") or parts.path.startswith("//"):
        return None
    return value


def _secure(services: Services) -> bool:
    return services.config.server.public_url.startswith("https://")


def _bearer(request: web.Request) -> str | None:
    header = request.headers.get("Authorization")
    if header is None:
        return None
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


async def viewer_of(request: web.Request, services: Services) -> int | None:
    """The resident behind the request's mini-program session or web-login cookie, if any."""
    bearer = _bearer(request)
    token = bearer if bearer is not None else request.cookies.get(SESSION_COOKIE, "")
    session = await load_session(services.store, token or "")
    if session is None:
        return None
    account = await WechatAccount.get_or_none(id=session.account_id)
    if account is None:
        return None
    return account.resident_id  # type: ignore[attr-defined]


def _client_ip(request: web.Request, trust_forwarded: bool) -> str:
    forwarded = request.headers.get("X-Forwarded-For", "") if trust_forwarded else ""
    return forwarded.split(",")[0].strip()[:64] if forwarded else request.remote or "unknown"


def _state_mac(key: str, nonce: str, next_path: str) -> str:
    return hmac.new(key.encode(), f"oauth-state|{nonce}|{next_path}".encode(), hashlib.sha256).hexdigest()[:40]


# ---------------------------------------------------------------------------- views


def add_docs_web(app: web.Application, services_key: web.AppKey[Services], limiter_key: web.AppKey[Limiter]) -> None:
    """The document page, its photos and the WeChat web login, on ``app``."""

    async def docs_page(request: web.Request) -> web.StreamResponse:
        """The errand's checklist with each live photo, for whom the link was made, logged in."""
        services = request.app[services_key]
        checked = await _check(request, services)
        if isinstance(checked, web.StreamResponse):
            return checked
        errand, token, _ = checked
        return await _render(errand, token)

    async def docs_photo(request: web.Request) -> web.StreamResponse:
        """One photo's bytes (each one logged as a view "link")."""
        services = request.app[services_key]
        checked = await _check(request, services)
        if isinstance(checked, web.StreamResponse):
            return checked
        errand, _, viewer_id = checked
        raw = request.match_info["photo_id"]
        if not raw.isascii() or not raw.isdigit() or not 1 <= int(raw) <= 2**31 - 1:
            return not_found()
        photo = await ErrandPhoto.get_or_none(id=int(raw), errand_id=errand.id)
        if photo is None:
            return not_found()
        try:
            photo, data = await errand_docs.open_photo(viewer_id, photo.id, via="link", now=services.clock.now())
        except NotFound:
            return not_found()
        ext = photo.file_name.rsplit(".", 1)[-1]
        return web.Response(body=data, content_type=photo.content_type, headers={
            **HEADERS, "Content-Disposition": f'inline; filename="{photo.id}.{ext}"'})

    async def _check(request: web.Request, services: Services) -> tuple[Errand, str, int] | web.StreamResponse:
        """(errand, token, viewer id) when the link is genuine and fresh and the one logged in may use it;
        otherwise the answer to give (the login, 410, or the same 404 for everything else)."""
        token = request.match_info["token"]
        now = services.clock.now()
        try:
            errand_id, link_viewer = await errand_docs.verify(token, now)
        except errand_docs.LinkExpired:
            return expired()
        except NotFound:
            return not_found()
        viewer_id = await viewer_of(request, services)
        if viewer_id is None:
            if _bearer(request) is not None:  # a mini-program web view whose session ended
                return notice(401, "请重新登录", "登录已过期，请回到小程序重新打开。")
            return redirect("/auth/wechat?" + urllib.parse.urlencode({"next": f"/docs/{token}"}))
        errand = await Errand.get_or_none(id=errand_id)
        # the link is for one person: someone else with it (forwarded, leaked) sees nothing
        if errand is None or viewer_id != link_viewer or not await errand_docs.may_open(viewer_id, errand):
            return not_found()
        return errand, token, viewer_id

    async def _render(errand: Errand, token: str) -> web.Response:
        resident = await Resident.get_or_none(id=errand.resident_id)
        latest: dict[str, ErrandPhoto] = {}
        for kept in await ErrandPhoto.filter(errand_id=errand.id).exclude(state=PhotoState.REPLACED).order_by("id"):
            latest[kept.document] = kept
        rows = []
        for document in errand.documents:
            photo = latest.get(document)
            if photo is None:
                rows.append(f'<section><b>{html.escape(document)}</b><span class="state">未上传</span></section>')
                continue
            label = PHOTO_LABELS.get(photo.state, photo.state)
            reason = f'<p class="muted">{html.escape(photo.reason)}</p>' if photo.reason else ""
            img = ""
            if photo.file_name and photo.deleted_at is None and photo.state not in (PhotoState.LOST, PhotoState.SAVING):
                img = (f'<img src="/docs/{html.escape(token)}/photos/{photo.id}" '
                       f'alt="{html.escape(document)}" loading="lazy">')
            rows.append(f'<section><b>{html.escape(document)}</b><span class="state">{html.escape(label)}</span>'
                        f"{reason}{img}</section>")
        name = mask_name(resident.name) if resident is not None else "**"
        body = (f"<h1>{html.escape(errand.item_name)} · 材料</h1>"
                f'<p>居民：{html.escape(name)}　状态：{html.escape(STATE_LABELS.get(errand.state, errand.state))}</p>'
                + "".join(rows)
                + f'<p class="muted">链接{errand_docs.settings().link_minutes}分钟内有效，只给你本人查看，'
                  "请勿转发或截图外传；每次查看都会记录。要处理这件代办，请回到公众号操作。</p>")
        return page(f"{errand.item_name} · 材料", body)

    async def login(request: web.Request) -> web.StreamResponse:
        """To WeChat's web login (snsapi_base), remembering where to come back to."""
        services = request.app[services_key]
        next_path = safe_next(request.query.get("next"))
        if next_path is None:
            return notice(400, "链接无效", "这个登录链接无效。请回到公众号重新点“查看材料”。")
        key = await errand_docs.signing_key()
        nonce = secrets.token_hex(12)
        state = nonce + _state_mac(key, nonce, next_path)  # [0-9a-f]{64}: what WeChat allows
        cookie = errand_docs.serializer(key, LOGIN_SALT, services.clock.now()).dumps({"s": nonce, "n": next_path})
        config = services.config
        callback = errand_docs.link_url(config.server.public_url, CALLBACK_PATH)
        if not config.server.public_url:
            callback = f"{request.scheme}://{request.host}{CALLBACK_PATH}"
        # the order of the parameters matters to WeChat (it matches the URL strictly), as wechatpy's
        # WeChatOAuth.authorize_url builds it
        location = (f"{config.wechat.oauth_base_url.rstrip('/')}/connect/oauth2/authorize"
                    f"?appid={urllib.parse.quote(services.client.wechat.appid, safe='')}"
                    f"&redirect_uri={urllib.parse.quote(callback, safe='')}"
                    f"&response_type=code&scope=snsapi_base&state={state}#wechat_redirect")
        response = redirect(location)
        response.set_cookie(LOGIN_COOKIE, cookie, max_age=LOGIN_SECONDS, path="/auth/wechat", httponly=True,
                            samesite="Lax", secure=_secure(services))
        return response

    async def callback(request: web.Request) -> web.StreamResponse:
        """WeChat's redirect back: code → openid → the bound staff account → a session cookie."""
        services = request.app[services_key]
        config = services.config
        limiter = request.app[limiter_key]
        try:
            await limiter.hit("login", _client_ip(request, config.api.trust_forwarded_for), config.api.login_per_minute)
        except ApiError:
            return notice(429, "请稍后再试", "登录太频繁了，请过一分钟再试。")
        retry = "请回到公众号重新点“查看材料”。"
        try:
            data: Any = errand_docs.serializer(await errand_docs.signing_key(), LOGIN_SALT, services.clock.now()).loads(
                request.cookies.get(LOGIN_COOKIE, ""), max_age=LOGIN_SECONDS)
        except BadSignature:  # none, forged, or too old (SignatureExpired is one)
            return notice(400, "登录已过期", f"登录没有完成或已过期。{retry}")
        if not isinstance(data, dict):
            return notice(400, "登录无效", f"这次登录无效。{retry}")
        nonce, next_path = str(data.get("s", "")), safe_next(str(data.get("n", "")))
        state = request.query.get("state", "")
        key = await errand_docs.signing_key()
        if next_path is None or not nonce or not hmac.compare_digest(state, nonce + _state_mac(key, nonce, next_path)):
            return notice(400, "登录无效", f"这次登录无效。{retry}")
        code = request.query.get("code", "")
        if not code:  # the person said no on WeChat's page
            return notice(403, "需要微信登录", f"查看材料需要用微信登录确认你的身份。{retry}")
        try:
            openid = await services.client.oauth_openid(code)
        except WeChatAPIError as exc:
            if exc.transient:
                return notice(503, "请稍后再试", "微信暂时无法登录，请稍后再试。")
            log.info("web login: WeChat refused the code (%s)", exc.errcode)
            return notice(400, "登录无效", f"登录凭证无效或已用过。{retry}")
        except WeChatUnavailable:
            return notice(503, "请稍后再试", "微信暂时无法登录，请稍后再试。")
        account = await WechatAccount.get_or_none(openid=openid)
        resident_id = None if account is None else account.resident_id  # type: ignore[attr-defined]
        if account is None or resident_id is None or not await StaffRole.filter(
                resident_id=resident_id, revoked_at=None).exists():
            return notice(403, "仅限工作人员",
                          "这个页面只给绑定了身份的工作人员使用。请先在公众号里绑定身份，或联系社区开通。")
        hours = config.api.session_hours
        token = await create_session(services.store, account, hours)
        response = redirect(next_path)
        response.del_cookie(LOGIN_COOKIE, path="/auth/wechat")
        response.set_cookie(SESSION_COOKIE, token, max_age=hours * 3600, path="/", httponly=True, samesite="Lax",
                            secure=_secure(services))
        return response

    app.router.add_get("/docs/{token}", docs_page)
    app.router.add_get("/docs/{token}/photos/{photo_id}", docs_photo)
    app.router.add_get("/auth/wechat", login)
    app.router.add_get(CALLBACK_PATH, callback)
