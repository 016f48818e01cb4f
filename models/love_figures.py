"""爱心银行 read side and corrections: a member's points (积分), staff corrections, each community's
figures, and one volunteer's printable statement.

Everything here is read from the one ledger (models.ledger); nothing keeps a second count.

Definitions, for entries created in [start, end) (community time turned into UTC instants):

- earned (获得) of a member: points that came to them from an issuing account minus points that went
  back to one. Earnings (activity, delivery, errand, micro-wish) and staff corrections are exactly
  the movements between a member and an issuing account, so a reversed earning nets to nothing and
  a reversal made this month of last month's earning lowers this month's figure.
- hours served (服务时长): the minutes of the community's activity sign-ups that started in the
  period, whose hours were confirmed and credited (``hours_status`` confirmed, ``entry`` set) and
  whose credit has not been reversed.
- points issued (发放): what the community's issuing account gave members minus what members gave
  back to it (reversals and negative adjustments), i.e. the members' net "earned" from it.
- redeemed (兑换): points of used vouchers, i.e. what left the community's escrow account for a
  partner shop or back to the issuing account (the community's own items), minus reversals of that.
- expired (过期): what went from the community's escrow account to its expiry account, net.
- outstanding (积分余额): the sum of the point balances of the community's residents at the end of
  the period; reserved (兑换券占用): points in vouchers issued and not used, cancelled or expired by
  then (the escrow account's balance).
- volunteers (志愿者): members with a positive "earned" from the community in the period; the top
  ten are ranked by it, and only those who opted in (models.love_bank.MemberPrefs) are named.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, cast
from zoneinfo import ZoneInfo

import openpyxl
import pylopdf_fonts_zh_cn
from fpdf import FPDF
from fpdf.fonts import FontFace
from openpyxl.styles import Font
from tortoise.expressions import Q, Subquery
from tortoise.functions import Sum

from models.activities import Activity, HoursStatus, Signup
from models.errors import NotFound, UserFacingError
from models.ledger import (
    SOURCE_LABELS,
    Account,
    AccountKind,
    Asset,
    Entry,
    Posted,
    Source,
    account,
    account_code,
    points_of,
    reverse,
    signed,
    transfer,
)
from models.love_bank import MemberPrefs
from models.places import Community, Shop, SubDistrict
from models.proxies import acts_for
from models.residents import Resident
from models.roles import Place, Role, Scope, active_roles
from models.sheets import append as _append
from models.sheets import save as _save

EARNING_SOURCES = (Source.ACTIVITY, Source.DELIVERY, Source.ERRAND, Source.WISH)
# Redemption and expiry entries move with their voucher (cancel it to return the points); reversing
# one directly would leave the voucher and the stock telling another story.
CORRECTABLE = frozenset({*EARNING_SOURCES, Source.DONATION, Source.CORRECTION})
NAMELESS = "未公开姓名的志愿者"
TOP_N = 10
ADJUST_MAX = 100_000  # points in one adjustment: a typo guard
STATEMENT_MAX_ENTRIES = 5000
FONT_PATH = pylopdf_fonts_zh_cn.sans_path()


# ---------------------------------------------------------------------------- periods


def month_start(now: datetime, tz: ZoneInfo) -> date:
    """The first day of ``now``'s month, community time."""
    return now.astimezone(tz).date().replace(day=1)


def local_midnight(day: date, tz: ZoneInfo) -> datetime:
    return datetime.combine(day, time(), tzinfo=tz)


@dataclass(frozen=True)
class Period:
    """The days ``first`` to ``last`` (both counted), community time."""

    first: date
    last: date
    tz: ZoneInfo

    @property
    def start(self) -> datetime:
        return local_midnight(self.first, self.tz).astimezone(UTC)

    @property
    def end(self) -> datetime:
        """The first instant not counted: the midnight after ``last``."""
        return local_midnight(self.last + timedelta(days=1), self.tz).astimezone(UTC)

    def label(self) -> str:
        return f"{self.first:%Y-%m-%d} 至 {self.last:%Y-%m-%d}"


