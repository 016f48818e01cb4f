"""Errand document photos: kept in the service's own directory (hash, size and type checked, never
a non-image or an oversized one), opened only by the assigned steward, the assigned red proxy and
the department's staff after the transfer, through a short-lived signed link behind the WeChat web
login (or a mini-program session), every opening logged, and deleted on schedule after the errand
closed."""

from __future__ import annotations

import asyncio
import hashlib
import io
import re
import stat
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import pytest
from PIL import Image

from bot.api import create_session
from bot.app import SERVICES, create_app
from bot.clock import FrozenClock
from bot.config import Config
from bot.docs_web import LOGIN_COOKIE, SESSION_COOKIE, safe_next
from bot.wxclient import WeChatAPIError
from models import errand_docs, media
from models.errand_docs import (
    LinkExpired,
    delete_documents,
    keep_photo,
    link_url,
    make_link,
    may_open,
    open_photo,
    sweep_documents,
    verify,
    views_of,
)
from models.errands import (
    DocumentView,
    Errand,
    ErrandEvent,
    ErrandItem,
    ErrandPhoto,
    ErrandState,
    PhotoState,
    SecretKey,
)
from models.errors import NotFound
from models.places import Community, Department, SubDistrict
from models.privacy import Retention, retention_sweep
from models.residents import Resident, ResidentStatus, WechatAccount
from models.roles import Role, StaffRole, grant, revoke

pytestmark = pytest.mark.usefixtures("demo")

CALLBACK = "/auth/wechat/callback"


def picture(kind: str = "JPEG", colour: str = "gray") -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (16, 12), colour).save(out, kind)
    return out.getvalue()


@pytest.fixture
async def docs(client, tmp_path: Path) -> Path:  # type: ignore[no-untyped-def]
    """This test's own document directory (after the service configured the shared one)."""
    errand_docs.configure(replace(errand_docs.settings(), documents_dir=str(tmp_path / "documents")))
    return tmp_path / "documents"


def stored_files(docs: Path) -> list[Path]:
    """Every file under the document directory (temporary ones too)."""
    return sorted(p for p in docs.rglob("*") if p.is_file()) if docs.exists() else []


async def person(openid: str) -> Resident:
    account = await WechatAccount.get(openid=openid)
    return await Resident.get(id=account.resident_id)  # type: ignore[attr-defined]


async def staff(openid: str, name: str, mobile: str, community: str, role: str, scope_id: int,
                now: datetime) -> Resident:
    """A bound staff member with one role (and a WeChat account for the web login)."""
    home = await Community.get(name=community)
    someone = await Resident.create(name=name, mobile=mobile, community=home, status=ResidentStatus.VERIFIED,
                                    source="staff", created_at=now, verified_at=now)
    await grant(resident_id=someone.id, role=role, scope_id=scope_id, now=now, by_label="test")
    await WechatAccount.create(openid=openid, channel="oa", resident=someone, created_at=now, subscribed_at=now)
    return someone


async def errand_with_photos(now: datetime, fake: Any, *, steward: Resident | None = None,
                             proxy: Resident | None = None, transferred: bool = False,
                             documents: tuple[str, ...] = ("身份证", "户口本")) -> Errand:
    """An errand of the demo elder (rows made directly), each document photographed and kept."""
    elder = await person("demo-elder")
    community = await Community.get(id=elder.community_id)  # type: ignore[attr-defined]
    department = await Department.get(name="民政")
    item, _ = await ErrandItem.get_or_create(
        community=community, name="低保申请",
        defaults={"department": department, "documents": list(documents), "updated_at": now})
    errand = await Errand.create(
        community=community, item=item, item_name=item.name, documents=list(documents), first_response_minutes=120,
        expected_days=7, resident=elder, requested_by=elder, state=ErrandState.REVIEW, created_at=now,
        steward=steward, proxy=proxy, department=department,
        transferred_at=now if transferred else None)
    for n, document in enumerate(documents):
        media_id = f"m-{errand.id}-{n}"
        fake.add_media(media_id, picture(colour=["red", "blue", "green"][n % 3]))
        photo = await ErrandPhoto.create(errand=errand, document=document, media_id=media_id, sent_by=elder,
                                         created_at=now)
        await keep_photo(photo, now)
        assert photo.state == PhotoState.PENDING
    return errand


