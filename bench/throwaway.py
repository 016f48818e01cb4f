"""A throwaway database for the in-process benchmarks: a SQLite file in the given directory, or a
PostgreSQL database that is dropped and recreated first and dropped at the end; migrated with the
checked-in migrations and opened for tortoise."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from bot.config import DatabaseConfig
from bot.db import close_db, init_db, upgrade


async def _admin(url: str, *statements: str) -> None:
    import asyncpg

    base, _, _ = url.rpartition("/")
    admin = await asyncpg.connect(base.replace("postgres://", "postgresql://", 1) + "/postgres")
    try:
        for statement in statements:
            await admin.execute(statement)
    finally:
        await admin.close()


@asynccontextmanager
async def throwaway_db(pg_url: str, workdir: Path) -> AsyncIterator[None]:
    url = pg_url or f"sqlite://{workdir / 'bench.sqlite3'}"
    name = pg_url.rpartition("/")[2]
    if pg_url:
        await _admin(pg_url, f'DROP DATABASE IF EXISTS "{name}"', f'CREATE DATABASE "{name}"')
    database = DatabaseConfig(url=url)
    await upgrade(database)
    await init_db(database)
    try:
        yield
    finally:
        await close_db()
        if pg_url:
            await _admin(pg_url, f'DROP DATABASE IF EXISTS "{name}"')
