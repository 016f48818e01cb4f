"""逢六说事 in chat: report (说事), me too, 我的事, the handlers' 我的待办, staff entry (代录说事), and
the answers to the questions a case asks (more information, feedback after a resolution)."""

from __future__ import annotations

from collections.abc import Awaitable
from datetime import datetime
from typing import Any

from bot import wechat_rules
from bot.engine import (
    REPLY_MAX_CHARS,
    SKIP_WORDS,
    Ask,
    Done,
    Flow,
    Goto,
    Inbound,
    Question,
    choice,
    confirm,
    free_text,
)
from models import cases, media
from models.cases import (
    CATEGORIES,
    CATEGORY_BY_CODE,
    DESCRIPTION_MAX,
    EVENT_LABELS,
    FEEDBACK_FLOW,
    FEEDBACK_STEP,
    INFO_FLOW,
    INFO_STEP,
    KLASS_LABELS,
    NOTE_MAX,
    PHOTOS_MAX,
    PUBLIC_NOTES,
    REASON_MAX,
    SOURCE_LABELS,
    STATUS_LABELS,
    SUMMARY_MAX,
    Access,
    Case,
    CaseEvent,
    CaseFeedback,
    EventKind,
    Fixed,
    Klass,
    Source,
    Status,
    handler_label,
    promise_text,
    public_line,
    when_zh,
)
from models.errors import UserFacingError
from models.outbox import enqueue
from models.places import Building
from models.privacy import audit
from models.proxies import record_action
from models.residents import Resident, WechatAccount, mask_mobile, normalize_mobile
from models.roles import Role, active_roles, staff_access

BUILDINGS_LISTED = 12  # more than this: the building is typed by name
MINE_LISTED = 6
QUEUE_LISTED = 6
SIMILAR_LISTED = 3
EVENTS_SHOWN = 3

HANDLERS = (Role.PROPERTY, Role.MEDIATOR, Role.GRID_WORKER, Role.COMMUNITY_STAFF, Role.SUBDISTRICT_STAFF)
ENTERERS = (Role.COMMUNITY_STAFF, Role.GRID_WORKER)

KLASS_HINTS = {Klass.PRIVATE: "私事（调解员上门）", Klass.SMALL: "小事（物业限时办）", Klass.BIG: "大事（议事会讨论）"}
RATINGS = [(5, "5分 非常满意"), (4, "4分 满意"), (3, "3分 一般"), (2, "2分 不满意"), (1, "1分 很不满意")]


# ---------------------------------------------------------------------------- helpers


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: max(limit - 1, 0)] + "…"


def _fits(question: Question, prefix: str = "") -> bool:
    return len(prefix) + len(question.render()) <= REPLY_MAX_CHARS


def _day(when: datetime) -> str:
    local = when.astimezone(cases.CONTEXT.tz)
    return f"{local.month}月{local.day}日"


def _category_question(text: str = "您要反映哪类问题？（查看已反映的事请回复“我的事”）") -> Question:
    return choice(text, [(c.code, c.label) for c in CATEGORIES])


async def _place_of(case: Case) -> str:
    building = await Building.get_or_none(id=case.building_id) if case.building_id else None  # type: ignore[attr-defined]
    if building is not None:
        return building.name
    return (case.location or {}).get("label") or "地图位置"


def _state_line(case: Case, now: datetime) -> str:
    """Where the case stands and what comes next, in a few words."""
    if case.status == Status.OPEN and case.klass == Klass.BIG and case.due_at is None:
        return "待议事会讨论"
    if case.status == Status.OPEN:
        line = f"待{handler_label(case)}受理"
    elif case.status == Status.IN_PROGRESS:
        line = f"{handler_label(case)}处理中"
    elif case.status == Status.RESOLVED:
        return "已办结，待评价"
    else:
        return "已关闭" + (f"（{case.rating}分）" if case.rating else "")
    if cases.is_overdue(case, now):
        return line + "，已超期"
    return line + (f"，{_day(case.due_at)}前答复" if case.due_at else "")


async def _session_day(case_id: int) -> str:
    day = await cases.agenda_day(case_id)
    return f"{day.month}月{day.day}日" if day else ""


async def _run(action: Awaitable[str]) -> Done:
    """A last step: what the model did, or its refusal as it put it."""
    try:
        return Done(await action)
    except UserFacingError as exc:
        return Done(exc.message)


# ---------------------------------------------------------------------------- 说事: a resident reports

report = Flow("report", "逢六说事", keywords=("说事", "逢六说事", "反映问题", "我要反映", "报事", "报修"),
              menu_keys=("REPORT",))


