"""Read a number written on one line: segment the image into digits, then pick the reading the classifier is surest
of. Bytes and arrays in, plain results out; no HTTP here (app.routes.read is the REST front end).

The chain: decode (as /predict: reduced to DECODE_SIDE, EXIF orientation applied) -> grayscale -> polarity (white
ink on black, as /predict) -> a smooth background removed (shadows and paper of a photo) -> binarised ->
connected components -> underlines and specks set aside -> pieces of one digit merged (they overlap horizontally:
a 5's flag, a broken 4, an open 0) -> dots and dashes set aside (small against the digits' median height), but
those beside a digit stay in as parts a reading may leave out (a thin pen's 7 loses its bar) ->
each group wider than half a digit is over-segmented by cuts at the minima of its column projection -> every run
of consecutive parts that could be one digit (within a group: a digit cut from its touching neighbour; across
groups: the pieces of a broken stroke) is a piece, an edge of one graph. Every piece is prepared as /predict
prepares a digit (app.preprocess.digit_of_ink) and all go to the model in one batch; the path through the graph
whose pieces are most confidently digits, less what its cuts and joins cost, is the reading. Merging and cutting
are thus decided together, by the classifier, over the whole line. Where two digits touch along a stroke no cut
parts them cleanly; so each run of parts of one group that may be two digits is also prepared whole (a 28x56 field)
for the model's pair reader, when it has one (pair.onnx, in one call), and a path may read both digits from it.
The model's line reader, when it has one (line.onnx, a third call), reads the whole line uncut (plan.line, the
digits' ink 28 px high) and answers per-column probabilities (CTC); its likeliest texts and the graph's own are each
read along the best path of the graph that spells them (read_as), and weighed (weigh_line: the line reader's
log-probability of the text, its count of digits and the least likely digit along the path weigh most): the graph
places the digits and reads each piece, the line reader, which never cuts, counts the digits and reads what touches.

Boxes are [x, y, width, height] in the pixels of the uploaded image turned upright by its EXIF orientation, at full
size: the factor by which decoding reduced a large picture is undone.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageFilter

from app.cards import LineWeighing
from app.errors import BlankImage, NoDigits, TooManyDigits
from app.preprocess import (
    NOISE_FLOOR,
    Digit,
    Gray,
    Limits,
    Pair,
    digit_of_ink,
    load_image,
    normalise_polarity,
    open_image,
    pair_of_ink,
    stroke_width,
    to_grayscale,
)

Box = tuple[int, int, int, int]  # x, y, width, height
Mask = npt.NDArray[np.bool_]

SPECK = 0.12  # a group no taller and no wider than this share of the digits' height is a speck
FLAT = 0.35  # a group no taller than this share of the digits' height is a dot, a dash or a line
UNDERLINE = 1.5  # ... and wider than this share of it, a line under the number
MERGE_OVERLAP = 0.5  # pieces overlapping horizontally by half the narrower's width are one digit...
PIECE_HEIGHT = 0.75  # ... when one is less tall than this share of the other
SPLIT_FROM = 0.45  # a group wider than this share of the digits' height may hold several digits
MIN_DIGIT_WIDTH = 0.3  # the narrowest digit but a 1, as a share of the height: sets how many digits a group may hold
MAX_DIGITS_PER_GROUP = 6
MAX_GROUPS = 40  # more separate marks than a number on one line holds (noise, a page of text): refused, since each
# becomes pieces of the one model call
MIN_PART = 0.15  # two cuts less than this share of the digits' height apart (on average) would part a sliver
MAX_SPAN = 1.2  # a piece is never wider than this share of the digits' height (a wide, slanted digit)
JOIN_PENALTY = 1.0  # log-score lost for reading two separate groups of ink as one digit...
GAP_PENALTY = 4.0  # ... and per unit of the gap between them, in digit heights
SINGLE_CUTS = 4  # cuts also start at this many of the lowest minima of the column projection
WIDE_FROM = 0.9  # one digit is rarely wider than this share of the digits' height...
WIDE_PENALTY = 3.0  # ... and loses this log-score per unit of width beyond it
SHORT_PENALTY = 4.0  # log-score lost per unit of height missing below 60% of the digits' height: a fragment
CUT_PENALTY = 0.25  # log-score lost per cut...
INK_CUT_PENALTY = 0.5  # ... and per stroke width of ink the cut goes through
CONFIDENCE_WEIGHT = 2.5  # the model's log-confidence weighs 2.5 times against the shape and cut terms
PIECE_WEIGHT = 2.0  # the piece verifier's log-score (piece_score, when the model has one): chosen on the dev seed
PIECE_FLOOR = 1e-4  # ... costs a piece at most PIECE_WEIGHT x 9.2
# The number's confidence weighs each digit's confidence by its piece_score^0.1: the product of the confidences alone
# claimed 96.6% on dev seed 0 photos that were read 91.6% right (expected calibration error 0.051; a merged pair is
# read as surely as a digit); with it 91.6% (0.016). Chosen on the dev seed from 0-0.3.
PIECE_CONFIDENCE = 0.1
PAIR_FROM, PAIR_SPAN = 0.6, 2.0  # parts of one group this wide (in digit heights) may be two touching digits
# The pair reader's log pair_score weighs heavily: a run it is unsure is two digits stays cut (or whole). Chosen on
# dev seeds 0, 3 and 4 among 4-32: at 4, thin-pen and marker digits were read as two (styles 97.0 / 95.2 / 94.0% ->
# 96.7 / 94.3 / 92.8%); from 12 they are not, and photos keep their gain (91.6 -> 96.5% on seed 0).
PAIR_WEIGHT = 12.0
MIN_DIGIT_PX = 8  # a digit less tall than this, in the decoded image, cannot be read
LOOSE_GAP = 0.3  # a dot or dash this close to a digit (in digit heights) may be a stroke of it broken off...
STROKE_LEFT_OUT = 2.0  # ... and a reading that leaves one out loses this log-score when it lies in the top third
# of the digit: a point sits on the baseline and a dash at mid-height, but a 7's bar or a 5's flag at the top
FLAT_LINE = 3.0  # a group this many times wider than tall is a line or a dash
STEP_COST = 0.05  # a cut path pays this for each column it moves sideways: straight cuts win ties
EMPTY = -1  # the segment of a part without ink
LINE_HEIGHT, LINE_FILL = 32, 28  # the line reader's field, and the height the number's ink is fitted to in it
LINE_MARGIN = 4  # px left empty at either end of the line
LINE_STRIDE = 4  # the line reader answers once per this many columns: a line's width is a multiple of it
MAX_LINE_WIDTH = 1024  # a longer line is squeezed to this width
# A blank between digits wider than WIDE_BLANK heights (digits written in a form's boxes) is narrowed to
# NARROWED_BLANK before the line reader, which learnt blanks up to 0.4 of a height: in 60- and 90-px boxes it gave
# the right "2015" under 0.1% and read "200125", and the number's confidence fell to 0.76 and 0.42 (0.98 narrowed).
# 1.5 is above every blank of the dev seeds' sets (the widest 1.43: styles' decimal points), so they read as before.
# From 1.0 (40-px boxes too) the dev seeds read as before but held-out styles lost 0.9 and 0.3 points (blanks that
# wide are where styles puts a decimal point or a dash). Closing blanks over half the line's height (stop 33) cost
# dev styles 0.6-1.2 points.
WIDE_BLANK, NARROWED_BLANK = 1.5, 0.5
LINE_BEAM = 8  # texts the line reader's beam search keeps
LINE_PRUNE = -12.0  # a digit less likely than e^-12 at a frame is not tried there
BACKGROUND_STEP = 8  # the background is estimated at 1/8 scale, where pen strokes are thinner than the filter


@dataclass(frozen=True)
class Ignored:
    box: Box
    reason: str  # speck, dot, dash, underline


@dataclass(frozen=True)
class Piece:
    """One candidate digit: its 28x28 image, its box in the decoded image's pixels and its ink in that box."""

    digit: Digit
    box: Box
    mask: Mask


