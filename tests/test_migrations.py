"""Migrations upgrade a database that already holds data (a deployment of the previous release)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
from tortoise import Tortoise, connections
from tortoise.migrations.api import migrate

from bot.config import Config, DatabaseConfig
from bot.db import tortoise_config, upgrade
from tests.conftest import REAL_DB


@pytest.fixture
async def scratch_db(base_config: Config, tmp_path: Path) -> AsyncIterator[DatabaseConfig]:
    """An empty database of the run's kind: a SQLite file, or a PostgreSQL database beside the test
    one, emptied by dropping its schema. It is kept between runs, like the test databases: DROP
    DATABASE waits for a checkpoint, which took minutes while other workers were writing."""
    if not REAL_DB:
        yield DatabaseConfig(url=f"sqlite://{tmp_path / 'old.sqlite3'}")
        return
    base, _, name = base_config.database.url.rpartition("/")
    scratch = f"{name.split('?')[0]}_upgrade"
    admin = await asyncpg.connect(base.replace("postgres://", "postgresql://", 1) + "/postgres")
    try:
        if not await admin.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", scratch):
            await admin.execute(f'CREATE DATABASE "{scratch}"')
    finally:
        await admin.close()
    conn = await asyncpg.connect(base.replace("postgres://", "postgresql://", 1) + f"/{scratch}")
    try:
        await conn.execute("DROP SCHEMA IF EXISTS public CASCADE; CREATE SCHEMA public;")
    finally:
        await conn.close()
    yield DatabaseConfig(url=f"{base}/{scratch}")
    await Tortoise.close_connections()


async def test_identity_migration_keeps_and_scopes_existing_grants(scratch_db: DatabaseConfig) -> None:
    config = tortoise_config(scratch_db.url)
    await migrate(config=config, target="linli.0002_outbox")
    await Tortoise.close_connections()
    await Tortoise.init(config=config)
    conn = connections.get("default")
    for sql in [
        "INSERT INTO sub_district (id, name) VALUES (1, '街道')",
        "INSERT INTO community (id, name, sub_district_id) VALUES (1, '米家社区', 1)",
        "INSERT INTO grid (id, name, community_id) VALUES (1, '第一网格', 1)",
        "INSERT INTO building (id, name, community_id, grid_id) VALUES (1, '1号楼', 1, 1)",
        "INSERT INTO resident (id, name, mobile, community_id, building_id, unit, room, status, source, created_at)"
        " VALUES (1, '李网格', '13904180001', 1, 1, '1', '101', 'verified', 'staff', '2026-11-01 00:00:00+00:00')",
        "INSERT INTO staff_role (id, resident_id, role, community_id, grid_id) VALUES (1, 1, 'grid_worker', 1, 1)",
        "INSERT INTO staff_role (id, resident_id, role, community_id, grid_id)"
        " VALUES (2, 1, 'community_staff', 1, NULL)",
    ]:
        await conn.execute_script(sql)
    await Tortoise.close_connections()
    assert (await upgrade(scratch_db))[0] == "linli.0003_identity"
    await Tortoise.init(config=config)
    try:
        conn = connections.get("default")
        _, rows = await conn.execute_query(
            "SELECT id, scope_kind, scope_id, sub_district_id, granted_by_label, revoked_at FROM staff_role "
            "ORDER BY id")
        assert [tuple(dict(r).values()) for r in rows] == [
            (1, "grid", 1, 1, "", None), (2, "community", 1, 1, "", None)]
        _, people = await conn.execute_query("SELECT name, mobility, health_note, erased_at FROM resident")
        assert [tuple(dict(p).values()) for p in people] == [("李网格", "", "", None)]
    finally:
        await Tortoise.close_connections()
