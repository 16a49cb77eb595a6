"""The gRPC benchmark's request bodies are what a client would send, and h2load's figures are read right."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest
from tritonclient.grpc import service_pb2

from benchmarks.grpc_bench import grpc_body, milliseconds, rest_body

PIXELS = bytes(range(256)) * 3 + bytes(16)  # 784


def test_grpc_body_is_one_framed_model_infer_request() -> None:
    body = grpc_body(PIXELS)
    compressed, length = struct.unpack(">BI", body[:5])
    assert (compressed, length) == (0, len(body) - 5)
    request = service_pb2.ModelInferRequest.FromString(body[5:])  # Triton's own message parses it
    assert request.model_name == "cnn"
    assert (request.inputs[0].datatype, list(request.inputs[0].shape)) == ("UINT8", [1, 28, 28, 1])
    assert request.raw_input_contents[0] == PIXELS
    assert [o.name for o in request.outputs] == ["probabilities"]


def test_rest_body_is_a_json_header_then_the_raw_tensor() -> None:
    body, length = rest_body(PIXELS)
    header = json.loads(body[:length])
    assert header["inputs"][0]["parameters"] == {"binary_data_size": 784}
    assert np.array_equal(np.frombuffer(body[length:], np.uint8), np.frombuffer(PIXELS, np.uint8))


@pytest.mark.parametrize(("text", "ms"), [("850.5us", 0.8505), ("12.25ms", 12.25), ("1.5s", 1500.0)])
def test_h2load_durations(text: str, ms: float) -> None:
    assert milliseconds(text) == pytest.approx(ms)
