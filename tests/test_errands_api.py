"""红色代办 through /api/v1 as the mini-program sees it: 刘桂芳 (80, lives alone) gets her 低保 application
done without leaving home — photos from WeChat's media, the steward's pre-review and a re-shoot,
the red proxy's offer, the transfer to 民政, the department's progress, the custody log, delivery
at her door, her rating and the proxy's points; the ledger and figures; and the refusals: the
wrong role, another community's steward (404 on the errand and its photos), bad input (422) and a
double tap that makes one errand. ``matrix_errands`` builds the errands of the authorization
matrix (tests/test_api_matrix.py)."""

from __future__ import annotations

import asyncio
import io
from datetime import UTC, datetime, timedelta
from typing import Any

import openpyxl
import pytest

from bot.app import SERVICES
from bot.clock import FrozenClock
from models import errand_core as core
from models import errand_docs
from models.errands import CustodyEntry, DocumentView, Errand, ErrandItem, ErrandPhoto
from models.ledger import balance, points_of
from models.outbox import OutboxMessage
from models.places import Building, Community
from models.proxies import decide_link, request_link
from models.residents import Resident
from models.roles import Role, grant
from tests.api import MiniProgram
from tests.test_redemption_api import phone, post

pytestmark = pytest.mark.usefixtures("demo")
NOW = datetime(2026, 11, 27, 1, 0, tzinfo=UTC)  # Friday 09:00 in Shanghai
JPEG = b"\xff\xd8\xff\xe0" + b"\x00\x10JFIF" + b"a photo of a document " * 20


def photo_bytes(tag: str) -> bytes:
    return JPEG + tag.encode()


