"""The ``linli`` command: serve, chat, db upgrade, demo."""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import secrets
import signal
import sys
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from bot.app import create_app
from bot.clock import Clock, ShiftedClock
from bot.config import Config, ConfigError, load_config
from bot.db import SchemaOutdated, close_db, ensure_schema, init_db, upgrade
from bot.engine import Inbound
from bot.logs import setup_logging
from bot.services import open_services, uses_fake_wechat
from bot.store import open_store
from models.outbox import OutboxMessage, State

AT_DRAIN_POLLS = 100  # /at waits up to 5 s for the session's due messages

HELP = """\
Linli (邻里): the community's WeChat chatbot and mini-program backend.

With no configuration it runs on a SQLite file (linli.sqlite3) and an in-process store.
Configuration: --config PATH, else $LINLI_CONFIG, else ./config.toml when present; every key
can be overridden by LINLI_SECTION_KEY (see config.example.toml).
"""


def _config_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="PATH", default=argparse.SUPPRESS,
                        help="TOML configuration file (default: $LINLI_CONFIG or ./config.toml)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="linli", description=HELP,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    _config_arg(parser)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = sub.add_parser("serve", help="run the HTTP service (WeChat gateway, /healthz)",
                           description="Run the HTTP service: the WeChat push endpoint and "
                           "/healthz. Several workers need Redis and PostgreSQL.")
    _config_arg(serve)
    serve.add_argument("--host", help="override server.host")
    serve.add_argument("--port", type=int, help="override server.port")
    serve.add_argument("--workers", type=int, help="override server.workers")

    chat = sub.add_parser(
        "chat", help="talk to the bot in the terminal as one resident",
        description="Play one resident against the same engine WeChat uses. One message per "
        "line; works from a pipe too. Besides text: /photo, /location LAT LON [LABEL], "
        "/voice TEXT, /click KEY, /subscribe [SCENE], /unsubscribe, /quit.")
    _config_arg(chat)
    chat.add_argument("--as", dest="openid", default="terminal-resident", metavar="OPENID",
                      help="the openid to speak as (demo staff: demo-grid-1, demo-staff)")

    db = sub.add_parser("db", help="database commands", description="Database commands.")
    _config_arg(db)
    db_sub = db.add_subparsers(dest="db_command", required=True, metavar="DB_COMMAND")
    up = db_sub.add_parser("upgrade", help="apply the checked-in migrations",
                           description="Apply the checked-in migrations the database lacks.")
    _config_arg(up)

    wechat = sub.add_parser("wechat", help="set up and check the official account",
                            description="Set up and check the WeChat official account.")
    _config_arg(wechat)
    wx_sub = wechat.add_subparsers(dest="wechat_command", required=True, metavar="WECHAT_COMMAND")
    menu = wx_sub.add_parser("menu", help="publish the custom menu defined in config (wechat.menu)",
                             description="Publish the custom menu defined in config (wechat.menu).")
    _config_arg(menu)
    check = wx_sub.add_parser(
        "check", help="verify what a real deployment needs, explaining each failure",
        description="Verify credentials and token, the server IP whitelist (40164), template IDs, "
        "the menu, and that server.public_url is reachable over TLS on 443 as WeChat requires.")
    _config_arg(check)

    demo = sub.add_parser("demo", help="load a demo sub-district to try every flow",
                          description="Load a demo sub-district: two communities, grids, "
                          "buildings, a canteen, staff and volunteers. Safe to run twice.")
    _config_arg(demo)

    from bot.staff_cli import add_staff_parser

    add_staff_parser(sub, _config_arg)

    residents = sub.add_parser("residents", help="import and export the community's resident spreadsheet",
                               description="Import and export the residents spreadsheet community staff keep.")
    _config_arg(residents)
    res_sub = residents.add_subparsers(dest="residents_command", required=True, metavar="RESIDENTS_COMMAND")
    res_import = res_sub.add_parser(
        "import", help="import residents from an .xlsx or .csv file (all rows or none)",
        description="Import residents from an .xlsx or .csv file (UTF-8 or GBK), columns found by "
        "their Chinese header: 姓名 手机号 社区 楼栋 [单元 房间号 出生日期 身份状况 行动能力 健康备注]. "
        "Every row is checked first; one bad row imports nothing and every bad row is listed by "
        "line. Residents are matched by mobile. Exit 0 imported, 1 the file was refused, 2 usage.")
    _config_arg(res_import)
    res_import.add_argument("file", type=Path, metavar="FILE", help="the .xlsx or .csv file")
    res_import.add_argument("--by", required=True, metavar="MOBILE",
                            help="mobile of the staff member importing (community or sub-district staff)")
    res_import.add_argument("--dry-run", action="store_true", help="check and say what would change; write nothing")
    res_export = res_sub.add_parser(
        "export", help="export the residents in your scope (same columns as import)",
        description="Write the residents in the exporter's scope to a new .xlsx or .csv file, in the "
        "columns import reads. Sensitive statuses and health notes are masked unless the exporter's "
        "role sees them. Each export is recorded in the audit log.")
    _config_arg(res_export)
    res_export.add_argument("--by", required=True, metavar="MOBILE", help="mobile of the staff member exporting")
    res_export.add_argument("--out", type=Path, metavar="FILE",
                            help="file to create (default: residents-YYYYMMDD.xlsx); never overwritten")
    res_export.add_argument("--format", choices=("xlsx", "csv"), help="file format (default: from --out, else xlsx)")
    res_export.add_argument("--community", metavar="NAME", help="only this community")
    res_export.add_argument("--purpose", metavar="TEXT", help="why, for the audit log (default: residents export)")

    privacy = sub.add_parser("privacy", help="personal-data retention",
                             description="Personal-data retention (periods in [privacy]).")
    _config_arg(privacy)
    privacy_sub = privacy.add_subparsers(dest="privacy_command", required=True, metavar="PRIVACY_COMMAND")
    sweep = privacy_sub.add_parser(
        "sweep", help="delete what outlived its retention period now, and print the counts",
        description="Run the daily retention sweep once: delete or anonymise what outlived its "
        "period in [privacy] (sent messages, answered prompts, decided binding requests, unbound "
        "accounts, old audit rows, names kept past a deletion, photos of long-closed cases) and print how many "
        "of each.")
    _config_arg(sweep)

    scheduler = sub.add_parser(
        "scheduler", help="run the timed jobs only (beside serve workers started with server.run_scheduler = false)",
        description="Run the scheduler alone: the daily and periodic jobs and the due-action sweep, each run "
        "claimed once in the database, missed runs caught up at start within their grace time.")
    _config_arg(scheduler)

    qr = sub.add_parser("qr", help="WeChat QR codes to print", description="WeChat QR codes to print.")
    _config_arg(qr)
    qr_sub = qr.add_subparsers(dest="qr_command", required=True, metavar="QR_COMMAND")
    posters = qr_sub.add_parser(
        "buildings", help="an A4 stairwell poster per building: scanning it starts binding there",
        description="Create each building's permanent WeChat QR code (stored, so running again "
        "reuses it) and draw an A4 poster per building: the code, the community and building, and "
        "how to use it. Without wechat.appid/secret the codes come from the built-in fake WeChat "
        "API: the posters show the layout only and nothing is stored.")
    _config_arg(posters)
    posters.add_argument("--community", metavar="NAME", help="only this community's buildings")
    posters.add_argument("--format", choices=("png", "pdf"), default="png", help="file format (default: png)")
    posters.add_argument("--out", metavar="DIR", default="posters", help="folder for the files (default: ./posters)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        config = load_config(getattr(args, "config", None))
        if args.command == "serve":
            overrides = {k: v for k, v in (("host", args.host), ("port", args.port),
                                           ("workers", args.workers)) if v is not None}
            if overrides:
                from bot.config import validate_config

                config = config.replace(server=overrides)
                validate_config(config)
    except ConfigError as exc:
        print(f"linli: {exc}", file=sys.stderr)
        return 2
    setup_logging(config.logging.level, config.logging.json)
    try:
        if args.command == "serve":
            return serve(config)
        if args.command == "chat":
            return asyncio.run(chat(config, args.openid))
        if args.command == "db":
            names = asyncio.run(upgrade(config.database))
            print("applied: " + ", ".join(names) if names else "the database is up to date")
            return 0
        if args.command == "demo":
            return asyncio.run(demo(config))
        if args.command == "residents":
            from bot.residents_io import export_command, import_command

            if args.residents_command == "import":
                return asyncio.run(import_command(config, args.file, by=args.by, dry_run=args.dry_run,
                                                  now=Clock().now()))
            return asyncio.run(export_command(config, by=args.by, out=args.out, fmt=args.format,
                                              community=args.community, purpose=args.purpose, now=Clock().now()))
        if args.command == "wechat":
            return asyncio.run(wechat_command(config, args.wechat_command))
        if args.command == "staff":
            from bot.staff_cli import staff_command

            return asyncio.run(staff_command(config, args))
        if args.command == "privacy":
            return asyncio.run(privacy_sweep(config))
        if args.command == "scheduler":
            return asyncio.run(scheduler_only(config))
        if args.command == "qr":
            from bot.posters import qr_buildings

            return asyncio.run(qr_buildings(config, community=args.community, fmt=args.format,
                                            out=Path(args.out)))
    except SchemaOutdated as exc:
        print(f"linli: {exc}", file=sys.stderr)
        return 2
    return 2  # pragma: no cover - argparse requires a command


def _run_worker(config: Config) -> None:
    setup_logging(config.logging.level, config.logging.json)
    web.run_app(create_app(config), host=config.server.host, port=config.server.port,
                reuse_port=config.server.workers > 1, print=None)


def serve(config: Config) -> int:
    if config.server.workers > 1 and uses_fake_wechat(config):
        print("linli: several workers need real WeChat credentials (wechat.appid and wechat.secret): "
              "the built-in fake WeChat API lives inside one process", file=sys.stderr)
        return 2
    asyncio.run(ensure_schema(config.database))
    api = ("the built-in fake WeChat API (no wechat.appid/secret: nothing reaches real WeChat)"
           if uses_fake_wechat(config) else config.wechat.api_base_url)
    print(f"linli serving on http://{config.server.host}:{config.server.port} "
          f"({config.server.workers} worker(s)); WeChat path {config.server.wechat_path}; "
          f"outbound: {api}", flush=True)
    if config.server.workers == 1:
        _run_worker(config)
        return 0
    ctx = multiprocessing.get_context("spawn")
    workers = [ctx.Process(target=_run_worker, args=(config,), daemon=True)
               for _ in range(config.server.workers)]
    for w in workers:
        w.start()

    def stop(_signum: int, _frame: object) -> None:
        for w in workers:
            w.terminate()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for w in workers:
        w.join()
    return 0


def _parse_line(openid: str, line: str) -> Inbound | None:
    """A typed line as an Inbound; slash commands stand for what a phone would send."""
    if not line.startswith("/"):
        return Inbound(openid, "text", text=line, channel="chat")
    cmd, _, rest = line.partition(" ")
    if cmd == "/photo":
        return Inbound(openid, "image", media_id=f"terminal-photo-{secrets.token_hex(4)}", channel="chat")
    if cmd == "/voice":
        return Inbound(openid, "voice", text=rest, channel="chat")
    if cmd == "/location":
        parts = rest.split(maxsplit=2)
        try:
            lat, lon = float(parts[0]), float(parts[1])
        except (IndexError, ValueError):
            print("用法：/location 纬度 经度 [地点名]")
            return None
        return Inbound(openid, "location", latitude=lat, longitude=lon,
                       label=parts[2] if len(parts) > 2 else "", channel="chat")
    if cmd == "/click":
        return Inbound(openid, "event", event="click", event_key=rest.strip(), channel="chat")
    if cmd == "/subscribe":
        return Inbound(openid, "event", event="subscribe", event_key=rest.strip(), channel="chat")
    if cmd == "/unsubscribe":
        return Inbound(openid, "event", event="unsubscribe", channel="chat")
    return Inbound(openid, "text", text=line, channel="chat")


def _sample_photo(media_id: str) -> bytes:
    """A small picture of its own for each /photo (stripes set by the media id), as the fake's media."""
    from bot.testing.fake_wechat import png

    step = 2 + sum(media_id.encode()) % 6
    return png(48, 36, lambda x, y: (x + y) // step % 2 == 0)


def _print_push(sent: Any) -> None:
    """What WeChat would push to a phone, shown in the terminal as it arrives."""
    labels = {"custom": "客服消息", "template": "模板消息", "subscribe": "订阅消息"}
    text = getattr(sent, "text", "") or json.dumps(getattr(sent, "body", {}), ensure_ascii=False)
    print(f"\n【{labels.get(getattr(sent, 'kind', ''), '推送')}→{getattr(sent, 'touser', '')}】"
          + text.replace("\n", "\n      "), flush=True)


async def _jump(services: Any, clock: ShiftedClock, line: str) -> None:
    """/at YYYY-MM-DD HH:MM: move this session's clock forward (community time) and run what fell due."""
    tz = services.engine.tz
    try:
        when = datetime.strptime(line.removeprefix("/at").strip(), "%Y-%m-%d %H:%M").replace(tzinfo=tz)
        clock.jump_to(when)
    except ValueError:
        print("用法：/at 2026-11-26 18:00（只能往后拨，按社区时间）", flush=True)
        return
    print(f"（时钟已拨到 {when:%Y-%m-%d %H:%M}，正在运行到期的定时任务……）", flush=True)
    if services.fake is not None:
        services.fake.interact(services.sender.only_openid or "", kind="message")  # still reading the chat
    if services.scheduler is not None:
        await services.scheduler.run_due()
    services.sender.notify()
    # let what fell due for this session reach it before the next line is read (input may be piped)
    waiting = OutboxMessage.filter(openid=services.sender.only_openid or "", state__in=[State.PENDING, State.SENDING],
                                   next_attempt_at__lte=clock.now())
    for _ in range(AT_DRAIN_POLLS):
        if not await waiting.exists():
            break
        await asyncio.sleep(0.05)


async def scheduler_only(config: Config) -> int:
    """The scheduler in a process of its own, until SIGINT or SIGTERM."""
    await ensure_schema(config.database)
    await init_db(config.database)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        async with open_services(config, Clock(), run_sender=False, run_scheduler=True) as services:
            assert services.scheduler is not None
            jobs = ", ".join(f"{job.name} ({job.trigger})" for job in services.scheduler.jobs())
            print(f"linli scheduler: running {jobs}; stop with Ctrl-C", flush=True)
            await stop.wait()
    finally:
        await close_db()
    print("linli scheduler: stopped", flush=True)
    return 0


async def chat(config: Config, openid: str) -> int:
    await ensure_schema(config.database)
    await init_db(config.database)
    interactive = sys.stdin.isatty()
    stop = asyncio.Event()
    sending: asyncio.Task[None] | None = None
    try:
        clock = ShiftedClock()
        async with open_services(config, clock, on_send=_print_push, only_openid=openid,
                                 run_sender=False, run_scheduler=True) as services:
            if uses_fake_wechat(config):
                print("（未配置微信 appid/secret：推送消息发往内置的模拟微信接口，并显示在这里。）", flush=True)
            if interactive:
                print("邻里 终端对话。输入“菜单”开始，/quit 退出。")
            while True:
                if interactive:
                    print("你> ", end="", flush=True)
                line = await asyncio.to_thread(sys.stdin.readline)
                if not line:
                    break
                line = line.strip()
                if not line:
                    continue
                if line in ("/quit", "/exit"):
                    break
                if line.startswith("/at"):
                    await _jump(services, clock, line)
                    if sending is None:
                        sending = asyncio.create_task(services.sender.run(stop))
                    continue
                msg = _parse_line(openid, line)
                if msg is None:
                    continue
                if services.fake is not None:
                    services.fake.interact(openid, kind="event" if msg.kind == "event" else "message")
                    if msg.kind == "image":  # what the phone would have uploaded: a sample picture
                        services.fake.add_media(msg.media_id, _sample_photo(msg.media_id), "image/png")
                reply = await services.engine.handle(msg)
                if reply.text:
                    print("邻里> " + reply.text.replace("\n", "\n      "), flush=True)
                if sending is None:
                    # Pushes start once the resident has written: that opens WeChat's window.
                    sending = asyncio.create_task(services.sender.run(stop))
            stop.set()
            services.sender.notify()
            if sending is not None:
                await asyncio.wait_for(sending, timeout=15)
    finally:
        await close_db()
    return 0


async def wechat_command(config: Config, command: str) -> int:
    from bot.role_menus import menu_command
    from bot.wechat_setup import check_api, check_callback, check_credentials, check_menu
    from bot.wxclient import WeChatClient

    if uses_fake_wechat(config):
        print("linli: wechat.appid and wechat.secret are needed to talk to WeChat", file=sys.stderr)
        return 2
    store = open_store(config.redis)
    async with aiohttp.ClientSession() as session:
        client = WeChatClient(session, store, config.wechat, config.miniprogram)
        try:
            if command == "menu":
                # the default menu, then one menu per staff role and everyone's role tags
                return await menu_command(client, config)
            checks = [*check_credentials(config), check_menu(config), *await check_api(client, config),
                      await check_callback(session, config)]
        finally:
            await store.aclose()
    for c in checks:
        print(c.line())
    failed = [c for c in checks if not c.ok]
    print(f"{len(checks) - len(failed)} passed, {len(failed)} failed" if failed else "all checks passed")
    return 1 if failed else 0


async def privacy_sweep(config: Config) -> int:
    from bot.scheduler import run_retention
    from models import errand_docs

    errand_docs.configure(config.errands)  # the errand documents to delete live in its directory
    await ensure_schema(config.database)
    await init_db(config.database)
    try:
        counts = await run_retention(config, Clock())
    finally:
        await close_db()
    labels = {"messages": "messages", "prompts": "prompts", "link_requests": "link requests",
              "unbound_accounts": "unbound accounts", "erased_residents": "erased residents anonymised",
              "audit": "audit rows", "case_photos": "case photos",
              "errand_documents": "errand document photos"}
    print("retention sweep: " + ", ".join(f"{labels.get(k, k)} {v}" for k, v in counts.items()))
    return 0


async def demo(config: Config) -> int:
    from models.demo import load_demo

    await ensure_schema(config.database)
    await init_db(config.database)
    try:
        created = await load_demo(Clock().now())
    finally:
        await close_db()
    if created:
        print("已载入演示数据：太平区示范街道（米家社区、新邱社区）。\n"
              "试试：linli chat   （居民）\n      linli chat --as demo-grid-1   （网格员）")
    else:
        print("演示数据已经存在，未重复载入。")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
