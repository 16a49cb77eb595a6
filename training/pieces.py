"""The piece verifier's examples: what /read's segmenter really cuts from lines of MNIST *training* digits, each
piece labelled by the ink it holds. Nothing here sees a test digit: benchmarks.read_eval composes its numbers from
those, with a generator of its own (paper, JPEG, slant and spacing drawn differently).

A line is 2-4 digits at one height and slant, each restroked (a pen line, a marker or as it was), touching or
overlapping their neighbour at most gaps, sometimes blurred. app.reading.plan_reading plans it as it plans an upload
(components, merges, cuts) and every candidate piece is labelled: the digit it is when it holds nearly all of one
digit's ink and little of any other's; NOT_ONE_DIGIT when it holds too little of every digit (a fragment) or much of
two (a touching pair read as one, a digit with its neighbour's stroke); pieces in between are left out.

History: the verifier first learnt from pairs of touching digits against single digits, composed here rather than
cut by the segmenter; it told them apart on its own validation pieces (99.7%) yet /read still read a 7 with a 1
through its bar as a 7: the pieces /read weighs are rarely so tidy.
"""

from __future__ import annotations

import itertools
import multiprocessing
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageFilter

from app.errors import ServiceError
from app.preprocess import Gray
from app.reading import Mask, Piece, Plan, plan_reading

T = TypeVar("T")
Rng = np.random.Generator
Images = npt.NDArray[np.uint8]
Labels = npt.NDArray[np.int64]
NOT_ONE_DIGIT = 10  # the label of a piece that is not one whole digit
INK = 0.25  # a pixel above this belongs to a stroke
WHOLE, STRAY = 0.85, 0.15  # one digit: at least 85% of its ink, at most 15% of any other digit's
PART, MIXED = 0.6, 0.3  # not one digit: under 60% of every digit's ink, or 30% of a second digit's
TOUCHING = 0.6  # share of the gaps where two digits touch or overlap a little
BLURRED = 0.5  # share of the lines blurred a little, as a photo is
MARGIN = 8


@dataclass(frozen=True)
class Line:
    """A written line, white ink on black in [0, 1], and the ink of each of its digits on the same canvas."""

    ink: Gray
    digits: list[Mask]
    labels: list[int]


def glyph(image: npt.NDArray[np.uint8], height: int, slant: float) -> Gray:
    """An MNIST digit cropped to its ink, scaled to `height` px and slanted, as a line of handwriting holds it."""
    rows, cols = np.flatnonzero(image.any(axis=1)), np.flatnonzero(image.any(axis=0))
    crop = Image.fromarray(image[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1].astype(np.float32) / 255, mode="F")
    width = max(1, round(crop.width * height / crop.height))
    scaled = crop.resize((width, height), Image.Resampling.BICUBIC)
    extra = int(np.ceil(abs(slant) * height))
    shear = (1, slant, -extra if slant > 0 else 0, 0, 1, 0)
    sheared = scaled.transform((width + extra, height), Image.Transform.AFFINE, shear, Image.Resampling.BILINEAR)
    return np.clip(np.asarray(sheared, dtype=np.float32), 0, 1)


def touching_gap(left: Gray, right: Gray) -> int:
    """The horizontal gap (negative: an overlap) at which the two glyphs' ink first meets in some row."""
    best = -left.shape[1]
    for row in range(min(left.shape[0], right.shape[0])):
        a, b = np.flatnonzero(left[row] > INK), np.flatnonzero(right[row] > INK)
        if len(a) and len(b):
            best = max(best, -(left.shape[1] - 1 - int(a[-1])) - int(b[0]))
    return best


