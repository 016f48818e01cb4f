"""The 6/16/26 deliberation sessions (agenda, outcomes) and the Friday roundup, in chat and /api/v1."""

from __future__ import annotations

from bot.api import ApiRouter
from bot.engine import Flow

FLOWS: list[Flow] = []
api = ApiRouter("case_sessions")
