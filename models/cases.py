"""逢六说事: the cases residents report, from triage to the resident's rating.

A case is classed private (私事), small (小事) or big (大事) and handled along its class's chain of
levels (mediator, property company, grid worker, community, sub-district), one level at a time.
Each level has a deadline (per community, in working days where configured); a missed deadline
moves the case one level up (a due action), and a big case goes on the agenda of the next
6th/16th/26th deliberation session. Every step is an append-only ``CaseEvent``. Residents follow
the cases they reported or joined ("me too"); joiners see only what is public: category,
building, dates, status, the handlers' public summary and session outcomes. The photos of a case
and of its progress notes are fetched into our own store (models/media.py) by a due action while
WeChat still has them.

Chat (handlers/cases.py) and the API (handlers/cases_api.py) both act through the functions
here; the sessions, the Friday roundup (models/case_sessions.py) and the figures
(models/case_figures.py) read these tables.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, cast
from zoneinfo import ZoneInfo

from tortoise import fields
from tortoise.expressions import Q
from tortoise.models import Model
from tortoise.transactions import in_transaction

from bot.clock import WorkCalendar, format_zh
from models import media
from models.conversation import Question, choice, push_prompt, withdraw_prompts
from models.errors import NotFound, UserFacingError
from models.jobs import cancel_actions, register_action, schedule_action
from models.outbox import Priority
from models.places import Building, Community, Grid
from models.privacy import register_hold
from models.proxies import acts_for
from models.push import push_text
from models.residents import Resident, WechatAccount
from models.roles import Role, StaffRole, active_roles

log = logging.getLogger(__name__)

DESCRIPTION_MAX = 300
SUMMARY_MAX = 100
NOTE_MAX = 200
REASON_MAX = 100
PHOTOS_MAX = 3


# ---------------------------------------------------------------------------- vocabulary


class Klass:
    PRIVATE = "private"  # 私事: a mediator of the grid
    SMALL = "small"  # 小事: the property company, with a deadline per category
    BIG = "big"  # 大事: the next deliberation session


KLASS_LABELS = {Klass.PRIVATE: "私事", Klass.SMALL: "小事", Klass.BIG: "大事"}


class Level:
    MEDIATOR = "mediator"
    PROPERTY = "property"
    GRID = "grid"
    COMMUNITY = "community"
    SUB_DISTRICT = "sub_district"


LEVEL_LABELS = {Level.MEDIATOR: "调解员", Level.PROPERTY: "物业公司", Level.GRID: "网格员",
                Level.COMMUNITY: "社区", Level.SUB_DISTRICT: "街道"}
# the staff role that handles each level, and where its scope must match the case
LEVEL_ROLES = {Level.MEDIATOR: Role.MEDIATOR, Level.PROPERTY: Role.PROPERTY, Level.GRID: Role.GRID_WORKER,
               Level.COMMUNITY: Role.COMMUNITY_STAFF, Level.SUB_DISTRICT: Role.SUBDISTRICT_STAFF}
ROLE_LEVELS = {role: level for level, role in LEVEL_ROLES.items()}


class Status:
    OPEN = "open"  # with a level that has not taken it yet
    IN_PROGRESS = "in_progress"  # a handler took it
    RESOLVED = "resolved"  # waiting for the residents' feedback
    CLOSED = "closed"  # rated, or closed unrated after the feedback time


STATUS_LABELS = {Status.OPEN: "待受理", Status.IN_PROGRESS: "处理中", Status.RESOLVED: "已办结，待评价",
                 Status.CLOSED: "已关闭"}
LIVE = (Status.OPEN, Status.IN_PROGRESS)


class Source:
    CHAT = "chat"
    API = "api"
    IN_PERSON = "in_person"  # came to the office; entered by staff
    HOTLINE = "hotline"  # a 12345 hotline case; entered by staff


SOURCE_LABELS = {Source.CHAT: "公众号", Source.API: "小程序", Source.IN_PERSON: "现场反映",
                 Source.HOTLINE: "12345热线"}


class Fixed:
    YES = "fixed"
    PARTLY = "partly"
    NO = "not_fixed"


FIXED_LABELS = {Fixed.YES: "已解决", Fixed.PARTLY: "部分解决", Fixed.NO: "没有解决"}


@dataclass(frozen=True)
class Category:
    code: str
    label: str
    klass: str
    days: int  # the property company's deadline for a small case of this category


CATEGORIES = [
    Category("lighting", "照明", Klass.SMALL, 3),
    Category("water", "下水与供水", Klass.SMALL, 2),
    Category("lift", "电梯", Klass.SMALL, 1),
    Category("sanitation", "环境卫生", Klass.SMALL, 2),
    Category("greenery", "绿化", Klass.SMALL, 5),
    Category("parking", "停车", Klass.BIG, 5),
    Category("noise", "噪音扰民", Klass.PRIVATE, 3),
    Category("hazard", "安全隐患", Klass.SMALL, 1),
    Category("property", "物业服务", Klass.SMALL, 3),
    Category("dispute", "邻里纠纷", Klass.PRIVATE, 3),
    Category("other", "其他", Klass.SMALL, 3),
]
CATEGORY_BY_CODE = {c.code: c for c in CATEGORIES}


class EventKind:
    REPORTED = "reported"
    JOINED = "joined"
    ASSIGNED = "assigned"  # a level got it (first routing, escalation, reclassification)
    ACCEPTED = "accepted"
    INFO_REQUESTED = "info_requested"
    INFO_GIVEN = "info_given"
    PROGRESS = "progress"
    RESOLVED = "resolved"
    ESCALATED = "escalated"
    OVERDUE = "overdue"  # the last level missed its deadline
    CLASSIFIED = "classified"
    IN_PERSON = "in_person"  # the reporter asked to raise it at a session
    REOPENED = "reopened"
    FEEDBACK = "feedback"
    CLOSED = "closed"
    AGENDA = "agenda"  # put on, or taken off, a session's agenda
    OUTCOME = "outcome"  # a session agreed what happens


EVENT_LABELS = {
    EventKind.REPORTED: "反映", EventKind.JOINED: "有居民附议", EventKind.ASSIGNED: "分派",
    EventKind.ACCEPTED: "受理", EventKind.INFO_REQUESTED: "询问情况", EventKind.INFO_GIVEN: "补充情况",
    EventKind.PROGRESS: "进展", EventKind.RESOLVED: "办结", EventKind.ESCALATED: "上报",
    EventKind.OVERDUE: "超期", EventKind.CLASSIFIED: "改分类", EventKind.IN_PERSON: "要求当面说",
    EventKind.REOPENED: "退回重办", EventKind.FEEDBACK: "评价", EventKind.CLOSED: "关闭",
    EventKind.AGENDA: "议事会议程", EventKind.OUTCOME: "议事结果",
}
# a joiner reads the words of these public events only: what was done, what a session agreed
PUBLIC_NOTES = frozenset({EventKind.RESOLVED, EventKind.OUTCOME})


# ---------------------------------------------------------------------------- tables


class Case(Model):
    """A problem a resident reported (or staff entered for them)."""

    _no_comments = True  # see models/__init__.py

    id = fields.IntField(primary_key=True)
    community: fields.ForeignKeyRelation[Community] = fields.ForeignKeyField(
        "linli.Community", related_name="cases", on_delete=fields.RESTRICT)
    grid: fields.ForeignKeyRelation[Grid] = fields.ForeignKeyField(
        "linli.Grid", related_name="cases", on_delete=fields.RESTRICT)
    building: fields.ForeignKeyNullableRelation[Building] = fields.ForeignKeyField(
        "linli.Building", related_name="cases", null=True, on_delete=fields.RESTRICT)
    location: dict[str, Any] | None = fields.JSONField(null=True)  # a shared map point: lat, lon, label
    category = fields.CharField(max_length=16)
    klass = fields.CharField(max_length=8)
    status = fields.CharField(max_length=12, default=Status.OPEN)
    level = fields.CharField(max_length=12)
    source = fields.CharField(max_length=12, default=Source.CHAT)
    reporter: fields.ForeignKeyNullableRelation[Resident] = fields.ForeignKeyField(
        "linli.Resident", related_name="cases", null=True, on_delete=fields.SET_NULL)
    # staff who entered it (in person, hotline) or the family proxy who reported for the elder
    entered_by: fields.ForeignKeyNullableRelation[Resident] = fields.ForeignKeyField(
        "linli.Resident", related_name="cases_entered", null=True, on_delete=fields.SET_NULL)
    contact = fields.CharField(max_length=32, default="")  # a hotline caller who is not a resident here
    description = fields.CharField(max_length=DESCRIPTION_MAX)
    photos: list[dict[str, Any]] = fields.JSONField(default=list)
    in_person = fields.BooleanField(default=False)  # the reporter asked to raise it at a session
    joins = fields.IntField(default=0)  # residents who said "me too": the higher, the sooner
    assignment = fields.IntField(default=0)  # counts the levels it was given to (due actions check it)
    due_at = fields.DatetimeField(null=True)  # the current level's deadline
    accepted_at = fields.DatetimeField(null=True)  # first taken by a handler
    resolved_at = fields.DatetimeField(null=True)  # cleared again when reopened
    resolved_in_time = fields.BooleanField(default=False)
    summary = fields.CharField(max_length=SUMMARY_MAX, default="")  # public: what was done
    missed_deadlines = fields.IntField(default=0)
    escalations = fields.IntField(default=0)
    reopened = fields.IntField(default=0)
    rating = fields.IntField(null=True)  # 1-5
    closed_at = fields.DatetimeField(null=True)
    closed_reason = fields.CharField(max_length=12, default="")  # rated | unrated
    created_at = fields.DatetimeField()
    updated_at = fields.DatetimeField()

    class Meta:
        table = "case_report"
        indexes = (("community_id", "status"), ("grid_id", "status"), ("status", "level"), ("created_at",))

    @property
    def number(self) -> str:
        return str(self.id)

    @property
    def category_label(self) -> str:
        cat = CATEGORY_BY_CODE.get(self.category)
        return cat.label if cat else self.category


class CaseFollower(Model):
    """Who follows a case: its reporter and everyone who joined it."""

    _no_comments = True  # see models/__init__.py

    id = fields.IntField(primary_key=True)
    case: fields.ForeignKeyRelation[Case] = fields.ForeignKeyField(
        "linli.Case", related_name="followers", on_delete=fields.CASCADE)
    resident: fields.ForeignKeyRelation[Resident] = fields.ForeignKeyField(
        "linli.Resident", related_name="followed_cases", on_delete=fields.CASCADE)
    kind = fields.CharField(max_length=8)  # reporter | joiner
    created_at = fields.DatetimeField()

    class Meta:
        table = "case_follower"
        unique_together = (("case", "resident"),)
        indexes = (("resident_id",),)


class CaseEvent(Model):
    """One step in a case's life: append-only, who, when and what."""

    _no_comments = True  # see models/__init__.py

    id = fields.BigIntField(primary_key=True)
    case: fields.ForeignKeyRelation[Case] = fields.ForeignKeyField(
        "linli.Case", related_name="events", on_delete=fields.CASCADE)
    kind = fields.CharField(max_length=16)
    actor: fields.ForeignKeyNullableRelation[Resident] = fields.ForeignKeyField(
        "linli.Resident", related_name="case_events", null=True, on_delete=fields.SET_NULL)
    actor_label = fields.CharField(max_length=32, default="")  # e.g. 物业公司, 系统 (a deadline passed)
    level = fields.CharField(max_length=12, default="")
    note = fields.CharField(max_length=300, default="")
    data: dict[str, Any] = fields.JSONField(default=dict)
    public = fields.BooleanField(default=False)  # joiners may see it
    created_at = fields.DatetimeField()

    class Meta:
        table = "case_event"
        indexes = (("case_id", "id"),)


