"""Segmentation of a handwritten number (app.reading), on numbers composed from the shipped MNIST sample and read
by the bundled CNN through ONNX Runtime, as /read reads them."""

from __future__ import annotations

import dataclasses
import functools
import math

import numpy as np
import numpy.typing as npt
import onnxruntime as ort
import pytest
from PIL import Image, ImageDraw, ImageFilter

from app.errors import NoDigits, TooManyDigits
from app.preprocess import model_input
from app.reading import (
    CONFIDENCE_WEIGHT,
    CUT_PENALTY,
    EMPTY,
    INK_CUT_PENALTY,
    MAX_GROUPS,
    PAIR_WEIGHT,
    PIECE_CONFIDENCE,
    PIECE_FLOOR,
    PIECE_WEIGHT,
    STROKE_LEFT_OUT,
    Group,
    Ignored,
    PairAnswers,
    PairRun,
    Piece,
    Plan,
    Reading,
    Segment,
    Split,
    add_segments,
    belong_together,
    best_path,
    binarise,
    box_gap,
    cut_path,
    cut_points,
    digit_height,
    flatten_background,
    ink_of,
    label_components,
    mark_kind,
    model_evidence,
    otsu_threshold,
    pair_segments,
    plan_reading,
    plan_upload,
    resolve,
    segment_score,
    shape_prior,
    two_piece_score,
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


def test_the_model_s_evidence_holds_for_logits_of_any_scale() -> None:
    """Each piece's softmax is taken against its own largest logit: a sure piece (logits in the hundreds) does not
    overflow, and a piece whose logits all sit far below another's does not vanish to 0/0."""
    logits = np.zeros((2, 10), np.float32)
    logits[0, 3] = 300.0  # certain: log-confidence 0
    logits[1] = -1000.0
    logits[1, 5] = -1000.0 + math.log(9.0)  # 9 against nine ones: confidence 0.5
    evidence = model_evidence(logits)
    assert all(math.isfinite(e) for e in evidence)
    assert evidence == pytest.approx([0.0, CONFIDENCE_WEIGHT * math.log(0.5)], abs=1e-3)  # float32 near -1000


def test_a_reading_of_marks_alone_is_no_number() -> None:
    """A path that only passes marks (a dot read as no digit) leaves nothing to read: 422 no_digits, said plainly."""
    mark = Segment(0, 1, EMPTY, passed=Ignored((0, 0, 2, 2), "dot"), cost=0.5)
    plan = Plan(pieces=[], segments=[mark], node_cuts=[None, None], ignored=[])
    nothing = np.zeros((0, 10), np.float32)
    with pytest.raises(NoDigits, match=r"^Nothing in the image looks like a digit\.$"):
        resolve(plan, nothing, nothing)


def test_the_digits_are_told_left_to_right_by_the_centres_of_their_boxes() -> None:
    """The path meets pieces in the order of its cuts, but a wide or slanted digit's box may start left of a
    neighbour that stands left of its middle: the text follows the boxes' centres (14, 15, 21 here), not their left
    edges, widths or heights."""
    boxes = [(0, 0, 30, 20), (20, 0, 2, 20), (12, 0, 4, 40)]  # read 1, 2 and 3, in the path's order
    plan = Plan(
        pieces=[Piece(np.zeros((28, 28), np.uint8), box, np.ones((box[3], box[2]), bool)) for box in boxes],
        segments=[Segment(0, 1, 0), Segment(1, 2, 1), Segment(2, 3, 2)],
        node_cuts=[None] * 4,
        ignored=[],
        height=20.0,
    )
    logits = np.full((3, 10), -9.0, np.float32)
    logits[[0, 1, 2], [1, 2, 3]] = 0.0
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    reading = resolve(plan, probabilities, logits)
    assert reading.text == "312"
    assert [d.box for d in reading.digits] == [boxes[2], boxes[0], boxes[1]]


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
    for diagonal in ([[1, 0], [0, 1]], [[0, 1], [1, 0]]):  # either way
        assert label_components(np.array(diagonal, bool))[1] == 1


def test_a_faint_stretch_of_a_stroke_does_not_break_it_and_faint_specks_are_dropped() -> None:
    """Hysteresis: pixels above half Otsu's threshold join a component that holds some pixel above it."""
    ink = np.zeros((40, 60), np.float32)
    ink[18:22, 5:55] = 1.0
    ink[18:22, 28:32] = 0.3  # a stretch of the stroke where the pen barely touched
    ink[5:8, 5:8] = 0.3  # a speck as faint, on its own
    strong = otsu_threshold(ink)
    assert strong / 2 < 0.3 < strong
    labels, count = binarise(ink)
    assert count == 1
    assert labels[20, 10] == labels[20, 30] == labels[20, 50] == 1
    assert labels[6, 6] == 0


def test_the_shadow_on_the_paper_is_taken_away() -> None:
    """Light paper darkening to the right (a photo's shadow): what is left of the paper is far fainter than the ink
    on either side."""
    paper = np.full((120, 300), 230, np.float32)
    paper[:, 150:] -= np.linspace(0, 120, 150)[None, :]
    paper[30:90, 40:48] = paper[30:90, 200:208] = 30  # a stroke in the light, one in the shade
    ink = ink_of(Image.fromarray(paper.astype(np.uint8)))
    assert ink[:20, 150:].max() < 0.3  # the shaded paper alone: 0.6 without the background taken away
    assert ink[40:80, 42:46].min() > 0.6
    assert ink[40:80, 202:206].min() > 0.6
    paper[30:90, 40:48] = 230  # the stroke in the shade alone: stretched back to full strength
    assert ink_of(Image.fromarray(paper.astype(np.uint8))).max() == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("small", "together"),
    [
        (Group([2], 20, 40, 40, 60), True),  # short, over half its width over the tall one: the bar of a broken 4
        (Group([2], 40, 65, 70, 85), False),  # short, a quarter of its width over it: a neighbour
        (Group([2], 0, 65, 10, 95), True),  # flat at the top, sticking out to the right: a 5's flag
        (Group([2], 60, 65, 70, 95), False),  # as flat, at the bottom: a dash after the digit
        (Group([2], 0, 50, 100, 80), False),  # full height, overlapping: two slanted 1s side by side
        # each rule at its exact bound
        (Group([2], 20, 40, 94, 60), True),  # just under PIECE_HEIGHT of the tall one: a piece of it
        (Group([2], 20, 40, 95, 60), False),  # exactly PIECE_HEIGHT: a digit of its own
        (Group([2], 40, 60, 60, 80), True),  # exactly MERGE_OVERLAP of its width over the tall one
        (Group([2], 40, 61, 60, 81), False),  # a column less, and low: no flag
        (Group([2], 40, 69, 50, 99), True),  # a flag: one column over, its bottom at the tall one's middle
        (Group([2], 40, 70, 50, 100), False),  # ... touching it without overlap: a neighbour
        (Group([2], 41, 69, 51, 99), False),  # ... its bottom a row below the middle
        (Group([2], 40, 69, 50, 84), True),  # ... exactly 1.5 times wider than tall
        (Group([2], 40, 69, 50, 83), False),  # ... narrower: a dot
    ],
    ids=[
        "bar",
        "neighbour",
        "flag",
        "low_dash",
        "two_ones",
        "under_piece_height",
        "piece_height",
        "half_over",
        "under_half",
        "flag_bound",
        "flag_apart",
        "flag_low",
        "flag_flat_enough",
        "flag_too_narrow",
    ],
)
def test_pieces_of_one_digit_belong_together(small: Group, together: bool) -> None:
    tall = Group([1], 0, 30, 100, 70)
    assert belong_together(small, tall) is together
    assert belong_together(tall, small) is together


