"""Role menus: one WeChat conditional menu per staff role, shown to followers through user tags.

Staff chat with the same official account as residents. `linli wechat menu` publishes the default
menu (``wechat.menu``) and, for every role that has flows with menu keys, a conditional menu whose
first button, 工作, lists that role's flows (at most five; 菜单 in chat lists them all) followed by
the default menu's first and last buttons (办事 and 我的 in the default menu). A role's menu is
shown to the followers carrying the role's tag.

Which menu someone with several roles sees: WeChat tries conditional menus newest first and
matches a follower carrying several tags on the tag given last (bot.wechat_rules). So that the
order of tagging can never matter, every staff member carries exactly one menu tag, that of their
highest role that has a menu (roles rank in ``models.roles.ROLES`` order, admin highest), and role
menus are published from the lowest role to the highest, so the newest is also the highest.

Tags are created on first use and remembered in ``WechatTag``. `linli staff add` and `remove`
update one person's tags at once (``sync_person``); `linli wechat menu` re-syncs every staff
member's official-account openids against WeChat's own member lists, which repairs whatever an
earlier failure left behind.
"""

from __future__ import annotations

import sys
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from bot import wechat_rules as rules
from bot.config import Config
from bot.engine import Flow
from bot.wechat_setup import menu_problems
from bot.wxclient import WeChatAPIError, WeChatClient, WeChatUnavailable
from models.residents import WechatAccount
from models.roles import ROLES, StaffRole, WechatTag, role_codes

WORK_BUTTON = "工作"
TAG_PREFIX = "邻里·"
SUB_BUTTONS_MAX = 5  # WeChat's menu rule (bot.wechat_setup.menu_problems checks it too)
# A follower whose tagging WeChat refuses on their own account: tried again alone, then reported.
PER_FOLLOWER_ERRORS = frozenset({rules.ERR_INVALID_OPENID, rules.ERR_USER_TAGS_FULL})


def tag_name(role: str) -> str:
    """The name of the role's tag on the official account (within WeChat's 30 bytes)."""
    return TAG_PREFIX + ROLES[role].label


def rank(role: str) -> int:
    return list(ROLES).index(role)


@dataclass(frozen=True)
class RoleMenu:
    role: str
    buttons: list[dict[str, Any]]

    @property
    def tag_name(self) -> str:
        return tag_name(self.role)


class RoleMenuError(Exception):
    """A role menu WeChat would refuse (e.g. a flow title over the byte limit)."""


def role_menus(flows: Iterable[Flow], default: list[dict[str, Any]]) -> list[RoleMenu]:
    """The role menus to publish, lowest role first; RoleMenuError when one breaks WeChat's rules."""
    flows = [f for f in flows if f.roles and f.menu_keys and f.entry_fn is not None]
    kept = [default[0], default[-1]] if len(default) >= 3 else list(default)
    menus = []
    for role in sorted(ROLES, key=rank):
        mine = [f for f in flows if role in f.roles]
        if not mine:
            continue
        work = {"name": WORK_BUTTON, "sub_button": [
            {"type": "click", "name": f.title, "key": f.menu_keys[0]} for f in mine[:SUB_BUTTONS_MAX]]}
        menu = RoleMenu(role, [work, *kept])
        problems = menu_problems(menu.buttons)
        if problems:
            raise RoleMenuError(f"the {role} menu is not valid: " + "; ".join(problems))
        menus.append(menu)
    return menus


def menu_role(codes: Iterable[str], menus: Iterable[RoleMenu]) -> str | None:
    """The role whose menu a person with these roles is shown: the highest that has one."""
    with_menu = {m.role for m in menus}
    held = [c for c in codes if c in with_menu]
    return max(held, key=rank) if held else None


async def staff_openids(resident_id: int) -> list[str]:
    """The person's official-account openids that can carry tags (followers only)."""
    rows = await WechatAccount.filter(resident_id=resident_id, channel="oa", subscribed=True).order_by(
        "id").values_list("openid", flat=True)
    return [str(o) for o in rows]


