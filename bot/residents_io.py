"""Residents in and out of the community's own spreadsheet: ``linli residents import`` / ``export``.

Import: staff hand in the xlsx or csv they already keep. Columns are found by their Chinese
header, in any order. Every row is checked before anything is written, and one bad row refuses
the whole file, each bad row named by its line. Residents are matched by mobile; what the sheet
says about them counts as verified at once (source "import", by the staff member named).
The address (社区, 楼栋, 单元, 房间号) is taken as written (a 单元 or 房间号 column the sheet lacks
keeps what is stored); for the other columns an empty cell keeps what is stored, and a filled
身份状况 cell is the resident's complete list of verified statuses (无 = none). A record still
waiting for verification stays waiting: an export lists those too.

Export: the residents in the exporter's scope, in the same columns, so an export can go back in.
Sensitive statuses and the health note are masked unless the exporter's role sees them there;
one audit row records each export.
"""

from __future__ import annotations

import asyncio
import codecs
import csv
import io
import os
import re
import sys
import warnings
import zipfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import openpyxl
from openpyxl.utils import get_column_letter
from openpyxl.utils.exceptions import InvalidFileException
from tortoise.exceptions import IntegrityError
from tortoise.transactions import in_transaction

from bot.config import Config
from bot.db import close_db, ensure_schema, init_db
from models.errors import Forbidden, NotFound, UserFacingError
from models.facts import (
    BIRTH_DATE,
    SENSITIVE_STATUSES,
    STATUS_CODES,
    STATUSES,
    FactState,
    ResidentFact,
    declare,
    end_status,
    parse_birth_date,
)
from models.places import Building, Community
from models.privacy import audit
from models.residents import (
    MOBILITY_LABELS,
    ROOM_MAX,
    UNIT_MAX,
    Mobility,
    Resident,
    ResidentStatus,
    clean_name,
    normalize_mobile,
)
from models.roles import Place, Scope, StaffRole, active_roles

MAX_BYTES = 10 * 1024 * 1024
MAX_UNPACKED_BYTES = 200 * 1024 * 1024  # an xlsx is a zip: refuse one that would unpack to more
MAX_ROWS = 10_000
MAX_COLUMNS = 60
HEADER_SEARCH_ROWS = 10  # a title row or two above the header is common
HEALTH_NOTE_MAX = 200
MASK = "***"
NONE_LABEL = "无"
FORMULA_START = ("=", "+", "-", "@")
ENDED_REASON = "社区导入的表格中已无此项"
DEFAULT_PURPOSE = "residents export"
ACTOR_LABEL = "cli"


@dataclass(frozen=True)
class Column:
    key: str
    header: str
    aliases: tuple[str, ...] = ()
    required: bool = False


COLUMNS: tuple[Column, ...] = (
    Column("name", "姓名", ("居民姓名", "名字"), required=True),
    Column("mobile", "手机号", ("手机", "手机号码", "联系电话", "电话", "联系方式"), required=True),
    Column("community", "社区", ("所属社区", "社区名称"), required=True),
    Column("building", "楼栋", ("楼号", "楼栋号", "楼"), required=True),
    Column("unit", "单元", ("单元号",)),
    Column("room", "房间号", ("室", "房间", "房号", "门牌号", "户号")),
    Column("birth_date", "出生日期", ("出生年月日", "生日")),
    Column("statuses", "身份状况", ("身份", "人员类别", "特殊身份", "身份类别")),
    Column("mobility", "行动能力", ("就餐方式",)),
    Column("health_note", "健康备注", ("健康状况",)),
)
HEADERS = tuple(c.header for c in COLUMNS)
_BY_HEADER = {name: c for c in COLUMNS for name in (c.header, *c.aliases)}
_BY_KEY = {c.key: c for c in COLUMNS}

MOBILITY_CODES: dict[str, str] = {
    MOBILITY_LABELS[Mobility.WALKS_IN]: Mobility.WALKS_IN,
    MOBILITY_LABELS[Mobility.NEEDS_DELIVERY]: Mobility.NEEDS_DELIVERY,
    "到食堂就餐": Mobility.WALKS_IN,
    "堂食": Mobility.WALKS_IN,
    "送餐上门": Mobility.NEEDS_DELIVERY,
    "送餐": Mobility.NEEDS_DELIVERY,
}


