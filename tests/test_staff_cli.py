"""`linli staff add|list|remove`: the real command as a subprocess, and its rules in process.

The subprocess tests run `linli` on a SQLite file in a temporary directory, as an operator would;
the in-process ones parse the same command line (bot.cli's parser) and run it against the test
database with a frozen clock, so that times in the listing can be read exactly.
"""

from __future__ import annotations

import getpass
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bot.cli import build_parser
from bot.clock import FrozenClock
from bot.config import Config
from bot.engine import Flow
from bot.staff_cli import run_staff
from bot.wxclient import WeChatClient
from handlers import ROUTERS
from models.demo import STAFF, load_demo
from models.places import Community, Grid
from models.residents import Resident
from models.roles import StaffRole
from tests.test_cli import linli

LABEL = "cli:tester"
NOW = "2026-11-27 09:00"  # the clock fixture, in Shanghai
TIME = re.compile(r"20\d\d-\d\d-\d\d \d\d:\d\d")

# demo people (models.demo)
WANG = "13904180011"  # 王秀兰, a resident of 米家社区
ZHANG = "13904180012"  # 张德福, a resident of 米家社区
LI_GRID = "13904180001"  # 李网格, grid worker of 米家社区/第一网格
ZHOU_STAFF = "13904180003"  # 周社工, community staff of 米家社区


# ---------------------------------------------------------------------------- in process


@dataclass
class Run:
    code: int
    out: list[str] = field(default_factory=list)
    err: list[str] = field(default_factory=list)

    @property
    def stdout(self) -> str:
        return "\n".join(self.out)

    @property
    def stderr(self) -> str:
        return "\n".join(self.err)


async def staff(config: Config, clock: FrozenClock, *argv: str, client: WeChatClient | None = None,
                flows: list[Flow] | None = None) -> Run:
    """`linli staff ARGV` on the test database, through the command's own parser."""
    args = build_parser().parse_args(["staff", *argv])
    run = Run(0)
    run.code = await run_staff(args, config=config, client=client, flows=flows or ROUTERS, clock=clock,
                               out=run.out.append, err=run.err.append, label=LABEL)
    return run


async def grants() -> list[tuple[str, str, int | None, bool]]:
    rows = await StaffRole.all().order_by("id").prefetch_related("resident")
    return [(r.resident.name, r.role, r.scope_id, r.revoked_at is None) for r in rows]


@pytest.fixture
async def demo_db(db: Config) -> Config:
    await load_demo(datetime(2026, 11, 1, tzinfo=UTC))
    return db


async def test_add_records_who_and_when_and_list_shows_it(demo_db: Config, clock: FrozenClock) -> None:
    run = await staff(demo_db, clock, "add", WANG, "网格员", "--scope", "第一网格")

    assert run.code == 0, run.stderr
    row = await StaffRole.filter(resident__mobile=WANG).get()
    assert (row.role, row.granted_by_label, row.granted_at, row.revoked_at) == (
        "grid_worker", LABEL, clock.now(), None)
    assert run.out == [
        f"已授予 王秀兰（139****0011）网格员 · 米家社区/第一网格（授权编号 {row.id}，由 {LABEL} 授予）。"]

    listing = await staff(demo_db, clock, "list", "--role", "grid_worker")
    assert listing.code == 0
    assert listing.out[0].split() == ["编号", "姓名", "手机", "角色", "范围", "授予人", "授予时间"]
    assert listing.out[-1] == "共 3 项授权。"
    assert [line.split()[1:] for line in listing.out[2:-1]][-1] == [
        "王秀兰", "139****0011", "网格员", "米家社区/第一网格", LABEL, *NOW.split()]


async def test_the_role_is_a_code_or_a_label(demo_db: Config, clock: FrozenClock) -> None:
    assert (await staff(demo_db, clock, "add", WANG, "Steward", "--scope", "米家社区")).code == 0
    assert (await staff(demo_db, clock, "add", ZHANG, "云管家", "--scope", "米家社区")).code == 0
    assert [g[:2] for g in (await grants())[-2:]] == [("王秀兰", "steward"), ("张德福", "steward")]


