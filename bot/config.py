"""Deployment configuration: a TOML file, overridden key by key by LINLI_SECTION_KEY variables.

Only deployment settings live here. Per-community rules (deadlines, prices, rates, schedules)
are database rows; they never become a second configuration language in TOML.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tomllib
import zoneinfo
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, time
from pathlib import Path
from typing import Any, get_type_hints


class ConfigError(Exception):
    """A configuration key is missing or invalid; the message names the key."""


@dataclass(frozen=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8080
    workers: int = 1
    wechat_path: str = "/wechat"
    # The URL WeChat pushes to (https on 443 or http on 80); `linli wechat check` tests it.
    public_url: str = ""
    # Run the scheduler inside each serve worker (each run is claimed once in the database);
    # false when a dedicated `linli scheduler` process runs it.
    run_scheduler: bool = True


DEFAULT_MENU: list[dict[str, Any]] = [
    {"name": "办事", "sub_button": [
        {"type": "click", "name": "逢六说事", "key": "REPORT"},
        {"type": "click", "name": "长者食堂", "key": "CANTEEN"},
        {"type": "click", "name": "红色代办", "key": "ERRAND"},
    ]},
    {"type": "click", "name": "爱心银行", "key": "LOVEBANK"},
    {"name": "我的", "sub_button": [
        {"type": "click", "name": "我的信息", "key": "PROFILE"},
        {"type": "click", "name": "绑定身份", "key": "BIND"},
        {"type": "click", "name": "全部服务", "key": "MENU"},
    ]},
]


@dataclass(frozen=True)
class WechatConfig:
    appid: str = ""
    secret: str = ""
    token: str = ""
    encoding_aes_key: str = ""
    previous_encoding_aes_key: str = ""
    api_base_url: str = "https://api.weixin.qq.com"
    oauth_base_url: str = "https://open.weixin.qq.com"  # the web login (网页授权) page staff are sent to
    # A step slower than this gets "success" at once and its reply goes out through the outbox.
    reply_budget_ms: int = 4000
    # The custom menu `linli wechat menu` publishes, in WeChat's button format.
    menu: list[dict[str, Any]] = field(default_factory=lambda: [dict(b) for b in DEFAULT_MENU])
    # Template message IDs by purpose, as chosen in the WeChat admin console.
    templates: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class OutboxConfig:
    rate_per_second: int = 20  # per sending process
    concurrency: int = 4
    max_attempts: int = 8
    poll_ms: int = 500
    # A message 'sending' for longer than this (its sender died) is sent again.
    lease_seconds: int = 60
    # When WeChat's daily quota (45009) is reached, a notice pauses until this community time.
    quota_reset: str = "00:05"


@dataclass(frozen=True)
class MiniprogramConfig:
    appid: str = ""
    secret: str = ""


@dataclass(frozen=True)
class DatabaseConfig:
    url: str = "sqlite://linli.sqlite3"


@dataclass(frozen=True)
class RedisConfig:
    url: str = ""


@dataclass(frozen=True)
class CommunityConfig:
    timezone: str = "Asia/Shanghai"
    # Dates the State Council announces after the holiday library was released.
    extra_holidays: tuple[date, ...] = ()
    extra_workdays: tuple[date, ...] = ()


@dataclass(frozen=True)
class ConversationConfig:
    idle_minutes: int = 30
    prompt_days: int = 7


@dataclass(frozen=True)
class NoticesConfig:
    # Normal notices written in these hours wait for the morning; urgent ones go out at once.
    quiet_start: str = "21:00"
    quiet_end: str = "08:00"
    # How notices reach official-account followers, in order of preference (a certified service
    # account, 认证服务号, has both): "custom" = a customer-service message while the resident is
    # inside WeChat's allowance window; "template" = the 'notice' template message (wechat.templates).
    channels: str = "custom,template"

    @property
    def quiet_hours(self) -> tuple[time, time]:
        """(start, end) of the quiet hours; validated at load time."""
        return parse_hhmm(self.quiet_start), parse_hhmm(self.quiet_end)

    @property
    def channel_list(self) -> tuple[str, ...]:
        return tuple(part.strip() for part in self.channels.split(",") if part.strip())


@dataclass(frozen=True)
class CasesConfig:
    # 逢六说事. Chains, deadlines and default classes are per-community settings staff edit.
    nearby_meters: int = 300  # open cases this close (same category) are offered as "me too"
    nearby_days: int = 14  # ... when reported in the last this many days
    feedback_days: int = 7  # a resolved case nobody rated closes as unrated after this
    reminder_at: str = "18:00"  # the day before a session: residents get its agenda
    roundup_at: str = "17:00"  # Fridays (圆梦): residents get the cases resolved that week


@dataclass(frozen=True)
class ErrandsConfig:
    """红色代办: where document photos are kept and how long, and the signed links to them."""

    documents_dir: str = "documents"  # the document store (relative: to the working directory)
    documents_days: int = 30  # photos of an errand closed (or cancelled) this long ago are deleted
    link_minutes: int = 10  # a signed link to a document page works this long
    link_secret: str = ""  # signs the links; empty = a key the service makes once and keeps in the database
    feedback_days: int = 7  # a delivered errand nobody confirmed closes unrated after this


@dataclass(frozen=True)
class ApiConfig:
    session_hours: int = 72  # a mini-program session token lives this long
    login_per_minute: int = 20  # logins per client IP per minute
    writes_per_minute: int = 30  # writes per session per minute
    writes_per_minute_ip: int = 300  # writes per client IP per minute (a shared NAT: many people)
    trust_forwarded_for: bool = False  # take the client IP from X-Forwarded-For (behind a proxy)


@dataclass(frozen=True)
class PrivacyConfig:
    """How long personal data is kept (models.privacy.Retention), and when the daily sweep runs."""

    audit_days: int = 1095  # access audit rows (PIPL keeps processing records at least 3 years)
    messages_days: int = 180  # sent or failed outbox messages (network logs: at least 6 months)
    prompts_days: int = 90  # closed or expired pending prompts
    link_requests_days: int = 180  # decided or withdrawn binding requests
    unbound_accounts_days: int = 365  # WeChat accounts never bound and not seen for this long
    erased_residents_days: int = 365  # a name a hold kept past erasure: removed after this, once no hold remains
    case_photos_days: int = 365  # photos of a 逢六说事 case closed this long ago (its text and figures stay)
    sweep_at: str = "03:30"  # daily, HH:MM in community.timezone

    @property
    def sweep_time(self) -> time:
        return parse_hhmm(self.sweep_at)


def parse_hhmm(text: str) -> time:
    """'03:30' as a time; ValueError otherwise."""
    hours, sep, minutes = text.strip().partition(":")
    if not sep or not (hours.isdigit() and minutes.isdigit()) or len(minutes) != 2:
        raise ValueError(f"expected HH:MM, got {text!r}")
    return time(int(hours), int(minutes))


@dataclass(frozen=True)
class LoggingConfig:
    level: str = "INFO"
    json: bool = True


@dataclass(frozen=True)
class Config:
    server: ServerConfig = field(default_factory=ServerConfig)
    wechat: WechatConfig = field(default_factory=WechatConfig)
    miniprogram: MiniprogramConfig = field(default_factory=MiniprogramConfig)
    database: DatabaseConfig = field(default_factory=DatabaseConfig)
    redis: RedisConfig = field(default_factory=RedisConfig)
    outbox: OutboxConfig = field(default_factory=OutboxConfig)
    community: CommunityConfig = field(default_factory=CommunityConfig)
    conversation: ConversationConfig = field(default_factory=ConversationConfig)
    api: ApiConfig = field(default_factory=ApiConfig)
    notices: NoticesConfig = field(default_factory=NoticesConfig)
    cases: CasesConfig = field(default_factory=CasesConfig)
    errands: ErrandsConfig = field(default_factory=ErrandsConfig)
    privacy: PrivacyConfig = field(default_factory=PrivacyConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)

    @property
    def embedded_store(self) -> bool:
        return not self.redis.url

    def replace(self, **sections: Mapping[str, Any]) -> Config:
        """A copy with some keys changed, e.g. ``cfg.replace(redis={"url": ""})`` (for tests)."""
        changed = {}
        for name, values in sections.items():
            changed[name] = dataclasses.replace(getattr(self, name), **values)
        return dataclasses.replace(self, **changed)


def _convert(key: str, hint: Any, value: Any, *, from_env: bool) -> Any:
    """Turn a TOML or environment value into the declared type, or raise ConfigError."""
    try:
        if hint is bool:
            if isinstance(value, bool):
                return value
            if from_env and value.strip().lower() in ("1", "true", "yes", "on"):
                return True
            if from_env and value.strip().lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError("expected true or false")
        if hint is int:
            if from_env:
                return int(value)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError("expected an integer")
            return value
        if hint is str:
            if not isinstance(value, str):
                raise ValueError("expected a string")
            return value
        if hint == list[dict[str, Any]] or hint == dict[str, str]:
            container = list if hint == list[dict[str, Any]] else dict
            parsed = json.loads(value) if from_env else value
            if not isinstance(parsed, container):
                raise ValueError(f"expected a {'list of tables' if container is list else 'table'}")
            if isinstance(parsed, dict) and not all(isinstance(v, str) for v in parsed.values()):
                raise ValueError("expected text values")
            if isinstance(parsed, list) and not all(isinstance(item, dict) for item in parsed):
                raise ValueError("expected a list of tables")
            return parsed
        if hint == tuple[date, ...]:
            items = value.split(",") if from_env else value
            if not isinstance(items, list | tuple):
                raise ValueError("expected a list of dates")
            out = []
            for item in items:
                if isinstance(item, date):
                    out.append(item)
                elif str(item).strip():
                    out.append(date.fromisoformat(str(item).strip()))
            return tuple(out)
    except ValueError as exc:  # json.JSONDecodeError is a ValueError too
        raise ConfigError(f"config key {key}: invalid value {value!r} ({exc})") from None
    raise ConfigError(f"config key {key}: unsupported type")  # pragma: no cover


def validate_config(cfg: Config) -> None:
    if not 1 <= cfg.server.port <= 65535:
        raise ConfigError(f"config key server.port: {cfg.server.port} is not a TCP port")
    if cfg.server.workers < 1:
        raise ConfigError("config key server.workers: must be at least 1")
    if not cfg.server.wechat_path.startswith("/"):
        raise ConfigError("config key server.wechat_path: must start with /")
    try:
        zoneinfo.ZoneInfo(cfg.community.timezone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
        raise ConfigError(
            f"config key community.timezone: unknown time zone {cfg.community.timezone!r}"
        ) from None
    for name in ("encoding_aes_key", "previous_encoding_aes_key"):
        key = getattr(cfg.wechat, name)
        if key and len(key) != 43:
            raise ConfigError(f"config key wechat.{name}: an EncodingAESKey has 43 characters")
    if cfg.wechat.encoding_aes_key and not cfg.wechat.appid:
        raise ConfigError("config key wechat.appid: required when wechat.encoding_aes_key is set")
    url = cfg.database.url
    if not url.startswith(("sqlite://", "postgres://", "postgresql://", "psql://")):
        raise ConfigError(
            f"config key database.url: {url!r} is neither sqlite:// nor postgres://"
        )
    if cfg.redis.url and not cfg.redis.url.startswith(("redis://", "rediss://", "unix://")):
        raise ConfigError(f"config key redis.url: {cfg.redis.url!r} is not a redis:// URL")
    if cfg.embedded_store and cfg.server.workers > 1:
        raise ConfigError(
            "config key server.workers: several workers need a shared store; "
            "set redis.url (and a PostgreSQL database.url) or use workers = 1"
        )
    if cfg.server.workers > 1 and url.startswith("sqlite://"):
        raise ConfigError(
            "config key server.workers: several workers need PostgreSQL; "
            "set a postgres:// database.url or use workers = 1"
        )
    if not 100 <= cfg.wechat.reply_budget_ms <= 4500:
        raise ConfigError("config key wechat.reply_budget_ms: between 100 and 4500 (WeChat waits 5 s)")
    if cfg.server.public_url and not cfg.server.public_url.startswith(("http://", "https://")):
        raise ConfigError("config key server.public_url: must start with https:// (or http://)")
    for name in ("rate_per_second", "concurrency", "max_attempts", "poll_ms", "lease_seconds"):
        if getattr(cfg.outbox, name) < 1:
            raise ConfigError(f"config key outbox.{name}: must be at least 1")
    if cfg.conversation.idle_minutes < 1:
        raise ConfigError("config key conversation.idle_minutes: must be at least 1")
    if cfg.conversation.prompt_days < 1:
        raise ConfigError("config key conversation.prompt_days: must be at least 1")
    for name in ("nearby_meters", "nearby_days", "feedback_days"):
        if getattr(cfg.cases, name) < 1:
            raise ConfigError(f"config key cases.{name}: must be at least 1")
    for section, name in (("notices", "quiet_start"), ("notices", "quiet_end"), ("outbox", "quota_reset"),
                          ("cases", "reminder_at"), ("cases", "roundup_at")):
        value = getattr(getattr(cfg, section), name)
        try:
            parse_hhmm(value)
        except ValueError:
            raise ConfigError(f"config key {section}.{name}: {value!r} is not a time like 21:00") from None
    channels = cfg.notices.channel_list
    if not channels or len(set(channels)) != len(channels) or not set(channels) <= {"custom", "template"}:
        raise ConfigError(f"config key notices.channels: {cfg.notices.channels!r} is not one or both of "
                          "custom, template (comma-separated, in order of preference)")
    for name in ("documents_days", "link_minutes", "feedback_days"):
        if getattr(cfg.errands, name) < 1:
            raise ConfigError(f"config key errands.{name}: must be at least 1")
    if not cfg.errands.documents_dir.strip():
        raise ConfigError("config key errands.documents_dir: a directory is needed for document photos")
    if cfg.errands.link_secret and len(cfg.errands.link_secret) < 16:
        raise ConfigError("config key errands.link_secret: at least 16 characters (or empty for a generated key)")
    for name in ("session_hours", "login_per_minute", "writes_per_minute", "writes_per_minute_ip"):
        if getattr(cfg.api, name) < 1:
            raise ConfigError(f"config key api.{name}: must be at least 1")
    for name in ("audit_days", "messages_days", "prompts_days", "link_requests_days",
                 "unbound_accounts_days", "erased_residents_days", "case_photos_days"):
        if getattr(cfg.privacy, name) < 1:
            raise ConfigError(f"config key privacy.{name}: must be at least 1")
    try:
        cfg.privacy.sweep_time  # noqa: B018 - parsed here so a bad value stops the start
    except ValueError:
        raise ConfigError(
            f"config key privacy.sweep_at: {cfg.privacy.sweep_at!r} is not a time of day like \"03:30\""
        ) from None
    if cfg.logging.level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ConfigError("config key logging.level: one of DEBUG, INFO, WARNING, ERROR")


def build_config(data: Mapping[str, Any], env: Mapping[str, str]) -> Config:
    """Build and validate a Config from parsed TOML and an environment mapping."""
    unknown = set(data) - {f.name for f in dataclasses.fields(Config)}
    if unknown:
        raise ConfigError(f"config section {sorted(unknown)[0]}: unknown section")
    sections: dict[str, Any] = {}
    for section in dataclasses.fields(Config):
        cls = section.default_factory()  # type: ignore[operator]
        raw = data.get(section.name, {})
        if not isinstance(raw, Mapping):
            raise ConfigError(f"config section {section.name}: expected a table")
        hints = get_type_hints(type(cls))
        names = {f.name for f in dataclasses.fields(cls)}
        for key in raw:
            if key not in names:
                raise ConfigError(f"config key {section.name}.{key}: unknown key")
        values = {}
        for name in names:
            dotted = f"{section.name}.{name}"
            env_name = f"LINLI_{section.name}_{name}".upper()
            if env_name in env:
                values[name] = _convert(dotted, hints[name], env[env_name], from_env=True)
            elif name in raw:
                values[name] = _convert(dotted, hints[name], raw[name], from_env=False)
        sections[section.name] = type(cls)(**values)
    cfg = Config(**sections)
    validate_config(cfg)
    return cfg


def config_path(explicit: str | None, env: Mapping[str, str]) -> Path | None:
    """--config wins, then LINLI_CONFIG, then ./config.toml when present, else none."""
    if explicit:
        return Path(explicit)
    if env.get("LINLI_CONFIG"):
        return Path(env["LINLI_CONFIG"])
    default = Path("config.toml")
    return default if default.exists() else None


def load_config(explicit: str | None = None, env: Mapping[str, str] | None = None) -> Config:
    env = os.environ if env is None else env
    path = config_path(explicit, env)
    data: dict[str, Any] = {}
    if path is not None:
        try:
            with path.open("rb") as fh:
                data = tomllib.load(fh)
        except FileNotFoundError:
            raise ConfigError(f"config file {path} does not exist") from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"config file {path}: {exc}") from None
        except OSError as exc:
            raise ConfigError(f"config file {path}: cannot be read ({exc.strerror})") from None
    return build_config(data, env)
