"""亲情代理: a family member links to an elder, then acts for them in every flow.

The proxy types the elder's name and mobile (both must match the elder's record), the elder
confirms in chat, or staff who meet both confirm in person. While acting, every flow serves the
elder (``resident``) and records the proxy as ``actor``. Either side may end the link at any time.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from bot.engine import Ask, Done, Engine, Flow, Goto, Inbound, Question, choice, confirm, free_text
from bot.store import key
from models.conversation import withdraw_prompts
from models.errors import UserFacingError
from models.privacy import audit
from models.proxies import (
    ProxyLink,
    ProxyStatus,
    actions_about,
    acts_for,
    decide_link,
    end_link,
    in_person_confirmers,
    links_of,
    may_confirm_in_person,
    pending_links_in_scope,
    record_action,
    request_link,
)
from models.residents import NAME_MAX, Resident, WechatAccount, clean_name, mask_mobile, normalize_mobile
from models.roles import Role

router = Flow("family", "亲情代理", keywords=("亲情代理", "家人代办", "为家人办理"), menu_keys=("FAMILY",),
              as_self=True)

RELATIONS = ["子女", "配偶", "孙子女", "兄弟姐妹", "其他亲属"]
# Each person may look up this many name + mobile pairs a day: enough for typing mistakes, too
# few to find out whose mobile a number is.
LOOKUPS_PER_DAY = 10
NO_MATCH = ("没有找到姓名和手机号都相符的居民档案。请核对家人在社区登记的姓名和手机号；"
            "如家人还没有登记，请先联系网格员。")
CHAT_CHANNELS = ["oa", "chat"]  # where a person can read a pushed message and answer a prompt

# What a recorded action means to the person it was done for (models.proxies.actions_about).
ACTION_LABELS = {
    "request_proxy_link": "申请为您代办",
    "proxy_link_active": "确认了亲情代理",
    "proxy_link_rejected": "没有通过亲情代理申请",
    "end_proxy_link": "解除了亲情代理",
    "proxy_act_start": "开始为您代办",
    "proxy_act_end": "结束代办",
}


def _subject(link_id: int) -> str:
    """The prompts about one link share this, so a decision withdraws all of them."""
    return f"proxy_link:{link_id}"


async def _tell(engine: Engine, resident_id: int, text: str, key_: str) -> None:
    """Push a text to every chat account of a person (nothing when they have none)."""
    for account in await WechatAccount.filter(resident_id=resident_id, channel__in=CHAT_CHANNELS):
        await engine.send(account.openid, text, key=f"{key_}:{account.id}")


def _elder_question(link: ProxyLink, proxy: Resident) -> Question:
    mobile = f"手机{mask_mobile(proxy.mobile)}，" if proxy.mobile else ""
    return confirm(
        f"{proxy.name}（{mobile}您的{link.relation or '家人'}）申请做您的亲情代理：同意后，"
        "对方可以替您在这里订餐、办事，您随时可以解除。您同意吗？（回复“否”拒绝）"
    )


async def _staff_question(link: ProxyLink) -> Question:
    proxy = await Resident.get(id=link.proxy_id)  # type: ignore[attr-defined]
    elder = await Resident.get(id=link.elder_id).prefetch_related("building")  # type: ignore[attr-defined]
    mobile = f"（{mask_mobile(proxy.mobile)}）" if proxy.mobile else ""
    return confirm(
        f"亲情代理申请：{proxy.name}{mobile}申请为{elder.name}（{elder.address() or '住址未填'}）代办，"
        f"关系：{link.relation or '家人'}。请当面核实双方身份和老人本人的意愿后再确认。"
        "确认吗？（回复“否”拒绝）"
    )


async def ask_elder(engine: Engine, link: ProxyLink) -> bool:
    """Ask for a new link to be confirmed: the elder in chat, or, when the elder has no WeChat,
    the staff who can meet both in person. True when the elder was asked."""
    proxy = await Resident.get(id=link.proxy_id)  # type: ignore[attr-defined]
    accounts = await WechatAccount.filter(resident_id=link.elder_id, channel__in=CHAT_CHANNELS)  # type: ignore[attr-defined]
    for account in accounts:
        await engine.ask_later(openid=account.openid, flow=router.name, step="elder_decide",
                               question=_elder_question(link, proxy), data={"link_id": link.id},
                               subject=_subject(link.id))
    if accounts:
        return True
    elder = await Resident.get(id=link.elder_id)  # type: ignore[attr-defined]
    staff = await in_person_confirmers(elder)
    question = await _staff_question(link)
    for account in await WechatAccount.filter(resident_id__in=[s.id for s in staff], channel__in=CHAT_CHANNELS):
        await engine.ask_later(openid=account.openid, flow=review.name, step="decide", question=question,
                               data={"link_id": link.id}, subject=_subject(link.id))
    return False


# ---------------------------------------------------------------------------- the family flow


def _status(link: ProxyLink, me: Resident) -> str:
    if link.status == ProxyStatus.ACTIVE:
        return "已生效"
    return "待您确认" if link.elder_id == me.id else "待确认"  # type: ignore[attr-defined]


@router.entry
async def show_links(actor: Resident, engine: Engine, msg: Inbound) -> Ask:
    """Show the person's links on both sides and what they can do."""
    links = await links_of(actor.id)
    as_proxy = [link for link in links if link.proxy_id == actor.id][:5]  # type: ignore[attr-defined]
    as_elder = [link for link in links if link.elder_id == actor.id][:5]  # type: ignore[attr-defined]
    acting = await engine.acting_for(msg.openid, actor.id)
    lines = ["亲情代理：家人关联后，可以替老人在这里订餐、办事。"]
    if acting is not None:
        lines.append(f"您正在为{acting.name}代办。")
    if as_proxy:
        lines.append("您代办的家人：" + "、".join(
            f"{link.elder.name}（{_status(link, actor)}）" for link in as_proxy))
    if as_elder:
        lines.append("为您代办的家人：" + "、".join(
            f"{link.proxy.name}（{_status(link, actor)}）" for link in as_elder))
    if not links:
        lines.append("您还没有关联的家人。")
    items: list[tuple[str, str]] = []
    if any(link.status == ProxyStatus.ACTIVE for link in as_proxy):
        items.append(("act", "为家人办理"))
    if acting is not None:
        items.append(("self", "回到本人"))
    items.append(("add", "添加家人"))
    if any(link.status == ProxyStatus.PENDING for link in as_elder):
        items.append(("review", "确认家人的申请"))
    if links:
        items.append(("end", "解除关联"))
    if as_elder or await actions_about(actor.id, by_others=True, limit=1):
        items.append(("log", "查看代办记录"))
    return Ask("pick", choice("请选择：", items), prefix="\n".join(lines) + "\n")


