"""The line reader's side of /read: the line it is given, its texts (CTC), and how they are weighed with the graph."""

from __future__ import annotations

import itertools
import math
from collections import defaultdict

import numpy as np
import numpy.typing as npt
import pytest

from app.cards import LineWeighing, read_card
from app.reading import (
    CONFIDENCE_WEIGHT,
    EMPTY,
    LINE_FILL,
    LINE_HEIGHT,
    LINE_MARGIN,
    LINE_STRIDE,
    MAX_LINE_WIDTH,
    NARROWED_BLANK,
    WIDE_BLANK,
    Candidate,
    Ignored,
    LineAnswers,
    PairAnswers,
    Plan,
    Segment,
    best_path,
    best_texts,
    digit_logs,
    graph_path,
    line_candidates,
    line_confidence,
    number_line,
    path_text,
    plan_reading,
    read_as,
    resolve,
    text_edges,
    text_log_likelihood,
    weigh_line,
)
from tests.helpers import MODELS_DIR

BLANK = 10


def committed_weighing() -> LineWeighing:
    """The default model's weighing, as its card holds it (training weigh-lines)."""
    section = read_card(MODELS_DIR / "cnn").line_reader
    assert section is not None
    assert section.weighing is not None
    return section.weighing


WEIGHING = committed_weighing()


def log_softmax(x: npt.NDArray[np.float64]) -> npt.NDArray[np.float32]:
    return (x - np.logaddexp.reduce(x, axis=-1, keepdims=True)).astype(np.float32)


def brute_force(frames: npt.NDArray[np.float32]) -> dict[str, float]:
    """log p(text) by summing every alignment: collapse repeats, drop blanks (the last class)."""
    blank = frames.shape[1] - 1
    found: dict[str, float] = defaultdict(lambda: -math.inf)
    for path in itertools.product(range(frames.shape[1]), repeat=len(frames)):
        text = "".join(str(c) for c, _ in itertools.groupby(path) if c != blank)
        found[text] = float(np.logaddexp(found[text], sum(frames[t, c] for t, c in enumerate(path))))
    return found


@pytest.fixture
def frames() -> npt.NDArray[np.float32]:
    """Six frames over the digits 0-2 and the blank: every alignment can be enumerated."""
    return log_softmax(np.random.default_rng(0).normal(size=(6, 4)) * 2)


def test_a_text_s_likelihood_sums_every_alignment_that_spells_it(frames: npt.NDArray[np.float32]) -> None:
    expected = brute_force(frames)
    for text in ["", "1", "11", "211", "2121", "0"]:
        assert text_log_likelihood(frames, text) == pytest.approx(expected[text], abs=1e-5)
    assert math.isinf(text_log_likelihood(frames, "1111"))  # three blanks and four 1s need seven frames


def test_the_beam_search_finds_the_likeliest_texts_in_order(frames: npt.NDArray[np.float32]) -> None:
    expected = sorted(((t, p) for t, p in brute_force(frames).items() if t), key=lambda found: -found[1])
    found = best_texts(frames, beam=50)
    assert [t for t, _ in found[:4]] == [t for t, _ in expected[:4]]
    assert [p for _, p in found[:4]] == pytest.approx([p for _, p in expected[:4]], abs=1e-5)
    assert [t for t, _ in best_texts(frames, beam=2)] == [t for t, _ in expected[:2]]


def test_a_held_digit_is_one_and_a_blank_parts_two() -> None:
    one, blank = np.full(11, -20.0, np.float32), np.full(11, -20.0, np.float32)
    one[1], blank[BLANK] = 0.0, 0.0
    assert best_texts(np.stack([one, one, one]))[0][0] == "1"
    assert best_texts(np.stack([one, blank, one]))[0][0] == "11"


def confidence_scored(segments: list[Segment], logits: npt.NDArray[np.float32]) -> list[tuple[Segment, float]]:
    """Each one-piece segment with its score in the graph: the weighed log of its piece's softmax confidence."""
    evidence = CONFIDENCE_WEIGHT * np.log(np.exp(log_softmax(logits.astype(np.float64))).max(axis=1))
    return [(s, float(evidence[s.piece])) for s in segments]


def line_graph() -> tuple[Plan, list[tuple[Segment, float]], npt.NDArray[np.float32]]:
    """Two parts of one group (nodes 0 | 1 | 2, the cut at node 1 crossing one stroke): read whole, piece 2 is a
    sure 8; apart, pieces 0 and 1 are a likely 8 and 1. The graph alone reads the whole."""
    logits = np.full((3, 10), -4.0, np.float32)
    logits[0, 8], logits[1, 1], logits[2, 8] = 2.0, 3.0, 6.0
    segments = [Segment(0, 1, 0), Segment(0, 2, 2), Segment(1, 2, 1)]
    plan = Plan(pieces=[], segments=segments, node_cuts=[None, 1.0, None], ignored=[])
    return plan, confidence_scored(segments, logits), logits


