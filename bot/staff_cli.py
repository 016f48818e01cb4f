"""`linli staff add|list|remove`: grant, list and revoke staff roles from the command line.

The rules are models.roles' (grant, revoke, who may grant what where); this module resolves what
an operator types (a mobile, a role code or label, a scope name or id) and prints the outcome in
Chinese. A grant without ``--by`` is recorded as made on the command line ("cli:<OS user>");
with ``--by`` the named person must hold a role that may grant it in that scope.

After a grant or a revocation the person's official-account followers get the tag of their role
menu at once (bot.role_menus). WeChat refusing it does not undo the grant: the failure is printed
and the next `linli wechat menu` repairs the tags. Every error is one line on stderr, exit code 1,
and nothing changed.
"""

from __future__ import annotations

import argparse
import getpass
import sys
import unicodedata
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from bot.clock import Clock
from bot.config import Config
from bot.engine import Flow
from bot.role_menus import role_menus, staff_openids, sync_person
from bot.wxclient import WeChatAPIError, WeChatClient, WeChatUnavailable
from models.errors import Forbidden, NotFound, UserFacingError
from models.places import Canteen, Community, Department, Grid, Shop, SubDistrict
from models.residents import Resident, mask_mobile, normalize_mobile
from models.roles import GRANTABLE, ROLES, SCOPE_LABELS, Role, RoleSpec, Scope, StaffRole, WechatTag, grant, revoke

Print = Callable[[str], None]

# scope kind -> (model, the relation naming its parent, used to tell same-named places apart)
PLACES: dict[str, tuple[Any, str | None]] = {
    Scope.GRID: (Grid, "community"),
    Scope.COMMUNITY: (Community, "sub_district"),
    Scope.SUB_DISTRICT: (SubDistrict, None),
    Scope.CANTEEN: (Canteen, "community"),
    Scope.SHOP: (Shop, "community"),
    Scope.DEPARTMENT: (Department, "sub_district"),
}


def add_staff_parser(sub: Any, config_arg: Callable[[argparse.ArgumentParser], None]) -> None:
    """The ``staff`` command and its subcommands, on the ``linli`` parser."""
    staff = sub.add_parser(
        "staff", help="grant, list and revoke staff roles",
        description="Grant, list and revoke staff roles. ROLE is a code (grid_worker) or a label "
        "(网格员); a scope is a name or an id, e.g. 第一网格, 米家社区/第一网格 or 3.")
    config_arg(staff)
    staff_sub = staff.add_subparsers(dest="staff_command", required=True, metavar="STAFF_COMMAND")
    add = staff_sub.add_parser(
        "add", help="grant a role to the resident with this mobile",
        description="Grant a role to the resident with this mobile. Without --by the grant is "
        "recorded as made on the command line by the OS user.")
    config_arg(add)
    add.add_argument("mobile", metavar="MOBILE")
    add.add_argument("role", metavar="ROLE")
    add.add_argument("--scope", metavar="NAME_OR_ID", help="the grid, community, sub-district, canteen, "
                     "shop or department the role applies to (the role decides which)")
    add.add_argument("--by", metavar="MOBILE", help="the person granting it (must be allowed to)")
    listing = staff_sub.add_parser("list", help="list the grants: who, what, where, granted by whom and when",
                                   description="List the active grants (with --all the revoked ones too).")
    config_arg(listing)
    listing.add_argument("--role", metavar="ROLE")
    listing.add_argument("--community", metavar="NAME_OR_ID")
    listing.add_argument("--all", action="store_true", help="include revoked grants")
    remove = staff_sub.add_parser(
        "remove", help="revoke a grant (it stays on record, stamped)",
        description="Revoke a grant by its number (see `linli staff list`), or by MOBILE ROLE "
        "[--scope]. Revoked grants stay on record with who revoked them and when.")
    config_arg(remove)
    remove.add_argument("target", nargs="+", metavar="GRANT_ID | MOBILE ROLE")
    remove.add_argument("--scope", metavar="NAME_OR_ID")
    remove.add_argument("--by", metavar="MOBILE", help="the person revoking it (must be allowed to)")


def cli_label() -> str:
    try:
        user = getpass.getuser()
    except (OSError, KeyError):  # no user name in the environment or the password database
        user = "unknown"
    return f"cli:{user}"


