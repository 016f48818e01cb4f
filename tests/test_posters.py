"""`linli qr buildings` as a real subprocess: permanent codes through the fake WeChat API, posters on disk.

The fake runs in the test's event loop (the command is started with asyncio.create_subprocess_exec
so that it keeps answering), except for the newcomer's run, which starts its own in-process fake.
"""

from __future__ import annotations

import asyncio
import io
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from PIL import Image
from pypdf import PdfReader

from bot.testing import FakeWeChat
from bot.wechat_rules import ERR_API_QUOTA

SCRIPT = Path(sys.executable).with_name("linli")
LINLI = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "bot.cli"]
RUN_TIMEOUT = 120  # a hang guard, not a timing assertion

APPID = "wx-poster-test"
SECRET = "poster-secret"
CREATE = "/cgi-bin/qrcode/create"
SHOW = "/cgi-bin/showqrcode"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
A4_PT = (595.28, 841.89)
INSTRUCTION = "微信扫一扫 绑定住址 办理社区服务"


@dataclass
class Run:
    returncode: int
    stdout: str
    stderr: str


async def linli(*args: str, env: dict[str, str], cwd: Path) -> Run:
    proc = await asyncio.create_subprocess_exec(
        *LINLI, *args, cwd=cwd, env=env,
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), RUN_TIMEOUT)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode is not None
    return Run(proc.returncode, out.decode("utf-8"), err.decode("utf-8"))


@pytest.fixture
async def fake() -> AsyncIterator[FakeWeChat]:
    async with FakeWeChat(appid=APPID, secret=SECRET) as server:
        yield server


@pytest.fixture
def env(cli_env: dict[str, str], fake: FakeWeChat) -> dict[str, str]:
    """A real-looking account whose API is the fake; SQLite in tmp_path."""
    return {**cli_env, "LINLI_WECHAT_APPID": APPID, "LINLI_WECHAT_SECRET": SECRET,
            "LINLI_WECHAT_API_BASE_URL": fake.url}


def buildings(tmp_path: Path) -> dict[int, tuple[str, str, str, str]]:
    """id → (community, building, stored ticket, stored url), read from the command's database."""
    with sqlite3.connect(tmp_path / "x.sqlite3") as db:
        rows = db.execute("SELECT b.id, c.name, b.name, b.qr_ticket, b.qr_url FROM building b "
                          "JOIN community c ON c.id = b.community_id ORDER BY b.id").fetchall()
    return {row[0]: tuple(row[1:]) for row in rows}


def files(folder: Path, ext: str = "*") -> list[Path]:
    return sorted(folder.glob(f"*.{ext}"))


def creates(fake: FakeWeChat) -> list[dict[str, object]]:
    return [c.body for c in fake.calls if c.path == CREATE and c.status == 200 and c.errcode == 0]


async def test_one_permanent_code_per_building_reused_on_the_next_run(
    fake: FakeWeChat, env: dict[str, str], tmp_path: Path
) -> None:
    assert (await linli("demo", env=env, cwd=tmp_path)).returncode == 0

    first = await linli("qr", "buildings", env=env, cwd=tmp_path)

    assert first.returncode == 0, first.stderr
    stored = buildings(tmp_path)
    assert len(stored) == 9
    bodies = creates(fake)
    assert sorted(b["action_info"]["scene"]["scene_str"] for b in bodies) == sorted(  # type: ignore[index]
        f"building:{bid}" for bid in stored)
    assert {b["action_name"] for b in bodies} == {"QR_LIMIT_STR_SCENE"}
    assert all("expire_seconds" not in b for b in bodies)
    for bid, (_, _, ticket, url) in stored.items():
        code = fake.qrcodes[ticket]
        assert (code.scene, code.url, code.expires_at) == (f"building:{bid}", url, None)
    out = (tmp_path / "posters").resolve()
    assert f"已生成 9 张楼栋海报（PNG，A4），保存在：{out}" in first.stdout
    assert first.stdout.count("新建二维码") == 9
    pngs = files(out, "png")
    one = min(stored)
    assert [p.name for p in pngs[:2]] == [f"{one:04d}-米家社区-1号楼.png", f"{one + 1:04d}-米家社区-2号楼.png"]
    assert len(pngs) == 9
    for path in pngs:
        data = path.read_bytes()
        assert data.startswith(PNG_MAGIC)
        picture = Image.open(io.BytesIO(data))
        assert picture.size == (2480, 3508)  # A4 at 300 dpi
        assert round(picture.info["dpi"][0]) == 300

    second = await linli("qr", "buildings", "--format", "pdf", env=env, cwd=tmp_path)

    assert second.returncode == 0, second.stderr
    assert len(creates(fake)) == 9  # no new code
    assert buildings(tmp_path) == stored
    shown = [c.query["ticket"] for c in fake.calls if c.path == SHOW]
    assert shown[9:] == [ticket for _, _, ticket, _ in stored.values()]  # the stored codes, URL-encoded right
    assert second.stdout.count("沿用已有二维码") == 9
    pdfs = files(out, "pdf")
    assert len(pdfs) == 9
    for path, (community, building, _, _) in zip(pdfs, stored.values(), strict=True):
        assert path.read_bytes().startswith(b"%PDF-")
        reader = PdfReader(path)
        assert len(reader.pages) == 1
        box = reader.pages[0].mediabox
        assert (round(float(box.width), 1), round(float(box.height), 1)) == (round(A4_PT[0], 1), round(A4_PT[1], 1))
        # pypdf puts a NUL before each character of this CID-keyed font; the text itself is there
        text = reader.pages[0].extract_text().replace("\x00", "")
        assert community in text and building in text and INSTRUCTION in text
        assert reader.metadata is not None and reader.metadata.title == f"{community}{building} 楼栋二维码"


