"""python -m app.healthcheck: exit 0 when the local service is ready. For containers, which have no curl.

Runs every 10 s in each container, so it costs as little as a Python process can: a plain socket and one HTTP/1.0
request, no urllib (its imports doubled the cost), no pydantic (the port is read as app.settings reads it, MNIST_PORT
then PORT).
"""

from __future__ import annotations

import os
import socket
import sys

DEFAULT_PORT = "8000"
TIMEOUT_S = 3


def port() -> int:
    return int(os.environ.get("MNIST_PORT") or os.environ.get("PORT") or DEFAULT_PORT)


def ready_status(port: int) -> int:
    """The HTTP status of GET /health/ready on 127.0.0.1."""
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT_S) as connection:
        connection.sendall(b"GET /health/ready HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        status_line = connection.makefile("rb").readline(256)  # HTTP/1.1 200 OK
    return int(status_line.split()[1])


def main() -> int:
    try:
        return 0 if ready_status(port()) == 200 else 1
    except (OSError, ValueError, IndexError) as exc:
        sys.stderr.write(f"127.0.0.1:{port()}/health/ready: {exc!r}\n")
        return 1


if __name__ == "__main__":
    sys.exit(main())
