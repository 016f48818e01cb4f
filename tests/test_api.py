"""/api/v1 as the mini-program uses it: login, one person across channels, profile, statuses,
family links, consent, deletion and staff grants."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from bot.app import SERVICES
from models.facts import ResidentFact, verified_statuses
from models.outbox import OutboxMessage
from models.privacy import AuditLog
from models.proxies import Action
from models.residents import Resident, WechatAccount
from models.roles import Role, StaffRole
from tests.api import MiniProgram
from tests.wechat import WeChatPusher

pytestmark = pytest.mark.usefixtures("demo")

CHAT_BINDING = ["绑定", "是", "刘小红", "13912340001", "1", "1", "1", "102", "是"]


async def chat_bind(wechat: WeChatPusher, openid: str) -> str:
    replies = [await wechat.say(openid, line) for line in CHAT_BINDING]
    assert "绑定成功" in replies[-1]
    return replies[-1]


async def until(predicate: Any, tries: int = 500) -> None:
    """Let background work (the follower lookup) finish; fails if it never does."""
    for _ in range(tries):
        if await predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("background work did not finish")


async def staff_session(client: Any, openid: str, mobile: str) -> MiniProgram:
    mp = MiniProgram(client, openid)
    await mp.login()
    assert (await mp.verify_phone(mobile)).body["bound"] is True
    return mp


async def test_bound_in_chat_then_the_same_profile_in_the_mini_program(client: Any, wechat: WeChatPusher) -> None:
    await chat_bind(wechat, "oa-liu")
    mp = MiniProgram(client, "mp-liu")
    assert (await mp.login())["bound"] is False  # a new openid, no unionid: not linked yet
    phone = await mp.verify_phone("13912340001")  # WeChat verifies the number: proof enough
    assert phone.status == 200 and phone.body == {"mobile": "139****0001", "bound": True}
    me = (await mp.call("GET", "/me")).body
    chat_record = await Resident.get(mobile="13912340001")
    assert me["resident"]["id"] == chat_record.id and me["resident"]["name"] == "刘小红"
    assert me["resident"]["building"] == "1号楼" and me["resident"]["room"] == "102"
    assert await Resident.filter(name="刘小红").count() == 1  # one person, one record
    assert {a.channel for a in await WechatAccount.filter(resident_id=chat_record.id)} == {"oa", "mp"}


async def test_unionid_links_the_follower_and_the_mini_program(client: Any, wechat: WeChatPusher) -> None:
    fake = client.app[SERVICES].fake
    fake.follow("oa-union", unionid="union-1")
    await chat_bind(wechat, "oa-union")

    async def learned() -> bool:
        return (await WechatAccount.get(openid="oa-union")).unionid == "union-1"

    await until(learned)
    mp = MiniProgram(client, "mp-union", unionid="union-1")
    assert (await mp.login())["bound"] is True
    me = (await mp.call("GET", "/me")).body
    assert me["resident"]["name"] == "刘小红"


async def test_bound_in_the_mini_program_then_following_links_the_account(client: Any, wechat: WeChatPusher) -> None:
    mp = MiniProgram(client, "mp-first", unionid="union-2")
    await mp.login()
    building = (await mp.call("GET", "/buildings")).body["items"][0]
    bound = await mp.call("POST", "/me/binding", {"consent": True, "name": "何大伟", "mobile": "13912340009",
                                                  "building_id": building["id"], "unit": "3", "room": "303"})
    assert bound.status == 201 and bound.body["status"] == "bound"
    client.app[SERVICES].fake.follow("oa-later", unionid="union-2")
    await wechat.say("oa-later", "你好")

    async def linked() -> bool:
        account = await WechatAccount.get_or_none(openid="oa-later")
        return account is not None and account.resident_id is not None

    await until(linked)
    assert "何大伟" in await wechat.say("oa-later", "我的信息")


async def test_login_never_returns_or_keeps_the_session_key(client: Any, caplog: pytest.LogCaptureFixture) -> None:
    mp = MiniProgram(client, "mp-key")
    body = await mp.login()
    assert set(body) == {"token", "expires_in", "bound"}
    store = client.app[SERVICES].store
    values = [await store.get(k) for k in await store.keys("linli:api:session:*")]
    assert values and all(b"session_key" not in v for v in values)
    assert body["token"].encode() not in b"".join(await store.keys("*"))  # only the token's hash is kept
    assert "session_key" not in caplog.text


async def test_logout_revokes_the_token_and_bad_tokens_get_401(client: Any) -> None:
    mp = MiniProgram(client, "mp-out")
    await mp.login()
    assert (await mp.call("GET", "/me")).status == 200
    assert (await mp.call("POST", "/auth/logout")).status == 204
    gone = await mp.call("GET", "/me")
    assert gone.status == 401 and gone.body["error"] == "unauthorized"
    mp.token = "forged"
    assert (await mp.call("GET", "/me")).status == 401


async def test_a_used_or_unknown_login_code_is_refused(client: Any) -> None:
    resp = await client.post("/api/v1/auth/login", json={"code": "never-issued"})
    assert resp.status == 401
    assert await WechatAccount.filter(channel="mp").count() == 0


async def test_validation_errors_name_the_field(client: Any) -> None:
    mp = MiniProgram(client, "mp-422")
    await mp.login()
    answer = await mp.call("POST", "/me/binding", {"consent": True, "name": "王", "mobile": 13912345678,
                                                   "building_id": 1, "unit": "1", "room": "1", "extra": 1})
    assert answer.status == 422
    fields = {f["field"] for f in answer.body["fields"]}
    assert {"body.name", "body.mobile", "body.extra"} <= fields
    assert await Resident.filter(name="王").count() == 0
    not_json = await client.post("/api/v1/auth/login", data=b"\xff\xfe", headers={"Content-Type": "application/json"})
    assert not_json.status == 422 and (await not_json.json())["fields"][0]["field"] == "body"
    assert (await mp.call("GET", "/residents/abc")).status == 422
    twice = await mp.call("GET", "/residents?q=a&q=b")  # a query parameter given twice is refused, not guessed
    assert twice.status == 422 and twice.body["fields"] == [{"field": "query.q", "message": "given more than once"}]
    nul = await mp.call("GET", "/residents?q=%00a")  # PostgreSQL cannot store a NUL: refused on every backend
    assert nul.status == 422 and nul.body["fields"][0]["field"] == "query.q"
    nul_body = await mp.call("POST", "/me/binding", {"consent": True, "name": "王\u0000", "mobile": "13912345678",
                                                      "building_id": 1, "unit": "1", "room": "1"})
    assert nul_body.status == 422 and nul_body.body["fields"][0]["field"] == "body"


async def test_writes_and_logins_are_rate_limited(aiohttp_client: Any, config: Any, clock: Any) -> None:
    from bot.app import create_app
    from models.demo import load_demo

    app = create_app(config.replace(api={"login_per_minute": 2, "writes_per_minute": 3}), clock=clock)
    client = await aiohttp_client(app)
    await load_demo(clock.now())
    statuses = [(await client.post("/api/v1/auth/login", json={"code": f"x{i}"})).status for i in range(3)]
    assert statuses == [401, 401, 429]
    limited = await client.post("/api/v1/auth/login", json={"code": "x"})
    assert limited.status == 429 and int(limited.headers["Retry-After"]) >= 1
    assert (await limited.json())["error"] == "rate_limited"
    client.app[SERVICES].fake.add_login_code("ok-code", "mp-rate", None)
    # a login is a write from the same address: this one is over the login limit too
    assert (await client.post("/api/v1/auth/login", json={"code": "ok-code"})).status == 429


async def test_session_write_limit(aiohttp_client: Any, config: Any, clock: Any) -> None:
    from bot.app import create_app
    from models.demo import load_demo

    app = create_app(config.replace(api={"writes_per_minute": 3}), clock=clock)
    client = await aiohttp_client(app)
    await load_demo(clock.now())
    mp = MiniProgram(client, "mp-writes")
    await mp.login()
    statuses = [(await mp.call("POST", "/me/consents", {"accept": True})).status for _ in range(4)]
    assert statuses == [201, 201, 201, 429]
    assert (await mp.call("GET", "/me")).status == 200  # reading is not limited


async def test_declared_status_counts_only_after_staff_verify_and_resident_is_told(client: Any) -> None:
    me = await staff_session(client, "mp-elder", "13904180011")  # 王秀兰
    elder = await Resident.get(mobile="13904180011")
    await WechatAccount.create(openid="oa-elder", channel="oa", resident=elder, created_at=elder.created_at)
    declared = await me.call("POST", f"/residents/{elder.id}/facts", {"code": "dibao"})
    assert declared.status == 201 and declared.body["state"] == "pending"
    birth = await me.call("POST", f"/residents/{elder.id}/facts", {"code": "birth_date", "value": "1930-05-01"})
    assert birth.body["value"] == "1930-05-01" and birth.body["state"] == "pending"
    assert await verified_statuses(elder.id) == set()
    staff = await staff_session(client, "mp-staff", "13904180003")  # 周社工, community staff
    refused = await staff.call("POST", f"/facts/{declared.body['id']}/decision", {"approve": False, "reason": ""})
    assert refused.status == 409  # a refusal needs a reason the resident can read
    ok = await staff.call("POST", f"/facts/{declared.body['id']}/decision", {"approve": True})
    assert ok.status == 200 and ok.body["state"] == "verified"
    assert await verified_statuses(elder.id) == {"dibao"}
    told = await OutboxMessage.filter(openid="oa-elder").values_list("payload", flat=True)
    assert any("低保" in p["content"] and "已由社区核实" in p["content"] for p in told)  # type: ignore[index]


async def test_sensitive_statuses_only_for_roles_that_need_them_and_every_look_is_audited(client: Any) -> None:
    elder = await Resident.get(mobile="13904180011")
    from models.facts import declare

    await declare(resident_id=elder.id, code="dibao", now=elder.created_at, by_id=None, verified=True)
    await declare(resident_id=elder.id, code="party_member", now=elder.created_at, by_id=None, verified=True)
    admin_person = await Resident.get(name="孙志愿")
    from models.roles import grant

    await grant(resident_id=admin_person.id, role=Role.ADMIN, scope_id=None, now=elder.created_at)
    admin = await staff_session(client, "mp-admin", "13904180004")
    staff = await staff_session(client, "mp-staff", "13904180003")
    seen_by_admin = (await admin.call("GET", f"/residents/{elder.id}", purpose="测试核对")).body
    seen_by_staff = (await staff.call("GET", f"/residents/{elder.id}")).body
    assert [f["code"] for f in seen_by_admin["facts"]] == ["party_member"] and seen_by_admin["sensitive_hidden"]
    assert {f["code"] for f in seen_by_staff["facts"]} == {"dibao", "party_member"}
    rows = await AuditLog.filter(subject_id=elder.id).order_by("id")
    assert [(r.actor_id, r.action) for r in rows] == [(admin_person.id, "view"),  # type: ignore[attr-defined]
                                                      ((await Resident.get(name="周社工")).id, "view_sensitive")]
    assert rows[0].purpose == "测试核对"
    assert rows[1].purpose.startswith("api GET /api/v1/residents/")


async def test_a_proxy_acts_for_the_elder_and_the_record_shows_who(client: Any) -> None:
    elder_mp = await staff_session(client, "mp-elder", "13904180011")
    son = MiniProgram(client, "mp-son")
    await son.login()
    building = (await son.call("GET", "/buildings")).body["items"][0]
    await son.call("POST", "/me/binding", {"consent": True, "name": "王建国", "mobile": "13912340077",
                                           "building_id": building["id"], "unit": "5", "room": "501"})
    elder = await Resident.get(mobile="13904180011")
    assert (await son.call("GET", f"/residents/{elder.id}")).status == 404  # not before the elder agrees
    asked = await son.call("POST", "/proxy-links", {"elder_name": "王秀兰", "elder_mobile": "13904180011",
                                                    "relation": "儿子"})
    assert asked.status == 202 and asked.body["status"] == "pending"
    wrong = await son.call("POST", "/proxy-links", {"elder_name": "王秀", "elder_mobile": "13904180011"})
    assert wrong.status == 409
    link_id = asked.body["id"]
    assert (await son.call("POST", f"/proxy-links/{link_id}/decision", {"approve": True})).status == 409
    agreed = await elder_mp.call("POST", f"/proxy-links/{link_id}/decision", {"approve": True})
    assert agreed.body["status"] == "active" and agreed.body["confirmed_how"] == "elder"
    fact = await son.call("POST", f"/residents/{elder.id}/facts", {"code": "lives_alone"})
    assert fact.status == 201 and fact.body["state"] == "pending"
    son_person = await Resident.get(mobile="13912340077")
    action = await Action.get(action="declare_fact", subject_id=elder.id)
    assert action.actor_id == son_person.id and action.proxy_link_id == link_id  # type: ignore[attr-defined]
    history = (await elder_mp.call("GET", f"/residents/{elder.id}/actions")).body["items"]
    assert history[0]["actor"]["name"] == "王建国" and history[0]["on_behalf"] is True
    ended = await elder_mp.call("DELETE", f"/proxy-links/{link_id}")
    assert ended.body["status"] == "ended"
    assert (await son.call("GET", f"/residents/{elder.id}")).status == 404  # stops at once


async def test_deletion_request_carried_out_by_staff(client: Any) -> None:
    me = MiniProgram(client, "mp-del")
    await me.login()
    building = (await me.call("GET", "/buildings")).body["items"][0]
    bound = await me.call("POST", "/me/binding", {"consent": True, "name": "赵删除", "mobile": "13912340088",
                                                  "building_id": building["id"], "unit": "1", "room": "808"})
    rid = bound.body["resident"]["id"]
    asked = await me.call("POST", f"/residents/{rid}/data-requests", {"kind": "deletion"})
    assert asked.status == 201 and asked.body["status"] == "open"
    again = await me.call("POST", f"/residents/{rid}/data-requests", {"kind": "deletion"})
    assert again.body["id"] == asked.body["id"]  # a double tap is one request
    staff = await staff_session(client, "mp-staff", "13904180003")
    listed = (await staff.call("GET", "/data-requests")).body["items"]
    assert [r["id"] for r in listed] == [asked.body["id"]]
    done = await staff.call("POST", f"/data-requests/{asked.body['id']}/erase", {"confirm": True})
    assert done.status == 200 and done.body["status"] == "done" and "姓名、手机号" in done.body["outcome"]
    record = await Resident.get(id=rid)
    assert record.mobile is None and record.name == "已注销居民" and record.erased_at is not None
    assert (await me.call("GET", "/me")).body["bound"] is False
    assert await AuditLog.filter(action="erase", subject_id=rid).count() == 1


async def test_staff_never_carry_out_their_own_deletion_or_verify_themselves(client: Any) -> None:
    staff = await staff_session(client, "mp-staff", "13904180003")
    me = (await staff.call("GET", "/me")).body["resident"]["id"]
    asked = await staff.call("POST", f"/residents/{me}/data-requests", {"kind": "deletion"})
    assert asked.status == 201
    assert [r["id"] for r in (await staff.call("GET", "/data-requests")).body["items"]] == [asked.body["id"]]
    done = await staff.call("POST", f"/data-requests/{asked.body['id']}/erase", {"confirm": True})
    assert done.status == 404  # a colleague carries it out
    assert (await staff.call("GET", "/me")).body["bound"] is True
    fact = await staff.call("POST", f"/residents/{me}/facts", {"code": "dibao"})
    decided = await staff.call("POST", f"/facts/{fact.body['id']}/decision", {"approve": True})
    assert decided.status == 404 and (await ResidentFact.get(id=fact.body["id"])).state == "pending"


async def test_staff_grant_within_scope_is_recorded(client: Any) -> None:
    staff = await staff_session(client, "mp-staff", "13904180003")
    person = await Resident.get(name="王秀兰")
    granted = await staff.call("POST", "/staff", {"resident_id": person.id, "role": "red_proxy",
                                                  "scope_id": (await StaffRole.get(role="grid_worker",
                                                                                   resident__name="李网格")).grid_id})
    assert granted.status == 201 and granted.body["granted_by"] == "周社工"
    beyond = await staff.call("POST", "/staff", {"resident_id": person.id, "role": "admin"})
    assert beyond.status == 404
    revoked = await staff.call("DELETE", f"/staff/{granted.body['id']}")
    assert revoked.body["revoked_at"] is not None
    assert await StaffRole.filter(id=granted.body["id"]).exists()  # kept, stamped


async def test_openapi_and_docs_are_served(client: Any) -> None:
    spec = await (await client.get("/api/v1/openapi.json")).json()
    assert spec["openapi"].startswith("3.1")
    assert "/api/v1/residents/{resident_id}" in spec["paths"]
    assert "BindIn" in spec["components"]["schemas"]
    docs = await client.get("/api/v1/docs")
    text = await docs.text()
    assert docs.status == 200 and "POST /api/v1/auth/login" in text and "<script" not in text
