"""line.onnx, /read's reader of the whole line at once: opened next to the model's session, from its card."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from app.cards import LINE_INPUT, LINE_OUTPUT, ModelCard
from app.reading import LINE_HEIGHT
from app.runtime.session import ModelLoadError, open_companion

log = logging.getLogger(__name__)
WARM_UP_WIDTH = 128  # a line of four or five digits


def open_line_reader(
    folder: Path, card: ModelCard, providers: Sequence[str], options: ort.SessionOptions
) -> ort.InferenceSession | None:
    """The card's line.onnx, checked and warmed up; None when the card names none or it cannot be used (logged:
    /read still reads, by its graph alone)."""
    if card.line_reader is None:
        return None
    path = folder / card.line_reader.file
    try:
        session = open_companion(path, card.line_reader.file_sha256, {LINE_OUTPUT}, providers, options)
        read_line(session, np.zeros((LINE_HEIGHT, WARM_UP_WIDTH), np.uint8))
    except (OSError, ModelLoadError) as exc:
        log.error("model %s: /read reads without its line reader: %s", card.name, str(exc).splitlines()[0])
        return None
    return session


def read_line(session: ort.InferenceSession, line: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
    """line.onnx's (T, 11) log-probabilities for a (LINE_HEIGHT, W) uint8 line, as plan.line prepares it."""
    (frames,) = session.run([LINE_OUTPUT], {LINE_INPUT: line[None, :, :, None].astype(np.float32) / 255})
    return frames[0]
