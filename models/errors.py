"""Domain exceptions, translated at each edge (chat reply, API status)."""


class UserFacingError(Exception):
    """A rule said no; ``message`` is the polite zh-CN text the resident reads."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NotFound(UserFacingError):
    pass


class Forbidden(UserFacingError):
    pass