def _utc(when: datetime) -> datetime:
    # one spelling per instant: SQLite compares the stored text
    return when.astimezone(UTC)


async def _sum(query: Any) -> int:
    # Filters go through subqueries, never joins: tortoise groups an aggregate over a join by every
    # column, which would sum one row.
    value = await query.annotate(s=Sum("amount")).first().values_list("s", flat=True)
    return int(value or 0)


def _accounts(**where: Any) -> Subquery:
    """The ids of the point accounts matching ``where``, for ``from_account_id__in`` and the like."""
    return Subquery(Account.filter(asset=Asset.POINTS, **where).values("id"))


async def find_account(asset: str, kind: str, owner: int) -> Account | None:
    """The account if it exists (reading never creates one)."""
    return await Account.get_or_none(code=account_code(asset, kind, owner))


# ---------------------------------------------------------------------------- who sees what

FIGURE_ROLES = (Role.COMMUNITY_STAFF, Role.SUBDISTRICT_STAFF)


def _place(community: Community) -> Place:
    return Place(community.sub_district_id, community.id)  # type: ignore[attr-defined]


async def is_community_staff(actor_id: int, community_id: int) -> bool:
    """Whether the actor is community staff of this community (settings, corrections, statements)."""
    community = await Community.get_or_none(id=community_id)
    if community is None:
        return False
    place = _place(community)
    return any(r.role == Role.COMMUNITY_STAFF and place.within(r) for r in await active_roles(actor_id))


async def may_read_points(actor_id: int, resident: Resident) -> bool:
    """The member themselves, a family proxy acting for them, or their community's staff."""
    return actor_id == resident.id or await acts_for(actor_id, resident.id) or \
        await is_community_staff(actor_id, resident.community_id)  # type: ignore[attr-defined]


@dataclass
class Unit:
    """What a figures report covers: one community, or every community of a sub-district."""

    scope: str
    id: int
    name: str
    communities: list[Community]


async def figure_units(actor_id: int) -> list[Unit]:
    """The units whose figures the staff member sees, widest first: a sub-district's staff see it and
    each of its communities, a community's staff their community."""
    found: dict[tuple[str, int], Unit] = {}
    roles = [r for r in await active_roles(actor_id) if r.role in FIGURE_ROLES and r.scope_id]
    roles.sort(key=lambda r: (r.scope_kind != Scope.SUB_DISTRICT, r.id))
    for role in roles:
        if role.scope_kind == Scope.SUB_DISTRICT:
            sub = await SubDistrict.get_or_none(id=role.scope_id)
            if sub is None:
                continue
            communities = await Community.filter(sub_district_id=sub.id).order_by("id")
            found.setdefault((Scope.SUB_DISTRICT, sub.id), Unit(Scope.SUB_DISTRICT, sub.id, sub.name, communities))
            for c in communities:
                found.setdefault((Scope.COMMUNITY, c.id), Unit(Scope.COMMUNITY, c.id, c.name, [c]))
        elif role.scope_kind == Scope.COMMUNITY:
            community = await Community.get_or_none(id=role.scope_id)
            if community is not None:
                found.setdefault((Scope.COMMUNITY, community.id), Unit(Scope.COMMUNITY, community.id, community.name,
                                                                         [community]))
    return list(found.values())


async def figure_unit(actor_id: int, community_id: int | None = None) -> Unit:
    """The community (or, none named, the widest unit) whose figures the actor sees; NotFound when it
    lies outside their scope, as if it did not exist."""
    units = await figure_units(actor_id)
    for unit in units:
        if community_id is None or (unit.scope == Scope.COMMUNITY and unit.id == community_id):
            return unit
    raise NotFound("没有找到这个社区。")


# ---------------------------------------------------------------------------- how an entry reads


def describe(entry: Entry) -> str:
    """What an entry is, as its owner reads it: 志愿服务：助老服务, 冲正：助老服务, 兑换."""
    label = SOURCE_LABELS.get(entry.source, entry.source)
    memo = entry.memo.strip()
    if not memo or memo == label:
        return label
    if entry.reverses_id is not None or memo.startswith(label):
        return memo
    return f"{label}：{memo}"


