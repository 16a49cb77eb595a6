"""The model repository extension, driven by the unmodified Triton HTTP client against the real process: index,
load (again, broken, changed), unload; and the API key on its endpoints."""

from __future__ import annotations

import json
import shutil
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tritonclient.http as triton
from fastapi.testclient import TestClient
from tritonclient.utils import InferenceServerException

from app.main import create_app
from app.settings import Settings
from benchmarks.bench import serve
from tests.conftest import SERVICE, free_port, service_env
from tests.helpers import MODELS_DIR


def copy_models(target: Path, names: tuple[str, ...] = ("cnn", "lenet")) -> Path:
    """A repository of its own (the tests change its files), with cnn as the default."""
    for name in names:
        shutil.copytree(MODELS_DIR / name, target / name, ignore=shutil.ignore_patterns("figures", "*.md"))
    manifest = {"default_model": "cnn", "models": [{"name": n, "path": n} for n in names]}
    (target / "manifest.json").write_text(json.dumps(manifest))
    return target


def set_card_version(folder: Path, version: str) -> None:
    card = json.loads((folder / "card.json").read_text())
    card["version"] = version
    (folder / "card.json").write_text(json.dumps(card))


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return copy_models(tmp_path_factory.mktemp("repository"))


@pytest.fixture(scope="module")
def server(repository: Path) -> Iterator[str]:
    port = free_port()
    env = {**service_env(port), "MNIST_MODELS_DIR": str(repository)}
    with serve(SERVICE, f"http://127.0.0.1:{port}/health/ready", env):
        yield f"127.0.0.1:{port}"


@pytest.fixture
def client(server: str) -> triton.InferenceServerClient:
    return triton.InferenceServerClient(url=server)


def index(client: triton.InferenceServerClient) -> dict[str, dict[str, str]]:
    return {entry["name"]: entry for entry in client.get_model_repository_index()}


def infer_lenet(client: triton.InferenceServerClient) -> np.ndarray:
    request = triton.InferInput("image", [1, 28, 28, 1], "FP32")
    request.set_data_from_numpy(np.zeros((1, 28, 28, 1), np.float32))
    return client.infer("lenet", [request]).as_numpy("probabilities")


def get_json(server: str, path: str) -> object:
    with urllib.request.urlopen(f"http://{server}{path}", timeout=20) as response:
        return json.loads(response.read())


def test_the_index_lists_every_model_ready(client: triton.InferenceServerClient) -> None:
    assert index(client) == {
        "cnn": {"name": "cnn", "version": "1", "state": "READY", "reason": ""},
        "lenet": {"name": "lenet", "version": "1", "state": "READY", "reason": ""},
    }


def test_a_model_loads_again_and_serves(client: triton.InferenceServerClient, server: str) -> None:
    before = {m["name"]: m for m in get_json(server, "/models")}["lenet"]  # type: ignore[union-attr]
    client.load_model("lenet")
    after = {m["name"]: m for m in get_json(server, "/models")}["lenet"]  # type: ignore[union-attr]
    assert after["revision"] == before["revision"]  # same file
    assert after["loaded_at"] > before["loaded_at"]
    assert client.is_model_ready("lenet")
    assert infer_lenet(client).shape == (1, 10)


def test_a_failed_load_keeps_the_old_version_serving_and_says_why(
    client: triton.InferenceServerClient, repository: Path
) -> None:
    onnx = repository / "lenet" / "model.onnx"
    good = onnx.read_bytes()
    expected = infer_lenet(client)
    onnx.write_bytes(good[: len(good) // 2])
    try:
        with pytest.raises(InferenceServerException, match=r"does not match the checksum.*version 1 .* still serves"):
            client.load_model("lenet")
        np.testing.assert_array_equal(infer_lenet(client), expected)
        entry = index(client)["lenet"]
        assert entry["state"] == "READY"
        assert entry["reason"].startswith("the last load failed:")
    finally:
        onnx.write_bytes(good)
    client.load_model("lenet")
    assert index(client)["lenet"]["reason"] == ""


def test_a_changed_card_is_served_after_a_load(
    client: triton.InferenceServerClient, repository: Path, server: str
) -> None:
    set_card_version(repository / "lenet", "2")
    try:
        client.load_model("lenet")
        assert client.get_model_metadata("lenet")["versions"] == ["2"]
        assert index(client)["lenet"]["version"] == "2"
        assert {m["name"]: m for m in get_json(server, "/models")}["lenet"]["version"] == "2"  # type: ignore[union-attr]
        with urllib.request.urlopen(f"http://{server}/metrics", timeout=20) as response:
            metrics = response.read().decode()
        assert 'mnist_model_info{model="lenet",revision="' in metrics
        [info] = [line for line in metrics.splitlines() if line.startswith('mnist_model_info{model="lenet"')]
        assert 'version="2"' in info  # the old version's line is gone
    finally:
        set_card_version(repository / "lenet", "1")
        client.load_model("lenet")


def test_unload_then_load(client: triton.InferenceServerClient) -> None:
    client.unload_model("lenet")
    try:
        assert not client.is_model_ready("lenet")
        assert index(client)["lenet"] == {"name": "lenet", "version": "1", "state": "UNAVAILABLE", "reason": "unloaded"}
        assert [e["name"] for e in client.get_model_repository_index(query_params=None)] == ["cnn", "lenet"]
        with pytest.raises(InferenceServerException, match="unloaded"):
            infer_lenet(client)
    finally:
        client.load_model("lenet")
    assert client.is_model_ready("lenet")


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda c: c.unload_model("cnn"), "'cnn' is the default model"),
        (lambda c: c.load_model("nope"), "Unknown model 'nope'; available: cnn, lenet"),
        (lambda c: c.unload_model("nope"), "Unknown model 'nope'"),
        (lambda c: c.load_model("lenet", config='{"backend": "onnxruntime"}'), "not supported"),
    ],
)
def test_refusals_reach_the_client(client: triton.InferenceServerClient, call, message: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(InferenceServerException, match=message):
        call(client)
    assert client.is_model_ready("cnn")


def test_statuses_and_codes(tmp_path: Path) -> None:
    """REST clients get the status; the codes (also in the gRPC mapping) are in the README's table."""
    settings = Settings(models_dir=copy_models(tmp_path), model_process=False, api_key="k3y-for-tests")
    with TestClient(create_app(settings)) as http:
        assert http.post("/v2/repository/index").status_code == 401
        keyed = {"X-API-Key": "k3y-for-tests"}
        assert http.post("/v2/repository/index", headers=keyed).status_code == 200
        assert http.post("/v2/repository/index", headers=keyed, json={"ready": True}).status_code == 200
        refused = http.post("/v2/repository/models/cnn/unload", headers=keyed)
        assert (refused.status_code, refused.json()) == (
            409,
            {
                "error": "Model 'cnn' is the default model (MNIST_DEFAULT_MODEL): it cannot be unloaded; load it again "
                "to replace it, or restart with another default."
            },
        )
        (tmp_path / "lenet" / "card.json").write_text("{}")
        failed = http.post("/v2/repository/models/lenet/load", headers=keyed)
        assert failed.status_code == 400
        assert failed.json()["error"].startswith("Model 'lenet' failed to load: ")
        assert "validation error" in failed.json()["error"]
        assert http.post("/v2/repository/models/nope/load", headers=keyed).status_code == 404
        ready_only = http.post("/v2/repository/index", headers=keyed, json={"ready": True}).json()
        assert [e["name"] for e in ready_only] == ["cnn", "lenet"]  # lenet's old version still serves