@pytest.mark.parametrize(
    ("other", "gap"),
    [
        (Group([2], 0, 30, 10, 40), 20),  # beside it
        (Group([2], 25, 0, 35, 10), 15),  # below it
        (Group([2], 14, 18, 24, 28), 8),  # off both ways: the further
        (Group([2], 5, 5, 15, 15), 0),  # overlapping
    ],
    ids=["beside", "below", "diagonal", "overlapping"],
)
def test_the_gap_between_two_boxes_is_along_the_axis_they_are_further_apart_on(other: Group, gap: int) -> None:
    one = Group([1], 0, 0, 10, 10)
    assert box_gap(one, other) == gap
    assert box_gap(other, one) == gap


@pytest.mark.parametrize(
    ("width", "height", "kind"),
    [
        (8, 8, "speck"),
        (12, 12, "speck"),  # as wide and tall as SPECK allows
        (12, 20, "dot"),  # a decimal point
        (20, 35, "dot"),  # as tall as FLAT allows: still a mark
        (40, 20, "dash"),  # a minus sign
        (30, 20, "dash"),  # exactly 1.5 times wider than tall
        (180, 20, "underline"),
        (150, 20, "underline"),  # exactly UNDERLINE digit heights wide
        (30, 50, None),  # a digit written at half the others' height
        (25, 100, None),  # a 1
    ],
)
def test_what_is_set_aside_as_a_mark(width: int, height: int, kind: str | None) -> None:
    """Against digits 100 px tall."""
    assert mark_kind(Group([1], 0, 0, height, width), 100.0) == kind


