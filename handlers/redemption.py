"""兑换: the catalogue, vouchers and donations in chat and through /api/v1.

In chat: 兑换 (what the balance buys, pick, confirm, the voucher and its QR code), 我的兑换券
(unused vouchers: the QR code again, or cancel), 核销 (a partner's clerk, or community and canteen
staff for the community's own items, marks a voucher used) and 转赠 (give points to another
resident, found by their registered mobile). Catalogue management is through the API only.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field
from redis.asyncio import Redis

from bot.api import (
    INT_MAX,
    ApiError,
    ApiRequest,
    ApiRouter,
    FileBody,
    Query,
    Strict,
    idempotency_key,
    invalid,
    not_found,
)
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
    choice,
    confirm,
    free_text,
)
from bot.store import key as store_key
from models import media
from models.errors import Forbidden, UserFacingError
from models.ledger import KeyReused, balance, points_of
from models.outbox import Priority, enqueue
from models.proxies import record_action
from models.redemption import (
    DESCRIPTION_MAX,
    DONATION_LABELS,
    DONATION_MAX,
    ITEM_KIND_LABELS,
    LIMIT_MAX,
    NAME_MAX,
    NOTE_MAX,
    PRICE_MAX,
    STATUS_LABELS,
    STOCK_MAX,
    VALID_DAYS_MAX,
    CatalogueItem,
    Donation,
    Voucher,
    cancel_donation,
    cancel_voucher,
    catalogue_of,
    code_png,
    confirm_donation,
    create_donation,
    create_item,
    day_zh,
    find_recipient,
    held_count,
    managed_items,
    mask_name,
    redeem,
    staff_community,
    takes_vouchers,
    update_item,
    use_voucher,
    valid_until,
    voucher_of,
    voucher_to_take,
    vouchers_of,
    where_of,
)
from models.residents import Resident
from models.roles import Role

ITEMS_LISTED = 8
VOUCHERS_LISTED = 8
LISTING_HEADROOM = 80  # a refusal such as “…需要120积分，您现有100积分，还差20分。” goes before a list asked again
LOOKUPS_PER_DAY = 10  # recipients looked up by mobile, per person per day (chat and API together)


async def _points(resident_id: int, now: datetime) -> int:
    return await balance(await points_of(resident_id, now))


async def _looked_up(store: Redis, actor_id: int) -> bool:
    """Count one look-up of a recipient by mobile; False when today's are used up."""
    counter = store_key("redemption", "lookups", str(actor_id))
    count = await store.incr(counter)
    if count == 1:
        await store.expire(counter, 24 * 3600)
    return int(count) <= LOOKUPS_PER_DAY


async def voucher_card(voucher: Voucher) -> str:
    """What a voucher is, where and until when, as its owner reads it."""
    item = voucher.item
    return (f"{item.name}（{ITEM_KIND_LABELS.get(item.kind, item.kind)}）\n券码：{voucher.code}\n"
            f"使用地点：{await where_of(item)}\n有效期至：{day_zh(valid_until(voucher))}")


async def send_qr(voucher: Voucher, openid: str, now: datetime) -> None:
    """The voucher's QR code as an image message (the outbox uploads our stored copy to WeChat)."""
    stored = await media.store(code_png(voucher.code), now)
    await enqueue(openid=openid, kind="image", payload=media.image_payload({"stored": stored}, now),
                  idempotency_key=f"voucher:{voucher.id}:qr:{openid}:{now.isoformat()}", now=now,
                  priority=Priority.REPLY)


def _listing(text: str, options: list[tuple[Any, str]], last: tuple[Any, str] | None = None, *,
             limit: int = ITEMS_LISTED) -> Question:
    """A numbered list of at most ``limit`` options, short enough to leave room for a refusal said
    before it when it is asked again: the options left out are counted in the text."""
    budget = REPLY_MAX_CHARS - LISTING_HEADROOM
    tail = [last] if last else []
    shown = options[:limit]
    while True:
        left = len(options) - len(shown)
        question = choice(text + (f"（另有{left}项，请在小程序查看）" if left else "") + "：", shown + tail)
        if len(question.render()) <= budget or len(shown) <= 1:
            return question
        shown.pop()


def _for(resident: Resident, actor: Resident) -> str:
    return f"（为{resident.name}办理）\n" if resident.id != actor.id else ""


