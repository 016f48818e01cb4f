"""`linli wechat menu` and `linli wechat check` as real subprocesses against the fake WeChat API.

The fake runs in the test's event loop, so the command is started with
asyncio.create_subprocess_exec and the fake keeps answering while it runs.

WeChat only pushes to https on port 443 (or http on 80), so `check`'s callback test cannot pass
end to end here; the command is run for its refusals (empty URL, wrong port or scheme, a host
that does not resolve), and check_callback's success path is tested directly below, over TLS
against the real gateway, with a resolver that sends the 443 request to a loopback port.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import socket
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from bot.clock import Clock
from bot.config import DEFAULT_MENU, Config
from bot.gateway import Gateway
from bot.store import open_store
from bot.testing import FakeWeChat
from bot.wechat_setup import check_callback
from tests.wechat import AES_KEY

SCRIPT = Path(sys.executable).with_name("linli")
LINLI = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "bot.cli"]
RUN_TIMEOUT = 120  # a hang guard, not a timing assertion

APPID = "wx-setup-test"
SECRET = "setup-secret"
TOKEN = "setup-token"
STABLE_TOKEN = "/cgi-bin/stable_token"
MENU_CREATE = "/cgi-bin/menu/create"
EMPTY_URL = "[FAIL] callback URL: server.public_url is empty: set it to the URL WeChat pushes to"


@dataclass
class Run:
    returncode: int
    stdout: str
    stderr: str

    @property
    def lines(self) -> list[str]:
        return self.stdout.splitlines()


async def linli(*args: str, env: dict[str, str], cwd: Path) -> Run:
    proc = await asyncio.create_subprocess_exec(
        *LINLI, *args, cwd=cwd, env=env,
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), RUN_TIMEOUT)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode is not None
    return Run(proc.returncode, out.decode("utf-8"), err.decode("utf-8"))


@pytest.fixture
async def fake() -> AsyncIterator[FakeWeChat]:
    async with FakeWeChat(appid=APPID, secret=SECRET) as server:
        yield server


@pytest.fixture
def env(cli_env: dict[str, str], fake: FakeWeChat) -> dict[str, str]:
    """A complete account on the fake; no public URL; SQLite in tmp_path and the embedded store."""
    return {
        **cli_env,
        "LINLI_WECHAT_APPID": APPID,
        "LINLI_WECHAT_SECRET": SECRET,
        "LINLI_WECHAT_TOKEN": TOKEN,
        "LINLI_WECHAT_ENCODING_AES_KEY": AES_KEY,
        "LINLI_WECHAT_API_BASE_URL": fake.url,
    }


def line(run: Run, prefix: str) -> str:
    found = [x for x in run.lines if x.startswith(prefix)]
    assert len(found) == 1, f"no single line {prefix!r} in:\n{run.stdout}\n{run.stderr}"
    return found[0]


# -- linli wechat menu


async def test_menu_publishes_the_default_menu(fake: FakeWeChat, env: dict[str, str], tmp_path: Path) -> None:
    run = await linli("wechat", "menu", env=env, cwd=tmp_path)

    assert run.returncode == 0, run.stderr
    lines = run.stdout.strip().splitlines()
    assert lines[0] == "published the menu: 3 buttons"
    # the staff flows' menu keys make role menus too (tests/test_role_menus.py covers them)
    assert lines[1].startswith("published 8 role menus: 先锋骑士 (tag ")
    assert fake.menu == {"button": DEFAULT_MENU}
    assert len([c for c in fake.calls if c.path == MENU_CREATE]) == 1


async def test_an_invalid_menu_exits_2_without_calling_wechat(
    fake: FakeWeChat, env: dict[str, str], tmp_path: Path
) -> None:
    env["LINLI_WECHAT_MENU"] = '[{"name":"x","type":"click"}]'

    run = await linli("wechat", "menu", env=env, cwd=tmp_path)

    assert run.returncode == 2
    assert "linli: wechat.menu is not valid: “x” (click) needs a key" in run.stderr
    assert "Traceback" not in run.stderr
    assert [c for c in fake.calls if c.path == MENU_CREATE] == []
    assert fake.menu is None


async def test_a_menu_wechat_refuses_exits_1_with_its_error(
    fake: FakeWeChat, env: dict[str, str], tmp_path: Path
) -> None:
    # A menu that passes our checks can still be refused by WeChat (e.g. a rule it adds later).
    fake.fail("/cgi-bin/menu/create", 40018)

    run = await linli("wechat", "menu", env=env, cwd=tmp_path)

    assert run.returncode == 1
    assert "linli: publishing the menu failed: WeChat error 40018" in run.stderr
    assert fake.menu is None


@pytest.mark.parametrize("command", ["menu", "check"])
@pytest.mark.parametrize("missing", ["LINLI_WECHAT_APPID", "LINLI_WECHAT_SECRET"])
async def test_without_credentials_exits_2(
    fake: FakeWeChat, env: dict[str, str], tmp_path: Path, command: str, missing: str
) -> None:
    del env[missing]
    if missing == "LINLI_WECHAT_APPID":
        del env["LINLI_WECHAT_ENCODING_AES_KEY"]  # config refuses an AES key without an AppID

    run = await linli("wechat", command, env=env, cwd=tmp_path)

    assert run.returncode == 2
    assert "linli: wechat.appid and wechat.secret are needed to talk to WeChat" in run.stderr
    assert "Traceback" not in run.stderr
    assert fake.calls == []


# -- linli wechat check


async def test_check_everything_but_the_public_url(fake: FakeWeChat, env: dict[str, str], tmp_path: Path) -> None:
    run = await linli("wechat", "check", env=env, cwd=tmp_path)

    assert run.returncode == 1, run.stderr
    assert run.lines == [
        "[ok] appid: set",
        "[ok] secret: set",
        "[ok] token: set",
        "[ok] EncodingAESKey: set (compatible and safe mode work)",
        "[ok] menu: valid",
        "[ok] access token: fetched with stable_token",
        "[ok] template IDs: none configured (wechat.templates)",
        EMPTY_URL,
        "7 passed, 1 failed",
    ]
    assert fake.tokens_issued == 1


@pytest.mark.parametrize(("url", "explanation"), [
    ("http://127.0.0.1:8080/wechat", "WeChat only calls https on port 443 or http on port 80"),
    ("https://example.com:8443/wechat", "WeChat only calls https on port 443 or http on port 80"),
    ("http://example.com/wechat", "use https (TLS) so that messages are not readable in transit"),
])
async def test_check_explains_a_public_url_wechat_cannot_use(
    fake: FakeWeChat, env: dict[str, str], tmp_path: Path, url: str, explanation: str
) -> None:
    env["LINLI_SERVER_PUBLIC_URL"] = url

    run = await linli("wechat", "check", env=env, cwd=tmp_path)

    assert run.returncode == 1
    assert line(run, "[FAIL] callback URL") == f"[FAIL] callback URL: {url}: {explanation}"
    assert "[ok] access token: fetched with stable_token" in run.lines


async def test_check_reports_a_public_url_that_does_not_resolve(
    fake: FakeWeChat, env: dict[str, str], tmp_path: Path
) -> None:
    url = "https://linli-check.invalid/wechat"  # .invalid never resolves (RFC 6761)
    env["LINLI_SERVER_PUBLIC_URL"] = url

    run = await linli("wechat", "check", env=env, cwd=tmp_path)

    assert run.returncode == 1
    assert line(run, "[FAIL] callback URL").startswith(f"[FAIL] callback URL: {url} is not reachable from here (")


async def test_check_explains_the_ip_whitelist(fake: FakeWeChat, env: dict[str, str], tmp_path: Path) -> None:
    fake.fail(STABLE_TOKEN, 40164)

    run = await linli("wechat", "check", env=env, cwd=tmp_path)

    assert run.returncode == 1
    token = line(run, "[FAIL] access token")
    assert token.startswith("[FAIL] access token: 40164: This server's IP address is not whitelisted")
    assert "IP白名单" in token
    assert "not in whitelist" in token  # WeChat's own message (it names the refused IP) is kept
    assert not any(x.startswith("[ok] access token") or "template IDs" in x for x in run.lines)
    assert run.lines[-1] == "5 passed, 2 failed"  # the token and the empty public URL
    assert fake.tokens_issued == 0


async def test_check_explains_a_wrong_secret(fake: FakeWeChat, env: dict[str, str], tmp_path: Path) -> None:
    env["LINLI_WECHAT_SECRET"] = "an-old-secret"

    run = await linli("wechat", "check", env=env, cwd=tmp_path)

    assert run.returncode == 1
    assert line(run, "[FAIL] access token").startswith(
        "[FAIL] access token: 40125: The AppSecret is wrong or was reset")


async def test_check_reports_an_unreachable_api(env: dict[str, str], tmp_path: Path) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        base = f"http://127.0.0.1:{sock.getsockname()[1]}"
        env["LINLI_WECHAT_API_BASE_URL"] = base

        run = await linli("wechat", "check", env=env, cwd=tmp_path)

    assert run.returncode == 1
    assert line(run, "[FAIL] access token").startswith(f"[FAIL] access token: cannot reach {base} (")


async def test_check_finds_the_configured_templates(fake: FakeWeChat, env: dict[str, str], tmp_path: Path) -> None:
    fake.add_template("TPL1", "办事进度通知")
    env["LINLI_WECHAT_TEMPLATES"] = '{"case_update":"TPL1"}'

    run = await linli("wechat", "check", env=env, cwd=tmp_path)

    assert "[ok] template IDs: all present" in run.lines
    assert run.lines[-2:] == [EMPTY_URL, "7 passed, 1 failed"]


async def test_check_names_a_missing_template(fake: FakeWeChat, env: dict[str, str], tmp_path: Path) -> None:
    fake.add_template("TPL-other")
    env["LINLI_WECHAT_TEMPLATES"] = '{"case_update":"TPL1","notice":"TPL-other"}'

    run = await linli("wechat", "check", env=env, cwd=tmp_path)

    assert run.returncode == 1
    assert "[FAIL] template IDs: not in the account: case_update" in run.lines
    assert run.lines[-1] == "6 passed, 2 failed"


async def test_check_reports_an_invalid_menu(fake: FakeWeChat, env: dict[str, str], tmp_path: Path) -> None:
    env["LINLI_WECHAT_MENU"] = '[{"name":"x","type":"click"}]'

    run = await linli("wechat", "check", env=env, cwd=tmp_path)

    assert run.returncode == 1
    assert "[FAIL] menu: “x” (click) needs a key" in run.lines
    assert fake.menu is None  # check never publishes


# -- known gaps in the menu validation (bot.wechat_setup.menu_problems); strict, so a fix shows up


async def test_check_flags_a_menu_name_wechat_refuses(fake: FakeWeChat, env: dict[str, str], tmp_path: Path) -> None:
    env["LINLI_WECHAT_MENU"] = json.dumps([{"type": "click", "name": "社区服务中心一", "key": "HUB"}])  # 18 bytes

    run = await linli("wechat", "check", env=env, cwd=tmp_path)

    assert line(run, "[FAIL] menu").startswith("[FAIL] menu: ")


async def test_a_menu_entry_that_is_not_a_table_exits_2(fake: FakeWeChat, env: dict[str, str], tmp_path: Path) -> None:
    env["LINLI_WECHAT_MENU"] = '["x"]'

    run = await linli("wechat", "menu", env=env, cwd=tmp_path)

    assert "Traceback" not in run.stderr
    assert run.returncode == 2
    assert "wechat.menu" in run.stderr


async def test_a_photo_button_is_published(fake: FakeWeChat, env: dict[str, str], tmp_path: Path) -> None:
    menu = [{"type": "pic_photo_or_album", "name": "拍照上报", "key": "PHOTO"}]
    env["LINLI_WECHAT_MENU"] = json.dumps(menu)

    run = await linli("wechat", "menu", env=env, cwd=tmp_path)

    assert run.returncode == 0, run.stderr
    assert fake.menu == {"button": menu}


# -- check_callback's success path, over TLS against the real gateway


def _certificate(tmp_path: Path, host: str) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(host)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


class _Loopback(AbstractResolver):
    """Resolves every host to 127.0.0.1 and sends port 443 to the test server's port."""

    def __init__(self, port: int) -> None:
        self.port = port

    async def resolve(self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
                      ) -> list[ResolveResult]:
        return [{"hostname": host, "host": "127.0.0.1", "port": self.port, "family": socket.AF_INET,
                 "proto": 0, "flags": socket.AI_NUMERICHOST}]

    async def close(self) -> None:
        pass