class ImportRefused(Exception):
    """The file, or some of its rows, cannot be imported; nothing was written."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


# ---------------------------------------------------------------------------- cells (pure)


def _show(text: str, limit: int = 30) -> str:
    return text if len(text) <= limit else text[:limit] + "…"


def cell_text(value: object) -> str:
    """What a cell says, as text: numbers without a trailing .0, dates as 1950-03-08."""
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.date().isoformat() if value.time() == time() else value.isoformat(sep=" ")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    text = str(value).strip()
    # an export guards a text that would start a spreadsheet formula with a quote: take it off
    if len(text) > 1 and text[0] == "'" and text.startswith(FORMULA_START, 1):
        text = text[1:]
    return text


def header_key(text: str) -> str | None:
    """The column a header names (姓名, 手机号码 *, 出生日期（年-月-日）...), or None."""
    cleaned = re.sub(r"[（(][^）)]*[）)]", "", "".join(text.split())).strip("*＊:：")
    column = _BY_HEADER.get(cleaned)
    return column.key if column else None


def parse_name(text: str) -> str:
    if not text:
        raise UserFacingError("姓名为空")
    return clean_name(text)


def parse_mobile(text: str) -> str:
    if not text:
        raise UserFacingError("手机号为空")
    try:
        return normalize_mobile(text)
    except UserFacingError:
        raise UserFacingError(f"手机号“{_show(text)}”不是有效的11位手机号") from None


def _strip_suffix(text: str, *suffixes: str) -> str:
    for suffix in suffixes:
        if text.endswith(suffix) and len(text) > len(suffix):
            return text[: -len(suffix)].strip()
    return text


def parse_unit(text: str) -> str:
    unit = _strip_suffix(text, "单元")
    if len(unit) > UNIT_MAX:
        raise UserFacingError(f"单元“{_show(unit)}”太长（最多{UNIT_MAX}个字）")
    return unit


def parse_room(text: str) -> str:
    room = _strip_suffix(text, "室", "号")
    if len(room) > ROOM_MAX:
        raise UserFacingError(f"房间号“{_show(room)}”太长（最多{ROOM_MAX}个字）")
    return room


def parse_birth_date_cell(value: object, today: date) -> date | None:
    """A plausible date of birth from a date cell or text; None for an empty cell."""
    text = cell_text(value)
    if not text:
        return None
    try:
        return parse_birth_date(text, today)
    except UserFacingError as exc:
        raise UserFacingError(f"“{_show(text)}”：{exc.message.rstrip('。')}") from None


def parse_statuses(text: str) -> frozenset[str] | None:
    """Status codes from 低保、党员 (also separated by , ； / or spaces); 无 = none; None when empty."""
    if not text:
        return None
    if MASK in text:
        raise UserFacingError(f"身份状况含有打码内容（{MASK}），打码的导出文件不能用来导入")
    labels = [part for part in re.split(r"[、,，;；/／\s]+", text) if part]
    if labels == [NONE_LABEL]:
        return frozenset()
    unknown = [label for label in labels if label not in STATUS_CODES]
    if unknown:
        raise UserFacingError(
            f"没有“{'、'.join(_show(u, 10) for u in unknown)}”这种身份状况（可填：{'、'.join(STATUSES.values())}，"
            f"或填“{NONE_LABEL}”）"
        )
    return frozenset(STATUS_CODES[label] for label in labels)


def parse_mobility(text: str) -> str | None:
    if not text or text == MOBILITY_LABELS[Mobility.UNKNOWN]:
        return None
    code = MOBILITY_CODES.get(text)
    if code is None:
        raise UserFacingError(
            f"行动能力“{_show(text)}”无法识别（可填：{MOBILITY_LABELS[Mobility.WALKS_IN]}、"
            f"{MOBILITY_LABELS[Mobility.NEEDS_DELIVERY]}）"
        )
    return code


def parse_health_note(text: str) -> str | None:
    if not text:
        return None
    if text == MASK:
        raise UserFacingError(f"健康备注是打码内容（{MASK}），打码的导出文件不能用来导入")
    if len(text) > HEALTH_NOTE_MAX:
        raise UserFacingError(f"健康备注太长（{len(text)}个字，最多{HEALTH_NOTE_MAX}个字）")
    return text


@dataclass(frozen=True)
class RowInput:
    """One spreadsheet row, checked on its own; places are names still to be found."""

    line: int
    name: str
    mobile: str
    community: str
    building: str
    unit: str | None  # None: no such column, keep what is stored
    room: str | None
    birth_date: date | None  # None: keep what is stored
    statuses: frozenset[str] | None  # None: keep what is stored
    mobility: str | None
    health_note: str | None


def parse_row(line: int, cells: Mapping[str, object], today: date) -> tuple[RowInput | None, list[str]]:
    """Check one row (``cells`` holds the columns the sheet has); the row, or None and every problem."""
    problems: list[str] = []
    values: dict[str, Any] = {}

    def take(key: str, parse: Any, *args: Any) -> None:
        try:
            values[key] = parse(*args)
        except UserFacingError as exc:
            problems.append(exc.message.rstrip("。"))

    text = {key: cell_text(cells.get(key)) for key in _BY_KEY}
    take("name", parse_name, text["name"])
    take("mobile", parse_mobile, text["mobile"])
    if not text["community"]:
        problems.append("社区为空")
    if not text["building"]:
        problems.append("楼栋为空")
    values["unit"] = values["room"] = None
    if "unit" in cells:
        take("unit", parse_unit, text["unit"])
    if "room" in cells:
        take("room", parse_room, text["room"])
    take("birth_date", parse_birth_date_cell, cells.get("birth_date"), today)
    take("statuses", parse_statuses, text["statuses"])
    take("mobility", parse_mobility, text["mobility"])
    take("health_note", parse_health_note, text["health_note"])
    if problems:
        return None, problems
    return RowInput(line=line, community=text["community"], building=text["building"], **values), []


def line_problem(line: int, problems: Iterable[str]) -> str:
    return f"第{line}行：" + "；".join(problems)


# ---------------------------------------------------------------------------- reading files


@dataclass
class Sheet:
    """The data rows of a spreadsheet, keyed by column, with their line numbers."""

    rows: list[tuple[int, dict[str, object]]]
    ignored_columns: list[str]


def decode_csv(data: bytes) -> str:
    """CSV text from UTF-8 (with or without BOM), UTF-16 with BOM, or GB18030/GBK (Excel in China)."""
    for bom, encoding in ((codecs.BOM_UTF8, "utf-8-sig"), (codecs.BOM_UTF16_LE, "utf-16"),
                          (codecs.BOM_UTF16_BE, "utf-16")):
        if data.startswith(bom):
            try:
                return data.decode(encoding)
            except UnicodeDecodeError:
                break
    else:
        for encoding in ("utf-8", "gb18030"):
            try:
                return data.decode(encoding)
            except UnicodeDecodeError:
                continue
    raise ImportRefused(["无法识别文件的文字编码，请在 Excel 中另存为“CSV UTF-8”或普通 CSV 后再导入。"])


def _csv_rows(data: bytes) -> Iterator[list[object]]:
    text = decode_csv(data)
    first = text.split("\n", 1)[0]
    delimiter = "\t" if first.count("\t") > first.count(",") else ","
    try:
        yield from csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    except csv.Error:
        raise ImportRefused(["文件不是有效的 CSV 表格，请在 Excel 中重新另存为 CSV 后再导入。"]) from None


def _xlsx_sheets(path: Path) -> Iterator[Iterator[list[object]]]:
    """The rows of each worksheet, merged cells filled with their value (staff merge 社区 cells)."""
    unreadable = ImportRefused(
        ["无法读取这个 xlsx 文件（可能已加密或已损坏），请在 Excel 中另存为 .xlsx 或 CSV 后再导入。"])
    try:
        with zipfile.ZipFile(path) as archive:
            unpacked = sum(info.file_size for info in archive.infolist())
    except (zipfile.BadZipFile, OSError):
        raise unreadable from None
    if unpacked > MAX_UNPACKED_BYTES:
        raise ImportRefused(
            [f"文件内容太多（解压后超过 {MAX_UNPACKED_BYTES // 1024 // 1024} MB），请分成几个文件导入。"])
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # openpyxl warns about styles and extensions it skips
            book = openpyxl.load_workbook(path, data_only=True)
    except (InvalidFileException, zipfile.BadZipFile, KeyError, ValueError, TypeError, OSError):
        raise unreadable from None

    for ws in book.worksheets:
        last_row = HEADER_SEARCH_ROWS + MAX_ROWS + 1
        filled: dict[tuple[int, int], object] = {}
        for rng in ws.merged_cells.ranges:
            value = ws.cell(rng.min_row, rng.min_col).value
            for r in range(rng.min_row, min(rng.max_row, last_row) + 1):
                for c in range(rng.min_col, min(rng.max_col, MAX_COLUMNS) + 1):
                    filled[(r, c)] = value

        def rows(ws: Any = ws, filled: dict[tuple[int, int], object] = filled) -> Iterator[list[object]]:
            for r, row in enumerate(ws.iter_rows(min_row=1, max_col=MAX_COLUMNS, values_only=True), start=1):
                yield [filled.get((r, c), v) for c, v in enumerate(row, start=1)]

        yield rows()


def _find_header(rows: Iterator[list[object]]) -> tuple[int, list[object]] | None:
    """The first of the top rows that names at least two known columns."""
    for line, row in enumerate(rows, start=1):
        if line > HEADER_SEARCH_ROWS:
            return None
        if sum(1 for cell in row if header_key(cell_text(cell))) >= 2:
            return line, row
    return None


def _read_table(rows: Iterator[list[object]], line: int, header: list[object]) -> Sheet:
    columns: dict[str, int] = {}
    ignored: list[str] = []
    problems: list[str] = []
    for index, cell in enumerate(header):
        title = cell_text(cell)
        key = header_key(title)
        if key is None:
            if title:
                ignored.append(title)
        elif key in columns:
            problems.append(f"第{line}行（表头）：“{_BY_KEY[key].header}”列出现了两次")
        else:
            columns[key] = index
    missing = [c.header for c in COLUMNS if c.required and c.key not in columns]
    if missing:
        problems.append(f"第{line}行（表头）缺少必填列：{'、'.join(missing)}")
    if problems:
        raise ImportRefused(problems)
    data: list[tuple[int, dict[str, object]]] = []
    for number, row in enumerate(rows, start=line + 1):
        cells = {key: row[index] if index < len(row) else None for key, index in columns.items()}
        if all(not cell_text(v) for v in cells.values()):
            continue  # blank rows (or only a pre-printed 序号) are skipped
        if len(data) >= MAX_ROWS:
            raise ImportRefused([f"数据超过 {MAX_ROWS} 行，请分成几个文件导入。"])
        data.append((number, cells))
    if not data:
        raise ImportRefused(["表格里没有居民数据（表头下面是空的）。"])
    return Sheet(data, ignored)


def read_sheet(path: Path) -> Sheet:
    """The data rows of an .xlsx or .csv file; ImportRefused says what is wrong with the file."""
    suffix = path.suffix.lower()
    if suffix not in (".xlsx", ".csv"):
        raise UserFacingError(f"不支持“{path.suffix or path.name}”文件：请在 Excel 中另存为 .xlsx 或 .csv 后再导入。")
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise UserFacingError(f"找不到文件：{path}") from None
    except OSError as exc:
        raise UserFacingError(f"无法读取文件 {path}：{exc.strerror}") from None
    if size > MAX_BYTES:
        raise ImportRefused([f"文件太大（{size / 1024 / 1024:.1f} MB，最多 {MAX_BYTES // 1024 // 1024} MB），"
                             "请分成几个文件导入。"])
    if suffix == ".csv":
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise UserFacingError(f"无法读取文件 {path}：{exc.strerror}") from None
        sheets: Iterable[Iterator[list[object]]] = [_csv_rows(data)]
    else:
        sheets = _xlsx_sheets(path)
    for rows in sheets:
        found = _find_header(rows)
        if found is not None:
            return _read_table(rows, *found)
    raise ImportRefused([
        f"没有找到表头：表格开头应有一行列名，例如 {'、'.join(HEADERS)}（顺序不限），"
        f"其中 {'、'.join(c.header for c in COLUMNS if c.required)} 必须有。"
    ])


# ---------------------------------------------------------------------------- places and scope


@dataclass
class Atlas:
    """Every community and building, loaded once (a city has thousands, not millions)."""

    communities: dict[int, Community]
    buildings: dict[int, Building]
    community_names: dict[str, list[Community]] = field(default_factory=dict)
    building_names: dict[tuple[int, str], Building] = field(default_factory=dict)

    @classmethod
    async def load(cls) -> Atlas:
        atlas = cls({c.id: c for c in await Community.all()}, {b.id: b for b in await Building.all()})
        for c in atlas.communities.values():
            atlas.community_names.setdefault(c.name, []).append(c)
        for b in atlas.buildings.values():
            atlas.building_names[(b.community_id, b.name)] = b  # type: ignore[attr-defined]
        return atlas

    def place(self, community_id: int, building_id: int | None) -> Place:
        community = self.communities[community_id]
        building = self.buildings.get(building_id) if building_id is not None else None
        return Place(community.sub_district_id, community.id,  # type: ignore[attr-defined]
                     building.grid_id if building else None)  # type: ignore[attr-defined]

    def resident_place(self, resident: Resident) -> Place:
        return self.place(resident.community_id, resident.building_id)  # type: ignore[attr-defined]

    def communities_named(self, name: str) -> list[Community]:
        return self.community_names.get(name) or self.community_names.get(name + "社区", [])


def _covers(roles: Sequence[StaffRole], place: Place) -> bool:
    return any(place.within(role) for role in roles)


def _reaches(role: StaffRole, community: Community) -> bool:
    """Whether any part of the community lies in the role's scope."""
    if role.scope_kind == Scope.GLOBAL:
        return True
    if role.scope_kind == Scope.SUB_DISTRICT:
        return role.sub_district_id == community.sub_district_id  # type: ignore[attr-defined]
    if role.scope_kind in (Scope.COMMUNITY, Scope.GRID):
        return role.community_id == community.id  # type: ignore[attr-defined]
    return False


