"""Load-test the mini-program API: ``linli serve`` against a bare aiohttp baseline, side by side.

    python -m bench.api [--backend embedded|redis-pg|both] [--duration S] [--clients N]

For each backend it starts two servers on free loopback ports, one worker process each:

* ``baseline`` bench/api_baseline.py: bare aiohttp doing the least a correct endpoint must do for
               the same requests (Bearer token → its hash in the store → hand-written SQL through
               the same database → the same JSON shapes);
* ``linli``    the real service with the demo data loaded and the rate limits raised.

The benchmark creates one bound resident per client (through the models, before the servers
start) with two pending facts, and one session per client and server: for linli with the
service's own ``bot.api.create_session`` in the service's store. On redis-pg that is Redis, so
linli runs as ``python -m bot.cli serve``; the embedded store lives inside the service process, so
there linli runs as ``python -m bench.api _serve``, which builds the same application
(``bot.app.create_app``) and creates the sessions in it at start-up, before it listens.

Every client loops over GET /api/v1/me, GET /api/v1/residents/{own id}, GET
/api/v1/residents/{own id}/facts and POST /api/v1/me/consents, one request in flight at a time
(a closed loop), and checks every answer's status and its whole JSON document. Rounds alternate
the order of the servers; the table gives medians of the rounds. See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import hashlib
import json
import math
import os
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp

from bench.gateway import (
    CpuSnap,
    CpuUse,
    Server,
    box_load,
    check_loopback,
    drop_stores,
    free_port,
    log,
    reset_stores,
    run_cli,
    start_server,
    stop_servers,
    wait_quiet,
    wait_ready,
)

ROOT = Path(__file__).resolve().parent.parent
SERVERS = ("baseline", "linli")
DEFAULT_PG_URL = "postgres://postgres@127.0.0.1:5432/linli_bench_api"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/13"
REQUEST_TIMEOUT_S = 30.0
NO_LIMIT = 1_000_000_000  # rate limits raised so far that the benchmark never meets them (they still run)
OPENID_PREFIX = "bench-api-"
COMMUNITY, BUILDING = "米家社区", "2号楼"  # from the demo data
# (code, value, label): what every benchmark resident has declared, pending verification
FACTS = (("birth_date", "1950-03-08", "出生日期"), ("lives_alone", "", "独居"))
ENDPOINTS = ("me", "resident", "facts", "consent")
KNOWN_NOTICES = ("built-in fake WeChat API", "wechat.token is empty")
_CN = str.maketrans("0123456789", "〇一二三四五六七八九")  # names hold no digits


# ----------------------------------------------------------------------------- the residents


def people(n: int) -> list[dict[str, str]]:
    return [{"openid": f"{OPENID_PREFIX}{i:05d}", "name": f"测试居民{str(i).translate(_CN)}",
             "mobile": f"1370000{i:04d}", "unit": str(1 + i % 6), "room": str(101 + i)} for i in range(n)]


def mask(mobile: str) -> str:
    return f"{mobile[:3]}****{mobile[-4:]}"


@dataclass
class Person:
    """One simulated mini-program user: who they are, their session per server, what to expect."""

    resident_id: int
    account_id: int
    openid: str
    tokens: dict[str, str]
    me: dict[str, Any]
    resident: dict[str, Any]
    facts: dict[str, Any]

    @classmethod
    def from_setup(cls, row: dict[str, Any]) -> Person:
        facts = sorted(({"id": fid, "code": code, "label": label, "value": value, "state": "pending", "reason": ""}
                        for fid, (code, value, label) in zip(row["fact_ids"], FACTS, strict=True)),
                       key=lambda f: (f["code"], f["id"]))
        resident = {
            "id": row["resident_id"], "name": row["name"], "mobile": mask(row["mobile"]), "community": COMMUNITY,
            "building_id": row["building_id"], "building": BUILDING, "unit": row["unit"], "room": row["room"],
            "mobility": "", "verified": False, "facts": facts, "sensitive_hidden": False, "health_note": "",
            "access": "self",
        }
        me = {"channel": "mp", "bound": True, "binding_pending": False, "verified_mobile": "", "resident": resident,
              "roles": [], "acts_for": []}
        return cls(row["resident_id"], row["account_id"], row["openid"], {}, me, resident, {"items": facts})


def first_difference(got: Any, want: Any, where: str = "") -> str | None:
    if isinstance(want, dict) and isinstance(got, dict):
        if set(got) != set(want):
            return f"{where or 'document'} keys {sorted(set(got) ^ set(want))} differ"
        for key in want:
            diff = first_difference(got[key], want[key], f"{where}.{key}" if where else key)
            if diff:
                return diff
        return None
    if isinstance(want, list) and isinstance(got, list):
        if len(got) != len(want):
            return f"{where}: {len(got)} items, expected {len(want)}"
        for i, (g, w) in enumerate(zip(got, want, strict=True)):
            diff = first_difference(g, w, f"{where}[{i}]")
            if diff:
                return diff
        return None
    if got != want or type(got) is not type(want):
        return f"{where}: {got!r}, expected {want!r}"
    return None


def check_consent(doc: Any) -> str | None:
    from models.residents import CONSENT_TEXT, CONSENT_VERSION

    if not isinstance(doc, dict) or set(doc) != {"version", "text", "accepted_at"}:
        return f"not a ConsentOut: {str(doc)[:120]}"
    if doc["version"] != CONSENT_VERSION or doc["text"] != CONSENT_TEXT:
        return f"version/text {doc['version']!r} is not the current notice"
    try:
        when = datetime.fromisoformat(doc["accepted_at"])
    except (TypeError, ValueError):
        return f"accepted_at {doc['accepted_at']!r} is not an ISO time"
    return None if when.tzinfo is not None else f"accepted_at {doc['accepted_at']!r} has no time zone"


# ----------------------------------------------------------------------------- measuring


@dataclass
class Run:
    latencies: list[float] = field(default_factory=list)  # seconds, every answer (right or wrong)
    by_endpoint: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    in_window: int = 0  # right answers that arrived inside the window
    errors: int = 0
    samples: list[str] = field(default_factory=list)
    rate: float = 0.0
    cpu: CpuUse | None = None

    def record(self, endpoint: str, latency: float, error: str | None) -> None:
        self.latencies.append(latency)
        self.by_endpoint[endpoint].append(latency)
        if error is not None:
            self.errors += 1
            if len(self.samples) < 3:
                self.samples.append(f"{endpoint}: {error}")

    def server_ms_per_request(self) -> float | None:
        if self.cpu is None or self.cpu.server is None or not self.latencies:
            return None
        return self.cpu.server / 100 * self.cpu.wall * 1000 / len(self.latencies)


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


class Client:
    """One closed-loop client: a person with their session, cycling over the four endpoints."""

    CONSENT_BODY = b'{"accept":true}'

    def __init__(self, session: aiohttp.ClientSession, base: str, person: Person, server: str, start: int) -> None:
        self.session = session
        self.person = person
        self.step = start  # clients start at different endpoints, so the mix is even at any moment
        api = f"{base}/api/v1"
        self.headers = {"Authorization": f"Bearer {person.tokens[server]}"}
        self.post_headers = {**self.headers, "Content-Type": "application/json"}
        rid = person.resident_id
        self.urls = {"me": f"{api}/me", "resident": f"{api}/residents/{rid}",
                     "facts": f"{api}/residents/{rid}/facts", "consent": f"{api}/me/consents"}

    async def exchange(self) -> tuple[str, str | None]:
        endpoint = ENDPOINTS[self.step % len(ENDPOINTS)]
        self.step += 1
        url = self.urls[endpoint]
        try:
            if endpoint == "consent":
                request = self.session.post(url, data=self.CONSENT_BODY, headers=self.post_headers)
                status_ok = 201
            else:
                request = self.session.get(url, headers=self.headers)
                status_ok = 200
            async with request as resp:
                body = await resp.read()
                status, ctype = resp.status, resp.content_type
            if status != status_ok:
                return endpoint, f"HTTP {status}: {body[:160].decode(errors='replace')}"
            if ctype != "application/json":
                return endpoint, f"Content-Type {ctype!r}"
            doc = json.loads(body)
            if endpoint == "consent":
                return endpoint, check_consent(doc)
            want = {"me": self.person.me, "resident": self.person.resident, "facts": self.person.facts}[endpoint]
            return endpoint, first_difference(doc, want)
        except (aiohttp.ClientError, TimeoutError, ValueError, UnicodeError) as exc:
            return endpoint, f"{type(exc).__name__}: {exc}"[:200]


async def closed_loop(clients: list[Client], duration: float, pid: int) -> Run:
    run = Run()
    snap = CpuSnap.take(pid)
    stop_at = time.perf_counter() + duration

    async def loop(client: Client) -> None:
        while time.perf_counter() < stop_at:
            sent = time.perf_counter()
            endpoint, error = await client.exchange()
            done = time.perf_counter()
            if done <= stop_at and error is None:
                run.in_window += 1
            run.record(endpoint, done - sent, error)

    # Clients stop starting requests at the end and finish the ones in flight (counted outside the window).
    tasks = [asyncio.create_task(loop(c)) for c in clients]
    try:
        await asyncio.wait(tasks, timeout=duration + REQUEST_TIMEOUT_S + 5)
    finally:
        for task in tasks:
            task.cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
    for result in results:
        if isinstance(result, Exception):
            raise result
    run.cpu = CpuUse.between(snap, CpuSnap.take(pid))
    run.rate = run.in_window / duration
    return run


# ----------------------------------------------------------------------------- one backend


@dataclass
class Report:
    backend: str
    clients: int
    rounds: int
    duration: float
    warmup: float
    runs: dict[str, list[Run]]
    notes: list[str]
    profile: str = ""


def problems(server: Server) -> list[str]:
    """Warnings, errors and tracebacks in a server's log, minus the known start-up notices."""
    try:
        lines = server.log.read_text(errors="replace").splitlines()
    except OSError:
        return []
    return [line for line in lines
            if ("WARNING" in line or "ERROR" in line or line.startswith("Traceback") or "Error:" in line)
            and not any(notice in line for notice in KNOWN_NOTICES)]


