"""Segmentation of a handwritten number (app.reading), on numbers composed from the shipped MNIST sample and read
by the bundled CNN through ONNX Runtime, as /read reads them."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import onnxruntime as ort
import pytest
from PIL import Image, ImageDraw, ImageFilter

from app.errors import NoDigits, TooManyDigits
from app.preprocess import model_input
from app.reading import (
    PIECE_CONFIDENCE,
    PIECE_FLOOR,
    PIECE_WEIGHT,
    PairAnswers,
    Reading,
    flatten_background,
    label_components,
    model_evidence,
    plan_reading,
    plan_upload,
    resolve,
)
from app.runtime.pair_reader import read_runs
from tests.helpers import MODELS_DIR, encode
from training.data import Mnist

SCALE = 3  # digits enlarged from 28 to 84 px, as written on paper


@pytest.fixture(scope="module")
def cnn() -> ort.InferenceSession:
    return ort.InferenceSession(str(MODELS_DIR / "cnn" / "model.onnx"), providers=["CPUExecutionProvider"])


def enlarged(digit: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
    return np.kron(digit.astype(np.float32) / 255, np.ones((SCALE, SCALE), np.float32))


def row_of(digits: list[npt.NDArray[np.float32]], lefts: list[int], tops: list[int] | None = None) -> np.ndarray:
    """White-on-black ink: each enlarged digit pasted at its left edge (ink combined by max)."""
    field = 28 * SCALE
    ink = np.zeros((field + 80, max(lefts) + field + 40), np.float32)
    for digit, left, top in zip(digits, lefts, tops or [40] * len(digits), strict=True):
        ink[top : top + field, left : left + field] = np.maximum(ink[top : top + field, left : left + field], digit)
    return ink


@pytest.fixture(scope="module")
def pair_reader() -> ort.InferenceSession:
    return ort.InferenceSession(str(MODELS_DIR / "cnn" / "pair.onnx"), providers=["CPUExecutionProvider"])


def touching_zero_four(mnist_sample: Mnist, closer: int) -> npt.NDArray[np.float32]:
    """A 0 and a 4 written so close that their ink joins, then `closer` px closer still."""
    zero, four = enlarged(mnist_sample.test.images[3]), enlarged(mnist_sample.test.images[4])
    offset = next(o for o in range(84, 0, -1) if label_components(row_of([zero, four], [20, 20 + o]) > 0.2)[1] == 1)
    return row_of([zero, four], [20, 20 + offset - closer])


def read(
    ink: np.ndarray, cnn: ort.InferenceSession, *, verified: bool = True, pairs: ort.InferenceSession | None = None
) -> Reading:
    """As the service reads: with the piece verifier's `piece_score` when `verified` (the bundled cnn has it), and
    the pair reader's answers when given."""
    plan = plan_reading(ink)
    names = ["probabilities", "logits", "piece_score"] if verified else ["probabilities", "logits"]
    answers = read_runs(pairs, plan.pair_batch()) if pairs is not None and plan.pairs else None
    return resolve(plan, *cnn.run(names, {"image": model_input(plan.batch())}), answers)


def test_the_piece_verifier_weighs_in_when_given() -> None:
    logits = np.array([[4.0, 0, 0, 0, 0, 0, 0, 0, 0, 0]] * 3, np.float32)
    scores = np.array([[1.0], [0.01], [0.0]], np.float32)
    plain, weighed = model_evidence(logits), model_evidence(logits, scores)
    assert plain[0] == plain[1] == plain[2] == pytest.approx(weighed[0])
    assert weighed[1] == pytest.approx(plain[1] + PIECE_WEIGHT * np.log(0.01), rel=1e-5)
    assert weighed[2] == pytest.approx(plain[2] + PIECE_WEIGHT * np.log(PIECE_FLOOR), rel=1e-5)  # floored


def test_components_are_eight_connected() -> None:
    mask = np.array(
        [
            [1, 0, 0, 0, 1],
            [0, 1, 0, 0, 1],
            [0, 0, 0, 0, 0],
            [1, 1, 0, 1, 0],
        ],
        bool,
    )
    labels, count = label_components(mask)
    assert count == 4
    assert labels[0, 0] == labels[1, 1]  # diagonal neighbours
    assert labels[0, 4] == labels[1, 4] != labels[0, 0]
    assert labels[3, 0] == labels[3, 1] != labels[3, 3]
    assert (labels == 0).sum() == (~mask).sum()


