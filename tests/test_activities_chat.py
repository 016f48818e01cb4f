"""Activities in chat through the signed /wechat gateway: 发布活动 step by step, 活动 and 我的活动,
the organiser's 签到码 (a temporary parametric QR code from the fake WeChat API, sent as an image)
scanned with a SCAN event, the typed code, 活动管理 (点名, cancel), the settlement at the end by the
due-action sweep, 待确认时长, and the points in the ledger and the pushes."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from bot.app import SERVICES
from bot.clock import FrozenClock
from bot.engine import REPLY_MAX_CHARS
from models.activities import Activity, ActivityStatus, CheckIn, HoursStatus, Signup, SignupStatus, publish, sign_up
from models.jobs import sweep_due
from models.ledger import balance, points_of
from models.media import StoredMedia
from models.outbox import OutboxMessage
from models.places import Building
from models.residents import Resident, WechatAccount
from tests.test_api import until
from tests.wechat import WeChatPusher

pytestmark = pytest.mark.usefixtures("demo")
SHANGHAI = ZoneInfo("Asia/Shanghai")
ORGANISER = "demo-organiser"  # 吴组织, organiser of 米家社区
VOLUNTEER = "demo-volunteer"  # 孙志愿
STAFF = "demo-staff"  # 周社工, community staff of 米家社区
START = datetime(2026, 11, 28, 9, 0, tzinfo=SHANGHAI)  # Saturday, the day after the clock's Friday
END = START + timedelta(hours=2, minutes=30)


def option(reply: str, needle: str) -> str:
    """The number of the first listed option that contains ``needle``."""
    for line in reply.splitlines():
        number, dot, label = line.partition(". ")
        if dot and number.isdigit() and needle in label:
            return number
    raise AssertionError(f"no option with {needle!r} in:\n{reply}")


async def neighbours(count: int) -> list[str]:
    """Residents of 1号楼 on WeChat: their openids."""
    building = await Building.get(name="1号楼")
    openids = []
    for i in range(count):
        person = await Resident.create(name=f"邻居{i}", mobile=f"1396666000{i}", community_id=building.community_id,  # type: ignore[attr-defined]
                                       building=building, unit="2", room=f"30{i}", created_at=START)
        await WechatAccount.create(openid=f"oa-n{i}", channel="oa", resident=person, created_at=START)
        openids.append(f"oa-n{i}")
    return openids


async def person(openid: str) -> Resident:
    account = await WechatAccount.get(openid=openid)
    return await Resident.get(id=account.resident_id)  # type: ignore[attr-defined]


async def activity_of(clock: FrozenClock, *volunteers: str, slots: int = 10) -> Activity:
    """吴组织's 敬老院 activity tomorrow 09:00-11:30 (助老服务, 10 points an hour), these signed up."""
    organiser = await person(ORGANISER)
    activity = await publish(community_id=organiser.community_id, organiser_id=organiser.id,  # type: ignore[attr-defined]
                             title="敬老院陪老人聊天", kind="elder_care", place="米家社区养老服务站", starts_at=START,
                             ends_at=END, slots=slots, now=clock.now())
    for openid in volunteers:
        await sign_up(activity.id, await person(openid), clock.now())
    return activity


async def points(openid: str) -> int:
    return await balance(await points_of((await person(openid)).id, START))


async def pushed(openid: str) -> str:
    rows = await OutboxMessage.filter(openid=openid, kind="text").order_by("id")
    return "\n".join(str(row.payload.get("content", "")) for row in rows)


# ---------------------------------------------------------------------------- publish, browse, sign up


