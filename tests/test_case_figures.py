"""逢六说事 figures: every count and rate of a hand-built week of cases, per grid, community and
sub-district; the 本周数据 chat reply; the API's JSON and its spreadsheet; who sees which unit."""

from __future__ import annotations

import io
from dataclasses import asdict
from datetime import UTC, datetime
from fractions import Fraction
from typing import Any
from zoneinfo import ZoneInfo

import openpyxl
import pytest

from bot.engine import REPLY_MAX_CHARS
from handlers.case_figures import week_text
from models import cases
from models.case_figures import (
    Figures,
    Report,
    Unit,
    UnitFigures,
    percent,
    report,
    unit_of,
    units_of,
    viewable,
    week_start,
)
from models.cases import Case, Fixed, report_case
from models.demo import load_demo
from models.errors import NotFound
from models.jobs import sweep_due
from models.places import Building, Community, Grid, SubDistrict
from models.residents import Resident
from models.roles import Role, grant
from tests.api import MiniProgram
from tests.test_api import staff_session
from tests.wechat import WeChatPusher

SHANGHAI = ZoneInfo("Asia/Shanghai")
START = datetime(2026, 11, 23, tzinfo=SHANGHAI)  # Monday 00:00
END = datetime(2026, 11, 30, tzinfo=SHANGHAI)  # the next Monday 00:00, not counted


def at(day: int, hour: int, minute: int = 0, month: int = 11) -> datetime:
    return datetime(2026, month, day, hour, minute, tzinfo=SHANGHAI)


async def _person(name: str, mobile: str, building: str) -> Resident:
    b = await Building.get(name=building)
    return await Resident.create(name=name, mobile=mobile, community_id=b.community_id, building=b,  # type: ignore[attr-defined]
                                 unit="1", room="101", created_at=at(20, 9))