async def staff_member(by_mobile: str) -> Resident:
    """The staff member named by --by."""
    try:
        mobile = normalize_mobile(by_mobile)
    except UserFacingError:
        raise UserFacingError(f"--by 应为工作人员的手机号，“{_show(by_mobile)}”不是有效的手机号。") from None
    person = await Resident.get_or_none(mobile=mobile, erased_at=None)
    if person is None:
        raise NotFound(f"没有找到手机号为 {mobile} 的工作人员。")
    return person


async def _chunked(ids: Sequence[Any], fetch: Any) -> list[Any]:
    found: list[Any] = []
    for start in range(0, len(ids), 500):
        found.extend(await fetch(list(ids[start:start + 500])))
    return found


async def _verified_facts(resident_ids: Sequence[int]) -> dict[int, list[ResidentFact]]:
    facts = await _chunked(resident_ids, lambda chunk: ResidentFact.filter(
        resident_id__in=chunk, state=FactState.VERIFIED).order_by("id"))
    by_resident: dict[int, list[ResidentFact]] = {}
    for fact in facts:
        by_resident.setdefault(fact.resident_id, []).append(fact)
    return by_resident


def _birth_date_of(facts: Iterable[ResidentFact]) -> str:
    values = [f.value for f in facts if f.code == BIRTH_DATE]
    return values[-1] if values else ""


