"""Concurrency on PostgreSQL: simultaneous redemptions, retries and crossing transfers.

Every test starts its calls together with ``asyncio.gather`` in this process, over a pool of
``POOL`` connections (four workers' worth of the service's default five). To be sure the calls
really overlap, a separate connection holds a lock on the row they all need while they start,
and lets go only once ``POOL`` transactions are queued behind it: then they race for real.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest
from tortoise import Tortoise

from bot.config import Config
from bot.db import close_db, tortoise_config
from models.demo import load_demo
from models.ledger import (
    AccountKind,
    Asset,
    Entry,
    Insufficient,
    Source,
    account,
    balance,
    check_books,
    points_of,
    transfer,
)
from models.places import Community, Shop
from models.redemption import (
    CatalogueItem,
    ItemKind,
    LimitReached,
    SoldOut,
    Voucher,
    VoucherClosed,
    VoucherStatus,
    cancel_voucher,
    create_item,
    redeem,
    use_voucher,
)
from models.residents import Resident
from tests.conftest import requires_servers

pytestmark = requires_servers
NOW = datetime(2026, 11, 27, 2, 0, tzinfo=UTC)
POOL = 20
LOCK_WAIT_S = 60.0


@pytest.fixture
async def wide(config: Config) -> AsyncIterator[Config]:
    """The clean database, connected with a pool of POOL connections."""
    url = config.database.url
    await Tortoise.init(config=tortoise_config(url + ("&" if "?" in url else "?") + f"maxsize={POOL}"),
                        _enable_global_fallback=True)
    yield config
    await close_db()


class RowHeld:
    """A row locked by a connection of its own until the calls queued behind it are enough."""

    def __init__(self, config: Config, table: str, row_id: int) -> None:
        self.url, self.table, self.row_id = config.database.url, table, row_id

    async def __aenter__(self) -> RowHeld:
        self.conn = await asyncpg.connect(self.url)
        self.tx = self.conn.transaction()
        await self.tx.start()
        await self.conn.execute(f"SELECT 1 FROM {self.table} WHERE id = $1 FOR UPDATE", self.row_id)
        return self

    async def until_queued(self, waiting: int) -> None:
        """Wait until ``waiting`` other transactions of this database wait for a lock."""
        deadline = asyncio.get_running_loop().time() + LOCK_WAIT_S
        while True:
            # inside a transaction the activity view is a snapshot taken once, unless cleared
            await self.conn.execute("SELECT pg_stat_clear_snapshot()")
            queued = await self.conn.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()")
            if queued >= waiting:
                return
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"only {queued} of {waiting} transactions queued behind the held row")
            await asyncio.sleep(0.02)

    async def __aexit__(self, *exc: object) -> None:
        await self.tx.rollback()
        await self.conn.close()


async def _together(config: Config, table: str, row_id: int, calls: list[Any]) -> list[Any]:
    """Start every call at once while the row is held; return each one's result or UserFacingError."""

    async def one(call: Any) -> Any:
        try:
            return await call()
        except (Insufficient, SoldOut, LimitReached, VoucherClosed) as refused:
            return refused

    async with RowHeld(config, table, row_id) as held:
        tasks = [asyncio.create_task(one(c)) for c in calls]
        await held.until_queued(min(POOL, len(calls)))
    return await asyncio.gather(*tasks)


async def _world() -> dict[str, Any]:
    await load_demo(NOW)
    community = await Community.get(name="米家社区")
    return {
        "community": community, "shop": await Shop.get(name="米家便民超市"),
        "staff": await Resident.get(name="周社工"), "clerk": await Resident.get(name="郑商户"),
        "volunteer": await Resident.get(name="孙志愿"), "elder": await Resident.get(name="王秀兰"),
        "issuing": await account(Asset.POINTS, AccountKind.ISSUING, community.id, NOW),
    }


async def _fund(w: dict[str, Any], resident_id: int, amount: int) -> None:
    await transfer(from_account=w["issuing"], to_account=await points_of(resident_id, NOW), amount=amount,
                   source=Source.ACTIVITY, key=f"fund:{resident_id}", now=NOW, memo="测试活动")