@report.entry
async def start_report(resident: Resident, actor: Resident, data: dict[str, Any], now: datetime) -> Ask:
    """Ask the category (saying for whom, when a family member acts for an elder)."""
    data["started"] = now.isoformat()
    prefix = f"（为{resident.name}反映）\n" if resident.id != actor.id else ""
    return Ask("category", _category_question(), prefix=prefix)


@report.step("category")
async def got_category(answer: str, data: dict[str, Any]) -> Ask:
    """Keep the category, ask what happened."""
    data["category"] = answer
    return Ask("description", free_text(f"请说说是什么问题（{DESCRIPTION_MAX}字以内，可以直接发语音）：",
                                        min_len=2, max_len=DESCRIPTION_MAX))


@report.step("description")
async def got_description(answer: str, data: dict[str, Any]) -> Ask:
    """Keep the description, offer photos."""
    data["description"] = answer
    data["photos"] = []
    return Ask("photo", Question(f"有照片的话请拍照发过来（最多{PHOTOS_MAX}张）。", "photo", optional=True))


async def _place_question(resident: Resident, data: dict[str, Any]) -> Question:
    """Where: the own building, another one, or a map location; further photos are still welcome."""
    count = len(data["photos"])
    head = ""
    if count:
        more = f"，还可以再发{PHOTOS_MAX - count}张" if count < PHOTOS_MAX else ""
        head = f"已收到{count}张照片{more}。\n"
    items: list[tuple[str, str]] = []
    own = await Building.get_or_none(id=resident.building_id) if resident.building_id else None  # type: ignore[attr-defined]
    if own is not None:
        items.append(("own", f"本楼 {own.name}"))
    items.append(("other", "其他楼栋"))
    also = ("photo", "location") if count < PHOTOS_MAX else ("location",)
    return choice(head + "问题在哪里？在路边、广场等处可以发送位置（点“+”选“位置”）。", items, also=also)


@report.step("photo")
async def got_photo(answer: dict[str, Any] | None, resident: Resident, data: dict[str, Any]) -> Ask:
    """Keep the photo (if any), ask the place at once: more photos may come with that answer."""
    if answer:
        data["photos"].append(answer)
    return Ask("place", await _place_question(resident, data))


async def _ask_building(community_id: int, state: str = "building", prefix: str = "") -> Ask:
    buildings = await Building.filter(community_id=community_id).order_by("id")
    if len(buildings) <= BUILDINGS_LISTED:
        return Ask(state, choice("问题在哪栋楼？", [(b.id, b.name) for b in buildings]), prefix=prefix)
    return Ask(f"{state}_name", free_text("问题在哪栋楼？请输入楼栋名称，例如：12号楼", max_len=20), prefix=prefix)


async def _building_named(community_ids: list[int], text: str) -> Building:
    name = "".join(text.split())
    for candidate in (name, f"{name}号楼", f"{name}栋"):
        building = await Building.filter(community_id__in=community_ids, name=candidate).first()
        if building is not None:
            return building
    raise UserFacingError("没有找到这栋楼，请输入楼栋名称，例如：12号楼")


@report.step("place")
async def got_place(answer: Any, resident: Resident, data: dict[str, Any], now: datetime) -> Ask | Done:
    """A further photo (ask again), a map location, the own building, or on to the building list."""
    if isinstance(answer, dict) and "photo" in answer:
        data["photos"].append(answer["photo"])
        return Ask("place", await _place_question(resident, data))
    if isinstance(answer, dict) and "location" in answer:
        data["location"] = answer["location"]
        data["building_id"] = None
        return await _review(resident, data, now)
    if answer == "own":
        data["building_id"] = resident.building_id  # type: ignore[attr-defined]
        return await _review(resident, data, now)
    return await _ask_building(resident.community_id)  # type: ignore[attr-defined]


@report.step("building")
async def got_building(answer: int, resident: Resident, data: dict[str, Any], now: datetime) -> Ask | Done:
    """Keep the building, look for the same problem nearby."""
    data["building_id"] = answer
    return await _review(resident, data, now)


@report.step("building_name")
async def got_building_name(answer: str, resident: Resident, data: dict[str, Any], now: datetime) -> Ask | Done:
    """Find the typed building in the resident's community."""
    data["building_id"] = (await _building_named([resident.community_id], answer)).id  # type: ignore[attr-defined]
    return await _review(resident, data, now)


async def _place_label(data: dict[str, Any]) -> str:
    if data.get("building_id"):
        building = await Building.get_or_none(id=data["building_id"])
        if building is not None:
            return building.name
    return (data.get("location") or {}).get("label") or "您发送的位置"


