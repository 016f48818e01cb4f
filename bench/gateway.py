"""Load-test the WeChat gateway: ``linli serve`` against two bare aiohttp + wechatpy baselines.

    python -m bench.gateway [--backend embedded|redis-pg|both] [--duration S] [--residents N]

For each backend it starts three servers on free loopback ports, one worker process each:

* ``echo``     bench/baseline.py: signature, decrypt, parse, encrypted TextReply echo; no state;
* ``stateful`` the echo plus an atomic push claim (SET NX + TTL, later holding the reply), a
               per-resident redis-py lock and one state read and write per message;
* ``linli``    the real service (``python -m bot.cli serve``) with the demo data loaded.

This process plays WeChat (safe mode: ``encrypt_type=aes``, ``msg_signature``, unique MsgIds)
for many residents, each mid-conversation: against linli every resident walks the binding
conversation and a few menu steps, over and over, and every reply is decrypted, its
MsgSignature verified and its text checked against what that step must answer; the baselines
must echo the text. Then:

1. closed loop: C clients, each sending the next message as soon as the previous reply is in,
   for ``--duration`` seconds after a warm-up → peak messages/s, p50, p99;
2. open loop at ``--open-fraction`` (70%) of the *stateful* baseline's peak, on a fixed arrival
   schedule, latency measured from each message's scheduled send time (so queueing in the
   client shows up instead of being hidden by coordinated omission) → achieved rate, p50, p99.

Everything printed is measured in this run. See bench/README.md for the limits of a 2-core box.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import itertools
import math
import os
import re
import secrets
import shutil
import signal
import socket
import string
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
import phonenumbers
from wechatpy.crypto import PrpCrypto, WeChatCrypto
from yarl import URL

ROOT = Path(__file__).resolve().parent.parent
OFFICIAL = "gh_linli_bench"
SERVERS = ("echo", "stateful", "linli")
LOOPBACK = ("127.0.0.1", "localhost", "::1")
DEFAULT_PG_URL = "postgres://postgres@127.0.0.1:5432/linli_bench"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/14"
TIMESTAMP_WINDOW_S = 300
REQUEST_TIMEOUT_S = 30.0

# ----------------------------------------------------------------------------- WeChat's side


def sign(*parts: str) -> str:
    """WeChat's SHA1 signature (written here again so the bench does not trust the service's)."""
    return hashlib.sha1("".join(sorted(parts)).encode()).hexdigest()


@dataclass(frozen=True)
class Creds:
    token: str
    appid: str
    aes_key: str

    @classmethod
    def random(cls) -> Creds:
        alnum = string.ascii_letters + string.digits
        return cls(secrets.token_hex(16), "wx" + secrets.token_hex(8),
                   "".join(secrets.choice(alnum) for _ in range(43)))


class BadReply(Exception):
    pass


class Wire:
    """Builds encrypted pushes and opens encrypted replies, as WeChat's servers would."""

    def __init__(self, creds: Creds) -> None:
        self.creds = creds
        self.prp = PrpCrypto(WeChatCrypto(creds.token, creds.aes_key, creds.appid).key)
        self.msg_ids = itertools.count(7_000_000_000_000_000_000 + secrets.randbelow(10**15) * 1000)
        self.nonces = itertools.count(secrets.randbelow(10**9))

    def encrypt(self, openid: str, content: str) -> tuple[str, bytes]:
        """The Encrypt value and the POST body of one text message with a fresh MsgId."""
        xml = (f"<xml><ToUserName><![CDATA[{OFFICIAL}]]></ToUserName>"
               f"<FromUserName><![CDATA[{openid}]]></FromUserName><CreateTime>{int(time.time())}</CreateTime>"
               f"<MsgType><![CDATA[text]]></MsgType><Content><![CDATA[{content}]]></Content>"
               f"<MsgId>{next(self.msg_ids)}</MsgId></xml>")
        encrypted = self.prp.encrypt(xml, self.creds.appid)
        encrypted = encrypted.decode() if isinstance(encrypted, bytes) else encrypted
        body = (f"<xml><ToUserName><![CDATA[{OFFICIAL}]]></ToUserName>"
                f"<Encrypt><![CDATA[{encrypted}]]></Encrypt></xml>").encode()
        return encrypted, body

    def url(self, base: str, encrypted: str) -> tuple[URL, str]:
        """The signed push URL (timestamp = now, so it is inside the service's 5-minute window)."""
        timestamp, nonce = str(int(time.time())), str(next(self.nonces))
        token = self.creds.token
        query = (f"signature={sign(token, timestamp, nonce)}&timestamp={timestamp}&nonce={nonce}"
                 f"&encrypt_type=aes&msg_signature={sign(token, timestamp, nonce, encrypted)}")
        return URL(f"{base}/wechat?{query}", encoded=True), nonce

    def open_reply(self, body: bytes, openid: str, nonce: str) -> str:
        """Verify and decrypt a passive reply; its text, or BadReply saying what is wrong."""
        if body in (b"", b"success"):
            raise BadReply(f"no reply message ({body!r})")
        outer = ET.fromstring(body)
        encrypted = outer.findtext("Encrypt") or ""
        timestamp = outer.findtext("TimeStamp") or ""
        reply_nonce = outer.findtext("Nonce") or ""
        if not encrypted or sign(self.creds.token, timestamp, reply_nonce, encrypted) != outer.findtext("MsgSignature"):
            raise BadReply("MsgSignature does not verify")
        if reply_nonce != nonce:
            raise BadReply("reply nonce is not the request's")
        if not timestamp.isdigit() or abs(time.time() - int(timestamp)) > TIMESTAMP_WINDOW_S:
            raise BadReply("reply TimeStamp is stale")
        plain = self.prp.decrypt(encrypted, self.creds.appid)  # checks the AppID inside
        inner = ET.fromstring(plain)
        if inner.findtext("ToUserName") != openid or inner.findtext("FromUserName") != OFFICIAL:
            raise BadReply("reply addressed to someone else")
        if inner.findtext("MsgType") != "text":
            raise BadReply(f"reply MsgType {inner.findtext('MsgType')!r}")
        return inner.findtext("Content") or ""


