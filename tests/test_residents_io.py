"""``linli residents import`` / ``export``: the community's own spreadsheet, in and out.

Most tests call the import and export operations the command runs and read what it prints; a
few run the real command against the same database for exit codes and wiring.
"""

from __future__ import annotations

import asyncio
import csv
import io
import os
import sys
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import openpyxl
import pytest

from bot.clock import FrozenClock
from bot.config import Config
from bot.residents_io import (
    HEADERS,
    ImportRefused,
    decode_csv,
    export_residents,
    header_key,
    import_residents,
    parse_statuses,
)
from models.demo import load_demo
from models.errors import UserFacingError
from models.facts import (
    BIRTH_DATE,
    FactState,
    ResidentFact,
    declare,
    verified_birth_date,
    verified_statuses,
)
from models.places import Community
from models.privacy import AuditLog, erase, request_deletion
from models.residents import Mobility, Resident, ResidentStatus
from models.roles import Role, grant

STAFF = "13904180003"  # 周社工, community staff of 米家社区 (sees sensitive, verifies)
GRID = "13904180001"  # 李网格, grid worker: sees residents, does not verify
ADMIN = "13904180009"  # granted the admin role below: sees residents, not sensitive fields
ELDER = "13904180011"  # 王秀兰, imported by the demo
TODAY = date(2026, 11, 27)

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = Path(sys.executable).with_name("linli")
LINLI = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "bot.cli"]
RUN_TIMEOUT = 120  # a hang guard, not a timing assertion


@pytest.fixture
async def world(db: Config, clock: FrozenClock) -> AsyncIterator[Config]:
    """The demo sub-district plus an admin."""
    now = clock.now()
    await load_demo(datetime(2026, 11, 1, tzinfo=UTC))
    mijia = await Resident.get(mobile=STAFF)
    admin = await Resident.create(name="钱管理", mobile=ADMIN, community_id=mijia.community_id,
                                  building_id=mijia.building_id, unit="1", room="601", created_at=now)
    await grant(resident_id=admin.id, role=Role.ADMIN, scope_id=None, now=now)
    yield db


def xlsx(path: Path, rows: list[list[Any]], *, title: str | None = None, merge: str | None = None) -> Path:
    book = openpyxl.Workbook()
    sheet = book.active
    if title:
        sheet.append([title])
    for row in rows:
        sheet.append(row)
    if merge:
        sheet.merge_cells(merge)
    book.save(path)
    return path


def csv_file(path: Path, rows: list[list[Any]], encoding: str) -> Path:
    text = io.StringIO(newline="")
    csv.writer(text).writerows(rows)
    path.write_bytes(text.getvalue().encode(encoding))
    return path


def read_csv(path: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(path.read_bytes().decode("utf-8-sig"))))


async def do_import(clock: FrozenClock, path: Path, by: str = STAFF, dry_run: bool = False) -> str:
    report = await import_residents(path, by_mobile=by, now=clock.now(), today=TODAY, dry_run=dry_run)
    return "\n".join(report.lines())


async def refused(clock: FrozenClock, path: Path, by: str = STAFF) -> list[str]:
    with pytest.raises(ImportRefused) as caught:
        await do_import(clock, path, by)
    return caught.value.problems


async def snapshot() -> tuple[list[Any], list[Any]]:
    residents = await Resident.all().order_by("id").values()
    facts = await ResidentFact.all().order_by("id").values()
    return residents, facts


GOOD_ROWS = [
    ["序号", "姓名", "手机号码", "社区", "楼栋", "单元", "室", "出生日期", "身份状况", "行动能力", "健康备注"],
    [1, "刘大爷", 13912345601, "米家社区", "1号楼", 2, "301室", datetime(1940, 5, 6), "低保、党员",
     "需要送餐上门", "高血压，行动不便"],
    [2, "王秀兰", ELDER, "米家社区", "2号楼", "1单元", "502", "1950/3/8", "", "", ""],
]


# ---------------------------------------------------------------------------- import


