"""红色代办, the domain: the whole life of 刘桂芳's 低保 application (she is 80 and lives alone, so a
red proxy goes to her door) with photos the fake WeChat serves, a re-shoot, the transfer and the
department's word, more documents needed, the custody log, delivery refused while an original
is out, confirmation with the proxy's points credited once; the offer widening from the grid to
the community to staff on the frozen clock, two proxies accepting at once, the 15-minute alert of
困难认定, the daily digests (once per time, only the latest when several are due), cancelling,
who may ask, see and act, and the catalogue seeded once under concurrency."""

from __future__ import annotations

import asyncio
import io
from datetime import UTC, datetime, time, timedelta
from typing import Any

import pytest
from PIL import Image

from bot.app import SERVICES
from bot.clock import FrozenClock
from bot.config import Config
from bot.scheduler import ERRAND_DIGEST_JOB, retention_of, service_scheduler
from models import errand_core as core
from models.conversation import PendingPrompt
from models.errands import (
    Errand,
    ErrandEvent,
    ErrandItem,
    ErrandPhoto,
    ErrandState,
    PhotoState,
    Progress,
    ProxyLevel,
    Via,
)
from models.errors import Forbidden, NotFound, UserFacingError
from models.facts import BIRTH_DATE, declare
from models.jobs import ActionStatus, DueAction, sweep_due
from models.ledger import Entry, balance, check_books, points_of
from models.outbox import OutboxMessage
from models.places import Building, Community, Department, Grid, SubDistrict
from models.proxies import Action, decide_link, request_link
from models.residents import Resident, WechatAccount
from models.roles import Role, grant
from models.service_package import DEFAULT_PACKAGE
from tests.conftest import requires_servers

pytestmark = pytest.mark.usefixtures("demo")

ELDER = "demo-elder"  # 刘桂芳, 5号楼1单元201, born 1946-04-12, verified lives alone
STEWARD = "demo-steward"  # 何管家, cloud steward of 米家社区
PROXY = "demo-proxy"  # 党代办, red proxy of 第二网格 (4号楼, 5号楼)
DEPT = "demo-dept"  # 民政窗口, staff of the sub-district's 民政
STAFF = "demo-staff"  # 周社工, community staff of 米家社区
DIBAO = "低保申请"


def picture(colour: str = "gray") -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (16, 12), colour).save(out, "JPEG")
    return out.getvalue()


async def who(openid: str) -> Resident:
    acct = await WechatAccount.get(openid=openid).prefetch_related("resident")
    return acct.resident  # type: ignore[no-any-return]


async def texts_to(openid: str) -> list[str]:
    rows = await OutboxMessage.filter(openid=openid, kind="text").order_by("id")
    return [str(row.payload["content"]) for row in rows]


async def told(openid: str, needle: str) -> int:
    """How many texts to ``openid`` contain ``needle``."""
    return sum(needle in text for text in await texts_to(openid))


async def open_prompts(openid: str, flow: str, step: str) -> list[PendingPrompt]:
    return list(await PendingPrompt.filter(openid=openid, flow=flow, step=step, closed_at=None).order_by("id"))


async def item_named(name: str, now: datetime) -> ErrandItem:
    mijia = await Community.get(name="米家社区")
    return next(i for i in await core.ensure_catalogue(mijia.id, now) if i.name == name)


async def ask(name: str, now: datetime, *, resident: Resident | None = None, by: Resident | None = None,
              via: str = Via.CHAT) -> Errand:
    elder = resident or await who(ELDER)
    errand, created = await core.create_errand(item_id=(await item_named(name, now)).id, resident_id=elder.id,
                                               requested_by_id=(by or elder).id, via=via, now=now)
    assert created
    return errand


async def shoot(client: Any, errand_id: int, document: str, by: Resident, now: datetime, tag: str = "") -> ErrandPhoto:
    """Send a photo of ``document`` the way WeChat does: a media id the fake API serves."""
    media_id = f"m-{errand_id}-{len(await ErrandPhoto.all())}{tag}"
    client.app[SERVICES].fake.add_media(media_id, picture())
    return await core.add_photo(errand_id, document, by_id=by.id, now=now, media_id=media_id)


async def shoot_all(client: Any, errand: Errand, by: Resident, now: datetime) -> None:
    for document in errand.documents:
        await shoot(client, errand.id, document, by, now)


async def state_of(errand_id: int) -> str:
    return (await Errand.get(id=errand_id)).state


async def grid_named(name: str) -> Grid:
    return await Grid.get(name=name)


async def red_proxy(name: str, openid: str, grid: str, now: datetime) -> Resident:
    g = await grid_named(grid)
    building = await Building.filter(grid_id=g.id).order_by("id").first()
    assert building is not None
    person = await Resident.create(name=name, mobile=f"1390000{len(await Resident.all()):04d}",
                                   community_id=g.community_id, building=building, unit="1", room="999",  # type: ignore[attr-defined]
                                   status="verified", created_at=now)
    await grant(resident_id=person.id, role=Role.RED_PROXY, scope_id=g.id, now=now)
    await WechatAccount.create(openid=openid, channel="chat", resident=person, created_at=now)
    return person


async def plain_resident(name: str, openid: str | None, now: datetime, building: str = "1号楼") -> Resident:
    b = await Building.get(name=building)
    person = await Resident.create(name=name, mobile=f"1391111{len(await Resident.all()):04d}",
                                   community_id=b.community_id, building=b, unit="2", room="302",  # type: ignore[attr-defined]
                                   status="verified", created_at=now)
    if openid:
        await WechatAccount.create(openid=openid, channel="chat", resident=person, created_at=now)
    return person


async def points(person: Resident, now: datetime) -> int:
    return await balance(await points_of(person.id, now))


# ---------------------------------------------------------------------------- the whole life


