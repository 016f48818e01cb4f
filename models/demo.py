"""A demo sub-district so a newcomer can try every flow. Later issues extend it."""

from __future__ import annotations

from datetime import datetime

from tortoise.transactions import in_transaction

from models.facts import BIRTH_DATE, declare
from models.places import Building, Canteen, Community, Department, Grid, Shop, SubDistrict
from models.residents import Resident, ResidentStatus, WechatAccount
from models.roles import Role, grant

SUB_DISTRICT = "太平区示范街道"

# community → grid → buildings
LAYOUT = {
    "米家社区": {"第一网格": ["1号楼", "2号楼", "3号楼"], "第二网格": ["4号楼", "5号楼"]},
    "新邱社区": {"东区网格": ["东1栋", "东2栋"], "西区网格": ["西1栋", "西2栋"]},
}

# where each building stands (lat, lon): 1号楼-3号楼 within 100 m of each other, 4号楼 and 5号楼 600 m off
POSITIONS = {
    "1号楼": (42.02160, 121.67000), "2号楼": (42.02160, 121.67100), "3号楼": (42.02240, 121.67000),
    "4号楼": (42.02600, 121.67500), "5号楼": (42.02600, 121.67600),
    "东1栋": (42.05000, 121.70000), "东2栋": (42.05050, 121.70000),
    "西1栋": (42.05000, 121.70500), "西2栋": (42.05050, 121.70500),
}

# (openid for `linli chat --as`, name, mobile, community, grid, building, unit, room, role)
STAFF: list[tuple[str, str, str, str, str | None, str, str, str, str]] = [
    ("demo-grid-1", "李网格", "13904180001", "米家社区", "第一网格", "1号楼", "1", "101",
     Role.GRID_WORKER),
    ("demo-grid-2", "赵网格", "13904180002", "米家社区", "第二网格", "4号楼", "1", "102",
     Role.GRID_WORKER),
    ("demo-staff", "周社工", "13904180003", "米家社区", None, "2号楼", "2", "201",
     Role.COMMUNITY_STAFF),
    ("demo-volunteer", "孙志愿", "13904180004", "米家社区", None, "3号楼", "1", "302",
     Role.VOLUNTEER),
    # 逢六说事: the property company (红色物业) of 米家社区, the mediator of 第一网格, the sub-district
    ("demo-property", "钱物业", "13904180005", "米家社区", None, "3号楼", "2", "101", Role.PROPERTY),
    ("demo-mediator", "孔调解", "13904180006", "米家社区", "第一网格", "2号楼", "1", "301", Role.MEDIATOR),
    ("demo-street", "冯街道", "13904180007", "米家社区", None, "5号楼", "1", "201", Role.SUBDISTRICT_STAFF),
    # 爱心银行: the activity organiser of 米家社区 and the partner shop's clerk
    ("demo-organiser", "吴组织", "13904180008", "米家社区", None, "2号楼", "2", "302", Role.ORGANISER),
    ("demo-shop", "郑商户", "13904180030", "米家社区", None, "4号楼", "1", "301", Role.SHOP),
    # 幸福食堂: the canteen's counter and kitchen
    ("demo-canteen", "陈食堂", "13904180031", "米家社区", None, "5号楼", "2", "102", Role.CANTEEN_STAFF),
    # 红色代办: the cloud steward of 米家社区, the red proxy (a party member) of 第二网格 and the
    # sub-district's civil affairs office (民政)
    ("demo-steward", "何管家", "13904180033", "米家社区", None, "5号楼", "2", "301", Role.STEWARD),
    ("demo-proxy", "党代办", "13904180034", "米家社区", "第二网格", "5号楼", "2", "401", Role.RED_PROXY),
    ("demo-dept", "民政窗口", "13904180035", "米家社区", None, "5号楼", "2", "501", Role.DEPARTMENT),
    # 先锋骑士: the pioneer rider of 米家社区, who takes the canteen's delivery routes
    ("demo-rider", "骑士小王", "13904180036", "米家社区", None, "5号楼", "3", "101", Role.RIDER),
]

# the partner shops of the love bank, by community
SHOPS = {"米家社区": ["米家便民超市"]}

# Imported by staff, no WeChat yet: typing these details leads to the grid worker's check.
RESIDENTS = [
    ("王秀兰", "13904180011", "米家社区", "1号楼", "2", "301"),
    ("张德福", "13904180012", "米家社区", "2号楼", "1", "502"),
]

