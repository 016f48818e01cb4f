"""Notices to many residents: announcements and the Friday service-day notices.

A notice has an audience (a community, a grid or a building) and an urgency. Fanning it out
writes one ``NoticeDelivery`` per resident and, for those it can reach, one outbox row keyed by
(notice, resident) — so a retried fan-out, or a sender killed half way, never sends twice and
never skips anyone. Residents who said 退订 are recorded as opted out (urgent notices still
reach them). A normal notice written in quiet hours waits for the morning.
"""

from __future__ import annotations

from datetime import datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from tortoise import fields
from tortoise.functions import Count
from tortoise.models import Model
from tortoise.queryset import QuerySet
from tortoise.transactions import in_transaction

from models.conversation import PendingPrompt, Question
from models.errors import UserFacingError
from models.jobs import register_action, schedule_action
from models.outbox import OutboxMessage, Priority, State, enqueue
from models.places import Building, Community, Grid
from models.residents import Resident, WechatAccount

TITLE_MAX = 30
TEXT_MAX = 500


class Urgency:
    URGENT = "urgent"  # water or power cut now, safety warning: at once, even in quiet hours
    NORMAL = "normal"


class NoticeKind:
    ANNOUNCEMENT = "announcement"
    SERVICE_DAY = "service_day"
    SESSION = "session"  # 逢六说事: a session's agenda, the day before (models/case_sessions.py)
    ROUNDUP = "roundup"  # 周五圆梦: the cases resolved that week


class DeliveryStatus:
    QUEUED = "queued"  # an outbox row exists; its state says whether it went out
    OPTED_OUT = "opted_out"
    NO_ACCOUNT = "no_account"  # no WeChat account to reach
    NO_CONSENT = "no_consent"  # only the mini-program, and no subscribe consent left to use


class SubscribeConsent(Model):
    """One subscribe-message consent the mini-program reported (wx.requestSubscribeMessage said
    accept): good for one message of that template."""

    _no_comments = True  # see models/__init__.py

    id = fields.BigIntField(primary_key=True)
    account: fields.ForeignKeyRelation[WechatAccount] = fields.ForeignKeyField(
        "linli.WechatAccount", related_name="subscribe_consents", on_delete=fields.CASCADE
    )
    template_id = fields.CharField(max_length=64)
    granted_at = fields.DatetimeField()
    used_at = fields.DatetimeField(null=True)
    refused_at = fields.DatetimeField(null=True)  # WeChat answered 43101 when it was used

    class Meta:
        table = "subscribe_consent"
        indexes = (("account_id", "used_at"),)


async def record_consents(account_id: int, template_ids: list[str], now: datetime) -> int:
    for template_id in template_ids:
        await SubscribeConsent.create(account_id=account_id, template_id=template_id, granted_at=now)
    return len(template_ids)


async def refuse_consent(consent_id: int, now: datetime) -> None:
    await SubscribeConsent.filter(id=consent_id).update(refused_at=now)


async def needs_subscription(account_id: int) -> bool:
    """No unused consent left, or the last one WeChat refused: the mini-program should ask again."""
    last = await SubscribeConsent.filter(account_id=account_id).order_by("-id").first()
    if last is None or last.refused_at is not None:
        return True
    return not await SubscribeConsent.filter(account_id=account_id, used_at=None).exists()


class Notice(Model):
    _no_comments = True  # see models/__init__.py

    id = fields.IntField(primary_key=True)
    kind = fields.CharField(max_length=16, default=NoticeKind.ANNOUNCEMENT)
    community: fields.ForeignKeyRelation[Community] = fields.ForeignKeyField(
        "linli.Community", related_name="notices", on_delete=fields.RESTRICT
    )
    grid: fields.ForeignKeyNullableRelation[Grid] = fields.ForeignKeyField(
        "linli.Grid", related_name="notices", null=True, on_delete=fields.RESTRICT
    )
    building: fields.ForeignKeyNullableRelation[Building] = fields.ForeignKeyField(
        "linli.Building", related_name="notices", null=True, on_delete=fields.RESTRICT
    )
    urgency = fields.CharField(max_length=8, default=Urgency.NORMAL)
    title = fields.CharField(max_length=TITLE_MAX)
    text = fields.CharField(max_length=TEXT_MAX)
    created_by: fields.ForeignKeyNullableRelation[Resident] = fields.ForeignKeyField(
        "linli.Resident", related_name="notices_sent", null=True, on_delete=fields.SET_NULL
    )
    created_at = fields.DatetimeField()
    send_at = fields.DatetimeField()  # when it goes out (the morning, for a normal one in quiet hours)
    fanned_out_at = fields.DatetimeField(null=True)
    fanned_upto = fields.IntField(null=True)  # the last resident id (in id order) fanned out so far
    # A question each recipient may answer in chat (a pending prompt): flow, step, question (JSON of
    # models.conversation.Question), data, expires_at (ISO). The service-day notice asks for the item.
    prompt: dict[str, Any] | None = fields.JSONField(null=True)

    class Meta:
        table = "notice"

    def audience(self) -> str:
        return "building" if self.building_id else "grid" if self.grid_id else "community"  # type: ignore[attr-defined]


