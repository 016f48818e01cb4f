"""红色代办 in chat: residents ask, photograph and confirm; stewards, red proxies and department
staff work their queues.

For residents (or a family member acting for one): 代办 (the service package: pick an item, see the
department, the documents, the times and whether a red proxy comes; confirm; then photograph each
document in turn while the bot ticks the checklist off; 稍后 pauses), 我的代办 (list, detail,
继续拍照, 取消, 确认评价), and the answers to what the service pushes: a re-shoot (flow ``errand``
step ``reshoot``), the rating once the result arrived (``errand`` / ``rate``) and, for red proxies,
an errand offered to them (``errand_offer`` / ``answer``). For staff: 代办队列 (cloud stewards and
community staff), 代办任务 (red proxies), 部门办件 (department staff) and 代办数据 (community and
sub-district staff). 代办设置 (digest times, offer minutes, proxy points) and the catalogue are
edited through the API only.

Every rule lives in models/errand_core.py; document photos never enter chat: whoever may open
them gets a short-lived signed link (models/errand_docs.py).
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable
from datetime import datetime
from typing import Any

from bot.engine import (
    REPLY_MAX_CHARS,
    SKIP_WORDS,
    Ask,
    Done,
    Engine,
    Flow,
    Goto,
    Inbound,
    Question,
    StepFn,
    choice,
    confirm,
    free_text,
)
from models import errand_core as core
from models import errand_docs as docs
from models import errand_figures
from models.cases import CONTEXT, local_today
from models.errands import (
    OPEN_STATES,
    PROGRESS_LABELS,
    RESULTS,
    STATE_LABELS,
    CustodyEntry,
    Errand,
    ErrandItem,
    ErrandState,
    PhotoState,
    Progress,
    Via,
)
from models.errors import UserFacingError
from models.places import Community, Department
from models.proxies import record_action
from models.residents import Resident
from models.roles import Role, Scope, StaffRole
from models.wishes import mask_name

STEWARDS = (Role.STEWARD, Role.COMMUNITY_STAFF)
FIGURE_VIEWERS = (Role.COMMUNITY_STAFF, Role.SUBDISTRICT_STAFF)

MINE_LISTED = 6
QUEUE_LISTED = 6
LIST_ROOM = REPLY_MAX_CHARS - 60  # room left in a list for a refusal said before it is asked again
NOTE_MAX = 100  # notes and reasons: what the domain keeps (reshoot reason 2-100, progress note 200)
REASON_MIN = 2
DOCS_MAX = 5  # more documents asked at once (需补充材料)
DOC_MAX = 32

# the states in which documents are (still) photographed
PHOTO_STATES = (ErrandState.COLLECTING, ErrandState.REVIEW, ErrandState.RESHOOT)
# what the resident still has to photograph
NEEDS_PHOTO = (core.MISSING, PhotoState.LOST, PhotoState.RESHOOT)
# what a resident may still withdraw
RESIDENT_CANCELS = (ErrandState.COLLECTING, ErrandState.REVIEW, ErrandState.RESHOOT, ErrandState.READY)
STAFF_CANCELS = (*RESIDENT_CANCELS, ErrandState.TRANSFERRED)
PROGRESS_CHOICES = [(p, PROGRESS_LABELS[p]) for p in (Progress.RECEIVED, Progress.PROCESSING, Progress.MORE_NEEDED,
                                                      Progress.APPROVED, Progress.REJECTED)]

LATER = "later"
LATER_WORD = "稍后"
NEXT = "next"
MINE = "mine"
NO_BINDING = "请先绑定身份。回复“绑定”开始。"


# ---------------------------------------------------------------------------- wording


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: max(limit - 1, 0)] + "…"


def _day(when: datetime | None) -> str:
    if when is None:
        return ""
    local = when.astimezone(CONTEXT.tz)
    return f"{local.month}月{local.day}日"


def _minutes(minutes: int) -> str:
    if minutes < 60 or minutes % 60:
        return f"{minutes}分钟"
    if minutes < 1440 or minutes % 1440:
        return f"{minutes // 60}小时"
    return f"{minutes // 1440}天"


def _for(resident: Resident, actor: Resident) -> str:
    return f"（为{resident.name}办理）\n" if resident.id != actor.id else ""


def _fit(head: str, items: list[tuple[Any, str]], *, also: tuple[str, ...] = (), prefix: str = "") -> Question:
    """A choice whose head gives way (clipped) so that the reply, said after ``prefix``, fits."""
    question = choice(head, items, also=also)
    if len(prefix) + len(question.render()) <= REPLY_MAX_CHARS:
        return question
    room = REPLY_MAX_CHARS - len(prefix) - len(choice("", items, also=also).render()) - 1
    return choice(_clip(head, room), items, also=also)


def _done(text: str, tail: str = "") -> Done:
    """A last reply that fits, its tail (what to do next) kept whole."""
    return Done(_clip(text, REPLY_MAX_CHARS - len(tail)) + tail)


async def _run(action: Awaitable[str]) -> Done:
    """A last step: what the domain did, or its refusal as it put it."""
    try:
        return Done(await action)
    except UserFacingError as exc:
        return Done(exc.message)


def _short(reason: str) -> str:
    """仅限80岁以上居民申请 of 仅限80岁以上居民申请，请先…: a reason's first clause, for a list."""
    return _clip(reason.split("（")[0].split("，")[0], 12)


def _state_text(errand: Errand) -> str:
    if errand.state == ErrandState.TRANSFERRED and errand.progress:
        return PROGRESS_LABELS.get(errand.progress, errand.progress)
    if errand.state == ErrandState.RESULT and errand.progress:
        return f"{PROGRESS_LABELS.get(errand.progress, errand.progress)}，待送达"
    return STATE_LABELS.get(errand.state, errand.state)


def _marks(statuses: list[core.DocStatus]) -> str:
    """☑身份证 ☐户口本（需重拍）: the checklist as the resident sees it."""
    out = []
    for status in statuses:
        if status.state in NEEDS_PHOTO:
            again = "（需重拍）" if status.state != core.MISSING else ""
            out.append(f"☐{status.document}{again}")
        else:
            out.append(f"☑{status.document}")
    return " ".join(out)


