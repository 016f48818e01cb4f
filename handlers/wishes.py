"""微心愿 in chat and through /api/v1: post (许愿, staff 代许心愿), the community's open wishes and
claiming them (心愿), the claimer's list (我认领的: 已完成, 放弃认领), the wisher's list (我的心愿:
confirm, not done yet, withdraw), the answer to the pushed confirmation question, and staff's
心愿管理 (confirm for a wisher without WeChat, withdraw with a reason).

The rules live in models/wishes.py; who sees what is decided there once (``relations_of``): the
wisher and the family members acting for them, the claimer and the staff over the wisher see the
whole wish, the community's residents and volunteers see what the list shows (masked name,
building), anybody else gets 404.
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable
from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, Field

from bot.api import (
    INT_MAX,
    ApiRequest,
    ApiRouter,
    Query,
    Strict,
    idempotency_key,
    invalid,
    not_found,
)
from bot.clock import format_zh
from bot.engine import REPLY_MAX_CHARS, Ask, Done, Flow, Goto, Inbound, Question, choice, confirm, free_text
from models import wishes
from models.errors import UserFacingError
from models.love_bank import settings_of
from models.privacy import audit
from models.residents import Resident, WechatAccount, normalize_mobile
from models.roles import active_roles
from models.wishes import (
    CONFIRM_FLOW,
    CONFIRM_STEP,
    HOW_TO_CLAIM,
    LIVE,
    LIVE_MAX,
    REASON_MAX,
    STAFF_CONFIRM_DAYS,
    STAFF_ROLES,
    STATUS_LABELS,
    TEXT_MAX,
    TEXT_MIN,
    RequestKeyReused,
    Seen,
    Wish,
    WishStatus,
    clip,
    mask_name,
)

BOARD_LISTED = 5
MINE_LISTED = 6
STAFF_LISTED = 6
TEXT_PROMPT = (f"请写下您的心愿（{TEXT_MAX}字以内，可以直接发语音），例如：想请人帮忙修一下收音机。\n"
               "心愿会在本社区公开（只显示姓氏和楼栋），请不要写电话和门牌号。")
MISSING = free_text(f"请说说还差什么（{REASON_MAX}字以内），会转告志愿者：", max_len=REASON_MAX)


# ---------------------------------------------------------------------------- helpers


def _day(when: datetime | None, tz: Any) -> str:
    return format_zh(when, tz, with_time=False) if when else ""


def _fits(question: Question, prefix: str = "") -> bool:
    return len(prefix) + len(question.render()) <= REPLY_MAX_CHARS


async def _run(action: Awaitable[str]) -> Done:
    """A last step: what the model did, or its refusal as it put it."""
    try:
        return Done(await action)
    except UserFacingError as exc:
        return Done(exc.message)


async def _name(resident_id: int | None) -> str:
    if resident_id is None:
        return ""
    person = await Resident.get_or_none(id=resident_id)
    return person.name if person else ""


async def _board_line(wish: Wish) -> str:
    wisher = await Resident.get(id=wish.resident_id)
    building = await wishes.building_of(wish)
    return f"{mask_name(wisher.name)}·{building}：{clip(wish.text, 15)}（{wish.points}分）"


async def _state(wish: Wish) -> str:
    if wish.status == WishStatus.CLAIMED:
        return f"{await _name(wish.claimed_by_id)}已认领"
    if wish.status == WishStatus.FULFILLED:
        return "志愿者说已完成，待确认"
    return STATUS_LABELS[wish.status]


def _choice_fitting(head: str, items: list[tuple[Any, str]]) -> Question:
    """A choice whose head gives way (clipped) so that the reply fits."""
    question = choice(head, items)
    if _fits(question):
        return question
    room = REPLY_MAX_CHARS - len(choice("", items).render()) - 1
    return choice(clip(head, room), items)


# ---------------------------------------------------------------------------- 许愿: post a wish

post = Flow("wish_post", "许愿", keywords=("许愿", "许心愿", "我要许愿", "发心愿"))


@post.entry
async def start_post(resident: Resident, actor: Resident, data: dict[str, Any]) -> Ask | Done:
    """Ask the wish (saying for whom, when a family member acts for an elder)."""
    if await wishes.live_count(resident.id) >= LIVE_MAX:
        who = "您" if resident.id == actor.id else resident.name
        return Done(f"{who}已有{LIVE_MAX}个心愿还没实现，等它们实现（或撤回一个）后再许新的心愿吧。"
                    "回复“我的心愿”查看。")
    data["key"] = secrets.token_hex(8)  # one wish per conversation, however often 是 arrives
    prefix = f"（为{resident.name}许愿）\n" if resident.id != actor.id else ""
    return Ask("text", free_text(TEXT_PROMPT, min_len=TEXT_MIN, max_len=TEXT_MAX), prefix=prefix)


@post.step("text")
async def post_text(answer: str, resident: Resident, data: dict[str, Any]) -> Ask:
    """Show the wish and its points before posting."""
    data["text"] = wishes.check_text(answer)
    points = (await settings_of(resident.community_id)).wish_points  # type: ignore[attr-defined]
    return Ask("confirm", confirm(f"心愿：{data['text']}\n志愿者帮忙实现后，社区会给TA记{points}积分（不用您出）。"
                                  "发布吗？"))


@post.step("confirm")
async def post_confirm(answer: bool, resident: Resident, actor: Resident, data: dict[str, Any], msg: Inbound,
                       now: datetime) -> Done:
    """Post it (once per conversation)."""
    if not answer:
        return Done("好的，没有发布。需要时回复“许愿”。")

    async def posted() -> str:
        wish, _ = await wishes.post_wish(wisher=resident, actor=actor, text=data["text"], now=now,
                                         channel=msg.channel, request_key=f"chat:{data['key']}")
        who = f"已为{resident.name}发布心愿" if resident.id != actor.id else "已发布心愿"
        return f"{who}（编号{wish.id}）。志愿者认领后会告诉您；回复“我的心愿”可以查看或撤回。"
    return await _run(posted())


# ---------------------------------------------------------------------------- 我的心愿: the wisher's list

mine = Flow("wish_mine", "我的心愿", keywords=("我的心愿",))


@mine.entry
async def list_mine(resident: Resident, actor: Resident) -> Ask | Done:
    """The resident's wishes, live ones first, with where each stands."""
    found = await wishes.wishes_of(resident.id, limit=MINE_LISTED)
    if not found:
        return Done("还没有许过心愿。回复“许愿”可以发布。")
    items = [(w.id, f"{clip(w.text, 14)}：{await _state(w)}") for w in found]
    whose = "您" if resident.id == actor.id else resident.name
    return Ask("pick", choice(f"{whose}的心愿（回复序号查看）：", items))


