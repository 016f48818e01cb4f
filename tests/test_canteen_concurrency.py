"""Concurrency of canteen bookings on PostgreSQL: more bookers than seats at once, double taps,
and simultaneous cancels handing seats to the waiting list.

As in tests/test_ledger_concurrency.py, the calls start together over a pool of ``POOL``
connections while a connection of its own holds the menu's row, and it lets go only once
``POOL`` transactions are queued behind it, so the seat UPDATEs really race.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import UTC, date, datetime
from typing import Any

from bot.config import Config
from models.canteen import Booking, BookingStatus, Menu, Mode
from models.canteen_booking import book, cancel, publish_menu
from models.canteen_wallet import top_up, wallet_of
from models.demo import load_demo
from models.errors import UserFacingError
from models.ledger import Asset, check_books
from models.places import Canteen, Community
from models.residents import Resident
from tests.conftest import requires_servers
from tests.test_ledger_concurrency import POOL, RowHeld, wide  # noqa: F401  (wide: the pooled database fixture)

pytestmark = requires_servers
NOW = datetime(2026, 11, 27, 2, 0, tzinfo=UTC)  # 周五 10:00 in Shanghai
MONDAY = date(2026, 11, 30)
PRICE = 1500


async def _together(config: Config, table: str, row_id: int, calls: list[Any]) -> list[Any]:
    """Start every call at once while the row they all need is held; each one's result or UserFacingError."""

    async def one(call: Any) -> Any:
        try:
            return await call()
        except UserFacingError as refused:
            return refused

    async with RowHeld(config, table, row_id) as held:
        tasks = [asyncio.create_task(one(c)) for c in calls]
        await held.until_queued(min(POOL, len(calls)))
    return await asyncio.gather(*tasks)


async def _world(diners: int, *, capacity: int, short: int = 0) -> dict[str, Any]:
    """The demo's canteen, a Monday lunch of ``capacity`` seats, and ``diners`` diners with 30 yuan
    each (the first ``short`` of them with 10 yuan: less than the meal)."""
    await load_demo(NOW)
    canteen = await Canteen.get(name="米家社区幸福食堂")
    community = await Community.get(name="米家社区")
    staff = await Resident.get(name="陈食堂")
    await Resident.bulk_create([Resident(name=f"食客{i:03d}", community_id=community.id, created_at=NOW)
                                for i in range(diners)])
    people = [r.id for r in await Resident.filter(name__startswith="食客").order_by("id")]
    for n, resident_id in enumerate(people):
        await top_up(canteen_id=canteen.id, resident_id=resident_id, amount_fen=1000 if n < short else 3000,
                     method="cash", receipt_no=f"R{resident_id}", by_id=staff.id, now=NOW)
    menu, _ = await publish_menu(canteen_id=canteen.id, day=MONDAY, meal="lunch", price_fen=PRICE, by_id=staff.id,
                                 dishes=[{"name": "红烧肉", "marks": ["soft"]}], now=NOW, capacity=capacity)
    return {"menu": menu, "people": people, "short": set(people[:short])}


async def _money(resident_id: int) -> tuple[int, int]:
    wallet = await wallet_of(resident_id, NOW)
    return wallet.available_fen, wallet.held_fen


async def test_60_bookers_for_20_seats_book_exactly_20_and_wait_list_the_rest(wide: Config) -> None:  # noqa: F811
    w = await _world(60, capacity=20, short=6)
    menu = w["menu"]

    results = await _together(wide, "canteen_menu", menu.id, [
        lambda r=r: book(menu_id=menu.id, resident_id=r, by_id=r, mode=Mode.DINE_IN, now=NOW) for r in w["people"]])

    outcome = Counter(r.status if isinstance(r, Booking) else type(r).__name__ for r in results)
    assert outcome[BookingStatus.BOOKED] == 20, outcome
    assert outcome[BookingStatus.WAITING] + outcome["Insufficient"] == 40, outcome
    assert set(outcome) <= {BookingStatus.BOOKED, BookingStatus.WAITING, "Insufficient"}, outcome
    assert (await Menu.get(id=menu.id)).booked == 20
    booked = {b.resident_id for b in await Booking.filter(menu_id=menu.id, status=BookingStatus.BOOKED)}
    assert len(booked) == 20 and not booked & w["short"]  # nobody short of money holds a seat
    for resident_id in w["people"]:
        start = 1000 if resident_id in w["short"] else 3000
        expected = (start - PRICE, PRICE) if resident_id in booked else (start, 0)
        assert await _money(resident_id) == expected
    assert await check_books() == {Asset.POINTS: 0, Asset.FEN: 0}


async def test_30_copies_of_one_booking_make_one_booking_and_one_hold(wide: Config) -> None:  # noqa: F811
    w = await _world(1, capacity=5)
    menu, diner = w["menu"], w["people"][0]

    results = await _together(wide, "canteen_menu", menu.id, [
        lambda: book(menu_id=menu.id, resident_id=diner, by_id=diner, mode=Mode.DINE_IN, now=NOW) for _ in range(30)])

    assert all(isinstance(r, Booking) for r in results), Counter(type(r).__name__ for r in results)
    assert len({r.id for r in results}) == 1 and results[0].status == BookingStatus.BOOKED
    assert (await Menu.get(id=menu.id)).booked == 1
    assert await _money(diner) == (3000 - PRICE, PRICE)
    assert await check_books() == {Asset.POINTS: 0, Asset.FEN: 0}


async def test_simultaneous_cancels_offer_each_freed_seat_to_one_waiting_diner(wide: Config) -> None:  # noqa: F811
    w = await _world(30, capacity=10)
    menu, people = w["menu"], w["people"]
    for r in people:  # in order: the first ten get the seats, the rest wait in this order
        await book(menu_id=menu.id, resident_id=r, by_id=r, mode=Mode.DINE_IN, now=NOW)
    seated = await Booking.filter(menu_id=menu.id, status=BookingStatus.BOOKED).order_by("id")
    first = await Booking.get(menu_id=menu.id, resident_id=people[10])

    # every cancel hands its seat on by taking the first waiting booking: they all queue for its row
    results = await _together(wide, "canteen_booking", first.id, [
        lambda b=b: cancel(booking_id=b.id, by_id=b.resident_id, now=NOW) for b in seated[:8]])

    assert all(isinstance(r, Booking) and r.status == BookingStatus.CANCELLED for r in results), results
    offered = await Booking.filter(menu_id=menu.id, status=BookingStatus.OFFERED).order_by("id")
    assert [b.resident_id for b in offered] == people[10:18]  # the first eight on the list, once each
    assert await Booking.filter(menu_id=menu.id, status=BookingStatus.WAITING).count() == 12
    assert (await Menu.get(id=menu.id)).booked == 10
    for r in people[:8]:
        assert await _money(r) == (3000, 0)
    assert await check_books() == {Asset.POINTS: 0, Asset.FEN: 0}
