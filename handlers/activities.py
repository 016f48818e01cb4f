"""活动: volunteer activities in chat and through /api/v1 (publish, sign up, check in, hours).

Chat, for everyone bound: 活动 (open activities, details, sign up), 我的活动 (withdraw, declare
hours), 签到 (the typed code; scanning an activity's QR code starts it too). For organisers and
community staff: 发布活动, 活动管理 (the card, 点名, the signed-up list, cancel), 签到码 (the QR code
as an image and the typed code), 待确认时长 (declared hours: confirm or reject with a reason).
The rules live in models/activities.py; both surfaces call the same operations.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable
from datetime import date, datetime
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo

from pydantic import BaseModel, Field, field_validator

from bot.api import (
    INT_MAX,
    ApiError,
    ApiRequest,
    ApiRouter,
    FileBody,
    Query,
    Strict,
    idempotency_key,
    invalid,
    once,
    real_day,
)
from bot.engine import REPLY_MAX_CHARS, Ask, Done, Engine, Flow, Goto, Inbound, Question, choice, confirm, free_text
from bot.wxclient import WeChatAPIError, WeChatUnavailable
from models import media
from models.activities import (
    CHECKIN_EARLY,
    CHECKIN_LABELS,
    DESCRIPTION_MAX,
    HOURS_LABELS,
    MANAGERS,
    NOTE_MAX,
    PLACE_MAX,
    SCENE_PREFIX,
    SLOTS_MAX,
    STATUS_LABELS,
    TITLE_MAX,
    Activity,
    ActivityStatus,
    CheckedIn,
    HoursStatus,
    Signup,
    SignupStatus,
    cancel,
    check_in,
    check_in_by_code,
    check_in_scene,
    check_times,
    checkin_ticket,
    declare_cap,
    declare_hours,
    hours_text,
    kind_label,
    local_span,
    managed,
    managed_activities,
    may_manage,
    open_activities,
    parse_minutes,
    parse_when,
    pending_declarations,
    points_for,
    publish,
    publishing_communities,
    review_hours,
    sign_up,
    signup_list,
    signups_of,
    span_minutes,
    taken_counts,
    tick,
    visible,
    when_text,
    withdraw,
)
from models.errors import UserFacingError
from models.love_bank import ACTIVITY_TYPES, settings_of
from models.outbox import Priority, enqueue
from models.residents import Resident

LABEL_MAX = 22  # an activity's title in a numbered list
TICK_PAGE = 8  # volunteers per page of 点名
FULLWIDTH = str.maketrans("０１２３４５６７８９", "0123456789")


# ---------------------------------------------------------------------------- helpers


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: max(limit - 1, 0)] + "…"


def _fit(head: str, items: list[tuple[Any, str]], tail: tuple[tuple[Any, str], ...] = ()) -> Question:
    """A numbered list that fits one reply: the last items give way, and the head says how many."""
    shown = list(items)
    while True:
        hidden = len(items) - len(shown)
        question = choice(head + (f"（另有{hidden}项未列出）" if hidden else ""), [*shown, *tail])
        if len(question.render()) <= REPLY_MAX_CHARS or not shown:
            return question
        shown.pop()


def _short(activity: Activity, tz: ZoneInfo) -> str:
    start = activity.starts_at.astimezone(tz)
    return f"{start.month}月{start.day}日{start:%H:%M}"


def _card(activity: Activity, taken: int, tz: ZoneInfo, *, room: int = REPLY_MAX_CHARS) -> str:
    """What a volunteer reads about an activity, its description clipped to ``room`` characters in all."""
    span = span_minutes(activity)
    lines = [f"{activity.title}（{kind_label(activity.kind)}）", f"时间：{when_text(activity, tz)}",
             f"地点：{activity.place}", f"名额：已报{taken}/{activity.slots}",
             f"积分：{activity.points_per_hour}分/小时，全程{hours_text(span)}约"
             f"{points_for(span, activity.points_per_hour)}分"]
    if activity.status == ActivityStatus.CANCELLED:
        lines.append(f"已取消：{activity.cancel_reason}")
    text = "\n".join(lines)
    if activity.description:
        left = room - len(text) - len("\n说明：")
        if left > 10:
            text += "\n说明：" + _clip(activity.description, left)
    return text


async def _taken(activity: Activity) -> int:
    return (await taken_counts([activity.id])).get(activity.id, 0)


def _state(signup: Signup, activity: Activity, now: datetime) -> str:
    """Where a volunteer's place stands, in a few words."""
    if activity.status == ActivityStatus.CANCELLED:
        return "活动已取消"
    if signup.hours_status == HoursStatus.CONFIRMED:
        return f"已确认{hours_text(signup.minutes or 0)}"
    if signup.hours_status == HoursStatus.PENDING:
        return "时长待确认"
    if signup.hours_status == HoursStatus.REJECTED and signup.checked_in_at is None:
        return "申报未通过"
    if signup.checked_in_at is not None:
        return "已签到"
    if now < activity.starts_at - CHECKIN_EARLY:
        return "待参加"
    if now <= activity.ends_at:
        return "可签到"
    return "未签到"


async def _run(action: Awaitable[str]) -> Done:
    """A last step: what the model did, or its refusal as it put it."""
    try:
        return Done(await action)
    except UserFacingError as exc:
        return Done(exc.message)


# ---------------------------------------------------------------------------- 活动: browse and sign up

browse = Flow("activities", "志愿活动", keywords=("活动", "志愿活动", "参加活动", "报名活动"), as_self=True)


@browse.entry
async def list_open(resident: Resident, now: datetime, tz: ZoneInfo) -> Ask | Done:
    """The open activities of the resident's community with places left, soonest first."""
    found = await open_activities(resident.community_id, now)  # type: ignore[attr-defined]
    if not found:
        return Done("现在没有可以报名的志愿活动。回复“我的活动”查看已报名的活动。")
    mine = set(await Signup.filter(resident_id=resident.id, status=SignupStatus.SIGNED,
                                   activity_id__in=[a.id for a, _ in found]).values_list("activity_id", flat=True))
    items = [(a.id, f"{_short(a, tz)} {_clip(a.title, LABEL_MAX)}（余{a.slots - taken}）"
              + ("·已报名" if a.id in mine else "")) for a, taken in found]
    return Ask("pick", _fit("可以报名的志愿活动（回复序号看详情）：", items))


