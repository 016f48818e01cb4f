"""逢六说事 figures (受理率, 办结率, 满意率...) for staff: 本周数据 in chat, /api/v1 and a spreadsheet."""

from __future__ import annotations

from bot.api import ApiRouter
from bot.engine import Flow

FLOWS: list[Flow] = []
api = ApiRouter("case_figures")
