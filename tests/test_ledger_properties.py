"""Property: any sequence of earning, donating, redeeming, cancelling, using, expiring, reversing and
adjusting, each maybe sent twice with the same key, leaves the books as a plain model says.

After every step: each resident's balance is what the model says, never negative, and equal to
the sum of its entries; each asset's books sum to zero (``check_books``); each item's stock is
never negative and its stock plus its issued and used vouchers is what it started with; the
escrow, expiry and partner accounts hold the prices of the issued, expired and used vouchers (plus
staff corrections on them). A step sent twice has one effect. A refused step was refused for a
reason the model agrees with, and changed nothing. Each example starts from a clean database
with the demo community loaded.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import HealthCheck, event, example, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from tortoise.transactions import in_transaction

from bot.config import Config
from models.demo import load_demo
from models.errors import UserFacingError
from models.ledger import (
    Account,
    AccountKind,
    AlreadyReversed,
    Asset,
    Entry,
    Insufficient,
    Source,
    account,
    balance,
    check_books,
    points_of,
    reverse,
    summed_balance,
    transfer,
)
from models.places import Community, Shop
from models.redemption import (
    CatalogueItem,
    ItemKind,
    LimitReached,
    SoldOut,
    Voucher,
    VoucherStatus,
    cancel_voucher,
    confirm_donation,
    create_donation,
    create_item,
    expire_voucher,
    redeem,
    use_voucher,
)
from models.residents import Resident

T0 = datetime(2026, 11, 27, 2, 0, tzinfo=UTC)
MEMBERS = ("孙志愿", "王秀兰", "张德福")
LIVE = (VoucherStatus.ISSUED, VoucherStatus.USED)  # what holds an item's stock

member = st.integers(0, len(MEMBERS) - 1)
pair = st.permutations(range(len(MEMBERS))).map(lambda p: (p[0], p[1]))
pick = st.integers(0, 31)  # an index into what exists when the step runs (vouchers, entries), modulo
item_spec = st.fixed_dictionaries({
    "price": st.integers(1, 40), "stock": st.integers(0, 3), "limit": st.integers(0, 2), "days": st.integers(1, 3)})
redeem_step = st.tuples(st.just("redeem"), member, st.integers(0, 1))
step = st.one_of(
    st.tuples(st.just("earn"), member, st.integers(1, 60)),
    redeem_step,
    st.tuples(st.just("give"), pair, st.integers(1, 40)),  # a ledger transfer member → member
    st.tuples(st.just("donate"), pair, st.integers(1, 40)),  # a donation written down, then confirmed
    redeem_step,  # twice as likely as the rest: most other steps need a voucher
    st.tuples(st.just("cancel"), pick),
    st.tuples(st.just("use"), pick),
    st.tuples(st.just("expire"), pick),
    st.tuples(st.just("reverse"), pick),
    st.tuples(st.just("adjust"), member, st.integers(-30, -1) | st.integers(1, 30)),
)
script = st.lists(st.tuples(step, st.booleans()), min_size=3, max_size=16)  # (step, sent twice)
funds = st.lists(st.integers(0, 80), min_size=len(MEMBERS), max_size=len(MEMBERS))  # each member's first earning


@dataclass
class Model:
    """What the books must say, moved by hand by what each step was allowed to do."""

    members: list[int]  # resident ids
    staff: int
    clerk: int
    community: int
    shop: int
    items: list[int]
    start_stock: dict[int, int]
    balances: dict[int, int] = field(default_factory=dict)
    now: datetime = T0


async def _world(specs: list[dict[str, int]], start: list[int]) -> Model:
    """The demo community, two items made from the drawn specs (the shop's goods, the community's
    service) and the members' first earnings."""
    community = await Community.get(name="米家社区")
    shop = await Shop.get(name="米家便民超市")
    staff = await Resident.get(name="周社工")
    clerk = await Resident.get(name="郑商户")
    members = [(await Resident.get(name=name)).id for name in MEMBERS]
    items = []
    for n, (spec, shop_id) in enumerate(zip(specs, (shop.id, None), strict=True)):
        items.append(await create_item(
            community_id=community.id, by_id=staff.id, kind=ItemKind.GOODS if shop_id else ItemKind.SERVICE,
            name=f"测试项目{n}", price=spec["price"], stock=spec["stock"], valid_days=spec["days"], now=T0,
            per_person_limit=spec["limit"], shop_id=shop_id))
    model = Model(members, staff.id, clerk.id, community.id, shop.id, [i.id for i in items],
                  {i.id: i.stock for i in items}, dict.fromkeys(members, 0))
    issuing = await _system(model, AccountKind.ISSUING)
    for resident_id, amount in zip(members, start, strict=True):
        if amount:
            await transfer(from_account=issuing, to_account=await points_of(resident_id, T0), amount=amount,
                           source=Source.ACTIVITY, key=f"fund:{resident_id}", now=T0, memo="测试活动")
            model.balances[resident_id] = amount
    return model