async def test_a_dibao_application_from_the_first_photo_to_the_rating_with_a_red_proxy_at_the_door(
        client: Any, clock: FrozenClock) -> None:
    now = clock.now()
    elder, steward, proxy, dept = (await who(ELDER), await who(STEWARD), await who(PROXY), await who(DEPT))

    # what she may ask for: 高龄津贴 (80+) yes, 残疾人补贴 and 退役军人优待 not, with the reason
    offered = {item.name: why for item, why in await core.items_for(elder, now)}
    assert len(offered) == len(DEFAULT_PACKAGE) and offered[DIBAO] is None and offered["高龄津贴"] is None
    assert offered["残疾人补贴"] == "仅限残疾居民申请（需社区核实身份）"
    assert offered["退役军人优待"] == "仅限退伍军人居民申请（需社区核实身份）"

    errand = await ask(DIBAO, now)
    assert (errand.state, errand.needs_proxy, errand.proxy_reason, errand.proxy_level) == (
        ErrandState.COLLECTING, True, "lives_alone", ProxyLevel.GRID)
    assert errand.documents == ["身份证", "户口本", "家庭收入证明", "银行卡"] and errand.expected_days == 30
    department = await Department.get(name="民政")
    assert errand.department_id == department.id
    # asking again is the same errand
    again, created = await core.create_errand(item_id=errand.item_id, resident_id=elder.id, requested_by_id=elder.id,
                                              via=Via.CHAT, now=now)
    assert (again.id, created) == (errand.id, False)
    # the steward hears of it; the grid's red proxy is asked, the elder's name masked
    assert await told(STEWARD, f"新的代办申请：5号楼 刘**的“{DIBAO}”（编号{errand.id}），请在120分钟内接单") == 1
    [offer] = await open_prompts(PROXY, core.OFFER_FLOW, core.OFFER_STEP)
    assert offer.data == {"errand_id": errand.id}
    offer_text = "\n".join(await texts_to(PROXY))
    assert "5号楼 刘**（独居）需要红色代办员上门办理“低保申请”" in offer_text and "刘桂芳" not in offer_text
    assert "1. 接单" in offer_text and "2. 不接" in offer_text
    assert await told(ELDER, "申请已提交") == 0  # she asked: the reply told her

    # the proxy takes it; she hears who comes
    clock.advance(timedelta(minutes=3))
    errand = await core.accept_offer(errand.id, proxy.id, clock.now())
    assert (errand.proxy_id, errand.proxy_level) == (proxy.id, ProxyLevel.TAKEN)
    assert await told(ELDER, "红色代办员党代办（电话13904180034）接下了“低保申请”") == 1
    assert not await open_prompts(PROXY, core.OFFER_FLOW, core.OFFER_STEP)
    assert await core.accept_offer(errand.id, proxy.id, clock.now()) == errand  # a double tap changes nothing
    assert await told(ELDER, "接下了") == 1

    # the steward takes it (the first response): the 120-minute watch stops
    errand = await core.take(errand.id, steward.id, clock.now())
    assert errand.first_response_at == clock.now()
    assert await told(ELDER, "云管家何管家已接手“低保申请”。还缺：身份证、户口本、家庭收入证明、银行卡") == 1
    assert not await DueAction.filter(action=core.FIRST_RESPONSE, status=ActionStatus.PENDING).exists()

    # the photos, one by one: the checklist ticks off, the last one sends it to review
    for document in errand.documents[:-1]:
        photo = await shoot(client, errand.id, document, elder, clock.now())
        assert photo.state == PhotoState.PENDING and photo.size > 0 and len(photo.sha256) == 64
    assert await state_of(errand.id) == ErrandState.COLLECTING
    errand = await Errand.get(id=errand.id)
    assert core.missing_documents(errand, await core.photos_of(errand.id)) == ["银行卡"]
    await shoot(client, errand.id, "银行卡", elder, clock.now())
    assert await state_of(errand.id) == ErrandState.REVIEW
    assert await told(STEWARD, "5号楼 刘**的“低保申请”材料已上传齐，请预审") == 1
    assert [d.state for d in core.checklist(errand, await core.photos_of(errand.id))] == [PhotoState.PENDING] * 4

    # pre-review: three accepted, the household register asked again with a reason she reads
    photos = {p.document: p for p in await core.photos_of(errand.id)}
    for document in ("身份证", "家庭收入证明", "银行卡"):
        await core.review_photo(photos[document].id, steward.id, accept=True, now=clock.now())
    with pytest.raises(UserFacingError, match="重拍的原因"):
        await core.review_photo(photos["户口本"].id, steward.id, accept=False, reason="糊", now=clock.now())
    await core.review_photo(photos["户口本"].id, steward.id, accept=False, reason="户主页照片模糊，请对准重拍",
                            now=clock.now())
    assert await state_of(errand.id) == ErrandState.RESHOOT
    [reshoot] = await open_prompts(ELDER, core.ERRAND_FLOW, core.RESHOOT_STEP)
    assert reshoot.question["kind"] == "photo"
    assert reshoot.data == {"errand_id": errand.id, "document": "户口本", "photo_id": photos["户口本"].id}
    assert await told(ELDER, "材料“户口本”需要重拍：户主页照片模糊，请对准重拍。请直接发一张新的照片。") == 1
    assert await told(PROXY, "刘桂芳的“低保申请”材料“户口本”需要重拍") == 1

    # the proxy photographs it again at her home: the old photo is replaced, the question withdrawn
    clock.advance(timedelta(hours=2))
    new = await shoot(client, errand.id, "户口本", proxy, clock.now())
    assert (await ErrandPhoto.get(id=photos["户口本"].id)).state == PhotoState.REPLACED
    assert not await open_prompts(ELDER, core.ERRAND_FLOW, core.RESHOOT_STEP)
    assert await state_of(errand.id) == ErrandState.REVIEW
    assert await told(ELDER, "“低保申请”的材料已全部上传，云管家正在预审") == 1  # the proxy sent it: she is told
    await core.review_photo(new.id, steward.id, accept=True, now=clock.now())
    errand = await Errand.get(id=errand.id)
    assert errand.state == ErrandState.READY and errand.complete_at == clock.now()
    assert await told(ELDER, "“低保申请”的材料已全部预审通过，云管家会尽快转交民政办理") == 1

    # transfer to 民政: its staff hear of it; their word reaches her
    errand = await core.transfer(errand.id, steward.id, clock.now())
    assert (errand.state, errand.department_id, errand.transferred_at) == (
        ErrandState.TRANSFERRED, department.id, clock.now())
    assert await told(DEPT, f"新的转办件：米家社区5号楼 刘**的“低保申请”（编号{errand.id}）") == 1
    assert await told(ELDER, "已转交民政办理，一般需要30天") == 1
    assert [row.errand.id for row in await core.department_queue(dept.id, clock.now())] == [errand.id]
    clock.advance(timedelta(days=1))
    await core.set_progress(errand.id, dept.id, Progress.RECEIVED, clock.now())
    assert await told(ELDER, "民政已受理“低保申请”，正在办理") == 1
    with pytest.raises(UserFacingError, match="写明原因"):
        await core.set_progress(errand.id, dept.id, Progress.MORE_NEEDED, clock.now())

    # more needed: a new document on her checklist, back to collecting, then review and transfer again
    clock.advance(timedelta(days=2))
    errand = await core.set_progress(errand.id, dept.id, Progress.MORE_NEEDED, clock.now(), note="需要近三个月银行流水",
                                     more_documents=["银行流水"])
    assert errand.state == ErrandState.COLLECTING and errand.documents[-1] == "银行流水"
    assert await told(ELDER, "民政说“低保申请”需要补充材料：需要近三个月银行流水。请拍照上传：银行流水") == 1
    assert await told(STEWARD, "民政：5号楼 刘**的“低保申请”需补充材料") == 1
    assert await core.department_queue(dept.id, clock.now()) == []
    extra = await shoot(client, errand.id, "银行流水", proxy, clock.now())
    await core.review_photo(extra.id, steward.id, accept=True, now=clock.now())
    errand = await core.transfer(errand.id, steward.id, clock.now())
    assert errand.state == ErrandState.TRANSFERRED and errand.progress == ""

    # the custody log: an original taken for the department, the result in
    clock.advance(timedelta(days=1))
    entry = await core.take_original(errand.id, proxy.id, "户口本", clock.now(), note="民政窗口核验")
    assert await core.take_original(errand.id, proxy.id, "户口本", clock.now()) == entry  # a double tap
    assert await told(ELDER, "取走了您的户口本原件，办完会归还") == 1
    clock.advance(timedelta(days=3))
    errand = await core.set_progress(errand.id, dept.id, Progress.APPROVED, clock.now())
    assert errand.state == ErrandState.RESULT and errand.result_at == clock.now()
    assert await told(ELDER, "好消息：“低保申请”已办结（通过）。红色代办员党代办会把结果送到家") == 1
    assert await told(PROXY, "请把结果送到5号楼1单元201室，别忘了归还原件：户口本。") == 1

    # delivery is refused while the original is out; returned, delivered at the door
    with pytest.raises(UserFacingError, match="还有原件没有归还：户口本"):
        await core.deliver(errand.id, proxy.id, clock.now())
    with pytest.raises(UserFacingError, match="由红色代办员上门送达"):
        await core.deliver(errand.id, steward.id, clock.now())
    clock.advance(timedelta(hours=1))
    returned = await core.return_original(entry.id, proxy.id, clock.now())
    assert returned.returned_at == clock.now()
    assert (await core.return_original(entry.id, proxy.id, clock.now() + timedelta(hours=1))).returned_at == clock.now()
    assert await told(ELDER, "户口本原件已由红色代办员党代办于12月4日") == 1
    errand = await core.deliver(errand.id, proxy.id, clock.now())
    assert (errand.state, errand.at_door, errand.delivered_at) == (ErrandState.DELIVERED, True, clock.now())
    [rate] = await open_prompts(ELDER, core.ERRAND_FLOW, core.RATE_STEP)
    assert rate.question["values"] == [1, 2, 3, 4, 5] and rate.data == {"errand_id": errand.id}
    assert await told(ELDER, "“低保申请”结果已送达（已办结（通过））。请给这次服务打个分") == 1

    # she rates it: closed, the proxy's 20 points once, however often she confirms
    before = await points(proxy, clock.now())
    errand = await core.confirm(errand.id, elder.id, 5, clock.now(), note="很方便")
    assert (errand.state, errand.rating, errand.rating_note) == (ErrandState.CLOSED, 5, "很方便")
    await core.confirm(errand.id, elder.id, 3, clock.now())
    assert (await Errand.get(id=errand.id)).rating == 5
    assert await points(proxy, clock.now()) == before + 20
    assert await Entry.filter(key=f"errand:{errand.id}:points").count() == 1
    assert await told(PROXY, "刘桂芳确认了“低保申请”的代办，评分5分。已为您记入20积分") == 1
    assert not await open_prompts(ELDER, core.ERRAND_FLOW, core.RATE_STEP)
    assert not await DueAction.filter(action=core.FEEDBACK_CLOSE, status=ActionStatus.PENDING).exists()
    assert (await check_books())["points"] == 0

    kinds = [e.kind for e in await core.events_of(errand.id)]
    assert kinds[:3] == [core.Kind.CREATED, core.Kind.OFFERED, core.Kind.PROXY_ACCEPTED]
    for kind in (core.Kind.TAKEN, core.Kind.REVIEWED, core.Kind.TRANSFERRED, core.Kind.PROGRESS,
                 core.Kind.ORIGINAL_TAKEN, core.Kind.ORIGINAL_RETURNED, core.Kind.DELIVERED):
        assert kind in kinds
    assert kinds[-1] == core.Kind.CONFIRMED
    assert [(c.document, c.returned_at is not None) for c in await core.custody_of(errand.id)] == [("户口本", True)]