class CaseFeedback(Model):
    """A follower's answer after a resolution (one per follower and resolution round)."""

    _no_comments = True  # see models/__init__.py

    id = fields.IntField(primary_key=True)
    case: fields.ForeignKeyRelation[Case] = fields.ForeignKeyField(
        "linli.Case", related_name="feedback", on_delete=fields.CASCADE)
    resident: fields.ForeignKeyRelation[Resident] = fields.ForeignKeyField(
        "linli.Resident", related_name="case_feedback", on_delete=fields.CASCADE)
    round = fields.IntField()  # the case's reopened count when it was resolved
    fixed = fields.CharField(max_length=12)
    rating = fields.IntField(null=True)
    comment = fields.CharField(max_length=NOTE_MAX, default="")
    created_at = fields.DatetimeField()

    class Meta:
        table = "case_feedback"
        unique_together = (("case", "resident", "round"),)


class CaseSettings(Model):
    """A community's chains, deadlines and default classes (``CaseRules``), as staff edited them."""

    _no_comments = True  # see models/__init__.py

    id = fields.IntField(primary_key=True)
    community: fields.OneToOneRelation[Community] = fields.OneToOneField(
        "linli.Community", related_name="case_settings", on_delete=fields.CASCADE)
    data: dict[str, Any] = fields.JSONField(default=dict)
    updated_at = fields.DatetimeField()
    updated_by: fields.ForeignKeyNullableRelation[Resident] = fields.ForeignKeyField(
        "linli.Resident", related_name="case_settings_edits", null=True, on_delete=fields.SET_NULL)

    class Meta:
        table = "case_settings"


class DeliberationSession(Model):
    """A deliberation session (逢六说事) of a community on the 6th, 16th or 26th."""

    _no_comments = True  # see models/__init__.py

    id = fields.IntField(primary_key=True)
    community: fields.ForeignKeyRelation[Community] = fields.ForeignKeyField(
        "linli.Community", related_name="sessions", on_delete=fields.CASCADE)
    day = fields.DateField()
    reminded_at = fields.DatetimeField(null=True)  # the residents' reminder the day before
    held_at = fields.DatetimeField(null=True)
    created_at = fields.DatetimeField()

    class Meta:
        table = "deliberation_session"
        unique_together = (("community", "day"),)


class AgendaReason:
    BIG = "big"
    ESCALATED = "escalated"
    IN_PERSON = "in_person"
    STAFF = "staff"


AGENDA_REASON_LABELS = {AgendaReason.BIG: "大事", AgendaReason.ESCALATED: "升级到社区",
                        AgendaReason.IN_PERSON: "居民要求当面说", AgendaReason.STAFF: "工作人员添加"}


class AgendaItem(Model):
    """A case on a session's agenda (dropped items stay, stamped with who and why)."""

    _no_comments = True  # see models/__init__.py

    id = fields.IntField(primary_key=True)
    session: fields.ForeignKeyRelation[DeliberationSession] = fields.ForeignKeyField(
        "linli.DeliberationSession", related_name="items", on_delete=fields.CASCADE)
    case: fields.ForeignKeyRelation[Case] = fields.ForeignKeyField(
        "linli.Case", related_name="agenda_items", on_delete=fields.CASCADE)
    reason = fields.CharField(max_length=12)
    added_by: fields.ForeignKeyNullableRelation[Resident] = fields.ForeignKeyField(
        "linli.Resident", related_name="agenda_added", null=True, on_delete=fields.SET_NULL)
    added_note = fields.CharField(max_length=REASON_MAX, default="")
    added_at = fields.DatetimeField()
    dropped_at = fields.DatetimeField(null=True)
    dropped_by: fields.ForeignKeyNullableRelation[Resident] = fields.ForeignKeyField(
        "linli.Resident", related_name="agenda_dropped", null=True, on_delete=fields.SET_NULL)
    dropped_reason = fields.CharField(max_length=REASON_MAX, default="")
    # what the session agreed: who does what by when (public)
    outcome = fields.CharField(max_length=NOTE_MAX, default="")
    outcome_owner = fields.CharField(max_length=32, default="")
    outcome_due = fields.DateField(null=True)
    outcome_at = fields.DatetimeField(null=True)
    outcome_by: fields.ForeignKeyNullableRelation[Resident] = fields.ForeignKeyField(
        "linli.Resident", related_name="outcomes_recorded", null=True, on_delete=fields.SET_NULL)

    class Meta:
        table = "agenda_item"
        unique_together = (("session", "case"),)