async def _wisher_card(wish: Wish, tz: Any) -> str:
    lines = [f"心愿：{wish.text}", f"状态：{await _state(wish)}"]
    if wish.status in LIVE or wish.status == WishStatus.CONFIRMED:
        lines.append(f"积分：实现后记给志愿者{wish.points}分")
    if wish.status == WishStatus.FULFILLED:
        lines.append(f"{await _name(wish.claimed_by_id)}{_day(wish.fulfilled_at, tz)}说已经完成，实现了吗？")
    if wish.status == WishStatus.CANCELLED and wish.cancel_reason:
        lines.append(f"撤回原因：{wish.cancel_reason}")
    return "\n".join(lines)


@mine.step("pick")
async def mine_pick(answer: int, actor: Resident, data: dict[str, Any], tz: Any) -> Ask | Done:
    """The wish and what the wisher may do: withdraw it, or confirm it (or say it is not done)."""
    wish, _ = await wishes.get_wish(answer, actor)
    data["wish_id"] = wish.id
    card = await _wisher_card(wish, tz)
    items: list[tuple[str, str]] = []
    if wish.status == WishStatus.FULFILLED:
        items = [("confirm", "已实现"), ("reject", "还没有实现")]
    elif wish.status in (WishStatus.OPEN, WishStatus.CLAIMED):
        items = [("cancel", "撤回心愿")]
    if not items:
        return Done(card + "\n回复“我的心愿”查看其他心愿。")
    return Ask("action", _choice_fitting(card, items))


@mine.step("action")
async def mine_action(answer: str, actor: Resident, data: dict[str, Any], msg: Inbound, now: datetime) -> Ask | Done:
    """Confirm at once, ask what is missing, or ask before withdrawing."""
    if answer == "confirm":
        return await _confirm(data["wish_id"], actor, msg, now)
    if answer == "reject":
        return Ask("missing", MISSING)
    wish = await Wish.get(id=data["wish_id"])
    told = "认领的志愿者会收到通知。" if wish.claimed_by_id else ""
    return Ask("cancel", confirm(f"确定撤回心愿“{clip(wish.text, 30)}”吗？{told}"))


@mine.step("missing")
async def mine_missing(answer: str, actor: Resident, data: dict[str, Any], msg: Inbound, now: datetime) -> Done:
    """Back to the claimer with what is missing."""
    return await _reject(data["wish_id"], actor, answer, msg, now)


