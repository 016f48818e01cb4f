"""The mini-program API (/api/v1): routes declared in code, validated by pydantic, and the
OpenAPI 3.1 spec generated from those same declarations (never written beside them).

A view is ``async def view(req: ApiRequest) -> model | None`` (or a ``FileBody``, a download in the
media type its route declares with ``produces``). It declares its body, query and
response models and the error statuses it can answer; the framework validates input (422 with
the failing fields), authenticates the session (401), rate-limits logins and writes (429),
translates domain errors (NotFound and Forbidden → 404, so a forbidden object looks absent;
UserFacingError → 409) and documents all of it in the spec.
"""

from __future__ import annotations

import hashlib
import html
import json
import logging
import re
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import date, datetime
from typing import Annotated, Any

from aiohttp import web
from limits import RateLimitItemPerMinute
from limits.aio.storage import MemoryStorage, RedisStorage, Storage
from limits.aio.strategies import FixedWindowRateLimiter
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic.json_schema import models_json_schema
from redis.exceptions import LockError

from bot.config import Config
from bot.store import key as store_key
from models.errors import Forbidden, NotFound, UserFacingError
from models.proxies import acts_for
from models.residents import Resident, WechatAccount

log = logging.getLogger(__name__)

PREFIX = "/api/v1"
INT_MAX = 2**31 - 1  # ids are 32-bit in the database
BODY_MAX = 64 * 1024
# shapes the flow modules share
Id = Annotated[int, Field(ge=1, le=INT_MAX)]  # an id in a path, a query or a body
HHMM = r"^([01][0-9]|2[0-3]):[0-5][0-9]$"  # a time of day
DAY = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$"  # a date (real_day checks it is one)
TEXT = r"^[^\x00-\x1f\x7f]*$"  # one line of visible text: no control characters
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


class Strict(BaseModel):
    """Base of request bodies: unknown fields are refused, types are not coerced (0 is not
    false, "5" is not 5), text is trimmed."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True, strict=True)


class Query(BaseModel):
    """Base of query parameters: they arrive as text, so numbers and flags are parsed from it."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


def _has_nul(value: Any) -> bool:
    """Whether a JSON value holds a NUL character anywhere (PostgreSQL text cannot store one)."""
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_nul(v) for v in value)
    return False


class FieldError(BaseModel):
    field: str
    message: str


class Error(BaseModel):
    error: str  # unauthorized | not_found | validation | rejected | rate_limited | internal
    message: str  # zh-CN, for the person using the mini-program
    fields: list[FieldError] = []