async def _item(w: dict[str, Any], *, price: int, stock: int, limit: int = 0) -> CatalogueItem:
    return await create_item(community_id=w["community"].id, by_id=w["staff"].id, kind=ItemKind.GOODS,
                             name="食用油一桶（测试）", price=price, stock=stock, valid_days=30, now=NOW,
                             per_person_limit=limit, shop_id=w["shop"].id)


async def _escrow(w: dict[str, Any]) -> int:
    return await balance(await account(Asset.POINTS, AccountKind.ESCROW, w["community"].id, NOW))


async def test_200_redemptions_against_one_balance_redeem_exactly_what_it_affords(wide: Config) -> None:
    w = await _world()
    item = await _item(w, price=30, stock=1000)
    volunteer = w["volunteer"].id
    await _fund(w, volunteer, 30 * 17 + 11)  # enough for 17, and 11 left over
    mine = await points_of(volunteer, NOW)

    results = await _together(wide, "ledger_account", mine.id, [
        lambda i=i: redeem(volunteer, item.id, key=f"tap:{i}", now=NOW) for i in range(200)])

    kinds = Counter(type(r).__name__ for r in results)
    assert kinds == {"Voucher": 17, "Insufficient": 183}
    assert await Voucher.filter(resident_id=volunteer).count() == 17
    assert len({r.code for r in results if isinstance(r, Voucher)}) == 17
    assert await balance(mine) == 11
    assert (await CatalogueItem.get(id=item.id)).stock == 1000 - 17
    assert await _escrow(w) == 30 * 17
    assert await check_books() == {Asset.POINTS: 0, Asset.FEN: 0}


async def test_200_members_racing_for_the_last_item_leave_one_voucher_and_no_stock(wide: Config) -> None:
    w = await _world()
    item = await _item(w, price=20, stock=1)
    await Resident.bulk_create([Resident(name=f"抢购{i:03d}", community_id=w["community"].id, created_at=NOW)
                                for i in range(200)])
    racers = [r.id for r in await Resident.filter(name__startswith="抢购").order_by("id")]
    for resident_id in racers:
        await _fund(w, resident_id, 20)

    results = await _together(wide, "catalogue_item", item.id, [
        lambda r=r: redeem(r, item.id, key=f"last:{r}", now=NOW) for r in racers])

    won = [r for r in results if isinstance(r, Voucher)]
    assert len(won) == 1 and Counter(type(r).__name__ for r in results)["SoldOut"] == 199
    assert (await CatalogueItem.get(id=item.id)).stock == 0
    assert await Voucher.filter(item_id=item.id).count() == 1
    balances = Counter([await balance(await points_of(r, NOW)) for r in racers])
    assert balances == {20: 199, 0: 1}
    assert await balance(await points_of(won[0].resident_id, NOW)) == 0
    assert await check_books() == {Asset.POINTS: 0, Asset.FEN: 0}


async def test_50_copies_of_one_redemption_make_one_voucher_and_one_debit(wide: Config) -> None:
    w = await _world()
    item = await _item(w, price=30, stock=5)
    volunteer = w["volunteer"].id
    await _fund(w, volunteer, 100)
    mine = await points_of(volunteer, NOW)

    results = await _together(wide, "ledger_account", mine.id, [
        lambda: redeem(volunteer, item.id, key="double-tap", now=NOW) for _ in range(50)])

    assert all(isinstance(r, Voucher) for r in results), Counter(type(r).__name__ for r in results)
    assert len({r.id for r in results}) == 1
    assert await Voucher.filter(resident_id=volunteer).count() == 1
    assert await Entry.filter(source=Source.REDEMPTION).count() == 1
    assert await balance(mine) == 70
    assert (await CatalogueItem.get(id=item.id)).stock == 4
    assert await check_books() == {Asset.POINTS: 0, Asset.FEN: 0}


