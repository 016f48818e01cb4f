"""Mini-program API views: login, the resident's profile and binding, statuses, family links,
consent and data requests, and staff management within the caller's scope.

Authorization in one place (``_access``): a person sees their own record and those of elders they
act for through an active family link; staff see residents in their scope, and every such
opening writes an audit row. Anything else answers 404, exactly as if it did not exist.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, Field

from bot.api import ApiError, ApiRequest, ApiRouter, Query, Strict, create_session, end_session, not_found
from bot.wxclient import WeChatAPIError, WeChatUnavailable
from models.errors import Forbidden, NotFound, UserFacingError
from models.facts import (
    BIRTH_DATE,
    STATUSES,
    ResidentFact,
    decide,
    declare,
    live_facts,
    parse_birth_date,
)
from models.notices import needs_subscription, record_consents
from models.places import Building, Community
from models.privacy import (
    DataRequest,
    RequestStatus,
    audit,
    erase,
    request_deletion,
    withdraw_request,
)
from models.proxies import (
    Action,
    ProxyLink,
    ProxyStatus,
    acts_for,
    decide_link,
    elders_of,
    end_link,
    links_of,
    record_action,
    request_link,
)
from models.residents import (
    CONSENT_TEXT,
    CONSENT_VERSION,
    NAME_MAX,
    ROOM_MAX,
    UNIT_MAX,
    Consent,
    Mobility,
    Resident,
    WechatAccount,
    bind,
    clean_name,
    link_verified_mobile,
    mask_mobile,
    mp_login,
    normalize_mobile,
    pending_request_of,
    unbind,
)
from models.roles import (
    GRANTABLE,
    ROLES,
    Role,
    StaffRole,
    active_roles,
    grant,
    granting_role,
    may_verify,
    revoke,
    staff_access,
)

router = ApiRouter("identity")

Id = Annotated[int, Field(ge=1, le=2**31 - 1)]
FACT_CODES = Literal[tuple([BIRTH_DATE, *STATUSES])]  # type: ignore[valid-type]
ROLE_CODES = Literal[tuple(GRANTABLE)]  # type: ignore[valid-type]


# ---------------------------------------------------------------------------- shapes


class FactOut(BaseModel):
    id: int
    code: str = Field(description="birth_date or a status code")
    label: str
    value: str = Field(description="ISO date for birth_date, else empty")
    state: str = Field(description="pending | verified | rejected | superseded | ended")
    reason: str = ""


class ResidentOut(BaseModel):
    id: int
    name: str
    mobile: str = Field(description="masked as 138****5678")
    community: str
    building_id: int | None
    building: str
    unit: str
    room: str
    mobility: str = Field(description="'' (unknown) | walk_in | delivery")
    verified: bool = Field(description="the record itself was verified by community staff")
    facts: list[FactOut]
    sensitive_hidden: bool = Field(description="sensitive statuses and notes left out for this viewer")
    health_note: str | None = Field(default=None, description="only for the person and roles that need it")
    access: str = Field(description="how the caller may see it: self | proxy | staff")


class ResidentSummary(BaseModel):
    id: int
    name: str
    mobile: str
    address: str


class ResidentList(BaseModel):
    items: list[ResidentSummary]


class FactList(BaseModel):
    items: list[FactOut]


class GrantOut(BaseModel):
    id: int
    resident_id: int
    resident_name: str
    role: str
    role_label: str
    scope_kind: str
    scope_id: int | None
    granted_by: str
    granted_at: str | None
    revoked_at: str | None


class GrantList(BaseModel):
    items: list[GrantOut]


class PersonRef(BaseModel):
    id: int
    name: str


class MeOut(BaseModel):
    channel: str
    bound: bool
    binding_pending: bool
    verified_mobile: str = Field(description="masked; the number WeChat verified for this account, if any")
    resident: ResidentOut | None
    roles: list[GrantOut]
    acts_for: list[PersonRef]
    needs_subscription: bool = Field(description="mini-program: ask for subscribe-message consent again "
                                                 "(none left, or WeChat refused the last one)")


class LoginIn(Strict):
    code: str = Field(min_length=1, max_length=128, description="the code from wx.login()")


class LoginOut(BaseModel):
    token: str
    expires_in: int = Field(description="seconds")
    bound: bool


class PhoneIn(Strict):
    code: str = Field(min_length=1, max_length=128, description="the code from the getPhoneNumber button")
    consent: Literal[True] = Field(description="the person accepted the privacy notice (GET /me/consents)")


class PhoneOut(BaseModel):
    mobile: str
    bound: bool


class BindIn(Strict):
    consent: Literal[True]
    name: str = Field(min_length=2, max_length=NAME_MAX)
    mobile: str = Field(min_length=5, max_length=20)
    building_id: Id
    unit: str = Field(min_length=1, max_length=UNIT_MAX)
    room: str = Field(min_length=1, max_length=ROOM_MAX)


class BindOut(BaseModel):
    status: str = Field(description="bound | pending (a grid worker confirms the match first)")
    resident: ResidentOut | None


class BuildingOut(BaseModel):
    id: int
    name: str
    community_id: int
    community: str


class BuildingList(BaseModel):
    items: list[BuildingOut]


class BuildingQuery(Query):
    community_id: Id | None = None


class ResidentQuery(Query):
    q: str | None = Field(default=None, max_length=20, description="name or mobile")
    building_id: Id | None = None
    purpose: str = Field(default="", max_length=100, description="why staff look (recorded in the audit log)")
    limit: int = Field(default=50, ge=1, le=100)
    offset: int = Field(default=0, ge=0, le=100_000)


class PurposeQuery(Query):
    purpose: str = Field(default="", max_length=100, description="why staff look (recorded in the audit log)")


class ProfileIn(Strict):
    mobility: Literal["walk_in", "delivery"]


class FactIn(Strict):
    code: FACT_CODES  # type: ignore[valid-type]
    value: str = Field(default="", max_length=20, description="for birth_date: YYYY-MM-DD")


class DecisionIn(Strict):
    approve: bool
    reason: str = Field(default="", max_length=100, description="required when refusing; the resident sees it")


class LinkIn(Strict):
    elder_name: str = Field(min_length=2, max_length=NAME_MAX)
    elder_mobile: str = Field(min_length=5, max_length=20)
    relation: str = Field(default="", max_length=10, description="子女, 配偶, 亲属...")


class LinkOut(BaseModel):
    id: int
    proxy: PersonRef
    elder: PersonRef
    relation: str
    status: str
    confirmed_how: str


class LinkList(BaseModel):
    items: list[LinkOut]


class ApproveIn(Strict):
    approve: bool


class ActionOut(BaseModel):
    id: int
    action: str
    actor: PersonRef | None
    subject: PersonRef | None
    on_behalf: bool = Field(description="the actor acted for the subject through a family link")
    channel: str
    at: str


class ActionList(BaseModel):
    items: list[ActionOut]


class ConsentOut(BaseModel):
    version: str
    text: str
    accepted_at: str | None


class ConsentList(BaseModel):
    current: ConsentOut
    accepted: list[ConsentOut]


class SubscriptionsIn(Strict):
    template_ids: list[Annotated[str, Field(min_length=1, max_length=64)]] = Field(
        min_length=1, max_length=3, description="the templates wx.requestSubscribeMessage reported as accept")


class SubscriptionsOut(BaseModel):
    recorded: int


class ConsentIn(Strict):
    accept: Literal[True]


class DataRequestIn(Strict):
    kind: Literal["deletion"] = "deletion"


class DataRequestOut(BaseModel):
    id: int
    resident_id: int | None
    kind: str
    status: str
    requested_at: str
    outcome: str


class DataRequestList(BaseModel):
    items: list[DataRequestOut]


class EraseIn(Strict):
    confirm: Literal[True]


class GrantIn(Strict):
    resident_id: Id
    role: ROLE_CODES  # type: ignore[valid-type]
    scope_id: Id | None = Field(default=None, description="the grid, community, canteen... id (none for admin)")


class StaffQuery(Query):
    role: ROLE_CODES | None = None  # type: ignore[valid-type]
    include_revoked: bool = False


# ---------------------------------------------------------------------------- helpers


def _iso(value: object) -> str | None:
    return value.isoformat() if value is not None else None  # type: ignore[attr-defined]


async def _fact_out(fact: ResidentFact) -> FactOut:
    return FactOut(id=fact.id, code=fact.code, label=fact.label, value=fact.value, state=fact.state,
                   reason=fact.reason)


async def _resident_out(resident: Resident, access: str, *, sensitive: bool) -> ResidentOut:
    building = await Building.get_or_none(id=resident.building_id) if resident.building_id else None  # type: ignore[attr-defined]
    community = await Community.get(id=resident.community_id)  # type: ignore[attr-defined]
    facts = [f for f in await live_facts(resident.id) if sensitive or not f.sensitive]
    hidden = not sensitive
    return ResidentOut(
        id=resident.id, name=resident.name, mobile=mask_mobile(resident.mobile) if resident.mobile else "",
        community=community.name, building_id=building.id if building else None,
        building=building.name if building else "", unit=resident.unit, room=resident.room,
        mobility=resident.mobility, verified=resident.status == "verified",
        facts=[await _fact_out(f) for f in facts], sensitive_hidden=hidden,
        health_note=resident.health_note if sensitive else None, access=access,
    )


async def _grant_out(row: StaffRole) -> GrantOut:
    person = await Resident.get(id=row.resident_id)  # type: ignore[attr-defined]
    by = ""
    if row.granted_by_id is not None:  # type: ignore[attr-defined]
        granter = await Resident.get_or_none(id=row.granted_by_id)  # type: ignore[attr-defined]
        by = granter.name if granter else ""
    return GrantOut(id=row.id, resident_id=person.id, resident_name=person.name, role=row.role,
                    role_label=ROLES[row.role].label, scope_kind=row.scope_kind, scope_id=row.scope_id,
                    granted_by=by or row.granted_by_label, granted_at=_iso(row.granted_at),
                    revoked_at=_iso(row.revoked_at))


async def _access(
    req: ApiRequest, resident_id: int, *, purpose: str = "", write: bool = False
) -> tuple[Resident, str, bool]:
    """(record, how the caller may see it, whether sensitive fields are shown) or 404.

    Staff openings are audited. ``write`` asks for what may change the record: the person, their
    proxy, or staff whose role verifies in that scope.
    """
    actor = await req.bound_actor()
    resident = await Resident.get_or_none(id=resident_id)
    if resident is None or resident.erased_at is not None:
        raise not_found()
    if resident.id == actor.id:
        return resident, "self", True
    if await acts_for(actor.id, resident.id):
        return resident, "proxy", True
    if write:
        if await may_verify(actor.id, resident):
            return resident, "staff", True
        raise not_found()
    role = await staff_access(actor.id, resident)
    if role is None:
        raise not_found()
    sensitive = await staff_access(actor.id, resident, sensitive=True) is not None
    await audit(actor_id=actor.id, subject_id=resident.id, action="view_sensitive" if sensitive else "view",
                purpose=purpose or f"api {req.http.method} {req.http.path}", now=req.now,
                detail={"role": role.role})
    return resident, "staff", sensitive


async def _link_out(link: ProxyLink) -> LinkOut:
    proxy = await Resident.get(id=link.proxy_id)  # type: ignore[attr-defined]
    elder = await Resident.get(id=link.elder_id)  # type: ignore[attr-defined]
    return LinkOut(id=link.id, proxy=PersonRef(id=proxy.id, name=proxy.name),
                   elder=PersonRef(id=elder.id, name=elder.name), relation=link.relation,
                   status=link.status, confirmed_how=link.confirmed_how)


async def _notify(req: ApiRequest, resident_id: int, text: str, key: str) -> None:
    """Tell a person in chat (every official-account or chat openid of theirs)."""
    for account in await WechatAccount.filter(resident_id=resident_id, channel__in=["oa", "chat"]):
        await req.services.engine.send(account.openid, text, key=f"{key}:{account.id}")


def _address(building: Building | None, resident: Resident) -> str:
    return f"{building.name}{resident.unit}单元{resident.room}室" if building else ""


def _request_out(row: DataRequest) -> DataRequestOut:
    return DataRequestOut(id=row.id, resident_id=row.resident_id, kind=row.kind, status=row.status,  # type: ignore[attr-defined]
                          requested_at=row.requested_at.isoformat(), outcome=row.outcome)


# ---------------------------------------------------------------------------- login


@router.route("POST", "/auth/login", summary="Log in with wx.login's code", body=LoginIn, response=LoginOut,
              auth=False, errors=(401, 503))
async def login(req: ApiRequest) -> LoginOut:
    """Exchanges the code with WeChat (code-to-session) and returns a session token of ours; WeChat's
    session_key is neither returned nor stored nor logged."""
    try:
        answer = await req.services.client.code_to_session(req.body.code)
    except WeChatAPIError as exc:
        if exc.transient:
            raise ApiError(503, "wechat_unavailable", "微信暂时无法登录，请稍后再试。") from None
        raise ApiError(401, "unauthorized", "登录凭证无效或已用过，请重新登录。") from None
    except WeChatUnavailable:
        raise ApiError(503, "wechat_unavailable", "微信暂时无法登录，请稍后再试。") from None
    answer.pop("session_key", None)
    account = await mp_login(openid=str(answer["openid"]), unionid=answer.get("unionid"), now=req.now)
    hours = req.services.config.api.session_hours
    token = await create_session(req.services.store, account, hours)
    return LoginOut(token=token, expires_in=hours * 3600, bound=account.resident_id is not None)  # type: ignore[attr-defined]


@router.route("POST", "/auth/phone", summary="Give the number WeChat verified (getPhoneNumber)", body=PhoneIn,
              response=PhoneOut, errors=(409, 503))
async def phone(req: ApiRequest) -> PhoneOut:
    """A verified number links this account to the resident record with that mobile, if there is one."""
    account = await req.account()
    try:
        number = await req.services.client.phone_number(req.body.code)
    except WeChatAPIError as exc:
        if exc.transient:
            raise ApiError(503, "wechat_unavailable", "微信暂时无法获取手机号，请稍后再试。") from None
        raise ApiError(409, "rejected", "获取手机号失败，请重新点击授权。") from None
    except WeChatUnavailable:
        raise ApiError(503, "wechat_unavailable", "微信暂时无法获取手机号，请稍后再试。") from None
    try:
        mobile = normalize_mobile(number)
    except UserFacingError:
        raise ApiError(409, "rejected", "暂只支持中国大陆手机号。") from None
    was_bound = account.resident_id is not None  # type: ignore[attr-defined]
    resident = await link_verified_mobile(account_id=account.id, mobile=mobile, now=req.now)
    if resident is not None and not was_bound:
        await Consent.create(account=account, resident=resident, text_version=CONSENT_VERSION, text=CONSENT_TEXT,
                             accepted_at=req.now)
        await record_action(actor_id=resident.id, subject_id=resident.id, action="bind_by_verified_mobile",
                            channel="api", now=req.now)
    return PhoneOut(mobile=mask_mobile(mobile), bound=resident is not None)


@router.route("POST", "/auth/logout", summary="End this session", status=204)
async def logout(req: ApiRequest) -> None:
    """The token stops working at once."""
    assert req.session is not None
    await end_session(req.services.store, req.session)


# ---------------------------------------------------------------------------- me and binding


@router.route("GET", "/me", summary="Who I am here", response=MeOut)
async def me(req: ApiRequest) -> MeOut:
    """The account, its resident record (if bound), staff roles and the elders it may act for."""
    account = await req.account()
    actor = await req.actor()
    return MeOut(
        channel=account.channel, bound=actor is not None,
        binding_pending=actor is None and await pending_request_of(account) is not None,
        verified_mobile=mask_mobile(account.verified_mobile) if account.verified_mobile else "",
        resident=await _resident_out(actor, "self", sensitive=True) if actor else None,
        roles=[await _grant_out(r) for r in await active_roles(actor.id)] if actor else [],
        acts_for=[PersonRef(id=e.id, name=e.name) for e in await elders_of(actor.id)] if actor else [],
        needs_subscription=account.channel == "mp" and await needs_subscription(account.id),
    )


@router.route("GET", "/buildings", summary="Buildings to choose from when binding", query=BuildingQuery,
              response=BuildingList)
async def buildings(req: ApiRequest) -> BuildingList:
    """All buildings (of one community when asked)."""
    query = Building.all().order_by("id").prefetch_related("community")
    if req.query.community_id is not None:
        query = query.filter(community_id=req.query.community_id)
    return BuildingList(items=[
        BuildingOut(id=b.id, name=b.name, community_id=b.community.id, community=b.community.name)
        for b in await query
    ])


@router.route("POST", "/me/binding", summary="Bind this account to a resident", body=BindIn, response=BindOut,
              status=201, errors=(409,))
async def bind_me(req: ApiRequest) -> BindOut:
    """As in chat: a new record is bound at once (pending verification); details matching an existing
    record wait for that grid worker's confirmation. A number WeChat verified must be the one given."""
    account = await req.account()
    body: BindIn = req.body
    name = clean_name(body.name)
    mobile = normalize_mobile(body.mobile)
    if account.verified_mobile and mobile != account.verified_mobile:
        raise ApiError(409, "rejected", "手机号与微信验证的号码不一致。")
    if not await Building.filter(id=body.building_id).exists():
        raise ApiError(422, "validation", "所选楼栋不存在。", [])
    outcome = await bind(openid=account.openid, channel=account.channel, name=name, mobile=mobile,
                         building_id=body.building_id, unit=body.unit, room=body.room, now=req.now)
    if outcome.status == "pending":
        assert outcome.request is not None
        from handlers.binding import _review_question

        for staff in await WechatAccount.filter(resident_id__in=[r.id for r in outcome.reviewers]):
            await req.services.engine.ask_later(
                openid=staff.openid, flow="binding_review", step="decide",
                question=await _review_question(outcome.request), data={"request_id": outcome.request.id},
                subject=f"link_request:{outcome.request.id}")
        return BindOut(status="pending", resident=None)
    assert outcome.resident is not None
    await record_action(actor_id=outcome.resident.id, subject_id=outcome.resident.id, action="bind", channel="api",
                        now=req.now)
    return BindOut(status="bound", resident=await _resident_out(outcome.resident, "self", sensitive=True))