async def web_login(client: Any, openid: str, next_path: str) -> str:
    """The whole WeChat web login against the fake: the session cookie's value."""
    client.session.cookie_jar.clear()
    services = client.app[SERVICES]
    resp = await client.get("/auth/wechat", params={"next": next_path}, allow_redirects=False)
    assert resp.status == 302, await resp.text()
    location = resp.headers["Location"]
    # WeChat matches the authorize URL strictly: this order, the redirect URI encoded, the fragment
    oauth = services.config.wechat.oauth_base_url
    pattern = (re.escape(f"{oauth}/connect/oauth2/authorize?appid={services.client.wechat.appid}&redirect_uri=")
               + r"([^&#]+)&response_type=code&scope=snsapi_base&state=([A-Za-z0-9]{1,128})#wechat_redirect")
    found = re.fullmatch(pattern, location)
    assert found, location
    redirect_uri = parse_qs(urlsplit(location).query)["redirect_uri"][0]
    assert found.group(1) == quote(redirect_uri, safe="")  # encoded whole, "/" and ":" too
    assert urlsplit(redirect_uri).path == CALLBACK
    code = f"code-{openid}"
    services.fake.add_oauth_code(code, openid)
    back = await client.get(CALLBACK, params={"code": code, "state": found.group(2)}, allow_redirects=False)
    assert back.status == 302, await back.text()
    assert back.headers["Location"] == next_path
    cookie = next(c for c in back.headers.getall("Set-Cookie") if c.startswith(SESSION_COOKIE + "="))
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Path=/" in cookie
    assert "Secure" not in cookie  # server.public_url is not https here
    value = back.cookies[SESSION_COOKIE].value
    client.session.cookie_jar.clear()
    return value


async def as_viewer(client: Any, path: str, session: str | None = None, **kw: Any) -> Any:
    client.session.cookie_jar.clear()
    cookies = {SESSION_COOKIE: session} if session else None
    return await client.get(path, cookies=cookies, allow_redirects=False, **kw)


# ---------------------------------------------------------------------------- storage


async def test_keep_photo_stores_the_photo_in_the_document_directory(client, clock: FrozenClock, docs: Path) -> None:
    fake = client.app[SERVICES].fake
    steward = await person("demo-steward")
    errand = await errand_with_photos(clock.now(), fake, steward=steward, documents=("身份证",))
    photo = await ErrandPhoto.get(errand_id=errand.id)
    data = picture(colour="red")
    digest = hashlib.sha256(data).hexdigest()
    assert (photo.state, photo.sha256, photo.size, photo.content_type) == (
        PhotoState.PENDING, digest, len(data), "image/jpeg")
    assert photo.file_name == f"{errand.id}/{photo.id}-{digest[:16]}.jpg"
    assert photo.stored_at == clock.now()
    path = docs / photo.file_name
    assert path.read_bytes() == data
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary file left behind
    assert not await media.StoredMedia.exists()  # never in the database

    await keep_photo(photo, clock.now())  # again (a retry that raced the first): nothing changes
    assert (await ErrandPhoto.get(id=photo.id)).file_name == photo.file_name


@pytest.mark.parametrize("case", ["not an image", "too big", "expired media id"])
async def test_keep_photo_refuses_what_it_cannot_keep(client, clock: FrozenClock, docs: Path, case: str) -> None:
    fake = client.app[SERVICES].fake
    errand = await errand_with_photos(clock.now(), fake, documents=())
    data = {"not an image": b"%PDF-1.4 an ID card as a document",
            "too big": b"\xff\xd8\xff" + b"\0" * media.MAX_BYTES}.get(case)
    if data is not None:
        fake.add_media("m-bad", data)
    photo = await ErrandPhoto.create(errand=errand, document="身份证", media_id="m-bad", created_at=clock.now())
    await keep_photo(photo, clock.now())
    photo = await ErrandPhoto.get(id=photo.id)
    assert photo.state == PhotoState.LOST
    assert photo.reason.endswith("请重新拍一张发来。")
    assert {"not an image": "不是图片", "too big": "太大", "expired media id": "过期"}[case] in photo.reason
    assert (photo.file_name, photo.sha256, photo.size, photo.stored_at) == ("", "", 0, None)
    assert stored_files(docs) == []  # nothing written


