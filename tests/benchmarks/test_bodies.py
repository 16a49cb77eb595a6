"""The benchmark's request bodies are what the service accepts, so its load tests measure real work."""

from __future__ import annotations

import json
from pathlib import Path

from fastapi.testclient import TestClient

from benchmarks.bench import MULTIPART, write_bodies
from benchmarks.soak import write_cases


def test_bench_bodies_are_valid_requests(client: TestClient, tmp_path: Path) -> None:
    bodies = write_bodies(tmp_path, count=4)
    for path in bodies["multipart"]:
        response = client.post("/predict", content=path.read_bytes(), headers={"content-type": MULTIPART})
        assert response.status_code == 200
    for path in bodies["v2"]:
        response = client.post(
            "/v2/models/cnn/infer", content=path.read_bytes(), headers={"content-type": "application/json"}
        )
        assert response.status_code == 200
        assert [o["name"] for o in json.loads(response.text)["outputs"]] == ["probabilities"]


def test_soak_cases_get_the_status_they_expect(client: TestClient, tmp_path: Path) -> None:
    for argument in write_cases(tmp_path):
        file, content_type, path, status = argument.rsplit(":", 3)
        response = client.post(path, content=Path(file).read_bytes(), headers={"content-type": content_type})
        assert response.status_code == int(status), (path, response.text)
