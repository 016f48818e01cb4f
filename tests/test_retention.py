"""Retention: the [privacy] periods, the daily sweep under a frozen clock, its place in the one
scheduler of the service, and `linli privacy sweep`."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from bot.app import SERVICES, create_app
from bot.clock import Clock, FrozenClock
from bot.config import Config, ConfigError, build_config
from bot.scheduler import RETENTION_JOB, JobInfo, service_scheduler
from bot.services import open_services
from models.conversation import PendingPrompt
from models.demo import ELDERS, STAFF, load_demo
from models.outbox import OutboxMessage
from models.privacy import ERASED_NAME, AuditLog, register_hold, unregister_hold
from models.residents import LinkRequest, Resident, WechatAccount
from tests.test_cli import linli

SHANGHAI = ZoneInfo("Asia/Shanghai")
PERIODS = {"messages_days": 30, "prompts_days": 30, "link_requests_days": 30, "unbound_accounts_days": 60,
           "audit_days": 365, "erased_residents_days": 30}


def _prompt(openid: str, created: datetime, *, expires: datetime, closed: datetime | None) -> PendingPrompt:
    return PendingPrompt(openid=openid, flow="binding_review", step="decide", question={"text": "?"},
                         created_at=created, expires_at=expires, closed_at=closed,
                         closed_reason="answered" if closed else "")


async def test_sweep_deletes_only_what_expired_and_logs_counts(
    db: Config, clock: FrozenClock, caplog: pytest.LogCaptureFixture
) -> None:
    now = clock.now()
    old, recent = now - timedelta(days=100), now - timedelta(days=1)
    await load_demo(now - timedelta(days=200))

    def message(key: str, state: str, at: datetime) -> OutboxMessage:
        return OutboxMessage(openid="o-x", kind="text", payload={"content": key}, idempotency_key=key, state=state,
                             next_attempt_at=at, created_at=at)

    await OutboxMessage.bulk_create([
        message("old-sent", "sent", old), message("old-failed", "failed", old),
        message("old-pending", "pending", old), message("recent-sent", "sent", recent),
    ])
    await PendingPrompt.bulk_create([
        _prompt("old-closed", old, expires=old + timedelta(days=7), closed=old + timedelta(days=1)),
        _prompt("old-expired", old, expires=old + timedelta(days=7), closed=None),
        _prompt("old-open", old, expires=now + timedelta(days=7), closed=None),
        _prompt("recent-closed", recent, expires=now + timedelta(days=6), closed=recent),
    ])
    asker = await WechatAccount.create(openid="o-asker", created_at=recent)
    elder = await Resident.get(mobile="13904180011")
    for status, at in [("rejected", old), ("pending", old), ("cancelled", recent)]:
        await LinkRequest.create(account=asker, resident=elder, typed_name="王秀兰", typed_mobile="13904180011",
                                 status=status, created_at=at)
    await WechatAccount.create(openid="o-never-seen", created_at=old)
    await WechatAccount.create(openid="o-seen-long-ago", created_at=old, last_seen_at=old)
    await WechatAccount.create(openid="o-seen-lately", created_at=old, last_seen_at=recent)
    await AuditLog.create(action="view", purpose="old", at=now - timedelta(days=400))
    await AuditLog.create(action="view", purpose="recent", at=recent)
    # names a hold kept past a deletion: gone once the period has passed and no hold remains
    await Resident.filter(mobile="13904180012").update(erased_at=old)  # 张德福
    await Resident.filter(mobile="13904180004").update(erased_at=recent)  # 孙志愿

    caplog.set_level(logging.INFO)
    config = db.replace(privacy=PERIODS)
    counts = await service_scheduler(config, clock).run(RETENTION_JOB)

    assert counts == {"messages": 2, "prompts": 2, "link_requests": 1, "unbound_accounts": 2,
                      "erased_residents": 1, "audit": 1, "case_photos": 0, "errand_documents": 0}
    assert "retention sweep:" in caplog.text and "'messages': 2" in caplog.text
    assert sorted(await OutboxMessage.all().values_list("idempotency_key", flat=True)) == ["old-pending",
                                                                                          "recent-sent"]
    assert sorted(await PendingPrompt.all().values_list("openid", flat=True)) == ["old-open", "recent-closed"]
    assert sorted(await LinkRequest.all().values_list("status", flat=True)) == ["cancelled", "pending"]
    left = set(await WechatAccount.filter(resident_id=None).values_list("openid", flat=True))
    assert left == {"o-asker", "o-seen-lately"}
    assert await WechatAccount.filter(resident_id__not_isnull=True).count() == len(STAFF) + len(ELDERS)  # bound stay
    assert (await Resident.get(id=elder.id)).name == "王秀兰"
    assert await Resident.filter(name=ERASED_NAME, mobile=None).count() == 1
    assert await Resident.filter(name="孙志愿").exists()
    assert sorted(await AuditLog.filter(action="view").values_list("purpose", flat=True)) == ["recent"]
    run = await AuditLog.get(action="retention")
    assert run.actor_label == "system" and run.detail == counts

    again = await service_scheduler(config, clock).run(RETENTION_JOB)
    assert again == dict.fromkeys(counts, 0)


async def test_a_remaining_hold_keeps_an_erased_name(db: Config, clock: FrozenClock) -> None:
    await load_demo(clock.now() - timedelta(days=200))
    kept = await Resident.get(mobile="13904180012")
    await Resident.filter(id=kept.id).update(erased_at=clock.now() - timedelta(days=100))

    async def unpaid(resident_id: int) -> str | None:
        return "有未结清的餐费" if resident_id == kept.id else None

    register_hold(unpaid)
    try:
        counts = await service_scheduler(db.replace(privacy=PERIODS), clock).run(RETENTION_JOB)
    finally:
        unregister_hold(unpaid)
    assert counts["erased_residents"] == 0
    assert (await Resident.get(id=kept.id)).name == "张德福"


async def test_the_daily_job_is_registered_at_the_configured_time(aiohttp_client, config: Config,  # type: ignore[no-untyped-def]
                                                                  clock: FrozenClock) -> None:
    app = create_app(config.replace(privacy={"sweep_at": "04:15"}), clock=clock)
    await aiohttp_client(app)
    scheduler = app[SERVICES].scheduler
    assert scheduler is not None
    assert JobInfo(RETENTION_JOB, "daily 04:15") in scheduler.jobs()
    # the clock stands at 2026-11-27 09:00 in Shanghai: next is tomorrow 04:15 there (20:15 UTC today)
    fire = scheduler.next_run(RETENTION_JOB, clock.now())
    assert fire == datetime(2026, 11, 28, 4, 15, tzinfo=SHANGHAI)
    assert fire is not None and fire.astimezone(UTC) == datetime(2026, 11, 27, 20, 15, tzinfo=UTC)
    assert not scheduler.running  # under a frozen clock the jobs are run by hand, never by the wall clock


async def test_the_time_is_read_in_the_community_time_zone(config: Config, clock: FrozenClock) -> None:
    urumqi = config.replace(community={"timezone": "Asia/Urumqi"}, privacy={"sweep_at": "03:30"})
    fire = service_scheduler(urumqi, clock).next_run(RETENTION_JOB, clock.now())
    assert fire is not None and fire.astimezone(UTC) == datetime(2026, 11, 27, 21, 30, tzinfo=UTC)


async def test_chat_and_serve_run_the_scheduler_until_they_close(db: Config) -> None:
    async with open_services(db, Clock(), run_sender=False, run_scheduler=True) as services:
        assert services.scheduler is not None and services.scheduler.running
    assert not services.scheduler.running


@pytest.mark.parametrize(("key", "value"), [("sweep_at", "25:00"), ("sweep_at", "3h30"), ("sweep_at", "03:3"),
                                            ("audit_days", 0), ("messages_days", -1)])
def test_invalid_privacy_settings_name_the_key(key: str, value: object) -> None:
    with pytest.raises(ConfigError, match=f"privacy.{key}"):
        build_config({"privacy": {key: value}}, {})


def test_privacy_settings_from_the_environment() -> None:
    cfg = build_config({}, {"LINLI_PRIVACY_SWEEP_AT": "02:05", "LINLI_PRIVACY_AUDIT_DAYS": "730"})
    assert (cfg.privacy.sweep_time.hour, cfg.privacy.sweep_time.minute) == (2, 5)
    assert cfg.privacy.audit_days == 730


def test_cli_privacy_sweep_runs_once_and_prints_counts(tmp_path: Path, cli_env: dict[str, str]) -> None:
    result = linli("privacy", "sweep", cwd=tmp_path, env=cli_env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ("retention sweep: messages 0, prompts 0, link requests 0, unbound accounts 0, "
                                     "erased residents anonymised 0, audit rows 0, case photos 0, "
                                     "errand document photos 0")
    bad = linli("privacy", "sweep", cwd=tmp_path, env={**cli_env, "LINLI_PRIVACY_SWEEP_AT": "noon"})
    assert bad.returncode == 2 and "privacy.sweep_at" in bad.stderr and "Traceback" not in bad.stderr
