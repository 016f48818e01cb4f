"""The authorization matrix of /api/v1: every endpoint × every kind of caller, from one table.

Each row names an endpoint, the object it is called on, and the status each caller must get on a
freshly built world. A test checks that the table covers every registered endpoint, so a new
endpoint cannot be added without deciding who may call it.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

import pytest
from tortoise import Tortoise, connections

from bot.api import create_session
from bot.app import SERVICES
from bot.clock import work_calendar
from bot.config import CommunityConfig
from handlers import API_ROUTERS
from models.cases import AgendaItem, CaseEvent, EventKind, progress, report_case
from models.facts import declare
from models.notices import create_notice
from models.places import Building, Community, SubDistrict
from models.privacy import request_deletion
from models.proxies import decide_link, request_link
from models.residents import Resident, WechatAccount
from models.roles import Role, StaffRole, grant
from models.service_days import plan_day
from tests.test_activities_api import MATRIX_CHECKIN_CODE, matrix_activities
from tests.test_canteen_api import MATRIX_MEAL_CODE, matrix_canteen
from tests.test_errands_api import matrix_errands
from tests.test_love_bank_api import matrix_love_bank
from tests.test_redemption_api import MATRIX_CODE, matrix_redemption
from tests.test_riders_api import matrix_riders
from tests.test_wishes import matrix_wishes

NOW = datetime(2026, 11, 27, 1, 0, tzinfo=UTC)
ACTORS = ("anon", "unbound", "self", "elder", "stranger", "grid", "grid_other", "staff", "staff_other",
          "subdistrict", "admin", "volunteer")
_numbers = itertools.count(1)


@dataclass
class World:
    tokens: dict[str, str] = field(default_factory=dict)
    ids: dict[str, int] = field(default_factory=dict)
    fake: Any = None


async def _person(name: str, mobile: str, building: str, unit: str = "1", room: str = "101") -> Resident:
    b = await Building.get(name=building)
    return await Resident.create(name=name, mobile=mobile, community_id=b.community_id, building=b,  # type: ignore[attr-defined]
                                 unit=unit, room=room, status="verified", source="staff", created_at=NOW)


async def _session(client: Any, world: World, actor: str, resident: Resident | None) -> None:
    account = await WechatAccount.create(openid=f"mp-{actor}", channel="mp", resident=resident, created_at=NOW)
    world.tokens[actor] = await create_session(client.app[SERVICES].store, account, 1)


async def build_world(client: Any) -> World:
    """demo data plus: A (self) acts for 王秀兰 (elder); a stranger in the other community; staff."""
    world = World(fake=client.app[SERVICES].fake)
    mijia = await Community.get(name="米家社区")
    xinqiu = await Community.get(name="新邱社区")
    sub = await SubDistrict.get()
    elder = await Resident.get(name="王秀兰")
    me = await _person("刘小红", "13912340001", "1号楼", room="102")
    stranger = await _person("陈路人", "13912340002", "东1栋")
    other_staff = await _person("吴社工", "13912340003", "东2栋")
    sub_staff = await _person("郑街道", "13912340004", "西1栋")
    admin = await _person("钱管理", "13912340005", "西2栋")
    await grant(resident_id=other_staff.id, role=Role.COMMUNITY_STAFF, scope_id=xinqiu.id, now=NOW)
    await grant(resident_id=sub_staff.id, role=Role.SUBDISTRICT_STAFF, scope_id=sub.id, now=NOW)
    await grant(resident_id=admin.id, role=Role.ADMIN, scope_id=None, now=NOW)
    link, _ = await request_link(proxy_id=me.id, elder_id=elder.id, relation="子女", now=NOW)
    await decide_link(link_id=link.id, by_id=elder.id, how="elder", approve=True, now=NOW)
    pending_link, _ = await request_link(proxy_id=stranger.id, elder_id=elder.id, relation="亲属", now=NOW)
    fact = await declare(resident_id=elder.id, code="dibao", now=NOW, by_id=elder.id)
    data_request, _ = await request_deletion(resident_id=elder.id, by_id=elder.id, now=NOW)
    building_1 = await Building.get(name="1号楼")
    notice = await create_notice(community_id=mijia.id, building_id=building_1.id, title="停水", text="明天停水",
                                 urgency="normal", now=NOW, send_at=NOW, by_id=None)
    service_day = await plan_day(community_id=mijia.id, day=date(2026, 12, 4), place="米家社区文化广场",
                                 starts="09:00", ends="11:30", staff="周社工", items=["低保申请", "医保参保"],
                                 by_id=None, now=NOW, today=date(2026, 11, 27),
                                 calendar=work_calendar(CommunityConfig()))
    # 逢六说事: a small, a private and a big case 刘小红 (self) reported in 1号楼 (the big one is on the agenda);
    # the small one with a photo, and a progress note with a photo by the property company (its first level)
    world.fake.add_media("matrix-photo", b"\xff\xd8\xff\xe0" + b"a photo of a dark stairwell")
    small_case = await report_case(reporter=me, category="lighting", description="楼道灯坏了", now=NOW,
                                   photos=[{"media_id": "matrix-photo", "pic_url": ""}])
    note = await progress(small_case.id, (await Resident.get(name="钱物业")).id, "已订灯泡", NOW,
                          photos=[{"media_id": "matrix-photo", "pic_url": ""}])
    private_case = await report_case(reporter=me, category="dispute", description="楼上噪音", now=NOW)
    big_case = await report_case(reporter=me, category="parking", description="车位不够", now=NOW)
    agenda_item = await AgendaItem.get(case_id=big_case.id)
    volunteer = await Resident.get(name="孙志愿")
    volunteer_grant = await StaffRole.get(resident_id=volunteer.id, role=Role.VOLUNTEER)
    people = {
        "unbound": None, "self": me, "elder": elder, "stranger": stranger,
        "grid": await Resident.get(name="李网格"), "grid_other": await Resident.get(name="赵网格"),
        "staff": await Resident.get(name="周社工"), "staff_other": other_staff, "subdistrict": sub_staff,
        "admin": admin, "volunteer": volunteer,
    }
    for actor, person in people.items():
        await _session(client, world, actor, person)
    world.ids = {"elder": elder.id, "me": me.id, "link": link.id, "pending_link": pending_link.id,
                 "fact": fact.id, "data_request": data_request.id, "grant": volunteer_grant.id,
                 "mijia": mijia.id, "building": (await Building.get(name="3号楼")).id,
                 "building_1": building_1.id, "notice": notice.id, "service_day": service_day.id,
                 "case": small_case.id, "private_case": private_case.id, "big_case": big_case.id,
                 "session": agenda_item.session_id, "agenda_item": agenda_item.id,  # type: ignore[attr-defined]
                 "progress": (await CaseEvent.get(case_id=note.id, kind=EventKind.PROGRESS)).id, "first": 1}
    world.ids.update(await matrix_wishes(me, elder, volunteer, NOW))
    world.ids.update(await matrix_redemption(me, elder, NOW))
    world.ids.update(await matrix_love_bank(elder, NOW))
    world.ids.update(await matrix_activities(volunteer, NOW))
    world.ids.update(await matrix_canteen(me, elder, NOW))
    world.ids.update(await matrix_errands(me, elder, volunteer, NOW))
    world.ids.update(await matrix_riders(elder, volunteer, NOW))
    return world


# Expected statuses. Readers: the person, their proxy, staff who see residents in scope.
# Writers: the person, their proxy, staff whose role verifies in scope.
def everyone(ok: int, *, anon: int = 401, unbound: int | None = None) -> dict[str, int]:
    row = dict.fromkeys(ACTORS, ok)
    row["anon"] = anon
    if unbound is not None:
        row["unbound"] = unbound
    return row


def only(ok: int, *allowed: str, denied: int = 404) -> dict[str, int]:
    row = dict.fromkeys(ACTORS, denied)
    row.update(anon=401, unbound=409)
    row.update(dict.fromkeys(allowed, ok))
    return row


READERS = ("self", "elder", "grid", "staff", "subdistrict", "admin")
WRITERS = ("self", "elder", "staff", "subdistrict")
VERIFIERS = ("staff", "subdistrict")
MIJIA = ("self", "elder", "grid", "grid_other", "staff", "volunteer")  # who lives in 米家社区
CANTEEN = ("staff", "subdistrict")  # who runs 米家's canteen (its community's and the sub-district's staff)
DINER = ("self", "elder", *CANTEEN)  # the elder, her proxy and the canteen's staff
ERRAND_SEES = ("self", "elder", "staff", "subdistrict")  # her side, her community's staff, the sub-district's


Body = Callable[[World], Any]


@dataclass
class Row:
    method: str
    path: str
    expect: dict[str, int]
    target: dict[str, str] = field(default_factory=dict)  # path parameter → world id
    body: Body | None = None
    query: str | Callable[[World], str] = ""  # appended to the path, e.g. "category=lighting"


def _login_body(world: World) -> dict[str, str]:
    code = f"matrix-login-{next(_numbers)}"
    world.fake.add_login_code(code, f"mp-new-{code}", None)
    return {"code": code}


def _phone_body(world: World) -> dict[str, Any]:
    code = f"matrix-phone-{next(_numbers)}"
    world.fake.add_phone_code(code, f"139{next(_numbers):08d}")
    return {"code": code, "consent": True}


TABLE: list[Row] = [
    Row("POST", "/auth/login", everyone(200, anon=200), body=_login_body),
    Row("POST", "/auth/phone", everyone(200), body=_phone_body),
    Row("POST", "/auth/logout", everyone(204)),
    Row("GET", "/me", everyone(200)),
    Row("GET", "/buildings", everyone(200)),
    Row("POST", "/me/binding", everyone(409) | {"anon": 401, "unbound": 201},
        body=lambda w: {"consent": True, "name": "新居民", "mobile": "13977776666",
                        "building_id": w.ids["building"], "unit": "1", "room": "909"}),
    Row("DELETE", "/me/binding", everyone(204)),
    Row("GET", "/residents", everyone(200, unbound=409)),
    Row("GET", "/residents/{resident_id}", only(200, *READERS), {"resident_id": "elder"}),
    Row("PATCH", "/residents/{resident_id}", only(200, *WRITERS), {"resident_id": "elder"},
        body=lambda w: {"mobility": "delivery"}),
    Row("GET", "/residents/{resident_id}/facts", only(200, *READERS), {"resident_id": "elder"}),
    Row("POST", "/residents/{resident_id}/facts", only(201, *WRITERS), {"resident_id": "elder"},
        body=lambda w: {"code": "lives_alone"}),
    Row("POST", "/facts/{fact_id}/decision", only(200, *VERIFIERS), {"fact_id": "fact"},
        body=lambda w: {"approve": True}),
    Row("GET", "/residents/{resident_id}/actions", only(200, *READERS), {"resident_id": "elder"}),
    Row("GET", "/proxy-links", everyone(200, unbound=409)),
    Row("POST", "/proxy-links", everyone(202, unbound=409) | {"elder": 409},
        body=lambda w: {"elder_name": "王秀兰", "elder_mobile": "13904180011", "relation": "子女"}),
    # the pending link asks the elder; the asking side (the stranger) cannot confirm it
    Row("POST", "/proxy-links/{link_id}/decision", only(200, "elder", "grid", *VERIFIERS) | {"stranger": 409},
        {"link_id": "pending_link"}, body=lambda w: {"approve": True}),
    Row("DELETE", "/proxy-links/{link_id}", only(200, "self", "elder", "grid", *VERIFIERS), {"link_id": "link"}),
    Row("GET", "/me/consents", everyone(200)),
    Row("POST", "/me/subscriptions", everyone(201), body=lambda w: {"template_ids": ["tpl-sub-notice"]}),
    Row("POST", "/me/consents", everyone(201), body=lambda w: {"accept": True}),
    Row("POST", "/residents/{resident_id}/data-requests", only(201, "self", "elder"), {"resident_id": "elder"},
        body=lambda w: {"kind": "deletion"}),
    Row("GET", "/data-requests", everyone(200, unbound=409)),
    Row("POST", "/data-requests/{request_id}/erase", only(200, *VERIFIERS), {"request_id": "data_request"},
        body=lambda w: {"confirm": True}),
    Row("DELETE", "/data-requests/{request_id}", only(200, "self", "elder"), {"request_id": "data_request"}),
    Row("GET", "/staff", everyone(200, unbound=409)),
    Row("POST", "/staff", only(201, "staff", "subdistrict", "admin"),
        body=lambda w: {"resident_id": w.ids["me"], "role": "volunteer", "scope_id": w.ids["mijia"]}),
    Row("DELETE", "/staff/{grant_id}", only(200, "staff", "subdistrict", "admin"), {"grant_id": "grant"}),
    # announcements: staff who may address that building (its community's staff, its grid's worker)
    Row("POST", "/announcements", only(201, "staff", "grid"),
        body=lambda w: {"audience": "building", "audience_id": w.ids["building_1"], "title": "停电", "text": "检修"}),
    Row("GET", "/announcements/{notice_id}", only(200, "staff", "grid"), {"notice_id": "notice"}),
    # service days: everyone sees their own community's; its residents say what they come for; its staff plan
    Row("GET", "/service-days", everyone(200, unbound=409)),
    Row("PUT", "/service-days/{day_id}/intent", only(200, *MIJIA), {"day_id": "service_day"},
        body=lambda w: {"item": "医保参保"}),
    Row("POST", "/service-days", only(201, "staff"),
        body=lambda w: {"community_id": w.ids["mijia"], "date": "2026-12-11", "place": "3号楼前", "starts": "09:00",
                        "ends": "11:00", "staff": "周社工", "items": ["困难认定"]}),
    Row("GET", "/communities/{community_id}/service-days", only(200, "staff"), {"community_id": "mijia"}),
    Row("GET", "/communities/{community_id}/service-day-settings", only(200, "staff"), {"community_id": "mijia"}),
    Row("PUT", "/communities/{community_id}/service-day-settings", only(200, "staff"), {"community_id": "mijia"},
        body=lambda w: {"eve_at": "17:30", "day_at": "08:30"}),
    # -- 逢六说事 cases (handlers/cases_api.py)
    # Anyone bound reports (about their own building) and asks for similar cases near their own.
    # A case: its reporter and handlers (grid worker, community and sub-district staff of a small one)
    # see it, a private one only its reporter and community staff (and the grid's mediator); "me too"
    # is for its community; feedback waits for a resolution; only the level in charge (community staff,
    # for the big case) acts, other handlers are told 409. The admin handles no cases: 404 like anyone.
    Row("POST", "/cases", everyone(201, unbound=409),
        body=lambda w: {"category": "lighting", "description": "路灯不亮", "client_token": "matrix-1"}),
    Row("GET", "/cases/similar", everyone(200, unbound=409), query="category=lighting"),
    Row("GET", "/cases", everyone(200, unbound=409)),
    Row("GET", "/cases/{case_id}", only(200, "self", "staff"), {"case_id": "private_case"}),
    # its photos (our stored copies): whoever sees the whole case, the reporter and its handlers
    Row("GET", "/cases/{case_id}/photos/{index}", only(200, "self", "grid", "staff", "subdistrict"),
        {"case_id": "case", "index": "first"}),
    Row("GET", "/cases/{case_id}/events/{event_id}/photos/{index}", only(200, "self", "grid", "staff", "subdistrict"),
        {"case_id": "case", "event_id": "progress", "index": "first"}),
    Row("POST", "/cases/{case_id}/join", only(200, *MIJIA), {"case_id": "case"}, body=lambda w: {}),
    Row("POST", "/cases/{case_id}/in-person", only(200, "self"), {"case_id": "case"}, body=lambda w: {}),
    Row("POST", "/cases/{case_id}/info", only(200, "self"), {"case_id": "case"}, body=lambda w: {"text": "在二楼"}),
    Row("POST", "/cases/{case_id}/feedback", only(409, "self"), {"case_id": "case"},
        body=lambda w: {"fixed": "fixed", "rating": 5}),
    Row("POST", "/cases/{case_id}/actions", only(200, "staff") | {"grid": 409, "subdistrict": 409},
        {"case_id": "big_case"}, body=lambda w: {"action": "accept"}),
    Row("GET", "/communities/{community_id}/case-settings", only(200, "staff", "subdistrict"),
        {"community_id": "mijia"}),
    Row("PUT", "/communities/{community_id}/case-settings", only(200, "staff", "subdistrict"),
        {"community_id": "mijia"},
        body=lambda w: {"chains": {"private": ["mediator", "community"], "small": ["property", "grid", "community"],
                                   "big": ["community", "sub_district"]},
                        "classes": {"noise": "small"}, "property_days": {"lift": 2}, "level_days": {"grid": 3},
                        "outcome_days": 10, "working_days": True}),
    # -- sessions and roundup (handlers/case_sessions.py)
    # the community's staff run its sessions; its residents read the coming one's public agenda
    Row("GET", "/communities/{community_id}/sessions", only(200, "staff"), {"community_id": "mijia"}),
    Row("GET", "/communities/{community_id}/sessions/next", only(200, *MIJIA), {"community_id": "mijia"}),
    Row("POST", "/sessions/{session_id}/items", only(201, "staff"), {"session_id": "session"},
        body=lambda w: {"case_id": w.ids["case"], "reason": "多户反映"}),
    Row("POST", "/agenda-items/{item_id}/drop", only(200, "staff"), {"item_id": "agenda_item"},
        body=lambda w: {"reason": "已由物业答复"}),
    # the session (12月6日) is still ahead of the world's clock: staff pass the scope check, the rule refuses
    Row("POST", "/agenda-items/{item_id}/outcome", only(409, "staff"), {"item_id": "agenda_item"},
        body=lambda w: {"text": "施划车位", "owner": "物业公司", "due": "2026-12-20"}),
    Row("POST", "/sessions/{session_id}/held", only(409, "staff"), {"session_id": "session"}),
    # -- figures (handlers/case_figures.py)
    # this week's figures of the caller's own widest unit (?format=xlsx: the same as a spreadsheet): grid
    # workers, community and sub-district staff; anyone else has no unit (a unit outside one's scope: 404 too,
    # tests/test_case_figures.py)
    Row("GET", "/case-figures", only(200, "grid", "grid_other", "staff", "staff_other", "subdistrict")),
    # -- 微心愿 (handlers/wishes.py): the elder's open wish and her wish the volunteer said is done, and self's
    # wish the volunteer claimed. 米家's people see them (the public side); self acts for the elder, the grid worker
    # and community staff look after her; only the volunteer may claim; staff confirm only for a resident without
    # WeChat (she has the mini-program) or 7 days after the volunteer said it was done.
    Row("GET", "/wishes", everyone(200, unbound=409)),
    Row("POST", "/wishes", everyone(201, unbound=409), body=lambda w: {"text": "想请人帮忙贴春联"}),
    Row("GET", "/wishes/{wish_id}", only(200, *MIJIA), {"wish_id": "wish_open"}),
    Row("POST", "/wishes/{wish_id}/claim", only(409, *MIJIA) | {"volunteer": 200}, {"wish_id": "wish_open"}),
    Row("POST", "/wishes/{wish_id}/release", only(409, *MIJIA) | {"volunteer": 200}, {"wish_id": "wish_claimed"}),
    Row("POST", "/wishes/{wish_id}/fulfil", only(409, *MIJIA) | {"volunteer": 200}, {"wish_id": "wish_claimed"}),
    Row("POST", "/wishes/{wish_id}/confirm", only(409, *MIJIA) | {"self": 200, "elder": 200}, {"wish_id": "wish_done"}),
    Row("POST", "/wishes/{wish_id}/reject", only(409, *MIJIA) | {"self": 200, "elder": 200}, {"wish_id": "wish_done"},
        body=lambda w: {"reason": "还是不亮"}),
    Row("POST", "/wishes/{wish_id}/cancel", only(409, *MIJIA) | {"self": 200, "elder": 200, "grid": 200, "staff": 200},
        {"wish_id": "wish_open"}, body=lambda w: {"reason": "内容不当"}),
    # -- 兑换 (handlers/redemption.py): self holds 170 points, an unused voucher (MATRIX_CODE) for the community's own
    # haircut and a pending donation to the elder. Everyone bound lists their community's catalogue and their own
    # vouchers; 米家's staff manage its catalogue and take its own items' vouchers (a shop's clerk takes the shop's);
    # only self affords the oil (米家's other people have no points: 409; other communities cannot redeem it: 404),
    # and only self has points to give (the elder would give to herself: 409).
    Row("GET", "/catalogue", everyone(200, unbound=409)),
    Row("POST", "/catalogue", only(201, "staff"),
        body=lambda w: {"community_id": w.ids["mijia"], "kind": "goods", "name": "大米一袋", "price": 80, "stock": 10,
                        "valid_days": 30}),
    Row("PATCH", "/catalogue/{item_id}", only(200, "staff"), {"item_id": "catalogue_item"},
        body=lambda w: {"stock": 9}),
    Row("POST", "/redemptions", only(409, *MIJIA) | {"self": 201}, body=lambda w: {"item_id": w.ids["catalogue_item"]}),
    Row("GET", "/vouchers", everyone(200, unbound=409)),
    Row("POST", "/vouchers/check", only(200, "staff"), body=lambda w: {"code": MATRIX_CODE}),
    Row("POST", "/vouchers/use", only(200, "staff"), body=lambda w: {"code": MATRIX_CODE}),
    Row("GET", "/vouchers/{voucher_id}", only(200, "self", "staff"), {"voucher_id": "voucher"}),
    Row("GET", "/vouchers/{voucher_id}/qr", only(200, "self", "staff"), {"voucher_id": "voucher"}),
    Row("POST", "/vouchers/{voucher_id}/cancel", only(200, "self", "staff"), {"voucher_id": "voucher"}),
    Row("POST", "/donations", everyone(409, unbound=409) | {"self": 201},
        body=lambda w: {"recipient_mobile": "13904180011", "amount": 10}),
    Row("POST", "/donations/{donation_id}/confirm", only(200, "self"), {"donation_id": "donation"}),
    Row("POST", "/donations/{donation_id}/cancel", only(200, "self"), {"donation_id": "donation"}),
    # -- 爱心银行 hub, figures, corrections (handlers/love_bank.py): everyone bound has points; settings and
    # corrections are for the community's staff (the elder's entry, her record); figures for community staff
    # (their own community) and sub-district staff; a statement for the member, her proxy and her community's staff
    Row("GET", "/points", everyone(200, unbound=409)),
    Row("PUT", "/points/preferences", everyone(200, unbound=409), body=lambda w: {"named_in_rankings": True}),
    Row("GET", "/love-bank/settings", only(200, "staff", "staff_other")),  # no community_id: their own
    Row("PUT", "/love-bank/settings", only(200, "staff", "staff_other"), body=lambda w: {"wish_points": 12}),
    Row("GET", "/ledger/entries", only(200, "staff"), query=lambda w: f"resident_id={w.ids['elder']}"),
    Row("POST", "/ledger/entries/{entry_id}/reverse", only(201, "staff"), {"entry_id": "love_entry"},
        body=lambda w: {"reason": "记错了人"}),
    Row("POST", "/ledger/adjustments", only(201, "staff"),
        body=lambda w: {"resident_id": w.ids["elder"], "amount": 5, "reason": "补记", "client_token": "matrix-adj"}),
    Row("GET", "/love-bank/figures", only(200, "staff", "staff_other", "subdistrict")),
    Row("GET", "/love-bank/statement", only(200, "self", "elder", "staff"),
        query=lambda w: f"resident_id={w.ids['elder']}"),
    # -- 活动 (handlers/activities.py): 吴组织's activity tomorrow and one running now, the volunteer signed up for
    # both (not checked in; an hour declared on the running one). 米家's people see and join them; its community
    # staff run them (an organiser only their own); only the volunteer has a place to give back, check in or declare.
    Row("POST", "/activities", only(201, "staff"),
        body=lambda w: {"community_id": w.ids["mijia"], "title": "清扫楼道", "kind": "environment", "place": "3号楼",
                        "date": "2026-11-29", "starts": "09:00", "ends": "11:00", "slots": 5}),
    Row("GET", "/activities", everyone(200, unbound=409)),
    Row("GET", "/activities/{activity_id}", only(200, *MIJIA), {"activity_id": "activity"}),
    Row("POST", "/activities/{activity_id}/cancel", only(200, "staff"), {"activity_id": "activity"},
        body=lambda w: {"reason": "场地检修"}),
    Row("POST", "/activities/{activity_id}/signup", only(200, *MIJIA), {"activity_id": "activity"}),
    Row("DELETE", "/activities/{activity_id}/signup", only(200, "volunteer"), {"activity_id": "activity"}),
    Row("GET", "/activities/{activity_id}/checkin-qr", only(200, "staff"), {"activity_id": "activity"}),
    Row("POST", "/activities/{activity_id}/checkin", only(409, *MIJIA) | {"volunteer": 200}, {"activity_id": "running"},
        body=lambda w: {"code": MATRIX_CHECKIN_CODE}),
    Row("POST", "/activities/{activity_id}/hours", only(409, *MIJIA) | {"volunteer": 200}, {"activity_id": "running"},
        body=lambda w: {"minutes": 90, "note": "提前到了"}),
    Row("GET", "/activities/{activity_id}/signups", only(200, "staff"), {"activity_id": "activity"}),
    Row("POST", "/activities/{activity_id}/signups/{signup_id}/attendance", only(200, "staff"),
        {"activity_id": "running", "signup_id": "running_signup"}, body=lambda w: {"attended": True}),
    Row("POST", "/activities/{activity_id}/signups/{signup_id}/review", only(200, "staff"),
        {"activity_id": "running", "signup_id": "running_signup"}, body=lambda w: {"approve": True}),
    # -- 幸福食堂 (handlers/canteen_api.py): today's lunch (open until 09:30), the elder's booking of it (self acts for
    # her), her standing order, a closed day. 米家's community staff and the sub-district's staff run the canteen;
    # menus and price rules are public; whatever is about the elder is for her, self and the canteen's staff. The
    # meal is not served before its cut-off (409); the elder has no verified status for a monthly card (409).
    Row("GET", "/canteen/canteens", everyone(200, unbound=409)),
    Row("GET", "/canteen/canteens/{canteen_id}/settings", only(200, *CANTEEN), {"canteen_id": "canteen"}),
    Row("PUT", "/canteen/canteens/{canteen_id}/settings", only(200, *CANTEEN), {"canteen_id": "canteen"},
        body=lambda w: {"no_show_pays": False}),
    Row("PUT", "/canteen/canteens/{canteen_id}/slots", only(200, *CANTEEN), {"canteen_id": "canteen"},
        body=lambda w: {"meal": "dinner", "capacity": 50}),
    Row("POST", "/canteen/canteens/{canteen_id}/closed-days", only(201, *CANTEEN), {"canteen_id": "canteen"},
        body=lambda w: {"day": "2026-12-05", "reason": "检修"}),
    Row("DELETE", "/canteen/closed-days/{closed_day_id}", only(200, *CANTEEN), {"closed_day_id": "closed_day"}),
    Row("GET", "/canteen/canteens/{canteen_id}/menus", everyone(200, unbound=409), {"canteen_id": "canteen"}),
    Row("POST", "/canteen/canteens/{canteen_id}/menus", only(201, *CANTEEN), {"canteen_id": "canteen"},
        body=lambda w: {"day": "2026-12-01", "meal": "lunch", "dishes": [{"name": "红烧肉"}], "price_fen": 1200}),
    Row("POST", "/canteen/menus/{menu_id}/withdraw", only(200, *CANTEEN), {"menu_id": "menu"},
        body=lambda w: {"reason": "食材未到"}),
    Row("POST", "/canteen/bookings", only(201, *DINER), body=lambda w: {"menu_id": w.ids["menu"],
                                                                       "for_resident_id": w.ids["elder"]}),
    Row("GET", "/canteen/bookings", only(200, *DINER), query=lambda w: f"for_resident_id={w.ids['elder']}"),
    Row("GET", "/canteen/bookings/{booking_id}", only(200, *DINER), {"booking_id": "meal_booking"}),
    Row("GET", "/canteen/bookings/{booking_id}/qr", only(200, *DINER), {"booking_id": "meal_booking"}),
    Row("POST", "/canteen/bookings/{booking_id}/cancel", only(200, *DINER), {"booking_id": "meal_booking"},
        body=lambda w: {}),
    Row("POST", "/canteen/bookings/{booking_id}/offer", only(409, *DINER), {"booking_id": "meal_booking"},
        body=lambda w: {"accept": False}),
    Row("GET", "/canteen/wallet", only(200, *DINER), query=lambda w: f"for_resident_id={w.ids['elder']}"),
    Row("POST", "/canteen/canteens/{canteen_id}/top-ups", only(201, *CANTEEN), {"canteen_id": "canteen"},
        body=lambda w: {"resident_id": w.ids["elder"], "amount_fen": 1000, "method": "cash", "receipt_no": "M-1"}),
    Row("POST", "/canteen/canteens/{canteen_id}/refunds", only(201, *CANTEEN), {"canteen_id": "canteen"},
        body=lambda w: {"resident_id": w.ids["elder"], "amount_fen": 100, "method": "cash", "receipt_no": "M-2"}),
    Row("GET", "/canteen/cards", only(200, *DINER), query=lambda w: f"for_resident_id={w.ids['elder']}"),
    Row("POST", "/canteen/cards", only(409, *DINER), body=lambda w: {"month": "2026-12",
                                                                    "for_resident_id": w.ids["elder"]}),
    Row("GET", "/canteen/standing-orders", only(200, *DINER), query=lambda w: f"for_resident_id={w.ids['elder']}"),
    Row("POST", "/canteen/standing-orders", only(201, *DINER),
        body=lambda w: {"meals": ["lunch"], "weekdays": [1, 2], "for_resident_id": w.ids["elder"]}),
    Row("DELETE", "/canteen/standing-orders/{order_id}", only(200, *DINER), {"order_id": "standing"}),
    Row("GET", "/canteen/diner", only(200, *DINER), query=lambda w: f"for_resident_id={w.ids['elder']}"),
    Row("PUT", "/canteen/diner", only(200, *DINER), body=lambda w: {"for_resident_id": w.ids["elder"],
                                                                   "diet": ["soft"]}),
    Row("POST", "/canteen/serve", only(409, *CANTEEN), body=lambda w: {"code": MATRIX_MEAL_CODE}),
    Row("GET", "/canteen/menus/{menu_id}/bookings", only(200, *CANTEEN), {"menu_id": "menu"}),
    Row("GET", "/canteen/menus/{menu_id}/kitchen", only(200, *CANTEEN), {"menu_id": "menu"}),
    Row("GET", "/canteen/menus/{menu_id}/kitchen-sheet", only(200, *CANTEEN), {"menu_id": "menu"}),
    Row("GET", "/canteen/canteens/{canteen_id}/figures", only(200, *CANTEEN), {"canteen_id": "canteen"}),
    Row("GET", "/canteen/canteens/{canteen_id}/price-rules", everyone(200, unbound=409), {"canteen_id": "canteen"}),
    Row("POST", "/canteen/canteens/{canteen_id}/price-rules", only(201, *CANTEEN), {"canteen_id": "canteen"},
        body=lambda w: {"kind": "flat", "params": {"price_fen": 500}, "effective_from": "2026-12-01",
                        "reason": "调价"}),
    # -- 红色代办 (handlers/errands_api.py): 王秀兰's errands, each asked by self (her family proxy), one per step
    # (tests/test_errands_api.py matrix_errands); 周社工 (community staff) is their steward, the volunteer also a red
    # proxy of her grid. Her side, 米家's staff and the sub-district's staff see an errand; the steward's steps are
    # 周社工's, the proxy's the volunteer's, the confirmation hers; the photo's bytes only the assigned steward's.
    # Anyone else: 404. The catalogue, settings and the view log are for community staff; the ledger for the
    # community's and the sub-district's staff; a steward's queue for stewards (community staff are stewards).
    Row("GET", "/errands/items", everyone(200, unbound=409)),
    Row("POST", "/errands/items", only(201, "staff"),
        body=lambda w: {"community_id": w.ids["mijia"], "name": "上门理发", "documents": ["身份证"],
                        "first_response_minutes": 60, "expected_days": 3}),
    Row("PUT", "/errands/items/{item_id}", only(200, "staff"), {"item_id": "errand_item"},
        body=lambda w: {"name": "低保申请", "documents": ["身份证", "户口本"], "first_response_minutes": 60,
                        "expected_days": 30}),
    Row("GET", "/errands/settings", only(200, "staff", "staff_other")),  # no community_id: their own
    Row("PATCH", "/errands/settings", only(200, "staff", "staff_other"), body=lambda w: {"offer_minutes": 45}),
    # for her: herself, her family proxy, her community's stewards and staff, her grid's worker
    Row("POST", "/errands", only(201, "self", "elder", "grid", "staff"),
        body=lambda w: {"item_id": w.ids["errand_new_item"], "for_resident_id": w.ids["elder"]}),
    Row("GET", "/errands", only(200, "self", "elder"), query=lambda w: f"for_resident_id={w.ids['elder']}"),
    Row("GET", "/errands/queue", only(200, "staff", "staff_other")),
    Row("GET", "/errands/department-queue", only(200)),  # no department staff among the callers
    Row("GET", "/errands/proxy-tasks", only(200, "volunteer")),
    Row("GET", "/errands/ledger", only(200, "staff", "subdistrict"), query=lambda w: f"community_id={w.ids['mijia']}"),
    Row("GET", "/errands/figures", only(200, "staff", "staff_other", "subdistrict")),  # each their widest
    Row("GET", "/errands/{errand_id}", only(200, *ERRAND_SEES), {"errand_id": "errand"}),
    Row("POST", "/errands/{errand_id}/photos", only(201, "self", "elder"), {"errand_id": "errand"},
        body=lambda w: {"document": "户口本", "media_id": "matrix-photo"}),
    Row("GET", "/errands/{errand_id}/photos/{photo_id}", only(200, "staff"),
        {"errand_id": "errand", "photo_id": "errand_photo"}),
    Row("POST", "/errands/{errand_id}/take", only(200, "staff"), {"errand_id": "errand"}),
    Row("POST", "/errands/photos/{photo_id}/review", only(200, "staff"), {"photo_id": "errand_photo"},
        body=lambda w: {"accept": True}),
    Row("POST", "/errands/{errand_id}/transfer", only(200, "staff"), {"errand_id": "errand_ready"},
        body=lambda w: {}),
    Row("POST", "/errands/{errand_id}/progress", only(200, "staff"), {"errand_id": "errand_transferred"},
        body=lambda w: {"progress": "received"}),
    Row("POST", "/errands/{errand_id}/require-proxy", only(200, "staff"), {"errand_id": "errand"},
        body=lambda w: {}),
    Row("POST", "/errands/{errand_id}/offer/accept", only(200, "volunteer"), {"errand_id": "errand_offered"},
        body=lambda w: {}),
    Row("POST", "/errands/{errand_id}/proxy", only(200, "staff"), {"errand_id": "errand"},
        body=lambda w: {"proxy_id": w.ids["red_proxy"]}),
    Row("POST", "/errands/{errand_id}/custody", only(201, "volunteer"), {"errand_id": "errand_transferred"},
        body=lambda w: {"document": "户口本", "note": "原件核验"}),
    Row("POST", "/errands/custody/{entry_id}/return", only(200, "volunteer"), {"entry_id": "custody_entry"},
        body=lambda w: {}),
    # the red proxy brings the result to her door: those who see the errand are told so (409)
    Row("POST", "/errands/{errand_id}/deliver", only(409, *ERRAND_SEES) | {"volunteer": 200},
        {"errand_id": "errand_result"}, body=lambda w: {}),
    Row("POST", "/errands/{errand_id}/confirm", only(200, "self", "elder"), {"errand_id": "errand_delivered"},
        body=lambda w: {"rating": 5}),
    Row("POST", "/errands/{errand_id}/cancel", only(200, "self", "elder", "staff"), {"errand_id": "errand"},
        body=lambda w: {"reason": "不需要了"}),
    Row("POST", "/errands/{errand_id}/link", only(201, "staff"), {"errand_id": "errand"}, body=lambda w: {}),
    Row("GET", "/errands/{errand_id}/views", only(200, "staff"), {"errand_id": "errand"}),
    # -- 先锋骑士 (handlers/riders_api.py): tomorrow's lunch and Monday's dinner were cut off into delivery routes
    # (tests/test_riders_api.py matrix_riders) and the volunteer is also 米家's pioneer rider. Riders list and
    # claim the routes, the route's rider marks its stops; the canteen's staff (米家's and the sub-district's)
    # see a route too, but may not give the volunteer's back (409). 刘桂芳's open welfare alert (5号楼, 第二网格)
    # is for her grid's worker and 米家's staff; the settings for community staff (their own); the figures for
    # the community's, its canteen's and the sub-district's staff (each their own). Anyone else: 404.
    Row("GET", "/riders/settings", only(200, "staff", "staff_other")),
    Row("PATCH", "/riders/settings", only(200, "staff", "staff_other"), body=lambda w: {"points": 12}),
    Row("GET", "/riders/routes", only(200, "volunteer")),
    Row("GET", "/riders/routes/{route_id}", only(200, "volunteer", *CANTEEN), {"route_id": "route_open"}),
    Row("POST", "/riders/routes/{route_id}/claim", only(200, "volunteer"), {"route_id": "route_open"}),
    Row("POST", "/riders/routes/{route_id}/release", only(409, *CANTEEN) | {"volunteer": 200},
        {"route_id": "route_claimed"}),
    Row("POST", "/riders/stops/{stop_id}/delivered", only(200, "volunteer"), {"stop_id": "stop_pending"},
        body=lambda w: {"photo": {"media_id": "matrix-photo"}}),
    Row("POST", "/riders/stops/{stop_id}/not-home", only(200, "volunteer"), {"stop_id": "stop_pending"},
        body=lambda w: {"note": "敲门无人应答"}),
    Row("GET", "/riders/alerts", everyone(200, unbound=409)),
    Row("POST", "/riders/alerts/{alert_id}/close", only(200, "grid_other", "staff"), {"alert_id": "alert"},
        body=lambda w: {"outcome": "已电话联系，老人平安"}),
    Row("GET", "/riders/figures", only(200, "staff", "staff_other", "subdistrict")),  # each their own
]

ROWS = [pytest.param(row, id=f"{row.method} {row.path}") for row in TABLE]


def test_every_endpoint_has_a_row() -> None:
    registered = {(r.method, r.path) for router in API_ROUTERS for r in router.routes}
    tabled = [(row.method, row.path) for row in TABLE]
    assert len(tabled) == len(set(tabled)), "an endpoint has two rows"
    assert registered - set(tabled) == set(), "endpoints without a row in the authorization matrix"
    assert set(tabled) - registered == set(), "rows for endpoints that do not exist"
    for row in TABLE:
        assert set(row.expect) == set(ACTORS), f"{row.method} {row.path} does not name every caller"


def callers(row: Row) -> list[str]:
    """The callers in the order they call: those refused first (a refusal must change nothing, so the
    world stays as built for the next), then those allowed (each on a world built afresh when the
    call before changed it)."""
    return sorted(ACTORS, key=lambda actor: row.expect[actor] < 400)


async def rebuild_world(client: Any) -> World:
    """An empty database and store again, then the demo and the world (inside the running app)."""
    from models.demo import load_demo

    conn = connections.get("default")
    tables = [m._meta.db_table for m in Tortoise.apps.get_models_iterable()]  # type: ignore[union-attr]
    if conn.capabilities.dialect == "postgres":
        await conn.execute_script(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE;")
    else:
        await conn.execute_script("PRAGMA foreign_keys=OFF;" + "".join(f"DELETE FROM {t};" for t in tables)
                                  + "PRAGMA foreign_keys=ON;")
    await client.app[SERVICES].store.flushdb()
    await load_demo(datetime(2026, 11, 1, tzinfo=UTC))
    return await build_world(client)


@pytest.mark.parametrize("row", ROWS)
async def test_authorization(client: Any, demo: None, row: Row) -> None:
    """Every caller of one endpoint gets the status the table says; a 404 looks like a missing object.

    The world is built once per endpoint and again only after a call that may have changed it (a
    write that succeeded), so every call still meets the world exactly as built."""
    world = await build_world(client)
    changed = False
    wrong: list[str] = []
    for actor in callers(row):
        if changed:
            world = await rebuild_world(client)
        path = row.path
        for name, ref in row.target.items():
            path = path.replace("{" + name + "}", str(world.ids[ref]))
        headers = {"Authorization": f"Bearer {world.tokens[actor]}"} if actor != "anon" else {}
        body = row.body(world) if row.body else None
        query = row.query(world) if callable(row.query) else row.query
        resp = await client.request(row.method, "/api/v1" + path + ("?" + query if query else ""), json=body,
                                    headers=headers)
        text = await resp.text(errors="replace")  # a photo is bytes
        changed = row.method != "GET" and resp.status < 400
        if resp.status != row.expect[actor]:
            wrong.append(f"{row.method} {path} as {actor}: {resp.status} (expected {row.expect[actor]}) {text[:300]}")
        elif resp.status == 404 and (await resp.json())["error"] != "not_found":
            wrong.append(f"{row.method} {path} as {actor}: a 404 that is not the missing-object answer: {text[:300]}")
    assert not wrong, "\n".join(wrong)