@browse.step("pick")
async def show_activity(answer: int, resident: Resident, data: dict[str, Any], now: datetime,
                        tz: ZoneInfo) -> Ask | Done:
    """The activity's card; sign up after a confirmation (or say why not)."""
    activity = await visible(answer, resident)
    taken = await _taken(activity)
    ask = "\n报名参加吗？"
    card = _card(activity, taken, tz, room=REPLY_MAX_CHARS - len(confirm(ask).render()))
    signup = await Signup.get_or_none(activity_id=activity.id, resident_id=resident.id, status=SignupStatus.SIGNED)
    if signup is not None:
        return Done(card + "\n您已报名。回复“我的活动”可以退出报名。")
    if activity.status == ActivityStatus.CANCELLED:
        return Done(card)
    if now >= activity.starts_at:
        return Done(card + "\n活动已经开始，不能报名了。")
    if taken >= activity.slots:
        return Done(card + "\n名额已经报满了。")
    data["activity_id"] = activity.id
    return Ask("confirm", confirm(card + ask))


@browse.step("confirm")
async def confirm_signup(answer: bool, resident: Resident, data: dict[str, Any], now: datetime,
                         tz: ZoneInfo) -> Done:
    """Take the place (checked again: it may have filled up meanwhile)."""
    if not answer:
        return Done("好的，没有报名。回复“活动”查看其他活动。")

    async def go() -> str:
        signup, _ = await sign_up(data["activity_id"], resident, now)
        activity = await Activity.get(id=signup.activity_id)
        return (f"报名成功！“{activity.title}”{when_text(activity, tz)}，地点：{activity.place}。\n"
                "到场后用微信扫组织者出示的签到码，或回复“签到”输入签到码。")
    return await _run(go())


# ---------------------------------------------------------------------------- 我的活动: withdraw, declare hours

mine = Flow("my_activities", "我的活动", keywords=("我的活动", "我报名的活动"), as_self=True)


@mine.entry
async def list_mine(resident: Resident, now: datetime, tz: ZoneInfo) -> Ask | Done:
    """The resident's places on coming and recent activities, with where each stands."""
    found = await signups_of(resident.id, now)
    if not found:
        return Done("您还没有报名志愿活动。回复“活动”查看可以报名的活动。")
    items = [(s.activity_id, f"{_short(s.activity, tz)} {_clip(s.activity.title, LABEL_MAX)}："
              f"{_state(s, s.activity, now)}") for s in found]
    return Ask("pick", _fit("您报名的活动（回复序号办理）：", items))


@mine.step("pick")
async def show_mine(answer: int, resident: Resident, data: dict[str, Any], now: datetime,
                    tz: ZoneInfo) -> Ask | Done:
    """The place's state; offer 退出报名 before the start, 申报服务时长 after it (until confirmed)."""
    activity = await visible(answer, resident)
    signup = await Signup.get_or_none(activity_id=activity.id, resident_id=resident.id, status=SignupStatus.SIGNED)
    if signup is None:
        return Done("您没有报名这个活动。回复“活动”查看可以报名的活动。")
    lines = [f"{activity.title}", f"时间：{when_text(activity, tz)}", f"地点：{activity.place}",
             f"状态：{_state(signup, activity, now)}"]
    if signup.checked_in_at is not None:
        how = CHECKIN_LABELS.get(signup.checked_in_by, "")
        lines.append(f"签到：{signup.checked_in_at.astimezone(tz):%H:%M} {how}")
    if signup.hours_status == HoursStatus.PENDING:
        lines.append(f"申报：{hours_text(signup.minutes or 0)}，等组织者确认")
    if signup.hours_status == HoursStatus.REJECTED:
        lines.append(f"未通过原因：{_clip(signup.hours_note, 60)}")
    actions: list[tuple[str, str]] = []
    if activity.status == ActivityStatus.OPEN:
        if now < activity.starts_at and signup.checked_in_at is None:
            actions.append(("withdraw", "退出报名"))
        if now >= activity.starts_at and signup.hours_status != HoursStatus.CONFIRMED:
            actions.append(("declare", "申报服务时长（没签上或时间不同）"))
    text = "\n".join(lines)
    if not actions:
        return Done(text)
    data["activity_id"] = activity.id
    return Ask("action", choice(text, actions))


@mine.step("action")
async def mine_action(answer: str, data: dict[str, Any]) -> Ask:
    """Confirm the withdrawal, or ask how long they served."""
    activity = await Activity.get(id=data["activity_id"])
    if answer == "withdraw":
        return Ask("withdraw", confirm(f"确定退出“{activity.title}”吗？名额会让给其他志愿者。"))
    return Ask("minutes", free_text(f"您实际服务了多长时间？例如：2小时、1小时30分钟或90分钟"
                                    f"（最多{hours_text(declare_cap(activity))}）", max_len=20))


@mine.step("withdraw")
async def confirm_withdraw(answer: bool, resident: Resident, data: dict[str, Any], now: datetime) -> Done:
    """Give the place back."""
    if not answer:
        return Done("好的，您的报名保留着。")

    async def go() -> str:
        await withdraw(data["activity_id"], resident.id, now)
        activity = await Activity.get(id=data["activity_id"])
        return f"已退出“{activity.title}”。回复“活动”查看其他活动。"
    return await _run(go())


@mine.step("minutes")
async def got_minutes(answer: str, data: dict[str, Any]) -> Ask:
    """Keep the minutes (within the cap), ask for a note."""
    minutes = parse_minutes(answer)
    cap = declare_cap(await Activity.get(id=data["activity_id"]))
    if not 1 <= minutes <= cap:
        raise UserFacingError(f"申报时长要在1分钟到{hours_text(cap)}之间。")
    data["minutes"] = minutes
    return Ask("note", free_text("请简单说明，例如：没扫上码，9点到11点在现场帮忙。", max_len=NOTE_MAX))


