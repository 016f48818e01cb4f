"""绑定: link a WeChat account to a resident record (required before any other flow).

A stairwell poster's QR code (bot/posters.py) carries the scene ``building:<id>``; the engine
hands a scan by someone not yet bound to this flow, which then skips the community and
building questions.
"""

from __future__ import annotations

import re
from typing import Any

from bot.engine import Ask, Done, Engine, Flow, Goto, Question, choice, confirm, free_text
from handlers.menu import binding_state
from handlers.menu import router as menu_router
from models.errors import UserFacingError
from models.places import Building, Community
from models.privacy import audit
from models.residents import (
    CONSENT_TEXT,
    NAME_MAX,
    ROOM_MAX,
    UNIT_MAX,
    LinkRequest,
    LinkStatus,
    Resident,
    WechatAccount,
    bind,
    clean_name,
    decide_link,
    mask_mobile,
    normalize_mobile,
    reviewable_requests,
    staff_accounts,
    unbind,
)
from models.roles import Role

router = Flow("binding", "绑定", keywords=("绑定", "注册"), menu_keys=("BIND",),
              needs_binding=False, as_self=True)

SCENE_PREFIX = "building:"
# at most 9 digits, so that a forged scene can never overflow a 32-bit id column
_SCENE = re.compile(re.escape(SCENE_PREFIX) + r"([1-9][0-9]{0,8})")


def building_scene(building_id: int) -> str:
    """The scene string of a building's permanent QR code."""
    return f"{SCENE_PREFIX}{building_id}"


async def scanned_building(scene: str) -> Building | None:
    """The building a scanned scene names, or None for any other (or forged) scene."""
    found = _SCENE.fullmatch(scene)
    if found is None:
        return None
    return await Building.get_or_none(id=int(found.group(1))).prefetch_related("community")


def _strip_suffix(text: str, *suffixes: str) -> str:
    text = "".join(text.split())
    for suffix in suffixes:
        if text.endswith(suffix):
            text = text[: -len(suffix)]
    if not text:
        raise UserFacingError("请填写编号，例如 2。")
    return text


@router.entry
async def start(account: WechatAccount, data: dict[str, Any]) -> Ask | Done | Goto:
    """Explain the use of personal information and ask for consent.

    Started by a scanned QR code, ``data["scene"]`` names it: a building's code fills in the
    address; any other code leads to the menu, as a plain follow does.
    """
    building = None
    if "scene" in data:
        building = await scanned_building(str(data.pop("scene")))
        if building is None:
            return Goto(menu_router.name)
    status = await binding_state(account)
    if status == "bound":
        return Done("您已经绑定过了。回复“我的信息”查看，回复“菜单”办理服务。")
    if status == "pending":
        return Done("您的绑定申请正在等待网格员确认。回复“解绑”可撤回申请。")
    last = await LinkRequest.filter(account_id=account.id).order_by("-id").first()
    prefix = ""
    if last is not None and last.status == LinkStatus.REJECTED:
        prefix = "您上次的绑定申请没有通过网格员核实，如有疑问请联系网格员。\n"
    if building is not None:
        data["community_id"], data["building_id"] = building.community.id, building.id
        data["scanned"] = True
        prefix += (f"您扫描的是{building.community.name}{building.name}的楼栋码。"
                   "绑定住址后即可办理社区服务，楼栋已为您填好。\n")
    return Ask("consent", confirm("绑定前请阅读：" + CONSENT_TEXT + "\n您同意吗？"), prefix=prefix)


@router.step("consent")
async def consented(answer: bool) -> Ask | Done:
    """Consent given → ask the name; refused → stop, nothing stored."""
    if not answer:
        return Done("好的，没有同意就不会绑定，我们也不会保存您的信息。需要时回复“绑定”。")
    return Ask("name", free_text("请输入您的姓名：", min_len=2, max_len=NAME_MAX))


@router.step("name")
async def got_name(answer: str, data: dict[str, Any]) -> Ask:
    """Store the name, ask the mobile."""
    data["name"] = clean_name(answer)
    return Ask("mobile", free_text("请输入您的手机号：", max_len=20))


