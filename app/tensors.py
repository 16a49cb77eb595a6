"""Open Inference Protocol input tensors, whatever carried them (V2 REST JSON or binary, gRPC contents or raw
bytes), checked and turned into the models' images. Pure: no transport here."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from app.cards import INPUT_NAME
from app.errors import InvalidInferenceRequest, Unimplemented

INPUT_SHAPE = (28, 28, 1)
DTYPES: dict[str, np.dtype[Any]] = {"FP32": np.dtype("<f4"), "UINT8": np.dtype("u1")}
Images = npt.NDArray[np.float32]  # (N, 28, 28, 1) in [0, 1]
# Tensor parameters of protocol extensions this service does not offer: refused, rather than silently ignored.
NOT_OFFERED = {
    "classification": "The classification extension is not offered: ask for `probabilities` and take the top ones.",
    "shared_memory_region": "Shared memory is not offered: send the tensor's data in the request.",
}


@dataclass(frozen=True)
class TensorInput:
    """One input tensor as a request declared it. `values` is flat: the datatype's own values when they came as raw
    bytes, or the numbers a JSON `data` or a gRPC `contents` field held (any numeric dtype, checked here)."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    values: npt.NDArray[Any] | None


def raw_values(data: bytes, datatype: str) -> npt.NDArray[Any]:
    """Raw little-endian bytes of a tensor as its values; InvalidInferenceRequest for a datatype not accepted or a
    length that is no whole number of them."""
    dtype = _dtype(datatype)
    if len(data) % dtype.itemsize:
        raise InvalidInferenceRequest(f"{len(data)} raw bytes are no whole number of {datatype} values.")
    return np.frombuffer(data, dtype=dtype)


def _dtype(datatype: str) -> np.dtype[Any]:
    dtype = DTYPES.get(datatype)
    if dtype is None:
        raise InvalidInferenceRequest(
            f"Input datatype {datatype!r} is not accepted; use FP32 in [0, 1] or UINT8 in [0, 255]."
        )
    return dtype


def images_of(inputs: Sequence[TensorInput], *, max_batch: int) -> Images:
    """The `image` input as (N, 28, 28, 1) float32 in [0, 1], after checking name, type, shape, size and values."""
    if [t.name for t in inputs] != [INPUT_NAME]:
        raise InvalidInferenceRequest(
            f"Expected exactly one input named {INPUT_NAME!r}, got {[t.name[:64] for t in inputs]}."
        )
    tensor = inputs[0]
    dtype = _dtype(tensor.datatype)
    shape = tensor.shape
    if len(shape) != 4 or tuple(shape[1:]) != INPUT_SHAPE or shape[0] < 1:
        raise InvalidInferenceRequest(f"Input shape {list(shape)} is not [N, 28, 28, 1].")
    if shape[0] > max_batch:
        raise InvalidInferenceRequest(f"The batch has {shape[0]} images; at most {max_batch} are accepted per request.")
    if tensor.values is None:
        raise InvalidInferenceRequest(f"Input {tensor.name!r} has no data.")
    values = tensor.values
    if values.size != math.prod(shape):
        raise InvalidInferenceRequest(
            f"Input data has {values.size} values; shape {list(shape)} needs {math.prod(shape)}."
        )
    if dtype == DTYPES["UINT8"]:
        return _uint8_images(values).reshape(shape)
    return _fp32_images(values).reshape(shape)


def _uint8_images(values: npt.NDArray[Any]) -> Images:
    if values.dtype != np.uint8 and (values.min() < 0 or values.max() > 255 or np.any(values % 1)):
        raise InvalidInferenceRequest("UINT8 input values must be whole numbers in [0, 255].")
    return values.astype(np.float32) / 255.0


def _fp32_images(values: npt.NDArray[Any]) -> Images:
    if not np.all(np.isfinite(values)):
        raise InvalidInferenceRequest("Input values must be finite; found NaN or infinity.")
    if values.min() < 0.0 or values.max() > 1.0:
        raise InvalidInferenceRequest(
            "FP32 input values must lie in [0, 1] (white digit on black); scale 0-255 pixels by 1/255."
        )
    return values.astype(np.float32)


def refuse_extensions(parameters: Iterable[str]) -> None:
    """Unimplemented when a tensor's parameters ask for an extension this service does not offer."""
    for name in parameters:
        if name in NOT_OFFERED:
            raise Unimplemented(NOT_OFFERED[name])


def output_names(requested: Sequence[str] | None, available: Sequence[str]) -> list[str]:
    """The outputs to return: those requested, or every one when the request names none."""
    if not requested:
        return list(available)
    unknown = [name for name in requested if name not in available]
    if unknown:
        raise InvalidInferenceRequest(f"Unknown output {unknown[0][:64]!r}; this model has {', '.join(available)}.")
    return list(requested)
