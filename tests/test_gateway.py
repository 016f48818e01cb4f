"""The WeChat push protocol, through HTTP into /wechat."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from aiohttp.test_utils import TestClient
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from bot.app import ENGINE
from bot.clock import FrozenClock
from bot.gateway import MAX_BODY_BYTES, sign
from models.residents import WechatAccount
from tests.wechat import OLD_AES_KEY, TOKEN, WeChatPusher, message_xml, text_xml

pytestmark = pytest.mark.usefixtures("demo")


async def accounts() -> int:
    return await WechatAccount.all().count()


# ----------------------------------------------------------------------------- GET


async def test_get_echoes_echostr_for_a_valid_signature(client: TestClient, wechat: WeChatPusher) -> None:
    resp = await client.get("/wechat", params={**wechat.query(), "echostr": "hello-123"})
    assert resp.status == 200
    assert await resp.text() == "hello-123"


@pytest.mark.parametrize("tamper", ["signature", "timestamp", "nonce", "missing", "stale"])
async def test_get_refuses_a_forged_or_stale_signature(
    client: TestClient, wechat: WeChatPusher, tamper: str
) -> None:
    q = {**wechat.query(), "echostr": "hello"}
    if tamper == "signature":
        q["signature"] = "0" * 40
    elif tamper == "timestamp":
        q["timestamp"] = str(int(q["timestamp"]) + 1)
    elif tamper == "nonce":
        q["nonce"] += "x"
    elif tamper == "missing":
        del q["signature"]
    else:
        q = {**wechat.query(timestamp=wechat.now() - 3600), "echostr": "hello"}
    resp = await client.get("/wechat", params=q)
    assert resp.status == 403
    assert "hello" not in await resp.text()


async def test_get_published_signature_vector(aiohttp_client, config, demo) -> None:  # type: ignore[no-untyped-def]
    """wechatpy's published check_signature vector (token 'test'), at its own time."""
    from bot.app import create_app

    cfg = config.replace(wechat={"token": "test"})
    clock = FrozenClock(datetime.fromtimestamp(1410685589, UTC))
    client = await aiohttp_client(create_app(cfg, clock=clock))
    good = {"signature": "f21891de399b4e33a1a93c9a7b8a8fffb5a443ff", "timestamp": "1410685589",
            "nonce": "test", "echostr": "ok"}
    assert await (await client.get("/wechat", params=good)).text() == "ok"
    bad = {**good, "signature": "f21891de399b4e33a1a93c9a7b8a8fffb5a443fe"}
    assert (await client.get("/wechat", params=bad)).status == 403


# ----------------------------------------------------------------------------- POST modes


@pytest.mark.parametrize("mode", ["plain", "compat", "aes"])
async def test_post_is_answered_in_the_same_mode(wechat: WeChatPusher, mode: str) -> None:
    pushed = await wechat.push(text_xml("o-mode", "菜单", create_time=wechat.now()), mode=mode)
    assert pushed.status == 200
    assert "请选择服务" in pushed.text
    assert pushed.reply["ToUserName"] == "o-mode"
    assert pushed.reply["FromUserName"] == "gh_linli_official"
    if mode == "plain":
        assert "Encrypt" not in pushed.raw_reply
    else:
        assert set(pushed.raw_reply) >= {"Encrypt", "MsgSignature", "TimeStamp", "Nonce"}


async def test_previous_aes_key_is_accepted_and_used_for_the_reply(wechat: WeChatPusher) -> None:
    """After the admin rotates the EncodingAESKey, pushes under the old key still work."""
    pushed = await wechat.push(text_xml("o-rot", "菜单", create_time=wechat.now()), mode="aes",
                               aes_key=OLD_AES_KEY)
    assert pushed.status == 200
    assert "请选择服务" in pushed.text  # _read decrypted it with the old key


async def test_unknown_aes_key_is_refused_and_stores_nothing(wechat: WeChatPusher) -> None:
    before = await accounts()
    pushed = await wechat.push(text_xml("o-key", "菜单", create_time=wechat.now()), mode="aes",
                               aes_key="0" * 43)
    assert pushed.status == 400
    assert await accounts() == before


