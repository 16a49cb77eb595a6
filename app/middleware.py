"""Pure ASGI middleware: body size limit (enforced while the body streams in), API key, request and body timeouts,
security headers."""

from __future__ import annotations

import asyncio
import hmac

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.admission import SMALL_BODY, Budget
from app.errors import Overloaded, PayloadTooLarge, RequestTimedOut, Timeout, Unauthorized
from app.handlers import render_error


def _too_large(limit: int, size: int | None = None) -> PayloadTooLarge:
    sent = f"{size / 1e6:.1f} MB" if size is not None else "more than that"
    return PayloadTooLarge(f"The request body is {sent}; the limit is {limit / 1e6:g} MB (MNIST_MAX_UPLOAD_BYTES).")


async def _discard_body(receive: Receive) -> None:
    """Reads the request body to its end, a chunk at a time, keeping none of it."""
    while True:
        message = await receive()
        if message["type"] != "http.request" or not message.get("more_body"):
            return


class BodySizeLimit:
    """Bodies over `max_bytes` refused (413), and at most `budget` bytes of bodies in flight: a request's declared
    length (the limit, for a chunked body) is reserved before its body is read, so a burst of large uploads waits in
    line with their bodies still in the sockets, instead of in memory all at once."""

    def __init__(self, app: ASGIApp, max_bytes: int, budget: Budget) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.budget = budget

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        declared = headers.get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.max_bytes:
            error = _too_large(self.max_bytes, int(declared))
            await render_error(Request(scope), error)(scope, receive, send)
            return
        size = int(declared) if declared.isdigit() else self.max_bytes if b"transfer-encoding" in headers else 0
        try:
            held = await self.budget.acquire(size) if size > SMALL_BODY else 0
        except Overloaded as error:
            await _discard_body(receive)  # a client still sending would see a reset, not the 503, if we closed now
            await render_error(Request(scope), error)(scope, receive, send)
            return
        try:
            await self._limited(scope, receive, send)
        finally:
            self.budget.release(held)

    async def _limited(self, scope: Scope, receive: Receive, send: Send) -> None:
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


class ApiKey:
    """When a key is configured, every request but health checks and docs must carry it (X-API-Key or Bearer)."""

    OPEN_PATHS = ("/health/", "/v2/health/", "/docs", "/redoc", "/openapi.json", "/metrics", "/static/")
    OPEN_EXACT = ("/", "/favicon.ico")

    def __init__(self, app: ASGIApp, key: str) -> None:
        self.app = app
        self.key = key.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if (
            scope["type"] != "http"
            or path.startswith(self.OPEN_PATHS)
            or path in self.OPEN_EXACT
            or self._authorised(scope)
        ):
            await self.app(scope, receive, send)
            return
        error = Unauthorized("This service needs an API key: send it as header X-API-Key or Authorization: Bearer.")
        await render_error(Request(scope), error, {"WWW-Authenticate": "Bearer"})(scope, receive, send)

    def _authorised(self, scope: Scope) -> bool:
        headers = dict(scope["headers"])
        # The Bearer scheme is required: a bare `Authorization: KEY` is refused, as RFC 6750 clients never send it.
        scheme, _, token = headers.get(b"authorization", b"").partition(b" ")
        given = headers.get(b"x-api-key") or (token if scheme.lower() == b"bearer" else b"")
        return hmac.compare_digest(given, self.key)


class RequestTimeout:
    """A request whose response has not started after `seconds` gets a 504 instead of holding its client."""

    def __init__(self, app: ASGIApp, seconds: float) -> None:
        self.app = app
        self.seconds = seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        # asyncio's own timeout: an anyio cancel scope cost a third of a bare request's time.
        try:
            async with asyncio.timeout(self.seconds) as timer:
                await self.app(scope, receive, tracking_send)
        except TimeoutError:
            if not timer.expired():
                raise  # the app's own timeout, not ours
            if started:
                return  # too late for a 504: the response ends short, as the client's own timeout would see it
            error = Timeout(f"The request took longer than {self.seconds:g} s (MNIST_REQUEST_TIMEOUT_S); try again.")
            await render_error(Request(scope), error)(scope, receive, send)


class BodyTimeout:
    """A request's whole body must arrive within `seconds` of its headers: else a 408, and the connection closes.

    A total, not an idle, deadline: a client sending one byte a second is never idle. (The headers' deadline is
    app.connections': uvicorn reads them before the application sees the request.)
    """

    def __init__(self, app: ASGIApp, seconds: float) -> None:
        self.app = app
        self.seconds = seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not _has_body(scope):
            await self.app(scope, receive, send)
            return
        timer = asyncio.timeout(self.seconds)
        started = False

        async def timed_receive() -> Message:
            message = await receive()
            if not message.get("more_body", False):
                timer.reschedule(None)  # the whole body is in: what follows is the request timeout's business
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                timer.reschedule(None)  # answered without the whole body (a 413, a 401): not a slow client
            await send(message)

        try:
            async with timer:
                await self.app(scope, timed_receive, tracking_send)
        except TimeoutError:
            if not timer.expired() or started:
                raise
            error = RequestTimedOut(
                f"The request body did not arrive within {self.seconds:g} s (MNIST_BODY_TIMEOUT_S)."
            )
            # Close the connection: the rest of the body may still be on its way, and cannot be told from a request.
            await render_error(Request(scope), error, {"Connection": "close"})(scope, receive, send)


def _has_body(scope: Scope) -> bool:
    headers = dict(scope["headers"])
    return headers.get(b"content-length", b"0") != b"0" or b"transfer-encoding" in headers


# The page loads its own script and style only, draws on canvases and blob: images, and talks to this origin.
PAGE_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; connect-src 'self'; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
API_POLICY = "default-src 'none'; frame-ancestors 'none'"  # JSON is never a document to run or embed
# FastAPI's /docs and /redoc load Swagger UI and ReDoc from a CDN with an inline script: framing is all they refuse.
DOCS_POLICY = "frame-ancestors 'none'"
_COMMON = [(b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"no-referrer"), (b"x-frame-options", b"DENY")]


class SecurityHeaders:
    """Every response says nosniff, no referrer, no framing; the page and its files also get a strict CSP."""

    PAGE_PATHS = ("/static/",)
    PAGE_EXACT = ("/", "/favicon.ico")
    DOCS_PATHS = ("/docs", "/redoc")

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._headers = {
            policy: [*_COMMON, (b"content-security-policy", policy.encode())]
            for policy in (PAGE_POLICY, API_POLICY, DOCS_POLICY)
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        extra = self._headers[self._policy(scope["path"])]

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), *extra]
            await send(message)

        await self.app(scope, receive, send_with_headers)

    def _policy(self, path: str) -> str:
        if path in self.PAGE_EXACT or path.startswith(self.PAGE_PATHS):
            return PAGE_POLICY
        return DOCS_POLICY if path.startswith(self.DOCS_PATHS) else API_POLICY
