"""Staff work on personal information: 待核实信息, 删除申请 and 查居民.

- 待核实信息 (roles that verify): one pending declaration at a time, approved or rejected with a
  reason the resident is told.
- 删除申请 (roles that verify): open deletion requests in scope, carried out after a
  confirmation; the resident is told what was deleted and what was kept and why.
- 查居民 (roles that see residents): a resident in scope by name or mobile. The staff member
  states why; every opening writes an audit row; sensitive statuses and the health note only
  for roles that see sensitive data.

Whatever a flow shows about a resident is audited (models.privacy.audit) and every decision is
recorded as an action (models.proxies.record_action).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from bot.clock import format_zh
from bot.engine import Ask, Done, Engine, Flow, Inbound, choice, confirm, free_text
from handlers.profile import CHAT_CHANNELS, day_zh, fact_label, full_address, record_lines
from models.errors import UserFacingError
from models.facts import BIRTH_DATE, FactState, ResidentFact, decide, facts_to_verify
from models.privacy import (
    PURPOSE_MAX,
    DataRequest,
    RequestStatus,
    audit,
    deletion_requests_for,
    erase,
    erasure_plan,
)
from models.proxies import record_action
from models.residents import Resident, WechatAccount, mask_mobile, normalize_mobile
from models.roles import ROLES, may_verify, staff_access

VERIFIERS = tuple(code for code, spec in ROLES.items() if spec.verifies)
VIEWERS = tuple(code for code, spec in ROLES.items() if spec.sees_residents)
LIST_MAX = 9  # choices shown at once (keeps replies short)


async def _tell(engine: Engine, resident_id: int, text: str, key: str) -> None:
    """Push a text to every chat account of a person (nothing when they have none)."""
    for account in await WechatAccount.filter(resident_id=resident_id, channel__in=CHAT_CHANNELS):
        await engine.send(account.openid, text, key=f"{key}:{account.id}")


# ---------------------------------------------------------------------------- 待核实信息

facts_review = Flow("fact_review", "待核实信息", keywords=("待核实", "待核实信息"), menu_keys=("REVIEW_FACTS",),
                    roles=VERIFIERS)

DECISIONS = [("approve", "核实通过"), ("reject", "不通过（需填写原因）"), ("skip", "跳过，看下一条")]


async def _next_fact(staff: Resident, data: dict[str, Any], now: datetime, engine: Engine,
                     prefix: str = "") -> Ask | Done:
    """Show the oldest pending declaration in scope not skipped yet (audited), or say none is left."""
    skipped = set(data.get("skipped", []))
    facts = [f for f in await facts_to_verify(staff.id) if f.id not in skipped]
    if not facts:
        more = "（跳过的可稍后回复“待核实”再处理）" if skipped else ""
        return Done(prefix + "暂无待核实的信息。" + more)
    fact = facts[0]
    data["fact_id"] = fact.id
    resident = fact.resident
    sees = await staff_access(staff.id, resident, sensitive=True) is not None
    item = fact_label(fact) if sees or not fact.sensitive else "一项敏感身份状况（您的角色无权查看）"
    declarer = "本人"
    if fact.declared_by_id is not None and fact.declared_by_id != resident.id:  # type: ignore[attr-defined]
        by = await Resident.get_or_none(id=fact.declared_by_id)  # type: ignore[attr-defined]
        declarer = f"家属{by.name}代为申报" if by else "家属代为申报"
    await audit(actor_id=staff.id, subject_id=resident.id,
                action="view_sensitive" if fact.sensitive and sees else "view",
                purpose=f"待核实信息 fact:{fact.id}", now=now, detail={"fact_id": fact.id})
    mobile = mask_mobile(resident.mobile) if resident.mobile else "手机未填"
    text = (f"待核实信息（共{len(facts)}条）：\n居民：{resident.name}，{await full_address(resident) or '住址未填'}，"
            f"{mobile}\n申报：{item}\n申报人：{declarer}，{format_zh(fact.declared_at, engine.tz)}\n"
            "请查看证明材料或当面核实后选择：")
    return Ask("decide", choice(text, DECISIONS), prefix=prefix)


@facts_review.entry
async def first_fact(resident: Resident, data: dict[str, Any], now: datetime, engine: Engine) -> Ask | Done:
    """Show the oldest pending declaration in the staff member's scope."""
    return await _next_fact(resident, data, now, engine)


@facts_review.step("decide")
async def fact_decided(answer: str, resident: Resident, data: dict[str, Any], now: datetime, engine: Engine,
                       msg: Inbound) -> Ask | Done:
    """Approve at once, ask the reason of a rejection, or skip to the next one."""
    if answer == "skip":
        data.setdefault("skipped", []).append(data["fact_id"])
        return await _next_fact(resident, data, now, engine)
    if answer == "reject":
        return Ask("reason", free_text("请填写不通过的原因（居民会看到），如“请提供低保证”：", min_len=2, max_len=100))
    return await _decide(resident, data, now, engine, msg, approve=True, reason="")


