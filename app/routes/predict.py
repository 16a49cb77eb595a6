"""POST /predict and /predict/batch: classify uploaded digit images (app.dataplane does the work).

The service's speed-ups that bypass FastAPI live here, in one place, each with what it measured: DirectRoute (no
parameter solving or dependency exit stacks), json_response (pydantic serialises once), deps.base_url (cached), and
these routes being the app's own (main.create_app). /read uses them too."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.routing import APIRoute
from pydantic import BaseModel
from starlette.routing import request_response

from app.deps import base_url, dataplane_of, model_query, read_image, read_images
from app.routes.docs import COMMON_ERRORS, ERRORS, IMAGE_BODY, MODEL_PARAMETER, MULTI_IMAGE_BODY
from app.schemas import BatchPrediction, Prediction


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
    dataplane, model = dataplane_of(request), model_query(request)
    dataplane.model(model)  # an unknown model is refused before the upload is read
    debug = request.query_params.get("debug", "").lower() in TRUE
    prediction = await dataplane.classify(
        await read_image(request), model=model, base_url=base_url(request), debug=debug
    )
    return json_response(prediction)


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
    dataplane, model = dataplane_of(request), model_query(request)
    dataplane.model(model)
    uploads = await read_images(request, dataplane.settings.max_batch_images)
    return json_response(await dataplane.classify_batch(uploads, model=model, base_url=base_url(request)))