async def test_granting_twice_says_it_exists_and_changes_nothing(demo_db: Config, clock: FrozenClock) -> None:
    await staff(demo_db, clock, "add", WANG, "网格员", "--scope", "第一网格")
    row = await StaffRole.filter(resident__mobile=WANG).get()
    before = await grants()

    again = await staff(demo_db, clock, "add", WANG, "grid_worker", "--scope", "米家社区/第一网格")

    assert again.code == 1 and again.out == []
    assert again.err == [f"linli: 王秀兰（139****0011）已有这项授权（编号 {row.id}：网格员 · "
                         f"米家社区/第一网格，{NOW} 授予），未作更改。"]
    assert await grants() == before


@pytest.mark.parametrize(("argv", "message"), [
    (["add", "13904189999", "网格员", "--scope", "第一网格"],
     "linli: 没有手机号为 13904189999 的居民档案。请先让其绑定，或由社区录入档案。"),
    (["add", "12345", "网格员", "--scope", "第一网格"],
     "linli: 这不是有效的手机号，请输入11位手机号，例如 13812345678。"),
    (["add", WANG, "boss"], "linli: 没有这个角色：boss。可选：志愿者（volunteer）、活动组织者（organiser）"),
    (["add", WANG, "居民"], "linli: 居民是每个人的身份，不需要授予。"),
    (["add", WANG, "网格员"], "linli: 授予网格员需要指定网格：--scope 名称或编号。"),
    (["add", WANG, "admin", "--scope", "米家社区"], "linli: 系统管理员的范围是全部，不需要 --scope。"),
    (["add", WANG, "网格员", "--scope", "第九网格"], "linli: 没有找到网格“第九网格”。"),
    (["add", WANG, "网格员", "--scope", "999"], "linli: 没有编号为 999 的网格。"),
    (["add", WANG, "网格员", "--scope", "新邱社区/第一网格"], "linli: 没有找到网格“新邱社区/第一网格”。"),
    (["add", WANG, "食堂工作人员", "--scope", "不存在的食堂"], "linli: 没有找到食堂“不存在的食堂”。"),
    (["add", WANG, "志愿者", "--scope", "米家社区", "--by", "13904189999"],
     "linli: 没有手机号为 13904189999 的居民档案（--by）。"),
    (["remove", "999"], "linli: 没有编号为 999 的授权。"),
    (["remove", "abc"], "linli: 请给出授权编号（见 linli staff list），或“手机号 角色”。"),
    (["remove", WANG, "网格员"], "linli: 王秀兰（139****0011）没有有效的网格员授权。"),
    (["list", "--community", "不存在的社区"], "linli: 没有找到社区“不存在的社区”。"),
])
async def test_bad_input_is_one_clear_error_and_changes_nothing(
    demo_db: Config, clock: FrozenClock, argv: list[str], message: str
) -> None:
    before = await grants()

    run = await staff(demo_db, clock, *argv)

    assert run.code == 1 and run.out == []
    assert len(run.err) == 1 and run.err[0].startswith(message), run.err
    assert await grants() == before


async def test_a_name_used_in_two_communities_lists_the_choices(demo_db: Config, clock: FrozenClock) -> None:
    xinqiu = await Community.get(name="新邱社区")
    other = await Grid.create(name="第一网格", community=xinqiu)
    mijia = await Grid.get(name="第一网格", community__name="米家社区")

    ambiguous = await staff(demo_db, clock, "add", WANG, "网格员", "--scope", "第一网格")

    assert ambiguous.code == 1
    assert ambiguous.err == [f"linli: 有 2 个网格叫“第一网格”，请用编号或“上级/名称”指明："
                             f"{mijia.id}（米家社区/第一网格）、{other.id}（新邱社区/第一网格）"]
    assert await StaffRole.filter(resident__mobile=WANG).count() == 0

    by_parent = await staff(demo_db, clock, "add", WANG, "网格员", "--scope", "新邱社区/第一网格")
    by_id = await staff(demo_db, clock, "add", ZHANG, "网格员", "--scope", str(other.id))
    assert by_parent.code == by_id.code == 0
    assert [g[2] for g in (await grants())[-2:]] == [other.id, other.id]


