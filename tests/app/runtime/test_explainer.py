"""app.runtime.explainer: explain.onnx opened beside its model, or left out (logged) when it cannot be trusted."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from app.cards import read_card
from app.explain import offered_methods
from app.runtime.explainer import open_explainer
from app.runtime.session import CPU, session_options
from tests.helpers import MODELS_DIR


@pytest.fixture
def softmax_copy(tmp_path: Path) -> Path:
    return Path(shutil.copytree(MODELS_DIR / "softmax", tmp_path / "softmax"))


def test_the_cards_file_is_opened_and_warmed(softmax_copy: Path) -> None:
    card = read_card(softmax_copy)
    session = open_explainer(softmax_copy, card, [CPU], session_options(1, 1))
    assert session is not None
    assert offered_methods(card, session) == ["exact", "integrated_gradients", "occlusion"]


@pytest.mark.parametrize("damage", ["missing", "altered"])
def test_a_bad_file_leaves_the_model_without_gradient_methods(
    softmax_copy: Path, damage: str, caplog: pytest.LogCaptureFixture
) -> None:
    path = softmax_copy / "explain.onnx"
    if damage == "missing":
        path.unlink()
    else:
        path.write_bytes(path.read_bytes()[:-10] + b"0123456789")
    card = read_card(softmax_copy)
    assert open_explainer(softmax_copy, card, [CPU], session_options(1, 1)) is None
    assert "explanations by gradient are unavailable" in caplog.text
    assert offered_methods(card, None) == ["exact", "occlusion"]