async def measure(servers: dict[str, Server], persons: list[Person], args: argparse.Namespace,
                  backend: str) -> tuple[dict[str, list[Run]], int]:
    """The rounds; also the number of requests linli answered (warm-ups included, for the profile)."""
    loop, task = asyncio.get_running_loop(), asyncio.current_task()
    assert task is not None
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, task.cancel)
    try:
        connector = aiohttp.TCPConnector(limit=len(persons) + 16, limit_per_host=0)
        async with aiohttp.ClientSession(connector=connector,
                                         timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)) as session:
            for s in servers.values():
                await wait_ready(session, s)
            clients = {name: [Client(session, s.base, p, name, i) for i, p in enumerate(persons)]
                       for name, s in servers.items()}
            runs: dict[str, list[Run]] = {name: [] for name in servers}
            linli_requests = 0
            for r in range(args.rounds):
                order = list(servers) if r % 2 == 0 else list(reversed(servers))
                for name in order:
                    s = servers[name]
                    await wait_quiet(args.wait_quiet, backend)
                    warm = await closed_loop(clients[name], args.warmup, s.proc.pid)
                    log(f"[{backend}] round {r + 1}/{args.rounds} {name}: {args.duration:g} s "
                        f"(warm-up {warm.rate:.0f} req/s, {warm.errors} error(s))")
                    run = await closed_loop(clients[name], args.duration, s.proc.pid)
                    runs[name].append(run)
                    if name == "linli":
                        linli_requests += len(warm.latencies) + len(run.latencies)
            return runs, linli_requests
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
            signal.signal(signum, _interrupt)


