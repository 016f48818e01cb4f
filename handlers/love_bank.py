"""爱心银行 in chat: the hub, 积分 (balance, this month, the last entries, being named in the
rankings) and staff's 积分数据; through /api/v1 the same points, each community's settings, staff
corrections (reversals and adjustments), the figures and one volunteer's statement.

The other love-bank flows (兑换, 活动, 心愿, 转赠) live in their own modules; the hub offers those
that are registered.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Literal
from zoneinfo import ZoneInfo

from pydantic import BaseModel, Field, field_validator

from bot.api import (
    INT_MAX,
    ApiRequest,
    ApiRouter,
    FileBody,
    Query,
    Strict,
    idempotency_key,
    invalid,
    not_found,
    real_day,
)
from bot.engine import REPLY_MAX_CHARS, Ask, Done, Engine, Flow, Goto, Inbound, choice
from models.ledger import REASON_MAX, SOURCE_LABELS, Account, Entry, Posted, Source, points_of, signed
from models.love_bank import ACTIVITY_TYPES, MAX_RATE, LoveBankSettings, save_settings, set_named, settings_of
from models.love_figures import (
    ADJUST_MAX,
    CORRECTABLE,
    FIGURE_ROLES,
    CommunityFigures,
    LoveFigures,
    Period,
    PointsSummary,
    adjust,
    adjustment_key,
    describe,
    entry_communities,
    figure_unit,
    figure_units,
    figures_xlsx,
    is_community_staff,
    love_figures,
    may_read_points,
    month_start,
    page_of,
    points_summary,
    reverse_entry,
    reversed_ids,
    statement,
    statement_pdf,
    statement_xlsx,
)
from models.places import Community
from models.proxies import record_action
from models.residents import Resident
from models.roles import Role, active_roles

# ---------------------------------------------------------------------------- chat: the hub

hub = Flow("lovebank", "爱心银行", keywords=("爱心银行",), menu_keys=("LOVEBANK",))

# (flow name, label): the love-bank services, offered when their flow is registered
HUB_ITEMS = [("points", "我的积分"), ("redeem", "兑换"), ("activities", "活动"), ("wishes", "心愿"),
             ("donate", "转赠")]


def _whose(resident: Resident, actor: Resident) -> str:
    return "您" if resident.id == actor.id else resident.name


@hub.entry
async def show_hub(resident: Resident, actor: Resident, engine: Engine, now: datetime) -> Ask:
    """The balance and the love-bank services that exist."""
    balance = (await points_of(resident.id, now)).balance
    items = [(name, label) for name, label in HUB_ITEMS if name in engine.flows]
    head = "" if resident.id == actor.id else f"（您正在为{resident.name}代办）\n"
    return Ask("pick", choice(f"{head}爱心银行：{_whose(resident, actor)}的积分余额{balance}分。请选择：", items))


@hub.step("pick")
async def hub_picked(answer: str) -> Goto:
    """Start the chosen love-bank service."""
    return Goto(answer)


# ---------------------------------------------------------------------------- chat: 积分

points = Flow("points", "我的积分", keywords=("积分", "我的积分", "积分查询"))

MEMO_CHARS = 14  # an entry's description in chat is cut to this many characters
NAMED_ON, NAMED_OFF = "named_on", "named_off"


def _day(when: datetime, tz: ZoneInfo) -> str:
    t = when.astimezone(tz)
    return f"{t.month}月{t.day}日"


def _amount(value: int) -> str:
    return f"+{value}" if value > 0 else str(value)


def entry_line(entry: Entry, amount: int, tz: ZoneInfo) -> str:
    what = describe(entry)
    if len(what) > MEMO_CHARS:
        what = what[:MEMO_CHARS - 1] + "…"
    return f"{_day(entry.created_at, tz)} {what} {_amount(amount)}"


def points_question(summary: PointsSummary, whose: str, head: str, tz: ZoneInfo,
                    more: list[tuple[str, str]]) -> Ask:
    """The 积分 reply: balance, this month, the newest entries (as many as the reply holds) and the
    choices; the naming toggle first."""
    toggle = (NAMED_OFF, f"排行榜中不显示{whose}的姓名") if summary.named else \
        (NAMED_ON, f"排行榜中显示{whose}的姓名")
    items = [toggle, *more]
    month = summary.month_first.month
    top = [f"{head}{whose}的积分：{summary.balance}分", f"本月（{month}月）获得：{summary.month_earned}分"]
    named = f"志愿者排行榜：{'显示' if summary.named else '不显示'}{whose}的姓名"
    lines = [entry_line(e, summary.amount(e), tz) for e in summary.entries]
    for shown in range(len(lines), -1, -1):
        body = top + (["最近记录：", *lines[:shown]] if shown else
                      ["还没有积分记录。参加志愿活动、完成微心愿可以获得积分。"] if not lines else [])
        question = choice("\n".join([*body, named, "您可以："]), items)
        if len(question.render()) <= REPLY_MAX_CHARS:
            return Ask("pick", question)
    return Ask("pick", choice("\n".join([*top, "您可以："]), items))  # pragma: no cover - far below the limit


@points.entry
async def show_points(resident: Resident, actor: Resident, engine: Engine, now: datetime, tz: ZoneInfo) -> Ask:
    """The resident's (or the elder's) balance, this month's earnings and the last five entries."""
    summary = await points_summary(resident.id, now, tz)
    head = "" if resident.id == actor.id else f"（您正在为{resident.name}代办）\n"
    more = [(name, label) for name, label in HUB_ITEMS[1:] if name in engine.flows]
    return points_question(summary, _whose(resident, actor), head, tz, more)


