"""app.runtime.line_reader: line.onnx opened beside its model, or left out (logged) when it cannot be trusted or is
not weighed."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from app.cards import read_card
from app.reading import LINE_HEIGHT, LINE_STRIDE
from app.runtime.line_reader import open_line_reader, read_line
from app.runtime.session import CPU, session_options
from tests.helpers import MODELS_DIR


@pytest.fixture
def cnn_copy(tmp_path: Path) -> Path:
    return Path(shutil.copytree(MODELS_DIR / "cnn", tmp_path / "cnn", ignore=shutil.ignore_patterns("figures")))


def test_the_cards_file_is_opened_and_answers_a_frame_per_stride(cnn_copy: Path) -> None:
    session = open_line_reader(cnn_copy, read_card(cnn_copy), [CPU], session_options(1, 1))
    assert session is not None
    frames = read_line(session, np.zeros((LINE_HEIGHT, 96), np.uint8))
    assert frames.shape == (96 // LINE_STRIDE, 11)
    assert np.allclose(np.exp(frames).sum(axis=1), 1, atol=1e-4)  # log-probabilities
    assert (frames.argmax(axis=1) == 10).all()  # an empty line is blank throughout


@pytest.mark.parametrize("damage", ["missing", "altered"])
def test_a_bad_file_leaves_read_without_the_line_reader(
    cnn_copy: Path, damage: str, caplog: pytest.LogCaptureFixture
) -> None:
    path = cnn_copy / "line.onnx"
    if damage == "missing":
        path.unlink()
    else:
        path.write_bytes(path.read_bytes()[:-10] + b"0123456789")
    assert open_line_reader(cnn_copy, read_card(cnn_copy), [CPU], session_options(1, 1)) is None
    assert "/read reads without its line reader" in caplog.text


def test_a_model_without_one_has_none(cnn_copy: Path) -> None:
    card = read_card(cnn_copy).model_copy(update={"line_reader": None})
    assert open_line_reader(cnn_copy, card, [CPU], session_options(1, 1)) is None


def test_a_reader_its_card_does_not_weigh_is_left_out(cnn_copy: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A line reader trained anew but not yet weighed against the graph (training weigh-lines) is not used."""
    card = read_card(cnn_copy)
    assert card.line_reader is not None
    unweighed = card.model_copy(update={"line_reader": card.line_reader.model_copy(update={"weighing": None})})
    assert open_line_reader(cnn_copy, unweighed, [CPU], session_options(1, 1)) is None
    assert "/read reads without its line reader" in caplog.text
    assert "weigh-lines" in caplog.text
