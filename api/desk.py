"""The review desk: server-rendered pages for merchandisers who would rather look than read.

Browse the catalog as a grid of photos (filter by merchant, label or SKU; find an image
by its id), open an item (label, top three, declared category, heat map, neighbours,
decisions so far), search by dropping a photo, and work through queues: images to approve
or relabel, one by one or a page at once, and pairs (near-duplicates, review photos
against their listing) side by side (api/desk_decisions.py writes the decisions). Outside
`/v1` on purpose: these are pages for people (cookie session, api/desk_session.py), not
the versioned JSON API. Rendering and error pages: api/desk_pages.py.
"""

from __future__ import annotations

import re
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from vitrine.api.answers import image_out, search_photo
from vitrine.api.auth import context, rate_limits, scoped
from vitrine.api.bodies import FILE_PART, photo_form
from vitrine.api.desk_pages import (
    DEFAULT_BELOW,
    QUEUES,
    TEMPLATES,
    ImageId,
    choices,
    count_queue,
    page,
    small_form,
)
from vitrine.api.desk_session import (
    COOKIE,
    LOGIN,
    Desk,
    Session,
    check_form,
    client_for_token,
    cookie_options,
    end_session,
    same_origin,
    start_session,
)
from vitrine.api.schemas import MAX_ID, SearchFields
from vitrine.db import repository
from vitrine.db.repository.desk import PAIR_QUEUES
from vitrine.ops.errors import UserError
from vitrine.ops.stored_photos import PhotoUnavailable
from vitrine.ops.thumbnails import SIZES, thumbnail
from vitrine.pipeline.types import worth_resending

__all__ = ["router", "page", "small_form", "ImageId"]  # the last three: for the desk's other rooms

router = APIRouter(prefix="/desk", include_in_schema=False)
PAGE, QUEUE_PAGE, NEIGHBOURS, TOP = 48, 24, 8, 3
_PAIR_KEY = re.compile(r"^(\d{1,19})-(\d{1,19})$")


@router.get("/login")
def login_form(request: Request, expired: Annotated[int, Query(ge=0, le=1)] = 0) -> HTMLResponse:
    notice = "Your session has ended. Log in again to go on." if expired else None
    return page("login.html", notice=notice)


@router.post("/login")
async def login(request: Request) -> Response:
    """Check the token typed in and start a server-side session; attempts are limited per
    address (VITRINE_DESK_LOGIN_RATE) before the form is read."""
    same_origin(request)
    rate_limits(request).hit("logins", request.client.host if request.client else "unknown")
    token = (await small_form(request)).get("token", "").strip()
    client = await run_in_threadpool(client_for_token, request, token)
    if client is None:
        return page("login.html", status=401, error="unknown or revoked token")
    session_id = await run_in_threadpool(start_session, request, client)
    answer = RedirectResponse("/desk", status_code=303)
    answer.set_cookie(COOKIE, session_id, **cookie_options(request))  # type: ignore[arg-type]
    return answer


@router.post("/logout")
async def logout(request: Request, desk: Desk) -> Response:
    """End the session on the server, then in the browser."""
    check_form(request, desk, (await small_form(request)).get("form_token", ""))
    await run_in_threadpool(end_session, request, desk)
    answer = RedirectResponse(LOGIN, status_code=303)
    answer.delete_cookie(COOKIE, path="/desk")
    return answer


@router.get("")
def grid(
    request: Request,
    desk: Desk,
    merchant: Annotated[str | None, Query(max_length=200)] = None,
    label: Annotated[str | None, Query(max_length=200)] = None,
    sku: Annotated[str | None, Query(max_length=200)] = None,
    before: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
) -> HTMLResponse:
    """The catalog, newest first, one keyset page at a time, with how many match."""
    filters = {"merchant_id": merchant or None, "label": label or None, "sku": sku or None}
    with scoped(context(request), desk.client) as conn:
        items = repository.browse(conn, before=before, limit=PAGE + 1, **filters)
        total = repository.browse_count(conn, **filters)
        menus = choices(conn, desk.client)
    return page(
        "grid.html",
        desk,
        items=items[:PAGE],
        more=len(items) > PAGE,
        total=total,
        merchant=merchant or "",
        label=label or "",
        sku=sku or "",
        deep=before is not None,
        **menus,
    )


