"""The real `linli` command, run as a subprocess on a SQLite file in a temporary directory."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
SCRIPT = Path(sys.executable).with_name("linli")
LINLI = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "bot.cli"]
RUN_TIMEOUT = 120  # a hang guard, not a timing assertion

MOBILE = "13812345678"


def linli(
    *args: str, cwd: Path, env: dict[str, str], stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*LINLI, *args], cwd=cwd, env=env, input=stdin if stdin is not None else "",
        capture_output=True, text=True, encoding="utf-8", timeout=RUN_TIMEOUT, check=False,
    )


def test_help_lists_the_commands(tmp_path: Path, cli_env: dict[str, str]) -> None:
    result = linli("--help", cwd=tmp_path, env=cli_env)
    assert result.returncode == 0, result.stderr
    for command in ("serve", "chat", "db", "demo"):
        assert command in result.stdout
    assert "LINLI_" in result.stdout  # tells the user how to override keys


def test_db_upgrade_applies_then_is_up_to_date(tmp_path: Path, newcomer_env: dict[str, str]) -> None:
    first = linli("db", "upgrade", cwd=tmp_path, env=newcomer_env)
    assert first.returncode == 0, first.stderr
    assert first.stdout.startswith("applied: ")
    assert (tmp_path / "x.sqlite3").exists()

    second = linli("db", "upgrade", cwd=tmp_path, env=newcomer_env)
    assert second.returncode == 0, second.stderr
    assert "up to date" in second.stdout
    assert "applied" not in second.stdout


def test_demo_then_a_newcomer_binds_in_chat(tmp_path: Path, cli_env: dict[str, str]) -> None:
    first = linli("demo", cwd=tmp_path, env=cli_env)
    assert first.returncode == 0, first.stderr
    assert "已载入演示数据" in first.stdout

    second = linli("demo", cwd=tmp_path, env=cli_env)
    assert second.returncode == 0, second.stderr
    assert "已经存在" in second.stdout

    lines = [
        "菜单",
        "1",  # 绑定身份（首次使用请先绑定）
        "是",  # consent
        "陈小明",
        MOBILE,
        "1",  # 米家社区
        "1",  # 1号楼
        "2",  # unit
        "301",  # room
        "是",  # confirm
        "菜单",
        "我的信息",
    ]
    chat = linli("chat", "--as", "newcomer", cwd=tmp_path, env=cli_env, stdin="\n".join(lines) + "\n")
    assert chat.returncode == 0, chat.stderr
    out = chat.stdout

    assert "绑定身份" in out
    assert "您同意吗" in out
    assert "请输入您的手机号" in out
    assert "1. 米家社区" in out
    assert "1. 1号楼" in out
    assert "住址：米家社区1号楼2单元301室" in out
    assert "绑定成功" in out
    after_binding = out.split("绑定成功", 1)[1]
    assert "请选择服务" in after_binding
    assert "绑定身份" not in after_binding  # a bound resident is not offered binding again
    assert "姓名：陈小明" in after_binding
    assert "手机：138****5678" in after_binding
    # The full mobile is neither echoed back nor logged.
    assert MOBILE not in out
    assert MOBILE not in chat.stderr


def test_chat_remembers_the_binding_across_runs(tmp_path: Path, cli_env: dict[str, str]) -> None:
    assert linli("demo", cwd=tmp_path, env=cli_env).returncode == 0
    bind = "菜单\n1\n是\n陈小明\n13812345678\n1\n1\n2\n301\n是\n"
    assert "绑定成功" in linli("chat", "--as", "newcomer", cwd=tmp_path, env=cli_env, stdin=bind).stdout

    again = linli("chat", "--as", "newcomer", cwd=tmp_path, env=cli_env, stdin="我的信息\n")
    assert again.returncode == 0, again.stderr
    assert "手机：138****5678" in again.stdout


def test_config_error_exits_2_naming_the_key(tmp_path: Path, cli_env: dict[str, str]) -> None:
    env = {**cli_env, "LINLI_SERVER_PORT": "notaport"}
    result = linli("serve", cwd=tmp_path, env=env)
    assert result.returncode == 2
    assert "server.port" in result.stderr
    assert "Traceback" not in result.stderr


def test_missing_config_file_exits_2(tmp_path: Path, cli_env: dict[str, str]) -> None:
    result = linli("db", "upgrade", "--config", str(tmp_path / "absent.toml"), cwd=tmp_path, env=cli_env)
    assert result.returncode == 2
    assert "absent.toml" in result.stderr
    assert "Traceback" not in result.stderr


def test_serve_with_several_workers_on_the_embedded_store_exits_2(tmp_path: Path, cli_env: dict[str, str]) -> None:
    result = linli("serve", "--workers", "2", cwd=tmp_path, env=cli_env)
    assert result.returncode == 2
    assert "server.workers" in result.stderr
    assert "Traceback" not in result.stderr


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_serve_answers_healthz(tmp_path: Path, newcomer_env: dict[str, str]) -> None:
    port = _free_port()
    env = {**newcomer_env, "LINLI_WECHAT_TOKEN": "cli-test-token", "LINLI_SERVER_HOST": "127.0.0.1"}
    stdout_path, stderr_path = tmp_path / "serve.out", tmp_path / "serve.err"
    url = f"http://127.0.0.1:{port}/healthz"
    with stdout_path.open("wb") as out, stderr_path.open("wb") as err:
        proc = subprocess.Popen([*LINLI, "serve", "--port", str(port)], cwd=tmp_path, env=env,
                                stdin=subprocess.DEVNULL, stdout=out, stderr=err)
        try:
            status, body, last_error = None, None, ""
            # a first run migrates a new SQLite file first: seconds of CPU, more on a loaded machine
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline:
                if proc.poll() is not None:
                    break
                try:
                    with urllib.request.urlopen(url, timeout=2) as response:
                        status, body = response.status, json.loads(response.read())
                    break
                except urllib.error.HTTPError as exc:  # e.g. 503 while something is not ready
                    last_error = f"{exc.code} {exc.read()!r}"
                except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:
                    last_error = repr(exc)
                time.sleep(0.2)
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    stderr = stderr_path.read_text(encoding="utf-8", errors="replace")
    assert status == 200, f"no healthy /healthz (last: {last_error}); exit={proc.returncode}; stderr:\n{stderr}"
    assert body == {"database": "ok", "store": "ok"}
    assert f"linli serving on http://127.0.0.1:{port}" in stdout_path.read_text(encoding="utf-8")
    assert (tmp_path / "x.sqlite3").exists()
