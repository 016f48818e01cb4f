"""`linli wechat menu` and `linli wechat check`: setting up and verifying an official account."""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

import aiohttp

from bot.config import Config
from bot.gateway import sign
from bot.wxclient import WeChatAPIError, WeChatClient, WeChatUnavailable


@dataclass
class Check:
    name: str
    ok: bool
    detail: str

    def line(self) -> str:
        return f"[{'ok' if self.ok else 'FAIL'}] {self.name}: {self.detail}"


TOKEN_ERRORS_EXPLAINED = {
    40013: "WeChat does not know this AppID: copy wechat.appid from 设置与开发 → 基本配置.",
    40125: "The AppSecret is wrong or was reset: set wechat.secret to the current AppSecret.",
    40164: "This server's IP address is not whitelisted: add it under 基本配置 → IP白名单 ({msg}).",
    41002: "wechat.appid is missing.",
    41004: "wechat.secret is missing.",
}


def check_credentials(config: Config) -> list[Check]:
    w = config.wechat
    return [
        Check("appid", bool(w.appid), "set" if w.appid else "wechat.appid is empty"),
        Check("secret", bool(w.secret), "set" if w.secret else "wechat.secret is empty (needed for outbound calls)"),
        Check("token", bool(w.token), "set" if w.token else "wechat.token is empty: the gateway refuses every push"),
        # Plaintext mode is a valid set-up, so an empty key is not a failure, only a warning.
        Check("EncodingAESKey", True,
              "set (compatible and safe mode work)" if w.encoding_aes_key
              else "empty: only plaintext mode works (WeChat recommends safe mode)"),
    ]


async def check_api(client: WeChatClient, config: Config) -> list[Check]:
    out: list[Check] = []
    try:
        await client.token()
    except WeChatAPIError as exc:
        explained = TOKEN_ERRORS_EXPLAINED.get(exc.errcode, "WeChat refused the credentials: {msg}")
        return [Check("access token", False, f"{exc.errcode}: " + explained.format(msg=exc.errmsg))]
    except WeChatUnavailable as exc:
        return [Check("access token", False, f"cannot reach {client.base_url} ({exc})")]
    out.append(Check("access token", True, "fetched with stable_token"))
    wanted = config.wechat.templates
    if not wanted:
        out.append(Check("template IDs", True, "none configured (wechat.templates)"))
        return out
    try:
        have = {t.get("template_id") for t in await client.private_templates()}
    except (WeChatAPIError, WeChatUnavailable) as exc:
        out.append(Check("template IDs", False, f"cannot list the account's templates ({exc}); "
                                                "template messages need a verified service account"))
        return out
    missing = sorted(purpose for purpose, tid in wanted.items() if tid not in have)
    out.append(Check("template IDs", not missing,
                     "all present" if not missing else f"not in the account: {', '.join(missing)}"))
    return out


async def check_callback(session: aiohttp.ClientSession, config: Config) -> Check:
    """WeChat only pushes to http on port 80 or https on 443, and checks the URL by GET."""
    url = config.server.public_url
    if not url:
        return Check("callback URL", False, "server.public_url is empty: set it to the URL WeChat pushes to")
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    if (parts.scheme, port) not in (("https", 443), ("http", 80)):
        return Check("callback URL", False, f"{url}: WeChat only calls https on port 443 or http on port 80")
    if parts.scheme != "https":
        return Check("callback URL", False, f"{url}: use https (TLS) so that messages are not readable in transit")
    timestamp, nonce, echo = str(int(time.time())), secrets.token_hex(8), secrets.token_hex(8)
    params = {"signature": sign(config.wechat.token, timestamp, nonce), "timestamp": timestamp,
              "nonce": nonce, "echostr": echo}
    try:
        async with session.get(url, params=params, timeout=aiohttp.ClientTimeout(total=10)) as resp:
            body = await resp.text()
    except aiohttp.ClientConnectorCertificateError:
        return Check("callback URL", False, f"{url}: its TLS certificate is not trusted (self-signed, expired or "
                                            "for another name); WeChat needs a valid certificate")
    except (aiohttp.ClientError, TimeoutError) as exc:
        return Check("callback URL", False, f"{url} is not reachable from here ({type(exc).__name__})")
    if resp.status != 200 or body != echo:
        return Check("callback URL", False, f"{url} answered {resp.status} without the echo: is it this service, "
                                            "with the same wechat.token?")
    return Check("callback URL", True, f"{url} answers WeChat's signed check")


def check_menu(config: Config) -> Check:
    problems = menu_problems(config.wechat.menu)
    return Check("menu", not problems, "valid" if not problems else "; ".join(problems))


# WeChat's custom-menu rules (menu/create): counts, byte limits and what each button type needs.
MENU_TOP_NAME_BYTES = 16
MENU_SUB_NAME_BYTES = 60
MENU_KEY_BYTES = 128
MENU_URL_BYTES = 1024
KEY_TYPES = {"click", "scancode_push", "scancode_waitmsg", "pic_sysphoto", "pic_photo_or_album", "pic_weixin",
             "location_select"}
NEEDS = {"view": ("url",), "miniprogram": ("url", "appid", "pagepath"), "media_id": ("media_id",),
         "view_limited": ("media_id",), "article_id": ("article_id",), "article_view_limited": ("article_id",)}


def menu_problems(buttons: list[dict[str, object]]) -> list[str]:
    """WeChat's menu rules: 1–3 buttons of up to 5 sub-buttons, byte limits, each type's fields."""
    problems = []
    if not 1 <= len(buttons) <= 3:
        problems.append("the menu needs 1 to 3 top-level buttons")
    for button in buttons:
        if not isinstance(button, dict):
            problems.append("every button must be a table")
            continue
        subs = button.get("sub_button")
        problems += _name_problems(button, MENU_TOP_NAME_BYTES)
        if isinstance(subs, list):
            if not 1 <= len(subs) <= 5:
                problems.append(f"“{button.get('name', '')}” needs 1 to 5 sub-buttons")
            for sub in subs:
                if not isinstance(sub, dict):
                    problems.append("every sub-button must be a table")
                    continue
                problems += _name_problems(sub, MENU_SUB_NAME_BYTES) + _leaf_problems(sub)
        else:
            problems += _leaf_problems(button)
    return problems


def _name_problems(button: dict[str, object], limit: int) -> list[str]:
    name = str(button.get("name", ""))
    if not name:
        return ["a button has no name"]
    if len(name.encode()) > limit:
        return [f"“{name}” is longer than WeChat's {limit} bytes for this button"]
    return []


def _leaf_problems(button: dict[str, object]) -> list[str]:
    name = str(button.get("name", ""))
    kind = str(button.get("type", ""))
    if kind in KEY_TYPES:
        key = str(button.get("key", ""))
        if not key:
            return [f"“{name}” ({kind}) needs a key"]
        if len(key.encode()) > MENU_KEY_BYTES:
            return [f"the key of “{name}” is longer than {MENU_KEY_BYTES} bytes"]
        return []
    if kind in NEEDS:
        missing = [f for f in NEEDS[kind] if not button.get(f)]
        if missing:
            return [f"“{name}” ({kind}) needs {', '.join(missing)}"]
        if len(str(button.get("url", "")).encode()) > MENU_URL_BYTES:
            return [f"the url of “{name}” is longer than {MENU_URL_BYTES} bytes"]
        return []
    return [f"“{name}” has an unknown type {kind!r}"]
