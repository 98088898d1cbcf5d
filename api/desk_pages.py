"""How the review desk renders: one Jinja2 environment, the layout's menus and counts, and
errors as pages in the desk's own style (never raw JSON to a person).

Every value reaches the HTML through Jinja2 with autoescaping on; pages forbid framing and
inline scripts (one script file: drag and drop, keys, selection).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Annotated, Any

from fastapi import Path as PathParam
from fastapi import Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader, select_autoescape
from sqlalchemy import Connection

from vitrine.api.bodies import MAX_FIELD_BYTES
from vitrine.api.schemas import MAX_ID
from vitrine.db import repository
from vitrine.db.repository.desk import OPTIONAL_VIEWS, PAIR_QUEUES
from vitrine.db.types import ApiClient

TEMPLATES = Path(__file__).with_name("templates") / "desk"
_env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(default=True))
QUEUES = {
    "quality": "Quality issues",
    "label_mismatches": "Wrong categories",
    "review_mismatches": "Review photos",
    "duplicates": "Near-duplicates",
    "low_confidence": "Low confidence",
}
#: What a pair decision is called on the page (and in the history).
DECISIONS = {
    "approve": "approved",
    "relabel": "relabelled",
    "not_duplicate": "not a duplicate",
    "same_product": "same product",
    "delist_one": "delisted one",
    "matches": "matches the listing",
    "does_not_match": "does not match the listing",
}
HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; img-src 'self'; script-src 'self'; style-src 'self'; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "Cache-Control": "no-store",
    "Referrer-Policy": "same-origin",
    "X-Content-Type-Options": "nosniff",
}
ImageId = Annotated[int, PathParam(ge=1, le=MAX_ID)]
#: The low-confidence queue's threshold when the page does not say.
DEFAULT_BELOW = 0.6


async def small_form(request: Request, max_fields: int = 8) -> dict[str, str]:
    """A desk form's text fields (no files; a few short fields, else 400), read only
    after the caller was checked."""
    async with request.form(
        max_files=0, max_fields=max_fields, max_part_size=MAX_FIELD_BYTES
    ) as form:
        return {k: v for k, v in form.multi_items() if isinstance(v, str)}


def page(template: str, desk: Any = None, status: int = 200, **values: Any) -> HTMLResponse:
    """Render `template` with the session's queues and form token available to the layout."""
    html = _env.get_template(template).render(
        desk=desk, queues=QUEUES, decisions=DECISIONS, **values
    )
    return HTMLResponse(html, status_code=status, headers=HEADERS)


class QueueCounts:
    """How many wait in each queue, per merchant scope, counted at most every `ttl_s`
    seconds, except the queue on the page, counted every time.

    Every page shows every queue's count in its menu. At 100,000 images counting all of
    them costs a few hundred milliseconds (the quality rules run over every measured
    image), which a person deciding item after item would wait for on every page: the
    other queues' counts may be a few seconds old, the one being worked never is."""

    def __init__(self, ttl_s: float = 15.0) -> None:
        self.ttl_s = ttl_s
        self._lock = threading.Lock()
        self._seen: dict[tuple[str | None, tuple[str, ...]], tuple[float, dict[str, int]]] = {}

    def get(
        self, conn: Connection, scope: str | None, queues: list[str], fresh: str | None = None
    ) -> dict[str, int]:
        key = (scope, tuple(queues))
        with self._lock:
            seen = self._seen.get(key)
        if seen is None or time.monotonic() - seen[0] > self.ttl_s:
            counts = {q: count_queue(conn, q) for q in queues}
            with self._lock:
                self._seen[key] = (time.monotonic(), counts)
            return dict(counts)
        counts = dict(seen[1])
        if fresh in counts:
            counts[fresh] = count_queue(conn, fresh)
        return counts


def count_queue(conn: Connection, queue: str, below: float = DEFAULT_BELOW) -> int:
    """How many wait in one queue, for the caller's scope (row-level security)."""
    if queue in PAIR_QUEUES:
        return repository.pair_count(conn, queue=queue)
    return repository.queue_count(conn, queue=queue, below=below)


COUNTS = QueueCounts()


def choices(
    conn: Connection, client: ApiClient | None = None, fresh: str | None = None
) -> dict[str, Any]:
    """What the layout and menus offer: merchants (a merchant's session sees its own), the
    active model's labels, the queues this schema and role have with how many wait in
    each (`fresh`: the queue on the page, counted now), and the caller's last decision
    (what undo would take back)."""
    optional = repository.readable_views(conn)
    open_queues = [q for q in QUEUES if q not in OPTIONAL_VIEWS or q in optional]
    scope = client.merchant_id if client else None
    return {
        "merchants": repository.merchants(conn),
        "labels": repository.active_labels(conn),
        "open_queues": open_queues,
        "counts": COUNTS.get(conn, scope, open_queues, fresh) if client else {},
        # failed uploads: a count on the status index, cheap enough to be exact every page
        "failed": repository.failed_count(conn).total if client else 0,
        "last": repository.last_action(conn, decided_by=client.name) if client else None,
    }


def error_page(request: Request, status: int, reason: str) -> HTMLResponse:
    """A desk error as a page: what went wrong, in words, and where to go from here."""
    titles = {
        400: "That form could not be read",
        401: "Please log in",
        403: "Not allowed",
        404: "Not found",
        409: "Nothing to do",
        413: "Too large",
        415: "Not a photo",
        422: "That did not work",
        429: "Too many requests",
        503: "The desk cannot reach its database",
    }
    title = titles.get(status, "Something went wrong")
    return page("error.html", status=status, title=title, reason=reason, code=status)
