"""GET/POST /explain: attribution maps over the 28x28 input, from a prediction's token or an upload."""

from __future__ import annotations

import base64

import numpy as np
import pytest
from fastapi.testclient import TestClient

from tests.helpers import encode
from training.data import Mnist


def explain_url(client: TestClient, image: np.ndarray, model: str) -> str:
    return client.post(f"/predict?model={model}", files={"file": encode(image)}).json()["explain_url"]


@pytest.mark.parametrize(
    ("model", "default", "methods"),
    [
        ("cnn", "integrated_gradients", ["integrated_gradients", "occlusion", "gradcam"]),
        ("softmax", "exact", ["exact", "integrated_gradients", "occlusion"]),
    ],
)
def test_token_route_answers_the_default_method(
    client: TestClient, mnist_sample: Mnist, model: str, default: str, methods: list[str]
) -> None:
    body = client.get(explain_url(client, mnist_sample.test.images[0], model)).json()
    assert body["method"] == default
    assert body["target"] == body["prediction"]["digit"] == mnist_sample.test.labels[0]
    assert set(body["methods"]) <= set(methods)
    assert body["methods"][0] == default
    attribution = np.array(body["attribution"])
    assert attribution.shape == (28, 28)
    assert body["min"] == pytest.approx(attribution.min(), abs=1e-4)
    assert np.array_equal(np.array(body["input"], dtype=np.uint8), mnist_sample.test.images[0])


def test_integrated_gradients_are_complete_on_the_explained_logit(client: TestClient, mnist_sample: Mnist) -> None:
    url = explain_url(client, mnist_sample.test.images[1], "lenet")
    body = client.get(url + "&method=integrated_gradients&steps=64").json()
    assert body["settings"] == {"steps": 64}
    assert body["baseline"] == "black"
    assert body["completeness_error"] < 0.01


@pytest.mark.parametrize("method", ["occlusion", "gradcam"])
def test_other_targets_and_methods(client: TestClient, mnist_sample: Mnist, method: str) -> None:
    url = explain_url(client, mnist_sample.test.images[0], "cnn")
    body = client.get(f"{url}&method={method}&target=9&patch=3&stride=3").json()
    assert (body["method"], body["target"]) == (method, 9)
    assert np.array(body["attribution"]).shape == (28, 28)
    if method == "occlusion":
        assert body["settings"] == {"patch": 3, "stride": 3}


def test_post_upload_and_raw_body_match_the_token_route(client: TestClient, mnist_sample: Mnist) -> None:
    image = mnist_sample.test.images[3]
    fetched = client.get(explain_url(client, image, "cnn") + "&method=occlusion").json()
    posted = client.post("/explain?model=cnn&method=occlusion", files={"file": encode(image)}).json()
    raw = client.post(
        "/explain?model=cnn&method=occlusion", content=encode(image), headers={"content-type": "image/png"}
    ).json()
    assert posted["attribution"] == fetched["attribution"] == raw["attribution"]


def test_base64_encoding_carries_the_same_map(client: TestClient, mnist_sample: Mnist) -> None:
    url = explain_url(client, mnist_sample.test.images[2], "svm")
    as_json = client.get(url).json()
    as_b64 = client.get(url + "&encoding=base64").json()
    decoded = np.frombuffer(base64.b64decode(as_b64["attribution"]), dtype="<f4").reshape(28, 28)
    np.testing.assert_allclose(decoded, np.array(as_json["attribution"]), atol=1e-4)


@pytest.mark.parametrize(
    ("query", "status", "code", "message"),
    [
        ("method=shap", 404, "unknown_method", "offered: integrated_gradients"),
        ("method=exact", 404, "unknown_method", "not offered for model 'cnn'"),
        ("model=softmax&method=gradcam", 404, "unknown_method", "offered: exact"),
        ("target=10", 422, "bad_target", "digit 0-9"),
        ("target=-1", 422, "bad_target", "digit 0-9"),
        ("steps=0", 422, "invalid_request", "steps"),
        ("steps=100000", 422, "invalid_request", "steps"),
        ("patch=15", 422, "invalid_request", "patch"),
        ("model=nope", 404, "unknown_model", "Unknown model"),
        ("encoding=xml", 422, "invalid_request", "encoding"),
    ],
)
def test_explain_errors(
    client: TestClient, mnist_sample: Mnist, query: str, status: int, code: str, message: str
) -> None:
    token = explain_url(client, mnist_sample.test.images[0], "cnn").split("input=")[1].split("&")[0]
    response = client.get(f"/explain?input={token}&{query}")
    assert (response.status_code, response.json()["code"]) == (status, code)
    assert message in response.json()["detail"]
    posted = client.post(f"/explain?{query}", files={"file": encode(mnist_sample.test.images[0])})
    assert (posted.status_code, posted.json()["code"]) == (status, code)


def test_bad_token_and_bad_upload(client: TestClient) -> None:
    assert client.get("/explain?input=abc").json()["code"] == "bad_token"
    blank = client.post("/explain", files={"file": encode(np.zeros((64, 64), np.uint8))})
    assert (blank.status_code, blank.json()["code"]) == (422, "blank_image")