@router.step("pick")
async def picked(
    answer: str, data: dict[str, Any], actor: Resident, engine: Engine, msg: Inbound, now: datetime
) -> Ask | Done | Goto:
    """Go where the chosen item leads."""
    if answer == "act":
        links = await ProxyLink.filter(proxy_id=actor.id, status=ProxyStatus.ACTIVE).order_by("id").prefetch_related(
            "elder")
        if not links:
            return Done("您还没有可以代办的家人：家人确认后才能代办。")
        if len(links) == 1:
            return await _start_acting(actor, links[0].elder_id, engine, msg, now)  # type: ignore[attr-defined]
        return Ask("act_pick", choice("为哪位家人办理？", [(link.elder_id, link.elder.name) for link in links]))  # type: ignore[attr-defined]
    if answer == "self":
        return Goto(back_to_self.name)
    if answer == "add":
        return Ask("add_name", free_text("请输入家人的姓名（与社区登记的一致）：", min_len=2, max_len=NAME_MAX))
    if answer == "review":
        pending = [link for link in await links_of(actor.id)
                   if link.elder_id == actor.id and link.status == ProxyStatus.PENDING]  # type: ignore[attr-defined]
        if not pending:
            return Done("没有等待您确认的申请。")
        if len(pending) == 1:
            return await _ask_elder_now(pending[0], data)
        return Ask("review_pick", choice("确认哪一条申请？", [(link.id, link.proxy.name) for link in pending]))
    if answer == "end":
        links = (await links_of(actor.id))[:9]  # keeps the reply short
        if not links:
            return Done("您没有可以解除的关联。")
        if len(links) == 1:
            data["link_id"] = links[0].id
            return _ask_end(links[0], actor)
        return Ask("end_pick", choice("解除哪一个关联？", [(link.id, _link_label(link, actor)) for link in links]))
    return await _show_log(actor, engine)


