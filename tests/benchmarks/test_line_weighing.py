"""The fit behind app.reading.LINE_WEIGHING (benchmarks.line_weighing), on numbers whose right text is known."""

from __future__ import annotations

import math

import numpy as np
import pytest

from app.reading import LINE_WEIGHING, Candidate, Segment
from benchmarks.line_weighing import fitted, number_of, read_right


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
    assert features.shape == (2, len(LINE_WEIGHING))
    assert right == 1
    assert number_of(found, "11")[1] is None
    assert read_right([number_of(found, "11")], LINE_WEIGHING) == pytest.approx(0.0)