async def test_an_organiser_publishes_and_volunteers_sign_up_within_the_slots(wechat: WeChatPusher) -> None:
    kinds = await wechat.say(ORGANISER, "发布活动")
    assert "活动类型" in kinds and "助老服务（10积分/小时）" in kinds
    assert "活动名称" in await wechat.say(ORGANISER, option(kinds, "助老服务"))
    assert "活动时间" in await wechat.say(ORGANISER, "敬老院陪老人聊天")
    refused = await wechat.say(ORGANISER, "明天 09:00-22:00")
    assert "最长12小时" in refused and "活动时间" in refused  # asked again
    assert "活动地点" in await wechat.say(ORGANISER, "明天 09:00-11:30")
    assert "招募几名" in await wechat.say(ORGANISER, "米家社区养老服务站")
    assert "1到500" in await wechat.say(ORGANISER, "0")
    assert "活动说明" in await wechat.say(ORGANISER, "2")
    summary = await wechat.say(ORGANISER, "陪老人聊天、读报")
    assert "11月28日（周六）09:00-11:30" in summary and "全程2小时30分钟约25分" in summary
    assert "确认发布吗" in summary
    done = await wechat.say(ORGANISER, "是")
    activity = await Activity.get(title="敬老院陪老人聊天")
    assert "已发布" in done and f"签到码：{activity.checkin_code}" in done
    assert (activity.points_per_hour, activity.slots, activity.starts_at, activity.ends_at) == (10, 2, START, END)

    listing = await wechat.say(VOLUNTEER, "活动")
    assert "敬老院陪老人聊天（余2）" in listing
    card = await wechat.say(VOLUNTEER, option(listing, "敬老院"))
    assert "地点：米家社区养老服务站" in card and "名额：已报0/2" in card and "报名参加吗" in card
    assert "报名成功" in await wechat.say(VOLUNTEER, "是")
    again = await wechat.say(VOLUNTEER, "活动")
    assert "（余1）·已报名" in again
    assert "您已报名" in await wechat.say(VOLUNTEER, option(again, "敬老院"))

    first, second = await neighbours(2)
    listing = await wechat.say(first, "活动")
    await wechat.say(first, option(listing, "敬老院"))
    assert "报名成功" in await wechat.say(first, "是")
    assert "现在没有可以报名的志愿活动" in await wechat.say(second, "活动")  # full: no longer listed
    assert await Signup.filter(activity_id=activity.id, status=SignupStatus.SIGNED).count() == 2

    mine = await wechat.say(first, "我的活动")
    assert "敬老院陪老人聊天：待参加" in mine
    detail = await wechat.say(first, option(mine, "敬老院"))
    assert "确定退出" in await wechat.say(first, option(detail, "退出报名"))
    assert "已退出" in await wechat.say(first, "是")
    assert "（余1）" in await wechat.say(second, "活动")  # the place is free again


async def test_a_resident_cannot_publish(wechat: WeChatPusher) -> None:
    assert "仅限相关工作人员" in await wechat.say(VOLUNTEER, "发布活动")
    assert "仅限相关工作人员" in await wechat.say(VOLUNTEER, "活动管理")
    assert await Activity.all().count() == 0


# ---------------------------------------------------------------------------- check-in


async def test_the_organisers_qr_code_checks_a_volunteer_in_when_scanned(
        client: Any, wechat: WeChatPusher, clock: FrozenClock) -> None:
    fake = client.app[SERVICES].fake
    first, stranger = await neighbours(2)
    activity = await activity_of(clock, VOLUNTEER, first)
    clock.set(START - timedelta(minutes=10))

    shown = await wechat.say(ORGANISER, "签到码")
    assert "签到二维码正在发给您" in shown and f"签到码：{activity.checkin_code}" in shown
    scene = f"checkin:{activity.id}:{activity.checkin_code}"
    codes = [qr for qr in fake.qrcodes.values() if qr.scene == scene]
    assert len(codes) == 1 and codes[0].action_name == "QR_STR_SCENE"  # temporary, valid past the end
    assert codes[0].expires_at == END + timedelta(hours=1)
    image = await OutboxMessage.get(openid=ORGANISER, kind="image")
    assert (await StoredMedia.get(id=image.payload["stored"])).content_type == "image/png"

    async def sent() -> bool:
        return any(m.msgtype == "image" for m in fake.sent("custom", touser=ORGANISER))
    await until(sent)  # the outbox uploaded the picture and sent it as an image message
    await wechat.say(ORGANISER, "签到码")
    assert len([qr for qr in fake.qrcodes.values() if qr.scene == scene]) == 1  # the stored code is reused

    scanned = await wechat.event(VOLUNTEER, "SCAN", scene)
    assert "签到成功" in scanned.text and "2小时30分钟（25积分）" in scanned.text
    assert (await wechat.event(VOLUNTEER, "SCAN", scene)).text == scanned.text  # WeChat's retry: the same reply
    clock.advance(timedelta(minutes=1))
    assert "已经在08:50签到过" in (await wechat.event(VOLUNTEER, "SCAN", scene)).text
    signup = await Signup.get(activity_id=activity.id, resident_id=(await person(VOLUNTEER)).id)
    assert (signup.checked_in_by, signup.checked_in_at) == (CheckIn.QR, START - timedelta(minutes=10))

    wrong = "000000" if activity.checkin_code != "000000" else "111111"
    assert "签到码不对" in (await wechat.event(first, "SCAN", f"checkin:{activity.id}:{wrong}")).text
    assert "无法识别" in (await wechat.event(first, "SCAN", "checkin:oops")).text
    assert "没有报名" in (await wechat.event(stranger, "SCAN", scene)).text
    clock.set(END + timedelta(minutes=1))
    assert "已经结束" in (await wechat.event(first, "SCAN", scene)).text
    assert await Signup.filter(activity_id=activity.id, checked_in_at__isnull=False).count() == 1