def test_digits_are_read_left_to_right_whatever_their_height(mnist_sample: Mnist, cnn: ort.InferenceSession) -> None:
    images, labels = mnist_sample.test.images[:4], mnist_sample.test.labels[:4]  # 7 2 1 0
    reading = read(row_of([enlarged(d) for d in images], [20, 120, 220, 320], [40, 10, 70, 40]), cnn)
    assert reading.text == "".join(map(str, labels))
    assert [d.box[0] for d in reading.digits] == sorted(d.box[0] for d in reading.digits)
    weighed = [d.confidence * d.piece_score**PIECE_CONFIDENCE for d in reading.digits if d.piece_score is not None]
    assert reading.confidence == pytest.approx(np.prod(weighed))
    assert len(weighed) == 4
    assert reading.ignored == []
    unverified = read(row_of([enlarged(d) for d in images], [20, 120, 220, 320], [40, 10, 70, 40]), cnn, verified=False)
    assert [d.piece_score for d in unverified.digits] == [None] * 4  # a model without a piece verifier (any but cnn)
    assert unverified.confidence == pytest.approx(np.prod([d.confidence for d in unverified.digits]))


def test_a_broken_digit_is_merged(mnist_sample: Mnist, cnn: ort.InferenceSession) -> None:
    """A 5 whose flag is written apart from its body is one digit, not two."""
    five = enlarged(mnist_sample.test.images[8])
    rows = np.flatnonzero(five.any(axis=1))
    five[rows[0] + 15 : rows[0] + 21] = 0  # a gap under the flag
    ink = row_of([five, enlarged(mnist_sample.test.images[0])], [20, 130])
    assert label_components(ink > 0.2)[1] >= 3  # the flag, the body, the 7
    assert read(ink, cnn).text == "57"


def test_a_digit_broken_sideways_is_joined(mnist_sample: Mnist, cnn: ort.InferenceSession) -> None:
    """A 0 whose loop is broken top and bottom leaves two arcs side by side that do not overlap: read apart they are
    two digits (a 1 and a 7, say); the reading graph joins them because the model is surer of the whole."""
    zero = enlarged(mnist_sample.test.images[3])
    columns = np.flatnonzero(zero.any(axis=0))
    middle = (columns[0] + columns[-1]) // 2
    zero[:, middle - 3 : middle + 3] = 0  # a gap 6 px wide through the loop
    ink = row_of([zero, enlarged(mnist_sample.test.images[0])], [20, 130])
    assert label_components(ink > 0.2)[1] == 3  # the two arcs, the 7
    reading = read(ink, cnn)
    assert reading.text == "07"
    assert reading.digits[0].box[2] >= columns[-1] - columns[0] - 2  # one box over both arcs


def test_a_stroke_broken_off_a_digit_is_read_with_it(mnist_sample: Mnist, cnn: ort.InferenceSession) -> None:
    """A 7 whose bar a thin pen left apart from its stem: the bar alone is a dash, the stem alone a 1. A mark that
    high beside a digit is no point or dash, and the reading joins it to the stem."""
    bar_and_stem = Image.new("F", (84, 84))
    pen = ImageDraw.Draw(bar_and_stem)
    pen.line((20, 12, 42, 12), fill=1.0, width=8)  # ends 10 px short of the stem
    pen.line((56, 10, 46, 76), fill=1.0, width=8)
    ink = row_of([enlarged(mnist_sample.test.images[1]), np.asarray(bar_and_stem, np.float32)], [20, 130])
    assert label_components(ink > 0.2)[1] == 3  # the 2, the bar, the stem
    reading = read(ink, cnn)
    assert reading.text == "27"
    assert reading.ignored == []
    assert reading.digits[1].box[0] == 150  # the 7's box takes the bar in


def test_thick_marker_strokes_keep_their_ink(mnist_sample: Mnist) -> None:
    """The background estimate must not take a wide stroke for shading: subtracting it hollowed marker strokes on a
    large image out (a 1 then read as an 8)."""
    seven = Image.fromarray(mnist_sample.test.images[0]).resize((168, 168), Image.Resampling.BILINEAR)
    solid = Image.fromarray((np.asarray(seven) > 127).astype(np.uint8) * 255).filter(ImageFilter.MaxFilter(9))
    ink = np.zeros((260, 300), np.float32)
    ink[40:208, 40:208] = np.asarray(solid, np.float32) / 255  # strokes ~20 px wide
    assert flatten_background(ink)[ink > 0.5].min() > 0.9


