"""Calibration, the not-a-digit head and the graph rewriting, on synthetic numbers and the shipped sample."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from app.cards import ModelCard
from app.preprocess import is_mnist_layout
from tests.helpers import MODELS_DIR
from training import calibration, nondigits, trust
from training.data import Mnist


def test_fit_temperature_recovers_the_temperature_that_made_the_labels() -> None:
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 3, size=(20_000, 10))
    labels = np.array([rng.choice(10, p=p) for p in calibration.softmax(logits, 2.5)])
    assert calibration.fit_temperature(logits, labels) == pytest.approx(2.5, rel=0.05)


def test_an_svm_like_score_gets_a_calibrator_that_lowers_the_ece_without_raising_the_nll() -> None:
    """Scores whose NLL-fitted temperature leaves a large ECE get a (T, floor) pair with a lower ECE."""
    rng = np.random.default_rng(2)
    logits = rng.normal(0, 3, size=(5_000, 10))
    labels = np.array([rng.choice(10, p=p) for p in calibration.softmax(logits)])
    hinge_like = np.sign(logits) * np.abs(logits) ** 2  # not log-odds: no single temperature fits everywhere
    by_nll = calibration.calibration_metrics(
        calibration.softmax(hinge_like, calibration.fit_temperature(hinge_like, labels)), labels
    )
    fit = calibration.fit_calibration(hinge_like, labels)
    after = calibration.calibration_metrics(calibration.calibrated(hinge_like, fit.temperature, fit.floor), labels)
    assert by_nll.ece > calibration.TARGET_ECE
    assert "(T, floor)" in fit.criterion
    assert after.ece < by_nll.ece
    assert after.nll <= calibration.calibration_metrics(calibration.softmax(hinge_like), labels).nll


def test_sharp_scores_with_a_few_wrong_labels_get_a_floor() -> None:
    """Confident scores and 3% of labels drawn at random: T alone must flatten everything to pay for the few;
    a floor pays for them and lets T keep the rest sharp, lowering both the ECE and the NLL."""
    rng = np.random.default_rng(3)
    logits = rng.normal(0, 4, size=(5_000, 10))
    labels = np.array([rng.choice(10, p=p) for p in calibration.softmax(logits, 0.7)])
    noisy = rng.random(len(labels)) < 0.03
    labels[noisy] = rng.integers(0, 10, noisy.sum())
    by_nll = calibration.calibration_metrics(
        calibration.softmax(logits, calibration.fit_temperature(logits, labels)), labels
    )
    fit = calibration.fit_calibration(logits, labels)
    probabilities = calibration.calibrated(logits, fit.temperature, fit.floor)
    after = calibration.calibration_metrics(probabilities, labels)
    assert fit.floor > 0
    assert after.ece < by_nll.ece / 2
    assert after.nll < by_nll.nll
    assert (probabilities.argmax(1) == logits.argmax(1)).all()
    np.testing.assert_allclose(probabilities.sum(1), 1.0)


def test_calibration_metrics_of_known_cases() -> None:
    labels = np.array([0, 1, 2, 3])
    perfect = np.eye(10)[labels]
    assert calibration.calibration_metrics(perfect, labels).model_dump() == {
        "ece": 0.0, "nll": 0.0, "brier": 0.0, "mean_confidence": 1.0, "accuracy": 1.0
    }  # fmt: skip
    # Always 0.6 sure and right half of the time: ECE 0.1 in the one bin used.
    unsure = np.full((4, 10), 0.4 / 9)
    unsure[np.arange(4), [0, 1, 5, 5]] = 0.6
    metrics = calibration.calibration_metrics(unsure, labels)
    assert metrics.ece == pytest.approx(0.1)
    assert metrics.accuracy == 0.5
    assert metrics.nll == pytest.approx(-(np.log(0.6) + np.log(0.4 / 9)) / 2, abs=1e-5)


def test_head_separates_two_clouds() -> None:
    rng = np.random.default_rng(1)
    digits, others = rng.normal(1, 1, (500, 8)), rng.normal(-1, 1, (500, 8))
    head = trust.train_head(digits.astype(np.float32), others.astype(np.float32), seed=0, epochs=200)
    assert (head.score(digits.astype(np.float32)) > 0.5).mean() > 0.95
    assert (head.score(others.astype(np.float32)) < 0.5).mean() > 0.95


def test_generators_are_seeded_distinct_and_prepared_like_uploads() -> None:
    train, families = nondigits.training_set(60)
    again, _ = nondigits.training_set(60)
    evaluation, eval_families = nondigits.evaluation_set(50)
    assert np.array_equal(train, again)
    assert set(families) == set(range(len(nondigits.TRAINING_DRAWERS)))
    assert set(eval_families) == set(range(len(nondigits.EVALUATION_DRAWERS)))
    assert train.shape[1:] == evaluation.shape[1:] == (28, 28)
    shared = {image.tobytes() for image in train} & {image.tobytes() for image in evaluation}
    # Only a solid block (a dense grid or grating fills the whole crop) can come out of both generators.
    assert all(len(set(image)) <= 2 for image in shared)
    assert np.mean([is_mnist_layout(image) for image in evaluation]) >= 0.85  # a photo crop may not centre


def test_no_digit_look_alike_is_ever_drawn() -> None:
    look_alikes = set("0123456789OoIlLSsZzBGqgbDQT|!/\\()[]?")
    assert not look_alikes & set(nondigits.TRAINING_GLYPHS)
    assert not look_alikes & set(nondigits.EVALUATION_GLYPHS)
    assert set(nondigits.TRAINING_FONTS).isdisjoint(nondigits.EVALUATION_FONTS)


@pytest.fixture(scope="module")
def trusted_softmax(mnist_sample: Mnist) -> tuple[ModelCard, trust.Result]:
    card = ModelCard.model_validate_json((MODELS_DIR / "softmax" / "card.json").read_text())
    proto = onnx.load(str(MODELS_DIR / "softmax" / "model.onnx"))
    return card, trust.make_trusted(card, proto, mnist_sample, log=lambda _: None)


def test_trusted_graph_scales_logits_and_scores_every_image(
    trusted_softmax: tuple[ModelCard, trust.Result], mnist_sample: Mnist, tmp_path: Path
) -> None:
    _, result = trusted_softmax
    card = result.card
    assert card.calibration is not None
    assert card.detector is not None
    assert [o.name for o in card.outputs][-1] == "digit_score"
    logits, probabilities, scores = trust.run(
        result.proto, mnist_sample.test.images, ["logits", "probabilities", "digit_score"]
    )
    expected = calibration.calibrated(logits, card.calibration.temperature, card.calibration.floor)
    np.testing.assert_allclose(probabilities, expected, atol=1e-5)
    assert (probabilities.argmax(1) == logits.argmax(1)).all()  # calibration never changes the digit
    assert scores.shape == (len(logits), 1)
    assert ((scores >= 0) & (scores <= 1)).all()
    assert max(card.parity.max_abs_diff.values()) <= 1e-4


@pytest.mark.parametrize("floor", [0.0, 0.01])
def test_trusting_again_replaces_what_it_added(trusted_softmax: tuple[ModelCard, trust.Result], floor: float) -> None:
    card, result = trusted_softmax
    sources, fit = trust.feature_sources(card), calibration.Fit(2.0, floor, "test")
    again = trust.trusted(result.proto, sources, fit, result.head)
    assert len(trust.trusted(again, sources, fit, result.head).graph.node) == len(again.graph.node)
    assert [o.name for o in again.graph.output].count("digit_score") == 1
    assert len(trust.strip(again).graph.node) == len(trust.strip(result.proto).graph.node)
    logits, probabilities = trust.run(again, np.zeros((1, 28, 28), np.uint8), ["logits", "probabilities"])
    np.testing.assert_allclose(probabilities, calibration.calibrated(logits, 2.0, floor), atol=1e-6)  # not both


def test_the_evaluation_set_can_be_written_out_to_look_at(tmp_path: Path) -> None:
    from training.__main__ import main

    assert main(["nondigits", "--out", str(tmp_path), "--count", "10"]) == 0
    written = sorted(p.name.split("-0")[0] for p in tmp_path.glob("*.png"))
    assert len(written) == 10
    assert set(written) == set(nondigits.EVALUATION_DRAWERS)


def test_evaluate_writes_the_detectors_rates_measured_again_into_the_card(tmp_path: Path, mnist_sample: Mnist) -> None:
    import shutil

    from app.cards import read_card
    from training.pipeline import write_remeasured_card

    folder = tmp_path / "softmax"
    shutil.copytree(MODELS_DIR / "softmax", folder)
    before = read_card(folder)
    after = write_remeasured_card(folder, mnist_sample)
    assert after.detector is not None
    assert before.detector is not None
    assert after.detector.test.digits == len(mnist_sample.test)  # measured on these digits, not copied
    _, flagged, caught = trust.measure(folder, mnist_sample)
    assert (after.detector.test.digits_flagged, after.detector.test.non_digits_caught) == (
        round(flagged, 5),
        round(caught, 5),
    )
    assert sum(after.detector.test.caught_per_family.values()) > 0
    assert read_card(folder) == after
    assert after.model_copy(update={"detector": before.detector}) == before  # nothing else moves
    assert "## Not a digit" in (folder / "card.md").read_text()
