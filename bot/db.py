"""The database: tortoise-orm configuration, start-up and the checked-in migrations."""

from __future__ import annotations

import os
from typing import Any

import asyncpg
from tortoise import Tortoise
from tortoise.backends.base.config_generator import expand_db_url
from tortoise.migrations.api import migrate

from bot.config import DatabaseConfig

APP_LABEL = "linli"
MODEL_MODULES = [
    "models.places",
    "models.roles",
    "models.residents",
    "models.facts",
    "models.proxies",
    "models.privacy",
    "models.conversation",
    "models.outbox",
    "models.jobs",
    "models.notices",
    "models.service_days",
    "models.cases",
    "models.media",
    "models.ledger",
    "models.love_bank",
    "models.activities",
    "models.wishes",
    "models.canteen",
    "models.redemption",
    "models.errands",
    "models.riders",
]


class _NoResetConnection(asyncpg.Connection):
    """asyncpg resets a pooled connection on release (advisory locks, LISTEN, session settings);
    Linli uses none of those, so the extra round trip per query is skipped. asyncpg still rolls
    back a transaction left open."""

    def get_reset_query(self) -> str:
        return ""


def _connection(url: str) -> str | dict[str, Any]:
    if not url.startswith(("postgres://", "postgresql://", "psql://")):
        return url
    expanded = expand_db_url(url.replace("postgresql://", "postgres://", 1))
    expanded["credentials"]["connection_class"] = _NoResetConnection
    return dict(expanded)


def tortoise_config(url: str) -> dict[str, Any]:
    return {
        "connections": {"default": _connection(url)},
        "apps": {
            APP_LABEL: {
                "models": MODEL_MODULES,
                "default_connection": "default",
                "migrations": "migrations",
            }
        },
        "use_tz": True,
        "timezone": "UTC",
    }


# For tortoise's own CLI (`tortoise makemigrations`), configured in pyproject.toml.
TORTOISE_ORM = tortoise_config(os.environ.get("LINLI_DATABASE_URL", DatabaseConfig().url))


async def init_db(db: DatabaseConfig) -> None:
    """Connect tortoise for this process (queries from any task see it)."""
    await Tortoise.init(config=tortoise_config(db.url), _enable_global_fallback=True)


async def close_db() -> None:
    await Tortoise.close_connections()


async def upgrade(db: DatabaseConfig) -> list[str]:
    """Apply the checked-in migrations that this database has not seen; return their names."""
    applied: list[str] = []

    def progress(event: str, app_label: str, name: str) -> None:
        if event == "apply_done":
            applied.append(f"{app_label}.{name}")

    try:
        await migrate(config=tortoise_config(db.url), progress=progress)
    finally:
        await Tortoise.close_connections()
    return applied


async def pending(db: DatabaseConfig) -> list[str]:
    """Names of the checked-in migrations this database has not applied yet."""
    planned: list[str] = []

    def reporter(_connection: str, plan: list[Any], _fake: bool, _dry: bool) -> None:
        planned.extend(f"{s.migration.app_label}.{s.migration.name}" for s in plan)

    try:
        await migrate(config=tortoise_config(db.url), dry_run=True, reporter=reporter)
    finally:
        await Tortoise.close_connections()
    return planned


async def ensure_schema(db: DatabaseConfig) -> None:
    """SQLite (a newcomer's first run) is upgraded in place; PostgreSQL must be upgraded on
    purpose with ``linli db upgrade``, so a deployment never migrates behind its operator's back."""
    if db.url.startswith("sqlite://"):
        await upgrade(db)
        return
    waiting = await pending(db)
    if waiting:
        raise SchemaOutdated(
            f"the database lacks {len(waiting)} migration(s) ({', '.join(waiting)}); "
            "run `linli db upgrade` first"
        )


class SchemaOutdated(Exception):
    pass