# ---------------------------------------------------------------------------- 兑换: redeem in chat

redeem_flow = Flow("redeem", "积分兑换", keywords=("兑换", "积分兑换", "兑换商品"))


@redeem_flow.entry
async def start_redeem(resident: Resident, actor: Resident, data: dict[str, Any], now: datetime) -> Ask | Done:
    """The balance and what it buys: affordable items first, with price and stock."""
    points = await _points(resident.id, now)
    items = await catalogue_of(resident.community_id)  # type: ignore[attr-defined]
    head = _for(resident, actor) + f"您现有{points}积分。"
    if not items:
        return Done(head + "本社区暂时没有可兑换的项目。")
    items.sort(key=lambda i: (not (i.stock > 0 and i.price <= points), i.price, i.id))
    options: list[tuple[Any, str]] = []
    for item in items:
        state = "已兑完" if item.stock <= 0 else "积分不足" if item.price > points else f"剩{item.stock}"
        options.append((item.id, f"{item.name} {item.price}分（{state}）"))
    data["started"] = now.isoformat()
    return Ask("pick", _listing(head + "可兑换", options, ("mine", "我的兑换券")))


@redeem_flow.step("pick")
async def picked_item(answer: Any, resident: Resident, data: dict[str, Any], now: datetime) -> Ask | Goto:
    """Check the pick (stock, limit, balance) and ask to confirm with the balance after."""
    if answer == "mine":
        return Goto("my_vouchers")
    item = await CatalogueItem.get_or_none(id=answer, active=True)
    if item is None:
        raise UserFacingError("这个项目暂停兑换了，请选其他项目。")
    if item.stock <= 0:
        raise UserFacingError(f"“{item.name}”已经兑完了，请选其他项目。")
    if item.per_person_limit and await held_count(resident.id, item.id) >= item.per_person_limit:
        raise UserFacingError(f"“{item.name}”每人限兑{item.per_person_limit}份，您已兑满，请选其他项目。")
    points = await _points(resident.id, now)
    if item.price > points:
        raise UserFacingError(f"“{item.name}”需要{item.price}积分，您现有{points}积分，还差{item.price - points}分。")
    data["item"] = item.id
    kind = ITEM_KIND_LABELS.get(item.kind, item.kind)
    about = f"{kind}，在{await where_of(item)}使用，兑换后{item.valid_days}天内有效。\n"
    question = f"兑换“{item.name}”需要{item.price}积分，兑换后剩余{points - item.price}积分。确认吗？"
    return Ask("confirm", confirm(question), prefix=about)


@redeem_flow.step("confirm")
async def confirmed_redeem(answer: bool, resident: Resident, actor: Resident, msg: Inbound, data: dict[str, Any],
                           now: datetime) -> Done:
    """Redeem (once for this conversation, however often 是 arrives), reply with the voucher and
    send its QR code."""
    if not answer:
        return Done("好的，没有兑换。回复“兑换”可以重新选择。")
    try:
        voucher = await redeem(resident.id, int(data["item"]), key=f"chat:{actor.id}:{data['started']}:{data['item']}",
                               now=now, actor_id=actor.id)
    except UserFacingError as exc:
        return Done(exc.message)
    voucher = await Voucher.get(id=voucher.id).prefetch_related("item")
    if actor.id != resident.id:
        await record_action(actor_id=actor.id, subject_id=resident.id, action="redeem", channel=msg.channel, now=now,
                            detail={"voucher_id": voucher.id})
    await send_qr(voucher, msg.openid, now)
    left = await _points(resident.id, now)
    return Done(f"兑换成功！\n{await voucher_card(voucher)}\n用去{voucher.price}积分，剩余{left}积分。\n"
                "二维码随后发给您，使用时出示二维码或报券码。不需要了可回复“我的兑换券”取消，积分退回。")


# ---------------------------------------------------------------------------- 我的兑换券

mine_flow = Flow("my_vouchers", "我的兑换券", keywords=("我的兑换券", "兑换券", "我的券"))