async def test_keep_photo_leaves_a_transient_failure_for_a_retry(client, clock: FrozenClock, docs: Path) -> None:
    fake = client.app[SERVICES].fake
    errand = await errand_with_photos(clock.now(), fake, documents=())
    fake.add_media("m-1", picture())
    photo = await ErrandPhoto.create(errand=errand, document="身份证", media_id="m-1", created_at=clock.now())
    fake.fail("/cgi-bin/media/get", -1)  # WeChat busy
    with pytest.raises(WeChatAPIError):
        await keep_photo(photo, clock.now())
    assert (await ErrandPhoto.get(id=photo.id)).state == PhotoState.SAVING
    assert stored_files(docs) == []
    clock.advance(timedelta(minutes=1))
    await keep_photo(photo, clock.now())
    assert photo.state == PhotoState.PENDING and photo.stored_at == clock.now()
    assert (docs / photo.file_name).read_bytes() == picture()


async def test_a_photo_whose_file_changed_is_not_shown(client, clock: FrozenClock, docs: Path) -> None:
    fake = client.app[SERVICES].fake
    steward = await person("demo-steward")
    errand = await errand_with_photos(clock.now(), fake, steward=steward, documents=("身份证",))
    photo = await ErrandPhoto.get(errand_id=errand.id)
    _, data = await open_photo(steward.id, photo.id, via="api", now=clock.now())
    assert data == picture(colour="red")
    (docs / photo.file_name).write_bytes(picture(colour="black"))
    with pytest.raises(NotFound):
        await open_photo(steward.id, photo.id, via="api", now=clock.now())
    assert [v.via for v in await views_of(errand.id)] == ["api"]  # only the genuine opening


# ---------------------------------------------------------------------------- who may open them


async def test_only_the_assigned_steward_proxy_and_department_after_transfer(client, clock: FrozenClock,
                                                                           docs: Path) -> None:
    fake = client.app[SERVICES].fake
    now = clock.now()
    steward, proxy, clerk = await person("demo-steward"), await person("demo-proxy"), await person("demo-dept")
    mijia = await Community.get(name="米家社区")
    other_steward = await staff("mj-steward-2", "吴管家", "13904189001", "米家社区", Role.STEWARD, mijia.id, now)
    xinqiu = await Community.get(name="新邱社区")
    far_steward = await staff("xq-steward", "钱管家", "13904189002", "新邱社区", Role.STEWARD, xinqiu.id, now)
    sub = await SubDistrict.get(id=mijia.sub_district_id)  # type: ignore[attr-defined]
    other_dept = await Department.exclude(name="民政").filter(sub_district=sub).first()
    assert other_dept is not None
    other_clerk = await staff("dept-2", "医保窗口", "13904189003", "米家社区", Role.DEPARTMENT, other_dept.id, now)
    errand = await errand_with_photos(now, fake, steward=steward, proxy=proxy)
    elder = await person("demo-elder")
    photo = await ErrandPhoto.filter(errand_id=errand.id).first()
    assert photo is not None

    allowed = {who.name: await may_open(who.id, errand)
               for who in (steward, proxy, clerk, other_steward, far_steward, other_clerk, elder)}
    assert allowed == {"何管家": True, "党代办": True, "民政窗口": False, "吴管家": False, "钱管家": False,
                       "医保窗口": False, "刘桂芳": False}
    for who in (clerk, other_steward, far_steward, elder):
        with pytest.raises(NotFound):
            await make_link(who.id, errand.id, now)
        with pytest.raises(NotFound):
            await open_photo(who.id, photo.id, via="api", now=now)

    errand.state, errand.transferred_at = ErrandState.TRANSFERRED, now  # the steward transferred it to 民政
    await errand.save()
    assert await may_open(clerk.id, errand) and not await may_open(other_clerk.id, errand)
    await open_photo(clerk.id, photo.id, via="api", now=now)

    # a steward who lost the role no longer opens what they were assigned
    role = await StaffRole.get(resident_id=steward.id, role=Role.STEWARD, revoked_at=None)
    await revoke(grant_id=role.id, now=now, by_label="test")
    assert not await may_open(steward.id, errand)
    assert [(v.viewer_id, v.via) for v in await views_of(errand.id)] == [(clerk.id, "api")]  # refusals log nothing


