"""The application factory: `uvicorn --factory app.main:create_app`, or `python -m app`."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio.to_thread
from fastapi import FastAPI

from app.handlers import install_error_handlers
from app.middleware import BodySizeLimit
from app.routes import activations, health, models, predict
from app.runtime.registry import load_registry
from app.settings import Settings

log = logging.getLogger("app")

DESCRIPTION = """
Handwritten digit recognition with the models of the classic MNIST workshop, served by ONNX Runtime.

Upload any digit image to `POST /predict`; follow the returned `activations_url` to see what a CNN
computes inside. Every error is a 4xx JSON body `{"detail", "code"}`.
"""


def create_app(settings: Settings | None = None) -> FastAPI:
    """A new service; its models load when the lifespan starts, not before."""
    settings = settings or Settings()
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.registry = await anyio.to_thread.run_sync(
            lambda: load_registry(
                settings.models_dir,
                default_model=settings.default_model,
                provider=settings.provider,
                intra_op_threads=settings.intra_op_threads,
                inter_op_threads=settings.inter_op_threads,
            )
        )
        log.info("serving %s (default %s)", ", ".join(app.state.registry.models), settings.default_model)
        yield

    app = FastAPI(title="mnist-serve", version="0.1.0", description=DESCRIPTION, lifespan=lifespan)
    app.state.settings = settings
    install_error_handlers(app)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_upload_bytes)
    for module in (predict, activations, models, health):
        app.include_router(module.router)
    return app