async def test_published_aes_vector_decrypts(aiohttp_client, config, demo) -> None:  # type: ignore[no-untyped-def]
    """wechatpy's published encrypted message (token 123456), pushed in safe mode."""
    from bot.app import create_app

    cfg = config.replace(wechat={"token": "123456", "appid": "wx49f0ab532d5d035a",
                                 "encoding_aes_key": "kWxPEV2UEDyxWpmPdKC3F4dgPDmOvfKX1HGnEUDS1aR",
                                 "previous_encoding_aes_key": ""})
    clock = FrozenClock(datetime.fromtimestamp(1411525903, UTC))
    client = await aiohttp_client(create_app(cfg, clock=clock))
    body = (
        "<xml><ToUserName><![CDATA[wx49f0ab532d5d035a]]></ToUserName>\n"
        "<Encrypt><![CDATA[RgqEoJj5A4EMYlLvWO1F86ioRjZfaex/gePD0gOXTxpsq5Yj4GNglrBb8I2BAJVODGajiFnXBu7"
        "mCPatfjsu6IHCrsTyeDXzF6Bv283dGymzxh6ydJRvZsryDyZbLTE7rhnus50qGPMfp2wASFlzEgMW9z1ef/RD8Xza"
        "FYgm7iTdaXpXaG4+BiYyolBug/gYNx410cvkKR2/nPwBiT+P4hIiOAQqGp/TywZBtDh1yCF2KOd0gpiMZ5jSw3e29"
        "mTvmUHzkVQiMS6td7vXUaWOMZnYZlF3So2SjHnwh4jYFxdgpkHHqIrH/54SNdshoQgWYEvccTKe7FS709/5t6NMxu"
        "GhcUGAPOQipvWTT4dShyqio7mlsl5noTrb++x6En749zCpQVhDpbV6GDnTbcX2e8K9QaNWHp91eBdCRxthuL0=]]>"
        "</Encrypt>\n<AgentID><![CDATA[1]]></AgentID>\n</xml>"
    )
    q = {"signature": sign("123456", "1411525903", "461056294"), "timestamp": "1411525903",
         "nonce": "461056294", "encrypt_type": "aes",
         "msg_signature": "74d92dfeb87ba7c714f89d98870ae5eb62dff26d"}
    resp = await client.post("/wechat", params=q, data=body.encode())
    assert resp.status == 200
    assert "<Encrypt>" in await resp.text()
    assert await WechatAccount.filter(openid="messense").exists()  # the decrypted sender
    q["msg_signature"] = "74d92dfeb87ba7c714f89d98870ae5eb62dff26e"
    assert (await client.post("/wechat", params=q, data=body.encode())).status == 403


def test_published_encrypt_vector() -> None:
    """Our encrypted reply equals wechatpy's published one for a fixed random prefix."""
    from wechatpy.crypto import PrpCrypto

    from bot.config import WechatConfig
    from bot.gateway import MessageCrypto

    class FixedRandom(PrpCrypto):
        def get_random_string(self) -> str:
            return "1234567890123456"

    crypto = MessageCrypto(WechatConfig(token="123456", appid="wx49f0ab532d5d035a",
                                        encoding_aes_key="kWxPEV2UEDyxWpmPdKC3F4dgPDmOvfKX1HGnEUDS1aR"))
    crypto.prp_class = FixedRandom
    reply = (
        "<xml>\n<MsgType><![CDATA[text]]></MsgType>\n<Content><![CDATA[test]]></Content>\n"
        "<FromUserName><![CDATA[wx49f0ab532d5d035a]]></FromUserName>\n"
        "<ToUserName><![CDATA[messense]]></ToUserName>\n<AgentID>1</AgentID>\n"
        "<CreateTime>1411525903</CreateTime>\n</xml>"
    )
    out = crypto.encrypt(reply, crypto.keys[0], "461056294", "1411525903")
    assert "<MsgSignature><![CDATA[407518b7649e86ef23978113f92d27afa9296533]]></MsgSignature>" in out
    assert out.startswith("<xml>\n<Encrypt><![CDATA[9s4gMv99m88kKTh/H8IdkOiMg6bisoy3ypwy9H4hvSPe9nsG")


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("forgery", ["signature", "msg_signature", "stale", "future", "no_params"])
async def test_forged_post_is_403_and_changes_nothing(
    client: TestClient, wechat: WeChatPusher, forgery: str
) -> None:
    await wechat.say("o-forge", "菜单")
    engine = client.app[ENGINE]
    state_before = await engine.state_of("o-forge")
    before = await accounts()
    q = wechat.query()
    xml = text_xml("o-forge", "1", create_time=wechat.now())
    body = xml
    if forgery == "signature":
        q["signature"] = sign("wrong-token", q["timestamp"], q["nonce"])
    elif forgery == "msg_signature":
        q["encrypt_type"] = "aes"
        q["msg_signature"] = "f" * 40
        body = f"<xml><Encrypt><![CDATA[{wechat.encrypt(xml)}]]></Encrypt></xml>"
    elif forgery == "stale":
        q = wechat.query(timestamp=wechat.now() - 301)
    elif forgery == "future":
        q = wechat.query(timestamp=wechat.now() + 301)
    else:
        q = {}
    resp = await client.post("/wechat", params=q, data=body.encode())
    assert resp.status == 403
    assert await accounts() == before
    assert await engine.state_of("o-forge") == state_before


