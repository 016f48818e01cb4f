"""Deployment configuration: defaults, the TOML file, LINLI_SECTION_KEY overrides, errors naming keys."""

from __future__ import annotations

import dataclasses
import re
import tomllib
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from bot.config import Config, ConfigError, build_config, config_path, load_config

# --- defaults -------------------------------------------------------------------------------


def test_defaults_need_no_configuration() -> None:
    cfg = build_config({}, {})
    assert cfg.database.url == "sqlite://linli.sqlite3"
    assert cfg.redis.url == ""
    assert cfg.embedded_store is True
    assert cfg.community.timezone == "Asia/Shanghai"
    assert cfg.community.extra_holidays == ()
    assert cfg.community.extra_workdays == ()
    assert cfg.server.port == 8080
    assert cfg.server.workers == 1
    assert cfg.server.wechat_path == "/wechat"
    assert cfg.logging.json is True


def test_load_config_without_any_file_gives_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert load_config(None, {}) == build_config({}, {})


# --- the TOML file --------------------------------------------------------------------------

CONFIG_TOML = """\
[server]
host = "0.0.0.0"
port = 9000
wechat_path = "/wx"

[wechat]
appid = "wx0123456789abcdef"
token = "file-token"
encoding_aes_key = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"

[database]
url = "postgres://linli:secret@db.example/linli"

[redis]
url = "redis://cache.example:6379/0"

[community]
timezone = "Asia/Urumqi"
extra_holidays = [2027-01-01, "2027-01-02"]
extra_workdays = [2027-01-09]

[conversation]
idle_minutes = 15
prompt_days = 3

[logging]
level = "debug"
json = true
"""