async def test_confirming_at_once_many_times_credits_the_points_once(client: Any, clock: FrozenClock) -> None:
    errand = await delivered_by_proxy(client, clock)
    elder, proxy = await who(ELDER), await who(PROXY)
    results = await asyncio.gather(*[core.confirm(errand.id, elder.id, 4, clock.now()) for _ in range(6)],
                                   return_exceptions=True)
    assert all(isinstance(r, Errand) and r.state == ErrandState.CLOSED for r in results), results
    assert await points(proxy, clock.now()) == 20
    assert await Entry.filter(key=f"errand:{errand.id}:points").count() == 1
    assert await told(PROXY, "已为您记入20积分") == 1


async def delivered_by_proxy(client: Any, clock: FrozenClock, *, proxy_points: int | None = None) -> Errand:
    """刘桂芳's 低保 application, the proxy took it, everything accepted, approved and delivered."""
    elder, steward, proxy, dept = (await who(ELDER), await who(STEWARD), await who(PROXY), await who(DEPT))
    if proxy_points is not None:
        await core.save_settings(elder.community_id, now=clock.now(), actor_id=None,  # type: ignore[attr-defined]
                                 proxy_points=proxy_points)
    errand = await ask(DIBAO, clock.now())
    await core.accept_offer(errand.id, proxy.id, clock.now())
    await shoot_all(client, errand, elder, clock.now())
    for photo in await core.photos_of(errand.id):
        await core.review_photo(photo.id, steward.id, accept=True, now=clock.now())
    await core.transfer(errand.id, steward.id, clock.now())
    await core.set_progress(errand.id, dept.id, Progress.APPROVED, clock.now())
    return await core.deliver(errand.id, proxy.id, clock.now())