@mine_flow.entry
async def list_vouchers(resident: Resident, actor: Resident) -> Ask | Done:
    """The unused vouchers, soonest to expire first."""
    vouchers = await vouchers_of(resident.id, unused_only=True)
    if not vouchers:
        return Done(_for(resident, actor) + "您没有未使用的兑换券。回复“兑换”用积分兑换。")
    options: list[tuple[Any, str]] = [(v.id, f"{v.item.name} 券码{v.code} 至{day_zh(valid_until(v))}")
                                      for v in vouchers]
    return Ask("pick", _listing(_for(resident, actor) + "您未使用的兑换券", options, limit=VOUCHERS_LISTED))


@mine_flow.step("pick")
async def picked_voucher(answer: int, actor: Resident, data: dict[str, Any]) -> Ask:
    """One voucher: its card, then its QR code again or cancel."""
    voucher = await voucher_of(answer, actor.id)
    data["voucher"] = voucher.id
    return Ask("action", choice(await voucher_card(voucher) + "\n需要：",
                                [("qr", "发送二维码"), ("cancel", f"取消这张券（退回{voucher.price}积分）")]))


@mine_flow.step("action")
async def voucher_action(answer: str, actor: Resident, msg: Inbound, data: dict[str, Any], now: datetime) -> Ask | Done:
    """Send the QR code, or ask to confirm the cancellation."""
    voucher = await voucher_of(int(data["voucher"]), actor.id)
    if answer == "qr":
        await send_qr(voucher, msg.openid, now)
        return Done(f"“{voucher.item.name}”的二维码正在发给您（券码{voucher.code}）。")
    return Ask("cancel", confirm(f"取消“{voucher.item.name}”（券码{voucher.code}）后，{voucher.price}积分退回账户，"
                                 "这张券不能再用。确认取消吗？"))


@mine_flow.step("cancel")
async def confirmed_cancel(answer: bool, resident: Resident, actor: Resident, msg: Inbound, data: dict[str, Any],
                           now: datetime) -> Done:
    """Cancel the voucher: points and stock return."""
    if not answer:
        return Done("好的，兑换券保留。")
    try:
        voucher = await cancel_voucher(int(data["voucher"]), by_id=actor.id, now=now)
    except UserFacingError as exc:
        return Done(exc.message)
    if actor.id != voucher.resident_id:
        await record_action(actor_id=actor.id, subject_id=voucher.resident_id, action="cancel_voucher",
                            channel=msg.channel, now=now, detail={"voucher_id": voucher.id})
    return Done(f"已取消“{voucher.item.name}”，{voucher.price}积分已退回，现有{await _points(resident.id, now)}积分。")


# ---------------------------------------------------------------------------- 核销: the partner marks it used

TAKERS = (Role.SHOP, Role.COMMUNITY_STAFF, Role.CANTEEN_STAFF)
use_flow = Flow("use_voucher", "核销兑换券", keywords=("核销", "核销兑换券"), roles=TAKERS,
                takes_argument=True)
CODE_QUESTION = "请输入兑换券上的8位券码（小程序里可以直接扫码核销）："


async def _show_for_use(code: str, actor: Resident, data: dict[str, Any], now: datetime) -> Ask:
    voucher = await voucher_to_take(code, by_id=actor.id, now=now)
    data["code"] = voucher.code
    return Ask("confirm", confirm(
        f"{voucher.item.name}（{ITEM_KIND_LABELS.get(voucher.item.kind, voucher.item.kind)}）\n"
        f"持券人：{mask_name(voucher.resident.name)}\n券码：{voucher.code}\n有效期至：{day_zh(valid_until(voucher))}\n"
        "确认核销吗？"))


@use_flow.entry
async def start_use(msg: Inbound, actor: Resident, data: dict[str, Any], now: datetime) -> Ask | Done:
    """Ask the code (or take it from “核销 ABCD2345”, when the message carries one)."""
    if not await takes_vouchers(actor.id):  # pragma: no cover - the flow's roles gate it first
        return Done("该功能仅限合作商户和社区工作人员使用。")
    rest = msg.text.strip()
    for word in sorted(use_flow.keywords, key=len, reverse=True):
        if rest.startswith(word):
            rest = rest[len(word):]
            break
    if rest.strip():
        try:
            return await _show_for_use(rest, actor, data, now)
        except UserFacingError as exc:
            return Ask("code", free_text(CODE_QUESTION, max_len=20), prefix=exc.message + "\n")
    return Ask("code", free_text(CODE_QUESTION, max_len=20))