# -- acting


@router.step("act_pick")
async def act_picked(answer: int, actor: Resident, engine: Engine, msg: Inbound, now: datetime) -> Done:
    """Start acting for the chosen elder."""
    return await _start_acting(actor, answer, engine, msg, now)


async def _start_acting(actor: Resident, elder_id: int, engine: Engine, msg: Inbound, now: datetime) -> Done:
    if not await acts_for(actor.id, elder_id):  # the link may have ended since the list was shown
        return Done("您现在不能为这位家人代办：关联还没有生效或已经解除。")
    elder = await Resident.get(id=elder_id)
    await engine.act_for(msg.openid, elder_id)
    await record_action(actor_id=actor.id, subject_id=elder_id, action="proxy_act_start", channel=msg.channel,
                        now=now)
    minutes = engine.config.conversation.idle_minutes
    return Done(
        f"好的，从现在起您办理的每项服务都是为{elder.name}办理，记录上会写明由您代办。\n"
        f"回复“菜单”开始办理；回复“回到本人”结束代办。超过{minutes}分钟没有操作会自动回到本人。"
    )


# -- adding a family member


@router.step("add_name")
async def add_name(answer: str, data: dict[str, Any]) -> Ask:
    """Keep the elder's name, ask the mobile."""
    data["name"] = clean_name(answer)
    return Ask("add_mobile", free_text("请输入家人的手机号（与社区登记的一致）：", max_len=20))


@router.step("add_mobile")
async def add_mobile(answer: str, data: dict[str, Any], actor: Resident, engine: Engine) -> Ask | Done:
    """Find the elder by name and mobile together; say only that they did not match, if so."""
    mobile = normalize_mobile(answer)
    counter = key("family", "lookups", str(actor.id))
    lookups = await engine.store.incr(counter)
    if lookups == 1:
        await engine.store.expire(counter, 24 * 3600)
    if lookups > LOOKUPS_PER_DAY:
        return Done("今天核对的次数较多，请明天再试，或请网格员帮您办理。")
    elder = await Resident.get_or_none(name=data["name"], mobile=mobile, erased_at=None)
    if elder is None:
        return Ask("add_name", free_text("请重新输入家人的姓名：", min_len=2, max_len=NAME_MAX),
                   prefix=NO_MATCH + "\n")
    if elder.id == actor.id:
        return Done("这是您本人的信息，不需要设置亲情代理。")
    existing = await ProxyLink.filter(
        proxy_id=actor.id, elder_id=elder.id, status__in=[ProxyStatus.PENDING, ProxyStatus.ACTIVE]).first()
    if existing is not None:
        return Done(_already(existing, elder))
    data.update(elder_id=elder.id, mobile=mobile)
    return Ask("add_relation", choice(f"您是{elder.name}的：", [(r, r) for r in RELATIONS]))


def _already(link: ProxyLink, elder: Resident) -> str:
    if link.status == ProxyStatus.ACTIVE:
        return f"您已经可以为{elder.name}代办了。回复“亲情代理”，选择“为家人办理”。"
    return f"您为{elder.name}提交的申请正在等待确认，确认后会通知您。"


