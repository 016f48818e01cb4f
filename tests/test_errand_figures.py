"""服务台账 and the errand figures (models/errand_figures.py): the ledger per household and the figures
per item and period, computed from errands with known times; the spreadsheets; who may read them."""

from __future__ import annotations

import io
from datetime import UTC, date, datetime, timedelta
from typing import Any

import openpyxl
import pytest

from bot.clock import FrozenClock
from models.errand_figures import (
    Unit,
    default_unit,
    figures,
    figures_text,
    figures_xlsx,
    household_ledger,
    ledger,
    ledger_xlsx,
    pct,
)
from models.errands import Errand, ErrandItem, ErrandState, Progress, ProxyLevel
from models.errors import Forbidden
from models.places import Building, Community, Department, SubDistrict
from models.residents import Resident
from models.roles import Role, grant

pytestmark = pytest.mark.usefixtures("demo")
NOW = datetime(2026, 11, 27, 1, 0, tzinfo=UTC)  # Friday 09:00 in Shanghai
FIRST, LAST = date(2026, 11, 1), date(2026, 11, 30)


async def person(name: str) -> Resident:
    return await Resident.get(name=name)


async def item(community: Community, name: str, limit: int) -> ErrandItem:
    department = await Department.get(name="民政")
    return await ErrandItem.create(community=community, name=name, department=department, documents=["身份证"],
                                   first_response_minutes=limit, expected_days=7, updated_at=NOW)


async def errand(what: ErrandItem, resident: Resident, created: datetime, *, taken: int | None = None,
                 delivered_hours: int | None = None, at_door: bool = False, proxy: Resident | None = None,
                 rating: int | None = None, cancelled_after: int | None = None,
                 result: str = Progress.APPROVED) -> Errand:
    """An errand with known times: taken ``taken`` minutes after it was asked, delivered
    ``delivered_hours`` after it was asked (then closed with the rating), or cancelled."""
    state = ErrandState.COLLECTING
    fields: dict[str, Any] = {}
    if taken is not None:
        fields["first_response_at"] = created + timedelta(minutes=taken)
        state = ErrandState.REVIEW
    if delivered_hours is not None:
        delivered = created + timedelta(hours=delivered_hours)
        fields.update(progress=result, result_at=delivered - timedelta(hours=1), delivered_at=delivered,
                      at_door=at_door, closed_at=delivered + timedelta(hours=2), rating=rating)
        state = ErrandState.CLOSED
    if cancelled_after is not None:
        fields["closed_at"] = created + timedelta(minutes=cancelled_after)
        state = ErrandState.CANCELLED
    if proxy is not None:
        fields.update(needs_proxy=True, proxy_reason="lives_alone", proxy_level=ProxyLevel.TAKEN, proxy=proxy)
    return await Errand.create(community_id=what.community_id, item=what, item_name=what.name,  # type: ignore[attr-defined]
                               documents=list(what.documents), first_response_minutes=what.first_response_minutes,
                               expected_days=what.expected_days, resident=resident, requested_by=resident,
                               state=state, created_at=created, **fields)


async def world() -> dict[str, Any]:
    """米家社区's 困难认定 (15 minutes) and 低保申请 (2 hours), and 新邱社区's 困难认定:

    - 刘桂芳 (5号楼1单元201室): 困难认定 taken in 10 minutes, delivered at her door by 党代办 after 48
      hours, rated 5;
    - 王秀兰 (1号楼2单元301室): 困难认定 taken in 20 minutes (late), the result told after 24 hours, rated
      3; and 低保申请 asked on Saturday 09:00, nobody has taken it yet;
    - 张德福 (2号楼1单元502室): 低保申请 on Sunday, withdrawn after 30 minutes (before its limit);
    - a 新邱社区 resident: 困难认定 taken in 5 minutes; and an errand of October, outside the period.
    """
    mijia, xinqiu = await Community.get(name="米家社区"), await Community.get(name="新邱社区")
    hardship, dibao = await item(mijia, "困难认定", 15), await item(mijia, "低保申请", 120)
    liu, wang, zhang = await person("刘桂芳"), await person("王秀兰"), await person("张德福")
    east = await Building.get(name="东1栋")
    neighbour = await Resident.create(name="钱东邻", mobile="13900001111", community=xinqiu, building=east, unit="1",
                                      room="101", status="verified", created_at=NOW)
    ids = {
        "liu": (await errand(hardship, liu, NOW, taken=10, delivered_hours=48, at_door=True,
                             proxy=await person("党代办"), rating=5)).id,
        "wang_hardship": (await errand(hardship, wang, NOW + timedelta(hours=1), taken=20, delivered_hours=24,
                                       rating=3, result=Progress.REJECTED)).id,
        "wang_dibao": (await errand(dibao, wang, NOW + timedelta(days=1))).id,
        "zhang": (await errand(dibao, zhang, NOW + timedelta(days=2), cancelled_after=30)).id,
        "xinqiu": (await errand(await item(xinqiu, "困难认定", 15), neighbour, NOW, taken=5)).id,
        "october": (await errand(hardship, liu, datetime(2026, 10, 20, 2, 0, tzinfo=UTC), taken=1)).id,
    }
    return {"ids": ids, "mijia": mijia, "xinqiu": xinqiu, "staff": await person("周社工"),
            "street": await person("冯街道")}