@router.get("/find")
def find(request: Request, desk: Desk, q: Annotated[str, Query(max_length=200)] = "") -> Response:
    """The header's search box: an image id (`123` or `#123`) opens that item, anything
    else is a SKU (or its beginning) in the catalog grid."""
    wanted = q.strip()
    digits = wanted.removeprefix("#")
    if digits.isdigit() and 1 <= int(digits) <= MAX_ID:
        with scoped(context(request), desk.client) as conn:
            if repository.image_detail(conn, image_id=int(digits)) is not None:
                return RedirectResponse(f"/desk/items/{int(digits)}", status_code=303)
    target = "/desk?" + urlencode({"sku": wanted})
    return RedirectResponse(target if wanted else "/desk", status_code=303)


@router.get("/photos/{image_id}/{size}.jpg")
def photo(image_id: ImageId, size: str, request: Request, desk: Desk) -> Response:
    """A cached thumbnail of an image the caller may see; long-lived, private caching.

    The photo is read and decoded under the workers' rules (`vitrine.ops.stored_photos`);
    when that fails the answer is one fixed 404, whatever the reason, so it never tells
    what exists on the server."""
    if size not in SIZES:
        raise HTTPException(404, "no such thumbnail size")
    ctx = context(request)
    with scoped(ctx, desk.client) as conn:
        source = repository.photo_source(conn, image_id=image_id)
    if source is None:
        raise HTTPException(404, f"no image {image_id}")
    return _thumbnail(request, "images", image_id, source[0], source[1], size)


@router.get("/reviews/{review_id}/{size}.jpg")
def review_photo(
    review_id: Annotated[int, PathParam(ge=1, le=MAX_ID)], size: str, request: Request, desk: Desk
) -> Response:
    """A shopper's review photo, as `photo` serves listing photos."""
    if size not in SIZES:
        raise HTTPException(404, "no such thumbnail size")
    with scoped(context(request), desk.client) as conn:
        uri = repository.review_source(conn, review_id=review_id)
    if uri is None:
        raise HTTPException(404, f"no review photo {review_id}")
    return _thumbnail(request, "reviews", review_id, uri, None, size)


def _thumbnail(
    request: Request, kind: str, key: int, uri: str, sha256: str | None, size: str
) -> Response:
    try:
        made = thumbnail(context(request), kind=kind, key=key, uri=uri, sha256=sha256, size=size)
    except PhotoUnavailable:
        raise HTTPException(404, f"the photo of {kind[:-1]} {key} is not available") from None
    cache = {"Cache-Control": "private, max-age=604800, immutable"}
    return FileResponse(made, media_type="image/jpeg", headers=cache)


@router.get("/items/{image_id}")
def item(
    image_id: ImageId,
    request: Request,
    desk: Desk,
    queue: Annotated[str, Query(max_length=40)] = "",
) -> HTMLResponse:
    """One image: photo and heat map, label and top three, declared category, quality
    verdict, neighbours, every decision about it."""
    ctx = context(request)
    with scoped(ctx, desk.client) as conn:
        row = repository.image_detail(conn, image_id=image_id)
        if row is None:
            raise HTTPException(404, f"no image {image_id}")
        shown = image_out(ctx.settings, row)
        issues = repository.quality_issues(conn, image_ids=[image_id]).get(image_id)
        near = []
        if shown.status == "done":
            near = repository.similar(
                conn,
                image_id=image_id,
                k=NEIGHBOURS,
                merchant_id=desk.client.merchant_id,
                max_distance=ctx.settings.similar_max_distance,
            )
        history = repository.corrections_for(conn, image_id=image_id)
        pairs = repository.pair_history(conn, image_id=image_id)
        delisted = repository.delisted(conn, image_id=image_id)
        menus = choices(conn, desk.client)
    return page(
        "item.html",
        desk,
        item=shown,
        top=(shown.top_k or [])[:TOP],
        issues=issues,
        neighbours=near,
        history=history,
        pairs=pairs,
        delisted=delisted,
        resendable=shown.status == "failed" and worth_resending(shown.error),
        queue=queue if queue in QUEUES else "",
        **menus,
    )


