"""The life of an errand (红色代办): asking, photos, pre-review, transfer, progress, the red proxy,
delivery, confirmation and points; the stewards' queue, first-response watch and daily digests.

- A community's service package is its own list of ``ErrandItem`` rows, seeded from
  ``models.service_package.DEFAULT_PACKAGE`` the first time anyone looks (``ensure_catalogue``)
  and edited by its staff afterwards (``save_item``). Who may ask is decided by verified facts
  only (models.facts): statuses and age.
- A resident (their family proxy, or community staff for them) asks for an item
  (``create_errand``); one open errand per resident and item. The errand copies the item's
  name, documents and limits, so a later edit of the catalogue never changes it. Residents in a
  special group (lives alone, disabled, 80+, mobility, or marked by staff) need a red proxy: the
  errand is offered at once to the red proxies of their grid, after ``offer_minutes`` to every red
  proxy of the community, and then community staff are asked to assign one. The first proxy to
  accept gets it (a conditional update).
- Each document is photographed (``add_photo``); the photo is fetched into the document store
  at once (models.errand_docs.keep_photo), or later by the due action ``errand.keep_photo`` when
  WeChat is busy. A cloud steward of the community takes the errand (its first response,
  watched by due actions: the stewards, then community staff are alerted when nobody takes it
  within the item's limit), accepts each photo or asks for a re-shoot (a pending prompt to the
  resident), and transfers the complete set to the department in charge. The steward or the
  department's staff record its progress; "more needed" may add documents and send it back to
  collecting. The result reaches the resident at the door through the proxy (who keeps a
  custody log of originals taken and returned: delivery is refused while one is out), or
  without a proxy through the steward. The resident confirms and rates (a pending prompt); the
  proxy's points go from the community's issuing account once (key ``errand:<id>:points``). A
  delivered errand nobody confirms closes unrated after ``errands.feedback_days`` (read from
  models.errand_docs.settings(), which the service and the tests configure); the proxy's points
  are credited then too, under the same key.
- Every change reads the errand, checks it, and writes it by a conditional UPDATE on its
  ``version`` together with an ``ErrandEvent`` in one transaction; when another change came
  first it reads again and decides again, so double taps, retries and races have one effect.
  Pushes are keyed by the event (``errand:<id>:ev:<event id>:<who>``) and go after the commit,
  to the resident (and whoever asked for them), the proxy, the steward and the department as
  the change concerns them, in plain Chinese with the next step. Nobody is told of their own
  action: the chat reply or the API response does that.
- At each community's digest times every steward gets the list of open errands that wait for
  them (theirs and unassigned, oldest first, overdue marked) and every resident with an errand
  in progress gets where it stands. Each (community, day, time) is claimed once as a JobRun
  row; when several times are due at once (the scheduler was down) only the latest is sent.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, TypeVar, cast
from zoneinfo import ZoneInfo

from tortoise.exceptions import IntegrityError
from tortoise.expressions import F, Q
from tortoise.transactions import in_transaction

from models import cases, errand_docs, ledger
from models.conversation import PendingPrompt, Question, choice, push_prompt
from models.errands import (
    OPEN_STATES,
    PROGRESS_LABELS,
    RESULTS,
    STATE_LABELS,
    CustodyEntry,
    Errand,
    ErrandEvent,
    ErrandItem,
    ErrandPhoto,
    ErrandSettings,
    ErrandState,
    PhotoState,
    Progress,
    ProxyLevel,
    Via,
)
from models.errors import Forbidden, NotFound, UserFacingError
from models.facts import STATUSES, verified_age, verified_statuses
from models.jobs import cancel_actions, claim_run, finish_run, register_action, schedule_action
from models.ledger import AccountKind, Asset, Source, account, points_of
from models.places import Building, Community, Department
from models.proxies import ProxyLink, ProxyStatus, acts_for, record_action
from models.push import push_text
from models.residents import Mobility, Resident, WechatAccount
from models.roles import Role, Scope, StaffRole
from models.service_package import DEFAULT_PACKAGE
from models.wishes import mask_name

log = logging.getLogger(__name__)

T = TypeVar("T")

SPECIAL_LABELS: dict[str, str] = {
    "lives_alone": "独居", "disabled": "残疾", "age80": "80岁以上", "mobility": "行动不便", "staff": "社区标记",
}
PROXY_AGE = 80

DEFAULT_DIGEST_TIMES = ["10:00", "16:00"]
DEFAULT_OFFER_MINUTES = 30
DEFAULT_PROXY_POINTS = 20
DIGEST_TIMES_MAX = 6
OFFER_MINUTES_RANGE = (5, 1440)
PROXY_POINTS_MAX = 1000
ITEM_NAME_MAX = 16
DOCUMENTS_MAX = 10
DOCUMENT_MAX = 32
RESPONSE_MINUTES_MAX = 10080  # a week
EXPECTED_DAYS_MAX = 365
NOTE_MAX = 200
REASON_MIN, REASON_MAX = 2, 100
CUSTODY_NOTE_MAX = 100
DIGEST_ROWS_MAX = 30  # errands listed in one steward's digest; the rest are counted
KEEP_RETRY = timedelta(minutes=1)
KEEP_GIVE_UP = timedelta(minutes=25)  # the due sweep's fifth attempt comes about 31 minutes in
RETRIES = 8

STEWARD_ROLES = (Role.STEWARD, Role.COMMUNITY_STAFF)  # who runs the queue: cloud stewards and community staff
CHAT_CHANNELS = ("oa", "chat")

# pending prompts (handlers/errands.py answers them)
ERRAND_FLOW = "errand"
RESHOOT_STEP = "reshoot"  # a photo
RATE_STEP = "rate"  # a choice 1 to 5, then an optional note
OFFER_FLOW, OFFER_STEP = "errand_offer", "answer"  # a choice: "accept" or "decline"
ACCEPT, DECLINE = "accept", "decline"

# due actions
KEEP_PHOTO = "errand.keep_photo"
FIRST_RESPONSE = "errand.first_response"
FIRST_RESPONSE_STAFF = "errand.first_response_staff"
OFFER_ESCALATE = "errand.offer_escalate"
FEEDBACK_CLOSE = "errand.feedback_close"

DIGEST_CLAIM = "errand.digest"  # JobRun job name: errand.digest:<community id>, fire time = the digest time


class Kind:
    """ErrandEvent kinds."""

    CREATED = "created"
    OFFERED = "offered"
    OFFER_ESCALATED = "offer_escalated"
    OFFER_DECLINED = "offer_declined"
    PROXY_REQUIRED = "proxy_required"
    PROXY_ACCEPTED = "proxy_accepted"
    PROXY_ASSIGNED = "proxy_assigned"
    PHOTO = "photo"
    PHOTO_LOST = "photo_lost"
    STATE = "state"  # the photos moved the errand on (collecting, review, reshoot, ready)
    TAKEN = "taken"
    REVIEWED = "photo_reviewed"
    TRANSFERRED = "transferred"
    PROGRESS = "progress"
    ORIGINAL_TAKEN = "original_taken"
    ORIGINAL_RETURNED = "original_returned"
    DELIVERED = "delivered"
    CONFIRMED = "confirmed"
    AUTO_CLOSED = "auto_closed"
    CANCELLED = "cancelled"
    ALERT = "alert"  # nobody took it within the first-response limit


EVENT_LABELS = {
    Kind.CREATED: "提交申请", Kind.OFFERED: "派单给代办员", Kind.OFFER_ESCALATED: "扩大派单范围",
    Kind.OFFER_DECLINED: "代办员未接单", Kind.PROXY_REQUIRED: "标记需要代办员", Kind.PROXY_ACCEPTED: "代办员接单",
    Kind.PROXY_ASSIGNED: "指派代办员", Kind.PHOTO: "上传材料", Kind.PHOTO_LOST: "照片未保存",
    Kind.STATE: "状态变化", Kind.TAKEN: "云管家接单", Kind.REVIEWED: "材料预审", Kind.TRANSFERRED: "转办",
    Kind.PROGRESS: "办理进度", Kind.ORIGINAL_TAKEN: "取走原件", Kind.ORIGINAL_RETURNED: "归还原件",
    Kind.DELIVERED: "结果送达", Kind.CONFIRMED: "居民确认", Kind.AUTO_CLOSED: "自动办结", Kind.CANCELLED: "取消",
    Kind.ALERT: "超时提醒",
}

NOT_FOUND = "没有找到这件代办。"
BUSY = "这件代办刚刚有了变化，请重新查看。"
PREFIX = "【红色代办】"

BEFORE_TRANSFER = (ErrandState.COLLECTING, ErrandState.REVIEW, ErrandState.RESHOOT, ErrandState.READY)
PHOTO_STATES = (ErrandState.COLLECTING, ErrandState.REVIEW, ErrandState.RESHOOT)  # photos may be added


class _Stale(Exception):
    """The errand moved on between reading and writing it: read again and decide again."""


async def _attempt(fn: Callable[[], Awaitable[T]]) -> T:
    for _ in range(RETRIES):
        try:
            return await fn()
        except _Stale:
            continue
    raise UserFacingError(BUSY)


def _id(obj: Any, name: str) -> int | None:
    value = getattr(obj, name, None)
    return None if value is None else int(value)


# ---------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class Settings:
    community_id: int
    digest_times: list[str]  # HH:MM, community time, in order
    offer_minutes: int  # how long each circle of red proxies has the offer
    proxy_points: int  # what a red proxy earns for a finished errand


def parse_hhmm(text: str) -> time:
    match = re.fullmatch(r"(\d{1,2})[:：](\d{2})", text.strip())
    if not match or int(match.group(1)) > 23 or int(match.group(2)) > 59:
        raise ValueError(f"digest_times: {text!r} is not a time HH:MM")
    return time(int(match.group(1)), int(match.group(2)))


async def settings_of(community_id: int) -> Settings:
    """The community's settings: its own row, else the defaults."""
    row = await ErrandSettings.get_or_none(community_id=community_id)
    if row is None:
        return Settings(community_id, list(DEFAULT_DIGEST_TIMES), DEFAULT_OFFER_MINUTES, DEFAULT_PROXY_POINTS)
    return Settings(community_id, list(row.digest_times), row.offer_minutes, row.proxy_points)


async def save_settings(community_id: int, *, now: datetime, actor_id: int | None,
                        digest_times: list[str] | None = None, offer_minutes: int | None = None,
                        proxy_points: int | None = None) -> Settings:
    """Change some of the community's settings; ValueError names a bad value (nothing is written)."""
    times: list[str] | None = None
    if digest_times is not None:
        if not isinstance(digest_times, list) or not all(isinstance(t, str) for t in digest_times):
            raise ValueError("digest_times: a list of times HH:MM")
        times = sorted({f"{parse_hhmm(t):%H:%M}" for t in digest_times})
        if len(times) > DIGEST_TIMES_MAX:
            raise ValueError(f"digest_times: at most {DIGEST_TIMES_MAX} times a day")
    low, high = OFFER_MINUTES_RANGE
    if offer_minutes is not None and (not _is_int(offer_minutes) or not low <= offer_minutes <= high):
        raise ValueError(f"offer_minutes: {low} to {high}")
    if proxy_points is not None and (not _is_int(proxy_points) or not 0 <= proxy_points <= PROXY_POINTS_MAX):
        raise ValueError(f"proxy_points: 0 to {PROXY_POINTS_MAX}")
    if await Community.get_or_none(id=community_id) is None:
        raise NotFound("没有找到这个社区。")
    defaults = {"digest_times": list(DEFAULT_DIGEST_TIMES), "offer_minutes": DEFAULT_OFFER_MINUTES,
                "proxy_points": DEFAULT_PROXY_POINTS, "updated_at": now}
    try:
        row, _ = await ErrandSettings.get_or_create(community_id=community_id, defaults=defaults)
    except IntegrityError:  # created concurrently
        row = await ErrandSettings.get(community_id=community_id)
    changes: dict[str, Any] = {"updated_at": now, "updated_by_id": actor_id}
    if times is not None:
        changes["digest_times"] = times
    if offer_minutes is not None:
        changes["offer_minutes"] = offer_minutes
    if proxy_points is not None:
        changes["proxy_points"] = proxy_points
    await ErrandSettings.filter(id=row.id).update(**changes)
    return await settings_of(community_id)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# ---------------------------------------------------------------------------- the catalogue