@points.step("pick")
async def points_picked(answer: str, resident: Resident, actor: Resident, msg: Inbound, now: datetime) -> Done | Goto:
    """Turn being named in the rankings on or off, or start the chosen service."""
    if answer not in (NAMED_ON, NAMED_OFF):
        return Goto(answer)
    named = answer == NAMED_ON
    await set_named(resident.id, named, now)
    await record_action(actor_id=actor.id, subject_id=resident.id, action="love_bank_named", channel=msg.channel,
                        now=now, detail={"named": named})
    whose = _whose(resident, actor)
    if named:
        return Done(f"好的，志愿者排行榜中将显示{whose}的姓名。回复“积分”可随时更改。")
    return Done(f"好的，志愿者排行榜中不再显示{whose}的姓名，只写“未公开姓名的志愿者”。回复“积分”可随时更改。")


# ---------------------------------------------------------------------------- chat: 积分数据 (staff)

figures_flow = Flow("love_figures", "积分数据", keywords=("积分数据", "爱心银行数据"), roles=FIGURE_ROLES)
CHAT_TOP = 3


def figures_text(figs: LoveFigures, tz: ZoneInfo) -> str:
    """This month's figures in a few lines (and a line per community of a sub-district while it fits)."""
    p, t = figs.period, figs.total
    head = f"{figs.label}{p.first.month}月爱心银行数据（{p.first.month}月{p.first.day}日至{p.last.day}日）："
    lines = [
        head,
        f"服务时长{t.hours:g}小时，发放积分{t.issued}分",
        f"兑换{t.redeemed}分，过期{t.expired}分",
        f"居民积分余额{t.outstanding}分（兑换券占用{t.reserved}分）",
        f"获得积分的志愿者{t.volunteers}人",
    ]
    if figs.top:
        lines.append("排行：" + "；".join(f"{r.rank}. {r.name} {r.points}分" for r in figs.top[:CHAT_TOP]))
    tail = "完整数据和表格请在小程序中查看。"
    below = [f"{c.name}：发放{c.issued}分，兑换{c.redeemed}分，余额{c.outstanding}分"
             for c in figs.communities] if len(figs.communities) > 1 else []
    for shown in range(len(below), -1, -1):
        text = "\n".join([*lines, *below[:shown], tail])
        if len(text) <= REPLY_MAX_CHARS:
            return text
    return "\n".join(lines)  # pragma: no cover - a handful of short lines