@use_flow.step("code")
async def got_code(answer: str, actor: Resident, data: dict[str, Any], now: datetime) -> Ask:
    """Show what the voucher is and whose (masked), ask to confirm."""
    return await _show_for_use(answer, actor, data, now)


@use_flow.step("confirm")
async def confirmed_use(answer: bool, actor: Resident, data: dict[str, Any], now: datetime) -> Done:
    """Mark it used; the resident is told."""
    if not answer:
        return Done("已取消，这张券没有核销。")
    try:
        voucher = await use_voucher(str(data["code"]), by_id=actor.id, now=now)
    except UserFacingError as exc:
        return Done(exc.message)
    return Done(f"核销成功：{voucher.item.name}，持券人{mask_name(voucher.resident.name)}，券码{voucher.code}。")


# ---------------------------------------------------------------------------- 转赠: give points

donate_flow = Flow("donate", "积分转赠", keywords=("转赠", "积分转赠", "赠送积分"), as_self=True)


@donate_flow.entry
async def start_donate(actor: Resident, data: dict[str, Any], now: datetime) -> Ask | Done:
    """The donor's balance, then the recipient's registered mobile."""
    points = await _points(actor.id, now)
    if points <= 0:
        return Done("您目前没有可转赠的积分。参加志愿服务可以获得积分，回复“活动”看看。")
    data["started"] = now.isoformat()
    return Ask("mobile", free_text(f"您有{points}积分。请输入对方在社区登记的手机号：", max_len=20))


@donate_flow.step("mobile")
async def got_mobile(answer: str, actor: Resident, engine: Engine, data: dict[str, Any], now: datetime) -> Ask | Done:
    """Find the recipient (a few look-ups a day) and show their masked name."""
    if not await _looked_up(engine.store, actor.id):
        return Done("今天查询的次数较多，请明天再试，或请社区工作人员帮您办理。")
    recipient = await find_recipient(answer)
    if recipient.id == actor.id:
        raise UserFacingError("这是您本人的手机号，请输入对方的手机号。")
    data["recipient"], data["masked"] = recipient.id, mask_name(recipient.name)
    points = await _points(actor.id, now)
    return Ask("amount", free_text(f"对方：{data['masked']}。转赠多少积分？（最多{points}分）", max_len=8))


@donate_flow.step("amount")
async def got_amount(answer: str, actor: Resident, data: dict[str, Any], now: datetime) -> Ask:
    """A whole number of points, at most the balance."""
    text = answer.strip().removesuffix("分").removesuffix("积分").strip()
    points = await _points(actor.id, now)
    if not text.isascii() or not text.isdigit() or not 1 <= int(text) <= points:
        raise UserFacingError(f"请输入1到{points}之间的整数。")
    data["amount"] = int(text)
    return Ask("note", free_text(f"想对{data['masked']}说点什么？（{NOTE_MAX}字以内，不需要请回复“跳过”）",
                                 max_len=NOTE_MAX))


@donate_flow.step("note")
async def got_note(answer: str, actor: Resident, data: dict[str, Any], now: datetime) -> Ask:
    """Write the donation down, pending; ask the donor to confirm."""
    note = "" if answer.strip() in SKIP_WORDS else answer.strip()
    donation = await create_donation(
        actor.id, int(data["recipient"]), int(data["amount"]), note=note, now=now,
        key=f"chat:{actor.id}:{data['started']}:{data['recipient']}:{data['amount']}")
    data["donation"] = donation.id
    return Ask("confirm", confirm(f"确认把{donation.amount}积分转赠给{data['masked']}吗？转赠后不能撤回。"))


@donate_flow.step("confirm")
async def confirmed_donation(answer: bool, actor: Resident, data: dict[str, Any], now: datetime) -> Done:
    """Move the points (or drop the donation)."""
    try:
        if not answer:
            await cancel_donation(int(data["donation"]), donor_id=actor.id, now=now)
            return Done("已取消转赠，积分没有变化。")
        donation = await confirm_donation(int(data["donation"]), donor_id=actor.id, now=now)
    except UserFacingError as exc:
        return Done(exc.message)
    left = await _points(actor.id, now)
    return Done(f"已把{donation.amount}积分转赠给{data['masked']}，对方会收到通知。您还有{left}积分。")


