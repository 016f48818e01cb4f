"""先锋骑士 in chat through /wechat: the demo elder 刘桂芳 (5号楼, lives alone) and a neighbour in
4号楼 book tomorrow's lunch delivered; at the cut-off their bookings become one route; the rider
骑士小王 claims it in chat, rings at each door and marks each stop (a photo, or 跳过) and earns the
points once. Not home at 刘桂芳's door raises a welfare alert that the grid worker 赵网格 closes with
安全确认 (her son, her family proxy, hears of both). Plus what must not happen: a second rider
claiming a taken route, input the bot does not understand, a non-rider opening the routes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from bot.app import SERVICES
from bot.clock import FrozenClock
from bot.engine import REPLY_MAX_CHARS
from models import canteen_booking as booking_ops
from models.canteen import Booking, BookingStatus, Menu, Mode
from models.canteen_wallet import top_up as top_up_wallet
from models.jobs import sweep_due
from models.ledger import Entry, Source, balance, points_of
from models.media import StoredMedia
from models.outbox import OutboxMessage, Priority
from models.places import Building, Canteen, Community
from models.proxies import decide_link, request_link
from models.residents import Mobility, Resident, ResidentStatus, WechatAccount
from models.riders import Route, RouteState, RouteStop, StopState, WelfareAlert
from models.roles import Role, grant
from tests.test_canteen_chat import publish_tomorrows_lunch, top_up
from tests.test_case_photos import picture
from tests.test_cases_chat import option, pushed_to
from tests.wechat import WeChatPusher

pytestmark = pytest.mark.usefixtures("demo")

COUNTER = "demo-canteen"  # 陈食堂, canteen staff of 米家社区幸福食堂
ELDER = "demo-elder"  # 刘桂芳, 5号楼1单元201, 80, verified lives alone
RIDER = "demo-rider"  # 骑士小王, pioneer rider of 米家社区
GRID = "demo-grid-2"  # 赵网格, grid worker of 第二网格 (4号楼, 5号楼)
OTHER_GRID = "demo-grid-1"  # 李网格, grid worker of 第一网格
SON = "o-liu-son"  # 刘建国, 刘桂芳's son and family proxy
NOW = datetime(2026, 11, 27, 1, 0, tzinfo=UTC)  # 周五 09:00 in Shanghai
CUTOFF = datetime(2026, 11, 28, 1, 30, tzinfo=UTC)  # 周六 09:30, the lunch's cut-off; serving from 11:00
STOPS = "1. 第1户 4号楼2单元302室 钱**\n2. 第2户 5号楼1单元201室 刘**（软食；过敏：花生）"


async def say(wechat: WeChatPusher, openid: str, text: str) -> str:
    reply = await wechat.say(openid, text)
    assert len(reply) <= REPLY_MAX_CHARS, reply
    return reply


async def run_lines(wechat: WeChatPusher, openid: str, lines: list[str]) -> str:
    reply = ""
    for line in lines:
        reply = await say(wechat, openid, line)
    return reply


async def photo(wechat: WeChatPusher, openid: str, media_id: str) -> str:
    reply = await wechat.image(openid, media_id=media_id)
    assert len(reply) <= REPLY_MAX_CHARS, reply
    return reply


async def points(name: str) -> int:
    person = await Resident.get(name=name)
    return await balance(await points_of(person.id, NOW))


async def on_wechat(name: str, mobile: str, openid: str, building: str, unit: str, room: str) -> Resident:
    community = await Community.get(name="米家社区")
    person = await Resident.create(name=name, mobile=mobile, community=community,
                                   building=await Building.get(name=building), unit=unit, room=room,
                                   status=ResidentStatus.VERIFIED, created_at=NOW, verified_at=NOW)
    await WechatAccount.create(openid=openid, channel="oa", resident=person, created_at=NOW)
    return person


async def lunch_delivered(wechat: WeChatPusher, clock: FrozenClock) -> Menu:
    """Tomorrow's lunch, booked delivered by 刘桂芳 in chat (soft food, peanuts) and by 钱奶奶 of 4号楼
    (needs delivery, no WeChat: booked at her own request through the domain); then the cut-off."""
    liu = await Resident.get(name="刘桂芳")
    counter = await Resident.get(name="陈食堂")
    await booking_ops.set_diner(resident_id=liu.id, by_id=counter.id, now=NOW, delivery_approved=True)
    qian = await Resident.create(name="钱奶奶", mobile="13904180091", community_id=liu.community_id,  # type: ignore[attr-defined]
                                 building=await Building.get(name="4号楼"), unit="2", room="302",
                                 mobility=Mobility.NEEDS_DELIVERY, status=ResidentStatus.VERIFIED,
                                 created_at=NOW, verified_at=NOW)
    assert (await top_up(wechat, "13904180032", "150", "R-LIU")).startswith("充值成功")
    assert (await top_up(wechat, "13904180091", "150", "R-QIAN")).startswith("充值成功")
    assert (await publish_tomorrows_lunch(wechat)).startswith("已发布11月28日（周六）午餐菜单")
    await say(wechat, ELDER, "饮食需求")
    await say(wechat, ELDER, "软食")
    assert "软食；过敏：花生" in await say(wechat, ELDER, "花生")

    assert "1. 午餐" in await say(wechat, ELDER, "订餐")
    assert await say(wechat, ELDER, "1") == "堂食还是送餐上门？\n1. 到食堂吃（堂食）\n2. 送餐上门\n请回复序号。"
    assert "午餐，送餐" in await say(wechat, ELDER, "2")
    assert (await say(wechat, ELDER, "是")).startswith("预订成功！11月28日（周六）午餐，送餐")
    menu = await Menu.get(day=CUTOFF.date(), meal="lunch")
    await booking_ops.book(menu_id=menu.id, resident_id=qian.id, by_id=qian.id, mode=Mode.DELIVERY, now=NOW)

    clock.set(CUTOFF)
    await sweep_due(clock.now())
    assert await Booking.filter(menu_id=menu.id, mode=Mode.DELIVERY, status=BookingStatus.CHARGED).count() == 2
    return menu


async def claimed(wechat: WeChatPusher, openid: str = RIDER) -> str:
    """送餐路线 → the first route → 是: the reply after the claim."""
    assert "1. 今天午餐 11:00出发·4号楼、5号楼·2户" in await say(wechat, openid, "送餐路线")
    assert "认领吗？" in await say(wechat, openid, "1")
    return await say(wechat, openid, "是")


# ---------------------------------------------------------------------------- the acceptance path


async def test_a_delivery_booking_becomes_a_stop_the_rider_claims_delivers_and_earns_points(
        client: Any, wechat: WeChatPusher, clock: FrozenClock) -> None:
    client.app[SERVICES].fake.add_media("m-meal", picture("JPEG", "red"))
    menu = await lunch_delivered(wechat, clock)

    # the cut-off made one route of the two neighbouring buildings of 第二网格, in walking order
    [route] = await Route.filter(menu_id=menu.id)
    assert (route.name, route.state, route.rider_id) == ("4号楼、5号楼", RouteState.OPEN, None)
    stops = await RouteStop.filter(route_id=route.id).order_by("position")
    assert [(s.building, s.unit, s.room, s.diet) for s in stops] == [
        ("4号楼", "2", "302", ""), ("5号楼", "1", "201", "软食；过敏：花生")]
    assert "11月28日（周六）午餐1条，共2户，11:00出发。回复“送餐路线”认领。" in await pushed_to(RIDER)

    # 骑士小王 sees it at 10:45, reads it and claims it: straight on to the stops
    clock.set(CUTOFF + timedelta(minutes=75))
    assert await say(wechat, RIDER, "送餐路线") == (
        "待认领的送餐路线，回复序号查看：\n1. 今天午餐 11:00出发·4号楼、5号楼·2户\n请回复序号。")
    assert await say(wechat, RIDER, "1") == (
        "今天午餐送餐·4号楼、5号楼\n11:00从米家社区幸福食堂取餐出发，共2户：4号楼2单元302室、5号楼1单元201室\n"
        "其中1户有饮食要求。送完整条路线可得10积分。认领吗？\n请回复“是”或“否”。")
    assert await say(wechat, RIDER, "是") == (
        "认领成功！请11:00到米家社区幸福食堂取餐出发。\n今天午餐·4号楼、5号楼，11:00出发，已送0/2户。\n"
        f"请按门铃/敲门，当面交给本人。选一户记录：\n{STOPS}\n3. 放弃路线\n请回复序号。")
    rider = await Resident.get(name="骑士小王")
    route = await Route.get(id=route.id)
    assert (route.state, route.rider_id) == (RouteState.CLAIMED, rider.id)

    # the first door at 11:10: delivered without a photo
    clock.advance(timedelta(minutes=25))
    assert await say(wechat, RIDER, "1") == (
        "第1户：4号楼2单元302室 钱**\n饮食要求：无\n请按门铃/敲门，当面交给本人。\n1. 已送达\n2. 不在家\n请回复序号。")
    assert await say(wechat, RIDER, "1") == (
        "好的。可以拍一张送达照片发来（例如餐交到老人手里）。\n没有照片请回复“跳过”。")
    after_first = await say(wechat, RIDER, "跳过")
    assert after_first == (
        "已记录：第1户已送达。\n今天午餐·4号楼、5号楼，11:00出发，已送1/2户。\n请按门铃/敲门，当面交给本人。选一户记录："
        "\n1. 第2户 5号楼1单元201室 刘**（软食；过敏：花生）\n请回复序号。")  # no 放弃路线 once a stop is marked

    # the second: the diet notes on the card, delivered with a photo; the route is done
    clock.advance(timedelta(minutes=8))
    card = await say(wechat, RIDER, "1")
    assert "第2户：5号楼1单元201室 刘**\n饮食要求：软食；过敏：花生\n请按门铃/敲门，当面交给本人。" in card
    await say(wechat, RIDER, "已送达")
    assert await photo(wechat, RIDER, "m-meal") == (
        "已记录：第2户已送达，照片已收到。\n4号楼、5号楼这条路线全部送完了，谢谢您！10积分已记入您的爱心银行，回复“积分”查看。")
    route = await Route.get(id=route.id)
    assert route.state == RouteState.DONE and route.completed_at == clock.now()
    stops = await RouteStop.filter(route_id=route.id).order_by("position")
    assert [s.state for s in stops] == [StopState.DELIVERED, StopState.DELIVERED]
    assert stops[0].photo is None and stops[1].photo is not None and stops[1].photo["media_id"] == "m-meal"
    assert {b.status for b in await Booking.filter(menu_id=menu.id)} == {BookingStatus.SERVED}
    assert not await WelfareAlert.exists()

    # the points: once, through the ledger, and in 积分
    assert await points("骑士小王") == 10
    entry = await Entry.get(key=f"route:{route.id}:points")
    assert (entry.amount, entry.source) == (10, Source.DELIVERY)
    assert "+10" in await say(wechat, RIDER, "积分")
    await say(wechat, RIDER, "取消")
    assert (await say(wechat, RIDER, "我的路线")).startswith("今天认领的路线都送完了，谢谢您！")
    assert "没有待认领的送餐路线" in await say(wechat, RIDER, "送餐路线")
    assert await points("骑士小王") == 10


async def test_not_home_for_an_elder_living_alone_alerts_the_grid_worker_who_closes_it(
        wechat: WeChatPusher, clock: FrozenClock) -> None:
    liu = await Resident.get(name="刘桂芳")
    son = await on_wechat("刘建国", "13812340001", SON, "1号楼", "1", "402")
    link, _ = await request_link(proxy_id=son.id, elder_id=liu.id, relation="子女", now=NOW)
    await decide_link(link_id=link.id, by_id=liu.id, how="elder", approve=True, now=NOW)
    await lunch_delivered(wechat, clock)
    clock.set(CUTOFF + timedelta(minutes=90))  # 11:00
    await claimed(wechat)
    await say(wechat, RIDER, "1")
    await say(wechat, RIDER, "1")
    await say(wechat, RIDER, "跳过")

    # nobody answers at 刘桂芳's door: a note, then asked before it is recorded
    clock.set(CUTOFF + timedelta(minutes=110))  # 11:20
    await say(wechat, RIDER, "我的路线")
    await say(wechat, RIDER, "1")
    assert "敲门5分钟没人应答" in await say(wechat, RIDER, "2")
    assert await say(wechat, RIDER, "敲了十分钟门没人应，电话也没人接") == (
        "第2户 5号楼1单元201室 刘**不在家\n情况：敲了十分钟门没人应，电话也没人接\n确认记录吗？\n请回复“是”或“否”。")
    assert not await WelfareAlert.exists()
    assert await say(wechat, RIDER, "是") == (
        "已记录：第2户不在家。老人独居，已立即通知网格员和家属上门确认。\n"
        "4号楼、5号楼这条路线全部送完了，谢谢您！10积分已记入您的爱心银行，回复“积分”查看。")
    alert = await WelfareAlert.get()
    assert (alert.resident_id, alert.note, alert.closed_at) == (liu.id, "敲了十分钟门没人应，电话也没人接", None)
    stop = await RouteStop.get(id=alert.stop_id)
    assert stop.state == StopState.NOT_HOME
    assert (await Booking.get(id=stop.booking_id)).status == BookingStatus.CHARGED  # not served

    # the grid worker of her grid and her son are told at once, urgently
    for openid in (GRID, SON):
        [row] = [r for r in await OutboxMessage.filter(openid=openid) if "【安全提醒】" in str(r.payload)]
        assert row.priority == Priority.REPLY
        assert "刘桂芳（5号楼1单元201室）11月28日11:20" in row.payload["content"]
        assert "敲了十分钟门没人应" in row.payload["content"] and "回复“安全确认”" in row.payload["content"]
    assert "【安全提醒】" not in await pushed_to(OTHER_GRID)

    # her son sees it too; the grid worker of another grid does not
    assert await say(wechat, SON, "安全确认") == (
        "待确认安全的老人（1位），回复序号处理：\n1. 刘桂芳·5号楼1单元201室，11:20送餐时不在家\n请回复序号。")
    await say(wechat, SON, "取消")
    assert (await say(wechat, OTHER_GRID, "安全确认")).startswith("目前没有待确认安全的老人。")

    # 赵网格 goes to see her and records what he found (asked first)
    clock.advance(timedelta(minutes=25))
    assert "1. 刘桂芳·5号楼1单元201室，11:20送餐时不在家" in await say(wechat, GRID, "安全确认")
    card = await say(wechat, GRID, "1")
    assert "送餐的骑士小王说：敲了十分钟门没人应，电话也没人接" in card and "写下情况" in card
    assert "请回复“是”或“否”" in await say(wechat, GRID, "已上门，老人在楼下邻居家打牌，平安")
    assert await say(wechat, GRID, "是") == "已记录，提醒已关闭，谢谢您！"
    alert = await WelfareAlert.get(id=alert.id)
    grid = await Resident.get(name="赵网格")
    assert (alert.closed_by_id, alert.outcome, alert.closed_at) == (  # type: ignore[attr-defined]
        grid.id, "已上门，老人在楼下邻居家打牌，平安", clock.now())
    assert "刘桂芳的情况已由赵网格记录：已上门，老人在楼下邻居家打牌，平安" in await pushed_to(SON)
    assert "已由赵网格记录" in await pushed_to(RIDER)
    assert (await say(wechat, SON, "安全确认")).startswith("目前没有待确认安全的老人。")
    assert (await say(wechat, GRID, "安全确认")).startswith("目前没有待确认安全的老人。")


async def test_the_delivery_photo_is_kept_before_wechat_forgets_its_media_id(
        client: Any, wechat: WeChatPusher, clock: FrozenClock) -> None:
    image = picture("PNG", "blue")
    client.app[SERVICES].fake.add_media("m-door", image)
    await lunch_delivered(wechat, clock)
    await claimed(wechat)
    await run_lines(wechat, RIDER, ["1", "1"])
    assert (await photo(wechat, RIDER, "m-door")).startswith("已记录：第1户已送达，照片已收到。")
    await sweep_due(clock.now())  # WeChat keeps a temporary media id for 3 days only
    kept = (await RouteStop.get(position=1)).photo
    assert kept is not None and "stored" in kept, kept
    assert (await StoredMedia.get(id=kept["stored"])).data == image


async def test_staff_read_this_months_delivery_figures_in_chat(wechat: WeChatPusher, clock: FrozenClock) -> None:
    await lunch_delivered(wechat, clock)
    clock.set(CUTOFF + timedelta(minutes=90))  # 11:00
    await claimed(wechat)
    await run_lines(wechat, RIDER, ["1", "1", "跳过"])  # 钱奶奶 delivered at 11:00; 刘桂芳 left unmarked
    assert await say(wechat, COUNTER, "送餐数据") == (
        "米家社区 2026-11-01 至 2026-11-28：送餐路线1条（已完成0条），送餐2户次，已送达1户次，不在家0户次，"
        "未标记1户次。\n按时送达1/1户次（100%）。\n明细表格请在小程序下载。")
    # a rider is not staff: the keyword is not theirs
    assert "送餐路线" not in await say(wechat, RIDER, "送餐数据")


# ---------------------------------------------------------------------------- what must not happen


async def test_two_riders_claiming_one_route_the_second_is_told_it_is_taken(
        wechat: WeChatPusher, clock: FrozenClock) -> None:
    community = await Community.get(name="米家社区")
    second = await on_wechat("骑士小李", "13812340002", "o-rider-2", "3号楼", "1", "101")
    await grant(resident_id=second.id, role=Role.RIDER, scope_id=community.id, now=NOW, by_label="test")
    await lunch_delivered(wechat, clock)

    # both read the route; 骑士小王 says 是 first
    for openid in (RIDER, "o-rider-2"):
        assert "1. 今天午餐 11:00出发·4号楼、5号楼·2户" in await say(wechat, openid, "送餐路线")
        assert "认领吗？" in await say(wechat, openid, "1")
    assert (await say(wechat, RIDER, "是")).startswith("认领成功！")
    taken = await say(wechat, "o-rider-2", "是")
    assert taken == "这条路线刚刚已被其他骑士认领了，看看其他路线吧。回复“送餐路线”查看。"
    route = await Route.get()
    assert route.rider_id == (await Resident.get(name="骑士小王")).id
    assert await say(wechat, "o-rider-2", "送餐路线") == "现在没有待认领的送餐路线。有新的送餐路线时会推送给您。"
    assert (await say(wechat, "o-rider-2", "我的路线")).startswith("您还没有认领送餐路线。")

    # 骑士小王 gives it back (asked first); 骑士小李 is told and takes it
    listing = await say(wechat, RIDER, "我的路线")
    assert "没有放弃" in await run_lines(wechat, RIDER, [option(listing, "放弃路线"), "否"])
    assert (await Route.get()).state == RouteState.CLAIMED
    listing = await say(wechat, RIDER, "我的路线")
    assert "确定放弃吗" in await say(wechat, RIDER, option(listing, "放弃路线"))
    assert await say(wechat, RIDER, "是") == "已放弃这条路线，其他骑士可以认领。回复“送餐路线”看看其他路线。"
    assert "骑士小王放弃了11月28日（周六）午餐的送餐路线“4号楼、5号楼”" in await pushed_to("o-rider-2")
    # 骑士小王 looks again, but 骑士小李 claims it before he picks it
    assert "1. 今天午餐 11:00出发·4号楼、5号楼·2户" in await say(wechat, RIDER, "送餐路线")
    assert (await claimed(wechat, "o-rider-2")).startswith("认领成功！")
    assert await say(wechat, RIDER, "1") == "这条路线已经被其他骑士认领或取消了。回复“送餐路线”看看其他路线。"
    # once a stop is marked it cannot be given back
    await run_lines(wechat, "o-rider-2", ["1", "1", "跳过"])
    listing = await say(wechat, "o-rider-2", "我的路线")
    assert "已送1/2户" in listing and "放弃路线" not in listing
    assert (await Route.get()).rider_id == second.id
    # 骑士小王 no longer has it
    assert (await say(wechat, RIDER, "我的路线")).startswith("您还没有认领送餐路线。")


async def test_input_the_bot_does_not_understand_changes_nothing(wechat: WeChatPusher, clock: FrozenClock) -> None:
    await lunch_delivered(wechat, clock)
    await say(wechat, RIDER, "送餐路线")
    assert "没有这个选项" in await say(wechat, RIDER, "99")
    assert "请回复“是”或“否”" in await say(wechat, RIDER, "1")
    assert "请回复“是”或“否”" in await say(wechat, RIDER, "也许吧")
    assert await say(wechat, RIDER, "否") == "好的，没有认领。回复“送餐路线”看看其他路线。"
    assert (await Route.get()).state == RouteState.OPEN

    await claimed(wechat)
    assert "没有这个选项" in await say(wechat, RIDER, "快点送")
    await say(wechat, RIDER, "1")
    assert "没有这个选项" in await say(wechat, RIDER, "送到了吧")
    await say(wechat, RIDER, "1")
    assert "请发送一张照片" in await say(wechat, RIDER, "我没带手机")
    assert (await say(wechat, RIDER, "返回")).startswith("第1户：4号楼2单元302室 钱**")
    assert "敲门5分钟没人应答" in await say(wechat, RIDER, "2")
    assert "内容太短了" in await say(wechat, RIDER, "无")
    assert "不在家\n情况：有人" in await say(wechat, RIDER, "有人")
    assert (await say(wechat, RIDER, "否")).startswith("好的，没有记录。\n今天午餐·4号楼、5号楼")
    assert await say(wechat, RIDER, "取消") == "已取消“我的路线”。回复“菜单”查看可办理的服务。"
    assert {s.state for s in await RouteStop.all()} == {StopState.PENDING}
    assert not await WelfareAlert.exists()


async def test_a_non_rider_is_refused_and_an_unclaimed_route_alerts_the_counter(
        wechat: WeChatPusher, clock: FrozenClock) -> None:
    refused = "该功能仅限相关工作人员使用。回复“菜单”查看可办理的服务。"
    await lunch_delivered(wechat, clock)
    for openid in (ELDER, COUNTER, GRID):
        assert await say(wechat, openid, "送餐路线") == refused
        assert await say(wechat, openid, "我的路线") == refused
    assert not await Route.filter(state=RouteState.CLAIMED).exists()
    # a rider of another community does not see the route
    community = await Community.get(name="新邱社区")
    other = await on_wechat("骑士小赵", "13812340003", "o-rider-x", "3号楼", "1", "201")
    await grant(resident_id=other.id, role=Role.RIDER, scope_id=community.id, now=NOW, by_label="test")
    assert (await say(wechat, "o-rider-x", "送餐路线")).startswith("现在没有待认领的送餐路线。")
    # a resident without alerts in scope sees none
    assert (await say(wechat, ELDER, "安全确认")).startswith("目前没有待确认安全的老人。")
    # the rider's menu offers the routes
    assert "送餐路线" in await say(wechat, RIDER, "菜单")

    # 30 minutes before departure nobody has claimed it: the canteen's staff are told
    clock.set(CUTOFF + timedelta(minutes=60))  # 10:30
    await sweep_due(clock.now())
    assert "“4号楼、5号楼”（2户，11:00出发）还没有骑士认领" in await pushed_to(COUNTER)


async def test_a_full_route_with_long_diet_notes_still_fits_one_reply(wechat: WeChatPusher, clock: FrozenClock) -> None:
    """Eight stops (the most on a route by default) with long diet notes: the list cuts the notes,
    then shows the first stops in walking order; the stop's card has the notes whole."""
    allergies = "花生、芝麻、海鲜、牛奶、鸡蛋、香菜"
    counter = await Resident.get(name="陈食堂")
    canteen = await Canteen.get(name="米家社区幸福食堂")
    assert (await publish_tomorrows_lunch(wechat)).startswith("已发布")
    menu = await Menu.get(day=CUTOFF.date(), meal="lunch")
    for n in range(8):
        person = await on_wechat(f"邻居{n}号", f"1390418010{n}", f"o-n{n}", "5号楼", "2", f"{n + 1}01")
        await Resident.filter(id=person.id).update(mobility=Mobility.NEEDS_DELIVERY)
        await booking_ops.set_diner(resident_id=person.id, by_id=counter.id, now=NOW, diet="soft,low_salt,low_sugar",
                                    allergies=allergies)
        await top_up_wallet(canteen_id=canteen.id, resident_id=person.id, amount_fen=5000, method="cash",
                            receipt_no=f"R{n}", by_id=counter.id, now=NOW)
        await booking_ops.book(menu_id=menu.id, resident_id=person.id, by_id=person.id, mode=Mode.DELIVERY, now=NOW)
    clock.set(CUTOFF + timedelta(minutes=80))
    await sweep_due(clock.now())
    [route] = await Route.all()
    assert await RouteStop.filter(route_id=route.id).count() == 8

    await say(wechat, RIDER, "送餐路线")
    await say(wechat, RIDER, "1")
    listing = await say(wechat, RIDER, "是")  # say() holds every reply to REPLY_MAX_CHARS
    assert "请按门铃/敲门，当面交给本人。" in listing
    assert "先显示前6户：\n1. 第1户 5号楼2单元101室 邻***（软食、低盐…）\n" in listing
    assert "6. 第6户 5号楼2单元601室" in listing and "7. 放弃路线" in listing
    card = await say(wechat, RIDER, "6")
    assert card.startswith(f"第6户：5号楼2单元601室 邻***\n饮食要求：软食、低盐、低糖；过敏：{allergies}\n")
    # marked stops make room for the rest
    await run_lines(wechat, RIDER, ["1", "跳过"])  # 第6户
    listing = await run_lines(wechat, RIDER, ["1", "1", "跳过"])  # 第1户
    assert "已送2/8户" in listing and "1. 第2户" in listing and "6. 第8户 5号楼2单元801室" in listing
