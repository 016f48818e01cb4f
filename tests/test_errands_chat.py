"""红色代办 in chat through /wechat: the demo elder 刘桂芳 asks for 低保申请 and photographs her four
documents (the fake WeChat serves them), the steward 何管家 takes it, pre-reviews through a signed
link (never a photo in chat) and asks a re-shoot, which she answers on the pushed prompt; the steward
transfers, 民政窗口 records the department's progress, the red proxy 党代办 accepts the offer,
logs the 户口本 taken and returned and delivers; she rates 5 and the proxy earns the points. Plus
what must not happen: an item she may not ask, a cancel asked first, input the bot does not
understand, a prompt answered twice."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from bot.app import ENGINE, SERVICES
from bot.clock import FrozenClock
from bot.engine import REPLY_MAX_CHARS
from models import errand_core as core
from models.conversation import PendingPrompt
from models.errands import CustodyEntry, Errand, ErrandEvent, ErrandPhoto, ErrandState, PhotoState, Progress
from models.ledger import balance, points_of
from models.outbox import OutboxMessage
from models.places import Building
from models.proxies import Action, decide_link, request_link
from models.residents import Resident, WechatAccount
from models.roles import Role, grant
from tests.test_api import until
from tests.test_case_photos import picture
from tests.test_cases_chat import option, pushed_to
from tests.wechat import WeChatPusher

pytestmark = pytest.mark.usefixtures("demo")

ELDER = "demo-elder"  # 刘桂芳, 5号楼1单元201, 80, verified lives alone
STEWARD = "demo-steward"  # 何管家, cloud steward of 米家社区
PROXY = "demo-proxy"  # 党代办, red proxy of 第二网格 (4号楼, 5号楼)
DEPT = "demo-dept"  # 民政窗口, department staff of 民政
STAFF = "demo-staff"  # 周社工, community staff
DOCUMENTS = ["身份证", "户口本", "家庭收入证明", "银行卡"]
NOW = datetime(2026, 11, 27, 1, 0, tzinfo=UTC)


async def say(wechat: WeChatPusher, openid: str, text: str) -> str:
    reply = await wechat.say(openid, text)
    assert len(reply) <= REPLY_MAX_CHARS, reply
    return reply


async def photo(wechat: WeChatPusher, openid: str, media_id: str) -> str:
    reply = await wechat.image(openid, media_id=media_id)
    assert len(reply) <= REPLY_MAX_CHARS, reply
    return reply


async def delivered(openid: str) -> PendingPrompt:
    """The latest open prompt of ``openid`` once WeChat took its push (or it was shown at a message)."""
    prompt = await PendingPrompt.filter(openid=openid, closed_at=None).order_by("-id").first()
    assert prompt is not None, f"no open prompt for {openid}"

    async def settled() -> bool:
        if (await PendingPrompt.get(id=prompt.id)).delivered_at is not None:
            return True
        return (await OutboxMessage.get(idempotency_key=f"prompt:{prompt.id}")).state == "failed"

    await until(settled)
    return prompt


async def answer(wechat: WeChatPusher, openid: str, text: str) -> str:
    prompt = await delivered(openid)
    if (await PendingPrompt.get(id=prompt.id)).delivered_at is None:
        assert "您有一条待回复的消息" in await wechat.say(openid, "你好")
    return await say(wechat, openid, text)


async def answer_with_photo(wechat: WeChatPusher, openid: str, media_id: str) -> str:
    prompt = await delivered(openid)
    if (await PendingPrompt.get(id=prompt.id)).delivered_at is None:
        assert "您有一条待回复的消息" in await wechat.say(openid, "你好")
    return await photo(wechat, openid, media_id)


def serve_photos(client: Any, *media_ids: str) -> None:
    fake = client.app[SERVICES].fake
    for i, media_id in enumerate(media_ids):
        fake.add_media(media_id, picture("PNG" if i % 2 else "JPEG", ("gray", "white", "red", "blue", "green")[i % 5]))


async def ask_dibao(wechat: WeChatPusher, openid: str = ELDER) -> tuple[str, str, str]:
    """代办 → 低保申请 → 是: the list, the card and the first photo question."""
    listing = await say(wechat, openid, "代办")
    card = await say(wechat, openid, option(listing, "低保申请"))
    return listing, card, await say(wechat, openid, "是")


async def card_of(wechat: WeChatPusher, openid: str, keyword: str, needle: str = "低保申请") -> str:
    listing = await say(wechat, openid, keyword)
    return await say(wechat, openid, option(listing, needle))


async def points(name: str) -> int:
    person = await Resident.get(name=name)
    return await balance(await points_of(person.id, NOW))


# ---------------------------------------------------------------------------- the acceptance path


async def test_a_dibao_application_is_done_without_leaving_home(
        client: Any, wechat: WeChatPusher, clock: FrozenClock) -> None:
    serve_photos(client, "id-card", "hukou", "income", "bank", "hukou-again")
    fake = client.app[SERVICES].fake
    before = await points("党代办")

    # 刘桂芳 picks 低保申请: the department, the documents, the times, a red proxy will come
    listing, card, first = await ask_dibao(wechat)
    assert "低保申请" in listing and "残疾人补贴（" in listing  # not hers to ask, with the reason
    assert "民政" in card and "、".join(DOCUMENTS) in card and "红色代办员会上门" in card and "独居" in card
    assert "请拍“身份证”" in first and "☐身份证 ☐户口本" in first
    errand = await Errand.get()
    assert (errand.item_name, errand.state, errand.needs_proxy, errand.documents) == (
        "低保申请", ErrandState.COLLECTING, True, DOCUMENTS)

    # the bot ticks the checklist off as each photo arrives and says what is still missing
    replies = [await photo(wechat, ELDER, m) for m in ("id-card", "hukou", "income", "bank")]
    assert "已收到“身份证”" in replies[0] and "☑身份证 ☐户口本" in replies[0] and "请拍“户口本”" in replies[0]
    assert "还差2项" in replies[1] and "请拍“家庭收入证明”" in replies[1]
    assert "☑身份证 ☑户口本 ☑家庭收入证明 ☑银行卡" in replies[-1] and "材料已经拍齐" in replies[-1]
    photos = await ErrandPhoto.filter(errand_id=errand.id).order_by("id")
    assert [p.document for p in photos] == DOCUMENTS
    assert all(p.state == PhotoState.PENDING and p.file_name for p in photos)
    assert (await Errand.get(id=errand.id)).state == ErrandState.REVIEW

    # the red proxy of her grid was offered it at once and accepts on the pushed prompt
    accepted = await answer(wechat, PROXY, "1")
    assert "接单成功" in accepted and "刘桂芳" in accepted and "5号楼1单元201室" in accepted
    assert (await Errand.get(id=errand.id)).proxy_id == (await Resident.get(name="党代办")).id

    # the steward takes it from the queue and pre-reviews through the signed link
    clock.advance(timedelta(minutes=20))
    queue = await say(wechat, STEWARD, "代办队列")
    assert "低保申请·刘桂芳" in queue
    card = await say(wechat, STEWARD, option(queue, "低保申请"))
    assert "5号楼1单元201室" in card and "党代办" in card
    taken = await say(wechat, STEWARD, option(card, "接单"))
    assert "已接单" in taken
    errand = await Errand.get(id=errand.id)
    assert errand.steward_id == (await Resident.get(name="何管家")).id and errand.first_response_at is not None
    review = await say(wechat, STEWARD, option(taken, "预审"))
    assert "/docs/" in review and "预审“身份证”（还有4张待看）" in review
    assert "预审“户口本”" in await say(wechat, STEWARD, "通过")
    assert "原因" in await say(wechat, STEWARD, option(review, "重拍"))
    after = await say(wechat, STEWARD, "照片反光看不清，请在灯下重拍")
    assert "已请居民重拍“户口本”" in after and "预审“家庭收入证明”" in after
    await say(wechat, STEWARD, "1")
    done = await say(wechat, STEWARD, "1")
    assert "没有待预审的照片了" in done and "转办" not in done  # the 户口本 is still to come
    await say(wechat, STEWARD, "取消")
    assert "照片反光看不清" in await pushed_to(ELDER)

    # 刘桂芳 answers the pushed re-shoot with a new photo
    reshot = await answer_with_photo(wechat, ELDER, "hukou-again")
    assert "已收到“户口本”" in reshot and "材料已经拍齐" in reshot
    live = {p.document: p for p in await ErrandPhoto.filter(errand_id=errand.id).exclude(state=PhotoState.REPLACED)}
    assert live["户口本"].media_id == "hukou-again" and live["户口本"].state == PhotoState.PENDING

    # the steward accepts it and transfers to 民政 (asked first)
    card = await card_of(wechat, STEWARD, "代办队列")
    review = await say(wechat, STEWARD, option(card, "预审"))
    assert "预审“户口本”（还有1张待看）" in review
    ready = await say(wechat, STEWARD, "1")
    assert (await Errand.get(id=errand.id)).state == ErrandState.READY
    departments = await say(wechat, STEWARD, option(ready, "转办"))
    asked = await say(wechat, STEWARD, option(departments, "民政"))
    assert "确定转给民政办理吗" in asked
    assert "已转给民政" in await say(wechat, STEWARD, "是")
    errand = await Errand.get(id=errand.id)
    assert errand.state == ErrandState.TRANSFERRED and errand.department_id is not None

    # 民政窗口 records 已受理, 办理中, 通过 (the result asked first)
    for label, note in (("已受理", "跳过"), ("办理中", "已报区民政局审批")):
        card = await card_of(wechat, DEPT, "部门办件")
        assert "刘桂芳" in card
        picked = await say(wechat, DEPT, option(card, "记录进度"))
        await say(wechat, DEPT, option(picked, label))
        assert f"已记录“{label}”" in await say(wechat, DEPT, note)
    card = await card_of(wechat, DEPT, "部门办件")
    picked = await say(wechat, DEPT, option(card, "记录进度"))
    await say(wechat, DEPT, option(picked, "通过"))
    assert "确认吗" in await say(wechat, DEPT, "每月享受低保金")
    assert "已记录“已办结（通过）”" in await say(wechat, DEPT, "是")
    errand = await Errand.get(id=errand.id)
    assert (errand.state, errand.progress) == (ErrandState.RESULT, Progress.APPROVED)

    # the red proxy logs the 户口本 taken and returned, then delivers at the door
    card = await card_of(wechat, PROXY, "代办任务")
    docs = await say(wechat, PROXY, option(card, "取走原件"))
    assert "已登记取走“户口本”" in await say(wechat, PROXY, option(docs, "户口本"))
    card = await card_of(wechat, PROXY, "代办任务")
    assert "已取走的原件：户口本" in card
    await say(wechat, PROXY, option(card, "已送达"))
    assert "已记录送达" not in await say(wechat, PROXY, "是")  # an original is still out
    assert (await Errand.get(id=errand.id)).state == ErrandState.RESULT
    card = await card_of(wechat, PROXY, "代办任务")
    back = await say(wechat, PROXY, option(card, "归还原件"))
    assert "已登记归还“户口本”" in await say(wechat, PROXY, option(back, "户口本"))
    [entry] = await CustodyEntry.filter(errand_id=errand.id)
    assert entry.document == "户口本" and entry.returned_at is not None
    card = await card_of(wechat, PROXY, "代办任务")
    await say(wechat, PROXY, option(card, "已送达"))
    assert "已记录送达" in await say(wechat, PROXY, "是")
    errand = await Errand.get(id=errand.id)
    assert errand.state == ErrandState.DELIVERED and errand.at_door

    # 刘桂芳 rates 5 on the pushed question; the proxy's points go up once
    assert "还有什么想说的" in await answer(wechat, ELDER, "5")
    assert "谢谢您的评价" in await say(wechat, ELDER, "跳过")
    errand = await Errand.get(id=errand.id)
    assert (errand.state, errand.rating) == (ErrandState.CLOSED, 5)
    earned = await points("党代办") - before
    assert earned > 0
    assert "已办结" in await card_of(wechat, ELDER, "我的代办")
    assert await points("党代办") - before == earned

    # the steward never received a document photo in chat: only links to /docs/
    steward_rows = await OutboxMessage.filter(openid=STEWARD)
    assert all(row.kind == "text" for row in steward_rows)
    assert not [m for m in fake.sent("custom", STEWARD) if m.msgtype == "image"]
    assert {"id-card", "hukou", "income", "bank", "hukou-again"}.isdisjoint(
        " ".join(str(row.payload) for row in steward_rows).split())


# ---------------------------------------------------------------------------- what must not happen


async def test_an_item_she_may_not_ask_is_refused_with_the_reason(wechat: WeChatPusher) -> None:
    listing = await say(wechat, ELDER, "代办")
    refused = await say(wechat, ELDER, option(listing, "残疾人补贴"))
    assert "暂不能申请" in refused and "请选择其他事项" in refused and "1. " in refused
    assert not await Errand.exists()
    # the rest of the list is on the next page; 更多事项 turns to it and back
    more = await say(wechat, ELDER, option(refused, "更多事项"))
    assert "健康检查" in more and "健康检查" not in refused
    assert "残疾人补贴（仅限残疾居民申请）" in refused + more and "退役军人优待（仅限" in refused + more
    assert "低保申请" in await say(wechat, ELDER, option(more, "从头再看"))


async def test_she_cancels_only_after_saying_yes(client: Any, wechat: WeChatPusher) -> None:
    serve_photos(client, "id-card")
    await ask_dibao(wechat)
    await photo(wechat, ELDER, "id-card")
    paused = await say(wechat, ELDER, "稍后")
    assert "我的代办" in paused
    card = await card_of(wechat, ELDER, "我的代办")
    assert "☑身份证 ☐户口本" in card and "继续拍照" in card
    resumed = await say(wechat, ELDER, option(card, "继续拍照"))
    assert "请拍“户口本”" in resumed
    await say(wechat, ELDER, "稍后")
    card = await card_of(wechat, ELDER, "我的代办")
    asked = await say(wechat, ELDER, option(card, "取消这件代办"))
    assert "确定取消“低保申请”" in asked
    assert "没有取消" in await say(wechat, ELDER, "否")
    assert (await Errand.get()).state == ErrandState.COLLECTING
    card = await card_of(wechat, ELDER, "我的代办")
    await say(wechat, ELDER, option(card, "取消这件代办"))
    assert "已取消“低保申请”" in await say(wechat, ELDER, "是")
    errand = await Errand.get()
    assert errand.state == ErrandState.CANCELLED
    assert "已取消" in await card_of(wechat, ELDER, "我的代办")
    # asking again is a new errand
    await ask_dibao(wechat)
    assert await Errand.filter(state=ErrandState.COLLECTING).count() == 1


async def test_input_the_bot_does_not_understand_changes_nothing(client: Any, wechat: WeChatPusher) -> None:
    listing = await say(wechat, ELDER, "代办")
    assert "没有这个选项" in await say(wechat, ELDER, "99")
    assert "请回复" in await say(wechat, ELDER, "帮我办个事吧")
    card = await say(wechat, ELDER, option(listing, "低保申请"))
    assert "请回复“是”或“否”" in await say(wechat, ELDER, "也许吧")
    assert not await Errand.exists()
    first = await say(wechat, ELDER, "是")
    assert "请拍“身份证”" in first and card
    again = await say(wechat, ELDER, "我拍不好")
    assert "请拍“身份证”" in again and "没有这个选项" in again
    assert await ErrandPhoto.all().count() == 0
    # a steward typing nonsense on a card, and 返回 to the previous question
    card = await card_of(wechat, STEWARD, "代办队列")
    assert "没有这个选项" in await say(wechat, STEWARD, "接接接")
    assert "代办队列" in await say(wechat, STEWARD, "返回")
    assert (await Errand.get()).steward_id is None
    # staff only: a resident cannot open the queue
    await say(wechat, ELDER, "稍后")
    assert "仅限相关工作人员" in await say(wechat, ELDER, "代办队列")


async def test_a_prompt_answered_twice_counts_once(client: Any, wechat: WeChatPusher) -> None:
    # a second red proxy in the same grid: both are offered the errand, the first to accept wins
    b5 = await Building.get(name="5号楼")
    other = await Resident.create(name="林代办", mobile="13904189999", community_id=b5.community_id,  # type: ignore[attr-defined]
                                  building=b5, unit="3", room="302", status="verified", created_at=NOW)
    await WechatAccount.create(openid="proxy-2", channel="oa", resident=other, created_at=NOW)
    await grant(resident_id=other.id, role=Role.RED_PROXY, scope_id=b5.grid_id, now=NOW)  # type: ignore[attr-defined]
    await ask_dibao(wechat)
    errand = await Errand.get()
    await delivered("proxy-2")
    assert "接单成功" in await answer(wechat, PROXY, "1")
    assert "接单成功" not in await say(wechat, PROXY, "1")
    second = await say(wechat, "proxy-2", "1")
    assert "接单成功" not in second
    errand = await Errand.get(id=errand.id)
    assert errand.proxy_id == (await Resident.get(name="党代办")).id
    assert await ErrandEvent.filter(errand_id=errand.id, actor_id=other.id).count() == 0


# ---------------------------------------------------------------------------- the other turns


async def photographed(client: Any, wechat: WeChatPusher) -> Errand:
    """低保申请 asked in chat with its four photos sent."""
    serve_photos(client, "id-card", "hukou", "income", "bank")
    await ask_dibao(wechat)
    for media_id in ("id-card", "hukou", "income", "bank"):
        await photo(wechat, ELDER, media_id)
    return await Errand.get()


async def transferred(client: Any, wechat: WeChatPusher, clock: FrozenClock) -> Errand:
    """The four photos accepted by 何管家 and the errand with 民政 (through the domain, as the API does)."""
    errand = await photographed(client, wechat)
    steward = await Resident.get(name="何管家")
    now = clock.now()
    for p in await core.photos_of(errand.id):
        await core.review_photo(p.id, steward.id, accept=True, now=now)
    return await core.transfer(errand.id, steward.id, now)


async def test_a_photo_that_cannot_be_kept_is_asked_for_again(client: Any, wechat: WeChatPusher) -> None:
    client.app[SERVICES].fake.add_media("not-a-photo", b"%PDF-1.4 this is no image")
    await ask_dibao(wechat)
    again = await photo(wechat, ELDER, "not-a-photo")
    assert "“身份证”没能保存" in again and "请拍“身份证”" in again and "☐身份证" in again
    [lost] = await ErrandPhoto.all()
    assert lost.state == PhotoState.LOST and not lost.file_name


async def test_the_department_asks_for_more_and_she_photographs_it(
        client: Any, wechat: WeChatPusher, clock: FrozenClock) -> None:
    errand = await transferred(client, wechat, clock)
    card = await card_of(wechat, DEPT, "部门办件")
    picked = await say(wechat, DEPT, option(card, "记录进度"))
    await say(wechat, DEPT, option(picked, "需补充材料"))
    assert "请写明原因" in await say(wechat, DEPT, "跳过")  # a reason the resident reads is needed
    assert "要补拍哪些新材料" in await say(wechat, DEPT, "还需要房产证复印件")
    assert "已记录“需补充材料”" in await say(wechat, DEPT, "房产证")
    errand = await Errand.get(id=errand.id)
    assert (errand.state, errand.documents[-1]) == (ErrandState.COLLECTING, "房产证")
    assert "还需要房产证复印件" in await pushed_to(ELDER)

    serve_photos(client, "deed")
    card = await card_of(wechat, ELDER, "我的代办")
    assert "☐房产证" in card
    asked = await say(wechat, ELDER, option(card, "继续拍照"))
    assert "请拍“房产证”" in asked and "还差1项" in asked
    assert "材料已经拍齐" in await photo(wechat, ELDER, "deed")
    assert (await Errand.get(id=errand.id)).state == ErrandState.REVIEW


async def test_a_steward_cancels_with_a_reason_and_only_after_saying_yes(
        client: Any, wechat: WeChatPusher) -> None:
    errand = await photographed(client, wechat)
    card = await card_of(wechat, STEWARD, "代办队列")
    assert "原因" in await say(wechat, STEWARD, option(card, "取消"))
    asked = await say(wechat, STEWARD, "居民已自行到窗口办理")
    assert "确定取消这件代办吗" in asked
    assert "没有取消" in await say(wechat, STEWARD, "否")
    assert (await Errand.get(id=errand.id)).state == ErrandState.REVIEW
    card = await card_of(wechat, STEWARD, "代办队列")
    await say(wechat, STEWARD, option(card, "取消"))
    await say(wechat, STEWARD, "居民已自行到窗口办理")
    assert f"已取消编号{errand.id}" in await say(wechat, STEWARD, "是")
    assert (await Errand.get(id=errand.id)).state == ErrandState.CANCELLED
    assert "居民已自行到窗口办理" in await pushed_to(ELDER)
    assert "目前没有待处理的代办" in await say(wechat, STEWARD, "代办队列")


async def test_a_red_proxy_who_says_no_leaves_it_to_the_others(wechat: WeChatPusher) -> None:
    await ask_dibao(wechat)
    errand = await Errand.get()
    assert "留给其他代办员" in await answer(wechat, PROXY, "不接")
    proxy = await Resident.get(name="党代办")
    assert await ErrandEvent.filter(errand_id=errand.id, kind=core.Kind.OFFER_DECLINED, actor_id=proxy.id).exists()
    assert (await Errand.get(id=errand.id)).proxy_id is None


async def test_staff_read_the_figures_in_a_few_lines(client: Any, wechat: WeChatPusher) -> None:
    await photographed(client, wechat)
    figures = await say(wechat, STAFF, "代办数据")
    assert "代办申请1件" in figures and "小程序" in figures
    assert "仅限相关工作人员" in await say(wechat, STEWARD, "代办数据")


async def test_a_daughter_acting_for_her_mother_asks_and_photographs(client: Any, wechat: WeChatPusher) -> None:
    mother = await Resident.get(name="刘桂芳")
    b5 = await Building.get(name="5号楼")
    daughter = await Resident.create(name="刘小红", mobile="13904188888", community_id=b5.community_id,  # type: ignore[attr-defined]
                                     building=b5, unit="1", room="202", status="verified", created_at=NOW)
    await WechatAccount.create(openid="o-daughter", channel="oa", resident=daughter, created_at=NOW)
    link, _ = await request_link(proxy_id=daughter.id, elder_id=mother.id, relation="子女", now=NOW)
    await decide_link(link_id=link.id, by_id=mother.id, how="elder", approve=True, now=NOW)
    await client.app[ENGINE].act_for("o-daughter", mother.id)
    serve_photos(client, "id-card")

    listing, card, first = await ask_dibao(wechat, "o-daughter")
    assert listing.startswith("（为刘桂芳办理）") and "刘桂芳属于独居" in card and "请拍“身份证”" in first
    errand = await Errand.get()
    assert (errand.resident_id, errand.requested_by_id) == (mother.id, daughter.id)
    assert await Action.filter(actor_id=daughter.id, subject_id=mother.id, action="errand_request").exists()
    assert "已收到“身份证”" in await photo(wechat, "o-daughter", "id-card")
    assert (await ErrandPhoto.get()).sent_by_id == daughter.id  # type: ignore[attr-defined]
    assert "刘桂芳的代办" in await say(wechat, "o-daughter", "我的代办")


async def test_a_steward_asks_for_a_red_proxy_and_assigns_one(client: Any, wechat: WeChatPusher) -> None:
    b5 = await Building.get(name="5号楼")
    young = await Resident.create(name="王青年", mobile="13904187777", community_id=b5.community_id,  # type: ignore[attr-defined]
                                  building=b5, unit="2", room="601", status="verified", created_at=NOW)
    await WechatAccount.create(openid="o-young", channel="oa", resident=young, created_at=NOW)
    listing = await say(wechat, "o-young", "代办")
    card = await say(wechat, "o-young", option(listing, "医保参保"))
    assert "红色代办员" not in card and "转给部门办理" in card
    await say(wechat, "o-young", "是")
    errand = await Errand.get()
    assert not errand.needs_proxy
    assert not await PendingPrompt.filter(openid=PROXY).exists()

    card = await card_of(wechat, STEWARD, "代办队列", "医保参保")
    assert "指派代办员" not in card
    asked = await say(wechat, STEWARD, option(card, "需要代办员"))
    assert "红色代办员" in asked
    assert "已发给红色代办员接单" in await say(wechat, STEWARD, "是")
    assert (await Errand.get(id=errand.id)).needs_proxy
    offer = await delivered(PROXY)

    card = await card_of(wechat, STEWARD, "代办队列", "医保参保")
    proxies = await say(wechat, STEWARD, option(card, "指派代办员"))
    assert "党代办（本网格）" in proxies
    assert "已指派党代办上门" in await say(wechat, STEWARD, option(proxies, "党代办"))
    assert (await Errand.get(id=errand.id)).proxy_id == (await Resident.get(name="党代办")).id
    assert (await PendingPrompt.get(id=offer.id)).closed_at is not None  # the offer is withdrawn
    tasks = await say(wechat, PROXY, "代办任务")
    assert "医保参保·王青年" in tasks and "待接单" not in tasks
    # at the door the proxy photographs the documents for him
    serve_photos(client, "young-id")
    card = await say(wechat, PROXY, option(tasks, "医保参保"))
    asked = await say(wechat, PROXY, option(card, "拍材料"))
    assert "请拍“身份证”" in asked
    assert "已收到“身份证”" in await photo(wechat, PROXY, "young-id")
    assert (await ErrandPhoto.get()).sent_by_id == (await Resident.get(name="党代办")).id  # type: ignore[attr-defined]