@figures_flow.entry
async def show_figures(actor: Resident, now: datetime, tz: ZoneInfo) -> Done:
    """This month's love-bank figures of the staff member's widest unit."""
    units = await figure_units(actor.id)
    if not units:
        return Done("您的角色没有可以查看积分数据的范围。")
    unit = units[0]
    period = Period(month_start(now, tz), now.astimezone(tz).date(), tz)
    return Done(figures_text(await love_figures(unit.communities, period, unit.name), tz))


FLOWS: list[Flow] = [hub, points, figures_flow]


# ---------------------------------------------------------------------------- the API: shapes

api = ApiRouter("love_bank")

XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
PDF = "application/pdf"
Id = Annotated[int, Field(ge=1, le=INT_MAX)]
DAY = r"^20\d{2}-\d{2}-\d{2}$"
ActivityCode = Literal[tuple(t.code for t in ACTIVITY_TYPES)]  # type: ignore[valid-type]
Rate = Annotated[int, Field(ge=0, le=MAX_RATE)]
SOURCES_DOC = "; ".join(f"{code} {label}" for code, label in SOURCE_LABELS.items())


class EntryOut(BaseModel):
    id: int
    at: str = Field(description="ISO 8601")
    source: str = Field(description=SOURCES_DOC)
    source_label: str
    what: str = Field(description="what it is, as the member reads it, e.g. 志愿服务：助老服务")
    amount: int = Field(description="as this member's points see it: positive in, negative out")
    reason: str | None = Field(default=None, description="a correction's reason")
    reverses_id: int | None = Field(default=None, description="the entry this one reverses")
    reversed: bool = Field(description="a later entry reversed this one")


class PointsOut(BaseModel):
    resident_id: int
    name: str
    balance: int = Field(description="points (integers)")
    month_start: str = Field(description="YYYY-MM-DD, the first day of this month (community time)")
    month_earned: int = Field(description="this month's earnings: points from the community minus points "
                                          "given back to it (reversals, corrections)")
    named_in_rankings: bool = Field(description="whether the figures may name this member among top volunteers")
    entries: list[EntryOut] = Field(description="newest first")
    next_before: int | None = Field(description="pass as `before` for the next (older) page; none at the end")


class PointsQuery(Query):
    for_resident_id: Id | None = Field(default=None, description="the points of an elder I act for")
    before: Id | None = Field(default=None, description="entries older than this entry (the previous page's "
                                                        "next_before)")
    limit: int = Field(default=20, ge=1, le=50)


class PreferencesIn(Strict):
    named_in_rankings: bool
    for_resident_id: Id | None = Field(default=None, description="an elder I act for")


class PreferencesOut(BaseModel):
    resident_id: int
    named_in_rankings: bool


class CommunityQuery(Query):
    community_id: Id | None = Field(default=None, description="default: the community the caller is staff of")


class RateOut(BaseModel):
    code: str
    label: str
    points_per_hour: int


class SettingsOut(BaseModel):
    community_id: int
    community: str
    rates: list[RateOut] = Field(description="points per hour of confirmed service, per activity type; a published "
                                             "activity keeps the rate it was published with")
    wish_points: int = Field(description="points a fulfilled micro-wish pays")
    voucher_warn_days: int = Field(description="days before a voucher expires that its owner is reminded")
    updated_at: str | None
    updated_by: str | None


class SettingsIn(Strict):
    """Only what is given changes; an activity type left out of rates keeps its rate."""

    rates: dict[ActivityCode, Rate] | None = Field(  # type: ignore[valid-type]
        default=None, description="activity type code → points per hour (0 to 1000): "
                                  + ", ".join(f"{t.code} {t.label}" for t in ACTIVITY_TYPES))
    wish_points: Rate | None = Field(default=None, description="0 to 1000")
    voucher_warn_days: Annotated[int, Field(ge=0, le=30)] | None = None


class StaffEntryOut(EntryOut):
    actor: str | None = Field(default=None, description="who made it (staff, organiser...), when recorded")
    reversible: bool = Field(description="staff may reverse it (earnings, donations, adjustments not yet "
                                         "reversed; redemptions follow their voucher)")


class EntriesQuery(Query):
    resident_id: Id
    before: Id | None = None
    limit: int = Field(default=20, ge=1, le=50)


class EntriesOut(BaseModel):
    resident_id: int
    name: str
    balance: int
    entries: list[StaffEntryOut] = Field(description="newest first")
    next_before: int | None


