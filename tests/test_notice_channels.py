"""How followers get a notice: notices.channels and the template fallback, each test with an app
of its own (the module does not load the demo through the shared ``client`` fixture, whose
sender, without the notice template, would otherwise race this app's sender for the rows)."""

from __future__ import annotations

from typing import Any

import pytest

from bot.clock import FrozenClock
from models.notices import Notice, notice_report
from models.outbox import OutboxMessage
from tests.test_notices import _until_settled, _urgent_notice_to_building_1, residents_of_building_1


async def _urgent_notice_to_two_followers(aiohttp_client, config, clock: FrozenClock, **replace: Any) -> Any:  # type: ignore[no-untyped-def]
    """An app with the 'notice' template configured (and ``replace``); oa-0 wrote to us lately
    (inside the customer-service window), oa-1 did not; an urgent notice to their building."""
    from bot.app import SERVICES, create_app
    from models.demo import load_demo

    app = create_app(config.replace(wechat={"templates": {"notice": "tpl-notice"}}, **replace), clock=clock)
    client = await aiohttp_client(app)
    await load_demo(clock.now())
    await residents_of_building_1()
    fake = client.app[SERVICES].fake
    fake.follow("oa-0")
    fake.follow("oa-1")
    fake.interact("oa-0")
    await _urgent_notice_to_building_1(clock)
    client.app[SERVICES].sender.notify()
    return fake


async def test_outside_the_window_a_follower_gets_the_notice_template(
    aiohttp_client, config, clock: FrozenClock  # type: ignore[no-untyped-def]
) -> None:
    fake = await _urgent_notice_to_two_followers(aiohttp_client, config, clock)  # oa-0 inside the window
    await _until_settled(["oa-0", "oa-1"])
    await _until_settled(["oa-1"])
    assert any("燃气检修" in t for t in fake.texts("oa-0"))
    templates = fake.sent("template", "oa-1")
    assert [m.template_id for m in templates] == ["tpl-notice"]
    assert templates[0].body["data"]["first"]["value"] == "【紧急】燃气检修"
    row = await OutboxMessage.get(openid="oa-1")  # the same row became the template: the report counts it sent
    assert row.kind == "template" and row.state == "sent"
    report = await notice_report((await Notice.get()).id, clock.now())
    assert report["sent"] >= 2 and not [k for k in report if k.startswith("failed:")]


@pytest.mark.parametrize("channels", ["template", "custom"])
async def test_the_channel_policy_is_configuration(
    aiohttp_client, config, clock: FrozenClock, channels: str  # type: ignore[no-untyped-def]
) -> None:
    """notices.channels: "template" never spends the customer-service allowance on a notice;
    "custom" (an account without template messages) records what it could not deliver."""
    fake = await _urgent_notice_to_two_followers(aiohttp_client, config, clock, notices={"channels": channels})
    await _until_settled(["oa-0", "oa-1"])
    await _until_settled(["oa-0", "oa-1"])  # a template written as a fallback settles too
    if channels == "template":
        assert fake.texts("oa-0") == [] and fake.texts("oa-1") == []
        assert [m.template_id for m in fake.sent("template", "oa-0")] == ["tpl-notice"]
        assert [m.template_id for m in fake.sent("template", "oa-1")] == ["tpl-notice"]
    else:
        assert any("燃气检修" in t for t in fake.texts("oa-0"))
        assert fake.sent("template", "oa-1") == []
        row = await OutboxMessage.get(openid="oa-1")
        assert row.state == "failed" and row.error_code == 45015 and "notices.channels" in row.error_message

