"""Prometheus metrics, JSON logs and request ids: one pure ASGI middleware and the collectors it feeds."""

from __future__ import annotations

import contextvars
import json
import logging
import re
import secrets
import time
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

REQUEST_ID_HEADER = b"x-request-id"
VALID_REQUEST_ID = re.compile(r"^[\w.:-]{1,128}$")  # anything else is replaced: it ends up in logs
request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")
access_log = logging.getLogger("app.access")

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class Metrics:
    """The service's collectors, in a registry of its own (so several apps can live in one process)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("mnist_http_requests", "HTTP requests", ["method", "route", "status"], registry=r)
        self.latency = Histogram(
            "mnist_http_request_duration_seconds",
            "HTTP latency",
            ["method", "route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.rpcs = Counter("mnist_grpc_requests", "gRPC requests", ["method", "code"], registry=r)
        self.rpc_latency = Histogram(
            "mnist_grpc_request_duration_seconds", "gRPC latency", ["method"], buckets=LATENCY_BUCKETS, registry=r
        )
        self.images = Counter("mnist_inference_images", "Images through a model", ["model"], registry=r)
        self.inference = Histogram(
            "mnist_inference_duration_seconds", "ONNX Runtime call time", ["model"], buckets=LATENCY_BUCKETS, registry=r
        )
        self.batch_size = Histogram(
            "mnist_batch_size", "Images per model call", ["model"], buckets=BATCH_BUCKETS, registry=r
        )
        self.queue_wait = Histogram(
            "mnist_batch_queue_wait_seconds", "Wait before a batch ran", ["model"], buckets=LATENCY_BUCKETS, registry=r
        )
        self.models_loaded = Gauge("mnist_model_loaded", "1 when the model serves", ["model"], registry=r)
        self.model_info = Gauge(
            "mnist_model_info",
            "1 for the version serving: card version, model file SHA-256 prefix",
            ["model", "version", "revision"],
            registry=r,
        )
        self.model_loads = Counter(
            "mnist_model_loads", "Model loads, at start-up and since", ["model", "result"], registry=r
        )
        self._serving: dict[str, tuple[str, str]] = {}  # model -> its model_info labels
        # labels() takes a lock and builds a key on every call; a request's children are looked up once instead.
        self._request_children: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}

    def observe_request(self, method: str, route: str, status: int, elapsed_s: float) -> None:
        children = self._request_children.get((method, route, status))
        if children is None:
            children = (self.requests.labels(method, route, str(status)), self.latency.labels(method, route))
            self._request_children[method, route, status] = children
        children[0].inc()
        children[1].observe(elapsed_s)

    def observe_rpc(self, method: str, code: str, elapsed_s: float) -> None:
        """One gRPC call: its method (ModelInfer...), its status code's name (OK, INVALID_ARGUMENT...) and time."""
        self.rpcs.labels(method, code).inc()
        self.rpc_latency.labels(method).observe(elapsed_s)

    def model_serving(self, model: str, version: str | None, revision: str | None) -> None:
        """The version serving now (None: none): mnist_model_loaded and mnist_model_info follow it."""
        old = self._serving.pop(model, None)
        if old is not None:
            self.model_info.remove(model, *old)
        self.models_loaded.labels(model).set(0 if version is None else 1)
        if version is not None:
            self._serving[model] = (version, revision or "")
            self.model_info.labels(model, version, revision or "").set(1)

    def model_loaded(self, model: str, loaded: bool) -> None:
        self.model_loads.labels(model, "loaded" if loaded else "failed").inc()

    def batch_observer(self, model: str) -> Callable[[int, float], None]:
        size, wait = self.batch_size.labels(model), self.queue_wait.labels(model)

        def observe(images: int, waited_s: float) -> None:
            size.observe(images)
            wait.observe(waited_s)

        return observe

    def inference_observer(self, model: str) -> Callable[[int, float], None]:
        images, seconds = self.images.labels(model), self.inference.labels(model)

        def observe(count: int, elapsed_s: float) -> None:
            images.inc(count)
            seconds.observe(elapsed_s)

        return observe


class JsonFormatter(logging.Formatter):
    """One JSON object per line, with the request id of the request being served."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": self.formatTime(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": request_id.get(),
        }
        entry.update(getattr(record, "fields", {}))
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def configure_logging(level: str) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


class RequestObserver:
    """Gives every request an id (X-Request-ID honoured and returned), counts and times it, and logs it."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = next((value for name, value in scope["headers"] if name == REQUEST_ID_HEADER), b"").decode("latin-1")
        rid = given if VALID_REQUEST_ID.match(given) else secrets.token_hex(16)
        token = request_id.set(rid)
        status = 500
        start = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), (REQUEST_ID_HEADER, rid.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - start
            route = getattr(scope.get("route"), "path", "unmatched")
            self.metrics.observe_request(scope["method"], route, status, elapsed)
            if access_log.isEnabledFor(logging.INFO):
                fields = {
                    "method": scope["method"],
                    "path": scope["path"],
                    "status": status,
                    "ms": round(elapsed * 1000, 2),
                }
                access_log.info("request", extra={"fields": fields})
            request_id.reset(token)
