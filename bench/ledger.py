"""Ledger benchmark: transfers per second through ``models.ledger.transfer`` against a bare INSERT.

    python -m bench.ledger [--pg-url URL] [--writers 8] [--transfers 4000] [--rounds 3]

On PostgreSQL (a throwaway database on loopback, dropped and recreated, migrated with the
checked-in migrations) it makes one community with ``--members`` residents, each funded once,
and then runs, in rounds whose order alternates, ``--writers`` concurrent writers sharing one
connection pool of the size the service uses (tortoise-orm's asyncpg default):

* ``baseline`` a bare asyncpg pool doing a single-row INSERT per transfer into a plain table (a serial
               primary key and nothing else, no transaction of its own): the least any write can cost;
* ``ledger``   ``models.ledger.transfer`` through tortoise-orm: three in four are earnings
               (the community's issuing account → a random member), one in four a member → member
               move of 1 point (both guarded), each with a fresh idempotency key;
* ``sql``      (with ``--detail``) the statements ``transfer`` sent before its rework, hand-written on
               asyncpg (key look-up, BEGIN, INSERT … RETURNING, the guarded UPDATEs, COMMIT): what
               those round trips cost without the ORM, to tell round trips from Python overhead.

Every writer does ``--transfers / --writers`` transfers per round; rate = transfers / wall time.
The table gives the median of the rounds, the ledger's rate as a share of the baseline's, and
after the last round the books are checked (each asset sums to zero, every running balance equals
its entries, the entry count is what was written). See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import hashlib
import os
import random
import re
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from bench.gateway import _store_ticks, box_load, check_loopback, log

DEFAULT_PG_URL = "postgres://postgres@127.0.0.1:5432/linli_bench_ledger"
BASELINE_TABLE = "bench_baseline_transfer"
TARGET = 0.5  # the ledger at no less than half the bare INSERT's rate
FUNDING = 1_000_000_000  # every member's starting points: member → member moves of 1 never run short
EARN_SHARE = 0.75


# ----------------------------------------------------------------------------- the database


async def recreate_database(url: str) -> None:
    import asyncpg

    parts = urlsplit(url)
    dbname = parts.path.lstrip("/")
    if not re.fullmatch(r"[a-z_][a-z0-9_]*", dbname) or dbname in ("postgres", "template0", "template1"):
        raise SystemExit(f"bench: refusing to recreate database {dbname!r}")
    conn = await asyncpg.connect(parts._replace(path="/postgres").geturl())
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
        await conn.execute(f'CREATE DATABASE "{dbname}"')
    finally:
        await conn.close()


async def drop_database(url: str) -> None:
    import asyncpg

    parts = urlsplit(url)
    conn = await asyncpg.connect(parts._replace(path="/postgres").geturl())
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{parts.path.lstrip("/")}" WITH (FORCE)')
    finally:
        await conn.close()


@dataclass
class World:
    community_id: int
    issuing: Any  # models.ledger.Account
    members: list[Any]
    pool_size: int


async def setup(members: int, now: datetime) -> World:
    """One community, ``members`` residents, each funded once from the issuing account."""
    from tortoise import connections

    from models.ledger import AccountKind, Asset, Source, account, points_of, transfer
    from models.places import Community, SubDistrict
    from models.residents import Resident

    sub = await SubDistrict.create(name="账本测试街道")
    community = await Community.create(name="账本测试社区", sub_district=sub)
    await Resident.bulk_create([
        Resident(name=f"志愿者{i:04d}", community_id=community.id, created_at=now) for i in range(members)])
    residents = await Resident.filter(community_id=community.id).order_by("id")
    issuing = await account(Asset.POINTS, AccountKind.ISSUING, community.id, now)
    accounts = []
    for r in residents:
        mine = await points_of(r.id, now)
        await transfer(from_account=issuing, to_account=mine, amount=FUNDING, source=Source.CORRECTION,
                       key=f"fund:{r.id}", now=now, reason="基准测试开户")
        accounts.append(mine)
    conn: Any = connections.get("default")
    await conn.execute_script(
        f"CREATE TABLE {BASELINE_TABLE} (id BIGSERIAL PRIMARY KEY, asset VARCHAR(8) NOT NULL, "
        "from_account_id BIGINT NOT NULL, to_account_id BIGINT NOT NULL, amount BIGINT NOT NULL, "
        "source VARCHAR(12) NOT NULL, key VARCHAR(96) NOT NULL, created_at TIMESTAMPTZ NOT NULL)")
    return World(community.id, issuing, accounts, conn.pool_maxsize)


# ----------------------------------------------------------------------------- one transfer, three ways


@dataclass(frozen=True)
class Move:
    from_index: int  # -1: the issuing account
    to_index: int
    amount: int
    key: str


def plan(count: int, members: int, tag: str, rng: random.Random) -> list[Move]:
    moves = []
    for i in range(count):
        if rng.random() < EARN_SHARE:
            moves.append(Move(-1, rng.randrange(members), rng.randint(1, 20), f"bench:{tag}:{i}"))
        else:
            a, b = rng.sample(range(members), 2)
            moves.append(Move(a, b, 1, f"bench:{tag}:{i}"))
    return moves


Doer = Callable[[Move], Awaitable[None]]


def ledger_doer(world: World, now: datetime) -> Doer:
    from models.ledger import Source, transfer

    async def do(move: Move) -> None:
        source = Source.ACTIVITY if move.from_index < 0 else Source.DONATION
        from_account = world.issuing if move.from_index < 0 else world.members[move.from_index]
        posted = await transfer(from_account=from_account, to_account=world.members[move.to_index],
                                amount=move.amount, source=source, key=move.key, now=now, ref="bench",
                                memo="基准测试")
        if posted.replayed:
            raise RuntimeError(f"key {move.key} replayed: the benchmark's keys are meant to be fresh")

    return do


def baseline_doer(pool: Any, world: World, now: datetime) -> Doer:
    sql = (f"INSERT INTO {BASELINE_TABLE} (asset, from_account_id, to_account_id, amount, source, key, created_at) "
           "VALUES ($1, $2, $3, $4, $5, $6, $7)")

    async def do(move: Move) -> None:
        from_account = world.issuing if move.from_index < 0 else world.members[move.from_index]
        await pool.execute(sql, "points", from_account.id, world.members[move.to_index].id, move.amount,
                           "activity", move.key, now)

    return do


def sql_doer(pool: Any, world: World, now: datetime) -> Doer:
    """The statements ``transfer`` sent before its rework, hand-written: the cost of those round trips."""
    lookup = "SELECT id FROM ledger_entry WHERE key = $1"
    insert = ("INSERT INTO ledger_entry (asset, from_account_id, to_account_id, amount, source, ref, memo, "
              "reason, key, created_at) VALUES ($1, $2, $3, $4, $5, 'bench', '基准测试', '', $6, $7) RETURNING id")
    take = "UPDATE ledger_account SET balance = balance - $2 WHERE id = $1 AND balance >= $2"
    give = "UPDATE ledger_account SET balance = balance + $2 WHERE id = $1"

    async def do(move: Move) -> None:
        from_account = world.issuing if move.from_index < 0 else world.members[move.from_index]
        to_account = world.members[move.to_index]
        async with pool.acquire() as conn:
            if await conn.fetchval(lookup, move.key) is not None:
                raise RuntimeError(f"key {move.key} replayed")
            async with conn.transaction():
                await conn.fetchval(insert, "points", from_account.id, to_account.id, move.amount,
                                    "activity" if move.from_index < 0 else "donation", move.key, now)
                # the two rows in id order, or crossing moves between two members deadlock
                updates = [(to_account.id, give)]
                if from_account.guarded:
                    updates = sorted([*updates, (from_account.id, take)])
                for account_id, sql in updates:
                    if await conn.execute(sql, account_id, move.amount) != "UPDATE 1":
                        raise RuntimeError("a funded member ran short")

    return do


# ----------------------------------------------------------------------------- measuring


@dataclass
class Round:
    name: str
    transfers: int
    seconds: float
    latencies: list[float]
    client_cpu: float  # seconds of this process's CPU
    server_cpu: float | None  # seconds of the PostgreSQL processes' CPU (approximate: backends come and go)

    @property
    def rate(self) -> float:
        return self.transfers / self.seconds


async def run_round(name: str, do: Doer, moves: list[Move], writers: int) -> Round:
    chunks = [moves[w::writers] for w in range(writers)]
    latencies: list[float] = []
    hz = os.sysconf("SC_CLK_TCK")

    async def writer(chunk: list[Move]) -> None:
        for move in chunk:
            t0 = time.perf_counter()
            await do(move)
            latencies.append(time.perf_counter() - t0)

    cpu0, pg0, t0 = time.process_time(), _store_ticks(), time.perf_counter()
    await asyncio.gather(*(writer(c) for c in chunks))
    seconds = time.perf_counter() - t0
    cpu1, pg1 = time.process_time(), _store_ticks()
    return Round(name, len(moves), seconds, latencies, cpu1 - cpu0, (pg1 - pg0) / hz if pg1 >= pg0 else None)


@dataclass
class Report:
    writers: int
    transfers: int
    pool: int
    members: int
    rounds: dict[str, list[Round]] = field(default_factory=dict)
    books: dict[str, int] = field(default_factory=dict)
    entries: tuple[int, int] = (0, 0)  # (found, expected)
    notes: list[str] = field(default_factory=list)


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def render(report: Report) -> str:
    names = list(report.rounds)
    base = statistics.median(r.rate for r in report.rounds["baseline"])
    lines = [
        f"Ledger benchmark: PostgreSQL, {report.writers} concurrent writers, pool of {report.pool} connections, "
        f"{report.transfers} transfers per run, {len(report.rounds['baseline'])} rounds, {report.members} members",
        "",
        "| run | transfers/s (median) | min–max | p50 ms | p99 ms | client CPU ms/transfer "
        "| PostgreSQL CPU ms/transfer | share of baseline |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name in names:
        runs = report.rounds[name]
        rates = [r.rate for r in runs]
        latencies = [x for r in runs for x in r.latencies]
        done = sum(r.transfers for r in runs)
        client = 1000 * sum(r.client_cpu for r in runs) / done
        server_runs = [r.server_cpu for r in runs]
        server = (f"{1000 * sum(s for s in server_runs if s is not None) / done:.2f}"
                  if all(s is not None for s in server_runs) else "–")
        share = "" if name == "baseline" else f"**{statistics.median(rates) / base:.2f}**"
        lines.append(f"| {name} | {statistics.median(rates):.0f} | {min(rates):.0f}–{max(rates):.0f} "
                     f"| {1000 * _pct(latencies, 0.5):.2f} | {1000 * _pct(latencies, 0.99):.2f} | {client:.2f} "
                     f"| {server} | {share} |")
    lines.append("")
    for name in names:
        if name == "baseline":
            continue
        per_round = ", ".join(f"{r.rate / b.rate:.2f}" for r, b in zip(report.rounds[name], report.rounds["baseline"],
                                                                     strict=True))
        lines.append(f"{name}/baseline per round: {per_round}")
    ledger_share = statistics.median(r.rate for r in report.rounds["ledger"]) / base
    verdict = "met" if ledger_share >= TARGET else "NOT met"
    lines.append(f"target ledger ≥ {TARGET:.0%} of the baseline: {verdict} ({ledger_share:.0%})")
    found, expected = report.entries
    books = ", ".join(f"{k} {v}" for k, v in report.books.items())
    lines.append(f"books after the runs: {books} (every asset must be 0); ledger entries {found} of {expected} written")
    lines.extend(report.notes)
    return "\n".join(lines)


async def measure(args: argparse.Namespace) -> Report:
    import asyncpg

    from bot.config import DatabaseConfig
    from bot.db import _NoResetConnection, close_db, init_db, upgrade
    from models.ledger import Entry, check_books

    now = datetime.now(UTC)
    log(f"bench: recreating {args.pg_url} and applying the migrations")
    await recreate_database(args.pg_url)
    await upgrade(DatabaseConfig(url=args.pg_url))
    await init_db(DatabaseConfig(url=args.pg_url))
    try:
        world = await setup(args.members, now)
        pool = await asyncpg.create_pool(args.pg_url, min_size=1, max_size=world.pool_size,
                                         connection_class=_NoResetConnection)
        try:
            doers = {"baseline": baseline_doer(pool, world, now), "ledger": ledger_doer(world, now)}
            if args.detail:
                doers["sql"] = sql_doer(pool, world, now)
            report = Report(args.writers, args.transfers, world.pool_size, args.members,
                            {name: [] for name in doers})
            rng = random.Random(args.seed)
            expected = 0
            for name, do in doers.items():  # warm-up: connections opened, statements prepared
                await run_round(name, do, plan(args.warmup, args.members, f"warm-{name}", rng), args.writers)
                expected += args.warmup if name != "baseline" else 0
            names = list(doers)
            for n in range(args.rounds):
                order = names if n % 2 == 0 else names[::-1]
                for name in order:
                    if args.wait_quiet:
                        await wait_quiet(args.wait_quiet)
                    moves = plan(args.transfers, args.members, f"{n}-{name}", rng)
                    done = await run_round(name, doers[name], moves, args.writers)
                    report.rounds[name].append(done)
                    expected += args.transfers if name != "baseline" else 0
                    log(f"bench: round {n + 1} {name}: {done.rate:.0f} transfers/s")
            report.books = await check_books()
            report.entries = (await Entry.filter(key__startswith="bench:").count(), expected)
        finally:
            await pool.close()
    finally:
        await close_db()
    return report


async def wait_quiet(limit: float) -> None:
    deadline = time.monotonic() + limit
    while True:
        load = await asyncio.to_thread(box_load)
        if load is None or load < 15:
            return
        if time.monotonic() > deadline:
            log(f"bench: the box is still {load:.0f}% busy; measuring anyway")
            return
        log(f"bench: the box is {load:.0f}% busy with something else; waiting")


# ----------------------------------------------------------------------------- CLI


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.ledger", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pg-url", default=DEFAULT_PG_URL,
                   help=f"throwaway PostgreSQL database, dropped and recreated (default {DEFAULT_PG_URL})")
    p.add_argument("--writers", type=int, default=8, help="concurrent writers (default 8)")
    p.add_argument("--transfers", type=int, default=4000,
                   help="transfers per run, split among the writers (default 4000)")
    p.add_argument("--rounds", type=int, default=3, help="rounds, the order of the runs alternating (default 3)")
    p.add_argument("--warmup", type=int, default=400, help="transfers per run before the first round (default 400)")
    p.add_argument("--members", type=int, default=200, help="residents the transfers go between (default 200)")
    p.add_argument("--seed", type=int, default=7, help="seed of the random choice of accounts and amounts")
    p.add_argument("--detail", action="store_true",
                   help="add the `sql` run: the ledger's statements hand-written, without the ORM")
    p.add_argument("--wait-quiet", type=float, default=0.0, metavar="S",
                   help="before each run wait up to S seconds for other load on the box to stop (default 0)")
    p.add_argument("--keep", action="store_true", help="keep the database afterwards")
    args = p.parse_args(argv)
    if args.writers < 1 or args.rounds < 1 or args.transfers < args.writers or args.members < 2 or args.warmup < 0:
        p.error("--writers and --rounds must be positive, --transfers at least --writers, --members at least 2")
    return args


def lock_database(url: str) -> Any:
    """One run at a time per database: a second run would drop it under the first."""
    digest = hashlib.sha256(url.encode()).hexdigest()[:12]
    handle = (Path(tempfile.gettempdir()) / f"linli-bench-ledger-{digest}.lock").open("w")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        raise SystemExit("bench: another `python -m bench.ledger` run is using the same --pg-url") from None
    return handle


def _interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not args.pg_url.startswith(("postgres://", "postgresql://")):
        raise SystemExit("bench: --pg-url must name a PostgreSQL database")
    check_loopback(args.pg_url, "--pg-url")
    lock = lock_database(args.pg_url)
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        print(render(asyncio.run(measure(args))), flush=True)
    except KeyboardInterrupt:
        log("bench: interrupted")
        return 130
    finally:
        if not args.keep:
            with contextlib.suppress(Exception):
                asyncio.run(drop_database(args.pg_url))
        lock.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