# ----------------------------------------------------------------------------- residents

_CN = str.maketrans("0123456789", "甲乙丙丁戊己庚辛壬癸")  # names must not contain digits


def mask(mobile: str) -> str:
    return f"{mobile[:3]}****{mobile[-4:]}"


def binding_script(index: int, cycle: int) -> list[tuple[str, tuple[str, ...]]]:
    """One cycle of a resident's conversation with linli: (text sent, what the reply must contain).

    Binding (consent → name → mobile → community → building → unit, 返回, unit → room → confirm),
    then the menu and 我的信息, then 解绑 so that the next cycle can bind again. Every cycle uses
    a new name and mobile, so binding never matches an existing record.
    """
    if cycle > 9999:
        raise RuntimeError("a resident ran out of unique mobiles; use more residents")
    name = f"居{str(index).translate(_CN)}户{str(cycle).translate(_CN)}"
    mobile = f"138{index:04d}{cycle:04d}"
    unit = str(1 + index % 6)
    room = str(101 + (index * 7 + cycle) % 899)
    return [
        ("绑定", ("您同意吗",)),
        ("是", ("请输入您的姓名",)),
        (name, ("请输入您的手机号",)),
        (mobile, ("请选择您所在的社区", "米家社区")),
        ("1", ("请选择您住的楼栋", "2号楼")),
        ("2", ("请输入单元号",)),
        (unit, ("请输入房间号",)),
        ("返回", ("请输入单元号",)),
        (unit, ("请输入房间号",)),
        (room, ("请核对", f"姓名：{name}", mask(mobile), f"米家社区2号楼{unit}单元{room}室")),
        ("是", ("绑定成功",)),
        ("菜单", ("请选择服务", "我的信息")),
        ("1", (f"姓名：{name}", mask(mobile), "待社区核实")),
        ("我的信息", (f"姓名：{name}",)),
        ("菜单", ("请选择服务",)),
        ("取消", ("已取消",)),
        ("解绑", ("确定解绑吗",)),
        ("是", ("已解绑",)),
    ]


def check_mobiles(residents: int) -> None:
    """Every mobile the script can use must be a valid CN mobile for ``phonenumbers``."""
    for index in {0, residents - 1}:
        for cycle in (0, 9999):
            number = phonenumbers.parse(f"138{index:04d}{cycle:04d}", "CN")
            if not phonenumbers.is_valid_number(number) or phonenumbers.number_type(number) not in (
                    phonenumbers.PhoneNumberType.MOBILE, phonenumbers.PhoneNumberType.FIXED_LINE_OR_MOBILE):
                raise SystemExit(f"bench: 138{index:04d}{cycle:04d} is not a valid CN mobile")


@dataclass
class Prepared:
    content: str
    expect: tuple[str, ...]  # linli: substrings the reply must contain
    encrypted: str
    body: bytes
    resync: bool = False  # sent to get back in step after an error; any reply is fine


