from __future__ import annotations

import base64

import numpy as np
import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from tests.helpers import encode
from training.data import Mnist


def activations_url(client: TestClient, image: np.ndarray, model: str) -> str:
    return client.post(f"/predict?model={model}", files={"file": encode(image)}).json()["activations_url"]


def test_lenet_maps_are_the_notebooks(client: TestClient, mnist_sample: Mnist) -> None:
    body = client.get(activations_url(client, mnist_sample.test.images[0], "lenet")).json()
    assert body["model"] == "lenet"
    assert body["kind"] == "cnn"
    assert np.array_equal(np.array(body["input"], dtype=np.uint8), mnist_sample.test.images[0])
    layers = {layer["name"]: layer for layer in body["layers"]}
    assert [layers["conv1"]["shape"], layers["conv2"]["shape"]] == [[32, 28, 28], [64, 14, 14]]
    conv1 = np.array(layers["conv1"]["data"])
    assert conv1.shape == (32, 28, 28)
    assert conv1.min() >= 0  # ReLU
    assert layers["conv1"]["max"] == pytest.approx(conv1.max(), abs=1e-4)


def test_layer_selection_and_base64(client: TestClient, mnist_sample: Mnist) -> None:
    url = activations_url(client, mnist_sample.test.images[0], "lenet")
    as_json = client.get(url + "&layer=conv2").json()["layers"]
    as_b64 = client.get(url + "&layer=conv2&encoding=base64").json()["layers"]
    assert [layer["name"] for layer in as_json] == ["conv2"]
    decoded = np.frombuffer(base64.b64decode(as_b64[0]["data"]), dtype="<f4").reshape(64, 14, 14)
    np.testing.assert_allclose(decoded, np.array(as_json[0]["data"]), atol=1e-5)


def test_linear_model_returns_evidence_maps(client: TestClient, mnist_sample: Mnist) -> None:
    body = client.get(activations_url(client, mnist_sample.test.images[0], "softmax")).json()
    assert body["kind"] == "linear"
    assert [(layer["name"], layer["shape"]) for layer in body["layers"]] == [("evidence", [10, 28, 28])]


def test_post_activations_matches_the_token_route(client: TestClient, mnist_sample: Mnist) -> None:
    image = encode(mnist_sample.test.images[3])
    posted = client.post("/activations?model=cnn&layer=conv1", files={"file": image}).json()
    fetched = client.get(activations_url(client, mnist_sample.test.images[3], "cnn") + "&layer=conv1").json()
    assert posted == fetched


def test_a_second_instance_answers_the_first_ones_url(client: TestClient, settings, mnist_sample: Mnist) -> None:
    url = activations_url(client, mnist_sample.test.images[5], "cnn")
    with TestClient(create_app(settings)) as other:
        assert other.get(url).json() == client.get(url).json()


@pytest.mark.parametrize(
    ("query", "status", "code"),
    [
        ("input=abc", 400, "bad_token"),
        ("input=", 400, "bad_token"),
        ("", 422, "invalid_request"),
        ("input={token}&model=nope", 404, "unknown_model"),
        ("input={token}&model=lenet&layer=fc1", 404, "unknown_layer"),
        ("input={token}&encoding=xml", 422, "invalid_request"),
    ],
)
def test_activation_errors(client: TestClient, mnist_sample: Mnist, query: str, status: int, code: str) -> None:
    token = activations_url(client, mnist_sample.test.images[0], "cnn").split("input=")[1].split("&")[0]
    response = client.get("/activations?" + query.format(token=token))
    assert response.status_code == status
    assert response.json()["code"] == code