BOMB = (
    '<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
    '<!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">'
    '<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>'
    "<xml><ToUserName>a</ToUserName><FromUserName>o-bomb</FromUserName><CreateTime>1</CreateTime>"
    "<MsgType>text</MsgType><Content>&lol3;</Content><MsgId>1</MsgId></xml>"
)
EXTERNAL = (
    '<?xml version="1.0"?><!DOCTYPE x [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>'
    "<xml><ToUserName>a</ToUserName><FromUserName>o-xxe</FromUserName><CreateTime>1</CreateTime>"
    "<MsgType>text</MsgType><Content>&xxe;</Content><MsgId>2</MsgId></xml>"
)


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"<xml><Content>unclosed", id="unclosed"),
        pytest.param(b"not xml at all", id="not-xml"),
        pytest.param(b"", id="empty"),
        pytest.param(BOMB.encode(), id="entity-bomb"),
        pytest.param(EXTERNAL.encode(), id="external-entity"),
        pytest.param(b"<html><body>hi</body></html>", id="wrong-root"),
        pytest.param(b"<xml><MsgType>text</MsgType></xml>", id="missing-fields"),
        pytest.param(b"<xml><ToUserName>a</ToUserName><FromUserName>o</FromUserName><CreateTime>x"
                     b"</CreateTime><MsgType>text</MsgType></xml>", id="bad-createtime"),
        pytest.param(b"<xml>\xff\xfe</xml>", id="not-utf8"),
        pytest.param(b"<xml>" + b"<a>x</a>" * (MAX_BODY_BYTES // 8) + b"</xml>", id="oversize"),
    ],
)
async def test_hostile_body_is_400_and_changes_nothing(
    client: TestClient, wechat: WeChatPusher, body: bytes
) -> None:
    before = await accounts()
    resp = await client.post("/wechat", params=wechat.query(), data=body)
    assert resp.status == 400
    assert await accounts() == before
    # the server goes on serving
    assert "请选择服务" in await wechat.say("o-after", "菜单")


async def test_encrypt_type_unknown_is_400(client: TestClient, wechat: WeChatPusher) -> None:
    q = {**wechat.query(), "encrypt_type": "rot13"}
    resp = await client.post("/wechat", params=q, data=text_xml("o", "hi", create_time=1).encode())
    assert resp.status == 400


@hsettings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=st.binary(max_size=600) | st.text(max_size=300).map(str.encode))
async def test_arbitrary_bytes_never_crash_the_gateway(
    client: TestClient, wechat: WeChatPusher, body: bytes
) -> None:
    resp = await client.post("/wechat", params=wechat.query(), data=body)
    assert resp.status in (200, 400)


# ----------------------------------------------------------------------------- retries


async def test_sequential_retry_has_one_effect_and_the_same_reply(
    client: TestClient, wechat: WeChatPusher
) -> None:
    await wechat.say("o-retry", "菜单")
    xml = text_xml("o-retry", "1", msg_id=42, create_time=wechat.now())  # 1 → binding consent
    first = await wechat.push(xml)
    again = await wechat.push(xml)
    third = await wechat.push(xml, mode="aes")  # a retry may come in another mode: same reply
    assert "同意" in first.text
    assert again.text == first.text == third.text
    # one effect: the conversation moved one step, so "是" is taken as the consent answer
    assert "姓名" in await wechat.say("o-retry", "是")


async def test_concurrent_retries_have_one_effect(client: TestClient, wechat: WeChatPusher) -> None:
    xml = text_xml("o-race", "绑定", msg_id=77, create_time=wechat.now())
    results = await asyncio.gather(*(wechat.push(xml) for _ in range(5)))
    assert {r.status for r in results} == {200}
    assert len({r.text for r in results}) == 1
    assert "同意" in results[0].text
    assert await WechatAccount.filter(openid="o-race").count() == 1
    assert "姓名" in await wechat.say("o-race", "是")


async def test_event_retry_is_keyed_by_create_time_event_and_key(wechat: WeChatPusher) -> None:
    xml = message_xml("o-ev", "event", wechat.now(), Event="CLICK", EventKey="BIND")
    first = await wechat.push(xml)
    assert "同意" in first.text
    assert "姓名" in await wechat.say("o-ev", "是")
    second = await wechat.push(xml)  # a late retry must not restart the flow
    assert second.text == first.text
    assert "手机号" in await wechat.say("o-ev", "王小明")