class Resident:
    """One simulated resident: the script cursor and a queue of pre-encrypted messages."""

    def __init__(self, index: int, wire: Wire, *, echo: bool) -> None:
        self.index = index
        self.openid = f"bench-resident-{index:05d}"
        self.wire = wire
        self.echo = echo  # baselines: the reply must be the text itself
        self.cycle = 0
        self.step = 0
        self._script: list[tuple[str, tuple[str, ...]]] = []
        self.queue: deque[Prepared] = deque()
        self.resync: deque[str] = deque()
        self.made_on_the_fly = 0

    def _make(self, content: str, expect: tuple[str, ...], resync: bool = False) -> Prepared:
        encrypted, body = self.wire.encrypt(self.openid, content)
        return Prepared(content, expect, encrypted, body, resync)

    def prepare(self, n: int) -> None:
        for _ in range(n):
            if self.step == 0 or not self._script:
                self._script = binding_script(self.index, self.cycle)
            content, expect = self._script[self.step]
            self.step += 1
            if self.step == len(self._script):
                self.cycle, self.step = self.cycle + 1, 0
            self.queue.append(self._make(content, expect))

    def take(self) -> Prepared:
        if self.resync:
            return self._make(self.resync.popleft(), (), resync=True)
        if not self.queue:
            self.made_on_the_fly += 1
            self.prepare(1)
        return self.queue.popleft()

    def check(self, msg: Prepared, content: str) -> str | None:
        if self.echo:
            return None if content == msg.content else "not the echo"
        if msg.resync:
            if msg.content == "解绑" and "吗" in content:
                self.resync.appendleft("是")
            return None
        missing = [e for e in msg.expect if e not in content]
        return f"missing {missing}" if missing else None

    def out_of_step(self) -> None:
        """After a wrong reply the server's idea of the conversation is unknown: cancel, unbind,
        and start a new cycle (new name and mobile)."""
        if self.echo:
            return
        self.queue.clear()
        self.resync = deque(["取消", "解绑"])
        self.cycle, self.step, self._script = self.cycle + 1, 0, []


# ----------------------------------------------------------------------------- measuring


def _proc_ticks(pid: int) -> int | None:
    """utime + stime of a process (all its threads), in clock ticks."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])
    except (OSError, IndexError, ValueError):
        return None


STORE_COMMS = ("postgres", "redis-server")


def _store_ticks() -> int:
    """CPU ticks of every PostgreSQL and Redis process on the box (backends come and go: approximate)."""
    total = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as fh:
                head, _, rest = fh.read().rpartition(")")
            if head.partition("(")[2] in STORE_COMMS:
                fields = rest.split()
                total += int(fields[11]) + int(fields[12])
        except (OSError, IndexError, ValueError):
            continue
    return total


def _box_ticks() -> tuple[int, int, int] | None:
    """(busy, steal, total) ticks over all cores; iowait counts as idle, the hypervisor's steal apart."""
    try:
        with open("/proc/stat") as fh:
            values = [int(v) for v in fh.readline().split()[1:9]]
    except (OSError, ValueError):
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = values
    return user + nice + system + irq + softirq, steal, sum(values)


@dataclass
class CpuSnap:
    wall: float
    server: int | None
    client: float
    stores: int
    box: tuple[int, int, int] | None

    @classmethod
    def take(cls, pid: int) -> CpuSnap:
        box = _box_ticks()
        return cls(time.perf_counter(), _proc_ticks(pid), time.process_time(),
                   _store_ticks() if box is not None else 0, box)


@dataclass
class CpuUse:
    """Percent of one core over a run (the box figure sums all cores: up to 200% on 2 cores)."""

    server: float | None
    client: float
    stores: float | None  # PostgreSQL + Redis processes
    other: float | None  # the rest of the box: anything else running (should be ~0)
    box: float | None
    steal: float | None = None  # CPU the hypervisor gave to other guests while we wanted it
    wall: float = 0.0

    @classmethod
    def between(cls, a: CpuSnap, b: CpuSnap) -> CpuUse:
        wall = max(b.wall - a.wall, 1e-9)
        hz = os.sysconf("SC_CLK_TCK")
        server = None
        if a.server is not None and b.server is not None:
            server = 100 * (b.server - a.server) / hz / wall
        client = 100 * (b.client - a.client) / wall
        if a.box is None or b.box is None or b.box[2] == a.box[2]:
            return cls(server, client, None, None, None, None, wall)
        cores, total = os.cpu_count() or 1, b.box[2] - a.box[2]
        box = 100 * cores * (b.box[0] - a.box[0]) / total
        steal = 100 * cores * (b.box[1] - a.box[1]) / total
        stores = 100 * (b.stores - a.stores) / hz / wall
        other = box - (server or 0) - client - stores
        return cls(server, client, stores, max(other, 0.0), box, steal, wall)


def box_load(seconds: float = 1.0) -> float | None:
    """How busy the box is with nothing of ours running (percent, all cores summed)."""
    a = _box_ticks()
    time.sleep(seconds)
    b = _box_ticks()
    if a is None or b is None or b[2] == a[2]:
        return None
    return 100 * (os.cpu_count() or 1) * (b[0] - a[0]) / (b[2] - a[2])