def sure_of(text: str, frames: int = 8) -> npt.NDArray[np.float32]:
    """A line reader sure of `text`: each digit held two frames, blanks between."""
    rows = np.full((frames, 11), math.log(1e-6), np.float32)
    rows[:, BLANK] = 0.0
    for i, c in enumerate(text):
        rows[2 * i + 1, BLANK], rows[2 * i + 1, int(c)] = math.log(1e-6), 0.0
    return log_softmax(rows.astype(np.float64))


def test_reading_a_text_follows_the_graph_and_pays_for_a_digit_the_model_doubts() -> None:
    plan, scored, logits = line_graph()
    edges = text_edges(plan, scored, digit_logs(logits, None))
    whole = best_path(plan, [s for s, _ in scored], [v for _, v in scored])
    found = read_as(plan, edges, "8")
    assert found is not None
    assert [s for s, _ in found[1]] == whole
    assert found[0] == pytest.approx(scored[1][1])
    apart = read_as(plan, edges, "81")
    assert apart is not None
    assert [(s.piece, d) for s, d in apart[1]] == [(0, [8]), (1, [1])]
    assert apart[0] == pytest.approx(scored[0][1] + scored[2][1] - 0.25 - 0.5 * 1.0)  # the cut and its stroke
    doubted = read_as(plan, edges, "3")  # the whole read as a 3, which the model gives e^-10 of an 8
    assert doubted is not None
    assert doubted[0] == pytest.approx(scored[1][1] - CONFIDENCE_WEIGHT * 10.0, rel=1e-4)
    assert read_as(plan, edges, "811") is None  # more digits than the graph has pieces


def test_of_two_paths_that_spell_a_text_the_better_is_kept() -> None:
    """Nodes 0-3 read "12" along pieces 0 and 1 (cut at node 1) or along pieces 2 and 3 (cut at node 2), the second
    path's pieces less sure of their digits; both paths end at node 3 with two digits read, the worse one last."""
    logits = np.full((4, 10), -4.0, np.float32)
    logits[0, 1], logits[1, 2], logits[2, 1], logits[3, 2] = 4.0, 4.0, 0.0, 0.0
    segments = [Segment(0, 1, 0), Segment(0, 2, 2), Segment(1, 3, 1), Segment(2, 3, 3)]
    plan = Plan(pieces=[], segments=segments, node_cuts=[None, None, None, None], ignored=[])
    scored = confidence_scored(segments, logits)
    found = read_as(plan, text_edges(plan, scored, digit_logs(logits, None)), "12")
    assert found is not None
    assert [(s.piece, d) for s, d in found[1]] == [(0, [1]), (1, [2])]
    assert found[0] == pytest.approx(scored[0][1] + scored[2][1], rel=1e-5)  # pieces 0 and 1


def chosen_text(plan: Plan, scored: list[tuple[Segment, float]], logits: npt.NDArray[np.float32], line: str) -> str:
    """The text weigh_line chooses when the line reader is sure of `line` and the graph reads its own best path."""
    reads = digit_logs(logits, None)
    found = line_candidates(plan, scored, reads, sure_of(line), path_text(graph_path(plan, scored, reads)))
    chosen = weigh_line(found, WEIGHING.texts)
    assert chosen is not None
    return path_text(chosen)


def test_the_line_reader_s_count_of_digits_outweighs_a_merged_reading() -> None:
    plan, scored, logits = line_graph()
    assert chosen_text(plan, scored, logits, "8") == "8"
    assert chosen_text(plan, scored, logits, "81") == "81"
    assert chosen_text(plan, scored, logits, "7777") == "8"  # the graph's own text stays a candidate


def test_a_candidate_is_weighed_by_its_path_its_length_and_its_weakest_digit() -> None:
    plan, scored, logits = line_graph()
    reads = digit_logs(logits, None)
    frames = sure_of("81")
    found = {c.text: c for c in line_candidates(plan, scored, reads, frames, "8")}
    assert {"8", "81"} <= set(found)
    assert "811" not in found  # more digits than the graph has pieces
    apart = found["81"]
    assert [(s.piece, d) for s, d in apart.path] == [(0, [8]), (1, [1])]
    score, _ = read_as(plan, text_edges(plan, scored, reads), "81")  # type: ignore[misc]
    weakest = min(float(reads(Segment(0, 1, 0))[0][8]), float(reads(Segment(1, 2, 1))[0][1]))
    assert apart.features == pytest.approx((score, text_log_likelihood(frames, "81"), 2, 0, weakest), rel=1e-5)
    assert found["8"].features[2:4] == (1, 1)  # one digit, one fewer than the line reader reads