async def test_xlsx_import_creates_and_updates_with_verified_facts(world: Config, clock: FrozenClock,
                                                                   tmp_path: Path) -> None:
    # a title row above the header, and 社区 merged down the rows as staff like to do
    rows = [*GOOD_ROWS[:2], [*GOOD_ROWS[2][:3], None, *GOOD_ROWS[2][4:]]]
    path = xlsx(tmp_path / "花名册.xlsx", rows, title="米家社区居民花名册", merge="D3:D4")
    out = await do_import(clock, path)
    assert "新增 1 人，更新 1 人，0 人无变化" in out
    assert "第4行 王秀兰：已更新住址、出生日期" in out  # line 4: title, header, then the rows
    assert "已忽略无法识别的列：序号" in out

    staff = await Resident.get(mobile=STAFF)
    new = await Resident.get(mobile="13912345601").prefetch_related("building", "community")
    assert (new.name, new.building.name, new.unit, new.room) == ("刘大爷", "1号楼", "2", "301")
    assert new.community.name == "米家社区"
    assert (new.status, new.source) == (ResidentStatus.VERIFIED, "import")
    assert new.mobility == Mobility.NEEDS_DELIVERY and new.health_note == "高血压，行动不便"
    assert await verified_statuses(new.id) == {"dibao", "party_member"}
    assert await verified_birth_date(new.id) == date(1940, 5, 6)
    facts = await ResidentFact.filter(resident_id=new.id)
    assert {(f.state, f.source, f.declared_by_id, f.decided_by_id) for f in facts} == {  # type: ignore[attr-defined]
        (FactState.VERIFIED, "import", staff.id, staff.id)}

    elder = await Resident.get(mobile=ELDER).prefetch_related("building")
    assert (elder.building.name, elder.unit, elder.room) == ("2号楼", "1", "502")
    assert await verified_birth_date(elder.id) == date(1950, 3, 8)


@pytest.mark.parametrize("encoding", ["utf-8-sig", "utf-8", "gbk", "gb18030"])
async def test_csv_import_in_the_encodings_excel_saves(world: Config, clock: FrozenClock, tmp_path: Path,
                                                       encoding: str) -> None:
    rows = [["姓名", "手机号", "社区", "楼栋", "单元", "房间号", "身份状况"],
            ["欧阳秀英", "139 1234 5602", "米家社区", "3号楼", "1", "101", "独居；退伍军人"]]
    path = csv_file(tmp_path / "居民.csv", rows, encoding)
    assert "新增 1 人" in await do_import(clock, path)
    resident = await Resident.get(mobile="13912345602")
    assert resident.name == "欧阳秀英"
    assert await verified_statuses(resident.id) == {"lives_alone", "veteran"}


async def test_every_bad_row_is_reported_by_line_and_nothing_is_imported(world: Config, clock: FrozenClock,
                                                                         tmp_path: Path) -> None:
    before = await snapshot()
    rows = [
        ["姓名", "手机号", "社区", "楼栋", "单元", "房间号", "出生日期", "身份状况", "行动能力", "健康备注"],
        ["刘大爷", "13912345601", "米家社区", "1号楼", "2", "301", "1940-05-06", "低保", "", ""],  # good
        ["", "13912345602", "米家社区", "1号楼", "2", "302", "", "", "", ""],
        ["张三", "1234", "米家社区", "1号楼", "2", "303", "", "", "", ""],
        ["李四", "13912345601", "米家社区", "1号楼", "2", "304", "", "", "", ""],
        ["王五", "13912345605", "火星社区", "1号楼", "2", "305", "", "", "", ""],
        ["赵六", "13912345606", "米家社区", "东1栋", "2", "306", "", "", "", ""],
        ["钱七", "13912345607", "米家社区", "9号楼", "2", "307", "", "", "", ""],
        ["孙八", "13912345608", "米家社区", "1号楼", "2", "308", "2999-01-01", "", "", ""],
        ["周九", "13912345609", "米家社区", "1号楼", "2", "309", "1950-02-30", "", "", ""],
        ["吴十", "13912345610", "米家社区", "1号楼", "2", "310", "", "富豪", "", ""],
        ["郑一", "13912345611", "米家社区", "1号楼", "2", "311", "", "", "会飞", ""],
        ["冯二", "13912345612", "米家社区", "1号楼", "2", "X" * 11, "", "", "", "很" * 201],
        ["陈三", "13912345613", "新邱社区", "东1栋", "1", "101", "", "", "", ""],
    ]
    problems = await refused(clock, xlsx(tmp_path / "bad.xlsx", rows))
    assert problems == [
        "第3行：姓名为空",
        "第4行：手机号“1234”不是有效的11位手机号",
        "第5行：手机号与第2行重复",
        "第6行：没有“火星社区”这个社区",
        "第7行：楼栋“东1栋”不在米家社区（它属于新邱社区）",
        "第8行：米家社区没有“9号楼”这个楼栋（有：1号楼、2号楼、3号楼、4号楼、5号楼）",
        "第9行：“2999-01-01”：出生日期不在合理范围内，请核对",
        "第10行：“1950-02-30”：出生日期格式不对，请按“1950-03-08”这样填写",
        "第11行：没有“富豪”这种身份状况（可填：低保、特困、孤寡、失独、退伍军人、劳模、先进工作者、残疾、独居、党员，或填“无”）",
        "第12行：行动能力“会飞”无法识别（可填：能到食堂就餐、需要送餐上门）",
        "第13行：房间号“XXXXXXXXXXX”太长（最多10个字）；健康备注太长（201个字，最多200个字）",
        "第14行：新邱社区不在您的管理范围内",
        "共 12 行有问题，未导入任何数据。请修改后重新导入。",
    ]
    assert await snapshot() == before  # not even the good row