async def ensure_catalogue(community_id: int, now: datetime) -> list[ErrandItem]:
    """The community's items (all, in order); the first call seeds them from DEFAULT_PACKAGE, with the
    departments of the community's sub-district they name. Callers racing on a new community all
    get the one full list: the seeding is one transaction, and the unique names make the losers
    roll back and read what the winner wrote."""
    items = await ErrandItem.filter(community_id=community_id).order_by("position", "id")
    if items:
        return list(items)
    community = await Community.get_or_none(id=community_id)
    if community is None:
        raise NotFound("没有找到这个社区。")
    sub_district_id = cast(int, _id(community, "sub_district_id"))
    for _ in range(3):
        try:
            async with in_transaction():
                if await ErrandItem.filter(community_id=community_id).exists():
                    break
                departments: dict[str, int] = {}
                for position, package in enumerate(DEFAULT_PACKAGE):
                    if package.department not in departments:
                        found = await Department.get_or_none(sub_district_id=sub_district_id, name=package.department)
                        if found is None:
                            found = await Department.create(sub_district_id=sub_district_id, name=package.department)
                        departments[package.department] = found.id
                    await ErrandItem.create(
                        community_id=community_id, name=package.name, department_id=departments[package.department],
                        documents=list(package.documents), statuses=list(package.statuses), min_age=package.min_age,
                        first_response_minutes=package.first_response_minutes,
                        expected_days=package.expected_days, active=True, position=position, updated_at=now)
            break
        except IntegrityError:  # another caller seeded this community (or a department) meanwhile
            continue
    return list(await ErrandItem.filter(community_id=community_id).order_by("position", "id"))


def ineligible_reason(item: ErrandItem, statuses: set[str], age: int | None) -> str | None:
    """Why a resident with these verified statuses and age may not ask for the item (None: they may)."""
    if item.statuses and not statuses & set(item.statuses):
        labels = "、".join(STATUSES.get(code, code) for code in item.statuses)
        return f"仅限{labels}居民申请（需社区核实身份）"
    if item.min_age:
        if age is None:
            return f"仅限{item.min_age}岁以上居民申请，请先请社区核实您的出生日期"
        if age < item.min_age:
            return f"仅限{item.min_age}岁以上居民申请"
    return None


async def _facts(resident_id: int, today: date) -> tuple[set[str], int | None]:
    return await verified_statuses(resident_id), await verified_age(resident_id, today)


async def items_for(resident: Resident, now: datetime) -> list[tuple[ErrandItem, str | None]]:
    """The active items of the resident's community, each with None (may ask) or why they may not."""
    items = await ensure_catalogue(cast(int, _id(resident, "community_id")), now)
    statuses, age = await _facts(resident.id, cases.local_today(now))
    return [(item, ineligible_reason(item, statuses, age)) for item in items if item.active]


async def save_item(community_id: int, *, now: datetime, actor_id: int | None, item_id: int | None = None,
                    name: str, department_id: int | None, documents: list[str], statuses: list[str], min_age: int,
                    first_response_minutes: int, expected_days: int, active: bool, position: int) -> ErrandItem:
    """Create an item of the community (``item_id`` None) or change one; ValueError names the bad field."""
    name = " ".join(str(name).split())
    if not 1 <= len(name) <= ITEM_NAME_MAX:
        raise ValueError(f"name: 1 to {ITEM_NAME_MAX} characters")
    if not isinstance(documents, list) or not 1 <= len(documents) <= DOCUMENTS_MAX:
        raise ValueError(f"documents: 1 to {DOCUMENTS_MAX} documents")
    docs = [" ".join(str(d).split()) for d in documents]
    if any(not 1 <= len(d) <= DOCUMENT_MAX for d in docs):
        raise ValueError(f"documents: each 1 to {DOCUMENT_MAX} characters")
    if len(set(docs)) != len(docs):
        raise ValueError("documents: each document once")
    if not isinstance(statuses, list) or any(code not in STATUSES for code in statuses):
        raise ValueError(f"statuses: codes of {', '.join(STATUSES)}")
    if not _is_int(min_age) or not 0 <= min_age <= 120:
        raise ValueError("min_age: 0 to 120")
    if not _is_int(first_response_minutes) or not 1 <= first_response_minutes <= RESPONSE_MINUTES_MAX:
        raise ValueError(f"first_response_minutes: 1 to {RESPONSE_MINUTES_MAX}")
    if not _is_int(expected_days) or not 1 <= expected_days <= EXPECTED_DAYS_MAX:
        raise ValueError(f"expected_days: 1 to {EXPECTED_DAYS_MAX}")
    if not _is_int(position) or not 0 <= position <= 10000:
        raise ValueError("position: 0 to 10000")
    if not isinstance(active, bool):
        raise ValueError("active: true or false")
    community = await Community.get_or_none(id=community_id)
    if community is None:
        raise NotFound("没有找到这个社区。")
    if department_id is not None and not await Department.filter(
            id=department_id, sub_district_id=_id(community, "sub_district_id")).exists():
        raise ValueError("department_id: not a department of this sub-district")
    await ensure_catalogue(community_id, now)  # a first edit must not keep the default list away
    if await ErrandItem.filter(community_id=community_id, name=name).exclude(id=item_id or 0).exists():
        raise ValueError("name: another item of this community has this name")
    values: dict[str, Any] = {
        "name": name, "department_id": department_id, "documents": docs, "statuses": list(dict.fromkeys(statuses)),
        "min_age": min_age, "first_response_minutes": first_response_minutes, "expected_days": expected_days,
        "active": active, "position": position, "updated_at": now, "updated_by_id": actor_id,
    }
    try:
        async with in_transaction():
            if item_id is None:
                return await ErrandItem.create(community_id=community_id, **values)
            if not await ErrandItem.filter(id=item_id, community_id=community_id).update(**values):
                raise NotFound("没有找到这个代办事项。")
    except IntegrityError:
        raise ValueError("name: another item of this community has this name") from None
    return await ErrandItem.get(id=item_id)


# ---------------------------------------------------------------------------- who is who


async def _holders(roles: tuple[str, ...], **scope: Any) -> list[int]:
    ids = await StaffRole.filter(role__in=list(roles), revoked_at=None, **scope).order_by("id").values_list(
        "resident_id", flat=True)
    return list(dict.fromkeys(int(cast(int, i)) for i in ids))


async def _holds(actor_id: int, roles: tuple[str, ...], **scope: Any) -> bool:
    return await StaffRole.filter(resident_id=actor_id, role__in=list(roles), revoked_at=None, **scope).exists()


async def is_steward(actor_id: int, community_id: int) -> bool:
    """A cloud steward (or community staff) of the community: runs its queue."""
    return await _holds(actor_id, STEWARD_ROLES, community_id=community_id)


async def is_community_staff(actor_id: int, community_id: int) -> bool:
    return await _holds(actor_id, (Role.COMMUNITY_STAFF,), community_id=community_id)


async def is_department_staff(actor_id: int, department_id: int | None) -> bool:
    return department_id is not None and await _holds(
        actor_id, (Role.DEPARTMENT,), scope_kind=Scope.DEPARTMENT, scope_id=department_id)


async def _grid_of(resident_id: int) -> int | None:
    building_id = _id(await Resident.get(id=resident_id), "building_id")
    if building_id is None:
        return None
    grid: Any = await Building.filter(id=building_id).first().values_list("grid_id", flat=True)
    return int(grid) if grid is not None else None


async def red_proxies(errand: Errand, level: str) -> list[int]:
    """The red proxies an offer at ``level`` goes to: the resident's grid, or the whole community."""
    if level == ProxyLevel.GRID:
        grid_id = await _grid_of(errand.resident_id)
        ids = [] if grid_id is None else await _holders((Role.RED_PROXY,), grid_id=grid_id)
    else:
        ids = await _holders((Role.RED_PROXY,), community_id=errand.community_id)
    return [i for i in ids if i != errand.resident_id]


async def _is_red_proxy(actor_id: int, community_id: int) -> bool:
    return await _holds(actor_id, (Role.RED_PROXY,), community_id=community_id)


async def speaks_for(actor_id: int, errand: Errand) -> bool:
    """The resident, whoever asked for them, or their family proxy."""
    return actor_id in (errand.resident_id, errand.requested_by_id) or await acts_for(actor_id, errand.resident_id)


async def _sub_district_of(community_id: int) -> int:
    value: Any = await Community.filter(id=community_id).first().values_list("sub_district_id", flat=True)
    return int(value)


async def may_see(viewer_id: int, errand: Errand) -> bool:
    """The resident, the requester, their family proxies, stewards and staff (community or sub-district)
    of the community, the assigned proxy, and staff of its department once it was transferred."""
    if await speaks_for(viewer_id, errand) or viewer_id == errand.proxy_id:
        return True
    if await _holds(viewer_id, STEWARD_ROLES, community_id=errand.community_id):
        return True
    if await _holds(viewer_id, (Role.SUBDISTRICT_STAFF,),
                    sub_district_id=await _sub_district_of(errand.community_id)):
        return True
    return errand.transferred_at is not None and await is_department_staff(viewer_id, errand.department_id)


async def offered_to(proxy_id: int, errand: Errand) -> bool:
    """Whether the errand's red-proxy offer is open to this proxy now (they may accept it)."""
    if errand.proxy_id is not None or not errand.needs_proxy or errand.state not in OPEN_STATES:
        return False
    if errand.proxy_level == ProxyLevel.GRID:
        return proxy_id in await red_proxies(errand, ProxyLevel.GRID)
    if errand.proxy_level in (ProxyLevel.COMMUNITY, ProxyLevel.STAFF):
        return proxy_id in await red_proxies(errand, ProxyLevel.COMMUNITY)
    return False


async def get_errand(errand_id: int, viewer_id: int) -> Errand:
    errand = await Errand.get_or_none(id=errand_id)
    if errand is None or not await may_see(viewer_id, errand):
        raise NotFound(NOT_FOUND)
    return errand


async def _read(errand_id: int) -> Errand:
    errand = await Errand.get_or_none(id=errand_id)
    if errand is None:
        raise NotFound(NOT_FOUND)
    return errand


# ---------------------------------------------------------------------------- eligibility and asking


async def proxy_reason(resident: Resident, today: date) -> str:
    """Why the resident needs a red proxy ("" when they do not): a SPECIAL_LABELS code."""
    statuses = await verified_statuses(resident.id)
    if "lives_alone" in statuses:
        return "lives_alone"
    if "disabled" in statuses:
        return "disabled"
    age = await verified_age(resident.id, today)
    if age is not None and age >= PROXY_AGE:
        return "age80"
    if resident.mobility == Mobility.NEEDS_DELIVERY:
        return "mobility"
    return ""


async def _may_ask_for(actor_id: int, resident: Resident) -> str | None:
    """How the actor may ask for the resident: "self", "family" or "staff" (None: they may not)."""
    if actor_id == resident.id:
        return "self"
    if await acts_for(actor_id, resident.id):
        return "family"
    community_id = cast(int, _id(resident, "community_id"))
    if await _holds(actor_id, STEWARD_ROLES, community_id=community_id):
        return "staff"
    grid_id = await _grid_of(resident.id)
    if grid_id is not None and await _holds(actor_id, (Role.GRID_WORKER,), grid_id=grid_id):
        return "staff"
    return None


