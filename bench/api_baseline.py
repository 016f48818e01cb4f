"""The baseline the mini-program API benchmark compares ``linli serve`` with.

Bare aiohttp doing the least a correct endpoint must do for the requests the benchmark sends,
with the answers in the same JSON shapes as the service's:

* the session: the Bearer token's sha256 looked up under ``linli:api:session:<hash>`` in the
  store (the real Redis of ``--redis-url``, or an in-process fakeredis without it, as linli's
  embedded store), holding the account id and openid;
* writes: a fixed-window count per session and per client IP (limits from
  ``LINLI_API_WRITES_PER_MINUTE`` and ``LINLI_API_WRITES_PER_MINUTE_IP``, as the service reads
  them): both counters in one pipelined round trip to Redis, or in memory without Redis (linli
  keeps its limits in memory on the embedded store too); over the limit → 429 with Retry-After;
* the data: hand-written SQL through the same database (aiosqlite on one connection for
  ``sqlite://``, an asyncpg pool of tortoise-orm's default size for ``postgres://``):

  ``GET /api/v1/me``                  account + person + building + community in one join, then
                                      the live facts, active role grants and the elders the person
                                      acts for (one query each; a pending binding request only
                                      when unbound);
  ``GET /api/v1/residents/{id}``      the same join, then the facts; only the caller's own record
                                      (any other id answers 404 — proxies and staff are never
                                      asked for in the benchmark, so the baseline leaves them out);
  ``GET /api/v1/residents/{id}/facts`` the person's id and erasure stamp, then the facts;
  ``POST /api/v1/me/consents``        the consent of this account for the current text version;
                                      when there is none, an INSERT ... SELECT from the account.

Labels, the consent text and role labels come from the project's own tables of constants
(``models.facts``, ``models.residents``, ``models.roles``); none of its code runs per request.

Run by bench/api.py as ``python -m bench.api_baseline --port P --database-url URL
[--redis-url URL] --sessions FILE``; FILE maps tokens to {"account_id", "openid"} and is
loaded into the store at start-up.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiohttp import web

from models.facts import BIRTH_DATE, LIVE_STATES, STATUSES
from models.residents import CONSENT_TEXT, CONSENT_VERSION
from models.roles import ROLES

PREFIX = "/api/v1"
INT_MAX = 2**31 - 1
SESSION_PREFIX = "linli:api:session:"
SESSION_TTL_S = 72 * 3600
POOL_SIZE = 64  # the service's store pool
PG_POOL_MAX = 5  # tortoise-orm's default asyncpg pool size
JSON_TYPE = "application/json"

# Written with $n placeholders; turned into ? for SQLite (each placeholder is used once, in order).
PERSON_SQL = """
SELECT a.id, a.channel, a.verified_mobile, r.id, r.name, r.mobile, c.name, b.id, b.name, r.unit, r.room,
       r.mobility, r.status, r.health_note, r.erased_at
FROM wechat_account a
LEFT JOIN resident r ON r.id = a.resident_id
LEFT JOIN community c ON c.id = r.community_id
LEFT JOIN building b ON b.id = r.building_id
WHERE a.id = $1
"""
ACTOR_SQL = """
SELECT a.id, r.id, r.erased_at FROM wechat_account a LEFT JOIN resident r ON r.id = a.resident_id WHERE a.id = $1
"""
FACTS_SQL = f"""
SELECT id, code, value, state, reason FROM resident_fact
WHERE resident_id = $1 AND state IN ({", ".join(f"'{s}'" for s in LIVE_STATES)})
ORDER BY code, id
"""
ROLES_SQL = """
SELECT s.id, s.resident_id, p.name, s.role, s.scope_kind, s.scope_id, g.name, s.granted_by_label, s.granted_at,
       s.revoked_at
