"""亲情代理 through /wechat: asking, the elder's or staff's confirmation, acting, ending, refusals."""

from __future__ import annotations

import pytest

from models.conversation import PendingPrompt
from models.outbox import OutboxMessage
from models.proxies import Action, ProxyLink, ProxyStatus
from models.residents import Resident
from tests.wechat import WeChatPusher

pytestmark = pytest.mark.usefixtures("demo")

SON = "o-son"  # 李建国, 王秀兰's son
ELDER = "o-elder"  # 王秀兰 on WeChat
STRANGER = "o-stranger"

# 2号楼3单元501: the community is asked first (the demo has two), then the building
SON_BINDS = ["绑定", "是", "李建国", "13812345678", "1", "2", "3", "501", "是"]
STRANGER_BINDS = ["绑定", "是", "陈路人", "13812349999", "1", "3", "1", "102", "是"]
ELDER_BINDS = ["绑定", "是", "王秀兰", "13904180011", "1", "1", "2", "301", "是"]


async def run(wechat: WeChatPusher, openid: str, lines: list[str]) -> list[str]:
    return [await wechat.say(openid, line) for line in lines]


async def pushed_to(openid: str) -> str:
    """Everything written to the outbox for this person (what WeChat will show them)."""
    rows = await OutboxMessage.filter(openid=openid).order_by("id")
    return "\n".join(str(row.payload.get("content", "")) for row in rows)


async def profile(wechat: WeChatPusher, openid: str) -> str:
    """我的信息 as this person sees it now (then leave it, so the next message starts afresh)."""
    reply = await wechat.say(openid, "我的信息")
    await wechat.say(openid, "取消")
    return reply


async def elder_on_wechat(wechat: WeChatPusher) -> None:
    """王秀兰 binds her WeChat; her grid worker confirms it is her."""
    assert "网格员核实" in (await run(wechat, ELDER, ELDER_BINDS))[-1]
    assert "王秀兰" in await wechat.say("demo-grid-1", "待确认")
    await wechat.say("demo-grid-1", "1")
    assert "已确认绑定" in await wechat.say("demo-grid-1", "是")


async def ask_to_act_for(wechat: WeChatPusher, openid: str, name: str, mobile: str) -> str:
    """亲情代理 → 添加家人 → name, mobile, relation, confirm; returns the last reply."""
    assert "添加家人" in await wechat.say(openid, "亲情代理")
    assert "姓名" in await wechat.say(openid, "添加家人")
    assert "手机号" in await wechat.say(openid, name)
    assert f"您是{name}的" in await wechat.say(openid, mobile)
    summary = await wechat.say(openid, "子女")
    assert f"{mobile[:3]}****{mobile[-4:]}" in summary and "确认提交吗" in summary
    return await wechat.say(openid, "是")


async def linked_and_acting(wechat: WeChatPusher) -> ProxyLink:
    """The son asks, 王秀兰 confirms in chat, the son starts acting for her."""
    await run(wechat, SON, SON_BINDS)
    await elder_on_wechat(wechat)
    assert "已请王秀兰在微信里确认" in await ask_to_act_for(wechat, SON, "王秀兰", "13904180011")
    shown = await wechat.say(ELDER, "你好")  # her next message shows the question
    assert "李建国" in shown and "亲情代理" in shown
    assert "已同意" in await wechat.say(ELDER, "是")
    await wechat.say(SON, "亲情代理")
    assert "从现在起" in await wechat.say(SON, "为家人办理")
    return await ProxyLink.get(proxy__mobile="13812345678")


