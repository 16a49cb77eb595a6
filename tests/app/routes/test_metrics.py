from __future__ import annotations

import json
import logging

import pytest
from fastapi.testclient import TestClient

from app.observability import JsonFormatter, request_id
from tests.helpers import encode
from training.data import Mnist


def metric(text: str, name: str, **labels: str) -> float:
    """The value of one sample in Prometheus text format."""
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        if line.startswith(name + "{"):
            sample_labels, value = line[len(name) + 1 :].rsplit("} ", 1)
            if ",".join(sorted(sample_labels.split(","))) == wanted:
                return float(value)
    return 0.0


def test_metrics_count_requests_inferences_and_batches(client: TestClient, mnist_sample: Mnist) -> None:
    before = client.get("/metrics").text
    for image in mnist_sample.test.images[:3]:
        client.post("/predict?model=svm", files={"file": encode(image)})
    client.post("/predict?model=svm", files={"file": b"nope"})
    after = client.get("/metrics")
    assert after.headers["content-type"].startswith("text/plain")
    text = after.text

    def grew(name: str, **labels: str) -> float:
        return metric(text, name, **labels) - metric(before, name, **labels)

    assert grew("mnist_http_requests_total", method="POST", route="/predict", status="200") == 3
    assert grew("mnist_http_requests_total", method="POST", route="/predict", status="415") == 1
    assert grew("mnist_inference_images_total", model="svm") == 3
    assert grew("mnist_batch_size_count", model="svm") >= 1
    assert grew("mnist_batch_queue_wait_seconds_count", model="svm") >= 1
    assert grew("mnist_http_request_duration_seconds_count", method="POST", route="/predict") == 4
    assert metric(text, "mnist_model_loaded", model="cnn") == 1.0


def test_request_id_is_honoured_or_made(client: TestClient) -> None:
    assert client.get("/health/live", headers={"X-Request-ID": "abc-123"}).headers["x-request-id"] == "abc-123"
    made = client.get("/health/live").headers["x-request-id"]
    assert len(made) == 32
    hostile = client.get("/health/live", headers={"X-Request-ID": "a\tb" + "x" * 300}).headers["x-request-id"]
    assert hostile != "a\tb" + "x" * 300


def test_logs_are_json_with_the_request_id() -> None:
    token = request_id.set("req-42")
    try:
        record = logging.LogRecord("app", logging.INFO, __file__, 1, "hello %s", ("world",), None)
        record.fields = {"status": 200}
        entry = json.loads(JsonFormatter().format(record))
    finally:
        request_id.reset(token)
    assert entry["message"] == "hello world"
    assert entry["request_id"] == "req-42"
    assert entry["status"] == 200


@pytest.mark.parametrize("path", ["/health/live/x1", "/nowhere/x1"])
def test_unmatched_routes_do_not_explode_label_cardinality(client: TestClient, path: str) -> None:
    def unmatched_404s() -> float:
        text = client.get("/metrics").text
        line = 'mnist_http_requests_total{method="GET",route="unmatched",status="404"}'
        return float(next((row.split()[-1] for row in text.splitlines() if row.startswith(line)), 0))

    before = unmatched_404s()
    assert client.get(path).status_code == 404
    text = client.get("/metrics").text
    assert f'route="{path}"' not in text  # the raw path would make one series per URL a client invents
    assert unmatched_404s() == before + 1
