"""Find the handwriting on a photo of real paper before the MNIST steps: ruled, squared and dotted notebooks, forms,
uneven light, coloured ink, JPEG.

At a bounded working resolution (long side <= WORK_SIDE, whatever the upload's size): divide out the light (a
background estimate by closing and median on a coarse grid), score each pixel as ink by its darkness less its
"pastel" colour (ruling and grids are lighter and less saturated than pen ink), remove long straight horizontal and
vertical lines while keeping the strokes that cross them, and keep the digit: the heaviest coherent group of
components, ignoring specks, page edges and shadows. The result is white ink on black, as normalise_polarity gives.

Clean uploads skip all of it (`paper_ink` returns None): small images (MNIST crops, icons), transparent canvases,
light ink on a dark background, and drawings on white (most pixels at 250-255).
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageFilter

from app.components import digit_mask, mask_runs, paint
from app.errors import BlankImage

Gray = npt.NDArray[np.float32]  # (H, W) in [0, 1]
Mask = npt.NDArray[np.bool_]  # (H, W)
Ints = npt.NDArray[np.intp]

WORK_SIDE = 384  # long side of the working copy: a digit of a sixth of the page is still 50+ px tall
MIN_SIDE = 64  # smaller uploads are MNIST crops or icons: the MNIST chain reads them as they are
WHITE = 250 / 255  # most pixels this white: a digital drawing (photographed paper is never lit this evenly)
GRID_SIDE = 32  # long side of the coarse grid on which the light is estimated
MIN_INK = 0.12  # the strongest ink must be this much darker than the paper, else the page is blank
INK_SHARE = 0.45  # ink is what is darker than this share of the strongest ink
SEGMENT = 8  # px: lines are followed in segments of this length, each may shift a row from the last (7 degrees)
LINE_SPAN = 0.4  # a line runs straight over at least this share of the page's width (or height)
LINE_WIDTH = 0.015  # ... and is at most this share of the long side thick (3 px at least): a digit's bar is thicker
CROSSING_MARGIN = 0.15  # a line pixel this much darker than the line's own ink is a stroke crossing it
CROSSING_COLOUR = 0.3  # ... or one this far from the line's colour (RGB distance, flattened light)
BRIDGE = 7  # px: a removed line pixel with ink this close on both sides across the line is restored (the band
# removed round a 1-3 px line is 5-7 px: the line, the tube of slant it may take, and a row either side)
GROUP_GAP = 0.3  # a component joins the digit when its box is this close, as a share of the digit's size
MIN_DIGIT_SIDE = 0.05  # the digit's box spans at least this share of the working copy's long side
LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def paper_ink(image: Image.Image) -> Gray | None:
    """The handwriting of a photo of paper as white ink on black (working resolution); None for a clean upload,
    which the MNIST chain reads as it is. BlankImage when the paper holds no digit."""
    if not _may_be_paper(image):
        return None
    rgb = working_rgb(image)
    luminance = rgb @ LUMA
    paper = float(np.median(_border(luminance)))
    if paper < 0.5 and _is_dark_ground(luminance):  # light ink on a dark ground: not a photo of paper
        return None
    if paper >= WHITE and np.count_nonzero(luminance >= WHITE) * 2 > luminance.size:  # a drawing on white
        return None
    flat = flatten_light(rgb)
    score = ink_score(flat)
    return digit_ink(flat, score)


def _may_be_paper(image: Image.Image) -> bool:
    transparent = image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info
    return max(image.size) >= MIN_SIDE and not transparent and image.mode not in ("I", "I;16", "I;16B", "I;16L", "F")


def _is_dark_ground(luminance: Gray) -> bool:
    """Most of the picture dark, not only its border: a photo of paper under a strong vignette has a dark border and
    a light middle (every 4th pixel: the median of 6,912 measured 26 us)."""
    return float(np.median(luminance[::4, ::4])) < 0.5


def _border(values: Gray) -> Gray:
    return np.concatenate([values[0], values[-1], values[:, 0], values[:, -1]])


def working_rgb(image: Image.Image) -> npt.NDArray[np.float32]:
    """(H, W, 3) RGB in [0, 1] with the long side at most WORK_SIDE: reduce() averages whole blocks, ~3 ms for 12 MP,
    instead of converting every pixel of the full image to float."""
    if image.mode not in ("L", "RGB"):
        image = image.convert("RGB")
    factor = math.ceil(max(image.size) / WORK_SIDE)
    if factor > 1:
        image = image.reduce(factor)
    return np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0


def paper_background(rgb: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """The paper's colour under the light at every pixel: on a coarse grid, a closing removes whatever is darker and
    narrower than 5 cells (a sixth of the page: strokes of a digit filling the frame, lines); smoothed, brought back
    to full size. A closing keeps the sharp edge of a shadow where a median or a blur would spread it."""
    height, width = rgb.shape[:2]
    scale = GRID_SIDE / max(height, width)
    grid = Image.fromarray(np.rint(rgb * 255).astype(np.uint8)).resize(
        (max(1, round(width * scale)), max(1, round(height * scale))), Image.Resampling.BOX
    )
    grid = grid.filter(ImageFilter.MaxFilter(5)).filter(ImageFilter.MinFilter(5))
    smooth = grid.filter(ImageFilter.GaussianBlur(1.5)).resize((width, height), Image.Resampling.BILINEAR)
    return np.asarray(smooth, dtype=np.float32) / 255.0


def flatten_light(rgb: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """The image divided by its paper: 1 is paper whatever the light or its colour, darker is ink or printing."""
    background = np.maximum(paper_background(rgb), 0.1)  # in deep shadow or off the page, don't amplify noise
    return np.minimum(rgb / background, 1.0)


def ink_score(flat: npt.NDArray[np.float32]) -> Gray:
    """How much each pixel looks like ink: its darkness, less the colour it has beyond its darkness. Ruling, grids
    and margins are pastel (light-blue ruling: darkness 0.2, chroma 0.27), pen ink is dark for its colour (blue pen:
    darkness 0.77, chroma 0.5; red pen 0.62 and 0.67; pencil and black pen have no colour)."""
    darkness = 1.0 - flat @ LUMA
    red, green, blue = flat[..., 0], flat[..., 1], flat[..., 2]
    chroma = np.maximum(np.maximum(red, green), blue) - np.minimum(np.minimum(red, green), blue)
    return np.clip(darkness - np.maximum(chroma - darkness, 0.0), 0.0, 1.0)


def strongest_ink(score: Gray) -> float:
    """The ink level of the darkest strokes: the score exceeded by 0.1% of the pixels (a noise spike is fewer)."""
    flat = score.ravel()
    count = max(20, flat.size // 1000)
    return float(np.partition(flat, flat.size - count)[flat.size - count])


def digit_ink(flat: npt.NDArray[np.float32], score: Gray) -> Gray:
    """White ink on black of the digit alone: lines removed, specks and edges dropped, strokes kept soft."""
    strong = strongest_ink(score)
    if strong < MIN_INK:
        raise BlankImage()
    threshold = INK_SHARE * strong
    ink = score > threshold
    removed = ruling(flat, score, score > threshold / 2)  # found on fainter ink, where lines are unbroken
    kept = ink & ~removed
    kept |= ink & bridged(kept, removed)
    min_side = round(MIN_DIGIT_SIDE * max(score.shape))
    digit = digit_mask(kept, score, gap=GROUP_GAP, min_side=min_side)
    soft = np.clip((score - threshold / 2) / (strong - threshold / 2), 0.0, 1.0)
    return np.where(_dilate(digit) & (kept | ~removed), soft, 0.0).astype(np.float32)


def ruling(flat: npt.NDArray[np.float32], score: Gray, loose: Mask) -> Mask:
    """Pixels of long lines that no stroke crosses. Horizontal and vertical lines apart: the red margin of ruled
    paper is not the colour of its blue lines."""
    removed = np.zeros_like(loose)
    for lines in (_horizontal_lines(loose), _horizontal_lines(loose.T).T):
        removed |= lines & ~crossing_strokes(flat, score, lines)
    return removed


def crossing_strokes(flat: npt.NDArray[np.float32], score: Gray, lines: Mask) -> Mask:
    """Line pixels that belong to a stroke crossing the line: clearly darker than the line, or of another colour."""
    if not lines.any():
        return lines
    line_score = float(np.percentile(score[lines], 90))  # the line's core: its faint edges are most of its pixels
    line_colour = np.median(flat[lines], axis=0)
    other_colour = np.linalg.norm(flat - line_colour, axis=2) > CROSSING_COLOUR
    return lines & ((score > line_score + CROSSING_MARGIN) | (other_colour & (score > line_score)))


def bridged(kept: Mask, lines: Mask) -> Mask:
    """Line pixels with kept ink within BRIDGE px on both sides across the line: where a stroke ran through it."""
    above, below, left, right = (np.zeros_like(kept) for _ in range(4))
    for step in range(1, BRIDGE + 1):
        above[step:] |= kept[:-step]
        below[:-step] |= kept[step:]
        left[:, step:] |= kept[:, :-step]
        right[:, :-step] |= kept[:, step:]
    return lines & ((above & below) | (left & right))


def line_pixels(mask: Mask) -> Mask:
    """Pixels of long, nearly straight horizontal or vertical lines in the mask."""
    return _horizontal_lines(mask) | _horizontal_lines(mask.T).T


def _horizontal_lines(mask: Mask) -> Mask:
    """Rows of segments that are nearly all ink, chained left to right with a drift of at most a row per segment,
    over LINE_SPAN of the width; the ink pixels within a row of such a chain."""
    height, width = mask.shape
    count = width // SEGMENT
    if count < 3:
        return np.zeros_like(mask)
    tube = _dilate_rows(mask)  # a line slanted by a few degrees still fills a 3-row tube along a segment
    # Ink per (row, segment) from a running sum: a reduction over 8-pixel groups costs numpy several times more.
    running = np.cumsum(tube[:, : count * SEGMENT], axis=1, dtype=np.int32)[:, SEGMENT - 1 :: SEGMENT]
    covered = np.diff(running, axis=1, prepend=0) >= 0.9 * SEGMENT  # (rows, segments)
    chained = _chain_lengths(covered) >= max(3, math.ceil(LINE_SPAN * width / SEGMENT))
    chained = _thin_bands(chained, max_rows=max(3, round(LINE_WIDTH * max(height, width))) + 2)  # +2: the tube
    on_line = np.zeros_like(mask)
    on_line[:, : count * SEGMENT] = np.repeat(chained, SEGMENT, axis=1)
    return mask & _dilate_rows(on_line)


def _thin_bands(chained: Mask, max_rows: int) -> Mask:
    """The chained (row, segment) cells in vertical bands of at most max_rows: lines, not the bar of a 7 or a 5."""
    bands = mask_runs(chained.T)  # (segment, row) runs: one per band of consecutive rows
    return paint(bands, bands.ends - bands.starts <= max_rows, chained.T.shape).T


def _chain_lengths(covered: Mask) -> npt.NDArray[np.int32]:
    """For each covered (row, segment), the segments in the longest chain through it, moving a row at most per step."""
    forward, backward = (np.zeros(covered.shape, np.int32) for _ in range(2))
    count = covered.shape[1]
    for index in range(count):
        previous = _best_neighbour(forward[:, index - 1]) if index else 0
        forward[:, index] = covered[:, index] * (1 + previous)
    for index in range(count - 1, -1, -1):
        following = _best_neighbour(backward[:, index + 1]) if index < count - 1 else 0
        backward[:, index] = covered[:, index] * (1 + following)
    return forward + backward - 1


def _best_neighbour(column: npt.NDArray[np.int32]) -> npt.NDArray[np.int32]:
    """Each row's largest value among itself and its two neighbours (shifts in place: np.pad cost 5x more)."""
    best = column.copy()
    np.maximum(best[1:], column[:-1], out=best[1:])
    np.maximum(best[:-1], column[1:], out=best[:-1])
    return best


def _dilate_rows(mask: Mask) -> Mask:
    grown = mask.copy()
    grown[1:] |= mask[:-1]
    grown[:-1] |= mask[1:]
    return grown


def _dilate(mask: Mask) -> Mask:
    grown = _dilate_rows(mask)
    wide = grown.copy()
    wide[:, 1:] |= grown[:, :-1]
    wide[:, :-1] |= grown[:, 1:]
    return wide
