"""爱心银行 figures and statements: every number of a hand-built November in 米家社区 and 新邱社区, per
community and for the sub-district; the ranking names only those who opted in; 积分数据 in chat; the
figures as JSON and as a spreadsheet; one volunteer's statement as PDF text and spreadsheet cells,
and who may have it."""

from __future__ import annotations

import io
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

import openpyxl
import pytest
from pypdf import PdfReader

from bot.engine import REPLY_MAX_CHARS
from models.activities import Activity, HoursStatus, Signup
from models.ledger import AccountKind, Asset, Entry, Source, account, check_books, points_of, reverse, transfer
from models.love_bank import set_named
from models.love_figures import NAMELESS, Period, love_figures
from models.places import Building, Community, Shop, SubDistrict
from models.proxies import decide_link, request_link
from models.residents import Resident
from models.roles import Role, grant
from tests.api import MiniProgram
from tests.test_api import staff_session
from tests.wechat import WeChatPusher

pytestmark = pytest.mark.usefixtures("demo")

SHANGHAI = ZoneInfo("Asia/Shanghai")
NOVEMBER = Period(date(2026, 11, 1), date(2026, 11, 30), SHANGHAI)
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


def at(month: int, day: int, hour: int = 10) -> datetime:
    return datetime(2026, month, day, hour, tzinfo=SHANGHAI)


async def _acct(kind: str, owner: int) -> Any:
    return await account(Asset.POINTS, kind, owner, at(10, 1))


async def move(src: Any, dst: Any, amount: int, when: datetime, source: str, key: str, memo: str = "") -> Entry:
    return (await transfer(from_account=src, to_account=dst, amount=amount, source=source, key=key, now=when,
                           memo=memo)).entry


async def _activity(community: Community, organiser: Resident, title: str, starts: datetime) -> Activity:
    return await Activity.create(community=community, organiser=organiser, title=title, kind="elder_care",
                                 place="社区活动室", starts_at=starts, ends_at=starts.replace(hour=starts.hour + 2),
                                 slots=10, points_per_hour=10, checkin_code="1234", created_at=at(10, 1))


async def _served(activity: Activity, person: Resident, minutes: int, entry: Entry | None,
                  status: str = HoursStatus.CONFIRMED) -> None:
    await Signup.create(activity=activity, resident=person, signed_at=at(10, 1), minutes=minutes,
                        hours_status=status, entry=entry)