async def reversed_ids(entry_ids: Iterable[int]) -> set[int]:
    """Which of these entries a later entry reversed."""
    ids = list(entry_ids)
    if not ids:
        return set()
    found = await Entry.filter(reverses_id__in=ids).values_list("reverses_id", flat=True)
    return {int(cast(int, i)) for i in found}


# ---------------------------------------------------------------------------- a member's points


async def earned(account_id: int, start: datetime, end: datetime) -> int:
    """Points the member got from issuing accounts minus points given back to them, in [start, end)."""
    window = {"created_at__gte": _utc(start), "created_at__lt": _utc(end)}
    issuing = _accounts(kind=AccountKind.ISSUING)
    came = await _sum(Entry.filter(to_account_id=account_id, from_account_id__in=issuing, **window))
    went = await _sum(Entry.filter(from_account_id=account_id, to_account_id__in=issuing, **window))
    return came - went


async def page_of(account_id: int, *, limit: int, before: int | None = None) -> tuple[list[Entry], int | None]:
    """The account's entries, newest first, older than the entry ``before``; and the cursor of the
    next page (None at the end). NotFound when ``before`` is not one of the account's entries."""
    query = Entry.filter(Q(from_account_id=account_id) | Q(to_account_id=account_id))
    if before is not None:
        cursor = await Entry.get_or_none(id=before)
        if cursor is None or account_id not in (cursor.from_account_id, cursor.to_account_id):
            raise NotFound("没有找到这条记录。")
        at = _utc(cursor.created_at)
        query = query.filter(Q(created_at__lt=at) | Q(created_at=at, id__lt=cursor.id))
    rows = await query.order_by("-created_at", "-id").limit(limit + 1)
    more = len(rows) > limit
    rows = rows[:limit]
    return rows, (rows[-1].id if more and rows else None)


@dataclass
class PointsSummary:
    resident_id: int
    balance: int
    month_first: date
    month_earned: int
    named: bool
    entries: list[Entry]
    account_id: int

    def amount(self, entry: Entry) -> int:
        return signed(entry, self.account_id)


async def points_summary(resident_id: int, now: datetime, tz: ZoneInfo, *, limit: int = 5) -> PointsSummary:
    """Balance, this month's earnings (community time) and the newest entries of a member."""
    mine = await points_of(resident_id, now)
    first = month_start(now, tz)
    month = await earned(mine.id, local_midnight(first, tz), now + timedelta(microseconds=1))
    entries = (await page_of(mine.id, limit=limit))[0] if limit else []
    prefs = await MemberPrefs.get_or_none(resident_id=resident_id)
    return PointsSummary(resident_id, mine.balance, first, month, bool(prefs and prefs.named_in_rankings),
                         entries, mine.id)


# ---------------------------------------------------------------------------- corrections


async def entry_communities(entry: Entry) -> set[int]:
    """The communities an entry concerns: of its community accounts, of its members' residence and of
    its partner shops."""
    found: set[int] = set()
    for acct in await Account.filter(id__in=[entry.from_account_id, entry.to_account_id]):
        if acct.community_id is not None:
            found.add(acct.community_id)
        elif acct.resident_id is not None:
            cid = await Resident.filter(id=acct.resident_id).first().values_list("community_id", flat=True)
            if cid is not None:
                found.add(int(cid))  # type: ignore[call-overload]
        elif acct.shop_id is not None:
            cid = await Shop.filter(id=acct.shop_id).first().values_list("community_id", flat=True)
            if cid is not None:
                found.add(int(cid))  # type: ignore[call-overload]
    return found


