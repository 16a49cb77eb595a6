"""The fits behind a card's line weighing (training.line_weighing), on numbers whose right text is known."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from app.cards import read_card
from app.reading import Candidate, Segment
from tests.helpers import MODELS_DIR
from training.data import Mnist
from training.line_weighing import (
    FEATURES,
    confidence_fitted,
    confidences,
    fitted,
    number_of,
    read_right,
    weigh_lines,
)
from training.numbers import calibration_error


def test_the_fit_recovers_the_weights_that_pick_the_right_candidates() -> None:
    rng = np.random.default_rng(0)
    truth = np.array([0.1, 0.5, -2.0, -1.0, 1.0])
    numbers = []
    for _ in range(400):
        features = rng.normal(size=(int(rng.integers(2, 9)), len(truth)))
        scores = features @ truth + rng.gumbel(size=len(features))  # the right text: the likeliest, with noise
        numbers.append((features, int(np.argmax(scores))))
    weights = fitted(numbers, l2=0.01)
    assert float(weights @ truth) / (np.linalg.norm(weights) * np.linalg.norm(truth)) > 0.97
    assert read_right(numbers, weights) > read_right(numbers, -weights) + 0.5
    assert read_right(numbers, weights) >= read_right(numbers, truth) - 0.02


def test_a_text_the_line_reader_rules_out_is_no_candidate() -> None:
    path = [(Segment(0, 1, 0), [1])]
    found = [
        Candidate("1", path, (0.0, -1.0, 1, 0, -0.5)),
        Candidate("11", path, (0.0, -math.inf, 2, 1, -0.5)),
        Candidate("7", path, (0.0, -2.0, 1, 0, -0.1)),
    ]
    features, right = number_of(found, "7")
    assert features.shape == (2, FEATURES)
    assert right == 1
    assert number_of(found, "11")[1] is None
    assert read_right([number_of(found, "11")], np.ones(FEATURES)) == pytest.approx(0.0)


def test_the_confidence_fit_recovers_the_regression_that_made_the_outcomes() -> None:
    rng = np.random.default_rng(1)
    truth = np.array([0.8, 0.3, 1.5])
    inputs = rng.normal(2.0, 2.0, size=(4000, 2))
    right = rng.random(len(inputs)) < confidences(inputs, truth)
    weights = confidence_fitted(inputs, right, l2=0.01)
    assert weights == pytest.approx(truth, abs=0.15)
    fitted_error = calibration_error(confidences(inputs, weights).tolist(), right.tolist())
    off_error = calibration_error(confidences(inputs, truth + np.array([0.0, 0.0, 1.5])).tolist(), right.tolist())
    assert fitted_error < 0.02 < off_error


def test_weighing_a_model_records_both_fits_in_its_card(mnist_sample: Mnist, tmp_path: Path) -> None:
    """End to end on the sample's validation digits and the committed networks: the card gains a weighing the
    service can use, fitted on the numbers asked for, and nothing else in it changes."""
    folder = Path(shutil.copytree(MODELS_DIR / "cnn", tmp_path / "cnn", ignore=shutil.ignore_patterns("figures")))
    before = read_card(folder)
    card = weigh_lines(folder, mnist_sample, photos=12, styles=6, log=print)
    assert card.line_reader is not None
    weighing = card.line_reader.weighing
    assert weighing is not None
    assert weighing.numbers == 18
    assert 0.5 <= weighing.read_right <= 1.0
    assert all(math.isfinite(w) for w in (*weighing.texts, *weighing.confidence))
    assert read_card(folder) == card
    assert card.model_copy(update={"line_reader": before.line_reader}) == before


def test_a_model_without_a_line_reader_cannot_be_weighed(mnist_sample: Mnist, tmp_path: Path) -> None:
    folder = Path(shutil.copytree(MODELS_DIR / "lenet", tmp_path / "lenet", ignore=shutil.ignore_patterns("figures")))
    with pytest.raises(ValueError, match="no line reader"):
        weigh_lines(folder, mnist_sample, photos=2, styles=1)


def test_the_cli_step_is_listed(tmp_path: Path) -> None:
    from training.__main__ import build_parser

    args = build_parser().parse_args(["weigh-lines", "--models-dir", str(tmp_path)])
    assert (args.command, args.model) == ("weigh-lines", "cnn")