@pytest.mark.parametrize("verified", [True, False], ids=["with_piece_score", "without"])
def test_touching_digits_are_split(mnist_sample: Mnist, cnn: ort.InferenceSession, verified: bool) -> None:
    """A 0 and a 4 written so close that their ink joins are cut apart where the classifier is surest; a model
    without a piece verifier (any but cnn) reads them too."""
    reading = read(touching_zero_four(mnist_sample, closer=2), cnn, verified=verified)
    assert reading.text == "04"
    assert reading.digits[0].box[0] < reading.digits[1].box[0]


def test_touching_digits_are_read_with_the_pair_reader(
    mnist_sample: Mnist, cnn: ort.InferenceSession, pair_reader: ort.InferenceSession
) -> None:
    reading = read(touching_zero_four(mnist_sample, closer=2), cnn, pairs=pair_reader)
    assert reading.text == "04"
    assert reading.digits[0].box[0] < reading.digits[1].box[0]


@pytest.mark.parametrize(("score", "text"), [(0.99, "97"), (1e-6, "04")], ids=["a_sure_pair", "not_a_pair"])
def test_a_reading_takes_both_digits_from_the_pair_reader_when_it_is_surer(
    mnist_sample: Mnist, cnn: ort.InferenceSession, score: float, text: str
) -> None:
    """Stand-in answers for every run: "97" surely (the cut reads "04"), or not a pair at all. The pair's digits
    take the boxes of the two pieces the best cut of the run makes, and the pair's probabilities."""
    plan = plan_reading(touching_zero_four(mnist_sample, closer=4))
    runs = len(plan.pairs)
    assert runs >= 1
    left, right = np.full((runs, 10), 0.001, np.float32), np.full((runs, 10), 0.001, np.float32)
    left[:, 9], right[:, 7] = 0.991, 0.991
    answers = PairAnswers(left, right, np.full((runs, 1), score, np.float32))
    names = ["probabilities", "logits", "piece_score"]
    reading = resolve(plan, *cnn.run(names, {"image": model_input(plan.batch())}), answers)
    assert reading.text == text
    first, second = reading.digits
    assert first.box[0] < second.box[0]
    assert first.box[0] + first.box[2] <= second.box[0] + second.box[2]
    if text == "97":
        assert first.probabilities == pytest.approx(left[0].tolist())
        assert first.confidence == pytest.approx(0.991)
        assert first.piece_score == pytest.approx(score)


def test_an_underline_and_a_decimal_point_are_ignored(mnist_sample: Mnist, cnn: ort.InferenceSession) -> None:
    digits = [enlarged(d) for d in mnist_sample.test.images[:3]]  # 7 2 1
    ink = row_of(digits, [20, 110, 230])
    ink[108:116, 195:203] = 1.0  # a point on the baseline between the 2 and the 1
    ink[135:141, 20:320] = 1.0  # a line under the number
    reading = read(ink, cnn)
    assert reading.text == "721"
    assert sorted(i.reason for i in reading.ignored) == ["dot", "underline"]
    point = next(i for i in reading.ignored if i.reason == "dot")
    assert point.box == (195, 108, 8, 8)


def test_no_digit_at_all(cnn: ort.InferenceSession) -> None:
    dots = np.zeros((100, 300), np.float32)
    dots[50:53, 40:43] = dots[60:62, 200:203] = 1.0
    dots[20:24, 100:300] = 1.0
    with pytest.raises(NoDigits):
        read(dots, cnn)
    with pytest.raises(NoDigits):
        plan_upload(encode(np.full((50, 80), 255, np.uint8)))


def test_boxes_are_in_the_uploaded_pixels_of_a_reduced_photo(mnist_sample: Mnist, cnn: ort.InferenceSession) -> None:
    """A 2112-px-wide picture is decoded at 1,024 px; its boxes are given back at 2112."""
    ink = row_of([enlarged(d) for d in mnist_sample.test.images[:2]], [20, 140])
    paper = (255 - np.kron(ink, np.ones((8, 8), np.float32)) * 255).astype(np.uint8)  # 8x larger, dark on light
    plan = plan_upload(encode(paper))
    reading = resolve(plan, *cnn.run(["probabilities", "logits"], {"image": model_input(plan.batch())}))
    assert reading.text == "72"
    columns = np.flatnonzero((paper < 128).any(axis=0))
    x, _, width, _ = reading.digits[0].box
    assert abs(x - columns[0]) <= 8 * 3
    assert x + width <= paper.shape[1]


def test_a_page_of_marks_is_refused_before_the_model_call() -> None:
    stripes = np.tile((np.arange(1000) % 12 < 4).astype(np.float32), (60, 1))  # 84 vertical bars
    with pytest.raises(TooManyDigits, match="84 separate marks"):
        plan_reading(stripes)
