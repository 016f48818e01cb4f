"""The main menu (the resident's own information is handlers/profile.py)."""

from __future__ import annotations

from bot.engine import Ask, Engine, Flow, Goto, choice
from models.residents import Resident, WechatAccount, pending_request_of
from models.roles import role_codes

router = Flow("menu", "菜单", menu_keys=("MENU",), needs_binding=False)

WELCOME = "欢迎来到邻里！在这里可以反映问题、参加志愿服务、订长者餐、请党员代办事项。"

# Services in menu order: (flow name, label). Only the flows that are registered are offered.
SERVICES = [
    ("report", "逢六说事·反映问题"),
    ("my_cases", "我的事·反映进展"),
    ("lovebank", "爱心银行·志愿积分"),
    ("canteen", "长者食堂·订餐"),
    ("errand", "红色代办·上门代办"),
    ("profile", "我的信息"),
    ("family", "亲情代理·为家人代办"),
]


@router.entry
async def show_menu(resident: Resident | None, actor: Resident | None, engine: Engine) -> Ask:
    """Offer the services; staff also see their work; a proxy sees for whom they are acting."""
    items = [(name, label) for name, label in SERVICES if name in engine.flows]
    if actor is None:
        items.insert(0, ("binding", "绑定身份（首次使用请先绑定）"))
    prefix = ""
    if actor is not None:
        mine = await role_codes(actor.id)  # staff flows run as the person writing, not the elder
        items += [(flow.name, flow.title) for flow in engine.flows.values()
                  if flow.roles and mine.intersection(flow.roles) and flow.entry_fn is not None
                  and flow.in_menu]
        if resident is not None and resident.id != actor.id and "act_self" in engine.flows:
            # the label is what the hint tells them to type, so it is a valid answer here too
            items.append(("act_self", "回到本人"))
            prefix = f"（正在为{resident.name}代办，回复“回到本人”结束）\n"
    return Ask("pick", choice("请选择服务：", items), prefix=prefix)


@router.step("pick")
async def picked(answer: str) -> Goto:
    """Start the chosen service."""
    return Goto(answer)


async def binding_state(account: WechatAccount) -> str:
    """'bound', 'pending' or 'none'."""
    if account.resident_id is not None:  # type: ignore[attr-defined]
        return "bound"
    return "pending" if await pending_request_of(account) is not None else "none"
