"""Booking rush: 1,000 elders book tomorrow's lunch against 300 seats through the API, against a bare
conditional UPDATE on PostgreSQL.

    python -m bench.booking_rush [--pg-url URL] [--redis-url URL] [--elders 1000] [--seats 300]
                                 [--concurrency 64] [--window 0]

On PostgreSQL + Redis (throwaway databases on loopback: the PostgreSQL database is dropped and
recreated, migrated with the checked-in migrations, the Redis database flushed; both again at the
end unless --keep) it loads the demo (its 幸福食堂 and canteen staff), makes ``--elders`` bound
residents with a mini-program session each and a wallet topped up at the counter with
``--wallet`` fen, publishes tomorrow's lunch with ``--seats`` seats at ``--price`` fen, and starts
the service (``python -m bot.cli serve``, one worker, the API's rate limits raised to 10⁹: every
client comes from 127.0.0.1). Then:

* ``api``      every elder sends one ``POST /api/v1/canteen/bookings`` (with an Idempotency-Key),
               all released at once (``--window 0``; else spread evenly over that many seconds),
               at most ``--concurrency`` in flight. Every answer is checked: 201, the elder's own
               booking, ``booked`` or ``waiting``, the menu price.
* ``baseline`` the same number of single-row conditional UPDATEs
               (``UPDATE … SET seats = seats - 1 WHERE id = 1 AND seats > 0``) on a plain table of
               the same database, through an asyncpg pool of the service's size, with the same
               concurrency: the least a correct seat count can cost.

Afterwards the books are checked against what the answers said: exactly ``--seats`` booked and the
rest wait-listed (in the database and in the answers), the menu's count equal to the seats, every
booked elder's wallet at ``wallet − price`` available with ``price`` held, every wait-listed
elder's untouched, the ledger summing to zero; the baseline's UPDATEs exactly ``--seats``
successful with 0 seats left. Rate = requests / wall time of the run; latency per request from
its scheduled start (so waiting for a free connection counts). See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp

from bench.gateway import (
    box_load,
    check_loopback,
    drop_stores,
    free_port,
    log,
    reset_stores,
    run_cli,
    start_server,
    stop_servers,
    wait_ready,
)

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PG_URL = "postgres://postgres@127.0.0.1:5432/linli_bench_rush"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/12"
NO_LIMIT = 10**9
CANTEEN = "米家社区幸福食堂"
COOK = "陈食堂"
OPENID_PREFIX = "bench-rush-"
SEATS_TABLE = "bench_rush_seats"
WITHIN = 60.0  # seconds: "1,000 elders book within one minute"


# ----------------------------------------------------------------------------- setup (in a subprocess)


async def _setup(args: argparse.Namespace) -> None:
    """The elders, their sessions and wallets, and tomorrow's lunch (writes the ids and tokens)."""
    from bot.api import create_session
    from bot.config import load_config
    from bot.db import close_db, init_db
    from bot.store import open_store
    from models.canteen_booking import publish_menu
    from models.canteen_wallet import top_up
    from models.cases import local_today
    from models.places import Building, Canteen
    from models.residents import Resident, ResidentStatus, WechatAccount

    config = load_config(None)
    await init_db(config.database)
    store = open_store(config.redis)
    try:
        now = datetime.now(UTC)
        canteen = await Canteen.get(name=CANTEEN)
        cook = await Resident.get(name=COOK)
        building = await Building.filter(community_id=canteen.community_id).order_by("id").first()  # type: ignore[attr-defined]
        assert building is not None
        await Resident.bulk_create([
            Resident(name=f"食堂老人{i:04d}", mobile=f"137{i:08d}", community_id=canteen.community_id,  # type: ignore[attr-defined]
                     building=building, unit="1", room=f"{i:04d}", status=ResidentStatus.VERIFIED, source="staff",
                     created_at=now) for i in range(args.elders)])
        elders = await Resident.filter(name__startswith="食堂老人").order_by("id")
        await WechatAccount.bulk_create([
            WechatAccount(openid=f"{OPENID_PREFIX}{r.id}", channel="mp", resident=r, created_at=now) for r in elders])
        accounts = {a.resident_id: a for a in await WechatAccount.filter(openid__startswith=OPENID_PREFIX)}  # type: ignore[attr-defined]
        rows = []
        for r in elders:
            await top_up(canteen_id=canteen.id, resident_id=r.id, amount_fen=args.wallet, method="cash",
                         receipt_no=f"RUSH-{r.id}", by_id=cook.id, now=now)
            rows.append({"resident_id": r.id,
                         "token": await create_session(store, accounts[r.id], config.api.session_hours)})
        tomorrow = local_today(now) + timedelta(days=1)
        menu, _ = await publish_menu(canteen_id=canteen.id, day=tomorrow, meal="lunch",
                                     dishes=[{"name": "红烧鱼", "marks": ["soft"]}, {"name": "炒青菜", "marks": []}],
                                     price_fen=args.price, by_id=cook.id, now=now, capacity=args.seats)
    finally:
        await store.aclose()
        await close_db()
    out = json.dumps({"menu_id": menu.id, "day": tomorrow.isoformat(), "elders": rows})
    await asyncio.to_thread(Path(args.out).write_text, out)


