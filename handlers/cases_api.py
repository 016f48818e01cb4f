"""逢六说事 through /api/v1: report, me too, my cases, the handlers' queue and steps, feedback,
and each community's case settings."""

from __future__ import annotations

from bot.api import ApiRouter

api = ApiRouter("cases")
