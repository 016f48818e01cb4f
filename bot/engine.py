"""The conversation engine: declared flows, per-resident state under a lock, shared fallbacks.

A flow is a set of named states with one step function each. A step receives the validated
answer to the question of its state and returns what happens next: ask the next question
(``Ask``), finish (``Done``), or hand over to another flow (``Goto``). The engine validates
answers against the question's kind, so steps only see well-formed input, and keeps a history
so that 返回 re-asks the previous question.
"""

from __future__ import annotations

import inspect
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from redis.asyncio import Redis

from bot.clock import Clock, work_calendar
from bot.config import Config
from bot.store import key
from models.conversation import (  # noqa: F401 - the questions are part of the engine's interface for flows
    PendingPrompt,
    Question,
    choice,
    close_prompt,
    confirm,
    free_text,
    open_prompts,
    push_prompt,
    reopen_prompt,
)
from models.errors import UserFacingError
from models.outbox import Priority, enqueue
from models.residents import (
    Resident,
    StaffRole,
    WechatAccount,
    get_or_create_account,
    pending_request_of,
)

log = logging.getLogger(__name__)

REPLY_MAX_CHARS = 300
TEXT_MAX_CHARS = 500  # any free text longer than this is refused before a step sees it

CANCEL_WORDS = frozenset({"取消", "退出", "cancel", "quit", "q"})
MENU_WORDS = frozenset({"帮助", "菜单", "help", "menu", "?", "？"})
BACK_WORDS = frozenset({"返回", "上一步", "back"})
YES_WORDS = frozenset({"是", "是的", "确认", "确定", "好", "好的", "对", "同意", "可以", "y", "yes", "1"})
NO_WORDS = frozenset({"否", "不", "不是", "不对", "不同意", "不要", "n", "no", "2"})
SKIP_WORDS = frozenset({"跳过", "没有", "无", "skip"})
GREETINGS = frozenset({"你好", "您好", "在吗", "在不在", "hi", "hello", "嗨", "早上好", "下午好", "晚上好"})

_FULLWIDTH_DIGITS = str.maketrans("０１２３４５６７８９", "0123456789")
_CN_NUMBERS = {"一": 1, "二": 2, "三": 3, "四": 4, "五": 5, "六": 6, "七": 7, "八": 8, "九": 9,
               "十": 10}


# ---------------------------------------------------------------------------- inbound


@dataclass
class Inbound:
    """One message from a resident, whatever the channel."""

    openid: str
    kind: str  # text | image | voice | location | link | video | event | other
    text: str = ""  # text content, or WeChat's speech recognition of a voice message
    channel: str = "oa"
    media_id: str = ""
    pic_url: str = ""
    latitude: float | None = None
    longitude: float | None = None
    label: str = ""
    url: str = ""
    title: str = ""
    event: str = ""  # subscribe | unsubscribe | scan | click | view | ...
    event_key: str = ""

    @property
    def has_text(self) -> bool:
        return self.kind in ("text", "voice") and bool(self.text.strip())


# ---------------------------------------------------------------------------- questions (models.conversation)


class InvalidAnswer(Exception):
    def __init__(self, hint: str) -> None:
        super().__init__(hint)
        self.hint = hint


def _as_number(text: str) -> int | None:
    t = text.strip().translate(_FULLWIDTH_DIGITS).rstrip(".。、")
    if t.isdigit():
        return int(t)
    return _CN_NUMBERS.get(t)


def _photo(msg: Inbound) -> dict[str, Any]:
    return {"media_id": msg.media_id, "pic_url": msg.pic_url}


def _location(msg: Inbound) -> dict[str, Any]:
    return {"lat": msg.latitude, "lon": msg.longitude, "label": msg.label}


