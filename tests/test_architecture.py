"""The one-way flow: training -> models/ -> app. The service never pulls in TensorFlow or training."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import tomllib

import pytest

from app.cards import read_card, read_manifest
from tests.helpers import MODELS_DIR, ROOT


def test_importing_the_service_loads_neither_tensorflow_nor_training() -> None:
    code = (
        "import sys, app.main, app.__main__; app.main.create_app; "
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in {'tensorflow', 'keras', 'training', 'tf2onnx'}); "
        "print(','.join(bad))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert result.stdout.strip() == ""


@pytest.mark.parametrize("module", ["app.dataplane", "app.tensors", "app.runtime.registry"])
def test_the_core_knows_no_transport(module: str) -> None:
    """The core every front end calls (and the runtime under it) imports no web or RPC framework."""
    transports = "{'fastapi', 'starlette', 'grpc', 'uvicorn'}"
    code = f"import sys, {module}; print(','.join(sorted(m for m in sys.modules if m.split('.')[0] in {transports})))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert result.stdout.strip() == ""


def test_base_install_does_not_pull_in_tensorflow() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    base = " ".join(project["dependencies"]).lower()
    assert "tensorflow" not in base
    assert "matplotlib" not in base
    assert any("tensorflow" in d for d in project["optional-dependencies"]["train"])


def test_manifest_lists_the_four_models_with_cnn_as_default() -> None:
    manifest = read_manifest(MODELS_DIR)
    assert manifest.default_model == "cnn"
    assert [e.name for e in manifest.models] == ["svm", "softmax", "lenet", "cnn"]


@pytest.mark.parametrize("name", ["svm", "softmax", "lenet", "cnn"])
def test_committed_cards_validate_and_match_their_files(name: str) -> None:
    card = read_card(MODELS_DIR / name)
    content = (MODELS_DIR / name / card.file).read_bytes()
    assert hashlib.sha256(content).hexdigest() == card.file_sha256
    assert len(content) == card.file_bytes
    assert card.parity.images == 1000
    assert max(card.parity.max_abs_diff.values()) <= 1e-4
    assert card.metrics.test_images == 10_000
    assert [o.name for o in card.outputs[:2]] == ["logits", "probabilities"]
    assert {a.name for a in card.activations} <= {o.name for o in card.outputs}
    assert (MODELS_DIR / name / "card.md").is_file()


@pytest.mark.parametrize(("name", "target"), [("svm", 0.920), ("softmax", 0.924), ("lenet", 0.990), ("cnn", 0.996)])
def test_committed_models_meet_their_accuracy_targets(name: str, target: float) -> None:
    """As recorded on the full test set at export; tests/models re-measures on the shipped sample."""
    assert read_card(MODELS_DIR / name).metrics.test_accuracy >= target


@pytest.mark.parametrize("name", ["svm", "softmax", "lenet", "cnn"])
def test_committed_models_are_calibrated_and_carry_a_detector(name: str) -> None:
    """Issue 15's targets, as recorded on the full test set; tests/models re-measures on the shipped sample."""
    card = read_card(MODELS_DIR / name)
    assert card.calibration is not None
    assert card.detector is not None
    assert card.calibration.after.ece <= 0.01
    assert card.calibration.after.nll <= card.calibration.before.nll
    assert card.outputs[-1].name == card.detector.output == "digit_score"
    assert card.detector.test.non_digits >= 1000
    if name == "cnn":
        assert card.detector.test.digits_flagged <= 0.01
        assert card.detector.test.non_digits_caught >= 0.95
