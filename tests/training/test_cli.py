"""The whole training pipeline, end to end, on the shipped sample: train, export, evaluate, cards, manifest."""

from __future__ import annotations

import functools
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from app.cards import read_card, read_manifest
from tests.helpers import MODELS_DIR, SAMPLE_DIR, encode
from training import pipeline
from training.__main__ import build_parser, main
from training.data import Mnist
from training.line_weighing import weigh_lines


def test_help_documents_every_option(capsys: pytest.CaptureFixture[str]) -> None:
    for command in ("train", "evaluate", "download"):
        with pytest.raises(SystemExit):
            build_parser().parse_args([command, "--help"])
        out = capsys.readouterr().out
        assert "--data-dir" in out
    parser = build_parser()
    for action in parser._subparsers._group_actions[0].choices["train"]._actions:  # type: ignore[union-attr]
        assert action.help, action.dest


def test_missing_data_is_a_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["evaluate", "--data-dir", str(tmp_path)]) == 2
    assert "not found" in capsys.readouterr().err


@pytest.mark.slow
def test_train_all_on_the_sample_produces_servable_models(
    tmp_path: Path, mnist_sample: Mnist, monkeypatch: pytest.MonkeyPatch
) -> None:
    models_dir = tmp_path / "models"
    (models_dir / "cnn").mkdir(parents=True)
    for kept in ("card.json", "line.onnx"):  # a line reader from before, which the retrained cnn keeps
        shutil.copy(MODELS_DIR / "cnn" / kept, models_dir / "cnn" / kept)
    monkeypatch.setattr(pipeline, "weigh_lines", functools.partial(weigh_lines, photos=6, styles=3))
    args = ["--data-dir", str(SAMPLE_DIR), "--no-verify", "--validation-size", "100", "--models-dir", str(models_dir)]
    quick = ["--epochs", "1", "--iterations", "300", "--checkpoints", str(tmp_path / "checkpoints")]
    assert main(["train", "--model", "all", *args, *quick]) == 0

    manifest = read_manifest(models_dir)
    assert manifest.default_model == "cnn"
    assert [e.name for e in manifest.models] == ["svm", "softmax", "lenet", "cnn"]
    lenet = read_card(models_dir / "lenet")
    assert [(a.name, a.shape) for a in lenet.activations] == [("conv1", [32, 28, 28]), ("conv2", [64, 14, 14])]
    assert lenet.parity.max_abs_diff["conv2"] <= 1e-4
    assert lenet.training["config"]["epochs"] == 1
    svm = read_card(models_dir / "svm")
    assert "test_accuracy" in svm.training["notebook_settings"]
    assert (models_dir / "cnn" / "card.md").read_text().startswith("# cnn")
    assert (models_dir / "lenet" / "figures" / "activations_conv1.png").is_file()
    assert json.loads((models_dir / "cnn" / "card.json").read_text())["data_checksums"]
    assert read_card(models_dir / "cnn").piece_verifier is not None  # /read's model only
    line = read_card(models_dir / "cnn").line_reader
    assert line is not None
    assert line.weighing is not None
    assert line.weighing.numbers == 9  # weighed anew against the retrained cnn's answers
    assert lenet.piece_verifier is None
    assert "## Piece verifier" in (models_dir / "cnn" / "card.md").read_text()

    # The service loads what training wrote: models/ is the only contract between the two.
    from fastapi.testclient import TestClient

    from app.main import create_app
    from app.settings import Settings

    with TestClient(create_app(Settings(models_dir=models_dir))) as client:
        assert client.get("/health/ready").json()["status"] == "ready"
        answer = client.post("/predict?model=svm", files={"file": encode(mnist_sample.test.images[0])})
        assert answer.status_code == 200
        assert np.isclose(sum(answer.json()["probabilities"]), 1.0, atol=1e-4)
