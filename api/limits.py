"""A hard cap on request bodies, checked before anything parses them.

Multipart parsing spools what it reads; without a cap a client could fill the disk or
memory with one request. `Content-Length` over the cap is refused at once; a chunked
body is counted as it streams and cut off when it passes the cap. Either way: 413.
Only the routes that take a photo get the photo-sized cap (VITRINE_API_MAX_BODY_BYTES);
every other route's body is a small form at most (VITRINE_API_MAX_FORM_BYTES).
"""

from __future__ import annotations

import json

from starlette.types import ASGIApp, Message, Receive, Scope, Send


class BodyTooLarge(Exception):
    def __init__(self, max_bytes: int, setting: str = "VITRINE_API_MAX_BODY_BYTES") -> None:
        super().__init__(f"request body over {max_bytes} bytes ({setting})")
        self.max_bytes, self.setting = max_bytes, setting


class BodyLimit:
    def __init__(
        self, app: ASGIApp, *, max_bytes: int, photo_routes: tuple[str, ...], form_bytes: int
    ) -> None:
        self.app = app
        self.photo_limit = BodyTooLarge(max_bytes)
        self.form_limit = BodyTooLarge(form_bytes, "VITRINE_API_MAX_FORM_BYTES")
        self.photo_routes = frozenset(photo_routes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        photo = scope.get("path", "").rstrip("/") in self.photo_routes
        limit = self.photo_limit if photo else self.form_limit
        max_bytes = limit.max_bytes
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > max_bytes:
            await self._refuse(send, limit)
            return
        seen = 0
        started = False

        async def counted_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > max_bytes:
                    raise BodyTooLarge(limit.max_bytes, limit.setting)
            return message

        async def tracked_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted_receive, tracked_send)
        except BodyTooLarge:
            if not started:
                await self._refuse(send, limit)

    async def _refuse(self, send: Send, limit: BodyTooLarge) -> None:
        body = json.dumps({"error": str(limit)}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
