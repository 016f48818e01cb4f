"""微心愿 in chat (through the signed gateway) and through /api/v1: posting (by the resident, a family
proxy, staff for a resident without WeChat), the community's list with masked names, first-come
claims, done → confirmed → points in the claimer's balance once, not done yet, withdrawals, who may
see and do what, the reminders, and the races on PostgreSQL."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from bot.api import create_session
from bot.app import SERVICES
from bot.clock import FrozenClock
from bot.engine import REPLY_MAX_CHARS
from models import wishes
from models.facts import decide, declare
from models.jobs import sweep_due
from models.ledger import Entry, Source, balance, check_books, points_of
from models.love_bank import save_settings
from models.outbox import OutboxMessage
from models.places import Building, Community
from models.proxies import Action, decide_link, request_link
from models.residents import Resident, WechatAccount
from models.roles import Role, grant
from models.wishes import HOW_TO_CLAIM, Wish, WishStatus
from tests.api import MiniProgram
from tests.conftest import requires_servers
from tests.test_cases_chat import answer_prompt, option, pushed_to
from tests.wechat import WeChatPusher

pytestmark = pytest.mark.usefixtures("demo")

VOLUNTEER = "demo-volunteer"  # 孙志愿, volunteer of 米家社区
STAFF = "demo-staff"  # 周社工, community staff of 米家社区
GRID = "demo-grid-1"  # 李网格, grid worker of 第一网格 (1-3号楼)
WISHER = "wish-oa-0"  # 甲居民 of 1号楼 3单元401, on WeChat
NEIGHBOUR = "wish-oa-1"  # 乙居民 of 2号楼, on WeChat, no role
RADIO = "想请人帮忙修一下收音机"
NOW = datetime(2026, 11, 27, 1, 0, tzinfo=UTC)


async def resident(name: str, building: str, openid: str | None, *, room: str = "401") -> Resident:
    b = await Building.get(name=building)
    person = await Resident.create(name=name, mobile=f"1393344{await Resident.all().count():04d}",
                                   community_id=b.community_id, building=b, unit="3", room=room,  # type: ignore[attr-defined]
                                   status="verified", created_at=NOW)
    if openid is not None:
        await WechatAccount.create(openid=openid, channel="oa", resident=person, created_at=NOW)
    return person


async def people() -> dict[str, Resident]:
    return {"wisher": await resident("甲居民", "1号楼", WISHER),
            "neighbour": await resident("乙居民", "2号楼", NEIGHBOUR),
            "volunteer": await Resident.get(name="孙志愿"), "staff": await Resident.get(name="周社工")}


async def points(name: str) -> int:
    person = await Resident.get(name=name)
    return await balance(await points_of(person.id, NOW))


async def post_in_chat(wechat: WeChatPusher, openid: str, text: str = RADIO) -> list[str]:
    replies = [await wechat.say(openid, "许愿")]
    assert "请写下您的心愿" in replies[-1]
    replies.append(await wechat.say(openid, text))
    assert f"心愿：{text}" in replies[-1] and "10积分" in replies[-1]
    replies.append(await wechat.say(openid, "是"))
    return replies


async def claim_in_chat(wechat: WeChatPusher, openid: str, needle: str = "收音机") -> list[str]:
    listing = await wechat.say(openid, "心愿")
    shown = await wechat.say(openid, option(listing, needle))
    return [listing, shown, await wechat.say(openid, "是")]


async def fulfil_in_chat(wechat: WeChatPusher, openid: str, needle: str = "收音机") -> list[str]:
    listing = await wechat.say(openid, "我认领的")
    card = await wechat.say(openid, option(listing, needle))
    return [listing, card, await wechat.say(openid, option(card, "已完成"))]


async def times_pushed(openid: str, needle: str) -> int:
    rows = await OutboxMessage.filter(openid=openid).order_by("id")
    return sum(needle in str(row.payload.get("content", "")) for row in rows)


# ---------------------------------------------------------------------------- the whole life in chat


async def test_posted_claimed_fulfilled_confirmed_in_chat_and_the_points_reach_the_claimer(
    wechat: WeChatPusher, clock: FrozenClock,
) -> None:
    await people()
    replies = await post_in_chat(wechat, WISHER)
    wish = await Wish.get()
    assert f"已发布心愿（编号{wish.id}）" in replies[-1]
    assert (wish.text, wish.points, wish.status) == (RADIO, 10, WishStatus.OPEN)

    # the community sees the wish with the name masked and the building only
    clock.advance(timedelta(hours=1))
    claimed = await claim_in_chat(wechat, VOLUNTEER)
    listing, shown, done = claimed
    assert "甲**·1号楼：想请人帮忙修一下收音机（10分）" in listing
    assert "甲居民" not in listing + shown and "401" not in listing + shown and "3单元" not in listing + shown
    assert "认领吗" in shown and "10积分" in shown
    assert "认领成功" in done and "许愿人：甲居民" in done and "1号楼3单元401室" in done
    assert "已由孙志愿认领" in await pushed_to(WISHER)
    replies += claimed

    # the volunteer says it is done; the wisher answers the pushed question
    clock.advance(timedelta(days=1))
    fulfilled = await fulfil_in_chat(wechat, VOLUNTEER)
    assert "1号楼3单元401室" in fulfilled[1] and "已请甲居民确认" in fulfilled[-1]
    replies += fulfilled
    assert await points("孙志愿") == 0
    answer = await answer_prompt(wechat, WISHER, "1")  # 1. 已实现
    replies.append(answer)
    assert "已确认心愿实现" in answer and "已为孙志愿记入10积分" in answer
    assert await points("孙志愿") == 10
    wish = await Wish.get(id=wish.id)
    assert wish.status == WishStatus.CONFIRMED and wish.confirm_note == "居民确认"
    entry = await Entry.get(id=wish.entry_id)
    assert (entry.source, entry.ref, entry.key, entry.amount, entry.memo) == (
        Source.WISH, f"wish:{wish.id}", f"wish:{wish.id}:points", 10, RADIO)
    assert "已为您记入10积分" in await pushed_to(VOLUNTEER)
    assert (await check_books())["points"] == 0
    # confirming again (from 我的心愿) changes nothing
    mine = await wechat.say(WISHER, "我的心愿")
    assert "已实现" in mine
    assert "已实现" in await wechat.say(WISHER, option(mine, "收音机"))
    assert await points("孙志愿") == 10
    assert all(len(r) <= REPLY_MAX_CHARS for r in replies)


async def test_not_done_yet_goes_back_to_the_claimer_with_the_reason(wechat: WeChatPusher) -> None:
    await people()
    await post_in_chat(wechat, WISHER)
    await claim_in_chat(wechat, VOLUNTEER)
    await fulfil_in_chat(wechat, VOLUNTEER)
    assert "还差什么" in await answer_prompt(wechat, WISHER, "还没有实现")
    assert "已转告孙志愿" in await wechat.say(WISHER, "还是没有声音")
    wish = await Wish.get()
    assert (wish.status, wish.reject_reason, wish.fulfilled_at) == (WishStatus.CLAIMED, "还是没有声音", None)
    assert "还没有实现：还是没有声音" in await pushed_to(VOLUNTEER)
    card = await wechat.say(VOLUNTEER, option(await wechat.say(VOLUNTEER, "我认领的"), "收音机"))
    assert "TA说还差：还是没有声音" in card and "已完成" in card
    assert await points("孙志愿") == 0
    # done again, then confirmed from 我的心愿
    await wechat.say(VOLUNTEER, option(card, "已完成"))
    mine = await wechat.say(WISHER, "我的心愿")
    card = await wechat.say(WISHER, option(mine, "收音机"))
    assert "孙志愿" in card and "实现了吗" in card
    assert "已为孙志愿记入10积分" in await wechat.say(WISHER, option(card, "已实现"))
    assert await points("孙志愿") == 10


async def test_a_plain_resident_sees_the_list_and_how_to_become_a_volunteer(wechat: WeChatPusher) -> None:
    await people()
    await post_in_chat(wechat, WISHER)
    seen = await wechat.say(NEIGHBOUR, "心愿")
    assert "甲**·1号楼" in seen and HOW_TO_CLAIM in seen and "请回复序号" not in seen
    assert "请写下您的心愿" in await wechat.say(NEIGHBOUR, "许愿")  # nothing was left waiting: 许愿 starts at once
    await wechat.say(NEIGHBOUR, "取消")


async def test_a_verified_party_member_may_claim(wechat: WeChatPusher) -> None:
    folks = await people()
    await post_in_chat(wechat, WISHER)
    neighbour = folks["neighbour"]
    pending = await declare(resident_id=neighbour.id, code="party_member", now=NOW, by_id=neighbour.id)
    assert HOW_TO_CLAIM in await wechat.say(NEIGHBOUR, "心愿")  # declared, not verified yet
    await decide(fact_id=pending.id, by_id=folks["staff"].id, approve=True, now=NOW)
    assert "认领成功" in (await claim_in_chat(wechat, NEIGHBOUR))[-1]


async def test_the_wisher_withdraws_a_claimed_wish_and_the_claimer_is_told(wechat: WeChatPusher) -> None:
    await people()
    await post_in_chat(wechat, WISHER)
    await claim_in_chat(wechat, VOLUNTEER)
    mine = await wechat.say(WISHER, "我的心愿")
    assert "收音机：孙志愿已认领" in mine
    card = await wechat.say(WISHER, option(mine, "收音机"))
    asked = await wechat.say(WISHER, option(card, "撤回心愿"))
    assert "认领的志愿者会收到通知" in asked
    assert "已撤回" in await wechat.say(WISHER, "是")
    assert (await Wish.get()).status == WishStatus.CANCELLED
    assert "已撤回（居民撤回），不用再去了" in await pushed_to(VOLUNTEER)
    assert "您现在没有认领的心愿" in await wechat.say(VOLUNTEER, "我认领的")


async def test_the_claimer_gives_it_back_and_it_is_open_again(wechat: WeChatPusher) -> None:
    await people()
    await post_in_chat(wechat, WISHER)
    await claim_in_chat(wechat, VOLUNTEER)
    card = await wechat.say(VOLUNTEER, option(await wechat.say(VOLUNTEER, "我认领的"), "收音机"))
    assert "确定放弃吗" in await wechat.say(VOLUNTEER, option(card, "放弃认领"))
    assert "已放弃认领" in await wechat.say(VOLUNTEER, "是")
    wish = await Wish.get()
    assert (wish.status, wish.claimed_by_id) == (WishStatus.OPEN, None)
    assert "孙志愿放弃了认领您的心愿" in await pushed_to(WISHER)
    assert "甲**·1号楼" in await wechat.say(VOLUNTEER, "心愿")


async def test_three_unfinished_wishes_at_most(wechat: WeChatPusher) -> None:
    await people()
    for i in range(3):
        assert "已发布心愿" in (await post_in_chat(wechat, WISHER, f"第{i + 1}个心愿：请人陪我聊聊天"))[-1]
    assert "已有3个心愿还没实现" in await wechat.say(WISHER, "许愿")
    assert await Wish.all().count() == 3


async def test_a_family_member_posts_for_an_elder_without_wechat_and_confirms_for_her(wechat: WeChatPusher) -> None:
    from tests.test_family import SON, SON_BINDS, run

    await run(wechat, SON, SON_BINDS)
    son, elder = await Resident.get(name="李建国"), await Resident.get(name="王秀兰")
    link, _ = await request_link(proxy_id=son.id, elder_id=elder.id, relation="子女", now=NOW)
    await decide_link(link_id=link.id, by_id=(await Resident.get(name="李网格")).id, how="staff", approve=True, now=NOW)
    await wechat.say(SON, "亲情代理")
    assert "从现在起" in await wechat.say(SON, "为家人办理")
    asked = await wechat.say(SON, "许愿")
    assert "（为王秀兰许愿）" in asked
    await wechat.say(SON, "想请人帮忙换个灯泡")
    assert "已为王秀兰发布心愿" in await wechat.say(SON, "是")
    wish = await Wish.get()
    assert (wish.resident_id, wish.posted_by_id) == (elder.id, son.id)
    action = await Action.get(action="post_wish")
    assert (action.actor_id, action.subject_id) == (son.id, elder.id)  # type: ignore[attr-defined]
    assert "换个灯泡" in await wechat.say(SON, "我的心愿")
    await wechat.say(SON, "取消")
    await claim_in_chat(wechat, VOLUNTEER, "灯泡")
    assert "王秀兰的心愿“想请人帮忙换个灯泡”已由孙志愿认领" in await pushed_to(SON)
    await fulfil_in_chat(wechat, VOLUNTEER, "灯泡")
    assert "已为孙志愿记入10积分" in await answer_prompt(wechat, SON, "已实现")
    wish = await Wish.get()
    assert (wish.status, wish.confirmed_by_id, wish.confirm_note) == (WishStatus.CONFIRMED, son.id, "家人代为确认")
    assert await points("孙志愿") == 10


async def test_staff_post_for_a_resident_without_wechat_and_confirm_for_him(wechat: WeChatPusher) -> None:
    entered = [await wechat.say(STAFF, "代许心愿")]
    assert "手机号" in entered[-1]
    assert "没有登记这个手机号" in await wechat.say(STAFF, "13912345678")
    entered.append(await wechat.say(STAFF, "13904180012"))  # 张德福, 2号楼, no WeChat
    assert "为张德福（2号楼）许愿" in entered[-1]
    entered.append(await wechat.say(STAFF, "想请人帮忙读读报纸"))
    entered.append(await wechat.say(STAFF, "是"))
    assert "已为张德福发布心愿" in entered[-1] and "TA没有微信" in entered[-1]
    zhang = await Resident.get(name="张德福")
    wish = await Wish.get()
    assert (wish.resident_id, wish.posted_by_id) == (zhang.id, (await Resident.get(name="周社工")).id)
    await claim_in_chat(wechat, VOLUNTEER, "报纸")
    assert "张德福的心愿“想请人帮忙读读报纸”已由孙志愿认领" in await pushed_to(STAFF)
    await fulfil_in_chat(wechat, VOLUNTEER, "报纸")
    # the grid worker of his building, who can visit, may confirm for him through 心愿管理
    listing = await wechat.say(GRID, "心愿管理")
    assert "张德福·想请人帮忙读读报纸：待确认实现（可代为确认）" in listing
    card = await wechat.say(GRID, option(listing, "张德福"))
    assert "2号楼1单元502室" in card and "代为确认实现" in card
    assert "请先向张德福核实" in await wechat.say(GRID, option(card, "代为确认实现"))
    assert "已为孙志愿记入10积分" in await wechat.say(GRID, "是")
    wish = await Wish.get()
    assert (wish.status, wish.confirm_note) == (WishStatus.CONFIRMED, "居民没有微信，工作人员代为确认")
    assert await points("孙志愿") == 10
    assert all(len(r) <= REPLY_MAX_CHARS for r in entered)


async def test_staff_withdraw_a_wish_with_a_reason(wechat: WeChatPusher) -> None:
    await people()
    await post_in_chat(wechat, WISHER, "想找人帮我代购香烟")
    await claim_in_chat(wechat, VOLUNTEER, "香烟")
    listing = await wechat.say(STAFF, "心愿管理")
    card = await wechat.say(STAFF, option(listing, "甲居民"))
    assert "撤下" in card
    assert "撤下的原因" in await wechat.say(STAFF, option(card, "撤下"))
    assert "确定撤下" in await wechat.say(STAFF, "不属于微心愿服务范围")
    assert "已撤下" in await wechat.say(STAFF, "是")
    wish = await Wish.get()
    assert (wish.status, wish.cancel_reason) == (WishStatus.CANCELLED, "不属于微心愿服务范围")
    assert "已被社区撤下：不属于微心愿服务范围" in await pushed_to(WISHER)
    assert "不用再去了" in await pushed_to(VOLUNTEER)
    assert "香烟" not in await wechat.say(NEIGHBOUR, "心愿")


# ---------------------------------------------------------------------------- reminders


async def test_a_claim_left_undone_reminds_the_claimer_and_an_unconfirmed_one_the_wisher_once(
    wechat: WeChatPusher, clock: FrozenClock,
) -> None:
    await people()
    await post_in_chat(wechat, WISHER)
    await claim_in_chat(wechat, VOLUNTEER)
    clock.advance(timedelta(days=6, hours=23))
    await sweep_due(clock.now())
    assert await times_pushed(VOLUNTEER, "已经7天了") == 0
    clock.advance(timedelta(hours=1, minutes=1))
    await sweep_due(clock.now())
    await sweep_due(clock.now() + timedelta(minutes=1))
    assert await times_pushed(VOLUNTEER, "已经7天了") == 1
    await fulfil_in_chat(wechat, VOLUNTEER)
    clock.advance(timedelta(days=3, minutes=1))
    await sweep_due(clock.now())
    await sweep_due(clock.now() + timedelta(days=1))
    assert await times_pushed(WISHER, "3天前说您的心愿") == 1
    assert await times_pushed(VOLUNTEER, "已经7天了") == 1  # done: no more reminders of the claim


async def test_no_reminder_once_the_wish_moved_on(wechat: WeChatPusher, clock: FrozenClock) -> None:
    await people()
    await post_in_chat(wechat, WISHER)
    await claim_in_chat(wechat, VOLUNTEER)
    clock.advance(timedelta(days=2))
    await fulfil_in_chat(wechat, VOLUNTEER)
    await answer_prompt(wechat, WISHER, "1")
    clock.advance(timedelta(days=10))
    await sweep_due(clock.now())
    assert await times_pushed(VOLUNTEER, "已经7天了") == 0
    assert await times_pushed(WISHER, "3天前说") == 0


async def test_the_reminder_of_a_wisher_nobody_can_reach_goes_to_the_grid_worker(clock: FrozenClock) -> None:
    zhang, volunteer = await Resident.get(name="张德福"), await Resident.get(name="孙志愿")
    wish, _ = await wishes.post_wish(wisher=zhang, actor=await Resident.get(name="李网格"), text="想请人读报纸",
                                     now=clock.now(), channel="api")
    await wishes.claim_wish(wish.id, volunteer, clock.now(), channel="api")
    await wishes.fulfil_wish(wish.id, volunteer, clock.now(), channel="api")
    # the grid worker who posted it is asked at once (he speaks for a resident without WeChat)
    assert "孙志愿说张德福的心愿“想请人读报纸”已经实现了" in await pushed_to(GRID)
    clock.advance(timedelta(days=3, minutes=1))
    await sweep_due(clock.now())
    assert await times_pushed(GRID, "3天前说张德福的心愿") == 1


# ---------------------------------------------------------------------------- the API


async def phone(client: Any, name: str) -> MiniProgram:
    """A mini-program session of a person (a demo person, or one made by ``resident``)."""
    person = await Resident.get(name=name)
    account, _ = await WechatAccount.get_or_create(openid=f"mp-wish-{person.id}", defaults={
        "channel": "mp", "resident": person, "created_at": NOW})
    mp = MiniProgram(client, account.openid)
    mp.token = await create_session(client.app[SERVICES].store, account, 1)
    return mp


async def post(mp: MiniProgram, body: dict[str, Any], key: str | None = None) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {mp.token}"} | ({"Idempotency-Key": key} if key else {})
    resp = await mp.client.post("/api/v1/wishes", json=body, headers=headers)
    return resp.status, await resp.json()


async def test_the_whole_life_through_the_api(client: Any) -> None:
    await people()
    me, volunteer = await phone(client, "甲居民"), await phone(client, "孙志愿")
    neighbour = await phone(client, "乙居民")
    status, wish = await post(me, {"text": RADIO}, key="tap-1")
    assert status == 201
    assert (wish["view"], wish["wisher"], wish["points"], wish["status"], wish["actions"]) == (
        "wisher", "甲居民", 10, "open", ["cancel"])
    assert wish["address"] == "1号楼3单元401室"
    again = await post(me, {"text": RADIO}, key="tap-1")  # the answer was lost: the same wish
    assert again == (201, wish)
    other = await post(me, {"text": "另一个心愿"}, key="tap-1")
    assert other[0] == 422 and other[1]["fields"][0]["field"] == "header.Idempotency-Key"
    double_tap = await asyncio.gather(*[post(me, {"text": "想请人陪我散散步"}, key="tap-2") for _ in range(3)])
    assert {status for status, _ in double_tap} == {201} and len({w["id"] for _, w in double_tap}) == 1
    assert await Wish.all().count() == 2
    assert (await me.call("POST", f"/wishes/{double_tap[0][1]['id']}/cancel", {})).status == 200

    board = (await volunteer.call("GET", "/wishes")).body
    assert board["can_claim"] is True and board["hint"] is None
    [seen] = board["items"]
    assert (seen["view"], seen["wisher"], seen["building"], seen["actions"]) == ("public", "甲**", "1号楼", ["claim"])
    assert seen["address"] is None and seen["wisher_id"] is None and seen["claimer"] is None
    plain = (await neighbour.call("GET", "/wishes")).body
    assert plain["can_claim"] is False and plain["hint"] == HOW_TO_CLAIM and plain["items"][0]["actions"] == []
    refused = await neighbour.call("POST", f"/wishes/{wish['id']}/claim")
    assert refused.status == 409 and refused.body["message"] == HOW_TO_CLAIM
    assert (await me.call("POST", f"/wishes/{wish['id']}/claim")).status == 409  # not one's own

    claimed = await volunteer.call("POST", f"/wishes/{wish['id']}/claim")
    assert claimed.status == 200
    assert (claimed.body["view"], claimed.body["wisher"], claimed.body["address"], claimed.body["actions"]) == (
        "claimer", "甲居民", "1号楼3单元401室", ["release", "fulfil"])
    assert (await volunteer.call("POST", f"/wishes/{wish['id']}/claim")).status == 200  # a retry: the same claim
    assert (await volunteer.call("GET", "/wishes")).body["items"] == []
    assert [w["id"] for w in (await volunteer.call("GET", "/wishes", claimed=1)).body["items"]] == [wish["id"]]
    early = await me.call("POST", f"/wishes/{wish['id']}/confirm")
    assert early.status == 409 and "现在不需要确认" in early.body["message"]

    done = await volunteer.call("POST", f"/wishes/{wish['id']}/fulfil")
    assert done.status == 200 and done.body["status"] == "fulfilled" and done.body["actions"] == []
    assert (await volunteer.call("POST", f"/wishes/{wish['id']}/confirm")).status == 409  # the claimer cannot
    mine = (await me.call("GET", "/wishes", mine=1)).body["items"]
    assert [(w["id"], w["claimer"], w["actions"]) for w in mine] == [  # live ones first
        (wish["id"], "孙志愿", ["confirm", "reject"]), (double_tap[0][1]["id"], None, [])]
    confirmed = await me.call("POST", f"/wishes/{wish['id']}/confirm")
    assert confirmed.status == 200 and confirmed.body["status"] == "confirmed"
    assert confirmed.body["entry_id"] is not None and confirmed.body["confirm_note"] == "居民确认"
    twice = await me.call("POST", f"/wishes/{wish['id']}/confirm")
    assert twice.status == 200 and twice.body["entry_id"] == confirmed.body["entry_id"]
    assert await points("孙志愿") == 10
    assert await Entry.filter(source=Source.WISH).count() == 1


async def test_the_points_are_those_of_the_community_when_the_wish_was_posted(client: Any) -> None:
    await people()
    me, volunteer = await phone(client, "甲居民"), await phone(client, "孙志愿")
    mijia = await Community.get(name="米家社区")
    await save_settings(mijia.id, now=NOW, actor_id=None, wish_points=15)
    _, wish = await post(me, {"text": RADIO})
    await save_settings(mijia.id, now=NOW, actor_id=None, wish_points=30)
    assert wish["points"] == 15
    for step in ("claim", "fulfil"):
        assert (await volunteer.call("POST", f"/wishes/{wish['id']}/{step}")).status == 200
    assert (await me.call("POST", f"/wishes/{wish['id']}/confirm")).status == 200
    assert await points("孙志愿") == 15


async def test_not_done_and_withdrawn_through_the_api(client: Any) -> None:
    await people()
    me, volunteer, staff = await phone(client, "甲居民"), await phone(client, "孙志愿"), await phone(client, "周社工")
    _, wish = await post(me, {"text": RADIO})
    await volunteer.call("POST", f"/wishes/{wish['id']}/claim")
    await volunteer.call("POST", f"/wishes/{wish['id']}/fulfil")
    assert (await me.call("POST", f"/wishes/{wish['id']}/reject", {"reason": ""})).status == 422
    back = await me.call("POST", f"/wishes/{wish['id']}/reject", {"reason": "还是没有声音"})
    assert back.status == 200 and back.body["status"] == "claimed" and back.body["reject_reason"] == "还是没有声音"
    # staff must give a reason; the wisher need not
    assert (await staff.call("POST", f"/wishes/{wish['id']}/cancel", {})).status == 409
    withdrawn = await staff.call("POST", f"/wishes/{wish['id']}/cancel", {"reason": "重复发布"})
    assert withdrawn.status == 200 and withdrawn.body["status"] == "cancelled"
    assert withdrawn.body["cancel_reason"] == "重复发布" and withdrawn.body["view"] == "staff"
    gone = await volunteer.call("GET", f"/wishes/{wish['id']}")
    assert gone.status == 200 and gone.body["address"] is None  # the claimer need not go any more
    _, second = await post(me, {"text": "想请人陪我下象棋"})
    assert (await me.call("POST", f"/wishes/{second['id']}/cancel", {})).body["cancel_reason"] == "居民撤回"
    assert (await volunteer.call("GET", f"/wishes/{second['id']}")).status == 404  # withdrawn: not public


async def test_staff_confirm_for_a_wisher_with_wechat_only_after_seven_days(client: Any, clock: FrozenClock) -> None:
    await people()
    me, volunteer, grid = await phone(client, "甲居民"), await phone(client, "孙志愿"), await phone(client, "李网格")
    _, wish = await post(me, {"text": RADIO})
    await volunteer.call("POST", f"/wishes/{wish['id']}/claim")
    await volunteer.call("POST", f"/wishes/{wish['id']}/fulfil")
    early = await grid.call("POST", f"/wishes/{wish['id']}/confirm")
    assert early.status == 409 and "7天" in early.body["message"]
    scope = (await grid.call("GET", "/wishes", in_scope=1)).body["items"]
    assert [(w["id"], w["actions"]) for w in scope] == [(wish["id"], ["cancel"])]
    clock.advance(timedelta(days=7))
    late = await grid.call("POST", f"/wishes/{wish['id']}/confirm")
    assert late.status == 200 and late.body["confirm_note"] == "居民7天未确认，工作人员代为确认"
    assert await points("孙志愿") == 10


async def test_staff_post_for_a_resident_without_wechat_and_confirm_at_once(client: Any) -> None:
    staff, volunteer = await phone(client, "周社工"), await phone(client, "孙志愿")
    zhang = await Resident.get(name="张德福")
    status, wish = await post(staff, {"text": "想请人帮忙读读报纸", "for_resident_id": zhang.id})
    assert status == 201 and wish["view"] == "staff" and wish["posted_by"] == "周社工"
    await volunteer.call("POST", f"/wishes/{wish['id']}/claim")
    await volunteer.call("POST", f"/wishes/{wish['id']}/fulfil")
    confirmed = await staff.call("POST", f"/wishes/{wish['id']}/confirm")
    assert confirmed.status == 200 and confirmed.body["confirm_note"] == "居民没有微信，工作人员代为确认"
    assert await points("孙志愿") == 10
    assert (await staff.call("GET", "/wishes", mine=1, for_resident_id=zhang.id)).body["items"][0]["id"] == wish["id"]


async def test_who_may_see_and_post(client: Any) -> None:
    await people()
    me, volunteer = await phone(client, "甲居民"), await phone(client, "孙志愿")
    xinqiu_person = await resident("丙居民", "东1栋", None)
    stranger = await phone(client, xinqiu_person.name)
    _, wish = await post(me, {"text": RADIO})
    assert (await stranger.call("GET", f"/wishes/{wish['id']}")).status == 404
    assert (await stranger.call("POST", f"/wishes/{wish['id']}/claim")).status == 404
    assert (await stranger.call("GET", "/wishes")).body["items"] == []
    # another volunteer's community: the roles decide (a volunteer of 新邱社区 sees its wishes, not 米家's)
    await grant(resident_id=xinqiu_person.id, role=Role.VOLUNTEER,
                scope_id=(await Community.get(name="新邱社区")).id, now=NOW)
    assert (await stranger.call("POST", f"/wishes/{wish['id']}/claim")).status == 404
    # posting for someone one neither acts for nor looks after: 404, nothing made
    for_other = await post(volunteer, {"text": RADIO, "for_resident_id": (await Resident.get(name="甲居民")).id})
    assert for_other[0] == 404
    assert (await volunteer.call("GET", "/wishes", mine=1, for_resident_id=xinqiu_person.id)).status == 404
    assert (await me.call("GET", "/wishes", mine=1, claimed=1)).status == 422
    assert await Wish.all().count() == 1


# ---------------------------------------------------------------------------- races (PostgreSQL)


@requires_servers
async def test_twenty_volunteers_claim_one_wish_at_once_and_one_gets_it(client: Any) -> None:
    await people()
    me = await phone(client, "甲居民")
    mijia = await Community.get(name="米家社区")
    claimers = []
    for i in range(20):
        person = await resident(f"志愿者{i:02d}", "3号楼", None, room=f"5{i:02d}")
        await grant(resident_id=person.id, role=Role.VOLUNTEER, scope_id=mijia.id, now=NOW)
        claimers.append(await phone(client, person.name))
    _, wish = await post(me, {"text": RADIO})
    answers = await asyncio.gather(*[c.call("POST", f"/wishes/{wish['id']}/claim") for c in claimers])
    won = [a for a in answers if a.status == 200]
    assert len(won) == 1 and sorted({a.status for a in answers}) == [200, 409]
    assert all("已被别人认领" in a.body["message"] for a in answers if a.status == 409)
    stored = await Wish.get(id=wish["id"])
    assert stored.status == WishStatus.CLAIMED
    assert (await Resident.get(id=stored.claimed_by_id)).name == won[0].body["claimer"]
    assert await times_pushed(WISHER, "认领") == 1


@requires_servers
async def test_a_wish_confirmed_many_times_at_once_credits_its_points_once(client: Any) -> None:
    await people()
    me, volunteer, staff = await phone(client, "甲居民"), await phone(client, "孙志愿"), await phone(client, "周社工")
    _, wish = await post(me, {"text": RADIO})
    await volunteer.call("POST", f"/wishes/{wish['id']}/claim")
    await volunteer.call("POST", f"/wishes/{wish['id']}/fulfil")
    answers = await asyncio.gather(*[me.call("POST", f"/wishes/{wish['id']}/confirm") for _ in range(10)])
    assert {a.status for a in answers} == {200}
    assert len({a.body["entry_id"] for a in answers}) == 1
    assert await points("孙志愿") == 10
    assert await Entry.filter(key=f"wish:{wish['id']}:points").count() == 1
    assert await times_pushed(VOLUNTEER, "已为您记入10积分") == 1
    assert (await check_books())["points"] == 0
    # staff confirming afterwards changes nothing either
    assert (await staff.call("POST", f"/wishes/{wish['id']}/confirm")).status == 200
    assert await points("孙志愿") == 10


async def test_confirming_twice_in_a_row_credits_once(client: Any) -> None:
    await people()
    wisher, volunteer = await Resident.get(name="甲居民"), await Resident.get(name="孙志愿")
    wish, _ = await wishes.post_wish(wisher=wisher, actor=wisher, text=RADIO, now=NOW, channel="api")
    await wishes.claim_wish(wish.id, volunteer, NOW, channel="api")
    await wishes.fulfil_wish(wish.id, volunteer, NOW, channel="api")
    first = await wishes.confirm_wish(wish.id, wisher, NOW, channel="api")
    second = await wishes.confirm_wish(wish.id, wisher, NOW, channel="api")
    assert first.entry_id == second.entry_id is not None
    assert await points("孙志愿") == 10


# ---------------------------------------------------------------------------- for tests/test_api_matrix.py


async def matrix_wishes(me: Resident, elder: Resident, volunteer: Resident, now: datetime) -> dict[str, int]:
    """The authorization matrix's wishes: the elder's open one and one the volunteer said is done, and
    a wish of ``me`` (who acts for the elder) the volunteer claimed."""
    open_wish, _ = await wishes.post_wish(wisher=elder, actor=elder, text="想请人帮忙修收音机", now=now, channel="api")
    done, _ = await wishes.post_wish(wisher=elder, actor=elder, text="想请人帮忙换灯泡", now=now, channel="api")
    claimed, _ = await wishes.post_wish(wisher=me, actor=me, text="想请人陪我下象棋", now=now, channel="api")
    for wish in (done, claimed):
        await wishes.claim_wish(wish.id, volunteer, now, channel="api")
    await wishes.fulfil_wish(done.id, volunteer, now, channel="api")
    return {"wish_open": open_wish.id, "wish_claimed": claimed.id, "wish_done": done.id}