# ---------------------------------------------------------------------------- import


@dataclass
class RowPlan:
    row: RowInput
    community: Community
    building: Building
    existing: Resident | None
    unit: str
    room: str
    changes: list[str]  # what an update changes, by column; empty when the resident is as the row says
    new_statuses: list[str] = field(default_factory=list)
    ended_facts: list[ResidentFact] = field(default_factory=list)


@dataclass
class ImportReport:
    rows: int
    created: int
    updated: list[tuple[int, str, list[str]]]  # line, name, what changed
    unchanged: int
    ignored_columns: list[str]
    dry_run: bool

    def lines(self) -> list[str]:
        if self.dry_run:
            head = (f"检查通过：共 {self.rows} 行。将新增 {self.created} 人，更新 {len(self.updated)} 人，"
                    f"{self.unchanged} 人无变化。（试运行，未写入任何数据）")
        else:
            head = (f"导入完成：共 {self.rows} 行。新增 {self.created} 人，更新 {len(self.updated)} 人，"
                    f"{self.unchanged} 人无变化。")
        out = [head]
        verb = "将更新" if self.dry_run else "已更新"
        out += [f"  第{line}行 {name}：{verb}{'、'.join(changes)}" for line, name, changes in self.updated]
        if self.ignored_columns:
            out.append(f"已忽略无法识别的列：{'、'.join(self.ignored_columns)}")
        return out


