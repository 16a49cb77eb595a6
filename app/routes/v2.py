"""The Open Inference Protocol (KServe V2) over REST: parses and renders; app.dataplane answers, as it does for gRPC."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Request, Response

from app import protocol
from app.dataplane import PLATFORM, SERVER_NAME, SERVER_VERSION
from app.deps import DataPlaneDep, RegistryDep
from app.protocol import ErrorResponse, InferenceResponse, MetadataTensor, ModelMetadata, OutputTensor, ServerMetadata
from app.routes.health import takes_work

V2_ERROR = {"model": ErrorResponse, "description": 'Protocol error: {"error": message}'}
ERRORS: dict[int | str, dict[str, object]] = dict.fromkeys((400, 404, 413, 422, 501, 503, 504), V2_ERROR)
router = APIRouter(prefix="/v2", tags=["v2 (Open Inference Protocol)"], responses=ERRORS)


@router.get("")
async def server_metadata() -> ServerMetadata:
    """Server name, version and protocol extensions."""
    return ServerMetadata(
        name=SERVER_NAME, version=SERVER_VERSION, extensions=["binary_tensor_data", "model_repository"]
    )


@router.get("/health/live")
async def server_live() -> dict[str, bool]:
    return {"live": True}


@router.get("/health/ready")
async def server_ready(registry: RegistryDep, request: Request, response: Response) -> dict[str, bool]:
    ready = takes_work(request, registry)
    response.status_code = 200 if ready else 503
    return {"ready": ready}


@router.get("/models/{name}")
@router.get("/models/{name}/versions/{version}")
async def model_metadata(dataplane: DataPlaneDep, name: str, version: str | None = None) -> ModelMetadata:
    """Inputs and outputs of a model; -1 marks the batch dimension."""
    card = dataplane.model(name, version).card
    assert card is not None
    return ModelMetadata(
        name=card.name,
        versions=[card.version],
        platform=PLATFORM,
        inputs=[MetadataTensor(name=card.input.name, datatype=card.input.datatype, shape=card.input.shape)],
        outputs=[MetadataTensor(name=o.name, datatype=o.datatype, shape=o.shape) for o in card.outputs],
    )


@router.get("/models/{name}/ready")
@router.get("/models/{name}/versions/{version}/ready")
async def model_ready(dataplane: DataPlaneDep, name: str, version: str | None = None) -> dict[str, object]:
    model = dataplane.model(name, version)
    return {"name": model.name, "ready": model.available}


@router.post("/models/{name}/infer")
@router.post("/models/{name}/versions/{version}/infer")
async def infer(
    request: Request,
    dataplane: DataPlaneDep,
    name: str,
    version: str | None = None,
    header_length: Annotated[str | None, Header(alias=protocol.HEADER_LENGTH)] = None,
) -> Response:
    """Run the model on an `image` tensor, FP32 [N, 28, 28, 1] in [0, 1] or UINT8 in [0, 255].

    Outputs: `logits` (raw), `probabilities` (calibrated), `digit_score` ([N, 1]: below the card's
    detector threshold the image is not a digit) and the model's activation layers; each as JSON or, with
    `binary_data`, as raw little-endian bytes after the JSON header (binary tensor data extension).
    """
    model = dataplane.model(name, version)
    assert model.card is not None
    inference, binary = protocol.split_body(await request.body(), header_length)
    wanted = dict(protocol.requested_outputs(inference, [o.name for o in model.card.outputs]))
    result = await dataplane.infer_tensors(
        model=name, version=version, inputs=protocol.input_tensors(inference, binary), outputs=list(wanted)
    )
    response = InferenceResponse(
        model_name=result.model,
        model_version=result.version,
        id=inference.id,
        outputs=[OutputTensor(name=n, shape=list(array.shape)) for n, array in result.outputs.items()],
    )
    body, json_length = protocol.encode_response(response, result.outputs, wanted)
    if json_length is None:
        return Response(body, media_type="application/json")
    headers = {protocol.HEADER_LENGTH: str(json_length)}
    return Response(body, media_type="application/octet-stream", headers=headers)
