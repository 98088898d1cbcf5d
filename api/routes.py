"""Version 1 of the API: uploads in; an image, its neighbours, a photo's neighbours out."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, Form, HTTPException, Query, Request, UploadFile
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile as StarletteUpload
from starlette.status import HTTP_202_ACCEPTED

from api.auth import Client, context, merchant_for, scoped
from api.bodies import JSON, body_kind, form_text, json_body
from api.metrics import SEARCHES, UPLOADS
from api.schemas import ImageOut, SearchOut, SimilarOut, UploadAccepted, UploadRequest
from db import repository
from db.types import ApiClient
from ops.api_uploads import queue_photo, queue_reference
from ops.catalog import SearchFilters, check_label
from ops.errors import UserError
from ops.photo_search import PhotoEmbedder
from pipeline.types import Upload

router = APIRouter(prefix="/v1")
K = Annotated[int, Query(ge=1, le=100, description="how many neighbours")]


@router.post(
    "/uploads",
    status_code=HTTP_202_ACCEPTED,
    response_model=UploadAccepted,
    summary="Queue an upload: JSON {uri, merchant_id, sku, declared_label}, or multipart `file`",
    openapi_extra={
        "requestBody": {
            "content": {
                "application/json": {"schema": UploadRequest.model_json_schema()},
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "required": ["file"],
                        "properties": {
                            "file": {"type": "string", "format": "binary"},
                            "merchant_id": {"type": "string"},
                            "sku": {"type": "string"},
                            "declared_label": {"type": "string"},
                        },
                    }
                },
            },
            "required": True,
        }
    },
)
async def create_upload(request: Request, caller: Client) -> UploadAccepted:
    ctx = context(request)
    kind = body_kind(request)
    if kind == JSON:
        body = await json_body(request, UploadRequest)
        merchant = merchant_for(caller, body.merchant_id)
        upload = Upload(body.uri, merchant, body.sku, body.declared_label)
        queued = await run_in_threadpool(queue_reference, ctx, upload)
        sku, declared = body.sku, body.declared_label
    else:
        async with request.form(max_files=1, max_fields=10) as form:
            photo = form.get("file")
            if not isinstance(photo, StarletteUpload):
                raise HTTPException(422, "multipart upload needs a `file` part")
            merchant = merchant_for(caller, form_text(form.get("merchant_id")))
            sku, declared = form_text(form.get("sku")), form_text(form.get("declared_label"))
            data = await photo.read()
            queued = await run_in_threadpool(
                queue_photo, ctx, data, merchant_id=merchant, sku=sku, declared_label=declared
            )
    UPLOADS.labels("reference" if kind == JSON else "file").inc()
    return UploadAccepted(
        image_id=queued.image_id,
        task_id=queued.task_id,
        merchant_id=merchant,
        sku=sku,
        declared_label=declared,
        uri=queued.uri,
        href=f"/v1/images/{queued.image_id}",
    )


@router.get("/images/{image_id}", response_model=ImageOut, summary="One upload and its result")
def get_image(image_id: int, request: Request, caller: Client) -> ImageOut:
    with scoped(context(request), caller) as conn:
        row = repository.image_detail(conn, image_id=image_id)
    if row is None:
        raise HTTPException(404, f"no image {image_id}")
    return ImageOut(**row)


@router.get(
    "/images/{image_id}/similar", response_model=SimilarOut, summary="Nearest catalog items"
)
def similar(
    image_id: int,
    request: Request,
    caller: Client,
    k: K = 10,
    label: Annotated[str | None, Query(description="only this label")] = None,
) -> SimilarOut:
    with scoped(context(request), caller) as conn:
        row = repository.image_detail(conn, image_id=image_id)
        if row is None:
            raise HTTPException(404, f"no image {image_id}")
        check_label(repository.active_model(conn), SearchFilters(label=label))
        neighbours = repository.similar(
            conn, image_id=image_id, k=k, merchant_id=caller.merchant_id, label=label
        )
    if row["status"] != "done":
        raise HTTPException(409, f"image {image_id} is {row['status']}: no embedding yet")
    return SimilarOut(image_id=image_id, k=k, neighbours=neighbours)


@router.post("/search", response_model=SearchOut, summary="Nearest catalog items to a photo")
def search(
    request: Request,
    caller: Client,
    file: Annotated[UploadFile, File(description="the photo")],
    merchant_id: Annotated[str | None, Form()] = None,
    label: Annotated[str | None, Form()] = None,
    k: Annotated[int, Form(ge=1, le=100)] = 10,
) -> SearchOut:
    return search_photo(request, caller, file.file.read(), merchant_id, label, k)


def search_photo(
    request: Request,
    caller: ApiClient,
    photo: bytes,
    merchant_id: str | None,
    label: str | None,
    k: int,
) -> SearchOut:
    """Embed `photo` with the active model and find its neighbours (also the review
    desk's search by dropped photo)."""
    ctx = context(request)
    if caller.merchant_id is not None:
        merchant_id = merchant_for(caller, merchant_id)
    embedder: PhotoEmbedder = request.app.state.embedder
    active = embedder.active_model()
    check_label(active, SearchFilters(merchant_id, label))
    try:
        embedded = embedder.embed(photo, active=active)
    except UserError as exc:
        raise UserError(f"not a usable photo: {exc}") from None
    with scoped(ctx, caller) as conn:
        neighbours = repository.similar_to_vector(
            conn,
            embedding=embedded.prediction.embedding,
            k=k,
            merchant_id=merchant_id,
            label=label,
        )
    SEARCHES.inc()
    return SearchOut(
        model=active.key,
        label=embedded.prediction.label,
        confidence=round(embedded.prediction.confidence, 6),
        neighbours=neighbours,
    )