@dataclass
class CheckedRow:
    """A row after the checks that need no database: the row, or what is wrong with it."""

    line: int
    community: str
    building: str
    row: RowInput | None
    problems: list[str]


def _resolve_place(
    community_name: str, building_name: str, atlas: Atlas, roles: Sequence[StaffRole]
) -> tuple[Community | None, Building | None, list[str]]:
    """A community and building, found by name inside the importer's scope."""
    candidates = atlas.communities_named(community_name)
    if not candidates:
        return None, None, [f"没有“{_show(community_name)}”这个社区"]
    in_scope = [c for c in candidates if _covers(roles, atlas.place(c.id, None))]
    if not in_scope:
        return None, None, [f"{community_name}不在您的管理范围内"]
    if len(in_scope) > 1:
        return None, None, [f"有多个名为“{community_name}”的社区，无法区分"]
    community = in_scope[0]
    building = atlas.building_names.get((community.id, building_name))
    if building is None:
        elsewhere = [atlas.communities[b.community_id].name for (cid, name), b in atlas.building_names.items()  # type: ignore[attr-defined]
                     if name == building_name and cid != community.id]
        if elsewhere:
            owners = "、".join(sorted(set(elsewhere)))
            return None, None, [f"楼栋“{_show(building_name)}”不在{community.name}（它属于{owners}）"]
        names = [b.name for (cid, _), b in atlas.building_names.items() if cid == community.id]
        known = "、".join(names[:12]) + ("…" if len(names) > 12 else "")
        hint = f"（有：{known}）" if names else ""
        return None, None, [f"{community.name}没有“{_show(building_name)}”这个楼栋{hint}"]
    if not _covers(roles, atlas.place(community.id, building.id)):
        return None, None, [f"{community.name}{building.name}不在您的管理范围内"]
    return community, building, []