def test_the_shape_prior_weighs_only_wide_or_short_pieces() -> None:
    height = 100.0
    assert shape_prior(80, 100, height) == 0.0  # a broad digit
    assert shape_prior(30, 95, height) == 0.0  # a 1
    assert shape_prior(150, 100, height) < shape_prior(120, 100, height) < 0.0  # wider: two digits read as one
    assert shape_prior(50, 30, height) < shape_prior(50, 50, height) < 0.0  # shorter: a fragment


def test_joining_separate_groups_into_one_digit_costs_more_the_wider_the_gap(mnist_sample: Mnist) -> None:
    plan = plan_reading(row_of([enlarged(mnist_sample.test.images[0])], [20]))
    segment = next(s for s in plan.segments if s.piece >= 0)
    evidence = [0.0] * len(plan.pieces)
    alone = segment_score(plan, segment, evidence)
    near, far = dataclasses.replace(segment, joins=1, gap=0.1), dataclasses.replace(segment, joins=1, gap=0.4)
    assert segment_score(plan, far, evidence) < segment_score(plan, near, evidence) < alone


def test_the_digit_height_is_the_median_of_the_groups_at_least_half_as_tall_as_the_tallest() -> None:
    def of(*heights: int) -> list[Group]:
        return [Group([i], 0, 30 * i, h, 30 * i + 20) for i, h in enumerate(heights)]

    assert digit_height(of(100, 100, 50, 40, 40)) == 100  # the two 40s (a dash, a small mark) left out
    assert digit_height(of(100, 50, 50)) == 50  # exactly half as tall counts
    with pytest.raises(NoDigits, match="only dots, dashes, lines or specks"):
        digit_height([Group([1], 0, 0, 5, 5), Group([2], 0, 10, 4, 200)])


def test_cuts_start_at_the_deepest_valleys_of_the_column_projection_but_not_at_the_ends() -> None:
    """Digits 100 px tall, a group 100 px wide: its ink per column dips at 40 (near the middle), 70 (near two
    thirds) and 15 (a narrow 1 at the left), and at 5, too near the end to part a digit."""
    profile = np.full(100, 10.0, np.float32)
    profile[[5, 15, 40, 70]] = 0.0, 1.0, 0.0, 3.0
    centres = {centre for centre, reach in cut_points(profile, 100, 100.0)}
    assert {15, 40, 70} <= centres
    assert 5 not in centres
    assert cut_points(profile[:40], 40, 100.0) == []  # narrower than any two digits
    shallow = np.full(100, 10.0, np.float32)
    shallow[[15, 20, 25, 30, 35]], shallow[82] = 8.0, 0.0  # more valleys than SINGLE_CUTS: the deepest are kept
    assert 82 in {centre for centre, reach in cut_points(shallow, 100, 100.0)}


def test_without_valleys_cuts_start_at_the_lowest_column_near_each_kth_of_the_width() -> None:
    """A group 100 px wide against digits 100 px tall holds at most 3 digits: a cut near the half (within a third of
    a piece, 33-67) and near each third (22-44, 56-78), each where the ink per column is lowest there, reaching a
    quarter of a piece either way. A projection that only falls (or only rises) has no valley for the other cuts."""
    falling = np.linspace(100, 0, 100).astype(np.float32)
    assert cut_points(falling, 100, 100.0) == [(67, 12), (44, 8), (78, 8)]
    assert cut_points(falling[::-1].copy(), 100, 100.0) == [(33, 12), (22, 8), (56, 8)]


def test_of_the_marks_beside_a_digit_the_largest_may_be_a_stroke_of_it_and_the_others_are_ignored() -> None:
    ink = np.zeros((160, 160), np.float32)
    ink[20:120, 50:60] = 1.0  # a 1, 100 px tall
    ink[100:116, 66:82] = 1.0  # a point after it
    ink[60:74, 30:44] = 1.0  # a smaller one before it
    plan = plan_reading(ink)
    assert plan.ignored == [Ignored((30, 60, 14, 14), "dot")]
    assert [s.passed for s in plan.segments if s.passed] == [Ignored((66, 100, 16, 16), "dot")]