@mine.step("cancel")
async def mine_cancel(answer: bool, actor: Resident, data: dict[str, Any], msg: Inbound, now: datetime) -> Done:
    """Withdraw the wish (the claimer told)."""
    if not answer:
        return Done("好的，没有撤回。")

    async def cancelled() -> str:
        await wishes.cancel_wish(data["wish_id"], actor, now, channel=msg.channel)
        return "已撤回这个心愿。"
    return await _run(cancelled())


async def _confirm(wish_id: int, actor: Resident, msg: Inbound, now: datetime) -> Done:
    async def confirmed() -> str:
        wish = await wishes.confirm_wish(wish_id, actor, now, channel=msg.channel)
        earned = f"已为{await _name(wish.claimed_by_id)}记入{wish.points}积分。" if wish.points else ""
        return f"已确认心愿实现，谢谢！{earned}"
    return await _run(confirmed())


async def _reject(wish_id: int, actor: Resident, reason: str, msg: Inbound, now: datetime) -> Done:
    async def rejected() -> str:
        wish = await wishes.reject_wish(wish_id, actor, reason, now, channel=msg.channel)
        return f"已转告{await _name(wish.claimed_by_id)}，TA会再联系您。"
    return await _run(rejected())


# ---------------------------------------------------------------------------- the pushed question

answer_flow = Flow(CONFIRM_FLOW, "确认心愿")


@answer_flow.step(CONFIRM_STEP)
async def answered(answer: str, actor: Resident | None, data: dict[str, Any], msg: Inbound,
                   now: datetime) -> Ask | Done:
    """已实现 confirms (the points go to the claimer), 还没有实现 asks what is missing."""
    if actor is None:
        return Done("请先绑定身份。回复“绑定”开始。")
    if answer == "yes":
        return await _confirm(data["wish_id"], actor, msg, now)
    return Ask("missing", MISSING)


@answer_flow.step("missing")
async def answered_missing(answer: str, actor: Resident, data: dict[str, Any], msg: Inbound, now: datetime) -> Done:
    """Back to the claimer with what is missing."""
    return await _reject(data["wish_id"], actor, answer, msg, now)


# ---------------------------------------------------------------------------- 心愿: the community's open wishes

# named "wishes": the 爱心银行 hub (handlers/love_bank.py) offers it by that name
board = Flow("wishes", "心愿", keywords=("心愿", "微心愿", "心愿墙"), as_self=True)
POST_HINT = "回复“许愿”可以发布心愿。"


@board.entry
async def list_board(actor: Resident) -> Ask | Done:
    """Open wishes (masked name, building): to claim for volunteers and party members; to read,
    with how to become a volunteer, for everyone else."""
    found = await wishes.open_wishes(await wishes.seen_communities(actor), exclude_resident=actor.id,
                                     limit=BOARD_LISTED)
    if not await wishes.claim_communities(actor):
        if not found:
            return Done("社区里暂时没有待认领的心愿。" + POST_HINT + "\n" + HOW_TO_CLAIM)
        lines = [f"{i}. {await _board_line(w)}" for i, w in enumerate(found, 1)]
        tail = "\n" + HOW_TO_CLAIM + POST_HINT
        while len(lines) > 1 and len("\n".join(["社区里待认领的心愿：", *lines])) + len(tail) > REPLY_MAX_CHARS:
            lines.pop()
        return Done("\n".join(["社区里待认领的心愿：", *lines]) + tail)
    items: list[tuple[Any, str]] = [(w.id, await _board_line(w)) for w in found]
    held = await wishes.claimed_by(actor.id)
    if held:
        items.append(("claimed", f"我认领的心愿（{len(held)}个）"))
    if not items:
        return Done("社区里暂时没有待认领的心愿，谢谢您的爱心！有新心愿时回复“心愿”查看。" + POST_HINT)
    head = "社区里待认领的心愿（回复序号查看、认领）：" if found else "社区里暂时没有待认领的心愿。"
    return Ask("pick", choice(head, items))


@board.step("pick")
async def board_pick(answer: Any, actor: Resident, data: dict[str, Any]) -> Ask | Done | Goto:
    """Show the wish and ask before claiming it."""
    if answer == "claimed":
        return Goto(claimed.name)
    wish, _ = await wishes.get_wish(answer, actor)
    if wish.status != WishStatus.OPEN:
        return Done("这个心愿刚刚已被别人认领了。回复“心愿”看看其他心愿。")
    data["wish_id"] = wish.id
    return Ask("claim", confirm(f"{await _board_line(wish)}\n心愿：{wish.text}\n实现后您可获得{wish.points}积分。"
                                "认领后请尽快联系、上门帮忙。认领吗？"))


