"""explain.onnx, the gradient graph beside a model: opened next to the model's session, from its card."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort

from app.cards import INPUT_GRADIENT, INPUT_NAME, TARGET, TARGET_LOGIT, ModelCard
from app.runtime.session import optional_companion

WARM_UP_BATCH = 34  # integrated gradients' default: 32 steps, the image and the baseline


def open_explainer(
    folder: Path, card: ModelCard, providers: Sequence[str], options: ort.SessionOptions
) -> ort.InferenceSession | None:
    """The card's explain.onnx, checked and warmed up; None when the card names none or it cannot be used (logged:
    the model still serves, without the gradient methods)."""
    images = np.zeros((WARM_UP_BATCH, 28, 28, 1), dtype=np.float32)
    return optional_companion(
        folder,
        card.explain,
        {TARGET_LOGIT, INPUT_GRADIENT},
        providers,
        options,
        lambda session: session.run(None, {INPUT_NAME: images, TARGET: np.zeros(WARM_UP_BATCH, dtype=np.int64)}),
        f"model {card.name}: explanations by gradient are unavailable",
    )
