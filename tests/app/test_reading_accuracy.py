"""A floor under /read's accuracy, end to end, on numbers generated as benchmarks.read_eval generates them. Apart
from tests/app/test_reading.py's unit tests, which mutation testing runs against every mutant: this one takes
seconds."""

from __future__ import annotations

import numpy as np

from benchmarks.read_eval import Reader, evaluate, photo_number, styled_number
from training.data import Mnist


def test_generated_numbers_are_read_as_the_evaluation_reads_them(mnist_sample: Mnist) -> None:
    """The whole chain (decode, segment, classifier, verifier, pair reader, path) on numbers composed from the
    sample's test digits: read_eval's photos (a quarter with a touching pair) and styles. The floors sit a few numbers
    below what the committed cnn reads here (photos 98.0%, 95.0% of those with a touching pair, digits 99.5%,
    calibration error 0.037; styles 100%). A bug in the chain costs far more: without the pair reader touching pairs
    fall to 80%; a number's confidence that leans on the piece verifier fully lifts the calibration error to 0.23."""
    rng = np.random.default_rng([0, 7])
    photos = [photo_number(mnist_sample.test.images, mnist_sample.test.labels, rng) for _ in range(150)]
    styles = [styled_number(mnist_sample.test.images, mnist_sample.test.labels, rng) for _ in range(60)]
    reader = Reader.of("cnn")
    on_photos, on_styles = evaluate(photos, reader), evaluate(styles, reader)
    assert on_photos["whole_number_accuracy"] >= 0.95, on_photos["examples"]
    assert on_photos["touching_accuracy"] >= 0.88, on_photos["examples"]
    assert on_photos["digit_accuracy"] >= 0.985
    assert on_photos["calibration_error"] <= 0.08
    assert on_styles["whole_number_accuracy"] >= 0.93, on_styles["examples"]