async def _review(resident: Resident, data: dict[str, Any], now: datetime) -> Ask:
    """Offer the same problem nearby to join (never a private case, never anyone's words), else
    ask before submitting."""
    label = CATEGORY_BY_CODE[data["category"]].label
    place = await _place_label(data)
    similar = await cases.similar_cases(
        community_id=resident.community_id, category=data["category"],  # type: ignore[attr-defined]
        building_id=data.get("building_id"), location=data.get("location"), now=now,
        exclude_resident=resident.id, limit=SIMILAR_LISTED)
    if similar:
        items: list[tuple[int, str]] = [(c.id, public_line(c)) for c in similar]
        items.append((0, "不是，提交新问题"))
        return Ask("similar", choice(f"{place}附近最近已有居民反映了{label}问题，是同一件事吗？"
                                     "选它就算您一份，进展会推送给您：", items))
    photos = f"\n照片{len(data['photos'])}张" if data["photos"] else ""
    head = f"请确认：{label}·{place}{photos}\n"
    tail = "\n提交吗？"
    room = REPLY_MAX_CHARS - len(confirm(head + tail).render()) - 1
    return Ask("confirm", confirm(head + _clip(data["description"], room) + tail))


async def _already(data: dict[str, Any], resident: Resident) -> Done | None:
    """The answer to a repeated confirmation: the case this conversation already created."""
    case_id = data.get("case_id")
    if case_id is None:
        # created, but the conversation never heard of it (the reply failed and WeChat retried)
        found = await Case.filter(reporter_id=resident.id, category=data["category"],
                                  description=data["description"],
                                  created_at__gte=datetime.fromisoformat(data["started"])).first()
        case_id = found.id if found else None
    if case_id is None:
        return None
    return Done(f"已提交，编号{case_id}，不用再发了。回复“我的事”可以查看进展。")


async def _submit(resident: Resident, actor: Resident, data: dict[str, Any], msg: Inbound, now: datetime) -> Done:
    already = await _already(data, resident)
    if already is not None:
        return already
    proxy = actor.id != resident.id
    case = await cases.report_case(
        reporter=resident, category=data["category"], description=data["description"], photos=data["photos"],
        building_id=data.get("building_id"), location=data.get("location"), source=Source.CHAT,
        entered_by_id=actor.id if proxy else None, now=now)
    data["case_id"] = case.id
    if proxy:
        await record_action(actor_id=actor.id, subject_id=resident.id, action="report_case", channel=msg.channel,
                            now=now, detail={"case_id": case.id})
    session = await _session_day(case.id) if case.klass == Klass.BIG else ""
    who = f"已为{resident.name}提交" if proxy else "已提交"
    if not proxy:
        follow = "进展会推送给您，回复“我的事”可以随时查看。"
    else:  # the proxy who reported hears what the elder hears and may answer for them (cases.proxy_of)
        follow = f"进展会推送给{resident.name}和您，办结后您也可以替{resident.name}评价。"
    return Done(f"{who}，编号{case.number}。{promise_text(case)}"
                + (f"（下次议事会：{session}）" if session else "") + "。" + follow)


@report.step("similar")
async def got_similar(answer: int, resident: Resident, actor: Resident, data: dict[str, Any], msg: Inbound,
                      now: datetime) -> Done:
    """Join the case picked ("me too"), or submit a new one."""
    if answer == 0:
        return await _submit(resident, actor, data, msg, now)
    if data.get("joined_id"):
        return Done(f"已加入编号{data['joined_id']}，不用再发了。")
    case = await cases.join_case(answer, resident, now)
    data["joined_id"] = case.id
    await case.fetch_related("building")
    return Done(f"已加入编号{case.number}（{public_line(case)}）。这件事的进展会推送给您；"
                "反映的人越多，处理越优先。回复“我的事”可以查看。")


@report.step("confirm")
async def got_confirm(answer: bool, resident: Resident, actor: Resident, data: dict[str, Any], msg: Inbound,
                      now: datetime) -> Done:
    """Create the case (once, however often the confirmation arrives)."""
    if not answer:
        return Done("好的，没有提交。需要时回复“说事”重新反映。")
    return await _submit(resident, actor, data, msg, now)


# ---------------------------------------------------------------------------- 我的事: a resident's cases

mine = Flow("my_cases", "我的事", keywords=("我的事", "我的反映", "我反映的事", "我的说事"))


@mine.entry
async def list_mine(resident: Resident, now: datetime) -> Ask | Done:
    """The cases the resident reported or joined, newest first, with where each stands."""
    found = await cases.cases_of(resident.id, limit=MINE_LISTED)
    if not found:
        return Done("您还没有反映过问题。回复“说事”可以反映。")
    items = [(c.id, f"编号{c.number} {c.category_label}：{_state_line(c, now)}") for c in found]
    return Ask("pick", choice("您反映和关注的事（回复序号看详情）：", items))


