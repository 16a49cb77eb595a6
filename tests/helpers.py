"""Images for tests, made from the shipped MNIST sample or drawn here."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import numpy.typing as npt
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
MODELS_DIR = ROOT / "models"
SAMPLE_DIR = ROOT / "tests" / "data" / "mnist-sample"


def encode(image: Image.Image | npt.NDArray[np.uint8], fmt: str = "PNG", **options: object) -> bytes:
    """The image saved in a format, as bytes."""
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def photo_of(
    digit: npt.NDArray[np.uint8], *, size: int = 300, scale: int = 6, offset: tuple[int, int] = (20, 90)
) -> Image.Image:
    """A photo-like RGB picture of an MNIST digit: dark ink, light uneven paper, enlarged and off-centre."""
    ink = Image.fromarray(255 - digit).resize((28 * scale, 28 * scale), Image.Resampling.BICUBIC)
    paper = np.clip(np.linspace(215, 245, size)[None, :] + np.zeros((size, 1)), 0, 255).astype(np.uint8)
    page = Image.fromarray(paper)
    page.paste(Image.fromarray(np.minimum(np.asarray(ink), 245).astype(np.uint8)), offset)
    return page.convert("RGB")


def canvas_of(
    digit: npt.NDArray[np.uint8], *, size: int = 280, colour: tuple[int, int, int] = (0, 0, 0)
) -> Image.Image:
    """An RGBA canvas drawing: coloured strokes whose alpha is the ink, on a transparent background."""
    alpha = Image.fromarray(digit).resize((size, size), Image.Resampling.BILINEAR)
    canvas = Image.new("RGBA", (size, size), (*colour, 0))
    canvas.putalpha(alpha)
    return canvas