async def test_assigned_steward_opens_the_photos_through_the_link_after_the_web_login(
        client, clock: FrozenClock, docs: Path) -> None:
    fake = client.app[SERVICES].fake
    steward = await person("demo-steward")
    errand = await errand_with_photos(clock.now(), fake, steward=steward)
    photos = await ErrandPhoto.filter(errand_id=errand.id).order_by("id")
    link = await make_link(steward.id, errand.id, clock.now())
    assert link.startswith("/docs/")

    first = await as_viewer(client, link)  # not logged in: to the web login, coming back here
    assert first.status == 302
    assert first.headers["Location"] == "/auth/wechat?next=" + quote(link, safe="")
    session = await web_login(client, "demo-steward", link)

    resp = await as_viewer(client, link, session)
    text = await resp.text()
    assert resp.status == 200, text
    assert resp.headers["Cache-Control"] == "no-store"
    assert "低保申请" in text and "刘**" in text and "刘桂芳" not in text
    assert "身份证" in text and "户口本" in text and "待预审" in text
    sources = re.findall(r'<img src="([^"]+)"', text)
    assert sources == [f"{link}/photos/{p.id}" for p in photos]
    assert await DocumentView.all().count() == 0  # the page is a list; each photo opened is a view

    for n, (source, photo) in enumerate(zip(sources, photos, strict=True)):
        shot = await as_viewer(client, source, session)
        assert shot.status == 200
        assert shot.headers["Content-Type"] == "image/jpeg"
        assert shot.headers["Cache-Control"] == "no-store"
        assert await shot.read() == (docs / photo.file_name).read_bytes()
        assert await DocumentView.filter(via="link", viewer_id=steward.id).count() == n + 1
    await as_viewer(client, sources[0], session)  # looking again is another view
    views = await views_of(errand.id)
    assert [(v.photo_id, v.viewer_id, v.via, v.at) for v in views] == [
        (photos[0].id, steward.id, "link", clock.now()), (photos[1].id, steward.id, "link", clock.now()),
        (photos[0].id, steward.id, "link", clock.now())]

    # a photo of another errand through this errand's link: nothing
    other = await errand_with_photos(clock.now(), fake, steward=steward, documents=("身份证",))
    stranger = await ErrandPhoto.get(errand_id=other.id)
    assert (await as_viewer(client, f"{link}/photos/{stranger.id}", session)).status == 404
    assert (await as_viewer(client, f"{link}/photos/abc", session)).status == 404
    assert await DocumentView.all().count() == 3


async def test_a_mini_program_session_opens_the_page_too(client, clock: FrozenClock, docs: Path) -> None:
    services = client.app[SERVICES]
    steward = await person("demo-steward")
    errand = await errand_with_photos(clock.now(), services.fake, steward=steward, documents=("身份证",))
    link = await make_link(steward.id, errand.id, clock.now())
    token = await create_session(services.store, await WechatAccount.get(openid="demo-steward"), 1)
    resp = await as_viewer(client, link, headers={"Authorization": f"Bearer {token}"})
    assert resp.status == 200 and "身份证" in await resp.text()
    stale = await as_viewer(client, link, headers={"Authorization": "Bearer not-a-session"})
    assert stale.status == 401 and "重新登录" in await stale.text()