def _event_line(event: CaseEvent, *, notes: bool) -> str:
    label = EVENT_LABELS.get(event.kind, event.kind)
    if event.kind == EventKind.AGENDA:
        day = datetime.fromisoformat(event.data["session_day"]) if event.data.get("session_day") else None
        label = f"列入{day.month}月{day.day}日议事会" if day and event.data.get("added") else "移出议事会议程"
    who = event.actor_label if event.actor_label not in ("", "系统", "居民") and event.kind != EventKind.AGENDA \
        else ""
    note = f"：{_clip(event.note, 30)}" if event.note and (notes or event.kind in PUBLIC_NOTES) else ""
    return f"{_day(event.created_at)} {who}{label}{note}"


async def _feedback_due(case: Case, resident_id: int) -> bool:
    return case.status == Status.RESOLVED and not await CaseFeedback.filter(
        case_id=case.id, resident_id=resident_id, round=case.reopened).exists()


@mine.step("pick")
async def show_mine(answer: int, resident: Resident, data: dict[str, Any], now: datetime) -> Ask | Done:
    """The reporter sees everything; a joiner only what is public. Offer 当面说 and 评价 where they fit."""
    case, access = await cases.get_case(answer, resident.id)
    data["case_id"] = case.id
    follower = access == Access.FOLLOWER
    place = await _place_of(case)
    head = [f"编号{case.number} {case.category_label}·{place}·{_day(case.created_at)}反映",
            f"状态：{_state_line(case, now)}"]
    if not follower:
        head.append(f"描述：{_clip(case.description, 80)}" + (f"（照片{len(case.photos)}张）" if case.photos else ""))
    if case.summary:
        head.append(f"办理结果：{case.summary}")
    shown = [e for e in await cases.events_of(case, access)
             if e.kind not in (EventKind.REPORTED, EventKind.ASSIGNED)]
    lines = [_event_line(e, notes=not follower) for e in shown[-EVENTS_SHOWN:]]
    foot = "（您关注了这件事，这里只显示公开信息）" if follower else ""
    items: list[tuple[str, str]] = []
    if (access == Access.REPORTER and case.status in cases.LIVE and case.klass != Klass.PRIVATE
            and not case.in_person):
        day = cases.next_session_day(cases.local_today(now))
        items.append(("in_person", f"当面说：{day.month}月{day.day}日议事会上当面反映"))
    if await _feedback_due(case, resident.id):
        items.append(("rate", "评价办理结果"))
    for keep in range(len(lines), -1, -1):  # the oldest events give way to fit one reply
        text = "\n".join([*head, *lines[len(lines) - keep:], foot]).strip()
        if items and _fits(choice(text, items)):
            return Ask("detail", choice(text, items))
        if not items and len(text) + len(MINE_MORE) <= REPLY_MAX_CHARS:
            return Done(text + MINE_MORE)
    text = "\n".join([*head, foot]).strip()
    if not items:
        return Done(_clip(text, REPLY_MAX_CHARS - len(MINE_MORE)) + MINE_MORE)
    return Ask("detail", choice(_clip(text, REPLY_MAX_CHARS - len(choice("", items).render())), items))


MINE_MORE = "\n回复“我的事”查看其他事。"


@mine.step("detail")
async def mine_action(answer: str, resident: Resident, data: dict[str, Any], now: datetime) -> Done | Goto:
    """当面说: on the agenda of the next session; 评价: the feedback questions."""
    if answer == "rate":
        return Goto(FEEDBACK_FLOW, data={"case_id": data["case_id"]})
    try:
        item = await cases.ask_in_person(data["case_id"], resident.id, now)
    except UserFacingError as exc:
        return Done(exc.message)
    await item.fetch_related("session")
    day = item.session.day
    return Done(f"好的，编号{data['case_id']}已列入{day.month}月{day.day}日逢六议事会议程，"
                "请当天到红色议事亭当面说。")


# ---------------------------------------------------------------------------- answers to a case's questions

info = Flow(INFO_FLOW, "补充情况")


@info.step(INFO_STEP)
async def got_info(answer: str, resident: Resident | None, data: dict[str, Any], now: datetime) -> Done:
    """The reporter's answer to a handler's question (reached through the pushed prompt)."""
    if resident is None:
        return Done("请先绑定身份。回复“绑定”开始。")
    case = await cases.give_info(data["case_id"], resident.id, answer, now)
    return Done(f"谢谢！已把您的补充转给{handler_label(case)}（编号{case.number}）。")