async def test_a_delivered_errand_nobody_confirms_closes_after_the_feedback_days(
        client: Any, clock: FrozenClock, config: Config) -> None:
    errand = await delivered_by_proxy(client, clock)
    proxy = await who(PROXY)
    clock.advance(timedelta(days=config.errands.feedback_days) - timedelta(minutes=1))
    await sweep_due(clock.now())
    assert await state_of(errand.id) == ErrandState.DELIVERED
    clock.advance(timedelta(minutes=2))
    await sweep_due(clock.now())
    closed = await Errand.get(id=errand.id)
    assert (closed.state, closed.rating) == (ErrandState.CLOSED, None)
    assert await points(proxy, clock.now()) == 20
    assert await told(PROXY, "送达后未评价，已自动办结。已为您记入20积分") == 1
    # her late rating changes nothing, and pays nothing twice
    await core.confirm(errand.id, (await who(ELDER)).id, 5, clock.now())
    assert (await Errand.get(id=errand.id)).rating is None
    assert await Entry.filter(key=f"errand:{errand.id}:points").count() == 1


async def test_without_a_proxy_the_steward_tells_the_result_and_no_points_move(
        client: Any, clock: FrozenClock) -> None:
    now = clock.now()
    steward, dept = await who(STEWARD), await who(DEPT)
    young = await plain_resident("钱小明", "o-young", now)
    errand = await ask("医保参保", now, resident=young)
    assert (errand.needs_proxy, errand.proxy_level) == (False, ProxyLevel.NONE)
    assert not await PendingPrompt.filter(flow=core.OFFER_FLOW).exists()
    await shoot_all(client, errand, young, now)
    for photo in await core.photos_of(errand.id):
        await core.review_photo(photo.id, steward.id, accept=True, now=now)
    await core.transfer(errand.id, steward.id, now)
    await core.set_progress(errand.id, steward.id, Progress.REJECTED, now, note="已在外地参保")
    assert await told("o-young", "“医保参保”未通过：已在外地参保。云管家会告诉您结果") == 1
    for nobody in (young, dept):  # 民政's staff have nothing to do with 医保
        with pytest.raises(NotFound):
            await core.deliver(errand.id, nobody.id, now)
    errand = await core.deliver(errand.id, steward.id, now)
    assert (errand.state, errand.at_door) == (ErrandState.DELIVERED, False)
    await core.confirm(errand.id, young.id, 4, now)
    assert not await Entry.filter(key=f"errand:{errand.id}:points").exists()


# ---------------------------------------------------------------------------- photos


async def test_a_photo_wechat_cannot_give_now_is_fetched_later_and_an_expired_one_is_lost(
        client: Any, clock: FrozenClock) -> None:
    fake = client.app[SERVICES].fake
    elder = await who(ELDER)
    errand = await ask(DIBAO, clock.now())
    fake.add_media("m-busy", picture("white"))
    fake.fail("/cgi-bin/media/get", -1)  # system busy, once
    photo = await core.add_photo(errand.id, "身份证", by_id=elder.id, now=clock.now(), media_id="m-busy")
    assert photo.state == PhotoState.SAVING and not photo.file_name
    assert await DueAction.filter(action=core.KEEP_PHOTO, target=f"photo:{photo.id}").count() == 1
    # the same photo again (WeChat's retry) is the same row
    again = await core.add_photo(errand.id, "身份证", by_id=elder.id, now=clock.now(), media_id="m-busy")
    assert again.id == photo.id
    clock.advance(timedelta(minutes=1))
    assert (await sweep_due(clock.now()))["done"] >= 1
    assert (await ErrandPhoto.get(id=photo.id)).state == PhotoState.PENDING

    # a media id WeChat no longer has: lost, with what to do
    lost = await core.add_photo(errand.id, "户口本", by_id=elder.id, now=clock.now(), media_id="m-gone")
    assert lost.state == PhotoState.LOST and "请重新拍一张" in lost.reason
    errand = await Errand.get(id=errand.id)
    assert errand.state == ErrandState.COLLECTING
    assert core.missing_documents(errand, await core.photos_of(errand.id)) == ["户口本", "家庭收入证明", "银行卡"]

    # refusals
    with pytest.raises(UserFacingError, match="不需要“结婚证”"):
        await core.add_photo(errand.id, "结婚证", by_id=elder.id, now=clock.now(), media_id="m-x")
    stranger = await plain_resident("路人甲", None, clock.now())
    with pytest.raises(Forbidden):
        await core.add_photo(errand.id, "户口本", by_id=stranger.id, now=clock.now(), media_id="m-x")
    with pytest.raises(UserFacingError, match="请发送一张照片"):
        await core.add_photo(errand.id, "户口本", by_id=elder.id, now=clock.now())


async def test_a_photo_wechat_never_gives_is_lost_before_the_sweep_gives_up(
        client: Any, clock: FrozenClock) -> None:
    fake = client.app[SERVICES].fake
    elder = await who(ELDER)
    errand = await ask(DIBAO, clock.now())
    fake.add_media("m-stuck", picture())
    fake.fail("/cgi-bin/media/get", -1, times=10)
    photo = await core.add_photo(errand.id, "身份证", by_id=elder.id, now=clock.now(), media_id="m-stuck")
    for _ in range(6):
        clock.advance(timedelta(minutes=17))
        await sweep_due(clock.now())
    photo = await ErrandPhoto.get(id=photo.id)
    assert photo.state == PhotoState.LOST and "暂时取不到" in photo.reason
    assert await told(ELDER, "“身份证”照片没能保存：微信上的图片暂时取不到") == 1
    assert (await DueAction.get(action=core.KEEP_PHOTO)).status == ActionStatus.DONE


# ---------------------------------------------------------------------------- the offer


