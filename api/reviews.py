"""`POST /v1/reviews`: a shopper's review photo of a listing, queued for `vitrine.review`.

By reference (JSON, the URI checked as for uploads) or as the photo's bytes (multipart,
stored content-addressed like uploaded photos). The worker creates the `reviews` row when
it runs the task, so the answer is the task id; its result carries the review id, the
prediction and the match score, and view `review_mismatches` the verdict.
"""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile as StarletteUpload
from starlette.status import HTTP_202_ACCEPTED

from api.auth import Client, context, merchant_for
from api.bodies import JSON, body_kind, form_text, json_body
from ops.api_uploads import checked_uri, queue_review, store_photo

router = APIRouter(prefix="/v1")


class ReviewRequest(BaseModel):
    """A review photo by reference, and the listing it is a review of."""

    model_config = ConfigDict(extra="forbid")

    uri: str = Field(min_length=1, max_length=4096, examples=["https://cdn.example.com/r/9.jpg"])
    merchant_id: str | None = Field(
        default=None, min_length=1, max_length=200, description="optional for a merchant token"
    )
    sku: str = Field(min_length=1, max_length=200, description="the listing's product id")
    review_ref: str | None = Field(
        default=None, max_length=200, description="the platform's id of the review"
    )


class ReviewAccepted(BaseModel):
    task_id: str
    merchant_id: str
    sku: str
    review_ref: str | None
    uri: str
    status: str = "pending"


@router.post(
    "/reviews",
    status_code=HTTP_202_ACCEPTED,
    response_model=ReviewAccepted,
    summary="Queue a review photo: JSON {uri, merchant_id, sku, review_ref}, or multipart",
    openapi_extra={
        "requestBody": {
            "content": {
                "application/json": {"schema": ReviewRequest.model_json_schema()},
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "required": ["file", "sku"],
                        "properties": {
                            name: {"type": "string"}
                            for name in ("merchant_id", "sku", "review_ref")
                        }
                        | {"file": {"type": "string", "format": "binary"}},
                    }
                },
            },
            "required": True,
        }
    },
)
async def create_review(request: Request, caller: Client) -> ReviewAccepted:
    ctx = context(request)
    if body_kind(request) == JSON:
        body = await json_body(request, ReviewRequest)
        merchant, sku, ref = merchant_for(caller, body.merchant_id), body.sku, body.review_ref
        uri = await run_in_threadpool(checked_uri, ctx, body.uri)
    else:
        async with request.form(max_files=1, max_fields=10) as form:
            photo, fields = form.get("file"), {k: form_text(form.get(k)) for k in form}
            if not isinstance(photo, StarletteUpload) or not fields.get("sku"):
                raise HTTPException(422, "a multipart review needs a `file` and a `sku` part")
            merchant = merchant_for(caller, fields.get("merchant_id"))
            sku, ref = str(fields["sku"]), fields.get("review_ref")
            uri = await run_in_threadpool(store_photo, ctx, await photo.read())
    task_id = await run_in_threadpool(
        queue_review, ctx, uri=uri, merchant_id=merchant, sku=sku, review_ref=ref
    )
    return ReviewAccepted(task_id=task_id, merchant_id=merchant, sku=sku, review_ref=ref, uri=uri)