async def test_file_problems_are_explained(world: Config, clock: FrozenClock, tmp_path: Path) -> None:
    no_mobile = csv_file(tmp_path / "a.csv", [["姓名", "社区", "楼栋"], ["刘大爷", "米家社区", "1号楼"]], "utf-8")
    assert await refused(clock, no_mobile) == ["第1行（表头）缺少必填列：手机号"]
    no_header = csv_file(tmp_path / "b.csv", [["刘大爷", "13912345601"]], "utf-8")
    assert "没有找到表头" in (await refused(clock, no_header))[0]
    empty = csv_file(tmp_path / "c.csv", [["姓名", "手机号", "社区", "楼栋"], [], ["", "", "", ""]], "utf-8")
    assert await refused(clock, empty) == ["表格里没有居民数据（表头下面是空的）。"]
    broken = tmp_path / "d.xlsx"
    broken.write_bytes(b"not a spreadsheet")
    assert "无法读取这个 xlsx 文件" in (await refused(clock, broken))[0]
    many = [["姓名", "手机号", "社区", "楼栋"], *(["刘大爷", f"139{n:08d}", "米家", "1号楼"] for n in range(10_001))]
    too_many = await refused(clock, csv_file(tmp_path / "e.csv", many, "utf-8"))
    assert too_many == ["数据超过 10000 行，请分成几个文件导入。"]


async def test_dry_run_says_what_would_change_and_writes_nothing(world: Config, clock: FrozenClock,
                                                                 tmp_path: Path) -> None:
    before = await snapshot()
    out = await do_import(clock, xlsx(tmp_path / "a.xlsx", GOOD_ROWS), dry_run=True)
    assert "将新增 1 人，更新 1 人，0 人无变化。（试运行，未写入任何数据）" in out
    assert "第3行 王秀兰：将更新住址、出生日期" in out
    assert await snapshot() == before


async def test_importing_the_same_file_again_changes_nothing(world: Config, clock: FrozenClock,
                                                             tmp_path: Path) -> None:
    path = xlsx(tmp_path / "a.xlsx", GOOD_ROWS)
    await do_import(clock, path)
    before = await snapshot()
    audits = await AuditLog.all().count()
    clock.advance(timedelta(days=1))
    assert "新增 0 人，更新 0 人，2 人无变化" in await do_import(clock, path)
    assert await snapshot() == before
    assert await AuditLog.all().count() == audits


async def test_a_filled_status_cell_is_the_complete_list(world: Config, clock: FrozenClock, tmp_path: Path) -> None:
    header = ["姓名", "手机号", "社区", "楼栋", "身份状况"]
    await do_import(clock, xlsx(tmp_path / "a.xlsx", [header, ["王秀兰", ELDER, "米家社区", "1号楼", "低保、党员"]]))
    elder = await Resident.get(mobile=ELDER)
    pending = await declare(resident_id=elder.id, code="disabled", now=clock.now(), by_id=elder.id)

    out = await do_import(clock, xlsx(tmp_path / "b.xlsx", [header, ["王秀兰", ELDER, "米家社区", "1号楼", "党员"]]))
    assert "已更新身份状况" in out
    assert await verified_statuses(elder.id) == {"party_member"}
    ended = await ResidentFact.get(resident_id=elder.id, code="dibao", state=FactState.ENDED)
    assert ended.reason == "社区导入的表格中已无此项"
    assert (await ResidentFact.get(id=pending.id)).state == FactState.PENDING  # left for staff to decide

    await do_import(clock, xlsx(tmp_path / "c.xlsx", [header, ["王秀兰", ELDER, "米家社区", "1号楼", ""]]))
    assert await verified_statuses(elder.id) == {"party_member"}  # empty cell: kept
    await do_import(clock, xlsx(tmp_path / "d.xlsx", [header, ["王秀兰", ELDER, "米家社区", "1号楼", "无"]]))
    assert await verified_statuses(elder.id) == set()


