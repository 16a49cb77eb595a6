"""Request body limit, enforced while the body streams in: an oversized upload is never read whole."""

from __future__ import annotations

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.errors import PayloadTooLarge
from app.handlers import error_body


def _too_large(limit: int, size: int | None = None) -> PayloadTooLarge:
    sent = f"{size / 1e6:.1f} MB" if size is not None else "more than that"
    return PayloadTooLarge(f"The request body is {sent}; the limit is {limit / 1e6:g} MB (MNIST_MAX_UPLOAD_BYTES).")


class BodySizeLimit:
    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.max_bytes:
            error = _too_large(self.max_bytes, int(declared))
            response = JSONResponse(error_body(error.detail, error.code), status_code=error.status_code)
            await response(scope, receive, send)
            return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_bytes:
                # Raised inside the route's body read, so the ServiceError handler renders the 413.
                raise _too_large(self.max_bytes)
            return message

        await self.app(scope, limited_receive, send)
