"""微心愿: a resident's small wish that a volunteer or party member claims and fulfils.

A resident (a family proxy for an elder, or staff for someone without WeChat) posts a wish. The
community's residents see the open ones with the wisher's name masked and their building only.
Volunteers, organisers, red proxies and verified party members of the community may claim one:
the first claim wins (a conditional update on the status), and only then does the claimer see
the address. The claimer says it is done, the wisher confirms (a pending prompt, or 我的心愿),
and the wish's points (the community's setting when posted) go from the community's issuing
account to the claimer, once, under the key ``wish:<id>:points``. The wisher may say it was not
done (back to the claimer) or withdraw it before it is done, the claimer may give it back,
staff may withdraw any live wish with a reason and confirm for a wisher without WeChat (or one
who did not answer within STAFF_CONFIRM_DAYS).

Every change moves the wish from one (status, version) to the next by a conditional UPDATE, so two
requests racing on one wish (two claimers, a double-tapped confirmation) have one effect. The
version names the pushes and due actions of each step, so a retry never tells anyone twice.
Chat (handlers/wishes.py) and the API call the operations here.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, cast

from tortoise import fields
from tortoise.exceptions import IntegrityError
from tortoise.expressions import F, Q
from tortoise.models import Model
from tortoise.transactions import in_transaction

from models.conversation import Question, choice, push_prompt, withdraw_prompts
from models.errors import NotFound, UserFacingError
from models.facts import verified_statuses
from models.jobs import cancel_actions, register_action, schedule_action
from models.ledger import AccountKind, Asset, Source, account, points_of, transfer
from models.love_bank import settings_of
from models.proxies import ProxyLink, ProxyStatus, acts_for, in_person_confirmers, record_action
from models.push import push_text
from models.residents import Resident, WechatAccount
from models.roles import Role, active_roles, resident_place

log = logging.getLogger(__name__)

TEXT_MIN = 2
TEXT_MAX = 100
REASON_MAX = 60
LIVE_MAX = 3  # live wishes one resident may have at a time
CLAIMS_MAX = 5  # claimed wishes one person may hold unfinished at a time
CLAIM_REMIND_DAYS = 7  # a claimed wish not done after this reminds the claimer
CONFIRM_REMIND_DAYS = 3  # a done wish not confirmed after this reminds the wisher (or their proxy)
STAFF_CONFIRM_DAYS = 7  # after this, staff may confirm for a wisher who has WeChat but did not answer
PROMPT_DAYS = 14  # how long the pushed confirmation question stays answerable

CHAT_CHANNELS = ("oa", "chat")  # where a pushed message and a prompt can be read
CLAIM_ROLES = (Role.VOLUNTEER, Role.ORGANISER, Role.RED_PROXY)
STAFF_ROLES = (Role.COMMUNITY_STAFF, Role.GRID_WORKER)
PARTY_MEMBER = "party_member"  # the verified status (models.facts) that lets a party member claim

CONFIRM_FLOW, CONFIRM_STEP = "wish_answer", "answer"  # handlers/wishes.py answers the pushed question
CONFIRMED_BY_WISHER = "居民确认"

HOW_TO_CLAIM = ("认领心愿需要志愿者身份：请到社区登记成为志愿者；党员请在“我的信息”里申报党员身份，"
                "社区核实后即可认领。")


class WishStatus:
    OPEN = "open"
    CLAIMED = "claimed"
    FULFILLED = "fulfilled"  # the volunteer says it is done, the resident has not confirmed yet
    CONFIRMED = "confirmed"  # points credited
    CANCELLED = "cancelled"


LIVE = (WishStatus.OPEN, WishStatus.CLAIMED, WishStatus.FULFILLED)
STATUS_LABELS = {WishStatus.OPEN: "待认领", WishStatus.CLAIMED: "已认领", WishStatus.FULFILLED: "待确认实现",
                 WishStatus.CONFIRMED: "已实现", WishStatus.CANCELLED: "已撤回"}


class Wish(Model):
    """One micro-wish."""

    _no_comments = True  # see models/__init__.py

    id = fields.IntField(primary_key=True)
    community: fields.ForeignKeyRelation = fields.ForeignKeyField(
        "linli.Community", related_name=False, on_delete=fields.RESTRICT)
    resident: fields.ForeignKeyRelation = fields.ForeignKeyField(
        "linli.Resident", related_name=False, on_delete=fields.RESTRICT)  # whose wish it is
    posted_by: fields.ForeignKeyRelation = fields.ForeignKeyField(
        "linli.Resident", related_name=False, on_delete=fields.RESTRICT)
    # the poster's retry key (an API Idempotency-Key, a chat conversation): one wish per key
    request_key = fields.CharField(max_length=64, null=True)
    text = fields.CharField(max_length=TEXT_MAX)
    points = fields.IntField()
    status = fields.CharField(max_length=12, default=WishStatus.OPEN)
    version = fields.IntField(default=0)  # counts the changes: each moves it from one version to the next
    claimed_by: fields.ForeignKeyNullableRelation = fields.ForeignKeyField(
        "linli.Resident", related_name=False, null=True, on_delete=fields.RESTRICT)
    claimed_at = fields.DatetimeField(null=True)
    fulfilled_at = fields.DatetimeField(null=True)
    reject_reason = fields.CharField(max_length=REASON_MAX, default="")  # the last "not done yet"
    confirmed_at = fields.DatetimeField(null=True)
    confirmed_by: fields.ForeignKeyNullableRelation = fields.ForeignKeyField(
        "linli.Resident", related_name=False, null=True, on_delete=fields.RESTRICT)
    confirm_note = fields.CharField(max_length=60, default="")  # who confirmed, and why staff did
    cancelled_at = fields.DatetimeField(null=True)
    cancelled_by: fields.ForeignKeyNullableRelation = fields.ForeignKeyField(
        "linli.Resident", related_name=False, null=True, on_delete=fields.RESTRICT)
    cancel_reason = fields.CharField(max_length=200, default="")
    entry: fields.ForeignKeyNullableRelation = fields.ForeignKeyField(
        "linli.Entry", related_name=False, null=True, on_delete=fields.RESTRICT)
    created_at = fields.DatetimeField()
    updated_at = fields.DatetimeField(null=True)

    community_id: int
    resident_id: int
    posted_by_id: int
    claimed_by_id: int | None
    confirmed_by_id: int | None
    cancelled_by_id: int | None
    entry_id: int | None

    class Meta:
        table = "micro_wish"
        indexes = (("community_id", "status"), ("resident_id", "status"), ("claimed_by_id", "status"))
        unique_together = (("posted_by", "request_key"),)


class RequestKeyReused(UserFacingError):
    """A retry key came back with a different wish."""

    def __init__(self) -> None:
        super().__init__("这个请求编号已用于另一个心愿，请刷新后重试。")


# ---------------------------------------------------------------------------- words


def clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: max(limit - 1, 0)] + "…"


def mask_name(name: str) -> str:
    """王** for 王秀兰: how the community's list names a wisher."""
    return name[:1] + "*" * max(len(name) - 1, 1) if name else "**"


