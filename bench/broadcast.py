"""Broadcast benchmark: one notice to many residents through the real outbox sender.

    python -m bench.broadcast [--residents 100000] [--rate 2000] [--latency-ms 20]

On Redis + PostgreSQL (throwaway databases on loopback, recreated and flushed): N residents with
official-account openids are written straight into SQL (COPY), one community; one notice is
created and fanned out with ``models.notices.fan_out`` (timed). Then, each against a fresh fake
WeChat API in its own process (``bot.testing.FakeWeChat``, answering custom/send after
``--latency-ms``, every recipient given a customer-service window):

* ``baseline``  a bare sender: aiohttp + aiolimiter at the same rate and concurrency, one token,
                no database; what this box can push through the fake at all;
* ``linli``     the real sender (``bot.services.open_services`` → ``bot.outbox.Sender``) in its own
                process, configured with wechat.api_base_url/appid/secret pointing at the fake,
                outbox.rate_per_second = --rate and outbox.concurrency = --concurrency;
* ``linli-kill`` the same after the outbox rows are put back to pending: the sender is SIGKILLed
                when the fake has received about half, restarted at once, and the fake's record
                gives duplicates (openids received twice) and misses (never received).

Send time is the fake's first to last accepted message; the ideal is N / rate. See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import hashlib
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from bench.gateway import (
    CpuSnap,
    CpuUse,
    Server,
    _proc_ticks,
    box_load,
    check_loopback,
    drop_stores,
    free_port,
    log,
    reset_stores,
    run_cli,
    start_server,
    stop_servers,
)

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PG_URL = "postgres://postgres@127.0.0.1:5432/linli_bench_broadcast"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/12"
APPID, SECRET = "wx-bench-broadcast", "bench-broadcast-secret"
OPENID_PREFIX = "bench-bc-"
SEND_PATH = "/cgi-bin/message/custom/send"
COMMUNITY = "广播测试社区"


# ----------------------------------------------------------------------------- the fake WeChat process


def _fake(args: argparse.Namespace) -> None:
    """FakeWeChat on --port, every listed openid with a fresh customer-service window; a second small
    server on --stats-port says what the fake received (counted per openid as it arrives)."""
    from aiohttp import web

    from bot.testing import FakeWeChat

    expected = Path(args.openids).read_text().split()
    counts: dict[str, int] = {}
    times: list[float] = []  # wall time of the first and the latest accepted message
    rejected = 0

    def on_send(message: Any) -> None:
        now = time.time()
        counts[message.touser] = counts.get(message.touser, 0) + 1
        if not times:
            times.extend((now, now))
        times[1] = now

    async def stats(_request: web.Request) -> web.Response:
        nonlocal rejected
        rejected = sum(1 for c in fake.calls if c.path == SEND_PATH and c.errcode not in (0, None))
        doc: dict[str, Any] = {"received": sum(counts.values()), "distinct": len(counts), "rejected": rejected,
                               "first": times[0] if times else None, "last": times[1] if times else None}
        if _request.query.get("full"):
            doc["duplicates"] = {o: c for o, c in counts.items() if c > 1}
            missing = [o for o in expected if o not in counts]
            doc["missing"] = len(missing)
            doc["missing_sample"] = missing[:5]
            doc["unexpected"] = sum(1 for o in counts if not o.startswith(OPENID_PREFIX))
        return web.json_response(doc)

    async def main() -> None:
        global fake
        fake = FakeWeChat(appid=APPID, secret=SECRET)
        for openid in expected:
            fake.interact(openid)
        fake.set_latency(SEND_PATH, args.latency_ms / 1000)
        fake.on_send = on_send
        await fake.start(port=args.port)
        app = web.Application()
        app.router.add_get("/stats", stats)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", args.stats_port).start()
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        await stop.wait()
        await runner.cleanup()
        await fake.stop()

    asyncio.run(main())


fake: Any = None


# ----------------------------------------------------------------------------- the senders


def _sender() -> None:
    """The production sender, as `linli serve` runs it (configuration from LINLI_* variables)."""
    from bot.clock import Clock
    from bot.config import load_config
    from bot.db import close_db, init_db
    from bot.logs import setup_logging
    from bot.services import open_services

    config = load_config(None)
    setup_logging(config.logging.level, config.logging.json)

    async def main() -> None:
        await init_db(config.database)
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        try:
            async with open_services(config, Clock(), run_sender=True, run_scheduler=False):
                await stop.wait()
        finally:
            await close_db()

    asyncio.run(main())


def _baseline(args: argparse.Namespace) -> None:
    """The least a sender must do: one token, then custom/send per openid at the capped rate."""
    from aiolimiter import AsyncLimiter

    openids = Path(args.openids).read_text().split()
    text = "【社区通知】基准测试\n" + "停水通知" * 10

    async def main() -> None:
        limiter = AsyncLimiter(args.rate, 1)
        failures = 0
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
            async with session.post(f"{args.url}/cgi-bin/stable_token", json={
                    "grant_type": "client_credential", "appid": APPID, "secret": SECRET}) as resp:
                token = (await resp.json())["access_token"]
            todo = iter(openids)

            async def worker() -> None:
                nonlocal failures
                for openid in todo:
                    async with limiter:
                        body = {"touser": openid, "msgtype": "text", "text": {"content": text}}
                        async with session.post(f"{args.url}{SEND_PATH}", params={"access_token": token},
                                                json=body) as resp:
                            if (await resp.json()).get("errcode", 0) != 0:
                                failures += 1

            await asyncio.gather(*(worker() for _ in range(args.concurrency)))
        if failures:
            print(f"baseline: {failures} sends refused", file=sys.stderr)

    asyncio.run(main())


# ----------------------------------------------------------------------------- set-up


async def setup_data(pg_url: str, n: int) -> list[str]:
    """N residents of one community, each with a subscribed official-account openid (COPY)."""
    from datetime import UTC, datetime

    import asyncpg

    now = datetime.now(UTC)
    openids = [f"{OPENID_PREFIX}{i:06d}" for i in range(n)]
    conn = await asyncpg.connect(pg_url)
    try:
        sub = await conn.fetchval("INSERT INTO sub_district (name) VALUES ('基准街道') RETURNING id")
        community = await conn.fetchval("INSERT INTO community (name, sub_district_id) VALUES ($1, $2) RETURNING id",
                                        COMMUNITY, sub)
        await conn.copy_records_to_table(
            "resident", columns=["name", "community_id", "unit", "room", "status", "source", "created_at"],
            records=((f"居民{i}", community, "1", str(100 + i % 900), "verified", "import", now) for i in range(n)))
        ids = [r["id"] for r in await conn.fetch("SELECT id FROM resident ORDER BY id")]
        await conn.copy_records_to_table(
            "wechat_account", columns=["openid", "channel", "resident_id", "subscribed", "last_scene", "created_at"],
            records=((o, "oa", rid, True, "", now) for o, rid in zip(openids, ids, strict=True)))
        await conn.execute("ANALYZE")
    finally:
        await conn.close()
    return openids


async def create_and_fan_out(database_url: str) -> tuple[int, float, dict[str, int]]:
    from bot.clock import Clock
    from bot.config import DatabaseConfig
    from bot.db import close_db, init_db
    from models.notices import Urgency, create_notice, fan_out
    from models.places import Community

    await init_db(DatabaseConfig(url=database_url))
    try:
        now = Clock().now()
        community = await Community.get(name=COMMUNITY)
        notice = await create_notice(community_id=community.id, title="停水通知",
                                     text="明日9时至12时停水，请提前储水。", urgency=Urgency.NORMAL,
                                     now=now, send_at=now, by_id=None)
        t0 = time.perf_counter()
        counts = await fan_out(notice.id, now)
        return notice.id, time.perf_counter() - t0, counts
    finally:
        await close_db()


# ----------------------------------------------------------------------------- one run


@dataclass
class Result:
    name: str
    n: int
    span: float | None = None  # first to last message the fake accepted
    wall: float | None = None  # sender started → everything marked (linli) / process exited (baseline)
    received: int = 0
    distinct: int = 0
    rejected: int = 0
    duplicates: int | None = None
    misses: int | None = None
    failed_rows: int | None = None
    hwm_kib: list[int] = field(default_factory=list)
    cpu_ms_per_msg: float | None = None
    fake_cpu: float | None = None
    cpu: CpuUse | None = None
    killed_at: int | None = None
    notes: list[str] = field(default_factory=list)


def vm_hwm(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


async def fake_stats(session: aiohttp.ClientSession, port: int, full: bool = False) -> dict[str, Any]:
    async with session.get(f"http://127.0.0.1:{port}/stats", params={"full": "1"} if full else {}) as resp:
        return await resp.json()  # type: ignore[no-any-return]


async def wait_port(session: aiohttp.ClientSession, proc: subprocess.Popen[bytes], port: int, what: Server) -> None:
    deadline = time.monotonic() + 120
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"{what.name} exited with {proc.returncode}:\n{what.log_tail()}")
        with contextlib.suppress(aiohttp.ClientError, OSError):
            await fake_stats(session, port)
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what.name} not ready:\n{what.log_tail()}")
        await asyncio.sleep(0.1)


async def outbox_left(conn: Any) -> tuple[int, int]:
    row = await conn.fetchrow("SELECT count(*) FILTER (WHERE state IN ('pending', 'sending')) AS left, "
                              "count(*) FILTER (WHERE state = 'failed') AS failed FROM outbox")
    return int(row["left"]), int(row["failed"])


def start_fake(tmp: Path, env: dict[str, str], args: argparse.Namespace, name: str) -> tuple[Server, int, str]:
    port, stats_port = free_port(), free_port()
    server = start_server(f"fake-{name}", [sys.executable, "-m", "bench.broadcast", "_fake", "--port", str(port),
                                           "--stats-port", str(stats_port), "--latency-ms", str(args.latency_ms),
                                           "--openids", str(tmp / "openids.txt")], env, tmp, port)
    return server, stats_port, f"http://127.0.0.1:{port}"


async def run_baseline(tmp: Path, env: dict[str, str], args: argparse.Namespace) -> Result:
    res = Result("baseline", args.residents)
    fake_srv, stats_port, url = start_fake(tmp, env, args, "baseline")
    try:
        async with aiohttp.ClientSession() as session:
            await wait_port(session, fake_srv.proc, stats_port, fake_srv)
            t0 = time.perf_counter()
            srv = start_server("baseline", [sys.executable, "-m", "bench.broadcast", "_baseline", "--url", url,
                                            "--openids", str(tmp / "openids.txt"), "--rate", str(args.rate),
                                            "--concurrency", str(args.concurrency)], env, tmp, 0)
            snap = CpuSnap.take(srv.proc.pid)
            fake0 = _proc_ticks(fake_srv.proc.pid)
            hwm, ticks = None, None
            while srv.proc.poll() is None:
                hwm = vm_hwm(srv.proc.pid) or hwm
                ticks = _proc_ticks(srv.proc.pid) or ticks
                await asyncio.sleep(0.1)
            res.wall = time.perf_counter() - t0
            end = CpuSnap.take(srv.proc.pid)
            end.server = ticks  # the last reading while it ran (within 0.1 s of its end)
            res.cpu = CpuUse.between(snap, end)
            res.notes += [f"baseline exited {srv.proc.returncode}: {srv.log_tail(3)}"] if srv.proc.returncode else []
            st = await fake_stats(session, stats_port, full=True)
            fill(res, st)
            res.fake_cpu = cpu_pct(fake0, _proc_ticks(fake_srv.proc.pid), res.wall)
            if hwm:
                res.hwm_kib.append(hwm)
            if res.cpu.server is not None and res.received:
                res.cpu_ms_per_msg = res.cpu.server * 10 * res.wall / res.received
    finally:
        stop_servers([fake_srv])
    return res


def cpu_pct(a: int | None, b: int | None, wall: float) -> float | None:
    if a is None or b is None or wall <= 0:
        return None
    return 100 * (b - a) / os.sysconf("SC_CLK_TCK") / wall


def fill(res: Result, st: dict[str, Any]) -> None:
    res.received, res.distinct, res.rejected = st["received"], st["distinct"], st["rejected"]
    if st["first"] is not None:
        res.span = st["last"] - st["first"]
    if "duplicates" in st:
        res.duplicates = len(st["duplicates"])
        res.misses = st["missing"]
        if st["missing"]:
            res.notes.append(f"missing, e.g. {st['missing_sample']}")
        if st["unexpected"]:
            res.notes.append(f"{st['unexpected']} messages to openids outside the benchmark")


async def run_linli(tmp: Path, env: dict[str, str], args: argparse.Namespace, kill: bool) -> Result:
    import asyncpg
    from redis.asyncio import Redis

    name = "linli-kill" if kill else "linli"
    res = Result(name, args.residents)
    conn = await asyncpg.connect(args.pg_url)
    redis = Redis.from_url(args.redis_url)
    await redis.flushdb()  # the cached token belongs to the previous fake
    await redis.aclose()
    await conn.execute("UPDATE outbox SET state = 'pending', attempts = 0, sent_at = NULL, lease_until = NULL, "
                       "error_code = NULL, error_message = '', next_attempt_at = now()")
    fake_srv, stats_port, url = start_fake(tmp, env, args, name)
    senders: list[Server] = []
    try:
        async with aiohttp.ClientSession() as session:
            await wait_port(session, fake_srv.proc, stats_port, fake_srv)
            senv = {**env, "LINLI_WECHAT_API_BASE_URL": url, "LINLI_WECHAT_APPID": APPID,
                    "LINLI_WECHAT_SECRET": SECRET, "LINLI_OUTBOX_RATE_PER_SECOND": str(args.rate),
                    "LINLI_OUTBOX_CONCURRENCY": str(args.concurrency),
                    "LINLI_OUTBOX_LEASE_SECONDS": str(args.lease_seconds)}
            cmd = [sys.executable, "-m", "bench.broadcast", "_sender"]
            t0 = time.perf_counter()
            senders.append(start_server(f"sender-{name}", cmd, senv, tmp, 0))
            snap = CpuSnap.take(senders[0].proc.pid)
            fake0 = _proc_ticks(fake_srv.proc.pid)
            sender_ticks = 0
            last_db = 0.0
            while True:
                await asyncio.sleep(0.1)
                current = senders[-1]
                if current.proc.poll() is not None:
                    raise RuntimeError(f"the sender exited ({current.proc.returncode}):\n{current.log_tail()}")
                hwm = vm_hwm(current.proc.pid)
                if kill and res.killed_at is None:
                    st = await fake_stats(session, stats_port)
                    if st["distinct"] >= args.residents // 2:
                        res.hwm_kib.append(hwm or 0)
                        sender_ticks += _proc_ticks(current.proc.pid) or 0
                        current.proc.send_signal(signal.SIGKILL)
                        current.proc.wait()
                        res.killed_at = (await fake_stats(session, stats_port))["distinct"]
                        log(f"[{name}] SIGKILLed the sender after {res.killed_at} recipients; restarting it")
                        senders.append(start_server(f"sender-{name}-2", cmd, senv, tmp, 0))
                        continue
                if time.perf_counter() - last_db >= 0.5:
                    last_db = time.perf_counter()
                    left, failed = await outbox_left(conn)
                    if left == 0:
                        break
            res.wall = time.perf_counter() - t0
            end = CpuSnap.take(senders[-1].proc.pid)
            res.hwm_kib.append(vm_hwm(senders[-1].proc.pid) or 0)
            sender_ticks += end.server or 0
            res.cpu = CpuUse.between(snap, end)
            if kill:  # the sender column of CpuUse saw only one process: recompute from both
                res.cpu.server = cpu_pct(0, sender_ticks, res.wall)
            res.fake_cpu = cpu_pct(fake0, _proc_ticks(fake_srv.proc.pid), res.wall)
            st = await fake_stats(session, stats_port, full=True)
            fill(res, st)
            res.failed_rows = failed
            if res.cpu.server is not None and res.received:
                res.cpu_ms_per_msg = res.cpu.server * 10 * res.wall / res.received
    finally:
        stop_servers([*senders, fake_srv])
        await conn.close()
    for s in senders:
        found = [line for line in s.log.read_text(errors="replace").splitlines()
                 if "ERROR" in line or "Traceback" in line or "WARNING" in line]
        if found:
            res.notes.append(f"{s.name} log: {len(found)} warning/error line(s), last: {found[-1][:200]}")
    return res


# ----------------------------------------------------------------------------- report


def _f(value: float | None, fmt: str = "{:.1f}") -> str:
    return "–" if value is None else fmt.format(value)


def render(args: argparse.Namespace, fan: tuple[float, dict[str, int]], results: list[Result]) -> str:
    ideal = args.residents / args.rate
    lines = [
        f"broadcast: {args.residents} residents, rate cap {args.rate}/s, fake WeChat latency {args.latency_ms} ms, "
        f"sender concurrency {args.concurrency}, lease {args.lease_seconds} s",
        f"fan-out (models.notices.fan_out): {fan[0]:.1f} s, {args.residents / fan[0]:.0f} residents/s, {fan[1]}",
        "",
        "| run | send time s (first→last) | ideal N/rate s | ratio | wall s | received | distinct | rejected "
        "| duplicates | misses | failed rows | sender peak RSS MiB | sender CPU % | CPU ms/msg | fake CPU % "
        "| PG+Redis CPU % | other CPU % | box CPU % |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        ratio = r.span / ideal if r.span else None
        cpu = r.cpu
        other = None  # the box minus sender, fake, stores and this process: anything else running
        if cpu and cpu.box is not None and cpu.stores is not None:
            other = max(0.0, cpu.box - (cpu.server or 0) - (r.fake_cpu or 0) - cpu.stores - cpu.client)
        lines.append(
            f"| {r.name} | {_f(r.span, '{:.2f}')} | {ideal:.2f} | {_f(ratio, '{:.3f}')} | {_f(r.wall)} | {r.received} "
            f"| {r.distinct} | {r.rejected} | {_f(r.duplicates, '{}')} | {_f(r.misses, '{}')} "
            f"| {_f(r.failed_rows, '{}')} | {' / '.join(f'{h / 1024:.0f}' for h in r.hwm_kib) or '–'} "
            f"| {_f(cpu.server if cpu else None, '{:.0f}')} | {_f(r.cpu_ms_per_msg, '{:.2f}')} "
            f"| {_f(r.fake_cpu, '{:.0f}')} | {_f(cpu.stores if cpu else None, '{:.0f}')} "
            f"| {_f(other, '{:.0f}')} | {_f(cpu.box if cpu else None, '{:.0f}')} |")
    lines.append("")
    linli = next((r for r in results if r.name == "linli"), None)
    if linli and linli.span:
        ok = linli.span <= 1.15 * ideal and linli.misses == 0 and linli.duplicates == 0
        lines.append(f"target (send time within 15% of N/rate): {'met' if ok else 'NOT met'} "
                     f"(ratio {linli.span / ideal:.3f})")
    killed = next((r for r in results if r.name == "linli-kill"), None)
    if killed:
        ok = killed.misses == 0 and (killed.duplicates or 0) <= args.concurrency
        lines.append(f"target after SIGKILL at {killed.killed_at} (misses 0, duplicates ≤ {args.concurrency}): "
                     f"{'met' if ok else 'NOT met'} (misses {killed.misses}, duplicates {killed.duplicates})")
    for r in results:
        for note in r.notes:
            lines.append(f"note [{r.name}]: {note}")
        if r.cpu and r.cpu.steal and r.cpu.steal > 5:
            lines.append(f"note [{r.name}]: the hypervisor withheld {r.cpu.steal:.0f}% CPU (steal)")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- CLI


def lock_stores(args: argparse.Namespace) -> Any:
    digest = hashlib.sha256(f"{args.pg_url} {args.redis_url}".encode()).hexdigest()[:12]
    handle = (Path(tempfile.gettempdir()) / f"linli-bench-broadcast-{digest}.lock").open("w")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        raise SystemExit("bench: another benchmark run is using the same --pg-url and --redis-url") from None
    return handle


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.broadcast", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--residents", type=int, default=100_000)
    p.add_argument("--rate", type=int, default=2000, help="outbox.rate_per_second (default 2000)")
    p.add_argument("--latency-ms", type=float, default=20.0, help="the fake's custom/send latency (default 20)")
    p.add_argument("--concurrency", type=int, default=0,
                   help="outbox.concurrency (default: 2.5 × rate × latency, rounded up: slack for the "
                        "marks and the box's own delays)")
    p.add_argument("--lease-seconds", type=int, default=10,
                   help="outbox.lease_seconds: how long a killed sender's claimed rows wait (default 10)")
    p.add_argument("--no-baseline", action="store_true", help="skip the bare-sender baseline")
    p.add_argument("--no-kill", action="store_true", help="skip the SIGKILL run")
    p.add_argument("--pg-url", default=DEFAULT_PG_URL)
    p.add_argument("--redis-url", default=DEFAULT_REDIS_URL)
    p.add_argument("--keep", action="store_true", help="keep the temporary directory (logs) and the database")
    args = p.parse_args(argv)
    if args.residents < 2 or args.residents > 999_999 or args.rate < 1 or args.latency_ms < 0:
        p.error("--residents between 2 and 999999, --rate positive, --latency-ms not negative")
    if args.concurrency <= 0:
        args.concurrency = max(1, math.ceil(2.5 * args.rate * args.latency_ms / 1000))
    return args


def internal(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.broadcast")
    sub = p.add_subparsers(dest="command", required=True)
    f = sub.add_parser("_fake")
    f.add_argument("--port", type=int, required=True)
    f.add_argument("--stats-port", type=int, required=True)
    f.add_argument("--latency-ms", type=float, required=True)
    f.add_argument("--openids", required=True)
    sub.add_parser("_sender")
    b = sub.add_parser("_baseline")
    b.add_argument("--url", required=True)
    b.add_argument("--openids", required=True)
    b.add_argument("--rate", type=int, required=True)
    b.add_argument("--concurrency", type=int, required=True)
    args = p.parse_args(argv)
    if args.command == "_fake":
        _fake(args)
    elif args.command == "_sender":
        _sender()
    else:
        _baseline(args)
    return 0


def _interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0].startswith("_"):
        return internal(argv)
    args = parse_args(argv)
    check_loopback(args.pg_url, "--pg-url")
    check_loopback(args.redis_url, "--redis-url")
    args.lock = lock_stores(args)
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)
    tmp = Path(tempfile.mkdtemp(prefix="linli-bench-broadcast-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("LINLI_")}
    env.update({
        "PYTHONPATH": str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else ""),
        "LINLI_LOGGING_LEVEL": "WARNING", "LINLI_DATABASE_URL": args.pg_url, "LINLI_REDIS_URL": args.redis_url,
    })
    try:
        quiet = box_load()
        asyncio.run(reset_stores(args.pg_url, args.redis_url))
        run_cli(["db", "upgrade"], env, tmp)
        log(f"creating {args.residents} residents")
        openids = asyncio.run(setup_data(args.pg_url, args.residents))
        (tmp / "openids.txt").write_text("\n".join(openids))
        log("fanning the notice out")
        _notice, fan_s, counts = asyncio.run(create_and_fan_out(args.pg_url))
        log(f"fan-out took {fan_s:.1f} s: {counts}")
        results = []
        if not args.no_baseline:
            log("baseline: bare sender")
            results.append(asyncio.run(run_baseline(tmp, env, args)))
        log("linli: the outbox sender")
        results.append(asyncio.run(run_linli(tmp, env, args, kill=False)))
        if not args.no_kill:
            log("linli: the outbox sender, SIGKILLed at about half and restarted")
            results.append(asyncio.run(run_linli(tmp, env, args, kill=True)))
        out = render(args, (fan_s, counts), results)
        if quiet is not None and quiet > 10:
            out += f"\ncaution: the box was {quiet:.0f}% busy (of 200%) before the run"
        print(out, flush=True)
    except (KeyboardInterrupt, asyncio.CancelledError):
        log("bench: interrupted")
        return 130
    finally:
        if not args.keep:
            with contextlib.suppress(Exception):
                asyncio.run(drop_stores(args.pg_url, args.redis_url))
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            log(f"kept {tmp}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
