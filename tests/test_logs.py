"""Logs never carry a resident's full mobile or ID number."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from bot.logs import MaskingFormatter, mask

MOBILE = "13812345678"
MASKED_MOBILE = "138****5678"
ID_NUMBER = "110101199003071234"
MASKED_ID = "110101********1234"

# --- mask() ---------------------------------------------------------------------------------


def test_mobile_alone() -> None:
    assert mask(MOBILE) == MASKED_MOBILE


def test_mobile_in_chinese_text() -> None:
    assert mask(f"居民手机{MOBILE}已绑定") == f"居民手机{MASKED_MOBILE}已绑定"


def test_several_mobiles() -> None:
    assert mask("13812345678, 19987654321") == "138****5678, 199****4321"


def test_id_number_keeps_first_six_and_last_four() -> None:
    assert mask(ID_NUMBER) == MASKED_ID
    assert mask(f"身份证号：{ID_NUMBER}。") == f"身份证号：{MASKED_ID}。"


@pytest.mark.parametrize("last", ["X", "x"])
def test_id_number_ending_in_x(last: str) -> None:
    assert mask(f"11010119900307123{last}") == f"110101********123{last}"


def test_id_number_and_mobile_together() -> None:
    masked = mask(f"id={ID_NUMBER} mobile={MOBILE}")
    assert masked == f"id={MASKED_ID} mobile={MASKED_MOBILE}"


@pytest.mark.parametrize(
    "text",
    [
        "123456",  # a verification code
        "1411525903",  # a Unix timestamp
        "验证码 123456，时间 1411525903",
        "12345678901",  # 11 digits, but no mainland mobile starts 12
        "138123456789",  # 12 digits: not a mobile
        "6000000000000000001",  # a 19-digit WeChat MsgId
        "room 301, unit 2, building 1",
        "",
    ],
)
def test_other_numbers_are_left_alone(text: str) -> None:
    assert mask(text) == text


@pytest.mark.parametrize("written", ["+86{m}", "86{m}", "+86 {m}", "{a} {b} {c}", "{a}-{b}-{c}"])
def test_mobile_as_people_write_it(written: str) -> None:
    text = written.format(m=MOBILE, a=MOBILE[:3], b=MOBILE[3:7], c=MOBILE[7:])
    masked = mask(f"电话 {text} 谢谢")
    assert MOBILE[3:7] not in masked and MOBILE[-4:] in masked


# --- MaskingFormatter -----------------------------------------------------------------------


@pytest.fixture
def capture() -> Iterator[tuple[logging.Logger, io.StringIO, logging.StreamHandler[io.StringIO]]]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    logger = logging.getLogger("linli.tests.masking")
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    yield logger, stream, handler
    logger.handlers[:] = []
    logger.propagate = True


def _log_everything(logger: logging.Logger) -> None:
    logger.info("binding %s for resident %s", MOBILE, ID_NUMBER)
    logger.warning(f"resident typed {MOBILE} directly into the message")
    try:
        raise ValueError(f"duplicate mobile {MOBILE} / id {ID_NUMBER}")
    except ValueError:
        logger.exception("binding failed for %s", MOBILE)


def test_plain_records_never_contain_the_full_mobile(capture) -> None:  # type: ignore[no-untyped-def]
    logger, stream, handler = capture
    handler.setFormatter(MaskingFormatter(as_json=False))
    _log_everything(logger)
    out = stream.getvalue()
    assert MOBILE not in out
    assert ID_NUMBER not in out
    assert MASKED_MOBILE in out
    assert MASKED_ID in out
    assert "INFO linli.tests.masking: binding 138****5678 for resident 110101********1234" in out
    # The traceback is still there, masked.
    assert "Traceback" in out
    assert f"ValueError: duplicate mobile {MASKED_MOBILE} / id {MASKED_ID}" in out


def test_json_records_never_contain_the_full_mobile(capture) -> None:  # type: ignore[no-untyped-def]
    logger, stream, handler = capture
    handler.setFormatter(MaskingFormatter(as_json=True))
    _log_everything(logger)
    out = stream.getvalue()
    assert MOBILE not in out
    assert ID_NUMBER not in out
    records = [json.loads(line) for line in out.splitlines() if line.strip()]
    assert len(records) == 3  # one JSON object per line, the traceback inside
    assert [r["level"] for r in records] == ["INFO", "WARNING", "ERROR"]
    assert all(r["logger"] == "linli.tests.masking" for r in records)
    assert all(r["time"] for r in records)
    assert records[0]["message"] == f"binding {MASKED_MOBILE} for resident {MASKED_ID}"
    assert records[1]["message"] == f"resident typed {MASKED_MOBILE} directly into the message"
    error = records[2]["message"]
    assert error.startswith(f"binding failed for {MASKED_MOBILE}\n")
    assert "Traceback" in error
    assert f"ValueError: duplicate mobile {MASKED_MOBILE} / id {MASKED_ID}" in error


def test_json_keeps_chinese_readable(capture) -> None:  # type: ignore[no-untyped-def]
    logger, stream, handler = capture
    handler.setFormatter(MaskingFormatter(as_json=True))
    logger.info("居民 %s 绑定成功", MOBILE)
    out = stream.getvalue()
    assert "居民 138****5678 绑定成功" in out
    assert MOBILE not in out
