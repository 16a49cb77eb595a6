"""Each middleware alone, at the ASGI level: a raw scope, a scripted `receive` and a recording `send` around a small
ASGI app, with no framework and no server in between, so every message the middleware lets through, changes or
answers itself is seen as it is (TestClient reads a whole body into one message and hides what a middleware sends
after the response started)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import pytest
from starlette.types import Message, Receive, Scope, Send

from app.admission import Budget
from app.errors import ServiceError
from app.middleware import (
    API_POLICY,
    DOCS_POLICY,
    PAGE_POLICY,
    SMALL_BODY,
    ApiKey,
    BodySizeLimit,
    BodyTimeout,
    RequestTimeout,
    SecurityHeaders,
)

App = Callable[[Scope, Receive, Send], Awaitable[None]]
LIMIT = 1_000_000
SHORT_S = 0.05  # the deadlines under test; the apps that outlast them wait on an event that never comes


def http_scope(path: str = "/predict", headers: dict[str, str] | None = None, method: str = "POST") -> Scope:
    raw = [(name.lower().encode(), value.encode()) for name, value in (headers or {}).items()]
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": raw,
        "server": ("127.0.0.1", 8000),
        "client": ("127.0.0.1", 50000),
    }


@dataclass
class Exchange:
    """One request through an ASGI app: the body chunks it is given, and what the app sent and read."""

    chunks: list[bytes] = field(default_factory=list)
    sent: list[Message] = field(default_factory=list)
    complete: bool = True  # False: the client goes quiet after the chunks, its body unfinished
    read: int = 0  # body messages the app (or middleware) took from receive

    async def receive(self) -> Message:
        if self.read < len(self.chunks):
            self.read += 1
            more = self.read < len(self.chunks) or not self.complete
            return {"type": "http.request", "body": self.chunks[self.read - 1], "more_body": more}
        await asyncio.Event().wait()  # the client sends nothing more: a receive past the body waits forever
        raise AssertionError("unreachable")

    async def send(self, message: Message) -> None:
        self.sent.append(message)

    @property
    def status(self) -> int:
        return int(self.sent[0]["status"])

    @property
    def headers(self) -> dict[str, str]:
        return {name.decode(): value.decode() for name, value in self.sent[0].get("headers", [])}

    @property
    def json(self) -> dict[str, str]:
        return dict(json.loads(b"".join(m.get("body", b"") for m in self.sent[1:])))


def run(app: App, scope: Scope, exchange: Exchange | None = None) -> Exchange:
    exchange = exchange or Exchange()
    asyncio.run(app(scope, exchange.receive, exchange.send))
    return exchange


async def reads_the_body(scope: Scope, receive: Receive, send: Send) -> None:
    """Reads the whole body, then answers 200 with its length: as a route does."""
    size, more = 0, True
    while more:
        message = await receive()
        size += len(message.get("body", b""))
        more = message.get("more_body", False)
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": str(size).encode()})


async def answers_at_once(scope: Scope, receive: Receive, send: Send) -> None:
    await send({"type": "http.response.start", "status": 204, "headers": []})
    await send({"type": "http.response.body", "body": b""})


async def never_answers(scope: Scope, receive: Receive, send: Send) -> None:
    await asyncio.Event().wait()


async def starts_then_stalls(scope: Scope, receive: Receive, send: Send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await asyncio.Event().wait()


class Recorder:
    """An app that records that it was called, and with which scope type."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.calls.append(scope["type"])


def a_budget(capacity: int = 10 * LIMIT, wait_s: float = SHORT_S) -> Budget:
    return Budget(capacity, wait_s, "request-body bytes", "MNIST_BODY_BUDGET_BYTES")


# BodySizeLimit


def test_a_declared_length_over_the_limit_is_refused_before_any_body_is_read() -> None:
    limit = BodySizeLimit(reads_the_body, LIMIT, a_budget())
    exchange = run(limit, http_scope(headers={"Content-Length": str(2 * LIMIT)}), Exchange([b"x"]))
    assert (exchange.status, exchange.json["code"]) == (413, "payload_too_large")
    assert exchange.json["detail"] == "The request body is 2.0 MB; the limit is 1 MB (MNIST_MAX_UPLOAD_BYTES)."
    assert exchange.read == 0


def test_the_declared_size_is_stated_in_megabytes_rounded_to_one_decimal() -> None:
    limit = BodySizeLimit(reads_the_body, LIMIT, a_budget())
    exchange = run(limit, http_scope(headers={"Content-Length": "1050001"}))
    assert exchange.json["detail"].startswith("The request body is 1.1 MB;")


