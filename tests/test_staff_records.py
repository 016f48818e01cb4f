"""Staff flows through /wechat: 待核实信息, 删除申请 (erasure with holds) and 查居民 (audited,
sensitive fields only for roles that see them)."""

from __future__ import annotations

import io
import logging
from collections.abc import AsyncIterator
from datetime import datetime

import pytest

from bot.logs import MaskingFormatter
from models.facts import ResidentFact, declare
from models.places import Building, Community
from models.privacy import (
    ERASED_NAME,
    AuditLog,
    DataRequest,
    RequestStatus,
    register_hold,
    unregister_hold,
)
from models.proxies import Action
from models.residents import Resident, ResidentStatus, WechatAccount
from models.roles import Role, grant
from tests.test_binding import NEW_RESIDENT, run
from tests.test_profile import MY_MOBILE, pushed
from tests.wechat import WeChatPusher

pytestmark = pytest.mark.usefixtures("demo")

ME = "o-me"
ELDER_MOBILE = "13904180011"  # 王秀兰, 米家社区1号楼 (第一网格), imported by the demo
HEALTH_NOTE = "腿脚不便，上下楼需搀扶"


async def make_staff(openid: str, name: str, role: str, scope_id: int | None, now: datetime) -> Resident:
    """A person of 新邱社区 holding ``role``, with a WeChat account."""
    community = await Community.get(name="新邱社区")
    person = await Resident.create(name=name, community=community, status=ResidentStatus.VERIFIED, source="staff",
                                   created_at=now)
    await grant(resident_id=person.id, role=role, scope_id=scope_id, now=now, by_label="test")
    await WechatAccount.create(openid=openid, channel="oa", resident=person, created_at=now)
    return person


async def request_deletion_in_chat(wechat: WeChatPusher) -> Resident:
    await run(wechat, ME, [*NEW_RESIDENT, "是", "我的信息", "4", "是"])
    return await Resident.get(mobile=MY_MOBILE)


# ---------------------------------------------------------------------------- 删除申请


async def test_erasure_without_holds_anonymises_the_resident_and_tells_them(wechat: WeChatPusher) -> None:
    me = await request_deletion_in_chat(wechat)
    now = wechat.clock.now()
    await declare(resident_id=me.id, code="dibao", now=now, by_id=me.id)
    await Resident.filter(id=me.id).update(health_note=HEALTH_NOTE)

    listing = await wechat.say("demo-staff", "删除申请")
    assert "王小明（米家社区2号楼3单元501室）" in listing
    question = await wechat.say("demo-staff", "1")
    assert "将删除：姓名、手机号和门牌号" in question and "将保留：无" in question and "无法恢复" in question
    assert "没有办理" in await wechat.say("demo-staff", "否")
    assert (await Resident.get(id=me.id)).erased_at is None  # nothing changed without confirmation

    await run(wechat, "demo-staff", ["删除申请", "1"])
    done = await wechat.say("demo-staff", "是")
    assert "已办理" in done and "已通知居民" in done
    erased = await Resident.get(id=me.id)
    assert (erased.name, erased.mobile, erased.unit, erased.room) == (ERASED_NAME, None, "", "")
    assert erased.health_note == "" and erased.erased_at == now
    assert not await ResidentFact.filter(resident_id=me.id).exists()
    assert (await WechatAccount.get(openid=ME)).resident_id is None
    request = await DataRequest.get(resident_id=me.id)
    assert request.status == RequestStatus.DONE and request.handled_by_id is not None
    assert await AuditLog.filter(subject_id=me.id, action="erase").exists()
    assert await Action.filter(subject_id=me.id, action="erase").exists()
    notice = (await pushed(ME))[-1]
    assert notice.startswith("您的个人信息删除申请已办理。已删除：姓名、手机号和门牌号")
    assert "暂无待办理" in await wechat.say("demo-staff", "删除申请")


