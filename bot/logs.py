"""Structured logs in which mobiles and ID numbers never appear in full."""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import UTC, datetime

_ID_NUMBER = re.compile(r"(?<!\d)(\d{6})\d{8}(\d{3}[\dXx])(?!\d)")
# Optional +86/86 prefix and the spaces or dashes people type inside a number.
_MOBILE = re.compile(r"(?<!\d)((?:\+?86[ -]?)?1[3-9]\d)[ -]?\d{4}[ -]?(\d{4})(?!\d)")


def mask(text: str) -> str:
    """Mask resident identity numbers (18 digits) and mainland mobiles (11 digits)."""
    text = _ID_NUMBER.sub(r"\1********\2", text)
    return _MOBILE.sub(r"\1****\2", text)


class MaskingFormatter(logging.Formatter):
    def __init__(self, as_json: bool) -> None:
        super().__init__()
        self.as_json = as_json

    def format(self, record: logging.LogRecord) -> str:
        message = mask(record.getMessage())
        if record.exc_info:
            message += "\n" + mask(self.formatException(record.exc_info))
        if not self.as_json:
            return f"{record.levelname} {record.name}: {message}"
        return json.dumps(
            {
                "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
                "level": record.levelname,
                "logger": record.name,
                "message": message,
            },
            ensure_ascii=False,
        )


def setup_logging(level: str, as_json: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(MaskingFormatter(as_json))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    logging.getLogger("tortoise").setLevel(logging.WARNING)