@router.step("add_relation")
async def add_relation(answer: str, data: dict[str, Any], actor: Resident) -> Ask:
    """Keep the relation and show everything for a last check."""
    data["relation"] = answer
    return Ask("add_confirm", confirm(
        f"请核对：您（{actor.name}）申请为{data['name']}（{mask_mobile(data['mobile'])}）代办，"
        f"您是{data['name']}的{answer}。提交后需要{data['name']}本人或社区工作人员确认。确认提交吗？"
    ))


@router.step("add_confirm")
async def add_confirmed(
    answer: bool, data: dict[str, Any], actor: Resident, engine: Engine, msg: Inbound, now: datetime
) -> Done:
    """Ask for the link, then ask the elder (or the staff who can meet them) to confirm it."""
    if not answer:
        return Done("好的，没有提交申请。需要时回复“亲情代理”重新添加。")
    name = data["name"]
    try:
        link, created = await request_link(proxy_id=actor.id, elder_id=data["elder_id"], relation=data["relation"],
                                           now=now)
    except UserFacingError as exc:
        return Done(exc.message)
    if not created:
        return Done(_already(link, await Resident.get(id=data["elder_id"])))
    await record_action(actor_id=actor.id, subject_id=link.elder_id, action="request_proxy_link",  # type: ignore[attr-defined]
                        channel=msg.channel, now=now, detail={"link_id": link.id})
    if await ask_elder(engine, link):
        return Done(f"申请已提交，已请{name}在微信里确认，确认后会通知您。\n"
                    f"{name}不方便操作的话，也可以一起到社区，请网格员当面确认。")
    return Done(f"申请已提交。{name}还没有绑定微信，请陪{name}到社区（或请网格员上门），"
                "由工作人员当面核实后确认。确认后会通知您。")


# -- the elder confirms (a pending prompt, or from the flow)


@router.step("review_pick")
async def review_picked(answer: int, data: dict[str, Any]) -> Ask | Done:
    """Ask the elder about the chosen request."""
    link = await ProxyLink.get_or_none(id=answer)
    if link is None:
        return Done("这条申请已失效。")
    return await _ask_elder_now(link, data)


async def _ask_elder_now(link: ProxyLink, data: dict[str, Any]) -> Ask:
    proxy = await Resident.get(id=link.proxy_id)  # type: ignore[attr-defined]
    data["link_id"] = link.id
    return Ask("elder_decide", _elder_question(link, proxy))


@router.step("elder_decide")
async def elder_decided(
    answer: bool, data: dict[str, Any], actor: Resident | None, engine: Engine, msg: Inbound, now: datetime
) -> Done:
    """The elder's answer: confirm or refuse (a repeated or stale answer changes nothing)."""
    link = await ProxyLink.get_or_none(id=data.get("link_id", 0)).prefetch_related("proxy")
    if link is None or actor is None or link.elder_id != actor.id:  # type: ignore[attr-defined]
        return Done("这条申请已失效。回复“菜单”查看服务。")
    if link.status != ProxyStatus.PENDING:
        return Done("这条申请已经处理过了。回复“亲情代理”查看。")
    proxy = link.proxy
    link = await decide_link(link_id=link.id, by_id=actor.id, how="elder", approve=answer, now=now)
    if link.decided_by_id != actor.id:  # type: ignore[attr-defined]
        return Done("这条申请已经处理过了。回复“亲情代理”查看。")
    await _after_decision(link, actor, engine, msg, now)
    if link.status == ProxyStatus.ACTIVE:
        await _tell(engine, proxy.id, f"{actor.name}已同意您做亲情代理。回复“亲情代理”，选择“为家人办理”即可开始代办。",
                    f"proxy_link:{link.id}:decided")
        return Done(f"已同意。{proxy.name}现在可以为您代办社区事项。需要解除时，回复“亲情代理”。")
    await _tell(engine, proxy.id, f"{actor.name}没有同意您的亲情代理申请。", f"proxy_link:{link.id}:decided")
    return Done(f"已拒绝，{proxy.name}不能为您代办。")