async def _first_level(errand: Errand) -> tuple[str, list[int]]:
    """Where an offer starts: the grid's red proxies, else the community's, else staff assign one."""
    for level in (ProxyLevel.GRID, ProxyLevel.COMMUNITY):
        ids = await red_proxies(errand, level)
        if ids:
            return level, ids
    return ProxyLevel.STAFF, []


async def create_errand(*, item_id: int, resident_id: int, requested_by_id: int, via: str, now: datetime,
                        note: str = "", key: str | None = None) -> tuple[Errand, bool]:
    """Ask for an item for a resident: (errand, created). Asking again while one of that item is open
    returns the open one; a retry ``key`` returns the errand it made first."""
    resident = await Resident.get_or_none(id=resident_id, erased_at=None)
    if resident is None:
        raise NotFound("没有找到这位居民。")
    how = await _may_ask_for(requested_by_id, resident)
    if how is None:
        raise Forbidden("您不能为这位居民申请代办。")
    if via not in (Via.CHAT, Via.API, Via.STAFF):
        raise ValueError(f"via: {Via.CHAT}, {Via.API} or {Via.STAFF}")
    if how == "staff":
        via = Via.STAFF
    if key:
        earlier = await _by_key(requested_by_id, key)
        if earlier is not None:
            if (earlier.item_id, earlier.resident_id) != (item_id, resident_id):
                raise UserFacingError("这个请求编号已用于另一件代办，请刷新后重试。")
            return earlier, False
    item = await ErrandItem.get_or_none(id=item_id, community_id=_id(resident, "community_id"))
    if item is None:
        raise NotFound("没有找到这个代办事项。")
    if not item.active:
        raise UserFacingError(f"“{item.name}”暂不受理，请选择其他事项或联系社区。")
    note = " ".join(note.split())
    if len(note) > NOTE_MAX:
        raise UserFacingError(f"备注最多{NOTE_MAX}个字，请精简。")
    today = cases.local_today(now)
    statuses, age = await _facts(resident.id, today)
    why = ineligible_reason(item, statuses, age)
    if why is not None:
        raise UserFacingError(f"“{item.name}”{why}。")
    reason = await proxy_reason(resident, today)
    async with in_transaction():
        # one open errand per resident and item: asks for the same resident queue on their row
        await Resident.select_for_update().filter(id=resident.id).first()
        open_one = await Errand.filter(resident_id=resident.id, item_id=item.id, state__in=OPEN_STATES).first()
        if open_one is not None:
            return open_one, False
        errand = await Errand.create(
            community_id=item.community_id, item_id=item.id, item_name=item.name, documents=list(item.documents),
            first_response_minutes=item.first_response_minutes, expected_days=item.expected_days,
            resident_id=resident.id, requested_by_id=requested_by_id, via=via, note=note,
            department_id=item.department_id, needs_proxy=bool(reason), proxy_reason=reason, created_at=now)
        level, offered = (await _first_level(errand)) if reason else (ProxyLevel.NONE, [])
        if reason:
            await Errand.filter(id=errand.id).update(proxy_level=level)
            errand.proxy_level = level
        created = await _event(errand, Kind.CREATED, requested_by_id, now, item=item.name, via=via,
                               key=key or "", proxy_reason=reason)
        offer_event = None
        if reason:
            offer_event = await _event(errand, Kind.OFFERED, None, now, level=level, to=offered)
            await _schedule_escalation(errand, level, now)
        await schedule_action(FIRST_RESPONSE, _target(errand), now + timedelta(minutes=errand.first_response_minutes),
                              now)
        if how == "family":
            await record_action(actor_id=requested_by_id, subject_id=resident.id, action="errand_create",
                                channel=via, now=now, detail={"errand_id": errand.id, "item": item.name})
    await _announce_created(errand, created, requested_by_id, now)
    if offer_event is not None:
        await _send_offer(errand, offer_event, level, offered, now)
    return errand, True


async def _by_key(requested_by_id: int, key: str) -> Errand | None:
    events = await ErrandEvent.filter(kind=Kind.CREATED, actor_id=requested_by_id).order_by("-id").limit(200)
    for event in events:
        if event.data.get("key") == key:
            return await Errand.get_or_none(id=event.errand_id)
    return None


# ---------------------------------------------------------------------------- events, pushes, words


def _target(errand: Errand) -> str:
    return f"errand:{errand.id}"


def _subject(errand: Errand, what: str) -> str:
    return f"errand:{errand.id}:{what}"


async def _event(errand: Errand, kind: str, actor_id: int | None, now: datetime, **data: Any) -> ErrandEvent:
    return await ErrandEvent.create(errand_id=errand.id, kind=kind, actor_id=actor_id, data=data, at=now)


async def _save(errand: Errand, **changes: Any) -> None:
    """Write ``changes`` if the errand still is at the version it was read at (and bump it); _Stale if not."""
    moved = await Errand.filter(id=errand.id, version=errand.version).update(version=F("version") + 1, **changes)
    if not moved:
        raise _Stale()
    errand.version += 1
    for name, value in changes.items():
        setattr(errand, name, value)


async def _tell(resident_ids: list[int], text: str, key: str, now: datetime) -> int:
    return await push_text(resident_ids, PREFIX + text, key, now)


def _when(at: datetime) -> str:
    local = at.astimezone(cases.CONTEXT.tz)
    return f"{local.month}月{local.day}日{local.hour}:{local.minute:02d}"


async def _person(resident_id: int | None) -> Resident | None:
    if resident_id is None:
        return None
    return await Resident.get_or_none(id=resident_id).prefetch_related("building")


async def _elder(errand: Errand) -> Resident:
    return await Resident.get(id=errand.resident_id).prefetch_related("building")


def _masked(resident: Resident) -> str:
    """5号楼 刘** : how pushes to stewards, proxies on offer and digests name a resident."""
    building = resident.building.name if resident.building else ""
    return f"{building} {mask_name(resident.name)}".strip()


def _address(resident: Resident) -> str:
    return resident.address() or (resident.building.name if resident.building else "")


async def _voices(errand: Errand) -> list[int]:
    """Who hears of the errand for the resident: the resident, whoever asked for them, and, for a
    resident who cannot read chat, their family proxies."""
    ids = [errand.resident_id]
    if errand.requested_by_id is not None and errand.requested_by_id not in ids:
        ids.append(errand.requested_by_id)
    if not await WechatAccount.filter(resident_id=errand.resident_id, channel__in=CHAT_CHANNELS).exists():
        family = await ProxyLink.filter(elder_id=errand.resident_id, status=ProxyStatus.ACTIVE).order_by(
            "id").values_list("proxy_id", flat=True)
        ids += [int(cast(int, p)) for p in family if p not in ids]
    return ids


async def _you(errand: Errand, resident_id: int) -> str:
    """您 to the resident, 刘桂芳 to anyone speaking for her."""
    if resident_id == errand.resident_id:
        return "您"
    return (await Resident.get(id=errand.resident_id)).name


def _item(errand: Errand) -> str:
    return f"“{errand.item_name}”"


async def _tell_voices(errand: Errand, event: ErrandEvent, text: Callable[[str], str], now: datetime,
                       skip: int | None = None) -> int:
    """Push ``text(you)`` (you: 您, or the resident's name to whoever speaks for her) to each voice but ``skip``."""
    told = 0
    for resident_id in await _voices(errand):
        if resident_id == skip:
            continue
        told += await _tell([resident_id], text(await _you(errand, resident_id)),
                            f"errand:{errand.id}:ev:{event.id}:{resident_id}", now)
    return told


async def _tell_one(errand: Errand, event: ErrandEvent, resident_id: int | None, text: str, now: datetime,
                    skip: int | None = None) -> None:
    if resident_id is not None and resident_id != skip:
        await _tell([resident_id], text, f"errand:{errand.id}:ev:{event.id}:{resident_id}", now)


async def _tell_many(errand: Errand, event: ErrandEvent, resident_ids: list[int], text: str, now: datetime,
                     skip: int | None = None) -> None:
    for resident_id in resident_ids:
        await _tell_one(errand, event, resident_id, text, now, skip)


async def _department_name(errand: Errand) -> str:
    if errand.department_id is None:
        return "承办部门"
    return (await Department.get(id=errand.department_id)).name


async def _stewards_to_tell(errand: Errand) -> list[int]:
    """The assigned steward, else every cloud steward of the community (else its community staff)."""
    if errand.steward_id is not None:
        return [errand.steward_id]
    return (await _holders((Role.STEWARD,), community_id=errand.community_id)
            or await _holders((Role.COMMUNITY_STAFF,), community_id=errand.community_id))


async def _withdraw(errand: Errand, now: datetime, what: str = "") -> int:
    """Withdraw the errand's open prompts (those of one kind, or all)."""
    prefix = _subject(errand, what) if what else f"errand:{errand.id}:"
    return await PendingPrompt.filter(subject__startswith=prefix, closed_at=None).update(
        closed_at=now, closed_reason="withdrawn")


def _prompt_days() -> int:
    return cases.CONTEXT.prompt_days


async def _chat_accounts(resident_ids: list[int]) -> list[WechatAccount]:
    return list(await WechatAccount.filter(resident_id__in=resident_ids, channel__in=CHAT_CHANNELS).order_by("id"))


# ---------------------------------------------------------------------------- checklist


@dataclass(frozen=True)
class DocStatus:
    document: str
    photo: ErrandPhoto | None
    state: str  # "missing" or a PhotoState
    reason: str  # why a re-shoot, or why the photo was lost


MISSING = "missing"


def checklist(errand: Errand, photos: list[ErrandPhoto]) -> list[DocStatus]:
    """Each required document with its live photo and where it stands, in the order to photograph."""
    latest: dict[str, ErrandPhoto] = {}
    for photo in sorted(photos, key=lambda p: p.id):
        if photo.state != PhotoState.REPLACED:
            latest[photo.document] = photo
    out = []
    for document in errand.documents:
        live = latest.get(document)
        out.append(DocStatus(document, live, live.state if live else MISSING, live.reason if live else ""))
    return out


def missing_documents(errand: Errand, photos: list[ErrandPhoto]) -> list[str]:
    """Documents the resident still has to photograph: none yet, lost, or asked again."""
    return [d.document for d in checklist(errand, photos)
            if d.state in (MISSING, PhotoState.LOST, PhotoState.RESHOOT)]


def _photo_state(errand: Errand, photos: list[ErrandPhoto]) -> str:
    """Where the photos put an errand that is still with the steward."""
    states = [d.state for d in checklist(errand, photos)]
    if PhotoState.RESHOOT in states:
        return ErrandState.RESHOOT
    if any(s in (MISSING, PhotoState.LOST) for s in states):
        return ErrandState.COLLECTING
    if all(s == PhotoState.ACCEPTED for s in states):
        return ErrandState.READY
    return ErrandState.REVIEW


async def photos_of(errand_id: int) -> list[ErrandPhoto]:
    """The live photos (not replaced), in the order of the errand's documents."""
    errand = await Errand.get_or_none(id=errand_id)
    photos = list(await ErrandPhoto.filter(errand_id=errand_id).exclude(state=PhotoState.REPLACED).order_by("id"))
    order = {d: i for i, d in enumerate(errand.documents)} if errand else {}
    return sorted(photos, key=lambda p: (order.get(p.document, len(order)), p.id))