class ReverseIn(Strict):
    reason: str = Field(min_length=1, max_length=REASON_MAX)


class AdjustmentIn(Strict):
    resident_id: Id
    amount: int = Field(ge=-ADJUST_MAX, le=ADJUST_MAX, description="points to add (positive) or take back "
                                                                   "(negative), never 0")
    reason: str = Field(min_length=1, max_length=REASON_MAX)
    client_token: str | None = Field(default=None, min_length=1, max_length=64, pattern=r"^[\x21-\x7e]+$",
                                     description="same as the Idempotency-Key header (one of the two is required): "
                                                 "a retry with the same token has no second effect")

    @field_validator("amount")
    @classmethod
    def _not_zero(cls, value: int) -> int:
        if value == 0:
            raise ValueError("must not be 0")
        return value


class BalanceOut(BaseModel):
    resident_id: int
    name: str
    balance: int


class CorrectionOut(BaseModel):
    id: int = Field(description="the new entry")
    at: str
    amount: int = Field(description="points moved (positive)")
    what: str
    reason: str
    reverses_id: int | None
    replayed: bool = Field(description="true when this request had been carried out already: nothing changed now")
    balances: list[BalanceOut] = Field(description="the members the entry touched, after it")


class PeriodQuery(Query):
    from_: str | None = Field(default=None, alias="from", pattern=DAY,
                              description="YYYY-MM-DD, the first day counted (community time)")
    to: str | None = Field(default=None, pattern=DAY, description="YYYY-MM-DD, the last day counted; default today")

    _days = field_validator("from_", "to")(real_day)


class FiguresQuery(PeriodQuery):
    community_id: Id | None = Field(default=None, description="default: the caller's widest unit (a sub-district's "
                                                              "staff get all its communities)")
    format: Literal["json", "xlsx"] = Field(default="json", description="xlsx: the same figures as a spreadsheet")


class FigureRow(BaseModel):
    community_id: int | None = Field(description="none for a sub-district's total")
    name: str
    minutes_served: int = Field(description="confirmed, credited and not reversed minutes of the activities that "
                                            "started in the period")
    hours_served: float = Field(description="minutes_served / 60, one decimal")
    points_issued: int = Field(description="points the community gave members minus points given back (reversals, "
                                           "negative adjustments), in the period")
    points_redeemed: int = Field(description="points of vouchers used in the period (net of reversals)")
    points_expired: int = Field(description="points of vouchers that expired unused in the period")
    points_outstanding: int = Field(description="the sum of the community's residents' balances at the period's end")
    points_reserved: int = Field(description="points in vouchers issued and not yet used, cancelled or expired, at "
                                             "the period's end")
    volunteers: int = Field(description="members who earned points from the community in the period")


class RankOut(BaseModel):
    rank: int
    name: str = Field(description="the volunteer's name if they opted in, else 未公开姓名的志愿者")
    resident_id: int | None = Field(description="only for those named")
    points: int = Field(description="points earned in the period")


class FiguresOut(BaseModel):
    scope: str = Field(description="community | sub_district")
    id: int
    name: str
    first_day: str = Field(description="YYYY-MM-DD, the first day counted (the query's from)")
    last_day: str = Field(description="YYYY-MM-DD, the last day counted (the query's to)")
    total: FigureRow
    communities: list[FigureRow]
    top: list[RankOut] = Field(description="the top 10 volunteers by points earned in the period")


class StatementQuery(PeriodQuery):
    resident_id: Id | None = Field(default=None, description="default: the caller")
    format: Literal["pdf", "xlsx"] = Field(default="pdf")


# ---------------------------------------------------------------------------- the API: helpers




async def _entry_out(entries: list[Entry], account_id: int) -> list[EntryOut]:
    undone = await reversed_ids(e.id for e in entries)
    return [EntryOut(id=e.id, at=e.created_at.isoformat(), source=e.source,
                     source_label=SOURCE_LABELS.get(e.source, e.source), what=describe(e),
                     amount=signed(e, account_id), reason=e.reason or None if e.source == Source.CORRECTION else None,
                     reverses_id=e.reverses_id, reversed=e.id in undone) for e in entries]