async def test_import_needs_a_verifying_role_and_a_readable_file(world: Config, clock: FrozenClock,
                                                                  tmp_path: Path) -> None:
    path = xlsx(tmp_path / "a.xlsx", GOOD_ROWS)
    for by, message in ((GRID, "没有核实居民信息的权限"), (ADMIN, "没有核实居民信息的权限"),
                        ("13800000000", "没有找到手机号为 13800000000 的工作人员"),
                        ("abc", "不是有效的手机号")):
        with pytest.raises(UserFacingError, match=message):
            await do_import(clock, path, by=by)
    with pytest.raises(UserFacingError, match="找不到文件"):
        await do_import(clock, tmp_path / "absent.xlsx")
    with pytest.raises(UserFacingError, match=r"另存为 \.xlsx 或 \.csv"):
        await do_import(clock, tmp_path / "list.xls")


async def test_residents_outside_scope_or_erased_are_refused(world: Config, clock: FrozenClock,
                                                             tmp_path: Path) -> None:
    now = clock.now()
    await Resident.create(name="陈路人", mobile="13912340002", community=await Community.get(name="新邱社区"),
                          created_at=now)
    elder = await Resident.get(mobile=ELDER)
    elder.erased_at = now  # erased while a hold (an open case, say) keeps the name and mobile
    await elder.save()
    before = await snapshot()

    problems = await refused(clock, xlsx(tmp_path / "a.xlsx", [
        ["姓名", "手机号", "社区", "楼栋"],
        ["陈路人", "13912340002", "米家社区", "1号楼"],
        ["王秀兰", ELDER, "米家社区", "1号楼"],
    ]))
    assert problems[:2] == [
        "第2行：该手机号已登记在您管理范围以外的居民名下，请联系其所在社区处理",
        "第3行：该手机号对应的居民已申请删除个人信息，不能再导入",
    ]
    assert await snapshot() == before


# ---------------------------------------------------------------------------- export


async def _sensitive_world(clock: FrozenClock) -> Resident:
    """王秀兰 with verified 低保 and 党员, a pending 独居 and a health note; 张德福 erased."""
    now = clock.now()
    staff = await Resident.get(mobile=STAFF)
    elder = await Resident.get(mobile=ELDER)
    for code in ("dibao", "party_member"):
        await declare(resident_id=elder.id, code=code, now=now, by_id=staff.id, source="staff", verified=True)
    await declare(resident_id=elder.id, code=BIRTH_DATE, value="1948-02-03", now=now, by_id=staff.id,
                  verified=True)
    await declare(resident_id=elder.id, code="lives_alone", now=now, by_id=elder.id)  # pending
    elder.health_note = "糖尿病"
    await elder.save()
    erased = await Resident.get(mobile="13904180012")
    request, _ = await request_deletion(resident_id=erased.id, by_id=erased.id, now=now)
    await erase(request_id=request.id, by_id=staff.id, now=now)
    return elder


async def test_export_masks_sensitive_fields_for_a_role_that_may_not_see_them(
        world: Config, clock: FrozenClock, tmp_path: Path) -> None:
    await _sensitive_world(clock)
    report = await export_residents(by_mobile=ADMIN, out=tmp_path / "admin.csv", fmt="csv", now=clock.now())
    rows = read_csv(tmp_path / "admin.csv")
    assert list(rows[0]) == list(HEADERS)
    assert report.records == len(rows) and report.masked_records == len(rows)
    elder = next(r for r in rows if r["姓名"] == "王秀兰")
    assert elder["手机号"] == ELDER  # admins see residents: mobiles in full
    assert elder["身份状况"] == "党员、***" and elder["健康备注"] == "***"
    assert elder["出生日期"] == "1948-02-03"
    text = (tmp_path / "admin.csv").read_text(encoding="utf-8-sig")
    assert "低保" not in text and "糖尿病" not in text and "独居" not in text
    # the mask is on every row, so it does not tell who has something to hide
    assert all(r["健康备注"] == "***" and r["身份状况"].endswith("***") for r in rows)


