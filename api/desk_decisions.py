"""What a person decides at the review desk, and taking the last decision back.

- one image: approve the label shown or set another (`label_corrections`);
- many images at once (the ticked rows, or a whole queue page): one action;
- a pair: near-duplicates ("not a duplicate", "same product", "delist one") or a review
  photo against its listing ("matches", "does not match") (`pair_decisions`);
- undo: the caller's latest action is removed whole (a bulk approval too).

Each write first checks, in the caller's scoped transaction, that every image (and review)
named is one the caller may see, then writes as the owner (migration 0010: only the
owner writes decisions). Forms carry the session's form token and must come from this
site; a bad form is a 422 page, never a half-done action.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import RedirectResponse, Response
from sqlalchemy import Connection
from starlette.concurrency import run_in_threadpool

from vitrine.api.auth import context, scoped
from vitrine.api.desk_pages import QUEUES, ImageId, small_form
from vitrine.api.desk_session import Desk, Session, check_form
from vitrine.api.schemas import MAX_ID
from vitrine.db import repository

router = APIRouter(prefix="/desk", include_in_schema=False)
#: The most images one bulk action may name: a queue page, with room to spare.
MAX_BULK = 100


@router.post("/items/{image_id}/decision")
async def decide(image_id: ImageId, request: Request, desk: Desk) -> Response:
    """Approve the model's label or set another; the item leaves its queue."""
    form = await small_form(request)
    check_form(request, desk, form.get("form_token", ""))
    return await run_in_threadpool(_decide, request, desk, [image_id], form)


@router.post("/decisions")
async def decide_many(request: Request, desk: Desk) -> Response:
    """Approve or relabel every ticked image (`image_id`, repeated) as one action."""
    async with request.form(max_files=0, max_fields=MAX_BULK + 8, max_part_size=1024) as raw:
        ids = [v for k, v in raw.multi_items() if k == "image_id" and isinstance(v, str)]
        form = {k: v for k, v in raw.multi_items() if k != "image_id" and isinstance(v, str)}
    check_form(request, desk, form.get("form_token", ""))
    if not ids:
        raise HTTPException(422, "tick at least one item first")
    return await run_in_threadpool(_decide, request, desk, _ids(ids), form)


def _ids(values: list[str]) -> list[int]:
    if len(values) > MAX_BULK or not all(v.isdigit() and 1 <= int(v) <= MAX_ID for v in values):
        raise HTTPException(422, f"image_id: up to {MAX_BULK} image ids")
    return sorted({int(v) for v in values})


def _decide(request: Request, desk: Session, ids: list[int], form: dict[str, str]) -> Response:
    action, label, queue = form.get("action", ""), form.get("label", ""), form.get("queue", "")
    if action not in ("approve", "relabel") or (queue and queue not in QUEUES):
        raise HTTPException(422, "action must be approve or relabel, from a known queue")
    ctx = context(request)
    with scoped(ctx, desk.client) as conn:  # may this caller see every image at all?
        _visible(conn, ids)
        if action == "relabel" and label not in repository.active_labels(conn):
            raise HTTPException(422, f"label {label!r} is not one of the active model's")
    action_id = repository.new_action()
    with ctx.engine().begin() as conn:  # the owner writes decisions (migration 0010)
        stored = [
            repository.record_correction(
                conn,
                image_id=image_id,
                action=action,
                label=label if action == "relabel" else None,
                queue=queue or None,
                decided_by=desk.client.name,
                action_id=action_id,
            )
            for image_id in ids
        ]
        if None in stored:  # raised inside the transaction: nothing of the action is kept
            missing = ids[stored.index(None)]
            raise HTTPException(409, f"image {missing} has no label to approve yet")
    return _back(form)


@router.post("/pairs/decision")
async def decide_pair(request: Request, desk: Desk) -> Response:
    """A verdict on a pair: two listing images (`left`, `right`) or a review photo
    (`review`) against its listing; the pair leaves its queue for good."""
    form = await small_form(request)
    check_form(request, desk, form.get("form_token", ""))
    return await run_in_threadpool(_decide_pair, request, desk, form)


def _decide_pair(request: Request, desk: Session, form: dict[str, str]) -> Response:
    # a "Delist #N" button sends which image, and means the decision to delist one
    decision = form.get("decision") or ("delist_one" if form.get("delist") else "")
    ctx = context(request)
    if decision in repository.DUPLICATE_DECISIONS:
        pair = _ids([form.get("left", ""), form.get("right", "")])
        if len(pair) != 2:
            raise HTTPException(422, "a pair is two different images")
        delist = form.get("delist", "")
        delisted = int(delist) if delist.isdigit() and int(delist) in pair else None
        if (decision == "delist_one") != (delisted is not None):
            raise HTTPException(422, "delist: name one of the pair's two images to delist")
        with scoped(ctx, desk.client) as conn:
            _visible(conn, pair)
        with ctx.engine().begin() as conn:
            repository.record_pair_decision(
                conn,
                kind="duplicate",
                image_id=pair[0],
                other_image_id=pair[1],
                decision=decision,
                delisted_image_id=delisted,
                decided_by=desk.client.name,
                action_id=repository.new_action(),
            )
    elif decision in repository.REVIEW_DECISIONS:
        (review_id,) = _ids([form.get("review", "")])
        with scoped(ctx, desk.client) as conn:
            listing = repository.review_listing(conn, review_id=review_id)
            if listing is None:
                raise HTTPException(404, f"no review photo {review_id} with a listing here")
        with ctx.engine().begin() as conn:
            repository.record_pair_decision(
                conn,
                kind="review",
                image_id=listing,
                review_id=review_id,
                decision=decision,
                decided_by=desk.client.name,
                action_id=repository.new_action(),
            )
    else:
        known = repository.DUPLICATE_DECISIONS + repository.REVIEW_DECISIONS
        raise HTTPException(422, f"decision must be one of {', '.join(known)}")
    return _back(form)


@router.post("/undo")
async def undo(request: Request, desk: Desk) -> Response:
    """Take back the caller's latest action, whole (409 when there is none)."""
    form = await small_form(request)
    check_form(request, desk, form.get("form_token", ""))
    return await run_in_threadpool(_undo, request, desk, form)


def _undo(request: Request, desk: Session, form: dict[str, str]) -> Response:
    with context(request).engine().begin() as conn:
        undone = repository.undo_last(conn, decided_by=desk.client.name)
    if undone is None:
        raise HTTPException(409, "there is no decision of yours to undo")
    return _back(form)


def _visible(conn: Connection, ids: list[int]) -> None:
    """404 unless the caller may see every one of `ids`."""
    seen = repository.photos(conn, image_ids=ids)
    missing = [i for i in ids if i not in seen]
    if missing:
        raise HTTPException(404, f"no image {missing[0]}")


def _back(form: dict[str, str]) -> Response:
    """Back to the page the form was on (a desk page only, never another site)."""
    back = form.get("back", "/desk")
    parts = urlsplit(back)
    safe = not parts.scheme and not parts.netloc and parts.path.startswith("/desk")
    return RedirectResponse(back if safe else "/desk", status_code=303)
