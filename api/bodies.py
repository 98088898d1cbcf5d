"""Reading request bodies that may be JSON or a multipart form (uploads, reviews, search).

One place decides what kind a body is and turns it into its pydantic model, so the same
fields have the same limits whichever way they come (a 1 MB `sku` is as wrong in a form
as in JSON), with the same one-line 422 reason as FastAPI's own validation
(`vitrine.api.errors.validation_reason`). Routes call these only after the caller was checked:
no body is read for an unknown token.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TypeVar

from fastapi import HTTPException, Request
from pydantic import BaseModel, ValidationError
from starlette.datastructures import FormData, UploadFile

from vitrine.api.errors import validation_reason

JSON, FORM = "application/json", "multipart/form-data"
Body = TypeVar("Body", bound=BaseModel)
#: A form's text parts are a few short fields; anything longer is refused while parsing.
MAX_FIELD_BYTES = 16 * 1024
FILE_PART = "file"


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


@asynccontextmanager
async def photo_form(request: Request) -> AsyncIterator[FormData]:
    """A multipart body with at most one file and a few short fields (400 otherwise);
    its spooled file is closed on leaving."""
    if body_kind(request) != FORM:
        raise HTTPException(415, "send multipart/form-data with the photo as `file`")
    async with request.form(max_files=1, max_fields=10, max_part_size=MAX_FIELD_BYTES) as form:
        yield form


def form_fields(form: FormData, model: type[Body]) -> Body:
    """The form's text fields as `model` (trimmed; empty means absent), or 422. Fields the
    model does not know are refused, as JSON bodies refuse them."""
    fields: dict[str, str] = {}
    for name, value in form.multi_items():
        if name == FILE_PART:
            continue
        if name not in model.model_fields:
            raise HTTPException(422, f"{name}: Extra inputs are not permitted")
        if isinstance(value, str) and value.strip():
            fields[name] = value.strip()
    try:
        return model.model_validate(fields)
    except ValidationError as exc:
        raise HTTPException(422, validation_reason(exc)) from None


def form_photo(form: FormData) -> UploadFile:
    """The form's `file` part, or 422."""
    photo = form.get(FILE_PART)
    if not isinstance(photo, UploadFile):
        raise HTTPException(422, "file: a multipart `file` part with the photo is required")
    return photo