def check_text(text: str) -> str:
    text = " ".join(text.split())
    if not TEXT_MIN <= len(text) <= TEXT_MAX:
        raise UserFacingError(f"心愿请写{TEXT_MIN}到{TEXT_MAX}个字，例如：想请人帮忙修一下收音机。")
    return text


def _check_reason(reason: str, what: str) -> str:
    reason = " ".join(reason.split())
    if not reason:
        raise UserFacingError(f"请写明{what}。")
    if len(reason) > REASON_MAX:
        raise UserFacingError(f"{what}最多{REASON_MAX}个字，请精简。")
    return reason


# ---------------------------------------------------------------------------- who is who


async def claim_communities(person: Resident) -> set[int]:
    """The communities where this person may claim wishes: those of their volunteer, organiser and
    red-proxy roles, and their own when they are a verified party member."""
    ids = {int(r.community_id) for r in await active_roles(person.id)  # type: ignore[attr-defined]
           if r.role in CLAIM_ROLES and r.community_id is not None}  # type: ignore[attr-defined]
    if PARTY_MEMBER in await verified_statuses(person.id):
        ids.add(int(person.community_id))  # type: ignore[attr-defined]
    return ids


async def seen_communities(person: Resident) -> set[int]:
    """The communities whose open wishes this person sees: their own, and where they may claim."""
    return {int(person.community_id)} | await claim_communities(person)  # type: ignore[attr-defined]


async def _wisher(wish: Wish) -> Resident:
    return await Resident.get(id=wish.resident_id).prefetch_related("building")


async def is_staff_for(actor_id: int, wisher: Resident) -> bool:
    """Community staff of the wisher's community, or the grid worker of their grid."""
    roles = [r for r in await active_roles(actor_id) if r.role in STAFF_ROLES]
    if not roles:
        return False
    place = await resident_place(wisher)
    return any(place.within(r) for r in roles)


async def speaks_for(actor_id: int, wish: Wish) -> bool:
    """The wisher, or a family proxy acting for them."""
    return wish.resident_id == actor_id or await acts_for(actor_id, wish.resident_id)


class Seen:
    WISHER = "wisher"  # the wisher, or a family proxy acting for them: everything
    CLAIMER = "claimer"  # the one who claimed it: everything, the address too
    STAFF = "staff"  # community staff or the grid worker over the wisher: everything
    PUBLIC = "public"  # someone of the community: what the list shows (masked name, building)