async def test_a_newcomer_without_credentials_gets_sample_posters(cli_env: dict[str, str], tmp_path: Path) -> None:
    assert (await linli("demo", env=cli_env, cwd=tmp_path)).returncode == 0

    run = await linli("qr", "buildings", "--community", "新邱社区", "--out", "print", env=cli_env, cwd=tmp_path)

    assert run.returncode == 0, run.stderr
    out = (tmp_path / "print").resolve()
    assert "内置的模拟微信接口" in run.stdout
    assert f"已生成 4 张楼栋海报（PNG，A4），保存在：{out}" in run.stdout
    pngs = files(out, "png")
    names = [p.name.split("-", 1)[1] for p in pngs]
    assert names == ["新邱社区-东1栋.png", "新邱社区-东2栋.png", "新邱社区-西1栋.png", "新邱社区-西2栋.png"]
    assert all(p.read_bytes().startswith(PNG_MAGIC) for p in pngs)
    # the fake's codes cannot be scanned: none is kept for a later run with the real account
    assert {ticket for _, _, ticket, _ in buildings(tmp_path).values()} == {""}
    assert "/subscribe building:" in run.stdout  # how to try the scan in `linli chat`


async def test_a_code_wechat_refuses_is_reported_and_made_on_the_next_run(
    fake: FakeWeChat, env: dict[str, str], tmp_path: Path
) -> None:
    assert (await linli("demo", env=env, cwd=tmp_path)).returncode == 0
    fake.fail(CREATE, ERR_API_QUOTA)

    first = await linli("qr", "buildings", "--community", "米家社区", env=env, cwd=tmp_path)

    assert first.returncode == 1
    assert "linli: 米家社区 1号楼：海报没有生成（WeChat error 45009" in first.stderr
    assert "Traceback" not in first.stderr
    assert "已生成 4 张楼栋海报" in first.stdout
    assert len(files(tmp_path / "posters")) == 4
    missing = [bid for bid, (community, _, ticket, _) in buildings(tmp_path).items()
               if community == "米家社区" and not ticket]
    assert len(missing) == 1

    second = await linli("qr", "buildings", "--community", "米家社区", env=env, cwd=tmp_path)

    assert second.returncode == 0, second.stderr
    assert [b["action_info"]["scene"]["scene_str"] for b in creates(fake)][-1] == f"building:{missing[0]}"  # type: ignore[index]
    assert len(creates(fake)) == 5
    assert second.stdout.count("新建二维码") == 1 and second.stdout.count("沿用已有二维码") == 4
    assert len(files(tmp_path / "posters")) == 5


async def test_bad_input_is_refused_and_changes_nothing(
    fake: FakeWeChat, env: dict[str, str], tmp_path: Path
) -> None:
    assert (await linli("demo", env=env, cwd=tmp_path)).returncode == 0
    (tmp_path / "posters.txt").write_text("keep me")

    unknown = await linli("qr", "buildings", "--community", "东湖社区", env=env, cwd=tmp_path)
    a_file = await linli("qr", "buildings", "--out", "posters.txt", env=env, cwd=tmp_path)
    a_format = await linli("qr", "buildings", "--format", "jpg", env=env, cwd=tmp_path)

    assert unknown.returncode == 2
    assert "linli: 没有名为“东湖社区”的社区。已有的社区：米家社区、新邱社区" in unknown.stderr
    assert a_file.returncode == 2
    assert "linli: posters.txt 已存在，但不是文件夹" in a_file.stderr
    assert a_format.returncode == 2
    assert "invalid choice: 'jpg'" in a_format.stderr
    assert all("Traceback" not in run.stderr for run in (unknown, a_file, a_format))
    assert [p.name for p in files(tmp_path)] == ["posters.txt", "x.sqlite3"]
    assert (tmp_path / "posters.txt").read_text() == "keep me"
    assert {ticket for _, _, ticket, _ in buildings(tmp_path).values()} == {""}
    assert fake.calls == []


async def test_without_buildings_it_says_how_to_get_some(fake: FakeWeChat, env: dict[str, str], tmp_path: Path) -> None:
    run = await linli("qr", "buildings", env=env, cwd=tmp_path)

    assert run.returncode == 2
    assert "linli: 还没有录入楼栋。可以先运行 linli demo 载入演示数据试一试。" in run.stderr
    assert not (tmp_path / "posters").exists()
    assert fake.calls == []