# ---------------------------------------------------------------------------- the figures


async def test_figures_per_item_and_in_all_from_errands_with_known_times(clock: FrozenClock) -> None:
    w = await world()
    clock.set(NOW + timedelta(days=1, hours=3))  # 低保申请 of Saturday waits 3 hours: past its 2-hour limit
    figs = await figures(w["staff"].id, community_id=w["mijia"].id, start=FIRST, end=LAST, now=clock.now())
    assert figs.unit == Unit("community", w["mijia"].id, "米家社区", (w["mijia"].id,))
    hardship, dibao = figs.items
    row = ("item", "limit_minutes", "requests", "cancelled", "responded", "due", "within_limit", "within_pct",
           "response_median_minutes", "delivered", "total_median_hours", "at_door", "at_door_pct", "rated",
           "rating_mean_x10", "satisfied", "satisfied_pct")

    def values(line: Any) -> tuple[Any, ...]:
        return tuple(getattr(line, name) for name in row)

    # 10 and 20 minutes against 15: one in time, median 15; 48 and 24 hours: median 36; one at the door;
    # ratings 5 and 3: mean 4.0, one satisfied
    assert values(hardship) == ("困难认定", 15, 2, 0, 2, 2, 1, 50, 15, 2, 36, 1, 50, 2, 40, 1, 50)
    # the open one is late (due, not within); the one withdrawn before its limit was never due
    assert values(dibao) == ("低保申请", 120, 2, 1, 0, 1, 0, 0, None, 0, None, 0, None, 0, None, 0, None)
    assert values(figs.total) == ("合计", None, 4, 1, 2, 3, 1, 33, 15, 2, 36, 1, 50, 2, 40, 1, 50)
    text = figures_text(figs)
    assert "代办申请4件（取消1件）" in text and "按时1/3件（33%），中位15分钟" in text
    assert "上门办结1件（50%）" in text and "平均4.0分" in text

    # without the clock, an errand still waiting is not counted as late yet
    unclocked = await figures(w["staff"].id, community_id=w["mijia"].id, start=FIRST, end=LAST)
    assert (unclocked.items[1].due, unclocked.items[1].within_pct, unclocked.total.within_pct) == (0, None, 50)
    # one day: only what was asked that day (community time)
    friday = await figures(w["staff"].id, community_id=w["mijia"].id, start=date(2026, 11, 27),
                           end=date(2026, 11, 27), now=clock.now())
    assert [(f.item, f.requests) for f in friday.items] == [("困难认定", 2)]
    october = await figures(w["staff"].id, community_id=w["mijia"].id, start=date(2026, 10, 1),
                            end=date(2026, 10, 31), now=clock.now())
    assert (october.total.requests, october.total.within_limit) == (1, 1)


async def test_a_sub_districts_staff_see_every_community_and_the_shares_round_half_up(clock: FrozenClock) -> None:
    w = await world()
    sub = await SubDistrict.get()
    figs = await figures(w["street"].id, sub_district_id=sub.id, start=FIRST, end=LAST, now=NOW + timedelta(days=3))
    assert (figs.unit.scope, figs.unit.community_ids) == ("sub_district", (w["mijia"].id, w["xinqiu"].id))
    # 困难认定 of both communities together: 10, 20 and 5 minutes → 2 of 3 in time, median 10
    hardship = figs.items[0]
    assert (hardship.item, hardship.requests, hardship.within_limit, hardship.due, hardship.within_pct,
            hardship.response_median_minutes) == ("困难认定", 3, 2, 3, 67, 10)
    assert await default_unit(w["street"].id) == figs.unit
    assert (await default_unit(w["staff"].id)).id == w["mijia"].id
    assert (pct(1, 3), pct(2, 3), pct(1, 2), pct(1, 8), pct(0, 0)) == (33, 67, 50, 13, None)


# ---------------------------------------------------------------------------- the ledger


