"""红色代办 and the cloud stewards (seed 004): errands with document pre-review, transfer and progress.

- ``ErrandItem`` is one item of a community's service package (便民服务包): the department in
  charge, the documents to photograph, who may ask, the first-response limit and the expected
  total time. A community starts from ``models.service_package.DEFAULT_PACKAGE``; its staff edit it.
- ``ErrandSettings`` holds a community's digest times, the red-proxy offer step and the points a
  proxy earns for a finished errand.
- ``Errand`` is one request, for one resident (asked by them or by their family proxy). Its
  ``state`` moves collecting → review → (reshoot → review …) → ready → transferred → result →
  delivered → closed, or to cancelled. ``progress`` is the department's word while transferred.
- ``ErrandPhoto`` is one photo of one required document, kept in the service's own document
  directory (models/errand_docs.py), never in chat. A steward accepts it or asks for a re-shoot.
- ``ErrandEvent`` is the errand's history (who did what when), read by the pushes and figures.
- ``CustodyEntry`` is the red proxy's log of an original document taken from the home and
  returned.
- ``DocumentView`` logs every opening of a document photo, through the signed link or the API.

The functions live in models/errand_core.py (the life of an errand), models/errand_docs.py
(storage, access, links and deletion) and models/errand_figures.py (the ledger and the figures).
"""

from __future__ import annotations

from tortoise import fields
from tortoise.models import Model


class ErrandState:
    COLLECTING = "collecting"  # the resident is photographing the documents
    REVIEW = "review"  # every document has a photo, some wait for the steward's pre-review
    RESHOOT = "reshoot"  # the steward asked for a photo again
    READY = "ready"  # every photo accepted: waiting for the transfer
    TRANSFERRED = "transferred"  # with the department (see progress)
    RESULT = "result"  # approved or rejected: waiting for the result to reach the resident
    DELIVERED = "delivered"  # the result reached the resident: waiting for the confirmation
    CLOSED = "closed"  # confirmed (and rated), or closed unrated after the feedback days
    CANCELLED = "cancelled"  # withdrawn before the transfer, or refused by staff


OPEN_STATES = (ErrandState.COLLECTING, ErrandState.REVIEW, ErrandState.RESHOOT, ErrandState.READY,
               ErrandState.TRANSFERRED, ErrandState.RESULT, ErrandState.DELIVERED)
STATE_LABELS = {
    ErrandState.COLLECTING: "待上传材料", ErrandState.REVIEW: "材料预审中", ErrandState.RESHOOT: "待重拍",
    ErrandState.READY: "待转办", ErrandState.TRANSFERRED: "部门办理中", ErrandState.RESULT: "待送达",
    ErrandState.DELIVERED: "待确认", ErrandState.CLOSED: "已办结", ErrandState.CANCELLED: "已取消",
}


class Progress:
    """What the department says while it has the errand."""

    RECEIVED = "received"
    PROCESSING = "processing"
    MORE_NEEDED = "more_needed"
    APPROVED = "approved"
    REJECTED = "rejected"


PROGRESS_LABELS = {
    Progress.RECEIVED: "已受理", Progress.PROCESSING: "办理中", Progress.MORE_NEEDED: "需补充材料",
    Progress.APPROVED: "已办结（通过）", Progress.REJECTED: "未通过",
}
RESULTS = (Progress.APPROVED, Progress.REJECTED)


class PhotoState:
    SAVING = "saving"  # received, not in our storage yet (a transient WeChat failure: retried)
    PENDING = "pending"  # stored, waiting for the steward
    ACCEPTED = "accepted"
    RESHOOT = "reshoot"  # the steward asked for it again (reason shown to the resident)
    LOST = "lost"  # could not be kept (not an image, too big, expired): the resident sends another
    REPLACED = "replaced"  # a newer photo of the same document took its place


class ProxyLevel:
    """Who the red-proxy offer is open to now."""

    NONE = ""  # no proxy needed
    GRID = "grid"  # the red proxies of the resident's grid
    COMMUNITY = "community"  # every red proxy of the community
    STAFF = "staff"  # nobody accepted: community staff assign one
    TAKEN = "taken"  # a proxy has it


class Via:
    CHAT = "chat"
    API = "api"
    STAFF = "staff"