feedback = Flow(FEEDBACK_FLOW, "评价")


@feedback.entry
async def ask_fixed(data: dict[str, Any]) -> Ask | Done:
    """From 我的事: the same question the resolution pushed."""
    case = await Case.get_or_none(id=data.get("case_id"))
    if case is None or case.status != Status.RESOLVED:
        return Done("这件事现在不需要评价。")
    return Ask(FEEDBACK_STEP, cases.feedback_question(case))


@feedback.step(FEEDBACK_STEP)
async def got_fixed(answer: str, data: dict[str, Any]) -> Ask:
    """Not fixed: ask what is still wrong; else ask a rating."""
    data["fixed"] = answer
    if answer == Fixed.NO:
        return Ask("still", free_text("请说说哪里还没有解决，我们会退回重新办理：", max_len=NOTE_MAX))
    return Ask("rating", choice("请给这次办理打个分：", RATINGS))


@feedback.step("still")
async def got_still(answer: str, resident: Resident | None, data: dict[str, Any], now: datetime) -> Done:
    """Reopen to the same handler with the resident's words."""
    if resident is None:
        return Done("请先绑定身份。回复“绑定”开始。")
    case = await cases.feedback(data["case_id"], resident.id, Fixed.NO, now, comment=answer)
    due = f"，{when_zh(case.due_at)}前给您答复" if case.due_at else ""
    return Done(f"已退回{handler_label(case)}重新办理{due}。谢谢您的反馈！")


@feedback.step("rating")
async def got_rating(answer: int, data: dict[str, Any]) -> Ask:
    """Keep the rating, offer a comment."""
    data["rating"] = answer
    return Ask("comment", free_text("还有什么想说的吗？没有请回复“跳过”。", max_len=NOTE_MAX))


@feedback.step("comment")
async def got_comment(answer: str, resident: Resident | None, data: dict[str, Any], now: datetime) -> Done:
    """Record the answer; the reporter's rating closes the case."""
    if resident is None:
        return Done("请先绑定身份。回复“绑定”开始。")
    comment = "" if answer.lower() in SKIP_WORDS else answer
    case = await cases.feedback(data["case_id"], resident.id, data["fixed"], now, rating=data["rating"],
                                comment=comment)
    closed = "这件事已关闭。" if case.status == Status.CLOSED else ""
    return Done(f"谢谢您的评价！{closed}")


# ---------------------------------------------------------------------------- 我的待办: the handlers' queue

queue = Flow("case_queue", "我的待办", keywords=("我的待办", "待办", "说事待办"), roles=HANDLERS)


@queue.entry
async def list_queue(actor: Resident, now: datetime) -> Ask | Done:
    """The live cases at the actor's levels: overdue first, then the most joined, then the oldest."""
    found = await cases.queue_of(actor.id, now)
    if not found:
        return Done("目前没有待办的说事。")
    items = []
    for case in found[:QUEUE_LISTED]:
        overdue = "【已超期】" if cases.is_overdue(case, now) else ""
        place = case.building.name if case.building else "地图位置"
        joins = f"·{case.joins + 1}人" if case.joins else ""
        items.append((case.id, f"{overdue}编号{case.number} {case.category_label}·{place}{joins}"))
    more = f"（先显示{QUEUE_LISTED}件）" if len(found) > QUEUE_LISTED else ""
    return Ask("pick", choice(f"您有{len(found)}件待办{more}，回复序号处理：", items))


def _actions(case: Case) -> list[tuple[str, str]]:
    items = []
    if case.status == Status.OPEN:
        items.append(("accept", "受理"))
    if case.reporter_id is not None:  # type: ignore[attr-defined]
        items.append(("ask", "问居民"))
    items += [("progress", "记录进展"), ("resolve", "办结"), ("pass_up", "上报"), ("reclassify", "改分类")]
    if case.photos:
        items.append(("photos", f"看照片（{len(case.photos)}张）"))
    return items