@facts_review.step("reason")
async def fact_rejected(answer: str, resident: Resident, data: dict[str, Any], now: datetime, engine: Engine,
                        msg: Inbound) -> Ask | Done:
    """Reject with the reason given; the resident is told it."""
    return await _decide(resident, data, now, engine, msg, approve=False, reason=answer)


async def _decide(staff: Resident, data: dict[str, Any], now: datetime, engine: Engine, msg: Inbound, *,
                  approve: bool, reason: str) -> Ask | Done:
    fact = await ResidentFact.get_or_none(id=data["fact_id"]).prefetch_related("resident")
    if fact is None or not await may_verify(staff.id, fact.resident):
        return Done("没有找到这条待核实信息。")
    if fact.state != FactState.PENDING:
        return await _next_fact(staff, data, now, engine, prefix="这条信息已由其他工作人员处理。\n")
    fact = await decide(fact_id=fact.id, by_id=staff.id, approve=approve, now=now, reason=reason)
    resident = await Resident.get(id=fact.resident_id)  # type: ignore[attr-defined]
    await audit(actor_id=staff.id, subject_id=resident.id, action="verify", purpose=f"fact:{fact.id}", now=now,
                detail={"state": fact.state})
    await record_action(actor_id=staff.id, subject_id=resident.id, action=f"fact_{fact.state}",
                        channel=msg.channel, now=now, detail={"fact_id": fact.id, "code": fact.code})
    item = "出生日期" if fact.code == BIRTH_DATE else fact.label
    text = (f"您申报的“{item}”已由社区核实。" if approve
            else f"您申报的“{item}”未通过社区核实，原因：{fact.reason}。如有疑问请联系社区，"
                 "也可在“我的信息”中重新申报。")
    await _tell(engine, resident.id, text, f"fact:{fact.id}:decided")
    declarer = fact.declared_by_id  # type: ignore[attr-defined]
    if declarer is not None and declarer not in (resident.id, staff.id):
        # a family proxy declared it: told that there is a result, never which status it was
        await _tell(engine, declarer, f"您为{resident.name}申报的一项信息已有核实结果，"
                    "可在为其代办时查看“我的信息”。", f"fact:{fact.id}:decided:proxy")
    done = "已核实通过，已通知居民。" if approve else "已标记为不通过，已将原因告知居民。"
    return await _next_fact(staff, data, now, engine, prefix=done + "\n")


# ---------------------------------------------------------------------------- 删除申请

deletions = Flow("deletion_requests", "删除申请", keywords=("删除申请", "办理删除申请"), menu_keys=("DELETIONS",),
                 roles=VERIFIERS)


@deletions.entry
async def list_deletions(resident: Resident, engine: Engine) -> Ask | Done:
    """List the open deletion requests in the staff member's scope."""
    rows = await deletion_requests_for(resident.id)
    if not rows:
        return Done("暂无待办理的删除申请。")
    shown = rows[:LIST_MAX]
    items = []
    for row in shown:
        assert row.resident is not None  # deletion_requests_for lists requests of a resident only
        items.append((row.id, f"{row.resident.name}（{await full_address(row.resident) or '住址未填'}），"
                              f"{day_zh(row.requested_at, engine.tz)}申请"))
    more = f"（共{len(rows)}条，先显示{len(shown)}条）" if len(rows) > len(shown) else ""
    return Ask("pick", choice(f"待办理的删除申请{more}：", items))


async def _request_in_scope(staff: Resident, request_id: int) -> tuple[DataRequest, Resident]:
    """The request and its resident, when the staff member may carry it out."""
    row = await DataRequest.get_or_none(id=request_id).prefetch_related("resident")
    if row is None or row.resident is None or not await may_verify(staff.id, row.resident):
        raise UserFacingError("没有找到这条删除申请。")
    return row, row.resident


@deletions.step("pick")
async def deletion_picked(answer: int, resident: Resident, data: dict[str, Any], now: datetime,
                          engine: Engine) -> Ask | Done:
    """Say what will be deleted and what kept (and why), and ask for confirmation."""
    row, person = await _request_in_scope(resident, answer)
    if row.status != RequestStatus.OPEN:
        return Done("该申请已撤回或已办理。")
    data["request_id"] = row.id
    plan = await erasure_plan(person.id)
    await audit(actor_id=resident.id, subject_id=person.id, action="view", purpose=f"删除申请 data_request:{row.id}",
                now=now)
    by = ""
    if row.requested_by_id is not None and row.requested_by_id != person.id:  # type: ignore[attr-defined]
        proxy = await Resident.get_or_none(id=row.requested_by_id)  # type: ignore[attr-defined]
        by = f"（由家属{proxy.name}代为申请）" if proxy else "（由家属代为申请）"
    kept = "；".join(plan.kept) if plan.kept else "无"
    return Ask("confirm", confirm(
        f"{person.name}（{await full_address(person) or '住址未填'}）{day_zh(row.requested_at, engine.tz)}"
        f"申请删除个人信息{by}。\n将删除：{'、'.join(plan.removed)}\n将保留：{kept}\n"
        "删除后无法恢复。确认办理吗？"))


