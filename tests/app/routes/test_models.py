from __future__ import annotations

from fastapi.testclient import TestClient


def test_models_lists_every_bundled_model(client: TestClient) -> None:
    models = {m["name"]: m for m in client.get("/models").json()}
    assert list(models) == ["svm", "softmax", "lenet", "cnn"]
    assert models["cnn"]["default"] is True
    assert all(m["status"] == "ready" for m in models.values())
    assert models["lenet"]["activations"][0] == {
        "name": "conv1",
        "shape": [32, 28, 28],
        "description": "ReLU output of a 5x5 convolution with 32 filters",
    }
    assert models["svm"]["providers"] == ["CPUExecutionProvider"]
    assert models["svm"]["input"]["shape"] == [-1, 28, 28, 1]


def test_model_detail_has_the_card(client: TestClient) -> None:
    body = client.get("/models/lenet").json()
    assert body["name"] == "lenet"
    card = body["card"]
    assert card["metrics"]["test_accuracy"] >= 0.99
    assert len(card["metrics"]["confusion_matrix"]) == 10
    assert card["training"]["config"]["architecture"] == "lenet"


def test_unknown_model_is_404(client: TestClient) -> None:
    response = client.get("/models/resnet")
    assert response.status_code == 404
    assert response.json() == {
        "detail": "Unknown model 'resnet'; available: svm, softmax, lenet, cnn.",
        "code": "unknown_model",
    }


def test_openapi_documents_the_endpoints_with_examples(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    predict = spec["paths"]["/predict"]["post"]
    assert {"multipart/form-data", "image/png"} <= set(predict["requestBody"]["content"])
    assert predict["responses"]["415"]["content"]["application/json"]["example"]["code"] == "not_an_image"
    assert "examples" in spec["components"]["schemas"]["Prediction"]["properties"]["digit"]
    assert client.get("/docs").status_code == 200
