"""The README's model figures are the cards' figures, and the cards' accuracy is what the committed ONNX files score.

Every number of the README's three model tables (accuracy, parameters, file size, calibration, not-a-digit rates) is
compared with its card at the precision the README shows it (a shown 92.36% must be the card's value rounded to two
decimals: within half a unit of its last digit). The cards' test accuracy (10k MNIST test digits, `make evaluate`) is
then re-measured on the shipped sample, the first 300 of those digits: the card must lie in the sample's Wilson
score interval at three standard errors (99.7%), an interval computed from the sample, not a slack picked by hand.
"""

from __future__ import annotations

import hashlib
import math
import re

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper

from app.cards import ModelCard, read_card
from app.preprocess import model_input
from tests.helpers import MODELS_DIR, ROOT
from training.data import Mnist

MODELS = ["svm", "softmax", "lenet", "cnn"]
Z = 3.0  # standard errors: a card outside this interval is off, not unlucky (0.3% chance per model)
README = (ROOT / "README.md").read_text()
PROSE = " ".join(README.split())  # the README's text with its line breaks as spaces, for sentences


def readme_table(first_header: str, third_header: str) -> dict[str, list[str]]:
    """A README table, found by its header row: its rows by model name (`cnn` (default) -> cnn)."""
    lines = README.splitlines()
    start = next(
        i
        for i, line in enumerate(lines)
        if line.startswith(f"| {first_header} |") and [c.strip() for c in line.split("|")][3] == third_header
    )
    rows = {}
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        rows[re.match(r"`(\w+)`", cells[0]).group(1)] = cells[1:]  # type: ignore[union-attr]
    return rows


def shown(text: str) -> tuple[float, float]:
    """The first number in a README cell and half a unit of its last shown digit: '92.36%' -> (92.36, 0.005)."""
    number = re.search(r"\d[\d,]*(\.\d+)?", text)
    assert number, text
    digits = number.group(0).replace(",", "")
    decimals = len(digits.split(".")[1]) if "." in digits else 0
    return float(digits), 0.5 * 10.0**-decimals


def assert_rounds_to(cell: str, value: float, *, scale: float = 1.0) -> None:
    """The README cell shows `value / scale` rounded to its own precision."""
    number, half_unit = shown(cell)
    assert abs(number - value / scale) <= half_unit + 1e-9, f"README shows {cell!r}; the card says {value / scale}"


def card(name: str) -> ModelCard:
    return read_card(MODELS_DIR / name)


def detector_parameters(name: str) -> int:
    """The weights of the not-a-digit head in the ONNX file (the trust_* initializers but the temperature)."""
    graph = onnx.load(str(MODELS_DIR / name / "model.onnx")).graph
    return sum(
        numpy_helper.to_array(init).size
        for init in graph.initializer
        if init.name.startswith("trust_") and init.name != "trust_inverse_temperature"
    )


def test_the_readme_lists_every_model_in_each_table() -> None:
    for table in (
        readme_table("model", "test accuracy"),
        readme_table("model", "ECE before"),
        readme_table("model", "test digits flagged"),
    ):
        assert sorted(table) == sorted(MODELS)


@pytest.mark.parametrize("name", MODELS)
def test_the_model_table_is_the_cards(name: str) -> None:
    _, accuracy, parameters, size = readme_table("model", "test accuracy")[name]
    model = card(name)
    assert_rounds_to(accuracy, model.metrics.test_accuracy, scale=0.01)
    main, head = parameters.split("(+")
    unit = {"M": 1e6, "k": 1e3}.get(main.split()[-1], 1.0)
    assert_rounds_to(main, model.parameters, scale=unit)
    assert_rounds_to(re.sub(r"^\D*", "", head), detector_parameters(name), scale=1e3)
    assert_rounds_to(size, model.file_bytes, scale=1024 ** (2 if "MiB" in size else 1))


@pytest.mark.parametrize("name", MODELS)
def test_the_cards_describe_the_committed_files(name: str) -> None:
    data = (MODELS_DIR / name / "model.onnx").read_bytes()
    assert card(name).file_bytes == len(data)
    assert card(name).file_sha256 == hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("name", MODELS)
