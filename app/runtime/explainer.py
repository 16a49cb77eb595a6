"""explain.onnx, the gradient graph beside a model: opened next to the model's session, from its card."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort

from app.cards import INPUT_GRADIENT, INPUT_NAME, TARGET, TARGET_LOGIT, ModelCard
from app.runtime.session import ModelLoadError, open_companion

log = logging.getLogger(__name__)
WARM_UP_BATCH = 34  # integrated gradients' default: 32 steps, the image and the baseline


def open_explainer(
    folder: Path, card: ModelCard, providers: Sequence[str], options: ort.SessionOptions
) -> ort.InferenceSession | None:
    """The card's explain.onnx, checked and warmed up; None when the card names none or it cannot be used (logged:
    the model still serves, without the gradient methods)."""
    if card.explain is None:
        return None
    path = folder / card.explain.file
    try:
        session = open_companion(path, card.explain.file_sha256, {TARGET_LOGIT, INPUT_GRADIENT}, providers, options)
        images = np.zeros((WARM_UP_BATCH, 28, 28, 1), dtype=np.float32)
        session.run(None, {INPUT_NAME: images, TARGET: np.zeros(WARM_UP_BATCH, dtype=np.int64)})
    except (OSError, ModelLoadError) as exc:
        log.error("model %s: explanations by gradient are unavailable: %s", card.name, str(exc).splitlines()[0])
        return None
    return session
