"""POST /read and /read/batch: read a handwritten number written on one line (app.dataplane does the work)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from app.deps import base_url, dataplane_of, model_query, read_image, read_images
from app.routes.docs import COMMON_ERRORS, ERRORS, IMAGE_BODY, MODEL_PARAMETER, MULTI_IMAGE_BODY, READ_ERRORS
from app.routes.predict import DirectRoute, json_response
from app.schemas import BatchReading, NumberReading

router = APIRouter(tags=["read"], route_class=DirectRoute, responses=COMMON_ERRORS)


@router.post(
    "/read",
    response_model=NumberReading,
    responses=READ_ERRORS,
    openapi_extra={**IMAGE_BODY, "parameters": [MODEL_PARAMETER]},
)
async def read_number(request: Request) -> Response:
    """Read a number handwritten on one line (a postcode, an amount, a year): its digits left to right.

    Same formats, limits and errors as /predict. Specks, dots, dashes and underlines are listed under `ignored`;
    an image with no digit at all is 422 `no_digits`. Boxes are in the uploaded image's pixels.
    """
    dataplane, model = dataplane_of(request), model_query(request)
    dataplane.model(model)  # an unknown model is refused before the upload is read
    reading = await dataplane.read_number(await read_image(request), model=model, base_url=base_url(request))
    return json_response(reading)


@router.post(
    "/read/batch",
    response_model=BatchReading,
    responses=ERRORS,
    openapi_extra={**MULTI_IMAGE_BODY, "parameters": [MODEL_PARAMETER]},
)
async def read_numbers(request: Request) -> Response:
    """Read the number on each of several images sent as multipart fields `files`; one result per file, in order.

    Each is read as /read reads one. A file that cannot be read (not an image, no digits) gets its own error; the
    others are still read.
    """
    dataplane, model = dataplane_of(request), model_query(request)
    dataplane.model(model)
    uploads = await read_images(request, dataplane.settings.max_batch_images)
    return json_response(await dataplane.read_numbers(uploads, model=model, base_url=base_url(request)))