@router.route("DELETE", "/me/binding", summary="Unbind this account (or withdraw a pending request)", status=204)
async def unbind_me(req: ApiRequest) -> None:
    """Twice is harmless; the record itself stays with the community."""
    account = await req.account()
    await unbind(account.openid, req.now)


# ---------------------------------------------------------------------------- residents


@router.route("GET", "/residents", summary="Residents I may see", query=ResidentQuery, response=ResidentList,
              errors=(409,))
async def list_residents(req: ApiRequest) -> ResidentList:
    """Staff: the residents of their scope (masked). Others: themselves and the elders they act for."""
    actor = await req.bound_actor()
    q: ResidentQuery = req.query
    roles = [r for r in await active_roles(actor.id) if r.spec.sees_residents]
    query = Resident.filter(erased_at=None)
    if q.building_id is not None:
        query = query.filter(building_id=q.building_id)
    if q.q:
        if q.q.isascii() and q.q.isdigit():
            query = query.filter(mobile=q.q) if len(q.q) == 11 else query.filter(id=0)
        else:
            query = query.filter(name__contains=q.q)
    if not roles:
        ids = [actor.id] + [e.id for e in await elders_of(actor.id)]
        query = query.filter(id__in=ids)
    items = []
    # scope is checked per record, so the page is filled from a bounded window of candidates
    for resident in await query.order_by("id").offset(q.offset).limit(q.limit * 20 if roles else q.limit):
        if roles and resident.id != actor.id and await staff_access(actor.id, resident) is None:
            continue
        building = await Building.get_or_none(id=resident.building_id) if resident.building_id else None  # type: ignore[attr-defined]
        items.append(ResidentSummary(id=resident.id, name=resident.name,
                                     mobile=mask_mobile(resident.mobile) if resident.mobile else "",
                                     address=_address(building, resident)))
        if len(items) >= q.limit:
            break
    if roles and items:
        await audit(actor_id=actor.id, subject_id=None, action="list", purpose=q.purpose or "api residents list",
                    now=req.now, detail={"ids": [i.id for i in items]})
    return ResidentList(items=items)


