"""幸福食堂 in chat: booking, my bookings, standing orders, and the canteen staff's counter and kitchen.

For diners (or a family member acting for one): 食堂 (the hub), 订餐 (day, meal, dine-in or
delivery, the price and its rule, confirm; the counter's QR code), 我的订餐 (upcoming bookings,
the wallet and the monthly card: the QR code again, or cancel before the cut-off), 长期订餐
(standing orders), 饮食需求 (diet marks and allergies), 月卡 (buy the monthly card) and the answer to
a pushed seat offer. For canteen staff: 食堂管理 (the hub), 发布菜单, 食堂设置, 充值, 就餐 CODE,
就餐核对, 备餐统计 and 食堂数据. Every rule lives in models.canteen_*; these steps read input, call
the domain and write the reply.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

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
from models import canteen_booking as booking_ops
from models import media
from models.canteen import (
    BOOKING_LABELS,
    CUTOFF_DAY_BEFORE,
    DIET_CODES,
    MEAL_LABELS,
    MEALS,
    MENU_DAYS_AHEAD,
    MODE_LABELS,
    OFFER_MINUTES,
    PAY_METHOD_LABELS,
    PRICE_MAX_FEN,
    RECEIPT_MAX,
    TOPUP_MAX_FEN,
    Booking,
    BookingStatus,
    Menu,
    MenuState,
    Mode,
    StandingOrder,
)
from models.canteen_booking import (
    OFFER_FLOW,
    OFFER_STEP,
    booking_of,
    check_dishes,
    diet_codes,
    diet_text,
    dishes_text,
    may_deliver,
    meal_label,
    standing_text,
    waiting_position,
)
from models.canteen_figures import canteen_figures, figures_text
from models.canteen_prices import (
    RuleKind,
    buy_card,
    card_for,
    card_refusal,
    may_buy_card,
    next_month,
    quote,
    rules_on,
)
from models.canteen_wallet import canteen_of, staff_canteen, top_up, wallet_of, yuan
from models.cases import CONTEXT, local_today
from models.errors import UserFacingError
from models.ledger import Insufficient
from models.outbox import Priority, enqueue
from models.places import Canteen
from models.proxies import record_action
from models.redemption import code_png, find_recipient
from models.residents import Resident
from models.roles import Role
from models.service_days import fmt_day

STAFF = (Role.CANTEEN_STAFF, Role.COMMUNITY_STAFF)
MODE_QUESTION = choice("堂食还是送餐上门？", [(Mode.DINE_IN, "到食堂吃（堂食）"), (Mode.DELIVERY, "送餐上门")])
WEEKDAY_NAMES = "一二三四五六日"
BOOKINGS_LISTED = 6
MATCHES_LISTED = 8
DISHES_TEXT_MAX = 300  # the 发布菜单 message with every dish
LISTING_HEADROOM = 80  # room for a refusal said before a list asked again
MEAL_OPTION_MAX = 40
ALL = "all"  # the choice of every open day, or every meal
BATCH_MAX = 21  # meals booked in one go: three a day for a week
DISHES_SHOWN = 70  # the dishes in a confirmation are cut to this, so the reply stays within REPLY_MAX_CHARS
LIVE = (BookingStatus.WAITING, BookingStatus.OFFERED, BookingStatus.BOOKED)  # what a diner may still cancel
QR_STATUSES = (BookingStatus.BOOKED, BookingStatus.CHARGED)
NO_CANTEEN = "您所在的社区还没有开通长者食堂。"
NO_STAFF_CANTEEN = "没有找到您负责的食堂，请联系社区确认您的食堂工作人员身份。"


# ---------------------------------------------------------------------------- wording


def _dishes(dishes: list[dict]) -> str:
    """The dishes as the domain writes them (check_dishes first: the marks are codes)."""
    return dishes_text(Menu(dishes=dishes))


def clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit - 1] + "…"


def price_text(price_fen: int, rule_label: str) -> str:
    """6.00元（60岁以上低保、特困老人每餐6.00元）: the price and the rule that gave it."""
    return f"{yuan(price_fen)}（{rule_label}）" if rule_label else yuan(price_fen)


async def wallet_text(resident_id: int, now: datetime) -> str:
    w = await wallet_of(resident_id, now)
    return f"余额{yuan(w.balance_fen)}（冻结{yuan(w.held_fen)}，可用{yuan(w.available_fen)}）"


def top_up_hint(canteen: Canteen | None, then: str = "充值后回复“订餐”再订。") -> str:
    where = canteen.name if canteen is not None else "食堂"
    return f"请到{where}柜台充值（现金、微信、支付宝均可），{then}"


async def send_qr(booking: Booking, openid: str, now: datetime) -> None:
    """The booking's code as a QR image for the counter's scanner (like a voucher's, handlers/redemption.py)."""
    stored = await media.store(code_png(booking.code), now)
    await enqueue(openid=openid, kind="image", payload=media.image_payload({"stored": stored}, now),
                  idempotency_key=f"canteen:booking:{booking.id}:qr:{openid}:{now.isoformat()}", now=now,
                  priority=Priority.REPLY)


def _for(resident: Resident, actor: Resident) -> str:
    return f"（为{resident.name}办理）\n" if resident.id != actor.id else ""


def _whose(resident: Resident, actor: Resident) -> str:
    return "您" if resident.id == actor.id else resident.name


def parse_fen(text: str, *, max_fen: int, what: str) -> int:
    """An amount typed in yuan ("15", "12.5", "12.50元") as fen; UserFacingError otherwise."""
    cleaned = text.strip().removesuffix("元").strip()
    try:
        value = Decimal(cleaned)
    except InvalidOperation:
        raise UserFacingError(f"{what}请填数字，单位是元，比如 15 或 12.5。") from None
    if not value.is_finite() or value != value.quantize(Decimal("0.01")) or not cleaned.replace(".", "").isdigit():
        raise UserFacingError(f"{what}请填数字，单位是元，最多两位小数，比如 15 或 12.5。")
    fen = int(value * 100)
    if not 1 <= fen <= max_fen:
        raise UserFacingError(f"{what}要在0.01元到{yuan(max_fen)}之间。")
    return fen


def parse_dishes(text: str) -> list[dict]:
    """“红烧肉 软食；清炒时蔬 低盐”: dishes split by ；/; or a new line, each a name then its marks
    (the domain's check_dishes then holds them to its limits)."""
    dishes: list[dict] = []
    for part in text.replace(";", "；").replace("\n", "；").split("；"):
        words = part.replace("，", " ").replace(",", " ").replace("、", " ").split()
        if not words:
            continue
        unknown = [word for word in words[1:] if word not in DIET_CODES]
        if unknown:
            raise UserFacingError(f"“{unknown[0]}”不是饮食标记，标记只能是{'、'.join(DIET_CODES)}，写在菜名后面。")
        dishes.append({"name": words[0], "marks": [DIET_CODES[word] for word in words[1:]]})
    return check_dishes(dishes)


async def _booking(booking_id: int) -> Booking:
    return await Booking.get(id=booking_id).prefetch_related("menu")


async def _booked_reply(booking: Booking, msg: Inbound, now: datetime, head: str = "") -> str:
    """What a diner reads after a booking: booked (the QR code follows), wait-listed (the position) or lapsed."""
    menu = booking.menu
    what = f"{meal_label(menu)}，{MODE_LABELS.get(booking.mode, booking.mode)}"
    if booking.status in QR_STATUSES:
        await send_qr(booking, msg.openid, now)
        return (f"{head}预订成功！{what}\n价格：{price_text(booking.price_fen, booking.rule_label)}\n"
                f"就餐码：{booking.code}（二维码随后发给您，就餐时在柜台出示）\n"
                f"{await wallet_text(booking.resident_id, now)}\n"
                f"截止时间前可回复“我的订餐”取消，退回全部餐费。")
    if booking.status == BookingStatus.WAITING:
        return (f"{head}{what}已经订满，已为您排入候补第{await waiting_position(booking)}位，没有扣款。"
                f"有人退订时会通知您，请在{OFFER_MINUTES}分钟内确认。截止预订后候补自动取消。")
    if booking.status == BookingStatus.OFFERED:
        return f"{head}{what}有一个空位为您保留，请回复“我的订餐”确认。"
    return f"{head}{what}：{BOOKING_LABELS.get(booking.status, booking.status)}。"


# ---------------------------------------------------------------------------- 食堂: the diner's hub

hub = Flow("canteen", "长者食堂", keywords=("食堂", "长者食堂", "幸福食堂", "助餐"), menu_keys=("CANTEEN",))

HUB_ITEMS = [("canteen_book", "订餐"), ("canteen_mine", "我的订餐"), ("canteen_standing", "长期订餐"),
             ("canteen_diet", "饮食需求"), ("canteen_card", "月卡")]


@hub.entry
async def show_hub(resident: Resident, actor: Resident, now: datetime) -> Ask | Done:
    """The canteen, the wallet and the diner's services."""
    canteen = await canteen_of(resident.id)
    if canteen is None:
        return Done(_for(resident, actor) + NO_CANTEEN)
    head = (f"{_for(resident, actor)}{canteen.name}\n"
            f"{_whose(resident, actor)}的食堂钱包：{await wallet_text(resident.id, now)}")
    return Ask("pick", choice(head + "\n请选择：", HUB_ITEMS))


@hub.step("pick")
async def hub_picked(answer: str) -> Goto:
    """Start the chosen service."""
    return Goto(answer)


# ---------------------------------------------------------------------------- 订餐

book_flow = Flow("canteen_book", "订餐", keywords=("订餐", "订饭", "预订", "长者订餐"))


def _meal_question(menus: list[Menu], head: str = "") -> Question:
    options: list[tuple[Any, str]] = []
    for menu in menus:
        full = "，已满可候补" if menu.booked >= menu.capacity else ""
        options.append((menu.id, f"{MEAL_LABELS.get(menu.meal, menu.meal)} 菜单价{yuan(menu.price_fen)}{full}："
                                 f"{dishes_text(menu)}"))
    question = choice(f"{head}{fmt_day(menus[0].day)}可以预订：", options)
    if len(question.render()) > REPLY_MAX_CHARS - LISTING_HEADROOM:  # long dish lists: cut each to fit
        question.options = [clip(label, MEAL_OPTION_MAX) for label in question.options]
    return question


@book_flow.entry
async def start_book(resident: Resident, actor: Resident, data: dict[str, Any], now: datetime) -> Ask | Done:
    """The days with open menus (or straight to the meals when only one day is open)."""
    canteen = await canteen_of(resident.id)
    if canteen is None:
        return Done(_for(resident, actor) + NO_CANTEEN)
    menus = await booking_ops.open_menus(canteen.id, now)
    if not menus:
        return Done(_for(resident, actor) + f"{canteen.name}暂时没有可以预订的餐次，"
                    "菜单一般提前几天发布，请稍后再来看看。")
    data["canteen"] = canteen.id
    days = sorted({m.day for m in menus})
    if len(days) == 1:
        data["day"] = days[0].isoformat()
        return Ask("meal", _meal_question(menus, _for(resident, actor)))
    options = [(d.isoformat(), fmt_day(d)) for d in days] + [(ALL, f"这{len(days)}天都订（接着选餐次）")]
    return Ask("day", choice(_for(resident, actor) + "预订哪一天？", options))


@book_flow.step("day")
async def book_day(answer: str, data: dict[str, Any], now: datetime) -> Ask:
    """The meals of that day with their dishes and menu prices, or (every day) which meals."""
    menus = await booking_ops.open_menus(int(data["canteen"]), now)
    if answer == ALL:
        meals = [meal for meal in MEALS if any(m.meal == meal for m in menus)]
        if not meals:
            raise UserFacingError("已经全部截止预订了，请稍后再来看看。")
        options = [(meal, f"每天的{MEAL_LABELS[meal]}") for meal in meals]
        if len(meals) > 1:
            options.append((ALL, "每天的" + "、".join(MEAL_LABELS[meal] for meal in meals) + "都订"))
        return Ask("meals", choice("订哪一餐？", options))
    day = date.fromisoformat(answer)
    menus = [m for m in menus if m.day == day]
    if not menus:
        raise UserFacingError(f"{fmt_day(day)}已经截止预订了，请选其他日期。")
    data["day"] = answer
    question = _meal_question(menus)
    if len(menus) > 1:
        question.values.append(ALL)
        question.options.append(f"这天的{len(menus)}餐都订")
    return Ask("meal", question)


@book_flow.step("meals")
async def book_meals(answer: str, resident: Resident, data: dict[str, Any], now: datetime) -> Ask:
    """That meal (or every meal) on every open day."""
    menus = [m for m in await booking_ops.open_menus(int(data["canteen"]), now) if answer in (ALL, m.meal)]
    return await _chosen(menus, resident, data, now)


@book_flow.step("meal")
async def book_meal(answer: int | str, resident: Resident, data: dict[str, Any], now: datetime) -> Ask:
    """One meal, or every meal of the day."""
    if answer == ALL:
        day = date.fromisoformat(str(data["day"]))
        menus = [m for m in await booking_ops.open_menus(int(data["canteen"]), now) if m.day == day]
        return await _chosen(menus, resident, data, now)
    menu = await Menu.get_or_none(id=answer)
    if menu is None or menu.state != MenuState.OPEN or menu.cutoff_at <= now:
        raise UserFacingError("这一餐已经截止预订了，请选其他餐次。")
    mine = await Booking.get_or_none(menu_id=menu.id, resident_id=resident.id, status__in=LIVE)
    if mine is not None:
        raise UserFacingError(f"{meal_label(menu)}已经订过了（{BOOKING_LABELS[mine.status]}），"
                              "回复“我的订餐”查看。")
    return await _chosen([menu], resident, data, now)


async def _chosen(menus: list[Menu], resident: Resident, data: dict[str, Any], now: datetime) -> Ask:
    """Keep the chosen meals (those not booked already); dine-in or delivery when delivery is allowed,
    else straight to the price."""
    booked = set(await Booking.filter(menu_id__in=[m.id for m in menus], resident_id=resident.id,
                                      status__in=LIVE).values_list("menu_id", flat=True))
    menus = [m for m in menus if m.id not in booked][:BATCH_MAX]
    if not menus:
        raise UserFacingError("这些餐都已经订过了，回复“我的订餐”查看。")
    data["menus"] = [m.id for m in menus]
    data["menu"] = menus[0].id
    if await may_deliver(resident):
        return Ask("mode", MODE_QUESTION)
    data["mode"] = Mode.DINE_IN
    return await _ask_book_confirm(resident, data, now)


@book_flow.step("mode")
async def book_mode(answer: str, resident: Resident, data: dict[str, Any], now: datetime) -> Ask:
    """Keep the mode; show the price and ask to confirm."""
    data["mode"] = answer
    return await _ask_book_confirm(resident, data, now)


async def _ask_book_confirm(resident: Resident, data: dict[str, Any], now: datetime) -> Ask:
    """The price by the rule that applies on the meal date, the wallet, confirm."""
    if len(data.get("menus", ())) > 1:
        return await _ask_batch_confirm(resident, data, now)
    menu = await Menu.get(id=int(data["menu"]))
    q = await quote(canteen_id=menu.canteen_id, resident_id=resident.id, day=menu.day, meal=menu.meal,
                    menu_price_fen=menu.price_fen)
    full = "（已订满，确认后排入候补，不扣款）" if menu.booked >= menu.capacity else ""
    return Ask("confirm", confirm(
        f"{meal_label(menu)}，{MODE_LABELS.get(data['mode'], data['mode'])}{full}\n"
        f"菜品：{clip(dishes_text(menu), DISHES_SHOWN)}\n"
        f"价格：{price_text(q.price_fen, q.rule_label)}，菜单价{yuan(menu.price_fen)}\n"
        f"钱包：{await wallet_text(resident.id, now)}\n预订后先冻结餐费，截止时间扣款。确认预订吗？"))


async def _ask_batch_confirm(resident: Resident, data: dict[str, Any], now: datetime) -> Ask:
    """Several meals: each with its price and rule, the total held, the wallet, confirm."""
    by_id = {m.id: m for m in await Menu.filter(id__in=data["menus"])}
    menus = sorted(by_id.values(), key=lambda m: (m.day, MEALS.index(m.meal)))
    lines, total = [], 0
    for menu in menus:
        q = await quote(canteen_id=menu.canteen_id, resident_id=resident.id, day=menu.day, meal=menu.meal,
                        menu_price_fen=menu.price_fen)
        full = menu.booked >= menu.capacity
        total += 0 if full else q.price_fen
        lines.append(f"{meal_label(menu)} {price_text(q.price_fen, q.rule_label)}{'（已满，排候补）' if full else ''}")
    return Ask("confirm", confirm(
        f"预订{len(menus)}餐，{MODE_LABELS.get(data['mode'], data['mode'])}：\n" + "\n".join(lines) +
        f"\n合计冻结{yuan(total)}\n钱包：{await wallet_text(resident.id, now)}\n"
        "预订后先冻结餐费，每餐截止时间扣款。确认预订吗？"))


async def _book_batch(resident: Resident, actor: Resident, msg: Inbound, data: dict[str, Any], now: datetime) -> str:
    """Book each chosen meal in turn (each on its own: one full or short meal does not stop the rest)."""
    done, waiting, failed = [], [], []
    for menu_id in data["menus"]:
        menu = await Menu.get(id=int(menu_id))
        try:
            booking = await booking_ops.book(menu_id=menu.id, resident_id=resident.id, by_id=actor.id,
                                             mode=str(data["mode"]), now=now)
        except UserFacingError as exc:
            failed.append(f"{meal_label(menu)}：{exc.message}")
            continue
        if actor.id != resident.id:
            await record_action(actor_id=actor.id, subject_id=resident.id, action="canteen_book",
                                channel=msg.channel, now=now, detail={"booking_id": booking.id})
        if booking.status == BookingStatus.WAITING:
            waiting.append(f"{meal_label(menu)}（候补第{await waiting_position(booking)}位）")
        else:
            done.append(f"{meal_label(menu)} {yuan(booking.price_fen)} 就餐码{booking.code}")
    parts = [_for(resident, actor) + (f"预订成功{len(done)}餐：\n" + "\n".join(done) if done else "没有订上。")]
    if waiting:
        parts.append("已满，排入候补（不扣款，有空位会通知您）：\n" + "\n".join(waiting))
    if failed:
        canteen = await Canteen.get_or_none(id=int(data["canteen"]))
        parts.append("没有订上：\n" + "\n".join(failed) +
                     ("\n" + top_up_hint(canteen) if any("不足" in line for line in failed) else ""))
    parts.append(f"{await wallet_text(resident.id, now)}\n就餐时回复“我的订餐”出示就餐码；截止时间前可以取消。")
    return "\n".join(parts)


@book_flow.step("confirm")
async def book_confirmed(answer: bool, resident: Resident, actor: Resident, msg: Inbound, data: dict[str, Any],
                         now: datetime) -> Done:
    """Book (a second 是 returns the same booking): booked with the QR code, wait-listed, or why not."""
    if not answer:
        return Done("好的，没有预订。回复“订餐”可以重新选择。")
    if len(data.get("menus", ())) > 1:
        return Done(await _book_batch(resident, actor, msg, data, now))
    try:
        booking = await booking_ops.book(menu_id=int(data["menu"]), resident_id=resident.id, by_id=actor.id,
                                         mode=str(data["mode"]), now=now)
    except Insufficient as exc:
        canteen = await Canteen.get_or_none(id=int(data["canteen"]))
        return Done(f"{exc.message}{top_up_hint(canteen)}")
    except UserFacingError as exc:
        return Done(exc.message)
    if actor.id != resident.id:
        await record_action(actor_id=actor.id, subject_id=resident.id, action="canteen_book", channel=msg.channel,
                            now=now, detail={"booking_id": booking.id})
    return Done(await _booked_reply(await _booking(booking.id), msg, now, _for(resident, actor)))


# ---------------------------------------------------------------------------- 我的订餐

mine_flow = Flow("canteen_mine", "我的订餐", keywords=("我的订餐", "我的餐", "订餐记录"))


def _booking_line(b: Booking) -> str:
    return (f"{meal_label(b.menu)} {MODE_LABELS.get(b.mode, b.mode)} {yuan(b.price_fen)} "
            f"{BOOKING_LABELS.get(b.status, b.status)}")


@mine_flow.entry
async def list_mine(resident: Resident, actor: Resident, now: datetime) -> Ask | Done:
    """The wallet, this month's card, the standing orders and the upcoming bookings to pick from."""
    canteen = await canteen_of(resident.id)
    lines = [_for(resident, actor) + f"食堂钱包：{await wallet_text(resident.id, now)}"]
    if canteen is not None:
        today = local_today(now)
        card = await card_for(canteen_id=canteen.id, resident_id=resident.id, day=today)
        if card is not None:
            lines.append(f"月卡：{today.month}月有效，三餐都可使用")
    standing = await booking_ops.standing_of(resident.id)
    if standing:
        lines.append(f"长期订餐：{len(standing)}项（回复“长期订餐”查看）")
    bookings = await booking_ops.bookings_of(resident.id, now, upcoming=True)
    if not bookings:
        return Done("\n".join([*lines, "您没有待就餐的订餐。回复“订餐”预订。"]))
    options: list[tuple[Any, str]] = [(b.id, _booking_line(b)) for b in bookings[:BOOKINGS_LISTED]]
    more = f"（另有{len(bookings) - BOOKINGS_LISTED}项，请在小程序查看）" if len(bookings) > BOOKINGS_LISTED else ""
    return Ask("pick", choice("\n".join(lines) + f"\n待就餐的订餐{more}（选一项可取消或重发二维码）：", options))


async def _my_booking(booking_id: int, resident: Resident, actor: Resident) -> Booking:
    booking = await booking_of(booking_id, actor.id)
    if booking.resident_id != resident.id:  # staff may see anyone's: here only the diner's own
        raise UserFacingError("没有找到这条订餐，请回复“我的订餐”重新查看。")
    return booking


@mine_flow.step("pick")
async def mine_picked(answer: int, resident: Resident, actor: Resident, data: dict[str, Any],
                      now: datetime) -> Ask | Done:
    """One booking: the QR code again, accept an offered seat, or cancel."""
    booking = await _my_booking(answer, resident, actor)
    data["booking"] = booking.id
    items: list[tuple[str, str]] = []
    if booking.status in QR_STATUSES:
        items.append(("qr", "发送就餐二维码"))
    if booking.status == BookingStatus.OFFERED:
        items.append(("accept", "要这个空位"))
    if booking.status in LIVE and booking.menu.cutoff_at > now:
        items.append(("cancel", "取消这一餐"))
    if not items:
        return Done(f"{_booking_line(booking)}。已过预订截止时间，如需取消请联系食堂工作人员。")
    return Ask("action", choice(f"{_booking_line(booking)}\n价格：{price_text(booking.price_fen, booking.rule_label)}"
                                f"\n就餐码：{booking.code}\n需要：", items))


@mine_flow.step("action")
async def mine_action(answer: str, resident: Resident, actor: Resident, msg: Inbound, data: dict[str, Any],
                      now: datetime) -> Ask | Done:
    """Send the QR code, take the offered seat, or ask to confirm the cancellation."""
    booking = await _my_booking(int(data["booking"]), resident, actor)
    if answer == "qr":
        await send_qr(booking, msg.openid, now)
        return Done(f"{meal_label(booking.menu)}的就餐二维码正在发给您（就餐码{booking.code}）。")
    if answer == "accept":
        return await _answer_offer(booking.id, True, actor, msg, now)
    held = "冻结的餐费会退回钱包" if booking.status == BookingStatus.BOOKED and booking.price_fen else "不涉及扣款"
    return Ask("cancel", confirm(f"取消{meal_label(booking.menu)}的订餐，{held}。确认取消吗？"))


@mine_flow.step("cancel")
async def mine_cancel(answer: bool, resident: Resident, actor: Resident, msg: Inbound, data: dict[str, Any],
                      now: datetime) -> Done:
    """Cancel: the hold goes back to the wallet and the seat to the next on the waiting list."""
    if not answer:
        return Done("好的，订餐保留。")
    try:
        booking = await booking_ops.cancel(booking_id=int(data["booking"]), by_id=actor.id, now=now)
    except UserFacingError as exc:
        return Done(exc.message)
    if actor.id != resident.id:
        await record_action(actor_id=actor.id, subject_id=resident.id, action="canteen_cancel", channel=msg.channel,
                            now=now, detail={"booking_id": booking.id})
    booking = await _booking(booking.id)
    return Done(f"已取消{meal_label(booking.menu)}的订餐。{await wallet_text(resident.id, now)}")


# ---------------------------------------------------------------------------- the pushed seat offer

offer_flow = Flow(OFFER_FLOW, "空位确认")


async def _answer_offer(booking_id: int, accept: bool, actor: Resident, msg: Inbound, now: datetime) -> Done:
    try:
        booking = await booking_ops.answer_offer(booking_id=booking_id, by_id=actor.id, accept=accept, now=now)
    except Insufficient as exc:
        menu_booking = await _booking(booking_id)
        canteen = await Canteen.get_or_none(id=menu_booking.menu.canteen_id)
        return Done(f"{exc.message}空位仍为您保留到{_hhmm(menu_booking.offer_until)}，"
                    f"{top_up_hint(canteen, '充值后回复“我的订餐”确认。')}")
    except UserFacingError as exc:
        return Done(exc.message)
    booking = await _booking(booking.id)
    if not accept:
        return Done(f"好的，已放弃{meal_label(booking.menu)}的空位，没有扣款。")
    return Done(await _booked_reply(booking, msg, now))


def _hhmm(when: datetime | None) -> str:
    return "" if when is None else when.astimezone(CONTEXT.tz).strftime("%H:%M")


@offer_flow.step(OFFER_STEP)
async def offer_answered(answer: Any, actor: Resident | None, msg: Inbound, data: dict[str, Any],
                         now: datetime) -> Done:
    """The diner (or the proxy who was asked) takes the seat or lets it go."""
    if actor is None:
        return Done("请先绑定身份。回复“绑定”开始。")
    return await _answer_offer(int(data["booking_id"]), answer == "yes", actor, msg, now)


# ---------------------------------------------------------------------------- 长期订餐

standing_flow = Flow("canteen_standing", "长期订餐", keywords=("长期订餐", "常订", "每天订餐"))

MEAL_SETS = [("lunch", "午餐"), ("lunch,dinner", "午餐和晚餐"), ("breakfast,lunch,dinner", "一日三餐"),
             ("breakfast", "早餐"), ("dinner", "晚餐")]
WEEKDAY_SETS = [("1,2,3,4,5", "工作日（周一至周五）"), ("1,2,3,4,5,6,7", "每天"), ("1,3,5", "周一、三、五"),
                ("2,4,6", "周二、四、六")]


def _standing(data: dict[str, Any]) -> str:
    return standing_text(StandingOrder(meals=data["meals"], weekdays=data["weekdays"], mode=data["mode"]))


@standing_flow.entry
async def show_standing(resident: Resident, actor: Resident, data: dict[str, Any]) -> Ask | Done:
    """The standing orders: end one, or set up a new one."""
    canteen = await canteen_of(resident.id)
    if canteen is None:
        return Done(_for(resident, actor) + NO_CANTEEN)
    data["canteen"] = canteen.id
    orders = await booking_ops.standing_of(resident.id)
    items: list[tuple[Any, str]] = [(o.id, f"停止：{standing_text(o)}") for o in orders]
    items.append(("new", "改为新的长期订餐" if orders else "设置长期订餐"))
    head = "长期订餐：菜单发布时自动为您预订，从钱包冻结餐费；余额不足或订满时会通知您。"
    if not orders:
        head += "\n您还没有长期订餐。"
    return Ask("pick", choice(_for(resident, actor) + head + "\n请选择：", items))


@standing_flow.step("pick")
async def standing_picked(answer: Any, data: dict[str, Any]) -> Ask:
    """End one (confirm), or ask which meals."""
    if answer == "new":
        return Ask("meals", choice("订哪几餐？", MEAL_SETS))
    data["order"] = answer
    return Ask("end", confirm("停止这项长期订餐吗？已经订好的餐不受影响。"))


@standing_flow.step("end")
async def standing_end(answer: bool, resident: Resident, actor: Resident, msg: Inbound, data: dict[str, Any],
                       now: datetime) -> Done:
    """End the chosen standing order; bookings it made stay."""
    if not answer:
        return Done("好的，长期订餐保留。")
    await booking_ops.end_standing(order_id=int(data["order"]), by_id=actor.id, now=now)
    if actor.id != resident.id:
        await record_action(actor_id=actor.id, subject_id=resident.id, action="canteen_standing_end",
                            channel=msg.channel, now=now, detail={"order_id": data["order"]})
    return Done("已停止这项长期订餐，以后发布的菜单不再自动预订。已经订好的餐可在“我的订餐”查看。")


@standing_flow.step("meals")
async def standing_meals(answer: str, data: dict[str, Any]) -> Ask:
    """Keep the meals; ask which weekdays."""
    data["meals"] = answer
    return Ask("weekdays", choice("每周哪几天？", WEEKDAY_SETS))


@standing_flow.step("weekdays")
async def standing_weekdays(answer: str, resident: Resident, data: dict[str, Any]) -> Ask:
    """Keep the weekdays; ask the mode when delivery is allowed, else confirm."""
    data["weekdays"] = answer
    if await may_deliver(resident):
        return Ask("mode", MODE_QUESTION)
    data["mode"] = Mode.DINE_IN
    return _ask_standing_confirm(data)


@standing_flow.step("mode")
async def standing_mode(answer: str, data: dict[str, Any]) -> Ask:
    """Keep the mode; ask to confirm."""
    data["mode"] = answer
    return _ask_standing_confirm(data)


def _ask_standing_confirm(data: dict[str, Any]) -> Ask:
    return Ask("confirm", confirm(
        f"长期订餐：{_standing(data)}。每次菜单发布时自动预订，按当天的价格冻结餐费；"
        "食堂休息、订满或余额不足时会通知您。确认吗？"))


@standing_flow.step("confirm")
async def standing_confirmed(answer: bool, resident: Resident, actor: Resident, msg: Inbound, data: dict[str, Any],
                             now: datetime) -> Done:
    """Set the standing order (it replaces the diner's current one and books open menus that match)."""
    if not answer:
        return Done("好的，没有设置长期订餐。")
    order = await booking_ops.set_standing(canteen_id=int(data["canteen"]), resident_id=resident.id, by_id=actor.id,
                                           meals=str(data["meals"]), weekdays=str(data["weekdays"]),
                                           mode=str(data["mode"]), now=now)
    if actor.id != resident.id:
        await record_action(actor_id=actor.id, subject_id=resident.id, action="canteen_standing",
                            channel=msg.channel, now=now, detail={"order_id": order.id})
    return Done(f"已设置长期订餐：{standing_text(order)}。已发布的菜单中符合的餐次也一并预订，"
                "回复“我的订餐”查看；回复“长期订餐”可以停止。")


# ---------------------------------------------------------------------------- 饮食需求

diet_flow = Flow("canteen_diet", "饮食需求", keywords=("饮食需求", "用餐需求", "忌口", "过敏"))
NONE_WORDS = frozenset(SKIP_WORDS | {"不需要", "都不需要", "没有了"})


@diet_flow.entry
async def show_diet(resident: Resident, actor: Resident) -> Ask:
    """What the kitchen knows now; ask the diet marks."""
    now_text = f"现在记录的饮食需求：{diet_text(await booking_ops.diner_of(resident.id))}。\n"
    return Ask("diet", free_text(_for(resident, actor) + now_text + "需要哪些饮食照顾？可多选：软食、低盐、低糖，"
                                 "用空格分开；都不需要请回复“无”。", max_len=30))


@diet_flow.step("diet")
async def diet_marks(answer: str, data: dict[str, Any]) -> Ask:
    """Read the marks (软食 低盐 低糖, or 无); ask the allergies."""
    text = answer.strip()
    words = [] if text in NONE_WORDS else text.replace("、", " ").replace("，", " ").replace(",", " ").split()
    data["diet"] = diet_codes(words)
    return Ask("allergies", free_text("有没有过敏或忌口的食物（如：花生、海鲜）？没有请回复“无”。", max_len=60))


@diet_flow.step("allergies")
async def diet_allergies(answer: str, resident: Resident, actor: Resident, msg: Inbound, data: dict[str, Any],
                         now: datetime) -> Done:
    """Save the diet profile the kitchen count reads."""
    allergies = "" if answer.strip() in NONE_WORDS else answer.strip()
    diner = await booking_ops.set_diner(resident_id=resident.id, by_id=actor.id, now=now, diet=str(data["diet"]),
                                        allergies=allergies)
    if actor.id != resident.id:
        await record_action(actor_id=actor.id, subject_id=resident.id, action="canteen_diet", channel=msg.channel,
                            now=now)
    return Done(f"已记下{_whose(resident, actor)}的饮食需求：{diet_text(diner)}。厨房备餐时会看到。")


# ---------------------------------------------------------------------------- 月卡

card_flow = Flow("canteen_card", "月卡", keywords=("月卡", "买月卡", "食堂月卡"))


@card_flow.entry
async def show_card(resident: Resident, actor: Resident, data: dict[str, Any], now: datetime) -> Ask | Done:
    """This month's and next month's card: held, or for sale when the diner is eligible."""
    canteen = await canteen_of(resident.id)
    if canteen is None:
        return Done(_for(resident, actor) + NO_CANTEEN)
    data["canteen"] = canteen.id
    this = local_today(now).replace(day=1)
    lines, items = [_for(resident, actor) + "月卡：当月三餐都可使用，订餐不再另收餐费。"], []
    for month in (this, next_month(this)):
        if await card_for(canteen_id=canteen.id, resident_id=resident.id, day=month) is not None:
            lines.append(f"{month.month}月月卡：已购买")
        elif await may_buy_card(canteen_id=canteen.id, resident_id=resident.id, month=month):
            price = (await rules_on(canteen.id, month)).get(RuleKind.CARD, {}).get("price_fen")
            if price:
                items.append((month.isoformat(), f"购买{month.month}月月卡 {yuan(price)}"))
    if not items:
        if len(lines) == 1:  # no card held: say why none is for sale
            lines.append(await card_refusal(canteen_id=canteen.id, resident_id=resident.id, month=this)
                         or "本食堂目前不办理月卡。")
        return Done("\n".join(lines))
    return Ask("month", choice("\n".join(lines) + "\n请选择：", items))


@card_flow.step("month")
async def card_month(answer: str, resident: Resident, data: dict[str, Any], now: datetime) -> Ask:
    """Show the card's price and the wallet; ask to confirm."""
    month = date.fromisoformat(answer)
    price = (await rules_on(int(data["canteen"]), month)).get(RuleKind.CARD, {}).get("price_fen", 0)
    data["month"] = answer
    return Ask("confirm", confirm(
        f"购买{month.month}月月卡，从食堂钱包支付{yuan(price)}（{await wallet_text(resident.id, now)}）。"
        f"{month.month}月的餐都用月卡：已经订好、还没扣款的也改用月卡，冻结的餐费退回钱包。确认购买吗？"))


@card_flow.step("confirm")
async def card_confirmed(answer: bool, resident: Resident, actor: Resident, msg: Inbound, data: dict[str, Any],
                         now: datetime) -> Done:
    """Buy the card from the wallet (once per month, a second 是 returns it)."""
    if not answer:
        return Done("好的，没有购买月卡。")
    canteen = await Canteen.get(id=int(data["canteen"]))
    try:
        card = await buy_card(canteen_id=canteen.id, resident_id=resident.id, month=date.fromisoformat(data["month"]),
                              by_id=actor.id, now=now)
    except Insufficient as exc:
        return Done(exc.message + top_up_hint(canteen, "充值后回复“月卡”再买。"))
    except UserFacingError as exc:
        return Done(exc.message)
    if actor.id != resident.id:
        await record_action(actor_id=actor.id, subject_id=resident.id, action="canteen_card", channel=msg.channel,
                            now=now, detail={"card_id": card.id})
    return Done(f"已购买{card.month.month}月月卡（{yuan(card.price_fen)}）。{await wallet_text(resident.id, now)}\n"
                "回复“订餐”预订，月卡覆盖的餐不再收费。")


# ---------------------------------------------------------------------------- staff: 食堂管理 (the hub)

staff_hub = Flow("canteen_staff", "食堂管理", keywords=("食堂管理", "食堂工作"), roles=STAFF)

STAFF_ITEMS = [("canteen_publish", "发布菜单"), ("canteen_kitchen", "备餐统计"), ("canteen_counter", "就餐核对"),
               ("canteen_topup", "充值"), ("canteen_settings", "食堂设置"), ("canteen_figures", "食堂数据")]


async def _staff_canteen(actor: Resident, data: dict[str, Any]) -> Canteen:
    canteen = await staff_canteen(actor.id)
    if canteen is None:
        raise UserFacingError(NO_STAFF_CANTEEN)
    data["canteen"] = canteen.id
    return canteen


@staff_hub.entry
async def show_staff_hub(actor: Resident, data: dict[str, Any]) -> Ask:
    """The canteen's work, one flow each (就餐 CODE also works as a message)."""
    canteen = await _staff_canteen(actor, data)
    return Ask("pick", choice(f"{canteen.name}·食堂管理（扫码就餐也可以直接回复“就餐 就餐码”）：", STAFF_ITEMS))


@staff_hub.step("pick")
async def staff_hub_picked(answer: str) -> Goto:
    """Start the chosen canteen work."""
    return Goto(answer)


# ---------------------------------------------------------------------------- staff: 发布菜单

publish_flow = Flow("canteen_publish", "发布菜单", keywords=("发布菜单", "发菜单"), roles=STAFF, in_menu=False)


@publish_flow.entry
async def start_publish(actor: Resident, data: dict[str, Any], now: datetime) -> Ask:
    """Which day (today up to a week ahead)."""
    canteen = await _staff_canteen(actor, data)
    today = local_today(now)
    days = [today + timedelta(days=i) for i in range(MENU_DAYS_AHEAD + 1)]
    return Ask("day", choice(f"{canteen.name}：发布哪一天的菜单？", [(d.isoformat(), fmt_day(d)) for d in days]))


@publish_flow.step("day")
async def publish_day(answer: str, data: dict[str, Any]) -> Ask:
    """Which meal (the active ones)."""
    data["day"] = answer
    slots = [s for s in await booking_ops.slots_of(int(data["canteen"])) if s.active]
    slots.sort(key=lambda s: MEALS.index(s.meal) if s.meal in MEALS else 9)
    return Ask("meal", choice(f"{fmt_day(date.fromisoformat(answer))}的哪一餐？",
                              [(s.meal, f"{MEAL_LABELS.get(s.meal, s.meal)}（{s.capacity}份）") for s in slots]))


@publish_flow.step("meal")
async def publish_meal(answer: str, data: dict[str, Any]) -> Ask:
    """Keep the meal; ask the dishes in one message."""
    data["meal"] = answer
    return Ask("dishes", free_text(
        "请一次写出所有菜品，菜与菜之间用“；”分开，饮食标记（软食、低盐、低糖）写在菜名后面，例如：\n"
        "红烧肉 软食；清炒时蔬 低盐；米饭", max_len=DISHES_TEXT_MAX))


@publish_flow.step("dishes")
async def publish_dishes(answer: str, data: dict[str, Any]) -> Ask:
    """Read the dishes and their marks; ask the menu price."""
    data["dishes"] = parse_dishes(answer)
    return Ask("price", free_text("菜单价每份多少元？（例如 15 或 12.5）", max_len=10))


@publish_flow.step("price")
async def publish_price(answer: str, data: dict[str, Any]) -> Ask:
    """Read the price in yuan; show the menu and ask to confirm."""
    data["price"] = parse_fen(answer, max_fen=PRICE_MAX_FEN, what="菜单价")
    day = date.fromisoformat(data["day"])
    return Ask("confirm", confirm(
        f"发布{fmt_day(day)}{MEAL_LABELS.get(data['meal'], data['meal'])}：\n{clip(_dishes(data['dishes']), 160)}\n"
        f"菜单价{yuan(data['price'])}（长者按价格规则付费）。发布后居民即可预订，长期订餐自动预订。确认发布吗？"))


@publish_flow.step("confirm")
async def publish_confirmed(answer: bool, actor: Resident, data: dict[str, Any], now: datetime) -> Done:
    """Publish (again: the dishes are updated) and say how many standing orders were placed."""
    if not answer:
        return Done("好的，菜单没有发布。")
    try:
        menu, placed = await booking_ops.publish_menu(
            canteen_id=int(data["canteen"]), day=date.fromisoformat(data["day"]), meal=str(data["meal"]),
            dishes=list(data["dishes"]), price_fen=int(data["price"]), by_id=actor.id, now=now)
    except UserFacingError as exc:
        return Done(exc.message)
    standing = f"长期订餐自动预订{placed.booked}份"
    if placed.waitlisted:
        standing += f"，{placed.waitlisted}人排入候补"
    if placed.failed:
        standing += f"，{len(placed.failed)}人未能预订（已通知本人）"
    return Done(f"已发布{meal_label(menu)}菜单（{menu.capacity}份，菜单价{yuan(menu.price_fen)}）。"
                f"{standing}。截止预订后会把备餐统计发给您。")


# ---------------------------------------------------------------------------- staff: 备餐统计

kitchen_flow = Flow("canteen_kitchen", "备餐统计", keywords=("备餐统计", "备餐", "厨房统计"), roles=STAFF,
                    in_menu=False)


async def _coming_menus(canteen_id: int, now: datetime, days: int = 1) -> list[Menu]:
    """Today's and the next days' sittings not over yet, soonest first."""
    today = local_today(now)
    menus = await Menu.filter(canteen_id=canteen_id, day__gte=today, day__lte=today + timedelta(days=days),
                              state__not=MenuState.CANCELLED, serve_until_at__gt=now).all()
    menus.sort(key=lambda m: (m.day, MEALS.index(m.meal) if m.meal in MEALS else 9))
    return menus


async def _kitchen_reply(menu_id: int) -> str:
    """The kitchen count; a long list of diners to watch is cut to fit one reply (the printable
    sheet in the mini-program has them all)."""
    text = booking_ops.kitchen_text(await booking_ops.kitchen_count(menu_id))
    if len(text) <= REPLY_MAX_CHARS:
        return text
    tail = "\n……完整名单请在小程序下载备餐单。"
    lines = text.splitlines()
    while lines and len("\n".join(lines)) + len(tail) > REPLY_MAX_CHARS:
        lines.pop()
    return "\n".join(lines) + tail


@kitchen_flow.entry
async def start_kitchen(actor: Resident, data: dict[str, Any], now: datetime) -> Ask | Done:
    """The count of the next sitting, or a choice when several are coming."""
    canteen = await _staff_canteen(actor, data)
    menus = await _coming_menus(canteen.id, now)
    if not menus:
        return Done("今明两天没有已发布的餐次。")
    if len(menus) == 1:
        return Done(await _kitchen_reply(menus[0].id))
    return Ask("menu", choice("看哪一餐的备餐统计？", [(m.id, f"{meal_label(m)}（已订{m.booked}份）") for m in menus]))


@kitchen_flow.step("menu")
async def kitchen_menu(answer: int) -> Done:
    """The count of the chosen sitting."""
    return Done(await _kitchen_reply(answer))


# ---------------------------------------------------------------------------- staff: 就餐 CODE and 就餐核对

serve_flow = Flow("canteen_serve", "就餐", keywords=("就餐", "打餐"), roles=STAFF, takes_argument=True, in_menu=False)
CODE_QUESTION = "请输入就餐码（居民手机上二维码下方的号码）："


async def _serve(actor: Resident, now: datetime, *, code: str | None = None, booking_id: int | None = None) -> Done:
    booking = await booking_ops.serve(code=code, booking_id=booking_id, by_id=actor.id, now=now)
    booking = await _booking(booking.id)
    diner = await Resident.get(id=booking.resident_id)
    return Done(f"已就餐：{diner.name}，{meal_label(booking.menu)}，{MODE_LABELS.get(booking.mode, booking.mode)}"
                f"（就餐码{booking.code}）。")


@serve_flow.entry
async def start_serve(msg: Inbound, actor: Resident, now: datetime) -> Ask | Done:
    """Mark the meal served when the message carries the code; else ask for it."""
    rest = msg.text.strip()
    for word in sorted(serve_flow.keywords, key=len, reverse=True):
        if rest.startswith(word):
            rest = rest[len(word):].strip()
            break
    if rest:
        try:
            return await _serve(actor, now, code=rest)
        except UserFacingError as exc:
            return Ask("code", free_text(CODE_QUESTION, max_len=20), prefix=exc.message + "\n")
    return Ask("code", free_text(CODE_QUESTION, max_len=20))


@serve_flow.step("code")
async def serve_code(answer: str, actor: Resident, now: datetime) -> Done:
    """Mark the meal of this code served."""
    return await _serve(actor, now, code=answer.strip())


counter_flow = Flow("canteen_counter", "就餐核对", keywords=("就餐核对", "按姓名就餐"), roles=STAFF, in_menu=False)


@counter_flow.entry
async def start_counter(actor: Resident, data: dict[str, Any], now: datetime) -> Ask | Done:
    """Today's current sitting: how many served of how many; ask a name."""
    canteen = await _staff_canteen(actor, data)
    menus = [m for m in await _coming_menus(canteen.id, now, days=0) if m.state != MenuState.OPEN]
    if not menus:
        return Done("现在没有正在供餐（已截止预订）的餐次。")
    menu = menus[0]
    data["menu"] = menu.id
    bookings = await booking_ops.menu_bookings(menu.id)
    seated = [b for b in bookings if b.status in (BookingStatus.CHARGED, BookingStatus.BOOKED, BookingStatus.SERVED)]
    served = sum(1 for b in seated if b.status == BookingStatus.SERVED)
    return Ask("name", free_text(f"{meal_label(menu)}：已就餐{served}人，共{len(seated)}人。\n"
                                 "请输入就餐老人的姓名（或其中一个字）：", max_len=20))


@counter_flow.step("name")
async def counter_name(answer: str, data: dict[str, Any]) -> Ask:
    """The diners of the sitting whose names match, not yet served."""
    bookings = await booking_ops.menu_bookings(int(data["menu"]))
    waiting = [b for b in bookings if b.status in (BookingStatus.CHARGED, BookingStatus.BOOKED)]
    diners = await Resident.filter(id__in=[b.resident_id for b in waiting]).prefetch_related("building")
    names = {r.id: r for r in diners}
    matches = [b for b in waiting if answer.strip() in names[b.resident_id].name]
    if not matches:
        raise UserFacingError(f"这一餐没有名字里带“{answer.strip()}”、还没就餐的老人，请换个字再试。")
    return Ask("pick", choice("是哪一位？", [
        (b.id, f"{names[b.resident_id].name} {names[b.resident_id].address()} {MODE_LABELS.get(b.mode, b.mode)}")
        for b in matches[:MATCHES_LISTED]]))


@counter_flow.step("pick")
async def counter_pick(answer: int, actor: Resident, now: datetime) -> Done:
    """Mark the chosen diner's meal served."""
    return await _serve(actor, now, booking_id=answer)


# ---------------------------------------------------------------------------- staff: 充值

topup_flow = Flow("canteen_topup", "食堂充值", keywords=("充值", "食堂充值"), roles=STAFF, in_menu=False)


@topup_flow.entry
async def start_topup(actor: Resident, data: dict[str, Any]) -> Ask:
    """Ask the diner's registered mobile."""
    canteen = await _staff_canteen(actor, data)
    return Ask("mobile", free_text(f"{canteen.name}柜台充值：请输入老人在社区登记的手机号：", max_len=20))


@topup_flow.step("mobile")
async def topup_mobile(answer: str, data: dict[str, Any], now: datetime) -> Ask:
    """Find the diner by mobile; show who it is and the wallet; ask the amount."""
    diner = await Resident.get(id=(await find_recipient(answer)).id).prefetch_related("building")
    data["resident"], data["name"] = diner.id, diner.name
    return Ask("amount", free_text(f"{diner.name}（{diner.address() or '住址未填'}），"
                                   f"{await wallet_text(diner.id, now)}。\n充值多少元？", max_len=12))


@topup_flow.step("amount")
async def topup_amount(answer: str, data: dict[str, Any]) -> Ask:
    """Read the amount in yuan; ask how it was paid."""
    data["amount"] = parse_fen(answer, max_fen=TOPUP_MAX_FEN, what="充值金额")
    return Ask("method", choice("收款方式：", list(PAY_METHOD_LABELS.items())))


@topup_flow.step("method")
async def topup_method(answer: str, data: dict[str, Any]) -> Ask:
    """Keep the method; ask the receipt number."""
    data["method"] = answer
    return Ask("receipt", free_text(f"请输入票据号（{RECEIPT_MAX}个字符以内）：", max_len=RECEIPT_MAX))


@topup_flow.step("receipt")
async def topup_receipt(answer: str, data: dict[str, Any]) -> Ask:
    """Keep the receipt number; ask to confirm."""
    data["receipt"] = "".join(answer.split())
    return Ask("confirm", confirm(
        f"为{data['name']}充值{yuan(int(data['amount']))}（{PAY_METHOD_LABELS.get(data['method'], data['method'])}，"
        f"票据号{data['receipt']}）。请确认已收到款项。确认充值吗？"))


@topup_flow.step("confirm")
async def topup_confirmed(answer: bool, actor: Resident, data: dict[str, Any], now: datetime) -> Done:
    """Record the top-up (the same receipt again changes nothing); the diner is told."""
    if not answer:
        return Done("好的，没有充值。")
    try:
        await top_up(canteen_id=int(data["canteen"]), resident_id=int(data["resident"]), amount_fen=int(data["amount"]),
                     method=str(data["method"]), receipt_no=str(data["receipt"]), by_id=actor.id, now=now)
    except UserFacingError as exc:
        return Done(exc.message)
    return Done(f"充值成功：{data['name']}充值{yuan(int(data['amount']))}，"
                f"现在{await wallet_text(int(data['resident']), now)}。已通知本人。")


# ---------------------------------------------------------------------------- staff: 食堂设置

settings_flow = Flow("canteen_settings", "食堂设置", keywords=("食堂设置",), roles=STAFF, in_menu=False)


async def _settings_text(canteen_id: int, now: datetime) -> str:
    settings = await booking_ops.settings_of(canteen_id)
    lines = []
    for slot in await booking_ops.slots_of(canteen_id):
        state = "" if slot.active else "（停开）"
        before = "前一天" if slot.meal in CUTOFF_DAY_BEFORE else ""
        lines.append(f"{MEAL_LABELS.get(slot.meal, slot.meal)}{state}：{slot.capacity}份，{before}{slot.cutoff}"
                     f"截止预订，{slot.serve_from}-{slot.serve_until}供餐")
    weekdays = settings.closed_weekdays
    lines.append("每周休息：" + ("、".join(f"周{WEEKDAY_NAMES[int(d) - 1]}" for d in weekdays.split(",") if d)
                                   if weekdays else "无"))
    closed = await booking_ops.closed_days(canteen_id, now)
    if closed:
        lines.append("停业日：" + "、".join(fmt_day(c.day) for c in closed[:5]))
    lines.append(f"未就餐：{'照常扣费' if settings.no_show_pays else '退回餐费'}")
    return "\n".join(lines)


@settings_flow.entry
async def show_settings(actor: Resident, data: dict[str, Any], now: datetime) -> Ask:
    """The canteen's meals, closed days and no-show rule, and what to change."""
    canteen = await _staff_canteen(actor, data)
    return Ask("pick", choice(f"{canteen.name}设置：\n{await _settings_text(canteen.id, now)}\n要修改：", [
        ("capacity", "某一餐的份数"), ("cutoff", "某一餐的截止时间"), ("close", "设停业日"), ("reopen", "取消停业日"),
        ("weekdays", "每周休息日"), ("no_show", "未就餐是否扣费")]))


@settings_flow.step("pick")
async def settings_picked(answer: str, data: dict[str, Any], now: datetime) -> Ask:
    """Ask what the chosen change needs."""
    data["what"] = answer
    if answer in ("capacity", "cutoff"):
        return Ask("meal", choice("哪一餐？", [(m, MEAL_LABELS[m]) for m in MEALS]))
    if answer == "close":
        return Ask("close_day", free_text("哪天停业？请写日期，例如 12月25日 或 2026-12-25：", max_len=20))
    if answer == "reopen":
        closed = await booking_ops.closed_days(int(data["canteen"]), now)
        if not closed:
            raise UserFacingError("目前没有设置停业日。")
        return Ask("reopen", choice("取消哪天的停业？", [(c.day.isoformat(), fmt_day(c.day)) for c in closed[:8]]))
    if answer == "weekdays":
        return Ask("weekdays", free_text("每周哪几天休息？例如“六 日”；每天都营业请回复“无”。", max_len=20))
    settings = await booking_ops.settings_of(int(data["canteen"]))
    data["no_show_pays"] = not settings.no_show_pays
    change = "未就餐照常扣费" if data["no_show_pays"] else "未就餐退回餐费"
    return Ask("confirm", confirm(f"改为“{change}”（对以后结束的餐次生效）。确认吗？"))


@settings_flow.step("meal")
async def settings_meal(answer: str, data: dict[str, Any]) -> Ask:
    """Keep the meal; ask the new capacity or cut-off."""
    data["meal"] = answer
    if data["what"] == "capacity":
        return Ask("value", free_text(f"{MEAL_LABELS[answer]}每餐最多多少份？", max_len=6))
    return Ask("value", free_text(f"{MEAL_LABELS[answer]}几点截止预订？（24小时制，例如 09:30）", max_len=6))


@settings_flow.step("value")
async def settings_value(answer: str, actor: Resident, data: dict[str, Any], now: datetime) -> Done:
    """Save the meal's capacity or cut-off (for menus published afterwards)."""
    text = answer.strip().replace("：", ":")
    canteen_id, meal = int(data["canteen"]), str(data["meal"])
    if data["what"] == "capacity":
        if not text.isascii() or not text.isdigit():
            raise UserFacingError("份数请填整数。")
        await booking_ops.set_slot(canteen_id=canteen_id, meal=meal, by_id=actor.id, now=now, capacity=int(text))
    else:
        await booking_ops.set_slot(canteen_id=canteen_id, meal=meal, by_id=actor.id, now=now, cutoff=text)
    return Done(f"已保存（对以后发布的菜单生效）。\n{await _settings_text(canteen_id, now)}")


def _parse_day(text: str, today: date) -> date:
    cleaned = text.strip().replace("号", "日")
    try:
        if "月" in cleaned:
            month, _, rest = cleaned.partition("月")
            day = date(today.year, int(month), int(rest.removesuffix("日")))
            return day if day >= today else day.replace(year=today.year + 1)
        return date.fromisoformat(cleaned.replace("/", "-"))
    except ValueError:
        raise UserFacingError("日期看不懂，请写成 12月25日 或 2026-12-25。") from None


@settings_flow.step("close_day")
async def settings_close_day(answer: str, data: dict[str, Any], now: datetime) -> Ask:
    """Read the date; ask the reason residents will read."""
    day = _parse_day(answer, local_today(now))
    data["day"] = day.isoformat()
    return Ask("close_reason", free_text(f"{fmt_day(day)}停业的原因（居民会看到，例如 设备检修）：", max_len=60))


@settings_flow.step("close_reason")
async def settings_close_reason(answer: str, actor: Resident, data: dict[str, Any], now: datetime) -> Done:
    """Close the day (open menus of that day are withdrawn and their diners told)."""
    day = date.fromisoformat(data["day"])
    await booking_ops.close_day(canteen_id=int(data["canteen"]), day=day, reason=answer.strip(), by_id=actor.id,
                                now=now)
    return Done(f"已设{fmt_day(day)}停业：{answer.strip()}。")


@settings_flow.step("reopen")
async def settings_reopen(answer: str, actor: Resident, data: dict[str, Any], now: datetime) -> Done:
    """Open a closed day again."""
    day = date.fromisoformat(answer)
    await booking_ops.reopen_day(canteen_id=int(data["canteen"]), day=day, by_id=actor.id, now=now)
    return Done(f"已取消{fmt_day(day)}的停业，可以发布这天的菜单了。")


@settings_flow.step("weekdays")
async def settings_weekdays(answer: str, actor: Resident, data: dict[str, Any], now: datetime) -> Done:
    """Save the weekly closed days (六 日, or 无)."""
    text = answer.strip()
    days: list[int] = []
    if text not in NONE_WORDS:
        for ch in text.replace("周", "").replace("星期", "").replace("天", "日"):
            if ch in "，, 、":
                continue
            if ch not in WEEKDAY_NAMES:
                raise UserFacingError("请写星期几，例如“六 日”；每天都营业请回复“无”。")
            days.append(WEEKDAY_NAMES.index(ch) + 1)
    await booking_ops.update_settings(canteen_id=int(data["canteen"]), by_id=actor.id, now=now,
                                      closed_weekdays=sorted(set(days)))
    return Done(f"已保存。\n{await _settings_text(int(data['canteen']), now)}")


@settings_flow.step("confirm")
async def settings_confirmed(answer: bool, actor: Resident, data: dict[str, Any], now: datetime) -> Done:
    """Save the no-show rule."""
    if not answer:
        return Done("好的，没有修改。")
    await booking_ops.update_settings(canteen_id=int(data["canteen"]), by_id=actor.id, now=now,
                                      no_show_pays=bool(data["no_show_pays"]))
    return Done(f"已保存。\n{await _settings_text(int(data['canteen']), now)}")


# ---------------------------------------------------------------------------- staff: 食堂数据

figures_flow = Flow("canteen_figures", "食堂数据", keywords=("食堂数据",), roles=STAFF, in_menu=False)


@figures_flow.entry
async def show_canteen_figures(actor: Resident, data: dict[str, Any], now: datetime) -> Done:
    """This month's figures so far (the spreadsheet is in the mini-program)."""
    canteen = await _staff_canteen(actor, data)
    today = local_today(now)
    figs = await canteen_figures(canteen.id, today.replace(day=1), today, CONTEXT.tz)
    return Done(figures_text(figs) + "\n明细表格请在小程序下载。")


FLOWS: list[Flow] = [hub, book_flow, mine_flow, offer_flow, standing_flow, diet_flow, card_flow,
                     staff_hub, publish_flow, kitchen_flow, serve_flow, counter_flow, topup_flow, settings_flow,
                     figures_flow]
"""The flows, one router each; this list orders them."""