# ----------------------------------------------------------------------------- measuring


@dataclass
class Run:
    name: str
    requests: int
    seconds: float
    latencies: list[float]  # from each request's scheduled start: waiting for a free connection counts
    service: list[float] = field(default_factory=list)  # from sending it: the server's (or PostgreSQL's) time
    outcomes: dict[str, int] = field(default_factory=dict)  # booked / waiting (api), won / lost (baseline)
    errors: int = 0
    samples: list[str] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _paced(run: Run, window: float, concurrency: int, one: Any) -> None:
    """Run ``one(i)`` for i < run.requests, started at i × window / n seconds, at most ``concurrency``
    at a time: the wall time, and each call's latency from its scheduled start and from its sending."""
    n = run.requests
    gate = asyncio.Semaphore(concurrency)
    t0 = time.perf_counter()

    async def task(i: int) -> None:
        due = t0 + (i * window / n if window else 0.0)
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        async with gate:
            sent = time.perf_counter()
            await one(i)
        done = time.perf_counter()
        run.latencies.append(done - due)
        run.service.append(done - sent)

    await asyncio.gather(*(task(i) for i in range(n)))
    run.seconds = time.perf_counter() - t0


async def rush(base: str, setup: dict[str, Any], args: argparse.Namespace) -> tuple[Run, dict[int, str]]:
    """Every elder books the menu once; the answers, checked, by resident."""
    elders = setup["elders"]
    seen: dict[int, str] = {}
    run = Run("api", len(elders), 0.0, [])
    connector = aiohttp.TCPConnector(limit=args.concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one(i: int) -> None:
            elder = elders[i]
            headers = {"Authorization": f"Bearer {elder['token']}", "Idempotency-Key": f"rush-{elder['resident_id']}"}
            try:
                async with session.post(f"{base}/api/v1/canteen/bookings", json={"menu_id": setup["menu_id"]},
                                        headers=headers, timeout=aiohttp.ClientTimeout(total=120)) as resp:
                    body = await resp.json(content_type=None)
                    problem = None
                    if resp.status != 201:
                        problem = f"HTTP {resp.status}: {str(body)[:160]}"
                    elif body.get("resident_id") != elder["resident_id"] or body.get("menu_id") != setup["menu_id"]:
                        problem = f"someone else's booking: {str(body)[:160]}"
                    elif body.get("status") not in ("booked", "waiting"):
                        problem = f"status {body.get('status')!r}"
                    elif body.get("menu_price_fen") != args.price:
                        problem = f"menu price {body.get('menu_price_fen')}"
            except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                problem = f"{type(exc).__name__}: {exc}"
            if problem is None:
                seen[elder["resident_id"]] = body["status"]
                run.outcomes[body["status"]] = run.outcomes.get(body["status"], 0) + 1
            else:
                run.errors += 1
                if len(run.samples) < 3:
                    run.samples.append(problem)

        await _paced(run, args.window, args.concurrency, one)
    return run, seen


async def baseline(pg_url: str, n: int, seats: int, concurrency: int, window: float, pool_size: int) -> Run:
    """``n`` conditional single-row UPDATEs taking one seat each, until none is left."""
    import asyncpg

    from bot.db import _NoResetConnection

    pool = await asyncpg.create_pool(pg_url, min_size=pool_size, max_size=pool_size,
                                     connection_class=_NoResetConnection)
    run = Run("baseline", n, 0.0, [], outcomes={"won": 0, "lost": 0})
    try:
        await pool.execute(f"CREATE TABLE IF NOT EXISTS {SEATS_TABLE} (id INT PRIMARY KEY, seats INT NOT NULL)")
        await pool.execute(f"INSERT INTO {SEATS_TABLE} (id, seats) VALUES (1, $1) "
                           "ON CONFLICT (id) DO UPDATE SET seats = EXCLUDED.seats", seats)
        sql = f"UPDATE {SEATS_TABLE} SET seats = seats - 1 WHERE id = 1 AND seats > 0"

        async def one(_i: int) -> None:
            done = await pool.execute(sql)
            run.outcomes["won" if done == "UPDATE 1" else "lost"] += 1

        await _paced(run, window, concurrency, one)
        left = await pool.fetchval(f"SELECT seats FROM {SEATS_TABLE} WHERE id = 1")
        run.outcomes["left"] = int(left)
    finally:
        await pool.close()
    return run


@dataclass
class Books:
    booked: int = 0
    waiting: int = 0
    other: int = 0
    menu_booked: int = 0
    wallets_exact: int = 0
    wallets_wrong: list[str] = field(default_factory=list)
    answers_agree: int = 0
    ledger: dict[str, int] = field(default_factory=dict)
    pool_size: int = 0


async def check(pg_url: str, setup: dict[str, Any], seen: dict[int, str], args: argparse.Namespace) -> Books:
    """What the database holds after the rush, against the answers and the wallets."""
    from tortoise import connections

    from bot.config import DatabaseConfig
    from bot.db import close_db, init_db
    from models.canteen import Booking, BookingStatus, Menu
    from models.canteen_wallet import wallet_of
    from models.ledger import check_books

    await init_db(DatabaseConfig(url=pg_url))
    books = Books()
    try:
        conn: Any = connections.get("default")
        books.pool_size = int(conn.pool_maxsize)
        menu = await Menu.get(id=setup["menu_id"])
        books.menu_booked = menu.booked
        statuses = dict(await Booking.filter(menu_id=menu.id).values_list("resident_id", "status"))
        now = datetime.now(UTC)
        for elder in setup["elders"]:
            rid = elder["resident_id"]
            status = statuses.get(rid)
            if status == BookingStatus.BOOKED:
                books.booked += 1
                want = (args.wallet - args.price, args.price)
            elif status == BookingStatus.WAITING:
                books.waiting += 1
                want = (args.wallet, 0)
            else:
                books.other += 1
                want = (args.wallet, 0)
            wallet = await wallet_of(rid, now)
            if (wallet.available_fen, wallet.held_fen) == want:
                books.wallets_exact += 1
            elif len(books.wallets_wrong) < 3:
                books.wallets_wrong.append(f"resident {rid} ({status}): {wallet.available_fen}/{wallet.held_fen}, "
                                           f"want {want[0]}/{want[1]}")
            if seen.get(rid) == status:
                books.answers_agree += 1
        books.ledger = await check_books()
    finally:
        await close_db()
    return books


# ----------------------------------------------------------------------------- output


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.1f}"