@router.route("GET", "/residents/{resident_id}", summary="A resident's record", query=PurposeQuery,
              response=ResidentOut, errors=(409,))
async def get_resident(req: ApiRequest) -> ResidentOut:
    """Own record, an elder's through an active family link, or staff in scope (audited; sensitive
    fields only for roles that need them)."""
    resident, access, sensitive = await _access(req, req.path["resident_id"], purpose=req.query.purpose)
    return await _resident_out(resident, access, sensitive=sensitive)


@router.route("PATCH", "/residents/{resident_id}", summary="Update mobility", body=ProfileIn,
              response=ResidentOut, errors=(409,))
async def patch_resident(req: ApiRequest) -> ResidentOut:
    """Whether the person comes to the canteen or needs meals delivered."""
    resident, access, _ = await _access(req, req.path["resident_id"], write=True)
    actor = await req.bound_actor()
    if resident.mobility != req.body.mobility:
        resident.mobility = Mobility.WALKS_IN if req.body.mobility == "walk_in" else Mobility.NEEDS_DELIVERY
        await resident.save(update_fields=["mobility"])
        await record_action(actor_id=actor.id, subject_id=resident.id, action="update_mobility", channel="api",
                            now=req.now, detail={"mobility": resident.mobility})
    return await _resident_out(resident, access, sensitive=True)


