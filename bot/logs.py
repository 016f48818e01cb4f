"""Structured logs in which mobiles and ID numbers never appear in full, nor sensitive statuses or health notes."""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import UTC, datetime

from models.facts import SENSITIVE_STATUSES, STATUSES

_ID_NUMBER = re.compile(r"(?<!\d)(\d{6})\d{8}(\d{3}[\dXx])(?!\d)")
# Optional +86/86 prefix and the spaces or dashes people type inside a number.
_MOBILE = re.compile(r"(?<!\d)((?:\+?86[ -]?)?1[3-9]\d)[ -]?\d{4}[ -]?(\d{4})(?!\d)")

# PIPL sensitive data: the labels of sensitive statuses (低保, 残疾...) wherever they appear, and a
# health note (free text) after its label up to the end of the line.
_SENSITIVE_LABEL = re.compile("|".join(re.escape(STATUSES[code]) for code in sorted(SENSITIVE_STATUSES)))
_HEALTH_NOTE = re.compile(r"(健康备注[：:]|health_note\W{0,3})[^\n]+")
SENSITIVE_MASK = "[敏感]"


def mask(text: str) -> str:
    """Mask identity numbers (18 digits), mainland mobiles (11 digits), sensitive statuses, health notes."""
    text = _ID_NUMBER.sub(r"\1********\2", text)
    text = _MOBILE.sub(r"\1****\2", text)
    text = _SENSITIVE_LABEL.sub(SENSITIVE_MASK, text)
    return _HEALTH_NOTE.sub(r"\1" + SENSITIVE_MASK, text)


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
