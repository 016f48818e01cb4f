"""The ledger: every point (and, for the canteen, every fen) the service moves, double-entry.

- An ``Account`` holds one asset (points or fen) and belongs to a community (its issuing,
  escrow and expiry accounts), a resident (their points; their canteen wallet and what it holds
  for booked meals), a partner shop (what its vouchers were redeemed for) or a canteen (its
  takings, its counter, and its government and enterprise subsidies).
- An ``Entry`` moves a positive integer amount from one account to another of the same asset.
  An account's balance is what its entries brought in minus what they took out, so the books of
  each asset always sum to zero. Points never turn into fen or back.
- Entries are append-only. A correction is a new entry: a reversal of an earlier one (at most
  one per entry) or an adjustment against the issuing account, each with a reason and who made
  it.
- Each entry carries an idempotency key, unique across the ledger: a retried write (a double
  tap, WeChat's retry, an API retry) finds its entry and changes nothing.
- A guarded account (a resident's) never goes below zero. Its balance is also kept on the
  account row, changed in the entry's transaction by a conditional UPDATE, so two concurrent
  spends cannot both pass the check. System accounts (issuing, escrow, expiry, partner) may go
  negative and keep no running balance: every earning would otherwise queue on the issuing
  account's row. Their balance is summed from the entries when asked.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from tortoise import connections, fields
from tortoise.backends.base.client import BaseDBAsyncClient, TransactionalDBClient
from tortoise.exceptions import IntegrityError
from tortoise.expressions import F, Q
from tortoise.functions import Sum
from tortoise.models import Model
from tortoise.transactions import in_transaction

from models.errors import UserFacingError


class Asset:
    POINTS = "points"
    FEN = "fen"


ASSETS = (Asset.POINTS, Asset.FEN)
ASSET_LABELS = {Asset.POINTS: "积分", Asset.FEN: "余额"}


class AccountKind:
    ISSUING = "issuing"  # a community's: points come from here when earned
    MEMBER = "member"  # a resident's points (guarded)
    PARTNER = "partner"  # a partner shop's: points of the vouchers it accepted
    ESCROW = "escrow"  # a community's: points of vouchers issued and not used yet
    EXPIRY = "expiry"  # a community's: points of vouchers that expired unused
    WALLET = "wallet"  # a resident's canteen wallet in fen (guarded): what they can still spend
    HOLD = "hold"  # a resident's fen held for booked meals until the cut-off (guarded)
    CANTEEN = "canteen"  # a canteen's takings in fen: meal payments, cards and subsidies
    TILL = "till"  # a canteen's counter in fen: money staff took in (top-ups) or paid back
    GOV_SUBSIDY = "gov_subsidy"  # a canteen's subsidy from the government, in fen
    ENT_SUBSIDY = "ent_subsidy"  # a canteen's subsidy from its enterprise partner, in fen


GUARDED = frozenset({AccountKind.MEMBER, AccountKind.WALLET, AccountKind.HOLD})


class Source:
    ACTIVITY = "activity"
    DELIVERY = "delivery"
    ERRAND = "errand"
    WISH = "wish"
    REDEMPTION = "redemption"
    DONATION = "donation"
    EXPIRY = "expiry"
    CORRECTION = "correction"
    TOPUP = "topup"  # money in at the canteen's counter (or paid back)
    MEAL = "meal"  # a booked meal: hold, charge, release, refund
    CARD = "card"  # a monthly meal card
    SUBSIDY = "subsidy"  # the government's or enterprise's share of a meal


SOURCE_LABELS = {
    Source.ACTIVITY: "志愿服务", Source.DELIVERY: "送餐", Source.ERRAND: "代办", Source.WISH: "微心愿",
    Source.REDEMPTION: "兑换", Source.DONATION: "转赠", Source.EXPIRY: "过期", Source.CORRECTION: "更正",
    Source.TOPUP: "充值", Source.MEAL: "餐费", Source.CARD: "月卡", Source.SUBSIDY: "补贴",
}

KEY_MAX = 96
REASON_MAX = 200
REF_MAX = 64


class Account(Model):
    """One asset held by a community, a resident or a partner shop."""

    _no_comments = True  # see models/__init__.py

    id = fields.BigIntField(primary_key=True)
    code = fields.CharField(max_length=64, unique=True)  # asset:kind:owner, e.g. points:member:12
    asset = fields.CharField(max_length=8)
    kind = fields.CharField(max_length=12)
    community: fields.ForeignKeyNullableRelation = fields.ForeignKeyField(
        "linli.Community", related_name=False, null=True, on_delete=fields.RESTRICT)
    resident: fields.ForeignKeyNullableRelation = fields.ForeignKeyField(
        "linli.Resident", related_name=False, null=True, on_delete=fields.RESTRICT)
    shop: fields.ForeignKeyNullableRelation = fields.ForeignKeyField(
        "linli.Shop", related_name=False, null=True, on_delete=fields.RESTRICT)
    canteen: fields.ForeignKeyNullableRelation = fields.ForeignKeyField(
        "linli.Canteen", related_name=False, null=True, on_delete=fields.RESTRICT)
    guarded = fields.BooleanField(default=False)
    # kept for guarded accounts only, in the same transaction as each entry (see the module doc)
    balance = fields.BigIntField(default=0)
    created_at = fields.DatetimeField()

    community_id: int | None
    resident_id: int | None
    shop_id: int | None
    canteen_id: int | None

    class Meta:
        table = "ledger_account"


class Entry(Model):
    """One movement of an amount between two accounts of one asset, never changed afterwards."""

    _no_comments = True  # see models/__init__.py

    id = fields.BigIntField(primary_key=True)
    asset = fields.CharField(max_length=8)
    from_account: fields.ForeignKeyRelation[Account] = fields.ForeignKeyField(
        "linli.Account", related_name="entries_out", on_delete=fields.RESTRICT)
    to_account: fields.ForeignKeyRelation[Account] = fields.ForeignKeyField(
        "linli.Account", related_name="entries_in", on_delete=fields.RESTRICT)
    amount = fields.BigIntField()
    source = fields.CharField(max_length=12)
    ref = fields.CharField(max_length=REF_MAX, default="")  # what it is for, e.g. activity:3
    memo = fields.CharField(max_length=60, default="")  # what the owner reads in 积分, e.g. the title
    actor: fields.ForeignKeyNullableRelation = fields.ForeignKeyField(
        "linli.Resident", related_name=False, null=True, on_delete=fields.RESTRICT)
    reason = fields.CharField(max_length=REASON_MAX, default="")
    key = fields.CharField(max_length=KEY_MAX, unique=True)
    reverses: fields.OneToOneNullableRelation[Entry] = fields.OneToOneField(
        "linli.Entry", related_name="reversal", null=True, on_delete=fields.RESTRICT)
    created_at = fields.DatetimeField()

    from_account_id: int
    to_account_id: int
    actor_id: int | None
    reverses_id: int | None

    class Meta:
        table = "ledger_entry"
        # an account's entries newest first (积分, statements) and its summed balance
        indexes = (("ref",), ("source", "created_at"), ("from_account_id", "created_at"),
                   ("to_account_id", "created_at"))


class Insufficient(UserFacingError):
    """A guarded account would go below zero."""

    def __init__(self, asset: str, available: int, needed: int) -> None:
        label = ASSET_LABELS.get(asset, asset)
        shown = f"{available / 100:.2f}元" if asset == Asset.FEN else f"{available}分"
        super().__init__(f"{label}不足：当前可用{shown}。")
        self.available = available
        self.needed = needed


class KeyReused(UserFacingError):
    """An idempotency key came back with a different movement."""

    def __init__(self) -> None:
        super().__init__("这个请求编号已用于另一笔记录，请刷新后重试。")


def account_code(asset: str, kind: str, owner: int) -> str:
    return f"{asset}:{kind}:{owner}"


_OWNER_FIELD = {
    AccountKind.ISSUING: "community_id", AccountKind.ESCROW: "community_id",
    AccountKind.EXPIRY: "community_id", AccountKind.MEMBER: "resident_id",
    AccountKind.WALLET: "resident_id", AccountKind.PARTNER: "shop_id", AccountKind.HOLD: "resident_id",
    AccountKind.CANTEEN: "canteen_id", AccountKind.TILL: "canteen_id", AccountKind.GOV_SUBSIDY: "canteen_id",
    AccountKind.ENT_SUBSIDY: "canteen_id",
}


async def account(asset: str, kind: str, owner: int, now: datetime) -> Account:
    """The account of ``kind`` for this owner (a community, resident, shop or canteen id), made when first needed."""
    if asset not in ASSETS or kind not in _OWNER_FIELD:
        raise ValueError(f"no {kind} account of {asset}")
    code = account_code(asset, kind, owner)
    found = await Account.get_or_none(code=code)
    if found is not None:
        return found
    try:
        async with in_transaction():
            owner_field: dict[str, Any] = {_OWNER_FIELD[kind]: owner}
            return await Account.create(code=code, asset=asset, kind=kind, guarded=kind in GUARDED,
                                        created_at=now, **owner_field)
    except IntegrityError:  # made concurrently
        return await Account.get(code=code)


async def points_of(resident_id: int, now: datetime) -> Account:
    return await account(Asset.POINTS, AccountKind.MEMBER, resident_id, now)


async def balance(acct: Account) -> int:
    """The account's balance: its running balance if guarded, else the sum of its entries."""
    if acct.guarded:
        return (await Account.get(id=acct.id)).balance
    return await summed_balance(acct.id)


