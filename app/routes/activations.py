"""GET/POST /activations: the maps a model computes for one image, from a token or an upload."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request

from app.deps import DataPlaneDep, ModelQuery, dataplane_of, read_image
from app.routes.docs import ERRORS, IMAGE_BODY
from app.schemas import Activations

router = APIRouter(prefix="/activations", tags=["activations"])

LayerQuery = Annotated[list[str], Query(description="layers to return (repeatable); default: all")]
Encoding = Annotated[
    Literal["json", "base64"], Query(description="json: nested lists; base64: little-endian float32, channel-major")
]


@router.get("", responses=ERRORS)
async def read_activations(
    dataplane: DataPlaneDep,
    input: Annotated[str, Query(max_length=4096, description="the token from a prediction's activations_url")],
    model: ModelQuery = None,
    layer: LayerQuery = [],  # noqa: B006 - FastAPI copies query defaults
    encoding: Encoding = "json",
) -> Activations:
    """Activation maps of the image a /predict call saw, carried by its token.

    For a CNN: each convolution layer's ReLU maps (lenet: conv1 32x28x28, conv2 64x14x14). For a linear
    model: `evidence`, each class's weights times the input (10x28x28).
    """
    return await dataplane.activations(input, model=model, layers=layer, encoding=encoding)


@router.post("", responses=ERRORS, openapi_extra=IMAGE_BODY)
async def compute_activations(
    request: Request,
    model: ModelQuery = None,
    layer: LayerQuery = [],  # noqa: B006 - FastAPI copies query defaults
    encoding: Encoding = "json",
) -> Activations:
    """Activation maps of an uploaded image, sent as for /predict."""
    dataplane = dataplane_of(request)
    dataplane.model(model).check_layers(layer)  # refused before the upload is read
    return await dataplane.activations(await read_image(request), model=model, layers=layer, encoding=encoding)