FROM staff_role s JOIN resident p ON p.id = s.resident_id LEFT JOIN resident g ON g.id = s.granted_by_id
WHERE s.resident_id = $1 AND s.revoked_at IS NULL
ORDER BY s.id
"""
ELDERS_SQL = """
SELECT e.id, e.name FROM proxy_link l JOIN resident e ON e.id = l.elder_id
WHERE l.proxy_id = $1 AND l.status = 'active'
ORDER BY l.id
"""
PENDING_SQL = "SELECT id FROM link_request WHERE account_id = $1 AND status = 'pending' LIMIT 1"
CONSENT_SQL = "SELECT text_version, text, accepted_at FROM consent WHERE account_id = $1 AND text_version = $2 LIMIT 1"
INSERT_CONSENT_SQL = """
INSERT INTO consent (text_version, text, accepted_at, account_id, resident_id)
SELECT $1, $2, $3, a.id, a.resident_id FROM wechat_account a WHERE a.id = $4
RETURNING text_version, text, accepted_at
"""


# ----------------------------------------------------------------------------- database


class Database:
    """fetch(sql, *args) → rows (indexable by position), on SQLite or PostgreSQL."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.sqlite = url.startswith("sqlite://")
        self.conn: Any = None
        self.pool: Any = None

    async def open(self) -> None:
        if self.sqlite:
            import aiosqlite

            # Autocommit, one connection: what tortoise-orm's SQLite client does.
            self.conn = await aiosqlite.connect(self.url.removeprefix("sqlite://"), isolation_level=None)
            return
        import asyncpg

        class NoReset(asyncpg.Connection):  # as bot.db: no reset query when a connection goes back
            def get_reset_query(self) -> str:
                return ""

        self.pool = await asyncpg.create_pool(self.url, min_size=1, max_size=PG_POOL_MAX, connection_class=NoReset)

    async def close(self) -> None:
        if self.conn is not None:
            await self.conn.close()
        if self.pool is not None:
            await self.pool.close()

    def sql(self, text: str) -> str:
        return re.sub(r"\$\d+", "?", text) if self.sqlite else text

    async def fetch(self, sql: str, *args: Any) -> list[Any]:
        if self.sqlite:
            async with self.conn.execute(self.sql(sql), args) as cursor:
                return list(await cursor.fetchall())
        return list(await self.pool.fetch(sql, *args))

    def stamp(self, when: datetime) -> Any:
        """A timestamp as this database's driver takes it (SQLite: tortoise-orm's text form)."""
        return str(when) if self.sqlite else when


