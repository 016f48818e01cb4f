"""Document photos of errands: the own storage (a directory), who may open them, signed links,
the view log and deletion after the errand closed.

Photos of ID cards and household registers are fetched from WeChat (through models.media's
configured source) into ``errands.documents_dir``, one directory per errand, one file per photo,
written atomically with mode 0600. Unlike case photos (models.media keeps those in the database)
they live outside the database on purpose: a database backup or dump then holds no ID card, and
deleting them after ``documents_days`` really removes them.

Only the assigned steward, the assigned red proxy and staff of the department the errand was
transferred to may open them (``may_open``); every opening is a ``DocumentView`` row. Stewards
open them in a browser through a short-lived signed link (``make_link``, checked by ``verify``)
to bot/docs_web.py, never in chat. ``sweep_documents`` (the daily retention job) deletes the files
of errands closed or cancelled ``documents_days`` ago and logs the deletion.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import os
import secrets
import urllib.parse
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

from itsdangerous import BadSignature, SignatureExpired, TimestampSigner, URLSafeTimedSerializer
from tortoise.exceptions import IntegrityError
from tortoise.expressions import F
from tortoise.transactions import in_transaction

from bot.config import ErrandsConfig
from models import media
from models.errands import DocumentView, Errand, ErrandEvent, ErrandPhoto, ErrandState, PhotoState, SecretKey
from models.errors import NotFound, UserFacingError
from models.roles import Role, Scope, StaffRole

log = logging.getLogger(__name__)

_config = ErrandsConfig()
_key: str | None = None  # the signing key, once read (configure forgets it)

KEY_NAME = "errand_links"
LINK_SALT = "linli.errand-docs.link"
NOT_FOUND = "没有找到这件代办的材料，或你没有查看权限。"
GONE = "这个链接已过期，请回到公众号里重新点“查看材料”。"
STEWARD_ROLES = (Role.STEWARD, Role.COMMUNITY_STAFF)


class LinkExpired(UserFacingError):
    """A genuine link whose time is up (the page answers 410)."""


def configure(config: ErrandsConfig) -> None:
    """Use these settings (the service at start, the tests' database fixture)."""
    global _config, _key
    _config = config
    _key = None


def settings() -> ErrandsConfig:
    return _config


def documents_dir() -> Path:
    return Path(_config.documents_dir)


def _path_of(file_name: str) -> Path:
    """The file inside the document directory; never outside it, whatever the row says."""
    root = documents_dir().resolve()
    path = (root / file_name).resolve()
    if root not in path.parents:
        raise NotFound(NOT_FOUND)
    return path


# ---------------------------------------------------------------------------- storage


def _write_atomic(path: Path, data: bytes) -> None:
    """Write to a private temporary file beside ``path``, flush it to disk, then rename: a reader
    (or a crash) sees the whole file or none of it."""
    path.parent.parent.mkdir(mode=0o700, parents=True, exist_ok=True)  # the document directory
    path.parent.mkdir(mode=0o700, exist_ok=True)  # the errand's
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _refusal_text(exc: media.MediaRefused) -> str:
    """Why a photo could not be kept, for the resident, with the next step."""
    why = str(exc)
    if why.startswith("not an image"):
        text = "发来的不是图片（只收照片）"
    elif why.startswith("over "):
        text = f"图片太大（超过{media.MAX_BYTES // (1024 * 1024)}MB）"
    elif why == "empty":
        text = "图片是空的"
    else:
        text = "微信上的图片已过期或取不到"
    return f"{text}，请重新拍一张发来。"


async def keep_photo(photo: ErrandPhoto, now: datetime) -> None:
    """Fetch the photo into the document directory (SAVING → PENDING), or mark it LOST with the
    reason when it can never be kept. Anything else raised (WeChat busy, a timeout) leaves it SAVING
    for the caller to try again later. Safe to run twice: the file name is fixed by the photo and
    its bytes, and the row is only stamped where it is not stamped yet."""
    await photo.refresh_from_db()
    if photo.state != PhotoState.SAVING:
        return
    if photo.file_name:  # stored by a run cut short before it moved the state on
        await ErrandPhoto.filter(id=photo.id, state=PhotoState.SAVING).update(state=PhotoState.PENDING)
        await photo.refresh_from_db()
        return
    errand = await Errand.get(id=photo.errand_id)
    if errand.documents_deleted_at is not None:
        await _lose(photo, "这件代办的材料已删除，不再保存新照片。")
        return
    try:
        data = await media._fetch({"media_id": photo.media_id, "pic_url": photo.pic_url})
        content_type = media.check_image(data)
    except media.MediaRefused as exc:
        log.warning("errand photo %s could not be kept: %s", photo.id, exc)
        await _lose(photo, _refusal_text(exc))
        return
    digest = hashlib.sha256(data).hexdigest()
    name = f"{photo.errand_id}/{photo.id}-{digest[:16]}.{media.EXTENSIONS[content_type]}"
    path = _path_of(name)
    await asyncio.to_thread(_write_atomic, path, data)
    await ErrandPhoto.filter(id=photo.id, file_name="").update(
        sha256=digest, size=len(data), content_type=content_type, file_name=name, stored_at=now)
    await ErrandPhoto.filter(id=photo.id, state=PhotoState.SAVING).update(state=PhotoState.PENDING)
    if await Errand.filter(id=photo.errand_id, documents_deleted_at__not_isnull=True).exists():
        # the documents were deleted while we were fetching: this one goes as well
        await delete_documents(photo.errand_id, now)
    await photo.refresh_from_db()


async def _lose(photo: ErrandPhoto, reason: str) -> None:
    await ErrandPhoto.filter(id=photo.id, state=PhotoState.SAVING).update(state=PhotoState.LOST, reason=reason[:100])
    await photo.refresh_from_db()


# ---------------------------------------------------------------------------- access


async def may_open(viewer_id: int, errand: Errand) -> bool:
    """Only the assigned steward, the assigned red proxy and staff of the department the errand was
    transferred to, each still holding that role there; nobody once the documents are deleted."""
    if errand.documents_deleted_at is not None:
        return False
    roles = await StaffRole.filter(resident_id=viewer_id, revoked_at=None)
    if errand.steward_id == viewer_id and any(
            r.role in STEWARD_ROLES and r.community_id == errand.community_id for r in roles):  # type: ignore[attr-defined]
        return True
    if errand.proxy_id == viewer_id and any(
            r.role == Role.RED_PROXY and r.community_id == errand.community_id for r in roles):  # type: ignore[attr-defined]
        return True
    if errand.department_id is not None and errand.transferred_at is not None and any(
            r.role == Role.DEPARTMENT and r.scope_kind == Scope.DEPARTMENT and r.scope_id == errand.department_id
            for r in roles):
        return True
    return False


async def _openable(viewer_id: int, errand_id: int) -> Errand:
    errand = await Errand.get_or_none(id=errand_id)
    if errand is None or not await may_open(viewer_id, errand):
        raise NotFound(NOT_FOUND)
    return errand


def _readable(photo: ErrandPhoto) -> bool:
    return bool(photo.file_name) and photo.deleted_at is None and photo.state not in (
        PhotoState.REPLACED, PhotoState.LOST, PhotoState.SAVING)


async def open_photo(viewer_id: int, photo_id: int, *, via: str, now: datetime) -> tuple[ErrandPhoto, bytes]:
    """The photo and its bytes for someone who may open them, checked against the stored SHA-256;
    the opening is logged. NotFound otherwise (as if it did not exist)."""
    photo = await ErrandPhoto.get_or_none(id=photo_id)
    if photo is None:
        raise NotFound(NOT_FOUND)
    await _openable(viewer_id, photo.errand_id)
    if not _readable(photo):
        raise NotFound("这张照片已不在了（已删除、被新照片替换或没能保存）。")
    try:
        data = await asyncio.to_thread(_path_of(photo.file_name).read_bytes)
    except FileNotFoundError:
        log.error("errand photo %s: its file %s is missing", photo.id, photo.file_name)
        raise NotFound("这张照片的文件不见了，请让居民重新拍一张。") from None
    if not hmac.compare_digest(hashlib.sha256(data).hexdigest(), photo.sha256):
        log.error("errand photo %s: its file %s does not match the stored SHA-256", photo.id, photo.file_name)
        raise NotFound("这张照片的文件已损坏，请让居民重新拍一张。")
    await DocumentView.create(errand_id=photo.errand_id, photo_id=photo.id, viewer_id=viewer_id, via=via, at=now)
    return photo, data


async def views_of(errand_id: int) -> list[DocumentView]:
    """Every opening and deletion of the errand's photos, oldest first."""
    return await DocumentView.filter(errand_id=errand_id).order_by("at", "id")


# ---------------------------------------------------------------------------- signed links


async def signing_key() -> str:
    """errands.link_secret, or else a random key the service made once and keeps in the database
    (every worker and the scheduler read the same one; the first to make it wins)."""
    global _key
    if _config.link_secret:
        return _config.link_secret
    if _key is None:
        found = await SecretKey.get_or_none(name=KEY_NAME)
        if found is None:
            try:
                async with in_transaction():
                    found = await SecretKey.create(name=KEY_NAME, value=secrets.token_urlsafe(48),
                                                   created_at=datetime.now(UTC))
            except IntegrityError:  # another worker made it just now: use theirs
                found = await SecretKey.get(name=KEY_NAME)
        _key = found.value
    return _key


class _ClockSigner(TimestampSigner):
    """itsdangerous's timestamp signer on the service clock (a FrozenClock in tests), not time.time()."""

    def __init__(self, *args: Any, now: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._now = now

    def get_timestamp(self) -> int:
        return self._now


def serializer(key: str, salt: str, now: datetime) -> URLSafeTimedSerializer:
    """A URL-safe timed serializer (HMAC-SHA256) whose idea of now is ``now``."""
    return URLSafeTimedSerializer(key, salt=salt, signer=_ClockSigner,
                                  signer_kwargs={"now": int(now.timestamp()), "digest_method": hashlib.sha256})


async def make_link(viewer_id: int, errand_id: int, now: datetime) -> str:
    """"/docs/<token>": a link to the errand's document page for this viewer, valid link_minutes.
    NotFound unless they may open the documents."""
    await _openable(viewer_id, errand_id)
    token = serializer(await signing_key(), LINK_SALT, now).dumps({"e": errand_id, "v": viewer_id})
    return f"/docs/{token}"


async def verify(token: str, now: datetime) -> tuple[int, int]:
    """(errand id, viewer id) of a link made by make_link; LinkExpired when its time is up,
    NotFound when it was not made here (forged, altered, cut)."""
    try:
        data = serializer(await signing_key(), LINK_SALT, now).loads(token, max_age=_config.link_minutes * 60)
    except SignatureExpired:
        raise LinkExpired(GONE) from None
    except BadSignature:
        raise NotFound(NOT_FOUND) from None
    if not isinstance(data, dict) or not isinstance(data.get("e"), int) or not isinstance(data.get("v"), int):
        raise NotFound(NOT_FOUND)
    return int(data["e"]), int(data["v"])


def link_url(public_url: str, path: str) -> str:
    """The scheme and host of server.public_url in front of ``path`` (the path alone if unset)."""
    if not public_url:
        return path
    parts = urllib.parse.urlsplit(public_url)
    return f"{parts.scheme}://{parts.netloc}{path}"


# ---------------------------------------------------------------------------- deletion


def _unlink(path: Path) -> bool:
    try:
        path.unlink()
        return True
    except FileNotFoundError:
        return False


def _remove_dir(path: Path) -> None:
    try:
        for leftover in path.glob(".*.tmp"):  # a write cut short
            leftover.unlink(missing_ok=True)
        path.rmdir()
    except (FileNotFoundError, OSError):
        pass


async def delete_documents(errand_id: int, now: datetime) -> int:
    """Delete every stored photo file of the errand (replaced and lost ones too), stamp the rows and
    log the deletion (a DocumentView "deleted" per photo, an ErrandEvent once). From the first
    moment nobody may open them. Safe to run again: what is gone stays logged once. Returns how
    many photos were deleted now."""
    stamped = await Errand.filter(id=errand_id, documents_deleted_at__isnull=True).update(
        documents_deleted_at=now, version=F("version") + 1)
    deleted = 0
    for photo in await ErrandPhoto.filter(errand_id=errand_id, deleted_at__isnull=True).exclude(file_name=""):
        # the file first: a crash between the two leaves a row a later run stamps, never a file
        # nobody knows of
        await asyncio.to_thread(_unlink, _path_of(photo.file_name))
        if await ErrandPhoto.filter(id=photo.id, deleted_at__isnull=True).update(deleted_at=now):
            await DocumentView.create(errand_id=errand_id, photo_id=photo.id, viewer_id=None, via="deleted", at=now)
            deleted += 1
    await asyncio.to_thread(_remove_dir, documents_dir() / str(errand_id))
    if stamped:
        await ErrandEvent.create(errand_id=errand_id, kind="documents_deleted", actor_id=None,
                                 data={"photos": deleted}, at=now)
        log.info("errand %s: %d document photos deleted", errand_id, deleted)
    return deleted


async def sweep_documents(now: datetime, days: int | None = None) -> int:
    """Delete the documents of errands closed or cancelled at least ``days`` (default
    errands.documents_days) ago, and finish any deletion a crash cut short. Returns the photos
    deleted."""
    cutoff = now - timedelta(days=_config.documents_days if days is None else days)
    due = set(await Errand.filter(state__in=[ErrandState.CLOSED, ErrandState.CANCELLED], closed_at__lte=cutoff,
                                  documents_deleted_at__isnull=True).values_list("id", flat=True))
    due |= set(await ErrandPhoto.filter(errand__documents_deleted_at__not_isnull=True, deleted_at__isnull=True).exclude(
        file_name="").values_list("errand_id", flat=True))
    total = 0
    for errand_id in sorted(int(cast(int, i)) for i in due):
        total += await delete_documents(errand_id, now)
    return total