async def test_a_hold_keeps_the_name_and_says_why(wechat: WeChatPusher) -> None:
    me = await request_deletion_in_chat(wechat)

    async def open_case(resident_id: int) -> str | None:
        return "有未办结的诉求" if resident_id == me.id else None

    register_hold(open_case)
    try:
        await run(wechat, "demo-staff", ["删除申请"])
        question = await wechat.say("demo-staff", "1")
        assert "将保留：姓名和联系方式（有未办结的诉求）" in question
        assert "姓名、手机号和门牌号" not in question.split("将保留")[0]
        await wechat.say("demo-staff", "是")
    finally:
        unregister_hold(open_case)
    kept = await Resident.get(id=me.id)
    assert (kept.name, kept.mobile) == ("王小明", MY_MOBILE)  # kept for the open case
    assert kept.erased_at is not None and kept.health_note == ""
    assert (await WechatAccount.get(openid=ME)).resident_id is None
    notice = (await pushed(ME))[-1]
    assert "保留：姓名和联系方式（有未办结的诉求）" in notice


async def test_a_request_withdrawn_meanwhile_is_not_carried_out(wechat: WeChatPusher) -> None:
    me = await request_deletion_in_chat(wechat)
    await run(wechat, "demo-staff", ["删除申请", "1"])
    await run(wechat, ME, ["我的信息", "4"])  # 撤回删除申请
    assert "已被居民撤回，没有删除任何信息" in await wechat.say("demo-staff", "是")
    still = await Resident.get(id=me.id)
    assert still.name == "王小明" and still.erased_at is None
    assert (await DataRequest.get(resident_id=me.id)).status == RequestStatus.WITHDRAWN


async def test_staff_outside_the_scope_and_other_roles_cannot_handle_requests(wechat: WeChatPusher) -> None:
    await request_deletion_in_chat(wechat)
    now = wechat.clock.now()
    xinqiu = await Community.get(name="新邱社区")
    await make_staff("o-xinqiu-staff", "钱社工", Role.COMMUNITY_STAFF, xinqiu.id, now)
    assert "暂无待办理" in await wechat.say("o-xinqiu-staff", "删除申请")
    assert "暂无待核实" in await wechat.say("o-xinqiu-staff", "待核实")
    assert "仅限相关工作人员" in await wechat.say("demo-grid-1", "删除申请")  # grid workers do not erase
    assert "仅限相关工作人员" in await wechat.say(ME, "待核实")
    assert (await DataRequest.get(resident__mobile=MY_MOBILE)).status == RequestStatus.OPEN


# ---------------------------------------------------------------------------- 待核实信息


async def test_review_can_skip_to_the_next_declaration(wechat: WeChatPusher) -> None:
    await run(wechat, ME, [*NEW_RESIDENT, "是", "我的信息", "2", "10"])  # 党员
    elder = await Resident.get(mobile=ELDER_MOBILE)
    await declare(resident_id=elder.id, code="veteran", now=wechat.clock.now(), by_id=elder.id)
    first = await wechat.say("demo-staff", "待核实")
    assert "共2条" in first and "王小明" in first and "党员" in first
    second = await wechat.say("demo-staff", "3")
    assert "王秀兰" in second and "退伍军人" in second
    assert "暂无待核实的信息" in await wechat.say("demo-staff", "1")
    # every declaration shown was recorded as opened
    assert await AuditLog.filter(action="view", purpose__startswith="待核实信息").count() == 2


# ---------------------------------------------------------------------------- 查居民


@pytest.fixture
async def elder(wechat: WeChatPusher) -> AsyncIterator[Resident]:
    """王秀兰 with a health note, a verified sensitive status (低保) and a verified plain one (党员)."""
    person = await Resident.get(mobile=ELDER_MOBILE)
    now = wechat.clock.now()
    await Resident.filter(id=person.id).update(health_note=HEALTH_NOTE)
    await declare(resident_id=person.id, code="dibao", now=now, by_id=None, source="import", verified=True)
    await declare(resident_id=person.id, code="party_member", now=now, by_id=None, source="import", verified=True)
    yield person


