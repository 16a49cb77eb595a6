"""The reading evaluation's own arithmetic: how it scores confidences and digits, the single digits behind its
ceiling, and how it pools seeds."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from benchmarks.read_eval import edits, main
from tests.helpers import SAMPLE_DIR
from training.numbers import calibration, photo_number


def test_calibration_compares_each_confidence_bin_with_its_accuracy() -> None:
    confidences = [0.95] * 10 + [0.55] * 10
    right = [True] * 9 + [False] + [True] * 5 + [False] * 5  # 90% right at 0.95, 50% at 0.55
    figures = calibration(confidences, right)
    assert figures["mean_confidence"] == pytest.approx(0.75)
    assert figures["calibration_error"] == pytest.approx(0.5 * 0.05 + 0.5 * 0.05)
    assert figures["confident"] == {"0.9": {"share": 0.5, "accuracy": 0.9}}  # none at 0.99


def test_a_single_photographed_digit_never_touches_a_neighbour() -> None:
    square = np.zeros((1, 28, 28), np.uint8)
    square[0, 6:22, 10:18] = 255
    samples = [
        photo_number(square, np.array([1], np.uint8), np.random.default_rng(seed), count=1) for seed in range(20)
    ]
    assert {(s.text, s.touching) for s in samples} == {("1", False)}
    assert Image.open(io.BytesIO(samples[0].image)).format == "JPEG"


@pytest.mark.parametrize(
    ("read", "truth", "expected"),
    [
        ("2026", "2026", 0),
        ("2144", "244", 1),  # a stroke read as a 1: one digit inserted
        ("244", "2144", 1),  # ... or one left out
        ("0226710", "02126710", 1),  # an insertion early costs one digit, not the five after it
        ("1243", "1234", 2),  # two digits swapped: two changed
        ("7", "1", 1),
        ("", "123", 3),  # refused: every digit missing
        ("123", "", 3),
        ("90210", "12345", 5),
    ],
)
def test_edits_count_the_fewest_digits_inserted_left_out_or_changed(read: str, truth: str, expected: int) -> None:
    assert edits(read, truth) == expected


def test_several_seeds_are_pooled_and_each_is_listed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    figures_file = tmp_path / "figures.json"
    argv = ["read_eval", "--seed", "5", "6", "--count", "6", "--data-dir", str(SAMPLE_DIR), "--json", str(figures_file)]
    monkeypatch.setattr(sys, "argv", argv)
    main()
    figures = json.loads(figures_file.read_text())
    assert figures["seeds"] == [5, 6]
    per_seed = [figures["per_seed"][seed] for seed in ("5", "6")]
    for name, count in (("photos", 6), ("styles", 2)):
        assert [seed[name]["numbers"] for seed in per_seed] == [count, count]
        assert figures[name]["numbers"] == 2 * count
        right = sum(seed[name]["whole_number_accuracy"] * count for seed in per_seed)
        assert figures[name]["whole_number_accuracy"] == pytest.approx(right / (2 * count))
    assert figures["photos"]["single_digits"] == 12