def validate(question: Question, msg: Inbound) -> Any:
    """The answer's value for a step, or InvalidAnswer with a specific hint."""
    text = msg.text.strip() if msg.has_text else ""
    if question.kind == "choice":
        if msg.kind == "image" and "photo" in question.also:
            return {"photo": _photo(msg)}
        if msg.kind == "location" and "location" in question.also:
            return {"location": _location(msg)}
        if not text:
            raise InvalidAnswer(f"请回复 1 到 {len(question.options)} 之间的序号。")
        number = _as_number(text)
        if number is not None and 1 <= number <= len(question.options):
            return question.values[number - 1]
        for label, value in zip(question.options, question.values, strict=True):
            if text == label:
                return value
        raise InvalidAnswer(f"没有这个选项，请回复 1 到 {len(question.options)} 之间的序号。")
    if question.kind == "confirm":
        lowered = text.lower().rstrip("。.!！")
        if lowered in YES_WORDS:
            return True
        if lowered in NO_WORDS:
            return False
        raise InvalidAnswer("请回复“是”或“否”。")
    if question.kind == "text":
        if not text:
            raise InvalidAnswer("请用文字回复（也可以发语音）。")
        if len(text) > question.max_len:
            raise InvalidAnswer(f"内容太长了，最多 {question.max_len} 个字，请精简后再发。")
        if len(text) < question.min_len:
            raise InvalidAnswer(f"内容太短了，至少 {question.min_len} 个字。")
        return text
    if question.kind == "photo":
        if msg.kind == "image":
            return _photo(msg)
        if question.optional and text in SKIP_WORDS:
            return None
        raise InvalidAnswer("请发送一张照片（点输入框旁的“+”，选“照片”或“拍摄”）。")
    if question.kind == "location":
        if msg.kind == "location":
            return _location(msg)
        if question.optional and text in SKIP_WORDS:
            return None
        raise InvalidAnswer("请发送位置（点输入框旁的“+”，选“位置”）。")
    raise InvalidAnswer("请按提示回复。")  # pragma: no cover


# ---------------------------------------------------------------------------- step results


@dataclass
class Ask:
    state: str
    question: Question
    prefix: str = ""  # said before the question, e.g. "已记录。"


@dataclass
class Done:
    text: str


@dataclass
class Goto:
    flow: str
    prefix: str = ""
    data: dict[str, Any] = field(default_factory=dict)


StepResult = Ask | Done | Goto
StepFn = Callable[..., Awaitable[StepResult]]


# ---------------------------------------------------------------------------- flows


class Flow:
    """A declared flow: an entry, named steps, and the words and menu keys that start it."""

    def __init__(
        self,
        name: str,
        title: str,
        *,
        keywords: tuple[str, ...] = (),
        menu_keys: tuple[str, ...] = (),
        needs_binding: bool = True,
        roles: tuple[str, ...] = (),
        as_self: bool = False,
        interrupts: bool = False,
        scenes: tuple[str, ...] = (),
        takes_argument: bool = False,
        in_menu: bool = True,
    ) -> None:
        self.name = name
        self.title = title
        self.keywords = keywords
        self.menu_keys = menu_keys
        self.needs_binding = needs_binding
        # only people holding one of these staff roles may start it (empty: everyone)
        self.roles = roles
        # runs as the person themselves even while they act for an elder (binding, proxy links)
        self.as_self = as_self or bool(roles)
        # its keywords work even while another flow waits for an answer (like 取消)
        self.interrupts = interrupts
        # QR scene prefixes ("checkin:") that start it for a bound follower who scans such a code;
        # the entry reads the whole scene from ``data["scene"]``
        self.scenes = scenes
        # its keyword may be followed by a space and more ("签到 123456"); the entry reads msg.text
        self.takes_argument = takes_argument
        # listed among the staff's services in 菜单 (False: reached from another flow or by keyword)
        self.in_menu = in_menu
        self.entry_fn: StepFn | None = None
        self.steps: dict[str, StepFn] = {}

    def entry(self, fn: StepFn) -> StepFn:
        self.entry_fn = fn
        return fn

    def step(self, state: str) -> Callable[[StepFn], StepFn]:
        def register(fn: StepFn) -> StepFn:
            if state in self.steps:
                raise ValueError(f"{self.name}: step {state} declared twice")
            self.steps[state] = fn
            return fn

        return register


