"""Images that are not digits, prepared exactly as the service prepares an upload (app.preprocess.mnist_digit).

Two generators that share no source: `training_set` (outlier exposure for the detector: DejaVu Sans glyphs,
smooth scribbles, polygons and stars, hatching and grids, blob textures, crops of a portrait and a terrain map)
and `evaluation_set` (what the detector is judged on: DejaVu Serif/Mono and Liberation glyphs, letters and
symbols absent from training, random-walk scrawls, arrows and spirals, stripes, speckle, crops of other photos).
Characters that look like a digit (O, I, l, S, Z, B, G, q, g, ...) are never drawn: they would teach the detector
that a digit is not a digit.
"""

from __future__ import annotations

import gzip
from collections.abc import Callable, Sequence
from functools import cache
from pathlib import Path

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from app.errors import ServiceError
from app.preprocess import mnist_digit

FONTS_DIR = Path("/usr/share/fonts/truetype")
CANVAS = 96
Rng = np.random.Generator
Drawer = Callable[[Rng], Image.Image]

# Letters and symbols no digit resembles; the evaluation set adds characters that training never draws.
TRAINING_GLYPHS = "ACEFHKMNPRUVWXYefhkmnruvwx#@%&*+=<>{}~€£¥¶§ΩΣΔΦΨλπµ→←★☺♠♣♥✓✗"
EVALUATION_GLYPHS = "ACEFHKMNPRUVWXYefhkmnruvwx#@%&*+=<>{}~€£¥¶§ΩΣΔΦΨλπµ→←★☺♠♣♥✓✗ΞΠΓΛ♦☼☂✉⌘∑∏√∫≈≠±÷※"
TRAINING_FONTS = ("dejavu/DejaVuSans.ttf", "dejavu/DejaVuSans-Bold.ttf", "dejavu/DejaVuSansCondensed-Oblique.ttf")
EVALUATION_FONTS = (
    "dejavu/DejaVuSerif.ttf",
    "dejavu/DejaVuSerif-BoldItalic.ttf",
    "dejavu/DejaVuSansMono.ttf",
    "liberation/LiberationSerif-Regular.ttf",
    "liberation/LiberationSans-Bold.ttf",
)


def _sample_data(name: str) -> Path:
    import matplotlib

    return Path(matplotlib.get_data_path()) / "sample_data" / name