def test_when_the_line_reader_reads_nothing_the_graph_s_text_is_the_one_candidate() -> None:
    plan, scored, logits = line_graph()
    reads = digit_logs(logits, None)
    blank = sure_of("")
    assert best_texts(blank) == []
    (only,) = line_candidates(plan, scored, reads, blank, "8")
    assert only.text == "8"
    assert only.features[2:4] == (1, 0)  # counted as the graph counts it
    mark = Segment(0, 1, EMPTY, passed=Ignored((0, 0, 2, 2), "dot"), cost=0.5)
    marks_only = Plan(pieces=[], segments=[mark], node_cuts=[None, None], ignored=[])
    (empty,) = line_candidates(marks_only, [(mark, -0.5)], reads, blank, "")
    assert empty.text == ""
    assert empty.features == pytest.approx((-0.5, text_log_likelihood(blank, ""), 0, 0, 0.0))  # no digit to doubt


def test_the_candidate_whose_features_weigh_most_is_chosen() -> None:
    """A text the line reader is surer of, whose path reads a digit the classifier doubts, loses to one whose every
    digit the classifier reads; of two texts alike but for their length, the one the line reader counts wins."""

    def candidate(text: str, features: tuple[float, float, float, float, float]) -> Candidate:
        return Candidate(text, [(Segment(0, 1, 0), [int(c) for c in text])], features)

    doubted, read = candidate("1", (0.0, 0.0, 1, 0, -3.0)), candidate("2", (0.0, -1.0, 1, 0, -0.5))
    assert weigh_line([doubted, read], WEIGHING.texts) == read.path
    counted, longer = candidate("12", (0.0, -1.0, 2, 0, -0.5)), candidate("121", (0.0, -1.0, 3, 1, -0.5))
    assert weigh_line([longer, counted], WEIGHING.texts) == counted.path
    assert weigh_line([], WEIGHING.texts) is None


def test_a_passed_mark_reads_no_digit_and_a_pair_two() -> None:
    logits = np.zeros((1, 10), np.float32)
    left, right = np.full((1, 10), 0.01, np.float32), np.full((1, 10), 0.01, np.float32)
    left[0, 4], right[0, 2] = 0.91, 0.91
    reads = digit_logs(logits, PairAnswers(left, right, np.ones((1, 1), np.float32)))
    assert reads(Segment(0, 1, EMPTY)) == []
    pair = reads(Segment(0, 2, 0, pair=0, second=0))
    assert [int(r.argmax()) for r in pair] == [4, 2]
    assert pair[0][4] == pytest.approx(math.log(0.91))