HOST = "linli.test"
PUBLIC_URL = f"https://{HOST}/wechat"


@pytest.fixture
async def tls_gateway(tmp_path: Path) -> AsyncIterator[dict[str, Any]]:
    """The service's GET /wechat (the gateway that WeChat verifies) over TLS on a loopback port."""
    cert, key = _certificate(tmp_path, HOST)
    server_ssl = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ssl.load_cert_chain(cert, key)
    store = open_store(Config().redis)
    gateway = Gateway(Config().replace(wechat={"token": TOKEN}).wechat, None, store, Clock())  # type: ignore[arg-type]
    app = web.Application()
    app.router.add_get("/wechat", gateway.verify)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_ssl).start()
    try:
        yield {"port": runner.addresses[0][1], "cafile": cert}
    finally:
        await runner.cleanup()
        await store.aclose()


def _session(tls_gateway: dict[str, Any], *, trust: bool = True) -> aiohttp.ClientSession:
    client_ssl = ssl.create_default_context(cafile=str(tls_gateway["cafile"])) if trust else True
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(resolver=_Loopback(tls_gateway["port"]),
                                                                ssl=client_ssl))


def _config(token: str = TOKEN) -> Config:
    return Config().replace(server={"public_url": PUBLIC_URL}, wechat={"token": token})


