"""python -m app: serve with uvicorn on MNIST_HOST:PORT, with the settings from the environment."""

from __future__ import annotations

import uvicorn

from app.connections import uvicorn_options
from app.observability import configure_logging
from app.settings import Settings


def main() -> None:
    settings = Settings()
    configure_logging(settings.log_level)
    uvicorn.run(
        "app.main:create_app",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        log_level=settings.log_level,
        log_config=None,  # keep the JSON logging configured above
        access_log=False,  # the service logs each request itself, with its request id
        timeout_graceful_shutdown=30,
        **uvicorn_options(),  # header deadline and size limits (app.connections)
    )


if __name__ == "__main__":
    main()