class ErrandItem(Model):
    """One item of a community service package, which its staff edit."""

    _no_comments = True  # see models/__init__.py

    id = fields.IntField(primary_key=True)
    community: fields.ForeignKeyRelation = fields.ForeignKeyField(
        "linli.Community", related_name=False, on_delete=fields.CASCADE)
    name = fields.CharField(max_length=16)
    department: fields.ForeignKeyNullableRelation = fields.ForeignKeyField(
        "linli.Department", related_name=False, null=True, on_delete=fields.SET_NULL)
    documents: list[str] = fields.JSONField(default=list)  # the checklist, in the order to photograph
    # who may ask: residents holding any of these verified statuses (empty: anyone), and of at least this age
    statuses: list[str] = fields.JSONField(default=list)
    min_age = fields.IntField(default=0)
    first_response_minutes = fields.IntField(default=120)
    expected_days = fields.IntField(default=7)
    active = fields.BooleanField(default=True)
    position = fields.IntField(default=0)
    updated_at = fields.DatetimeField()
    updated_by: fields.ForeignKeyNullableRelation = fields.ForeignKeyField(
        "linli.Resident", related_name=False, null=True, on_delete=fields.SET_NULL)

    community_id: int
    department_id: int | None

    class Meta:
        table = "errand_item"
        unique_together = (("community", "name"),)
        ordering = ["position", "id"]


class ErrandSettings(Model):
    """A community red-proxy and steward settings, which its staff edit."""

    _no_comments = True  # see models/__init__.py

    id = fields.IntField(primary_key=True)
    community: fields.OneToOneRelation = fields.OneToOneField(
        "linli.Community", related_name=False, on_delete=fields.CASCADE)
    digest_times: list[str] = fields.JSONField(default=list)  # HH:MM, community time
    offer_minutes = fields.IntField(default=30)
    proxy_points = fields.IntField(default=20)
    updated_at = fields.DatetimeField()
    updated_by: fields.ForeignKeyNullableRelation = fields.ForeignKeyField(
        "linli.Resident", related_name=False, null=True, on_delete=fields.SET_NULL)

    community_id: int

    class Meta:
        table = "errand_settings"


class Errand(Model):
    """One request of the service package, for one resident."""

    _no_comments = True  # see models/__init__.py

    id = fields.IntField(primary_key=True)
    community: fields.ForeignKeyRelation = fields.ForeignKeyField(
        "linli.Community", related_name=False, on_delete=fields.RESTRICT)
    item: fields.ForeignKeyRelation = fields.ForeignKeyField(
        "linli.ErrandItem", related_name=False, on_delete=fields.RESTRICT)
    item_name = fields.CharField(max_length=16)  # as it was named when asked
    documents: list[str] = fields.JSONField(default=list)  # the checklist as it was when asked
    first_response_minutes = fields.IntField()
    expected_days = fields.IntField()
    resident: fields.ForeignKeyRelation = fields.ForeignKeyField(
        "linli.Resident", related_name=False, on_delete=fields.RESTRICT)
    requested_by: fields.ForeignKeyNullableRelation = fields.ForeignKeyField(
        "linli.Resident", related_name=False, null=True, on_delete=fields.SET_NULL)
    via = fields.CharField(max_length=8, default=Via.CHAT)
    note = fields.CharField(max_length=200, default="")
    state = fields.CharField(max_length=16, default=ErrandState.COLLECTING)
    progress = fields.CharField(max_length=16, default="")
    progress_note = fields.CharField(max_length=200, default="")
    steward: fields.ForeignKeyNullableRelation = fields.ForeignKeyField(
        "linli.Resident", related_name=False, null=True, on_delete=fields.SET_NULL)
    department: fields.ForeignKeyNullableRelation = fields.ForeignKeyField(
        "linli.Department", related_name=False, null=True, on_delete=fields.SET_NULL)
    # a red proxy is needed (lives alone, disabled, 80+, or marked by staff) and why
    needs_proxy = fields.BooleanField(default=False)
    proxy_reason = fields.CharField(max_length=32, default="")
    proxy_level = fields.CharField(max_length=12, default=ProxyLevel.NONE)
    proxy: fields.ForeignKeyNullableRelation = fields.ForeignKeyField(
        "linli.Resident", related_name=False, null=True, on_delete=fields.SET_NULL)
    created_at = fields.DatetimeField()
    first_response_at = fields.DatetimeField(null=True)  # a steward took it
    complete_at = fields.DatetimeField(null=True)  # every photo accepted
    transferred_at = fields.DatetimeField(null=True)
    result_at = fields.DatetimeField(null=True)
    delivered_at = fields.DatetimeField(null=True)
    at_door = fields.BooleanField(default=False)  # the result was delivered at the door by a red proxy
    closed_at = fields.DatetimeField(null=True)  # closed or cancelled
    rating = fields.IntField(null=True)  # 1 to 5
    rating_note = fields.CharField(max_length=200, default="")
    documents_deleted_at = fields.DatetimeField(null=True)
    version = fields.IntField(default=0)  # bumped by every change: conditional updates compare it

    community_id: int
    item_id: int
    resident_id: int
    requested_by_id: int | None
    steward_id: int | None
    department_id: int | None
    proxy_id: int | None

    class Meta:
        table = "errand"
        indexes = (("community_id", "state"), ("resident_id", "state"), ("state", "closed_at"))