@cache
def _font(path: str, size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(str(FONTS_DIR / path), size)


@cache
def _photo(name: str) -> npt.NDArray[np.uint8]:
    """A grey photo or map shipped with matplotlib (nothing is downloaded)."""
    path = _sample_data(name)
    if name.endswith(".npz"):
        archive = np.load(path)
        values = archive["elevation" if "elevation" in archive.files else "topo"].astype(np.float64)
    elif name.endswith(".ima.gz"):
        with gzip.open(path) as raw:
            values = np.frombuffer(raw.read(), np.uint16).reshape(256, 256).astype(np.float64)
    else:
        return np.asarray(Image.open(path).convert("L"))
    return np.rint(255 * (values - values.min()) / np.ptp(values)).astype(np.uint8)


def _paper(rng: Rng) -> tuple[Image.Image, ImageDraw.ImageDraw, int]:
    """A blank canvas, dark ink on light paper or the reverse, and the ink's value."""
    dark_ink = rng.random() < 0.6
    image = Image.new("L", (CANVAS, CANVAS), 255 if dark_ink else 0)
    return image, ImageDraw.Draw(image), 0 if dark_ink else 255


def glyph_drawer(glyphs: str, fonts: Sequence[str]) -> Drawer:
    def draw(rng: Rng) -> Image.Image:
        image, pen, ink = _paper(rng)
        font = _font(fonts[rng.integers(len(fonts))], int(rng.integers(40, 72)))
        pen.text((CANVAS / 2, CANVAS / 2), glyphs[rng.integers(len(glyphs))], fill=ink, font=font, anchor="mm")
        return image.rotate(float(rng.uniform(-15, 15)), fillcolor=255 - ink)

    return draw


def _points(rng: Rng, count: int) -> list[tuple[float, float]]:
    return [tuple(p) for p in rng.uniform(12, CANVAS - 12, size=(count, 2))]


def scribble(rng: Rng) -> Image.Image:
    """A smooth curve through many random points: too tangled to be a digit."""
    image, pen, ink = _paper(rng)
    anchors = np.array(_points(rng, int(rng.integers(7, 12))))
    t = np.linspace(0, 1, len(anchors))
    fine = np.linspace(0, 1, 200)
    curve = np.stack([np.interp(fine, t, anchors[:, 0]), np.interp(fine, t, anchors[:, 1])], axis=1)
    smooth = np.stack([np.convolve(c, np.ones(9) / 9, mode="valid") for c in curve.T], axis=1)
    pen.line([tuple(p) for p in smooth], fill=ink, width=int(rng.integers(3, 9)), joint="curve")
    return image


def zigzag(rng: Rng) -> Image.Image:
    """Straight strokes through several random points, some of them retraced: a crossed-out mark."""
    image, pen, ink = _paper(rng)
    pen.line(_points(rng, int(rng.integers(5, 10))), fill=ink, width=int(rng.integers(3, 9)))
    return image


def polygon(rng: Rng) -> Image.Image:
    """A filled or outlined triangle, quadrilateral or star."""
    image, pen, ink = _paper(rng)
    centre, radius = rng.uniform(40, 56, 2), rng.uniform(25, 42)
    corners = int(rng.choice([3, 4, 5, 6]))
    star = rng.random() < 0.4
    steps = corners * (2 if star else 1)
    angles = rng.uniform(0, np.pi) + np.arange(steps) * 2 * np.pi / steps
    radii = np.where(np.arange(steps) % 2 == 1, radius * 0.45, radius) if star else np.full(steps, radius)
    vertices = [tuple(centre + r * np.array([np.cos(a), np.sin(a)])) for r, a in zip(radii, angles, strict=True)]
    if rng.random() < 0.5 or (corners > 4 and not star):  # an outlined hexagon is a zero
        pen.polygon(vertices, fill=ink)
    else:
        pen.polygon(vertices, outline=ink, width=int(rng.integers(3, 8)))
    return image


def hatching(rng: Rng) -> Image.Image:
    """Parallel lines, a grid or a checkerboard."""
    image, pen, ink = _paper(rng)
    spacing, width = int(rng.integers(9, 20)), int(rng.integers(2, 6))
    if rng.random() < 0.3:
        for row in range(0, CANVAS, spacing):
            for col in range((row // spacing) % 2 * spacing, CANVAS, 2 * spacing):
                pen.rectangle([col, row, col + spacing - 1, row + spacing - 1], fill=ink)
    else:
        for offset in range(-CANVAS, 2 * CANVAS, spacing):
            pen.line([(offset, 0), (offset + CANVAS * 0.3, CANVAS)], fill=ink, width=width)
            if rng.random() < 0.5:
                pen.line([(0, offset), (CANVAS, offset - CANVAS * 0.2)], fill=ink, width=width)
    return image.rotate(float(rng.uniform(0, 180)), fillcolor=255 - ink)


def blobs(rng: Rng) -> Image.Image:
    """Smoothed noise cut at a level: patches like stains, clouds or lichen."""
    noise = Image.fromarray((rng.random((CANVAS, CANVAS)) * 255).astype(np.uint8))
    smooth = np.asarray(noise.filter(ImageFilter.GaussianBlur(float(rng.uniform(2, 6)))), dtype=np.float64)
    level = np.quantile(smooth, rng.uniform(0.5, 0.8))
    return Image.fromarray(np.where(smooth > level, 0, 255).astype(np.uint8))


def photo_drawer(names: Sequence[str]) -> Drawer:
    def draw(rng: Rng) -> Image.Image:
        photo = _photo(names[rng.integers(len(names))])
        size = int(rng.integers(24, min(photo.shape) // 2))
        top, left = rng.integers(0, photo.shape[0] - size), rng.integers(0, photo.shape[1] - size)
        return Image.fromarray(photo[top : top + size, left : left + size])

    return draw


def scrawl(rng: Rng) -> Image.Image:
    """A jagged random walk of short straight steps."""
    image, pen, ink = _paper(rng)
    steps = rng.normal(0, 9, size=(int(rng.integers(10, 25)), 2))
    walk = np.clip(CANVAS / 2 + np.cumsum(steps, axis=0), 5, CANVAS - 5)
    pen.line([tuple(p) for p in walk], fill=ink, width=int(rng.integers(2, 8)))
    return image


def arrow_or_spiral(rng: Rng) -> Image.Image:
    """An arrow with a filled head, or a spiral of two to four turns."""
    image, pen, ink = _paper(rng)
    width = int(rng.integers(3, 8))
    if rng.random() < 0.5:
        angle = rng.uniform(0, 2 * np.pi)
        direction = np.array([np.cos(angle), np.sin(angle)])
        tail, tip = CANVAS / 2 - 35 * direction, CANVAS / 2 + 35 * direction
        side = np.array([-direction[1], direction[0]])
        pen.line([tuple(tail), tuple(tip)], fill=ink, width=width)
        pen.polygon([tuple(tip + 20 * direction), tuple(tip + 18 * side), tuple(tip - 18 * side)], fill=ink)
    else:
        theta = np.linspace(0, rng.uniform(4, 8) * np.pi, 300)
        radius = 4 + theta * rng.uniform(1.2, 1.8)
        pen.line(
            list(zip(CANVAS / 2 + radius * np.cos(theta), CANVAS / 2 + radius * np.sin(theta), strict=True)),
            fill=ink,
            width=width,
        )
    return image


def stripes_or_speckle(rng: Rng) -> Image.Image:
    """A sinusoidal grating at any angle, or scattered dots."""
    if rng.random() < 0.5:
        rows, cols = np.indices((CANVAS, CANVAS))
        angle, period = rng.uniform(0, np.pi), rng.uniform(8, 22)
        wave = np.sin(2 * np.pi * (rows * np.cos(angle) + cols * np.sin(angle)) / period)
        return Image.fromarray(((wave > 0) * 255).astype(np.uint8))
    image, pen, ink = _paper(rng)
    for x, y in _points(rng, int(rng.integers(8, 40))):
        r = rng.uniform(1.5, 4)
        pen.ellipse([x - r, y - r, x + r, y + r], fill=ink)
    return image


TRAINING_DRAWERS: dict[str, Drawer] = {
    "glyph": glyph_drawer(TRAINING_GLYPHS, TRAINING_FONTS),
    "scribble": scribble,
    "zigzag": zigzag,
    "shape": polygon,
    "grid": hatching,
    "texture": blobs,
    "photo": photo_drawer(("grace_hopper.jpg", "jacksboro_fault_dem.npz")),
}
EVALUATION_DRAWERS: dict[str, Drawer] = {
    "glyph": glyph_drawer(EVALUATION_GLYPHS, EVALUATION_FONTS),
    "scrawl": scrawl,
    "arrow-spiral": arrow_or_spiral,
    "stripes-speckle": stripes_or_speckle,
    "photo": photo_drawer(("Minduka_Present_Blue_Pack.png", "topobathy.npz", "s1045.ima.gz")),
}
TRAINING_SEED = 1_000  # the evaluation set's seed, 2_000, is never used for training
EVALUATION_SEED = 2_000


def generate(drawers: dict[str, Drawer], count: int, seed: int) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.int64]]:
    """`count` prepared (28, 28) images, the families in turn, and each image's family index. Drawings the
    service would refuse as blank are skipped."""
    rng, draws = np.random.default_rng(seed), list(drawers.values())
    images, families = [], []
    while len(images) < count:
        family = len(images) % len(draws)
        try:
            images.append(mnist_digit(draws[family](rng)))
        except ServiceError:
            continue
        families.append(family)
    return np.stack(images), np.array(families)


@cache  # every model's detector trains on the same images: generated once per process
def training_set(count: int, seed: int = TRAINING_SEED) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.int64]]:
    return generate(TRAINING_DRAWERS, count, seed)


@cache
def evaluation_set(count: int = 2_000) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.int64]]:
    return generate(EVALUATION_DRAWERS, count, EVALUATION_SEED)
