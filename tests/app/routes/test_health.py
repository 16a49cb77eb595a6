from __future__ import annotations

from fastapi.testclient import TestClient


def test_live(client: TestClient) -> None:
    assert client.get("/health/live").json() == {"status": "alive", "models": {}}


def test_ready_when_every_model_is_loaded(client: TestClient) -> None:
    response = client.get("/health/ready")
    assert response.status_code == 200
    assert response.json() == {
        "status": "ready",
        "models": {"svm": "ready", "softmax": "ready", "lenet": "ready", "cnn": "ready"},
    }