@router.route("GET", "/residents/{resident_id}/facts", summary="Date of birth and statuses, with their state",
              query=PurposeQuery, response=FactList, errors=(409,))
async def get_facts(req: ApiRequest) -> FactList:
    """Pending ones count nowhere until community staff verify them."""
    resident, _, sensitive = await _access(req, req.path["resident_id"], purpose=req.query.purpose)
    return FactList(items=[await _fact_out(f) for f in await live_facts(resident.id) if sensitive or not f.sensitive])


@router.route("POST", "/residents/{resident_id}/facts", summary="Declare the date of birth or a status",
              body=FactIn, response=FactOut, status=201, errors=(409,))
async def post_fact(req: ApiRequest) -> FactOut:
    """By the person or their proxy: pending until verified. By community staff in scope: verified."""
    resident, access, _ = await _access(req, req.path["resident_id"], write=True)
    actor = await req.bound_actor()
    body: FactIn = req.body
    value = ""
    if body.code == BIRTH_DATE:
        value = parse_birth_date(body.value, req.now.date()).isoformat()
    elif body.value:
        raise ApiError(422, "validation", "身份状况不需要填写 value。", [])
    fact = await declare(resident_id=resident.id, code=body.code, value=value, now=req.now, by_id=actor.id,
                         source={"self": "self", "proxy": "proxy"}.get(access, "staff"), verified=access == "staff")
    await record_action(actor_id=actor.id, subject_id=resident.id, action="declare_fact", channel="api",
                        now=req.now, detail={"fact_id": fact.id, "code": body.code})
    return await _fact_out(fact)