def _yes(ok: bool) -> str:
    return "yes" if ok else "**NO**"


def render(api: Run, base: Run, books: Books, args: argparse.Namespace, notes: list[str]) -> str:
    n, seats = args.elders, args.seats
    how = "all at once" if not args.window else f"spread evenly over {args.window:g} s"
    lines = [
        f"Booking rush: PostgreSQL + Redis, one linli worker, {n} elders ({how}, at most {args.concurrency} in flight) "
        f"book tomorrow's lunch with {seats} seats at {args.price / 100:.2f} yuan, wallets of {args.wallet / 100:.2f} "
        f"yuan; baseline: {n} conditional UPDATEs on a pool of {books.pool_size} connections",
        "",
        "| run | requests | wall s | requests/s | p50 ms | p99 ms | service p50 ms | service p99 ms | outcome "
        "| errors |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for run, outcome in ((api, f"{api.outcomes.get('booked', 0)} booked, {api.outcomes.get('waiting', 0)} "
                               "wait-listed"),
                         (base, f"{base.outcomes.get('won', 0)} seats taken, {base.outcomes.get('lost', 0)} "
                                f"refused, {base.outcomes.get('left', '?')} left")):
        lines.append(f"| {'api booking' if run is api else 'bare UPDATE'} | {run.requests} | {run.seconds:.2f} "
                     f"| {run.rate:.0f} | {_ms(pct(run.latencies, 0.5))} | {_ms(pct(run.latencies, 0.99))} "
                     f"| {_ms(pct(run.service, 0.5))} | {_ms(pct(run.service, 0.99))} | {outcome} | {run.errors} |")
    lines.append("")
    lines.append("p50/p99: from the request's scheduled start (a burst: all at the start, so waiting for one of the "
                 f"{args.concurrency} connections counts); service: from sending it to its answer.")
    if not args.window:
        ratio = api.rate / base.rate if base.rate else 0.0
        lines.append(f"api / baseline requests/s: {ratio:.3f} (the bare UPDATE is {1 / ratio:.0f}x faster)"
                     if ratio else "api / baseline requests/s: -")
        within = api.seconds <= WITHIN and not api.errors
        lines.append(f"all {n} bookings answered within one minute: {_yes(within)} ({api.seconds:.1f} s)")
    else:  # the rate is the arrivals': what counts is keeping up with them
        late = pct(api.latencies, 0.99)
        lines.append(f"kept up with the arrivals ({n} in {args.window:g} s): p99 {_ms(late)} ms after each was due, "
                     f"the last answered {api.seconds:.1f} s after the first was sent, errors {api.errors}")
    lines += [
        f"exactly {seats} booked: {_yes(books.booked == seats)} ({books.booked} in the database, "
        f"{api.outcomes.get('booked', 0)} answered, the menu counts {books.menu_booked})",
        f"exactly {n - seats} wait-listed: {_yes(books.waiting == n - seats)} ({books.waiting} in the database, "
        f"{api.outcomes.get('waiting', 0)} answered; {books.other} other)",
        f"every answer says what the database holds: {_yes(books.answers_agree == n)} ({books.answers_agree} of {n})",
        f"wallets exact: {_yes(books.wallets_exact == n)} ({books.wallets_exact} of {n}: booked "
        f"{(args.wallet - args.price) / 100:.2f} available + {args.price / 100:.2f} held, wait-listed untouched)"
        + (f"; e.g. {books.wallets_wrong[0]}" if books.wallets_wrong else ""),
        "books sum to zero: " + _yes(all(v == 0 for v in books.ledger.values())) + " ("
        + ", ".join(f"{k} {v}" for k, v in books.ledger.items()) + ")",
        f"baseline exactly {seats} seats taken: "
        + _yes(base.outcomes.get("won") == seats and base.outcomes.get("left") == 0),
    ]
    for sample in api.samples:
        lines.append(f"api error, e.g.: {sample}")
    lines.extend(notes)
    return "\n".join(line for line in lines if line is not None)