@router.step("mobile")
async def got_mobile(answer: str, data: dict[str, Any]) -> Ask:
    """Validate the mobile, then ask the community (skipped when there is only one or it was scanned)."""
    data["mobile"] = normalize_mobile(answer)
    if data.get("scanned"):
        return _ask_unit()
    communities = await Community.all().order_by("id")
    if not communities:
        raise UserFacingError("系统还没有录入社区信息，请联系社区工作人员。")
    if len(communities) == 1:
        data["community_id"] = communities[0].id
        return await _ask_building(communities[0].id)
    return Ask("community", choice("请选择您所在的社区：", [(c.id, c.name) for c in communities]))


async def _ask_building(community_id: int) -> Ask:
    buildings = await Building.filter(community_id=community_id).order_by("id")
    if not buildings:
        raise UserFacingError("这个社区还没有录入楼栋，请联系社区工作人员。")
    return Ask("building", choice("请选择您住的楼栋：", [(b.id, b.name) for b in buildings]))


@router.step("community")
async def got_community(answer: int, data: dict[str, Any]) -> Ask:
    """Store the community, ask the building."""
    data["community_id"] = answer
    return await _ask_building(answer)


@router.step("building")
async def got_building(answer: int, data: dict[str, Any]) -> Ask:
    """Store the building, ask the unit."""
    data["building_id"] = answer
    return _ask_unit()


def _ask_unit() -> Ask:
    return Ask("unit", free_text("请输入单元号（如 2）：", max_len=UNIT_MAX + 2))


@router.step("unit")
async def got_unit(answer: str, data: dict[str, Any]) -> Ask:
    """Store the unit, ask the room."""
    data["unit"] = _strip_suffix(answer, "单元")[:UNIT_MAX]
    return Ask("room", free_text("请输入房间号（如 301）：", max_len=ROOM_MAX + 1))


@router.step("room")
async def got_room(answer: str, data: dict[str, Any]) -> Ask:
    """Store the room and show everything for a last check."""
    data["room"] = _strip_suffix(answer, "室", "号")[:ROOM_MAX]
    building = await Building.get(id=data["building_id"])
    community = await Community.get(id=data["community_id"])
    summary = (
        f"请核对：\n姓名：{data['name']}\n手机：{mask_mobile(data['mobile'])}\n"
        f"住址：{community.name}{building.name}{data['unit']}单元{data['room']}室\n确认提交吗？"
    )
    return Ask("confirm", confirm(summary))


@router.step("confirm")
async def confirmed(
    answer: bool, data: dict[str, Any], account: WechatAccount, engine: Engine, now: Any
) -> Ask | Done | Goto:
    """Bind, or send the match to the grid worker; resume the flow that needed binding."""
    if not answer:
        # Start over, the address too: the poster scanned may not be the resident's own building.
        data.pop("scanned", None)
        return Ask("name", free_text("好的，请重新输入您的姓名：", min_len=2, max_len=NAME_MAX))
    outcome = await bind(
        openid=account.openid, channel=account.channel, name=data["name"],
        mobile=data["mobile"], building_id=data["building_id"], unit=data["unit"],
        room=data["room"], now=now,
    )
    if outcome.status == "pending":
        assert outcome.request is not None
        for staff in await staff_accounts(outcome.reviewers):
            await engine.ask_later(
                openid=staff.openid, flow="binding_review", step="decide",
                question=await _review_question(outcome.request),
                data={"request_id": outcome.request.id},
                subject=f"link_request:{outcome.request.id}",
            )
        return Done(
            "社区已有与您信息相符的居民档案。为保护居民账户安全，已请网格员核实，"
            "确认后即可使用。回复“解绑”可撤回申请。"
        )
    resume = data.get("resume")
    if resume:
        return Goto(resume, prefix="绑定成功！\n")
    return Done("绑定成功！社区核实信息后会更新您的状态。回复“菜单”查看可办理的服务。")


