"""POST /v2/models/{name}/explain (Open Inference Protocol) and /v1/models/{name}:explain (KServe V1)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from fastapi.testclient import TestClient

from tests.helpers import encode
from training.data import Mnist


def v2_body(images: np.ndarray, **parameters: object) -> dict[str, object]:
    data = (images / 255.0).reshape(-1).tolist()
    tensor = {"name": "image", "shape": [len(images), 28, 28, 1], "datatype": "FP32", "data": data}
    return {"inputs": [tensor], "parameters": parameters}


def test_v2_explain_answers_one_map_per_image(client: TestClient, mnist_sample: Mnist) -> None:
    images = mnist_sample.test.images[:2]
    body = client.post("/v2/models/cnn/explain", json=v2_body(images, method="occlusion")).json()
    (output,) = body["outputs"]
    assert (output["name"], output["shape"], output["datatype"]) == ("explain", [2, 28, 28], "FP32")
    assert body["parameters"] == {"method": "occlusion", "targets": mnist_sample.test.labels[:2].tolist()}
    posted = client.post("/explain?model=cnn&method=occlusion", files={"file": encode(images[0])}).json()
    np.testing.assert_allclose(np.array(output["data"][:784]).reshape(28, 28), posted["attribution"], atol=1e-4)


def test_v2_explain_binary_output_and_targets(client: TestClient, mnist_sample: Mnist) -> None:
    images = mnist_sample.test.images[:2]
    body = v2_body(images, target=[3, 5], binary_data_output=True)
    response = client.post("/v2/models/softmax/versions/1/explain", json=body)
    length = int(response.headers["inference-header-content-length"])
    head = json.loads(response.content[:length])
    maps = np.frombuffer(response.content[length:], dtype="<f4").reshape(2, 28, 28)
    assert head["parameters"] == {"method": "exact", "targets": [3, 5]}
    assert np.abs(maps).max() > 0


@pytest.mark.parametrize(
    ("parameters", "fragment"),
    [({"method": "shap"}, "not offered"), ({"target": 12}, "digit 0-9"), ({"steps": "many"}, "integer")],
)
def test_v2_explain_errors_are_protocol_errors(
    client: TestClient, mnist_sample: Mnist, parameters: dict[str, object], fragment: str
) -> None:
    response = client.post("/v2/models/cnn/explain", json=v2_body(mnist_sample.test.images[:1], **parameters))
    assert 400 <= response.status_code < 500
    assert fragment in response.json()["error"]


def test_v1_explain_takes_0_255_or_unit_instances(client: TestClient, mnist_sample: Mnist) -> None:
    image = mnist_sample.test.images[4]
    as_bytes = {"instances": [image.tolist()]}
    as_unit = {"instances": [(image / 255.0).tolist()], "parameters": {"method": "integrated_gradients"}}
    first = client.post("/v1/models/lenet:explain", json=as_bytes).json()["explanations"]
    second = client.post("/v1/models/lenet:explain", json=as_unit).json()["explanations"]
    assert first == second
    assert (first[0]["method"], first[0]["target"]) == ("integrated_gradients", mnist_sample.test.labels[4])
    assert np.array(first[0]["attribution"]).shape == (28, 28)


def test_v1_explain_errors(client: TestClient) -> None:
    assert (
        client.post("/v1/models/nope:explain", json={"instances": [[[0] * 28] * 28]}).json()["code"] == "unknown_model"
    )
    bad = client.post("/v1/models/cnn:explain", json={"instances": [[[0] * 27] * 28]})
    assert (bad.status_code, bad.json()["code"]) == (400, "invalid_inference_request")