async def summed_balance(account_id: int) -> int:
    """What the account's entries brought in minus what they took out."""
    came = await Entry.filter(to_account_id=account_id).annotate(s=Sum("amount")).first().values_list("s", flat=True)
    went = await Entry.filter(from_account_id=account_id).annotate(s=Sum("amount")).first().values_list("s", flat=True)
    return int(cast(int, came) or 0) - int(cast(int, went) or 0)


@dataclass(frozen=True)
class Posted:
    entry: Entry
    replayed: bool  # True when the key had already been written: nothing changed this time


async def transfer(
    *, from_account: Account, to_account: Account, amount: int, source: str, key: str,
    now: datetime, ref: str = "", memo: str = "", actor_id: int | None = None, reason: str = "",
    reverses_id: int | None = None,
) -> Posted:
    """Move ``amount`` between two accounts of one asset, once per ``key``.

    Runs in the caller's transaction when there is one (as a savepoint), so a redemption can
    reserve stock and debit points together. Raises ``Insufficient`` when a guarded account
    would go negative (nothing is written) and ``KeyReused`` when the key names another movement.
    """
    if not isinstance(amount, int) or isinstance(amount, bool) or amount <= 0:
        raise ValueError("a ledger amount is a positive integer")
    if from_account.asset != to_account.asset:
        raise ValueError("points never turn into fen or back")
    if from_account.id == to_account.id:
        raise ValueError("an entry moves between two accounts")
    if not 0 < len(key) <= KEY_MAX:
        raise ValueError("an idempotency key is 1 to 96 characters")
    conn = connections.get("default")
    if conn.capabilities.dialect == "postgres":
        return await _transfer_pg(
            conn, from_account=from_account, to_account=to_account, amount=amount, source=source, key=key,
            now=now, ref=ref, memo=memo, actor_id=actor_id, reason=reason, reverses_id=reverses_id)
    earlier = await Entry.get_or_none(key=key)
    if earlier is not None:
        return Posted(_same(earlier, from_account, to_account, amount), replayed=True)
    try:
        async with in_transaction():
            entry = await Entry.create(
                asset=from_account.asset, from_account_id=from_account.id, to_account_id=to_account.id,
                amount=amount, source=source, ref=ref[:REF_MAX], memo=memo[:60], actor_id=actor_id,
                reason=reason[:REASON_MAX], key=key, reverses_id=reverses_id, created_at=now)
            if from_account.guarded:
                taken = await Account.filter(id=from_account.id, balance__gte=amount).update(
                    balance=F("balance") - amount)
                if not taken:
                    current = await Account.get(id=from_account.id)
                    raise Insufficient(from_account.asset, current.balance, amount)
            if to_account.guarded:
                await Account.filter(id=to_account.id).update(balance=F("balance") + amount)
    except IntegrityError:
        # The same key committed meanwhile (a concurrent retry), or this entry was reversed already.
        earlier = await Entry.get_or_none(key=key)
        if earlier is None:
            raise
        return Posted(_same(earlier, from_account, to_account, amount), replayed=True)
    return Posted(entry, replayed=False)