class NoticeDelivery(Model):
    _no_comments = True  # see models/__init__.py

    id = fields.BigIntField(primary_key=True)
    notice: fields.ForeignKeyRelation[Notice] = fields.ForeignKeyField(
        "linli.Notice", related_name="deliveries", on_delete=fields.CASCADE
    )
    resident: fields.ForeignKeyRelation[Resident] = fields.ForeignKeyField(
        "linli.Resident", related_name="notice_deliveries", on_delete=fields.CASCADE
    )
    status = fields.CharField(max_length=12)
    outbox: fields.ForeignKeyNullableRelation[OutboxMessage] = fields.ForeignKeyField(
        "linli.OutboxMessage", related_name="deliveries", null=True, on_delete=fields.SET_NULL
    )

    class Meta:
        table = "notice_delivery"
        unique_together = (("notice", "resident"),)


def after_quiet_hours(now: datetime, tz: ZoneInfo, quiet_start: time, quiet_end: time) -> datetime:
    """``now``, or the end of the quiet hours when ``now`` falls inside them (they may span midnight)."""
    local = now.astimezone(tz)
    t = local.time()
    spans_midnight = quiet_start > quiet_end
    inside = (t >= quiet_start or t < quiet_end) if spans_midnight else (quiet_start <= t < quiet_end)
    if not inside:
        return now
    end = local.replace(hour=quiet_end.hour, minute=quiet_end.minute, second=0, microsecond=0)
    if end <= local:
        end += timedelta(days=1)
    return end.astimezone(now.tzinfo)


async def create_notice(
    *, community_id: int, title: str, text: str, urgency: str, now: datetime, send_at: datetime,
    by_id: int | None, grid_id: int | None = None, building_id: int | None = None,
    kind: str = NoticeKind.ANNOUNCEMENT, prompt: dict[str, Any] | None = None,
) -> Notice:
    title, text = title.strip(), text.strip()
    if not title or len(title) > TITLE_MAX:
        raise UserFacingError(f"标题请写1到{TITLE_MAX}个字。")
    if not text or len(text) > TEXT_MAX:
        raise UserFacingError(f"正文请写1到{TEXT_MAX}个字。")
    if urgency not in (Urgency.URGENT, Urgency.NORMAL):
        raise UserFacingError("紧急程度只能是“紧急”或“普通”。")
    return await Notice.create(kind=kind, community_id=community_id, grid_id=grid_id, building_id=building_id,
                               urgency=urgency, title=title, text=text, created_by_id=by_id, created_at=now,
                               send_at=send_at, prompt=prompt)


def _audience(notice: Notice) -> QuerySet[Resident]:
    query = Resident.filter(community_id=notice.community_id, erased_at=None)  # type: ignore[attr-defined]
    if notice.building_id is not None:  # type: ignore[attr-defined]
        return query.filter(building_id=notice.building_id)  # type: ignore[attr-defined]
    if notice.grid_id is not None:  # type: ignore[attr-defined]
        return query.filter(building__grid_id=notice.grid_id)  # type: ignore[attr-defined]
    return query


async def audience_count(notice: Notice) -> int:
    return await _audience(notice).count()


def render(notice: Notice, question: str = "") -> str:
    head = "【紧急通知】" if notice.urgency == Urgency.URGENT else "【社区通知】"
    ask = f"\n{question}" if question else ""
    foot = "" if notice.urgency == Urgency.URGENT else "\n（回复“退订”不再接收社区通知）"
    return f"{head}{notice.title}\n{notice.text}{ask}{foot}"