def write_config(tmp_path: Path, text: str = CONFIG_TOML, name: str = "linli.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_toml_file_values_are_used(tmp_path: Path) -> None:
    cfg = load_config(str(write_config(tmp_path)), {})
    assert cfg.server.host == "0.0.0.0"
    assert cfg.server.port == 9000
    assert cfg.server.wechat_path == "/wx"
    assert cfg.wechat.appid == "wx0123456789abcdef"
    assert cfg.wechat.token == "file-token"
    assert cfg.database.url == "postgres://linli:secret@db.example/linli"
    assert cfg.redis.url == "redis://cache.example:6379/0"
    assert cfg.embedded_store is False
    assert cfg.community.timezone == "Asia/Urumqi"
    # TOML dates and ISO strings are both accepted.
    assert cfg.community.extra_holidays == (date(2027, 1, 1), date(2027, 1, 2))
    assert cfg.community.extra_workdays == (date(2027, 1, 9),)
    assert cfg.conversation.idle_minutes == 15
    assert cfg.conversation.prompt_days == 3
    assert cfg.logging.level == "debug"
    assert cfg.logging.json is True


def test_keys_missing_from_the_file_keep_their_defaults(tmp_path: Path) -> None:
    cfg = load_config(str(write_config(tmp_path, "[server]\nport = 9001\n")), {})
    assert cfg.server.port == 9001
    assert cfg.server.host == "127.0.0.1"
    assert cfg.database.url == "sqlite://linli.sqlite3"
    assert cfg.embedded_store is True


# --- environment overrides ------------------------------------------------------------------


def test_env_port_wins_over_the_file(tmp_path: Path) -> None:
    cfg = load_config(str(write_config(tmp_path)), {"LINLI_SERVER_PORT": "9100"})
    assert cfg.server.port == 9100
    assert cfg.server.host == "0.0.0.0"  # other keys still come from the file


def test_env_redis_url_wins_over_the_file(tmp_path: Path) -> None:
    cfg = load_config(str(write_config(tmp_path)), {"LINLI_REDIS_URL": "redis://other:6380/2"})
    assert cfg.redis.url == "redis://other:6380/2"
    assert cfg.embedded_store is False


def test_empty_env_redis_url_selects_the_embedded_store(tmp_path: Path) -> None:
    cfg = load_config(str(write_config(tmp_path)), {"LINLI_REDIS_URL": ""})
    assert cfg.redis.url == ""
    assert cfg.embedded_store is True


@pytest.mark.parametrize("value", ["false", "False", "0", "no", "off"])
def test_env_logging_json_false_wins_over_the_file(tmp_path: Path, value: str) -> None:
    cfg = load_config(str(write_config(tmp_path)), {"LINLI_LOGGING_JSON": value})
    assert cfg.logging.json is False


def test_env_extra_holidays_is_a_comma_separated_list(tmp_path: Path) -> None:
    cfg = load_config(
        str(write_config(tmp_path)), {"LINLI_COMMUNITY_EXTRA_HOLIDAYS": "2027-01-01,2027-01-02"}
    )
    assert cfg.community.extra_holidays == (date(2027, 1, 1), date(2027, 1, 2))


def test_env_extra_holidays_empty_clears_the_file_list(tmp_path: Path) -> None:
    cfg = load_config(str(write_config(tmp_path)), {"LINLI_COMMUNITY_EXTRA_HOLIDAYS": ""})
    assert cfg.community.extra_holidays == ()


def test_env_without_a_file() -> None:
    cfg = build_config({}, {"LINLI_DATABASE_URL": "sqlite://data/db.sqlite3",
                            "LINLI_WECHAT_TOKEN": "env-token"})
    assert cfg.database.url == "sqlite://data/db.sqlite3"
    assert cfg.wechat.token == "env-token"


def test_unrelated_environment_variables_are_ignored() -> None:
    cfg = build_config({}, {"PATH": "bin", "LINLI_CONFIG": "nowhere.toml", "HOME": "home"})
    assert cfg == build_config({}, {})


# --- errors name the key --------------------------------------------------------------------

AES_42 = "a" * 42


@pytest.mark.parametrize(
    ("data", "env", "key"),
    [
        pytest.param({"server": {"port": 70000}}, {}, "server.port", id="port-out-of-range"),
        pytest.param({"server": {"port": 0}}, {}, "server.port", id="port-zero"),
        pytest.param({"server": {"workers": 0}}, {}, "server.workers", id="workers-0"),
        pytest.param({"server": {"wechat_path": "wechat"}}, {}, "server.wechat_path", id="path-no-slash"),
        pytest.param({"community": {"timezone": "Mars/Olympus_Mons"}}, {}, "community.timezone",
                     id="unknown-timezone"),
        pytest.param({"wechat": {"appid": "wx1", "encoding_aes_key": AES_42}}, {}, "wechat.encoding_aes_key",
                     id="aes-key-42-chars"),
        pytest.param({"wechat": {"appid": "wx1", "previous_encoding_aes_key": AES_42}}, {},
                     "wechat.previous_encoding_aes_key", id="previous-aes-key-42-chars"),
        pytest.param({"wechat": {"encoding_aes_key": "a" * 43}}, {}, "wechat.appid", id="aes-key-without-appid"),
        pytest.param({"serverr": {"port": 8080}}, {}, "serverr", id="unknown-section"),
        pytest.param({"server": {"prot": 8080}}, {}, "server.prot", id="unknown-key"),
        pytest.param({"server": "8080"}, {}, "server", id="section-not-a-table"),
        pytest.param({}, {"LINLI_SERVER_PORT": "eighty"}, "server.port", id="env-port-not-integer"),
        pytest.param({"server": {"port": "eighty"}}, {}, "server.port", id="file-port-not-integer"),
        pytest.param({"server": {"port": True}}, {}, "server.port", id="file-port-boolean"),
        pytest.param({"database": {"url": "mysql://root@localhost/linli"}}, {}, "database.url",
                     id="bad-database-url"),
        pytest.param({}, {"LINLI_DATABASE_URL": "linli.sqlite3"}, "database.url", id="env-bad-database-url"),
        pytest.param({"redis": {"url": "http://cache:6379"}}, {}, "redis.url", id="bad-redis-url"),
        pytest.param({}, {"LINLI_LOGGING_JSON": "maybe"}, "logging.json", id="env-bool-not-boolean"),
        pytest.param({"logging": {"level": "LOUD"}}, {}, "logging.level", id="bad-log-level"),
        pytest.param({}, {"LINLI_COMMUNITY_EXTRA_HOLIDAYS": "2027-13-01"}, "community.extra_holidays",
                     id="env-bad-date"),
        pytest.param({"community": {"extra_workdays": 20270109}}, {}, "community.extra_workdays",
                     id="file-dates-not-a-list"),
        pytest.param({"conversation": {"idle_minutes": 0}}, {}, "conversation.idle_minutes", id="idle-0"),
        pytest.param({"conversation": {"prompt_days": 0}}, {}, "conversation.prompt_days", id="prompt-days-0"),
        pytest.param({"wechat": {"token": 123}}, {}, "wechat.token", id="token-not-a-string"),
    ],
)
def test_invalid_configuration_names_the_key(data: dict[str, Any], env: dict[str, str], key: str) -> None:
    with pytest.raises(ConfigError) as excinfo:
        build_config(data, env)
    assert key in str(excinfo.value)


def test_timezone_naming_a_zone_directory_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=re.escape("community.timezone")):
        build_config({"community": {"timezone": "Asia"}}, {})


def test_several_workers_on_the_embedded_store_are_refused() -> None:
    with pytest.raises(ConfigError) as excinfo:
        build_config({"server": {"workers": 2}}, {})
    assert "server.workers" in str(excinfo.value)
    assert "redis.url" in str(excinfo.value)  # tells the operator what to set


def test_several_workers_from_env_on_the_embedded_store_are_refused() -> None:
    with pytest.raises(ConfigError, match=re.escape("server.workers")):
        build_config({}, {"LINLI_SERVER_WORKERS": "4"})


