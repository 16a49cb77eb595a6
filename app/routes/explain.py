"""GET/POST /explain: attribution maps, which pixels pushed a model towards a digit, from a token or an upload."""

from __future__ import annotations

import base64
from functools import partial
from typing import Annotated

import anyio
import anyio.to_thread
import numpy as np
from fastapi import APIRouter, Query, Request

from app.deps import ModelQuery, RegistryDep, SettingsDep, prepare_digit, read_image
from app.explain import MAX_STEPS, Explanation, Options, check_target, explain, offered_methods, resolve_method
from app.preprocess import Digit, model_input
from app.routes.activations import DECIMALS, Encoding, EncodingName
from app.routes.docs import ERRORS, IMAGE_BODY
from app.routes.predict import digit_verdict, make_prediction, wanted_outputs
from app.runtime.registry import LoadedModel
from app.schemas import AttributionMap
from app.tokens import decode_token

router = APIRouter(prefix="/explain", tags=["explain"])
# Explanations run ONNX Runtime in worker threads, beside the batcher: at most this many at once per worker, so a
# burst of them queues instead of taking every core from /predict.
CONCURRENT_EXPLANATIONS = 2

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


def explain_limiter(request: Request) -> anyio.CapacityLimiter:
    limiter: anyio.CapacityLimiter | None = getattr(request.app.state, "explain_limiter", None)
    if limiter is None:
        limiter = request.app.state.explain_limiter = anyio.CapacityLimiter(CONCURRENT_EXPLANATIONS)
    return limiter


def encoded(attribution: np.ndarray, encoding: EncodingName) -> list[list[float]] | str:
    if encoding == "base64":
        return base64.b64encode(attribution.astype("<f4").tobytes()).decode("ascii")
    rounded: list[list[float]] = np.round(attribution, DECIMALS).tolist()
    return rounded


def checked_request(
    model: LoadedModel, method: str | None, target: int | None, options: Options
) -> tuple[LoadedModel, Options]:
    """The model and settings once method, target and settings are known to be valid: before any image work."""
    assert model.card is not None
    resolve_method(offered_methods(model.card, model.explainer), method, model.name)
    if target is not None:
        check_target(target)
    return model, options.check()


async def explanation_for(
    request: Request,
    model: LoadedModel,
    digit: Digit,
    *,
    method: str | None,
    target: int | None,
    options: Options,
    encoding: EncodingName,
) -> AttributionMap:
    """The prediction (through the model's batcher) and the attribution map (in a worker thread)."""
    assert model.card is not None
    offered = offered_methods(model.card, model.explainer)
    chosen = resolve_method(offered, method, model.name)
    outputs = await model.infer(model_input(digit[np.newaxis]), wanted_outputs(model))
    verdict = digit_verdict(model, outputs, 0)
    settings = request.app.state.settings
    prediction = make_prediction(request, model, digit, outputs["probabilities"][0], settings.token_key, verdict)
    work = partial(
        explain,
        card=model.card,
        session=model.session,
        explainer=model.explainer,
        image=model_input(digit[np.newaxis])[0, :, :, 0],
        method=chosen,
        target=prediction.digit if target is None else target,
        options=options,
    )
    result: Explanation = await anyio.to_thread.run_sync(work, limiter=explain_limiter(request), abandon_on_cancel=True)
    return AttributionMap(
        prediction=prediction,
        method=result.method,
        target=result.target,
        baseline=result.baseline,
        settings=result.settings,
        completeness_error=result.completeness_error,
        methods=list(offered),
        min=float(result.attribution.min()),
        max=float(result.attribution.max()),
        encoding=encoding,
        attribution=encoded(result.attribution, encoding),
        input=digit.tolist(),
    )


@router.get("", responses=ERRORS)
async def read_explanation(
    request: Request,
    registry: RegistryDep,
    settings: SettingsDep,
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
    loaded, options = checked_request(registry.get(model), method, target, Options(steps, patch, stride))
    digit = decode_token(input, settings.token_key)
    return await explanation_for(
        request, loaded, digit, method=method, target=target, options=options, encoding=encoding
    )


@router.post("", responses=ERRORS, openapi_extra=IMAGE_BODY)
async def explain_upload(
    request: Request,
    registry: RegistryDep,
    model: ModelQuery = None,
    method: MethodQuery = None,
    target: TargetQuery = None,
    steps: StepsQuery = 32,
    patch: PatchQuery = 4,
    stride: StrideQuery = 2,
    encoding: Encoding = "json",
) -> AttributionMap:
    """The attribution map of an uploaded image, sent as for /predict (same formats, limits and errors)."""
    loaded, options = checked_request(registry.get(model), method, target, Options(steps, patch, stride))
    digit = await prepare_digit(request, await read_image(request))
    return await explanation_for(
        request, loaded, digit, method=method, target=target, options=options, encoding=encoding
    )
