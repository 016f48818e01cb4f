"""The fake WeChat API over real HTTP: WeChat's shapes, and the platform rules it enforces."""

from __future__ import annotations

import struct
import zlib
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import aiohttp
import pytest

from bot.clock import FrozenClock
from bot.testing import FakeWeChat, SentMessage
from bot.wechat_rules import (
    ACCESS_TOKEN_TTL,
    CS_AFTER_EVENT,
    CS_AFTER_MESSAGE,
    CUSTOM_TEXT_MAX_BYTES,
    ERR_API_QUOTA,
    ERR_BUSY,
    ERR_INVALID_TEMPLATE,
    ERR_INVALID_TOKEN,
    ERR_IP_NOT_WHITELISTED,
    ERR_NOT_SUBSCRIBED,
    ERR_OUT_OF_COUNT,
    ERR_OUT_OF_TIME,
    ERR_SUBSCRIBE_REFUSED,
    ERR_TOKEN_EXPIRED,
    MEDIA_ID_TTL,
    MEDIA_IMAGE_MAX_BYTES,
    SUBSCRIBE_SENDS_PER_CONSENT,
)

CUSTOM = "/cgi-bin/message/custom/send"
TEMPLATE = "/cgi-bin/message/template/send"
SUBSCRIBE = "/cgi-bin/message/subscribe/send"
TPL = "tpl-repair-done"
ALICE = "o-alice"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class Api:
    """A tiny client of the fake, speaking WeChat's wire format."""

    def __init__(self, session: aiohttp.ClientSession, fake: FakeWeChat) -> None:
        self.session = session
        self.fake = fake
        self.access_token = ""

    async def stable_token(self, *, force: bool = False, appid: str | None = None,
                           secret: str | None = None) -> dict[str, Any]:
        body = {"grant_type": "client_credential", "appid": appid or self.fake.appid,
                "secret": secret or self.fake.secret, "force_refresh": force}
        async with self.session.post(self.fake.url + "/cgi-bin/stable_token", json=body) as resp:
            assert resp.status == 200
            answer: dict[str, Any] = await resp.json()
        if "access_token" in answer and appid is None:
            self.access_token = answer["access_token"]
        return answer

    async def post(self, path: str, body: Any, *, token: str | None = None, **params: str) -> dict[str, Any]:
        if not self.access_token and token is None:
            await self.stable_token()
        query = {"access_token": self.access_token if token is None else token, **params}
        async with self.session.post(self.fake.url + path, params=query, json=body) as resp:
            assert resp.status == 200
            answer: dict[str, Any] = await resp.json()
            return answer

    async def get(self, path: str, *, token: str | None = None, **params: str) -> dict[str, Any]:
        if not self.access_token and token is None:
            await self.stable_token()
        query = {"access_token": self.access_token if token is None else token, **params}
        async with self.session.get(self.fake.url + path, params=query) as resp:
            assert resp.status == 200
            answer: dict[str, Any] = await resp.json()
            return answer

    async def text(self, openid: str, content: str) -> int:
        answer = await self.post(CUSTOM, {"touser": openid, "msgtype": "text", "text": {"content": content}})
        return int(answer.get("errcode", 0))

    async def template(self, openid: str, template_id: str = TPL) -> dict[str, Any]:
        return await self.post(TEMPLATE, {"touser": openid, "template_id": template_id,
                                          "url": "https://example.cn/r/1",
                                          "data": {"thing1": {"value": "楼道灯已修好"}}})

    async def subscribe(self, openid: str, template_id: str = "sub-visit") -> dict[str, Any]:
        return await self.post(SUBSCRIBE, {"touser": openid, "template_id": template_id,
                                           "page": "pages/index", "data": {"thing1": {"value": "上门"}}})

    async def upload(self, data: bytes, content_type: str = "image/png") -> dict[str, Any]:
        if not self.access_token:
            await self.stable_token()
        form = aiohttp.FormData()
        form.add_field("media", data, filename="photo.png", content_type=content_type)
        async with self.session.post(self.fake.url + "/cgi-bin/media/upload",
                                     params={"access_token": self.access_token, "type": "image"},
                                     data=form) as resp:
            assert resp.status == 200
            answer: dict[str, Any] = await resp.json()
            return answer