async def history() -> dict[str, int]:
    """The week of 23–29 November 2026 (demo data loaded): ten cases received in it, one just before
    and one at its end. 米家社区: 第一网格 (1号楼) c1–c5, 第二网格 (4号楼) c6–c7; 新邱社区 (its staff
    吴社工 granted here, it has no property company, grid worker or mediator): 东区网格 c8–c9,
    西区网格 c10. Deadlines in working days; the due-action sweep runs at the times given.

    case  unit  class    accepted resolved in-time overdue escalated reopened rating   unrated
    c1    G1    small    yes      yes      yes     -       -         -        5        -
    c2    G1    small    yes      yes      yes     yes     yes       -        3        -
    c3    G1    private  yes      -        -       yes     yes       yes      -        -
    c4    G1    small    -        -        -       yes     yes       -        -        -
    c5    G1    big      yes      yes      yes     -       yes       -        -        yes
    c6    G2    private  yes      yes      -       yes     -         -        4        -
    c7    G2    big      yes      -        -       -       -         -        -        -
    c8    东区  small    yes      yes      yes     -       -         -        2        -
    c9    东区  small    -        -        -       yes     yes       -        -        -
    c10   西区  small    yes      yes      yes     -       -         -        -        yes
    """
    a = await _person("甲居民", "13922220001", "1号楼")
    b = await _person("乙居民", "13922220002", "4号楼")
    c = await _person("丙居民", "13922220003", "东1栋")
    d = await _person("丁居民", "13922220004", "西1栋")
    wu = await _person("吴社工", "13922220005", "东2栋")
    await grant(resident_id=wu.id, role=Role.COMMUNITY_STAFF, scope_id=(await Community.get(name="新邱社区")).id,
                now=at(20, 9))
    staff = {name: (await Resident.get(name=name)).id for name in ("钱物业", "李网格", "孔调解", "周社工", "冯街道")}
    prop, grid1, mediator, mijia, street = (staff[n] for n in ("钱物业", "李网格", "孔调解", "周社工", "冯街道"))

    async def case(who: Resident, category: str, when: datetime) -> int:
        return (await report_case(reporter=who, category=category, description="问题", now=when)).id

    # outside the week: received Sunday night, handled and rated inside it — still not counted
    c11 = await case(a, "lighting", at(22, 23))
    await cases.resolve(c11, prop, "已修好", at(23, 9))
    await cases.feedback(c11, a.id, Fixed.YES, at(23, 9, 30), rating=5)

    c1 = await case(a, "lighting", START)  # the first instant of the week counts
    c2 = await case(a, "water", at(23, 10))  # the property company: 2 working days, to Wed 10:00
    c3 = await case(a, "dispute", at(23, 10))  # private: the mediator of 第一网格
    c4 = await case(a, "lift", at(23, 10))  # 1 working day, to Tue 10:00
    c5 = await case(a, "parking", at(23, 10))  # big: the community, no deadline
    c6 = await case(b, "noise", at(23, 10))  # private, 第二网格 has no mediator: the community, to Thu 10:00
    c7 = await case(b, "parking", at(23, 10))
    c8 = await case(c, "lighting", at(23, 10))  # 新邱: the community (3 working days, to Thu 10:00)
    c9 = await case(c, "other", at(23, 10))
    await cases.accept(c1, prop, at(23, 11))
    await cases.resolve(c1, prop, "已换灯泡", at(23, 12))
    await cases.feedback(c1, a.id, Fixed.YES, at(23, 13), rating=5)
    await cases.accept(c3, mediator, at(23, 11))
    await cases.accept(c5, mijia, at(23, 11))
    await cases.pass_up(c5, mijia, "涉及多个小区，需要街道协调", at(23, 12))  # to the sub-district, 5 working days
    await cases.accept(c7, mijia, at(23, 11))  # and stays in progress
    await cases.resolve(c8, wu.id, "已修好", at(23, 15))  # resolving without accepting first accepts it
    await cases.feedback(c8, c.id, Fixed.YES, at(23, 16), rating=2)
    c10 = await case(d, "hazard", at(24, 9))  # 西区网格: the community, to Fri 9:00
    await cases.accept(c10, wu.id, at(24, 10))
    await cases.resolve(c10, wu.id, "已排除", at(24, 11))  # nobody rates it
    await sweep_due(at(24, 10, 1))  # c4 missed the property company's day: to 李网格, to Thu 10:01
    await cases.resolve(c3, mediator, "已调解", at(24, 10))
    await cases.feedback(c3, a.id, Fixed.NO, at(24, 12), comment="还是吵")  # reopened, the mediator to Fri 12:00
    await cases.resolve(c5, street, "已协调", at(24, 15))  # nobody rates it
    await sweep_due(at(25, 10, 1))  # c2 missed Wed 10:00: to 李网格, to Fri 10:01
    await cases.accept(c2, grid1, at(25, 11))
    await cases.resolve(c2, grid1, "已疏通", at(26, 9))
    await cases.feedback(c2, a.id, Fixed.YES, at(26, 9, 30), rating=3)
    # c6 at the top of its chain misses Thu 10:00 and stays; c9 goes to the sub-district; c4 (Thu
    # 10:01) to the community, to Tue 1 Dec 10:05
    await sweep_due(at(26, 10, 5))
    await cases.resolve(c6, mijia, "已协商", at(27, 8))  # late: after its Thu 10:00 deadline
    await cases.feedback(c6, b.id, Fixed.YES, at(27, 8, 30), rating=4)
    c12 = await case(a, "lighting", END)  # the first instant of the next week: not counted
    # c3 missed Fri 12:00 (to the community), c4 Tue 10:05 (to the sub-district); c10 and c5 close unrated
    await sweep_due(at(1, 15, 1, month=12))
    return {f"c{i}": case_id for i, case_id in enumerate([c1, c2, c3, c4, c5, c6, c7, c8, c9, c10, c11, c12], 1)}


# What history() must give (per unit: the cases of the table above, counted column by column).
G1 = Figures(received=5,  # c1–c5
             accepted=4,  # c1 c2 c3 c5
             resolved=3,  # c1 c2 c5 (c3 reopened)
             resolved_in_time=3,  # c1 c2 c5
             overdue=3,  # c2 c3 c4
             escalated=4,  # c2 c3 c4 c5
             reopened=1,  # c3
             rated=2,  # c1 (5) c2 (3)
             satisfied=1,  # c1
             unrated=1)  # c5
G2 = Figures(received=2, accepted=2, resolved=1,  # c6 c7; c6 resolved
             resolved_in_time=0, overdue=1,  # c6, late
             escalated=0, reopened=0, rated=1, satisfied=1, unrated=0)  # c6 (4)