async def november() -> dict[str, int]:
    """米家社区 (M): 孙志愿 V (opted in to be named), 张德福 Z (opted out), 王秀兰 E; 新邱社区 (X): 陈志愿 Y.
    Balances after each line:

    when     what                                                         V    Z    E    Y
    Oct 20   V serves 60 min on A0 (started Oct 20), +10                  10
    Nov 3    A1 (started Nov 3): V 120 min +20, Z 90 min +15               30   15
    Nov 4    Y earns 40 from 新邱社区                                                     40
    Nov 5    staff adjust E +50                                                     50
    Nov 6    Y earns 6 from 米家社区 (a wish there)                                       46
    Nov 10   A2: Z 60 min +10, reversed Nov 11; V declared 30 min (pending)     15
    Nov 12   V wish +10                                                    40
    Nov 13   staff adjust Z -5                                                  10
    Nov 14   V voucher 15, used at the shop Nov 15                         25
    Nov 16   V voucher 5, the community's own item, used Nov 17            20
    Nov 18   E voucher 20, expired Nov 25                                           30
    Nov 19   V donates 3 to E                                              17        33
    Nov 20   E voucher 10, still unused at the end of November                      23
    Nov 21   Z voucher 8, cancelled Nov 22                                      10
    Dec 2    V +7 (after November)                                         24
    """
    mijia = await Community.get(name="米家社区")
    xinqiu = await Community.get(name="新邱社区")
    v, z, e = [await Resident.get(name=n) for n in ("孙志愿", "张德福", "王秀兰")]
    organiser = await Resident.get(name="吴组织")
    staff = await Resident.get(name="周社工")
    b = await Building.get(name="东1栋")
    y = await Resident.create(name="陈志愿", mobile="13955550001", community=xinqiu, building=b, unit="1",
                              room="101", status="verified", created_at=at(10, 1))
    shop = await Shop.get(name="米家便民超市")
    issuing, escrow = await _acct(AccountKind.ISSUING, mijia.id), await _acct(AccountKind.ESCROW, mijia.id)
    expiry, partner = await _acct(AccountKind.EXPIRY, mijia.id), await _acct(AccountKind.PARTNER, shop.id)
    issuing_x = await _acct(AccountKind.ISSUING, xinqiu.id)
    mv, mz, me, my = [await points_of(p.id, at(10, 1)) for p in (v, z, e, y)]

    a0 = await _activity(mijia, organiser, "重阳敬老", at(10, 20, 9))
    await _served(a0, v, 60, await move(issuing, mv, 10, at(10, 20, 12), Source.ACTIVITY, "a0:v", "重阳敬老"))
    a1 = await _activity(mijia, organiser, "助老服务", at(11, 3, 9))
    await _served(a1, v, 120, await move(issuing, mv, 20, at(11, 3, 12), Source.ACTIVITY, "a1:v", "助老服务"))
    await _served(a1, z, 90, await move(issuing, mz, 15, at(11, 3, 12), Source.ACTIVITY, "a1:z", "助老服务"))
    await move(issuing_x, my, 40, at(11, 4), Source.ACTIVITY, "x:y", "环境整治")
    await (transfer(from_account=issuing, to_account=me, amount=50, source=Source.CORRECTION, key="adj:e",
                    now=at(11, 5), memo="积分调整", actor_id=staff.id, reason="补记重阳节服务"))
    await move(issuing, my, 6, at(11, 6), Source.WISH, "wish:y", "帮张德福取快递")
    a2 = await _activity(mijia, organiser, "楼道清扫", at(11, 10, 9))
    wrong = await move(issuing, mz, 10, at(11, 10, 12), Source.ACTIVITY, "a2:z", "楼道清扫")
    await _served(a2, z, 60, wrong)
    await reverse(wrong.id, reason="记错了人", actor_id=staff.id, key="rev:a2:z", now=at(11, 11))
    await _served(a2, v, 30, None, HoursStatus.PENDING)
    await move(issuing, mv, 10, at(11, 12), Source.WISH, "wish:v", "帮王秀兰买药")
    await transfer(from_account=mz, to_account=issuing, amount=5, source=Source.CORRECTION, key="adj:z",
                   now=at(11, 13), memo="积分调整", actor_id=staff.id, reason="重复记录")
    await move(mv, escrow, 15, at(11, 14), Source.REDEMPTION, "v1", "大米一袋")
    await move(escrow, partner, 15, at(11, 15), Source.REDEMPTION, "v1:used", "大米一袋")
    await move(mv, escrow, 5, at(11, 16), Source.REDEMPTION, "v2", "理发券")
    await move(escrow, issuing, 5, at(11, 17), Source.REDEMPTION, "v2:used", "理发券")
    await move(me, escrow, 20, at(11, 18), Source.REDEMPTION, "v3", "助餐券")
    await move(escrow, expiry, 20, at(11, 25), Source.EXPIRY, "v3:expired", "助餐券")
    await move(mv, me, 3, at(11, 19), Source.DONATION, "gift", "转赠")
    await move(me, escrow, 10, at(11, 20), Source.REDEMPTION, "v4", "助餐券")
    await move(mz, escrow, 8, at(11, 21), Source.REDEMPTION, "v5", "洗衣液")
    await move(escrow, mz, 8, at(11, 22), Source.REDEMPTION, "v5:cancel", "洗衣液")
    await move(issuing, mv, 7, at(12, 2), Source.WISH, "wish:v:dec", "陪聊")
    await set_named(v.id, True, at(11, 1))
    await set_named(z.id, False, at(11, 1))
    assert await check_books() == {Asset.POINTS: 0, Asset.FEN: 0}
    return {"mijia": mijia.id, "xinqiu": xinqiu.id, "v": v.id, "z": z.id, "e": e.id, "y": y.id}