async def reverse_entry(entry_id: int, *, reason: str, actor_id: int, now: datetime) -> Posted:
    """Undo an earning, donation or adjustment with a new entry, once (a retry returns that same
    reversal). Refused when it would take a member below zero (the points were spent), for a reversal
    itself, and for redemption and expiry entries, which follow their voucher."""
    entry = await Entry.get_or_none(id=entry_id)
    if entry is None or entry.asset != Asset.POINTS:
        raise NotFound("没有找到这条记录。")
    if not reason.strip():
        raise UserFacingError("冲正需要写明原因。")
    if entry.source not in CORRECTABLE:
        raise UserFacingError("兑换和过期的积分随兑换券办理，不能直接冲正；如需退回积分，请取消未使用的兑换券。")
    return await reverse(entry_id, reason=reason.strip(), actor_id=actor_id, key=f"correction:reverse:{entry_id}",
                         now=now)


def adjustment_key(actor_id: int, token: str) -> str:
    """The ledger key of a staff adjustment: one effect per (staff member, request token)."""
    return f"correction:adjust:{actor_id}:{hashlib.sha256(token.encode()).hexdigest()[:40]}"


async def adjust(resident_id: int, amount: int, *, reason: str, actor_id: int, key: str, now: datetime) -> Posted:
    """Add (amount > 0) or take back (amount < 0) points of a member, against the issuing account of
    the member's community, with a reason; refused when it would take them below zero."""
    if amount == 0 or abs(amount) > ADJUST_MAX:
        raise UserFacingError(f"调整的积分须在 1 到 {ADJUST_MAX} 之间（扣减写负数）。")
    if not reason.strip():
        raise UserFacingError("调整积分需要写明原因。")
    resident = await Resident.get_or_none(id=resident_id)
    if resident is None:
        raise NotFound("没有找到这位居民。")
    issuing = await account(Asset.POINTS, AccountKind.ISSUING, resident.community_id, now)  # type: ignore[attr-defined]
    mine = await points_of(resident.id, now)
    give = amount > 0
    return await transfer(from_account=issuing if give else mine, to_account=mine if give else issuing,
                          amount=abs(amount), source=Source.CORRECTION, key=key, now=now,
                          memo="积分调整", actor_id=actor_id,
                          reason=reason.strip())


# ---------------------------------------------------------------------------- figures


@dataclass
class Ranked:
    rank: int
    points: int
    resident_id: int | None  # only for those who opted in to be named
    name: str


@dataclass
class CommunityFigures:
    community_id: int
    name: str
    minutes: int = 0
    issued: int = 0
    redeemed: int = 0
    expired: int = 0
    outstanding: int = 0
    reserved: int = 0
    volunteers: int = 0
    earned: dict[int, int] = field(default_factory=dict)  # resident id → net points earned here

    @property
    def hours(self) -> float:
        return round(self.minutes / 60, 1)


@dataclass
class LoveFigures:
    """A community's (or several communities') figures for a period; see the module docstring."""

    period: Period
    label: str
    total: CommunityFigures
    communities: list[CommunityFigures]
    top: list[Ranked]


async def _net(kind_from: str, owners: list[int], kind_to: Sequence[str], start: datetime | None,
               end: datetime) -> int:
    """Σ of entries from the owners' ``kind_from`` community accounts to accounts of ``kind_to`` minus
    the reverse direction, created in [start, end) (start None: since the beginning)."""
    window: dict[str, Any] = {"created_at__lt": _utc(end), "asset": Asset.POINTS}
    if start is not None:
        window["created_at__gte"] = _utc(start)
    mine = _accounts(kind=kind_from, community_id__in=owners)
    out = await _sum(Entry.filter(from_account_id__in=mine, to_account_id__in=_accounts(kind__in=list(kind_to)),
                                  **window))
    back = await _sum(Entry.filter(to_account_id__in=_accounts(kind=kind_from, community_id__in=owners),
                                   from_account_id__in=_accounts(kind__in=list(kind_to)), **window))
    return out - back