async def ensure_tag(client: WeChatClient, role: str) -> int:
    """The role's tag id, creating the tag on first use (or adopting one of that name)."""
    name = tag_name(role)
    row = await WechatTag.get_or_none(name=name)
    if row is not None:
        return row.tag_id
    try:
        tag_id = await client.tags_create(name)
    except WeChatAPIError as exc:
        if exc.errcode != rules.ERR_TAG_NAME_TAKEN:
            raise
        # the tag exists on WeChat (an earlier run lost its row, or someone made it by hand)
        listed = {str(t.get("name")): int(t["id"]) for t in await client.tags_get()}
        if name not in listed:
            raise
        tag_id = listed[name]
    row, _ = await WechatTag.get_or_create(name=name, defaults={"tag_id": tag_id})
    return row.tag_id


async def reconcile_tags(client: WeChatClient) -> set[int]:
    """Forget stored tags WeChat no longer has (deleted in the admin console); follow renumbering.

    Returns the ids of the tags the account has.
    """
    listed = {str(t.get("name")): int(t["id"]) for t in await client.tags_get()}
    for row in await WechatTag.all():
        if listed.get(row.name) == row.tag_id:
            continue
        if row.name in listed:
            row.tag_id = listed[row.name]
            await row.save(update_fields=["tag_id"])
        else:
            await row.delete()
    return set(listed.values())


@dataclass
class TagChange:
    openid: str
    added: str = ""
    removed: list[str] = field(default_factory=list)

    def line(self) -> str:
        parts = ([f"打上“{self.added}”"] if self.added else []) + [f"取下“{name}”" for name in self.removed]
        return f"公众号标签：{self.openid} " + "，".join(parts)


async def sync_person(client: WeChatClient, resident_id: int, menus: list[RoleMenu]) -> list[TagChange]:
    """Give the person's followers the tag of their menu role and take off the other role tags.

    WeChat's errors propagate: the caller reports them; `linli wechat menu` repairs later.
    """
    openids = await staff_openids(resident_id)
    if not openids:
        return []
    role = menu_role(await role_codes(resident_id), menus)
    want = await ensure_tag(client, role) if role is not None else None
    ours = {row.tag_id: row.name for row in await WechatTag.all()}
    if not ours:
        return []
    changes = []
    for openid in openids:
        have = [t for t in await client.tags_of(openid) if t in ours]
        change = TagChange(openid)
        for tag in have:
            if tag != want:
                await client.untag_users(tag, [openid])
                change.removed.append(ours[tag])
        if want is not None and want not in have:
            await client.tag_users(want, [openid])
            change.added = ours[want]
        if change.added or change.removed:
            changes.append(change)
    return changes


@dataclass
class PublishReport:
    menus: list[tuple[RoleMenu, int]] = field(default_factory=list)  # each with its tag id
    removed_menus: int = 0  # the previous run's role menus, replaced
    tagged: int = 0
    untagged: int = 0
    failures: list[str] = field(default_factory=list)  # one line per follower WeChat refused

    def lines(self) -> list[str]:
        if not (self.menus or self.removed_menus or self.tagged or self.untagged or self.failures):
            return []
        published = ", ".join(f"{ROLES[m.role].label} (tag {tag_id})" for m, tag_id in self.menus)
        return [f"published {len(self.menus)} role menus" + (f": {published}" if published else ""),
                f"role tags: {self.tagged} followers tagged, {self.untagged} untagged"]


def _rule_tag(matchrule: Any) -> int | None:
    if not isinstance(matchrule, dict):
        return None
    value = matchrule.get("tag_id") or matchrule.get("group_id")  # menu/get says group_id
    return int(value) if value is not None and str(value).isdigit() else None


async def publish_role_menus(client: WeChatClient, config: Config, flows: Iterable[Flow]) -> PublishReport:
    """After the default menu is published: role tags, role menus, and every follower's tags.

    New role menus are added before the previous run's are deleted, so staff never fall back to
    the default menu in between. WeChatAPIError/WeChatUnavailable propagate, except refusals
    about one follower, which are collected in ``failures``.
    """
    menus = role_menus(flows, config.wechat.menu)
    report = PublishReport()
    if not menus and not await WechatTag.exists():
        return report  # role menus were never used on this account: nothing to do or undo
    existing = await reconcile_tags(client)
    tag_ids = {m.role: await ensure_tag(client, m.role) for m in menus}
    ours = {row.tag_id for row in await WechatTag.all()}
    current = await client.menu_get() or {}
    # ours from an earlier run, and any left pointing at a tag deleted since (they never match)
    previous = [str(c["menuid"]) for c in current.get("conditionalmenu", [])
                if (tag := _rule_tag(c.get("matchrule"))) is not None and (tag in ours or tag not in existing)]
    for menu in menus:
        await client.menu_add_conditional(menu.buttons, {"tag_id": str(tag_ids[menu.role])})
        report.menus.append((menu, tag_ids[menu.role]))
    for menuid in previous:
        await client.menu_del_conditional(menuid)
    report.removed_menus = len(previous)
    await _sync_everyone(client, menus, report)
    return report