async def test_family_member_becomes_proxy_and_acts_for_the_elder(wechat: WeChatPusher) -> None:
    await run(wechat, SON, SON_BINDS)
    await elder_on_wechat(wechat)
    assert "还没有关联的家人" in await wechat.say(SON, "亲情代理")
    await wechat.say(SON, "取消")
    done = await ask_to_act_for(wechat, SON, "王秀兰", "13904180011")
    assert "已请王秀兰在微信里确认" in done
    link = await ProxyLink.get(proxy__mobile="13812345678").prefetch_related("elder")
    assert (link.status, link.relation, link.elder.name) == (ProxyStatus.PENDING, "子女", "王秀兰")
    # not yet confirmed: the son cannot act for her
    listing = await wechat.say(SON, "亲情代理")
    assert "王秀兰（待确认）" in listing and "为家人办理" not in listing
    await wechat.say(SON, "取消")

    assert await PendingPrompt.filter(openid=ELDER, closed_at=None).count() == 1
    assert "李建国" in await pushed_to(ELDER)  # the question is pushed to her
    shown = await wechat.say(ELDER, "你好")  # shown again at her next message, pushed or not
    assert "李建国" in shown and "您同意吗" in shown
    assert "已同意" in await wechat.say(ELDER, "是")
    link = await ProxyLink.get(id=link.id)
    assert (link.status, link.confirmed_how) == (ProxyStatus.ACTIVE, "elder")
    assert "王秀兰已同意您做亲情代理" in await pushed_to(SON)

    listing = await wechat.say(SON, "亲情代理")
    assert "王秀兰（已生效）" in listing
    acting = await wechat.say(SON, "为家人办理")
    assert "为王秀兰办理" in acting and "回到本人" in acting and "30分钟" in acting

    # every flow now serves her, and the record names who acted for whom
    shown = await profile(wechat, SON)
    assert "姓名：王秀兰" in shown and "139****0011" in shown
    son = await Resident.get(mobile="13812345678")
    elder = await Resident.get(mobile="13904180011")
    action = await Action.get(action="proxy_act_start")
    assert (action.actor_id, action.subject_id, action.proxy_link_id) == (son.id, elder.id, link.id)
    menu = await wechat.say(SON, "菜单")
    assert "正在为王秀兰代办" in menu and "回到本人" in menu
    assert "已结束为王秀兰代办" in await wechat.say(SON, "回到本人")  # answers the menu too
    assert "姓名：李建国" in await profile(wechat, SON)
    assert "正在为" not in await wechat.say(SON, "菜单")
    await wechat.say(SON, "取消")
    assert "没有在为家人代办" in await wechat.say(SON, "回到本人")

    # she sees who did what for her
    await wechat.say(ELDER, "亲情代理")
    log = await wechat.say(ELDER, "查看代办记录")
    assert "李建国：开始为您代办" in log and "李建国：结束代办" in log


async def test_elder_can_refuse(wechat: WeChatPusher) -> None:
    await run(wechat, SON, SON_BINDS)
    await elder_on_wechat(wechat)
    await ask_to_act_for(wechat, SON, "王秀兰", "13904180011")
    await wechat.say(ELDER, "你好")
    assert "已拒绝" in await wechat.say(ELDER, "否")
    link = await ProxyLink.get(proxy__mobile="13812345678")
    assert link.status == ProxyStatus.REJECTED
    assert "王秀兰没有同意" in await pushed_to(SON)
    assert "为家人办理" not in await wechat.say(SON, "亲情代理")
    await wechat.say(SON, "取消")
    assert "姓名：李建国" in await profile(wechat, SON)
    # a late second answer changes nothing
    assert "已拒绝" not in await wechat.say(ELDER, "是")
    assert (await ProxyLink.get(id=link.id)).status == ProxyStatus.REJECTED


async def test_elder_can_answer_from_the_flow_too(wechat: WeChatPusher) -> None:
    """A prompt she never saw (or that expired) is not the only way: 亲情代理 offers it as well."""
    await run(wechat, SON, SON_BINDS)
    await elder_on_wechat(wechat)
    await ask_to_act_for(wechat, SON, "王秀兰", "13904180011")
    listing = await wechat.say(ELDER, "亲情代理")
    assert "李建国（待您确认）" in listing
    assert "您同意吗" in await wechat.say(ELDER, "确认家人的申请")
    assert "已同意" in await wechat.say(ELDER, "是")
    assert (await ProxyLink.get(proxy__mobile="13812345678")).status == ProxyStatus.ACTIVE
    # the pushed question is withdrawn, so it is not shown to her again
    assert await PendingPrompt.filter(openid=ELDER, closed_at=None).count() == 0