def test_the_line_holds_only_the_number_s_ink_fitted_to_the_reader_s_height() -> None:
    ink = np.zeros((200, 400), np.float32)
    ink[40:130, 50:60] = 1.0  # a 1, 90 px tall
    ink[40:130, 100:150] = 0.8  # a block, a little fainter
    ink[160:166, 30:380] = 1.0  # an underline
    ink[5:8, 380:383] = 1.0  # a speck
    ink[80:83, 75:78] = 1.0  # a decimal point between them
    line = plan_reading(ink).line
    assert line is not None
    assert line.dtype == np.uint8
    assert line.shape[0] == LINE_HEIGHT
    assert line.shape[1] % LINE_STRIDE == 0
    rows = np.flatnonzero(line.max(axis=1) > 0)
    assert (rows[0], rows[-1] + 1) == ((LINE_HEIGHT - LINE_FILL) // 2, (LINE_HEIGHT + LINE_FILL) // 2)
    columns = np.flatnonzero(line.max(axis=0) > 0)
    assert columns[0] == LINE_MARGIN
    assert columns[-1] - columns[0] + 1 == pytest.approx(100 * LINE_FILL / 90, abs=1)
    assert line.shape[1] - 1 - columns[-1] >= LINE_MARGIN
    gap = line[:, LINE_MARGIN + round(12 * LINE_FILL / 90) : LINE_MARGIN + round(48 * LINE_FILL / 90)]
    assert gap.max() == 0  # the point, an ignored mark, is not in it
    assert line.max() == 255  # the brightest strokes at full ink...
    assert 150 < line[LINE_HEIGHT // 2, columns[-1] - 3] < 255  # ... the fainter block fainter


def test_faint_ink_is_brought_to_full_strength_in_the_line() -> None:
    """Pencil on grey paper: the line reader learnt strokes at 255, whatever the ink's contrast."""
    ink = two_bars() * 0.4
    line = plan_reading(ink).line
    assert line is not None
    assert line.max() == 255


def test_a_very_long_line_is_squeezed_to_the_widest_line() -> None:
    ink = np.zeros((40, 1200), np.float32)
    for left in range(10, 1150, 30):  # 38 strokes 30 px tall, 22 px apart: 1,064 px at the reader's height
        ink[5:35, left : left + 8] = 1.0
    line = plan_reading(ink).line
    assert line is not None
    assert line.shape == (LINE_HEIGHT, MAX_LINE_WIDTH)


def test_a_blank_wider_than_a_digit_is_narrowed_for_the_line_reader() -> None:
    """Digits in a form's boxes: the blank between them is narrowed to NARROWED_BLANK heights, as the reader learnt
    blanks; one narrower than WIDE_BLANK heights is kept as it is."""
    height = 60

    def line_width(blank: int) -> int:
        ink = np.zeros((100, 100 + blank), np.float32)
        ink[20 : 20 + height, 40:48] = ink[20 : 20 + height, 48 + blank : 56 + blank] = 1.0
        line = plan_reading(ink).line
        assert line is not None
        columns = np.flatnonzero(line.max(axis=0) > 0)
        return int(columns[-1] - columns[0] + 1)

    narrowed = round(NARROWED_BLANK * height)
    assert line_width(250) == pytest.approx((16 + narrowed) * LINE_FILL / height, abs=1)
    kept = int(WIDE_BLANK * height) - 2
    assert line_width(kept) == pytest.approx((16 + kept) * LINE_FILL / height, abs=1)


def test_the_confidence_weighs_the_digits_and_the_line_reader_on_the_logit_scale() -> None:
    weights = WEIGHING.confidence
    a, b, c = weights
    assert line_confidence(0.9, math.log(0.5), weights) == pytest.approx(1 / (1 + math.exp(-(a * math.log(9) + c))))
    assert line_confidence(0.5, math.log(0.9), weights) == pytest.approx(1 / (1 + math.exp(-(b * math.log(9) + c))))
    assert line_confidence(0.9, math.log(0.9), weights) < line_confidence(0.99, math.log(0.9), weights)
    assert line_confidence(0.99, math.log(0.9), weights) < line_confidence(0.99, 0.0, weights)
    assert 0.99 < line_confidence(1.0, 0.0, weights) < 1.0  # both sure: clamped, not certain
    assert line_confidence(0.0, -math.inf, weights) < 0.01
    assert line_confidence(0.9, math.log(0.5), (1.0, 0.0, 0.0)) == pytest.approx(0.9)  # the digits' alone


def two_bars() -> npt.NDArray[np.float32]:
    """Two upright strokes apart: two groups, each read alone or joined."""
    ink = np.zeros((100, 160), np.float32)
    ink[20:80, 40:48] = ink[20:80, 100:108] = 1.0
    return ink


def test_the_training_lines_are_the_lines_read_plans() -> None:
    ink = two_bars()
    line = plan_reading(ink).line
    assert line is not None
    assert np.array_equal(number_line(ink), line)


def test_a_digit_the_line_reader_reads_otherwise_reports_the_model_s_probability_of_it() -> None:
    """Two strokes the model reads as 1s, the first one barely (a 7 at 0.4); a line reader sure of "71" makes the
    first a 7, with the model's probability of a 7 as its confidence, and the number's confidence weighs both."""
    plan = plan_reading(two_bars())
    assert plan.line is not None
    logits = np.full((len(plan.pieces), 10), -9.0, np.float32)
    logits[:, 1] = 0.0
    first = next(s.piece for s in plan.segments if s.start == 0 and s.end == 1)
    logits[first, 7] = math.log(0.4 / 0.6)
    probabilities = np.exp(log_softmax(logits.astype(np.float64)))
    frames = sure_of("71", plan.line.shape[1] // LINE_STRIDE)
    alone = resolve(plan, probabilities, logits)
    assert alone.text == "11"
    read = resolve(plan, probabilities, logits, line=LineAnswers(frames, WEIGHING))
    assert read.text == "71"
    assert [d.digit for d in read.digits] == [7, 1]
    assert read.digits[0].confidence == pytest.approx(probabilities[first, 7])
    product = math.prod(d.confidence for d in read.digits)
    expected = line_confidence(product, text_log_likelihood(frames, "71"), WEIGHING.confidence)
    assert read.confidence == pytest.approx(expected)
    sure_of_11 = LineAnswers(sure_of("11", plan.line.shape[1] // LINE_STRIDE), WEIGHING)
    kept = resolve(plan, probabilities, logits, line=sure_of_11)
    assert kept.text == "11"
    assert kept.confidence > read.confidence