class ApiError(Exception):
    def __init__(self, status: int, error: str, message: str, fields: list[FieldError] | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.error, self.message = status, error, message
        self.fields = fields or []
        self.headers = headers or {}

    def response(self) -> web.Response:
        body = Error(error=self.error, message=self.message, fields=self.fields)
        return web.json_response(text=body.model_dump_json(), status=self.status, headers=self.headers)


def real_day(value: str | None) -> str | None:
    """A pydantic field validator for a YYYY-MM-DD text: a real calendar day (not 2026-02-30) in the
    years 2000 to 2100, else a ValueError (a 422 naming the field). Use as
    ``_day = field_validator("day")(real_day)``."""
    if value is not None and not 2000 <= date.fromisoformat(value).year <= 2100:
        raise ValueError("a year between 2000 and 2100")
    return value


def not_found(message: str = "没有找到。") -> ApiError:
    return ApiError(404, "not_found", message)


def invalid(field: str, message: str) -> ApiError:
    """A 422 naming one field (``body.amount``, ``header.Idempotency-Key``)."""
    return ApiError(422, "validation", f"提交的内容不符合要求：{field}", [FieldError(field=field, message=message)])


def idempotency_key(http: web.Request, client_token: str | None = None, *, max_len: int = 64) -> str | None:
    """The request's Idempotency-Key header, else the body's ``client_token``; None when neither.

    A header that is not 1 to ``max_len`` visible ASCII characters, or a client_token that differs
    from it, is a 422."""
    header = http.headers.get("Idempotency-Key")
    if header is None:
        return client_token
    header = header.strip()
    if not 1 <= len(header) <= max_len or not header.isascii() or not header.isprintable() or " " in header:
        raise invalid("header.Idempotency-Key", f"1 to {max_len} visible ASCII characters")
    if client_token is not None and client_token != header:
        raise invalid("body.client_token", "differs from the Idempotency-Key header")
    return header


IDEMPOTENCY_HOURS = 24


async def once(store: Any, kind: str, actor_id: int, token: str, fingerprint: str,
               create: Callable[[], Awaitable[int]], exists: Callable[[int], Awaitable[bool]], *,
               what: str, busy: str) -> int:
    """Run ``create`` once per (kind, caller, token) within IDEMPOTENCY_HOURS and answer the id it
    made; a retry gets that id again while ``exists(id)``.

    The token's record lives in the store under a lock, so copies of one request arriving together
    run one after the other and the later ones find the first's id. The same token with another
    ``fingerprint`` (of the request's body) is a 422 naming ``what`` (as the IETF Idempotency-Key
    draft says); a copy still waiting for the lock after 15 s is a 409 saying ``busy``."""
    name = store_key("api", "once", kind, str(actor_id), hashlib.sha256(token.encode()).hexdigest())
    try:
        async with store.lock(name + ":lock", timeout=30, blocking_timeout=15):
            raw = await store.get(name)
            if raw:
                seen = json.loads(raw)
                if seen["fingerprint"] != fingerprint:
                    raise invalid("header.Idempotency-Key", f"was used for a different {what}")
                if await exists(int(seen["id"])):
                    return int(seen["id"])
            new_id = await create()
            await store.set(name, json.dumps({"id": new_id, "fingerprint": fingerprint}), ex=IDEMPOTENCY_HOURS * 3600)
            return new_id
    except LockError:
        raise ApiError(409, "in_progress", busy) from None


# ---------------------------------------------------------------------------- sessions


@dataclass
class Session:
    token_hash: str
    account_id: int
    openid: str


def _session_key(token_hash: str) -> str:
    return f"linli:api:session:{token_hash}"


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


async def create_session(store: Any, account: WechatAccount, hours: int) -> str:
    """An opaque token; only its hash is stored, with the expiry."""
    token = secrets.token_urlsafe(32)
    value = json.dumps({"account_id": account.id, "openid": account.openid})
    await store.set(_session_key(_hash(token)), value, ex=hours * 3600)
    return token


async def load_session(store: Any, token: str) -> Session | None:
    if not token or len(token) > 100:
        return None
    token_hash = _hash(token)
    raw = await store.get(_session_key(token_hash))
    if not raw:
        return None
    data = json.loads(raw)
    return Session(token_hash, int(data["account_id"]), str(data["openid"]))


async def end_session(store: Any, session: Session) -> None:
    await store.delete(_session_key(session.token_hash))


# ---------------------------------------------------------------------------- routes


@dataclass
class ApiRequest:
    """What a view gets: validated input, the session's account and person, the services."""

    http: web.Request
    path: dict[str, int]
    body: Any
    query: Any
    session: Session | None
    now: datetime
    services: Any  # bot.services.Services
    ip: str
    _account: WechatAccount | None = None
    _actor: Resident | None = None
    _actor_loaded: bool = False

    async def account(self) -> WechatAccount:
        if self.session is None:  # pragma: no cover - auth routes never ask
            raise ApiError(401, "unauthorized", "请先登录。")
        if self._account is None:
            self._account = await WechatAccount.get_or_none(id=self.session.account_id)
            if self._account is None:
                raise ApiError(401, "unauthorized", "登录已失效，请重新登录。")
        return self._account

    async def actor(self) -> Resident | None:
        """The person using the mini-program (None until bound)."""
        if not self._actor_loaded:
            account = await self.account()
            rid = account.resident_id  # type: ignore[attr-defined]
            self._actor = None if rid is None else await Resident.get_or_none(id=rid)
            self._actor_loaded = True
        return self._actor

    async def bound_actor(self) -> Resident:
        actor = await self.actor()
        if actor is None:
            raise ApiError(409, "not_bound", "请先绑定身份信息。")
        return actor

    async def acting_for(self, resident_id: int | None, *,
                         may: Callable[[int, Resident], Awaitable[bool]] | None = None) -> tuple[Resident, Resident]:
        """(the caller, the person they act as): themselves when ``resident_id`` is None or theirs, else
        the resident ``may(caller_id, resident)`` allows (by default: an elder the caller acts for
        through an active family link); anyone else is a 404, exactly like a missing record."""
        actor = await self.bound_actor()
        if resident_id is None or resident_id == actor.id:
            return actor, actor
        person = await Resident.get_or_none(id=resident_id, erased_at=None)
        if person is None or not await (may or _acts_for)(actor.id, person):
            raise not_found()
        return actor, person


async def _acts_for(actor_id: int, person: Resident) -> bool:
    return await acts_for(actor_id, person.id)


View = Callable[[ApiRequest], Awaitable[Any]]


@dataclass
class FileBody:
    """A view's answer that is a file to download rather than JSON, in the media type its route
    declares (``produces``)."""

    data: bytes
    filename: str  # ASCII, e.g. case-figures-20261123.xlsx
    # the exact type when the route declares a range (produces="image/*"), e.g. image/png
    content_type: str = ""
    inline: bool = False  # shown in place (a photo) rather than saved
    no_store: bool = False  # never kept by a browser or proxy cache (a document photo)

    def disposition(self) -> str:
        if not self.filename.isascii() or any(c in self.filename for c in '"\\/\r\n'):
            raise ValueError(f"not a plain ASCII file name: {self.filename!r}")
        return f'{"inline" if self.inline else "attachment"}; filename="{self.filename}"'

    def media_type(self, produces: str) -> str:
        """The type to answer with, which must lie within the route's ``produces``."""
        kind = self.content_type or produces
        major, _, minor = produces.partition("/")
        if kind != produces and not (minor == "*" and kind.startswith(major + "/") and "*" not in kind):
            raise TypeError(f"a {kind} file from a route that produces {produces}")
        return kind


@dataclass
class Route:
    method: str
    path: str  # below /api/v1, e.g. /residents/{resident_id}
    view: View
    summary: str
    body: type[BaseModel] | None = None
    query: type[BaseModel] | None = None
    response: type[BaseModel] | None = None
    status: int = 200
    auth: bool = True
    write: bool = False
    errors: tuple[int, ...] = ()
    tag: str = ""
    produces: str | None = None  # the media type of a FileBody the view may answer instead of JSON

    @property
    def path_params(self) -> list[str]:
        return re.findall(r"{(\w+)}", self.path)

    @property
    def statuses(self) -> list[int]:
        codes = {self.status, *self.errors}
        if self.auth:
            codes.add(401)
        if self.body or self.query or self.path_params:
            codes.add(422)
        if self.path_params:
            codes.add(404)
        if self.write:
            codes.add(429)
        return sorted(codes)


class ApiRouter:
    """The API views of one flow module; handlers/__init__.API_ROUTERS lists them."""

    def __init__(self, tag: str) -> None:
        self.tag = tag
        self.routes: list[Route] = []

    def route(self, method: str, path: str, *, summary: str, body: type[BaseModel] | None = None,
              query: type[BaseModel] | None = None, response: type[BaseModel] | None = None,
              status: int = 200, auth: bool = True, errors: tuple[int, ...] = (),
              produces: str | None = None) -> Callable[[View], View]:
        def register(view: View) -> View:
            self.routes.append(Route(method.upper(), path, view, summary, body, query, response, status, auth,
                                     write=method.upper() != "GET", errors=errors, tag=self.tag, produces=produces))
            return view

        return register


# ---------------------------------------------------------------------------- the application


def _field_errors(exc: ValidationError, where: str) -> list[FieldError]:
    out = []
    for err in exc.errors(include_url=False):
        loc = ".".join(str(part) for part in err["loc"])
        out.append(FieldError(field=f"{where}.{loc}" if loc else where, message=err["msg"]))
    return out


def _validation(fields: list[FieldError]) -> ApiError:
    return ApiError(422, "validation", "提交的内容不符合要求：" + "、".join(f.field for f in fields), fields)


class Limiter:
    """Fixed-window limits per key, in Redis when configured (shared by workers), else in memory."""

    def __init__(self, config: Config) -> None:
        storage: Storage
        if config.redis.url:
            storage = RedisStorage("async+" + config.redis.url, implementation="redispy")
        else:
            storage = MemoryStorage()
        self.limiter = FixedWindowRateLimiter(storage)
        self.config = config.api

    async def hit(self, name: str, key: str, per_minute: int) -> None:
        item = RateLimitItemPerMinute(per_minute)
        if not await self.limiter.hit(item, "linli-api", name, key):
            stats = await self.limiter.get_window_stats(item, "linli-api", name, key)
            wait = max(1, int(stats.reset_time - time.time()) + 1)
            raise ApiError(429, "rate_limited", "操作太频繁了，请稍后再试。", headers={"Retry-After": str(wait)})


def _client_ip(request: web.Request, trust_forwarded: bool) -> str:
    if trust_forwarded:
        forwarded = request.headers.get("X-Forwarded-For", "")
        if forwarded:
            return forwarded.split(",")[0].strip()[:64]
    return request.remote or "unknown"


def _bearer(request: web.Request) -> str:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def make_handler(route: Route, services_key: Any, limiter_key: Any) -> Handler:
    async def handle(request: web.Request) -> web.StreamResponse:
        services = request.app[services_key]
        limiter: Limiter = request.app[limiter_key]
        config: Config = services.config
        ip = _client_ip(request, config.api.trust_forwarded_for)
        session = None
        if route.auth:
            session = await load_session(services.store, _bearer(request))
            if session is None:
                raise ApiError(401, "unauthorized", "请先登录（或登录已过期）。")
        if route.write:
            if session is None:
                await limiter.hit("login", ip, config.api.login_per_minute)
            else:
                await limiter.hit("write-session", session.token_hash, config.api.writes_per_minute)
                await limiter.hit("write-ip", ip, config.api.writes_per_minute_ip)
        path: dict[str, int] = {}
        for name in route.path_params:
            raw = request.match_info.get(name, "")
            if not raw.isascii() or not raw.isdigit():
                raise _validation([FieldError(field=f"path.{name}", message="must be a positive integer")])
            number = int(raw)
            if not 1 <= number <= INT_MAX:
                raise not_found()
            path[name] = number
        query = None
        if route.query is not None:
            repeated = sorted({k for k in request.query if len(request.query.getall(k)) > 1})
            if repeated:  # every query parameter is a single value: a second one is a mistake, not ignored
                raise _validation([FieldError(field=f"query.{k}", message="given more than once") for k in repeated])
            nul = sorted({k for k, v in request.query.items() if "\x00" in v})
            if nul:  # no text we keep may hold a NUL (PostgreSQL refuses it)
                raise _validation([FieldError(field=f"query.{k}", message="must not contain NUL") for k in nul])
            try:
                query = route.query.model_validate(dict(request.query))
            except ValidationError as exc:
                raise _validation(_field_errors(exc, "query")) from None
        body = None
        if route.body is not None:
            raw_body = await request.content.read(BODY_MAX + 1)
            if len(raw_body) > BODY_MAX:
                raise _validation([FieldError(field="body", message="too large")])
            try:
                data = json.loads(raw_body.decode("utf-8"))
            except (UnicodeDecodeError, ValueError):
                raise _validation([FieldError(field="body", message="must be a JSON object")]) from None
            if _has_nul(data):
                raise _validation([FieldError(field="body", message="text must not contain NUL")])
            try:
                body = route.body.model_validate(data)
            except ValidationError as exc:
                raise _validation(_field_errors(exc, "body")) from None
        req = ApiRequest(request, path, body, query, session, services.clock.now(), services, ip)
        result = await route.view(req)
        if isinstance(result, FileBody):
            if route.produces is None:
                raise TypeError(f"{route.method} {route.path} answered a file without declaring produces")
            # nosniff: a browser takes the declared type, never guesses one from what a resident sent
            headers = {"Content-Disposition": result.disposition(), "X-Content-Type-Options": "nosniff"}
            if result.no_store:
                headers["Cache-Control"] = "no-store"
            return web.Response(body=result.data, status=route.status, content_type=result.media_type(route.produces),
                                headers=headers)
        if route.response is None or result is None:
            return web.Response(status=route.status)
        return web.json_response(text=result.model_dump_json(), status=route.status)

    return handle


@web.middleware
async def api_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every answer below /api/v1 is JSON with the Error shape, whatever went wrong."""
    if not request.path.startswith(PREFIX + "/") and request.path != PREFIX:
        return await handler(request)
    try:
        return await handler(request)
    except ApiError as exc:
        return exc.response()
    except (NotFound, Forbidden) as exc:
        return ApiError(404, "not_found", exc.message).response()
    except UserFacingError as exc:
        return ApiError(409, "rejected", exc.message).response()
    except web.HTTPNotFound:
        return ApiError(404, "not_found", "没有这个接口。").response()
    except web.HTTPMethodNotAllowed:
        return ApiError(405, "method_not_allowed", "不支持这种请求方法。").response()
    except web.HTTPRequestEntityTooLarge:
        return _validation([FieldError(field="body", message="too large")]).response()
    except Exception:
        log.exception("API %s %s failed", request.method, request.path)
        return ApiError(500, "internal", "服务器出错了，请稍后再试。").response()


def add_api(app: web.Application, routes: list[Route], services_key: Any, limiter_key: Any) -> None:
    seen = set()
    for route in routes:
        ident = (route.method, route.path)
        if ident in seen:
            raise ValueError(f"API route {route.method} {route.path} declared twice")
        seen.add(ident)
        app.router.add_route(route.method, PREFIX + route.path, make_handler(route, services_key, limiter_key))
    spec = openapi(routes)
    page = docs_page(spec)

    spec_text = json.dumps(spec, ensure_ascii=False)

    async def spec_view(request: web.Request) -> web.Response:
        return web.json_response(text=spec_text)

    async def docs_view(request: web.Request) -> web.Response:
        return web.Response(text=page, content_type="text/html")

    app.router.add_get(PREFIX + "/openapi.json", spec_view)
    app.router.add_get(PREFIX + "/docs", docs_view)
    app.middlewares.append(api_errors)


# ---------------------------------------------------------------------------- the spec


STATUS_TEXT = {
    200: "OK", 201: "Created", 202: "Accepted", 204: "No content", 401: "Not logged in, or the session expired",
    404: "Not found, or not yours to see", 409: "A rule refused it (message says why)",
    422: "Invalid input (fields name what)", 429: "Too many requests (see Retry-After)",
}


def openapi(routes: list[Route]) -> dict[str, Any]:
    """The OpenAPI 3.1 document of the routes, from their declared models."""
    models: set[type[BaseModel]] = {Error}
    for route in routes:
        models.update(m for m in (route.body, route.response) if m is not None)
    _, top = models_json_schema([(m, "validation") for m in sorted(models, key=lambda m: m.__name__)],
                                ref_template="#/components/schemas/{model}")
    schemas = top.get("$defs", {})
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        params: list[dict[str, Any]] = [
            {"name": name, "in": "path", "required": True,
             "schema": {"type": "integer", "minimum": 1, "maximum": INT_MAX}}
            for name in route.path_params
        ]
        if route.query is not None:
            qschema = route.query.model_json_schema()
            required = set(qschema.get("required", []))
            for name, prop in qschema.get("properties", {}).items():
                prop = {k: v for k, v in prop.items() if k != "title"}
                # a query string cannot say null: an optional parameter is simply left out
                options = [p for p in prop.get("anyOf", []) if p.get("type") != "null"]
                if "anyOf" in prop and len(options) == 1:
                    prop = {**{k: v for k, v in prop.items() if k != "anyOf"}, **options[0]}
                    if prop.get("default", 0) is None:
                        del prop["default"]
                param = {"name": name, "in": "query", "required": name in required, "schema": prop}
                if "description" in prop:
                    param["description"] = prop["description"]
                params.append(param)
        responses: dict[str, Any] = {}
        for code in route.statuses:
            entry: dict[str, Any] = {"description": STATUS_TEXT.get(code, "")}
            if code == route.status:
                content: dict[str, Any] = {}
                if route.response is not None:
                    content["application/json"] = {
                        "schema": {"$ref": f"#/components/schemas/{route.response.__name__}"}}
                if route.produces is not None:
                    content[route.produces] = {"schema": {"type": "string", "format": "binary"}}
                    entry["headers"] = {"Content-Disposition": {
                        "schema": {"type": "string"},
                        "description": "attachment (or inline); filename=... (with a file)"}}
                if content:
                    entry["content"] = content
            else:
                entry["content"] = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
            if code == 429:
                entry["headers"] = {"Retry-After": {"schema": {"type": "integer"},
                                                    "description": "seconds to wait"}}
            responses[str(code)] = entry
        operation: dict[str, Any] = {
            "operationId": route.view.__name__,
            "summary": route.summary,
            "tags": [route.tag],
            "parameters": params,
            "responses": responses,
        }
        doc = (route.view.__doc__ or "").strip()
        if doc:
            operation["description"] = doc
        if route.body is not None:
            operation["requestBody"] = {"required": True, "content": {"application/json": {
                "schema": {"$ref": f"#/components/schemas/{route.body.__name__}"}}}}
        operation["security"] = [{"session": []}] if route.auth else []
        paths.setdefault(PREFIX + route.path, {})[route.method.lower()] = operation
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Linli mini-program API",
            "version": "1",
            "description": "The mini-program's door to the same flows as the official account. Log in with "
                           "wx.login's code at POST /api/v1/auth/login and send the token as "
                           "`Authorization: Bearer TOKEN`. Objects you may not see answer 404.",
        },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"session": {"type": "http", "scheme": "bearer",
                                            "description": "the token from POST /api/v1/auth/login"}},
        },
    }


def _fields_table(schema: dict[str, Any], schemas: dict[str, Any]) -> str:
    if "$ref" in schema:
        schema = schemas.get(schema["$ref"].rsplit("/", 1)[-1], {})
    props = schema.get("properties", {})
    if not props:
        return ""
    required = set(schema.get("required", []))
    rows = []
    for name, prop in props.items():
        kind = prop.get("type") or ", ".join(
            p.get("type", p.get("$ref", "").rsplit("/", 1)[-1]) for p in prop.get("anyOf", []))
        if "$ref" in prop:
            kind = prop["$ref"].rsplit("/", 1)[-1]
        rows.append(f"<tr><td><code>{html.escape(name)}</code>{' *' if name in required else ''}</td>"
                    f"<td>{html.escape(str(kind))}</td><td>{html.escape(prop.get('description', ''))}</td></tr>")
    return "<table><tr><th>field</th><th>type</th><th></th></tr>" + "".join(rows) + "</table>"


def docs_page(spec: dict[str, Any]) -> str:
    """A self-contained page (no scripts, no CDN) describing every operation of the spec."""
    schemas = spec["components"]["schemas"]
    parts = [
        "<!doctype html><html lang='zh-CN'><head><meta charset='utf-8'><title>Linli API v1</title>",
        "<style>body{font-family:sans-serif;max-width:60em;margin:2em auto;padding:0 1em}"
        "h2{border-top:1px solid #ccc;padding-top:1em}code{background:#f4f4f4}"
        "table{border-collapse:collapse}td,th{border:1px solid #ddd;padding:2px 6px;text-align:left}</style>"
        "</head><body>",
        f"<h1>{html.escape(spec['info']['title'])}</h1><p>{html.escape(spec['info']['description'])}</p>",
        f"<p>Machine-readable: <a href='{PREFIX}/openapi.json'>openapi.json</a> (OpenAPI {spec['openapi']}).</p>",
    ]
    for path, methods in spec["paths"].items():
        for method, op in methods.items():
            parts.append(f"<h2><code>{method.upper()} {html.escape(path)}</code></h2>")
            parts.append(f"<p><b>{html.escape(op['summary'])}</b></p>")
            if op.get("description"):
                parts.append(f"<p>{html.escape(op['description'])}</p>")
            parts.append("<p>" + ("Needs a session token." if op["security"] else "No login needed.") + "</p>")
            params = [p for p in op["parameters"]]
            if params:
                parts.append("<p>Parameters: " + ", ".join(
                    f"<code>{html.escape(p['name'])}</code> ({p['in']}{', required' if p['required'] else ''})"
                    for p in params) + "</p>")
            if "requestBody" in op:
                parts.append("<p>Body:</p>" + _fields_table(
                    op["requestBody"]["content"]["application/json"]["schema"], schemas))
            answers = []
            for code, resp in op["responses"].items():
                files = [t for t in resp.get("content", {}) if t != "application/json"]
                answers.append(f"<li><code>{code}</code> {html.escape(resp['description'])}"
                               + "".join(f" (or a file: <code>{html.escape(t)}</code>)" for t in files) + "</li>")
            parts.append("<p>Answers:</p><ul>" + "".join(answers) + "</ul>")
            ok = next((r for c, r in op["responses"].items()
                       if c.startswith("2") and "application/json" in r.get("content", {})), None)
            if ok is not None:
                parts.append(_fields_table(ok["content"]["application/json"]["schema"], schemas))
    parts.append("</body></html>")
    return "".join(parts)

