"""The HTTP/1.1 connection protocol `python -m app` serves with: uvicorn's httptools protocol, plus the limits it lacks.

Uvicorn times out idle keep-alive connections, but not a connection that is sending its headers: one byte a second
holds a connection (and its memory) forever, and llhttp buffers a header of any size. Here every request must send
its request line and headers within `header_timeout_s` of its first byte (or of the connection's start), in at most
`max_header_bytes` and MAX_HEADERS lines; otherwise the client gets a JSON 408 or 431 and the connection is closed.
(The body's deadline is app.middleware.BodyTimeout's: by then the request is the application's.)
"""

from __future__ import annotations

import asyncio
import functools
import json
from dataclasses import dataclass
from typing import Any

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from app.errors import HeadersTooLarge, RequestTimedOut, ServiceError
from app.handlers import http_status
from app.settings import Settings

MAX_HEADERS = 100  # header lines per request (Apache's LimitRequestFields); real clients send about a dozen


@dataclass(frozen=True)
class ConnectionLimits:
    header_timeout_s: float
    max_header_bytes: int


@functools.cache
def connection_limits() -> ConnectionLimits:
    """The limits from the MNIST_* environment: uvicorn builds the protocol itself, in each worker process."""
    settings = Settings()
    return ConnectionLimits(settings.header_timeout_s, settings.max_header_bytes)


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a deadline and a size limit on each request's headers."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.limits = connection_limits()
        self._header_timer: asyncio.TimerHandle | None = None
        self._in_headers = False  # between a request's first byte and the end of its headers
        self._head_received = 0  # bytes received for the current request's head, as they arrived
        self._head_parsed = 0  # its request line and headers, as the parser reported them
        self._header_lines = 0
        self._refusal: ServiceError | None = None  # raised in a parser callback, sent by send_400_response

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_header_timer()  # a connection that never sends a byte is cut off too

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_header_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        # A head still incomplete after this many bytes is too large, whatever it holds (llhttp would buffer it all).
        # (A chunk that also ends the previous request's body counts whole: a pipelined upload may meet it early.)
        if self._in_headers and not self.transport.is_closing():
            self._head_received += len(data)
            if self._head_received > self.limits.max_header_bytes:
                self._refuse(_headers_too_large(self.limits.max_header_bytes))

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_headers, self._head_received, self._head_parsed, self._header_lines = True, 0, 0, 0
        self._arm_header_timer()

    def on_url(self, url: bytes) -> None:
        self._count(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_lines += 1
        if self._header_lines > MAX_HEADERS:
            raise self._remember(HeadersTooLarge(f"The request has more than {MAX_HEADERS} headers."))
        self._count(len(name) + len(value) + 4)  # ": " and CRLF
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_headers = False
        self._disarm_header_timer()
        super().on_headers_complete()

    def send_400_response(self, msg: str) -> None:
        """uvicorn's answer to a parser error: ours when a callback of ours refused the request."""
        if self._refusal is not None:
            self._refuse(self._refusal)
            return
        self._refuse(ServiceError(f"{msg.rstrip('.')}: the request is not valid HTTP/1.1."))

    def _count(self, size: int) -> None:
        self._head_parsed += size
        if self._head_parsed > self.limits.max_header_bytes:
            raise self._remember(_headers_too_large(self.limits.max_header_bytes))

    def _remember(self, refusal: ServiceError) -> ServiceError:
        self._refusal = refusal  # llhttp turns the exception into a parser error; send_400_response sends this
        return refusal

    def _arm_header_timer(self) -> None:
        if self._header_timer is None:
            self._header_timer = self.loop.call_later(self.limits.header_timeout_s, self._headers_timed_out)

    def _disarm_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_timed_out(self) -> None:
        self._header_timer = None
        if self.transport.is_closing():
            return
        if not self._in_headers:  # nothing sent since the connection opened: nobody to answer
            self.transport.close()
            return
        seconds = f"{self.limits.header_timeout_s:g}"
        detail = f"The request's headers did not arrive within {seconds} s (MNIST_HEADER_TIMEOUT_S)."
        self._refuse(RequestTimedOut(detail))

    def _refuse(self, refusal: ServiceError) -> None:
        """Answer with the service's JSON error body, then close: the rest of the stream cannot be trusted."""
        self._disarm_header_timer()
        self.logger.info("refused a request from %s: %s", self.client, refusal.detail)
        body = json.dumps({"detail": refusal.detail, "code": refusal.code}).encode()
        head = [STATUS_LINE[http_status(refusal)]]
        head += [name + b": " + value + b"\r\n" for name, value in self.server_state.default_headers]
        head.append(b"content-type: application/json\r\ncontent-length: %d\r\n" % len(body))
        head.append(b"x-content-type-options: nosniff\r\nconnection: close\r\n\r\n")
        self.transport.write(b"".join(head) + body)
        self.transport.close()


def _headers_too_large(limit: int) -> ServiceError:
    detail = f"The request line and headers are larger than {limit} bytes (MNIST_MAX_HEADER_BYTES)."
    return HeadersTooLarge(detail)


def uvicorn_options() -> dict[str, Any]:
    """What `python -m app` passes to uvicorn.run for these limits."""
    return {"http": GuardedHttpToolsProtocol, "h11_max_incomplete_event_size": connection_limits().max_header_bytes}