async def next_step(errand: Errand, you: str = "您") -> str:
    """What happens next, for the resident (or whoever speaks for them), in plain Chinese."""
    state = errand.state
    if state == ErrandState.COLLECTING:
        missing = missing_documents(errand, await photos_of(errand.id))
        return f"还缺：{'、'.join(missing)}。请回复“我的代办”继续拍照。" if missing else "请稍候，照片正在保存。"
    if state == ErrandState.REVIEW:
        return "材料正在预审，结果会通知您。"
    if state == ErrandState.RESHOOT:
        return "有材料需要重拍，请回复“我的代办”查看原因并重拍。"
    if state == ErrandState.READY:
        return f"材料已预审通过，云管家会尽快转交{await _department_name(errand)}办理。"
    if state == ErrandState.TRANSFERRED:
        label = PROGRESS_LABELS.get(errand.progress, "待受理")
        return f"{await _department_name(errand)}办理中（{label}），有进展会通知您。"
    if state == ErrandState.RESULT:
        if errand.proxy_id is not None:
            proxy = await _person(errand.proxy_id)
            return f"已有结果，红色代办员{proxy.name if proxy else ''}会送到家，请留意。"
        return "已有结果，云管家会告诉您。"
    if state == ErrandState.DELIVERED:
        return "结果已送达，请回复“我的代办”确认并评价。"
    return f"已{STATE_LABELS.get(state, state).removeprefix('已')}。"


# ---------------------------------------------------------------------------- announcements


async def _announce_created(errand: Errand, event: ErrandEvent, actor_id: int, now: datetime) -> None:
    elder = await _elder(errand)
    docs = "、".join(errand.documents)

    def to_voice(you: str) -> str:
        whose = "您的" if you == "您" else f"{you}的"
        text = (f"{whose}{_item(errand)}申请已提交（编号{errand.id}）。请按顺序拍照上传：{docs}。"
                "回复“我的代办”继续拍照。")
        if errand.needs_proxy:
            text += f"因为{you}{SPECIAL_LABELS.get(errand.proxy_reason, '')}，社区会安排红色代办员上门帮忙办理。"
        return text

    await _tell_voices(errand, event, to_voice, now, skip=actor_id)
    await _tell_many(errand, event, await _stewards_to_tell(errand),
                     f"新的代办申请：{_masked(elder)}的{_item(errand)}（编号{errand.id}），"
                     f"请在{errand.first_response_minutes}分钟内接单：回复“代办队列”。", now, skip=actor_id)


def offer_question(errand: Errand, elder: Resident) -> Question:
    why = SPECIAL_LABELS.get(errand.proxy_reason, "")
    return choice(f"{PREFIX}{_masked(elder)}（{why}）需要红色代办员上门办理{_item(errand)}"
                  f"（材料：{'、'.join(errand.documents)}）。您能接单吗？", [(ACCEPT, "接单"), (DECLINE, "不接")])


async def _send_offer(errand: Errand, event: ErrandEvent, level: str, proxy_ids: list[int], now: datetime) -> None:
    """The offer's question to these proxies (each chat account once), or, at the staff level, the ask to assign."""
    elder = await _elder(errand)
    question = offer_question(errand, elder)
    for acct in await _chat_accounts(proxy_ids):
        await push_prompt(openid=acct.openid, flow=OFFER_FLOW, step=OFFER_STEP, question=question,
                          data={"errand_id": errand.id}, now=now, days=_prompt_days(),
                          subject=_subject(errand, "offer"))
    if level == ProxyLevel.STAFF:
        staff = await _holders(STEWARD_ROLES, community_id=errand.community_id)
        await _tell_many(errand, event, staff,
                         f"{_masked(elder)}的{_item(errand)}需要红色代办员上门，暂时没有代办员接单。"
                         "请指派一位：回复“代办队列”，选这件代办，点“指派代办员”。", now)


async def _schedule_escalation(errand: Errand, level: str, now: datetime) -> None:
    if level in (ProxyLevel.GRID, ProxyLevel.COMMUNITY):
        minutes = (await settings_of(errand.community_id)).offer_minutes
        await schedule_action(OFFER_ESCALATE, f"{_target(errand)}:{level}", now + timedelta(minutes=minutes), now)


async def _cancel_escalations(errand: Errand) -> None:
    for level in (ProxyLevel.GRID, ProxyLevel.COMMUNITY):
        await cancel_actions(OFFER_ESCALATE, f"{_target(errand)}:{level}")


async def _cancel_first_response(errand: Errand) -> None:
    await cancel_actions(FIRST_RESPONSE, _target(errand))
    await cancel_actions(FIRST_RESPONSE_STAFF, _target(errand))


async def _announce_state(errand: Errand, event: ErrandEvent, old: str, actor_id: int | None,
                          now: datetime) -> None:
    """Tell who needs to know that the photos moved the errand on."""
    new = errand.state
    if new == ErrandState.REVIEW:
        await _tell_voices(errand, event, lambda you: f"{_item(errand)}的材料已全部上传，云管家正在预审，"
                                                      "结果会通知您。", now, skip=actor_id)
        elder = await _elder(errand)
        await _tell_many(errand, event, await _stewards_to_tell(errand),
                         f"{_masked(elder)}的{_item(errand)}材料已上传齐，请预审：回复“代办队列”。", now, skip=actor_id)
    elif new == ErrandState.READY:
        department = await _department_name(errand)
        await _tell_voices(errand, event, lambda you: f"{_item(errand)}的材料已全部预审通过，云管家会尽快转交"
                                                      f"{department}办理，进度会通知您。", now, skip=actor_id)
    elif new == ErrandState.COLLECTING and old in (ErrandState.REVIEW, ErrandState.READY, ErrandState.RESHOOT):
        photos = await photos_of(errand.id)
        lost = [d for d in checklist(errand, photos) if d.state == PhotoState.LOST]
        why = f"{lost[0].document}的照片没能保存：{lost[0].reason}" if lost else ""
        missing = "、".join(missing_documents(errand, photos))
        await _tell_voices(errand, event, lambda you: f"{why}{_item(errand)}还缺：{missing}。"
                                                      "请回复“我的代办”继续拍照。", now, skip=actor_id)


# ---------------------------------------------------------------------------- photos


async def _may_upload(actor_id: int, errand: Errand) -> bool:
    return actor_id == errand.proxy_id or await speaks_for(actor_id, errand)


async def add_photo(errand_id: int, document: str, *, by_id: int, now: datetime, media_id: str = "",
                    pic_url: str = "") -> ErrandPhoto:
    """A photo of one required document (a WeChat media id or an image URL): the earlier photo of that
    document is replaced, the new one fetched into the document store, the errand's state recomputed.
    The same photo sent again (a retry) is the same row."""
    media_id, pic_url = media_id.strip(), pic_url.strip()
    if not media_id and not pic_url:
        raise UserFacingError("请发送一张照片。")
    if len(media_id) > 128 or len(pic_url) > 500:
        raise UserFacingError("这张照片的地址太长，请重新拍一张发来。")

    async def once() -> tuple[ErrandPhoto, bool]:
        errand = await _read(errand_id)
        if not await _may_upload(by_id, errand):
            raise Forbidden("只有居民本人、家人或接单的红色代办员可以上传材料。")
        live = await ErrandPhoto.filter(errand_id=errand.id, document=document).exclude(
            state=PhotoState.REPLACED).order_by("-id")
        if live and (live[0].media_id, live[0].pic_url) == (media_id, pic_url):
            return live[0], False  # the same photo again: WeChat's retry, a double tap
        if errand.state not in PHOTO_STATES:
            raise UserFacingError(f"这件代办{STATE_LABELS.get(errand.state, errand.state)}，现在不需要上传材料。")
        if document not in errand.documents:
            raise UserFacingError(f"这件代办不需要“{document}”，需要的是：{'、'.join(errand.documents)}。")
        async with in_transaction():
            await _save(errand)  # one photo of one errand at a time: a concurrent one reads again
            replaced = [p.id for p in live]
            if replaced:
                await ErrandPhoto.filter(id__in=replaced).update(state=PhotoState.REPLACED)
            photo = await ErrandPhoto.create(errand_id=errand.id, document=document, media_id=media_id,
                                             pic_url=pic_url, sent_by_id=by_id, created_at=now)
            await _event(errand, Kind.PHOTO, by_id, now, document=document, photo_id=photo.id, replaces=replaced)
            for photo_id in replaced:
                await _withdraw(errand, now, f"reshoot:{photo_id}")
        return photo, True

    photo, new = await _attempt(once)
    if new:
        try:
            await errand_docs.keep_photo(photo, now)
        except Exception as exc:  # WeChat busy, a timeout: the due sweep tries again
            log.warning("errand photo %s not kept yet (%s): retried by the due sweep", photo.id, exc)
            await schedule_action(KEEP_PHOTO, f"photo:{photo.id}", now + KEEP_RETRY, now)
        await photo.refresh_from_db()
        await _recompute(photo.errand_id, now, by_id)
    return photo


@register_action(KEEP_PHOTO)
async def _keep_photo_due(target: str, now: datetime) -> None:
    """Fetch a photo WeChat did not give us at once; given up on (lost, the resident told) after
    KEEP_GIVE_UP, before the due sweep itself would give up."""
    photo = await ErrandPhoto.get_or_none(id=int(target.split(":")[1]))
    if photo is None or photo.state != PhotoState.SAVING:
        return
    try:
        await errand_docs.keep_photo(photo, now)
    except Exception:
        if now - photo.created_at < KEEP_GIVE_UP:
            raise
        log.exception("errand photo %s could not be fetched: given up", photo.id)
        await ErrandPhoto.filter(id=photo.id, state=PhotoState.SAVING).update(
            state=PhotoState.LOST, reason="微信上的图片暂时取不到，请重新拍一张发来。")
    await photo.refresh_from_db()
    moved = await _recompute(photo.errand_id, now, None)
    if photo.state == PhotoState.LOST:
        errand = await Errand.get(id=photo.errand_id)
        event = await _event(errand, Kind.PHOTO_LOST, None, now, document=photo.document, photo_id=photo.id,
                             reason=photo.reason)
        if not moved and errand.state in PHOTO_STATES:  # a move says so itself
            await _tell_voices(errand, event, lambda you: f"{_item(errand)}的“{photo.document}”照片没能保存："
                                                          f"{photo.reason}回复“我的代办”继续拍照。", now)


async def _recompute(errand_id: int, now: datetime, actor_id: int | None) -> bool:
    """Move an errand still with the steward to where its photos put it, and tell who needs to know;
    whether it moved."""

    async def once() -> bool:
        errand = await _read(errand_id)
        if errand.state not in BEFORE_TRANSFER:
            return False
        new = _photo_state(errand, await photos_of(errand.id))
        if new == errand.state:
            return False
        old = errand.state
        async with in_transaction():
            changes: dict[str, Any] = {"state": new}
            if new == ErrandState.READY:
                changes["complete_at"] = now
            await _save(errand, **changes)
            event = await _event(errand, Kind.STATE, actor_id, now, state=new, was=old)
        await _announce_state(errand, event, old, actor_id, now)
        return True

    return await _attempt(once)


# ---------------------------------------------------------------------------- the steward


async def _steward_may_act(steward_id: int, errand: Errand) -> None:
    """A steward of the community, and the errand unassigned or theirs (or its steward no longer one)."""
    if not await is_steward(steward_id, errand.community_id):
        raise NotFound(NOT_FOUND)
    if errand.steward_id not in (None, steward_id) and await is_steward(
            cast(int, errand.steward_id), errand.community_id):
        other = await _person(errand.steward_id)
        raise UserFacingError(f"这件代办由{other.name if other else '其他云管家'}负责。")


def _taking(errand: Errand, steward_id: int, now: datetime) -> dict[str, Any]:
    """The changes that make ``steward_id`` the errand's steward (the first response, if it is one)."""
    if errand.steward_id == steward_id:
        return {}
    return {"steward_id": steward_id, "first_response_at": errand.first_response_at or now}


