"""The conversation engine through /wechat: fallbacks, validation, idle expiry, pending prompts, the lock."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from bot.app import ENGINE
from bot.clock import FrozenClock
from bot.engine import REPLY_MAX_CHARS, Inbound, Question, validate
from models.conversation import PendingPrompt
from tests.wechat import WeChatPusher

pytestmark = pytest.mark.usefixtures("demo")


async def test_cancel_ends_the_flow(wechat: WeChatPusher) -> None:
    assert "同意" in await wechat.say("o1", "绑定")
    assert "已取消“绑定”" in await wechat.say("o1", "取消")
    assert "当前没有进行中的事项" in await wechat.say("o1", "退出")


async def test_back_goes_one_step_back_and_keeps_going(wechat: WeChatPusher) -> None:
    await wechat.say("o2", "绑定")
    await wechat.say("o2", "是")
    assert "手机号" in await wechat.say("o2", "王小明")
    back = await wechat.say("o2", "返回")
    assert "姓名" in back
    assert "手机号" in await wechat.say("o2", "王大明")  # the re-asked step takes the new answer
    await wechat.say("o2", "返回")
    assert "同意" in await wechat.say("o2", "返回")
    assert "已经是第一步" in await wechat.say("o2", "返回")


async def test_menu_word_leaves_the_flow_and_shows_the_menu(wechat: WeChatPusher) -> None:
    await wechat.say("o3", "绑定")
    reply = await wechat.say("o3", "菜单")
    assert "已退出“绑定”" in reply and "请选择服务" in reply
    assert "请选择服务" in await wechat.say("o3", "帮助")


@pytest.mark.parametrize(
    ("answer", "hint"),
    [("9", "1 到"), ("好几个", "没有这个选项"), ("", "1 到")],
)
async def test_invalid_choice_gets_a_specific_reask(wechat: WeChatPusher, answer: str, hint: str) -> None:
    await wechat.say("o4", "菜单")
    reply = await wechat.say("o4", answer or " ")
    assert hint in reply
    assert "请选择服务" in reply  # the question is asked again


async def test_invalid_confirmation_and_overlong_text(wechat: WeChatPusher) -> None:
    await wechat.say("o5", "绑定")
    assert "请回复“是”或“否”" in await wechat.say("o5", "也许吧")
    await wechat.say("o5", "是")
    reply = await wechat.say("o5", "王" * 30)
    assert "最多" in reply and "姓名" in reply
    assert "消息太长了" in await wechat.say("o5", "长" * 600)
    assert "手机号" in await wechat.say("o5", "王小明")  # nothing above moved the flow


async def test_photo_question_refuses_text(wechat: WeChatPusher) -> None:
    from bot.engine import InvalidAnswer

    q = Question("请拍照", "photo", optional=True)
    with pytest.raises(InvalidAnswer, match="照片"):
        validate(q, Inbound("o", "text", text="拍好了"))
    assert validate(q, Inbound("o", "text", text="跳过")) is None
    assert validate(q, Inbound("o", "image", media_id="m"))["media_id"] == "m"
    loc = Question("位置", "location")
    assert validate(loc, Inbound("o", "location", latitude=1.5, longitude=2.5))["lat"] == 1.5
    with pytest.raises(InvalidAnswer, match="位置"):
        validate(loc, Inbound("o", "text", text="3号楼"))


@pytest.mark.parametrize("text", ["1", "１", "一", "1.", "1号楼"])
def test_choice_accepts_how_people_type_numbers(text: str) -> None:
    q = Question("哪栋？", "choice", options=["1号楼", "2号楼"], values=[10, 20])
    assert validate(q, Inbound("o", "text", text=text)) == 10


async def test_idle_state_expires_and_the_resident_is_told(wechat: WeChatPusher, clock: FrozenClock) -> None:
    await wechat.say("o6", "绑定")
    await wechat.say("o6", "是")
    clock.advance(timedelta(minutes=29))
    assert "手机号" in await wechat.say("o6", "王小明")  # still alive at 29 minutes
    clock.advance(timedelta(minutes=31))
    reply = await wechat.say("o6", "13812345678")
    assert "超过30分钟没有回复" in reply and "绑定" in reply


async def test_expiry_notice_then_fresh_start(client, wechat: WeChatPusher, clock: FrozenClock) -> None:  # type: ignore[no-untyped-def]
    await wechat.say("o7", "绑定")
    clock.advance(timedelta(hours=2))
    reply = await wechat.say("o7", "是")
    assert "已结束" in reply
    assert await client.app[ENGINE].state_of("o7") is None


async def test_pending_prompt_is_answered_after_idle_expiry(
    client, wechat: WeChatPusher, clock: FrozenClock  # type: ignore[no-untyped-def]
) -> None:
    """A grid worker answers a binding prompt days later, in between other conversations."""
    await _request_link(wechat, "o-elder")
    prompt = await PendingPrompt.get(openid="demo-grid-1")
    assert prompt.delivered_at is None
    # the worker chats about something else, which shows the waiting prompt
    shown = await wechat.say("demo-grid-1", "你好")
    assert "待回复" in shown and "王秀兰" in shown
    await wechat.say("demo-grid-1", "菜单")  # starts a conversation...
    clock.advance(timedelta(days=2))  # ...which goes idle; the prompt does not
    reply = await wechat.say("demo-grid-1", "是")
    assert "已确认绑定" in reply and "已结束" not in reply  # an idle menu ends without a word
    assert (await PendingPrompt.get(openid="demo-grid-1")).closed_reason == "answered"
    assert "请选择服务" in await wechat.say("o-elder", "菜单")


async def test_pending_prompt_expires(wechat: WeChatPusher, clock: FrozenClock) -> None:
    await _request_link(wechat, "o-elder2")
    await wechat.say("demo-grid-1", "你好")
    clock.advance(timedelta(days=8))  # conversation.prompt_days is 7
    reply = await wechat.say("demo-grid-1", "是")
    assert "已确认" not in reply
    assert "等待网格员确认" in await wechat.say("o-elder2", "我的信息")


async def test_two_messages_at_once_do_not_corrupt_state(client, wechat: WeChatPusher) -> None:  # type: ignore[no-untyped-def]
    """The per-resident lock serialises them: both answers are applied, one after the other."""
    await wechat.say("o8", "绑定")
    await wechat.say("o8", "是")
    replies = await asyncio.gather(wechat.say("o8", "王小明"), wechat.say("o8", "13812345678"))
    state = await client.app[ENGINE].state_of("o8")
    assert state["data"]["name"] == "王小明"
    if state["state"] == "community":  # the name came first: both answers applied in order
        assert state["data"]["mobile"] == "13812345678"
    else:  # the number came first and was refused as a name; then the name was taken
        assert state["state"] == "mobile"
        assert any("姓名里不应有数字" in r for r in replies)


@pytest.mark.parametrize(("text", "opening"), [("你好", "您好！"), ("在吗？", "您好！"), ("asdf", "抱歉，没有听懂")])
async def test_unknown_text_gets_the_menu(wechat: WeChatPusher, text: str, opening: str) -> None:
    reply = await wechat.say("o-hi", text)
    assert reply.startswith(opening) and "请选择服务" in reply
    assert "同意" in await wechat.say("o-hi", "1")  # the menu is live: 1 picks 绑定身份


async def test_every_reply_stays_short(wechat: WeChatPusher) -> None:
    script = ["你好", "菜单", "1", "是", "王小明", "13812345678", "1", "1", "2", "301", "是", "菜单", "5"]
    for line in script:
        reply = await wechat.say("o9", line)
        assert len(reply) <= REPLY_MAX_CHARS, reply


async def _request_link(wechat: WeChatPusher, openid: str) -> None:
    """Type the details of the imported elder 王秀兰 (1号楼 2单元 301) → a pending link."""
    for line in ["绑定", "是", "王秀兰", "13904180011", "1", "1", "2", "301"]:
        await wechat.say(openid, line)
    assert "网格员核实" in await wechat.say(openid, "是")


async def test_an_idle_menu_ends_without_a_word(client, wechat: WeChatPusher, clock: FrozenClock) -> None:  # type: ignore[no-untyped-def]
    await wechat.say("o8", "菜单")
    clock.advance(timedelta(hours=2))
    reply = await wechat.say("o8", "你好")
    assert "已结束" not in reply and "您好" in reply
    assert await client.app[ENGINE].state_of("o8") is not None  # the fresh menu
