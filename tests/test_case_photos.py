"""Case photos kept in our own store: a due action fetches what residents sent while WeChat still has
it (3 days), 看照片 shows the stored copy days later (uploaded to WeChat again), the API serves it to
those who see the whole case, and what cannot be kept (expired, refused, no image, too big) is
recorded as lost once, without endless retries."""

from __future__ import annotations

import io
import ipaddress
import ssl
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from PIL import Image

from bot.app import SERVICES
from bot.clock import FrozenClock
from bot.media import MediaFetcher, is_public, url_session
from models import media
from models.cases import Case, CaseEvent, EventKind, Level, report_case
from models.jobs import ActionStatus, DueAction, sweep_due
from models.media import MAX_BYTES, MediaRefused, StoredMedia, check_image
from models.outbox import OutboxMessage
from models.places import Building
from models.residents import Resident
from tests.test_api import until
from tests.test_cases_api import phone, post_case
from tests.test_cases_chat import GRID, PROPERTY, neighbours, option
from tests.wechat import WeChatPusher

pytestmark = pytest.mark.usefixtures("demo")


def picture(kind: str = "JPEG", colour: str = "gray") -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (16, 12), colour).save(out, kind)
    return out.getvalue()


async def report_in_chat(wechat: WeChatPusher, openid: str, *media_ids: str) -> Case:
    """说事 with these photos: lighting, in the resident's own building."""
    for line in ("说事", "1", "3单元楼道灯坏了"):
        await wechat.say(openid, line)
    for media_id in media_ids:
        await wechat.image(openid, media_id=media_id)
    if not media_ids:
        await wechat.say(openid, "跳过")
    assert "请确认" in await wechat.say(openid, "1")
    assert "已提交" in await wechat.say(openid, "是")
    return await Case.all().order_by("-id").first()  # type: ignore[return-value]


async def look_at_photos(wechat: WeChatPusher, openid: str, case: Case) -> str:
    listing = await wechat.say(openid, "我的待办")
    card = await wechat.say(openid, option(listing, f"编号{case.number} "))
    reply = await wechat.say(openid, option(card, "看照片"))
    await wechat.say(openid, "取消")
    return reply


def images_to(fake: Any, openid: str) -> list[str]:
    return [m.body["image"]["media_id"] for m in fake.sent("custom", openid) if m.msgtype == "image"]


def uploads(fake: Any) -> int:
    return sum(1 for c in fake.calls if c.path == "/cgi-bin/media/upload" and c.status == 200)


# ---------------------------------------------------------------------------- chat


async def test_a_chat_photo_is_stored_and_the_next_level_still_sees_it_days_later(
        client: Any, wechat: WeChatPusher, clock: FrozenClock) -> None:
    fake = client.app[SERVICES].fake
    photo = picture()
    fake.add_media("m-light", photo)
    await neighbours()
    case = await report_in_chat(wechat, "case-0", "m-light")
    assert "stored" not in case.photos[0]  # recorded as WeChat gave it; the sweep fetches it
    assert await DueAction.filter(action="case.photos", target=f"case:{case.id}").count() == 1
    assert (await sweep_due(clock.now()))["done"] == 1
    case = await Case.get(id=case.id)
    stored = await StoredMedia.get(id=case.photos[0]["stored"])
    assert (stored.data, stored.content_type, stored.size) == (photo, "image/jpeg", len(photo))

    # the same day: WeChat still has the original, which is sent as it is
    assert "照片正在发给您（1张）" in await look_at_photos(wechat, PROPERTY, case)
    await until(lambda: _true(images_to(fake, PROPERTY)))
    assert images_to(fake, PROPERTY) == ["m-light"] and uploads(fake) == 0

    # five days on (WeChat forgot the original after three): the deadline passed, the grid worker has it
    clock.advance(timedelta(days=5, hours=1))
    await sweep_due(clock.now())
    case = await Case.get(id=case.id)
    assert case.level == Level.GRID
    assert "照片正在发给您（1张）" in await look_at_photos(wechat, GRID, case)
    await until(lambda: _true(images_to(fake, GRID)))
    [again] = images_to(fake, GRID)
    assert again != "m-light" and uploads(fake) == 1  # our copy, uploaded again; WeChat took the new id
    assert fake._media[again].data == photo
    await until(lambda: OutboxMessage.filter(openid=GRID, kind="image", state="sent").exists())
    # looked at again an hour later: the fresh upload is reused
    clock.advance(timedelta(hours=1))
    await look_at_photos(wechat, GRID, case)
    await until(lambda: _true(len(images_to(fake, GRID)) == 2))
    assert images_to(fake, GRID) == [again, again] and uploads(fake) == 1