def _plan_row(
    row: RowInput, community: Community, building: Building, existing: Resident | None,
    facts: list[ResidentFact],
) -> RowPlan:
    """What importing the row does to the resident with its mobile (``existing``), if any."""
    unit = row.unit if row.unit is not None else existing.unit if existing else ""
    room = row.room if row.room is not None else existing.room if existing else ""
    plan = RowPlan(row, community, building, existing, unit, room, [])
    verified_codes = {f.code for f in facts if f.code != BIRTH_DATE}
    if row.statuses is not None:
        plan.new_statuses = sorted(row.statuses - verified_codes)
        plan.ended_facts = [f for f in facts if f.code != BIRTH_DATE and f.code not in row.statuses]
    if existing is None:
        return plan
    changes = plan.changes
    if existing.name != row.name:
        changes.append("姓名")
    if (existing.community_id, existing.building_id, existing.unit, existing.room) != (  # type: ignore[attr-defined]
            community.id, building.id, unit, room):
        changes.append("住址")
    if row.birth_date is not None and _birth_date_of(facts) != row.birth_date.isoformat():
        changes.append("出生日期")
    if plan.new_statuses or plan.ended_facts:
        changes.append("身份状况")
    if row.mobility is not None and existing.mobility != row.mobility:
        changes.append("行动能力")
    if row.health_note is not None and existing.health_note != row.health_note:
        changes.append("健康备注")
    # An existing record that waits for verification keeps waiting: an export lists such records
    # too, and sending that file back must not verify them wholesale.
    return plan


async def _plan(checked: list[CheckedRow], roles: Sequence[StaffRole]) -> tuple[list[RowPlan], list[str]]:
    """Each row against the database: its places, the resident with its mobile; or every problem."""
    atlas = await Atlas.load()
    mobiles = [c.row.mobile for c in checked if c.row is not None]
    existing = {r.mobile: r for r in await _chunked(mobiles, lambda chunk: Resident.filter(mobile__in=chunk))}
    facts = await _verified_facts([r.id for r in existing.values()])
    plans: list[RowPlan] = []
    problems: list[str] = []
    for c in checked:
        community = building = None
        if c.community and c.building:
            community, building, found = _resolve_place(c.community, c.building, atlas, roles)
            c.problems += found
        resident = existing.get(c.row.mobile) if c.row is not None else None
        if resident is not None and resident.erased_at is not None:
            c.problems.append("该手机号对应的居民已申请删除个人信息，不能再导入")
        elif resident is not None and not _covers(roles, atlas.resident_place(resident)):
            c.problems.append("该手机号已登记在您管理范围以外的居民名下，请联系其所在社区处理")
        if c.problems or c.row is None or community is None or building is None:
            problems.append(line_problem(c.line, c.problems))
            continue
        plans.append(_plan_row(c.row, community, building, resident, facts.get(resident.id, []) if resident else []))
    return plans, problems


async def _apply(plan: RowPlan, by: Resident, now: datetime) -> None:
    row = plan.row
    resident = plan.existing
    if resident is None:
        resident = await Resident.create(
            name=row.name, mobile=row.mobile, community=plan.community, building=plan.building,
            unit=plan.unit, room=plan.room, status=ResidentStatus.VERIFIED, source="import",
            mobility=row.mobility or Mobility.UNKNOWN, health_note=row.health_note or "",
            created_at=now, verified_at=now,
        )
    elif plan.changes:
        resident.name = row.name
        resident.community_id = plan.community.id
        resident.building_id = plan.building.id
        resident.unit, resident.room = plan.unit, plan.room
        updated = ["name", "community_id", "building_id", "unit", "room"]
        if row.mobility is not None:
            resident.mobility = row.mobility
            updated.append("mobility")
        if row.health_note is not None:
            resident.health_note = row.health_note
            updated.append("health_note")
        await resident.save(update_fields=updated)
    if row.birth_date is not None and (plan.existing is None or "出生日期" in plan.changes):
        await declare(resident_id=resident.id, code=BIRTH_DATE, value=row.birth_date.isoformat(), now=now,
                      by_id=by.id, source="import", verified=True)
    for code in plan.new_statuses:
        await declare(resident_id=resident.id, code=code, now=now, by_id=by.id, source="import", verified=True)
    for fact in plan.ended_facts:
        await end_status(fact_id=fact.id, by_id=by.id, now=now, reason=ENDED_REASON)


