"""逢六说事 through /api/v1 as the mini-program sees it: report (and retry), me too, my cases, the
handler's queue and steps, feedback, who sees what, and the community's case settings."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from bot.api import create_session
from bot.app import SERVICES
from bot.clock import FrozenClock
from models.cases import Case, CaseSettings
from models.places import Building, Community
from models.proxies import Action, decide_link, request_link
from models.residents import Resident, WechatAccount
from models.roles import Role, grant
from tests.api import MiniProgram

pytestmark = pytest.mark.usefixtures("demo")
SHANGHAI = ZoneInfo("Asia/Shanghai")
LIGHT = {"category": "lighting", "description": "3单元楼道灯坏了"}


async def phone(client: Any, name: str) -> MiniProgram:
    """A mini-program session of a demo person (or a new resident of 1号楼 under that name)."""
    person = await Resident.get_or_none(name=name)
    if person is None:
        building = await Building.get(name="1号楼")
        person = await Resident.create(name=name, mobile=f"139555{await Resident.all().count():05d}",
                                       community_id=building.community_id, building=building,  # type: ignore[attr-defined]
                                       unit="3", room="201", status="verified", created_at=datetime.now(SHANGHAI))
    account, _ = await WechatAccount.get_or_create(openid=f"mp-{person.id}", defaults={
        "channel": "mp", "resident": person, "created_at": datetime.now(SHANGHAI)})
    mp = MiniProgram(client, account.openid)
    mp.token = await create_session(client.app[SERVICES].store, account, 1)
    return mp


async def post_case(mp: MiniProgram, body: dict[str, Any], key: str | None = None) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {mp.token}"} | ({"Idempotency-Key": key} if key else {})
    resp = await mp.client.post("/api/v1/cases", json=body, headers=headers)
    return resp.status, await resp.json()


async def test_a_report_says_who_handles_it_by_when_and_a_retry_is_the_same_case(client: Any) -> None:
    me = await phone(client, "甲居民")
    photos = [{"media_id": "MEDIA_1"}, {"pic_url": "https://img.example.cn/a.jpg"}]
    status, case = await post_case(me, LIGHT | {"photos": photos}, key="tap-1")
    assert status == 201
    assert case["number"] == str(case["id"]) and case["handler"] == "物业公司" and case["klass_label"] == "小事"
    # Friday 09:00 + 3 working days (lighting) → Wednesday 2 December
    assert datetime.fromisoformat(case["due_at"]).astimezone(SHANGHAI).date().isoformat() == "2026-12-02"
    assert "物业公司" in case["next_step"] and "12月2日" in case["next_step"]
    assert case["access"] == "reporter" and case["description"] == LIGHT["description"]
    at = f"/cases/{case['id']}/photos/"  # our copy, once the due action stored it (tests/test_case_photos.py)
    assert case["photos"] == [{"media_id": "MEDIA_1", "pic_url": None, "state": "saving", "url": at + "1"},
                              {"media_id": None, "pic_url": "https://img.example.cn/a.jpg", "state": "saving",
                               "url": at + "2"}]
    assert (await Case.get(id=case["id"])).photos == photos  # stored as WeChat gives them
    assert case["building"] == "1号楼" and case["source"] == "api"
    again_status, again = await post_case(me, LIGHT | {"photos": photos}, key="tap-1")  # the network dropped the answer
    assert again_status == 201 and again["id"] == case["id"]
    assert await Case.all().count() == 1
    other = await post_case(me, LIGHT | {"description": "另一件事"}, key="tap-1")
    assert other[0] == 422 and other[1]["fields"][0]["field"] == "header.Idempotency-Key"
    by_token = [await post_case(me, LIGHT | {"client_token": "tok-2"}) for _ in range(2)]
    assert by_token[0][1]["id"] == by_token[1][1]["id"] != case["id"]
    double_tap = await asyncio.gather(*[post_case(me, LIGHT, key="tap-3") for _ in range(3)])  # all at once
    assert {status for status, _ in double_tap} == {201} and len({c["id"] for _, c in double_tap}) == 1
    assert await Case.all().count() == 3
    mine = (await me.call("GET", "/cases")).body["items"]
    assert [(c["relation"], c["status_label"]) for c in mine] == [("reporter", "待受理")] * 3


async def test_invalid_reports_name_the_field_and_create_nothing(client: Any) -> None:
    me = await phone(client, "甲居民")
    cases = [
        ({"description": "长" * 301}, "body.description"),
        ({"photos": [{"media_id": f"M{i}"} for i in range(4)]}, "body.photos"),
        ({"category": "ufo"}, "body.category"),
        ({"photos": [{"media_id": "M1", "pic_url": "https://a.cn/x.jpg"}]}, "body.photos.0"),
        ({"photos": [{"pic_url": "http://a.cn/x.jpg"}]}, "body.photos.0.pic_url"),
        ({"location": {"lat": 91, "lon": 121.6}}, "body.location.lat"),
        ({"contact": "13912345678"}, "body.contact"),  # only for staff entry
    ]
    for change, field in cases:
        answer = await me.call("POST", "/cases", LIGHT | change)
        assert answer.status == 422, change
        assert field in {f["field"] for f in answer.body["fields"]}, (change, answer.body)
    assert await Case.all().count() == 0


async def test_similar_cases_offer_me_too_without_words_and_a_joiner_sees_the_public_side(client: Any) -> None:
    me = await phone(client, "甲居民")
    _, case = await post_case(me, {"category": "water", "description": "王家门口下水道堵了",
                                   "photos": [{"media_id": "M1"}]})
    await post_case(me, {"category": "dispute", "description": "楼上吵架"})  # private: never offered
    neighbour = await phone(client, "张德福")  # 2号楼, 83 m away
    near = await neighbour.call("GET", "/cases/similar", category="water")
    assert near.body["items"] == [{"id": case["id"], "category_label": "下水与供水", "building": "1号楼",
                                   "date": "2026-11-27", "joins": 0}]
    assert (await neighbour.call("GET", "/cases/similar", category="dispute")).body["items"] == []
    assert (await me.call("GET", "/cases/similar", category="water")).body["items"] == []  # already mine
    assert (await neighbour.call("GET", "/cases/similar", category="water", lat=42.0216)).status == 422
    joined = await neighbour.call("POST", f"/cases/{case['id']}/join", {})
    assert joined.status == 200 and joined.body["access"] == "follower" and joined.body["joins"] == 1
    assert (await neighbour.call("POST", f"/cases/{case['id']}/join", {})).body["joins"] == 1  # once
    seen = (await neighbour.call("GET", f"/cases/{case['id']}")).body
    for private in ("description", "photos", "reporter", "location", "source", "entered_by", "rating"):
        assert seen[private] is None, private
    assert all(e["by_name"] is None and not e["photos"] for e in seen["events"])
    assert "王家" not in str(seen) and "甲居民" not in str(seen)
    listed = (await neighbour.call("GET", "/cases")).body["items"]
    assert [(c["relation"], c["description"]) for c in listed] == [("joiner", None)]
    # the reporter sees that someone joined, not who
    assert "张德福" not in str((await me.call("GET", f"/cases/{case['id']}")).body)


async def test_the_handlers_queue_puts_overdue_cases_first(client: Any, clock: FrozenClock) -> None:
    me = await phone(client, "甲居民")
    ids = {}
    for category in ("lighting", "lift", "sanitation"):  # 3, 1 and 2 working days
        ids[category] = (await post_case(me, {"category": category, "description": "坏了"}))[1]["id"]
    await (await phone(client, "张德福")).call("POST", f"/cases/{ids['sanitation']}/join", {})
    clock.set(datetime(2026, 11, 30, 10, 0, tzinfo=SHANGHAI))  # Monday: the lift's one working day is over
    queue = (await (await phone(client, "钱物业")).call("GET", "/cases", queue=1)).body["items"]
    assert [(c["id"], c["overdue"]) for c in queue] == [
        (ids["lift"], True), (ids["sanitation"], False), (ids["lighting"], False)]
    assert queue[0]["relation"] == "handler" and queue[0]["description"] == "坏了"
    assert "已超过办理期限" in queue[0]["next_step"]
    assert (await me.call("GET", "/cases", queue=1)).body["items"] == []  # handles nothing


async def test_steps_from_acceptance_to_a_rated_closure(client: Any) -> None:
    me = await phone(client, "甲居民")
    _, case = await post_case(me, LIGHT)
    path = f"/cases/{case['id']}"
    grid, prop = await phone(client, "李网格"), await phone(client, "钱物业")
    refused = await grid.call("POST", path + "/actions", {"action": "accept"})
    assert refused.status == 409 and "物业公司" in refused.body["message"]  # not the grid's turn yet
    assert (await me.call("POST", path + "/actions", {"action": "accept"})).status == 404
    missing = await prop.call("POST", path + "/actions", {"action": "resolve"})
    assert missing.status == 422 and missing.body["fields"][0]["field"] == "body.summary"
    accepted = await prop.call("POST", path + "/actions", {"action": "accept"})
    assert accepted.status == 200 and accepted.body["status"] == "in_progress"
    assert set(accepted.body["actions"]) == {"ask", "progress", "resolve", "escalate", "classify"}
    await prop.call("POST", path + "/actions", {"action": "ask", "question": "是几楼的灯？"})
    asked = (await me.call("GET", path)).body
    assert asked["open_question"] == "是几楼的灯？" and "info" in asked["actions"]
    assert (await me.call("POST", path + "/info", {"text": "三楼"})).body["open_question"] is None
    await prop.call("POST", path + "/actions", {"action": "progress", "note": "已订灯泡",
                                               "photos": [{"media_id": "P1"}]})
    resolved = await prop.call("POST", path + "/actions", {"action": "resolve", "summary": "已更换灯泡"})
    assert resolved.body["status"] == "resolved" and resolved.body["actions"] == []
    view = (await me.call("GET", path)).body
    assert view["feedback_due"] and view["actions"] == ["feedback"]
    progress = next(e for e in view["events"] if e["kind"] == "progress")
    assert progress["by_name"] == "钱物业" and progress["photos"] == [{
        "media_id": "P1", "pic_url": None, "state": "saving", "url": f"{path}/events/{progress['id']}/photos/1"}]
    no_comment = await me.call("POST", path + "/feedback", {"fixed": "not_fixed"})
    assert no_comment.status == 422 and no_comment.body["fields"][0]["field"] == "body.comment"
    assert (await me.call("POST", path + "/feedback", {"fixed": "fixed"})).status == 422  # a rating is needed
    reopened = await me.call("POST", path + "/feedback", {"fixed": "not_fixed", "comment": "还是不亮"})
    assert reopened.body["status"] == "in_progress" and "退回重办" in [e["kind_label"] for e in reopened.body["events"]]
    await prop.call("POST", path + "/actions", {"action": "resolve", "summary": "更换了线路"})
    closed = await me.call("POST", path + "/feedback", {"fixed": "fixed", "rating": 5, "comment": "谢谢"})
    assert (closed.body["status"], closed.body["rating"], closed.body["next_step"]) == ("closed", 5, "已关闭，评分5分")
    assert (await me.call("POST", path + "/feedback", {"fixed": "fixed", "rating": 4})).status == 409


async def test_escalate_and_classify_and_a_step_that_ends_ones_sight(client: Any) -> None:
    me = await phone(client, "甲居民")
    _, case = await post_case(me, LIGHT)
    path = f"/cases/{case['id']}/actions"
    prop, grid = await phone(client, "钱物业"), await phone(client, "李网格")
    up = await prop.call("POST", path, {"action": "escalate", "reason": "需要网格协调"})
    assert up.body["level"] == "grid" and any(e["detail"] == "物业公司→网格员" for e in up.body["events"])
    big = await grid.call("POST", path, {"action": "classify", "klass": "big", "reason": "涉及整栋楼线路改造"})
    assert (big.body["klass"], big.body["level"], big.body["due_at"]) == ("big", "community", None)
    assert big.body["agenda_day"] == "2026-12-06"
    private = await grid.call("POST", path, {"action": "classify", "klass": "private", "reason": "其实是邻里矛盾"})
    assert private.status == 200 and private.body["access"] == "public" and private.body["description"] is None
    assert (await grid.call("GET", f"/cases/{case['id']}")).status == 404  # a private matter is not the grid's


async def test_a_private_matter_is_seen_only_by_its_reporter_the_mediator_and_community_staff(client: Any) -> None:
    me = await phone(client, "甲居民")
    _, private = await post_case(me, {"category": "dispute", "description": "楼上每晚噪音"})
    _, small = await post_case(me, {"category": "lighting", "description": "灯坏"})
    _, big = await post_case(me, {"category": "parking", "description": "车位不够"})
    path = f"/cases/{private['id']}"
    assert (await (await phone(client, "孔调解")).call("GET", path)).body["access"] == "handler"
    assert (await (await phone(client, "周社工")).call("GET", path)).body["description"] == "楼上每晚噪音"
    for outsider in ("李网格", "冯街道", "钱物业", "张德福"):
        mp = await phone(client, outsider)
        assert (await mp.call("GET", path)).status == 404, outsider
    assert (await (await phone(client, "张德福")).call("POST", path + "/join", {})).status == 404
    # the property company sees its own (small) cases only
    prop = await phone(client, "钱物业")
    assert (await prop.call("GET", f"/cases/{small['id']}")).body["access"] == "handler"
    assert (await prop.call("GET", f"/cases/{big['id']}")).status == 404
    staff = await phone(client, "周社工")
    assert (await staff.call("GET", f"/cases/{big['id']}")).body["agenda_day"] == "2026-12-06"


async def test_a_family_proxy_reports_for_the_elder_and_follows_it(client: Any, clock: FrozenClock) -> None:
    son = await phone(client, "王建国")
    elder = await Resident.get(name="王秀兰")
    son_person = await Resident.get(name="王建国")
    link, _ = await request_link(proxy_id=son_person.id, elder_id=elder.id, relation="儿子", now=clock.now())
    await decide_link(link_id=link.id, by_id=elder.id, how="elder", approve=True, now=clock.now())
    status, case = await post_case(son, LIGHT | {"for_resident_id": elder.id})
    assert status == 201 and case["access"] == "reporter" and case["as_resident_id"] == elder.id
    assert case["reporter"]["name"] == "王秀兰" and case["entered_by"]["name"] == "王建国"
    assert (await son.call("GET", "/cases")).body["items"] == []  # his own list
    assert [c["id"] for c in (await son.call("GET", "/cases", for_resident_id=elder.id)).body["items"]] == [case["id"]]
    assert (await son.call("GET", f"/cases/{case['id']}")).body["as_resident_id"] == elder.id
    action = await Action.get(action="report_case")
    assert (action.actor_id, action.subject_id, action.proxy_link_id) == (son_person.id, elder.id, link.id)  # type: ignore[attr-defined]
    stranger = await phone(client, "路人甲")
    assert (await stranger.call("POST", "/cases", LIGHT | {"for_resident_id": elder.id})).status == 404
    assert (await stranger.call("GET", f"/cases/{case['id']}")).status == 404


async def test_staff_enter_hotline_and_office_cases_in_their_scope(client: Any) -> None:
    staff, grid2 = await phone(client, "周社工"), await phone(client, "赵网格")
    b3 = await Building.get(name="3号楼")
    hotline = await staff.call("POST", "/cases", LIGHT | {"source": "hotline", "contact": "13912349999",
                                                          "building_id": b3.id})
    assert hotline.status == 201 and hotline.body["reporter"] is None and hotline.body["contact"] == "13912349999"
    assert hotline.body["source_label"] == "12345热线" and hotline.body["entered_by"]["name"] == "周社工"
    elder = await Resident.get(name="王秀兰")  # lives in 1号楼, 第一网格
    assert (await grid2.call("POST", "/cases", LIGHT | {"source": "in_person", "resident_id": elder.id})).status == 404
    office = await staff.call("POST", "/cases", LIGHT | {"source": "in_person", "resident_id": elder.id})
    assert office.status == 201 and office.body["reporter"]["name"] == "王秀兰" and office.body["building"] == "1号楼"
    resident = await phone(client, "甲居民")
    assert (await resident.call("POST", "/cases", LIGHT | {"source": "hotline", "contact": "13912349999",
                                                           "building_id": b3.id})).status == 404
    bad = await staff.call("POST", "/cases", LIGHT | {"source": "hotline", "contact": "12345", "building_id": b3.id})
    assert bad.status == 422 and bad.body["fields"][0]["field"] == "body.contact"


SETTINGS = {"chains": {"private": ["mediator", "community"], "small": ["property", "grid", "community"],
                       "big": ["community", "sub_district"]},
            "classes": {"noise": "small"}, "property_days": {"lighting": 1}, "level_days": {"grid": 3},
            "outcome_days": 10, "working_days": False}


async def test_case_settings_are_checked_whole_and_refused_without_change(client: Any, clock: FrozenClock) -> None:
    staff = await phone(client, "周社工")
    mijia = await Community.get(name="米家社区")
    path = f"/communities/{mijia.id}/case-settings"
    before = (await staff.call("GET", path)).body
    assert before["updated_at"] is None
    assert before["chains"]["small"] == ["property", "grid", "community", "sub_district"]
    assert before["labels"]["level"]["property"] == "物业公司"
    bad = await staff.call("PUT", path, SETTINGS | {"chains": SETTINGS["chains"] | {"small": ["grid", "grid"]}})
    assert bad.status == 409 and "小事的处理层级不对" in bad.body["message"]
    unknown = await staff.call("PUT", path, SETTINGS | {"chains": SETTINGS["chains"] | {"small": ["mayor"]}})
    assert unknown.status == 422 and unknown.body["fields"][0]["field"] == "body.chains.small.0"
    too_long = await staff.call("PUT", path, SETTINGS | {"property_days": {"lighting": 61}})
    assert too_long.status == 422
    assert await CaseSettings.all().count() == 0 and (await staff.call("GET", path)).body == before
    saved = await staff.call("PUT", path, SETTINGS)
    assert saved.status == 200 and saved.body["updated_by"] == "周社工" and saved.body["classes"]["noise"] == "small"
    assert saved.body["property_days"]["lighting"] == 1 and saved.body["property_days"]["lift"] == 1  # default kept
    _, case = await post_case(await phone(client, "甲居民"), LIGHT)
    assert datetime.fromisoformat(case["due_at"]) == clock.now() + timedelta(days=1)  # calendar days now
    assert (await (await phone(client, "冯街道")).call("GET", path)).status == 200  # the sub-district above
    xinqiu = await Community.get(name="新邱社区")
    other = await phone(client, "吴社工")
    await grant(resident_id=(await Resident.get(name="吴社工")).id, role=Role.COMMUNITY_STAFF, scope_id=xinqiu.id,
                now=clock.now())
    for mp in (other, await phone(client, "李网格"), await phone(client, "钱物业")):
        assert (await mp.call("GET", path)).status == 404
        assert (await mp.call("PUT", path, SETTINGS)).status == 404