async def test_check_callback_passes_against_the_gateway(tls_gateway: dict[str, Any]) -> None:
    async with _session(tls_gateway) as session:
        check = await check_callback(session, _config())
    assert check.line() == f"[ok] callback URL: {PUBLIC_URL} answers WeChat's signed check"


async def test_check_callback_fails_with_another_token(tls_gateway: dict[str, Any]) -> None:
    async with _session(tls_gateway) as session:
        check = await check_callback(session, _config(token="not-the-gateway-token"))
    assert check.line() == (f"[FAIL] callback URL: {PUBLIC_URL} answered 403 without the echo: is it this service, "
                            "with the same wechat.token?")


async def test_check_callback_fails_on_an_untrusted_certificate(tls_gateway: dict[str, Any]) -> None:
    async with _session(tls_gateway, trust=False) as session:
        check = await check_callback(session, _config())
    assert not check.ok
    assert check.detail.startswith(f"{PUBLIC_URL}: its TLS certificate is not trusted")


async def test_check_callback_fails_when_nothing_listens(tls_gateway: dict[str, Any]) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        closed = {**tls_gateway, "port": sock.getsockname()[1]}
        async with _session(closed) as session:
            check = await check_callback(session, _config())
    assert check.line().startswith(f"[FAIL] callback URL: {PUBLIC_URL} is not reachable from here (")
