"""我的信息 through /wechat: what we hold, declarations pending until staff verify, mobility,
deletion requests, and a family proxy acting for an elder."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from bot.app import ENGINE
from bot.engine import REPLY_MAX_CHARS
from models.facts import FactState, ResidentFact, verified_age, verified_statuses
from models.outbox import OutboxMessage
from models.privacy import DataRequest, RequestStatus
from models.proxies import Action, decide_link, request_link
from models.residents import Mobility, Resident
from tests.test_binding import NEW_RESIDENT, run
from tests.wechat import WeChatPusher

pytestmark = pytest.mark.usefixtures("demo")

ME = "o-me"
MY_MOBILE = "13812345678"


async def pushed(openid: str) -> list[str]:
    """The texts written for ``openid`` to the outbox (what WeChat will push to them)."""
    rows = await OutboxMessage.filter(openid=openid, kind="text").order_by("id")
    return [row.payload["content"] for row in rows]


@pytest.fixture
async def me(wechat: WeChatPusher) -> Resident:
    """A newly bound resident of 米家社区2号楼 (第一网格)."""
    await run(wechat, ME, [*NEW_RESIDENT, "是"])
    return await Resident.get(mobile=MY_MOBILE)


async def test_profile_shows_what_we_hold_and_what_can_be_done(wechat: WeChatPusher, me: Resident) -> None:
    reply = await wechat.say(ME, "我的信息")
    for line in ["姓名：王小明（待社区核实）", "手机：138****5678", "住址：米家社区2号楼3单元501室",
                 "出生日期：未填写", "身份状况：未申报", "行动能力：未填写", "健康备注：无",
                 "绑定的微信：公众号", "隐私同意：2026-11-v1版，2026年11月27日"]:
        assert line in reply
    assert MY_MOBILE not in reply
    for option in ["1. 申报出生日期", "2. 申报身份状况", "3. 更新行动能力", "4. 申请删除我的信息"]:
        assert option in reply
    assert "删除申请：" not in reply and "代办人" not in reply
    assert len(reply) <= REPLY_MAX_CHARS


async def test_declared_status_counts_only_once_staff_verify_it(wechat: WeChatPusher, me: Resident) -> None:
    await wechat.say(ME, "我的信息")
    assert "1. 低保" in await wechat.say(ME, "2")
    declared = await wechat.say(ME, "1")
    assert "已申报“低保”，待核实" in declared and "核实后才会用于" in declared
    assert await verified_statuses(me.id) == set()  # a declaration alone counts nowhere
    assert "低保：待核实" in await wechat.say(ME, "我的信息")
    await wechat.say(ME, "取消")

    card = await wechat.say("demo-staff", "待核实")
    assert "王小明" in card and "申报：低保" in card and "申报人：本人" in card
    assert "已核实通过" in await wechat.say("demo-staff", "1")
    assert await verified_statuses(me.id) == {"dibao"}
    assert "您申报的“低保”已由社区核实。" in await pushed(ME)
    assert "低保：已核实" in await wechat.say(ME, "我的信息")
    await wechat.say(ME, "取消")
    # the same declaration again changes nothing
    await wechat.say(ME, "我的信息")
    await wechat.say(ME, "2")
    assert "已经核实，无需重复申报" in await wechat.say(ME, "1")
    assert await ResidentFact.filter(resident_id=me.id, code="dibao").count() == 1
    action = await Action.get(subject_id=me.id, action="declare_fact")
    assert action.actor_id == me.id and action.proxy_link_id is None


async def test_rejection_reason_reaches_the_resident(wechat: WeChatPusher, me: Resident) -> None:
    await run(wechat, ME, ["我的信息", "1"])
    assert "已申报出生日期 1950-03-08，待核实" in await wechat.say(ME, "1950年3月8日")
    assert "出生日期：1950-03-08，待核实" in await wechat.say(ME, "我的信息")
    await wechat.say(ME, "取消")

    assert "申报：出生日期 1950-03-08" in await wechat.say("demo-staff", "待核实")
    assert "原因" in await wechat.say("demo-staff", "2")
    assert "已将原因告知居民" in await wechat.say("demo-staff", "请带户口本到社区核对")
    assert await verified_age(me.id, datetime(2026, 11, 27, tzinfo=UTC).date()) is None
    notice = (await pushed(ME))[-1]
    assert "“出生日期”未通过社区核实" in notice and "请带户口本到社区核对" in notice
    assert "出生日期：1950-03-08，未通过（请带户口本到社区核对）" in await wechat.say(ME, "我的信息")


@pytest.mark.parametrize("typed", ["1950-13-40", "明年", "2099-01-01"])
async def test_an_impossible_birth_date_is_asked_again_and_nothing_is_stored(
    wechat: WeChatPusher, me: Resident, typed: str
) -> None:
    await run(wechat, ME, ["我的信息", "1"])
    reply = await wechat.say(ME, typed)
    assert "出生日期" in reply and "1950-03-08" in reply  # says what a valid one looks like
    assert not await ResidentFact.filter(resident_id=me.id).exists()
    assert not await Action.filter(subject_id=me.id, action="declare_fact").exists()


async def test_mobility_is_updated_and_recorded(wechat: WeChatPusher, me: Resident) -> None:
    await run(wechat, ME, ["我的信息", "3"])
    assert "已更新行动能力：需要送餐上门" in await wechat.say(ME, "2")
    assert (await Resident.get(id=me.id)).mobility == Mobility.NEEDS_DELIVERY
    action = await Action.get(subject_id=me.id, action="update_mobility")
    assert action.detail == {"mobility": Mobility.NEEDS_DELIVERY}
    assert "行动能力：需要送餐上门" in await wechat.say(ME, "我的信息")


async def test_deletion_request_explains_first_and_tells_community_staff(wechat: WeChatPusher, me: Resident) -> None:
    await wechat.say(ME, "我的信息")
    question = await wechat.say(ME, "4")
    assert "姓名、手机号和门牌号" in question and "会保留" in question and "可以撤回" in question
    assert "没有提交删除申请" in await wechat.say(ME, "否")
    assert not await DataRequest.filter(resident_id=me.id).exists()

    await run(wechat, ME, ["我的信息", "4"])
    assert "已提交删除申请" in await wechat.say(ME, "是")
    request = await DataRequest.get(resident_id=me.id)
    assert request.status == RequestStatus.OPEN and request.requested_by_id == me.id
    assert await Action.filter(subject_id=me.id, action="request_deletion").exists()
    # community staff carry it out and are told; grid workers do not handle deletions
    assert any("新的个人信息删除申请：王小明" in text for text in await pushed("demo-staff"))
    assert not any("删除申请" in text for text in await pushed("demo-grid-1"))

    profile = await wechat.say(ME, "我的信息")
    assert "删除申请：2026年11月27日已提交" in profile and "4. 撤回删除申请" in profile
    assert "已撤回删除申请" in await wechat.say(ME, "4")
    assert (await DataRequest.get(id=request.id)).status == RequestStatus.WITHDRAWN
    assert await Action.filter(subject_id=me.id, action="withdraw_deletion").exists()
    assert "4. 申请删除我的信息" in await wechat.say(ME, "我的信息")


async def test_a_family_proxy_sees_and_declares_for_the_elder(wechat: WeChatPusher, me: Resident) -> None:
    elder = await Resident.get(mobile="13904180011")  # 王秀兰: imported, no WeChat of her own
    now = wechat.clock.now()
    link, _ = await request_link(proxy_id=me.id, elder_id=elder.id, relation="子女", now=now)
    await decide_link(link_id=link.id, by_id=elder.id, how="elder", approve=True, now=now)
    await wechat.client.app[ENGINE].act_for(ME, elder.id)

    profile = await wechat.say(ME, "我的信息")
    assert "您正在为王秀兰代办" in profile and "姓名：王秀兰" in profile
    assert "代办人：王小明（子女）" in profile and "绑定的微信：无" in profile
    await wechat.say(ME, "2")
    assert "已申报“独居”" in await wechat.say(ME, "9")
    fact = await ResidentFact.get(resident_id=elder.id, code="lives_alone")
    assert fact.state == FactState.PENDING and fact.source == "proxy" and fact.declared_by_id == me.id
    action = await Action.get(subject_id=elder.id, action="declare_fact")
    assert action.actor_id == me.id and action.proxy_link_id == link.id  # who acted for whom

    await wechat.say("demo-staff", "待核实")
    await wechat.say("demo-staff", "1")
    notice = (await pushed(ME))[-1]
    assert "王秀兰申报的一项信息已有核实结果" in notice
    assert "独居" not in notice  # the proxy is not told which status it was