@pytest.fixture
async def fake(clock: FrozenClock) -> AsyncIterator[FakeWeChat]:
    async with FakeWeChat(clock, templates=[TPL]) as fake:
        yield fake


@pytest.fixture
async def api(fake: FakeWeChat) -> AsyncIterator[Api]:
    async with aiohttp.ClientSession() as session:
        yield Api(session, fake)


def errcode(answer: dict[str, Any]) -> int:
    return int(answer.get("errcode", 0))


# -- lifecycle and tokens


async def test_start_binds_a_real_loopback_port(clock: FrozenClock) -> None:
    fake = FakeWeChat(clock)
    url = await fake.start()
    try:
        assert url.startswith("http://127.0.0.1:") and not url.endswith(":0")
        assert fake.url == url
        async with aiohttp.ClientSession() as session, session.get(url + "/nowhere") as resp:
            assert resp.status == 404
    finally:
        await fake.stop()
    with pytest.raises(aiohttp.ClientConnectionError):
        async with aiohttp.ClientSession() as session, session.get(url + "/nowhere"):
            pass


async def test_stable_token_is_reused_until_force_refresh(fake: FakeWeChat, api: Api, clock: FrozenClock) -> None:
    first = await api.stable_token()
    assert first["expires_in"] == int(ACCESS_TOKEN_TTL.total_seconds())
    assert "errcode" not in first  # like WeChat: a successful token answer carries no errcode
    clock.advance(timedelta(seconds=100))
    again = await api.stable_token()
    assert again["access_token"] == first["access_token"] == fake.token
    assert again["expires_in"] == int(ACCESS_TOKEN_TTL.total_seconds()) - 100
    assert fake.tokens_issued == 1

    fresh = await api.stable_token(force=True)
    assert fresh["access_token"] != first["access_token"]
    assert fresh["expires_in"] == int(ACCESS_TOKEN_TTL.total_seconds())
    assert fake.tokens_issued == 2
    # the old token keeps working for 30 s, then it is no longer the latest
    assert errcode(await api.get("/cgi-bin/user/info", token=first["access_token"], openid=ALICE)) == 0
    clock.advance(timedelta(seconds=30))
    assert errcode(await api.get("/cgi-bin/user/info", token=first["access_token"], openid=ALICE)) == ERR_INVALID_TOKEN
    assert errcode(await api.get("/cgi-bin/user/info", openid=ALICE)) == 0


async def test_token_expires_by_the_clock_and_on_demand(fake: FakeWeChat, api: Api, clock: FrozenClock) -> None:
    old = (await api.stable_token())["access_token"]
    clock.advance(ACCESS_TOKEN_TTL)
    assert errcode(await api.get("/cgi-bin/user/info", openid=ALICE)) == ERR_TOKEN_EXPIRED
    new = (await api.stable_token())["access_token"]  # no force needed: the old one is dead
    assert new != old and fake.tokens_issued == 2
    assert errcode(await api.get("/cgi-bin/user/info", openid=ALICE)) == 0

    fake.expire_tokens()
    assert errcode(await api.get("/cgi-bin/user/info", openid=ALICE)) == ERR_TOKEN_EXPIRED
    await api.stable_token()
    assert fake.tokens_issued == 3
    assert errcode(await api.get("/cgi-bin/user/info", openid=ALICE)) == 0


async def test_unknown_or_missing_token(api: Api) -> None:
    assert errcode(await api.get("/cgi-bin/user/info", token="forged", openid=ALICE)) == ERR_INVALID_TOKEN
    answer = await api.get("/cgi-bin/user/info", token="", openid=ALICE)
    assert errcode(answer) == 41001 and "rid:" in answer["errmsg"]