async def _after_decision(link: ProxyLink, by: Resident, engine: Engine, msg: Inbound, now: datetime) -> None:
    await record_action(actor_id=by.id, subject_id=link.elder_id, action=f"proxy_link_{link.status}",  # type: ignore[attr-defined]
                        channel=msg.channel, now=now, detail={"link_id": link.id, "how": link.confirmed_how})
    await withdraw_prompts(_subject(link.id), now)


# -- ending a link


def _link_label(link: ProxyLink, me: Resident) -> str:
    pending = "（待确认）" if link.status == ProxyStatus.PENDING else ""
    if link.proxy_id == me.id:  # type: ignore[attr-defined]
        return f"您为{link.elder.name}代办{pending}"
    return f"{link.proxy.name}为您代办{pending}"


def _ask_end(link: ProxyLink, me: Resident) -> Ask:
    if link.proxy_id == me.id:  # type: ignore[attr-defined]
        text = (f"确定撤回为{link.elder.name}代办的申请吗？" if link.status == ProxyStatus.PENDING
                else f"确定解除吗？解除后您不能再为{link.elder.name}代办。")
    else:
        text = f"确定解除吗？解除后{link.proxy.name}不能再为您代办。"
    return Ask("end_confirm", confirm(text + "以后需要可以重新申请。"))


@router.step("end_pick")
async def end_picked(answer: int, data: dict[str, Any], actor: Resident) -> Ask | Done:
    """Ask before ending the chosen link."""
    data["link_id"] = answer
    link = await ProxyLink.get_or_none(id=answer).prefetch_related("proxy", "elder")
    if link is None:
        return Done("这个关联已不存在。")
    return _ask_end(link, actor)


@router.step("end_confirm")
async def end_confirmed(
    answer: bool, data: dict[str, Any], actor: Resident, engine: Engine, msg: Inbound, now: datetime
) -> Done:
    """End the link; the other side is told, and acting through it stops at once."""
    if not answer:
        return Done("好的，没有解除。")
    link = await ProxyLink.get_or_none(id=data.get("link_id", 0)).prefetch_related("proxy", "elder")
    if link is None or actor.id not in (link.proxy_id, link.elder_id):  # type: ignore[attr-defined]
        return Done("这个关联已不存在。")
    if link.status not in (ProxyStatus.PENDING, ProxyStatus.ACTIVE):
        return Done("这个关联已经解除了。")
    elder, proxy = link.elder, link.proxy
    link = await end_link(link_id=link.id, by_id=actor.id, now=now)
    if link.ended_by_id != actor.id:  # type: ignore[attr-defined]
        return Done("这个关联已经解除了。")
    await record_action(actor_id=actor.id, subject_id=elder.id, action="end_proxy_link", channel=msg.channel,
                        now=now, detail={"link_id": link.id})
    await withdraw_prompts(_subject(link.id), now)
    if actor.id == proxy.id:
        await _tell(engine, elder.id, f"{proxy.name}已解除为您代办的亲情代理关系。", f"proxy_link:{link.id}:ended")
        return Done(f"已解除，您不再为{elder.name}代办。")
    await _tell(engine, proxy.id, f"{elder.name}已解除您的亲情代理关系，您不能再为{elder.name}代办。",
                f"proxy_link:{link.id}:ended")
    return Done(f"已解除，{proxy.name}不能再为您代办。")


# -- the record


async def _show_log(actor: Resident, engine: Engine) -> Done:
    entries = await actions_about(actor.id, by_others=True, limit=6)
    if not entries:
        return Done("还没有家人或工作人员为您办理过事项。")
    lines = [
        f"{e.at.astimezone(engine.tz):%m月%d日 %H:%M} {e.actor_name or '（已注销）'}："
        f"{ACTION_LABELS.get(e.action, '办理了一项服务')}"
        for e in entries
    ]
    return Done("最近为您办理的记录：\n" + "\n".join(lines))


# ---------------------------------------------------------------------------- 回到本人

back_to_self = Flow("act_self", "回到本人", keywords=("回到本人", "结束代办"), needs_binding=False, as_self=True,
                    interrupts=True)