async def test_remove_keeps_the_revoked_row_and_says_so_the_second_time(
    demo_db: Config, clock: FrozenClock
) -> None:
    await staff(demo_db, clock, "add", WANG, "网格员", "--scope", "第一网格")
    row = await StaffRole.filter(resident__mobile=WANG).get()

    run = await staff(demo_db, clock, "remove", str(row.id))

    assert run.code == 0, run.stderr
    assert run.out == [f"已撤销授权 {row.id}：王秀兰（139****0011）网格员 · 米家社区/第一网格。"
                       "记录保留，可用 linli staff list --all 查看。"]
    await row.refresh_from_db()
    assert (row.revoked_at, row.revoked_by_label, row.granted_by_label) == (clock.now(), LABEL, LABEL)

    again = await staff(demo_db, clock, "remove", str(row.id))
    assert again.code == 1
    assert again.err == [
        f"linli: 授权 {row.id}（王秀兰（139****0011）网格员 · 米家社区/第一网格）已于 {NOW} 撤销，未作更改。"]

    active = await staff(demo_db, clock, "list")
    assert "王秀兰" not in active.stdout
    everything = await staff(demo_db, clock, "list", "--all")
    assert everything.out[0].split()[-2:] == ["撤销人", "撤销时间"]
    assert next(line for line in everything.out if "王秀兰" in line).split()[-6:] == [
        LABEL, *NOW.split(), LABEL, *NOW.split()]
    assert everything.out[-1] == f"共 {len(STAFF) + 1} 项授权，其中 1 项已撤销。"  # the demo's and the one added


async def test_remove_by_mobile_and_role_asks_which_when_there_are_several(
    demo_db: Config, clock: FrozenClock
) -> None:
    await staff(demo_db, clock, "add", WANG, "网格员", "--scope", "第一网格")
    await staff(demo_db, clock, "add", WANG, "网格员", "--scope", "第二网格")
    first, second = await StaffRole.filter(resident__mobile=WANG).order_by("id")

    which = await staff(demo_db, clock, "remove", WANG, "网格员")
    assert which.code == 1
    assert which.err == [f"linli: 王秀兰（139****0011）有 2 项网格员授权，请用授权编号或 --scope 指明："
                         f"{first.id}（米家社区/第一网格）、{second.id}（米家社区/第二网格）"]

    done = await staff(demo_db, clock, "remove", WANG, "grid_worker", "--scope", "第二网格")
    assert done.code == 0, done.stderr
    assert [g[3] for g in (await grants())[-2:]] == [True, False]


async def test_community_staff_grants_frontline_roles_in_their_community_only(
    demo_db: Config, clock: FrozenClock
) -> None:
    ok = await staff(demo_db, clock, "add", WANG, "网格员", "--scope", "第一网格", "--by", ZHOU_STAFF)
    assert ok.code == 0, ok.stderr
    row = await StaffRole.filter(resident__mobile=WANG).get().prefetch_related("granted_by")
    assert row.granted_by is not None and (row.granted_by.name, row.granted_by_label) == ("周社工", LABEL)
    assert "由 周社工（139****0003）经 cli:tester 授予" in ok.stdout
    before = await grants()

    admin = await staff(demo_db, clock, "add", ZHANG, "admin", "--by", ZHOU_STAFF)
    elsewhere = await staff(demo_db, clock, "add", ZHANG, "网格员", "--scope", "东区网格", "--by", ZHOU_STAFF)
    above = await staff(demo_db, clock, "add", ZHANG, "社区工作人员", "--scope", "米家社区", "--by", ZHOU_STAFF)
    by_grid_worker = await staff(demo_db, clock, "add", ZHANG, "志愿者", "--scope", "米家社区", "--by", LI_GRID)

    assert admin.err == ["linli: 周社工（139****0003）没有在“全部”授予系统管理员的权限，未作更改。"]
    assert elsewhere.err == ["linli: 周社工（139****0003）没有在“新邱社区/东区网格”授予网格员的权限，未作更改。"]
    assert above.err == ["linli: 周社工（139****0003）没有在“米家社区”授予社区工作人员的权限，未作更改。"]
    assert by_grid_worker.err == ["linli: 李网格（139****0001）没有在“米家社区”授予志愿者的权限，未作更改。"]
    assert {admin.code, elsewhere.code, above.code, by_grid_worker.code} == {1}
    assert await grants() == before

    listing = await staff(demo_db, clock, "list", "--community", "米家社区")
    assert next(line for line in listing.out if "王秀兰" in line).split()[-3:] == ["周社工（cli:tester）", *NOW.split()]


async def test_community_staff_cannot_revoke_outside_their_community(demo_db: Config, clock: FrozenClock) -> None:
    await staff(demo_db, clock, "add", ZHANG, "网格员", "--scope", "东区网格")
    row = await StaffRole.filter(resident__mobile=ZHANG).get()

    refused = await staff(demo_db, clock, "remove", str(row.id), "--by", ZHOU_STAFF)

    assert refused.code == 1
    assert refused.err == [
        "linli: 周社工（139****0003）没有撤销这项授权（网格员 · 新邱社区/东区网格）的权限，未作更改。"]
    await row.refresh_from_db()
    assert row.revoked_at is None