@mine.step("note")
async def got_note(answer: str, data: dict[str, Any]) -> Ask:
    """Show the declaration and ask before sending it to the organiser."""
    data["note"] = answer
    activity = await Activity.get(id=data["activity_id"])
    return Ask("declare", confirm(f"申报“{activity.title}”服务时长{hours_text(data['minutes'])}，"
                                  f"说明：{answer}\n提交给组织者确认吗？"))


@mine.step("declare")
async def confirm_declare(answer: bool, resident: Resident, data: dict[str, Any], now: datetime) -> Done:
    """Record the declaration; the organiser is told."""
    if not answer:
        return Done("好的，没有提交。")

    async def go() -> str:
        await declare_hours(data["activity_id"], resident.id, data["minutes"], data["note"], now)
        return "已提交，组织者确认后积分会发到您的账户，届时会通知您。"
    return await _run(go())


# ---------------------------------------------------------------------------- 签到: QR scan or typed code

checkin = Flow("checkin", "签到", keywords=("签到",), scenes=(SCENE_PREFIX,), as_self=True,
               takes_argument=True)


def _checked(result: CheckedIn, tz: ZoneInfo) -> Done:
    activity, signup = result.activity, result.signup
    if not result.new:
        at = signup.checked_in_at.astimezone(tz) if signup.checked_in_at else None
        return Done(f"您已经在{at:%H:%M}签到过“{activity.title}”了，不用重复签到。" if at else "您已经签到过了。")
    span = span_minutes(activity)
    if result.credited is not None:
        return Done(f"签到成功！“{activity.title}”已结束，服务时长{hours_text(span)}已确认，"
                    f"获得{result.credited}积分。")
    return Done(f"签到成功！“{activity.title}”{when_text(activity, tz)}。活动结束后计入服务时长"
                f"{hours_text(span)}（{points_for(span, activity.points_per_hour)}积分），届时会通知您。")


def _code_in(msg: Inbound) -> str:
    """The code after the keyword, when the whole message was e.g. "签到 123456"."""
    text = msg.text.strip() if msg.has_text else ""
    return text.removeprefix("签到").strip() if text.startswith("签到") else ""


@checkin.entry
async def start_checkin(resident: Resident, data: dict[str, Any], msg: Inbound, now: datetime,
                        tz: ZoneInfo) -> Ask | Done:
    """A scanned code checks in at once; 签到 with the code too; 签到 alone asks for the code."""
    if data.get("scene"):
        return _checked(await check_in_scene(data["scene"], resident.id, now, tz), tz)
    code = _code_in(msg)
    if code:
        return _checked(await check_in_by_code(code, resident.id, now, tz), tz)
    return Ask("code", free_text("请输入组织者给的6位签到码：", max_len=20))


@checkin.step("code")
async def got_code(answer: str, resident: Resident, now: datetime, tz: ZoneInfo) -> Done:
    """Check in with the typed code (a code that is not 6 digits is asked again)."""
    code = answer.strip().translate(FULLWIDTH)
    if not (len(code) == 6 and code.isdigit()):
        raise UserFacingError("签到码是6位数字。")
    try:
        return _checked(await check_in_by_code(code, resident.id, now, tz), tz)
    except UserFacingError as exc:
        return Done(exc.message)


# ---------------------------------------------------------------------------- 签到码: the organiser's QR code

qr = Flow("checkin_qr", "签到码", keywords=("签到码", "签到二维码"), roles=MANAGERS, in_menu=False)


async def _live_items(actor: Resident, now: datetime, tz: ZoneInfo) -> list[tuple[int, str]]:
    return [(a.id, f"{_short(a, tz)} {_clip(a.title, LABEL_MAX)}")
            for a in await managed_activities(actor.id, now, live_only=True)]


@qr.entry
async def qr_pick(actor: Resident, data: dict[str, Any], msg: Inbound, engine: Engine, now: datetime,
                  tz: ZoneInfo) -> Ask | Done:
    """The activity (asked when there are several), then its code."""
    if data.get("activity_id"):
        return await _send_qr(data["activity_id"], actor, msg, engine, now, tz)
    items = await _live_items(actor, now, tz)
    if not items:
        return Done("您没有进行中或即将开始的活动。回复“发布活动”可以发布。")
    if len(items) == 1:
        return await _send_qr(items[0][0], actor, msg, engine, now, tz)
    return Ask("pick", _fit("出示哪个活动的签到码？", items))


@qr.step("pick")
async def qr_picked(answer: int, actor: Resident, msg: Inbound, engine: Engine, now: datetime,
                    tz: ZoneInfo) -> Done:
    """Send the chosen activity's code."""
    return await _send_qr(answer, actor, msg, engine, now, tz)


async def _send_qr(activity_id: int, actor: Resident, msg: Inbound, engine: Engine, now: datetime,
                   tz: ZoneInfo) -> Done:
    """The QR code as an image message (through the outbox) and the typed code in the reply."""
    activity = await managed(activity_id, actor.id)
    typed = f"不方便扫码的志愿者回复“签到”，输入签到码：{activity.checkin_code}"
    sender = engine.sender
    if sender is None:
        return Done(f"现在发不了二维码图片。{typed}")
    try:
        activity, ticket = await checkin_ticket(activity.id, actor.id, sender.client, now)
        stored = await media.store(await sender.client.qrcode_image(ticket), now)
    except (WeChatAPIError, WeChatUnavailable, media.MediaRefused):
        return Done(f"微信暂时生成不了二维码，请稍后再回复“签到码”。{typed}")
    await enqueue(openid=msg.openid, kind="image", payload={"media_id": "", "media_at": now.isoformat(),
                                                           "stored": stored},
                  idempotency_key=f"activity:{activity.id}:qr:{msg.openid}:{now.isoformat()}", now=now,
                  priority=Priority.REPLY)
    sender.notify()
    opens = (activity.starts_at - CHECKIN_EARLY).astimezone(tz)
    return Done(f"“{activity.title}”的签到二维码正在发给您（图片），请志愿者用微信扫一扫，"
                f"{opens:%H:%M}起可以签到。{typed}")


# ---------------------------------------------------------------------------- 发布活动

publish_flow = Flow("activity_publish", "发布活动", keywords=("发布活动",), roles=MANAGERS)