# ---------------------------------------------------------------------------- per-community rules

DEFAULT_CHAINS = {
    Klass.SMALL: [Level.PROPERTY, Level.GRID, Level.COMMUNITY, Level.SUB_DISTRICT],
    Klass.PRIVATE: [Level.MEDIATOR, Level.COMMUNITY],
    Klass.BIG: [Level.COMMUNITY, Level.SUB_DISTRICT],
}
DEFAULT_LEVEL_DAYS = {Level.MEDIATOR: 3, Level.GRID: 2, Level.COMMUNITY: 3, Level.SUB_DISTRICT: 5}
DAYS_MAX = 60


@dataclass
class CaseRules:
    """Chains, deadlines (days) and default classes of one community; code defaults where unedited."""

    chains: dict[str, list[str]] = field(default_factory=lambda: {k: list(v) for k, v in DEFAULT_CHAINS.items()})
    classes: dict[str, str] = field(default_factory=lambda: {c.code: c.klass for c in CATEGORIES})
    property_days: dict[str, int] = field(default_factory=lambda: {c.code: c.days for c in CATEGORIES})
    level_days: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_LEVEL_DAYS))
    outcome_days: int = 15  # a session outcome without a date of its own
    working_days: bool = True  # count deadlines in working days (the holiday calendar)

    def days_for(self, level: str, category: str) -> int:
        if level == Level.PROPERTY:
            return self.property_days.get(category, 3)
        return self.level_days.get(level, 3)

    def to_json(self) -> dict[str, Any]:
        return {"chains": self.chains, "classes": self.classes, "property_days": self.property_days,
                "level_days": self.level_days, "outcome_days": self.outcome_days, "working_days": self.working_days}

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> CaseRules:
        """Defaults overlaid with what was stored (keys of a newer release keep their defaults)."""
        rules = cls()
        rules.chains.update({k: list(v) for k, v in raw.get("chains", {}).items() if k in DEFAULT_CHAINS})
        rules.classes.update({k: v for k, v in raw.get("classes", {}).items() if k in CATEGORY_BY_CODE})
        rules.property_days.update({k: int(v) for k, v in raw.get("property_days", {}).items()
                                    if k in CATEGORY_BY_CODE})
        rules.level_days.update({k: int(v) for k, v in raw.get("level_days", {}).items() if k in LEVEL_LABELS})
        rules.outcome_days = int(raw.get("outcome_days", rules.outcome_days))
        rules.working_days = bool(raw.get("working_days", rules.working_days))
        return rules

    def check(self) -> None:
        """UserFacingError naming the first rule that cannot work."""
        for klass, chain in self.chains.items():
            if klass not in DEFAULT_CHAINS:
                raise UserFacingError(f"没有这种分类：{klass}")
            if not chain or len(set(chain)) != len(chain) or any(level not in LEVEL_LABELS for level in chain):
                raise UserFacingError(f"{KLASS_LABELS[klass]}的处理层级不对：每级只能出现一次，且须是"
                                      f"{'、'.join(LEVEL_LABELS.values())}之一。")
        for code, klass in self.classes.items():
            if code not in CATEGORY_BY_CODE or klass not in KLASS_LABELS:
                raise UserFacingError(f"分类设置不对：{code} → {klass}")
        for days in [*self.property_days.values(), *self.level_days.values(), self.outcome_days]:
            if not 1 <= days <= DAYS_MAX:
                raise UserFacingError(f"期限须在 1 到 {DAYS_MAX} 天之间。")


async def rules_of(community_id: int) -> CaseRules:
    row = await CaseSettings.get_or_none(community_id=community_id)
    return CaseRules.from_json(row.data) if row else CaseRules()


async def save_rules(community_id: int, rules: CaseRules, *, by_id: int | None, now: datetime) -> CaseRules:
    """Store a community's rules (checked first); cases already assigned keep their deadlines."""
    rules.check()
    row = await CaseSettings.get_or_none(community_id=community_id)
    if row is None:
        await CaseSettings.create(community_id=community_id, data=rules.to_json(), updated_at=now, updated_by_id=by_id)
    else:
        row.data, row.updated_at, row.updated_by_id = rules.to_json(), now, by_id
        await row.save(update_fields=["data", "updated_at", "updated_by_id"])
    return rules


@dataclass
class CaseContext:
    """What due actions need of the configuration (set by the app and the scheduler at start)."""

    tz: ZoneInfo = field(default_factory=lambda: ZoneInfo("Asia/Shanghai"))
    calendar: WorkCalendar = field(default_factory=WorkCalendar)
    nearby_meters: int = 300
    nearby_days: int = 14
    feedback_days: int = 7  # a resolved case nobody rated closes as unrated after this
    prompt_days: int = 7


CONTEXT = CaseContext()


def configure(config: Any) -> None:
    """Take the time zone, calendar and limits from the service's configuration (bot.config.Config)."""
    from bot.clock import work_calendar

    global CONTEXT
    CONTEXT = CaseContext(tz=ZoneInfo(config.community.timezone), calendar=work_calendar(config.community),
                          nearby_meters=config.cases.nearby_meters, nearby_days=config.cases.nearby_days,
                          feedback_days=config.cases.feedback_days, prompt_days=config.conversation.prompt_days)


def deadline(start: datetime, days: int, rules: CaseRules) -> datetime:
    """``days`` (working) days after ``start``, at the same local time of day."""
    if not rules.working_days:
        return start + timedelta(days=days)
    local = start.astimezone(CONTEXT.tz)
    day = CONTEXT.calendar.add_workdays(local.date(), days)
    return datetime.combine(day, local.timetz()).astimezone(UTC)


def local_today(now: datetime) -> date:
    """The community's calendar date at ``now``."""
    return now.astimezone(CONTEXT.tz).date()


def next_session_day(today: date) -> date:
    """The coming 6th, 16th or 26th after ``today`` (the 26th is followed by next month's 6th)."""
    for d in (6, 16, 26):
        if d > today.day:
            return today.replace(day=d)
    first_next = (today.replace(day=1) + timedelta(days=32)).replace(day=1)
    return first_next.replace(day=6)


# ---------------------------------------------------------------------------- who handles what


def _scope_filter(level: str, case: Case) -> dict[str, Any]:
    if level in (Level.MEDIATOR, Level.GRID):
        return {"grid_id": case.grid_id}  # type: ignore[attr-defined]
    if level in (Level.PROPERTY, Level.COMMUNITY):
        return {"community_id": case.community_id}  # type: ignore[attr-defined]
    return {"sub_district_id": case._sub_district_id}  # type: ignore[attr-defined]


async def _with_sub_district(case: Case) -> Case:
    if not hasattr(case, "_sub_district_id"):
        community = await Community.get(id=case.community_id)  # type: ignore[attr-defined]
        case._sub_district_id = community.sub_district_id  # type: ignore[attr-defined]
    return case


async def holders(level: str, case: Case) -> list[int]:
    """Resident ids holding the role of ``level`` over this case."""
    await _with_sub_district(case)
    ids = await StaffRole.filter(role=LEVEL_ROLES[level], revoked_at=None, **_scope_filter(level, case)).values_list(
        "resident_id", flat=True)
    return sorted({int(cast(int, i)) for i in ids})


def _role_covers(role: StaffRole, level: str, case: Case) -> bool:
    if ROLE_LEVELS.get(role.role) != level:
        return False
    return all(getattr(role, k) == v for k, v in _scope_filter(level, case).items())


async def may_handle(actor_id: int, case: Case) -> bool:
    """Whether the actor holds the role of the case's current level over it."""
    await _with_sub_district(case)
    return any(_role_covers(r, case.level, case) for r in await active_roles(actor_id))


async def handling_levels(actor_id: int, case: Case) -> set[str]:
    """The levels of this case's chain (and, for a case that is not private, the grid worker) the
    actor holds over it: who may see the whole case."""
    await _with_sub_district(case)
    rules = await rules_of(case.community_id)  # type: ignore[attr-defined]
    levels = set(rules.chains.get(case.klass, [])) | {case.level}
    if case.klass != Klass.PRIVATE:
        levels.add(Level.GRID)
    roles = await active_roles(actor_id)
    return {level for level in levels if any(_role_covers(r, level, case) for r in roles)}