def _stderr(line: str) -> None:
    print(line, file=sys.stderr)


async def staff_command(config: Config, args: argparse.Namespace) -> int:
    """The ``linli staff`` entry: database, then the WeChat client when credentials are set."""
    import aiohttp

    from bot.db import close_db, ensure_schema, init_db
    from bot.services import uses_fake_wechat
    from bot.store import open_store
    from handlers import ROUTERS

    await ensure_schema(config.database)
    await init_db(config.database)
    try:
        if uses_fake_wechat(config):
            return await run_staff(args, config=config, client=None, flows=ROUTERS, clock=Clock())
        store = open_store(config.redis)
        try:
            async with aiohttp.ClientSession() as session:
                client = WeChatClient(session, store, config.wechat, config.miniprogram)
                return await run_staff(args, config=config, client=client, flows=ROUTERS, clock=Clock())
        finally:
            await store.aclose()
    finally:
        await close_db()


async def run_staff(
    args: argparse.Namespace, *, config: Config, client: WeChatClient | None, flows: Iterable[Flow],
    clock: Clock, out: Print = print, err: Print = _stderr, label: str | None = None,
) -> int:
    """Run one ``staff`` subcommand on an initialised database; ``client`` None: no WeChat."""
    staff = _Staff(config, client, list(flows), clock, out, err, label or cli_label())
    try:
        if args.staff_command == "add":
            return await staff.add(args.mobile, args.role, args.scope, args.by)
        if args.staff_command == "list":
            return await staff.list(args.role, args.community, args.all)
        return await staff.remove(args.target, args.scope, args.by)
    except UserFacingError as exc:
        err(f"linli: {exc.message}")
        return 1


# ---------------------------------------------------------------------------- what the operator typed


async def find_resident(text: str, *, option: str = "") -> Resident:
    where = f"（{option}）" if option else ""
    mobile = normalize_mobile(text)
    resident = await Resident.get_or_none(mobile=mobile)
    if resident is None:
        raise NotFound(f"没有手机号为 {mobile} 的居民档案{where}。请先让其绑定，或由社区录入档案。")
    if resident.erased_at is not None:
        raise UserFacingError(f"手机号为 {mobile} 的居民档案已删除个人信息{where}，不能办理授权。")
    return resident


def resolve_role(text: str) -> str:
    """A role code from its code (grid_worker) or its label (网格员)."""
    typed = text.strip()
    code = typed.lower() if typed.lower() in ROLES else next(
        (c for c, spec in ROLES.items() if spec.label == typed), None)
    if code == Role.RESIDENT:
        raise UserFacingError("居民是每个人的身份，不需要授予。")
    if code is None:
        choices = "、".join(f"{ROLES[c].label}（{c}）" for c in GRANTABLE)
        raise UserFacingError(f"没有这个角色：{typed}。可选：{choices}")
    return code


async def resolve_place(kind: str, text: str) -> tuple[int, str]:
    """A place of this kind by id or name (optionally “上级/名称”); returns (id, display name)."""
    model, parent = PLACES[kind]
    label = SCOPE_LABELS[kind]
    typed = text.strip()
    if typed.isdigit():
        found = await model.filter(id=int(typed))
        if not found:
            raise NotFound(f"没有编号为 {typed} 的{label}。")
    else:
        parent_name, _, name = typed.rpartition("/") if parent else ("", "", typed)
        query = model.filter(name=name.strip())
        if parent_name.strip():
            query = query.filter(**{f"{parent}__name": parent_name.strip()})
        found = await query.order_by("id")
        if not found:
            raise NotFound(f"没有找到{label}“{typed}”。")
    if parent:
        for place in found:
            await place.fetch_related(parent)
    if len(found) > 1:
        choices = "、".join(f"{p.id}（{_display(p, parent, full=True)}）" for p in found)
        raise UserFacingError(f"有 {len(found)} 个{label}叫“{typed}”，请用编号或“上级/名称”指明：{choices}")
    return found[0].id, _display(found[0], parent)


def _display(place: Any, parent: str | None, *, full: bool = False) -> str:
    """Grids, canteens and shops with their community (“米家社区/第一网格”); the rest by name."""
    if parent and (full or parent == "community"):
        return f"{getattr(place, parent).name}/{place.name}"
    return str(place.name)


