"""How often one caller may knock: uploads and searches per token, desk logins per address.

Without a limit one token could queue a thousand uploads in five seconds, or keep the
model busy with searches, and a login form could be tried without end. Each limit is a
moving window of the `limits` package ("1200/minute;100/second"), counted per API
process in memory or, with VITRINE_RATE_LIMIT_STORAGE=broker, in the broker's Redis for
the whole fleet. Past a limit the answer is 429 with `Retry-After` (whole seconds).
"""

from __future__ import annotations

import math
import time

from fastapi import HTTPException
from limits import RateLimitItem, parse_many, strategies
from limits.storage import storage_from_string

from vitrine.settings import Settings

#: What is limited -> the setting that holds its rate.
KINDS = {"uploads": "api_upload_rate", "searches": "api_search_rate", "logins": "desk_login_rate"}


class TooMany(HTTPException):
    def __init__(self, kind: str, item: RateLimitItem, retry_after: int) -> None:
        super().__init__(
            429,
            f"too many {kind}: at most {item} (try again in {retry_after} s)",
            {"Retry-After": str(retry_after)},
        )


class RateLimits:
    """The limits of one API process (see the module docstring)."""

    def __init__(self, settings: Settings, broker_url: str | None = None) -> None:
        where = "memory://"
        if settings.rate_limit_storage == "broker" and broker_url:
            where = broker_url  # redis:// or rediss://, as the workers reach it
        self._limiter = strategies.MovingWindowRateLimiter(storage_from_string(where))
        self._rules: dict[str, list[RateLimitItem]] = {}
        for kind, setting in KINDS.items():
            value = str(getattr(settings, setting)).strip()
            self._rules[kind] = [] if value.lower() == "off" else parse_many(value)

    def hit(self, kind: str, who: str) -> None:
        """Count one `kind` for `who`, or raise TooMany (429) when a window is full; a
        refused request counts in no window, so waiting `Retry-After` is enough."""
        rules = self._rules[kind]
        for item in rules:
            if not self._limiter.test(item, kind, who):
                reset, _ = self._limiter.get_window_stats(item, kind, who)
                raise TooMany(kind, item, max(1, math.ceil(reset - time.time())))
        for item in rules:
            self._limiter.hit(item, kind, who)