async def test_every_number_of_a_known_november(demo: None) -> None:
    ids = await november()
    mijia, xinqiu = await Community.get(id=ids["mijia"]), await Community.get(id=ids["xinqiu"])

    figs = await love_figures([mijia], NOVEMBER, "米家社区")
    m = figs.total
    assert (m.minutes, m.hours) == (210, 3.5)  # A1's 120 + 90; A2's reversed and pending hours are not served
    assert m.issued == 96  # V 30, Z 15 + 10 - 10 - 5, E 50, Y 6 (a 新邱 resident earning here)
    assert (m.redeemed, m.expired, m.reserved) == (20, 20, 10)
    assert m.outstanding == 50  # V 17 + Z 10 + E 23; Y lives in 新邱社区
    assert m.volunteers == 4
    assert [(r.rank, r.name, r.points) for r in figs.top] == [
        (1, NAMELESS, 50), (2, "孙志愿", 30), (3, NAMELESS, 10), (4, NAMELESS, 6)]
    assert [r.resident_id for r in figs.top] == [None, ids["v"], None, None]  # no id for those not named

    both = await love_figures([mijia, xinqiu], NOVEMBER, "太平区示范街道")
    t = both.total
    assert (t.minutes, t.issued, t.redeemed, t.expired, t.outstanding, t.reserved) == (210, 136, 20, 20, 96, 10)
    assert [c.issued for c in both.communities] == [96, 40]
    assert [(r.name, r.points) for r in both.top] == [(NAMELESS, 50), (NAMELESS, 46), ("孙志愿", 30), (NAMELESS, 10)]

    october_too = await love_figures([mijia], Period(date(2026, 10, 1), date(2026, 11, 30), SHANGHAI), "米家社区")
    assert (october_too.total.minutes, october_too.total.issued) == (270, 106)
    early = await love_figures([mijia], Period(date(2026, 11, 1), date(2026, 11, 14), SHANGHAI), "米家社区")
    # by the 14th: V's first voucher was not used yet, so its 15 points are still reserved
    assert (early.total.redeemed, early.total.reserved, early.total.outstanding) == (0, 15, 85)  # V 25, Z 10, E 50


async def test_staff_read_this_months_figures_in_chat(demo: None, wechat: WeChatPusher, clock: Any) -> None:
    await november()
    clock.advance(at(11, 30, 20) - clock.now())
    reply = await wechat.say("demo-staff", "积分数据")
    assert len(reply) <= REPLY_MAX_CHARS
    assert reply.startswith("米家社区11月爱心银行数据（11月1日至30日）")
    assert "服务时长3.5小时，发放积分96分" in reply and "兑换20分，过期20分" in reply
    assert "居民积分余额50分（兑换券占用10分）" in reply and "获得积分的志愿者4人" in reply
    assert f"排行：1. {NAMELESS} 50分；2. 孙志愿 30分；3. {NAMELESS} 10分" in reply

    street = await wechat.say("demo-street", "积分数据")  # sub-district staff: the whole sub-district
    assert street.startswith("太平区示范街道11月爱心银行数据") and "发放积分136分" in street
    assert "米家社区：发放96分，兑换20分，余额50分" in street and "新邱社区：发放40分，兑换0分，余额46分" in street
    assert "仅限相关工作人员" in await wechat.say("demo-volunteer", "积分数据")