def restroked(rng: Rng, ink: Gray) -> Gray:
    """The glyph thinned to a pen line, thickened as by a marker, or as it was, a third each: the verifier must not
    take stroke width for the sign of a pair (benchmarks.read_eval's styles write both ways)."""
    choice = int(rng.integers(0, 3))
    if choice == 2 or min(ink.shape) < 5:
        return ink
    size = 2 * max(1, ink.shape[0] // 40) + 1
    stroke = ImageFilter.MinFilter(size) if choice == 0 else ImageFilter.MaxFilter(3)
    thin = np.asarray(Image.fromarray(ink, mode="F").filter(stroke), dtype=np.float32)
    return thin if thin.max() > INK else ink  # an eroded hairline that vanished stays as it was


def written_line(
    rng: Rng,
    images: Images,
    labels: npt.NDArray[np.uint8],
    touching: float = TOUCHING,
    digits: tuple[int, int] = (2, 4),
) -> Line:
    """`digits` (fewest, most) random digits side by side at one height and slant, baselines jittered, a share
    `touching` of the gaps touching."""
    picks = rng.integers(0, len(images), int(rng.integers(digits[0], digits[1] + 1)))
    height, slant = int(rng.integers(28, 90)), float(rng.uniform(-0.25, 0.25))
    glyphs = [restroked(rng, glyph(images[i], max(12, round(height * rng.uniform(0.85, 1.15))), slant)) for i in picks]
    gaps = [
        touching_gap(a, b) - int(rng.integers(0, max(1, height // 8)))
        if rng.random() < touching
        else round(height * rng.uniform(0.03, 0.4))
        for a, b in itertools.pairwise(glyphs)
    ]
    offsets = [round(height * rng.uniform(-0.08, 0.08)) for _ in glyphs]
    tallest = max(g.shape[0] for g in glyphs) + 2 * max(abs(o) for o in offsets)
    lefts, x = [], MARGIN
    for g, gap in zip(glyphs, [*gaps, 0], strict=True):
        lefts.append(max(0, x))  # an overlap deeper than the line's start: the glyph starts at the edge
        x = lefts[-1] + g.shape[1] + gap
    widest = max(g.shape[1] for g in glyphs) + 2 * MARGIN
    rightmost = max(left + g.shape[1] for left, g in zip(lefts, glyphs, strict=True))
    width = max(sum(g.shape[1] for g in glyphs) + sum(gaps) + 2 * MARGIN, widest, rightmost)
    canvas = np.zeros((tallest + 2 * MARGIN, width), np.float32)
    digits = []
    for g, x, offset in zip(glyphs, lefts, offsets, strict=True):
        y, (h, w) = MARGIN + (tallest - g.shape[0]) // 2 + offset, g.shape
        np.maximum(canvas[y : y + h, x : x + w], g, out=canvas[y : y + h, x : x + w])
        digit = np.zeros(canvas.shape, bool)
        digit[y : y + h, x : x + w] = g > INK
        digits.append(digit)
    if rng.random() < BLURRED:
        blurred = Image.fromarray(np.rint(canvas * 255).astype(np.uint8)).filter(
            ImageFilter.GaussianBlur(rng.uniform(0.3, 1.0))
        )
        canvas = np.asarray(blurred, dtype=np.float32) / 255
    return Line(canvas, digits, [int(labels[i]) for i in picks])


def piece_label(piece: Piece, line: Line) -> int | None:
    """The digit the piece is, NOT_ONE_DIGIT, or None when it is neither clearly."""
    x, y, w, h = piece.box
    cover = np.array([(d[y : y + h, x : x + w] & piece.mask).sum() / max(1, d.sum()) for d in line.digits])
    best = int(np.argmax(cover))
    second = float(np.sort(cover)[-2]) if len(cover) > 1 else 0.0
    if cover[best] >= WHOLE and second <= STRAY:
        return line.labels[best]
    if cover[best] < PART or second >= MIXED:
        return NOT_ONE_DIGIT
    return None


def planned_lines(
    images: Images, labels: npt.NDArray[np.uint8], lines: int, seed: int, touching: float = TOUCHING
) -> Iterator[tuple[Line, Plan]]:
    """`lines` written lines of the given digits, each with the plan /read makes of it; a line /read would refuse
    (too faint once eroded) is skipped: nothing to learn from."""
    rng = np.random.default_rng(seed)
    for _ in range(lines):
        line = written_line(rng, images, labels, touching)
        try:
            yield line, plan_reading(line.ink)
        except ServiceError:
            continue


def in_chunks(
    make: Callable[[Images, npt.NDArray[np.uint8], int, int], T],
    images: Images,
    labels: npt.NDArray[np.uint8],
    lines: int,
    seed: int,
    chunk: int,
) -> list[T]:
    """make(images, labels, n, seed + i) for the i-th chunk of `chunk` lines, in parallel processes: the same lines
    whatever the machine's cores."""
    chunks = [(seed + i, min(chunk, lines - start)) for i, start in enumerate(range(0, lines, chunk))]
    with ProcessPoolExecutor(mp_context=multiprocessing.get_context("spawn")) as pool:  # TensorFlow is loaded: no fork
        return list(pool.map(make, *zip(*[(images, labels, n, s) for s, n in chunks], strict=True)))


def labelled_pieces(images: Images, labels: npt.NDArray[np.uint8], lines: int, seed: int) -> tuple[Images, Labels]:
    """The pieces /read's segmenter cuts from `lines` written lines of the given digits, (N, 28, 28) as /read
    prepares them, and their labels (0-9, or NOT_ONE_DIGIT)."""
    pieces, kinds = [], []
    for line, plan in planned_lines(images, labels, lines, seed):
        for piece in plan.pieces:
            label = piece_label(piece, line)
            if label is not None:
                pieces.append(piece.digit)
                kinds.append(label)
    return np.stack(pieces), np.array(kinds, np.int64)
