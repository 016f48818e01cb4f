"""兑换, 我的兑换券, 核销 and 转赠 in chat through /wechat: a volunteer redeems and gets the
voucher and its QR code, the shop's clerk marks it used, a voucher is cancelled, one expires after
its warning, points are given to an elder who redeems them."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta

import pytest
import segno
from PIL import Image

from bot.clock import FrozenClock
from bot.engine import REPLY_MAX_CHARS
from models.jobs import sweep_due
from models.ledger import AccountKind, Asset, Source, account, balance, points_of, transfer
from models.media import StoredMedia
from models.outbox import OutboxMessage
from models.places import Community
from models.redemption import CatalogueItem, Voucher, VoucherStatus
from models.residents import Resident, WechatAccount
from tests.wechat import WeChatPusher

pytestmark = pytest.mark.usefixtures("demo")

VOLUNTEER = "demo-volunteer"  # 孙志愿
SHOP = "demo-shop"  # 郑商户, clerk of 米家便民超市
STAFF = "demo-staff"  # 周社工, community staff
GRID = "demo-grid-1"  # 李网格: takes no vouchers
NOW = datetime(2026, 11, 27, 1, 0, tzinfo=UTC)


async def earn(name: str, amount: int) -> None:
    person = await Resident.get(name=name)
    issuing = await account(Asset.POINTS, AccountKind.ISSUING, (await Community.get(name="米家社区")).id, NOW)
    await transfer(from_account=issuing, to_account=await points_of(person.id, NOW), amount=amount,
                   source=Source.ACTIVITY, key=f"earn:{name}:{amount}", now=NOW, memo="助老服务")


async def points(name: str) -> int:
    return await balance(await points_of((await Resident.get(name=name)).id, NOW))


async def say(wechat: WeChatPusher, openid: str, text: str) -> str:
    reply = await wechat.say(openid, text)
    assert len(reply) <= REPLY_MAX_CHARS, reply
    return reply


async def texts_to(openid: str) -> list[str]:
    rows = await OutboxMessage.filter(openid=openid, kind="text").order_by("id")
    return [str(row.payload["content"]) for row in rows]


def qr_modules(png: bytes) -> list[list[bool]]:
    """The dark modules of a QR code image drawn at a whole-pixel scale with a 4-module quiet zone."""
    image = Image.open(io.BytesIO(png)).convert("L")
    width, _ = image.size

    def dark(x: int, y: int) -> bool:
        return int(image.getpixel((x, y))) < 128  # type: ignore[arg-type]

    dark_x = [x for x in range(width) if any(dark(x, y) for y in range(width))]
    first, last = dark_x[0], dark_x[-1]
    scale = (next(x for x in range(first, width) if not dark(x, first)) - first) // 7  # the finder: 7 modules
    count = (last - first + 1) // scale
    return [[dark(first + c * scale + scale // 2, first + r * scale + scale // 2) for c in range(count)]
            for r in range(count)]


def encodes(png: bytes, text: str) -> bool:
    """Whether the image is a QR code of ``text`` (at any error-correction level)."""
    seen = qr_modules(png)
    return any([[bool(m) for m in row] for row in segno.make_qr(text, error=level, boost_error=False).matrix] == seen
               for level in "lmqh")


async def test_a_volunteer_redeems_in_chat_gets_the_qr_code_and_the_shop_marks_it_used(wechat: WeChatPusher) -> None:
    await earn("孙志愿", 100)
    listing = await say(wechat, VOLUNTEER, "兑换")
    assert listing == ("您现有100积分。可兑换：\n1. 助餐券（一餐） 15分（剩200）\n2. 志愿理发一次 30分（剩50）\n"
                       "3. 洗衣液一瓶 60分（剩30）\n4. 食用油一桶 120分（积分不足）\n5. 我的兑换券\n请回复序号。")
    short = await say(wechat, VOLUNTEER, "4")
    assert short.startswith("“食用油一桶”需要120积分，您现有100积分，还差20分。\n您现有100积分。可兑换：")
    asked = await say(wechat, VOLUNTEER, "3")
    assert asked == ("商品，在米家便民超市使用，兑换后30天内有效。\n"
                     "兑换“洗衣液一瓶”需要60积分，兑换后剩余40积分。确认吗？\n请回复“是”或“否”。")
    done = await say(wechat, VOLUNTEER, "是")
    voucher = await Voucher.get()
    assert done == (f"兑换成功！\n洗衣液一瓶（商品）\n券码：{voucher.code}\n使用地点：米家便民超市\n"
                    "有效期至：12月27日\n用去60积分，剩余40积分。\n二维码随后发给您，使用时出示二维码或报券码。"
                    "不需要了可回复“我的兑换券”取消，积分退回。")
    assert await points("孙志愿") == 40 and (await CatalogueItem.get(name="洗衣液一瓶")).stock == 29
    image = await OutboxMessage.get(openid=VOLUNTEER, kind="image")
    stored = await StoredMedia.get(id=image.payload["stored"])
    assert stored.content_type == "image/png" and encodes(stored.data, voucher.code)
    assert await say(wechat, VOLUNTEER, "是") != done  # the conversation is over: no second voucher
    assert await Voucher.all().count() == 1

    # the clerk: someone who takes no vouchers is turned away; the clerk types the code as it is read out
    assert (await say(wechat, GRID, "核销")).startswith("该功能仅限相关工作人员使用")
    assert await say(wechat, SHOP, "核销") == "请输入兑换券上的8位券码（小程序里可以直接扫码核销）："
    card = await say(wechat, SHOP, f"{voucher.code[:4].lower()} {voucher.code[4:].lower()}")
    assert card == (f"洗衣液一瓶（商品）\n持券人：孙*愿\n券码：{voucher.code}\n有效期至：12月27日\n确认核销吗？\n"
                    "请回复“是”或“否”。")
    assert await say(wechat, SHOP, "是") == f"核销成功：洗衣液一瓶，持券人孙*愿，券码{voucher.code}。"
    assert (await Voucher.get(id=voucher.id)).status == VoucherStatus.USED
    assert await texts_to(VOLUNTEER) == [
        f"您兑换的“洗衣液一瓶”（券码{voucher.code}）已于11月27日09:00在米家便民超市使用。"]
    await say(wechat, SHOP, "核销")
    again = await say(wechat, SHOP, voucher.code)
    assert again.startswith("这张兑换券已于11月27日09:00使用过了。\n请输入兑换券上的8位券码")
    assert (await say(wechat, SHOP, "ABCD2345")).startswith("没有找到这张兑换券，请核对券码")
    assert await say(wechat, SHOP, "取消") == "已取消“核销兑换券”。回复“菜单”查看可办理的服务。"
    # the code in the same message as the keyword
    assert (await say(wechat, SHOP, f"核销 {voucher.code}")).startswith(
        "这张兑换券已于11月27日09:00使用过了。")


async def test_my_vouchers_resends_the_qr_code_and_cancels_with_points_and_stock_back(
        wechat: WeChatPusher, clock: FrozenClock) -> None:
    await earn("孙志愿", 100)
    await say(wechat, VOLUNTEER, "兑换")
    await say(wechat, VOLUNTEER, "2")
    await say(wechat, VOLUNTEER, "是")
    voucher = await Voucher.get()
    clock.advance(timedelta(hours=2))  # at the counter, later that day
    listing = await say(wechat, VOLUNTEER, "我的兑换券")
    assert listing == f"您未使用的兑换券：\n1. 志愿理发一次 券码{voucher.code} 至12月27日\n请回复序号。"
    card = await say(wechat, VOLUNTEER, "1")
    assert card == (f"志愿理发一次（服务）\n券码：{voucher.code}\n使用地点：米家社区居委会\n"
                    "有效期至：12月27日\n需要：\n1. 发送二维码\n2. 取消这张券（退回30积分）\n请回复序号。")
    assert await say(wechat, VOLUNTEER, "1") == f"“志愿理发一次”的二维码正在发给您（券码{voucher.code}）。"
    assert await OutboxMessage.filter(openid=VOLUNTEER, kind="image").count() == 2
    await say(wechat, VOLUNTEER, "我的兑换券")
    await say(wechat, VOLUNTEER, "1")
    asked = await say(wechat, VOLUNTEER, "2")
    assert asked == (f"取消“志愿理发一次”（券码{voucher.code}）后，30积分退回账户，这张券不能再用。确认取消吗？\n"
                     "请回复“是”或“否”。")
    assert await say(wechat, VOLUNTEER, "是") == "已取消“志愿理发一次”，30积分已退回，现有100积分。"
    assert (await CatalogueItem.get(name="志愿理发一次")).stock == 50
    assert await say(wechat, VOLUNTEER, "我的兑换券") == "您没有未使用的兑换券。回复“兑换”用积分兑换。"
    await say(wechat, STAFF, "核销")
    assert (await say(wechat, STAFF, voucher.code)).startswith("这张兑换券已于11月27日11:00取消。")


async def test_a_voucher_left_unused_is_remembered_then_expires(wechat: WeChatPusher, clock: FrozenClock) -> None:
    await earn("孙志愿", 100)
    for answer in ("兑换", "1", "是"):  # a meal voucher, 60 days
        await say(wechat, VOLUNTEER, answer)
    voucher = await Voucher.get()
    clock.advance(timedelta(days=57, hours=15))  # 1月24日 00:00 in Shanghai: 3 days before the end of 1月26日
    await sweep_due(clock.now())
    assert await texts_to(VOLUNTEER) == [
        f"提醒：您兑换的“助餐券（一餐）”（券码{voucher.code}）将于1月26日到期，请尽快到米家社区幸福食堂使用。"
        "不需要了可回复“我的兑换券”取消，积分退回。"]
    clock.advance(timedelta(days=3))
    await sweep_due(clock.now())
    assert (await texts_to(VOLUNTEER))[-1] == \
        f"您兑换的“助餐券（一餐）”（券码{voucher.code}）已过有效期，未使用，已作废。"
    assert await say(wechat, VOLUNTEER, "我的兑换券") == "您没有未使用的兑换券。回复“兑换”用积分兑换。"
    assert await points("孙志愿") == 85
    await say(wechat, STAFF, "核销")
    assert (await say(wechat, STAFF, voucher.code)).startswith("这张兑换券已于1月26日到期作废。")


async def test_a_volunteer_gives_points_to_an_elder_who_redeems_them(wechat: WeChatPusher) -> None:
    elder = await Resident.get(name="王秀兰")
    await WechatAccount.create(openid="elder-oa", channel="oa", resident=elder, created_at=NOW)
    await earn("孙志愿", 50)
    assert await say(wechat, VOLUNTEER, "转赠") == "您有50积分。请输入对方在社区登记的手机号："
    nobody = await say(wechat, VOLUNTEER, "13900000000")
    assert nobody == "没有找到用这个手机号登记的居民，请核对后再试。\n您有50积分。请输入对方在社区登记的手机号："
    assert await say(wechat, VOLUNTEER, "13904180004") == "这是您本人的手机号，请输入对方的手机号。\n" \
                                                        "您有50积分。请输入对方在社区登记的手机号："
    assert await say(wechat, VOLUNTEER, "139 0418 0011") == "对方：王*兰。转赠多少积分？（最多50分）"
    assert (await say(wechat, VOLUNTEER, "60")).startswith("请输入1到50之间的整数。\n")
    assert await say(wechat, VOLUNTEER, "20分") == "想对王*兰说点什么？（60字以内，不需要请回复“跳过”）"
    assert await say(wechat, VOLUNTEER, "天冷了，吃顿热乎饭") == \
        "确认把20积分转赠给王*兰吗？转赠后不能撤回。\n请回复“是”或“否”。"
    assert await points("王秀兰") == 0  # nothing moves before the confirmation
    assert await say(wechat, VOLUNTEER, "是") == "已把20积分转赠给王*兰，对方会收到通知。您还有30积分。"
    assert await points("王秀兰") == 20
    assert await texts_to("elder-oa") == [
        "孙志愿转赠给您20积分，留言：天冷了，吃顿热乎饭。回复“积分”查看余额，“兑换”看看能换什么。"]
    listing = await say(wechat, "elder-oa", "兑换")
    assert listing.startswith("您现有20积分。可兑换：\n1. 助餐券（一餐） 15分（剩200）\n"
                              "2. 志愿理发一次 30分（积分不足）")
    await say(wechat, "elder-oa", "1")
    assert (await say(wechat, "elder-oa", "是")).startswith("兑换成功！\n助餐券（一餐）（助餐券）")
    assert await points("王秀兰") == 5

    # saying no moves nothing
    for answer in ("转赠", "13904180011", "10", "跳过"):
        await say(wechat, VOLUNTEER, answer)
    assert await say(wechat, VOLUNTEER, "否") == "已取消转赠，积分没有变化。"
    assert (await points("孙志愿"), await points("王秀兰")) == (30, 5)


async def test_recipients_are_looked_up_ten_times_a_day(wechat: WeChatPusher) -> None:
    await earn("孙志愿", 50)
    await say(wechat, VOLUNTEER, "转赠")
    for i in range(10):
        assert (await say(wechat, VOLUNTEER, f"139000000{i:02d}")).startswith("没有找到用这个手机号登记的居民")
    assert await say(wechat, VOLUNTEER, "13904180011") == "今天查询的次数较多，请明天再试，或请社区工作人员帮您办理。"
    assert await say(wechat, "demo-grid-1", "转赠") == \
        "您目前没有可转赠的积分。参加志愿服务可以获得积分，回复“活动”看看。"


async def test_a_long_catalogue_is_cut_to_fit_one_reply_even_with_a_refusal_before_it(wechat: WeChatPusher) -> None:
    await earn("孙志愿", 40)
    community = await Community.get(name="米家社区")
    for i in range(10):
        await CatalogueItem.create(community=community, kind="goods", name=f"{i}号礼品" + "很长的名字" * 5,
                                   price=50 + i, stock=99999, valid_days=30, created_at=NOW)
    listing = await say(wechat, VOLUNTEER, "兑换")
    assert listing.startswith("您现有40积分。可兑换（另有")
    shown = [line for line in listing.splitlines() if line[:1].isdigit()]
    assert shown[-1].endswith("我的兑换券") and 3 <= len(shown) < 10
    refused = await say(wechat, VOLUNTEER, str(len(shown) - 1))  # an item over the balance: asked again
    assert "积分不足" not in refused.splitlines()[0] and "还差" in refused.splitlines()[0]
