"""The ledger's own rules: same-asset transfers in integers, guarded accounts never negative,
one effect per idempotency key, reversals once with a reason, books at zero."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from models.demo import load_demo
from models.ledger import (
    AccountKind,
    AlreadyReversed,
    Asset,
    Entry,
    Insufficient,
    KeyReused,
    Source,
    account,
    balance,
    check_books,
    entries_of,
    points_of,
    reverse,
    signed,
    transfer,
)
from models.places import Community
from models.residents import Resident
from tests.conftest import REAL_DB

pytestmark = pytest.mark.usefixtures("db")
NOW = datetime(2026, 11, 27, 2, 0, tzinfo=UTC)


@pytest.fixture
async def world() -> dict[str, int]:
    await load_demo(NOW)
    community = await Community.get(name="米家社区")
    volunteer = await Resident.get(name="孙志愿")
    elder = await Resident.get(name="王秀兰")
    return {"community": community.id, "volunteer": volunteer.id, "elder": elder.id}


async def _earn(world: dict[str, int], amount: int, key: str) -> Entry:
    issuing = await account(Asset.POINTS, AccountKind.ISSUING, world["community"], NOW)
    mine = await points_of(world["volunteer"], NOW)
    posted = await transfer(from_account=issuing, to_account=mine, amount=amount, source=Source.ACTIVITY,
                            key=key, now=NOW, memo="助老服务")
    return posted.entry


async def test_earning_moves_points_from_the_issuing_account_and_the_books_stay_at_zero(world) -> None:  # type: ignore[no-untyped-def]
    await _earn(world, 30, "earn:1")
    await _earn(world, 12, "earn:2")
    mine = await points_of(world["volunteer"], NOW)
    issuing = await account(Asset.POINTS, AccountKind.ISSUING, world["community"], NOW)
    assert await balance(mine) == 42
    assert await balance(issuing) == -42
    assert await check_books() == {Asset.POINTS: 0, Asset.FEN: 0}
    newest = await entries_of(mine.id, limit=1)
    assert signed(newest[0], mine.id) == 12


async def test_a_guarded_account_never_goes_below_zero_and_nothing_is_written(world) -> None:  # type: ignore[no-untyped-def]
    await _earn(world, 10, "earn:1")
    mine = await points_of(world["volunteer"], NOW)
    elder = await points_of(world["elder"], NOW)
    with pytest.raises(Insufficient) as refused:
        await transfer(from_account=mine, to_account=elder, amount=11, source=Source.DONATION, key="give:1", now=NOW)
    assert "积分不足" in refused.value.message and "10分" in refused.value.message
    assert await Entry.filter(key="give:1").count() == 0
    assert (await balance(mine), await balance(elder)) == (10, 0)


async def test_a_retried_key_has_one_effect_and_a_reused_key_is_refused(world) -> None:  # type: ignore[no-untyped-def]
    first = await _earn(world, 10, "earn:1")
    again = await _earn(world, 10, "earn:1")
    assert again.id == first.id
    assert await balance(await points_of(world["volunteer"], NOW)) == 10
    with pytest.raises(KeyReused):
        await _earn(world, 11, "earn:1")


async def test_concurrent_retries_of_one_key_have_one_effect(world) -> None:  # type: ignore[no-untyped-def]
    results = await asyncio.gather(*(_earn(world, 5, "earn:same") for _ in range(20)))
    assert len({e.id for e in results}) == 1
    assert await balance(await points_of(world["volunteer"], NOW)) == 5
    assert await Entry.all().count() == 1


async def test_points_never_turn_into_fen(world) -> None:  # type: ignore[no-untyped-def]
    wallet = await account(Asset.FEN, AccountKind.WALLET, world["volunteer"], NOW)
    mine = await points_of(world["volunteer"], NOW)
    with pytest.raises(ValueError, match="fen"):
        await transfer(from_account=mine, to_account=wallet, amount=1, source=Source.CORRECTION, key="x", now=NOW)
    for bad in (0, -5, 1.5, True):
        with pytest.raises(ValueError):
            await transfer(from_account=mine, to_account=await points_of(world["elder"], NOW), amount=bad,  # type: ignore[arg-type]
                           source=Source.DONATION, key=f"bad:{bad}", now=NOW)


async def test_a_reversal_is_a_new_entry_with_its_reason_and_happens_once(world) -> None:  # type: ignore[no-untyped-def]
    earned = await _earn(world, 20, "earn:1")
    staff = await Resident.get(name="周社工")
    with pytest.raises(Exception, match="原因"):
        await reverse(earned.id, reason=" ", actor_id=staff.id, key="rev:1", now=NOW)
    posted = await reverse(earned.id, reason="重复登记", actor_id=staff.id, key="rev:1", now=NOW)
    entry = posted.entry
    assert (entry.source, entry.reason, entry.actor_id) == (Source.CORRECTION, "重复登记", staff.id)
    assert (await reverse(earned.id, reason="重复登记", actor_id=staff.id, key="rev:1", now=NOW)).replayed
    with pytest.raises(AlreadyReversed):
        await reverse(earned.id, reason="再来一次", actor_id=staff.id, key="rev:2", now=NOW)
    assert await balance(await points_of(world["volunteer"], NOW)) == 0
    assert await Entry.all().count() == 2  # the original stays
    assert await check_books() == {Asset.POINTS: 0, Asset.FEN: 0}


async def test_a_reversal_that_would_take_spent_points_is_refused(world) -> None:  # type: ignore[no-untyped-def]
    earned = await _earn(world, 20, "earn:1")
    mine = await points_of(world["volunteer"], NOW)
    await transfer(from_account=mine, to_account=await points_of(world["elder"], NOW), amount=15,
                   source=Source.DONATION, key="give:1", now=NOW)
    with pytest.raises(Insufficient):
        await reverse(earned.id, reason="误发", actor_id=None, key="rev:1", now=NOW)
    assert await balance(mine) == 5


@pytest.mark.skipif(not REAL_DB, reason="concurrent spends need PostgreSQL's row locks")
async def test_concurrent_spends_never_overdraw(world) -> None:  # type: ignore[no-untyped-def]
    await _earn(world, 100, "earn:1")
    mine = await points_of(world["volunteer"], NOW)
    elder = await points_of(world["elder"], NOW)

    async def spend(i: int) -> bool:
        try:
            await transfer(from_account=mine, to_account=elder, amount=7, source=Source.DONATION,
                           key=f"give:{i}", now=NOW)
            return True
        except Insufficient:
            return False

    done = await asyncio.gather(*(spend(i) for i in range(40)))
    assert sum(done) == 100 // 7
    assert await balance(mine) == 100 % 7
    assert await check_books() == {Asset.POINTS: 0, Asset.FEN: 0}