@router.route("POST", "/facts/{fact_id}/decision", summary="Verify or reject a declared fact (staff)",
              body=DecisionIn, response=FactOut, errors=(409,))
async def decide_fact(req: ApiRequest) -> FactOut:
    """Community staff in scope; a rejection needs a reason, which the resident is told."""
    actor = await req.bound_actor()
    fact = await ResidentFact.get_or_none(id=req.path["fact_id"]).prefetch_related("resident")
    if fact is None or not await may_verify(actor.id, fact.resident):
        raise not_found()
    was = fact.state
    fact = await decide(fact_id=fact.id, by_id=actor.id, approve=req.body.approve, now=req.now,
                        reason=req.body.reason)
    if was == "pending" and fact.state != "pending":
        await audit(actor_id=actor.id, subject_id=fact.resident_id, action="verify", purpose=f"fact:{fact.id}",  # type: ignore[attr-defined]
                    now=req.now, detail={"state": fact.state})
        text = (f"您申报的“{fact.label}”已由社区核实。" if fact.state == "verified"
                else f"您申报的“{fact.label}”未通过核实：{fact.reason}。如有疑问请联系社区。")
        await _notify(req, fact.resident_id, text, f"fact:{fact.id}:decided")  # type: ignore[attr-defined]
    return await _fact_out(fact)


