"""Building the Celery protocol-2 message of docs/producers.md, without Celery.

The workers are Celery workers, so an event must be the exact message Celery's own
`send_task` would push: a JSON envelope whose base64 body is `[args, kwargs, embed]`.
The headers Celery fills in with defaults (retries, time limits, reprs, origin) are
filled in here the same way, so a worker cannot tell the two producers apart.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import uuid
from dataclasses import dataclass
from typing import Any, ClassVar

from vitrine_producer.errors import InvalidUpload
from vitrine_producer.names import INGEST_TASK, REVIEW_TASK, UPLOADS_QUEUE

#: Longest value quoted back in an error message (messages stay one readable line).
_QUOTE_MAX = 60


def _quote(value: object) -> str:
    text = repr(value)  # repr escapes newlines: the message stays on one line
    return text if len(text) <= _QUOTE_MAX else text[: _QUOTE_MAX - 3] + "..."


def _require_text(name: str, value: object, hint: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InvalidUpload(f"{name} must be a non-empty string ({hint}), got {_quote(value)}")
    return value


@dataclass(frozen=True, slots=True)
class UploadEvent:
    """One upload, validated: `(merchant_id, uri)` is its identity on the worker side."""

    uri: str
    merchant_id: str
    sku: str | None = None
    #: The merchant's category for the photo (any text, e.g. "Dress"); vitrine lists the
    #: uploads whose confident prediction disagrees (view label_mismatches).
    declared_label: str | None = None
    task: ClassVar[str] = INGEST_TASK

    def __post_init__(self) -> None:
        _require_text("uri", self.uri, "where the worker reads the image, e.g. https://...")
        _require_text("merchant_id", self.merchant_id, "the merchant's id, e.g. 'm-42'")
        if self.sku is not None:
            _require_text("sku", self.sku, "the product id, or None for no sku")
        if self.declared_label is not None:
            _require_text("declared_label", self.declared_label, "a category, or None")

    def kwargs(self) -> dict[str, Any]:
        kwargs = {"uri": self.uri, "merchant_id": self.merchant_id, "sku": self.sku}
        if self.declared_label is not None:  # absent, the message is what it always was
            kwargs["declared_label"] = self.declared_label
        return kwargs


@dataclass(frozen=True, slots=True)
class ReviewEvent:
    """A shopper's review photo of a listing (merchant_id + sku); `review_ref` is the
    platform's own id of the review, kept beside the result."""

    uri: str
    merchant_id: str
    sku: str
    review_ref: str | None = None
    task: ClassVar[str] = REVIEW_TASK

    def __post_init__(self) -> None:
        _require_text("uri", self.uri, "where the worker reads the photo, e.g. https://...")
        _require_text("merchant_id", self.merchant_id, "the listing's merchant, e.g. 'm-42'")
        _require_text("sku", self.sku, "the listing's product id")
        if self.review_ref is not None:
            _require_text("review_ref", self.review_ref, "the review's id, or None")

    def kwargs(self) -> dict[str, Any]:
        return {
            "uri": self.uri,
            "merchant_id": self.merchant_id,
            "sku": self.sku,
            "review_ref": self.review_ref,
        }


def check_queue(queue: object) -> str:
    """The queue is also the Redis list's name: an empty one would lose every event."""
    return _require_text("queue", queue, f"the workers' queue, normally {UPLOADS_QUEUE!r}")


def _origin() -> str:
    # Celery writes "gen<pid>@<host>"; workers only log it, so say who published.
    return f"vitrine-producer-{os.getpid()}@{socket.gethostname()}"


def build_message(
    event: UploadEvent | ReviewEvent, *, queue: str = UPLOADS_QUEUE, task_id: str | None = None
) -> tuple[str, str]:
    """`(task_id, JSON text)` of the message to LPUSH onto the list named `queue`."""
    task_id = task_id or str(uuid.uuid4())
    kwargs = event.kwargs()
    embed = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}
    body = json.dumps([[], kwargs, embed]).encode("utf-8")
    envelope = {
        "body": base64.b64encode(body).decode("ascii"),
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": {
            "lang": "py",
            "task": event.task,
            "id": task_id,
            "shadow": None,
            "eta": None,
            "expires": None,
            "group": None,
            "group_index": None,
            "retries": 0,
            "timelimit": [None, None],
            "root_id": task_id,
            "parent_id": None,
            "argsrepr": "()",
            "kwargsrepr": repr(kwargs),
            "origin": _origin(),
            "ignore_result": False,
        },
        "properties": {
            "correlation_id": task_id,
            "delivery_mode": 2,
            "delivery_info": {"exchange": "", "routing_key": queue},
            "priority": 0,
            "body_encoding": "base64",
            "delivery_tag": str(uuid.uuid4()),
        },
    }
    return task_id, json.dumps(envelope)