async def test_the_ledger_has_a_row_per_errand_grouped_by_household() -> None:
    w = await world()
    rows = await household_ledger(w["staff"].id, w["mijia"].id, FIRST, LAST)
    assert [(r.household, r.resident, r.item, r.asked_on, r.state_label) for r in rows] == [
        ("1号楼2单元301室", "王秀兰", "困难认定", date(2026, 11, 27), "已办结"),
        ("1号楼2单元301室", "王秀兰", "低保申请", date(2026, 11, 28), "待上传材料"),
        ("2号楼1单元502室", "张德福", "低保申请", date(2026, 11, 29), "已取消"),
        ("5号楼1单元201室", "刘桂芳", "困难认定", date(2026, 11, 27), "已办结"),
    ]
    liu = rows[3]
    assert (liu.result_label, liu.result_on, liu.delivered_on, liu.closed_on, liu.proxy, liu.at_door, liu.rating) == (
        "已办结（通过）", date(2026, 11, 29), date(2026, 11, 29), date(2026, 11, 29), "党**", True, 5)
    wang = rows[0]
    assert (wang.result, wang.result_label, wang.proxy, wang.at_door, wang.rating) == (
        "rejected", "未通过", "", False, 3)
    assert (rows[1].result_label, rows[1].delivered_on, rows[1].rating) == ("", None, None)

    # an erased resident's errands stay in the ledger, without a name or a home
    await Resident.filter(name="张德福").update(erased_at=NOW)
    after = await ledger(w["staff"].id, w["mijia"].id, FIRST, LAST)
    assert [(r.household, r.resident) for r in after.rows][-1] == ("", "")
    assert after.households == 3


async def test_the_spreadsheets_open_and_hold_the_rows(clock: FrozenClock) -> None:
    w = await world()
    led = await ledger(w["staff"].id, w["mijia"].id, FIRST, LAST)
    book = openpyxl.load_workbook(io.BytesIO(ledger_xlsx(led)))
    rows = [[c.value for c in row] for row in book["服务台账"].iter_rows()]
    assert rows[0][0] == "米家社区 红色代办服务台账：2026-11-01 至 2026-11-30"
    assert rows[1][:4] == ["户（楼栋单元室）", "居民", "编号", "事项"]
    assert ["5号楼1单元201室", "刘桂芳", w["ids"]["liu"], "困难认定", "2026-11-27", "已办结", "已办结（通过）",
            "2026-11-29", "2026-11-29", "2026-11-29", "党**", "是", 5] in rows
    assert rows[-1][0] == "共3户，4件"

    figs = await figures(w["staff"].id, community_id=w["mijia"].id, start=FIRST, end=LAST,
                         now=NOW + timedelta(days=1, hours=3))
    book = openpyxl.load_workbook(io.BytesIO(figures_xlsx(figs)))
    sheet = [[c.value for c in row] for row in book["代办数据"].iter_rows()]
    assert sheet[0][0] == "米家社区 红色代办数据：2026-11-01 至 2026-11-30"
    assert sheet[2] == ["困难认定", 15, 2, 0, 2, 2, 1, 50, 15, 2, 36, 1, 50, 2, 40, 1, 50]
    assert sheet[-1][:8] == ["合计", None, 4, 1, 2, 3, 1, 33]


# ---------------------------------------------------------------------------- who may read them


async def test_only_the_communitys_and_the_sub_districts_staff_read_them() -> None:
    w = await world()
    xinqiu_staff = await Resident.create(name="吴社工", mobile="13900002222", community=w["xinqiu"],
                                         status="verified", created_at=NOW)
    await grant(resident_id=xinqiu_staff.id, role=Role.COMMUNITY_STAFF, scope_id=w["xinqiu"].id, now=NOW)
    sub = await SubDistrict.get()
    refused = [(xinqiu_staff, {"community_id": w["mijia"].id}), (w["staff"], {"sub_district_id": sub.id}),
               (w["staff"], {"community_id": w["xinqiu"].id})]
    refused += [(await person(name), {"community_id": w["mijia"].id})
                for name in ("何管家", "党代办", "民政窗口", "赵网格", "刘桂芳")]
    for viewer, where in refused:
        with pytest.raises(Forbidden):
            await figures(viewer.id, **where, start=FIRST, end=LAST)
        if "community_id" in where:
            with pytest.raises(Forbidden):
                await household_ledger(viewer.id, where["community_id"], FIRST, LAST)
    with pytest.raises(Forbidden):
        await default_unit((await person("何管家")).id)
    # theirs they read; the sub-district's staff read either community
    assert [r.resident for r in await household_ledger(xinqiu_staff.id, w["xinqiu"].id, FIRST, LAST)] == ["钱东邻"]
    assert len(await household_ledger(w["street"].id, w["mijia"].id, FIRST, LAST)) == 4
    with pytest.raises(ValueError):
        await figures(w["staff"].id, community_id=w["mijia"].id, start=LAST, end=FIRST)
