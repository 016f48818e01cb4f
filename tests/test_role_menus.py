"""Role menus: WeChat user tags and conditional menus, against the fake WeChat API over HTTP.

So that the menus do not depend on which shipped staff flows have menu keys, these tests use the
shipped residents' flows plus two staff flows of their own (待办工单 for grid workers and
community staff, 值班安排 for community staff); everything else is the code `linli wechat menu`
and `linli staff` run.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest

from bot import wechat_rules as rules
from bot.clock import FrozenClock
from bot.config import DEFAULT_MENU, Config
from bot.engine import Done, Flow
from bot.role_menus import (
    WORK_BUTTON,
    RoleMenuError,
    publish_role_menus,
    role_menus,
    tag_name,
)
from bot.store import open_store
from bot.testing import FakeWeChat
from bot.wxclient import WeChatAPIError, WeChatClient
from handlers import ROUTERS
from models.demo import load_demo
from models.residents import Resident, WechatAccount
from models.roles import GRANTABLE, Role, StaffRole, WechatTag
from tests.test_staff_cli import WANG, ZHANG, ZHOU_STAFF, staff
from tests.wechat import WeChatPusher

SECRET = "role-menu-secret"
BATCH_TAG = "/cgi-bin/tags/members/batchtagging"
BATCH_UNTAG = "/cgi-bin/tags/members/batchuntagging"

cases = Flow("cases", "待办工单", menu_keys=("CASES",), roles=(Role.GRID_WORKER, Role.COMMUNITY_STAFF))
duty = Flow("duty", "值班安排", menu_keys=("DUTY",), roles=(Role.COMMUNITY_STAFF,))


@cases.entry
async def list_cases() -> Done:
    """No cases in these tests."""
    return Done("暂无待办工单。")


@duty.entry
async def show_duty() -> Done:
    """No rota in these tests."""
    return Done("暂无值班安排。")


RESIDENT_FLOWS = [f for f in ROUTERS if not f.roles]
FLOWS = [*RESIDENT_FLOWS, cases, duty]
GRID_MENU = [{"name": WORK_BUTTON, "sub_button": [{"type": "click", "name": "待办工单", "key": "CASES"}]},
             DEFAULT_MENU[0], DEFAULT_MENU[-1]]
STAFF_MENU = [{"name": WORK_BUTTON, "sub_button": [{"type": "click", "name": "待办工单", "key": "CASES"},
                                                   {"type": "click", "name": "值班安排", "key": "DUTY"}]},
              DEFAULT_MENU[0], DEFAULT_MENU[-1]]


@pytest.fixture
async def cfg(db: Config) -> Config:
    """The demo sub-district, and an official account with credentials (the fake's)."""
    await load_demo(datetime(2026, 11, 1, tzinfo=UTC))
    return db.replace(wechat={"secret": SECRET})


@pytest.fixture
async def fake(cfg: Config, clock: FrozenClock) -> AsyncIterator[FakeWeChat]:
    async with FakeWeChat(clock, appid=cfg.wechat.appid, secret=SECRET) as server:
        yield server


@pytest.fixture
async def wx(cfg: Config, fake: FakeWeChat) -> AsyncIterator[WeChatClient]:
    store = open_store(cfg.redis)
    async with aiohttp.ClientSession() as session:
        yield WeChatClient(session, store, cfg.wechat, base_url=fake.url)
    await store.aclose()


async def follow(openid: str, mobile: str, *, channel: str = "oa", subscribed: bool = True) -> None:
    """An account of the resident with this mobile (bound already)."""
    resident = await Resident.get(mobile=mobile)
    await WechatAccount.create(openid=openid, channel=channel, resident=resident, subscribed=subscribed,
                               created_at=datetime(2026, 11, 1, tzinfo=UTC))


async def publish(wx: WeChatClient, cfg: Config) -> Any:
    await wx.menu_create(cfg.wechat.menu)
    return await publish_role_menus(wx, cfg, FLOWS)


def work_keys(buttons: list[dict[str, Any]] | None) -> list[str]:
    """The keys under the 工作 button ([] for the default menu)."""
    assert buttons is not None
    first = buttons[0]
    return [b["key"] for b in first.get("sub_button", [])] if first["name"] == WORK_BUTTON else []


# ---------------------------------------------------------------------------- linli wechat menu


async def test_menu_publishes_one_menu_per_role_and_tags_staff(wx: WeChatClient, fake: FakeWeChat, cfg: Config) -> None:
    await follow("o-li", "13904180001")  # 李网格, grid worker
    await follow("o-zhou", ZHOU_STAFF)  # 周社工, community staff
    await follow("o-wang", WANG)  # a resident
    await follow("o-sun", "13904180004")  # 孙志愿, a volunteer: no role menu

    report = await publish(wx, cfg)

    grid, community = fake.tag_id(tag_name(Role.GRID_WORKER)), fake.tag_id(tag_name(Role.COMMUNITY_STAFF))
    assert grid is not None and community is not None
    assert sorted(fake.tags.values()) == sorted([tag_name(Role.GRID_WORKER), tag_name(Role.COMMUNITY_STAFF)])
    assert {t.name: t.tag_id for t in await WechatTag.all()} == {
        tag_name(Role.GRID_WORKER): grid, tag_name(Role.COMMUNITY_STAFF): community}
    # published lowest role first: the newest menu is the highest role's
    assert [(m.button, m.tag_id) for m in fake.conditional_menus] == [(GRID_MENU, grid), (STAFF_MENU, community)]
    assert fake.menu == {"button": DEFAULT_MENU}
    assert (fake.tags_of("o-li"), fake.tags_of("o-zhou"), fake.tags_of("o-wang"), fake.tags_of("o-sun")) == (
        [grid], [community], [], [])
    assert work_keys(fake.menu_for("o-li")) == ["CASES"]
    assert work_keys(fake.menu_for("o-zhou")) == ["CASES", "DUTY"]
    assert fake.menu_for("o-wang") == fake.menu_for("o-sun") == DEFAULT_MENU
    assert await wx.menu_trymatch("o-zhou") == STAFF_MENU  # what WeChat itself answers
    assert report.lines() == [f"published 2 role menus: 网格员 (tag {grid}), 社区工作人员 (tag {community})",
                              "role tags: 2 followers tagged, 0 untagged"]


async def test_only_followers_of_the_official_account_are_tagged(
    wx: WeChatClient, fake: FakeWeChat, cfg: Config
) -> None:
    await follow("o-li", "13904180001", subscribed=False)  # unfollowed since
    await follow("mp-zhou", ZHOU_STAFF, channel="mp")  # the mini-program's openid

    await publish(wx, cfg)

    assert fake.tags_of("o-li") == fake.tags_of("mp-zhou") == fake.tags_of("demo-grid-1") == []


async def test_someone_with_several_roles_carries_one_tag_the_highest(
    wx: WeChatClient, fake: FakeWeChat, cfg: Config, clock: FrozenClock
) -> None:
    await follow("o-zhou", ZHOU_STAFF)
    await staff(cfg, clock, "add", ZHOU_STAFF, "网格员", "--scope", "第一网格")  # also a grid worker

    await publish(wx, cfg)

    assert fake.tags_of("o-zhou") == [fake.tag_id(tag_name(Role.COMMUNITY_STAFF))]
    assert work_keys(fake.menu_for("o-zhou")) == ["CASES", "DUTY"]


async def test_running_menu_again_replaces_the_role_menus(wx: WeChatClient, fake: FakeWeChat, cfg: Config) -> None:
    await follow("o-li", "13904180001")
    await publish(wx, cfg)
    first = [m.menuid for m in fake.conditional_menus]

    report = await publish(wx, cfg)

    assert len(fake.conditional_menus) == 2 and not {m.menuid for m in fake.conditional_menus} & set(first)
    assert len(fake.tags) == 2
    assert report.removed_menus == 2
    assert report.lines()[-1] == "role tags: 0 followers tagged, 0 untagged"
    assert work_keys(fake.menu_for("o-li")) == ["CASES"]


async def test_a_role_menu_nobody_needs_any_more_is_deleted(wx: WeChatClient, fake: FakeWeChat, cfg: Config) -> None:
    await follow("o-li", "13904180001")
    await publish(wx, cfg)
    await wx.menu_create(cfg.wechat.menu)

    await publish_role_menus(wx, cfg, RESIDENT_FLOWS)  # no staff flow has a menu key any more

    assert fake.conditional_menus == []
    assert fake.tags_of("o-li") == []
    assert fake.menu_for("o-li") == DEFAULT_MENU


async def test_conditional_menus_made_by_hand_are_left_alone(wx: WeChatClient, fake: FakeWeChat, cfg: Config) -> None:
    await wx.menu_create(cfg.wechat.menu)
    vip = await wx.tags_create("贵宾")
    by_hand = await wx.menu_add_conditional(DEFAULT_MENU[:1], {"tag_id": str(vip)})

    await publish_role_menus(wx, cfg, FLOWS)
    await publish_role_menus(wx, cfg, FLOWS)

    assert fake.conditional_menus[0].menuid == by_hand
    assert len(fake.conditional_menus) == 3


async def test_a_tag_made_by_hand_with_the_role_name_is_adopted(
    wx: WeChatClient, fake: FakeWeChat, cfg: Config
) -> None:
    existing = await wx.tags_create(tag_name(Role.GRID_WORKER))
    await follow("o-li", "13904180001")

    await publish(wx, cfg)

    assert fake.tags_of("o-li") == [existing]
    assert (await WechatTag.get(name=tag_name(Role.GRID_WORKER))).tag_id == existing


async def test_a_tag_deleted_in_the_admin_console_is_created_again(
    wx: WeChatClient, fake: FakeWeChat, cfg: Config
) -> None:
    await follow("o-li", "13904180001")
    await publish(wx, cfg)
    old = fake.tag_id(tag_name(Role.GRID_WORKER))
    assert old is not None
    del fake.tags[old]  # what deleting it in the admin console leaves

    await publish(wx, cfg)

    new = fake.tag_id(tag_name(Role.GRID_WORKER))
    assert new is not None and new != old
    assert fake.tags_of("o-li")[-1] == new
    assert work_keys(fake.menu_for("o-li")) == ["CASES"]
    assert [m.tag_id for m in fake.conditional_menus] == [new, fake.tag_id(tag_name(Role.COMMUNITY_STAFF))]


async def test_a_follower_wechat_refuses_is_reported_and_the_rest_are_tagged(
    wx: WeChatClient, fake: FakeWeChat, cfg: Config
) -> None:
    await follow("o-li", "13904180001")
    await follow("o-gone", "13904180002")  # 赵网格, who unfollowed without us hearing of it
    fake.unfollow("o-gone")

    report = await publish(wx, cfg)

    assert fake.tags_of("o-li") == [fake.tag_id(tag_name(Role.GRID_WORKER))]
    assert report.tagged == 1
    assert len(report.failures) == 1 and report.failures[0].startswith(
        "could not change the tags of o-gone: WeChat error 40003")


async def test_a_role_menu_wechat_would_refuse_is_refused_before_publishing() -> None:
    title = "一个名字特别特别特别特别特别特别特别长的工作事项"  # 69 bytes; a sub-button takes 60
    long_title = Flow("long", title, menu_keys=("LONG",), roles=(Role.STEWARD,))
    long_title.entry(list_cases)

    with pytest.raises(RoleMenuError, match="the steward menu is not valid"):
        role_menus([long_title], DEFAULT_MENU)


def test_every_role_tag_name_fits_wechat() -> None:
    for role in GRANTABLE:
        assert len(tag_name(role).encode()) <= rules.TAG_NAME_MAX_BYTES, role


# ---------------------------------------------------------------------------- linli staff add / remove


async def test_staff_add_and_remove_change_the_tag_at_once(
    wx: WeChatClient, fake: FakeWeChat, cfg: Config, clock: FrozenClock
) -> None:
    await follow("o-wang", WANG)
    await publish(wx, cfg)
    grid, community = fake.tag_id(tag_name(Role.GRID_WORKER)), fake.tag_id(tag_name(Role.COMMUNITY_STAFF))

    added = await staff(cfg, clock, "add", WANG, "网格员", "--scope", "第一网格", client=wx, flows=FLOWS)
    assert added.code == 0, added.stderr
    assert added.out[-1] == f"公众号标签：o-wang 打上“{tag_name(Role.GRID_WORKER)}”"
    assert fake.tags_of("o-wang") == [grid]
    assert work_keys(fake.menu_for("o-wang")) == ["CASES"]

    promoted = await staff(cfg, clock, "add", WANG, "社区工作人员", "--scope", "米家社区", client=wx, flows=FLOWS)
    assert promoted.out[-1] == (f"公众号标签：o-wang 打上“{tag_name(Role.COMMUNITY_STAFF)}”，"
                                f"取下“{tag_name(Role.GRID_WORKER)}”")
    assert fake.tags_of("o-wang") == [community]

    await staff(cfg, clock, "add", WANG, "志愿者", "--scope", "米家社区", client=wx, flows=FLOWS)
    assert fake.tags_of("o-wang") == [community]  # a lower role changes nothing

    row = await StaffRole.get(resident__mobile=WANG, role=Role.COMMUNITY_STAFF)
    await staff(cfg, clock, "remove", str(row.id), client=wx, flows=FLOWS)
    assert fake.tags_of("o-wang") == [grid]

    await staff(cfg, clock, "remove", WANG, "网格员", client=wx, flows=FLOWS)
    assert fake.tags_of("o-wang") == []
    assert fake.menu_for("o-wang") == DEFAULT_MENU


async def test_staff_add_creates_the_tag_on_first_use(
    wx: WeChatClient, fake: FakeWeChat, cfg: Config, clock: FrozenClock
) -> None:
    await follow("o-wang", WANG)

    added = await staff(cfg, clock, "add", WANG, "网格员", "--scope", "第一网格", client=wx, flows=FLOWS)

    assert added.code == 0, added.stderr
    tag = fake.tag_id(tag_name(Role.GRID_WORKER))
    assert tag is not None and fake.tags_of("o-wang") == [tag]
    assert (await WechatTag.get(name=tag_name(Role.GRID_WORKER))).tag_id == tag


@pytest.mark.parametrize("errcode", [rules.ERR_BUSY, rules.ERR_USER_TAGS_FULL, rules.ERR_API_QUOTA])
async def test_a_tagging_failure_keeps_the_grant_and_the_next_menu_run_repairs_it(
    wx: WeChatClient, fake: FakeWeChat, cfg: Config, clock: FrozenClock, errcode: int
) -> None:
    await follow("o-wang", WANG)
    await publish(wx, cfg)
    fake.fail(BATCH_TAG, errcode)

    added = await staff(cfg, clock, "add", WANG, "网格员", "--scope", "第一网格", client=wx, flows=FLOWS)

    assert added.code == 0
    assert added.out[0].startswith("已授予 王秀兰（139****0011）网格员")
    assert len(added.err) == 1 and added.err[0].startswith(
        f"linli: 授权已生效，但公众号工作菜单的标签没有更新（WeChat error {errcode}")
    assert added.err[0].endswith("运行 linli wechat menu 可补上。")
    assert await StaffRole.filter(resident__mobile=WANG, role=Role.GRID_WORKER, revoked_at=None).exists()
    assert fake.tags_of("o-wang") == []

    report = await publish(wx, cfg)

    assert fake.tags_of("o-wang") == [fake.tag_id(tag_name(Role.GRID_WORKER))]
    assert report.tagged == 1 and report.failures == []


async def test_an_untagging_failure_keeps_the_revocation_and_the_next_menu_run_repairs_it(
    wx: WeChatClient, fake: FakeWeChat, cfg: Config, clock: FrozenClock
) -> None:
    await follow("o-wang", WANG)
    await staff(cfg, clock, "add", WANG, "网格员", "--scope", "第一网格", client=wx, flows=FLOWS)
    await publish(wx, cfg)
    fake.drop_connection(BATCH_UNTAG)

    removed = await staff(cfg, clock, "remove", WANG, "网格员", client=wx, flows=FLOWS)

    assert removed.code == 0
    assert removed.err[0].startswith("linli: 授权已撤销，但公众号工作菜单的标签没有更新")
    assert not await StaffRole.filter(resident__mobile=WANG, revoked_at=None).exists()
    assert work_keys(fake.menu_for("o-wang")) == ["CASES"]  # still: WeChat never heard

    report = await publish(wx, cfg)

    assert fake.tags_of("o-wang") == [] and report.untagged == 1
    assert fake.menu_for("o-wang") == DEFAULT_MENU


async def test_without_credentials_the_grant_says_the_tags_wait(cfg: Config, clock: FrozenClock) -> None:
    await follow("o-wang", WANG)

    added = await staff(cfg, clock, "add", WANG, "网格员", "--scope", "第一网格", flows=FLOWS)

    assert added.code == 0
    assert added.out[-1] == "（未配置微信 appid/secret，公众号工作菜单的标签未更新；配置后运行 linli wechat menu。）"


async def test_without_role_menus_staff_add_calls_no_wechat(
    wx: WeChatClient, fake: FakeWeChat, cfg: Config, clock: FrozenClock
) -> None:
    await follow("o-wang", WANG)

    added = await staff(cfg, clock, "add", WANG, "网格员", "--scope", "第一网格", client=wx, flows=RESIDENT_FLOWS)

    assert added.code == 0 and len(added.out) == 1
    assert fake.calls == []


# ---------------------------------------------------------------------------- 菜单 in chat


async def test_the_menu_reply_shows_a_staff_members_work_and_not_a_residents(
    wechat: WeChatPusher, demo: None, config: Config, clock: FrozenClock
) -> None:
    await follow("o-wang", WANG)
    await follow("o-zhang", ZHANG)
    assert "绑定审核" not in await wechat.say("o-wang", "菜单")

    await staff(config, clock, "add", WANG, "网格员", "--scope", "第一网格")

    staff_menu = await wechat.say("o-wang", "菜单")
    resident_menu = await wechat.say("o-zhang", "菜单")
    assert "绑定审核" in staff_menu and "请选择服务" in staff_menu
    assert "请选择服务" in resident_menu and "绑定审核" not in resident_menu

    await staff(config, clock, "remove", WANG, "网格员")
    assert "绑定审核" not in await wechat.say("o-wang", "菜单")


# ---------------------------------------------------------------------------- WeChat's rules in the fake


async def call(wx: WeChatClient, path: str, body: dict[str, Any]) -> int:
    """The errcode WeChat answers (0 for a success)."""
    try:
        await wx.call("POST", path, json_body=body)
    except WeChatAPIError as exc:
        return exc.errcode
    return 0


async def test_tag_rules(wx: WeChatClient, fake: FakeWeChat) -> None:
    create = "/cgi-bin/tags/create"
    assert await call(wx, create, {"tag": {"name": "一二三四五六七八九十"}}) == 0  # 30 bytes
    assert await call(wx, create, {"tag": {"name": "一二三四五六七八九十1"}}) == rules.ERR_TAG_NAME_TOO_LONG
    assert await call(wx, create, {"tag": {"name": "一二三四五六七八九十"}}) == rules.ERR_TAG_NAME_TAKEN
    assert await call(wx, create, {"tag": {"name": "星标组"}}) == rules.ERR_TAG_NAME_TAKEN
    assert await call(wx, create, {"tag": {"name": ""}}) == rules.ERR_TAG_NAME_TAKEN
    for n in range(rules.TAGS_PER_ACCOUNT - 1):
        assert await call(wx, create, {"tag": {"name": f"t{n}"}}) == 0
    assert await call(wx, create, {"tag": {"name": "one too many"}}) == rules.ERR_TOO_MANY_TAGS
    assert len(await wx.tags_get()) == rules.TAGS_PER_ACCOUNT + 1  # and 星标组


async def test_tagging_rules(wx: WeChatClient, fake: FakeWeChat) -> None:
    tagging = "/cgi-bin/tags/members/batchtagging"
    tag = await wx.tags_create("网格员")
    many = [f"o-{n}" for n in range(rules.TAG_BATCH_MAX + 1)]
    assert await call(wx, tagging, {"openid_list": many, "tagid": tag}) == rules.ERR_INVALID_OPENID_LIST
    assert await call(wx, tagging, {"openid_list": [], "tagid": tag}) == rules.ERR_INVALID_OPENID_LIST
    assert await call(wx, tagging, {"openid_list": ["o-1"], "tagid": 2}) == rules.ERR_INVALID_TAG  # 星标组
    assert await call(wx, tagging, {"openid_list": ["o-1"], "tagid": 999}) == rules.ERR_INVALID_TAG
    fake.unfollow("o-gone")
    assert await call(wx, tagging, {"openid_list": ["o-1", "o-gone"], "tagid": tag}) == rules.ERR_INVALID_OPENID
    assert fake.tags_of("o-1") == []  # all or nothing

    await wx.tag_users(tag, many)  # split into calls of at most 50
    assert sorted(await wx.tag_members(tag)) == sorted(many)
    assert [len((c.body or {})["openid_list"]) for c in fake.calls if c.path == tagging and c.errcode == 0] == [50, 1]

    others = [await wx.tags_create(f"t{n}") for n in range(rules.TAGS_PER_USER - 1)]
    await wx.tag_users(others[0], ["o-1"])
    for other in others[1:]:
        await wx.tag_users(other, ["o-1"])
    assert len(await wx.tags_of("o-1")) == rules.TAGS_PER_USER
    extra = await wx.tags_create("extra")
    assert await call(wx, tagging, {"openid_list": ["o-1", "o-2"], "tagid": extra}) == rules.ERR_USER_TAGS_FULL
    assert extra not in fake.tags_of("o-2")

    await wx.untag_users(tag, ["o-1"])
    assert tag not in await wx.tags_of("o-1")
    user = await wx.user_info("o-2")
    assert user["tagid_list"] == [tag]


async def test_conditional_menu_rules(wx: WeChatClient, fake: FakeWeChat) -> None:
    add = "/cgi-bin/menu/addconditional"
    tag = await wx.tags_create("网格员")
    rule = {"tag_id": str(tag)}
    assert await call(wx, add, {"button": DEFAULT_MENU, "matchrule": rule}) == rules.ERR_NO_DEFAULT_MENU
    await wx.menu_create(DEFAULT_MENU)
    assert await call(wx, add, {"button": DEFAULT_MENU, "matchrule": {}}) == rules.ERR_MATCHRULE_EMPTY
    assert await call(wx, add, {"button": DEFAULT_MENU, "matchrule": {"tag_id": ""}}) == rules.ERR_MATCHRULE_EMPTY
    assert await call(wx, add, {"button": DEFAULT_MENU,
                                "matchrule": {"tag_id": str(tag), "sex": "1"}}) == rules.ERR_MATCHRULE_PRIVATE
    assert await call(wx, add, {"button": [*DEFAULT_MENU, DEFAULT_MENU[1]], "matchrule": rule}) == 40016
    assert await call(wx, "/cgi-bin/menu/delconditional", {"menuid": "1"}) == rules.ERR_NO_SUCH_CONDITIONAL_MENU
    assert await call(wx, "/cgi-bin/menu/trymatch", {"user_id": "o-gone"}) == 0
    fake.unfollow("o-gone")
    assert await call(wx, "/cgi-bin/menu/trymatch", {"user_id": "o-gone"}) == rules.ERR_NO_SUCH_USER

    menuid = await wx.menu_add_conditional(GRID_MENU, rule)
    current = await wx.menu_get()
    assert current is not None
    assert current["conditionalmenu"] == [{"button": GRID_MENU, "matchrule": {"group_id": str(tag)},
                                           "menuid": menuid}]

    await wx.menu_delete()  # the default menu and every conditional one
    assert await wx.menu_get() is None and fake.conditional_menus == []


async def test_newest_menu_first_and_a_follower_with_several_tags_matches_the_last_given(
    wx: WeChatClient, fake: FakeWeChat
) -> None:
    await wx.menu_create(DEFAULT_MENU)
    first, second = await wx.tags_create("甲"), await wx.tags_create("乙")
    await wx.menu_add_conditional(GRID_MENU, {"tag_id": str(first)})
    await wx.menu_add_conditional(STAFF_MENU, {"tag_id": str(second)})
    await wx.tag_users(second, ["o-1"])
    await wx.tag_users(first, ["o-1"])

    # the newer menu is 乙's, but 甲 was given last: the documented rule picks 甲's menu
    assert await wx.menu_trymatch("o-1") == GRID_MENU
    await wx.untag_users(first, ["o-1"])
    assert await wx.menu_trymatch("o-1") == STAFF_MENU
    assert await wx.menu_trymatch("o-2") == DEFAULT_MENU