async def test_export_shows_sensitive_fields_to_community_staff(world: Config, clock: FrozenClock,
                                                                tmp_path: Path) -> None:
    await _sensitive_world(clock)
    report = await export_residents(by_mobile=STAFF, out=tmp_path / "staff.xlsx", fmt="xlsx", now=clock.now())
    sheet = openpyxl.load_workbook(tmp_path / "staff.xlsx").active
    values = [list(row) for row in sheet.iter_rows(values_only=True)]
    assert tuple(values[0]) == HEADERS
    by_name = {row[0]: dict(zip(HEADERS, row, strict=True)) for row in values[1:]}
    elder = by_name["王秀兰"]
    assert elder["身份状况"] == "低保、党员"  # verified only: the pending 独居 is not there
    assert elder["健康备注"] == "糖尿病" and elder["手机号"] == ELDER
    assert "张德福" not in by_name and "已注销居民" not in by_name  # erased residents are not exported
    assert "钱管理" in by_name  # every resident of 米家社区
    assert report.records == len(by_name) and report.sensitive_records == len(by_name)


async def test_export_scope_and_community(world: Config, clock: FrozenClock, tmp_path: Path) -> None:
    await export_residents(by_mobile=GRID, out=tmp_path / "grid.csv", fmt="csv", now=clock.now())
    names = {r["姓名"] for r in read_csv(tmp_path / "grid.csv")}
    # the grid worker's grid only (第一网格: 1-3号楼), not 赵网格 in 4号楼
    assert names == {"李网格", "王秀兰", "张德福", "周社工", "孙志愿", "钱管理", "钱物业", "孔调解", "吴组织"}
    with pytest.raises(UserFacingError, match="新邱社区不在您的管理范围内"):
        await export_residents(by_mobile=STAFF, out=tmp_path / "x.csv", fmt="csv", now=clock.now(),
                               community="新邱社区")
    with pytest.raises(UserFacingError, match="没有查看居民信息的权限"):
        await export_residents(by_mobile="13904180004", out=tmp_path / "y.csv", fmt="csv", now=clock.now())


async def test_export_writes_one_audit_row(world: Config, clock: FrozenClock, tmp_path: Path) -> None:
    await _sensitive_world(clock)
    await AuditLog.all().delete()
    admin = await Resident.get(mobile=ADMIN)
    report = await export_residents(by_mobile=ADMIN, out=tmp_path / "a.xlsx", fmt="xlsx", now=clock.now(),
                                    purpose="第四季度走访名单")
    rows = await AuditLog.all()
    assert len(rows) == 1
    row = rows[0]
    assert (row.actor_id, row.action, row.purpose, row.subject_id) == (  # type: ignore[attr-defined]
        admin.id, "export", "第四季度走访名单", None)
    assert row.detail["records"] == report.records and row.detail["sensitive"] is False

    await export_residents(by_mobile=STAFF, out=tmp_path / "b.xlsx", fmt="xlsx", now=clock.now())
    staff_row = await AuditLog.filter(action="export").order_by("-id").first()
    assert staff_row is not None
    assert staff_row.purpose == "residents export" and staff_row.detail["sensitive"] is True


async def test_export_then_import_round_trip(world: Config, clock: FrozenClock, tmp_path: Path) -> None:
    await _sensitive_world(clock)
    await do_import(clock, xlsx(tmp_path / "in.xlsx", GOOD_ROWS))
    before = await snapshot()
    for fmt in ("xlsx", "csv"):
        path = tmp_path / f"out.{fmt}"
        report = await export_residents(by_mobile=STAFF, out=path, fmt=fmt, now=clock.now())
        assert f"新增 0 人，更新 0 人，{report.records} 人无变化" in await do_import(clock, path)
        assert await snapshot() == before

    # an edited export goes back in as an update
    book = openpyxl.load_workbook(tmp_path / "out.xlsx")
    sheet = book.active
    line = next(r for r in range(2, sheet.max_row + 1) if sheet.cell(r, 1).value == "刘大爷")
    sheet.cell(line, HEADERS.index("房间号") + 1).value = "302"
    book.save(tmp_path / "edited.xlsx")
    assert f"第{line}行 刘大爷：已更新住址" in await do_import(clock, tmp_path / "edited.xlsx")
    assert (await Resident.get(mobile="13912345601")).room == "302"


async def test_a_masked_export_cannot_be_imported(world: Config, clock: FrozenClock, tmp_path: Path) -> None:
    await _sensitive_world(clock)
    await export_residents(by_mobile=ADMIN, out=tmp_path / "masked.xlsx", fmt="xlsx", now=clock.now())
    problems = await refused(clock, tmp_path / "masked.xlsx")
    assert "打码的导出文件不能用来导入" in problems[0]


