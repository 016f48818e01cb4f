"""Test setup: the embedded defaults, or real Redis + PostgreSQL when the environment names them.

LINLI_DATABASE_URL (postgres://...) and LINLI_REDIS_URL select the real servers, exactly as they
override the service's own configuration. LINLI_TEST_NO_SKIP=1 turns any skipped test into a
failure of the run (CI's Redis + PostgreSQL pass must skip nothing).

Under pytest-xdist (``-n``) every worker gets its own database (``<name>_gw0``, created when
missing) and its own Redis database number (the given one, counting down per worker), set in the
environment before any test module reads it, so subprocesses the tests start use them too.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
from hypothesis import settings
from redis.asyncio import Redis
from tortoise import Tortoise, connections

from bot.app import create_app
from bot.clock import FrozenClock
from bot.config import Config, build_config
from bot.db import close_db, init_db, upgrade
from tests.wechat import AES_KEY, APPID, OLD_AES_KEY, TOKEN, WeChatPusher

settings.register_profile("ci", max_examples=60, deadline=None)
settings.register_profile("dev", max_examples=25, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))


def _per_worker(environ: dict[str, str] | os._Environ[str]) -> None:
    """Point this xdist worker at its own PostgreSQL database and Redis database number."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    if not worker.startswith("gw"):
        return
    index = int(worker.removeprefix("gw"))
    db = environ.get("LINLI_DATABASE_URL", "")
    if db.startswith(("postgres://", "postgresql://")):
        base, _, query = db.partition("?")
        environ["LINLI_DATABASE_URL"] = f"{base}_{worker}" + (f"?{query}" if query else "")
    redis_url = environ.get("LINLI_REDIS_URL", "")
    if redis_url:
        parts = urlsplit(redis_url)
        number = int(parts.path.strip("/") or 0)
        if number - index < 0:
            raise RuntimeError(f"LINLI_REDIS_URL names database {number}: too few below it for worker {worker}")
        environ["LINLI_REDIS_URL"] = urlunsplit(parts._replace(path=f"/{number - index}"))


_per_worker(os.environ)

REAL_DB = os.environ.get("LINLI_DATABASE_URL", "").startswith(("postgres://", "postgresql://"))
REAL_REDIS = bool(os.environ.get("LINLI_REDIS_URL"))
REAL_SERVERS = REAL_DB and REAL_REDIS
NEEDS_SERVERS = "needs real Redis and PostgreSQL (set LINLI_REDIS_URL and LINLI_DATABASE_URL)"

requires_servers = pytest.mark.skipif(not REAL_SERVERS, reason=NEEDS_SERVERS)


def pytest_report_header(config: pytest.Config) -> str:
    db = "PostgreSQL" if REAL_DB else "SQLite file"
    store = "Redis" if REAL_REDIS else "in-process store"
    return f"linli backends: {db} + {store}"


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if os.environ.get("LINLI_TEST_NO_SKIP") != "1":
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = len(reporter.stats.get("skipped", [])) if reporter else 0
    if skipped:
        print(f"\nLINLI_TEST_NO_SKIP=1 but {skipped} test(s) were skipped: failing the run")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture(scope="session")
def base_config(tmp_path_factory: pytest.TempPathFactory) -> Config:
    env = {k: v for k, v in os.environ.items() if k.startswith("LINLI_")}
    env.pop("LINLI_CONFIG", None)
    if not REAL_DB:
        env["LINLI_DATABASE_URL"] = f"sqlite://{tmp_path_factory.mktemp('db') / 'test.sqlite3'}"
    cfg = build_config({}, env)
    return cfg.replace(
        wechat={"appid": APPID, "token": TOKEN, "encoding_aes_key": AES_KEY,
                "previous_encoding_aes_key": OLD_AES_KEY},
        logging={"json": False},
        errands={"documents_dir": str(tmp_path_factory.mktemp("documents"))},
    )


