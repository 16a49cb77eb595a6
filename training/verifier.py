"""The piece verifier: a second small head, beside the not-a-digit detector, for /read only.

/read cuts a written line into candidate pieces and asks the classifier about each; two touching digits cut out as
one piece are read as one confident digit (a squeezed 13 as an 8). Taught that lesson, the not-a-digit detector
caught fewer of its evaluation non-digits (97.9% -> 95.4%, measured the same way), so this head learns it alone: on
the same features (mean and max of every activation map), single MNIST training digits prepared as /read pieces
against pairs of touching or squeezed training digits (training.pieces). It is folded into the model as the output
`piece_score` (N, 1), every node and initialiser named with its own PREFIX: the trust stage's strip leaves it, and
this stage's strip removes only it, so that running either stage again neither drops nor duplicates the other's
nodes. The detector's nodes, weights and threshold are untouched.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np
import onnx
from onnx import TensorProto, helper

from app.cards import ModelCard, PieceRates, PieceVerifier, TensorSpec
from training import pieces, trust
from training.data import Mnist

PREFIX = "piece_"  # every node and initialiser this module adds; removed before adding them again
FEATURES, SCORE = f"{PREFIX}features", "piece_score"
HIDDEN = 64
SINGLES = 12_000  # training digits prepared as pieces; pairs as many: the head converges well before 2 x 12,000
VALIDATION = 2_500  # pieces of each kind made of validation digits
FRAGMENTS = 0  # half digits among the non-pieces: 6,000 read worse on the dev seed (photos 91.3%, styles 95.5%)
STROKES = True  # every piece restroked as a pen line, a marker or as it was
SEED = 0
Floats = trust.Floats


def strip(proto: onnx.ModelProto) -> onnx.ModelProto:
    """A copy without anything this module added (the detector's nodes stay as they are)."""
    return trust.without(proto, PREFIX, (SCORE,))


def verified(proto: onnx.ModelProto, sources: list[str], head: trust.Head) -> onnx.ModelProto:
    """The graph with the `piece_score` output (N, 1), computed from its own copy of the features; placed before
    `digit_score` among the outputs, which the trust stage keeps last."""
    proto = strip(proto)
    graph = proto.graph
    nodes, initializers = trust.head_nodes(head, prefix=PREFIX, features=FEATURES, output=SCORE)
    graph.node.extend([*trust.feature_nodes(proto, sources, prefix=PREFIX, features=FEATURES), *nodes])
    graph.initializer.extend(initializers)
    names = [o.name for o in graph.output]
    at = names.index(trust.SCORE) if trust.SCORE in names else len(names)
    graph.output.insert(at, helper.make_tensor_value_info(SCORE, TensorProto.FLOAT, ["batch", 1]))
    onnx.checker.check_model(proto, full_check=True)
    return proto


@dataclasses.dataclass
class PieceData:
    """(N, 28, 28) pieces: training singles and pairs for the head, validation singles and pairs to judge it."""

    singles: np.ndarray
    pairs: np.ndarray
    fragments: np.ndarray
    val_singles: np.ndarray
    val_pairs: np.ndarray
    val_fragments: np.ndarray


def piece_data(data: Mnist, count: int = SINGLES, val_count: int = VALIDATION, fragments: int = FRAGMENTS,
               strokes: bool = STROKES) -> PieceData:  # fmt: skip
    """Everything from the training file: pieces of training digits to learn, of validation digits to judge.
    benchmarks.read_eval composes its numbers from test digits, which nothing here sees."""
    count, val_count = min(count, len(data.train)), min(val_count, len(data.validation))
    train, validation, seed = data.train.images, data.validation.images, pieces.PAIR_SEED
    empty = np.zeros((0, 28, 28), np.uint8)
    return PieceData(
        singles=pieces.single_pieces(train[:count], strokes=strokes),
        pairs=pieces.pair_set(train, count, strokes=strokes),
        fragments=pieces.fragment_set(train, fragments, strokes=strokes) if fragments else empty,
        val_singles=pieces.single_pieces(validation[:val_count], seed=seed + 3, strokes=strokes),
        val_pairs=pieces.pair_set(validation, val_count, seed=seed + 2, strokes=strokes),
        val_fragments=pieces.fragment_set(validation, val_count, seed=seed + 5, strokes=strokes)
        if fragments
        else empty,
    )


def piece_rates(single_scores: Floats, pair_scores: Floats, fragment_scores: Floats) -> PieceRates:
    return PieceRates(
        singles=len(single_scores),
        singles_accepted=round(float((single_scores >= 0.5).mean()), 5),
        pairs=len(pair_scores),
        pairs_caught=round(float((pair_scores < 0.5).mean()), 5),
        fragments=len(fragment_scores),
        fragments_caught=round(float((fragment_scores < 0.5).mean()), 5) if len(fragment_scores) else None,
    )


def verifier_record(sources: list[str], sets: PieceData, validation: PieceRates) -> PieceVerifier:
    return PieceVerifier(
        output=SCORE,
        features=" + ".join(f"mean and max of {s}" if s.startswith("conv") else s for s in sources),
        head=f"standardised features -> dense {HIDDEN}, ReLU -> dense 1 -> sigmoid; trained in NumPy",
        training={
            "single_digits": len(sets.singles),
            "pairs_of_touching_digits": len(sets.pairs),
            "fragments_of_digits": len(sets.fragments),
            "restroked": STROKES,
            "source": "MNIST training digits prepared as /read prepares a piece (training/pieces.py)",
            "pair_seed": pieces.PAIR_SEED,
            "seed": SEED,
        },
        validation=validation,
    )


@dataclasses.dataclass
class Result:
    card: ModelCard
    proto: onnx.ModelProto
    head: trust.Head


def make_verified(
    card: ModelCard, proto: onnx.ModelProto, data: Mnist, parity_images: int = 1000, log: Callable[[str], None] = print
) -> Result:
    """Train the piece verifier on the features of `proto` and fold it in; the card gains its section, its output
    and its parity. Whatever verifier the graph had is replaced."""
    sources = trust.feature_sources(card)
    base = strip(proto)
    probe, sets = trust.with_features(base, sources), piece_data(data)
    log(f"{card.name}: features of {len(sets.singles):,} single digits, {len(sets.pairs):,} pairs and"
        f" {len(sets.fragments):,} fragments")  # fmt: skip
    others = np.concatenate([sets.pairs, sets.fragments])
    features = [trust.run(probe, images, [trust.FEATURES])[0] for images in (sets.singles, others)]
    head = trust.train_head(*features, seed=SEED, hidden=HIDDEN)
    val_singles, val_pairs, val_fragments = (
        head.score(trust.run(probe, i, [trust.FEATURES])[0])[:, 0] if len(i) else np.zeros(0, np.float32)
        for i in (sets.val_singles, sets.val_pairs, sets.val_fragments)
    )
    new = verified(proto, sources, head)
    probe_images = data.test.images[:parity_images]
    (scores,) = trust.run(new, probe_images, [SCORE])
    parity = float(np.abs(scores - head.score(trust.run(probe, probe_images, [trust.FEATURES])[0])).max())
    outputs = [o for o in card.outputs if o.name != SCORE]
    names = [o.name for o in outputs]
    at = names.index(trust.SCORE) if trust.SCORE in names else len(names)
    outputs.insert(at, TensorSpec(name=SCORE, shape=[-1, 1]))
    card = card.model_copy(
        update={
            "outputs": outputs,
            "piece_verifier": verifier_record(sources, sets, piece_rates(val_singles, val_pairs, val_fragments)),
            "parity": card.parity.model_copy(update={"max_abs_diff": {**card.parity.max_abs_diff, SCORE: parity}}),
        }
    )
    return Result(card=card, proto=new, head=head)