async def test_figures_through_the_api_as_json_and_spreadsheet(client: Any, demo: None) -> None:
    ids = await november()
    staff = await staff_session(client, "mp-staff", "13904180003")
    got = await staff.call("GET", "/love-bank/figures", **{"from": "2026-11-01", "to": "2026-11-30"})
    assert got.status == 200, got
    body = got.body
    assert (body["scope"], body["name"], body["first_day"], body["last_day"]) == (
        "community", "米家社区", "2026-11-01", "2026-11-30")
    assert body["total"] == {"community_id": ids["mijia"], "name": "米家社区", "minutes_served": 210,
                             "hours_served": 3.5, "points_issued": 96, "points_redeemed": 20, "points_expired": 20,
                             "points_outstanding": 50, "points_reserved": 10, "volunteers": 4}
    assert body["top"][1] == {"rank": 2, "name": "孙志愿", "resident_id": ids["v"], "points": 30}
    assert body["top"][0] == {"rank": 1, "name": NAMELESS, "resident_id": None, "points": 50}
    # default period: this month (the clock says 27 November) up to today
    default = (await staff.call("GET", "/love-bank/figures")).body
    assert (default["first_day"], default["last_day"], default["total"]["points_issued"]) == (
        "2026-11-01", "2026-11-27", 96)
    # another community, a reversed period, an impossible day
    assert (await staff.call("GET", "/love-bank/figures", community_id=ids["xinqiu"])).status == 404
    assert (await staff.call("GET", "/love-bank/figures", **{"from": "2026-11-20", "to": "2026-11-02"})).status == 422
    assert (await staff.call("GET", "/love-bank/figures", to="2026-02-30")).status == 422

    resp = await client.get("/api/v1/love-bank/figures", params={"from": "2026-11-01", "to": "2026-11-30",
                                                                 "format": "xlsx"},
                            headers={"Authorization": f"Bearer {staff.token}"})
    assert resp.status == 200 and resp.content_type == XLSX
    assert "love-bank-community-" in resp.headers["Content-Disposition"]
    book = openpyxl.load_workbook(io.BytesIO(await resp.read()))
    sheet = book["积分数据"]
    assert sheet["A1"].value == "米家社区 爱心银行积分数据：2026-11-01 至 2026-11-30"
    assert [c.value for c in sheet[2]] == ["社区", "服务时长（小时）", "发放积分", "兑换积分", "过期积分",
                                          "居民积分余额（期末）", "兑换券占用积分（期末）", "获得积分的志愿者（人）"]
    assert [c.value for c in sheet[3]] == ["米家社区", 3.5, 96, 20, 20, 50, 10, 4]
    ranking = book["志愿者排行"]
    assert [[c.value for c in row] for row in ranking.iter_rows(min_row=2)] == [
        [1, NAMELESS, 50], [2, "孙志愿", 30], [3, NAMELESS, 10], [4, NAMELESS, 6]]

    street = await staff_session(client, "mp-street", "13904180007")
    whole = (await street.call("GET", "/love-bank/figures", **{"from": "2026-11-01", "to": "2026-11-30"})).body
    assert (whole["scope"], whole["total"]["community_id"], whole["total"]["points_issued"]) == ("sub_district",
                                                                                               None, 136)
    assert [c["name"] for c in whole["communities"]] == ["米家社区", "新邱社区"]
    one = (await street.call("GET", "/love-bank/figures", community_id=ids["xinqiu"])).body
    assert (one["scope"], one["total"]["points_issued"], one["total"]["points_outstanding"]) == ("community", 40, 46)
    volunteer = await staff_session(client, "mp-volunteer", "13904180004")
    assert (await volunteer.call("GET", "/love-bank/figures")).status == 404


def _pdf_text(data: bytes) -> str:
    reader = PdfReader(io.BytesIO(data))
    # pypdf puts a NUL before each character of this CID-keyed font; the text itself is there
    return "\n".join(page.extract_text().replace("\x00", "") for page in reader.pages)


async def _download(client: Any, mp: MiniProgram, **params: Any) -> Any:
    return await client.get("/api/v1/love-bank/statement", params={k: str(v) for k, v in params.items()},
                            headers={"Authorization": f"Bearer {mp.token}"})