def _period(q: PeriodQuery, now: datetime, tz: ZoneInfo, default_first: date) -> Period:
    today = now.astimezone(tz).date()
    last = date.fromisoformat(q.to) if q.to else today
    first = date.fromisoformat(q.from_) if q.from_ else min(default_first, last)
    if last < first:
        raise invalid("query.to", "must not be before from")
    return Period(first, last, tz)


async def _community_staff(req: ApiRequest, community_id: int | None) -> tuple[Resident, Community]:
    """The caller and the community, when they are its community staff (no id: the first community they
    are staff of); else 404."""
    actor = await req.bound_actor()
    if community_id is None:
        role = next((r for r in await active_roles(actor.id)
                     if r.role == Role.COMMUNITY_STAFF and r.scope_id is not None), None)
        if role is None:
            raise not_found()
        community_id = role.scope_id
    community = await Community.get_or_none(id=community_id)
    if community is None or not await is_community_staff(actor.id, community.id):
        raise not_found()
    return actor, community


async def _resident_for_staff(req: ApiRequest, resident_id: int) -> tuple[Resident, Resident]:
    """The caller and a resident of a community they are staff of; else 404."""
    actor = await req.bound_actor()
    resident = await Resident.get_or_none(id=resident_id)
    if resident is None or not await is_community_staff(actor.id, resident.community_id):  # type: ignore[attr-defined]
        raise not_found()
    return actor, resident


# ---------------------------------------------------------------------------- the API: 积分


@api.route("GET", "/points", summary="My points: balance, this month's earnings and entries", query=PointsQuery,
           response=PointsOut, errors=(404, 409))
async def get_points(req: ApiRequest) -> PointsOut:
    """The caller's points (or, with for_resident_id, those of an elder they act for): the balance, this
    month's earnings in community time, and the entries newest first, a page at a time."""
    q: PointsQuery = req.query
    _, person = await req.acting_for(q.for_resident_id)
    tz = req.services.engine.tz
    summary = await points_summary(person.id, req.now, tz, limit=0)
    entries, next_before = await page_of(summary.account_id, limit=q.limit, before=q.before)
    return PointsOut(resident_id=person.id, name=person.name, balance=summary.balance,
                     month_start=summary.month_first.isoformat(), month_earned=summary.month_earned,
                     named_in_rankings=summary.named, entries=await _entry_out(entries, summary.account_id),
                     next_before=next_before)


@api.route("PUT", "/points/preferences", summary="Whether the figures may name me among top volunteers",
           body=PreferencesIn, response=PreferencesOut, errors=(404, 409))
async def put_preferences(req: ApiRequest) -> PreferencesOut:
    """Opt in (or out) of being named in the top volunteers; those not named are counted as
    未公开姓名的志愿者."""
    body: PreferencesIn = req.body
    actor, person = await req.acting_for(body.for_resident_id)
    await set_named(person.id, body.named_in_rankings, req.now)
    await record_action(actor_id=actor.id, subject_id=person.id, action="love_bank_named", channel="api",
                        now=req.now, detail={"named": body.named_in_rankings})
    return PreferencesOut(resident_id=person.id, named_in_rankings=body.named_in_rankings)


# ---------------------------------------------------------------------------- the API: settings


async def _settings_out(community: Community) -> SettingsOut:
    current = await settings_of(community.id)
    row = await LoveBankSettings.get_or_none(community_id=community.id)
    by = await Resident.get_or_none(id=row.updated_by_id) if row and row.updated_by_id else None  # type: ignore[attr-defined]
    return SettingsOut(
        community_id=community.id, community=community.name,
        rates=[RateOut(code=t.code, label=t.label, points_per_hour=current.rate(t.code)) for t in ACTIVITY_TYPES],
        wish_points=current.wish_points, voucher_warn_days=current.voucher_warn_days,
        updated_at=row.updated_at.isoformat() if row else None, updated_by=by.name if by else None)


@api.route("GET", "/love-bank/settings", summary="The community's love-bank settings (community staff)",
           query=CommunityQuery, response=SettingsOut, errors=(404, 409))