async def test_the_offer_widens_from_the_grid_to_the_community_then_staff_assign(
        client: Any, clock: FrozenClock) -> None:
    far = await red_proxy("远代办", "proxy-far", "第一网格", clock.now())
    proxy, staff = await who(PROXY), await who(STAFF)
    errand = await ask(DIBAO, clock.now())
    assert await open_prompts(PROXY, core.OFFER_FLOW, core.OFFER_STEP)
    assert not await open_prompts("proxy-far", core.OFFER_FLOW, core.OFFER_STEP)
    assert [e.id for e in (await core.proxy_tasks(far.id, clock.now()))[1]] == []
    with pytest.raises(UserFacingError, match="先由本网格的代办员接单，30分钟内"):
        await core.accept_offer(errand.id, far.id, clock.now())

    clock.advance(timedelta(minutes=29))
    await sweep_due(clock.now())
    assert (await Errand.get(id=errand.id)).proxy_level == ProxyLevel.GRID
    clock.advance(timedelta(minutes=1))
    await sweep_due(clock.now())
    assert (await Errand.get(id=errand.id)).proxy_level == ProxyLevel.COMMUNITY
    assert len(await open_prompts("proxy-far", core.OFFER_FLOW, core.OFFER_STEP)) == 1
    assert len(await open_prompts(PROXY, core.OFFER_FLOW, core.OFFER_STEP)) == 1  # asked once, still open
    assert [e.id for e in (await core.proxy_tasks(far.id, clock.now()))[1]] == [errand.id]

    clock.advance(timedelta(minutes=30))
    await sweep_due(clock.now())
    assert (await Errand.get(id=errand.id)).proxy_level == ProxyLevel.STAFF
    assert await told(STAFF, "5号楼 刘**的“低保申请”需要红色代办员上门，暂时没有代办员接单。请指派一位") == 1
    assert await told(STEWARD, "请指派一位") == 1
    await sweep_due(clock.now() + timedelta(hours=3))
    assert await told(STAFF, "请指派一位") == 1  # nothing further

    errand = await core.assign_proxy(errand.id, far.id, staff.id, clock.now())
    assert (errand.proxy_id, errand.proxy_level) == (far.id, ProxyLevel.TAKEN)
    assert await told("proxy-far", "社区请您为刘桂芳（5号楼1单元201室，电话13904180032）上门办理“低保申请”") == 1
    assert await told(ELDER, "红色代办员远代办") == 1
    assert not await open_prompts(PROXY, core.OFFER_FLOW, core.OFFER_STEP)
    with pytest.raises(UserFacingError, match="已由其他代办员接单"):
        await core.accept_offer(errand.id, proxy.id, clock.now())
    # another proxy instead, while the first holds no original
    errand = await core.assign_proxy(errand.id, proxy.id, staff.id, clock.now())
    assert errand.proxy_id == proxy.id
    assert await told("proxy-far", "已改由其他代办员办理") == 1


async def test_when_every_grid_proxy_declines_the_offer_widens_at_once(client: Any, clock: FrozenClock) -> None:
    await red_proxy("远代办", "proxy-far", "第一网格", clock.now())
    proxy = await who(PROXY)
    errand = await ask(DIBAO, clock.now())
    errand = await core.decline_offer(errand.id, proxy.id, clock.now())
    assert errand.proxy_level == ProxyLevel.COMMUNITY
    assert len(await open_prompts("proxy-far", core.OFFER_FLOW, core.OFFER_STEP)) == 1


async def test_staff_mark_a_resident_as_needing_a_proxy(client: Any, clock: FrozenClock) -> None:
    young = await plain_resident("钱小明", "o-young", clock.now())
    steward = await who(STEWARD)
    errand = await ask("医保参保", clock.now(), resident=young)
    with pytest.raises(NotFound):
        await core.require_proxy(errand.id, young.id, clock.now())
    errand = await core.require_proxy(errand.id, steward.id, clock.now())
    assert (errand.needs_proxy, errand.proxy_reason, errand.proxy_level) == (True, "staff", ProxyLevel.COMMUNITY)
    assert "1号楼 钱**（社区标记）需要红色代办员上门" in "\n".join(await texts_to(PROXY))
    assert (await core.require_proxy(errand.id, steward.id, clock.now())).version == errand.version


async def test_two_proxies_accept_at_once_and_one_gets_it(client: Any, clock: FrozenClock) -> None:
    other = await red_proxy("二代办", "proxy-two", "第二网格", clock.now())
    proxy = await who(PROXY)
    errand = await ask(DIBAO, clock.now())
    assert len(await open_prompts("proxy-two", core.OFFER_FLOW, core.OFFER_STEP)) == 1
    results = await asyncio.gather(core.accept_offer(errand.id, proxy.id, clock.now()),
                                   core.accept_offer(errand.id, other.id, clock.now()), return_exceptions=True)
    won = [r for r in results if isinstance(r, Errand)]
    lost = [r for r in results if isinstance(r, UserFacingError)]
    assert len(won) == 1 and len(lost) == 1 and "已由其他代办员接单" in lost[0].message
    stored = await Errand.get(id=errand.id)
    assert stored.proxy_id == won[0].proxy_id and stored.proxy_id in (proxy.id, other.id)
    assert await ErrandEvent.filter(errand_id=errand.id, kind=core.Kind.PROXY_ACCEPTED).count() == 1
    assert await told(ELDER, "接下了“低保申请”") == 1
    assert not await PendingPrompt.filter(flow=core.OFFER_FLOW, closed_at=None).exists()
    assert not await DueAction.filter(action=core.OFFER_ESCALATE, status=ActionStatus.PENDING).exists()


@requires_servers
async def test_ten_proxies_accept_at_once_on_postgres_and_one_gets_it(client: Any, clock: FrozenClock) -> None:
    proxies = [await red_proxy(f"代办{i}", f"proxy-{i}", "第二网格", clock.now()) for i in range(10)]
    errand = await ask(DIBAO, clock.now())
    results = await asyncio.gather(*[core.accept_offer(errand.id, p.id, clock.now()) for p in proxies],
                                   return_exceptions=True)
    assert sum(isinstance(r, Errand) for r in results) == 1
    assert all(isinstance(r, Errand) or (isinstance(r, UserFacingError) and "已由其他代办员接单" in r.message)
               for r in results), results
    assert await ErrandEvent.filter(errand_id=errand.id, kind=core.Kind.PROXY_ACCEPTED).count() == 1


# ---------------------------------------------------------------------------- the first response


async def test_hardship_not_taken_within_15_minutes_alerts_the_stewards_then_community_staff(
        client: Any, clock: FrozenClock) -> None:
    mijia = await Community.get(name="米家社区")
    second = await plain_resident("孙管家", "steward-two", clock.now())
    await grant(resident_id=second.id, role=Role.STEWARD, scope_id=mijia.id, now=clock.now())
    errand = await ask("困难认定", clock.now())
    assert errand.first_response_minutes == 15
    assert await told(STEWARD, "请在15分钟内接单") == 1

    clock.advance(timedelta(minutes=14, seconds=59))
    await sweep_due(clock.now())
    assert await told(STEWARD, "无人接单") == 0
    clock.advance(timedelta(seconds=1))
    await sweep_due(clock.now())
    alert = f"⚠ 5号楼 刘**的“困难认定”（编号{errand.id}）已超过15分钟无人接单，请尽快回复“代办队列”接单。"
    assert await told(STEWARD, alert) == 1 and await told("steward-two", alert) == 1
    assert await told(STAFF, "没有云管家响应") == 0
    rows = await core.steward_queue((await who(STEWARD)).id, clock.now())
    assert [(r.errand.id, r.overdue) for r in rows] == [(errand.id, True)] and rows[0].waiting.startswith("等接单")

    clock.advance(timedelta(minutes=15))
    await sweep_due(clock.now())
    assert await told(STAFF, "已超过30分钟没有云管家响应，请安排人员尽快处理") == 1
    await sweep_due(clock.now() + timedelta(days=1))
    assert await told(STEWARD, "无人接单") == 1 and await told(STAFF, "没有云管家响应") == 1
    assert await ErrandEvent.filter(errand_id=errand.id, kind=core.Kind.ALERT).count() == 2