def test_several_workers_on_sqlite_are_refused_even_with_redis() -> None:
    with pytest.raises(ConfigError, match=re.escape("server.workers")):
        build_config({"server": {"workers": 2}}, {"LINLI_REDIS_URL": "redis://localhost:6379/0"})


def test_several_workers_with_a_shared_store_are_accepted() -> None:
    cfg = build_config(
        {"server": {"workers": 4}},
        {"LINLI_REDIS_URL": "redis://localhost:6379/0", "LINLI_DATABASE_URL": "postgres://u:p@h/db"},
    )
    assert cfg.server.workers == 4
    assert cfg.embedded_store is False


def test_valid_aes_key_with_appid_is_accepted() -> None:
    cfg = build_config({"wechat": {"appid": "wx1", "encoding_aes_key": "k" * 43}}, {})
    assert cfg.wechat.encoding_aes_key == "k" * 43


# --- which file ----------------------------------------------------------------------------


def test_explicit_config_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "config.toml").write_text("", encoding="utf-8")
    assert config_path("/etc/linli/explicit.toml", {"LINLI_CONFIG": "/etc/linli/env.toml"}) == Path(
        "/etc/linli/explicit.toml"
    )


def test_linli_config_env_comes_next(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "config.toml").write_text("", encoding="utf-8")
    assert config_path(None, {"LINLI_CONFIG": "/etc/linli/env.toml"}) == Path("/etc/linli/env.toml")


def test_config_toml_in_the_working_directory_when_present(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "config.toml").write_text("[server]\nport = 9200\n", encoding="utf-8")
    found = config_path(None, {})
    assert found is not None
    assert found.resolve() == (tmp_path / "config.toml").resolve()
    assert load_config(None, {}).server.port == 9200


def test_no_config_file_at_all(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert config_path(None, {}) is None


def test_empty_linli_config_falls_through_to_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert config_path(None, {"LINLI_CONFIG": ""}) is None


def test_load_config_reads_linli_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    path = write_config(tmp_path, "[server]\nport = 9300\n", name="elsewhere.toml")
    assert load_config(None, {"LINLI_CONFIG": str(path)}).server.port == 9300


def test_missing_explicit_config_file_is_a_config_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError) as excinfo:
        load_config(str(missing), {})
    assert str(missing) in str(excinfo.value)


def test_missing_linli_config_file_is_a_config_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    missing = tmp_path / "gone.toml"
    with pytest.raises(ConfigError, match=re.escape("gone.toml")):
        load_config(None, {"LINLI_CONFIG": str(missing)})


def test_malformed_toml_is_a_config_error(tmp_path: Path) -> None:
    path = write_config(tmp_path, "[server\nport = 1\n")
    with pytest.raises(ConfigError, match=re.escape("linli.toml")):
        load_config(str(path), {})


def test_non_utf8_config_file_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "gbk.toml"
    path.write_bytes('[wechat]\ntoken = "邻里"\n'.encode("gbk"))
    with pytest.raises(ConfigError, match=re.escape("gbk.toml")):
        load_config(str(path), {})


# --- config.example.toml --------------------------------------------------------------------


def _example(repo_root: Path) -> dict[str, Any]:
    path = repo_root / "config.example.toml"
    assert path.is_file(), "config.example.toml is missing at the repository root"
    with path.open("rb") as fh:
        return tomllib.load(fh)


def test_config_example_parses(repo_root: Path) -> None:
    cfg = build_config(_example(repo_root), {})
    assert isinstance(cfg, Config)


def test_config_example_documents_every_key(repo_root: Path) -> None:
    data = _example(repo_root)
    for section in dataclasses.fields(Config):
        assert section.name in data, f"config.example.toml lacks the [{section.name}] table"
        table = data[section.name]
        assert isinstance(table, dict), f"[{section.name}] is not a table"
        expected = {f.name for f in dataclasses.fields(section.default_factory())}  # type: ignore[misc]
        missing = expected - set(table)
        assert not missing, f"config.example.toml [{section.name}] lacks {sorted(missing)}"


@pytest.mark.parametrize(
    ("section", "key", "value"),
    [("logging", "json", "false"), ("server", "port", 8080.9), ("server", "port", "8080"),
     ("community", "extra_workdays", "2027-01-09"), ("wechat", "token", 123)],
)
def test_toml_values_must_have_the_declared_type(section: str, key: str, value: object) -> None:
    """Strings are only parsed leniently when they come from environment variables."""
    with pytest.raises(ConfigError, match=f"{section}.{key}"):
        build_config({section: {key: value}}, {})


@pytest.mark.parametrize("value", ["", "sms", "custom,custom", "template,sms"])
def test_notice_channels_must_be_custom_or_template(value: str) -> None:
    with pytest.raises(ConfigError, match=re.escape("notices.channels")):
        build_config({"notices": {"channels": value}}, {})


def test_notice_channels_are_read_in_order_from_the_environment() -> None:
    cfg = build_config({}, {"LINLI_NOTICES_CHANNELS": "template, custom"})
    assert cfg.notices.channel_list == ("template", "custom")