async def test_a_steward_of_another_community_cannot_open_them_even_with_the_link(
        client, clock: FrozenClock, docs: Path) -> None:
    fake = client.app[SERVICES].fake
    now = clock.now()
    steward = await person("demo-steward")
    xinqiu = await Community.get(name="新邱社区")
    far = await staff("xq-steward", "钱管家", "13904189002", "新邱社区", Role.STEWARD, xinqiu.id, now)
    errand = await errand_with_photos(now, fake, steward=steward)
    photo = await ErrandPhoto.filter(errand_id=errand.id).first()
    assert photo is not None
    link = await make_link(steward.id, errand.id, now)

    session = await web_login(client, "xq-steward", link)  # a genuine staff login, the leaked link
    page = await as_viewer(client, link, session)
    assert page.status == 404
    assert "刘" not in await page.text() and "低保" not in await page.text()
    assert (await as_viewer(client, f"{link}/photos/{photo.id}", session)).status == 404
    with pytest.raises(NotFound):
        await make_link(far.id, errand.id, now)

    # an unassigned steward of the same community with the assigned one's link: the same 404 page
    mijia = await Community.get(name="米家社区")
    await staff("mj-steward-2", "吴管家", "13904189001", "米家社区", Role.STEWARD, mijia.id, now)
    session2 = await web_login(client, "mj-steward-2", link)
    again = await as_viewer(client, link, session2)
    assert again.status == 404 and await again.text() == await page.text()
    # nor does a link to an errand that does not exist say anything else
    missing = errand_docs.serializer(await errand_docs.signing_key(), errand_docs.LINK_SALT, now).dumps(
        {"e": 99999, "v": far.id})
    gone = await as_viewer(client, f"/docs/{missing}", session)
    assert gone.status == 404 and await gone.text() == await page.text()
    assert await DocumentView.all().count() == 0


async def test_department_staff_open_them_only_after_the_transfer(client, clock: FrozenClock, docs: Path) -> None:
    fake = client.app[SERVICES].fake
    steward, clerk = await person("demo-steward"), await person("demo-dept")
    errand = await errand_with_photos(clock.now(), fake, steward=steward)
    with pytest.raises(NotFound):
        await make_link(clerk.id, errand.id, clock.now())
    session = await web_login(client, "demo-dept", "/docs/x")
    steward_link = await make_link(steward.id, errand.id, clock.now())
    assert (await as_viewer(client, steward_link, session)).status == 404

    await Errand.filter(id=errand.id).update(state=ErrandState.TRANSFERRED, transferred_at=clock.now())
    # the steward's link stays the steward's: the clerk who may open them uses a link of their own
    assert (await as_viewer(client, steward_link, session)).status == 404
    link = await make_link(clerk.id, errand.id, clock.now())
    resp = await as_viewer(client, link, session)
    assert resp.status == 200
    source = re.findall(r'<img src="([^"]+)"', await resp.text())[0]
    assert (await as_viewer(client, source, session)).status == 200
    assert [(v.viewer_id, v.via) for v in await views_of(errand.id)] == [(clerk.id, "link")]


# ---------------------------------------------------------------------------- the link itself


async def test_an_expired_link_fails(client, clock: FrozenClock, docs: Path) -> None:
    fake = client.app[SERVICES].fake
    steward = await person("demo-steward")
    errand = await errand_with_photos(clock.now(), fake, steward=steward, documents=("身份证",))
    photo = await ErrandPhoto.get(errand_id=errand.id)
    link = await make_link(steward.id, errand.id, clock.now())
    session = await web_login(client, "demo-steward", link)
    minutes = errand_docs.settings().link_minutes

    clock.advance(timedelta(minutes=minutes) - timedelta(seconds=1))
    assert (await as_viewer(client, link, session)).status == 200
    clock.advance(timedelta(seconds=2))
    page = await as_viewer(client, link, session)
    assert page.status == 410
    assert "已过期" in await page.text() and "查看材料" in await page.text()
    assert page.headers["Cache-Control"] == "no-store"
    assert (await as_viewer(client, f"{link}/photos/{photo.id}", session)).status == 410
    with pytest.raises(LinkExpired):
        await verify(link.removeprefix("/docs/"), clock.now())
    assert await DocumentView.all().count() == 0
    # a fresh link works again
    assert (await as_viewer(client, await make_link(steward.id, errand.id, clock.now()), session)).status == 200