# ----------------------------------------------------------------------------- message types


async def test_subscribe_welcomes_with_the_menu(wechat: WeChatPusher) -> None:
    # a code that is not a building's (those start binding: tests/test_scan_binding.py)
    pushed = await wechat.event("o-sub", "subscribe", "qrscene_campaign:2026")
    assert "欢迎" in pushed.text and "请选择服务" in pushed.text
    account = await WechatAccount.get(openid="o-sub")
    assert account.subscribed and account.last_scene == "campaign:2026"


async def test_unsubscribe_marks_the_resident(wechat: WeChatPusher, clock: FrozenClock) -> None:
    await wechat.say("o-unsub", "菜单")
    clock.advance(timedelta(seconds=5))
    pushed = await wechat.event("o-unsub", "unsubscribe")
    assert pushed.status == 200 and pushed.body == "success"
    account = await WechatAccount.get(openid="o-unsub")
    assert account.subscribed is False and account.unsubscribed_at is not None


async def test_menu_click_starts_a_flow_like_its_keyword(wechat: WeChatPusher) -> None:
    by_click = (await wechat.event("o-click", "CLICK", "BIND")).text
    by_word = await wechat.say("o-word", "绑定")
    assert by_click == by_word and "同意" in by_click


async def test_voice_recognition_counts_as_text(wechat: WeChatPusher) -> None:
    xml = message_xml("o-voice", "voice", wechat.now(), MediaId="m1", Format="amr",
                      Recognition="绑定", MsgId="900")
    assert "同意" in (await wechat.push(xml)).text
    silent = message_xml("o-voice2", "voice", wechat.now(), MediaId="m2", Format="amr", MsgId="901")
    assert "没有听清" in (await wechat.push(silent)).text


@pytest.mark.parametrize(
    ("msg_type", "fields", "expected"),
    [
        ("image", {"PicUrl": "http://x/p.jpg", "MediaId": "m", "MsgId": "11"}, "已收到"),
        ("location", {"Location_X": "41.99", "Location_Y": "121.64", "Scale": "15",
                      "Label": "太平区", "MsgId": "12"}, "已收到"),
        ("link", {"Title": "t", "Description": "d", "Url": "http://x", "MsgId": "13"}, "已收到"),
        ("shortvideo", {"MediaId": "m", "ThumbMediaId": "t", "MsgId": "14"}, "已收到"),
        ("miniprogrampage", {"Title": "t", "MsgId": "15"}, "暂不支持"),
    ],
)
async def test_other_message_types_get_a_short_helpful_reply(
    wechat: WeChatPusher, msg_type: str, fields: dict[str, str], expected: str
) -> None:
    pushed = await wechat.push(message_xml("o-types", msg_type, wechat.now(), **fields))
    assert pushed.status == 200
    assert expected in pushed.text and "菜单" in pushed.text


async def test_unknown_event_is_acknowledged_silently(wechat: WeChatPusher) -> None:
    pushed = await wechat.event("o-view", "VIEW", "https://example.invalid/")
    assert pushed.status == 200 and pushed.body == "success"


async def test_gateway_off_without_token(aiohttp_client, config) -> None:  # type: ignore[no-untyped-def]
    from bot.app import create_app

    client = await aiohttp_client(create_app(config.replace(wechat={"token": ""})))
    assert (await client.get("/wechat", params={"echostr": "x"})).status in (404, 405)
    assert TOKEN  # the other tests run with a token


async def test_retry_arriving_while_the_first_is_still_handled_gets_its_reply(
    client: TestClient, wechat: WeChatPusher
) -> None:
    """The first delivery is held up (its resident's lock is busy); WeChat's retry waits for it."""
    from bot.app import STORE
    from bot.store import key

    store = client.app[STORE]
    busy = store.lock(key("lock", "conv", "o-slow"), timeout=30)
    assert await busy.acquire()
    xml = text_xml("o-slow", "绑定", msg_id=991, create_time=wechat.now())
    first = asyncio.create_task(wechat.push(xml))
    while await store.get(key("push", "m:o-slow:991")) is None:  # noqa: ASYNC110 - wait for its claim
        await asyncio.sleep(0.01)
    retry = asyncio.create_task(wechat.push(xml))
    await asyncio.sleep(0.1)
    assert not first.done() and not retry.done()
    await busy.release()
    one, two = await first, await retry
    assert one.status == two.status == 200
    assert one.text == two.text and "同意" in one.text
    assert "姓名" in await wechat.say("o-slow", "是")  # handled once