async def _case_card(actor: Resident, case_id: int, data: dict[str, Any], now: datetime) -> Ask:
    """The case as its handler needs it, and what they may do; a long description continues on request."""
    case, access = await cases.get_case(case_id, actor.id)
    if access != Access.HANDLER and not await cases.may_handle(actor.id, case):
        raise UserFacingError("这件事不由您处理。")
    data["case_id"] = case.id
    place = await _place_of(case)
    joins = f"，{case.joins}人附议" if case.joins else ""
    if case.due_at is None:
        due = "期限：等议事会讨论" if case.klass == Klass.BIG else "期限：无"
    else:
        due = f"期限：{when_zh(case.due_at)}" + ("（已超期）" if cases.is_overdue(case, now) else "")
    contact = f"\n来电：{case.contact}" if case.contact else ""
    head = (f"编号{case.number} {KLASS_LABELS[case.klass]}·{case.category_label}"
            f"（{SOURCE_LABELS.get(case.source, case.source)}）\n{place}·{_day(case.created_at)}反映{joins}\n"
            f"{due}；{STATUS_LABELS[case.status]}{contact}\n描述：")
    items = _actions(case)
    question = choice(head + case.description, items)
    if _fits(question):
        return Ask("action", question)
    items.append(("more", "看完整描述"))
    room = REPLY_MAX_CHARS - len(choice(head, items).render()) - 1
    data["shown"] = room
    return Ask("action", choice(head + case.description[:room] + "…", items))


@queue.step("pick")
async def queue_pick(answer: int, actor: Resident, data: dict[str, Any], now: datetime) -> Ask:
    """Show the case and the actions."""
    return await _case_card(actor, answer, data, now)


@queue.step("action")
async def queue_action(answer: str, actor: Resident, data: dict[str, Any], msg: Inbound, now: datetime) -> Ask | Done:
    """Carry out 受理 at once; ask what the other actions need."""
    case_id = data["case_id"]
    if answer == "accept":
        async def accept() -> str:
            case = await cases.accept(case_id, actor.id, now)
            due = f"请于{when_zh(case.due_at)}前办结。" if case.due_at else ""
            return f"已受理编号{case.number}，已告诉居民。{due}"
        return await _run(accept())
    if answer == "ask":
        return Ask("ask", free_text(f"要问居民什么？会推送给反映人（{NOTE_MAX}字以内）：", max_len=NOTE_MAX))
    if answer == "progress":
        return Ask("note", free_text(f"请写下进展，会推送给反映人（{NOTE_MAX}字以内）：", max_len=NOTE_MAX))
    if answer == "resolve":
        return Ask("summary", free_text(f"请用一句话写办理结果（{SUMMARY_MAX}字以内）。这句话会公开给反映和关注的居民，"
                                        "请不要写姓名、电话、门牌号等个人信息：", max_len=SUMMARY_MAX))
    if answer == "pass_up":
        return Ask("reason", free_text(f"请写上报原因（{REASON_MAX}字以内），上一级会看到：", max_len=REASON_MAX))
    if answer == "reclassify":
        case = await Case.get(id=case_id)
        items = [(k, hint) for k, hint in KLASS_HINTS.items() if k != case.klass]
        return Ask("klass", choice(f"现在是{KLASS_LABELS[case.klass]}，改为：", items))
    case = await Case.get(id=case_id)
    if answer == "photos":
        return Ask("action", choice(await _send_photos(case, msg.openid, now) + "接下来：",
                                    [i for i in _actions(case) if i[0] != "photos"]))
    rest = case.description[data.get("shown", 0):]
    items = _actions(case)
    question = choice(f"（续）{rest}", items)
    if not _fits(question):
        question = choice("（续）" + _clip(rest, REPLY_MAX_CHARS - len(choice("（续）", items).render())), items)
    return Ask("action", question)


async def _send_photos(case: Case, openid: str, now: datetime) -> str:
    """Send the case's photos as image messages: the stored copy (uploaded again by the outbox when
    WeChat has forgotten the original), or the original while WeChat has it and it is not stored yet."""
    sent, lost, saving = 0, 0, 0
    for i, photo in enumerate(case.photos):
        usable = "stored" in photo or (
            photo.get("media_id") and "lost" not in photo and now - case.created_at < wechat_rules.MEDIA_ID_TTL)
        if not usable:
            if "lost" in photo or photo.get("media_id"):  # given up on, or WeChat's copy is gone
                lost += 1
            else:  # a mini-program link not fetched yet
                saving += 1
            continue
        await enqueue(openid=openid, kind="image", payload=media.image_payload(photo, case.created_at),
                      idempotency_key=f"case:{case.id}:photo:{i}:{openid}:{now.isoformat()}", now=now)
        sent += 1
    parts = [f"照片正在发给您（{sent}张）"] if sent else []
    if lost:
        parts.append(f"{lost}张照片已过期，没能保存")
    if saving:
        parts.append(f"{saving}张照片还在保存，请稍后再看")
    return "；".join(parts) + "。"


@queue.step("ask")
async def queue_ask(answer: str, actor: Resident, data: dict[str, Any], now: datetime) -> Done:
    """Push the question to the reporter; their answer comes back to the level."""
    async def ask() -> str:
        await cases.ask_info(data["case_id"], actor.id, answer, now)
        return "已发给反映人，居民回复后会推送给您。"
    return await _run(ask())


