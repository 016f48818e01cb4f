"""Schemathesis runs the served OpenAPI spec against the running app: whatever it sends, the app
answers without a 5xx, with a documented status, content type, headers and body schema, and
refuses input the spec says is invalid.

The app runs on a loopback port in a thread of its own (schemathesis calls it synchronously), on
whichever backends the run uses, with its built-in fake WeChat API for logins.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
import requests
import schemathesis
from aiohttp import web
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import AcceptedNegativeData, FailureGroup
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from bot.api import openapi
from bot.app import SERVICES, create_app
from bot.clock import FrozenClock
from bot.config import Config
from handlers import API_ROUTERS
from tests.conftest import _wipe

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_headers_conformance,
          response_schema_conformance, negative_data_rejection]
# Endpoints that end the caller's session or binding get a throwaway login, so the rest of the
# run keeps its caller.
THROWAWAY = {("POST", "/api/v1/auth/logout"), ("DELETE", "/api/v1/me/binding")}
_codes = itertools.count(1)


class Server:
    """The app on a loopback port, served by an event loop in a background thread."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="api-under-test", daemon=True)
        self.runner: web.AppRunner | None = None
        self.url = ""

    def run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=120)

    def start(self) -> None:
        self.thread.start()
        self.run(self._start())

    async def _start(self) -> None:
        clock = FrozenClock(datetime(2026, 11, 27, 1, 0, tzinfo=UTC))
        self.app = create_app(self.config, clock=clock)
        self.runner = web.AppRunner(self.app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"
        from models.demo import load_demo

        await load_demo(datetime(2026, 11, 1, tzinfo=UTC))

    def stop(self) -> None:
        if self.runner is not None:
            self.run(self.runner.cleanup())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=30)
        self.loop.close()

    def login(self, openid: str, mobile: str | None = None) -> str:
        """A session for ``openid``; with ``mobile``, bound through the number WeChat verifies."""
        fake = self.app[SERVICES].fake
        code = f"fuzz-login-{next(_codes)}"
        fake.add_login_code(code, openid, None)
        resp = requests.post(self.url + "/api/v1/auth/login", json={"code": code}, timeout=30)
        resp.raise_for_status()
        token: str = resp.json()["token"]
        if mobile:
            code = f"fuzz-phone-{next(_codes)}"
            fake.add_phone_code(code, mobile)
            resp = requests.post(self.url + "/api/v1/auth/phone", json={"code": code, "consent": True},
                                 headers={"Authorization": f"Bearer {token}"}, timeout=30)
            resp.raise_for_status()
            assert resp.json()["bound"]
        return token


@pytest.fixture(scope="module")
def server(base_config: Config, _schema: None) -> Iterator[Server]:
    asyncio.run(_wipe(base_config))
    # the fuzzer sends far more than a person would: the limits are raised, as benchmarks do
    config = base_config.replace(api={"login_per_minute": 1_000_000, "writes_per_minute": 1_000_000,
                                      "writes_per_minute_ip": 1_000_000})
    srv = Server(config)
    srv.start()
    yield srv
    srv.stop()


# The spec the app serves is built from the declared routes when the app is built; it is built
# the same way here, at collection time, and checked against the served one below. (Schemathesis'
# lazy fixture loader does not work with pytest 9.)
SPEC = openapi([route for router in API_ROUTERS for route in router.routes])
schema = schemathesis.openapi.from_dict(SPEC)


def test_the_served_spec_is_the_one_fuzzed(server: Server) -> None:
    assert requests.get(server.url + "/api/v1/openapi.json", timeout=30).json() == json.loads(json.dumps(SPEC))


def _declared_query(method: str, path: str) -> set[str]:
    operation = SPEC["paths"][path][method.lower()]
    return {p["name"] for p in operation.get("parameters", []) if p["in"] == "query"}


def _invalid_parts(message: str) -> list[str]:
    """The invalid components a negative-data failure lists ("query: violates `enum`"...)."""
    return [line.strip()[2:] for line in message.splitlines() if line.strip().startswith("- ")]


def _call_and_validate(case: Any, server: Server, headers: dict[str, str] | None = None) -> None:
    """Schemathesis' call_and_validate, minus one false alarm: a negative GET whose invalid part never
    left the client (an extra query parameter with an empty list for a value is not sent, and the test
    adds the Authorization header a negative case leaves out) is a valid request, and its 200 is right."""
    response = case.call(base_url=server.url, headers=headers)
    try:
        case.validate_response(response, checks=CHECKS, headers=headers)
    except FailureGroup as group:
        sent = parse_qsl(urlsplit(response.request.url or "").query, keep_blank_values=True)
        keys = [key for key, _ in sent]
        valid_get = (case.method.upper() == "GET" and len(keys) == len(set(keys))
                     and set(keys) <= _declared_query(case.method, case.path))
        harmless = ("query: violates `additionalProperties`", "header: violates `required`")
        unsent = all(isinstance(e, AcceptedNegativeData) and _invalid_parts(e.message)
                     and all(part.startswith(harmless) for part in _invalid_parts(e.message))
                     for e in group.exceptions)
        if not (valid_get and unsent):
            raise


def _headers(server: Server, case: Any, token: str) -> dict[str, str]:
    if (case.method.upper(), case.path) in THROWAWAY:
        token = server.login(f"fuzz-throwaway-{next(_codes)}")
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture(scope="module")
def staff_token(server: Server) -> str:
    return server.login("fuzz-staff", mobile="13904180003")  # 周社工, community staff of 米家社区


@pytest.fixture(scope="module")
def resident_token(server: Server) -> str:
    return server.login("fuzz-resident", mobile="13904180011")  # 王秀兰, an elder


@schema.parametrize()
@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
def test_api_as_staff(case: Any, server: Server, staff_token: str) -> None:
    _call_and_validate(case, server, _headers(server, case, staff_token))


@schema.parametrize()
@settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
def test_api_as_resident(case: Any, server: Server, resident_token: str) -> None:
    _call_and_validate(case, server, _headers(server, case, resident_token))


@schema.parametrize()
@settings(max_examples=10, deadline=None, suppress_health_check=list(HealthCheck))
def test_api_without_login(case: Any, server: Server) -> None:
    _call_and_validate(case, server)