async def test_a_forged_or_tampered_link_fails(client, clock: FrozenClock, docs: Path) -> None:
    fake = client.app[SERVICES].fake
    now = clock.now()
    steward = await person("demo-steward")
    mine = await errand_with_photos(now, fake, steward=steward, documents=("身份证",))
    other = await errand_with_photos(now, fake, documents=("户口本",))  # nobody assigned
    link = await make_link(steward.id, mine.id, now)
    token = link.removeprefix("/docs/")
    session = await web_login(client, "demo-steward", link)
    payload, stamp, signature = token.split(".")
    flipped = signature[:-2] + ("A" if signature[-2] != "A" else "B") + signature[-1]
    forged = [
        token[:-3],  # cut
        f"{payload}.{stamp}.{flipped}",  # altered signature
        # another errand's id with this link's signature
        errand_docs.serializer("x" * 32, "other", now).dumps({"e": other.id, "v": steward.id}).split(".")[0]
        + f".{stamp}.{signature}",
        # signed with a key that is not ours
        errand_docs.serializer("a-key-that-is-not-ours-at-all", errand_docs.LINK_SALT, now).dumps(
            {"e": other.id, "v": steward.id}),
        "not-a-token",
    ]
    for bad in forged:
        with pytest.raises(NotFound):
            await verify(bad, now)
        assert (await as_viewer(client, f"/docs/{bad}", session)).status == 404, bad
    assert (await as_viewer(client, link, session)).status == 200  # the genuine one still works
    assert await DocumentView.all().count() == 0


async def test_the_signing_key_is_made_once_and_kept(client, clock: FrozenClock, docs: Path) -> None:
    fake = client.app[SERVICES].fake
    steward = await person("demo-steward")
    errand = await errand_with_photos(clock.now(), fake, steward=steward, documents=("身份证",))
    errand_docs.configure(errand_docs.settings())  # forget any key read before
    keys = await asyncio.gather(*(errand_docs.signing_key() for _ in range(5)))
    assert len(set(keys)) == 1 and await SecretKey.all().count() == 1
    link = await make_link(steward.id, errand.id, clock.now())
    errand_docs.configure(errand_docs.settings())  # another worker: reads the same key
    assert await verify(link.removeprefix("/docs/"), clock.now()) == (errand.id, steward.id)
    # a configured secret takes its place (and the generated key no longer verifies)
    errand_docs.configure(replace(errand_docs.settings(), link_secret="s" * 32))
    with pytest.raises(NotFound):
        await verify(link.removeprefix("/docs/"), clock.now())
    fresh = await make_link(steward.id, errand.id, clock.now())
    assert await verify(fresh.removeprefix("/docs/"), clock.now()) == (errand.id, steward.id)


def test_link_url() -> None:
    assert link_url("https://linli.example.cn/wechat", "/docs/abc") == "https://linli.example.cn/docs/abc"
    assert link_url("http://10.0.0.5:8080", "/docs/abc") == "http://10.0.0.5:8080/docs/abc"
    assert link_url("", "/docs/abc") == "/docs/abc"


# ---------------------------------------------------------------------------- the web login


@pytest.mark.parametrize("target", [
    "https://evil.example.com/docs/x", "//evil.example.com/docs/x", "/\\evil.example.com", "\\\\evil.example.com",
    "javascript:alert(1)", "docs/x", "/docs/x\r\nSet-Cookie: a=b", "/docs/ x", "", "/" + "a" * 2000,
])
async def test_the_login_refuses_to_send_anyone_elsewhere(client, target: str) -> None:
    assert safe_next(target) is None
    resp = await client.get("/auth/wechat", params={"next": target}, allow_redirects=False)
    assert resp.status == 400 and "Location" not in resp.headers
    assert "链接无效" in await resp.text()


def test_local_paths_are_accepted() -> None:
    assert safe_next("/docs/abc.def-_x?y=1") == "/docs/abc.def-_x?y=1"


async def test_a_forged_state_or_another_browsers_state_is_refused(client, clock: FrozenClock) -> None:
    fake = client.app[SERVICES].fake
    client.session.cookie_jar.clear()
    resp = await client.get("/auth/wechat", params={"next": "/docs/mine"}, allow_redirects=False)
    state = parse_qs(urlsplit(resp.headers["Location"]).query)["state"][0]
    mine = resp.cookies[LOGIN_COOKIE].value
    assert "HttpOnly" in next(c for c in resp.headers.getall("Set-Cookie") if c.startswith(LOGIN_COOKIE))

    async def callback(cookie: str | None, state: str, code: str = "code-1") -> Any:
        client.session.cookie_jar.clear()
        fake.add_oauth_code(code, "demo-steward")
        return await client.get(CALLBACK, params={"code": code, "state": state},
                                cookies={LOGIN_COOKIE: cookie} if cookie else None, allow_redirects=False)

    # the state of one login with the cookie of another (an attacker's login planted in a victim's browser)
    other = await client.get("/auth/wechat", params={"next": "/docs/theirs"}, allow_redirects=False)
    their_state = parse_qs(urlsplit(other.headers["Location"]).query)["state"][0]
    for cookie, st in [(mine, their_state), (mine, state[:-1] + ("0" if state[-1] != "0" else "1")),
                       (None, state), ("forged.cookie.value", state)]:
        refused = await callback(cookie, st)
        assert refused.status == 400 and SESSION_COOKIE not in refused.cookies
    # a cookie past its ten minutes
    clock.advance(timedelta(minutes=11))
    late = await callback(mine, state)
    assert late.status == 400 and "过期" in await late.text()


