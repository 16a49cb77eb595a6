"""GET/POST /explain: attribution maps, which pixels pushed a model towards a digit, from a token or an upload."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request

from app.deps import DataPlaneDep, ModelQuery, base_url, dataplane_of, read_image
from app.explain import MAX_STEPS, Options
from app.routes.activations import Encoding
from app.routes.docs import ERRORS, IMAGE_BODY
from app.schemas import AttributionMap

router = APIRouter(prefix="/explain", tags=["explain"])

MethodQuery = Annotated[
    str | None,
    Query(
        max_length=40,
        description="integrated_gradients (the CNNs' default), occlusion, gradcam (CNNs), exact (linear models'"
        " default); GET /models/{name}: card.explain.methods lists each model's",
    ),
]
TargetQuery = Annotated[int | None, Query(description="the digit to explain (default: the predicted one)")]
StepsQuery = Annotated[int, Query(ge=1, le=MAX_STEPS, description="integrated gradients: steps on the path")]
PatchQuery = Annotated[int, Query(ge=1, le=14, description="occlusion: side of the black square, in pixels")]
StrideQuery = Annotated[int, Query(ge=1, le=14, description="occlusion: step between squares, in pixels")]


@router.get("", responses=ERRORS)
async def read_explanation(
    request: Request,
    dataplane: DataPlaneDep,
    input: Annotated[str, Query(max_length=4096, description="the token from a prediction's explain_url")],
    model: ModelQuery = None,
    method: MethodQuery = None,
    target: TargetQuery = None,
    steps: StepsQuery = 32,
    patch: PatchQuery = 4,
    stride: StrideQuery = 2,
    encoding: Encoding = "json",
) -> AttributionMap:
    """The attribution map of the image a /predict call saw, carried by its token (`explain_url`).

    Positive values pushed the model towards `target`, negative ones away from it.
    """
    return await dataplane.explain(
        input,
        model=model,
        method=method,
        target=target,
        options=Options(steps, patch, stride),
        base_url=base_url(request),
        encoding=encoding,
    )


@router.post("", responses=ERRORS, openapi_extra=IMAGE_BODY)
async def explain_upload(
    request: Request,
    model: ModelQuery = None,
    method: MethodQuery = None,
    target: TargetQuery = None,
    steps: StepsQuery = 32,
    patch: PatchQuery = 4,
    stride: StrideQuery = 2,
    encoding: Encoding = "json",
) -> AttributionMap:
    """The attribution map of an uploaded image, sent as for /predict (same formats, limits and errors)."""
    dataplane, options = dataplane_of(request), Options(steps, patch, stride)
    await dataplane.check_explanation(model, method, target, options)  # before the upload is read
    return await dataplane.explain(
        await read_image(request),
        model=model,
        method=method,
        target=target,
        options=options,
        base_url=base_url(request),
        encoding=encoding,
    )