@board.step("claim")
async def board_claim(answer: bool, actor: Resident, data: dict[str, Any], msg: Inbound, now: datetime) -> Done:
    """Claim it (first come, first served); the claimer now sees whom to visit and where."""
    if not answer:
        return Done("好的，没有认领。回复“心愿”看看其他心愿。")

    async def claimed_now() -> str:
        wish = await wishes.claim_wish(data["wish_id"], actor, now, channel=msg.channel)
        wisher = await Resident.get(id=wish.resident_id)
        return (f"认领成功！许愿人：{wisher.name}，住址：{await wishes.address_of(wish)}。已告诉TA您会来帮忙。"
                "完成后回复“我认领的”，选择“已完成”。")
    return await _run(claimed_now())


# ---------------------------------------------------------------------------- 我认领的: the claimer's list

claimed = Flow("wish_claimed", "我认领的心愿", keywords=("我认领的", "我认领的心愿"), as_self=True)


@claimed.entry
async def list_claimed(actor: Resident) -> Ask | Done:
    """The wishes the person claimed and has not finished."""
    found = await wishes.claimed_by(actor.id, limit=MINE_LISTED)
    if not found:
        return Done("您现在没有认领的心愿。回复“心愿”看看社区里待认领的心愿。")
    items = [(w.id, f"{clip(w.text, 14)}：{'待完成' if w.status == WishStatus.CLAIMED else '等居民确认'}")
             for w in found]
    return Ask("pick", choice("您认领的心愿（回复序号）：", items))


@claimed.step("pick")
async def claimed_pick(answer: int, actor: Resident, data: dict[str, Any], tz: Any) -> Ask | Done:
    """Whom to visit and where; 已完成 or 放弃认领 while it is claimed."""
    wish, relations = await wishes.get_wish(answer, actor)
    if Seen.CLAIMER not in relations:
        return Done("这个心愿已经不在您的认领中了。")
    data["wish_id"] = wish.id
    wisher = await Resident.get(id=wish.resident_id)
    card = (f"心愿：{wish.text}\n许愿人：{wisher.name}，住址：{await wishes.address_of(wish)}\n"
            f"{_day(wish.claimed_at, tz)}认领，实现后可获得{wish.points}积分")
    if wish.reject_reason:
        card += f"\nTA说还差：{wish.reject_reason}"
    if wish.status != WishStatus.CLAIMED:
        return Done(card + f"\n{STATUS_LABELS[wish.status]}。" + (
            "确认后积分会记给您。" if wish.status == WishStatus.FULFILLED else ""))
    return Ask("action", _choice_fitting(card, [("fulfil", "已完成"), ("release", "放弃认领")]))


@claimed.step("action")
async def claimed_action(answer: str, actor: Resident, data: dict[str, Any], msg: Inbound, now: datetime) -> Ask | Done:
    """已完成: the wisher is asked to confirm. 放弃认领: asked before."""
    if answer == "release":
        return Ask("release", confirm("放弃认领后，心愿会重新等待其他志愿者认领，也会告诉许愿人。确定放弃吗？"))

    async def fulfilled() -> str:
        wish = await wishes.fulfil_wish(data["wish_id"], actor, now, channel=msg.channel)
        return (f"好的，已请{await _name(wish.resident_id)}确认。TA确认实现后，{wish.points}积分会记给您。"
                "谢谢您的爱心！")
    return await _run(fulfilled())


@claimed.step("release")
async def claimed_release(answer: bool, actor: Resident, data: dict[str, Any], msg: Inbound, now: datetime) -> Done:
    """Give the wish back."""
    if not answer:
        return Done("好的，您还认领着这个心愿。")

    async def released() -> str:
        await wishes.release_wish(data["wish_id"], actor, now, channel=msg.channel)
        return "已放弃认领，心愿会重新等待其他志愿者认领。"
    return await _run(released())


# ---------------------------------------------------------------------------- 心愿管理: staff

manage = Flow("wish_staff", "心愿管理", keywords=("心愿管理",), roles=STAFF_ROLES)


@manage.entry
async def list_scope(actor: Resident, now: datetime) -> Ask:
    """Live wishes of the residents the staff member looks after (waiting for a confirmation first),
    and 代许心愿."""
    found = await wishes.in_scope(actor.id, limit=STAFF_LISTED)
    items: list[tuple[Any, str]] = []
    for wish in found:
        mark = "（可代为确认）" if wish.status == WishStatus.FULFILLED and await wishes.staff_may_confirm(wish, now) \
            else ""
        items.append((wish.id, f"{await _name(wish.resident_id)}·{clip(wish.text, 10)}：{STATUS_LABELS[wish.status]}"
                               f"{mark}"))
    items.append(("enter", "代许心愿（为没有微信的居民发布）"))
    head = "您负责范围内进行中的心愿（回复序号处理）：" if found else "您负责的范围内没有进行中的心愿。"
    return Ask("pick", choice(head, items))


