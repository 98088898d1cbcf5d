"""The review desk: server-rendered pages for merchandisers who would rather look than read.

Browse the catalog as a grid of photos, open an item (label, top-k, quality verdict,
neighbours, decisions so far), search by dropping a photo, and work through queues with
approve / relabel buttons that write `label_corrections`. Outside `/v1` on purpose: these
are pages for people (cookie session, api/desk_session.py), not the versioned JSON API.
Every value reaches the HTML through Jinja2 with autoescaping on; pages forbid framing
and inline scripts (one small script file, for drag and drop).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, HTTPException, Query, Request, UploadFile
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape

from api.auth import context, scoped
from api.desk_session import COOKIE, LOGIN, Desk, check_form, cookie_options, lookup, same_origin
from api.routes import search_photo
from db import repository
from db.repository.desk import OPTIONAL_VIEWS
from ops.thumbnails import SIZES, thumbnail

router = APIRouter(prefix="/desk", include_in_schema=False)
TEMPLATES = Path(__file__).with_name("templates") / "desk"
_env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(default=True))
QUEUES = {
    "quality": "Quality issues",
    "label_mismatches": "Wrong categories",
    "review_mismatches": "Review mismatches",
    "duplicates": "Near-duplicates",
    "low_confidence": "Low confidence",
}
PAGE, QUEUE_PAGE, NEIGHBOURS = 48, 24, 8
_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; img-src 'self'; script-src 'self'; style-src 'self'; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "Cache-Control": "no-store",
    "Referrer-Policy": "same-origin",
    "X-Content-Type-Options": "nosniff",
}
Text = Annotated[str, Form()]


def page(template: str, desk: Any = None, status: int = 200, **values: Any) -> HTMLResponse:
    """Render `template` with the session's queues and form token available to the layout."""
    html = _env.get_template(template).render(desk=desk, queues=QUEUES, **values)
    return HTMLResponse(html, status_code=status, headers=_HEADERS)


@router.get("/login")
def login_form(request: Request) -> HTMLResponse:
    return page("login.html")


@router.post("/login")
def login(request: Request, token: Text = "") -> Response:
    same_origin(request)
    if lookup(request, token.strip()) is None:
        return page("login.html", status=401, error="unknown or revoked token")
    answer = RedirectResponse("/desk", status_code=303)
    answer.set_cookie(COOKIE, token.strip(), **cookie_options(request))  # type: ignore[arg-type]
    return answer


@router.post("/logout")
def logout(request: Request, desk: Desk, form_token: Text = "") -> Response:
    check_form(request, desk, form_token)
    answer = RedirectResponse(LOGIN, status_code=303)
    answer.delete_cookie(COOKIE, path="/desk")
    return answer


@router.get("")
def grid(
    request: Request,
    desk: Desk,
    merchant: str | None = None,
    label: str | None = None,
    before: Annotated[int | None, Query(ge=1)] = None,
) -> HTMLResponse:
    """The catalog, newest first, one keyset page at a time."""
    with scoped(context(request), desk.client) as conn:
        items = repository.browse(
            conn, merchant_id=merchant or None, label=label or None, before=before, limit=PAGE + 1
        )
        choices = _choices(conn)
    return page(
        "grid.html", desk, items=items[:PAGE], more=len(items) > PAGE,
        merchant=merchant or "", label=label or "", **choices,
    )  # fmt: skip


@router.get("/photos/{image_id}/{size}.jpg")
def photo(image_id: int, size: str, request: Request, desk: Desk) -> Response:
    """A cached thumbnail of an image the caller may see; long-lived, private caching."""
    if size not in SIZES:
        raise HTTPException(404, f"no size {size!r}")
    ctx = context(request)
    with scoped(ctx, desk.client) as conn:
        source = repository.photo_source(conn, image_id=image_id)
    if source is None:
        raise HTTPException(404, f"no image {image_id}")
    made = thumbnail(ctx, image_id=image_id, uri=source[0], sha256=source[1], size=size)
    cache = {"Cache-Control": "private, max-age=604800, immutable"}
    return FileResponse(made, media_type="image/jpeg", headers=cache)


