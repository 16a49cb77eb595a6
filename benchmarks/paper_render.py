"""Two independent generators of photo-like pictures of MNIST digits written on paper, for benchmarks/paper_eval.py.

- notebook: the digit's grey levels as ink absorbed by the paper (multiplied in); ruled, squared, dotted or plain
  paper drawn with NumPy as smooth lines; blue, black, red ink or pencil; a light gradient and a soft shadow; slight
  rotation and perspective; sensor noise; JPEG 60-95; long side 200-4000 px.
- forms: a different method throughout: lines drawn by Pillow's ImageDraw at other spacings and colours (green,
  grey, purple, orange ruling; graph paper with major lines; a form box with an underline), the digit's strokes
  made binary, then blurred (a felt pen); vignetting, a warm colour cast, defocus; ink green, purple, navy, black
  gel, graphite; perspective by Pillow's transform; JPEG 60-95 with 4:2:0 or 4:4:4 chroma.

Each picture is a pure function of (digit, label, seed): the same seed gives the same set.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageDraw, ImageFilter

Rgb = tuple[int, int, int]


@dataclass(frozen=True)
class Photo:
    data: bytes  # JPEG
    conditions: dict[str, str]  # paper, ink, size, quality, light: the buckets accuracy is reported by


def long_side(rng: np.random.Generator) -> int:
    """200 to 4000 px, log-uniform: as many small uploads as phone photos."""
    return round(math.exp(rng.uniform(math.log(200), math.log(4000))))


def size_bucket(side: int) -> str:
    return "200-499" if side < 500 else "500-1499" if side < 1500 else "1500-4000"


def jpeg(image: Image.Image, quality: int, subsampling: int = 2) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality, subsampling=subsampling)
    return buffer.getvalue()


# ----- generator 1: notebook ------------------------------------------------------------------------------------

NOTEBOOK_INKS: dict[str, tuple[Rgb, Rgb]] = {  # name: darkest and lightest colour of the ink
    "blue": ((20, 40, 120), (60, 80, 180)),
    "black": ((15, 15, 20), (50, 50, 60)),
    "red": ((160, 15, 25), (210, 50, 60)),
    "pencil": ((85, 85, 90), (130, 130, 135)),
}


def _colour(rng: np.random.Generator, pair: tuple[Rgb, Rgb]) -> npt.NDArray[np.float32]:
    low, high = np.array(pair[0], np.float32), np.array(pair[1], np.float32)
    return low + rng.uniform() * (high - low)


def _lines(coords: npt.NDArray[np.float32], spacing: float, width: float, phase: float) -> npt.NDArray[np.float32]:
    """Coverage in [0, 1] of lines every `spacing` px along a coordinate, anti-aliased."""
    distance = np.abs((coords - phase + spacing / 2) % spacing - spacing / 2)
    return np.clip(width / 2 + 0.5 - distance, 0.0, 1.0)


def notebook_paper(rng: np.random.Generator, kind: str, shape: tuple[int, int], unit: float) -> npt.NDArray:
    """(H, W, 3) float paper with its printing; unit: the digit's height in px."""
    height, width = shape
    paper = np.array([rng.uniform(235, 252), rng.uniform(233, 250), rng.uniform(225, 245)], np.float32)
    page = np.ones((height, width, 3), np.float32) * paper
    rows, cols = np.mgrid[0:height, 0:width].astype(np.float32)
    tilt = rng.uniform(-0.02, 0.02)
    line_width = max(1.0, unit * rng.uniform(0.015, 0.04))
    colour = np.array([rng.uniform(150, 195), rng.uniform(185, 215), rng.uniform(215, 240)], np.float32)
    if kind == "squared":
        colour = colour if rng.uniform() < 0.6 else np.full(3, rng.uniform(160, 200), np.float32)
    spacing = unit / rng.uniform(1.3, 2.5) if kind == "ruled" else unit / rng.uniform(1.5, 3.5)
    coverage = np.zeros((height, width), np.float32)
    if kind in ("ruled", "squared"):
        coverage = _lines(rows + tilt * cols, spacing, line_width, rng.uniform(0, spacing))
    if kind == "squared":
        coverage = np.maximum(coverage, _lines(cols - tilt * rows, spacing, line_width, rng.uniform(0, spacing)))
    if kind == "dotted":
        dots = _lines(rows, spacing, line_width * 2, 0) * _lines(cols, spacing, line_width * 2, 0)
        coverage = dots
    if kind == "ruled" and rng.uniform() < 0.5:  # the red margin
        margin = _lines(cols, width * 4, line_width, rng.uniform(0.05, 0.2) * width)
        page = page * (1 - margin[..., None]) + np.array([230, 120, 130], np.float32) * margin[..., None]
    return page * (1 - coverage[..., None]) + colour * coverage[..., None]