async def resolve_scope(spec: RoleSpec, text: str | None) -> tuple[int | None, str]:
    if spec.scope == Scope.GLOBAL:
        if text:
            raise UserFacingError(f"{spec.label}的范围是全部，不需要 --scope。")
        return None, SCOPE_LABELS[Scope.GLOBAL]
    if not text or not text.strip():
        raise UserFacingError(f"授予{spec.label}需要指定{SCOPE_LABELS[spec.scope]}：--scope 名称或编号。")
    return await resolve_place(spec.scope, text)


async def scope_names() -> dict[tuple[str, int], str]:
    """Every place's display name by (scope kind, id), for listing grants without a query each."""
    names: dict[tuple[str, int], str] = {}
    for kind, (model, parent) in PLACES.items():
        query = model.all()
        for place in await (query.prefetch_related(parent) if parent else query):
            names[(kind, place.id)] = _display(place, parent)
    return names


def who(person: Resident) -> str:
    return f"{person.name}（{mask_mobile(person.mobile)}）" if person.mobile else person.name


# ---------------------------------------------------------------------------- the subcommands


class _Staff:
    def __init__(self, config: Config, client: WeChatClient | None, flows: list[Flow], clock: Clock,
                 out: Print, err: Print, label: str) -> None:
        self.config = config
        self.client = client
        self.flows = flows
        self.clock = clock
        self.out = out
        self.err = err
        self.label = label
        self.tz = ZoneInfo(config.community.timezone)

    def _time(self, when: datetime | None) -> str:
        return when.astimezone(self.tz).strftime("%Y-%m-%d %H:%M") if when else "—"

    async def add(self, mobile: str, role_text: str, scope_text: str | None, by_mobile: str | None) -> int:
        resident = await find_resident(mobile)
        role = resolve_role(role_text)
        spec = ROLES[role]
        scope_id, scope = await resolve_scope(spec, scope_text)
        by = await find_resident(by_mobile, option="--by") if by_mobile else None
        try:
            row, created = await grant(resident_id=resident.id, role=role, scope_id=scope_id,
                                       now=self.clock.now(), by=by, by_label=self.label)
        except Forbidden:
            assert by is not None
            raise Forbidden(f"{who(by)}没有在“{scope}”授予{spec.label}的权限，未作更改。") from None
        if not created:
            raise UserFacingError(f"{who(resident)}已有这项授权（编号 {row.id}：{spec.label} · {scope}，"
                                  f"{self._time(row.granted_at)} 授予），未作更改。")
        granter = f"{who(by)}经 {self.label}" if by else self.label
        self.out(f"已授予 {who(resident)}{spec.label} · {scope}（授权编号 {row.id}，由 {granter} 授予）。")
        await self._sync(resident, "授权已生效")
        return 0

    async def remove(self, target: list[str], scope_text: str | None, by_mobile: str | None) -> int:
        row = await self._grant_to_remove(target, scope_text)
        resident = await Resident.get(id=row.resident_id)  # type: ignore[attr-defined]
        spec = ROLES[row.role]
        scope = (await scope_names()).get((row.scope_kind, row.scope_id or 0), SCOPE_LABELS[Scope.GLOBAL])
        if row.revoked_at is not None:
            raise UserFacingError(f"授权 {row.id}（{who(resident)}{spec.label} · {scope}）已于 "
                                  f"{self._time(row.revoked_at)} 撤销，未作更改。")
        by = await find_resident(by_mobile, option="--by") if by_mobile else None
        try:
            await revoke(grant_id=row.id, now=self.clock.now(), by=by, by_label=self.label)
        except NotFound:
            if by is None:
                raise
            raise Forbidden(f"{who(by)}没有撤销这项授权（{spec.label} · {scope}）的权限，未作更改。") from None
        self.out(f"已撤销授权 {row.id}：{who(resident)}{spec.label} · {scope}。记录保留，可用 "
                 "linli staff list --all 查看。")
        await self._sync(resident, "授权已撤销")
        return 0

    async def _grant_to_remove(self, target: list[str], scope_text: str | None) -> StaffRole:
        if len(target) == 1:
            if not target[0].isdigit():
                raise UserFacingError("请给出授权编号（见 linli staff list），或“手机号 角色”。")
            if scope_text:
                raise UserFacingError("按授权编号撤销时不需要 --scope。")
            row = await StaffRole.get_or_none(id=int(target[0]))
            if row is None:
                raise NotFound(f"没有编号为 {target[0]} 的授权。")
            return row
        if len(target) != 2:
            raise UserFacingError("请给出授权编号（见 linli staff list），或“手机号 角色”。")
        resident = await find_resident(target[0])
        role = resolve_role(target[1])
        spec = ROLES[role]
        query = StaffRole.filter(resident_id=resident.id, role=role, revoked_at=None)
        if scope_text:
            scope_id, _ = await resolve_scope(spec, scope_text)
            query = query.filter(scope_id=scope_id)
        rows = await query.order_by("id")
        if not rows:
            where = "（在这个范围）" if scope_text else ""
            raise NotFound(f"{who(resident)}没有有效的{spec.label}授权{where}。")
        if len(rows) > 1:
            names = await scope_names()
            choices = "、".join(f"{r.id}（{names.get((r.scope_kind, r.scope_id or 0), '')}）" for r in rows)
            raise UserFacingError(
                f"{who(resident)}有 {len(rows)} 项{spec.label}授权，请用授权编号或 --scope 指明：{choices}")
        return rows[0]

    async def list(self, role_text: str | None, community_text: str | None, everything: bool) -> int:
        query = StaffRole.all() if everything else StaffRole.filter(revoked_at=None)
        if role_text:
            query = query.filter(role=resolve_role(role_text))
        if community_text:
            community_id, _ = await resolve_place(Scope.COMMUNITY, community_text)
            query = query.filter(community_id=community_id)
        rows = await query.order_by("id").prefetch_related("resident", "granted_by", "revoked_by")
        if not rows:
            self.out("没有符合条件的授权。")
            return 0
        names = await scope_names()
        header = ["编号", "姓名", "手机", "角色", "范围", "授予人", "授予时间"]
        if everything:
            header += ["撤销人", "撤销时间"]
        table = []
        for row in rows:
            person = row.resident
            cells = [str(row.id), person.name, mask_mobile(person.mobile) if person.mobile else "—",
                     ROLES[row.role].label if row.role in ROLES else row.role,
                     names.get((row.scope_kind, row.scope_id or 0), SCOPE_LABELS[Scope.GLOBAL]),
                     _actor(row.granted_by, row.granted_by_label), self._time(row.granted_at)]
            if everything:
                revoked = row.revoked_at is not None
                cells += [_actor(row.revoked_by, row.revoked_by_label) if revoked else "—",
                          self._time(row.revoked_at)]
            table.append(cells)
        for line in render_table(header, table):
            self.out(line)
        revoked_count = sum(r.revoked_at is not None for r in rows)
        self.out(f"共 {len(rows)} 项授权" + (f"，其中 {revoked_count} 项已撤销。" if everything else "。"))
        return 0

    async def _sync(self, resident: Resident, done: str) -> None:
        """The person's role-menu tag on the official account; a failure is reported, not raised."""
        menus = role_menus(self.flows, self.config.wechat.menu)
        if not menus and not await WechatTag.exists():
            return
        if not await staff_openids(resident.id):
            return
        if self.client is None:
            self.out("（未配置微信 appid/secret，公众号工作菜单的标签未更新；配置后运行 linli wechat menu。）")
            return
        try:
            changes = await sync_person(self.client, resident.id, menus)
        except (WeChatAPIError, WeChatUnavailable) as exc:
            self.err(f"linli: {done}，但公众号工作菜单的标签没有更新（{exc}）。运行 linli wechat menu 可补上。")
            return
        for change in changes:
            self.out(change.line())


def _actor(person: Resident | None, label: str) -> str:
    if person is not None:
        return f"{person.name}（{label}）" if label else person.name
    return label or "—"


def _width(text: str) -> int:
    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)


def render_table(header: list[str], rows: list[list[str]]) -> list[str]:
    """Columns padded by display width (a Chinese character takes two columns)."""
    widths = [max(_width(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return "  ".join(c + " " * (w - _width(c)) for c, w in zip(cells, widths, strict=True)).rstrip()

    return [line(header), line(["-" * w for w in widths]), *(line(r) for r in rows)]