@router.get("/queues/{name}")
def queue(
    name: str,
    request: Request,
    desk: Desk,
    after: Annotated[str, Query(max_length=40)] = "0",
    below: Annotated[float, Query(gt=0, le=1)] = DEFAULT_BELOW,
) -> HTMLResponse:
    """What waits in one work queue: images with approve / relabel (one or a page at
    once), or pairs side by side with their verdicts."""
    with scoped(context(request), desk.client) as conn:
        # the low-confidence count depends on the threshold shown: counted below, once
        menus = choices(conn, desk.client, fresh=name if name != "low_confidence" else None)
        if name not in menus["open_queues"]:
            raise HTTPException(404, f"no queue {name!r} here")
        values: dict[str, Any] = _queue_page(conn, name, desk, after, below)
        if name == "low_confidence":  # its count depends on the threshold shown
            menus["counts"][name] = count_queue(conn, name, below)
    back = str(request.url.path) + ("?" + str(request.url.query) if request.url.query else "")
    return page(
        "pairs.html" if name in PAIR_QUEUES else "queue.html",
        desk,
        name=name,
        below=below,
        back=back,
        **values,
        **menus,
    )


def _queue_page(conn: Any, name: str, desk: Session, after: str, below: float) -> dict[str, Any]:
    merchant = desk.client.merchant_id
    if name == "duplicates":
        found = _PAIR_KEY.match(after)
        start = (int(found[1]), int(found[2])) if found else (0, 0)
        pairs = repository.duplicate_pairs(
            conn, merchant_id=merchant, after=start, limit=QUEUE_PAGE + 1
        )
        last = pairs[QUEUE_PAGE - 1] if len(pairs) > QUEUE_PAGE else None
        following = f"{last['left']['image_id']}-{last['right']['image_id']}" if last else ""
        return {"pairs": pairs[:QUEUE_PAGE], "next_after": following}
    start_id = int(after) if after.isdigit() and int(after) <= MAX_ID else 0
    if name == "review_mismatches":
        reviews = repository.review_pairs(
            conn, merchant_id=merchant, after=start_id, limit=QUEUE_PAGE + 1
        )
        following = str(reviews[QUEUE_PAGE - 1]["review_id"]) if len(reviews) > QUEUE_PAGE else ""
        return {"reviews": reviews[:QUEUE_PAGE], "next_after": following}
    items = repository.queue_items(
        conn, queue=name, merchant_id=merchant, after=start_id, limit=QUEUE_PAGE + 1, below=below
    )
    following = str(items[QUEUE_PAGE - 1]["image_id"]) if len(items) > QUEUE_PAGE else ""
    return {"items": items[:QUEUE_PAGE], "next_after": following}


@router.post("/search")
async def search(request: Request, desk: Desk) -> HTMLResponse:
    """Neighbours of a dropped (or chosen) photo, through the API's own search; a form
    without a photo, or a file that is not one, is said on the page."""
    same_origin(request)
    rate_limits(request).hit("searches", str(desk.client.id))
    async with photo_form(request) as form:
        check_form(request, desk, str(form.get("form_token") or ""))
        chosen = form.get(FILE_PART)
        photo = await chosen.read() if chosen is not None and not isinstance(chosen, str) else b""
    return await run_in_threadpool(_search, request, desk, photo)


def _search(request: Request, desk: Session, photo: bytes) -> HTMLResponse:
    found, problem = None, ""
    if not photo:
        problem = "Choose a photo first (or drop one anywhere on the page)."
    else:
        try:
            found = search_photo(request, desk.client, photo, SearchFields(k=24))
        except UserError as exc:
            problem = f"That file could not be searched with: {exc}"
    with scoped(context(request), desk.client) as conn:
        menus = choices(conn, desk.client)
    return page("search.html", desk, 422 if problem else 200, found=found, problem=problem, **menus)


@router.get("/static/{name}")
def static(name: str) -> Response:
    """The one script (drop, keys, selection) and the style sheet; nothing else."""
    kinds = {"desk.js": "text/javascript", "desk.css": "text/css"}
    if name not in kinds:
        raise HTTPException(404, f"no file {name!r}")
    headers = {"Cache-Control": "public, max-age=3600"}
    return FileResponse(TEMPLATES / name, media_type=kinds[name], headers=headers)
