"""line.onnx, /read's reader of the whole line at once: opened next to the model's session, from its card."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from app.cards import LINE_INPUT, LINE_OUTPUT, ModelCard
from app.preprocess import model_input
from app.reading import LINE_HEIGHT
from app.runtime.session import optional_companion

log = logging.getLogger(__name__)

WARM_UP_WIDTH = 128  # a line of four or five digits


def open_line_reader(
    folder: Path, card: ModelCard, providers: Sequence[str], options: ort.SessionOptions
) -> ort.InferenceSession | None:
    """The card's line.onnx, checked and warmed up; None when the card names none, or names one it does not weigh
    against the graph (no LineWeighing), or it cannot be used (logged: /read still reads, by its graph alone)."""
    without = f"model {card.name}: /read reads without its line reader"
    if card.line_reader is not None and card.line_reader.weighing is None:
        log.error("%s: its card has no weighing for it (python -m training weigh-lines)", without)
        return None
    return optional_companion(
        folder,
        card.line_reader,
        {LINE_OUTPUT},
        providers,
        options,
        lambda session: read_line(session, np.zeros((LINE_HEIGHT, WARM_UP_WIDTH), np.uint8)),
        without,
    )


def read_line(session: ort.InferenceSession, line: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
    """line.onnx's (T, 11) log-probabilities for a (LINE_HEIGHT, W) uint8 line, as plan.line prepares it."""
    (frames,) = session.run([LINE_OUTPUT], {LINE_INPUT: model_input(line[None])})
    return frames[0]
