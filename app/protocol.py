"""The Open Inference Protocol (KServe V2) REST bodies, and their decoding into checked NumPy tensors.

Pure: no HTTP framework here. Includes the binary tensor data extension: a JSON header of
`Inference-Header-Content-Length` bytes, followed by the raw tensors in the order the header lists them.
"""

from __future__ import annotations

import json
import math
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, Field, ValidationError

from app.cards import INPUT_NAME
from app.errors import ServiceError

HEADER_LENGTH = "Inference-Header-Content-Length"
INPUT_SHAPE = (28, 28, 1)
DTYPES: dict[str, np.dtype[Any]] = {"FP32": np.dtype("<f4"), "UINT8": np.dtype("u1")}


class InvalidInferenceRequest(ServiceError):
    code = "invalid_inference_request"


class ErrorResponse(BaseModel):
    """Every protocol error, as the Open Inference Protocol defines it."""

    error: str


class Tensor(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    parameters: dict[str, Any] = Field(default_factory=dict)
    data: Any = None


class RequestedOutput(BaseModel):
    name: str
    parameters: dict[str, Any] = Field(default_factory=dict)


class InferenceRequest(BaseModel):
    id: str | None = None
    parameters: dict[str, Any] = Field(default_factory=dict)
    inputs: list[Tensor]
    outputs: list[RequestedOutput] | None = None


class OutputTensor(BaseModel):
    name: str
    shape: list[int]
    datatype: Literal["FP32"] = "FP32"
    parameters: dict[str, Any] = Field(default_factory=dict)
    data: list[float] | None = None


class InferenceResponse(BaseModel):
    model_name: str
    model_version: str
    id: str | None = None
    parameters: dict[str, Any] = Field(default_factory=dict)
    outputs: list[OutputTensor]


class MetadataTensor(BaseModel):
    name: str
    datatype: str
    shape: list[int]


class ModelMetadata(BaseModel):
    name: str
    versions: list[str]
    platform: str
    inputs: list[MetadataTensor]
    outputs: list[MetadataTensor]


class ServerMetadata(BaseModel):
    name: str
    version: str
    extensions: list[str]


def _invalid(message: str) -> InvalidInferenceRequest:
    return InvalidInferenceRequest(message)


def split_body(body: bytes, header_length: str | None) -> tuple[InferenceRequest, bytes]:
    """The JSON header parsed, and the binary part that follows it (empty without the extension)."""
    if header_length is None:
        head, binary = body, b""
    else:
        if not header_length.isdigit() or int(header_length) > len(body):
            raise _invalid(f"{HEADER_LENGTH} is {header_length!r}, but the body has {len(body)} bytes.")
        head, binary = body[: int(header_length)], body[int(header_length) :]
    try:
        return InferenceRequest.model_validate(json.loads(head)), binary
    except ValidationError as exc:  # what is wrong and where: pydantic's first line only names the model
        problem = exc.errors()[0]
        where = ".".join(str(part) for part in problem["loc"]) or "body"
        raise _invalid(f"The request is not a valid inference request: {where}: {problem['msg'][:200]}") from None
    except ValueError as exc:  # not JSON, or not UTF-8
        raise _invalid(f"The request is not a valid inference request: {str(exc)[:200]}") from None


def decode_images(request: InferenceRequest, binary: bytes, *, max_batch: int) -> npt.NDArray[np.float32]:
    """The `image` input as (N, 28, 28, 1) float32 in [0, 1], after checking name, type, shape, size and values."""
    if [t.name for t in request.inputs] != [INPUT_NAME]:
        raise _invalid(f"Expected exactly one input named {INPUT_NAME!r}, got {[t.name for t in request.inputs]}.")
    tensor = request.inputs[0]
    dtype = DTYPES.get(tensor.datatype)
    if dtype is None:
        raise _invalid(f"Input datatype {tensor.datatype!r} is not accepted; use FP32 in [0, 1] or UINT8 in [0, 255].")
    if len(tensor.shape) != 4 or tuple(tensor.shape[1:]) != INPUT_SHAPE or tensor.shape[0] < 1:
        raise _invalid(f"Input shape {tensor.shape} is not [N, 28, 28, 1].")
    if tensor.shape[0] > max_batch:
        raise _invalid(f"The batch has {tensor.shape[0]} images; at most {max_batch} are accepted per request.")
    values = _tensor_values(tensor, dtype, binary)
    if dtype == DTYPES["UINT8"]:
        return (values.astype(np.float32) / 255.0).reshape(tensor.shape)
    if not np.all(np.isfinite(values)):
        raise _invalid("Input values must be finite; found NaN or infinity.")
    if values.min() < 0.0 or values.max() > 1.0:
        raise _invalid("FP32 input values must lie in [0, 1] (white digit on black); scale 0-255 pixels by 1/255.")
    return values.astype(np.float32).reshape(tensor.shape)


def _tensor_values(tensor: Tensor, dtype: np.dtype[Any], binary: bytes) -> npt.NDArray[Any]:
    count = math.prod(tensor.shape)
    size = tensor.parameters.get("binary_data_size")
    if size is not None:
        if size != count * dtype.itemsize or size > len(binary):
            raise _invalid(f"binary_data_size {size} does not match shape {tensor.shape} of {tensor.datatype}.")
        return np.frombuffer(binary[:size], dtype=dtype)
    if tensor.data is None:
        raise _invalid(f"Input {tensor.name!r} has no data.")
    try:
        values = np.asarray(tensor.data, dtype=np.float64).ravel()
    except (ValueError, TypeError):
        raise _invalid("Input data must be numbers, flat or nested by the shape.") from None
    if values.size != count:
        raise _invalid(f"Input data has {values.size} values; shape {tensor.shape} needs {count}.")
    if dtype == DTYPES["UINT8"] and (values.min() < 0 or values.max() > 255 or np.any(values % 1)):
        raise _invalid("UINT8 input values must be whole numbers in [0, 255].")
    return values


def requested_outputs(request: InferenceRequest, available: list[str]) -> list[tuple[str, bool]]:
    """(name, as binary) for each output to return; all of them as JSON when the request names none."""
    default_binary = bool(request.parameters.get("binary_data_output", False))
    if request.outputs is None:
        return [(name, default_binary) for name in available]
    unknown = [o.name for o in request.outputs if o.name not in available]
    if unknown:
        raise _invalid(f"Unknown output {unknown[0][:64]!r}; this model has {', '.join(available)}.")
    return [(o.name, bool(o.parameters.get("binary_data", default_binary))) for o in request.outputs]


def encode_response(
    response: InferenceResponse, arrays: dict[str, npt.NDArray[np.float32]], binary: dict[str, bool]
) -> tuple[bytes, int | None]:
    """The response body, and the JSON header's length when binary outputs follow it."""
    chunks = []
    for output in response.outputs:
        array = arrays[output.name]
        if binary[output.name]:
            raw = np.ascontiguousarray(array, dtype="<f4").tobytes()
            output.parameters["binary_data_size"] = len(raw)
            chunks.append(raw)
        else:
            output.data = array.ravel().tolist()
    head = response.model_dump_json(exclude_none=True).encode()
    if not chunks:
        return head, None
    return head + b"".join(chunks), len(head)