async def relations_of(actor: Resident, wish: Wish) -> set[str]:
    """How the actor stands to the wish (empty: that it exists is not theirs to know)."""
    out: set[str] = set()
    if await speaks_for(actor.id, wish):
        out.add(Seen.WISHER)
    if wish.claimed_by_id == actor.id:
        out.add(Seen.CLAIMER)
    if await is_staff_for(actor.id, await _wisher(wish)):
        out.add(Seen.STAFF)
    if wish.status != WishStatus.CANCELLED and wish.community_id in await seen_communities(actor):
        out.add(Seen.PUBLIC)
    return out


def view_of(relations: set[str]) -> str:
    for kind in (Seen.WISHER, Seen.CLAIMER, Seen.STAFF):
        if kind in relations:
            return kind
    return Seen.PUBLIC


async def get_wish(wish_id: int, actor: Resident) -> tuple[Wish, set[str]]:
    """The wish and how the actor stands to it; NotFound when they may not know of it."""
    wish = await Wish.get_or_none(id=wish_id)
    relations = set() if wish is None else await relations_of(actor, wish)
    if wish is None or not relations:
        raise NotFound("没有找到这个心愿。")
    return wish, relations


async def has_wechat(resident_id: int) -> bool:
    return await WechatAccount.filter(resident_id=resident_id).exists()


async def staff_may_confirm(wish: Wish, now: datetime) -> str | None:
    """Why staff may confirm (or say not done) for the wisher now, or None when the wisher must."""
    if not await has_wechat(wish.resident_id):
        return "居民没有微信，工作人员代为确认"
    if wish.fulfilled_at is not None and now - wish.fulfilled_at >= timedelta(days=STAFF_CONFIRM_DAYS):
        return f"居民{STAFF_CONFIRM_DAYS}天未确认，工作人员代为确认"
    return None


async def actions_for(actor: Resident, wish: Wish, relations: set[str], now: datetime) -> list[str]:
    """What the actor may do to the wish now: claim, release, fulfil, confirm, reject, cancel."""
    actions: list[str] = []
    status = wish.status
    if (status == WishStatus.OPEN and Seen.WISHER not in relations
            and wish.community_id in await claim_communities(actor)):
        actions.append("claim")
    if Seen.CLAIMER in relations and status == WishStatus.CLAIMED:
        actions += ["release", "fulfil"]
    if status == WishStatus.FULFILLED and (
            Seen.WISHER in relations or (Seen.STAFF in relations and await staff_may_confirm(wish, now))):
        actions += ["confirm", "reject"]
    if (Seen.WISHER in relations and status in (WishStatus.OPEN, WishStatus.CLAIMED)) or (
            Seen.STAFF in relations and status in LIVE):
        actions.append("cancel")
    return actions


async def voices(wish: Wish) -> list[int]:
    """Who hears of the wish and may answer for it: the wisher, the family proxy who posted it
    while the link lasts, and, for a wisher who cannot read chat, their active proxies and the
    staff member who posted it."""
    ids = [wish.resident_id]
    can_read = await WechatAccount.filter(resident_id=wish.resident_id, channel__in=CHAT_CHANNELS).exists()
    poster = wish.posted_by_id
    if poster != wish.resident_id and (not can_read or await acts_for(poster, wish.resident_id)):
        ids.append(poster)
    if not can_read:
        proxies = await ProxyLink.filter(elder_id=wish.resident_id, status=ProxyStatus.ACTIVE).order_by(
            "id").values_list("proxy_id", flat=True)
        ids += [int(cast(int, p)) for p in proxies if p not in ids]
    return ids


async def _tell(resident_ids: list[int], text: str, key: str, now: datetime) -> int:
    return await push_text(resident_ids, f"【微心愿】{text}", key, now)


async def _whose(wish: Wish, resident_id: int) -> str:
    """'您的心愿' to the wisher, '王秀兰的心愿' to anyone speaking for them."""
    if resident_id == wish.resident_id:
        return "您的心愿"
    return f"{(await Resident.get(id=wish.resident_id)).name}的心愿"


async def _tell_voices(wish: Wish, text: Callable[[str], str], key: str, now: datetime) -> int:
    """Push ``text(whose)`` (whose: 您的心愿, or 王秀兰的心愿 to a proxy) to everyone who speaks for the wisher."""
    told = 0
    for resident_id in await voices(wish):
        told += await _tell([resident_id], text(await _whose(wish, resident_id)), f"{key}:{resident_id}", now)
    return told