async def test_staff_confirm_in_person_when_the_elder_has_no_wechat(wechat: WeChatPusher) -> None:
    await run(wechat, SON, SON_BINDS)
    done = await ask_to_act_for(wechat, SON, "王秀兰", "13904180011")
    assert "还没有绑定微信" in done and "社区" in done
    # her grid worker is asked; the worker of another grid is not, and cannot decide
    assert await PendingPrompt.filter(openid="demo-grid-1", flow="family_review").count() == 1
    assert await PendingPrompt.filter(openid="demo-grid-2").count() == 0
    assert "暂无待确认的亲情代理申请" in await wechat.say("demo-grid-2", "代理确认")
    await run(wechat, STRANGER, STRANGER_BINDS)
    assert "仅限相关工作人员" in await wechat.say(STRANGER, "代理确认")

    listing = await wechat.say("demo-grid-1", "代理确认")
    assert "李建国为王秀兰代办（子女）" in listing
    from models.privacy import AuditLog

    seen = await AuditLog.get(purpose__startswith="代理确认").prefetch_related("actor", "subject")
    assert (seen.actor.name, seen.subject.name, seen.action) == ("李网格", "王秀兰", "view")  # type: ignore[union-attr]
    question = await wechat.say("demo-grid-1", "1")
    assert "当面核实" in question and "1号楼2单元301室" in question
    assert "已确认" in await wechat.say("demo-grid-1", "是")
    link = await ProxyLink.get(proxy__mobile="13812345678")
    grid = await Resident.get(mobile="13904180001")
    assert (link.status, link.confirmed_how, link.decided_by_id) == (ProxyStatus.ACTIVE, "staff", grid.id)
    assert "社区工作人员已确认" in await pushed_to(SON)
    assert await PendingPrompt.filter(openid="demo-grid-1", closed_at=None).count() == 0
    action = await Action.get(action="proxy_link_active")
    assert (action.actor_id, action.subject_id) == (grid.id, link.elder_id)  # type: ignore[attr-defined]

    await wechat.say(SON, "亲情代理")
    await wechat.say(SON, "为家人办理")
    assert "姓名：王秀兰" in await profile(wechat, SON)


async def test_community_staff_can_refuse_through_the_prompt(wechat: WeChatPusher) -> None:
    await run(wechat, SON, SON_BINDS)
    await ask_to_act_for(wechat, SON, "王秀兰", "13904180011")
    assert "王秀兰" in await wechat.say("demo-grid-1", "你好")  # the pending question
    assert "已拒绝" in await wechat.say("demo-grid-1", "否")
    assert (await ProxyLink.get(proxy__mobile="13812345678")).status == ProxyStatus.REJECTED
    assert "没有通过社区核实" in await pushed_to(SON)
    assert "暂无待确认" in await wechat.say("demo-staff", "代理确认")


async def test_elder_ending_the_link_stops_acting_at_once(wechat: WeChatPusher) -> None:
    link = await linked_and_acting(wechat)
    assert "姓名：王秀兰" in await profile(wechat, SON)
    await wechat.say(ELDER, "亲情代理")
    assert "李建国不能再为您代办" in await wechat.say(ELDER, "解除关联")
    assert "没有解除" in await wechat.say(ELDER, "否")  # a way back before anything changes
    assert (await ProxyLink.get(id=link.id)).status == ProxyStatus.ACTIVE
    await wechat.say(ELDER, "亲情代理")
    await wechat.say(ELDER, "解除关联")
    assert "已解除" in await wechat.say(ELDER, "是")
    assert (await ProxyLink.get(id=link.id)).status == ProxyStatus.ENDED
    assert "王秀兰已解除您的亲情代理关系" in await pushed_to(SON)
    assert "姓名：李建国" in await profile(wechat, SON)
    assert "正在为" not in await wechat.say(SON, "菜单")


async def test_proxy_ending_the_link_stops_acting_and_tells_the_elder(wechat: WeChatPusher) -> None:
    link = await linked_and_acting(wechat)
    await wechat.say(SON, "亲情代理")
    assert "您不能再为王秀兰代办" in await wechat.say(SON, "解除关联")
    assert "已解除" in await wechat.say(SON, "是")
    assert (await ProxyLink.get(id=link.id)).status == ProxyStatus.ENDED
    assert "李建国已解除为您代办的亲情代理关系" in await pushed_to(ELDER)
    assert "姓名：李建国" in await profile(wechat, SON)
    son = await Resident.get(mobile="13812345678")
    ended = await Action.get(action="end_proxy_link")
    assert (ended.actor_id, ended.subject_id) == (son.id, link.elder_id)  # type: ignore[attr-defined]