async def take(errand_id: int, steward_id: int, now: datetime) -> Errand:
    """A steward takes the errand: the first response; the watch stops and the resident is told."""

    async def once() -> Errand:
        errand = await _read(errand_id)
        await _steward_may_act(steward_id, errand)
        if errand.steward_id == steward_id:
            return errand
        if errand.state not in OPEN_STATES:
            raise UserFacingError(f"这件代办{STATE_LABELS.get(errand.state, errand.state)}。")
        async with in_transaction():
            await _save(errand, **_taking(errand, steward_id, now))
            event = await _event(errand, Kind.TAKEN, steward_id, now)
            await _cancel_first_response(errand)
        steward = await Resident.get(id=steward_id)
        step = await next_step(errand)
        await _tell_voices(errand, event, lambda you: f"云管家{steward.name}已接手{_item(errand)}。{step}", now,
                           skip=steward_id)
        return errand

    return await _attempt(once)


async def review_photo(photo_id: int, steward_id: int, *, accept: bool, reason: str = "",
                       now: datetime) -> ErrandPhoto:
    """The steward accepts a stored photo, or asks for it again with a reason the resident reads (a
    pending prompt asking for the new photo). Every photo accepted: the errand is ready to transfer."""
    reason = " ".join(reason.split())
    if not accept and not REASON_MIN <= len(reason) <= REASON_MAX:
        raise UserFacingError(f"请写明重拍的原因（{REASON_MIN}到{REASON_MAX}个字），居民会看到。")
    target = PhotoState.ACCEPTED if accept else PhotoState.RESHOOT

    async def once() -> tuple[ErrandPhoto, Errand, ErrandEvent | None, str]:
        photo = await ErrandPhoto.get_or_none(id=photo_id)
        if photo is None:
            raise NotFound("没有找到这张照片。")
        errand = await _read(photo.errand_id)
        await _steward_may_act(steward_id, errand)
        if photo.state == target and (accept or photo.reason == reason):
            return photo, errand, None, errand.state  # a retry
        if photo.state == PhotoState.SAVING:
            raise UserFacingError("这张照片还在保存，请稍后再预审。")
        if photo.state not in (PhotoState.PENDING, PhotoState.ACCEPTED, PhotoState.RESHOOT):
            raise UserFacingError("这张照片已作废，请看最新的一张。")
        if errand.state not in BEFORE_TRANSFER:
            raise UserFacingError(f"这件代办{STATE_LABELS.get(errand.state, errand.state)}，不能再预审材料。")
        old = errand.state
        async with in_transaction():
            changes: dict[str, Any] = _taking(errand, steward_id, now)
            updated = await ErrandPhoto.filter(id=photo.id, state=photo.state).update(
                state=target, reason="" if accept else reason, reviewed_by_id=steward_id, reviewed_at=now)
            if not updated:
                raise _Stale()
            photo.state, photo.reason = target, "" if accept else reason
            new = _photo_state(errand, await photos_of(errand.id))
            if new != old:
                changes["state"] = new
                if new == ErrandState.READY:
                    changes["complete_at"] = now
            await _save(errand, **changes)
            event = await _event(errand, Kind.REVIEWED, steward_id, now, photo_id=photo.id, document=photo.document,
                                 accept=accept, reason=photo.reason, state=errand.state)
            await _withdraw(errand, now, f"reshoot:{photo.id}")  # an earlier question about this photo
            if "steward_id" in changes:
                await _cancel_first_response(errand)
        return photo, errand, event, old

    photo, errand, event, old = await _attempt(once)
    if event is None:
        return photo
    if not accept:
        await _ask_reshoot(errand, photo, event, now)
    elif errand.state != old:
        await _announce_state(errand, event, old, steward_id, now)
    await photo.refresh_from_db()
    return photo


def reshoot_question(errand: Errand, photo: ErrandPhoto, you: str) -> Question:
    whose = "您的" if you == "您" else f"{you}的"
    return Question(f"{PREFIX}{whose}{_item(errand)}材料“{photo.document}”需要重拍：{photo.reason}。"
                    "请直接发一张新的照片。", "photo")


async def _ask_reshoot(errand: Errand, photo: ErrandPhoto, event: ErrandEvent, now: datetime) -> None:
    """A pending prompt asking for the photo again, to each voice on chat; the proxy told too (or
    instead, when no voice is on chat)."""
    asked = 0
    for resident_id in await _voices(errand):
        question = reshoot_question(errand, photo, await _you(errand, resident_id))
        for acct in await _chat_accounts([resident_id]):
            await push_prompt(openid=acct.openid, flow=ERRAND_FLOW, step=RESHOOT_STEP, question=question,
                              data={"errand_id": errand.id, "document": photo.document, "photo_id": photo.id},
                              now=now, days=_prompt_days(), subject=_subject(errand, f"reshoot:{photo.id}"))
            asked += 1
    if errand.proxy_id is not None:
        elder = await _elder(errand)
        extra = "" if asked else "居民没有微信，"
        await _tell_one(errand, event, errand.proxy_id,
                        f"{extra}{elder.name}的{_item(errand)}材料“{photo.document}”需要重拍：{photo.reason}。"
                        "请上门时帮忙重拍：回复“代办任务”，点“拍材料”。", now)


async def transfer(errand_id: int, steward_id: int, now: datetime, department_id: int | None = None) -> Errand:
    """READY → TRANSFERRED to the department in charge (the item's by default); its staff are told."""

    async def once() -> Errand:
        errand = await _read(errand_id)
        await _steward_may_act(steward_id, errand)
        wanted = department_id or errand.department_id
        if errand.state == ErrandState.TRANSFERRED and errand.department_id == wanted:
            return errand  # a retry
        if errand.state != ErrandState.READY:
            raise UserFacingError(f"这件代办{STATE_LABELS.get(errand.state, errand.state)}，"
                                  "材料全部预审通过后才能转办。")
        if wanted is None:
            raise UserFacingError("请选择承办部门。")
        if not await Department.filter(id=wanted, sub_district_id=await _sub_district_of(errand.community_id)).exists():
            raise UserFacingError("没有找到这个承办部门。")
        async with in_transaction():
            await _save(errand, state=ErrandState.TRANSFERRED, department_id=wanted, transferred_at=now, progress="",
                        progress_note="", **_taking(errand, steward_id, now))
            event = await _event(errand, Kind.TRANSFERRED, steward_id, now, department_id=wanted)
            await _cancel_first_response(errand)
        department = await _department_name(errand)
        elder = await _elder(errand)
        community = await Community.get(id=errand.community_id)
        await _tell_voices(errand, event, lambda you: f"{_item(errand)}的材料已预审通过，已转交{department}办理，"
                                                      f"一般需要{errand.expected_days}天。办理进度会通知您。", now)
        await _tell_many(errand, event, await _holders((Role.DEPARTMENT,), scope_kind=Scope.DEPARTMENT,
                                                       scope_id=wanted),
                         f"新的转办件：{community.name}{_masked(elder)}的{_item(errand)}（编号{errand.id}），"
                         "请回复“部门办件”受理并记录进度。", now)
        await _tell_one(errand, event, errand.proxy_id,
                        f"{elder.name}的{_item(errand)}已转交{department}办理，有结果会通知您。", now)
        return errand

    return await _attempt(once)


async def set_progress(errand_id: int, by_id: int, progress: str, now: datetime, note: str = "",
                       more_documents: list[str] | None = None) -> Errand:
    """The department's word, recorded by the assigned steward or the department's staff. More needed
    with documents adds them to the checklist (those already on it are asked again) and sends the
    errand back to collecting; approved or rejected is the result, which goes to the resident next."""
    if progress not in PROGRESS_LABELS:
        raise UserFacingError("请选择办理进度：已受理、办理中、需补充材料、已办结（通过）或未通过。")
    note = " ".join(note.split())
    if len(note) > NOTE_MAX:
        raise UserFacingError(f"说明最多{NOTE_MAX}个字，请精简。")
    if progress in (Progress.REJECTED, Progress.MORE_NEEDED) and len(note) < REASON_MIN:
        raise UserFacingError("未通过或需补充材料时，请写明原因，居民会看到。")
    more = [" ".join(str(d).split()) for d in more_documents or []]
    if progress != Progress.MORE_NEEDED and more:
        raise UserFacingError("只有“需补充材料”时才能添加材料。")
    if any(not 1 <= len(d) <= DOCUMENT_MAX for d in more):
        raise UserFacingError(f"每项材料名称请写1到{DOCUMENT_MAX}个字。")
    more = list(dict.fromkeys(more))

    async def once() -> tuple[Errand, ErrandEvent | None, list[str]]:
        errand = await _read(errand_id)
        is_steward_ = errand.steward_id == by_id and await is_steward(by_id, errand.community_id)
        if not is_steward_ and not await is_department_staff(by_id, errand.department_id):
            raise NotFound(NOT_FOUND)
        if (errand.progress, errand.progress_note) == (progress, note) and (
                errand.state == ErrandState.TRANSFERRED
                or (progress in RESULTS and errand.state != ErrandState.CANCELLED)
                or (progress == Progress.MORE_NEEDED and errand.state in BEFORE_TRANSFER)):
            return errand, None, []  # a retry
        if errand.state != ErrandState.TRANSFERRED:
            raise UserFacingError(f"这件代办{STATE_LABELS.get(errand.state, errand.state)}，现在不能记录办理进度。")
        if len(errand.documents) + len([d for d in more if d not in errand.documents]) > 2 * DOCUMENTS_MAX:
            raise UserFacingError("材料太多了，请精简。")
        changes: dict[str, Any] = {"progress": progress, "progress_note": note}
        again: list[str] = []
        async with in_transaction():
            if progress in RESULTS:
                changes.update(state=ErrandState.RESULT, result_at=now)
            elif progress == Progress.MORE_NEEDED and more:
                added = [d for d in more if d not in errand.documents]
                again = [d for d in more if d in errand.documents]
                if again:
                    await ErrandPhoto.filter(errand_id=errand.id, document__in=again).exclude(
                        state=PhotoState.REPLACED).update(state=PhotoState.RESHOOT, reason=note[:REASON_MAX])
                documents = list(errand.documents) + added
                errand.documents = documents
                changes.update(documents=documents,
                               state=_photo_state(errand, await photos_of(errand.id)), complete_at=None)
            await _save(errand, **changes)
            event = await _event(errand, Kind.PROGRESS, by_id, now, progress=progress, note=note, more=more,
                                 state=errand.state)
        return errand, event, more

    errand, event, more = await _attempt(once)
    if event is not None:
        await _announce_progress(errand, event, by_id, now, more)
    return errand


async def _announce_progress(errand: Errand, event: ErrandEvent, by_id: int, now: datetime,
                             more: list[str]) -> None:
    department = await _department_name(errand)
    progress, note = errand.progress, errand.progress_note
    elder = await _elder(errand)
    proxy = await _person(errand.proxy_id)
    deliver = (f"红色代办员{proxy.name}会把结果送到家，请留意。" if proxy else "云管家会告诉您结果。")
    said = f"：{note}" if note else ""

    def to_voice(you: str) -> str:
        if progress == Progress.RECEIVED:
            return f"{department}已受理{_item(errand)}，正在办理，有进展会通知您。"
        if progress == Progress.PROCESSING:
            return f"{department}正在办理{_item(errand)}{said}。有结果会通知您。"
        if progress == Progress.MORE_NEEDED:
            if more:
                return (f"{department}说{_item(errand)}需要补充材料{said}。请拍照上传：{'、'.join(more)}。"
                        "回复“我的代办”继续拍照。")
            return f"{department}说{_item(errand)}需要补充情况{said}。云管家会与您联系。"
        if progress == Progress.APPROVED:
            return f"好消息：{_item(errand)}已办结（通过）{said}。{deliver}"
        return f"{_item(errand)}未通过{said}。{deliver}如有疑问请联系社区。"

    await _tell_voices(errand, event, to_voice, now, skip=by_id)
    label = PROGRESS_LABELS.get(progress, progress)
    if errand.steward_id is not None and errand.steward_id != by_id:
        text = f"{department}：{_masked(elder)}的{_item(errand)}{label}{said}。"
        if progress in RESULTS and proxy is None:
            text += "请告知居民结果后，在“代办队列”里点“已告知结果”。"
        elif progress == Progress.MORE_NEEDED and more:
            text += "居民补拍后请再预审、转办。"
        await _tell_one(errand, event, errand.steward_id, text, now)
    if proxy is not None and progress in RESULTS:
        out = await CustodyEntry.filter(errand_id=errand.id, returned_at=None).values_list("document", flat=True)
        extra = f"别忘了归还原件：{'、'.join(str(d) for d in out)}。" if out else ""
        await _tell_one(errand, event, proxy.id,
                        f"{elder.name}的{_item(errand)}{label}{said}。请把结果送到{_address(elder)}，{extra}"
                        "送达后回复“代办任务”点“已送达”。", now)
    elif proxy is not None and progress == Progress.MORE_NEEDED and more:
        await _tell_one(errand, event, proxy.id,
                        f"{elder.name}的{_item(errand)}需要补充材料：{'、'.join(more)}{said}。"
                        "如需上门帮忙拍照，请回复“代办任务”点“拍材料”。", now)


