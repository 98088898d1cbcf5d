"""Worker log lines: JSON or key=value text, and no credentials in any of them."""

from __future__ import annotations

import io
import json
import logging

import pytest

from vitrine.settings import Settings
from vitrine.worker.logs import FIELDS, RedactFilter, configure_logging, formatter, redact


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("broker redis://:s3cret@redis:6379/0 down", "s3cret"),
        ("db postgresql+psycopg://vitrine:hunter2@db:5432/vitrine", "hunter2"),
        ("could not fetch https://cdn.example/a.jpg?X-Amz-Signature=abc123&w=1", "abc123"),
        ("GET http://x/p.png?token=tok-9&size=2", "tok-9"),
        ("GET http://x/p.png?size=2&access_token=zz77", "zz77"),
    ],
)
def test_redact_hides_passwords_and_tokens(text: str, secret: str) -> None:
    out = redact(text)
    assert secret not in out and "***" in out


def test_redact_keeps_what_is_not_secret() -> None:
    assert (
        redact("https://cdn.example/a.jpg?w=100&fmt=webp")
        == "https://cdn.example/a.jpg?w=100&fmt=webp"
    )
    assert redact("redis://redis:6379/0") == "redis://redis:6379/0"
    assert redact("redis://:pw@h/0") == "redis://:***@h/0"
    assert redact("postgresql://u:pw@h/db") == "postgresql://u:***@h/db"


def _capture(kind: str) -> tuple[logging.Logger, io.StringIO]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter(kind))
    handler.addFilter(RedactFilter())
    logger = logging.getLogger(f"test.logs.{kind}")
    logger.handlers, logger.propagate = [handler], False
    logger.setLevel(logging.INFO)
    return logger, stream


def test_json_lines_carry_fields_and_no_password() -> None:
    logger, stream = _capture("json")
    fields = {
        "image_id": 7,
        "merchant_id": "m1",
        "status": "failed",
        "reason": "could not fetch http://u:pw1@h/x.jpg",
        "fetch_ms": 12.5,
    }
    logger.info("upload %s", "failed", extra={FIELDS: fields})
    try:
        raise RuntimeError("lost redis://:pw2@broker/0")
    except RuntimeError:
        logger.exception("broker %s", "redis://:pw3@broker/0")
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2
    first, second = (json.loads(line) for line in lines)
    assert first["message"] == "upload failed" and first["level"] == "INFO"
    assert first["image_id"] == 7 and first["merchant_id"] == "m1" and first["fetch_ms"] == 12.5
    assert first["reason"] == "could not fetch http://u:***@h/x.jpg"
    assert "RuntimeError" in second["exception"]
    assert not any(pw in stream.getvalue() for pw in ("pw1", "pw2", "pw3"))


def test_text_lines_are_key_value() -> None:
    logger, stream = _capture("text")
    fields = {
        "image_id": 7,
        "merchant_id": None,
        "status": "failed",
        "reason": "not an image (unrecognised format)",
        "decode_ms": 1.25,
    }
    logger.info("upload failed", extra={FIELDS: fields})
    line = stream.getvalue().strip()
    assert line.endswith(
        "upload failed image_id=7 merchant_id=- status=failed "
        'reason="not an image (unrecognised format)" decode_ms=1.2'
    )
    assert " INFO test.logs.text[" in line


def test_configure_logging_redacts_on_every_handler(capsys: pytest.CaptureFixture[str]) -> None:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    other = logging.getLogger("test.logs.other")
    extra = logging.StreamHandler(io.StringIO())
    other.addHandler(extra)
    try:
        configure_logging(Settings(log_format="json"))
        assert all(any(isinstance(f, RedactFilter) for f in h.filters) for h in root.handlers)
        assert any(isinstance(f, RedactFilter) for f in extra.filters)
        logging.getLogger("test.logs.root").warning("to redis://:pw9@h:1/0")
        err = capsys.readouterr().err
        assert json.loads(err.strip().splitlines()[-1])["message"] == "to redis://:***@h:1/0"
    finally:
        root.handlers, _ = saved[0], root.setLevel(saved[1])
        other.removeHandler(extra)