async def _system(model: Model, kind: str) -> Account:
    return await account(Asset.POINTS, kind, model.shop if kind == AccountKind.PARTNER else model.community,
                         model.now)


async def _ours(query: Any) -> list[Any]:
    """The vouchers or entries this example's steps made (keys ``p:``), oldest first."""
    return await query.filter(key__startswith="p:").order_by("id")


async def _run(model: Model, n: int, op: tuple[Any, ...], target: Any) -> Any:
    """Do one step; what it returns identifies the outcome (compared when the step is sent again)."""
    kind, *args = op
    m, now = model.members, model.now
    if kind == "earn":
        who, amount = args
        return (await transfer(from_account=await _system(model, AccountKind.ISSUING),
                               to_account=await points_of(m[who], now), amount=amount, source=Source.ACTIVITY,
                               key=f"p:{n}", now=now, memo="测试活动")).entry.id
    if kind == "give":
        (a, b), amount = args
        return (await transfer(from_account=await points_of(m[a], now), to_account=await points_of(m[b], now),
                               amount=amount, source=Source.DONATION, key=f"p:{n}", now=now,
                               actor_id=m[a])).entry.id
    if kind == "donate":
        (a, b), amount = args
        donation = await create_donation(m[a], m[b], amount, note="", key=f"p:{n}", now=now)
        return (await confirm_donation(donation.id, donor_id=m[a], now=now)).id
    if kind == "redeem":
        who, which = args
        return (await redeem(m[who], model.items[which], key=f"p:{n}", now=now)).id
    if kind == "cancel":
        return (await cancel_voucher(target.id, by_id=target.resident_id, now=now)).status
    if kind == "use":
        by = model.clerk if target.item.shop_id else model.staff
        return (await use_voucher(target.code, by_id=by, now=now)).status
    if kind == "expire":
        return await expire_voucher(target.id, now)
    if kind == "reverse":
        return (await reverse(target.id, reason="测试冲正", actor_id=model.staff, key=f"p:{n}", now=now)).entry.id
    assert kind == "adjust"
    who, amount = args
    issuing, mine = await _system(model, AccountKind.ISSUING), await points_of(m[who], now)
    source, to = (issuing, mine) if amount > 0 else (mine, issuing)
    return (await transfer(from_account=source, to_account=to, amount=abs(amount), source=Source.CORRECTION,
                           key=f"p:{n}", now=now, actor_id=model.staff, reason="测试更正")).entry.id


async def _target(model: Model, op: tuple[Any, ...]) -> Any:
    """The voucher or entry a step acts on (None: nothing to act on yet)."""
    kind, *args = op
    if kind in ("cancel", "use", "expire"):
        vouchers = await _ours(Voucher.all().prefetch_related("item"))
        issued = [v for v in vouchers if v.status == VoucherStatus.ISSUED]
        among = issued if issued and args[0] % 4 else vouchers  # mostly an unused one, sometimes any
        return among[args[0] % len(among)] if among else None
    if kind == "reverse":  # any entry of this example: earnings, donations, the vouchers' moves, reversals
        entries = await Entry.all().order_by("id")
        return entries[args[0] % len(entries)] if entries else None
    return None