async def test_a_scan_before_the_window_changes_nothing(wechat: WeChatPusher, clock: FrozenClock) -> None:
    activity = await activity_of(clock, VOLUNTEER)
    reply = (await wechat.event(VOLUNTEER, "SCAN", f"checkin:{activity.id}:{activity.checkin_code}")).text
    assert "还没到签到时间" in reply and "08:30起可以签到" in reply
    assert await Signup.filter(checked_in_at__isnull=False).count() == 0


async def test_a_volunteer_who_cannot_scan_types_the_code(wechat: WeChatPusher, clock: FrozenClock) -> None:
    activity = await activity_of(clock, VOLUNTEER)
    clock.set(START + timedelta(minutes=5))
    assert "6位签到码" in await wechat.say(VOLUNTEER, "签到")
    assert "6位数字" in await wechat.say(VOLUNTEER, "12345")
    assert "签到成功" in await wechat.say(VOLUNTEER, activity.checkin_code)
    assert (await Signup.get(activity_id=activity.id)).checked_in_by == CheckIn.CODE
    clock.advance(timedelta(minutes=1))
    assert "已经在" in await wechat.say(VOLUNTEER, f"签到 {activity.checkin_code}")  # the code in one message
    assert "签到码不对" in await wechat.say(VOLUNTEER, "签到 000001")
    assert "没有听懂" in await wechat.say(VOLUNTEER, "活动 123")  # only a keyword that takes one reads what follows


# ---------------------------------------------------------------------------- hours and points


async def test_hours_become_points_at_the_end_and_a_late_tick_credits_at_once(
        wechat: WeChatPusher, clock: FrozenClock) -> None:
    late, = await neighbours(1)
    activity = await activity_of(clock, VOLUNTEER, late)
    clock.set(START)
    assert "签到成功" in (await wechat.event(VOLUNTEER, "SCAN", f"checkin:{activity.id}:{activity.checkin_code}")).text

    clock.set(END)
    await sweep_due(clock.now())  # what the scheduler's due-action job runs every minute
    assert await points(VOLUNTEER) == 25 and await points(late) == 0
    assert "“敬老院陪老人聊天”的服务时长已确认：2小时30分钟，获得25积分" in await pushed(VOLUNTEER)

    clock.set(END + timedelta(hours=1))
    listing = await wechat.say(ORGANISER, "活动管理")
    card = await wechat.say(ORGANISER, option(listing, "敬老院"))
    assert "报名：2/10  已签到：1" in card
    names = await wechat.say(ORGANISER, option(card, "点名签到"))
    assert "孙志愿（已签到）" in names
    ticked = await wechat.say(ORGANISER, option(names, "邻居0"))
    assert "已为邻居0签到，服务时长已确认并发放积分" in ticked and "邻居0（已签到）" in ticked
    assert await points(late) == 25
    assert "获得25积分" in await pushed(late)
    assert "点名结束" in await wechat.say(ORGANISER, option(ticked, "点完了"))
    await sweep_due(clock.now())
    assert (await points(VOLUNTEER), await points(late)) == (25, 25)  # nothing twice


