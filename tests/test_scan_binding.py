"""Scanning a stairwell poster's code (scene ``building:<id>``) through /wechat.

WeChat pushes ``subscribe`` with EventKey ``qrscene_building:<id>`` when the scanner starts
following, and ``SCAN`` with ``building:<id>`` when they already follow.
"""

from __future__ import annotations

import pytest

from models.places import Building
from models.residents import Resident, WechatAccount
from tests.wechat import WeChatPusher

pytestmark = pytest.mark.usefixtures("demo")

COMMUNITY_QUESTION = "请选择您所在的社区"
BUILDING_QUESTION = "请选择您住的楼栋"


async def building(community: str, name: str) -> Building:
    return await Building.get(community__name=community, name=name)


async def run(wechat: WeChatPusher, openid: str, lines: list[str]) -> list[str]:
    return [await wechat.say(openid, line) for line in lines]


async def test_following_through_a_poster_binds_to_its_building(wechat: WeChatPusher) -> None:
    poster = await building("米家社区", "4号楼")

    pushed = await wechat.event("o-poster", "subscribe", f"qrscene_building:{poster.id}")

    assert pushed.text.startswith("欢迎来到邻里")
    assert "您扫描的是米家社区4号楼的楼栋码" in pushed.text
    assert "您同意吗" in pushed.text
    replies = await run(wechat, "o-poster", ["是", "王小明", "13812345678", "3单元", "501"])
    assert "请输入您的姓名" in replies[0]
    assert "请输入您的手机号" in replies[1]
    assert "请输入单元号" in replies[2]  # straight from the mobile to the unit
    assert "请输入房间号" in replies[3]
    assert all(COMMUNITY_QUESTION not in r and BUILDING_QUESTION not in r for r in replies)
    assert "住址：米家社区4号楼3单元501室" in replies[4]

    assert "绑定成功" in await wechat.say("o-poster", "是")
    resident = await Resident.get(mobile="13812345678").prefetch_related("building", "community")
    assert (resident.name, resident.unit, resident.room) == ("王小明", "3", "501")
    assert (resident.community.name, resident.building.name) == ("米家社区", "4号楼")
    account = await WechatAccount.get(openid="o-poster")
    assert account.resident_id == resident.id and account.subscribed
    assert account.last_scene == f"building:{poster.id}"


async def test_a_follower_scanning_a_poster_binds_to_its_building(wechat: WeChatPusher) -> None:
    poster = await building("新邱社区", "西2栋")
    assert "请选择服务" in await wechat.say("o-follower", "你好")  # already following, not bound

    pushed = await wechat.event("o-follower", "SCAN", f"building:{poster.id}")

    assert pushed.text.startswith("欢迎回来！")
    assert "您扫描的是新邱社区西2栋的楼栋码" in pushed.text and "您同意吗" in pushed.text
    replies = await run(wechat, "o-follower", ["是", "李芳", "13912345678", "1", "102"])
    assert all(COMMUNITY_QUESTION not in r and BUILDING_QUESTION not in r for r in replies)
    assert "住址：新邱社区西2栋1单元102室" in replies[-1]
    assert "绑定成功" in await wechat.say("o-follower", "是")
    resident = await Resident.get(mobile="13912345678").prefetch_related("building")
    assert resident.building.id == poster.id


@pytest.mark.parametrize(("event", "prefix"), [("subscribe", "qrscene_"), ("SCAN", "")])
async def test_a_bound_resident_scanning_a_poster_gets_the_menu(
    wechat: WeChatPusher, event: str, prefix: str
) -> None:
    poster = await building("米家社区", "2号楼")

    pushed = await wechat.event("demo-grid-1", event, f"{prefix}building:{poster.id}")

    assert "欢迎" in pushed.text and "请选择服务" in pushed.text
    assert "您同意吗" not in pushed.text and "绑定身份" not in pushed.text
    # the menu is live: its entries answer
    profile = next(line for line in pushed.text.splitlines() if line.endswith("我的信息"))
    assert "姓名：李网格" in await wechat.say("demo-grid-1", profile.split(".")[0])


async def test_saying_no_at_the_end_asks_the_address_again(wechat: WeChatPusher) -> None:
    poster = await building("米家社区", "4号楼")
    await wechat.event("o-wrong", "subscribe", f"qrscene_building:{poster.id}")
    replies = await run(wechat, "o-wrong", ["是", "王小明", "13812345678", "3", "501"])
    assert "住址：米家社区4号楼3单元501室" in replies[-1]

    # A visitor scanned a poster in someone else's stairwell: 否 starts over, address included.
    assert "请重新输入您的姓名" in await wechat.say("o-wrong", "否")
    await wechat.say("o-wrong", "王小明")
    assert COMMUNITY_QUESTION in await wechat.say("o-wrong", "13812345678")
    assert BUILDING_QUESTION in await wechat.say("o-wrong", "2")  # 新邱社区
    replies = await run(wechat, "o-wrong", ["1", "1", "101"])  # 东1栋
    assert "住址：新邱社区东1栋1单元101室" in replies[-1]


async def test_a_pending_applicant_scanning_a_poster_is_told_to_wait(wechat: WeChatPusher) -> None:
    # 王秀兰's details match an imported record: the link waits for the grid worker.
    await run(wechat, "o-elder", ["绑定", "是", "王秀兰", "13904180011", "1", "1", "2", "301", "是"])
    poster = await building("米家社区", "1号楼")

    pushed = await wechat.event("o-elder", "SCAN", f"building:{poster.id}")

    assert "等待网格员确认" in pushed.text
    assert "您同意吗" not in pushed.text


UNKNOWN_SCENES = [
    "building:999999999",  # no such building
    "building:0",
    "building:-1",
    "building:abc",
    "building:",
    "building:12345678901234567890",  # would overflow the id column
    "building:1;DROP TABLE building",
    "building:1x",
    "building:1:2",
    "canteen:1",  # some other code of the account
    "楼栋:1",
    "x" * 64,
]


@pytest.mark.parametrize("scene", UNKNOWN_SCENES)
async def test_following_through_an_unknown_code_gets_the_plain_welcome(wechat: WeChatPusher, scene: str) -> None:
    plain = await wechat.event("o-plain", "subscribe")

    pushed = await wechat.event("o-unknown", "subscribe", f"qrscene_{scene}")

    assert pushed.status == 200
    assert pushed.text == plain.text and "请选择服务" in pushed.text
    account = await WechatAccount.get(openid="o-unknown")
    assert account.subscribed and account.resident_id is None
    # nothing was filled in: binding from the menu asks the whole address
    await run(wechat, "o-unknown", ["1", "是", "王小明"])  # 1 = 绑定身份
    assert COMMUNITY_QUESTION in await wechat.say("o-unknown", "13812345678")


@pytest.mark.parametrize("scene", UNKNOWN_SCENES[:4])
async def test_a_follower_scanning_an_unknown_code_is_welcomed_back(wechat: WeChatPusher, scene: str) -> None:
    pushed = await wechat.event("o-unknown-scan", "SCAN", scene)

    assert pushed.text.startswith("欢迎回来！") and "请选择服务" in pushed.text
    assert "您同意吗" not in pushed.text
    assert (await WechatAccount.get(openid="o-unknown-scan")).resident_id is None