# On PostgreSQL a transfer is one statement, so outside a caller's transaction it is one round trip
# (its own implicit transaction) instead of a key look-up, BEGIN, INSERT, UPDATEs and COMMIT. When both
# accounts are guarded their rows are locked in id order first: two opposite transfers between the same
# members would otherwise each hold one row and wait for the other's (a deadlock). The member's debit
# is conditional, the credit and the entry follow only if it succeeded, and a key already written makes
# the INSERT fail, which undoes the whole statement.
_PG_TRANSFER = """
WITH locked AS (
    SELECT id FROM ledger_account
    WHERE $13::boolean AND $14::boolean AND id IN ($2::bigint, $3::bigint)
    ORDER BY id FOR NO KEY UPDATE
), taken AS (
    UPDATE ledger_account SET balance = balance - $4::bigint
    WHERE $13::boolean AND id = $2::bigint AND balance >= $4::bigint AND (SELECT count(*) FROM locked) >= 0
    RETURNING id
), ok AS (
    SELECT 1 AS ok WHERE NOT $13::boolean OR EXISTS (SELECT 1 FROM taken)
), given AS (
    UPDATE ledger_account SET balance = balance + $4::bigint
    WHERE $14::boolean AND id = $3::bigint AND EXISTS (SELECT 1 FROM ok)
    RETURNING id
)
INSERT INTO ledger_entry (asset, from_account_id, to_account_id, amount, source, ref, memo, actor_id, reason,
                          key, reverses_id, created_at)
SELECT $1::varchar, $2::bigint, $3::bigint, $4::bigint, $5::varchar, $6::varchar, $7::varchar, $8::int,
       $9::varchar, $10::varchar, $11::bigint, $12::timestamptz
WHERE EXISTS (SELECT 1 FROM ok)
RETURNING *
"""