async def test_wrong_credentials(api: Api) -> None:
    assert errcode(await api.stable_token(appid="wx-someone-else")) == 40013
    assert errcode(await api.stable_token(secret="guessed")) == 40125


# -- fault injection


@pytest.mark.parametrize("code", [ERR_BUSY, ERR_INVALID_TOKEN, ERR_TOKEN_EXPIRED, ERR_NOT_SUBSCRIBED,
                                  ERR_API_QUOTA, ERR_OUT_OF_TIME, ERR_OUT_OF_COUNT, ERR_IP_NOT_WHITELISTED])
async def test_injected_errors_come_back_then_stop(fake: FakeWeChat, api: Api, code: int) -> None:
    fake.interact(ALICE)
    fake.fail(CUSTOM, code, times=2)
    assert await api.text(ALICE, "一") == code
    assert await api.text(ALICE, "二") == code
    assert await api.text(ALICE, "三") == 0
    assert fake.texts(ALICE) == ["三"]
    fake.fail("/cgi-bin/stable_token", code)
    assert errcode(await api.stable_token()) == code


def test_faults_name_real_endpoints(fake: FakeWeChat) -> None:
    with pytest.raises(ValueError):
        fake.fail("/cgi-bin/message/custom/sned", ERR_BUSY)
    with pytest.raises(ValueError):
        fake.set_latency("/nope", 1)


async def test_latency_delays_but_the_call_succeeds(fake: FakeWeChat, api: Api) -> None:
    fake.interact(ALICE)
    fake.latency = 0.02
    fake.set_latency(CUSTOM, 0.05)
    assert await api.text(ALICE, "慢一点") == 0
    assert fake.texts(ALICE) == ["慢一点"]


async def test_dropped_connection_then_recovery(fake: FakeWeChat, api: Api) -> None:
    fake.interact(ALICE)
    await api.stable_token()
    fake.drop_connection(CUSTOM)
    with pytest.raises(aiohttp.ClientConnectionError):
        await api.text(ALICE, "丢了")
    assert fake.calls[-1].status is None and fake.calls[-1].errcode is None
    assert await api.text(ALICE, "又来") == 0
    assert fake.texts(ALICE) == ["又来"]  # the dropped call had no effect


# -- customer-service allowance


async def test_allowance_after_a_message(fake: FakeWeChat, api: Api, clock: FrozenClock) -> None:
    fake.interact(ALICE, "message")
    n = CS_AFTER_MESSAGE.messages
    assert [await api.text(ALICE, f"第{i}条") for i in range(n)] == [0] * n
    assert await api.text(ALICE, "多一条") == ERR_OUT_OF_COUNT
    assert fake.texts(ALICE) == [f"第{i}条" for i in range(n)]

    fake.interact(ALICE, "message")  # the resident writes again: a fresh window
    assert await api.text(ALICE, "新窗口") == 0
    clock.advance(CS_AFTER_MESSAGE.window - timedelta(seconds=1))
    await api.stable_token()  # tokens live 2 h: a long jump needs a fresh one
    assert await api.text(ALICE, "快到期") == 0
    clock.advance(timedelta(seconds=1))
    assert await api.text(ALICE, "过期") == ERR_OUT_OF_TIME


async def test_no_interaction_no_window(api: Api) -> None:
    assert await api.text(ALICE, "冷启动") == ERR_OUT_OF_TIME


async def test_allowance_after_an_event(fake: FakeWeChat, api: Api, clock: FrozenClock) -> None:
    fake.interact(ALICE, "event")
    n = CS_AFTER_EVENT.messages
    assert [await api.text(ALICE, str(i)) for i in range(n)] == [0] * n
    assert await api.text(ALICE, "多") == ERR_OUT_OF_COUNT

    fake.interact(ALICE, "event")
    assert await api.text(ALICE, "点了菜单") == 0
    clock.advance(CS_AFTER_EVENT.window + timedelta(seconds=1))
    assert await api.text(ALICE, "太晚") == ERR_OUT_OF_TIME