async def _earned_by_member(community_id: int, start: datetime, end: datetime) -> dict[int, int]:
    issuing = await find_account(Asset.POINTS, AccountKind.ISSUING, community_id)
    if issuing is None:
        return {}
    window = {"created_at__gte": _utc(start), "created_at__lt": _utc(end)}
    net: dict[int, int] = {}
    members = _accounts(kind=AccountKind.MEMBER)
    for row in await Entry.filter(from_account_id=issuing.id, to_account_id__in=members, **window).annotate(
            s=Sum("amount")).group_by("to_account_id").values("to_account_id", "s"):
        net[int(row["to_account_id"])] = net.get(int(row["to_account_id"]), 0) + int(row["s"] or 0)
    members = _accounts(kind=AccountKind.MEMBER)
    for row in await Entry.filter(to_account_id=issuing.id, from_account_id__in=members, **window).annotate(
            s=Sum("amount")).group_by("from_account_id").values("from_account_id", "s"):
        net[int(row["from_account_id"])] = net.get(int(row["from_account_id"]), 0) - int(row["s"] or 0)
    owners = dict(await Account.filter(id__in=list(net)).values_list("id", "resident_id")) if net else {}
    return {int(owners[a]): n for a, n in net.items() if owners.get(a) is not None}


async def _minutes(community_id: int, start: datetime, end: datetime) -> int:
    activities = Subquery(Activity.filter(community_id=community_id, starts_at__gte=_utc(start),
                                          starts_at__lt=_utc(end)).values("id"))
    value = await Signup.filter(
        activity_id__in=activities, hours_status=HoursStatus.CONFIRMED, entry_id__isnull=False,
    ).exclude(entry_id__in=Subquery(Entry.filter(reverses_id__isnull=False).values("reverses_id"))).annotate(
        s=Sum("minutes")).first().values_list("s", flat=True)
    return int(cast(int, value) or 0)


async def _outstanding(community_id: int, end: datetime) -> int:
    window = {"created_at__lt": _utc(end), "asset": Asset.POINTS}
    def members() -> Subquery:
        return _accounts(kind=AccountKind.MEMBER, resident_id__in=Subquery(
            Resident.filter(community_id=community_id).values("id")))

    came = await _sum(Entry.filter(to_account_id__in=members(), **window))
    went = await _sum(Entry.filter(from_account_id__in=members(), **window))
    return came - went


async def community_figures(community: Community, period: Period) -> CommunityFigures:
    start, end = period.start, period.end
    ids = [community.id]
    earned_here = await _earned_by_member(community.id, start, end)
    return CommunityFigures(
        community_id=community.id, name=community.name,
        minutes=await _minutes(community.id, start, end),
        issued=sum(earned_here.values()),
        redeemed=await _net(AccountKind.ESCROW, ids, (AccountKind.PARTNER, AccountKind.ISSUING), start, end),
        expired=await _net(AccountKind.ESCROW, ids, (AccountKind.EXPIRY,), start, end),
        outstanding=await _outstanding(community.id, end),
        # what went into escrow minus what left it, up to the end: points in live vouchers
        reserved=-await _net(AccountKind.ESCROW, ids, (AccountKind.MEMBER, AccountKind.PARTNER, AccountKind.ISSUING,
                                                       AccountKind.EXPIRY), None, end),
        volunteers=sum(1 for n in earned_here.values() if n > 0),
        earned=earned_here,
    )


async def _ranking(earned_by: dict[int, int]) -> list[Ranked]:
    best = sorted(((n, rid) for rid, n in earned_by.items() if n > 0), key=lambda item: (-item[0], item[1]))[:TOP_N]
    ids = [rid for _, rid in best]
    named = set(await MemberPrefs.filter(resident_id__in=ids, named_in_rankings=True).values_list(
        "resident_id", flat=True)) if ids else set()
    people = {r.id: r for r in await Resident.filter(id__in=list(named), erased_at=None)} if named else {}
    out = []
    for rank, (points, rid) in enumerate(best, 1):
        person = people.get(rid)
        out.append(Ranked(rank, points, rid if person else None, person.name if person else NAMELESS))
    return out