def iso(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return str(value.isoformat())


# ----------------------------------------------------------------------------- answers


class Reject(Exception):
    def __init__(self, status: int, error: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.error, self.message, self.headers = status, error, message, headers or {}


def answer(doc: Any, status: int = 200) -> web.Response:
    return web.Response(text=json.dumps(doc, ensure_ascii=False, separators=(",", ":")), status=status,
                        content_type=JSON_TYPE)


def fact_out(row: Any) -> dict[str, Any]:
    code = row[1]
    return {"id": row[0], "code": code, "label": "出生日期" if code == BIRTH_DATE else STATUSES.get(code, code),
            "value": row[2], "state": row[3], "reason": row[4]}


def resident_out(person: Any, facts: list[Any]) -> dict[str, Any]:
    """ResidentOut for the person themselves (access self: sensitive fields shown)."""
    _, _, _, rid, name, mobile, community, building_id, building, unit, room, mobility, status, note, _ = person
    return {
        "id": rid, "name": name, "mobile": f"{mobile[:3]}****{mobile[-4:]}" if mobile else "",
        "community": community, "building_id": building_id, "building": building or "", "unit": unit, "room": room,
        "mobility": mobility, "verified": status == "verified", "facts": [fact_out(f) for f in facts],
        "sensitive_hidden": False, "health_note": note, "access": "self",
    }


def grant_out(row: Any) -> dict[str, Any]:
    gid, rid, name, role, kind, scope_id, granter, label, granted_at, revoked_at = row
    return {"id": gid, "resident_id": rid, "resident_name": name, "role": role, "role_label": ROLES[role].label,
            "scope_kind": kind, "scope_id": scope_id, "granted_by": granter or label, "granted_at": iso(granted_at),
            "revoked_at": iso(revoked_at)}


# ----------------------------------------------------------------------------- the endpoints


class Api:
    def __init__(self, db: Database, store: Any, *, redis_limits: bool, per_session: int, per_ip: int) -> None:
        self.db = db
        self.store = store
        self.redis_limits = redis_limits  # else in memory, as linli's limits on the embedded store
        self.per_session, self.per_ip = per_session, per_ip
        self.windows: dict[str, tuple[int, int]] = {}  # in-memory limits: key → (window, count)

    async def session(self, request: web.Request) -> tuple[int, str]:
        """(account id, token hash) of the Bearer token, else 401."""
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token or len(token) > 100:
            raise Reject(401, "unauthorized", "请先登录（或登录已过期）。")
        token_hash = hashlib.sha256(token.encode()).hexdigest()
        raw = await self.store.get(SESSION_PREFIX + token_hash)
        if not raw:
            raise Reject(401, "unauthorized", "请先登录（或登录已过期）。")
        return int(json.loads(raw)["account_id"]), token_hash

    async def limit_write(self, token_hash: str, ip: str) -> None:
        window = int(time.time()) // 60
        keys = (f"bench:api:rl:s:{token_hash}", f"bench:api:rl:ip:{ip}")
        if self.redis_limits:
            pipe = self.store.pipeline(transaction=False)
            for key in keys:
                pipe.incr(f"{key}:{window}")
                pipe.expire(f"{key}:{window}", 60, nx=True)
            counts = (await pipe.execute())[::2]
        else:
            counts = []
            for key in keys:
                start, count = self.windows.get(key, (window, 0))
                count = count + 1 if start == window else 1
                self.windows[key] = (window, count)
                counts.append(count)
        if counts[0] > self.per_session or counts[1] > self.per_ip:
            wait = str(60 - int(time.time()) % 60 + 1)
            raise Reject(429, "rate_limited", "操作太频繁了，请稍后再试。", {"Retry-After": wait})

    async def person(self, account_id: int) -> Any:
        rows = await self.db.fetch(PERSON_SQL, account_id)
        if not rows:
            raise Reject(401, "unauthorized", "登录已失效，请重新登录。")
        return rows[0]

    @staticmethod
    def resident_id(request: web.Request) -> int:
        raw = request.match_info["resident_id"]
        if not raw.isascii() or not raw.isdigit():
            raise Reject(422, "validation", "提交的内容不符合要求：path.resident_id")
        number = int(raw)
        if not 1 <= number <= INT_MAX:
            raise Reject(404, "not_found", "没有找到。")
        return number

    @staticmethod
    def check_query(request: web.Request) -> None:
        extra = sorted(set(request.query) - {"purpose"})
        if extra:
            raise Reject(422, "validation", "提交的内容不符合要求：" + "、".join(f"query.{k}" for k in extra))

    async def me(self, request: web.Request) -> web.Response:
        account_id, _ = await self.session(request)
        person = await self.person(account_id)
        rid = person[3]
        pending = rid is None and bool(await self.db.fetch(PENDING_SQL, account_id))
        resident = roles = elders = None
        if rid is not None:
            resident = resident_out(person, await self.db.fetch(FACTS_SQL, rid))
            roles = [grant_out(r) for r in await self.db.fetch(ROLES_SQL, rid)]
            elders = [{"id": e[0], "name": e[1]} for e in await self.db.fetch(ELDERS_SQL, rid)]
        verified = person[2]
        return answer({"channel": person[1], "bound": rid is not None, "binding_pending": pending,
                       "verified_mobile": f"{verified[:3]}****{verified[-4:]}" if verified else "",
                       "resident": resident, "roles": roles or [], "acts_for": elders or []})

    async def resident(self, request: web.Request) -> web.Response:
        account_id, _ = await self.session(request)
        target = self.resident_id(request)
        self.check_query(request)
        person = await self.person(account_id)
        if person[3] is None:
            raise Reject(409, "not_bound", "请先绑定身份信息。")
        if person[3] != target or person[14] is not None:
            raise Reject(404, "not_found", "没有找到。")
        return answer(resident_out(person, await self.db.fetch(FACTS_SQL, target)))

    async def facts(self, request: web.Request) -> web.Response:
        account_id, _ = await self.session(request)
        target = self.resident_id(request)
        self.check_query(request)
        rows = await self.db.fetch(ACTOR_SQL, account_id)
        if not rows:
            raise Reject(401, "unauthorized", "登录已失效，请重新登录。")
        _, rid, erased_at = rows[0]
        if rid is None:
            raise Reject(409, "not_bound", "请先绑定身份信息。")
        if rid != target or erased_at is not None:
            raise Reject(404, "not_found", "没有找到。")
        return answer({"items": [fact_out(f) for f in await self.db.fetch(FACTS_SQL, target)]})

    async def consent(self, request: web.Request) -> web.Response:
        account_id, token_hash = await self.session(request)
        await self.limit_write(token_hash, request.remote or "unknown")
        try:
            body = json.loads(await request.read())
        except (UnicodeDecodeError, ValueError):
            body = None
        if not isinstance(body, dict) or set(body) != {"accept"} or body["accept"] is not True:
            raise Reject(422, "validation", "提交的内容不符合要求：body.accept")
        rows = await self.db.fetch(CONSENT_SQL, account_id, CONSENT_VERSION)
        if not rows:
            rows = await self.db.fetch(INSERT_CONSENT_SQL, CONSENT_VERSION, CONSENT_TEXT,
                                       self.db.stamp(datetime.now(UTC)), account_id)
            if not rows:
                raise Reject(401, "unauthorized", "登录已失效，请重新登录。")
        version, text, accepted_at = rows[0]
        return answer({"version": version, "text": text, "accepted_at": iso(accepted_at)}, status=201)


@web.middleware
async def errors(request: web.Request, handler: Any) -> web.StreamResponse:
    try:
        response: web.StreamResponse = await handler(request)
        return response
    except Reject as exc:
        response = answer({"error": exc.error, "message": exc.message, "fields": []}, status=exc.status)
        response.headers.update(exc.headers)
        return response


async def healthz(_request: web.Request) -> web.Response:
    return web.Response(text="ok")


def open_store(redis_url: str) -> Any:
    from redis.asyncio import BlockingConnectionPool, Redis

    if redis_url:
        return Redis(connection_pool=BlockingConnectionPool.from_url(redis_url, max_connections=POOL_SIZE, timeout=10))
    import fakeredis

    return fakeredis.FakeAsyncRedis(connection_pool_class=BlockingConnectionPool, max_connections=POOL_SIZE,
                                    timeout=10)


def build_app(database_url: str, redis_url: str, sessions: Path) -> web.Application:
    db = Database(database_url)
    store = open_store(redis_url)
    api = Api(db, store, redis_limits=bool(redis_url),
              per_session=int(os.environ.get("LINLI_API_WRITES_PER_MINUTE", "30")),
              per_ip=int(os.environ.get("LINLI_API_WRITES_PER_MINUTE_IP", "300")))
    tokens = json.loads(sessions.read_text())

    async def start(_app: web.Application) -> None:
        await db.open()
        for token, value in tokens.items():
            await store.set(SESSION_PREFIX + hashlib.sha256(token.encode()).hexdigest(), json.dumps(value),
                            ex=SESSION_TTL_S)

    async def stop(_app: web.Application) -> None:
        await db.close()
        await store.aclose()

    app = web.Application(middlewares=[errors])
    app.on_startup.append(start)
    app.on_cleanup.append(stop)
    app.router.add_get(PREFIX + "/me", api.me)
    app.router.add_get(PREFIX + "/residents/{resident_id}", api.resident)
    app.router.add_get(PREFIX + "/residents/{resident_id}/facts", api.facts)
    app.router.add_post(PREFIX + "/me/consents", api.consent)
    app.router.add_get("/healthz", healthz)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--database-url", required=True, help="sqlite://PATH or postgres://...")
    parser.add_argument("--redis-url", default="", help="a redis:// URL; empty = in-process fakeredis")
    parser.add_argument("--sessions", type=Path, required=True, help="JSON: token → {account_id, openid}")
    args = parser.parse_args()
    web.run_app(build_app(args.database_url, args.redis_url, args.sessions), host="127.0.0.1", port=args.port,
                print=None, access_log=None)


if __name__ == "__main__":
    main()
