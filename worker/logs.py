"""Worker logs: one line per record, JSON or key=value text, with credentials redacted.

`VITRINE_LOG_FORMAT=json` writes one JSON object per line (time, level, logger, message and
the record's `fields`); the default is readable text with the fields as key=value pairs.
Every handler carries `RedactFilter`: passwords in URLs (`redis://:pw@host`,
`postgresql://user:pw@host`) and secret-looking query parameters (`?token=...`,
`X-Amz-Signature=...`) become `***` in the message, its fields and any traceback.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import UTC, datetime
from typing import Any

from vitrine.settings import Settings

#: scheme://user:password@ -> scheme://user:***@ (user may be empty: redis://:pw@host).
_URL_PASSWORD = re.compile(r"(?i)\b([a-z][a-z0-9+.\-]*://[^\s:/@?#]*):[^\s@/?#]*@")
#: ?token=...&sig=... -> ?token=***&sig=***, for parameter names that look secret.
_SECRET_PARAM = re.compile(
    r"(?i)([?&;][^=&\s#?]*(?:token|key|sig|secret|pass|pwd|auth|credential|session)"
    r"[^=&\s#?]*=)[^&\s#'\"]+"
)
#: The attribute of a record that holds its structured fields (logger.info(..., extra=...)).
FIELDS = "fields"


def redact(text: str) -> str:
    """`text` with URL passwords and secret query-string values replaced by ***."""
    return _SECRET_PARAM.sub(r"\1***", _URL_PASSWORD.sub(r"\1:***@", text))


def _redact_value(value: Any) -> Any:
    return redact(value) if isinstance(value, str) else value


class RedactFilter(logging.Filter):
    """Rewrites each record in place: the formatted message, fields and traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = redact(record.getMessage()), None
        fields = getattr(record, FIELDS, None)
        if isinstance(fields, dict):
            setattr(record, FIELDS, {k: _redact_value(v) for k, v in fields.items()})
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


class JSONFormatter(logging.Formatter):
    """One JSON object per line; the record's fields are top-level keys."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "process": record.process,
            "message": record.getMessage(),
        }
        line.update(getattr(record, FIELDS, None) or {})
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line["exception"] = record.exc_text
        return json.dumps(line, default=str)


def _text_value(value: Any) -> str:
    if value is None:
        return "-"
    text = f"{value:.1f}" if isinstance(value, float) else str(value)
    return json.dumps(text) if not text or any(c in text for c in ' "=\n') else text


class TextFormatter(logging.Formatter):
    """`time LEVEL logger[pid]: message key=value ...`."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s[%(process)d]: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        fields = getattr(record, FIELDS, None) or {}
        pairs = "".join(f" {k}={_text_value(v)}" for k, v in fields.items())
        head, sep, rest = super().format(record).partition("\n")
        return head + pairs + sep + rest


def formatter(kind: str) -> logging.Formatter:
    return JSONFormatter() if kind == "json" else TextFormatter()


def configure_logging(settings: Settings, level: int | str = logging.INFO) -> None:
    """Root logs to stderr in `settings.log_format`, every handler redacting credentials."""
    root = logging.getLogger()
    handler = logging.StreamHandler(sys.stderr)
    root.handlers = [handler]
    root.setLevel(level)
    for h in root.handlers:
        h.setFormatter(formatter(settings.log_format))
    redact_handlers()


def redact_handlers() -> None:
    """Put `RedactFilter` on every handler of every logger there is (and the last-resort
    handler Python uses when none is configured)."""
    loggers = [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]
    handlers = {h for lg in loggers if isinstance(lg, logging.Logger) for h in lg.handlers}
    if logging.lastResort is not None:
        handlers.add(logging.lastResort)
    for handler in handlers:
        if not any(isinstance(f, RedactFilter) for f in handler.filters):
            handler.addFilter(RedactFilter())