EAST = Figures(received=2, accepted=1, resolved=1, resolved_in_time=1,  # c8 c9; c8 resolved in time
               overdue=1, escalated=1,  # c9
               reopened=0, rated=1, satisfied=0, unrated=0)  # c8 (2)
WEST = Figures(received=1, accepted=1, resolved=1, resolved_in_time=1, overdue=0, escalated=0,  # c10
               reopened=0, rated=0, satisfied=0, unrated=1)
MIJIA = Figures(received=7, accepted=6, resolved=4, resolved_in_time=3, overdue=4,  # G1 + G2
                escalated=4, reopened=1, rated=3, satisfied=2, unrated=1)
XINQIU = Figures(received=3, accepted=2, resolved=2, resolved_in_time=2, overdue=1,  # 东区 + 西区
                 escalated=1, reopened=0, rated=1, satisfied=0, unrated=1)
STREET = Figures(received=10, accepted=8, resolved=6, resolved_in_time=5, overdue=5,  # 米家 + 新邱
                 escalated=5, reopened=1, rated=4, satisfied=2, unrated=2)
# rates: (受理率, 办结率, 满意率)
RATES = {
    "G1": ("80.0%", "75.0%", "50.0%"),  # 4/5, 3/4, 1/2
    "G2": ("100.0%", "50.0%", "100.0%"),  # 2/2, 1/2, 1/1
    "EAST": ("50.0%", "100.0%", "0.0%"),  # 1/2, 1/1, 0/1
    "WEST": ("100.0%", "100.0%", "—"),  # 1/1, 1/1, nothing rated
    "MIJIA": ("85.7%", "66.7%", "66.7%"),  # 6/7 = 85.71…, 4/6 = 66.66…, 2/3
    "XINQIU": ("66.7%", "100.0%", "0.0%"),  # 2/3, 2/2, 0/1
    "STREET": ("80.0%", "75.0%", "50.0%"),  # 8/10, 6/8, 2/4
}


def rates_of(f: Figures) -> tuple[str, str, str]:
    return percent(f.acceptance_rate), percent(f.completion_rate), percent(f.satisfaction_rate)


async def _ids() -> dict[str, int]:
    grids = {g.name: g.id for g in await Grid.all()}
    communities = {c.name: c.id for c in await Community.all()}
    return {"G1": grids["第一网格"], "G2": grids["第二网格"], "EAST": grids["东区网格"], "WEST": grids["西区网格"],
            "MIJIA": communities["米家社区"], "XINQIU": communities["新邱社区"], "STREET": (await SubDistrict.get()).id}


# ---------------------------------------------------------------------------- the model


def test_rates_are_exact_fractions_rounded_half_up_to_one_decimal() -> None:
    assert percent(Fraction(20, 21)) == "95.2%"  # 95.238…
    assert percent(Fraction(2, 3)) == "66.7%"
    assert percent(Fraction(1, 16)) == "6.3%"  # 6.25 exactly: half up, not to even
    assert percent(Fraction(1, 8)) == "12.5%"
    assert percent(Fraction(1)) == "100.0%" and percent(Fraction(0)) == "0.0%"
    assert percent(None) == "—"
    assert Figures().acceptance_rate is None and Figures(received=3).acceptance_rate == 0


