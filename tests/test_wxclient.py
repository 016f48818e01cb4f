"""The outbound WeChat client against the fake WeChat API over real HTTP.

The token cache lives in the store the service uses: the in-process store by default, real Redis
when LINLI_REDIS_URL is set. Nothing is flushed: every test uses its own AppIDs, so the cache keys
(linli:wx:token:<appid>) of different tests and runs never meet.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from redis.asyncio import Redis

from bot.config import DEFAULT_MENU, MiniprogramConfig, RedisConfig, WechatConfig
from bot.store import key, open_store
from bot.testing import FakeWeChat
from bot.testing.fake_wechat import ERR_CODE_USED, ERR_INVALID_MEDIA_ID
from bot.wechat_rules import (
    CS_AFTER_MESSAGE,
    CUSTOM_TEXT_MAX_BYTES,
    ERR_API_QUOTA,
    ERR_BUSY,
    ERR_INVALID_TOKEN,
    ERR_NOT_SUBSCRIBED,
    ERR_OUT_OF_COUNT,
    ERR_OUT_OF_TIME,
    ERR_SUBSCRIBE_REFUSED,
    ERR_TOKEN_EXPIRED,
    MEDIA_IMAGE_MAX_BYTES,
)
from bot.wxclient import WeChatAPIError, WeChatClient, WeChatUnavailable
from tests.conftest import requires_servers

REDIS_URL = os.environ.get("LINLI_REDIS_URL", "")
REPO_ROOT = Path(__file__).resolve().parent.parent
RUN_TIMEOUT = 120  # a hang guard for subprocesses, not a timing assertion

TOKEN_PATH = "/cgi-bin/stable_token"
CUSTOM = "/cgi-bin/message/custom/send"
TEMPLATE = "/cgi-bin/message/template/send"
SUBSCRIBE = "/cgi-bin/message/subscribe/send"
SECRET = "s3cret-oa"
MP_SECRET = "s3cret-mp"
ALICE = "o-alice"
BOB = "o-bob"
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4


def unique_appid(prefix: str = "wxtest") -> str:
    return f"{prefix}{uuid.uuid4().hex[:16]}"


def paths(fake: FakeWeChat, path: str) -> list[Any]:
    return [c for c in fake.calls if c.path == path]


@pytest.fixture
async def fake() -> AsyncIterator[FakeWeChat]:
    async with FakeWeChat(appid=unique_appid(), secret=SECRET) as server:
        yield server


@pytest.fixture
async def store() -> AsyncIterator[Redis]:
    s = open_store(RedisConfig(REDIS_URL))
    try:
        yield s
    finally:
        await s.aclose()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


@pytest.fixture
def mp_appid(fake: FakeWeChat) -> str:
    appid = unique_appid("wxmp")
    fake.add_app(appid, MP_SECRET)
    return appid


@pytest.fixture
def make_client(
    fake: FakeWeChat, session: aiohttp.ClientSession, store: Redis, mp_appid: str
) -> Callable[[], WeChatClient]:
    def make() -> WeChatClient:
        return WeChatClient(
            session, store, WechatConfig(appid=fake.appid, secret=SECRET, api_base_url=fake.url),
            MiniprogramConfig(appid=mp_appid, secret=MP_SECRET),
        )

    return make


@pytest.fixture
def wx(make_client: Callable[[], WeChatClient]) -> WeChatClient:
    return make_client()


async def cached_token(store: Redis, appid: str) -> str | None:
    value = await store.get(key("wx", "token", appid))
    return value.decode() if isinstance(value, bytes) else value


# -- the access token


async def test_the_token_is_fetched_once_and_cached_in_the_store(
    fake: FakeWeChat, wx: WeChatClient, store: Redis
) -> None:
    fake.interact(ALICE)
    await wx.send_text(ALICE, "您好")
    await wx.send_text(ALICE, "再见")

    assert fake.texts(ALICE) == ["您好", "再见"]
    assert fake.tokens_issued == 1
    assert len(paths(fake, TOKEN_PATH)) == 1
    assert paths(fake, TOKEN_PATH)[0].body == {
        "grant_type": "client_credential", "appid": fake.appid, "secret": SECRET, "force_refresh": False}
    assert [c.query["access_token"] for c in paths(fake, CUSTOM)] == [fake.token, fake.token]
    assert await cached_token(store, fake.appid) == fake.token
    ttl = await store.ttl(key("wx", "token", fake.appid))
    assert 60 <= ttl < 7200  # cached for less than the token lives


async def test_a_client_reads_the_shared_token_at_most_every_few_seconds(
    fake: FakeWeChat, wx: WeChatClient, store: Redis
) -> None:
    token = await wx.token()
    await store.delete(key("wx", "token", fake.appid))  # gone from the store: the memo still answers
    assert await wx.token() == token and fake.tokens_issued == 1
    assert await wx.token(stale=token) != token  # a refused token is never taken from the memo
    assert fake.tokens_issued == 2


async def test_a_second_client_on_the_same_store_reuses_the_token(
    fake: FakeWeChat, make_client: Callable[[], WeChatClient]
) -> None:
    first, second = make_client(), make_client()
    assert await first.token() == await second.token() == fake.token
    assert fake.tokens_issued == 1
    assert (first.token_refreshes, second.token_refreshes) == (1, 0)


@pytest.mark.parametrize("errcode", [ERR_INVALID_TOKEN, ERR_TOKEN_EXPIRED])
async def test_a_token_error_refreshes_once_and_the_call_succeeds(
    fake: FakeWeChat, wx: WeChatClient, store: Redis, errcode: int
) -> None:
    fake.interact(ALICE)
    await wx.send_text(ALICE, "first")
    old = fake.token
    fake.fail(CUSTOM, errcode)

    answer = await wx.send_text(ALICE, "second")

    assert answer["errcode"] == 0
    assert fake.texts(ALICE) == ["first", "second"]
    assert fake.tokens_issued == 2
    token_calls = paths(fake, TOKEN_PATH)
    assert [c.body["force_refresh"] for c in token_calls] == [False, True]
    sends = paths(fake, CUSTOM)
    assert [c.errcode for c in sends] == [0, errcode, 0]
    assert sends[1].query["access_token"] == old
    assert sends[2].query["access_token"] == fake.token != old
    assert await cached_token(store, fake.appid) == fake.token


async def test_expired_tokens_are_replaced_once(fake: FakeWeChat, wx: WeChatClient, store: Redis) -> None:
    fake.interact(ALICE)
    await wx.send_text(ALICE, "first")
    old = fake.token
    fake.expire_tokens()  # WeChat itself now answers 42001 for the cached token

    await wx.send_text(ALICE, "second")

    assert fake.texts(ALICE) == ["first", "second"]
    assert [c.errcode for c in paths(fake, CUSTOM)] == [0, ERR_TOKEN_EXPIRED, 0]
    assert [c.body["force_refresh"] for c in paths(fake, TOKEN_PATH)] == [False, True]
    assert fake.tokens_issued == 2
    assert await cached_token(store, fake.appid) == fake.token != old


async def test_a_second_token_error_in_a_row_surfaces(fake: FakeWeChat, wx: WeChatClient) -> None:
    fake.interact(ALICE)
    await wx.token()
    fake.fail(CUSTOM, ERR_INVALID_TOKEN, times=2)

    with pytest.raises(WeChatAPIError) as raised:
        await wx.send_text(ALICE, "never delivered")

    assert raised.value.errcode == ERR_INVALID_TOKEN
    assert fake.tokens_issued == 2  # the first fetch and exactly one refresh
    assert len(paths(fake, CUSTOM)) == 2  # no third attempt
    assert fake.texts(ALICE) == []


# -- WeChat's refusals and silence


@pytest.mark.parametrize(("errcode", "transient"), [
    (ERR_BUSY, True),
    (ERR_NOT_SUBSCRIBED, False),
    (ERR_API_QUOTA, True),
    (ERR_OUT_OF_TIME, False),
    (ERR_OUT_OF_COUNT, False),
])
async def test_an_injected_error_surfaces_with_its_code(
    fake: FakeWeChat, wx: WeChatClient, errcode: int, transient: bool
) -> None:
    fake.interact(ALICE)
    await wx.token()
    fake.fail(CUSTOM, errcode)

    with pytest.raises(WeChatAPIError) as raised:
        await wx.send_text(ALICE, "hello")

    assert raised.value.errcode == errcode
    assert raised.value.transient is transient
    assert "rid:" in raised.value.errmsg  # WeChat's errmsg is kept for the logs
    assert len(paths(fake, CUSTOM)) == 1  # not retried by the client
    assert fake.tokens_issued == 1  # not mistaken for a token problem
    assert fake.texts(ALICE) == []


async def test_the_customer_service_rules_surface_as_errors(fake: FakeWeChat, wx: WeChatClient) -> None:
    with pytest.raises(WeChatAPIError) as closed:
        await wx.send_text(ALICE, "no window yet")
    assert (closed.value.errcode, closed.value.transient) == (ERR_OUT_OF_TIME, False)

    fake.interact(ALICE)
    for n in range(CS_AFTER_MESSAGE.messages):
        await wx.send_text(ALICE, f"message {n}")
    with pytest.raises(WeChatAPIError) as used_up:
        await wx.send_text(ALICE, "one too many")
    assert (used_up.value.errcode, used_up.value.transient) == (ERR_OUT_OF_COUNT, False)

    fake.unfollow(BOB)
    fake.interact(BOB)
    with pytest.raises(WeChatAPIError) as unfollowed:
        await wx.send_text(BOB, "hello")
    assert (unfollowed.value.errcode, unfollowed.value.transient) == (ERR_NOT_SUBSCRIBED, False)
    assert len(fake.texts(ALICE)) == CS_AFTER_MESSAGE.messages
    assert fake.tokens_issued == 1


async def test_a_dropped_connection_is_unavailable(fake: FakeWeChat, wx: WeChatClient) -> None:
    fake.interact(ALICE)
    await wx.token()
    fake.drop_connection(CUSTOM)

    with pytest.raises(WeChatUnavailable):
        await wx.send_text(ALICE, "lost")

    assert fake.texts(ALICE) == []
    await wx.send_text(ALICE, "next")  # the client recovers on the next call
    assert fake.texts(ALICE) == ["next"]


async def test_a_dropped_token_request_is_unavailable(fake: FakeWeChat, wx: WeChatClient, store: Redis) -> None:
    fake.drop_connection(TOKEN_PATH)

    with pytest.raises(WeChatUnavailable):
        await wx.token()

    assert await cached_token(store, fake.appid) is None
    assert await wx.token() == fake.token


async def test_no_answer_in_time_is_unavailable(fake: FakeWeChat, wx: WeChatClient) -> None:
    wx.timeout = aiohttp.ClientTimeout(total=0.2)
    fake.interact(ALICE)
    await wx.token()
    fake.set_latency(CUSTOM, 1.0)

    with pytest.raises(WeChatUnavailable):
        await wx.send_text(ALICE, "slow")


# -- concurrent refreshes


async def test_concurrent_refreshes_in_one_process_issue_one_token(
    fake: FakeWeChat, make_client: Callable[[], WeChatClient]
) -> None:
    first, second = make_client(), make_client()
    old = await first.token()
    issued = fake.tokens_issued
    # A slow stable_token keeps the lock held while the other calls find the stale token and queue.
    fake.set_latency(TOKEN_PATH, 0.3)

    tokens = await asyncio.gather(*(client.token(stale=old) for client in (first, second) * 5))

    assert fake.tokens_issued == issued + 1
    assert set(tokens) == {fake.token}
    assert old not in tokens
    assert first.token_refreshes + second.token_refreshes == 2  # the first fetch and one refresh


WORKER = """
import asyncio, sys
import aiohttp
from bot.config import RedisConfig, WechatConfig
from bot.store import open_store
from bot.wxclient import WeChatClient