@router.route("GET", "/residents/{resident_id}/actions", summary="Who did what for this resident",
              query=PurposeQuery, response=ActionList, errors=(409,))
async def get_actions(req: ApiRequest) -> ActionList:
    """Every recorded action about the resident, newest first, naming who acted (a proxy or staff)."""
    resident, _, _ = await _access(req, req.path["resident_id"], purpose=req.query.purpose)
    rows = await Action.filter(subject_id=resident.id).order_by("-id").limit(100).prefetch_related("actor", "subject")
    return ActionList(items=[ActionOut(
        id=a.id, action=a.action, actor=PersonRef(id=a.actor.id, name=a.actor.name) if a.actor else None,
        subject=PersonRef(id=a.subject.id, name=a.subject.name) if a.subject else None,
        on_behalf=a.proxy_link_id is not None, channel=a.channel, at=a.at.isoformat())  # type: ignore[attr-defined]
        for a in rows])


# ---------------------------------------------------------------------------- family links


@router.route("GET", "/proxy-links", summary="My family links (as proxy and as elder)", response=LinkList,
              errors=(409,))
async def get_links(req: ApiRequest) -> LinkList:
    """Pending and active links where I am either side."""
    actor = await req.bound_actor()
    return LinkList(items=[await _link_out(link) for link in await links_of(actor.id)])


@router.route("POST", "/proxy-links", summary="Ask to act for an elder", body=LinkIn, response=LinkOut,
              status=202, errors=(409,))
async def post_link(req: ApiRequest) -> LinkOut:
    """The elder's name and mobile must match their record. The elder confirms in chat (a question is
    sent to them), or community staff confirm in person."""
    actor = await req.bound_actor()
    body: LinkIn = req.body
    try:
        mobile = normalize_mobile(body.elder_mobile)
        name = clean_name(body.elder_name)
    except UserFacingError as exc:
        raise ApiError(422, "validation", exc.message, []) from None
    elder = await Resident.get_or_none(mobile=mobile, name=name, erased_at=None)
    if elder is None:
        raise ApiError(409, "rejected", "没有找到与姓名和手机号相符的居民档案。请核对，或请家人先到社区登记。")
    link, created = await request_link(proxy_id=actor.id, elder_id=elder.id, relation=body.relation, now=req.now)
    if created:
        await record_action(actor_id=actor.id, subject_id=elder.id, action="request_proxy_link", channel="api",
                            now=req.now, detail={"link_id": link.id})
        from handlers.family import ask_elder

        await ask_elder(req.services.engine, link)
    return await _link_out(link)


async def _link_for(req: ApiRequest, actor: Resident) -> tuple[ProxyLink, str]:
    link = await ProxyLink.get_or_none(id=req.path["link_id"])
    if link is None:
        raise not_found()
    if link.elder_id == actor.id:  # type: ignore[attr-defined]
        return link, "elder"
    if link.proxy_id == actor.id:  # type: ignore[attr-defined]
        return link, "proxy"
    elder = await Resident.get(id=link.elder_id)  # type: ignore[attr-defined]
    # those who can meet both in person: the grid worker, community and sub-district staff
    role = await staff_access(actor.id, elder)
    if await may_verify(actor.id, elder) or (role is not None and role.role == Role.GRID_WORKER):
        return link, "staff"
    raise not_found()


@router.route("POST", "/proxy-links/{link_id}/decision", summary="Confirm or refuse a family link",
              body=ApproveIn, response=LinkOut, errors=(409,))
