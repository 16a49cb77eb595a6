"""The Open Inference Protocol's bodies, decoded and encoded without a server: every check names what was wrong, the
binary extension is read and written at the right offsets, and values come out as the model expects them."""

from __future__ import annotations

import json

import numpy as np
import pytest

from app.protocol import (
    HEADER_LENGTH,
    InferenceRequest,
    InferenceResponse,
    InvalidInferenceRequest,
    OutputTensor,
    encode_response,
    input_tensors,
    requested_outputs,
    split_body,
)
from app.tensors import Images, images_of

SHAPE = [1, 28, 28, 1]


def decode_images(request: InferenceRequest, binary: bytes, *, max_batch: int) -> Images:
    """The `image` input as the model takes it: the REST and gRPC front ends' path through app.tensors."""
    return images_of(input_tensors(request, binary), max_batch=max_batch)


def request(
    shape: list[int] | None = None, datatype: str = "FP32", data: object = None, **extra: object
) -> InferenceRequest:
    tensor = {"name": "image", "shape": shape or SHAPE, "datatype": datatype, "data": data, **extra}
    return InferenceRequest.model_validate({"inputs": [tensor]})


def zeros(n: int = 1) -> list[float]:
    return [0.0] * (n * 784)


def test_a_json_body_is_parsed_with_no_binary_part() -> None:
    body = json.dumps({"id": "r1", "inputs": [{"name": "image", "shape": SHAPE, "datatype": "FP32", "data": [1]}]})
    parsed, binary = split_body(body.encode(), None)
    assert parsed.id == "r1"
    assert parsed.inputs[0].shape == SHAPE
    assert binary == b""


def test_the_binary_part_starts_where_the_header_length_says() -> None:
    head = json.dumps({"inputs": [{"name": "image", "shape": SHAPE, "datatype": "UINT8"}]}).encode()
    parsed, binary = split_body(head + b"\x01\x02\x03", str(len(head)))
    assert parsed.inputs[0].datatype == "UINT8"
    assert binary == b"\x01\x02\x03"


def test_a_header_length_of_the_whole_body_leaves_no_binary_part() -> None:
    head = json.dumps({"inputs": []}).encode()
    assert split_body(head, str(len(head)))[1] == b""


@pytest.mark.parametrize("length", ["-1", "x", "1.5", "999"])
def test_a_bad_header_length_is_refused_with_the_bodys_size(length: str) -> None:
    with pytest.raises(InvalidInferenceRequest) as refused:
        split_body(b'{"inputs": []}', length)
    assert refused.value.detail == f"{HEADER_LENGTH} is {length!r}, but the body has 14 bytes."
    assert refused.value.code == "invalid_inference_request"


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (b"{not json", "Expecting property name"),
        (b'{"inputs": 3}', ": inputs: Input should be a valid list"),
        (b'{"inputs": [{"name": "image"}]}', ": inputs.0.shape: Field required"),
        (b"[]", ": body: Input should be a valid dictionary"),
    ],
)
def test_a_body_that_is_no_inference_request_says_why(body: bytes, says: str) -> None:
    with pytest.raises(InvalidInferenceRequest, match="The request is not a valid inference request: ") as refused:
        split_body(body, None)
    assert says in refused.value.detail
    assert "\n" not in refused.value.detail


def test_fp32_images_come_out_as_given() -> None:
    data = np.linspace(0, 1, 784 * 2, dtype=np.float32)
    images = decode_images(request([2, 28, 28, 1], data=data.tolist()), b"", max_batch=2)
    assert images.dtype == np.float32
    assert images.shape == (2, 28, 28, 1)
    np.testing.assert_allclose(images.ravel(), data)


def test_uint8_images_are_scaled_to_the_unit_range() -> None:
    data = [0, 51, 255] + [0] * 781
    images = decode_images(request(datatype="UINT8", data=data), b"", max_batch=1)
    assert images.dtype == np.float32
    assert images.shape == (1, 28, 28, 1)
    np.testing.assert_allclose(images.ravel()[:3], [0.0, 0.2, 1.0])


def test_nested_data_is_read_in_order() -> None:
    data = np.arange(784, dtype=np.float64).reshape(1, 28, 28, 1) / 783
    images = decode_images(request(data=data.tolist()), b"", max_batch=1)
    np.testing.assert_allclose(images, data.astype(np.float32))


