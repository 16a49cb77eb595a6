"""python -m app.healthcheck: exit 0 when the local service is ready. For containers, which have no curl."""

from __future__ import annotations

import sys
import urllib.request

from app.settings import Settings


def main() -> int:
    url = f"http://127.0.0.1:{Settings().port}/health/ready"
    try:
        with urllib.request.urlopen(url, timeout=3) as response:
            return 0 if response.status == 200 else 1
    except OSError as exc:
        sys.stderr.write(f"{url}: {exc}\n")
        return 1


if __name__ == "__main__":
    sys.exit(main())