class Access:
    REPORTER = "reporter"  # the whole case
    HANDLER = "handler"  # the whole case, and may act on it at its level
    FOLLOWER = "follower"  # joined: only what is public


async def access_of(actor_id: int, case: Case) -> str | None:
    """How much of the case the actor may see (None: that it exists is not theirs to know)."""
    if case.reporter_id == actor_id:  # type: ignore[attr-defined]
        return Access.REPORTER
    if await handling_levels(actor_id, case):
        return Access.HANDLER
    if await CaseFollower.filter(case_id=case.id, resident_id=actor_id).exists():
        return Access.FOLLOWER
    return None


async def get_case(case_id: int, actor_id: int) -> tuple[Case, str]:
    """The case and the actor's access to it; NotFound when they have none."""
    case = await Case.get_or_none(id=case_id)
    access = None if case is None else await access_of(actor_id, case)
    if case is None or access is None:
        raise NotFound("没有找到这件事。")
    return case, access


# ---------------------------------------------------------------------------- pushes


def when_zh(when: datetime | None) -> str:
    return format_zh(when, CONTEXT.tz, with_time=False) if when else ""


async def _push(resident_ids: list[int], text: str, key: str, now: datetime,
                priority: int = Priority.NORMAL) -> int:
    return await push_text(resident_ids, text, key, now, priority)


async def proxy_of(case: Case) -> int | None:
    """The family proxy who reported for the resident, while the link lasts: they hear what the
    resident hears, answer the handler's questions and rate the result (the elder may have no WeChat)."""
    entered, reporter = case.entered_by_id, case.reporter_id  # type: ignore[attr-defined]
    if entered is not None and reporter is not None and entered != reporter and await acts_for(entered, reporter):
        return int(entered)
    return None


async def speaks_for(case: Case, resident_id: int) -> bool:
    """Whether this resident is the case's reporter or the proxy who reported for them."""
    return case.reporter_id == resident_id or resident_id == await proxy_of(case)  # type: ignore[attr-defined]


async def follower_ids(case: Case, *, joiners: bool = True) -> list[int]:
    """Who hears of the case: its reporter (and the proxy who reported for them), then the joiners."""
    query = CaseFollower.filter(case_id=case.id)
    if not joiners:
        query = query.filter(kind="reporter")
    ids = [int(cast(int, i)) for i in await query.order_by("id").values_list("resident_id", flat=True)]
    proxy = await proxy_of(case)
    if proxy is not None and proxy not in ids:
        ids.insert(1 if ids else 0, proxy)
    return ids


async def tell_followers(case: Case, text: str, key: str, now: datetime, *, joiners: bool = True) -> int:
    return await _push(await follower_ids(case, joiners=joiners), f"【说事 编号{case.number}】{text}",
                       f"case:{case.id}:{key}", now)


async def tell_level(case: Case, text: str, key: str, now: datetime) -> int:
    return await _push(await holders(case.level, case), f"【说事 编号{case.number}】{text}",
                       f"case:{case.id}:{key}", now, Priority.NORMAL)


def handler_label(case: Case) -> str:
    return LEVEL_LABELS.get(case.level, case.level)


def promise_text(case: Case) -> str:
    """Who handles it and by when, as the resident reads it."""
    if case.klass == Klass.BIG and case.due_at is None:
        return f"由{handler_label(case)}列入逢六议事会议程"
    if case.due_at is not None:
        return f"由{handler_label(case)}处理，{when_zh(case.due_at)}前给您答复"
    return f"由{handler_label(case)}处理"


# ---------------------------------------------------------------------------- events


async def record(case: Case, kind: str, now: datetime, *, actor_id: int | None = None, label: str = "",
                 note: str = "", public: bool = False, **data: Any) -> CaseEvent:
    return await CaseEvent.create(case_id=case.id, kind=kind, actor_id=actor_id, actor_label=label[:32],
                                  level=case.level, note=note[:300], data=data, public=public, created_at=now)


async def events_of(case: Case, access: str) -> list[CaseEvent]:
    query = CaseEvent.filter(case_id=case.id)
    if access == Access.FOLLOWER:
        query = query.filter(public=True)
    return await query.order_by("id")


# ---------------------------------------------------------------------------- routing


async def _actor_label(actor_id: int | None, case: Case) -> str:
    if actor_id is None:
        return "系统"
    levels = await handling_levels(actor_id, case)
    for level in (case.level, Level.COMMUNITY, Level.SUB_DISTRICT, Level.GRID, Level.MEDIATOR, Level.PROPERTY):
        if level in levels:
            return LEVEL_LABELS[level]
    return "居民"


async def restart_deadline(case: Case, due_at: datetime | None, now: datetime) -> None:
    """Give the case a new deadline (None: none): the pending ``case.deadline`` action is cancelled
    and a new one, keyed by the case's assignment count, scheduled. The caller saves the case."""
    case.assignment += 1
    case.due_at = due_at
    await cancel_actions("case.deadline", f"case:{case.id}")
    if due_at is not None:
        await schedule_action("case.deadline", f"case:{case.id}", due_at, now,
                              key=f"case.deadline:{case.id}:{case.assignment}")


async def _assign(case: Case, level: str, rules: CaseRules, now: datetime) -> None:
    """Give the case to ``level`` with that level's deadline (a big case at the community waits
    for its session instead). Saves the case; the caller holds its row lock."""
    case.level = level
    case.status = Status.OPEN
    waits_for_session = case.klass == Klass.BIG and level == rules.chains[Klass.BIG][0]
    await restart_deadline(case, None if waits_for_session else deadline(
        now, rules.days_for(level, case.category), rules), now)
    case.updated_at = now
    await case.save()
    if level == Level.COMMUNITY and case.klass != Klass.PRIVATE and (case.klass == Klass.BIG or case.escalations):
        await add_to_agenda(case, AgendaReason.BIG if case.klass == Klass.BIG else AgendaReason.ESCALATED, now)


async def _first_level(case: Case, chain: list[str]) -> str:
    """The first level of the chain that has somebody to handle it (the last one regardless)."""
    for level in chain[:-1]:
        case.level = level
        if await holders(level, case):
            return level
    return chain[-1]


async def _next_level(case: Case, chain: list[str]) -> str | None:
    """The next level above the current one that has somebody (None at the top)."""
    if case.level not in chain:
        return chain[0]
    above = chain[chain.index(case.level) + 1:]
    current = case.level
    for level in above[:-1]:
        case.level = level
        if await holders(level, case):
            case.level = current
            return level
    case.level = current
    return above[-1] if above else None


def meters_between(a: tuple[float, float], b: tuple[float, float]) -> float:
    """Great-circle distance of two (lat, lon) points."""
    lat1, lon1, lat2, lon2 = map(math.radians, (*a, *b))
    h = math.sin((lat2 - lat1) / 2) ** 2 + math.cos(lat1) * math.cos(lat2) * math.sin((lon2 - lon1) / 2) ** 2
    return 2 * 6_371_000 * math.asin(math.sqrt(h))


def _point(case: Case, building: Building | None) -> tuple[float, float] | None:
    if case.location:
        return float(case.location["lat"]), float(case.location["lon"])
    if building is not None and building.lat is not None and building.lon is not None:
        return building.lat, building.lon
    return None