async def test_latest_interaction_wins(fake: FakeWeChat, api: Api, clock: FrozenClock) -> None:
    fake.interact(ALICE, "message")
    fake.interact(ALICE, "event")
    assert [await api.text(ALICE, str(i)) for i in range(CS_AFTER_EVENT.messages + 1)][-1] == ERR_OUT_OF_COUNT
    # an older interaction reported late does not replace the newer window
    fake.interact(ALICE, "message", at=clock.now() - timedelta(hours=1))
    assert await api.text(ALICE, "仍是事件窗口") == ERR_OUT_OF_COUNT
    with pytest.raises(ValueError):
        fake.interact(ALICE, "poke")  # type: ignore[arg-type]


async def test_unfollowed_residents_get_43004(fake: FakeWeChat, api: Api) -> None:
    fake.interact(ALICE)
    fake.unfollow(ALICE)
    assert await api.text(ALICE, "还在吗") == ERR_NOT_SUBSCRIBED
    assert errcode(await api.template(ALICE)) == ERR_NOT_SUBSCRIBED
    fake.follow(ALICE)
    assert await api.text(ALICE, "回来了") == 0

    fake.followers_by_default = False
    fake.interact("o-stranger")
    assert await api.text("o-stranger", "你好") == ERR_NOT_SUBSCRIBED


