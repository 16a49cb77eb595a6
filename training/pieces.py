"""Pieces of a written line as /read cuts it, made of MNIST *training* digits: two digits touching or squeezed
together (a non-digit the classifier is as sure of as of one digit), single digits scaled and slanted, and
fragments (half digits). Each is prepared as app.reading prepares a piece (app.preprocess.digit_of_ink), so the
piece verifier (training.verifier) learns what /read feeds it. Nothing here sees a test digit:
benchmarks.read_eval composes its numbers from those.

History: these were first extra non-digits for the not-a-digit detector (an experiment not merged); it then
caught 95.4% of the evaluation non-digits instead of 97.9%, so they train a head of their own. Fragments as
non-pieces read worse on the dev seed than pairs alone (training.verifier.FRAGMENTS).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageFilter

from app.errors import BlankImage
from app.preprocess import Gray, digit_of_ink

Rng = np.random.Generator
Images = npt.NDArray[np.uint8]
PAIR_SEED = 3_000  # training.nondigits uses 1_000 (training) and 2_000 (evaluation)
INK = 0.3  # a pixel above this belongs to a stroke, when measuring where two digits touch


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


def side_by_side(left: Gray, right: Gray, gap: int) -> Gray:
    """The two glyphs on one canvas, `gap` px apart (negative: overlapping), ink combined by max."""
    gap = max(gap, -min(left.shape[1], right.shape[1]) + 1)
    height, width = max(left.shape[0], right.shape[0]), left.shape[1] + right.shape[1] + gap
    canvas = np.zeros((height, max(width, left.shape[1])), np.float32)
    canvas[: left.shape[0], : left.shape[1]] = left
    x = left.shape[1] + gap
    window = canvas[: right.shape[0], x : x + right.shape[1]]
    np.maximum(window, right[:, : window.shape[1]], out=window)
    return canvas


def squeezed_pair(rng: Rng, first: Gray, second: Gray) -> Gray:
    """Two digits touching or overlapping a little, sometimes squeezed narrower: the group /read may read as one."""
    overlap = int(rng.integers(0, max(1, first.shape[0] // 8)))
    pair = side_by_side(first, second, touching_gap(first, second) - overlap)
    if rng.random() < 0.4:  # squeezed: as narrow as one wide digit
        image = Image.fromarray(pair, mode="F")
        pair = np.asarray(image.resize((max(2, round(pair.shape[1] * rng.uniform(0.5, 0.8))), pair.shape[0])))
    return pair


def restroked(rng: Rng, ink: Gray) -> Gray:
    """The glyph thinned to a pen line, thickened as by a marker, or as it was, a third each: the piece verifier
    must not take stroke width for the sign of a pair (benchmarks.read_eval's styles write both ways)."""
    choice = int(rng.integers(0, 3))
    if choice == 2 or min(ink.shape) < 5:
        return ink
    size = 2 * max(1, ink.shape[0] // 40) + 1
    stroke = ImageFilter.MinFilter(size) if choice == 0 else ImageFilter.MaxFilter(3)
    thin = np.asarray(Image.fromarray(ink, mode="F").filter(stroke), dtype=np.float32)
    return thin if thin.max() > INK else ink  # an eroded hairline that vanished stays as it was


def pair_set(images: Images, count: int, seed: int = PAIR_SEED, strokes: bool = False) -> Images:
    """`count` pairs of the given (training) digits, each prepared as /read prepares a piece; `strokes`: each pair
    restroked (a line of writing has one pen)."""
    rng = np.random.default_rng(seed)
    pairs = (squeezed_pair(rng, *_two_glyphs(rng, images)) for _ in range(count))
    return np.stack([digit_of_ink(restroked(rng, pair) if strokes else pair) for pair in pairs])


def _two_glyphs(rng: Rng, images: Images) -> tuple[Gray, Gray]:
    """Two random digits at one height and slant, as in one line of writing."""
    height, slant = int(rng.integers(28, 90)), float(rng.uniform(-0.2, 0.2))
    first, second = (glyph(images[i], height, slant) for i in rng.integers(0, len(images), 2))
    return first, second


def single_pieces(images: Images, seed: int = PAIR_SEED + 1, strokes: bool = False) -> Images:
    """Whole digits prepared as /read prepares a piece (scaled, slanted, digit_of_ink): what the verifier must
    accept when /read cuts a number right; `strokes`: each restroked."""
    rng = np.random.default_rng(seed)
    glyphs = (glyph(image, int(rng.integers(28, 90)), float(rng.uniform(-0.2, 0.2))) for image in images)
    return np.stack([digit_of_ink(restroked(rng, g) if strokes else g) for g in glyphs])


def fragment_set(images: Images, count: int, seed: int = PAIR_SEED + 4, strokes: bool = False) -> Images:
    """`count` fragments: the left or right 25-65% of a digit, as /read's cuts leave them beside the rest of it.
    A fragment with too little ink to be prepared (a sliver of a 1) is drawn again."""
    rng, fragments = np.random.default_rng(seed), []
    while len(fragments) < count:
        ink = glyph(images[int(rng.integers(0, len(images)))], int(rng.integers(28, 90)), float(rng.uniform(-0.2, 0.2)))
        cut = max(1, round(ink.shape[1] * rng.uniform(0.25, 0.65)))
        part = ink[:, :cut] if rng.random() < 0.5 else ink[:, cut:]
        try:
            fragments.append(digit_of_ink(restroked(rng, part) if strokes else part))
        except BlankImage:
            continue
    return np.stack(fragments)