def test_a_declared_length_at_the_limit_is_read() -> None:
    limit = BodySizeLimit(reads_the_body, LIMIT, a_budget())
    exchange = run(limit, http_scope(headers={"Content-Length": str(LIMIT)}), Exchange([b"\0" * LIMIT]))
    assert exchange.status == 200
    assert exchange.sent[1]["body"] == str(LIMIT).encode()


def test_a_chunked_body_is_counted_as_a_running_total_and_cut_off_past_the_limit() -> None:
    chunk = LIMIT // 4 + 1  # each far under the limit; the fourth takes the sum over it
    limit = BodySizeLimit(reads_the_body, LIMIT, a_budget())
    exchange = Exchange([b"\0" * chunk] * 8)
    with pytest.raises(ServiceError) as refused:  # raised into the route's read: the app's handler renders it
        run(limit, http_scope(headers={"Transfer-Encoding": "chunked"}), exchange)
    assert refused.value.code == "payload_too_large"
    assert refused.value.detail == "The request body is more than that; the limit is 1 MB (MNIST_MAX_UPLOAD_BYTES)."
    assert exchange.read == 4  # not one chunk more


def test_a_chunked_body_under_the_limit_is_read_whole() -> None:
    limit = BodySizeLimit(reads_the_body, LIMIT, a_budget())
    exchange = run(limit, http_scope(headers={"Transfer-Encoding": "chunked"}), Exchange([b"\0" * (LIMIT // 4)] * 4))
    assert exchange.status == 200
    assert exchange.sent[1]["body"] == str(LIMIT).encode()


@pytest.mark.parametrize(
    ("headers", "reserved"),
    [
        ({"Content-Length": str(SMALL_BODY + 1)}, SMALL_BODY + 1),
        ({"Content-Length": str(SMALL_BODY)}, 0),  # small bodies are not counted
        ({"Transfer-Encoding": "chunked"}, LIMIT),  # no length to go by: the limit is reserved
        ({}, 0),
    ],
)
def test_a_body_reserves_its_declared_length_while_it_is_served(headers: dict[str, str], reserved: int) -> None:
    budget, seen = a_budget(), []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append(budget.in_use)
        await answers_at_once(scope, receive, send)

    assert run(BodySizeLimit(app, LIMIT, budget), http_scope(headers=headers)).status == 204
    assert seen == [reserved]
    assert budget.in_use == 0  # given back after the response


def test_the_reservation_is_given_back_when_the_app_fails() -> None:
    budget = a_budget()

    async def fails(scope: Scope, receive: Receive, send: Send) -> None:
        raise RuntimeError("a bug")

    with pytest.raises(RuntimeError):
        run(BodySizeLimit(fails, LIMIT, budget), http_scope(headers={"Content-Length": str(LIMIT)}))
    assert budget.in_use == 0


def test_no_room_in_the_budget_reads_the_body_away_then_answers_503() -> None:
    budget = a_budget(capacity=LIMIT)
    app = Recorder()
    held = asyncio.run(budget.acquire(LIMIT))
    chunks = [b"\0" * 1000] * 3
    exchange = run(
        BodySizeLimit(app, LIMIT, budget), http_scope(headers={"Content-Length": "100000"}), Exchange(chunks)
    )
    assert (exchange.status, exchange.json["code"]) == (503, "overloaded")
    assert exchange.headers["retry-after"] == "1"
    assert "MNIST_BODY_BUDGET_BYTES" in exchange.json["detail"]
    assert exchange.read == 3  # the whole body, so the client still sending sees the 503 and not a reset
    assert app.calls == []
    assert budget.in_use == held


def test_non_http_scopes_pass_through_the_body_limit() -> None:
    app = Recorder()
    asyncio.run(BodySizeLimit(app, LIMIT, a_budget())({"type": "lifespan"}, Exchange().receive, Exchange().send))
    assert app.calls == ["lifespan"]


# ApiKey


@pytest.mark.parametrize(
    ("path", "headers"),
    [
        ("/models", {"X-API-Key": "s3cret"}),
        ("/models", {"Authorization": "Bearer s3cret"}),
        ("/health/ready", {}),
        ("/v2/health/live", {}),
        ("/docs", {}),
        ("/redoc", {}),
        ("/openapi.json", {}),
        ("/metrics", {}),
        ("/static/app.js", {}),
        ("/", {}),
        ("/favicon.ico", {}),
    ],
)
def test_the_key_or_an_open_path_lets_a_request_through(path: str, headers: dict[str, str]) -> None:
    exchange = run(ApiKey(reads_the_body, "s3cret"), http_scope(path, headers), Exchange([b"abc"]))
    assert exchange.status == 200  # the app read the body and answered: the request passed whole
    assert exchange.sent[1]["body"] == b"3"


def test_a_key_with_a_space_is_read_whole_from_the_bearer_header() -> None:
    exchange = run(ApiKey(answers_at_once, "two words"), http_scope("/models", {"Authorization": "Bearer two words"}))
    assert exchange.status == 204


@pytest.mark.parametrize(
    ("path", "headers"),
    [
        ("/models", {}),
        ("/models", {"X-API-Key": "wrong"}),
        ("/models", {"X-API-Key": "s3cre"}),
        ("/models", {"Authorization": "s3cret"}),  # no Bearer scheme
        ("/models", {"Authorization": "Basic s3cret"}),
        ("/models", {"X-API-Key": "", "Authorization": "Bearer s3cret-and-more"}),
        ("/predict", {}),
        ("/healthz", {}),  # open paths are prefixes with their slash, not any path that starts alike
        ("/index.html", {}),
    ],
)
def test_without_the_key_a_request_gets_401_with_its_code_and_message(path: str, headers: dict[str, str]) -> None:
    app = Recorder()
    exchange = run(ApiKey(app, "s3cret"), http_scope(path, headers, method="GET"))
    assert run(ApiKey(app, "XXXX"), http_scope(path, {}, method="GET")).status == 401  # no key matches no header
    assert app.calls == []
    assert exchange.status == 401
    assert exchange.headers["www-authenticate"] == "Bearer"
    assert exchange.json == {
        "code": "unauthorized",
        "detail": "This service needs an API key: send it as header X-API-Key or Authorization: Bearer.",
    }


def test_a_v2_request_without_the_key_gets_the_protocols_error_body() -> None:
    exchange = run(ApiKey(Recorder(), "s3cret"), http_scope("/v2/models/cnn/infer"))
    assert exchange.status == 401
    assert exchange.json == {
        "error": "This service needs an API key: send it as header X-API-Key or Authorization: Bearer."
    }


def test_non_http_scopes_need_no_key() -> None:
    app = Recorder()
    asyncio.run(ApiKey(app, "s3cret")({"type": "lifespan"}, Exchange().receive, Exchange().send))
    assert app.calls == ["lifespan"]


# RequestTimeout


def test_a_request_not_answered_in_time_gets_a_json_504() -> None:
    exchange = run(RequestTimeout(never_answers, SHORT_S), http_scope())
    assert (exchange.status, exchange.json["code"]) == (504, "timeout")
    assert exchange.json["detail"] == "The request took longer than 0.05 s (MNIST_REQUEST_TIMEOUT_S); try again."


def test_a_response_already_started_is_left_to_end_short() -> None:
    exchange = run(RequestTimeout(starts_then_stalls, SHORT_S), http_scope())
    assert [m["type"] for m in exchange.sent] == ["http.response.start"]  # no second start, no 504 body
    assert exchange.status == 200


def test_a_request_answered_in_time_is_untouched() -> None:
    exchange = run(RequestTimeout(answers_at_once, SHORT_S), http_scope())
    assert exchange.sent == [
        {"type": "http.response.start", "status": 204, "headers": []},
        {"type": "http.response.body", "body": b""},
    ]


def test_the_apps_own_timeout_is_not_taken_for_the_requests() -> None:
    async def times_out_itself(scope: Scope, receive: Receive, send: Send) -> None:
        raise TimeoutError("a call inside the app gave up")

    with pytest.raises(TimeoutError, match="inside the app"):
        run(RequestTimeout(times_out_itself, 10.0), http_scope())


def test_non_http_scopes_have_no_request_timeout() -> None:
    app = Recorder()
    asyncio.run(RequestTimeout(app, SHORT_S)({"type": "lifespan"}, Exchange().receive, Exchange().send))
    assert app.calls == ["lifespan"]


# BodyTimeout


def test_a_body_that_does_not_arrive_in_time_is_408_and_closes_the_connection() -> None:
    slow = Exchange([b"\0" * 10], complete=False)
    exchange = run(BodyTimeout(reads_the_body, SHORT_S), http_scope(headers={"Content-Length": "100"}), slow)
    assert (exchange.status, exchange.json["code"]) == (408, "request_timeout")
    assert exchange.json["detail"] == "The request body did not arrive within 0.05 s (MNIST_BODY_TIMEOUT_S)."
    assert exchange.headers["connection"] == "close"


def test_once_the_body_is_in_the_body_deadline_no_longer_applies() -> None:
    async def reads_then_works(scope: Scope, receive: Receive, send: Send) -> None:
        while (await receive()).get("more_body"):
            pass
        await asyncio.sleep(4 * SHORT_S)  # the route's work outlasts the body deadline
        await answers_at_once(scope, receive, send)

    exchange = run(
        BodyTimeout(reads_then_works, SHORT_S), http_scope(headers={"Content-Length": "2"}), Exchange([b"a", b"b"])
    )
    assert exchange.status == 204


def test_a_last_body_message_without_more_body_ends_the_body() -> None:
    async def works_after_the_body(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await asyncio.sleep(4 * SHORT_S)
        await answers_at_once(scope, receive, send)

    async def receive() -> Message:
        return {"type": "http.request", "body": b"ab"}  # ASGI: more_body absent means False

    exchange = Exchange()
    timeout = BodyTimeout(works_after_the_body, SHORT_S)
    asyncio.run(timeout(http_scope(headers={"Content-Length": "2"}), receive, exchange.send))
    assert exchange.status == 204


def test_an_answer_before_the_body_is_read_stops_the_body_deadline() -> None:
    async def answers_then_works(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 401, "headers": []})
        await asyncio.sleep(4 * SHORT_S)
        await send({"type": "http.response.body", "body": b""})

    exchange = run(BodyTimeout(answers_then_works, SHORT_S), http_scope(headers={"Content-Length": "9"}))
    assert [m["type"] for m in exchange.sent] == ["http.response.start", "http.response.body"]
    assert exchange.status == 401


@pytest.mark.parametrize("headers", [{}, {"Content-Length": "0"}])
def test_a_request_without_a_body_has_no_body_deadline(headers: dict[str, str]) -> None:
    async def slow_answer(scope: Scope, receive: Receive, send: Send) -> None:
        await asyncio.sleep(4 * SHORT_S)
        await answers_at_once(scope, receive, send)

    assert run(BodyTimeout(slow_answer, SHORT_S), http_scope(headers=headers, method="GET")).status == 204


def test_a_chunked_body_has_a_body_deadline() -> None:
    exchange = run(BodyTimeout(never_answers, SHORT_S), http_scope(headers={"Transfer-Encoding": "chunked"}))
    assert (exchange.status, exchange.json["code"]) == (408, "request_timeout")


def test_the_apps_own_timeout_is_not_taken_for_a_slow_body() -> None:
    async def times_out_itself(scope: Scope, receive: Receive, send: Send) -> None:
        raise TimeoutError("a call inside the app gave up")

    with pytest.raises(TimeoutError, match="inside the app"):
        run(BodyTimeout(times_out_itself, 10.0), http_scope(headers={"Content-Length": "9"}))


def test_non_http_scopes_have_no_body_timeout() -> None:
    app = Recorder()
    asyncio.run(BodyTimeout(app, SHORT_S)({"type": "lifespan"}, Exchange().receive, Exchange().send))
    assert app.calls == ["lifespan"]


# SecurityHeaders


@pytest.mark.parametrize(
    ("path", "policy"),
    [
        ("/", PAGE_POLICY),
        ("/favicon.ico", PAGE_POLICY),
        ("/static/app.js", PAGE_POLICY),
        ("/docs", DOCS_POLICY),
        ("/docs/oauth2-redirect", DOCS_POLICY),
        ("/redoc", DOCS_POLICY),
        ("/models", API_POLICY),
        ("/predict", API_POLICY),
        ("/index.html", API_POLICY),
        ("/v2/models/cnn", API_POLICY),
    ],
)
def test_every_response_gets_the_common_headers_and_its_paths_policy(path: str, policy: str) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"ok"})

    exchange = run(SecurityHeaders(app), http_scope(path, method="GET"))
    assert exchange.headers == {
        "content-type": "text/plain",  # the app's own headers are kept
        "x-content-type-options": "nosniff",
        "referrer-policy": "no-referrer",
        "x-frame-options": "DENY",
        "content-security-policy": policy,
    }
    assert exchange.sent[1] == {"type": "http.response.body", "body": b"ok"}  # bodies pass unchanged


def test_the_policies_are_strict() -> None:
    assert "default-src 'self'" in PAGE_POLICY
    assert "unsafe-inline" not in PAGE_POLICY
    assert API_POLICY == "default-src 'none'; frame-ancestors 'none'"
    assert all("frame-ancestors 'none'" in policy for policy in (PAGE_POLICY, API_POLICY, DOCS_POLICY))


def test_a_response_start_without_headers_gets_them() -> None:
    exchange = run(SecurityHeaders(answers_without_headers), http_scope("/models", method="GET"))
    assert exchange.headers["x-frame-options"] == "DENY"


async def answers_without_headers(scope: Scope, receive: Receive, send: Send) -> None:
    await send({"type": "http.response.start", "status": 204})
    await send({"type": "http.response.body", "body": b""})


def test_non_http_scopes_get_no_headers() -> None:
    app = Recorder()
    asyncio.run(SecurityHeaders(app)({"type": "lifespan"}, Exchange().receive, Exchange().send))
    assert app.calls == ["lifespan"]