async def _true(value: object) -> bool:
    return bool(value)


async def test_a_progress_photo_is_stored_too(client: Any, wechat: WeChatPusher, clock: FrozenClock) -> None:
    fake = client.app[SERVICES].fake
    await neighbours()
    case = await report_in_chat(wechat, "case-0")
    fake.add_media("m-fixed", picture("PNG", "white"))
    listing = await wechat.say(PROPERTY, "我的待办")
    card = await wechat.say(PROPERTY, option(listing, f"编号{case.number} "))
    await wechat.say(PROPERTY, option(card, "记录进展"))
    await wechat.say(PROPERTY, "已换新灯泡")
    assert "已记录进展" in await wechat.image(PROPERTY, media_id="m-fixed")
    event = await CaseEvent.get(case_id=case.id, kind=EventKind.PROGRESS)
    assert await DueAction.filter(action="case.photos", target=f"event:{event.id}").exists()
    await sweep_due(clock.now())
    event = await CaseEvent.get(id=event.id)
    [kept] = event.data["photos"]
    assert kept["media_id"] == "m-fixed" and (await StoredMedia.get(id=kept["stored"])).content_type == "image/png"


# ---------------------------------------------------------------------------- the API


async def test_the_api_serves_the_stored_photo_to_the_reporter_and_handlers_only(
        client: Any, clock: FrozenClock) -> None:
    fake = client.app[SERVICES].fake
    photo = picture("PNG")
    fake.add_media("mp-photo", photo)
    me = await phone(client, "甲居民")
    status, body = await post_case(me, {"category": "lighting", "description": "楼道灯坏了",
                                        "photos": [{"media_id": "mp-photo"}]})
    assert status == 201 and body["photos"][0]["state"] == "saving"
    path = f"/api/v1/cases/{body['id']}/photos/1"
    assert body["photos"][0]["url"] == path.removeprefix("/api/v1")

    async def get(mp: Any, url: str = path) -> aiohttp.ClientResponse:
        resp: aiohttp.ClientResponse = await client.get(url, headers={"Authorization": f"Bearer {mp.token}"})
        return resp

    # before the sweep came by: fetched on the spot (WeChat busy: try again)
    fake.fail("/cgi-bin/media/get", -1)
    resp = await get(me)
    assert resp.status == 409 and (await resp.json())["message"] == "照片还在保存，请稍后再看。"
    resp = await get(me)
    assert resp.status == 200 and await resp.read() == photo
    assert resp.content_type == "image/png" and resp.headers["X-Content-Type-Options"] == "nosniff"
    assert resp.headers["Content-Disposition"] == f'inline; filename="case-{body["id"]}-1.png"'
    assert (await sweep_due(clock.now()))["done"] == 1  # nothing left to fetch
    assert sum(1 for c in fake.calls if c.path == "/cgi-bin/media/get") == 2

    joiner = await phone(client, "乙居民")
    assert (await joiner.call("POST", f"/cases/{body['id']}/join", {})).status == 200
    east = await Building.get(name="东1栋")
    stranger_person = await Resident.create(name="陈路人", mobile="13912349999", community_id=east.community_id,  # type: ignore[attr-defined]
                                            building=east, unit="1", room="101", status="verified",
                                            created_at=datetime.now(UTC))
    stranger = await phone(client, stranger_person.name)
    handler = await phone(client, "钱物业")

    clock.advance(timedelta(days=4))  # WeChat has forgotten mp-photo: ours is served
    for who, expected in ((me, 200), (handler, 200), (joiner, 404), (stranger, 404)):
        resp = await get(who)
        assert resp.status == expected, (who.openid, await resp.text(errors="replace"))
        if expected == 200:
            assert await resp.read() == photo
        else:
            assert (await resp.json())["error"] == "not_found"
    assert (await me.call("GET", f"/cases/{body['id']}")).body["photos"][0]["state"] == "stored"
    assert (await joiner.call("GET", f"/cases/{body['id']}")).body["photos"] is None
    assert (await get(me, path.replace("/photos/1", "/photos/2"))).status == 404

    # a handler's progress photo, served the same way from its step
    fake.add_media("fix-photo", picture())
    note = await handler.call("POST", f"/cases/{body['id']}/actions",
                              {"action": "progress", "note": "已订灯泡", "photos": [{"media_id": "fix-photo"}]})
    step = next(e for e in note.body["events"] if e["kind"] == "progress")
    await sweep_due(clock.now())
    resp = await get(me, "/api/v1" + step["photos"][0]["url"])
    assert resp.status == 200 and resp.content_type == "image/jpeg"
    assert (await get(joiner, "/api/v1" + step["photos"][0]["url"])).status == 404