async def _apply(model: Model, n: int, op: tuple[Any, ...], twice: bool) -> None:
    """Run the step (twice when asked), check why it was refused if it was, and move the model."""
    kind = op[0]
    target = await _target(model, op)
    if kind in ("cancel", "use", "expire", "reverse") and target is None:
        return
    if kind == "expire":
        model.now = max(model.now, target.expires_at)  # the clock moves on to the end of its validity
    vouchers_before = {v.id: v.status for v in await _ours(Voucher.all())}
    items = {i.id: i for i in await CatalogueItem.filter(id__in=model.items)}
    reversed_before = kind == "reverse" and await Entry.filter(reverses_id=target.id).exists()
    outcomes: list[tuple[str, Any]] = []
    for _attempt in range(2 if twice else 1):
        try:
            outcomes.append(("ok", await _run(model, n, op, target)))
        except UserFacingError as error:
            outcomes.append(("refused", type(error)))
            if outcomes[0][0] == "refused":  # after a success, the second copy is checked below
                await _check_refusal(model, op, error, target, items, reversed_before)
    if twice:
        first, second = outcomes
        if kind == "use" and first[0] == "ok":
            assert second[0] == "refused", "a voucher used twice"
        elif kind == "expire" and first == ("ok", True):
            assert second == ("ok", False), "a voucher expired twice"
        else:
            assert first == second, f"{kind} sent twice: {outcomes}"
    event(f"{kind}: {outcomes[0][0] if outcomes[0][0] == 'ok' else outcomes[0][1].__name__}")
    await _move(model, op, outcomes[0], target, vouchers_before, items)
    model.now += timedelta(minutes=1)


async def _check_refusal(model: Model, op: tuple[Any, ...], error: UserFacingError, target: Any,
                         items: dict[int, CatalogueItem], reversed_before: bool) -> None:
    """A refusal the model agrees with (anything else fails the example)."""
    kind, *args = op
    m = model.members
    if kind == "redeem":
        who, which = args
        item = items[model.items[which]]
        if isinstance(error, Insufficient):
            assert model.balances[m[who]] < item.price
        elif isinstance(error, SoldOut):
            assert item.stock == 0
        elif isinstance(error, LimitReached):
            held = await Voucher.filter(resident_id=m[who], item_id=item.id, status__in=LIVE).count()
            assert item.per_person_limit and held >= item.per_person_limit
        else:
            raise error
    elif kind in ("give", "donate"):
        (a, _b), amount = args
        assert isinstance(error, Insufficient) and model.balances[m[a]] < amount, error.message
    elif kind == "adjust":
        who, amount = args
        assert isinstance(error, Insufficient) and model.balances[m[who]] < -amount, error.message
    elif kind == "reverse":
        if target.reverses_id is not None:
            assert "不能再冲正" in error.message
        elif reversed_before:
            assert isinstance(error, AlreadyReversed)
        else:  # it would take back points the member has spent
            assert isinstance(error, Insufficient), error.message
            owner = await Account.get(id=target.to_account_id)
            assert owner.resident_id is not None and model.balances[owner.resident_id] < target.amount
    elif kind in ("cancel", "use"):
        assert target.status != VoucherStatus.ISSUED or model.now >= target.expires_at, error.message
    else:
        raise error


async def _move(model: Model, op: tuple[Any, ...], outcome: tuple[str, Any], target: Any,
                vouchers_before: dict[int, str], items: dict[int, CatalogueItem]) -> None:
    """Move the model by the step's effect, and check the vouchers changed only as it allows."""
    kind, *args = op
    m = model.members
    after = {v.id: v for v in await _ours(Voucher.all())}
    changed = {vid: v.status for vid, v in after.items() if vouchers_before.get(vid) != v.status}
    if outcome[0] == "ok" and kind == "redeem":
        who, which = args
        item = items[model.items[which]]
        voucher = after[outcome[1]]
        assert changed == {voucher.id: VoucherStatus.ISSUED} and voucher.price == item.price
        assert model.balances[m[who]] >= item.price and item.stock > 0
        model.balances[m[who]] -= item.price
        return
    if kind in ("cancel", "use", "expire"):
        allowed = {"cancel": VoucherStatus.CANCELLED, "use": VoucherStatus.USED, "expire": VoucherStatus.EXPIRED}
        if changed:
            assert list(changed) == [target.id] and vouchers_before[target.id] == VoucherStatus.ISSUED
            # a voucher past its validity expires when someone tries to cancel or use it
            due = model.now >= target.expires_at
            assert changed[target.id] == (VoucherStatus.EXPIRED if due else allowed[kind]), (kind, changed)
            if changed[target.id] == VoucherStatus.CANCELLED:
                model.balances[target.resident_id] += target.price
        return
    assert not changed, f"{kind} changed vouchers {changed}"
    if outcome[0] != "ok":
        return
    if kind == "earn":
        model.balances[m[args[0]]] += args[1]
    elif kind in ("give", "donate"):
        (a, b), amount = args
        model.balances[m[a]] -= amount
        model.balances[m[b]] += amount
    elif kind == "adjust":
        model.balances[m[args[0]]] += args[1]
    elif kind == "reverse":
        for account_id, sign in ((target.to_account_id, -1), (target.from_account_id, 1)):
            owner = await Account.get(id=account_id)
            if owner.resident_id is not None:  # a member's points (the rest are system accounts)
                model.balances[owner.resident_id] += sign * target.amount


