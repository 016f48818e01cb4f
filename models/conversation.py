"""Pending prompts: questions the service asked on its own, answerable for days."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any

from tortoise import fields
from tortoise.models import Model


@dataclass
class Question:
    """What a step asks; its kind decides how the engine validates the answer."""

    text: str
    kind: str = "text"  # choice | text | photo | location | confirm
    options: list[str] = field(default_factory=list)
    values: list[Any] = field(default_factory=list)  # what each option stands for
    min_len: int = 1
    max_len: int = 100
    optional: bool = False  # photo/location: 跳过 allowed
    # a choice that also takes a photo and/or a location message ("photo", "location"): the step
    # then receives {"photo": {...}} or {"location": {...}} instead of an option's value
    also: tuple[str, ...] = ()

    def render(self) -> str:
        lines = [self.text]
        if self.kind == "choice":
            lines += [f"{i}. {label}" for i, label in enumerate(self.options, 1)]
            extra = "或".join(ALSO_LABELS[kind] for kind in self.also if kind in ALSO_LABELS)
            lines.append(f"请回复序号，也可以发{extra}。" if extra else "请回复序号。")
        elif self.kind == "confirm":
            lines.append("请回复“是”或“否”。")
        elif self.kind == "photo" and self.optional:
            lines.append("没有照片请回复“跳过”。")
        elif self.kind == "location" and self.optional:
            lines.append("不发位置请回复“跳过”。")
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        if self.also:
            data["also"] = list(self.also)
        else:
            del data["also"]  # questions stored before it existed look the same as those stored after
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Question:
        data = dict(data)
        also = tuple(data.pop("also", ()))
        return cls(**data, also=also)


ALSO_LABELS = {"photo": "照片", "location": "位置"}


def choice(text: str, items: list[tuple[Any, str]], *, also: tuple[str, ...] = ()) -> Question:
    """A numbered list; the step receives the value of the chosen item (or, with ``also``, a photo
    or location message as {"photo": {...}} / {"location": {...}})."""
    if any(kind not in ALSO_LABELS for kind in also):
        raise ValueError(f"a choice may also take {sorted(ALSO_LABELS)}, not {also}")
    return Question(text, "choice", [label for _, label in items], [value for value, _ in items], also=also)


def confirm(text: str) -> Question:
    return Question(text, "confirm")


def free_text(text: str, *, min_len: int = 1, max_len: int = 100) -> Question:
    return Question(text, "text", min_len=min_len, max_len=max_len)


class PendingPrompt(Model):
    _no_comments = True  # see models/__init__.py

    id = fields.IntField(primary_key=True)
    openid = fields.CharField(max_length=64, db_index=True)
    flow = fields.CharField(max_length=32)
    step = fields.CharField(max_length=32)
    question: dict[str, Any] = fields.JSONField()
    data: dict[str, Any] = fields.JSONField(default=dict)
    # Lets the one who asked withdraw or replace it, e.g. ("link_request", 12).
    subject = fields.CharField(max_length=64, default="")
    created_at = fields.DatetimeField()
    expires_at = fields.DatetimeField()
    delivered_at = fields.DatetimeField(null=True)
    closed_at = fields.DatetimeField(null=True)
    closed_reason = fields.CharField(max_length=16, default="")  # answered | expired | withdrawn

    class Meta:
        table = "pending_prompt"


async def open_prompts(openid: str, now: datetime) -> list[PendingPrompt]:
    """Unanswered, unexpired prompts of this openid, oldest first."""
    return (
        await PendingPrompt.filter(openid=openid, closed_at=None, expires_at__gt=now)
        .order_by("id")
        .all()
    )


async def create_prompt(
    *,
    openid: str,
    flow: str,
    step: str,
    question: dict[str, Any],
    data: dict[str, Any],
    now: datetime,
    days: int,
    subject: str = "",
) -> PendingPrompt:
    return await PendingPrompt.create(
        openid=openid, flow=flow, step=step, question=question, data=data, subject=subject,
        created_at=now, expires_at=now + timedelta(days=days),
    )


async def push_prompt(
    *, openid: str, flow: str, step: str, question: Question, data: dict[str, Any], now: datetime, days: int,
    subject: str = "",
) -> PendingPrompt:
    """Store a question the service asks on its own and write its push to the outbox (once per
    prompt). The prompt is also shown at its recipient's next message until it has been seen, so a
    refused push loses nothing."""
    from models.outbox import enqueue

    prompt = await create_prompt(openid=openid, flow=flow, step=step, question=question.to_json(), data=data,
                                 now=now, days=days, subject=subject)
    await enqueue(openid=openid, kind="text", payload={"content": question.render()},
                  idempotency_key=f"prompt:{prompt.id}", now=now)
    return prompt


async def close_prompt(prompt_id: int, reason: str, now: datetime) -> bool:
    """Close a prompt once; returns False when it was already closed (a retry or a race)."""
    updated = await PendingPrompt.filter(id=prompt_id, closed_at=None).update(
        closed_at=now, closed_reason=reason
    )
    return bool(updated)


async def reopen_prompt(prompt_id: int) -> None:
    await PendingPrompt.filter(id=prompt_id, closed_reason="answered").update(closed_at=None, closed_reason="")


async def mark_delivered(prompt_id: int, now: datetime) -> None:
    """WeChat accepted the push of this prompt: the recipient has seen it and may answer it."""
    await PendingPrompt.filter(id=prompt_id, delivered_at=None).update(delivered_at=now)


async def withdraw_prompts(subject: str, now: datetime) -> int:
    return await PendingPrompt.filter(subject=subject, closed_at=None).update(
        closed_at=now, closed_reason="withdrawn"
    )