@manage.step("pick")
async def manage_pick(answer: Any, actor: Resident, data: dict[str, Any], now: datetime, tz: Any) -> Ask | Done | Goto:
    """The whole wish, and what staff may do: confirm for the wisher (when allowed), withdraw it."""
    if answer == "enter":
        return Goto(enter.name)
    wish, relations = await wishes.get_wish(answer, actor)
    data["wish_id"] = wish.id
    wisher = await Resident.get(id=wish.resident_id)
    lines = [f"{wisher.name}（{await wishes.address_of(wish)}）的心愿：{wish.text}", f"状态：{await _state(wish)}"]
    actions = await wishes.actions_for(actor, wish, relations, now)
    items: list[tuple[str, str]] = []
    if "confirm" in actions:
        items.append(("confirm", "代为确认实现"))
    elif wish.status == WishStatus.FULFILLED and wish.fulfilled_at is not None:
        lines.append(f"居民有微信，请TA自己确认；{STAFF_CONFIRM_DAYS}天仍未确认的可以代为确认。")
    if "cancel" in actions:
        items.append(("cancel", "撤下（内容不当等）"))
    if not items:
        return Done("\n".join(lines))
    return Ask("action", _choice_fitting("\n".join(lines), items))


@manage.step("action")
async def manage_action(answer: str, data: dict[str, Any]) -> Ask:
    """Ask before confirming; ask the reason before withdrawing."""
    wish = await Wish.get(id=data["wish_id"])
    if answer == "confirm":
        return Ask("confirm", confirm(f"请先向{await _name(wish.resident_id)}核实心愿已经实现。代为确认后，"
                                      f"{wish.points}积分记给{await _name(wish.claimed_by_id)}。确认吗？"))
    return Ask("reason", free_text(f"请写撤下的原因（{REASON_MAX}字以内），会告诉许愿人：", max_len=REASON_MAX))


@manage.step("confirm")
async def manage_confirm(answer: bool, actor: Resident, data: dict[str, Any], msg: Inbound, now: datetime) -> Done:
    """Confirm for the wisher."""
    if not answer:
        return Done("好的，没有确认。")
    return await _confirm(data["wish_id"], actor, msg, now)


@manage.step("reason")
async def manage_reason(answer: str, data: dict[str, Any]) -> Ask:
    """Keep the reason, ask before withdrawing."""
    data["reason"] = answer
    return Ask("cancel", confirm(f"撤下原因：{answer}\n确定撤下这个心愿吗？许愿人和认领的志愿者会收到通知。"))


@manage.step("cancel")
async def manage_cancel(answer: bool, actor: Resident, data: dict[str, Any], msg: Inbound, now: datetime) -> Done:
    """Withdraw the wish with the reason."""
    if not answer:
        return Done("好的，没有撤下。")

    async def cancelled() -> str:
        await wishes.cancel_wish(data["wish_id"], actor, now, channel=msg.channel, reason=data["reason"])
        return "已撤下，已告诉许愿人。"
    return await _run(cancelled())


# ---------------------------------------------------------------------------- 代许心愿: staff post for a resident

# Reached from 心愿管理 or by its keyword; not a role flow of its own, so staff menus list it once.
enter = Flow("wish_enter", "代许心愿", keywords=("代许心愿",), as_self=True)


@enter.entry
async def enter_start(actor: Resident) -> Ask | Done:
    """Ask the resident's mobile (community staff and grid workers only)."""
    if not any(r.role in STAFF_ROLES for r in await active_roles(actor.id)):
        return Done("代许心愿仅限社区工作人员和网格员使用。回复“许愿”可以为自己许愿。")
    return Ask("mobile", free_text("代许心愿：请输入居民的手机号：", max_len=20))


@enter.step("mobile")
async def enter_mobile(answer: str, actor: Resident, data: dict[str, Any], now: datetime) -> Ask | Done:
    """A resident in the staff member's scope (the look-up is recorded)."""
    mobile = normalize_mobile(answer)
    person = await Resident.get_or_none(mobile=mobile, erased_at=None).prefetch_related("building")
    if person is None or not await wishes.is_staff_for(actor.id, person):
        raise UserFacingError("您负责的范围内没有登记这个手机号的居民，请核对后重新输入：")
    await audit(actor_id=actor.id, subject_id=person.id, action="view", purpose="代许心愿", now=now,
                detail={"flow": enter.name})
    if await wishes.live_count(person.id) >= LIVE_MAX:
        return Done(f"{person.name}已有{LIVE_MAX}个心愿还没实现，请等实现（或撤回一个）后再许新的心愿。")
    data.update(resident_id=person.id, key=secrets.token_hex(8))
    building = person.building.name if person.building else "未登记楼栋"
    return Ask("text", free_text(f"为{person.name}（{building}）许愿：请写下心愿（{TEXT_MAX}字以内，"
                                 "不要写电话和门牌号）：", min_len=TEXT_MIN, max_len=TEXT_MAX))