async def love_figures(communities: list[Community], period: Period, label: str) -> LoveFigures:
    """The figures of each community and their total, with the top volunteers over all of them."""
    rows = [await community_figures(c, period) for c in communities]
    # a community's total is that community; a sub-district's has no community (id 0)
    total = CommunityFigures(community_id=communities[0].id if len(communities) == 1 else 0, name=label)
    for row in rows:
        for name in ("minutes", "issued", "redeemed", "expired", "outstanding", "reserved"):
            setattr(total, name, getattr(total, name) + getattr(row, name))
        for rid, n in row.earned.items():
            total.earned[rid] = total.earned.get(rid, 0) + n
    total.volunteers = sum(1 for n in total.earned.values() if n > 0)
    return LoveFigures(period, label, total, rows, await _ranking(total.earned))


FIGURE_COLUMNS: tuple[tuple[str, str], ...] = (
    ("服务时长（小时）", "hours"), ("发放积分", "issued"), ("兑换积分", "redeemed"), ("过期积分", "expired"),
    ("居民积分余额（期末）", "outstanding"), ("兑换券占用积分（期末）", "reserved"),
    ("获得积分的志愿者（人）", "volunteers"),
)


def figures_xlsx(figs: LoveFigures) -> bytes:
    """Sheet 积分数据: a row per community and a total row; sheet 志愿者排行: the top volunteers."""
    book = openpyxl.Workbook()
    ws = book.active
    ws.title = "积分数据"
    _append(ws, [f"{figs.label} 爱心银行积分数据：{figs.period.label()}"])
    _append(ws, ["社区", *[header for header, _ in FIGURE_COLUMNS]])
    for row in figs.communities:
        _append(ws, [row.name, *[getattr(row, key) for _, key in FIGURE_COLUMNS]])
    if len(figs.communities) != 1:
        _append(ws, [f"合计（{figs.label}）", *[getattr(figs.total, key) for _, key in FIGURE_COLUMNS]])
    bold = Font(bold=True)
    for cell in (*ws[1], *ws[2]):
        cell.font = bold
    ws.column_dimensions["A"].width = 20
    for letter in "BCDEFGH":
        ws.column_dimensions[letter].width = 14
    ranking = book.create_sheet("志愿者排行")
    _append(ranking, ["名次", "志愿者", "获得积分"])
    for item in figs.top:
        _append(ranking, [item.rank, item.name, item.points])
    ranking.column_dimensions["B"].width = 22
    return _save(book)


# ---------------------------------------------------------------------------- statements


@dataclass
class StatementLine:
    at: datetime
    what: str
    amount: int
    balance: int
    reason: str = ""


@dataclass
class Statement:
    name: str
    community: str
    period: Period
    opening: int
    lines: list[StatementLine]

    @property
    def closing(self) -> int:
        return self.lines[-1].balance if self.lines else self.opening

    @property
    def credits(self) -> int:
        return sum(line.amount for line in self.lines if line.amount > 0)

    @property
    def debits(self) -> int:
        return -sum(line.amount for line in self.lines if line.amount < 0)


async def statement(resident: Resident, period: Period, now: datetime) -> Statement:
    """Every entry of the member's points in the period, oldest first, with the running balance."""
    mine = await points_of(resident.id, now)
    start, end = period.start, period.end
    came = await _sum(Entry.filter(to_account_id=mine.id, created_at__lt=start))
    went = await _sum(Entry.filter(from_account_id=mine.id, created_at__lt=start))
    query = Entry.filter(Q(from_account_id=mine.id) | Q(to_account_id=mine.id), created_at__gte=start,
                         created_at__lt=end)
    if await query.count() > STATEMENT_MAX_ENTRIES:
        raise UserFacingError(f"这段时间的记录超过{STATEMENT_MAX_ENTRIES}条，请缩短时间范围后再试。")
    balance = opening = came - went
    lines = []
    for entry in await query.order_by("created_at", "id"):
        amount = signed(entry, mine.id)
        balance += amount
        lines.append(StatementLine(entry.created_at, describe(entry), amount, balance,
                                   entry.reason if entry.source == Source.CORRECTION else ""))
    community = await Community.get(id=resident.community_id)  # type: ignore[attr-defined]
    return Statement(resident.name, community.name, period, opening, lines)


