"""The line reader (training.line_reader): /read's line.onnx, a network of its own that reads the whole number with
CTC, and the lines it learns from."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from app.cards import ModelCard, read_card
from app.reading import LINE_HEIGHT, LINE_STRIDE
from app.runtime.line_reader import read_line
from tests.helpers import MODELS_DIR
from training import line_reader
from training.data import Mnist


@pytest.fixture(scope="module")
def cnn_card() -> ModelCard:
    return read_card(MODELS_DIR / "cnn")


def test_training_lines_are_prepared_as_read_prepares_them_and_seeded(mnist_sample: Mnist) -> None:
    train = mnist_sample.train
    lines, texts = line_reader.labelled_lines(train.images, train.labels, lines=12, seed=5)
    again, same = line_reader.labelled_lines(train.images, train.labels, lines=12, seed=5)
    assert len(lines) == len(texts) >= 10  # a line eroded away is skipped, rarely
    assert all(line.shape[0] == LINE_HEIGHT and line.shape[1] % LINE_STRIDE == 0 for line in lines)
    assert all(line.dtype == np.uint8 for line in lines)
    assert all(1 <= len(t) <= 8 and t.isdigit() for t in texts)
    assert texts == same
    assert all(np.array_equal(a, b) for a, b in zip(lines, again, strict=True))


def test_batches_group_lines_of_similar_width_and_pad_them(mnist_sample: Mnist) -> None:
    lines = [np.full((LINE_HEIGHT, w), 255, np.uint8) for w in (40, 200, 44, 48)]
    texts = ["1", "12345", "2", "33"]
    found = line_reader.batches(lines, texts, np.random.default_rng(0))
    assert sum(len(x) for x, *_ in found) == 4
    x, frames, y, lengths = next(b for b in found if len(b[0]) == 4)  # BATCH > 4: one batch
    assert x.shape == (4, LINE_HEIGHT, 200, 1)
    assert frames.tolist() == [10, 11, 12, 50]  # narrowest first, a frame per LINE_STRIDE columns
    assert lengths.tolist() == [1, 1, 2, 5]
    assert y[3].tolist() == [1, 2, 3, 4, 5]
    assert y[2].tolist() == [3, 3, 0, 0, 0]
    assert x[0, :, 40:].max() == 0  # padded with empty paper


def test_the_committed_card_records_the_line_reader(cnn_card: ModelCard) -> None:
    section = cnn_card.line_reader
    assert section is not None
    content = (MODELS_DIR / "cnn" / section.file).read_bytes()
    assert hashlib.sha256(content).hexdigest() == section.file_sha256
    assert section.training["parity_max_abs_diff"] <= line_reader.PARITY
    assert section.validation.lines_read >= 0.9


def test_the_committed_card_weighs_its_line_reader(cnn_card: ModelCard) -> None:
    """Fitted on 4,500 numbers of validation digits (training weigh-lines): an extra digit and a doubted digit cost,
    the line reader's belief and the graph's score count, and the confidence rises with both readers'."""
    assert cnn_card.line_reader is not None
    weighing = cnn_card.line_reader.weighing
    assert weighing is not None
    assert weighing.numbers == 4500
    graph, line, digits, off_count, weakest = weighing.texts
    assert min(graph, line, weakest) > 0
    assert max(digits, off_count) < 0
    assert min(weighing.confidence[:2]) > 0
    assert weighing.read_right > 0.95
    assert weighing.calibration_error < 0.02


def test_the_committed_reader_reads_lines_of_test_digits(mnist_sample: Mnist, cnn_card: ModelCard) -> None:
    """Lines written as it learnt them, from the sample's *test* digits, which it never saw."""
    assert cnn_card.line_reader is not None
    session = ort.InferenceSession(
        str(MODELS_DIR / "cnn" / cnn_card.line_reader.file), providers=["CPUExecutionProvider"]
    )
    lines, texts = line_reader.labelled_lines(mnist_sample.test.images, mnist_sample.test.labels, lines=60, seed=9)
    assert np.mean([a == b for a, b in zip(line_reader.read_lines(session, lines), texts, strict=True)]) >= 0.85
    assert read_line(session, lines[0]).shape == (lines[0].shape[1] // LINE_STRIDE, 11)


@pytest.mark.slow
def test_exporting_writes_the_file_its_card_names(mnist_sample: Mnist, tmp_path: Path) -> None:
    """End to end on the shipped sample, briefly trained: the file, its checksum and rate in the card."""
    folder = tmp_path / "cnn"
    shutil.copytree(MODELS_DIR / "cnn", folder, ignore=shutil.ignore_patterns("*.onnx", "figures"))
    card = line_reader.export_line_reader(folder, mnist_sample, lines=40, validation_lines=10, epochs=1, log=print)
    section = card.line_reader
    assert section is not None
    content = (folder / section.file).read_bytes()
    assert hashlib.sha256(content).hexdigest() == section.file_sha256
    assert read_card(folder) == card
    assert section.training["lines"] <= 40
    assert section.validation.lines > 0
    assert section.weighing is None  # a new reader is weighed against the graph by weigh-lines
    session = ort.InferenceSession(content, providers=["CPUExecutionProvider"])
    assert read_line(session, np.zeros((LINE_HEIGHT, 64), np.uint8)).shape == (16, 11)


def test_the_cli_step_is_listed(tmp_path: Path) -> None:
    from training.__main__ import build_parser

    args = build_parser().parse_args(["read-lines", "--models-dir", str(tmp_path)])
    assert args.command == "read-lines"