async def import_residents(path: Path, *, by_mobile: str, now: datetime, today: date,
                           dry_run: bool = False) -> ImportReport:
    """Check the whole file, then import it in one transaction (or, dry, say what would happen).

    Raises UserFacingError for a usage problem (the person, the file name) and ImportRefused
    listing every bad row; either way nothing is written.
    """
    by = await staff_member(by_mobile)
    roles = [r for r in await active_roles(by.id) if r.spec.verifies]
    if not roles:
        raise Forbidden(f"{by.name}没有核实居民信息的权限（需社区或街道工作人员），不能导入。")
    sheet = await asyncio.to_thread(read_sheet, path)

    checked: list[CheckedRow] = []
    first_line: dict[str, int] = {}
    for line, cells in sheet.rows:
        row, row_problems = parse_row(line, cells, today)
        if row is not None and row.mobile in first_line:
            row_problems.append(f"手机号与第{first_line[row.mobile]}行重复")
        elif row is not None:
            first_line[row.mobile] = line
        checked.append(CheckedRow(line, cell_text(cells.get("community")), cell_text(cells.get("building")),
                                  row, row_problems))

    async def run() -> ImportReport:
        plans, problems = await _plan(checked, roles)
        if problems:
            raise ImportRefused([*problems, f"共 {len(problems)} 行有问题，未导入任何数据。请修改后重新导入。"])
        report = ImportReport(
            rows=len(plans), created=sum(1 for p in plans if p.existing is None),
            updated=[(p.row.line, p.row.name, p.changes) for p in plans if p.existing is not None and p.changes],
            unchanged=sum(1 for p in plans if p.existing is not None and not p.changes),
            ignored_columns=sheet.ignored_columns, dry_run=dry_run,
        )
        if dry_run:
            return report
        for plan in plans:
            await _apply(plan, by, now)
        if report.created or report.updated:
            await audit(actor_id=by.id, subject_id=None, action="import", purpose="residents import", now=now,
                        actor_label=ACTOR_LABEL, detail={"file": path.name[:100], "created": report.created,
                                                        "updated": len(report.updated)})
        return report

    if dry_run:
        return await run()
    try:
        async with in_transaction():
            return await run()
    except IntegrityError:
        raise ImportRefused(
            ["导入时居民信息正好被其他操作修改（例如有人同时绑定），未导入任何数据，请重新导入。"]) from None


# ---------------------------------------------------------------------------- export


@dataclass
class ExportReport:
    path: Path
    records: int
    sensitive_records: int  # rows written with sensitive fields shown
    masked_records: int


def _export_row(resident: Resident, atlas: Atlas, facts: list[ResidentFact], sensitive: bool) -> list[str]:
    codes = {f.code for f in facts if f.code != BIRTH_DATE}
    labels = [label for code, label in STATUSES.items()
              if code in codes and (sensitive or code not in SENSITIVE_STATUSES)]
    if not sensitive:
        labels.append(MASK)  # on every row, so the mask does not tell who has a sensitive status
    building = atlas.buildings.get(resident.building_id) if resident.building_id else None  # type: ignore[attr-defined]
    return [
        resident.name,
        resident.mobile or "",
        atlas.communities[resident.community_id].name,  # type: ignore[attr-defined]
        building.name if building else "",
        resident.unit,
        resident.room,
        _birth_date_of(facts),
        "、".join(labels),
        MOBILITY_LABELS.get(resident.mobility, "") if resident.mobility != Mobility.UNKNOWN else "",
        resident.health_note if sensitive else MASK,
    ]


def export_format(out: Path | None, fmt: str | None) -> str:
    """xlsx or csv, from --format or the file's extension (xlsx by default)."""
    suffix = out.suffix.lower().lstrip(".") if out is not None else ""
    if fmt is not None and suffix in ("xlsx", "csv") and suffix != fmt:
        raise UserFacingError(f"--format {fmt} 与文件扩展名 .{suffix} 不一致。")
    if fmt is not None:
        return fmt
    if out is None or suffix in ("xlsx", "csv"):
        return suffix or "xlsx"
    raise UserFacingError("请用 .xlsx 或 .csv 作为文件扩展名，或用 --format 指明格式。")


def _guard_formula(text: str) -> str:
    return "'" + text if text.startswith(FORMULA_START) else text


def write_table(handle: Any, fmt: str, rows: Sequence[Sequence[str]]) -> None:
    """The header and rows as xlsx or csv (UTF-8 with BOM, which Excel opens correctly)."""
    if fmt == "csv":
        text = io.StringIO(newline="")
        writer = csv.writer(text)
        writer.writerow(HEADERS)
        writer.writerows([_guard_formula(v) for v in row] for row in rows)
        handle.write(text.getvalue().encode("utf-8-sig"))
        return
    book = openpyxl.Workbook()
    ws = book.active
    ws.title = "居民名单"
    for r, values in enumerate([HEADERS, *rows], start=1):
        for c, value in enumerate(values, start=1):
            cell = ws.cell(row=r, column=c)
            cell.value = value
            cell.data_type = "s"  # text, never a formula, whatever it starts with
            cell.number_format = "@"  # so Excel keeps mobiles as text when someone edits them
    for c, width in enumerate((10, 14, 12, 10, 6, 8, 12, 24, 14, 30), start=1):
        ws.column_dimensions[get_column_letter(c)].width = width
    ws.freeze_panes = "A2"
    book.save(handle)