# ----------------------------------------------------------------------------- CLI


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.booking_rush", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pg-url", default=DEFAULT_PG_URL,
                   help=f"throwaway PostgreSQL database, dropped and recreated (default {DEFAULT_PG_URL})")
    p.add_argument("--redis-url", default=DEFAULT_REDIS_URL,
                   help=f"throwaway Redis database, flushed (default {DEFAULT_REDIS_URL})")
    p.add_argument("--elders", type=int, default=1000, help="elders who book, one request each (default 1000)")
    p.add_argument("--seats", type=int, default=300, help="seats of the lunch (default 300)")
    p.add_argument("--concurrency", type=int, default=64, help="requests in flight at most (default 64)")
    p.add_argument("--window", type=float, default=0.0,
                   help="seconds to spread the requests over (default 0: all released at once)")
    p.add_argument("--price", type=int, default=1500, help="the menu price in fen (default 1500)")
    p.add_argument("--wallet", type=int, default=2000, help="each elder's wallet in fen (default 2000)")
    p.add_argument("--keep", action="store_true", help="keep the temporary directory (server log) and databases")
    args = p.parse_args(argv)
    if not (1 <= args.seats <= args.elders <= 20000 and 1 <= args.concurrency <= 2000 and args.window >= 0
            and 1 <= args.price <= args.wallet):
        p.error("need 1 <= --seats <= --elders <= 20000, 1 <= --concurrency <= 2000, --window >= 0, "
                "1 <= --price <= --wallet")
    return args


def lock_stores(args: argparse.Namespace) -> Any:
    """One run at a time per pair of throwaway databases: a second run would wipe them under the first."""
    digest = hashlib.sha256(f"{args.pg_url} {args.redis_url}".encode()).hexdigest()[:12]
    handle = (Path(tempfile.gettempdir()) / f"linli-bench-rush-{digest}.lock").open("w")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        raise SystemExit("bench: another `python -m bench.booking_rush` run is using the same databases") from None
    return handle


