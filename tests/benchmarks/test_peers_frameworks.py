"""The framework peers (benchmarks/peers_frameworks.py) serve the same model and do the same work as /predict.

Checked without the frameworks: their service files are valid Python that prepare images with the shared
peers_digit module, whose preparation and answers are compared here with the service's own on the same uploads.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from app.preprocess import model_input, preprocess
from benchmarks import peers_digit
from benchmarks.bench import MULTIPART, Run, digits, median_runs, multipart_body, peer_targets, png
from benchmarks.peers_frameworks import PEERS, model_path, peer_env, peer_folder, peer_python
from benchmarks.peers_memory import tree_rss_bytes

UPLOAD_PEERS = [name for name, peer in PEERS.items() if peer.body == "multipart"]


def imported_names(source: str) -> set[str]:
    tree = ast.parse(source)
    modules = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    return modules | {node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}


def called_names(source: str) -> set[str]:
    calls = (node.func for node in ast.walk(ast.parse(source)) if isinstance(node, ast.Call))
    return {f.attr for f in calls if isinstance(f, ast.Attribute)}


def test_every_peer_has_a_server() -> None:
    assert set(PEERS) == {"mlserver", "litserve", "bentoml"}
    assert UPLOAD_PEERS == ["litserve", "bentoml"]


@pytest.mark.parametrize("name", UPLOAD_PEERS)
def test_upload_peers_run_valid_python_on_the_shared_preparation(name: str, tmp_path: Path) -> None:
    peer = PEERS[name]
    folder = peer_folder(tmp_path / name, peer, "cnn", 18999)
    service = (folder / f"peers_{name}.py").read_text()
    compile(service, f"peers_{name}.py", "exec")  # valid Python for the venv's interpreter (3.11, as ours)
    assert (folder / "peers_digit.py").read_text() == Path(peers_digit.__file__).read_text()
    assert {"peers_digit", name} <= imported_names(service)
    assert {"probabilities", "answer"} <= called_names(service)
    assert called_names(service) & {"upload_pixels", "image_pixels"}
    assert "max_batch_size=MAX_BATCH_SIZE" in service  # the framework's own batching, on
    assert peer.infer_path("cnn") == "/predict"


@pytest.mark.parametrize("name", list(PEERS))
def test_every_peer_serves_the_services_onnx_file(name: str, tmp_path: Path) -> None:
    folder = peer_folder(tmp_path / name, PEERS[name], "lenet", 18999)
    if name == "mlserver":
        uri = json.loads((folder / "model-settings.json").read_text())["parameters"]["uri"]
        assert Path(uri) == model_path("lenet")
        assert json.loads((folder / "settings.json").read_text())["http_port"] == 18999
    else:
        assert Path(peer_env("lenet")["PEER_MODEL_PATH"]) == model_path("lenet")
    assert model_path("lenet").is_file()


def test_peers_prepare_mnist_uploads_as_the_service_does() -> None:
    for image in digits(8):
        upload = png(image)
        expected = model_input(preprocess(upload)[np.newaxis])[0]
        np.testing.assert_array_equal(peers_digit.upload_pixels(upload), expected)


def test_peers_answer_what_the_service_answers(client: TestClient) -> None:
    session = peers_digit.open_session(str(model_path("cnn")))
    uploads = [png(image) for image in digits(8)]
    batch = np.stack([peers_digit.upload_pixels(upload) for upload in uploads])
    for upload, row in zip(uploads, peers_digit.probabilities(session, batch), strict=True):
        served = client.post("/predict?model=cnn", content=multipart_body(upload), headers={"content-type": MULTIPART})
        answer = peers_digit.answer(row)
        assert answer["digit"] == served.json()["digit"]
        np.testing.assert_allclose(answer["probabilities"], served.json()["probabilities"], atol=1e-4)


def test_a_venv_with_the_same_pins_is_reused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    venv = tmp_path / "venv-litserve"
    venv.mkdir()
    (venv / ".installed").write_text("\n".join(PEERS["litserve"].packages))

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"nothing should be installed: {args}")

    monkeypatch.setattr(subprocess, "run", refuse)
    assert peer_python(venv, PEERS["litserve"].packages) == venv.absolute() / "bin" / "python"
    with pytest.raises(AssertionError, match="nothing should be installed"):
        peer_python(venv, ("litserve==0.0.1",))  # other pins: the venv is made again


def test_the_service_is_compared_with_the_fastest_peer() -> None:
    runs = [
        Run("service", "cnn", 1, 64, 3_000.0, 18.0, 25.0, 0),
        Run("service", "cnn", 1, 16, 9_000.0, 2.0, 3.0, 0),  # another concurrency: not compared
        Run(PEERS["mlserver"].label, "cnn", 1, 64, 1_300.0, 44.0, 106.0, 0),
        Run(PEERS["litserve"].label, "cnn", 2, 64, 1_800.0, 30.0, 60.0, 0),
        Run(PEERS["bentoml"].label, "cnn", 2, 64, 900.0, 70.0, 140.0, 0),
        Run("naive keras", "cnn", 1, 64, 5_000.0, 1.0, 1.0, 0),  # not a framework peer
    ]
    assert peer_targets(runs, 64) == {
        "cnn": {
            "service_requests_per_s": 3_000,
            "best_peer": PEERS["litserve"].label,
            "best_peer_requests_per_s": 1_800,
            "vs_best_peer": 1.67,
            ">= 1.5x the best peer": True,
        }
    }
    assert peer_targets(runs, 16) == {}


def test_the_memory_of_a_server_counts_its_children() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; b = bytearray(64 << 20); time.sleep(30)"])
    try:
        alone = 0
        for _ in range(100):  # until the child has touched its 64 MB
            if (alone := tree_rss_bytes(child.pid)) > 64 << 20:
                break
            time.sleep(0.05)
        assert alone > 64 << 20
        assert tree_rss_bytes(os.getpid()) >= alone  # this process's tree holds the child
    finally:
        child.kill()
        child.wait()


def test_rounds_are_judged_on_each_systems_median() -> None:
    label = PEERS["litserve"].label
    runs = [
        Run("service", "cnn", 1, 64, 3_000.0, 18.0, 25.0, 0, 250.0),
        Run(label, "cnn", 2, 64, 1_000.0, 60.0, 90.0, 0, 490.0),
        Run("service", "cnn", 1, 64, 1_000.0, 60.0, 200.0, 2, 260.0),  # a round on a busy machine
        Run(label, "cnn", 2, 64, 1_200.0, 50.0, 80.0, 0, 500.0),
        Run("service", "cnn", 1, 64, 2_800.0, 20.0, 30.0, 0, 255.0),
        Run(label, "cnn", 2, 64, 500.0, 120.0, 300.0, 1, 495.0),
    ]
    service, peer = median_runs(runs)
    assert service == Run("service", "cnn", 1, 64, 2_800.0, 20.0, 30.0, 2, 260.0)
    assert peer == Run(label, "cnn", 2, 64, 1_000.0, 60.0, 90.0, 1, 500.0)
    assert peer_targets([service, peer], 64)["cnn"]["vs_best_peer"] == 2.8