async def test_a_request_taken_in_time_alerts_nobody(client: Any, clock: FrozenClock) -> None:
    errand = await ask("困难认定", clock.now())
    clock.advance(timedelta(minutes=10))
    await core.take(errand.id, (await who(STEWARD)).id, clock.now())
    clock.advance(timedelta(hours=1))
    await sweep_due(clock.now())
    assert await told(STEWARD, "无人接单") == 0 and await told(STAFF, "没有云管家响应") == 0
    row = (await core.steward_queue((await who(STEWARD)).id, clock.now()))[0]
    # no other red proxy in the community: after 30 minutes staff are to assign one
    assert row.overdue is False and row.waiting == "等居民上传：身份证、户口本、家庭收入证明；需指派代办员"


async def test_a_steward_cannot_take_what_another_steward_has(client: Any, clock: FrozenClock) -> None:
    mijia = await Community.get(name="米家社区")
    second = await plain_resident("孙管家", "steward-two", clock.now())
    await grant(resident_id=second.id, role=Role.STEWARD, scope_id=mijia.id, now=clock.now())
    errand = await ask(DIBAO, clock.now())
    await core.take(errand.id, (await who(STEWARD)).id, clock.now())
    with pytest.raises(UserFacingError, match="由何管家负责"):
        await core.take(errand.id, second.id, clock.now())
    assert [r.errand.id for r in await core.steward_queue(second.id, clock.now())] == []
    # a steward of another community does not even see it
    xinqiu = await Community.get(name="新邱社区")
    far = await plain_resident("远管家", None, clock.now(), building="东1栋")
    await grant(resident_id=far.id, role=Role.STEWARD, scope_id=xinqiu.id, now=clock.now())
    with pytest.raises(NotFound):
        await core.take(errand.id, far.id, clock.now())
    with pytest.raises(NotFound):
        await core.get_errand(errand.id, far.id)


# ---------------------------------------------------------------------------- digests


async def test_digests_go_at_each_time_once_and_only_the_latest_when_several_are_due(
        client: Any, clock: FrozenClock, config: Config) -> None:
    tz = core.cases.CONTEXT.tz
    steward = await who(STEWARD)
    old = await ask("困难认定", clock.now())  # 09:00, nobody takes it: overdue by the digest
    clock.advance(timedelta(minutes=30))
    young = await plain_resident("钱小明", "o-young", clock.now())
    newer = await ask("医保参保", clock.now(), resident=young)
    await core.take(newer.id, steward.id, clock.now())
    assert await core.run_digests(clock.now(), tz) == {"digests": 0, "stewards": 0, "residents": 0}  # 09:30

    clock.set(datetime(2026, 11, 27, 2, 0, tzinfo=UTC))  # 10:00
    assert await core.run_digests(clock.now(), tz) == {"digests": 1, "stewards": 1, "residents": 2}
    [digest] = [t for t in await texts_to(STEWARD) if "待办汇总" in t]
    lines = digest.splitlines()
    assert lines[0] == "【红色代办】11月27日10:00待办汇总：共2件，1件已超时。"
    assert lines[1].startswith("1. ⚠困难认定 · 5号楼 刘** · 等接单；等居民上传：身份证、户口本、家庭收入证明")
    assert lines[1].endswith("· 已1小时")
    assert lines[2].startswith("2. 医保参保 · 1号楼 钱** · 等居民上传：身份证、户口本") and "⚠" not in lines[2]
    assert lines[-1] == "回复“代办队列”处理。"
    assert await told(ELDER, "代办进度（11月27日10:00）") == 1
    assert await told(ELDER, "· 您的“困难认定”：待上传材料。还缺：身份证、户口本、家庭收入证明。"
                             "请回复“我的代办”继续拍照。") == 1
    assert await told("o-young", "· 您的“医保参保”：待上传材料。") == 1

    # again at 10:05, or by a second scheduler: nothing more
    clock.advance(timedelta(minutes=5))
    assert (await core.run_digests(clock.now(), tz))["digests"] == 0
    assert await told(STEWARD, "待办汇总") == 1

    # 16:00 through the scheduler's job
    clock.set(datetime(2026, 11, 27, 8, 0, tzinfo=UTC))
    scheduler = service_scheduler(config, clock)
    # a job never run looks back its grace time: several fire times, one digest
    assert {outcome for _, _, outcome in await scheduler.run_due(ERRAND_DIGEST_JOB)} == {"done"}
    assert await told(STEWARD, "11月27日16:00待办汇总") == 1 and await told(ELDER, "代办进度（11月27日16:00）") == 1

    # the next day the scheduler was down until 17:00: 10:00 and 16:00 are both due, only 16:00 goes
    clock.set(datetime(2026, 11, 28, 9, 0, tzinfo=UTC))
    assert (await core.run_digests(clock.now(), tz))["digests"] == 1
    assert await told(STEWARD, "11月28日16:00待办汇总") == 1 and await told(STEWARD, "11月28日10:00") == 0
    assert (await core.run_digests(clock.now() + timedelta(minutes=5), tz))["digests"] == 0

    # not in the night: a digest the scheduler missed all evening waits for the next time
    await core.save_settings(old.community_id, now=clock.now(), actor_id=None, digest_times=["21:00"])
    clock.set(datetime(2026, 11, 28, 14, 0, tzinfo=UTC))  # 22:00
    assert (await core.run_digests(clock.now(), tz, quiet_start=time(21, 30)))["digests"] == 0
    assert (await core.run_digests(clock.now(), tz))["digests"] == 1

    # a community's own times
    await core.save_settings(old.community_id, now=clock.now(), actor_id=None, digest_times=["9:30", "18:00"])
    clock.set(datetime(2026, 11, 29, 10, 0, tzinfo=UTC))  # 18:00 the day after
    assert (await core.run_digests(clock.now(), tz))["digests"] == 1
    assert await told(STEWARD, "11月29日18:00待办汇总") == 1


async def test_no_digest_for_a_community_without_open_errands(client: Any, clock: FrozenClock) -> None:
    errand = await ask(DIBAO, clock.now())
    await core.cancel(errand.id, (await who(ELDER)).id, clock.now())
    clock.set(datetime(2026, 11, 27, 2, 0, tzinfo=UTC))
    assert (await core.run_digests(clock.now(), core.cases.CONTEXT.tz))["digests"] == 0


# ---------------------------------------------------------------------------- cancelling