async def similar_cases(*, community_id: int, category: str, building_id: int | None,
                        location: dict[str, Any] | None, now: datetime, exclude_resident: int | None = None,
                        limit: int = 5) -> list[Case]:
    """Live cases of the same category in the same building or within ``nearby_meters``, reported in
    the last ``nearby_days``: what a new report may be a duplicate of. Private cases are never
    offered. Most joined first."""
    since = now - timedelta(days=CONTEXT.nearby_days)
    candidates = await Case.filter(community_id=community_id, category=category, status__in=LIVE,
                                   created_at__gte=since).exclude(klass=Klass.PRIVATE).prefetch_related(
        "building").order_by("-joins", "-id")
    here: tuple[float, float] | None = None
    if location:
        here = float(location["lat"]), float(location["lon"])
    elif building_id is not None:
        b = await Building.get_or_none(id=building_id)
        if b is not None and b.lat is not None and b.lon is not None:
            here = b.lat, b.lon
    found = []
    for case in candidates:
        near = building_id is not None and case.building_id == building_id  # type: ignore[attr-defined]
        point = _point(case, case.building)
        if not near and here is not None and point is not None:
            near = meters_between(here, point) <= CONTEXT.nearby_meters
        if near and (exclude_resident is None or not await CaseFollower.filter(
                case_id=case.id, resident_id=exclude_resident).exists()):
            found.append(case)
    return found[:limit]


def public_line(case: Case) -> str:
    """What anyone may read of a case they did not report: category, building and date."""
    place = case.building.name if case.building else (case.location or {}).get("label", "附近")
    return f"{case.category_label}·{place}·{when_zh(case.created_at)}反映（{case.joins + 1}人）"


async def _nearest_building(community_id: int, location: dict[str, Any]) -> Building | None:
    here = float(location["lat"]), float(location["lon"])
    best: tuple[float, Building] | None = None
    for b in await Building.filter(community_id=community_id).exclude(lat=None):
        if b.lat is None or b.lon is None:
            continue
        d = meters_between(here, (b.lat, b.lon))
        if d <= CONTEXT.nearby_meters and (best is None or d < best[0]):
            best = (d, b)
    return best[1] if best else None


def check_report(category: str, description: str, photos: list[dict[str, Any]]) -> str:
    description = description.strip()
    if category not in CATEGORY_BY_CODE:
        raise UserFacingError("没有这个问题分类。")
    if not description:
        raise UserFacingError("请说明是什么问题。")
    if len(description) > DESCRIPTION_MAX:
        raise UserFacingError(f"问题描述最多 {DESCRIPTION_MAX} 个字。")
    if len(photos) > PHOTOS_MAX:
        raise UserFacingError(f"最多 {PHOTOS_MAX} 张照片。")
    return description


async def report_case(
    *, reporter: Resident | None, community_id: int | None = None, category: str, description: str,
    photos: list[dict[str, Any]] | None = None, building_id: int | None = None,
    location: dict[str, Any] | None = None, source: str = Source.CHAT, entered_by_id: int | None = None,
    contact: str = "", in_person: bool = False, now: datetime,
) -> Case:
    """Create a case, class it from its category, give it to the first level of its chain, and tell
    that level. The place: ``building_id``, else the building nearest ``location``, else the
    reporter's own building."""
    photos = list(photos or [])
    description = check_report(category, description, photos)
    if reporter is not None:
        community_id = reporter.community_id  # type: ignore[attr-defined]
    if community_id is None:
        raise UserFacingError("请指定社区。")
    building: Building | None = None
    if building_id is not None:
        building = await Building.get_or_none(id=building_id, community_id=community_id)
        if building is None:
            raise NotFound("没有找到这栋楼。")
    elif location:
        building = await _nearest_building(community_id, location)
    if building is None and reporter is not None and reporter.building_id is not None:  # type: ignore[attr-defined]
        building = await Building.get(id=reporter.building_id)  # type: ignore[attr-defined]
    if building is None:
        raise UserFacingError("请选择问题所在的楼栋。")
    rules = await rules_of(community_id)
    async with in_transaction():
        case = await Case.create(
            community_id=community_id, grid_id=building.grid_id, building=building,  # type: ignore[attr-defined]
            location=location, category=category, klass=rules.classes.get(category, Klass.SMALL),
            level="", source=source, reporter=reporter, entered_by_id=entered_by_id, contact=contact[:32],
            description=description, photos=photos, in_person=in_person, created_at=now, updated_at=now)
        if reporter is not None:
            await CaseFollower.create(case=case, resident=reporter, kind="reporter", created_at=now)
        await record(case, EventKind.REPORTED, now, actor_id=entered_by_id or (reporter.id if reporter else None),
                     label=SOURCE_LABELS.get(source, source), public=True, source=source)
        level = await _first_level(case, rules.chains[case.klass])
        await _assign(case, level, rules, now)
        await record(case, EventKind.ASSIGNED, now, label="系统", public=True, klass=case.klass)
        if in_person and case.klass != Klass.PRIVATE:  # a private matter is never discussed in public
            await add_to_agenda(case, AgendaReason.IN_PERSON, now)
        await _keep_later(f"case:{case.id}", photos, now)
    await tell_level(case, f"新反映的{KLASS_LABELS[case.klass]}：{case.category_label}，{building.name}。"
                           f"{('请于' + when_zh(case.due_at) + '前办结。') if case.due_at else '已列入议事会议程。'}"
                           "回复“我的待办”查看。", f"assigned:{case.assignment}", now)
    return case


async def join_case(case_id: int, resident: Resident, now: datetime) -> Case:
    """"Me too": follow the case; each join raises its priority. Joining twice is one join."""
    async with in_transaction():
        case = await Case.select_for_update().get_or_none(id=case_id)
        if case is None or case.klass == Klass.PRIVATE or case.community_id != resident.community_id:  # type: ignore[attr-defined]
            raise NotFound("没有找到这件事。")
        if case.status not in LIVE:
            raise UserFacingError("这件事已经办结了。如果问题还在，请重新反映。")
        if await CaseFollower.filter(case_id=case.id, resident_id=resident.id).exists():
            return case
        await CaseFollower.create(case=case, resident=resident, kind="joiner", created_at=now)
        case.joins += 1
        case.updated_at = now
        await case.save(update_fields=["joins", "updated_at"])
        await record(case, EventKind.JOINED, now, actor_id=resident.id, label="居民", public=True, joins=case.joins)
    return case


# ---------------------------------------------------------------------------- a handler's steps


async def _locked(case_id: int) -> Case:
    case = await Case.select_for_update().get_or_none(id=case_id)
    if case is None:
        raise NotFound("没有找到这件事。")
    return case


async def _as_handler(case: Case, actor_id: int) -> None:
    if not await may_handle(actor_id, case):
        if await handling_levels(actor_id, case):
            raise UserFacingError(f"这件事现在由{handler_label(case)}处理。")
        raise NotFound("没有找到这件事。")


def _live(case: Case) -> None:
    if case.status not in LIVE:
        raise UserFacingError(f"这件事{STATUS_LABELS[case.status]}。")


async def accept(case_id: int, actor_id: int, now: datetime) -> Case:
    async with in_transaction():
        case = await _locked(case_id)
        await _as_handler(case, actor_id)
        _live(case)
        if case.status == Status.IN_PROGRESS:
            raise UserFacingError("这件事已经受理了。")
        case.status = Status.IN_PROGRESS
        case.accepted_at = case.accepted_at or now
        case.updated_at = now
        await case.save(update_fields=["status", "accepted_at", "updated_at"])
        await record(case, EventKind.ACCEPTED, now, actor_id=actor_id, label=handler_label(case), public=True)
    await tell_followers(case, f"已受理，{promise_text(case)}。", f"accepted:{case.assignment}", now)
    return case


async def ask_info(case_id: int, actor_id: int, question: str, now: datetime) -> Case:
    """Ask the reporter for more information: a pending prompt they answer in chat."""
    question = question.strip()
    if not question or len(question) > NOTE_MAX:
        raise UserFacingError(f"请写下要问居民的问题（{NOTE_MAX}字以内）。")
    async with in_transaction():
        case = await _locked(case_id)
        await _as_handler(case, actor_id)
        _live(case)
        if case.reporter_id is None:  # type: ignore[attr-defined]
            raise UserFacingError("这件事没有可联系的反映人（例如热线来电），请电话联系。")
        voices = await follower_ids(case, joiners=False)  # the reporter and the proxy who reported for them
        accounts = await WechatAccount.filter(resident_id__in=voices, channel__in=("oa", "chat"))
        # a mini-program user reads the question in the case's view and answers there
        if not accounts and not await WechatAccount.filter(resident_id__in=voices, channel="mp").exists():
            raise UserFacingError("反映人没有绑定微信，请电话联系。")
        event = await record(case, EventKind.INFO_REQUESTED, now, actor_id=actor_id, label=handler_label(case),
                             note=question)
    text = f"【说事 编号{case.number}】{handler_label(case)}想了解更多情况：{question}"
    asked = Question(text + "\n请直接回复文字（也可以发语音）。", "text", max_len=NOTE_MAX)
    for account in accounts:
        await push_prompt(openid=account.openid, flow=INFO_FLOW, step=INFO_STEP, question=asked,
                          data={"case_id": case.id, "event_id": event.id}, now=now, days=CONTEXT.prompt_days,
                          subject=f"case:{case.id}:info")
    return case