FLOWS: list[Flow] = [redeem_flow, mine_flow, use_flow, donate_flow]


# ---------------------------------------------------------------------------- the API

api = ApiRouter("redemption")

Id = Annotated[int, Field(ge=1, le=INT_MAX)]
KindCode = Literal["goods", "service", "meal"]
IDEMPOTENCY_DOC = ("Send an Idempotency-Key header (1 to 64 visible ASCII characters): a retry with the same key "
                   "returns the first result instead of a second one (422 if the key was used for something else).")


class ItemOut(BaseModel):
    id: int
    community_id: int
    shop_id: int | None
    kind: str = Field(description="goods 商品 | service 服务 | meal 助餐券 (a canteen meal voucher, points only)")
    kind_label: str
    name: str
    description: str
    price: int = Field(description="points")
    stock: int = Field(description="left to redeem")
    per_person_limit: int = Field(description="vouchers of it one member may hold or have used; 0: no limit")
    valid_days: int = Field(description="a voucher is valid to the end of the day this many days after its issue")
    active: bool
    where: str = Field(description="where the voucher is used: the shop, the canteen or the community office")
    affordable: bool | None = Field(default=None, description="in stock and within the balance (member listing)")


class CatalogueOut(BaseModel):
    balance: int | None = Field(description="the points of the member listed for (none when managing)")
    items: list[ItemOut]


class CatalogueQuery(Query):
    manage: bool = Field(default=False, description="the items the caller manages (community staff: all of their "
                                                    "community's, active or not) or takes vouchers of (a shop's "
                                                    "clerk: the shop's)")
    for_resident_id: Id | None = Field(default=None, description="a family proxy: what an elder can redeem")


class ItemIn(Strict):
    community_id: Id | None = Field(default=None, description="default: the caller's own (community staff)")
    shop_id: Id | None = Field(default=None, description="a partner shop of the community; none: its own item")
    kind: KindCode = Field(description="goods | service | meal")
    name: str = Field(min_length=1, max_length=NAME_MAX)
    description: str = Field(default="", max_length=DESCRIPTION_MAX)
    price: int = Field(ge=1, le=PRICE_MAX, description="points")
    stock: int = Field(ge=0, le=STOCK_MAX)
    per_person_limit: int = Field(default=0, ge=0, le=LIMIT_MAX, description="0: no limit")
    valid_days: int = Field(ge=1, le=VALID_DAYS_MAX)


class ItemPatch(Strict):
    name: str | None = Field(default=None, min_length=1, max_length=NAME_MAX)
    description: str | None = Field(default=None, max_length=DESCRIPTION_MAX)
    price: int | None = Field(default=None, ge=1, le=PRICE_MAX, description="for later redemptions only")
    stock: int | None = Field(default=None, ge=0, le=STOCK_MAX, description="the new number left to redeem")
    per_person_limit: int | None = Field(default=None, ge=0, le=LIMIT_MAX)
    valid_days: int | None = Field(default=None, ge=1, le=VALID_DAYS_MAX, description="for later redemptions only")
    active: bool | None = None


class RedeemIn(Strict):
    item_id: Id
    for_resident_id: Id | None = Field(default=None, description="a family proxy redeeming an elder's points")


class VoucherOut(BaseModel):
    id: int
    code: str = Field(description="8 characters, what the partner types or scans")
    resident_id: int
    item_id: int
    name: str
    kind: str
    kind_label: str
    where: str
    price: int = Field(description="points paid")
    status: str = Field(description="issued (unused) | used | cancelled | expired")
    status_label: str
    issued_at: str
    expires_at: str
    valid_until: str = Field(description="the last day it may be used (YYYY-MM-DD, community time)")
    closed_at: str | None = Field(description="when it was used, cancelled or expired")
    qr_url: str = Field(description="GET this path below /api/v1 for the QR code (PNG)")


class VoucherList(BaseModel):
    items: list[VoucherOut]


class VouchersQuery(Query):
    status: Literal["unused", "all"] = Field(default="all", description="unused: only those still to be used")
    for_resident_id: Id | None = Field(default=None, description="a family proxy: an elder's vouchers")