@queue.step("note")
async def queue_note(answer: str, data: dict[str, Any]) -> Ask:
    """Keep the note, offer a photo."""
    data["note"] = answer
    return Ask("note_photo", Question("可以发一张现场照片。", "photo", optional=True))


@queue.step("note_photo")
async def queue_note_photo(answer: dict[str, Any] | None, actor: Resident, data: dict[str, Any],
                           now: datetime) -> Done:
    """Record the progress (taking the case if nobody had)."""
    async def progress() -> str:
        await cases.progress(data["case_id"], actor.id, data["note"], now, photos=[answer] if answer else [])
        return "已记录进展，已告诉反映人。"
    return await _run(progress())


@queue.step("summary")
async def queue_summary(answer: str, data: dict[str, Any]) -> Ask:
    """Show the public summary before resolving."""
    data["summary"] = answer
    return Ask("resolve", confirm(f"办理结果（公开）：{answer}\n确认办结吗？办结后会请居民评价。"))


@queue.step("resolve")
async def queue_resolve(answer: bool, actor: Resident, data: dict[str, Any], now: datetime) -> Done:
    """Resolve; the residents are asked whether it is fixed."""
    if not answer:
        return Done("好的，没有办结。")

    async def resolve() -> str:
        case = await cases.resolve(data["case_id"], actor.id, data["summary"], now)
        return f"已办结编号{case.number}，已请居民评价。"
    return await _run(resolve())


@queue.step("reason")
async def queue_reason(answer: str, data: dict[str, Any]) -> Ask:
    """Confirm before passing the case up."""
    data["reason"] = answer
    return Ask("pass_up", confirm(f"上报原因：{answer}\n确认上报到上一级吗？"))


@queue.step("pass_up")
async def queue_pass_up(answer: bool, actor: Resident, data: dict[str, Any], now: datetime) -> Done:
    """Pass the case to the next level."""
    if not answer:
        return Done("好的，没有上报。")

    async def pass_up() -> str:
        case = await cases.pass_up(data["case_id"], actor.id, data["reason"], now)
        return f"已上报，编号{case.number}现由{handler_label(case)}处理。"
    return await _run(pass_up())


@queue.step("klass")
async def queue_klass(answer: str, data: dict[str, Any]) -> Ask:
    """Keep the new class, ask why."""
    data["klass"] = answer
    return Ask("klass_reason", free_text(f"请写改分类的原因（{REASON_MAX}字以内）：", max_len=REASON_MAX))


@queue.step("klass_reason")
async def queue_klass_reason(answer: str, actor: Resident, data: dict[str, Any], now: datetime) -> Done:
    """Reclassify: the case starts again at the first level of the new class."""
    async def reclassify() -> str:
        case = await cases.reclassify(data["case_id"], actor.id, data["klass"], answer, now)
        return f"已改为{KLASS_LABELS[case.klass]}，编号{case.number}现由{handler_label(case)}处理。"
    return await _run(reclassify())


# ---------------------------------------------------------------------------- 代录说事: staff enter a case

entry = Flow("case_entry", "代录说事", keywords=("代录说事", "代录"), roles=ENTERERS)
STAFF_CATEGORY = "反映的是哪类问题？"


async def _scope_buildings(actor_id: int) -> list[Building]:
    found: dict[int, Building] = {}
    for role in await active_roles(actor_id):
        if role.role == Role.COMMUNITY_STAFF and role.community_id:  # type: ignore[attr-defined]
            query = Building.filter(community_id=role.community_id)  # type: ignore[attr-defined]
        elif role.role == Role.GRID_WORKER and role.grid_id:  # type: ignore[attr-defined]
            query = Building.filter(grid_id=role.grid_id)  # type: ignore[attr-defined]
        else:
            continue
        for building in await query.order_by("id"):
            found.setdefault(building.id, building)
    return list(found.values())


@entry.entry
async def ask_source(actor: Resident) -> Ask:
    """In person or from the 12345 hotline?"""
    return Ask("source", choice("代录说事：这件事是怎么反映来的？",
                                [(Source.IN_PERSON, "现场反映"), (Source.HOTLINE, "12345热线")]))


@entry.step("source")
async def entry_source(answer: str, data: dict[str, Any]) -> Ask:
    """Keep the source, ask the mobile."""
    data["source"] = answer
    return Ask("mobile", free_text("请输入反映人的手机号：", max_len=20))