INFO_FLOW, INFO_STEP = "case_info", "answer"  # handlers/cases.py answers a handler's question
FEEDBACK_FLOW, FEEDBACK_STEP = "case_feedback", "fixed"  # and the question after a resolution


async def give_info(case_id: int, resident_id: int, text: str, now: datetime) -> Case:
    """The reporter's answer to a handler's question, passed on to the level in charge."""
    text = text.strip()[:NOTE_MAX]
    async with in_transaction():
        case = await _locked(case_id)
        if not await speaks_for(case, resident_id):
            raise NotFound("没有找到这件事。")
        _live(case)
        event = await record(case, EventKind.INFO_GIVEN, now, actor_id=resident_id, label="居民", note=text)
        await withdraw_prompts(f"case:{case.id}:info", now)
    await tell_level(case, f"居民补充：{text}", f"info:{event.id}", now)
    return case


async def progress(case_id: int, actor_id: int, note: str, now: datetime,
                   photos: list[dict[str, Any]] | None = None) -> Case:
    """A handler's progress note (and photos); the reporter hears it."""
    note = note.strip()
    if not note or len(note) > NOTE_MAX:
        raise UserFacingError(f"请写下进展（{NOTE_MAX}字以内）。")
    if len(photos or []) > PHOTOS_MAX:
        raise UserFacingError(f"最多 {PHOTOS_MAX} 张照片。")
    async with in_transaction():
        case = await _locked(case_id)
        await _as_handler(case, actor_id)
        _live(case)
        if case.status == Status.OPEN:  # recording progress is taking it
            case.status = Status.IN_PROGRESS
            case.accepted_at = case.accepted_at or now
            await record(case, EventKind.ACCEPTED, now, actor_id=actor_id, label=handler_label(case), public=True)
        case.updated_at = now
        await case.save(update_fields=["status", "accepted_at", "updated_at"])
        event = await record(case, EventKind.PROGRESS, now, actor_id=actor_id, label=handler_label(case), note=note,
                             photos=list(photos or []))
        await _keep_later(f"event:{event.id}", event.data["photos"], now)
    await tell_followers(case, f"处理进展：{note}", f"progress:{event.id}", now, joiners=False)
    return case


async def resolve(case_id: int, actor_id: int, summary: str, now: datetime) -> Case:
    """Resolve with a short public summary; the reporter and joiners are asked whether it is fixed."""
    summary = summary.strip()
    if not summary or len(summary) > SUMMARY_MAX:
        raise UserFacingError(f"请写一句办理结果（{SUMMARY_MAX}字以内，会向居民公开，请勿写个人信息）。")
    async with in_transaction():
        case = await _locked(case_id)
        await _as_handler(case, actor_id)
        _live(case)
        case.status = Status.RESOLVED
        case.accepted_at = case.accepted_at or now
        case.resolved_at = now
        case.resolved_in_time = case.due_at is None or now <= case.due_at
        case.summary = summary
        case.updated_at = now
        await case.save()
        await cancel_actions("case.deadline", f"case:{case.id}")
        await record(case, EventKind.RESOLVED, now, actor_id=actor_id, label=handler_label(case), note=summary,
                     public=True)
        await schedule_action("case.unrated", f"case:{case.id}", now + timedelta(days=CONTEXT.feedback_days), now,
                              key=f"case.unrated:{case.id}:{case.reopened}")
    await _ask_feedback(case, now)
    return case


def feedback_question(case: Case) -> Question:
    return choice(f"【说事 编号{case.number}】您反映的{case.category_label}问题已办结：{case.summary}\n问题解决了吗？",
                  [(Fixed.YES, "已解决"), (Fixed.PARTLY, "部分解决"), (Fixed.NO, "没有解决")])


async def _ask_feedback(case: Case, now: datetime) -> None:
    question = feedback_question(case)
    ids = await follower_ids(case)
    for account in await WechatAccount.filter(resident_id__in=ids, channel__in=("oa", "chat")):
        await push_prompt(openid=account.openid, flow=FEEDBACK_FLOW, step=FEEDBACK_STEP, question=question,
                          data={"case_id": case.id, "round": case.reopened}, now=now, days=CONTEXT.feedback_days,
                          subject=f"case:{case.id}:feedback")


async def _escalate(case: Case, rules: CaseRules, now: datetime, *, actor_id: int | None, reason: str,
                    missed: bool) -> bool:
    """Move a live case one level up its chain (False at the top). The caller holds the row lock."""
    chain = rules.chains[case.klass]
    above = await _next_level(case, chain)
    if missed:
        case.missed_deadlines += 1
    if above is None:
        case.updated_at = now
        await case.save()
        await record(case, EventKind.OVERDUE, now, actor_id=actor_id, label="系统", note=reason)
        return False
    before = case.level
    case.escalations += 1
    await _assign(case, above, rules, now)
    await record(case, EventKind.ESCALATED, now, actor_id=actor_id, label=LEVEL_LABELS.get(before, "系统")
                 if actor_id else "系统", note=reason, public=True, before=before, after=above, missed=missed)
    return True


async def pass_up(case_id: int, actor_id: int, reason: str, now: datetime) -> Case:
    """A handler passes the case to the next level (with a reason the next level reads)."""
    reason = reason.strip()
    if not reason or len(reason) > REASON_MAX:
        raise UserFacingError(f"请写明上报原因（{REASON_MAX}字以内）。")
    async with in_transaction():
        case = await _locked(case_id)
        await _as_handler(case, actor_id)
        _live(case)
        before = case.level
        if not await _escalate(case, await rules_of(case.community_id), now, actor_id=actor_id,  # type: ignore[attr-defined]
                               reason=reason, missed=False):
            raise UserFacingError("这已经是最高一级，不能再上报了。")
    await _tell_escalated(case, before, reason, now)
    return case


async def _tell_escalated(case: Case, before: str, reason: str, now: datetime) -> None:
    await tell_level(case, f"由{LEVEL_LABELS.get(before, before)}上报：{case.category_label}"
                           f"（{reason}）。{('请于' + when_zh(case.due_at) + '前办结。') if case.due_at else ''}"
                           "回复“我的待办”查看。", f"assigned:{case.assignment}", now)
    await tell_followers(case, f"已转交{handler_label(case)}处理"
                               f"{('，' + when_zh(case.due_at) + '前给您答复') if case.due_at else ''}。",
                         f"escalated:{case.assignment}", now)


async def reclassify(case_id: int, actor_id: int, klass: str, reason: str, now: datetime) -> Case:
    """Change the class (grid worker of its grid, its current handler or community staff), with a
    reason; the case starts again at the first level of the new chain."""
    reason = reason.strip()
    if klass not in KLASS_LABELS:
        raise UserFacingError("分类只能是私事、小事或大事。")
    if not reason or len(reason) > REASON_MAX:
        raise UserFacingError(f"请写明改分类的原因（{REASON_MAX}字以内）。")
    async with in_transaction():
        case = await _locked(case_id)
        levels = await handling_levels(actor_id, case)
        if not levels & {Level.GRID, Level.COMMUNITY, case.level}:
            raise NotFound("没有找到这件事。")
        _live(case)
        if case.klass == klass:
            raise UserFacingError(f"这件事已经是{KLASS_LABELS[klass]}。")
        before = case.klass
        case.klass = klass
        rules = await rules_of(case.community_id)  # type: ignore[attr-defined]
        if before == Klass.BIG:
            await drop_from_agenda(case, f"改为{KLASS_LABELS[klass]}", now, by_id=actor_id)
        await _assign(case, await _first_level(case, rules.chains[klass]), rules, now)
        await record(case, EventKind.CLASSIFIED, now, actor_id=actor_id, label=await _actor_label(actor_id, case),
                     note=reason, before=before, after=klass)
    await tell_level(case, f"改为{KLASS_LABELS[klass]}交您处理：{case.category_label}（{reason}）。"
                           "回复“我的待办”查看。", f"assigned:{case.assignment}", now)
    await tell_followers(case, f"已改由{handler_label(case)}处理。", f"classified:{case.assignment}", now,
                         joiners=False)
    return case


