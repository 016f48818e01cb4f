"""我的信息: what we hold about a resident, their declarations, and their deletion request.

A resident (or a family proxy acting for them) sees everything we keep: name, masked mobile,
address, date of birth and statuses with where each stands, mobility, whether a health note
exists, linked WeChat channels, family links, consent and an open deletion request. Declared
facts wait for community staff (models.facts); every write is recorded as an action naming
who acted for whom (models.proxies.record_action).
"""

from __future__ import annotations

from datetime import date, datetime
from zoneinfo import ZoneInfo

from bot.engine import Ask, Done, Engine, Flow, Inbound, choice, confirm, free_text
from models.facts import (
    BIRTH_DATE,
    STATUSES,
    FactState,
    ResidentFact,
    current_facts,
    declare,
    parse_birth_date,
)
from models.places import Building, Community
from models.privacy import (
    DataRequest,
    open_deletion_request,
    request_deletion,
    verifiers_of,
    withdraw_request,
)
from models.proxies import ProxyStatus, links_of, record_action
from models.residents import (
    MOBILITY_LABELS,
    Consent,
    Mobility,
    Resident,
    ResidentStatus,
    WechatAccount,
    mask_mobile,
)

router = Flow("profile", "我的信息", keywords=("我的信息", "我的", "个人信息", "删除我的信息"), menu_keys=("PROFILE",))

CHAT_CHANNELS = ["oa", "chat"]  # where a person can read a pushed message
CHANNEL_LABELS = {"oa": "公众号", "mp": "小程序", "chat": "终端"}
REASON_SHOWN = 12  # a rejection reason is cut to this many characters in the overview (sent in full)

DELETION_NOTICE = (
    "申请后，社区工作人员将删除{whose}姓名、手机号和门牌号，出生日期和身份状况，健康备注，"
    "亲情代理关系和微信绑定。依法须保存的记录（如信息查阅记录）和未办结事项所需的姓名、联系方式"
    "会保留，到期后删除。删除后需重新绑定才能使用社区服务；办理前可以撤回。确定申请删除吗？"
)


# ---------------------------------------------------------------------------- describing a record


def day_zh(when: datetime, tz: ZoneInfo) -> str:
    t = when.astimezone(tz)
    return f"{t.year}年{t.month}月{t.day}日"


async def full_address(resident: Resident) -> str:
    """'米家社区1号楼2单元301室', or '' when no building is recorded."""
    if resident.building_id is None:  # type: ignore[attr-defined]
        return ""
    building = await Building.get_or_none(id=resident.building_id)  # type: ignore[attr-defined]
    if building is None:
        return ""
    community = await Community.get_or_none(id=resident.community_id)  # type: ignore[attr-defined]
    return f"{community.name if community else ''}{building.name}{resident.unit}单元{resident.room}室"


def fact_state(fact: ResidentFact, *, full_reason: bool = False) -> str:
    if fact.state == FactState.VERIFIED:
        return "已核实"
    if fact.state == FactState.REJECTED:
        reason = fact.reason if full_reason or len(fact.reason) <= REASON_SHOWN else fact.reason[:REASON_SHOWN] + "…"
        return f"未通过（{reason}）" if reason else "未通过"
    return "待核实"


def fact_label(fact: ResidentFact) -> str:
    """'出生日期 1950-03-08' or the status's name."""
    return f"出生日期 {fact.value}" if fact.code == BIRTH_DATE else fact.label


