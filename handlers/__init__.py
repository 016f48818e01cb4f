"""The flows, one router each; this list orders them."""

from bot.engine import Flow
from handlers import binding, menu

ROUTERS: list[Flow] = [
    menu.router,
    menu.profile,
    binding.router,
    binding.review,
    binding.unbinding,
]
WELCOME = menu.WELCOME

# The mini-program API views (/api/v1), one router per flow module.
from bot.api import ApiRouter  # noqa: E402
from handlers import api_identity  # noqa: E402

API_ROUTERS: list[ApiRouter] = [
    api_identity.router,
]