def test_binary_fp32_and_uint8_tensors_are_read_little_endian() -> None:
    values = np.linspace(0, 1, 784, dtype="<f4")
    raw = values.tobytes()
    images = decode_images(request(parameters={"binary_data_size": len(raw)}), raw + b"extra", max_batch=1)
    np.testing.assert_array_equal(images.ravel(), values)
    pixels = np.arange(784) % 256
    images = decode_images(
        request(datatype="UINT8", parameters={"binary_data_size": 784}), pixels.astype("u1").tobytes(), max_batch=1
    )
    np.testing.assert_allclose(images.ravel(), pixels / 255, rtol=1e-6)


@pytest.mark.parametrize(
    ("tensor", "binary", "message"),
    [
        (request(datatype="FP64", data=zeros()), b"", "Input datatype 'FP64' is not accepted; use FP32 in [0, 1]"),
        (request([28, 28, 1], data=zeros()), b"", "Input shape [28, 28, 1] is not [N, 28, 28, 1]."),
        (request([1, 28, 28, 3], data=zeros(3)), b"", "Input shape [1, 28, 28, 3] is not [N, 28, 28, 1]."),
        (request([1, 28, 27, 1], data=zeros()), b"", "Input shape [1, 28, 27, 1] is not [N, 28, 28, 1]."),
        (request([1, 27, 28, 1], data=zeros()), b"", "Input shape [1, 27, 28, 1] is not [N, 28, 28, 1]."),
        (request([1, 28, 28, 1, 1], data=zeros()), b"", "Input shape [1, 28, 28, 1, 1] is not [N, 28, 28, 1]."),
        (request([0, 28, 28, 1], data=[]), b"", "Input shape [0, 28, 28, 1] is not [N, 28, 28, 1]."),
        (request([3, 28, 28, 1], data=zeros(3)), b"", "The batch has 3 images; at most 2 are accepted per request."),
        (request(), b"", "Input 'image' has no data."),
        (request(data=["a"] * 784), b"", "Input data must be numbers, flat or nested by the shape."),
        (request(data=zeros()[:-1]), b"", "Input data has 783 values; shape [1, 28, 28, 1] needs 784."),
        (request(data=[*zeros()[:-1], float("nan")]), b"", "Input values must be finite; found NaN or infinity."),
        (request(data=[*zeros()[:-1], float("inf")]), b"", "Input values must be finite; found NaN or infinity."),
        (request(data=[*zeros()[:-1], 1.01]), b"", "FP32 input values must lie in [0, 1] (white digit on black)"),
        (request(data=[*zeros()[:-1], -0.01]), b"", "FP32 input values must lie in [0, 1] (white digit on black)"),
        (request(datatype="UINT8", data=[*zeros()[:-1], 256]), b"", "UINT8 input values must be whole numbers"),
        (request(datatype="UINT8", data=[*zeros()[:-1], -1]), b"", "UINT8 input values must be whole numbers"),
        (request(datatype="UINT8", data=[*zeros()[:-1], 0.5]), b"", "UINT8 input values must be whole numbers"),
        (
            request(parameters={"binary_data_size": 3136}),
            b"\0" * 3135,
            "binary_data_size 3136 does not fit the 3135 bytes after the JSON header.",
        ),
        (
            request(parameters={"binary_data_size": 784}),
            b"\0" * 3136,
            "Input data has 196 values; shape [1, 28, 28, 1] needs 784.",
        ),
        (
            request(datatype="UINT8", parameters={"binary_data_size": 785}),
            b"\0" * 785,
            "Input data has 785 values; shape [1, 28, 28, 1] needs 784.",
        ),
    ],
)
def test_a_bad_image_tensor_is_refused_saying_what_is_wrong(
    tensor: InferenceRequest, binary: bytes, message: str
) -> None:
    with pytest.raises(InvalidInferenceRequest) as refused:
        decode_images(tensor, binary, max_batch=2)
    assert refused.value.detail.startswith(message)


def test_the_largest_batch_and_the_range_bounds_are_accepted() -> None:
    data = zeros(2)
    data[0], data[-1] = 1.0, 0.0
    assert decode_images(request([2, 28, 28, 1], data=data), b"", max_batch=2).shape == (2, 28, 28, 1)
    uint8 = [255.0] + [0.0] * 783
    assert decode_images(request(datatype="UINT8", data=uint8), b"", max_batch=1).max() == 1.0