async def _ask_kind(data: dict[str, Any]) -> Ask:
    rates = (await settings_of(data["community_id"])).rates
    items = [(t.code, f"{t.label}（{rates[t.code]}积分/小时）") for t in ACTIVITY_TYPES]
    return Ask("kind", choice("活动类型？", items))


@publish_flow.entry
async def start_publish(actor: Resident, data: dict[str, Any]) -> Ask | Done:
    """Pick the community (when there are several), then the type."""
    communities = await publishing_communities(actor.id)
    if not communities:
        return Done("您的角色没有可以发布活动的社区。")
    if len(communities) > 1:
        return Ask("community", choice("在哪个社区发布活动？", communities))
    data["community_id"] = communities[0][0]
    return await _ask_kind(data)


@publish_flow.step("community")
async def got_community(answer: int, data: dict[str, Any]) -> Ask:
    """Store the community, ask the type."""
    data["community_id"] = answer
    return await _ask_kind(data)


@publish_flow.step("kind")
async def got_kind(answer: str, data: dict[str, Any]) -> Ask:
    """Store the type, ask the title."""
    data["kind"] = answer
    return Ask("title", free_text(f"活动名称？（{TITLE_MAX}字以内）例如：敬老院陪老人聊天", max_len=TITLE_MAX))


@publish_flow.step("title")
async def got_title(answer: str, data: dict[str, Any]) -> Ask:
    """Store the title, ask the time."""
    data["title"] = answer
    return Ask("when", free_text("活动时间？例如：12月5日 09:00-11:30（最长12小时）", max_len=30))


@publish_flow.step("when")
async def got_when(answer: str, data: dict[str, Any], now: datetime, tz: ZoneInfo) -> Ask:
    """A time later than now, at most 12 hours long; ask the place."""
    day, starts, ends = parse_when(answer, now.astimezone(tz).date())
    starts_at, ends_at = local_span(day, starts, ends, tz)
    check_times(starts_at, ends_at, now)
    data["starts_at"], data["ends_at"] = starts_at.isoformat(), ends_at.isoformat()
    return Ask("place", free_text(f"活动地点？（{PLACE_MAX}字以内）", max_len=PLACE_MAX))


@publish_flow.step("place")
async def got_place(answer: str, data: dict[str, Any]) -> Ask:
    """Store the place, ask the slots."""
    data["place"] = answer
    return Ask("slots", free_text(f"招募几名志愿者？（1到{SLOTS_MAX}）", max_len=5))


@publish_flow.step("slots")
async def got_slots(answer: str, data: dict[str, Any]) -> Ask:
    """Store the slots, ask the description."""
    text = answer.strip().translate(FULLWIDTH).removesuffix("名").removesuffix("人")
    if not text.isdigit() or not 1 <= int(text) <= SLOTS_MAX:
        raise UserFacingError(f"请回复1到{SLOTS_MAX}之间的数字。")
    data["slots"] = int(text)
    return Ask("description", free_text("活动说明（做什么、带什么、找谁），没有请回复“跳过”：",
                                        max_len=DESCRIPTION_MAX))


@publish_flow.step("description")
async def got_description(answer: str, data: dict[str, Any], tz: ZoneInfo) -> Ask:
    """Show the whole activity and ask before publishing."""
    data["description"] = "" if answer.strip() in ("跳过", "没有", "无", "skip") else answer
    starts_at, ends_at = datetime.fromisoformat(data["starts_at"]), datetime.fromisoformat(data["ends_at"])
    rate = (await settings_of(data["community_id"])).rate(data["kind"])
    draft = Activity(title=data["title"], kind=data["kind"], place=data["place"], starts_at=starts_at,
                     ends_at=ends_at, slots=data["slots"], points_per_hour=rate, description=data["description"],
                     status=ActivityStatus.OPEN)
    ask = "\n确认发布吗？"
    return Ask("confirm", confirm(_card(draft, 0, tz, room=REPLY_MAX_CHARS - len(confirm(ask).render())) + ask))


@publish_flow.step("confirm")
async def confirm_publish(answer: bool, actor: Resident, data: dict[str, Any], now: datetime) -> Done:
    """Publish (checked again: the time may have passed meanwhile)."""
    if not answer:
        return Done("好的，没有发布。")

    async def go() -> str:
        activity = await publish(
            community_id=data["community_id"], organiser_id=actor.id, title=data["title"], kind=data["kind"],
            place=data["place"], starts_at=datetime.fromisoformat(data["starts_at"]),
            ends_at=datetime.fromisoformat(data["ends_at"]), slots=data["slots"], now=now,
            description=data["description"])
        return (f"已发布“{activity.title}”，居民回复“活动”即可报名。签到码：{activity.checkin_code}。"
                "活动当天回复“签到码”获取签到二维码，回复“活动管理”点名和查看报名。")
    return await _run(go())


# ---------------------------------------------------------------------------- 活动管理

manage = Flow("activity_manage", "活动管理", keywords=("活动管理", "管理活动"), roles=MANAGERS)


@manage.entry
async def list_managed(actor: Resident, now: datetime, tz: ZoneInfo) -> Ask | Done:
    """The activities the actor manages: coming, running and recently ended."""
    found = await managed_activities(actor.id, now)
    if not found:
        return Done("您还没有发布活动。回复“发布活动”可以发布。")
    taken = await taken_counts([a.id for a in found])
    items = [(a.id, f"{_short(a, tz)} {_clip(a.title, LABEL_MAX)}（{taken.get(a.id, 0)}/{a.slots}）"
              + ("·已取消" if a.status == ActivityStatus.CANCELLED else "")) for a in found]
    return Ask("pick", _fit("您管理的活动（回复序号）：", items))


