"""Slow and abusive clients against the real process (`python -m app` on 127.0.0.1, short timeouts): slow headers
and slow bodies are cut off with a JSON 408 while other clients are served; oversized heads are refused with 431,
a body longer than its Content-Length with 400, and each of those connections is closed."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from benchmarks.bench import serve
from benchmarks.slowloris import trickle
from tests.conftest import SERVICE, free_port, service_env
from tests.helpers import encode
from training.data import Mnist

# Between two of the slow clients' one-second ticks: the cut-off never meets a byte on its way (which could reset
# the connection before the client reads the 408).
HEADER_TIMEOUT_S = 2.5
BODY_TIMEOUT_S = 2.5
SLOW_CLIENTS = 200  # half trickle their headers, half their body, one byte a second
GIVE_UP_S = 15.0  # a slow client not cut off by then counts as a failure (and the test ends anyway)


@pytest.fixture(scope="module")
def port() -> Iterator[int]:
    port = free_port()
    env = {
        **service_env(port),
        "MNIST_HEADER_TIMEOUT_S": str(HEADER_TIMEOUT_S),
        "MNIST_BODY_TIMEOUT_S": str(BODY_TIMEOUT_S),
        "MNIST_MAX_HEADER_BYTES": "4096",
    }
    with serve(SERVICE, f"http://127.0.0.1:{port}/health/ready", env):
        yield port


def exchange(port: int, data: bytes, timeout_s: float = 10.0) -> bytes:
    """Everything the server sends back for `data` until it closes the connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as connection:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            connection.sendall(data)  # refused before the client finished sending: its answer is still to be read
        chunks = []
        while chunk := connection.recv(65536):
            chunks.append(chunk)
        return b"".join(chunks)


def responses(raw: bytes) -> list[tuple[int, dict[str, str]]]:
    """(status, JSON body) of each response in a stream of HTTP/1.1 responses with Content-Length."""
    found = []
    while raw:
        head, _, rest = raw.partition(b"\r\n\r\n")
        lines = head.decode().split("\r\n")
        headers = dict(line.lower().split(": ", 1) for line in lines[1:])
        length = int(headers["content-length"])
        found.append((int(lines[0].split()[1]), json.loads(rest[:length])))
        raw = rest[length:]
    return found


def predict(port: int, image: bytes) -> int:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/predict", data=image, headers={"Content-Type": "image/png"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return int(response.status)


def test_slow_clients_are_cut_off_while_others_are_served(port: int, mnist_sample: Mnist) -> None:
    image = encode(mnist_sample.test.images[0])
    slow_head = b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/png\r\nX-Padding: " + b"a" * 60
    slow_body_head = (
        b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/png\r\nContent-Length: 60\r\n\r\n"
    )

    async def scenario() -> tuple[list[bytes | None], list[int]]:
        slow = [
            trickle(port, b"", slow_head) if i % 2 else trickle(port, slow_body_head, b"\x89PNG" + b"\0" * 56)
            for i in range(SLOW_CLIENTS)
        ]
        slow_task = asyncio.gather(*slow)
        await asyncio.sleep(0.5)  # every slow connection is open
        with ThreadPoolExecutor(4) as pool:
            normal = await asyncio.gather(
                *(asyncio.get_running_loop().run_in_executor(pool, predict, port, image) for _ in range(32))
            )
        return await asyncio.wait_for(slow_task, GIVE_UP_S), normal

    answers, normal = asyncio.run(scenario())
    assert normal == [200] * 32
    assert None not in answers, "some slow connections were never closed"
    refusals = [responses(answer) for answer in answers if answer]  # b"": reset as it was cut off, unanswered
    assert len(refusals) >= SLOW_CLIENTS * 0.9
    assert all(len(r) == 1 and r[0][0] == 408 and r[0][1]["code"] == "request_timeout" for r in refusals)
    details = {r[0][1]["detail"].split(" did not")[0] for r in refusals}
    assert details == {"The request's headers", "The request body"}


def test_a_silent_connection_is_closed_after_the_header_timeout(port: int) -> None:
    assert exchange(port, b"") == b""


@pytest.mark.parametrize(
    ("name", "head"),
    [
        ("one large header", b"GET /health/live HTTP/1.1\r\nX-Big: " + b"a" * 5000 + b"\r\n\r\n"),
        ("a head that never ends", b"GET /health/live HTTP/1.1\r\nX-Big: " + b"a" * 8000),
        ("a long URL", b"GET /health/live?" + b"q" * 5000 + b" HTTP/1.1\r\n\r\n"),
        ("too many headers", b"GET /health/live HTTP/1.1\r\n" + b"X-A: 1\r\n" * 101 + b"\r\n"),
    ],
)
def test_oversized_heads_are_refused_with_431(port: int, name: str, head: bytes) -> None:
    [(status, body)] = responses(exchange(port, head))
    assert status == 431, name
    assert body["code"] == "headers_too_large"
    assert "MNIST_MAX_HEADER_BYTES" in body["detail"] or "more than 100 headers" in body["detail"]


def test_headers_within_the_limits_are_served(port: int) -> None:
    head = b"GET /health/live HTTP/1.1\r\nConnection: close\r\n" + b"X-A: 1\r\n" * 98 + b"X-B: " + b"b" * 2000
    [(status, body)] = responses(exchange(port, head + b"\r\n\r\n"))
    assert (status, body["status"]) == (200, "alive")  # 100 header lines, 2.9 kB: within both limits


def test_a_body_longer_than_its_content_length_is_refused(port: int) -> None:
    request = b"POST /predict HTTP/1.1\r\nContent-Type: image/png\r\nContent-Length: 5\r\n\r\nnotpng and more bytes"
    *first, (status, body) = responses(exchange(port, request))  # the connection is closed after the refusal
    assert [s for s, _ in first] in ([], [415])  # the declared 5 bytes may be answered first, as what they are
    assert status == 400  # the rest is no request
    assert body["code"] == "bad_request"
    assert "not valid HTTP/1.1" in body["detail"]