async def _transfer_pg(
    conn: BaseDBAsyncClient, *, from_account: Account, to_account: Account, amount: int, source: str, key: str,
    now: datetime, ref: str, memo: str, actor_id: int | None, reason: str, reverses_id: int | None,
) -> Posted:
    values = [from_account.asset, from_account.id, to_account.id, amount, source, ref[:REF_MAX], memo[:60],
              actor_id, reason[:REASON_MAX], key, reverses_id,
              Entry._meta.fields_map["created_at"].to_db_value(now, Entry),
              from_account.guarded, to_account.guarded]
    try:
        if isinstance(conn, TransactionalDBClient):  # the caller's transaction survives a failure
            async with in_transaction():
                rows = await connections.get("default").execute_query_dict(_PG_TRANSFER, values)
        else:
            rows = await conn.execute_query_dict(_PG_TRANSFER, values)
    except IntegrityError:
        # The key was written already (a retry, maybe concurrent), or this entry was reversed already.
        earlier = await Entry.get_or_none(key=key)
        if earlier is None:
            raise
        return Posted(_same(earlier, from_account, to_account, amount), replayed=True)
    if rows:
        return Posted(Entry._init_from_db(**rows[0]), replayed=False)
    # Nothing written: the guarded account was short, unless a retry finds its earlier entry.
    earlier = await Entry.get_or_none(key=key)
    if earlier is not None:
        return Posted(_same(earlier, from_account, to_account, amount), replayed=True)
    current = await Account.get(id=from_account.id)
    raise Insufficient(from_account.asset, current.balance, amount)


def _same(entry: Entry, from_account: Account, to_account: Account, amount: int) -> Entry:
    if (entry.from_account_id, entry.to_account_id, entry.amount) != (from_account.id, to_account.id, amount):
        raise KeyReused()
    return entry


class AlreadyReversed(UserFacingError):
    def __init__(self) -> None:
        super().__init__("这笔记录已经冲正过了。")


async def reverse(entry_id: int, *, reason: str, actor_id: int | None, key: str, now: datetime) -> Posted:
    """A new entry that undoes ``entry_id``, once; the reason and who asked are on it."""
    if not reason.strip():
        raise UserFacingError("冲正需要写明原因。")
    original = await Entry.get(id=entry_id).prefetch_related("from_account", "to_account")
    if original.reverses_id is not None:
        raise UserFacingError("冲正记录不能再冲正；如有错误，请另做一笔更正。")
    earlier = await Entry.get_or_none(key=key)
    if earlier is None and await Entry.filter(reverses_id=entry_id).exists():
        raise AlreadyReversed()
    try:
        return await transfer(
            from_account=original.to_account, to_account=original.from_account, amount=original.amount,
            source=Source.CORRECTION, key=key, now=now, ref=original.ref, memo=f"冲正：{original.memo}"[:60],
            actor_id=actor_id, reason=reason.strip(), reverses_id=entry_id)
    except IntegrityError:  # reversed concurrently under another key
        raise AlreadyReversed() from None


async def entries_of(account_id: int, *, limit: int = 10, since: datetime | None = None) -> list[Entry]:
    """The account's newest entries first."""
    query = Entry.filter(Q(from_account_id=account_id) | Q(to_account_id=account_id))
    if since is not None:
        query = query.filter(created_at__gte=since)
    return await query.order_by("-created_at", "-id").limit(limit)


def signed(entry: Entry, account_id: int) -> int:
    """The entry's amount as this account sees it: positive in, negative out."""
    return entry.amount if entry.to_account_id == account_id else -entry.amount


async def check_books() -> dict[str, int]:
    """Each asset's books: the sum of every account's summed balance (always 0), and every
    guarded account's running balance equal to its entries and not negative (AssertionError if not)."""
    totals: dict[str, int] = {asset: 0 for asset in ASSETS}
    for acct in await Account.all():
        summed = await summed_balance(acct.id)
        totals[acct.asset] += summed
        if acct.guarded:
            assert acct.balance == summed, f"account {acct.code}: running {acct.balance} != entries {summed}"
            assert acct.balance >= 0, f"account {acct.code} is negative: {acct.balance}"
    return totals