@pytest.mark.usefixtures("db")
async def test_every_figure_of_a_known_week_per_grid_community_and_sub_district() -> None:
    await load_demo(at(20, 9))
    made = await history()
    c3 = await Case.get(id=made["c3"])
    assert (c3.reopened, c3.resolved_at, c3.missed_deadlines, c3.escalations) == (1, None, 1, 1)  # the table holds
    ids = await _ids()
    expected = {"G1": G1, "G2": G2, "EAST": EAST, "WEST": WEST, "MIJIA": MIJIA, "XINQIU": XINQIU, "STREET": STREET}
    scopes = {"G1": "grid", "G2": "grid", "EAST": "grid", "WEST": "grid", "MIJIA": "community",
              "XINQIU": "community", "STREET": "sub_district"}
    for name, figures in expected.items():
        rep = await report(await unit_of(scopes[name], ids[name]), START, END)
        assert rep.total.figures == figures, name
        assert rates_of(rep.total.figures) == RATES[name], name
    mijia = await report(await unit_of("community", ids["MIJIA"]), START, END)
    assert [(u.unit.name, u.figures) for u in mijia.units] == [("第一网格", G1), ("第二网格", G2)]
    street = await report(await unit_of("sub_district", ids["STREET"]), START, END)
    assert [(u.unit.name, u.figures) for u in street.units] == [("米家社区", MIJIA), ("新邱社区", XINQIU)]
    # per category: the two private matters (邻里纠纷 c3, 噪音扰民 c6) only as one 私事 line, with its count
    assert mijia.categories == [("停车", 2), ("私事", 2), ("照明", 1), ("下水与供水", 1), ("电梯", 1)]
    # the period is [start, end): the week before holds c11 alone, the next week c12 alone
    before = await report(await unit_of("grid", ids["G1"]), at(16, 0), START)
    after = await report(await unit_of("grid", ids["G1"]), END, at(7, 0, month=12))
    assert before.total.figures == Figures(received=1, accepted=1, resolved=1, resolved_in_time=1, rated=1,
                                           satisfied=1)
    assert after.total.figures == Figures(received=1)


@pytest.mark.usefixtures("db")
async def test_who_sees_which_units() -> None:
    await load_demo(at(20, 9))
    ids = await _ids()
    person = {name: (await Resident.get(name=name)).id for name in ("李网格", "周社工", "冯街道", "钱物业", "孔调解")}
    assert [u.label for u in await units_of(person["李网格"])] == ["米家社区第一网格"]
    assert [u.label for u in await units_of(person["周社工"])] == ["米家社区", "米家社区第一网格", "米家社区第二网格"]
    assert [u.label for u in await units_of(person["冯街道"])] == ["太平区示范街道", "米家社区", "新邱社区"]
    assert await units_of(person["钱物业"]) == [] and await units_of(person["孔调解"]) == []
    assert (await viewable(person["周社工"])).key == f"community:{ids['MIJIA']}"  # the widest by default
    assert (await viewable(person["冯街道"], "grid", ids["EAST"])).label == "新邱社区东区网格"
    for who, scope, unit in [("李网格", "grid", "G2"), ("李网格", "community", "MIJIA"), ("周社工", "grid", "EAST"),
                             ("周社工", "community", "XINQIU"), ("周社工", "sub_district", "STREET"),
                             ("钱物业", "community", "MIJIA")]:
        with pytest.raises(NotFound):
            await viewable(person[who], scope, ids[unit])
    with pytest.raises(NotFound):
        await viewable(person["冯街道"], "grid", 999_999)


def test_the_week_starts_on_monday_at_midnight_community_time() -> None:
    friday = datetime(2026, 11, 27, 1, 0, tzinfo=UTC)  # 09:00 in Shanghai
    assert week_start(friday, SHANGHAI) == START
    sunday_night = datetime(2026, 11, 29, 16, 30, tzinfo=UTC)  # Monday 00:30 in Shanghai: a new week
    assert week_start(sunday_night, SHANGHAI) == END


# ---------------------------------------------------------------------------- chat and API
# The app's clock stands at Friday 27 November 09:00: this week is Monday 00:00 to then, which holds
# c1–c10 of history() (c11 came before, c12 comes later), so the same numbers come out.


@pytest.mark.usefixtures("demo")
async def test_this_weeks_figures_in_chat(wechat: WeChatPusher) -> None:
    await history()
    grid = await wechat.say("demo-grid-1", "本周数据")  # one grid: the figures at once
    assert grid.startswith("米家社区第一网格本周数据（11月23日起，截至11月27日（周五）上午9:00）")
    for part in ["收到5件，受理4件，受理率80.0%", "办结3件（按期3件），办结率75.0%", "逾期3件，升级4件，重办1件",
                 "评价2件，满意1件，满意率50.0%；超时未评价1件"]:
        assert part in grid, part
    offer = await wechat.say("demo-staff", "本周数据")  # the community and its grids: a numbered choice
    assert "1. 米家社区\n2. 米家社区第一网格\n3. 米家社区第二网格" in offer
    community = await wechat.say("demo-staff", "1")
    assert "收到7件，受理6件，受理率85.7%" in community and "办结4件（按期3件），办结率66.7%" in community
    assert "第一网格：收到5，受理率80.0%，办结率75.0%，满意率50.0%" in community
    assert "第二网格：收到2，受理率100.0%，办结率50.0%，满意率100.0%" in community
    assert "第二网格本周数据" in (await wechat.say("demo-staff", "本周数据"), await wechat.say("demo-staff", "3"))[1]
    await wechat.say("demo-street", "数据")
    street = await wechat.say("demo-street", "1")
    assert "太平区示范街道本周数据" in street and "收到10件，受理8件，受理率80.0%" in street
    assert "新邱社区：收到3，受理率66.7%，办结率100.0%，满意率0.0%" in street
    for reply in (grid, offer, community, street):
        assert len(reply) <= REPLY_MAX_CHARS
    assert "仅限相关工作人员" in await wechat.say("demo-property", "本周数据")