class CodeIn(Strict):
    code: str = Field(min_length=4, max_length=20, description="the voucher's code, as scanned or typed")


class TakeOut(BaseModel):
    """A voucher as the partner sees it: what it is and whose (masked name)."""

    id: int
    code: str
    name: str
    kind_label: str
    where: str
    holder: str = Field(description="the owner's name, masked (王*兰)")
    price: int
    status: str
    status_label: str
    valid_until: str
    closed_at: str | None


class DonationIn(Strict):
    recipient_mobile: str = Field(min_length=5, max_length=20, description="the recipient's registered mobile")
    amount: int = Field(ge=1, le=DONATION_MAX, description="points")
    note: str = Field(default="", max_length=NOTE_MAX)


class DonationOut(BaseModel):
    id: int
    recipient: str = Field(description="the recipient's name, masked (王*兰)")
    amount: int
    note: str
    status: str = Field(description="pending (confirm within 10 minutes) | done | cancelled")
    status_label: str
    created_at: str
    expires_at: str = Field(description="a pending donation not confirmed by then lapses")
    confirmed_at: str | None
    balance: int = Field(description="the donor's points now")


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None




def _key(req: ApiRequest, actor: Resident) -> str:
    """The request's idempotency key, scoped to the caller (a fresh one without the header)."""
    header = idempotency_key(req.http)
    return f"api:{actor.id}:{header or uuid.uuid4().hex}"


async def _item_out(item: CatalogueItem, points: int | None = None) -> ItemOut:
    return ItemOut(id=item.id, community_id=item.community_id, shop_id=item.shop_id, kind=item.kind,
                   kind_label=ITEM_KIND_LABELS.get(item.kind, item.kind), name=item.name, description=item.description,
                   price=item.price, stock=item.stock, per_person_limit=item.per_person_limit,
                   valid_days=item.valid_days, active=item.active, where=await where_of(item),
                   affordable=None if points is None else item.stock > 0 and item.price <= points)


async def _voucher_out(voucher: Voucher) -> VoucherOut:
    item = voucher.item
    return VoucherOut(id=voucher.id, code=voucher.code, resident_id=voucher.resident_id, item_id=item.id,
                      name=item.name, kind=item.kind, kind_label=ITEM_KIND_LABELS.get(item.kind, item.kind),
                      where=await where_of(item), price=voucher.price, status=voucher.status,
                      status_label=STATUS_LABELS.get(voucher.status, voucher.status),
                      issued_at=voucher.issued_at.isoformat(), expires_at=voucher.expires_at.isoformat(),
                      valid_until=valid_until(voucher).isoformat(), closed_at=_iso(voucher.closed_at),
                      qr_url=f"/vouchers/{voucher.id}/qr")


async def _take_out(voucher: Voucher) -> TakeOut:
    item = voucher.item
    return TakeOut(id=voucher.id, code=voucher.code, name=item.name,
                   kind_label=ITEM_KIND_LABELS.get(item.kind, item.kind), where=await where_of(item),
                   holder=mask_name(voucher.resident.name), price=voucher.price, status=voucher.status,
                   status_label=STATUS_LABELS.get(voucher.status, voucher.status),
                   valid_until=valid_until(voucher).isoformat(), closed_at=_iso(voucher.closed_at))


async def _donation_out(donation: Donation, now: datetime) -> DonationOut:
    recipient = await Resident.get(id=donation.recipient_id)
    return DonationOut(id=donation.id, recipient=mask_name(recipient.name), amount=donation.amount, note=donation.note,
                       status=donation.status, status_label=DONATION_LABELS.get(donation.status, donation.status),
                       created_at=donation.created_at.isoformat(), expires_at=donation.expires_at.isoformat(),
                       confirmed_at=_iso(donation.confirmed_at), balance=await _points(donation.donor_id, now))


# -- the catalogue


@api.route("GET", "/catalogue", summary="What points buy (兑换目录)", query=CatalogueQuery, response=CatalogueOut,
           errors=(404, 409))
