"""Numbers written from MNIST digits, and read as /read reads them: for fitting how /read weighs its readers
(training.line_weighing, on validation digits) and for measuring it (benchmarks.read_eval, on test digits).

Two generators, each from its own random stream:
- photo_number: 2-8 digits with random spacing (in about a third of the numbers one pair touches or slightly
  overlaps), size and baseline jitter, slant, dark ink on tinted, unevenly lit, noisy paper, saved as JPEG.
- styled_number, built differently: thin pen lines or heavy marker strokes, light chalk on a dark board or ink on
  white, the whole line tilted, PNG, no touching digits, and often a decimal point, a dash or an underline that must
  be left out of the text.
"""

from __future__ import annotations

import dataclasses
import io
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnxruntime as ort
from PIL import Image, ImageDraw, ImageFilter

from app.cards import LineWeighing, read_card
from app.errors import ServiceError
from app.preprocess import model_input
from app.reading import LineAnswers, PairAnswers, Plan, Reading, plan_upload, resolve
from app.runtime.line_reader import read_line
from app.runtime.pair_reader import read_runs
from app.runtime.session import CPU

PIECE_SCORE = "piece_score"  # the piece verifier's output, used when the model has it (as the service does)


@dataclass(frozen=True)
class Sample:
    image: bytes
    text: str
    touching: bool


def digit_ink(image: npt.NDArray[np.uint8]) -> Image.Image:
    """An MNIST digit cropped to its ink, as a float image in [0, 1]."""
    rows, cols = np.flatnonzero(image.any(axis=1)), np.flatnonzero(image.any(axis=0))
    crop = image[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1].astype(np.float32) / 255
    return Image.fromarray(crop, mode="F")


def sheared(ink: Image.Image, height: int, slant: float) -> npt.NDArray[np.float32]:
    """The digit scaled to `height` px and slanted (x shifted by slant * distance above the baseline)."""
    width = max(1, round(ink.width * height / ink.height))
    scaled = ink.resize((width, height), Image.Resampling.BICUBIC)
    extra = math.ceil(abs(slant) * height)
    canvas = scaled.transform(
        (width + extra, height),
        Image.Transform.AFFINE,
        (1, slant, -extra if slant > 0 else 0, 0, 1, 0),
        Image.Resampling.BILINEAR,
    )
    return np.clip(np.asarray(canvas, dtype=np.float32), 0, 1)


def compose(
    glyphs: list[npt.NDArray[np.float32]], gaps: list[int], offsets: list[int], margin: int
) -> npt.NDArray[np.float32]:
    """The glyphs side by side (gap i between glyph i and i+1, negative overlaps), ink combined by max."""
    tallest = max(g.shape[0] for g in glyphs) + 2 * max(abs(o) for o in offsets)
    width = sum(g.shape[1] for g in glyphs) + sum(gaps) + 2 * margin
    canvas = np.zeros((tallest + 2 * margin, max(width, 2 * margin + 1)), np.float32)
    x = margin
    for glyph, gap, offset in zip(glyphs, [*gaps, 0], offsets, strict=True):
        y = margin + (tallest - glyph.shape[0]) // 2 + offset
        h, w = glyph.shape
        canvas[y : y + h, x : x + w] = np.maximum(canvas[y : y + h, x : x + w], glyph)
        x += w + gap
    return canvas


def touching_gap(left: npt.NDArray[np.float32], right: npt.NDArray[np.float32], overlap: int) -> int:
    """The gap that makes two glyphs' ink meet (then overlap by `overlap` px), row by row."""
    rows = min(left.shape[0], right.shape[0])
    best = -(10**6)
    for r in range(rows):
        a, b = np.flatnonzero(left[r] > 0.3), np.flatnonzero(right[r] > 0.3)
        if len(a) and len(b):
            best = max(best, -(left.shape[1] - 1 - a[-1]) - b[0])  # gap at which this row's ink touches
    return (best if best > -(10**6) else 0) - overlap


def photo_paper(shape: tuple[int, int], rng: np.random.Generator) -> npt.NDArray[np.float32]:
    """Light paper, lit unevenly (a gradient and a soft shadow), with grain; RGB in [0, 1]."""
    height, width = shape
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    angle = rng.uniform(0, 2 * np.pi)
    gradient = (np.cos(angle) * xs / width + np.sin(angle) * ys / height) * rng.uniform(0.05, 0.2)
    cx, cy, r = rng.uniform(0, width), rng.uniform(0, height), rng.uniform(0.3, 1.0) * max(height, width)
    shadow = rng.uniform(0, 0.15) * np.exp(-((xs - cx) ** 2 + (ys - cy) ** 2) / (2 * r**2))
    light = rng.uniform(0.8, 0.97) - gradient - shadow + rng.normal(0, 0.02, shape)
    tint = rng.uniform(0.93, 1.0, 3)
    return np.clip(light[..., None] * tint, 0, 1).astype(np.float32)


