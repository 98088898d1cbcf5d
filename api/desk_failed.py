"""The review desk's failed uploads: why each one failed, and a way to send it again.

`/desk/failed` lists the failed uploads a person may see (a merchant's session its own:
every read runs in the caller's scoped transaction), newest first, a keyset page at a
time, each with its merchant, SKU, source (as the API shows it: no server paths), when
it failed, how many times it was tried and the worker's reason.

An upload whose failure was passing trouble (its source timed out or answered 5xx
through every retry, or it was claimed too often without a result: the reason starts
"gave up after", `vitrine.pipeline.types.worth_resending`) has a Resend button; one that
failed for a reason of its own (not an image, a refused source) has none, since sending
it again would fail the same way, and a form sent for it anyway is answered 409 with
the page and that reason. Resending checks what the caller may see in its scoped
transaction, then goes through `vitrine.ops.resend` (the owner puts the rows back to
pending, and each is published as a fresh upload event), and comes back to the list
with `?resent=N`.
"""

from __future__ import annotations

from datetime import UTC
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from vitrine.api.auth import context, scoped
from vitrine.api.desk import ImageId, page, small_form
from vitrine.api.desk_pages import choices
from vitrine.api.desk_session import Desk, Session, check_form
from vitrine.api.public import public_text, public_uri
from vitrine.api.schemas import MAX_ID
from vitrine.db import repository
from vitrine.ops.resend import resend_failed
from vitrine.settings import Settings

router = APIRouter(prefix="/desk", include_in_schema=False)
FAILED_PAGE = 50
MERCHANT_CHARS = 200
_PASSING = "a source that timed out or answered 5xx through every try"
_NONE_ON_PAGE = (
    "none of the uploads on that page can be sent again: only those that failed on passing "
    f"trouble ({_PASSING}) can, and none of them is failed that way now"
)


@router.get("/failed")
def failed(
    request: Request,
    desk: Desk,
    merchant: Annotated[str | None, Query(max_length=MERCHANT_CHARS)] = None,
    before: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
    resent: Annotated[int | None, Query(ge=0, le=FAILED_PAGE)] = None,
) -> HTMLResponse:
    """Failed uploads, newest first, with the count of them in the heading."""
    return _listing(request, desk, merchant or None, before, resent=resent)


@router.post("/failed/{image_id}/resend")
async def resend_one(image_id: ImageId, request: Request, desk: Desk) -> Response:
    """Send one upload again (409 unless it failed on passing trouble)."""
    form = await small_form(request)
    check_form(request, desk, form.get("form_token", ""))
    return await run_in_threadpool(_resend, request, desk, [image_id], form, True)


@router.post("/failed/resend")
async def resend_page(request: Request, desk: Desk) -> Response:
    """Send again every upload of the page that failed on passing trouble (`ids`: the
    page's, space-separated)."""
    form = await small_form(request)
    check_form(request, desk, form.get("form_token", ""))
    ids = _ids(form.get("ids", ""))
    return await run_in_threadpool(_resend, request, desk, ids, form, False)


def _resend(
    request: Request, desk: Session, image_ids: list[int], form: dict[str, str], one: bool
) -> Response:
    merchant, before = _back(form)
    ctx = context(request)
    with scoped(ctx, desk.client) as conn:  # which of them may this caller see at all?
        seen = repository.resendable(conn, image_ids=image_ids)
    if one and not seen:
        raise HTTPException(404, f"no image {image_ids[0]}")
    wanted = [i for i in image_ids if i in seen and seen[i][1]]
    sent = resend_failed(ctx, image_ids=wanted) if wanted else []
    if not sent:
        first = image_ids[0]
        why = _refusal(first, seen[first][0], raced=bool(wanted)) if one else _NONE_ON_PAGE
        return _listing(request, desk, merchant, before, error=why, status=409)
    return RedirectResponse(_list_url(merchant, before, len(sent)), status_code=303)


def _list_url(merchant: str | None, before: int | None, resent: int) -> str:
    """The list the form came from, saying how many uploads were sent again."""
    query = {"merchant": merchant, "before": before, "resent": resent}
    return "/desk/failed?" + urlencode({k: v for k, v in query.items() if v is not None})


def _refusal(image_id: int, status: str, raced: bool) -> str:
    """Why one upload was not sent again."""
    if raced:
        return f"upload #{image_id} is no longer failed: it was sent again meanwhile"
    if status != "failed":
        return f"upload #{image_id} is {status}, not failed: there is nothing to send again"
    return (
        f"upload #{image_id} failed for a reason of its own, not on passing trouble "
        f"({_PASSING}): sending it again would fail the same way"
    )


def _listing(
    request: Request,
    desk: Session,
    merchant: str | None,
    before: int | None,
    *,
    resent: int | None = None,
    error: str | None = None,
    status: int = 200,
) -> HTMLResponse:
    ctx = context(request)
    with scoped(ctx, desk.client) as conn:
        rows = repository.failed_uploads(
            conn, merchant_id=merchant, before=before, limit=FAILED_PAGE + 1
        )
        count = repository.failed_count(conn, merchant_id=merchant)
        menus = choices(conn, desk.client)
    items = [_shown(ctx.settings, row) for row in rows[:FAILED_PAGE]]
    return page(
        "failed.html",
        desk,
        status=status,
        items=items,
        more=len(rows) > FAILED_PAGE,
        count=count,
        merchant=merchant or "",
        before=before or "",
        resent=resent,
        error=error,
        resend_ids=" ".join(str(it["image_id"]) for it in items if it["resendable"]),
        **menus,
    )


def _shown(settings: Settings, row: dict[str, Any]) -> dict[str, Any]:
    """A row as people may read it: the URI and reason as the API shows them (no server
    paths), the time in UTC."""
    return {
        **row,
        "uri": public_uri(settings, row["uri"]),
        "error": public_text(settings, row["error"]),
        "failed_at": row["failed_at"].astimezone(UTC),
    }


def _ids(field: str) -> list[int]:
    """The image ids of a page's form: whole numbers, at most a page of them, else 422."""
    words = field.split()
    if not words or len(words) > FAILED_PAGE:
        raise HTTPException(422, f"ids: give 1 to {FAILED_PAGE} image ids")
    if not all(_whole(w) for w in words):
        raise HTTPException(422, "ids: image ids are whole numbers from 1")
    return list(dict.fromkeys(int(w) for w in words))


def _whole(text: str) -> bool:
    """An image id as a form sends it: ASCII digits, 1 to MAX_ID."""
    return text.isascii() and text.isdigit() and len(text) <= 19 and 1 <= int(text) <= MAX_ID


def _back(form: dict[str, str]) -> tuple[str | None, int | None]:
    """The page a form came from (merchant filter, keyset), to go back to; anything odd
    in them is dropped, not refused: they only choose what is shown."""
    merchant = form.get("merchant", "").strip()[:MERCHANT_CHARS] or None
    before = form.get("before", "")
    return merchant, int(before) if _whole(before) else None
