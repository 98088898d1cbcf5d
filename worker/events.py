"""The worker's events, typed: one upload (`vitrine.ingest`) and one review photo
(`vitrine.review`), each checked once where it enters.

A Celery message carries its event as kwargs (docs/producers.md): an upload is `uri`,
`merchant_id`, `sku` and `declared_label` (the last two optional), plus `image_id` when
vitrine's own producers registered the row first and `attempt` when the live path sent
it again; a review is `uri`, `merchant_id`, `sku` and `review_ref`. `from_kwargs` reads
and checks such a message, `kwargs()` writes it back with the same keys in the same
order, so a re-sent message is the one that came in. A malformed message raises a
ValueError with a one-line message: the task fails alone and is never retried. (A plain
ValueError, as before there were these classes: a failed task's stored result names the
exception's type, and clients may read it.)

The worker tasks, the CLI's publishing (`vitrine.ops.dispatch`) and the HTTP API (through
`vitrine.ops.api_uploads`) all use these classes. `vitrine_producer.UploadEvent` is its
copy for platforms without vitrine: that distribution imports nothing of vitrine, and
its checks are stricter (it refuses blank text), since it speaks for the caller.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from vitrine.pipeline.types import Upload


def _text(value: object) -> bool:
    return isinstance(value, str) and bool(value)


def _whole(kwargs: Mapping[str, Any], name: str, default: int | None) -> int | None:
    value = kwargs.get(name, default)
    if value is None:
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ValueError(f"`{name}` must be a whole number") from None


@dataclass(frozen=True)
class UploadEvent:
    """One upload event as it travels on the queue. Its identity is the message's task
    id (the event id of `vitrine.pipeline.types.Upload`, the row it is recorded as), so
    a redelivery is the same listing and another event with the same photo another."""

    uri: str
    merchant_id: str
    sku: str | None = None
    #: The merchant's category, any text; view label_mismatches compares it.
    declared_label: str | None = None
    #: The row vitrine registered before publishing; None for a platform's event.
    image_id: int | None = None
    #: How many times the live path has sent this event again (0: the first delivery).
    attempt: int = 0

    def __post_init__(self) -> None:
        if not _text(self.uri) or not _text(self.merchant_id):
            raise ValueError("an upload event needs `uri` and `merchant_id`")
        if self.sku is not None and not isinstance(self.sku, str):
            raise ValueError("`sku` must be text")
        if self.declared_label is not None and not isinstance(self.declared_label, str):
            raise ValueError("`declared_label` must be text")

    @classmethod
    def from_kwargs(cls, kwargs: Mapping[str, Any] | None) -> UploadEvent:
        """The event a `vitrine.ingest` message carries (other keys are ignored)."""
        kwargs = kwargs or {}
        label = kwargs.get("declared_label")
        if label and not isinstance(label, str):
            raise ValueError("`declared_label` must be text")
        return cls(
            uri=kwargs.get("uri"),  # type: ignore[arg-type]  # checked in __post_init__
            merchant_id=kwargs.get("merchant_id"),  # type: ignore[arg-type]
            sku=kwargs.get("sku"),
            declared_label=label if isinstance(label, str) else None,
            image_id=_whole(kwargs, "image_id", None),
            attempt=_whole(kwargs, "attempt", 0) or 0,
        )

    def kwargs(self) -> dict[str, Any]:
        """The message's kwargs: optional keys only when set, in the order producers
        write them (a platform's fields first, then vitrine's `image_id` and `attempt`)."""
        kwargs: dict[str, Any] = {"uri": self.uri, "merchant_id": self.merchant_id, "sku": self.sku}
        if self.declared_label is not None:
            kwargs["declared_label"] = self.declared_label
        if self.image_id is not None:
            kwargs["image_id"] = self.image_id
        if self.attempt:
            kwargs["attempt"] = self.attempt
        return kwargs

    def upload(self, event_id: str | None = None) -> Upload:
        """The row's fields (`event_id` names the event: the same one finds its row)."""
        return Upload(self.uri, self.merchant_id, self.sku, self.declared_label, event_id)


@dataclass(frozen=True)
class ReviewEvent:
    """A shopper's review photo of the listing (merchant_id, sku); `review_ref` is the
    platform's own id of the review."""

    uri: str
    merchant_id: str
    sku: str
    review_ref: str | None = None

    def __post_init__(self) -> None:
        for name in ("uri", "merchant_id", "sku"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value.strip():
                raise ValueError(f"a review event needs `uri`, `merchant_id` and `sku` ({name})")
        if self.review_ref is not None and not isinstance(self.review_ref, str):
            raise ValueError("`review_ref` must be text")

    @classmethod
    def from_kwargs(cls, kwargs: Mapping[str, Any] | None) -> ReviewEvent:
        """The event a `vitrine.review` message carries (other keys are ignored)."""
        fields: dict[str, Any] = {  # their types are checked in __post_init__
            name: (kwargs or {}).get(name) for name in ("uri", "merchant_id", "sku", "review_ref")
        }
        return cls(**fields)

    def kwargs(self) -> dict[str, Any]:
        """The message's kwargs: every field, `review_ref` None when there is none."""
        return asdict(self)