# ---------------------------------------------------------------------------- the engine


@dataclass
class Turn:
    """What a step may ask for by parameter name.

    ``account`` and ``resident`` are read from the database only when a step (or the engine's
    binding check) asks for them: most steps in the middle of a conversation need neither.

    ``resident`` is whom the flow serves: the elder while a family proxy acts for one (except in
    flows marked ``as_self``), else the person writing. ``actor`` is always the person writing;
    flows record both (models.proxies.record_action).
    """

    msg: Inbound
    data: dict[str, Any]
    now: datetime
    tz: ZoneInfo
    engine: Engine
    answer: Any = None
    as_self: bool = False
    _account: WechatAccount | None = None
    _actor: Resident | None = None
    _actor_loaded: bool = False
    _subject: Resident | None = None
    _subject_loaded: bool = False

    async def account(self) -> WechatAccount:
        if self._account is None:
            self._account = await get_or_create_account(self.msg.openid, self.msg.channel, self.now)
        return self._account

    async def actor(self) -> Resident | None:
        """The person writing (their own record), or None before binding."""
        if not self._actor_loaded:
            account = await self.account()
            resident_id = account.resident_id  # type: ignore[attr-defined]
            self._actor = None if resident_id is None else await Resident.get_or_none(id=resident_id)
            self._actor_loaded = True
        return self._actor

    async def resident(self) -> Resident | None:
        """Whom the flow serves: the elder a proxy acts for, else the person writing."""
        if self.as_self:
            return await self.actor()
        if not self._subject_loaded:
            actor = await self.actor()
            self._subject = actor
            if actor is not None:
                elder = await self.engine.acting_for(self.msg.openid, actor.id)
                if elder is not None:
                    self._subject = elder
            self._subject_loaded = True
        return self._subject

    def forget(self) -> None:
        """Binding may have changed (a flow handed over to another): read it again when asked."""
        self._account, self._actor, self._actor_loaded = None, None, False
        self._subject, self._subject_loaded = None, False


LAZY = frozenset({"account", "resident", "actor"})


@dataclass
class Reply:
    text: str = ""