async def test_a_login_code_works_once_and_only_staff_get_a_session(client, clock: FrozenClock) -> None:
    services = client.app[SERVICES]
    services.fake.add_oauth_code("c-1", "demo-steward")
    assert await services.client.oauth_openid("c-1") == "demo-steward"
    for code in ("c-1", "never-issued"):
        with pytest.raises(WeChatAPIError) as refused:
            await services.client.oauth_openid(code)
        assert refused.value.errcode == 40029
    services.fake.add_oauth_code("c-2", "demo-steward")
    clock.advance(timedelta(minutes=5))  # a code lives five minutes
    with pytest.raises(WeChatAPIError):
        await services.client.oauth_openid("c-2")

    async def login_as(openid: str, code: str) -> Any:
        client.session.cookie_jar.clear()
        resp = await client.get("/auth/wechat", params={"next": "/docs/x"}, allow_redirects=False)
        state = parse_qs(urlsplit(resp.headers["Location"]).query)["state"][0]
        if openid:
            services.fake.add_oauth_code(code, openid)
        return await client.get(CALLBACK, params={"code": code, "state": state}, allow_redirects=False)

    elder = await login_as("demo-elder", "c-3")  # a resident, not staff
    assert elder.status == 403 and SESSION_COOKIE not in elder.cookies and "工作人员" in await elder.text()
    stranger = await login_as("someone-unknown", "c-4")
    assert stranger.status == 403 and SESSION_COOKIE not in stranger.cookies
    reused = await login_as("", "c-1")
    assert reused.status == 400 and SESSION_COOKIE not in reused.cookies
    services.fake.fail("/sns/oauth2/access_token", -1)  # WeChat busy: try again later, not "invalid"
    busy = await login_as("demo-steward", "c-5")
    assert busy.status == 503 and "稍后再试" in await busy.text() and SESSION_COOKIE not in busy.cookies


async def test_the_login_cookie_is_secure_behind_https(aiohttp_client, config: Config, clock: FrozenClock) -> None:
    app = create_app(config.replace(server={"public_url": "https://linli.example.cn"}), clock=clock)
    web = await aiohttp_client(app)
    resp = await web.get("/auth/wechat", params={"next": "/docs/x"}, allow_redirects=False)
    location = resp.headers["Location"]
    assert "redirect_uri=" + quote("https://linli.example.cn/auth/wechat/callback", safe="") + "&" in location
    assert "Secure" in next(c for c in resp.headers.getall("Set-Cookie") if c.startswith(LOGIN_COOKIE))
    state = parse_qs(urlsplit(location).query)["state"][0]
    app[SERVICES].fake.add_oauth_code("c-9", "demo-steward")
    back = await web.get(CALLBACK, params={"code": "c-9", "state": state},
                         cookies={LOGIN_COOKIE: resp.cookies[LOGIN_COOKIE].value}, allow_redirects=False)
    assert back.status == 302 and back.headers["Location"] == "/docs/x"
    cookie = next(c for c in back.headers.getall("Set-Cookie") if c.startswith(SESSION_COOKIE + "="))
    assert "Secure" in cookie and "HttpOnly" in cookie and "SameSite=Lax" in cookie


# ---------------------------------------------------------------------------- deletion


