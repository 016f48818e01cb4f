"""幸福食堂 in chat through /wechat: the counter tops a wallet up, staff publish a menu, an elder
(and a son acting for his father) book at the price of the rule that applies, the cut-off sends
the kitchen its count, the counter marks a meal served by its code; a full lunch wait-lists, a
cancel offers the seat and the offer is taken in chat; bad input changes nothing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from bot.app import ENGINE
from bot.clock import FrozenClock
from bot.engine import REPLY_MAX_CHARS
from models.canteen import Booking, BookingStatus, Menu, TopUp
from models.canteen_wallet import wallet_of
from models.facts import BIRTH_DATE, declare
from models.jobs import sweep_due
from models.media import StoredMedia
from models.outbox import OutboxMessage
from models.proxies import Action, decide_link, request_link
from models.residents import Resident, ResidentStatus, WechatAccount
from tests.test_redemption_chat import encodes
from tests.wechat import WeChatPusher

pytestmark = pytest.mark.usefixtures("demo")

COUNTER = "demo-canteen"  # 陈食堂, canteen staff of 米家社区幸福食堂
ELDER = "o-wang"  # 王秀兰 on WeChat
FATHER = "o-zhang"  # 张德福 on WeChat (the wait-list test)
SON = "o-son"  # 张建军, 张德福's son
NOW = datetime(2026, 11, 27, 1, 0, tzinfo=UTC)  # 周五 09:00 in Shanghai


async def say(wechat: WeChatPusher, openid: str, text: str) -> str:
    reply = await wechat.say(openid, text)
    assert len(reply) <= REPLY_MAX_CHARS, reply
    return reply


async def run(wechat: WeChatPusher, openid: str, lines: list[str]) -> str:
    """Say each line in turn; the last reply."""
    reply = ""
    for line in lines:
        reply = await say(wechat, openid, line)
    return reply


async def texts_to(openid: str) -> list[str]:
    rows = await OutboxMessage.filter(openid=openid, kind="text").order_by("id")
    return [str(row.payload["content"]) for row in rows]


async def on_wechat(name: str, openid: str) -> Resident:
    person = await Resident.get(name=name)
    await WechatAccount.create(openid=openid, channel="oa", resident=person, created_at=NOW)
    return person


async def verified(person: Resident, born: str, *statuses: str) -> None:
    """Facts the community verified (only verified facts count for prices)."""
    await declare(resident_id=person.id, code=BIRTH_DATE, value=born, now=NOW, by_id=None, source="staff",
                  verified=True)
    for status in statuses:
        await declare(resident_id=person.id, code=status, now=NOW, by_id=None, source="staff", verified=True)


async def top_up(wechat: WeChatPusher, mobile: str, yuan: str, receipt: str) -> str:
    """充值 at the counter: mobile, amount, cash, receipt, confirm; the last reply."""
    return await run(wechat, COUNTER, ["充值", mobile, yuan, "1", receipt, "是"])


async def publish_tomorrows_lunch(wechat: WeChatPusher) -> str:
    """发布菜单: 11月28日 (the second day offered), 午餐, dishes, 15元, confirm; the last reply."""
    return await run(wechat, COUNTER, ["发布菜单", "2", "2", "红烧肉 软食；清炒时蔬 低盐；米饭", "15", "是"])


async def test_an_elder_and_a_son_for_his_father_book_at_their_prices_and_the_kitchen_gets_its_count(
        wechat: WeChatPusher, clock: FrozenClock) -> None:
    wang = await on_wechat("王秀兰", ELDER)
    await verified(wang, "1950-03-08", "dibao")  # 76 and 低保: 6 yuan a meal
    zhang = await Resident.get(name="张德福")  # no WeChat of his own
    await verified(zhang, "1946-11-28", "veteran")  # turns 80 on the meal's day: 75+ discount once he deposited 120
    son = await Resident.create(name="张建军", mobile="13812345678", community_id=wang.community_id,  # type: ignore[attr-defined]
                                status=ResidentStatus.VERIFIED, created_at=NOW, verified_at=NOW)
    await WechatAccount.create(openid=SON, channel="oa", resident=son, created_at=NOW)
    link, _ = await request_link(proxy_id=son.id, elder_id=zhang.id, relation="子女", now=NOW)
    await decide_link(link_id=link.id, by_id=zhang.id, how="elder", approve=True, now=NOW)

    # the counter: a top-up for each, found by the registered mobile
    assert await run(wechat, COUNTER, ["充值", "13904180011"]) == \
        "王秀兰（1号楼2单元301室），余额0.00元（冻结0.00元，可用0.00元）。\n充值多少元？"
    assert await say(wechat, COUNTER, "100") == \
        "收款方式：\n1. 现金\n2. 微信\n3. 支付宝\n4. 银行卡\n5. 其他\n请回复序号。"
    assert await say(wechat, COUNTER, "1") == "请输入票据号（32个字符以内）："
    assert await say(wechat, COUNTER, "R 001") == \
        "为王秀兰充值100.00元（现金，票据号R001）。请确认已收到款项。确认充值吗？\n请回复“是”或“否”。"
    assert await say(wechat, COUNTER, "是") == \
        "充值成功：王秀兰充值100.00元，现在余额100.00元（冻结0.00元，可用100.00元）。已通知本人。"
    assert (await top_up(wechat, "13904180012", "150", "R002")).startswith("充值成功：张德福充值150.00元")
    assert await TopUp.all().count() == 2

    # 王秀兰 notes what the kitchen must know
    await say(wechat, ELDER, "饮食需求")
    assert await say(wechat, ELDER, "软食") == "有没有过敏或忌口的食物（如：花生、海鲜）？没有请回复“无”。"
    assert await say(wechat, ELDER, "花生") == "已记下您的饮食需求：软食；过敏：花生。厨房备餐时会看到。"

    # staff publish tomorrow's lunch
    assert (await say(wechat, COUNTER, "发布菜单")).startswith(
        "米家社区幸福食堂：发布哪一天的菜单？\n1. 11月27日（周五）\n2. 11月28日（周六）")
    assert (await say(wechat, COUNTER, "2")).startswith("11月28日（周六）的哪一餐？\n1. 早餐（60份）\n2. 午餐（120份）")
    assert (await say(wechat, COUNTER, "2")).startswith("请一次写出所有菜品")
    assert await say(wechat, COUNTER, "红烧肉 软食；清炒时蔬 低盐；米饭") == "菜单价每份多少元？（例如 15 或 12.5）"
    assert await say(wechat, COUNTER, "15") == (
        "发布11月28日（周六）午餐：\n红烧肉（软食）、清炒时蔬（低盐）、米饭\n菜单价15.00元（长者按价格规则付费）。"
        "发布后居民即可预订，长期订餐自动预订。确认发布吗？\n请回复“是”或“否”。")
    assert await say(wechat, COUNTER, "是") == (
        "已发布11月28日（周六）午餐菜单（120份，菜单价15.00元）。长期订餐自动预订0份。截止预订后会把备餐统计发给您。")

    # the elder books: one day open, so straight to its meals
    assert await say(wechat, ELDER, "订餐") == (
        "11月28日（周六）可以预订：\n1. 午餐 菜单价15.00元：红烧肉（软食）、清炒时蔬（低盐）、米饭\n请回复序号。")
    asked = await say(wechat, ELDER, "1")
    assert asked == (
        "11月28日（周六）午餐，堂食\n菜品：红烧肉（软食）、清炒时蔬（低盐）、米饭\n"
        "价格：6.00元（60岁以上低保、特困老人每餐6.00元），菜单价15.00元\n"
        "钱包：余额100.00元（冻结0.00元，可用100.00元）\n预订后先冻结餐费，截止时间扣款。确认预订吗？\n请回复“是”或“否”。")
    done = await say(wechat, ELDER, "是")
    booking = await Booking.get(resident_id=wang.id)
    assert done == (
        f"预订成功！11月28日（周六）午餐，堂食\n价格：6.00元（60岁以上低保、特困老人每餐6.00元）\n"
        f"就餐码：{booking.code}（二维码随后发给您，就餐时在柜台出示）\n余额100.00元（冻结6.00元，可用94.00元）\n"
        "截止时间前可回复“我的订餐”取消，退回全部餐费。")
    image = await OutboxMessage.get(openid=ELDER, kind="image")
    stored = await StoredMedia.get(id=image.payload["stored"])
    assert encodes(stored.data, booking.code)
    assert await say(wechat, ELDER, "是") != done  # the conversation is over: no second booking
    assert await Booking.filter(resident_id=wang.id).count() == 1

    # the son acts for his father: the 75+ discount, as his father turns 80 on the meal's day
    await wechat.client.app[ENGINE].act_for(SON, zhang.id)
    assert (await say(wechat, SON, "订餐")).startswith("（为张德福办理）\n11月28日（周六）可以预订：")
    assert "价格：10.50元（75岁以上储值满120.00元享7折），菜单价15.00元" in await say(wechat, SON, "1")
    for_father = await say(wechat, SON, "是")
    assert for_father.startswith("（为张德福办理）\n预订成功！11月28日（周六）午餐，堂食\n价格：10.50元")
    assert "余额150.00元（冻结10.50元，可用139.50元）" in for_father
    father = await Booking.get(resident_id=zhang.id)
    assert (father.price_fen, father.rule, father.booked_by_id) == (1050, "discount", son.id)
    assert await Action.filter(actor_id=son.id, subject_id=zhang.id, action="canteen_book").exists()
    assert await OutboxMessage.filter(openid=SON, kind="image").count() == 1  # the QR code to the one who booked
    mine = await say(wechat, SON, "我的订餐")
    assert mine.startswith("（为张德福办理）\n食堂钱包：余额150.00元（冻结10.50元，可用139.50元）\n待就餐的订餐")
    assert "1. 11月28日（周六）午餐 堂食 10.50元 已预订" in mine
    await say(wechat, SON, "取消")

    # the cut-off (09:30 on the day): the money is taken and the kitchen told
    clock.set(datetime(2026, 11, 28, 1, 30, tzinfo=UTC))
    await sweep_due(clock.now())
    assert (await wallet_of(wang.id, clock.now())).balance_fen == 9400
    assert (await wallet_of(zhang.id, clock.now())).balance_fen == 13950
    pushed = "\n".join(await texts_to(COUNTER))
    assert "【备餐统计】米家社区幸福食堂11月28日（周六）午餐\n共2份：堂食2份，送餐0份。" in pushed
    count = await say(wechat, COUNTER, "备餐统计")
    assert count.startswith("【备餐统计】米家社区幸福食堂11月28日（周六）午餐\n共2份：堂食2份，送餐0份。\n"
                            "饮食需求：软食1份，有过敏1人。")
    assert "王秀兰（堂食，1号楼2单元301室）软食；过敏：花生" in count
    assert (await say(wechat, ELDER, "我的订餐")).endswith("1. 11月28日（周六）午餐 堂食 6.00元 已扣款\n请回复序号。")
    assert await say(wechat, ELDER, "1") == (
        f"11月28日（周六）午餐 堂食 6.00元 已扣款\n价格：6.00元（60岁以上低保、特困老人每餐6.00元）\n"
        f"就餐码：{booking.code}\n需要：\n1. 发送就餐二维码\n请回复序号。")
    assert await say(wechat, ELDER, "1") == f"11月28日（周六）午餐的就餐二维码正在发给您（就餐码{booking.code}）。"
    assert await OutboxMessage.filter(openid=ELDER, kind="image").count() == 2

    # at the counter: served by the code on her phone, once
    clock.set(datetime(2026, 11, 28, 3, 5, tzinfo=UTC))  # 11:05
    assert await say(wechat, COUNTER, f"就餐 {booking.code.lower()}") == \
        f"已就餐：王秀兰，11月28日（周六）午餐，堂食（就餐码{booking.code}）。"
    again = await say(wechat, COUNTER, f"就餐 {booking.code}")
    assert again.startswith("王秀兰的11月28日（周六）午餐已于11:05登记就餐，不要重复打餐。\n请输入就餐码")
    await say(wechat, COUNTER, "取消")
    # and her neighbour by name
    assert (await say(wechat, COUNTER, "就餐核对")).startswith("11月28日（周六）午餐：已就餐1人，共2人。")
    assert await say(wechat, COUNTER, "德") == "是哪一位？\n1. 张德福 2号楼1单元502室 堂食\n请回复序号。"
    assert await say(wechat, COUNTER, "1") == f"已就餐：张德福，11月28日（周六）午餐，堂食（就餐码{father.code}）。"
    assert {b.status for b in await Booking.all()} == {BookingStatus.SERVED}


async def test_a_full_lunch_wait_lists_and_a_cancelled_seat_is_offered_and_taken_in_chat(
        wechat: WeChatPusher, clock: FrozenClock) -> None:
    wang = await on_wechat("王秀兰", ELDER)
    zhang = await on_wechat("张德福", FATHER)
    await top_up(wechat, "13904180011", "50", "R1")
    await top_up(wechat, "13904180012", "50", "R2")
    settings = await run(wechat, COUNTER, ["食堂设置", "1", "2"])
    assert settings == "午餐每餐最多多少份？"
    assert (await say(wechat, COUNTER, "1")).startswith(
        "已保存（对以后发布的菜单生效）。\n早餐：60份，前一天17:00截止预订，07:00-08:30供餐\n午餐：1份，09:30截止预订")
    assert (await publish_tomorrows_lunch(wechat)).startswith("已发布11月28日（周六）午餐菜单（1份，菜单价15.00元）")

    assert (await run(wechat, ELDER, ["订餐", "1", "是"])).startswith("预订成功！")
    listing = await say(wechat, FATHER, "订餐")
    assert listing == ("11月28日（周六）可以预订：\n"
                       "1. 午餐 菜单价15.00元，已满可候补：红烧肉（软食）、清炒时蔬（低盐）、米饭\n请回复序号。")
    assert "（已订满，确认后排入候补，不扣款）" in await say(wechat, FATHER, "1")
    assert await say(wechat, FATHER, "是") == (
        "11月28日（周六）午餐，堂食已经订满，已为您排入候补第1位，没有扣款。有人退订时会通知您，请在15分钟内确认。"
        "截止预订后候补自动取消。")
    assert (await wallet_of(zhang.id, clock.now())).available_fen == 5000

    # 王秀兰 cancels before the cut-off: her hold comes back, the seat is offered to 张德福
    clock.advance(timedelta(minutes=10))
    await say(wechat, ELDER, "我的订餐")
    assert (await say(wechat, ELDER, "1")).endswith("需要：\n1. 发送就餐二维码\n2. 取消这一餐\n请回复序号。")
    assert await say(wechat, ELDER, "2") == \
        "取消11月28日（周六）午餐的订餐，冻结的餐费会退回钱包。确认取消吗？\n请回复“是”或“否”。"
    assert await say(wechat, ELDER, "是") == \
        "已取消11月28日（周六）午餐的订餐。余额50.00元（冻结0.00元，可用50.00元）"
    offer = (await texts_to(FATHER))[-1]
    assert offer.startswith("【幸福食堂】您候补的11月28日（周六）午餐有空位了，堂食，15.00元（菜单价）。"
                            "座位为您保留到09:25")
    # the push did not get through (outside WeChat's 48 hours): his next message shows it, then he answers
    assert (await say(wechat, FATHER, "你好")).startswith("您有一条待回复的消息：\n" + offer)
    answered = await say(wechat, FATHER, "1")
    booked = await Booking.get(resident_id=zhang.id)
    assert answered.startswith(f"预订成功！11月28日（周六）午餐，堂食\n价格：15.00元（菜单价）\n就餐码：{booked.code}")
    assert booked.status == BookingStatus.BOOKED
    assert (await wallet_of(zhang.id, clock.now())).held_fen == 1500
    assert await OutboxMessage.filter(openid=FATHER, kind="image").count() == 1
    assert (await Menu.get()).booked == 1
    # after the cut-off a diner cannot cancel by chat any more
    clock.set(datetime(2026, 11, 28, 1, 31, tzinfo=UTC))
    await sweep_due(clock.now())
    await say(wechat, FATHER, "我的订餐")
    assert await say(wechat, FATHER, "1") == \
        "11月28日（周六）午餐 堂食 15.00元 已扣款\n价格：15.00元（菜单价）\n" \
        f"就餐码：{booked.code}\n需要：\n1. 发送就餐二维码\n请回复序号。"
    assert (await wallet_of(wang.id, clock.now())).balance_fen == 5000


async def test_short_wallet_refusal_says_what_is_available_and_where_to_top_up(wechat: WeChatPusher) -> None:
    await on_wechat("王秀兰", ELDER)
    await top_up(wechat, "13904180011", "10", "R1")
    await publish_tomorrows_lunch(wechat)
    assert await run(wechat, ELDER, ["订餐", "1", "是"]) == (
        "余额不足：当前可用10.00元。请到米家社区幸福食堂柜台充值（现金、微信、支付宝均可），充值后回复“订餐”再订。")
    assert await Booking.filter(status=BookingStatus.BOOKED).count() == 0
    assert (await Menu.get()).booked == 0


async def test_bad_menu_input_is_refused_and_changes_nothing(wechat: WeChatPusher) -> None:
    await say(wechat, COUNTER, "发布菜单")
    assert (await say(wechat, COUNTER, "9")).startswith("没有这个选项，请回复 1 到 8 之间的序号。")  # no such day
    assert (await say(wechat, COUNTER, "明年")).startswith("没有这个选项")
    await say(wechat, COUNTER, "2")
    await say(wechat, COUNTER, "2")
    too_many = "；".join(f"菜{i}" for i in range(13))
    assert (await say(wechat, COUNTER, too_many)).startswith("菜单请写1到12个菜。\n请一次写出所有菜品")
    assert (await say(wechat, COUNTER, "红烧肉 微辣")).startswith("“微辣”不是饮食标记，标记只能是软食、低盐、低糖")
    assert (await say(wechat, COUNTER, "红烧肉" * 8)).startswith("每个菜名请写1到20个字。")
    assert await say(wechat, COUNTER, "红烧肉 软食") == "菜单价每份多少元？（例如 15 或 12.5）"
    for price in ("十五块", "15.005", "-3", "0", "1e3"):
        refused = await say(wechat, COUNTER, price)
        assert refused.startswith("菜单价"), (price, refused)
        assert refused.endswith("菜单价每份多少元？（例如 15 或 12.5）")
    assert (await say(wechat, COUNTER, "101")).startswith("菜单价要在0.01元到100.00元之间。")
    assert (await say(wechat, COUNTER, "否")).startswith("菜单价请填数字")  # 否 is no price either
    assert await say(wechat, COUNTER, "取消") == "已取消“发布菜单”。回复“菜单”查看可办理的服务。"
    assert await Menu.all().count() == 0
    # not canteen staff: turned away
    assert (await say(wechat, "demo-volunteer", "发布菜单")).startswith("该功能仅限相关工作人员使用")
    assert (await say(wechat, "demo-volunteer", "就餐 ABCD2345")).startswith("该功能仅限相关工作人员使用")
    # an unknown code at the counter
    assert (await say(wechat, COUNTER, "就餐 ABCD2345")).startswith("没有找到这个就餐码，请核对后再试。")


async def test_the_staff_hub_and_the_diner_hub_list_their_services(wechat: WeChatPusher) -> None:
    hub = await say(wechat, COUNTER, "食堂管理")
    assert hub == ("米家社区幸福食堂·食堂管理（扫码就餐也可以直接回复“就餐 就餐码”）：\n1. 发布菜单\n2. 备餐统计\n"
                   "3. 就餐核对\n4. 充值\n5. 食堂设置\n6. 食堂数据\n请回复序号。")
    figures = await say(wechat, COUNTER, "6")
    assert figures.startswith("米家社区幸福食堂") and "订餐0份" in figures
    menu = await say(wechat, COUNTER, "菜单")
    assert "食堂管理" in menu and "发布菜单" not in menu  # the staff's flows are reached from the hub
    await on_wechat("王秀兰", ELDER)
    assert await say(wechat, ELDER, "食堂") == (
        "米家社区幸福食堂\n您的食堂钱包：余额0.00元（冻结0.00元，可用0.00元）\n请选择：\n1. 订餐\n2. 我的订餐\n"
        "3. 长期订餐\n4. 饮食需求\n5. 月卡\n请回复序号。")
    assert await say(wechat, ELDER, "1") == \
        "米家社区幸福食堂暂时没有可以预订的餐次，菜单一般提前几天发布，请稍后再来看看。"


async def test_a_standing_order_books_each_published_lunch(wechat: WeChatPusher) -> None:
    wang = await on_wechat("王秀兰", ELDER)
    await top_up(wechat, "13904180011", "50", "R1")
    assert (await say(wechat, ELDER, "长期订餐")).endswith(
        "您还没有长期订餐。\n请选择：\n1. 设置长期订餐\n请回复序号。")
    assert await say(wechat, ELDER, "1") == \
        "订哪几餐？\n1. 午餐\n2. 午餐和晚餐\n3. 一日三餐\n4. 早餐\n5. 晚餐\n请回复序号。"
    await say(wechat, ELDER, "1")
    assert (await say(wechat, ELDER, "2")).startswith(
        "长期订餐：每周一、周二、周三、周四、周五、周六、周日的午餐（堂食）。")
    assert (await say(wechat, ELDER, "是")).startswith("已设置长期订餐：")
    assert (await publish_tomorrows_lunch(wechat)).startswith(
        "已发布11月28日（周六）午餐菜单（120份，菜单价15.00元）。长期订餐自动预订1份。")
    booking = await Booking.get(resident_id=wang.id)
    assert booking.status == BookingStatus.BOOKED and booking.standing_id is not None
    # stopping it leaves the booking
    assert (await say(wechat, ELDER, "长期订餐")).endswith(
        "1. 停止：每周一、周二、周三、周四、周五、周六、周日的午餐（堂食）\n2. 改为新的长期订餐\n请回复序号。")
    await say(wechat, ELDER, "1")
    assert (await say(wechat, ELDER, "是")).startswith("已停止这项长期订餐")
    assert (await Booking.get(id=booking.id)).status == BookingStatus.BOOKED


async def test_the_monthly_card_is_offered_only_to_those_it_is_for(wechat: WeChatPusher) -> None:
    wang = await on_wechat("王秀兰", ELDER)
    assert (await say(wechat, ELDER, "月卡")).endswith(
        "月卡面向60岁以上的孤寡、失独、退伍军人、劳模、先进工作者老人，请先在“我的信息”中申报出生日期，经社区核实后即可办理。")
    await verified(wang, "1950-03-08", "guagua")
    await top_up(wechat, "13904180011", "500", "R1")
    offer = await say(wechat, ELDER, "月卡")
    assert offer.endswith("请选择：\n1. 购买11月月卡 450.00元\n2. 购买12月月卡 450.00元\n请回复序号。")
    assert (await say(wechat, ELDER, "2")).startswith("购买12月月卡，从食堂钱包支付450.00元")
    assert (await say(wechat, ELDER, "是")).startswith("已购买12月月卡（450.00元）。余额50.00元")
    assert "12月月卡：已购买" in await say(wechat, ELDER, "月卡")


async def test_an_offered_seat_declined_in_chat_goes_back_and_nothing_is_held(wechat: WeChatPusher) -> None:
    await on_wechat("王秀兰", ELDER)
    zhang = await on_wechat("张德福", FATHER)
    await top_up(wechat, "13904180011", "50", "R1")
    await top_up(wechat, "13904180012", "50", "R2")
    await run(wechat, COUNTER, ["食堂设置", "1", "2", "1"])
    await publish_tomorrows_lunch(wechat)
    await run(wechat, ELDER, ["订餐", "1", "是"])
    assert "候补第1位" in await run(wechat, FATHER, ["订餐", "1", "是"])
    await run(wechat, ELDER, ["我的订餐", "1", "2", "是"])
    assert (await say(wechat, FATHER, "你好")).startswith(
        "您有一条待回复的消息：\n【幸福食堂】您候补的11月28日（周六）午餐有空位了")
    assert await say(wechat, FATHER, "2") == "好的，已放弃11月28日（周六）午餐的空位，没有扣款。"
    assert (await Booking.get(resident_id=zhang.id)).status == BookingStatus.LAPSED
    assert (await Menu.get()).booked == 0
    assert (await wallet_of(zhang.id, NOW)).available_fen == 5000


async def test_the_same_receipt_twice_is_one_top_up(wechat: WeChatPusher) -> None:
    wang = await on_wechat("王秀兰", ELDER)
    first = await top_up(wechat, "13904180011", "100", "R001")
    assert first.startswith("充值成功：王秀兰充值100.00元")
    assert (await top_up(wechat, "13904180011", "100", "R001")).startswith(
        "充值成功：王秀兰充值100.00元，现在余额100.00元")
    refused = await top_up(wechat, "13904180011", "80", "R001")
    assert refused == "票据号已用于另一笔充值（100.00元），请核对票据号。"
    assert await TopUp.all().count() == 1
    assert (await wallet_of(wang.id, NOW)).available_fen == 10000
    assert any("100.00元" in text for text in await texts_to(ELDER))  # the diner's receipt
    assert (await say(wechat, COUNTER, "充值")).endswith("请输入老人在社区登记的手机号：")
    assert (await say(wechat, COUNTER, "13900000000")).startswith("没有找到用这个手机号登记的居民")


async def test_several_days_and_meals_are_booked_in_one_go_each_on_its_own(wechat: WeChatPusher) -> None:
    from models.canteen_booking import book, publish_menu
    from models.places import Canteen

    wang = await on_wechat("王秀兰", ELDER)
    await verified(wang, "1950-03-08", "dibao")  # 6 yuan a meal
    await top_up(wechat, "13904180011", "10", "R1")  # enough for one meal, not two
    canteen = await Canteen.get()
    staff = await Resident.get(name="陈食堂")
    day1, day2 = NOW.date() + timedelta(days=1), NOW.date() + timedelta(days=2)
    menus = [(await publish_menu(canteen_id=canteen.id, day=day, meal=meal, dishes=[{"name": "米饭", "marks": []}],
                                 price_fen=1500, by_id=staff.id, now=NOW, capacity=capacity))[0]
             for day, meal, capacity in [(day1, "lunch", 5), (day2, "lunch", 1), (day2, "dinner", 5)]]
    zhang = await Resident.get(name="张德福")  # takes the one seat of the second lunch
    await top_up(wechat, "13904180012", "20", "R2")
    await book(menu_id=menus[1].id, resident_id=zhang.id, by_id=zhang.id, mode="dine_in", now=NOW)
    days = await say(wechat, ELDER, "订餐")
    assert days.endswith("1. 11月28日（周六）\n2. 11月29日（周日）\n3. 这2天都订（接着选餐次）\n请回复序号。")
    assert await say(wechat, ELDER, "3") == \
        "订哪一餐？\n1. 每天的午餐\n2. 每天的晚餐\n3. 每天的午餐、晚餐都订\n请回复序号。"
    asked = await say(wechat, ELDER, "3")
    assert asked.startswith(
        "预订3餐，堂食：\n11月28日（周六）午餐 6.00元（60岁以上低保、特困老人每餐6.00元）\n"
        "11月29日（周日）午餐 6.00元（60岁以上低保、特困老人每餐6.00元）（已满，排候补）\n"
        "11月29日（周日）晚餐 6.00元（60岁以上低保、特困老人每餐6.00元）\n合计冻结12.00元\n")
    done = await say(wechat, ELDER, "是")
    # the first meal is booked, the full one wait-listed, the third refused for the wallet: each on its own
    first = await Booking.get(resident_id=wang.id, menu__day=day1)
    assert done.startswith(f"预订成功1餐：\n11月28日（周六）午餐 6.00元 就餐码{first.code}\n"
                           "已满，排入候补（不扣款，有空位会通知您）：\n11月29日（周日）午餐（候补第1位）\n"
                           "没有订上：\n11月29日（周日）晚餐：余额不足：当前可用4.00元。")
    statuses = sorted(b.status for b in await Booking.filter(resident_id=wang.id))
    assert statuses == [BookingStatus.BOOKED, BookingStatus.WAITING]
    wallet = await wallet_of(wang.id, NOW)
    assert (wallet.available_fen, wallet.held_fen) == (400, 600)
    # asked again, the day's two meals: only the one not booked yet is offered for booking
    await say(wechat, ELDER, "订餐")
    assert (await say(wechat, ELDER, "2")).endswith("3. 这天的2餐都订\n请回复序号。")
    assert (await say(wechat, ELDER, "3")).startswith("11月29日（周日）晚餐，堂食\n")