async def _checklist(errand: Errand) -> list[core.DocStatus]:
    return core.checklist(errand, await core.photos_of(errand.id))


def _media(answer: dict[str, Any]) -> dict[str, Any]:
    """The photo of an answer: a photo question's own, or a choice's that also takes one."""
    return answer.get("photo", answer)


async def _department_name(department_id: int | None) -> str:
    department = await Department.get_or_none(id=department_id) if department_id else None
    return department.name if department is not None else "社区"


async def _person(resident_id: int | None) -> Resident | None:
    if resident_id is None:
        return None
    return await Resident.get_or_none(id=resident_id).prefetch_related("building")


async def _name(resident_id: int | None) -> str:
    person = await _person(resident_id)
    return person.name if person is not None else ""


# ---------------------------------------------------------------------------- 代办: a resident asks

errand_flow = Flow("errand", "红色代办", keywords=("代办", "红色代办", "我要代办", "上门代办", "便民服务"),
                   menu_keys=("ERRAND",))


def _items_page(rows: list[tuple[Any, str]], start: int, head: str,
                tail: list[tuple[Any, str]]) -> tuple[Question, int]:
    """As many items from ``start`` as fit, then 更多事项 when some are left; returns where it stopped."""
    shown: list[tuple[Any, str]] = []
    end = start
    while end < len(rows):
        more = [(NEXT, "更多事项")] if end + 1 < len(rows) else []
        if shown and len(choice(head, [*shown, rows[end], *more, *tail]).render()) > LIST_ROOM:
            break
        shown.append(rows[end])
        end += 1
    if end < len(rows):
        shown.append((NEXT, "更多事项"))
    elif start > 0:
        shown.append((NEXT, "从头再看"))
    return choice(head, [*shown, *tail]), end


async def _items_question(resident: Resident, actor: Resident, data: dict[str, Any], now: datetime) -> Question:
    items = await core.items_for(resident, now)
    rows: list[tuple[Any, str]] = [(item.id, item.name if reason is None else f"{item.name}（{_short(reason)}）")
                                   for item, reason in items]
    live = [e for e in await core.errands_of(resident.id) if e.state in OPEN_STATES]
    tail = [(MINE, f"我的代办（{len(live)}件在办）")] if live else []
    head = _for(resident, actor) + "红色代办：请选择要办的事项（括号里是暂不能申请的原因）："
    question, end = _items_page(rows, int(data.get("start", 0)), head, tail)
    data["end"] = end if end < len(rows) else 0
    return question


@errand_flow.entry
async def start(resident: Resident, actor: Resident, data: dict[str, Any], now: datetime) -> Ask | Done:
    """The service package (numbered, with why an item may not be asked), or, handed over from
    我的代办 or 代办任务, the next document to photograph."""
    if data.get("errand_id"):
        errand = await core.get_errand(int(data["errand_id"]), actor.id)
        return await _next_photo(errand, data)
    if not await core.ensure_catalogue(resident.community_id, now):  # type: ignore[attr-defined]
        return Done("您的社区还没有开通代办事项，请联系社区工作人员。")
    data["start"] = 0
    data["key"] = secrets.token_hex(8)  # one errand per conversation, however often 是 arrives
    return Ask("item", await _items_question(resident, actor, data, now))


@errand_flow.step("item")
async def picked_item(answer: Any, resident: Resident, actor: Resident, data: dict[str, Any],
                      now: datetime) -> Ask | Goto:
    """The item's card: department, documents, times, whether a red proxy comes; ask to confirm."""
    if answer == MINE:
        return Goto(mine_flow.name)
    if answer == NEXT:
        data["start"] = data.get("end", 0)
        return Ask("item", await _items_question(resident, actor, data, now))
    found = {item.id: (item, reason) for item, reason in await core.items_for(resident, now)}
    if answer not in found:
        raise UserFacingError("这个事项已经停办了，请选择其他事项。")
    item, reason = found[answer]
    if reason is not None:
        raise UserFacingError(f"“{item.name}”暂不能申请：{reason}。请选择其他事项。")
    data["item_id"] = item.id
    lines = [f"{_for(resident, actor)}{item.name}（{await _department_name(item.department_id)}办理）",
             f"需要拍照的材料：{'、'.join(item.documents)}",
             f"云管家{_minutes(item.first_response_minutes)}内响应，预计{item.expected_days}天办结。"]
    special = await core.proxy_reason(resident, local_today(now))
    if special:
        label = core.SPECIAL_LABELS.get(special, special)
        lines.append(f"{'您' if resident.id == actor.id else resident.name}属于{label}，"
                     "红色代办员会上门帮忙，原件不用自己跑。")
    else:
        lines.append("材料齐了由云管家转给部门办理，进度会推送给您。")
    same = [e for e in await core.errands_of(resident.id) if e.item_id == item.id and e.state in OPEN_STATES]
    if same:
        lines.append(f"这件事已在办（编号{same[0].id}，{_state_text(same[0])}），确认后接着拍材料。")
    lines.append("确认申请吗？确认后请按提示逐项拍照发来。")
    return Ask("confirm", _fit_confirm("\n".join(lines)))


def _fit_confirm(text: str) -> Question:
    question = confirm(text)
    if len(question.render()) <= REPLY_MAX_CHARS:
        return question
    return confirm(_clip(text, REPLY_MAX_CHARS - len(confirm("").render()) - 1))


@errand_flow.step("confirm")
async def confirmed(answer: bool, resident: Resident, actor: Resident, data: dict[str, Any], msg: Inbound,
                    now: datetime) -> Ask | Done:
    """Ask for the errand (once per conversation), then the first document to photograph."""
    if not answer:
        return Done("好的，没有申请。需要时回复“代办”。")
    errand, created = await core.create_errand(item_id=int(data["item_id"]), resident_id=resident.id,
                                               requested_by_id=actor.id, via=Via.CHAT, now=now,
                                               key=f"chat:{data['key']}")
    if created and actor.id != resident.id:
        await record_action(actor_id=actor.id, subject_id=resident.id, action="errand_request", channel=msg.channel,
                            now=now, detail={"errand_id": errand.id})
    data["errand_id"] = errand.id
    head = f"已申请“{errand.item_name}”，编号{errand.id}。" if created else \
        f"“{errand.item_name}”已在办理中（编号{errand.id}）。"
    return await _next_photo(errand, data, head + "\n")