async def fan_out(notice_id: int, now: datetime, *, batch: int = 1000) -> dict[str, int]:
    """One delivery per resident of the audience, one outbox row per reachable account.

    Safe to run again, and at the same time as another fan-out of the same notice (a crash half
    way, the due sweep next to an immediate fan-out): each batch is written in one transaction
    with the notice row locked, and records on the notice the last resident it covered (residents
    are taken in id order), so a later batch or run skips what is done. A notice
    with a question gives each official-account recipient a pending prompt (subject
    ``notice:<id>``), marked seen when the sender's push of the notice went through.
    """
    notice = await Notice.get(id=notice_id)
    priority = Priority.NORMAL if notice.urgency == Urgency.URGENT else Priority.BULK
    subject = f"notice:{notice.id}"
    prompt = notice.prompt
    text = render(notice, Question.from_json(prompt["question"]).render() if prompt else "")
    # outside the customer-service window the sender falls back to the 'notice' template (wechat.templates)
    payload: dict[str, Any] = {"content": text, "fallback_template": "notice", "fallback_data": {
        "first": {"value": ("【紧急】" if notice.urgency == Urgency.URGENT else "") + notice.title},
        "keyword1": {"value": notice.text[:180]},
        "remark": {"value": "详情请咨询社区工作人员。"},
    }}
    if prompt:
        payload["prompt_subject"] = subject
    counts = {DeliveryStatus.QUEUED: 0, DeliveryStatus.OPTED_OUT: 0, DeliveryStatus.NO_ACCOUNT: 0,
              DeliveryStatus.NO_CONSENT: 0}
    send_at = max(now, notice.send_at)
    people = await _audience_ids(notice)
    for start in range(0, len(people), batch):
        async with in_transaction():
            # One fan-out of this notice at a time (PostgreSQL row lock; SQLite writes one at a
            # time), continuing after the last resident a previous batch (or run) wrote.
            locked = await Notice.filter(id=notice.id).select_for_update().get()
            upto = locked.fanned_upto
            chunk = [(pid, off) for pid, off in people[start:start + batch] if upto is None or pid > upto]
            if not chunk:
                continue
            await Notice.filter(id=notice.id).update(fanned_upto=chunk[-1][0])
            ids = [pid for pid, _ in chunk]
            accounts: dict[int, list[str]] = {}
            for resident_id, openid in await WechatAccount.filter(
                    resident_id__in=ids, channel__in=["oa", "chat"], subscribed=True).order_by("id").values_list(
                    "resident_id", "openid"):
                accounts.setdefault(resident_id, []).append(openid)
            mini: dict[int, list[WechatAccount]] = {}
            for account in await WechatAccount.filter(resident_id__in=ids, channel="mp").order_by("id"):
                mini.setdefault(account.resident_id, []).append(account)  # type: ignore[attr-defined]
            statuses: dict[int, str] = {}
            first_key: dict[int, str] = {}
            rows: list[OutboxMessage] = []
            for person_id, notices_off in chunk:
                mine = accounts.get(person_id, [])
                if notices_off and notice.urgency != Urgency.URGENT:
                    statuses[person_id] = DeliveryStatus.OPTED_OUT
                elif not mine and mini.get(person_id):
                    row = await _subscribe(notice, mini[person_id], now)
                    statuses[person_id] = DeliveryStatus.QUEUED if row else DeliveryStatus.NO_CONSENT
                    if row is not None:
                        first_key[person_id] = row.idempotency_key
                elif not mine:
                    statuses[person_id] = DeliveryStatus.NO_ACCOUNT
                else:
                    statuses[person_id] = DeliveryStatus.QUEUED
                    first_key[person_id] = f"{subject}:{mine[0]}"
                    rows += [OutboxMessage(openid=openid, kind="text", payload=payload, priority=priority,
                                           idempotency_key=f"{subject}:{openid}", next_attempt_at=send_at,
                                           created_at=now) for openid in mine]
            if rows:  # a row with the same key (written before a crash) is kept as it is
                await OutboxMessage.bulk_create(rows, ignore_conflicts=True)
            if prompt and rows:
                expires = datetime.fromisoformat(prompt["expires_at"])
                await PendingPrompt.bulk_create([PendingPrompt(
                    openid=row.openid, flow=prompt["flow"], step=prompt["step"], question=prompt["question"],
                    data=prompt.get("data", {}), subject=subject, created_at=now, expires_at=expires)
                    for row in rows])
            outbox_ids = dict(await OutboxMessage.filter(idempotency_key__in=list(first_key.values())).values_list(
                "idempotency_key", "id")) if first_key else {}
            await NoticeDelivery.bulk_create([NoticeDelivery(
                notice_id=notice.id, resident_id=person_id, status=status,
                outbox_id=outbox_ids.get(first_key.get(person_id, ""))) for person_id, status in statuses.items()])
            for status in statuses.values():
                counts[status] += 1
    notice.fanned_out_at = now
    await notice.save(update_fields=["fanned_out_at"])
    return counts


