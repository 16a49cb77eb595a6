"""python -m app: serve with uvicorn on MNIST_HOST:PORT, and V2 gRPC on MNIST_GRPC_PORT, with the settings from the
environment."""

from __future__ import annotations

import math

import uvicorn

from app.connections import uvicorn_options
from app.observability import configure_logging
from app.settings import Settings

# Time to write out a response cut by the request timeout (a 504) once the timeout fires.
RESPONSE_MARGIN_S = 2


def graceful_shutdown_s(settings: Settings) -> int:
    """How long uvicorn lets in-flight requests finish after SIGTERM: the longest a request may take (the request
    timeout answers it with a 504 by then) plus the time to send that answer. deploy/ grace periods build on it."""
    return math.ceil(settings.request_timeout_s) + RESPONSE_MARGIN_S


def main() -> None:
    settings = Settings()
    configure_logging(settings.log_level)
    uvicorn.run(
        "app.main:create_service",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        log_level=settings.log_level,
        log_config=None,  # keep the JSON logging configured above
        access_log=False,  # the service logs each request itself, with its request id
        timeout_graceful_shutdown=graceful_shutdown_s(settings),
        timeout_keep_alive=settings.keep_alive_s,
        forwarded_allow_ips=settings.forwarded_allow_ips,  # proxy_headers is on: X-Forwarded-Proto/-For from these
        **uvicorn_options(),  # header deadline and size limits (app.connections)
    )


if __name__ == "__main__":
    main()
