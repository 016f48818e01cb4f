"""逢六说事 in chat through /wechat: the six-message report, me too, 我的事, the handlers' 我的待办,
staff entry, a proxy reporting for an elder, the answers to a case's prompts, one case per confirmation."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from bot.clock import FrozenClock
from bot.engine import REPLY_MAX_CHARS, Inbound, validate
from models.cases import AgendaItem, Case, CaseEvent, Klass, Level, Source, Status
from models.conversation import PendingPrompt, Question, choice
from models.outbox import OutboxMessage
from models.places import Building
from models.proxies import Action
from models.residents import Resident, WechatAccount
from tests.test_api import until
from tests.wechat import WeChatPusher, text_xml

pytestmark = pytest.mark.usefixtures("demo")

PROPERTY = "demo-property"  # 钱物业, the property company of 米家社区
MEDIATOR = "demo-mediator"  # 孔调解, mediator of 第一网格
STAFF = "demo-staff"  # 周社工, community staff of 米家社区
GRID = "demo-grid-1"  # 李网格, grid worker of 第一网格 (1-3号楼)

# the reporter's own words: a joiner must never read them
WORDS = "3单元楼道灯坏了，我家门口一片黑"


async def neighbours() -> dict[str, Resident]:
    """甲 and 乙 in 1号楼, 丙 in 2号楼 (83 m away), 丁 in 4号楼 (第二网格, 600 m away); all on WeChat."""
    people = {}
    for i, (name, building) in enumerate([("甲居民", "1号楼"), ("乙居民", "1号楼"), ("丙居民", "2号楼"),
                                          ("丁居民", "4号楼")]):
        b = await Building.get(name=building)
        person = await Resident.create(name=name, mobile=f"1393333000{i}", community_id=b.community_id,  # type: ignore[attr-defined]
                                       building=b, unit="3", room=f"40{i}", created_at=datetime.now(UTC))
        await WechatAccount.create(openid=f"case-{i}", channel="oa", resident=person, created_at=person.created_at)
        people[name] = person
    return people


def option(reply: str, needle: str) -> str:
    """The number of the first listed option that contains ``needle``."""
    for line in reply.splitlines():
        number, dot, label = line.partition(". ")
        if dot and number.isdigit() and needle in label:
            return number
    raise AssertionError(f"no option with {needle!r} in:\n{reply}")


async def pushed_to(openid: str) -> str:
    rows = await OutboxMessage.filter(openid=openid).order_by("id")
    return "\n".join(str(row.payload.get("content", "")) for row in rows)


async def report(wechat: WeChatPusher, openid: str, category: str, description: str, *, place: str = "1",
                 submit: str = "是") -> str:
    """说事 without photos: category, description, 跳过, place, then the confirmation (or a pick)."""
    assert "1. 照明" in await wechat.say(openid, "说事")
    assert "请说说" in await wechat.say(openid, category)
    assert "照片" in await wechat.say(openid, description)
    assert "问题在哪里" in await wechat.say(openid, "跳过")
    assert "请确认" in await wechat.say(openid, place)
    return await wechat.say(openid, submit)


async def handle(wechat: WeChatPusher, staff: str, case: Case, action: str, *answers: str) -> list[str]:
    """我的待办 → the case → an action (by its label) → its answers; every reply."""
    listing = await wechat.say(staff, "我的待办")
    card = await wechat.say(staff, option(listing, f"编号{case.number} "))
    replies = [listing, card, await wechat.say(staff, action)]
    for answer in answers:
        replies.append(await wechat.say(staff, answer))
    return replies


async def answer_prompt(wechat: WeChatPusher, openid: str, text: str) -> str:
    """Answer the latest question a case pushed: once WeChat took the push, or after it is shown."""
    prompt = await PendingPrompt.filter(openid=openid, closed_at=None).order_by("-id").first()
    assert prompt is not None, f"no open prompt for {openid}"

    async def settled() -> bool:
        if (await PendingPrompt.get(id=prompt.id)).delivered_at is not None:
            return True
        return (await OutboxMessage.get(idempotency_key=f"prompt:{prompt.id}")).state == "failed"

    await until(settled)
    if (await PendingPrompt.get(id=prompt.id)).delivered_at is None:
        assert "您有一条待回复的消息" in await wechat.say(openid, "你好")
    return await wechat.say(openid, text)


# ---------------------------------------------------------------------------- the engine's extension


def test_a_choice_may_also_take_a_photo_or_a_location() -> None:
    plain = choice("哪里？", [("own", "本楼")])
    assert "also" not in plain.to_json()  # stored questions look as they did before
    assert Question.from_json(plain.to_json()) == plain
    both = choice("哪里？", [("own", "本楼")], also=("photo", "location"))
    assert both.to_json()["also"] == ["photo", "location"] and Question.from_json(both.to_json()) == both
    assert "请回复序号，也可以发照片或位置。" in both.render()
    assert validate(both, Inbound("o", "image", media_id="m1"))["photo"]["media_id"] == "m1"
    assert validate(both, Inbound("o", "location", latitude=42.0, longitude=121.6))["location"]["lat"] == 42.0
    assert validate(both, Inbound("o", "text", text="1")) == "own"
    with pytest.raises(Exception, match="序号"):
        validate(plain, Inbound("o", "image", media_id="m1"))
    with pytest.raises(ValueError):
        choice("哪里？", [("own", "本楼")], also=("video",))


# ---------------------------------------------------------------------------- reporting


async def test_a_report_with_one_photo_takes_six_messages(wechat: WeChatPusher) -> None:
    await neighbours()
    replies = [await wechat.say("case-0", "说事")]
    assert "1. 照明" in replies[-1] and "11. 其他" in replies[-1]
    replies.append(await wechat.say("case-0", "1"))
    assert "请说说" in replies[-1]
    replies.append(await wechat.voice("case-0", WORDS))  # WeChat's speech recognition arrives as text
    assert "照片" in replies[-1] and "跳过" in replies[-1]
    replies.append(await wechat.image("case-0", media_id="m-light"))
    assert "已收到1张照片，还可以再发2张" in replies[-1] and "1. 本楼 1号楼" in replies[-1]
    assert "也可以发照片或位置" in replies[-1]
    replies.append(await wechat.say("case-0", "1"))
    assert "照明·1号楼" in replies[-1] and "照片1张" in replies[-1] and WORDS in replies[-1]
    replies.append(await wechat.say("case-0", "是"))
    case = await Case.get()
    assert len(replies) == 6
    assert f"已提交，编号{case.number}" in replies[-1]
    assert "由物业公司处理，12月2日（周三）前给您答复" in replies[-1]
    assert all(len(r) <= REPLY_MAX_CHARS for r in replies)
    assert (case.category, case.source, case.description, case.klass) == ("lighting", Source.CHAT, WORDS, Klass.SMALL)
    assert [p["media_id"] for p in case.photos] == ["m-light"]
    assert (await Building.get(id=case.building_id)).name == "1号楼"  # type: ignore[attr-defined]
    told = await pushed_to(PROPERTY)
    assert f"编号{case.number}" in told and "照明" in told and WORDS not in told


async def test_a_duplicate_report_becomes_a_join_and_the_joiner_sees_only_public_information(
    wechat: WeChatPusher, clock: FrozenClock,
) -> None:
    await neighbours()
    await report(wechat, "case-0", "1", WORDS)
    first = await Case.get()
    await report(wechat, "case-0", "10", "楼上天天吵架")  # a private case: never offered to anyone
    clock.advance(timedelta(hours=2))
    # 丙 lives in 2号楼, 83 m from 1号楼: the same problem nearby is offered
    replies = [await wechat.say("case-2", "说事"), await wechat.say("case-2", "1"),
               await wechat.say("case-2", "灯不亮"), await wechat.say("case-2", "跳过")]
    offer = await wechat.say("case-2", "1")  # 本楼 2号楼
    replies.append(offer)
    assert "是同一件事吗" in offer and "照明·1号楼·11月27日（周五）反映（1人）" in offer
    assert "不是，提交新问题" in offer and WORDS not in offer and "3单元" not in offer
    joined = await wechat.say("case-2", option(offer, "照明·1号楼"))
    replies.append(joined)
    assert len(replies) == 6 and all(len(r) <= REPLY_MAX_CHARS for r in replies)
    assert f"已加入编号{first.number}" in joined and "进展会推送给您" in joined and "越优先" in joined
    assert await Case.all().count() == 2
    assert (await Case.get(id=first.id)).joins == 1
    # a dispute nearby is not offered: 丙 gets the plain confirmation
    await wechat.say("case-2", "说事")
    await wechat.say("case-2", "10")
    await wechat.say("case-2", "隔壁装修吵")
    await wechat.say("case-2", "跳过")
    assert "请确认" in await wechat.say("case-2", "1")
    await wechat.say("case-2", "取消")

    # the property company writes a progress note (for the reporter only) and a public summary
    await handle(wechat, PROPERTY, first, "记录进展", "已联系电工王师傅", "跳过")
    mine = await wechat.say("case-2", "我的事")
    assert f"编号{first.number} 照明" in mine
    seen = await wechat.say("case-2", option(mine, f"编号{first.number}"))
    assert "您关注了这件事" in seen and "照明·1号楼" in seen and "受理" in seen
    assert WORDS not in seen and "3单元" not in seen and "王师傅" not in seen and "照片" not in seen
    reporter_sees = await wechat.say("case-0", "我的事")
    full = await wechat.say("case-0", option(reporter_sees, f"编号{first.number}"))
    assert WORDS in full and "王师傅" in full
    assert "王师傅" in await pushed_to("case-0") and "王师傅" not in await pushed_to("case-2")


async def test_photos_up_to_three_and_a_map_location(wechat: WeChatPusher) -> None:
    await neighbours()
    for line in ("说事", "4", "垃圾堆在路边没人清"):
        await wechat.say("case-0", line)
    assert "还可以再发2张" in await wechat.image("case-0", "p1")
    assert "还可以再发1张" in await wechat.image("case-0", "p2")
    third = await wechat.image("case-0", "p3")
    assert "已收到3张照片。" in third and "也可以发位置" in third and "照片或位置" not in third
    assert "请回复 1 到 2 之间的序号" in await wechat.image("case-0", "p4")  # a fourth is one too many
    summary = await wechat.location("case-0", 42.02165, 121.67095, "米家社区2号楼东侧路边")
    assert "环境卫生·米家社区2号楼东侧路边" in summary and "照片3张" in summary
    assert "已提交" in await wechat.say("case-0", "是")
    case = await Case.get()
    assert [p["media_id"] for p in case.photos] == ["p1", "p2", "p3"]
    assert case.location is not None and case.location["label"] == "米家社区2号楼东侧路边"
    assert (await Building.get(id=case.building_id)).name == "2号楼"  # the nearest building  # type: ignore[attr-defined]


async def test_another_building_from_the_list(wechat: WeChatPusher) -> None:
    await neighbours()
    for line in ("说事", "3", "电梯停在三楼不动了", "跳过"):
        await wechat.say("case-0", line)
    listing = await wechat.say("case-0", "2")  # 其他楼栋
    assert "5号楼" in listing and "东1栋" not in listing  # the resident's own community only
    assert "电梯·5号楼" in await wechat.say("case-0", option(listing, "5号楼"))
    await wechat.say("case-0", "是")
    case = await Case.get()
    assert (await Building.get(id=case.building_id)).name == "5号楼"  # type: ignore[attr-defined]


# ---------------------------------------------------------------------------- each class's life in chat


async def test_a_small_case_from_report_to_a_rating_of_five(wechat: WeChatPusher, clock: FrozenClock) -> None:
    await neighbours()
    done = await report(wechat, "case-0", "1", WORDS)
    case = await Case.get()
    assert "物业公司" in done
    assert "目前没有待办" in await wechat.say(MEDIATOR, "我的待办")  # not the mediator's

    clock.advance(timedelta(hours=1))
    listing, card, accepted = await handle(wechat, PROPERTY, case, "受理")
    assert f"编号{case.number} 照明·1号楼" in listing
    assert WORDS in card and "小事·照明（公众号）" in card and "期限：12月2日（周三）" in card
    assert f"已受理编号{case.number}" in accepted and "12月2日" in accepted
    assert "已受理" in await pushed_to("case-0")

    asked = await handle(wechat, PROPERTY, case, "问居民", "是哪两层之间的灯？")
    assert "已发给反映人" in asked[-1]
    thanked = await answer_prompt(wechat, "case-0", "三楼和四楼之间")
    assert "谢谢" in thanked and "物业公司" in thanked
    assert "居民补充：三楼和四楼之间" in await pushed_to(PROPERTY)

    clock.advance(timedelta(hours=3))
    noted = await handle(wechat, PROPERTY, case, "记录进展", "已联系电工，明天上午更换", "跳过")
    assert "已记录进展" in noted[-1]
    assert "处理进展：已联系电工" in await pushed_to("case-0")

    clock.advance(timedelta(hours=20))
    resolving = await handle(wechat, PROPERTY, case, "办结", "已更换楼道灯泡")
    assert "请不要写姓名、电话" in resolving[2] and "确认办结吗" in resolving[-1]
    assert f"已办结编号{case.number}" in await wechat.say(PROPERTY, "是")
    assert (await Case.get(id=case.id)).status == Status.RESOLVED

    rating = await answer_prompt(wechat, "case-0", "1")  # 已解决
    assert "打个分" in rating and "5分 非常满意" in rating
    assert "还有什么想说的" in await wechat.say("case-0", option(rating, "5分"))
    thanks = await wechat.say("case-0", "跳过")
    assert "谢谢您的评价" in thanks and "已关闭" in thanks
    case = await Case.get(id=case.id)
    assert (case.status, case.rating, case.closed_reason) == (Status.CLOSED, 5, "rated")
    mine = await wechat.say("case-0", "我的事")
    assert f"编号{case.number} 照明：已关闭（5分）" in mine


async def test_a_private_case_goes_to_the_mediator(wechat: WeChatPusher) -> None:
    await neighbours()
    done = await report(wechat, "case-0", "10", "楼上邻居天天半夜吵架")
    case = await Case.get()
    assert (case.klass, case.level) == (Klass.PRIVATE, Level.MEDIATOR) and "调解员" in done
    assert "目前没有待办" in await wechat.say(PROPERTY, "我的待办")
    accepted = await handle(wechat, MEDIATOR, case, "受理")
    assert "私事·邻里纠纷" in accepted[1] and "已受理" in accepted[-1]
    await handle(wechat, MEDIATOR, case, "办结", "已上门调解，双方达成一致")
    await wechat.say(MEDIATOR, "是")
    assert (await Case.get(id=case.id)).status == Status.RESOLVED
    mine = await wechat.say("case-0", "我的事")
    detail = await wechat.say("case-0", option(mine, f"编号{case.number}"))
    assert "当面说" not in detail  # a private matter is not discussed in public
    assert "评价办理结果" in detail and "已上门调解" in detail


async def test_a_big_case_goes_on_the_agenda_and_a_small_one_may_be_raised_in_person(wechat: WeChatPusher) -> None:
    await neighbours()
    done = await report(wechat, "case-0", "6", "小区车位太少，晚上停不下")
    big = await Case.get()
    assert big.klass == Klass.BIG and "列入逢六议事会议程" in done and "下次议事会：12月6日" in done
    assert (await AgendaItem.get(case_id=big.id)).reason == "big"
    listing = await wechat.say(STAFF, "我的待办")
    card = await wechat.say(STAFF, option(listing, f"编号{big.number} "))
    assert "大事·停车" in card and "期限：等议事会讨论" in card
    await wechat.say(STAFF, "取消")

    await report(wechat, "case-0", "5", "楼前的树枝挡住了路灯")
    small = await Case.filter(klass=Klass.SMALL).get()
    mine = await wechat.say("case-0", "我的事")
    detail = await wechat.say("case-0", option(mine, f"编号{small.number}"))
    assert "当面说" in detail
    said = await wechat.say("case-0", option(detail, "当面说"))
    assert "已列入12月6日逢六议事会议程" in said
    item = await AgendaItem.get(case_id=small.id)
    assert item.reason == "in_person" and (await Case.get(id=small.id)).in_person


async def test_not_fixed_reopens_to_the_same_handler(wechat: WeChatPusher, clock: FrozenClock) -> None:
    await neighbours()
    await report(wechat, "case-0", "2", "楼下下水道堵了，返味")
    case = await Case.get()
    await handle(wechat, PROPERTY, case, "办结", "已疏通下水道")
    await wechat.say(PROPERTY, "是")
    clock.advance(timedelta(hours=5))
    asked = await answer_prompt(wechat, "case-0", "没有解决")
    assert "哪里还没有解决" in asked
    reopened = await wechat.say("case-0", "还是堵，水下不去")
    assert "已退回物业公司重新办理" in reopened and "前给您答复" in reopened
    case = await Case.get(id=case.id)
    assert (case.status, case.level, case.reopened) == (Status.IN_PROGRESS, Level.PROPERTY, 1)
    assert "居民反馈没有解决，已退回重办：还是堵" in await pushed_to(PROPERTY)
    assert f"编号{case.number} " in await wechat.say(PROPERTY, "我的待办")


async def test_the_queue_puts_overdue_cases_first(wechat: WeChatPusher, clock: FrozenClock) -> None:
    await neighbours()
    await report(wechat, "case-0", "1", "楼道灯坏了")  # lighting: 3 working days
    await report(wechat, "case-1", "3", "电梯停了")  # lift: 1 working day, due on Monday 09:00
    lighting, lift = await Case.all().order_by("id")
    clock.set(datetime(2026, 11, 30, 2, 0, tzinfo=UTC))  # Monday 10:00 (nobody swept the deadlines yet)
    listing = await wechat.say(PROPERTY, "我的待办")
    lines = [line for line in listing.splitlines() if "编号" in line]
    assert lines[0] == f"1. 【已超期】编号{lift.number} 电梯·1号楼"
    assert lines[1] == f"2. 编号{lighting.number} 照明·1号楼"
    card = await wechat.say(PROPERTY, "1")
    assert "期限：11月30日（周一）（已超期）" in card
    assert "已超期" in await wechat.say("case-1", "我的事")


async def test_pass_up_and_reclassify_in_chat(wechat: WeChatPusher) -> None:
    await neighbours()
    await report(wechat, "case-0", "8", "楼顶的广告牌松了，风大会掉")
    case = await Case.get()
    replies = await handle(wechat, PROPERTY, case, "上报", "需要高空作业车，物业没有")
    assert "确认上报" in replies[-1]
    assert "现由网格员处理" in await wechat.say(PROPERTY, "是")
    assert (await Case.get(id=case.id)).level == Level.GRID
    replies = await handle(wechat, GRID, case, "改分类")
    assert "现在是小事" in replies[-1] and "大事（议事会讨论）" in replies[-1]
    assert "原因" in await wechat.say(GRID, option(replies[-1], "大事"))
    assert "已改为大事，编号" in await wechat.say(GRID, "牵涉全小区的广告牌")
    case = await Case.get(id=case.id)
    assert (case.klass, case.level) == (Klass.BIG, Level.COMMUNITY)


# ---------------------------------------------------------------------------- staff and proxies


async def test_staff_enter_a_hotline_case_for_a_caller_not_registered_here(wechat: WeChatPusher) -> None:
    await neighbours()
    assert "仅限相关工作人员" in await wechat.say("case-0", "代录说事")
    assert "12345热线" in await wechat.say(STAFF, "代录说事")
    assert "手机号" in await wechat.say(STAFF, "2")
    assert "11位手机号" in await wechat.say(STAFF, "12345")
    buildings = await wechat.say(STAFF, "13700001111")
    assert "没有登记这个号码" in buildings and "137****1111" in buildings and "5号楼" in buildings
    assert "1. 照明" in await wechat.say(STAFF, "1号楼")
    await wechat.say(STAFF, "2")
    summary = await wechat.say(STAFF, "小区门口下水道堵了，污水漫到路上")
    assert "12345热线·来电137****1111" in summary and "下水与供水·1号楼" in summary
    done = await wechat.say(STAFF, "是")
    case = await Case.get()
    assert f"已录入，编号{case.number}" in done and "电话告知" in done
    staff = await Resident.get(name="周社工")
    assert (case.source, case.reporter_id, case.contact, case.entered_by_id) == (  # type: ignore[attr-defined]
        Source.HOTLINE, None, "13700001111", staff.id)
    card = (await handle(wechat, PROPERTY, case, "取消"))[1]
    assert "（12345热线）" in card and "来电：13700001111" in card and "问居民" not in card


async def test_a_grid_worker_enters_a_case_told_in_person(wechat: WeChatPusher) -> None:
    people = await neighbours()
    await wechat.say(GRID, "代录说事")
    await wechat.say(GRID, "1")
    found = await wechat.say(GRID, "139 3333 0001")
    assert "反映人：乙居民（1号楼）" in found and "1. 照明" in found
    await wechat.say(GRID, "9")
    assert "现场反映·居民" in await wechat.say(GRID, "物业费收据开错了")
    assert "进展会推送给居民" in await wechat.say(GRID, "是")
    case = await Case.get()
    grid = await Resident.get(name="李网格")
    assert (case.source, case.reporter_id, case.entered_by_id) == (Source.IN_PERSON, people["乙居民"].id, grid.id)  # type: ignore[attr-defined]
    assert f"编号{case.number}" in await wechat.say("case-1", "我的事")
    # 丁 lives in 第二网格: not this grid worker's to look up
    await wechat.say(GRID, "代录说事")
    await wechat.say(GRID, "1")
    assert "没有登记这个号码" in await wechat.say(GRID, "13933330003")


async def test_a_family_member_reports_for_the_elder(wechat: WeChatPusher) -> None:
    from tests.test_family import SON, linked_and_acting

    await linked_and_acting(wechat)
    asked = await wechat.say(SON, "说事")
    assert "（为王秀兰反映）" in asked
    await wechat.say(SON, "1")
    await wechat.say(SON, "单元门口的灯坏了")
    assert "本楼 1号楼" in await wechat.say(SON, "跳过")  # her building, not his
    await wechat.say(SON, "1")
    done = await wechat.say(SON, "是")
    assert "已为王秀兰提交" in done
    case = await Case.get()
    elder, son = await Resident.get(name="王秀兰"), await Resident.get(name="李建国")
    assert (case.reporter_id, case.entered_by_id) == (elder.id, son.id)  # type: ignore[attr-defined]
    action = await Action.get(action="report_case")
    assert (action.actor_id, action.subject_id, action.detail["case_id"]) == (son.id, elder.id, case.id)  # type: ignore[attr-defined]
    assert f"编号{case.number}" in await wechat.say(SON, "我的事")
    # she has no WeChat: he hears what she would, answers the handler's question and rates for her
    assert "和您" in done
    await handle(wechat, PROPERTY, case, "问居民", "是几单元的门口？")
    assert "谢谢" in await answer_prompt(wechat, SON, "二单元")
    await handle(wechat, PROPERTY, case, "办结", "已更换单元门灯泡")
    assert f"已办结编号{case.number}" in await wechat.say(PROPERTY, "是")
    rating = await answer_prompt(wechat, SON, "1")
    await wechat.say(SON, option(rating, "4分"))
    assert "谢谢您的评价" in await wechat.say(SON, "跳过")
    case = await Case.get(id=case.id)
    assert (case.status, case.rating) == (Status.CLOSED, 4)


# ---------------------------------------------------------------------------- one case per confirmation


async def test_a_retried_or_double_tapped_confirmation_makes_one_case(
    wechat: WeChatPusher, monkeypatch: pytest.MonkeyPatch,
) -> None:
    await neighbours()
    for line in ("说事", "1", WORDS, "跳过", "1"):
        await wechat.say("case-0", line)
    # the first delivery creates the case, then fails before replying: WeChat retries the same message
    import handlers.cases

    real = handlers.cases.promise_text
    calls = []

    def failing_once(case: Case) -> str:
        calls.append(case.id)
        if len(calls) == 1:
            raise RuntimeError("the reply failed")
        return real(case)

    monkeypatch.setattr(handlers.cases, "promise_text", failing_once)
    xml = text_xml("case-0", "是", create_time=wechat.now())
    assert (await wechat.push(xml)).status == 500
    retried = await wechat.push(xml)
    case = await Case.get()
    assert f"已提交，编号{case.number}，不用再发了" in retried.text
    # a double tap: two confirmations at once, each its own message
    for line in ("说事", "3", "电梯门关不上", "跳过", "1"):
        await wechat.say("case-0", line)
    first, second = await asyncio.gather(wechat.say("case-0", "是"), wechat.say("case-0", "是"))
    assert await Case.all().count() == 2
    assert sum("已提交，编号" in reply for reply in (first, second)) == 1
    assert await OutboxMessage.filter(openid=PROPERTY).count() == 2  # told once per case


# ---------------------------------------------------------------------------- every reply fits


async def test_every_reply_fits_in_300_characters(wechat: WeChatPusher, clock: FrozenClock) -> None:
    await neighbours()
    replies: list[str] = []

    async def say(openid: str, text: str) -> str:
        replies.append(await wechat.say(openid, text))
        return replies[-1]

    long = "楼道里的灯" + "忽明忽暗，" * 59  # 300 characters
    assert len(long) == 300
    await say("case-0", "说事")
    await say("case-0", "5")
    await say("case-0", long)
    for i in range(3):
        replies.append(await wechat.image("case-0", f"w{i}"))
    await say("case-0", "1")
    await say("case-0", "是")
    first = await Case.get()
    # five more cases of the same kind nearby: the similar list and 我的事 at their longest
    for i, person in enumerate(("case-1", "case-2", "case-0", "case-0", "case-0")):
        await say(person, "说事")
        await say(person, "5")
        await say(person, long[: 299 - i])
        await say(person, "跳过")
        offer = await say(person, "1")
        if "是同一件事吗" in offer:
            await say(person, option(offer, "不是，提交新问题"))
        else:
            await say(person, "是")
    assert await Case.all().count() == 6
    mine = await say("case-0", "我的事")
    await say("case-0", "1")
    await say("case-0", "取消")
    # the handler's card of a 300-character description, continued on request
    listing = await say(PROPERTY, "我的待办")
    card = await say(PROPERTY, option(listing, f"编号{first.number} "))
    assert "看完整描述" in card
    rest = await say(PROPERTY, option(card, "看完整描述"))
    assert "（续）" in rest and long[-10:] in rest
    await say(PROPERTY, "看照片（3张）")
    assert await OutboxMessage.filter(openid=PROPERTY, kind="image").count() == 3
    await say(PROPERTY, "受理")
    for reply in await handle(wechat, PROPERTY, first, "办结", "已全部更换为声控灯", "是"):
        replies.append(reply)
    assert "编号" in mine
    rating = await answer_prompt(wechat, "case-0", "2")
    replies.append(rating)
    await say("case-0", "3")
    await say("case-0", "灯换了，但是二楼的还是暗" * 8)
    mine = await say("case-0", "我的事")
    await say("case-0", option(mine, f"编号{first.number}"))
    too_long = [r for r in replies if len(r) > REPLY_MAX_CHARS]
    assert not too_long, too_long
    first = await Case.get(id=first.id)
    assert (first.status, first.rating) == (Status.CLOSED, 3)


async def test_feedback_reached_from_my_cases(wechat: WeChatPusher) -> None:
    """A resident who skipped the pushed question can still rate from 我的事."""
    await neighbours()
    await report(wechat, "case-0", "1", WORDS)
    case = await Case.get()
    await handle(wechat, PROPERTY, case, "办结", "已更换灯泡", "是")
    mine = await wechat.say("case-0", "我的事")
    detail = await wechat.say("case-0", option(mine, f"编号{case.number}"))
    asked = await wechat.say("case-0", option(detail, "评价"))
    assert "问题解决了吗" in asked and "已更换灯泡" in asked
    rating = await wechat.say("case-0", "2")  # 部分解决
    await wechat.say("case-0", option(rating, "4分"))
    assert "谢谢您的评价" in await wechat.say("case-0", "灯亮了，但是开关不灵")
    case = await Case.get(id=case.id)
    assert (case.status, case.rating) == (Status.CLOSED, 4)


async def test_a_keyword_is_no_answer_to_a_handlers_question(wechat: WeChatPusher) -> None:
    await neighbours()
    await report(wechat, "case-0", "1", WORDS)
    case = await Case.get()
    await handle(wechat, PROPERTY, case, "问居民", "是哪两层之间的灯？")
    mine = await answer_prompt(wechat, "case-0", "我的事")  # starts 我的事; the question stays open
    assert f"编号{case.number}" in mine and not await CaseEvent.filter(kind="info_given").exists()
    await wechat.say("case-0", "取消")
    assert "谢谢" in await wechat.say("case-0", "三楼和四楼之间")
    assert (await CaseEvent.get(kind="info_given")).note == "三楼和四楼之间"


async def test_missed_deadlines_escalate_across_two_levels_and_everyone_hears(
    wechat: WeChatPusher, clock: FrozenClock
) -> None:
    """The lift case (the property company: 1 working day) is not taken: the grid worker gets it;
    the grid worker takes it and misses 2 working days: the community gets it and its agenda too."""
    from models.jobs import sweep_due

    await neighbours()
    clock.set(datetime(2026, 11, 23, 2, 0, tzinfo=UTC))  # Monday 10:00 in Shanghai
    await report(wechat, "case-0", "3", "电梯停在五楼不动了")
    case = await Case.get()
    assert "目前没有待办" in await wechat.say(GRID, "我的待办")

    clock.advance(timedelta(days=1, minutes=1))
    await sweep_due(clock.now())  # what the scheduler's due-action job runs every minute
    assert "已转交网格员处理" in await pushed_to("case-0")
    assert "由物业公司上报" in await pushed_to(GRID) and "超过办理期限" in await pushed_to(GRID)
    listing, _card, taken = await handle(wechat, GRID, case, "受理")
    assert f"编号{case.number}" in listing and "已受理" in taken
    assert "目前没有待办" in await wechat.say(PROPERTY, "我的待办")  # no longer the property company's

    clock.advance(timedelta(days=2, minutes=1))  # Wednesday → Friday: two working days
    await sweep_due(clock.now())
    assert "已转交社区处理" in await pushed_to("case-0")
    assert f"编号{case.number}" in await wechat.say(STAFF, "我的待办")
    case = await Case.get(id=case.id)
    assert (case.level, case.missed_deadlines, case.escalations) == (Level.COMMUNITY, 2, 2)
    assert await AgendaItem.filter(case_id=case.id, reason="escalated").exists()
    mine = await wechat.say("case-0", "我的事")
    assert f"编号{case.number}" in mine and "社区" in mine
