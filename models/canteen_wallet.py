"""The canteen wallet of a diner: money taken in at the counter, held for booked meals, paid back.

- Each diner has two guarded ledger accounts in fen: ``WALLET`` (what they can still spend, the
  *available* amount) and ``HOLD`` (what is held for meals booked and not yet charged). The
  balance residents read is wallet + hold; neither ever goes below zero.
- Canteen staff record a top-up at the counter (amount, method, receipt number): the canteen's
  ``TILL`` → the diner's ``WALLET``. A counter refund is the way back and never exceeds what is
  available. Each is a ``TopUp`` row and one ledger entry, once per (canteen, kind, receipt number):
  the same receipt typed again returns the earlier row.
- ``deposited_fen`` (top-ups minus counter refunds, ever, at any canteen) is what the 75+ discount's
  "pre-deposited at least 120 yuan" reads.
- Staff of a canteen: its ``CANTEEN_STAFF``, the ``COMMUNITY_STAFF`` of its community and the
  ``SUBDISTRICT_STAFF`` above it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from tortoise.exceptions import IntegrityError
from tortoise.functions import Sum
from tortoise.transactions import in_transaction

from models.canteen import PAY_METHOD_LABELS, RECEIPT_MAX, TOPUP_MAX_FEN, TopUp, TopUpKind
from models.errors import Forbidden, NotFound, UserFacingError
from models.ledger import Account, AccountKind, Asset, Source, account, account_code, transfer
from models.places import Canteen, Community
from models.privacy import register_hold
from models.proxies import ProxyLink, ProxyStatus
from models.push import push_text
from models.residents import Resident
from models.roles import Role, Scope, StaffRole


@dataclass
class Wallet:
    available_fen: int  # what the diner can still spend (the wallet account)
    held_fen: int  # held for booked meals until their cut-off
    balance_fen: int  # available + held: what residents read as their balance
    deposited_fen: int  # top-ups minus counter refunds, ever, at any canteen


def yuan(fen: int) -> str:
    """6.00元: how an amount in fen is shown everywhere (chat, API texts, receipts, sheets)."""
    sign = "-" if fen < 0 else ""
    fen = abs(fen)
    return f"{sign}{fen // 100}.{fen % 100:02d}元"


# ---------------------------------------------------------------------------- accounts


async def wallet_account(resident_id: int, now: datetime) -> Account:
    return await account(Asset.FEN, AccountKind.WALLET, resident_id, now)


async def hold_account(resident_id: int, now: datetime) -> Account:
    return await account(Asset.FEN, AccountKind.HOLD, resident_id, now)


async def canteen_account(kind: str, canteen_id: int, now: datetime) -> Account:
    """One of the canteen's accounts: CANTEEN (takings), TILL, GOV_SUBSIDY or ENT_SUBSIDY."""
    return await account(Asset.FEN, kind, canteen_id, now)


async def _running(kind: str, resident_id: int) -> int:
    """A guarded account's balance without making the account (0 when it does not exist yet)."""
    value: Any = await Account.filter(code=account_code(Asset.FEN, kind, resident_id)).first().values_list(
        "balance", flat=True)
    return int(value or 0)


async def deposited_fen(resident_id: int) -> int:
    """Top-ups minus counter refunds of the resident, ever, at any canteen."""
    total = 0
    for kind, sign in ((TopUpKind.TOPUP, 1), (TopUpKind.REFUND, -1)):
        value = await TopUp.filter(resident_id=resident_id, kind=kind).annotate(s=Sum("amount_fen")).first(
        ).values_list("s", flat=True)
        total += sign * int(cast(int, value) or 0)
    return total


async def wallet_of(resident_id: int, now: datetime) -> Wallet:
    """What the diner has: available, held, their sum, and what they deposited."""
    available = await _running(AccountKind.WALLET, resident_id)
    held = await _running(AccountKind.HOLD, resident_id)
    return Wallet(available_fen=available, held_fen=held, balance_fen=available + held,
                  deposited_fen=await deposited_fen(resident_id))


# ---------------------------------------------------------------------------- who may do what


