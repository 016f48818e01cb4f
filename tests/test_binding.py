"""绑定 through /wechat: new residents, matches that wait for the grid worker, unbinding."""

from __future__ import annotations

import pytest

from models.conversation import PendingPrompt
from models.residents import (
    CONSENT_VERSION,
    Consent,
    LinkRequest,
    LinkStatus,
    Resident,
    ResidentStatus,
    WechatAccount,
)
from tests.wechat import WeChatPusher

pytestmark = pytest.mark.usefixtures("demo")

NEW_RESIDENT = ["绑定", "是", "王小明", "138 1234 5678", "1", "2", "3单元", "501室"]
ELDER = ["绑定", "是", "王秀兰", "13904180011", "1", "1", "2", "301"]


async def run(wechat: WeChatPusher, openid: str, lines: list[str]) -> list[str]:
    return [await wechat.say(openid, line) for line in lines]


async def test_new_resident_binds_and_reaches_the_menu(wechat: WeChatPusher) -> None:
    replies = await run(wechat, "o-new", NEW_RESIDENT)
    assert "米家社区2号楼3单元501室" in replies[-1] and "138****5678" in replies[-1]
    done = await wechat.say("o-new", "是")
    assert "绑定成功" in done
    resident = await Resident.get(mobile="13812345678").prefetch_related("building")
    assert (resident.name, resident.unit, resident.room) == ("王小明", "3", "501")
    assert resident.building.name == "2号楼"
    assert resident.status == ResidentStatus.PENDING  # self-declared: staff verify later
    account = await WechatAccount.get(openid="o-new")
    assert account.resident_id == resident.id
    consent = await Consent.get(account_id=account.id)
    assert consent.resident_id == resident.id and consent.text_version == CONSENT_VERSION
    assert consent.accepted_at is not None and "手机号" in consent.text
    menu = await wechat.say("o-new", "菜单")
    assert "请选择服务" in menu and "绑定身份" not in menu
    assert "138****5678" in await wechat.say("o-new", "我的信息")


async def test_flow_needing_binding_resumes_after_binding(wechat: WeChatPusher) -> None:
    first = await wechat.say("o-resume", "我的信息")
    assert "需要先绑定" in first
    await run(wechat, "o-resume", NEW_RESIDENT[1:])
    done = await wechat.say("o-resume", "是")
    assert "绑定成功" in done and "姓名：王小明" in done  # straight into 我的信息


async def test_refusing_consent_stores_nothing(wechat: WeChatPusher) -> None:
    await wechat.say("o-no", "绑定")
    assert "不会保存" in await wechat.say("o-no", "否")
    account = await WechatAccount.get(openid="o-no")
    assert account.resident_id is None
    assert not await Consent.filter(account_id=account.id).exists()


@pytest.mark.parametrize("mobile", ["12345", "23812345678", "1381234567", "abc", "+1 650 253 0000"])
async def test_invalid_mobile_is_asked_again(wechat: WeChatPusher, mobile: str) -> None:
    await run(wechat, "o-mob", ["绑定", "是", "王小明"])
    reply = await wechat.say("o-mob", mobile)
    assert "手机号" in reply and "13812345678" in reply  # says what a valid one looks like
    assert "社区" in await wechat.say("o-mob", "13812345678")


async def test_one_openid_one_resident(wechat: WeChatPusher) -> None:
    await run(wechat, "o-once", [*NEW_RESIDENT, "是"])
    assert "已经绑定过了" in await wechat.say("o-once", "绑定")
    assert await Resident.filter(name="王小明").count() == 1


async def test_matching_an_existing_record_waits_for_the_grid_worker(wechat: WeChatPusher) -> None:
    replies = await run(wechat, "o-claim", [*ELDER, "是"])
    assert "网格员核实" in replies[-1]
    account = await WechatAccount.get(openid="o-claim")
    assert account.resident_id is None  # nobody gets the elder's account by typing her name
    request = await LinkRequest.get(account_id=account.id)
    assert request.status == LinkStatus.PENDING
    assert "等待网格员确认" in await wechat.say("o-claim", "我的信息")
    # only the worker of that grid is asked
    assert await PendingPrompt.filter(openid="demo-grid-1").count() == 1
    assert await PendingPrompt.filter(openid="demo-grid-2").count() == 0

    listing = await wechat.say("demo-grid-1", "待确认")
    assert "王秀兰" in listing and "139****0011" in listing
    await wechat.say("demo-grid-1", "1")
    assert "已确认绑定" in await wechat.say("demo-grid-1", "是")
    elder = await Resident.get(mobile="13904180011")
    assert (await WechatAccount.get(openid="o-claim")).resident_id == elder.id
    # the prompt for the same request is withdrawn, so a late "是" does nothing twice
    assert await PendingPrompt.filter(openid="demo-grid-1", closed_at=None).count() == 0
    assert "请选择服务" in await wechat.say("o-claim", "菜单")


