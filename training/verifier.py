"""The piece verifier: /read's `piece_score`, a small head on the classifier's deepest convolution map.

/read cuts a written line into candidate pieces and asks the classifier about each; the classifier is as sure of two
touching digits cut out as one (a 7 with a 1 through its bar read as a 7) and of a digit with a stroke of its
neighbour as of a clean digit. This head learns which pieces are one whole digit from what the segmenter really
cuts (training.pieces: lines of MNIST training digits, each piece labelled by the ink it holds). It reads the map
unpooled, where the ink lies, is trained on eleven classes (the ten digits and "not one digit": learning the digits
helps it learn their shapes) and answers piece_score = 1 - p(not one digit), (N, 1). Its nodes and initialisers are
named with PREFIX: the trust stage's strip leaves them, and this stage's strip removes only them, so that running
either stage again neither drops nor duplicates the other's nodes. The classifier and the not-a-digit detector are
untouched. ONNX Runtime runs every node of the graph whichever outputs a call asks for, so /predict pays for
this head too: it is kept small.

History (photos / styles of benchmarks.read_eval, held-out seed 1): a head on the classifier's pooled features (mean
and max of each map) trained on composed pairs against single digits read 90.5% / 93.1%; the same head trained on
the segmenter's pieces did no better on the dev seed (pooling loses where the ink lies); a network of its own on the
piece's pixels read 91.7% / 93.1% but doubled the cost of every /predict call. Later, on dev seeds 0, 3 and 4
(photos 96.8 / 95.9 / 95.8%, styles 97.0 / 94.9 / 94.0%), neither 11,000 lines and 6 epochs (96.6 / 96.1 / 95.9%,
styles 96.1 / 95.2 / 93.4%) nor lines of which half hold a 1 (a narrow 1 taken into its neighbour, "81" read as an
8, is the commonest failure of touching pairs the pair reader does not cause: 96.8 / 95.9 / 95.9%, styles 97.0 /
95.2 / 93.4%) read better; neither was kept.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable

import keras
import numpy as np
import onnx
import tensorflow as tf
import tf2onnx
from keras import layers
from onnx import TensorProto, helper

from app.cards import ActivationLayer, ModelCard, PieceRates, PieceVerifier, TensorSpec
from training import export, pieces, trust
from training.data import Mnist

PREFIX = "piece_"  # every node and initialiser this module adds; removed before adding them again
SCORE = "piece_score"
LINES = 8_000  # written lines of training digits: ~110,000 labelled pieces, a fifth of them whole digits
VALIDATION_LINES = 1_000  # lines of validation digits, to judge it
DIGITS_PER_LINE = 5  # at most one line per this many digits of a split: a small set (the repo's sample) gets few
EPOCHS = 4
BATCH = 128
SEED = 0
LAYERS = "1x1 conv 32 -> dense 128 -> dropout 0.3 -> dense 11"
MAPS = "piece_maps"  # the reader's input while it is trained: the classifier's deepest convolution map


def source_of(card: ModelCard) -> ActivationLayer:
    """The map the reader reads: the classifier's deepest convolution, computed for every call anyway. (A network
    of its own on the piece's pixels read no better and doubled the cost of every /predict call: ONNX Runtime runs
    every node of the graph, whichever outputs are asked for.)"""
    return card.activations[-1]


def build_reader(shape: list[int]) -> keras.Model:
    """(N, C, H, W) convolution maps -> 11 logits: the ten digits, then NOT_ONE_DIGIT."""
    return keras.Sequential(
        [
            keras.Input(tuple(shape), name=MAPS),
            layers.Permute((2, 3, 1)),  # the exported maps are NCHW; Keras convolves channels last
            layers.Conv2D(32, 1, activation="relu"),
            layers.Flatten(),
            layers.Dense(128, activation="relu"),
            layers.Dropout(0.3),
            layers.Dense(pieces.NOT_ONE_DIGIT + 1),
        ]
    )


def train_reader(maps: np.ndarray, labels: np.ndarray, epochs: int = EPOCHS, seed: int = SEED) -> keras.Model:
    """Cross-entropy with Adam on a cosine schedule; "not one digit" (four pieces in five) weighed as all digits
    together, so that neither side of the score is learnt at the other's expense."""
    keras.utils.set_random_seed(seed)
    model = build_reader(list(maps.shape[1:]))
    others = float((labels == pieces.NOT_ONE_DIGIT).sum())
    weights = dict.fromkeys(range(pieces.NOT_ONE_DIGIT), 1.0) | {pieces.NOT_ONE_DIGIT: (len(labels) - others) / others}
    schedule = keras.optimizers.schedules.CosineDecay(2e-3, epochs * -(-len(labels) // BATCH))
    model.compile(keras.optimizers.Adam(schedule), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(maps, labels, batch_size=BATCH, epochs=epochs, class_weight=weights, verbose=2)
    return model


def reader_graph(model: keras.Model) -> tuple[onnx.ModelProto, Callable[[np.ndarray], np.ndarray]]:
    """The trained head as an ONNX graph from MAPS to SCORE, and the TensorFlow function it must match."""
    signature = [tf.TensorSpec([None, *model.input_shape[1:]], tf.float32, name=MAPS)]

    @tf.function(input_signature=signature)
    def score(maps: tf.Tensor) -> dict[str, tf.Tensor]:
        probabilities = tf.nn.softmax(model(maps, training=False))
        return {SCORE: 1.0 - probabilities[:, pieces.NOT_ONE_DIGIT :]}

    proto, _ = tf2onnx.convert.from_function(score, input_signature=signature, opset=export.OPSET)
    return proto, lambda maps: score(tf.constant(maps))[SCORE].numpy()


def strip(proto: onnx.ModelProto) -> onnx.ModelProto:
    """A copy without anything this module added (the detector's nodes stay as they are)."""
    return trust.without(proto, PREFIX, (SCORE,))


def verified(proto: onnx.ModelProto, reader: onnx.ModelProto, source: str) -> onnx.ModelProto:
    """The graph with the reader's nodes, named with PREFIX and fed the `source` map, and its SCORE output (N, 1),
    placed before `digit_score` among the outputs, which the trust stage keeps last."""
    proto = strip(proto)
    graph = proto.graph
    renamed = onnx.compose.add_prefix(reader, PREFIX, rename_inputs=True, rename_outputs=False)
    for node in renamed.graph.node:
        node.input[:] = [source if name == f"{PREFIX}{MAPS}" else name for name in node.input]
        node.name = node.name if node.name.startswith(PREFIX) else f"{PREFIX}{node.name}"
    graph.node.extend(renamed.graph.node)
    graph.initializer.extend(renamed.graph.initializer)
    names = [o.name for o in graph.output]
    at = names.index(trust.SCORE) if trust.SCORE in names else len(names)
    graph.output.insert(at, helper.make_tensor_value_info(SCORE, TensorProto.FLOAT, ["batch", 1]))
    onnx.checker.check_model(proto, full_check=True)
    return proto


def piece_rates(scores: np.ndarray, labels: np.ndarray) -> PieceRates:
    whole, others = scores[labels != pieces.NOT_ONE_DIGIT], scores[labels == pieces.NOT_ONE_DIGIT]
    return PieceRates(
        digits=len(whole),
        digits_accepted=round(float((whole >= 0.5).mean()), 5),
        others=len(others),
        others_caught=round(float((others < 0.5).mean()), 5),
    )


@dataclasses.dataclass
class Result:
    card: ModelCard
    proto: onnx.ModelProto


def make_verified(
    card: ModelCard,
    proto: onnx.ModelProto,
    data: Mnist,
    lines: int = LINES,
    validation_lines: int = VALIDATION_LINES,
    epochs: int = EPOCHS,
    log: Callable[[str], None] = print,
) -> Result:
    """Train the piece verifier and fold it into `proto`; the card gains its section, its output and its parity.
    Whatever verifier the graph had is replaced."""
    started = time.perf_counter()
    lines = min(lines, len(data.train.images) // DIGITS_PER_LINE)
    validation_lines = min(validation_lines, len(data.validation.images) // DIGITS_PER_LINE)
    images, labels = pieces.labelled_pieces(data.train.images, data.train.labels, lines, seed=SEED)
    val_images, val_labels = pieces.labelled_pieces(
        data.validation.images, data.validation.labels, validation_lines, seed=SEED + 1
    )
    whole = int((labels != pieces.NOT_ONE_DIGIT).sum())
    log(f"{card.name}: {len(labels):,} pieces cut from {lines:,} lines ({whole:,} whole digits)"
        f" in {time.perf_counter() - started:.0f} s")  # fmt: skip
    source = source_of(card).name
    (maps,) = trust.run(proto, images, [source])  # the classifier's map, whatever verifier the graph holds
    reader, reference = reader_graph(train_reader(maps, labels, epochs=epochs))
    new = verified(proto, reader, source)
    (scores,) = trust.run(new, val_images, [SCORE])
    probe = data.test.images[:1000]
    onnx_scores, probe_maps = trust.run(new, probe, [SCORE, source])
    parity = float(np.abs(onnx_scores - reference(probe_maps)).max())
    outputs = [o for o in card.outputs if o.name != SCORE]
    names = [o.name for o in outputs]
    at = names.index(trust.SCORE) if trust.SCORE in names else len(names)
    outputs.insert(at, TensorSpec(name=SCORE, shape=[-1, 1]))
    record = PieceVerifier(
        output=SCORE,
        network=f"on the classifier's {source} map: {LAYERS} (ten digits, not one digit); piece_score = 1 - p(not"
        " one digit); Keras, cross-entropy, Adam",
        training={
            "lines": lines,
            "pieces": len(labels),
            "whole_digits": whole,
            "epochs": epochs,
            "source": "MNIST training digits in written lines, cut by app.reading (training/pieces.py)",
            "seed": SEED,
        },
        validation=piece_rates(scores[:, 0], val_labels),
    )
    card = card.model_copy(
        update={
            "outputs": outputs,
            "piece_verifier": record,
            "parity": card.parity.model_copy(update={"max_abs_diff": {**card.parity.max_abs_diff, SCORE: parity}}),
        }
    )
    return Result(card=card, proto=new)