async def _manage_card(activity: Activity, data: dict[str, Any], now: datetime, tz: ZoneInfo,
                       prefix: str = "") -> Ask | Done:
    signups = await Signup.filter(activity_id=activity.id, status=SignupStatus.SIGNED)
    checked = sum(1 for s in signups if s.checked_in_at is not None)
    pending = sum(1 for s in signups if s.hours_status == HoursStatus.PENDING)
    lines = [activity.title, f"时间：{when_text(activity, tz)}", f"地点：{activity.place}",
             f"报名：{len(signups)}/{activity.slots}  已签到：{checked}  待确认时长：{pending}",
             f"签到码：{activity.checkin_code}"]
    if activity.status == ActivityStatus.CANCELLED:
        lines[-1] = f"已取消：{activity.cancel_reason}"
    actions: list[tuple[str, str]] = []
    live = activity.status == ActivityStatus.OPEN
    if live and now < activity.ends_at:
        actions.append(("qr", "出示签到二维码"))
    if live and now >= activity.starts_at - CHECKIN_EARLY and signups:
        actions.append(("tick", "点名签到"))
    if signups:
        actions.append(("names", "报名名单"))
    if pending:
        actions.append(("pending", f"待确认时长（{pending}）"))
    if live and now < activity.starts_at:
        actions.append(("cancel", "取消活动"))
    data["activity_id"] = activity.id
    text = prefix + "\n".join(lines)
    if not actions:
        return Done(text)
    return Ask("action", choice(text, actions))


@manage.step("pick")
async def show_managed(answer: int, actor: Resident, data: dict[str, Any], now: datetime,
                       tz: ZoneInfo) -> Ask | Done:
    """The activity's card with what the organiser may do now."""
    return await _manage_card(await managed(answer, actor.id), data, now, tz)