@pytest.mark.parametrize(("top", "cost"), [(45, STROKE_LEFT_OUT), (50, 0.0)], ids=["top_third", "below"])
def test_leaving_out_a_dash_costs_a_reading_only_in_the_digit_s_top_third(top: int, cost: float) -> None:
    """A 7's bar or a 5's flag broken off sits at the top; a dash at mid-height is a minus sign. The digit spans rows
    20-120: the top third ends at row 53, and the dash's middle is at row 51 or 56."""
    ink = np.zeros((160, 160), np.float32)
    ink[20:120, 50:60] = 1.0
    ink[top : top + 12, 64:84] = 1.0
    passed = [(s.passed.reason, s.cost) for s in plan_reading(ink).segments if s.passed]
    assert passed == [("dash", cost)]


def test_a_cut_follows_the_gap_between_slanted_strokes_and_runs_straight_where_it_can() -> None:
    mask = np.zeros((20, 40), bool)
    for row in range(20):  # two strokes slanting right, two columns apart
        mask[row, : 10 + row // 2] = mask[row, 12 + row // 2 :] = True
    path = cut_path(mask, 15, 10)
    assert not mask[np.arange(20), path].any()
    assert np.abs(np.diff(path)).max() <= 1
    leaning = mask[:, ::-1].copy()  # the strokes slanting left: the cut moves left as it goes down
    path = cut_path(leaning, 24, 10)
    assert not leaning[np.arange(20), path].any()
    straight = cut_path(np.zeros((20, 40), bool), 15, 10)
    assert (straight == straight[0]).all()
    assert abs(straight[0] - 15) <= 10


def test_the_best_path_pays_for_the_ink_its_cuts_cross() -> None:
    """Two parts of one group (nodes 0 | 1 | 2, the cut at node 1 crossing two strokes) read apart score 0.5 better
    than read whole, but the cut costs more than that; at a gap between groups the same two parts are read apart."""
    apart, whole = [Segment(0, 1, 0), Segment(1, 2, 1)], Segment(0, 2, 2)
    segments, scores = [apart[0], whole, apart[1]], [-0.5, -1.5, -0.5]
    cut = Plan(pieces=[], segments=segments, node_cuts=[None, 2.0, None], ignored=[])
    assert CUT_PENALTY + INK_CUT_PENALTY * 2.0 > 0.5
    assert best_path(cut, segments, scores) == [whole]
    gap = Plan(pieces=[], segments=segments, node_cuts=[None, None, None], ignored=[])
    assert best_path(gap, segments, scores) == apart


def test_a_run_read_as_a_pair_weighs_both_digits_and_its_pair_score() -> None:
    left = np.array([[0.9] + [0.1 / 9] * 9, [0.6, 0.4] + [0.0] * 8], np.float32)
    right = np.array([[0.5, 0.5] + [0.0] * 8, [1.0] + [0.0] * 9], np.float32)
    evidence = PairAnswers(left, right, np.array([[0.8], [0.3]], np.float32)).evidence()
    for run, score in enumerate([0.8, 0.3]):  # each run by its own answers
        as_pieces = model_evidence(np.log(np.maximum(np.stack([left[run], right[run]]), 1e-9)))
        assert evidence[run] == pytest.approx(sum(as_pieces) + PAIR_WEIGHT * np.log(score), rel=1e-5)


def test_each_piece_s_box_is_the_tight_box_of_its_ink() -> None:
    """A group whose right arm is shorter than its left: the pieces cut from its right start lower than the group
    does, and each box says where its ink lies in the image."""
    ink = np.zeros((160, 200), np.float32)
    ink[20:120, 20:28] = ink[60:120, 132:140] = ink[112:120, 28:132] = 1.0
    plan = plan_reading(ink)
    assert any(piece.box[1] == 60 for piece in plan.pieces)  # the right arm alone
    for piece in plan.pieces:
        x, y, width, height = piece.box
        assert piece.mask.shape == (height, width)
        rows, columns = piece.mask.any(axis=1), piece.mask.any(axis=0)
        assert rows[[0, -1]].all()  # ink in its first and last rows and columns: the box is tight
        assert columns[[0, -1]].all()
        assert (ink[y : y + height, x : x + width][piece.mask] > 0).all()


def test_a_pair_s_boxes_are_its_best_cut_into_two_single_pieces() -> None:
    """Runs 0-3, 3-5 and 1-3 of five parts. Run 0-3 may be cut at node 1 or 2: the pieces either side of node 1 score
    better but the cut there crosses two strokes, so the boxes are those of node 2's pieces, and not those of the
    joined piece 0-2 (two groups read as one digit is not one of a pair's digits). Run 3-5 has one cut; run 1-3
    has none (no piece 1-2), so the pair reader's answer for it is no edge."""
    segments = [
        Segment(0, 1, 0), Segment(0, 2, 2), Segment(0, 2, 5, joins=1), Segment(0, 3, 4), Segment(1, 3, 1),
        Segment(2, 3, 3), Segment(3, 4, 6), Segment(4, 5, 7),
    ]  # fmt: skip
    evidence = [-1.0, -1.0, -1.5, -1.0, -0.5, 5.0, -1.0, -1.0]
    box, mask = (0, 0, 10, 20), np.ones((20, 10), bool)
    run = functools.partial(PairRun, pair=np.zeros((28, 56), np.uint8), box=box, mask=mask)
    plan = Plan(
        pieces=[Piece(np.zeros((28, 28), np.uint8), box, mask) for _ in evidence],
        segments=segments,
        node_cuts=[None, 2.0, 0.0, None, 0.0, None],
        ignored=[],
        pairs=[run(0, 3), run(3, 5), run(1, 3)],
        height=20.0,
    )
    assert two_piece_score(plan, segments[0], segments[4], 1, evidence) == pytest.approx(
        -2.0 - CUT_PENALTY - 2 * INK_CUT_PENALTY
    )
    assert two_piece_score(plan, segments[1], segments[5], 2, evidence) == pytest.approx(-2.5 - CUT_PENALTY)
    found = pair_segments(plan, evidence, [-0.3, -0.7, -0.9])
    assert found == [(Segment(0, 3, 2, pair=0, second=3), -0.3), (Segment(3, 5, 6, pair=1, second=7), -0.7)]


def test_every_group_is_a_candidate_whole_and_pieces_across_groups_count_their_joins() -> None:
    """A scribble 2.5 digit heights wide is cut into parts but also offered whole (no other piece is that wide);
    three 1s 10 px apart (digits 100 px tall) are also offered as one piece, joining three groups over two gaps."""
    ink = np.zeros((140, 560), np.float32)
    ink[20:120, 20:28] = ink[20:120, 145:153] = ink[20:120, 262:270] = 1.0  # a box, its middle crossed
    ink[20:28, 20:270] = ink[112:120, 20:270] = 1.0
    for left in (340, 358, 376):
        ink[20:120, left : left + 8] = 1.0
    plan = plan_reading(ink)
    assert plan.height == 100
    pieces = {plan.pieces[s.piece].box: s for s in plan.segments if s.piece >= 0}
    whole = plan.pieces[pieces[20, 20, 250, 100].piece]
    assert whole.mask.sum() == (ink[20:120, 20:270] > 0).sum()  # its ink, not the rim around it
    assert max(w for _, _, w, _ in pieces if w != 250) <= 122  # 1.2 digit heights (MAX_SPAN) and the ink's rim
    assert plan.node_cuts[0] is None
    assert min(plan.node_cuts[1:9]) > 1.5  # each cut through the box crosses its top and bottom strokes
    assert plan.node_cuts[9:] == [None] * 4  # between groups: nothing to cut
    assert plan.pairs
    assert all(run.end <= 9 and 60 <= run.box[2] <= 202 for run in plan.pairs)  # in one group, 0.6-2 heights wide
    three = pieces[340, 20, 44, 100]
    assert (three.joins, three.gap) == (2, pytest.approx(0.2))
    assert (pieces[340, 20, 26, 100].joins, pieces[340, 20, 26, 100].gap) == (1, pytest.approx(0.1))


def test_a_part_without_ink_between_two_cuts_is_passed_over_and_never_read() -> None:
    """Cuts that cross are evened out, and two may then meet and leave a part with no ink: a reading passes over it
    (an edge of no digit), and the runs that hold it and ink are pieces."""
    mask = np.zeros((100, 90), bool)
    mask[:, :30] = mask[:, 60:] = True
    edges = [np.full(100, column, np.int64) for column in (0, 30, 60, 90)]
    split = Split(Group([1], 0, 0, 100, 90), mask.astype(np.float32), mask, edges, [0.0, 0.0])
    plan = Plan(pieces=[], segments=[], node_cuts=[], ignored=[], height=100.0)
    add_segments(plan, [split], 100.0)
    assert [s for s in plan.segments if s.piece == EMPTY] == [Segment(1, 2, EMPTY)]
    assert {(s.start, s.end) for s in plan.segments if s.piece != EMPTY} == {(0, 1), (0, 2), (0, 3), (1, 3), (2, 3)}


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
    take the boxes of the two pieces the best cut of the run makes (the cut read without the pair reader), and the
    pair's probabilities."""
    plan = plan_reading(touching_zero_four(mnist_sample, closer=4))
    runs = len(plan.pairs)
    assert runs >= 1
    left, right = np.full((runs, 10), 0.001, np.float32), np.full((runs, 10), 0.001, np.float32)
    left[:, 9], right[:, 7] = 0.991, 0.991
    answers = PairAnswers(left, right, np.full((runs, 1), score, np.float32))
    outputs = cnn.run(["probabilities", "logits", "piece_score"], {"image": model_input(plan.batch())})
    reading = resolve(plan, *outputs, answers)
    assert reading.text == text
    cut = resolve(plan, *outputs)  # without the pair reader: the cut the classifier is surest of
    assert [d.box for d in reading.digits] == [d.box for d in cut.digits]
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
    ink[2:6, 340:344] = 1.0  # a speck in the corner, far from any digit
    reading = read(ink, cnn)
    assert reading.text == "721"
    assert [(i.reason, i.box) for i in reading.ignored] == [
        ("underline", (20, 135, 300, 6)),
        ("dot", (195, 108, 8, 8)),
        ("speck", (340, 2, 4, 4)),
    ]  # left to right


def test_no_digit_at_all(cnn: ort.InferenceSession) -> None:
    dots = np.zeros((100, 300), np.float32)
    dots[50:53, 40:43] = dots[60:62, 200:203] = 1.0
    dots[20:24, 100:300] = 1.0
    with pytest.raises(NoDigits, match="only dots, dashes, lines or specks"):
        read(dots, cnn)
    with pytest.raises(NoDigits, match="No ink stands out"):
        plan_reading(np.full((50, 80), 0.1, np.float32))
    with pytest.raises(NoDigits, match="blank"):
        plan_upload(encode(np.full((50, 80), 255, np.uint8)))


def test_boxes_are_in_the_uploaded_pixels_of_a_reduced_photo(mnist_sample: Mnist, cnn: ort.InferenceSession) -> None:
    """A 2112-px-wide picture is decoded at 1,024 px; its boxes are given back at 2112."""
    ink = row_of([enlarged(d) for d in mnist_sample.test.images[:2]], [20, 140])
    paper = (255 - np.kron(ink, np.ones((8, 8), np.float32)) * 255).astype(np.uint8)  # 8x larger, dark on light
    plan = plan_upload(encode(paper))
    reading = resolve(plan, *cnn.run(["probabilities", "logits"], {"image": model_input(plan.batch())}))
    assert reading.text == "72"
    first = paper[:, : 120 * 8] < 128  # the 7's ink (the 2 starts at 140 px, before enlarging)
    rows, columns = np.flatnonzero(first.any(axis=1)), np.flatnonzero(first.any(axis=0))
    x, y, width, height = reading.digits[0].box
    assert abs(x - columns[0]) <= 8 * 3
    assert abs(x + width - columns[-1] - 1) <= 8 * 3
    assert abs(y - rows[0]) <= 8 * 3
    assert abs(y + height - rows[-1] - 1) <= 8 * 3


def test_a_page_of_marks_is_refused_before_the_model_call() -> None:
    stripes = np.tile((np.arange(1000) % 12 < 4).astype(np.float32), (60, 1))  # 84 vertical bars
    with pytest.raises(TooManyDigits, match="84 separate marks"):
        plan_reading(stripes)


def test_as_many_marks_as_a_number_may_hold_are_read() -> None:
    def bars(count: int) -> npt.NDArray[np.float32]:
        return np.tile((np.arange(12 * count) % 12 < 4).astype(np.float32), (60, 1))  # `count` bars 8 px apart

    assert len(plan_reading(bars(MAX_GROUPS)).pieces) >= MAX_GROUPS
    with pytest.raises(TooManyDigits, match=f"{MAX_GROUPS + 1} separate marks"):
        plan_reading(bars(MAX_GROUPS + 1))


def test_ink_of_one_level_is_split_at_the_middle() -> None:
    """Otsu's split needs two levels: with one there is none, and the threshold falls back to half."""
    assert otsu_threshold(np.full((20, 20), 0.7, np.float32)) == 0.5