@dataclass(frozen=True)
class PairRun:
    """Parts of one group that may be two touching digits, read whole by the pair reader."""

    start: int  # nodes, as a Segment's
    end: int
    pair: Pair  # (28, 56)
    box: Box
    mask: Mask


@dataclass(frozen=True)
class Segment:
    """An edge of the reading graph: the parts between two of its nodes read as one digit."""

    start: int  # node k lies before part k
    end: int
    piece: int  # its row in the batch, or EMPTY
    joins: int = 0  # separate groups of ink read as one digit (the pieces of a broken stroke)...
    gap: float = 0.0  # ... and the gaps between them, in digit heights
    passed: Ignored | None = None  # a mark beside a digit that this reading leaves out (piece is EMPTY)...
    cost: float = 0.0  # ... and what leaving it out costs
    pair: int = EMPTY  # two touching digits read whole: the run's row in the pair batch...
    second: int = EMPTY  # ... and the piece whose box the right one takes (`piece`: the left one's)


@dataclass
class Plan:
    """What one batched model call decides: the pieces to classify, and the graph they are edges of. The ink is
    over-segmented into parts, left to right (components, cut where digits may touch); node k lies before part k,
    and a reading is a path from the first node to the last, each edge a run of parts read as one digit."""

    pieces: list[Piece]
    segments: list[Segment]  # ordered by start
    node_cuts: list[float | None]  # the strokes of ink a cut at each node crosses; None: a gap between groups
    ignored: list[Ignored]
    pairs: list[PairRun] = field(default_factory=list)
    line: npt.NDArray[np.uint8] | None = None  # the whole number for the line reader (line_image)
    height: float = 1.0  # the digits' median height, in decoded pixels
    scale: float = 1.0  # uploaded pixels per decoded pixel

    def batch(self) -> npt.NDArray[np.uint8]:
        """(N, 28, 28) uint8: every piece of every candidate."""
        return np.stack([piece.digit for piece in self.pieces])

    def pair_batch(self) -> npt.NDArray[np.uint8]:
        """(P, 28, 56) uint8: every run of parts that may be two touching digits (P > 0)."""
        return np.stack([run.pair for run in self.pairs])


@dataclass(frozen=True)
class ReadDigit:
    digit: int
    confidence: float
    probabilities: list[float]
    box: Box
    pixels: Digit  # what the model saw, for the activation maps
    row: int  # its row in the plan's batch: the model's other outputs for it (the not-a-digit score)
    piece_score: float | None = None  # the piece verifier's: one whole digit in the box, when the model has one...
    pair: bool = False  # ... or the pair reader's, when this digit was read with its neighbour as two touching digits


@dataclass(frozen=True)
class Reading:
    text: str
    confidence: float
    digits: list[ReadDigit]
    ignored: list[Ignored] = field(default_factory=list)


ReadPath = list[tuple[Segment, list[int]]]  # a reading: the graph's segments in order, and the digits each reads
Reads = Callable[[Segment], list[npt.NDArray[np.float32]]]  # log-probabilities of a segment's digits, one per digit


# ---------------------------------------------------------------------------------------------------------- decode


def plan_upload(data: bytes, limits: Limits = Limits()) -> Plan:  # noqa: B008 - frozen, as preprocess's
    """The uploaded bytes -> a Plan, boxes scaled back to the upright image at full size; the decoder's errors as
    /predict raises them."""
    image = open_image(data, limits)
    full_side = max(image.size)  # before a JPEG's DCT scaling changes the size it reports
    decoded = load_image(image)
    plan = plan_reading(ink_of(decoded))
    plan.scale = full_side / max(decoded.size)  # reduction keeps the aspect ratio; rotation keeps the longest side
    return plan


def ink_of(image: Image.Image) -> Gray:
    """White ink on black in [0, 1], the background of a photo (shadow, tinted paper) taken away."""
    try:
        ink = normalise_polarity(to_grayscale(image))
    except BlankImage:
        raise NoDigits("The image is blank: no ink stands out from the paper. Write a number.") from None
    return flatten_background(ink)