async def get_catalogue(req: ApiRequest) -> CatalogueOut:
    """The active items of the member's community with the member's balance, what they can afford
    first; with manage=true, the items the caller manages or takes vouchers of, active or not."""
    q: CatalogueQuery = req.query
    if q.manage:
        actor = await req.bound_actor()
        return CatalogueOut(balance=None, items=[await _item_out(i) for i in await managed_items(actor.id)])
    _, person = await req.acting_for(q.for_resident_id)
    points = await _points(person.id, req.now)
    items = await catalogue_of(person.community_id)  # type: ignore[attr-defined]
    items.sort(key=lambda i: (not (i.stock > 0 and i.price <= points), i.price, i.id))
    return CatalogueOut(balance=points, items=[await _item_out(i, points) for i in items])


@api.route("POST", "/catalogue", summary="Add a catalogue item (community staff)", body=ItemIn, response=ItemOut,
           status=201, errors=(404, 409))
async def post_catalogue(req: ApiRequest) -> ItemOut:
    """A new item of the caller's community (or community_id, which they must be staff of): goods or a
    service at a partner shop (shop_id), or the community's own (a service, a canteen meal voucher)."""
    actor = await req.bound_actor()
    body: ItemIn = req.body
    community_id = body.community_id or await staff_community(actor.id)
    if community_id is None:
        raise not_found()
    try:
        item = await create_item(community_id=community_id, by_id=actor.id, kind=body.kind, name=body.name,
                                 description=body.description, price=body.price, stock=body.stock,
                                 per_person_limit=body.per_person_limit, valid_days=body.valid_days,
                                 shop_id=body.shop_id, now=req.now)
    except Forbidden:
        raise not_found() from None
    return await _item_out(item)


@api.route("PATCH", "/catalogue/{item_id}", summary="Change a catalogue item (community staff)", body=ItemPatch,
           response=ItemOut, errors=(409,))
async def patch_catalogue(req: ApiRequest) -> ItemOut:
    """Name, description, price, stock, limit, validity or active. A new price or validity applies to
    later redemptions; vouchers already issued keep theirs."""
    actor = await req.bound_actor()
    body: ItemPatch = req.body
    changes = {k: v for k, v in body.model_dump(exclude_unset=True).items() if v is not None}
    return await _item_out(await update_item(req.path["item_id"], by_id=actor.id, changes=changes))


# -- redeeming and vouchers


@api.route("POST", "/redemptions", summary="Redeem points for an item (兑换)", body=RedeemIn, response=VoucherOut,
           status=201, errors=(404, 409))
async def post_redemption(req: ApiRequest) -> VoucherOut:
    """Takes one of the stock and the item's points at once and issues a voucher (a code and a QR
    code). 409 when sold out, over the per-person limit, paused or the points do not reach. """
    body: RedeemIn = req.body
    actor, person = await req.acting_for(body.for_resident_id)
    key = _key(req, actor)
    try:
        voucher = await redeem(person.id, body.item_id, key=key, now=req.now, actor_id=actor.id)
    except KeyReused:
        raise invalid("header.Idempotency-Key", "was used for a different redemption") from None
    if actor.id != person.id:
        await record_action(actor_id=actor.id, subject_id=person.id, action="redeem", channel="api", now=req.now,
                            detail={"voucher_id": voucher.id})
    return await _voucher_out(await Voucher.get(id=voucher.id).prefetch_related("item"))


@api.route("GET", "/vouchers", summary="My vouchers (我的兑换券)", query=VouchersQuery, response=VoucherList,
           errors=(404, 409))
async def get_vouchers(req: ApiRequest) -> VoucherList:
    """Unused vouchers first (soonest to expire first), then the latest used, cancelled or expired."""
    q: VouchersQuery = req.query
    _, person = await req.acting_for(q.for_resident_id)
    vouchers = await vouchers_of(person.id, unused_only=q.status == "unused")
    return VoucherList(items=[await _voucher_out(v) for v in vouchers])


# registered before /vouchers/{voucher_id}
@api.route("POST", "/vouchers/check", summary="Look a voucher up by its code before marking it used (partner)",
           body=CodeIn, response=TakeOut, errors=(404, 409))
async def check_voucher(req: ApiRequest) -> TakeOut:
    """For the partner's clerk (a shop's item) or community staff (the community's own items; canteen
    staff for meal vouchers): what it is and whose; 409 says when it was used, cancelled or expired;
    404 for a code that is not theirs to take."""
    actor = await req.bound_actor()
    body: CodeIn = req.body
    return await _take_out(await voucher_to_take(body.code, by_id=actor.id, now=req.now))


