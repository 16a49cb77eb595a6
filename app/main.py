"""The application factory: `uvicorn --factory app.main:create_app`, or `python -m app`."""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.staticfiles import StaticFiles

from app.admission import Budget, DecodePool
from app.cpus import CpuShare, cpu_share
from app.dataplane import DataPlane
from app.grpc_v2 import start_grpc_server
from app.handlers import install_error_handlers
from app.memory import configure_allocator
from app.middleware import ApiKey, BodySizeLimit, BodyTimeout, RequestTimeout, SecurityHeaders
from app.observability import Metrics, RequestObserver
from app.routes import activations, explain, explain_protocols, health, models, pages, predict, read, repository, v2
from app.routes import metrics as metrics_route
from app.routes.docs import COMMON_ERRORS
from app.runtime.registry import Observers, RuntimeConfig, StartupError, load_registry
from app.runtime.watcher import watch_models
from app.settings import Settings
from app.shutdown import on_stop_signal

log = logging.getLogger("app")

DESCRIPTION = """
Handwritten digit recognition with the models of the classic MNIST workshop, served by ONNX Runtime.

Upload any digit image to `POST /predict`; follow the returned `activations_url` to see what a CNN
computes inside. Every error is a 4xx JSON body `{"detail", "code"}`.
"""


def worker_cores(settings: Settings, share: CpuShare) -> int:
    """Each worker's cores: none oversubscribed."""
    return max(1, share.usable // settings.workers)


def runtime_config(settings: Settings, share: CpuShare | None = None) -> RuntimeConfig:
    """How the models run, given the CPUs this container may use (read from the cgroup and affinity by default)."""
    share = share or cpu_share()
    log.info("CPUs: %s", share.describe())
    per_worker = worker_cores(settings, share)
    # A model process pays when the worker has a core for its event loop and one for the model; with one core a
    # worker, the workers themselves keep the cores busy.
    model_process = settings.model_process and per_worker >= 2
    threads = settings.intra_op_threads
    if threads == 0 and model_process:
        threads = max(1, per_worker - 1)  # the worker's event loop keeps a core of its own
    elif threads == 0:
        # Always explicit: ONNX Runtime's own default is the node's cores, whatever the container's quota.
        threads = per_worker
    return RuntimeConfig(
        provider=settings.provider,
        intra_op_threads=threads,
        inter_op_threads=settings.inter_op_threads,
        batching=settings.batching,
        max_batch_size=settings.max_batch_size,
        batch_delay_ms=settings.batch_delay_ms,
        strict_provider=settings.strict_provider,
        model_process=model_process,
    )


def create_service() -> FastAPI:
    """What `python -m app` serves in each worker: the app, with the V2 gRPC service on MNIST_GRPC_PORT beside it."""
    return create_app(serve_grpc=True)


def create_app(settings: Settings | None = None, *, serve_grpc: bool = False) -> FastAPI:
    """A new service; its models load when the lifespan starts, not before. With serve_grpc and a MNIST_GRPC_PORT,
    the V2 gRPC service starts with it, on the same event loop, core and models (app.grpc_v2)."""
    settings = settings or Settings()
    metrics = Metrics()
    observers = Observers(
        inference=metrics.inference_observer,
        batch=metrics.batch_observer,
        serving=metrics.model_serving,
        load=metrics.model_loaded,
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        configure_allocator()
        share = cpu_share()
        try:
            registry = await load_registry(
                settings.models_dir,
                default_model=settings.default_model,
                config=runtime_config(settings, share),
                observers=observers,
            )
        except StartupError as exc:
            log.critical("cannot start: %s", exc)  # the one line that says why, before the server's traceback
            raise
        for name, model in registry.models.items():
            metrics.models_loaded.labels(name).set(1 if model.available else 0)
        app.state.registry = registry
        watcher = (
            asyncio.create_task(watch_models(registry, settings.watch_interval_s)) if settings.watch_models else None
        )
        app.state.draining = False
        on_stop_signal(lambda: setattr(app.state, "draining", True))
        pixels = Budget(
            settings.decode_budget_pixels, settings.admission_wait_s, "decoded pixels", "MNIST_DECODE_BUDGET_PIXELS"
        )
        app.state.decode_pool = decode_pool = DecodePool(pixels, worker_cores(settings, share))
        app.state.dataplane = dataplane = DataPlane(registry, settings, decode_pool)
        try:
            grpc_server = (
                await start_grpc_server(dataplane, metrics, bodies) if serve_grpc and settings.grpc_port else None
            )
        except StartupError as exc:
            log.critical("cannot start: %s", exc)
            await registry.close()
            raise
        log.info("serving %s (default %s)", ", ".join(registry.models), settings.default_model)
        # What survives start-up lives as long as the process: keep the garbage collector from rescanning it on every
        # collection (about 10% of a busy server's time otherwise). Start-up's own garbage is collected first.
        gc.collect()
        gc.freeze()
        yield
        if watcher is not None:
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)
        if grpc_server is not None:
            # HTTP has drained by now (uvicorn's graceful shutdown); calls still in flight get the request timeout.
            await grpc_server.stop(settings.request_timeout_s)
        await registry.close()
        decode_pool.close()

    app = FastAPI(
        title="mnist-serve",
        version="0.1.0",
        description=DESCRIPTION,
        lifespan=lifespan,
        responses=COMMON_ERRORS,
        # FastAPI's OpenTelemetry hooks look up the global providers on every request (~6% of /predict's time, with
        # no provider installed); the service's telemetry is /metrics and its JSON logs.
        telemetry={"tracing": False, "metrics": False, "logs": False},
        # The prediction routes are the app's own, first in line: an included router is resolved anew on every
        # request (~5% of /predict's time).
        routes=predict.router.routes,
    )
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.body_budget = bodies = Budget(
        settings.body_budget_bytes, settings.admission_wait_s, "body bytes", "MNIST_BODY_BUDGET_BYTES"
    )
    install_error_handlers(app)
    # Each add_middleware wraps the ones before it: the observer sees everything, CORS preflights need no key.
    app.add_middleware(RequestTimeout, seconds=settings.request_timeout_s)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_upload_bytes, budget=bodies)
    # Outside the size limit, so that its deadline also covers a body read only to be thrown away (a 503 overloaded).
    app.add_middleware(BodyTimeout, seconds=settings.body_timeout_s)
    if settings.api_key:
        app.add_middleware(ApiKey, key=settings.api_key)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware, allow_origins=settings.cors_origins, allow_methods=["GET", "POST"], allow_headers=["*"]
        )
    app.add_middleware(RequestObserver, metrics=metrics)
    app.add_middleware(SecurityHeaders)  # outermost: on every response, the middleware's own errors included
    for module in (read, activations, explain, explain_protocols, models, health, v2, repository, metrics_route, pages):
        app.include_router(module.router)
    app.mount("/static", StaticFiles(directory=pages.STATIC_DIR), name="static")
    return app