async def is_canteen_staff(by_id: int, canteen_id: int) -> bool:
    """The canteen's own staff, the staff of its community, or of the sub-district above it."""
    canteen = await Canteen.get_or_none(id=canteen_id)
    if canteen is None:
        return False
    community_id: int = canteen.community_id  # type: ignore[attr-defined]
    sub_id: Any = await Community.filter(id=community_id).first().values_list("sub_district_id", flat=True)
    roles = StaffRole.filter(resident_id=by_id, revoked_at=None)
    return (
        await roles.filter(role=Role.CANTEEN_STAFF, scope_kind=Scope.CANTEEN, scope_id=canteen_id).exists()
        or await roles.filter(role=Role.COMMUNITY_STAFF, community_id=community_id).exists()
        or await roles.filter(role=Role.SUBDISTRICT_STAFF, sub_district_id=sub_id).exists()
    )


async def staff_canteen(by_id: int) -> Canteen | None:
    """The canteen this person runs: of their canteen role, else the first of their community
    (community staff), else the first of their sub-district (sub-district staff); None for others."""
    roles = await StaffRole.filter(
        resident_id=by_id, revoked_at=None,
        role__in=(Role.CANTEEN_STAFF, Role.COMMUNITY_STAFF, Role.SUBDISTRICT_STAFF)).order_by("id")
    for wanted in (Role.CANTEEN_STAFF, Role.COMMUNITY_STAFF, Role.SUBDISTRICT_STAFF):
        for role in roles:
            if role.role != wanted:
                continue
            if wanted == Role.CANTEEN_STAFF:
                found = await Canteen.get_or_none(id=role.scope_id)
            elif wanted == Role.COMMUNITY_STAFF:
                found = await Canteen.filter(community_id=role.community_id).order_by("id").first()  # type: ignore[attr-defined]
            else:
                found = await Canteen.filter(
                    community__sub_district_id=role.sub_district_id).order_by("id").first()  # type: ignore[attr-defined]
            if found is not None:
                return found
    return None


async def canteen_of(resident_id: int) -> Canteen | None:
    """The canteen of the resident's community (the first, if it has several)."""
    resident = await Resident.get_or_none(id=resident_id)
    if resident is None:
        return None
    return await Canteen.filter(community_id=resident.community_id).order_by("id").first()  # type: ignore[attr-defined]


async def family_of(resident_id: int) -> list[int]:
    """The diner and the family members acting for them: who hears of their wallet and meals."""
    proxies = await ProxyLink.filter(elder_id=resident_id, status=ProxyStatus.ACTIVE).order_by("id").values_list(
        "proxy_id", flat=True)
    return [resident_id, *(int(p) for p in proxies)]  # type: ignore[call-overload]


async def tell_wallet(resident_id: int, text: str, *, key: str, now: datetime) -> None:
    """Push ``text`` and the wallet's available amount to the diner and their family (once per key)."""
    available = (await wallet_of(resident_id, now)).available_fen
    await push_text(await family_of(resident_id), f"{text}钱包可用余额{yuan(available)}。", key=key, now=now)


# ---------------------------------------------------------------------------- the counter


def _check_counter(amount_fen: int, method: str, receipt_no: str) -> str:
    if not isinstance(amount_fen, int) or isinstance(amount_fen, bool) or not 1 <= amount_fen <= TOPUP_MAX_FEN:
        raise UserFacingError(f"金额应在0.01元到{yuan(TOPUP_MAX_FEN)}之间。")
    if method not in PAY_METHOD_LABELS:
        raise UserFacingError("付款方式只能是" + "、".join(PAY_METHOD_LABELS.values()) + "。")
    receipt = receipt_no.strip()
    if not 1 <= len(receipt) <= RECEIPT_MAX:
        raise UserFacingError(f"请填写票据号（1到{RECEIPT_MAX}个字符）。")
    return receipt


def _same_topup(row: TopUp, resident_id: int, amount_fen: int) -> TopUp:
    if (row.resident_id, row.amount_fen) != (resident_id, amount_fen):
        label = "充值" if row.kind == TopUpKind.TOPUP else "退款"
        raise UserFacingError(f"票据号已用于另一笔{label}（{yuan(row.amount_fen)}），请核对票据号。")
    return row


