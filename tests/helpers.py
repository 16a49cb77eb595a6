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


def paper_photo_of(
    digit: npt.NDArray[np.uint8] | None,
    *,
    paper: str = "squared",
    ink: tuple[int, int, int] = (30, 50, 150),
    line: tuple[int, int, int] = (165, 195, 230),
    size: tuple[int, int] = (400, 300),
    spacing: int = 24,
) -> Image.Image:
    """A photo-like RGB picture of a digit written on ruled or squared paper under a light gradient: the digit's grey
    levels multiply the paper by the ink's colour (ink absorbs light); None writes no digit (a blank page)."""
    width, height = size
    page = np.empty((height, width, 3), np.float32)
    page[:] = (242, 240, 232)
    page[spacing // 2 :: spacing] = line
    if paper == "squared":
        page[:, spacing // 3 :: spacing] = line
    if digit is not None:
        alpha = np.asarray(Image.fromarray(digit).resize((140, 140), Image.Resampling.BICUBIC), np.float32)[..., None]
        window = page[80:220, 150:290]
        window *= 1 - alpha / 255 + alpha / 255 * np.array(ink, np.float32) / 255
    page *= np.linspace(1.0, 0.75, width, dtype=np.float32)[None, :, None]  # light from the left
    return Image.fromarray(np.clip(page, 0, 255).astype(np.uint8))
