"""The body-size limit as a real client meets it: over a socket to the running service, streamed or declared.

The in-process client reads a whole body into one message, so only a real connection shows that a body is counted
as it streams in and that a declared length over the limit is refused before any of it is sent.
"""

from __future__ import annotations

import json
import select
import socket

LIMIT = 10_000_000  # the service's default MNIST_MAX_UPLOAD_BYTES
CHUNK = 64 * 1024
SOCKET_TIMEOUT_S = 10.0


def _connect(live_server: str) -> socket.socket:
    host, port = live_server.split(":")
    return socket.create_connection((host, int(port)), timeout=SOCKET_TIMEOUT_S)


def _read_response(connection: socket.socket) -> tuple[int, dict]:
    data = b""
    while b"\r\n\r\n" not in data or len(data.split(b"\r\n\r\n", 1)[1]) < _content_length(data):
        more = connection.recv(65536)
        if not more:
            break
        data += more
    head, body = data.split(b"\r\n\r\n", 1)
    return int(head.split()[1]), json.loads(body)


def _content_length(data: bytes) -> int:
    for line in data.split(b"\r\n\r\n", 1)[0].split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    return 0


def test_a_streamed_body_is_counted_as_a_whole_and_cut_off_past_the_limit(live_server: str) -> None:
    with _connect(live_server) as connection:
        connection.sendall(
            b"POST /predict HTTP/1.1\r\nHost: test\r\nContent-Type: image/png\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        sent, answered = 0, False
        while sent < 3 * LIMIT and not answered:  # each chunk is far under the limit; their sum is not
            try:
                connection.sendall(b"%x\r\n%s\r\n" % (CHUNK, b"\0" * CHUNK))
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += CHUNK
            answered = bool(select.select([connection], [], [], 0)[0])
        status, body = _read_response(connection)
    assert (status, body["code"]) == (413, "payload_too_large")
    # Refused while the body streamed in, not after all of it: what was sent past the limit is what the two sockets'
    # buffers held (a few MB on loopback) when the answer came.
    assert sent < 2 * LIMIT


def test_a_declared_length_over_the_limit_is_refused_before_the_body_is_sent(live_server: str) -> None:
    with _connect(live_server) as connection:
        connection.sendall(
            b"POST /predict HTTP/1.1\r\nHost: test\r\nContent-Type: image/png\r\n"
            b"Content-Length: %d\r\n\r\n" % (2 * LIMIT)
        )
        status, body = _read_response(connection)  # no byte of the body was sent: only the header can say
    assert (status, body["code"]) == (413, "payload_too_large")
    assert "20.0 MB" in body["detail"]
