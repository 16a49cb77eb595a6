"""python -m app.healthcheck: exit 0 when the local service is ready. For containers, which have no curl.

Runs every 10 s in each container, so it imports nothing but the standard library (no pydantic: the port is read as
app.settings reads it, MNIST_PORT then PORT).
"""

from __future__ import annotations

import os
import sys
import urllib.request

DEFAULT_PORT = "8000"


def ready_url() -> str:
    port = os.environ.get("MNIST_PORT") or os.environ.get("PORT") or DEFAULT_PORT
    return f"http://127.0.0.1:{port}/health/ready"


def main() -> int:
    url = ready_url()
    try:
        with urllib.request.urlopen(url, timeout=3) as response:
            return 0 if response.status == 200 else 1
    except OSError as exc:
        sys.stderr.write(f"{url}: {exc}\n")
        return 1


if __name__ == "__main__":
    sys.exit(main())
