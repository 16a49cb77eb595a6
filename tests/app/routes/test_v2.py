"""The Open Inference Protocol, checked with the real Triton HTTP client against the running service."""

from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.http as triton
from fastapi.testclient import TestClient
from tritonclient.utils import InferenceServerException

from tests.helpers import MODELS_DIR
from training.data import Mnist


@pytest.fixture(scope="module")
def triton_client(live_server: str) -> triton.InferenceServerClient:
    return triton.InferenceServerClient(url=live_server)


def direct(model: str, images: np.ndarray, output: str) -> np.ndarray:
    session = ort.InferenceSession(str(MODELS_DIR / model / "model.onnx"), providers=["CPUExecutionProvider"])
    return session.run([output], {"image": images})[0]


def test_server_and_model_status(triton_client: triton.InferenceServerClient) -> None:
    assert triton_client.is_server_live()
    assert triton_client.is_server_ready()
    assert triton_client.is_model_ready("cnn")
    assert triton_client.is_model_ready("lenet", model_version="1")
    assert not triton_client.is_model_ready("nope")
    assert "binary_tensor_data" in triton_client.get_server_metadata()["extensions"]


def test_model_metadata(triton_client: triton.InferenceServerClient) -> None:
    metadata = triton_client.get_model_metadata("lenet")
    assert metadata["versions"] == ["1"]
    assert metadata["platform"] == "onnxruntime_onnx"
    assert metadata["inputs"] == [{"name": "image", "datatype": "FP32", "shape": [-1, 28, 28, 1]}]
    outputs = {o["name"]: o["shape"] for o in metadata["outputs"]}
    assert outputs == {
        "logits": [-1, 10],
        "probabilities": [-1, 10],
        "conv1": [-1, 32, 28, 28],
        "conv2": [-1, 64, 14, 14],
        "digit_score": [-1, 1],
    }


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_infer_matches_onnx_runtime(
    triton_client: triton.InferenceServerClient, mnist_sample: Mnist, binary: bool
) -> None:
    images = (mnist_sample.test.images[:16].astype(np.float32) / 255)[..., None]
    request = triton.InferInput("image", list(images.shape), "FP32")
    request.set_data_from_numpy(images, binary_data=binary)
    names = ("probabilities", "conv1", "digit_score")
    outputs = [triton.InferRequestedOutput(name, binary_data=binary) for name in names]
    result = triton_client.infer("lenet", [request], outputs=outputs, request_id="req-7")
    assert result.get_response()["id"] == "req-7"
    np.testing.assert_allclose(result.as_numpy("probabilities"), direct("lenet", images, "probabilities"), atol=1e-6)
    np.testing.assert_allclose(result.as_numpy("conv1"), direct("lenet", images, "conv1"), atol=1e-5)
    np.testing.assert_allclose(result.as_numpy("digit_score"), direct("lenet", images, "digit_score"), atol=1e-6)
    assert result.as_numpy("probabilities").argmax(1).tolist() == mnist_sample.test.labels[:16].tolist()


def test_uint8_input_and_versioned_route(triton_client: triton.InferenceServerClient, mnist_sample: Mnist) -> None:
    images = mnist_sample.test.images[:4][..., None]
    request = triton.InferInput("image", list(images.shape), "UINT8")
    request.set_data_from_numpy(images)
    result = triton_client.infer("cnn", [request], model_version="1")
    expected = direct("cnn", images.astype(np.float32) / 255, "probabilities")
    np.testing.assert_allclose(result.as_numpy("probabilities"), expected, atol=1e-6)


def test_errors_reach_the_client(triton_client: triton.InferenceServerClient) -> None:
    request = triton.InferInput("image", [1, 28, 28, 1], "FP32")
    request.set_data_from_numpy(np.full((1, 28, 28, 1), np.nan, dtype=np.float32))
    with pytest.raises(InferenceServerException, match="finite"):
        triton_client.infer("cnn", [request])
    with pytest.raises(InferenceServerException, match="Unknown model"):
        triton_client.get_model_metadata("resnet")


def v2_body(shape: list[int], datatype: str = "FP32", data: object = None, **extra: object) -> dict[str, object]:
    count = int(np.prod(shape)) if all(d > 0 for d in shape) else 0
    tensor = {"name": "image", "shape": shape, "datatype": datatype, "data": [0.5] * count if data is None else data}
    return {"inputs": [tensor], **extra}


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        (v2_body([1, 28, 28]), 400, "is not [N, 28, 28, 1]"),
        (v2_body([1, 28, 28, 1], "INT64"), 400, "datatype 'INT64'"),
        (v2_body([1, 28, 28, 1], data=[0.5] * 10), 400, "has 10 values"),
        (v2_body([1, 28, 28, 1], data=[[0.5, "a"]]), 400, "must be numbers"),
        (v2_body([1, 28, 28, 1], data=[2.0] * 784), 400, "lie in [0, 1]"),
        (v2_body([1, 28, 28, 1], "UINT8", data=[300] * 784), 400, "whole numbers in [0, 255]"),
        (v2_body([10**12, 28, 28, 1], data=[]), 400, "at most 8"),
        (v2_body([9, 28, 28, 1]), 400, "at most 8"),
        (v2_body([0, 28, 28, 1], data=[]), 400, "is not [N, 28, 28, 1]"),
        ({"inputs": []}, 400, "exactly one input"),
        ({"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}]}, 400, "exactly one input"),
        ({"input": "nothing"}, 400, "not a valid inference request"),
        (v2_body([1, 28, 28, 1], outputs=[{"name": "fc1"}]), 400, "Unknown output 'fc1'"),
        (
            v2_body([1, 28, 28, 1], outputs=[{"name": "probabilities", "parameters": {"classification": 3}}]),
            501,
            "classification extension is not offered",
        ),
    ],
)
def test_protocol_errors(client: TestClient, body: dict[str, object], status: int, message: str) -> None:
    response = client.post("/v2/models/lenet/infer", json=body)
    assert response.status_code == status, response.text
    assert set(response.json()) == {"error"}
    assert message in response.json()["error"]


def test_nested_data_and_json_only_response(client: TestClient, mnist_sample: Mnist) -> None:
    image = (mnist_sample.test.images[0].astype(np.float32) / 255)[None, ..., None]
    body = {
        "id": "a",
        "inputs": [{"name": "image", "shape": [1, 28, 28, 1], "datatype": "FP32", "data": image.tolist()}],
        "outputs": [{"name": "probabilities"}],
    }
    answer = client.post("/v2/models/cnn/infer", json=body).json()
    assert answer["model_name"] == "cnn"
    assert answer["outputs"][0]["shape"] == [1, 10]
    assert int(np.argmax(answer["outputs"][0]["data"])) == 7


def test_unknown_version_and_bad_header(client: TestClient) -> None:
    assert client.get("/v2/models/cnn/versions/2").status_code == 404
    body = json.dumps(v2_body([1, 28, 28, 1])).encode()
    response = client.post("/v2/models/cnn/infer", content=body, headers={"Inference-Header-Content-Length": "999999"})
    assert response.status_code == 400
    assert "Inference-Header-Content-Length" in response.json()["error"]