@enter.step("text")
async def enter_text(answer: str, data: dict[str, Any]) -> Ask:
    """Show the wish before posting."""
    data["text"] = wishes.check_text(answer)
    return Ask("confirm", confirm(f"为{await _name(data['resident_id'])}发布心愿：{data['text']}\n发布吗？"))


@enter.step("confirm")
async def enter_confirm(answer: bool, actor: Resident, data: dict[str, Any], msg: Inbound, now: datetime) -> Done:
    """Post it for the resident; say who will hear of it."""
    if not answer:
        return Done("好的，没有发布。")

    async def posted() -> str:
        person = await Resident.get(id=data["resident_id"])
        wish, _ = await wishes.post_wish(wisher=person, actor=actor, text=data["text"], now=now, channel=msg.channel,
                                         request_key=f"chat:{data['key']}")
        if await WechatAccount.filter(resident_id=person.id, channel__in=wishes.CHAT_CHANNELS).exists():
            tell = "进展会推送给TA。"
        else:
            tell = "TA没有微信：认领和完成的消息会推送给您，请转告TA；实现后请在“心愿管理”里代为确认。"
        return f"已为{person.name}发布心愿（编号{wish.id}）。{tell}"
    return await _run(posted())


FLOWS: list[Flow] = [post, mine, answer_flow, board, claimed, manage, enter]


# ---------------------------------------------------------------------------- /api/v1

api = ApiRouter("wishes")

Id = Annotated[int, Field(ge=1, le=INT_MAX)]


class WishIn(Strict):
    text: str = Field(min_length=TEXT_MIN, max_length=TEXT_MAX, description="the wish, shown to the community "
                                                                            "(no phone numbers or room numbers)")
    for_resident_id: Id | None = Field(default=None, description="post for someone else: an elder you act for "
                                                                  "(family proxy), or a resident you look after "
                                                                  "(community staff, grid worker)")
    client_token: str | None = Field(default=None, min_length=1, max_length=60, pattern=r"^[\x21-\x7e]+$",
                                     description="same as the Idempotency-Key header: a retried post with the "
                                                 "same token returns the first wish")


class ReasonIn(Strict):
    reason: str = Field(min_length=1, max_length=REASON_MAX, description="what is still missing (the claimer reads it)")


class CancelIn(Strict):
    reason: str = Field(default="", max_length=REASON_MAX,
                        description="why: optional for the wisher, required for staff withdrawing a wish")


class WishOut(BaseModel):
    id: int
    text: str
    points: int = Field(description="what the claimer earns once the wisher confirms (the community's setting "
                                    "when it was posted)")
    status: str = Field(description="open | claimed | fulfilled (the claimer says it is done) | confirmed "
                                    "(points credited) | cancelled")
    status_label: str
    community_id: int
    view: str = Field(description="how the caller sees it: wisher (or their family) | claimer | staff | public "
                                  "(a resident or volunteer of the community: masked name and building only)")
    wisher: str = Field(description="the wisher's name, masked (王**) in the public view")
    building: str
    actions: list[str] = Field(description="what the caller may do now: claim, release, fulfil, confirm, reject, "
                                           "cancel")
    created_at: str
    # the wisher's, the claimer's and staff's view only (None in the public view)
    wisher_id: int | None = None
    address: str | None = Field(default=None, description="where to go: for the claimer, the wisher and staff")
    posted_by: str | None = Field(default=None, description="who posted it, when not the wisher")
    claimer: str | None = None
    claimed_at: str | None = None
    fulfilled_at: str | None = None
    reject_reason: str | None = Field(default=None, description="the wisher's last 'not done yet'")
    confirmed_at: str | None = None
    confirm_note: str | None = Field(default=None,
                                     description="who confirmed: 居民确认, 家人代为确认, or why staff did")
    entry_id: int | None = Field(default=None, description="the ledger entry that credited the points")
    cancelled_at: str | None = None
    cancel_reason: str | None = None


class WishList(BaseModel):
    items: list[WishOut]
    can_claim: bool = Field(description="whether the caller may claim wishes of their community")
    hint: str | None = Field(description="how to become someone who may claim, for those who may not")