async def _check(model: Model) -> None:
    """The invariants, read straight from the database."""
    assert await check_books() == {Asset.POINTS: 0, Asset.FEN: 0}
    for resident_id in model.members:
        mine = await points_of(resident_id, model.now)
        assert await balance(mine) == await summed_balance(mine.id) == model.balances[resident_id] >= 0
    vouchers = await _ours(Voucher.all().prefetch_related("item"))
    for item in await CatalogueItem.filter(id__in=model.items):
        live = sum(1 for v in vouchers if v.item_id == item.id and v.status in LIVE)
        assert item.stock >= 0
        assert item.stock + live == model.start_stock[item.id], f"{item.name}: stock {item.stock}, live {live}"
    held = {
        AccountKind.ESCROW: sum(v.price for v in vouchers if v.status == VoucherStatus.ISSUED),
        AccountKind.EXPIRY: sum(v.price for v in vouchers if v.status == VoucherStatus.EXPIRED),
        AccountKind.PARTNER: sum(v.price for v in vouchers if v.status == VoucherStatus.USED and v.item.shop_id),
    }
    for kind, expected in held.items():
        acct = await _system(model, kind)
        corrections = sum(e.amount for e in await Entry.filter(source=Source.CORRECTION, to_account_id=acct.id)) \
            - sum(e.amount for e in await Entry.filter(source=Source.CORRECTION, from_account_id=acct.id))
        assert await summed_balance(acct.id) - corrections == expected, kind


class _Rollback(Exception):
    """Ends an example: everything it wrote is rolled back, so the next one starts from the demo alone."""


LIFECYCLE = [  # every kind of step, each at least once with an effect, as a fixed first example
    (("redeem", 0, 0), True), (("redeem", 0, 0), False), (("use", 1), True), (("redeem", 1, 1), False),
    (("cancel", 1), True), (("redeem", 1, 1), True), (("redeem", 2, 1), False), (("expire", 1), True),
    (("use", 1), False), (("donate", (0, 1), 5), True), (("give", (1, 2), 3), False), (("earn", 2, 7), False),
    (("reverse", 4), True), (("reverse", 0), False), (("reverse", 8), False), (("adjust", 2, -1), True),
    (("adjust", 1, 4), False),
]


@hsettings(suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(specs=st.lists(item_spec, min_size=2, max_size=2), start=funds, steps=script)
@example(specs=[{"price": 10, "stock": 2, "limit": 1, "days": 1}, {"price": 5, "stock": 2, "limit": 0, "days": 2}],
         start=[50, 20, 0], steps=LIFECYCLE)
async def test_any_sequence_of_steps_keeps_the_books(db: Config, specs: list[dict[str, int]], start: list[int],
                                                     steps: list[Any]) -> None:
    # The database is wiped once for the test, the demo committed once; each example runs in one
    # transaction that is rolled back (each operation's own transaction becomes a savepoint in it).
    await load_demo(T0)
    try:
        async with in_transaction():
            model = await _world(specs, start)
            await _check(model)
            for n, (op, twice) in enumerate(steps):
                await _apply(model, n, op, twice)
                await _check(model)
            raise _Rollback
    except _Rollback:
        pass