async def _sync_everyone(client: WeChatClient, menus: list[RoleMenu], report: PublishReport) -> None:
    tags = {row.name: row.tag_id for row in await WechatTag.all()}
    desired: dict[int, set[str]] = {tag_id: set() for tag_id in tags.values()}
    roles: defaultdict[int, set[str]] = defaultdict(set)
    for resident_id, code in await StaffRole.filter(revoked_at=None).values_list("resident_id", "role"):
        roles[int(resident_id)].add(str(code))
    accounts = await WechatAccount.filter(resident_id__in=list(roles), channel="oa", subscribed=True).values_list(
        "resident_id", "openid")
    for resident_id, openid in accounts:
        role = menu_role(roles[int(resident_id)], menus)
        if role is not None and tag_name(role) in tags:
            desired[tags[tag_name(role)]].add(str(openid))
    current = {tag_id: set(await client.tag_members(tag_id)) for tag_id in desired}
    # Untag first: someone moving from one role tag to another never carries both.
    for tag_id, members in current.items():
        report.untagged += await _apply(client.untag_users, tag_id, sorted(members - desired[tag_id]), report)
    for tag_id, wanted in desired.items():
        report.tagged += await _apply(client.tag_users, tag_id, sorted(wanted - current[tag_id]), report)


async def _apply(call: Callable[[int, list[str]], Awaitable[None]], tag_id: int, openids: list[str],
                 report: PublishReport) -> int:
    """(Un)tag in batches; a batch refused because of one follower is retried one by one."""
    done = 0
    for start in range(0, len(openids), rules.TAG_BATCH_MAX):
        batch = openids[start:start + rules.TAG_BATCH_MAX]
        try:
            await call(tag_id, batch)
            done += len(batch)
            continue
        except WeChatAPIError as exc:
            if exc.errcode not in PER_FOLLOWER_ERRORS:
                raise
        for openid in batch:
            try:
                await call(tag_id, [openid])
                done += 1
            except WeChatAPIError as exc:
                if exc.errcode not in PER_FOLLOWER_ERRORS:
                    raise
                report.failures.append(f"could not change the tags of {openid}: {exc}")
    return done


async def menu_command(client: WeChatClient, config: Config, flows: Iterable[Flow] | None = None) -> int:
    """`linli wechat menu`: the default menu, then the role menus and everyone's tags."""
    from bot.db import close_db, ensure_schema, init_db

    if flows is None:
        from handlers import ROUTERS

        flows = ROUTERS
    problems = menu_problems(config.wechat.menu)
    if problems:
        print("linli: wechat.menu is not valid: " + "; ".join(problems), file=sys.stderr)
        return 2
    flows = list(flows)
    try:
        role_menus(flows, config.wechat.menu)
    except RoleMenuError as exc:
        print(f"linli: {exc}", file=sys.stderr)
        return 2
    await ensure_schema(config.database)
    await init_db(config.database)
    try:
        try:
            await client.menu_create(config.wechat.menu)
        except (WeChatAPIError, WeChatUnavailable) as exc:
            print(f"linli: publishing the menu failed: {exc}", file=sys.stderr)
            return 1
        print(f"published the menu: {len(config.wechat.menu)} buttons")
        try:
            report = await publish_role_menus(client, config, flows)
        except (WeChatAPIError, WeChatUnavailable) as exc:
            print(f"linli: publishing the role menus failed: {exc}; run `linli wechat menu` again",
                  file=sys.stderr)
            return 1
        for line in report.lines():
            print(line)
        for failure in report.failures:
            print(f"linli: {failure}", file=sys.stderr)
        return 1 if report.failures else 0
    finally:
        await close_db()