@dataclass
class Run:
    kind: str  # closed | open
    latencies: list[float] = field(default_factory=list)  # seconds
    in_window: int = 0  # right replies that arrived inside the measured window
    errors: int = 0
    samples: list[str] = field(default_factory=list)
    rate: float = 0.0  # closed: messages/s inside the window; open: achieved messages/s
    offered: float = 0.0  # open: the scheduled rate
    unfinished: int = 0  # open: still unanswered when the drain time ran out
    on_the_fly: int = 0  # bodies that had to be encrypted during the run (the pool ran dry)
    cpu: CpuUse | None = None

    def record(self, latency: float, error: str | None, where: str) -> None:
        self.latencies.append(latency)
        if error is not None:
            self.errors += 1
            if len(self.samples) < 3:
                self.samples.append(f"{where}: {error}")

    def server_ms_per_msg(self) -> float | None:
        """The server's CPU time per message: robust to other load on the box, unlike the rate."""
        if self.cpu is None or self.cpu.server is None or not self.latencies:
            return None
        return self.cpu.server / 100 * self.cpu.wall * 1000 / len(self.latencies)

    def pct(self, q: float) -> float | None:
        if not self.latencies:
            return None
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


class Client:
    def __init__(self, session: aiohttp.ClientSession, wire: Wire) -> None:
        self.session = session
        self.wire = wire

    async def exchange(self, base: str, resident: Resident) -> tuple[str | None, float, str]:
        """Send a resident's next message; (error or None, time the reply was read, what was sent)."""
        msg = resident.take()
        try:
            url, nonce = self.wire.url(base, msg.encrypted)
            async with self.session.post(url, data=msg.body, headers={"Content-Type": "text/xml"}) as resp:
                body = await resp.read()
                status = resp.status
            done = time.perf_counter()
            if status != 200:
                error: str | None = f"HTTP {status}: {body[:80]!r}"
            else:
                content = self.wire.open_reply(body, resident.openid, nonce)
                error = resident.check(msg, content)
                if error is not None:
                    error += f"; reply {content[:120]!r}"
        except (aiohttp.ClientError, TimeoutError, BadReply, ET.ParseError, ValueError, UnicodeError) as exc:
            done = time.perf_counter()
            error = f"{type(exc).__name__}: {exc}"[:200]
        except Exception as exc:  # anything odd (e.g. a decryption failure) is a failed message
            done = time.perf_counter()
            error = f"{type(exc).__name__}: {exc}"[:200]
        if error is not None and not msg.resync:
            resident.out_of_step()
        return error, done, msg.content


def top_up(residents: list[Resident], total: int) -> float:
    """Pre-encrypt about ``total`` upcoming messages spread over the residents; seconds spent."""
    start = time.perf_counter()
    per = math.ceil(total / len(residents)) + 1
    for r in residents:
        if len(r.queue) < per:
            r.prepare(per - len(r.queue))
    return time.perf_counter() - start


async def _finish(tasks: list[asyncio.Task[None]]) -> None:
    """Cancel what is still running (a drain timeout or an interrupt); re-raise a task's own error."""
    for task in tasks:
        task.cancel()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    for result in results:
        if isinstance(result, Exception):
            raise result


async def closed_loop(client: Client, base: str, residents: list[Resident], concurrency: int,
                      duration: float, pid: int) -> Run:
    run = Run("closed")
    idle: asyncio.Queue[Resident] = asyncio.Queue()
    for r in residents:
        idle.put_nowait(r)
    made_before = sum(r.made_on_the_fly for r in residents)
    snap = CpuSnap.take(pid)
    start = time.perf_counter()
    stop_at = start + duration

    async def worker() -> None:
        while time.perf_counter() < stop_at:
            resident = await idle.get()
            if time.perf_counter() >= stop_at:
                idle.put_nowait(resident)
                return
            sent = time.perf_counter()
            error, done, content = await client.exchange(base, resident)
            if done <= stop_at and error is None:
                run.in_window += 1
            run.record(done - sent, error, f"{resident.openid} sent {content!r}")
            idle.put_nowait(resident)

    # Workers stop starting messages at stop_at and finish (never abandon) the ones in flight, so
    # the simulated residents and the server stay in step for the next run.
    tasks = [asyncio.create_task(worker()) for _ in range(concurrency)]
    try:
        await asyncio.wait(tasks, timeout=duration + REQUEST_TIMEOUT_S + 5)
    finally:
        await _finish(tasks)
    run.cpu = CpuUse.between(snap, CpuSnap.take(pid))
    run.rate = run.in_window / duration
    run.on_the_fly = sum(r.made_on_the_fly for r in residents) - made_before
    return run