def run_backend(backend: str, args: argparse.Namespace) -> Report:
    tmp = Path(tempfile.mkdtemp(prefix=f"linli-bench-api-{backend}-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("LINLI_")}
    env.update({
        "PYTHONPATH": str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else ""),
        "LINLI_LOGGING_LEVEL": "WARNING", "LINLI_SERVER_WORKERS": "1",
        "LINLI_API_LOGIN_PER_MINUTE": str(NO_LIMIT), "LINLI_API_WRITES_PER_MINUTE": str(NO_LIMIT),
        "LINLI_API_WRITES_PER_MINUTE_IP": str(NO_LIMIT),
    })
    if backend == "embedded":
        env["LINLI_DATABASE_URL"] = f"sqlite://{tmp / 'bench.sqlite3'}"
        env["LINLI_REDIS_URL"] = ""
    else:
        env["LINLI_DATABASE_URL"] = args.pg_url
        env["LINLI_REDIS_URL"] = args.redis_url
    # On redis-pg the sessions go straight into Redis and linli is the real `linli serve`; the
    # embedded store (and --profile) need the in-process entry point.
    in_process = backend == "embedded" or args.profile
    servers: dict[str, Server] = {}
    quiet = box_load()
    py = sys.executable
    try:
        if backend == "redis-pg":
            asyncio.run(reset_stores(args.pg_url, args.redis_url))
            run_cli(["db", "upgrade"], env, tmp)
        log(f"[{backend}] loading the demo data and {args.clients} benchmark residents")
        run_cli(["demo"], env, tmp)
        (tmp / "people.json").write_text(json.dumps(people(args.clients), ensure_ascii=False))
        setup = [py, "-m", "bench.api", "_setup", "--people", str(tmp / "people.json"),
                 "--out", str(tmp / "setup.json")]
        proc = subprocess.run(setup + ([] if in_process else ["--sessions"]), env=env, cwd=tmp, capture_output=True,
                              text=True, timeout=300, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"bench setup failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}")
        rows = json.loads((tmp / "setup.json").read_text())
        persons = [Person.from_setup(row) for row in rows]
        baseline_sessions = {}
        for person, row in zip(persons, rows, strict=True):
            token = secrets.token_urlsafe(32)
            person.tokens["baseline"] = token
            baseline_sessions[token] = {"account_id": person.account_id, "openid": person.openid}
            if not in_process:
                person.tokens["linli"] = row["token"]
        (tmp / "baseline-sessions.json").write_text(json.dumps(baseline_sessions))

        port = free_port()
        servers["baseline"] = start_server("baseline", [
            py, "-m", "bench.api_baseline", "--port", str(port), "--database-url", env["LINLI_DATABASE_URL"],
            "--redis-url", env["LINLI_REDIS_URL"], "--sessions", str(tmp / "baseline-sessions.json")], env, tmp, port)
        port = free_port()
        if in_process:
            cmd = [py, "-m", "bench.api", "_serve", "--port", str(port), "--tokens", str(tmp / "linli-tokens.json")]
            if args.profile:
                cmd += ["--profile", str(tmp / "linli-profile.json")]
        else:
            cmd = [py, "-m", "bot.cli", "serve", "--host", "127.0.0.1", "--port", str(port)]
        servers["linli"] = start_server("linli", cmd, env, tmp, port)
        if in_process:  # the tokens are written before the service listens, i.e. before it is ready
            asyncio.run(_wait_ready_all(servers))
            tokens = json.loads((tmp / "linli-tokens.json").read_text())
            for person in persons:
                person.tokens["linli"] = tokens[person.openid]

        runs, linli_requests = asyncio.run(measure(servers, persons, args, backend))
        report = Report(backend, args.clients, args.rounds, args.duration, args.warmup, runs, [])
        if quiet is not None and quiet > 10:
            report.notes.append(f"caution: the box was {quiet:.0f}% busy (of 200%) before the servers started: "
                                "something else is running, so these numbers are low and noisy")
        for s in servers.values():
            if s.proc.poll() is not None:
                report.notes.append(f"{s.name} exited during the run ({s.proc.returncode}): {s.log_tail(5)}")
        stop_servers(list(servers.values()))  # linli writes its profile on the way out
        for s in servers.values():
            found = problems(s)
            if found:
                report.notes.append(f"{s.name} log: {len(found)} warning/error line(s), last: {found[-1][:300]}")
        if args.profile:
            report.profile = summarize_profile(tmp / "linli-profile.json", linli_requests)
        return report
    finally:
        stop_servers(list(servers.values()))
        if backend == "redis-pg" and not args.keep:
            with contextlib.suppress(Exception):
                asyncio.run(drop_stores(args.pg_url, args.redis_url))
        if args.keep:
            log(f"[{backend}] kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


async def _wait_ready_all(servers: dict[str, Server]) -> None:
    async with aiohttp.ClientSession() as session:
        for s in servers.values():
            await wait_ready(session, s)


# ----------------------------------------------------------------------------- the profile


SAMPLE_INTERVAL_S = 0.001  # of process CPU time
OWN_STDLIB = ("stdlib asyncio", "stdlib selectors")  # the event loop's own work keeps its name


class Sampler:
    """A statistical CPU profiler: every SAMPLE_INTERVAL_S of the process's CPU time (ITIMER_PROF;
    the kernel fires it on its clock ticks, so in practice every few milliseconds) the main
    thread's Python stack is recorded. Cheap (a few microseconds per sample), so the profiled
    service runs at nearly its normal speed, unlike under cProfile. Samples that find the main
    thread waiting in the event loop's select are CPU used by other threads of the process
    (aiosqlite's worker)."""

    def __init__(self) -> None:
        self.stacks: dict[tuple[tuple[str, int, str], ...], int] = defaultdict(int)
        self.started = (0.0, 0.0)
        self.cpu = (0.0, 0.0)

    def _sample(self, _signum: int, frame: Any) -> None:
        stack: list[tuple[str, int, str]] = []
        while frame is not None and len(stack) < 80:
            code = frame.f_code
            stack.append((code.co_filename, code.co_firstlineno, code.co_name))
            frame = frame.f_back
        self.stacks[tuple(stack)] += 1

    def start(self) -> None:
        self.started = (time.process_time(), time.thread_time())
        signal.signal(signal.SIGPROF, self._sample)
        signal.setitimer(signal.ITIMER_PROF, SAMPLE_INTERVAL_S, SAMPLE_INTERVAL_S)

    def stop(self) -> None:
        signal.setitimer(signal.ITIMER_PROF, 0, 0)
        self.cpu = (time.process_time() - self.started[0], time.thread_time() - self.started[1])

    def dump(self) -> str:
        return json.dumps({"interval_s": SAMPLE_INTERVAL_S, "process_s": self.cpu[0], "main_thread_s": self.cpu[1],
                           "stacks": [[n, [list(f) for f in stack]] for stack, n in self.stacks.items()]})


def _package(filename: str) -> str:
    """Which package a function belongs to (site-packages name, project dir, stdlib module)."""
    path = filename.replace(os.sep, "/")
    if "site-packages/" in path:
        return path.split("site-packages/", 1)[1].split("/", 1)[0].removesuffix(".py")
    root = str(ROOT).replace(os.sep, "/") + "/"
    if path.startswith(root):
        return path[len(root):].split("/", 1)[0].removesuffix(".py") + " (project)"
    if "/python3" in path and "/lib/" in path:
        module = path.rsplit("/lib/", 1)[1].split("/", 2)
        return "stdlib " + (module[1].removesuffix(".py") if len(module) > 1 else path)
    return path or "?"


def _owns(package: str) -> bool:
    return package in OWN_STDLIB or (package != "?" and not package.startswith(("stdlib ", "<")))


def _waiting(stack: list[list[Any]]) -> bool:
    return bool(stack) and _package(stack[0][0]) == "stdlib selectors" and stack[0][2] == "select"


def summarize_profile(path: Path, requests: int) -> str:
    """Where linli's CPU went, by package and function, from the sampler's dump."""
    if not path.exists():
        return "profile: linli wrote no profile (did it stop cleanly?)"
    data = json.loads(path.read_text())
    stacks: list[tuple[int, list[list[Any]]]] = [(n, stack) for n, stack in data["stacks"]]
    total = sum(n for n, _ in stacks) or 1
    waiting = sum(n for n, stack in stacks if _waiting(stack))
    own: dict[str, int] = defaultdict(int)  # by the package doing the work (stdlib → its caller)
    inclusive: dict[str, int] = defaultdict(int)  # samples with the package anywhere on the stack
    leaf: dict[str, int] = defaultdict(int)
    project: dict[str, int] = defaultdict(int)
    for n, stack in stacks:
        if _waiting(stack):
            continue
        owner = next((_package(f[0]) for f in stack if _owns(_package(f[0]))), _package(stack[0][0]) if stack else "?")
        own[owner] += n
        for package in {_package(f[0]) for f in stack}:
            inclusive[package] += n
        if stack:
            f = stack[0]
            leaf[f"{_package(f[0])}:{Path(f[0]).name}:{f[1]}({f[2]})"] += n
        for name in {f"{Path(f[0]).parent.name}/{Path(f[0]).name}:{f[1]}({f[2]})" for f in stack
                     if _package(f[0]).endswith("(project)") and _package(f[0]) != "bench (project)"}:
            project[name] += n
    # The kernel delivers the timer on its clock ticks, so samples are sparser than the interval:
    # scale them to the CPU time the process really used.
    us = data["process_s"] * 1e6 / total / max(requests, 1)  # microseconds of CPU per request, per sample
    out = [f"profile of linli: its CPU sampled (a timer on process CPU time, {total} samples), "
           f"{requests} requests incl. warm-ups, {total * us:.0f} us CPU/request; the process used "
           f"{data['process_s']:.1f} s CPU, its main thread {data['main_thread_s']:.1f} s",
           f"  {'package (self: C and stdlib charged to the calling package)':<60} {'self':>6} {'us/req':>6} "
           f"{'incl.':>6}",
           f"  {'main thread waiting in select (other threads, e.g. aiosqlite)':<60} "
           f"{100 * waiting / total:>5.1f}% {waiting * us:>6.0f}"]
    for name, n in sorted(own.items(), key=lambda kv: -kv[1])[:14]:
        out.append(f"  {name:<60} {100 * n / total:>5.1f}% {n * us:>6.0f} {100 * inclusive[name] / total:>5.1f}%")
    out.append("  top functions by own CPU (the Python frame on top; a C call counts for its caller):")
    for name, n in sorted(leaf.items(), key=lambda kv: -kv[1])[:12]:
        out.append(f"    {name[:86]:<86} {100 * n / total:>5.1f}% {n * us:>6.0f}")
    out.append("  project functions by inclusive CPU:")
    for name, n in sorted(project.items(), key=lambda kv: -kv[1])[:12]:
        out.append(f"    {name[:86]:<86} {100 * n / total:>5.1f}% {n * us:>6.0f}")
    return "\n".join(out)


# ----------------------------------------------------------------------------- output


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.2f}"


def _med(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def _ratio(a: float | None, b: float | None) -> str:
    return "-" if a is None or not b else f"{a / b:.2f}"


def render(report: Report) -> str:
    out: list[str] = []
    rule = "-" * 100
    base_runs, linli_runs = report.runs.get("baseline", []), report.runs.get("linli", [])
    out.append(rule)
    out.append(f"backend {report.backend}: one worker per server, {report.clients} clients (one session each, "
               f"one request in flight each), {report.rounds} round(s) of {report.duration:g} s per server after "
               f"{report.warmup:g} s warm-up, server order alternating")
    out.append("requests: GET /me, GET /residents/{own id}, GET /residents/{own id}/facts, POST /me/consents, in turn")
    out.append(rule)
    out.append(f"{'server':<9} {'req/s':>8} {'(min-max)':>13} {'p50 ms':>7} {'p95 ms':>7} {'CPU ms/req':>10} "
               f"{'server CPU':>10} {'errors':>6} {'linli/baseline':>14}")
    summary: dict[str, dict[str, float | None]] = {}
    for name in SERVERS:
        runs = report.runs.get(name, [])
        if not runs:
            continue
        rates = [r.rate for r in runs]
        summary[name] = {
            "rate": statistics.median(rates),
            "p50": _med([pct(r.latencies, 0.5) for r in runs]),
            "p95": _med([pct(r.latencies, 0.95) for r in runs]),
            "cpu": _med([r.server_ms_per_request() for r in runs]),
            "server": _med([r.cpu.server if r.cpu else None for r in runs]),
        }
    for name, s in summary.items():
        runs = report.runs[name]
        errors = sum(r.errors for r in runs)
        rates = [r.rate for r in runs]
        ratio = ""
        if name == "linli" and "baseline" in summary:
            ratio = _ratio(s["rate"], summary["baseline"]["rate"])
        cpu = "-" if s["cpu"] is None else f"{s['cpu']:.2f}"
        server = "-" if s["server"] is None else f"{s['server']:.0f}%"
        out.append(f"{name:<9} {s['rate']:>8.0f} {f'({min(rates):.0f}-{max(rates):.0f})':>13} {_ms(s['p50']):>7} "
                   f"{_ms(s['p95']):>7} {cpu:>10} {server:>10} {errors:>6} {ratio:>14}")
    if "baseline" in summary and "linli" in summary:
        b, li = summary["baseline"], summary["linli"]
        per_round = [f"{lr.rate / br.rate:.2f}" for br, lr in zip(base_runs, linli_runs, strict=False) if br.rate]
        out.append("")
        out.append(f"linli / baseline: requests/s {_ratio(li['rate'], b['rate'])} (per round: {', '.join(per_round)}); "
                   f"p50 latency x{_ratio(li['p50'], b['p50'])}; p95 x{_ratio(li['p95'], b['p95'])}; "
                   f"server CPU per request x{_ratio(li['cpu'], b['cpu'])}")
    out.append("")
    out.append("p50 latency per endpoint, ms (median of rounds):")
    out.append(f"{'server':<16} " + " ".join(f"{e:>9}" for e in ENDPOINTS))
    per_endpoint: dict[str, list[float | None]] = {}
    for name in summary:
        per_endpoint[name] = [_med([pct(r.by_endpoint.get(e, []), 0.5) for r in report.runs[name]])
                              for e in ENDPOINTS]
        out.append(f"{name:<16} " + " ".join(f"{_ms(v):>9}" for v in per_endpoint[name]))
    if "baseline" in per_endpoint and "linli" in per_endpoint:
        out.append(f"{'linli/baseline':<16} " + " ".join(
            f"{_ratio(li, b):>9}" for li, b in zip(per_endpoint["linli"], per_endpoint["baseline"], strict=True)))
    out.append("")
    out.append("CPU, % of one core, median of rounds (box = all cores together; pg+redis = all their processes;")
    out.append("other = the rest of the box; steal = CPU the hypervisor withheld from this VM):")
    out.append(f"{'server':<9} {'server':>7} {'client':>7} {'pg+redis':>8} {'other':>7} {'box':>6} {'steal':>6}")

    def cell(runs: list[Run], attr: str) -> str:
        value = _med([getattr(r.cpu, attr) if r.cpu else None for r in runs])
        return "-" if value is None else f"{value:.0f}%"

    for name in summary:
        runs = report.runs[name]
        out.append(f"{name:<9} {cell(runs, 'server'):>7} {cell(runs, 'client'):>7} {cell(runs, 'stores'):>8} "
                   f"{cell(runs, 'other'):>7} {cell(runs, 'box'):>6} {cell(runs, 'steal'):>6}")
    all_runs = [r for runs in report.runs.values() for r in runs]
    steals = [r.cpu.steal for r in all_runs if r.cpu and r.cpu.steal is not None]
    if steals and max(steals) >= 10:
        out.append(f"caution: the hypervisor withheld up to {max(steals):.0f}% of a core (steal) during these runs")
    bound = sorted({name for name, runs in report.runs.items() for r in runs if r.cpu and r.cpu.client >= 85})
    if bound:
        out.append(f"caution: the client used >= 85% of a core against {', '.join(bound)}; "
                   "those rates may be limited by the client (a lower bound for that server)")
    if any("HTTP 401" in s for runs in report.runs.values() for r in runs for s in r.samples):
        out.append("caution: sessions were refused (401) during the run: something removed them from the store, "
                   "e.g. another program flushed the Redis database of --redis-url")
    for name, runs in report.runs.items():
        samples = [s for r in runs for s in r.samples][:3]
        if samples:
            out.append(f"{name} errors, e.g.: " + " | ".join(samples))
    out.extend(report.notes)
    if report.profile:
        out.append("note: linli ran with the CPU sampler on (a few percent slower than without)")
        out.append(report.profile)
    return "\n".join(out)


# ----------------------------------------------------------------------------- the internal entry points


async def _setup(args: argparse.Namespace) -> None:
    """Create the benchmark's residents (and, with --sessions, linli's sessions in the configured store)."""
    from bot.api import create_session
    from bot.clock import Clock
    from bot.config import load_config
    from bot.db import close_db, init_db
    from bot.store import open_store
    from models.facts import declare
    from models.places import Building
    from models.residents import Resident, ResidentStatus, WechatAccount

    config = load_config(None)
    wanted = json.loads(await asyncio.to_thread(Path(args.people).read_text))
    await init_db(config.database)
    rows = []
    try:
        now = Clock().now()
        building = await Building.get(name=BUILDING, community__name=COMMUNITY)
        accounts = []
        for p in wanted:
            resident = await Resident.create(
                name=p["name"], mobile=p["mobile"], community_id=building.community_id,  # type: ignore[attr-defined]
                building=building, unit=p["unit"], room=p["room"], status=ResidentStatus.PENDING, source="self",
                created_at=now)
            account = await WechatAccount.create(openid=p["openid"], channel="mp", resident=resident, created_at=now,
                                                 last_seen_at=now)
            facts = [await declare(resident_id=resident.id, code=code, value=value, now=now, by_id=resident.id)
                     for code, value, _label in FACTS]
            accounts.append(account)
            rows.append({**p, "resident_id": resident.id, "account_id": account.id, "building_id": building.id,
                         "fact_ids": [f.id for f in facts]})
        if args.sessions:
            store = open_store(config.redis)
            try:
                for row, account in zip(rows, accounts, strict=True):
                    row["token"] = await create_session(store, account, config.api.session_hours)
            finally:
                await store.aclose()
    finally:
        await close_db()
    await asyncio.to_thread(Path(args.out).write_text, json.dumps(rows, ensure_ascii=False))


def _serve(args: argparse.Namespace) -> None:
    """linli on one worker, as `linli serve` runs it, with sessions for the benchmark's accounts created
    through bot.api.create_session in its own store before it listens (the embedded store lives here)."""
    from aiohttp import web

    from bot.api import create_session
    from bot.app import STORE, create_app
    from bot.config import load_config
    from bot.db import ensure_schema
    from bot.logs import setup_logging
    from models.residents import WechatAccount

    config = load_config(None)
    setup_logging(config.logging.level, config.logging.json)
    asyncio.run(ensure_schema(config.database))
    app = create_app(config)
    sampler = Sampler() if args.profile else None

    async def sessions(app: web.Application) -> None:  # runs after the app's own start-up (store, database)
        accounts = await WechatAccount.filter(openid__startswith=OPENID_PREFIX).order_by("id")
        tokens = {a.openid: await create_session(app[STORE], a, config.api.session_hours) for a in accounts}
        await asyncio.to_thread(Path(args.tokens).write_text, json.dumps(tokens))
        if sampler is not None:
            sampler.start()

    async def dump(_app: web.Application) -> None:
        if sampler is not None:
            sampler.stop()
            await asyncio.to_thread(Path(args.profile).write_text, sampler.dump())

    app.on_startup.append(sessions)
    app.on_shutdown.append(dump)
    web.run_app(app, host="127.0.0.1", port=args.port, print=None)


def internal(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.api", description="internal entry points of the benchmark")
    sub = p.add_subparsers(dest="command", required=True)
    setup = sub.add_parser("_setup")
    setup.add_argument("--people", required=True)
    setup.add_argument("--out", required=True)
    setup.add_argument("--sessions", action="store_true")
    serve = sub.add_parser("_serve")
    serve.add_argument("--port", type=int, required=True)
    serve.add_argument("--tokens", required=True)
    serve.add_argument("--profile", default="")
    args = p.parse_args(argv)
    if args.command == "_setup":
        asyncio.run(_setup(args))
    else:
        _serve(args)
    return 0


# ----------------------------------------------------------------------------- CLI


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.api", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backend", choices=("embedded", "redis-pg", "both"), default="both")
    p.add_argument("--duration", type=float, default=5.0, help="seconds per measured run (default 5)")
    p.add_argument("--clients", type=int, default=32, help="closed-loop clients, one resident each (default 32)")
    p.add_argument("--rounds", type=int, default=3, help="rounds per backend, server order alternating (default 3)")
    p.add_argument("--warmup", type=float, default=1.0, help="warm-up seconds before every run (default 1)")
    p.add_argument("--pg-url", default=DEFAULT_PG_URL,
                   help=f"throwaway PostgreSQL database, dropped and recreated (default {DEFAULT_PG_URL})")
    p.add_argument("--redis-url", default=DEFAULT_REDIS_URL,
                   help=f"throwaway Redis database, flushed (default {DEFAULT_REDIS_URL})")
    p.add_argument("--wait-quiet", type=float, default=0.0, metavar="S",
                   help="before each run wait up to S seconds for other load on the box to stop (default 0)")
    p.add_argument("--profile", action="store_true",
                   help="sample linli's CPU and print where it goes (by package and function)")
    p.add_argument("--keep", action="store_true", help="keep the temporary directory (server logs) and database")
    args = p.parse_args(argv)
    if args.duration <= 0 or args.warmup < 0 or args.rounds < 1 or not 1 <= args.clients <= 9999:
        p.error("--duration and --rounds must be positive, --warmup not negative, --clients between 1 and 9999")
    return args


def _interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt  # outside the event loop: unwind through the finally that stops the servers


def lock_stores(args: argparse.Namespace) -> Any:
    """One run at a time per pair of throwaway databases: a second run would wipe them under the first."""
    digest = hashlib.sha256(f"{args.pg_url} {args.redis_url}".encode()).hexdigest()[:12]
    handle = (Path(tempfile.gettempdir()) / f"linli-bench-api-{digest}.lock").open("w")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        raise SystemExit("bench: another `python -m bench.api` run is using the same --pg-url and --redis-url; "
                         "wait for it to end (or give other throwaway databases)") from None
    return handle


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in ("_setup", "_serve"):
        return internal(argv)
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)
    backends = ["embedded", "redis-pg"] if args.backend == "both" else [args.backend]
    if "redis-pg" in backends:
        check_loopback(args.pg_url, "--pg-url")
        check_loopback(args.redis_url, "--redis-url")
        args.lock = lock_stores(args)  # held until this process exits
    try:
        for backend in backends:
            print(render(run_backend(backend, args)), flush=True)
    except (KeyboardInterrupt, asyncio.CancelledError):
        log("bench: interrupted; servers stopped")
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