async def _audience_ids(notice: Notice) -> list[tuple[int, bool]]:
    """(resident id, has said 退订) of everyone the notice is for, in id order."""
    rows = await _audience(notice).order_by("id").values_list("id", "notices_off_at")
    return [(rid, off is not None) for rid, off in rows]


async def _subscribe(notice: Notice, accounts: list[WechatAccount], now: datetime) -> OutboxMessage | None:
    """A subscribe message to a mini-program user, against one unused consent (each works once)."""
    for account in accounts:
        consent = await SubscribeConsent.filter(account_id=account.id, used_at=None, refused_at=None).order_by(
            "id").first()
        if consent is None:
            continue
        consent.used_at = now
        await consent.save(update_fields=["used_at"])
        return await enqueue(openid=account.openid, kind="subscribe", channel="mp", now=max(now, notice.send_at),
                             idempotency_key=f"notice:{notice.id}:{account.openid}",
                             priority=Priority.NORMAL if notice.urgency == Urgency.URGENT else Priority.BULK,
                             payload={"template_id": consent.template_id, "consent_id": consent.id, "data": {
                                 "thing1": {"value": notice.title[:20]}, "thing2": {"value": notice.text[:20]}}})
    return None


async def notice_report(notice_id: int, now: datetime) -> dict[str, int]:
    """Per notice: recipients, sent, waiting (due, in the queue), held (paused until later: WeChat's
    daily quota, or a retry's backoff), failed by error code, opted out, unreachable.

    Counted in the database (two grouped queries), so a notice to 100,000 residents costs no more.
    """
    report: dict[str, int] = {"recipients": 0, "sent": 0, "waiting": 0, "held": 0, "opted_out": 0,
                              "no_account": 0, "no_consent": 0}
    rows = await (NoticeDelivery.filter(notice_id=notice_id).annotate(n=Count("id"))
                  .group_by("status", "outbox__state", "outbox__error_code")
                  .values_list("status", "outbox__state", "outbox__error_code", "n"))
    for status, state, code, n in rows:
        report["recipients"] += n
        if status != DeliveryStatus.QUEUED:
            report[status] += n
        elif state is None:
            report["failed:deleted"] = report.get("failed:deleted", 0) + n
        elif state == State.SENT:
            report["sent"] += n
        elif state == State.FAILED:
            report[f"failed:{code}"] = report.get(f"failed:{code}", 0) + n
        else:
            report["waiting"] += n
    held = await NoticeDelivery.filter(notice_id=notice_id, outbox__state=State.PENDING,
                                       outbox__next_attempt_at__gt=now).count()
    report["held"], report["waiting"] = held, report["waiting"] - held
    return report


@register_action("notice.fan_out")
async def _fan_out_due(target: str, now: datetime) -> None:
    await fan_out(int(target.removeprefix("notice:")), now)


async def schedule_notice(notice: Notice, now: datetime) -> None:
    """Fan the notice out when it is due (through the due-action table, so a restart loses none);
    an urgent one is fanned out at once as well."""
    await schedule_action("notice.fan_out", f"notice:{notice.id}", notice.send_at, now)
    if notice.urgency == Urgency.URGENT:
        await fan_out(notice.id, now)


async def set_notices(resident_id: int, on: bool, now: datetime) -> bool:
    """退订 / 订阅; returns whether anything changed."""
    resident = await Resident.get(id=resident_id)
    if on == (resident.notices_off_at is None):
        return False
    resident.notices_off_at = None if on else now
    await resident.save(update_fields=["notices_off_at"])
    return True