async def open_loop(client: Client, base: str, residents: list[Resident], rate: float, duration: float,
                    drain: float, pid: int) -> Run:
    run = Run("open", offered=rate)
    idle: asyncio.Queue[Resident] = asyncio.Queue()
    for r in residents:
        idle.put_nowait(r)
    n = max(1, round(rate * duration))
    made_before = sum(r.made_on_the_fly for r in residents)
    last_done = 0.0

    async def one(scheduled: float) -> None:
        nonlocal last_done
        resident = await idle.get()  # a resident answers one message at a time, as on a phone
        try:
            error, done, content = await client.exchange(base, resident)
        finally:
            idle.put_nowait(resident)
        last_done = max(last_done, done)
        run.record(done - scheduled, error, f"{resident.openid} sent {content!r}")

    snap = CpuSnap.take(pid)
    start = time.perf_counter() + 0.01
    tasks: list[asyncio.Task[None]] = []
    try:
        for i in range(n):
            scheduled = start + i / rate
            delay = scheduled - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(scheduled)))
        _, pending = await asyncio.wait(tasks, timeout=drain)
    finally:
        await _finish(tasks)
    run.cpu = CpuUse.between(snap, CpuSnap.take(pid))
    run.unfinished = len(pending)
    run.errors += run.unfinished
    if run.unfinished:
        run.samples.append(f"{run.unfinished} message(s) unanswered {drain:.0f} s after the schedule ended")
    run.in_window = len(run.latencies) - (run.errors - run.unfinished)  # right replies
    run.rate = run.in_window / max(duration, last_done - start) if run.in_window else 0.0
    run.on_the_fly = sum(r.made_on_the_fly for r in residents) - made_before
    return run


# ----------------------------------------------------------------------------- servers


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    name: str
    port: int
    proc: subprocess.Popen[bytes]
    log: Path

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def problems(self) -> list[str]:
        """Warnings, errors and tracebacks in the server's log, minus the known start-up notice."""
        try:
            lines = self.log.read_text(errors="replace").splitlines()
        except OSError:
            return []
        return [line for line in lines
                if ("WARNING" in line or "ERROR" in line or line.startswith("Traceback") or "Error:" in line)
                and "built-in fake WeChat API" not in line]

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def start_server(name: str, cmd: list[str], env: dict[str, str], tmp: Path, port: int) -> Server:
    log = tmp / f"{name}.log"
    with log.open("wb") as out:
        # Own session: a Ctrl-C in the terminal reaches only the bench, which then stops it.
        proc = subprocess.Popen(cmd, env=env, cwd=tmp, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    return Server(name, port, proc, log)


def stop_servers(servers: list[Server]) -> None:
    for s in servers:
        if s.proc.poll() is None:
            s.proc.terminate()
    for s in servers:
        try:
            s.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            s.proc.kill()
            s.proc.wait(timeout=10)


async def wait_ready(session: aiohttp.ClientSession, server: Server, within: float = 60.0) -> None:
    deadline = time.monotonic() + within
    while True:
        if server.proc.poll() is not None:
            raise RuntimeError(f"{server.name} exited with {server.proc.returncode}:\n{server.log_tail()}")
        with contextlib.suppress(aiohttp.ClientError, TimeoutError):
            async with session.get(f"{server.base}/healthz", timeout=aiohttp.ClientTimeout(total=2)) as resp:
                if resp.status == 200:
                    return
        if time.monotonic() > deadline:
            raise RuntimeError(f"{server.name} not ready after {within:.0f} s:\n{server.log_tail()}")
        await asyncio.sleep(0.1)


def check_loopback(url: str, what: str) -> None:
    host = urlsplit(url).hostname or ""
    if host not in LOOPBACK:
        raise SystemExit(f"bench: {what} {url!r} is not on a loopback address")


async def reset_stores(pg_url: str, redis_url: str) -> None:
    """Recreate the throwaway PostgreSQL database and flush the Redis database."""
    import asyncpg
    from redis.asyncio import Redis

    parts = urlsplit(pg_url)
    dbname = parts.path.lstrip("/")
    if not re.fullmatch(r"[a-z_][a-z0-9_]*", dbname) or dbname in ("postgres", "template0", "template1"):
        raise SystemExit(f"bench: refusing to recreate database {dbname!r}")
    conn = await asyncpg.connect(parts._replace(path="/postgres").geturl())
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
        await conn.execute(f'CREATE DATABASE "{dbname}"')
    finally:
        await conn.close()
    redis = Redis.from_url(redis_url)
    try:
        await redis.flushdb()
    finally:
        await redis.aclose()


async def drop_stores(pg_url: str, redis_url: str) -> None:
    import asyncpg
    from redis.asyncio import Redis

    parts = urlsplit(pg_url)
    conn = await asyncpg.connect(parts._replace(path="/postgres").geturl())
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{parts.path.lstrip("/")}" WITH (FORCE)')
    finally:
        await conn.close()
    redis = Redis.from_url(redis_url)
    try:
        await redis.flushdb()
    finally:
        await redis.aclose()


def run_cli(args: list[str], env: dict[str, str], tmp: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "bot.cli", *args], env=env, cwd=tmp, capture_output=True,
                          text=True, timeout=300, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"linli {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}")