def flatten_background(ink: Gray) -> Gray:
    """The ink less a smooth estimate of the background under it, stretched back to [0, 1]."""
    height, width = ink.shape
    small_size = (max(1, width // BACKGROUND_STEP), max(1, height // BACKGROUND_STEP))
    if min(small_size) < 4:
        return ink
    small = Image.fromarray(ink, mode="F").resize(small_size, Image.Resampling.BOX)
    # An opening (min then max) wider than the strokes removes them and keeps the shading. A fixed 3 pixels at this
    # scale kept the middle of marker strokes on a large image, and subtracting it hollowed them out (a 1 read as 8).
    size = opening_size(ink)
    background = small.filter(ImageFilter.MinFilter(size)).filter(ImageFilter.MaxFilter(size))
    background = background.resize((width, height), Image.Resampling.BILINEAR)
    flat = np.clip(ink - np.asarray(background, dtype=np.float32), 0.0, None)
    top = float(flat.max())
    return flat / top if top > 0 else flat


def opening_size(ink: Gray) -> int:
    """The odd window, at the background's scale, that no stroke of the ink fills: wider than the strokes as Otsu's
    threshold finds them, and at least 3."""
    stroke = stroke_width((ink > otsu_threshold(ink)).astype(np.float32))
    return 2 * math.ceil(stroke / BACKGROUND_STEP) + 1


def otsu_threshold(ink: Gray) -> float:
    """The level that best splits the ink's histogram in two (Otsu), never below the noise floor."""
    histogram, edges = np.histogram(ink, bins=64, range=(0.0, 1.0))
    weights = histogram.astype(np.float64)
    below = np.cumsum(weights)
    mass = np.cumsum(weights * edges[:-1])
    total, total_mass = below[-1], mass[-1]
    above = total - below
    with np.errstate(divide="ignore", invalid="ignore"):
        between = (total_mass * below / total - mass) ** 2 / (below * above)
    threshold = float(edges[int(np.nanargmax(between[:-1])) + 1]) if np.isfinite(between[:-1]).any() else 0.5
    return max(threshold, NOISE_FLOOR)


def binarise(ink: Gray) -> tuple[npt.NDArray[np.int32], int]:
    """Components of ink (labels, count), by hysteresis: pixels above half Otsu's threshold, joined, keeping the
    components that hold some pixel above it. A faint or thin stretch of a stroke then does not break the digit."""
    strong = otsu_threshold(ink)
    labels, count = label_components(ink > max(strong / 2, NOISE_FLOOR))
    peaks = np.zeros(count + 1, np.float32)
    np.maximum.at(peaks, labels.ravel(), ink.ravel())
    kept = peaks >= strong
    kept[0] = False
    renumbered = np.where(kept, np.cumsum(kept), 0).astype(np.int32)
    return renumbered[labels], int(kept.sum())


# ------------------------------------------------------------------------------------------ connected components


def label_components(mask: Mask) -> tuple[npt.NDArray[np.int32], int]:
    """8-connected components of the mask: (labels 1..n, 0 for the background; n). Runs of each row are joined to
    the touching runs of the row above with a union-find: a few thousand runs for a page of handwriting."""
    runs: list[tuple[int, int, int]] = []  # row, start, end (exclusive)
    padded = np.pad(mask, ((0, 0), (1, 1))).astype(np.int8)
    changes = np.diff(padded, axis=1)
    for row in range(mask.shape[0]):
        starts, ends = np.flatnonzero(changes[row] == 1), np.flatnonzero(changes[row] == -1)
        runs.extend((row, int(s), int(e)) for s, e in zip(starts, ends, strict=True))
    parent = list(range(len(runs)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    previous_row: list[int] = []
    current_row: list[int] = []
    row_of_current = -1
    for index, (row, start, end) in enumerate(runs):
        if row != row_of_current:
            previous_row = current_row if row == row_of_current + 1 else []
            current_row, row_of_current = [], row
        for other in previous_row:
            _, other_start, other_end = runs[other]
            if other_start <= end and start <= other_end:  # touching, diagonals included
                parent[root(index)] = root(other)
        current_row.append(index)
    labels = np.zeros(mask.shape, dtype=np.int32)
    ids: dict[int, int] = {}
    for index, (row, start, end) in enumerate(runs):
        labels[row, start:end] = ids.setdefault(root(index), len(ids) + 1)
    return labels, len(ids)


@dataclass
class Group:
    """Components read as one unit of ink (a digit, or touching digits, or a mark)."""

    labels: list[int]
    top: int
    left: int
    bottom: int  # exclusive
    right: int  # exclusive

    @property
    def height(self) -> int:
        return self.bottom - self.top

    @property
    def width(self) -> int:
        return self.right - self.left

    @property
    def box(self) -> Box:
        return self.left, self.top, self.width, self.height

    def joined(self, other: Group) -> Group:
        return Group(
            self.labels + other.labels,
            min(self.top, other.top),
            min(self.left, other.left),
            max(self.bottom, other.bottom),
            max(self.right, other.right),
        )


def component_groups(labels: npt.NDArray[np.int32], count: int) -> list[Group]:
    """One group per component, with its bounding box."""
    groups = []
    rows, cols = np.nonzero(labels)
    values = labels[rows, cols]
    order = np.argsort(values, kind="stable")
    rows, cols, values = rows[order], cols[order], values[order]
    bounds = np.searchsorted(values, np.arange(1, count + 2))
    for label in range(1, count + 1):
        r, c = rows[bounds[label - 1] : bounds[label]], cols[bounds[label - 1] : bounds[label]]
        groups.append(Group([label], int(r.min()), int(c.min()), int(r.max()) + 1, int(c.max()) + 1))
    return groups


def could_be_digit(group: Group) -> bool:
    """Tall enough to be legible, and not a flat line (a 1 is narrow, but no digit is three times wider than tall)."""
    return group.height >= MIN_DIGIT_PX and group.width < FLAT_LINE * group.height


def digit_height(groups: Sequence[Group]) -> float:
    """The typical height of a digit: the median of the groups that could be digits, at least half as tall as the
    tallest of them; NoDigits when none could be."""
    heights = [group.height for group in groups if could_be_digit(group)]
    if not heights:
        raise NoDigits("Nothing in the image looks like a digit: only dots, dashes, lines or specks.")
    return float(np.median([h for h in heights if h >= max(heights) / 2]))


def merge_overlapping(groups: list[Group]) -> list[Group]:
    """Groups that overlap horizontally by half the narrower one's width joined, left to right."""
    merged: list[Group] = []
    for group in sorted(groups, key=lambda g: g.left):
        for i, other in enumerate(merged):
            if belong_together(group, other):
                merged[i] = other.joined(group)
                break
        else:
            merged.append(group)
    return merged if len(merged) == len(groups) else merge_overlapping(merged)


def belong_together(one: Group, other: Group) -> bool:
    """Two pieces of one digit: they overlap horizontally by half the narrower one's width, and one is clearly
    shorter than the other (a 5's flag, the bar of a broken 4); two slanted 1s side by side are both full height."""
    overlap = min(one.right, other.right) - max(one.left, other.left)
    small, tall = sorted((one, other), key=lambda g: g.height)
    if small.height >= PIECE_HEIGHT * tall.height:
        return False
    if overlap >= MERGE_OVERLAP * small.width:
        return True
    # A 5's flag drawn apart sticks out to the right of the body: any overlap will do for a flat piece at the top.
    return overlap > 0 and small.bottom <= tall.top + tall.height / 2 and small.width >= 1.5 * small.height


def mark_kind(group: Group, height: float) -> str | None:
    """Why a group is not a digit (speck, dot, dash, underline), or None for a digit."""
    if group.height <= SPECK * height and group.width <= SPECK * height:
        return "speck"
    if group.height > FLAT * height and could_be_digit(group):
        return None
    if group.width >= UNDERLINE * height:
        return "underline"
    return "dash" if group.width >= 1.5 * group.height else "dot"


def loose_marks(marks: list[Group], digits: list[Group], height: float) -> list[Group]:
    """The dots and dashes that may be strokes of a digit broken off it (a thin pen's 4 loses its arm): beside a
    digit. The reading graph joins one to its digit when the model reads the whole better, and leaves it out
    otherwise. At most one per digit, the largest: a speckled photo does not multiply the pieces. (Specks as well,
    for pen strokes worn to dust: dev styles 94.9 -> 95.2% and 94.0 -> 94.6% on seeds 3 and 4, but held-out seed 1
    94.3 -> 94.0% and seed 2 unchanged, photos unchanged: not kept.)"""
    near = [mark for mark in marks if any(box_gap(mark, digit) <= LOOSE_GAP * height for digit in digits)]
    return sorted(near, key=lambda g: g.height * g.width, reverse=True)[: len(digits)]


def box_gap(one: Group, other: Group) -> int:
    """The distance between the two boxes, along the axis they are further apart on (0 when they overlap)."""
    across = max(one.left - other.right, other.left - one.right)
    down = max(one.top - other.bottom, other.top - one.bottom)
    return max(0, across, down)


# --------------------------------------------------------------------------------------------------- candidates


@dataclass
class Marks:
    """The ink of a number sorted out: the groups that may be digits, the dots and dashes beside them that may be
    strokes broken off, and what is ignored."""

    labels: npt.NDArray[np.int32]  # the components
    digits: list[Group]
    loose: list[Group]  # each a dot or a dash, as `kinds` says
    kinds: dict[int, str]  # id(group) -> why it is not a digit
    ignored: list[Ignored]
    height: float  # the digits' median height


def sort_marks(ink: Gray) -> Marks:
    """Components of white-on-black ink, underlines, dots, dashes and specks set aside; NoDigits when nothing in it
    can be a digit."""
    labels, count = binarise(ink)
    if count == 0:
        raise NoDigits("No ink stands out from the paper: write a number.")
    groups = component_groups(labels, count)
    ignored: list[Ignored] = []
    height = digit_height(groups)
    lines = [g for g in groups if mark_kind(g, height) == "underline"]
    ignored += [Ignored(g.box, "underline") for g in lines]
    groups = merge_overlapping([g for g in groups if g not in lines])
    if not groups:
        raise NoDigits("Nothing in the image looks like a digit: only lines.")
    height = digit_height(groups)
    marks = {id(g): kind for g in groups if (kind := mark_kind(g, height)) is not None}
    digits = [g for g in groups if id(g) not in marks]
    loose = loose_marks([g for g in groups if marks.get(id(g)) in ("dot", "dash")], digits, height)
    ignored += [Ignored(g.box, marks[id(g)]) for g in groups if id(g) in marks and g not in loose]
    if not digits:
        raise NoDigits("Nothing in the image looks like a digit: only dots, dashes or specks.")
    if len(digits) > MAX_GROUPS:
        raise TooManyDigits(
            f"The image holds {len(digits)} separate marks that could be digits; /read reads one number of at most "
            f"{MAX_GROUPS}, written on one line."
        )
    return Marks(labels, digits, loose, marks, sorted(ignored, key=_left), height)


def plan_reading(ink: Gray) -> Plan:
    """Candidate readings of white-on-black ink; NoDigits when nothing in it can be a digit."""
    marks = sort_marks(ink)
    splits = [split_group(ink, marks.labels, group, marks.height) for group in marks.digits]
    splits += [mark_part(ink, marks.labels, mark, marks.kinds[id(mark)], marks.digits) for mark in marks.loose]
    splits.sort(key=lambda split: split.group.left)
    plan = Plan(pieces=[], segments=[], node_cuts=[], ignored=marks.ignored, height=marks.height)
    add_segments(plan, splits, marks.height)
    plan.line = line_image(ink, marks.labels, marks.digits, marks.height)
    return plan


def number_line(ink: Gray) -> npt.NDArray[np.uint8]:
    """The whole number as the line reader sees it (line_image), without planning the pieces: its training lines."""
    marks = sort_marks(ink)
    return line_image(ink, marks.labels, marks.digits, marks.height)


def line_image(
    ink: Gray, labels: npt.NDArray[np.int32], groups: Sequence[Group], height: float
) -> npt.NDArray[np.uint8]:
    """The groups' ink (their components with the anti-aliased rim, nothing else: no underline, speck or dot),
    brightest strokes at 255, blanks wider than WIDE_BLANK digit heights narrowed, fitted LINE_FILL px high in a
    LINE_HEIGHT field, LINE_MARGIN px on either side, its width a multiple of LINE_STRIDE (at most MAX_LINE_WIDTH):
    (LINE_HEIGHT, W) uint8."""
    top, bottom = min(g.top for g in groups), max(g.bottom for g in groups)
    left, right = min(g.left for g in groups), max(g.right for g in groups)
    keep = np.isin(labels[top:bottom, left:right], [label for g in groups for label in g.labels])
    region = np.where(_rim(keep), ink[top:bottom, left:right], 0.0).astype(np.float32)
    region /= max(float(np.percentile(region[keep], 95)), 1e-6)
    region = region[:, kept_columns(groups, height)]
    scale = LINE_FILL / (bottom - top)
    room = MAX_LINE_WIDTH - 2 * LINE_MARGIN
    width = max(1, min(room, round(region.shape[1] * scale)))
    fitted = Image.fromarray(np.clip(region, 0, 1), mode="F").resize((width, LINE_FILL), Image.Resampling.BILINEAR)
    field_width = -(-(width + 2 * LINE_MARGIN) // LINE_STRIDE) * LINE_STRIDE
    line = np.zeros((LINE_HEIGHT, field_width), np.float32)
    pad = (LINE_HEIGHT - LINE_FILL) // 2
    line[pad : pad + LINE_FILL, LINE_MARGIN : LINE_MARGIN + width] = np.asarray(fitted)
    return np.rint(np.clip(line, 0, 1) * 255).astype(np.uint8)


def kept_columns(groups: Sequence[Group], height: float) -> npt.NDArray[np.int64]:
    """The columns of the groups' box (0 at its left edge) that the line keeps: all but the far part of each blank
    between them wider than WIDE_BLANK heights, which is left NARROWED_BLANK heights wide."""
    left = min(g.left for g in groups)
    spans = sorted((g.left - left, g.right - left) for g in groups)
    keep = np.ones(max(end for _, end in spans), bool)
    reach = spans[0][1]
    for start, end in spans[1:]:
        if start - reach > WIDE_BLANK * height:
            keep[reach + round(NARROWED_BLANK * height) : start] = False
        reach = max(reach, end)
    return np.flatnonzero(keep)


@dataclass(eq=False)
class Split:
    """A group of ink cut into parts, left to right, by paths that do not cross."""

    group: Group
    own: Gray  # the group's ink in its box: its components with their anti-aliased rim, not a neighbour's ink
    mask: Mask
    edges: list[npt.NDArray[np.int64]]  # per row, the first column of each part; the last edge is the width
    crossed: list[float]  # the strokes of ink each inner edge crosses
    left_out: Ignored | None = None  # a loose dot or dash: read only with a digit beside it, else left out...
    left_out_cost: float = 0.0  # ... at this cost

    @property
    def parts(self) -> int:
        return len(self.edges) - 1

    def columns(self, first: int, last: int) -> tuple[int, int]:
        """The columns (left, right exclusive, in the image) that parts first..last hold ink in."""
        cols = np.flatnonzero(self.between(first, last).any(axis=0))
        if len(cols) == 0:
            return self.group.left, self.group.left
        return self.group.left + int(cols[0]), self.group.left + int(cols[-1]) + 1

    def between(self, first: int, last: int) -> Mask:
        """The ink of parts first..last (inclusive)."""
        columns = np.arange(self.group.width)
        left, right = self.edges[first], self.edges[last + 1]
        return self.mask & (columns >= left[:, None]) & (columns < right[:, None])


def split_group(ink: Gray, labels: npt.NDArray[np.int32], group: Group, height: float) -> Split:
    """The group and, when it is wide, the cuts that may part touching digits: paths crossing the least ink, no
    two closer than a narrow digit."""
    own, mask = _own_ink(ink, labels, group)
    stroke = max(1.0, stroke_width(mask.astype(np.float32)))
    paths: dict[bytes, npt.NDArray[np.int64]] = {}
    for centre, reach in cut_points(mask.sum(axis=0).astype(np.float32), group.width, height):
        path = cut_path(mask, centre, reach)
        paths.setdefault(path.tobytes(), path)
    costs = {key: strokes_crossed(mask, path, stroke) for key, path in paths.items()}
    kept: list[npt.NDArray[np.int64]] = []
    for key in sorted(paths, key=costs.__getitem__):  # the cheapest cut of any two close ones stays
        if all(np.abs(paths[key] - other).mean() >= MIN_PART * height for other in kept):
            kept.append(paths[key])
    kept.sort(key=lambda path: float(path.mean()))
    inner = list(np.maximum.accumulate(np.stack(kept), axis=0)) if kept else []  # paths that cross are evened out
    edges = [np.zeros(group.height, np.int64), *inner, np.full(group.height, group.width)]
    return Split(group, own, mask, edges, [strokes_crossed(mask, path, stroke) for path in inner])


def mark_part(ink: Gray, labels: npt.NDArray[np.int32], mark: Group, kind: str, digits: list[Group]) -> Split:
    """A loose mark as one part, never cut, and what a reading that leaves it out pays."""
    own, mask = _own_ink(ink, labels, mark)
    digit = min(digits, key=lambda d: box_gap(mark, d))
    high = mark.top + mark.bottom < 2 * digit.top + 2 * digit.height / 3  # its middle in the digit's top third
    edges = [np.zeros(mark.height, np.int64), np.full(mark.height, mark.width)]
    return Split(mark, own, mask, edges, [], Ignored(mark.box, kind), STROKE_LEFT_OUT if high else 0.0)


def _own_ink(ink: Gray, labels: npt.NDArray[np.int32], group: Group) -> tuple[Gray, Mask]:
    """The group's ink in its box (its components with their anti-aliased rim, not a neighbour's), and its mask."""
    mask = np.isin(labels[group.top : group.bottom, group.left : group.right], group.labels)
    region = ink[group.top : group.bottom, group.left : group.right]
    return np.where(_rim(mask), region, 0.0).astype(np.float32), mask


def strokes_crossed(mask: Mask, path: npt.NDArray[np.int64], stroke: float) -> float:
    """How many strokes of ink a cut along the path goes through."""
    return float(mask[np.arange(mask.shape[0]), np.minimum(path, mask.shape[1] - 1)].sum()) / stroke


def add_segments(plan: Plan, splits: list[Split], height: float) -> None:
    """Every run of consecutive parts no wider than a digit can be, as a piece: within one group (a digit cut from
    its touching neighbour) or across groups (the pieces of a broken stroke)."""
    parts = [(split, k) for split in splits for k in range(split.parts)]
    plan.node_cuts = [None]
    for (one, k), (other, _) in itertools.pairwise(parts):
        plan.node_cuts.append(one.crossed[k] if one is other else None)
    plan.node_cuts.append(None)
    extents = [split.columns(k, k) for split, k in parts]
    for start in range(len(parts)):
        left, right = extents[start]
        for end in range(start + 1, len(parts) + 1):
            left, right = min(left, extents[end - 1][0]), max(right, extents[end - 1][1])
            one_group = parts[end - 1][0] is parts[start][0]
            if end > start + 1 and one_group and PAIR_FROM * height <= right - left <= PAIR_SPAN * height:
                pair = _pair(parts[start:end], start, end)
                if pair is not None:
                    plan.pairs.append(pair)
            if end > start + 1 and right - left > MAX_SPAN * height and not whole_group(parts, start, end):
                if not one_group:
                    break  # wider still from here on, and no longer within the group it started in
                continue
            if all(split.left_out for split, _ in parts[start:end]):  # marks alone are no digit: passed over
                if end == start + 1:
                    mark = parts[start][0]
                    plan.segments.append(Segment(start, end, EMPTY, passed=mark.left_out, cost=mark.left_out_cost))
                continue
            piece = _piece(parts[start:end])
            if piece is not None:
                plan.segments.append(Segment(start, end, len(plan.pieces), *joins(parts[start:end], height)))
                plan.pieces.append(piece)
            elif end == start + 1:  # cuts that crossed left nothing between them: a reading passes over it
                plan.segments.append(Segment(start, end, EMPTY))


def whole_group(parts: list[tuple[Split, int]], start: int, end: int) -> bool:
    """Whether parts start..end-1 are all of one group: one component is always a candidate digit, however wide."""
    split, first = parts[start]
    return first == 0 and parts[end - 1] == (split, split.parts - 1)


def joins(parts: list[tuple[Split, int]], height: float) -> tuple[int, float]:
    """How many separate groups the parts join into one digit, and the gaps between them in digit heights."""
    count, gap = 0, 0.0
    for (one, _), (other, _) in itertools.pairwise(parts):
        if one is not other:
            count += not (one.left_out or other.left_out)  # a loose mark joins its digit for free
            gap += max(0, other.group.left - one.group.right) / height
    return count, gap


def cut_points(profile: npt.NDArray[np.float32], width: int, height: float) -> list[tuple[int, int]]:
    """Where cuts may start, each (centre column, reach), once: for k = 2.. pieces, one near each k-th of the width,
    at the lowest projection within a third of a piece; and the lowest minima of the projection. None for a group
    narrower than SPLIT_FROM digit heights."""
    if width < SPLIT_FROM * height:
        return []
    cuts: list[tuple[int, int]] = []
    most = min(MAX_DIGITS_PER_GROUP, max(2, math.floor(width / (MIN_DIGIT_WIDTH * height))))
    for k in range(2, most + 1):
        step = width / k
        for j in range(1, k):
            low, high = round(j * step - step / 3), round(j * step + step / 3)
            cuts.append((low + int(np.argmin(profile[low : high + 1])), max(1, round(step / 4))))
    # A narrow digit (a 1) touching a wide one is cut far from the middle: the lowest minima anywhere but the ends.
    margin = max(1, width // 8)
    inner = profile[margin : width - margin]
    minima = [i for i in range(1, len(inner) - 1) if inner[i] <= inner[i - 1] and inner[i] <= inner[i + 1]]
    for i in sorted(minima, key=lambda i: inner[i])[:SINGLE_CUTS]:
        cuts.append((margin + i, max(1, width // 10)))
    return list(dict.fromkeys(cuts))


def cut_path(mask: Mask, centre: int, reach: int) -> npt.NDArray[np.int64]:
    """For each row, the column where a top-to-bottom cut crosses: the path through the fewest ink pixels within
    `reach` of `centre`, moving at most one column a row (dynamic programming, as drop-fall segmenters do). Unlike a
    straight cut, it follows the gap between a 2's tail and the 1 written over it."""
    low, high = max(1, centre - reach), min(mask.shape[1] - 1, centre + reach + 1)
    band = mask[:, low:high].astype(np.float32)  # ink crossed: 1 per pixel
    total = band[0].copy()
    moves = np.zeros(band.shape, np.int8)
    # Preallocated neighbours instead of np.stack/np.r_ per row: 3x faster, the same path (ties go left, then
    # straight, as argmin over [left, straight, right] would choose).
    from_left, from_right = np.full_like(total, np.inf), np.full_like(total, np.inf)
    for row in range(1, band.shape[0]):
        from_left[1:] = total[:-1] + STEP_COST
        from_right[:-1] = total[1:] + STEP_COST
        move = moves[row]
        move[:] = -1
        best = from_left.copy()
        straight = total < best
        best[straight], move[straight] = total[straight], 0
        right = from_right < best
        best[right], move[right] = from_right[right], 1
        total = best + band[row]
    path = np.empty(band.shape[0], np.int64)
    path[-1] = int(np.argmin(total))
    for row in range(band.shape[0] - 1, 0, -1):
        path[row - 1] = path[row] + moves[row, path[row]]
    return path + low


def _rim(mask: Mask) -> Mask:
    """The mask grown by a pixel: the anti-aliased edge of the strokes that the threshold left out."""
    return np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).filter(ImageFilter.MaxFilter(3))) > 0


def _pair(parts: list[tuple[Split, int]], start: int, end: int) -> PairRun | None:
    """The ink of consecutive parts of one group as two touching digits, or None when they hold no ink."""
    inked = _ink(parts)
    if inked is None:
        return None
    ink, box = inked
    try:
        return PairRun(start, end, pair_of_ink(ink), box, ink > 0)
    except BlankImage:
        return None


def _piece(parts: list[tuple[Split, int]]) -> Piece | None:
    """The ink of consecutive parts (of one group or of several) as a digit, or None when they hold no ink."""
    inked = _ink(parts)
    if inked is None:
        return None
    ink, box = inked
    try:
        return Piece(digit_of_ink(ink), box, ink > 0)
    except BlankImage:
        return None


def _ink(parts: list[tuple[Split, int]]) -> tuple[Gray, Box] | None:
    """The ink of consecutive parts on one canvas cropped to it, and its box in the image; None without ink."""
    runs = [(split, [k for _, k in run]) for split, run in itertools.groupby(parts, key=lambda part: part[0])]
    top = min(split.group.top for split, _ in runs)
    left = min(split.group.left for split, _ in runs)
    bottom = max(split.group.bottom for split, _ in runs)
    right = max(split.group.right for split, _ in runs)
    canvas = np.zeros((bottom - top, right - left), np.float32)
    for split, ks in runs:
        mask = split.between(ks[0], ks[-1])
        g = split.group
        window = canvas[g.top - top : g.bottom - top, g.left - left : g.right - left]
        np.maximum(window, np.where(_rim(mask), split.own, 0.0), out=window)
    rows, cols = np.flatnonzero(canvas.any(axis=1)), np.flatnonzero(canvas.any(axis=0))
    if len(rows) == 0:
        return None
    y0, y1, x0, x1 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
    return canvas[y0:y1, x0:x1], (left + x0, top + y0, x1 - x0, y1 - y0)


def shape_prior(width: int, height: int, digit_height: float) -> float:
    """Log-score of a piece's shape: wider than tall, or much shorter than the other digits, is unlikely a digit."""
    wide = max(0.0, width / digit_height - WIDE_FROM)
    short = max(0.0, 0.6 - height / digit_height)
    return -WIDE_PENALTY * wide - SHORT_PENALTY * short


# ------------------------------------------------------------------------------------------------------- choose


def model_evidence(logits: npt.NDArray[np.float32], piece_scores: npt.NDArray[np.float32] | None = None) -> list[float]:
    """Each piece's log-score from the model: its raw softmax confidence and, when the model has a piece verifier,
    its `piece_score` (N, 1), each weighed. The classifier is as sure of two touching digits cut out as one (a 7
    with a 1 through its bar read as a 7), or of a digit with a stroke of its neighbour, as of a clean digit; the
    verifier learnt from the pieces this module cuts which are one whole digit (training.verifier). (The
    not-a-digit detector's score did not pick better readings on the dev seed: it takes half a digit or two
    squeezed ones for a digit as readily as the classifier does, and teaching it pairs cost /predict non-digits it
    caught. Nor did averaging the model over each piece moved a pixel up, down, left and right: dev photos 96.5 ->
    96.2% on seed 0 and 95.6 -> 96.2% on seed 3, styles 0.3-0.6 point lower, single digits no better.)"""
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    confidences = (shifted / shifted.sum(axis=1, keepdims=True)).max(axis=1)
    evidence = CONFIDENCE_WEIGHT * np.log(np.maximum(confidences, 1e-9))
    if piece_scores is not None:
        evidence = evidence + PIECE_WEIGHT * np.log(np.maximum(piece_scores[:, 0], PIECE_FLOOR))
    return evidence.tolist()


def best_path(plan: Plan, segments: Sequence[Segment], scores: Sequence[float]) -> list[Segment]:
    """The segments of the reading that scores best (dynamic programming over the graph, left to right): the
    log-probability that every piece is the digit the model says, plus the shape priors, less the cuts and joins.
    `segments` are ordered by start, each with its score."""
    last = len(plan.node_cuts) - 1
    best = [-math.inf] * (last + 1)
    best[0] = 0.0
    came: list[Segment | None] = [None] * (last + 1)
    for segment, score in zip(segments, scores, strict=True):  # every way into a node is known before leaving it
        total = best[segment.start] + score - cut_cost(plan.node_cuts[segment.end])
        if total > best[segment.end]:
            best[segment.end], came[segment.end] = total, segment
    chosen, node = [], last
    while node > 0 and (segment := came[node]) is not None:
        chosen.append(segment)
        node = segment.start
    return chosen[::-1]


def segment_score(plan: Plan, segment: Segment, evidence: list[float]) -> float:
    """A one-digit segment's log-score: the model's evidence and the shape prior, less its joins; a passed mark's
    cost."""
    if segment.piece == EMPTY:
        return -segment.cost
    return evidence[segment.piece] + piece_prior(plan, segment.piece) - join_cost(segment)


def pair_segments(plan: Plan, evidence: list[float], pair_evidence: list[float]) -> list[tuple[Segment, float]]:
    """Each run the pair reader read, as one segment that reads two digits, and its score: the reader's evidence
    alone. The run's best cut into two pieces (by the classifier's evidence) only places the two digits' boxes.
    (Adding half of that cut's own score to the pair's left more touching pairs to the cut: dev photos 95.6% against
    96.5%; all of it, 91.6%, as without the reader. Nor did reading each digit of the pair as the product of the
    reader's probabilities and the classifier's for that piece, raised to 0.5 or 1: dev photos 96.8 and 96.5%
    against 96.8%.)"""
    pieces = {(s.start, s.end): s for s in plan.segments if s.piece != EMPTY and not s.joins}
    found = []
    for row, run in enumerate(plan.pairs):
        cuts = [
            (pieces[run.start, m], pieces[m, run.end], m)
            for m in range(run.start + 1, run.end)
            if (run.start, m) in pieces and (m, run.end) in pieces
        ]
        if cuts:
            left, right, _ = max(cuts, key=lambda cut: two_piece_score(plan, *cut, evidence))
            found.append((Segment(run.start, run.end, left.piece, pair=row, second=right.piece), pair_evidence[row]))
    return found


def two_piece_score(plan: Plan, left: Segment, right: Segment, middle: int, evidence: list[float]) -> float:
    """The score of reading two neighbouring pieces, cut apart at node `middle`, as one digit each."""
    both = segment_score(plan, left, evidence) + segment_score(plan, right, evidence)
    return both - cut_cost(plan.node_cuts[middle])


def cut_cost(crossed: float | None) -> float:
    """What a reading that cuts there pays: a constant and the strokes crossed; nothing at a gap between groups."""
    return 0.0 if crossed is None else CUT_PENALTY + INK_CUT_PENALTY * crossed


def join_cost(segment: Segment) -> float:
    """Separate groups read as one digit pay for each join, and for the gaps between them."""
    return JOIN_PENALTY * segment.joins + GAP_PENALTY * segment.gap


def piece_prior(plan: Plan, index: int) -> float:
    """Log-score of one piece's shape against the digits' height."""
    _, _, width, height = plan.pieces[index].box
    return shape_prior(width, height, plan.height)


@dataclass(frozen=True)
class PairAnswers:
    """The pair reader's outputs for a plan's runs: each digit's probabilities, and whether the run is two digits."""

    left: npt.NDArray[np.float32]  # (P, 10)
    right: npt.NDArray[np.float32]  # (P, 10)
    score: npt.NDArray[np.float32]  # (P, 1): the probability that the run is two whole digits

    def evidence(self) -> list[float]:
        """Each run's log-score as two digits, weighed as two pieces' confidences and verifier scores are."""
        sure = np.log(np.maximum(self.left.max(axis=1), 1e-9)) + np.log(np.maximum(self.right.max(axis=1), 1e-9))
        return (CONFIDENCE_WEIGHT * sure + PAIR_WEIGHT * np.log(np.maximum(self.score[:, 0], PIECE_FLOOR))).tolist()


def resolve(
    plan: Plan,
    probabilities: npt.NDArray[np.float32],
    logits: npt.NDArray[np.float32],
    piece_scores: npt.NDArray[np.float32] | None = None,
    pairs: PairAnswers | None = None,
    line: LineAnswers | None = None,
) -> Reading:
    """The reading along the best path through the plan's graph, left to right, boxes in uploaded pixels.

    Pieces are ranked by the model's raw softmax (of `logits`), the scale the shape and cut terms were weighed
    against; the calibrated `probabilities` are what each digit reports. Calibration sharpens the default model
    (T = 0.43), which made it sure of fragments: a 2's tail read as a 7 outscored the whole 2. `piece_scores`, the
    piece verifier's output when the model has one, adds its evidence and tempers the number's confidence. `pairs`,
    the pair reader's answers for the plan's runs when the model has one, add edges that read two touching digits.
    `line`, the line reader's answers for plan.line when the model has one, weighs the texts it finds likely against
    the graph's (weigh_line) as the model's card says.
    """
    path, candidates = readings_to_weigh(plan, logits, piece_scores, pairs, None if line is None else line.frames)
    if line is not None:
        path = weigh_line(candidates, line.weighing.texts) or path
    digits = []
    for s, read in path:
        if s.pair != EMPTY and pairs is not None:
            score = float(pairs.score[s.pair, 0])
            digits.append(_read_digit(plan, s.piece, pairs.left[s.pair], read[0], score, pair=True))
            digits.append(_read_digit(plan, s.second, pairs.right[s.pair], read[1], score, pair=True))
        elif s.piece != EMPTY:
            score = None if piece_scores is None else float(piece_scores[s.piece, 0])
            digits.append(_read_digit(plan, s.piece, probabilities[s.piece], read[0], score))
    digits.sort(key=lambda d: d.box[0] + d.box[2] / 2)
    if not digits:
        raise NoDigits("Nothing in the image looks like a digit.")
    passed = [s.passed for s, _ in path if s.passed is not None]
    ignored = [Ignored(_scaled(i.box, plan.scale), i.reason) for i in sorted(plan.ignored + passed, key=_left)]
    text = "".join(str(d.digit) for d in digits)
    confidence = digits_confidence(digits)
    if line is not None:
        confidence = line_confidence(confidence, text_log_likelihood(line.frames, text), line.weighing.confidence)
    return Reading(text, confidence, digits, ignored)


def readings_to_weigh(
    plan: Plan,
    logits: npt.NDArray[np.float32],
    piece_scores: npt.NDArray[np.float32] | None,
    pairs: PairAnswers | None,
    frames: npt.NDArray[np.float32] | None,
) -> tuple[ReadPath, list[Candidate]]:
    """The graph's own reading and, given the line reader's frames, the candidates weigh_line chooses among (none
    without them)."""
    scored, reads = scored_graph(plan, logits, piece_scores, pairs)
    path = graph_path(plan, scored, reads)
    if frames is None:
        return path, []
    return path, line_candidates(plan, scored, reads, frames, path_text(path))


def digits_confidence(digits: Sequence[ReadDigit]) -> float:
    """The probability that every digit is right as the graph reads them: the product of their calibrated
    confidences, each tempered by its piece verifier's score when the model has one."""
    return math.prod(d.confidence * (1.0 if d.piece_score is None else d.piece_score**PIECE_CONFIDENCE) for d in digits)


def scored_graph(
    plan: Plan,
    logits: npt.NDArray[np.float32],
    piece_scores: npt.NDArray[np.float32] | None = None,
    pairs: PairAnswers | None = None,
) -> tuple[list[tuple[Segment, float]], Reads]:
    """The graph's segments, ordered by start, each with its score (the pair reader's runs among them), and each
    one's per-digit log-probabilities (digit_logs)."""
    evidence = model_evidence(logits, piece_scores)
    scored = [(s, segment_score(plan, s, evidence)) for s in plan.segments]
    if pairs is not None:
        scored = sorted(scored + pair_segments(plan, evidence, pairs.evidence()), key=lambda found: found[0].start)
    return scored, digit_logs(logits, pairs)


def graph_path(plan: Plan, scored: list[tuple[Segment, float]], reads: Reads) -> ReadPath:
    """The graph's own reading: its best path, each segment reading its likeliest digits."""
    chosen = best_path(plan, [s for s, _ in scored], [v for _, v in scored])
    return [(s, [int(r.argmax()) for r in reads(s)]) for s in chosen]


def path_text(path: ReadPath) -> str:
    return "".join(str(d) for _, digits in path for d in digits)


# ---------------------------------------------------------------------------------------------------- line reader


def best_texts(frames: npt.NDArray[np.float32], beam: int = LINE_BEAM) -> list[tuple[str, float]]:
    """The line reader's likeliest texts and their log-probabilities, best first: CTC prefix beam search over its
    (T, 11) per-frame log-probabilities (the last the blank). A prefix's probability sums every frame alignment
    that spells it: ending in a blank, or in its last digit. (Python floats throughout: numpy's scalar logaddexp
    made it 6 ms a 4-digit number, a sixth of /read's time.)"""
    blank = frames.shape[1] - 1
    beams: dict[str, tuple[float, float]] = {"": (0.0, -math.inf)}  # prefix -> (log p ending blank, ending digit)
    for row in frames.tolist():
        grown: dict[str, list[float]] = {}

        def add(prefix: str, which: int, value: float, grown: dict[str, list[float]] = grown) -> None:
            entry = grown.setdefault(prefix, [-math.inf, -math.inf])
            entry[which] = _log_add(entry[which], value)

        likely = [d for d in range(blank) if row[d] > LINE_PRUNE]
        for prefix, (ends_blank, ends_digit) in beams.items():
            total = _log_add(ends_blank, ends_digit)
            add(prefix, 0, total + row[blank])
            for d in likely:
                if prefix and prefix[-1] == str(d):
                    add(prefix, 1, ends_digit + row[d])  # the same digit held: one digit
                    add(prefix + str(d), 1, ends_blank + row[d])  # after a blank: a second one
                else:
                    add(prefix + str(d), 1, total + row[d])
        ranked = sorted(grown.items(), key=lambda item: -_log_add(*item[1]))[:beam]
        beams = {prefix: (p[0], p[1]) for prefix, p in ranked}
    texts = [(prefix, _log_add(*p)) for prefix, p in beams.items() if prefix]
    return sorted(texts, key=lambda found: -found[1])


def _log_add(a: float, b: float) -> float:
    """log(e^a + e^b)."""
    high, low = (a, b) if a >= b else (b, a)
    return high if low == -math.inf else high + math.log1p(math.exp(low - high))


def text_log_likelihood(frames: npt.NDArray[np.float32], text: str) -> float:
    """log p(text) under the line reader: the CTC forward algorithm over its (T, 11) log-probabilities."""
    blank = frames.shape[1] - 1
    labels = [blank]
    for c in text:
        labels += [int(c), blank]
    states = np.array(labels)
    skip = np.zeros(len(labels), bool)  # a digit may follow the previous digit directly when the two differ
    skip[3::2] = states[3::2] != states[1:-2:2]
    alpha = np.full(len(labels), -np.inf)
    alpha[:2] = frames[0, states[:2]]
    for row in frames[1:]:
        padded = np.concatenate(([-np.inf, -np.inf], alpha))  # alpha[s - 1] and alpha[s - 2] for every state s
        moved = np.logaddexp(alpha, padded[1:-1])
        alpha = np.logaddexp(moved, np.where(skip, padded[:-2], -np.inf)) + row[states]
    return float(np.logaddexp.reduce(alpha[-2:]))


@dataclass(frozen=True)
class Edge:
    """A segment of the graph as read_as weighs it for any text."""

    segment: Segment
    base: float  # its score and the cut after it, less its likeliest digits' weighed log-probabilities
    logs: list[list[float]]  # per digit it reads, the ten digits' weighed log-probabilities


def text_edges(plan: Plan, scored: list[tuple[Segment, float]], reads: Reads) -> list[Edge]:
    """The scored segments as edges that can read any digits: `reads` gives each one's per-digit
    log-probabilities."""
    edges = []
    for segment, score in scored:
        logs = [(CONFIDENCE_WEIGHT * r).tolist() for r in reads(segment)]
        base = score - sum(max(r) for r in logs) - cut_cost(plan.node_cuts[segment.end])
        edges.append(Edge(segment, base, logs))
    return edges


def read_as(plan: Plan, edges: list[Edge], text: str) -> tuple[float, ReadPath] | None:
    """The best path through the graph that reads exactly `text`, and its score, None when none does. Each edge
    scores as in best_path, but reads the digits of the text it covers: the model's log-probability of those
    digits replaces that of its likeliest ones."""
    last, length = len(plan.node_cuts) - 1, len(text)
    digits = [int(c) for c in text]
    totals = {(0, 0): 0.0}
    came: dict[tuple[int, int], tuple[tuple[int, int], Edge]] = {}
    for edge in edges:
        start, width = edge.segment.start, len(edge.logs)
        for k in range(length - width + 1):
            before = totals.get((start, k))
            if before is None:
                continue
            total = before + edge.base + sum(log[d] for log, d in zip(edge.logs, digits[k : k + width], strict=True))
            key = (edge.segment.end, k + width)
            if total > totals.get(key, -math.inf):
                totals[key], came[key] = total, ((start, k), edge)
    if (last, length) not in totals:
        return None
    path, key = [], (last, length)
    while key in came:
        key, edge = came[key]
        path.append((edge.segment, digits[key[1] : key[1] + len(edge.logs)]))
    return totals[last, length], path[::-1]


def line_confidence(digits: float, text_log_likelihood: float, weights: Sequence[float]) -> float:
    """The probability that a text read with the line reader is right, from the digits' confidence (their weighed
    product) and the line reader's log-probability of the text: a logistic regression on the logits of both, with
    the card's `weights` (LineWeighing.confidence). The product alone undersells a text both readers agree on: on
    dev seed 0 photos it averaged 94.0% for numbers read 98.4% right (calibration error 0.044); weighed with the
    committed card, 97.3% (0.017), and 0.014-0.017 on the held-out photos."""
    a, b, c = weights
    x, y = line_confidence_inputs(digits, text_log_likelihood)
    return 1.0 / (1.0 + math.exp(-(a * x + b * y + c)))


def line_confidence_inputs(digits: float, text_log_likelihood: float) -> tuple[float, float]:
    """What line_confidence weighs: the logits of the digits' confidence and of the line reader's probability."""
    return _logit(digits), _logit(math.exp(text_log_likelihood))


def _logit(p: float) -> float:
    p = min(max(p, 1e-6), 1 - 1e-6)
    return math.log(p / (1 - p))


def digit_logs(logits: npt.NDArray[np.float32], pairs: PairAnswers | None) -> Reads:
    """Each edge's log-probabilities of the ten digits, one array per digit it reads: the model's raw softmax for a
    piece (as model_evidence weighs it), the pair reader's for each digit of a pair, none for a passed mark."""
    floor = math.log(1e-9)
    pieces = np.maximum(logits - np.logaddexp.reduce(logits, axis=1, keepdims=True), floor)

    def reads(segment: Segment) -> list[npt.NDArray[np.float32]]:
        if segment.pair != EMPTY and pairs is not None:
            return [np.log(np.maximum(p[segment.pair], 1e-9)) for p in (pairs.left, pairs.right)]
        return [] if segment.piece == EMPTY else [pieces[segment.piece]]

    return reads


@dataclass(frozen=True)
class LineAnswers:
    """The line reader's (T, 11) log-probabilities for plan.line, and how its model's card weighs them."""

    frames: npt.NDArray[np.float32]
    weighing: LineWeighing


@dataclass(frozen=True)
class Candidate:
    """A text weigh_line may choose, the best path of the graph that reads it, and what it is weighed by."""

    text: str
    path: ReadPath
    features: tuple[float, float, float, float, float]  # in LineWeighing.texts' order


def line_candidates(
    plan: Plan, scored: list[tuple[Segment, float]], reads: Reads, frames: npt.NDArray[np.float32], graph_text: str
) -> list[Candidate]:
    """The texts weigh_line chooses among: the graph's own and the line reader's likeliest (best_texts), each with
    the best path of the graph that reads it (a text no path reads is left out) and its features: the graph's score
    of that path, the line reader's log-probability of the text, its digits, how many digits more or fewer than the
    line reader's likeliest text it has, and the log-probability of its least likely digit along the path.
    The graph places the digits; the line reader, which sees the whole line uncut, says how many there are and what
    they read."""
    likeliest = best_texts(frames)
    count = len(likeliest[0][0]) if likeliest else len(graph_text)
    edges = text_edges(plan, scored, reads)
    found = []
    for text in dict.fromkeys([graph_text, *(text for text, _ in likeliest)]):
        read = read_as(plan, edges, text)
        if read is not None:
            score, path = read
            weakest = min((r[d] for s, ds in path for r, d in zip(reads(s), ds, strict=True)), default=0.0)
            features = (score, text_log_likelihood(frames, text), len(text), abs(len(text) - count), float(weakest))
            found.append(Candidate(text, path, features))
    return found


def weigh_line(candidates: list[Candidate], weights: Sequence[float]) -> ReadPath | None:
    """The path of the candidate whose features weigh most (the card's LineWeighing.texts), None when there is
    none. What the fitted weights learnt (training.line_weighing): the length terms stop the line reader's 1 read
    into a wide digit; the weakest digit, a text whose path reads a piece as a digit the classifier doubts; the
    graph's summed score then adds little. Against the graph's score plus the line reader's log-probability (weight
    1, stop 34), dev photos 98.4 / 96.7 / 97.5% -> 98.9 / 97.5 / 97.7% on seeds 0, 3 and 4."""
    if not candidates:
        return None
    best = max(candidates, key=lambda c: sum(w * f for w, f in zip(weights, c.features, strict=True)))
    return best.path


def _left(mark: Ignored) -> int:
    return mark.box[0]


def _read_digit(
    plan: Plan,
    index: int,
    probabilities: npt.NDArray[np.float32],
    digit: int,
    score: float | None,
    *,
    pair: bool = False,
) -> ReadDigit:
    values = probabilities.tolist()
    piece = plan.pieces[index]
    return ReadDigit(digit, values[digit], values, _scaled(piece.box, plan.scale), piece.digit, index, score, pair)


def _scaled(box: Box, scale: float) -> Box:
    x, y, width, height = box
    left, top = math.floor(x * scale), math.floor(y * scale)
    return left, top, math.ceil((x + width) * scale) - left, math.ceil((y + height) * scale) - top
