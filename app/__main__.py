"""python -m app: serve with uvicorn on MNIST_HOST:PORT, with the settings from the environment."""

from __future__ import annotations

import uvicorn

from app.settings import Settings


def main() -> None:
    settings = Settings()
    uvicorn.run(
        "app.main:create_app",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        log_level=settings.log_level,
        timeout_graceful_shutdown=30,
    )


if __name__ == "__main__":
    main()