async def record_lines(resident: Resident, *, sensitive: bool, health: str) -> list[str]:
    """The lines of a record shared by 我的信息 and 查居民.

    ``sensitive`` False leaves out sensitive statuses (saying that some are hidden); ``health`` is
    "exists" (say whether a note exists), "show" (the note itself) or "hidden".
    """
    mobile = mask_mobile(resident.mobile) if resident.mobile else "未填写"
    checked = "已由社区核实" if resident.status == ResidentStatus.VERIFIED else "待社区核实"
    lines = [f"姓名：{resident.name}（{checked}）", f"手机：{mobile}",
             f"住址：{await full_address(resident) or '未填写'}"]
    facts = await current_facts(resident.id)
    birth = next((f for f in facts if f.code == BIRTH_DATE), None)
    lines.append(f"出生日期：{birth.value}，{fact_state(birth)}" if birth else "出生日期：未填写")
    statuses = [f for f in facts if f.code != BIRTH_DATE]
    shown = [f"{f.label}：{fact_state(f)}" for f in statuses if sensitive or not f.sensitive]
    if not sensitive and any(f.sensitive for f in statuses):
        shown.append("另有敏感信息已隐藏")
    lines.append("身份状况：" + ("；".join(shown) if shown else "未申报"))
    lines.append(f"行动能力：{MOBILITY_LABELS.get(resident.mobility, '未填写')}")
    if health == "show":
        lines.append(f"健康备注：{resident.health_note or '无'}")
    elif health == "hidden":
        lines.append("健康备注：" + ("已隐藏（仅相关工作人员可见）" if resident.health_note else "无"))
    else:
        lines.append("健康备注：" + ("有（由社区登记，仅相关工作人员可见）" if resident.health_note else "无"))
    channels = await WechatAccount.filter(resident_id=resident.id).order_by("id").values_list("channel", flat=True)
    labels = list(dict.fromkeys(CHANNEL_LABELS.get(str(c), str(c)) for c in channels))
    lines.append("绑定的微信：" + ("、".join(labels) if labels else "无"))
    proxies, elders = [], []
    for link in reversed(await links_of(resident.id)):
        waiting = "，待确认" if link.status == ProxyStatus.PENDING else ""
        if link.elder_id == resident.id:  # type: ignore[attr-defined]
            proxies.append(f"{link.proxy.name}（{link.relation or '家人'}{waiting}）")
        else:
            elders.append(link.elder.name + ("（待确认）" if waiting else ""))
    if proxies:
        lines.append("代办人：" + "、".join(proxies))
    if elders:
        lines.append("为其代办：" + "、".join(elders))
    return lines


# ---------------------------------------------------------------------------- the flow


def _whose(resident: Resident, actor: Resident) -> str:
    return "您" if resident.id == actor.id else resident.name


@router.entry
async def show_profile(resident: Resident, actor: Resident, engine: Engine) -> Ask:
    """Show everything held about the resident, then offer what they can change."""
    lines = []
    if resident.id != actor.id:
        lines.append(f"（您正在为{resident.name}代办，以下是其信息）")
    lines += await record_lines(resident, sensitive=True, health="exists")
    consent = await Consent.filter(resident_id=resident.id).order_by("-accepted_at").first()
    lines.append(f"隐私同意：{consent.text_version}版，{day_zh(consent.accepted_at, engine.tz)}"
                 if consent else "隐私同意：无记录")
    request = await open_deletion_request(resident.id)
    if request is not None:
        lines.append(f"删除申请：{day_zh(request.requested_at, engine.tz)}已提交，等待社区办理")
    items = [("birth", "申报出生日期"), ("status", "申报身份状况"), ("mobility", "更新行动能力")]
    items.append(("withdraw", "撤回删除申请") if request else ("delete", "申请删除我的信息"))
    hint = "信息有误请联系网格员" + ("；回复“解绑”可解除绑定" if resident.id == actor.id else "")
    return Ask("pick", choice("\n".join(lines) + f"\n{hint}。您可以：", items))


@router.step("pick")
async def picked(answer: str, resident: Resident, actor: Resident, msg: Inbound, now: datetime) -> Ask | Done:
    """Ask what the chosen change needs (withdrawing needs nothing more)."""
    if answer == "birth":
        return Ask("birth", free_text("请输入出生日期，例如 1950-03-08：", max_len=20))
    if answer == "status":
        return Ask("status", choice("请选择要申报的身份状况（需社区核实）：", list(STATUSES.items())))
    if answer == "mobility":
        options = [(Mobility.WALKS_IN, MOBILITY_LABELS[Mobility.WALKS_IN]),
                   (Mobility.NEEDS_DELIVERY, MOBILITY_LABELS[Mobility.NEEDS_DELIVERY])]
        return Ask("mobility", choice("请选择行动能力：", options))
    if answer == "delete":
        if await open_deletion_request(resident.id) is not None:
            return Done("删除申请已经提交，正在等待社区办理。")
        return Ask("delete", confirm(DELETION_NOTICE.format(whose="" if resident.id == actor.id
                                                            else f"{resident.name}的")))
    request = await open_deletion_request(resident.id)
    if request is None:
        return Done("没有等待办理的删除申请。")
    await withdraw_request(request_id=request.id, resident_id=resident.id, now=now)
    await record_action(actor_id=actor.id, subject_id=resident.id, action="withdraw_deletion", channel=msg.channel,
                        now=now, detail={"request_id": request.id})
    return Done("已撤回删除申请，信息保持不变。")


