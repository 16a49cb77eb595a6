"""Explanations over the model-server protocols: Open Inference Protocol (V2) and KServe V1 `:explain`."""

from __future__ import annotations

from typing import Annotated, Any

import numpy as np
import numpy.typing as npt
from fastapi import APIRouter, Header, Request, Response
from pydantic import BaseModel, Field

from app import protocol
from app.dataplane import DataPlane
from app.deps import DataPlaneDep
from app.errors import BadSetting, BadTarget, InvalidInferenceRequest
from app.explain import Explanation, Options
from app.protocol import InferenceResponse, OutputTensor
from app.routes.docs import ERRORS
from app.routes.v2 import ERRORS as V2_ERRORS
from app.runtime.registry import LoadedModel
from app.tensors import images_of

router = APIRouter(tags=["explain (model-server protocols)"])
OUTPUT = "explain"


class V1Request(BaseModel):
    """KServe V1: each instance a 28x28 digit (or 28x28x1), white on black, in [0, 1] or 0-255."""

    instances: list[Any] = Field(min_length=1, examples=[[[[0.0] * 28] * 28]])
    parameters: dict[str, Any] = Field(default_factory=dict, description="method, target, steps, patch, stride")


class V1Explanation(BaseModel):
    method: str
    target: int
    baseline: str
    completeness_error: float | None = None
    attribution: list[list[float]] = Field(description="28x28, positive = pushed towards `target`")


class V1Response(BaseModel):
    explanations: list[V1Explanation]


def _int(parameters: dict[str, Any], name: str, default: int) -> int:
    value = parameters.get(name, default)
    if not isinstance(value, int) or isinstance(value, bool):
        raise BadSetting(f"{name} must be an integer, got {str(value)[:20]!r}.")
    return value


def _targets(parameters: dict[str, Any], count: int) -> list[int] | None:
    """`target`: one digit for every image, a list with one per image, or absent (the predicted digits)."""
    value = parameters.get("target")
    if value is None:
        return None
    values = value if isinstance(value, list) else [value] * count
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        raise BadTarget(f"target must be a digit 0-9 or a list of them, got {str(value)[:40]!r}.")
    return list(values)


async def explanations(
    dataplane: DataPlane, model: LoadedModel, images: npt.NDArray[np.float32], parameters: dict[str, Any]
) -> list[Explanation]:
    """The (N, 28, 28) images explained as `parameters` ask."""
    method = parameters.get("method")
    options = Options(_int(parameters, "steps", 32), _int(parameters, "patch", 4), _int(parameters, "stride", 2))
    return await dataplane.explain_images(
        model,
        images,
        method=None if method is None else str(method),
        targets=_targets(parameters, len(images)),
        options=options,
    )


@router.post("/v2/models/{name}/explain", responses=V2_ERRORS)
@router.post("/v2/models/{name}/versions/{version}/explain", responses=V2_ERRORS)
async def explain_v2(
    request: Request,
    dataplane: DataPlaneDep,
    name: str,
    version: str | None = None,
    header_length: Annotated[str | None, Header(alias=protocol.HEADER_LENGTH)] = None,
) -> Response:
    """Attribution maps for a V2 infer body (input `image`, FP32 [N, 28, 28, 1] in [0, 1] or UINT8): output
    `explain`, FP32 [N, 28, 28]. Request `parameters`: method, target (a digit or one per image), steps, patch,
    stride. Binary tensor data is accepted and, with `binary_data_output`, returned."""
    model = dataplane.model(name, version)
    assert model.card is not None
    inference, binary = protocol.split_body(await request.body(), header_length)
    inputs = protocol.input_tensors(inference, binary)
    images = images_of(inputs, max_batch=dataplane.settings.max_batch_images)[..., 0]
    results = await explanations(dataplane, model, images, inference.parameters)
    maps = np.stack([r.attribution for r in results])
    response = InferenceResponse(
        model_name=model.name,
        model_version=model.card.version,
        id=inference.id,
        parameters={"method": results[0].method, "targets": [r.target for r in results]},
        outputs=[OutputTensor(name=OUTPUT, shape=list(maps.shape))],
    )
    as_binary = bool(inference.parameters.get("binary_data_output", False))
    body, json_length = protocol.encode_response(response, {OUTPUT: maps}, {OUTPUT: as_binary})
    if json_length is None:
        return Response(body, media_type="application/json")
    return Response(body, media_type="application/octet-stream", headers={protocol.HEADER_LENGTH: str(json_length)})


def v1_images(instances: list[Any], max_batch: int) -> npt.NDArray[np.float32]:
    """(N, 28, 28) in [0, 1]: each instance 28x28 (or 28x28x1) numbers; one whose maximum is above 1 is read as
    0-255 (so a 0-255 image must have some pixel above 1, which any visible digit has)."""
    if len(instances) > max_batch:
        raise InvalidInferenceRequest(f"{len(instances)} instances; at most {max_batch} per request.")
    try:
        images = np.asarray(instances, dtype=np.float64)
    except (ValueError, TypeError):
        raise InvalidInferenceRequest("Each instance must be a 28x28 array of numbers.") from None
    if images.ndim == 4 and images.shape[-1] == 1:
        images = images[..., 0]
    if images.shape[1:] != (28, 28) or not np.all(np.isfinite(images)) or images.min() < 0 or images.max() > 255:
        raise InvalidInferenceRequest("Each instance must be 28x28 finite values in [0, 1] or 0-255.")
    scale = np.where(images.reshape(len(images), -1).max(axis=1) > 1.0, 255.0, 1.0)
    return (images / scale[:, None, None]).astype(np.float32)


@router.post("/v1/models/{name}:explain", responses=ERRORS)
async def explain_v1(dataplane: DataPlaneDep, name: str, body: V1Request) -> V1Response:
    """KServe V1 explain: `{"instances": [28x28 digits]}`, answered `{"explanations": [...]}`, one per instance.
    `parameters` (optional): method, target, steps, patch, stride, as for /explain."""
    model = dataplane.model(name)
    images = v1_images(body.instances, dataplane.settings.max_batch_images)
    results = await explanations(dataplane, model, images, body.parameters)
    return V1Response(
        explanations=[
            V1Explanation(
                method=r.method,
                target=r.target,
                baseline=r.baseline,
                completeness_error=r.completeness_error,
                attribution=np.round(r.attribution, 5).tolist(),
            )
            for r in results
        ]
    )