@router.get("/items/{image_id}")
def item(image_id: int, request: Request, desk: Desk, queue: str = "") -> HTMLResponse:
    """One image: photo, label and top-k, quality verdict, neighbours, decisions."""
    with scoped(context(request), desk.client) as conn:
        row = repository.image_detail(conn, image_id=image_id)
        if row is None:
            raise HTTPException(404, f"no image {image_id}")
        issues = repository.quality_issues(conn, image_ids=[image_id]).get(image_id)
        near = []
        if row["status"] == "done":
            near = repository.similar(
                conn, image_id=image_id, k=NEIGHBOURS, merchant_id=desk.client.merchant_id
            )
        history = repository.corrections_for(conn, image_id=image_id)
        choices = _choices(conn)
    return page(
        "item.html", desk, item=row, issues=issues, neighbours=near, history=history,
        queue=queue if queue in QUEUES else "", **choices,
    )  # fmt: skip


@router.get("/queues/{name}")
def queue(
    name: str,
    request: Request,
    desk: Desk,
    after: Annotated[int, Query(ge=0)] = 0,
    below: Annotated[float, Query(gt=0, le=1)] = 0.6,
) -> HTMLResponse:
    """Items waiting in one work queue, each with approve / relabel buttons."""
    with scoped(context(request), desk.client) as conn:
        choices = _choices(conn)
        if name not in choices["open_queues"]:
            raise HTTPException(404, f"no queue {name!r} here")
        items = repository.queue_items(
            conn, queue=name, merchant_id=desk.client.merchant_id, after=after,
            limit=QUEUE_PAGE + 1, below=below,
        )  # fmt: skip
    return page(
        "queue.html", desk, name=name, items=items[:QUEUE_PAGE], more=len(items) > QUEUE_PAGE,
        after=after, below=below, back=str(request.url.path) + "?" + str(request.url.query),
        **choices,
    )  # fmt: skip


@router.post("/items/{image_id}/decision")
def decide(
    image_id: int,
    request: Request,
    desk: Desk,
    form_token: Text = "",
    action: Text = "",
    label: Text = "",
    queue: Text = "",
    back: Text = "/desk",
) -> Response:
    """Approve the model's label or set another; the item leaves its queue."""
    check_form(request, desk, form_token)
    if action not in ("approve", "relabel") or (queue and queue not in QUEUES):
        raise HTTPException(422, "action must be approve or relabel, from a known queue")
    ctx = context(request)
    with scoped(ctx, desk.client) as conn:  # may this caller see the image at all?
        if repository.image_detail(conn, image_id=image_id) is None:
            raise HTTPException(404, f"no image {image_id}")
        if action == "relabel" and label not in _choices(conn)["labels"]:
            raise HTTPException(422, f"label {label!r} is not one of the active model's")
    with ctx.engine().begin() as conn:  # the owner writes decisions (migration 0010)
        stored = repository.record_correction(
            conn, image_id=image_id, action=action, label=label if action == "relabel" else None,
            queue=queue or None, decided_by=desk.client.name,
        )  # fmt: skip
    if stored is None:
        raise HTTPException(409, f"image {image_id} has no label to approve yet")
    safe = back.startswith("/desk") and not back.startswith("//")
    return RedirectResponse(back if safe else "/desk", status_code=303)


@router.post("/search")
def search(
    request: Request,
    desk: Desk,
    file: Annotated[UploadFile, File()],
    form_token: Text = "",
) -> HTMLResponse:
    """Neighbours of a dropped (or chosen) photo, through the API's own search."""
    check_form(request, desk, form_token)
    found = search_photo(request, desk.client, file.file.read(), None, None, 24)
    with scoped(context(request), desk.client) as conn:
        choices = _choices(conn)
    return page("search.html", desk, found=found, **choices)


@router.get("/static/{name}")
def static(name: str) -> Response:
    """The one script (drag and drop) and the style sheet; nothing else is served."""
    kinds = {"desk.js": "text/javascript", "desk.css": "text/css"}
    if name not in kinds:
        raise HTTPException(404, f"no file {name!r}")
    headers = {"Cache-Control": "public, max-age=3600"}
    return FileResponse(TEMPLATES / name, media_type=kinds[name], headers=headers)


def _choices(conn: Any) -> dict[str, Any]:
    """What menus offer: merchants (a merchant's session sees its own), the active model's
    labels, and the queues this schema and role have."""
    active = repository.active_model(conn)
    optional = repository.readable_views(conn)
    open_queues = [q for q in QUEUES if q not in OPTIONAL_VIEWS or q in optional]
    return {
        "merchants": repository.merchants(conn),
        "labels": list(active.labels) if active else [],
        "open_queues": open_queues,
    }