async def main(base_url, redis_url, appid, secret, stale, n):
    store = open_store(RedisConfig(redis_url))
    try:
        async with aiohttp.ClientSession() as session:
            client = WeChatClient(session, store, WechatConfig(appid=appid, secret=secret, api_base_url=base_url))
            print("ready", flush=True)
            await asyncio.to_thread(sys.stdin.readline)  # start together with the other worker
            tokens = await asyncio.gather(*(client.token(stale=stale) for _ in range(n)))
    finally:
        await store.aclose()
    for token in tokens:
        print("token", token)
    print("refreshes", client.token_refreshes, flush=True)

asyncio.run(main(*sys.argv[1:6], int(sys.argv[6])))
"""


@requires_servers
async def test_two_processes_share_one_refreshed_token(fake: FakeWeChat, wx: WeChatClient) -> None:
    old = await wx.token()
    issued = fake.tokens_issued
    fake.set_latency(TOKEN_PATH, 0.3)  # the refresh overlaps the other worker's calls
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH"))
                                                       if p)}
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable, "-c", WORKER, fake.url, REDIS_URL, fake.appid, SECRET, old, "5",
            cwd=REPO_ROOT, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for _ in range(2)
    ]
    try:
        for proc in procs:
            assert proc.stdout is not None
            ready = await asyncio.wait_for(proc.stdout.readline(), RUN_TIMEOUT)
            assert ready == b"ready\n", ready + (await proc.stderr.read() if proc.stderr else b"")
        results = await asyncio.wait_for(
            asyncio.gather(*(proc.communicate(b"go\n") for proc in procs)), RUN_TIMEOUT)
    finally:
        for proc in procs:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()

    got: list[set[str]] = []
    refreshes = 0
    for proc, (out, err) in zip(procs, results, strict=True):
        assert proc.returncode == 0, err.decode()
        lines = out.decode().splitlines()
        got.append({line.split(" ", 1)[1] for line in lines if line.startswith("token ")})
        refreshes += sum(int(line.split()[1]) for line in lines if line.startswith("refreshes "))
    assert got[0] == got[1] == {fake.token}
    assert fake.token != old
    assert fake.tokens_issued == issued + 1
    assert refreshes == 1
    # this process holds the old token for up to TOKEN_MEMO_SECONDS; once WeChat refuses it (the
    # caller passes it as stale) it takes the shared new one without another refresh
    assert await wx.token(stale=old) == fake.token
    assert fake.tokens_issued == issued + 1


# -- the other calls, through the fake


async def test_send_template(fake: FakeWeChat, wx: WeChatClient) -> None:
    fake.add_template("TPL-repair", "维修进度", "{{thing1.DATA}}")
    data = {"thing1": {"value": "已派单"}}

    answer = await wx.send_template(ALICE, "TPL-repair", data, url="https://example.com/case/1")

    assert answer["errcode"] == 0 and isinstance(answer["msgid"], int)
    [sent] = fake.sent("template", ALICE)
    assert sent.template_id == "TPL-repair"
    assert sent.body["data"] == data
    assert sent.body["url"] == "https://example.com/case/1"
    with pytest.raises(WeChatAPIError) as raised:
        await wx.send_template(ALICE, "TPL-unknown", data)
    assert raised.value.errcode == 40037 and not raised.value.transient


async def test_send_subscribe_needs_a_consent(fake: FakeWeChat, wx: WeChatClient) -> None:
    data = {"thing1": {"value": "明天取餐"}}
    fake.consent(ALICE, "SUB-canteen")

    answer = await wx.send_subscribe(ALICE, "SUB-canteen", data, page="pages/canteen/index")

    assert answer["errcode"] == 0
    [sent] = fake.sent("subscribe", ALICE)
    assert sent.body == {"touser": ALICE, "template_id": "SUB-canteen", "data": data,
                         "page": "pages/canteen/index"}
    with pytest.raises(WeChatAPIError) as raised:  # the consent was used up
        await wx.send_subscribe(ALICE, "SUB-canteen", data)
    assert raised.value.errcode == ERR_SUBSCRIBE_REFUSED and not raised.value.transient


async def test_media_upload_then_get_and_send_image(fake: FakeWeChat, wx: WeChatClient) -> None:
    media_id = await wx.media_upload(PNG, "photo.png")

    assert await wx.media_get(media_id) == PNG
    upload = paths(fake, "/cgi-bin/media/upload")[0]
    assert upload.query["type"] == "image"
    fake.interact(ALICE)
    await wx.send_image(ALICE, media_id)
    assert fake.sent("custom", ALICE)[0].body["image"] == {"media_id": media_id}
    with pytest.raises(WeChatAPIError) as raised:
        await wx.media_get("no-such-media")
    assert raised.value.errcode == ERR_INVALID_MEDIA_ID


async def test_media_upload_at_the_size_limit(wx: WeChatClient) -> None:
    data = b"\xff" * MEDIA_IMAGE_MAX_BYTES
    media_id = await wx.media_upload(data)
    assert await wx.media_get(media_id) == data


async def test_qrcode_permanent_and_temporary(fake: FakeWeChat, wx: WeChatClient) -> None:
    permanent = await wx.qrcode("building-1")
    temporary = await wx.qrcode("bind-42", expire_seconds=600)

    assert permanent["url"].startswith("http://weixin.qq.com/q/")
    assert "expire_seconds" not in permanent
    qr = fake.qrcodes[permanent["ticket"]]
    assert (qr.action_name, qr.scene, qr.expires_at) == ("QR_LIMIT_STR_SCENE", "building-1", None)

    assert temporary["expire_seconds"] == 600
    qr = fake.qrcodes[temporary["ticket"]]
    assert (qr.action_name, qr.scene) == ("QR_STR_SCENE", "bind-42")
    assert qr.expires_at is not None
    assert temporary["ticket"] != permanent["ticket"]


async def test_user_info(fake: FakeWeChat, wx: WeChatClient) -> None:
    fake.follow(ALICE, unionid="u-alice")
    fake.unfollow(BOB)

    alice = await wx.user_info(ALICE)
    bob = await wx.user_info(BOB)

    assert (alice["subscribe"], alice["openid"], alice["unionid"], alice["language"]) == (
        1, ALICE, "u-alice", "zh_CN")
    assert bob == {"subscribe": 0, "openid": BOB}


async def test_menu_create(fake: FakeWeChat, wx: WeChatClient) -> None:
    await wx.menu_create(DEFAULT_MENU)
    assert fake.menu == {"button": DEFAULT_MENU}

    with pytest.raises(WeChatAPIError) as raised:
        await wx.menu_create([{"type": "click", "name": "没有键"}])
    assert raised.value.errcode == 40019  # invalid button key size
    assert fake.menu == {"button": DEFAULT_MENU}  # the published menu is unchanged


async def test_private_templates(fake: FakeWeChat, wx: WeChatClient) -> None:
    assert await wx.private_templates() == []
    fake.add_template("TPL1", "办事进度通知", "{{thing1.DATA}}")

    [template] = await wx.private_templates()

    assert (template["template_id"], template["title"], template["content"]) == (
        "TPL1", "办事进度通知", "{{thing1.DATA}}")


async def test_code_to_session(fake: FakeWeChat, wx: WeChatClient, mp_appid: str) -> None:
    fake.add_login_code("login-1", "o-mp-alice", unionid="u-alice")

    answer = await wx.code_to_session("login-1")

    assert (answer["openid"], answer["unionid"]) == ("o-mp-alice", "u-alice")
    assert answer["session_key"]
    [call] = paths(fake, "/sns/jscode2session")
    assert (call.query["appid"], call.query["secret"]) == (mp_appid, MP_SECRET)
    assert fake.tokens_issued == 0  # jscode2session takes the secret, not a token
    with pytest.raises(WeChatAPIError) as raised:
        await wx.code_to_session("login-1")
    assert raised.value.errcode == ERR_CODE_USED


async def test_phone_number_uses_the_mini_program_token(fake: FakeWeChat, wx: WeChatClient, mp_appid: str) -> None:
    fake.add_phone_code("phone-1", "13812345678")

    assert await wx.phone_number("phone-1") == "13812345678"

    [token_call] = paths(fake, TOKEN_PATH)
    assert token_call.body["appid"] == mp_appid
    [call] = paths(fake, "/wxa/business/getuserphonenumber")
    assert call.query["access_token"] == await wx.token("mp")
    assert await wx.token("mp") != await wx.token("oa")


# -- the client's own guards


async def test_send_text_over_the_size_limit_is_refused_before_calling(fake: FakeWeChat, wx: WeChatClient) -> None:
    fake.interact(ALICE)
    too_long = "中" * (CUSTOM_TEXT_MAX_BYTES // 3 + 1)  # 3 bytes each in UTF-8
    assert len(too_long.encode()) > CUSTOM_TEXT_MAX_BYTES

    with pytest.raises(ValueError):
        await wx.send_text(ALICE, too_long)

    assert fake.calls == []
    at_limit = "a" * CUSTOM_TEXT_MAX_BYTES
    await wx.send_text(ALICE, at_limit)
    assert fake.texts(ALICE) == [at_limit]


async def test_media_upload_over_the_size_limit_is_refused_before_calling(fake: FakeWeChat, wx: WeChatClient) -> None:
    with pytest.raises(ValueError):
        await wx.media_upload(b"\xff" * (MEDIA_IMAGE_MAX_BYTES + 1))
    assert fake.calls == []