async def test_export_never_overwrites_and_cells_stay_text(world: Config, clock: FrozenClock,
                                                           tmp_path: Path) -> None:
    elder = await Resident.get(mobile=ELDER)
    elder.health_note = "=HYPERLINK(\"http://example.invalid\")"
    await elder.save()
    xlsx_path, csv_path = tmp_path / "a.xlsx", tmp_path / "a.csv"
    await export_residents(by_mobile=STAFF, out=xlsx_path, fmt="xlsx", now=clock.now())
    await export_residents(by_mobile=STAFF, out=csv_path, fmt="csv", now=clock.now())
    with pytest.raises(UserFacingError, match="文件已存在"):
        await export_residents(by_mobile=STAFF, out=csv_path, fmt="csv", now=clock.now())
    note = HEADERS.index("健康备注") + 1
    cell = next(c for row in openpyxl.load_workbook(xlsx_path).active.iter_rows() for c in row
                if c.column == note and c.value and str(c.value).startswith("="))
    assert cell.data_type == "s"  # text, not a formula
    assert "'=HYPERLINK" in csv_path.read_text(encoding="utf-8-sig")
    assert "无变化" in await do_import(clock, csv_path)  # and the guard comes off on the way back in


# ---------------------------------------------------------------------------- pure checks


def test_headers_by_alias_and_decoration() -> None:
    assert header_key("手机号码") == "mobile"
    assert header_key(" 姓 名 * ") == "name"
    assert header_key("出生日期（年-月-日）") == "birth_date"
    assert header_key("室") == "room"
    assert header_key("序号") is None


def test_status_cells() -> None:
    assert parse_statuses("低保、党员") == {"dibao", "party_member"}
    assert parse_statuses("低保,党员；独居") == {"dibao", "party_member", "lives_alone"}
    assert parse_statuses("无") == frozenset()
    assert parse_statuses("") is None


def test_csv_encodings_are_detected() -> None:
    text = "姓名,手机号\n王秀兰,13904180011\n"
    for encoding in ("utf-8", "utf-8-sig", "gbk", "gb18030", "utf-16"):
        assert decode_csv(text.encode(encoding)) == text


# ---------------------------------------------------------------------------- the command


async def linli(config: Config, cwd: Path, *args: str) -> tuple[int, str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LINLI_")}
    env["LINLI_DATABASE_URL"] = config.database.url
    env["LINLI_REDIS_URL"] = config.redis.url
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    proc = await asyncio.create_subprocess_exec(*LINLI, *args, cwd=cwd, env=env,
                                                stdin=asyncio.subprocess.DEVNULL,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), RUN_TIMEOUT)
    return proc.returncode or 0, out.decode(), err.decode()


async def test_the_command_exit_codes(world: Config, tmp_path: Path) -> None:
    good = xlsx(tmp_path / "good.xlsx", GOOD_ROWS)
    code, out, err = await linli(world, tmp_path, "residents", "import", str(good), "--by", STAFF, "--dry-run")
    assert code == 0, err
    assert "试运行" in out

    bad = csv_file(tmp_path / "bad.csv", [["姓名", "手机号", "社区", "楼栋"], ["刘大爷", "1", "米家社区", "1号楼"]],
                   "gbk")
    code, out, err = await linli(world, tmp_path, "residents", "import", str(bad), "--by", STAFF)
    assert code == 1
    assert "第2行：手机号“1”不是有效的11位手机号" in err and "Traceback" not in err

    code, _, err = await linli(world, tmp_path, "residents", "import", str(good), "--by", GRID)
    assert code == 2 and "没有核实居民信息的权限" in err

    code, out, err = await linli(world, tmp_path, "residents", "import", str(good), "--by", STAFF)
    assert code == 0, err
    assert "新增 1 人，更新 1 人" in out
    assert await Resident.filter(mobile="13912345601").exists()

    code, out, err = await linli(world, tmp_path, "residents", "export", "--by", ADMIN, "--format", "csv",
                                 "--purpose", "核对名单")
    assert code == 0, err
    assert "敏感信息" in out and "已打码" in out
    exported = [p for p in os.listdir(tmp_path) if p.startswith("residents-") and p.endswith(".csv")]
    assert len(exported) == 1
    assert any(r["姓名"] == "刘大爷" and r["健康备注"] == "***" for r in read_csv(tmp_path / exported[0]))
    assert await AuditLog.filter(action="export", purpose="核对名单").count() == 1
