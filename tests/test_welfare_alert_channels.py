"""A welfare alert must reach the grid worker and the family even when they have not written to
the official account lately: outside WeChat's customer-service window (the fake WeChat refuses the
text with 45015) the sender sends the 'notice' template message instead. An app of its own with
the template configured, as in tests/test_notice_channels.py."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from bot.clock import FrozenClock
from models import rider_core
from models.canteen import Mode
from models.canteen_booking import book, publish_menu, run_cutoff, set_diner
from models.canteen_wallet import top_up
from models.outbox import OutboxMessage
from models.places import Canteen
from models.residents import Resident
from tests.test_notices import _until_settled

NOW = datetime(2026, 11, 27, 1, 0, tzinfo=UTC)  # 周五 09:00 in Shanghai
SATURDAY = date(2026, 11, 28)
GRID = "demo-grid-2"  # 赵网格, 第二网格 (刘桂芳's 5号楼)


async def test_out_of_the_window_the_grid_worker_gets_the_alert_as_a_template(
    aiohttp_client, config, clock: FrozenClock  # type: ignore[no-untyped-def]
) -> None:
    from bot.app import SERVICES, create_app
    from models.demo import load_demo

    clock.set(NOW)
    app = create_app(config.replace(wechat={"templates": {"notice": "tpl-notice"}}), clock=clock)
    client = await aiohttp_client(app)
    await load_demo(clock.now())
    fake = client.app[SERVICES].fake
    fake.follow(GRID)  # a follower who has not written to us for days: no customer-service window

    liu, counter, rider = [await Resident.get(name=n) for n in ("刘桂芳", "陈食堂", "骑士小王")]
    canteen = await Canteen.get(name="米家社区幸福食堂")
    await set_diner(resident_id=liu.id, by_id=counter.id, now=NOW, delivery_approved=True)
    await top_up(canteen_id=canteen.id, resident_id=liu.id, amount_fen=100_00, method="cash", receipt_no="R-1",
                 by_id=counter.id, now=NOW)
    menu, _ = await publish_menu(canteen_id=canteen.id, day=SATURDAY, meal="lunch", price_fen=1200, by_id=counter.id,
                                 dishes=[{"name": "清蒸鱼", "marks": ["soft"]}], now=NOW)
    await book(menu_id=menu.id, resident_id=liu.id, by_id=liu.id, mode=Mode.DELIVERY, now=NOW)
    assert await run_cutoff(menu.id, menu.cutoff_at)
    [route] = await rider_core.build_routes(menu.id, menu.cutoff_at)
    at = menu.serve_from_at + timedelta(minutes=20)
    clock.set(at)
    await rider_core.claim(route.id, rider.id, at)
    [stop] = await rider_core.stops_of(route.id)
    await rider_core.mark_stop(stop.id, rider.id, delivered=False, now=at, note="敲门无人应答")
    client.app[SERVICES].sender.notify()

    await _until_settled([GRID])
    await _until_settled([GRID])  # the text refused (45015), then the same row as the template
    assert fake.texts(GRID) == []
    [sent] = fake.sent("template", GRID)
    assert sent.template_id == "tpl-notice"
    assert sent.body["data"]["first"]["value"] == "【安全提醒】独居老人送餐时不在家，请尽快联系或上门查看"
    assert sent.body["data"]["keyword1"]["value"] == (
        "刘桂芳（5号楼1单元201室）11月28日11:20送餐时敲门无人应答。骑士骑士小王留言：敲门无人应答。")
    assert "安全确认" in sent.body["data"]["remark"]["value"]
    row = await OutboxMessage.get(openid=GRID)
    assert (row.kind, row.state) == ("template", "sent")  # the same row: the alert is recorded as delivered