async def _reachable(wish: Wish) -> bool:
    """Whether anyone who speaks for the wisher uses WeChat (chat or the mini-program)."""
    return await WechatAccount.filter(resident_id__in=await voices(wish)).exists()


async def _tell_staff(wish: Wish, text: str, key: str, now: datetime) -> int:
    """Tell the wisher's grid worker (else the community staff): someone must meet the wisher."""
    staff = await in_person_confirmers(await Resident.get(id=wish.resident_id))
    return await _tell([s.id for s in staff], text, key, now)


# ---------------------------------------------------------------------------- moving a wish


async def _move(wish: Wish, to: str, now: datetime, **changes: Any) -> bool:
    """Move the wish on from the status and version it was read with; False when something else
    moved it first (the caller reads it again and decides)."""
    moved = await Wish.filter(id=wish.id, status=wish.status, version=wish.version).update(
        status=to, version=F("version") + 1, updated_at=now, **changes)
    if moved:
        wish.status, wish.version, wish.updated_at = to, wish.version + 1, now
        for name, value in changes.items():
            setattr(wish, name, value)
    return bool(moved)


def _target(wish: Wish) -> str:
    return f"wish:{wish.id}:{wish.version}"


async def _schedule(action: str, wish: Wish, due: datetime, now: datetime) -> None:
    await schedule_action(action, _target(wish), due, now, key=f"{action}:{wish.id}:{wish.version}")


async def _cancel_timers(wish_id: int, version: int) -> None:
    for action in (REMIND_CLAIMER, REMIND_WISHER):
        await cancel_actions(action, f"wish:{wish_id}:{version}")


def _confirm_subject(wish: Wish) -> str:
    return f"wish:{wish.id}:confirm"


async def _record(actor: Resident, wish: Wish, action: str, channel: str, now: datetime, *,
                  for_wisher: bool = True) -> None:
    """Who did what for whom: the wisher is the subject of what is done about their wish (by them,
    their family or staff), the claimer of their own claim, release and 已完成."""
    await record_action(actor_id=actor.id, subject_id=wish.resident_id if for_wisher else actor.id, action=action,
                        channel=channel, now=now, detail={"wish_id": wish.id})


# ---------------------------------------------------------------------------- posting


async def may_post_for(actor: Resident, wisher: Resident) -> bool:
    """The wisher themselves, a family proxy acting for them, or staff over them."""
    return actor.id == wisher.id or await acts_for(actor.id, wisher.id) or await is_staff_for(actor.id, wisher)


async def live_count(resident_id: int) -> int:
    return await Wish.filter(resident_id=resident_id, status__in=LIVE).count()


async def post_wish(*, wisher: Resident, actor: Resident, text: str, now: datetime, channel: str,
                    request_key: str | None = None) -> tuple[Wish, bool]:
    """Post a wish for ``wisher`` (by themselves, their proxy or staff); returns (wish, created).

    Its points are the community's wish_points now, frozen on the wish. At most LIVE_MAX live wishes
    per resident. With a request_key, a retry returns the first wish (RequestKeyReused when the key
    came back with another wish)."""
    if not await may_post_for(actor, wisher):
        raise NotFound("没有找到这位居民。")
    text = check_text(text)

    async def earlier() -> tuple[Wish, bool] | None:
        if request_key is None:
            return None
        found = await Wish.get_or_none(posted_by_id=actor.id, request_key=request_key)
        if found is None:
            return None
        if (found.resident_id, found.text) != (wisher.id, text):
            raise RequestKeyReused()
        return found, False

    replay = await earlier()
    if replay is not None:
        return replay
    points = (await settings_of(wisher.community_id)).wish_points  # type: ignore[attr-defined]
    try:
        async with in_transaction():
            # the wisher's row serialises their posts, so the limit holds against concurrent ones
            await Resident.select_for_update().get(id=wisher.id)
            replay = await earlier()  # the same request, committed while this one waited for the lock
            if replay is not None:
                return replay
            if await live_count(wisher.id) >= LIVE_MAX:
                raise UserFacingError(f"{'您' if actor.id == wisher.id else wisher.name}已有{LIVE_MAX}个心愿"
                                      "还没实现，请等它们实现（或撤回一个）后再许新的心愿。")
            wish = await Wish.create(community_id=wisher.community_id, resident_id=wisher.id,  # type: ignore[attr-defined]
                                     posted_by_id=actor.id, request_key=request_key, text=text, points=points,
                                     created_at=now, updated_at=now)
    except IntegrityError:  # the same key, concurrently
        replay = await earlier()
        if replay is None:
            raise
        return replay
    await _record(actor, wish, "post_wish", channel, now)
    return wish, True


# ---------------------------------------------------------------------------- claiming