async def _tick_question(activity_id: int, page: int, actor: Resident) -> Question:
    _, rows = await signup_list(activity_id, actor.id)
    signed = [s for s in rows if s.status == SignupStatus.SIGNED]
    pages = max(1, -(-len(signed) // TICK_PAGE))
    page = min(page, pages - 1)
    shown = signed[page * TICK_PAGE:(page + 1) * TICK_PAGE]
    items: list[tuple[Any, str]] = [
        (s.id, f"{_clip(s.resident.name, 10)}" + ("（已签到）" if s.checked_in_at is not None else "")) for s in shown]
    if pages > 1:
        items.append(("next", f"下一页（第{page + 1}/{pages}页）"))
    items.append(("done", "点完了"))
    return choice("点名：回复序号为到场的志愿者签到，再选一次取消签到。", items)


@manage.step("action")
async def manage_action(answer: str, actor: Resident, data: dict[str, Any], now: datetime,
                        tz: ZoneInfo) -> Ask | Done | Goto:
    """Hand over to 签到码 or 待确认时长, or start 点名, the list, or the cancellation."""
    activity_id = data["activity_id"]
    if answer == "qr":
        return Goto("checkin_qr", data={"activity_id": activity_id})
    if answer == "pending":
        return Goto("hours_review", data={"activity_id": activity_id})
    if answer == "tick":
        data["page"] = 0
        return Ask("tick", await _tick_question(activity_id, 0, actor))
    if answer == "names":
        activity, rows = await signup_list(activity_id, actor.id)
        signed = [s for s in rows if s.status == SignupStatus.SIGNED]
        names = "、".join(s.resident.name + ("✓" if s.checked_in_at else "") for s in signed)
        head = f"“{_clip(activity.title, LABEL_MAX)}”报名{len(signed)}人（✓已签到）：\n"
        return Done(head + _clip(names, REPLY_MAX_CHARS - len(head)))
    activity = await managed(activity_id, actor.id)
    return Ask("reason", free_text(f"取消“{activity.title}”的原因？（会通知已报名的志愿者）", max_len=NOTE_MAX))


@manage.step("tick")
async def got_tick(answer: Any, actor: Resident, data: dict[str, Any], now: datetime, tz: ZoneInfo) -> Ask | Done:
    """Toggle one volunteer's attendance and show the list again; 下一页 turns the page."""
    activity_id = data["activity_id"]
    if answer == "done":
        return await _manage_card(await managed(activity_id, actor.id), data, now, tz, prefix="点名结束。\n")
    if answer == "next":
        data["page"] = data.get("page", 0) + 1
        _, rows = await signup_list(activity_id, actor.id)
        if data["page"] * TICK_PAGE >= sum(1 for s in rows if s.status == SignupStatus.SIGNED):
            data["page"] = 0
        return Ask("tick", await _tick_question(activity_id, data["page"], actor))
    signup = await Signup.get_or_none(id=answer, activity_id=activity_id).prefetch_related("resident")
    if signup is None:
        raise UserFacingError("没有找到这位志愿者。")
    attended = signup.checked_in_at is None
    after = await tick(activity_id, signup.id, actor.id, attended, now)
    if attended:
        done = f"已为{signup.resident.name}签到。"
        if after.hours_status == HoursStatus.CONFIRMED:
            done = f"已为{signup.resident.name}签到，服务时长已确认并发放积分。"
    else:
        done = f"已取消{signup.resident.name}的签到。"
    return Ask("tick", await _tick_question(activity_id, data.get("page", 0), actor), prefix=done + "\n")


@manage.step("reason")
async def got_cancel_reason(answer: str, data: dict[str, Any], actor: Resident) -> Ask:
    """Keep the reason, confirm the cancellation."""
    data["reason"] = answer
    activity = await managed(data["activity_id"], actor.id)
    taken = await _taken(activity)
    return Ask("cancel", confirm(f"确定取消“{activity.title}”吗？已报名的{taken}位志愿者会收到通知，"
                                 f"原因：{answer}"))


@manage.step("cancel")
async def confirm_cancel(answer: bool, actor: Resident, data: dict[str, Any], now: datetime, tz: ZoneInfo) -> Done:
    """Cancel it; the volunteers are told."""
    if not answer:
        return Done("好的，活动照常进行。")

    async def go() -> str:
        activity = await cancel(data["activity_id"], actor.id, data["reason"], now, tz)
        return f"已取消“{activity.title}”，已通知报名的志愿者。"
    return await _run(go())


# ---------------------------------------------------------------------------- 待确认时长

review = Flow("hours_review", "待确认时长", keywords=("待确认时长", "确认时长"), roles=MANAGERS,
              in_menu=False)


@review.entry
async def list_pending(actor: Resident, data: dict[str, Any], now: datetime) -> Ask | Done:
    """Declared hours waiting on the activities the actor manages (of one activity, from 活动管理)."""
    found = await pending_declarations(actor.id, now, activity_id=data.get("activity_id"))
    if not found:
        return Done("没有待确认的时长申报。")
    items = [(s.id, f"{_clip(s.resident.name, 8)}·{_clip(s.activity.title, 14)}·{hours_text(s.minutes or 0)}")
             for s in found]
    return Ask("pick", _fit("待确认的时长申报（回复序号处理）：", items))


@review.step("pick")
async def show_pending(answer: int, actor: Resident, data: dict[str, Any], tz: ZoneInfo) -> Ask | Done:
    """The declaration, the check-in record and the points it would earn; confirm or reject."""
    signup = await Signup.get_or_none(id=answer).prefetch_related("activity", "resident")
    if signup is None or not await may_manage(actor.id, signup.activity):
        return Done("没有找到这条申报。")
    if signup.hours_status != HoursStatus.PENDING:
        return Done(f"这条申报已经处理过了（{HOURS_LABELS[signup.hours_status]}）。")
    activity, minutes = signup.activity, signup.minutes or 0
    checked = (f"{signup.checked_in_at.astimezone(tz):%H:%M} {CHECKIN_LABELS.get(signup.checked_in_by, '')}"
               if signup.checked_in_at else "没有签到")
    data["signup_id"], data["activity_id"] = signup.id, activity.id
    text = (f"{signup.resident.name}申报“{activity.title}”（{when_text(activity, tz)}）服务时长{hours_text(minutes)}\n"
            f"说明：{_clip(signup.hours_note, 80)}\n签到记录：{checked}\n"
            f"确认后发放{points_for(minutes, activity.points_per_hour)}积分。")
    return Ask("decide", choice(text, [("approve", "确认并发放积分"), ("reject", "驳回")]))


@review.step("decide")
async def decide(answer: str, actor: Resident, data: dict[str, Any], now: datetime) -> Ask | Done:
    """Confirm (points credited, the volunteer told), or ask the reason of a rejection."""
    if answer == "reject":
        return Ask("reason", free_text("请写明驳回原因（会告诉志愿者）：", max_len=NOTE_MAX))

    async def go() -> str:
        signup = await review_hours(data["activity_id"], data["signup_id"], actor.id, True, now)
        activity = await Activity.get(id=signup.activity_id)
        points = points_for(signup.minutes or 0, activity.points_per_hour)
        return f"已确认{hours_text(signup.minutes or 0)}，发放{points}积分，已通知志愿者。回复“待确认时长”处理下一条。"
    return await _run(go())


@review.step("reason")
async def got_reject_reason(answer: str, actor: Resident, data: dict[str, Any], now: datetime) -> Done:
    """Reject with the reason; the volunteer is told."""
    async def go() -> str:
        await review_hours(data["activity_id"], data["signup_id"], actor.id, False, now, reason=answer)
        return "已驳回，已把原因告诉志愿者。回复“待确认时长”处理下一条。"
    return await _run(go())


FLOWS: list[Flow] = [browse, mine, checkin, qr, publish_flow, manage, review]


# ---------------------------------------------------------------------------- the API

api = ApiRouter("activities")

Id = Annotated[int, Field(ge=1, le=INT_MAX)]
KindCode = Literal[tuple(t.code for t in ACTIVITY_TYPES)]  # type: ignore[valid-type]
KIND_DOC = "one of: " + ", ".join(f"{t.code} {t.label}" for t in ACTIVITY_TYPES)
HHMM = r"^([01]\d|2[0-3]):[0-5]\d$"
DAY = r"^\d{4}-\d{2}-\d{2}$"


class ActivityIn(Strict):
    community_id: Id | None = Field(default=None, description="where it is held; default: the only community "
                                                              "the caller publishes in")
    title: str = Field(min_length=1, max_length=TITLE_MAX)
    description: str = Field(default="", max_length=DESCRIPTION_MAX)
    kind: KindCode = Field(description=KIND_DOC)  # type: ignore[valid-type]
    place: str = Field(min_length=1, max_length=PLACE_MAX)
    date: str = Field(pattern=DAY, description="YYYY-MM-DD, community time")
    starts: str = Field(pattern=HHMM, description="HH:MM, community time")
    ends: str = Field(pattern=HHMM, description="HH:MM the same day, at most 12 hours after starts")
    slots: int = Field(ge=1, le=SLOTS_MAX)
    client_token: str | None = Field(default=None, min_length=1, max_length=64, pattern=r"^[\x21-\x7e]+$",
                                     description="same as the Idempotency-Key header: a retried request with "
                                                 "the same token returns the first activity")

    _date = field_validator("date")(real_day)


class SignupOut(BaseModel):
    id: int
    activity_id: int
    resident_id: int
    name: str = Field(description="the volunteer's name")
    status: str = Field(description="signed | withdrawn")
    signed_at: str
    checked_in_at: str | None
    checked_in_by: str | None = Field(description="qr (scanned the code) | code (typed it) | list (ticked by the "
                                                  "organiser)")
    minutes: int | None = Field(description="confirmed or declared minutes of service")
    hours_status: str = Field(description="none | pending (declared, waiting for the organiser) | confirmed "
                                          "(points credited) | rejected")
    hours_status_label: str
    hours_note: str = Field(description="the volunteer's note on declared hours, or the reason of a rejection")
    points: int | None = Field(description="points credited for this place, once confirmed")


class ActivityOut(BaseModel):
    id: int
    community_id: int
    title: str
    description: str
    kind: str
    kind_label: str
    place: str
    starts_at: str
    ends_at: str
    minutes: int = Field(description="the activity's span")
    slots: int
    taken: int = Field(description="places taken")
    slots_left: int
    points_per_hour: int = Field(description="the community's rate for the type when published, kept")
    points: int = Field(description="points for the whole span (minutes × rate / 60, rounded half up)")
    status: str = Field(description="open | cancelled")
    status_label: str
    cancel_reason: str
    organiser: str = Field(description="the organiser's name")
    checkin_opens_at: str = Field(description="30 minutes before the start; check-in closes at the end")
    can_manage: bool = Field(description="the caller may tick, cancel, show the code and review hours")
    checkin_code: str | None = Field(default=None, description="the typed check-in code (only for managers)")
    my_signup: SignupOut | None = Field(default=None, description="the caller's own place, if signed up")


class ActivityList(BaseModel):
    items: list[ActivityOut]


class SignupList(BaseModel):
    items: list[SignupOut]


class ListQuery(Query):
    view: Literal["open", "mine", "manage"] = Field(
        default="open", description="open: my community's coming activities with places left | mine: the ones I "
                                    "signed up for (coming and recent) | manage: the ones I organise or run")


class CancelIn(Strict):
    reason: str = Field(min_length=1, max_length=NOTE_MAX)


class CheckinIn(Strict):
    code: str = Field(pattern=r"^\d{6}$", description="the 6-digit code the organiser shows")


class AttendanceIn(Strict):
    attended: bool = Field(default=True, description="false takes a tick back (not once the hours are confirmed)")


class HoursIn(Strict):
    minutes: int = Field(ge=1, le=24 * 60, description="at most the activity's span plus 4 hours")
    note: str = Field(min_length=1, max_length=NOTE_MAX)


class ReviewIn(Strict):
    approve: bool
    reason: str | None = Field(default=None, max_length=NOTE_MAX, description="required to reject")


def _iso(when: datetime | None) -> str | None:
    return when.isoformat() if when else None


async def _signup_out(signup: Signup, activity: Activity, name: str | None = None) -> SignupOut:
    if name is None:
        name = (await Resident.get(id=signup.resident_id)).name
    confirmed = signup.hours_status == HoursStatus.CONFIRMED
    return SignupOut(
        id=signup.id, activity_id=activity.id, resident_id=signup.resident_id, name=name, status=signup.status,
        signed_at=signup.signed_at.isoformat(), checked_in_at=_iso(signup.checked_in_at),
        checked_in_by=signup.checked_in_by or None, minutes=signup.minutes, hours_status=signup.hours_status,
        hours_status_label=HOURS_LABELS.get(signup.hours_status, signup.hours_status), hours_note=signup.hours_note,
        points=points_for(signup.minutes or 0, activity.points_per_hour) if confirmed else None)


async def _activity_out(activity: Activity, viewer: Resident, *, taken: int | None = None,
                        manages: bool | None = None) -> ActivityOut:
    if taken is None:
        taken = await _taken(activity)
    if manages is None:
        manages = await may_manage(viewer.id, activity)
    span = span_minutes(activity)
    organiser = await Resident.get(id=activity.organiser_id)
    mine = await Signup.get_or_none(activity_id=activity.id, resident_id=viewer.id)
    return ActivityOut(
        id=activity.id, community_id=activity.community_id, title=activity.title, description=activity.description,
        kind=activity.kind, kind_label=kind_label(activity.kind), place=activity.place,
        starts_at=activity.starts_at.isoformat(), ends_at=activity.ends_at.isoformat(), minutes=span,
        slots=activity.slots, taken=taken, slots_left=max(activity.slots - taken, 0),
        points_per_hour=activity.points_per_hour, points=points_for(span, activity.points_per_hour),
        status=activity.status, status_label=STATUS_LABELS.get(activity.status, activity.status),
        cancel_reason=activity.cancel_reason, organiser=organiser.name,
        checkin_opens_at=(activity.starts_at - CHECKIN_EARLY).isoformat(), can_manage=manages,
        checkin_code=activity.checkin_code if manages else None,
        my_signup=await _signup_out(mine, activity, viewer.name) if mine is not None else None)




def _idempotency_key(req: ApiRequest, body: ActivityIn) -> str | None:
    return idempotency_key(req.http, body.client_token)


@api.route("POST", "/activities", summary="Publish an activity (organisers, community staff)", body=ActivityIn,
           response=ActivityOut, status=201, errors=(404, 409))
async def post_activity(req: ApiRequest) -> ActivityOut:
    """At the community's current rate for its type (kept on the activity), with a 6-digit check-in
    code; starts later than now (at most a year ahead), lasts at most 12 hours, 1 to 500 places. An
    Idempotency-Key header (or client_token) makes a retry within 24 hours return the same activity."""
    actor = await req.bound_actor()
    body: ActivityIn = req.body
    communities = [cid for cid, _ in await publishing_communities(actor.id)]
    community_id = body.community_id
    if community_id is None:
        if len(communities) != 1:
            raise (invalid("body.community_id", "required: you publish in several communities") if communities
                   else ApiError(404, "not_found", "您没有发布活动的权限。"))
        community_id = communities[0]
    tz = req.services.engine.tz
    starts_at, ends_at = local_span(date.fromisoformat(body.date), body.starts, body.ends, tz)

    async def create() -> int:
        activity = await publish(community_id=community_id, organiser_id=actor.id, title=body.title, kind=body.kind,
                                 place=body.place, starts_at=starts_at, ends_at=ends_at, slots=body.slots,
                                 now=req.now, description=body.description)
        return activity.id

    token = _idempotency_key(req, body)
    if token is None:
        activity_id = await create()
    else:
        fingerprint = hashlib.sha256(body.model_dump_json(exclude={"client_token"}).encode()).hexdigest()
        activity_id = await once(req.services.store, "activities", actor.id, token, fingerprint, create,
                    lambda found: Activity.filter(id=found).exists(), what="activity",
                    busy="上一次提交还在处理中，请稍后查看。")
    return await _activity_out(await Activity.get(id=activity_id), actor)


@api.route("GET", "/activities", summary="Activities: open ones of my community, mine, or the ones I manage",
           query=ListQuery, response=ActivityList, errors=(409,))
async def list_activities(req: ApiRequest) -> ActivityList:
    """open: coming, not cancelled, with places left, soonest first; mine: my places on coming and
    recent activities; manage: the activities I organise (community staff: all of their community's)."""
    actor = await req.bound_actor()
    view = req.query.view
    if view == "open":
        pairs = await open_activities(actor.community_id, req.now)  # type: ignore[attr-defined]
        return ActivityList(items=[await _activity_out(a, actor, taken=t) for a, t in pairs])
    if view == "mine":
        found = [s.activity for s in await signups_of(actor.id, req.now)]
        return ActivityList(items=[await _activity_out(a, actor) for a in found])
    found = await managed_activities(actor.id, req.now)
    taken = await taken_counts([a.id for a in found])
    return ActivityList(items=[await _activity_out(a, actor, taken=taken.get(a.id, 0), manages=True) for a in found])


@api.route("GET", "/activities/{activity_id}", summary="An activity of my community", response=ActivityOut,
           errors=(409,))
async def get_activity(req: ApiRequest) -> ActivityOut:
    """For its community's residents and whoever manages it; with my own place, if any."""
    actor = await req.bound_actor()
    return await _activity_out(await visible(req.path["activity_id"], actor), actor)


@api.route("POST", "/activities/{activity_id}/cancel", summary="Cancel an activity before it starts (managers)",
           body=CancelIn, response=ActivityOut, errors=(409,))
async def post_cancel(req: ApiRequest) -> ActivityOut:
    """With a reason, pushed to everyone signed up. Cancelling twice is once."""
    actor = await req.bound_actor()
    activity = await cancel(req.path["activity_id"], actor.id, req.body.reason, req.now, req.services.engine.tz)
    return await _activity_out(activity, actor)


@api.route("POST", "/activities/{activity_id}/signup", summary="Sign up for an activity", response=SignupOut,
           errors=(409,))
async def post_signup(req: ApiRequest) -> SignupOut:
    """Before its start, within its places (never over them, however many sign up at once). Signing up
    twice is one place; after withdrawing, signing up again takes a place again."""
    actor = await req.bound_actor()
    activity = await visible(req.path["activity_id"], actor)
    signup, _ = await sign_up(activity.id, actor, req.now)
    return await _signup_out(signup, activity, actor.name)


@api.route("DELETE", "/activities/{activity_id}/signup", summary="Withdraw before the start", response=SignupOut,
           errors=(409,))
async def delete_signup(req: ApiRequest) -> SignupOut:
    """Frees the place; not after the start or after checking in. Twice is once."""
    actor = await req.bound_actor()
    activity = await visible(req.path["activity_id"], actor)
    signup = await withdraw(activity.id, actor.id, req.now)
    return await _signup_out(signup, activity, actor.name)


@api.route("GET", "/activities/{activity_id}/checkin-qr", summary="The activity's check-in QR code (managers)",
           produces="image/png", errors=(409,))
async def get_checkin_qr(req: ApiRequest) -> FileBody:
    """A WeChat temporary parametric QR code (scene checkin:<id>:<code>), valid until an hour after the
    end and reused while valid; a volunteer who follows the account scans it with WeChat to check in."""
    actor = await req.bound_actor()
    client = req.services.client
    try:
        activity, ticket = await checkin_ticket(req.path["activity_id"], actor.id, client, req.now)
        picture = await client.qrcode_image(ticket)
    except (WeChatAPIError, WeChatUnavailable):
        raise UserFacingError("微信暂时生成不了二维码，请稍后再试；志愿者也可以输入签到码。") from None
    return FileBody(picture, f"activity-{activity.id}-checkin.png", content_type="image/png", inline=True)


@api.route("POST", "/activities/{activity_id}/checkin", summary="Check in with the typed code", body=CheckinIn,
           response=SignupOut, errors=(409,))
async def post_checkin(req: ApiRequest) -> SignupOut:
    """A volunteer signed up for it, from 30 minutes before the start to the end; a wrong code, or a time
    outside that window, changes nothing (409). Checking in twice is once."""
    actor = await req.bound_actor()
    activity = await visible(req.path["activity_id"], actor)
    result = await check_in(activity.id, actor.id, req.body.code, "code", req.now, req.services.engine.tz)
    return await _signup_out(result.signup, activity, actor.name)


@api.route("POST", "/activities/{activity_id}/hours", summary="Declare the hours I served", body=HoursIn,
           response=SignupOut, errors=(409,))
async def post_hours(req: ApiRequest) -> SignupOut:
    """After the start (until 14 days after the end), when not checked in or for a different time: pending
    until the organiser confirms or rejects it. Refused once the hours are confirmed."""
    actor = await req.bound_actor()
    activity = await visible(req.path["activity_id"], actor)
    signup = await declare_hours(activity.id, actor.id, req.body.minutes, req.body.note, req.now)
    return await _signup_out(signup, activity, actor.name)


@api.route("GET", "/activities/{activity_id}/signups", summary="Who signed up, checked in and declared (managers)",
           response=SignupList, errors=(409,))
async def list_signups(req: ApiRequest) -> SignupList:
    """Every place, withdrawn ones too, in the order they were taken."""
    actor = await req.bound_actor()
    activity, rows = await signup_list(req.path["activity_id"], actor.id)
    return SignupList(items=[await _signup_out(s, activity, s.resident.name) for s in rows])


@api.route("POST", "/activities/{activity_id}/signups/{signup_id}/attendance",
           summary="Tick a volunteer present (managers)", body=AttendanceIn, response=SignupOut, errors=(409,))
async def post_attendance(req: ApiRequest) -> SignupOut:
    """From 30 minutes before the start; after the end a tick credits the hours at once (else the
    settlement at the end does)."""
    actor = await req.bound_actor()
    activity = await managed(req.path["activity_id"], actor.id)
    signup = await tick(activity.id, req.path["signup_id"], actor.id, req.body.attended, req.now)
    return await _signup_out(signup, activity)


@api.route("POST", "/activities/{activity_id}/signups/{signup_id}/review",
           summary="Confirm or reject declared hours (managers)", body=ReviewIn, response=SignupOut, errors=(409,))
async def post_review(req: ApiRequest) -> SignupOut:
    """Confirming credits the declared minutes at the activity's rate (once); rejecting needs a reason. The
    volunteer is told either way."""
    actor = await req.bound_actor()
    body: ReviewIn = req.body
    activity = await managed(req.path["activity_id"], actor.id)
    if not body.approve and not (body.reason or "").strip():
        raise invalid("body.reason", "required to reject")
    signup = await review_hours(activity.id, req.path["signup_id"], actor.id, body.approve, req.now,
                                reason=body.reason or "")
    return await _signup_out(signup, activity)