def _what(line: StatementLine) -> str:
    return f"{line.what}（原因：{line.reason}）" if line.reason else line.what


def _signed_text(amount: int) -> str:
    return f"+{amount}" if amount > 0 else str(amount)


STATEMENT_TITLE = "爱心银行积分对账单"


def statement_pdf(st: Statement, tz: ZoneInfo, printed_at: datetime) -> bytes:
    """The statement on A4 pages, with the Noto Sans SC glyphs it uses embedded."""
    pdf = FPDF(format="A4")
    pdf.set_title(f"{STATEMENT_TITLE} {st.name} {st.period.label()}")
    pdf.set_creator("Linli")
    pdf.add_font("sans", fname=str(FONT_PATH))
    pdf.set_margins(15, 15, 15)
    pdf.set_auto_page_break(True, margin=18)
    printed = printed_at.astimezone(tz)

    def footer() -> None:
        pdf.set_y(-13)
        pdf.set_font("sans", size=8)
        pdf.cell(0, 5, f"邻里 · 爱心银行　打印时间 {printed:%Y-%m-%d %H:%M}　第 {pdf.page_no()} 页",
                 align="C")

    pdf.footer = footer  # type: ignore[method-assign]
    pdf.add_page()
    pdf.set_font("sans", size=18)
    pdf.cell(0, 12, STATEMENT_TITLE, align="C", new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("sans", size=11)
    for text in (f"姓名：{st.name}　　社区：{st.community}",
                 f"期间：{st.period.label()}",
                 f"期初余额：{st.opening}分　　本期收入：+{st.credits}分　　本期支出：-{st.debits}分　　"
                 f"期末余额：{st.closing}分"):
        pdf.cell(0, 7, text, new_x="LMARGIN", new_y="NEXT")
    pdf.ln(3)
    pdf.set_font("sans", size=10)
    plain = FontFace(emphasis="NONE", fill_color=(235, 235, 235))
    with pdf.table(col_widths=(28, 98, 27, 27), text_align=("LEFT", "LEFT", "RIGHT", "RIGHT"),
                   headings_style=plain, line_height=6, wrapmode="CHAR") as table:
        table.row(["日期", "摘要", "收支（分）", "余额（分）"])
        table.row([st.period.first.strftime("%Y-%m-%d"), "期初余额", "", str(st.opening)])
        for line in st.lines:
            table.row([line.at.astimezone(tz).strftime("%Y-%m-%d"), _what(line), _signed_text(line.amount),
                       str(line.balance)])
        table.row([st.period.last.strftime("%Y-%m-%d"), "期末余额", "", str(st.closing)])
    if not st.lines:
        pdf.ln(3)
        pdf.cell(0, 7, "本期没有积分记录。", new_x="LMARGIN", new_y="NEXT")
    return bytes(pdf.output())


def statement_xlsx(st: Statement, tz: ZoneInfo) -> bytes:
    """The statement as one sheet: a heading block, then 日期 摘要 收支 余额 rows between the opening
    and the closing balance."""
    book = openpyxl.Workbook()
    ws = book.active
    ws.title = "对账单"
    _append(ws, [STATEMENT_TITLE])
    _append(ws, ["姓名", st.name, "社区", st.community])
    _append(ws, ["期间", st.period.label()])
    _append(ws, ["日期", "摘要", "收支（分）", "余额（分）"])
    _append(ws, [st.period.first.strftime("%Y-%m-%d"), "期初余额", None, st.opening])
    for line in st.lines:
        _append(ws, [line.at.astimezone(tz).strftime("%Y-%m-%d"), _what(line), line.amount, line.balance])
    _append(ws, [st.period.last.strftime("%Y-%m-%d"), "期末余额", None, st.closing])
    bold = Font(bold=True)
    for cell in (*ws[1], *ws[4]):
        cell.font = bold
    ws.column_dimensions["A"].width = 12
    ws.column_dimensions["B"].width = 40
    ws.column_dimensions["C"].width = 12
    ws.column_dimensions["D"].width = 12
    return _save(book)