async def _counter(
    *, kind: str, canteen_id: int, resident_id: int, amount_fen: int, method: str, receipt_no: str, by_id: int,
    now: datetime,
) -> TopUp:
    """A top-up (till → wallet) or a counter refund (wallet → till), once per receipt number."""
    if not await is_canteen_staff(by_id, canteen_id):
        raise Forbidden("只有本食堂的工作人员可以办理充值和退款。")
    receipt = _check_counter(amount_fen, method, receipt_no)
    earlier = await TopUp.get_or_none(canteen_id=canteen_id, kind=kind, receipt_no=receipt)
    if earlier is not None:
        return _same_topup(earlier, resident_id, amount_fen)
    resident = await Resident.get_or_none(id=resident_id, erased_at=None)
    if resident is None:
        raise NotFound("没有找到这位居民。")
    canteen = await Canteen.get(id=canteen_id)
    till = await canteen_account(AccountKind.TILL, canteen_id, now)
    wallet = await wallet_account(resident_id, now)
    source, target = (till, wallet) if kind == TopUpKind.TOPUP else (wallet, till)
    label = "充值" if kind == TopUpKind.TOPUP else "退款"
    try:
        async with in_transaction():
            posted = await transfer(
                from_account=source, to_account=target, amount=amount_fen, source=Source.TOPUP,
                key=f"topup:{canteen_id}:{kind}:{receipt}", now=now, ref=f"canteen:{canteen_id}",
                memo=f"{canteen.name}{label}", actor_id=by_id, reason=f"票据号{receipt}")
            row = await TopUp.create(canteen_id=canteen_id, resident_id=resident_id, kind=kind, amount_fen=amount_fen,
                                     method=method, receipt_no=receipt, by_id=by_id, entry_id=posted.entry.id,
                                     created_at=now)
    except IntegrityError:  # the same receipt recorded meanwhile (a double tap at the counter)
        earlier = await TopUp.get_or_none(canteen_id=canteen_id, kind=kind, receipt_no=receipt)
        if earlier is None:
            raise
        return _same_topup(earlier, resident_id, amount_fen)
    action = "充值" if kind == TopUpKind.TOPUP else "退还"
    await tell_wallet(resident_id, f"{canteen.name}已为{resident.name}的食堂钱包{action}{yuan(amount_fen)}"
                      f"（{PAY_METHOD_LABELS[method]}，票据号{receipt}）。", key=f"canteen:topup:{row.id}", now=now)
    return row


async def top_up(
    *, canteen_id: int, resident_id: int, amount_fen: int, method: str, receipt_no: str, by_id: int, now: datetime,
) -> TopUp:
    """Money taken in at the counter into the diner's wallet (canteen staff only); the diner and
    their family are told. The same receipt number again is the same top-up."""
    return await _counter(kind=TopUpKind.TOPUP, canteen_id=canteen_id, resident_id=resident_id, amount_fen=amount_fen,
                          method=method, receipt_no=receipt_no, by_id=by_id, now=now)


async def refund_wallet(
    *, canteen_id: int, resident_id: int, amount_fen: int, method: str, receipt_no: str, by_id: int, now: datetime,
) -> TopUp:
    """Money paid back at the counter from the wallet (at most what is available; held money stays
    with its meals). Canteen staff only; the same receipt number again is the same refund."""
    return await _counter(kind=TopUpKind.REFUND, canteen_id=canteen_id, resident_id=resident_id, amount_fen=amount_fen,
                          method=method, receipt_no=receipt_no, by_id=by_id, now=now)


@register_hold
async def _wallet_hold(resident_id: int) -> str | None:
    """Money left in a canteen wallet (or held for meals) keeps the diner's name until it is paid back."""
    if await Account.filter(code__in=[account_code(Asset.FEN, kind, resident_id)
                                      for kind in (AccountKind.WALLET, AccountKind.HOLD)], balance__gt=0).exists():
        return "食堂钱包还有余额"
    return None