async def decide_proxy(req: ApiRequest) -> LinkOut:
    """By the elder, or by staff in scope who met both in person."""
    actor = await req.bound_actor()
    link, side = await _link_for(req, actor)
    if side == "proxy":
        raise ApiError(409, "rejected", "需要老人本人或社区工作人员确认。")
    was = link.status
    link = await decide_link(link_id=link.id, by_id=actor.id, how=side, approve=req.body.approve, now=req.now)
    if was == ProxyStatus.PENDING and link.status != ProxyStatus.PENDING:
        await record_action(actor_id=actor.id, subject_id=link.elder_id, action=f"proxy_link_{link.status}",  # type: ignore[attr-defined]
                            channel="api", now=req.now, detail={"link_id": link.id})
        elder = await Resident.get(id=link.elder_id)  # type: ignore[attr-defined]
        text = (f"您已可以为{elder.name}代办社区事项（亲情代理）。" if link.status == ProxyStatus.ACTIVE
                else f"{elder.name}的亲情代理申请没有通过。")
        await _notify(req, link.proxy_id, text, f"proxy_link:{link.id}:decided")  # type: ignore[attr-defined]
    return await _link_out(link)


@router.route("DELETE", "/proxy-links/{link_id}", summary="End a family link", response=LinkOut, errors=(409,))
async def delete_link(req: ApiRequest) -> LinkOut:
    """Either side may end it (or staff in scope); the other side is told."""
    actor = await req.bound_actor()
    link, side = await _link_for(req, actor)
    was = link.status
    link = await end_link(link_id=link.id, by_id=actor.id, now=req.now)
    if was != link.status:
        await record_action(actor_id=actor.id, subject_id=link.elder_id, action="end_proxy_link", channel="api",  # type: ignore[attr-defined]
                            now=req.now, detail={"link_id": link.id})
        other = link.elder_id if side == "proxy" else link.proxy_id  # type: ignore[attr-defined]
        await _notify(req, other, f"{actor.name}已解除你们之间的亲情代理关系。", f"proxy_link:{link.id}:ended")
    return await _link_out(link)


# ---------------------------------------------------------------------------- consent and data requests


@router.route("GET", "/me/consents", summary="The privacy notice and my consents", response=ConsentList)
async def get_consents(req: ApiRequest) -> ConsentList:
    """The current notice (to show before binding) and what this account accepted when."""
    account = await req.account()
    rows = await Consent.filter(account_id=account.id).order_by("-id")
    return ConsentList(current=ConsentOut(version=CONSENT_VERSION, text=CONSENT_TEXT, accepted_at=None),
                       accepted=[ConsentOut(version=c.text_version, text=c.text, accepted_at=c.accepted_at.isoformat())
                                 for c in rows])


@router.route("POST", "/me/consents", summary="Accept the current privacy notice", body=ConsentIn,
              response=ConsentOut, status=201)
async def post_consent(req: ApiRequest) -> ConsentOut:
    """Recorded with its time and text version; accepting the same version twice records it once."""
    account = await req.account()
    row = await Consent.filter(account_id=account.id, text_version=CONSENT_VERSION).first()
    if row is None:
        row = await Consent.create(account=account, resident_id=account.resident_id, text_version=CONSENT_VERSION,  # type: ignore[attr-defined]
                                   text=CONSENT_TEXT, accepted_at=req.now)
    return ConsentOut(version=row.text_version, text=row.text, accepted_at=row.accepted_at.isoformat())


@router.route("POST", "/me/subscriptions", summary="Record subscribe-message consents (mini-program)",
              body=SubscriptionsIn, response=SubscriptionsOut, status=201)
async def post_subscriptions(req: ApiRequest) -> SubscriptionsOut:
    """Each accepted template is good for one notice; when none is left (or WeChat refused one with
    43101), GET /me says needs_subscription and the mini-program asks again."""
    account = await req.account()
    return SubscriptionsOut(recorded=await record_consents(account.id, req.body.template_ids, req.now))


@router.route("POST", "/residents/{resident_id}/data-requests", summary="Ask for my data to be deleted",
              body=DataRequestIn, response=DataRequestOut, status=201, errors=(409,))
async def post_data_request(req: ApiRequest) -> DataRequestOut:
    """Community staff carry it out, keeping only what law or open cases require."""
    resident, access, _ = await _access(req, req.path["resident_id"], write=True)
    if access == "staff":
        raise not_found()
    actor = await req.bound_actor()
    row, created = await request_deletion(resident_id=resident.id, by_id=actor.id, now=req.now)
    if created:
        await record_action(actor_id=actor.id, subject_id=resident.id, action="request_deletion", channel="api",
                            now=req.now, detail={"request_id": row.id})
    return _request_out(row)


@router.route("GET", "/data-requests", summary="Data requests I made, or (staff) those in my scope",
              response=DataRequestList, errors=(409,))
