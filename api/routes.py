"""Version 1 of the API: uploads in; an image, its neighbours, a photo's neighbours out.

Every route checks the caller (`vitrine.api.auth.Client`, a dependency FastAPI resolves before
the handler runs) and, for uploads and searches, the caller's rate, before it reads a
byte of the body: no route declares body parameters, each reads its body itself through
`vitrine.api.bodies`.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, HTTPException, Path, Query, Request
from starlette.concurrency import run_in_threadpool
from starlette.status import HTTP_202_ACCEPTED

from vitrine.api.answers import image_out, search_photo
from vitrine.api.auth import Client, context, merchant_for, rate_limits, scoped
from vitrine.api.bodies import JSON, body_kind, form_fields, form_photo, json_body, photo_form
from vitrine.api.metrics import UPLOADS
from vitrine.api.public import public_uri
from vitrine.api.schemas import (
    MAX_FIELD,
    MAX_ID,
    ImageOut,
    NeighbourOut,
    SearchFields,
    SearchOut,
    SimilarOut,
    UploadAccepted,
    UploadFields,
    UploadRequest,
)
from vitrine.db import repository
from vitrine.ops.api_uploads import queue_photo, queue_reference
from vitrine.ops.catalog import (
    SearchFilters,
    check_label,
    no_close_match,
)

router = APIRouter(prefix="/v1")
K = Annotated[int, Query(ge=1, le=100, description="how many neighbours")]
ImageId = Annotated[int, Path(ge=1, le=MAX_ID, description="the image's id")]


def multipart_schema(fields: type[UploadFields] | type[SearchFields]) -> dict[str, Any]:
    """The OpenAPI description of a multipart body: the photo as `file` and `fields`."""
    schema = fields.model_json_schema()
    schema["properties"] = {"file": {"type": "string", "format": "binary"}} | schema["properties"]
    schema["required"] = ["file", *schema.get("required", [])]
    return schema


@router.post(
    "/uploads",
    status_code=HTTP_202_ACCEPTED,
    response_model=UploadAccepted,
    summary="Queue an upload: JSON {uri, merchant_id, sku, declared_label}, or multipart `file`",
    openapi_extra={
        "requestBody": {
            "content": {
                "application/json": {"schema": UploadRequest.model_json_schema()},
                "multipart/form-data": {"schema": multipart_schema(UploadFields)},
            },
            "required": True,
        }
    },
)
async def create_upload(
    request: Request,
    caller: Client,
    idempotency_key: Annotated[
        str | None,
        Header(
            max_length=MAX_FIELD,
            pattern=r"^[\x21-\x7e]+$",
            description="names the upload event: the same key again (from the same client) "
            "is answered `already received` with the existing image, nothing is queued",
        ),
    ] = None,
) -> UploadAccepted:
    ctx = context(request)
    rate_limits(request).hit("uploads", str(caller.id))
    event = f"api:{caller.id}:{idempotency_key}" if idempotency_key else None
    kind = body_kind(request)
    if kind == JSON:
        body = await json_body(request, UploadRequest)
        fields: UploadFields = body
        merchant = merchant_for(caller, body.merchant_id)
        queued = await run_in_threadpool(
            lambda: queue_reference(
                ctx,
                body.event(merchant),
                event_id=event,
                files_allowed=caller.merchant_id is None,
            )
        )
    else:
        async with photo_form(request) as form:
            fields = form_fields(form, UploadFields)
            merchant = merchant_for(caller, fields.merchant_id)
            data = await form_photo(form).read()
        queued = await run_in_threadpool(
            lambda: queue_photo(
                ctx,
                data,
                merchant_id=merchant,
                sku=fields.sku,
                declared_label=fields.declared_label,
                event_id=event,
            )
        )
    if queued.created:
        UPLOADS.labels("reference" if kind == JSON else "file").inc()
    return UploadAccepted(
        image_id=queued.image_id,
        task_id=queued.task_id,
        outcome="created" if queued.created else "already received",
        status=queued.status,
        merchant_id=merchant,
        sku=fields.sku,
        declared_label=fields.declared_label,
        uri=public_uri(ctx.settings, queued.uri),
        href=f"/v1/images/{queued.image_id}",
    )


@router.get("/images/{image_id}", response_model=ImageOut, summary="One upload and its result")
def get_image(image_id: ImageId, request: Request, caller: Client) -> ImageOut:
    ctx = context(request)
    with scoped(ctx, caller) as conn:
        row = repository.image_detail(conn, image_id=image_id)
    if row is None:
        raise HTTPException(404, f"no image {image_id}")
    return image_out(ctx.settings, row)


@router.get(
    "/images/{image_id}/similar", response_model=SimilarOut, summary="Nearest catalog items"
)
def similar(
    image_id: ImageId,
    request: Request,
    caller: Client,
    k: K = 10,
    label: Annotated[str | None, Query(max_length=200, description="only this label")] = None,
) -> SimilarOut:
    ctx = context(request)
    cutoff = ctx.settings.similar_max_distance
    with scoped(ctx, caller) as conn:
        row = repository.image_detail(conn, image_id=image_id)
        if row is None:
            raise HTTPException(404, f"no image {image_id}")
        check_label(repository.active_model(conn), SearchFilters(label=label))
        found = repository.similar(
            conn, image_id=image_id, k=k, merchant_id=caller.merchant_id, label=label
        )
    if row["status"] != "done":
        raise HTTPException(409, f"image {image_id} is {row['status']}: no embedding yet")
    close = [n for n in found if n.distance <= cutoff]
    note = no_close_match(found[0].distance, cutoff) if found and not close else None
    shown = NeighbourOut.listed(close, lambda uri: public_uri(ctx.settings, uri))
    return SimilarOut(image_id=image_id, k=k, max_distance=cutoff, neighbours=shown, note=note)


@router.post(
    "/search",
    response_model=SearchOut,
    summary="Nearest catalog items to a photo (multipart `file`, `merchant_id`, `label`, `k`)",
    openapi_extra={
        "requestBody": {
            "content": {"multipart/form-data": {"schema": multipart_schema(SearchFields)}},
            "required": True,
        }
    },
)
async def search(request: Request, caller: Client) -> SearchOut:
    rate_limits(request).hit("searches", str(caller.id))
    async with photo_form(request) as form:
        fields = form_fields(form, SearchFields)
        photo = await form_photo(form).read()
    return await run_in_threadpool(search_photo, request, caller, photo, fields)