async def _declare(code: str, value: str, resident: Resident, actor: Resident, msg: Inbound,
                   now: datetime) -> ResidentFact | None:
    """Declare a fact; the new row, or None when the same declaration already stands."""
    known = set(await ResidentFact.filter(resident_id=resident.id, code=code).values_list("id", flat=True))
    fact = await declare(resident_id=resident.id, code=code, value=value, now=now, by_id=actor.id,
                         source="self" if actor.id == resident.id else "proxy")
    if fact.id in known:
        return None
    await record_action(actor_id=actor.id, subject_id=resident.id, action="declare_fact", channel=msg.channel,
                        now=now, detail={"fact_id": fact.id, "code": code})
    return fact


PENDING_NOTE = "社区工作人员核实后才会用于食堂价格等服务，可能需要提供证明材料；结果会通知{whose}。"


@router.step("birth")
async def got_birth(answer: str, resident: Resident, actor: Resident, msg: Inbound, now: datetime,
                    engine: Engine) -> Done:
    """Declare the date of birth; it counts once staff verify it."""
    today: date = now.astimezone(engine.tz).date()
    value = parse_birth_date(answer, today).isoformat()
    fact = await _declare(BIRTH_DATE, value, resident, actor, msg, now)
    if fact is None:
        verified = await ResidentFact.filter(resident_id=resident.id, code=BIRTH_DATE, value=value,
                                             state=FactState.VERIFIED).exists()
        if verified:
            return Done(f"出生日期 {value} 已经核实，无需重复申报。")
    return Done(f"已申报出生日期 {value}，待核实。" + PENDING_NOTE.format(whose=_whose(resident, actor)))


@router.step("status")
async def got_status(answer: str, resident: Resident, actor: Resident, msg: Inbound, now: datetime) -> Done:
    """Declare a status; it counts nowhere until staff verify it."""
    label = STATUSES[answer]
    fact = await _declare(answer, "", resident, actor, msg, now)
    if fact is None and await ResidentFact.filter(resident_id=resident.id, code=answer,
                                                  state=FactState.VERIFIED).exists():
        return Done(f"“{label}”已经核实，无需重复申报。")
    return Done(f"已申报“{label}”，待核实。" + PENDING_NOTE.format(whose=_whose(resident, actor)))


@router.step("mobility")
async def got_mobility(answer: str, resident: Resident, actor: Resident, msg: Inbound, now: datetime) -> Done:
    """Record whether the resident comes to the canteen or needs meals delivered."""
    if resident.mobility != answer:
        resident.mobility = answer
        await resident.save(update_fields=["mobility"])
        await record_action(actor_id=actor.id, subject_id=resident.id, action="update_mobility",
                            channel=msg.channel, now=now, detail={"mobility": answer})
    return Done(f"已更新行动能力：{MOBILITY_LABELS[answer]}。")


@router.step("delete")
async def delete_confirmed(answer: bool, resident: Resident, actor: Resident, msg: Inbound, now: datetime,
                           engine: Engine) -> Done:
    """Open the deletion request and tell the community staff who carry it out."""
    if not answer:
        return Done("好的，没有提交删除申请，信息保持不变。")
    request, created = await request_deletion(resident_id=resident.id, by_id=actor.id, now=now)
    if created:
        await record_action(actor_id=actor.id, subject_id=resident.id, action="request_deletion",
                            channel=msg.channel, now=now, detail={"request_id": request.id})
        await _tell_staff(engine, resident, request)
    return Done("已提交删除申请。社区工作人员办理后会告诉" + _whose(resident, actor)
                + "删除了哪些信息、保留了哪些及原因。办理前可在“我的信息”中撤回。")


async def _tell_staff(engine: Engine, resident: Resident, request: DataRequest) -> None:
    address = await full_address(resident)
    text = (f"新的个人信息删除申请：{resident.name}（{address or '住址未填'}）。"
            "请回复“删除申请”查看并办理。")
    staff_ids = await verifiers_of(resident)
    for account in await WechatAccount.filter(resident_id__in=staff_ids, channel__in=CHAT_CHANNELS):
        await engine.send(account.openid, text, key=f"data_request:{request.id}:new:{account.id}")