class WishesQuery(Query):
    mine: bool = Field(default=False, description="wishes I posted for myself (or, with for_resident_id, of an "
                                                  "elder I act for or a resident I look after)")
    claimed: bool = Field(default=False, description="wishes I claimed (unfinished first, then confirmed ones)")
    in_scope: bool = Field(default=False, description="staff: live wishes of the residents I look after, those "
                                                      "waiting for a confirmation first")
    for_resident_id: Id | None = Field(default=None, description="with mine: whose wishes")
    limit: int = Field(default=20, ge=1, le=50)


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None




async def _out(wish: Wish, relations: set[str], actor: Resident, now: datetime) -> WishOut:
    view = wishes.view_of(relations)
    wisher = await Resident.get(id=wish.resident_id).prefetch_related("building")
    whole = view != Seen.PUBLIC
    out = WishOut(
        id=wish.id, text=wish.text, points=wish.points, status=wish.status, status_label=STATUS_LABELS[wish.status],
        community_id=wish.community_id, view=view, wisher=wisher.name if whole else mask_name(wisher.name),
        building=wisher.building.name if wisher.building else "",
        actions=await wishes.actions_for(actor, wish, relations, now), created_at=wish.created_at.isoformat())
    if whole:
        # nobody needs to go there once it is withdrawn, except who looks after the wisher
        going = wish.status != WishStatus.CANCELLED or view in (Seen.WISHER, Seen.STAFF)
        out.wisher_id = wisher.id
        out.address = await wishes.address_of(wish) if going else None
        out.posted_by = await _name(wish.posted_by_id) if wish.posted_by_id != wish.resident_id else None
        out.claimer = await _name(wish.claimed_by_id) or None
        out.claimed_at, out.fulfilled_at = _iso(wish.claimed_at), _iso(wish.fulfilled_at)
        out.reject_reason = wish.reject_reason or None
        out.confirmed_at, out.confirm_note, out.entry_id = _iso(wish.confirmed_at), wish.confirm_note or None, \
            wish.entry_id
        out.cancelled_at, out.cancel_reason = _iso(wish.cancelled_at), wish.cancel_reason or None
    return out


async def _outs(rows: list[Wish], actor: Resident, now: datetime) -> list[WishOut]:
    return [await _out(w, await wishes.relations_of(actor, w), actor, now) for w in rows]


@api.route("GET", "/wishes", summary="Open wishes of my community, or mine, or those I claimed", query=WishesQuery,
           response=WishList, errors=(404, 409))
async def list_wishes(req: ApiRequest) -> WishList:
    """Without a flag: the open wishes of my community (and of the communities I volunteer in), the
    longest waiting first, with the wisher's name masked and their building only. ``mine``: my wishes
    (or, with for_resident_id, those of an elder I act for or a resident I look after). ``claimed``:
    those I claimed. ``in_scope`` (community staff, grid workers): the live wishes of the residents I
    look after."""
    q: WishesQuery = req.query
    actor = await req.bound_actor()
    if q.mine + q.claimed + q.in_scope > 1:
        raise invalid("query.mine", "give one of mine, claimed and in_scope")
    if q.for_resident_id is not None and not q.mine:
        raise invalid("query.for_resident_id", "only with mine")
    may_claim = bool(await wishes.claim_communities(actor))
    if q.mine:
        person = actor
        if q.for_resident_id is not None and q.for_resident_id != actor.id:
            found = await Resident.get_or_none(id=q.for_resident_id, erased_at=None)
            if found is None or not await wishes.may_post_for(actor, found):
                raise not_found()
            person = found
        rows = await wishes.wishes_of(person.id, limit=q.limit)
    elif q.claimed:
        rows = await wishes.claimed_by(actor.id, limit=q.limit, done=True)
    elif q.in_scope:
        rows = await wishes.in_scope(actor.id, limit=q.limit)
    else:
        rows = await wishes.open_wishes(await wishes.seen_communities(actor), exclude_resident=actor.id,
                                        limit=q.limit)
    return WishList(items=await _outs(rows, actor, req.now), can_claim=may_claim,
                    hint=None if may_claim else HOW_TO_CLAIM)


def _request_key(req: ApiRequest, body: WishIn) -> str | None:
    token = idempotency_key(req.http, body.client_token, max_len=60)
    return f"api:{token}" if token is not None else None


@api.route("POST", "/wishes", summary="Post a wish (许愿)", body=WishIn, response=WishOut, status=201,
           errors=(404, 409))
