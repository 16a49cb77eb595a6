"""The Open Inference Protocol over gRPC: `inference.GRPCInferenceService`, as Triton and KServe serve it, so their
clients (tritonclient.grpc) work unchanged. It parses the messages, calls app.dataplane, and renders; one wrapper
around every RPC does what HTTP's middleware does (API key, request id, timeout, metrics, access log) and maps the
core's error codes to gRPC statuses through GRPC_STATUS, the one table of them.

Started by the app's lifespan in every worker (`python -m app`), on the worker's event loop, with the same registry,
batcher and limits as HTTP. With several workers, each binds MNIST_GRPC_PORT with SO_REUSEPORT and the kernel spreads
new connections between them (a gRPC connection is long-lived: one client's calls stay on one worker).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hmac
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import grpc
import numpy as np

from app.admission import SMALL_BODY, Budget
from app.dataplane import PLATFORM, SERVER_NAME, SERVER_VERSION, DataPlane
from app.errors import (
    InvalidInferenceRequest,
    ModelUnavailable,
    ServiceError,
    Unauthorized,
    UnknownModel,
)
from app.observability import VALID_REQUEST_ID, Metrics, access_log, request_id
from app.protos import grpc_predict_v2_pb2 as pb
from app.protos.grpc_predict_v2_pb2_grpc import GRPCInferenceServiceServicer, add_GRPCInferenceServiceServicer_to_server
from app.runtime.registry import StartupError
from app.settings import Settings
from app.tensors import TensorInput, raw_values, refuse_extensions

log = logging.getLogger(__name__)
Status = grpc.StatusCode

# Every ServiceError code's gRPC status (tests/app/test_errors.py checks that each code has a row), as Triton and
# MLServer map theirs: what the client must change is INVALID_ARGUMENT, what may pass if retried is UNAVAILABLE.
GRPC_STATUS: dict[str, grpc.StatusCode] = {
    "bad_request": Status.INVALID_ARGUMENT,
    "empty_body": Status.INVALID_ARGUMENT,
    "missing_file": Status.INVALID_ARGUMENT,
    "too_many_files": Status.INVALID_ARGUMENT,
    "malformed_form": Status.INVALID_ARGUMENT,
    "truncated_image": Status.INVALID_ARGUMENT,
    "bad_token": Status.INVALID_ARGUMENT,
    "invalid_inference_request": Status.INVALID_ARGUMENT,
    "unsupported_media_type": Status.INVALID_ARGUMENT,
    "not_an_image": Status.INVALID_ARGUMENT,
    "unsupported_format": Status.INVALID_ARGUMENT,
    "blank_image": Status.INVALID_ARGUMENT,
    "no_digits": Status.INVALID_ARGUMENT,
    "too_many_digits": Status.INVALID_ARGUMENT,
    "unauthorized": Status.UNAUTHENTICATED,
    "unknown_model": Status.NOT_FOUND,
    "unknown_layer": Status.NOT_FOUND,
    "no_templates": Status.NOT_FOUND,
    "unknown_method": Status.NOT_FOUND,
    "bad_target": Status.INVALID_ARGUMENT,
    "bad_setting": Status.INVALID_ARGUMENT,
    "payload_too_large": Status.RESOURCE_EXHAUSTED,
    "image_too_large": Status.RESOURCE_EXHAUSTED,
    "request_timeout": Status.DEADLINE_EXCEEDED,
    "timeout": Status.DEADLINE_EXCEEDED,
    "headers_too_large": Status.RESOURCE_EXHAUSTED,
    "model_unavailable": Status.UNAVAILABLE,
    "model_load_failed": Status.INVALID_ARGUMENT,  # as Triton answers a load that fails
    "default_model_required": Status.FAILED_PRECONDITION,
    "overloaded": Status.UNAVAILABLE,
    "unimplemented": Status.UNIMPLEMENTED,
}
OPEN_METHODS = frozenset({"ServerLive", "ServerReady"})  # as /v2/health/* over HTTP: no API key needed
REQUEST_ID_KEY = "x-request-id"
CONTENTS_FIELD = {"FP32": "fp32_contents", "UINT8": "uint_contents"}  # where `contents` holds each datatype
Response = TypeVar("Response")
Handler = Callable[[Any, Any, grpc.aio.ServicerContext], Awaitable[Response]]


def grpc_status(error: ServiceError) -> grpc.StatusCode:
    """The error's gRPC status; a code without a row is the service's bug, answered as one (INTERNAL)."""
    return GRPC_STATUS.get(error.code, Status.INTERNAL)


def rpc(handler: Handler[Response]) -> Handler[Response]:
    """The RPC guarded as every HTTP request is: key, request id (echoed in the trailing metadata), timeout, errors
    as statuses with the message, one metric and one access-log line."""
    method = handler.__name__

    @functools.wraps(handler)
    async def guarded(self: InferenceServicer, request: Any, context: grpc.aio.ServicerContext) -> Response:
        metadata = dict(context.invocation_metadata() or ())
        given = str(metadata.get(REQUEST_ID_KEY, ""))
        rid = given if VALID_REQUEST_ID.match(given) else secrets.token_hex(16)
        token, start = request_id.set(rid), time.perf_counter()
        code, detail = Status.CANCELLED, ""  # unless it ends otherwise: the client went away
        try:
            self.authorise(method, metadata)
            async with asyncio.timeout(self.settings.request_timeout_s):
                response = await handler(self, request, context)
            code = Status.OK
        except ServiceError as error:
            code, detail = grpc_status(error), error.detail
        except TimeoutError:
            code, detail = Status.DEADLINE_EXCEEDED, f"No answer within {self.settings.request_timeout_s:g} s."
        except Exception:
            log.exception("unhandled error in %s", method)  # a bug: the client sees no trace or internal paths
            code, detail = Status.INTERNAL, "Internal server error."
        finally:
            self.observe(method, code, time.perf_counter() - start)
            request_id.reset(token)
        trailer = ((REQUEST_ID_KEY, rid),)
        if code is not Status.OK:
            await context.abort(code, detail, trailing_metadata=trailer)
        context.set_trailing_metadata(trailer)
        return response

    return guarded


class InferenceServicer(GRPCInferenceServiceServicer):  # type: ignore[misc]
    def __init__(self, dataplane: DataPlane, metrics: Metrics, bodies: Budget) -> None:
        self.dataplane = dataplane
        self.settings = dataplane.settings
        self.metrics = metrics
        self.bodies = bodies
        self.key = dataplane.settings.api_key.encode()

    def authorise(self, method: str, metadata: dict[str, Any]) -> None:
        """Unauthorized unless the key is off, the method is open, or the metadata carries the key."""
        if not self.key or method in OPEN_METHODS:
            return
        given = str(metadata.get("x-api-key") or str(metadata.get("authorization", "")).removeprefix("Bearer "))
        if not hmac.compare_digest(given.encode(), self.key):
            raise Unauthorized("This service needs an API key: send it as metadata x-api-key or authorization: Bearer.")

    def observe(self, method: str, code: grpc.StatusCode, elapsed_s: float) -> None:
        self.metrics.observe_rpc(method, code.name, elapsed_s)
        if access_log.isEnabledFor(logging.INFO):
            fields = {"protocol": "grpc", "method": method, "status": code.name, "ms": round(elapsed_s * 1000, 2)}
            access_log.info("request", extra={"fields": fields})

    @rpc
    async def ServerLive(self, request: pb.ServerLiveRequest, context: Any) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    @rpc
    async def ServerReady(self, request: pb.ServerReadyRequest, context: Any) -> pb.ServerReadyResponse:
        registry = self.dataplane.registry
        return pb.ServerReadyResponse(ready=registry.models[registry.default_model].available)

    @rpc
    async def ModelReady(self, request: pb.ModelReadyRequest, context: Any) -> pb.ModelReadyResponse:
        # As Triton: a model that does not exist, or does not serve, is not ready; no error.
        try:
            ready = bool(request.name) and self.dataplane.model(request.name, request.version).available
        except (UnknownModel, ModelUnavailable):
            ready = False
        return pb.ModelReadyResponse(ready=ready)

    @rpc
    async def ServerMetadata(self, request: pb.ServerMetadataRequest, context: Any) -> pb.ServerMetadataResponse:
        return pb.ServerMetadataResponse(name=SERVER_NAME, version=SERVER_VERSION, extensions=["model_repository"])

    @rpc
    async def ModelMetadata(self, request: pb.ModelMetadataRequest, context: Any) -> pb.ModelMetadataResponse:
        card = self.dataplane.model(required_name(request.name), request.version).card
        assert card is not None
        tensor = pb.ModelMetadataResponse.TensorMetadata
        return pb.ModelMetadataResponse(
            name=card.name,
            versions=[card.version],
            platform=PLATFORM,
            inputs=[tensor(name=card.input.name, datatype=card.input.datatype, shape=card.input.shape)],
            outputs=[tensor(name=o.name, datatype=o.datatype, shape=o.shape) for o in card.outputs],
        )

    @rpc
    async def ModelInfer(self, request: pb.ModelInferRequest, context: Any) -> pb.ModelInferResponse:
        raw = bool(request.raw_input_contents)
        for tensor in (*request.inputs, *request.outputs):
            refuse_extensions(tensor.parameters)
        # gRPC reads a message whole before the call starts (at most MNIST_MAX_UPLOAD_BYTES); from here on it is
        # held against the same budget as HTTP bodies, so a burst of large calls waits, then gets `overloaded`.
        size = request.ByteSize()
        async with self.bodies.hold(size) if size > SMALL_BODY else contextlib.nullcontext():
            result = await self.dataplane.infer_tensors(
                model=required_name(request.model_name),
                version=request.model_version,
                inputs=input_tensors(request),
                outputs=[output.name for output in request.outputs] or None,
            )
        response = pb.ModelInferResponse(model_name=result.model, model_version=result.version, id=request.id)
        for name, array in result.outputs.items():
            tensor = response.outputs.add(name=name, datatype="FP32", shape=array.shape)
            if raw:  # answered in the form it was asked in
                response.raw_output_contents.append(np.ascontiguousarray(array, dtype="<f4").tobytes())
            else:
                tensor.contents.fp32_contents.extend(array.ravel().tolist())
        return response

    @rpc
    async def RepositoryIndex(self, request: pb.RepositoryIndexRequest, context: Any) -> pb.RepositoryIndexResponse:
        states = await self.dataplane.registry.index(ready_only=request.ready)
        index = pb.RepositoryIndexResponse.ModelIndex
        return pb.RepositoryIndexResponse(
            models=[index(name=s.name, version=s.version or "", state=s.state, reason=s.reason) for s in states]
        )

    @rpc
    async def RepositoryModelLoad(
        self, request: pb.RepositoryModelLoadRequest, context: Any
    ) -> pb.RepositoryModelLoadResponse:
        if request.parameters:  # as over REST: the folder is what loads, no config or file overrides
            raise InvalidInferenceRequest(
                f"load parameters {sorted(request.parameters)} are not supported: the model is read from its folder"
            )
        await self.dataplane.registry.load(required_name(request.model_name))
        return pb.RepositoryModelLoadResponse()

    @rpc
    async def RepositoryModelUnload(
        self, request: pb.RepositoryModelUnloadRequest, context: Any
    ) -> pb.RepositoryModelUnloadResponse:
        await self.dataplane.registry.unload(required_name(request.model_name))
        return pb.RepositoryModelUnloadResponse()


def required_name(name: str) -> str:
    if not name:
        raise InvalidInferenceRequest("The request names no model.")
    return name


def input_tensors(request: pb.ModelInferRequest) -> Sequence[TensorInput]:
    """The inputs with their values: from raw_input_contents, one buffer per input in order, or from `contents`."""
    raw = request.raw_input_contents
    if raw and len(raw) != len(request.inputs):
        raise InvalidInferenceRequest(f"raw_input_contents has {len(raw)} buffers for {len(request.inputs)} inputs.")
    return [
        TensorInput(t.name, t.datatype, tuple(t.shape), raw_values(raw[i], t.datatype) if raw else contents_of(t))
        for i, t in enumerate(request.inputs)
    ]


def contents_of(tensor: pb.ModelInferRequest.InferInputTensor) -> np.ndarray | None:
    """The values in the `contents` field of the tensor's datatype (None for a datatype not accepted)."""
    field = CONTENTS_FIELD.get(tensor.datatype)
    if field is None:
        return None
    return np.asarray(getattr(tensor.contents, field), dtype=np.float32 if field == "fp32_contents" else np.int64)