@pytest.mark.usefixtures("demo")
async def test_a_quiet_week_and_grids_without_cases_stay_short(wechat: WeChatPusher) -> None:
    mijia = await Community.get(name="米家社区")
    for i in range(12):
        await Grid.create(name=f"新建第{i + 3}网格", community=mijia)
    await wechat.say("demo-staff", "本周数据")
    assert "本周还没有收到居民反映的问题" in await wechat.say("demo-staff", "1")
    await history()
    offer = await wechat.say("demo-staff", "本周数据")  # 15 units: still one short numbered list
    assert "15. 米家社区新建第14网格" in offer and len(offer) <= REPLY_MAX_CHARS
    reply = await wechat.say("demo-staff", "1")
    assert "第二网格：收到2" in reply and reply.endswith("其余12个网格本周没有收到反映。")
    assert len(reply) <= REPLY_MAX_CHARS


def test_a_reply_lists_the_units_below_while_it_stays_within_300_characters() -> None:
    community = Unit("community", 1, "米家社区", "米家社区")
    busy = Figures(received=120, accepted=119, resolved=100, resolved_in_time=99, overdue=11, escalated=12,
                   reopened=3, rated=70, satisfied=66, unrated=20)
    grids = [UnitFigures(Unit("grid", i, f"第{i}网格", f"米家社区第{i}网格"), busy) for i in range(1, 13)]
    grids.append(UnitFigures(Unit("grid", 13, "第13网格", "米家社区第13网格"), Figures()))
    rep = Report(START, datetime(2026, 11, 27, 9, tzinfo=SHANGHAI), UnitFigures(community, busy + busy), grids)
    text = week_text(rep, SHANGHAI)
    assert len(text) <= REPLY_MAX_CHARS
    assert "收到240件，受理238件，受理率99.2%" in text  # 238/240 = 99.166…
    assert "第1网格：收到120，受理率99.2%，办结率84.0%，满意率94.3%" in text  # 100/119 = 84.03…, 66/70 = 94.28…
    listed = text.count("网格：")
    assert 1 <= listed < 12 and f"另有{12 - listed}个网格未列出" in text and "其余1个网格本周没有收到反映。" in text


def _as_figures(row: dict[str, Any]) -> Figures:
    return Figures(**{k: row[k] for k in asdict(Figures())})