# ---------------------------------------------------------------------------- what cannot be kept


async def test_an_expired_or_unknown_media_id_is_lost_once_without_endless_retries(
        client: Any, wechat: WeChatPusher, clock: FrozenClock) -> None:
    fake = client.app[SERVICES].fake
    fake.add_media("m-old", picture())
    await neighbours()
    reporter = await Resident.get(name="甲居民")
    clock.advance(timedelta(days=3))  # m-old was sent before the scheduler came back from a long outage
    fake.add_media("m-busy", picture(colour="red"))
    case = await report_case(reporter=reporter, category="lighting", description="灯坏了", now=clock.now(),
                             photos=[{"media_id": "m-busy"}, {"media_id": "m-old"}, {"media_id": "never-sent"}])
    fake.fail("/cgi-bin/media/get", -1, times=1)  # WeChat busy for the first of them: tried again later
    counts = await sweep_due(clock.now())
    assert counts["retry"] == 1
    busy, old, never = (await Case.get(id=case.id)).photos
    assert "40007" in old["lost"] and "40007" in never["lost"] and old["lost_at"] == clock.now().isoformat()
    assert "stored" not in busy and "lost" not in busy
    clock.advance(timedelta(minutes=3))
    assert (await sweep_due(clock.now()))["done"] == 1
    busy, old, never = (await Case.get(id=case.id)).photos
    assert "stored" in busy and "40007" in old["lost"]  # the lost ones were not asked for again
    assert sum(1 for c in fake.calls if c.path == "/cgi-bin/media/get") == 4
    action = await DueAction.get(action="case.photos", target=f"case:{case.id}")
    assert action.status == ActionStatus.DONE and action.attempts == 2
    clock.advance(timedelta(hours=1))
    assert await sweep_due(clock.now()) == {"done": 0, "retry": 0, "failed": 0, "skipped": 0}

    # the handler hears that two are gone; the API answers 404 for them and serves the third
    reply = await look_at_photos(wechat, PROPERTY, case)
    assert "照片正在发给您（1张）" in reply and "2张照片已过期，没能保存" in reply
    mp = await phone(client, "甲居民")
    answers = [(await mp.call("GET", f"/cases/{case.id}/photos/{i}")).status for i in (1, 2, 3)]
    assert answers == [200, 404, 404]
    view = (await mp.call("GET", f"/cases/{case.id}")).body
    assert [(p["state"], p["url"] is not None) for p in view["photos"]] == [
        ("stored", True), ("lost", False), ("lost", False)]