# 幸福食堂's diners: an elder who follows the account (openid for `linli chat --as`)
ELDERS = [("demo-elder", "刘桂芳", "13904180032", "米家社区", "5号楼", "1", "201")]
# verified by community staff: her date of birth and statuses, which the canteen's prices read
# (80 years old: 30% off the menu price once she has deposited 120 yuan at the counter)
FACTS = {"刘桂芳": ("1946-04-12", ["lives_alone"])}


async def load_demo(now: datetime) -> bool:
    """Create the demo data once; returns False when it is already there."""
    async with in_transaction():
        if await SubDistrict.filter(name=SUB_DISTRICT).exists():
            return False
        sub = await SubDistrict.create(name=SUB_DISTRICT)
        communities: dict[str, Community] = {}
        grids: dict[tuple[str, str], Grid] = {}
        buildings: dict[tuple[str, str], Building] = {}
        for cname, layout in LAYOUT.items():
            community = communities[cname] = await Community.create(name=cname, sub_district=sub)
            for gname, bnames in layout.items():
                grid = grids[(cname, gname)] = await Grid.create(name=gname, community=community)
                for bname in bnames:
                    lat, lon = POSITIONS.get(bname, (None, None))
                    buildings[(cname, bname)] = await Building.create(
                        name=bname, community=community, grid=grid, lat=lat, lon=lon
                    )
        canteen = await Canteen.create(name="米家社区幸福食堂", community=communities["米家社区"])
        shops = {name: await Shop.create(name=name, community=communities[cname])
                 for cname, names in SHOPS.items() for name in names}
        from models.service_package import DEFAULT_PACKAGE

        departments = {name: await Department.create(name=name, sub_district=sub)
                       for name in dict.fromkeys(item.department for item in DEFAULT_PACKAGE)}
        for openid, name, mobile, cname, staff_grid, bname, unit, room, role in STAFF:
            person = await Resident.create(
                name=name, mobile=mobile, community=communities[cname],
                building=buildings[(cname, bname)], unit=unit, room=room,
                status=ResidentStatus.VERIFIED, source="staff", created_at=now, verified_at=now,
            )
            scope = grids[(cname, staff_grid)].id if staff_grid else communities[cname].id
            if role == Role.SUBDISTRICT_STAFF:
                scope = sub.id
            if role == Role.SHOP:
                scope = shops[SHOPS[cname][0]].id
            if role == Role.CANTEEN_STAFF:
                scope = canteen.id
            if role == Role.DEPARTMENT:
                scope = departments["民政"].id
            await grant(resident_id=person.id, role=role, scope_id=scope, now=now, by_label="demo")
            await WechatAccount.create(openid=openid, channel="chat", resident=person,
                                       created_at=now, subscribed_at=now)
        for name, mobile, cname, bname, unit, room in RESIDENTS:
            await Resident.create(
                name=name, mobile=mobile, community=communities[cname],
                building=buildings[(cname, bname)], unit=unit, room=room,
                status=ResidentStatus.VERIFIED, source="import", created_at=now, verified_at=now,
            )
        for openid, name, mobile, cname, bname, unit, room in ELDERS:
            elder = await Resident.create(
                name=name, mobile=mobile, community=communities[cname],
                building=buildings[(cname, bname)], unit=unit, room=room,
                status=ResidentStatus.VERIFIED, source="import", created_at=now, verified_at=now,
            )
            await WechatAccount.create(openid=openid, channel="chat", resident=elder,
                                       created_at=now, subscribed_at=now)
        staff = await Resident.get(mobile="13904180003")
        for name, (birth, statuses) in FACTS.items():
            diner = await Resident.get(name=name, community=communities["米家社区"])
            await declare(resident_id=diner.id, code=BIRTH_DATE, value=birth, now=now, by_id=staff.id,
                          source="staff", verified=True)
            for code in statuses:
                await declare(resident_id=diner.id, code=code, now=now, by_id=staff.id, source="staff",
                              verified=True)
        # 爱心银行: what 米家社区's members can redeem points for
        from models.redemption import CatalogueItem, ItemKind

        mijia, supermarket = communities["米家社区"], shops["米家便民超市"]
        for shop, kind, name, price, stock, limit, days in [
            (supermarket, ItemKind.GOODS, "食用油一桶", 120, 20, 1, 30),
            (supermarket, ItemKind.GOODS, "洗衣液一瓶", 60, 30, 2, 30),
            (None, ItemKind.SERVICE, "志愿理发一次", 30, 50, 0, 30),
            (None, ItemKind.MEAL, "助餐券（一餐）", 15, 200, 10, 60),
        ]:
            await CatalogueItem.create(community=mijia, shop=shop, kind=kind, name=name, price=price, stock=stock,
                                       per_person_limit=limit, valid_days=days, created_at=now)
        return True