# ----------------------------------------------------------------------------- one backend


@dataclass
class Report:
    backend: str
    residents: int
    concurrency: int
    duration: float
    warmup: float
    open_rate: float
    closed: dict[str, Run]
    opened: dict[str, Run]
    notes: list[str]


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


async def wait_quiet(limit: float, backend: str) -> None:
    """On a shared box: wait (at most ``limit`` seconds) until others use < 15% of the CPUs."""
    deadline = time.monotonic() + limit
    while limit > 0:
        load = await asyncio.to_thread(box_load)
        if load is None or load < 15:
            return
        if time.monotonic() > deadline:
            log(f"[{backend}] the box is still {load:.0f}% busy; measuring anyway")
            return
        log(f"[{backend}] the box is {load:.0f}% busy with something else; waiting")


async def measure(servers: list[Server], creds: Creds, args: argparse.Namespace, backend: str) -> Report:
    # Inside the loop, SIGINT/SIGTERM cancel the measurement; asyncio.run then raises CancelledError.
    loop, task = asyncio.get_running_loop(), asyncio.current_task()
    assert task is not None
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, task.cancel)
    try:
        return await _measure(servers, creds, args, backend)
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
            signal.signal(signum, _interrupt)


async def _measure(servers: list[Server], creds: Creds, args: argparse.Namespace, backend: str) -> Report:
    wire = Wire(creds)
    concurrency = min(args.concurrency, args.residents)
    connector = aiohttp.TCPConnector(limit=args.residents + args.concurrency + 16, limit_per_host=0)
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
    notes: list[str] = []
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        for s in servers:
            await wait_ready(session, s)
        client = Client(session, wire)
        people = {s.name: [Resident(i, wire, echo=s.name != "linli") for i in range(args.residents)]
                  for s in servers}
        closed: dict[str, Run] = {}
        for s in servers:
            residents = people[s.name]
            await wait_quiet(args.wait_quiet, backend)
            top_up(residents, 2 * len(residents))
            warm = await closed_loop(client, s.base, residents, concurrency, args.warmup, s.proc.pid)
            if warm.errors:
                notes.append(f"{s.name}: {warm.errors} error(s) in the warm-up, e.g. {warm.samples[0]}")
            spent = top_up(residents, int(max(warm.rate, 1.0) * args.duration * 2))
            log(f"[{backend}] {s.name}: closed loop, C={concurrency}, {args.duration:g} s "
                f"(warm-up {warm.rate:.0f} msg/s; pre-encrypted in {spent:.1f} s)")
            closed[s.name] = await closed_loop(client, s.base, residents, concurrency, args.duration, s.proc.pid)
        if args.open_rate:
            open_rate = args.open_rate
            notes.append(f"open-loop rate set by --open-rate to {open_rate:g} msg/s")
        else:
            open_rate = args.open_fraction * closed["stateful"].rate if "stateful" in closed else 0.0
        opened: dict[str, Run] = {}
        if open_rate <= 0:
            notes.append("no open-loop runs: the stateful baseline was not run or answered nothing")
            return Report(backend, args.residents, concurrency, args.duration, args.warmup, 0.0, closed, {}, notes)
        drain = max(10.0, 2 * args.duration)
        for s in servers:
            residents = people[s.name]
            await wait_quiet(args.wait_quiet, backend)
            top_up(residents, int(open_rate * args.duration * 1.2))
            log(f"[{backend}] {s.name}: open loop at {open_rate:.0f} msg/s, {args.duration:g} s")
            opened[s.name] = await open_loop(client, s.base, residents, open_rate, args.duration, drain, s.proc.pid)
    return Report(backend, args.residents, concurrency, args.duration, args.warmup, open_rate, closed, opened, notes)