async def test_text_size_limit(fake: FakeWeChat, api: Api) -> None:
    fake.interact(ALICE)
    fits = "好" * (CUSTOM_TEXT_MAX_BYTES // 3)  # 3 bytes each in UTF-8
    assert await api.text(ALICE, fits + "x" * (CUSTOM_TEXT_MAX_BYTES - len(fits.encode()) + 1)) == 45002
    assert await api.text(ALICE, fits) == 0
    assert await api.text(ALICE, "") == 44004
    # refused sends do not use the allowance
    assert [await api.text(ALICE, "x") for _ in range(CS_AFTER_MESSAGE.messages - 1)] == [0] * 4


async def test_custom_image_needs_a_live_media_id(fake: FakeWeChat, api: Api) -> None:
    fake.interact(ALICE)
    media_id = (await api.upload(PNG_SIGNATURE + b"pixels"))["media_id"]
    ok = await api.post(CUSTOM, {"touser": ALICE, "msgtype": "image", "image": {"media_id": media_id}})
    assert errcode(ok) == 0
    bad = await api.post(CUSTOM, {"touser": ALICE, "msgtype": "image", "image": {"media_id": "nope"}})
    assert errcode(bad) == 40007
    odd = await api.post(CUSTOM, {"touser": ALICE, "msgtype": "hologram"})
    assert errcode(odd) == 40008
    [sent] = fake.sent("custom")
    assert sent.msgtype == "image" and sent.text is None and fake.texts(ALICE) == []


# -- template and subscribe messages


async def test_template_messages(fake: FakeWeChat, api: Api, clock: FrozenClock) -> None:
    assert errcode(await api.template(ALICE, "tpl-unknown")) == ERR_INVALID_TEMPLATE
    first = await api.template(ALICE)
    assert errcode(first) == 0 and isinstance(first["msgid"], int)
    fake.add_template("tpl-later")
    assert errcode(await api.template(ALICE, "tpl-later")) == 0

    fake.template_quota = 2
    assert errcode(await api.template("o-bob")) == 0
    assert errcode(await api.template("o-carol")) == ERR_API_QUOTA
    assert errcode(await api.template("o-carol", "tpl-later")) == 0  # the quota is per template
    clock.advance(timedelta(days=1))
    await api.stable_token()
    assert errcode(await api.template("o-carol")) == 0  # a new day
    assert [m.touser for m in fake.sent("template", touser=None) if m.template_id == TPL] == \
        [ALICE, "o-bob", "o-carol"]
    bad = await api.post(TEMPLATE, {"touser": ALICE, "template_id": TPL, "data": {"thing1": "bare"}})
    assert errcode(bad) == 47001


async def test_subscribe_needs_a_consent_per_send(fake: FakeWeChat, api: Api) -> None:
    assert errcode(await api.subscribe(ALICE)) == ERR_SUBSCRIBE_REFUSED
    fake.consent(ALICE, "sub-visit")
    for _ in range(SUBSCRIBE_SENDS_PER_CONSENT):
        assert errcode(await api.subscribe(ALICE)) == 0
    assert errcode(await api.subscribe(ALICE)) == ERR_SUBSCRIBE_REFUSED
    fake.consent(ALICE, "sub-visit")
    assert errcode(await api.subscribe("o-bob")) == ERR_SUBSCRIBE_REFUSED  # consents are per resident
    assert len(fake.sent("subscribe", ALICE)) == SUBSCRIBE_SENDS_PER_CONSENT


async def test_private_templates_list(fake: FakeWeChat, api: Api) -> None:
    fake.add_template("tpl-2", "报修进度通知", "{{thing1.DATA}}")
    listed = (await api.get("/cgi-bin/template/get_all_private_template"))["template_list"]
    assert [t["template_id"] for t in listed] == [TPL, "tpl-2"]
    assert listed[1]["title"] == "报修进度通知"


# -- media


async def test_media_upload_get_and_expiry(fake: FakeWeChat, api: Api, clock: FrozenClock) -> None:
    data = PNG_SIGNATURE + bytes(range(256)) * 4
    uploaded = await api.upload(data)
    assert uploaded["type"] == "image" and uploaded["created_at"] == int(clock.now().timestamp())
    query = {"access_token": api.access_token, "media_id": uploaded["media_id"]}
    async with api.session.get(fake.url + "/cgi-bin/media/get", params=query) as resp:
        assert resp.status == 200 and resp.content_type == "image/png"
        assert await resp.read() == data

    fake.add_media("seeded", b"GIF89a", "image/gif")
    async with api.session.get(fake.url + "/cgi-bin/media/get",
                               params={**query, "media_id": "seeded"}) as resp:
        assert await resp.read() == b"GIF89a"

    clock.advance(MEDIA_ID_TTL)
    await api.stable_token()
    assert errcode(await api.get("/cgi-bin/media/get", media_id=uploaded["media_id"])) == 40007
    assert errcode(await api.get("/cgi-bin/media/get", media_id="never")) == 40007


async def test_media_size_limit(api: Api) -> None:
    assert errcode(await api.upload(b"\xff" * (MEDIA_IMAGE_MAX_BYTES + 1))) == 40009
    assert "media_id" in await api.upload(b"\xff" * MEDIA_IMAGE_MAX_BYTES)
    assert errcode(await api.post("/cgi-bin/media/upload", None, type="voice")) == 40004


# -- QR codes, users, menu


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == PNG_SIGNATURE and data[12:16] == b"IHDR"
    (length,) = struct.unpack(">I", data[8:12])
    assert struct.unpack(">I", data[16 + length:20 + length])[0] == zlib.crc32(data[12:16 + length])
    width, height = struct.unpack(">II", data[16:24])
    return width, height


async def test_qrcode_create_and_show(fake: FakeWeChat, api: Api, clock: FrozenClock) -> None:
    permanent = await api.post("/cgi-bin/qrcode/create", {
        "action_name": "QR_LIMIT_STR_SCENE", "action_info": {"scene": {"scene_str": "bind:room-301"}}})
    assert set(permanent) == {"ticket", "url"}
    assert fake.qrcodes[permanent["ticket"]].scene == "bind:room-301"
    for path in ("/showqrcode", "/cgi-bin/showqrcode"):  # the real one lives on mp.weixin.qq.com
        async with api.session.get(fake.url + path, params={"ticket": permanent["ticket"]}) as resp:
            assert resp.status == 200 and resp.content_type == "image/png"
            assert _png_size(await resp.read())[0] > 0

    temporary = await api.post("/cgi-bin/qrcode/create", {
        "expire_seconds": 60, "action_name": "QR_STR_SCENE", "action_info": {"scene": {"scene_str": "x"}}})
    assert temporary["expire_seconds"] == 60
    numbered = await api.post("/cgi-bin/qrcode/create", {
        "action_name": "QR_SCENE", "action_info": {"scene": {"scene_id": 42}}})
    assert errcode(numbered) == 0 and fake.qrcodes[numbered["ticket"]].scene == 42
    clock.advance(timedelta(seconds=60))
    async with api.session.get(fake.url + "/showqrcode", params={"ticket": temporary["ticket"]}) as resp:
        assert resp.status == 404

    bad_name = await api.post("/cgi-bin/qrcode/create", {"action_name": "QR_FOREVER"})
    assert errcode(bad_name) == 40052
    too_long = await api.post("/cgi-bin/qrcode/create", {
        "action_name": "QR_LIMIT_STR_SCENE", "action_info": {"scene": {"scene_str": "x" * 65}}})
    assert errcode(too_long) == 40053


async def test_user_info(fake: FakeWeChat, api: Api) -> None:
    info = await api.get("/cgi-bin/user/info", openid=ALICE, lang="zh_CN")
    assert info["subscribe"] == 1 and info["openid"] == ALICE and "unionid" not in info
    fake.follow("o-bob", unionid="u-bob")
    assert (await api.get("/cgi-bin/user/info", openid="o-bob", lang="zh_CN"))["unionid"] == "u-bob"
    fake.unfollow(ALICE)
    assert await api.get("/cgi-bin/user/info", openid=ALICE, lang="zh_CN") == {"subscribe": 0, "openid": ALICE}


MENU = [
    {"name": "办事", "sub_button": [
        {"type": "click", "name": "逢六说事", "key": "REPORT"},
        {"type": "view", "name": "社区网站", "url": "https://example.cn"},
    ]},
    {"type": "click", "name": "爱心银行", "key": "LOVEBANK"},
]


@pytest.mark.parametrize(("button", "code"), [
    ({"type": "click", "name": "无键"}, 40019),
    ({"type": "view", "name": "无址"}, 40020),
    ({"type": "teleport", "name": "怪"}, 40017),
    ({"type": "click", "name": "", "key": "K"}, 40018),
    ({"type": "click", "name": "名字实在是太长了啊啊", "key": "K"}, 40018),
    ({"name": "父", "sub_button": [{"type": "click", "name": "子"}]}, 40026),
    ({"name": "父", "sub_button": [{"type": "view", "name": "子"}]}, 40027),
    ({"name": "父", "sub_button": [{"type": "poke", "name": "子", "key": "K"}]}, 40024),
    ({"name": "父", "sub_button": [{"type": "click", "name": "长" * 21, "key": "K"}]}, 40025),
    ({"name": "父", "sub_button": [{"type": "click", "name": str(i), "key": "K"} for i in range(6)]}, 40023),
])
async def test_menu_validation(fake: FakeWeChat, api: Api, button: dict[str, Any], code: int) -> None:
    assert errcode(await api.post("/cgi-bin/menu/create", {"button": [*MENU, button][-3:]})) == code
    assert fake.menu is None


async def test_menu_create(fake: FakeWeChat, api: Api) -> None:
    assert errcode(await api.post("/cgi-bin/menu/create", {"button": []})) == 40016
    assert errcode(await api.post("/cgi-bin/menu/create", {"button": MENU * 2})) == 40016
    assert await api.post("/cgi-bin/menu/create", {"button": MENU}) == {"errcode": 0, "errmsg": "ok"}
    assert fake.menu == {"button": MENU}


# -- mini-program


async def test_jscode2session(fake: FakeWeChat, api: Api) -> None:
    fake.add_app("wx-mini", "mini-secret")
    fake.add_login_code("code-1", "o-mini-alice", unionid="u-alice")
    query = {"appid": "wx-mini", "secret": "mini-secret", "js_code": "code-1", "grant_type": "authorization_code"}

    async def session(**overrides: str) -> dict[str, Any]:
        async with api.session.get(fake.url + "/sns/jscode2session", params={**query, **overrides}) as resp:
            answer: dict[str, Any] = await resp.json(content_type=None)
            return answer

    wrong_secret = await session(secret="nope")
    assert errcode(wrong_secret) == 40125
    answer = await session()
    assert answer["openid"] == "o-mini-alice" and answer["unionid"] == "u-alice" and answer["session_key"]
    assert errcode(await session()) == 40163  # a code works once
    assert errcode(await session(js_code="never-issued")) == 40029
    assert errcode(await session(appid="wx-other")) == 40013


async def test_phone_number_with_a_mini_program_token(fake: FakeWeChat, api: Api) -> None:
    fake.add_app("wx-mini", "mini-secret")
    token = (await api.stable_token(appid="wx-mini", secret="mini-secret"))["access_token"]
    assert token != fake.token
    fake.add_phone_code("ph-1", "13812345678")
    path = "/wxa/business/getuserphonenumber"
    answer = await api.post(path, {"code": "ph-1"}, token=token)
    assert errcode(answer) == 0
    assert answer["phone_info"]["purePhoneNumber"] == "13812345678"
    assert answer["phone_info"]["phoneNumber"] == "13812345678"
    assert answer["phone_info"]["countryCode"] == "86"
    assert answer["phone_info"]["watermark"]["appid"] == "wx-mini"
    assert errcode(await api.post(path, {"code": "ph-1"}, token=token)) == 40029
    assert errcode(await api.post(path, {"code": "made-up"}, token=token)) == 40029


# -- recording, listener, protocol details


async def test_calls_are_recorded(fake: FakeWeChat, api: Api, clock: FrozenClock) -> None:
    fake.interact(ALICE)
    await api.text(ALICE, "记下来")
    await api.get("/cgi-bin/user/info", token="forged", openid=ALICE)
    token_call, send_call, info_call = fake.calls
    assert (token_call.method, token_call.path, token_call.errcode) == ("POST", "/cgi-bin/stable_token", 0)
    assert isinstance(token_call.body, dict) and token_call.body["grant_type"] == "client_credential"
    assert send_call.path == CUSTOM and send_call.query == {"access_token": api.access_token}
    assert send_call.body == {"touser": ALICE, "msgtype": "text", "text": {"content": "记下来"}}
    assert send_call.errcode == 0 and send_call.status == 200 and send_call.at == clock.now()
    assert (info_call.method, info_call.body, info_call.errcode) == ("GET", None, ERR_INVALID_TOKEN)


async def test_on_send_hears_every_accepted_push(fake: FakeWeChat, api: Api) -> None:
    heard: list[SentMessage] = []
    fake.on_send = heard.append
    fake.interact(ALICE)
    fake.consent(ALICE, "sub-visit")
    await api.text(ALICE, "你好")
    await api.template(ALICE)
    await api.subscribe(ALICE)
    await api.template(ALICE, "tpl-unknown")  # refused: not heard
    assert [(m.kind, m.touser) for m in heard] == [("custom", ALICE), ("template", ALICE), ("subscribe", ALICE)]
    assert heard == fake.sent()
    assert heard[0].text == "你好" and heard[1].msgid is not None and heard[2].template_id == "sub-visit"

    def broken(message: SentMessage) -> None:
        raise RuntimeError("listener bug")

    fake.on_send = broken
    assert await api.text(ALICE, "照样送达") == 0


async def test_wire_protocol_errors(fake: FakeWeChat, api: Api) -> None:
    await api.stable_token()
    params = {"access_token": api.access_token}
    async with api.session.post(fake.url + CUSTOM, params=params, data=b"{not json") as resp:
        assert errcode(await resp.json()) == 47001
    async with api.session.post(fake.url + CUSTOM, params=params, data=b"") as resp:
        assert errcode(await resp.json()) == 44002
    async with api.session.get(fake.url + CUSTOM, params=params) as resp:
        assert errcode(await resp.json()) == 43002
    async with api.session.post(fake.url + "/cgi-bin/user/info", params=params, json={}) as resp:
        assert errcode(await resp.json()) == 43001