def server_options(settings: Settings) -> list[tuple[str, int]]:
    return [
        ("grpc.max_receive_message_length", settings.max_upload_bytes),  # larger: RESOURCE_EXHAUSTED, unread
        ("grpc.max_send_message_length", -1),  # activations of a full batch are ~6 MB
        # Several workers share the port; a single one refuses a port another process holds, as HTTP does.
        ("grpc.so_reuseport", 1 if settings.workers > 1 else 0),
    ]


def listen_address(settings: Settings) -> str:
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    return f"{host}:{settings.grpc_port}"


async def start_grpc_server(dataplane: DataPlane, metrics: Metrics, bodies: Budget) -> grpc.aio.Server:
    """The gRPC service, listening on MNIST_HOST:MNIST_GRPC_PORT; StartupError when the port cannot be bound.
    `bodies` is the worker's budget of request bytes in flight, shared with HTTP."""
    settings = dataplane.settings
    server = grpc.aio.server(options=server_options(settings))
    add_GRPCInferenceServiceServicer_to_server(InferenceServicer(dataplane, metrics, bodies), server)
    try:
        server.add_insecure_port(listen_address(settings))
    except RuntimeError as exc:
        raise StartupError(
            f"cannot serve gRPC on {listen_address(settings)} ({exc}): another process holds the port? Set"
            " MNIST_GRPC_PORT to a free one, or 0 for no gRPC"
        ) from exc
    await server.start()
    log.info("V2 gRPC on %s", listen_address(settings))
    return server