def run_backend(backend: str, args: argparse.Namespace) -> Report:
    creds = Creds.random()
    tmp = Path(tempfile.mkdtemp(prefix=f"linli-bench-{backend}-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("LINLI_")}
    env.update({
        "PYTHONPATH": str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else ""),
        "LINLI_WECHAT_TOKEN": creds.token, "LINLI_WECHAT_APPID": creds.appid,
        "LINLI_WECHAT_ENCODING_AES_KEY": creds.aes_key, "LINLI_LOGGING_LEVEL": "WARNING",
        "LINLI_SERVER_WORKERS": "1",
    })
    if backend == "embedded":
        env["LINLI_DATABASE_URL"] = f"sqlite://{tmp / 'bench.sqlite3'}"
        env["LINLI_REDIS_URL"] = ""
        stateful_store = ""
    else:
        env["LINLI_DATABASE_URL"] = args.pg_url
        env["LINLI_REDIS_URL"] = args.redis_url
        stateful_store = args.redis_url
    servers: list[Server] = []
    quiet = box_load()
    try:
        if backend == "redis-pg":
            asyncio.run(reset_stores(args.pg_url, args.redis_url))
            run_cli(["db", "upgrade"], env, tmp)
        log(f"[{backend}] loading the demo data")
        run_cli(["demo"], env, tmp)
        py = sys.executable
        commands = {
            "echo": lambda p: [py, "-m", "bench.baseline", "--mode", "echo", "--port", str(p)],
            "stateful": lambda p: [py, "-m", "bench.baseline", "--mode", "stateful", "--port", str(p),
                                   "--redis-url", stateful_store],
            "linli": lambda p: [py, "-m", "bot.cli", "serve", "--host", "127.0.0.1", "--port", str(p)],
        }
        for name in args.servers:
            port = free_port()
            make: Callable[[int], list[str]] = commands[name]
            servers.append(start_server(name, make(port), env, tmp, port))
        report = asyncio.run(measure(servers, creds, args, backend))
        if quiet is not None and quiet > 10:
            report.notes.append(f"caution: the box was {quiet:.0f}% busy (of 200%) before the servers started: "
                                "something else is running, so these numbers are low and noisy")
        for s in servers:
            if s.proc.poll() is not None:
                report.notes.append(f"{s.name} exited during the run ({s.proc.returncode}): {s.log_tail(5)}")
        for s in servers:
            problems = s.problems()
            if problems:
                report.notes.append(f"{s.name} log: {len(problems)} warning/error line(s), last: {problems[-1][:300]}")
        return report
    finally:
        stop_servers(servers)
        if backend == "redis-pg" and not args.keep:
            with contextlib.suppress(Exception):
                asyncio.run(drop_stores(args.pg_url, args.redis_url))
        if args.keep:
            log(f"[{backend}] kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


# ----------------------------------------------------------------------------- output


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.1f}"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}%"


def render(report: Report) -> str:
    out: list[str] = []
    names = [n for n in SERVERS if n in report.closed]
    rule = "-" * 96
    out.append(rule)
    out.append(f"backend {report.backend}: one worker per server, {report.residents} residents; closed loop "
               f"C={report.concurrency} for {report.duration:g} s after {report.warmup:g} s warm-up; "
               f"open loop at {report.open_rate:.1f} msg/s for {report.duration:g} s")
    out.append(rule)
    out.append(f"{'server':<9} {'peak msg/s':>10} {'p50 ms':>8} {'p99 ms':>8} | {'open msg/s':>10} "
               f"{'p50 ms':>8} {'p99 ms':>8} | {'errors':>6}")
    for name in names:
        c = report.closed.get(name)
        o = report.opened.get(name)
        errors = (c.errors if c else 0) + (o.errors if o else 0)
        out.append(
            f"{name:<9} {c.rate if c else 0:>10.1f} {_ms(c.pct(0.5) if c else None):>8} "
            f"{_ms(c.pct(0.99) if c else None):>8} | {o.rate if o else 0:>10.1f} {_ms(o.pct(0.5) if o else None):>8} "
            f"{_ms(o.pct(0.99) if o else None):>8} | {errors:>6}")
    out.append("")
    out.append("CPU, % of one core (box = both cores together, up to 200%; pg+redis = all their processes;")
    out.append("other = box minus the rest, i.e. anything else running on the box; ms/msg = server CPU per message;")
    out.append("steal = CPU the hypervisor withheld from this VM, a sign that the host is busy):")
    header = f"{'server':>6} {'ms/msg':>6} {'client':>6} {'pg+redis':>8} {'other':>6} {'box':>5} {'steal':>5}"
    out.append(f"{'':<9} {'closed loop':^48} | {'open loop':^48}")
    out.append(f"{'':<9} {header} | {header}")
    for name in names:
        cells = []
        for run in (report.closed.get(name), report.opened.get(name)):
            u = run.cpu if run else None
            per = run.server_ms_per_msg() if run else None
            cells.append(f"{_pct(u.server if u else None):>6} {'-' if per is None else f'{per:.2f}':>6} "
                         f"{_pct(u.client if u else None):>6} "
                         f"{_pct(u.stores if u else None):>8} {_pct(u.other if u else None):>6} "
                         f"{_pct(u.box if u else None):>5} {_pct(u.steal if u else None):>5}")
        out.append(f"{name:<9} {cells[0]} | {cells[1]}")
    out.append("")
    c_echo, c_state, c_linli = (report.closed.get(n) for n in SERVERS)
    o_linli = report.opened.get("linli")
    r_state = c_linli.rate / c_state.rate if c_linli and c_state and c_state.rate else None
    r_echo = c_linli.rate / c_echo.rate if c_linli and c_echo and c_echo.rate else None
    if r_state is not None:
        out.append(f"linli peak / stateful peak = {r_state:.2f}")
    if r_echo is not None:
        out.append(f"linli peak / echo peak     = {r_echo:.2f}")
    if c_linli is not None and c_state is not None:
        p99 = o_linli.pct(0.99) if o_linli else None
        peak_ok = r_state is not None and r_state >= 0.8
        p99_ok = o_linli is not None and p99 is not None and p99 < 0.050 and not o_linli.unfinished
        linli_errors = c_linli.errors + (o_linli.errors if o_linli else 0)
        verdict = "HOLDS" if peak_ok and p99_ok and linli_errors == 0 else "DOES NOT HOLD"
        scope = "" if report.backend == "redis-pg" else " (set for redis-pg; shown for comparison)"
        out.append(f"target{scope}: linli peak >= 80% of stateful peak: {'yes' if peak_ok else 'no'}; "
                   f"linli open-loop p99 < 50 ms: {'yes' if p99_ok else 'no'} ({_ms(p99)} ms); "
                   f"linli errors: {linli_errors} -> {verdict}")
    steals = [run.cpu.steal for runs in (report.closed, report.opened) for run in runs.values()
              if run.cpu and run.cpu.steal is not None]
    if steals and max(steals) >= 10:
        out.append(f"caution: the hypervisor withheld up to {max(steals):.0f}% of a core (steal) during these runs: "
                   "the host is busy, so rates are low and not comparable with a quiet run")
    client_bound = [f"{run.kind}-loop {name}" for name in names for run in (report.closed.get(name),
                    report.opened.get(name)) if run and run.cpu and run.cpu.client >= 85]
    if client_bound:
        out.append(f"caution: the client used >= 85% of a core in {', '.join(client_bound)}; "
                   "those numbers may be limited by the client")
    for name in names:
        for run in (report.closed.get(name), report.opened.get(name)):
            if run and run.on_the_fly:
                out.append(f"note: {run.kind}-loop {name}: {run.on_the_fly} bodies encrypted during the run")
            if run and run.samples:
                out.append(f"{run.kind}-loop {name} errors, e.g.: " + " | ".join(run.samples))
    out.extend(report.notes)
    return "\n".join(out)


# ----------------------------------------------------------------------------- CLI


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.gateway", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backend", choices=("embedded", "redis-pg", "both"), default="both")
    p.add_argument("--duration", type=float, default=10.0, help="seconds per measured run (default 10)")
    p.add_argument("--residents", type=int, default=200, help="simulated residents (default 200)")
    p.add_argument("--concurrency", type=int, default=32, help="closed-loop clients (default 32)")
    p.add_argument("--warmup", type=float, default=None,
                   help="closed-loop warm-up seconds (default: min(2, duration/2))")
    p.add_argument("--open-fraction", type=float, default=0.7,
                   help="open-loop rate as a fraction of the stateful baseline's peak (default 0.7)")
    p.add_argument("--servers", default=",".join(SERVERS),
                   help="comma-separated subset of echo,stateful,linli to run (default: all three)")
    p.add_argument("--open-rate", type=float, default=0.0,
                   help="open-loop rate in msg/s instead of --open-fraction of the stateful peak")
    p.add_argument("--pg-url", default=DEFAULT_PG_URL,
                   help=f"throwaway PostgreSQL database, dropped and recreated (default {DEFAULT_PG_URL})")
    p.add_argument("--redis-url", default=DEFAULT_REDIS_URL,
                   help=f"throwaway Redis database, flushed (default {DEFAULT_REDIS_URL})")
    p.add_argument("--wait-quiet", type=float, default=0.0, metavar="S",
                   help="before each run wait up to S seconds for other load on the box to stop (default 0)")
    p.add_argument("--keep", action="store_true", help="keep the temporary directory (server logs) and database")
    args = p.parse_args(argv)
    if args.duration <= 0 or args.residents < 1 or args.concurrency < 1 or not 0 < args.open_fraction <= 2:
        p.error("--duration, --residents, --concurrency and --open-fraction must be positive")
    args.servers = [n for n in SERVERS if n in {x.strip() for x in args.servers.split(",")}]
    if not args.servers:
        p.error("--servers: name at least one of echo, stateful, linli")
    if args.residents > 9999:
        p.error("--residents: at most 9999 (mobiles are built from the resident's index)")
    if args.warmup is None:
        args.warmup = min(2.0, args.duration / 2)
    return args


def _interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt  # outside the event loop: unwind through the finally that stops the servers


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)  # even when started in the background (SIGINT ignored)
    backends = ["embedded", "redis-pg"] if args.backend == "both" else [args.backend]
    if "redis-pg" in backends:
        check_loopback(args.pg_url, "--pg-url")
        check_loopback(args.redis_url, "--redis-url")
    check_mobiles(args.residents)
    try:
        for backend in backends:
            print(render(run_backend(backend, args)), flush=True)
    except (KeyboardInterrupt, asyncio.CancelledError):
        log("bench: interrupted; servers stopped")
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
