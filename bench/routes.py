"""Delivery routes (先锋骑士): what building the routes adds to a meal's cut-off, and what claiming
a route and marking a stop cost over one bare UPDATE.

    python -m bench.routes [--pg-url URL] [--rounds 5] [--bookings 120]

On a throwaway database (a SQLite file in a temporary directory, or with ``--pg-url`` a PostgreSQL
database that is dropped and recreated, migrated with the checked-in migrations, and dropped at
the end) it loads the demo and adds ``--bookings`` residents of 米家社区 who need delivery, spread
over its buildings, with money in their canteen wallets. Each round publishes one lunch (a
different day), books a delivered meal for each of them, and then times, in the same process:

* ``update``   one bare ``UPDATE rider_stop SET note = ...`` per stop: the baseline, one
               statement round trip;
* ``cutoff``   ``run_cutoff``: every booking charged (wallet, subsidy, ledger rows), the kitchen's
               count pushed, and the routes built (per booking);
* ``routes``   ``build_routes`` alone on the same meal after its routes were deleted (per
               booking): the part of the cut-off that is new;
* ``claim``    ``rider_core.claim`` of each route by the demo rider (per route);
* ``mark``     ``rider_core.mark_stop`` delivered for every stop (per stop; the last one of a route
               completes it and credits the points through the ledger).

The table gives the median over rounds of the per-operation time and its ratio to ``update``.
Every round is checked: each booking is on exactly one route, every route is done and the rider's
points grew by the community's rate per route.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from bench.throwaway import throwaway_db

NOW = datetime(2026, 12, 3, 1, 0, tzinfo=UTC)  # Thursday 09:00 in Shanghai
FIRST_DAY = date(2026, 12, 4)
DISHES = [{"name": "清蒸鱼", "marks": ["soft", "low_salt"]}, {"name": "炒青菜", "marks": []}]


async def run(args: argparse.Namespace, workdir: Path) -> list[tuple[str, float]]:
    from models import rider_core
    from models.canteen import Booking, Mode
    from models.canteen_booking import book, publish_menu, run_cutoff, set_diner
    from models.canteen_wallet import top_up
    from models.demo import load_demo
    from models.ledger import balance, points_of
    from models.places import Building, Canteen, Community
    from models.residents import Mobility, Resident
    from models.riders import Route, RouteState, RouteStop

    async with throwaway_db(args.pg_url, workdir):
        await load_demo(NOW)
        mijia = await Community.get(name="米家社区")
        canteen = await Canteen.get(community_id=mijia.id)
        counter = await Resident.get(name="陈食堂")
        rider = await Resident.get(name="骑士小王")
        buildings = await Building.filter(community_id=mijia.id).order_by("id")
        diners: list[int] = []
        for n in range(args.bookings):
            person = await Resident.create(
                name=f"送餐{n:03d}", mobile=f"1390555{n:04d}", community_id=mijia.id,
                building_id=buildings[n % len(buildings)].id, unit=str(1 + n % 3), room=f"{1 + n % 6}0{1 + n % 2}",
                mobility=Mobility.NEEDS_DELIVERY, created_at=NOW)
            await top_up(canteen_id=canteen.id, resident_id=person.id, amount_fen=1000_00, method="cash",
                         receipt_no=f"BENCH-{n}", by_id=counter.id, now=NOW)
            if n % 4 == 0:
                await set_diner(resident_id=person.id, by_id=counter.id, now=NOW, diet="软食,低盐")
            diners.append(person.id)

        times: dict[str, list[float]] = {k: [] for k in ("update", "cutoff", "routes", "claim", "mark")}
        points = 0
        for r in range(args.rounds):
            menu, _ = await publish_menu(canteen_id=canteen.id, day=FIRST_DAY + timedelta(days=r), meal="lunch",
                                         dishes=DISHES, price_fen=1200, by_id=counter.id, now=NOW,
                                         capacity=args.bookings + 10)
            for resident_id in diners:
                await book(menu_id=menu.id, resident_id=resident_id, by_id=resident_id, mode=Mode.DELIVERY, now=NOW)
            at = menu.cutoff_at

            started = time.perf_counter()
            assert await run_cutoff(menu.id, at)
            times["cutoff"].append((time.perf_counter() - started) / args.bookings)

            routes = await Route.filter(menu_id=menu.id)
            await RouteStop.filter(route_id__in=[x.id for x in routes]).delete()
            await Route.filter(menu_id=menu.id).delete()
            started = time.perf_counter()
            routes = await rider_core.build_routes(menu.id, at)
            times["routes"].append((time.perf_counter() - started) / args.bookings)
            stops = await RouteStop.filter(route_id__in=[x.id for x in routes]).order_by("route_id", "position")
            booked = await Booking.filter(menu_id=menu.id).values_list("id", flat=True)
            assert sorted(s.booking_id for s in stops) == sorted(booked), "every booking on exactly one route"

            started = time.perf_counter()
            for stop in stops:
                await RouteStop.filter(id=stop.id).update(note="")
            times["update"].append((time.perf_counter() - started) / len(stops))

            out = menu.serve_from_at
            started = time.perf_counter()
            for route in routes:
                await rider_core.claim(route.id, rider.id, out)
            times["claim"].append((time.perf_counter() - started) / len(routes))

            started = time.perf_counter()
            for stop in stops:
                await rider_core.mark_stop(stop.id, rider.id, delivered=True, now=out)
            times["mark"].append((time.perf_counter() - started) / len(stops))

            assert {x.state for x in await Route.filter(menu_id=menu.id)} == {RouteState.DONE}
            points += (await rider_core.settings_of(mijia.id)).points * len(routes)
            assert await balance(await points_of(rider.id, out)) == points
        print(f"{len(routes)} routes per meal of {args.bookings} bookings", file=sys.stderr)
        return [(kind, statistics.median(values)) for kind, values in times.items()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pg-url", default="", help="a throwaway PostgreSQL database (dropped and recreated)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--bookings", type=int, default=120, help="delivered bookings per meal")
    args = parser.parse_args(argv)
    if not 1 <= args.rounds <= 7:
        parser.error("--rounds: 1 to 7 (one lunch a day, up to a week ahead)")
    with tempfile.TemporaryDirectory(prefix="linli-bench-routes-") as tmp:
        rows = asyncio.run(run(args, Path(tmp)))
    base = dict(rows)["update"]
    backend = "PostgreSQL" if args.pg_url else "SQLite"
    print(f"delivery routes on {backend}: {args.rounds} rounds, {args.bookings} delivered bookings per meal")
    print(f"{'kind':<10}{'per':>9}{'median':>14}{'× update':>11}")
    per = {"update": "stop", "cutoff": "booking", "routes": "booking", "claim": "route", "mark": "stop"}
    for kind, seconds in rows:
        print(f"{kind:<10}{per[kind]:>9}{seconds * 1e3:>11.3f} ms{seconds / base:>11.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