async def _read(wish_id: int) -> Wish:
    wish = await Wish.get_or_none(id=wish_id)
    if wish is None:
        raise NotFound("没有找到这个心愿。")
    return wish


def _not_open(wish: Wish) -> UserFacingError:
    if wish.status == WishStatus.CANCELLED:
        return UserFacingError("这个心愿已经撤回了。")
    if wish.status == WishStatus.CONFIRMED:
        return UserFacingError("这个心愿已经实现了。")
    return UserFacingError("这个心愿刚刚已被别人认领了，看看其他心愿吧。")


async def claim_wish(wish_id: int, actor: Resident, now: datetime, *, channel: str) -> Wish:
    """First come, first served: one claimer. The wisher hears who claimed it."""
    wish, relations = await get_wish(wish_id, actor)
    if wish.claimed_by_id == actor.id and wish.status in (WishStatus.CLAIMED, WishStatus.FULFILLED):
        return wish  # a retry
    if wish.status != WishStatus.OPEN:
        raise _not_open(wish)
    if Seen.WISHER in relations:
        raise UserFacingError("不能认领自己（或您代办的家人）的心愿。")
    if wish.community_id not in await claim_communities(actor):
        raise UserFacingError(HOW_TO_CLAIM)
    held = await Wish.filter(claimed_by_id=actor.id, status__in=(WishStatus.CLAIMED, WishStatus.FULFILLED)).count()
    if held >= CLAIMS_MAX:
        raise UserFacingError(f"您已认领{CLAIMS_MAX}个心愿还没完成，请先完成（或放弃）后再认领。")
    async with in_transaction():
        moved = await _move(wish, WishStatus.CLAIMED, now, claimed_by_id=actor.id, claimed_at=now,
                            fulfilled_at=None, reject_reason="")
        if moved:
            await _schedule(REMIND_CLAIMER, wish, now + timedelta(days=CLAIM_REMIND_DAYS), now)
    if not moved:
        wish = await _read(wish_id)
        if wish.claimed_by_id == actor.id and wish.status in (WishStatus.CLAIMED, WishStatus.FULFILLED):
            return wish  # the same person's two taps
        raise _not_open(wish)
    await _tell_voices(wish, lambda whose: f"{whose}“{clip(wish.text, 30)}”已由{actor.name}认领，"
                                           "TA会联系您、上门帮忙。", f"wish:{wish.id}:v{wish.version}:claimed", now)
    await _record(actor, wish, "claim_wish", channel, now, for_wisher=False)
    return wish


async def release_wish(wish_id: int, actor: Resident, now: datetime, *, channel: str) -> Wish:
    """The claimer gives the wish back: open again, the wisher told."""
    wish, _ = await get_wish(wish_id, actor)
    if wish.claimed_by_id != actor.id or wish.status != WishStatus.CLAIMED:
        raise UserFacingError("这个心愿不在您的认领中。" if wish.claimed_by_id != actor.id
                              else f"这个心愿{STATUS_LABELS[wish.status]}，不能放弃认领。")
    before = wish.version
    async with in_transaction():
        moved = await _move(wish, WishStatus.OPEN, now, claimed_by_id=None, claimed_at=None, reject_reason="")
        if moved:
            await _cancel_timers(wish.id, before)
    if not moved:
        raise UserFacingError("这个心愿刚刚有了变化，请重新查看。")
    await _tell_voices(wish, lambda whose: f"{actor.name}放弃了认领{whose}“{clip(wish.text, 30)}”，"
                                           "心愿重新等待其他志愿者认领。",
                       f"wish:{wish.id}:v{wish.version}:released", now)
    await _record(actor, wish, "release_wish", channel, now, for_wisher=False)
    return wish


async def fulfil_wish(wish_id: int, actor: Resident, now: datetime, *, channel: str) -> Wish:
    """The claimer says it is done: the wisher (or whoever speaks for them) is asked to confirm."""
    wish, _ = await get_wish(wish_id, actor)
    if wish.claimed_by_id != actor.id:
        raise UserFacingError("这个心愿不在您的认领中。")
    if wish.status in (WishStatus.FULFILLED, WishStatus.CONFIRMED):
        return wish  # a retry
    if wish.status != WishStatus.CLAIMED:
        raise _not_open(wish)
    before = wish.version
    async with in_transaction():
        moved = await _move(wish, WishStatus.FULFILLED, now, fulfilled_at=now)
        if moved:
            await _cancel_timers(wish.id, before)
            await _schedule(REMIND_WISHER, wish, now + timedelta(days=CONFIRM_REMIND_DAYS), now)
    if not moved:
        wish = await _read(wish_id)
        if wish.claimed_by_id == actor.id and wish.status in (WishStatus.FULFILLED, WishStatus.CONFIRMED):
            return wish
        raise UserFacingError("这个心愿刚刚有了变化，请重新查看。")
    await _ask_confirmation(wish, actor, now)
    await _record(actor, wish, "fulfil_wish", channel, now, for_wisher=False)
    return wish