def notebook_photo(digit: npt.NDArray[np.uint8], rng: np.random.Generator) -> Photo:
    side = long_side(rng)
    base = min(side, 1000)  # drawn at up to 1000 px, then scaled to the photo's size
    shape = (base * 3 // 4, base) if rng.uniform() < 0.5 else (base, base * 3 // 4)
    unit = min(shape) * rng.uniform(0.18, 0.5)
    kind = str(rng.choice(["ruled", "squared", "dotted", "plain"]))
    ink_name = str(rng.choice(list(NOTEBOOK_INKS)))
    page = notebook_paper(rng, kind, shape, unit)
    alpha = _notebook_strokes(digit, rng, round(unit * 28 / 20))
    if ink_name == "pencil":
        alpha = alpha * rng.uniform(0.7, 0.95)
    top = int(rng.uniform(0.1, 0.9) * (shape[0] - alpha.shape[0])) if shape[0] > alpha.shape[0] else 0
    left = int(rng.uniform(0.1, 0.9) * (shape[1] - alpha.shape[1])) if shape[1] > alpha.shape[1] else 0
    ink = _colour(rng, NOTEBOOK_INKS[ink_name]) / 255.0
    window = page[top : top + alpha.shape[0], left : left + alpha.shape[1]]
    a = alpha[: window.shape[0], : window.shape[1], None]
    window *= (1 - a) + a * ink  # ink absorbs light: it multiplies the paper under it
    light, lit = _notebook_light(rng, shape)
    page = page * light[..., None] + rng.normal(0, rng.uniform(1, 4), page.shape)
    image = Image.fromarray(np.clip(page, 0, 255).astype(np.uint8))
    image = _tilt(image, rng, degrees=6, fill=tuple(int(v) for v in page[0, 0]))
    if side != base:
        image = image.resize((round(image.width * side / base), round(image.height * side / base)), Image.BICUBIC)
    quality = int(rng.integers(60, 96))
    conditions = {"paper": kind, "ink": ink_name, "size": size_bucket(side), "light": lit}
    conditions["quality"] = "60-79" if quality < 80 else "80-95"
    return Photo(jpeg(image, quality), conditions)


def _notebook_strokes(digit: npt.NDArray[np.uint8], rng: np.random.Generator, size: int) -> npt.NDArray[np.float32]:
    """The digit's grey levels as ink coverage at `size` px, strokes thinned or thickened."""
    image = Image.fromarray(digit).resize((size, size), Image.BICUBIC)
    change = int(rng.integers(-1, 2)) * max(1, size // 60)
    if change > 0:
        image = image.filter(ImageFilter.MaxFilter(2 * change + 1))
    elif change < 0:
        image = image.filter(ImageFilter.MinFilter(-2 * change + 1))
    return np.asarray(image, np.float32) / 255.0


def _notebook_light(rng: np.random.Generator, shape: tuple[int, int]) -> tuple[npt.NDArray[np.float32], str]:
    height, width = shape
    rows, cols = np.mgrid[0:height, 0:width].astype(np.float32)
    angle = rng.uniform(0, 2 * math.pi)
    ramp = (np.cos(angle) * cols / width + np.sin(angle) * rows / height + 1) / 2
    light = 1.0 - rng.uniform(0.05, 0.35) * ramp
    if rng.uniform() < 0.5:
        return light, "gradient"
    # A soft shadow: a half-plane darkened, with a blurred edge (a hand or a phone over the page).
    edge = rng.uniform(0.2, 0.8) * width
    softness = rng.uniform(0.02, 0.1) * width
    slope = rng.uniform(-0.5, 0.5)
    shadow = 1 / (1 + np.exp(-(cols - edge - slope * rows) / softness))
    return light * (1 - rng.uniform(0.2, 0.45) * shadow), "shadow"


def _tilt(image: Image.Image, rng: np.random.Generator, *, degrees: float, fill: tuple[int, ...]) -> Image.Image:
    """Rotated a little and seen slightly from the side (a perspective transform)."""
    image = image.rotate(rng.uniform(-degrees, degrees), Image.BICUBIC, fillcolor=fill)
    width, height = image.size
    jitter = 0.04
    corners = [
        (x + rng.uniform(-jitter, jitter) * width, y + rng.uniform(-jitter, jitter) * height)
        for x, y in ((0, 0), (width, 0), (width, height), (0, height))
    ]
    coefficients = _perspective(corners, [(0, 0), (width, 0), (width, height), (0, height)])
    return image.transform(image.size, Image.PERSPECTIVE, coefficients, Image.BICUBIC, fillcolor=fill)


def _perspective(source: list[tuple[float, float]], target: list[tuple[float, float]]) -> list[float]:
    """The 8 coefficients Pillow's PERSPECTIVE transform takes, mapping target corners to source corners."""
    matrix, vector = [], []
    for (x, y), (u, v) in zip(target, source, strict=True):
        matrix.append([x, y, 1, 0, 0, 0, -u * x, -u * y])
        matrix.append([0, 0, 0, x, y, 1, -v * x, -v * y])
        vector += [u, v]
    return np.linalg.solve(np.array(matrix), np.array(vector)).tolist()


# ----- generator 2: forms ---------------------------------------------------------------------------------------

FORM_INKS: dict[str, Rgb] = {
    "green": (20, 90, 40),
    "purple": (80, 30, 110),
    "navy": (20, 30, 70),
    "black gel": (10, 10, 10),
    "graphite": (100, 100, 100),
}
FORM_RULING: list[Rgb] = [(160, 210, 170), (190, 190, 190), (200, 180, 220), (240, 190, 140), (170, 200, 235)]


def form_photo(digit: npt.NDArray[np.uint8], rng: np.random.Generator) -> Photo:
    side = long_side(rng)
    base = min(side, 900)
    width, height = (base, base * 2 // 3) if rng.uniform() < 0.6 else (base * 2 // 3, base)
    unit = min(width, height) * rng.uniform(0.15, 0.45)
    paper = tuple(int(v) for v in rng.integers(225, 256, 3))
    image = Image.new("RGB", (width, height), paper)
    kind = str(rng.choice(["lined", "graph", "box", "plain"]))
    _form_printing(ImageDraw.Draw(image), rng, kind, (width, height), unit)
    ink_name = str(rng.choice(list(FORM_INKS)))
    strokes = _felt_strokes(digit, rng, round(unit * 28 / 20))
    share = 0.5 if kind == "box" else rng.uniform(0.15, 0.85)  # in a form, the digit is written in its box
    left = int(share * max(0, width - strokes.width))
    top = int(share * max(0, height - strokes.height))
    image.paste(Image.new("RGB", strokes.size, FORM_INKS[ink_name]), (left, top), strokes)
    image = image.rotate(rng.uniform(-5, 5), Image.BILINEAR, expand=False, fillcolor=paper)
    pixels = np.asarray(image, np.float32) * _vignette(rng, (height, width))[..., None]
    pixels *= np.array([1.0, rng.uniform(0.93, 1.0), rng.uniform(0.8, 0.97)], np.float32)  # warm light
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).filter(
        ImageFilter.GaussianBlur(rng.uniform(0, 1.2))
    )
    if side != base:
        image = image.resize((round(width * side / base), round(height * side / base)), Image.LANCZOS)
    quality = int(rng.integers(60, 96))
    conditions = {"paper": kind, "ink": ink_name, "size": size_bucket(side), "light": "vignette"}
    conditions["quality"] = "60-79" if quality < 80 else "80-95"
    return Photo(jpeg(image, quality, subsampling=int(rng.choice([0, 2]))), conditions)


def _form_printing(
    draw: ImageDraw.ImageDraw, rng: np.random.Generator, kind: str, size: tuple[int, int], unit: float
) -> None:
    width, height = size
    colour = FORM_RULING[int(rng.integers(len(FORM_RULING)))]
    line = max(1, round(unit * rng.uniform(0.01, 0.03)))
    if kind == "lined":
        spacing = unit / rng.uniform(0.8, 1.4)
        for y in np.arange(rng.uniform(0, spacing), height, spacing):
            draw.line([(0, y), (width, y)], fill=colour, width=line)
    elif kind == "graph":
        minor = unit / rng.uniform(3, 6)
        for index, at in enumerate(np.arange(0, max(width, height), minor)):
            weight = line + (1 if index % 5 == 0 else 0)
            draw.line([(at, 0), (at, height)], fill=colour, width=weight)
            draw.line([(0, at), (width, at)], fill=colour, width=weight)
    elif kind == "box":
        margin = unit * rng.uniform(0.35, 0.6)
        box = (
            width / 2 - unit / 2 - margin,
            height / 2 - unit / 2 - margin,
            width / 2 + unit / 2 + margin,
            height / 2 + unit / 2 + margin,
        )
        dark = tuple(int(v) for v in rng.integers(60, 140, 3))
        draw.rectangle(box, outline=dark, width=line + 1)
        draw.line([(box[0], box[3] + margin / 2), (box[2], box[3] + margin / 2)], fill=dark, width=line)


def _felt_strokes(digit: npt.NDArray[np.uint8], rng: np.random.Generator, size: int) -> Image.Image:
    """The digit's strokes made binary at 4x, scaled with nearest neighbours, then blurred: a felt-tip pen."""
    binary = Image.fromarray(np.where(digit > rng.uniform(60, 160), 255, 0).astype(np.uint8))
    strokes = binary.resize((size, size), Image.NEAREST).filter(ImageFilter.GaussianBlur(max(0.6, size / 50)))
    return strokes.point(lambda v: min(255, int(v * rng.uniform(1.2, 1.6))))


def _vignette(rng: np.random.Generator, shape: tuple[int, int]) -> npt.NDArray[np.float32]:
    height, width = shape
    rows, cols = np.mgrid[0:height, 0:width].astype(np.float32)
    centre = (rng.uniform(0.3, 0.7) * height, rng.uniform(0.3, 0.7) * width)
    distance = np.hypot((rows - centre[0]) / height, (cols - centre[1]) / width)
    return 1.0 - rng.uniform(0.2, 0.5) * distance**2 * 2


GENERATORS = {"notebook": notebook_photo, "forms": form_photo}


def blank_page(generator: str, rng: np.random.Generator) -> Photo:
    """A page of the generator's paper with no digit: an empty digit is written."""
    return GENERATORS[generator](np.zeros((28, 28), np.uint8), rng)