async def get_love_settings(req: ApiRequest) -> SettingsOut:
    """Points per hour per activity type, micro-wish points and voucher warning days."""
    _, community = await _community_staff(req, req.query.community_id)
    return await _settings_out(community)


@api.route("PUT", "/love-bank/settings", summary="Change the community's love-bank settings (community staff)",
           query=CommunityQuery, body=SettingsIn, response=SettingsOut, errors=(404, 409))
async def put_love_settings(req: ApiRequest) -> SettingsOut:
    """Only the fields given change. Activities already published keep the rate they were published with."""
    actor, community = await _community_staff(req, req.query.community_id)
    body: SettingsIn = req.body
    try:
        await save_settings(community.id, now=req.now, actor_id=actor.id, rates=body.rates,
                            wish_points=body.wish_points, voucher_warn_days=body.voucher_warn_days)
    except ValueError as exc:  # pragma: no cover - the body's own limits are the same
        raise invalid("body", str(exc)) from None
    return await _settings_out(community)


# ---------------------------------------------------------------------------- the API: corrections


@api.route("GET", "/ledger/entries", summary="A resident's point entries (community staff)", query=EntriesQuery,
           response=EntriesOut, errors=(404, 409))
async def get_ledger_entries(req: ApiRequest) -> EntriesOut:
    """Every entry of the resident's points, newest first, with who made it and whether staff may reverse
    it; community staff of the resident's community."""
    q: EntriesQuery = req.query
    _, resident = await _resident_for_staff(req, q.resident_id)
    mine = await points_of(resident.id, req.now)
    entries, next_before = await page_of(mine.id, limit=q.limit, before=q.before)
    base = await _entry_out(entries, mine.id)
    actors = {r.id: r.name for r in await Resident.filter(id__in={e.actor_id for e in entries if e.actor_id})}
    out = [StaffEntryOut(**item.model_dump(), actor=actors.get(e.actor_id) if e.actor_id else None,
                         reversible=not item.reversed and e.reverses_id is None and e.source in CORRECTABLE)
           for item, e in zip(base, entries, strict=True)]
    return EntriesOut(resident_id=resident.id, name=resident.name, balance=mine.balance, entries=out,
                      next_before=next_before)


async def _correction_out(posted: Posted) -> CorrectionOut:
    entry = posted.entry
    balances = []
    for account_id in (entry.from_account_id, entry.to_account_id):
        acct = await Account.get(id=account_id)
        if acct.resident_id is not None:
            person = await Resident.get(id=acct.resident_id)
            balances.append(BalanceOut(resident_id=person.id, name=person.name, balance=acct.balance))
    return CorrectionOut(id=entry.id, at=entry.created_at.isoformat(), amount=entry.amount, what=describe(entry),
                         reason=entry.reason, reverses_id=entry.reverses_id, replayed=posted.replayed,
                         balances=balances)


@api.route("POST", "/ledger/entries/{entry_id}/reverse", summary="Reverse a point entry with a reason (community "
           "staff)", body=ReverseIn, response=CorrectionOut, status=201, errors=(409,))
async def reverse_ledger_entry(req: ApiRequest) -> CorrectionOut:
    """A new entry that undoes an earning, a donation or an adjustment, once: repeating the request
    returns the same reversal (replayed). Refused (409, saying why) when the points were spent since (a
    balance would go below zero), for a reversal, and for redemptions and expiries, which follow their
    voucher. Community staff of a community the entry concerns."""
    actor = await req.bound_actor()
    entry = await Entry.get_or_none(id=req.path["entry_id"])
    if entry is None:
        raise not_found()
    communities = await entry_communities(entry)
    if not any([await is_community_staff(actor.id, cid) for cid in communities]):
        raise not_found()
    body: ReverseIn = req.body
    posted = await reverse_entry(entry.id, reason=body.reason, actor_id=actor.id, now=req.now)
    return await _correction_out(posted)


def _idempotency_token(req: ApiRequest, body: AdjustmentIn) -> str:
    token = idempotency_key(req.http, body.client_token)
    if token is None:
        raise invalid("header.Idempotency-Key", "an Idempotency-Key header (or client_token) is required")
    return token