# ---------------------------------------------------------------------------- the red proxy


async def require_proxy(errand_id: int, by_id: int, now: datetime) -> Errand:
    """A steward (or community staff) marks that a red proxy is needed: the offer starts."""

    async def once() -> Errand:
        errand = await _read(errand_id)
        if not await is_steward(by_id, errand.community_id):
            raise NotFound(NOT_FOUND)
        if errand.needs_proxy and errand.proxy_level != ProxyLevel.NONE:
            return errand  # offered or taken already
        if errand.state not in OPEN_STATES or errand.state == ErrandState.DELIVERED:
            raise UserFacingError(f"这件代办{STATE_LABELS.get(errand.state, errand.state)}，不需要再派代办员。")
        level, offered = await _first_level(errand)
        async with in_transaction():
            await _save(errand, needs_proxy=True, proxy_reason=errand.proxy_reason or "staff", proxy_level=level)
            await _event(errand, Kind.PROXY_REQUIRED, by_id, now)
            event = await _event(errand, Kind.OFFERED, None, now, level=level, to=offered)
            await _schedule_escalation(errand, level, now)
        await _send_offer(errand, event, level, offered, now)
        return errand

    return await _attempt(once)


async def _offered(errand_id: int) -> set[int]:
    """Every proxy the errand was offered to so far."""
    ids: set[int] = set()
    for data in await ErrandEvent.filter(errand_id=errand_id, kind__in=[Kind.OFFERED, Kind.OFFER_ESCALATED]
                                         ).values_list("data", flat=True):
        ids.update(int(i) for i in cast(dict, data).get("to", []))
    return ids


@register_action(OFFER_ESCALATE)
async def _escalate_due(target: str, now: datetime) -> None:
    _, errand_id, level = target.split(":")
    await _escalate(int(errand_id), level, now)


async def _escalate(errand_id: int, level: str, now: datetime) -> None:
    """Nobody of ``level`` took the offer: open it to the community's red proxies, then ask staff."""

    async def once() -> None:
        errand = await Errand.get_or_none(id=errand_id)
        if (errand is None or errand.proxy_id is not None or errand.proxy_level != level
                or errand.state not in OPEN_STATES or not errand.needs_proxy):
            return
        nxt, ids = ProxyLevel.STAFF, []
        if level == ProxyLevel.GRID:
            offered = await _offered(errand.id)
            ids = [i for i in await red_proxies(errand, ProxyLevel.COMMUNITY) if i not in offered]
            if ids:
                nxt = ProxyLevel.COMMUNITY
        async with in_transaction():
            await _save(errand, proxy_level=nxt)
            event = await _event(errand, Kind.OFFER_ESCALATED, None, now, level=nxt, to=ids)
            await _schedule_escalation(errand, nxt, now)
        await _send_offer(errand, event, nxt, ids, now)

    await _attempt(once)


async def decline_offer(errand_id: int, proxy_id: int, now: datetime) -> Errand:
    """A proxy says no to the offer (recorded); when everyone asked so far said no, it widens at once."""
    errand = await _read(errand_id)
    offered = await _offered(errand.id)
    if proxy_id not in offered:
        raise NotFound(NOT_FOUND)
    if errand.proxy_id is not None or errand.state not in OPEN_STATES:
        return errand
    if not await ErrandEvent.filter(errand_id=errand.id, kind=Kind.OFFER_DECLINED, actor_id=proxy_id).exists():
        await _event(errand, Kind.OFFER_DECLINED, proxy_id, now)
    declined = set(int(cast(int, i)) for i in await ErrandEvent.filter(
        errand_id=errand.id, kind=Kind.OFFER_DECLINED).values_list("actor_id", flat=True) if i is not None)
    if offered <= declined and errand.proxy_level in (ProxyLevel.GRID, ProxyLevel.COMMUNITY):
        await _escalate(errand.id, errand.proxy_level, now)
    return await _read(errand_id)


async def accept_offer(errand_id: int, proxy_id: int, now: datetime) -> Errand:
    """A red proxy the offer is open to takes it; the first wins, the others' questions are withdrawn."""

    async def once() -> tuple[Errand, ErrandEvent | None]:
        errand = await _read(errand_id)
        if errand.proxy_id == proxy_id:
            return errand, None  # a retry
        if not await _is_red_proxy(proxy_id, errand.community_id):
            raise NotFound(NOT_FOUND)
        if errand.proxy_id is not None:
            raise UserFacingError("这件代办已由其他代办员接单，谢谢您！")
        if errand.state not in OPEN_STATES or errand.state == ErrandState.DELIVERED:
            raise UserFacingError(f"这件代办{STATE_LABELS.get(errand.state, errand.state)}，不需要代办员了。")
        if not errand.needs_proxy or errand.proxy_level == ProxyLevel.NONE:
            raise UserFacingError("这件代办不需要代办员上门。")
        if not await offered_to(proxy_id, errand):
            minutes = (await settings_of(errand.community_id)).offer_minutes
            raise UserFacingError(f"这件代办先由本网格的代办员接单，{minutes}分钟内无人接单会开放给全社区。")
        async with in_transaction():
            await _save(errand, proxy_id=proxy_id, proxy_level=ProxyLevel.TAKEN)
            event = await _event(errand, Kind.PROXY_ACCEPTED, proxy_id, now)
            await _cancel_escalations(errand)
            await _withdraw(errand, now, "offer")
        return errand, event

    errand, event = await _attempt(once)
    if event is not None:
        await _announce_proxy(errand, event, proxy_id, now)
    return errand


async def _announce_proxy(errand: Errand, event: ErrandEvent, actor_id: int, now: datetime) -> None:
    proxy = await Resident.get(id=cast(int, errand.proxy_id))
    phone = f"（电话{proxy.mobile}）" if proxy.mobile else ""
    await _tell_voices(errand, event, lambda you: f"红色代办员{proxy.name}{phone}接下了{_item(errand)}，"
                                                  "会与您联系上门办理。", now, skip=actor_id)
    elder = await _elder(errand)
    if errand.steward_id is not None:
        await _tell_one(errand, event, errand.steward_id,
                        f"红色代办员{proxy.name}接下了{_masked(elder)}的{_item(errand)}。", now, skip=actor_id)


async def assign_proxy(errand_id: int, proxy_id: int, by_id: int, now: datetime) -> Errand:
    """Community staff or a steward assign a red proxy of the community (or another one instead)."""

    async def once() -> tuple[Errand, ErrandEvent | None, int | None]:
        errand = await _read(errand_id)
        if not await is_steward(by_id, errand.community_id):
            raise NotFound(NOT_FOUND)
        if errand.proxy_id == proxy_id:
            return errand, None, None
        if not await _is_red_proxy(proxy_id, errand.community_id) or proxy_id == errand.resident_id:
            raise UserFacingError("请选择本社区的红色代办员。")
        if errand.state not in OPEN_STATES or errand.state == ErrandState.DELIVERED:
            raise UserFacingError(f"这件代办{STATE_LABELS.get(errand.state, errand.state)}，不能再指派代办员。")
        before = errand.proxy_id
        if before is not None:
            held = await CustodyEntry.filter(errand_id=errand.id, proxy_id=before, returned_at=None).exists()
            if held:
                raise UserFacingError("原来的代办员还拿着居民的原件，请先让其归还后再换人。")
        async with in_transaction():
            await _save(errand, proxy_id=proxy_id, proxy_level=ProxyLevel.TAKEN, needs_proxy=True,
                        proxy_reason=errand.proxy_reason or "staff")
            event = await _event(errand, Kind.PROXY_ASSIGNED, by_id, now, proxy_id=proxy_id, before=before)
            await _cancel_escalations(errand)
            await _withdraw(errand, now, "offer")
        return errand, event, before

    errand, event, before = await _attempt(once)
    if event is None:
        return errand
    elder = await _elder(errand)
    phone = f"，电话{elder.mobile}" if elder.mobile else ""
    await _tell_one(errand, event, proxy_id,
                    f"社区请您为{elder.name}（{_address(elder)}{phone}）上门办理{_item(errand)}，"
                    f"材料：{'、'.join(errand.documents)}。回复“代办任务”查看。", now)
    if before is not None:
        await _tell_one(errand, event, before, f"{elder.name}的{_item(errand)}已改由其他代办员办理，谢谢您！", now)
    await _announce_proxy(errand, event, by_id, now)
    return errand


# ---------------------------------------------------------------------------- custody


async def take_original(errand_id: int, proxy_id: int, document: str, now: datetime, note: str = "") -> CustodyEntry:
    """The proxy records an original taken from the home (the same one still out: that entry)."""
    document = " ".join(document.split())
    note = " ".join(note.split())
    if not 1 <= len(document) <= DOCUMENT_MAX:
        raise UserFacingError(f"请写明取走的原件（1到{DOCUMENT_MAX}个字），例如：户口本。")
    if len(note) > CUSTODY_NOTE_MAX:
        raise UserFacingError(f"备注最多{CUSTODY_NOTE_MAX}个字。")

    async def once() -> tuple[CustodyEntry, ErrandEvent | None, Errand]:
        errand = await _read(errand_id)
        if errand.proxy_id != proxy_id:
            raise NotFound(NOT_FOUND)
        out = await CustodyEntry.filter(errand_id=errand.id, proxy_id=proxy_id, document=document,
                                        returned_at=None).first()
        if out is not None:
            return out, None, errand
        if errand.state not in OPEN_STATES or errand.state == ErrandState.DELIVERED:
            raise UserFacingError(f"这件代办{STATE_LABELS.get(errand.state, errand.state)}，不能再取走原件。")
        async with in_transaction():
            await _save(errand)
            entry = await CustodyEntry.create(errand_id=errand.id, proxy_id=proxy_id, document=document, taken_at=now,
                                              note=note)
            event = await _event(errand, Kind.ORIGINAL_TAKEN, proxy_id, now, entry_id=entry.id, document=document,
                                 note=note)
        return entry, event, errand

    entry, event, errand = await _attempt(once)
    if event is not None:
        proxy = await Resident.get(id=proxy_id)
        await _tell_voices(errand, event, lambda you: f"红色代办员{proxy.name}于{_when(now)}取走了{you}的{document}"
                                                      "原件，办完会归还。", now, skip=proxy_id)
    return entry


