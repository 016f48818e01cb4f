"""逢六说事 in chat: report (说事), me too, 我的事, the handlers' 我的待办, and the answers to the
questions a case asks (more information, feedback after a resolution)."""

from __future__ import annotations

from bot.engine import Flow

FLOWS: list[Flow] = []