async def send(mp: MiniProgram, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    resp = await mp.client.request(method, "/api/v1" + path, json=body, headers={"Authorization": f"Bearer {mp.token}"})
    return resp.status, await resp.json()


async def download(mp: MiniProgram, path: str, **params: str) -> tuple[int, str, bytes, Any]:
    resp = await mp.client.get("/api/v1" + path, params=params, headers={"Authorization": f"Bearer {mp.token}"})
    return resp.status, resp.content_type, await resp.read(), resp.headers


async def texts_to(openid: str) -> list[str]:
    rows = await OutboxMessage.filter(openid=openid, kind="text").order_by("id")
    return [str(row.payload["content"]) for row in rows]


async def item_id(name: str, community: str = "米家社区") -> int:
    found = await ErrandItem.get_or_none(name=name, community__name=community)
    if found is None:
        await core.ensure_catalogue((await Community.get(name=community)).id, NOW)
        found = await ErrandItem.get(name=name, community__name=community)
    return found.id


def doc_states(errand: dict[str, Any]) -> list[tuple[str, str]]:
    return [(d["document"], d["state"]) for d in errand["checklist"]]


# ---------------------------------------------------------------------------- acceptance


async def test_an_elder_gets_her_dibao_application_done_without_leaving_home(client: Any, clock: FrozenClock) -> None:
    fake = client.app[SERVICES].fake
    elder, steward, proxy, dept, staff = [await phone(client, name)
                                          for name in ("刘桂芳", "何管家", "党代办", "民政窗口", "周社工")]

    items = (await elder.call("GET", "/errands/items")).body
    dibao = next(i for i in items["items"] if i["name"] == "低保申请")
    assert (items["manage"], dibao["department"], dibao["eligible"]) == (False, "民政", True)
    documents = dibao["documents"]
    assert documents[:2] == ["身份证", "户口本"]

    # a double tap: one errand, the same answer three times
    answers = await asyncio.gather(*(post(elder, "/errands", {"item_id": dibao["id"], "note": "想申请低保"},
                                          key="tap-1") for _ in range(3)))
    assert {(s, a["id"]) for s, a in answers} == {(201, answers[0][1]["id"])}
    errand = answers[0][1]
    eid = errand["id"]
    assert await Errand.filter(resident__name="刘桂芳").count() == 1
    assert (errand["state"], errand["state_label"], errand["view"], errand["needs_proxy"], errand["proxy_reason"]) == (
        "collecting", "待上传材料", "resident", True, "lives_alone")
    assert doc_states(errand) == [(d, "missing") for d in documents]

    # she photographs each document in turn (WeChat media ids the fake serves)
    for number, document in enumerate(documents):
        fake.add_media(f"doc-{number}", photo_bytes(document))
        status, errand = await post(elder, f"/errands/{eid}/photos",
                                    {"document": document, "media_id": f"doc-{number}"})
        assert status == 201, errand
    assert errand["state"] == "review"
    assert doc_states(errand) == [(d, "pending") for d in documents]
    assert all(p["url"] is None for p in errand["photos"])  # the resident never gets the bytes back

    # the steward's queue, taking it, and the photo bytes (never cached, logged)
    queue = (await steward.call("GET", "/errands/queue")).body["items"]
    assert [q["id"] for q in queue] == [eid]
    status, errand = await post(steward, f"/errands/{eid}/take")
    assert (status, errand["steward"], errand["view"]) == (200, "何管家", "steward")
    assert errand["first_response_at"] == NOW.isoformat()
    first = errand["photos"][0]
    status, kind, data, headers = await download(steward, first["url"])
    assert (status, kind, data) == (200, "image/jpeg", photo_bytes("身份证"))
    assert headers["Cache-Control"] == "no-store"
    views = await DocumentView.filter(errand_id=eid).values_list("via", "viewer__name")
    assert views == [("api", "何管家")]

    # pre-review: accept all but the household register, which she photographs again
    hukou = next(p for p in errand["photos"] if p["document"] == "户口本")
    for photo in errand["photos"]:
        if photo["id"] != hukou["id"]:
            assert (await post(steward, f"/errands/photos/{photo['id']}/review", {"accept": True}))[0] == 200
    status, errand = await post(steward, f"/errands/photos/{hukou['id']}/review",
                                {"accept": False, "reason": "照片太暗，请在亮处重拍"})
    assert (status, errand["state"]) == (200, "reshoot")
    seen = (await elder.call("GET", f"/errands/{eid}")).body
    assert ("户口本", "reshoot", "照片太暗，请在亮处重拍") in [(d["document"], d["state"], d["reason"])
                                                      for d in seen["checklist"]]
    assert any("照片太暗" in t for t in await texts_to("demo-elder"))
    fake.add_media("doc-again", photo_bytes("户口本 again"))
    status, errand = await post(elder, f"/errands/{eid}/photos", {"document": "户口本", "media_id": "doc-again"})
    assert (status, errand["state"]) == (201, "review")
    assert (await ErrandPhoto.get(id=hukou["id"])).state == "replaced"
    again = next(p for p in errand["photos"] if p["document"] == "户口本")
    status, errand = await post(steward, f"/errands/photos/{again['id']}/review", {"accept": True})
    assert (status, errand["state"], errand["complete_at"]) == (200, "ready", NOW.isoformat())

    # the red proxy of her grid was offered it when she asked; he accepts
    tasks = (await proxy.call("GET", "/errands/proxy-tasks")).body
    assert [(o["id"], o["resident"]) for o in tasks["offers"]] == [(eid, "刘**")]
    status, errand = await post(proxy, f"/errands/{eid}/offer/accept", {})
    assert (status, errand["proxy"], errand["view"], errand["proxy_level"]) == (200, "党代办", "proxy", "taken")
    assert errand["address"] == "5号楼1单元201室"
    assert (await elder.call("GET", f"/errands/{eid}")).body["proxy"] == "党**"

    # transferred to 民政; the department records its progress, she is told each time
    status, errand = await post(steward, f"/errands/{eid}/transfer", {})
    assert (status, errand["state"], errand["department"]) == (200, "transferred", "民政")
    department = (await dept.call("GET", "/errands/department-queue")).body["items"]
    assert [d["id"] for d in department] == [eid]
    status, kind, _, _ = await download(dept, f"/errands/{eid}/photos/{first['id']}")
    assert (status, kind) == (200, "image/jpeg")
    before = len(await texts_to("demo-elder"))
    clock.advance(timedelta(days=1))
    for progress in ("received", "processing", "approved"):
        status, errand = await post(dept, f"/errands/{eid}/progress", {"progress": progress, "note": ""})
        assert status == 200, errand
    assert (errand["state"], errand["progress_label"]) == ("result", "已办结（通过）")
    told = (await texts_to("demo-elder"))[before:]
    assert [any(word in text for text in told) for word in ("已受理", "正在办理", "已办结（通过）")] == [True] * 3
    assert all("低保申请" in text for text in told)

    # the proxy takes the original register to the office and brings it back, then delivers at her door
    status, errand = await post(proxy, f"/errands/{eid}/custody", {"document": "户口本", "note": "原件核验"})
    assert status == 201 and [(c["document"], c["returned_at"]) for c in errand["custody"]] == [("户口本", None)]
    status, refused = await post(proxy, f"/errands/{eid}/deliver", {})
    assert status == 409 and "户口本" in refused["message"]
    entry = errand["custody"][0]["id"]
    clock.advance(timedelta(hours=2))
    status, errand = await post(proxy, f"/errands/custody/{entry}/return", {})
    assert (status, errand["custody"][0]["returned_at"]) == (200, clock.now().isoformat())
    status, errand = await post(proxy, f"/errands/{eid}/deliver", {})
    assert (status, errand["state"], errand["at_door"]) == (200, "delivered", True)

    # she confirms and rates it; the proxy earns the community's points once
    status, errand = await post(elder, f"/errands/{eid}/confirm", {"rating": 5, "note": "很满意"})
    assert (status, errand["state"], errand["rating"]) == (200, "closed", 5)
    status, again = await post(elder, f"/errands/{eid}/confirm", {"rating": 1})  # a second tap changes nothing
    assert (status, again["rating"]) == (200, 5)
    red_proxy = await Resident.get(name="党代办")
    assert await balance(await points_of(red_proxy.id, clock.now())) == 20
    kinds = [e["kind"] for e in errand["events"]]
    assert kinds[0] == "created" and len(kinds) >= 10

    # the view log, the ledger and the figures for the community's staff
    views = (await staff.call("GET", f"/errands/{eid}/views")).body["items"]
    assert [(v["viewer"], v["via"]) for v in views] == [("何管家", "api"), ("民政窗口", "api")]
    ledger = (await staff.call("GET", "/errands/ledger")).body
    assert [(r["household"], r["item"], r["result_label"], r["proxy"], r["at_door"], r["rating"])
            for r in ledger["rows"]] == [("5号楼1单元201室", "低保申请", "已办结（通过）", "党**", True, 5)]
    figures = (await staff.call("GET", "/errands/figures")).body
    assert (figures["total"]["requests"], figures["total"]["within_limit"], figures["total"]["at_door_pct"],
            figures["total"]["rating_mean_x10"]) == (1, 1, 100, 50)
    status, kind, data, _ = await download(staff, "/errands/ledger", format="xlsx")
    assert status == 200 and kind.endswith("spreadsheetml.sheet")
    rows = [[c.value for c in row] for row in openpyxl.load_workbook(io.BytesIO(data))["服务台账"].iter_rows()]
    assert ["5号楼1单元201室", "刘桂芳", eid, "低保申请"] in [r[:4] for r in rows]

    # 30 days after it closed the photos are deleted: nobody opens them any more, the deletion is logged
    clock.advance(timedelta(days=30))
    assert await errand_docs.sweep_documents(clock.now()) == len(documents) + 1
    assert (await download(steward, first["url"]))[0] == 404
    assert (await download(dept, f"/errands/{eid}/photos/{first['id']}"))[0] == 404
    seen = (await steward.call("GET", f"/errands/{eid}")).body
    assert seen["documents_deleted_at"] == clock.now().isoformat() and all(p["url"] is None for p in seen["photos"])
    views = (await staff.call("GET", f"/errands/{eid}/views")).body["items"]
    assert [v["via"] for v in views].count("deleted") == len(documents) + 1
    assert (await post(steward, f"/errands/{eid}/link", {}))[0] == 404


# ---------------------------------------------------------------------------- refusals


async def other_steward() -> Resident:
    """A steward of 新邱社区."""
    xinqiu = await Community.get(name="新邱社区")
    person = await Resident.create(name="林管家", mobile="13900003333", community=xinqiu, status="verified",
                                   created_at=NOW)
    await grant(resident_id=person.id, role=Role.STEWARD, scope_id=xinqiu.id, now=NOW)
    return person


async def asked_and_photographed(client: Any, elder: MiniProgram, item: str = "低保申请") -> dict[str, Any]:
    fake = client.app[SERVICES].fake
    status, errand = await post(elder, "/errands", {"item_id": await item_id(item)})
    assert status == 201, errand
    for number, document in enumerate(errand["documents"]):
        fake.add_media(f"r-{number}", photo_bytes(document))
        status, errand = await post(elder, f"/errands/{errand['id']}/photos", {"document": document,
                                                                               "media_id": f"r-{number}"})
        assert status == 201, errand
    return errand


async def test_another_communitys_steward_and_the_wrong_roles_see_nothing(client: Any) -> None:
    elder, steward = await phone(client, "刘桂芳"), await phone(client, "何管家")
    errand = await asked_and_photographed(client, elder)
    eid, photo = errand["id"], errand["photos"][0]["id"]
    await post(steward, f"/errands/{eid}/take")
    await other_steward()
    outsider, neighbour, dept = [await phone(client, n) for n in ("林管家", "王秀兰", "民政窗口")]
    for mp in (outsider, neighbour, dept):  # the department sees it only once transferred
        assert (await mp.call("GET", f"/errands/{eid}")).status == 404
        assert (await download(mp, f"/errands/{eid}/photos/{photo}"))[0] == 404
        for path, body in ((f"/errands/{eid}/take", None), (f"/errands/photos/{photo}/review", {"accept": True}),
                           (f"/errands/{eid}/link", {}), (f"/errands/{eid}/cancel", {"reason": "不需要了"})):
            status, answer = await post(mp, path, body)
            assert (status, answer["error"]) == (404, "not_found"), (path, answer)
    assert (await outsider.call("GET", "/errands/queue")).body["items"] == []
    # the resident sees her errand but never a photo's bytes, and cannot do a steward's work
    assert (await download(elder, f"/errands/{eid}/photos/{photo}"))[0] == 404
    assert (await post(elder, f"/errands/photos/{photo}/review", {"accept": True}))[0] == 404
    assert (await post(elder, f"/errands/{eid}/take"))[0] == 404
    assert (await elder.call("GET", "/errands/queue")).status == 404
    assert (await elder.call("GET", "/errands/department-queue")).status == 404
    assert (await elder.call("GET", "/errands/proxy-tasks")).status == 404
    assert (await elder.call("GET", "/errands/ledger")).status == 404
    assert (await elder.call("GET", "/errands/figures")).status == 404
    assert (await outsider.call("GET", f"/errands/{eid}/views")).status == 404
    assert (await ErrandPhoto.get(id=photo)).state == "pending"
    assert await DocumentView.filter(errand_id=eid).count() == 0


async def test_bad_input_is_refused_with_the_field_and_changes_nothing(client: Any) -> None:
    elder, staff = await phone(client, "刘桂芳"), await phone(client, "周社工")
    errand = await asked_and_photographed(client, elder)
    eid = errand["id"]
    dibao = await item_id("低保申请")
    before = (await Errand.all().count(), await ErrandPhoto.all().count(), await ErrandItem.all().count())
    invalid: list[tuple[MiniProgram, str, str, Any, str]] = [
        (elder, "POST", "/errands", {"item_id": str(dibao)}, "body.item_id"),
        (elder, "POST", "/errands", {"item_id": dibao, "urgent": True}, "body.urgent"),
        (elder, "POST", "/errands", {"item_id": dibao, "note": "长" * 201}, "body.note"),
        (elder, "POST", f"/errands/{eid}/photos", {"document": "身份证"}, "body"),
        (elder, "POST", f"/errands/{eid}/photos", {"document": "身份证", "media_id": "M1",
                                                  "pic_url": "https://a.cn/x.jpg"}, "body"),
        (elder, "POST", f"/errands/{eid}/photos", {"document": "", "media_id": "M1"}, "body.document"),
        (elder, "POST", f"/errands/{eid}/photos", {"document": "身份证", "media_id": "a b"}, "body.media_id"),
        (elder, "POST", f"/errands/{eid}/confirm", {"rating": 6}, "body.rating"),
        (staff, "POST", f"/errands/{eid}/progress", {"progress": "done"}, "body.progress"),
        (staff, "POST", f"/errands/{eid}/progress", {"progress": "approved", "more_documents": ["证明"]},
         "body.more_documents"),
        (staff, "PUT", f"/errands/items/{dibao}", {"name": "低保申请", "documents": [], "first_response_minutes": 60,
                                                   "expected_days": 7}, "body.documents"),
        (staff, "PUT", f"/errands/items/{dibao}", {"name": "低保申请", "documents": ["身份证"],
                                                   "first_response_minutes": 0, "expected_days": 7},
         "body.first_response_minutes"),
        (staff, "PUT", f"/errands/items/{dibao}", {"name": "低保申请", "documents": ["身份证"], "statuses": ["rich"],
                                                   "first_response_minutes": 60, "expected_days": 7},
         "body.statuses.0"),
        (staff, "PATCH", "/errands/settings", {"digest_times": ["25:00"]}, "body.digest_times.0"),
        (staff, "PATCH", "/errands/settings", {"offer_minutes": 0}, "body.offer_minutes"),
    ]
    for mp, method, path, body, field in invalid:
        status, answer = await send(mp, method, path, body)
        assert status == 422 and field in {f["field"] for f in answer["fields"]}, (path, body, answer)
    bad = await staff.call("GET", "/errands/figures", **{"from": "2026-11-30", "to": "2026-11-01"})
    assert bad.status == 422
    photo = errand["photos"][0]["id"]
    refused: list[tuple[MiniProgram, str, Any, str]] = [
        (staff, f"/errands/photos/{photo}/review", {"accept": False, "reason": "糊"}, "请写明重拍的原因（2到100个字）"),
        (staff, f"/errands/{eid}/transfer", {}, "材料全部预审通过后才能转办"),
        (elder, f"/errands/{eid}/confirm", {"rating": 5}, "结果送达后才能确认评价"),
        (elder, "/errands", {"item_id": await item_id("残疾人补贴")}, "仅限残疾居民申请"),
    ]
    for mp, path, body, message in refused:
        status, answer = await post(mp, path, body)
        assert status == 409 and answer["error"] == "rejected" and message in answer["message"], (path, answer)
    assert (await Errand.get(id=eid)).steward_id is None
    # the same key for another errand is refused; a new key asking again answers the open errand
    await post(elder, "/errands", {"item_id": dibao}, key="k-1")
    other = await post(elder, "/errands", {"item_id": await item_id("医保参保")}, key="k-1")
    assert other[0] == 422 and other[1]["fields"][0]["field"] == "header.Idempotency-Key"
    status, again = await post(elder, "/errands", {"item_id": dibao}, key="k-2")
    assert (status, again["id"]) == (201, eid)
    after = (await Errand.all().count(), await ErrandPhoto.all().count(), await ErrandItem.all().count())
    assert after == before


async def test_staff_edit_the_catalogue_and_settings_and_a_steward_opens_the_documents_by_link(client: Any) -> None:
    staff, elder, steward = await phone(client, "周社工"), await phone(client, "刘桂芳"), await phone(client, "何管家")
    catalogue = (await staff.call("GET", "/errands/items", community_id=(await Community.get(name="米家社区")).id)).body
    assert catalogue["manage"] is True and len(catalogue["items"]) >= 21
    dibao = next(i for i in catalogue["items"] if i["name"] == "困难认定")
    assert dibao["first_response_minutes"] == 15
    body = {"name": "困难认定", "department_id": dibao["department_id"], "documents": ["身份证", "收入证明"],
            "statuses": [], "min_age": 0, "first_response_minutes": 10, "expected_days": 3, "active": True,
            "position": dibao["position"]}
    status, changed = await send(staff, "PUT", f"/errands/items/{dibao['id']}", body)
    assert (status, changed["documents"], changed["first_response_minutes"]) == (200, ["身份证", "收入证明"], 10)
    status, added = await post(staff, "/errands/items", {**body, "name": "独居老人探访", "documents": ["身份证"]},
                               key="item-1")
    assert (status, added["name"]) == (201, "独居老人探访")
    assert (await post(staff, "/errands/items", {**body, "name": "独居老人探访", "documents": ["身份证"]},
                       key="item-1"))[1]["id"] == added["id"]
    status, refused = await post(staff, "/errands/items", {**body, "documents": ["身份证"]})
    assert status == 422 and refused["fields"][0]["field"] == "body.name"

    settings = (await staff.call("GET", "/errands/settings")).body
    assert (settings["digest_times"], settings["offer_minutes"], settings["proxy_points"]) == (
        ["10:00", "16:00"], 30, 20)
    status, settings = await send(staff, "PATCH", "/errands/settings", {"digest_times": ["09:30"], "proxy_points": 30})
    assert (status, settings["digest_times"], settings["offer_minutes"], settings["proxy_points"]) == (
        200, ["09:30"], 30, 30)

    errand = await asked_and_photographed(client, elder, "困难认定")
    assert errand["documents"] == ["身份证", "收入证明"]
    status, _ = await post(steward, f"/errands/{errand['id']}/link", {})
    assert status == 404  # not taken yet: not his to open
    await post(steward, f"/errands/{errand['id']}/take")
    status, link = await post(steward, f"/errands/{errand['id']}/link", {})
    assert status == 201 and link["path"].startswith("/docs/") and link["url"].endswith(link["path"])
    assert link["expires_at"] == (NOW + timedelta(minutes=10)).isoformat()
    # the staff cancel it with a reason; she is told
    status, cancelled = await post(staff, f"/errands/{errand['id']}/cancel", {"reason": "重复申请"})
    assert (status, cancelled["state"]) == (200, "cancelled")


async def test_a_daughter_asks_for_her_mother_and_a_photo_that_is_no_image_is_lost(client: Any) -> None:
    fake = client.app[SERVICES].fake
    mother, daughter = await Resident.get(name="王秀兰"), await Resident.get(name="孙志愿")
    link, _ = await request_link(proxy_id=daughter.id, elder_id=mother.id, relation="子女", now=NOW)
    await decide_link(link_id=link.id, by_id=mother.id, how="elder", approve=True, now=NOW)
    child, staff = await phone(client, "孙志愿"), await phone(client, "周社工")
    status, errand = await post(child, "/errands", {"item_id": await item_id("医保参保"), "for_resident_id": mother.id})
    assert (status, errand["resident"], errand["view"], errand["via"], errand["requested_by"]) == (
        201, "王秀兰", "requester", "api", "孙**")
    assert errand["address"] == "1号楼2单元301室" and errand["needs_proxy"] is False
    for_her = (await child.call("GET", "/errands", for_resident_id=mother.id)).body["items"]
    assert [e["id"] for e in for_her] == [errand["id"]]
    assert [e["id"] for e in (await child.call("GET", "/errands")).body["items"]] == [errand["id"]]  # asked by her

    fake.add_media("not-a-photo", b"%PDF-1.4 a scanned form")
    status, errand = await post(child, f"/errands/{errand['id']}/photos", {"document": "身份证",
                                                                            "media_id": "not-a-photo"})
    assert status == 201
    assert (errand["state"], errand["checklist"][0]["state"], errand["checklist"][0]["state_label"]) == (
        "collecting", "lost", "未能保存")
    assert "不是图片" in errand["checklist"][0]["reason"] and "重新拍" in errand["checklist"][0]["reason"]
    assert "身份证" in errand["next_step"]
    actions = (await staff.call("GET", f"/residents/{mother.id}/actions")).body["items"]
    assert {"errand_create", "errand_photo"} <= {a["action"] for a in actions}

    # community staff ask for a resident who came to the office (via staff); a neighbour may not
    zhang = await Resident.get(name="张德福")
    status, asked = await post(staff, "/errands", {"item_id": await item_id("法律咨询"), "for_resident_id": zhang.id})
    assert (status, asked["via"], asked["resident"]) == (201, "staff", "张德福")
    status, refused = await post(child, "/errands", {"item_id": await item_id("法律咨询"),
                                                     "for_resident_id": zhang.id})
    assert (status, refused["error"]) == (404, "not_found")
    assert (await child.call("GET", "/errands/items", for_resident_id=zhang.id)).status == 404


# ---------------------------------------------------------------------------- the authorization matrix


async def matrix_errands(me: Resident, elder: Resident, volunteer: Resident, now: datetime) -> dict[str, int]:
    """For tests/test_api_matrix.py: 米家社区's service package and 王秀兰's errands, asked by ``me`` (her
    family proxy), one per step the matrix calls; 周社工 (community staff) is their steward, and the
    volunteer is also a red proxy of her grid (第一网格).

    - errand (医保参保): asked, her ID card photographed (errand_photo, the fake's "matrix-photo",
      waiting for review), the household register not yet; taken by 周社工;
    - errand_ready (养老保险): every document accepted; errand_transferred (户籍证明): with 公安, the
      volunteer its proxy, her ID card out with him (custody_entry);
    - errand_offered (就业失业登记): a red proxy needed, offered to her grid's (the volunteer);
    - errand_result (医保报销): approved, the volunteer to deliver it; errand_delivered (法律咨询):
      delivered at her door, to be confirmed.

    The first goes through models.errand_core step by step; the others are written in their state
    directly (the world is built for every row, and those steps have tests of their own).
    """
    mijia = await Community.get(name="米家社区")
    staff = await Resident.get(name="周社工")
    building = await Building.get(id=elder.building_id)  # type: ignore[attr-defined]
    await grant(resident_id=volunteer.id, role=Role.RED_PROXY, scope_id=building.grid_id, now=now)  # type: ignore[attr-defined]
    items = {i.name: i for i in await core.ensure_catalogue(mijia.id, now)}

    errand, _ = await core.create_errand(item_id=items["医保参保"].id, resident_id=elder.id, requested_by_id=me.id,
                                         via="api", now=now)
    photo = await core.add_photo(errand.id, "身份证", by_id=me.id, now=now, media_id="matrix-photo")
    await core.take(errand.id, staff.id, now)

    async def written(name: str, state: str, **fields: Any) -> Errand:
        item = items[name]
        taken = {"steward": staff, "first_response_at": now, "complete_at": now} if state != "collecting" else {}
        return await Errand.create(
            community=mijia, item=item, item_name=item.name, documents=list(item.documents),
            first_response_minutes=item.first_response_minutes, expected_days=item.expected_days, resident=elder,
            requested_by=me, via="api", department_id=item.department_id, state=state, created_at=now,
            **taken, **fields)

    proxied = {"needs_proxy": True, "proxy_reason": "staff", "proxy_level": "taken", "proxy": volunteer}
    ready = await written("养老保险", "ready")
    transferred = await written("户籍证明", "transferred", transferred_at=now, **proxied)
    entry = await CustodyEntry.create(errand=transferred, proxy=volunteer, document="身份证", taken_at=now)
    offered = await written("就业失业登记", "collecting", needs_proxy=True, proxy_reason="staff", proxy_level="grid")
    result = await written("医保报销", "result", transferred_at=now, progress="approved", result_at=now, **proxied)
    delivered = await written("法律咨询", "delivered", transferred_at=now, progress="approved", result_at=now,
                              delivered_at=now, at_door=True, **proxied)
    return {"errand_item": items["低保申请"].id, "errand_new_item": items["健康检查"].id, "red_proxy": volunteer.id,
            "errand": errand.id, "errand_photo": photo.id, "errand_ready": ready.id,
            "errand_transferred": transferred.id, "errand_offered": offered.id, "custody_entry": entry.id,
            "errand_result": result.id, "errand_delivered": delivered.id}
