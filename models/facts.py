"""What a resident declares about themselves: date of birth and statuses, pending until verified.

Prices, priority and door visits depend on age and statuses, so only *verified* facts count
anywhere: ``verified_statuses`` and ``verified_age`` are the only readers other flows use. A
resident (or their family proxy) declares; community staff verify or reject with a reason.
Staff entries and the community's own spreadsheet count as verified at once.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import TYPE_CHECKING, Any

from tortoise import fields
from tortoise.models import Model
from tortoise.transactions import in_transaction

from models.errors import NotFound, UserFacingError

if TYPE_CHECKING:
    from models.residents import Resident

BIRTH_DATE = "birth_date"

# Status code → what residents and staff read.
STATUSES: dict[str, str] = {
    "dibao": "低保",
    "tekun": "特困",
    "guagua": "孤寡",
    "shidu": "失独",
    "veteran": "退伍军人",
    "model_worker": "劳模",
    "advanced_worker": "先进工作者",
    "disabled": "残疾",
    "lives_alone": "独居",
    "party_member": "党员",
}
STATUS_CODES = {label: code for code, label in STATUSES.items()}

# Shown only to roles that need them; masked in logs and exports otherwise (PIPL sensitive data:
# financial hardship, health, family loss, living alone).
SENSITIVE_STATUSES = frozenset({"dibao", "tekun", "guagua", "shidu", "disabled", "lives_alone"})


class FactState:
    PENDING = "pending"
    VERIFIED = "verified"
    REJECTED = "rejected"
    SUPERSEDED = "superseded"  # declared again, or withdrawn
    ENDED = "ended"  # a status that no longer holds (staff ended it)


LIVE_STATES = (FactState.PENDING, FactState.VERIFIED)


class ResidentFact(Model):
    """One declared fact: the date of birth, or one status. Decisions stamp the row."""

    _no_comments = True  # see models/__init__.py

    id = fields.IntField(primary_key=True)
    resident: fields.ForeignKeyRelation[Resident] = fields.ForeignKeyField(
        "linli.Resident", related_name="facts", on_delete=fields.CASCADE
    )
    code = fields.CharField(max_length=24)  # birth_date or a status code
    value = fields.CharField(max_length=32, default="")  # ISO date for birth_date
    state = fields.CharField(max_length=12, default=FactState.PENDING)
    source = fields.CharField(max_length=12, default="self")  # self | proxy | staff | import
    declared_by: fields.ForeignKeyNullableRelation[Resident] = fields.ForeignKeyField(
        "linli.Resident", related_name="facts_declared", null=True, on_delete=fields.SET_NULL
    )
    declared_at = fields.DatetimeField()
    decided_by: fields.ForeignKeyNullableRelation[Resident] = fields.ForeignKeyField(
        "linli.Resident", related_name="facts_decided", null=True, on_delete=fields.SET_NULL
    )
    decided_at = fields.DatetimeField(null=True)
    reason = fields.CharField(max_length=100, default="")

    class Meta:
        table = "resident_fact"
        indexes = (("resident_id", "code", "state"),)

    @property
    def label(self) -> str:
        return "出生日期" if self.code == BIRTH_DATE else STATUSES.get(self.code, self.code)

    @property
    def sensitive(self) -> bool:
        return self.code in SENSITIVE_STATUSES


def parse_birth_date(text: str, today: date) -> date:
    """A plausible date of birth from 1950-03-08, 1950/3/8, 19500308 or 1950年3月8日."""
    cleaned = text.strip().replace("年", "-").replace("月", "-").replace("日", "").replace("/", "-").replace(".", "-")
    try:
        if "-" in cleaned:
            y, m, d = (int(part) for part in cleaned.split("-"))
            value = date(y, m, d)
        elif len(cleaned) == 8 and cleaned.isdigit():
            value = date(int(cleaned[:4]), int(cleaned[4:6]), int(cleaned[6:]))
        else:
            raise ValueError(cleaned)
    except ValueError:
        raise UserFacingError("出生日期格式不对，请按“1950-03-08”这样填写。") from None
    if not date(today.year - 120, 1, 1) <= value <= today:
        raise UserFacingError("出生日期不在合理范围内，请核对。")
    return value


def check_code(code: str) -> str:
    if code != BIRTH_DATE and code not in STATUSES:
        raise UserFacingError(f"没有这一项：{code}")
    return code


async def declare(
    *, resident_id: int, code: str, now: datetime, value: str = "", by_id: int | None,
    source: str = "self", verified: bool = False,
) -> ResidentFact:
    """Declare a fact; it replaces a live declaration of the same item. ``verified`` for staff entries.

    Declaring what is already verified with the same value changes nothing.
    """
    check_code(code)
    async with in_transaction():
        live = await ResidentFact.select_for_update().filter(
            resident_id=resident_id, code=code, state__in=LIVE_STATES
        ).order_by("-id")
        for fact in live:
            if fact.value == value and (fact.state == FactState.VERIFIED or not verified):
                return fact
        for fact in live:
            fact.state = FactState.SUPERSEDED
            await fact.save(update_fields=["state"])
        return await ResidentFact.create(
            resident_id=resident_id, code=code, value=value, source=source, declared_by_id=by_id,
            declared_at=now, state=FactState.VERIFIED if verified else FactState.PENDING,
            decided_by_id=by_id if verified else None, decided_at=now if verified else None,
        )


async def decide(*, fact_id: int, by_id: int, approve: bool, now: datetime, reason: str = "") -> ResidentFact:
    """Verify or reject a pending fact (callers check the role); deciding twice changes nothing."""
    async with in_transaction():
        fact = await ResidentFact.select_for_update().get_or_none(id=fact_id)
        if fact is None:
            raise NotFound("没有找到这条待核实信息。")
        if fact.state != FactState.PENDING:
            return fact
        if not approve and not reason.strip():
            raise UserFacingError("不通过时请写明原因，居民会看到。")
        fact.state = FactState.VERIFIED if approve else FactState.REJECTED
        fact.decided_by_id = by_id
        fact.decided_at = now
        fact.reason = reason.strip()[:100]
        await fact.save(update_fields=["state", "decided_by_id", "decided_at", "reason"])
        return fact


async def end_status(*, fact_id: int, by_id: int, now: datetime, reason: str) -> ResidentFact:
    """A verified status no longer holds (staff); the row stays for the record."""
    async with in_transaction():
        fact = await ResidentFact.select_for_update().get_or_none(id=fact_id)
        if fact is None:
            raise NotFound("没有找到这条信息。")
        if fact.state in LIVE_STATES:
            fact.state = FactState.ENDED
            fact.decided_by_id = by_id
            fact.decided_at = now
            fact.reason = reason.strip()[:100]
            await fact.save(update_fields=["state", "decided_by_id", "decided_at", "reason"])
        return fact


async def live_facts(resident_id: int) -> list[ResidentFact]:
    return await ResidentFact.filter(resident_id=resident_id, state__in=LIVE_STATES).order_by("code", "id")


async def verified_statuses(resident_id: int) -> set[str]:
    """The statuses that count: verified ones only."""
    codes = await ResidentFact.filter(
        resident_id=resident_id, state=FactState.VERIFIED
    ).exclude(code=BIRTH_DATE).values_list("code", flat=True)
    return {str(code) for code in codes}


async def verified_birth_date(resident_id: int) -> date | None:
    value: Any = await ResidentFact.filter(
        resident_id=resident_id, code=BIRTH_DATE, state=FactState.VERIFIED
    ).order_by("-id").first().values_list("value", flat=True)
    return date.fromisoformat(value) if value else None


def age_on(birth: date, day: date) -> int:
    return day.year - birth.year - ((day.month, day.day) < (birth.month, birth.day))


async def verified_age(resident_id: int, day: date) -> int | None:
    """Age on ``day`` from the verified date of birth; None when none is verified."""
    birth = await verified_birth_date(resident_id)
    return None if birth is None else age_on(birth, day)


SHOWN_STATES = (FactState.PENDING, FactState.VERIFIED, FactState.REJECTED)


def _item_order(fact: ResidentFact) -> int:
    order = [BIRTH_DATE, *STATUSES]
    return order.index(fact.code) if fact.code in order else len(order)


async def current_facts(resident_id: int) -> list[ResidentFact]:
    """Per item, the latest declaration and where it stands (pending, verified, or rejected with its
    reason), for showing the resident; the date of birth first, then statuses in STATUSES order.

    An item whose latest row was superseded or ended is left out: it no longer holds.
    """
    latest: dict[str, ResidentFact] = {}
    for fact in await ResidentFact.filter(resident_id=resident_id).order_by("id"):
        latest[fact.code] = fact
    return sorted((f for f in latest.values() if f.state in SHOWN_STATES), key=_item_order)


async def facts_to_verify(actor_id: int) -> list[ResidentFact]:
    """Pending declarations the actor may decide (a verifying role in the resident's scope), oldest first."""
    from models.roles import active_roles, resident_place

    roles = [r for r in await active_roles(actor_id) if r.spec.verifies]
    if not roles:
        return []
    pending = await ResidentFact.filter(state=FactState.PENDING, resident__erased_at__isnull=True).order_by(
        "id").prefetch_related("resident")
    out = []
    for fact in pending:
        place = await resident_place(fact.resident)
        if any(place.within(role) for role in roles):
            out.append(fact)
    return out


async def pending_facts(resident_ids: list[int] | None = None) -> list[ResidentFact]:
    query = ResidentFact.filter(state=FactState.PENDING)
    if resident_ids is not None:
        query = query.filter(resident_id__in=resident_ids)
    return await query.order_by("id").prefetch_related("resident")