@api.route("POST", "/ledger/adjustments", summary="Add or take back a resident's points with a reason (community "
           "staff)", body=AdjustmentIn, response=CorrectionOut, status=201, errors=(404, 409))
async def post_adjustment(req: ApiRequest) -> CorrectionOut:
    """Points from the community (amount > 0) or back to it (amount < 0), with the reason, once per
    Idempotency-Key (a retry returns the first entry, replayed). Taking back more than the resident
    has is refused (409). Community staff of the resident's community."""
    body: AdjustmentIn = req.body
    actor, resident = await _resident_for_staff(req, body.resident_id)
    token = _idempotency_token(req, body)
    posted = await adjust(resident.id, body.amount, reason=body.reason, actor_id=actor.id,
                          key=adjustment_key(actor.id, token), now=req.now)
    return await _correction_out(posted)


# ---------------------------------------------------------------------------- the API: figures, statements


def _row(c: CommunityFigures) -> FigureRow:
    return FigureRow(community_id=c.community_id or None, name=c.name, minutes_served=c.minutes,
                     hours_served=c.hours, points_issued=c.issued, points_redeemed=c.redeemed,
                     points_expired=c.expired, points_outstanding=c.outstanding, points_reserved=c.reserved,
                     volunteers=c.volunteers)


@api.route("GET", "/love-bank/figures", summary="Love-bank figures of a community or sub-district (staff)",
           query=FiguresQuery, response=FiguresOut, produces=XLSX, errors=(404, 409))
async def get_love_figures(req: ApiRequest) -> FiguresOut | FileBody:
    """For the days from–to (default: this month up to today): hours served, points issued, redeemed,
    expired, outstanding and reserved, volunteers, and the top 10 volunteers (named only when they
    opted in). Community staff see their community, sub-district staff every community of theirs (no
    community_id: the whole sub-district, a row per community). format=xlsx: a spreadsheet."""
    q: FiguresQuery = req.query
    actor = await req.bound_actor()
    unit = await figure_unit(actor.id, q.community_id)
    tz = req.services.engine.tz
    period = _period(q, req.now, tz, month_start(req.now, tz))
    figs = await love_figures(unit.communities, period, unit.name)
    if q.format == "xlsx":
        return FileBody(figures_xlsx(figs), f"love-bank-{unit.scope}-{unit.id}-{period.first:%Y%m%d}-"
                                            f"{period.last:%Y%m%d}.xlsx")
    return FiguresOut(
        scope=unit.scope, id=unit.id, name=unit.name, first_day=period.first.isoformat(),
        last_day=period.last.isoformat(), total=_row(figs.total), communities=[_row(c) for c in figs.communities],
        top=[RankOut(rank=r.rank, name=r.name, resident_id=r.resident_id, points=r.points) for r in figs.top])


@api.route("GET", "/love-bank/statement", summary="A volunteer's points statement, PDF or spreadsheet",
           query=StatementQuery, produces="application/*", errors=(404, 409))
async def get_statement(req: ApiRequest) -> FileBody:
    """Every entry of the period (default: this year up to today) with the running balance, between the
    opening and the closing balance: a printable PDF (application/pdf), or with format=xlsx a spreadsheet.
    The resident's own, an elder's they act for, or any resident's for their community's staff."""
    q: StatementQuery = req.query
    actor = await req.bound_actor()
    person = actor
    if q.resident_id is not None and q.resident_id != actor.id:
        found = await Resident.get_or_none(id=q.resident_id, erased_at=None)
        if found is None or not await may_read_points(actor.id, found):
            raise not_found()
        person = found
    tz = req.services.engine.tz
    today = req.now.astimezone(tz).date()
    period = _period(q, req.now, tz, today.replace(month=1, day=1))
    st = await statement(person, period, req.now)
    name = f"points-statement-{person.id}-{period.first:%Y%m%d}-{period.last:%Y%m%d}"
    if q.format == "xlsx":
        return FileBody(statement_xlsx(st, tz), name + ".xlsx", content_type=XLSX)
    return FileBody(statement_pdf(st, tz, req.now), name + ".pdf", content_type=PDF)

