"""POST /predict and /predict/batch: classify uploaded digit images."""

from __future__ import annotations

import base64
import io
from collections.abc import Callable, Coroutine
from typing import Any
from urllib.parse import quote

import numpy as np
import numpy.typing as npt
from fastapi import APIRouter, Request, Response
from fastapi.routing import APIRoute
from PIL import Image
from pydantic import BaseModel
from starlette.routing import request_response

from app.deps import (
    base_url,
    model_query,
    prepare_digit,
    read_image,
    read_images,
    registry_of,
    settings_of,
)
from app.errors import ServiceError
from app.preprocess import Digit, model_input
from app.routes.docs import COMMON_ERRORS, ERRORS, IMAGE_BODY, MODEL_PARAMETER, MULTI_IMAGE_BODY
from app.runtime.registry import LoadedModel
from app.schemas import BatchItem, BatchPrediction, ErrorBody, Prediction
from app.tokens import encode_token


class DirectRoute(APIRoute):
    """A route whose endpoint takes the Request and returns the Response itself. FastAPI's per-request machinery
    (parameter solving, dependency exit stacks, response validation) is skipped: on /predict it cost ~5% of the
    time. The OpenAPI schema still comes from the route's declaration."""

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        super().__init__(path, endpoint, **kwargs)
        self.app = request_response(self.endpoint)  # Starlette's: without FastAPI's exit stacks for dependencies

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        # APIRoute.__init__ wraps this before self.app replaces it, and an including router would wrap it too: the
        # endpoint itself, not a dependency-solving handler built for nothing.
        return self.endpoint


# The app takes these routes as its own (main.create_app), so they carry the app-wide error responses themselves.
router = APIRouter(tags=["predict"], route_class=DirectRoute, responses=COMMON_ERRORS)


def json_response(model: BaseModel) -> Response:
    """The model serialised by pydantic itself; FastAPI would validate it again, then go through a dict to JSON."""
    return Response(model.model_dump_json(), media_type="application/json")


DEBUG_PARAMETER: dict[str, Any] = {
    "name": "debug",
    "in": "query",
    "required": False,
    "description": "true: also return `input_png`, the 28x28 image the model saw",
    "schema": {"type": "boolean", "default": False},
}
TRUE = frozenset({"true", "1", "yes", "on"})  # what FastAPI reads as a true bool


def digit_png(digit: Digit) -> str:
    """The 28x28 digit as a base64 PNG."""
    buffer = io.BytesIO()
    Image.fromarray(digit).save(buffer, "PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


NOT_A_DIGIT = (
    "This does not look like a handwritten digit (digit_score {score:.2f} is below {threshold:.2f}); the digit given is"
    " only the model's best guess. Send one handwritten digit 0-9."
)


def wanted_outputs(model: LoadedModel) -> list[str]:
    """The probabilities, and the detector's score when the model has one."""
    assert model.card is not None
    return ["probabilities"] if model.card.detector is None else ["probabilities", model.card.detector.output]


def digit_verdict(model: LoadedModel, outputs: dict[str, npt.NDArray[np.float32]], index: int) -> tuple[bool, float]:
    """(is_digit, digit_score) of one image; a model without a detector calls everything a digit (score 1)."""
    assert model.card is not None
    detector = model.card.detector
    if detector is None:
        return True, 1.0
    score = float(outputs[detector.output][index, 0])
    return score >= detector.threshold, score


def activations_url(request: Request, model: LoadedModel, digit: Digit, token_key: str) -> str:
    """The URL of the digit's activation maps, the digit itself in its token. Built by hand: url_for walks every
    route, which costs more than the model call on a busy server. The token is URL-safe base64 already."""
    return f"{base_url(request)}activations?input={encode_token(digit, token_key)}&model={quote(model.name)}"


def make_prediction(
    request: Request,
    model: LoadedModel,
    digit: Digit,
    probabilities: npt.NDArray[np.float32],
    token_key: str,
    verdict: tuple[bool, float] = (True, 1.0),
) -> Prediction:
    assert model.card is not None
    values = probabilities.tolist()  # Python floats from here: a numpy call costs more than the list operation
    best = values.index(max(values))
    is_digit, score = verdict
    threshold = model.card.detector.threshold if model.card.detector else 0.0
    activations = activations_url(request, model, digit, token_key)
    return Prediction(
        digit=best,
        confidence=values[best],
        probabilities=values,
        is_digit=is_digit,
        digit_score=score,
        detail=None if is_digit else NOT_A_DIGIT.format(score=score, threshold=threshold),
        model=model.name,
        model_version=model.card.version,
        activations_url=activations,
        explain_url=activations.replace("/activations?", "/explain?", 1),  # the same token, no second encoding
    )


@router.post(
    "/predict",
    response_model=Prediction,
    responses=ERRORS,
    openapi_extra={**IMAGE_BODY, "parameters": [MODEL_PARAMETER, DEBUG_PARAMETER]},
)
async def predict_digit(request: Request) -> Response:
    """Classify one digit image (PNG, JPEG, BMP, GIF, WebP, TIFF; any size, either polarity).

    Send it as multipart field `file`, or as the raw body with an `image/*` Content-Type. An image that does not
    look like a handwritten digit is still answered (200) with `is_digit` false and a `detail` saying so.
    """
    settings, loaded = settings_of(request), registry_of(request).get(model_query(request))
    digit = await prepare_digit(request, await read_image(request))
    outputs = await loaded.infer(model_input(digit[np.newaxis]), wanted_outputs(loaded))
    verdict = digit_verdict(loaded, outputs, 0)
    prediction = make_prediction(request, loaded, digit, outputs["probabilities"][0], settings.token_key, verdict)
    if request.query_params.get("debug", "").lower() in TRUE:
        prediction.input_png = digit_png(digit)
    return json_response(prediction)


async def _prepare_each(request: Request, uploads: list[tuple[str | None, bytes]]) -> list[Digit | ServiceError]:
    """Each upload prepared as /predict prepares one, in turn: a batch holds one image's pixels at a time."""
    results: list[Digit | ServiceError] = []
    for _, data in uploads:
        try:
            results.append(await prepare_digit(request, data))
        except ServiceError as exc:
            results.append(exc)
    return results


@router.post(
    "/predict/batch",
    response_model=BatchPrediction,
    responses=ERRORS,
    openapi_extra={**MULTI_IMAGE_BODY, "parameters": [MODEL_PARAMETER]},
)
async def predict_digits(request: Request) -> Response:
    """Classify several images sent as multipart fields `files`; one result per file, in order.

    A file that is not a usable image gets its own error; the others are still classified.
    """
    settings, loaded = settings_of(request), registry_of(request).get(model_query(request))
    uploads = await read_images(request, settings.max_batch_images)
    digits = await _prepare_each(request, uploads)
    good = [d for d in digits if not isinstance(d, ServiceError)]
    outputs = await loaded.infer(model_input(np.stack(good)), wanted_outputs(loaded)) if good else {}
    results, next_good = [], iter(range(len(good)))
    for (filename, _), digit in zip(uploads, digits, strict=True):
        if isinstance(digit, ServiceError):
            results.append(BatchItem(filename=filename, error=ErrorBody(detail=digit.detail, code=digit.code)))
        else:
            index = next(next_good)
            probabilities, verdict = outputs["probabilities"][index], digit_verdict(loaded, outputs, index)
            prediction = make_prediction(request, loaded, digit, probabilities, settings.token_key, verdict)
            results.append(BatchItem(filename=filename, prediction=prediction))
    return json_response(BatchPrediction(model=loaded.name, results=results))