async def test_oversize_or_non_image_data_is_refused(client: Any, clock: FrozenClock) -> None:
    fake = client.app[SERVICES].fake
    fake.add_media("m-page", b"<html>not a photo</html>", "image/jpeg")  # the claimed type counts for nothing
    fake.add_media("m-huge", b"\xff\xd8\xff\xe0" + bytes(MAX_BYTES))
    fake.add_media("m-ok", picture("GIF"))
    fake.add_media("m-same", picture("GIF"))  # the very same bytes again: one copy
    reporter = await phone(client, "甲居民")
    _, body = await post_case(reporter, {"category": "lighting", "description": "灯坏了", "photos": [
        {"media_id": "m-page"}, {"media_id": "m-huge"}, {"media_id": "m-ok"}]})
    await sweep_due(clock.now())
    page, huge, ok = (await Case.get(id=body["id"])).photos
    assert page["lost"] == "not an image (JPEG, PNG, GIF or WebP)" and huge["lost"] == "over 10 MB"
    _, other = await post_case(reporter, {"category": "water", "description": "漏水",
                                          "photos": [{"media_id": "m-same"}]})
    await sweep_due(clock.now())
    assert (await Case.get(id=other["id"])).photos[0]["stored"] == ok["stored"]
    assert await StoredMedia.all().count() == 1
    assert (await reporter.call("GET", f"/cases/{body['id']}/photos/1")).status == 404


def test_only_images_are_kept_by_their_first_bytes() -> None:
    assert check_image(picture()) == "image/jpeg"
    assert check_image(picture("PNG")) == "image/png"
    assert check_image(picture("GIF")) == "image/gif"
    assert check_image(picture("WEBP")) == "image/webp"
    for refused in (b"", b"GIF8", b"RIFF\0\0\0\0WAVE", b"%PDF-1.7", b"\xff\xd8\xff" + bytes(MAX_BYTES)):
        with pytest.raises(MediaRefused):
            check_image(refused)


# ---------------------------------------------------------------------------- mini-program URLs


async def test_a_url_into_our_own_network_is_never_fetched(client: Any, clock: FrozenClock) -> None:
    reporter = await phone(client, "甲居民")
    _, body = await post_case(reporter, {"category": "lighting", "description": "灯坏了", "photos": [
        {"pic_url": "https://127.0.0.1:9/x.jpg"}, {"pic_url": "https://localhost/x.jpg"},
        {"pic_url": "https://[::ffff:10.0.0.1]/x.jpg"}]})
    await sweep_due(clock.now())
    lost = [p["lost"] for p in (await Case.get(id=body["id"])).photos]
    assert lost == ["127.0.0.1 is not a public address", "localhost has no public address",
                    "::ffff:10.0.0.1 is not a public address"]
    assert is_public("8.8.8.8") and not is_public("169.254.169.254") and not is_public("fd00::1")