def to_jpeg(rgb: npt.NDArray[np.float32], quality: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.rint(rgb * 255).astype(np.uint8)).save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def photo_number(
    images: npt.NDArray[np.uint8], labels: npt.NDArray[np.uint8], rng: np.random.Generator, count: int | None = None
) -> Sample:
    """One number photographed on paper (of 2-8 digits, or `count`): read_eval's set 1, "photos"."""
    count = int(rng.integers(2, 9)) if count is None else count
    picks = rng.integers(0, len(labels), count)
    height = int(rng.integers(36, 90))
    slant = float(rng.uniform(-0.2, 0.2))
    glyphs = [sheared(digit_ink(images[i]), max(12, round(height * rng.uniform(0.85, 1.15))), slant) for i in picks]
    gaps = [round(height * rng.uniform(0.1, 0.5)) for _ in range(count - 1)]
    touching = count > 1 and bool(rng.random() < 0.3)
    if touching:
        pair = int(rng.integers(0, count - 1))
        gaps[pair] = touching_gap(glyphs[pair], glyphs[pair + 1], int(rng.integers(0, max(1, height // 12))))
    offsets = [round(height * rng.uniform(-0.08, 0.08)) for _ in range(count)]
    ink = compose(glyphs, gaps, offsets, margin=int(rng.integers(10, 60)))
    blurred = Image.fromarray(np.rint(ink * 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1)))
    ink = np.asarray(blurred, dtype=np.float32) / 255
    paper = photo_paper(ink.shape, rng)
    colour = rng.uniform(0.0, 0.3, 3).astype(np.float32)  # black, blue-black or grey ink
    strength = ink[..., None] * rng.uniform(0.75, 1.0)
    rgb = paper * (1 - strength) + colour * strength
    text = "".join(str(int(labels[i])) for i in picks)
    return Sample(to_jpeg(rgb, int(rng.integers(60, 92))), text, touching)


def styled_number(images: npt.NDArray[np.uint8], labels: npt.NDArray[np.uint8], rng: np.random.Generator) -> Sample:
    """Thin pen or heavy marker, chalk on a board or ink on white, tilted, with punctuation; PNG: read_eval's set 2,
    "styles"."""
    count = int(rng.integers(2, 9))
    picks = rng.integers(0, len(labels), count)
    height = int(rng.integers(50, 120))
    glyphs = []
    for i in picks:
        glyph = sheared(digit_ink(images[i]), height, 0.0)
        solid = Image.fromarray(((glyph > 0.5) * 255).astype(np.uint8))
        style = rng.choice(["pen", "marker", "plain"])
        if style == "pen":  # a fine line: the stroke eroded to ~2 px
            solid = solid.filter(ImageFilter.MinFilter(2 * (height // 40) + 1))
        elif style == "marker":
            solid = solid.filter(ImageFilter.MaxFilter(3))
        glyphs.append(np.asarray(solid, dtype=np.float32) / 255)
    gaps = [round(height * rng.uniform(0.25, 0.7)) for _ in range(count - 1)]
    mark = rng.choice(["none", "point", "dash", "underline"])
    if mark in ("point", "dash") and count > 2:
        at = int(rng.integers(0, count - 1))
        gaps[at] += round(height * 0.4)
    ink = compose(glyphs, gaps, [0] * count, margin=40)
    ink_image = Image.fromarray((ink * 255).astype(np.uint8))
    draw = ImageDraw.Draw(ink_image)
    bottom = 40 + height
    stroke = max(3, height // 12)
    if mark == "point" and count > 2:
        x = 40 + sum(g.shape[1] for g in glyphs[: at + 1]) + sum(gaps[:at]) + gaps[at] // 2
        draw.ellipse((x - stroke, bottom - 2 * stroke, x + stroke, bottom), fill=255)
    elif mark == "dash" and count > 2:
        x = 40 + sum(g.shape[1] for g in glyphs[: at + 1]) + sum(gaps[:at]) + gaps[at] // 2
        draw.line((x - height // 6, 40 + height // 2, x + height // 6, 40 + height // 2), fill=255, width=stroke)
    elif mark == "underline":
        draw.line((30, bottom + height // 5, ink.shape[1] - 30, bottom + height // 5), fill=255, width=stroke)
    tilted = ink_image.rotate(float(rng.uniform(-4, 4)), resample=Image.Resampling.BILINEAR, expand=True)
    ink = np.asarray(tilted, dtype=np.float32)[..., None] / 255
    if rng.random() < 0.5:  # chalk on a dark green-grey board
        board, chalk = np.array([0.15, 0.22, 0.2]), np.array([0.92, 0.92, 0.88])
    else:
        board, chalk = np.array([1.0, 1.0, 1.0]), np.array([0.1, 0.1, 0.45])
    rgb = board * (1 - ink) + chalk * ink
    buffer = io.BytesIO()
    Image.fromarray(np.rint(rgb * 255).astype(np.uint8)).save(buffer, "PNG")
    text = "".join(str(int(labels[i])) for i in picks)
    return Sample(buffer.getvalue(), text, False)


def written_numbers(
    images: npt.NDArray[np.uint8], labels: npt.NDArray[np.uint8], photos: int, styles: int, seed: int
) -> tuple[list[Sample], list[Sample]]:
    """`photos` numbers from the photos generator and `styles` from the styles generator, from these digits, each
    from its own random stream of `seed` (so a seed's styles do not depend on how many photos are drawn)."""
    photos_rng, styles_rng = np.random.default_rng([seed, 1]), np.random.default_rng([seed, 2])
    return (
        [photo_number(images, labels, photos_rng) for _ in range(photos)],
        [styled_number(images, labels, styles_rng) for _ in range(styles)],
    )


@dataclass(frozen=True)
class Reader:
    """A model as /read runs it: its graph and, when the model has them, its pair and line readers, the line
    reader's texts weighed as its card says (or by `weighing`, while one is fitted)."""

    model: ort.InferenceSession
    pairs: ort.InferenceSession | None = None
    lines: ort.InferenceSession | None = None
    weighing: LineWeighing | None = None

    @classmethod
    def of(cls, folder: Path, *, pairs: bool = True, lines: bool = True) -> Reader:
        """The model's files in `folder`; without its pair reader when `pairs` is false, without its line reader
        when `lines` is (or when its card names none)."""
        card = read_card(folder)
        companions = [card.pair_reader if pairs else None, card.line_reader if lines else None]
        return cls(
            ort.InferenceSession(str(folder / "model.onnx"), providers=[CPU]),
            *(None if c is None else ort.InferenceSession(str(folder / c.file), providers=[CPU]) for c in companions),
            weighing=card.line_reader.weighing if card.line_reader else None,
        )

    def weighed_by(self, weighing: LineWeighing) -> Reader:
        """This reader with the line reader's texts weighed by `weighing`."""
        return dataclasses.replace(self, weighing=weighing)

    def __call__(self, sample: Sample) -> Reading | ServiceError:
        """The number as /read reads it: same planning, one batched model call (and one of each reader); the line
        reader only with a weighing, as /read."""
        try:
            plan = plan_upload(sample.image)
            return self.resolved(plan, self.answers(plan))
        except ServiceError as exc:
            return exc

    def resolved(self, plan: Plan, a: Answers) -> Reading:
        """The reading /read chooses from these answers: the line reader's only with a weighing, as /read."""
        line = None if a.line is None or self.weighing is None else LineAnswers(a.line, self.weighing)
        return resolve(plan, a.probabilities, a.logits, a.piece_scores, a.pairs, line)

    def answers(self, plan: Plan) -> Answers:
        """What the model and its readers answer for the plan, as /read asks them."""
        wanted = [o.name for o in self.model.get_outputs() if o.name in ("probabilities", "logits", PIECE_SCORE)]
        outputs = dict(zip(wanted, self.model.run(wanted, {"image": model_input(plan.batch())}), strict=True))
        pairs = read_runs(self.pairs, plan.pair_batch()) if self.pairs is not None and plan.pairs else None
        line = read_line(self.lines, plan.line) if self.lines is not None and plan.line is not None else None
        return Answers(outputs["probabilities"], outputs["logits"], outputs.get(PIECE_SCORE), pairs, line)


@dataclass(frozen=True)
class Answers:
    """What the model and its readers answered for one plan (as resolve takes them; `line` is the line reader's
    (T, 11) log-probabilities)."""

    probabilities: npt.NDArray[np.float32]
    logits: npt.NDArray[np.float32]
    piece_scores: npt.NDArray[np.float32] | None
    pairs: PairAnswers | None
    line: npt.NDArray[np.float32] | None


def calibration(confidences: list[float], right: list[bool]) -> dict[str, object]:
    """How honest the numbers' confidences are: their mean against the accuracy, the expected calibration error, and
    the share of numbers at or above a confidence with the accuracy among them."""
    confidence, correct = np.array(confidences), np.array(right, float)
    above = {
        str(t): {"share": float((confidence >= t).mean()), "accuracy": float(correct[confidence >= t].mean())}
        for t in (0.9, 0.99)
        if (confidence >= t).any()
    }
    error = calibration_error(confidences, right)
    return {"mean_confidence": float(confidence.mean()), "calibration_error": error, "confident": above}


def calibration_error(confidences: list[float], right: list[bool]) -> float:
    """The expected calibration error over 10 equal-width bins: each bin's gap between its mean confidence and its
    accuracy, weighed by its share of the numbers."""
    confidence, correct = np.array(confidences), np.array(right, float)
    bins = np.minimum((confidence * 10).astype(int), 9)
    return float(
        sum(
            abs(confidence[bins == b].mean() - correct[bins == b].mean()) * (bins == b).mean()
            for b in range(10)
            if (bins == b).any()
        )
    )