def confirm_question(wish: Wish, claimer_name: str, whose: str) -> Question:
    return choice(f"【微心愿】{claimer_name}说{whose}“{clip(wish.text, 40)}”已经实现了。实现了吗？",
                  [("yes", "已实现"), ("no", "还没有实现")])


async def _ask_confirmation(wish: Wish, claimer: Resident, now: datetime) -> None:
    asked = 0
    for resident_id in await voices(wish):
        question = confirm_question(wish, claimer.name, await _whose(wish, resident_id))
        for acct in await WechatAccount.filter(resident_id=resident_id, channel__in=CHAT_CHANNELS).order_by("id"):
            await push_prompt(openid=acct.openid, flow=CONFIRM_FLOW, step=CONFIRM_STEP, question=question,
                              data={"wish_id": wish.id}, now=now, days=PROMPT_DAYS, subject=_confirm_subject(wish))
            asked += 1
    if not asked and not await _reachable(wish):
        wisher = await Resident.get(id=wish.resident_id)
        await _tell_staff(wish, f"{claimer.name}说{wisher.name}的心愿“{clip(wish.text, 30)}”已经实现。{wisher.name}"
                                "没有微信，请上门或电话核实后，在“心愿管理”里代为确认。",
                          f"wish:{wish.id}:v{wish.version}:staff", now)


# ---------------------------------------------------------------------------- confirming


async def _as_confirmer(wish: Wish, actor: Resident, now: datetime) -> str:
    """What the confirmation records: the wisher's own word, or why staff gave it; else refused."""
    if await speaks_for(actor.id, wish):
        return CONFIRMED_BY_WISHER if actor.id == wish.resident_id else "家人代为确认"
    if await is_staff_for(actor.id, await _wisher(wish)):
        why = await staff_may_confirm(wish, now)
        if why is None:
            raise UserFacingError(f"居民有微信，请由居民本人确认；志愿者完成{STAFF_CONFIRM_DAYS}天后仍未确认的，"
                                  "工作人员才能代为确认。")
        return why
    if wish.claimed_by_id == actor.id:
        raise UserFacingError("心愿要由许愿的居民确认实现，确认后积分会记给您。")
    raise UserFacingError("只有许愿的居民（或家人、社区工作人员）可以确认。")


async def confirm_wish(wish_id: int, actor: Resident, now: datetime, *, channel: str) -> Wish:
    """The wisher (their proxy, or staff for them) confirms: the points go to the claimer, once."""
    wish, _ = await get_wish(wish_id, actor)
    if wish.status == WishStatus.CONFIRMED:
        return wish  # confirmed already (twice, or by someone else): nothing more happens
    if wish.status != WishStatus.FULFILLED:
        raise UserFacingError("这个心愿还没有志愿者说已经完成，现在不需要确认。"
                              if wish.status in LIVE else f"这个心愿{STATUS_LABELS[wish.status]}。")
    note = await _as_confirmer(wish, actor, now)
    claimer_id = cast(int, wish.claimed_by_id)
    before = wish.version
    async with in_transaction():
        moved = await _move(wish, WishStatus.CONFIRMED, now, confirmed_at=now, confirmed_by_id=actor.id,
                            confirm_note=note)
        if moved:
            entry_id = None
            if wish.points > 0:
                issuing = await account(Asset.POINTS, AccountKind.ISSUING, wish.community_id, now)
                posted = await transfer(from_account=issuing, to_account=await points_of(claimer_id, now),
                                        amount=wish.points, source=Source.WISH, key=f"wish:{wish.id}:points",
                                        now=now, ref=f"wish:{wish.id}", memo=clip(wish.text, 60), actor_id=actor.id)
                entry_id = posted.entry.id
                await Wish.filter(id=wish.id).update(entry_id=entry_id)
                wish.entry_id = entry_id
            await _cancel_timers(wish.id, before)
            await withdraw_prompts(_confirm_subject(wish), now)
    if not moved:
        wish = await _read(wish_id)
        if wish.status == WishStatus.CONFIRMED:
            return wish  # confirmed at the same moment by another tap or another person
        raise UserFacingError("这个心愿刚刚有了变化，请重新查看。")
    wisher = await Resident.get(id=wish.resident_id)
    earned = f"已为您记入{wish.points}积分，" if wish.points > 0 else ""
    await _tell([claimer_id], f"{wisher.name}确认您认领的心愿“{clip(wish.text, 30)}”已经实现。{earned}"
                              "谢谢您的爱心！回复“积分”可以查看。", f"wish:{wish.id}:confirmed", now)
    await _record(actor, wish, "confirm_wish", channel, now)
    return wish