def _write_new_file(path: Path, fmt: str, rows: Sequence[Sequence[str]]) -> None:
    # personal data: never overwrite a file, and keep it readable by its owner only
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            write_table(handle, fmt, rows)
    except BaseException:
        path.unlink(missing_ok=True)
        raise


async def export_residents(
    *, by_mobile: str, out: Path, fmt: str, now: datetime, community: str | None = None,
    purpose: str = DEFAULT_PURPOSE,
) -> ExportReport:
    """Write the residents in the exporter's scope to a new file and audit the export."""
    by = await staff_member(by_mobile)
    roles = [r for r in await active_roles(by.id) if r.spec.sees_residents]
    if not roles:
        raise Forbidden(f"{by.name}没有查看居民信息的权限，不能导出。")
    if await asyncio.to_thread(out.exists):
        raise UserFacingError(f"文件已存在：{out}。为免覆盖，请换一个文件名。")
    purpose = " ".join(purpose.split()) or DEFAULT_PURPOSE
    atlas = await Atlas.load()
    query = Resident.filter(erased_at=None)
    if community is not None:
        named = atlas.communities_named(community.strip())
        if not named:
            raise NotFound(f"没有“{_show(community)}”这个社区。")
        named = [c for c in named if any(_reaches(role, c) for role in roles)]
        if not named:
            raise Forbidden(f"{community}不在您的管理范围内。")
        query = query.filter(community_id__in=[c.id for c in named])
    residents = await query.order_by("community_id", "building_id", "unit", "room", "id")
    sensitive_roles = [r for r in roles if r.spec.sees_sensitive]
    chosen: list[tuple[Resident, bool]] = []
    for resident in residents:
        place = atlas.resident_place(resident)
        if _covers(roles, place):
            chosen.append((resident, _covers(sensitive_roles, place)))
    facts = await _verified_facts([r.id for r, _ in chosen])
    rows = [_export_row(r, atlas, facts.get(r.id, []), sensitive) for r, sensitive in chosen]
    shown = sum(1 for _, sensitive in chosen if sensitive)
    report = ExportReport(out, len(rows), shown, len(rows) - shown)
    async with in_transaction():
        await audit(actor_id=by.id, subject_id=None, action="export", purpose=purpose, now=now,
                    actor_label=ACTOR_LABEL, detail={
                        "records": report.records, "sensitive": shown > 0, "sensitive_records": shown,
                        "format": fmt, "community": community or "",
                    })
        try:
            await asyncio.to_thread(_write_new_file, out, fmt, rows)
        except FileExistsError:
            raise UserFacingError(f"文件已存在：{out}。为免覆盖，请换一个文件名。") from None
        except OSError as exc:
            raise UserFacingError(f"无法写入文件 {out}：{exc.strerror}") from None
    return report


# ---------------------------------------------------------------------------- the command line


def local_today(config: Config, now: datetime) -> date:
    return now.astimezone(ZoneInfo(config.community.timezone)).date()


async def _with_db(config: Config, work: Any) -> int:
    await ensure_schema(config.database)
    await init_db(config.database)
    try:
        return int(await work())
    except ImportRefused as exc:
        print("\n".join(exc.problems), file=sys.stderr)
        return 1
    except UserFacingError as exc:
        print(f"linli: {exc.message}", file=sys.stderr)
        return 2
    finally:
        await close_db()


async def import_command(config: Config, path: Path, *, by: str, dry_run: bool, now: datetime) -> int:
    """``linli residents import``: 0 imported (or checked), 1 the file was refused, 2 usage."""

    async def work() -> int:
        report = await import_residents(path, by_mobile=by, now=now, today=local_today(config, now),
                                        dry_run=dry_run)
        print("\n".join(report.lines()))
        return 0

    return await _with_db(config, work)


async def export_command(
    config: Config, *, by: str, out: Path | None, fmt: str | None, community: str | None,
    purpose: str | None, now: datetime,
) -> int:
    """``linli residents export``: 0 written, 2 usage (who, where, which community)."""

    async def work() -> int:
        chosen = export_format(out, fmt)
        path = out if out is not None else Path(f"residents-{local_today(config, now):%Y%m%d}.{chosen}")
        report = await export_residents(by_mobile=by, out=path, fmt=chosen, now=now, community=community,
                                        purpose=purpose or DEFAULT_PURPOSE)
        print(f"已导出 {report.records} 位居民到 {report.path}。")
        if report.masked_records:
            print(f"其中 {report.masked_records} 位居民的敏感信息（低保、特困、残疾等身份状况和健康备注）"
                  f"已打码为“{MASK}”：您的角色不能查看。")
        print("本次导出已记入访问记录。文件含个人信息，请妥善保管，用完及时删除。")
        return 0

    return await _with_db(config, work)
