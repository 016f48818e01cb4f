"""The identity issue's acceptance, end to end through both front doors (chat and /api/v1)."""

from __future__ import annotations

from typing import Any

import pytest

from models.facts import FactState, ResidentFact
from models.proxies import Action
from models.residents import Resident
from tests.api import MiniProgram
from tests.test_family import ELDER, SON, SON_BINDS, ask_to_act_for, elder_on_wechat, run
from tests.wechat import WeChatPusher

pytestmark = pytest.mark.usefixtures("demo")


async def test_bound_in_chat_same_profile_after_mini_program_login(client: Any, wechat: WeChatPusher) -> None:
    await run(wechat, SON, SON_BINDS)
    in_chat = await wechat.say(SON, "我的信息")
    mp = MiniProgram(client, "mp-son")
    await mp.login()
    await mp.verify_phone("13812345678")
    me = (await mp.call("GET", "/me")).body["resident"]
    for shown in (me["name"], me["mobile"], me["building"], f"{me['unit']}单元{me['room']}室"):
        assert shown in in_chat  # the same record, as chat shows it


async def test_a_proxy_acts_for_the_elder_in_both_channels_and_the_record_shows_who(
    client: Any, wechat: WeChatPusher
) -> None:
    await run(wechat, SON, SON_BINDS)
    await elder_on_wechat(wechat)
    await ask_to_act_for(wechat, SON, "王秀兰", "13904180011")
    assert "李建国" in await wechat.say(ELDER, "你好")
    assert "已同意" in await wechat.say(ELDER, "是")

    # chat: the son acts for his mother and declares that she lives alone
    await wechat.say(SON, "亲情代理")
    assert "王秀兰" in await wechat.say(SON, "为家人办理")
    profile = await wechat.say(SON, "我的信息")
    assert "王秀兰" in profile
    await wechat.say(SON, "申报身份状况")
    assert "待核实" in await wechat.say(SON, "独居")

    # mini-program: the same son declares her date of birth through the API
    mp = MiniProgram(client, "mp-son")
    await mp.login()
    await mp.verify_phone("13812345678")
    elder = await Resident.get(mobile="13904180011")
    assert [e["id"] for e in (await mp.call("GET", "/me")).body["acts_for"]] == [elder.id]
    declared = await mp.call("POST", f"/residents/{elder.id}/facts", {"code": "birth_date", "value": "1938-04-02"})
    assert declared.status == 201

    son = await Resident.get(mobile="13812345678")
    pending = await ResidentFact.filter(resident_id=elder.id, state=FactState.PENDING).order_by("id")
    assert [(f.code, f.declared_by_id, f.source) for f in pending] == [  # type: ignore[attr-defined]
        ("lives_alone", son.id, "proxy"), ("birth_date", son.id, "proxy")]
    actions = await Action.filter(subject_id=elder.id, action="declare_fact").order_by("id")
    assert [(a.actor_id, a.channel, a.proxy_link_id is not None) for a in actions] == [  # type: ignore[attr-defined]
        (son.id, "oa", True), (son.id, "api", True)]
    # and the elder sees who did it, in the mini-program's record of actions
    elder_mp = MiniProgram(client, "mp-elder")
    await elder_mp.login()
    await elder_mp.verify_phone("13904180011")
    history = (await elder_mp.call("GET", f"/residents/{elder.id}/actions")).body["items"]
    declared_by = [(h["actor"]["name"], h["channel"], h["on_behalf"]) for h in history if h["action"] == "declare_fact"]
    assert declared_by == [("李建国", "api", True), ("李建国", "oa", True)]
