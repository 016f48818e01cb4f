"""Plays the mini-program against /api/v1: logs in through the fake WeChat's wx.login codes."""

from __future__ import annotations

import itertools
from typing import Any

from bot.app import SERVICES

_codes = itertools.count(1)


class MiniProgram:
    """One phone running the mini-program: its openid, its session token."""

    def __init__(self, client: Any, openid: str, unionid: str | None = None) -> None:
        self.client = client
        self.openid = openid
        self.unionid = unionid
        self.token = ""

    @property
    def fake(self) -> Any:
        return self.client.app[SERVICES].fake

    async def login(self) -> dict[str, Any]:
        code = f"login-code-{next(_codes)}"
        self.fake.add_login_code(code, self.openid, self.unionid)
        resp = await self.client.post("/api/v1/auth/login", json={"code": code})
        assert resp.status == 200, await resp.text()
        body: dict[str, Any] = await resp.json()
        self.token = body["token"]
        return body

    async def verify_phone(self, mobile: str) -> Any:
        code = f"phone-code-{next(_codes)}"
        self.fake.add_phone_code(code, mobile)
        return await self.call("POST", "/auth/phone", {"code": code, "consent": True})

    async def call(self, method: str, path: str, json: Any = None, **params: Any) -> Any:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        resp = await self.client.request(method, "/api/v1" + path, json=json, headers=headers,
                                         params={k: str(v) for k, v in params.items()})
        body = await resp.json() if resp.content_type == "application/json" else None
        return Answer(resp.status, body)


class Answer:
    def __init__(self, status: int, body: Any) -> None:
        self.status = status
        self.body = body

    def __repr__(self) -> str:
        return f"Answer({self.status}, {self.body!r})"
