"""Request and response bodies, as pydantic models: they are the OpenAPI document."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from db.types import Neighbour


class UploadRequest(BaseModel):
    """An upload by reference: where the workers read the photo."""

    model_config = ConfigDict(extra="forbid")

    uri: str = Field(min_length=1, max_length=4096, examples=["https://cdn.example.com/p/1.jpg"])
    merchant_id: str | None = Field(
        default=None, min_length=1, max_length=200, description="optional for a merchant token"
    )
    sku: str | None = Field(default=None, max_length=200)
    declared_label: str | None = Field(
        default=None, min_length=1, max_length=200, examples=["Dress"],
        description="the merchant's category, any text; see view label_mismatches",
    )  # fmt: skip


class UploadAccepted(BaseModel):
    image_id: int
    task_id: str
    merchant_id: str
    sku: str | None
    declared_label: str | None = None
    uri: str
    status: str = "pending"
    href: str


class ImageOut(BaseModel):
    id: int
    merchant_id: str
    sku: str | None
    uri: str
    status: str
    error: str | None
    label: str | None
    confidence: float | None
    top_k: list[dict[str, Any]] | None
    model: str | None
    width: int | None
    height: int | None
    format: str | None
    created_at: datetime
    processed_at: datetime | None


class SimilarOut(BaseModel):
    image_id: int
    k: int
    neighbours: list[Neighbour]


class SearchOut(BaseModel):
    model: str
    label: str
    confidence: float
    neighbours: list[Neighbour]