async def test_documents_are_deleted_after_the_errand_closed(client, clock: FrozenClock, docs: Path) -> None:
    fake = client.app[SERVICES].fake
    steward = await person("demo-steward")
    errand = await errand_with_photos(clock.now(), fake, steward=steward)
    # a replaced photo's file goes too
    fake.add_media("m-new", picture(colour="white"))
    newer = await ErrandPhoto.create(errand=errand, document="身份证", media_id="m-new", created_at=clock.now())
    await keep_photo(newer, clock.now())
    await ErrandPhoto.filter(errand_id=errand.id, document="身份证").exclude(id=newer.id).update(
        state=PhotoState.REPLACED)
    files = stored_files(docs)
    assert len(files) == 3
    link = await make_link(steward.id, errand.id, clock.now())
    session = await web_login(client, "demo-steward", link)
    closed_at = clock.now()
    await Errand.filter(id=errand.id).update(state=ErrandState.CLOSED, closed_at=closed_at)
    days = errand_docs.settings().documents_days

    assert await sweep_documents(closed_at + timedelta(days=days) - timedelta(seconds=1)) == 0
    assert all(p.exists() for p in files)
    clock.set(closed_at + timedelta(days=days))
    link = await make_link(steward.id, errand.id, clock.now())
    assert (await as_viewer(client, link, session)).status == 200
    counts = await retention_sweep(Retention(1095, 180, 90, 180, 365, 365, errand_documents_days=days), clock.now())
    assert counts["errand_documents"] == 3
    assert not any(p.exists() for p in files) and not (docs / str(errand.id)).exists()
    errand = await Errand.get(id=errand.id)
    assert errand.documents_deleted_at == clock.now()
    assert all(p.deleted_at == clock.now() for p in await ErrandPhoto.filter(errand_id=errand.id))
    deleted = [v for v in await views_of(errand.id) if v.via == "deleted"]
    assert len(deleted) == 3 and {v.viewer_id for v in deleted} == {None}
    assert await ErrandEvent.filter(errand_id=errand.id, kind="documents_deleted").count() == 1

    # nobody opens them any more: not the steward, not through the link made before
    assert (await as_viewer(client, link, session)).status == 404
    with pytest.raises(NotFound):
        await open_photo(steward.id, newer.id, via="api", now=clock.now())
    with pytest.raises(NotFound):
        await make_link(steward.id, errand.id, clock.now())
    # a second sweep finds nothing and logs nothing again
    assert await sweep_documents(clock.now() + timedelta(days=1)) == 0
    assert await delete_documents(errand.id, clock.now()) == 0
    assert await DocumentView.filter(via="deleted").count() == 3
    assert await ErrandEvent.filter(errand_id=errand.id, kind="documents_deleted").count() == 1


async def test_open_errands_and_recent_closures_keep_their_documents(client, clock: FrozenClock, docs: Path) -> None:
    fake = client.app[SERVICES].fake
    days = errand_docs.settings().documents_days
    old_open = await errand_with_photos(clock.now(), fake, documents=("身份证",))
    cancelled = await errand_with_photos(clock.now(), fake, documents=("身份证",))
    await Errand.filter(id=cancelled.id).update(state=ErrandState.CANCELLED, closed_at=clock.now())
    clock.advance(timedelta(days=days + 5))
    recent = await errand_with_photos(clock.now(), fake, documents=("身份证",))
    await Errand.filter(id=recent.id).update(state=ErrandState.CLOSED, closed_at=clock.now())
    assert await sweep_documents(clock.now()) == 1  # the cancelled one only
    deleted = set(await Errand.filter(documents_deleted_at__not_isnull=True).values_list("id", flat=True))
    assert deleted == {cancelled.id}
    assert old_open.id not in deleted and recent.id not in deleted


async def test_a_photo_kept_after_the_deletion_is_not_kept(client, clock: FrozenClock, docs: Path) -> None:
    fake = client.app[SERVICES].fake
    errand = await errand_with_photos(clock.now(), fake, documents=())
    fake.add_media("m-late", picture())
    late = await ErrandPhoto.create(errand=errand, document="身份证", media_id="m-late", created_at=clock.now())
    await Errand.filter(id=errand.id).update(state=ErrandState.CANCELLED, closed_at=clock.now())
    await delete_documents(errand.id, clock.now())
    await keep_photo(late, clock.now())  # the retry of a photo that could not be fetched before
    assert late.state == PhotoState.LOST and late.file_name == ""
    assert stored_files(docs) == []