async def ask_in_person(case_id: int, resident_id: int, now: datetime) -> AgendaItem:
    """The reporter asks to raise the case in person at the next session."""
    async with in_transaction():
        case = await _locked(case_id)
        if case.reporter_id != resident_id:  # type: ignore[attr-defined]
            raise NotFound("没有找到这件事。")
        _live(case)
        if case.klass == Klass.PRIVATE:
            raise UserFacingError("私事由调解员上门处理，不在议事会上公开讨论。")
        case.in_person = True
        await case.save(update_fields=["in_person"])
        item = await add_to_agenda(case, AgendaReason.IN_PERSON, now)
        await record(case, EventKind.IN_PERSON, now, actor_id=resident_id, label="居民")
    return item


async def feedback(case_id: int, resident_id: int, fixed: str, now: datetime, *, rating: int | None = None,
                   comment: str = "") -> Case:
    """A follower's answer after a resolution. "Not fixed" reopens the case to the same level with
    the resident's words; the reporter's rating closes it (a joiner's is kept for the figures)."""
    if fixed not in FIXED_LABELS:
        raise UserFacingError("请回答：已解决、部分解决或没有解决。")
    if rating is not None and not 1 <= rating <= 5:
        raise UserFacingError("评分是 1 到 5 分。")
    comment = comment.strip()[:NOTE_MAX]
    if fixed == Fixed.NO and not comment:
        raise UserFacingError("请说说哪里还没有解决。")
    reopened = False
    async with in_transaction():
        case = await _locked(case_id)
        follower = await CaseFollower.get_or_none(case_id=case.id, resident_id=resident_id)
        as_reporter = (follower is not None and follower.kind == "reporter") or await speaks_for(case, resident_id)
        if follower is None and not as_reporter:
            raise NotFound("没有找到这件事。")
        if case.status != Status.RESOLVED:
            raise UserFacingError("这件事现在不需要评价。" if case.status != Status.CLOSED else "这件事已经评价过了。")
        if await CaseFeedback.filter(case_id=case.id, resident_id=resident_id, round=case.reopened).exists():
            raise UserFacingError("您已经评价过了，谢谢！")
        await CaseFeedback.create(case=case, resident_id=resident_id, round=case.reopened, fixed=fixed,
                                  rating=None if fixed == Fixed.NO else rating, comment=comment, created_at=now)
        await record(case, EventKind.FEEDBACK, now, actor_id=resident_id, label="居民", note=comment, fixed=fixed,
                     rating=rating)
        if fixed == Fixed.NO:
            await withdraw_prompts(f"case:{case.id}:feedback", now)
            await cancel_actions("case.unrated", f"case:{case.id}")
            case.reopened += 1
            case.resolved_at = None
            case.resolved_in_time = False
            rules = await rules_of(case.community_id)  # type: ignore[attr-defined]
            case.status = Status.IN_PROGRESS
            await restart_deadline(case, deadline(now, rules.days_for(case.level, case.category), rules), now)
            case.updated_at = now
            await case.save()
            # public without the words: they are in the feedback event, which joiners never see
            await record(case, EventKind.REOPENED, now, actor_id=resident_id, label="居民", public=True)
            reopened = True
        elif as_reporter and rating is not None:
            await _close(case, rating, now)
    if reopened:
        await tell_level(case, f"居民反馈没有解决，已退回重办：{comment}。请于{when_zh(case.due_at)}前办结。",
                         f"reopened:{case.reopened}", now)
    return case


async def _close(case: Case, rating: int | None, now: datetime) -> None:
    await withdraw_prompts(f"case:{case.id}:feedback", now)
    await cancel_actions("case.unrated", f"case:{case.id}")
    case.status = Status.CLOSED
    case.rating = rating
    case.closed_at = now
    case.closed_reason = "rated" if rating is not None else "unrated"
    case.updated_at = now
    await case.save()
    await record(case, EventKind.CLOSED, now, label="系统", public=True, reason=case.closed_reason, rating=rating)


# ---------------------------------------------------------------------------- lists


async def cases_of(resident_id: int, *, limit: int = 20) -> list[Case]:
    """The cases a resident reported or joined, newest first."""
    ids = await CaseFollower.filter(resident_id=resident_id).values_list("case_id", flat=True)
    return await Case.filter(id__in=list(ids)).prefetch_related("building").order_by("-id").limit(limit)


async def queue_of(actor_id: int, now: datetime, *, limit: int = 50) -> list[Case]:
    """The live cases at a level the actor holds: overdue first, then most joined, then oldest."""
    roles = [r for r in await active_roles(actor_id) if r.role in ROLE_LEVELS]
    if not roles:
        return []
    parts = []
    for role in roles:
        level = ROLE_LEVELS[role.role]
        if level in (Level.MEDIATOR, Level.GRID):
            part = Q(level=level, grid_id=role.grid_id)  # type: ignore[attr-defined]
        elif level in (Level.PROPERTY, Level.COMMUNITY):
            part = Q(level=level, community_id=role.community_id)  # type: ignore[attr-defined]
        else:
            part = Q(level=level, community__sub_district_id=role.sub_district_id)  # type: ignore[attr-defined]
        parts.append(part)
    rows = await Case.filter(Q(*parts, join_type="OR"), status__in=LIVE).prefetch_related("building").limit(500)

    def order(case: Case) -> tuple[int, int, int]:
        overdue = case.due_at is not None and case.due_at < now
        return (0 if overdue else 1, -case.joins, case.id)

    return sorted(rows, key=order)[:limit]


def is_overdue(case: Case, now: datetime) -> bool:
    return case.status in LIVE and case.due_at is not None and case.due_at < now


# ---------------------------------------------------------------------------- the agenda (built here, run
# by models/case_sessions.py)


async def add_to_agenda(case: Case, reason: str, now: datetime, *, by_id: int | None = None,
                        note: str = "", session: DeliberationSession | None = None) -> AgendaItem:
    """Put the case on the next session of its community, or on ``session`` (a session of the
    case's community that staff chose); once per session, and a dropped item comes back."""
    if session is None:
        day = next_session_day(local_today(now))
        session, _ = await DeliberationSession.get_or_create(community_id=case.community_id, day=day,  # type: ignore[attr-defined]
                                                             defaults={"created_at": now})
    item = await AgendaItem.get_or_none(session_id=session.id, case_id=case.id)
    if item is None:
        item = await AgendaItem.create(session=session, case=case, reason=reason, added_by_id=by_id,
                                       added_note=note[:REASON_MAX], added_at=now)
    elif item.dropped_at is not None:
        # back on the agenda: stamped with this addition (the drop stays in the case's events)
        item.dropped_at, item.dropped_by_id, item.dropped_reason = None, None, ""
        item.reason, item.added_by_id, item.added_note, item.added_at = reason, by_id, note[:REASON_MAX], now
        await item.save(update_fields=["dropped_at", "dropped_by_id", "dropped_reason", "reason", "added_by_id",
                                       "added_note", "added_at"])
    else:
        return item
    await record(case, EventKind.AGENDA, now, actor_id=by_id, label="系统" if by_id is None else "社区",
                 note=note, public=True, session_day=session.day.isoformat(), added=True, reason=reason)
    return item


async def agenda_day(case_id: int) -> date | None:
    """The day of the coming session the case is on (not dropped, not held yet), if any."""
    item = await AgendaItem.filter(case_id=case_id, dropped_at=None, session__held_at=None).order_by(
        "session__day").prefetch_related("session").first()
    return item.session.day if item else None


