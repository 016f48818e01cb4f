"""爱心银行 in chat: the hub, 积分 after earning and spending (entries written through the ledger
itself), the month boundary in community time, the naming toggle and what the ranking then shows,
and a family proxy reading an elder's points."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from bot.engine import REPLY_MAX_CHARS
from models.ledger import AccountKind, Asset, Source, account, points_of, reverse, transfer
from models.love_bank import MemberPrefs, named_in_rankings
from models.love_figures import NAMELESS, Period, love_figures
from models.places import Community, Shop
from models.proxies import Action, decide_link, request_link
from models.residents import Resident, WechatAccount
from tests.wechat import WeChatPusher

pytestmark = pytest.mark.usefixtures("demo")

SHANGHAI = ZoneInfo("Asia/Shanghai")
VOLUNTEER = "demo-volunteer"  # 孙志愿


def at(month: int, day: int, hour: int = 10, minute: int = 0) -> datetime:
    return datetime(2026, month, day, hour, minute, tzinfo=SHANGHAI)


def option(reply: str, needle: str) -> str:
    """The number of the first listed option that contains ``needle``."""
    for line in reply.splitlines():
        number, dot, label = line.partition(". ")
        if dot and number.isdigit() and needle in label:
            return number
    raise AssertionError(f"no option with {needle!r} in:\n{reply}")


async def earn(name: str, amount: int, when: datetime, key: str, memo: str, source: str = Source.ACTIVITY) -> int:
    person = await Resident.get(name=name)
    community = await Community.get(id=person.community_id)  # type: ignore[attr-defined]
    issuing = await account(Asset.POINTS, AccountKind.ISSUING, community.id, when)
    posted = await transfer(from_account=issuing, to_account=await points_of(person.id, when), amount=amount,
                            source=source, key=key, now=when, memo=memo)
    return posted.entry.id


async def redeem(name: str, amount: int, when: datetime, key: str, memo: str) -> None:
    person = await Resident.get(name=name)
    escrow = await account(Asset.POINTS, AccountKind.ESCROW, person.community_id, when)  # type: ignore[attr-defined]
    await transfer(from_account=await points_of(person.id, when), to_account=escrow, amount=amount,
                   source=Source.REDEMPTION, key=key, now=when, memo=memo)


async def test_points_after_earning_and_spending(wechat: WeChatPusher) -> None:
    empty = await wechat.say(VOLUNTEER, "积分")
    assert "您的积分：0分" in empty and "还没有积分记录" in empty
    await wechat.say(VOLUNTEER, "取消")

    await earn("孙志愿", 30, at(11, 3), "a1", "助老服务")
    await earn("孙志愿", 12, at(11, 12), "w1", "帮王秀兰买药", Source.WISH)
    await redeem("孙志愿", 10, at(11, 20), "v1", "米家便民超市 东北大米五公斤装一袋")
    await earn("孙志愿", 8, at(10, 28), "a0", "重阳敬老")  # last month: in the balance, not in this month

    reply = await wechat.say(VOLUNTEER, "积分")
    assert len(reply) <= REPLY_MAX_CHARS
    lines = reply.splitlines()
    assert lines[:3] == ["您的积分：40分", "本月（11月）获得：42分", "最近记录："]
    assert lines[3:7] == [  # newest first, long descriptions cut short
        "11月20日 兑换：米家便民超市 东北大… -10",
        "11月12日 微心愿：帮王秀兰买药 +12",
        "11月3日 志愿服务：助老服务 +30",
        "10月28日 志愿服务：重阳敬老 +8",
    ]
    assert "志愿者排行榜：不显示您的姓名" in reply and "排行榜中显示您的姓名" in reply


async def test_the_last_five_entries_and_the_reply_stays_short(wechat: WeChatPusher) -> None:
    for day in range(1, 9):
        await earn("孙志愿", day, at(11, day), f"e{day}", "为社区独居老人上门送餐并陪同聊天一小时")
    reply = await wechat.say(VOLUNTEER, "我的积分")
    assert len(reply) <= REPLY_MAX_CHARS
    shown = [line for line in reply.splitlines() if line.startswith("11月")]
    assert [line.split()[0] for line in shown] == ["11月8日", "11月7日", "11月6日", "11月5日", "11月4日"]
    assert "您的积分：36分" in reply and "本月（11月）获得：36分" in reply


async def test_this_month_is_the_community_month(wechat: WeChatPusher, clock: Any) -> None:
    first = await earn("孙志愿", 20, at(11, 30, 23, 30), "late", "助老服务")  # 15:30 UTC, still November here
    await earn("孙志愿", 5, at(12, 1, 0, 10), "early", "文明劝导")  # 16:10 UTC on 30 November, December here
    clock.advance(at(12, 1, 9) - clock.now())
    reply = await wechat.say(VOLUNTEER, "积分")
    assert "您的积分：25分" in reply and "本月（12月）获得：5分" in reply
    await wechat.say(VOLUNTEER, "取消")
    # a reversal this month of last month's earning lowers this month's figure
    await reverse(first, reason="重复记录", actor_id=None, key="undo-late", now=at(12, 1, 10))
    clock.advance(at(12, 1, 11) - clock.now())
    reply = await wechat.say(VOLUNTEER, "积分")
    assert "您的积分：5分" in reply and "本月（12月）获得：-15分" in reply
    assert "12月1日 冲正：助老服务 -20" in reply


async def test_being_named_in_the_ranking_is_the_volunteers_choice(wechat: WeChatPusher) -> None:
    mijia = await Community.get(name="米家社区")
    await earn("孙志愿", 30, at(11, 3), "a1", "助老服务")
    await earn("张德福", 50, at(11, 4), "a2", "环境整治")
    november = Period(at(11, 1).date(), at(11, 30).date(), SHANGHAI)
    ranked = (await love_figures([mijia], november, "米家社区")).top
    assert [(r.name, r.points) for r in ranked] == [(NAMELESS, 50), (NAMELESS, 30)]  # nobody opted in yet

    reply = await wechat.say(VOLUNTEER, "积分")
    done = await wechat.say(VOLUNTEER, option(reply, "排行榜中显示您的姓名"))
    assert "排行榜中将显示您的姓名" in done
    volunteer = await Resident.get(name="孙志愿")
    assert await named_in_rankings(volunteer.id)
    ranked = (await love_figures([mijia], november, "米家社区")).top
    assert [(r.name, r.points) for r in ranked] == [(NAMELESS, 50), ("孙志愿", 30)]  # 张德福 never opted in

    reply = await wechat.say(VOLUNTEER, "积分")
    assert "志愿者排行榜：显示您的姓名" in reply
    assert "不再显示您的姓名" in await wechat.say(VOLUNTEER, option(reply, "排行榜中不显示您的姓名"))
    assert not await named_in_rankings(volunteer.id)
    assert [r.name for r in (await love_figures([mijia], november, "米家社区")).top] == [NAMELESS, NAMELESS]
    assert await MemberPrefs.filter(resident_id=volunteer.id).count() == 1


async def test_the_hub_shows_the_balance_and_leads_to_points(wechat: WeChatPusher) -> None:
    await earn("孙志愿", 30, at(11, 3), "a1", "助老服务")
    menu = await wechat.say(VOLUNTEER, "菜单")
    hub = await wechat.say(VOLUNTEER, option(menu, "爱心银行"))
    assert "爱心银行：您的积分余额30分" in hub and "我的积分" in hub
    points = await wechat.say(VOLUNTEER, option(hub, "我的积分"))
    assert "您的积分：30分" in points and "本月（11月）获得：30分" in points


async def test_a_proxy_sees_the_elders_points(wechat: WeChatPusher) -> None:
    elder = await Resident.get(name="王秀兰")
    son = await Resident.create(name="王小明", mobile="13955550002", community_id=elder.community_id,  # type: ignore[attr-defined]
                                building_id=elder.building_id, unit="2", room="301", status="verified",  # type: ignore[attr-defined]
                                created_at=at(11, 1))
    await WechatAccount.create(openid="oa-son", channel="oa", resident=son, created_at=at(11, 1))
    link, _ = await request_link(proxy_id=son.id, elder_id=elder.id, relation="子女", now=at(11, 1))
    await decide_link(link_id=link.id, by_id=elder.id, how="elder", approve=True, now=at(11, 1))
    await earn("王秀兰", 20, at(11, 10), "gift", "社区敬老积分", Source.CORRECTION)

    assert "您的积分：0分" in await wechat.say("oa-son", "积分")
    await wechat.say("oa-son", "取消")
    family = await wechat.say("oa-son", "为家人办理")
    assert "为王秀兰办理" in await wechat.say("oa-son", option(family, "为家人办理"))
    reply = await wechat.say("oa-son", "积分")
    assert "（您正在为王秀兰代办）" in reply and "王秀兰的积分：20分" in reply
    assert "11月10日 更正：社区敬老积分 +20" in reply
    done = await wechat.say("oa-son", option(reply, "排行榜中显示王秀兰的姓名"))
    assert "排行榜中将显示王秀兰的姓名" in done
    assert await named_in_rankings(elder.id) and not await named_in_rankings(son.id)
    action = await Action.get(action="love_bank_named")
    assert (action.actor_id, action.subject_id) == (son.id, elder.id)  # type: ignore[attr-defined]


async def test_a_shop_item_is_not_the_members_business(wechat: WeChatPusher) -> None:
    """The partner's side of a used voucher never shows in a member's 积分."""
    await earn("孙志愿", 30, at(11, 3), "a1", "助老服务")
    await redeem("孙志愿", 10, at(11, 20), "v1", "大米")
    person = await Resident.get(name="孙志愿")
    shop = await Shop.get(name="米家便民超市")
    escrow = await account(Asset.POINTS, AccountKind.ESCROW, person.community_id, at(11, 21))  # type: ignore[attr-defined]
    partner = await account(Asset.POINTS, AccountKind.PARTNER, shop.id, at(11, 21))
    await transfer(from_account=escrow, to_account=partner, amount=10, source=Source.REDEMPTION, key="v1:used",
                   now=at(11, 21), memo="大米")
    reply = await wechat.say(VOLUNTEER, "积分")
    assert "您的积分：20分" in reply
    assert [line for line in reply.splitlines() if line.startswith("11月")] == [
        "11月20日 兑换：大米 -10", "11月3日 志愿服务：助老服务 +30"]