@entry.step("mobile")
async def entry_mobile(answer: str, actor: Resident, data: dict[str, Any], now: datetime) -> Ask:
    """A resident in the staff member's scope (the look-up is recorded), else a caller's contact and
    the building."""
    mobile = normalize_mobile(answer)
    person = await Resident.get_or_none(mobile=mobile, erased_at=None)
    if person is not None and await staff_access(actor.id, person) is not None:
        await audit(actor_id=actor.id, subject_id=person.id, action="view", purpose="代录说事", now=now,
                    detail={"flow": entry.name})
        data["reporter_id"] = person.id
        own = await Building.get_or_none(id=person.building_id) if person.building_id else None  # type: ignore[attr-defined]
        prefix = f"反映人：{person.name}（{own.name if own else '未登记楼栋'}）。\n"
        if own is not None:
            data["building_id"] = own.id
            return Ask("category", _category_question(STAFF_CATEGORY), prefix=prefix)
        return await _entry_building(actor, prefix)
    data["reporter_id"] = None
    data["contact"] = mobile
    return await _entry_building(actor, f"您负责的范围内没有登记这个号码，将记下联系电话{mask_mobile(mobile)}。\n")


async def _entry_building(actor: Resident, prefix: str) -> Ask:
    buildings = await _scope_buildings(actor.id)
    if len(buildings) <= BUILDINGS_LISTED:
        return Ask("building", choice("问题在哪栋楼？", [(b.id, b.name) for b in buildings]), prefix=prefix)
    return Ask("building_name", free_text("问题在哪栋楼？请输入楼栋名称，例如：12号楼", max_len=20), prefix=prefix)


@entry.step("building")
async def entry_building(answer: int, data: dict[str, Any]) -> Ask:
    """Keep the building, ask the category."""
    data["building_id"] = answer
    return Ask("category", _category_question(STAFF_CATEGORY))


@entry.step("building_name")
async def entry_building_name(answer: str, actor: Resident, data: dict[str, Any]) -> Ask:
    """Find the typed building in the staff member's scope."""
    allowed = {b.id for b in await _scope_buildings(actor.id)}
    communities = list({b.community_id for b in await Building.filter(id__in=allowed)})  # type: ignore[attr-defined]
    building = await _building_named(communities, answer)
    if building.id not in allowed:
        raise UserFacingError("这栋楼不在您负责的范围内，请重新输入：")
    data["building_id"] = building.id
    return Ask("category", _category_question(STAFF_CATEGORY))


@entry.step("category")
async def entry_category(answer: str, data: dict[str, Any]) -> Ask:
    """Keep the category, ask the description."""
    data["category"] = answer
    return Ask("description", free_text(f"请记录反映的问题（{DESCRIPTION_MAX}字以内）：", min_len=2,
                                        max_len=DESCRIPTION_MAX))


@entry.step("description")
async def entry_description(answer: str, data: dict[str, Any]) -> Ask:
    """Show what will be entered, ask before saving."""
    data["description"] = answer
    building = await Building.get(id=data["building_id"])
    who = "居民" if data.get("reporter_id") else f"来电{mask_mobile(data['contact'])}"
    head = (f"请确认：{SOURCE_LABELS[data['source']]}·{who}\n{CATEGORY_BY_CODE[data['category']].label}·"
            f"{building.name}\n")
    room = REPLY_MAX_CHARS - len(confirm(head + "\n录入吗？").render()) - 1
    return Ask("confirm", confirm(head + _clip(answer, room) + "\n录入吗？"))


@entry.step("confirm")
async def entry_confirm(answer: bool, actor: Resident, data: dict[str, Any], now: datetime) -> Done:
    """Create the case for the resident (or the caller), entered by the staff member."""
    if not answer:
        return Done("好的，没有录入。")
    if data.get("case_id"):
        return Done(f"已录入，编号{data['case_id']}，不用再发了。")
    reporter = await Resident.get_or_none(id=data["reporter_id"]) if data.get("reporter_id") else None
    building = await Building.get(id=data["building_id"])
    case = await cases.report_case(
        reporter=reporter, community_id=building.community_id, category=data["category"],  # type: ignore[attr-defined]
        description=data["description"], building_id=building.id, source=data["source"],
        entered_by_id=actor.id, contact="" if reporter else data.get("contact", ""), now=now)
    data["case_id"] = case.id
    if reporter is not None and await WechatAccount.filter(resident_id=reporter.id,
                                                           channel__in=("oa", "chat")).exists():
        tell = "进展会推送给居民。"
    else:
        tell = "请把编号告诉反映人，进展请电话告知。"
    return Done(f"已录入，编号{case.number}。{promise_text(case)}。{tell}")


FLOWS: list[Flow] = [report, mine, queue, entry, info, feedback]