async def list_data_requests(req: ApiRequest) -> DataRequestList:
    """Own requests and those for elders I act for; staff who verify also see open ones in scope."""
    actor = await req.bound_actor()
    ids = [actor.id] + [e.id for e in await elders_of(actor.id)]
    rows = list(await DataRequest.filter(resident_id__in=ids).order_by("-id").limit(100))
    seen = {r.id for r in rows}
    if any(r.spec.verifies for r in await active_roles(actor.id)):
        open_rows = DataRequest.filter(status=RequestStatus.OPEN).order_by("id").limit(500)
        for row in await open_rows.prefetch_related("resident"):
            if row.id not in seen and row.resident is not None and await may_verify(actor.id, row.resident):
                rows.append(row)
    return DataRequestList(items=[_request_out(r) for r in rows])


@router.route("POST", "/data-requests/{request_id}/erase", summary="Carry out a deletion request (staff)",
              body=EraseIn, response=DataRequestOut, errors=(409,))
async def erase_request(req: ApiRequest) -> DataRequestOut:
    """Removes the personal data; what a hold requires is kept, and the outcome says what and why."""
    actor = await req.bound_actor()
    row = await DataRequest.get_or_none(id=req.path["request_id"]).prefetch_related("resident")
    if row is None or row.resident is None or not await may_verify(actor.id, row.resident):
        raise not_found()
    resident_id = row.resident.id
    accounts = [a.openid for a in await WechatAccount.filter(resident_id=resident_id, channel__in=["oa", "chat"])]
    row = await erase(request_id=row.id, by_id=actor.id, now=req.now)
    for openid in accounts:
        await req.services.engine.send(openid, f"您的信息删除申请已办理：{row.outcome}。",
                                       key=f"data_request:{row.id}:done:{openid}")
    return _request_out(row)


@router.route("DELETE", "/data-requests/{request_id}", summary="Withdraw my open request",
              response=DataRequestOut, errors=(409,))
async def withdraw_data_request(req: ApiRequest) -> DataRequestOut:
    """Only while it is open."""
    actor = await req.bound_actor()
    row = await DataRequest.get_or_none(id=req.path["request_id"])
    if row is None or row.resident_id is None:  # type: ignore[attr-defined]
        raise not_found()
    if row.resident_id != actor.id and not await acts_for(actor.id, row.resident_id):  # type: ignore[attr-defined]
        raise not_found()
    return _request_out(await withdraw_request(request_id=row.id, resident_id=row.resident_id, now=req.now))  # type: ignore[attr-defined]


# ---------------------------------------------------------------------------- staff


@router.route("GET", "/staff", summary="Role grants I may manage", query=StaffQuery, response=GrantList,
              errors=(409,))
async def list_staff(req: ApiRequest) -> GrantList:
    """Grants of the roles the caller may grant, inside the caller's scope (empty for others)."""
    actor = await req.bound_actor()
    query = StaffRole.all().order_by("id")
    if req.query.role:
        query = query.filter(role=req.query.role)
    if not req.query.include_revoked:
        query = query.filter(revoked_at=None)
    items = []
    if any(r.spec.grants for r in await active_roles(actor.id)):
        for row in await query.limit(1000):
            if await granting_role(actor.id, row.role, row.place()) is not None:
                items.append(await _grant_out(row))
    return GrantList(items=items)


@router.route("POST", "/staff", summary="Grant a role", body=GrantIn, response=GrantOut, status=201,
              errors=(404, 409))
async def post_staff(req: ApiRequest) -> GrantOut:
    """Within the caller's scope and among the roles the caller's role may grant; recorded with who
    granted it. Granting what exists returns the existing grant."""
    actor = await req.bound_actor()
    body: GrantIn = req.body
    person = await Resident.get_or_none(id=body.resident_id, erased_at=None)
    if person is None:
        raise not_found()
    try:
        row, _ = await grant(resident_id=person.id, role=body.role, scope_id=body.scope_id, now=req.now, by=actor)
    except (Forbidden, NotFound):
        raise not_found() from None
    await audit(actor_id=actor.id, subject_id=person.id, action="grant", purpose=f"role:{body.role}", now=req.now,
                detail={"grant_id": row.id, "scope_id": body.scope_id})
    return await _grant_out(row)


@router.route("DELETE", "/staff/{grant_id}", summary="Revoke a role grant", response=GrantOut, errors=(409,))
async def delete_staff(req: ApiRequest) -> GrantOut:
    """The grant stays on record, stamped with who revoked it and when."""
    actor = await req.bound_actor()
    row = await revoke(grant_id=req.path["grant_id"], now=req.now, by=actor)
    await audit(actor_id=actor.id, subject_id=row.resident_id, action="revoke", purpose=f"role:{row.role}",  # type: ignore[attr-defined]
                now=req.now, detail={"grant_id": row.id})
    return await _grant_out(row)

