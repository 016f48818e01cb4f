"""The flows, one router each; this list orders them."""

from bot.engine import Flow
from handlers import (
    activities,
    binding,
    canteen,
    case_figures,
    case_sessions,
    cases,
    errands,
    family,
    love_bank,
    menu,
    notices,
    profile,
    redemption,
    riders,
    service_days,
    staff_records,
    wishes,
)

ROUTERS: list[Flow] = [
    menu.router,
    profile.router,
    binding.router,
    binding.review,
    binding.unbinding,
    staff_records.facts_review,
    staff_records.deletions,
    staff_records.lookup,
    family.router,
    family.back_to_self,
    family.review,
    notices.announce,
    notices.stats,
    notices.unsubscribe,
    notices.subscribe,
    service_days.plan,
    service_days.overview,
    service_days.times_flow,
    service_days.join,
    *cases.FLOWS,
    *case_sessions.FLOWS,
    *case_figures.FLOWS,
    *love_bank.FLOWS,
    *activities.FLOWS,
    *wishes.FLOWS,
    *redemption.FLOWS,
    *canteen.FLOWS,
    *errands.FLOWS,
    *riders.FLOWS,
]
WELCOME = menu.WELCOME

# The mini-program API views (/api/v1), one router per flow module.
from bot.api import ApiRouter  # noqa: E402
from handlers import api_identity, canteen_api, cases_api, errands_api, riders_api  # noqa: E402

API_ROUTERS: list[ApiRouter] = [
    api_identity.router,
    notices.api,
    service_days.api,
    cases_api.api,
    case_sessions.api,
    case_figures.api,
    love_bank.api,
    activities.api,
    wishes.api,
    redemption.api,
    canteen_api.api,
    errands_api.router,
    riders_api.router,
]