async def test_lookup_shows_sensitive_fields_to_the_grid_worker_and_audits_it(
    wechat: WeChatPusher, elder: Resident
) -> None:
    assert "请先说明事由" in await wechat.say("demo-grid-1", "查居民")
    await wechat.say("demo-grid-1", "上门走访")
    record = await wechat.say("demo-grid-1", "王秀兰")
    assert "姓名：王秀兰" in record and "手机：139****0011" in record and ELDER_MOBILE not in record
    assert "低保：已核实" in record and "党员：已核实" in record and f"健康备注：{HEALTH_NOTE}" in record
    assert "本次查阅已记录" in record
    grid_worker = await Resident.get(mobile="13904180001")
    row = await AuditLog.get(subject_id=elder.id)
    assert (row.actor_id, row.action, row.purpose) == (grid_worker.id, "view_sensitive", "查居民：上门走访")
    assert row.at == wechat.clock.now() and row.detail["role"] == Role.GRID_WORKER


async def test_a_role_without_sensitive_access_sees_them_masked(wechat: WeChatPusher, elder: Resident) -> None:
    admin = await make_staff("o-admin", "吴管理", Role.ADMIN, None, wechat.clock.now())
    record = (await run(wechat, "o-admin", ["查居民", "核对系统数据", ELDER_MOBILE]))[-1]
    assert "姓名：王秀兰" in record and "党员：已核实" in record
    assert "低保" not in record and HEALTH_NOTE not in record
    assert "另有敏感信息已隐藏" in record and "健康备注：已隐藏" in record
    row = await AuditLog.get(subject_id=elder.id)
    assert (row.actor_id, row.action, row.purpose) == (admin.id, "view", "查居民：核对系统数据")


async def test_lookup_outside_the_scope_finds_and_records_nothing(wechat: WeChatPusher, elder: Resident) -> None:
    replies = await run(wechat, "demo-grid-2", ["查居民", "上门走访", "王秀兰"])
    assert "没有找到您负责范围内相符的居民" in replies[-1]
    assert "低保" not in replies[-1]
    assert not await AuditLog.filter(subject_id=elder.id).exists()
    assert "仅限相关工作人员" in await wechat.say("demo-volunteer", "查居民")


async def test_several_matches_are_listed_then_the_chosen_one_is_opened(
    wechat: WeChatPusher, elder: Resident
) -> None:
    building = await Building.get(name="1号楼")
    namesake = await Resident.create(name="王秀英", mobile="13904180021", community_id=building.community_id,  # type: ignore[attr-defined]
                          building=building, unit="1", room="201", created_at=wechat.clock.now())
    listing = (await run(wechat, "demo-grid-1", ["查居民", "核实低保申请", "王秀"]))[-1]
    assert "1. 王秀兰 139****0011" in listing and "2. 王秀英 139****0021" in listing
    assert "低保" not in listing.replace("核实低保申请", "")  # the list shows no statuses
    listed = await AuditLog.get(action="list")
    assert listed.purpose == "查居民：核实低保申请" and listed.detail["ids"] == [elder.id, namesake.id]
    assert "姓名：王秀兰" in await wechat.say("demo-grid-1", "1")
    assert await AuditLog.filter(subject_id=elder.id, action="view_sensitive").count() == 1


async def test_a_malformed_mobile_is_asked_again(wechat: WeChatPusher, elder: Resident) -> None:
    reply = (await run(wechat, "demo-grid-1", ["查居民", "上门走访", "1390418"]))[-1]
    assert "手机号" in reply and "请输入居民姓名或手机号" in reply
    assert not await AuditLog.exists()


async def test_sensitive_statuses_and_health_notes_never_reach_the_logs(
    wechat: WeChatPusher, elder: Resident
) -> None:
    record = (await run(wechat, "demo-grid-1", ["查居民", "上门走访", "王秀兰"]))[-1]
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(MaskingFormatter(as_json=True))
    logger = logging.getLogger("linli.tests.sensitive")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        # as a failed push or an exception would carry it
        logger.error("push failed: %s", record)
        logger.info("declared %s for %s", "独居", "王秀兰")
    finally:
        logger.removeHandler(handler)
        logger.propagate = True
    out = stream.getvalue()
    assert "低保" not in out and "独居" not in out and HEALTH_NOTE not in out
    assert "党员" in out and "王秀兰" in out  # what is not sensitive stays readable