@back_to_self.entry
async def stop_acting(actor: Resident | None, engine: Engine, msg: Inbound, now: datetime) -> Done:
    """Stop acting for an elder; what follows is the person's own business again."""
    elder = None if actor is None else await engine.acting_for(msg.openid, actor.id)
    await engine.act_for(msg.openid, None)
    if actor is None or elder is None:
        return Done("您现在办理的就是您本人的事项，没有在为家人代办。回复“菜单”查看服务。")
    await record_action(actor_id=actor.id, subject_id=elder.id, action="proxy_act_end", channel=msg.channel, now=now)
    return Done(f"已结束为{elder.name}代办，回到您本人。回复“菜单”查看服务。")


# ---------------------------------------------------------------------------- staff confirm in person

review = Flow("family_review", "代理确认", keywords=("代理确认",), menu_keys=("REVIEW_PROXY",),
              roles=(Role.GRID_WORKER, Role.COMMUNITY_STAFF))


@review.entry
async def list_pending(actor: Resident, now: datetime) -> Ask | Done:
    """List the pending links whose elder this staff member may meet in person (audited)."""
    pending = await pending_links_in_scope(actor.id)
    if not pending:
        return Done("暂无待确认的亲情代理申请。")
    shown = pending[:9]  # keeps the reply short; decided ones drop off the list
    for link in shown:
        await audit(actor_id=actor.id, subject_id=link.elder.id, action="view",
                    purpose=f"代理确认 proxy_link:{link.id}", now=now)
    items = [(link.id, f"{link.proxy.name}为{link.elder.name}代办（{link.relation or '家人'}）") for link in shown]
    more = f"（共{len(pending)}条，先显示{len(shown)}条）" if len(pending) > len(shown) else ""
    return Ask("pick", choice(f"待确认的亲情代理申请{more}：", items))


@review.step("pick")
async def review_pick(answer: int, data: dict[str, Any]) -> Ask | Done:
    """Ask for the decision on the chosen link."""
    link = await ProxyLink.get_or_none(id=answer)
    if link is None:
        return Done("这条申请已失效。")
    data["link_id"] = answer
    return Ask("decide", await _staff_question(link))


@review.step("decide")
async def staff_decided(
    answer: bool, data: dict[str, Any], actor: Resident | None, engine: Engine, msg: Inbound, now: datetime
) -> Done:
    """Record the decision made in person (a repeated answer changes nothing); tell both sides."""
    link = await ProxyLink.get_or_none(id=data.get("link_id", 0)).prefetch_related("proxy", "elder")
    if link is None:
        return Done("这条申请已失效。")
    if actor is None or not await may_confirm_in_person(actor.id, link.elder):
        return Done("这位居民不在您负责的范围内，不能处理这条申请。")
    if link.status != ProxyStatus.PENDING:
        return Done("这条申请已经处理过了。")
    elder, proxy = link.elder, link.proxy
    link = await decide_link(link_id=link.id, by_id=actor.id, how="staff", approve=answer, now=now)
    if link.decided_by_id != actor.id:  # type: ignore[attr-defined]
        return Done("这条申请已经处理过了。")
    await _after_decision(link, actor, engine, msg, now)
    key_ = f"proxy_link:{link.id}:decided"
    if link.status == ProxyStatus.ACTIVE:
        await _tell(engine, proxy.id, f"社区工作人员已确认：您可以为{elder.name}代办了。"
                    "回复“亲情代理”，选择“为家人办理”即可开始。", key_)
        await _tell(engine, elder.id, f"社区工作人员已确认：{proxy.name}可以为您代办社区事项。"
                    "需要解除时，回复“亲情代理”。", key_)
        return Done("已确认，双方都会收到通知。")
    await _tell(engine, proxy.id, f"您为{elder.name}代办的申请没有通过社区核实。如有疑问请联系网格员。", key_)
    await _tell(engine, elder.id, f"{proxy.name}为您代办的申请没有通过社区核实。", key_)
    return Done("已拒绝，双方都会收到通知。")