async def return_original(entry_id: int, proxy_id: int, now: datetime) -> CustodyEntry:
    """The original went back to the home (twice: the first return stands)."""
    entry = await CustodyEntry.get_or_none(id=entry_id)
    if entry is None:
        raise NotFound("没有找到这条原件记录。")
    errand = await _read(entry.errand_id)
    if proxy_id not in (_id(entry, "proxy_id"), errand.proxy_id):
        raise NotFound("没有找到这条原件记录。")
    if entry.returned_at is not None:
        return entry
    async with in_transaction():
        if not await CustodyEntry.filter(id=entry.id, returned_at=None).update(returned_at=now):
            return await CustodyEntry.get(id=entry.id)
        event = await _event(errand, Kind.ORIGINAL_RETURNED, proxy_id, now, entry_id=entry.id,
                             document=entry.document)
        await Errand.filter(id=errand.id).update(version=F("version") + 1)
    proxy = await Resident.get(id=proxy_id)
    await _tell_voices(errand, event, lambda you: f"{entry.document}原件已由红色代办员{proxy.name}于{_when(now)}归还，"
                                                  "请查收。", now, skip=proxy_id)
    return await CustodyEntry.get(id=entry.id)


async def custody_of(errand_id: int) -> list[CustodyEntry]:
    return list(await CustodyEntry.filter(errand_id=errand_id).order_by("id"))


async def events_of(errand_id: int) -> list[ErrandEvent]:
    return list(await ErrandEvent.filter(errand_id=errand_id).order_by("id"))


# ---------------------------------------------------------------------------- delivery and confirmation


def rate_question(errand: Errand, you: str) -> Question:
    whose = "您的" if you == "您" else f"{you}的"
    result = PROGRESS_LABELS.get(errand.progress, "")
    return choice(f"{PREFIX}{whose}{_item(errand)}结果已送达（{result}）。请给这次服务打个分：",
                  [(1, "1分 很不满意"), (2, "2分 不满意"), (3, "3分 一般"), (4, "4分 满意"), (5, "5分 非常满意")])


async def deliver(errand_id: int, by_id: int, now: datetime) -> Errand:
    """RESULT → DELIVERED: by the assigned proxy at the door (not while an original is still out), or,
    without a proxy, by the steward or the department's staff. The resident is asked to rate."""

    async def once() -> tuple[Errand, ErrandEvent | None]:
        errand = await _read(errand_id)
        if errand.proxy_id is not None:
            if by_id != errand.proxy_id:
                if await may_see(by_id, errand):
                    raise UserFacingError("这件代办由红色代办员上门送达结果。")
                raise NotFound(NOT_FOUND)
        elif not (await is_steward(by_id, errand.community_id)
                  or await is_department_staff(by_id, errand.department_id)):
            raise NotFound(NOT_FOUND)
        if errand.state in (ErrandState.DELIVERED, ErrandState.CLOSED) and errand.delivered_at is not None:
            return errand, None  # a retry
        if errand.state != ErrandState.RESULT:
            raise UserFacingError(f"这件代办{STATE_LABELS.get(errand.state, errand.state)}，还没有可以送达的结果。")
        at_door = errand.proxy_id is not None
        if at_door:
            out = await CustodyEntry.filter(errand_id=errand.id, returned_at=None).values_list("document", flat=True)
            if out:
                raise UserFacingError(f"还有原件没有归还：{'、'.join(str(d) for d in out)}。"
                                      "请先归还原件并记录，再标记送达。")
        async with in_transaction():
            await _save(errand, state=ErrandState.DELIVERED, delivered_at=now, at_door=at_door)
            event = await _event(errand, Kind.DELIVERED, by_id, now, at_door=at_door)
            days = errand_docs.settings().feedback_days
            await schedule_action(FEEDBACK_CLOSE, _target(errand), now + timedelta(days=days), now)
        return errand, event

    errand, event = await _attempt(once)
    if event is None:
        return errand
    asked = 0
    for resident_id in await _voices(errand):
        question = rate_question(errand, await _you(errand, resident_id))
        for acct in await _chat_accounts([resident_id]):
            await push_prompt(openid=acct.openid, flow=ERRAND_FLOW, step=RATE_STEP, question=question,
                              data={"errand_id": errand.id}, now=now, days=errand_docs.settings().feedback_days,
                              subject=_subject(errand, "rate"))
            asked += 1
    if errand.steward_id is not None and errand.steward_id != by_id:
        elder = await _elder(errand)
        how = "由红色代办员送到家" if errand.at_door else "已告知居民"
        await _tell_one(errand, event, errand.steward_id, f"{_masked(elder)}的{_item(errand)}结果{how}。", now)
    if not asked:
        log.info("errand %s delivered to a resident nobody can ask in chat: it closes unrated later", errand.id)
    return errand


async def _credit(errand: Errand, actor_id: int | None, now: datetime) -> int:
    """The proxy's points for the errand, once (0 without a proxy or when the community gives none)."""
    if errand.proxy_id is None:
        return 0
    points = (await settings_of(errand.community_id)).proxy_points
    if points <= 0:
        return 0
    issuing = await account(Asset.POINTS, AccountKind.ISSUING, errand.community_id, now)
    posted = await ledger.transfer(
        from_account=issuing, to_account=await points_of(errand.proxy_id, now), amount=points, source=Source.ERRAND,
        key=f"errand:{errand.id}:points", now=now, ref=f"errand:{errand.id}", memo=f"红色代办：{errand.item_name}",
        actor_id=actor_id)
    return int(posted.entry.amount)


async def confirm(errand_id: int, by_id: int, rating: int, now: datetime, note: str = "") -> Errand:
    """The resident (whoever asked, or a family proxy) confirms and rates: closed, the proxy's points
    credited once however often it is confirmed."""
    if not _is_int(rating) or not 1 <= rating <= 5:
        raise UserFacingError("请打1到5分。")
    note = " ".join(note.split())
    if len(note) > NOTE_MAX:
        raise UserFacingError(f"评价最多{NOTE_MAX}个字，请精简。")

    async def once() -> tuple[Errand, ErrandEvent | None, int]:
        errand = await _read(errand_id)
        if not await speaks_for(by_id, errand):
            raise NotFound(NOT_FOUND)
        if errand.state == ErrandState.CLOSED:
            return errand, None, 0  # confirmed already (or closed unrated): nothing more happens
        if errand.state != ErrandState.DELIVERED:
            raise UserFacingError(f"这件代办{STATE_LABELS.get(errand.state, errand.state)}，结果送达后才能确认评价。")
        async with in_transaction():
            await _save(errand, state=ErrandState.CLOSED, closed_at=now, rating=rating, rating_note=note)
            points = await _credit(errand, by_id, now)
            event = await _event(errand, Kind.CONFIRMED, by_id, now, rating=rating, note=note, points=points)
            await cancel_actions(FEEDBACK_CLOSE, _target(errand))
            await _withdraw(errand, now)
        return errand, event, points

    errand, event, points = await _attempt(once)
    if event is None:
        return errand
    elder = await _elder(errand)
    if errand.proxy_id is not None:
        earned = f"已为您记入{points}积分，" if points else ""
        await _tell_one(errand, event, errand.proxy_id,
                        f"{elder.name}确认了{_item(errand)}的代办，评分{rating}分。{earned}谢谢您！回复“积分”可以查看。",
                        now, skip=by_id)
    if errand.steward_id is not None:
        await _tell_one(errand, event, errand.steward_id,
                        f"{_masked(elder)}的{_item(errand)}已办结，居民评分{rating}分。", now, skip=by_id)
    await _tell_voices(errand, event, lambda you: f"{_item(errand)}已办结，谢谢您的评价！", now, skip=by_id)
    return errand


@register_action(FEEDBACK_CLOSE)
async def _feedback_close(target: str, now: datetime) -> None:
    """A delivered errand nobody confirmed within the feedback days closes unrated (the proxy's
    points credited all the same: the result did reach the door)."""
    errand_id = int(target.split(":")[1])

    async def once() -> tuple[Errand | None, ErrandEvent | None, int]:
        errand = await Errand.get_or_none(id=errand_id)
        if errand is None or errand.state != ErrandState.DELIVERED or errand.delivered_at is None:
            return None, None, 0
        if now < errand.delivered_at + timedelta(days=errand_docs.settings().feedback_days):
            return None, None, 0
        async with in_transaction():
            await _save(errand, state=ErrandState.CLOSED, closed_at=now)
            points = await _credit(errand, None, now)
            event = await _event(errand, Kind.AUTO_CLOSED, None, now, points=points)
            await _withdraw(errand, now)
        return errand, event, points

    errand, event, points = await _attempt(once)
    if errand is None or event is None:
        return
    elder = await _elder(errand)
    if errand.proxy_id is not None:
        earned = f"已为您记入{points}积分，" if points else ""
        await _tell_one(errand, event, errand.proxy_id,
                        f"{elder.name}的{_item(errand)}送达后未评价，已自动办结。{earned}谢谢您！", now)
    await _tell_voices(errand, event, lambda you: f"{_item(errand)}已办结。如有问题请联系社区。", now)


# ---------------------------------------------------------------------------- cancelling


async def cancel(errand_id: int, by_id: int, now: datetime, reason: str = "") -> Errand:
    """The resident side withdraws it before the transfer, or a steward (community staff) cancels any
    open errand with a reason; prompts and due actions go, whoever was involved is told."""
    reason = " ".join(reason.split())

    async def once() -> tuple[Errand, ErrandEvent | None, bool]:
        errand = await _read(errand_id)
        resident_side = await speaks_for(by_id, errand)
        staff = await is_steward(by_id, errand.community_id)
        if not resident_side and not staff:
            raise NotFound(NOT_FOUND)
        if errand.state == ErrandState.CANCELLED:
            return errand, None, False  # a retry
        if errand.state not in (*BEFORE_TRANSFER, ErrandState.TRANSFERRED):
            raise UserFacingError(f"这件代办{STATE_LABELS.get(errand.state, errand.state)}，不能取消。")
        by_resident = resident_side and errand.state in BEFORE_TRANSFER
        if not by_resident:
            if not staff:
                raise UserFacingError("已经转交部门办理，不能自己取消了。如需撤回，请联系云管家。")
            if not REASON_MIN <= len(reason) <= REASON_MAX:
                raise UserFacingError(f"请写明取消的原因（{REASON_MIN}到{REASON_MAX}个字），居民会看到。")
        elif len(reason) > REASON_MAX:
            raise UserFacingError(f"原因最多{REASON_MAX}个字。")
        async with in_transaction():
            was = errand.state
            await _save(errand, state=ErrandState.CANCELLED, closed_at=now)
            event = await _event(errand, Kind.CANCELLED, by_id, now, reason=reason, was=was, by_resident=by_resident)
            await _cancel_first_response(errand)
            await _cancel_escalations(errand)
            await cancel_actions(FEEDBACK_CLOSE, _target(errand))
            for photo_id in await ErrandPhoto.filter(errand_id=errand.id, state=PhotoState.SAVING).values_list(
                    "id", flat=True):
                await cancel_actions(KEEP_PHOTO, f"photo:{photo_id}")
            await _withdraw(errand, now)
        return errand, event, by_resident

    errand, event, by_resident = await _attempt(once)
    if event is None:
        return errand
    elder = await _elder(errand)
    said = f"（{reason}）" if reason else ""
    if by_resident:
        await _tell_voices(errand, event, lambda you: f"{_item(errand)}已取消{said}。需要时可以回复“代办”重新申请。",
                           now, skip=by_id)
    else:
        await _tell_voices(errand, event, lambda you: f"{_item(errand)}已由社区取消：{reason}。如有疑问请联系社区。",
                           now, skip=by_id)
    if errand.proxy_id is not None:
        out = await CustodyEntry.filter(errand_id=errand.id, returned_at=None).values_list("document", flat=True)
        extra = (f"请尽快归还原件：{'、'.join(str(d) for d in out)}，归还后在“代办任务”里点“归还原件”。"
                 if out else "")
        await _tell_one(errand, event, errand.proxy_id,
                        f"{elder.name}的{_item(errand)}已取消{said}，不用再去了，谢谢您！{extra}", now, skip=by_id)
    await _tell_one(errand, event, errand.steward_id, f"{_masked(elder)}的{_item(errand)}已取消{said}。", now,
                    skip=by_id)
    if errand.transferred_at is not None and errand.department_id is not None:
        await _tell_many(errand, event, await _holders((Role.DEPARTMENT,), scope_kind=Scope.DEPARTMENT,
                                                       scope_id=errand.department_id),
                         f"{_masked(elder)}的{_item(errand)}（编号{errand.id}）已取消{said}，不用再办理。", now,
                         skip=by_id)
    return errand