class Engine:
    def __init__(
        self,
        flows: list[Flow],
        store: Redis,
        clock: Clock,
        config: Config,
        *,
        menu_flow: str = "menu",
        binding_flow: str = "binding",
        welcome: str = "",
        sender: Any = None,
    ) -> None:
        self.flows = {f.name: f for f in flows}
        if len(self.flows) != len(flows):
            raise ValueError("two flows share a name")
        self.store = store
        self.clock = clock
        self.config = config
        self.tz = ZoneInfo(config.community.timezone)
        self.calendar = work_calendar(config.community)  # for deadlines counted in working days
        self.idle = timedelta(minutes=config.conversation.idle_minutes)
        self.menu_flow = menu_flow
        self.binding_flow = binding_flow
        self.welcome = welcome
        self.sender = sender  # bot.outbox.Sender: woken when something is written to the outbox
        self._keywords = {kw: f for f in flows for kw in f.keywords}
        self._menu_keys = {k: f for f in flows for k in f.menu_keys}
        self._scenes = {p: f for f in flows for p in f.scenes}
        self._params: dict[StepFn, list[str]] = {}

    # -- state in the store

    def _state_key(self, openid: str) -> str:
        return key("conv", openid)

    async def _load(self, openid: str) -> dict[str, Any] | None:
        raw = await self.store.get(self._state_key(openid))
        return json.loads(raw) if raw else None

    async def _save(self, openid: str, state: dict[str, Any]) -> None:
        # The store keeps the state a while past the idle limit so the next message can be told
        # that its conversation expired; the idle check itself uses the injectable clock.
        ttl = int(max(self.idle * 4, timedelta(hours=24)).total_seconds())
        await self.store.set(self._state_key(openid), json.dumps(state, ensure_ascii=False), ex=ttl)

    async def _clear(self, openid: str) -> None:
        await self.store.delete(self._state_key(openid))

    async def state_of(self, openid: str) -> dict[str, Any] | None:
        """The stored conversation state (for tests and diagnostics)."""
        return await self._load(openid)

    # -- entry point

    async def handle(self, msg: Inbound) -> Reply:
        """Handle one inbound message under the resident's lock and return the passive reply."""
        lock = self.store.lock(key("lock", "conv", msg.openid), timeout=30, blocking_timeout=20)
        async with lock:
            text = await self._handle_locked(msg)
        if len(text) > REPLY_MAX_CHARS:
            log.warning("reply of %d characters exceeds %d", len(text), REPLY_MAX_CHARS)
        return Reply(text)

    async def _handle_locked(self, msg: Inbound) -> str:
        now = self.clock.now()
        if msg.kind == "event":
            return await self._handle_event(msg, now)
        if msg.kind == "voice" and not msg.text.strip():
            return "抱歉，没有听清您的语音。请再说一遍，或者打字回复。"
        if msg.has_text and len(msg.text) > TEXT_MAX_CHARS:
            return f"消息太长了（最多 {TEXT_MAX_CHARS} 个字），请分几次简短地发送。"
        state = await self._load(msg.openid)
        expired_note = ""
        if state is not None and now - datetime.fromisoformat(state["updated"]) > self.idle:
            await self._clear(msg.openid)
            if state["flow"] != self.menu_flow:  # an open menu is nothing lost: no need to say so
                minutes = self.config.conversation.idle_minutes
                expired_note = f"您超过{minutes}分钟没有回复，刚才的“{self._title(state)}”已结束，需要请重新开始。\n"
            state = None

        word = msg.text.strip().lower() if msg.has_text else ""
        turn = Turn(msg, {}, now, self.tz, self)

        if word in CANCEL_WORDS:
            if state is None:
                return expired_note + "当前没有进行中的事项。回复“菜单”查看可办理的服务。"
            await self._clear(msg.openid)
            return f"已取消“{self._title(state)}”。回复“菜单”查看可办理的服务。"
        if word in MENU_WORDS:
            return expired_note + await self._start(self.menu_flow, turn, cancelled=state)
        if word in BACK_WORDS:
            if state is None:
                return expired_note + await self._start(self.menu_flow, turn)
            return await self._back(msg.openid, state, now)

        if state is not None:
            interrupting = self._keywords.get(word) if word else None
            if interrupting is not None and interrupting.interrupts:
                return await self._start(interrupting.name, turn, cancelled=state)
            return await self._answer(state, turn)

        prompts = await open_prompts(msg.openid, now)
        # a keyword starts its flow rather than answer a question that takes any text
        flow = self._keyword_flow(word)
        answered = await self._answer_prompt(prompts, turn, keyword=flow is not None)
        if answered is not None:
            return expired_note + answered

        if flow is not None:
            return expired_note + await self._start(flow.name, turn)
        shown = await self._show_prompt(prompts, now)
        if shown is not None:
            return expired_note + shown
        if expired_note:
            return expired_note + "回复“菜单”查看可办理的服务。"
        if msg.kind in ("image", "video", "link", "location"):
            return "已收到。如需办理事项，请回复“菜单”查看服务。"
        if msg.kind == "other":
            return "暂不支持这种消息。请发文字或语音，回复“菜单”查看服务。"
        greeting = word.rstrip("!！。.~?？") in GREETINGS
        return await self._start(self.menu_flow, turn,
                                 prefix="您好！" if greeting else "抱歉，没有听懂您的意思。")

    def _keyword_flow(self, word: str) -> Flow | None:
        """The flow a message starts: its keyword, or a keyword that takes what follows ("签到 123456")."""
        if not word:
            return None
        flow = self._keywords.get(word)
        if flow is None and " " in word:
            head, _, rest = word.partition(" ")
            flow = self._keywords.get(head)
            if flow is not None and not (flow.takes_argument and rest.strip()):
                flow = None
        return flow

    def _title(self, state: dict[str, Any]) -> str:
        flow = self.flows.get(state["flow"])
        return flow.title if flow else state["flow"]

    async def _handle_event(self, msg: Inbound, now: datetime) -> str:
        turn = Turn(msg, {}, now, self.tz, self)
        account = await turn.account()
        event = msg.event
        if event in ("subscribe", "subscribe_scan", "scan"):
            # A follow, possibly through a parametric QR code (the gateway strips "qrscene_"), or
            # a follower scanning one (scan).
            following = event != "scan"
            fields = ["last_scene"]
            if following:
                account.subscribed = True
                account.subscribed_at = now
                fields += ["subscribed", "subscribed_at"]
            if msg.event_key:
                account.last_scene = msg.event_key[:64]
            await account.save(update_fields=fields)
            greeting = (self.welcome if following else "欢迎回来！") + "\n"
            state = await self._load(msg.openid)
            if state is not None and state["flow"] == self.menu_flow:
                state = None  # only the menu was open: nothing to tell
            if msg.event_key and await turn.actor() is None:
                # Not bound yet: the binding flow reads the scene (a stairwell poster's code names
                # the building) and sends a code it does not know on to the menu.
                return await self._start(self.binding_flow, turn, prefix=greeting,
                                         data={"scene": msg.event_key}, cancelled=state)
            scened = next((f for p, f in self._scenes.items() if msg.event_key.startswith(p)), None)
            if scened is not None:
                return await self._start(scened.name, turn, prefix="" if not following else greeting,
                                         data={"scene": msg.event_key}, cancelled=state)
            return await self._start(self.menu_flow, turn, prefix=greeting, cancelled=state)
        if event == "unsubscribe":
            account.subscribed = False
            account.unsubscribed_at = now
            await account.save(update_fields=["subscribed", "unsubscribed_at"])
            await self._clear(msg.openid)
            return ""
        if event == "click":
            flow = self._menu_keys.get(msg.event_key)
            if flow is None:
                return "该功能暂未开放。回复“菜单”查看可办理的服务。"
            state = await self._load(msg.openid)
            return await self._start(flow.name, turn, cancelled=state)
        return ""  # view, location reports, template results...: nothing to say

    # -- running steps

    async def _start(
        self, flow_name: str, turn: Turn, *, prefix: str = "", data: dict[str, Any] | None = None,
        cancelled: dict[str, Any] | None = None,
    ) -> str:
        if cancelled is not None and cancelled["flow"] != flow_name:
            await self._clear(turn.msg.openid)
            prefix = f"已退出“{self._title(cancelled)}”。\n" + prefix
        flow = self.flows.get(flow_name)
        if flow is None or flow.entry_fn is None:
            return prefix + "该服务即将开通，敬请期待。回复“菜单”查看其他服务。"
        turn.as_self = flow.as_self
        if flow.needs_binding and await turn.actor() is None:
            if flow_name == self.binding_flow:  # pragma: no cover - binding never needs binding
                raise RuntimeError("binding flow must not need binding")
            if await pending_request_of(await turn.account()) is not None:
                return prefix + "您的绑定申请正在等待网格员确认，确认后即可使用。回复“解绑”可撤回申请。"
            return await self._start(
                self.binding_flow, turn,
                prefix=prefix + f"使用“{flow.title}”前，需要先绑定您的身份信息。\n",
                data={"resume": flow_name},
            )
        if flow.roles:
            actor = await turn.actor()
            if actor is None or not await StaffRole.filter(
                resident_id=actor.id, role__in=flow.roles, revoked_at=None
            ).exists():
                return prefix + "该功能仅限相关工作人员使用。回复“菜单”查看可办理的服务。"
        turn.data = dict(data or {})
        state: dict[str, Any] = {"flow": flow_name, "state": "", "question": None, "history": [],
                                 "data": turn.data, "updated": turn.now.isoformat()}
        result = await self._call(flow.entry_fn, turn)
        return prefix + await self._apply(result, state, turn)

    async def _answer(self, state: dict[str, Any], turn: Turn) -> str:
        flow = self.flows.get(state["flow"])
        if flow is None or state["state"] not in flow.steps:
            await self._clear(turn.msg.openid)
            return "刚才的事项已失效，请重新开始。回复“菜单”查看服务。"
        question = Question.from_json(state["question"])
        try:
            turn.answer = validate(question, turn.msg)
        except InvalidAnswer as exc:
            # Not an answer here, but perhaps to a question pushed since this one was asked.
            asked = datetime.fromisoformat(state["updated"])
            newer = [p for p in await open_prompts(turn.msg.openid, turn.now)
                     if p.delivered_at is not None and p.delivered_at >= asked]
            answered = await self._answer_prompt(newer, turn) if newer else None
            if answered is not None:
                return answered
            return exc.hint + "\n" + question.render()
        turn.as_self = flow.as_self
        turn.data = state["data"]
        result = await self._call(flow.steps[state["state"]], turn, question=question)
        return await self._apply(result, state, turn)

    async def _call(self, fn: StepFn, turn: Turn, question: Question | None = None) -> StepResult:
        try:
            return await fn(**await self._inject(fn, turn))
        except UserFacingError as exc:
            if question is None:
                return Done(exc.message)
            return Ask("", question, prefix=exc.message + "\n")

    async def _inject(self, fn: StepFn, turn: Turn) -> dict[str, Any]:
        names = self._params.get(fn)
        if names is None:
            names = list(inspect.signature(fn).parameters)
            unknown = [n for n in names if n.startswith("_") or not hasattr(turn, n)]
            if unknown:
                raise TypeError(f"{fn.__qualname__} asks for unknown parameters {unknown}")
            self._params[fn] = names
        kwargs = {}
        for name in names:
            if name in LAZY:
                kwargs[name] = await getattr(turn, name)()
            else:
                kwargs[name] = getattr(turn, name)
        return kwargs

    async def _apply(self, result: StepResult, state: dict[str, Any], turn: Turn) -> str:
        openid = turn.msg.openid
        if isinstance(result, Ask):
            if not result.state:
                result.state = state["state"]  # a UserFacingError: re-ask the same state
            elif state["state"] and state["question"] and result.state != state["state"]:
                state["history"].append([state["state"], state["question"]])
            state["state"] = result.state
            state["question"] = result.question.to_json()
            state["data"] = turn.data
            state["updated"] = turn.now.isoformat()
            await self._save(openid, state)
            return result.prefix + result.question.render()
        await self._clear(openid)
        if isinstance(result, Done):
            return result.text
        turn.forget()
        return await self._start(result.flow, turn, prefix=result.prefix, data=result.data)

    async def _back(self, openid: str, state: dict[str, Any], now: datetime) -> str:
        question = Question.from_json(state["question"])
        if not state["history"]:
            return "已经是第一步了。\n" + question.render()
        prev_state, prev_question = state["history"].pop()
        state["state"] = prev_state
        state["question"] = prev_question
        state["updated"] = now.isoformat()
        await self._save(openid, state)
        return Question.from_json(prev_question).render()

    # -- acting for an elder (亲情代理)

    def _acting_key(self, openid: str) -> str:
        return key("acting", openid)

    async def act_for(self, openid: str, elder_id: int | None) -> None:
        """Start (or, with None, end) acting for an elder; it lapses after the idle time."""
        if elder_id is None:
            await self.store.delete(self._acting_key(openid))
        else:
            await self.store.set(self._acting_key(openid), str(elder_id), ex=int(self.idle.total_seconds()))

    async def acting_for(self, openid: str, actor_id: int) -> Resident | None:
        """The elder this person is acting for now, if the link is still active."""
        from models.proxies import acts_for

        raw = await self.store.get(self._acting_key(openid))
        if not raw:
            return None
        elder_id = int(raw)
        if not await acts_for(actor_id, elder_id):
            await self.store.delete(self._acting_key(openid))
            return None
        await self.store.expire(self._acting_key(openid), int(self.idle.total_seconds()))
        return await Resident.get_or_none(id=elder_id)

    # -- pushing to someone other than the sender of the current message

    async def send(self, openid: str, text: str, *, key: str, priority: int = Priority.NORMAL) -> None:
        """Write a text for ``openid`` to the outbox (once per ``key``); the sender pushes it."""
        await enqueue(openid=openid, kind="text", payload={"content": text}, idempotency_key=key,
                      now=self.clock.now(), priority=priority)
        if self.sender is not None:
            self.sender.notify()

    # -- pending prompts

    async def ask_later(
        self, *, openid: str, flow: str, step: str, question: Question, data: dict[str, Any],
        subject: str = "", days: int | None = None,
    ) -> PendingPrompt:
        """Store a question the service asks on its own and push it; the answer may come days later."""
        if flow not in self.flows or step not in self.flows[flow].steps:
            raise ValueError(f"no step {flow}.{step}")
        prompt = await push_prompt(openid=openid, flow=flow, step=step, question=question, data=data,
                                   now=self.clock.now(), days=days or self.config.conversation.prompt_days,
                                   subject=subject)
        if self.sender is not None:
            self.sender.notify()
        return prompt

    async def _answer_prompt(self, prompts: list[PendingPrompt], turn: Turn, *, keyword: bool = False) -> str | None:
        """Route the message to the latest delivered prompt it is a valid answer to (a flow's keyword
        is no answer to a free-text question)."""
        for prompt in reversed([p for p in prompts if p.delivered_at is not None]):
            question = Question.from_json(prompt.question)
            if keyword and question.kind == "text":
                continue
            try:
                turn.answer = validate(question, turn.msg)
            except InvalidAnswer:
                continue
            flow = self.flows[prompt.flow]
            turn.as_self = True  # a prompt is addressed to the person it was sent to
            turn.data = dict(prompt.data)
            state = {"flow": prompt.flow, "state": prompt.step, "question": prompt.question,
                     "history": [], "data": turn.data, "updated": turn.now.isoformat()}
            if not await close_prompt(prompt.id, "answered", turn.now):
                return "这条消息已经处理过了。"
            try:
                result = await self._call(flow.steps[prompt.step], turn)
            except Exception:
                await reopen_prompt(prompt.id)  # so that WeChat's retry of this answer still counts
                raise
            return await self._apply(result, state, turn)
        return None

    async def _show_prompt(self, prompts: list[PendingPrompt], now: datetime) -> str | None:
        """Show the oldest prompt nobody has seen yet (until the outbox pushes them); else remind of
        the latest pushed one that is still open, whatever the push's timing was."""
        fresh = [p for p in prompts if p.delivered_at is None]
        if not fresh:
            if not prompts:
                return None
            return "您有一条待回复的消息：\n" + Question.from_json(prompts[-1].question).render()
        prompt = fresh[0]
        prompt.delivered_at = now
        await prompt.save(update_fields=["delivered_at"])
        more = f"\n（还有{len(fresh) - 1}条待回复）" if len(fresh) > 1 else ""
        return "您有一条待回复的消息：\n" + Question.from_json(prompt.question).render() + more
