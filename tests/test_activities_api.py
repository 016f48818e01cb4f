"""Activities through /api/v1 as the mini-program sees them: publish (and retry), list, sign up and
withdraw, the check-in QR code as a PNG, the typed code, ticks, declared hours and their review, and
who may do what (an organiser of another community sees nothing)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from bot.api import create_session
from bot.app import SERVICES
from bot.clock import FrozenClock
from models.activities import Activity, Signup, declare_hours, publish, sign_up
from models.jobs import sweep_due
from models.ledger import balance, points_of
from models.outbox import OutboxMessage
from models.places import Building, Community
from models.residents import Resident, WechatAccount
from models.roles import Role, grant
from tests.api import MiniProgram

pytestmark = pytest.mark.usefixtures("demo")
SHANGHAI = ZoneInfo("Asia/Shanghai")
START = datetime(2026, 11, 28, 9, 0, tzinfo=SHANGHAI)
END = START + timedelta(hours=2, minutes=30)
BODY = {"title": "敬老院陪老人聊天", "kind": "elder_care", "place": "米家社区养老服务站", "date": "2026-11-28",
        "starts": "09:00", "ends": "11:30", "slots": 2, "description": "陪老人聊天、读报"}


async def phone(client: Any, name: str, community: str = "米家社区") -> MiniProgram:
    """A mini-program session of a demo person (or a new resident of that community under that name)."""
    person = await Resident.get_or_none(name=name)
    if person is None:
        building = await Building.filter(community__name=community).order_by("id").first()
        assert building is not None
        person = await Resident.create(name=name, mobile=f"139555{await Resident.all().count():05d}",
                                       community_id=building.community_id, building=building,  # type: ignore[attr-defined]
                                       unit="1", room="101", status="verified", created_at=START)
    account, _ = await WechatAccount.get_or_create(openid=f"mp-{person.id}", defaults={
        "channel": "mp", "resident": person, "created_at": START})
    mp = MiniProgram(client, account.openid)
    mp.token = await create_session(client.app[SERVICES].store, account, 1)
    return mp


MATRIX_CHECKIN_CODE = "246810"


async def matrix_activities(volunteer: Resident, now: datetime) -> dict[str, int]:
    """For tests/test_api_matrix.py: 吴组织's activity tomorrow and one running now (its code
    MATRIX_CHECKIN_CODE), the volunteer signed up for both, not checked in, with an hour declared on the
    running one."""
    organiser = await Resident.get(name="吴组织")
    earlier = now - timedelta(days=1)
    common: dict[str, Any] = {"community_id": organiser.community_id, "organiser_id": organiser.id,  # type: ignore[attr-defined]
                              "kind": "elder_care", "place": "米家社区养老服务站", "slots": 10, "now": earlier}
    tomorrow = await publish(title="敬老院陪老人聊天", starts_at=now + timedelta(days=1),
                             ends_at=now + timedelta(days=1, hours=2), **common)
    running = await publish(title="楼道清扫", starts_at=now - timedelta(minutes=30),
                            ends_at=now + timedelta(hours=2), **common)
    await Activity.filter(id=running.id).update(checkin_code=MATRIX_CHECKIN_CODE)
    await sign_up(tomorrow.id, volunteer, earlier)
    signup, _ = await sign_up(running.id, volunteer, earlier)
    await declare_hours(running.id, volunteer.id, 60, "先到了一小时", now)
    return {"activity": tomorrow.id, "running": running.id, "running_signup": signup.id}


async def published(client: Any, **change: Any) -> tuple[MiniProgram, dict[str, Any]]:
    organiser = await phone(client, "吴组织")
    answer = await organiser.call("POST", "/activities", BODY | change)
    assert answer.status == 201, answer
    return organiser, answer.body


async def points(name: str) -> int:
    return await balance(await points_of((await Resident.get(name=name)).id, START))


async def test_publish_answers_the_activity_and_a_retry_is_the_same_one(client: Any) -> None:
    organiser = await phone(client, "吴组织")
    headers = {"Authorization": f"Bearer {organiser.token}", "Idempotency-Key": "tap-1"}
    first = await client.post("/api/v1/activities", json=BODY, headers=headers)
    again = await client.post("/api/v1/activities", json=BODY, headers=headers)
    assert first.status == again.status == 201
    body = await first.json()
    assert body["id"] == (await again.json())["id"] and await Activity.all().count() == 1
    assert (body["points_per_hour"], body["minutes"], body["points"], body["slots_left"]) == (10, 150, 25, 2)
    assert body["starts_at"] == START.isoformat().replace("+08:00", "+00:00").replace("09:00", "01:00")
    assert body["can_manage"] and len(body["checkin_code"]) == 6 and body["organiser"] == "吴组织"
    other = await client.post("/api/v1/activities", json=BODY | {"slots": 3}, headers=headers)
    assert other.status == 422 and (await other.json())["fields"][0]["field"] == "header.Idempotency-Key"


@pytest.mark.parametrize(("change", "status", "says"), [
    ({"date": "2026-11-26"}, 409, "已经过了"),
    ({"ends": "08:00"}, 409, "晚于开始"),
    ({"starts": "07:00", "ends": "19:30"}, 409, "最长12小时"),
    ({"date": "2026-02-30"}, 422, "body.date"),
    ({"slots": 0}, 422, "body.slots"),
    ({"kind": "party_time"}, 422, "body.kind"),
    ({"title": "  "}, 422, "body.title"),
])
async def test_a_bad_activity_says_why_and_makes_nothing(client: Any, change: dict[str, Any], status: int,
                                                         says: str) -> None:
    organiser = await phone(client, "吴组织")
    answer = await organiser.call("POST", "/activities", BODY | change)
    assert answer.status == status and says in str(answer.body)
    assert await Activity.all().count() == 0


async def test_residents_cannot_publish_and_see_only_their_communitys_activities(client: Any) -> None:
    volunteer = await phone(client, "孙志愿")
    assert (await volunteer.call("POST", "/activities", BODY)).status == 404
    _, activity = await published(client)
    stranger = await phone(client, "外社区居民", community="新邱社区")
    assert (await stranger.call("GET", f"/activities/{activity['id']}")).status == 404
    assert (await stranger.call("POST", f"/activities/{activity['id']}/signup")).status == 404
    assert (await stranger.call("GET", "/activities")).body["items"] == []
    seen = (await volunteer.call("GET", f"/activities/{activity['id']}")).body
    assert seen["checkin_code"] is None and not seen["can_manage"] and seen["my_signup"] is None


async def test_sign_up_check_in_and_points_through_the_api(client: Any, clock: FrozenClock) -> None:
    organiser, activity = await published(client)
    path = f"/activities/{activity['id']}"
    volunteer, elder = await phone(client, "孙志愿"), await phone(client, "王秀兰")
    third = await phone(client, "邻居甲")
    listed = (await volunteer.call("GET", "/activities")).body["items"]
    assert [a["title"] for a in listed] == ["敬老院陪老人聊天"]
    signed = await volunteer.call("POST", path + "/signup")
    assert signed.status == 200 and signed.body["status"] == "signed"
    assert (await volunteer.call("POST", path + "/signup")).body["id"] == signed.body["id"]  # twice is one place
    assert (await elder.call("POST", path + "/signup")).status == 200
    full = await third.call("POST", path + "/signup")
    assert full.status == 409 and "报满" in full.body["message"]
    assert (await elder.call("DELETE", path + "/signup")).body["status"] == "withdrawn"
    assert (await third.call("POST", path + "/signup")).status == 200
    mine = (await volunteer.call("GET", "/activities", view="mine")).body["items"]
    assert mine[0]["my_signup"]["status"] == "signed" and mine[0]["taken"] == 2

    early = await volunteer.call("POST", path + "/checkin", {"code": activity["checkin_code"]})
    assert early.status == 409 and "还没到签到时间" in early.body["message"]
    clock.set(START - timedelta(minutes=20))
    wrong = "000000" if activity["checkin_code"] != "000000" else "111111"
    assert (await volunteer.call("POST", path + "/checkin", {"code": wrong})).status == 409
    checked = await volunteer.call("POST", path + "/checkin", {"code": activity["checkin_code"]})
    assert checked.status == 200 and checked.body["checked_in_by"] == "code"
    assert (await volunteer.call("DELETE", path + "/signup")).status == 409  # started, and checked in

    qr = await client.get(f"/api/v1{path}/checkin-qr", headers={"Authorization": f"Bearer {organiser.token}"})
    assert qr.status == 200 and qr.content_type == "image/png"
    assert (await qr.read()).startswith(b"\x89PNG")
    assert (await volunteer.call("GET", path + "/checkin-qr")).status == 404

    roster = (await organiser.call("GET", path + "/signups")).body["items"]
    assert [(s["name"], s["status"], s["checked_in_by"]) for s in roster] == [
        ("孙志愿", "signed", "code"), ("王秀兰", "withdrawn", None), ("邻居甲", "signed", None)]
    third_signup = roster[2]["id"]
    clock.set(END)
    await sweep_due(clock.now())
    assert await points("孙志愿") == 25 and await points("邻居甲") == 0
    clock.set(END + timedelta(hours=1))
    ticked = await organiser.call("POST", f"{path}/signups/{third_signup}/attendance", {"attended": True})
    assert ticked.status == 200 and ticked.body["hours_status"] == "confirmed" and ticked.body["points"] == 25
    assert await points("邻居甲") == 25
    gone = await organiser.call("POST", f"{path}/signups/{third_signup}/attendance", {"attended": False})
    assert gone.status == 409


async def test_declared_hours_and_their_review(client: Any, clock: FrozenClock) -> None:
    organiser, activity = await published(client)
    path = f"/activities/{activity['id']}"
    volunteer = await phone(client, "孙志愿")
    signup = (await volunteer.call("POST", path + "/signup")).body
    too_soon = await volunteer.call("POST", path + "/hours", {"minutes": 60, "note": "到了"})
    assert too_soon.status == 409 and "开始后" in too_soon.body["message"]
    clock.set(END + timedelta(minutes=10))
    assert (await volunteer.call("POST", path + "/hours", {"minutes": 400, "note": "一直在"})).status == 409
    declared = await volunteer.call("POST", path + "/hours", {"minutes": 120, "note": "没扫上码"})
    assert declared.body["hours_status"] == "pending" and declared.body["minutes"] == 120

    review = f"{path}/signups/{signup['id']}/review"
    assert (await organiser.call("POST", review, {"approve": False})).status == 422  # a rejection needs a reason
    xinqiu = await Community.get(name="新邱社区")
    outsider = await phone(client, "外社区组织者", community="新邱社区")
    await grant(resident_id=(await Resident.get(name="外社区组织者")).id, role=Role.ORGANISER, scope_id=xinqiu.id,
                now=START)
    assert (await outsider.call("POST", review, {"approve": True})).status == 404
    assert (await outsider.call("POST", f"{path}/signups/{signup['id']}/attendance", {"attended": True})).status == 404
    assert (await outsider.call("GET", path + "/signups")).status == 404
    confirmed = await organiser.call("POST", review, {"approve": True})
    assert confirmed.body["hours_status"] == "confirmed" and confirmed.body["points"] == 20
    assert (await organiser.call("POST", review, {"approve": True})).body["points"] == 20  # once
    assert await points("孙志愿") == 20
    late = await volunteer.call("POST", path + "/hours", {"minutes": 150, "note": "还有半小时"})
    assert late.status == 409 and "已经确认" in late.body["message"]
    pushed = await OutboxMessage.filter(openid="demo-volunteer", kind="text")
    assert any("服务时长已确认：2小时，获得20积分" in m.payload["content"] for m in pushed)


async def test_cancel_before_the_start(client: Any) -> None:
    organiser, activity = await published(client)
    path = f"/activities/{activity['id']}"
    volunteer = await phone(client, "孙志愿")
    await volunteer.call("POST", path + "/signup")
    assert (await volunteer.call("POST", path + "/cancel", {"reason": "不想去"})).status == 404
    cancelled = await organiser.call("POST", path + "/cancel", {"reason": "场地检修"})
    assert cancelled.body["status"] == "cancelled" and cancelled.body["cancel_reason"] == "场地检修"
    assert (await volunteer.call("GET", "/activities")).body["items"] == []
    assert await Signup.all().count() == 1