async def reject_wish(wish_id: int, actor: Resident, reason: str, now: datetime, *, channel: str) -> Wish:
    """Not done yet: back to the claimer with the reason."""
    wish, _ = await get_wish(wish_id, actor)
    if wish.status != WishStatus.FULFILLED:
        raise UserFacingError("这个心愿现在不需要确认。" if wish.status in LIVE
                              else f"这个心愿{STATUS_LABELS[wish.status]}。")
    await _as_confirmer(wish, actor, now)
    reason = _check_reason(reason, "还差什么")
    before = wish.version
    async with in_transaction():
        moved = await _move(wish, WishStatus.CLAIMED, now, fulfilled_at=None, reject_reason=reason)
        if moved:
            await _cancel_timers(wish.id, before)
            await withdraw_prompts(_confirm_subject(wish), now)
            await _schedule(REMIND_CLAIMER, wish, now + timedelta(days=CLAIM_REMIND_DAYS), now)
    if not moved:
        raise UserFacingError("这个心愿刚刚有了变化，请重新查看。")
    wisher = await Resident.get(id=wish.resident_id)
    await _tell([cast(int, wish.claimed_by_id)],
                f"{wisher.name}说心愿“{clip(wish.text, 30)}”还没有实现：{reason}。请再联系TA，完成后再标记“已完成”。",
                f"wish:{wish.id}:v{wish.version}:rejected", now)
    await _record(actor, wish, "reject_wish", channel, now)
    return wish


# ---------------------------------------------------------------------------- withdrawing


async def cancel_wish(wish_id: int, actor: Resident, now: datetime, *, channel: str, reason: str = "") -> Wish:
    """The wisher withdraws it before it is done (the claimer told), or staff withdraw any live wish
    with a reason (e.g. inappropriate content), the wisher and the claimer told."""
    wish, relations = await get_wish(wish_id, actor)
    if wish.status == WishStatus.CANCELLED:
        return wish  # a retry
    by_wisher = Seen.WISHER in relations and wish.status in (WishStatus.OPEN, WishStatus.CLAIMED)
    if not by_wisher:
        if Seen.STAFF not in relations:
            if Seen.WISHER in relations:
                raise UserFacingError("志愿者已经说完成了，请先确认是否实现。" if wish.status == WishStatus.FULFILLED
                                      else f"这个心愿{STATUS_LABELS[wish.status]}，不能撤回。")
            raise UserFacingError("只有许愿的居民（或社区工作人员）可以撤回这个心愿。")
        if wish.status not in LIVE:
            raise UserFacingError(f"这个心愿{STATUS_LABELS[wish.status]}，不能撤下。")
        reason = _check_reason(reason, "撤下的原因")
    else:
        reason = " ".join(reason.split())[:REASON_MAX] or "居民撤回"
    before, claimer_id = wish.version, wish.claimed_by_id
    async with in_transaction():
        moved = await _move(wish, WishStatus.CANCELLED, now, cancelled_at=now, cancelled_by_id=actor.id,
                            cancel_reason=reason)
        if moved:
            await _cancel_timers(wish.id, before)
            await withdraw_prompts(_confirm_subject(wish), now)
    if not moved:
        wish = await _read(wish_id)
        if wish.status == WishStatus.CANCELLED:
            return wish
        raise UserFacingError("这个心愿刚刚有了变化，请重新查看。")
    key = f"wish:{wish.id}:cancelled"
    if claimer_id is not None:
        await _tell([claimer_id], f"您认领的心愿“{clip(wish.text, 30)}”已撤回（{reason}），不用再去了，谢谢您！",
                    f"{key}:claimer", now)
    if not by_wisher:
        await _tell_voices(wish, lambda whose: f"{whose}“{clip(wish.text, 30)}”已被社区撤下：{reason}。"
                                               "如有疑问请联系社区。", key, now)
    await _record(actor, wish, "cancel_wish", channel, now)
    return wish


# ---------------------------------------------------------------------------- lists


async def open_wishes(community_ids: set[int], *, exclude_resident: int | None = None,
                      limit: int = 20) -> list[Wish]:
    """Open wishes of these communities, the longest waiting first."""
    query = Wish.filter(community_id__in=list(community_ids), status=WishStatus.OPEN)
    if exclude_resident is not None:
        query = query.exclude(resident_id=exclude_resident)
    return await query.order_by("id").limit(limit)