# ---------------------------------------------------------------------------- lists


async def errands_of(resident_id: int) -> list[Errand]:
    """Errands asked by or for the resident, newest first."""
    return list(await Errand.filter(Q(resident_id=resident_id) | Q(requested_by_id=resident_id)).order_by("-id"))


@dataclass
class QueueRow:
    errand: Errand
    overdue: bool
    waiting: str  # zh: what it waits for


def _overdue(errand: Errand, now: datetime) -> bool:
    if errand.first_response_at is None and now >= errand.created_at + timedelta(minutes=errand.first_response_minutes):
        return True
    return now >= errand.created_at + timedelta(days=errand.expected_days)


async def waiting_for(errand: Errand) -> str:
    """What the errand waits for, as a steward reads it."""
    state = errand.state
    if state == ErrandState.COLLECTING:
        missing = missing_documents(errand, await photos_of(errand.id))
        text = f"等居民上传：{'、'.join(missing)}" if missing else "照片保存中"
    elif state == ErrandState.REVIEW:
        text = "等预审"
    elif state == ErrandState.RESHOOT:
        text = "等居民重拍"
    elif state == ErrandState.READY:
        text = "等转办"
    elif state == ErrandState.TRANSFERRED:
        text = f"{await _department_name(errand)}办理中（{PROGRESS_LABELS.get(errand.progress, '待受理')}）"
    elif state == ErrandState.RESULT:
        text = "等代办员送达结果" if errand.proxy_id else "等告知居民结果"
    elif state == ErrandState.DELIVERED:
        text = "等居民确认"
    else:
        text = STATE_LABELS.get(state, state)
    if errand.steward_id is None and state in OPEN_STATES:
        text = f"等接单；{text}"
    if errand.needs_proxy and errand.proxy_id is None and state in OPEN_STATES:
        text += "；等代办员接单" if errand.proxy_level != ProxyLevel.STAFF else "；需指派代办员"
    return text


async def _queue(community_ids: list[int], steward_id: int, now: datetime) -> list[QueueRow]:
    errands = await Errand.filter(Q(steward_id=None) | Q(steward_id=steward_id), community_id__in=community_ids,
                                  state__in=list(OPEN_STATES)).order_by("created_at", "id")
    return [QueueRow(e, _overdue(e, now), await waiting_for(e)) for e in errands]


async def steward_queue(steward_id: int, now: datetime) -> list[QueueRow]:
    """The open errands of the steward's communities that are unassigned or theirs, oldest first."""
    community_ids = list({int(cast(int, c)) for c in await StaffRole.filter(
        resident_id=steward_id, role__in=list(STEWARD_ROLES), revoked_at=None, community_id__not_isnull=True
    ).values_list("community_id", flat=True)})
    if not community_ids:
        return []
    return await _queue(community_ids, steward_id, now)


async def department_queue(staff_id: int, now: datetime) -> list[QueueRow]:
    """The errands transferred to the staff member's departments and still with them, oldest first."""
    department_ids = [int(cast(int, d)) for d in await StaffRole.filter(
        resident_id=staff_id, role=Role.DEPARTMENT, scope_kind=Scope.DEPARTMENT, revoked_at=None
    ).values_list("scope_id", flat=True) if d is not None]
    if not department_ids:
        return []
    errands = await Errand.filter(department_id__in=department_ids, state=ErrandState.TRANSFERRED).order_by(
        "transferred_at", "id")
    return [QueueRow(e, _overdue(e, now) or now >= cast(datetime, e.transferred_at) + timedelta(days=e.expected_days),
                     PROGRESS_LABELS.get(e.progress, "待受理")) for e in errands]


async def proxy_tasks(proxy_id: int, now: datetime) -> tuple[list[Errand], list[Errand]]:
    """(the proxy's open errands, the offers open to them now), oldest first."""
    mine = list(await Errand.filter(proxy_id=proxy_id, state__in=list(OPEN_STATES)).order_by("created_at", "id"))
    community_ids = list({int(cast(int, c)) for c in await StaffRole.filter(
        resident_id=proxy_id, role=Role.RED_PROXY, revoked_at=None, community_id__not_isnull=True
    ).values_list("community_id", flat=True)})
    offers: list[Errand] = []
    if community_ids:
        candidates = await Errand.filter(
            community_id__in=community_ids, proxy_id=None, needs_proxy=True, state__in=list(OPEN_STATES),
            proxy_level__in=[ProxyLevel.GRID, ProxyLevel.COMMUNITY, ProxyLevel.STAFF]).order_by("created_at", "id")
        offers = [e for e in candidates if e.state != ErrandState.DELIVERED and await offered_to(proxy_id, e)]
    return mine, offers


# ---------------------------------------------------------------------------- first-response watch


@register_action(FIRST_RESPONSE)
async def _first_response_due(target: str, now: datetime) -> None:
    """Nobody took the errand within its limit: the community's stewards are alerted; staff next."""
    errand = await Errand.get_or_none(id=int(target.split(":")[1]))
    if errand is None or errand.first_response_at is not None or errand.state not in OPEN_STATES:
        return
    await _alert(errand, "stewards", await _holders((Role.STEWARD,), community_id=errand.community_id),
                 errand.first_response_minutes, now)
    await schedule_action(FIRST_RESPONSE_STAFF, _target(errand),
                          now + timedelta(minutes=errand.first_response_minutes), now)


@register_action(FIRST_RESPONSE_STAFF)
async def _first_response_staff_due(target: str, now: datetime) -> None:
    errand = await Errand.get_or_none(id=int(target.split(":")[1]))
    if errand is None or errand.first_response_at is not None or errand.state not in OPEN_STATES:
        return
    await _alert(errand, "staff", await _holders((Role.COMMUNITY_STAFF,), community_id=errand.community_id),
                 2 * errand.first_response_minutes, now)


async def _alert(errand: Errand, to: str, resident_ids: list[int], minutes: int, now: datetime) -> None:
    """One alert per errand and circle (a re-run of the due action tells nobody twice)."""
    if not any(e.data.get("to") == to for e in await ErrandEvent.filter(errand_id=errand.id, kind=Kind.ALERT)):
        await _event(errand, Kind.ALERT, None, now, to=to, minutes=minutes)
    elder = await _elder(errand)
    if to == "stewards":
        text = (f"⚠ {_masked(elder)}的{_item(errand)}（编号{errand.id}）已超过{minutes}分钟无人接单，"
                "请尽快回复“代办队列”接单。")
    else:
        text = (f"⚠ {_masked(elder)}的{_item(errand)}（编号{errand.id}）已超过{minutes}分钟没有云管家响应，"
                "请安排人员尽快处理：回复“代办队列”。")
    await _tell(resident_ids, text, f"errand:{errand.id}:alert:{to}", now)


# ---------------------------------------------------------------------------- daily digests


def _age(errand: Errand, now: datetime) -> str:
    hours = int((now - errand.created_at).total_seconds() // 3600)
    if hours < 1:
        return "申请不到1小时"
    return f"已{hours // 24}天" if hours >= 24 else f"已{hours}小时"


async def steward_digest(community_id: int, steward_id: int, now: datetime, heading: str) -> str | None:
    """The steward's digest: open errands unassigned or theirs, oldest first, overdue marked (None: none)."""
    rows = await _queue([community_id], steward_id, now)
    if not rows:
        return None
    overdue = sum(r.overdue for r in rows)
    lines = [f"{PREFIX}{heading}待办汇总：共{len(rows)}件" + (f"，{overdue}件已超时" if overdue else "") + "。"]
    for number, row in enumerate(rows[:DIGEST_ROWS_MAX], 1):
        elder = await _elder(row.errand)
        mark = "⚠" if row.overdue else ""
        lines.append(f"{number}. {mark}{row.errand.item_name} · {_masked(elder)} · {row.waiting}"
                     f" · {_age(row.errand, now)}")
    if len(rows) > DIGEST_ROWS_MAX:
        lines.append(f"另有{len(rows) - DIGEST_ROWS_MAX}件未列出。")
    lines.append("回复“代办队列”处理。")
    return "\n".join(lines)


async def run_digests(now: datetime, tz: ZoneInfo, quiet_start: time | None = None) -> dict[str, int]:
    """Every 5 minutes: for each community with open errands whose digest time has come today, the
    latest such time (once per community, day and time): every steward their digest, every resident
    (and whoever speaks for them) where their open errands stand. A digest not sent by
    ``quiet_start`` (the scheduler was down) is not sent that night."""
    local = now.astimezone(tz)
    today, clock = local.date(), local.time()
    counts = {"digests": 0, "stewards": 0, "residents": 0}
    if quiet_start is not None and clock >= quiet_start:
        return counts
    community_ids = sorted({int(cast(int, c)) for c in await Errand.filter(state__in=list(OPEN_STATES)).values_list(
        "community_id", flat=True)})
    for community_id in community_ids:
        due = [t for t in (parse_hhmm(t) for t in (await settings_of(community_id)).digest_times) if t <= clock]
        if not due:
            continue
        at = max(due)
        fire = datetime.combine(today, at, tzinfo=tz)
        async with in_transaction():
            run = await claim_run(f"{DIGEST_CLAIM}:{community_id}", fire, now)
            if run is None:
                continue  # sent already (by an earlier run or another scheduler)
            stewards, residents = await _send_digest(community_id, fire, now)
            await finish_run(run, now)
        counts["digests"] += 1
        counts["stewards"] += stewards
        counts["residents"] += residents
    return counts


async def _send_digest(community_id: int, fire: datetime, now: datetime) -> tuple[int, int]:
    stamp = f"{fire:%Y-%m-%d}:{fire:%H%M}"
    heading = f"{fire.month}月{fire.day}日{fire:%H:%M}"
    stewards = 0
    for steward_id in await _holders((Role.STEWARD,), community_id=community_id):
        text = await steward_digest(community_id, steward_id, now, heading)
        key = f"errand:digest:{community_id}:{stamp}:s{steward_id}"
        if text is not None and await push_text([steward_id], text, key, now):
            stewards += 1
    lines: dict[int, list[str]] = {}
    for errand in await Errand.filter(community_id=community_id, state__in=list(OPEN_STATES)).order_by(
            "created_at", "id"):
        for resident_id in await _voices(errand):
            you = await _you(errand, resident_id)
            whose = "您的" if you == "您" else f"{you}的"
            label = STATE_LABELS.get(errand.state, errand.state)
            lines.setdefault(resident_id, []).append(
                f"· {whose}{_item(errand)}：{label}。{await next_step(errand, you)}")
    residents = 0
    for resident_id, items in lines.items():
        text = "\n".join([f"{PREFIX}代办进度（{heading}）：", *items])
        if await push_text([resident_id], text, f"errand:digest:{community_id}:{stamp}:r{resident_id}", now):
            residents += 1
    return stewards, residents


def digest_fire_times(settings: Settings, day: date, tz: ZoneInfo) -> list[datetime]:
    """The community's digest times on ``day`` as UTC instants (for display and tests)."""
    return [datetime.combine(day, parse_hhmm(t), tzinfo=tz).astimezone(UTC) for t in settings.digest_times]