async def test_same_mobile_at_another_address_also_waits(wechat: WeChatPusher) -> None:
    lines = ["绑定", "是", "李四", "13904180011", "2", "1", "1", "101", "是"]
    assert "网格员核实" in (await run(wechat, "o-mobile-thief", lines))[-1]
    assert (await WechatAccount.get(openid="o-mobile-thief")).resident_id is None


async def test_grid_worker_can_reject(wechat: WeChatPusher) -> None:
    await run(wechat, "o-rej", [*ELDER, "是"])
    await wechat.say("demo-grid-1", "你好")  # shows the prompt
    assert "已拒绝" in await wechat.say("demo-grid-1", "否")
    request = await LinkRequest.get(account__openid="o-rej")
    assert request.status == LinkStatus.REJECTED
    again = await wechat.say("o-rej", "绑定")  # is told, and may try again
    assert "没有通过网格员核实" in again and "同意" in again


async def test_other_grid_worker_and_residents_cannot_decide(wechat: WeChatPusher) -> None:
    await run(wechat, "o-x", [*ELDER, "是"])
    assert "暂无待确认" in await wechat.say("demo-grid-2", "待确认")
    await run(wechat, "o-plain", [*NEW_RESIDENT, "是"])
    assert "仅限相关工作人员" in await wechat.say("o-plain", "待确认")
    assert (await LinkRequest.get(account__openid="o-x")).status == LinkStatus.PENDING


async def test_community_staff_can_decide_too(wechat: WeChatPusher) -> None:
    await run(wechat, "o-cs", [*ELDER, "是"])
    assert "王秀兰" in await wechat.say("demo-staff", "待确认")
    await wechat.say("demo-staff", "1")
    assert "已确认绑定" in await wechat.say("demo-staff", "是")


async def test_unbind_asks_first_then_unlinks(wechat: WeChatPusher) -> None:
    await run(wechat, "o-unb", [*NEW_RESIDENT, "是"])
    assert "确定解绑吗" in await wechat.say("o-unb", "解绑")
    assert "没有解绑" in await wechat.say("o-unb", "否")
    assert (await WechatAccount.get(openid="o-unb")).resident_id is not None
    await wechat.say("o-unb", "解绑")
    assert "已解绑" in await wechat.say("o-unb", "是")
    assert (await WechatAccount.get(openid="o-unb")).resident_id is None
    assert await Resident.filter(mobile="13812345678").exists()  # the record stays with the community
    assert "您还没有绑定" in await wechat.say("o-unb", "解绑")


async def test_unbind_withdraws_a_pending_request_and_its_prompt(wechat: WeChatPusher) -> None:
    await run(wechat, "o-wd", [*ELDER, "是"])
    await wechat.say("o-wd", "解绑")
    assert "已解绑" in await wechat.say("o-wd", "是")
    assert (await LinkRequest.get(account__openid="o-wd")).status == LinkStatus.CANCELLED
    assert await PendingPrompt.filter(openid="demo-grid-1", closed_at=None).count() == 0
    assert "暂无待确认" in await wechat.say("demo-grid-1", "待确认")


async def test_a_pushed_question_is_answered_by_the_first_reply(wechat: WeChatPusher) -> None:
    """Regression: a prompt WeChat accepted was still treated as unseen, so the grid worker's
    first 是 only showed the question again."""
    import asyncio

    await wechat.say("demo-grid-1", "你好")  # WeChat lets us push within 48 h of their last message
    await run(wechat, "o-pushed", [*ELDER, "是"])
    prompt = await PendingPrompt.get(openid="demo-grid-1")
    for _ in range(500):  # the outbox sender pushes it in the background
        await prompt.refresh_from_db()
        if prompt.delivered_at is not None:
            break
        await asyncio.sleep(0.01)
    assert prompt.delivered_at is not None
    assert "已确认绑定" in await wechat.say("demo-grid-1", "是")


async def test_the_review_list_audits_each_record_it_shows(wechat: WeChatPusher) -> None:
    from models.privacy import AuditLog

    await run(wechat, "o-audit", [*ELDER, "是"])
    assert "王秀兰" in await wechat.say("demo-grid-1", "待确认")
    elder = await Resident.get(mobile="13904180011")
    worker = await Resident.get(name="李网格")
    row = await AuditLog.get(subject_id=elder.id)
    assert (row.actor_id, row.action) == (worker.id, "view")  # type: ignore[attr-defined]
    assert row.purpose.startswith("绑定审核 link_request:")