@pytest.mark.usefixtures("demo")
async def test_the_api_answers_the_same_figures_as_json_and_as_a_spreadsheet(client: Any) -> None:
    await history()
    ids = await _ids()
    staff = await staff_session(client, "mp-figures-staff", "13904180003")  # 周社工, 米家社区
    mine = await staff.call("GET", "/case-figures")  # this week, the widest scope
    assert mine.status == 200, mine
    assert mine.body["total"]["name"] == "米家社区" and _as_figures(mine.body["total"]) == MIJIA
    assert [(u["name"], _as_figures(u)) for u in mine.body["units"]] == [("米家社区第一网格", G1),
                                                                          ("米家社区第二网格", G2)]
    assert (mine.body["total"]["acceptance_rate"], mine.body["total"]["completion_rate"],
            mine.body["total"]["satisfaction_rate"]) == RATES["MIJIA"]
    assert {"category": "私事", "received": 2} in mine.body["categories"]
    assert not {"邻里纠纷", "噪音扰民"} & {c["category"] for c in mine.body["categories"]}

    street = await staff_session(client, "mp-figures-street", "13904180007")  # 冯街道
    week = await street.call("GET", "/case-figures", scope="sub_district", scope_id=ids["STREET"],
                             start="2026-11-23", end="2026-11-30")
    assert _as_figures(week.body["total"]) == STREET
    assert [_as_figures(u) for u in week.body["units"]] == [MIJIA, XINQIU]
    assert [u["satisfaction_rate"] for u in week.body["units"]] == [RATES["MIJIA"][2], RATES["XINQIU"][2]]
    west = await street.call("GET", "/case-figures", scope="grid", scope_id=ids["WEST"], start="2026-11-23",
                             end="2026-11-30")
    assert _as_figures(west.body["total"]) == WEST and west.body["total"]["satisfaction_rate"] == "—"
    assert west.body["units"] == []

    resp = await client.get("/api/v1/case-figures", headers={"Authorization": f"Bearer {street.token}"},
                            params={"scope": "sub_district", "scope_id": str(ids["STREET"]), "start": "2026-11-23",
                                    "end": "2026-11-30", "format": "xlsx"})
    assert resp.status == 200
    assert resp.content_type == "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
    assert resp.headers["Content-Disposition"] == (
        f'attachment; filename="case-figures-sub_district-{ids["STREET"]}-20261123-20261130.xlsx"')
    book = openpyxl.load_workbook(io.BytesIO(await resp.read()))
    rows = list(book["数据"].iter_rows(values_only=True))
    assert rows[0][0] == "太平区示范街道 逢六说事数据：2026-11-23 00:00 至 2026-11-30 00:00（按收到时间）"
    assert rows[1] == ("单位", "收到", "受理", "受理率", "办结", "办结率", "按期办结", "逾期", "升级", "重办", "评价",
                       "满意（4–5分）", "满意率", "超时未评价")

    def sheet_row(name: str, f: Figures, rates: tuple[str, str, str]) -> tuple[Any, ...]:
        return (name, f.received, f.accepted, rates[0], f.resolved, rates[1], f.resolved_in_time, f.overdue,
                f.escalated, f.reopened, f.rated, f.satisfied, rates[2], f.unrated)

    assert rows[2:] == [sheet_row("米家社区", MIJIA, RATES["MIJIA"]), sheet_row("新邱社区", XINQIU, RATES["XINQIU"]),
                        sheet_row("合计（太平区示范街道）", STREET, RATES["STREET"])]
    categories = dict(book["分类"].iter_rows(min_row=2, values_only=True))
    assert categories["私事"] == 2 and "邻里纠纷" not in categories and sum(categories.values()) == 10


@pytest.mark.usefixtures("demo")
async def test_outside_the_callers_scope_is_404_and_bad_periods_422(client: Any) -> None:
    ids = await _ids()
    grid = await staff_session(client, "mp-figures-grid", "13904180001")  # 李网格, 第一网格
    assert (await grid.call("GET", "/case-figures")).body["total"]["name"] == "米家社区第一网格"
    for scope, unit in [("grid", "G2"), ("community", "MIJIA"), ("sub_district", "STREET")]:
        for fmt in ("json", "xlsx"):
            answer = await grid.call("GET", "/case-figures", scope=scope, scope_id=ids[unit], format=fmt)
            assert answer.status == 404 and answer.body["error"] == "not_found", (scope, fmt)
    staff = await staff_session(client, "mp-figures-staff2", "13904180003")
    assert (await staff.call("GET", "/case-figures", scope="community", scope_id=ids["XINQIU"])).status == 404
    assert (await staff.call("GET", "/case-figures", scope="grid", scope_id=ids["G2"])).status == 200
    property_company = await staff_session(client, "mp-figures-property", "13904180005")
    assert (await property_company.call("GET", "/case-figures")).status == 404
    for params in [{"start": "2026-02-30"}, {"start": "2026-11-30", "end": "2026-11-23"}, {"end": "2026-11-02"},
                   {"scope": "grid"}, {"start": "1999-01-01"}, {"format": "pdf"}]:
        answer = await staff.call("GET", "/case-figures", **params)
        assert answer.status == 422 and answer.body["error"] == "validation", params
    resident = MiniProgram(client, "mp-figures-nobody")
    await resident.login()
    assert (await resident.call("GET", "/case-figures")).status == 409  # not bound