@deletions.step("confirm")
async def deletion_confirmed(answer: bool, resident: Resident, data: dict[str, Any], now: datetime,
                             engine: Engine, msg: Inbound) -> Done:
    """Carry the request out and tell the resident (and a proxy who asked) what was deleted and kept."""
    if not answer:
        return Done("好的，没有办理，该申请仍在等待办理。")
    row, person = await _request_in_scope(resident, data["request_id"])
    if row.status == RequestStatus.WITHDRAWN:
        return Done("该申请已被居民撤回，没有删除任何信息。")
    if row.status != RequestStatus.OPEN:
        return Done("该申请已由其他工作人员办理。")
    name = person.name  # erasing may replace it
    # erasing unlinks the resident's accounts: find them first, to tell them afterwards
    accounts = await WechatAccount.filter(resident_id=person.id, channel__in=CHAT_CHANNELS)
    requester = row.requested_by_id  # type: ignore[attr-defined]
    row = await erase(request_id=row.id, by_id=resident.id, now=now)
    await record_action(actor_id=resident.id, subject_id=person.id, action="erase", channel=msg.channel, now=now,
                        detail={"request_id": row.id})
    for account in accounts:
        await engine.send(account.openid, f"您的个人信息删除申请已办理。{row.outcome}。",
                          key=f"data_request:{row.id}:done:{account.id}")
    if requester is not None and requester != person.id:
        await _tell(engine, requester, f"您为{name}提交的个人信息删除申请已办理。{row.outcome}。",
                    f"data_request:{row.id}:done:proxy")
    return Done(f"已办理。{row.outcome}。已通知居民。")


# ---------------------------------------------------------------------------- 查居民

lookup = Flow("resident_lookup", "查居民", keywords=("查居民", "查询居民"), menu_keys=("LOOKUP",), roles=VIEWERS)


@lookup.entry
async def ask_purpose() -> Ask:
    """Every lookup is recorded with its purpose: ask it first."""
    return Ask("purpose", free_text("查阅居民信息会记入查阅记录。请先说明事由，如“上门走访”：",
                                    min_len=2, max_len=50))


@lookup.step("purpose")
async def got_purpose(answer: str, data: dict[str, Any]) -> Ask:
    """Keep the purpose, ask whom to look up."""
    data["purpose"] = answer
    return Ask("query", free_text("请输入居民姓名或手机号：", min_len=2, max_len=20))


@lookup.step("query")
async def got_query(answer: str, resident: Resident, data: dict[str, Any], now: datetime) -> Ask | Done:
    """Find residents in scope by mobile or name; one match is shown at once."""
    text = "".join(answer.split())
    query = Resident.filter(erased_at=None)
    if text.replace("-", "").replace("+", "").isdigit():
        query = query.filter(mobile=normalize_mobile(text))
    else:
        query = query.filter(name__contains=text)
    found = []
    # scope is checked per record: a bounded window of candidates
    for person in await query.order_by("id").limit(200):
        if await staff_access(resident.id, person) is not None:
            found.append(person)
            if len(found) > LIST_MAX:
                break
    if not found:
        raise UserFacingError("没有找到您负责范围内相符的居民，请换个姓名或手机号：")
    if len(found) == 1:
        return await _show(resident, found[0].id, data["purpose"], now)
    shown = found[:LIST_MAX]
    await audit(actor_id=resident.id, subject_id=None, action="list", purpose=_purpose(data["purpose"]), now=now,
                detail={"ids": [p.id for p in shown], "flow": lookup.name})
    items = [(p.id, f"{p.name} {mask_mobile(p.mobile) if p.mobile else ''} {await full_address(p)}".strip())
             for p in shown]
    more = "（只显示前几位，可输入更完整的姓名）" if len(found) > LIST_MAX else ""
    return Ask("pick", choice(f"找到以下居民{more}，请选择：", items))


@lookup.step("pick")
async def lookup_picked(answer: int, resident: Resident, data: dict[str, Any], now: datetime) -> Done:
    """Show the chosen record."""
    return await _show(resident, answer, data["purpose"], now)


def _purpose(stated: str) -> str:
    return f"查居民：{stated}"[:PURPOSE_MAX]


async def _show(staff: Resident, resident_id: int, stated: str, now: datetime) -> Done:
    """The record as the staff member's role may see it; the opening is audited."""
    person = await Resident.get_or_none(id=resident_id, erased_at=None)
    role = await staff_access(staff.id, person) if person is not None else None
    if person is None or role is None:
        return Done("没有找到这位居民。")
    sensitive = await staff_access(staff.id, person, sensitive=True) is not None
    await audit(actor_id=staff.id, subject_id=person.id, action="view_sensitive" if sensitive else "view",
                purpose=_purpose(stated), now=now, detail={"role": role.role, "flow": lookup.name})
    lines = await record_lines(person, sensitive=sensitive, health="show" if sensitive else "hidden")
    return Done("\n".join(lines) + "\n（本次查阅已记录）")