async def test_a_volunteers_statement_as_pdf_and_spreadsheet(client: Any, demo: None) -> None:
    ids = await november()
    volunteer = await staff_session(client, "mp-volunteer", "13904180004")
    resp = await _download(client, volunteer, **{"from": "2026-11-01", "to": "2026-11-30"})
    assert resp.status == 200 and resp.content_type == "application/pdf"
    assert 'filename="points-statement-' in resp.headers["Content-Disposition"]
    data = await resp.read()
    assert data.startswith(b"%PDF-") and b"/FontFile" in data  # the font travels with the document
    text = _pdf_text(data)
    assert "爱心银行积分对账单" in text and "姓名：孙志愿" in text and "社区：米家社区" in text
    assert "期间：2026-11-01 至 2026-11-30" in text
    assert "期初余额：10分" in text and "本期收入：+30分" in text and "本期支出：-23分" in text
    assert "期末余额：17分" in text
    rows = [line for line in text.splitlines() if line.startswith("2026-")]
    assert rows == [
        "2026-11-01期初余额 10",
        "2026-11-03志愿服务：助老服务 +20 30",
        "2026-11-12微心愿：帮王秀兰买药 +10 40",
        "2026-11-14兑换：大米一袋 -15 25",
        "2026-11-16兑换：理发券 -5 20",
        "2026-11-19转赠 -3 17",
        "2026-11-30期末余额 17",
    ]

    resp = await _download(client, volunteer, format="xlsx", **{"from": "2026-11-01", "to": "2026-11-30"})
    assert resp.status == 200 and resp.content_type == XLSX
    sheet = openpyxl.load_workbook(io.BytesIO(await resp.read()))["对账单"]
    cells = [[c.value for c in row] for row in sheet.iter_rows()]
    assert cells[1] == ["姓名", "孙志愿", "社区", "米家社区"]
    assert cells[3] == ["日期", "摘要", "收支（分）", "余额（分）"]
    assert cells[4:] == [
        ["2026-11-01", "期初余额", None, 10],
        ["2026-11-03", "志愿服务：助老服务", 20, 30],
        ["2026-11-12", "微心愿：帮王秀兰买药", 10, 40],
        ["2026-11-14", "兑换：大米一袋", -15, 25],
        ["2026-11-16", "兑换：理发券", -5, 20],
        ["2026-11-19", "转赠", -3, 17],
        ["2026-11-30", "期末余额", None, 17],
    ]

    # 张德福's statement shows the staff's correction with its reason, and the reversal
    staff = await staff_session(client, "mp-staff", "13904180003")
    resp = await _download(client, staff, resident_id=ids["z"], format="xlsx", **{"from": "2026-11-01"})
    rows = [[c.value for c in row] for row in openpyxl.load_workbook(io.BytesIO(await resp.read()))["对账单"]
            .iter_rows(min_row=6)]
    assert ["2026-11-11", "冲正：楼道清扫（原因：记错了人）", -10, 15] in rows
    assert ["2026-11-13", "更正：积分调整（原因：重复记录）", -5, 10] in rows


async def test_who_may_have_a_statement(client: Any, demo: None) -> None:
    ids = await november()
    elder = await Resident.get(id=ids["e"])
    son = await Resident.create(name="王小明", mobile="13955550002", community_id=ids["mijia"],
                                building=await Building.get(name="1号楼"), unit="2", room="301",
                                status="verified", created_at=at(10, 1))
    link, _ = await request_link(proxy_id=son.id, elder_id=elder.id, relation="子女", now=at(11, 1))
    await decide_link(link_id=link.id, by_id=elder.id, how="elder", approve=True, now=at(11, 1))
    other = await Resident.create(name="吴社工", mobile="13955550003", community_id=ids["xinqiu"],
                                  building=await Building.get(name="东2栋"), unit="1", room="101",
                                  status="verified", created_at=at(10, 1))
    await grant(resident_id=other.id, role=Role.COMMUNITY_STAFF, scope_id=ids["xinqiu"], now=at(10, 1))
    street_staff = await Resident.get(name="冯街道")
    assert await SubDistrict.exists()

    proxy = await staff_session(client, "mp-son", "13955550002")
    resp = await _download(client, proxy, resident_id=elder.id, **{"from": "2026-11-01"})
    assert resp.status == 200 and "姓名：王秀兰" in _pdf_text(await resp.read())
    staff = await staff_session(client, "mp-staff", "13904180003")
    assert (await _download(client, staff, resident_id=elder.id)).status == 200
    # a volunteer, another community's staff, the sub-district: another's statement looks absent
    for openid, mobile in (("mp-volunteer", "13904180004"), ("mp-other", "13955550003"),
                           ("mp-street", street_staff.mobile)):
        caller = await staff_session(client, openid, str(mobile))
        resp = await _download(client, caller, resident_id=elder.id)
        assert resp.status == 404, openid
    # one's own, with nothing in it this year
    own = await _download(client, staff)
    text = _pdf_text(await own.read())
    assert "姓名：周社工" in text and "期间：2026-01-01 至 2026-11-27" in text and "本期没有积分记录" in text
