"""Photos kept in our own database, because WeChat forgets a temporary media id after 3 days.

A resident's photo of a problem arrives as a WeChat media id (an image message, or the
mini-program's upload) or as an https URL (the mini-program). A due action fetches it while it
can still be fetched and stores the bytes here; the photo's dict then names the stored copy
(``"stored": id``) or says why it could not be kept (``"lost": why``). Only images are kept
(JPEG, PNG, GIF, WebP, told by their first bytes, whatever the sender claimed), at most
``MAX_BYTES`` each, and the same bytes once (by SHA-256), however often they are sent.

The bytes live in the database, not in a directory: every worker, the scheduler process and a
second machine reach the same copy without a shared disk, a backup of the database holds the
photos of its cases, and nothing else has to be configured. A photo is at most ``MAX_BYTES``
and a case has at most three, which both SQLite and PostgreSQL (bytea) hold without trouble.

Fetching is the service's business (bot/media.py, through the WeChat client); it plugs itself in
with ``configure`` when the service starts, as models.cases takes its calendar.
"""

from __future__ import annotations

import hashlib
import logging
from datetime import datetime
from typing import Any, Protocol, cast

from tortoise import fields
from tortoise.exceptions import IntegrityError
from tortoise.models import Model
from tortoise.transactions import in_transaction

log = logging.getLogger(__name__)

MAX_BYTES = 10 * 1024 * 1024
# content type by the first bytes of the file: what the file is, not what its sender said
EXTENSIONS = {"image/jpeg": "jpg", "image/png": "png", "image/gif": "gif", "image/webp": "webp"}


class MediaRefused(Exception):
    """This photo cannot be kept, and trying again will not change that (an expired media id, a
    refused URL, not an image, too big); the message says why."""


def image_type(data: bytes) -> str:
    """The image's content type from its magic number; MediaRefused for anything else."""
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith((b"GIF87a", b"GIF89a")):
        return "image/gif"
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    raise MediaRefused("not an image (JPEG, PNG, GIF or WebP)")


def check_image(data: bytes) -> str:
    """The content type of an image we may keep; MediaRefused naming what is wrong."""
    if not data:
        raise MediaRefused("empty")
    if len(data) > MAX_BYTES:
        raise MediaRefused(f"over {MAX_BYTES // (1024 * 1024)} MB")
    return image_type(data)


class StoredMedia(Model):
    """The bytes of one photo, kept once however many cases or notes show it."""

    _no_comments = True  # see models/__init__.py

    id = fields.IntField(primary_key=True)
    sha256 = fields.CharField(max_length=64, unique=True)
    size = fields.IntField()
    content_type = fields.CharField(max_length=16)
    data = fields.BinaryField()
    created_at = fields.DatetimeField()
    # the latest upload of this copy to WeChat (a temporary media id, for an image message), reused
    # while it is fresh (bot/outbox.py)
    wechat_media_id = fields.CharField(max_length=128, default="")
    wechat_media_at = fields.DatetimeField(null=True)

    class Meta:
        table = "stored_media"

    @property
    def filename(self) -> str:
        return f"{self.sha256[:16]}.{EXTENSIONS.get(self.content_type, 'bin')}"


async def store(data: bytes, now: datetime) -> int:
    """Keep the image (checked first) and return its id; the same bytes again return the first id."""
    content_type = check_image(data)
    digest = hashlib.sha256(data).hexdigest()
    found = await _id_of(digest)
    if found is not None:
        return found
    try:
        async with in_transaction():
            row = await StoredMedia.create(sha256=digest, size=len(data), content_type=content_type, data=data,
                                           created_at=now)
        return row.id
    except IntegrityError:  # another worker kept the same bytes just now
        found = await _id_of(digest)
        if found is None:
            raise
        return found


async def _id_of(digest: str) -> int | None:
    ids = await StoredMedia.filter(sha256=digest).values_list("id", flat=True)
    return int(cast(int, ids[0])) if ids else None


async def load(stored_id: int) -> StoredMedia | None:
    return await StoredMedia.get_or_none(id=stored_id)


async def uploaded_since(stored_id: int, since: datetime) -> str | None:
    """The WeChat media id this copy was last uploaded as, if that was after ``since``."""
    row = await StoredMedia.filter(id=stored_id, wechat_media_at__gt=since).exclude(wechat_media_id="").first(
    ).values_list("wechat_media_id", flat=True)
    return str(row) if row else None


async def remember_upload(stored_id: int, media_id: str, now: datetime) -> None:
    await StoredMedia.filter(id=stored_id).update(wechat_media_id=media_id, wechat_media_at=now)


# ---------------------------------------------------------------------------- fetching


class MediaSource(Protocol):
    """Where photos come from (bot/media.py). Raises MediaRefused when a photo can never be had;
    anything else it raises is worth another try later."""

    async def media_get(self, media_id: str) -> bytes: ...

    async def fetch_url(self, url: str) -> bytes: ...


_source: MediaSource | None = None


def configure(source: MediaSource | None) -> None:
    """Plug in the service's source (bot/services.py, when the WeChat client exists)."""
    global _source
    _source = source


def unconfigure(source: MediaSource) -> None:
    """Unplug ``source`` if it is still the one plugged in (the service that set it is closing)."""
    global _source
    if _source is source:
        _source = None


def settled(photo: dict[str, Any]) -> bool:
    """Stored, or given up on: nothing more to fetch."""
    return "stored" in photo or "lost" in photo


def state(photo: dict[str, Any]) -> str:
    """stored | lost | saving (not fetched yet)."""
    return "stored" if "stored" in photo else "lost" if "lost" in photo else "saving"


async def _fetch(photo: dict[str, Any]) -> bytes:
    if _source is None:
        raise RuntimeError("no media source configured (the service is not running in this process)")
    if photo.get("media_id"):
        return await _source.media_get(str(photo["media_id"]))
    if photo.get("pic_url"):
        return await _source.fetch_url(str(photo["pic_url"]))
    raise MediaRefused("neither a media id nor a URL")


async def keep(photos: list[dict[str, Any]], now: datetime) -> tuple[list[dict[str, Any]], Exception | None]:
    """Fetch and store every photo not settled yet: the new list, and the first failure worth another
    try (WeChat busy, a timeout), whose photo stays as it was. A refusal settles the photo as lost."""
    out: list[dict[str, Any]] = []
    error: Exception | None = None
    for photo in photos:
        if settled(photo):
            out.append(photo)
            continue
        try:
            out.append({**photo, "stored": await store(await _fetch(photo), now)})
        except MediaRefused as exc:
            log.warning("a photo could not be kept: %s", exc)
            out.append({**photo, "lost": str(exc)[:200], "lost_at": now.isoformat()})
        except Exception as exc:
            out.append(photo)
            error = error or exc
    return out, error


def merge(current: list[dict[str, Any]], kept: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``current`` (as stored now) with what ``kept`` settled, photo by photo, where both are still
    the same photo."""
    out = []
    for i, photo in enumerate(current):
        new = kept[i] if i < len(kept) else None
        same = new is not None and (new.get("media_id"), new.get("pic_url")) == (photo.get("media_id"),
                                                                               photo.get("pic_url"))
        out.append(new if new is not None and same and settled(new) and not settled(photo) else photo)
    return out


def image_payload(photo: dict[str, Any], received_at: datetime) -> dict[str, Any]:
    """An outbox image message showing this photo (bot/outbox.py sends it): its WeChat media id
    while that is fresh, else the stored copy, uploaded to WeChat again."""
    return {"media_id": str(photo.get("media_id") or ""), "media_at": received_at.isoformat(),
            "stored": photo.get("stored")}
