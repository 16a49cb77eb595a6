"""The piece verifier (training.verifier): /read's `piece_score` head beside the not-a-digit detector, and the
pieces it learns from (training.pieces)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from app.cards import ModelCard, read_card
from app.preprocess import is_mnist_layout
from tests.helpers import MODELS_DIR
from training import pieces, report, trust, verifier
from training.data import Mnist


@pytest.fixture(scope="module")
def cnn_card() -> ModelCard:
    return read_card(MODELS_DIR / "cnn")


@pytest.fixture(scope="module")
def cnn_proto() -> onnx.ModelProto:
    return onnx.load(str(MODELS_DIR / "cnn" / "model.onnx"))


def test_pairs_are_wider_than_single_digits_and_prepared_as_read_pieces(mnist_sample: Mnist) -> None:
    """Two touching digits fill the 20-px box's width more often than one digit does; every kind of piece comes out
    as /read prepares one: 28x28, centred, seeded."""
    digits = mnist_sample.train.images[:40]
    pairs, singles = pieces.pair_set(digits, 40, strokes=True), pieces.single_pieces(digits, strokes=True)
    fragments = pieces.fragment_set(digits, 40, strokes=True)
    assert pairs.shape == singles.shape == fragments.shape == (40, 28, 28)
    assert np.array_equal(pairs, pieces.pair_set(digits, 40, strokes=True))
    assert np.array_equal(fragments, pieces.fragment_set(digits, 40, strokes=True))
    assert np.mean([is_mnist_layout(image) for image in pairs]) >= 0.85

    def ink_width(images: np.ndarray) -> float:
        return float(np.mean([np.ptp(np.flatnonzero(image.any(axis=0))) for image in images]))

    assert ink_width(pairs) > ink_width(singles) + 2


def test_piece_score_tells_a_squeezed_pair_from_a_single_digit(mnist_sample: Mnist, cnn_proto: onnx.ModelProto) -> None:
    """On test digits the head never saw: most single digits score above 0.5, most pairs below."""
    digits = mnist_sample.test.images[:60]
    singles, pairs = pieces.single_pieces(digits, seed=7), pieces.pair_set(digits, 60, seed=8)
    (single_scores,) = trust.run(cnn_proto, singles, [verifier.SCORE])
    (pair_scores,) = trust.run(cnn_proto, pairs, [verifier.SCORE])
    assert single_scores.shape == (60, 1)
    assert (single_scores >= 0.5).mean() >= 0.9
    assert (pair_scores < 0.5).mean() >= 0.9


def test_the_committed_card_records_the_verifier_and_keeps_every_section(cnn_card: ModelCard) -> None:
    section = cnn_card.piece_verifier
    assert section is not None
    assert ModelCard.model_validate_json(cnn_card.model_dump_json()) == cnn_card
    names = [o.name for o in cnn_card.outputs]
    assert names[-2:] == [section.output, "digit_score"] == ["piece_score", "digit_score"]
    assert section.validation.singles_accepted >= 0.95
    assert section.validation.pairs_caught >= 0.95
    markdown = (MODELS_DIR / "cnn" / "card.md").read_text()
    for heading in ("## Outputs", "## Calibration", "## Not a digit", "## Piece verifier", "## Explanations"):
        assert heading in markdown
    figures = sorted(str(p.relative_to(MODELS_DIR / "cnn")) for p in (MODELS_DIR / "cnn" / "figures").glob("*.png"))
    rendered = report.card_markdown(cnn_card, figures)
    assert "## Piece verifier" in rendered
    assert "## Explanations" in rendered  # every stage that re-renders card.md keeps it


def test_verifying_again_replaces_only_what_it_added(cnn_card: ModelCard, cnn_proto: onnx.ModelProto) -> None:
    """Idempotent, and independent of the trust stage: neither strip removes the other's nodes, and the detector's
    digit_score is the same with or without the verifier."""
    sources = trust.feature_sources(cnn_card)
    rng = np.random.default_rng(0)
    width = trust.run(trust.with_features(cnn_proto, sources), np.zeros((1, 28, 28), np.uint8), [trust.FEATURES])
    size = width[0].shape[1]
    head = trust.Head(
        w1=rng.normal(size=(size, 4)).astype(np.float32),
        b1=np.zeros(4, np.float32),
        w2=rng.normal(size=(4, 1)).astype(np.float32),
        b2=np.zeros(1, np.float32),
    )
    once = verifier.verified(cnn_proto, sources, head)
    twice = verifier.verified(once, sources, head)
    assert len(twice.graph.node) == len(once.graph.node) == len(cnn_proto.graph.node)
    assert [o.name for o in twice.graph.output].count(verifier.SCORE) == 1
    assert [o.name for o in twice.graph.output][-2:] == [verifier.SCORE, "digit_score"]
    stripped = verifier.strip(cnn_proto)
    assert verifier.SCORE not in [o.name for o in stripped.graph.output]
    assert not any(n.name.startswith(verifier.PREFIX) for n in stripped.graph.node)
    assert any(n.name.startswith(verifier.PREFIX) for n in trust.strip(cnn_proto).graph.node)
    images = np.random.default_rng(1).integers(0, 256, (8, 28, 28)).astype(np.uint8)
    (before,) = trust.run(stripped, images, ["digit_score"])
    after, scores = trust.run(once, images, ["digit_score", verifier.SCORE])
    np.testing.assert_array_equal(before, after)
    (features,) = trust.run(trust.with_features(once, sources), images, [trust.FEATURES])
    np.testing.assert_allclose(scores, head.score(features), atol=1e-5)


def test_the_cli_step_is_listed(tmp_path: Path) -> None:
    from training.__main__ import build_parser

    args = build_parser().parse_args(["verify-pieces", "--models-dir", str(tmp_path)])
    assert args.command == "verify-pieces"
    assert args.model == "cnn"
