"""Request and response bodies, as pydantic models: they are the OpenAPI document."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Annotated, Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field

from vitrine.db.types import Neighbour
from vitrine.ops.api_uploads import UploadEvent

#: The longest text field any body may carry (ids, SKUs, labels).
MAX_FIELD = 200
#: The largest image id there can be (PostgreSQL bigint); path and query ids are checked
#: against it, so a longer number is a 422, not a database error.
MAX_ID = 2**63 - 1


#: The merchant a body is for: required of a platform token, implied by a merchant's.
MerchantId = Annotated[
    str | None,
    Field(min_length=1, max_length=MAX_FIELD, description="optional for a merchant token"),
]


class UploadFields(BaseModel):
    """What an upload says besides the photo: the same limits as JSON and as a form."""

    model_config = ConfigDict(extra="forbid")

    merchant_id: MerchantId = None
    sku: str | None = Field(default=None, max_length=MAX_FIELD)
    declared_label: str | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_FIELD,
        examples=["Dress"],
        description="the merchant's category, any text; see view label_mismatches",
    )


class UploadRequest(UploadFields):
    """An upload by reference: where the workers read the photo."""

    uri: str = Field(min_length=1, max_length=4096, examples=["https://cdn.example.com/p/1.jpg"])

    def event(self, merchant_id: str) -> UploadEvent:
        """The upload event this body asks for, on behalf of `merchant_id` (the workers'
        own type: what the body's limits let through is always a valid event)."""
        return UploadEvent(self.uri, merchant_id, self.sku, self.declared_label)


class SearchFields(BaseModel):
    """A search by photo: the photo is the multipart `file`; these narrow the answer."""

    model_config = ConfigDict(extra="forbid")

    merchant_id: MerchantId = None
    label: str | None = Field(default=None, min_length=1, max_length=MAX_FIELD)
    k: int = Field(default=10, ge=1, le=100, description="how many neighbours")


class UploadAccepted(BaseModel):
    image_id: int
    task_id: str | None = Field(
        description="the Celery task processing it; null when nothing new was queued"
    )
    outcome: Literal["created", "already received"] = Field(
        description="`created`: a new listing image; `already received`: this event "
        "(Idempotency-Key) was received before, `image_id` is the existing one"
    )
    merchant_id: str
    sku: str | None
    declared_label: str | None = None
    uri: str
    status: str = Field(description="the image's status now (pending, processing, done, failed)")
    href: str


class ImageOut(BaseModel):
    id: int
    merchant_id: str
    sku: str | None
    uri: str
    status: str
    error: str | None
    label: str | None = Field(
        description="what the item is: a person's decision at the review desk, else "
        "`unknown` (none of the model's categories), else the model's label"
    )
    label_source: Literal["model", "person"] | None = Field(
        description="whose label `label` is; null while there is none"
    )
    model_label: str | None = Field(description="the model's own best label")
    confidence: float | None = Field(description="the model's probability of `model_label`")
    top_k: list[dict[str, Any]] | None = Field(description="the model's best labels, each a score")
    unknown_score: float | None = Field(
        description="how far the photo lies from every class the model knows (higher: further)"
    )
    declared_label: str | None = Field(description="the merchant's category, as sent")
    declared_label_known: bool | None = Field(
        description="whether the declared category is one of the model's labels (only then "
        "is it compared: view label_mismatches); null when none was declared"
    )
    model: str | None
    width: int | None
    height: int | None
    format: str | None
    created_at: datetime
    processed_at: datetime | None


class NeighbourOut(BaseModel):
    image_id: int
    merchant_id: str
    sku: str | None
    uri: str = Field(description="where the photo is, as a client may see it (vitrine.api.public)")
    label: str | None
    distance: float = Field(description="cosine distance to the query (0 = same direction)")

    @classmethod
    def listed(cls, neighbours: Sequence[Neighbour], shown: Callable[[str], str]) -> list[Self]:
        """`neighbours` as the API shows them, each uri through `shown`."""
        return [
            cls(**{**dataclasses.asdict(n), "uri": shown(n.uri)})  # type: ignore[arg-type]
            for n in neighbours
        ]


_NOTE = "why fewer than k neighbours came back, e.g. no close match"
_CUTOFF = "neighbours further than this cosine distance are left out"


class SimilarOut(BaseModel):
    image_id: int
    k: int
    max_distance: float = Field(description=_CUTOFF)
    neighbours: list[NeighbourOut]
    note: str | None = Field(default=None, description=_NOTE)


class SearchOut(BaseModel):
    model: str
    label: str = Field(description="the model's label, or `unknown`: none of its categories")
    confidence: float = Field(description="the model's probability of its best label")
    unknown_score: float | None = Field(
        default=None,
        description="how far the photo lies from every class the model knows (higher: further)",
    )
    max_distance: float = Field(description=_CUTOFF)
    neighbours: list[NeighbourOut]
    note: str | None = Field(default=None, description=_NOTE)