async def _ensure_database(url: str) -> None:
    """Create this worker's PostgreSQL database when it does not exist yet."""
    import asyncpg

    parts = urlsplit(url)
    name = parts.path.lstrip("/")
    conn = await asyncpg.connect(urlunsplit(parts._replace(path="/postgres", query="")))
    try:
        if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
            await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def _schema(base_config: Config) -> Iterator[None]:
    """Migrate a clean database once per session, through the checked-in migrations."""

    async def prepare() -> None:
        if REAL_DB:
            if os.environ.get("PYTEST_XDIST_WORKER"):
                await _ensure_database(base_config.database.url)
            await init_db(base_config.database)
            conn = connections.get("default")
            await conn.execute_script("DROP SCHEMA IF EXISTS public CASCADE; CREATE SCHEMA public;")
            await close_db()
        await upgrade(base_config.database)

    asyncio.run(prepare())
    yield


async def _wipe(cfg: Config) -> None:
    await init_db(cfg.database)
    try:
        conn = connections.get("default")
        tables = [m._meta.db_table for m in Tortoise.apps.get_models_iterable()]  # type: ignore[union-attr]
        if REAL_DB:
            await conn.execute_script(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE;")
        else:
            await conn.execute_script(
                "PRAGMA foreign_keys=OFF;" + "".join(f"DELETE FROM {t};" for t in tables)
                + "PRAGMA foreign_keys=ON;"
            )
    finally:
        await close_db()
    if cfg.redis.url:
        store = Redis.from_url(cfg.redis.url)
        await store.flushdb()
        await store.aclose()


@pytest.fixture
async def config(base_config: Config, _schema: None) -> AsyncIterator[Config]:
    """A clean database and store for each test."""
    from models import errand_docs

    await _wipe(base_config)
    errand_docs.configure(base_config.errands)  # document photos go to this run's own directory
    yield base_config


@pytest.fixture
async def db(config: Config) -> AsyncIterator[Config]:
    """The clean database, connected in this process, without an app (and its sender) around it."""
    await init_db(config.database)
    yield config
    await close_db()


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(datetime(2026, 11, 27, 1, 0, tzinfo=UTC))  # 周五 09:00 in Shanghai


@pytest.fixture
async def client(aiohttp_client, config: Config, clock: FrozenClock):  # type: ignore[no-untyped-def]
    app = create_app(config, clock=clock)
    return await aiohttp_client(app)


@pytest.fixture
def wechat(client, clock: FrozenClock) -> WeChatPusher:  # type: ignore[no-untyped-def]
    return WeChatPusher(client, clock)


@pytest.fixture
async def demo(client) -> None:  # type: ignore[no-untyped-def]
    """The demo sub-district, loaded through the app's own database connection."""
    from models.demo import load_demo

    await load_demo(datetime(2026, 11, 1, tzinfo=UTC))


@pytest.fixture
def newcomer_env(tmp_path: Path) -> dict[str, str]:
    """The user's environment minus any LINLI_* setting, on SQLite in tmp_path (no file yet: the
    first command makes it, as on a newcomer's first run) and the embedded store."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LINLI_")}
    env["LINLI_DATABASE_URL"] = f"sqlite://{tmp_path / 'x.sqlite3'}"
    env["LINLI_REDIS_URL"] = ""
    root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    return env


@pytest.fixture(scope="session")
def migrated_sqlite(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite file with every migration applied, made once per worker by ``linli db upgrade``.

    tortoise-orm replays its migrations' model states one operation at a time, several seconds of
    CPU for a fresh file; the CLI tests start from a copy instead (``newcomer_env`` still starts
    from nothing, for the tests of a first run)."""
    path = tmp_path_factory.mktemp("migrated") / "x.sqlite3"
    env = {k: v for k, v in os.environ.items() if not k.startswith("LINLI_")}
    env["LINLI_DATABASE_URL"] = f"sqlite://{path}"
    env["LINLI_REDIS_URL"] = ""
    subprocess.run([sys.executable, "-m", "bot.cli", "db", "upgrade"], env=env, check=True, capture_output=True,
                   cwd=Path(__file__).resolve().parent.parent, timeout=600)
    return path


@pytest.fixture
def cli_env(newcomer_env: dict[str, str], tmp_path: Path, migrated_sqlite: Path) -> dict[str, str]:
    """``newcomer_env`` on a database already up to date (a copy of ``migrated_sqlite``)."""
    shutil.copyfile(migrated_sqlite, tmp_path / "x.sqlite3")
    return newcomer_env


@pytest.fixture
def repo_root() -> Path:
    return Path(__file__).resolve().parent.parent