@api.route("POST", "/vouchers/use", summary="Mark a voucher used (核销, partner)", body=CodeIn, response=TakeOut,
           errors=(404, 409))
async def post_use(req: ApiRequest) -> TakeOut:
    """The clerk scanned (the QR code carries the code) or typed it. A second use is refused (409)
    with the time of the first; the resident is told in chat."""
    actor = await req.bound_actor()
    body: CodeIn = req.body
    voucher = await use_voucher(body.code, by_id=actor.id, now=req.now)
    return await _take_out(voucher)


@api.route("GET", "/vouchers/{voucher_id}", summary="One voucher", response=VoucherOut, errors=(409,))
async def get_voucher(req: ApiRequest) -> VoucherOut:
    """Its owner, a family member acting for them, or the community's staff; 404 for anyone else."""
    actor = await req.bound_actor()
    return await _voucher_out(await voucher_of(req.path["voucher_id"], actor.id))


@api.route("GET", "/vouchers/{voucher_id}/qr", summary="A voucher's QR code (PNG)", produces="image/png",
           errors=(409,))
async def get_voucher_qr(req: ApiRequest) -> FileBody:
    """The QR code the partner scans; it carries the voucher's code. Seen as GET /vouchers/{voucher_id}."""
    actor = await req.bound_actor()
    voucher = await voucher_of(req.path["voucher_id"], actor.id)
    return FileBody(code_png(voucher.code), f"voucher-{voucher.code}.png", inline=True)


@api.route("POST", "/vouchers/{voucher_id}/cancel", summary="Cancel an unused voucher", response=VoucherOut,
           errors=(409,))
async def post_cancel(req: ApiRequest) -> VoucherOut:
    """Its points and stock return, once (cancelling again answers the cancelled voucher); a used or
    expired voucher answers 409."""
    actor = await req.bound_actor()
    voucher = await cancel_voucher(req.path["voucher_id"], by_id=actor.id, now=req.now)
    if actor.id != voucher.resident_id:
        await record_action(actor_id=actor.id, subject_id=voucher.resident_id, action="cancel_voucher",
                            channel="api", now=req.now, detail={"voucher_id": voucher.id})
    return await _voucher_out(voucher)


# -- donations


@api.route("POST", "/donations", summary="Give points to another resident (转赠), step 1", body=DonationIn,
           response=DonationOut, status=201, errors=(404, 409))
async def post_donation(req: ApiRequest) -> DonationOut:
    """Finds the recipient by their registered mobile (10 look-ups a day; 404 when nobody has it) and
    writes the donation down, pending: show the recipient's masked name and confirm within 10
    minutes at POST /donations/{id}/confirm. """
    actor = await req.bound_actor()
    body: DonationIn = req.body
    key = _key(req, actor)
    if not await _looked_up(req.services.store, actor.id):
        raise ApiError(429, "rate_limited", "今天查询的次数较多，请明天再试。", headers={"Retry-After": "3600"})
    recipient = await find_recipient(body.recipient_mobile)
    try:
        donation = await create_donation(actor.id, recipient.id, body.amount, note=body.note, key=key, now=req.now)
    except KeyReused:
        raise invalid("header.Idempotency-Key", "was used for a different donation") from None
    return await _donation_out(donation, req.now)


@api.route("POST", "/donations/{donation_id}/confirm", summary="Confirm a donation (转赠), step 2",
           response=DonationOut, errors=(409,))
async def post_confirm_donation(req: ApiRequest) -> DonationOut:
    """The donor's confirmation: the points move, once; the recipient is told in chat. 409 when it
    lapsed, was cancelled or the points no longer reach."""
    actor = await req.bound_actor()
    donation = await confirm_donation(req.path["donation_id"], donor_id=actor.id, now=req.now)
    return await _donation_out(donation, req.now)


@api.route("POST", "/donations/{donation_id}/cancel", summary="Drop a pending donation", response=DonationOut,
           errors=(409,))
async def post_cancel_donation(req: ApiRequest) -> DonationOut:
    """Nothing moves; a donation already done answers 409."""
    actor = await req.bound_actor()
    return await _donation_out(await cancel_donation(req.path["donation_id"], donor_id=actor.id, now=req.now),
                               req.now)

