"""Reading request bodies that may be JSON or a multipart form (uploads, reviews).

One place decides what kind a body is, turns a JSON body into its model with the same
one-line 422 reason as FastAPI's own validation (`api.errors.validation_reason`), and
reads form fields as trimmed text.
"""

from __future__ import annotations

from typing import TypeVar

from fastapi import HTTPException, Request
from pydantic import BaseModel, ValidationError

from api.errors import validation_reason

JSON, FORM = "application/json", "multipart/form-data"
Body = TypeVar("Body", bound=BaseModel)


def body_kind(request: Request) -> str:
    """JSON or FORM; 415 for anything else."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind not in (JSON, FORM):
        raise HTTPException(415, "send application/json or multipart/form-data")
    return kind


async def json_body(request: Request, model: type[Body]) -> Body:
    """The body as `model`, or 422 with the first problem (malformed JSON included)."""
    try:
        return model.model_validate_json(await request.body())
    except ValidationError as exc:
        raise HTTPException(422, validation_reason(exc)) from None


def form_text(value: object) -> str | None:
    """A form field as text: trimmed, None when absent, empty or a file."""
    return value.strip() or None if isinstance(value, str) else None
