"""A floor under /read's accuracy, end to end, on numbers generated as benchmarks.read_eval generates them
(training.numbers). Apart from tests/app/test_reading.py's unit tests, which mutation testing runs against every
mutant: this one takes seconds."""

from __future__ import annotations

import numpy as np

from benchmarks.read_eval import evaluate
from tests.helpers import MODELS_DIR
from training.data import Mnist
from training.numbers import Reader, photo_number, styled_number


def test_generated_numbers_are_read_as_the_evaluation_reads_them(mnist_sample: Mnist) -> None:
    """The whole chain (decode, segment, classifier, verifier, pair reader, line reader, path) on numbers composed
    from the sample's test digits: read_eval's photos (a quarter with a touching pair) and styles. The floors sit one
    or two numbers below what the committed cnn reads here (photos 99.3%, 100% of those with a touching pair, digits
    99.6%, calibration error 0.019; styles 100%), and above what it reads without the line reader (photos 98.0%,
    touching pairs 95.0%, calibration error 0.037; without the pair reader as well, touching pairs 80%)."""
    rng = np.random.default_rng([0, 7])
    photos = [photo_number(mnist_sample.test.images, mnist_sample.test.labels, rng) for _ in range(150)]
    styles = [styled_number(mnist_sample.test.images, mnist_sample.test.labels, rng) for _ in range(60)]
    reader = Reader.of(MODELS_DIR / "cnn")
    assert reader.pairs is not None
    assert reader.lines is not None
    assert reader.weighing is not None
    on_photos, on_styles = evaluate(photos, reader), evaluate(styles, reader)
    assert on_photos["whole_number_accuracy"] >= 0.985, on_photos["examples"]
    assert on_photos["touching_accuracy"] >= 0.96, on_photos["examples"]
    assert on_photos["digit_accuracy"] >= 0.99
    assert on_photos["calibration_error"] <= 0.03
    assert on_styles["whole_number_accuracy"] >= 0.93, on_styles["examples"]