async def test_list_filters_by_community_and_role(demo_db: Config, clock: FrozenClock) -> None:
    await staff(demo_db, clock, "add", ZHANG, "网格员", "--scope", "东区网格")

    xinqiu = await staff(demo_db, clock, "list", "--community", "新邱社区")
    volunteers = await staff(demo_db, clock, "list", "--role", "志愿者", "--community", "米家社区")
    nobody = await staff(demo_db, clock, "list", "--role", "admin")

    assert [line.split()[1] for line in xinqiu.out[2:-1]] == ["张德福"]
    assert [line.split()[1] for line in volunteers.out[2:-1]] == ["孙志愿"]
    assert nobody.out == ["没有符合条件的授权。"]


async def test_an_erased_resident_cannot_be_granted(demo_db: Config, clock: FrozenClock) -> None:
    await Resident.filter(mobile=WANG).update(erased_at=clock.now())

    run = await staff(demo_db, clock, "add", WANG, "志愿者", "--scope", "米家社区")

    assert run.code == 1
    assert run.err == ["linli: 手机号为 13904180011 的居民档案已删除个人信息，不能办理授权。"]


# ---------------------------------------------------------------------------- the real command


def test_add_list_remove_as_a_subprocess(tmp_path: Path, cli_env: dict[str, str]) -> None:
    assert linli("demo", cwd=tmp_path, env=cli_env).returncode == 0
    user = f"cli:{getpass.getuser()}"

    added = linli("staff", "add", WANG, "网格员", "--scope", "第一网格", cwd=tmp_path, env=cli_env)
    assert added.returncode == 0, added.stderr
    number = len(STAFF) + 1  # the demo's grants come first
    assert added.stdout.startswith(f"已授予 王秀兰（139****0011）网格员 · 米家社区/第一网格（授权编号 {number}，")
    assert f"由 {user} 授予" in added.stdout

    twice = linli("staff", "add", WANG, "grid_worker", "--scope", "第一网格", cwd=tmp_path, env=cli_env)
    assert twice.returncode == 1 and f"已有这项授权（编号 {number}" in twice.stderr and "Traceback" not in twice.stderr

    listed = linli("staff", "list", cwd=tmp_path, env=cli_env)
    row = [line for line in listed.stdout.splitlines() if "王秀兰" in line]
    assert len(row) == 1
    assert row[0].split()[:6] == [str(number), "王秀兰", "139****0011", "网格员", "米家社区/第一网格", user]
    assert TIME.search(row[0])

    removed = linli("staff", "remove", WANG, "网格员", cwd=tmp_path, env=cli_env)
    assert removed.returncode == 0, removed.stderr
    assert removed.stdout.startswith(f"已撤销授权 {number}：")

    active = linli("staff", "list", "--role", "网格员", cwd=tmp_path, env=cli_env)
    assert "王秀兰" not in active.stdout
    everything = linli("staff", "list", "--all", cwd=tmp_path, env=cli_env)
    kept = [line for line in everything.stdout.splitlines() if "王秀兰" in line]
    assert len(kept) == 1 and kept[0].count(user) == 2 and len(TIME.findall(kept[0])) == 2
    assert everything.stdout.splitlines()[-1] == f"共 {len(STAFF) + 1} 项授权，其中 1 项已撤销。"


def test_a_refused_grant_as_a_subprocess(tmp_path: Path, cli_env: dict[str, str]) -> None:
    assert linli("demo", cwd=tmp_path, env=cli_env).returncode == 0

    refused = linli("staff", "add", ZHANG, "admin", "--by", ZHOU_STAFF, cwd=tmp_path, env=cli_env)

    assert refused.returncode == 1
    assert refused.stderr.strip() == "linli: 周社工（139****0003）没有在“全部”授予系统管理员的权限，未作更改。"
    assert refused.stdout == ""
    listed = linli("staff", "list", "--all", cwd=tmp_path, env=cli_env)
    assert "张德福" not in listed.stdout


def test_staff_help_names_the_subcommands(tmp_path: Path, cli_env: dict[str, str]) -> None:
    result = linli("staff", "--help", cwd=tmp_path, env=cli_env)
    assert result.returncode == 0, result.stderr
    for command in ("add", "list", "remove"):
        assert command in result.stdout