async def wishes_of(resident_id: int, *, limit: int = 20) -> list[Wish]:
    """A resident's wishes: live ones first, newest first."""
    rows = await Wish.filter(resident_id=resident_id).order_by("-id").limit(max(limit, 50))
    return sorted(rows, key=lambda w: (w.status not in LIVE, -w.id))[:limit]


async def claimed_by(resident_id: int, *, limit: int = 20, done: bool = False) -> list[Wish]:
    """The wishes someone claimed and has not finished (with ``done``, the confirmed ones too),
    waiting for them first."""
    statuses = [WishStatus.CLAIMED, WishStatus.FULFILLED] + ([WishStatus.CONFIRMED] if done else [])
    rows = await Wish.filter(claimed_by_id=resident_id, status__in=statuses).order_by("-id").limit(max(limit, 50))
    order = {WishStatus.CLAIMED: 0, WishStatus.FULFILLED: 1, WishStatus.CONFIRMED: 2}
    return sorted(rows, key=lambda w: (order[w.status], w.id))[:limit]


async def in_scope(actor_id: int, *, limit: int = 20) -> list[Wish]:
    """Live wishes of the residents a staff member looks after: those waiting for a confirmation
    first, then claimed, then open, the oldest first."""
    parts = []
    for role in await active_roles(actor_id):
        if role.role == Role.COMMUNITY_STAFF and role.community_id is not None:  # type: ignore[attr-defined]
            parts.append(Q(community_id=role.community_id))  # type: ignore[attr-defined]
        elif role.role == Role.GRID_WORKER and role.grid_id is not None:  # type: ignore[attr-defined]
            parts.append(Q(resident__building__grid_id=role.grid_id))  # type: ignore[attr-defined]
    if not parts:
        return []
    rows = await Wish.filter(Q(*parts, join_type="OR"), status__in=list(LIVE)).order_by("id").limit(500)
    order = {WishStatus.FULFILLED: 0, WishStatus.CLAIMED: 1, WishStatus.OPEN: 2}
    return sorted(rows, key=lambda w: (order[w.status], w.id))[:limit]


async def building_of(wish: Wish) -> str:
    wisher = await _wisher(wish)
    return wisher.building.name if wisher.building else ""


async def address_of(wish: Wish) -> str:
    wisher = await _wisher(wish)
    return wisher.address() or (wisher.building.name if wisher.building else "")


# ---------------------------------------------------------------------------- reminders (due actions)

REMIND_CLAIMER = "wish.remind_claimer"
REMIND_WISHER = "wish.remind_wisher"


async def _due(target: str, status: str) -> Wish | None:
    """The wish of a reminder, if it still stands where it stood when the reminder was set."""
    _, wish_id, version = target.split(":")
    wish = await Wish.get_or_none(id=int(wish_id))
    if wish is None or wish.version != int(version) or wish.status != status:
        return None
    return wish


@register_action(REMIND_CLAIMER)
async def _remind_claimer(target: str, now: datetime) -> None:
    """A claimed wish not done for CLAIM_REMIND_DAYS: remind the claimer once."""
    wish = await _due(target, WishStatus.CLAIMED)
    if wish is None or wish.claimed_by_id is None:
        return
    await _tell([wish.claimed_by_id], f"您认领的心愿“{clip(wish.text, 30)}”已经{CLAIM_REMIND_DAYS}天了。完成后请回复"
                                      "“我认领的”标记已完成；如果做不了，请在那里放弃认领，让其他志愿者来帮忙。",
                f"wish:{wish.id}:v{wish.version}:remind_claimer", now)


@register_action(REMIND_WISHER)
async def _remind_wisher(target: str, now: datetime) -> None:
    """A done wish not confirmed for CONFIRM_REMIND_DAYS: remind the wisher (or their proxy) once,
    or, when nobody speaking for them uses WeChat, the staff who can confirm in person."""
    wish = await _due(target, WishStatus.FULFILLED)
    if wish is None:
        return
    claimer = await Resident.get(id=cast(int, wish.claimed_by_id))
    key = f"wish:{wish.id}:v{wish.version}:remind_wisher"
    told = await _tell_voices(wish, lambda whose: f"{claimer.name}{CONFIRM_REMIND_DAYS}天前说{whose}“"
                                                  f"{clip(wish.text, 30)}”已经实现了。实现了吗？请回复“我的心愿”确认，"
                                                  "确认后积分会记给帮忙的志愿者。", key, now)
    if not told and not await _reachable(wish):
        wisher = await Resident.get(id=wish.resident_id)
        await _tell_staff(wish, f"{wisher.name}的心愿“{clip(wish.text, 30)}”，{claimer.name}{CONFIRM_REMIND_DAYS}天前"
                                "说已经实现，还没有确认。请上门或电话核实后，在“心愿管理”里代为确认。",
                          f"{key}:staff", now)