def _interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt  # outside the event loop: unwind through the finally that stops the server


async def _serve_and_rush(server: Any, setup: dict[str, Any], args: argparse.Namespace) -> tuple[Run, dict[int, str]]:
    async with aiohttp.ClientSession() as session:
        await wait_ready(session, server)
    return await rush(server.base, setup, args)


def run(args: argparse.Namespace) -> str:
    tmp = Path(tempfile.mkdtemp(prefix="linli-bench-rush-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("LINLI_")}
    env.update({
        "PYTHONPATH": str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else ""),
        "LINLI_LOGGING_LEVEL": "WARNING", "LINLI_SERVER_WORKERS": "1",
        "LINLI_DATABASE_URL": args.pg_url, "LINLI_REDIS_URL": args.redis_url,
        "LINLI_API_LOGIN_PER_MINUTE": str(NO_LIMIT), "LINLI_API_WRITES_PER_MINUTE": str(NO_LIMIT),
        "LINLI_API_WRITES_PER_MINUTE_IP": str(NO_LIMIT),
    })
    servers = []
    notes: list[str] = []
    quiet = box_load()
    if quiet is not None and quiet > 10:
        notes.append(f"caution: the box was {quiet:.0f}% busy (of 200%) before the run: something else is running, "
                     "so these numbers are low and noisy")
    try:
        asyncio.run(reset_stores(args.pg_url, args.redis_url))
        run_cli(["db", "upgrade"], env, tmp)
        log(f"bench: loading the demo, {args.elders} elders with wallets and sessions, tomorrow's lunch")
        run_cli(["demo"], env, tmp)
        proc = subprocess.run(
            [sys.executable, "-m", "bench.booking_rush", "_setup", "--out", str(tmp / "setup.json"),
             "--elders", str(args.elders), "--seats", str(args.seats), "--price", str(args.price),
             "--wallet", str(args.wallet)], env=env, cwd=tmp, capture_output=True, text=True, timeout=900, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"bench setup failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}")
        setup = json.loads((tmp / "setup.json").read_text())
        port = free_port()
        server = start_server("linli", [sys.executable, "-m", "bot.cli", "serve", "--host", "127.0.0.1",
                                        "--port", str(port)], env, tmp, port)
        servers.append(server)
        log(f"bench: {args.elders} elders book {setup['day']} lunch ({args.seats} seats)")
        api, seen = asyncio.run(_serve_and_rush(server, setup, args))
        if server.proc.poll() is not None:
            notes.append(f"linli exited during the run ({server.proc.returncode}): {server.log_tail(5)}")
        stop_servers(servers)
        found = server.problems()
        if found:
            notes.append(f"linli log: {len(found)} warning/error line(s), last: {found[-1][:300]}")
        books = asyncio.run(check(args.pg_url, setup, seen, args))
        log(f"bench: the baseline, {args.elders} conditional UPDATEs")
        base = asyncio.run(baseline(args.pg_url, args.elders, args.seats, args.concurrency, args.window,
                                    books.pool_size))
        return render(api, base, books, args, notes)
    finally:
        stop_servers(servers)
        if not args.keep:
            with contextlib.suppress(Exception):
                asyncio.run(drop_stores(args.pg_url, args.redis_url))
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            log(f"bench: kept {tmp}")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "_setup":
        p = argparse.ArgumentParser(prog="python -m bench.booking_rush _setup")
        p.add_argument("_setup")
        for name in ("--elders", "--seats", "--price", "--wallet"):
            p.add_argument(name, type=int, required=True)
        p.add_argument("--out", required=True)
        asyncio.run(_setup(p.parse_args(argv)))
        return 0
    args = parse_args(argv)
    if not args.pg_url.startswith(("postgres://", "postgresql://")):
        raise SystemExit("bench: --pg-url must name a PostgreSQL database")
    check_loopback(args.pg_url, "--pg-url")
    check_loopback(args.redis_url, "--redis-url")
    lock = lock_stores(args)
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)
    try:
        print(run(args), flush=True)
    except KeyboardInterrupt:
        log("bench: interrupted; server stopped")
        return 130
    finally:
        lock.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