@pytest.fixture
async def image_host(tmp_path: Path) -> AsyncIterator[tuple[str, ssl.SSLContext]]:
    """An https server on loopback with a certificate of its own: its base URL and a context trusting it."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.now(UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(minutes=1))
            .not_valid_after(now + timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    (tmp_path / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                         serialization.PrivateFormat.PKCS8,
                                                         serialization.NoEncryption()))
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    client_ctx = ssl.create_default_context(cafile=str(tmp_path / "cert.pem"))

    async def ok(request: web.Request) -> web.Response:
        return web.Response(body=picture("PNG"), content_type="text/plain")  # what it claims counts for nothing

    async def endless(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()  # no Content-Length: only counting the bytes stops it
        await resp.prepare(request)
        try:
            for _ in range(MAX_BYTES // 65536 + 2):
                await resp.write(b"\xff\xd8\xff" + bytes(65533))
        except (ConnectionError, RuntimeError):
            pass
        return resp

    async def moved(request: web.Request) -> web.Response:
        raise web.HTTPFound("https://127.0.0.1:9/elsewhere.png")

    async def broken(request: web.Request) -> web.Response:
        return web.Response(status=503)

    app = web.Application()
    app.router.add_get("/ok.png", ok)
    app.router.add_get("/endless.jpg", endless)
    app.router.add_get("/moved.png", moved)
    app.router.add_get("/broken.png", broken)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_ctx)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield f"https://127.0.0.1:{port}", client_ctx
    await runner.cleanup()


async def test_an_https_url_is_fetched_within_its_limits(client: Any, image_host: tuple[str, ssl.SSLContext]) -> None:
    base, trusted = image_host
    wechat = client.app[SERVICES].client
    async with url_session(public_only=False, ssl_context=trusted) as session:
        fetcher = MediaFetcher(wechat, session, public_only=False)  # this test's server lives on loopback
        data = await fetcher.fetch_url(base + "/ok.png")
        assert check_image(data) == "image/png"
        with pytest.raises(MediaRefused, match="over 10 MB"):
            await fetcher.fetch_url(base + "/endless.jpg")
        with pytest.raises(MediaRefused, match="HTTP 302 \\(redirects are not followed\\)"):
            await fetcher.fetch_url(base + "/moved.png")
        with pytest.raises(aiohttp.ClientResponseError):  # not refused: tried again later
            await fetcher.fetch_url(base + "/broken.png")
        with pytest.raises(MediaRefused, match="not an https URL"):
            await fetcher.fetch_url(base.replace("https", "http") + "/ok.png")
    # the service's own session trusts no private address, whatever the certificate
    async with url_session(ssl_context=trusted) as session:
        with pytest.raises(MediaRefused, match="is not a public address"):
            await MediaFetcher(wechat, session).fetch_url(base + "/ok.png")


async def test_a_photo_is_stored_once_however_often_it_comes(client: Any, clock: FrozenClock) -> None:
    data = picture()
    first, second = await media.store(data, clock.now()), await media.store(data, clock.now())
    assert first == second and await StoredMedia.all().count() == 1


async def test_photos_of_a_case_closed_longer_than_the_retention_period_are_deleted(
        client: Any, wechat: WeChatPusher, clock: FrozenClock) -> None:
    """privacy.case_photos_days after closure the stored photos go (the case's text and figures stay);
    a copy another case still shows stays; the daily retention sweep does it."""
    from bot.scheduler import RETENTION_JOB, service_scheduler
    from models.cases import Fixed, feedback, resolve

    fake = client.app[SERVICES].fake
    fake.add_media("m-old", picture(colour="red"))
    fake.add_media("m-same", picture(colour="blue"))
    people = await neighbours()
    old = await report_in_chat(wechat, "case-0", "m-old", "m-same")
    await sweep_due(clock.now())
    fake.add_media("m-same-again", picture(colour="blue"))  # the same bytes sent again for another case
    other = await report_in_chat(wechat, "case-3", "m-same-again")  # 4号楼: too far to be offered as the same
    await sweep_due(clock.now())
    old, other = await Case.get(id=old.id), await Case.get(id=other.id)
    shared = other.photos[0]["stored"]
    assert old.photos[1]["stored"] == shared and await StoredMedia.all().count() == 2
    handler = await Resident.get(name="钱物业")
    await resolve(old.id, handler.id, "已更换灯泡", clock.now())
    await feedback(old.id, people["甲居民"].id, Fixed.YES, clock.now(), rating=5)

    config = client.app[SERVICES].config.replace(privacy={"case_photos_days": 30})
    clock.advance(timedelta(days=29))
    assert (await service_scheduler(config, clock).run(RETENTION_JOB))["case_photos"] == 0  # not yet
    clock.advance(timedelta(days=2))
    assert (await service_scheduler(config, clock).run(RETENTION_JOB))["case_photos"] == 1
    old = await Case.get(id=old.id)
    assert [p.get("lost") for p in old.photos] == ["retention", "retention"]
    assert all("stored" not in p and "media_id" not in p for p in old.photos)
    assert old.description == "3单元楼道灯坏了" and old.rating == 5  # the case itself stays
    assert await StoredMedia.filter(id=shared).exists()  # the open case still shows it
    assert await StoredMedia.all().count() == 1
    assert (await service_scheduler(config, clock).run(RETENTION_JOB))["case_photos"] == 0  # nothing twice
