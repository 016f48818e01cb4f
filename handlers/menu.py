"""The main menu, and the resident's own information."""

from __future__ import annotations

from bot.engine import Ask, Done, Engine, Flow, Goto, choice
from models.places import Building
from models.residents import Resident, WechatAccount, mask_mobile, pending_request_of
from models.roles import role_codes

router = Flow("menu", "菜单", menu_keys=("MENU",), needs_binding=False)

WELCOME = "欢迎来到邻里！在这里可以反映问题、参加志愿服务、订长者餐、请党员代办事项。"

# Services in menu order: (flow name, label). Only the flows that are registered are offered.
SERVICES = [
    ("report", "逢六说事·反映问题"),
    ("lovebank", "爱心银行·志愿积分"),
    ("canteen", "长者食堂·订餐"),
    ("errand", "红色代办·上门代办"),
    ("profile", "我的信息"),
]


@router.entry
async def show_menu(resident: Resident | None, engine: Engine) -> Ask:
    """Offer the services; staff also see their work."""
    items = [(name, label) for name, label in SERVICES if name in engine.flows]
    if resident is None:
        items.insert(0, ("binding", "绑定身份（首次使用请先绑定）"))
    if resident is not None:
        mine = await role_codes(resident.id)
        items += [(flow.name, flow.title) for flow in engine.flows.values()
                  if flow.roles and mine.intersection(flow.roles) and flow.entry_fn is not None]
    return Ask("pick", choice("请选择服务：", items))


@router.step("pick")
async def picked(answer: str) -> Goto:
    """Start the chosen service."""
    return Goto(answer)


profile = Flow("profile", "我的信息", keywords=("我的信息", "我的"), menu_keys=("PROFILE",))


@profile.entry
async def show_profile(resident: Resident) -> Done:
    """Show the resident what we hold about them."""
    building = await Building.get_or_none(id=resident.building_id) if resident.building_id else None  # type: ignore[attr-defined]
    address = f"{building.name}{resident.unit}单元{resident.room}室" if building else "未填写"
    mobile = mask_mobile(resident.mobile) if resident.mobile else "未填写"
    status = "已核实" if resident.status == "verified" else "待社区核实"
    return Done(
        f"姓名：{resident.name}\n手机：{mobile}\n住址：{address}\n状态：{status}\n"
        "信息有误请联系网格员；回复“解绑”可解除绑定。"
    )


async def binding_state(account: WechatAccount) -> str:
    """'bound', 'pending' or 'none'."""
    if account.resident_id is not None:  # type: ignore[attr-defined]
        return "bound"
    return "pending" if await pending_request_of(account) is not None else "none"