async def test_she_withdraws_it_before_the_transfer_and_everyone_involved_hears(
        client: Any, clock: FrozenClock) -> None:
    elder, proxy = await who(ELDER), await who(PROXY)
    errand = await ask(DIBAO, clock.now())
    await core.accept_offer(errand.id, proxy.id, clock.now())
    await core.take(errand.id, (await who(STEWARD)).id, clock.now())
    await core.take_original(errand.id, proxy.id, "户口本", clock.now())
    errand = await core.cancel(errand.id, elder.id, clock.now(), reason="家人已帮忙办了")
    assert (errand.state, errand.closed_at) == (ErrandState.CANCELLED, clock.now())
    assert await told(PROXY, "刘桂芳的“低保申请”已取消（家人已帮忙办了），不用再去了，谢谢您！"
                             "请尽快归还原件：户口本") == 1
    assert await told(STEWARD, "5号楼 刘**的“低保申请”已取消（家人已帮忙办了）") == 1
    assert await told(ELDER, "已取消") == 0  # she did it
    assert not await PendingPrompt.filter(subject__startswith=f"errand:{errand.id}:", closed_at=None).exists()
    assert not await DueAction.filter(target=f"errand:{errand.id}", status=ActionStatus.PENDING).exists()
    assert (await core.cancel(errand.id, elder.id, clock.now())).version == errand.version  # a retry
    # the original still goes back, and is logged
    [entry] = await core.custody_of(errand.id)
    assert (await core.return_original(entry.id, proxy.id, clock.now())).returned_at == clock.now()
    # she may ask again
    assert (await ask(DIBAO, clock.now())).id != errand.id


async def test_after_the_transfer_only_staff_cancel_and_with_a_reason(client: Any, clock: FrozenClock) -> None:
    elder, steward = await who(ELDER), await who(STEWARD)
    young = await plain_resident("钱小明", "o-young", clock.now())
    errand = await ask("临时救助", clock.now(), resident=young)
    await shoot_all(client, errand, young, clock.now())
    for photo in await core.photos_of(errand.id):
        await core.review_photo(photo.id, steward.id, accept=True, now=clock.now())
    await core.transfer(errand.id, steward.id, clock.now())
    with pytest.raises(UserFacingError, match="不能自己取消"):
        await core.cancel(errand.id, young.id, clock.now())
    with pytest.raises(UserFacingError, match="取消的原因"):
        await core.cancel(errand.id, steward.id, clock.now())
    with pytest.raises(NotFound):
        await core.cancel(errand.id, elder.id, clock.now(), reason="不是我的")
    await core.cancel(errand.id, steward.id, clock.now(), reason="居民已在外地办理")
    assert await told("o-young", "“临时救助”已由社区取消：居民已在外地办理。如有疑问请联系社区。") == 1
    assert await told(DEPT, "已取消（居民已在外地办理），不用再办理") == 1


# ---------------------------------------------------------------------------- who may ask, see and act


async def test_who_may_ask_and_for_whom(client: Any, clock: FrozenClock) -> None:
    now = clock.now()
    elder, staff = await who(ELDER), await who(STAFF)
    with pytest.raises(UserFacingError, match="“残疾人补贴”仅限残疾居民申请"):
        await ask("残疾人补贴", now)
    young = await plain_resident("钱小明", "o-young", now)
    with pytest.raises(UserFacingError, match="仅限80岁以上居民申请，请先请社区核实您的出生日期"):
        await ask("高龄津贴", now, resident=young)
    await declare(resident_id=young.id, code=BIRTH_DATE, value="1990-01-01", now=now, by_id=staff.id,
                  source="staff", verified=True)
    with pytest.raises(UserFacingError, match="仅限80岁以上居民申请。"):
        await ask("高龄津贴", now, resident=young)
    with pytest.raises(Forbidden):
        await ask(DIBAO, now, by=young)  # a neighbour may not ask for her

    # her son, once she confirmed him, asks for her: she hears of it, the link is recorded
    son = await plain_resident("刘建国", "o-son", now, building="3号楼")
    link, _ = await request_link(proxy_id=son.id, elder_id=elder.id, relation="子女", now=now)
    await decide_link(link_id=link.id, by_id=elder.id, how="elder", approve=True, now=now)
    errand = await ask(DIBAO, now, by=son)
    assert errand.requested_by_id == son.id and errand.via == Via.CHAT
    assert await told(ELDER, f"您的“低保申请”申请已提交（编号{errand.id}）") == 1
    assert await told("o-son", "申请已提交") == 0
    assert await Action.filter(actor_id=son.id, subject_id=elder.id, action="errand_create").exists()
    # later news reaches both, each addressed as they are
    await core.take(errand.id, (await who(STEWARD)).id, now)
    assert await told(ELDER, "云管家何管家已接手") == 1 and await told("o-son", "云管家何管家已接手") == 1
    # staff ask for a resident: via staff
    errand2 = await ask("老年优待证", now, by=staff)
    assert errand2.via == Via.STAFF
    # an inactive item is refused; a retry key returns the first errand
    item = await item_named("居住证", now)
    await ErrandItem.filter(id=item.id).update(active=False)
    with pytest.raises(UserFacingError, match="暂不受理"):
        await ask("居住证", now, resident=young)
    first, created = await core.create_errand(item_id=(await item_named("户籍证明", now)).id, resident_id=young.id,
                                              requested_by_id=young.id, via=Via.API, now=now, key="k-1")
    await core.cancel(first.id, young.id, now)
    again, created_again = await core.create_errand(item_id=first.item_id, resident_id=young.id,
                                                    requested_by_id=young.id, via=Via.API, now=now, key="k-1")
    assert (created, again.id, created_again) == (True, first.id, False)
    with pytest.raises(UserFacingError, match="请求编号已用于另一件代办"):
        await core.create_errand(item_id=(await item_named("医保参保", now)).id, resident_id=young.id,
                                 requested_by_id=young.id, via=Via.API, now=now, key="k-1")


