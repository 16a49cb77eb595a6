"""app.runtime.pair_reader: pair.onnx opened beside its model, or left out (logged) when it cannot be trusted."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from app.cards import PAIR_INPUT, read_card
from app.runtime.pair_reader import open_pair_reader
from app.runtime.session import CPU, session_options
from tests.helpers import MODELS_DIR


@pytest.fixture
def cnn_copy(tmp_path: Path) -> Path:
    return Path(shutil.copytree(MODELS_DIR / "cnn", tmp_path / "cnn", ignore=shutil.ignore_patterns("figures")))


def test_the_cards_file_is_opened_and_warmed(cnn_copy: Path) -> None:
    session = open_pair_reader(cnn_copy, read_card(cnn_copy), [CPU], session_options(1, 1))
    assert session is not None
    runs = np.zeros((2, 28, 56, 1), np.float32)
    left, right, score = session.run(["left", "right", "pair_score"], {PAIR_INPUT: runs})
    assert left.shape == right.shape == (2, 10)
    assert score.shape == (2, 1)


@pytest.mark.parametrize("damage", ["missing", "altered"])
def test_a_bad_file_leaves_read_without_the_pair_reader(
    cnn_copy: Path, damage: str, caplog: pytest.LogCaptureFixture
) -> None:
    path = cnn_copy / "pair.onnx"
    if damage == "missing":
        path.unlink()
    else:
        path.write_bytes(path.read_bytes()[:-10] + b"0123456789")
    assert open_pair_reader(cnn_copy, read_card(cnn_copy), [CPU], session_options(1, 1)) is None
    assert "/read reads without its pair reader" in caplog.text


def test_a_model_without_one_has_none(cnn_copy: Path) -> None:
    card = read_card(cnn_copy).model_copy(update={"pair_reader": None})
    assert open_pair_reader(cnn_copy, card, [CPU], session_options(1, 1)) is None
