"""GET/POST /activations: the maps a model computes for one image, from a token or an upload."""

from __future__ import annotations

import base64
from typing import Annotated, Literal

import numpy as np
from fastapi import APIRouter, Query, Request

from app.deps import ModelQuery, RegistryDep, SettingsDep, prepare_digit, read_image
from app.preprocess import Digit, model_input
from app.routes.docs import ERRORS, IMAGE_BODY
from app.runtime.registry import LoadedModel
from app.schemas import Activations, LayerMaps
from app.tokens import decode_token

router = APIRouter(prefix="/activations", tags=["activations"])

LayerQuery = Annotated[list[str], Query(description="layers to return (repeatable); default: all")]
Encoding = Annotated[
    Literal["json", "base64"], Query(description="json: nested lists; base64: little-endian float32, channel-major")
]
DECIMALS = 5  # enough for a heatmap, and it keeps the JSON about half as long


EncodingName = Literal["json", "base64"]


def layer_maps(name: str, maps: np.ndarray, encoding: EncodingName) -> LayerMaps:
    """One layer's (C, H, W) maps, encoded as asked."""
    data: list[list[list[float]]] | str
    if encoding == "base64":
        data = base64.b64encode(maps.astype("<f4").tobytes()).decode("ascii")
    else:
        data = np.round(maps, DECIMALS).tolist()
    return LayerMaps(
        name=name, shape=list(maps.shape), min=float(maps.min()), max=float(maps.max()), encoding=encoding, data=data
    )


async def activations_for(model: LoadedModel, digit: Digit, layers: list[str], encoding: EncodingName) -> Activations:
    assert model.card is not None
    outputs = await model.infer(model_input(digit[np.newaxis]), layers)
    return Activations(
        model=model.name,
        model_version=model.card.version,
        kind=model.card.kind,
        input=digit.tolist(),
        layers=[layer_maps(name, outputs[name][0], encoding) for name in layers],
    )


@router.get("", responses=ERRORS)
async def read_activations(
    registry: RegistryDep,
    settings: SettingsDep,
    input: Annotated[str, Query(max_length=4096, description="the token from a prediction's activations_url")],
    model: ModelQuery = None,
    layer: LayerQuery = [],  # noqa: B006 - FastAPI copies query defaults
    encoding: Encoding = "json",
) -> Activations:
    """Activation maps of the image a /predict call saw, carried by its token.

    For a CNN: each convolution layer's ReLU maps (lenet: conv1 32x28x28, conv2 64x14x14). For a linear
    model: `evidence`, each class's weights times the input (10x28x28).
    """
    loaded = registry.get(model)
    layers = loaded.check_layers(layer)
    return await activations_for(loaded, decode_token(input, settings.token_key), layers, encoding)


@router.post("", responses=ERRORS, openapi_extra=IMAGE_BODY)
async def compute_activations(
    request: Request,
    registry: RegistryDep,
    model: ModelQuery = None,
    layer: LayerQuery = [],  # noqa: B006 - FastAPI copies query defaults
    encoding: Encoding = "json",
) -> Activations:
    """Activation maps of an uploaded image, sent as for /predict."""
    loaded = registry.get(model)
    layers = loaded.check_layers(layer)
    digit = await prepare_digit(request, await read_image(request))
    return await activations_for(loaded, digit, layers, encoding)