class ErrandPhoto(Model):
    """One photo of one required document, kept in the document directory."""

    _no_comments = True  # see models/__init__.py

    id = fields.IntField(primary_key=True)
    errand: fields.ForeignKeyRelation = fields.ForeignKeyField(
        "linli.Errand", related_name=False, on_delete=fields.CASCADE, db_index=True)
    document = fields.CharField(max_length=32)
    state = fields.CharField(max_length=12, default=PhotoState.SAVING)
    media_id = fields.CharField(max_length=128, default="")  # WeChat temporary media id, if it came so
    pic_url = fields.CharField(max_length=500, default="")
    sha256 = fields.CharField(max_length=64, default="")
    size = fields.IntField(default=0)
    content_type = fields.CharField(max_length=16, default="")
    file_name = fields.CharField(max_length=80, default="")  # inside the document directory
    reason = fields.CharField(max_length=100, default="")  # why a re-shoot, or why lost
    sent_by: fields.ForeignKeyNullableRelation = fields.ForeignKeyField(
        "linli.Resident", related_name=False, null=True, on_delete=fields.SET_NULL)
    created_at = fields.DatetimeField()
    stored_at = fields.DatetimeField(null=True)
    reviewed_by: fields.ForeignKeyNullableRelation = fields.ForeignKeyField(
        "linli.Resident", related_name=False, null=True, on_delete=fields.SET_NULL)
    reviewed_at = fields.DatetimeField(null=True)
    deleted_at = fields.DatetimeField(null=True)  # the file is gone (after the case closed)

    errand_id: int

    class Meta:
        table = "errand_photo"
        ordering = ["id"]


class ErrandEvent(Model):
    """One step in an errand history."""

    _no_comments = True  # see models/__init__.py

    id = fields.IntField(primary_key=True)
    errand: fields.ForeignKeyRelation = fields.ForeignKeyField(
        "linli.Errand", related_name=False, on_delete=fields.CASCADE, db_index=True)
    kind = fields.CharField(max_length=24)
    actor: fields.ForeignKeyNullableRelation = fields.ForeignKeyField(
        "linli.Resident", related_name=False, null=True, on_delete=fields.SET_NULL)
    data: dict = fields.JSONField(default=dict)
    at = fields.DatetimeField()

    errand_id: int
    actor_id: int | None

    class Meta:
        table = "errand_event"
        ordering = ["id"]


class CustodyEntry(Model):
    """An original document a red proxy took from the home, and when it went back."""

    _no_comments = True  # see models/__init__.py

    id = fields.IntField(primary_key=True)
    errand: fields.ForeignKeyRelation = fields.ForeignKeyField(
        "linli.Errand", related_name=False, on_delete=fields.CASCADE, db_index=True)
    proxy: fields.ForeignKeyNullableRelation = fields.ForeignKeyField(
        "linli.Resident", related_name=False, null=True, on_delete=fields.SET_NULL)
    document = fields.CharField(max_length=32)
    taken_at = fields.DatetimeField()
    returned_at = fields.DatetimeField(null=True)
    note = fields.CharField(max_length=100, default="")

    errand_id: int

    class Meta:
        table = "errand_custody"
        ordering = ["id"]


class DocumentView(Model):
    """One opening of a document photo (through the signed link or the API), or its deletion."""

    _no_comments = True  # see models/__init__.py

    id = fields.IntField(primary_key=True)
    errand: fields.ForeignKeyRelation = fields.ForeignKeyField(
        "linli.Errand", related_name=False, on_delete=fields.CASCADE)
    photo: fields.ForeignKeyNullableRelation = fields.ForeignKeyField(
        "linli.ErrandPhoto", related_name=False, null=True, on_delete=fields.SET_NULL)
    viewer: fields.ForeignKeyNullableRelation = fields.ForeignKeyField(
        "linli.Resident", related_name=False, null=True, on_delete=fields.SET_NULL)
    via = fields.CharField(max_length=8)  # link | api | deleted (the retention sweep)
    at = fields.DatetimeField()

    errand_id: int
    photo_id: int | None
    viewer_id: int | None

    class Meta:
        table = "errand_document_view"
        indexes = (("errand_id", "at"),)


class SecretKey(Model):
    """A key the service made for itself (the document link signing key when none is configured)."""

    _no_comments = True  # see models/__init__.py

    id = fields.IntField(primary_key=True)
    name = fields.CharField(max_length=32, unique=True)
    value = fields.CharField(max_length=128)
    created_at = fields.DatetimeField()

    class Meta:
        table = "secret_key"