def test_each_card_md_is_its_card_json_rendered(name: str) -> None:
    """card.md, the cards' human-readable side, says what card.json holds: every section, Explanations included
    (recalibrating a model once rewrote card.md without it)."""
    from training.report import card_markdown_of

    folder = MODELS_DIR / name
    assert card_markdown_of(folder, read_card(folder)) == (folder / "card.md").read_text()


@pytest.mark.parametrize("name", MODELS)
def test_the_calibration_table_is_the_cards(name: str) -> None:
    method, *cells = readme_table("model", "ECE before")[name]
    calibration = card(name).calibration
    assert calibration is not None
    before, after = calibration.before, calibration.after
    assert_rounds_to(method, calibration.temperature)
    figures = [
        (before.ece, 0.01),
        (after.ece, 0.01),
        (before.nll, 1),
        (after.nll, 1),
        (before.brier, 1),
        (after.brier, 1),
        (after.mean_confidence, 0.01),
        (after.accuracy, 0.01),
    ]
    for cell, (value, scale) in zip(cells, figures, strict=True):
        assert_rounds_to(cell, value, scale=scale)


@pytest.mark.parametrize("name", MODELS)
def test_the_detector_table_is_the_cards(name: str) -> None:
    threshold, flagged, caught, families = readme_table("model", "test digits flagged")[name]
    detector = card(name).detector
    assert detector is not None
    assert float(threshold) == float(f"{detector.threshold:.3g}")  # three significant digits
    assert_rounds_to(flagged, detector.test.digits_flagged, scale=0.01)
    assert_rounds_to(caught, detector.test.non_digits_caught, scale=0.01)
    order = ["glyph", "scrawl", "arrow-spiral", "stripes-speckle", "photo"]
    assert "per family (" + ", ".join(order) + ")" in README
    for cell, family in zip(families.split(","), order, strict=True):
        assert_rounds_to(cell, detector.test.caught_per_family[family], scale=0.01)


def wilson_interval(correct: int, n: int, z: float) -> tuple[float, float]:
    """The Wilson score interval of a binomial proportion: sound near 100%, where p +- z*SE is not."""
    p = correct / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def test_the_wilson_interval_is_right() -> None:
    low, high = wilson_interval(81, 263, 1.959964)  # Wilson (1927) via Newcombe (1998), example: 0.2553-0.3662
    assert (round(low, 4), round(high, 4)) == (0.2553, 0.3662)
    low, high = wilson_interval(10, 10, 3.0)
    assert high == pytest.approx(1.0)
    assert low < 1.0


@pytest.mark.parametrize("name", MODELS)
def test_the_cards_accuracy_holds_on_the_shipped_sample(name: str, mnist_sample: Mnist) -> None:
    session = ort.InferenceSession(str(MODELS_DIR / name / "model.onnx"), providers=["CPUExecutionProvider"])
    images, labels = mnist_sample.test.images, mnist_sample.test.labels
    predicted = session.run(["probabilities"], {"image": model_input(images)})[0].argmax(axis=1)
    correct = int(np.sum(predicted == labels))
    low, high = wilson_interval(correct, len(labels), Z)
    assert low <= card(name).metrics.test_accuracy <= high, (
        f"{name}: {correct}/{len(labels)} right on the sample, {Z:g}-SE interval {low:.4f}-{high:.4f}; "
        f"the card says {card(name).metrics.test_accuracy}"
    )


def test_training_times_throughput_and_the_notebooks_svm_are_the_cards() -> None:
    times = re.search(r"svm ([\d.]+) s, softmax ([\d.]+) s, lenet ([\d.]+) min, cnn ([\d.]+) min", PROSE)
    assert times, "the README's training times moved: update this test"
    for name, text, unit in zip(MODELS, times.groups(), (1, 1, 60, 60), strict=True):
        assert_rounds_to(text, card(name).training["train_seconds"], scale=unit)
    speed = re.search(r"the cnn runs ([\d,]+) images/s on one CPU core \(batch 64\)", PROSE)
    assert speed
    assert float(speed.group(1).replace(",", "")) == float(f"{card('cnn').metrics.images_per_second_per_core:.2g}")
    notebook = re.search(r"the notebook's own SVM settings give ([\d.]+)%, as the svm card records", PROSE)
    assert notebook
    assert_rounds_to(notebook.group(1), card("svm").training["notebook_settings"]["test_accuracy"], scale=0.01)