async def _next_photo(errand: Errand, data: dict[str, Any], prefix: str = "") -> Ask | Done:
    """The next document to photograph with the checklist ticked off, or what happens now that
    every document has a photo."""
    data["errand_id"] = errand.id
    statuses = await _checklist(errand)
    marks = _marks(statuses)
    if errand.state not in PHOTO_STATES:
        return _done(f"{prefix}{errand.item_name}：{_state_text(errand)}。", "回复“我的代办”查看。")
    todo = [s for s in statuses if s.state in NEEDS_PHOTO]
    if not todo:
        return _done(f"{prefix}材料：{marks}\n材料已经拍齐，云管家预审后会告诉您结果。", "回复“我的代办”查看进度。")
    status = todo[0]
    data["document"] = status.document
    why = ""
    if status.state != core.MISSING and status.reason:
        why = f"（需重拍：{_clip(status.reason, 40)}）"
    text = (f"材料：{marks}\n请拍“{status.document}”发来{why}：点输入框旁的“+”，选“拍摄”或“照片”。"
            f"还差{len(todo)}项；暂时拍不了请回复“{LATER_WORD}”。")
    prefix = _clip(prefix, REPLY_MAX_CHARS // 3)
    return Ask("photo", _fit(text, [(LATER, LATER_WORD)], also=("photo",), prefix=prefix), prefix=prefix)


@errand_flow.step("photo")
async def got_photo(answer: Any, actor: Resident, data: dict[str, Any], now: datetime) -> Ask | Done:
    """Keep the photo of the document asked for (a photo that cannot be kept is asked again), then
    the next one; 稍后 pauses until 我的代办."""
    if answer == LATER:
        return Done("好的，先停在这里，已拍的材料都保存了。拍好后回复“我的代办”，选这件事继续拍照。")
    return await _add_photo(int(data["errand_id"]), str(data["document"]), _media(answer), actor, data, now)


async def _add_photo(errand_id: int, document: str, media: dict[str, Any], actor: Resident, data: dict[str, Any],
                     now: datetime) -> Ask | Done:
    try:
        photo = await core.add_photo(errand_id, document, by_id=actor.id, now=now,
                                     media_id=str(media.get("media_id") or ""), pic_url=str(media.get("pic_url") or ""))
    except UserFacingError as exc:
        return Done(exc.message + "回复“我的代办”查看。")
    errand = await core.get_errand(errand_id, actor.id)
    if photo.state == PhotoState.LOST:
        prefix = f"“{document}”没能保存：{_clip(photo.reason, 40)}\n" if photo.reason else \
            f"“{document}”没能保存，请重拍。\n"
    else:
        prefix = f"已收到“{document}”。\n"
    return await _next_photo(errand, data, prefix)


# ---------------------------------------------------------------------------- the prompts errand_core pushes


@errand_flow.step("reshoot")
async def reshot(answer: dict[str, Any], actor: Resident | None, data: dict[str, Any], now: datetime) -> Ask | Done:
    """A new photo of the document the steward asked again for; then whatever else is missing."""
    if actor is None:
        return Done(NO_BINDING)
    return await _add_photo(int(data["errand_id"]), str(data["document"]), _media(answer), actor, data, now)


async def _rated(answer: Any, data: dict[str, Any]) -> Ask:
    """Keep the rating, offer a note."""
    data["rating"] = int(answer)
    return Ask("rate_note", free_text(f"谢谢！还有什么想说的吗？（{NOTE_MAX}字以内，没有请回复“跳过”）",
                                      max_len=NOTE_MAX))


async def _rate_noted(answer: str, actor: Resident | None, data: dict[str, Any], now: datetime) -> Done:
    """Confirm the result with the rating (the red proxy's points are credited once)."""
    if actor is None:
        return Done(NO_BINDING)
    note = "" if answer.strip().lower() in SKIP_WORDS else answer

    async def rated() -> str:
        errand = await core.confirm(int(data["errand_id"]), actor.id, int(data["rating"]), now, note=note)
        thanks = "已为红色代办员记入爱心积分。" if errand.proxy_id else ""
        return f"谢谢您的评价！“{errand.item_name}”已办结。{thanks}"
    return await _run(rated())


errand_flow.step("rate")(_rated)
errand_flow.step("rate_note")(_rate_noted)


offer_flow = Flow("errand_offer", "代办接单")


@offer_flow.step("answer")
async def offer_answered(answer: Any, actor: Resident | None, data: dict[str, Any], now: datetime) -> Done:
    """接单: the errand is the proxy's (the first to accept wins); 不接 leaves it to the others."""
    if actor is None:
        return Done(NO_BINDING)
    if answer != core.ACCEPT:
        return await _decline(int(data["errand_id"]), actor, now)
    return await _accept(int(data["errand_id"]), actor, now)


async def _decline(errand_id: int, actor: Resident, now: datetime) -> Done:
    """Recorded, so that the offer widens at once when every proxy asked said no."""
    try:
        await core.decline_offer(errand_id, actor.id, now)
    except UserFacingError as exc:
        return Done(exc.message)
    return Done("好的，这件代办留给其他代办员。回复“代办任务”可以随时查看。")


async def _accept(errand_id: int, actor: Resident, now: datetime) -> Done:
    try:
        errand = await core.accept_offer(errand_id, actor.id, now)
    except UserFacingError as exc:
        return Done(exc.message + "回复“代办任务”查看其他任务。")
    person = await _person(errand.resident_id)
    where = person.address() if person is not None else ""
    return _done(f"接单成功！请尽快上门：{person.name if person else ''}，{where}。\n事项：{errand.item_name}，"
                 f"材料：{'、'.join(errand.documents)}。",
                 "帮TA拍材料、取走或归还原件、送达结果，都在“代办任务”里登记。")


# ---------------------------------------------------------------------------- 我的代办: the resident's errands

# it interrupts: whoever is photographing (or picking an item) and asks for 我的代办 wants to look there
mine_flow = Flow("errand_mine", "我的代办", keywords=("我的代办", "代办进度"), interrupts=True)


@mine_flow.entry
async def list_mine(resident: Resident, actor: Resident) -> Ask | Done:
    """The resident's errands, newest first, with where each stands."""
    found = (await core.errands_of(resident.id))[:MINE_LISTED]
    if not found:
        return Done(_for(resident, actor) + "还没有代办事项。回复“代办”可以申请。")
    items = [(e.id, f"编号{e.id} {e.item_name}：{_state_text(e)}") for e in found]
    whose = "您" if resident.id == actor.id else resident.name
    return Ask("pick", choice(f"{whose}的代办（回复序号查看）：", items))


@mine_flow.step("pick")
async def mine_pick(answer: int, actor: Resident, data: dict[str, Any]) -> Ask | Done:
    """The errand and what may be done now: 继续拍照, 确认评价, 取消."""
    errand = await core.get_errand(answer, actor.id)
    data["errand_id"] = errand.id
    lines = [f"编号{errand.id} {errand.item_name}·{_day(errand.created_at)}申请", f"状态：{_state_text(errand)}"]
    if errand.progress_note and errand.state in (ErrandState.TRANSFERRED, ErrandState.RESULT, ErrandState.DELIVERED,
                                                 ErrandState.CLOSED):
        lines.append(f"部门说明：{_clip(errand.progress_note, 40)}")
    statuses = await _checklist(errand)
    if errand.state in (*PHOTO_STATES, ErrandState.READY):
        lines.append(f"材料：{_marks(statuses)}")
    if errand.proxy_id:
        lines.append(f"红色代办员：{await _name(errand.proxy_id)}")
    elif errand.needs_proxy and errand.state in OPEN_STATES:
        lines.append("正在为您安排红色代办员上门。")
    held = [c.document for c in await core.custody_of(errand.id) if c.returned_at is None]
    if held:
        lines.append(f"代办员取走的原件（未归还）：{'、'.join(held)}")
    if errand.state == ErrandState.CLOSED and errand.rating:
        lines.append(f"您的评价：{errand.rating}分")
    items: list[tuple[str, str]] = []
    if errand.state in PHOTO_STATES and any(s.state in NEEDS_PHOTO for s in statuses):
        items.append(("photos", "继续拍照"))
    if errand.state == ErrandState.DELIVERED:
        items.append(("rate", "确认收到并评价"))
    if errand.state in RESIDENT_CANCELS:
        items.append(("cancel", "取消这件代办"))
    if not items:
        return _done("\n".join(lines), "\n回复“我的代办”查看其他代办。")
    return Ask("action", _fit("\n".join(lines), items))


@mine_flow.step("action")
async def mine_action(answer: str, actor: Resident, data: dict[str, Any]) -> Ask | Goto:
    """继续拍照 hands over to the photographing; 评价 asks the rating; 取消 asks first."""
    errand = await core.get_errand(int(data["errand_id"]), actor.id)
    if answer == "photos":
        return Goto(errand_flow.name, data={"errand_id": errand.id})
    if answer == "rate":
        return Ask("rate", core.rate_question(errand, "您" if errand.resident_id == actor.id else
                                              await _name(errand.resident_id)))
    return Ask("cancel", confirm(f"确定取消“{errand.item_name}”（编号{errand.id}）吗？取消后云管家不再办理，"
                                 "需要时可以重新申请。"))


@mine_flow.step("cancel")
async def mine_cancel(answer: bool, actor: Resident, data: dict[str, Any], now: datetime) -> Done:
    """Withdraw the errand (whoever was involved is told)."""
    if not answer:
        return Done("好的，没有取消。回复“我的代办”查看。")

    async def cancelled() -> str:
        errand = await core.cancel(int(data["errand_id"]), actor.id, now)
        return f"已取消“{errand.item_name}”（编号{errand.id}）。需要时回复“代办”重新申请。"
    return await _run(cancelled())


mine_flow.step("rate")(_rated)
mine_flow.step("rate_note")(_rate_noted)


# ---------------------------------------------------------------------------- the staff's cards, shared
# 代办队列, 部门办件 and 代办任务 show an errand the same way and share the steps of what they may do
# (查看材料, 记录进度, 已告知结果...): each flow registers the shared steps under the same names.


async def _link(actor: Resident, errand_id: int, engine: Engine, now: datetime) -> str:
    """A signed link to the documents page (the photos never go into chat)."""
    path = await docs.make_link(actor.id, errand_id, now)
    url = docs.link_url(engine.config.server.public_url, path)
    return f"材料链接（{engine.config.errands.link_minutes}分钟内有效，需用工作人员身份登录查看）：\n{url}"


async def _card(errand_id: int, actor: Resident, data: dict[str, Any], now: datetime, *, kind: str,
                prefix: str = "") -> Ask | Done:
    """The errand as a steward (kind "steward"), department staff ("dept") or the assigned red proxy
    ("proxy") needs it, and what they may do now."""
    errand = await core.get_errand(errand_id, actor.id)
    data["errand_id"] = errand.id
    person = await _person(errand.resident_id)
    statuses = await _checklist(errand)
    photos = [s.photo for s in statuses if s.photo is not None]
    who = f"{person.name}（{person.address()}）" if person is not None else ""
    lines = [f"编号{errand.id} {errand.item_name}·{who}",
             f"{_day(errand.created_at)}申请，{_state_text(errand)}"]
    if errand.progress_note:
        lines.append(f"部门说明：{_clip(errand.progress_note, 30)}")
    if errand.state in (*PHOTO_STATES, ErrandState.READY):
        lines.append(f"材料：{_marks(statuses)}")
    if kind == "steward" and errand.needs_proxy:
        label = core.SPECIAL_LABELS.get(errand.proxy_reason, errand.proxy_reason) if errand.proxy_reason else "需要"
        who = await _name(errand.proxy_id) if errand.proxy_id else "还没有人接单"
        lines.append(f"红色代办（{label}）：{who}")
    held = [c.document for c in await core.custody_of(errand.id) if c.returned_at is None]
    if held:
        lines.append(f"已取走的原件：{'、'.join(held)}")
    items: list[tuple[str, str]] = []
    live = errand.state in OPEN_STATES
    pending = [p for p in photos if p.state == PhotoState.PENDING]
    # a steward reviews (and opens the documents of) what is theirs, or what nobody took yet
    free = errand.steward_id in (None, actor.id)
    if kind == "steward":
        if errand.steward_id is None and live:
            items.append(("take", "接单"))
        if pending and free:
            items.append(("review", f"预审（{len(pending)}张待看）"))
    if kind == "proxy" and errand.state in PHOTO_STATES and any(s.state in NEEDS_PHOTO for s in statuses):
        items.append(("photos", "拍材料"))
    if any(p.stored_at is not None and p.deleted_at is None for p in photos) and (kind != "steward" or free):
        items.append(("link", "查看材料"))
    if kind == "steward" and errand.state == ErrandState.READY:
        items.append(("transfer", "转办"))
    if kind in ("steward", "dept") and errand.state == ErrandState.TRANSFERRED:
        items.append(("progress", "记录进度"))
    if kind == "proxy" and live and errand.state != ErrandState.DELIVERED:
        items.append(("take_original", "取走原件"))
    if held and kind == "proxy":
        items.append(("return_original", "归还原件"))
    if errand.state == ErrandState.RESULT and (kind == "proxy" or errand.proxy_id is None):
        items.append(("deliver", "已送达" if kind == "proxy" else "已告知结果"))
    if kind == "steward" and live and errand.state not in (ErrandState.RESULT, ErrandState.DELIVERED):
        if not errand.needs_proxy:
            items.append(("need_proxy", "需要代办员"))
        elif errand.proxy_id is None:
            items.append(("assign", "指派代办员"))
    if kind == "steward" and errand.state in STAFF_CANCELS:
        items.append(("cancel", "取消"))
    text = prefix + "\n".join(lines)
    if not items:
        return _done(text, "\n" + BACK[kind])
    return Ask("action", _fit(text, items))


BACK = {"steward": "回复“代办队列”查看其他代办。", "dept": "回复“部门办件”查看其他办件。",
        "proxy": "回复“代办任务”查看其他任务。"}


async def _act(kind: str, answer: str, actor: Resident, data: dict[str, Any], engine: Engine,
               now: datetime) -> Ask | Done | Goto:
    """What a card's choice needs: done at once (接单, 查看材料), or the next question."""
    errand_id = int(data["errand_id"])
    if answer == "take":
        await core.take(errand_id, actor.id, now)
        return await _card(errand_id, actor, data, now, kind=kind, prefix="已接单，已告诉居民。\n")
    if answer in ("review", "link") and kind == "steward":
        # the documents open to the assigned steward only: whoever looks at them takes the errand
        errand = await core.get_errand(errand_id, actor.id)
        if errand.steward_id is None:
            await core.take(errand_id, actor.id, now)
    if answer == "link":
        card = await _card(errand_id, actor, data, now, kind=kind)
        link = await _link(actor, errand_id, engine, now)
        if isinstance(card, Ask):
            items = [(v, label) for v, label in zip(card.question.values, card.question.options, strict=True)
                     if v != "link"]
            if items:
                return Ask("action", choice(link + "\n接下来：", items))
        return Done(link + "\n" + BACK[kind])
    if answer == "review":
        return await _review_next(errand_id, actor, data, engine, now, first=True)
    if answer == "photos":
        return Goto(errand_flow.name, data={"errand_id": errand_id})
    errand = await core.get_errand(errand_id, actor.id)
    if answer == "transfer":
        return Ask("transfer", choice("转给哪个部门办理？", await _departments(errand)))
    if answer == "progress":
        return Ask("progress", choice("部门的进度是：", PROGRESS_CHOICES))
    if answer == "deliver":
        text = (f"确认已把“{errand.item_name}”的结果送到{await _name(errand.resident_id)}家吗？"
                if kind == "proxy" else f"确认已把“{errand.item_name}”的结果告诉居民了吗？")
        return Ask("deliver", confirm(text + "确认后会请居民评价。"))
    if answer == "need_proxy":
        return Ask("need_proxy", confirm("标记为需要红色代办员上门吗？会发给居民所在网格的红色代办员接单。"))
    if answer == "assign":
        proxies = await _red_proxies(errand)
        if not proxies:
            raise UserFacingError("社区还没有红色代办员，请先在社区添加。")
        return Ask("assign", choice("指派哪位红色代办员？", proxies))
    if answer == "take_original":
        return Ask("take_original", choice("取走了哪份原件？", [(d, d) for d in errand.documents]))
    if answer == "return_original":
        held = [c for c in await core.custody_of(errand_id) if c.returned_at is None]
        return Ask("return_original", choice("归还了哪份原件？", [(c.id, f"{c.document}（{_day(c.taken_at)}取走）")
                                                            for c in held]))
    return Ask("cancel_reason", free_text(f"请写取消的原因（{REASON_MIN}到{NOTE_MAX}字），会告诉居民：",
                                          min_len=REASON_MIN, max_len=NOTE_MAX))


async def _departments(errand: Errand) -> list[tuple[Any, str]]:
    """The item's department first, then the other departments of the sub-district."""
    community = await Community.get(id=errand.community_id)
    departments = await Department.filter(sub_district_id=community.sub_district_id).order_by("id")  # type: ignore[attr-defined]
    default = errand.department_id
    if default is None:
        item = await ErrandItem.get_or_none(id=errand.item_id)
        default = item.department_id if item is not None else None
    first = [(d.id, f"{d.name}（事项的办理部门）") for d in departments if d.id == default]
    return [*first, *[(d.id, d.name) for d in departments if d.id != default]][:10]


async def _red_proxies(errand: Errand) -> list[tuple[Any, str]]:
    """The community's red proxies, those of the resident's grid first."""
    person = await _person(errand.resident_id)
    grid = person.building.grid_id if person is not None and person.building is not None else None  # type: ignore[attr-defined]
    roles = await StaffRole.filter(role=Role.RED_PROXY, community_id=errand.community_id, revoked_at=None).order_by(
        "id").prefetch_related("resident")
    roles.sort(key=lambda r: r.grid_id != grid)  # type: ignore[attr-defined]
    seen: dict[int, str] = {}
    for role in roles:
        seen.setdefault(role.resident.id, role.resident.name + ("（本网格）" if role.grid_id == grid else ""))  # type: ignore[attr-defined]
    return list(seen.items())[:8]


async def _review_next(errand_id: int, actor: Resident, data: dict[str, Any], engine: Engine, now: datetime, *,
                       first: bool = False, prefix: str = "") -> Ask | Done:
    """The next photo waiting for the pre-review: 通过 or 重拍 (the first one with the link to see them)."""
    photos = [p for p in await core.photos_of(errand_id) if p.state == PhotoState.PENDING]
    if not photos:
        return await _card(errand_id, actor, data, now, kind="steward", prefix=prefix + "没有待预审的照片了。\n")
    photo = photos[0]
    data["photo_id"] = photo.id
    head = prefix
    if first:
        head += await _link(actor, errand_id, engine, now) + "\n"
    question = choice(f"预审“{photo.document}”（还有{len(photos)}张待看）：",
                      [("accept", "通过"), ("reshoot", "请居民重拍")])
    return Ask("review", question, prefix=head)


# the shared steps


async def review_answer(answer: str, actor: Resident, data: dict[str, Any], engine: Engine,
                        now: datetime) -> Ask | Done:
    """通过: the next photo. 重拍: ask the reason the resident reads."""
    if answer == "reshoot":
        return Ask("reshoot_reason", free_text(f"请写重拍的原因（{REASON_MIN}到{NOTE_MAX}字），居民会看到，例如："
                                               "照片模糊，请在光线好的地方重拍", min_len=REASON_MIN, max_len=NOTE_MAX))
    try:
        photo = await core.review_photo(int(data["photo_id"]), actor.id, accept=True, now=now)
    except UserFacingError as exc:  # e.g. a new photo came meanwhile: go on with what waits now
        return await _review_next(int(data["errand_id"]), actor, data, engine, now, prefix=exc.message + "\n")
    return await _review_next(int(data["errand_id"]), actor, data, engine, now, prefix=f"“{photo.document}”已通过。\n")


async def reshoot_reason(answer: str, actor: Resident, data: dict[str, Any], engine: Engine,
                         now: datetime) -> Ask | Done:
    """Ask the resident for the photo again with this reason (a pushed prompt)."""
    try:
        photo = await core.review_photo(int(data["photo_id"]), actor.id, accept=False, reason=answer, now=now)
    except UserFacingError as exc:
        return await _review_next(int(data["errand_id"]), actor, data, engine, now, prefix=exc.message + "\n")
    return await _review_next(int(data["errand_id"]), actor, data, engine, now,
                              prefix=f"已请居民重拍“{photo.document}”。\n")


async def transfer_to(answer: int, data: dict[str, Any]) -> Ask:
    """Ask before transferring (the resident may no longer withdraw it then)."""
    data["department_id"] = answer
    return Ask("transfer_confirm", confirm(f"确定转给{await _department_name(answer)}办理吗？"
                                           "转办后由部门处理，居民不能再取消。"))


async def transfer_confirmed(answer: bool, actor: Resident, data: dict[str, Any], now: datetime) -> Done:
    """Transfer: the department's staff are told."""
    if not answer:
        return Done("好的，没有转办。" + BACK["steward"])

    async def transferred() -> str:
        errand = await core.transfer(int(data["errand_id"]), actor.id, now,
                                     department_id=int(data["department_id"]))
        return (f"已转给{await _department_name(errand.department_id)}（编号{errand.id}），已告诉居民。"
                "部门的进度请在“记录进度”里登记。")
    return await _run(transferred())


async def progress_picked(answer: str, data: dict[str, Any]) -> Ask:
    """The note: required for 未通过 and 需补充材料, else optional."""
    data["progress"] = answer
    if answer == Progress.REJECTED:
        text = f"请写未通过的原因（{REASON_MIN}到{NOTE_MAX}字），会告诉居民："
    elif answer == Progress.MORE_NEEDED:
        text = f"请写需要补充什么（{REASON_MIN}到{NOTE_MAX}字），会告诉居民："
    else:
        text = f"补充说明（{NOTE_MAX}字以内，会告诉居民；没有请回复“跳过”）："
    return Ask("progress_note", free_text(text, max_len=NOTE_MAX))


async def progress_noted(answer: str, actor: Resident, data: dict[str, Any], now: datetime) -> Ask | Done:
    """More documents to photograph (需补充材料); a result is confirmed first; else recorded."""
    needs_note = data["progress"] in (Progress.REJECTED, Progress.MORE_NEEDED)
    skipped = answer.strip().lower() in SKIP_WORDS
    if needs_note and (skipped or len(answer.strip()) < REASON_MIN):
        raise UserFacingError(f"请写明原因（{REASON_MIN}到{NOTE_MAX}字）。")
    data["note"] = "" if skipped else answer.strip()
    if data["progress"] == Progress.MORE_NEEDED:
        return Ask("more_documents", free_text(f"要补拍哪些新材料？用“、”分开，例如：房产证、收入证明"
                                               f"（最多{DOCS_MAX}项；不用补拍新材料请回复“跳过”）：",
                                               max_len=DOCS_MAX * (DOC_MAX + 1)))
    if data["progress"] in RESULTS:
        label = PROGRESS_LABELS[data["progress"]]
        return Ask("progress_confirm", confirm(f"记录结果：{label}" + (f"（{data['note']}）" if data["note"] else "")
                                               + "。确认吗？记录后会通知居民，结果不能再改。"))
    return await _record_progress(actor, data, now)


async def more_documents(answer: str, actor: Resident, data: dict[str, Any], now: datetime) -> Done:
    """Record 需补充材料 with the new documents (the resident photographs them)."""
    words = [] if answer.strip().lower() in SKIP_WORDS else \
        [w.strip() for w in answer.replace("，", "、").replace(",", "、").replace(" ", "、").split("、") if w.strip()]
    if len(words) > DOCS_MAX or any(len(w) > DOC_MAX for w in words):
        raise UserFacingError(f"最多{DOCS_MAX}项，每项{DOC_MAX}字以内，请重新写：")
    data["more"] = words
    return await _record_progress(actor, data, now)


async def progress_confirmed(answer: bool, actor: Resident, data: dict[str, Any], now: datetime) -> Done:
    """Record the result once confirmed."""
    if not answer:
        return Done("好的，没有记录。")
    return await _record_progress(actor, data, now)


async def _record_progress(actor: Resident, data: dict[str, Any], now: datetime) -> Done:
    async def recorded() -> str:
        errand = await core.set_progress(int(data["errand_id"]), actor.id, str(data["progress"]), now,
                                         note=str(data.get("note", "")), more_documents=data.get("more") or None)
        label = PROGRESS_LABELS.get(str(data["progress"]), "")
        then = ""
        if errand.state == ErrandState.RESULT:
            then = "红色代办员会把结果送上门。" if errand.proxy_id else "请把结果告诉居民，再在这件事里选“已告知结果”。"
        elif errand.state == ErrandState.COLLECTING:
            then = "居民补拍材料后会回到预审。"
        return f"已记录“{label}”，已告诉居民。{then}"
    return await _run(recorded())


async def deliver_confirmed(answer: bool, actor: Resident, data: dict[str, Any], now: datetime) -> Done:
    """The result reached the resident: they are asked to confirm and rate."""
    if not answer:
        return Done("好的，没有记录。")

    async def delivered() -> str:
        errand = await core.deliver(int(data["errand_id"]), actor.id, now)
        thanks = "辛苦了！居民确认后爱心积分会记给您。" if errand.proxy_id == actor.id else ""
        return f"已记录送达（编号{errand.id}），已请居民确认评价。{thanks}"
    return await _run(delivered())


async def need_proxy_confirmed(answer: bool, actor: Resident, data: dict[str, Any], now: datetime) -> Done:
    """Offer the errand to the red proxies."""
    if not answer:
        return Done("好的，没有标记。")

    async def marked() -> str:
        errand = await core.require_proxy(int(data["errand_id"]), actor.id, now)
        return f"已发给红色代办员接单（编号{errand.id}），有人接单后会告诉居民。"
    return await _run(marked())


async def assigned(answer: int, actor: Resident, data: dict[str, Any], now: datetime) -> Done:
    """Give the errand to this red proxy."""
    async def assign() -> str:
        errand = await core.assign_proxy(int(data["errand_id"]), answer, actor.id, now)
        return f"已指派{await _name(errand.proxy_id)}上门（编号{errand.id}），已告诉TA和居民。"
    return await _run(assign())


async def original_taken(answer: str, actor: Resident, data: dict[str, Any], now: datetime) -> Done:
    """Log an original taken from the home."""
    async def taken() -> str:
        entry = await core.take_original(int(data["errand_id"]), actor.id, answer, now)
        return f"已登记取走“{entry.document}”原件，已告诉居民。归还后请在“代办任务”里选“归还原件”。"
    return await _run(taken())


async def original_returned(answer: int, actor: Resident, now: datetime) -> Done:
    """Log an original given back."""
    async def returned() -> str:
        entry: CustodyEntry = await core.return_original(answer, actor.id, now)
        return f"已登记归还“{entry.document}”原件，已告诉居民。"
    return await _run(returned())


async def cancel_reason(answer: str, data: dict[str, Any]) -> Ask:
    """Ask before cancelling."""
    data["reason"] = answer
    return Ask("cancel", confirm(f"取消原因：{answer}\n确定取消这件代办吗？会告诉居民和代办员，不能恢复。"))


async def cancel_confirmed(answer: bool, actor: Resident, data: dict[str, Any], now: datetime) -> Done:
    """Cancel with the reason."""
    if not answer:
        return Done("好的，没有取消。")

    async def cancelled() -> str:
        errand = await core.cancel(int(data["errand_id"]), actor.id, now, reason=str(data["reason"]))
        return f"已取消编号{errand.id}，已告诉居民。"
    return await _run(cancelled())


SHARED: dict[str, StepFn] = {
    "review": review_answer, "reshoot_reason": reshoot_reason, "transfer": transfer_to,
    "transfer_confirm": transfer_confirmed, "progress": progress_picked, "progress_note": progress_noted,
    "more_documents": more_documents, "progress_confirm": progress_confirmed, "deliver": deliver_confirmed,
    "need_proxy": need_proxy_confirmed, "assign": assigned, "take_original": original_taken,
    "return_original": original_returned, "cancel_reason": cancel_reason, "cancel": cancel_confirmed,
}


def _share(flow: Flow, *names: str) -> None:
    for name in names:
        flow.step(name)(SHARED[name])


# ---------------------------------------------------------------------------- 代办队列: cloud stewards

queue_flow = Flow("errand_queue", "代办队列", keywords=("代办队列", "云管家"), menu_keys=("ERRAND_QUEUE",),
                  roles=STEWARDS)


@queue_flow.entry
async def list_queue(actor: Resident, now: datetime) -> Ask | Done:
    """The community's open errands nobody took and mine, oldest first, ⚠ when the first response is late."""
    rows = await core.steward_queue(actor.id, now)
    if not rows:
        return Done("目前没有待处理的代办。新的申请会推送给您。")
    items = []
    for row in rows[:QUEUE_LISTED]:
        errand = row.errand
        mark = "⚠" if row.overdue else ""
        name = await _name(errand.resident_id)
        items.append((errand.id, f"{mark}编号{errand.id} {errand.item_name}·{name}：{_clip(row.waiting, 12)}"))
    more = f"（先显示最早的{QUEUE_LISTED}件）" if len(rows) > QUEUE_LISTED else ""
    overdue = sum(1 for r in rows if r.overdue)
    late = f"，⚠{overdue}件超时未响应" if overdue else ""
    return Ask("pick", _fit(f"代办队列：{len(rows)}件{late}{more}，回复序号处理：", items))


@queue_flow.step("pick")
async def queue_pick(answer: int, actor: Resident, data: dict[str, Any], now: datetime) -> Ask | Done:
    """The errand and what the steward may do."""
    return await _card(answer, actor, data, now, kind="steward")


@queue_flow.step("action")
async def queue_action(answer: str, actor: Resident, data: dict[str, Any], engine: Engine,
                       now: datetime) -> Ask | Done | Goto:
    """接单, 查看材料, 预审, 转办, 记录进度, 需要/指派代办员, 已告知结果, 取消."""
    return await _act("steward", answer, actor, data, engine, now)


_share(queue_flow, "review", "reshoot_reason", "transfer", "transfer_confirm", "progress", "progress_note",
       "more_documents", "progress_confirm", "deliver", "need_proxy", "assign", "cancel_reason", "cancel")


# ---------------------------------------------------------------------------- 部门办件: department staff

dept_flow = Flow("errand_dept", "部门办件", keywords=("部门办件", "部门代办"), menu_keys=("ERRAND_DEPT",),
                 roles=(Role.DEPARTMENT,))


@dept_flow.entry
async def list_department(actor: Resident, now: datetime) -> Ask | Done:
    """The errands transferred to the department, oldest first."""
    rows = await core.department_queue(actor.id, now)
    if not rows:
        return Done("目前没有转到本部门的代办。有新的转办时会推送给您。")
    items = []
    for row in rows[:QUEUE_LISTED]:
        errand = row.errand
        mark = "⚠" if row.overdue else ""
        items.append((errand.id, f"{mark}编号{errand.id} {errand.item_name}·{await _name(errand.resident_id)}："
                                 f"{_state_text(errand)}"))
    more = f"（先显示最早的{QUEUE_LISTED}件）" if len(rows) > QUEUE_LISTED else ""
    return Ask("pick", _fit(f"部门办件：{len(rows)}件{more}，回复序号处理：", items))


@dept_flow.step("pick")
async def dept_pick(answer: int, actor: Resident, data: dict[str, Any], now: datetime) -> Ask | Done:
    """The errand and what department staff may do."""
    return await _card(answer, actor, data, now, kind="dept")


@dept_flow.step("action")
async def dept_action(answer: str, actor: Resident, data: dict[str, Any], engine: Engine,
                      now: datetime) -> Ask | Done | Goto:
    """查看材料, 记录进度, 已告知结果."""
    return await _act("dept", answer, actor, data, engine, now)


_share(dept_flow, "progress", "progress_note", "more_documents", "progress_confirm", "deliver")


# ---------------------------------------------------------------------------- 代办任务: red proxies

tasks_flow = Flow("errand_tasks", "代办任务", keywords=("代办任务", "红色代办员"), menu_keys=("ERRAND_TASKS",),
                  roles=(Role.RED_PROXY,))


@tasks_flow.entry
async def list_tasks(actor: Resident, now: datetime) -> Ask | Done:
    """The proxy's open errands and the offers open to them."""
    mine, offers = await core.proxy_tasks(actor.id, now)
    items: list[tuple[Any, str]] = []
    for errand in offers[:QUEUE_LISTED]:
        person = await _person(errand.resident_id)
        building = person.building.name if person is not None and person.building else ""
        items.append((errand.id, f"【待接单】{errand.item_name}·{mask_name(person.name if person else '')}·{building}"))
    for errand in mine[:QUEUE_LISTED]:
        items.append((errand.id, f"编号{errand.id} {errand.item_name}·{await _name(errand.resident_id)}："
                                 f"{_state_text(errand)}"))
    if not items:
        return Done("目前没有代办任务。有需要上门的代办时会推送给您。")
    return Ask("pick", _fit("代办任务（回复序号处理）：", items))


@tasks_flow.step("pick")
async def tasks_pick(answer: int, actor: Resident, data: dict[str, Any], now: datetime) -> Ask | Done:
    """An offer (masked name and building, 接单) or one of mine (the card)."""
    mine, offers = await core.proxy_tasks(actor.id, now)
    offer = next((e for e in offers if e.id == answer), None)
    if offer is None:
        if not any(e.id == answer for e in mine):
            return Done("这件代办已经不在您的任务里了。" + BACK["proxy"])
        return await _card(answer, actor, data, now, kind="proxy")
    data["errand_id"] = offer.id
    person = await _person(offer.resident_id)
    building = person.building.name if person is not None and person.building else ""
    label = core.SPECIAL_LABELS.get(offer.proxy_reason, "") if offer.proxy_reason else ""
    text = (f"{offer.item_name}·{mask_name(person.name if person else '')}·{building}"
            + (f"（{label}）" if label else "") + f"\n材料：{'、'.join(offer.documents)}\n接单后请尽快上门。")
    return Ask("offer", _fit(text, [(core.ACCEPT, "接单"), (core.DECLINE, "不接")]))


@tasks_flow.step("offer")
async def tasks_offer(answer: str, actor: Resident, data: dict[str, Any], now: datetime) -> Done:
    """接单 (the first to accept wins), or 不接."""
    if answer != core.ACCEPT:
        return await _decline(int(data["errand_id"]), actor, now)
    return await _accept(int(data["errand_id"]), actor, now)


@tasks_flow.step("action")
async def tasks_action(answer: str, actor: Resident, data: dict[str, Any], engine: Engine,
                       now: datetime) -> Ask | Done | Goto:
    """拍材料, 查看材料, 取走原件, 归还原件, 已送达."""
    return await _act("proxy", answer, actor, data, engine, now)


_share(tasks_flow, "take_original", "return_original", "deliver")


# ---------------------------------------------------------------------------- 代办数据: staff figures

figures_flow = Flow("errand_figures", "代办数据", keywords=("代办数据", "代办统计"), roles=FIGURE_VIEWERS)


@figures_flow.entry
async def show_figures(actor: Resident, now: datetime) -> Done:
    """This month's figures so far, in a few lines (the ledger and the spreadsheet are in the API)."""
    unit = await errand_figures.default_unit(actor.id)
    today = local_today(now)
    scope = {"community_id": unit.id} if unit.scope == Scope.COMMUNITY else {"sub_district_id": unit.id}
    figs = await errand_figures.figures(actor.id, start=today.replace(day=1), end=today, now=now, **scope)
    return _done(errand_figures.figures_text(figs), "\n服务台账和明细表格请在小程序下载。")


FLOWS: list[Flow] = [errand_flow, mine_flow, offer_flow, queue_flow, dept_flow, tasks_flow, figures_flow]
