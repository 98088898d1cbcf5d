"""`POST /v1/reviews`: a shopper's review photo of a listing, queued for `vitrine.review`.

By reference (JSON, the URI checked as for uploads) or as the photo's bytes (multipart,
stored content-addressed like uploaded photos). The worker creates the `reviews` row when
it runs the task, so the answer is the task id; its result carries the review id, the
prediction and the match score, and view `review_mismatches` the verdict.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool
from starlette.status import HTTP_202_ACCEPTED

from vitrine.api.auth import Client, context, merchant_for, rate_limits
from vitrine.api.bodies import JSON, body_kind, form_fields, form_photo, json_body, photo_form
from vitrine.api.public import public_uri
from vitrine.api.schemas import MAX_FIELD, MerchantId
from vitrine.ops.api_uploads import checked_uri, queue_review, review_event, store_photo

router = APIRouter(prefix="/v1")


class ReviewFields(BaseModel):
    """The listing a review photo is of: the same limits as JSON and as a form."""

    model_config = ConfigDict(extra="forbid")

    merchant_id: MerchantId = None
    sku: str = Field(min_length=1, max_length=MAX_FIELD, description="the listing's product id")
    review_ref: str | None = Field(
        default=None, max_length=MAX_FIELD, description="the platform's id of the review"
    )


class ReviewRequest(ReviewFields):
    """A review photo by reference, and the listing it is a review of."""

    uri: str = Field(min_length=1, max_length=4096, examples=["https://cdn.example.com/r/9.jpg"])


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
                        **ReviewFields.model_json_schema(),
                        "required": ["file", "sku"],
                        "properties": {"file": {"type": "string", "format": "binary"}}
                        | ReviewFields.model_json_schema()["properties"],
                    }
                },
            },
            "required": True,
        }
    },
)
async def create_review(request: Request, caller: Client) -> ReviewAccepted:
    ctx = context(request)
    rate_limits(request).hit("uploads", str(caller.id))
    fields: ReviewFields
    if body_kind(request) == JSON:
        body = await json_body(request, ReviewRequest)
        fields, merchant = body, merchant_for(caller, body.merchant_id)
        files_allowed = caller.merchant_id is None
        uri = await run_in_threadpool(checked_uri, ctx, body.uri, files_allowed)
    else:
        async with photo_form(request) as form:
            fields = form_fields(form, ReviewFields)
            merchant = merchant_for(caller, fields.merchant_id)
            data = await form_photo(form).read()
        uri = await run_in_threadpool(lambda: store_photo(ctx, data, merchant_id=merchant))
    review = review_event(uri, merchant, fields.sku, fields.review_ref)
    task_id = await run_in_threadpool(lambda: queue_review(ctx, review))
    return ReviewAccepted(
        task_id=task_id,
        merchant_id=merchant,
        sku=fields.sku,
        review_ref=fields.review_ref,
        uri=public_uri(ctx.settings, uri),
    )
