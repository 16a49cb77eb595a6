"""The Open Inference Protocol (KServe V2) REST bodies, and their decoding into checked NumPy tensors.

Pure: no HTTP framework here. Includes the binary tensor data extension: a JSON header of
`Inference-Header-Content-Length` bytes, followed by the raw tensors in the order the header lists them.
"""

from __future__ import annotations

import json
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, Field, ValidationError

from app.errors import InvalidInferenceRequest
from app.tensors import TensorInput, output_names, raw_values, refuse_extensions

HEADER_LENGTH = "Inference-Header-Content-Length"


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


def input_tensors(request: InferenceRequest, binary: bytes) -> list[TensorInput]:
    """The request's inputs with their values: from the binary part (binary_data_size) or from JSON `data`."""
    return [_tensor_input(tensor, binary) for tensor in request.inputs]


def _tensor_input(tensor: Tensor, binary: bytes) -> TensorInput:
    shape = tuple(tensor.shape)
    size = tensor.parameters.get("binary_data_size")
    if size is not None:
        if not isinstance(size, int) or size > len(binary):
            raise _invalid(f"binary_data_size {size} does not fit the {len(binary)} bytes after the JSON header.")
        return TensorInput(tensor.name, tensor.datatype, shape, raw_values(binary[:size], tensor.datatype))
    if tensor.data is None:
        return TensorInput(tensor.name, tensor.datatype, shape, None)
    try:
        values = np.asarray(tensor.data, dtype=np.float64).ravel()
    except (ValueError, TypeError):
        raise _invalid("Input data must be numbers, flat or nested by the shape.") from None
    return TensorInput(tensor.name, tensor.datatype, shape, values)


def requested_outputs(request: InferenceRequest, available: list[str]) -> list[tuple[str, bool]]:
    """(name, as binary) for each output to return; all of them as JSON when the request names none."""
    default_binary = bool(request.parameters.get("binary_data_output", False))
    for tensor in (*request.inputs, *(request.outputs or ())):
        refuse_extensions(tensor.parameters)
    names = output_names([o.name for o in request.outputs] if request.outputs is not None else None, available)
    binary = {o.name: bool(o.parameters.get("binary_data", default_binary)) for o in request.outputs or ()}
    return [(name, binary.get(name, default_binary)) for name in names]


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
