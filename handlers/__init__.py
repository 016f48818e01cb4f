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
