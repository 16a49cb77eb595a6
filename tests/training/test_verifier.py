"""The piece verifier (training.verifier): /read's `piece_score`, a small network folded into the cnn graph beside
the not-a-digit detector, and the pieces it learns from (training.pieces)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from app.cards import ModelCard, read_card
from app.reading import Piece
from tests.helpers import MODELS_DIR
from training import pieces, report, trust, verifier
from training.data import Mnist


@pytest.fixture(scope="module")
def cnn_card() -> ModelCard:
    return read_card(MODELS_DIR / "cnn")


@pytest.fixture(scope="module")
def cnn_proto() -> onnx.ModelProto:
    return onnx.load(str(MODELS_DIR / "cnn" / "model.onnx"))


def _line() -> pieces.Line:
    """Two 10x10 digits side by side, the second's first column touching the first's last."""
    ink = np.zeros((20, 30), np.float32)
    first, second = np.zeros(ink.shape, bool), np.zeros(ink.shape, bool)
    first[5:15, 5:15], second[5:15, 14:24] = True, True
    return pieces.Line(ink, [first, second], [3, 7])


def _piece(x: int, width: int) -> Piece:
    return Piece(np.zeros((28, 28), np.uint8), (x, 5, width, 10), np.ones((10, width), bool))


def test_a_piece_is_labelled_by_the_ink_it_holds() -> None:
    line = _line()
    assert pieces.piece_label(_piece(5, 10), line) == 3  # all of the first digit, a column of the second
    assert pieces.piece_label(_piece(15, 9), line) == 7  # nearly all of the second
    assert pieces.piece_label(_piece(5, 19), line) == pieces.NOT_ONE_DIGIT  # both: a touching pair
    assert pieces.piece_label(_piece(5, 5), line) == pieces.NOT_ONE_DIGIT  # half the first: a fragment
    assert pieces.piece_label(_piece(5, 7), line) is None  # 70% of the first: neither, left out


def test_a_written_line_holds_every_digit_however_deep_the_overlap() -> None:
    """A "\\" then a "/" first meet at their far ends, so touching overlaps them nearly whole: at the start of a line
    that pushed the next digit off the canvas (a crash in one of 24,000 lines of training digits)."""
    strokes = np.zeros((2, 28, 28), np.uint8)
    strokes[0, 4:24, 4:24] = np.eye(20, dtype=np.uint8) * 255
    strokes[1, 4:24, 4:24] = np.eye(20, dtype=np.uint8)[::-1] * 255
    for seed in range(300):
        line = pieces.written_line(np.random.default_rng(seed), strokes, np.array([0, 1], np.uint8), touching=1.0)
        assert all(digit.any() for digit in line.digits)
        assert all(digit.shape == line.ink.shape for digit in line.digits)


def test_labelled_pieces_are_prepared_as_read_prepares_them_and_seeded(mnist_sample: Mnist) -> None:
    train = mnist_sample.train
    images, labels = pieces.labelled_pieces(train.images, train.labels, lines=12, seed=5)
    again, same = pieces.labelled_pieces(train.images, train.labels, lines=12, seed=5)
    assert images.shape[1:] == (28, 28)
    assert images.dtype == np.uint8
    assert len(images) == len(labels)
    assert np.array_equal(images, again)
    assert np.array_equal(labels, same)
    assert set(labels) <= set(range(pieces.NOT_ONE_DIGIT + 1))
    assert 0 < (labels < pieces.NOT_ONE_DIGIT).sum() < len(labels)  # whole digits and other pieces
    assert set(labels[labels < pieces.NOT_ONE_DIGIT]) <= set(train.labels)


def test_piece_score_accepts_whole_digits_and_rejects_other_pieces(
    mnist_sample: Mnist, cnn_proto: onnx.ModelProto
) -> None:
    """On pieces cut from lines of test digits the network never saw."""
    test = mnist_sample.test
    images, labels = pieces.labelled_pieces(test.images, test.labels, lines=60, seed=9)
    (scores,) = trust.run(cnn_proto, images, [verifier.SCORE])
    assert scores.shape == (len(images), 1)
    rates = verifier.piece_rates(scores[:, 0], labels)
    assert rates.digits >= 50
    assert rates.others >= 100
    assert rates.digits_accepted >= 0.85
    assert rates.others_caught >= 0.85


def test_the_committed_card_records_the_verifier_and_keeps_every_section(cnn_card: ModelCard) -> None:
    section = cnn_card.piece_verifier
    assert section is not None
    assert ModelCard.model_validate_json(cnn_card.model_dump_json()) == cnn_card
    names = [o.name for o in cnn_card.outputs]
    assert names[-2:] == [section.output, "digit_score"] == ["piece_score", "digit_score"]
    assert section.validation.digits_accepted >= 0.9
    assert section.validation.others_caught >= 0.9
    assert cnn_card.parity.max_abs_diff[verifier.SCORE] <= cnn_card.parity.tolerance
    markdown = (MODELS_DIR / "cnn" / "card.md").read_text()
    for heading in ("## Outputs", "## Calibration", "## Not a digit", "## Piece verifier", "## Explanations"):
        assert heading in markdown
    figures = sorted(str(p.relative_to(MODELS_DIR / "cnn")) for p in (MODELS_DIR / "cnn" / "figures").glob("*.png"))
    rendered = report.card_markdown(cnn_card, figures)
    assert "## Piece verifier" in rendered
    assert "## Explanations" in rendered  # every stage that re-renders card.md keeps it


def _mean_map_reader(shape: list[int]) -> onnx.ModelProto:
    """A stand-in reader: piece_score = sigmoid(mean of the map over channels, rows and columns)."""
    nodes = [
        helper.make_node("ReduceMean", [verifier.MAPS], ["mean"], name="mean", axes=[1, 2, 3], keepdims=0),
        helper.make_node("Sigmoid", ["mean"], ["sigmoid"], name="sigmoid"),
        helper.make_node("Unsqueeze", ["sigmoid", "axis"], [verifier.SCORE], name="unsqueeze"),
    ]
    graph = helper.make_graph(
        nodes,
        "reader",
        [helper.make_tensor_value_info(verifier.MAPS, TensorProto.FLOAT, ["batch", *shape])],
        [helper.make_tensor_value_info(verifier.SCORE, TensorProto.FLOAT, ["batch", 1])],
        [helper.make_tensor("axis", TensorProto.INT64, [1], [1])],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_verifying_again_replaces_only_what_it_added(cnn_card: ModelCard, cnn_proto: onnx.ModelProto) -> None:
    """Idempotent, and independent of the trust stage: neither strip removes the other's nodes, and the detector's
    digit_score is the same with or without the verifier, which reads the classifier's deepest map."""
    source = verifier.source_of(cnn_card)
    reader = _mean_map_reader(source.shape)
    once = verifier.verified(cnn_proto, reader, source.name)
    twice = verifier.verified(once, reader, source.name)
    stripped = verifier.strip(cnn_proto)
    assert len(twice.graph.node) == len(once.graph.node) == len(stripped.graph.node) + 3
    assert [o.name for o in twice.graph.output].count(verifier.SCORE) == 1
    assert [o.name for o in twice.graph.output][-2:] == [verifier.SCORE, "digit_score"]
    assert verifier.SCORE not in [o.name for o in stripped.graph.output]
    assert not any(n.name.startswith(verifier.PREFIX) for n in stripped.graph.node)
    assert any(n.name.startswith(verifier.PREFIX) for n in trust.strip(cnn_proto).graph.node)
    images = np.random.default_rng(1).integers(0, 256, (8, 28, 28)).astype(np.uint8)
    (before,) = trust.run(stripped, images, ["digit_score"])
    after, scores, maps = trust.run(once, images, ["digit_score", verifier.SCORE, source.name])
    np.testing.assert_array_equal(before, after)
    expected = 1 / (1 + np.exp(-maps.reshape(8, -1).mean(axis=1, keepdims=True)))
    np.testing.assert_allclose(scores, expected, atol=1e-5)


def test_the_cli_step_is_listed(tmp_path: Path) -> None:
    from training.__main__ import build_parser

    args = build_parser().parse_args(["verify-pieces", "--models-dir", str(tmp_path)])
    assert args.command == "verify-pieces"
    assert args.model == "cnn"
