"""Publishing upload events to the broker: one connection pool per `Producer`.

A platform service publishes with one call and should not need to know Celery exists,
so every failure becomes one of the exceptions in `vitrine_producer.errors` with a
one-line message, and the broker's address is spelled without its password.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

import redis

from vitrine_producer.errors import (
    BrokerUnavailableError,
    InvalidUpload,
    ProducerConfigError,
    ProducerError,
)
from vitrine_producer.message import ReviewEvent, UploadEvent, build_message, check_queue
from vitrine_producer.names import REDIS_URL_ENV, UPLOADS_QUEUE

#: A broker that does not answer fails the call in seconds rather than hang the service.
CONNECT_TIMEOUT_S = 5.0
SOCKET_TIMEOUT_S = 10.0
#: Events per LPUSH in `submit_many`: bounds one command's size, all in one round trip.
PUSH_CHUNK = 500

NO_BROKER = f"no broker: set {REDIS_URL_ENV} (e.g. redis://redis:6379/0)"

UploadLike = UploadEvent | ReviewEvent | Mapping[str, Any]
_FIELDS = ("uri", "merchant_id", "sku", "declared_label")


def resolve_redis_url(redis_url: str | None = None) -> str:
    """`redis_url`, else $REDIS_URL; never a guessed default, never a started server."""
    url = redis_url if redis_url is not None else os.environ.get(REDIS_URL_ENV)
    if not isinstance(url, str) or not url.strip():
        raise ProducerConfigError(NO_BROKER)
    return url.strip()


def broker_address(url: str) -> str:
    """host:port (or the socket path) of a Redis URL, without user or password."""
    try:
        parts = urlsplit(url)
        if parts.scheme == "unix":
            return parts.path or "?"
        host = parts.hostname or "localhost"
        host = f"[{host}]" if ":" in host else host
        return f"{host}:{parts.port or 6379}"
    except ValueError:  # a malformed port: still never echo the URL itself
        return "?"


def _scrub(text: str, url: str) -> str:
    """One line of `text` with the URL's password (if any) masked."""
    line = text.strip().splitlines()[0] if text.strip() else ""
    try:
        password = urlsplit(url).password
    except ValueError:
        password = None
    return line.replace(password, "***") if password else line


def _as_event(item: UploadLike, index: int) -> UploadEvent | ReviewEvent:
    """An event from `item` (a mapping is an upload); errors name its position."""
    if isinstance(item, UploadEvent | ReviewEvent):
        return item
    try:
        if not isinstance(item, Mapping):
            raise InvalidUpload(
                f"expected an UploadEvent or a mapping with uri and merchant_id, got "
                f"{type(item).__name__}"
            )
        if unknown := set(item) - set(_FIELDS):
            raise InvalidUpload(
                f"unknown field(s) {', '.join(sorted(map(str, unknown)))}: "
                "an upload has uri, merchant_id, sku and declared_label"
            )
        return UploadEvent(*(item.get(f) for f in _FIELDS))  # type: ignore[arg-type]
    except InvalidUpload as exc:
        raise InvalidUpload(f"upload #{index}: {exc}") from None


class Producer:
    """Publishes upload events over one connection pool (reuse it at high rates).

    `redis_url` defaults to $REDIS_URL; `close()` (or leaving a `with` block) releases
    the connections.
    """

    def __init__(self, redis_url: str | None = None) -> None:
        self._url = resolve_redis_url(redis_url)
        self.address = broker_address(self._url)
        try:
            pool = redis.ConnectionPool.from_url(
                self._url,
                socket_connect_timeout=CONNECT_TIMEOUT_S,
                socket_timeout=SOCKET_TIMEOUT_S,
            )
        except ValueError as exc:  # e.g. an http:// URL; redis-py's message repeats no secret
            raise ProducerConfigError(
                f"the broker URL is not a Redis URL ({_scrub(str(exc), self._url)}); "
                "use redis://host:6379/0, rediss://... or unix://..."
            ) from None
        self._redis = redis.Redis(connection_pool=pool)

    def __repr__(self) -> str:
        return f"Producer(<redis at {self.address}>)"

    def submit_upload(
        self,
        uri: str,
        *,
        merchant_id: str,
        sku: str | None = None,
        declared_label: str | None = None,
        queue: str = UPLOADS_QUEUE,
    ) -> str:
        """Publish one upload event; returns its task id."""
        event = UploadEvent(uri, merchant_id, sku, declared_label)
        return self.submit_many([event], queue=queue)[0]

    def submit_review(
        self,
        uri: str,
        *,
        merchant_id: str,
        sku: str,
        review_ref: str | None = None,
        queue: str = UPLOADS_QUEUE,
    ) -> str:
        """Publish a shopper's review photo of the listing (merchant_id, sku); returns its
        task id."""
        return self.submit_many([ReviewEvent(uri, merchant_id, sku, review_ref)], queue=queue)[0]

    def submit_many(
        self, uploads: Iterable[UploadLike], *, queue: str = UPLOADS_QUEUE
    ) -> list[str]:
        """Publish many events in one round trip; returns their task ids, in order.

        Every upload is validated before anything is sent, so bad input publishes nothing.
        """
        check_queue(queue)
        messages = [build_message(_as_event(u, i), queue=queue) for i, u in enumerate(uploads)]
        if not messages:
            return []
        bodies = [body for _, body in messages]
        try:
            with self._redis.pipeline(transaction=False) as pipe:
                for start in range(0, len(bodies), PUSH_CHUNK):
                    pipe.lpush(queue, *bodies[start : start + PUSH_CHUNK])
                pipe.execute()
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise BrokerUnavailableError(
                f"cannot reach the Redis broker at {self.address} "
                f"({_scrub(str(exc), self._url) or type(exc).__name__}); "
                f"check {REDIS_URL_ENV} and that Redis is running"
            ) from exc
        except redis.RedisError as exc:
            raise ProducerError(
                f"the Redis broker at {self.address} refused the upload(s): "
                f"{_scrub(str(exc), self._url) or type(exc).__name__}"
            ) from exc
        return [task_id for task_id, _ in messages]

    def close(self) -> None:
        """Release the pool's connections (a later call reconnects)."""
        self._redis.close()
        self._redis.connection_pool.disconnect()

    def __enter__(self) -> Producer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def submit_upload(
    uri: str,
    *,
    merchant_id: str,
    sku: str | None = None,
    declared_label: str | None = None,
    redis_url: str | None = None,
    queue: str = UPLOADS_QUEUE,
) -> str:
    """Publish one upload event and return its task id (a connection for this call only)."""
    event = UploadEvent(
        uri, merchant_id, sku, declared_label
    )  # bad input fails before any broker lookup
    check_queue(queue)
    with Producer(redis_url) as producer:
        return producer.submit_many([event], queue=queue)[0]


def submit_many(
    uploads: Iterable[UploadLike],
    *,
    redis_url: str | None = None,
    queue: str = UPLOADS_QUEUE,
) -> list[str]:
    """Publish many events (UploadEvent, ReviewEvent, or {uri, merchant_id, sku,
    declared_label} mappings) in one round trip; returns their task ids in order."""
    events = [_as_event(u, i) for i, u in enumerate(uploads)]  # bad input: nothing is sent
    check_queue(queue)
    with Producer(redis_url) as producer:
        return producer.submit_many(events, queue=queue)