async def test_declared_hours_are_confirmed_or_rejected_by_the_organiser(
        wechat: WeChatPusher, clock: FrozenClock) -> None:
    first, second = await neighbours(2)
    await activity_of(clock, first, second)
    clock.set(END + timedelta(minutes=30))

    mine = await wechat.say(first, "我的活动")
    assert "敬老院陪老人聊天：未签到" in mine
    detail = await wechat.say(first, option(mine, "敬老院"))
    asked = await wechat.say(first, option(detail, "申报服务时长"))
    assert "最多6小时30分钟" in asked
    assert "单位" in await wechat.say(first, "3")
    assert "说明" in await wechat.say(first, "3小时")
    assert "提交给组织者确认吗" in await wechat.say(first, "没扫上码，9点到12点在现场帮忙")
    assert "已提交" in await wechat.say(first, "是")
    assert "邻居0申报了“敬老院陪老人聊天”的服务时长3小时" in await pushed(ORGANISER)
    for answer in ("我的活动", "1", "1", "2小时", "一直在", "是"):
        reply = await wechat.say(second, answer)
    assert "已提交" in reply

    listing = await wechat.say(ORGANISER, "待确认时长")
    assert "邻居0·敬老院陪老人聊天·3小时" in listing
    shown = await wechat.say(ORGANISER, option(listing, "邻居0"))
    assert "说明：没扫上码" in shown and "签到记录：没有签到" in shown and "确认后发放30积分" in shown
    assert "已确认3小时，发放30积分" in await wechat.say(ORGANISER, option(shown, "确认"))
    assert await points(first) == 30 and "获得30积分" in await pushed(first)

    listing = await wechat.say(ORGANISER, "待确认时长")
    shown = await wechat.say(ORGANISER, option(listing, "邻居1"))
    assert "驳回原因" in await wechat.say(ORGANISER, option(shown, "驳回"))
    assert "已驳回" in await wechat.say(ORGANISER, "签到名单上没有您，请联系组织者")
    assert await points(second) == 0
    assert "没有通过。原因：签到名单上没有您，请联系组织者" in await pushed(second)
    assert (await Signup.get(resident_id=(await person(second)).id)).hours_status == HoursStatus.REJECTED
    assert "没有待确认的时长申报" in await wechat.say(ORGANISER, "待确认时长")


async def test_cancelling_tells_everyone_signed_up(wechat: WeChatPusher, clock: FrozenClock) -> None:
    first, = await neighbours(1)
    activity = await activity_of(clock, VOLUNTEER, first)
    listing = await wechat.say(STAFF, "活动管理")  # community staff run every activity of the community
    card = await wechat.say(STAFF, option(listing, "敬老院"))
    assert "报名2人" in (names := await wechat.say(STAFF, option(card, "报名名单"))) and "孙志愿、邻居0" in names
    card = await wechat.say(STAFF, option(await wechat.say(STAFF, "活动管理"), "敬老院"))
    assert "取消“敬老院陪老人聊天”的原因" in await wechat.say(STAFF, option(card, "取消活动"))
    assert "2位志愿者会收到通知" in await wechat.say(STAFF, "养老服务站临时检修")
    assert "已取消" in await wechat.say(STAFF, "是")
    assert (await Activity.get(id=activity.id)).status == ActivityStatus.CANCELLED
    for openid in (VOLUNTEER, first):
        assert "已取消。原因：养老服务站临时检修" in await pushed(openid)
    assert "现在没有可以报名的志愿活动" in await wechat.say(first, "活动")


async def test_replies_fit_one_message_with_many_activities(wechat: WeChatPusher, clock: FrozenClock) -> None:
    organiser = await person(ORGANISER)
    for i in range(25):
        await publish(community_id=organiser.community_id, organiser_id=organiser.id,  # type: ignore[attr-defined]
                      title=f"第{i}次楼道清洁和垃圾分类宣传活动", kind="environment", place="米家社区各楼栋",
                      starts_at=START + timedelta(days=i), ends_at=END + timedelta(days=i), slots=5,
                      now=clock.now(), description="很长的说明。" * 50)
    listing = await wechat.say(VOLUNTEER, "活动")
    assert len(listing) <= REPLY_MAX_CHARS and "未列出" in listing
    card = await wechat.say(VOLUNTEER, "1")
    assert len(card) <= REPLY_MAX_CHARS and "报名参加吗" in card
    managed = await wechat.say(ORGANISER, "活动管理")
    assert len(managed) <= REPLY_MAX_CHARS