async def test_who_sees_an_errand(client: Any, clock: FrozenClock) -> None:
    now = clock.now()
    elder, steward, proxy, dept, staff = (await who(ELDER), await who(STEWARD), await who(PROXY), await who(DEPT),
                                          await who(STAFF))
    street = await Resident.get(name="冯街道")
    stranger = await plain_resident("路人甲", None, now)
    other = await red_proxy("二代办", "proxy-two", "第二网格", now)
    errand = await ask(DIBAO, now)
    for person, sees in [(elder, True), (steward, True), (staff, True), (street, True), (proxy, False),
                         (dept, False), (stranger, False), (other, False)]:
        assert await core.may_see(person.id, errand) is sees, person.name
    assert await core.offered_to(proxy.id, errand) and await core.offered_to(other.id, errand)
    errand = await core.accept_offer(errand.id, proxy.id, now)
    assert await core.may_see(proxy.id, errand) and not await core.may_see(other.id, errand)
    await shoot_all(client, errand, elder, now)
    for photo in await core.photos_of(errand.id):
        await core.review_photo(photo.id, steward.id, accept=True, now=now)
    errand = await core.transfer(errand.id, steward.id, now)
    assert await core.may_see(dept.id, errand)
    assert (await core.get_errand(errand.id, dept.id)).id == errand.id
    with pytest.raises(NotFound):
        await core.get_errand(errand.id, stranger.id)
    with pytest.raises(NotFound):
        await core.set_progress(errand.id, stranger.id, Progress.RECEIVED, now)
    assert [e.id for e in await core.errands_of(elder.id)] == [errand.id]
    mine, offers = await core.proxy_tasks(proxy.id, now)
    assert ([e.id for e in mine], offers) == ([errand.id], [])


# ---------------------------------------------------------------------------- catalogue and settings


async def test_the_catalogue_is_seeded_once_however_many_ask_at_once(client: Any, clock: FrozenClock) -> None:
    sub = await SubDistrict.get()
    fresh = [await Community.create(name=f"新社区{i}", sub_district=sub) for i in range(2)]
    departments = await Department.all().count()
    results = await asyncio.gather(*[core.ensure_catalogue(c.id, clock.now()) for c in fresh for _ in range(4)])
    for rows in results:
        assert [r.name for r in rows] == [p.name for p in DEFAULT_PACKAGE]
    for community in fresh:
        assert await ErrandItem.filter(community_id=community.id).count() == len(DEFAULT_PACKAGE)
    assert await Department.all().count() == departments  # the demo has them all already
    hardship = next(r for r in results[0] if r.name == "困难认定")
    assert (hardship.first_response_minutes, hardship.expected_days) == (15, 7)
    assert next(r for r in results[0] if r.name == "退役军人优待").statuses == ["veteran"]
    assert next(r for r in results[0] if r.name == "高龄津贴").min_age == 80

    # a new sub-district gets its departments made once, too
    other = await SubDistrict.create(name="别的街道")
    far = [await Community.create(name=f"远社区{i}", sub_district=other) for i in range(3)]
    await asyncio.gather(*[core.ensure_catalogue(c.id, clock.now()) for c in far])
    names = {p.department for p in DEFAULT_PACKAGE}
    assert sorted(await Department.filter(sub_district=other).values_list("name", flat=True)) == sorted(names)


async def test_staff_edit_the_catalogue_and_the_settings(client: Any, clock: FrozenClock) -> None:
    now = clock.now()
    mijia = await Community.get(name="米家社区")
    staff = await who(STAFF)
    mz = await Department.get(name="民政")
    good: dict[str, Any] = {"name": "助残申请", "department_id": mz.id, "documents": ["身份证", "残疾证"],
                            "statuses": ["disabled"], "min_age": 0, "first_response_minutes": 30,
                            "expected_days": 10, "active": True, "position": 50}
    item = await core.save_item(mijia.id, now=now, actor_id=staff.id, **good)
    assert (item.name, item.updated_by_id) == ("助残申请", staff.id)  # type: ignore[attr-defined]
    assert await ErrandItem.filter(community_id=mijia.id).count() == len(DEFAULT_PACKAGE) + 1  # seeded first
    for field, value, problem in [("name", "", "name"), ("name", DIBAO, "name"), ("documents", [], "documents"),
                                  ("documents", ["身份证", "身份证"], "documents"), ("statuses", ["vip"], "statuses"),
                                  ("first_response_minutes", 0, "first_response_minutes"),
                                  ("expected_days", 366, "expected_days"), ("department_id", 10**6, "department_id")]:
        with pytest.raises(ValueError, match=problem):
            await core.save_item(mijia.id, now=now, actor_id=staff.id, item_id=item.id, **{**good, field: value})
    changed = await core.save_item(mijia.id, now=now, actor_id=staff.id, item_id=item.id,
                                   **{**good, "expected_days": 12})
    assert changed.expected_days == 12
    # an errand keeps what the item said when it was asked
    dibao = await item_named(DIBAO, now)
    errand = await ask(DIBAO, now)
    await core.save_item(mijia.id, now=now, actor_id=staff.id, item_id=dibao.id,
                         **{**good, "name": DIBAO, "documents": ["身份证"], "statuses": []})
    assert len((await Errand.get(id=errand.id)).documents) == 4

    assert await core.settings_of(mijia.id) == core.Settings(mijia.id, ["10:00", "16:00"], 30, 20)
    saved = await core.save_settings(mijia.id, now=now, actor_id=staff.id, digest_times=["16:00", "9:30", "16:00"],
                                     offer_minutes=20)
    assert saved == core.Settings(mijia.id, ["09:30", "16:00"], 20, 20)
    for kwargs in ({"digest_times": ["25:00"]}, {"digest_times": ["1:00", "2:00", "3:00", "4:00", "5:00", "6:00",
                                                                   "7:00"]},
                   {"offer_minutes": 0}, {"proxy_points": -1}, {"proxy_points": True}):
        with pytest.raises(ValueError):
            await core.save_settings(mijia.id, now=now, actor_id=staff.id, **kwargs)
    assert (await core.settings_of(mijia.id)).offer_minutes == 20


async def test_the_proxy_points_are_the_communitys_setting(client: Any, clock: FrozenClock) -> None:
    errand = await delivered_by_proxy(client, clock, proxy_points=35)
    await core.confirm(errand.id, (await who(ELDER)).id, 5, clock.now())
    assert await points(await who(PROXY), clock.now()) == 35


async def test_the_retention_sweep_is_told_how_long_errand_documents_stay(config: Config) -> None:
    changed = config.replace(errands={"documents_days": 45})
    assert retention_of(changed.privacy, changed.errands).errand_documents_days == 45


async def test_asking_many_times_at_once_makes_one_errand(client: Any, clock: FrozenClock) -> None:
    elder = await who(ELDER)
    item = await item_named(DIBAO, clock.now())
    results = await asyncio.gather(*[core.create_errand(item_id=item.id, resident_id=elder.id, requested_by_id=elder.id,
                                                        via=Via.CHAT, now=clock.now()) for _ in range(6)])
    assert len({errand.id for errand, _ in results}) == 1 and sum(created for _, created in results) == 1
    assert await Errand.filter(resident_id=elder.id).count() == 1
    assert await told(STEWARD, "新的代办申请") == 1
