"""便民服务包: the high-frequency community items (seed 004 names 21 of them).

This is the default list a community starts from: the item's name as residents see it, the
department in charge and the documents to bring. The Friday service day offers a selection of
these items and its notice tells residents what to bring for them; the red-proxy errands build
on the same list (models.errand_core.ensure_catalogue copies it into a community's own items,
which its staff then edit), adding for each item how soon a cloud steward must pick a request up
(困难认定: 15 minutes, the seed's promise), how many days it usually takes in all, and who may
ask: residents holding one of ``statuses`` (verified, models.facts) and of at least ``min_age``.
"""

from __future__ import annotations

from dataclasses import dataclass

ID_CARD = "身份证"
HUKOU = "户口本"
SOCIAL_CARD = "社保卡"


@dataclass(frozen=True)
class PackageItem:
    name: str  # at most 8 characters: it is listed in chat replies
    department: str
    documents: tuple[str, ...]
    first_response_minutes: int = 120  # a cloud steward picks a request up within this
    expected_days: int = 7  # from the request to the result at the resident's door, usually
    statuses: tuple[str, ...] = ()  # who may ask: holders of any of these verified statuses (empty: anyone)
    min_age: int = 0  # and of at least this age (verified date of birth)


DEFAULT_PACKAGE: tuple[PackageItem, ...] = (
    PackageItem("低保申请", "民政", (ID_CARD, HUKOU, "家庭收入证明", "银行卡"), 120, 30),
    PackageItem("特困供养", "民政", (ID_CARD, HUKOU, "残疾证或病历"), 120, 30),
    PackageItem("临时救助", "民政", (ID_CARD, HUKOU, "困难情况说明"), 60, 10),
    PackageItem("困难认定", "民政", (ID_CARD, HUKOU, "家庭收入证明"), 15, 7),
    PackageItem("高龄津贴", "民政", (ID_CARD, "银行卡"), 120, 30, min_age=80),
    PackageItem("养老服务补贴", "民政", (ID_CARD, "银行卡"), 120, 30, min_age=60),
    PackageItem("残疾人补贴", "残联", (ID_CARD, "残疾证", "银行卡"), 120, 30, statuses=("disabled",)),
    PackageItem("残疾证办理", "残联", (ID_CARD, HUKOU, "近期一寸照片"), 120, 30),
    PackageItem("医保参保", "医保", (ID_CARD, HUKOU), 120, 7),
    PackageItem("医保报销", "医保", (ID_CARD, SOCIAL_CARD, "病历和发票"), 120, 20),
    PackageItem("养老保险", "人社", (ID_CARD, SOCIAL_CARD), 120, 15),
    PackageItem("养老资格认证", "人社", (ID_CARD, SOCIAL_CARD), 120, 3, min_age=60),
    PackageItem("就业失业登记", "人社", (ID_CARD,), 120, 5),
    PackageItem("居住证", "公安", (ID_CARD, "租房合同或房产证"), 120, 15),
    PackageItem("户籍证明", "公安", (ID_CARD, HUKOU), 120, 3),
    PackageItem("生育登记", "卫健", ("夫妻双方身份证", "结婚证"), 120, 5),
    PackageItem("老年优待证", "民政", (ID_CARD, "近期一寸照片"), 120, 7, min_age=60),
    PackageItem("独生子女奖励", "卫健", (ID_CARD, "独生子女父母光荣证"), 120, 30),
    PackageItem("退役军人优待", "退役军人", (ID_CARD, "退伍证"), 120, 15, statuses=("veteran",)),
    PackageItem("法律咨询", "司法", ("相关材料（如有）",), 60, 3),
    PackageItem("健康检查", "卫健", (SOCIAL_CARD,), 120, 7),
)

ITEMS_BY_NAME = {item.name: item for item in DEFAULT_PACKAGE}


def documents_for(names: list[str]) -> list[str]:
    """What to bring for these items, each document once, in the order they first appear."""
    seen: dict[str, None] = {}
    for name in names:
        item = ITEMS_BY_NAME.get(name)
        for document in item.documents if item else ():
            seen.setdefault(document, None)
    return list(seen)