async def test_stranger_cannot_act_without_an_active_link(wechat: WeChatPusher) -> None:
    await linked_and_acting(wechat)
    await run(wechat, STRANGER, STRANGER_BINDS)
    listing = await wechat.say(STRANGER, "亲情代理")
    assert "为家人办理" not in listing and "王秀兰" not in listing
    assert "没有这个选项" in await wechat.say(STRANGER, "为家人办理")
    await wechat.say(STRANGER, "取消")
    # asking is not enough: until she confirms, the stranger still serves only himself
    await ask_to_act_for(wechat, STRANGER, "王秀兰", "13904180011")
    assert "为家人办理" not in await wechat.say(STRANGER, "亲情代理")
    await wechat.say(STRANGER, "取消")
    assert "姓名：陈路人" in await profile(wechat, STRANGER)
    assert "正在为" not in await wechat.say(STRANGER, "菜单")


async def test_wrong_name_or_mobile_gets_the_same_neutral_reply(wechat: WeChatPusher) -> None:
    await run(wechat, SON, SON_BINDS)
    replies = []
    # her name with someone else's mobile, and with a mobile nobody has
    for mobile in ("13904180012", "13800000000"):
        await wechat.say(SON, "亲情代理")
        await wechat.say(SON, "添加家人")
        await wechat.say(SON, "王秀兰")
        replies.append(await wechat.say(SON, mobile))
        await wechat.say(SON, "取消")
    assert replies[0] == replies[1]
    assert "没有找到姓名和手机号都相符" in replies[0] and "请重新输入" in replies[0]
    assert "张德福" not in replies[0]
    await wechat.say(SON, "亲情代理")
    await wechat.say(SON, "添加家人")
    await wechat.say(SON, "王秀兰")
    assert "手机号" in await wechat.say(SON, "123")  # not a mobile: asked again
    assert not await ProxyLink.exists()


async def test_lookups_are_capped_per_day(wechat: WeChatPusher) -> None:
    """Guessing whose mobile a number is stops after a few tries."""
    await run(wechat, SON, SON_BINDS)
    await wechat.say(SON, "亲情代理")
    await wechat.say(SON, "添加家人")
    for _ in range(10):
        await wechat.say(SON, "王秀兰")
        assert "没有找到" in await wechat.say(SON, "13904180012")
    await wechat.say(SON, "王秀兰")
    assert "明天再试" in await wechat.say(SON, "13904180011")  # even the right pair, today
    assert not await ProxyLink.exists()


async def test_cannot_be_ones_own_proxy_or_ask_twice(wechat: WeChatPusher) -> None:
    await run(wechat, SON, SON_BINDS)
    await wechat.say(SON, "亲情代理")
    await wechat.say(SON, "添加家人")
    await wechat.say(SON, "李建国")
    assert "您本人" in await wechat.say(SON, "13812345678")
    await ask_to_act_for(wechat, SON, "王秀兰", "13904180011")
    await wechat.say(SON, "亲情代理")
    await wechat.say(SON, "添加家人")
    await wechat.say(SON, "王秀兰")
    assert "正在等待确认" in await wechat.say(SON, "13904180011")
    assert await ProxyLink.filter(proxy__mobile="13812345678").count() == 1


async def test_declining_the_last_check_submits_nothing(wechat: WeChatPusher) -> None:
    await run(wechat, SON, SON_BINDS)
    await wechat.say(SON, "亲情代理")
    for line in ["添加家人", "王秀兰", "13904180011", "子女"]:
        await wechat.say(SON, line)
    assert "没有提交" in await wechat.say(SON, "否")
    assert not await ProxyLink.exists()
    assert not await PendingPrompt.filter(flow="family_review").exists()


async def test_back_to_self_works_even_in_the_middle_of_a_question(wechat: WeChatPusher) -> None:
    await linked_and_acting(wechat)
    assert "王秀兰" in await wechat.say(SON, "我的信息")  # a question of 我的信息 is open now
    reply = await wechat.say(SON, "回到本人")
    assert "已结束为王秀兰代办" in reply
    assert "李建国" in await profile(wechat, SON)