async def test_50_copies_of_one_ledger_transfer_have_one_effect(wide: Config) -> None:
    w = await _world()
    volunteer = w["volunteer"].id
    mine = await points_of(volunteer, NOW)
    await _fund(w, volunteer, 1)  # the account row exists, so it can be held

    results = await _together(wide, "ledger_account", mine.id, [
        lambda: transfer(from_account=w["issuing"], to_account=mine, amount=12, source=Source.ACTIVITY,
                         key="signup:7:hours", now=NOW, memo="助老服务") for _ in range(50)])

    assert len({r.entry.id for r in results}) == 1
    assert sum(not r.replayed for r in results) == 1
    assert await Entry.filter(key="signup:7:hours").count() == 1
    assert await balance(mine) == 13
    assert await check_books() == {Asset.POINTS: 0, Asset.FEN: 0}


async def test_simultaneous_redemptions_never_pass_the_per_person_limit(wide: Config) -> None:
    w = await _world()
    item = await _item(w, price=10, stock=100, limit=2)
    volunteer = w["volunteer"].id
    await _fund(w, volunteer, 1000)
    mine = await points_of(volunteer, NOW)

    results = await _together(wide, "ledger_account", mine.id, [
        lambda i=i: redeem(volunteer, item.id, key=f"limit:{i}", now=NOW) for i in range(50)])

    assert Counter(type(r).__name__ for r in results) == {"Voucher": 2, "LimitReached": 48}
    assert await balance(mine) == 980
    assert (await CatalogueItem.get(id=item.id)).stock == 98


async def test_transfers_crossing_between_two_members_neither_deadlock_nor_lose_a_point(wide: Config) -> None:
    # Regression: each transfer locked its payer's row, then its payee's, so A→B and B→A at the
    # same moment waited for each other until PostgreSQL killed one (DeadlockDetectedError).
    w = await _world()
    a, b = w["volunteer"].id, w["elder"].id
    await _fund(w, a, 500)
    await _fund(w, b, 500)
    pa, pb = await points_of(a, NOW), await points_of(b, NOW)

    results = await _together(wide, "ledger_account", pa.id, [
        lambda i=i: transfer(from_account=pa if i % 2 else pb, to_account=pb if i % 2 else pa, amount=1 + i % 3,
                             source=Source.DONATION, key=f"cross:{i}", now=NOW) for i in range(200)])

    assert all(not isinstance(r, Exception) and not r.replayed for r in results)
    moved = sum((1 + i % 3) * (1 if i % 2 else -1) for i in range(200))  # net from a to b
    assert (await balance(pa), await balance(pb)) == (500 - moved, 500 + moved)
    assert await check_books() == {Asset.POINTS: 0, Asset.FEN: 0}


async def test_a_voucher_cancelled_and_used_at_the_same_moment_ends_one_way(wide: Config) -> None:
    w = await _world()
    item = await _item(w, price=25, stock=3)
    volunteer = w["volunteer"].id
    await _fund(w, volunteer, 25)
    voucher = await redeem(volunteer, item.id, key="race", now=NOW)

    calls = [(lambda: cancel_voucher(voucher.id, by_id=volunteer, now=NOW)) if i % 2 else
             (lambda: use_voucher(voucher.code, by_id=w["clerk"].id, now=NOW)) for i in range(20)]
    results = await _together(wide, "voucher", voucher.id, calls)

    final = await Voucher.get(id=voucher.id)
    assert final.status in (VoucherStatus.USED, VoucherStatus.CANCELLED)
    partner = await account(Asset.POINTS, AccountKind.PARTNER, w["shop"].id, NOW)
    if final.status == VoucherStatus.USED:
        assert (await balance(await points_of(volunteer, NOW)), await balance(partner)) == (0, 25)
        assert (await CatalogueItem.get(id=item.id)).stock == 2
        assert sum(isinstance(r, Voucher) and r.status == VoucherStatus.USED for r in results) == 1
    else:
        assert (await balance(await points_of(volunteer, NOW)), await balance(partner)) == (25, 0)
        assert (await CatalogueItem.get(id=item.id)).stock == 3
    assert all(isinstance(r, (Voucher, VoucherClosed)) for r in results)
    assert await _escrow(w) == 0
    assert await Entry.filter(ref=f"voucher:{voucher.id}").count() == 2  # the redemption, and one way out
    assert await check_books() == {Asset.POINTS: 0, Asset.FEN: 0}