async def drop_from_agenda(case: Case, reason: str, now: datetime, *, by_id: int | None = None) -> int:
    """Take the case off every upcoming session that has not been held."""
    today = local_today(now)
    items = await AgendaItem.filter(case_id=case.id, dropped_at=None, session__held_at=None,
                                    session__day__gte=today)
    for item in items:
        item.dropped_at, item.dropped_by_id, item.dropped_reason = now, by_id, reason[:REASON_MAX]
        await item.save(update_fields=["dropped_at", "dropped_by_id", "dropped_reason"])
        await record(case, EventKind.AGENDA, now, actor_id=by_id, label="社区", note=reason, public=False,
                     added=False)
    return len(items)


# ---------------------------------------------------------------------------- due actions


def _case_id(target: str) -> int:
    return int(target.removeprefix("case:"))


@register_action("case.deadline")
async def _deadline_passed(target: str, now: datetime) -> None:
    """The level in charge missed its deadline: one level up, that level told, the residents too."""
    async with in_transaction():
        case = await Case.select_for_update().get_or_none(id=_case_id(target))
        if case is None or case.status not in LIVE or case.due_at is None or case.due_at > now:
            return  # resolved meanwhile, or a newer deadline runs
        before = case.level
        rules = await rules_of(case.community_id)  # type: ignore[attr-defined]
        moved = await _escalate(case, rules, now, actor_id=None, reason="超过办理期限", missed=True)
    if moved:
        await _tell_escalated(case, before, f"{LEVEL_LABELS.get(before, before)}超过办理期限未办结", now)
    else:
        await tell_level(case, "已超过办理期限，请尽快办结。", f"overdue:{case.assignment}:{case.missed_deadlines}",
                         now)


@register_action("case.unrated")
async def _feedback_time_over(target: str, now: datetime) -> None:
    """Nobody rated in time: closed with the first rating a joiner gave, else as unrated."""
    async with in_transaction():
        case = await Case.select_for_update().get_or_none(id=_case_id(target))
        if case is None or case.status != Status.RESOLVED:
            return
        given = await CaseFeedback.filter(case_id=case.id, round=case.reopened).exclude(rating=None).order_by(
            "id").first()
        await _close(case, given.rating if given else None, now)


# ---------------------------------------------------------------------------- photos

PHOTOS_ACTION = "case.photos"


async def _keep_later(target: str, photos: list[dict[str, Any]], now: datetime) -> None:
    """Fetch the photos into our store at the next sweep (within a minute), while WeChat has them."""
    if any(not media.settled(p) for p in photos):
        await schedule_action(PHOTOS_ACTION, target, now, now, key=f"{PHOTOS_ACTION}:{target}")


async def keep_photos(target: str, now: datetime) -> list[dict[str, Any]]:
    """Store the photos of a case (``case:ID``) or of a progress note (``event:ID``) that are not
    stored yet, and write each outcome back: the stored copy's id, or why it is lost. The first
    failure worth another try is raised once the rest is written, so the sweep tries again later
    (a few times, with backoff); an expired or refused photo is settled as lost at once."""
    kind, _, raw = target.partition(":")
    if kind == "case":
        case = await Case.get_or_none(id=int(raw))
        if case is None:
            return []
        kept, error = await media.keep(case.photos, now)  # the network outside any transaction
        if kept != case.photos:
            async with in_transaction():
                case = await Case.select_for_update().get(id=case.id)
                case.photos = media.merge(case.photos, kept)
                await case.save(update_fields=["photos"])
    else:
        event = await CaseEvent.get_or_none(id=int(raw))
        if event is None:
            return []
        kept, error = await media.keep(list(event.data.get("photos", [])), now)
        if kept != event.data.get("photos"):
            async with in_transaction():
                event = await CaseEvent.select_for_update().get(id=event.id)
                event.data = {**event.data, "photos": media.merge(list(event.data.get("photos", [])), kept)}
                await event.save(update_fields=["data"])
    if error is not None:
        raise error
    return kept


async def _photos_at(target: str) -> list[dict[str, Any]]:
    kind, _, raw = target.partition(":")
    if kind == "case":
        case = await Case.get(id=int(raw))
        return case.photos
    event = await CaseEvent.get(id=int(raw))
    return list(event.data.get("photos", []))


@register_action(PHOTOS_ACTION)
async def _photos_due(target: str, now: datetime) -> None:
    await keep_photos(target, now)


async def photo_of(case: Case, number: int, now: datetime, *, event_id: int | None = None) -> media.StoredMedia:
    """The stored copy of the ``number``-th photo (from 1) of the case, or of one of its progress
    notes; one not stored yet is fetched now (the sweep may not have come by). NotFound when there
    is no such photo or it was lost; UserFacingError when it cannot be fetched at the moment."""
    if event_id is not None and not await CaseEvent.filter(id=event_id, case_id=case.id).exists():
        raise NotFound("没有找到这条记录。")
    target = f"case:{case.id}" if event_id is None else f"event:{event_id}"
    photos = await _photos_at(target)
    if not 1 <= number <= len(photos):
        raise NotFound("没有这张照片。")
    photo = photos[number - 1]
    if not media.settled(photo):
        try:
            await keep_photos(target, now)
        except Exception:  # another photo's failure, maybe: what this one became is read back below
            log.warning("fetching the photos of %s failed", target, exc_info=True)
        photo = (await _photos_at(target))[number - 1]
        if not media.settled(photo):
            raise UserFacingError("照片还在保存，请稍后再看。")
    row = await media.load(int(photo["stored"])) if "stored" in photo else None
    if row is None:
        raise NotFound("这张照片已过期，没能保存下来。")
    return row


# ---------------------------------------------------------------------------- personal data

PHOTOS_EXPIRED = "retention"  # why a photo is gone: its case was closed longer ago than privacy.case_photos_days


def _forget(photos: list[dict[str, Any]], now: datetime) -> tuple[list[dict[str, Any]], set[int]]:
    """The photos without their stored copies (marked lost by retention), and the ids dropped."""
    dropped = {int(p["stored"]) for p in photos if "stored" in p}
    kept = [{k: v for k, v in p.items() if k not in ("stored", "media_id", "pic_url")}
            | {"lost": PHOTOS_EXPIRED, "lost_at": now.isoformat()} if "stored" in p else p for p in photos]
    return kept, dropped


async def forget_photos(closed_before: datetime, now: datetime) -> int:
    """Delete the stored photos of cases closed before ``closed_before`` (and of their progress
    notes); the case's text, summary, events and figures stay. A copy another case still shows is
    kept. Returns how many stored photos were deleted."""
    dropped: set[int] = set()
    async with in_transaction():
        for case in await Case.filter(status=Status.CLOSED, closed_at__lt=closed_before).select_for_update():
            if any("stored" in p for p in case.photos):
                case.photos, ids = _forget(case.photos, now)
                dropped |= ids
                await case.save(update_fields=["photos"])
            for event in await CaseEvent.filter(case_id=case.id, kind=EventKind.PROGRESS):
                photos = list(event.data.get("photos", []))
                if any("stored" in p for p in photos):
                    kept, ids = _forget(photos, now)
                    dropped |= ids
                    event.data = {**event.data, "photos": kept}
                    await event.save(update_fields=["data"])
        if not dropped:
            return 0
        still: set[int] = set()  # identical bytes are stored once: another case may show the same copy
        for shown in await Case.all().values_list("photos", flat=True):
            still |= {int(p["stored"]) for p in cast(list[dict[str, Any]], shown or []) if "stored" in p}
        for data in await CaseEvent.filter(kind=EventKind.PROGRESS).values_list("data", flat=True):
            still |= {int(p["stored"]) for p in cast(dict[str, Any], data).get("photos", []) if "stored" in p}
        return await media.StoredMedia.filter(id__in=sorted(dropped - still)).delete()



@register_hold
async def _open_case_hold(resident_id: int) -> str | None:
    """A resident whose report is still being handled keeps their name and contact: the handler may
    need to reach them, and the case must be rated or closed first."""
    if await Case.filter(reporter_id=resident_id, status__in=(*LIVE, Status.RESOLVED)).exists():
        return "有未办结的说事"
    return None
