"""pair.onnx, /read's reader of two touching digits: opened next to the model's session, from its card."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from app.cards import PAIR_INPUT, PAIR_LEFT, PAIR_RIGHT, PAIR_SCORE, ModelCard
from app.preprocess import model_input
from app.reading import PairAnswers
from app.runtime.session import optional_companion

WARM_UP_BATCH = 8  # runs of a few touching groups


def open_pair_reader(
    folder: Path, card: ModelCard, providers: Sequence[str], options: ort.SessionOptions
) -> ort.InferenceSession | None:
    """The card's pair.onnx, checked and warmed up; None when the card names none or it cannot be used (logged:
    /read still reads, cutting touching digits apart)."""
    return optional_companion(
        folder,
        card.pair_reader,
        {PAIR_LEFT, PAIR_RIGHT, PAIR_SCORE},
        providers,
        options,
        lambda session: read_runs(session, np.zeros((WARM_UP_BATCH, 28, 56), np.uint8)),
        f"model {card.name}: /read reads without its pair reader",
    )


def read_runs(session: ort.InferenceSession, runs: npt.NDArray[np.uint8]) -> PairAnswers:
    """pair.onnx's answers for (P, 28, 56) uint8 runs, as plan.pair_batch() prepares them."""
    left, right, score = session.run([PAIR_LEFT, PAIR_RIGHT, PAIR_SCORE], {PAIR_INPUT: model_input(runs)})
    return PairAnswers(left, right, score)