async def post_wish(req: ApiRequest) -> WishOut:
    """For myself, an elder I act for, or (community staff, grid workers) a resident I look after.
    Its points are the community's current wish points. At most 3 unfinished wishes per resident
    (409). Send an Idempotency-Key header (or client_token): a retry with the same key returns the
    first wish (422 if the text or the resident differ)."""
    actor = await req.bound_actor()
    body: WishIn = req.body
    key = _request_key(req, body)
    wisher = actor
    if body.for_resident_id is not None and body.for_resident_id != actor.id:
        found = await Resident.get_or_none(id=body.for_resident_id, erased_at=None)
        if found is None:
            raise not_found()
        wisher = found
    try:
        wish, _ = await wishes.post_wish(wisher=wisher, actor=actor, text=body.text, now=req.now, channel="api",
                                         request_key=key)
    except RequestKeyReused:
        raise invalid("header.Idempotency-Key", "was used for a different wish") from None
    return await _out(wish, await wishes.relations_of(actor, wish), actor, req.now)


@api.route("GET", "/wishes/{wish_id}", summary="A wish as I may see it", response=WishOut, errors=(409,))
async def get_wish(req: ApiRequest) -> WishOut:
    """The wisher (and family acting for them), the claimer and staff over the wisher see everything,
    the address too; the community's residents and volunteers see the public side of a wish that is
    not withdrawn; anybody else: 404."""
    actor = await req.bound_actor()
    wish, relations = await wishes.get_wish(req.path["wish_id"], actor)
    return await _out(wish, relations, actor, req.now)


async def _after(req: ApiRequest, actor: Resident, wish: Wish) -> WishOut:
    fresh = await Wish.get(id=wish.id)
    return await _out(fresh, await wishes.relations_of(actor, fresh), actor, req.now)


@api.route("POST", "/wishes/{wish_id}/claim", summary="Claim an open wish", response=WishOut, errors=(409,))
async def claim(req: ApiRequest) -> WishOut:
    """Volunteers, organisers and red proxies of the community and its verified party members; the
    first claim wins, a later one gets 409 (a retry by the claimer answers the wish again). The answer
    has the wisher's name and address."""
    actor = await req.bound_actor()
    return await _after(req, actor, await wishes.claim_wish(req.path["wish_id"], actor, req.now, channel="api"))


@api.route("POST", "/wishes/{wish_id}/release", summary="Give a claimed wish back", response=WishOut, errors=(409,))
async def release(req: ApiRequest) -> WishOut:
    """By its claimer, before saying it is done: open again, the wisher told."""
    actor = await req.bound_actor()
    return await _after(req, actor, await wishes.release_wish(req.path["wish_id"], actor, req.now, channel="api"))


@api.route("POST", "/wishes/{wish_id}/fulfil", summary="Say a claimed wish is done", response=WishOut, errors=(409,))
async def fulfil(req: ApiRequest) -> WishOut:
    """By its claimer: the wisher (or their family) is asked to confirm. Saying it twice is once."""
    actor = await req.bound_actor()
    return await _after(req, actor, await wishes.fulfil_wish(req.path["wish_id"], actor, req.now, channel="api"))


@api.route("POST", "/wishes/{wish_id}/confirm", summary="Confirm a wish came true: the points go to the claimer",
           response=WishOut, errors=(409,))
async def confirm_done(req: ApiRequest) -> WishOut:
    """By the wisher or family acting for them; by community staff or the grid worker for a wisher
    without WeChat, or one who has not answered 7 days after the claimer said it was done. The
    points are credited once, however often (or by however many) it is confirmed."""
    actor = await req.bound_actor()
    return await _after(req, actor, await wishes.confirm_wish(req.path["wish_id"], actor, req.now, channel="api"))


@api.route("POST", "/wishes/{wish_id}/reject", summary="Say a wish the claimer called done is not done yet",
           body=ReasonIn, response=WishOut, errors=(409,))
async def reject(req: ApiRequest) -> WishOut:
    """By whoever may confirm it: back to the claimer with the reason."""
    actor = await req.bound_actor()
    body: ReasonIn = req.body
    return await _after(req, actor, await wishes.reject_wish(req.path["wish_id"], actor, body.reason, req.now,
                                                             channel="api"))


@api.route("POST", "/wishes/{wish_id}/cancel", summary="Withdraw a wish", body=CancelIn, response=WishOut,
           errors=(409,))
async def cancel(req: ApiRequest) -> WishOut:
    """The wisher (or family) before the claimer says it is done; staff over the wisher at any time
    before it is confirmed, with a reason (e.g. inappropriate content). The claimer is told."""
    actor = await req.bound_actor()
    body: CancelIn = req.body
    return await _after(req, actor, await wishes.cancel_wish(req.path["wish_id"], actor, req.now, channel="api",
                                                             reason=body.reason))