async def _review_question(request: LinkRequest) -> Question:
    record = await Resident.get(id=request.resident_id).prefetch_related("building")  # type: ignore[attr-defined]
    return confirm(
        f"绑定申请：{request.typed_name}（{mask_mobile(request.typed_mobile)}）申请绑定居民档案"
        f"“{record.name} {record.address()}”。请当面或电话核实是本人后再确认。确认绑定吗？"
    )


review = Flow("binding_review", "绑定审核", keywords=("待确认", "绑定审核"), menu_keys=("REVIEW_BINDING",),
              roles=(Role.GRID_WORKER, Role.COMMUNITY_STAFF))


@review.entry
async def list_requests(resident: Resident, now: Any) -> Ask | Done:
    """List the link requests this grid worker may decide (each record shown is audited)."""
    requests = await reviewable_requests(resident)
    if not requests:
        return Done("暂无待确认的绑定申请。")
    shown = requests[:9]  # keeps the reply short; decided ones drop off the list
    for r in shown:
        await audit(actor_id=resident.id, subject_id=r.resident.id, action="view",
                    purpose=f"绑定审核 link_request:{r.id}", now=now)
    items = [
        (r.id, f"{r.typed_name}（{mask_mobile(r.typed_mobile)}）→ 档案{r.resident.name} "
               f"{r.resident.unit}单元{r.resident.room}室")
        for r in shown
    ]
    more = f"（共{len(requests)}条，先显示{len(shown)}条）" if len(requests) > len(shown) else ""
    return Ask("pick", choice(f"待确认的绑定申请{more}：", items))


@review.step("pick")
async def picked_request(answer: int, data: dict[str, Any]) -> Ask:
    """Ask for the decision on the chosen request."""
    data["request_id"] = answer
    return Ask("decide", confirm("请核实申请人确为该居民本人。确认绑定吗？（回复“否”拒绝）"))


NOTICES = {
    LinkStatus.CONFIRMED: "您的绑定申请已由网格员确认，现在可以使用社区服务了。回复“菜单”查看。",
    LinkStatus.REJECTED: "您的绑定申请没有通过网格员核实。如有疑问请联系网格员，或回复“绑定”重新申请。",
}


@review.step("decide")
async def decided(answer: bool, data: dict[str, Any], resident: Resident, engine: Engine, now: Any) -> Done:
    """Record the decision (a repeated answer changes nothing) and tell the applicant."""
    request = await decide_link(
        request_id=data["request_id"], reviewer=resident, approve=answer, now=now
    )
    if request.status in NOTICES:
        applicant = await WechatAccount.get(id=request.account_id)  # type: ignore[attr-defined]
        await engine.send(applicant.openid, NOTICES[request.status], key=f"link:{request.id}:decided")
    outcomes = {"confirmed": "已确认绑定。", "rejected": "已拒绝该绑定申请。",
                "cancelled": "该申请已撤回或已失效。"}
    return Done(outcomes.get(request.status, "该申请仍在等待处理。"))


unbinding = Flow("unbind", "解绑", keywords=("解绑", "解除绑定"), menu_keys=("UNBIND",),
                 needs_binding=False, as_self=True)


@unbinding.entry
async def ask_unbind(account: WechatAccount) -> Ask | Done:
    """Ask before unlinking; nothing to do when not bound."""
    status = await binding_state(account)
    if status == "none":
        return Done("您还没有绑定。")
    if status == "pending":
        return Ask("confirm", confirm("要撤回正在等待确认的绑定申请吗？"))
    return Ask("confirm", confirm("解绑后将不能使用社区服务，您的办理记录仍由社区保存。确定解绑吗？"))


@unbinding.step("confirm")
async def unbind_confirmed(answer: bool, account: WechatAccount, now: Any) -> Done:
    """Unlink the account (twice is harmless)."""
    if not answer:
        return Done("好的，没有解绑。")
    await unbind(account.openid, now)
    return Done("已解绑。需要时回复“绑定”重新绑定。")