@pytest.mark.parametrize(
    "inputs", [[], [{"name": "pixels"}], [{"name": "image"}, {"name": "image"}]], ids=["none", "other", "two"]
)
def test_exactly_one_input_named_image_is_accepted(inputs: list[dict[str, str]]) -> None:
    tensors = [{"shape": SHAPE, "datatype": "FP32", "data": zeros(), **t} for t in inputs]
    with pytest.raises(InvalidInferenceRequest, match=r"Expected exactly one input named 'image', got \["):
        decode_images(InferenceRequest.model_validate({"inputs": tensors}), b"", max_batch=2)


def outputs_of(body: dict[str, object]) -> InferenceRequest:
    return InferenceRequest.model_validate({"inputs": [], **body})


AVAILABLE = ["logits", "probabilities", "conv1"]


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({}, [("logits", False), ("probabilities", False), ("conv1", False)]),
        ({"parameters": {"binary_data_output": True}}, [("logits", True), ("probabilities", True), ("conv1", True)]),
        ({"outputs": [{"name": "conv1"}]}, [("conv1", False)]),
        ({"outputs": [{"name": "conv1", "parameters": {"binary_data": True}}]}, [("conv1", True)]),
        (
            {"parameters": {"binary_data_output": True}, "outputs": [{"name": "logits"}, {"name": "conv1"}]},
            [("logits", True), ("conv1", True)],
        ),
        (
            {
                "parameters": {"binary_data_output": True},
                "outputs": [{"name": "logits", "parameters": {"binary_data": False}}],
            },
            [("logits", False)],
        ),
    ],
)
def test_the_outputs_asked_for_and_how(body: dict[str, object], expected: list[tuple[str, bool]]) -> None:
    assert requested_outputs(outputs_of(body), AVAILABLE) == expected


def test_an_unknown_output_is_refused_with_the_ones_there_are() -> None:
    with pytest.raises(InvalidInferenceRequest) as refused:
        requested_outputs(outputs_of({"outputs": [{"name": "logits"}, {"name": "x" * 100}]}), AVAILABLE)
    assert refused.value.detail == f"Unknown output {'x' * 64!r}; this model has logits, probabilities, conv1."


def response(*names: str) -> InferenceResponse:
    outputs = [OutputTensor(name=name, shape=[1, 2]) for name in names]
    return InferenceResponse(model_name="cnn", model_version="1", outputs=outputs)


def test_json_outputs_carry_their_values_and_no_header_length() -> None:
    arrays = {"logits": np.array([[1.5, -2.0]], np.float32)}
    body, header_length = encode_response(response("logits"), arrays, {"logits": False})
    assert header_length is None
    decoded = json.loads(body)
    assert decoded["outputs"] == [
        {"name": "logits", "shape": [1, 2], "datatype": "FP32", "parameters": {}, "data": [1.5, -2.0]}
    ]
    assert decoded["model_name"] == "cnn"


def test_binary_outputs_follow_the_json_header_in_order() -> None:
    arrays = {"logits": np.array([[1.5, -2.0]], np.float32), "conv1": np.array([[3.0, 4.0]], np.float64)}
    body, header_length = encode_response(response("logits", "conv1"), arrays, {"logits": True, "conv1": True})
    assert header_length is not None
    head = json.loads(body[:header_length])
    assert [o["parameters"] for o in head["outputs"]] == [{"binary_data_size": 8}, {"binary_data_size": 8}]
    assert all("data" not in o for o in head["outputs"])
    tail = np.frombuffer(body[header_length:], dtype="<f4")
    np.testing.assert_array_equal(tail, [1.5, -2.0, 3.0, 4.0])


def test_json_and_binary_outputs_mix() -> None:
    arrays = {"logits": np.array([[1.0, 2.0]], np.float32), "conv1": np.array([[5.0, 6.0]], np.float32)}
    body, header_length = encode_response(response("logits", "conv1"), arrays, {"logits": False, "conv1": True})
    assert header_length is not None
    head = json.loads(body[:header_length])
    assert head["outputs"][0]["data"] == [1.0, 2.0]
    assert np.frombuffer(body[header_length:], dtype="<f4").tolist() == [5.0, 6.0]
