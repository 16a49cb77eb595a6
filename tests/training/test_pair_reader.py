"""The pair reader (training.pair_reader): /read's pair.onnx, a network of its own that reads a run of touching ink
as two digits, and the runs it learns from (training.pairs)."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from app.cards import PAIR_INPUT, PAIR_LEFT, PAIR_RIGHT, PAIR_SCORE, ModelCard, read_card
from app.reading import PairRun
from app.runtime.pair_reader import read_runs
from tests.helpers import MODELS_DIR
from training import export, pair_reader, pairs, pieces, report
from training.data import Mnist
from training.pipeline import kept_readers


@pytest.fixture(scope="module")
def cnn_card() -> ModelCard:
    return read_card(MODELS_DIR / "cnn")


def _line() -> pieces.Line:
    """Three 10x10 digits side by side, each touching the next."""
    ink = np.zeros((20, 40), np.float32)
    masks = [np.zeros(ink.shape, bool) for _ in range(3)]
    for mask, left in zip(masks, (5, 14, 23), strict=True):
        mask[5:15, left : left + 10] = True
    return pieces.Line(ink, masks, [3, 7, 1])


def _run(x: int, width: int) -> PairRun:
    return PairRun(0, 2, np.zeros((28, 56), np.uint8), (x, 5, width, 10), np.ones((10, width), bool))


def test_a_run_is_labelled_by_the_ink_it_holds() -> None:
    line = _line()
    assert pairs.pair_label(_run(5, 19), line) == (3, 7)  # the first two, a column of the third
    assert pairs.pair_label(_run(15, 18), line) == (7, 1)
    assert pairs.pair_label(_run(5, 10), line) == (pairs.NOT_A_PAIR,) * 2  # one digit
    assert pairs.pair_label(_run(5, 28), line) == (pairs.NOT_A_PAIR,) * 2  # three
    assert pairs.pair_label(_run(5, 17), line) is None  # the first and 70% of the second: neither, left out


def test_labelled_runs_are_prepared_as_read_prepares_them_and_seeded(mnist_sample: Mnist) -> None:
    train = mnist_sample.train
    images, labels = pairs.labelled_pairs(train.images, train.labels, lines=12, seed=5)
    again, same = pairs.labelled_pairs(train.images, train.labels, lines=12, seed=5)
    assert images.shape[1:] == (28, 56)
    assert images.dtype == np.uint8
    assert labels.shape == (len(images), 2)
    assert np.array_equal(images, again)
    assert np.array_equal(labels, same)
    two = labels[:, 0] >= 0
    assert 0 < two.sum() < len(labels)  # pairs and other runs
    assert set(labels[two].ravel()) <= set(train.labels)
    assert (labels[~two] == pairs.NOT_A_PAIR).all()


def test_the_committed_reader_reads_pairs_of_digits_it_never_saw(mnist_sample: Mnist, cnn_card: ModelCard) -> None:
    """On runs cut from lines of test digits."""
    test = mnist_sample.test
    images, labels = pairs.labelled_pairs(test.images, test.labels, lines=60, seed=9)
    section = cnn_card.pair_reader
    assert section is not None
    session = ort.InferenceSession(str(MODELS_DIR / "cnn" / section.file), providers=["CPUExecutionProvider"])
    rates = pair_reader.rates(read_runs(session, images), labels)
    assert rates.pairs >= 30
    assert rates.others >= 100
    assert rates.pairs_read >= 0.85
    assert rates.pairs_kept >= 0.85
    assert rates.others_caught >= 0.85


def test_the_committed_card_records_the_pair_reader(cnn_card: ModelCard) -> None:
    section = cnn_card.pair_reader
    assert section is not None
    content = (MODELS_DIR / "cnn" / section.file).read_bytes()
    assert hashlib.sha256(content).hexdigest() == section.file_sha256
    assert len(content) == section.file_bytes
    assert section.validation.pairs_read >= 0.9
    assert section.validation.others_caught >= 0.9
    assert section.training["parity_max_abs_diff"] <= pair_reader.PARITY
    assert section.network == pair_reader.network()  # read at pair_reader.SHIFTS
    assert "## Pair reader" in (MODELS_DIR / "cnn" / "card.md").read_text()
    assert "## Pair reader" in report.card_markdown(cnn_card, [])


def _linear_reader(seed: int) -> onnx.ModelProto:
    """A reader whose answers depend on where each pixel is: linear heads on the flattened field."""
    rng = np.random.default_rng(seed)
    weights = {
        name: numpy_helper.from_array(rng.normal(0, 0.05, (28 * 56, width)).astype(np.float32), f"{name}_weights")
        for name, width in ((PAIR_LEFT, 10), (PAIR_RIGHT, 10), (PAIR_SCORE, 1))
    }
    flat = numpy_helper.from_array(np.array([-1, 28 * 56], np.int64), "flat")
    nodes = [helper.make_node("Reshape", [PAIR_INPUT, "flat"], ["pixels"])]
    for name in weights:
        nodes.append(helper.make_node("MatMul", ["pixels", f"{name}_weights"], [f"{name}_logits"]))
        nodes.append(helper.make_node("Sigmoid" if name == PAIR_SCORE else "Softmax", [f"{name}_logits"], [name]))
    graph = helper.make_graph(
        nodes,
        "linear",
        [helper.make_tensor_value_info(PAIR_INPUT, TensorProto.FLOAT, ["n", 28, 56, 1])],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["n", 1 if n == PAIR_SCORE else 10]) for n in weights],
        [flat, *weights.values()],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", export.OPSET)])


def test_the_reader_reads_each_run_at_every_shift_and_answers_the_mean() -> None:
    reader = _linear_reader(seed=3)
    runs = np.random.default_rng(4).integers(0, 256, (5, 28, 56), dtype=np.uint8)
    runs[:, :, :2] = runs[:, :, -2:] = 0  # as pair_of_ink centres a run: no ink in the outer columns
    plain = ort.InferenceSession(reader.SerializeToString(), providers=["CPUExecutionProvider"])
    wrapped = pair_reader.read_at_shifts(reader, (0, 2, -1))
    session = ort.InferenceSession(wrapped.SerializeToString(), providers=["CPUExecutionProvider"])
    moved = [np.roll(runs, by, axis=2) for by in (0, 2, -1)]  # the outer columns are empty: a roll is a shift
    views = [read_runs(plain, view) for view in moved]
    got = read_runs(session, runs)
    for name in ("left", "right", "score"):
        expected = np.mean([getattr(view, name) for view in views], axis=0)
        assert np.allclose(getattr(got, name), expected, atol=1e-6)
        assert not np.allclose(getattr(got, name), getattr(views[0], name), atol=1e-3)  # the shifts count
    assert [o.name for o in session.get_outputs()] == [o.name for o in plain.get_outputs()]
    assert np.array_equal(pair_reader.shifted(runs[..., None], 2)[..., 0], moved[1])  # the parity check's shift
    assert np.array_equal(pair_reader.shifted(runs[..., None], -1)[..., 0], moved[2])


@pytest.mark.slow
def test_exporting_writes_the_file_its_card_names(mnist_sample: Mnist, tmp_path: Path) -> None:
    """End to end on the shipped sample, briefly trained: the file, its checksum and rates in the card."""
    folder = tmp_path / "cnn"
    shutil.copytree(MODELS_DIR / "cnn", folder, ignore=shutil.ignore_patterns("*.onnx", "figures"))
    card = pair_reader.export_pair_reader(folder, mnist_sample, lines=40, validation_lines=10, epochs=1, log=print)
    section = card.pair_reader
    assert section is not None
    content = (folder / section.file).read_bytes()
    assert hashlib.sha256(content).hexdigest() == section.file_sha256
    assert read_card(folder) == card
    assert section.training["lines"] == 40
    assert section.validation.pairs + section.validation.others > 0
    session = ort.InferenceSession(content, providers=["CPUExecutionProvider"])
    answers = read_runs(session, np.zeros((3, 28, 56), np.uint8))
    assert answers.left.shape == answers.right.shape == (3, 10)
    assert answers.score.shape == (3, 1)


def test_a_retrained_model_keeps_its_readers_while_their_files_match(tmp_path: Path) -> None:
    folder = Path(shutil.copytree(MODELS_DIR / "cnn", tmp_path / "cnn", ignore=shutil.ignore_patterns("figures")))
    card = read_card(folder)
    assert card.pair_reader is not None
    assert card.line_reader is not None
    assert kept_readers(folder) == {"pair_reader": card.pair_reader, "line_reader": card.line_reader}
    (folder / "pair.onnx").write_bytes(b"another reader")
    assert kept_readers(folder) == {"line_reader": card.line_reader}
    (folder / "line.onnx").unlink()
    assert kept_readers(folder) == {}
    assert kept_readers(tmp_path) == {}  # no card at all


def test_the_cli_step_is_listed(tmp_path: Path) -> None:
    from training.__main__ import build_parser

    args = build_parser().parse_args(["read-pairs", "--models-dir", str(tmp_path)])
    assert args.command == "read-pairs"
    assert args.model == "cnn"
